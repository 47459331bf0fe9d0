// SPDX-License-Identifier: MIT
/*
 * Forwarding frames and the parsers behind `forward` / `expose`: every frame round-trips,
 * every malformed frame is rejected with its specific error, hosts normalise, rules and
 * listen addresses parse (and bad ones do not), and the control protocol's base64 matches
 * RFC 4648's test vectors.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/error.h>

#include "daemon/ctlproto.h"
#include "daemon/fwd.h"
#include "net/endpoint.h"

static void roundtrip(const struct fwd_frame *in)
{
	uint8_t buf[FWD_FRAME_MAX + FWD_HOST_MAX];
	struct fwd_frame out;
	int n = fwd_frame_encode(in, buf, sizeof(buf));

	assert_true(n >= 5);
	assert_int_equal(fwd_frame_decode(buf, (size_t)n, &out), 0);
	assert_int_equal(out.type, in->type);
	assert_int_equal(out.id, in->id);
	assert_int_equal(out.version, in->version);
	assert_int_equal(out.port, in->port);
	assert_string_equal(out.host, in->host);
	assert_int_equal(out.credit, in->credit);
	assert_int_equal(out.code, in->code);
	assert_string_equal(out.reason, in->reason);
	assert_int_equal(out.len, in->len);
	if (in->len)
		assert_memory_equal(out.data, in->data, in->len);
	/* Every shorter prefix is an error, never a different valid frame. */
	for (int cut = 0; cut < n; cut++)
		if (!(in->type == FWD_DATA && cut > 5) && !(in->type == FWD_RESET && cut >= 7))
			assert_true(fwd_frame_decode(buf, (size_t)cut, &out) < 0);
}

static void test_roundtrip(void **state)
{
	static uint8_t data[FWD_DATA_MAX];
	struct fwd_frame f;

	memset(&f, 0, sizeof(f));
	f.type = FWD_HELLO;
	f.version = FWD_VERSION;
	roundtrip(&f);

	memset(&f, 0, sizeof(f));
	f.type = FWD_OPEN;
	f.id = 7;
	f.port = 8080;
	strcpy(f.host, "127.0.0.1");
	roundtrip(&f);
	memset(f.host, 'a', FWD_HOST_MAX);
	f.host[FWD_HOST_MAX] = '\0';
	roundtrip(&f);

	memset(&f, 0, sizeof(f));
	f.type = FWD_OPEN_OK;
	f.id = 0xffffffffu;
	roundtrip(&f);
	f.type = FWD_CLOSE;
	roundtrip(&f);

	memset(&f, 0, sizeof(f));
	f.type = FWD_DATA;
	f.id = 3;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)i;
	f.data = data;
	f.len = 1;
	roundtrip(&f);
	f.len = sizeof(data);
	roundtrip(&f);

	memset(&f, 0, sizeof(f));
	f.type = FWD_WINDOW_UPDATE;
	f.id = 3;
	f.credit = FWD_WINDOW;
	roundtrip(&f);

	memset(&f, 0, sizeof(f));
	f.type = FWD_RESET;
	f.id = 9;
	f.code = FWD_RST_REFUSED;
	strcpy(f.reason, "127.0.0.1:22 is not exposed");
	roundtrip(&f);
	f.reason[0] = '\0';
	roundtrip(&f);
}

static void test_encode_rejects(void **state)
{
	uint8_t buf[64];
	struct fwd_frame f = { .type = FWD_DATA, .id = 1 };

	assert_int_equal(fwd_frame_encode(&f, buf, sizeof(buf)), -EINVAL); /* empty DATA */
	f.type = FWD_WINDOW_UPDATE;
	assert_int_equal(fwd_frame_encode(&f, buf, sizeof(buf)), -EINVAL); /* zero credit */
	f.type = FWD_OPEN;
	assert_int_equal(fwd_frame_encode(&f, buf, sizeof(buf)), -EINVAL); /* no host */
	f.type = 42;
	assert_int_equal(fwd_frame_encode(&f, buf, sizeof(buf)), -EINVAL);
	f.type = FWD_OPEN;
	strcpy(f.host, "a.long.host.name.example");
	f.port = 1;
	assert_int_equal(fwd_frame_encode(&f, buf, 10), -EMSGSIZE);
}

