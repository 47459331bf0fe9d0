// SPDX-License-Identifier: MIT
/*
 * Signalling envelope codec: round trips of every type, signature and recipient checks,
 * TTL window, replay cache, malformed, truncated and tampered input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>

#include "core/bytes.h"
#include "core/util.h"
#include "signal/broker.h"
#include "signal/msg.h"

static struct warp_identity *ida, *idb, *idc;
static const uint64_t NOW = 1700000000000ull;

/* Must match msg.c: the signature covers this context string (with its NUL) + inner. */
static const char sign_ctx[] = "warpgate signal v1";

static int setup(void **state)
{
	ida = warp_identity_generate();
	idb = warp_identity_generate();
	idc = warp_identity_generate();
	return ida && idb && idc ? 0 : -1;
}

static int teardown(void **state)
{
	warp_identity_free(ida);
	warp_identity_free(idb);
	warp_identity_free(idc);
	return 0;
}

static struct warp_sig_msg *new_msg(unsigned int type, const struct warp_identity *to)
{
	struct warp_sig_msg *m = malloc(sizeof(*m));

	assert_non_null(m);
	warp_sig_msg_init(m, type, warp_identity_pubkey(to), NOW);
	return m;
}

static struct warp_sig_ep ep4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port,
			      uint8_t kind)
{
	struct warp_sig_ep ep = {.family = 4, .kind = kind, .port = port};

	ep.addr[10] = 0xff;
	ep.addr[11] = 0xff;
	ep.addr[12] = a;
	ep.addr[13] = b;
	ep.addr[14] = c;
	ep.addr[15] = d;
	return ep;
}

static void fill_punch(struct warp_sig_msg *m)
{
	struct warp_sig_body *b = &m->body;
	struct warp_sig_ep v6 = {.family = 6, .kind = WARP_SIG_EP_HOST, .port = 4433};

	memset(b, 0, sizeof(*b));
	warp_random(m->attempt, sizeof(m->attempt));
	b->present = WARP_SIGF_TRANSPORT | WARP_SIGF_ROLE | WARP_SIGF_START | WARP_SIGF_SECRET |
		     WARP_SIGF_PORT_INFO | WARP_SIGF_INTERVAL | WARP_SIGF_DURATION;
	b->transport = WARP_SIG_UDP;
	b->role = WARP_SIG_ROLE_INITIATOR;
	b->start_ms = NOW + 1500;
	warp_random(b->secret, sizeof(b->secret));
	b->port_delta = -2;
	b->range_lo = 40000;
	b->range_hi = 40100;
	b->interval_ms = 20;
	b->duration_ms = 5000;
	v6.addr[0] = 0x20;
	v6.addr[1] = 0x01;
	v6.addr[15] = 7;
	assert_int_equal(warp_sig_add_ep(b, &v6), 0);
	struct warp_sig_ep e1 = ep4(198, 51, 100, 7, 40002, WARP_SIG_EP_REFLEXIVE);
	struct warp_sig_ep e2 = ep4(198, 51, 100, 7, 40004, WARP_SIG_EP_PREDICTED);
	assert_int_equal(warp_sig_add_ep(b, &e1), 0);
	assert_int_equal(warp_sig_add_ep(b, &e2), 0);
	m->nbrokers = 2;
	snprintf(m->brokers[0].host, sizeof(m->brokers[0].host), "broker.example.net");
	m->brokers[0].port = 1883;
	snprintf(m->brokers[1].host, sizeof(m->brokers[1].host), "2001:db8::1");
	m->brokers[1].port = 8883;
}

static int encode(const struct warp_identity *from, struct warp_sig_msg *m, uint8_t *out)
{
	return warp_sig_encode(from, m, out, WARP_SIG_MAX_PAYLOAD);
}

