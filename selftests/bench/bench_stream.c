// SPDX-License-Identifier: MIT
/*
 * Stream engine throughput: two engines in one process exchange messages through a fake link
 * on a simulated clock (1 Gbit/s, 5 ms one way, optional random loss).  Reports the CPU
 * throughput of the engine pair (wall clock: how fast the code moves bytes) and the goodput
 * on the simulated link (how well reliability and congestion control use it).
 *
 * usage: bench_stream [scale]   (scale multiplies the message counts, default 1)
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipe/stream.h"

#define MS	1000000ull
#define SEC	1000000000ull
#define NIL	UINT64_MAX
#define PAYLOAD 1164 /* 1200-byte datagram minus the 20-byte header and 16-byte tag */

struct pkt {
	uint64_t at, order;
	int dst;
	size_t len;
	uint8_t data[];
};

struct bench {
	uint64_t now, rng, order;
	struct warp_stream *ep[2];
	struct pkt **heap;
	size_t nheap, capheap;
	uint64_t busy_until[2];
	double loss;
	uint64_t rate, delay;
	uint64_t rx_msgs, rx_bytes, pkts;
	bool tcp;
};

static uint64_t rng_next(uint64_t *st)
{
	uint64_t x = *st;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*st = x;
	return x * 0x2545f4914f6cdd1dull;
}

static bool before(const struct pkt *a, const struct pkt *b)
{
	return a->at < b->at || (a->at == b->at && a->order < b->order);
}

static void push(struct bench *b, struct pkt *p)
{
	size_t i;

	if (b->nheap == b->capheap) {
		b->capheap = b->capheap ? b->capheap * 2 : 1024;
		b->heap = realloc(b->heap, b->capheap * sizeof(*b->heap));
		if (!b->heap)
			abort();
	}
	for (i = b->nheap++; i && before(p, b->heap[(i - 1) / 2]); i = (i - 1) / 2)
		b->heap[i] = b->heap[(i - 1) / 2];
	b->heap[i] = p;
}

static struct pkt *pop(struct bench *b)
{
	struct pkt *top = b->heap[0], *last = b->heap[--b->nheap];
	size_t i = 0, c;

	while ((c = 2 * i + 1) < b->nheap) {
		if (c + 1 < b->nheap && before(b->heap[c + 1], b->heap[c]))
			c++;
		if (!before(b->heap[c], last))
			break;
		b->heap[i] = b->heap[c];
		i = c;
	}
	if (b->nheap)
		b->heap[i] = last;
	return top;
}

static void transmit(struct bench *b, int from, const uint8_t *buf, size_t len)
{
	uint64_t start = b->busy_until[from] > b->now ? b->busy_until[from] : b->now;
	struct pkt *p;

	b->pkts++;
	b->busy_until[from] = start + (uint64_t)len * SEC / b->rate;
	if (!b->tcp && (double)(rng_next(&b->rng) >> 11) / (double)(1ull << 53) < b->loss)
		return;
	p = malloc(sizeof(*p) + len);
	if (!p)
		abort();
	p->at = b->busy_until[from] + b->delay;
	p->order = b->order++;
	p->dst = !from;
	p->len = len;
	memcpy(p->data, buf, len);
	push(b, p);
}

static void on_message(void *user, const uint8_t *data, size_t len, unsigned int flags)
{
	struct bench *b = user;

	(void)data;
	(void)flags;
	b->rx_msgs++;
	b->rx_bytes += len;
}

