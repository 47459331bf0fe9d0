// SPDX-License-Identifier: MIT
/*
 * Pipes end to end on loopback: two test-mode nodes on one loop, real sockets, the real
 * handshake, session and stream.  UDP and TCP paths, large messages, ordering, datagrams,
 * subscriptions, close semantics on both ends, idle timeout, keepalives, identity checks and
 * the responder's allow list.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/connect.h>
#include <warpgate/error.h>
#include <warpgate/node.h>
#include <warpgate/pipe.h>

struct pair {
	struct warp_loop *loop;
	struct warp_node *a, *b;
	struct warp_pipe *in;    /* b's side, from the accept callback */
	int accepted;
};

static void on_accept(struct warp_node *node, struct warp_pipe *pipe, void *user)
{
	struct pair *p = user;

	p->accepted++;
	if (p->in)
		warp_pipe_release(p->in);
	p->in = pipe;
	warp_pipe_subscribe(pipe, NULL);
}

static void pair_up(struct pair *p, unsigned int a_flags, uint32_t idle_ms, uint32_t ka_ms)
{
	struct warp_conf c;

	memset(p, 0, sizeof(*p));
	p->loop = warp_loop_new();
	warp_conf_test(&c);
	c.idle_timeout_ms = idle_ms;
	c.keepalive_ms = ka_ms;
	p->b = warp_node_start(&c, p->loop);
	c.flags |= a_flags;
	p->a = warp_node_start(&c, p->loop);
	assert_non_null(p->a);
	assert_non_null(p->b);
	warp_node_on_accept(p->b, on_accept, p);
}

static void pair_down(struct pair *p)
{
	if (p->in)
		warp_pipe_release(p->in);
	warp_node_close(p->a);
	warp_node_close(p->b);
	warp_loop_free(p->loop);
}

static bool have_in(void *user)
{
	return ((struct pair *)user)->in != NULL;
}

static struct warp_pipe *connect_ab(struct pair *p, struct warp_connect_result *res)
{
	struct warp_node_addr to;
	struct warp_pipe *pipe = NULL;
	int err;

	assert_int_equal(warp_node_address(p->b, &to), 0);
	err = warp_auto_connect(p->a, &to, NULL, &pipe, res);
	if (err)
		fail_msg("connect: %s", warp_strerror(err));
	assert_non_null(pipe);
	warp_pipe_subscribe(pipe, NULL);
	/* The responder's accept runs once its side of the handshake completes. */
	assert_int_equal(warp_loop_run_until(p->loop, have_in, p, 5000), 0);
	return pipe;
}

