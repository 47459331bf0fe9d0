// SPDX-License-Identifier: MIT
/*
 * tcp_punch decisions (feasibility, port prediction, meeting time, retry schedule) as pure
 * functions, and the connect engine on loopback: two punches aimed at each other meet in
 * one connection, a punch at a closed port gives up after its bounded tries, and a connection
 * accepted before the peer's endpoints are known is handed over once they are.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/address.h>
#include <warpgate/loop.h>

#include "net/endpoint.h"
#include "net/sock.h"
#include "signal/msg.h"
#include "traverse/tcp_punch.h"

static const struct tp_nat port_restricted = {
	.type = WARP_ADDR_NAT_PORT_RESTRICTED,
	.mapping = WARP_ADDR_BEH_EI,
	.delta = WARP_ADDR_DELTA_EQUAL,
};
static const struct tp_nat udp_blocked = {
	.type = WARP_ADDR_NAT_BLOCKED,
	.udp_blocked = true,
};
static const struct tp_nat sym_random = {
	.type = WARP_ADDR_NAT_SYMMETRIC,
	.mapping = WARP_ADDR_BEH_APD,
	.delta = WARP_ADDR_DELTA_RANDOM,
};
static const struct tp_nat sym_seq = {
	.type = WARP_ADDR_NAT_SYMMETRIC,
	.mapping = WARP_ADDR_BEH_APD,
	.delta = WARP_ADDR_DELTA_INDEPENDENT,
	.delta_value = 2,
};
static const struct tp_nat open_host = { .type = WARP_ADDR_NAT_OPEN };

static void ep(struct sockaddr_storage *ss, const char *s)
{
	assert_int_equal(warp_ep_parse(s, 0, ss), 0);
}

static void test_feasible(void **state)
{
	struct tp_nat sym_unknown = sym_random, sym_keep = sym_random, unknown = { 0 };
	const char *why;

	sym_unknown.delta = WARP_ADDR_DELTA_NONE;
	sym_keep.delta = WARP_ADDR_DELTA_EQUAL;
	/* Endpoint-independent TCP mappings on both sides, whatever UDP does. */
	assert_null(tp_infeasible(&udp_blocked, &port_restricted));
	assert_null(tp_infeasible(&port_restricted, &udp_blocked));
	assert_null(tp_infeasible(&udp_blocked, &udp_blocked));
	assert_null(tp_infeasible(&unknown, &unknown));
	/* Sequential and port-keeping symmetric NATs can be predicted. */
	assert_null(tp_infeasible(&sym_seq, &udp_blocked));
	assert_null(tp_infeasible(&udp_blocked, &sym_seq));
	assert_null(tp_infeasible(&sym_keep, &port_restricted));
	/* Random: whichever side it is on, and named as such. */
	why = tp_infeasible(&udp_blocked, &sym_random);
	assert_non_null(why);
	assert_non_null(strstr(why, "the peer's NAT"));
	assert_non_null(strstr(why, "random"));
	why = tp_infeasible(&sym_random, &udp_blocked);
	assert_non_null(why);
	assert_non_null(strstr(why, "our NAT"));
	why = tp_infeasible(&sym_random, &sym_random);
	assert_non_null(why);
	assert_non_null(strstr(why, "our NAT"));
	why = tp_infeasible(&port_restricted, &sym_unknown);
	assert_non_null(why);
	assert_non_null(strstr(why, "no known pattern"));
	/* An open host takes the SYN from wherever it comes. */
	assert_null(tp_infeasible(&sym_random, &open_host));
	assert_null(tp_infeasible(&open_host, &sym_random));
}

