// SPDX-License-Identifier: MIT
/*
 * Fuzz target for what the TURN client parses from its server: responses, Data
 * indications, ChannelData datagrams and the TCP stream reassembly.
 *
 * Input: one mode byte, then the bytes "from the server".  The harness first drives a
 * client through a scripted allocation (401, signed success) and adds peers, so requests of
 * every kind are outstanding.  Mode bits choose UDP or TCP, whether to stop with only the
 * signed Allocate pending, whether to copy the transaction ID of one outstanding request
 * into the input and whether to re-sign the input with the session key, so mutated
 * responses get past matching and integrity into the state machine.  TCP input is fed in
 * chunks of a mode-chosen size.  Afterwards the client is timed out, asked to wrap data,
 * released and fed the input again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <warpgate/log.h>

#include "net/endpoint.h"
#include "nat/stun.h"
#include "relay/turn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define S 1000000000ull

static struct sockaddr_storage server, relayed, mapped, peer1, peer2;
static uint8_t key[32]; /* MD5 key in the first 16 bytes */
static bool inited;

static void init(void)
{
	warp_ep_parse("192.0.2.1:3478", 0, &server);
	warp_ep_parse("192.0.2.1:50000", 0, &relayed);
	warp_ep_parse("203.0.113.7:40000", 0, &mapped);
	warp_ep_parse("198.51.100.5:7000", 0, &peer1);
	warp_ep_parse("198.51.100.6:7001", 0, &peer2);
	warp_stun_long_term_key("u", "lab", "p", WARP_STUN_PW_MD5, key);
	warp_log_set_level(WARP_LOG_NONE);
	inited = true;
}

static uint64_t fuzz_now;

static void on_event(struct warp_turn *t, const struct warp_turn_event *ev, void *user)
{
	/* exercise re-entrancy the way real users do */
	if (ev->type == WARP_TURN_EV_PERMISSION && ev->err == 0 && ev->peer)
		warp_turn_remove_peer(t, ev->peer, fuzz_now);
}

static void on_data(struct warp_turn *t, const struct sockaddr *peer, uint8_t *d, size_t len,
		    void *user)
{
	if (len)
		d[0] ^= 1; /* data is writable */
}

static const struct warp_turn_ops ops = { .event = on_event, .data = on_data };

struct pending {
	uint8_t tid[WARP_STUN_TID_LEN];
	uint16_t method;
};

static void feed(struct warp_turn *t, bool tcp, uint8_t *buf, size_t len, size_t chunk,
		 uint64_t now)
{
	if (!tcp) {
		warp_turn_handle_input(t, buf, len, (struct sockaddr *)&server, now);
		return;
	}
	for (size_t off = 0; off < len; off += chunk)
		warp_turn_handle_stream(t, buf + off, len - off < chunk ? len - off : chunk, now);
}

/* Answers the last request (tid) with a scripted response. */
static void answer(struct warp_turn *t, bool tcp, const struct pending *req, int code, bool sign,
		   uint64_t now)
{
	struct warp_stun_builder b;
	uint8_t buf[512];
	int n;

	warp_stun_build_init(&b, buf, sizeof(buf), req->method,
			     code ? WARP_STUN_ERROR : WARP_STUN_SUCCESS, req->tid);
	if (code) {
		warp_stun_add_error(&b, code, "x");
		warp_stun_add_str(&b, WARP_STUN_ATTR_REALM, "lab");
		warp_stun_add_str(&b, WARP_STUN_ATTR_NONCE, "n0");
	} else if (req->method == WARP_STUN_ALLOCATE) {
		warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_RELAYED_ADDRESS,
				   (struct sockaddr *)&relayed);
		warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS,
				   (struct sockaddr *)&mapped);
		warp_stun_add_u32(&b, WARP_STUN_ATTR_LIFETIME, 600);
	}
	if (sign)
		warp_stun_add_mi(&b, key, 16);
	n = warp_stun_build_end(&b);
	if (n > 0)
		feed(t, tcp, buf, (size_t)n, (size_t)n, now);
}

