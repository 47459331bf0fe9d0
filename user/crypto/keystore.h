/* SPDX-License-Identifier: MIT */
/* Keystore internals exposed for tests and fuzzing. */
#ifndef WARP_CRYPTO_KEYSTORE_H
#define WARP_CRYPTO_KEYSTORE_H

#include <warpgate/identity.h>

/* Parses key file text for name; origin names it in error messages. */
int warp_keyfile_parse(const char *text, const char *origin, const char *name,
		       struct warp_identity **out);

#endif
