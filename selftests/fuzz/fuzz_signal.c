// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the signalling codec.  The first byte picks the entry point:
 *   0: inner message parser (plaintext, signature not checked), then a write/parse round trip
 *   1: body TLV decoder, then an encode/decode round trip
 *   2: full payload decoder (outer header, sealed box, ...) for a fixed identity; the
 *      recipient tag is patched in so inputs get past the cheap "not for us" check
 *   3: broker address parser, then a format/parse round trip
 * A round trip that does not reproduce the decoded value aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/identity.h>

#include "signal/broker.h"
#include "signal/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct warp_identity *me;

static void fuzz_inner(const uint8_t *p, size_t len)
{
	static struct warp_sig_msg m, m2;
	static uint8_t buf[WARP_SIG_MAX_PAYLOAD * 2];
	size_t signed_len, signed_len2;
	int n;

	if (warp_sig_parse_inner(p, len, &m, &signed_len))
		return;
	n = warp_sig_write_inner(&m, buf, sizeof(buf) - WARP_SIG_LEN);
	if (n < 0)
		abort();
	memset(buf + n, 0, WARP_SIG_LEN);
	if (warp_sig_parse_inner(buf, (size_t)n + WARP_SIG_LEN, &m2, &signed_len2))
		abort();
	if (memcmp(&m, &m2, sizeof(m)) || signed_len2 != (size_t)n)
		abort();
}

static void fuzz_body(const uint8_t *p, size_t len)
{
	static struct warp_sig_body b, b2;
	static uint8_t buf[WARP_SIG_MAX_PAYLOAD * 2];
	int n;

	if (warp_sig_body_decode(p, len, &b))
		return;
	n = warp_sig_body_encode(&b, buf, sizeof(buf));
	if (n < 0 || warp_sig_body_decode(buf, (size_t)n, &b2) || memcmp(&b, &b2, sizeof(b)))
		abort();
}

static void fuzz_payload(const uint8_t *p, size_t len)
{
	static struct warp_sig_msg m;
	static uint8_t buf[WARP_SIG_MAX_PAYLOAD + 64];

	if (len > sizeof(buf))
		len = sizeof(buf);
	memcpy(buf, p, len);
	if (len >= WARP_SIG_OUTER_HDR)
		warp_sig_recipient_tag(warp_identity_pubkey(me), buf + 2);
	warp_sig_decode(me, buf, len, 1700000000000ull, WARP_SIG_SKEW_MS, &m);
}

static void fuzz_addr(const uint8_t *p, size_t len)
{
	struct warp_broker_addr a, b;
	char s[512], f[512];

	if (len >= sizeof(s))
		len = sizeof(s) - 1;
	memcpy(s, p, len);
	s[len] = '\0';
	if (warp_broker_addr_parse(s, &a))
		return;
	if (warp_broker_addr_format(&a, f, sizeof(f)) || warp_broker_addr_parse(f, &b) ||
	    !warp_broker_addr_equal(&a, &b) || strcmp(a.host, b.host))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!me) {
		uint8_t sk[WARP_SECKEY_LEN];

		memset(sk, 0x42, sizeof(sk));
		me = warp_identity_from_secret(sk);
		if (!me)
			abort();
	}
	if (size < 1)
		return 0;
	switch (data[0] & 3) {
	case 0:
		fuzz_inner(data + 1, size - 1);
		break;
	case 1:
		fuzz_body(data + 1, size - 1);
		break;
	case 2:
		fuzz_payload(data + 1, size - 1);
		break;
	case 3:
		fuzz_addr(data + 1, size - 1);
		break;
	}
	return 0;
}