static void test_predict(void **state)
{
	struct sockaddr_storage mapped, out[TP_MAX_TARGETS], want;
	struct tp_nat sym_down = sym_seq, sym_keep = sym_random;
	uint8_t kinds[TP_MAX_TARGETS];
	int n;

	ep(&mapped, "198.51.100.7:40000");
	/* One mapping for all destinations: exactly what STUN saw. */
	n = tp_predict(&port_restricted, (struct sockaddr *)&mapped, 3, out, kinds, TP_MAX_TARGETS);
	assert_int_equal(n, 1);
	assert_true(warp_ep_equal((struct sockaddr *)&out[0], (struct sockaddr *)&mapped));
	assert_int_equal(kinds[0], WARP_SIG_EP_REFLEXIVE);
	n = tp_predict(&udp_blocked, (struct sockaddr *)&mapped, 1, out, kinds, TP_MAX_TARGETS);
	assert_int_equal(n, 1);
	sym_keep.delta = WARP_ADDR_DELTA_PRESERVING;
	n = tp_predict(&sym_keep, (struct sockaddr *)&mapped, 1, out, kinds, TP_MAX_TARGETS);
	assert_int_equal(n, 1);
	assert_int_equal(kinds[0], WARP_SIG_EP_REFLEXIVE);
	/* Sequential: the mappings after STUN's, one per connection plus slack. */
	n = tp_predict(&sym_seq, (struct sockaddr *)&mapped, 1, out, kinds, TP_MAX_TARGETS);
	assert_int_equal(n, 1 + TP_SEQ_SLACK);
	for (int i = 0; i < n; i++) {
		ep(&want, "198.51.100.7:40000");
		warp_ep_set_port((struct sockaddr *)&want, (uint16_t)(40000 + 2 * (i + 1)));
		assert_true(warp_ep_equal((struct sockaddr *)&out[i], (struct sockaddr *)&want));
		assert_int_equal(kinds[i], WARP_SIG_EP_PREDICTED);
	}
	n = tp_predict(&sym_seq, (struct sockaddr *)&mapped, 4, out, kinds, TP_MAX_TARGETS);
	assert_int_equal(n, 4 + TP_SEQ_SLACK);
	n = tp_predict(&sym_seq, (struct sockaddr *)&mapped, 20, out, kinds, TP_MAX_TARGETS);
	assert_int_equal(n, TP_MAX_TARGETS);
	n = tp_predict(&sym_seq, (struct sockaddr *)&mapped, 20, out, kinds, 2);
	assert_int_equal(n, 2);
	assert_int_equal(tp_predict(&sym_seq, (struct sockaddr *)&mapped, 1, out, kinds, 0), 0);
	/* Never a port beyond the range. */
	ep(&mapped, "198.51.100.7:65533");
	n = tp_predict(&sym_seq, (struct sockaddr *)&mapped, 3, out, kinds, TP_MAX_TARGETS);
	assert_int_equal(n, 1);
	assert_int_equal(warp_ep_port((struct sockaddr *)&out[0]), 65535);
	sym_down.delta_value = -3;
	ep(&mapped, "[2001:db8::7]:1030");
	n = tp_predict(&sym_down, (struct sockaddr *)&mapped, 1, out, kinds, TP_MAX_TARGETS);
	assert_int_equal(n, 3);
	assert_int_equal(out[2].ss_family, AF_INET6);
	assert_int_equal(warp_ep_port((struct sockaddr *)&out[2]), 1021);
	assert_true(warp_ep_addr_equal((struct sockaddr *)&out[2], (struct sockaddr *)&mapped));
}

static void test_schedule(void **state)
{
	const uint64_t now = 1700000000000ull;
	struct tp_sched s;

	/* A LAN-fast signalling path: the margin dominates, retries at the floor. */
	tp_schedule(now, 3, now - 10, 0, 0, &s);
	assert_int_equal(s.start_ms, now + 3 + TP_MARGIN_MS);
	assert_int_equal(s.interval_ms, 50);
	assert_int_equal(s.duration_ms, TP_DURATION_MS);
	assert_int_equal(s.max_tries, 64); /* capped */
	/* 100 ms each way and a 10 ms clock uncertainty. */
	tp_schedule(now, 100, 0, 0, 10, &s);
	assert_int_equal(s.start_ms, now + 100 + TP_MARGIN_MS + 10);
	assert_int_equal(s.interval_ms, 200);
	assert_int_equal(s.max_tries, TP_DURATION_MS / 200 + 1);
	/* Clock trouble is bounded, not trusted. */
	tp_schedule(now, 3600000, 0, 0, 0, &s);
	assert_int_equal(s.start_ms, now + TP_MAX_TRANSIT_MS + TP_MARGIN_MS);
	assert_int_equal(s.interval_ms, 250);
	/* The offerer's later start wins, up to 5 s. */
	tp_schedule(now, 3, now + 400, 0, 0, &s);
	assert_int_equal(s.start_ms, now + 400);
	tp_schedule(now, 3, now + 60000, 0, 0, &s);
	assert_int_equal(s.start_ms, now + 5000);
	/* The offerer's budget shortens the window, within reason. */
	tp_schedule(now, 3, 0, 1000, 0, &s);
	assert_int_equal(s.duration_ms, 1000);
	tp_schedule(now, 3, 0, 100, 0, &s);
	assert_int_equal(s.duration_ms, TP_MIN_DURATION);
	tp_schedule(now, 3, 0, 60000, 0, &s);
	assert_int_equal(s.duration_ms, TP_DURATION_MS);
	/* The offerer's copy from the answer's fields. */
	tp_sched_from(now, 0, 0, &s);
	assert_int_equal(s.start_ms, now);
	assert_int_equal(s.interval_ms, 50);
	assert_int_equal(s.duration_ms, TP_MIN_DURATION);
	tp_sched_from(now, 60000, 600000, &s);
	assert_int_equal(s.interval_ms, 1000);
	assert_int_equal(s.duration_ms, 10000);
	assert_int_equal(s.max_tries, 11);
	tp_sched_from(now, 50, 10000, &s);
	assert_int_equal(s.max_tries, 64);
}

