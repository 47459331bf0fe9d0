// SPDX-License-Identifier: MIT
/*
 * STUN/TURN message codec.  Validation happens once, in warp_stun_decode(), so the accessors
 * can trust attribute lengths; the fuzz target (selftests/fuzz/fuzz_stun.c) drives decode and
 * every accessor.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "core/util.h"
#include "nat/stun.h"

#define FAMILY_V4 0x01
#define FAMILY_V6 0x02

static inline size_t pad4(size_t n)
{
	return (n + 3) & ~(size_t)3;
}

static uint16_t type_encode(uint16_t method, unsigned int cls)
{
	return (uint16_t)((method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) |
			  ((cls & 1u) << 4) | ((cls & 2u) << 7));
}

static void type_decode(uint16_t t, uint16_t *method, uint8_t *cls)
{
	*method = (uint16_t)((t & 0x000f) | ((t & 0x00e0) >> 1) | ((t & 0x3e00) >> 2));
	*cls = (uint8_t)(((t >> 4) & 1) | ((t >> 7) & 2));
}

/* ---- CRC-32 (reflected polynomial 0xedb88320), table built once ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t warp_stun_crc32(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = 0xffffffffu;

	pthread_once(&crc_once, crc_init);
	for (size_t i = 0; i < len; i++)
		c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/* ---- HMAC over a message prefix with the header length adjusted ---- */

static EVP_MAC *hmac_alg;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_init(void)
{
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* HMAC(digest, key, msg[0..upto) with the length field replaced by adj_len). */
static int stun_hmac(const char *digest, const void *key, size_t keylen, const uint8_t *msg,
		     size_t upto, uint16_t adj_len, uint8_t *out, size_t outcap)
{
	OSSL_PARAM params[2];
	EVP_MAC_CTX *ctx = NULL;
	uint8_t lenbuf[2];
	size_t outlen = 0;
	int err = -EIO;

	if (!key || keylen == 0)
		return -EINVAL;
	pthread_once(&hmac_once, hmac_init);
	if (!hmac_alg)
		return -EIO;
	ctx = EVP_MAC_CTX_new(hmac_alg);
	if (!ctx)
		return -ENOMEM;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	warp_put_u16(lenbuf, adj_len);
	if (!EVP_MAC_init(ctx, key, keylen, params) || !EVP_MAC_update(ctx, msg, 2) ||
	    !EVP_MAC_update(ctx, lenbuf, 2) || !EVP_MAC_update(ctx, msg + 4, upto - 4) ||
	    !EVP_MAC_final(ctx, out, &outlen, outcap))
		goto out;
	err = (int)outlen;
out:
	EVP_MAC_CTX_free(ctx);
	return err;
}

/* ---- quick checks ---- */

bool warp_stun_is_message(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!p || len < WARP_STUN_HDR_LEN || (p[0] & 0xc0))
		return false;
	if (warp_get_u32(p + 4) != WARP_STUN_MAGIC)
		return false;
	return (size_t)warp_get_u16(p + 2) + WARP_STUN_HDR_LEN == len &&
	       (warp_get_u16(p + 2) & 3) == 0;
}

int warp_stun_frame_len(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint16_t n;

	if (len < 4)
		return 0;
	n = warp_get_u16(p + 2);
	if ((p[0] & 0xc0) == 0x00) {
		if (n & 3)
			return -WARP_EMALFORMED;
		if (len >= 8 && warp_get_u32(p + 4) != WARP_STUN_MAGIC)
			return -WARP_EMALFORMED;
		return WARP_STUN_HDR_LEN + n;
	}
	if ((p[0] & 0xc0) == 0x40) {
		uint16_t ch = warp_get_u16(p);

		if (ch < WARP_STUN_CHANNEL_MIN || ch > WARP_STUN_CHANNEL_MAX)
			return -WARP_EMALFORMED;
		return (int)(4 + pad4(n));
	}
	return -WARP_EMALFORMED;
}

/* ---- decoding ---- */

static bool is_addr_type(uint16_t t)
{
	switch (t) {
	case WARP_STUN_ATTR_MAPPED_ADDRESS:
	case WARP_STUN_ATTR_XOR_MAPPED_ADDRESS:
	case WARP_STUN_ATTR_XOR_PEER_ADDRESS:
	case WARP_STUN_ATTR_XOR_RELAYED_ADDRESS:
	case WARP_STUN_ATTR_ALTERNATE_SERVER:
	case WARP_STUN_ATTR_RESPONSE_ORIGIN:
	case WARP_STUN_ATTR_OTHER_ADDRESS:
		return true;
	default:
		return false;
	}
}

