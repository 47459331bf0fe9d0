// SPDX-License-Identifier: MIT
/*
 * Signalling envelope: TLV body codec, inner message layout, sign-then-seal, replay cache.
 * Layout and rules: docs/protocol-signal.md.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/bytes.h"
#include "core/util.h"
#include "signal/msg.h"

/* TLV tags.  Bit 15 marks a critical tag: a receiver that does not know it must reject the
 * message; unknown tags without it are skipped. */
#define TLV_CRITICAL 0x8000

#define META_REPLY_BROKER 0x0001

#define TAG_BLOB	 0x0010
#define TAG_TRANSPORT	 0x0011
#define TAG_ROLE	 0x0012
#define TAG_ENDPOINT	 0x0013
#define TAG_START_MS	 0x0014
#define TAG_SECRET	 0x0015
#define TAG_PORT_INFO	 0x0016
#define TAG_INTERVAL_MS	 0x0017
#define TAG_DURATION_MS	 0x0018
#define TAG_CID		 0x0019
#define TAG_RELAY_SERVER 0x001a
#define TAG_RELAYED	 0x001b
#define TAG_RELAY_NAME	 0x001c
#define TAG_LIFETIME_S	 0x001d
#define TAG_CODE	 0x001e
#define TAG_TEXT	 0x001f

#define EP_LEN	      20 /* family, kind, port, 16-byte address; longer values: extensions */
#define PORT_INFO_LEN 8

/* version, type, flags(2), sender, recipient, id, attempt, reply_to, created(8), ttl(4) */
#define INNER_FIXED (4 + 2 * WARP_PUBKEY_LEN + 3 * WARP_SIG_ID_LEN + 8 + 4)
#define INNER_MIN   (INNER_FIXED + 2 + 2 + WARP_SIG_LEN)
#define PAYLOAD_MIN (WARP_SIG_OUTER_HDR + WARP_SEAL_OVERHEAD + INNER_MIN)
#define INNER_MAX   (WARP_SIG_MAX_PAYLOAD - WARP_SIG_OUTER_HDR - WARP_SEAL_OVERHEAD)

/* Domain separation: these signatures can never be confused with another warpgate one. */
static const char sign_ctx[] = "warpgate signal v1";
#define SIGN_CTX_LEN sizeof(sign_ctx) /* with the NUL */

static const char *const type_names[] = {
	[WARP_SIG_ADDR_REQUEST] = "ADDR_REQUEST",
	[WARP_SIG_ADDR_REPLY] = "ADDR_REPLY",
	[WARP_SIG_CONNECT_BACK] = "CONNECT_BACK",
	[WARP_SIG_PUNCH_OFFER] = "PUNCH_OFFER",
	[WARP_SIG_PUNCH_ANSWER] = "PUNCH_ANSWER",
	[WARP_SIG_RELAY_OFFER] = "RELAY_OFFER",
	[WARP_SIG_RELAY_ANSWER] = "RELAY_ANSWER",
	[WARP_SIG_CANCEL] = "CANCEL",
	[WARP_SIG_ERROR] = "ERROR",
};

/* Long enough for a few broker round trips, short enough that a stale punch time or address
 * is not acted on. */
static const uint32_t default_ttl[] = {
	[WARP_SIG_ADDR_REQUEST] = 10000, [WARP_SIG_ADDR_REPLY] = 10000,
	[WARP_SIG_CONNECT_BACK] = 15000, [WARP_SIG_PUNCH_OFFER] = 20000,
	[WARP_SIG_PUNCH_ANSWER] = 20000, [WARP_SIG_RELAY_OFFER] = 30000,
	[WARP_SIG_RELAY_ANSWER] = 30000, [WARP_SIG_CANCEL] = 10000,
	[WARP_SIG_ERROR] = 10000,
};

const char *warp_sig_type_name(unsigned int type)
{
	if (type == 0 || type > WARP_SIG_TYPE_MAX)
		return "UNKNOWN";
	return type_names[type];
}

uint32_t warp_sig_default_ttl(unsigned int type)
{
	if (type == 0 || type > WARP_SIG_TYPE_MAX)
		return 10000;
	return default_ttl[type];
}

bool warp_sig_is_request(unsigned int type)
{
	return type == WARP_SIG_ADDR_REQUEST || type == WARP_SIG_CONNECT_BACK ||
	       type == WARP_SIG_PUNCH_OFFER || type == WARP_SIG_RELAY_OFFER;
}

