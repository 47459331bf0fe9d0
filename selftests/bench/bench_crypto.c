// SPDX-License-Identifier: MIT
/*
 * Pipe crypto benchmark: full handshakes per second (both roles in one thread, so each
 * handshake is two X25519 key pairs and exchanges, two ECDSA signatures and two
 * verifications), and seal/open cost per packet at 1 KiB and 64 KiB (the largest TCP frame).
 * usage: bench_crypto [seconds per row, default 1]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/identity.h>
#include <warpgate/loop.h>

#include "pipe/frame.h"
#include "pipe/handshake.h"
#include "pipe/session.h"

static struct warp_identity *id_i, *id_r;

static int handshake(uint64_t now, struct warp_session **si, struct warp_session **sr)
{
	struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
				 .identity = id_i,
				 .expected_peer = warp_identity_pubkey(id_r)};
	struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};
	struct warp_hs *i = warp_hs_new(&ci, now), *r = warp_hs_new(&cr, now);
	uint8_t a[WARP_HS_OUT_MAX], b[WARP_HS_OUT_MAX];
	size_t al, bl;
	int err = -1;

	if (!i || !r)
		goto out;
	if (warp_hs_poll(i, now, a, &al) || warp_hs_recv(r, a, al, now, b, &bl) ||
	    warp_hs_recv(i, b, bl, now, a, &al) || warp_hs_recv(r, a, al, now, b, &bl) ||
	    warp_hs_state(r) != WARP_HS_DONE)
		goto out;
	if (si) {
		*si = warp_session_new(i, NULL, now);
		*sr = warp_session_new(r, NULL, now);
	}
	err = 0;
out:
	warp_hs_free(i);
	warp_hs_free(r);
	return err;
}

static void bench_handshake(double secs)
{
	uint64_t t0 = warp_time_ns(), t, n = 0;

	do {
		if (handshake(warp_time_ns(), NULL, NULL)) {
			fprintf(stderr, "handshake failed\n");
			exit(1);
		}
		n++;
		t = warp_time_ns();
	} while (t - t0 < secs * 1e9);
	printf("%-28s %10.0f /s   %8.1f us each\n", "handshake (both sides)", n / ((t - t0) / 1e9),
	       (t - t0) / 1e3 / n);
}

/* Seals a batch of packets, then opens them all, timing each phase as a whole. */
static void bench_seal_open(double secs, size_t size)
{
	size_t batch = size <= 4096 ? 1024 : 32, stride = size + WARP_SESSION_OVERHEAD;
	struct warp_session *si, *sr;
	uint8_t *msg = calloc(1, size), *pkts = malloc(batch * stride), *out = malloc(size);
	uint64_t t0, t, n = 0, seal_ns = 0, open_ns = 0;
	char name[64];

	if (handshake(warp_time_ns(), &si, &sr) || !si || !sr || !msg || !pkts || !out)
		exit(1);
	t0 = warp_time_ns();
	do {
		uint64_t a = warp_time_ns(), b;

		for (size_t k = 0; k < batch; k++)
			if (warp_session_seal(si, WARP_PKT_DATA, msg, size, pkts + k * stride,
					      stride, a) != (int)stride)
				exit(1);
		b = warp_time_ns();
		for (size_t k = 0; k < batch; k++)
			if (warp_session_open(sr, pkts + k * stride, stride, out, size, b, NULL) !=
			    (int)size)
				exit(1);
		t = warp_time_ns();
		seal_ns += b - a;
		open_ns += t - b;
		n += batch;
	} while (t - t0 < secs * 1e9);
	snprintf(name, sizeof(name), "seal %zu B", size);
	printf("%-28s %10.0f ns   %8.2f Gbit/s\n", name, (double)seal_ns / n,
	       size * 8.0 * n / seal_ns);
	snprintf(name, sizeof(name), "open %zu B", size);
	printf("%-28s %10.0f ns   %8.2f Gbit/s\n", name, (double)open_ns / n,
	       size * 8.0 * n / open_ns);
	warp_session_free(si);
	warp_session_free(sr);
	free(msg);
	free(pkts);
	free(out);
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	uint8_t sk[32];

	memset(sk, 0x11, 32);
	id_i = warp_identity_from_secret(sk);
	memset(sk, 0x22, 32);
	id_r = warp_identity_from_secret(sk);
	if (!id_i || !id_r)
		return 1;
	printf("# bench_crypto: %.1f s per row\n", secs);
	bench_handshake(secs);
	bench_seal_open(secs, 1024);
	bench_seal_open(secs, WARP_PKT_MAX - WARP_SESSION_OVERHEAD);
	warp_identity_free(id_i);
	warp_identity_free(id_r);
	return 0;
}