static bool is_xor_type(uint16_t t)
{
	return t == WARP_STUN_ATTR_XOR_MAPPED_ADDRESS || t == WARP_STUN_ATTR_XOR_PEER_ADDRESS ||
	       t == WARP_STUN_ATTR_XOR_RELAYED_ADDRESS;
}

/* Checks the value of an attribute this codec knows; 1 when the type is unknown. */
static int check_attr(uint16_t type, const uint8_t *v, uint16_t len)
{
	if (is_addr_type(type)) {
		if (len == 8 && v[1] == FAMILY_V4)
			return 0;
		if (len == 20 && v[1] == FAMILY_V6)
			return 0;
		return -WARP_EMALFORMED;
	}
	switch (type) {
	case WARP_STUN_ATTR_USERNAME:
		return len <= WARP_STUN_MAX_USERNAME ? 0 : -WARP_ERANGE;
	case WARP_STUN_ATTR_REALM:
	case WARP_STUN_ATTR_NONCE:
	case WARP_STUN_ATTR_SOFTWARE:
	case WARP_STUN_ATTR_ALTERNATE_DOMAIN:
		return len <= WARP_STUN_MAX_TEXT ? 0 : -WARP_ERANGE;
	case WARP_STUN_ATTR_MESSAGE_INTEGRITY:
		return len == 20 ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256:
		return len >= 16 && len <= 32 && len % 4 == 0 ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_FINGERPRINT:
	case WARP_STUN_ATTR_CHANGE_REQUEST:
	case WARP_STUN_ATTR_LIFETIME:
	case WARP_STUN_ATTR_PRIORITY:
	case WARP_STUN_ATTR_TRANSACTION_TRANSMIT_COUNTER:
	case WARP_STUN_ATTR_REQUESTED_TRANSPORT:
	case WARP_STUN_ATTR_RESPONSE_PORT:
		return len == 4 ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_CHANNEL_NUMBER: {
		uint16_t ch;

		if (len != 4)
			return -WARP_EMALFORMED;
		ch = warp_get_u16(v);
		return ch >= WARP_STUN_CHANNEL_MIN && ch <= WARP_STUN_CHANNEL_MAX ? 0
										  : -WARP_ERANGE;
	}
	case WARP_STUN_ATTR_REQUESTED_ADDRESS_FAMILY:
	case WARP_STUN_ATTR_ADDITIONAL_ADDRESS_FAMILY:
		if (len != 4)
			return -WARP_EMALFORMED;
		return v[0] == FAMILY_V4 || v[0] == FAMILY_V6 ? 0 : -WARP_ERANGE;
	case WARP_STUN_ATTR_ERROR_CODE:
	case WARP_STUN_ATTR_ADDRESS_ERROR_CODE: {
		unsigned int cls, num;

		if (len < 4)
			return -WARP_EMALFORMED;
		if (len - 4 > WARP_STUN_MAX_TEXT)
			return -WARP_ERANGE;
		cls = v[2] & 7;
		num = v[3];
		return cls >= 3 && cls <= 6 && num <= 99 ? 0 : -WARP_ERANGE;
	}
	case WARP_STUN_ATTR_UNKNOWN_ATTRIBUTES:
		return len % 2 == 0 ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_EVEN_PORT:
		return len == 1 ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_RESERVATION_TOKEN:
	case WARP_STUN_ATTR_ICE_CONTROLLED:
	case WARP_STUN_ATTR_ICE_CONTROLLING:
	case WARP_STUN_ATTR_ICMP:
		return len == 8 ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_DONT_FRAGMENT:
	case WARP_STUN_ATTR_USE_CANDIDATE:
		return len == 0 ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_USERHASH:
		return len == 32 ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_PASSWORD_ALGORITHM:
		return len >= 4 && (size_t)warp_get_u16(v + 2) + 4 <= len ? 0 : -WARP_EMALFORMED;
	case WARP_STUN_ATTR_PASSWORD_ALGORITHMS:
	case WARP_STUN_ATTR_DATA:
	case WARP_STUN_ATTR_PADDING:
		return 0;
	default:
		return 1;
	}
}