static void test_slot(void **state)
{
	struct tp_sched s;
	struct tp_slot sl = { 0 };
	const uint64_t end = 10000;

	tp_sched_from(0, 100, 1000, &s); /* 11 tries */
	assert_int_equal(s.max_tries, 11);
	assert_true(tp_slot_due(&s, &sl, 0, end));
	sl.open = true;
	sl.tries = 1;
	/* In progress: left to the kernel's SYN retransmission, never replaced. */
	assert_false(tp_slot_due(&s, &sl, 100, end));
	assert_false(tp_slot_due(&s, &sl, 5000, end));
	sl.open = false;
	assert_true(tp_slot_due(&s, &sl, 100, end)); /* failed: again at the next tick */
	assert_false(tp_slot_due(&s, &sl, end, end));
	sl.tries = s.max_tries;
	assert_false(tp_slot_due(&s, &sl, 100, end));
	sl.tries = 1;
	sl.done = true;
	assert_false(tp_slot_due(&s, &sl, 100, end));
	/* Bounded: a connect that fails at once every tick stops after max_tries. */
	memset(&sl, 0, sizeof(sl));
	for (uint64_t t = 0; t < end; t += s.interval_ms)
		if (tp_slot_due(&s, &sl, t, end))
			sl.tries++;
	assert_int_equal(sl.tries, s.max_tries);
}

/* ---- the engine on loopback ---- */

struct side {
	struct tcp_punch *tp;
	int fd;
	int connected, ended;
	struct sockaddr_storage remote;
	bool free_in_cb;
};

static void on_connected(struct tcp_punch *tp, int fd, const struct sockaddr *remote, void *user)
{
	struct side *s = user;

	s->connected++;
	s->fd = fd;
	memcpy(&s->remote, remote, warp_ep_len(remote));
	if (s->free_in_cb) {
		tp_free(s->tp);
		s->tp = NULL;
	}
}

static void on_ended(struct tcp_punch *tp, void *user)
{
	((struct side *)user)->ended++;
}

static const struct tp_ops ops = { .connected = on_connected, .ended = on_ended };

static bool both_connected(void *user)
{
	struct side *s = user;

	return s[0].connected && s[1].connected;
}

static bool one_connected(void *user)
{
	return ((struct side *)user)->connected > 0;
}

static bool one_ended(void *user)
{
	return ((struct side *)user)->ended > 0;
}

static void loopback_target(struct tcp_punch *to, struct tcp_punch *from)
{
	struct sockaddr_storage ss;

	ep(&ss, "127.0.0.1:1");
	warp_ep_set_port((struct sockaddr *)&ss, warp_ep_port(tp_local(to)));
	assert_int_equal(tp_add_target(from, (struct sockaddr *)&ss), 0);
}

static void test_engine_meet(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct side s[2] = { { .fd = -1, .free_in_cb = true }, { .fd = -1 } };
	struct tp_sched sched;
	char buf[8] = { 0 };
	struct sockaddr_storage v6;

	assert_non_null(loop);
	for (int i = 0; i < 2; i++) {
		s[i].tp = tp_new(loop, AF_INET, &ops, &s[i]);
		assert_non_null(s[i].tp);
		assert_int_not_equal(warp_ep_port(tp_local(s[i].tp)), 0);
	}
	loopback_target(s[1].tp, s[0].tp);
	loopback_target(s[0].tp, s[1].tp);
	ep(&v6, "127.0.0.1:1");
	warp_ep_set_port((struct sockaddr *)&v6, 0);
	assert_int_equal(tp_add_target(s[0].tp, (struct sockaddr *)&v6), -EAFNOSUPPORT);
	ep(&v6, "[::1]:9");
	assert_int_equal(tp_add_target(s[0].tp, (struct sockaddr *)&v6), -EAFNOSUPPORT);
	loopback_target(s[1].tp, s[0].tp); /* duplicate: ignored */
	assert_int_equal(tp_ntargets(s[0].tp), 1);
	tp_sched_from(0, 50, 2000, &sched);
	tp_start(s[0].tp, &sched, 0);
	tp_start(s[1].tp, &sched, 0);
	assert_int_equal(warp_loop_run_until(loop, both_connected, s, 3000), 0);
	assert_null(s[0].tp); /* freed from its own callback */
	assert_int_equal(tp_pending(s[1].tp), 0);
	/* One connection, seen from both ends. */
	assert_int_equal(write(s[0].fd, "punch", 5), 5);
	for (int i = 0; i < 100 && read(s[1].fd, buf, sizeof(buf)) != 5; i++)
		usleep(10000);
	assert_string_equal(buf, "punch");
	assert_int_equal(s[0].ended + s[1].ended, 0);
	close(s[0].fd);
	close(s[1].fd);
	tp_free(s[1].tp);
	warp_loop_free(loop);
}

