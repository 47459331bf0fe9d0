// SPDX-License-Identifier: MIT
/*
 * Stream engine tests.  Two engines talk through an in-process fake link on a simulated
 * clock: seeded loss, duplication, reordering (random extra delay), optional rate limit.
 * Every reliable message has a size and content derived from its index, so the receiver
 * checks exactly-once, in-order, intact delivery without keeping copies.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "pipe/stream.h"

#define MS	1000000ull
#define SEC	1000000000ull
#define NIL	UINT64_MAX
#define PAYLOAD 1150
#define MAXPKT	65536

/* ------------------------------------------------------------------ PRNG */

static uint64_t rng_next(uint64_t *st)
{
	uint64_t x = *st;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*st = x;
	return x * 0x2545f4914f6cdd1dull;
}

static double rng_unit(uint64_t *st)
{
	return (double)(rng_next(st) >> 11) / (double)(1ull << 53);
}

/* Log-uniform in [1, max]: many small messages, some large ones. */
static size_t rng_size(uint64_t *st, size_t max)
{
	size_t n = (size_t)exp(rng_unit(st) * log((double)max + 1));

	return n < 1 ? 1 : n > max ? max : n;
}

/* ------------------------------------------------------------------ simulation */

struct pkt {
	uint64_t at, order;
	int dst;
	size_t len;
	uint8_t data[];
};

struct link {
	double loss, dup, reorder; /* probabilities */
	uint64_t delay, jitter;	   /* one-way delay; reordered packets get up to jitter more */
	uint64_t rate;		   /* bytes per second, 0 = infinite */
};

struct sim;

struct ep {
	struct sim *sim;
	int id;
	struct warp_stream *s;
	/* sender side of the test application */
	uint32_t rel_total, rel_sent, dg_total, dg_sent;
	size_t *rel_sizes, *dg_sizes; /* what this end sends */
	size_t rel_max, dg_max;
	bool close_after_send, close_called;
	bool close_on_eos; /* what a pipe does unless half-closing */
	uint32_t eagain, writable;
	/* receiver side */
	uint32_t rel_rx, dg_rx, dg_rx_dup, bad;
	uint8_t *dg_seen;
	bool eos, closed;
	uint32_t rel_at_eos;
	int close_err;
	uint32_t closed_calls;
	bool free_on_message;
};

struct sim {
	uint64_t now;
	uint64_t rng;
	struct link link[2]; /* link[i]: packets sent by endpoint i */
	uint64_t busy_until[2];
	struct pkt **heap;
	size_t nheap, capheap;
	uint64_t order;
	struct ep ep[2];
	uint64_t pkts, dropped;
	size_t payload_max;
	uint64_t app_wakeup; /* when on_step wants to run again (0: no need) */
	uint64_t max_rcv_buffered[2], max_outstanding_excess[2];
	void (*on_step)(struct sim *);
};

static bool pkt_before(const struct pkt *a, const struct pkt *b)
{
	return a->at < b->at || (a->at == b->at && a->order < b->order);
}

static void heap_push(struct sim *sm, struct pkt *p)
{
	size_t i;

	if (sm->nheap == sm->capheap) {
		sm->capheap = sm->capheap ? sm->capheap * 2 : 256;
		sm->heap = realloc(sm->heap, sm->capheap * sizeof(*sm->heap));
		assert_non_null(sm->heap);
	}
	i = sm->nheap++;
	while (i && pkt_before(p, sm->heap[(i - 1) / 2])) {
		sm->heap[i] = sm->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	sm->heap[i] = p;
}

static struct pkt *heap_pop(struct sim *sm)
{
	struct pkt *top = sm->heap[0], *last = sm->heap[--sm->nheap];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= sm->nheap)
			break;
		if (c + 1 < sm->nheap && pkt_before(sm->heap[c + 1], sm->heap[c]))
			c++;
		if (!pkt_before(sm->heap[c], last))
			break;
		sm->heap[i] = sm->heap[c];
		i = c;
	}
	if (sm->nheap)
		sm->heap[i] = last;
	return top;
}

static void link_send(struct sim *sm, int from, const uint8_t *buf, size_t len)
{
	struct link *l = &sm->link[from];
	uint64_t t = sm->now;
	int copies = 1;

	sm->pkts++;
	if (l->rate) {
		uint64_t start = sm->busy_until[from] > t ? sm->busy_until[from] : t;

		sm->busy_until[from] = start + (uint64_t)len * SEC / l->rate;
		t = sm->busy_until[from];
	}
	if (rng_unit(&sm->rng) < l->loss) {
		sm->dropped++;
		return;
	}
	if (rng_unit(&sm->rng) < l->dup)
		copies = 2;
	for (int c = 0; c < copies; c++) {
		struct pkt *p = malloc(sizeof(*p) + len);

		assert_non_null(p);
		p->at = t + l->delay;
		if (l->jitter && (c || rng_unit(&sm->rng) < l->reorder))
			p->at += rng_next(&sm->rng) % l->jitter;
		p->order = sm->order++;
		p->dst = !from;
		p->len = len;
		memcpy(p->data, buf, len);
		heap_push(sm, p);
	}
}

static void fill(uint8_t *b, size_t len, int dir, uint32_t i)
{
	uint32_t x = i * 2654435761u ^ (uint32_t)dir << 31;

	for (size_t j = 0; j < len; j++)
		b[j] = (uint8_t)((x >> (j % 4 * 8)) + j / 4);
}

static bool check(const uint8_t *b, size_t len, int dir, uint32_t i)
{
	uint32_t x = i * 2654435761u ^ (uint32_t)dir << 31;

	for (size_t j = 0; j < len; j++)
		if (b[j] != (uint8_t)((x >> (j % 4 * 8)) + j / 4))
			return false;
	return true;
}

static void on_message(void *user, const uint8_t *data, size_t len, unsigned int flags)
{
	struct ep *e = user;
	struct ep *peer = &e->sim->ep[!e->id];

	/* No reliable message may follow the end of stream (datagrams are unordered and may). */
	if (e->eos && flags == WARP_MSG_RELIABLE)
		e->bad++;
	if (flags == WARP_MSG_RELIABLE) {
		uint32_t i = e->rel_rx++;

		if (i >= peer->rel_sent || len != peer->rel_sizes[i] ||
		    !check(data, len, peer->id, i))
			e->bad++;
	} else if (flags == WARP_MSG_DATAGRAM) {
		uint32_t id;

		if (len < 4) {
			e->bad++;
			return;
		}
		id = warp_get_u32(data);
		if (id >= peer->dg_sent || len != peer->dg_sizes[id] ||
		    !check(data + 4, len - 4, peer->id + 2, id)) {
			e->bad++;
			return;
		}
		if (e->dg_seen[id])
			e->dg_rx_dup++;
		e->dg_seen[id] = 1;
		e->dg_rx++;
	} else {
		e->bad++;
	}
	if (e->free_on_message) {
		warp_stream_free(e->s);
		e->s = NULL;
	}
}

static void on_writable(void *user)
{
	struct ep *e = user;

	e->writable++;
}

static void on_eos(void *user)
{
	struct ep *e = user;

	if (e->eos)
		e->bad++;
	e->eos = true;
	e->rel_at_eos = e->rel_rx;
	if (e->close_on_eos && !e->close_called) {
		assert_int_equal(warp_stream_close(e->s, true), 0);
		e->close_called = true;
	}
}

static void on_closed(void *user, int err)
{
	struct ep *e = user;

	e->closed = true;
	e->close_err = err;
	e->closed_calls++;
}