static void note_unknown(struct warp_stun_msg *m, uint16_t type)
{
	for (unsigned int i = 0; i < m->n_unknown; i++)
		if (m->unknown[i] == type)
			return;
	if (m->n_unknown < WARP_STUN_MAX_UNKNOWN)
		m->unknown[m->n_unknown++] = type;
}

int warp_stun_decode(struct warp_stun_msg *m, const void *buf, size_t len)
{
	struct warp_rd r = warp_rd_init(buf, len);
	const uint8_t *p = buf;
	uint16_t type, mlen;
	int state = 0; /* 0 open, 1 after MI, 2 after MI-SHA256, 3 after FINGERPRINT */

	memset(m, 0, offsetof(struct warp_stun_msg, attrs));
	m->mi_off = m->mi256_off = m->fp_off = 0;
	m->n_unknown = 0;
	if (!buf || len < WARP_STUN_HDR_LEN)
		return -WARP_ETRUNCATED;
	type = warp_rd_u16(&r);
	mlen = warp_rd_u16(&r);
	if (type & 0xc000)
		return -WARP_EMALFORMED;
	if (mlen & 3)
		return -WARP_EMALFORMED;
	if (warp_rd_u32(&r) != WARP_STUN_MAGIC)
		return -WARP_EVERSION;
	if ((size_t)mlen + WARP_STUN_HDR_LEN > len)
		return -WARP_ETRUNCATED;
	if ((size_t)mlen + WARP_STUN_HDR_LEN < len)
		return -WARP_ETRAILING;
	warp_rd_copy(&r, m->tid, WARP_STUN_TID_LEN);
	type_decode(type, &m->method, &m->cls);
	m->buf = p;
	m->len = len;

	while (warp_rd_left(&r)) {
		size_t hdr = r.off;
		uint16_t at, alen;
		const uint8_t *v;
		int ret;

		at = warp_rd_u16(&r);
		alen = warp_rd_u16(&r);
		v = warp_rd_bytes(&r, alen);
		if (!v)
			return -WARP_ETRUNCATED;
		/* padding up to 4 bytes; its content is ignored (RFC 8489 section 14) */
		if (!warp_rd_bytes(&r, pad4(alen) - alen))
			return -WARP_ETRUNCATED;
		if (state == 3)
			return -WARP_EMALFORMED;
		if (at == WARP_STUN_ATTR_FINGERPRINT) {
			if (alen != 4)
				return -WARP_EMALFORMED;
			m->fp_off = (uint32_t)hdr;
			state = 3;
		} else if (state == 2 ||
			   (state == 1 && at != WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256)) {
			continue; /* attributes after the integrity ones are ignored */
		} else if (at == WARP_STUN_ATTR_MESSAGE_INTEGRITY) {
			if (alen != 20)
				return -WARP_EMALFORMED;
			m->mi_off = (uint32_t)hdr;
			state = 1;
		} else if (at == WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256) {
			ret = check_attr(at, v, alen);
			if (ret)
				return ret;
			m->mi256_off = (uint32_t)hdr;
			state = 2;
		}
		ret = check_attr(at, v, alen);
		if (ret < 0)
			return ret;
		if (ret > 0 && at < 0x8000)
			note_unknown(m, at);
		if (m->nattrs == WARP_STUN_MAX_ATTRS)
			return -WARP_ERANGE;
		m->attrs[m->nattrs].type = at;
		m->attrs[m->nattrs].len = alen;
		m->attrs[m->nattrs].off = (uint32_t)(hdr + 4);
		m->nattrs++;
	}
	if (r.err)
		return r.err;
	if (m->fp_off) {
		uint32_t want = warp_get_u32(p + m->fp_off + 4);

		if ((warp_stun_crc32(p, m->fp_off) ^ WARP_STUN_FP_XOR) != want)
			return -WARP_EAUTH;
	}
	return 0;
}

const struct warp_stun_attr *warp_stun_find(const struct warp_stun_msg *m, uint16_t type)
{
	for (unsigned int i = 0; i < m->nattrs; i++)
		if (m->attrs[i].type == type)
			return &m->attrs[i];
	return NULL;
}

int warp_stun_attr_addr(const struct warp_stun_msg *m, const struct warp_stun_attr *a,
			struct sockaddr_storage *out)
{
	const uint8_t *v = m->buf + a->off;
	bool x = is_xor_type(a->type);
	uint8_t xb[16];
	uint16_t port;