bool warp_sig_id_is_zero(const uint8_t id[WARP_SIG_ID_LEN])
{
	uint8_t acc = 0;

	for (size_t i = 0; i < WARP_SIG_ID_LEN; i++)
		acc |= id[i];
	return acc == 0;
}

void warp_sig_recipient_tag(const uint8_t pub[WARP_PUBKEY_LEN], uint8_t tag[WARP_SIG_TAG_LEN])
{
	static const char label[] = "warpgate signal topic v1";
	crypto_hash_sha256_state st;
	uint8_t h[crypto_hash_sha256_BYTES];

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const uint8_t *)label, sizeof(label) - 1);
	crypto_hash_sha256_update(&st, pub, WARP_PUBKEY_LEN);
	crypto_hash_sha256_final(&st, h);
	memcpy(tag, h, WARP_SIG_TAG_LEN);
}

int warp_sig_topic(const uint8_t pub[WARP_PUBKEY_LEN], char *buf, size_t len)
{
	uint8_t tag[WARP_SIG_TAG_LEN];
	size_t plen = sizeof(WARP_SIG_TOPIC_PREFIX) - 1;

	if (len < WARP_SIG_TOPIC_LEN + 1)
		return -ENOSPC;
	warp_sig_recipient_tag(pub, tag);
	memcpy(buf, WARP_SIG_TOPIC_PREFIX, plen);
	warp_hex_encode(buf + plen, tag, sizeof(tag));
	return 0;
}

void warp_sig_msg_init(struct warp_sig_msg *m, unsigned int type,
		       const uint8_t recipient[WARP_PUBKEY_LEN], uint64_t now_ms)
{
	memset(m, 0, sizeof(*m));
	m->type = (uint8_t)type;
	memcpy(m->recipient, recipient, WARP_PUBKEY_LEN);
	warp_random(m->id, sizeof(m->id));
	m->created_ms = now_ms;
	m->ttl_ms = warp_sig_default_ttl(type);
}

int warp_sig_add_ep(struct warp_sig_body *b, const struct warp_sig_ep *ep)
{
	if (b->neps >= WARP_SIG_MAX_EPS)
		return -ENOSPC;
	b->eps[b->neps++] = *ep;
	return 0;
}

/* ---- field validation shared by encoder and decoder ---- */

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int ep_check(const struct warp_sig_ep *ep)
{
	if (ep->family == 4) {
		if (memcmp(ep->addr, v4mapped, sizeof(v4mapped)))
			return -WARP_EMALFORMED;
	} else if (ep->family != 6) {
		return -WARP_EMALFORMED;
	}
	/* Unknown kinds are kept (newer senders); 0 never is one. */
	if (ep->kind == 0 || ep->port == 0)
		return -WARP_ERANGE;
	return 0;
}

/* Host names and address literals only: no spaces, controls or '/', so a peer cannot smuggle
 * strange strings into logs or a broker URL. */
static int host_check(const char *h, size_t len)
{
	if (len == 0 || len > WARP_SIG_HOST_MAX)
		return -WARP_ERANGE;
	for (size_t i = 0; i < len; i++) {
		char c = h[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == ':' || c == '_' || c == '%'))
			return -WARP_EMALFORMED;
	}
	return 0;
}

static int text_check(const char *t, size_t len)
{
	if (len > WARP_SIG_TEXT_MAX)
		return -WARP_ERANGE;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f)
			return -WARP_EMALFORMED;
	return 0;
}