/* Signs inner bytes with `signer` and seals them to `to`, bypassing the encoder's checks. */
static int seal_raw(const struct warp_identity *signer, const uint8_t *to, const uint8_t *inner,
		    size_t len, uint8_t *out)
{
	uint8_t *buf = malloc(sizeof(sign_ctx) + len + WARP_SIG_LEN);
	int err;

	assert_non_null(buf);
	memcpy(buf, sign_ctx, sizeof(sign_ctx));
	memcpy(buf + sizeof(sign_ctx), inner, len);
	assert_int_equal(warp_identity_sign(signer, buf, sizeof(sign_ctx) + len,
					    buf + sizeof(sign_ctx) + len),
			 0);
	out[0] = WARP_SIG_VERSION;
	out[1] = 0;
	warp_sig_recipient_tag(to, out + 2);
	err = warp_seal(to, out, WARP_SIG_OUTER_HDR, buf + sizeof(sign_ctx), len + WARP_SIG_LEN,
			out + WARP_SIG_OUTER_HDR);
	free(buf);
	assert_int_equal(err, 0);
	return (int)(WARP_SIG_OUTER_HDR + len + WARP_SIG_LEN + WARP_SEAL_OVERHEAD);
}

/* Encodes m's inner part (sender a, no checks), lets edit() change it, signs and seals. */
static int raw_payload(struct warp_sig_msg *m, const struct warp_identity *signer,
		       const uint8_t *to, size_t (*edit)(uint8_t *inner, size_t len), uint8_t *out)
{
	uint8_t inner[WARP_SIG_MAX_PAYLOAD];
	int n;

	memcpy(m->sender, warp_identity_pubkey(ida), WARP_PUBKEY_LEN);
	n = warp_sig_write_inner(m, inner, sizeof(inner) - 256);
	assert_true(n > 0);
	if (edit)
		n = (int)edit(inner, (size_t)n);
	return seal_raw(signer, to, inner, (size_t)n, out);
}

static int decode_b(const uint8_t *p, size_t len, uint64_t now, struct warp_sig_msg *out)
{
	return warp_sig_decode(idb, p, len, now, WARP_SIG_SKEW_MS, out);
}

/* ---- tests ---- */

static void test_topic(void **state)
{
	char t1[WARP_SIG_TOPIC_LEN + 1], t2[WARP_SIG_TOPIC_LEN + 1], t3[WARP_SIG_TOPIC_LEN + 1];
	char small[10];

	assert_int_equal(warp_sig_topic(warp_identity_pubkey(ida), t1, sizeof(t1)), 0);
	assert_int_equal(warp_sig_topic(warp_identity_pubkey(ida), t2, sizeof(t2)), 0);
	assert_int_equal(warp_sig_topic(warp_identity_pubkey(idb), t3, sizeof(t3)), 0);
	assert_string_equal(t1, t2);
	assert_string_not_equal(t1, t3);
	assert_int_equal(strlen(t1), WARP_SIG_TOPIC_LEN);
	assert_memory_equal(t1, "wg1/s/", 6);
	for (size_t i = 6; i < strlen(t1); i++)
		assert_non_null(strchr("0123456789abcdef", t1[i]));
	assert_int_equal(warp_sig_topic(warp_identity_pubkey(ida), small, sizeof(small)), -ENOSPC);
}

static void test_roundtrip_punch(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_PUNCH_OFFER, idb), *d = malloc(sizeof(*d));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	int n;

	fill_punch(m);
	n = encode(ida, m, buf);
	assert_true(n > 0);
	assert_true(n < 1024);
	assert_int_equal(decode_b(buf, (size_t)n, NOW + 100, d), 0);
	assert_int_equal(d->type, WARP_SIG_PUNCH_OFFER);
	assert_memory_equal(d->sender, warp_identity_pubkey(ida), WARP_PUBKEY_LEN);
	assert_memory_equal(d->recipient, warp_identity_pubkey(idb), WARP_PUBKEY_LEN);
	assert_memory_equal(d->id, m->id, WARP_SIG_ID_LEN);
	assert_memory_equal(d->attempt, m->attempt, WARP_SIG_ID_LEN);
	assert_true(warp_sig_id_is_zero(d->reply_to));
	assert_int_equal(d->created_ms, NOW);
	assert_int_equal(d->ttl_ms, warp_sig_default_ttl(WARP_SIG_PUNCH_OFFER));
	assert_int_equal(d->nbrokers, 2);
	assert_string_equal(d->brokers[1].host, "2001:db8::1");
	assert_int_equal(d->brokers[1].port, 8883);
	/* The body compares equal field by field, and as a whole (same zero padding). */
	assert_int_equal(d->body.present, m->body.present);
	assert_int_equal(d->body.neps, 3);
	assert_int_equal(d->body.port_delta, -2);
	assert_int_equal(d->body.eps[2].port, 40004);
	assert_int_equal(d->body.eps[2].kind, WARP_SIG_EP_PREDICTED);
	assert_memory_equal(&d->body, &m->body, sizeof(d->body));
	free(m);
	free(d);
}

