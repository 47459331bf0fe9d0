// SPDX-License-Identifier: MIT
/*
 * Signalling over real mosquitto brokers on loopback: the broker client (connect, queue,
 * reconnect with backoff, connect timeout) and the service (fan-out to two brokers with one
 * of them stopped and restarted, request/reply, dispatch, replay and staleness, rate limits,
 * publish-only connections) plus a latency measurement.  Every broker runs as a child process
 * on a random 127.0.0.1 port with its own temporary config and is killed in every case
 * (teardown, exit, and PR_SET_PDEATHSIG if the test itself dies).  Exits 77 without mosquitto.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>
#include <warpgate/log.h>
#include <warpgate/loop.h>

#include "core/util.h"
#include "signal/broker.h"
#include "signal/msg.h"
#include "signal/signal.h"

/* ---- mosquitto processes ---- */

#define MAX_PROCS 4

struct mproc {
	pid_t pid;
	uint16_t port;
};

static const char *mosquitto_bin;
static char tmpdir[64];
static struct mproc procs[MAX_PROCS];

static uint16_t free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

static bool port_open(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* Starts broker slot i on port (0: a fresh random port). */
static uint16_t broker_start(int i, uint16_t port)
{
	char conf[128], log[128];
	FILE *f;
	pid_t pid;

	assert_true(i < MAX_PROCS);
	assert_int_equal(procs[i].pid, 0);
	if (!port)
		port = free_port();
	snprintf(conf, sizeof(conf), "%s/b%d.conf", tmpdir, i);
	snprintf(log, sizeof(log), "%s/b%d.log", tmpdir, i);
	f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f,
		"listener %u 127.0.0.1\nallow_anonymous true\npersistence false\n"
		"set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n",
		port);
	fclose(f);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(mosquitto_bin, "mosquitto", "-c", conf, (char *)NULL);
		_exit(127);
	}
	procs[i].pid = pid;
	procs[i].port = port;
	for (int t = 0; t < 500 && !port_open(port); t++)
		usleep(10000);
	assert_true(port_open(port));
	return port;
}

static void broker_kill(int i)
{
	if (!procs[i].pid)
		return;
	kill(procs[i].pid, SIGKILL);
	waitpid(procs[i].pid, NULL, 0);
	procs[i].pid = 0;
}

static void kill_all(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		broker_kill(i);
}

static void broker_addr(int i, struct warp_broker_addr *a)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->host, sizeof(a->host), "127.0.0.1");
	a->port = procs[i].port;
}

/* ---- loop helpers ---- */

static struct warp_loop *loop;

struct wait_ctx {
	bool (*pred)(void *);
	void *arg;
};

static bool wait_pred(void *user)
{
	struct wait_ctx *w = user;

	return w->pred(w->arg);
}

static int wait_for(bool (*pred)(void *), void *arg, int timeout_ms)
{
	struct wait_ctx w = {pred, arg};

	return warp_loop_run_until(loop, wait_pred, &w, timeout_ms);
}

static void run_for(int ms)
{
	uint64_t end = warp_time_ms() + (uint64_t)ms;

	while (warp_time_ms() < end)
		warp_loop_run_once(loop, (int)(end - warp_time_ms()));
}

static int setup(void **state)
{
	loop = warp_loop_new();
	return loop ? 0 : -1;
}

static int teardown(void **state)
{
	kill_all();
	warp_loop_free(loop);
	loop = NULL;
	return 0;
}

/* ---- broker client tests ---- */

struct bclient {
	struct warp_broker *b;
	int states[16];
	int nstates;
	int last_err;
	int received;
	uint8_t last[WARP_SIG_MAX_PAYLOAD];
	size_t last_len;
};

static void bc_message(struct warp_broker *b, const char *topic, const void *p, size_t len,
		       void *user)
{
	struct bclient *c = user;

	c->received++;
	if (len <= sizeof(c->last)) {
		memcpy(c->last, p, len);
		c->last_len = len;
	}
}

static void bc_state(struct warp_broker *b, enum warp_broker_state st, int err, void *user)
{
	struct bclient *c = user;

	if (c->nstates < 16)
		c->states[c->nstates++] = st;
	if (err)
		c->last_err = err;
}

static const struct warp_broker_ops bc_ops = {bc_message, bc_state};

static const struct warp_broker_opts fast_opts = {
	.connect_timeout_ms = 1000,
	.backoff_min_ms = 100,
	.backoff_max_ms = 800,
	.keepalive_s = 10,
};

static void bc_new(struct bclient *c, int slot, const struct warp_broker_opts *o)
{
	struct warp_broker_addr a;

	memset(c, 0, sizeof(*c));
	broker_addr(slot, &a);
	c->b = warp_broker_new(loop, &a, o ? o : &fast_opts, &bc_ops, c);
	assert_non_null(c->b);
}

static bool bc_ready(void *arg)
{
	return warp_broker_get_state(((struct bclient *)arg)->b) == WARP_BROKER_READY;
}

static bool bc_backoff(void *arg)
{
	return warp_broker_get_state(((struct bclient *)arg)->b) == WARP_BROKER_BACKOFF;
}

static bool bc_got1(void *arg)
{
	return ((struct bclient *)arg)->received >= 1;
}

