// SPDX-License-Identifier: MIT
/*
 * Nickname protocol codec.  Every multi-byte field is big-endian (core/bytes.h).  The owner's
 * signature covers a domain prefix and the record bytes before it, so a record signature can
 * never be taken for a reply, a local answer or anything else warpgate signs.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>

#include "core/util.h"
#include "name/proto.h"

static const char rec_prefix[] = "warpgate-names/1 record";
static const char batch_prefix[] = "warpgate-names/1 reply-batch";
static const char lanswer_prefix[] = "warpgate-names/1 local-answer";

static const char *const status_names[WN_STATUS_MAX] = {
	[WN_OK] = "ok",
	[WN_NOT_FOUND] = "not found",
	[WN_NOT_STORED] = "not stored (quota full, no bump)",
	[WN_MALFORMED] = "malformed request",
	[WN_BAD_VERSION] = "unsupported version",
	[WN_BAD_TYPE] = "unknown request type",
	[WN_BAD_NAME] = "invalid name",
	[WN_BAD_TLD] = "TLD not served here",
	[WN_TOO_BIG] = "value too large",
	[WN_BAD_SIG] = "bad owner signature",
	[WN_NOT_OWNER] = "name owned by another key",
	[WN_STALE] = "timestamp outside the clock window",
	[WN_REPLAY] = "timestamp not newer than the stored record",
	[WN_QUOTA] = "quota exhausted",
	[WN_RATE_LIMITED] = "rate limited",
	[WN_TRUNCATED] = "reply too large for UDP, use TCP",
	[WN_INTERNAL] = "server error",
	[WN_BAD_SEAL] = "cannot open sealed request",
	[WN_BAD_BUMP] = "unknown bump behaviour",
};

const char *wn_status_str(unsigned int status)
{
	return status < WN_STATUS_MAX && status_names[status] ? status_names[status] : "unknown";
}

int wn_status_err(unsigned int status)
{
	switch (status) {
	case WN_OK:
	case WN_NOT_STORED:
		return 0;
	case WN_NOT_FOUND:
		return -WARP_ENOTFOUND;
	case WN_MALFORMED:
		return -WARP_EMALFORMED;
	case WN_BAD_VERSION:
		return -WARP_EVERSION;
	case WN_BAD_NAME:
	case WN_BAD_TLD:
		return -WARP_ENAME;
	case WN_TOO_BIG:
		return -EMSGSIZE;
	case WN_BAD_SIG:
	case WN_BAD_SEAL:
		return -WARP_EAUTH;
	case WN_NOT_OWNER:
		return -WARP_ENOTOWNER;
	case WN_STALE:
		return -WARP_ESTALE;
	case WN_REPLAY:
		return -WARP_EREPLAY;
	case WN_QUOTA:
		return -WARP_EQUOTA;
	case WN_RATE_LIMITED:
		return -WARP_ERATELIMIT;
	case WN_BAD_TYPE:
	case WN_BAD_BUMP:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* ---- names ---- */

static bool label_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

int wn_name_check(const char *name, size_t len)
{
	size_t label = 0, labels = 0;

	if (len == 0 || len > WARP_NAME_FQ_MAX)
		return -WARP_ENAME;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? name[i] : '.';

		if (c == '.') {
			/* no empty label, no '-' at either end of one */
			if (!label || name[i - 1] == '-' || name[i - label] == '-')
				return -WARP_ENAME;
			labels++;
			label = 0;
			continue;
		}
		if (!label_char(c))
			return -WARP_ENAME;
		label++;
	}
	return labels >= 2 ? 0 : -WARP_ENAME;
}

const char *wn_name_tld(const char *name)
{
	const char *dot = strrchr(name, '.');

	return dot ? dot + 1 : name;
}