static void test_roundtrip_all_types(void **state)
{
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	struct warp_sig_msg *d = malloc(sizeof(*d));

	for (unsigned int t = 1; t <= WARP_SIG_TYPE_MAX; t++) {
		struct warp_sig_msg *m = new_msg(t, idb);
		struct warp_sig_body *b = &m->body;
		struct warp_sig_ep e = ep4(203, 0, 113, 9, 3478, WARP_SIG_EP_RELAYED);
		int n;

		switch (t) {
		case WARP_SIG_ADDR_REPLY:
			warp_random(m->reply_to, WARP_SIG_ID_LEN);
			b->present = WARP_SIGF_BLOB;
			b->blob_len = WARP_SIG_BLOB_MAX;
			warp_random(b->blob, b->blob_len);
			break;
		case WARP_SIG_CONNECT_BACK:
			warp_random(m->attempt, WARP_SIG_ID_LEN);
			b->present = WARP_SIGF_TRANSPORT | WARP_SIGF_SECRET;
			b->transport = WARP_SIG_TCP;
			warp_sig_add_ep(b, &e);
			b->ncids = 2;
			memset(b->cids[0], 0x11, WARP_SIG_CID_LEN);
			memset(b->cids[1], 0x22, WARP_SIG_CID_LEN);
			break;
		case WARP_SIG_PUNCH_OFFER:
		case WARP_SIG_PUNCH_ANSWER:
			fill_punch(m);
			break;
		case WARP_SIG_RELAY_OFFER:
		case WARP_SIG_RELAY_ANSWER:
			warp_random(m->attempt, WARP_SIG_ID_LEN);
			b->present = WARP_SIGF_TRANSPORT | WARP_SIGF_RELAY_SERVER |
				     WARP_SIGF_RELAYED | WARP_SIGF_RELAY_NAME | WARP_SIGF_LIFETIME;
			b->transport = WARP_SIG_UDP;
			b->relay_server = ep4(192, 0, 2, 1, 3478, WARP_SIG_EP_HOST);
			b->relayed = e;
			snprintf(b->relay_name, sizeof(b->relay_name), "turn.example.org");
			b->lifetime_s = 600;
			break;
		case WARP_SIG_CANCEL:
			warp_random(m->attempt, WARP_SIG_ID_LEN);
			b->present = WARP_SIGF_CODE;
			b->code = WARP_SIG_CANCEL_DONE;
			break;
		case WARP_SIG_ERROR:
			warp_random(m->reply_to, WARP_SIG_ID_LEN);
			b->present = WARP_SIGF_CODE | WARP_SIGF_TEXT;
			b->code = WARP_SIG_ERR_BUSY;
			snprintf(b->text, sizeof(b->text), "too many attempts");
			break;
		}
		n = encode(ida, m, buf);
		assert_true(n > 0);
		assert_true(n <= WARP_SIG_MAX_PAYLOAD);
		assert_int_equal(decode_b(buf, (size_t)n, NOW, d), 0);
		assert_int_equal(d->type, t);
		assert_memory_equal(&d->body, &m->body, sizeof(d->body));
		assert_memory_equal(d->reply_to, m->reply_to, WARP_SIG_ID_LEN);
		assert_string_equal(warp_sig_type_name(t), warp_sig_type_name(d->type));
		free(m);
	}
	free(d);
}

