// SPDX-License-Identifier: MIT
/*
 * ECDSA secp256k1 identities on OpenSSL 3 (EVP + EC_POINT arithmetic).  Signatures are
 * normalised to low S and encoded as fixed 64-byte r||s so every wire format can reserve a
 * fixed field; verification rejects high S so a signature has exactly one encoding.
 */
#include <errno.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <sodium.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>

#define LOG_COMPONENT "identity"
#include "core/log.h"
#include "core/util.h"

struct warp_identity {
	EVP_PKEY *pkey;
	uint8_t pub[WARP_PUBKEY_LEN];
};

/* Group constants computed once; EC_GROUP objects are immutable after creation and may be
 * shared between threads for read-only use. */
static EC_GROUP *secp256k1(void)
{
	static EC_GROUP *g;
	EC_GROUP *n;

	if (__atomic_load_n(&g, __ATOMIC_ACQUIRE))
		return g;
	n = EC_GROUP_new_by_curve_name(NID_secp256k1);
	if (!n)
		return NULL;
	EC_GROUP *expected = NULL;
	if (!__atomic_compare_exchange_n(&g, &expected, n, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		EC_GROUP_free(n);
	return g;
}

static EVP_PKEY *pkey_from_parts(const BIGNUM *priv, const uint8_t *pub, size_t publen)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;

	if (!bld)
		goto out;
	if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "secp256k1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, publen))
		goto out;
	if (priv && !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv))
		goto out;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0)
		goto out;
	if (EVP_PKEY_fromdata(ctx, &pkey, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
			      params) <= 0)
		pkey = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

/* pub = sk * G, compressed. */
static int derive_pub(const BIGNUM *sk, uint8_t out[WARP_PUBKEY_LEN])
{
	const EC_GROUP *g = secp256k1();
	EC_POINT *p = NULL;
	BN_CTX *bctx = BN_CTX_new();
	int err = -EIO;

	if (!g || !bctx)
		goto out;
	p = EC_POINT_new(g);
	if (!p || !EC_POINT_mul(g, p, sk, NULL, NULL, bctx))
		goto out;
	if (EC_POINT_point2oct(g, p, POINT_CONVERSION_COMPRESSED, out, WARP_PUBKEY_LEN, bctx) !=
	    WARP_PUBKEY_LEN)
		goto out;
	err = 0;
out:
	EC_POINT_free(p);
	BN_CTX_free(bctx);
	return err;
}

struct warp_identity *warp_identity_from_secret(const uint8_t sk[WARP_SECKEY_LEN])
{
	const EC_GROUP *g = secp256k1();
	struct warp_identity *id = NULL;
	BIGNUM *bn = BN_bin2bn(sk, WARP_SECKEY_LEN, NULL);
	int err = EIO;

	if (!g || !bn)
		goto out;
	if (BN_is_zero(bn) || BN_cmp(bn, EC_GROUP_get0_order(g)) >= 0) {
		err = WARP_ERANGE;
		goto out;
	}
	id = calloc(1, sizeof(*id));
	if (!id) {
		err = ENOMEM;
		goto out;
	}
	if (derive_pub(bn, id->pub))
		goto out;
	id->pkey = pkey_from_parts(bn, id->pub, WARP_PUBKEY_LEN);
	if (!id->pkey)
		goto out;
	BN_clear_free(bn);
	return id;
out:
	BN_clear_free(bn);
	warp_identity_free(id);
	errno = err;
	return NULL;
}

struct warp_identity *warp_identity_generate(void)
{
	uint8_t sk[WARP_SECKEY_LEN];
	struct warp_identity *id = NULL;

	/* Rejection sampling: almost every 32-byte string is below the order. */
	for (int i = 0; i < 16 && !id; i++) {
		warp_random(sk, sizeof(sk));
		id = warp_identity_from_secret(sk);
	}
	sodium_memzero(sk, sizeof(sk));
	return id;
}

void warp_identity_free(struct warp_identity *id)
{
	if (!id)
		return;
	EVP_PKEY_free(id->pkey);
	free(id);
}

const uint8_t *warp_identity_pubkey(const struct warp_identity *id)
{
	return id->pub;
}