int warp_sig_msg_check(const struct warp_sig_msg *m)
{
	const struct warp_sig_body *b = &m->body;
	uint32_t need = 0;
	bool need_attempt = false;
	int err;

	if (m->type == 0 || m->type > WARP_SIG_TYPE_MAX)
		return -WARP_EVERSION;
	if (m->ttl_ms == 0 || m->ttl_ms > WARP_SIG_TTL_MAX_MS)
		return -WARP_ERANGE;
	if (m->nbrokers > WARP_SIG_MAX_BROKERS || b->neps > WARP_SIG_MAX_EPS ||
	    b->ncids > WARP_SIG_MAX_CIDS || b->blob_len > WARP_SIG_BLOB_MAX)
		return -WARP_ERANGE;
	for (unsigned int i = 0; i < m->nbrokers; i++) {
		err = host_check(m->brokers[i].host,
				 strnlen(m->brokers[i].host, sizeof(m->brokers[i].host)));
		if (err)
			return err;
		if (m->brokers[i].port == 0)
			return -WARP_ERANGE;
	}
	for (unsigned int i = 0; i < b->neps; i++) {
		err = ep_check(&b->eps[i]);
		if (err)
			return err;
	}
	if ((b->present & WARP_SIGF_RELAY_SERVER) && (err = ep_check(&b->relay_server)))
		return err;
	if ((b->present & WARP_SIGF_RELAYED) && (err = ep_check(&b->relayed)))
		return err;
	if ((b->present & WARP_SIGF_RELAY_NAME) &&
	    (err = host_check(b->relay_name, strnlen(b->relay_name, sizeof(b->relay_name)))))
		return err;
	if ((b->present & WARP_SIGF_TEXT) &&
	    (err = text_check(b->text, strnlen(b->text, sizeof(b->text)))))
		return err;
	if ((b->present & WARP_SIGF_TRANSPORT) && b->transport != WARP_SIG_UDP &&
	    b->transport != WARP_SIG_TCP)
		return -WARP_ERANGE;
	if ((b->present & WARP_SIGF_ROLE) && b->role != WARP_SIG_ROLE_INITIATOR &&
	    b->role != WARP_SIG_ROLE_RESPONDER)
		return -WARP_ERANGE;
	if ((b->present & WARP_SIGF_PORT_INFO) && b->range_lo > b->range_hi)
		return -WARP_ERANGE;
	if ((b->present & WARP_SIGF_BLOB) && b->blob_len == 0)
		return -WARP_ERANGE;

	switch (m->type) {
	case WARP_SIG_ADDR_REQUEST:
		break;
	case WARP_SIG_ADDR_REPLY:
		need = WARP_SIGF_BLOB;
		if (warp_sig_id_is_zero(m->reply_to))
			return -WARP_EMISSING;
		break;
	case WARP_SIG_CONNECT_BACK:
		need = WARP_SIGF_TRANSPORT | WARP_SIGF_SECRET;
		need_attempt = true;
		if (b->neps == 0)
			return -WARP_EMISSING;
		break;
	case WARP_SIG_PUNCH_OFFER:
	case WARP_SIG_PUNCH_ANSWER:
		need = WARP_SIGF_TRANSPORT | WARP_SIGF_ROLE | WARP_SIGF_START | WARP_SIGF_SECRET;
		need_attempt = true;
		if (b->neps == 0)
			return -WARP_EMISSING;
		break;
	case WARP_SIG_RELAY_OFFER:
		need = WARP_SIGF_TRANSPORT | WARP_SIGF_RELAY_SERVER | WARP_SIGF_RELAYED;
		need_attempt = true;
		break;
	case WARP_SIG_RELAY_ANSWER:
		need_attempt = true;
		if (b->neps == 0 && !(b->present & WARP_SIGF_RELAYED))
			return -WARP_EMISSING;
		break;
	case WARP_SIG_CANCEL:
		need_attempt = true;
		break;
	case WARP_SIG_ERROR:
		need = WARP_SIGF_CODE;
		break;
	}
	if ((b->present & need) != need)
		return -WARP_EMISSING;
	if (need_attempt && warp_sig_id_is_zero(m->attempt))
		return -WARP_EMISSING;
	return 0;
}

/* ---- TLV encoding ---- */

static void tlv(struct warp_wr *w, uint16_t tag, const void *v, size_t len)
{
	if (len > UINT16_MAX) {
		w->err = w->err ? w->err : -EMSGSIZE;
		return;
	}
	warp_wr_u16(w, tag);
	warp_wr_u16(w, (uint16_t)len);
	warp_wr_bytes(w, v, len);
}

static void tlv_u8(struct warp_wr *w, uint16_t tag, uint8_t v)
{
	tlv(w, tag, &v, 1);
}

static void tlv_u16(struct warp_wr *w, uint16_t tag, uint16_t v)
{
	uint8_t b[2];

	warp_put_u16(b, v);
	tlv(w, tag, b, sizeof(b));
}

static void tlv_u32(struct warp_wr *w, uint16_t tag, uint32_t v)
{
	uint8_t b[4];

	warp_put_u32(b, v);
	tlv(w, tag, b, sizeof(b));
}

static void tlv_ep(struct warp_wr *w, uint16_t tag, const struct warp_sig_ep *ep)
{
	uint8_t b[EP_LEN];

	b[0] = ep->family;
	b[1] = ep->kind;
	warp_put_u16(b + 2, ep->port);
	memcpy(b + 4, ep->addr, 16);
	tlv(w, tag, b, sizeof(b));
}

