// SPDX-License-Identifier: MIT
/* STUN/TURN codec: RFC 5769 test vectors, round trips of every attribute, malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "nat/sockaddr.h"
#include "nat/stun.h"

static size_t unhex(uint8_t *out, size_t cap, const char *s)
{
	size_t n = 0;
	int hi = -1;

	for (; *s; s++) {
		int v;

		if (*s >= '0' && *s <= '9')
			v = *s - '0';
		else if (*s >= 'a' && *s <= 'f')
			v = *s - 'a' + 10;
		else
			continue;
		if (hi < 0) {
			hi = v;
		} else {
			assert_true(n < cap);
			out[n++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	return n;
}

/* RFC 5769 ("Test Vectors for STUN", IETF, 2010) sections 2.1 to 2.4. */
static const char rfc5769_request[] =
	"00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae"
	"80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74"
	"00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36"
	"00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20"
	"00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2"
	"80 28 00 04 e5 7a 3b cf";
static const char rfc5769_v4[] =
	"01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae"
	"80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20"
	"00 20 00 08 00 01 a1 47 e1 12 a6 43"
	"00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7"
	"80 28 00 04 c0 7d 4c 96";
static const char rfc5769_v6[] =
	"01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae"
	"80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20"
	"00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9"
	"00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41"
	"80 28 00 04 c8 fb 0b 4c";
static const char rfc5769_long_term[] =
	"00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e"
	"00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00"
	"00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 "
	"73 41"
	"00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00"
	"00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";
static const char short_term_pw[] = "VOkJxbRl1RmTxUk/WvJxBt";

static void test_rfc5769_request(void **state)
{
	uint8_t buf[256], tid[12];
	size_t len = unhex(buf, sizeof(buf), rfc5769_request);
	struct warp_stun_msg m;
	const uint8_t *v;
	size_t vlen;
	uint32_t prio;

	assert_int_equal(warp_stun_decode(&m, buf, len), 0);
	assert_true(warp_stun_is_message(buf, len));
	assert_int_equal(m.method, WARP_STUN_BINDING);
	assert_int_equal(m.cls, WARP_STUN_REQUEST);
	unhex(tid, sizeof(tid), "b7 e7 a7 01 bc 34 d6 86 fa 87 df ae");
	assert_memory_equal(m.tid, tid, 12);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_SOFTWARE, &v, &vlen), 0);
	assert_int_equal(vlen, 16);
	assert_memory_equal(v, "STUN test client", 16);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_USERNAME, &v, &vlen), 0);
	assert_int_equal(vlen, 9);
	assert_memory_equal(v, "evtj:h6vY", 9);
	assert_int_equal(warp_stun_get_u32(&m, WARP_STUN_ATTR_PRIORITY, &prio), 0);
	assert_int_equal(prio, 0x6e0001ff);
	assert_int_equal(m.n_unknown, 0);
	assert_true(m.fp_off > 0 && m.mi_off > 0);
	assert_int_equal(warp_stun_check_integrity(&m, short_term_pw, strlen(short_term_pw)), 0);
	assert_int_equal(warp_stun_check_integrity(&m, "wrong", 5), -WARP_EAUTH);
	assert_int_equal(warp_stun_check_mi256(&m, short_term_pw, strlen(short_term_pw)),
			 -WARP_EMISSING);
}