int warp_name_canonical(const char *in, const char *tld, char out[WARP_NAME_FQ_MAX + 1])
{
	char buf[2 * (WARP_NAME_FQ_MAX + 1)];
	size_t n;

	if (!in || !out)
		return -EINVAL;
	if (!tld || !*tld)
		tld = WARP_NAME_TLD_DEFAULT;
	n = strlen(in);
	if (n && in[n - 1] == '.')
		n--;
	if (n == 0 || n > WARP_NAME_FQ_MAX)
		return -WARP_ENAME;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];

		buf[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	buf[n] = '\0';
	if (!memchr(buf, '.', n)) {
		size_t t = strlen(tld);

		if (n + 1 + t > WARP_NAME_FQ_MAX)
			return -WARP_ENAME;
		buf[n] = '.';
		memcpy(buf + n + 1, tld, t + 1);
		n += 1 + t;
	}
	if (wn_name_check(buf, n))
		return -WARP_ENAME;
	memcpy(out, buf, n + 1);
	return 0;
}

/* ---- records ---- */

static void record_encode_unsigned(struct warp_wr *w, const struct wn_record *rec)
{
	warp_wr_u8(w, rec->kind);
	warp_wr_u8(w, rec->name_len);
	warp_wr_bytes(w, rec->name, rec->name_len);
	warp_wr_u16(w, rec->value_len);
	warp_wr_bytes(w, rec->value, rec->value_len);
	warp_wr_bytes(w, rec->owner, WARP_PUBKEY_LEN);
	warp_wr_u64(w, rec->updated);
}

void wn_record_encode(struct warp_wr *w, const struct wn_record *rec)
{
	record_encode_unsigned(w, rec);
	warp_wr_bytes(w, rec->sig, WARP_SIG_LEN);
}

int wn_record_decode(struct warp_rd *r, struct wn_record *rec)
{
	const uint8_t *name;

	rec->kind = warp_rd_u8(r);
	rec->name_len = warp_rd_u8(r);
	name = warp_rd_bytes(r, rec->name_len);
	rec->value_len = warp_rd_u16(r);
	if (r->err)
		return r->err;
	if (rec->kind != WN_REC_LIVE && rec->kind != WN_REC_TOMB)
		return -WARP_EMALFORMED;
	if (rec->value_len > WARP_NAME_VALUE_MAX)
		return -EMSGSIZE;
	if (rec->kind == WN_REC_TOMB && rec->value_len)
		return -WARP_EMALFORMED;
	warp_rd_copy(r, rec->value, rec->value_len);
	warp_rd_copy(r, rec->owner, WARP_PUBKEY_LEN);
	rec->updated = warp_rd_u64(r);
	warp_rd_copy(r, rec->sig, WARP_SIG_LEN);
	if (r->err)
		return r->err;
	if (rec->name_len > WARP_NAME_FQ_MAX)
		return -WARP_ENAME;
	memcpy(rec->name, name, rec->name_len);
	rec->name[rec->name_len] = '\0';
	if (wn_name_check(rec->name, rec->name_len))
		return -WARP_ENAME;
	return 0;
}

int wn_record_signed_msg(const struct wn_record *rec, uint8_t *buf, size_t cap)
{
	struct warp_wr w = warp_wr_init(buf, cap);

	warp_wr_bytes(&w, rec_prefix, sizeof(rec_prefix)); /* with its NUL */
	record_encode_unsigned(&w, rec);
	return w.err ? w.err : (int)w.off;
}

int wn_record_sign(struct wn_record *rec, const struct warp_identity *id)
{
	uint8_t msg[64 + WARP_NAME_FQ_MAX + WARP_NAME_VALUE_MAX + WARP_PUBKEY_LEN + 16];
	int len = wn_record_signed_msg(rec, msg, sizeof(msg));

	if (len < 0)
		return len;
	return warp_identity_sign(id, msg, (size_t)len, rec->sig);
}

int wn_record_sign_with(struct wn_record *rec, const struct wn_signer *s)
{
	uint8_t msg[64 + WARP_NAME_FQ_MAX + WARP_NAME_VALUE_MAX + WARP_PUBKEY_LEN + 16];
	int len = wn_record_signed_msg(rec, msg, sizeof(msg));

	if (len < 0)
		return len;
	return wn_signer_sign(s, msg, (size_t)len, rec->sig);
}

int wn_record_verify(const struct wn_record *rec)
{
	uint8_t msg[64 + WARP_NAME_FQ_MAX + WARP_NAME_VALUE_MAX + WARP_PUBKEY_LEN + 16];
	int len = wn_record_signed_msg(rec, msg, sizeof(msg));

	if (len < 0)
		return len;
	return wn_verify(rec->owner, msg, (size_t)len, rec->sig) ? -WARP_EAUTH : 0;
}