/* The test application: queue as much as the engine takes. */
static void app_pump(struct ep *e)
{
	static uint8_t buf[1u << 20];
	bool rel_blocked = false, dg_blocked = false;
	int rc;

	/* alternate the two kinds; a kind whose buffer is full sits out the rest of the call */
	while (e->s && ((!rel_blocked && e->rel_sent < e->rel_total) ||
			(!dg_blocked && e->dg_sent < e->dg_total))) {
		bool rel =
			!rel_blocked && e->rel_sent < e->rel_total &&
			(dg_blocked || e->dg_sent >= e->dg_total || (e->rel_sent + e->dg_sent) % 2);

		if (rel) {
			size_t len = e->rel_sizes[e->rel_sent];

			fill(buf, len, e->id, e->rel_sent);
			rc = warp_stream_send(e->s, buf, len, WARP_MSG_RELIABLE, e->sim->now);
			if (rc == -EAGAIN) {
				e->eagain++;
				rel_blocked = true;
				continue;
			}
			if (rc == -EPIPE && e->close_called)
				break; /* we closed on the peer's end of stream */
			assert_int_equal(rc, 0);
			e->rel_sent++;
		} else {
			size_t len = e->dg_sizes[e->dg_sent];

			warp_put_u32(buf, e->dg_sent);
			fill(buf + 4, len - 4, e->id + 2, e->dg_sent);
			rc = warp_stream_send(e->s, buf, len, WARP_MSG_DATAGRAM, e->sim->now);
			if (rc == -EAGAIN) {
				e->eagain++;
				dg_blocked = true;
				continue;
			}
			if (rc == -EPIPE && e->close_called)
				break;
			assert_int_equal(rc, 0);
			e->dg_sent++;
		}
	}
	if (e->s && e->close_after_send && !e->close_called && e->rel_sent == e->rel_total &&
	    e->dg_sent == e->dg_total) {
		assert_int_equal(warp_stream_close(e->s, true), 0);
		e->close_called = true;
	}
}

static void sim_flush(struct sim *sm, int i)
{
	uint8_t buf[MAXPKT];
	bool ack_only;
	int n;

	while (sm->ep[i].s &&
	       (n = warp_stream_poll(sm->ep[i].s, buf, sizeof(buf), sm->now, &ack_only)) > 0) {
		assert_true((size_t)n <= sm->payload_max);
		link_send(sm, i, buf, (size_t)n);
	}
	if (sm->ep[i].s)
		assert_true(n >= 0);
}

static void sim_check(struct sim *sm)
{
	for (int i = 0; i < 2; i++) {
		struct warp_stream_stats a, b;

		if (!sm->ep[i].s || !sm->ep[!i].s)
			continue;
		warp_stream_stats(sm->ep[i].s, &a);
		warp_stream_stats(sm->ep[!i].s, &b);
		if (a.rcv_buffered > sm->max_rcv_buffered[i])
			sm->max_rcv_buffered[i] = a.rcv_buffered;
		/* The sender may exceed the advertised window only by its one-fragment probe. */
		if (a.outstanding > a.peer_rwnd &&
		    a.outstanding - a.peer_rwnd > sm->max_outstanding_excess[i])
			sm->max_outstanding_excess[i] = a.outstanding - a.peer_rwnd;
		(void)b;
	}
}

typedef bool (*sim_done_fn)(struct sim *);

/* Runs until done() or the simulated limit; returns whether done() became true. */
static bool sim_run(struct sim *sm, sim_done_fn done, uint64_t limit)
{
	uint64_t end = sm->now + limit;

	for (uint64_t steps = 0; steps < 50000000; steps++) {
		uint64_t t = NIL;

		if (sm->on_step)
			sm->on_step(sm);
		for (int i = 0; i < 2; i++) {
			app_pump(&sm->ep[i]);
			sim_flush(sm, i);
		}
		sim_check(sm);
		if (done(sm))
			return true;
		if (sm->nheap)
			t = sm->heap[0]->at;
		if (sm->app_wakeup > sm->now && sm->app_wakeup < t)
			t = sm->app_wakeup;
		for (int i = 0; i < 2; i++)
			if (sm->ep[i].s) {
				uint64_t d = warp_stream_next_deadline(sm->ep[i].s);

				if (d < t)
					t = d;
			}
		if (t == NIL || t > end)
			return done(sm);
		if (t > sm->now)
			sm->now = t;
		while (sm->nheap && sm->heap[0]->at <= sm->now) {
			struct pkt *p = heap_pop(sm);

			if (sm->ep[p->dst].s) {
				int rc = warp_stream_input(sm->ep[p->dst].s, p->data, p->len,
							   sm->now);

				assert_int_equal(rc, 0);
			}
			free(p);
		}
		for (int i = 0; i < 2; i++)
			if (sm->ep[i].s && warp_stream_next_deadline(sm->ep[i].s) <= sm->now)
				warp_stream_on_timer(sm->ep[i].s, sm->now);
	}
	fail_msg("simulation did not settle");
	return false;
}

static void sim_init(struct sim *sm, const struct warp_stream_conf *base, uint64_t seed)
{
	memset(sm, 0, sizeof(*sm));
	sm->now = 1 * SEC;
	sm->rng = seed * 0x9e3779b97f4a7c15ull + 1;
	sm->payload_max = base->payload_max;
	for (int i = 0; i < 2; i++) {
		struct warp_stream_conf c = *base;
		struct ep *e = &sm->ep[i];

		e->sim = sm;
		e->id = i;
		c.user = e;
		c.on_message = on_message;
		c.on_writable = on_writable;
		c.on_eos = on_eos;
		c.on_closed = on_closed;
		e->s = warp_stream_new(&c);
		assert_non_null(e->s);
		sm->link[i].delay = 10 * MS;
	}
}

/* Plans n reliable messages up to max bytes and m datagrams up to dmax from endpoint i. */
static void ep_plan(struct sim *sm, int i, uint32_t n, size_t max, uint32_t m, size_t dmax)
{
	struct ep *e = &sm->ep[i];

	e->rel_total = n;
	e->rel_sizes = calloc(n + 1, sizeof(size_t));
	for (uint32_t k = 0; k < n; k++)
		e->rel_sizes[k] = rng_size(&sm->rng, max);
	e->dg_total = m;
	e->dg_sizes = calloc(m + 1, sizeof(size_t));
	for (uint32_t k = 0; k < m; k++)
		e->dg_sizes[k] = 4 + rng_size(&sm->rng, dmax - 4);
	sm->ep[!i].dg_seen = calloc(m + 1, 1);
}

static void sim_free(struct sim *sm)
{
	for (int i = 0; i < 2; i++) {
		warp_stream_free(sm->ep[i].s);
		free(sm->ep[i].rel_sizes);
		free(sm->ep[i].dg_sizes);
		free(sm->ep[i].dg_seen);
	}
	while (sm->nheap)
		free(heap_pop(sm));
	free(sm->heap);
}

static bool all_reliable_delivered(struct sim *sm)
{
	for (int i = 0; i < 2; i++)
		if (sm->ep[i].rel_rx < sm->ep[!i].rel_total)
			return false;
	return true;
}

static bool all_dg_sent_and_quiet(struct sim *sm)
{
	return all_reliable_delivered(sm) && sm->ep[0].dg_sent == sm->ep[0].dg_total &&
	       sm->ep[1].dg_sent == sm->ep[1].dg_total && !sm->nheap;
}

/* Nothing on the wire, nothing in flight, no timer due soon (idle timers aside). */
static bool settled(struct sim *sm)
{
	if (sm->nheap)
		return false;
	for (int i = 0; i < 2; i++) {
		struct warp_stream_stats st;

		if (!sm->ep[i].s)
			continue;
		warp_stream_stats(sm->ep[i].s, &st);
		if (st.bytes_in_flight || st.send_queue_msgs || st.dgram_queue_bytes ||
		    warp_stream_next_deadline(sm->ep[i].s) < sm->now + 100 * MS)
			return false;
	}
	return all_reliable_delivered(sm);
}

static bool both_closed(struct sim *sm)
{
	return sm->ep[0].closed && sm->ep[1].closed;
}