static void test_encode_checks(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_PUNCH_OFFER, idb);
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];

	fill_punch(m);
	memset(m->attempt, 0, sizeof(m->attempt));
	assert_int_equal(encode(ida, m, buf), -WARP_EMISSING);
	fill_punch(m);
	m->body.present &= ~WARP_SIGF_SECRET;
	assert_int_equal(encode(ida, m, buf), -WARP_EMISSING);
	fill_punch(m);
	m->body.transport = 9;
	assert_int_equal(encode(ida, m, buf), -WARP_ERANGE);
	fill_punch(m);
	m->ttl_ms = WARP_SIG_TTL_MAX_MS + 1;
	assert_int_equal(encode(ida, m, buf), -WARP_ERANGE);
	m->ttl_ms = 1000;
	m->body.range_lo = 2;
	m->body.range_hi = 1;
	assert_int_equal(encode(ida, m, buf), -WARP_ERANGE);
	fill_punch(m);
	m->body.eps[0].addr[10] = 0; /* family 4 requires a v4-mapped address */
	m->body.eps[0].family = 4;
	assert_int_equal(encode(ida, m, buf), -WARP_EMALFORMED);
	fill_punch(m);
	snprintf(m->brokers[0].host, sizeof(m->brokers[0].host), "evil host/x");
	assert_int_equal(encode(ida, m, buf), -WARP_EMALFORMED);
	fill_punch(m);
	m->type = 77;
	assert_int_equal(encode(ida, m, buf), -WARP_EVERSION);
	m->type = WARP_SIG_ADDR_REPLY; /* needs reply_to and a blob */
	assert_int_equal(encode(ida, m, buf), -WARP_EMISSING);
	/* Recipient must be a curve point. */
	m->type = WARP_SIG_ADDR_REQUEST;
	memset(m->recipient, 0x02, WARP_PUBKEY_LEN);
	m->recipient[1] = 0xff;
	m->recipient[2] = 0xff;
	assert_true(encode(ida, m, buf) < 0);
	/* Too small an output buffer. */
	warp_sig_msg_init(m, WARP_SIG_ADDR_REQUEST, warp_identity_pubkey(idb), NOW);
	assert_int_equal(warp_sig_encode(ida, m, buf, 100), -EMSGSIZE);
	free(m);
}

static void test_wrong_recipient(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_ADDR_REQUEST, idb), *d = malloc(sizeof(*d));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	int n = encode(ida, m, buf);

	assert_true(n > 0);
	/* Another node cannot read it, and learns so before any public-key work. */
	assert_int_equal(warp_sig_decode(idc, buf, (size_t)n, NOW, WARP_SIG_SKEW_MS, d),
			 -WARP_EIDENTITY);
	/* Forging the tag for C only makes the AEAD fail (it is associated data). */
	warp_sig_recipient_tag(warp_identity_pubkey(idc), buf + 2);
	assert_int_equal(warp_sig_decode(idc, buf, (size_t)n, NOW, WARP_SIG_SKEW_MS, d),
			 -WARP_EAUTH);
	free(m);
	free(d);
}

/* B re-seals A's signed message to C: C sees a valid signature naming B as recipient. */
static void test_resealed_to_third_party(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_ADDR_REQUEST, idb), *d = malloc(sizeof(*d));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD], plain[WARP_SIG_MAX_PAYLOAD], out[WARP_SIG_MAX_PAYLOAD];
	int n = encode(ida, m, buf), pn;

	assert_true(n > 0);
	pn = warp_open_sealed(idb, buf, WARP_SIG_OUTER_HDR, buf + WARP_SIG_OUTER_HDR,
			      (size_t)n - WARP_SIG_OUTER_HDR, plain);
	assert_true(pn > 0);
	out[0] = WARP_SIG_VERSION;
	out[1] = 0;
	warp_sig_recipient_tag(warp_identity_pubkey(idc), out + 2);
	assert_int_equal(warp_seal(warp_identity_pubkey(idc), out, WARP_SIG_OUTER_HDR, plain,
				   (size_t)pn, out + WARP_SIG_OUTER_HDR),
			 0);
	assert_int_equal(warp_sig_decode(idc, out, (size_t)n, NOW, WARP_SIG_SKEW_MS, d),
			 -WARP_EIDENTITY);
	free(m);
	free(d);
}