	if (!is_addr_type(a->type))
		return -EINVAL;
	warp_put_u32(xb, WARP_STUN_MAGIC);
	memcpy(xb + 4, m->tid, WARP_STUN_TID_LEN);
	port = warp_get_u16(v + 2);
	if (x)
		port ^= (uint16_t)(WARP_STUN_MAGIC >> 16);
	memset(out, 0, sizeof(*out));
	if (v[1] == FAMILY_V4 && a->len == 8) {
		struct sockaddr_in *sin = (struct sockaddr_in *)out;
		uint8_t ip[4];

		for (int i = 0; i < 4; i++)
			ip[i] = v[4 + i] ^ (x ? xb[i] : 0);
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, ip, 4);
		return 0;
	}
	if (v[1] == FAMILY_V6 && a->len == 20) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
		uint8_t ip[16];

		for (int i = 0; i < 16; i++)
			ip[i] = v[4 + i] ^ (x ? xb[i] : 0);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, ip, 16);
		return 0;
	}
	return -WARP_EMALFORMED;
}

int warp_stun_get_addr(const struct warp_stun_msg *m, uint16_t type, struct sockaddr_storage *out)
{
	const struct warp_stun_attr *a = warp_stun_find(m, type);

	if (!a)
		return -WARP_EMISSING;
	return warp_stun_attr_addr(m, a, out);
}

int warp_stun_get_mapped(const struct warp_stun_msg *m, struct sockaddr_storage *out)
{
	int err = warp_stun_get_addr(m, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, out);

	if (err == -WARP_EMISSING)
		err = warp_stun_get_addr(m, WARP_STUN_ATTR_MAPPED_ADDRESS, out);
	return err;
}

int warp_stun_get_error(const struct warp_stun_msg *m, int *code, const char **reason,
			size_t *reason_len)
{
	const struct warp_stun_attr *a = warp_stun_find(m, WARP_STUN_ATTR_ERROR_CODE);
	const uint8_t *v;

	if (!a)
		return -WARP_EMISSING;
	v = m->buf + a->off;
	if (code)
		*code = (v[2] & 7) * 100 + v[3];
	if (reason)
		*reason = (const char *)v + 4;
	if (reason_len)
		*reason_len = a->len - 4u;
	return 0;
}

int warp_stun_get_u32(const struct warp_stun_msg *m, uint16_t type, uint32_t *out)
{
	const struct warp_stun_attr *a = warp_stun_find(m, type);

	if (!a)
		return -WARP_EMISSING;
	if (a->len != 4)
		return -WARP_EMALFORMED;
	*out = warp_get_u32(m->buf + a->off);
	return 0;
}

int warp_stun_get_bytes(const struct warp_stun_msg *m, uint16_t type, const uint8_t **val,
			size_t *len)
{
	const struct warp_stun_attr *a = warp_stun_find(m, type);

	if (!a)
		return -WARP_EMISSING;
	*val = m->buf + a->off;
	*len = a->len;
	return 0;
}

int warp_stun_get_unknown_attrs(const struct warp_stun_msg *m, uint16_t *types, size_t max)
{
	const struct warp_stun_attr *a = warp_stun_find(m, WARP_STUN_ATTR_UNKNOWN_ATTRIBUTES);
	size_t n;

	if (!a)
		return -WARP_EMISSING;
	n = a->len / 2u;
	for (size_t i = 0; i < n && i < max; i++)
		types[i] = warp_get_u16(m->buf + a->off + 2 * i);
	return (int)n;
}

int warp_stun_get_channel(const struct warp_stun_msg *m, uint16_t *channel)
{
	uint32_t v;
	int err = warp_stun_get_u32(m, WARP_STUN_ATTR_CHANNEL_NUMBER, &v);

	if (!err)
		*channel = (uint16_t)(v >> 16);
	return err;
}

int warp_stun_get_requested_transport(const struct warp_stun_msg *m, uint8_t *proto)
{
	uint32_t v;
	int err = warp_stun_get_u32(m, WARP_STUN_ATTR_REQUESTED_TRANSPORT, &v);

	if (!err)
		*proto = (uint8_t)(v >> 24);
	return err;
}

int warp_stun_get_response_port(const struct warp_stun_msg *m, uint16_t *port)
{
	uint32_t v;
	int err = warp_stun_get_u32(m, WARP_STUN_ATTR_RESPONSE_PORT, &v);

	if (!err)
		*port = (uint16_t)(v >> 16);
	return err;
}

