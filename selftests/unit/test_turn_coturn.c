// SPDX-License-Identifier: MIT
/*
 * TURN client against real coturn instances on loopback, started by the test (long-term
 * credentials u:p in realm "lab", no TLS/DTLS, random high ports, files in a temporary
 * directory, loopback peers allowed) and killed in every case (teardown, atexit, signals,
 * PR_SET_PDEATHSIG):
 *   main    UDP + TCP listeners
 *   quota   --user-quota 1: deallocation is proven by the next allocation succeeding
 *   short   --permission-lifetime=3 --channel-lifetime=5: refreshes are proven necessary
 *   tcponly --no-udp: UDP fails fast, TCP works
 * Covered: allocation over UDP and TCP (timed), wrong password, two clients relaying to each
 * other through channels both ways, a Send indication before the channel exists, a plain
 * UDP peer talking to a relayed address, refreshes with short lifetimes, deallocation, and
 * a warpgate pipe handshake and messages over a relay path.  Prints the allocation times
 * and the relayed round-trip overhead against direct UDP on loopback.
 * Skipped (exit 77) when turnserver is not installed or cannot start.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/config.h>
#include <warpgate/error.h>
#include <warpgate/identity.h>
#include <warpgate/loop.h>
#include <warpgate/node.h>
#include <warpgate/pipe.h>

#include "core/util.h"
#include "nat/stun.h"
#include "net/endpoint.h"
#include "net/sock.h"
#include "pipe/pipe_internal.h"
#include "relay/turn_io.h"
#include "relay/turn_path.h"

struct server {
	const char *name;
	pid_t pid;
	uint16_t port;
};

static char tmpdir[64];
static struct server s_main = { .name = "main" }, s_quota = { .name = "quota" },
		     s_short = { .name = "short" }, s_tcponly = { .name = "tcponly" };
static struct server *const servers[] = { &s_main, &s_quota, &s_short, &s_tcponly };

static void stop(struct server *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGTERM);
	kill(s->pid, SIGCONT); /* in case a test froze it */
	for (int i = 0; i < 40; i++) {
		if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
			s->pid = 0;
			return;
		}
		usleep(50000);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
}

static void stop_all(void)
{
	for (size_t i = 0; i < sizeof(servers) / sizeof(servers[0]); i++)
		stop(servers[i]);
}

static void on_signal(int sig)
{
	stop_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* A STUN Binding over UDP or TCP answered within 300 ms: the server is up. */
static bool answers(uint16_t port, bool tcp)
{
	struct sockaddr_storage srv;
	struct warp_stun_builder b;
	uint8_t buf[512], tid[WARP_STUN_TID_LEN];
	struct pollfd pfd;
	bool ok = false;
	int fd, n;

	warp_ep_parse("127.0.0.1", port, &srv);
	fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0)
		return false;
	warp_random(tid, sizeof(tid));
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_BINDING, WARP_STUN_REQUEST, tid);
	n = warp_stun_build_end(&b);
	if (connect(fd, (struct sockaddr *)&srv, warp_ep_len((struct sockaddr *)&srv)) == 0 &&
	    send(fd, buf, (size_t)n, MSG_NOSIGNAL) == n) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		ok = poll(&pfd, 1, 300) == 1 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0;
	}
	close(fd);
	return ok;
}

static int start_server(struct server *s, const char *const *extra)
{
	for (int attempt = 0; attempt < 4; attempt++) {
		char port[8], log[128], pidf[128], db[128];
		const char *argv[48];
		int n = 0;
		bool up = false, udp = true;

		s->port = (uint16_t)(20000 + warp_random_uniform(30000));
		snprintf(port, sizeof(port), "%u", s->port);
		snprintf(log, sizeof(log), "%s/%s.log", tmpdir, s->name);
		snprintf(pidf, sizeof(pidf), "%s/%s.pid", tmpdir, s->name);
		snprintf(db, sizeof(db), "%s/%s.db", tmpdir, s->name);
		argv[n++] = "turnserver";
		argv[n++] = "-n";
		argv[n++] = "--no-tls";
		argv[n++] = "--no-dtls";
		argv[n++] = "--no-cli";
		argv[n++] = "--no-stdout-log";
		argv[n++] = "--simple-log";
		argv[n++] = "--log-file";
		argv[n++] = log;
		argv[n++] = "--pidfile";
		argv[n++] = pidf;
		argv[n++] = "--userdb";
		argv[n++] = db;
		argv[n++] = "--lt-cred-mech";
		argv[n++] = "--user";
		argv[n++] = "u:p";
		argv[n++] = "--realm";
		argv[n++] = "lab";
		argv[n++] = "--allow-loopback-peers";
		argv[n++] = "--listening-ip";
		argv[n++] = "127.0.0.1";
		argv[n++] = "--relay-ip";
		argv[n++] = "127.0.0.1";
		argv[n++] = "--listening-port";
		argv[n++] = port;
		for (int i = 0; extra && extra[i]; i++) {
			argv[n++] = extra[i];
			if (!strcmp(extra[i], "--no-udp"))
				udp = false;
		}
		argv[n] = NULL;
		s->pid = fork();
		if (s->pid == 0) {
			int fd = open("/dev/null", O_RDWR);

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			execvp(argv[0], (char *const *)argv);
			_exit(127);
		}
		if (s->pid < 0)
			return -1;
		for (int i = 0; i < 30 && !up; i++) {
			usleep(100000);
			if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
				s->pid = 0;
				break;
			}
			up = answers(s->port, !udp);
		}
		if (up)
			return 0;
		stop(s);
	}
	return -1;
}