static bool both_done(struct sim *sm)
{
	return warp_stream_state(sm->ep[0].s) == WARP_STREAM_DONE &&
	       warp_stream_state(sm->ep[1].s) == WARP_STREAM_DONE;
}

static struct warp_stream_conf udp_conf(void)
{
	struct warp_stream_conf c = { .mode = WARP_STREAM_UDP, .payload_max = PAYLOAD };

	return c;
}

/* ------------------------------------------------------------------ tests: reliable */

static void test_basic(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;
	struct warp_stream_stats st;
	static const size_t sizes[] = { 0, 1, 1137, 1138, 1139, 5000, 65536, 1u << 20, 3 };

	sim_init(&sm, &c, 1);
	ep_plan(&sm, 0, WARP_ARRAY_SIZE(sizes), 10, 0, 8);
	memcpy(sm.ep[0].rel_sizes, sizes, sizeof(sizes));
	assert_true(sim_run(&sm, all_reliable_delivered, 60 * SEC));
	assert_int_equal(sm.ep[1].bad, 0);
	assert_int_equal(sm.ep[1].rel_rx, WARP_ARRAY_SIZE(sizes));
	warp_stream_stats(sm.ep[0].s, &st);
	assert_int_equal(st.msgs_sent, WARP_ARRAY_SIZE(sizes));
	assert_int_equal(st.frags_retransmitted, 0);
	assert_true(st.srtt_us >= 20000 && st.srtt_us < 40000);
	/* quiet once everything is acknowledged */
	assert_true(sim_run(&sm, settled, 10 * SEC));
	warp_stream_stats(sm.ep[0].s, &st);
	assert_int_equal(st.bytes_in_flight, 0);
	assert_int_equal(st.sndbuf_used, 0);
	warp_stream_stats(sm.ep[1].s, &st);
	assert_int_equal(st.msgs_received, WARP_ARRAY_SIZE(sizes));
	assert_int_equal(st.rcv_buffered, 0);
	sim_free(&sm);
}

static void run_lossy(double loss, double dup, double reorder, uint32_t n, uint64_t seed)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats a, b;
	struct sim sm;

	sim_init(&sm, &c, seed);
	for (int i = 0; i < 2; i++) {
		sm.link[i] = (struct link){ .loss = loss,
					    .dup = dup,
					    .reorder = reorder,
					    .delay = 15 * MS,
					    .jitter = 10 * MS,
					    .rate = 20u << 20 };
	}
	ep_plan(&sm, 0, n, 65536, 0, 8);
	ep_plan(&sm, 1, n / 4, 65536, 0, 8);
	assert_true(sim_run(&sm, all_reliable_delivered, 3600 * SEC));
	for (int i = 0; i < 2; i++) {
		assert_int_equal(sm.ep[i].bad, 0);
		assert_int_equal(sm.ep[i].rel_rx, sm.ep[!i].rel_total);
	}
	warp_stream_stats(sm.ep[0].s, &a);
	warp_stream_stats(sm.ep[1].s, &b);
	print_message("# loss %.0f%% dup %.0f%% reorder %.0f%%: %u+%u msgs, %" PRIu64
		      " frags, %" PRIu64 " retx, %" PRIu64 " RTOs, %" PRIu64
		      " dups seen, srtt %" PRIu64 " us, cwnd %" PRIu64 ", %.1f s simulated\n",
		      loss * 100, dup * 100, reorder * 100, n, n / 4, a.frags_sent,
		      a.frags_retransmitted, a.rto_count, b.spurious_dups_received, a.srtt_us,
		      a.cwnd, (double)(sm.now - SEC) / SEC);
	if (loss > 0)
		assert_true(a.frags_retransmitted > 0);
	sim_free(&sm);
}

static void test_lossy_10(void **state)
{
	run_lossy(0.10, 0.05, 0.2, 3000, 10);
}

static void test_lossy_30(void **state)
{
	run_lossy(0.30, 0.10, 0.3, 1000, 30);
}

static void test_reorder_dup_only(void **state)
{
	run_lossy(0.0, 0.25, 0.5, 2000, 5);
}

/* A single early loss is repaired by the SACK-driven fast path, not by a timeout. */
static bool drop_third(struct sim *sm)
{
	return false;
}

static void test_fast_retransmit(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats st;
	struct sim sm;
	uint8_t buf[MAXPKT], big[40000];
	bool ack_only;
	int n, k = 0;

	(void)drop_third;
	sim_init(&sm, &c, 3);
	fill(big, sizeof(big), 0, 0);
	ep_plan(&sm, 0, 1, 10, 0, 8);
	sm.ep[0].rel_sizes[0] = sizeof(big);
	sm.ep[0].rel_sent = 1;
	assert_int_equal(warp_stream_send(sm.ep[0].s, big, sizeof(big), WARP_MSG_RELIABLE, sm.now),
			 0);
	/* first flight: drop the third payload */
	while ((n = warp_stream_poll(sm.ep[0].s, buf, sizeof(buf), sm.now, &ack_only)) > 0)
		if (k++ != 2)
			link_send(&sm, 0, buf, (size_t)n);
	assert_true(sim_run(&sm, all_reliable_delivered, 60 * SEC));
	warp_stream_stats(sm.ep[0].s, &st);
	assert_int_equal(sm.ep[1].bad, 0);
	assert_int_equal(st.rto_count, 0);
	assert_int_equal(st.frags_retransmitted, 1);
	/* repaired within a couple of RTTs, not after a 1 s initial RTO */
	assert_true(sm.now - SEC < 200 * MS);
	sim_free(&sm);
}

/* The tail is lost: only the RTO can repair it, and it backs off. */
static void test_rto_tail_loss(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats st;
	struct sim sm;
	uint8_t buf[MAXPKT];
	bool ack_only;
	int n;

	sim_init(&sm, &c, 4);
	ep_plan(&sm, 0, 1, 10, 0, 8);
	sm.ep[0].rel_sizes[0] = 100;
	fill(buf, 100, 0, 0);
	assert_int_equal(warp_stream_send(sm.ep[0].s, buf, 100, WARP_MSG_RELIABLE, sm.now), 0);
	sm.ep[0].rel_sent = 1;
	n = warp_stream_poll(sm.ep[0].s, buf, sizeof(buf), sm.now, &ack_only);
	assert_true(n > 0);
	assert_false(ack_only);
	/* dropped; the first RTO is the initial 1 s */
	assert_int_equal(warp_stream_next_deadline(sm.ep[0].s), sm.now + 1 * SEC);
	sm.link[0].loss = 1.0;
	sm.link[1].loss = 1.0;
	sm.now += 1 * SEC;
	warp_stream_on_timer(sm.ep[0].s, sm.now);
	n = warp_stream_poll(sm.ep[0].s, buf, sizeof(buf), sm.now, &ack_only);
	assert_true(n > 0);
	/* backed off to 2 s */
	assert_int_equal(warp_stream_next_deadline(sm.ep[0].s), sm.now + 2 * SEC);
	sm.link[0].loss = sm.link[1].loss = 0;
	link_send(&sm, 0, buf, (size_t)n);
	assert_true(sim_run(&sm, settled, 60 * SEC));
	warp_stream_stats(sm.ep[0].s, &st);
	assert_int_equal(st.rto_count, 1);
	assert_int_equal(st.frags_retransmitted, 1);
	assert_int_equal(sm.ep[1].bad, 0);
	/* the backoff is cleared by the new ack */
	assert_true(st.rto_us < 1000000);
	sim_free(&sm);
}

/* The application sends one small message every 20 ms until the phase ends. */
static uint64_t phase_start, phase_end;
static uint32_t phase_base;

static void paced_app(struct sim *sm)
{
	uint64_t t = sm->now < phase_end ? sm->now : phase_end;

	sm->ep[0].rel_total = phase_base + (uint32_t)((t - phase_start) / (20 * MS));
	sm->app_wakeup =
		sm->now < phase_end ? sm->now + 20 * MS - (sm->now - phase_start) % (20 * MS) : 0;
}

