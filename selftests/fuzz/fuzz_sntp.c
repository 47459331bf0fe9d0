// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the SNTP client: the packet decoder and reply checks, the timestamp
 * arithmetic on attacker-chosen timestamps, and the sans-IO query fed the input as a reply
 * (with the origin patched to match, so the checks past the anti-spoofing one are reached).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "nat/sntp.h"
#include "nat/sockaddr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct warp_ntp_packet p;
	struct warp_ntp_sample smp[4];
	struct warp_sntp_result res;
	struct warp_sntp_cfg cfg;
	struct warp_sntp_tx tx;
	struct warp_sntp *s;
	uint8_t buf[1100];
	unsigned int n = 0;

	if (warp_ntp_decode(data, size, &p) == 0) {
		warp_ntp_check_reply(&p, p.org);
		warp_ntp_check_reply(&p, 1);
		if (warp_ntp_sample(p.ref, p.rec, p.xmt, p.org, &smp[n]) == 0)
			n++;
		warp_ntp_to_unix_ns(p.xmt, (int64_t)p.rec);
	}
	for (size_t off = 0; off + 32 <= size && n < 4; off += 32)
		if (warp_ntp_sample(warp_get_u64(data + off), warp_get_u64(data + off + 8),
				    warp_get_u64(data + off + 16), warp_get_u64(data + off + 24),
				    &smp[n]) == 0)
			smp[n++].root_dist_ns = data[off] * 1000000ull;
	warp_sntp_combine(smp, n, WARP_SNTP_INTERSECT, &res);
	warp_sntp_combine(smp, n, WARP_SNTP_LOWEST_DELAY, &res);

	/* through the query: the reply's origin is made to match our request */
	if (size > sizeof(buf))
		return 0;
	warp_sntp_cfg_default(&cfg);
	cfg.n_servers = 1;
	nat_sa_parse("192.0.2.1:123", 0, &cfg.servers[0]);
	s = warp_sntp_new(&cfg);
	if (!s)
		abort();
	warp_sntp_start(s, 1000000000ull);
	if (!warp_sntp_poll_transmit(s, 1000000000ull, 1700000000000000000ll, &tx))
		abort();
	memcpy(buf, data, size);
	if (size >= WARP_NTP_LEN)
		memcpy(buf + 24, tx.data + 40, 8);
	warp_sntp_handle_input(s, 0, buf, size, NULL, 1020000000ull);
	warp_sntp_handle_timeout(s, 9000000000ull);
	if (!warp_sntp_done(s))
		abort();
	warp_sntp_result(s, &res);
	warp_sntp_free(s);
	return 0;
}