/* The sender named inside must be the signer: C signing as A is caught. */
static void test_forged_sender(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_ADDR_REQUEST, idb), *d = malloc(sizeof(*d));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	int n;

	n = raw_payload(m, idc, warp_identity_pubkey(idb), NULL, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EAUTH);
	/* Same bytes signed by A pass: the harness itself is sound. */
	n = raw_payload(m, ida, warp_identity_pubkey(idb), NULL, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), 0);
	free(m);
	free(d);
}

static size_t flip_body_byte(uint8_t *inner, size_t len)
{
	inner[len - 1] ^= 1; /* last byte of the body */
	return len;
}

/* A signature over different bytes: a valid seal around a modified, unsigned body. */
static void test_signature_covers_body(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_PUNCH_OFFER, idb), *d = malloc(sizeof(*d));
	uint8_t inner[WARP_SIG_MAX_PAYLOAD], buf[WARP_SIG_MAX_PAYLOAD], out[WARP_SIG_MAX_PAYLOAD];
	int n, pn;

	fill_punch(m);
	n = encode(ida, m, buf);
	assert_true(n > 0);
	pn = warp_open_sealed(idb, buf, WARP_SIG_OUTER_HDR, buf + WARP_SIG_OUTER_HDR,
			      (size_t)n - WARP_SIG_OUTER_HDR, inner);
	assert_true(pn > WARP_SIG_LEN);
	/* Change the start time inside the signed part, keep the old signature. */
	for (int i = 0; i < pn - WARP_SIG_LEN; i++) {
		if (i < 4)
			continue;
		memcpy(out, buf, WARP_SIG_OUTER_HDR);
		inner[i] ^= 0x40;
		assert_int_equal(warp_seal(warp_identity_pubkey(idb), out, WARP_SIG_OUTER_HDR,
					   inner, (size_t)pn, out + WARP_SIG_OUTER_HDR),
				 0);
		assert_int_not_equal(decode_b(out, (size_t)n, NOW, d), 0);
		inner[i] ^= 0x40;
		if (i > 140)
			i += 7; /* every byte of the header, a sample of the body */
	}
	(void)flip_body_byte;
	free(m);
	free(d);
}

static void test_ttl_window(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_ADDR_REQUEST, idb), *d = malloc(sizeof(*d));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	uint32_t ttl = m->ttl_ms, skew = WARP_SIG_SKEW_MS;
	int n = encode(ida, m, buf);

	assert_true(n > 0);
	assert_int_equal(decode_b(buf, (size_t)n, NOW + ttl + skew, d), 0);
	assert_int_equal(decode_b(buf, (size_t)n, NOW + ttl + skew + 1, d), -WARP_ESTALE);
	assert_int_equal(decode_b(buf, (size_t)n, NOW + 3600000, d), -WARP_ESTALE);
	/* From the future: fine within the skew, stale beyond it. */
	assert_int_equal(decode_b(buf, (size_t)n, NOW - skew, d), 0);
	assert_int_equal(decode_b(buf, (size_t)n, NOW - skew - 1, d), -WARP_ESTALE);
	/* A smaller tolerance narrows the window. */
	assert_int_equal(warp_sig_decode(idb, buf, (size_t)n, NOW + ttl + 10, 0, d), -WARP_ESTALE);
	free(m);
	free(d);
}

static size_t set_big_ttl(uint8_t *inner, size_t len)
{
	/* ttl is at offset 4 + 33 + 33 + 16 * 3 + 8 = 126 */
	warp_put_u32(inner + 126, WARP_SIG_TTL_MAX_MS + 1);
	return len;
}

static size_t set_version(uint8_t *inner, size_t len)
{
	inner[0] = 2;
	return len;
}

static size_t set_flags(uint8_t *inner, size_t len)
{
	inner[3] = 1;
	return len;
}

