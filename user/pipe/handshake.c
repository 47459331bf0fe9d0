// SPDX-License-Identifier: MIT
/*
 * SIGMA-I handshake over X25519, ChaCha20-Poly1305 and SHA-256, signed with the secp256k1
 * identities.  The key schedule (docs/protocol-handshake.md):
 *
 *	h0  = SHA256(PROTOCOL_NAME)
 *	h1  = SHA256(h0 || INIT)                          whole packet, padding included
 *	h2  = SHA256(h1 || RESP[0..60))                   header, cid_r, e_r
 *	prk = HKDF-Extract(salt = h2, ikm = X25519(e_i, e_r))
 *	k_r = Expand(prk, "hs r2i")   k_i = Expand(prk, "hs i2r")
 *	RESP sealed part = AEAD(k_r, n = 0, ad = h2, id_r || Sign_r(SIG_R || h2 || id_r))
 *	h3  = SHA256(h2 || sealed part)
 *	hf  = SHA256(h3 || FINISH header)
 *	FINISH sealed part = AEAD(k_i, n = 0, ad = hf, id_i || Sign_i(SIG_I || h3 || id_i))
 *	h4  = SHA256(hf || sealed part)
 *	ms  = HKDF-Extract(salt = h4, ikm = prk)
 *	data keys, keepalive key, exporter = Expand(ms, "data i2r" | "data r2i" | "keepalive" |
 *	                                            "exporter")
 *
 * Every handshake packet is built once and retransmitted byte for byte, so a duplicate is
 * recognised by comparing hashes and each handshake AEAD key encrypts exactly one message.
 * Received packets are processed into locals and committed only once fully verified: a
 * rejected packet leaves the handshake as it was.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "handshake"
#include "core/bytes.h"
#include "core/log.h"
#include "core/util.h"
#include "pipe/handshake.h"

#define PROTOCOL_NAME "warpgate handshake v1: X25519, ChaCha20-Poly1305, SHA-256, secp256k1"
#define SIG_R_LABEL   "warpgate v1 responder signature"
#define SIG_I_LABEL   "warpgate v1 initiator signature"

#define NS_PER_MS	   1000000ull
#define DEFAULT_RTO_MS	   200
#define DEFAULT_RTO_MAX_MS 3200
#define DEFAULT_ATTEMPTS   8
#define DEFAULT_TIMEOUT_MS 10000
#define COOKIE_PERIOD_NS   (120ull * 1000000000ull)

#define X_LEN	       32
#define RANDOM_LEN     16
#define ID_BLOB_LEN    (WARP_PUBKEY_LEN + WARP_SIG_LEN) /* sealed identity and signature */
#define SEALED_ID_LEN  (ID_BLOB_LEN + WARP_TAG_LEN)
#define RESP_CLEAR_LEN (WARP_HDR_LEN + WARP_CID_LEN + X_LEN) /* hashed into h2 */
#define CLOSE_LEN      (WARP_HDR_LEN + 4 + WARP_TAG_LEN)

/* INIT body offsets (after the header) */
#define INIT_CID	0
#define INIT_EPH	(INIT_CID + WARP_CID_LEN)
#define INIT_RANDOM	(INIT_EPH + X_LEN)
#define INIT_TS		(INIT_RANDOM + RANDOM_LEN)
#define INIT_COOKIE_LEN (INIT_TS + 8)
#define INIT_COOKIE	(INIT_COOKIE_LEN + 1)

_Static_assert(WARP_HDR_LEN + INIT_COOKIE + WARP_HS_COOKIE_LEN <= WARP_HS_INIT_LEN, "INIT");
_Static_assert(RESP_CLEAR_LEN + SEALED_ID_LEN == WARP_HS_RESP_LEN, "RESP");
_Static_assert(WARP_HDR_LEN + SEALED_ID_LEN == WARP_HS_FINISH_LEN, "FINISH");
_Static_assert(WARP_HDR_LEN + X_LEN + WARP_HS_COOKIE_LEN == WARP_HS_RETRY_LEN, "RETRY");
_Static_assert(WARP_HS_RESP_LEN <= WARP_HS_INIT_LEN && CLOSE_LEN <= WARP_HS_FINISH_LEN,
	       "no handshake answer may be larger than what it answers");

struct warp_hs {
	enum warp_hs_role role;
	enum warp_hs_state state;
	int error;
	const struct warp_identity *id;
	uint8_t expected[WARP_PUBKEY_LEN];
	bool has_expected;
	warp_hs_policy_cb policy;
	void *policy_user;

	uint8_t local_cid[WARP_CID_LEN];
	uint8_t peer_cid[WARP_CID_LEN];
	bool have_peer_cid;
	uint8_t init_cid[WARP_CID_LEN];
	uint64_t wall_ms;
	uint32_t max_skew_ms;

