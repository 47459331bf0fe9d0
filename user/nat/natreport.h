/* SPDX-License-Identifier: MIT */
/*
 * JSON form of struct warp_nat_report (the names come from include/warpgate/nat.h).
 *
 * Default rendering, as `warpgate nat --json` prints it:
 *   {"mapping": "endpoint-independent", "filtering": "address-and-port-dependent",
 *    "type": "port-restricted", "delta": {"type": "equal", "value": 0}, "hairpin": true,
 *    "external": ["203.0.113.7:40000"],
 *    "probes": [{"kind": "binding", "server": 0, "socket": 0, "local_port": 40000,
 *                "dest": "192.0.2.1:3478", "mapped": "203.0.113.7:40000", "ok": true,
 *                "tries": 1, "sent_ms": 0, "rtt_ms": 12.5}, ...]}
 * WARP_NAT_JSON_NO_PROBES drops "probes"; WARP_NAT_JSON_DETAILS adds "nat", "udp", "tcp",
 * "rfc5780", "family", "local", "tcp_external", "servers_answered", "delta_samples",
 * "duration_ms" and "measured_at_ms" (what the cache needs to restore a report).
 */
#ifndef WARP_NAT_NATREPORT_H
#define WARP_NAT_NATREPORT_H

#include <jansson.h>

#include <warpgate/nat.h>

#define WARP_NAT_JSON_NO_PROBES 0x1u
#define WARP_NAT_JSON_DETAILS	0x2u

/* New reference, or NULL + errno. */
json_t *warp_nat_report_to_json(const struct warp_nat_report *r, unsigned int flags);
/* Accepts what warp_nat_report_to_json() wrote (unknown keys ignored); -WARP_EMALFORMED. */
int warp_nat_report_from_json(const json_t *j, struct warp_nat_report *r);

#endif
