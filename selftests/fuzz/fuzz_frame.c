// SPDX-License-Identifier: MIT
/*
 * Header parser, keyless packet checks and the TCP deframer.  Input: one byte choosing how
 * the rest is cut into chunks, then the bytes.  The rest is used three ways: as one packet
 * for every header/keepalive/probe parser, and as a TCP byte stream fed to the deframer in
 * chunks, whose output must match a one-shot reference parse of the same stream.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "pipe/frame.h"
#include "pipe/keepalive.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void packet_parsers(const uint8_t *p, size_t n)
{
	static const uint8_t key[32] = {1, 2, 3}, cid[8] = {4, 5, 6}, nonce[12] = {7};
	struct warp_pkt_hdr h;
	struct warp_probe_keys pk;
	struct warp_ka_tracker t;
	uint8_t c[WARP_CID_LEN], enc[WARP_HDR_LEN], copy[WARP_PING_LEN];
	uint64_t rtt;
	int rc = warp_hdr_decode(p, n, &h);

	if (rc == 0) {
		/* a decoded header re-encodes to the same bytes */
		warp_hdr_encode(enc, &h);
		CHECK(!memcmp(enc, p, WARP_HDR_LEN));
		CHECK(warp_pkt_is_warp(p, n));
		CHECK(warp_pkt_cid(p, n, c) == 0 && !memcmp(c, h.cid, WARP_CID_LEN));
		CHECK(warp_pkt_min_len(h.type) >= WARP_HDR_LEN);
		CHECK(warp_pkt_type_name(h.type)[0] != '?');
	}
	rc = warp_pkt_check(p, n, &h);
	if (rc == 0)
		CHECK(n >= warp_pkt_min_len(h.type) && n <= WARP_PKT_MAX);

	if (n == WARP_PING_LEN) {
		memcpy(copy, p, n);
		rc = warp_pong_rewrite(copy, n, cid);
		if (rc == 0) {
			/* only the type nibble and the CID change */
			CHECK((copy[0] & WARP_HDR_TYPE_MASK) == WARP_PKT_PONG);
			CHECK((copy[0] & 0xf0) == (p[0] & 0xf0));
			CHECK(!memcmp(copy + 1, p + 1, 3) && !memcmp(copy + 12, p + 12, n - 12));
		} else {
			CHECK(!memcmp(copy, p, n));
		}
	}
	CHECK(warp_ping_verify(p, n, key, cid) != 0); /* no forged ping passes */
	warp_ka_tracker_init(&t, 0);
	CHECK(warp_ka_pong(&t, p, n, cid, 1, &rtt) != 0); /* nothing outstanding */
	warp_probe_keys_init(&pk, key, WARP_PROBE_LISTENER);
	CHECK(warp_probe_verify(p, n, &pk) != 0);
	CHECK(warp_probe_reply_verify(p, n, &pk, nonce) != 0);
}

/* One-shot reference: frames of the stream until the first error or the end. */
struct ref {
	size_t off[512], len[512];
	size_t n;
	int err;
};

static void reference(const uint8_t *p, size_t n, size_t max, struct ref *r)
{
	size_t o = 0;

	r->n = 0;
	r->err = 0;
	while (n - o >= 2 && r->n < 512) {
		size_t l = warp_get_u16(p + o);

		if (l > max) {
			r->err = -EMSGSIZE;
			return;
		}
		if (l < WARP_HDR_LEN) {
			r->err = -WARP_EMALFORMED;
			return;
		}
		if (n - o - 2 < l)
			return;
		r->off[r->n] = o + 2;
		r->len[r->n++] = l;
		o += 2 + l;
	}
}

static void deframe(uint8_t mode, const uint8_t *p, size_t n)
{
	size_t max = mode & 1 ? 300 : 0, off = 0, frames = 0;
	struct warp_deframer *d = warp_deframer_new(max);
	uint64_t cut = 0x9e3779b97f4a7c15ull ^ mode;
	struct ref r;
	int last = 0;

	CHECK(d);
	reference(p, n, max ? max : WARP_PKT_MAX, &r);
	while (off < n && last >= 0) {
		size_t chunk;

		cut ^= cut << 13;
		cut ^= cut >> 7;
		cut ^= cut << 17;
		chunk = mode & 2 ? 1 + cut % 7 : 1 + cut % 700;
		if (chunk > n - off)
			chunk = n - off;
		while (chunk) {
			const uint8_t *pkt;
			size_t plen, used;

			last = warp_deframer_feed(d, p + off, chunk, &used, &pkt, &plen);
			CHECK(used <= chunk);
			off += used;
			chunk -= used;
			if (last < 0)
				break;
			if (last == 1) {
				CHECK(frames < r.n);
				CHECK(plen == r.len[frames]);
				CHECK(!memcmp(pkt, p + r.off[frames], plen));
				frames++;
			} else {
				CHECK(last == 0 && chunk == 0);
			}
		}
	}
	if (r.n < 512) {
		CHECK(frames == r.n);
		CHECK(last < 0 ? last == r.err : r.err == 0);
	}
	warp_deframer_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	packet_parsers(data + 1, size - 1);
	deframe(data[0], data + 1, size - 1);
	return 0;
}
