/* SPDX-License-Identifier: MIT */
/*
 * Identity: an ECDSA secp256k1 key pair.  Public keys travel as 33-byte compressed points;
 * signatures are ECDSA over SHA-256 as 64 bytes r||s with low S (non-malleable).
 *
 * Keystore: $WARPGATE_HOME/<name>.json (default ~/.warpgate/), mode 0600, written atomically.
 * The same name on the same machine gives the same key; a new name gives a new identity.
 */
#ifndef WARPGATE_IDENTITY_H
#define WARPGATE_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WARP_PUBKEY_LEN 33
#define WARP_SECKEY_LEN 32
#define WARP_SIG_LEN    64
#define WARP_NAME_MAX   63
#define WARP_MACHINE_HASH_LEN 16

struct warp_identity;

struct warp_identity *warp_identity_generate(void);
/* -WARP_ERANGE (as errno) when the secret is zero or not below the group order. */
struct warp_identity *warp_identity_from_secret(const uint8_t sk[WARP_SECKEY_LEN]);
void warp_identity_free(struct warp_identity *id);

const uint8_t *warp_identity_pubkey(const struct warp_identity *id);
int warp_identity_secret(const struct warp_identity *id, uint8_t sk[WARP_SECKEY_LEN]);
int warp_identity_sign(const struct warp_identity *id, const void *msg, size_t len,
		       uint8_t sig[WARP_SIG_LEN]);
/* 0 when sig is a valid low-S signature of msg by pub; -WARP_EAUTH when it is not;
 * -WARP_EMALFORMED when pub is not a point on the curve. */
int warp_verify(const uint8_t pub[WARP_PUBKEY_LEN], const void *msg, size_t len,
		const uint8_t sig[WARP_SIG_LEN]);
/* 0 if pub is a valid compressed point. */
int warp_pubkey_check(const uint8_t pub[WARP_PUBKEY_LEN]);

/* Sealed box to a public key: ECDH(secp256k1) with an ephemeral key, HKDF-SHA256, then
 * XChaCha20-Poly1305 with aad.  out holds in_len + WARP_SEAL_OVERHEAD bytes. */
#define WARP_SEAL_OVERHEAD (WARP_PUBKEY_LEN + 24 + 16)
int warp_seal(const uint8_t recipient[WARP_PUBKEY_LEN], const void *aad, size_t aad_len,
	      const void *in, size_t in_len, uint8_t *out);
/* Returns the plaintext length (in_len - WARP_SEAL_OVERHEAD) or -WARP_EAUTH/-WARP_ETRUNCATED. */
int warp_open_sealed(const struct warp_identity *id, const void *aad, size_t aad_len,
		     const void *in, size_t in_len, uint8_t *out);

/* Names: 1..63 characters of [A-Za-z0-9._-], no leading dot, no "..". */
int warp_name_validate(const char *name);
/* The home directory: $WARPGATE_HOME, else $HOME/.warpgate.  Returns 0 or -ENAMETOOLONG. */
int warp_home_dir(char *buf, size_t len);
/* A stable default name derived from /etc/machine-id (hashed, never the raw id). */
int warp_default_name(char *buf, size_t len);
/* A keyed hash of /etc/machine-id for same-host detection in addresses. */
int warp_machine_hash(uint8_t out[WARP_MACHINE_HASH_LEN]);

/* Loads <home>/<name>.json, or creates it when absent and create is true (*created then set).
 * home NULL means warp_home_dir().  Refuses key files readable by group or others
 * (-WARP_EKEYPERM) and malformed ones (-WARP_EMALFORMED), with a log message saying which. */
struct warp_identity *warp_keystore_load(const char *home, const char *name, bool create,
					 bool *created);
/* Path of a name's key file. */
int warp_keystore_path(const char *home, const char *name, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