static size_t set_type(uint8_t *inner, size_t len)
{
	inner[1] = 200;
	return len;
}

static size_t add_trailing(uint8_t *inner, size_t len)
{
	inner[len] = 0;
	return len + 1;
}

static size_t cut_one(uint8_t *inner, size_t len)
{
	return len - 1;
}

/* Appends a TLV at the end of the body and fixes the body length. */
static uint16_t extra_tag;
static uint16_t extra_len;
static uint8_t extra_val[64];

static size_t add_tlv(uint8_t *inner, size_t len)
{
	/* body length sits right before the body; find it by walking the meta block */
	size_t moff = 130, boff;
	uint16_t mlen = warp_get_u16(inner + moff), blen;

	boff = moff + 2 + mlen;
	blen = warp_get_u16(inner + boff);
	warp_put_u16(inner + len, extra_tag);
	warp_put_u16(inner + len + 2, extra_len);
	memcpy(inner + len + 4, extra_val, extra_len);
	warp_put_u16(inner + boff, (uint16_t)(blen + 4 + extra_len));
	return len + 4 + extra_len;
}

static void test_inner_checks(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_PUNCH_OFFER, idb), *d = malloc(sizeof(*d));
	const uint8_t *to = warp_identity_pubkey(idb);
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	int n;

	fill_punch(m);
	n = raw_payload(m, ida, to, set_big_ttl, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_ERANGE);
	n = raw_payload(m, ida, to, set_version, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EVERSION);
	n = raw_payload(m, ida, to, set_flags, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EMALFORMED);
	n = raw_payload(m, ida, to, set_type, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EVERSION);
	n = raw_payload(m, ida, to, add_trailing, buf);
	/* One extra byte before the signature shifts it: the body length no longer adds up. */
	assert_true(decode_b(buf, (size_t)n, NOW, d) < 0);
	n = raw_payload(m, ida, to, cut_one, buf);
	assert_true(decode_b(buf, (size_t)n, NOW, d) < 0);

	/* Unknown non-critical tag: skipped. */
	extra_tag = 0x0777;
	extra_len = 5;
	n = raw_payload(m, ida, to, add_tlv, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), 0);
	assert_memory_equal(&d->body, &m->body, sizeof(d->body));
	/* Unknown critical tag: rejected. */
	extra_tag = 0x8777;
	n = raw_payload(m, ida, to, add_tlv, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EVERSION);
	/* A second start time: duplicate. */
	extra_tag = 0x0014;
	extra_len = 8;
	n = raw_payload(m, ida, to, add_tlv, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EDUPLICATE);
	/* Wrong scalar length. */
	extra_tag = 0x0017;
	extra_len = 3;
	m->body.present &= ~WARP_SIGF_INTERVAL;
	n = raw_payload(m, ida, to, add_tlv, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EMALFORMED);
	/* Endpoint with extension bytes: accepted, extension ignored. */
	extra_tag = 0x0013;
	extra_len = 24;
	memset(extra_val, 0, sizeof(extra_val));
	extra_val[0] = 6;
	extra_val[1] = 1;
	extra_val[3] = 80;
	extra_val[20] = 0xaa;
	n = raw_payload(m, ida, to, add_tlv, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), 0);
	assert_int_equal(d->body.neps, m->body.neps + 1);
	assert_int_equal(d->body.eps[m->body.neps].port, 80);
	/* Endpoint of an unknown family. */
	extra_val[0] = 5;
	n = raw_payload(m, ida, to, add_tlv, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EMALFORMED);
	/* Too many endpoints. */
	m->body.neps = WARP_SIG_MAX_EPS;
	for (int i = 3; i < WARP_SIG_MAX_EPS; i++)
		m->body.eps[i] = m->body.eps[1];
	extra_val[0] = 6;
	n = raw_payload(m, ida, to, add_tlv, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_ERANGE);
	free(m);
	free(d);
}

static void test_missing_fields_rejected(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_CONNECT_BACK, idb), *d = malloc(sizeof(*d));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	int n;

	/* No attempt id, no endpoints: the receiver refuses what the encoder would have. */
	n = raw_payload(m, ida, warp_identity_pubkey(idb), NULL, buf);
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EMISSING);
	free(m);
	free(d);
}