static bool phase_over(struct sim *sm)
{
	return sm->now >= phase_end && all_reliable_delivered(sm);
}

static void run_phase(struct sim *sm, uint64_t one_way, uint64_t dur, struct warp_stream_stats *st)
{
	sm->link[0].delay = sm->link[1].delay = one_way;
	phase_start = sm->now;
	phase_end = sm->now + dur;
	phase_base = sm->ep[0].rel_total;
	assert_true(sim_run(sm, phase_over, dur + 60 * SEC));
	warp_stream_stats(sm->ep[0].s, st);
	print_message("# %3" PRIu64 " ms RTT: srtt %" PRIu64 " rttvar %" PRIu64 " rto %" PRIu64
		      " us\n",
		      (uint64_t)(2 * one_way / MS), st->srtt_us, st->rttvar_us, st->rto_us);
}

static void test_rto_adapts(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats st1, st2, st3;
	struct sim sm;

	sim_init(&sm, &c, 7);
	ep_plan(&sm, 0, 20000, 2000, 0, 8);
	sm.ep[0].rel_total = 0;
	sm.on_step = paced_app;
	run_phase(&sm, 10 * MS, 10 * SEC, &st1);
	assert_true(st1.srtt_us >= 20000 && st1.srtt_us <= 30000);
	assert_true(st1.rto_us == 200000); /* at the floor */

	run_phase(&sm, 250 * MS, 30 * SEC, &st2);
	assert_true(st2.srtt_us >= 480000 && st2.srtt_us <= 530000);
	assert_true(st2.rto_us > st2.srtt_us && st2.rto_us < 2 * st2.srtt_us);

	run_phase(&sm, 5 * MS, 10 * SEC, &st3);
	assert_true(st3.srtt_us >= 10000 && st3.srtt_us < 15000);
	assert_true(st3.rto_us == 200000);
	assert_true(st3.min_rtt_us >= 10000 && st3.min_rtt_us < 12000);
	assert_int_equal(sm.ep[1].bad, 0);
	assert_int_equal(sm.ep[1].rel_rx, sm.ep[0].rel_total);
	sim_free(&sm);
}

/* ------------------------------------------------------------------ flow control */

static void test_backpressure(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats st;
	struct sim sm;

	c.max_message = 64 << 10;
	c.sndbuf = 200 << 10;
	sim_init(&sm, &c, 11);
	sm.link[0].rate = sm.link[1].rate = 2u << 20;
	ep_plan(&sm, 0, 500, 65536, 0, 8);
	/* first pump fills the buffer */
	app_pump(&sm.ep[0]);
	assert_true(sm.ep[0].eagain >= 1);
	assert_true(sm.ep[0].rel_sent < 500);
	warp_stream_stats(sm.ep[0].s, &st);
	assert_true(st.sndbuf_used <= c.sndbuf);
	assert_true(st.sndbuf_used + sm.ep[0].rel_sizes[sm.ep[0].rel_sent] + 64 > c.sndbuf);
	assert_true(warp_stream_writable(sm.ep[0].s) < sm.ep[0].rel_sizes[sm.ep[0].rel_sent]);
	assert_true(sim_run(&sm, all_reliable_delivered, 600 * SEC));
	warp_stream_stats(sm.ep[0].s, &st);
	assert_true(st.sndbuf_used <= c.sndbuf);
	assert_true(sm.ep[0].writable >= 1);
	assert_true(sm.ep[0].writable <= sm.ep[0].eagain);
	assert_int_equal(sm.ep[1].bad, 0);
	assert_int_equal(sm.ep[1].rel_rx, 500);
	sim_free(&sm);
}

static void test_receive_window(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats st;
	struct sim sm;

	c.max_message = 32 << 10;
	c.rcvbuf = 48 << 10;
	sim_init(&sm, &c, 12);
	for (int i = 0; i < 2; i++)
		sm.link[i] = (struct link){
			.loss = 0.1, .reorder = 0.3, .delay = 20 * MS, .jitter = 15 * MS
		};
	ep_plan(&sm, 0, 1500, 32 << 10, 0, 8);
	assert_true(sim_run(&sm, all_reliable_delivered, 3600 * SEC));
	assert_int_equal(sm.ep[1].bad, 0);
	warp_stream_stats(sm.ep[0].s, &st);
	print_message("# rcvbuf %zu: max buffered %" PRIu64 ", max excess over window %" PRIu64
		      ", peer_rwnd %" PRIu64 "\n",
		      c.rcvbuf, sm.max_rcv_buffered[1], sm.max_outstanding_excess[0], st.peer_rwnd);
	assert_true(sm.max_rcv_buffered[1] <= c.rcvbuf);
	/* at most one probe fragment beyond the window */
	assert_true(sm.max_outstanding_excess[0] <= PAYLOAD + 32);
	warp_stream_stats(sm.ep[1].s, &st);
	assert_true(st.frags_dropped_window < 1000);
	sim_free(&sm);
}

/* ------------------------------------------------------------------ datagrams */

static void test_datagrams_lossy(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats st;
	struct sim sm;
	uint32_t n = 3000;

	sim_init(&sm, &c, 21);
	for (int i = 0; i < 2; i++)
		sm.link[i] = (struct link){ .loss = 0.15,
					    .dup = 0.2,
					    .reorder = 0.3,
					    .delay = 10 * MS,
					    .jitter = 30 * MS };
	/* datagrams of 5 B..8 KiB mixed with reliable messages on the same pipe */
	ep_plan(&sm, 0, 500, 20000, n, 8192);
	assert_true(sim_run(&sm, all_dg_sent_and_quiet, 3600 * SEC));
	/* let the incomplete ones time out */
	sm.now += 3 * SEC;
	warp_stream_on_timer(sm.ep[1].s, sm.now);
	assert_int_equal(sm.ep[1].bad, 0);
	assert_int_equal(sm.ep[1].dg_rx_dup, 0);
	assert_int_equal(sm.ep[1].rel_rx, 500);
	warp_stream_stats(sm.ep[1].s, &st);
	print_message("# datagrams: %u sent, %u delivered, %" PRIu64 " incomplete dropped\n", n,
		      sm.ep[1].dg_rx, st.dgrams_dropped_rx);
	assert_true(sm.ep[1].dg_rx > n / 3);
	assert_true(sm.ep[1].dg_rx < n);
	assert_true(st.dgrams_dropped_rx > 0);
	assert_int_equal(st.dgrams_received, sm.ep[1].dg_rx);
	sim_free(&sm);
}

static void test_datagrams_lossless(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;

	sim_init(&sm, &c, 22);
	ep_plan(&sm, 0, 0, 8, 2000, 65536);
	ep_plan(&sm, 1, 0, 8, 2000, 3000);
	assert_true(sim_run(&sm, all_dg_sent_and_quiet, 600 * SEC));
	for (int i = 0; i < 2; i++) {
		assert_int_equal(sm.ep[i].bad, 0);
		assert_int_equal(sm.ep[i].dg_rx, 2000);
		assert_int_equal(sm.ep[i].dg_rx_dup, 0);
	}
	sim_free(&sm);
}

/* Builds one datagram fragment frame by hand. */
static size_t mk_dgram(uint8_t *b, uint32_t id, uint16_t idx, uint16_t count, const void *p,
		       uint16_t len)
{
	struct warp_wr w = warp_wr_init(b, 2048);

	warp_wr_u8(&w, 0x04);
	warp_wr_u32(&w, id);
	warp_wr_u16(&w, idx);
	warp_wr_u16(&w, count);
	warp_wr_u16(&w, len);
	warp_wr_bytes(&w, p, len);
	return w.off;
}

