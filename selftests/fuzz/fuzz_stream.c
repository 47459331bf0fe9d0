// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the stream engine.  Input: one setup byte, then operations:
 *
 *	0x00 len:u16 bytes   feed a payload to warp_stream_input()
 *	0x01 ms:u16          advance the clock, run the timer if due
 *	0x02                 poll until nothing is due
 *	0x03 len:u16         send a reliable message of len bytes
 *	0x04 len:u16         send a datagram of len bytes
 *	0x05 / 0x06          close gracefully / abort
 *	0x07                 touch (keepalive pong)
 *
 * Setup byte: bit 0 TCP mode, bit 1 start with data in flight (so acknowledgements have
 * something to cover).  Checked on every step: a rejected payload changes nothing (unless it
 * is a sequencing violation, which must end the stream), buffers stay within their bounds,
 * payloads within payload_max.  Build with -DFUZZ_STREAM_GEN for a main() that writes the
 * seed corpus (payloads a real peer sends to a stream in the same setup).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>
#include <warpgate/log.h>

#include "core/bytes.h"
#include "pipe/stream.h"

#define MS	1000000ull
#define PAYLOAD 600
#define MAX_MSG (64u << 10)

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_stream: invariant broken: %s\n", what);
		abort();
	}
}

static void nop_msg(void *user, const uint8_t *d, size_t len, unsigned int flags)
{
	/* touch every byte so ASan sees bad pointers */
	volatile uint8_t x = 0;

	(void)user;
	for (size_t i = 0; i < len; i++)
		x ^= d[i];
	(void)x;
	check(flags == WARP_MSG_RELIABLE || flags == WARP_MSG_DATAGRAM, "message flags");
	check(len <= MAX_MSG, "message size");
}

static struct warp_stream_conf fuzz_conf(bool tcp)
{
	struct warp_stream_conf c = {
		.mode = tcp ? WARP_STREAM_TCP : WARP_STREAM_UDP,
		.payload_max = PAYLOAD,
		.max_message = MAX_MSG,
		.max_datagram = 8192,
		.sndbuf = 256u << 10,
		.rcvbuf = 128u << 10,
		.dgram_sndbuf = 64u << 10,
		.dgram_rcvbuf = 32u << 10,
		.idle_timeout_ms = 10000,
		.on_message = nop_msg,
	};

	return c;
}

static uint8_t zeros[MAX_MSG];

/* Same in the target and in the seed generator: a stream with data in flight at t = 1 s. */
static struct warp_stream *setup(uint8_t flags, uint64_t now, uint8_t *out, size_t *outlen,
				 size_t outcap)
{
	struct warp_stream_conf c = fuzz_conf(flags & 1);
	struct warp_stream *s = warp_stream_new(&c);
	uint8_t buf[PAYLOAD];
	bool ack_only;
	int n;

	check(s != NULL, "new");
	if (outlen)
		*outlen = 0;
	if (!(flags & 2))
		return s;
	warp_stream_send(s, zeros, 100, WARP_MSG_RELIABLE, now);
	warp_stream_send(s, zeros, 2000, WARP_MSG_RELIABLE, now);
	warp_stream_send(s, zeros, 1500, WARP_MSG_DATAGRAM, now);
	warp_stream_send(s, zeros, 5000, WARP_MSG_RELIABLE, now);
	while ((n = warp_stream_poll(s, buf, sizeof(buf), now, &ack_only)) > 0) {
		if (out && *outlen + 2 + (size_t)n <= outcap) {
			warp_put_u16(out + *outlen, (uint16_t)n);
			memcpy(out + *outlen + 2, buf, (size_t)n);
			*outlen += 2 + (size_t)n;
		}
	}
	return s;
}

static void stats_same(const struct warp_stream_stats *a, const struct warp_stream_stats *b)
{
	struct warp_stream_stats x = *a, y = *b;

	x.malformed = y.malformed = 0;
	check(!memcmp(&x, &y, sizeof(x)), "rejected payload changed state");
}