int wn_record_make(struct wn_record *rec, const struct warp_identity *id, uint8_t kind,
		   const char *name, const void *value, size_t len, uint64_t updated)
{
	size_t nlen = strlen(name);

	if (wn_name_check(name, nlen))
		return -WARP_ENAME;
	if (len > WARP_NAME_VALUE_MAX || (kind == WN_REC_TOMB && len))
		return -EMSGSIZE;
	memset(rec, 0, sizeof(*rec));
	rec->kind = kind;
	rec->name_len = (uint8_t)nlen;
	memcpy(rec->name, name, nlen + 1);
	rec->value_len = (uint16_t)len;
	if (len)
		memcpy(rec->value, value, len);
	memcpy(rec->owner, warp_identity_pubkey(id), WARP_PUBKEY_LEN);
	rec->updated = updated;
	return wn_record_sign(rec, id);
}

/* ---- header ---- */

static void hdr_encode(struct warp_wr *w, uint8_t type, uint64_t id)
{
	warp_wr_u8(w, WN_MAGIC0);
	warp_wr_u8(w, WN_MAGIC1);
	warp_wr_u8(w, WN_VERSION);
	warp_wr_u8(w, type);
	warp_wr_u64(w, id);
}

int wn_peek(const uint8_t *buf, size_t len, uint8_t *type, uint64_t *id)
{
	if (len < 4 || buf[0] != WN_MAGIC0 || buf[1] != WN_MAGIC1)
		return -WARP_EMALFORMED;
	if (buf[2] != WN_VERSION)
		return -WARP_EVERSION;
	*type = buf[3];
	*id = len >= WN_HDR_LEN ? warp_get_u64(buf + 4) : 0;
	return len >= WN_HDR_LEN ? 0 : -WARP_ETRUNCATED;
}

/* ---- requests ----
 *
 * GET:     hdr | u8 flags(0) | u8 name_len | name | u16 pad_len | pad
 * PUT/DEL: hdr | u8 bump | record | u16 pad_len | pad
 */
int wn_request_encode(const struct wn_request *req, uint8_t *buf, size_t cap, size_t pad_to)
{
	struct warp_wr w = warp_wr_init(buf, cap);
	size_t nlen, pad;

	hdr_encode(&w, req->type, req->id);
	switch (req->type) {
	case WN_T_GET:
		nlen = strlen(req->name);
		if (nlen > WARP_NAME_FQ_MAX)
			return -WARP_ENAME;
		warp_wr_u8(&w, 0);
		warp_wr_u8(&w, (uint8_t)nlen);
		warp_wr_bytes(&w, req->name, nlen);
		break;
	case WN_T_PUT:
	case WN_T_DEL:
		warp_wr_u8(&w, req->bump);
		wn_record_encode(&w, &req->rec);
		break;
	default:
		return -EINVAL;
	}
	if (pad_to < WN_MIN_REQUEST)
		pad_to = WN_MIN_REQUEST;
	if (pad_to > cap)
		pad_to = cap;
	pad = pad_to > w.off + 2 ? pad_to - w.off - 2 : 0;
	warp_wr_u16(&w, (uint16_t)pad);
	if (!w.err && pad) {
		uint8_t *p = warp_wr_reserve(&w, pad);

		if (p)
			memset(p, 0, pad);
	}
	return w.err ? w.err : (int)w.off;
}

static int fail(uint8_t *status, uint8_t st, int err)
{
	*status = st;
	return err;
}