static void test_outer_malformed(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_PUNCH_OFFER, idb), *d = malloc(sizeof(*d));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD + 16], save;
	int n;

	fill_punch(m);
	n = encode(ida, m, buf);
	assert_true(n > 0);
	/* Every truncation fails cleanly. */
	for (int len = 0; len < n; len++)
		assert_true(decode_b(buf, (size_t)len, NOW, d) < 0);
	/* Every single-bit flip fails (sampled), never crashes, never passes. */
	for (int i = 0; i < n; i += 3) {
		save = buf[i];
		buf[i] ^= (uint8_t)(1u << (i % 8));
		assert_true(decode_b(buf, (size_t)n, NOW, d) < 0);
		buf[i] = save;
	}
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), 0);
	buf[0] = 9;
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EVERSION);
	buf[0] = WARP_SIG_VERSION;
	buf[1] = 1;
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), -WARP_EMALFORMED);
	buf[1] = 0;
	/* Appended garbage breaks the AEAD tag position. */
	buf[n] = 0;
	assert_int_equal(decode_b(buf, (size_t)n + 1, NOW, d), -WARP_EAUTH);
	assert_int_equal(decode_b(buf, WARP_SIG_MAX_PAYLOAD + 1, NOW, d), -EMSGSIZE);
	free(m);
	free(d);
}

static void test_replay_cache(void **state)
{
	struct warp_sig_replay *r = warp_sig_replay_new(1000);
	const uint8_t *a = warp_identity_pubkey(ida), *b = warp_identity_pubkey(idb);
	uint8_t id[WARP_SIG_ID_LEN];

	assert_non_null(r);
	warp_random(id, sizeof(id));
	assert_int_equal(warp_sig_replay_check(r, a, id, NOW + 1000, NOW), 0);
	assert_int_equal(warp_sig_replay_check(r, a, id, NOW + 1000, NOW), -WARP_EREPLAY);
	/* Same id from someone else is another message. */
	assert_int_equal(warp_sig_replay_check(r, b, id, NOW + 1000, NOW), 0);
	/* Many live entries: grows; all remembered. */
	for (int i = 0; i < 900; i++) {
		warp_random(id, sizeof(id));
		assert_int_equal(warp_sig_replay_check(r, a, id, NOW + 1000, NOW), 0);
	}
	assert_int_equal(warp_sig_replay_count(r), 902);
	/* Full of live entries: fails closed. */
	for (int i = 0; i < 200; i++) {
		int err;

		warp_random(id, sizeof(id));
		err = warp_sig_replay_check(r, a, id, NOW + 1000, NOW);
		if (err) {
			assert_int_equal(err, -WARP_EQUOTA);
			break;
		}
		assert_true(i < 100);
	}
	/* Once expired, entries make room again. */
	for (int i = 0; i < 2000; i++) {
		warp_random(id, sizeof(id));
		assert_int_equal(warp_sig_replay_check(r, a, id, NOW + 5000, NOW + 2000), 0);
		if (warp_sig_replay_count(r) < 500)
			break;
	}
	assert_true(warp_sig_replay_count(r) < 1000);
	warp_sig_replay_free(r);
}

static void test_replay_after_decode(void **state)
{
	struct warp_sig_msg *m = new_msg(WARP_SIG_ADDR_REQUEST, idb), *d = malloc(sizeof(*d));
	struct warp_sig_replay *r = warp_sig_replay_new(0);
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	int n = encode(ida, m, buf);

	/* The same payload delivered twice (two brokers) is seen once. */
	assert_int_equal(decode_b(buf, (size_t)n, NOW, d), 0);
	assert_int_equal(warp_sig_replay_check(r, d->sender, d->id, warp_sig_expiry(d, 5000), NOW),
			 0);
	assert_int_equal(decode_b(buf, (size_t)n, NOW + 10, d), 0);
	assert_int_equal(
		warp_sig_replay_check(r, d->sender, d->id, warp_sig_expiry(d, 5000), NOW + 10),
		-WARP_EREPLAY);
	warp_sig_replay_free(r);
	free(m);
	free(d);
}