static void test_datagram_timeout(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats st;
	struct sim sm;
	uint8_t b[2048], d[8] = { 0, 0, 0, 0, 1, 2, 3, 4 };
	uint64_t dl;

	sim_init(&sm, &c, 23);
	ep_plan(&sm, 0, 0, 8, 1, 8);
	sm.ep[0].dg_sent = 1;
	sm.ep[0].dg_sizes[0] = 8;
	fill(d + 4, 4, 2, 0);
	/* first half of datagram 1 (our id 0 in the payload) */
	assert_int_equal(warp_stream_input(sm.ep[1].s, b, mk_dgram(b, 1, 0, 2, d, 4), sm.now), 0);
	dl = warp_stream_next_deadline(sm.ep[1].s);
	assert_int_equal(dl, sm.now + 2 * SEC);
	sm.now = dl;
	warp_stream_on_timer(sm.ep[1].s, sm.now);
	warp_stream_stats(sm.ep[1].s, &st);
	assert_int_equal(st.dgrams_dropped_rx, 1);
	assert_int_equal(warp_stream_next_deadline(sm.ep[1].s), NIL);
	/* its second half arrives late: stale, not delivered, no new partial */
	assert_int_equal(warp_stream_input(sm.ep[1].s, b, mk_dgram(b, 1, 1, 2, d + 4, 4), sm.now),
			 0);
	assert_int_equal(sm.ep[1].dg_rx, 0);
	assert_int_equal(warp_stream_next_deadline(sm.ep[1].s), NIL);
	/* a complete two-part datagram is delivered once, its duplicate fragment dropped */
	assert_int_equal(warp_stream_input(sm.ep[1].s, b, mk_dgram(b, 2, 1, 2, d + 4, 4), sm.now),
			 0);
	assert_int_equal(warp_stream_input(sm.ep[1].s, b, mk_dgram(b, 2, 0, 2, d, 4), sm.now), 0);
	assert_int_equal(warp_stream_input(sm.ep[1].s, b, mk_dgram(b, 2, 0, 2, d, 4), sm.now), 0);
	assert_int_equal(sm.ep[1].dg_rx, 1);
	assert_int_equal(sm.ep[1].bad, 0);
	/* ids far behind the newest are stale */
	assert_int_equal(warp_stream_input(sm.ep[1].s, b, mk_dgram(b, 5000, 0, 1, d, 8), sm.now),
			 0);
	assert_int_equal(warp_stream_input(sm.ep[1].s, b, mk_dgram(b, 3, 0, 1, d, 8), sm.now), 0);
	assert_int_equal(sm.ep[1].dg_rx, 2);
	sim_free(&sm);
}

/* ------------------------------------------------------------------ close */

static void run_close(double loss, uint64_t seed)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;

	sim_init(&sm, &c, seed);
	for (int i = 0; i < 2; i++)
		sm.link[i] = (struct link){ .loss = loss,
					    .reorder = 0.2,
					    .dup = loss / 2,
					    .delay = 10 * MS,
					    .jitter = 5 * MS };
	ep_plan(&sm, 0, 300, 30000, 0, 8);
	ep_plan(&sm, 1, 200, 30000, 0, 8);
	sm.ep[0].close_after_send = true;
	sm.ep[1].close_on_eos = true;
	assert_true(sim_run(&sm, both_closed, 3600 * SEC));
	for (int i = 0; getenv("DBG") && i < 2; i++) {
		struct warp_stream_stats st;

		warp_stream_stats(sm.ep[i].s, &st);
		print_message("# ep%d err %d state %d rto_count %llu rto %llu srtt %llu now %.3f\n",
			      i, sm.ep[i].close_err, st.state, (unsigned long long)st.rto_count,
			      (unsigned long long)st.rto_us, (unsigned long long)st.srtt_us,
			      (double)sm.now / SEC);
	}
	for (int i = 0; i < 2; i++) {
		struct ep *e = &sm.ep[i];

		assert_int_equal(e->bad, 0);
		assert_int_equal(e->close_err, 0);
		assert_int_equal(e->closed_calls, 1);
		assert_true(e->eos);
		/* the end of stream comes after every message */
		assert_int_equal(e->rel_at_eos, sm.ep[!i].rel_total);
		assert_int_equal(e->rel_rx, sm.ep[!i].rel_total);
		assert_int_equal(warp_stream_send(e->s, "x", 1, WARP_MSG_RELIABLE, sm.now), -EPIPE);
	}
	/* both linger, then are done */
	assert_true(sim_run(&sm, both_done, 120 * SEC));
	assert_int_equal(warp_stream_next_deadline(sm.ep[0].s), NIL);
	sim_free(&sm);
}

static void test_close_graceful(void **state)
{
	run_close(0, 31);
}

static void test_close_graceful_lossy(void **state)
{
	/* STREAM_CLOSE_SEEDS=n sweeps more seeds */
	const char *env = getenv("STREAM_CLOSE_SEEDS");
	int n = env ? atoi(env) : 6;

	for (int i = 0; i < n; i++)
		run_close(i % 2 ? 0.2 : 0.1, 32 + (uint64_t)i);
}

/* A RESET that arrives while lingering after a graceful close changes nothing visible. */
static void test_reset_after_close(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;
	static const uint8_t reset[] = { 0x05, 0, 0 };

	sim_init(&sm, &c, 36);
	ep_plan(&sm, 0, 5, 500, 0, 8);
	sm.ep[0].close_after_send = true;
	sm.ep[1].close_on_eos = true;
	assert_true(sim_run(&sm, both_closed, 60 * SEC));
	assert_int_equal(warp_stream_state(sm.ep[1].s), WARP_STREAM_CLOSED);
	assert_int_equal(warp_stream_input(sm.ep[1].s, reset, sizeof(reset), sm.now), 0);
	warp_stream_on_timer(sm.ep[1].s, sm.now);
	assert_int_equal(sm.ep[1].closed_calls, 1);
	assert_int_equal(sm.ep[1].close_err, 0);
	assert_int_equal(warp_stream_state(sm.ep[1].s), WARP_STREAM_DONE);
	sim_free(&sm);
}

/* Half-close: after the peer's end of stream we go on sending, then close; the peer, closed
 * already, still receives everything. */
static void start_after_eos(struct sim *sm)
{
	struct ep *e = &sm->ep[1];

	if (e->eos && !e->rel_total) {
		e->rel_total = 300;
		e->close_after_send = true;
	}
}

static void test_half_close(void **state)
{
	for (int mode = 0; mode < 2; mode++) {
		struct warp_stream_conf c =
			mode ? (struct warp_stream_conf){ .mode = WARP_STREAM_TCP,
							  .payload_max = 4096 }
			     : udp_conf();
		struct sim sm;

		sim_init(&sm, &c, 37);
		if (!mode)
			for (int i = 0; i < 2; i++)
				sm.link[i] = (struct link){ .loss = 0.1,
							    .reorder = 0.2,
							    .delay = 10 * MS,
							    .jitter = 5 * MS };
		ep_plan(&sm, 0, 100, 20000, 0, 8);
		ep_plan(&sm, 1, 300, 20000, 0, 8);
		sm.ep[1].rel_total = 0;
		sm.ep[0].close_after_send = true;
		sm.on_step = start_after_eos;
		assert_true(sim_run(&sm, both_closed, 3600 * SEC));
		for (int i = 0; i < 2; i++) {
			assert_int_equal(sm.ep[i].bad, 0);
			assert_int_equal(sm.ep[i].close_err, 0);
			assert_true(sm.ep[i].eos);
		}
		assert_int_equal(sm.ep[1].rel_at_eos, 100);
		/* all 300 were sent after ep0 had closed */
		assert_int_equal(sm.ep[0].rel_rx, 300);
		assert_int_equal(sm.ep[0].rel_at_eos, 300);
		sim_free(&sm);
	}
}