static void test_rfc5769_responses(void **state)
{
	uint8_t buf[256];
	struct warp_stun_msg m;
	struct sockaddr_storage ss, want;
	size_t len;

	len = unhex(buf, sizeof(buf), rfc5769_v4);
	assert_int_equal(warp_stun_decode(&m, buf, len), 0);
	assert_int_equal(m.cls, WARP_STUN_SUCCESS);
	assert_int_equal(warp_stun_get_mapped(&m, &ss), 0);
	assert_int_equal(nat_sa_parse("192.0.2.1:32853", 0, &want), 0);
	assert_true(nat_sa_equal((struct sockaddr *)&ss, (struct sockaddr *)&want));
	assert_int_equal(warp_stun_check_integrity(&m, short_term_pw, strlen(short_term_pw)), 0);

	len = unhex(buf, sizeof(buf), rfc5769_v6);
	assert_int_equal(warp_stun_decode(&m, buf, len), 0);
	assert_int_equal(warp_stun_get_addr(&m, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, &ss), 0);
	assert_int_equal(nat_sa_parse("[2001:db8:1234:5678:11:2233:4455:6677]:32853", 0, &want), 0);
	assert_true(nat_sa_equal((struct sockaddr *)&ss, (struct sockaddr *)&want));
	assert_int_equal(warp_stun_check_integrity(&m, short_term_pw, strlen(short_term_pw)), 0);

	/* re-encoding the same address gives the same bytes */
	{
		uint8_t out[128];
		struct warp_stun_builder b;
		struct warp_stun_msg m2;

		warp_stun_build_init(&b, out, sizeof(out), WARP_STUN_BINDING, WARP_STUN_SUCCESS,
				     m.tid);
		warp_stun_add_str(&b, WARP_STUN_ATTR_SOFTWARE, "test vector");
		warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, (struct sockaddr *)&want);
		warp_stun_add_mi(&b, short_term_pw, strlen(short_term_pw));
		warp_stun_add_fingerprint(&b);
		assert_int_equal(warp_stun_build_end(&b), (int)len);
		/* only the padding of SOFTWARE differs (the RFC pads with spaces) */
		assert_int_equal(warp_stun_decode(&m2, out, len), 0);
		assert_memory_equal(out + 36, buf + 36, 24); /* XOR-MAPPED-ADDRESS */
	}
}

static void test_rfc5769_long_term(void **state)
{
	uint8_t buf[256], key[32], out[256];
	size_t len = unhex(buf, sizeof(buf), rfc5769_long_term);
	struct warp_stun_msg m;
	struct warp_stun_builder b;
	/* "マトリックス" in UTF-8 */
	const char user[] =
		"\xe3\x83\x9e\xe3\x83\x88\xe3\x83\xaa\xe3\x83\x83\xe3\x82\xaf\xe3\x82\xb9";
	const char nonce[] = "f//499k954d6OL34oL9FSTvy64sA";
	int klen;

	assert_int_equal(warp_stun_decode(&m, buf, len), 0);
	assert_int_equal(m.fp_off, 0);
	klen = warp_stun_long_term_key(user, "example.org", "TheMatrIX", WARP_STUN_PW_MD5, key);
	assert_int_equal(klen, 16);
	assert_int_equal(warp_stun_check_mi(&m, key, (size_t)klen), 0);
	key[0] ^= 1;
	assert_int_equal(warp_stun_check_mi(&m, key, (size_t)klen), -WARP_EAUTH);
	key[0] ^= 1;

	/* byte-exact re-encoding */
	warp_stun_build_init(&b, out, sizeof(out), WARP_STUN_BINDING, WARP_STUN_REQUEST, m.tid);
	warp_stun_add_str(&b, WARP_STUN_ATTR_USERNAME, user);
	warp_stun_add_str(&b, WARP_STUN_ATTR_NONCE, nonce);
	warp_stun_add_str(&b, WARP_STUN_ATTR_REALM, "example.org");
	warp_stun_add_mi(&b, key, (size_t)klen);
	assert_int_equal(warp_stun_build_end(&b), (int)len);
	assert_memory_equal(out, buf, len);

	assert_int_equal(
		warp_stun_long_term_key(user, "example.org", "TheMatrIX", WARP_STUN_PW_SHA256, key),
		32);
	assert_int_equal(warp_stun_long_term_key(user, "r", "p", 9, key), -EINVAL);
}

