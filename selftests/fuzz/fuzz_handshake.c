// SPDX-License-Identifier: MIT
/*
 * Handshake and session parsers.  The first input byte picks a target, the rest is the
 * packet (or, for the "xor" targets, a mask applied to a genuine packet so mutations reach
 * the checks behind the AEAD).  Long-lived handshakes and sessions are reused across inputs:
 * a rejected packet must leave them exactly as they were, which is checked; one that is
 * accepted (a mask of zeroes) advances them, and they are rebuilt.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>

#include "pipe/frame.h"
#include "pipe/handshake.h"
#include "pipe/session.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define T0 1000000000ull

static struct warp_identity *id_i, *id_r;
static struct warp_cookie_jar *jar;

/* an initiator waiting for RESP with the genuine RESP, a responder waiting for FINISH with
 * the genuine FINISH, and a session pair with a genuine DATA packet */
static struct warp_hs *wait_resp, *wait_fin;
static uint8_t resp[WARP_HS_OUT_MAX], fin[WARP_HS_OUT_MAX], init_pkt[WARP_HS_OUT_MAX];
static size_t resp_len, fin_len, init_len;
static struct warp_session *si, *sr;
static uint8_t data_pkt[64];
static int data_len;

static void setup_identities(void)
{
	uint8_t sk[32];

	if (id_i)
		return;
	memset(sk, 0x21, 32);
	id_i = warp_identity_from_secret(sk);
	memset(sk, 0x42, 32);
	id_r = warp_identity_from_secret(sk);
	jar = warp_cookie_jar_new();
	CHECK(id_i && id_r && jar);
}

static struct warp_hs *initiator(void)
{
	struct warp_hs_cfg c = {.role = WARP_HS_INITIATOR,
				.identity = id_i,
				.expected_peer = warp_identity_pubkey(id_r)};
	struct warp_hs *hs = warp_hs_new(&c, T0);

	CHECK(hs);
	return hs;
}

static struct warp_hs *responder(void)
{
	struct warp_hs_cfg c = {.role = WARP_HS_RESPONDER, .identity = id_r};
	struct warp_hs *hs = warp_hs_new(&c, T0);

	CHECK(hs);
	return hs;
}

/* Three genuine handshakes: one stopped before RESP, one before FINISH, one finished. */
static void rebuild(void)
{
	uint8_t a[WARP_HS_OUT_MAX], b[WARP_HS_OUT_MAX];
	size_t al, bl;
	struct warp_hs *i, *r;

	warp_hs_free(wait_resp);
	warp_hs_free(wait_fin);
	warp_session_free(si);
	warp_session_free(sr);

	wait_resp = initiator();
	r = responder();
	CHECK(warp_hs_poll(wait_resp, T0, init_pkt, &init_len) == 0);
	CHECK(warp_hs_recv(r, init_pkt, init_len, T0, resp, &resp_len) == 0);
	warp_hs_free(r);

	i = initiator();
	wait_fin = responder();
	CHECK(warp_hs_poll(i, T0, a, &al) == 0);
	CHECK(warp_hs_recv(wait_fin, a, al, T0, b, &bl) == 0);
	CHECK(warp_hs_recv(i, b, bl, T0, fin, &fin_len) == 0);
	warp_hs_free(i);

	i = initiator();
	r = responder();
	CHECK(warp_hs_poll(i, T0, a, &al) == 0);
	CHECK(warp_hs_recv(r, a, al, T0, b, &bl) == 0);
	CHECK(warp_hs_recv(i, b, bl, T0, a, &al) == 0);
	CHECK(warp_hs_recv(r, a, al, T0, b, &bl) == 0);
	si = warp_session_new(i, NULL, T0);
	sr = warp_session_new(r, NULL, T0);
	CHECK(si && sr);
	warp_hs_free(i);
	warp_hs_free(r);
	data_len = warp_session_seal(si, WARP_PKT_DATA, "fuzz", 4, data_pkt, sizeof(data_pkt), T0);
	CHECK(data_len > 0);
}