static void test_decode_rejects(void **state)
{
	struct fwd_frame f;
	/* type, id, body */
	static const uint8_t hello_v2[] = { 0, 0, 0, 0, 0, 'W', 'G', 'F', 'W', 'D', 2 };
	static const uint8_t hello_id[] = { 0, 0, 0, 0, 1, 'W', 'G', 'F', 'W', 'D', 1 };
	static const uint8_t hello_magic[] = { 0, 0, 0, 0, 0, 'W', 'G', 'F', 'W', 'X', 1 };
	static const uint8_t hello_long[] = { 0, 0, 0, 0, 0, 'W', 'G', 'F', 'W', 'D', 1, 0 };
	static const uint8_t open_port0[] = { 1, 0, 0, 0, 1, 0, 0, 1, 'h' };
	static const uint8_t open_nohost[] = { 1, 0, 0, 0, 1, 0, 80, 0 };
	static const uint8_t open_short[] = { 1, 0, 0, 0, 1, 0, 80, 5, 'h' };
	static const uint8_t open_trail[] = { 1, 0, 0, 0, 1, 0, 80, 1, 'h', 'x' };
	static const uint8_t open_nul[] = { 1, 0, 0, 0, 1, 0, 80, 2, 'h', 0 };
	static const uint8_t open_id0[] = { 1, 0, 0, 0, 0, 0, 80, 1, 'h' };
	static const uint8_t ok_trail[] = { 2, 0, 0, 0, 1, 9 };
	static const uint8_t data_empty[] = { 3, 0, 0, 0, 1 };
	static const uint8_t win_zero[] = { 4, 0, 0, 0, 1, 0, 0, 0, 0 };
	static const uint8_t win_long[] = { 4, 0, 0, 0, 1, 0, 0, 0, 1, 0 };
	static const uint8_t rst_short[] = { 6, 0, 0, 0, 1, 0 };
	static const uint8_t unknown[] = { 9, 0, 0, 0, 1 };
	static const uint8_t rst_ctrl[] = { 6, 0, 0, 0, 1, 0, 1, 'a', '\n', 'b' };
	uint8_t big[5 + FWD_DATA_MAX + 1] = { FWD_DATA, 0, 0, 0, 1 };

	assert_int_equal(fwd_frame_decode(hello_v2, sizeof(hello_v2), &f), -WARP_EVERSION);
	assert_true(fwd_is_hello(hello_v2, sizeof(hello_v2)));
	assert_int_equal(fwd_frame_decode(hello_id, sizeof(hello_id), &f), -WARP_EMALFORMED);
	assert_int_equal(fwd_frame_decode(hello_magic, sizeof(hello_magic), &f), -WARP_EMALFORMED);
	assert_false(fwd_is_hello(hello_magic, sizeof(hello_magic)));
	assert_int_equal(fwd_frame_decode(hello_long, sizeof(hello_long), &f), -WARP_ETRAILING);
	assert_int_equal(fwd_frame_decode(open_port0, sizeof(open_port0), &f), -WARP_ERANGE);
	assert_int_equal(fwd_frame_decode(open_nohost, sizeof(open_nohost), &f), -WARP_ERANGE);
	assert_int_equal(fwd_frame_decode(open_short, sizeof(open_short), &f), -WARP_ETRUNCATED);
	assert_int_equal(fwd_frame_decode(open_trail, sizeof(open_trail), &f), -WARP_ETRAILING);
	assert_int_equal(fwd_frame_decode(open_nul, sizeof(open_nul), &f), -WARP_EMALFORMED);
	assert_int_equal(fwd_frame_decode(open_id0, sizeof(open_id0), &f), -WARP_EMALFORMED);
	assert_int_equal(fwd_frame_decode(ok_trail, sizeof(ok_trail), &f), -WARP_ETRAILING);
	assert_int_equal(fwd_frame_decode(data_empty, sizeof(data_empty), &f), -WARP_ETRUNCATED);
	assert_int_equal(fwd_frame_decode(big, sizeof(big), &f), -WARP_ERANGE);
	assert_int_equal(fwd_frame_decode(win_zero, sizeof(win_zero), &f), -WARP_ERANGE);
	assert_int_equal(fwd_frame_decode(win_long, sizeof(win_long), &f), -WARP_ETRAILING);
	assert_int_equal(fwd_frame_decode(rst_short, sizeof(rst_short), &f), -WARP_ETRUNCATED);
	assert_int_equal(fwd_frame_decode(unknown, sizeof(unknown), &f), -WARP_EMALFORMED);
	/* Reasons are shown to users: control characters are neutralised. */
	assert_int_equal(fwd_frame_decode(rst_ctrl, sizeof(rst_ctrl), &f), 0);
	assert_string_equal(f.reason, "a?b");
}