static int setup(void **state)
{
	static const char *const quota[] = { "--user-quota", "1", NULL };
	/* coturn 4.6 only takes these two in the --opt=value form */
	static const char *const shortl[] = { "--permission-lifetime=3", "--channel-lifetime=5",
					      NULL };
	static const char *const tcponly[] = { "--no-udp", NULL };

	if (system("command -v turnserver >/dev/null 2>&1") != 0) {
		fprintf(stderr, "turnserver (coturn) is not installed\n");
		exit(77);
	}
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/warp-turn-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	atexit(stop_all);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	if (start_server(&s_main, NULL) || start_server(&s_quota, quota) ||
	    start_server(&s_short, shortl) || start_server(&s_tcponly, tcponly)) {
		char cmd[128];

		stop_all();
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmpdir);
		fprintf(stderr, "turnserver did not come up on loopback\n");
		exit(77);
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	stop_all();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ clients */

#define MSG_MAX 9000

struct client {
	struct warp_turn_io *io;
	int allocated, err;
	struct warp_turn_info info;
	int perms, perm_err;
	int lost, lost_err;
	bool echo; /* send what arrives back to its sender */
	int nrx;
	size_t rxbytes;
	int bad; /* payloads that did not match their pattern */
	uint8_t last[MSG_MAX];
	size_t lastlen;
	struct sockaddr_storage from;
	uint64_t last_rx_ns;
};

static void fill(uint8_t *buf, size_t len, uint32_t seq)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seq * 131 + i * 7 + (i >> 8));
	if (len >= 4) {
		buf[0] = (uint8_t)(seq >> 24);
		buf[1] = (uint8_t)(seq >> 16);
		buf[2] = (uint8_t)(seq >> 8);
		buf[3] = (uint8_t)seq;
	}
}

static bool pattern_ok(const uint8_t *buf, size_t len)
{
	uint8_t tmp[MSG_MAX];
	uint32_t seq;

	if (len < 4 || len > sizeof(tmp))
		return len < 4;
	seq = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
	fill(tmp, len, seq);
	return !memcmp(tmp, buf, len);
}

static void c_allocated(struct warp_turn_io *io, int err, const struct warp_turn_info *info,
			void *user)
{
	struct client *c = user;

	c->allocated++;
	c->err = err;
	if (info)
		c->info = *info;
}

static void c_peer(struct warp_turn_io *io, const struct sockaddr *peer, int err, void *user)
{
	struct client *c = user;

	c->perms++;
	c->perm_err = err;
}

static void c_data(struct warp_turn_io *io, const struct sockaddr *peer, uint8_t *data, size_t len,
		   void *user)
{
	struct client *c = user;

	c->nrx++;
	c->rxbytes += len;
	c->bad += !pattern_ok(data, len);
	c->lastlen = len < sizeof(c->last) ? len : sizeof(c->last);
	memcpy(c->last, data, c->lastlen);
	memcpy(&c->from, peer, warp_ep_len(peer));
	c->last_rx_ns = warp_time_ns();
	if (c->echo)
		warp_turn_io_send(io, peer, data, len);
}

static void c_lost(struct warp_turn_io *io, int err, void *user)
{
	struct client *c = user;

	c->lost++;
	c->lost_err = err;
}

static const struct warp_turn_io_ops c_ops = {
	.allocated = c_allocated,
	.peer = c_peer,
	.data = c_data,
	.lost = c_lost,
};

static bool c_done(void *user)
{
	return ((struct client *)user)->allocated > 0;
}

static bool c_perm(void *user)
{
	return ((struct client *)user)->perms > 0;
}

static void cfg_for(struct warp_turn_io_cfg *cfg, const struct server *s, bool tcp,
		    const char *password)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->turn.username = "u";
	cfg->turn.password = password ? password : "p";
	cfg->turn.realm = "lab";
	cfg->turn.software = "warpgate-test";
	cfg->turn.transport = tcp ? WARP_TURN_TCP : WARP_TURN_UDP;
	cfg->turn.rto_ms = 200;
	cfg->turn.ti_ms = 5000;
	warp_ep_parse("127.0.0.1", s->port, &cfg->server);
}

/* Allocates and waits; returns the callback's error and the time it took. */
static int client_start(struct warp_loop *loop, struct client *c,
			const struct warp_turn_io_cfg *cfg, double *ms)
{
	uint64_t t0 = warp_time_ns();

	memset(c, 0, sizeof(*c));
	c->io = warp_turn_io_new(loop, cfg, &c_ops, c);
	assert_non_null(c->io);
	assert_int_equal(warp_loop_run_until(loop, c_done, c, 10000), 0);
	if (ms)
		*ms = (double)(warp_time_ns() - t0) / 1e6;
	return c->err;
}

struct count_wait {
	struct client *c;
	int n;
};

static bool got_n(void *user)
{
	struct count_wait *w = user;

	return w->c->nrx >= w->n;
}

static int wait_rx(struct warp_loop *loop, struct client *c, int n, int ms)
{
	struct count_wait w = { c, n };

	return warp_loop_run_until(loop, got_n, &w, ms);
}

static bool never(void *user)
{
	return false;
}

static void run_for(struct warp_loop *loop, int ms)
{
	warp_loop_run_until(loop, never, NULL, ms);
}