static void body_write(struct warp_wr *w, const struct warp_sig_body *b)
{
	uint32_t p = b->present;

	if (p & WARP_SIGF_BLOB)
		tlv(w, TAG_BLOB, b->blob, b->blob_len);
	if (p & WARP_SIGF_TRANSPORT)
		tlv_u8(w, TAG_TRANSPORT, b->transport);
	if (p & WARP_SIGF_ROLE)
		tlv_u8(w, TAG_ROLE, b->role);
	for (unsigned int i = 0; i < b->neps && i < WARP_SIG_MAX_EPS; i++)
		tlv_ep(w, TAG_ENDPOINT, &b->eps[i]);
	if (p & WARP_SIGF_START) {
		uint8_t v[8];

		warp_put_u64(v, b->start_ms);
		tlv(w, TAG_START_MS, v, sizeof(v));
	}
	if (p & WARP_SIGF_SECRET)
		tlv(w, TAG_SECRET, b->secret, sizeof(b->secret));
	if (p & WARP_SIGF_PORT_INFO) {
		uint8_t v[PORT_INFO_LEN];

		warp_put_u32(v, (uint32_t)b->port_delta);
		warp_put_u16(v + 4, b->range_lo);
		warp_put_u16(v + 6, b->range_hi);
		tlv(w, TAG_PORT_INFO, v, sizeof(v));
	}
	if (p & WARP_SIGF_INTERVAL)
		tlv_u16(w, TAG_INTERVAL_MS, b->interval_ms);
	if (p & WARP_SIGF_DURATION)
		tlv_u32(w, TAG_DURATION_MS, b->duration_ms);
	for (unsigned int i = 0; i < b->ncids && i < WARP_SIG_MAX_CIDS; i++)
		tlv(w, TAG_CID, b->cids[i], WARP_SIG_CID_LEN);
	if (p & WARP_SIGF_RELAY_SERVER)
		tlv_ep(w, TAG_RELAY_SERVER, &b->relay_server);
	if (p & WARP_SIGF_RELAYED)
		tlv_ep(w, TAG_RELAYED, &b->relayed);
	if (p & WARP_SIGF_RELAY_NAME)
		tlv(w, TAG_RELAY_NAME, b->relay_name, strnlen(b->relay_name, WARP_SIG_HOST_MAX));
	if (p & WARP_SIGF_LIFETIME)
		tlv_u32(w, TAG_LIFETIME_S, b->lifetime_s);
	if (p & WARP_SIGF_CODE)
		tlv_u16(w, TAG_CODE, b->code);
	if (p & WARP_SIGF_TEXT)
		tlv(w, TAG_TEXT, b->text, strnlen(b->text, WARP_SIG_TEXT_MAX));
}

int warp_sig_body_encode(const struct warp_sig_body *b, uint8_t *out, size_t cap)
{
	struct warp_wr w = warp_wr_init(out, cap);

	body_write(&w, b);
	return w.err ? w.err : (int)w.off;
}

/* ---- TLV decoding ---- */

static int once(uint32_t *present, uint32_t bit)
{
	if (*present & bit)
		return -WARP_EDUPLICATE;
	*present |= bit;
	return 0;
}

static int want_len(size_t len, size_t exact)
{
	return len == exact ? 0 : -WARP_EMALFORMED;
}

static int ep_read(const uint8_t *v, size_t len, struct warp_sig_ep *ep)
{
	if (len < EP_LEN)
		return -WARP_EMALFORMED;
	ep->family = v[0];
	ep->kind = v[1];
	ep->port = warp_get_u16(v + 2);
	memcpy(ep->addr, v + 4, 16);
	return ep_check(ep);
}

static int str_read(const uint8_t *v, size_t len, char *dst, size_t max)
{
	if (len > max)
		return -WARP_ERANGE;
	memcpy(dst, v, len);
	dst[len] = '\0';
	return 0;
}

