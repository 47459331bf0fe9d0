/* SPDX-License-Identifier: MIT */
/*
 * SNTP query on a warp_loop: one connected UDP socket per server (a fresh random source port
 * each, and the kernel drops datagrams from anyone else), the sans-IO core of sntp.h, one
 * callback with the combined result or -WARP_ECLOCK.
 */
#ifndef WARP_NAT_SNTP_IO_H
#define WARP_NAT_SNTP_IO_H

#include <warpgate/loop.h>

#include "nat/sntp.h"

struct warp_sntp_query;

/* status: 0 (r valid) or -WARP_ECLOCK; the query may be freed from the callback. */
typedef void (*warp_sntp_query_cb)(struct warp_sntp_query *q, int status,
				   const struct warp_sntp_result *r, void *user);

struct warp_sntp_query *warp_sntp_query_start(struct warp_loop *loop,
					      const struct warp_sntp_cfg *cfg,
					      warp_sntp_query_cb cb, void *user);
/* Per-server outcome (see warp_sntp_server_status). */
int warp_sntp_query_server(const struct warp_sntp_query *q, unsigned int server,
			   struct warp_ntp_sample *sample);
void warp_sntp_query_free(struct warp_sntp_query *q);

#endif