int wn_request_decode(const uint8_t *buf, size_t len, struct wn_request *req, uint8_t *status)
{
	struct warp_rd r = warp_rd_init(buf, len);
	const uint8_t *p;
	uint8_t nlen;
	uint16_t pad;
	int err;

	err = wn_peek(buf, len, &req->type, &req->id);
	if (err == -WARP_EVERSION)
		return fail(status, WN_BAD_VERSION, err);
	if (err)
		return fail(status, WN_MALFORMED, err);
	warp_rd_bytes(&r, WN_HDR_LEN);
	switch (req->type) {
	case WN_T_GET:
		if (warp_rd_u8(&r) != 0 && !r.err)
			return fail(status, WN_MALFORMED, -WARP_EMALFORMED);
		nlen = warp_rd_u8(&r);
		p = warp_rd_bytes(&r, nlen);
		if (r.err)
			return fail(status, WN_MALFORMED, r.err);
		if (nlen > WARP_NAME_FQ_MAX || wn_name_check((const char *)p, nlen))
			return fail(status, WN_BAD_NAME, -WARP_ENAME);
		memcpy(req->name, p, nlen);
		req->name[nlen] = '\0';
		break;
	case WN_T_PUT:
	case WN_T_DEL:
		req->bump = warp_rd_u8(&r);
		err = r.err ? r.err : wn_record_decode(&r, &req->rec);
		if (err == -WARP_ENAME)
			return fail(status, WN_BAD_NAME, err);
		if (err == -EMSGSIZE)
			return fail(status, WN_TOO_BIG, err);
		if (err)
			return fail(status, WN_MALFORMED, err);
		if (req->bump > WARP_NAME_ERROR)
			return fail(status, WN_BAD_BUMP, -EINVAL);
		if ((req->type == WN_T_PUT) != (req->rec.kind == WN_REC_LIVE))
			return fail(status, WN_MALFORMED, -WARP_EMALFORMED);
		memcpy(req->name, req->rec.name, (size_t)req->rec.name_len + 1);
		break;
	default:
		return fail(status, WN_BAD_TYPE, -WARP_EMALFORMED);
	}
	pad = warp_rd_u16(&r);
	p = warp_rd_bytes(&r, pad);
	if (r.err)
		return fail(status, WN_MALFORMED, r.err);
	if (warp_rd_left(&r))
		return fail(status, WN_MALFORMED, -WARP_ETRAILING);
	for (size_t i = 0; i < pad; i++)
		if (p[i])
			return fail(status, WN_MALFORMED, -WARP_EMALFORMED);
	*status = WN_OK;
	return 0;
}

/* ---- replies ----
 *
 * hdr | u8 status | u8 flags | u64 server_time | u32 detail | [record] | auth
 * auth = u8 depth | u8 0 | u16 index | server_pub(33) | path(depth*32) | sig(64)
 */
int wn_reply_encode_body(const struct wn_reply *rep, uint8_t *buf, size_t cap)
{
	struct warp_wr w = warp_wr_init(buf, cap);

	hdr_encode(&w, rep->type, rep->id);
	warp_wr_u8(&w, rep->status);
	warp_wr_u8(&w, rep->flags);
	warp_wr_u64(&w, rep->server_time);
	warp_wr_u32(&w, rep->detail);
	if (rep->flags & WN_RF_RECORD)
		wn_record_encode(&w, &rep->rec);
	return w.err ? w.err : (int)w.off;
}

size_t wn_auth_len(unsigned int depth)
{
	return 4 + WARP_PUBKEY_LEN + 32 * (size_t)depth + WARP_SIG_LEN;
}

unsigned int wn_auth_depth(size_t n)
{
	unsigned int d = 0;

	while (((size_t)1 << d) < n)
		d++;
	return d;
}

static void leaf_hash(const uint8_t *body, size_t len, uint8_t out[32])
{
	crypto_hash_sha256_state st;
	uint8_t tag = 0;

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, &tag, 1);
	crypto_hash_sha256_update(&st, body, len);
	crypto_hash_sha256_final(&st, out);
}

static void node_hash(const uint8_t l[32], const uint8_t r[32], uint8_t out[32])
{
	uint8_t in[65];

	in[0] = 1;
	memcpy(in + 1, l, 32);
	memcpy(in + 33, r, 32);
	crypto_hash_sha256(out, in, sizeof(in));
}

static int batch_msg(const uint8_t server[WARP_PUBKEY_LEN], const uint8_t root[32], uint8_t *msg)
{
	memcpy(msg, batch_prefix, sizeof(batch_prefix));
	memcpy(msg + sizeof(batch_prefix), server, WARP_PUBKEY_LEN);
	memcpy(msg + sizeof(batch_prefix) + WARP_PUBKEY_LEN, root, 32);
	return (int)(sizeof(batch_prefix) + WARP_PUBKEY_LEN + 32);
}