static void test_hosts_and_rules(void **state)
{
	struct sockaddr_storage ss;
	struct fwd_rule r;
	char h[300], err[256], ep[WARP_EP_STRLEN];
	uint16_t port;

	assert_int_equal(fwd_host_norm("localhost", h, sizeof(h)), 0);
	assert_string_equal(h, "127.0.0.1");
	assert_int_equal(fwd_host_norm("[0:0::1]", h, sizeof(h)), 0);
	assert_string_equal(h, "::1");
	assert_int_equal(fwd_host_norm("DB.Example", h, sizeof(h)), 0);
	assert_string_equal(h, "db.example");
	assert_int_equal(fwd_host_norm("a b", h, sizeof(h)), -EINVAL);
	assert_int_equal(fwd_host_norm("", h, sizeof(h)), -EINVAL);

	assert_int_equal(fwd_hostport_parse("localhost:80", h, sizeof(h), &port), 0);
	assert_string_equal(h, "127.0.0.1");
	assert_int_equal(port, 80);
	assert_int_equal(fwd_hostport_parse("[::1]:443", h, sizeof(h), &port), 0);
	assert_string_equal(h, "::1");
	assert_int_equal(fwd_hostport_parse("::1:443", h, sizeof(h), &port), -EINVAL);
	assert_int_equal(fwd_hostport_parse("h:0", h, sizeof(h), &port), -EINVAL);
	assert_int_equal(fwd_hostport_parse("h:65536", h, sizeof(h), &port), -EINVAL);
	assert_int_equal(fwd_hostport_parse(":80", h, sizeof(h), &port), -EINVAL);
	assert_int_equal(fwd_hostport_parse("h:8x", h, sizeof(h), &port), -EINVAL);

	assert_int_equal(fwd_rule_parse("8080", &r, err, sizeof(err)), 0);
	assert_string_equal(r.host, "127.0.0.1");
	assert_int_equal(r.port, 8080);
	assert_string_equal(warp_ep_str((struct sockaddr *)&r.addr, ep, sizeof(ep)),
			    "127.0.0.1:8080");
	assert_int_equal(fwd_rule_parse("[::1]:22", &r, err, sizeof(err)), 0);
	assert_string_equal(warp_ep_str((struct sockaddr *)&r.addr, ep, sizeof(ep)), "[::1]:22");
	assert_int_equal(fwd_rule_parse("0", &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "expected PORT"));
	assert_int_equal(fwd_rule_parse("99999", &r, err, sizeof(err)), -EINVAL);

	assert_int_equal(fwd_listen_parse("127.0.0.1:0", &ss), 0);
	assert_string_equal(warp_ep_str((struct sockaddr *)&ss, ep, sizeof(ep)), "127.0.0.1:0");
	assert_int_equal(fwd_listen_parse("[::1]:8080", &ss), 0);
	assert_int_equal(fwd_listen_parse("host:80", &ss), -EINVAL);
	assert_int_equal(fwd_listen_parse("127.0.0.1", &ss), -EINVAL);
}

static void test_keys(void **state)
{
	uint8_t key[WARP_PUBKEY_LEN];
	char hex[2 * WARP_PUBKEY_LEN + 1];
	/* The secp256k1 generator, compressed: a valid point. */
	static const char g[] =
		"0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

	assert_int_equal(fwd_key_parse(g, key), 0);
	fwd_key_hex(key, hex);
	assert_string_equal(hex, g);
	assert_int_equal(fwd_key_parse("02", key), -EINVAL);
	assert_int_equal(
		fwd_key_parse("0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
			      key),
		-EINVAL);
}

static void test_base64(void **state)
{
	static const char *const in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const out[] = { "",	       "Zg==",	   "Zm8=",    "Zm9v",
					   "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char enc[16];
	uint8_t dec[16];

	for (int i = 0; i < 7; i++) {
		ctl_b64_encode(enc, in[i], strlen(in[i]));
		assert_string_equal(enc, out[i]);
		assert_int_equal(ctl_b64_len(strlen(in[i])), strlen(out[i]));
		assert_int_equal(ctl_b64_decode(dec, out[i], strlen(out[i])), (int)strlen(in[i]));
		assert_memory_equal(dec, in[i], strlen(in[i]));
	}
	assert_int_equal(ctl_b64_decode(dec, "Zm9", 3), -EINVAL);
	assert_int_equal(ctl_b64_decode(dec, "Zm=v", 4), -EINVAL);
	assert_int_equal(ctl_b64_decode(dec, "Z!9v", 4), -EINVAL);
	assert_int_equal(ctl_b64_decode(dec, "Zg==Zg==", 8), -EINVAL);
	assert_string_equal(ctl_err_name(-WARP_ECLOSED), "ECLOSED");
	assert_string_equal(ctl_err_name(-ETIMEDOUT), "ETIMEDOUT");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),      cmocka_unit_test(test_encode_rejects),
		cmocka_unit_test(test_decode_rejects), cmocka_unit_test(test_hosts_and_rules),
		cmocka_unit_test(test_keys),	       cmocka_unit_test(test_base64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