	uint8_t e_sk[X_LEN];
	uint8_t e_pk[X_LEN];
	uint8_t random[RANDOM_LEN];
	uint8_t cookie[WARP_HS_COOKIE_LEN];
	bool has_cookie;

	uint8_t h1[32];	 /* responder: identifies the INIT it answered */
	uint8_t h3[32];	 /* responder: transcript before FINISH */
	uint8_t prk[32]; /* responder: between RESP and FINISH */
	uint8_t k_i[32]; /* responder: opens FINISH */
	uint8_t peer_id[WARP_PUBKEY_LEN];

	/* the packet we (re)send: INIT, RESP, FINISH, or the refusal CLOSE */
	uint8_t pkt[WARP_HS_OUT_MAX];
	size_t pkt_len;
	uint8_t finish_hash[32];

	struct warp_hs_result res;

	uint64_t start_ns;
	uint64_t expire_ns; /* FAILED: poll reports the error from then on */
	uint64_t deadline_ns;
	uint32_t rto_cur_ms;
	uint32_t attempts;
	uint32_t rto_ms, rto_max_ms, max_attempts, timeout_ms;
};

/* ---- primitives ---- */

void warp_hkdf_extract(uint8_t prk[32], const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
		       size_t ikm_len)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, salt, salt_len);
	crypto_auth_hmacsha256_update(&st, ikm, ikm_len);
	crypto_auth_hmacsha256_final(&st, prk);
	sodium_memzero(&st, sizeof(st));
}

void warp_hkdf_expand(uint8_t *out, size_t out_len, const uint8_t prk[32], const char *label,
		      const uint8_t *ctx, size_t ctx_len)
{
	crypto_auth_hmacsha256_state st;
	uint8_t t[32];
	size_t done = 0;

	for (uint8_t i = 1; done < out_len && i != 0; i++) {
		size_t n = out_len - done < 32 ? out_len - done : 32;

		crypto_auth_hmacsha256_init(&st, prk, 32);
		if (i > 1)
			crypto_auth_hmacsha256_update(&st, t, 32);
		crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label));
		if (ctx_len)
			crypto_auth_hmacsha256_update(&st, ctx, ctx_len);
		crypto_auth_hmacsha256_update(&st, &i, 1);
		crypto_auth_hmacsha256_final(&st, t);
		memcpy(out + done, t, n);
		done += n;
	}
	sodium_memzero(&st, sizeof(st));
	sodium_memzero(t, sizeof(t));
}

/* h = SHA256(a || b) */
static void mix(uint8_t h[32], const uint8_t prev[32], const uint8_t *data, size_t len)
{
	crypto_hash_sha256_state st;

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, prev, 32);
	crypto_hash_sha256_update(&st, data, len);
	crypto_hash_sha256_final(&st, h);
}

static void h0(uint8_t h[32])
{
	crypto_hash_sha256(h, (const uint8_t *)PROTOCOL_NAME, sizeof(PROTOCOL_NAME) - 1);
}

static void nonce_of(uint8_t n[12], uint64_t pn)
{
	memset(n, 0, 4);
	warp_put_u64(n + 4, pn);
}

static void aead_seal(uint8_t *out, const uint8_t key[32], uint64_t pn, const uint8_t *ad,
		      size_t ad_len, const uint8_t *m, size_t m_len)
{
	uint8_t n[12];

	nonce_of(n, pn);
	crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, m, m_len, ad, ad_len, NULL, n, key);
}

static int aead_open(uint8_t *out, const uint8_t key[32], uint64_t pn, const uint8_t *ad,
		     size_t ad_len, const uint8_t *c, size_t c_len)
{
	uint8_t n[12];

	nonce_of(n, pn);
	if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, c, c_len, ad, ad_len, n,
						      key))
		return -WARP_EAUTH;
	return 0;
}

/* Signs label || h || pub. */
static int sign_transcript(const struct warp_identity *id, const char *label, const uint8_t h[32],
			   uint8_t sig[WARP_SIG_LEN])
{
	uint8_t msg[64 + 32 + WARP_PUBKEY_LEN];
	size_t l = strlen(label);

	memcpy(msg, label, l);
	memcpy(msg + l, h, 32);
	memcpy(msg + l + 32, warp_identity_pubkey(id), WARP_PUBKEY_LEN);
	return warp_identity_sign(id, msg, l + 32 + WARP_PUBKEY_LEN, sig);
}

static int verify_transcript(const uint8_t pub[WARP_PUBKEY_LEN], const char *label,
			     const uint8_t h[32], const uint8_t sig[WARP_SIG_LEN])
{
	uint8_t msg[64 + 32 + WARP_PUBKEY_LEN];
	size_t l = strlen(label);

	memcpy(msg, label, l);
	memcpy(msg + l, h, 32);
	memcpy(msg + l + 32, pub, WARP_PUBKEY_LEN);
	/* An off-curve key is as bad as a bad signature here. */
	return warp_verify(pub, msg, l + 32 + WARP_PUBKEY_LEN, sig) ? -WARP_EAUTH : 0;
}

