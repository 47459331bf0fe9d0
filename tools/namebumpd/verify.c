// SPDX-License-Identifier: MIT
/*
 * Signature checks with a per-thread cache of parsed owner keys.  Parsing a compressed point
 * (a modular square root) is a noticeable part of a verification, and the same owners write
 * again and again, so keys are kept by a direct-mapped table.  Same rules as warp_verify():
 * ECDSA-SHA256, 64-byte r||s, low S only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sodium.h>

#include <warpgate/error.h>

#include "nbd.h"

struct vslot {
	uint8_t pub[WARP_PUBKEY_LEN];
	EVP_PKEY *pkey;		   /* OpenSSL backend */
	struct wn_parsed_pub fast; /* libsecp256k1 backend */
	bool fast_ok;
};

struct nb_vcache {
	unsigned int n;
	EVP_MD_CTX *md;
	EVP_MD *sha256; /* fetched once: implicit fetches take global locks every time */
	struct vslot *slots;
};

/* SubjectPublicKeyInfo DER for a compressed secp256k1 point, up to the point itself. */
static const uint8_t spki_prefix[] = { 0x30, 0x36, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86,
				       0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
				       0x81, 0x04, 0x00, 0x0a, 0x03, 0x22, 0x00 };

/* (n - 1) / 2 of secp256k1, big-endian: the largest low S. */
static const uint8_t half_n[32] = { 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
				    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
				    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d,
				    0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0 };

struct nb_vcache *nb_vcache_new(unsigned int slots)
{
	struct nb_vcache *vc = calloc(1, sizeof(*vc));

	if (!vc)
		return NULL;
	vc->n = slots ? slots : 1;
	vc->slots = calloc(vc->n, sizeof(*vc->slots));
	vc->md = EVP_MD_CTX_new();
	vc->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!vc->slots || !vc->md || !vc->sha256) {
		nb_vcache_free(vc);
		errno = ENOMEM;
		return NULL;
	}
	return vc;
}

void nb_vcache_free(struct nb_vcache *vc)
{
	if (!vc)
		return;
	for (unsigned int i = 0; vc->slots && i < vc->n; i++)
		EVP_PKEY_free(vc->slots[i].pkey);
	free(vc->slots);
	EVP_MD_CTX_free(vc->md);
	EVP_MD_free(vc->sha256);
	free(vc);
}

static EVP_PKEY *lookup(struct nb_vcache *vc, const uint8_t pub[WARP_PUBKEY_LEN])
{
	uint8_t der[sizeof(spki_prefix) + WARP_PUBKEY_LEN];
	const unsigned char *p = der;
	/* the x coordinate is already uniformly spread: use it as the hash */
	struct vslot *s = &vc->slots[(pub[1] | pub[2] << 8 | pub[3] << 16) % vc->n];

	if (s->pkey && !memcmp(s->pub, pub, WARP_PUBKEY_LEN))
		return s->pkey;
	if (pub[0] != 0x02 && pub[0] != 0x03)
		return NULL;
	memcpy(der, spki_prefix, sizeof(spki_prefix));
	memcpy(der + sizeof(spki_prefix), pub, WARP_PUBKEY_LEN);
	EVP_PKEY_free(s->pkey);
	s->pkey = d2i_PUBKEY(NULL, &p, (long)sizeof(der));
	memcpy(s->pub, pub, WARP_PUBKEY_LEN);
	return s->pkey;
}

static int verify(struct nb_vcache *vc, const uint8_t pub[WARP_PUBKEY_LEN], const uint8_t *msg,
		  size_t len, const uint8_t sig[WARP_SIG_LEN])
{
	static const uint8_t zero[32];
	EVP_PKEY *pkey = lookup(vc, pub);
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *der = NULL;
	int derlen, err = -WARP_EAUTH;

	if (!pkey)
		return -WARP_EMALFORMED;
	/* low S, nonzero r and s; r >= n is caught by the verification itself */
	if (memcmp(sig + 32, half_n, 32) > 0 || !memcmp(sig, zero, 32) ||
	    !memcmp(sig + 32, zero, 32))
		return -WARP_EAUTH;
	r = BN_bin2bn(sig, 32, NULL);
	s = BN_bin2bn(sig + 32, 32, NULL);
	es = ECDSA_SIG_new();
	if (!r || !s || !es || !ECDSA_SIG_set0(es, r, s)) {
		err = -ENOMEM;
		goto out;
	}
	r = s = NULL;
	derlen = i2d_ECDSA_SIG(es, &der);
	if (derlen <= 0) {
		err = -ENOMEM;
		goto out;
	}
	EVP_MD_CTX_reset(vc->md); /* a context reused across keys must start clean */
	if (EVP_DigestVerifyInit(vc->md, NULL, vc->sha256, NULL, pkey) == 1 &&
	    EVP_DigestVerify(vc->md, der, (size_t)derlen, msg, len) == 1)
		err = 0;
out:
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	BN_free(r);
	BN_free(s);
	return err;
}

static int verify_fast(struct nb_vcache *vc, const uint8_t pub[WARP_PUBKEY_LEN], const uint8_t *msg,
		       size_t len, const uint8_t sig[WARP_SIG_LEN])
{
	struct vslot *s = &vc->slots[(pub[1] | pub[2] << 8 | pub[3] << 16) % vc->n];

	if (!s->fast_ok || memcmp(s->pub, pub, WARP_PUBKEY_LEN)) {
		s->fast_ok = false;
		if (wn_pub_parse(pub, &s->fast))
			return -WARP_EMALFORMED;
		memcpy(s->pub, pub, WARP_PUBKEY_LEN);
		s->fast_ok = true;
	}
	return wn_verify_parsed(&s->fast, msg, len, sig);
}

int nb_vcache_verify_record(struct nb_vcache *vc, const struct wn_record *rec)
{
	uint8_t msg[64 + WARP_NAME_FQ_MAX + WARP_NAME_VALUE_MAX + WARP_PUBKEY_LEN + 16];
	int len = wn_record_signed_msg(rec, msg, sizeof(msg));

	if (len < 0)
		return len;
	if (wn_sig_fast())
		return verify_fast(vc, rec->owner, msg, (size_t)len, rec->sig) ? -WARP_EAUTH : 0;
	return verify(vc, rec->owner, msg, (size_t)len, rec->sig) ? -WARP_EAUTH : 0;
}
