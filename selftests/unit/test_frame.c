// SPDX-License-Identifier: MIT
/* Header codec and TCP deframer. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "pipe/frame.h"

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void make_hdr(uint8_t *p, uint8_t type, uint8_t phase, uint64_t pn)
{
	struct warp_pkt_hdr h = {.type = type, .phase = phase, .pn = pn};

	for (int i = 0; i < WARP_CID_LEN; i++)
		h.cid[i] = (uint8_t)(0xa0 + i);
	warp_hdr_encode(p, &h);
}

static void test_hdr_roundtrip(void **state)
{
	uint8_t p[WARP_HDR_LEN];
	struct warp_pkt_hdr h;

	for (uint8_t t = WARP_PKT_HS_INIT; t <= WARP_PKT_HS_RETRY; t++) {
		make_hdr(p, t, t & 1, 0x0102030405060708ull * t);
		assert_int_equal(p[0], 0xd0 | t); /* mark 11, version 01 */
		assert_int_equal(p[1], t & 1);
		assert_int_equal(p[2] | p[3], 0);
		assert_int_equal(p[4], 0xa0);
		assert_int_equal(p[11], 0xa7);
		assert_int_equal(warp_get_u64(p + 12), 0x0102030405060708ull * t);
		assert_int_equal(warp_hdr_decode(p, sizeof(p), &h), 0);
		assert_int_equal(h.type, t);
		assert_int_equal(h.phase, t & 1);
		assert_int_equal(h.pn, 0x0102030405060708ull * t);
		assert_memory_equal(h.cid, p + 4, 8);
		assert_string_not_equal(warp_pkt_type_name(t), "?");
	}
	assert_string_equal(warp_pkt_type_name(WARP_PKT_DATA), "DATA");
	assert_string_equal(warp_pkt_type_name(0), "?");
	assert_string_equal(warp_pkt_type_name(0xc), "?");
}

static void test_hdr_reject(void **state)
{
	uint8_t p[WARP_HDR_LEN], q[WARP_HDR_LEN];
	struct warp_pkt_hdr h;

	make_hdr(p, WARP_PKT_DATA, 0, 1);
	for (size_t n = 0; n < WARP_HDR_LEN; n++)
		assert_int_equal(warp_hdr_decode(p, n, &h), -WARP_ETRUNCATED);
	/* STUN (00), ChannelData (01) and 10 are not ours */
	for (int top = 0; top < 3; top++) {
		memcpy(q, p, sizeof(q));
		q[0] = (uint8_t)((top << 6) | (q[0] & 0x3f));
		assert_int_equal(warp_hdr_decode(q, sizeof(q), &h), -WARP_EMALFORMED);
		assert_false(warp_pkt_is_warp(q, sizeof(q)));
	}
	assert_true(warp_pkt_is_warp(p, sizeof(p)));
	assert_false(warp_pkt_is_warp(p, 0));
	for (int v = 0; v < 4; v++) {
		memcpy(q, p, sizeof(q));
		q[0] = (uint8_t)(0xc0 | v << 4 | WARP_PKT_DATA);
		assert_int_equal(warp_hdr_decode(q, sizeof(q), &h), v == 1 ? 0 : -WARP_EVERSION);
	}
	for (int t = 0; t < 16; t++) {
		memcpy(q, p, sizeof(q));
		q[0] = (uint8_t)(0xd0 | t);
		assert_int_equal(warp_hdr_decode(q, sizeof(q), &h),
				 t >= 1 && t <= 0xb ? 0 : -WARP_EMALFORMED);
	}
	for (int b = 1; b < 8; b++) {
		memcpy(q, p, sizeof(q));
		q[1] = (uint8_t)(1 << b);
		assert_int_equal(warp_hdr_decode(q, sizeof(q), &h), -WARP_EMALFORMED);
	}
	for (int i = 2; i < 4; i++) {
		memcpy(q, p, sizeof(q));
		q[i] = 1;
		assert_int_equal(warp_hdr_decode(q, sizeof(q), &h), -WARP_EMALFORMED);
	}
}