static bool cid_is_zero(const uint8_t cid[WARP_CID_LEN])
{
	return sodium_is_zero(cid, WARP_CID_LEN);
}

static void hdr_write(uint8_t *out, uint8_t type, const uint8_t cid[WARP_CID_LEN], uint64_t pn)
{
	struct warp_pkt_hdr h = {.type = type, .pn = pn};

	memcpy(h.cid, cid, WARP_CID_LEN);
	warp_hdr_encode(out, &h);
}

static void hexkey(char out[2 * WARP_PUBKEY_LEN + 1], const uint8_t *key)
{
	warp_hex_encode(out, key, WARP_PUBKEY_LEN);
}

/* Handshake keys from the finished transcript; res->send/recv depend on the role. */
static void derive_session(struct warp_hs_result *res, enum warp_hs_role role,
			   const uint8_t prk[32], const uint8_t h4[32])
{
	uint8_t ms[32];

	warp_hkdf_extract(ms, h4, 32, prk, 32);
	warp_hkdf_expand(role == WARP_HS_INITIATOR ? res->send_key : res->recv_key, 32, ms,
			 "data i2r", NULL, 0);
	warp_hkdf_expand(role == WARP_HS_INITIATOR ? res->recv_key : res->send_key, 32, ms,
			 "data r2i", NULL, 0);
	warp_hkdf_expand(res->ka_key, 32, ms, "keepalive", NULL, 0);
	warp_hkdf_expand(res->exporter, 32, ms, "exporter", NULL, 0);
	sodium_memzero(ms, sizeof(ms));
}

/* ---- INIT ---- */

static int init_parse(const uint8_t *pkt, size_t len, struct warp_hs_init_info *info,
		      const uint8_t **cookie)
{
	struct warp_pkt_hdr h;
	struct warp_rd r;
	uint8_t clen;
	int err = warp_pkt_check(pkt, len, &h);

	if (err)
		return err;
	if (h.type != WARP_PKT_HS_INIT)
		return -WARP_ESTATE;
	r = warp_rd_init(pkt + WARP_HDR_LEN, len - WARP_HDR_LEN);
	warp_rd_copy(&r, info->cid, WARP_CID_LEN);
	warp_rd_copy(&r, info->ephemeral, X_LEN);
	warp_rd_bytes(&r, RANDOM_LEN);
	info->timestamp_ms = warp_rd_u64(&r);
	clen = warp_rd_u8(&r);
	if (r.err)
		return r.err;
	if (clen != 0 && clen != WARP_HS_COOKIE_LEN)
		return -WARP_EMALFORMED;
	*cookie = warp_rd_bytes(&r, clen);
	if (r.err)
		return r.err;
	info->has_cookie = clen != 0;
	/* Zero padding only: the INIT has exactly one encoding. */
	if (!sodium_is_zero(r.p + r.off, warp_rd_left(&r)))
		return -WARP_EMALFORMED;
	if (cid_is_zero(info->cid))
		return -WARP_EMALFORMED;
	return 0;
}

int warp_hs_init_peek(const uint8_t *pkt, size_t len, struct warp_hs_init_info *info)
{
	const uint8_t *cookie;

	return init_parse(pkt, len, info, &cookie);
}

static void init_build(struct warp_hs *hs)
{
	struct warp_wr w = warp_wr_init(hs->pkt, WARP_HS_INIT_LEN);

	memset(hs->pkt, 0, WARP_HS_INIT_LEN);
	hdr_write(warp_wr_reserve(&w, WARP_HDR_LEN), WARP_PKT_HS_INIT, hs->init_cid, 0);
	warp_wr_bytes(&w, hs->local_cid, WARP_CID_LEN);
	warp_wr_bytes(&w, hs->e_pk, X_LEN);
	warp_wr_bytes(&w, hs->random, RANDOM_LEN);
	warp_wr_u64(&w, hs->wall_ms);
	warp_wr_u8(&w, hs->has_cookie ? WARP_HS_COOKIE_LEN : 0);
	if (hs->has_cookie)
		warp_wr_bytes(&w, hs->cookie, WARP_HS_COOKIE_LEN);
	hs->pkt_len = WARP_HS_INIT_LEN;
}

/* ---- lifecycle ---- */

struct warp_hs *warp_hs_new(const struct warp_hs_cfg *cfg, uint64_t now_ns)
{
	struct warp_hs *hs;