int wn_auth_batch(const struct wn_signer *server, uint8_t **bufs, size_t *lens, const size_t *caps,
		  size_t n)
{
	/* tree[level][i]; level 0 are the leaves, padded with zero hashes to a power of two */
	uint8_t tree[WN_MAX_DEPTH + 1][WN_MAX_BATCH][32];
	uint8_t msg[sizeof(batch_prefix) + WARP_PUBKEY_LEN + 32], sig[WARP_SIG_LEN];
	const uint8_t *pub = server->pub;
	unsigned int depth = wn_auth_depth(n);
	size_t width = (size_t)1 << depth;
	int err, mlen;

	if (n == 0 || n > WN_MAX_BATCH)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (lens[i] + wn_auth_len(depth) > caps[i])
			return -EMSGSIZE;
	for (size_t i = 0; i < width; i++) {
		if (i < n)
			leaf_hash(bufs[i], lens[i], tree[0][i]);
		else
			memset(tree[0][i], 0, 32);
	}
	for (unsigned int l = 1; l <= depth; l++)
		for (size_t i = 0; i < (width >> l); i++)
			node_hash(tree[l - 1][2 * i], tree[l - 1][2 * i + 1], tree[l][i]);
	mlen = batch_msg(pub, tree[depth][0], msg);
	err = wn_signer_sign(server, msg, (size_t)mlen, sig);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++) {
		struct warp_wr w = warp_wr_init(bufs[i] + lens[i], caps[i] - lens[i]);

		warp_wr_u8(&w, (uint8_t)depth);
		warp_wr_u8(&w, 0);
		warp_wr_u16(&w, (uint16_t)i);
		warp_wr_bytes(&w, pub, WARP_PUBKEY_LEN);
		for (unsigned int l = 0; l < depth; l++)
			warp_wr_bytes(&w, tree[l][(i >> l) ^ 1], 32);
		warp_wr_bytes(&w, sig, WARP_SIG_LEN);
		if (w.err)
			return w.err;
		lens[i] += w.off;
	}
	return 0;
}

int wn_reply_decode(const uint8_t *buf, size_t len, struct wn_reply *rep, size_t *body_len,
		    struct wn_auth *auth)
{
	struct warp_rd r = warp_rd_init(buf, len);
	int err = wn_peek(buf, len, &rep->type, &rep->id);

	if (err)
		return err;
	if (!(rep->type & WN_T_REPLY))
		return -WARP_EMALFORMED;
	warp_rd_bytes(&r, WN_HDR_LEN);
	rep->status = warp_rd_u8(&r);
	rep->flags = warp_rd_u8(&r);
	rep->server_time = warp_rd_u64(&r);
	rep->detail = warp_rd_u32(&r);
	if (r.err)
		return r.err;
	if (rep->flags & WN_RF_RECORD) {
		err = wn_record_decode(&r, &rep->rec);
		if (err)
			return err;
	}
	*body_len = r.off;
	auth->depth = warp_rd_u8(&r);
	warp_rd_u8(&r);
	auth->index = warp_rd_u16(&r);
	warp_rd_copy(&r, auth->server, WARP_PUBKEY_LEN);
	if (r.err)
		return r.err;
	if (auth->depth > WN_MAX_DEPTH || auth->index >= (1u << auth->depth))
		return -WARP_EMALFORMED;
	auth->path = warp_rd_bytes(&r, 32 * (size_t)auth->depth);
	auth->sig = warp_rd_bytes(&r, WARP_SIG_LEN);
	if (r.err)
		return r.err;
	return warp_rd_left(&r) ? -WARP_ETRAILING : 0;
}

int wn_reply_verify(const uint8_t *buf, size_t body_len, const struct wn_auth *auth)
{
	uint8_t h[32], msg[sizeof(batch_prefix) + WARP_PUBKEY_LEN + 32];
	int mlen;

	leaf_hash(buf, body_len, h);
	for (unsigned int l = 0; l < auth->depth; l++) {
		const uint8_t *sib = auth->path + 32 * l;

		if ((auth->index >> l) & 1)
			node_hash(sib, h, h);
		else
			node_hash(h, sib, h);
	}
	mlen = batch_msg(auth->server, h, msg);
	return wn_verify(auth->server, msg, (size_t)mlen, auth->sig) ? -WARP_EAUTH : 0;
}

