/* SPDX-License-Identifier: MIT */
/*
 * Signatures for the nickname hot paths (namebumpd verifying PUTs and signing reply batches,
 * nbload signing requests): the same ECDSA-secp256k1 / SHA-256 / 64-byte low-S r||s as
 * warp_identity_sign() and warp_verify(), but through libsecp256k1 when the system has it
 * (loaded at run time; several times faster than OpenSSL's generic curve code), else through
 * the identity module.  WARP_NAMES_OPENSSL=1 forces the fallback.
 */
#ifndef WARP_NAME_SIG_H
#define WARP_NAME_SIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/identity.h>

struct wn_signer {
	const struct warp_identity *id;
	uint8_t pub[WARP_PUBKEY_LEN];
	uint8_t sk[WARP_SECKEY_LEN]; /* only with the fast backend */
	bool fast;
};

/* "libsecp256k1" or "openssl". */
const char *wn_sig_backend(void);
bool wn_sig_fast(void);

/* id must outlive the signer. */
int wn_signer_init(struct wn_signer *s, const struct warp_identity *id);
void wn_signer_wipe(struct wn_signer *s);
int wn_signer_sign(const struct wn_signer *s, const void *msg, size_t len,
		   uint8_t sig[WARP_SIG_LEN]);

/* Parsed public key for repeated checks (fast backend); 64 opaque bytes. */
struct wn_parsed_pub {
	uint8_t data[64];
};
int wn_pub_parse(const uint8_t pub[WARP_PUBKEY_LEN], struct wn_parsed_pub *out);
/* 0, -WARP_EAUTH or -WARP_EMALFORMED, like warp_verify(). */
int wn_verify_parsed(const struct wn_parsed_pub *pub, const void *msg, size_t len,
		     const uint8_t sig[WARP_SIG_LEN]);
int wn_verify(const uint8_t pub[WARP_PUBKEY_LEN], const void *msg, size_t len,
	      const uint8_t sig[WARP_SIG_LEN]);

#endif
