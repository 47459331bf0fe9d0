// SPDX-License-Identifier: MIT
/*
 * namebumpd end to end: the real binary on 127.0.0.1/::1 random ports with a temporary
 * database and key, driven through the client library and raw datagrams.  Covers ownership,
 * replay, tombstones, quotas and the three bump behaviours (with --test-clock-offset instead of
 * waiting days), restart and SIGKILL persistence, rate limiting, TCP fallback, sealed requests,
 * key pinning, several servers and specific errors for malformed packets.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>
#include <warpgate/loop.h>
#include <warpgate/name.h>

#include "core/util.h"
#include "name/proto.h"

#define HOUR_MS (3600ull * 1000)
#define DAY_MS	(24 * HOUR_MS)

struct srv {
	char dir[64], db[96], key[96], log[96], cfg[96];
	char bin[512];
	uint16_t port, port6;
	pid_t pid;
	uint8_t pub[WARP_PUBKEY_LEN];
	int64_t offset;
};

static struct srv S;
static struct warp_loop *loop;
static struct warp_identity *alice_key, *bob_key;

static uint16_t free_port(int family)
{
	for (int i = 0; i < 50; i++) {
		uint16_t port = (uint16_t)(20000 + warp_random_uniform(40000));
		struct sockaddr_storage ss = { 0 };
		int u = socket(family, SOCK_DGRAM, 0), t = socket(family, SOCK_STREAM, 0), ok;
		socklen_t len;

		if (family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			a->sin_family = AF_INET;
			a->sin_port = htons(port);
			a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			len = sizeof(*a);
		} else {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			a->sin6_family = AF_INET6;
			a->sin6_port = htons(port);
			a->sin6_addr = in6addr_loopback;
			len = sizeof(*a);
		}
		ok = bind(u, (struct sockaddr *)&ss, len) == 0 &&
		     bind(t, (struct sockaddr *)&ss, len) == 0;
		close(u);
		close(t);
		if (ok)
			return port;
	}
	return 0;
}

static void write_config(const char *fmt, ...)
{
	va_list ap;
	FILE *f = fopen(S.cfg, "w");

	assert_non_null(f);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
}

static void server_start(void)
{
	char l4[64], l6[64], off[32];
	pid_t pid;

	snprintf(l4, sizeof(l4), "127.0.0.1:%u", S.port);
	snprintf(l6, sizeof(l6), "[::1]:%u", S.port6);
	snprintf(off, sizeof(off), "%lld", (long long)S.offset);
	truncate(S.log, 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(S.log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(fd, 2);
		dup2(fd, 1);
		execl(S.bin, "namebumpd", "--listen", l4, "--listen", l6, "--db", S.db, "--key",
		      S.key, "--config", S.cfg, "--test-clock-offset", off, (char *)NULL);
		_exit(127);
	}
	S.pid = pid;
	/* ready once it logged so */
	for (int i = 0; i < 500; i++) {
		char *text = NULL;
		size_t len = 0;
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid) {
			S.pid = 0;
			fail_msg("namebumpd exited early (status %d)", st);
		}
		if (!warp_read_file(S.log, 1 << 20, &text, &len) && strstr(text, ": ready (")) {
			free(text);
			return;
		}
		free(text);
		usleep(10000);
	}
	fail_msg("namebumpd did not become ready");
}

static int server_stop(int sig)
{
	int st = 0;

	if (!S.pid)
		return -1;
	kill(S.pid, sig);
	waitpid(S.pid, &st, 0);
	S.pid = 0;
	return st;
}

static struct warp_name_client *client(bool pin, bool seal)
{
	struct warp_name_client_opts o = { 0 };
	struct warp_name_client *c;
	char spec[64];

	o.timeout_ms = 2000;
	o.retry_ms = 100;
	o.local = -1;
	o.seal = seal;
	o.clock_offset_ms = S.offset;
	c = warp_name_client_new(loop, &o);
	assert_non_null(c);
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", S.port);
	assert_int_equal(warp_name_client_add_server(c, spec, pin ? S.pub : NULL), 0);
	return c;
}