static int body_field(struct warp_sig_body *b, uint16_t tag, const uint8_t *v, size_t len)
{
	int err;

	switch (tag) {
	case TAG_BLOB:
		if ((err = once(&b->present, WARP_SIGF_BLOB)))
			return err;
		if (len == 0 || len > WARP_SIG_BLOB_MAX)
			return -WARP_ERANGE;
		memcpy(b->blob, v, len);
		b->blob_len = (uint16_t)len;
		return 0;
	case TAG_TRANSPORT:
		if ((err = once(&b->present, WARP_SIGF_TRANSPORT)) || (err = want_len(len, 1)))
			return err;
		b->transport = v[0];
		return 0;
	case TAG_ROLE:
		if ((err = once(&b->present, WARP_SIGF_ROLE)) || (err = want_len(len, 1)))
			return err;
		b->role = v[0];
		return 0;
	case TAG_ENDPOINT:
		if (b->neps >= WARP_SIG_MAX_EPS)
			return -WARP_ERANGE;
		err = ep_read(v, len, &b->eps[b->neps]);
		if (err)
			return err;
		b->neps++;
		return 0;
	case TAG_START_MS:
		if ((err = once(&b->present, WARP_SIGF_START)) || (err = want_len(len, 8)))
			return err;
		b->start_ms = warp_get_u64(v);
		return 0;
	case TAG_SECRET:
		if ((err = once(&b->present, WARP_SIGF_SECRET)) ||
		    (err = want_len(len, WARP_SIG_SECRET_LEN)))
			return err;
		memcpy(b->secret, v, WARP_SIG_SECRET_LEN);
		return 0;
	case TAG_PORT_INFO:
		if ((err = once(&b->present, WARP_SIGF_PORT_INFO)))
			return err;
		if (len < PORT_INFO_LEN)
			return -WARP_EMALFORMED;
		b->port_delta = (int32_t)warp_get_u32(v);
		b->range_lo = warp_get_u16(v + 4);
		b->range_hi = warp_get_u16(v + 6);
		return 0;
	case TAG_INTERVAL_MS:
		if ((err = once(&b->present, WARP_SIGF_INTERVAL)) || (err = want_len(len, 2)))
			return err;
		b->interval_ms = warp_get_u16(v);
		return 0;
	case TAG_DURATION_MS:
		if ((err = once(&b->present, WARP_SIGF_DURATION)) || (err = want_len(len, 4)))
			return err;
		b->duration_ms = warp_get_u32(v);
		return 0;
	case TAG_CID:
		if (b->ncids >= WARP_SIG_MAX_CIDS)
			return -WARP_ERANGE;
		if ((err = want_len(len, WARP_SIG_CID_LEN)))
			return err;
		memcpy(b->cids[b->ncids++], v, WARP_SIG_CID_LEN);
		return 0;
	case TAG_RELAY_SERVER:
		if ((err = once(&b->present, WARP_SIGF_RELAY_SERVER)))
			return err;
		return ep_read(v, len, &b->relay_server);
	case TAG_RELAYED:
		if ((err = once(&b->present, WARP_SIGF_RELAYED)))
			return err;
		return ep_read(v, len, &b->relayed);
	case TAG_RELAY_NAME:
		if ((err = once(&b->present, WARP_SIGF_RELAY_NAME)))
			return err;
		if ((err = host_check((const char *)v, len)))
			return err;
		return str_read(v, len, b->relay_name, WARP_SIG_HOST_MAX);
	case TAG_LIFETIME_S:
		if ((err = once(&b->present, WARP_SIGF_LIFETIME)) || (err = want_len(len, 4)))
			return err;
		b->lifetime_s = warp_get_u32(v);
		return 0;
	case TAG_CODE:
		if ((err = once(&b->present, WARP_SIGF_CODE)) || (err = want_len(len, 2)))
			return err;
		b->code = warp_get_u16(v);
		return 0;
	case TAG_TEXT:
		if ((err = once(&b->present, WARP_SIGF_TEXT)))
			return err;
		if ((err = text_check((const char *)v, len)))
			return err;
		return str_read(v, len, b->text, WARP_SIG_TEXT_MAX);
	default:
		return (tag & TLV_CRITICAL) ? -WARP_EVERSION : 0;
	}
}

typedef int (*tlv_fn)(void *ctx, uint16_t tag, const uint8_t *v, size_t len);

static int tlv_walk(const uint8_t *in, size_t len, tlv_fn fn, void *ctx)
{
	struct warp_rd r = warp_rd_init(in, len);
	int err;

	while (warp_rd_left(&r)) {
		uint16_t tag = warp_rd_u16(&r);
		uint16_t vlen = warp_rd_u16(&r);
		const uint8_t *v = warp_rd_bytes(&r, vlen);

		if (r.err)
			return r.err;
		err = fn(ctx, tag, v, vlen);
		if (err)
			return err;
	}
	return 0;
}