static void test_close_abort(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;

	sim_init(&sm, &c, 33);
	ep_plan(&sm, 0, 50, 5000, 0, 8);
	assert_true(sim_run(&sm, all_reliable_delivered, 60 * SEC));
	assert_int_equal(warp_stream_close(sm.ep[0].s, false), 0);
	assert_int_equal(warp_stream_state(sm.ep[0].s), WARP_STREAM_CLOSED);
	assert_int_equal(warp_stream_send(sm.ep[0].s, "x", 1, WARP_MSG_RELIABLE, sm.now), -EPIPE);
	assert_int_equal(warp_stream_close(sm.ep[0].s, true), -WARP_ECLOSED);
	assert_true(sim_run(&sm, both_closed, 10 * SEC) || sm.ep[1].closed);
	assert_false(sm.ep[0].closed); /* no callback for our own abort */
	assert_true(sm.ep[1].closed);
	assert_int_equal(sm.ep[1].close_err, -ECONNRESET);
	assert_int_equal(warp_stream_state(sm.ep[0].s), WARP_STREAM_DONE);
	assert_int_equal(warp_stream_state(sm.ep[1].s), WARP_STREAM_DONE);
	assert_int_equal(warp_stream_send(sm.ep[1].s, "x", 1, WARP_MSG_RELIABLE, sm.now),
			 -WARP_ECLOSED);
	sim_free(&sm);
}

static void test_idle_timeout(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;
	uint64_t t0;

	c.idle_timeout_ms = 5000;
	sim_init(&sm, &c, 34);
	ep_plan(&sm, 0, 10, 5000, 0, 8);
	assert_true(sim_run(&sm, settled, 60 * SEC));
	t0 = warp_stream_last_activity(sm.ep[1].s);
	assert_true(t0 > SEC);
	/* a pong half-way keeps it alive */
	sm.now = t0 + 3 * SEC;
	warp_stream_touch(sm.ep[1].s, sm.now);
	assert_int_equal(warp_stream_last_activity(sm.ep[1].s), sm.now);
	assert_int_equal(warp_stream_next_deadline(sm.ep[1].s), sm.now + 5 * SEC);
	sm.now += 5 * SEC - 1;
	warp_stream_on_timer(sm.ep[1].s, sm.now);
	assert_false(sm.ep[1].closed);
	sm.now += 1;
	warp_stream_on_timer(sm.ep[1].s, sm.now);
	assert_true(sm.ep[1].closed);
	assert_int_equal(sm.ep[1].close_err, -WARP_EIDLE);
	assert_int_equal(warp_stream_state(sm.ep[1].s), WARP_STREAM_DONE);
	assert_int_equal(warp_stream_send(sm.ep[1].s, "x", 1, WARP_MSG_RELIABLE, sm.now),
			 -WARP_ECLOSED);
	sim_free(&sm);
}

static void test_retransmit_limit(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;

	c.max_rto_count = 3;
	c.rto_max_ms = 2000;
	sim_init(&sm, &c, 35);
	ep_plan(&sm, 0, 5, 5000, 0, 8);
	sm.link[0].loss = 1.0; /* the peer never hears us */
	assert_true(sim_run(&sm, both_closed, 600 * SEC) || sm.ep[0].closed);
	assert_int_equal(sm.ep[0].close_err, -ETIMEDOUT);
	sim_free(&sm);
}

/* Random paths and traffic, both directions, ending with a graceful close. */
static void test_random_sweep(void **state)
{
	const char *env = getenv("STREAM_SWEEP");
	int n = env ? atoi(env) : 4;
	int from = getenv("STREAM_SWEEP_FROM") ? atoi(getenv("STREAM_SWEEP_FROM")) : 0;

	for (int k = from; k < n; k++) {
		struct warp_stream_conf c = udp_conf();
		struct sim sm;
		uint64_t r = 1000 + (uint64_t)k;
		int closer;

		c.payload_max = 200 + rng_next(&r) % 1300;
		c.max_message = 70000;
		c.rcvbuf = c.max_message + rng_next(&r) % (512u << 10);
		c.sndbuf = c.max_message + 64 + rng_next(&r) % (512u << 10);
		sim_init(&sm, &c, r);
		for (int i = 0; i < 2; i++)
			sm.link[i] =
				(struct link){ .loss = rng_unit(&r) * 0.3,
					       .dup = rng_unit(&r) * 0.2,
					       .reorder = rng_unit(&r) * 0.5,
					       .delay = (1 + rng_next(&r) % 100) * MS,
					       .jitter = (1 + rng_next(&r) % 30) * MS,
					       .rate = rng_next(&r) % 2 ? 0
									: (1u << 20) << (r % 5) };
		ep_plan(&sm, 0, 150 + (uint32_t)(rng_next(&r) % 200), 65536, 100, 3000);
		ep_plan(&sm, 1, (uint32_t)(rng_next(&r) % 150), 20000, 50, 1000);
		/* one side closes when done; the other closes on the end of stream or, half-closing,
		 * when it is done too */
		closer = (int)(rng_next(&r) % 2);
		sm.ep[closer].close_after_send = true;
		if (rng_next(&r) % 2)
			sm.ep[!closer].close_on_eos = true;
		else
			sm.ep[!closer].close_after_send = true;
		if (!sim_run(&sm, both_closed, 7200 * SEC))
			fail_msg("sweep %d: did not close", k);
		if (getenv("DBG") && (sm.ep[0].close_err || sm.ep[1].close_err)) {
			for (int i = 0; i < 2; i++) {
				struct warp_stream_stats st;

				warp_stream_stats(sm.ep[i].s, &st);
				print_message(
					"# sweep %d ep%d: err %d loss %.2f dup %.2f reo %.2f "
					"delay %llu jitter %llu rate %llu payload %zu rcvbuf %zu "
					"rtos %llu srtt %llu now %.1f\n",
					k, i, sm.ep[i].close_err, sm.link[i].loss, sm.link[i].dup,
					sm.link[i].reorder,
					(unsigned long long)(sm.link[i].delay / MS),
					(unsigned long long)(sm.link[i].jitter / MS),
					(unsigned long long)sm.link[i].rate, c.payload_max,
					c.rcvbuf, (unsigned long long)st.rto_count,
					(unsigned long long)st.srtt_us, (double)sm.now / SEC);
			}
		}
		for (int i = 0; i < 2; i++) {
			/* everything accepted by send() arrives before the end of stream */
			assert_int_equal(sm.ep[i].bad, 0);
			assert_int_equal(sm.ep[i].close_err, 0);
			assert_int_equal(sm.ep[i].rel_rx, sm.ep[!i].rel_sent);
			assert_int_equal(sm.ep[i].rel_at_eos, sm.ep[!i].rel_sent);
			assert_int_equal(sm.ep[i].dg_rx_dup, 0);
			assert_true(sm.max_rcv_buffered[i] <= c.rcvbuf);
		}
		sim_free(&sm);
	}
}

/* ------------------------------------------------------------------ TCP mode */

/* TCP link: payloads are length-prefixed into a byte stream and cut at random points, then
 * deframed again, as the integrator will do. */
struct tcp_pipe {
	uint8_t *buf;
	size_t len, cap;
};

static void tcp_write(struct tcp_pipe *t, const uint8_t *p, size_t n)
{
	if (t->len + n + 2 > t->cap) {
		t->cap = (t->len + n + 2) * 2;
		t->buf = realloc(t->buf, t->cap);
		assert_non_null(t->buf);
	}
	warp_put_u16(t->buf + t->len, (uint16_t)n);
	memcpy(t->buf + t->len + 2, p, n);
	t->len += n + 2;
}