static int check_one(const struct warp_stun_msg *m, uint32_t off, const char *digest,
		     const void *key, size_t keylen)
{
	uint8_t mac[32];
	uint16_t alen;
	int n;

	if (!off)
		return -WARP_EMISSING;
	alen = warp_get_u16(m->buf + off + 2);
	/* length field covers everything up to the end of this attribute */
	n = stun_hmac(digest, key, keylen, m->buf, off,
		      (uint16_t)(off + 4 + alen - WARP_STUN_HDR_LEN), mac, sizeof(mac));
	if (n < 0)
		return n;
	if (n < alen)
		return -WARP_EAUTH;
	return warp_ct_equal(mac, m->buf + off + 4, alen) ? 0 : -WARP_EAUTH;
}

int warp_stun_check_mi(const struct warp_stun_msg *m, const void *key, size_t keylen)
{
	return check_one(m, m->mi_off, "SHA1", key, keylen);
}

int warp_stun_check_mi256(const struct warp_stun_msg *m, const void *key, size_t keylen)
{
	return check_one(m, m->mi256_off, "SHA256", key, keylen);
}

int warp_stun_check_integrity(const struct warp_stun_msg *m, const void *key, size_t keylen)
{
	if (m->mi256_off)
		return warp_stun_check_mi256(m, key, keylen);
	return warp_stun_check_mi(m, key, keylen);
}

int warp_stun_long_term_key(const char *user, const char *realm, const char *pass,
			    enum warp_stun_pw_alg alg, uint8_t out[32])
{
	const EVP_MD *md = alg == WARP_STUN_PW_MD5	? EVP_md5()
			   : alg == WARP_STUN_PW_SHA256 ? EVP_sha256()
							: NULL;
	EVP_MD_CTX *ctx;
	unsigned int n = 0;
	int err = -EIO;

	if (!md || !user || !realm || !pass)
		return -EINVAL;
	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	if (!EVP_DigestInit_ex(ctx, md, NULL) || !EVP_DigestUpdate(ctx, user, strlen(user)) ||
	    !EVP_DigestUpdate(ctx, ":", 1) || !EVP_DigestUpdate(ctx, realm, strlen(realm)) ||
	    !EVP_DigestUpdate(ctx, ":", 1) || !EVP_DigestUpdate(ctx, pass, strlen(pass)) ||
	    !EVP_DigestFinal_ex(ctx, out, &n))
		goto out;
	err = (int)n;
out:
	EVP_MD_CTX_free(ctx);
	return err;
}

/* ---- encoding ---- */

int warp_stun_build_init(struct warp_stun_builder *b, void *buf, size_t cap, uint16_t method,
			 enum warp_stun_class cls, const uint8_t tid[WARP_STUN_TID_LEN])
{
	memset(b, 0, sizeof(*b));
	b->buf = buf;
	b->cap = cap;
	if (method > 0xfff || (unsigned int)cls > 3 || !tid) {
		b->err = -EINVAL;
		return b->err;
	}
	if (!buf || cap < WARP_STUN_HDR_LEN) {
		b->err = -EMSGSIZE;
		return b->err;
	}
	warp_put_u16(b->buf, type_encode(method, cls));
	warp_put_u16(b->buf + 2, 0);
	warp_put_u32(b->buf + 4, WARP_STUN_MAGIC);
	memcpy(b->buf + 8, tid, WARP_STUN_TID_LEN);
	b->len = WARP_STUN_HDR_LEN;
	return 0;
}

/* Reserves an attribute of value length len (plus zeroed padding) and returns the value. */
static uint8_t *add_attr(struct warp_stun_builder *b, uint16_t type, size_t len)
{
	uint8_t *p;
	size_t total = 4 + pad4(len);

	if (b->err)
		return NULL;
	if (len > 0xffff || b->len + total - WARP_STUN_HDR_LEN > 0xffff) {
		b->err = -EMSGSIZE;
		return NULL;
	}
	if (total > b->cap - b->len) {
		b->err = -EMSGSIZE;
		return NULL;
	}
	p = b->buf + b->len;
	warp_put_u16(p, type);
	warp_put_u16(p + 2, (uint16_t)len);
	memset(p + 4 + len, 0, pad4(len) - len);
	b->len += total;
	warp_put_u16(b->buf + 2, (uint16_t)(b->len - WARP_STUN_HDR_LEN));
	return p + 4;
}

static bool open_for_attrs(struct warp_stun_builder *b)
{
	if (!b->err && b->state != 0)
		b->err = -EINVAL; /* plain attributes cannot follow the integrity ones */
	return !b->err;
}