static void test_broker_pubsub(void **state)
{
	struct bclient sub, pub;
	struct warp_broker_stats st;

	broker_start(0, 0);
	bc_new(&sub, 0, NULL);
	bc_new(&pub, 0, NULL);
	assert_int_equal(warp_broker_subscribe(sub.b, "wg-test/a"), 0);
	/* Queued before the connection exists, sent once it does. */
	assert_int_equal(warp_broker_publish(pub.b, "wg-test/a", "early", 5, 0), 0);
	warp_broker_get_stats(pub.b, &st);
	assert_int_equal(st.queued, 1);
	assert_int_equal(warp_broker_start(sub.b), 0);
	assert_int_equal(wait_for(bc_ready, &sub, 3000), 0);
	assert_int_equal(warp_broker_start(pub.b), 0);
	assert_int_equal(wait_for(bc_got1, &sub, 3000), 0);
	assert_int_equal(sub.last_len, 5);
	assert_memory_equal(sub.last, "early", 5);
	assert_int_equal(warp_broker_publish(pub.b, "wg-test/a", "now", 3, 0), 0);
	sub.received = 0;
	assert_int_equal(wait_for(bc_got1, &sub, 3000), 0);
	assert_memory_equal(sub.last, "now", 3);
	/* Not subscribed: nothing. */
	assert_int_equal(warp_broker_publish(pub.b, "wg-test/other", "x", 1, 0), 0);
	sub.received = 0;
	run_for(200);
	assert_int_equal(sub.received, 0);
	/* A host name: resolved off the loop thread ("localhost" may give ::1 first, where
	 * nothing listens: the next attempt takes the next address). */
	{
		struct warp_broker_addr a = {.host = "localhost"};
		struct bclient byname;

		memset(&byname, 0, sizeof(byname));
		a.port = procs[0].port;
		byname.b = warp_broker_new(loop, &a, &fast_opts, &bc_ops, &byname);
		assert_non_null(byname.b);
		warp_broker_subscribe(byname.b, "wg-test/a");
		warp_broker_start(byname.b);
		assert_int_equal(wait_for(bc_ready, &byname, 5000), 0);
		warp_broker_publish(pub.b, "wg-test/a", "named", 5, 0);
		assert_int_equal(wait_for(bc_got1, &byname, 3000), 0);
		assert_memory_equal(byname.last, "named", 5);
		warp_broker_free(byname.b);
	}
	/* An unresolvable name fails into backoff without stalling the loop. */
	{
		struct warp_broker_addr a = {.host = "no-such-host.invalid", .port = 1883};
		struct bclient bad;

		memset(&bad, 0, sizeof(bad));
		bad.b = warp_broker_new(loop, &a, &fast_opts, &bc_ops, &bad);
		warp_broker_start(bad.b);
		assert_int_equal(wait_for(bc_backoff, &bad, 6000), 0);
		/* Freed while a lookup may be in flight: the thread cleans up after itself. */
		run_for(150);
		warp_broker_free(bad.b);
	}
	/* State sequence: connecting, connected, ready. */
	assert_true(sub.nstates >= 3);
	assert_int_equal(sub.states[0], WARP_BROKER_CONNECTING);
	assert_int_equal(sub.states[1], WARP_BROKER_CONNECTED);
	assert_int_equal(sub.states[2], WARP_BROKER_READY);
	warp_broker_get_stats(pub.b, &st);
	assert_int_equal(st.published, 4);
	warp_broker_free(sub.b);
	warp_broker_free(pub.b);
}

static void test_broker_reconnect(void **state)
{
	struct bclient sub, pub;
	struct warp_broker_stats st;
	uint16_t port;
	uint32_t max_backoff = 0;

	port = broker_start(0, 0);
	bc_new(&sub, 0, NULL);
	bc_new(&pub, 0, NULL);
	warp_broker_subscribe(sub.b, "wg-test/r");
	warp_broker_start(sub.b);
	warp_broker_start(pub.b);
	assert_int_equal(wait_for(bc_ready, &sub, 3000), 0);
	assert_int_equal(wait_for(bc_ready, &pub, 3000), 0);

	broker_kill(0);
	assert_int_equal(wait_for(bc_backoff, &sub, 3000), 0);
	/* While it is down, retries back off: delays grow towards the cap. */
	for (int i = 0; i < 15; i++) {
		run_for(100);
		warp_broker_get_stats(sub.b, &st);
		if (st.backoff_ms > max_backoff)
			max_backoff = st.backoff_ms;
	}
	warp_broker_get_stats(sub.b, &st);
	assert_true(st.failures >= 3);
	assert_true(max_backoff > fast_opts.backoff_min_ms);
	assert_true(max_backoff <= fast_opts.backoff_max_ms);
	/* Published while down: held, delivered after the reconnect.  The publisher waits
	 * until the subscriber is back: a clean-session broker drops what nobody is
	 * subscribed to, which is why the service publishes through two brokers. */
	warp_broker_stop(pub.b);
	assert_int_equal(warp_broker_publish(pub.b, "wg-test/r", "held", 4, 0), 0);

	broker_start(0, port);
	assert_int_equal(wait_for(bc_ready, &sub, 5000), 0);
	warp_broker_get_stats(sub.b, &st);
	assert_int_equal(st.connects, 2);
	warp_broker_start(pub.b);
	assert_int_equal(wait_for(bc_ready, &pub, 5000), 0);
	/* Resubscribed: the held message and a new one arrive. */
	assert_int_equal(wait_for(bc_got1, &sub, 3000), 0);
	assert_memory_equal(sub.last, "held", 4);
	sub.received = 0;
	warp_broker_publish(pub.b, "wg-test/r", "after", 5, 0);
	assert_int_equal(wait_for(bc_got1, &sub, 3000), 0);
	assert_memory_equal(sub.last, "after", 5);
	warp_broker_free(sub.b);
	warp_broker_free(pub.b);
}

