// SPDX-License-Identifier: MIT
/* Node address codec: round trips (property style), text form, every malformed variant. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/address.h>
#include <warpgate/error.h>
#include <warpgate/identity.h>

#include "core/bytes.h"
#include "core/util.h"

static struct warp_identity *ident;

static int setup(void **state)
{
	ident = warp_identity_generate();
	return ident ? 0 : -1;
}

static int teardown(void **state)
{
	warp_identity_free(ident);
	return 0;
}

static uint64_t rng = 42;

static uint32_t rnd(void)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(rng >> 33);
}

static void random_addr(struct warp_node_addr *a)
{
	memset(a, 0, sizeof(*a));
	memcpy(a->pubkey, warp_identity_pubkey(ident), WARP_PUBKEY_LEN);
	a->has_machine = rnd() & 1;
	for (int i = 0; a->has_machine && i < WARP_MACHINE_HASH_LEN; i++)
		a->machine[i] = (uint8_t)rnd();
	a->created_ms = rnd() & 1 ? 1700000000000ull + rnd() : 0;
	a->nroutes = rnd() % (WARP_ADDR_MAX_ROUTES + 1);
	for (size_t i = 0; i < a->nroutes; i++) {
		struct warp_addr_route *r = &a->routes[i];

		r->family = rnd() & 1 ? 4 : 6;
		r->if_id = (uint8_t)rnd();
		for (int k = 0; k < (r->family == 4 ? 4 : 16); k++)
			r->nic_addr[k] = (uint8_t)rnd();
		r->prefix_len = (uint8_t)(rnd() % (r->family == 4 ? 33 : 129));
		r->has_ext = rnd() & 1;
		for (int k = 0; r->has_ext && k < (r->family == 4 ? 4 : 16); k++)
			r->ext_addr[k] = (uint8_t)rnd();
		r->tcp_port = (uint16_t)rnd();
		r->udp_port = (uint16_t)(rnd() | 1);
		r->ext_tcp_port = rnd() & 1 ? (uint16_t)rnd() : 0;
		r->ext_udp_port = rnd() & 1 ? (uint16_t)rnd() : 0;
		r->nat = (uint8_t)(rnd() % (WARP_ADDR_NAT_MAX + 1));
		r->mapping = (uint8_t)(rnd() % (WARP_ADDR_BEH_MAX + 1));
		r->filtering = (uint8_t)(rnd() % (WARP_ADDR_BEH_MAX + 1));
		r->delta_type = (uint8_t)(rnd() % (WARP_ADDR_DELTA_MAX + 1));
		r->delta_value = (int32_t)(rnd() % 131071) - 65535;
		r->flags = (uint8_t)(rnd() & 0x1f);
	}
	a->nhints = rnd() % (WARP_ADDR_MAX_HINTS + 1);
	for (size_t i = 0; i < a->nhints; i++) {
		a->hints[i].kind = (uint8_t)(1 + rnd() % WARP_HINT_MAX);
		snprintf(a->hints[i].text, sizeof(a->hints[i].text), "198.18.%u.%u:%u", rnd() % 256,
			 rnd() % 256, 1 + rnd() % 65535);
	}
}

static void test_roundtrip_property(void **state)
{
	for (int it = 0; it < 500; it++) {
		struct warp_node_addr a, b;
		uint8_t bin[WARP_ADDR_MAX_BIN], bin2[WARP_ADDR_MAX_BIN];
		char text[2048];
		int n, n2;

		random_addr(&a);
		n = warp_addr_encode(&a, bin, sizeof(bin));
		assert_true(n > 0);
		assert_int_equal(warp_addr_decode(bin, (size_t)n, &b), 0);
		assert_memory_equal(&a, &b, sizeof(a));
		/* Canonical: re-encoding gives the same bytes. */
		n2 = warp_addr_encode(&b, bin2, sizeof(bin2));
		assert_int_equal(n, n2);
		assert_memory_equal(bin, bin2, (size_t)n);
		assert_int_equal(warp_addr_to_text(&a, text, sizeof(text)), 0);
		assert_int_equal(strncmp(text, "wg1.", 4), 0);
		assert_int_equal(warp_addr_from_text(text, &b), 0);
		assert_memory_equal(&a, &b, sizeof(a));
	}
}