static bool released_all(void *user)
{
	return warp_turn_io_releasing(user) == 0;
}

/* Every deallocation must finish (the server answered), then the loop goes. */
static void loop_done(struct warp_loop *loop)
{
	assert_int_equal(warp_loop_run_until(loop, released_all, loop, 5000), 0);
	warp_turn_io_shutdown(loop);
	warp_loop_free(loop);
}

/* ------------------------------------------------------------------ tests */

static void test_allocate(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_turn_io_cfg cfg;
	struct client c;
	struct sockaddr_storage local;
	double ms[2][5];

	for (int tcp = 0; tcp < 2; tcp++) {
		for (int i = 0; i < 5; i++) {
			cfg_for(&cfg, &s_main, tcp, NULL);
			assert_int_equal(client_start(loop, &c, &cfg, &ms[tcp][i]), 0);
			assert_int_equal(c.info.relayed.ss_family, AF_INET);
			assert_true(warp_ep_is_loopback((struct sockaddr *)&c.info.relayed));
			/* the server saw our socket's own address: no NAT on loopback */
			assert_int_equal(warp_sock_local(warp_turn_io_fd(c.io), &local), 0);
			assert_true(warp_ep_equal((struct sockaddr *)&c.info.mapped,
						  (struct sockaddr *)&local));
			assert_int_equal(c.info.lifetime_s, 600);
			assert_string_equal(c.info.realm, "lab");
			warp_turn_io_release(c.io);
		}
	}
	run_for(loop, 300);
	for (int tcp = 0; tcp < 2; tcp++) {
		double best = ms[tcp][0], sum = 0;

		for (int i = 0; i < 5; i++) {
			sum += ms[tcp][i];
			if (ms[tcp][i] < best)
				best = ms[tcp][i];
		}
		printf("# allocate over %s on loopback: best %.2f ms, mean %.2f ms (5 runs, "
		       "401 dance included)\n",
		       tcp ? "tcp" : "udp", best, sum / 5);
	}

	/* wrong password: a clear error, fast */
	for (int tcp = 0; tcp < 2; tcp++) {
		double t;

		cfg_for(&cfg, &s_main, tcp, "wrong");
		assert_int_equal(client_start(loop, &c, &cfg, &t), -EACCES);
		assert_true(t < 1000);
		warp_turn_io_release(c.io);
	}
	/* a server without UDP: UDP fails fast on the ICMP error, TCP works */
	cfg_for(&cfg, &s_tcponly, false, NULL);
	{
		double t;

		assert_int_equal(client_start(loop, &c, &cfg, &t), -ECONNREFUSED);
		assert_true(t < 2000);
	}
	warp_turn_io_release(c.io);
	cfg_for(&cfg, &s_tcponly, true, NULL);
	assert_int_equal(client_start(loop, &c, &cfg, NULL), 0);
	warp_turn_io_release(c.io);
	loop_done(loop);
}

/* Sends n patterned messages of growing sizes from a to peer; waits for b to get them. */
static void burst(struct warp_loop *loop, struct client *a, const struct sockaddr *peer,
		  struct client *b, int n)
{
	int base = b->nrx;
	uint8_t buf[MSG_MAX];

	for (int i = 0; i < n; i++) {
		size_t len = 1 + (size_t)((i * 977) % 8000);

		fill(buf, len, (uint32_t)i);
		assert_int_equal(warp_turn_io_send(a->io, peer, buf, len), 0);
		/* pace: overflowing loopback socket buffers is not the point here */
		if (i % 4 == 3)
			run_for(loop, 1);
	}
	if (wait_rx(loop, b, base + n, 5000))
		fail_msg("%d of %d messages arrived", b->nrx - base, n);
	assert_int_equal(b->bad, 0);
}

