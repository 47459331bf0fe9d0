// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the nickname packet parsers: every byte string is tried as a request (what
 * namebumpd parses from strangers), a reply with its authenticator, a local-link query and
 * answer, and a sealed reply; a request that parses must re-encode to a packet that parses to
 * the same request.
 */
#include <stdint.h>
#include <string.h>

#include "name/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct wn_request req, again;
	static struct wn_reply rep;
	static struct wn_record rec;
	static uint8_t buf[WN_MAX_PACKET];
	struct wn_auth auth;
	char name[WARP_NAME_FQ_MAX + 1];
	uint8_t status, key[WN_SEAL_KEY] = { 0 };
	uint64_t id;
	size_t body;

	if (size > 4 * WN_MAX_PACKET)
		return 0;
	if (wn_request_decode(data, size, &req, &status) == 0) {
		int n = wn_request_encode(&req, buf, sizeof(buf), 0);

		if (n > 0 && wn_request_decode(buf, (size_t)n, &again, &status) == 0) {
			if (again.type != req.type || strcmp(again.name, req.name))
				__builtin_trap();
		}
	}
	if (wn_reply_decode(data, size, &rep, &body, &auth) == 0 && body > size)
		__builtin_trap();
	wn_lquery_decode(data, size, &id, name);
	/* answers check signatures: only the framing is of interest, keep it cheap */
	if (size < 200)
		wn_lanswer_decode(data, size, &id, &rec);
	wn_open_reply(key, data, size, buf, sizeof(buf));
	wn_name_check((const char *)data, size);
	return 0;
}
