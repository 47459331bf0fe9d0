// SPDX-License-Identifier: MIT
/*
 * Optional libsecp256k1 backend, bound with dlopen() so the library is a speed-up and never a
 * build or run-time requirement.  Only its stable public entry points are used; the context
 * is created once and then only passed as const (thread-safe for signing and verifying).
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <warpgate/error.h>

#include "name/sig.h"

/* libsecp256k1's ABI: opaque 64-byte structs, flags from its header. */
#define SECP_CONTEXT_SIGN_VERIFY 0x301u

typedef void secp_ctx;
static struct {
	secp_ctx *ctx;
	int (*pub_parse)(const secp_ctx *, void *pub, const unsigned char *in, size_t len);
	int (*sig_parse)(const secp_ctx *, void *sig, const unsigned char *in64);
	int (*verify)(const secp_ctx *, const void *sig, const unsigned char *h32, const void *pub);
	int (*sign)(const secp_ctx *, void *sig, const unsigned char *h32, const unsigned char *sk,
		    void *noncefp, const void *ndata);
	int (*sig_ser)(const secp_ctx *, unsigned char *out64, const void *sig);
	bool ok;
} secp;

static pthread_once_t secp_once = PTHREAD_ONCE_INIT;

static void secp_load(void)
{
	secp_ctx *(*create)(unsigned int);
	const char *off = getenv("WARP_NAMES_OPENSSL");
	void *h;

	if (off && *off && strcmp(off, "0"))
		return;
	h = dlopen("libsecp256k1.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h)
		h = dlopen("libsecp256k1.so", RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return;
	create = (secp_ctx * (*)(unsigned int)) dlsym(h, "secp256k1_context_create");
	secp.pub_parse = dlsym(h, "secp256k1_ec_pubkey_parse");
	secp.sig_parse = dlsym(h, "secp256k1_ecdsa_signature_parse_compact");
	secp.verify = dlsym(h, "secp256k1_ecdsa_verify");
	secp.sign = dlsym(h, "secp256k1_ecdsa_sign");
	secp.sig_ser = dlsym(h, "secp256k1_ecdsa_signature_serialize_compact");
	if (!create || !secp.pub_parse || !secp.sig_parse || !secp.verify || !secp.sign ||
	    !secp.sig_ser)
		return; /* the handle stays open: harmless, and never unloaded under a user */
	secp.ctx = create(SECP_CONTEXT_SIGN_VERIFY);
	secp.ok = secp.ctx != NULL;
}

bool wn_sig_fast(void)
{
	pthread_once(&secp_once, secp_load);
	return secp.ok;
}

const char *wn_sig_backend(void)
{
	return wn_sig_fast() ? "libsecp256k1" : "openssl";
}

int wn_signer_init(struct wn_signer *s, const struct warp_identity *id)
{
	memset(s, 0, sizeof(*s));
	s->id = id;
	memcpy(s->pub, warp_identity_pubkey(id), WARP_PUBKEY_LEN);
	if (wn_sig_fast() && !warp_identity_secret(id, s->sk))
		s->fast = true;
	return 0;
}

void wn_signer_wipe(struct wn_signer *s)
{
	sodium_memzero(s->sk, sizeof(s->sk));
	s->fast = false;
}

int wn_signer_sign(const struct wn_signer *s, const void *msg, size_t len,
		   uint8_t sig[WARP_SIG_LEN])
{
	uint8_t h[32], raw[64];

	if (!s->fast)
		return warp_identity_sign(s->id, msg, len, sig);
	crypto_hash_sha256(h, msg, len);
	/* RFC 6979 nonces; the result is already low-S */
	if (!secp.sign(secp.ctx, raw, h, s->sk, NULL, NULL) || !secp.sig_ser(secp.ctx, sig, raw))
		return -EIO;
	return 0;
}

int wn_pub_parse(const uint8_t pub[WARP_PUBKEY_LEN], struct wn_parsed_pub *out)
{
	if (pub[0] != 0x02 && pub[0] != 0x03)
		return -WARP_EMALFORMED;
	if (!wn_sig_fast())
		return -ENOTSUP;
	return secp.pub_parse(secp.ctx, out->data, pub, WARP_PUBKEY_LEN) ? 0 : -WARP_EMALFORMED;
}

int wn_verify_parsed(const struct wn_parsed_pub *pub, const void *msg, size_t len,
		     const uint8_t sig[WARP_SIG_LEN])
{
	uint8_t h[32], raw[64];

	if (!wn_sig_fast())
		return -ENOTSUP;
	/* parse_compact rejects r or s >= n; verify rejects high S, like warp_verify() */
	if (!secp.sig_parse(secp.ctx, raw, sig))
		return -WARP_EAUTH;
	crypto_hash_sha256(h, msg, len);
	return secp.verify(secp.ctx, raw, h, pub->data) ? 0 : -WARP_EAUTH;
}

int wn_verify(const uint8_t pub[WARP_PUBKEY_LEN], const void *msg, size_t len,
	      const uint8_t sig[WARP_SIG_LEN])
{
	struct wn_parsed_pub p;
	int err;

	if (!wn_sig_fast())
		return warp_verify(pub, msg, len, sig);
	err = wn_pub_parse(pub, &p);
	return err ? err : wn_verify_parsed(&p, msg, len, sig);
}