static void test_two_clients(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_turn_io_cfg cfg;
	struct client a, b;
	uint8_t buf[64];

	/* a over UDP, b over TCP */
	cfg_for(&cfg, &s_main, false, NULL);
	assert_int_equal(client_start(loop, &a, &cfg, NULL), 0);
	cfg_for(&cfg, &s_main, true, NULL);
	assert_int_equal(client_start(loop, &b, &cfg, NULL), 0);

	/* b lets a in first; then a adds b and sends before its channel exists */
	assert_int_equal(warp_turn_io_add_peer(b.io, (struct sockaddr *)&a.info.relayed, true), 0);
	assert_int_equal(warp_loop_run_until(loop, c_perm, &b, 3000), 0);
	assert_int_equal(b.perm_err, 0);
	assert_int_equal(warp_turn_io_add_peer(a.io, (struct sockaddr *)&b.info.relayed, true), 0);
	assert_int_equal(
		warp_turn_peer_channel(warp_turn_io_core(a.io), (struct sockaddr *)&b.info.relayed),
		0);
	fill(buf, sizeof(buf), 7);
	assert_int_equal(
		warp_turn_io_send(a.io, (struct sockaddr *)&b.info.relayed, buf, sizeof(buf)), 0);
	assert_int_equal(wait_rx(loop, &b, 1, 3000), 0);
	assert_int_equal(b.lastlen, sizeof(buf));
	assert_memory_equal(b.last, buf, sizeof(buf));
	assert_true(warp_ep_equal((struct sockaddr *)&b.from, (struct sockaddr *)&a.info.relayed));
	assert_int_equal(warp_loop_run_until(loop, c_perm, &a, 3000), 0);
	assert_int_equal(a.perm_err, 0);
	run_for(loop, 100); /* channels bound */
	assert_int_equal(
		warp_turn_peer_channel(warp_turn_io_core(a.io), (struct sockaddr *)&b.info.relayed),
		0x4000);
	assert_int_equal(
		warp_turn_peer_channel(warp_turn_io_core(b.io), (struct sockaddr *)&a.info.relayed),
		0x4000);

	/* both ways through channels (UDP ChannelData one side, padded TCP the other) */
	burst(loop, &a, (struct sockaddr *)&b.info.relayed, &b, 200);
	burst(loop, &b, (struct sockaddr *)&a.info.relayed, &a, 200);
	assert_true(warp_ep_equal((struct sockaddr *)&a.from, (struct sockaddr *)&b.info.relayed));
	printf("# relayed %zu + %zu bytes intact through channels (udp <-> tcp)\n", a.rxbytes,
	       b.rxbytes);
	/* with Send indications only (peer added without a channel) */
	{
		struct client c;

		cfg_for(&cfg, &s_main, false, NULL);
		assert_int_equal(client_start(loop, &c, &cfg, NULL), 0);
		assert_int_equal(
			warp_turn_io_add_peer(c.io, (struct sockaddr *)&a.info.relayed, false), 0);
		assert_int_equal(
			warp_turn_io_add_peer(a.io, (struct sockaddr *)&c.info.relayed, false), 0);
		assert_int_equal(warp_loop_run_until(loop, c_perm, &c, 3000), 0);
		run_for(loop, 50);
		burst(loop, &c, (struct sockaddr *)&a.info.relayed, &a, 50);
		assert_true(warp_ep_equal((struct sockaddr *)&a.from,
					  (struct sockaddr *)&c.info.relayed));
		warp_turn_io_release(c.io);
	}
	warp_turn_io_release(a.io);
	warp_turn_io_release(b.io);
	loop_done(loop);
}

struct plain {
	int fd;
	int n;
	uint8_t buf[MSG_MAX];
	ssize_t len;
	struct sockaddr_storage from;
};

static void plain_rx(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct plain *p = user;
	socklen_t sl = sizeof(p->from);

	p->len = recvfrom(fd, p->buf, sizeof(p->buf), 0, (struct sockaddr *)&p->from, &sl);
	if (p->len >= 0)
		p->n++;
}

static bool plain_got(void *user)
{
	return ((struct plain *)user)->n > 0;
}

static void test_plain_peer(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_turn_io_cfg cfg;
	struct client a;
	struct plain p = { 0 };
	struct sockaddr_storage any, me;
	uint8_t buf[100];

	/* a peer without a relay sends straight to a's relayed address */
	cfg_for(&cfg, &s_main, false, NULL);
	assert_int_equal(client_start(loop, &a, &cfg, NULL), 0);
	warp_ep_parse("127.0.0.1", 1, &any);
	warp_ep_set_port((struct sockaddr *)&any, 0);
	p.fd = warp_sock_udp((struct sockaddr *)&any, 0);
	assert_true(p.fd >= 0);
	warp_sock_local(p.fd, &me);
	assert_int_equal(warp_loop_add_fd(loop, p.fd, WARP_EV_READ, plain_rx, &p), 0);
	assert_int_equal(warp_turn_io_add_peer(a.io, (struct sockaddr *)&me, true), 0);
	assert_int_equal(warp_loop_run_until(loop, c_perm, &a, 3000), 0);
	fill(buf, sizeof(buf), 3);
	assert_true(sendto(p.fd, buf, sizeof(buf), 0, (struct sockaddr *)&a.info.relayed,
			   warp_ep_len((struct sockaddr *)&a.info.relayed)) == sizeof(buf));
	assert_int_equal(wait_rx(loop, &a, 1, 3000), 0);
	assert_true(warp_ep_equal((struct sockaddr *)&a.from, (struct sockaddr *)&me));
	assert_memory_equal(a.last, buf, sizeof(buf));
	/* and gets the answer from the relayed address */
	assert_int_equal(warp_turn_io_send(a.io, (struct sockaddr *)&me, "answer", 6), 0);
	assert_int_equal(warp_loop_run_until(loop, plain_got, &p, 3000), 0);
	assert_int_equal(p.len, 6);
	assert_memory_equal(p.buf, "answer", 6);
	assert_true(warp_ep_equal((struct sockaddr *)&p.from, (struct sockaddr *)&a.info.relayed));
	warp_loop_del_fd(loop, p.fd);
	close(p.fd);
	warp_turn_io_release(a.io);
	loop_done(loop);
}

/* Exchanges one message each way every 250 ms for ms; returns how many arrived. */
static int exchange(struct warp_loop *loop, struct client *a, struct client *b, int ms)
{
	int sent = 0, base = a->nrx + b->nrx;
	uint64_t end = warp_time_ns() + (uint64_t)ms * 1000000ull;
	uint8_t buf[32];

	while (warp_time_ns() < end) {
		fill(buf, sizeof(buf), (uint32_t)sent);
		warp_turn_io_send(a->io, (struct sockaddr *)&b->info.relayed, buf, sizeof(buf));
		warp_turn_io_send(b->io, (struct sockaddr *)&a->info.relayed, buf, sizeof(buf));
		sent += 2;
		run_for(loop, 250);
	}
	run_for(loop, 200);
	return a->nrx + b->nrx - base;
}

