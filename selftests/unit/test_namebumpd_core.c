// SPDX-License-Identifier: MIT
/*
 * namebumpd's sans-IO core and SQLite store, driven directly: request bytes from made-up
 * source addresses in, reply bytes out.  Loopback cannot show distinct IPv6 /64s and /48s, so
 * the bucket quotas are tested here; also schema migration, batches and tombstones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <sqlite3.h>

/* The server's sources, built into this test (they are not part of libwarpgate). */
#include "../../tools/namebumpd/config.c"
#include "../../tools/namebumpd/core.c"
#include "../../tools/namebumpd/ratelimit.c"
#include "../../tools/namebumpd/store_sqlite.c"
#include "../../tools/namebumpd/verify.c"

#define DAY_MS (24ull * 3600 * 1000)

static struct nb_config cfg;
static struct nb_shared sh;
static struct nb_core core;
static char dir[64], dbpath[128];
static struct warp_identity *owner;

static int setup(void **state)
{
	assert_int_equal(warp_crypto_init(), 0);
	snprintf(dir, sizeof(dir), "/tmp/nbcore.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(dbpath, sizeof(dbpath), "%s/db", dir);
	nb_config_defaults(&cfg);
	snprintf(cfg.db, sizeof(cfg.db), "%s", dbpath);
	cfg.rate = 0;
	cfg.quota[NB_B_V4] = 2;
	cfg.quota[NB_B_V6_128] = 2;
	cfg.quota[NB_B_V6_64] = 3;
	cfg.quota[NB_B_V6_48] = 4;
	assert_int_equal(nb_config_check(&cfg), 0);
	sh.cfg = &cfg;
	sh.ops = &nb_store_sqlite;
	sh.key = warp_identity_generate();
	owner = warp_identity_generate();
	assert_non_null(sh.key);
	wn_signer_init(&sh.signer, sh.key);
	pthread_mutex_init(&sh.write_lock, NULL);
	assert_int_equal(nb_core_init(&core, &sh), 0);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	nb_core_fini(&core);
	wn_signer_wipe(&sh.signer);
	warp_identity_free(sh.key);
	warp_identity_free(owner);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd)) {
	}
	return 0;
}

static void ip_of(const char *text, struct nb_ip *ip)
{
	memset(ip, 0, sizeof(*ip));
	if (inet_pton(AF_INET, text, ip->addr) == 1) {
		ip->af = 4;
		return;
	}
	assert_int_equal(inet_pton(AF_INET6, text, ip->addr), 1);
	ip->af = 6;
}

static uint64_t now_ms(void)
{
	return nb_now(&cfg);
}

/* One signed PUT (or DEL) through the core; returns the reply status. */
static int run(const char *from, uint8_t type, const char *name, uint8_t bump, uint64_t updated)
{
	static struct nb_slot slot;
	static uint8_t pkt[WN_MAX_PACKET];
	struct wn_request req = { 0 };
	struct wn_reply rep;
	struct wn_auth auth;
	size_t body;
	int n;

	req.type = type;
	req.id = 42;
	req.bump = bump;
	if (type == WN_T_GET) {
		snprintf(req.name, sizeof(req.name), "%s", name);
	} else {
		assert_int_equal(wn_record_make(&req.rec, owner,
						type == WN_T_PUT ? WN_REC_LIVE : WN_REC_TOMB, name,
						"v", type == WN_T_PUT, updated),
				 0);
	}
	n = wn_request_encode(&req, pkt, sizeof(pkt), 1024);
	assert_true(n > 0);
	memset(&slot, 0, sizeof(slot));
	slot.in = pkt;
	slot.in_len = (size_t)n;
	slot.udp = true;
	ip_of(from, &slot.src);
	nb_core_run(&core, &slot, 1);
	assert_true(slot.send);
	assert_true(slot.out_len <= (size_t)n);
	assert_int_equal(wn_reply_decode(slot.out, slot.out_len, &rep, &body, &auth), 0);
	assert_int_equal(wn_reply_verify(slot.out, body, &auth), 0);
	assert_int_equal(rep.id, 42);
	return rep.status;
}

static int put(const char *from, const char *name, uint8_t bump)
{
	return run(from, WN_T_PUT, name, bump, now_ms());
}