/* ---- local link ----
 *
 * query:  hdr(LQUERY) | u8 name_len | name
 * answer: hdr(LANSWER) | record | sig(64) by the owner over prefix || id || record
 */
int wn_lquery_encode(uint64_t id, const char *name, uint8_t *buf, size_t cap)
{
	struct warp_wr w = warp_wr_init(buf, cap);
	size_t n = strlen(name);

	if (wn_name_check(name, n))
		return -WARP_ENAME;
	hdr_encode(&w, WN_T_LQUERY, id);
	warp_wr_u8(&w, (uint8_t)n);
	warp_wr_bytes(&w, name, n);
	return w.err ? w.err : (int)w.off;
}

int wn_lquery_decode(const uint8_t *buf, size_t len, uint64_t *id, char name[WARP_NAME_FQ_MAX + 1])
{
	struct warp_rd r = warp_rd_init(buf, len);
	uint8_t type, n;
	const uint8_t *p;
	int err = wn_peek(buf, len, &type, id);

	if (err)
		return err;
	if (type != WN_T_LQUERY)
		return -WARP_EMALFORMED;
	warp_rd_bytes(&r, WN_HDR_LEN);
	n = warp_rd_u8(&r);
	p = warp_rd_bytes(&r, n);
	if (r.err)
		return r.err;
	if (warp_rd_left(&r))
		return -WARP_ETRAILING;
	if (n > WARP_NAME_FQ_MAX || wn_name_check((const char *)p, n))
		return -WARP_ENAME;
	memcpy(name, p, n);
	name[n] = '\0';
	return 0;
}

static int lanswer_msg(uint64_t id, const uint8_t *rec, size_t rec_len, uint8_t *msg, size_t cap)
{
	struct warp_wr w = warp_wr_init(msg, cap);

	warp_wr_bytes(&w, lanswer_prefix, sizeof(lanswer_prefix));
	warp_wr_u64(&w, id);
	warp_wr_bytes(&w, rec, rec_len);
	return w.err ? w.err : (int)w.off;
}

int wn_lanswer_encode(uint64_t id, const struct wn_record *rec, const struct warp_identity *id_key,
		      uint8_t *buf, size_t cap)
{
	uint8_t msg[WN_MAX_PACKET];
	struct warp_wr w = warp_wr_init(buf, cap);
	size_t rec_off;
	int mlen, err;
	uint8_t *sig;

	hdr_encode(&w, WN_T_LANSWER, id);
	rec_off = w.off;
	wn_record_encode(&w, rec);
	sig = warp_wr_reserve(&w, WARP_SIG_LEN);
	if (w.err)
		return w.err;
	mlen = lanswer_msg(id, buf + rec_off, w.off - WARP_SIG_LEN - rec_off, msg, sizeof(msg));
	if (mlen < 0)
		return mlen;
	err = warp_identity_sign(id_key, msg, (size_t)mlen, sig);
	return err ? err : (int)w.off;
}

int wn_lanswer_decode(const uint8_t *buf, size_t len, uint64_t *id, struct wn_record *rec)
{
	uint8_t msg[WN_MAX_PACKET];
	struct warp_rd r = warp_rd_init(buf, len);
	const uint8_t *sig;
	uint8_t type;
	int err = wn_peek(buf, len, &type, id);
	int mlen;

	if (err)
		return err;
	if (type != WN_T_LANSWER)
		return -WARP_EMALFORMED;
	warp_rd_bytes(&r, WN_HDR_LEN);
	err = wn_record_decode(&r, rec);
	if (err)
		return err;
	sig = warp_rd_bytes(&r, WARP_SIG_LEN);
	if (r.err)
		return r.err;
	if (warp_rd_left(&r))
		return -WARP_ETRAILING;
	mlen = lanswer_msg(*id, buf + WN_HDR_LEN, r.off - WN_HDR_LEN - WARP_SIG_LEN, msg,
			   sizeof(msg));
	if (mlen < 0)
		return mlen;
	/* the binding to the query id, then the record's own signature */
	if (wn_verify(rec->owner, msg, (size_t)mlen, sig))
		return -WARP_EAUTH;
	return wn_record_verify(rec);
}