static void pair_on(struct warp_loop *loop, struct client *a, struct client *b,
		    const struct warp_turn_cfg *tuning)
{
	struct warp_turn_io_cfg cfg;

	cfg_for(&cfg, &s_short, false, NULL);
	cfg.turn.perm_refresh_ms = tuning->perm_refresh_ms;
	cfg.turn.chan_refresh_ms = tuning->chan_refresh_ms;
	cfg.turn.refresh_ms = tuning->refresh_ms;
	assert_int_equal(client_start(loop, a, &cfg, NULL), 0);
	cfg.turn.transport = WARP_TURN_TCP;
	assert_int_equal(client_start(loop, b, &cfg, NULL), 0);
	warp_turn_io_add_peer(a->io, (struct sockaddr *)&b->info.relayed, true);
	warp_turn_io_add_peer(b->io, (struct sockaddr *)&a->info.relayed, true);
	assert_int_equal(warp_loop_run_until(loop, c_perm, a, 3000), 0);
	assert_int_equal(warp_loop_run_until(loop, c_perm, b, 3000), 0);
}

static void test_short_lifetimes(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_turn_cfg fast = { .perm_refresh_ms = 1000,
				      .chan_refresh_ms = 2000,
				      .refresh_ms = 1500 };
	struct warp_turn_cfg slow = { 0 };
	struct client a, b;
	int n;

	/* permissions live 3 s and channels 5 s on this server; refreshing every 1-2 s keeps
	 * the relay open for 9 s */
	pair_on(loop, &a, &b, &fast);
	n = exchange(loop, &a, &b, 9000);
	printf("# short lifetimes, refreshed: %d of %d messages relayed over 9 s\n", n, 2 * 36);
	assert_true(n >= 2 * 36 - 2);
	assert_int_equal(a.lost + b.lost, 0);
	warp_turn_io_release(a.io);
	warp_turn_io_release(b.io);

	/* control: without refreshes the server stops relaying once they expire */
	pair_on(loop, &a, &b, &slow);
	n = exchange(loop, &a, &b, 1000);
	assert_true(n >= 6);
	run_for(loop, 5500);
	n = exchange(loop, &a, &b, 1500);
	printf("# short lifetimes, not refreshed: %d messages relayed after expiry\n", n);
	assert_int_equal(n, 0);
	warp_turn_io_release(a.io);
	warp_turn_io_release(b.io);
	loop_done(loop);
}

/* Allocation under quota 1, retried until the previous one is gone; returns ms waited. */
static double realloc_after(struct warp_loop *loop, bool tcp, struct client *out)
{
	struct warp_turn_io_cfg cfg;
	uint64_t t0 = warp_time_ns();

	for (int i = 0; i < 40; i++) {
		int err;

		cfg_for(&cfg, &s_quota, tcp, NULL);
		err = client_start(loop, out, &cfg, NULL);
		if (err == 0)
			return (double)(warp_time_ns() - t0) / 1e6;
		assert_int_equal(err, -WARP_EQUOTA);
		warp_turn_io_release(out->io);
		run_for(loop, 150);
	}
	fail_msg("quota never freed");
	return 0;
}

static void test_dealloc_quota(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_turn_io_cfg cfg;
	struct client a, b;
	double ms;

	cfg_for(&cfg, &s_quota, false, NULL);
	assert_int_equal(client_start(loop, &a, &cfg, NULL), 0);
	/* quota of 1: the second one is refused with a clear error */
	assert_int_equal(client_start(loop, &b, &cfg, NULL), -WARP_EQUOTA);
	warp_turn_io_release(b.io);
	/* still refused a while later: the first allocation lives on */
	run_for(loop, 1500);
	assert_int_equal(client_start(loop, &b, &cfg, NULL), -WARP_EQUOTA);
	warp_turn_io_release(b.io);

	/* graceful release (UDP): the quota comes back */
	warp_turn_io_release(a.io);
	ms = realloc_after(loop, true, &b);
	printf("# quota back %.0f ms after a UDP deallocation (coturn frees lazily)\n", ms);
	/* graceful release (TCP) */
	warp_turn_io_release(b.io);
	ms = realloc_after(loop, false, &a);
	printf("# quota back %.0f ms after a TCP deallocation\n", ms);
	/* immediate teardown: one best-effort request is enough on loopback */
	warp_turn_io_free(a.io);
	ms = realloc_after(loop, false, &b);
	printf("# quota back %.0f ms after an immediate teardown\n", ms);
	warp_turn_io_release(b.io);
	loop_done(loop);
}

/* SIGSTOP reaches a multi-threaded process asynchronously: wait until every thread of it
 * is stopped, or a request could still be answered. */
static void freeze(pid_t pid)
{
	assert_int_equal(kill(pid, SIGSTOP), 0);
	for (int i = 0; i < 200; i++) {
		char path[320], line[512];
		bool all = true;
		DIR *d;
		struct dirent *e;

		snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
		d = opendir(path);
		assert_non_null(d);
		while ((e = readdir(d))) {
			FILE *f;
			char *st;

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)pid, e->d_name);
			f = fopen(path, "r");
			if (!f)
				continue;
			st = fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
			fclose(f);
			if (st && st[1] == ' ' && st[2] != 'T' && st[2] != 't')
				all = false;
		}
		closedir(d);
		if (all)
			return;
		usleep(5000);
	}
	fail_msg("turnserver did not stop");
}

