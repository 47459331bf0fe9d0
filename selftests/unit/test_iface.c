// SPDX-License-Identifier: MIT
/*
 * Interface discovery inside a private network namespace that the test creates (unshare)
 * and fills (veth pairs: this kernel has no dummy driver) with addresses and routes it chooses, so the expected list is known exactly.
 * Needs CAP_NET_ADMIN + CAP_SYS_ADMIN; skipped otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/rtnetlink.h>

#include <warpgate/iface.h>
#include <warpgate/loop.h>

static bool in_netns;

static int sh(const char *cmd)
{
	int rc = system(cmd);

	if (rc != 0)
		print_error("command failed (%d): %s\n", rc, cmd);
	return rc;
}

static int setup(void **state)
{
	if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0)
		return 0; /* tests skip */
	in_netns = true;
	/* The namespace dies with this process: nothing to clean up on any exit path. */
	return sh("ip link set lo up && "
		  "ip link add wpgd0 type veth peer name wpgd0p && ip link set wpgd0p up && ip link set wpgd0 address 02:00:00:00:00:01 && "
		  "ip addr add 198.18.5.2/24 dev wpgd0 && "
		  "ip -6 addr add 2001:db8:5::2/64 dev wpgd0 nodad && "
		  "ip link set wpgd0 mtu 1400 up && "
		  "ip route add default via 198.18.5.1 dev wpgd0 && "
		  "ip -6 route add default via 2001:db8:5::1 dev wpgd0 && "
		  "ip link add wpgd1 type veth peer name wpgd1p && ip link set wpgd1p up && ip addr add 100.64.9.9/10 dev wpgd1 && "
		  "ip link set wpgd1 up");
}

static const struct warp_ifaddr *find_addr(const struct warp_iface *f, int family,
					   const char *text)
{
	uint8_t want[16];

	inet_pton(family, text, want);
	for (size_t i = 0; i < f->naddrs; i++)
		if (f->addrs[i].family == family &&
		    !memcmp(&f->addrs[i].addr, want, family == AF_INET ? 4 : 16))
			return &f->addrs[i];
	return NULL;
}

static void test_list_exact(void **state)
{
	struct warp_iface_list l;
	const struct warp_iface *d0, *d1, *lo;
	const struct warp_ifaddr *a;
	struct in_addr gw4;
	struct in6_addr gw6;
	size_t n4 = 0, n6 = 0;

	if (!in_netns)
		skip();
	assert_int_equal(warp_iface_list_get(&l), 0);
	assert_int_equal(l.n, 5); /* lo + two veth pairs */
	lo = warp_iface_find(&l, "lo");
	d0 = warp_iface_find(&l, "wpgd0");
	d1 = warp_iface_find(&l, "wpgd1");
	assert_non_null(lo);
	assert_non_null(d0);
	assert_non_null(d1);
	assert_true(lo->flags & IFF_LOOPBACK);
	assert_true(d0->flags & IFF_UP);
	assert_int_equal(d0->mtu, 1400);
	assert_memory_equal(d0->mac, "\x02\0\0\0\0\x01", 6);
	/* Exactly: one IPv4, one global IPv6, one link-local IPv6. */
	for (size_t i = 0; i < d0->naddrs; i++)
		*(d0->addrs[i].family == AF_INET ? &n4 : &n6) += 1;
	assert_int_equal(n4, 1);
	assert_int_equal(n6, 2);
	a = find_addr(d0, AF_INET, "198.18.5.2");
	assert_non_null(a);
	assert_int_equal(a->prefix_len, 24);
	assert_int_equal(a->scope, RT_SCOPE_UNIVERSE);
	a = find_addr(d0, AF_INET6, "2001:db8:5::2");
	assert_non_null(a);
	assert_int_equal(a->prefix_len, 64);
	assert_int_equal(a->scope_id, 0);
	for (size_t i = 0; i < d0->naddrs; i++)
		if (d0->addrs[i].family == AF_INET6 && d0->addrs[i].scope == RT_SCOPE_LINK)
			assert_int_equal(d0->addrs[i].scope_id, (uint32_t)d0->index);
	inet_pton(AF_INET, "198.18.5.1", &gw4);
	inet_pton(AF_INET6, "2001:db8:5::1", &gw6);
	assert_true(d0->has_gw4);
	assert_true(d0->has_gw6);
	assert_memory_equal(&d0->gw4, &gw4, 4);
	assert_memory_equal(&d0->gw6, &gw6, 16);
	assert_false(d1->has_gw4);
	a = find_addr(d1, AF_INET, "100.64.9.9");
	assert_non_null(a);
	assert_int_equal(a->prefix_len, 10);
	assert_non_null(find_addr(lo, AF_INET, "127.0.0.1"));
	warp_iface_list_free(&l);
}

static void test_fingerprint(void **state)
{
	struct warp_iface_list l;
	uint8_t f1[32], f2[32], f3[32];

	if (!in_netns)
		skip();
	assert_int_equal(warp_iface_list_get(&l), 0);
	warp_iface_fingerprint(&l, f1);
	warp_iface_list_free(&l);
	/* A new IPv6 address in the same /64 (privacy address rotation) changes nothing. */
	assert_int_equal(sh("ip -6 addr add 2001:db8:5::77/64 dev wpgd0 nodad"), 0);
	assert_int_equal(warp_iface_list_get(&l), 0);
	warp_iface_fingerprint(&l, f2);
	warp_iface_list_free(&l);
	assert_memory_equal(f1, f2, 32);
	/* A new IPv4 address does. */
	assert_int_equal(sh("ip addr add 198.18.6.2/24 dev wpgd1"), 0);
	assert_int_equal(warp_iface_list_get(&l), 0);
	warp_iface_fingerprint(&l, f3);
	warp_iface_list_free(&l);
	assert_memory_not_equal(f1, f3, 32);
	sh("ip addr del 198.18.6.2/24 dev wpgd1; ip -6 addr del 2001:db8:5::77/64 dev wpgd0");
}

static void on_change(void *user)
{
	(*(int *)user)++;
}

static bool changed(void *user)
{
	return *(int *)user > 0;
}

static void test_watch(void **state)
{
	struct warp_loop *loop;
	struct warp_netwatch *w;
	int n = 0;

	if (!in_netns)
		skip();
	loop = warp_loop_new();
	w = warp_netwatch_new(loop, on_change, &n);
	assert_non_null(w);
	assert_int_equal(warp_loop_run_until(loop, changed, &n, 200), -ETIMEDOUT);
	assert_int_equal(sh("ip addr add 198.18.7.7/24 dev wpgd1"), 0);
	assert_int_equal(warp_loop_run_until(loop, changed, &n, 5000), 0);
	/* Debounced: a burst of changes gives one callback. */
	assert_int_equal(n, 1);
	warp_netwatch_free(w);
	warp_loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_list_exact),
		cmocka_unit_test(test_fingerprint),
		cmocka_unit_test(test_watch),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