static void test_tcp_mode(void **state)
{
	struct warp_stream_conf c = { .mode = WARP_STREAM_TCP, .payload_max = 16384 };
	struct tcp_pipe wire[2] = { 0 }, rx[2] = { 0 };
	struct sim sm;
	uint8_t buf[MAXPKT];
	uint64_t rng = 99;
	bool ack_only;
	uint32_t dg_before_big = 0;
	int n;

	sim_init(&sm, &c, 41);
	ep_plan(&sm, 0, 400, 1u << 20, 300, 200);
	ep_plan(&sm, 1, 400, 70000, 0, 8);
	/* make message 0 huge so the datagrams queued after it must overtake it */
	sm.ep[0].rel_sizes[0] = 1u << 20;
	for (int round = 0; round < 100000; round++) {
		bool progress = false;

		for (int i = 0; i < 2; i++) {
			app_pump(&sm.ep[i]);
			while ((n = warp_stream_poll(sm.ep[i].s, buf, sizeof(buf), sm.now,
						     &ack_only)) > 0) {
				assert_false(ack_only);
				assert_true(n <= 16384);
				tcp_write(&wire[i], buf, (size_t)n);
				progress = true;
			}
			assert_true(n == 0);
		}
		/* move a random number of bytes of each direction, cut anywhere */
		for (int i = 0; i < 2; i++) {
			size_t take = wire[i].len ? 1 + rng_next(&rng) % (wire[i].len < 40000
										  ? wire[i].len
										  : 40000)
						  : 0;
			struct tcp_pipe *r = &rx[!i];

			if (!take)
				continue;
			progress = true;
			if (r->len + take > r->cap) {
				r->cap = (r->len + take) * 2;
				r->buf = realloc(r->buf, r->cap);
			}
			memcpy(r->buf + r->len, wire[i].buf, take);
			r->len += take;
			memmove(wire[i].buf, wire[i].buf + take, wire[i].len - take);
			wire[i].len -= take;
			/* deframe whole payloads */
			for (;;) {
				size_t plen;

				if (r->len < 2)
					break;
				plen = warp_get_u16(r->buf);
				if (r->len < plen + 2)
					break;
				assert_int_equal(
					warp_stream_input(sm.ep[!i].s, r->buf + 2, plen, sm.now),
					0);
				memmove(r->buf, r->buf + plen + 2, r->len - plen - 2);
				r->len -= plen + 2;
			}
		}
		if (sm.ep[1].rel_rx == 0)
			dg_before_big = sm.ep[1].dg_rx;
		sm.now += MS;
		for (int i = 0; i < 2; i++)
			if (warp_stream_next_deadline(sm.ep[i].s) <= sm.now)
				warp_stream_on_timer(sm.ep[i].s, sm.now);
		if (!progress)
			break;
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(sm.ep[i].bad, 0);
		assert_int_equal(sm.ep[i].rel_rx, sm.ep[!i].rel_total);
		assert_int_equal(sm.ep[i].dg_rx, sm.ep[!i].dg_total);
		free(wire[i].buf);
		free(rx[i].buf);
	}
	print_message("# tcp: %u of 300 datagrams overtook the 1 MiB message\n", dg_before_big);
	assert_true(dg_before_big > 30);
	sim_free(&sm);
}

static void test_tcp_close(void **state)
{
	struct warp_stream_conf c = { .mode = WARP_STREAM_TCP, .payload_max = 4096 };
	struct sim sm;

	sim_init(&sm, &c, 42);
	ep_plan(&sm, 0, 100, 20000, 0, 8);
	ep_plan(&sm, 1, 30, 20000, 0, 8);
	sm.ep[1].close_after_send = true;
	sm.ep[0].close_on_eos = true;
	assert_true(sim_run(&sm, both_done, 60 * SEC));
	for (int i = 0; i < 2; i++) {
		assert_int_equal(sm.ep[i].bad, 0);
		assert_true(sm.ep[i].closed);
		assert_int_equal(sm.ep[i].close_err, 0);
		assert_int_equal(sm.ep[i].rel_at_eos, sm.ep[!i].rel_total);
	}
	sim_free(&sm);
}

/* ------------------------------------------------------------------ malformed input */

static void stats_equal(const struct warp_stream_stats *a, const struct warp_stream_stats *b)
{
	struct warp_stream_stats x = *a, y = *b;

	x.malformed = y.malformed = 0;
	assert_memory_equal(&x, &y, sizeof(x));
}