static void test_udp_echo_and_trace(void **state)
{
	struct pair p;
	struct warp_connect_result res;
	struct warp_pipe *pipe;
	struct warp_pipe_info info;
	char buf[64];

	pair_up(&p, 0, 0, 0);
	pipe = connect_ab(&p, &res);
	assert_int_equal(res.err, 0);
	assert_string_equal(res.strategy, "direct_connect");
	assert_int_equal(res.path, WARP_PATH_LOCAL);
	assert_true(res.nattempts >= 2);
	assert_int_equal(warp_pipe_send(pipe, "ping", 4), 0);
	assert_int_equal(warp_pipe_recv(p.in, WARP_SUB_ALL, buf, sizeof(buf), 2000), 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(warp_pipe_send(p.in, "pong", 4), 0);
	assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 2000), 4);
	assert_memory_equal(buf, "pong", 4);
	warp_pipe_info(pipe, &info);
	assert_string_equal(info.transport, "udp");
	assert_memory_equal(info.peer_key, warp_identity_pubkey(warp_node_identity(p.b)),
			    WARP_PUBKEY_LEN);
	warp_pipe_info(p.in, &info);
	assert_memory_equal(info.peer_key, warp_identity_pubkey(warp_node_identity(p.a)),
			    WARP_PUBKEY_LEN);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static void big_and_many(struct pair *p, struct warp_pipe *pipe)
{
	enum { BIG = 65536, N = 500 };
	uint8_t *msg = malloc(BIG), *got = malloc(BIG);

	for (size_t i = 0; i < BIG; i++)
		msg[i] = (uint8_t)(i * 7 + 3);
	assert_int_equal(warp_pipe_send_wait(pipe, msg, BIG, 5000), 0);
	assert_int_equal(warp_pipe_recv(p->in, WARP_SUB_ALL, got, BIG, 5000), BIG);
	assert_memory_equal(got, msg, BIG);
	/* Too small a buffer: -EMSGSIZE and the message stays queued. */
	assert_int_equal(warp_pipe_send(pipe, msg, 100), 0);
	assert_int_equal(warp_pipe_recv(p->in, WARP_SUB_ALL, got, 10, 5000), -EMSGSIZE);
	assert_int_equal(warp_pipe_recv(p->in, WARP_SUB_ALL, got, BIG, 5000), 100);
	for (uint32_t i = 0; i < N; i++) {
		uint32_t v = i;

		assert_int_equal(warp_pipe_send_wait(pipe, &v, sizeof(v), 5000), 0);
	}
	for (uint32_t i = 0; i < N; i++) {
		uint32_t v = 0;

		assert_int_equal(warp_pipe_recv(p->in, WARP_SUB_ALL, &v, sizeof(v), 5000), 4);
		assert_int_equal(v, i);
	}
	free(msg);
	free(got);
}