static int body_cb(void *ctx, uint16_t tag, const uint8_t *v, size_t len)
{
	return body_field(ctx, tag, v, len);
}

int warp_sig_body_decode(const uint8_t *in, size_t len, struct warp_sig_body *b)
{
	memset(b, 0, sizeof(*b));
	return tlv_walk(in, len, body_cb, b);
}

static int meta_cb(void *ctx, uint16_t tag, const uint8_t *v, size_t len)
{
	struct warp_sig_msg *m = ctx;
	struct warp_sig_broker *br;
	int err;

	switch (tag) {
	case META_REPLY_BROKER:
		if (m->nbrokers >= WARP_SIG_MAX_BROKERS)
			return -WARP_ERANGE;
		if (len < 3)
			return -WARP_EMALFORMED;
		br = &m->brokers[m->nbrokers];
		br->port = warp_get_u16(v);
		if (br->port == 0)
			return -WARP_ERANGE;
		if ((err = host_check((const char *)v + 2, len - 2)))
			return err;
		memcpy(br->host, v + 2, len - 2);
		br->host[len - 2] = '\0';
		m->nbrokers++;
		return 0;
	default:
		return (tag & TLV_CRITICAL) ? -WARP_EVERSION : 0;
	}
}

/* ---- inner message ---- */

int warp_sig_write_inner(const struct warp_sig_msg *m, uint8_t *out, size_t cap)
{
	struct warp_wr w = warp_wr_init(out, cap);
	uint8_t *lenp;
	size_t start;

	warp_wr_u8(&w, WARP_SIG_VERSION);
	warp_wr_u8(&w, m->type);
	warp_wr_u16(&w, 0); /* flags: none defined */
	warp_wr_bytes(&w, m->sender, WARP_PUBKEY_LEN);
	warp_wr_bytes(&w, m->recipient, WARP_PUBKEY_LEN);
	warp_wr_bytes(&w, m->id, WARP_SIG_ID_LEN);
	warp_wr_bytes(&w, m->attempt, WARP_SIG_ID_LEN);
	warp_wr_bytes(&w, m->reply_to, WARP_SIG_ID_LEN);
	warp_wr_u64(&w, m->created_ms);
	warp_wr_u32(&w, m->ttl_ms);

	lenp = warp_wr_reserve(&w, 2);
	start = w.off;
	for (unsigned int i = 0; i < m->nbrokers && i < WARP_SIG_MAX_BROKERS; i++) {
		size_t hlen = strnlen(m->brokers[i].host, WARP_SIG_HOST_MAX);

		warp_wr_u16(&w, META_REPLY_BROKER);
		warp_wr_u16(&w, (uint16_t)(2 + hlen));
		warp_wr_u16(&w, m->brokers[i].port);
		warp_wr_bytes(&w, m->brokers[i].host, hlen);
	}
	if (lenp)
		warp_put_u16(lenp, (uint16_t)(w.off - start));

	lenp = warp_wr_reserve(&w, 2);
	start = w.off;
	body_write(&w, &m->body);
	if (lenp && !w.err) {
		if (w.off - start > UINT16_MAX)
			return -EMSGSIZE;
		warp_put_u16(lenp, (uint16_t)(w.off - start));
	}
	return w.err ? w.err : (int)w.off;
}

int warp_sig_parse_inner(const uint8_t *in, size_t len, struct warp_sig_msg *m, size_t *signed_len)
{
	struct warp_rd r = warp_rd_init(in, len);
	const uint8_t *meta, *body;
	uint16_t flags, mlen, blen;
	uint8_t version;
	int err;

	memset(m, 0, sizeof(*m));
	version = warp_rd_u8(&r);
	m->type = warp_rd_u8(&r);
	flags = warp_rd_u16(&r);
	warp_rd_copy(&r, m->sender, WARP_PUBKEY_LEN);
	warp_rd_copy(&r, m->recipient, WARP_PUBKEY_LEN);
	warp_rd_copy(&r, m->id, WARP_SIG_ID_LEN);
	warp_rd_copy(&r, m->attempt, WARP_SIG_ID_LEN);
	warp_rd_copy(&r, m->reply_to, WARP_SIG_ID_LEN);
	m->created_ms = warp_rd_u64(&r);
	m->ttl_ms = warp_rd_u32(&r);
	mlen = warp_rd_u16(&r);
	meta = warp_rd_bytes(&r, mlen);
	blen = warp_rd_u16(&r);
	body = warp_rd_bytes(&r, blen);
	if (r.err)
		return r.err;
	if (version != WARP_SIG_VERSION)
		return -WARP_EVERSION;
	if (flags)
		return -WARP_EMALFORMED;
	*signed_len = r.off;
	if (!warp_rd_bytes(&r, WARP_SIG_LEN))
		return r.err;
	if (warp_rd_left(&r))
		return -WARP_ETRAILING;
	err = tlv_walk(meta, mlen, meta_cb, m);
	if (err)
		return err;
	err = tlv_walk(body, blen, body_cb, &m->body);
	if (err)
		return err;
	return warp_sig_msg_check(m);
}