	if (!cfg || !cfg->identity ||
	    (cfg->role != WARP_HS_INITIATOR && cfg->role != WARP_HS_RESPONDER) ||
	    (cfg->role == WARP_HS_INITIATOR && !cfg->expected_peer && !cfg->policy) ||
	    (cfg->expected_peer && warp_pubkey_check(cfg->expected_peer))) {
		errno = EINVAL;
		return NULL;
	}
	if (warp_crypto_init()) {
		errno = EIO;
		return NULL;
	}
	hs = calloc(1, sizeof(*hs));
	if (!hs)
		return NULL;
	hs->role = cfg->role;
	hs->id = cfg->identity;
	if (cfg->expected_peer) {
		memcpy(hs->expected, cfg->expected_peer, WARP_PUBKEY_LEN);
		hs->has_expected = true;
	}
	hs->policy = cfg->policy;
	hs->policy_user = cfg->policy_user;
	memcpy(hs->local_cid, cfg->local_cid, WARP_CID_LEN);
	while (cid_is_zero(hs->local_cid))
		warp_random(hs->local_cid, WARP_CID_LEN);
	memcpy(hs->init_cid, cfg->init_cid, WARP_CID_LEN);
	hs->wall_ms = cfg->wall_ms;
	hs->max_skew_ms = cfg->max_skew_ms;
	hs->rto_ms = cfg->rto_ms ? cfg->rto_ms : DEFAULT_RTO_MS;
	hs->rto_max_ms = cfg->rto_max_ms ? cfg->rto_max_ms : DEFAULT_RTO_MAX_MS;
	if (hs->rto_max_ms < hs->rto_ms)
		hs->rto_max_ms = hs->rto_ms;
	hs->max_attempts = cfg->max_attempts ? cfg->max_attempts : DEFAULT_ATTEMPTS;
	hs->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
	if (cfg->test_ephemeral)
		memcpy(hs->e_sk, cfg->test_ephemeral, X_LEN);
	else
		warp_random(hs->e_sk, X_LEN);
	crypto_scalarmult_base(hs->e_pk, hs->e_sk);
	warp_random(hs->random, RANDOM_LEN);
	hs->start_ns = now_ns;
	hs->rto_cur_ms = hs->rto_ms;
	if (hs->role == WARP_HS_INITIATOR) {
		hs->state = WARP_HS_WAIT_RESP;
		hs->deadline_ns = now_ns; /* the first poll sends INIT */
		init_build(hs);
	} else {
		hs->state = WARP_HS_WAIT_INIT;
		hs->deadline_ns = UINT64_MAX;
	}
	return hs;
}

void warp_hs_free(struct warp_hs *hs)
{
	if (!hs)
		return;
	sodium_memzero(hs, sizeof(*hs));
	free(hs);
}

static void wipe_secrets(struct warp_hs *hs)
{
	sodium_memzero(hs->e_sk, sizeof(hs->e_sk));
	sodium_memzero(hs->prk, sizeof(hs->prk));
	sodium_memzero(hs->k_i, sizeof(hs->k_i));
}

/* linger_ns: how long the failed handshake keeps answering duplicates before poll reports. */
static int fail(struct warp_hs *hs, int err, uint64_t now_ns, uint64_t linger_ns)
{
	wipe_secrets(hs);
	sodium_memzero(&hs->res, sizeof(hs->res));
	hs->state = WARP_HS_FAILED;
	hs->error = err;
	hs->expire_ns = now_ns + linger_ns;
	return err;
}

static uint64_t overall_deadline(const struct warp_hs *hs)
{
	return hs->start_ns + (uint64_t)hs->timeout_ms * NS_PER_MS;
}

uint64_t warp_hs_next_timeout(const struct warp_hs *hs)
{
	uint64_t d;

	switch (hs->state) {
	case WARP_HS_WAIT_RESP:
		d = overall_deadline(hs);
		return hs->deadline_ns < d ? hs->deadline_ns : d;
	case WARP_HS_WAIT_INIT:
	case WARP_HS_WAIT_FINISH:
		return overall_deadline(hs);
	case WARP_HS_FAILED:
		return hs->expire_ns;
	default:
		return UINT64_MAX;
	}
}

int warp_hs_poll(struct warp_hs *hs, uint64_t now_ns, uint8_t out[WARP_HS_OUT_MAX], size_t *out_len)
{
	*out_len = 0;
	switch (hs->state) {
	case WARP_HS_DONE:
		return 0;
	case WARP_HS_FAILED:
		return now_ns >= hs->expire_ns ? hs->error : 0;
	case WARP_HS_WAIT_INIT:
	case WARP_HS_WAIT_FINISH:
		if (now_ns >= overall_deadline(hs)) {
			pr_debug("responder handshake timed out in state %d", hs->state);
			return fail(hs, -ETIMEDOUT, now_ns, 0);
		}
		return 0;
	case WARP_HS_WAIT_RESP:
		break;
	}
	if (now_ns >= overall_deadline(hs) ||
	    (now_ns >= hs->deadline_ns && hs->attempts >= hs->max_attempts)) {
		pr_info("handshake timed out after %u INIT transmissions", hs->attempts);
		return fail(hs, -ETIMEDOUT, now_ns, 0);
	}
	if (now_ns < hs->deadline_ns)
		return 0;
	memcpy(out, hs->pkt, hs->pkt_len);
	*out_len = hs->pkt_len;
	hs->attempts++;
	hs->deadline_ns = now_ns + (uint64_t)hs->rto_cur_ms * NS_PER_MS;
	hs->rto_cur_ms = hs->rto_cur_ms * 2 > hs->rto_max_ms ? hs->rto_max_ms : hs->rto_cur_ms * 2;
	return 0;
}