static int setup(void **state)
{
	const char *build = getenv("WARP_BUILD");
	char *text = NULL;
	size_t len;
	FILE *p;
	char cmd[700], hex[80] = "";

	assert_int_equal(warp_crypto_init(), 0);
	memset(&S, 0, sizeof(S));
	snprintf(S.bin, sizeof(S.bin), "%s/bin/namebumpd", build ? build : "build");
	if (access(S.bin, X_OK)) {
		print_message("# no %s: build it first\n", S.bin);
		return -1;
	}
	snprintf(S.dir, sizeof(S.dir), "/tmp/nbtest.XXXXXX");
	assert_non_null(mkdtemp(S.dir));
	snprintf(S.db, sizeof(S.db), "%s/names.db", S.dir);
	snprintf(S.key, sizeof(S.key), "%s/server.key", S.dir);
	snprintf(S.log, sizeof(S.log), "%s/server.log", S.dir);
	snprintf(S.cfg, sizeof(S.cfg), "%s/config.json", S.dir);
	S.port = free_port(AF_INET);
	S.port6 = free_port(AF_INET6);
	snprintf(cmd, sizeof(cmd), "%s --print-key --key %s", S.bin, S.key);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(hex, sizeof(hex), p));
	pclose(p);
	hex[strcspn(hex, "\n")] = '\0';
	assert_int_equal(warp_hex_decode(S.pub, sizeof(S.pub), hex), 0);
	(void)text;
	(void)len;
	loop = warp_loop_new();
	alice_key = warp_identity_generate();
	bob_key = warp_identity_generate();
	assert_non_null(loop);
	write_config("{\"rate\": 0}\n");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	server_stop(SIGKILL);
	warp_identity_free(alice_key);
	warp_identity_free(bob_key);
	warp_loop_free(loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", S.dir);
	if (system(cmd)) {
	}
	return 0;
}

/* ---- raw datagrams ---- */

static int raw_sock(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct timeval tv = { 0, 300000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Sends buf; returns the reply length (0: none) and the parsed reply. */
static size_t raw_exchange(int fd, const void *buf, size_t len, struct wn_reply *rep)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(S.port) };
	static uint8_t in[WN_MAX_PACKET];
	struct wn_auth auth;
	size_t body;
	ssize_t n;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(sendto(fd, buf, len, 0, (struct sockaddr *)&a, sizeof(a)), (ssize_t)len);
	n = recv(fd, in, sizeof(in), 0);
	if (n <= 0)
		return 0;
	assert_true((size_t)n <= len); /* never amplifies */
	assert_int_equal(wn_reply_decode(in, (size_t)n, rep, &body, &auth), 0);
	assert_memory_equal(auth.server, S.pub, WARP_PUBKEY_LEN);
	assert_int_equal(wn_reply_verify(in, body, &auth), 0);
	return (size_t)n;
}

static int raw_put(int fd, const struct warp_identity *id, const char *name, const char *value,
		   uint64_t updated, uint8_t *pkt, size_t *pkt_len)
{
	struct wn_request req = { 0 };
	struct wn_reply rep;
	uint8_t buf[WN_MAX_PACKET];
	int n;

	req.type = WN_T_PUT;
	warp_random(&req.id, sizeof(req.id));
	assert_int_equal(
		wn_record_make(&req.rec, id, WN_REC_LIVE, name, value, strlen(value), updated), 0);
	n = wn_request_encode(&req, buf, sizeof(buf), 0);
	assert_true(n > 0);
	if (pkt) {
		memcpy(pkt, buf, (size_t)n);
		*pkt_len = (size_t)n;
	}
	if (!raw_exchange(fd, buf, (size_t)n, &rep))
		return -1;
	assert_int_equal(rep.id, req.id);
	return rep.status;
}

static uint64_t now_ms(void)
{
	return (uint64_t)((int64_t)warp_wall_ms() + S.offset);
}