static void test_broker_refused_and_timeout(void **state)
{
	struct warp_broker_opts o = fast_opts;
	struct warp_broker_addr a = {.host = "127.0.0.1"};
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t slen = sizeof(sa);
	struct bclient c;
	struct warp_broker_stats st;
	int lfd;

	/* Nothing listening: refused, retried. */
	memset(&c, 0, sizeof(c));
	a.port = free_port();
	c.b = warp_broker_new(loop, &a, &o, &bc_ops, &c);
	assert_non_null(c.b);
	warp_broker_start(c.b);
	assert_int_equal(wait_for(bc_backoff, &c, 2000), 0);
	run_for(600);
	warp_broker_get_stats(c.b, &st);
	assert_true(st.failures >= 2);
	assert_int_equal(st.connects, 0);
	/* A queued publish expires unsent. */
	assert_int_equal(warp_broker_publish(c.b, "t", "x", 1, warp_time_ms() + 100), 0);
	run_for(1200);
	warp_broker_get_stats(c.b, &st);
	assert_int_equal(st.expired, 1);
	warp_broker_stop(c.b);
	assert_int_equal(warp_broker_get_state(c.b), WARP_BROKER_IDLE);
	warp_broker_free(c.b);

	/* A listener that never answers CONNECT: the connect timeout fires. */
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	getsockname(lfd, (struct sockaddr *)&sa, &slen);
	a.port = ntohs(sa.sin_port);
	o.connect_timeout_ms = 300;
	memset(&c, 0, sizeof(c));
	c.b = warp_broker_new(loop, &a, &o, &bc_ops, &c);
	warp_broker_start(c.b);
	assert_int_equal(wait_for(bc_backoff, &c, 2000), 0);
	assert_int_equal(c.last_err, -ETIMEDOUT);
	warp_broker_free(c.b);
	close(lfd);
}

/* ---- service tests ---- */

struct node {
	struct warp_identity *id;
	struct warp_signal *s;
	int64_t clock_offset;
	int got[WARP_SIG_TYPE_MAX + 1];
	int total;
	struct warp_sig_msg last;
	uint64_t last_rx_ns;
	/* request results */
	int req_done, req_err;
	struct warp_sig_msg reply;
};

static uint64_t node_clock(void *user)
{
	struct node *n = user;

	return (uint64_t)((int64_t)warp_wall_ms() + n->clock_offset);
}

static void on_any(struct warp_signal *s, const struct warp_sig_msg *m, void *user)
{
	struct node *n = user;

	n->got[m->type]++;
	n->total++;
	n->last = *m;
	n->last_rx_ns = warp_time_ns();
}

static uint32_t node_rate; /* per-sender rate override (latency runs) */

static void node_new(struct node *n, const int *slots, size_t nslots, unsigned int fanout)
{
	struct warp_broker_addr addrs[MAX_PROCS];
	struct warp_signal_cfg cfg = {
		.brokers = addrs,
		.nbrokers = nslots,
		.fanout = fanout,
		.rx_rate_sender = node_rate,
		.rx_burst_sender = node_rate,
		.broker = fast_opts,
	};

	memset(n, 0, sizeof(*n));
	for (size_t i = 0; i < nslots; i++)
		broker_addr(slots[i], &addrs[i]);
	cfg.clock = node_clock;
	cfg.clock_user = n;
	n->id = warp_identity_generate();
	assert_non_null(n->id);
	n->s = warp_signal_new(loop, n->id, &cfg);
	assert_non_null(n->s);
	for (unsigned int t = 1; t <= WARP_SIG_TYPE_MAX; t++)
		if (!warp_sig_is_request(t) || t == WARP_SIG_PUNCH_OFFER)
			warp_signal_on(n->s, t, on_any, n);
}

static void node_free(struct node *n)
{
	warp_signal_free(n->s);
	warp_identity_free(n->id);
}

struct ready_ctx {
	struct node *n;
	unsigned int want;
};

static bool node_ready(void *arg)
{
	struct ready_ctx *r = arg;

	return warp_signal_ready_count(r->n->s) >= r->want;
}

static void wait_ready(struct node *n, unsigned int want, int timeout_ms)
{
	struct ready_ctx r = {n, want};

	assert_int_equal(wait_for(node_ready, &r, timeout_ms), 0);
}

struct count_ctx {
	struct node *n;
	int want;
};

static bool node_count(void *arg)
{
	struct count_ctx *c = arg;

	return c->n->total >= c->want;
}

static int wait_total(struct node *n, int want, int timeout_ms)
{
	struct count_ctx c = {n, want};

	return wait_for(node_count, &c, timeout_ms);
}