/* Expected identity first, then the policy. */
static int judge_peer(struct warp_hs *hs, const uint8_t peer[WARP_PUBKEY_LEN])
{
	char got[2 * WARP_PUBKEY_LEN + 1], want[2 * WARP_PUBKEY_LEN + 1];
	int err;

	if (hs->has_expected && !warp_ct_equal(peer, hs->expected, WARP_PUBKEY_LEN)) {
		hexkey(got, peer);
		hexkey(want, hs->expected);
		pr_warn("peer proved identity %s but %s was expected: refusing the connection", got,
			want);
		return -WARP_EIDENTITY;
	}
	if (hs->policy) {
		err = hs->policy(peer, hs->policy_user);
		if (err) {
			hexkey(got, peer);
			err = err < 0 ? err : -EACCES;
			pr_info("policy refused peer %s: %s", got, warp_strerror(err));
			return err;
		}
	}
	return 0;
}

/* ---- initiator ---- */

static int initiator_retry(struct warp_hs *hs, const uint8_t *pkt, uint64_t now_ns, uint8_t *out,
			   size_t *out_len)
{
	if (hs->has_cookie)
		return -WARP_EREPLAY; /* one RETRY per attempt: no loops */
	if (!warp_ct_equal(pkt + WARP_HDR_LEN, hs->e_pk, X_LEN))
		return -WARP_EAUTH;
	memcpy(hs->cookie, pkt + WARP_HDR_LEN + X_LEN, WARP_HS_COOKIE_LEN);
	hs->has_cookie = true;
	init_build(hs);
	memcpy(out, hs->pkt, hs->pkt_len);
	*out_len = hs->pkt_len;
	hs->attempts = 1;
	hs->rto_cur_ms = hs->rto_ms;
	hs->deadline_ns = now_ns + (uint64_t)hs->rto_cur_ms * NS_PER_MS;
	hs->rto_cur_ms = hs->rto_cur_ms * 2 > hs->rto_max_ms ? hs->rto_max_ms : hs->rto_cur_ms * 2;
	pr_debug("responder asked for a cookie; INIT repeated with it");
	return 0;
}

static int initiator_resp(struct warp_hs *hs, const uint8_t *pkt, uint64_t now_ns, uint8_t *out,
			  size_t *out_len)
{
	const uint8_t *peer_cid = pkt + WARP_HDR_LEN;
	const uint8_t *e_r = peer_cid + WARP_CID_LEN;
	const uint8_t *sealed = pkt + RESP_CLEAR_LEN;
	uint8_t dh[32], h[32], h2[32], h3[32], prk[32], k_r[32], k_i[32];
	uint8_t blob[ID_BLOB_LEN], mine[ID_BLOB_LEN];
	uint8_t fin[WARP_HS_FINISH_LEN];
	int err;

	if (cid_is_zero(peer_cid))
		return -WARP_EMALFORMED;
	if (crypto_scalarmult(dh, hs->e_sk, e_r)) {
		err = -WARP_EAUTH; /* low-order point: no shared secret */
		goto out;
	}
	h0(h);
	mix(h, h, hs->pkt, hs->pkt_len);
	mix(h2, h, pkt, RESP_CLEAR_LEN);
	warp_hkdf_extract(prk, h2, 32, dh, 32);
	warp_hkdf_expand(k_r, 32, prk, "hs r2i", NULL, 0);
	err = aead_open(blob, k_r, 0, h2, 32, sealed, SEALED_ID_LEN);
	if (err)
		goto out;
	err = verify_transcript(blob, SIG_R_LABEL, h2, blob + WARP_PUBKEY_LEN);
	if (err) {
		pr_debug("RESP signature does not verify");
		goto out;
	}
	mix(h3, h2, sealed, SEALED_ID_LEN);
	/* Authenticated: from here on the outcome is final. */
	err = judge_peer(hs, blob);
	if (err) {
		fail(hs, err, now_ns, 0);
		goto out;
	}
	memcpy(mine, warp_identity_pubkey(hs->id), WARP_PUBKEY_LEN);
	err = sign_transcript(hs->id, SIG_I_LABEL, h3, mine + WARP_PUBKEY_LEN);
	if (err) {
		fail(hs, err, now_ns, 0);
		goto out;
	}
	warp_hkdf_expand(k_i, 32, prk, "hs i2r", NULL, 0);
	hdr_write(fin, WARP_PKT_HS_FINISH, peer_cid, 0);
	mix(h, h3, fin, WARP_HDR_LEN);
	aead_seal(fin + WARP_HDR_LEN, k_i, 0, h, 32, mine, ID_BLOB_LEN);
	mix(h, h, fin + WARP_HDR_LEN, SEALED_ID_LEN);

	memcpy(hs->peer_cid, peer_cid, WARP_CID_LEN);
	hs->have_peer_cid = true;
	memcpy(hs->peer_id, blob, WARP_PUBKEY_LEN);
	memcpy(hs->pkt, fin, sizeof(fin));
	hs->pkt_len = sizeof(fin);
	derive_session(&hs->res, WARP_HS_INITIATOR, prk, h);
	memcpy(hs->res.finish, fin, sizeof(fin));
	hs->res.finish_sent_ns = now_ns;
	hs->state = WARP_HS_DONE;
	wipe_secrets(hs);
	memcpy(out, fin, sizeof(fin));
	*out_len = sizeof(fin);
	err = 0;
out:
	sodium_memzero(dh, sizeof(dh));
	sodium_memzero(prk, sizeof(prk));
	sodium_memzero(k_r, sizeof(k_r));
	sodium_memzero(k_i, sizeof(k_i));
	return err;
}