static double wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run(const char *name, bool tcp, size_t msg, uint64_t count, double loss)
{
	struct warp_stream_conf c = {
		.mode = tcp ? WARP_STREAM_TCP : WARP_STREAM_UDP,
		.payload_max = tcp ? 16384 : PAYLOAD,
		.on_message = on_message,
	};
	struct warp_stream_stats st;
	struct bench b = {
		.now = SEC, .rng = 42, .loss = loss, .rate = 125000000, .delay = 5 * MS, .tcp = tcp
	};
	static uint8_t data[1 << 16], buf[1 << 16];
	uint64_t sent = 0, t0_sim = b.now;
	double t0 = wall(), dt, sim;

	c.user = &b;
	b.ep[0] = warp_stream_new(&c);
	b.ep[1] = warp_stream_new(&c);
	if (!b.ep[0] || !b.ep[1])
		abort();
	while (b.rx_msgs < count) {
		uint64_t t = NIL;
		bool ack_only;
		int n;

		while (sent < count &&
		       !warp_stream_send(b.ep[0], data, msg, WARP_MSG_RELIABLE, b.now))
			sent++;
		/* TCP mode has no window of its own: the socket buffer (here ~4 MB of link
		 * backlog) is what stops the integrator from polling. */
		for (int i = 0; i < 2; i++)
			while ((!tcp || b.busy_until[i] < b.now + 32 * MS) &&
			       (n = warp_stream_poll(b.ep[i], buf, sizeof(buf), b.now, &ack_only)) >
				       0)
				transmit(&b, i, buf, (size_t)n);
		if (b.nheap)
			t = b.heap[0]->at;
		if (tcp && b.busy_until[0] > b.now && b.busy_until[0] - 32 * MS > b.now &&
		    b.busy_until[0] - 32 * MS < t)
			t = b.busy_until[0] - 32 * MS;
		for (int i = 0; i < 2; i++) {
			uint64_t d = warp_stream_next_deadline(b.ep[i]);

			t = d < t ? d : t;
		}
		if (t == NIL) {
			fprintf(stderr, "%s: stalled\n", name);
			exit(1);
		}
		if (t > b.now)
			b.now = t;
		while (b.nheap && b.heap[0]->at <= b.now) {
			struct pkt *p = pop(&b);

			if (warp_stream_input(b.ep[p->dst], p->data, p->len, b.now))
				abort();
			free(p);
		}
		for (int i = 0; i < 2; i++)
			if (warp_stream_next_deadline(b.ep[i]) <= b.now)
				warp_stream_on_timer(b.ep[i], b.now);
	}
	dt = wall() - t0;
	sim = (double)(b.now - t0_sim) / 1e9;
	warp_stream_stats(b.ep[0], &st);
	printf("%-22s %8zu %8llu %12.0f %9.1f %9.1f %9llu %6llu %8llu\n", name, msg,
	       (unsigned long long)count, (double)count / dt, (double)b.rx_bytes / dt / 1e6,
	       (double)b.rx_bytes / sim / 1e6, (unsigned long long)st.frags_retransmitted,
	       (unsigned long long)st.rto_count, (unsigned long long)(st.srtt_us));
	while (b.nheap)
		free(pop(&b));
	free(b.heap);
	warp_stream_free(b.ep[0]);
	warp_stream_free(b.ep[1]);
}

int main(int argc, char **argv)
{
	uint64_t k = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;

	if (!k)
		k = 1;
	printf("# stream engine pair, fake link 1 Gbit/s, 5 ms one way, payload %d B (UDP)\n",
	       PAYLOAD);
	printf("# CPU = wall-clock throughput of both engines; link = goodput on the simulated "
	       "link\n");
	printf("%-22s %8s %8s %12s %9s %9s %9s %6s %8s\n", "case", "msg B", "msgs", "CPU msg/s",
	       "CPU MB/s", "link MB/s", "retx", "RTOs", "srtt us");
	run("udp lossless", false, 1024, 200000 * k, 0);
	run("udp lossless", false, 65536, 3000 * k, 0);
	run("udp 1% loss", false, 1024, 200000 * k, 0.01);
	run("udp 1% loss", false, 65536, 3000 * k, 0.01);
	run("tcp framing", true, 1024, 200000 * k, 0);
	run("tcp framing", true, 65536, 3000 * k, 0);
	return 0;
}