int warp_identity_secret(const struct warp_identity *id, uint8_t sk[WARP_SECKEY_LEN])
{
	BIGNUM *bn = NULL;
	int err = -EIO;

	if (EVP_PKEY_get_bn_param(id->pkey, OSSL_PKEY_PARAM_PRIV_KEY, &bn) > 0 &&
	    BN_bn2binpad(bn, sk, WARP_SECKEY_LEN) == WARP_SECKEY_LEN)
		err = 0;
	BN_clear_free(bn);
	return err;
}

int warp_pubkey_check(const uint8_t pub[WARP_PUBKEY_LEN])
{
	const EC_GROUP *g = secp256k1();
	EC_POINT *p;
	int ok;

	if (!g)
		return -EIO;
	if (pub[0] != 0x02 && pub[0] != 0x03)
		return -WARP_EMALFORMED;
	p = EC_POINT_new(g);
	if (!p)
		return -ENOMEM;
	ok = EC_POINT_oct2point(g, p, pub, WARP_PUBKEY_LEN, NULL) == 1;
	EC_POINT_free(p);
	return ok ? 0 : -WARP_EMALFORMED;
}

/* half = order / 2; S above it is replaced by order - S. */
static const BIGNUM *half_order(void)
{
	static BIGNUM *half;
	BIGNUM *h;
	const EC_GROUP *g = secp256k1();

	if (__atomic_load_n(&half, __ATOMIC_ACQUIRE))
		return half;
	if (!g)
		return NULL;
	h = BN_dup(EC_GROUP_get0_order(g));
	if (!h || !BN_rshift1(h, h)) {
		BN_free(h);
		return NULL;
	}
	BIGNUM *expected = NULL;
	if (!__atomic_compare_exchange_n(&half, &expected, h, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		BN_free(h);
	return half;
}

int warp_identity_sign(const struct warp_identity *id, const void *msg, size_t len,
		       uint8_t sig[WARP_SIG_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char der[80];
	const unsigned char *dp = der;
	size_t derlen = sizeof(der);
	ECDSA_SIG *es = NULL;
	BIGNUM *s2 = NULL;
	const BIGNUM *r, *s, *half = half_order();
	int err = -EIO;

	if (!md || !half)
		goto out;
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, id->pkey) <= 0 ||
	    EVP_DigestSign(md, der, &derlen, msg, len) <= 0)
		goto out;
	es = d2i_ECDSA_SIG(NULL, &dp, (long)derlen);
	if (!es)
		goto out;
	ECDSA_SIG_get0(es, &r, &s);
	if (BN_cmp(s, half) > 0) {
		s2 = BN_new();
		if (!s2 || !BN_sub(s2, EC_GROUP_get0_order(secp256k1()), s))
			goto out;
		s = s2;
	}
	if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32)
		goto out;
	err = 0;
out:
	BN_free(s2);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(md);
	return err;
}

int warp_verify(const uint8_t pub[WARP_PUBKEY_LEN], const void *msg, size_t len,
		const uint8_t sig[WARP_SIG_LEN])
{
	EVP_PKEY *pkey = NULL;
	EVP_MD_CTX *md = NULL;
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *der = NULL;
	const BIGNUM *half = half_order();
	int derlen, rc, err;

	err = warp_pubkey_check(pub);
	if (err)
		return err;
	err = -EIO;
	r = BN_bin2bn(sig, 32, NULL);
	s = BN_bin2bn(sig + 32, 32, NULL);
	if (!r || !s || !half)
		goto out;
	if (BN_is_zero(r) || BN_is_zero(s) || BN_cmp(s, half) > 0) {
		err = -WARP_EAUTH;
		goto out;
	}
	es = ECDSA_SIG_new();
	if (!es || !ECDSA_SIG_set0(es, r, s))
		goto out;
	r = s = NULL; /* owned by es now */
	derlen = i2d_ECDSA_SIG(es, &der);
	if (derlen <= 0)
		goto out;
	pkey = pkey_from_parts(NULL, pub, WARP_PUBKEY_LEN);
	md = EVP_MD_CTX_new();
	if (!pkey || !md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) <= 0)
		goto out;
	rc = EVP_DigestVerify(md, der, (size_t)derlen, msg, len);
	err = rc == 1 ? 0 : -WARP_EAUTH;
out:
	OPENSSL_free(der);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	ECDSA_SIG_free(es);
	BN_free(r);
	BN_free(s);
	return err;
}