void warp_stun_add(struct warp_stun_builder *b, uint16_t type, const void *val, size_t len)
{
	uint8_t *p;

	if (!open_for_attrs(b))
		return;
	p = add_attr(b, type, len);
	if (p && len)
		memcpy(p, val, len);
}

void warp_stun_add_u32(struct warp_stun_builder *b, uint16_t type, uint32_t v)
{
	uint8_t buf[4];

	warp_put_u32(buf, v);
	warp_stun_add(b, type, buf, 4);
}

void warp_stun_add_str(struct warp_stun_builder *b, uint16_t type, const char *s)
{
	warp_stun_add(b, type, s, s ? strlen(s) : 0);
}

void warp_stun_add_addr(struct warp_stun_builder *b, uint16_t type, const struct sockaddr *sa)
{
	uint8_t v[20], xb[16];
	bool x = is_xor_type(type);
	size_t n;
	uint16_t port;

	if (b->err)
		return;
	if (!sa || !is_addr_type(type)) {
		b->err = -EINVAL;
		return;
	}
	warp_put_u32(xb, WARP_STUN_MAGIC);
	memcpy(xb + 4, b->buf + 8, WARP_STUN_TID_LEN);
	v[0] = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		v[1] = FAMILY_V4;
		port = ntohs(sin->sin_port);
		memcpy(v + 4, &sin->sin_addr, 4);
		n = 4;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		v[1] = FAMILY_V6;
		port = ntohs(sin6->sin6_port);
		memcpy(v + 4, &sin6->sin6_addr, 16);
		n = 16;
	} else {
		b->err = -EAFNOSUPPORT;
		return;
	}
	if (x) {
		port ^= (uint16_t)(WARP_STUN_MAGIC >> 16);
		for (size_t i = 0; i < n; i++)
			v[4 + i] ^= xb[i];
	}
	warp_put_u16(v + 2, port);
	warp_stun_add(b, type, v, 4 + n);
}

void warp_stun_add_error(struct warp_stun_builder *b, int code, const char *reason)
{
	size_t rl = reason ? strlen(reason) : 0;
	uint8_t *p;

	if (!open_for_attrs(b))
		return;
	if (code < 300 || code > 699 || rl > WARP_STUN_MAX_TEXT) {
		b->err = -EINVAL;
		return;
	}
	p = add_attr(b, WARP_STUN_ATTR_ERROR_CODE, 4 + rl);
	if (!p)
		return;
	p[0] = p[1] = 0;
	p[2] = (uint8_t)(code / 100);
	p[3] = (uint8_t)(code % 100);
	if (rl)
		memcpy(p + 4, reason, rl);
}

void warp_stun_add_unknown_attrs(struct warp_stun_builder *b, const uint16_t *types, size_t n)
{
	uint8_t *p;

	if (!open_for_attrs(b))
		return;
	p = add_attr(b, WARP_STUN_ATTR_UNKNOWN_ATTRIBUTES, 2 * n);
	for (size_t i = 0; p && i < n; i++)
		warp_put_u16(p + 2 * i, types[i]);
}

void warp_stun_add_change_request(struct warp_stun_builder *b, uint32_t flags)
{
	warp_stun_add_u32(b, WARP_STUN_ATTR_CHANGE_REQUEST,
			  flags & (WARP_STUN_CHANGE_IP | WARP_STUN_CHANGE_PORT));
}

void warp_stun_add_response_port(struct warp_stun_builder *b, uint16_t port)
{
	warp_stun_add_u32(b, WARP_STUN_ATTR_RESPONSE_PORT, (uint32_t)port << 16);
}

void warp_stun_add_padding(struct warp_stun_builder *b, size_t len)
{
	uint8_t *p;

	if (!open_for_attrs(b))
		return;
	p = add_attr(b, WARP_STUN_ATTR_PADDING, len);
	if (p)
		memset(p, 0, len);
}

void warp_stun_add_channel(struct warp_stun_builder *b, uint16_t channel)
{
	if (!b->err && (channel < WARP_STUN_CHANNEL_MIN || channel > WARP_STUN_CHANNEL_MAX)) {
		b->err = -EINVAL;
		return;
	}
	warp_stun_add_u32(b, WARP_STUN_ATTR_CHANNEL_NUMBER, (uint32_t)channel << 16);
}

