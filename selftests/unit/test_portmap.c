// SPDX-License-Identifier: MIT
/*
 * Port mapping without a router: renewal and retry scheduling, the race decisions, error
 * translation, configuration errors, "nobody there" failures, and the whole NAT-PMP path
 * (map, renew at half the lease, delete on close) against a fake NAT-PMP gateway on
 * 127.0.0.1:5351 running in a thread of the test.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <natpmp.h>

#include <warpgate/error.h>
#include <warpgate/loop.h>

#include "core/bytes.h"
#include "nat/portmap.h"
#include "nat/sockaddr.h"

#define SEC 1000000000ull

static void test_schedule(void **state)
{
	/* renew at half the lease, never before 1 s, never for permanent leases */
	assert_int_equal(warp_portmap_renew_at(10 * SEC, 7200), 3610 * SEC);
	assert_int_equal(warp_portmap_renew_at(10 * SEC, 1), 11 * SEC);
	assert_int_equal(warp_portmap_renew_at(10 * SEC, 0), UINT64_MAX);
	/* retries: 5 s, 10 s, 20 s ... but at most half of what is left */
	assert_int_equal(warp_portmap_retry_at(0, 3600 * SEC, 1), 5 * SEC);
	assert_int_equal(warp_portmap_retry_at(0, 3600 * SEC, 2), 10 * SEC);
	assert_int_equal(warp_portmap_retry_at(0, 3600 * SEC, 4), 40 * SEC);
	assert_int_equal(warp_portmap_retry_at(0, 3600 * SEC, 60), 1800 * SEC);
	assert_int_equal(warp_portmap_retry_at(100 * SEC, 106 * SEC, 1), 103 * SEC);
	assert_int_equal(warp_portmap_retry_at(100 * SEC, 101 * SEC, 1), UINT64_MAX);
	assert_int_equal(warp_portmap_retry_at(200 * SEC, 101 * SEC, 1), UINT64_MAX);
}

static void test_race(void **state)
{
	struct warp_portmap_race r;
	struct sockaddr_storage a, b;

	nat_sa_parse("198.51.100.1", 4000, &a);
	nat_sa_parse("198.51.100.1", 4001, &b);

	/* first success wins; a different second mapping is deleted */
	warp_portmap_race_init(&r, 2);
	assert_int_equal(warp_portmap_race_result(&r, 1, 0, (struct sockaddr *)&a),
			 WARP_PORTMAP_WIN);
	assert_int_equal(r.winner, 1);
	assert_int_equal(warp_portmap_race_result(&r, 0, 0, (struct sockaddr *)&b),
			 WARP_PORTMAP_DELETE_LOSER);
	/* the same rule reached through the other protocol is left alone */
	warp_portmap_race_init(&r, 2);
	assert_int_equal(warp_portmap_race_result(&r, 0, 0, (struct sockaddr *)&a),
			 WARP_PORTMAP_WIN);
	assert_int_equal(warp_portmap_race_result(&r, 1, 0, (struct sockaddr *)&a),
			 WARP_PORTMAP_KEEP_SAME);
	/* failures: wait for the other, then give up */
	warp_portmap_race_init(&r, 2);
	assert_int_equal(warp_portmap_race_result(&r, 0, -ETIMEDOUT, NULL), WARP_PORTMAP_WAIT);
	assert_int_equal(warp_portmap_race_result(&r, 1, -WARP_ENOTFOUND, NULL),
			 WARP_PORTMAP_ALL_FAILED);
	/* a failure after a win changes nothing */
	warp_portmap_race_init(&r, 2);
	assert_int_equal(warp_portmap_race_result(&r, 0, 0, (struct sockaddr *)&a),
			 WARP_PORTMAP_WIN);
	assert_int_equal(warp_portmap_race_result(&r, 1, -EIO, NULL), WARP_PORTMAP_WAIT);
	/* one method only */
	warp_portmap_race_init(&r, 1);
	assert_int_equal(warp_portmap_race_result(&r, 0, -EIO, NULL), WARP_PORTMAP_ALL_FAILED);
	assert_int_equal(warp_portmap_race_result(&r, 5, 0, NULL), WARP_PORTMAP_WAIT);
}