static void hs_target(struct warp_hs *hs, const uint8_t *p, size_t n)
{
	enum warp_hs_state before = warp_hs_state(hs);
	uint8_t out[WARP_HS_OUT_MAX];
	size_t out_len;
	int rc = warp_hs_recv(hs, p, n, T0, out, &out_len);

	CHECK(out_len <= WARP_HS_OUT_MAX);
	if (rc < 0)
		CHECK(warp_hs_state(hs) == before || warp_hs_state(hs) == WARP_HS_FAILED);
	if (warp_hs_state(hs) != before)
		rebuild();
}

static void xor_into(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t *mask, size_t m)
{
	memcpy(dst, src, n);
	for (size_t k = 0; k < m && k < n; k++)
		dst[k] ^= mask[k];
}

static void session_target(struct warp_session *s, const uint8_t *p, size_t n)
{
	struct warp_session_stats a, b;
	struct warp_rx_info info;
	static uint8_t out[WARP_PKT_MAX], copy[WARP_PKT_MAX];
	uint64_t rtt;
	int rc;

	warp_session_stats(s, &a);
	rc = warp_session_open(s, p, n, out, sizeof(out), T0, &info);
	warp_session_stats(s, &b);
	if (rc < 0) {
		CHECK(a.opened == b.opened && a.rx_top == b.rx_top && a.recv_phase == b.recv_phase);
	} else {
		CHECK((size_t)rc + WARP_SESSION_OVERHEAD == n);
		rebuild(); /* the window moved: start clean */
		return;
	}
	rc = warp_session_hs_recv(s, p, n, T0, out, sizeof(out));
	CHECK(rc <= (int)sizeof(out));
	CHECK(warp_session_pong(s, p, n, T0, &rtt) != 0);
	if (n <= sizeof(copy)) {
		memcpy(copy, p, n);
		rc = warp_session_answer_ping(s, copy, n);
		CHECK(rc != 0 || n == WARP_PING_LEN);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct warp_hs_init_info info;
	uint8_t buf[WARP_PKT_MAX], out[WARP_HS_OUT_MAX];
	const uint8_t *p = data + 1;
	size_t n = size - 1, out_len;
	int rc;

	if (size < 1 || size > WARP_PKT_MAX)
		return 0;
	setup_identities();
	if (!wait_resp)
		rebuild();

	switch (data[0] % 8) {
	case 0: /* INIT parsing, cookies on and off */
		rc = warp_hs_init_peek(p, n, &info);
		warp_cookie_jar_set(jar, data[0] & 0x80);
		{
			int c = warp_cookie_check(jar, p, n, "addr", 4, T0, out);

			CHECK(rc == 0 || c < 0);
			CHECK(c <= (int)WARP_HS_OUT_MAX);
			if (c > 0)
				CHECK(c == WARP_HS_RETRY_LEN && !info.has_cookie);
		}
		break;
	case 1: { /* a fresh responder takes anything as its first packet */
		struct warp_hs *r = responder();

		rc = warp_hs_recv(r, p, n, T0, out, &out_len);
		CHECK(rc == 0 ? out_len == WARP_HS_RESP_LEN : out_len == 0);
		CHECK(rc == 0 || warp_hs_state(r) == WARP_HS_WAIT_INIT);
		warp_hs_free(r);
		break;
	}
	case 2:
		hs_target(wait_resp, p, n);
		break;
	case 3:
		hs_target(wait_fin, p, n);
		break;
	case 4:
		xor_into(buf, resp, resp_len, p, n);
		hs_target(wait_resp, buf, resp_len);
		break;
	case 5:
		xor_into(buf, fin, fin_len, p, n);
		hs_target(wait_fin, buf, fin_len);
		break;
	case 6:
		session_target(data[0] & 0x80 ? si : sr, p, n);
		break;
	case 7:
		xor_into(buf, data_pkt, (size_t)data_len, p, n);
		session_target(sr, buf, (size_t)data_len);
		break;
	}
	return 0;
}