static void test_release_unanswered(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_turn_io_cfg cfg;
	struct client a, b;
	uint64_t t0;

	/* the server freezes: a release gives up after release_timeout_ms and frees itself */
	cfg_for(&cfg, &s_short, false, NULL);
	cfg.turn.release_timeout_ms = 800;
	assert_int_equal(client_start(loop, &a, &cfg, NULL), 0);
	assert_int_equal(client_start(loop, &b, &cfg, NULL), 0);
	freeze(s_short.pid);
	t0 = warp_time_ns();
	warp_turn_io_release(a.io);
	warp_turn_io_release(NULL);
	assert_int_equal(warp_turn_io_releasing(loop), 1);
	assert_int_equal(warp_loop_run_until(loop, released_all, loop, 3000), 0);
	printf("# unanswered release given up after %.0f ms\n",
	       (double)(warp_time_ns() - t0) / 1e6);
	assert_true(warp_time_ns() - t0 >= 750000000ull);
	/* a loop shutting down does not wait: shutdown frees what is left */
	warp_turn_io_release(b.io);
	assert_int_equal(warp_turn_io_releasing(loop), 1);
	warp_turn_io_shutdown(loop);
	assert_int_equal(warp_turn_io_releasing(loop), 0);
	assert_int_equal(kill(s_short.pid, SIGCONT), 0);
	loop_done(loop);
}

/* ---- round trips: direct UDP vs through two relays ---- */

struct pinger {
	struct warp_loop *loop;
	int fd_a, fd_b;	      /* direct */
	struct client *a, *b; /* relayed */
	struct sockaddr_storage to;
	uint64_t sent_ns;
	uint64_t rtt[200];
	int n;
	uint8_t buf[64];
};

static void direct_b(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct sockaddr_storage from;
	socklen_t sl = sizeof(from);
	uint8_t buf[64];
	ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &sl);

	if (n > 0)
		sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, sl);
}

static void direct_a(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct pinger *p = user;
	uint8_t buf[64];

	if (recv(fd, buf, sizeof(buf), 0) <= 0 || p->n >= 200)
		return;
	p->rtt[p->n++] = warp_time_ns() - p->sent_ns;
	p->sent_ns = warp_time_ns();
	if (p->n < 200)
		sendto(fd, p->buf, sizeof(p->buf), 0, (struct sockaddr *)&p->to,
		       warp_ep_len((struct sockaddr *)&p->to));
}