static void punch_offer(struct node *from, struct node *to, struct warp_sig_msg *m)
{
	struct warp_sig_ep ep = {.family = 6, .kind = WARP_SIG_EP_HOST, .port = 5000};

	ep.addr[15] = 1;
	assert_int_equal(warp_signal_msg_init(from->s, m, WARP_SIG_PUNCH_OFFER,
					      warp_identity_pubkey(to->id)),
			 0);
	warp_random(m->attempt, WARP_SIG_ID_LEN);
	m->body.present = WARP_SIGF_TRANSPORT | WARP_SIGF_ROLE | WARP_SIGF_START | WARP_SIGF_SECRET;
	m->body.transport = WARP_SIG_UDP;
	m->body.role = WARP_SIG_ROLE_INITIATOR;
	m->body.start_ms = m->created_ms + 500;
	warp_random(m->body.secret, sizeof(m->body.secret));
	warp_sig_add_ep(&m->body, &ep);
}

static int send_to(struct node *from, struct node *to, struct warp_sig_msg *m)
{
	const struct warp_broker_addr *peer;
	size_t n = warp_signal_brokers(to->s, &peer);

	return warp_signal_send(from->s, m, peer, n);
}

static void send_batch(struct node *a, struct node *b, int count, int expect_brokers)
{
	struct warp_sig_msg *m = malloc(sizeof(*m));
	int before = b->total;

	for (int i = 0; i < count; i++) {
		punch_offer(a, b, m);
		assert_int_equal(send_to(a, b, m), expect_brokers);
	}
	assert_int_equal(wait_total(b, before + count, 5000), 0);
	free(m);
}

/* The acceptance test: two brokers, one stopped mid-test, then restarted. */
static void test_signal_one_broker_down(void **state)
{
	const int slots[] = {0, 1};
	struct node a, b;
	struct warp_signal_stats st;
	uint16_t port0, port1;

	port0 = broker_start(0, 0);
	port1 = broker_start(1, 0);
	node_new(&a, slots, 2, 2);
	node_new(&b, slots, 2, 2);
	wait_ready(&a, 2, 5000);
	wait_ready(&b, 2, 5000);

	/* Both up: each message goes through both brokers and is delivered once. */
	send_batch(&a, &b, 5, 2);
	run_for(200);
	warp_signal_get_stats(b.s, &st);
	assert_int_equal(b.total, 5);
	assert_int_equal(b.got[WARP_SIG_PUNCH_OFFER], 5);
	assert_int_equal(st.rx, 5);
	assert_int_equal(st.rx_duplicate, 5);

	/* Broker 0 dies mid-test: messages keep flowing through broker 1. */
	broker_kill(0);
	run_for(300);
	assert_int_equal(warp_signal_ready_count(a.s), 1);
	assert_int_equal(warp_signal_ready_count(b.s), 1);
	send_batch(&a, &b, 5, 2); /* one publish now, one held for broker 0 */
	assert_int_equal(b.total, 10);

	/* It comes back: both nodes reconnect (backoff) and resubscribe. */
	broker_start(0, port0);
	wait_ready(&a, 2, 5000);
	wait_ready(&b, 2, 5000);
	run_for(300); /* held copies arrive now and are discarded as duplicates */
	assert_int_equal(b.total, 10);

	/* Now broker 1 dies: broker 0 must carry everything, proving the resubscription. */
	broker_kill(1);
	run_for(300);
	send_batch(&a, &b, 5, 2);
	assert_int_equal(b.total, 15);
	warp_signal_get_stats(b.s, &st);
	assert_int_equal(st.rx, 15);
	assert_int_equal(st.rx_invalid, 0);
	assert_int_equal(st.rx_stale, 0);

	broker_start(1, port1);
	wait_ready(&b, 2, 5000);
	node_free(&a);
	node_free(&b);
}

static void addr_request_handler(struct warp_signal *s, const struct warp_sig_msg *req, void *user)
{
	struct warp_sig_msg *r = malloc(sizeof(*r));

	assert_int_equal(warp_signal_msg_init(s, r, WARP_SIG_ADDR_REPLY, req->sender), 0);
	r->body.present = WARP_SIGF_BLOB;
	r->body.blob_len = 9;
	memcpy(r->body.blob, "addr-blob", 9);
	assert_true(warp_signal_reply(s, req, r) > 0);
	free(r);
}

static void on_reply(struct warp_signal *s, int err, const struct warp_sig_msg *reply, void *user)
{
	struct node *n = user;

	n->req_done++;
	n->req_err = err;
	if (reply)
		n->reply = *reply;
}

static bool req_done(void *arg)
{
	return ((struct node *)arg)->req_done > 0;
}

