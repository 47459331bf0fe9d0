/* SPDX-License-Identifier: MIT */
/*
 * NAT report cache, keyed by a network fingerprint (interface names, IPv4 addresses, IPv6
 * /64 prefixes, gateways: computed elsewhere and passed in as bytes).  One JSON file:
 *
 *   {"version": 1, "networks": {"<32 hex of SHA-256(fingerprint)>":
 *       {"stored_at_ms": N, "report": {...warp_nat_report_to_json(DETAILS)...}}}}
 *
 * At most WARP_NATCACHE_MAX entries (the oldest go first), replaced atomically (0600).  A hit
 * is only a hint: the caller should revalidate in the background and store the new result.
 */
#ifndef WARP_NAT_NATCACHE_H
#define WARP_NAT_NATCACHE_H

#include <stddef.h>
#include <stdint.h>

#include <warpgate/nat.h>

#define WARP_NATCACHE_MAX 16

/* 0 and the report with its age (ms; 0 if stored "in the future"), -WARP_ENOTFOUND when the
 * fingerprint is not cached or the entry is older than max_age_ms (0: any age), -ENOENT when
 * there is no file, -WARP_EMALFORMED / -WARP_EVERSION for a bad file. */
int warp_natcache_lookup(const char *path, const void *fp, size_t fplen, uint64_t now_ms,
			 uint64_t max_age_ms, struct warp_nat_report *out, uint64_t *age_ms);
/* Adds or replaces the entry; a missing or unreadable file is started afresh. */
int warp_natcache_store(const char *path, const void *fp, size_t fplen,
			const struct warp_nat_report *r, uint64_t now_ms);
/* Removes one entry (-WARP_ENOTFOUND if absent). */
int warp_natcache_forget(const char *path, const void *fp, size_t fplen);

#endif