/* ---- responder ---- */

static int responder_init(struct warp_hs *hs, const uint8_t *pkt, size_t len, uint8_t *out,
			  size_t *out_len)
{
	struct warp_hs_init_info info;
	const uint8_t *cookie;
	uint8_t dh[32], h1[32], h2[32], prk[32], k_r[32], blob[ID_BLOB_LEN];
	uint8_t *resp = hs->pkt;
	uint64_t skew;
	int err = init_parse(pkt, len, &info, &cookie);

	if (err)
		return err;
	if (hs->max_skew_ms) {
		skew = info.timestamp_ms > hs->wall_ms ? info.timestamp_ms - hs->wall_ms
						       : hs->wall_ms - info.timestamp_ms;
		if (skew > hs->max_skew_ms) {
			pr_info("INIT timestamp %llu ms away from our clock: dropped",
				(unsigned long long)skew);
			return -WARP_ESTALE;
		}
	}
	if (crypto_scalarmult(dh, hs->e_sk, info.ephemeral)) {
		err = -WARP_EAUTH;
		goto out;
	}
	h0(h1);
	mix(h1, h1, pkt, len);
	hdr_write(resp, WARP_PKT_HS_RESP, info.cid, 0);
	memcpy(resp + WARP_HDR_LEN, hs->local_cid, WARP_CID_LEN);
	memcpy(resp + WARP_HDR_LEN + WARP_CID_LEN, hs->e_pk, X_LEN);
	mix(h2, h1, resp, RESP_CLEAR_LEN);
	warp_hkdf_extract(prk, h2, 32, dh, 32);
	warp_hkdf_expand(k_r, 32, prk, "hs r2i", NULL, 0);
	memcpy(blob, warp_identity_pubkey(hs->id), WARP_PUBKEY_LEN);
	err = sign_transcript(hs->id, SIG_R_LABEL, h2, blob + WARP_PUBKEY_LEN);
	if (err)
		goto out;
	aead_seal(resp + RESP_CLEAR_LEN, k_r, 0, h2, 32, blob, ID_BLOB_LEN);
	hs->pkt_len = WARP_HS_RESP_LEN;
	mix(hs->h3, h2, resp + RESP_CLEAR_LEN, SEALED_ID_LEN);
	memcpy(hs->h1, h1, 32);
	memcpy(hs->prk, prk, 32);
	warp_hkdf_expand(hs->k_i, 32, prk, "hs i2r", NULL, 0);
	memcpy(hs->peer_cid, info.cid, WARP_CID_LEN);
	hs->have_peer_cid = true;
	sodium_memzero(hs->e_sk, sizeof(hs->e_sk));
	hs->state = WARP_HS_WAIT_FINISH;
	hs->attempts = 1;
	memcpy(out, resp, hs->pkt_len);
	*out_len = hs->pkt_len;
out:
	sodium_memzero(dh, sizeof(dh));
	sodium_memzero(prk, sizeof(prk));
	sodium_memzero(k_r, sizeof(k_r));
	return err;
}

/* A retransmitted INIT (same bytes) gets the cached RESP, at most max_attempts times. */
static int responder_dup_init(struct warp_hs *hs, const uint8_t *pkt, size_t len, uint8_t *out,
			      size_t *out_len)
{
	uint8_t h[32];

	if (len != WARP_HS_INIT_LEN)
		return -WARP_ESTATE;
	h0(h);
	mix(h, h, pkt, len);
	if (!warp_ct_equal(h, hs->h1, 32))
		return -WARP_ESTATE; /* another INIT: not ours to answer */
	if (hs->state != WARP_HS_WAIT_FINISH || hs->attempts >= hs->max_attempts)
		return 0;
	hs->attempts++;
	memcpy(out, hs->pkt, hs->pkt_len);
	*out_len = hs->pkt_len;
	return 0;
}