void warp_stun_add_requested_transport(struct warp_stun_builder *b, uint8_t proto)
{
	warp_stun_add_u32(b, WARP_STUN_ATTR_REQUESTED_TRANSPORT, (uint32_t)proto << 24);
}

static void add_mac(struct warp_stun_builder *b, uint16_t type, const char *digest, size_t maclen,
		    const void *key, size_t keylen, uint8_t min_state, uint8_t new_state)
{
	size_t off = b->len;
	uint8_t *p;
	int n;

	if (b->err)
		return;
	if (b->state > min_state) {
		b->err = -EINVAL;
		return;
	}
	p = add_attr(b, type, maclen);
	if (!p)
		return;
	/* the header length already covers this attribute, as the MAC requires */
	n = stun_hmac(digest, key, keylen, b->buf, off, (uint16_t)(b->len - WARP_STUN_HDR_LEN), p,
		      32);
	if (n < (int)maclen) {
		b->err = n < 0 ? n : -EIO;
		return;
	}
	b->state = new_state;
}

void warp_stun_add_mi(struct warp_stun_builder *b, const void *key, size_t keylen)
{
	add_mac(b, WARP_STUN_ATTR_MESSAGE_INTEGRITY, "SHA1", 20, key, keylen, 0, 1);
}

void warp_stun_add_mi256(struct warp_stun_builder *b, const void *key, size_t keylen)
{
	add_mac(b, WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256, "SHA256", 32, key, keylen, 1, 2);
}

void warp_stun_add_fingerprint(struct warp_stun_builder *b)
{
	size_t off = b->len;
	uint8_t *p;

	if (b->err)
		return;
	if (b->state == 3) {
		b->err = -EINVAL;
		return;
	}
	p = add_attr(b, WARP_STUN_ATTR_FINGERPRINT, 4);
	if (!p)
		return;
	warp_put_u32(p, warp_stun_crc32(b->buf, off) ^ WARP_STUN_FP_XOR);
	b->state = 3;
}

int warp_stun_build_end(struct warp_stun_builder *b)
{
	if (b->err)
		return b->err;
	return (int)b->len;
}

/* ---- ChannelData ---- */

int warp_stun_channel_data_encode(void *buf, size_t cap, uint16_t channel, const void *data,
				  size_t len, bool pad)
{
	size_t total = 4 + (pad ? pad4(len) : len);
	uint8_t *p = buf;

	if (channel < WARP_STUN_CHANNEL_MIN || channel > WARP_STUN_CHANNEL_MAX)
		return -EINVAL;
	if (len > 0xffff || total > cap || !p)
		return -EMSGSIZE;
	warp_put_u16(p, channel);
	warp_put_u16(p + 2, (uint16_t)len);
	if (len)
		memcpy(p + 4, data, len);
	memset(p + 4 + len, 0, total - 4 - len);
	return (int)total;
}

int warp_stun_channel_data_decode(const void *buf, size_t len, uint16_t *channel,
				  const uint8_t **data, size_t *data_len)
{
	const uint8_t *p = buf;
	uint16_t ch, n;

	if (!p || len < 4)
		return -WARP_ETRUNCATED;
	ch = warp_get_u16(p);
	n = warp_get_u16(p + 2);
	if (ch < WARP_STUN_CHANNEL_MIN || ch > WARP_STUN_CHANNEL_MAX)
		return -WARP_EMALFORMED;
	if ((size_t)n + 4 > len)
		return -WARP_ETRUNCATED;
	if (len - 4 - n > 3)
		return -WARP_ETRAILING;
	*channel = ch;
	*data = p + 4;
	*data_len = n;
	return 0;
}

/* ---- names ---- */

const char *warp_stun_method_name(uint16_t method)
{
	switch (method) {
	case WARP_STUN_BINDING:
		return "Binding";
	case WARP_STUN_ALLOCATE:
		return "Allocate";
	case WARP_STUN_REFRESH:
		return "Refresh";
	case WARP_STUN_SEND:
		return "Send";
	case WARP_STUN_DATA:
		return "Data";
	case WARP_STUN_CREATE_PERMISSION:
		return "CreatePermission";
	case WARP_STUN_CHANNEL_BIND:
		return "ChannelBind";
	default:
		return "?";
	}
}

const char *warp_stun_class_name(unsigned int cls)
{
	static const char *const names[] = { "request", "indication", "success", "error" };

	return cls < 4 ? names[cls] : "?";
}