/* ---- tests ---- */

static void test_put_get_read_your_writes(void **state)
{
	struct warp_name_client *c;
	struct warp_name_result r;
	static const char addr[] = "node-address-blob-v1";

	S.offset = 0;
	write_config("{\"rate\": 0}\n");
	server_start();
	c = client(true, false);
	assert_int_equal(
		warp_name_put_sync(c, alice_key, "Alice", addr, sizeof(addr), WARP_NAME_BUMP, &r),
		0);
	assert_true(r.stored);
	assert_int_equal(r.server, 0);
	assert_int_equal(r.n_ok, 1);
	assert_string_equal(r.name, "alice.p2p");
	/* immediately visible: no settling delay */
	assert_int_equal(warp_name_get_sync(c, "alice", &r), 0);
	assert_true(r.found);
	assert_int_equal(r.server, 0);
	assert_int_equal(r.value_len, sizeof(addr));
	assert_memory_equal(r.value, addr, sizeof(addr));
	assert_memory_equal(r.owner, warp_identity_pubkey(alice_key), WARP_PUBKEY_LEN);
	assert_int_equal(warp_name_get_sync(c, "nobody", &r), -WARP_ENOTFOUND);
	assert_false(r.found);
	/* an update with a new value */
	assert_int_equal(warp_name_put_sync(c, alice_key, "alice.p2p", "v2", 2, WARP_NAME_BUMP, &r),
			 0);
	assert_int_equal(warp_name_get_sync(c, "alice", &r), 0);
	assert_int_equal(r.value_len, 2);
	warp_name_client_free(c);
}

static void test_ownership(void **state)
{
	struct warp_name_client *c = client(true, false);
	struct warp_name_result r;

	assert_int_equal(warp_name_put_sync(c, bob_key, "alice", "evil", 4, WARP_NAME_BUMP, &r),
			 -WARP_ENOTOWNER);
	assert_false(r.stored);
	assert_memory_equal(r.owner, warp_identity_pubkey(alice_key), WARP_PUBKEY_LEN);
	assert_int_equal(warp_name_delete_sync(c, bob_key, "alice", &r), -WARP_ENOTOWNER);
	assert_int_equal(warp_name_get_sync(c, "alice", &r), 0);
	assert_int_equal(r.value_len, 2);
	warp_name_client_free(c);
}

static void test_replay_and_window(void **state)
{
	uint8_t old[WN_MAX_PACKET];
	size_t old_len;
	struct wn_reply rep;
	int fd = raw_sock();
	uint64_t t = now_ms();

	assert_int_equal(raw_put(fd, alice_key, "carol.p2p", "one", t, old, &old_len), WN_OK);
	/* the same datagram again: an idempotent retransmission */
	assert_true(raw_exchange(fd, old, old_len, &rep) > 0);
	assert_int_equal(rep.status, WN_OK);
	/* a newer record, then the old one replayed */
	assert_int_equal(raw_put(fd, alice_key, "carol.p2p", "two", t + 5, NULL, NULL), WN_OK);
	assert_true(raw_exchange(fd, old, old_len, &rep) > 0);
	assert_int_equal(rep.status, WN_REPLAY);
	assert_true(rep.flags & WN_RF_RECORD);
	assert_int_equal(rep.rec.updated, t + 5);
	/* same timestamp, different content: not newer */
	assert_int_equal(raw_put(fd, alice_key, "carol.p2p", "three", t + 5, NULL, NULL),
			 WN_REPLAY);
	/* outside the clock window, either way */
	assert_int_equal(raw_put(fd, alice_key, "dave.p2p", "x", t - 120000, NULL, NULL), WN_STALE);
	assert_int_equal(raw_put(fd, alice_key, "dave.p2p", "x", t + 120000, NULL, NULL), WN_STALE);
	close(fd);
}