/* ---- sealed boxes ---- */

static int ecdh(EVP_PKEY *mine, const uint8_t peer_pub[WARP_PUBKEY_LEN], uint8_t out[32])
{
	EVP_PKEY *peer = pkey_from_parts(NULL, peer_pub, WARP_PUBKEY_LEN);
	EVP_PKEY_CTX *ctx = NULL;
	size_t len = 32;
	int err = -EIO;

	if (!peer) {
		err = -WARP_EMALFORMED;
		goto out;
	}
	ctx = EVP_PKEY_CTX_new(mine, NULL);
	if (!ctx || EVP_PKEY_derive_init(ctx) <= 0 || EVP_PKEY_derive_set_peer(ctx, peer) <= 0 ||
	    EVP_PKEY_derive(ctx, out, &len) <= 0 || len != 32)
		goto out;
	err = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	return err;
}

/* key = HKDF-SHA256(ikm = shared x, salt = eph_pub || recipient_pub, info = label). */
static int seal_key(const uint8_t shared[32], const uint8_t eph[WARP_PUBKEY_LEN],
		    const uint8_t rcpt[WARP_PUBKEY_LEN], uint8_t key[32])
{
	static const char info[] = "warpgate seal v1";
	uint8_t salt[2 * WARP_PUBKEY_LEN];
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
	size_t len = 32;
	int err = -EIO;

	memcpy(salt, eph, WARP_PUBKEY_LEN);
	memcpy(salt + WARP_PUBKEY_LEN, rcpt, WARP_PUBKEY_LEN);
	if (!ctx || EVP_PKEY_derive_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) <= 0 ||
	    EVP_PKEY_CTX_set1_hkdf_salt(ctx, salt, sizeof(salt)) <= 0 ||
	    EVP_PKEY_CTX_set1_hkdf_key(ctx, shared, 32) <= 0 ||
	    EVP_PKEY_CTX_add1_hkdf_info(ctx, (const unsigned char *)info, sizeof(info) - 1) <= 0 ||
	    EVP_PKEY_derive(ctx, key, &len) <= 0)
		goto out;
	err = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	return err;
}

int warp_seal(const uint8_t recipient[WARP_PUBKEY_LEN], const void *aad, size_t aad_len,
	      const void *in, size_t in_len, uint8_t *out)
{
	struct warp_identity *eph = warp_identity_generate();
	uint8_t shared[32], key[32];
	uint8_t *nonce = out + WARP_PUBKEY_LEN;
	int err;

	if (!eph)
		return -errno;
	err = ecdh(eph->pkey, recipient, shared);
	if (err)
		goto out;
	err = seal_key(shared, eph->pub, recipient, key);
	if (err)
		goto out;
	memcpy(out, eph->pub, WARP_PUBKEY_LEN);
	warp_random(nonce, 24);
	crypto_aead_xchacha20poly1305_ietf_encrypt(out + WARP_PUBKEY_LEN + 24, NULL, in, in_len,
						   aad, aad_len, NULL, nonce, key);
out:
	sodium_memzero(shared, sizeof(shared));
	sodium_memzero(key, sizeof(key));
	warp_identity_free(eph);
	return err;
}

int warp_open_sealed(const struct warp_identity *id, const void *aad, size_t aad_len,
		     const void *in, size_t in_len, uint8_t *out)
{
	const uint8_t *p = in;
	uint8_t shared[32], key[32];
	int err;

	if (in_len < WARP_SEAL_OVERHEAD)
		return -WARP_ETRUNCATED;
	err = ecdh(id->pkey, p, shared);
	if (err)
		return err == -WARP_EMALFORMED ? -WARP_EAUTH : err;
	err = seal_key(shared, p, id->pub, key);
	if (err)
		goto out;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		    out, NULL, NULL, p + WARP_PUBKEY_LEN + 24, in_len - WARP_PUBKEY_LEN - 24, aad,
		    aad_len, p + WARP_PUBKEY_LEN, key) != 0) {
		err = -WARP_EAUTH;
		goto out;
	}
	err = (int)(in_len - WARP_SEAL_OVERHEAD);
out:
	sodium_memzero(shared, sizeof(shared));
	sodium_memzero(key, sizeof(key));
	return err;
}