static void test_errors(void **state)
{
	assert_int_equal(warp_portmap_upnp_err(0), 0);
	assert_int_equal(warp_portmap_upnp_err(718), -EADDRINUSE);
	assert_int_equal(warp_portmap_upnp_err(725), -EOPNOTSUPP);
	assert_int_equal(warp_portmap_upnp_err(606), -EACCES);
	assert_int_equal(warp_portmap_upnp_err(-3), -EHOSTUNREACH);
	assert_int_equal(warp_portmap_upnp_err(501), -EIO);
	assert_int_equal(warp_portmap_natpmp_err(NATPMP_ERR_NOTAUTHORIZED), -EACCES);
	assert_int_equal(warp_portmap_natpmp_err(NATPMP_TRYAGAIN), -ETIMEDOUT);
	assert_int_equal(warp_portmap_natpmp_err(NATPMP_ERR_CANNOTGETGATEWAY), -ENETUNREACH);
	assert_int_equal(warp_portmap_natpmp_err(NATPMP_ERR_OUTOFRESOURCES), -ENOSPC);
}

struct log {
	int mapped, renewed, lost, failed, pinhole;
	struct warp_portmap_info last;
};

static void cb(struct warp_portmap *pm, enum warp_portmap_event ev,
	       const struct warp_portmap_info *info, void *user)
{
	struct log *l = user;

	l->last = *info;
	switch (ev) {
	case WARP_PORTMAP_MAPPED:
		l->mapped++;
		break;
	case WARP_PORTMAP_RENEWED:
		l->renewed++;
		break;
	case WARP_PORTMAP_LOST:
		l->lost++;
		break;
	case WARP_PORTMAP_FAILED:
		l->failed++;
		break;
	case WARP_PORTMAP_PINHOLE:
		l->pinhole++;
		break;
	}
}

static bool any_event(void *user)
{
	struct log *l = user;

	return l->mapped + l->failed + l->renewed + l->lost > 0;
}

static void test_config_and_absent(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_portmap_cfg cfg;
	struct warp_portmap *pm;
	struct warp_portmap_info info;
	struct log l = { 0 };
	uint64_t t0;

	warp_portmap_cfg_default(&cfg);
	assert_null(warp_portmap_new(loop, &cfg, cb, &l)); /* no port */
	assert_int_equal(errno, EINVAL);
	cfg.internal_port = 4000;
	cfg.proto = 99;
	assert_null(warp_portmap_new(loop, &cfg, cb, &l));
	cfg.proto = IPPROTO_UDP;
	cfg.methods = 0;
	assert_null(warp_portmap_new(loop, &cfg, cb, &l));

	/* NAT-PMP to a closed port: refused at once; UPnP: no IGD answers on loopback */
	cfg.methods = WARP_PORTMAP_UPNP | WARP_PORTMAP_NATPMP;
	snprintf(cfg.gateway, sizeof(cfg.gateway), "127.0.0.1");
	snprintf(cfg.multicast_if, sizeof(cfg.multicast_if), "lo");
	cfg.discover_ms = 300;
	cfg.natpmp_ms = 500;
	t0 = warp_time_ms();
	pm = warp_portmap_new(loop, &cfg, cb, &l);
	assert_non_null(pm);
	assert_int_equal(warp_loop_run_until(loop, any_event, &l, 5000), 0);
	assert_int_equal(l.failed, 1);
	assert_int_equal(l.mapped, 0);
	assert_true(l.last.err < 0);
	assert_int_equal(warp_portmap_get(pm, &info), -WARP_ENOTFOUND);
	warp_portmap_free(pm);
	warp_loop_run_once(loop, 0); /* results posted meanwhile release their memory */
	assert_true(warp_time_ms() - t0 < 2500);
	warp_loop_free(loop);
}

/* ---- fake NAT-PMP gateway ---- */

struct fake_gw {
	int fd;
	pthread_t thread;
	volatile bool stop;
	int maps, deletes, pubreqs;
	uint32_t last_lifetime;
	uint16_t last_priv;
};