static void test_delete_tombstone(void **state)
{
	struct warp_name_client *c = client(true, false);
	struct warp_name_result r;
	uint8_t old[WN_MAX_PACKET];
	size_t old_len;
	struct wn_reply rep;
	int fd = raw_sock();

	assert_int_equal(raw_put(fd, alice_key, "erin.p2p", "e", now_ms() - 10, old, &old_len),
			 WN_OK);
	assert_int_equal(warp_name_delete_sync(c, alice_key, "erin", &r), 0);
	assert_int_equal(warp_name_get_sync(c, "erin", &r), -WARP_ENOTFOUND);
	assert_true(r.deleted);
	/* the signed PUT from before the delete cannot bring it back */
	assert_true(raw_exchange(fd, old, old_len, &rep) > 0);
	assert_int_equal(rep.status, WN_REPLAY);
	/* nor can another key take it over while the tombstone lives */
	assert_int_equal(warp_name_put_sync(c, bob_key, "erin", "b", 1, WARP_NAME_BUMP, &r),
			 -WARP_ENOTOWNER);
	/* the owner may write it again */
	assert_int_equal(warp_name_put_sync(c, alice_key, "erin", "again", 5, WARP_NAME_BUMP, &r),
			 0);
	assert_int_equal(warp_name_get_sync(c, "erin", &r), 0);
	/* deleting a name nobody has is "not found" and stores nothing */
	assert_int_equal(warp_name_delete_sync(c, alice_key, "ghost", &r), -WARP_ENOTFOUND);
	close(fd);
	warp_name_client_free(c);
}

static void test_malformed(void **state)
{
	int fd = raw_sock();
	uint8_t buf[400], pkt[WN_MAX_PACKET];
	struct wn_reply rep;
	struct wn_request req = { 0 };
	size_t len;
	int n;

	/* not our magic: silence */
	memset(buf, 0xab, sizeof(buf));
	assert_int_equal(raw_exchange(fd, buf, sizeof(buf), &rep), 0);
	/* too short for any signed answer: silence (no amplification) */
	memcpy(buf, "WN\x01\x01", 4);
	assert_int_equal(raw_exchange(fd, buf, 20, &rep), 0);
	/* wrong version */
	memset(buf + 4, 0, sizeof(buf) - 4);
	buf[2] = 9;
	assert_true(raw_exchange(fd, buf, sizeof(buf), &rep) > 0);
	assert_int_equal(rep.status, WN_BAD_VERSION);
	/* unknown type */
	buf[2] = WN_VERSION;
	buf[3] = 0x42;
	assert_true(raw_exchange(fd, buf, sizeof(buf), &rep) > 0);
	assert_int_equal(rep.status, WN_BAD_TYPE);
	/* GET with a bad name, a foreign TLD, a truncated body */
	req.type = WN_T_GET;
	req.id = 7;
	snprintf(req.name, sizeof(req.name), "Alice.p2p");
	n = wn_request_encode(&req, pkt, sizeof(pkt), 400);
	assert_true(raw_exchange(fd, pkt, (size_t)n, &rep) > 0);
	assert_int_equal(rep.status, WN_BAD_NAME);
	assert_int_equal(rep.id, 7);
	snprintf(req.name, sizeof(req.name), "alice.com");
	n = wn_request_encode(&req, pkt, sizeof(pkt), 400);
	assert_true(raw_exchange(fd, pkt, (size_t)n, &rep) > 0);
	assert_int_equal(rep.status, WN_BAD_TLD);
	snprintf(req.name, sizeof(req.name), "alice.p2p");
	n = wn_request_encode(&req, pkt, sizeof(pkt), 400);
	pkt[13] = 200; /* name length past the end of the packet */
	assert_true(raw_exchange(fd, pkt, (size_t)n, &rep) > 0);
	assert_int_equal(rep.status, WN_BAD_NAME);
	n = wn_request_encode(&req, pkt, sizeof(pkt), 400);
	pkt[n - 1] = 1; /* padding must be zero */
	assert_true(raw_exchange(fd, pkt, (size_t)n, &rep) > 0);
	assert_int_equal(rep.status, WN_MALFORMED);
	/* PUT: bad signature, oversized value, trailing bytes */
	req.type = WN_T_PUT;
	assert_int_equal(
		wn_record_make(&req.rec, alice_key, WN_REC_LIVE, "frank.p2p", "v", 1, now_ms()), 0);
	req.rec.sig[5] ^= 1;
	n = wn_request_encode(&req, pkt, sizeof(pkt), 0);
	assert_true(raw_exchange(fd, pkt, (size_t)n, &rep) > 0);
	assert_int_equal(rep.status, WN_BAD_SIG);
	req.rec.sig[5] ^= 1;
	n = wn_request_encode(&req, pkt, sizeof(pkt), 0);
	/* value_len sits after type(1) bump(1) kind(1) nlen(1) name(9) */
	warp_put_u16(pkt + WN_HDR_LEN + 3 + 9, 1500);
	assert_true(raw_exchange(fd, pkt, (size_t)n, &rep) > 0);
	assert_int_equal(rep.status, WN_TOO_BIG);
	n = wn_request_encode(&req, pkt, sizeof(pkt), 0);
	len = (size_t)n;
	pkt[len++] = 0;
	assert_true(raw_exchange(fd, pkt, len, &rep) > 0);
	assert_int_equal(rep.status, WN_MALFORMED);
	assert_int_equal(rep.detail, WARP_ETRAILING);
	/* bad bump behaviour */
	req.bump = 7;
	n = wn_request_encode(&req, pkt, sizeof(pkt), 0);
	assert_true(raw_exchange(fd, pkt, (size_t)n, &rep) > 0);
	assert_int_equal(rep.status, WN_BAD_BUMP);
	/* random junk with our header, many times: the server must survive */
	for (int i = 0; i < 300; i++) {
		warp_random(buf, sizeof(buf));
		memcpy(buf, "WN\x01", 3);
		buf[3] = (uint8_t)(1 + i % 3);
		raw_exchange(fd, buf, WN_MIN_REQUEST + (size_t)(i % 50), &rep);
	}
	assert_int_equal(waitpid(S.pid, NULL, WNOHANG), 0);
	close(fd);
}

