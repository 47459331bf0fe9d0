/* SPDX-License-Identifier: MIT */
/*
 * NAT detection on a warp_loop: opens the sockets the classifier needs (mapping socket, one
 * filter socket per server, delta sockets on random and on consecutive ports), runs the
 * sans-IO core of natclass.h over them (STUN over TCP through stun_io.h when UDP is blocked),
 * and reports once.  With a cache path and a network fingerprint, a cached report is delivered
 * first (cached = true, with its age) and the measurement still runs in the background; its
 * result replaces the cache entry and is delivered second.
 */
#ifndef WARP_NAT_NATDETECT_H
#define WARP_NAT_NATDETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/loop.h>
#include <warpgate/nat.h>

#include "nat/natclass.h"

struct warp_nat_detect_cfg {
	/* servers, quorum, timeouts, flags; the socket list is filled in by the driver */
	struct warp_natclass_cfg cls;
	/* local address to probe from (its port is ignored); AF_UNSPEC: any address of the
	 * servers' family */
	struct sockaddr_storage bind;
	unsigned int n_delta_random; /* (4) */
	unsigned int n_delta_seq;    /* (4) */
	bool no_filter;		     /* skip the filtering tests (no filter sockets) */
	uint32_t tcp_timeout_ms;     /* STUN over TCP, connect included (3000) */
	const char *cache_path;	     /* NULL: no cache */
	const void *fingerprint;
	size_t fingerprint_len;
	uint64_t cache_max_age_ms; /* older entries are not offered (0: any age) */
};

void warp_nat_detect_cfg_default(struct warp_nat_detect_cfg *cfg);

struct warp_nat_detect;

/* status: 0 (the report is valid, including type "blocked") or a negative error.  The
 * final call has cached == false; the object may be freed from inside any call. */
typedef void (*warp_nat_detect_cb)(struct warp_nat_detect *d, const struct warp_nat_report *r,
				   int status, bool cached, uint64_t age_ms, void *user);

struct warp_nat_detect *warp_nat_detect_start(struct warp_loop *loop,
					      const struct warp_nat_detect_cfg *cfg,
					      warp_nat_detect_cb cb, void *user);
/* Stops a run (no more callbacks) and closes its sockets. */
void warp_nat_detect_free(struct warp_nat_detect *d);

#endif