static void test_signal_request_reply(void **state)
{
	const int slots[] = {0, 1};
	struct node a, b, c;
	struct warp_sig_msg *m = malloc(sizeof(*m));
	const struct warp_broker_addr *bb;
	size_t nb;

	broker_start(0, 0);
	broker_start(1, 0);
	node_new(&a, slots, 2, 2);
	node_new(&b, slots, 2, 2);
	warp_signal_on(b.s, WARP_SIG_ADDR_REQUEST, addr_request_handler, &b);
	wait_ready(&a, 2, 5000);
	wait_ready(&b, 2, 5000);
	nb = warp_signal_brokers(b.s, &bb);

	/* ADDR_REQUEST answered by the handler, reply matched to the request. */
	assert_int_equal(
		warp_signal_msg_init(a.s, m, WARP_SIG_ADDR_REQUEST, warp_identity_pubkey(b.id)), 0);
	assert_int_equal(warp_signal_request(a.s, m, bb, nb, 3000, on_reply, &a), 2);
	assert_int_equal(wait_for(req_done, &a, 4000), 0);
	assert_int_equal(a.req_err, 0);
	assert_int_equal(a.reply.type, WARP_SIG_ADDR_REPLY);
	assert_memory_equal(a.reply.reply_to, m->id, WARP_SIG_ID_LEN);
	assert_int_equal(a.reply.body.blob_len, 9);
	assert_memory_equal(a.reply.body.blob, "addr-blob", 9);
	run_for(100);
	assert_int_equal(a.req_done, 1); /* the second copy was a duplicate */

	/* A request type nobody handles: automatic ERROR(UNSUPPORTED). */
	a.req_done = 0;
	assert_int_equal(
		warp_signal_msg_init(a.s, m, WARP_SIG_RELAY_OFFER, warp_identity_pubkey(b.id)), 0);
	warp_random(m->attempt, WARP_SIG_ID_LEN);
	m->body.present = WARP_SIGF_TRANSPORT | WARP_SIGF_RELAY_SERVER | WARP_SIGF_RELAYED;
	m->body.transport = WARP_SIG_UDP;
	m->body.relay_server = (struct warp_sig_ep){.family = 6, .kind = 1, .port = 3478};
	m->body.relayed = (struct warp_sig_ep){.family = 6, .kind = 5, .port = 50000};
	assert_true(warp_signal_request(a.s, m, bb, nb, 3000, on_reply, &a) > 0);
	assert_int_equal(wait_for(req_done, &a, 4000), 0);
	assert_int_equal(a.req_err, 0);
	assert_int_equal(a.reply.type, WARP_SIG_ERROR);
	assert_int_equal(a.reply.body.code, WARP_SIG_ERR_UNSUPPORTED);
	assert_memory_equal(a.reply.attempt, m->attempt, WARP_SIG_ID_LEN);

	/* Nobody home: timeout. */
	memset(&c, 0, sizeof(c));
	c.id = warp_identity_generate();
	a.req_done = 0;
	assert_int_equal(
		warp_signal_msg_init(a.s, m, WARP_SIG_ADDR_REQUEST, warp_identity_pubkey(c.id)), 0);
	assert_true(warp_signal_request(a.s, m, bb, nb, 300, on_reply, &a) > 0);
	assert_int_equal(wait_for(req_done, &a, 2000), 0);
	assert_int_equal(a.req_err, -ETIMEDOUT);

	/* Cancelled, and pending ones cancelled by the free. */
	a.req_done = 0;
	assert_int_equal(
		warp_signal_msg_init(a.s, m, WARP_SIG_ADDR_REQUEST, warp_identity_pubkey(c.id)), 0);
	assert_true(warp_signal_request(a.s, m, bb, nb, 3000, on_reply, &a) > 0);
	assert_int_equal(warp_signal_request_cancel(a.s, m->id), 0);
	assert_int_equal(a.req_err, -ECANCELED);
	assert_int_equal(warp_signal_request_cancel(a.s, m->id), -ENOENT);
	a.req_done = 0;
	assert_int_equal(
		warp_signal_msg_init(a.s, m, WARP_SIG_ADDR_REQUEST, warp_identity_pubkey(c.id)), 0);
	assert_true(warp_signal_request(a.s, m, bb, nb, 3000, on_reply, &a) > 0);
	warp_identity_free(c.id);
	node_free(&a);
	assert_int_equal(a.req_done, 1);
	assert_int_equal(a.req_err, -ECANCELED);
	node_free(&b);
	free(m);
}