static void test_tcp_for_large_values(void **state)
{
	struct warp_name_client *c = client(true, false);
	struct warp_name_result r;
	uint8_t big[WARP_NAME_VALUE_MAX];

	warp_random(big, sizeof(big));
	assert_int_equal(
		warp_name_put_sync(c, alice_key, "bigvalue", big, sizeof(big), WARP_NAME_BUMP, &r),
		0);
	/* the answer does not fit the padded GET: TRUNCATED over UDP, then TCP */
	assert_int_equal(warp_name_get_sync(c, "bigvalue", &r), 0);
	assert_int_equal(r.value_len, sizeof(big));
	assert_memory_equal(r.value, big, sizeof(big));
	assert_int_equal(warp_name_put_sync(c, alice_key, "bigvalue", big, sizeof(big) + 1,
					    WARP_NAME_BUMP, &r),
			 -EMSGSIZE);
	warp_name_client_free(c);
}

static void test_sealed_and_pinning(void **state)
{
	struct warp_name_client *c = client(true, true);
	struct warp_name_client_opts o = { 0 };
	struct warp_name_result r;
	uint8_t wrong[WARP_PUBKEY_LEN];
	char spec[64];

	assert_int_equal(warp_name_put_sync(c, alice_key, "sealed", "s", 1, WARP_NAME_BUMP, &r), 0);
	assert_int_equal(warp_name_get_sync(c, "sealed", &r), 0);
	assert_int_equal(r.value[0], 's');
	warp_name_client_free(c);
	/* a pinned key the server does not hold: every reply is ignored */
	memcpy(wrong, warp_identity_pubkey(bob_key), sizeof(wrong));
	o.timeout_ms = 400;
	o.local = -1;
	c = warp_name_client_new(loop, &o);
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", S.port);
	assert_int_equal(warp_name_client_add_server(c, spec, wrong), 0);
	assert_int_equal(warp_name_get_sync(c, "sealed", &r), -ETIMEDOUT);
	warp_name_client_free(c);
}