static int encode_one(uint8_t *bin, size_t cap)
{
	struct warp_node_addr a = { 0 };

	memcpy(a.pubkey, warp_identity_pubkey(ident), WARP_PUBKEY_LEN);
	a.nroutes = 1;
	a.routes[0].family = 4;
	inet_pton(AF_INET, "198.18.0.7", a.routes[0].nic_addr);
	a.routes[0].udp_port = 4000;
	return warp_addr_encode(&a, bin, cap);
}

static void test_unknown_tlvs_skipped(void **state)
{
	uint8_t bin[256], ext[300];
	struct warp_node_addr a;
	int n = encode_one(bin, sizeof(bin));

	/* A future top-level TLV appended, and one inserted inside the route. */
	memcpy(ext, bin, (size_t)n);
	memcpy(ext + n, "\x7e\x00\x03xyz", 6);
	assert_int_equal(warp_addr_decode(ext, (size_t)n + 6, &a), 0);
	assert_int_equal(a.nroutes, 1);
	assert_int_equal(a.routes[0].udp_port, 4000);
}

struct bad_case {
	const char *what;
	int expect;
};

static void expect_decode(const uint8_t *b, size_t n, int expect, const char *what)
{
	struct warp_node_addr a;
	int err = warp_addr_decode(b, n, &a);

	if (err != expect)
		fail_msg("%s: got %d (%s), want %d (%s)", what, err, warp_strerror(err), expect,
			 warp_strerror(expect));
}

static void test_malformed(void **state)
{
	uint8_t bin[256], b[300];
	int n = encode_one(bin, sizeof(bin));
	size_t route_off;

	assert_true(n > 0);
	expect_decode(bin, 0, -WARP_ETRUNCATED, "empty");
	expect_decode(bin, 1, -WARP_ETRUNCATED, "magic only");
	memcpy(b, bin, (size_t)n);
	b[0] = 'X';
	expect_decode(b, (size_t)n, -WARP_EMALFORMED, "bad magic");
	memcpy(b, bin, (size_t)n);
	b[1] = 2;
	expect_decode(b, (size_t)n, -WARP_EVERSION, "future version");
	/* Every strict prefix that cuts a TLV is truncated (prefixes at TLV boundaries may be
	 * complete but then miss the pubkey or the route's required fields). */
	for (int cut = 2; cut < n; cut++) {
		struct warp_node_addr a;
		int err = warp_addr_decode(bin, (size_t)cut, &a);

		if (cut == 2 + 3 + WARP_PUBKEY_LEN)
			assert_int_equal(err, 0); /* ends after the pubkey: valid, no routes */
		else
			assert_true(err == -WARP_ETRUNCATED || err == -WARP_EMISSING);
	}
	/* Missing pubkey: only the header. */
	expect_decode(bin, 2, -WARP_EMISSING, "no pubkey");
	/* Duplicate pubkey. */
	memcpy(b, bin, 38);
	memcpy(b + 38, bin + 2, 36);
	expect_decode(b, 74, -WARP_EDUPLICATE, "duplicate pubkey");
	/* Pubkey not on the curve. */
	memcpy(b, bin, (size_t)n);
	b[5] = 0x04;
	expect_decode(b, (size_t)n, -WARP_EMALFORMED, "pubkey prefix");
	/* Wrong pubkey length. */
	memcpy(b, bin, (size_t)n);
	b[4] = 32;
	expect_decode(b, (size_t)n, -WARP_EMALFORMED, "pubkey length");
	/* Trailing garbage shorter than a TLV header. */
	memcpy(b, bin, (size_t)n);
	b[n] = 0x01;
	expect_decode(b, (size_t)n + 1, -WARP_ETRUNCATED, "trailing byte");
	/* Route body: family first (type 1 len 1 value 4). */
	route_off = 2 + 3 + WARP_PUBKEY_LEN + 3;
	assert_int_equal(bin[route_off - 3], 4);
	memcpy(b, bin, (size_t)n);
	b[route_off + 3] = 5;
	expect_decode(b, (size_t)n, -WARP_ERANGE, "family 5");
	memcpy(b, bin, (size_t)n);
	b[route_off + 3] = 6; /* family 6 with a 4-byte address */
	expect_decode(b, (size_t)n, -WARP_EMALFORMED, "family/address mismatch");
	/* Route with family twice. */
	{
		size_t rlen = warp_get_u16(bin + route_off - 2);

		memcpy(b, bin, route_off);
		memcpy(b + route_off, bin + route_off, 4);
		memcpy(b + route_off + 4, bin + route_off, rlen);
		warp_put_u16(b + route_off - 2, (uint16_t)(rlen + 4));
		expect_decode(b, route_off + rlen + 4, -WARP_EDUPLICATE, "duplicate family");
	}
	/* Too many routes. */
	{
		size_t rlen = warp_get_u16(bin + route_off - 2) + 3, off = route_off - 3;

		memcpy(b, bin, off);
		for (int i = 0; i <= WARP_ADDR_MAX_ROUTES && off + rlen < sizeof(b); i++) {
			memcpy(b + off, bin + route_off - 3, rlen);
			off += rlen;
		}
		if (off + rlen >= sizeof(b)) {
			uint8_t big[2048];

			memcpy(big, bin, route_off - 3);
			off = route_off - 3;
			for (int i = 0; i <= WARP_ADDR_MAX_ROUTES; i++) {
				memcpy(big + off, bin + route_off - 3, rlen);
				off += rlen;
			}
			expect_decode(big, off, -WARP_ERANGE, "too many routes");
		} else {
			expect_decode(b, off, -WARP_ERANGE, "too many routes");
		}
	}
}

