/* SPDX-License-Identifier: MIT */
/* Small helpers: hex and base64url text, CSPRNG bytes, wall clock, file I/O. */
#ifndef WARP_CORE_UTIL_H
#define WARP_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes 2*len hex digits and a NUL; out must hold 2*len+1. */
void warp_hex_encode(char *out, const void *in, size_t len);
/* Decodes exactly 2*outlen hex digits (either case); -WARP_EMALFORMED otherwise. */
int warp_hex_decode(void *out, size_t outlen, const char *in);

/* base64url without padding (RFC 4648 section 5). */
size_t warp_b64url_len(size_t inlen);
void warp_b64url_encode(char *out, const void *in, size_t len);
/* Returns the decoded length or a negative error; rejects padding, whitespace and
 * non-canonical trailing bits. */
int warp_b64url_decode(void *out, size_t cap, const char *in, size_t inlen);

/* Cryptographically secure random bytes (libsodium). */
void warp_random(void *buf, size_t len);
uint32_t warp_random_u32(void);
uint32_t warp_random_uniform(uint32_t upper);
/* Initialises libsodium once; thread-safe.  Returns 0 or -EIO. */
int warp_crypto_init(void);

/* Wall clock (CLOCK_REALTIME) in milliseconds since the Unix epoch. */
uint64_t warp_wall_ms(void);

/* Reads a whole file (at most max bytes) into a malloc'd, NUL-terminated buffer. */
int warp_read_file(const char *path, size_t max, char **out, size_t *outlen);
/* Atomic replace: writes path.tmp.XXXXXX with the given mode, fsyncs, renames over path,
 * fsyncs the directory. */
int warp_write_file_atomic(const char *path, const void *data, size_t len, unsigned int mode);
/* mkdir -p with mode for created directories. */
int warp_mkdir_p(const char *path, unsigned int mode);

/* Constant-time comparison; true when equal. */
bool warp_ct_equal(const void *a, const void *b, size_t len);

#endif