static bool ping_done(void *user)
{
	return ((struct pinger *)user)->n >= 200;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double median_us(struct pinger *p)
{
	qsort(p->rtt, (size_t)p->n, sizeof(p->rtt[0]), cmp_u64);
	return (double)p->rtt[p->n / 2] / 1000.0;
}

/* relayed pinger: a's data callback times the echo that b's callback sends back */
static struct pinger *rp;

static void relay_a_data(struct warp_turn_io *io, const struct sockaddr *peer, uint8_t *data,
			 size_t len, void *user)
{
	if (!rp || rp->n >= 200)
		return;
	rp->rtt[rp->n++] = warp_time_ns() - rp->sent_ns;
	rp->sent_ns = warp_time_ns();
	if (rp->n < 200)
		warp_turn_io_send(io, peer, rp->buf, sizeof(rp->buf));
}

static void test_rtt_overhead(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct pinger *p = calloc(1, sizeof(*p));
	struct sockaddr_storage any;
	struct warp_turn_io_cfg cfg;
	struct warp_turn_io_ops a_ops = c_ops;
	struct client a, b;
	double direct, relayed[2];

	/* direct UDP on loopback, both ends on the loop */
	warp_ep_parse("127.0.0.1", 1, &any);
	warp_ep_set_port((struct sockaddr *)&any, 0);
	p->fd_a = warp_sock_udp((struct sockaddr *)&any, 0);
	p->fd_b = warp_sock_udp((struct sockaddr *)&any, 0);
	warp_sock_local(p->fd_b, &p->to);
	warp_loop_add_fd(loop, p->fd_a, WARP_EV_READ, direct_a, p);
	warp_loop_add_fd(loop, p->fd_b, WARP_EV_READ, direct_b, p);
	p->sent_ns = warp_time_ns();
	sendto(p->fd_a, p->buf, sizeof(p->buf), 0, (struct sockaddr *)&p->to,
	       warp_ep_len((struct sockaddr *)&p->to));
	assert_int_equal(warp_loop_run_until(loop, ping_done, p, 5000), 0);
	direct = median_us(p);
	warp_loop_del_fd(loop, p->fd_a);
	warp_loop_del_fd(loop, p->fd_b);
	close(p->fd_a);
	close(p->fd_b);

	/* through two allocations and channels (UDP, then TCP to the server) */
	for (int tcp = 0; tcp < 2; tcp++) {
		a_ops.data = relay_a_data;
		cfg_for(&cfg, &s_main, tcp, NULL);
		memset(&a, 0, sizeof(a));
		a.io = warp_turn_io_new(loop, &cfg, &a_ops, &a);
		assert_int_equal(warp_loop_run_until(loop, c_done, &a, 5000), 0);
		assert_int_equal(client_start(loop, &b, &cfg, NULL), 0);
		b.echo = true;
		warp_turn_io_add_peer(a.io, (struct sockaddr *)&b.info.relayed, true);
		warp_turn_io_add_peer(b.io, (struct sockaddr *)&a.info.relayed, true);
		assert_int_equal(warp_loop_run_until(loop, c_perm, &a, 3000), 0);
		assert_int_equal(warp_loop_run_until(loop, c_perm, &b, 3000), 0);
		run_for(loop, 100);
		p->n = 0;
		rp = p;
		p->sent_ns = warp_time_ns();
		warp_turn_io_send(a.io, (struct sockaddr *)&b.info.relayed, p->buf, sizeof(p->buf));
		assert_int_equal(warp_loop_run_until(loop, ping_done, p, 10000), 0);
		rp = NULL;
		relayed[tcp] = median_us(p);
		warp_turn_io_release(a.io);
		warp_turn_io_release(b.io);
	}
	printf("# round trip on loopback, median of 200: direct UDP %.1f us, via two relays "
	       "(udp) %.1f us (+%.1f us), via two relays (tcp to server) %.1f us (+%.1f us)\n",
	       direct, relayed[0], relayed[0] - direct, relayed[1], relayed[1] - direct);
	free(p);
	loop_done(loop);
}

/* ---- a warpgate pipe over a relay path ---- */

struct pipes {
	struct warp_pipe *in;
	struct warp_pipe *out;
	int dial_err;
	int dialed;
	int lease_cb;
	int lease_err;
	int permit_cb;
};

static void on_accept(struct warp_node *node, struct warp_pipe *pipe, void *user)
{
	struct pipes *p = user;

	if (p->in)
		warp_pipe_release(p->in);
	p->in = pipe;
	warp_pipe_subscribe(pipe, NULL);
}

static void on_dialed(struct warp_pipe *pipe, int err, void *user)
{
	struct pipes *p = user;

	p->dialed++;
	p->dial_err = err;
	p->out = pipe;
}

static void on_lease(struct turn_lease *l, int err, const struct warp_turn_info *info, void *user)
{
	struct pipes *p = user;

	p->lease_cb++;
	p->lease_err = err;
}

static void on_permit(struct turn_lease *l, const struct sockaddr *peer, int err, void *user)
{
	((struct pipes *)user)->permit_cb++;
}

static bool lease_ready(void *user)
{
	return ((struct pipes *)user)->lease_cb > 0;
}

static bool permitted(void *user)
{
	return ((struct pipes *)user)->permit_cb > 0;
}

static bool both_up(void *user)
{
	struct pipes *p = user;

	return p->dialed && (p->dial_err || p->in);
}

static bool no_relay(void *user)
{
	return turn_relay_count(user) == 0;
}

static void test_pipe_over_relay(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_conf conf;
	struct warp_node *a, *b;
	struct pipes p = { 0 };
	struct turn_server srv = { 0 };
	struct turn_lease *lease, *lease2;
	int relay_fd;
	struct pipe_path *path;
	struct pipe_dial_opts o = { 0 };
	struct sockaddr_storage b_addr;
	struct warp_pipe_info info;
	char buf[64];
	ssize_t n;

	warp_conf_test(&conf);
	a = warp_node_start(&conf, loop);
	b = warp_node_start(&conf, loop);
	assert_non_null(a);
	assert_non_null(b);
	warp_node_on_accept(b, on_accept, &p);
	b_addr = node_udp_sock(b, AF_INET)->local;
	if (warp_ep_len((struct sockaddr *)&b_addr) == 0 || b_addr.ss_family != AF_INET ||
	    ((struct sockaddr_in *)&b_addr)->sin_addr.s_addr == 0) {
		uint16_t port = warp_ep_port((struct sockaddr *)&b_addr);

		warp_ep_parse("127.0.0.1", port, &b_addr);
	}

	/* a leases an allocation of the server from its configuration; two leases share it */
	{
		char text[64];

		snprintf(text, sizeof(text), "u:p@127.0.0.1:%u", s_main.port);
		assert_int_equal(warp_conf_add(&conf, "turn", text, NULL, 0), 0);
		assert_int_equal(turn_server_from_conf(&conf.turn[conf.nturn - 1], 0, &srv), 0);
		assert_string_equal(srv.username, "u");
		assert_string_equal(srv.password, "p");
		assert_int_equal(warp_ep_port((struct sockaddr *)&srv.addr), s_main.port);
		assert_false(srv.tcp);
	}
	lease = turn_lease_get(a, &srv, on_lease, &p);
	assert_non_null(lease);
	lease2 = turn_lease_get(a, &srv, NULL, NULL);
	assert_non_null(lease2);
	assert_int_equal(turn_relay_count(a), 1);
	assert_int_equal(p.lease_cb, 0); /* never from inside the call */
	assert_int_equal(warp_loop_run_until(loop, lease_ready, &p, 5000), 0);
	assert_int_equal(p.lease_err, 0);
	assert_non_null(turn_lease_info(lease));
	relay_fd = turn_lease_fd(lease);
	assert_int_equal(turn_lease_fd(lease2), relay_fd);
	turn_lease_release(&lease2);
	assert_null(lease2);
	turn_lease_release(&lease2); /* idempotent */

	/* permission for b, then a relay path and a real handshake over it */
	assert_int_equal(turn_lease_permit(lease, (struct sockaddr *)&b_addr, true, on_permit, &p),
			 0);
	assert_int_equal(warp_loop_run_until(loop, permitted, &p, 3000), 0);
	path = turn_path_new(lease, (struct sockaddr *)&b_addr);
	assert_non_null(path);
	o.expect_key = warp_identity_pubkey(warp_node_identity(b));
	o.cls = WARP_PATH_RELAY;
	o.strategy = "turn";
	assert_non_null(pipe_dial(a, path, &o, on_dialed, &p));
	/* the strategy's lease can go now: the path holds its own */
	turn_lease_release(&lease);
	assert_int_equal(warp_loop_run_until(loop, both_up, &p, 5000), 0);
	assert_int_equal(p.dial_err, 0);
	assert_non_null(p.out);
	warp_pipe_subscribe(p.out, NULL);
	assert_int_equal(warp_pipe_send(p.out, "via relay", 9), 0);
	n = warp_pipe_recv(p.in, WARP_SUB_ALL, buf, sizeof(buf), 3000);
	assert_int_equal(n, 9);
	assert_memory_equal(buf, "via relay", 9);
	assert_int_equal(warp_pipe_send(p.in, "and back", 8), 0);
	n = warp_pipe_recv(p.out, WARP_SUB_ALL, buf, sizeof(buf), 3000);
	assert_int_equal(n, 8);
	assert_memory_equal(buf, "and back", 8);
	warp_pipe_info(p.out, &info);
	assert_int_equal(info.path, WARP_PATH_RELAY);
	assert_string_equal(info.strategy, "turn");
	{
		static uint8_t big[100000], got[100000];

		for (size_t i = 0; i < sizeof(big); i++)
			big[i] = (uint8_t)(i * 13);
		assert_int_equal(warp_pipe_send_wait(p.out, big, sizeof(big), 5000), 0);
		assert_int_equal(warp_pipe_recv(p.in, WARP_SUB_ALL, got, sizeof(got), 5000),
				 (ssize_t)sizeof(big));
		assert_memory_equal(got, big, sizeof(big));
	}
	/* an inbound handshake would get its path from the relay's socket */
	{
		struct pipe_path *in = turn_path_inbound(a, relay_fd, (struct sockaddr *)&b_addr);

		assert_non_null(in);
		assert_int_equal(in->kind, PATH_RELAY);
		assert_int_equal(in->cls, WARP_PATH_RELAY);
		assert_true(
			warp_ep_equal((struct sockaddr *)&in->remote, (struct sockaddr *)&b_addr));
		pipe_path_free(in);
		assert_null(turn_path_inbound(a, relay_fd + 1000, (struct sockaddr *)&b_addr));
		assert_int_equal(errno, ENOENT);
		assert_null(turn_path_inbound(b, relay_fd, (struct sockaddr *)&b_addr));
	}
	assert_int_equal(turn_relay_count(a), 1);
	/* closing the pipe frees its path, the last user of the allocation: released */
	assert_int_equal(warp_pipe_close_wait(p.out, 3000), 0);
	warp_pipe_release(p.out);
	warp_pipe_release(p.in);
	p.in = NULL;
	assert_int_equal(warp_loop_run_until(loop, no_relay, a, 3000), 0);
	warp_node_close(a);
	warp_node_close(b);
	loop_done(loop);
}

static void test_lease_tcp_fallback(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_conf conf;
	struct warp_node *a;
	struct pipes p = { 0 }, q = { 0 };
	struct turn_server srv = { 0 };
	struct turn_lease *udp_only, *lease;
	struct sockaddr_storage peer;

	warp_conf_test(&conf);
	a = warp_node_start(&conf, loop);
	assert_non_null(a);
	warp_ep_parse("127.0.0.1", s_tcponly.port, &srv.addr);
	srv.username = "u";
	srv.password = "p";
	warp_ep_parse("127.0.0.1:9", 0, &peer);

	/* the server has no UDP listener: plain UDP fails, with fallback it moves to TCP and
	 * takes the permission asked for before along */
	udp_only = turn_lease_get(a, &srv, on_lease, &q);
	srv.tcp_fallback = true;
	lease = turn_lease_get(a, &srv, on_lease, &p);
	assert_non_null(udp_only);
	assert_non_null(lease);
	assert_int_equal(turn_relay_count(a), 2);
	assert_int_equal(turn_lease_permit(lease, (struct sockaddr *)&peer, true, on_permit, &p),
			 0);
	assert_int_equal(warp_loop_run_until(loop, lease_ready, &q, 5000), 0);
	assert_int_equal(q.lease_err, -ECONNREFUSED);
	assert_int_equal(warp_loop_run_until(loop, lease_ready, &p, 5000), 0);
	assert_int_equal(p.lease_err, 0);
	assert_non_null(turn_lease_info(lease));
	assert_int_equal(warp_loop_run_until(loop, permitted, &p, 3000), 0);
	assert_int_equal(turn_relay_count(a), 1); /* the failed one left the registry */
	turn_lease_release(&udp_only);
	turn_lease_release(&lease);
	assert_int_equal(turn_relay_count(a), 0);
	warp_node_close(a);
	loop_done(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allocate),	   cmocka_unit_test(test_two_clients),
		cmocka_unit_test(test_plain_peer),	   cmocka_unit_test(test_short_lifetimes),
		cmocka_unit_test(test_release_unanswered), cmocka_unit_test(test_dealloc_quota),
		cmocka_unit_test(test_rtt_overhead),	   cmocka_unit_test(test_pipe_over_relay),
		cmocka_unit_test(test_lease_tcp_fallback),
	};

	setvbuf(stdout, NULL, _IOLBF, 0);
	return cmocka_run_group_tests(tests, setup, teardown);
}