static void test_udp_large_and_ordered(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;

	pair_up(&p, 0, 0, 0);
	pipe = connect_ab(&p, NULL);
	big_and_many(&p, pipe);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static void test_tcp_path(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;
	struct warp_pipe_info info;

	pair_up(&p, WARP_CONF_NO_UDP, 0, 0);
	pipe = connect_ab(&p, NULL);
	warp_pipe_info(pipe, &info);
	assert_string_equal(info.transport, "tcp");
	warp_pipe_info(p.in, &info);
	assert_string_equal(info.transport, "tcp");
	big_and_many(&p, pipe);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static void test_datagrams(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;
	uint8_t msg[3000], got[3000];
	int seen = 0;

	pair_up(&p, 0, 0, 0);
	pipe = connect_ab(&p, NULL);
	for (int i = 0; i < 20; i++) {
		memset(msg, i, sizeof(msg));
		assert_int_equal(warp_pipe_send_datagram(pipe, msg, (size_t)(100 + i * 100)), 0);
	}
	/* Loopback loses nothing, but the test only relies on what datagram mode promises:
	 * whole messages, no duplicates, in a plausible order. */
	for (;;) {
		ssize_t n = warp_pipe_recv(p.in, WARP_SUB_ALL, got, sizeof(got), 500);

		if (n < 0)
			break;
		assert_int_equal(n, 100 + got[0] * 100);
		for (ssize_t k = 0; k < n; k++)
			assert_int_equal(got[k], got[0]);
		assert_true(got[0] >= seen);
		seen = got[0] + 1;
	}
	assert_true(seen > 0);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static int cb_count;

static void count_cb(struct warp_pipe *pipe, const uint8_t *msg, size_t len, void *user)
{
	cb_count++;
}

static void test_subscriptions(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;
	struct warp_sub pfx = { .prefix = "cmd:", .prefix_len = 4 };
	struct warp_sub rx = { .pattern = "^[0-9]+$", .queue_max = 2 };
	struct warp_sub cb = { .prefix = "cb", .prefix_len = 2, .cb = count_cb };
	char buf[64];
	int s1, s2;

	pair_up(&p, 0, 0, 0);
	pipe = connect_ab(&p, NULL);
	s1 = warp_pipe_subscribe(p.in, &pfx);
	s2 = warp_pipe_subscribe(p.in, &rx);
	assert_true(s1 > 0 && s2 > 0 && s1 != s2);
	assert_true(warp_pipe_subscribe(p.in, &cb) > 0);
	assert_int_equal(warp_pipe_recv(p.in, 999, buf, sizeof(buf), 0), -ENOENT);
	cb_count = 0;
	warp_pipe_send(pipe, "cmd:go", 6);
	warp_pipe_send(pipe, "1", 1);
	warp_pipe_send(pipe, "22", 2);
	warp_pipe_send(pipe, "333", 3);
	warp_pipe_send(pipe, "cb1", 3);
	/* The match-all queue sees everything; use it to wait until all arrived. */
	for (int i = 0; i < 5; i++)
		assert_true(warp_pipe_recv(p.in, WARP_SUB_ALL, buf, sizeof(buf), 2000) > 0);
	assert_int_equal(warp_pipe_recv(p.in, s1, buf, sizeof(buf), 0), 6);
	assert_memory_equal(buf, "cmd:go", 6);
	assert_int_equal(warp_pipe_recv(p.in, s1, buf, sizeof(buf), 0), -ETIMEDOUT);
	/* Queue of 2: "1" was dropped and counted. */
	assert_int_equal(warp_pipe_dropped(p.in, s2), 1);
	assert_int_equal(warp_pipe_recv(p.in, s2, buf, sizeof(buf), 0), 2);
	assert_int_equal(warp_pipe_recv(p.in, s2, buf, sizeof(buf), 0), 3);
	assert_int_equal(cb_count, 1);
	assert_int_equal(warp_pipe_unsubscribe(p.in, s1), 0);
	assert_int_equal(warp_pipe_recv(p.in, s1, buf, sizeof(buf), 0), -ENOENT);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static void test_close_seen_by_both(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;
	char buf[16];

	pair_up(&p, 0, 0, 0);
	pipe = connect_ab(&p, NULL);
	warp_pipe_send(pipe, "last", 4);
	assert_int_equal(warp_pipe_close_wait(pipe, 5000), 0);
	assert_false(warp_pipe_is_open(pipe));
	/* The receiver drains what was sent before the close, then sees the end. */
	assert_int_equal(warp_pipe_recv(p.in, WARP_SUB_ALL, buf, sizeof(buf), 2000), 4);
	assert_int_equal(warp_pipe_recv(p.in, WARP_SUB_ALL, buf, sizeof(buf), 2000),
			 -WARP_ECLOSED);
	assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 100),
			 -WARP_ECLOSED);
	assert_int_equal(warp_pipe_send(pipe, "x", 1), -WARP_ECLOSED);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static void test_half_close(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;
	char buf[16];

	pair_up(&p, 0, 0, 0);
	pipe = connect_ab(&p, NULL);
	/* Like a socket after shutdown(SHUT_WR): the listener keeps its side open after the
	 * connector's end of pipe, and its replies still reach the connector. */
	warp_pipe_set_half_close(p.in, true);
	warp_pipe_send(pipe, "req", 3);
	assert_int_equal(warp_pipe_close(pipe), 0);
	assert_int_equal(warp_pipe_recv(p.in, WARP_SUB_ALL, buf, sizeof(buf), 2000), 3);
	assert_int_equal(warp_pipe_recv(p.in, WARP_SUB_ALL, buf, sizeof(buf), 2000),
			 -WARP_ECLOSED);
	assert_true(warp_pipe_is_open(p.in));
	assert_int_equal(warp_pipe_send(p.in, "resp1", 5), 0);
	assert_int_equal(warp_pipe_send(p.in, "resp2", 5), 0);
	assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 2000), 5);
	assert_memory_equal(buf, "resp1", 5);
	assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 2000), 5);
	assert_memory_equal(buf, "resp2", 5);
	/* Now the listener ends its side: both ends are done. */
	assert_int_equal(warp_pipe_close_wait(p.in, 3000), 0);
	assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 2000),
			 -WARP_ECLOSED);
	assert_int_equal(warp_pipe_close_wait(pipe, 3000), 0);
	assert_false(warp_pipe_is_open(pipe));
	warp_pipe_release(pipe);
	pair_down(&p);
}

