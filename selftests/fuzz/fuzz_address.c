// SPDX-License-Identifier: MIT
/* Fuzz target: node address decoder (binary and text); decoded input must re-encode and
 * decode to the same struct. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/address.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct warp_node_addr a, b;
	uint8_t bin[WARP_ADDR_MAX_BIN];
	char text[2048];

	if (warp_addr_decode(data, size, &a) == 0) {
		int n = warp_addr_encode(&a, bin, sizeof(bin));

		if (n < 0 || warp_addr_decode(bin, (size_t)n, &b) != 0 || memcmp(&a, &b, sizeof(a)))
			abort();
	}
	if (size < sizeof(text)) {
		memcpy(text, data, size);
		text[size] = '\0';
		warp_addr_from_text(text, &a);
	}
	return 0;
}