static void test_body_codec(void **state)
{
	struct warp_sig_body *b = calloc(1, sizeof(*b)), *d = calloc(1, sizeof(*d));
	uint8_t buf[256];
	int n;

	b->present = WARP_SIGF_CODE | WARP_SIGF_TEXT;
	b->code = 3;
	snprintf(b->text, sizeof(b->text), "no");
	n = warp_sig_body_encode(b, buf, sizeof(buf));
	assert_int_equal(n, 6 + 6);
	assert_int_equal(warp_sig_body_decode(buf, (size_t)n, d), 0);
	assert_memory_equal(b, d, sizeof(*b));
	assert_int_equal(warp_sig_body_decode(buf, (size_t)n - 1, d), -WARP_ETRUNCATED);
	assert_int_equal(warp_sig_body_encode(b, buf, 5), -EMSGSIZE);
	/* Control characters in text. */
	buf[n - 1] = '\n';
	assert_int_equal(warp_sig_body_decode(buf, (size_t)n, d), -WARP_EMALFORMED);
	free(b);
	free(d);
}

static void test_broker_addr(void **state)
{
	struct warp_broker_addr a, b;
	char s[300];

	assert_int_equal(warp_broker_addr_parse("mqtt.example.org", &a), 0);
	assert_string_equal(a.host, "mqtt.example.org");
	assert_int_equal(a.port, 1883);
	assert_int_equal(warp_broker_addr_parse("127.0.0.1:18830", &a), 0);
	assert_string_equal(a.host, "127.0.0.1");
	assert_int_equal(a.port, 18830);
	assert_int_equal(warp_broker_addr_parse("[::1]:8883", &a), 0);
	assert_string_equal(a.host, "::1");
	assert_int_equal(a.port, 8883);
	assert_int_equal(warp_broker_addr_format(&a, s, sizeof(s)), 0);
	assert_string_equal(s, "[::1]:8883");
	assert_int_equal(warp_broker_addr_parse("2001:db8::5", &a), 0);
	assert_string_equal(a.host, "2001:db8::5");
	assert_int_equal(a.port, 1883);
	assert_int_equal(warp_broker_addr_parse("MQTT.example.org:1883", &b), 0);
	assert_int_equal(warp_broker_addr_parse("mqtt.example.org", &a), 0);
	assert_true(warp_broker_addr_equal(&a, &b));
	assert_int_equal(warp_broker_addr_parse("h:0", &a), -WARP_ERANGE);
	assert_int_equal(warp_broker_addr_parse("h:65536", &a), -WARP_ERANGE);
	assert_int_equal(warp_broker_addr_parse("h:12x", &a), -WARP_EMALFORMED);
	assert_int_equal(warp_broker_addr_parse("", &a), -WARP_EMALFORMED);
	assert_int_equal(warp_broker_addr_parse("[::1", &a), -WARP_EMALFORMED);
	assert_int_equal(warp_broker_addr_parse("a b:1", &a), -WARP_EMALFORMED);
	assert_int_equal(warp_broker_addr_parse(":1883", &a), -WARP_ERANGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topic),
		cmocka_unit_test(test_roundtrip_punch),
		cmocka_unit_test(test_roundtrip_all_types),
		cmocka_unit_test(test_encode_checks),
		cmocka_unit_test(test_wrong_recipient),
		cmocka_unit_test(test_resealed_to_third_party),
		cmocka_unit_test(test_forged_sender),
		cmocka_unit_test(test_signature_covers_body),
		cmocka_unit_test(test_ttl_window),
		cmocka_unit_test(test_inner_checks),
		cmocka_unit_test(test_missing_fields_rejected),
		cmocka_unit_test(test_outer_malformed),
		cmocka_unit_test(test_replay_cache),
		cmocka_unit_test(test_replay_after_decode),
		cmocka_unit_test(test_body_codec),
		cmocka_unit_test(test_broker_addr),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
