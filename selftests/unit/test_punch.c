// SPDX-License-Identifier: MIT
/*
 * Punching helpers without a network: NAT classes from address routes, port prediction per
 * delta type, which pairs udp_punch and random_probe take on (with the reasons the trace
 * shows), the birthday-paradox probability against a brute-force product, the no-repeat
 * port permutation, probe pacing and candidate lists.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/endpoint.h"
#include "signal/msg.h"
#include "traverse/punch.h"

/* Lab-like routes: NAT type, mapping, filtering, delta. */
static struct warp_addr_route route(uint8_t nat, uint8_t map, uint8_t filt, uint8_t delta,
				    int32_t dv, uint16_t ext_port)
{
	struct warp_addr_route r;

	memset(&r, 0, sizeof(r));
	r.family = 4;
	r.nic_addr[0] = 10;
	r.nic_addr[3] = 2;
	r.udp_port = 4500;
	r.has_ext = true;
	r.ext_addr[0] = 198;
	r.ext_addr[1] = 18;
	r.ext_addr[2] = 1;
	r.ext_addr[3] = 1;
	r.ext_udp_port = ext_port;
	r.nat = nat;
	r.mapping = map;
	r.filtering = filt;
	r.delta_type = delta;
	r.delta_value = dv;
	return r;
}

static struct punch_nat nat_of(struct warp_addr_route r)
{
	struct punch_nat n;

	punch_nat_from_route(&n, &r);
	return n;
}

#define FULL_CONE                                                                 \
	nat_of(route(WARP_ADDR_NAT_FULL_CONE, WARP_ADDR_BEH_EI, WARP_ADDR_BEH_EI, \
		     WARP_ADDR_DELTA_EQUAL, 0, 4500))
#define RESTRICTED                                                                 \
	nat_of(route(WARP_ADDR_NAT_RESTRICTED, WARP_ADDR_BEH_EI, WARP_ADDR_BEH_AD, \
		     WARP_ADDR_DELTA_EQUAL, 0, 4500))
#define PORT_RESTRICTED                                                                  \
	nat_of(route(WARP_ADDR_NAT_PORT_RESTRICTED, WARP_ADDR_BEH_EI, WARP_ADDR_BEH_APD, \
		     WARP_ADDR_DELTA_EQUAL, 0, 4500))
#define SYM_SEQ                                                                     \
	nat_of(route(WARP_ADDR_NAT_SYMMETRIC, WARP_ADDR_BEH_APD, WARP_ADDR_BEH_APD, \
		     WARP_ADDR_DELTA_INDEPENDENT, 2, 0))
#define SYM_RANDOM                                                                  \
	nat_of(route(WARP_ADDR_NAT_SYMMETRIC, WARP_ADDR_BEH_APD, WARP_ADDR_BEH_APD, \
		     WARP_ADDR_DELTA_RANDOM, 0, 0))

static struct punch_nat blocked(void)
{
	struct warp_addr_route r = route(WARP_ADDR_NAT_BLOCKED, 0, 0, 0, 0, 0);

	r.flags |= WARP_ROUTE_F_UDP_BLOCKED;
	return nat_of(r);
}

static void test_classes(void **state)
{
	struct warp_addr_route r;
	struct punch_nat n;

	assert_int_equal(FULL_CONE.cls, PUNCH_EIM);
	assert_int_equal(RESTRICTED.cls, PUNCH_EIM);
	assert_int_equal(PORT_RESTRICTED.cls, PUNCH_EIM);
	assert_int_equal(PORT_RESTRICTED.ext_port, 4500);
	assert_int_equal(SYM_SEQ.cls, PUNCH_SYM_PRED);
	assert_int_equal(SYM_RANDOM.cls, PUNCH_SYM_RANDOM);
	assert_int_equal(blocked().cls, PUNCH_BLOCKED);
	/* Classic type only (no RFC 4787 behaviour), as an older address carries it. */
	assert_int_equal(
		nat_of(route(WARP_ADDR_NAT_SYMMETRIC, 0, 0, WARP_ADDR_DELTA_NONE, 0, 0)).cls,
		PUNCH_SYM_RANDOM);
	assert_int_equal(nat_of(route(WARP_ADDR_NAT_PORT_RESTRICTED, 0, 0, 0, 0, 4500)).cls,
			 PUNCH_EIM);
	/* Not classified yet: a published external port means one mapping for all. */
	assert_int_equal(nat_of(route(0, 0, 0, 0, 0, 4500)).cls, PUNCH_EIM);
	assert_int_equal(nat_of(route(0, 0, 0, 0, 0, 0)).cls, PUNCH_UNKNOWN);
	assert_int_equal(nat_of(route(WARP_ADDR_NAT_OPEN, 0, 0, 0, 0, 4500)).cls, PUNCH_OPEN);
	/* A public NIC address without external facts is its own external address. */
	r = route(0, 0, 0, 0, 0, 0);
	r.has_ext = false;
	r.nic_addr[0] = 198;
	r.nic_addr[1] = 19;
	punch_nat_from_route(&n, &r);
	assert_true(n.has_ext);
	assert_int_equal(n.ext_port, 4500);
	assert_int_equal(n.ext_addr[1], 19);
	r.nic_addr[0] = 10;
	punch_nat_from_route(&n, &r);
	assert_false(n.has_ext);
	assert_string_equal(punch_class_name(PUNCH_SYM_RANDOM), "symmetric (random)");
}