static void test_type_bits(void **state)
{
	static const struct {
		uint16_t method;
		enum warp_stun_class cls;
		uint16_t type;
	} cases[] = {
		{ WARP_STUN_BINDING, WARP_STUN_REQUEST, 0x0001 },
		{ WARP_STUN_BINDING, WARP_STUN_SUCCESS, 0x0101 },
		{ WARP_STUN_BINDING, WARP_STUN_ERROR, 0x0111 },
		{ WARP_STUN_ALLOCATE, WARP_STUN_SUCCESS, 0x0103 },
		{ WARP_STUN_ALLOCATE, WARP_STUN_ERROR, 0x0113 },
		{ WARP_STUN_SEND, WARP_STUN_INDICATION, 0x0016 },
		{ WARP_STUN_DATA, WARP_STUN_INDICATION, 0x0017 },
		{ WARP_STUN_CHANNEL_BIND, WARP_STUN_REQUEST, 0x0009 },
		{ 0xfff, WARP_STUN_ERROR, 0x3fff },
	};
	uint8_t tid[12] = { 1 }, buf[64];

	for (size_t i = 0; i < WARP_ARRAY_SIZE(cases); i++) {
		struct warp_stun_builder b;
		struct warp_stun_msg m;

		assert_int_equal(warp_stun_build_init(&b, buf, sizeof(buf), cases[i].method,
						      cases[i].cls, tid),
				 0);
		assert_int_equal(warp_stun_build_end(&b), 20);
		assert_int_equal(warp_get_u16(buf), cases[i].type);
		assert_int_equal(warp_stun_decode(&m, buf, 20), 0);
		assert_int_equal(m.method, cases[i].method);
		assert_int_equal(m.cls, cases[i].cls);
	}
	{
		struct warp_stun_builder b;

		assert_int_equal(warp_stun_build_init(&b, buf, sizeof(buf), 0x1000, 0, tid),
				 -EINVAL);
		assert_int_equal(warp_stun_build_init(&b, buf, 10, 1, 0, tid), -EMSGSIZE);
	}
}