/* The refusal: CLOSE sealed with the session key r->i, pn 0, payload = error code. */
static void build_refusal(struct warp_hs *hs, int err)
{
	uint8_t code[4];

	hdr_write(hs->pkt, WARP_PKT_CLOSE, hs->peer_cid, 0);
	warp_put_u32(code, (uint32_t)-err);
	aead_seal(hs->pkt + WARP_HDR_LEN, hs->res.send_key, 0, hs->pkt, WARP_HDR_LEN, code,
		  sizeof(code));
	hs->pkt_len = CLOSE_LEN;
}

static int responder_finish(struct warp_hs *hs, const uint8_t *pkt, size_t len, uint64_t now_ns,
			    uint8_t *out, size_t *out_len)
{
	uint8_t hf[32], h4[32], blob[ID_BLOB_LEN];
	int err;

	mix(hf, hs->h3, pkt, WARP_HDR_LEN);
	err = aead_open(blob, hs->k_i, 0, hf, 32, pkt + WARP_HDR_LEN, SEALED_ID_LEN);
	if (err)
		return err;
	err = verify_transcript(blob, SIG_I_LABEL, hs->h3, blob + WARP_PUBKEY_LEN);
	if (err) {
		pr_debug("FINISH signature does not verify");
		return err;
	}
	mix(h4, hf, pkt + WARP_HDR_LEN, SEALED_ID_LEN);
	derive_session(&hs->res, WARP_HS_RESPONDER, hs->prk, h4);
	crypto_hash_sha256(hs->finish_hash, pkt, len);
	memcpy(hs->peer_id, blob, WARP_PUBKEY_LEN);
	err = judge_peer(hs, blob);
	if (err) {
		build_refusal(hs, err);
		memcpy(out, hs->pkt, hs->pkt_len);
		*out_len = hs->pkt_len;
		/* Linger so a retransmitted FINISH gets the same answer. */
		return fail(hs, err, now_ns, (uint64_t)hs->timeout_ms * NS_PER_MS);
	}
	memcpy(hs->res.finish_hash, hs->finish_hash, 32);
	hs->state = WARP_HS_DONE;
	wipe_secrets(hs);
	return 0;
}

/* ---- dispatch ---- */

static bool is_handshake(uint8_t type)
{
	return type == WARP_PKT_HS_INIT || type == WARP_PKT_HS_RESP || type == WARP_PKT_HS_FINISH ||
	       type == WARP_PKT_HS_RETRY;
}

int warp_hs_recv(struct warp_hs *hs, const uint8_t *pkt, size_t len, uint64_t now_ns,
		 uint8_t out[WARP_HS_OUT_MAX], size_t *out_len)
{
	struct warp_pkt_hdr h;
	uint8_t fh[32];
	int err;

	*out_len = 0;
	err = warp_pkt_check(pkt, len, &h);
	if (err)
		return err;
	if (!is_handshake(h.type))
		return -WARP_ESTATE; /* DATA and friends wait for a session */
	if (h.type != WARP_PKT_HS_INIT && memcmp(h.cid, hs->local_cid, WARP_CID_LEN))
		return -WARP_ENOTFOUND;

	switch (hs->state) {
	case WARP_HS_WAIT_RESP:
		if (h.type == WARP_PKT_HS_RESP)
			return initiator_resp(hs, pkt, now_ns, out, out_len);
		if (h.type == WARP_PKT_HS_RETRY)
			return initiator_retry(hs, pkt, now_ns, out, out_len);
		return -WARP_ESTATE;
	case WARP_HS_WAIT_INIT:
		if (h.type == WARP_PKT_HS_INIT)
			return responder_init(hs, pkt, len, out, out_len);
		return -WARP_ESTATE;
	case WARP_HS_WAIT_FINISH:
		if (h.type == WARP_PKT_HS_INIT)
			return responder_dup_init(hs, pkt, len, out, out_len);
		if (h.type == WARP_PKT_HS_FINISH)
			return responder_finish(hs, pkt, len, now_ns, out, out_len);
		return -WARP_ESTATE;
	case WARP_HS_FAILED:
		/* A refused initiator retransmitting FINISH hears the refusal again. */
		if (hs->role == WARP_HS_RESPONDER && h.type == WARP_PKT_HS_FINISH &&
		    hs->pkt_len == CLOSE_LEN) {
			crypto_hash_sha256(fh, pkt, len);
			if (warp_ct_equal(fh, hs->finish_hash, 32)) {
				memcpy(out, hs->pkt, hs->pkt_len);
				*out_len = hs->pkt_len;
			}
		}
		return 0;
	case WARP_HS_DONE:
		return 0; /* late duplicates: the session is in charge now */
	}
	return -WARP_ESTATE;
}

/* ---- accessors ---- */

enum warp_hs_state warp_hs_state(const struct warp_hs *hs)
{
	return hs->state;
}

enum warp_hs_role warp_hs_role(const struct warp_hs *hs)
{
	return hs->role;
}

