// SPDX-License-Identifier: MIT
/* Fuzz target: JSON config loader and server text forms. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/config.h>
#include <warpgate/log.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const kinds[] = { "stun", "turn", "mqtt", "nameserver", "ntp",
					     "interface" };
	struct warp_conf c;
	char err[256], *text = malloc(size + 1);

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	warp_conf_init(&c);
	if (warp_conf_load_string(&c, text, "fuzz", err, sizeof(err)) == 0) {
		char *js = warp_conf_to_json(&c);

		free(js);
	}
	warp_conf_init(&c);
	if (size)
		warp_conf_add(&c, kinds[data[0] % 6], text + 1, err, sizeof(err));
	free(text);
	return 0;
}