static void test_several_servers(void **state)
{
	struct warp_name_client_opts o = { 0 };
	struct warp_name_client *c;
	struct warp_name_result r;
	char spec[96];

	o.timeout_ms = 600;
	o.retry_ms = 100;
	o.local = -1;
	c = warp_name_client_new(loop, &o);
	assert_non_null(c);
	/* a dead server first, then the real one over IPv6 with its pinned key */
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", free_port(AF_INET));
	assert_int_equal(warp_name_client_add_server(c, spec, NULL), 0);
	{
		char hex[2 * WARP_PUBKEY_LEN + 1];

		warp_hex_encode(hex, S.pub, WARP_PUBKEY_LEN);
		snprintf(spec, sizeof(spec), "[::1]:%u,%s", S.port6, hex);
	}
	assert_int_equal(warp_name_client_add_server_spec(c, spec), 1);
	assert_int_equal(warp_name_put_sync(c, bob_key, "bob", "b", 1, WARP_NAME_BUMP, &r), 0);
	assert_int_equal(r.server, 1);
	assert_int_equal(r.n_ok, 1);
	assert_int_equal(r.n_err, 1);
	assert_int_equal(warp_name_get_sync(c, "bob", &r), 0);
	assert_int_equal(r.server, 1);
	assert_non_null(strstr(r.server_addr, "::1"));
	warp_name_client_free(c);
}

static void test_restart_and_sigkill(void **state)
{
	struct warp_name_client *c = client(true, false);
	struct warp_name_result r;
	char name[32];

	server_stop(SIGTERM);
	server_start();
	assert_int_equal(warp_name_get_sync(c, "alice", &r), 0);
	assert_int_equal(warp_name_get_sync(c, "bob", &r), 0);
	/* acknowledged writes survive a crash right after the acknowledgement */
	for (int i = 0; i < 15; i++) {
		snprintf(name, sizeof(name), "crash%d", i);
		assert_int_equal(warp_name_put_sync(c, bob_key, name, name, strlen(name),
						    WARP_NAME_BUMP, &r),
				 0);
	}
	server_stop(SIGKILL);
	server_start();
	for (int i = 0; i < 15; i++) {
		snprintf(name, sizeof(name), "crash%d", i);
		assert_int_equal(warp_name_get_sync(c, name, &r), 0);
		assert_int_equal(r.value_len, strlen(name));
	}
	warp_name_client_free(c);
}

/*
 * SIGKILL in the middle of a burst of writes: every PUT that was acknowledged before the kill
 * is there after the restart (unacknowledged ones may or may not be).
 */
static void test_sigkill_under_load(void **state)
{
	enum { N = 300 };
	static uint8_t pkts[N][WN_MAX_PACKET];
	static size_t lens[N];
	static bool acked[N];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(S.port) };
	struct warp_name_client *c;
	struct warp_name_result r;
	uint8_t in[WN_MAX_PACKET];
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), n_acked = 0;
	uint64_t t = now_ms();

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	server_stop(SIGTERM);
	write_config("{\"rate\": 0, \"quota_v4\": 1000}\n");
	server_start();
	for (int i = 0; i < N; i++) {
		struct wn_request req = { .type = WN_T_PUT, .id = (uint64_t)i };
		char name[32];

		snprintf(name, sizeof(name), "burst%d.p2p", i);
		assert_int_equal(
			wn_record_make(&req.rec, bob_key, WN_REC_LIVE, name, name, strlen(name), t),
			0);
		lens[i] = (size_t)wn_request_encode(&req, pkts[i], WN_MAX_PACKET, 0);
		acked[i] = false;
	}
	for (int i = 0; i < N; i++) {
		sendto(fd, pkts[i], lens[i], 0, (struct sockaddr *)&a, sizeof(a));
		usleep(300); /* a steady stream, not one burst the server sees at once */
		/* collect what is acknowledged so far, kill half-way through the burst */
		for (;;) {
			ssize_t m = recv(fd, in, sizeof(in), 0);
			struct wn_reply rep;
			struct wn_auth auth;
			size_t body;

			if (m <= 0)
				break;
			if (!wn_reply_decode(in, (size_t)m, &rep, &body, &auth) &&
			    rep.status == WN_OK && rep.id < N && !acked[rep.id]) {
				acked[rep.id] = true;
				n_acked++;
			}
		}
		if (i == N / 2)
			server_stop(SIGKILL);
	}
	close(fd);
	print_message("# %d of %d PUTs acknowledged before SIGKILL\n", n_acked, N);
	assert_true(n_acked > 0);
	server_start();
	c = client(true, false);
	for (int i = 0; i < N; i++) {
		char name[32];

		if (!acked[i])
			continue;
		snprintf(name, sizeof(name), "burst%d", i);
		assert_int_equal(warp_name_get_sync(c, name, &r), 0);
	}
	warp_name_client_free(c);
}

