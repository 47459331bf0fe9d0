// SPDX-License-Identifier: MIT
/* NAT report cache: hits, ages, eviction, damaged files, atomic 0600 writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/nat.h>

#include "core/util.h"
#include "nat/natcache.h"
#include "nat/sockaddr.h"

static char dir[64], path[128];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/warp-natcache-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/sub/nat-cache.json", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void sample(struct warp_nat_report *r, uint16_t port)
{
	memset(r, 0, sizeof(*r));
	r->family = AF_INET;
	r->type = WARP_NAT_PORT_RESTRICTED;
	r->mapping = WARP_NAT_BEH_ENDPOINT_INDEPENDENT;
	r->filtering = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
	r->delta = WARP_NAT_DELTA_INDEPENDENT;
	r->delta_value = 2;
	r->hairpin = true;
	r->nat = r->udp = true;
	r->n_external = 1;
	nat_sa_parse("203.0.113.5", port, &r->external[0]);
	nat_sa_parse("10.0.0.2:4000", 0, &r->local);
	r->measured_at_ms = 1700000000000ull;
}

static void test_store_lookup(void **state)
{
	struct warp_nat_report r, got;
	uint64_t age = 99;
	struct stat st;
	const char fp1[] = "eth0|192.168.1.10|2001:db8:1::/64|192.168.1.1";
	const char fp2[] = "wlan0|10.1.2.3||10.1.2.1";

	assert_int_equal(warp_natcache_lookup(path, fp1, sizeof(fp1), 1000, 0, &got, &age),
			 -ENOENT);
	sample(&r, 40000);
	assert_int_equal(warp_natcache_store(path, fp1, sizeof(fp1), &r, 1000), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(warp_natcache_lookup(path, fp1, sizeof(fp1), 61000, 0, &got, &age), 0);
	assert_int_equal(age, 60000);
	assert_int_equal(got.type, r.type);
	assert_int_equal(got.mapping, r.mapping);
	assert_int_equal(got.filtering, r.filtering);
	assert_int_equal(got.delta, r.delta);
	assert_int_equal(got.delta_value, 2);
	assert_true(got.hairpin);
	assert_true(got.nat);
	assert_int_equal(got.n_external, 1);
	assert_true(nat_sa_equal((struct sockaddr *)&got.external[0],
				 (struct sockaddr *)&r.external[0]));
	assert_true(nat_sa_equal((struct sockaddr *)&got.local, (struct sockaddr *)&r.local));
	assert_int_equal(got.measured_at_ms, r.measured_at_ms);
	/* too old for the caller, another network, a clock that went backwards */
	assert_int_equal(warp_natcache_lookup(path, fp1, sizeof(fp1), 61000, 30000, &got, &age),
			 -WARP_ENOTFOUND);
	assert_int_equal(warp_natcache_lookup(path, fp2, sizeof(fp2), 61000, 0, &got, &age),
			 -WARP_ENOTFOUND);
	assert_int_equal(warp_natcache_lookup(path, fp1, sizeof(fp1), 500, 0, &got, &age), 0);
	assert_int_equal(age, 0);

	/* a second network, then replacing the first */
	sample(&r, 50000);
	r.type = WARP_NAT_SYMMETRIC;
	assert_int_equal(warp_natcache_store(path, fp2, sizeof(fp2), &r, 2000), 0);
	assert_int_equal(warp_natcache_store(path, fp1, sizeof(fp1), &r, 3000), 0);
	assert_int_equal(warp_natcache_lookup(path, fp1, sizeof(fp1), 3000, 0, &got, &age), 0);
	assert_int_equal(got.type, WARP_NAT_SYMMETRIC);
	assert_int_equal(nat_sa_port((struct sockaddr *)&got.external[0]), 50000);
	assert_int_equal(warp_natcache_lookup(path, fp2, sizeof(fp2), 3000, 0, &got, &age), 0);

	assert_int_equal(warp_natcache_forget(path, fp2, sizeof(fp2)), 0);
	assert_int_equal(warp_natcache_forget(path, fp2, sizeof(fp2)), -WARP_ENOTFOUND);
	assert_int_equal(warp_natcache_lookup(path, fp2, sizeof(fp2), 3000, 0, &got, &age),
			 -WARP_ENOTFOUND);
	assert_int_equal(warp_natcache_store(path, NULL, 0, &r, 1), -EINVAL);
}

static void test_eviction(void **state)
{
	struct warp_nat_report r, got;
	char fp[32];
	uint64_t age;

	unlink(path);
	sample(&r, 1);
	for (int i = 0; i < WARP_NATCACHE_MAX + 4; i++) {
		snprintf(fp, sizeof(fp), "net-%d", i);
		/* stored out of order: age decides, not insertion */
		assert_int_equal(warp_natcache_store(path, fp, strlen(fp), &r,
						     10000 + (uint64_t)((i * 7) % 20) * 100),
				 0);
	}
	{
		int hits = 0;

		for (int i = 0; i < WARP_NATCACHE_MAX + 4; i++) {
			snprintf(fp, sizeof(fp), "net-%d", i);
			if (warp_natcache_lookup(path, fp, strlen(fp), 20000, 0, &got, &age) == 0) {
				hits++;
				/* the four oldest (stored_at 10000..10300) are gone */
				assert_true((i * 7) % 20 >= 4);
			}
		}
		assert_int_equal(hits, WARP_NATCACHE_MAX);
	}
}

static void test_damaged(void **state)
{
	struct warp_nat_report r, got;
	uint64_t age;
	const char fp[] = "x";

	assert_int_equal(warp_write_file_atomic(path, "{not json", 9, 0600), 0);
	assert_int_equal(warp_natcache_lookup(path, fp, 1, 0, 0, &got, &age), -WARP_EMALFORMED);
	sample(&r, 7);
	assert_int_equal(warp_natcache_store(path, fp, 1, &r, 5), 0); /* starts afresh */
	assert_int_equal(warp_natcache_lookup(path, fp, 1, 5, 0, &got, &age), 0);

	assert_int_equal(warp_write_file_atomic(path, "{\"version\":2,\"networks\":{}}", 27, 0600),
			 0);
	assert_int_equal(warp_natcache_lookup(path, fp, 1, 0, 0, &got, &age), -WARP_EVERSION);

	/* an entry whose report is damaged */
	{
		const char *bad =
			"{\"version\":1,\"networks\":{\"2d711642b726b04401627ca9fbac32f5\":"
			"{\"stored_at_ms\":1,\"report\":{\"mapping\":\"sideways\"}}}}";

		assert_int_equal(warp_write_file_atomic(path, bad, strlen(bad), 0600), 0);
		assert_int_equal(warp_natcache_lookup(path, fp, 1, 0, 0, &got, &age),
				 -WARP_EMALFORMED);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_store_lookup),
		cmocka_unit_test(test_eviction),
		cmocka_unit_test(test_damaged),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