static void test_round_trip_all(void **state)
{
	uint8_t buf[1024], tid[12];
	struct warp_stun_builder b;
	struct warp_stun_msg m;
	struct sockaddr_storage a4, a6, peer, got;
	const uint16_t unk[] = { 0x0002, 0x7777 };
	uint16_t types[4], ch, port;
	uint8_t proto;
	uint32_t v;
	const char *reason;
	size_t rlen;
	const uint8_t *data;
	size_t dlen;
	int code, n;

	for (int i = 0; i < 12; i++)
		tid[i] = (uint8_t)(0xa0 + i);
	nat_sa_parse("203.0.113.9:40000", 0, &a4);
	nat_sa_parse("[2001:db8::77]:3479", 0, &a6);
	nat_sa_parse("198.51.100.3:65535", 0, &peer);
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_ALLOCATE, WARP_STUN_ERROR, tid);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, (struct sockaddr *)&a4);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_MAPPED_ADDRESS, (struct sockaddr *)&a6);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_RELAYED_ADDRESS, (struct sockaddr *)&a6);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_PEER_ADDRESS, (struct sockaddr *)&peer);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_PEER_ADDRESS, (struct sockaddr *)&a4);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_OTHER_ADDRESS, (struct sockaddr *)&peer);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_RESPONSE_ORIGIN, (struct sockaddr *)&a4);
	warp_stun_add_error(&b, 438, "Stale Nonce");
	warp_stun_add_unknown_attrs(&b, unk, 2);
	warp_stun_add_str(&b, WARP_STUN_ATTR_SOFTWARE, "warpgate test");
	warp_stun_add_str(&b, WARP_STUN_ATTR_REALM, "example.org");
	warp_stun_add_str(&b, WARP_STUN_ATTR_NONCE, "abcdef");
	warp_stun_add_str(&b, WARP_STUN_ATTR_USERNAME, "user");
	warp_stun_add_change_request(&b, WARP_STUN_CHANGE_IP | WARP_STUN_CHANGE_PORT | 0x100);
	warp_stun_add_response_port(&b, 5555);
	warp_stun_add_padding(&b, 5);
	warp_stun_add_u32(&b, WARP_STUN_ATTR_LIFETIME, 600);
	warp_stun_add_requested_transport(&b, 17);
	warp_stun_add(&b, WARP_STUN_ATTR_DATA, "hello", 5);
	warp_stun_add_channel(&b, 0x4001);
	warp_stun_add_mi(&b, "key", 3);
	warp_stun_add_mi256(&b, "key", 3);
	warp_stun_add_fingerprint(&b);
	n = warp_stun_build_end(&b);
	assert_true(n > 0);
	assert_int_equal(n % 4, 0);
	assert_true(warp_stun_is_message(buf, (size_t)n));
	assert_int_equal(warp_stun_frame_len(buf, (size_t)n), n);

	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), 0);
	assert_int_equal(m.method, WARP_STUN_ALLOCATE);
	assert_int_equal(m.cls, WARP_STUN_ERROR);
	assert_int_equal(warp_stun_get_addr(&m, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, &got), 0);
	assert_true(nat_sa_equal((struct sockaddr *)&got, (struct sockaddr *)&a4));
	assert_int_equal(warp_stun_get_addr(&m, WARP_STUN_ATTR_MAPPED_ADDRESS, &got), 0);
	assert_true(nat_sa_equal((struct sockaddr *)&got, (struct sockaddr *)&a6));
	assert_int_equal(warp_stun_get_mapped(&m, &got), 0);
	assert_true(nat_sa_equal((struct sockaddr *)&got, (struct sockaddr *)&a4));
	assert_int_equal(warp_stun_get_addr(&m, WARP_STUN_ATTR_XOR_RELAYED_ADDRESS, &got), 0);
	assert_true(nat_sa_equal((struct sockaddr *)&got, (struct sockaddr *)&a6));
	assert_int_equal(warp_stun_get_addr(&m, WARP_STUN_ATTR_OTHER_ADDRESS, &got), 0);
	assert_true(nat_sa_equal((struct sockaddr *)&got, (struct sockaddr *)&peer));
	assert_int_equal(warp_stun_get_addr(&m, WARP_STUN_ATTR_RESPONSE_ORIGIN, &got), 0);
	assert_true(nat_sa_equal((struct sockaddr *)&got, (struct sockaddr *)&a4));
	/* both XOR-PEER-ADDRESS instances are kept */
	{
		int peers = 0;

		for (unsigned int i = 0; i < m.nattrs; i++) {
			if (m.attrs[i].type != WARP_STUN_ATTR_XOR_PEER_ADDRESS)
				continue;
			assert_int_equal(warp_stun_attr_addr(&m, &m.attrs[i], &got), 0);
			assert_true(nat_sa_equal((struct sockaddr *)&got,
						 (struct sockaddr *)(peers ? &a4 : &peer)));
			peers++;
		}
		assert_int_equal(peers, 2);
	}
	assert_int_equal(warp_stun_get_error(&m, &code, &reason, &rlen), 0);
	assert_int_equal(code, 438);
	assert_int_equal(rlen, 11);
	assert_memory_equal(reason, "Stale Nonce", 11);
	assert_int_equal(warp_stun_get_unknown_attrs(&m, types, 4), 2);
	assert_int_equal(types[0], 0x0002);
	assert_int_equal(types[1], 0x7777);
	assert_int_equal(warp_stun_get_u32(&m, WARP_STUN_ATTR_CHANGE_REQUEST, &v), 0);
	assert_int_equal(v, WARP_STUN_CHANGE_IP | WARP_STUN_CHANGE_PORT);
	assert_int_equal(warp_stun_get_response_port(&m, &port), 0);
	assert_int_equal(port, 5555);
	assert_int_equal(warp_stun_get_u32(&m, WARP_STUN_ATTR_LIFETIME, &v), 0);
	assert_int_equal(v, 600);
	assert_int_equal(warp_stun_get_requested_transport(&m, &proto), 0);
	assert_int_equal(proto, 17);
	assert_int_equal(warp_stun_get_channel(&m, &ch), 0);
	assert_int_equal(ch, 0x4001);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_DATA, &data, &dlen), 0);
	assert_int_equal(dlen, 5);
	assert_memory_equal(data, "hello", 5);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_PADDING, &data, &dlen), 0);
	assert_int_equal(dlen, 5);
	assert_int_equal(m.n_unknown, 0);
	assert_int_equal(warp_stun_check_mi(&m, "key", 3), 0);
	assert_int_equal(warp_stun_check_mi256(&m, "key", 3), 0);
	assert_int_equal(warp_stun_check_integrity(&m, "key", 3), 0);
	assert_int_equal(warp_stun_check_integrity(&m, "kez", 3), -WARP_EAUTH);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_USERHASH, &data, &dlen),
			 -WARP_EMISSING);
	assert_string_equal(warp_stun_attr_name(WARP_STUN_ATTR_OTHER_ADDRESS), "OTHER-ADDRESS");
	assert_string_equal(warp_stun_method_name(WARP_STUN_ALLOCATE), "Allocate");
	assert_string_equal(warp_stun_class_name(WARP_STUN_ERROR), "error");

	/* flipping any byte covered by the MAC breaks integrity or the fingerprint */
	for (int i = 20; i < n - 8; i += 7) {
		buf[i] ^= 0x10;
		if (warp_stun_decode(&m, buf, (size_t)n) == 0)
			assert_int_equal(warp_stun_check_integrity(&m, "key", 3), -WARP_EAUTH);
		buf[i] ^= 0x10;
	}
}