int warp_sig_encode(const struct warp_identity *id, struct warp_sig_msg *m, uint8_t *out,
		    size_t cap)
{
	uint8_t *buf = NULL;
	size_t bufcap = SIGN_CTX_LEN + INNER_MAX;
	int n, err;

	memcpy(m->sender, warp_identity_pubkey(id), WARP_PUBKEY_LEN);
	err = warp_sig_msg_check(m);
	if (err)
		return err;
	err = warp_pubkey_check(m->recipient);
	if (err)
		return err;
	buf = malloc(bufcap);
	if (!buf)
		return -ENOMEM;
	/* buf = context | inner | signature; the signature covers context | inner. */
	memcpy(buf, sign_ctx, SIGN_CTX_LEN);
	n = warp_sig_write_inner(m, buf + SIGN_CTX_LEN, bufcap - SIGN_CTX_LEN - WARP_SIG_LEN);
	if (n < 0) {
		err = n;
		goto out;
	}
	err = warp_identity_sign(id, buf, SIGN_CTX_LEN + (size_t)n, buf + SIGN_CTX_LEN + n);
	if (err)
		goto out;
	n += WARP_SIG_LEN;
	if ((size_t)n + WARP_SIG_OUTER_HDR + WARP_SEAL_OVERHEAD > cap) {
		err = -EMSGSIZE;
		goto out;
	}
	out[0] = WARP_SIG_VERSION;
	out[1] = 0;
	warp_sig_recipient_tag(m->recipient, out + 2);
	err = warp_seal(m->recipient, out, WARP_SIG_OUTER_HDR, buf + SIGN_CTX_LEN, (size_t)n,
			out + WARP_SIG_OUTER_HDR);
	if (err)
		goto out;
	err = n + WARP_SIG_OUTER_HDR + WARP_SEAL_OVERHEAD;
out:
	sodium_memzero(buf, bufcap);
	free(buf);
	return err;
}