static void invariants(struct warp_stream *s, const struct warp_stream_conf *c)
{
	struct warp_stream_stats st;

	warp_stream_stats(s, &st);
	check(st.sndbuf_used <= c->sndbuf, "sndbuf bound");
	check(st.rcv_buffered <= c->rcvbuf, "rcvbuf bound");
	check(st.dgram_queue_bytes <= c->dgram_sndbuf, "dgram queue bound");
	check(st.state >= WARP_STREAM_OPEN && st.state <= WARP_STREAM_DONE, "state");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct warp_rd r = warp_rd_init(data, size);
	struct warp_stream_conf c;
	struct warp_stream *s;
	uint64_t now = 1000 * MS;
	uint8_t flags, buf[PAYLOAD];

	if (!size)
		return 0;
	warp_log_set_level(WARP_LOG_NONE); /* violations are expected here */
	flags = warp_rd_u8(&r);
	c = fuzz_conf(flags & 1);
	s = setup(flags, now, NULL, NULL, 0);
	while (warp_rd_left(&r)) {
		uint8_t op = warp_rd_u8(&r);

		switch (op & 7) {
		case 0: {
			uint16_t len = warp_rd_u16(&r);
			const uint8_t *p = warp_rd_bytes(&r, len);
			struct warp_stream_stats before, after;
			int rc;

			if (!p)
				break;
			warp_stream_stats(s, &before);
			rc = warp_stream_input(s, p, len, now);
			warp_stream_stats(s, &after);
			if (rc < 0 &&
			    !(rc == -WARP_EMALFORMED && after.close_err == -WARP_EMALFORMED &&
			      before.close_err != -WARP_EMALFORMED))
				stats_same(&before, &after);
			if (rc < 0 && after.close_err == -WARP_EMALFORMED &&
			    before.close_err != -WARP_EMALFORMED)
				check(after.state >= WARP_STREAM_CLOSED,
				      "violation ends the stream");
			break;
		}
		case 1: {
			uint64_t d;

			now += warp_rd_u16(&r) * MS / 8;
			d = warp_stream_next_deadline(s);
			if (d <= now)
				warp_stream_on_timer(s, now);
			break;
		}
		case 2: {
			bool ack_only;
			int n, k = 0;

			while ((n = warp_stream_poll(s, buf, sizeof(buf), now, &ack_only)) > 0 &&
			       k++ < 10000)
				check(n <= PAYLOAD, "payload size");
			check(n >= 0, "poll error");
			break;
		}
		case 3:
		case 4: {
			uint16_t len = warp_rd_u16(&r);

			warp_stream_send(s, zeros, len,
					 (op & 7) == 3 ? WARP_MSG_RELIABLE : WARP_MSG_DATAGRAM,
					 now);
			break;
		}
		case 5:
		case 6:
			warp_stream_close(s, (op & 7) == 5);
			break;
		case 7:
			warp_stream_touch(s, now);
			break;
		}
		invariants(s, &c);
	}
	warp_stream_free(s);
	return 0;
}

#ifdef FUZZ_STREAM_GEN
/*
 * Seed generator: a peer talks to a stream in each setup; its payloads become 0x00 records,
 * with clock steps and polls in between.  usage: gen DIR
 */
static void put_rec(FILE *f, const uint8_t *p, size_t n)
{
	uint8_t h[3] = { 0, (uint8_t)(n >> 8), (uint8_t)n };

	fwrite(h, 1, 3, f);
	fwrite(p, 1, n, f);
}

static void put_step(FILE *f, uint16_t ms8)
{
	uint8_t h[4] = { 1, (uint8_t)(ms8 >> 8), (uint8_t)ms8, 2 };

	fwrite(h, 1, 4, f);
}

static void gen(const char *dir, const char *name, uint8_t flags, unsigned int scenario)
{
	struct warp_stream_conf c = fuzz_conf(flags & 1);
	struct warp_stream *a, *b;
	uint8_t wire[1 << 16], buf[PAYLOAD];
	size_t wlen, off = 0;
	uint64_t now = 1000 * MS;
	char path[512];
	bool ack_only;
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	check(f != NULL, "open seed");
	fputc(flags, f);
	a = setup(flags, now, wire, &wlen, sizeof(wire));
	b = warp_stream_new(&c);
	/* b hears what a sent during setup, minus one payload for scenario 1 (a hole) */
	for (int i = 0; off < wlen; i++) {
		size_t len = warp_get_u16(wire + off);

		if (!(scenario == 1 && i == 1))
			warp_stream_input(b, wire + off + 2, len, now + 10 * MS);
		off += 2 + len;
	}
	now += 10 * MS;
	if (scenario == 2) {
		warp_stream_send(b, zeros, 3000, WARP_MSG_RELIABLE, now);
		warp_stream_send(b, zeros, 1200, WARP_MSG_DATAGRAM, now);
		warp_stream_send(b, zeros, 40, WARP_MSG_DATAGRAM, now);
	}
	if (scenario == 3)
		warp_stream_close(b, true);
	if (scenario == 4)
		warp_stream_close(b, false);
	for (int round = 0; round < 6; round++) {
		if (warp_stream_next_deadline(b) <= now)
			warp_stream_on_timer(b, now);
		while ((n = warp_stream_poll(b, buf, sizeof(buf), now, &ack_only)) > 0) {
			put_rec(f, buf, (size_t)n);
			warp_stream_input(a, buf, (size_t)n, now + 10 * MS);
		}
		now += 10 * MS;
		put_step(f, 80);
		while ((n = warp_stream_poll(a, buf, sizeof(buf), now, &ack_only)) > 0)
			warp_stream_input(b, buf, (size_t)n, now + 10 * MS);
		now += 10 * MS;
	}
	fclose(f);
	warp_stream_free(a);
	warp_stream_free(b);
}

int main(int argc, char **argv)
{
	static const char *names[] = { "ack", "sack-hole", "data-dgram", "close", "reset" };

	if (argc != 2)
		return 2;
	for (unsigned int sc = 0; sc < 5; sc++) {
		char name[64];

		snprintf(name, sizeof(name), "udp-%s", names[sc]);
		gen(argv[1], name, 2, sc);
		snprintf(name, sizeof(name), "tcp-%s", names[sc]);
		gen(argv[1], name, 3, sc);
	}
	return 0;
}
#endif