static int build_simple(uint8_t *buf, size_t cap, bool fp)
{
	struct warp_stun_builder b;
	uint8_t tid[12] = { 9, 8, 7 };

	warp_stun_build_init(&b, buf, cap, WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	warp_stun_add_str(&b, WARP_STUN_ATTR_SOFTWARE, "abc");
	if (fp)
		warp_stun_add_fingerprint(&b);
	return warp_stun_build_end(&b);
}

static void test_malformed(void **state)
{
	uint8_t buf[256], bad[256];
	struct warp_stun_msg m;
	int n = build_simple(buf, sizeof(buf), true);

	assert_int_equal(n, 20 + 8 + 8);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), 0);
	assert_int_equal(warp_stun_decode(&m, buf, 19), -WARP_ETRUNCATED);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n - 4), -WARP_ETRUNCATED);
	assert_int_equal(warp_stun_decode(&m, NULL, 0), -WARP_ETRUNCATED);
	memcpy(bad, buf, (size_t)n);
	bad[n] = 0;
	assert_int_equal(warp_stun_decode(&m, bad, (size_t)n + 1), -WARP_ETRAILING);
	assert_false(warp_stun_is_message(bad, (size_t)n + 1));

	memcpy(bad, buf, (size_t)n);
	bad[0] |= 0x80; /* top bits must be zero */
	assert_int_equal(warp_stun_decode(&m, bad, (size_t)n), -WARP_EMALFORMED);
	memcpy(bad, buf, (size_t)n);
	bad[4] ^= 1; /* magic cookie */
	assert_int_equal(warp_stun_decode(&m, bad, (size_t)n), -WARP_EVERSION);
	memcpy(bad, buf, (size_t)n);
	warp_put_u16(bad + 2, (uint16_t)(n - 20 - 2)); /* not a multiple of 4 */
	assert_int_equal(warp_stun_decode(&m, bad, (size_t)n), -WARP_EMALFORMED);
	memcpy(bad, buf, (size_t)n);
	warp_put_u16(bad + 22, 13); /* attribute overruns the message */
	assert_int_equal(warp_stun_decode(&m, bad, (size_t)n), -WARP_ETRUNCATED);
	memcpy(bad, buf, (size_t)n);
	bad[25] ^= 1; /* SOFTWARE content: the fingerprint no longer matches */
	assert_int_equal(warp_stun_decode(&m, bad, (size_t)n), -WARP_EAUTH);

	/* an attribute after FINGERPRINT */
	{
		uint8_t tid[12] = { 0 };
		struct warp_stun_builder b;
		int len;

		warp_stun_build_init(&b, bad, sizeof(bad), WARP_STUN_BINDING, WARP_STUN_REQUEST,
				     tid);
		warp_stun_add_fingerprint(&b);
		len = warp_stun_build_end(&b);
		warp_put_u16(bad + len, WARP_STUN_ATTR_SOFTWARE);
		warp_put_u16(bad + len + 2, 0);
		warp_put_u16(bad + 2, (uint16_t)(len + 4 - 20));
		assert_int_equal(warp_stun_decode(&m, bad, (size_t)len + 4), -WARP_EMALFORMED);
	}
}