static void test_ipv6_buckets(void **state)
{
	/* /128 holds two */
	assert_int_equal(put("2001:db8:1:1::1", "a1.p2p", WARP_NAME_ERROR), WN_OK);
	assert_int_equal(put("2001:db8:1:1::1", "a2.p2p", WARP_NAME_ERROR), WN_OK);
	assert_int_equal(put("2001:db8:1:1::1", "a3.p2p", WARP_NAME_ERROR), WN_QUOTA);
	assert_int_equal(put("2001:db8:1:1::1", "a3.p2p", WARP_NAME_NO_BUMP), WN_NOT_STORED);
	/* another address of the same /64: the /64 holds three */
	assert_int_equal(put("2001:db8:1:1::2", "b1.p2p", WARP_NAME_ERROR), WN_OK);
	assert_int_equal(put("2001:db8:1:1::2", "b2.p2p", WARP_NAME_ERROR), WN_QUOTA);
	/* another /64 of the same /48: the /48 holds four */
	assert_int_equal(put("2001:db8:1:2::1", "c1.p2p", WARP_NAME_ERROR), WN_OK);
	assert_int_equal(put("2001:db8:1:2::1", "c2.p2p", WARP_NAME_ERROR), WN_QUOTA);
	assert_int_equal(put("2001:db8:1:3::9", "c2.p2p", WARP_NAME_NO_BUMP), WN_NOT_STORED);
	/* a different /48 is not affected */
	assert_int_equal(put("2001:db8:2:1::1", "d1.p2p", WARP_NAME_ERROR), WN_OK);
	/* nothing bumpable yet: BUMP fails with QUOTA too */
	assert_int_equal(put("2001:db8:1:2::1", "c2.p2p", WARP_NAME_BUMP), WN_QUOTA);
	/* an owner refreshing a name from the same address always may */
	assert_int_equal(put("2001:db8:1:1::1", "a1.p2p", WARP_NAME_ERROR), WN_OK);
}

static void test_bump_after_min_age(void **state)
{
	/* a day on, nothing is old enough yet; four days on, names written while their
	 * prefixes were busy are bumpable */
	cfg.clock_offset_ms = (int64_t)DAY_MS;
	assert_int_equal(put("2001:db8:1:2::1", "c2.p2p", WARP_NAME_BUMP), WN_QUOTA);
	cfg.clock_offset_ms = (int64_t)(4 * DAY_MS);
	assert_int_equal(put("2001:db8:1:2::1", "c2.p2p", WARP_NAME_NO_BUMP), WN_NOT_STORED);
	assert_int_equal(put("2001:db8:1:2::1", "c2.p2p", WARP_NAME_ERROR), WN_QUOTA);
	assert_int_equal(put("2001:db8:1:2::1", "c2.p2p", WARP_NAME_BUMP), WN_OK);
	assert_int_equal(run("::1", WN_T_GET, "c2.p2p", 0, 0), WN_OK);
	/* the /48 lost exactly one name, the least recently refreshed bumpable one (a2;
	 * a1 was refreshed later) */
	assert_int_equal(run("::1", WN_T_GET, "a2.p2p", 0, 0), WN_NOT_FOUND);
	assert_int_equal(run("::1", WN_T_GET, "a1.p2p", 0, 0), WN_OK);
	assert_int_equal(run("::1", WN_T_GET, "b1.p2p", 0, 0), WN_OK);
	/* ten days on, everything unrefreshed has expired */
	cfg.clock_offset_ms = (int64_t)(10 * DAY_MS);
	assert_int_equal(run("::1", WN_T_GET, "d1.p2p", 0, 0), WN_NOT_FOUND);
	cfg.clock_offset_ms = 0;
}

static void test_ipv4_and_move(void **state)
{
	assert_int_equal(put("192.0.2.1", "v1.p2p", WARP_NAME_ERROR), WN_OK);
	assert_int_equal(put("192.0.2.1", "v2.p2p", WARP_NAME_ERROR), WN_OK);
	assert_int_equal(put("192.0.2.1", "v3.p2p", WARP_NAME_ERROR), WN_QUOTA);
	/* the owner moves v2 to another address: it stops counting against the first */
	assert_int_equal(put("192.0.2.2", "v2.p2p", WARP_NAME_ERROR), WN_OK);
	assert_int_equal(put("192.0.2.1", "v3.p2p", WARP_NAME_ERROR), WN_OK);
}