static void test_predict(void **state)
{
	struct punch_nat n = SYM_SEQ;
	uint16_t p[PUNCH_WINDOW];

	assert_true(punch_needs_sample(&n));
	assert_int_equal(punch_predict(&n, 20010, p, PUNCH_WINDOW), PUNCH_WINDOW);
	for (int i = 0; i < PUNCH_WINDOW; i++)
		assert_int_equal(p[i], 20010 + 2 * (i + 1));
	/* A second sample right after the first took index 0: the next mapping is index 1;
	 * two foreign mappings in between push it to 3. */
	assert_int_equal(punch_drift_index(&n, 20010, 20012), 1);
	assert_int_equal(punch_drift_index(&n, 20010, 20016), 3);
	assert_int_equal(punch_drift_index(&n, 20010, 20010), -1);
	assert_int_equal(punch_drift_index(&n, 20010, 20013), -1);
	assert_int_equal(punch_drift_index(&n, 20010, 20000), -1);
	/* Without a sample a sequential NAT cannot be predicted. */
	assert_int_equal(punch_predict(&n, 0, p, PUNCH_WINDOW), 0);
	/* Ports past 65535 are dropped, not wrapped into nonsense. */
	assert_int_equal(punch_predict(&n, 65531, p, 5), 2);
	assert_int_equal(p[0], 65533);
	assert_int_equal(p[1], 65535);
	n.delta_value = -3;
	assert_int_equal(punch_predict(&n, 1000, p, 3), 3);
	assert_int_equal(p[2], 991);
	n.delta_type = WARP_ADDR_DELTA_DEPENDENT;
	n.delta_value = 1;
	assert_true(punch_needs_sample(&n));
	assert_int_equal(punch_predict(&n, 3000, p, 2), 2);
	assert_int_equal(p[1], 3002);

	/* Port-keeping and offset NATs need no sample: the node socket's own port decides. */
	n = nat_of(route(WARP_ADDR_NAT_SYMMETRIC, WARP_ADDR_BEH_APD, WARP_ADDR_BEH_APD,
			 WARP_ADDR_DELTA_EQUAL, 0, 0));
	assert_false(punch_needs_sample(&n));
	assert_int_equal(punch_predict(&n, 0, p, PUNCH_WINDOW), 1);
	assert_int_equal(p[0], 4500);
	n = nat_of(route(WARP_ADDR_NAT_SYMMETRIC, WARP_ADDR_BEH_AD, WARP_ADDR_BEH_APD,
			 WARP_ADDR_DELTA_PRESERVING, 100, 0));
	assert_int_equal(n.cls, PUNCH_SYM_PRED);
	assert_int_equal(punch_predict(&n, 0, p, PUNCH_WINDOW), 1);
	assert_int_equal(p[0], 4600);

	/* Endpoint-independent: the reflexive port. */
	n = PORT_RESTRICTED;
	assert_false(punch_needs_sample(&n));
	assert_int_equal(punch_predict(&n, 0, p, PUNCH_WINDOW), 1);
	assert_int_equal(p[0], 4500);
	assert_int_equal(punch_drift_index(&n, 4500, 4502), -1);
	n = SYM_RANDOM;
	assert_false(punch_needs_sample(&n));
	assert_int_equal(punch_predict(&n, 20010, p, PUNCH_WINDOW), 0);
}