/* ---- sealed envelope ----
 *
 * request: hdr(SEALED, id) | warp_seal(server, aad = hdr, reply_key(32) || inner request)
 * reply:   hdr(REPLY|SEALED, id) | nonce(24) | XChaCha20-Poly1305(reply_key, aad = hdr, inner)
 */
int wn_seal_request(const uint8_t server[WARP_PUBKEY_LEN], uint64_t id, const uint8_t *inner,
		    size_t inner_len, uint8_t reply_key[WN_SEAL_KEY], uint8_t *out, size_t cap)
{
	uint8_t plain[WN_MAX_PACKET];
	struct warp_wr w = warp_wr_init(out, cap);
	size_t need = WN_HDR_LEN + WARP_SEAL_OVERHEAD + WN_SEAL_KEY + inner_len;
	int err;

	if (need > cap || WN_SEAL_KEY + inner_len > sizeof(plain))
		return -EMSGSIZE;
	hdr_encode(&w, WN_T_SEALED, id);
	warp_random(reply_key, WN_SEAL_KEY);
	memcpy(plain, reply_key, WN_SEAL_KEY);
	memcpy(plain + WN_SEAL_KEY, inner, inner_len);
	err = warp_seal(server, out, WN_HDR_LEN, plain, WN_SEAL_KEY + inner_len, out + WN_HDR_LEN);
	sodium_memzero(plain, sizeof(plain));
	return err ? err : (int)need;
}

int wn_open_request(const struct warp_identity *server, const uint8_t *buf, size_t len,
		    uint8_t reply_key[WN_SEAL_KEY], uint8_t *inner, size_t cap)
{
	uint8_t plain[WN_MAX_PACKET];
	int n;

	if (len < WN_HDR_LEN + WARP_SEAL_OVERHEAD + WN_SEAL_KEY)
		return -WARP_ETRUNCATED;
	if (len - WN_HDR_LEN - WARP_SEAL_OVERHEAD > sizeof(plain))
		return -EMSGSIZE;
	n = warp_open_sealed(server, buf, WN_HDR_LEN, buf + WN_HDR_LEN, len - WN_HDR_LEN, plain);
	if (n < 0)
		return n;
	if ((size_t)n < WN_SEAL_KEY || (size_t)n - WN_SEAL_KEY > cap) {
		sodium_memzero(plain, sizeof(plain));
		return -WARP_EMALFORMED;
	}
	memcpy(reply_key, plain, WN_SEAL_KEY);
	memcpy(inner, plain + WN_SEAL_KEY, (size_t)n - WN_SEAL_KEY);
	sodium_memzero(plain, sizeof(plain));
	return n - WN_SEAL_KEY;
}

int wn_seal_reply(const uint8_t reply_key[WN_SEAL_KEY], uint64_t id, const uint8_t *inner,
		  size_t inner_len, uint8_t *out, size_t cap)
{
	struct warp_wr w = warp_wr_init(out, cap);
	size_t need = WN_HDR_LEN + 24 + inner_len + 16;

	if (need > cap)
		return -EMSGSIZE;
	hdr_encode(&w, WN_T_REPLY | WN_T_SEALED, id);
	warp_random(out + WN_HDR_LEN, 24);
	crypto_aead_xchacha20poly1305_ietf_encrypt(out + WN_HDR_LEN + 24, NULL, inner, inner_len,
						   out, WN_HDR_LEN, NULL, out + WN_HDR_LEN,
						   reply_key);
	return (int)need;
}

int wn_open_reply(const uint8_t reply_key[WN_SEAL_KEY], const uint8_t *buf, size_t len,
		  uint8_t *inner, size_t cap)
{
	if (len < WN_HDR_LEN + 24 + 16)
		return -WARP_ETRUNCATED;
	if (len - WN_HDR_LEN - 24 - 16 > cap)
		return -EMSGSIZE;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(inner, NULL, NULL, buf + WN_HDR_LEN + 24,
						       len - WN_HDR_LEN - 24, buf, WN_HDR_LEN,
						       buf + WN_HDR_LEN, reply_key))
		return -WARP_EAUTH;
	return (int)(len - WN_HDR_LEN - 24 - 16);
}