struct flow {
	int writable, eos;
};

static void on_writable(struct warp_pipe *pipe, void *user)
{
	((struct flow *)user)->writable++;
}

static void on_eos(struct warp_pipe *pipe, void *user)
{
	((struct flow *)user)->eos++;
}

static bool got_writable(void *user)
{
	return ((struct flow *)user)->writable > 0;
}

static bool got_eos(void *user)
{
	return ((struct flow *)user)->eos > 0;
}

/* A full send buffer refuses with -EAGAIN and says when it has room again; the peer's end of
 * pipe is announced once, after its last message. */
static void test_writable_and_eos(void **state)
{
	static uint8_t big[65536];
	struct flow f = { 0 }, g = { 0 };
	struct pair p;
	struct warp_pipe *pipe;
	char buf[16];
	int err = 0, sent = 0;

	pair_up(&p, 0, 0, 0);
	pipe = connect_ab(&p, NULL);
	warp_pipe_on_writable(pipe, on_writable, &f);
	/* No loop runs in between: nothing is acknowledged, the buffer fills. */
	for (int i = 0; i < 1000 && !err; i++) {
		err = warp_pipe_send(pipe, big, sizeof(big));
		sent += !err;
	}
	assert_int_equal(err, -EAGAIN);
	assert_true(sent > 0);
	assert_int_equal(f.writable, 0);
	assert_int_equal(warp_loop_run_until(p.loop, got_writable, &f, 10000), 0);
	assert_int_equal(warp_pipe_send(pipe, big, sizeof(big)), 0);
	/* end of pipe: after the messages before it */
	warp_pipe_on_eos(p.in, on_eos, &g);
	warp_pipe_set_half_close(p.in, true);
	assert_int_equal(warp_pipe_send(pipe, "last", 4), 0);
	assert_int_equal(warp_pipe_close(pipe), 0);
	assert_int_equal(warp_loop_run_until(p.loop, got_eos, &g, 10000), 0);
	assert_int_equal(g.eos, 1);
	for (int i = 0; i < sent + 1; i++)
		assert_int_equal(warp_pipe_recv(p.in, WARP_SUB_ALL, big, sizeof(big), 0), 65536);
	assert_int_equal(warp_pipe_recv(p.in, WARP_SUB_ALL, buf, sizeof(buf), 0), 4);
	assert_true(warp_pipe_is_open(p.in)); /* half-closed: our side is still ours */
	assert_int_equal(warp_pipe_close_wait(p.in, 3000), 0);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static void test_idle_timeout(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;
	char buf[16];
	uint64_t t0;

	pair_up(&p, 0, 300, 0);
	pipe = connect_ab(&p, NULL);
	t0 = warp_time_ms();
	assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 5000), -WARP_EIDLE);
	assert_true(warp_time_ms() - t0 >= 250);
	assert_true(warp_time_ms() - t0 < 4000);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static void test_keepalive(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;
	struct warp_pipe_info info;
	char buf[16];

	pair_up(&p, 0, 0, 100);
	pipe = connect_ab(&p, NULL);
	/* Idle for 8 keepalive periods: pings are answered, the pipe stays open. */
	assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 800), -ETIMEDOUT);
	assert_true(warp_pipe_is_open(pipe));
	warp_pipe_info(pipe, &info);
	assert_true(info.min_rtt_us > 0);
	assert_true(info.min_rtt_us < 100000);
	warp_pipe_release(pipe);
	pair_down(&p);
}

static void test_wrong_identity(void **state)
{
	struct pair p;
	struct warp_node_addr to;
	struct warp_identity *other = warp_identity_generate();
	struct warp_connect_result res;
	struct warp_pipe *pipe;

	pair_up(&p, 0, 0, 0);
	assert_int_equal(warp_node_address(p.b, &to), 0);
	memcpy(to.pubkey, warp_identity_pubkey(other), WARP_PUBKEY_LEN);
	assert_int_equal(warp_auto_connect(p.a, &to, NULL, &pipe, &res), -WARP_EIDENTITY);
	assert_null(pipe);
	for (size_t i = 0; i < res.nattempts; i++)
		if (res.attempts[i].outcome == WARP_ATTEMPT_FAILED)
			assert_int_equal(res.attempts[i].err, -WARP_EIDENTITY);
	warp_identity_free(other);
	pair_down(&p);
}