static void test_udp_matrix(void **state)
{
	struct punch_nat pr = PORT_RESTRICTED, rc = RESTRICTED, fc = FULL_CONE, seq = SYM_SEQ,
			 rnd = SYM_RANDOM, blk = blocked();
	const char *why;

	/* The punchable pairs. */
	assert_null(punch_udp_infeasible(&pr, &pr));
	assert_null(punch_udp_infeasible(&rc, &pr));
	assert_null(punch_udp_infeasible(&pr, &seq));
	assert_null(punch_udp_infeasible(&seq, &pr));
	assert_null(punch_udp_infeasible(&seq, &seq));
	assert_null(punch_udp_infeasible(&fc, &seq));
	/* A random port is found when the other NAT lets any port of the address in. */
	assert_null(punch_udp_infeasible(&rc, &rnd));
	assert_null(punch_udp_infeasible(&rnd, &fc));
	/* ...and not when it filters by port: that is random_probe's case. */
	why = punch_udp_infeasible(&pr, &rnd);
	assert_non_null(why);
	assert_non_null(strstr(why, "random_probe"));
	assert_non_null(punch_udp_infeasible(&rnd, &pr));

	why = punch_udp_infeasible(&rnd, &rnd);
	assert_string_equal(why, "both sides symmetric with random ports: no prediction possible "
				 "(turn is needed)");
	assert_non_null(strstr(punch_udp_infeasible(&rnd, &seq), "turn is needed"));
	assert_non_null(strstr(punch_udp_infeasible(&seq, &rnd), "turn is needed"));
	assert_string_equal(punch_udp_infeasible(&pr, &blk), "peer's NAT blocks UDP");
	assert_string_equal(punch_udp_infeasible(&blk, &pr), "our network blocks UDP");
}

static void test_random_matrix(void **state)
{
	struct punch_nat pr = PORT_RESTRICTED, seq = SYM_SEQ, rnd = SYM_RANDOM, blk = blocked();
	bool hard;

	assert_null(punch_random_infeasible(&pr, &rnd, &hard));
	assert_false(hard);
	assert_null(punch_random_infeasible(&rnd, &pr, &hard));
	assert_true(hard);
	/* A sequential NAT is hard too (udp_punch predicts it first). */
	assert_null(punch_random_infeasible(&seq, &pr, &hard));
	assert_true(hard);
	assert_non_null(strstr(punch_random_infeasible(&rnd, &rnd, &hard), "turn is needed"));
	assert_non_null(strstr(punch_random_infeasible(&seq, &rnd, &hard), "turn is needed"));
	assert_non_null(strstr(punch_random_infeasible(&pr, &pr, &hard), "neither side"));
	assert_string_equal(punch_random_infeasible(&rnd, &blk, &hard), "peer's NAT blocks UDP");
	/* The hard side must know where to open its mappings. */
	pr.ext_port = 0;
	assert_non_null(punch_random_infeasible(&rnd, &pr, &hard));
}

/* 1 - prod (R - N - i) / (R - i): the same thing the slow way. */
static double brute(uint32_t range, uint32_t open, uint64_t probes)
{
	double miss = 1.0;

	for (uint64_t i = 0; i < probes; i++) {
		if (range - open < i + 1)
			return 1.0;
		miss *= (double)(range - open - i) / (double)(range - i);
	}
	return 1.0 - miss;
}

static void test_birthday(void **state)
{
	static const uint32_t cases[][3] = {
		{ 10, 1, 1 },	     { 10, 1, 5 },	   { 4, 2, 2 },		{ 1000, 10, 100 },
		{ 64512, 256, 100 }, { 64512, 256, 1024 }, { 64512, 16, 3000 }, { 60000, 1, 59999 },
	};
	double prev = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_true(fabs(punch_birthday_p(cases[i][0], cases[i][1], cases[i][2]) -
				 brute(cases[i][0], cases[i][1], cases[i][2])) < 1e-9);
	assert_true(fabs(punch_birthday_p(10, 1, 1) - 0.1) < 1e-12);
	assert_true(fabs(punch_birthday_p(4, 2, 2) - 5.0 / 6.0) < 1e-12);
	/* Every port probed, or more probes than misses: certain. */
	assert_true(punch_birthday_p(10, 1, 10) == 1.0);
	assert_true(punch_birthday_p(10, 3, 8) == 1.0);
	assert_true(punch_birthday_p(10, 0, 5) == 0.0);
	assert_true(punch_birthday_p(10, 3, 0) == 0.0);
	/* The lab defaults: 256 mappings, 2000 probes/s for 5 s over 1024-65535. */
	assert_true(punch_birthday_p(64512, 256, 10000) > 0.9999999);
	/* Tailscale's numbers: 256 ports, 1024 probes ~ 98 %, 2048 ~ 99.9 %. */
	assert_true(fabs(punch_birthday_p(65535, 256, 1024) - 0.98) < 0.005);
	assert_true(punch_birthday_p(65535, 256, 2048) > 0.999);
	for (uint64_t p = 0; p <= 4000; p += 250) {
		double v = punch_birthday_p(64512, 256, p);

		assert_true(v >= prev);
		prev = v;
	}
	assert_true(fabs(punch_expected_probes(64512, 256) - 64513.0 / 257.0) < 1e-9);
	/* The miss chance stays precise where p rounds to 1. */
	assert_true(punch_birthday_p(64512, 256, 10000) == 1.0);
	assert_true(punch_birthday_miss(64512, 256, 10000) > 1e-20);
	assert_true(punch_birthday_miss(64512, 256, 10000) < 1e-17);
	assert_true(fabs(punch_birthday_miss(4, 2, 2) - 1.0 / 6.0) < 1e-12);
	assert_true(punch_birthday_miss(10, 1, 10) == 0.0);
	assert_true(punch_birthday_miss(10, 1, 0) == 1.0);
}