/* Hand-built message with one raw attribute. */
static int one_attr(uint8_t *buf, uint16_t type, const void *val, uint16_t len)
{
	size_t padded = (len + 3u) & ~3u;

	memset(buf, 0, 20 + 4 + padded);
	warp_put_u16(buf, 0x0101);
	warp_put_u16(buf + 2, (uint16_t)(4 + padded));
	warp_put_u32(buf + 4, WARP_STUN_MAGIC);
	warp_put_u16(buf + 20, type);
	warp_put_u16(buf + 22, len);
	if (len)
		memcpy(buf + 24, val, len);
	return (int)(24 + padded);
}

static void test_bad_attribute_values(void **state)
{
	static const struct {
		uint16_t type;
		const char *hex;
		int err;
	} cases[] = {
		{ WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, "00 03 00 00 01 02 03 04", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, "00 01 00 00 01 02 03", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_MAPPED_ADDRESS, "00 02 00 00 01 02 03 04", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_OTHER_ADDRESS, "00 01 00 00 01 02 03 04 05", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_ERROR_CODE, "00 00 02 00", -WARP_ERANGE },
		{ WARP_STUN_ATTR_ERROR_CODE, "00 00 04 64", -WARP_ERANGE },
		{ WARP_STUN_ATTR_ERROR_CODE, "00 00 04", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_UNKNOWN_ATTRIBUTES, "00 01 00", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_MESSAGE_INTEGRITY, "00 01 02 03", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256, "00 01 02 03 04 05 06 07",
		  -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_FINGERPRINT, "00 01", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_LIFETIME, "00 01", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_CHANGE_REQUEST, "00 00 00 06 00", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_CHANNEL_NUMBER, "3f ff 00 00", -WARP_ERANGE },
		{ WARP_STUN_ATTR_CHANNEL_NUMBER, "50 00 00 00", -WARP_ERANGE },
		{ WARP_STUN_ATTR_REQUESTED_ADDRESS_FAMILY, "03 00 00 00", -WARP_ERANGE },
		{ WARP_STUN_ATTR_EVEN_PORT, "80 00", -WARP_EMALFORMED },
		{ WARP_STUN_ATTR_RESPONSE_PORT, "12 34", -WARP_EMALFORMED },
	};
	uint8_t buf[1024], val[800];
	struct warp_stun_msg m;
	int n;

	for (size_t i = 0; i < WARP_ARRAY_SIZE(cases); i++) {
		size_t vl = unhex(val, sizeof(val), cases[i].hex);

		n = one_attr(buf, cases[i].type, val, (uint16_t)vl);
		assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), cases[i].err);
	}
	/* overlong text attributes */
	memset(val, 'a', sizeof(val));
	n = one_attr(buf, WARP_STUN_ATTR_REALM, val, 764);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), -WARP_ERANGE);
	n = one_attr(buf, WARP_STUN_ATTR_REALM, val, 763);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), 0);
	n = one_attr(buf, WARP_STUN_ATTR_USERNAME, val, 514);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), -WARP_ERANGE);

	/* unknown comprehension-required attributes are reported, optional ones are not */
	n = one_attr(buf, 0x0002, "abcd", 4);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), 0);
	assert_int_equal(m.n_unknown, 1);
	assert_int_equal(m.unknown[0], 0x0002);
	n = one_attr(buf, 0xc001, "abcd", 4);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), 0);
	assert_int_equal(m.n_unknown, 0);
	assert_int_equal(warp_stun_get_error(&m, NULL, NULL, NULL), -WARP_EMISSING);

	/* too many attributes */
	{
		size_t off = 20;

		memset(buf, 0, sizeof(buf));
		warp_put_u16(buf, 0x0001);
		warp_put_u32(buf + 4, WARP_STUN_MAGIC);
		for (int i = 0; i < WARP_STUN_MAX_ATTRS + 1; i++) {
			warp_put_u16(buf + off, 0x8030);
			warp_put_u16(buf + off + 2, 0);
			off += 4;
		}
		warp_put_u16(buf + 2, (uint16_t)(off - 20));
		assert_int_equal(warp_stun_decode(&m, buf, off), -WARP_ERANGE);
	}
}

