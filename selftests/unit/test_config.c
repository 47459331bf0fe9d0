// SPDX-License-Identifier: MIT
/* Config loader: every key, precise errors with key paths, server text forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/config.h>
#include <warpgate/error.h>

static void test_full(void **state)
{
	struct warp_conf c;
	char err[256] = "";
	const char *json = "{\"home\": \"/tmp/h\", \"name\": \"alice\", \"port\": 4242,"
			   " \"log_level\": \"info\", \"upnp\": false, \"bpf\": false,"
			   " \"interfaces\": [\"eth0\", \"eth1\"],"
			   " \"stun\": [\"198.18.0.2:3478\", \"stun.example.org\"],"
			   " \"turn\": [\"u:p@198.18.0.4:3478\", {\"server\": \"[2001:db8::4]:3478\","
			   "   \"user\": \"x\", \"password\": \"y\", \"realm\": \"lab\", \"tcp\": true}],"
			   " \"mqtt\": \"198.18.0.5:1883\","
			   " \"nameservers\": [\"198.18.0.8:5300\"],"
			   " \"ntp\": [\"198.18.0.7\"], \"strategies\": [\"udp_punch\", \"turn\"],"
			   " \"keepalive_ms\": 1000, \"idle_timeout_ms\": 60000, \"workers\": 4}";

	warp_conf_init(&c);
	assert_int_equal(warp_conf_load_string(&c, json, "t.json", err, sizeof(err)), 0);
	assert_string_equal(c.home, "/tmp/h");
	assert_string_equal(c.name, "alice");
	assert_int_equal(c.port, 4242);
	assert_int_equal(c.log_level, 1);
	assert_true(c.flags & WARP_CONF_NO_UPNP);
	assert_true(c.flags & WARP_CONF_NO_BPF);
	assert_false(c.flags & WARP_CONF_TEST_MODE);
	assert_int_equal(c.nifaces, 2);
	assert_int_equal(c.nstun, 2);
	assert_string_equal(c.stun[1], "stun.example.org");
	assert_int_equal(c.nturn, 2);
	assert_string_equal(c.turn[0].user, "u");
	assert_string_equal(c.turn[0].password, "p");
	assert_string_equal(c.turn[0].server, "198.18.0.4:3478");
	assert_true(c.turn[1].tcp);
	assert_string_equal(c.turn[1].realm, "lab");
	assert_int_equal(c.nmqtt, 1);
	assert_int_equal(c.nnames, 1);
	assert_int_equal(c.nntp, 1);
	assert_int_equal(c.strategies, (1u << WARP_STRAT_UDP_PUNCH) | (1u << WARP_STRAT_TURN));
	assert_int_equal(c.keepalive_ms, 1000);
	assert_int_equal(c.workers, 4);
}

static void expect_error(const char *json, const char *needle)
{
	struct warp_conf c;
	char err[256] = "";

	warp_conf_init(&c);
	assert_int_equal(warp_conf_load_string(&c, json, "cfg.json", err, sizeof(err)),
			 -WARP_ECONFIG);
	if (!strstr(err, needle))
		fail_msg("error '%s' does not mention '%s'", err, needle);
	assert_non_null(strstr(err, "cfg.json"));
}

static void test_errors(void **state)
{
	expect_error("{\"stunn\": []}", "$.stunn: unknown key");
	expect_error("{\"port\": 70000}", "$.port: 70000 is out of range");
	expect_error("{\"port\": \"1\"}", "$.port: expected an integer");
	expect_error("{\"upnp\": 1}", "$.upnp: expected true or false");
	expect_error("{\"stun\": [\"1.2.3.4:0\"]}", "$.stun[0]");
	expect_error("{\"stun\": [\"a b:1\"]}", "$.stun[0]");
	expect_error("{\"turn\": [\"nouser@1.2.3.4:1\"]}", "$.turn[0]: 'nouser@1.2.3.4:1'");
	expect_error("{\"turn\": [{\"server\": \"1.2.3.4:1\", \"pw\": \"x\"}]}",
		     "$.turn[0].pw: unknown key");
	expect_error("{\"turn\": [{\"user\": \"x\"}]}", "$.turn[0]: missing \"server\"");
	expect_error("{\"nameservers\": [{\"server\": \"1.2.3.4:5300\", \"key\": \"zz\"}]}",
		     "$.nameservers[0].key");
	expect_error("{\"strategies\": [\"teleport\"]}", "$.strategies[0]");
	expect_error("{\"log_level\": \"loud\"}", "$.log_level");
	expect_error("{\"port\": 1, \"port\": 2}", "line 1");
	expect_error("[1]", "$: expected a JSON object");
	expect_error("{", "line 1");
}

static void test_add_text(void **state)
{
	struct warp_conf c;
	char err[256];

	warp_conf_init(&c);
	assert_int_equal(warp_conf_add(&c, "turn", "user:pa:ss@198.18.0.4:3478", err, sizeof(err)),
			 0);
	assert_string_equal(c.turn[0].password, "pa:ss");
	assert_int_equal(warp_conf_add(&c, "nameserver",
				       "198.18.0.8:5300,0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
				       err, sizeof(err)),
			 0);
	assert_int_equal(strlen(c.names[0].key_hex), 66);
	assert_int_equal(warp_conf_add(&c, "nameserver", "198.18.0.8:5300,abc", err, sizeof(err)),
			 -WARP_ECONFIG);
	assert_int_equal(warp_conf_add(&c, "mqtt", "[::1]:1883", err, sizeof(err)), 0);
	assert_int_equal(warp_conf_add(&c, "bogus", "x", err, sizeof(err)), -WARP_ECONFIG);
	for (int i = 0; i < WARP_CONF_MAX_SERVERS - 1; i++)
		assert_int_equal(warp_conf_add(&c, "mqtt", "1.2.3.4:1", err, sizeof(err)), 0);
	assert_int_equal(warp_conf_add(&c, "mqtt", "1.2.3.4:1", err, sizeof(err)), -WARP_ECONFIG);
}

static void test_test_conf(void **state)
{
	struct warp_conf c;

	warp_conf_test(&c);
	assert_true(c.flags & WARP_CONF_TEST_MODE);
	assert_true(c.flags & WARP_CONF_NO_UPNP);
	assert_true(c.flags & WARP_CONF_NO_NTP);
	assert_true(c.flags & WARP_CONF_NO_STUN);
	assert_true(c.flags & WARP_CONF_NO_NAMES);
	assert_true(c.flags & WARP_CONF_NO_MQTT);
	assert_string_equal(c.tld, "p2p");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_add_text),
		cmocka_unit_test(test_test_conf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