static void test_semantic_errors(void **state)
{
	struct warp_node_addr a = { 0 };
	uint8_t bin[512];

	memcpy(a.pubkey, warp_identity_pubkey(ident), WARP_PUBKEY_LEN);
	a.nroutes = 1;
	a.routes[0].family = 4;
	assert_int_equal(warp_addr_encode(&a, bin, sizeof(bin)), -WARP_ERANGE); /* no ports */
	a.routes[0].tcp_port = 1;
	a.routes[0].prefix_len = 33;
	assert_int_equal(warp_addr_encode(&a, bin, sizeof(bin)), -WARP_ERANGE);
	a.routes[0].prefix_len = 24;
	a.routes[0].delta_value = 70000;
	assert_int_equal(warp_addr_encode(&a, bin, sizeof(bin)), -WARP_ERANGE);
	a.routes[0].delta_value = -3;
	assert_true(warp_addr_encode(&a, bin, sizeof(bin)) > 0);
	assert_int_equal(warp_addr_encode(&a, bin, 20), -EMSGSIZE);
	a.nhints = 1;
	a.hints[0].kind = 9;
	strcpy(a.hints[0].text, "x:1");
	assert_int_equal(warp_addr_encode(&a, bin, sizeof(bin)), -WARP_ERANGE);
}

static void test_text_errors(void **state)
{
	struct warp_node_addr a;
	uint8_t bin[256];
	char text[512];
	int n = encode_one(bin, sizeof(bin));

	assert_int_equal(warp_addr_from_text("", &a), -WARP_EMALFORMED);
	assert_int_equal(warp_addr_from_text("wg2.AAAA", &a), -WARP_EMALFORMED);
	assert_int_equal(warp_addr_from_text("wg1.@@@@", &a), -WARP_EMALFORMED);
	assert_int_equal(warp_addr_from_text("wg1.A", &a), -WARP_EMALFORMED);
	assert_int_equal(warp_addr_from_text("wg1.AAA=", &a), -WARP_EMALFORMED);
	strcpy(text, "wg1.");
	warp_b64url_encode(text + 4, bin, (size_t)n);
	assert_int_equal(warp_addr_from_text(text, &a), 0);
	text[strlen(text) - 1] ^= 1; /* non-canonical trailing bits or changed byte */
	assert_true(warp_addr_from_text(text, &a) < 0);
}

static void test_json(void **state)
{
	struct warp_node_addr a;
	char *js;

	random_addr(&a);
	a.nroutes = 1;
	a.routes[0].family = 4;
	a.routes[0].nat = WARP_ADDR_NAT_PORT_RESTRICTED;
	js = warp_addr_to_json(&a, false);
	assert_non_null(js);
	assert_non_null(strstr(js, "\"port-restricted\""));
	assert_non_null(strstr(js, "\"pubkey\""));
	free(js);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_property),
		cmocka_unit_test(test_unknown_tlvs_skipped),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_semantic_errors),
		cmocka_unit_test(test_text_errors),
		cmocka_unit_test(test_json),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