static void *gw_main(void *arg)
{
	struct fake_gw *g = arg;

	while (!g->stop) {
		uint8_t req[64], rep[16];
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		struct timeval tv = { 0, 100000 };
		ssize_t n;

		setsockopt(g->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		n = recvfrom(g->fd, req, sizeof(req), 0, (struct sockaddr *)&from, &fl);
		if (n < 2 || req[0] != 0)
			continue;
		memset(rep, 0, sizeof(rep));
		rep[1] = (uint8_t)(128 + req[1]);
		warp_put_u32(rep + 4, 1234); /* epoch */
		if (req[1] == 0) {
			g->pubreqs++;
			rep[8] = 198, rep[9] = 51, rep[10] = 100, rep[11] = 77;
			sendto(g->fd, rep, 12, 0, (struct sockaddr *)&from, fl);
		} else if (n >= 12) {
			uint16_t priv = warp_get_u16(req + 4);
			uint32_t life = warp_get_u32(req + 8);

			g->last_priv = priv;
			g->last_lifetime = life;
			if (life == 0)
				g->deletes++;
			else
				g->maps++;
			warp_put_u16(rep + 8, priv);
			/* grant another port than the one asked, and a short lease */
			warp_put_u16(rep + 10, life ? (uint16_t)(priv + 1000) : 0);
			warp_put_u32(rep + 12, life ? 4 : 0);
			sendto(g->fd, rep, 16, 0, (struct sockaddr *)&from, fl);
		}
	}
	return NULL;
}

static bool renewed(void *user)
{
	return ((struct log *)user)->renewed > 0;
}

static void test_natpmp_fake_gateway(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_portmap_cfg cfg;
	struct warp_portmap *pm;
	struct warp_portmap_info info;
	struct sockaddr_storage gw;
	struct fake_gw g = { 0 };
	struct log l = { 0 };
	char ext[NAT_SA_STRLEN];
	uint64_t t0;

	nat_sa_parse("127.0.0.1", NATPMP_PORT, &gw);
	g.fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (bind(g.fd, (struct sockaddr *)&gw, sizeof(struct sockaddr_in)) < 0) {
		close(g.fd);
		warp_loop_free(loop);
		print_message("# 127.0.0.1:5351 is taken; skipping the fake gateway\n");
		skip();
	}
	assert_int_equal(pthread_create(&g.thread, NULL, gw_main, &g), 0);

	warp_portmap_cfg_default(&cfg);
	cfg.internal_port = 40123;
	cfg.methods = WARP_PORTMAP_NATPMP;
	cfg.lease_s = 600;
	cfg.natpmp_ms = 1000;
	snprintf(cfg.gateway, sizeof(cfg.gateway), "127.0.0.1");
	pm = warp_portmap_new(loop, &cfg, cb, &l);
	assert_non_null(pm);
	t0 = warp_time_ms();
	assert_int_equal(warp_loop_run_until(loop, any_event, &l, 3000), 0);
	assert_int_equal(l.mapped, 1);
	assert_int_equal(l.last.method, WARP_PORTMAP_NATPMP);
	assert_int_equal(l.last.lifetime_s, 4);
	nat_sa_str((struct sockaddr *)&l.last.external, ext, sizeof(ext));
	assert_string_equal(ext, "198.51.100.77:41123");
	assert_int_equal(warp_portmap_get(pm, &info), 0);
	assert_int_equal(g.last_lifetime, 600);
	assert_int_equal(g.last_priv, 40123);

	/* a 4 s lease is renewed after 2 s */
	assert_int_equal(warp_loop_run_until(loop, renewed, &l, 5000), 0);
	assert_true(warp_time_ms() - t0 >= 1900);
	assert_int_equal(g.maps, 2);

	/* closing removes the mapping */
	warp_portmap_free(pm);
	warp_loop_run_once(loop, 0); /* results posted meanwhile release their memory */
	assert_int_equal(g.deletes, 1);
	assert_int_equal(g.last_lifetime, 0);
	assert_int_equal(g.last_priv, 40123);
	g.stop = true;
	pthread_join(g.thread, NULL);
	close(g.fd);
	warp_loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schedule),
		cmocka_unit_test(test_race),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_config_and_absent),
		cmocka_unit_test(test_natpmp_fake_gateway),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