const char *warp_stun_attr_name(uint16_t type)
{
	static const struct {
		uint16_t type;
		const char *name;
	} names[] = {
		{ WARP_STUN_ATTR_MAPPED_ADDRESS, "MAPPED-ADDRESS" },
		{ WARP_STUN_ATTR_CHANGE_REQUEST, "CHANGE-REQUEST" },
		{ WARP_STUN_ATTR_USERNAME, "USERNAME" },
		{ WARP_STUN_ATTR_MESSAGE_INTEGRITY, "MESSAGE-INTEGRITY" },
		{ WARP_STUN_ATTR_ERROR_CODE, "ERROR-CODE" },
		{ WARP_STUN_ATTR_UNKNOWN_ATTRIBUTES, "UNKNOWN-ATTRIBUTES" },
		{ WARP_STUN_ATTR_CHANNEL_NUMBER, "CHANNEL-NUMBER" },
		{ WARP_STUN_ATTR_LIFETIME, "LIFETIME" },
		{ WARP_STUN_ATTR_XOR_PEER_ADDRESS, "XOR-PEER-ADDRESS" },
		{ WARP_STUN_ATTR_DATA, "DATA" },
		{ WARP_STUN_ATTR_REALM, "REALM" },
		{ WARP_STUN_ATTR_NONCE, "NONCE" },
		{ WARP_STUN_ATTR_XOR_RELAYED_ADDRESS, "XOR-RELAYED-ADDRESS" },
		{ WARP_STUN_ATTR_REQUESTED_ADDRESS_FAMILY, "REQUESTED-ADDRESS-FAMILY" },
		{ WARP_STUN_ATTR_EVEN_PORT, "EVEN-PORT" },
		{ WARP_STUN_ATTR_REQUESTED_TRANSPORT, "REQUESTED-TRANSPORT" },
		{ WARP_STUN_ATTR_DONT_FRAGMENT, "DONT-FRAGMENT" },
		{ WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256, "MESSAGE-INTEGRITY-SHA256" },
		{ WARP_STUN_ATTR_PASSWORD_ALGORITHM, "PASSWORD-ALGORITHM" },
		{ WARP_STUN_ATTR_USERHASH, "USERHASH" },
		{ WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, "XOR-MAPPED-ADDRESS" },
		{ WARP_STUN_ATTR_RESERVATION_TOKEN, "RESERVATION-TOKEN" },
		{ WARP_STUN_ATTR_PRIORITY, "PRIORITY" },
		{ WARP_STUN_ATTR_USE_CANDIDATE, "USE-CANDIDATE" },
		{ WARP_STUN_ATTR_PADDING, "PADDING" },
		{ WARP_STUN_ATTR_RESPONSE_PORT, "RESPONSE-PORT" },
		{ WARP_STUN_ATTR_ADDITIONAL_ADDRESS_FAMILY, "ADDITIONAL-ADDRESS-FAMILY" },
		{ WARP_STUN_ATTR_ADDRESS_ERROR_CODE, "ADDRESS-ERROR-CODE" },
		{ WARP_STUN_ATTR_PASSWORD_ALGORITHMS, "PASSWORD-ALGORITHMS" },
		{ WARP_STUN_ATTR_ALTERNATE_DOMAIN, "ALTERNATE-DOMAIN" },
		{ WARP_STUN_ATTR_ICMP, "ICMP" },
		{ WARP_STUN_ATTR_SOFTWARE, "SOFTWARE" },
		{ WARP_STUN_ATTR_ALTERNATE_SERVER, "ALTERNATE-SERVER" },
		{ WARP_STUN_ATTR_TRANSACTION_TRANSMIT_COUNTER, "TRANSACTION-TRANSMIT-COUNTER" },
		{ WARP_STUN_ATTR_FINGERPRINT, "FINGERPRINT" },
		{ WARP_STUN_ATTR_ICE_CONTROLLED, "ICE-CONTROLLED" },
		{ WARP_STUN_ATTR_ICE_CONTROLLING, "ICE-CONTROLLING" },
		{ WARP_STUN_ATTR_RESPONSE_ORIGIN, "RESPONSE-ORIGIN" },
		{ WARP_STUN_ATTR_OTHER_ADDRESS, "OTHER-ADDRESS" },
	};

	for (size_t i = 0; i < WARP_ARRAY_SIZE(names); i++)
		if (names[i].type == type)
			return names[i].name;
	return "?";
}