static void test_allow_list(void **state)
{
	struct pair p;
	struct warp_node_addr to;
	struct warp_identity *other = warp_identity_generate();
	uint8_t keys[1][WARP_PUBKEY_LEN];
	struct warp_connect_opts o = { .timeout_ms = 3000 };
	struct warp_pipe *pipe;
	char buf[8];
	int err;

	pair_up(&p, 0, 0, 0);
	memcpy(keys[0], warp_identity_pubkey(other), WARP_PUBKEY_LEN);
	assert_int_equal(warp_node_allow(p.b, keys, 1), 0);
	assert_int_equal(warp_node_address(p.b, &to), 0);
	/* Our side of the handshake completes (the responder proved its identity), then the
	 * responder refuses ours with a sealed CLOSE: the pipe ends with -EACCES and the
	 * listener never sees it. */
	err = warp_auto_connect(p.a, &to, &o, &pipe, NULL);
	if (err == 0) {
		warp_pipe_subscribe(pipe, NULL);
		assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 3000),
				 -EACCES);
		warp_pipe_release(pipe);
	} else {
		assert_int_equal(err, -EACCES);
	}
	assert_int_equal(p.accepted, 0);
	/* Listed: accepted. */
	memcpy(keys[0], warp_identity_pubkey(warp_node_identity(p.a)), WARP_PUBKEY_LEN);
	assert_int_equal(warp_node_allow(p.b, keys, 1), 0);
	pipe = connect_ab(&p, NULL);
	assert_int_equal(p.accepted, 1);
	warp_pipe_release(pipe);
	warp_identity_free(other);
	pair_down(&p);
}

static void test_no_listener(void **state)
{
	struct pair p;
	struct warp_node_addr to;
	struct warp_connect_opts o = { .timeout_ms = 600 };
	struct warp_connect_result res;
	struct warp_pipe *pipe;
	uint64_t t0 = warp_time_ms();

	pair_up(&p, 0, 0, 0);
	warp_node_on_accept(p.b, NULL, NULL);
	assert_int_equal(warp_node_address(p.b, &to), 0);
	assert_true(warp_auto_connect(p.a, &to, &o, &pipe, &res) < 0);
	assert_true(warp_time_ms() - t0 < 3000);
	assert_null(pipe);
	pair_down(&p);
}

static void test_node_close_with_open_pipes(void **state)
{
	struct pair p;
	struct warp_pipe *pipe;
	char buf[8];

	pair_up(&p, 0, 0, 0);
	pipe = connect_ab(&p, NULL);
	warp_node_close(p.a);
	p.a = NULL;
	/* The handle outlives the node: it reports the end (and why) instead of crashing. */
	assert_false(warp_pipe_is_open(pipe));
	assert_int_equal(warp_pipe_send(pipe, "x", 1), -WARP_ECLOSED);
	assert_int_equal(warp_pipe_recv(pipe, WARP_SUB_ALL, buf, sizeof(buf), 0), -ECANCELED);
	warp_pipe_release(pipe);
	pair_down(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_udp_echo_and_trace),
		cmocka_unit_test(test_udp_large_and_ordered),
		cmocka_unit_test(test_tcp_path),
		cmocka_unit_test(test_datagrams),
		cmocka_unit_test(test_subscriptions),
		cmocka_unit_test(test_close_seen_by_both),
		cmocka_unit_test(test_half_close),
		cmocka_unit_test(test_writable_and_eos),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_wrong_identity),
		cmocka_unit_test(test_allow_list),
		cmocka_unit_test(test_no_listener),
		cmocka_unit_test(test_node_close_with_open_pipes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