static int drain(struct warp_turn *t, uint64_t now, struct pending *out, int max)
{
	struct warp_turn_tx tx;
	struct warp_stun_msg m;
	int n = 0;

	while (warp_turn_poll_transmit(t, now, &tx))
		if (n < max && warp_stun_decode(&m, tx.data, tx.len) == 0) {
			memcpy(out[n].tid, m.tid, WARP_STUN_TID_LEN);
			out[n++].method = m.method;
		}
	return n;
}

/* Rebuilds msg with MESSAGE-INTEGRITY under the session key (attributes kept). */
static size_t resign(uint8_t *buf, size_t len, size_t cap)
{
	struct warp_stun_msg m;
	struct warp_stun_builder b;
	uint8_t *out = malloc(cap);
	int n;

	if (!out || warp_stun_decode(&m, buf, len) != 0) {
		free(out);
		return len;
	}
	warp_stun_build_init(&b, out, cap, m.method, m.cls, m.tid);
	for (unsigned int i = 0; i < m.nattrs; i++) {
		uint16_t type = m.attrs[i].type;

		if (type == WARP_STUN_ATTR_MESSAGE_INTEGRITY ||
		    type == WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256 ||
		    type == WARP_STUN_ATTR_FINGERPRINT)
			continue;
		warp_stun_add(&b, type, m.buf + m.attrs[i].off, m.attrs[i].len);
	}
	warp_stun_add_mi(&b, key, 16);
	n = warp_stun_build_end(&b);
	if (n > 0) {
		memcpy(buf, out, (size_t)n);
		len = (size_t)n;
	}
	free(out);
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t chunks[] = { 1, 3, 17, 1 << 20 };
	struct warp_turn_cfg cfg = { .username = "u", .password = "p", .realm = "lab" };
	struct pending pend[16];
	struct warp_turn *t;
	uint64_t now = 10 * S;
	uint8_t mode, *buf, out[256];
	size_t cap, in_len;
	bool tcp;
	int n;

	if (!inited)
		init();
	if (size < 1)
		return 0;
	mode = data[0];
	data++;
	size--;
	in_len = size;
	tcp = mode & 1;
	cfg.transport = tcp ? WARP_TURN_TCP : WARP_TURN_UDP;
	t = warp_turn_new(&cfg, (struct sockaddr *)&server, &ops, NULL);
	if (!t)
		return 0;
	warp_turn_add_peer(t, (struct sockaddr *)&peer1, true, now);
	warp_turn_allocate(t, now);
	n = drain(t, now, pend, 16);
	if (n)
		answer(t, tcp, &pend[0], 401, false, now);
	n = drain(t, now, pend, 16);
	if (!(mode & 0x80) && n) {
		answer(t, tcp, &pend[0], 0, true, now);
		warp_turn_add_peer(t, (struct sockaddr *)&peer2, false, now);
		n = drain(t, now, pend, 16);
	}

	cap = size + 512;
	buf = malloc(cap);
	if (!buf) {
		warp_turn_free(t);
		return 0;
	}
	memcpy(buf, data, size);
	if ((mode & 2) && n && size >= WARP_STUN_HDR_LEN)
		memcpy(buf + 8, pend[((mode >> 3) & 3) % n].tid, WARP_STUN_TID_LEN);
	if (mode & 4)
		size = resign(buf, size, cap);
	fuzz_now = now;
	feed(t, tcp, buf, size, chunks[(mode >> 5) & 3], now);

	/* everything else the state may now allow */
	warp_turn_wrap(t, (struct sockaddr *)&peer1, "abc", 3, out, sizeof(out));
	warp_turn_wrap(t, (struct sockaddr *)&peer2, "abc", 3, out, sizeof(out));
	drain(t, now, pend, 16);
	now += 700 * S;
	warp_turn_handle_timeout(t, now);
	drain(t, now, pend, 16);
	warp_turn_release(t, now);
	memcpy(buf, data, in_len);
	feed(t, tcp, buf, in_len, chunks[(mode >> 5) & 3], now);
	now += 60 * S;
	warp_turn_handle_timeout(t, now);
	warp_turn_next_deadline(t);
	free(buf);
	warp_turn_free(t);
	return 0;
}