static void test_pkt_check(void **state)
{
	uint8_t p[256] = {0};
	struct warp_pkt_hdr h;
	static const struct {
		uint8_t type;
		size_t len;
		bool fixed;
	} want[] = {
		{WARP_PKT_HS_INIT, 192, true},	 {WARP_PKT_HS_RESP, 173, true},
		{WARP_PKT_HS_FINISH, 133, true}, {WARP_PKT_DATA, 36, false},
		{WARP_PKT_ACK, 36, false},	 {WARP_PKT_PING, 44, true},
		{WARP_PKT_PONG, 44, true},	 {WARP_PKT_CLOSE, 36, false},
		{WARP_PKT_PROBE, 48, true},	 {WARP_PKT_PROBE_REPLY, 48, true},
		{WARP_PKT_HS_RETRY, 68, true},
	};

	for (size_t i = 0; i < WARP_ARRAY_SIZE(want); i++) {
		make_hdr(p, want[i].type, 0, 0);
		assert_int_equal(warp_pkt_min_len(want[i].type), want[i].len);
		assert_int_equal(warp_pkt_fixed_len(want[i].type), want[i].fixed);
		assert_int_equal(warp_pkt_check(p, want[i].len, &h), 0);
		assert_int_equal(warp_pkt_check(p, want[i].len - 1, &h), -WARP_ETRUNCATED);
		assert_int_equal(warp_pkt_check(p, want[i].len + 1, &h),
				 want[i].fixed ? -WARP_ETRAILING : 0);
	}
	assert_int_equal(warp_pkt_min_len(0), 0);
	assert_false(warp_pkt_fixed_len(0xf));
}

static void test_pkt_cid(void **state)
{
	uint8_t p[WARP_PING_LEN] = {0}, cid[WARP_CID_LEN];
	static const uint8_t stun[20] = {0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42};

	make_hdr(p, WARP_PKT_PING, 0, 9);
	assert_int_equal(warp_pkt_cid(p, sizeof(p), cid), 0);
	assert_memory_equal(cid, p + WARP_CID_OFF, WARP_CID_LEN);
	assert_int_equal(warp_pkt_cid(p, WARP_HDR_LEN - 1, cid), -WARP_ETRUNCATED);
	assert_int_equal(warp_pkt_cid(stun, sizeof(stun), cid), -WARP_EMALFORMED);
	p[0] = 0xe6; /* version 2 */
	assert_int_equal(warp_pkt_cid(p, sizeof(p), cid), -WARP_EVERSION);
}

static void test_tcp_frame(void **state)
{
	uint8_t pkt[40], out[64], pfx[2];

	memset(pkt, 0x5a, sizeof(pkt));
	assert_int_equal(warp_tcp_frame(out, sizeof(out), pkt, sizeof(pkt)), 42);
	assert_int_equal(out[0], 0);
	assert_int_equal(out[1], 40);
	assert_memory_equal(out + 2, pkt, sizeof(pkt));
	assert_int_equal(warp_tcp_frame(out, 41, pkt, sizeof(pkt)), -EMSGSIZE);
	assert_int_equal(warp_tcp_prefix(pfx, 65535), 0);
	assert_int_equal(pfx[0], 0xff);
	assert_int_equal(pfx[1], 0xff);
	assert_int_equal(warp_tcp_prefix(pfx, 65536), -EMSGSIZE);
}

/* A stream of n frames of random sizes; frame i is filled with bytes derived from i. */
static uint8_t *make_stream(size_t n, size_t max, size_t *lens, size_t *total)
{
	uint8_t *buf = malloc(n * (max + 2)), *p = buf;

	for (size_t i = 0; i < n; i++) {
		lens[i] = WARP_HDR_LEN + rnd() % (max - WARP_HDR_LEN + 1);
		warp_put_u16(p, (uint16_t)lens[i]);
		for (size_t k = 0; k < lens[i]; k++)
			p[2 + k] = (uint8_t)(i * 31 + k);
		p += 2 + lens[i];
	}
	*total = (size_t)(p - buf);
	return buf;
}

/* Feeds the stream in chunks chosen by mode and checks every frame comes out intact. */
static void deframe_in_chunks(int mode)
{
	enum { N = 200, MAX = 3000 };
	size_t lens[N], total, off = 0, got = 0;
	uint8_t *stream = make_stream(N, MAX, lens, &total);
	struct warp_deframer *d = warp_deframer_new(MAX);

	assert_non_null(d);
	while (off < total) {
		size_t chunk;

		switch (mode) {
		case 0:
			chunk = 1;
			break;
		case 1:
			chunk = 2;
			break;
		case 2:
			chunk = 7;
			break;
		case 3:
			chunk = 1 + rnd() % 5000;
			break;
		default:
			chunk = total;
			break;
		}
		if (chunk > total - off)
			chunk = total - off;
		/* copy into a scratch buffer so zero-copy pointers cannot outlive their chunk */
		uint8_t *c = malloc(chunk);
		const uint8_t *in = c;
		size_t left = chunk;

		memcpy(c, stream + off, chunk);
		while (left) {
			const uint8_t *pkt;
			size_t plen, used;
			int rc = warp_deframer_feed(d, in, left, &used, &pkt, &plen);

			assert_true(rc == 0 || rc == 1);
			assert_true(used <= left);
			in += used;
			left -= used;
			if (rc == 1) {
				assert_true(got < N);
				assert_int_equal(plen, lens[got]);
				for (size_t k = 0; k < plen; k++)
					assert_int_equal(pkt[k], (uint8_t)(got * 31 + k));
				got++;
			} else {
				assert_int_equal(left, 0);
			}
		}
		free(c);
		off += chunk;
	}
	assert_int_equal(got, N);
	assert_int_equal(warp_deframer_pending(d), 0);
	warp_deframer_free(d);
	free(stream);
}