static void test_perm(void **state)
{
	static const uint16_t los[] = { 1024, 5, 100, 7 }, his[] = { 65535, 5, 101, 106 };
	uint8_t *seen = calloc(65536, 1);

	assert_non_null(seen);
	for (size_t c = 0; c < sizeof(los) / sizeof(los[0]); c++) {
		for (uint32_t seed = 0; seed < 4; seed++) {
			struct punch_perm p;
			uint32_t n = (uint32_t)his[c] - los[c] + 1, cnt = 0;
			uint16_t port;

			memset(seen, 0, 65536);
			/* Multipliers sharing factors with n must be moved to coprime ones. */
			punch_perm_init(&p, los[c], his[c], seed * 2 * 3 * 7 * 64 + seed,
					seed * 977);
			while ((port = punch_perm_next(&p))) {
				assert_true(port >= los[c] && port <= his[c]);
				assert_false(seen[port]);
				seen[port] = 1;
				cnt++;
			}
			assert_int_equal(cnt, n);
			assert_int_equal(punch_perm_next(&p), 0);
		}
	}
	free(seen);
}

static void test_pace(void **state)
{
	/* The first probe at once, then rate * t, never more than a burst per call. */
	assert_int_equal(punch_pace_due(2000, 0, 0, 64), 1);
	assert_int_equal(punch_pace_due(2000, 0, 1, 64), 0);
	assert_int_equal(punch_pace_due(2000, 5000000, 1, 64), 10);
	assert_int_equal(punch_pace_due(2000, 5000000, 11, 64), 0);
	assert_int_equal(punch_pace_due(2000, 1000000000ull, 11, 64), 64);
	assert_int_equal(punch_pace_due(2000, 1000000000ull, 1990, 64), 11);
}

static void test_cands(void **state)
{
	struct punch_cands c = { 0 };
	struct sockaddr_storage a, b, m;
	uint8_t mapped[16] = {
		[10] = 0xff, [11] = 0xff, [12] = 198, [13] = 18, [14] = 1, [15] = 2
	};

	warp_ep_parse("198.18.1.2:20002", 0, &a);
	warp_ep_parse("198.18.1.2:20004", 0, &b);
	warp_ep_from_raw(&m, AF_INET6, mapped, 20002, 0);
	assert_int_equal(punch_cands_add(&c, (struct sockaddr *)&a, WARP_SIG_EP_PREDICTED), 0);
	assert_int_equal(punch_cands_add(&c, (struct sockaddr *)&b, WARP_SIG_EP_PREDICTED), 1);
	assert_int_equal(punch_cands_add(&c, (struct sockaddr *)&a, 0), -EEXIST);
	/* An IPv4-mapped source (dual-stack socket) is the same endpoint. */
	assert_int_equal(punch_cands_add(&c, (struct sockaddr *)&m, 0), -EEXIST);
	assert_int_equal(punch_cands_find(&c, (struct sockaddr *)&b), 1);
	assert_string_equal(punch_kind_name(c.kind[0]), "predicted");
	assert_string_equal(punch_kind_name(0), "peer-reflexive");
	for (int i = 2; i < PUNCH_MAX_CANDS; i++) {
		warp_ep_set_port((struct sockaddr *)&b, (uint16_t)(30000 + i));
		assert_int_equal(punch_cands_add(&c, (struct sockaddr *)&b, 0), i);
	}
	warp_ep_set_port((struct sockaddr *)&b, 40000);
	assert_int_equal(punch_cands_add(&c, (struct sockaddr *)&b, 0), -ENOSPC);
	assert_int_equal(punch_cands_find(&c, (struct sockaddr *)&b), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes),	   cmocka_unit_test(test_predict),
		cmocka_unit_test(test_udp_matrix), cmocka_unit_test(test_random_matrix),
		cmocka_unit_test(test_birthday),   cmocka_unit_test(test_perm),
		cmocka_unit_test(test_pace),	   cmocka_unit_test(test_cands),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