int warp_sig_decode(const struct warp_identity *id, const uint8_t *in, size_t len, uint64_t now_ms,
		    uint32_t skew_ms, struct warp_sig_msg *m)
{
	const uint8_t *me = warp_identity_pubkey(id);
	uint8_t tag[WARP_SIG_TAG_LEN];
	uint8_t *buf = NULL;
	size_t signed_len;
	int n, err;

	memset(m, 0, sizeof(*m));
	if (len < PAYLOAD_MIN)
		return -WARP_ETRUNCATED;
	if (len > WARP_SIG_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (in[0] != WARP_SIG_VERSION)
		return -WARP_EVERSION;
	if (in[1] != 0)
		return -WARP_EMALFORMED;
	/* Cheap "not for us" before any public-key work. */
	warp_sig_recipient_tag(me, tag);
	if (memcmp(tag, in + 2, WARP_SIG_TAG_LEN))
		return -WARP_EIDENTITY;
	buf = malloc(SIGN_CTX_LEN + len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, sign_ctx, SIGN_CTX_LEN);
	n = warp_open_sealed(id, in, WARP_SIG_OUTER_HDR, in + WARP_SIG_OUTER_HDR,
			     len - WARP_SIG_OUTER_HDR, buf + SIGN_CTX_LEN);
	if (n < 0) {
		err = n;
		goto out;
	}
	err = warp_sig_parse_inner(buf + SIGN_CTX_LEN, (size_t)n, m, &signed_len);
	if (err)
		goto out;
	/* Sealed to us but naming someone else: somebody re-sealed another's message. */
	if (memcmp(m->recipient, me, WARP_PUBKEY_LEN)) {
		err = -WARP_EIDENTITY;
		goto out;
	}
	err = warp_verify(m->sender, buf, SIGN_CTX_LEN + signed_len,
			  buf + SIGN_CTX_LEN + signed_len);
	if (err) {
		err = -WARP_EAUTH;
		goto out;
	}
	if (m->created_ms > now_ms + skew_ms || now_ms > warp_sig_expiry(m, skew_ms)) {
		err = -WARP_ESTALE;
		goto out;
	}
out:
	if (buf) {
		sodium_memzero(buf, SIGN_CTX_LEN + len);
		free(buf);
	}
	if (err)
		memset(m, 0, sizeof(*m));
	return err;
}

/* ---- replay cache: open addressing, linear probing, rebuilt without expired entries ---- */

struct replay_ent {
	uint8_t key[WARP_SIG_ID_LEN + 8]; /* id | first 8 bytes of the sender's x coordinate */
	uint64_t expires;		  /* 0: empty slot */
};

struct warp_sig_replay {
	struct replay_ent *tab;
	size_t cap; /* power of two */
	size_t count;
	size_t max;
	uint8_t hkey[crypto_shorthash_KEYBYTES];
};

struct warp_sig_replay *warp_sig_replay_new(size_t max_entries)
{
	struct warp_sig_replay *r;

	if (warp_crypto_init())
		return NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->max = max_entries ? max_entries : 16384;
	r->cap = 64;
	r->tab = calloc(r->cap, sizeof(*r->tab));
	if (!r->tab) {
		free(r);
		errno = ENOMEM;
		return NULL;
	}
	/* Keyed slot hash: senders choose ids, so they must not be able to aim collisions. */
	warp_random(r->hkey, sizeof(r->hkey));
	return r;
}

void warp_sig_replay_free(struct warp_sig_replay *r)
{
	if (!r)
		return;
	free(r->tab);
	free(r);
}

size_t warp_sig_replay_count(const struct warp_sig_replay *r)
{
	return r->count;
}

static size_t slot_of(const struct warp_sig_replay *r, const uint8_t *key)
{
	uint8_t h[crypto_shorthash_BYTES];

	crypto_shorthash(h, key, WARP_SIG_ID_LEN + 8, r->hkey);
	return (size_t)warp_get_u64(h) & (r->cap - 1);
}

static void put(struct warp_sig_replay *r, const struct replay_ent *e)
{
	size_t i = slot_of(r, e->key);

	while (r->tab[i].expires)
		i = (i + 1) & (r->cap - 1);
	r->tab[i] = *e;
	r->count++;
}

/* Drops expired entries and resizes to new_cap. */
static int rebuild(struct warp_sig_replay *r, size_t new_cap, uint64_t now_ms)
{
	struct replay_ent *old = r->tab;
	size_t old_cap = r->cap;
	struct replay_ent *tab = calloc(new_cap, sizeof(*tab));

	if (!tab)
		return -ENOMEM;
	r->tab = tab;
	r->cap = new_cap;
	r->count = 0;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].expires && old[i].expires >= now_ms)
			put(r, &old[i]);
	free(old);
	return 0;
}

int warp_sig_replay_check(struct warp_sig_replay *r, const uint8_t sender[WARP_PUBKEY_LEN],
			  const uint8_t id[WARP_SIG_ID_LEN], uint64_t expires_ms, uint64_t now_ms)
{
	struct replay_ent e = {.expires = expires_ms ? expires_ms : 1};
	size_t i;
	int err;

	memcpy(e.key, id, WARP_SIG_ID_LEN);
	memcpy(e.key + WARP_SIG_ID_LEN, sender + 1, 8);
	for (i = slot_of(r, e.key); r->tab[i].expires; i = (i + 1) & (r->cap - 1)) {
		/* An expired twin still counts: the caller's staleness check is what lets a
		 * message past its expiry through, and it never does. */
		if (!memcmp(r->tab[i].key, e.key, sizeof(e.key)))
			return -WARP_EREPLAY;
	}
	/* At half load (or at the entry limit), drop expired entries and size the table for a
	 * quarter load, so the O(cap) rebuild happens at most once per cap/4 insertions. */
	if ((r->count + 1) * 2 > r->cap || r->count + 1 > r->max) {
		size_t live = 0, want = 64;

		for (i = 0; i < r->cap; i++)
			live += r->tab[i].expires && r->tab[i].expires >= now_ms;
		if (live + 1 > r->max)
			return -WARP_EQUOTA;
		while ((live + 1) * 4 > want)
			want *= 2;
		err = rebuild(r, want, now_ms);
		if (err)
			return err;
	}
	put(r, &e);
	return 0;
}