/* A reply naming a pending request's id but signed by someone else does not complete it. */
static void test_signal_reply_from_wrong_peer(void **state)
{
	const int slots[] = {0};
	struct node a, b, c;
	struct warp_sig_msg *m = malloc(sizeof(*m)), *r = malloc(sizeof(*r));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	const struct warp_broker_addr *ab;
	int n;

	broker_start(0, 0);
	node_new(&a, slots, 1, 2);
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	b.id = warp_identity_generate();
	c.id = warp_identity_generate();
	warp_signal_brokers(a.s, &ab);
	assert_int_equal(
		warp_signal_msg_init(a.s, m, WARP_SIG_ADDR_REQUEST, warp_identity_pubkey(b.id)), 0);
	assert_true(warp_signal_request(a.s, m, ab, 1, 3000, on_reply, &a) > 0);

	/* C forges the reply: it reaches the type handler, the request stays pending. */
	warp_sig_msg_init(r, WARP_SIG_ADDR_REPLY, warp_identity_pubkey(a.id), warp_wall_ms());
	memcpy(r->reply_to, m->id, WARP_SIG_ID_LEN);
	r->body.present = WARP_SIGF_BLOB;
	r->body.blob_len = 4;
	memcpy(r->body.blob, "evil", 4);
	n = warp_sig_encode(c.id, r, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(warp_signal_input(a.s, buf, (size_t)n), 0);
	assert_int_equal(a.req_done, 0);
	assert_int_equal(a.got[WARP_SIG_ADDR_REPLY], 1);

	/* B's genuine reply completes it. */
	warp_sig_msg_init(r, WARP_SIG_ADDR_REPLY, warp_identity_pubkey(a.id), warp_wall_ms());
	memcpy(r->reply_to, m->id, WARP_SIG_ID_LEN);
	r->body.present = WARP_SIGF_BLOB;
	r->body.blob_len = 4;
	memcpy(r->body.blob, "good", 4);
	n = warp_sig_encode(b.id, r, buf, sizeof(buf));
	assert_int_equal(warp_signal_input(a.s, buf, (size_t)n), 0);
	assert_int_equal(a.req_done, 1);
	assert_int_equal(a.req_err, 0);
	assert_memory_equal(a.reply.body.blob, "good", 4);
	/* Fed again: the same bytes are a duplicate. */
	assert_int_equal(warp_signal_input(a.s, buf, (size_t)n), -WARP_EREPLAY);

	warp_identity_free(b.id);
	warp_identity_free(c.id);
	node_free(&a);
	free(m);
	free(r);
}

static int attempt_hits;

static void on_attempt(struct warp_signal *s, const struct warp_sig_msg *m, void *user)
{
	attempt_hits++;
	/* Unregistering itself from inside is allowed. */
	if (m->type == WARP_SIG_CANCEL)
		assert_int_equal(warp_signal_off_attempt(s, m->attempt), 0);
}

static void test_signal_attempt_dispatch(void **state)
{
	const int slots[] = {0};
	struct node a, b;
	struct warp_sig_msg *m = malloc(sizeof(*m));
	uint8_t attempt[WARP_SIG_ID_LEN];

	broker_start(0, 0);
	node_new(&a, slots, 1, 2);
	node_new(&b, slots, 1, 2);
	wait_ready(&a, 1, 5000);
	wait_ready(&b, 1, 5000);
	attempt_hits = 0;
	warp_random(attempt, sizeof(attempt));
	assert_int_equal(warp_signal_on_attempt(b.s, attempt, on_attempt, NULL), 0);

	punch_offer(&a, &b, m);
	memcpy(m->attempt, attempt, sizeof(attempt));
	assert_int_equal(send_to(&a, &b, m), 1); /* one broker known: one publish */
	assert_int_equal(warp_signal_msg_init(a.s, m, WARP_SIG_CANCEL, warp_identity_pubkey(b.id)),
			 0);
	memcpy(m->attempt, attempt, sizeof(attempt));
	assert_int_equal(send_to(&a, &b, m), 1);
	run_for(300);
	assert_int_equal(attempt_hits, 2);
	assert_int_equal(b.total, 0);
	/* Unregistered: the type handler gets the next one. */
	assert_int_equal(warp_signal_msg_init(a.s, m, WARP_SIG_CANCEL, warp_identity_pubkey(b.id)),
			 0);
	memcpy(m->attempt, attempt, sizeof(attempt));
	send_to(&a, &b, m);
	assert_int_equal(wait_total(&b, 1, 2000), 0);
	assert_int_equal(b.got[WARP_SIG_CANCEL], 1);
	assert_int_equal(attempt_hits, 2);
	node_free(&a);
	node_free(&b);
	free(m);
}

/* A spy on the broker copies B's ciphertext and replays it through the other broker, later;
 * forgeries and messages for someone else are dropped too. */
static void test_signal_replay_and_garbage(void **state)
{
	const int slots[] = {0, 1};
	struct node a, b, c;
	struct bclient spy, inj;
	struct warp_signal_stats st;
	struct warp_sig_msg *m = malloc(sizeof(*m));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	int n;

	broker_start(0, 0);
	broker_start(1, 0);
	node_new(&a, slots, 2, 1); /* fanout 1: only broker 0 carries A's messages */
	node_new(&b, slots, 2, 2);
	wait_ready(&a, 2, 5000);
	wait_ready(&b, 2, 5000);
	bc_new(&spy, 0, NULL);
	bc_new(&inj, 1, NULL);
	warp_broker_subscribe(spy.b, warp_signal_topic(b.s));
	warp_broker_start(spy.b);
	warp_broker_start(inj.b);
	assert_int_equal(wait_for(bc_ready, &spy, 3000), 0);
	assert_int_equal(wait_for(bc_ready, &inj, 3000), 0);

	punch_offer(&a, &b, m);
	assert_int_equal(send_to(&a, &b, m), 1);
	assert_int_equal(wait_total(&b, 1, 3000), 0);
	assert_int_equal(wait_for(bc_got1, &spy, 3000), 0);
	/* The broker saw only ciphertext: no public key, no body in the clear. */
	assert_null(memmem(spy.last, spy.last_len, warp_identity_pubkey(a.id), WARP_PUBKEY_LEN));
	assert_null(memmem(spy.last, spy.last_len, m->body.secret, WARP_SIG_SECRET_LEN));

	/* Replay through the other broker. */
	warp_broker_publish(inj.b, warp_signal_topic(b.s), spy.last, spy.last_len, 0);
	run_for(300);
	warp_signal_get_stats(b.s, &st);
	assert_int_equal(b.total, 1);
	assert_int_equal(st.rx_duplicate, 1);

	/* Same message id sealed twice (different ciphertexts) through both brokers: the
	 * id-level replay cache catches the second. */
	{
		struct bclient inj0;
		int total = b.total;
		uint64_t dup;

		bc_new(&inj0, 0, NULL);
		warp_broker_start(inj0.b);
		assert_int_equal(wait_for(bc_ready, &inj0, 3000), 0);
		warp_signal_get_stats(b.s, &st);
		dup = st.rx_duplicate;
		punch_offer(&a, &b, m);
		n = warp_sig_encode(a.id, m, buf, sizeof(buf));
		assert_true(n > 0);
		warp_broker_publish(inj0.b, warp_signal_topic(b.s), buf, (size_t)n, 0);
		n = warp_sig_encode(a.id, m, buf, sizeof(buf));
		assert_true(n > 0);
		warp_broker_publish(inj.b, warp_signal_topic(b.s), buf, (size_t)n, 0);
		run_for(300);
		warp_signal_get_stats(b.s, &st);
		assert_int_equal(b.total, total + 1);
		assert_int_equal(st.rx_duplicate, dup + 1);
		warp_broker_free(inj0.b);
	}

	/* Clocks disagreeing by more than TTL + skew: B's is 60 s ahead, then 10 s behind. */
	b.clock_offset = 60000;
	punch_offer(&a, &b, m);
	assert_int_equal(send_to(&a, &b, m), 1);
	run_for(300);
	b.clock_offset = -10000;
	punch_offer(&a, &b, m);
	assert_int_equal(send_to(&a, &b, m), 1);
	run_for(300);
	warp_signal_get_stats(b.s, &st);
	assert_int_equal(st.rx_stale, 2);
	assert_int_equal(b.total, 2);
	/* Within the skew tolerance: accepted. */
	b.clock_offset = -3000;
	send_batch(&a, &b, 1, 1);
	b.clock_offset = 0;

	/* Sealed to C, posted on B's topic; garbage; truncated. */
	memset(&c, 0, sizeof(c));
	c.id = warp_identity_generate();
	punch_offer(&a, &c, m);
	n = warp_sig_encode(a.id, m, buf, sizeof(buf));
	assert_true(n > 0);
	warp_broker_publish(inj.b, warp_signal_topic(b.s), buf, (size_t)n, 0);
	warp_broker_publish(inj.b, warp_signal_topic(b.s), "garbage", 7, 0);
	warp_broker_publish(inj.b, warp_signal_topic(b.s), spy.last, spy.last_len / 2, 0);
	run_for(300);
	warp_signal_get_stats(b.s, &st);
	assert_int_equal(st.rx_invalid, 3);
	assert_int_equal(b.total, 3);
	/* And B still works. */
	send_batch(&a, &b, 1, 1);

	warp_identity_free(c.id);
	warp_broker_free(spy.b);
	warp_broker_free(inj.b);
	node_free(&a);
	node_free(&b);
	free(m);
}

static void test_signal_rate_limit(void **state)
{
	const int slots[] = {0};
	struct warp_broker_addr addr;
	struct warp_signal_cfg cfg = {
		.brokers = &addr,
		.nbrokers = 1,
		.rx_rate_sender = 5,
		.rx_burst_sender = 5,
		.broker = fast_opts,
	};
	struct node a, b;
	struct warp_signal_stats st;
	struct warp_sig_msg *m = malloc(sizeof(*m));

	broker_start(0, 0);
	broker_addr(0, &addr);
	node_new(&a, slots, 1, 2);
	memset(&b, 0, sizeof(b));
	b.id = warp_identity_generate();
	b.s = warp_signal_new(loop, b.id, &cfg);
	assert_non_null(b.s);
	warp_signal_on(b.s, WARP_SIG_PUNCH_OFFER, on_any, &b);
	wait_ready(&a, 1, 5000);
	wait_ready(&b, 1, 5000);
	uint64_t t0 = warp_time_ms();

	for (int i = 0; i < 30; i++) {
		punch_offer(&a, &b, m);
		assert_int_equal(send_to(&a, &b, m), 1);
	}
	run_for(500);
	warp_signal_get_stats(b.s, &st);
	/* The burst of 5, plus what 5/s refilled while the flood was processed. */
	assert_true(b.total >= 5);
	assert_true((uint64_t)b.total <= 6 + 5 * (warp_time_ms() - t0) / 1000);
	assert_true(b.total < 30);
	assert_int_equal(st.rx_ratelimited + (uint64_t)b.total, 30);
	node_free(&a);
	node_free(&b);
	free(m);
}

/* A knows only broker 0; B listens on 0 and 1 and advertises both: A publishes on its
 * connection to 0 and opens a publish-only connection to 1. */
static void test_signal_extra_broker(void **state)
{
	const int slots_a[] = {0}, slots_b[] = {1, 0};
	struct node a, b;
	struct warp_signal_stats st;
	struct warp_sig_msg *m = malloc(sizeof(*m));

	broker_start(0, 0);
	broker_start(1, 0);
	node_new(&a, slots_a, 1, 2);
	node_new(&b, slots_b, 2, 2);
	wait_ready(&a, 1, 5000);
	wait_ready(&b, 2, 5000);
	punch_offer(&a, &b, m);
	assert_int_equal(send_to(&a, &b, m), 2);
	assert_int_equal(wait_total(&b, 1, 3000), 0);
	run_for(500);
	warp_signal_get_stats(b.s, &st);
	assert_int_equal(st.rx, 1);
	assert_int_equal(st.rx_duplicate, 1); /* the copy through broker 1 arrived too */
	warp_signal_get_stats(a.s, &st);
	assert_int_equal(st.tx_publishes, 2);
	/* Broker 0 gone: the extra connection alone carries it. */
	broker_kill(0);
	run_for(200);
	send_batch(&a, &b, 1, 2);
	node_free(&a);
	node_free(&b);
	free(m);
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static void measure(struct node *a, struct node *b, int count, const char *what)
{
	struct warp_sig_msg *m = malloc(sizeof(*m));
	uint64_t *lat = calloc((size_t)count, sizeof(*lat)), sum = 0;

	for (int i = 0; i < count; i++) {
		uint64_t t0;
		int before = b->total;

		punch_offer(a, b, m);
		t0 = warp_time_ns();
		assert_true(send_to(a, b, m) > 0);
		assert_int_equal(wait_total(b, before + 1, 2000), 0);
		lat[i] = b->last_rx_ns - t0;
		sum += lat[i];
		run_for(2); /* let the duplicate (if any) drain */
	}
	qsort(lat, (size_t)count, sizeof(*lat), cmp_u64);
	printf("# latency %s (n=%d, send -> handler, incl. sign+seal+open+verify): "
	       "mean %.3f ms, p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n",
	       what, count, (double)sum / count / 1e6, lat[count / 2] / 1e6,
	       lat[count * 9 / 10] / 1e6, lat[count * 99 / 100] / 1e6, lat[count - 1] / 1e6);
	free(lat);
	free(m);
}

static void test_signal_latency(void **state)
{
	const int one[] = {0}, two[] = {0, 1};
	struct node a, b;
	struct warp_sig_msg *m = malloc(sizeof(*m)), *d = malloc(sizeof(*d));
	uint8_t buf[WARP_SIG_MAX_PAYLOAD];
	uint64_t t0, t_enc = 0, t_dec = 0;
	const int reps = 50;

	broker_start(0, 0);
	broker_start(1, 0);
	node_rate = 100000; /* the measurement is a flood from one sender */
	node_new(&a, one, 1, 1);
	node_new(&b, one, 1, 1);
	wait_ready(&a, 1, 5000);
	wait_ready(&b, 1, 5000);
	/* Crypto share of the path: encode (sign + seal) and decode (open + verify). */
	for (int i = 0; i < reps; i++) {
		int n;

		punch_offer(&a, &b, m);
		t0 = warp_time_ns();
		n = warp_sig_encode(a.id, m, buf, sizeof(buf));
		t_enc += warp_time_ns() - t0;
		assert_true(n > 0);
		t0 = warp_time_ns();
		assert_int_equal(warp_sig_decode(b.id, buf, (size_t)n, warp_wall_ms(), 5000, d), 0);
		t_dec += warp_time_ns() - t0;
	}
	printf("# codec: encode %.3f ms, decode %.3f ms per message (%d-byte payload)\n",
	       (double)t_enc / reps / 1e6, (double)t_dec / reps / 1e6,
	       warp_sig_encode(a.id, m, buf, sizeof(buf)));
	/* The broker hop alone: publish -> on_message between two clients, same payload size. */
	{
		struct bclient sub, pub;
		uint64_t *lat = calloc(200, sizeof(*lat)), sum = 0;

		bc_new(&sub, 0, NULL);
		bc_new(&pub, 0, NULL);
		warp_broker_subscribe(sub.b, "wg-test/lat");
		warp_broker_start(sub.b);
		warp_broker_start(pub.b);
		assert_int_equal(wait_for(bc_ready, &sub, 3000), 0);
		assert_int_equal(wait_for(bc_ready, &pub, 3000), 0);
		memset(buf, 0x5a, 446);
		for (int i = 0; i < 200; i++) {
			sub.received = 0;
			t0 = warp_time_ns();
			warp_broker_publish(pub.b, "wg-test/lat", buf, 446, 0);
			assert_int_equal(wait_for(bc_got1, &sub, 2000), 0);
			lat[i] = warp_time_ns() - t0;
			sum += lat[i];
		}
		qsort(lat, 200, sizeof(*lat), cmp_u64);
		printf("# broker hop alone (n=200, 446-byte publish -> on_message): mean %.3f ms, "
		       "p50 %.3f ms, p99 %.3f ms\n",
		       (double)sum / 200 / 1e6, lat[100] / 1e6, lat[198] / 1e6);
		free(lat);
		warp_broker_free(sub.b);
		warp_broker_free(pub.b);
	}
	measure(&a, &b, 200, "one broker");
	node_free(&a);
	node_free(&b);

	node_new(&a, two, 2, 2);
	node_new(&b, two, 2, 2);
	wait_ready(&a, 2, 5000);
	wait_ready(&b, 2, 5000);
	measure(&a, &b, 200, "two brokers, first copy");
	node_free(&a);
	node_free(&b);
	node_rate = 0;
	free(m);
	free(d);
}

static const char *find_mosquitto(void)
{
	static const char *const paths[] = {"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto",
					    "/usr/bin/mosquitto", "/usr/local/bin/mosquitto"};

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

static void cleanup_tmp(void)
{
	char cmd[128];

	kill_all();
	if (tmpdir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmpdir);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_broker_pubsub, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broker_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broker_refused_and_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_one_broker_down, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_request_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_reply_from_wrong_peer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_attempt_dispatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_replay_and_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_rate_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_extra_broker, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signal_latency, setup, teardown),
	};

	mosquitto_bin = find_mosquitto();
	if (!mosquitto_bin) {
		fprintf(stderr, "mosquitto broker not installed (apt-get install mosquitto)\n");
		return 77;
	}
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/wg-signal-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	/* The broker drops root privileges to its own user and must still read the config. */
	chmod(tmpdir, 0755);
	atexit(cleanup_tmp);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