static void test_deframer_chunking(void **state)
{
	for (int mode = 0; mode < 5; mode++)
		deframe_in_chunks(mode);
}

static void test_deframer_zero_copy(void **state)
{
	struct warp_deframer *d = warp_deframer_new(0);
	uint8_t buf[2 + 30 + 2 + 25];
	const uint8_t *pkt;
	size_t plen, used;

	memset(buf, 0x11, sizeof(buf));
	warp_put_u16(buf, 30);
	warp_put_u16(buf + 32, 25);
	assert_int_equal(warp_deframer_feed(d, buf, sizeof(buf), &used, &pkt, &plen), 1);
	assert_ptr_equal(pkt, buf + 2);
	assert_int_equal(plen, 30);
	assert_int_equal(used, 32);
	/* the second frame is 2 bytes short: buffered, then completed */
	assert_int_equal(warp_deframer_feed(d, buf + 32, 25, &used, &pkt, &plen), 0);
	assert_int_equal(used, 25);
	assert_int_equal(warp_deframer_pending(d), 25);
	assert_int_equal(warp_deframer_feed(d, buf + 57, 2, &used, &pkt, &plen), 1);
	assert_int_equal(plen, 25);
	assert_int_equal(used, 2);
	assert_int_equal(warp_deframer_pending(d), 0);
	/* nothing in, nothing out */
	assert_int_equal(warp_deframer_feed(d, buf, 0, &used, &pkt, &plen), 0);
	warp_deframer_free(d);
}

static void test_deframer_errors(void **state)
{
	struct warp_deframer *d;
	uint8_t buf[256] = {0};
	const uint8_t *pkt;
	size_t plen, used;

	assert_null(warp_deframer_new(10));
	assert_int_equal(errno, EINVAL);
	assert_null(warp_deframer_new(65536));

	/* frame shorter than a header: the stream is broken for good */
	d = warp_deframer_new(100);
	warp_put_u16(buf, 19);
	assert_int_equal(warp_deframer_feed(d, buf, 40, &used, &pkt, &plen), -WARP_EMALFORMED);
	warp_put_u16(buf, 20);
	assert_int_equal(warp_deframer_feed(d, buf, 40, &used, &pkt, &plen), -WARP_EMALFORMED);
	warp_deframer_free(d);

	/* too long, announced one byte at a time */
	d = warp_deframer_new(100);
	warp_put_u16(buf, 101);
	assert_int_equal(warp_deframer_feed(d, buf, 1, &used, &pkt, &plen), 0);
	assert_int_equal(warp_deframer_feed(d, buf + 1, 1, &used, &pkt, &plen), -EMSGSIZE);
	assert_int_equal(warp_deframer_feed(d, buf + 2, 10, &used, &pkt, &plen), -EMSGSIZE);
	warp_deframer_free(d);

	/* exactly max_frame is fine, on both paths */
	d = warp_deframer_new(100);
	warp_put_u16(buf, 100);
	assert_int_equal(warp_deframer_feed(d, buf, 102, &used, &pkt, &plen), 1);
	assert_int_equal(plen, 100);
	assert_int_equal(warp_deframer_feed(d, buf, 50, &used, &pkt, &plen), 0);
	assert_int_equal(warp_deframer_feed(d, buf + 50, 52, &used, &pkt, &plen), 1);
	assert_int_equal(plen, 100);
	/* zero-length frame */
	warp_put_u16(buf, 0);
	assert_int_equal(warp_deframer_feed(d, buf, 2, &used, &pkt, &plen), -WARP_EMALFORMED);
	warp_deframer_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_roundtrip),	   cmocka_unit_test(test_hdr_reject),
		cmocka_unit_test(test_pkt_check),	   cmocka_unit_test(test_pkt_cid),
		cmocka_unit_test(test_tcp_frame),	   cmocka_unit_test(test_deframer_chunking),
		cmocka_unit_test(test_deframer_zero_copy), cmocka_unit_test(test_deframer_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