static void test_engine_gives_up(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct side s = { .fd = -1 };
	struct sockaddr_storage closed;
	struct tp_sched sched;
	unsigned int tries;
	int last, fd;

	assert_non_null(loop);
	/* A port nobody listens on: every connect is refused. */
	ep(&closed, "127.0.0.1:1");
	warp_ep_set_port((struct sockaddr *)&closed, 0);
	fd = warp_sock_tcp((struct sockaddr *)&closed, 0);
	assert_true(fd >= 0);
	assert_int_equal(warp_sock_local(fd, &closed), 0);
	close(fd);
	s.tp = tp_new(loop, AF_INET, &ops, &s);
	assert_non_null(s.tp);
	assert_int_equal(tp_add_target(s.tp, (struct sockaddr *)&closed), 0);
	tp_sched_from(0, 50, TP_MIN_DURATION, &sched);
	tp_start(s.tp, &sched, 0);
	assert_int_equal(warp_loop_run_until(loop, one_ended, &s, 3000), 0);
	tp_stats(s.tp, &tries, &last);
	assert_int_equal(s.connected, 0);
	assert_int_equal(s.ended, 1);
	assert_true(tries >= 2 && tries <= sched.max_tries);
	assert_int_equal(last, -ECONNREFUSED);
	assert_int_equal(tp_pending(s.tp), 1);
	tp_free(s.tp);
	warp_loop_free(loop);
}

static bool never(void *user)
{
	return false;
}

/* An open host's listener is reached before it knows the peer's endpoints: the connection is
 * held and handed over once they are known. */
static void test_engine_early_accept(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct side s = { .fd = -1 };
	struct sockaddr_storage to, from;
	struct tp_sched sched;
	int peer;

	assert_non_null(loop);
	s.tp = tp_new(loop, AF_INET, &ops, &s);
	assert_non_null(s.tp);
	ep(&to, "127.0.0.1:1");
	warp_ep_set_port((struct sockaddr *)&to, warp_ep_port(tp_local(s.tp)));
	ep(&from, "127.0.0.1:1");
	warp_ep_set_port((struct sockaddr *)&from, 0);
	peer = warp_sock_tcp((struct sockaddr *)&from, 0);
	assert_true(peer >= 0);
	assert_true(connect(peer, (struct sockaddr *)&to, warp_ep_len((struct sockaddr *)&to)) ==
			    0 ||
		    errno == EINPROGRESS);
	warp_loop_run_until(loop, never, NULL, 100); /* accepted and held */
	assert_int_equal(s.connected, 0);
	assert_int_equal(warp_sock_local(peer, &from), 0);
	assert_int_equal(tp_add_target(s.tp, (struct sockaddr *)&from), 0);
	tp_sched_from(0, 50, TP_MIN_DURATION, &sched);
	tp_start(s.tp, &sched, 0);
	assert_int_equal(warp_loop_run_until(loop, one_connected, &s, 2000), 0);
	assert_true(warp_ep_equal((struct sockaddr *)&s.remote, (struct sockaddr *)&from));
	assert_int_equal(tp_pending(s.tp), 0);
	close(s.fd);
	close(peer);
	tp_free(s.tp);
	warp_loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_feasible),
		cmocka_unit_test(test_predict),
		cmocka_unit_test(test_schedule),
		cmocka_unit_test(test_slot),
		cmocka_unit_test(test_engine_meet),
		cmocka_unit_test(test_engine_gives_up),
		cmocka_unit_test(test_engine_early_accept),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