static void quota_server(int64_t offset)
{
	server_stop(SIGTERM);
	S.offset = offset;
	write_config("{\"rate\": 0, \"quota_v4\": 20, \"quota_v6_128\": 2, \"min_age_s\": 3600,"
		     " \"lifetime_s\": 604800}\n");
	server_start();
}

/* Names from 127.0.0.1: everything above counts against one IPv4 quota. */
static void test_quotas_and_bumping(void **state)
{
	struct warp_name_client *c;
	struct warp_name_result r;
	char name[32];
	int have;

	/* fresh database for exact counts */
	server_stop(SIGTERM);
	unlink(S.db);
	{
		char p[128];

		snprintf(p, sizeof(p), "%s-wal", S.db);
		unlink(p);
		snprintf(p, sizeof(p), "%s-shm", S.db);
		unlink(p);
	}
	quota_server(0);
	c = client(true, false);
	for (have = 0; have < 20; have++) {
		snprintf(name, sizeof(name), "q%d", have);
		assert_int_equal(warp_name_put_sync(c, alice_key, name, "q", 1, WARP_NAME_BUMP, &r),
				 0);
	}
	/* full: the three behaviours, nothing old enough to bump yet */
	assert_int_equal(warp_name_put_sync(c, alice_key, "extra", "x", 1, WARP_NAME_ERROR, &r),
			 -WARP_EQUOTA);
	assert_int_equal(warp_name_put_sync(c, alice_key, "extra", "x", 1, WARP_NAME_NO_BUMP, &r),
			 0);
	assert_false(r.stored);
	assert_int_equal(warp_name_put_sync(c, alice_key, "extra", "x", 1, WARP_NAME_BUMP, &r),
			 -WARP_EQUOTA);
	assert_int_equal(warp_name_get_sync(c, "extra", &r), -WARP_ENOTFOUND);
	/* refreshing a name it already holds is always allowed */
	assert_int_equal(warp_name_put_sync(c, alice_key, "q0", "r", 1, WARP_NAME_ERROR, &r), 0);
	warp_name_client_free(c);

	/* two days later: past the minimum age, the busy address's names are bumpable */
	quota_server((int64_t)(2 * DAY_MS));
	c = client(true, false);
	assert_int_equal(warp_name_put_sync(c, alice_key, "extra", "x", 1, WARP_NAME_NO_BUMP, &r),
			 0);
	assert_false(r.stored);
	assert_int_equal(warp_name_put_sync(c, alice_key, "extra", "x", 1, WARP_NAME_ERROR, &r),
			 -WARP_EQUOTA);
	assert_int_equal(warp_name_put_sync(c, alice_key, "extra", "x", 1, WARP_NAME_BUMP, &r), 0);
	assert_true(r.stored);
	assert_int_equal(warp_name_get_sync(c, "extra", &r), 0);
	/*
	 * The more names the address held when a name was written, the sooner it became
	 * bumpable: after two days q15..q19 and q0 (refreshed at quota) are, q0..q14 written
	 * early are not.  The least recently refreshed bumpable one goes: q15.
	 */
	assert_int_equal(warp_name_get_sync(c, "q15", &r), -WARP_ENOTFOUND);
	assert_int_equal(warp_name_get_sync(c, "q14", &r), 0);
	assert_int_equal(warp_name_get_sync(c, "q16", &r), 0);
	assert_int_equal(warp_name_get_sync(c, "q0", &r), 0);
	warp_name_client_free(c);

	/* eight days later: unrefreshed names are gone, anyone may claim them */
	quota_server((int64_t)(10 * DAY_MS));
	c = client(true, false);
	assert_int_equal(warp_name_get_sync(c, "q2", &r), -WARP_ENOTFOUND);
	assert_int_equal(warp_name_put_sync(c, bob_key, "q2", "mine", 4, WARP_NAME_ERROR, &r), 0);
	warp_name_client_free(c);
}