static void test_after_integrity(void **state)
{
	uint8_t buf[256], tid[12] = { 5 };
	struct warp_stun_builder b;
	struct warp_stun_msg m;
	const uint8_t *v;
	size_t vl;
	int n;

	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_REFRESH, WARP_STUN_REQUEST, tid);
	warp_stun_add_u32(&b, WARP_STUN_ATTR_LIFETIME, 0);
	warp_stun_add_mi(&b, "k", 1);
	n = warp_stun_build_end(&b);
	/* append DATA after MESSAGE-INTEGRITY: decoded but ignored, integrity still holds */
	warp_put_u16(buf + n, WARP_STUN_ATTR_DATA);
	warp_put_u16(buf + n + 2, 4);
	memcpy(buf + n + 4, "wxyz", 4);
	warp_put_u16(buf + 2, (uint16_t)(n + 8 - 20));
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n + 8), 0);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_DATA, &v, &vl), -WARP_EMISSING);
	assert_int_equal(warp_stun_check_integrity(&m, "k", 1), 0);

	/* builder: nothing but MI-SHA256 / FINGERPRINT after MI, nothing after FINGERPRINT */
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	warp_stun_add_mi(&b, "k", 1);
	warp_stun_add_str(&b, WARP_STUN_ATTR_SOFTWARE, "x");
	assert_int_equal(warp_stun_build_end(&b), -EINVAL);
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	warp_stun_add_fingerprint(&b);
	warp_stun_add_mi(&b, "k", 1);
	assert_int_equal(warp_stun_build_end(&b), -EINVAL);
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	warp_stun_add_mi(&b, "", 0);
	assert_int_equal(warp_stun_build_end(&b), -EINVAL);
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	warp_stun_add_error(&b, 200, "no");
	assert_int_equal(warp_stun_build_end(&b), -EINVAL);
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	warp_stun_add_channel(&b, 0x3fff);
	assert_int_equal(warp_stun_build_end(&b), -EINVAL);
	warp_stun_build_init(&b, buf, 30, WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	warp_stun_add_str(&b, WARP_STUN_ATTR_SOFTWARE, "too long for the buffer");
	assert_int_equal(warp_stun_build_end(&b), -EMSGSIZE);
	/* MI-SHA256 alone, then a short (16-byte) one is accepted by the decoder */
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	warp_stun_add_mi256(&b, "k", 1);
	n = warp_stun_build_end(&b);
	assert_int_equal(n, 20 + 36);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), 0);
	assert_int_equal(warp_stun_check_integrity(&m, "k", 1), 0);
	assert_int_equal(warp_stun_check_mi(&m, "k", 1), -WARP_EMISSING);
}

