// SPDX-License-Identifier: MIT
/* Fuzz target: key file parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/identity.h>
#include <warpgate/log.h>

#include "crypto/keystore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct warp_identity *id = NULL;
	char *text = malloc(size + 1);

	if (!text)
		return 0;
	warp_log_set_level(WARP_LOG_NONE);
	memcpy(text, data, size);
	text[size] = '\0';
	if (warp_keyfile_parse(text, "fuzz", "m", &id) == 0 && !id)
		abort();
	warp_identity_free(id);
	free(text);
	return 0;
}