static void test_tombstone_and_batch(void **state)
{
	uint64_t t = now_ms();
	struct nb_slot *slots = calloc(3, sizeof(*slots));
	uint8_t pkts[3][WN_MAX_PACKET];
	uint64_t ups[3] = { t + 10, t + 20, t + 15 };

	assert_int_equal(run("192.0.2.9", WN_T_DEL, "nobody.p2p", 0, t), WN_NOT_FOUND);
	assert_int_equal(run("192.0.2.9", WN_T_PUT, "tomb.p2p", 0, t), WN_OK);
	assert_int_equal(run("192.0.2.9", WN_T_DEL, "tomb.p2p", 0, t + 1), WN_OK);
	assert_int_equal(run("192.0.2.9", WN_T_PUT, "tomb.p2p", 0, t), WN_REPLAY);
	assert_int_equal(run("::1", WN_T_GET, "tomb.p2p", 0, 0), WN_NOT_FOUND);
	/* three writes of one name in one batch: in order, the third older than the second */
	for (int i = 0; i < 3; i++) {
		struct wn_request req = { .type = WN_T_PUT, .id = (uint64_t)i };
		int n;

		assert_int_equal(
			wn_record_make(&req.rec, owner, WN_REC_LIVE, "batch.p2p", "b", 1, ups[i]),
			0);
		n = wn_request_encode(&req, pkts[i], WN_MAX_PACKET, 0);
		slots[i].in = pkts[i];
		slots[i].in_len = (size_t)n;
		ip_of("192.0.2.10", &slots[i].src);
	}
	nb_core_run(&core, slots, 3);
	for (int i = 0; i < 3; i++) {
		struct wn_reply rep;
		struct wn_auth auth;
		size_t body;

		assert_true(slots[i].send);
		assert_int_equal(
			wn_reply_decode(slots[i].out, slots[i].out_len, &rep, &body, &auth), 0);
		assert_int_equal(auth.depth, 2); /* three replies under one signature */
		assert_int_equal(wn_reply_verify(slots[i].out, body, &auth), 0);
		assert_int_equal(rep.status, i < 2 ? WN_OK : WN_REPLAY);
	}
	free(slots);
}

static void test_migration_and_version(void **state)
{
	char path[160];
	sqlite3 *db;
	struct nb_store *s;
	uint64_t n;
	struct nb_ip ip;

	/* a version-1 database with two names from one address */
	snprintf(path, sizeof(path), "%s/v1.db", dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, migrations[0], NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(
		sqlite3_exec(db,
			     "INSERT INTO names VALUES ('x.p2p', 1, x'00', zeroblob(33), 1,"
			     " zeroblob(64), 1, 1, 4, 3221225985, NULL, NULL, NULL);"
			     "INSERT INTO names VALUES ('y.p2p', 1, x'00', zeroblob(33), 1,"
			     " zeroblob(64), 1, 1, 4, 3221225985, NULL, NULL, NULL);"
			     "PRAGMA user_version = 1;",
			     NULL, NULL, NULL),
		SQLITE_OK);
	sqlite3_close(db);
	s = nb_store_sqlite.open(path, true);
	assert_non_null(s);
	ip_of("192.0.2.1", &ip);
	assert_int_equal(nb_store_sqlite.count(s, NB_B_V4, &ip, &n), 0);
	assert_int_equal(n, 2);
	nb_store_sqlite.close(s);
	/* a database from a newer namebumpd is refused, not damaged */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	errno = 0;
	assert_null(nb_store_sqlite.open(path, true));
	assert_int_equal(errno, WARP_EVERSION);
}

static void test_config(void **state)
{
	struct nb_config c;
	char path[160];
	FILE *f;

	snprintf(path, sizeof(path), "%s/c.json", dir);
	nb_config_defaults(&c);
	f = fopen(path, "w");
	fputs("{\"listen\": [\"127.0.0.1:1\"], \"quota_v4\": 7, \"sync\": \"normal\","
	      " \"tlds\": [\"p2p\", \"node\"]}",
	      f);
	fclose(f);
	assert_int_equal(nb_config_load(&c, path), 0);
	assert_int_equal(c.quota[NB_B_V4], 7);
	assert_false(c.sync_full);
	assert_int_equal(c.n_tlds, 2);
	assert_int_equal(nb_config_check(&c), 0);
	f = fopen(path, "w");
	fputs("{\"quota_v4\": 7, \"typo\": 1}", f);
	fclose(f);
	assert_int_equal(nb_config_load(&c, path), -WARP_ECONFIG);
	/* a minimum age inside the clock window would let a replay outlive its name */
	nb_config_defaults(&c);
	c.min_age_ms = c.window_ms;
	assert_int_equal(nb_config_check(&c), -WARP_ECONFIG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv6_buckets),
		cmocka_unit_test(test_bump_after_min_age),
		cmocka_unit_test(test_ipv4_and_move),
		cmocka_unit_test(test_tombstone_and_batch),
		cmocka_unit_test(test_migration_and_version),
		cmocka_unit_test(test_config),
	};

	warp_log_set_level(WARP_LOG_NONE);
	return cmocka_run_group_tests(tests, setup, teardown);
}