/* IPv6 /128 bucket over ::1 (the /64 and /48 buckets: test_namebumpd_core). */
static void test_ipv6_quota(void **state)
{
	struct warp_name_client_opts o = { 0 };
	struct warp_name_client *c;
	struct warp_name_result r;
	char spec[64];

	o.timeout_ms = 2000;
	o.local = -1;
	o.clock_offset_ms = S.offset;
	c = warp_name_client_new(loop, &o);
	snprintf(spec, sizeof(spec), "[::1]:%u", S.port6);
	assert_int_equal(warp_name_client_add_server(c, spec, S.pub), 0);
	assert_int_equal(warp_name_put_sync(c, alice_key, "six1", "6", 1, WARP_NAME_ERROR, &r), 0);
	assert_int_equal(warp_name_put_sync(c, alice_key, "six2", "6", 1, WARP_NAME_ERROR, &r), 0);
	assert_int_equal(warp_name_put_sync(c, alice_key, "six3", "6", 1, WARP_NAME_ERROR, &r),
			 -WARP_EQUOTA);
	assert_int_equal(warp_name_put_sync(c, alice_key, "six3", "6", 1, WARP_NAME_NO_BUMP, &r),
			 0);
	assert_false(r.stored);
	warp_name_client_free(c);
}

static void test_rate_limit(void **state)
{
	int fd = raw_sock();
	struct wn_request req = { 0 };
	struct wn_reply rep;
	uint8_t pkt[WN_MAX_PACKET];
	int n, limited = 0, ok = 0;

	server_stop(SIGTERM);
	S.offset = 0;
	write_config("{\"rate\": 5, \"burst\": 10}\n");
	server_start();
	req.type = WN_T_GET;
	snprintf(req.name, sizeof(req.name), "alice.p2p");
	for (int i = 0; i < 30; i++) {
		req.id = (uint64_t)i + 1;
		n = wn_request_encode(&req, pkt, sizeof(pkt), 1024);
		if (!raw_exchange(fd, pkt, (size_t)n, &rep))
			continue;
		if (rep.status == WN_RATE_LIMITED) {
			limited++;
			assert_true(rep.detail > 0);
		} else {
			ok++;
		}
	}
	assert_in_range(ok, 9, 12);
	assert_true(limited > 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_read_your_writes),
		cmocka_unit_test(test_ownership),
		cmocka_unit_test(test_replay_and_window),
		cmocka_unit_test(test_delete_tombstone),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_tcp_for_large_values),
		cmocka_unit_test(test_sealed_and_pinning),
		cmocka_unit_test(test_several_servers),
		cmocka_unit_test(test_restart_and_sigkill),
		cmocka_unit_test(test_sigkill_under_load),
		cmocka_unit_test(test_quotas_and_bumping),
		cmocka_unit_test(test_ipv6_quota),
		cmocka_unit_test(test_rate_limit),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