static void test_malformed(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream_stats before, after;
	struct sim sm;
	uint8_t b[4096], out1[MAXPKT], out2[MAXPKT];
	bool ack_only;
	struct {
		const char *what;
		uint8_t p[64];
		size_t len;
		int err;
	} cases[] = {
		{ "empty", { 0 }, 0, -WARP_EMALFORMED },
		{ "unknown frame", { 0x09 }, 1, -WARP_EMALFORMED },
		{ "truncated TS", { 0x01, 0, 0 }, 3, -WARP_ETRUNCATED },
		{ "two TS", { 0x01, 0, 0, 0, 1, 0x01, 0, 0, 0, 2 }, 10, -WARP_EDUPLICATE },
		{ "truncated ACK", { 0x02, 0, 0, 0, 0, 0, 0 }, 7, -WARP_ETRUNCATED },
		{ "ACK beyond sent",
		  { 0x02, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		  16,
		  -WARP_ERANGE },
		{ "ACK too many blocks",
		  { 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 33 },
		  16,
		  -WARP_ERANGE },
		{ "ACK block at cum",
		  { 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1 },
		  24,
		  -WARP_ERANGE },
		{ "ACK empty block",
		  { 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1 },
		  24,
		  -WARP_ERANGE },
		{ "REL bad flags", { 0x03, 0x08, 0, 0, 0, 0, 0, 0 }, 8, -WARP_EMALFORMED },
		{ "REL FIN with data", { 0x03, 0x04, 0, 0, 0, 0, 0, 1, 'x' }, 9, -WARP_EMALFORMED },
		{ "REL FIN+FIRST",
		  { 0x03, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		  12,
		  -WARP_EMALFORMED },
		{ "REL truncated data",
		  { 0x03, 0x03, 0, 0, 0, 0, 0, 5, 0, 0, 0, 5, 'a' },
		  13,
		  -WARP_ETRUNCATED },
		{ "REL total > max",
		  { 0x03, 0x01, 0, 0, 0, 0, 0, 0, 0x7f, 0, 0, 0 },
		  12,
		  -WARP_ERANGE },
		{ "REL len > total",
		  { 0x03, 0x01, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 'a', 'b' },
		  14,
		  -WARP_EMALFORMED },
		{ "REL single len != total",
		  { 0x03, 0x03, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 'a' },
		  13,
		  -WARP_EMALFORMED },
		{ "DGRAM count 0", { 0x04, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 }, 11, -WARP_EMALFORMED },
		{ "DGRAM idx >= count",
		  { 0x04, 0, 0, 0, 1, 0, 2, 0, 2, 0, 0 },
		  11,
		  -WARP_EMALFORMED },
		{ "DGRAM truncated",
		  { 0x04, 0, 0, 0, 1, 0, 0, 0, 1, 0, 9, 1 },
		  12,
		  -WARP_ETRUNCATED },
		{ "DGRAM count too big",
		  { 0x04, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0, 0 },
		  11,
		  -WARP_ERANGE },
		{ "RESET truncated", { 0x05, 0 }, 2, -WARP_ETRUNCATED },
		/* valid data followed by garbage: nothing of it may be applied */
		{ "valid REL then junk",
		  { 0x03, 0x03, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 'a', 0x0f },
		  14,
		  -WARP_EMALFORMED },
		{ "valid DGRAM then junk",
		  { 0x04, 0, 0, 0, 9, 0, 0, 0, 1, 0, 1, 'z', 0x03 },
		  13,
		  -WARP_ETRUNCATED },
		{ "RESET then junk", { 0x05, 0, 0, 0xee }, 4, -WARP_EMALFORMED },
	};

	sim_init(&sm, &c, 51);
	/* get both ends into a non-trivial state: data in flight, holes, a partial message */
	ep_plan(&sm, 0, 40, 9000, 0, 8);
	sm.link[0].loss = 0.3;
	sim_run(&sm, all_reliable_delivered, 200 * MS);
	for (size_t i = 0; i < WARP_ARRAY_SIZE(cases); i++) {
		for (int side = 0; side < 2; side++) {
			struct warp_stream *s = sm.ep[side].s;
			int rc, n1, n2;

			warp_stream_stats(s, &before);
			memcpy(b, cases[i].p, cases[i].len);
			rc = warp_stream_input(s, b, cases[i].len, sm.now + 5 * MS);
			if (rc != cases[i].err)
				fail_msg("%s: got %d want %d", cases[i].what, rc, cases[i].err);
			warp_stream_stats(s, &after);
			assert_int_equal(after.malformed, before.malformed + 1);
			stats_equal(&before, &after);
			(void)n1;
			(void)n2;
		}
	}
	assert_int_equal(sm.ep[0].bad + sm.ep[1].bad, 0);
	assert_false(sm.ep[0].closed || sm.ep[1].closed);
	/* and the pair still completes */
	sm.link[0].loss = 0;
	assert_true(sim_run(&sm, all_reliable_delivered, 600 * SEC));
	assert_int_equal(sm.ep[1].bad, 0);
	(void)out1;
	(void)out2;
	(void)ack_only;
	sim_free(&sm);
}

/* TCP mode checks fragment sequencing before touching anything. */
static void test_malformed_tcp(void **state)
{
	struct warp_stream_conf c = { .mode = WARP_STREAM_TCP, .payload_max = 4096 };
	struct warp_stream_stats before, after;
	struct sim sm;
	static const struct {
		uint8_t p[32];
		size_t len;
	} cases[] = {
		{ { 0x01, 0, 0, 0, 1 }, 5 },				       /* TS */
		{ { 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 16 }, /* ACK */
		{ { 0x03, 0x03, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 }, 12 }, /* seq 1, expected 0 */
		{ { 0x03, 0x02, 0, 0, 0, 0, 0, 0 }, 8 },	      /* continuation first */
		{ { 0x03, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4,	      /* first ... */
		    0x03, 0x01, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
		  24 },				  /* ... then first again */
		{ { 0x03, 0x04, 0, 0, 0, 0, 0, 0, /* FIN ... */
		    0x03, 0x03, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
		  20 }, /* ... then data */
	};

	sim_init(&sm, &c, 52);
	for (size_t i = 0; i < WARP_ARRAY_SIZE(cases); i++) {
		warp_stream_stats(sm.ep[1].s, &before);
		assert_true(warp_stream_input(sm.ep[1].s, cases[i].p, cases[i].len, sm.now) < 0);
		warp_stream_stats(sm.ep[1].s, &after);
		stats_equal(&before, &after);
	}
	assert_int_equal(sm.ep[1].rel_rx, 0);
	assert_false(sm.ep[1].eos);
	sim_free(&sm);
}

/* A well-formed fragment that contradicts the sequence kills the stream (UDP mode). */
static void test_protocol_violation(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;
	uint8_t cont[] = { 0x03, 0x02, 0, 0, 0, 0, 0, 1, 'x' };
	uint8_t buf[MAXPKT];
	bool ack_only;

	sim_init(&sm, &c, 53);
	assert_int_equal(warp_stream_input(sm.ep[1].s, cont, sizeof(cont), sm.now),
			 -WARP_EMALFORMED);
	assert_true(sm.ep[1].closed);
	assert_int_equal(sm.ep[1].close_err, -WARP_EMALFORMED);
	/* it tells the peer */
	assert_int_equal(warp_stream_poll(sm.ep[1].s, buf, sizeof(buf), sm.now, &ack_only), 3);
	assert_int_equal(buf[0], 0x05);
	assert_int_equal(warp_stream_state(sm.ep[1].s), WARP_STREAM_DONE);
	assert_int_equal(warp_stream_poll(sm.ep[1].s, buf, sizeof(buf), sm.now, &ack_only), 0);
	sim_free(&sm);
}

/* ------------------------------------------------------------------ API */

static void test_api(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct warp_stream *s;
	uint8_t buf[2048];
	bool ack_only;

	c.payload_max = 100;
	errno = 0;
	assert_null(warp_stream_new(&c));
	assert_int_equal(errno, EINVAL);
	c = udp_conf();
	c.max_message = 1 << 20;
	c.sndbuf = 1000;
	assert_null(warp_stream_new(&c));
	assert_int_equal(errno, WARP_ECONFIG);
	c = udp_conf();
	c.mode = 7;
	assert_null(warp_stream_new(&c));
	assert_null(warp_stream_new(NULL));

	c = udp_conf();
	c.max_message = 1000;
	c.max_datagram = 500;
	s = warp_stream_new(&c);
	assert_non_null(s);
	assert_int_equal(warp_stream_send(s, buf, 1001, WARP_MSG_RELIABLE, SEC), -EMSGSIZE);
	assert_int_equal(warp_stream_send(s, buf, 501, WARP_MSG_DATAGRAM, SEC), -EMSGSIZE);
	assert_int_equal(warp_stream_send(s, buf, 1, 0, SEC), -EINVAL);
	assert_int_equal(warp_stream_send(s, buf, 1, 3, SEC), -EINVAL);
	assert_int_equal(warp_stream_send(s, NULL, 1, WARP_MSG_RELIABLE, SEC), -EINVAL);
	assert_int_equal(warp_stream_send(s, NULL, 0, WARP_MSG_RELIABLE, SEC), 0);
	assert_int_equal(warp_stream_poll(s, buf, PAYLOAD - 1, SEC, &ack_only), -EMSGSIZE);
	assert_true(warp_stream_poll(s, buf, sizeof(buf), SEC, &ack_only) > 0);
	assert_int_equal(warp_stream_poll(s, buf, sizeof(buf), SEC, &ack_only), 0);
	assert_int_equal(warp_stream_state(s), WARP_STREAM_OPEN);
	assert_int_equal(warp_stream_close(s, true), 0);
	assert_int_equal(warp_stream_state(s), WARP_STREAM_CLOSING);
	warp_stream_free(s);
	warp_stream_free(NULL);
}

static void test_free_in_callback(void **state)
{
	struct warp_stream_conf c = udp_conf();
	struct sim sm;

	sim_init(&sm, &c, 61);
	ep_plan(&sm, 0, 20, 100, 0, 8);
	sm.ep[1].free_on_message = true;
	sim_run(&sm, all_reliable_delivered, 5 * SEC);
	assert_null(sm.ep[1].s);
	assert_int_equal(sm.ep[1].rel_rx, 1); /* later messages of the batch are not delivered */
	sim_free(&sm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_lossy_10),
		cmocka_unit_test(test_lossy_30),
		cmocka_unit_test(test_reorder_dup_only),
		cmocka_unit_test(test_fast_retransmit),
		cmocka_unit_test(test_rto_tail_loss),
		cmocka_unit_test(test_rto_adapts),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_receive_window),
		cmocka_unit_test(test_datagrams_lossy),
		cmocka_unit_test(test_datagrams_lossless),
		cmocka_unit_test(test_datagram_timeout),
		cmocka_unit_test(test_close_graceful),
		cmocka_unit_test(test_close_graceful_lossy),
		cmocka_unit_test(test_close_abort),
		cmocka_unit_test(test_reset_after_close),
		cmocka_unit_test(test_half_close),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_retransmit_limit),
		cmocka_unit_test(test_random_sweep),
		cmocka_unit_test(test_tcp_mode),
		cmocka_unit_test(test_tcp_close),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_malformed_tcp),
		cmocka_unit_test(test_protocol_violation),
		cmocka_unit_test(test_api),
		cmocka_unit_test(test_free_in_callback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