static void test_channel_data(void **state)
{
	uint8_t buf[64];
	const uint8_t *d;
	size_t dl;
	uint16_t ch;
	int n;

	n = warp_stun_channel_data_encode(buf, sizeof(buf), 0x4001, "hello", 5, false);
	assert_int_equal(n, 9);
	assert_int_equal(warp_stun_frame_len(buf, (size_t)n), 12);
	assert_int_equal(warp_stun_channel_data_decode(buf, (size_t)n, &ch, &d, &dl), 0);
	assert_int_equal(ch, 0x4001);
	assert_int_equal(dl, 5);
	assert_memory_equal(d, "hello", 5);
	n = warp_stun_channel_data_encode(buf, sizeof(buf), 0x4fff, "hello", 5, true);
	assert_int_equal(n, 12);
	assert_int_equal(buf[9] | buf[10] | buf[11], 0);
	assert_int_equal(warp_stun_channel_data_decode(buf, (size_t)n, &ch, &d, &dl), 0);
	assert_int_equal(dl, 5);
	assert_int_equal(warp_stun_channel_data_decode(buf, 8, &ch, &d, &dl), -WARP_ETRUNCATED);
	assert_int_equal(warp_stun_channel_data_decode(buf, 3, &ch, &d, &dl), -WARP_ETRUNCATED);
	memset(buf + 12, 0, 4);
	assert_int_equal(warp_stun_channel_data_decode(buf, 16, &ch, &d, &dl), -WARP_ETRAILING);
	buf[0] = 0x50;
	assert_int_equal(warp_stun_channel_data_decode(buf, 12, &ch, &d, &dl), -WARP_EMALFORMED);
	assert_int_equal(warp_stun_frame_len(buf, 12), -WARP_EMALFORMED);
	assert_int_equal(warp_stun_channel_data_encode(buf, sizeof(buf), 0x3fff, "x", 1, false),
			 -EINVAL);
	assert_int_equal(warp_stun_channel_data_encode(buf, 6, 0x4000, "hello", 5, false),
			 -EMSGSIZE);
	assert_int_equal(warp_stun_channel_data_encode(buf, sizeof(buf), 0x4000, NULL, 0, true), 4);

	/* stream framing */
	assert_int_equal(warp_stun_frame_len(buf, 2), 0);
	buf[0] = 0x80;
	assert_int_equal(warp_stun_frame_len(buf, 4), -WARP_EMALFORMED);
	{
		uint8_t s[8] = { 0, 1, 0, 2, 0x21, 0x12, 0xa4, 0x42 };

		assert_int_equal(warp_stun_frame_len(s, 8), -WARP_EMALFORMED);
		s[3] = 8;
		assert_int_equal(warp_stun_frame_len(s, 8), 28);
		s[7] = 0;
		assert_int_equal(warp_stun_frame_len(s, 8), -WARP_EMALFORMED);
	}
}

static void test_crc32(void **state)
{
	/* the standard check value of CRC-32/ISO-HDLC */
	assert_int_equal(warp_stun_crc32("123456789", 9), 0xcbf43926u);
	assert_int_equal(warp_stun_crc32("", 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc5769_request),
		cmocka_unit_test(test_rfc5769_responses),
		cmocka_unit_test(test_rfc5769_long_term),
		cmocka_unit_test(test_type_bits),
		cmocka_unit_test(test_round_trip_all),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_bad_attribute_values),
		cmocka_unit_test(test_after_integrity),
		cmocka_unit_test(test_channel_data),
		cmocka_unit_test(test_crc32),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