int warp_hs_error(const struct warp_hs *hs)
{
	return hs->error;
}

const uint8_t *warp_hs_local_cid(const struct warp_hs *hs)
{
	return hs->local_cid;
}

const uint8_t *warp_hs_peer_cid(const struct warp_hs *hs)
{
	return hs->have_peer_cid ? hs->peer_cid : NULL;
}

const uint8_t *warp_hs_peer_identity(const struct warp_hs *hs)
{
	return hs->state == WARP_HS_DONE ? hs->peer_id : NULL;
}

int warp_hs_result(const struct warp_hs *hs, struct warp_hs_result *res)
{
	if (hs->state != WARP_HS_DONE)
		return -WARP_ESTATE;
	*res = hs->res;
	res->role = hs->role;
	memcpy(res->local_cid, hs->local_cid, WARP_CID_LEN);
	memcpy(res->peer_cid, hs->peer_cid, WARP_CID_LEN);
	memcpy(res->peer_identity, hs->peer_id, WARP_PUBKEY_LEN);
	res->start_ns = hs->start_ns;
	res->rto_ms = hs->rto_ms;
	res->rto_max_ms = hs->rto_max_ms;
	res->max_attempts = hs->max_attempts;
	res->timeout_ms = hs->timeout_ms;
	return 0;
}

/* ---- cookies ---- */

struct warp_cookie_jar {
	uint8_t master[32];
	bool enabled;
};

struct warp_cookie_jar *warp_cookie_jar_new(void)
{
	struct warp_cookie_jar *jar;

	if (warp_crypto_init()) {
		errno = EIO;
		return NULL;
	}
	jar = calloc(1, sizeof(*jar));
	if (!jar)
		return NULL;
	warp_random(jar->master, sizeof(jar->master));
	return jar;
}

void warp_cookie_jar_free(struct warp_cookie_jar *jar)
{
	if (!jar)
		return;
	sodium_memzero(jar, sizeof(*jar));
	free(jar);
}

void warp_cookie_jar_set(struct warp_cookie_jar *jar, bool enabled)
{
	jar->enabled = enabled;
}

bool warp_cookie_jar_enabled(const struct warp_cookie_jar *jar)
{
	return jar->enabled;
}

static void cookie_make(const struct warp_cookie_jar *jar, uint64_t period, const void *addr,
			size_t addr_len, const struct warp_hs_init_info *info,
			uint8_t out[WARP_HS_COOKIE_LEN])
{
	static const char label[] = "warpgate cookie";
	crypto_generichash_state st;
	uint8_t msg[sizeof(label) - 1 + 8], secret[32], alen[8];

	memcpy(msg, label, sizeof(label) - 1);
	warp_put_u64(msg + sizeof(label) - 1, period);
	crypto_generichash(secret, sizeof(secret), msg, sizeof(msg), jar->master,
			   sizeof(jar->master));
	warp_put_u64(alen, addr_len);
	crypto_generichash_init(&st, secret, sizeof(secret), WARP_HS_COOKIE_LEN);
	crypto_generichash_update(&st, alen, sizeof(alen));
	crypto_generichash_update(&st, addr, addr_len);
	crypto_generichash_update(&st, info->cid, WARP_CID_LEN);
	crypto_generichash_update(&st, info->ephemeral, X_LEN);
	crypto_generichash_final(&st, out, WARP_HS_COOKIE_LEN);
	sodium_memzero(secret, sizeof(secret));
	sodium_memzero(&st, sizeof(st));
}

int warp_cookie_check(const struct warp_cookie_jar *jar, const uint8_t *pkt, size_t len,
		      const void *addr, size_t addr_len, uint64_t now_ns,
		      uint8_t out[WARP_HS_OUT_MAX])
{
	struct warp_hs_init_info info;
	const uint8_t *cookie;
	uint8_t want[WARP_HS_COOKIE_LEN];
	uint64_t period = now_ns / COOKIE_PERIOD_NS;
	int err = init_parse(pkt, len, &info, &cookie);

	if (err)
		return err;
	if (!jar->enabled)
		return 0;
	if (info.has_cookie) {
		cookie_make(jar, period, addr, addr_len, &info, want);
		if (warp_ct_equal(want, cookie, WARP_HS_COOKIE_LEN))
			return 0;
		if (period > 0) {
			cookie_make(jar, period - 1, addr, addr_len, &info, want);
			if (warp_ct_equal(want, cookie, WARP_HS_COOKIE_LEN))
				return 0;
		}
		return -WARP_EAUTH;
	}
	hdr_write(out, WARP_PKT_HS_RETRY, info.cid, 0);
	memcpy(out + WARP_HDR_LEN, info.ephemeral, X_LEN);
	cookie_make(jar, period, addr, addr_len, &info, out + WARP_HDR_LEN + X_LEN);
	return WARP_HS_RETRY_LEN;
}
