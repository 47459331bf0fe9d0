// SPDX-License-Identifier: MIT
/*
 * Handshake: both roles in one process, talking through a simulated network that loses,
 * duplicates and reorders datagrams on a virtual clock.  Everything random on the network
 * side comes from a seeded xorshift, so every run takes the same path.
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

#include <warpgate/error.h>
#include <warpgate/identity.h>
#include <warpgate/log.h>

#include "core/bytes.h"
#include "pipe/frame.h"
#include "pipe/handshake.h"
#include "pipe/session.h"

#define MS     1000000ull
#define MAXPKT 512
#define T0     (1000 * MS) /* virtual clock start: not zero, to catch "0 means unset" bugs */

static struct warp_identity *id_i, *id_r, *id_other;

/* ---- simulated network ---- */

struct msg {
	uint8_t b[MAXPKT];
	size_t len;
	int to;
	uint64_t at;
};

struct net;
typedef bool (*drop_fn)(struct net *n, int to, const uint8_t *p, size_t len);

struct net {
	struct msg q[512];
	size_t nq;
	uint64_t now;
	uint64_t rng;
	unsigned int loss_pct, dup_pct;
	uint64_t delay_ns, jitter_ns;
	drop_fn drop;
	unsigned int sent[2][16]; /* [sender][type] */
	unsigned int nth[2][16];  /* running count used by drop hooks */
	/* every datagram put on the wire, for the passive-observer check */
	uint8_t wire[256][256];
	size_t wire_len[256];
	size_t nwire;
};

static uint64_t net_rnd(struct net *n)
{
	n->rng ^= n->rng << 13;
	n->rng ^= n->rng >> 7;
	n->rng ^= n->rng << 17;
	return n->rng;
}

static void net_init(struct net *n, uint64_t seed)
{
	memset(n, 0, sizeof(*n));
	n->rng = seed * 0x9e3779b97f4a7c15ull + 1;
	n->now = T0;
	n->delay_ns = 20 * MS;
}

static void net_put(struct net *n, int to, const uint8_t *p, size_t len, uint64_t at)
{
	assert_true(n->nq < WARP_ARRAY_SIZE(n->q));
	assert_true(len <= MAXPKT);
	memcpy(n->q[n->nq].b, p, len);
	n->q[n->nq].len = len;
	n->q[n->nq].to = to;
	n->q[n->nq].at = at;
	n->nq++;
}

static void net_send(struct net *n, int from, const uint8_t *p, size_t len)
{
	int to = 1 - from;
	uint8_t type = p[0] & WARP_HDR_TYPE_MASK;

	n->sent[from][type]++;
	if (n->nwire < WARP_ARRAY_SIZE(n->wire) && len <= 256) {
		memcpy(n->wire[n->nwire], p, len);
		n->wire_len[n->nwire++] = len;
	}
	if (n->drop && n->drop(n, to, p, len))
		return;
	if (n->loss_pct && net_rnd(n) % 100 < n->loss_pct)
		return;
	net_put(n, to, p, len,
		n->now + n->delay_ns + (n->jitter_ns ? net_rnd(n) % n->jitter_ns : 0));
	if (n->dup_pct && net_rnd(n) % 100 < n->dup_pct)
		net_put(n, to, p, len,
			n->now + n->delay_ns + (n->jitter_ns ? net_rnd(n) % n->jitter_ns : 0));
}

/* ---- endpoints ---- */

struct ep {
	int idx; /* 0 initiator, 1 responder */
	struct warp_hs_cfg cfg;
	struct warp_hs *hs;
	struct warp_session *s;
	int err;
	/* responder */
	struct warp_cookie_jar *jar;
	uint8_t peer_addr[18];
	uint8_t eph[32];
	unsigned int hs_created;
	int hs_reject; /* last error from the handshake for a packet */
	/* delivered to the application */
	unsigned int data_rx;
	bool got_close;
	int close_code;
	uint8_t last_data[MAXPKT];
	size_t last_len;
};

static void ep_free(struct ep *e)
{
	warp_hs_free(e->hs);
	warp_session_free(e->s);
	warp_cookie_jar_free(e->jar);
	memset(e, 0, sizeof(*e));
}

static void ep_become_session(struct net *n, struct ep *e)
{
	e->s = warp_session_new(e->hs, NULL, n->now);
	assert_non_null(e->s);
	if (e->idx == 0) { /* the initiator no longer needs the handshake */
		warp_hs_free(e->hs);
		e->hs = NULL;
	}
}

static void ep_session_recv(struct net *n, struct ep *e, uint8_t *p, size_t len)
{
	uint8_t out[MAXPKT];
	struct warp_rx_info info;
	int rc;

	switch (p[0] & WARP_HDR_TYPE_MASK) {
	case WARP_PKT_DATA:
	case WARP_PKT_ACK:
	case WARP_PKT_CLOSE:
		rc = warp_session_open(e->s, p, len, out, sizeof(out), n->now, &info);
		if (rc < 0)
			return;
		if (info.type == WARP_PKT_CLOSE) {
			e->got_close = true;
			e->close_code = warp_close_code(out, (size_t)rc);
		} else if (rc > 0) {
			e->data_rx++;
			memcpy(e->last_data, out, (size_t)rc);
			e->last_len = (size_t)rc;
		}
		return;
	case WARP_PKT_PING:
		if (!warp_session_answer_ping(e->s, p, len))
			net_send(n, e->idx, p, len);
		return;
	case WARP_PKT_PONG:
		warp_session_pong(e->s, p, len, n->now, NULL);
		return;
	default:
		rc = warp_session_hs_recv(e->s, p, len, n->now, out, sizeof(out));
		if (rc > 0)
			net_send(n, e->idx, out, (size_t)rc);
	}
}

static void ep_hs_result(struct net *n, struct ep *e, int rc, const uint8_t *out, size_t out_len)
{
	if (out_len)
		net_send(n, e->idx, out, out_len);
	if (rc < 0)
		e->hs_reject = rc;
	if (warp_hs_state(e->hs) == WARP_HS_DONE && !e->s)
		ep_become_session(n, e);
	else if (warp_hs_state(e->hs) == WARP_HS_FAILED)
		e->err = warp_hs_error(e->hs);
}

static void ep_recv(struct net *n, struct ep *e, uint8_t *p, size_t len)
{
	uint8_t out[WARP_HS_OUT_MAX], cid[WARP_CID_LEN];
	struct warp_hs_init_info info;
	size_t out_len;
	int rc;

	if (warp_pkt_cid(p, len, cid))
		return;
	if (e->s && !memcmp(cid, warp_session_local_cid(e->s), WARP_CID_LEN)) {
		ep_session_recv(n, e, p, len);
		return;
	}
	if (e->idx == 1 && (p[0] & WARP_HDR_TYPE_MASK) == WARP_PKT_HS_INIT) {
		if (warp_hs_init_peek(p, len, &info))
			return;
		if (e->hs && !memcmp(info.ephemeral, e->eph, 32)) {
			rc = warp_hs_recv(e->hs, p, len, n->now, out, &out_len);
			ep_hs_result(n, e, rc, out, out_len);
			return;
		}
		rc = warp_cookie_check(e->jar, p, len, e->peer_addr, sizeof(e->peer_addr), n->now,
				       out);
		if (rc > 0)
			net_send(n, e->idx, out, (size_t)rc);
		if (rc != 0)
			return;
		warp_hs_free(e->hs);
		e->cfg.wall_ms = 1700000000000ull + n->now / MS;
		e->hs = warp_hs_new(&e->cfg, n->now);
		assert_non_null(e->hs);
		e->hs_created++;
		memcpy(e->eph, info.ephemeral, 32);
		rc = warp_hs_recv(e->hs, p, len, n->now, out, &out_len);
		ep_hs_result(n, e, rc, out, out_len);
		return;
	}
	if (e->hs && !memcmp(cid, warp_hs_local_cid(e->hs), WARP_CID_LEN)) {
		rc = warp_hs_recv(e->hs, p, len, n->now, out, &out_len);
		ep_hs_result(n, e, rc, out, out_len);
	}
}

static uint64_t ep_deadline(const struct ep *e)
{
	uint64_t a = e->hs ? warp_hs_next_timeout(e->hs) : UINT64_MAX;
	uint64_t b = e->s ? warp_session_next_timeout(e->s) : UINT64_MAX;

	return a < b ? a : b;
}

static void ep_timer(struct net *n, struct ep *e)
{
	uint8_t out[MAXPKT];
	size_t out_len;
	int rc;

	if (e->hs && warp_hs_next_timeout(e->hs) <= n->now) {
		rc = warp_hs_poll(e->hs, n->now, out, &out_len);
		if (out_len)
			net_send(n, e->idx, out, out_len);
		if (rc < 0) {
			if (!e->s)
				e->err = rc;
			warp_hs_free(e->hs);
			e->hs = NULL;
		}
	}
	while (e->s && warp_session_next_timeout(e->s) <= n->now) {
		rc = warp_session_poll(e->s, n->now, out, sizeof(out));
		if (rc > 0) {
			net_send(n, e->idx, out, (size_t)rc);
			continue;
		}
		if (rc < 0)
			e->err = rc;
		break;
	}
}

typedef bool (*done_fn)(struct ep *i, struct ep *r);

static bool both_up(struct ep *i, struct ep *r)
{
	return i->s && r->s && warp_session_confirmed(i->s);
}

/* Runs the simulation until done() or nothing is left to happen before limit. */
static bool run(struct net *n, struct ep *i, struct ep *r, uint64_t limit, done_fn done)
{
	struct ep *eps[2] = {i, r};

	for (int guard = 0; guard < 100000; guard++) {
		uint64_t t = UINT64_MAX;
		size_t first = SIZE_MAX;

		if (done && done(i, r))
			return true;
		for (size_t k = 0; k < n->nq; k++)
			if (n->q[k].at < t) {
				t = n->q[k].at;
				first = k;
			}
		for (int k = 0; k < 2; k++) {
			uint64_t d = ep_deadline(eps[k]);

			if (d < t) {
				t = d;
				first = SIZE_MAX;
			}
		}
		if (t == UINT64_MAX || t > limit)
			return done ? done(i, r) : true;
		if (t > n->now)
			n->now = t;
		if (first != SIZE_MAX) {
			struct msg m = n->q[first];

			n->q[first] = n->q[--n->nq];
			ep_recv(n, eps[m.to], m.b, m.len);
			continue;
		}
		for (int k = 0; k < 2; k++)
			if (ep_deadline(eps[k]) <= n->now)
				ep_timer(n, eps[k]);
	}
	fail_msg("simulation did not settle");
	return false;
}

static void ep_init(struct ep *i, struct ep *r, uint64_t now)
{
	memset(i, 0, sizeof(*i));
	memset(r, 0, sizeof(*r));
	i->idx = 0;
	i->cfg.role = WARP_HS_INITIATOR;
	i->cfg.identity = id_i;
	i->cfg.expected_peer = warp_identity_pubkey(id_r);
	i->cfg.wall_ms = 1700000000000ull + now / MS;
	r->idx = 1;
	r->cfg.role = WARP_HS_RESPONDER;
	r->cfg.identity = id_r;
	r->jar = warp_cookie_jar_new();
	assert_non_null(r->jar);
	memset(r->peer_addr, 0x42, sizeof(r->peer_addr));
}

static void ep_start(struct net *n, struct ep *i)
{
	i->hs = warp_hs_new(&i->cfg, n->now);
	assert_non_null(i->hs);
}

/* Sends one DATA each way over a clean path and checks it arrives intact. */
static void exchange_data(struct net *n, struct ep *i, struct ep *r)
{
	uint8_t pkt[MAXPKT];
	static const char hello[] = "hello from the initiator", back[] = "and back";
	int len;

	n->loss_pct = n->dup_pct = 0;
	n->drop = NULL;
	len = warp_session_seal(i->s, WARP_PKT_DATA, hello, sizeof(hello), pkt, sizeof(pkt),
				n->now);
	assert_int_equal(len, sizeof(hello) + WARP_SESSION_OVERHEAD);
	net_send(n, 0, pkt, (size_t)len);
	len = warp_session_seal(r->s, WARP_PKT_DATA, back, sizeof(back), pkt, sizeof(pkt), n->now);
	net_send(n, 1, pkt, (size_t)len);
	run(n, i, r, n->now + 1000 * MS, NULL);
	assert_int_equal(r->last_len, sizeof(hello));
	assert_memory_equal(r->last_data, hello, sizeof(hello));
	assert_int_equal(i->last_len, sizeof(back));
	assert_memory_equal(i->last_data, back, sizeof(back));
}

static void check_peers(struct ep *i, struct ep *r)
{
	assert_memory_equal(warp_session_peer_identity(i->s), warp_identity_pubkey(id_r),
			    WARP_PUBKEY_LEN);
	assert_memory_equal(warp_session_peer_identity(r->s), warp_identity_pubkey(id_i),
			    WARP_PUBKEY_LEN);
	assert_memory_equal(warp_session_peer_cid(i->s), warp_session_local_cid(r->s),
			    WARP_CID_LEN);
	assert_memory_equal(warp_session_peer_cid(r->s), warp_session_local_cid(i->s),
			    WARP_CID_LEN);
	assert_int_equal(warp_session_role(i->s), WARP_HS_INITIATOR);
	assert_int_equal(warp_session_role(r->s), WARP_HS_RESPONDER);
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
	for (size_t k = 0; k + m <= n; k++)
		if (!memcmp(hay + k, needle, m))
			return true;
	return false;
}

/* ---- tests ---- */

static void test_clean(void **state)
{
	struct net n;
	struct ep i, r;
	uint8_t a[32], b[32];

	net_init(&n, 1);
	ep_init(&i, &r, n.now);
	ep_start(&n, &i);
	assert_true(run(&n, &i, &r, n.now + 5000 * MS, both_up));
	assert_int_equal(i.err, 0);
	assert_int_equal(r.err, 0);
	check_peers(&i, &r);
	/* one of each: INIT, RESP, FINISH, and the responder's bare ACK */
	assert_int_equal(n.sent[0][WARP_PKT_HS_INIT], 1);
	assert_int_equal(n.sent[1][WARP_PKT_HS_RESP], 1);
	assert_int_equal(n.sent[0][WARP_PKT_HS_FINISH], 1);
	assert_int_equal(n.sent[1][WARP_PKT_ACK], 1);
	assert_int_equal(r.hs_created, 1);
	/* identities never cross the wire in clear */
	for (size_t k = 0; k < n.nwire; k++) {
		assert_false(contains(n.wire[k], n.wire_len[k], warp_identity_pubkey(id_i), 33));
		assert_false(contains(n.wire[k], n.wire_len[k], warp_identity_pubkey(id_r), 33));
	}
	/* same exporter output on both sides, different per label */
	assert_int_equal(warp_session_export(i.s, "probe", NULL, 0, a, 32), 0);
	assert_int_equal(warp_session_export(r.s, "probe", NULL, 0, b, 32), 0);
	assert_memory_equal(a, b, 32);
	assert_int_equal(warp_session_export(r.s, "other", NULL, 0, b, 32), 0);
	assert_memory_not_equal(a, b, 32);
	exchange_data(&n, &i, &r);
	ep_free(&i);
	ep_free(&r);
}

/* Loss, duplication and reordering: every seed must get through. */
static void test_lossy_network(void **state)
{
	unsigned int ok = 0, retrans = 0;

	for (uint64_t seed = 1; seed <= 40; seed++) {
		struct net *n = calloc(1, sizeof(*n));
		struct ep i, r;

		net_init(n, seed);
		n->loss_pct = 20;
		n->dup_pct = 15;
		n->jitter_ns = 150 * MS; /* > spacing of retransmissions: reorders them */
		ep_init(&i, &r, n->now);
		ep_start(n, &i);
		if (run(n, &i, &r, n->now + 20000 * MS, both_up)) {
			ok++;
			check_peers(&i, &r);
			exchange_data(n, &i, &r);
		} else {
			print_message("seed %llu: i.err %d r.err %d\n", (unsigned long long)seed,
				      i.err, r.err);
		}
		retrans += n->sent[0][WARP_PKT_HS_INIT] - 1;
		/* duplicated INITs never create a second responder */
		assert_true(r.hs_created <= 1);
		ep_free(&i);
		ep_free(&r);
		free(n);
	}
	assert_int_equal(ok, 40);
	assert_true(retrans > 0); /* the loss did bite */
}

static bool drop_first_inits(struct net *n, int to, const uint8_t *p, size_t len)
{
	return (p[0] & WARP_HDR_TYPE_MASK) == WARP_PKT_HS_INIT && n->nth[0][WARP_PKT_HS_INIT]++ < 3;
}

/* INIT lost three times: retransmitted at 200, 400, 800 ms spacing. */
static void test_init_backoff(void **state)
{
	struct net n;
	struct ep i, r;
	uint8_t out[WARP_HS_OUT_MAX], first[WARP_HS_OUT_MAX];
	size_t len;
	uint64_t t0;

	net_init(&n, 2);
	ep_init(&i, &r, n.now);
	ep_start(&n, &i);
	t0 = n.now;
	/* poll by hand to see the schedule */
	assert_int_equal(warp_hs_next_timeout(i.hs), t0);
	assert_int_equal(warp_hs_poll(i.hs, t0, first, &len), 0);
	assert_int_equal(len, WARP_HS_INIT_LEN);
	assert_int_equal(warp_hs_poll(i.hs, t0 + 199 * MS, out, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(warp_hs_next_timeout(i.hs), t0 + 200 * MS);
	assert_int_equal(warp_hs_poll(i.hs, t0 + 200 * MS, out, &len), 0);
	assert_int_equal(len, WARP_HS_INIT_LEN);
	assert_memory_equal(out, first, len); /* byte-identical retransmission */
	assert_int_equal(warp_hs_next_timeout(i.hs), t0 + 600 * MS);
	assert_int_equal(warp_hs_poll(i.hs, t0 + 600 * MS, out, &len), 0);
	assert_int_equal(warp_hs_next_timeout(i.hs), t0 + 1400 * MS);
	ep_free(&i);
	ep_free(&r);

	/* and through the network */
	net_init(&n, 3);
	ep_init(&i, &r, n.now);
	n.drop = drop_first_inits;
	ep_start(&n, &i);
	assert_true(run(&n, &i, &r, n.now + 5000 * MS, both_up));
	assert_int_equal(n.sent[0][WARP_PKT_HS_INIT], 4);
	assert_true(n.now >= T0 + 1400 * MS);
	ep_free(&i);
	ep_free(&r);
}

static bool drop_first_resp(struct net *n, int to, const uint8_t *p, size_t len)
{
	return (p[0] & WARP_HDR_TYPE_MASK) == WARP_PKT_HS_RESP && n->nth[1][WARP_PKT_HS_RESP]++ < 1;
}

/* RESP lost: the retransmitted INIT gets the very same RESP, and no new responder state. */
static void test_resp_lost(void **state)
{
	struct net n;
	struct ep i, r;

	net_init(&n, 4);
	ep_init(&i, &r, n.now);
	n.drop = drop_first_resp;
	ep_start(&n, &i);
	assert_true(run(&n, &i, &r, n.now + 5000 * MS, both_up));
	assert_int_equal(n.sent[0][WARP_PKT_HS_INIT], 2);
	assert_int_equal(n.sent[1][WARP_PKT_HS_RESP], 2);
	assert_int_equal(r.hs_created, 1);
	/* both RESPs on the wire are identical */
	{
		const uint8_t *resp[2] = {NULL, NULL};
		int k = 0;

		for (size_t w = 0; w < n.nwire && k < 2; w++)
			if ((n.wire[w][0] & WARP_HDR_TYPE_MASK) == WARP_PKT_HS_RESP)
				resp[k++] = n.wire[w];
		assert_int_equal(k, 2);
		assert_memory_equal(resp[0], resp[1], WARP_HS_RESP_LEN);
	}
	ep_free(&i);
	ep_free(&r);
}

static bool drop_finish_and_ack(struct net *n, int to, const uint8_t *p, size_t len)
{
	uint8_t t = p[0] & WARP_HDR_TYPE_MASK;

	if (t == WARP_PKT_HS_FINISH)
		return n->nth[0][t]++ < 1;
	if (t == WARP_PKT_ACK)
		return n->nth[1][t]++ < 1;
	return false;
}

/* FINISH lost, then the confirmation lost: the initiator's session retransmits FINISH until
 * it hears from the responder; the responder answers the duplicate with a new confirmation. */
static void test_finish_lost(void **state)
{
	struct net n;
	struct ep i, r;
	struct warp_session_stats st;

	net_init(&n, 5);
	ep_init(&i, &r, n.now);
	n.drop = drop_finish_and_ack;
	ep_start(&n, &i);
	assert_true(run(&n, &i, &r, n.now + 5000 * MS, both_up));
	assert_int_equal(n.sent[0][WARP_PKT_HS_FINISH], 3);
	assert_int_equal(n.sent[1][WARP_PKT_ACK], 2);
	assert_int_equal(r.hs_created, 1);
	warp_session_stats(i.s, &st);
	assert_int_equal(st.opened, 1);
	/* no more FINISH once confirmed */
	assert_int_equal(warp_session_next_timeout(i.s), UINT64_MAX);
	ep_free(&i);
	ep_free(&r);
}

static bool drop_all_finish(struct net *n, int to, const uint8_t *p, size_t len)
{
	return (p[0] & WARP_HDR_TYPE_MASK) == WARP_PKT_HS_FINISH;
}

/* The responder has no session before FINISH: DATA sent early is refused, not accepted. */
static void test_data_before_finish(void **state)
{
	struct net n;
	struct ep i, r;
	uint8_t pkt[128], out[WARP_HS_OUT_MAX];
	size_t out_len;
	int len;

	net_init(&n, 6);
	ep_init(&i, &r, n.now);
	n.drop = drop_all_finish;
	ep_start(&n, &i);
	run(&n, &i, &r, n.now + 300 * MS, NULL);
	assert_non_null(i.s);
	assert_null(r.s);
	assert_int_equal(warp_hs_state(r.hs), WARP_HS_WAIT_FINISH);
	len = warp_session_seal(i.s, WARP_PKT_DATA, "early", 5, pkt, sizeof(pkt), n.now);
	assert_true(len > 0);
	assert_int_equal(warp_hs_recv(r.hs, pkt, (size_t)len, n.now, out, &out_len), -WARP_ESTATE);
	assert_int_equal(out_len, 0);
	assert_int_equal(warp_hs_state(r.hs), WARP_HS_WAIT_FINISH);
	/* FINISH never arrives: the initiator gives up, the responder expires */
	run(&n, &i, &r, n.now + 60000 * MS, NULL);
	assert_int_equal(i.err, -ETIMEDOUT);
	assert_int_equal(r.err, -ETIMEDOUT);
	assert_int_equal(n.sent[0][WARP_PKT_HS_FINISH], 8);
	assert_int_equal(r.data_rx, 0);
	ep_free(&i);
	ep_free(&r);
}

static char last_log[1024];

static void log_capture(enum warp_log_level level, const char *component, const char *msg,
			void *user)
{
	snprintf(last_log, sizeof(last_log), "%s: %s", component, msg);
}

static void test_wrong_identity(void **state)
{
	struct net n;
	struct ep i, r;
	char want[67];

	net_init(&n, 7);
	ep_init(&i, &r, n.now);
	i.cfg.expected_peer = warp_identity_pubkey(id_other);
	last_log[0] = '\0';
	warp_log_set_callback(log_capture, NULL);
	ep_start(&n, &i);
	run(&n, &i, &r, n.now + 20000 * MS, NULL);
	warp_log_set_callback(NULL, NULL);
	assert_int_equal(i.err, -WARP_EIDENTITY);
	assert_null(i.s);
	assert_int_equal(n.sent[0][WARP_PKT_HS_FINISH], 0); /* nothing signed for an impostor */
	assert_int_equal(n.sent[0][WARP_PKT_HS_INIT], 1);
	assert_non_null(strstr(last_log, "expected"));
	for (int k = 0; k < 33; k++)
		sprintf(want + 2 * k, "%02x", warp_identity_pubkey(id_other)[k]);
	assert_non_null(strstr(last_log, want));
	ep_free(&i);
	ep_free(&r);
}

struct policy {
	int verdict;
	unsigned int calls;
	uint8_t seen[WARP_PUBKEY_LEN];
};

static int policy_cb(const uint8_t peer[WARP_PUBKEY_LEN], void *user)
{
	struct policy *p = user;

	p->calls++;
	memcpy(p->seen, peer, WARP_PUBKEY_LEN);
	return p->verdict;
}

static void test_policy(void **state)
{
	struct net n;
	struct ep i, r;
	struct policy pol = {.verdict = -EACCES};

	/* refused: the initiator hears why through a sealed CLOSE */
	net_init(&n, 8);
	ep_init(&i, &r, n.now);
	r.cfg.policy = policy_cb;
	r.cfg.policy_user = &pol;
	ep_start(&n, &i);
	run(&n, &i, &r, n.now + 2000 * MS, NULL);
	assert_int_equal(pol.calls, 1);
	assert_memory_equal(pol.seen, warp_identity_pubkey(id_i), WARP_PUBKEY_LEN);
	assert_int_equal(r.err, -EACCES);
	assert_null(r.s);
	assert_true(i.got_close);
	assert_int_equal(i.close_code, -EACCES);
	assert_int_equal(r.data_rx, 0);
	ep_free(&i);
	ep_free(&r);

	/* accepted */
	net_init(&n, 9);
	ep_init(&i, &r, n.now);
	pol.verdict = 0;
	pol.calls = 0;
	r.cfg.policy = policy_cb;
	r.cfg.policy_user = &pol;
	ep_start(&n, &i);
	assert_true(run(&n, &i, &r, n.now + 2000 * MS, both_up));
	assert_int_equal(pol.calls, 1);
	ep_free(&i);
	ep_free(&r);

	/* an initiator may use a policy instead of a fixed key */
	net_init(&n, 10);
	ep_init(&i, &r, n.now);
	i.cfg.expected_peer = NULL;
	i.cfg.policy = policy_cb;
	i.cfg.policy_user = &pol;
	pol.calls = 0;
	ep_start(&n, &i);
	assert_true(run(&n, &i, &r, n.now + 2000 * MS, both_up));
	assert_int_equal(pol.calls, 1);
	assert_memory_equal(pol.seen, warp_identity_pubkey(id_r), WARP_PUBKEY_LEN);
	ep_free(&i);
	ep_free(&r);
}

/* Drives one handshake by hand; returns INIT, RESP, FINISH with both sides mid-way. */
struct manual {
	struct warp_hs *i, *r;
	uint8_t init[WARP_HS_OUT_MAX], resp[WARP_HS_OUT_MAX], fin[WARP_HS_OUT_MAX];
	size_t init_len, resp_len, fin_len;
};

static void manual_start(struct manual *m, uint64_t now)
{
	struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
				 .identity = id_i,
				 .expected_peer = warp_identity_pubkey(id_r)};
	struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};

	memset(m, 0, sizeof(*m));
	m->i = warp_hs_new(&ci, now);
	m->r = warp_hs_new(&cr, now);
	assert_non_null(m->i);
	assert_non_null(m->r);
	assert_int_equal(warp_hs_poll(m->i, now, m->init, &m->init_len), 0);
	assert_int_equal(m->init_len, WARP_HS_INIT_LEN);
	assert_int_equal(warp_hs_recv(m->r, m->init, m->init_len, now, m->resp, &m->resp_len), 0);
	assert_int_equal(m->resp_len, WARP_HS_RESP_LEN);
}

static void manual_free(struct manual *m)
{
	warp_hs_free(m->i);
	warp_hs_free(m->r);
}

/* Every single-byte change and every truncation of RESP and FINISH is refused without
 * changing state; the genuine packet still works afterwards. */
static void test_tampered_truncated(void **state)
{
	struct manual m;
	uint8_t bad[WARP_HS_OUT_MAX], out[WARP_HS_OUT_MAX];
	size_t out_len;
	int rc;

	manual_start(&m, T0);
	for (size_t k = 0; k < m.resp_len; k++) {
		memcpy(bad, m.resp, m.resp_len);
		bad[k] ^= 0x01;
		rc = warp_hs_recv(m.i, bad, m.resp_len, T0, out, &out_len);
		assert_true(rc < 0);
		assert_int_equal(out_len, 0);
		assert_int_equal(warp_hs_state(m.i), WARP_HS_WAIT_RESP);
		if (k >= WARP_HDR_LEN + WARP_CID_LEN)
			assert_int_equal(rc, -WARP_EAUTH);
	}
	for (size_t k = 0; k < m.resp_len; k++) {
		rc = warp_hs_recv(m.i, m.resp, k, T0, out, &out_len);
		assert_true(rc == -WARP_ETRUNCATED);
		assert_int_equal(warp_hs_state(m.i), WARP_HS_WAIT_RESP);
	}
	memcpy(bad, m.resp, m.resp_len);
	bad[m.resp_len] = 0;
	assert_int_equal(warp_hs_recv(m.i, bad, m.resp_len + 1, T0, out, &out_len),
			 -WARP_ETRAILING);
	/* the wrong type for the state */
	assert_int_equal(warp_hs_recv(m.i, m.init, m.init_len, T0, out, &out_len), -WARP_ESTATE);

	assert_int_equal(warp_hs_recv(m.i, m.resp, m.resp_len, T0, m.fin, &m.fin_len), 0);
	assert_int_equal(warp_hs_state(m.i), WARP_HS_DONE);
	assert_int_equal(m.fin_len, WARP_HS_FINISH_LEN);

	for (size_t k = 0; k < m.fin_len; k++) {
		memcpy(bad, m.fin, m.fin_len);
		bad[k] ^= 0x80;
		rc = warp_hs_recv(m.r, bad, m.fin_len, T0, out, &out_len);
		assert_true(rc < 0);
		assert_int_equal(warp_hs_state(m.r), WARP_HS_WAIT_FINISH);
		if (k >= WARP_HDR_LEN || (k >= 12 && k < 20))
			assert_int_equal(rc, -WARP_EAUTH);
		if (k >= 4 && k < 12)
			assert_int_equal(rc, -WARP_ENOTFOUND);
	}
	for (size_t k = 0; k < m.fin_len; k++)
		assert_int_equal(warp_hs_recv(m.r, m.fin, k, T0, out, &out_len), -WARP_ETRUNCATED);
	assert_int_equal(warp_hs_recv(m.r, m.fin, m.fin_len, T0, out, &out_len), 0);
	assert_int_equal(warp_hs_state(m.r), WARP_HS_DONE);
	assert_memory_equal(warp_hs_peer_identity(m.r), warp_identity_pubkey(id_i), 33);
	assert_memory_equal(warp_hs_peer_identity(m.i), warp_identity_pubkey(id_r), 33);
	assert_memory_equal(warp_hs_peer_cid(m.i), warp_hs_local_cid(m.r), WARP_CID_LEN);
	assert_memory_equal(warp_hs_peer_cid(m.r), warp_hs_local_cid(m.i), WARP_CID_LEN);

	/* late duplicates are ignored */
	assert_int_equal(warp_hs_recv(m.i, m.resp, m.resp_len, T0, out, &out_len), 0);
	assert_int_equal(out_len, 0);
	assert_int_equal(warp_hs_recv(m.r, m.fin, m.fin_len, T0, out, &out_len), 0);
	assert_int_equal(out_len, 0);
	assert_int_equal(warp_hs_recv(m.r, m.init, m.init_len, T0, out, &out_len), 0);
	assert_int_equal(out_len, 0);
	manual_free(&m);

	/* a changed INIT (the responder signed another transcript) fails the RESP check */
	memset(&m, 0, sizeof(m));
	{
		struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
					 .identity = id_i,
					 .expected_peer = warp_identity_pubkey(id_r)};
		struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};

		m.i = warp_hs_new(&ci, T0);
		m.r = warp_hs_new(&cr, T0);
		warp_hs_poll(m.i, T0, m.init, &m.init_len);
		m.init[WARP_HDR_LEN + 40] ^= 1; /* a byte of the random */
		assert_int_equal(warp_hs_recv(m.r, m.init, m.init_len, T0, m.resp, &m.resp_len), 0);
		assert_int_equal(warp_hs_recv(m.i, m.resp, m.resp_len, T0, out, &out_len),
				 -WARP_EAUTH);
		assert_int_equal(warp_hs_state(m.i), WARP_HS_WAIT_RESP);
		/* and the responder does not answer the genuine INIT with the same ephemeral */
		m.init[WARP_HDR_LEN + 40] ^= 1;
		assert_int_equal(warp_hs_recv(m.r, m.init, m.init_len, T0, out, &out_len),
				 -WARP_ESTATE);
	}
	manual_free(&m);
}

/* A RESP replayed from another handshake, and a FINISH replayed into another handshake. */
static void test_replayed_across_handshakes(void **state)
{
	struct manual a, b;
	uint8_t out[WARP_HS_OUT_MAX];
	size_t out_len;

	manual_start(&a, T0);
	manual_start(&b, T0);
	assert_int_equal(warp_hs_recv(a.i, a.resp, a.resp_len, T0, a.fin, &a.fin_len), 0);
	/* b's initiator sees a's RESP (CID rewritten to b's so it gets past demux) */
	memcpy(a.resp + WARP_CID_OFF, warp_hs_local_cid(b.i), WARP_CID_LEN);
	assert_int_equal(warp_hs_recv(b.i, a.resp, a.resp_len, T0, out, &out_len), -WARP_EAUTH);
	memcpy(a.fin + WARP_CID_OFF, warp_hs_local_cid(b.r), WARP_CID_LEN);
	assert_int_equal(warp_hs_recv(b.r, a.fin, a.fin_len, T0, out, &out_len), -WARP_EAUTH);
	assert_int_equal(warp_hs_state(b.i), WARP_HS_WAIT_RESP);
	assert_int_equal(warp_hs_state(b.r), WARP_HS_WAIT_FINISH);
	manual_free(&a);
	manual_free(&b);
}

static void test_low_order_points(void **state)
{
	struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};
	struct manual m;
	uint8_t out[WARP_HS_OUT_MAX];
	size_t out_len;
	struct warp_hs *r;

	manual_start(&m, T0);
	/* ephemeral replaced by the identity point 0: DH yields zero */
	memset(m.init + WARP_HDR_LEN + WARP_CID_LEN, 0, 32);
	r = warp_hs_new(&cr, T0);
	assert_int_equal(warp_hs_recv(r, m.init, m.init_len, T0, out, &out_len), -WARP_EAUTH);
	assert_int_equal(warp_hs_state(r), WARP_HS_WAIT_INIT);
	memset(m.resp + WARP_HDR_LEN + WARP_CID_LEN, 0, 32);
	assert_int_equal(warp_hs_recv(m.i, m.resp, m.resp_len, T0, out, &out_len), -WARP_EAUTH);
	assert_int_equal(warp_hs_state(m.i), WARP_HS_WAIT_RESP);
	warp_hs_free(r);
	manual_free(&m);
}

static void test_cookie(void **state)
{
	struct warp_cookie_jar *jar = warp_cookie_jar_new();
	struct warp_hs_init_info info;
	struct manual m;
	uint8_t retry[WARP_HS_OUT_MAX], init2[WARP_HS_OUT_MAX], out[WARP_HS_OUT_MAX];
	uint8_t addr[18], other[18];
	size_t init2_len, out_len;
	const uint64_t period = 120000 * MS;
	int rc;

	memset(addr, 1, sizeof(addr));
	memset(other, 2, sizeof(other));
	manual_start(&m, T0);
	/* off by default: every well-formed INIT goes ahead */
	assert_false(warp_cookie_jar_enabled(jar));
	assert_int_equal(warp_cookie_check(jar, m.init, m.init_len, addr, 18, T0, out), 0);
	assert_int_equal(warp_cookie_check(jar, m.init, 10, addr, 18, T0, out), -WARP_ETRUNCATED);

	warp_cookie_jar_set(jar, true);
	rc = warp_cookie_check(jar, m.init, m.init_len, addr, 18, T0, retry);
	assert_int_equal(rc, WARP_HS_RETRY_LEN);
	assert_int_equal(retry[0] & WARP_HDR_TYPE_MASK, WARP_PKT_HS_RETRY);
	assert_memory_equal(retry + WARP_CID_OFF, warp_hs_local_cid(m.i), WARP_CID_LEN);
	/* a RETRY not echoing our ephemeral is refused */
	memcpy(out, retry, WARP_HS_RETRY_LEN);
	out[WARP_HDR_LEN] ^= 1;
	assert_int_equal(warp_hs_recv(m.i, out, WARP_HS_RETRY_LEN, T0, init2, &init2_len),
			 -WARP_EAUTH);
	/* the genuine one makes the initiator repeat INIT at once, with the cookie */
	assert_int_equal(warp_hs_recv(m.i, retry, WARP_HS_RETRY_LEN, T0, init2, &init2_len), 0);
	assert_int_equal(init2_len, WARP_HS_INIT_LEN);
	assert_int_equal(warp_hs_init_peek(init2, init2_len, &info), 0);
	assert_true(info.has_cookie);
	assert_memory_equal(init2 + WARP_HDR_LEN, m.init + WARP_HDR_LEN, 40); /* cid, eph */
	/* a second RETRY is ignored: no loops */
	assert_int_equal(warp_hs_recv(m.i, retry, WARP_HS_RETRY_LEN, T0, out, &out_len),
			 -WARP_EREPLAY);
	assert_int_equal(out_len, 0);

	assert_int_equal(warp_cookie_check(jar, init2, init2_len, addr, 18, T0 + 10 * MS, out), 0);
	/* bound to the address */
	assert_int_equal(warp_cookie_check(jar, init2, init2_len, other, 18, T0, out), -WARP_EAUTH);
	/* valid into the next period, not the one after */
	assert_int_equal(warp_cookie_check(jar, init2, init2_len, addr, 18, T0 + period, out), 0);
	assert_int_equal(warp_cookie_check(jar, init2, init2_len, addr, 18, T0 + 2 * period, out),
			 -WARP_EAUTH);
	/* a forged cookie */
	memcpy(out, init2, init2_len);
	out[WARP_HDR_LEN + 66] ^= 1;
	assert_int_equal(warp_cookie_check(jar, out, init2_len, addr, 18, T0, retry), -WARP_EAUTH);

	/* the cookie INIT completes the handshake with a fresh responder */
	{
		struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};
		struct warp_hs *r = warp_hs_new(&cr, T0);
		uint8_t resp[WARP_HS_OUT_MAX], fin[WARP_HS_OUT_MAX];
		size_t resp_len, fin_len;

		assert_int_equal(warp_hs_recv(r, init2, init2_len, T0, resp, &resp_len), 0);
		assert_int_equal(warp_hs_recv(m.i, resp, resp_len, T0, fin, &fin_len), 0);
		assert_int_equal(warp_hs_recv(r, fin, fin_len, T0, out, &out_len), 0);
		assert_int_equal(warp_hs_state(r), WARP_HS_DONE);
		assert_int_equal(warp_hs_state(m.i), WARP_HS_DONE);
		warp_hs_free(r);
	}
	manual_free(&m);
	warp_cookie_jar_free(jar);
}

/* Cookie mode end to end through a lossy network. */
static void test_cookie_network(void **state)
{
	for (uint64_t seed = 20; seed < 30; seed++) {
		struct net n;
		struct ep i, r;

		net_init(&n, seed);
		n.loss_pct = 15;
		n.jitter_ns = 50 * MS;
		ep_init(&i, &r, n.now);
		warp_cookie_jar_set(r.jar, true);
		ep_start(&n, &i);
		assert_true(run(&n, &i, &r, n.now + 20000 * MS, both_up));
		assert_true(n.sent[1][WARP_PKT_HS_RETRY] >= 1);
		assert_int_equal(r.hs_created, 1); /* no state before the cookie */
		check_peers(&i, &r);
		ep_free(&i);
		ep_free(&r);
	}
}

static void test_timeouts(void **state)
{
	struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
				 .identity = id_i,
				 .expected_peer = warp_identity_pubkey(id_r)};
	struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};
	struct warp_hs *hs = warp_hs_new(&ci, T0);
	uint8_t out[WARP_HS_OUT_MAX];
	size_t out_len;
	unsigned int sent = 0;
	uint64_t now = T0;
	int rc = 0;

	/* nobody answers: sent at 0, 200, 600, 1400, 3000, 6200, 9400 ms, then the 10 s limit */
	while (rc == 0 && now < T0 + 60000 * MS) {
		now = warp_hs_next_timeout(hs);
		rc = warp_hs_poll(hs, now, out, &out_len);
		sent += out_len ? 1 : 0;
	}
	assert_int_equal(rc, -ETIMEDOUT);
	assert_int_equal(now, T0 + 10000 * MS);
	assert_int_equal(sent, 7);
	assert_int_equal(warp_hs_state(hs), WARP_HS_FAILED);
	assert_int_equal(warp_hs_error(hs), -ETIMEDOUT);
	warp_hs_free(hs);

	/* attempts run out before the overall limit */
	ci.max_attempts = 3;
	hs = warp_hs_new(&ci, T0);
	sent = 0;
	rc = 0;
	while (rc == 0) {
		now = warp_hs_next_timeout(hs);
		rc = warp_hs_poll(hs, now, out, &out_len);
		sent += out_len ? 1 : 0;
	}
	assert_int_equal(rc, -ETIMEDOUT);
	assert_int_equal(sent, 3);
	assert_int_equal(now, T0 + 1400 * MS);
	warp_hs_free(hs);

	/* a responder that never gets an INIT, or a FINISH, expires */
	hs = warp_hs_new(&cr, T0);
	assert_int_equal(warp_hs_next_timeout(hs), T0 + 10000 * MS);
	assert_int_equal(warp_hs_poll(hs, T0 + 9999 * MS, out, &out_len), 0);
	assert_int_equal(warp_hs_poll(hs, T0 + 10000 * MS, out, &out_len), -ETIMEDOUT);
	warp_hs_free(hs);
}

static void test_timestamp_skew(void **state)
{
	struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
				 .identity = id_i,
				 .expected_peer = warp_identity_pubkey(id_r),
				 .wall_ms = 1700000000000ull};
	struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r, .max_skew_ms = 60000};
	uint8_t init[WARP_HS_OUT_MAX], out[WARP_HS_OUT_MAX];
	size_t init_len, out_len;
	struct warp_hs_init_info info;
	struct warp_hs *i = warp_hs_new(&ci, T0), *r;

	warp_hs_poll(i, T0, init, &init_len);
	assert_int_equal(warp_hs_init_peek(init, init_len, &info), 0);
	assert_int_equal(info.timestamp_ms, 1700000000000ull);
	assert_memory_equal(info.cid, warp_hs_local_cid(i), WARP_CID_LEN);
	assert_false(info.has_cookie);

	cr.wall_ms = 1700000000000ull + 60001;
	r = warp_hs_new(&cr, T0);
	assert_int_equal(warp_hs_recv(r, init, init_len, T0, out, &out_len), -WARP_ESTALE);
	assert_int_equal(warp_hs_state(r), WARP_HS_WAIT_INIT);
	warp_hs_free(r);
	cr.wall_ms = 1700000000000ull - 60000;
	r = warp_hs_new(&cr, T0);
	assert_int_equal(warp_hs_recv(r, init, init_len, T0, out, &out_len), 0);
	warp_hs_free(r);
	warp_hs_free(i);
}

static void test_init_parse(void **state)
{
	struct manual m;
	struct warp_hs_init_info info;
	uint8_t bad[WARP_HS_OUT_MAX];

	manual_start(&m, T0);
	memcpy(bad, m.init, m.init_len);
	bad[m.init_len - 1] = 1; /* padding must be zero */
	assert_int_equal(warp_hs_init_peek(bad, m.init_len, &info), -WARP_EMALFORMED);
	memcpy(bad, m.init, m.init_len);
	bad[WARP_HDR_LEN + 64] = 5; /* cookie length 0 or 16 only */
	assert_int_equal(warp_hs_init_peek(bad, m.init_len, &info), -WARP_EMALFORMED);
	memcpy(bad, m.init, m.init_len);
	memset(bad + WARP_HDR_LEN, 0, WARP_CID_LEN); /* zero CID */
	assert_int_equal(warp_hs_init_peek(bad, m.init_len, &info), -WARP_EMALFORMED);
	assert_int_equal(warp_hs_init_peek(m.resp, m.resp_len, &info), -WARP_ESTATE);
	assert_int_equal(warp_hs_init_peek(m.init, m.init_len - 1, &info), -WARP_ETRUNCATED);
	manual_free(&m);
}

static void test_bad_config(void **state)
{
	struct warp_hs_cfg c = {.role = WARP_HS_INITIATOR, .identity = id_i};
	uint8_t bogus[WARP_PUBKEY_LEN] = {0x05};

	assert_null(warp_hs_new(&c, T0)); /* initiator states whom it expects */
	assert_int_equal(errno, EINVAL);
	c.expected_peer = bogus;
	assert_null(warp_hs_new(&c, T0));
	c.expected_peer = warp_identity_pubkey(id_r);
	c.identity = NULL;
	assert_null(warp_hs_new(&c, T0));
	assert_null(warp_hs_new(NULL, T0));
	c.identity = id_i;
	c.role = 7;
	assert_null(warp_hs_new(&c, T0));
}

/* Chosen CIDs are used; the INIT header carries the advertised one. */
static void test_cids(void **state)
{
	struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
				 .identity = id_i,
				 .expected_peer = warp_identity_pubkey(id_r),
				 .local_cid = {1, 2, 3, 4, 5, 6, 7, 8},
				 .init_cid = {9, 9, 9, 9, 9, 9, 9, 9}};
	struct warp_hs_cfg cr = {
		.role = WARP_HS_RESPONDER, .identity = id_r, .local_cid = {8, 7, 6, 5, 4, 3, 2, 1}};
	struct warp_hs *i = warp_hs_new(&ci, T0), *r = warp_hs_new(&cr, T0);
	uint8_t a[WARP_HS_OUT_MAX], b[WARP_HS_OUT_MAX];
	size_t al, bl;

	assert_memory_equal(warp_hs_local_cid(i), ci.local_cid, 8);
	assert_null(warp_hs_peer_cid(i));
	assert_null(warp_hs_peer_identity(i));
	warp_hs_poll(i, T0, a, &al);
	assert_memory_equal(a + WARP_CID_OFF, ci.init_cid, 8);
	assert_int_equal(warp_hs_recv(r, a, al, T0, b, &bl), 0);
	assert_memory_equal(b + WARP_CID_OFF, ci.local_cid, 8);
	assert_memory_equal(warp_hs_peer_cid(r), ci.local_cid, 8);
	assert_int_equal(warp_hs_recv(i, b, bl, T0, a, &al), 0);
	assert_memory_equal(a + WARP_CID_OFF, cr.local_cid, 8);
	assert_int_equal(warp_hs_role(i), WARP_HS_INITIATOR);
	assert_int_equal(warp_hs_role(r), WARP_HS_RESPONDER);
	warp_hs_free(i);
	warp_hs_free(r);
}

/* ---- an independent implementation of docs/protocol-handshake.md ---- */

#include <sodium.h>

#define SPEC_NAME "warpgate handshake v1: X25519, ChaCha20-Poly1305, SHA-256, secp256k1"

static void sp_hash2(uint8_t out[32], const uint8_t a[32], const uint8_t *b, size_t blen)
{
	crypto_hash_sha256_state st;

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, a, 32);
	crypto_hash_sha256_update(&st, b, blen);
	crypto_hash_sha256_final(&st, out);
}

static void sp_hmac(uint8_t out[32], const uint8_t *key, size_t klen, const uint8_t *a, size_t alen,
		    const uint8_t *b, size_t blen)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, key, klen);
	crypto_auth_hmacsha256_update(&st, a, alen);
	crypto_auth_hmacsha256_update(&st, b, blen);
	crypto_auth_hmacsha256_final(&st, out);
}

/* HKDF-Expand, one block: T(1) = HMAC(prk, label || 0x01). */
static void sp_expand(uint8_t out[32], const uint8_t prk[32], const char *label)
{
	static const uint8_t one = 1;

	sp_hmac(out, prk, 32, (const uint8_t *)label, strlen(label), &one, 1);
}

static void sp_nonce0(uint8_t n[12])
{
	memset(n, 0, 12);
}

static void sp_sign(const struct warp_identity *id, const char *label, const uint8_t h[32],
		    uint8_t sig[64])
{
	uint8_t msg[128];
	size_t l = strlen(label);

	memcpy(msg, label, l);
	memcpy(msg + l, h, 32);
	memcpy(msg + l + 32, warp_identity_pubkey(id), 33);
	assert_int_equal(warp_identity_sign(id, msg, l + 65, sig), 0);
}

static int sp_verify(const uint8_t pub[33], const char *label, const uint8_t h[32],
		     const uint8_t sig[64])
{
	uint8_t msg[128];
	size_t l = strlen(label);

	memcpy(msg, label, l);
	memcpy(msg + l, h, 32);
	memcpy(msg + l + 32, pub, 33);
	return warp_verify(pub, msg, l + 65, sig);
}

/* The spec as initiator against the library's responder; bad_sig: sign with another key. */
static void spec_initiator(bool bad_sig)
{
	struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};
	struct warp_hs *r = warp_hs_new(&cr, T0);
	uint8_t init[192] = {0}, resp[WARP_HS_OUT_MAX], fin[133], out[WARP_HS_OUT_MAX];
	uint8_t e_sk[32], dh[32], h[32], h2[32], h3[32], hf[32], h4[32], prk[32], ms[32];
	uint8_t k_r[32], k_i[32], i2r[32], r2i[32], ka[32], n[12], blob[97], pkt[64];
	size_t resp_len, out_len;
	struct warp_session *s;
	struct warp_rx_info info;
	int len;

	/* INIT: d1 00 0000 | cid 0 | pn 0 | cid_i | e_i | random | ts | cookie len 0 | padding */
	init[0] = 0xd1;
	memset(init + 20, 0x77, 8);
	randombytes_buf(e_sk, 32);
	crypto_scalarmult_base(init + 28, e_sk);
	randombytes_buf(init + 60, 16);
	warp_put_u64(init + 76, 1700000000000ull);
	assert_int_equal(warp_hs_recv(r, init, 192, T0, resp, &resp_len), 0);
	assert_int_equal(resp_len, 173);
	assert_int_equal(resp[0], 0xd2);
	assert_memory_equal(resp + 4, init + 20, 8); /* to our CID */

	crypto_hash_sha256(h, (const uint8_t *)SPEC_NAME, strlen(SPEC_NAME));
	sp_hash2(h, h, init, 192);
	sp_hash2(h2, h, resp, 60);
	assert_int_equal(crypto_scalarmult(dh, e_sk, resp + 28), 0);
	sp_hmac(prk, h2, 32, dh, 32, NULL, 0);
	sp_expand(k_r, prk, "hs r2i");
	sp_expand(k_i, prk, "hs i2r");
	sp_nonce0(n);
	assert_int_equal(crypto_aead_chacha20poly1305_ietf_decrypt(blob, NULL, NULL, resp + 60, 113,
								   h2, 32, n, k_r),
			 0);
	assert_memory_equal(blob, warp_identity_pubkey(id_r), 33);
	assert_int_equal(sp_verify(blob, "warpgate v1 responder signature", h2, blob + 33), 0);
	sp_hash2(h3, h2, resp + 60, 113);

	memcpy(blob, warp_identity_pubkey(id_i), 33);
	sp_sign(bad_sig ? id_other : id_i, "warpgate v1 initiator signature", h3, blob + 33);
	memset(fin, 0, 20);
	fin[0] = 0xd3;
	memcpy(fin + 4, resp + 20, 8); /* to the responder's CID */
	sp_hash2(hf, h3, fin, 20);
	crypto_aead_chacha20poly1305_ietf_encrypt(fin + 20, NULL, blob, 97, hf, 32, NULL, n, k_i);
	sp_hash2(h4, hf, fin + 20, 113);
	if (bad_sig) {
		assert_int_equal(warp_hs_recv(r, fin, 133, T0, out, &out_len), -WARP_EAUTH);
		assert_int_equal(warp_hs_state(r), WARP_HS_WAIT_FINISH);
		warp_hs_free(r);
		return;
	}
	assert_int_equal(warp_hs_recv(r, fin, 133, T0, out, &out_len), 0);
	assert_int_equal(warp_hs_state(r), WARP_HS_DONE);
	assert_memory_equal(warp_hs_peer_identity(r), warp_identity_pubkey(id_i), 33);

	sp_hmac(ms, h4, 32, prk, 32, NULL, 0);
	sp_expand(i2r, ms, "data i2r");
	sp_expand(r2i, ms, "data r2i");
	sp_expand(ka, ms, "keepalive");
	s = warp_session_new(r, NULL, T0);
	/* the responder's confirmation: a bare ACK, pn 0, sealed with r2i, header as AD */
	len = warp_session_poll(s, T0, pkt, sizeof(pkt));
	assert_int_equal(len, 36);
	assert_int_equal(pkt[0], 0xd5);
	assert_int_equal(crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, pkt + 20, 16,
								   pkt, 20, n, r2i),
			 0);
	/* our DATA, pn 5, nonce 0^4 || pn */
	memset(pkt, 0, 20);
	pkt[0] = 0xd4;
	memcpy(pkt + 4, resp + 20, 8);
	pkt[19] = 5;
	n[11] = 5;
	crypto_aead_chacha20poly1305_ietf_encrypt(pkt + 20, NULL, (const uint8_t *)"spec", 4, pkt,
						  20, NULL, n, i2r);
	assert_int_equal(warp_session_open(s, pkt, 40, out, sizeof(out), T0, &info), 4);
	assert_memory_equal(out, "spec", 4);
	assert_int_equal(info.pn, 5);
	/* keepalive: BLAKE2b-128 keyed with the keepalive key over header || nonce */
	memset(pkt, 0, 44);
	pkt[0] = 0xd6;
	memcpy(pkt + 4, resp + 20, 8);
	memset(pkt + 20, 0x33, 8);
	crypto_generichash(pkt + 28, 16, pkt, 28, ka, 32);
	assert_int_equal(warp_session_answer_ping(s, pkt, 44), 0);
	assert_int_equal(pkt[0], 0xd7);
	assert_memory_equal(pkt + 4, init + 20, 8);
	/* key update: HKDF-Expand(key, "key update") */
	{
		uint8_t k1[32];

		sp_expand(k1, i2r, "key update");
		memset(pkt, 0, 20);
		pkt[0] = 0xd4;
		pkt[1] = 1;
		memcpy(pkt + 4, resp + 20, 8);
		pkt[19] = 6;
		n[11] = 6;
		crypto_aead_chacha20poly1305_ietf_encrypt(pkt + 20, NULL, (const uint8_t *)"next",
							  4, pkt, 20, NULL, n, k1);
		assert_int_equal(warp_session_open(s, pkt, 40, out, sizeof(out), T0, &info), 4);
		assert_true(info.key_updated);
	}
	warp_session_free(s);
	warp_hs_free(r);
}

/* The spec as responder against the library's initiator. */
static void spec_responder(bool bad_sig)
{
	struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
				 .identity = id_i,
				 .expected_peer = warp_identity_pubkey(id_r)};
	struct warp_hs *i = warp_hs_new(&ci, T0);
	uint8_t init[WARP_HS_OUT_MAX], resp[173] = {0}, fin[WARP_HS_OUT_MAX];
	uint8_t e_sk[32], dh[32], h[32], h2[32], h3[32], hf[32], prk[32], k_r[32], k_i[32];
	uint8_t n[12], blob[97];
	size_t init_len, fin_len;

	assert_int_equal(warp_hs_poll(i, T0, init, &init_len), 0);
	resp[0] = 0xd2;
	memcpy(resp + 4, init + 20, 8);
	memset(resp + 20, 0x66, 8);
	randombytes_buf(e_sk, 32);
	crypto_scalarmult_base(resp + 28, e_sk);
	crypto_hash_sha256(h, (const uint8_t *)SPEC_NAME, strlen(SPEC_NAME));
	sp_hash2(h, h, init, 192);
	sp_hash2(h2, h, resp, 60);
	assert_int_equal(crypto_scalarmult(dh, e_sk, init + 28), 0);
	sp_hmac(prk, h2, 32, dh, 32, NULL, 0);
	sp_expand(k_r, prk, "hs r2i");
	sp_expand(k_i, prk, "hs i2r");
	memcpy(blob, warp_identity_pubkey(id_r), 33);
	/* a signature by someone else over the right transcript, claiming id_r */
	sp_sign(bad_sig ? id_other : id_r, "warpgate v1 responder signature", h2, blob + 33);
	sp_nonce0(n);
	crypto_aead_chacha20poly1305_ietf_encrypt(resp + 60, NULL, blob, 97, h2, 32, NULL, n, k_r);
	sp_hash2(h3, h2, resp + 60, 113);
	if (bad_sig) {
		assert_int_equal(warp_hs_recv(i, resp, 173, T0, fin, &fin_len), -WARP_EAUTH);
		assert_int_equal(fin_len, 0);
		assert_int_equal(warp_hs_state(i), WARP_HS_WAIT_RESP);
		warp_hs_free(i);
		return;
	}
	assert_int_equal(warp_hs_recv(i, resp, 173, T0, fin, &fin_len), 0);
	assert_int_equal(fin_len, 133);
	assert_memory_equal(fin + 4, resp + 20, 8);
	sp_hash2(hf, h3, fin, 20);
	assert_int_equal(crypto_aead_chacha20poly1305_ietf_decrypt(blob, NULL, NULL, fin + 20, 113,
								   hf, 32, n, k_i),
			 0);
	assert_memory_equal(blob, warp_identity_pubkey(id_i), 33);
	assert_int_equal(sp_verify(blob, "warpgate v1 initiator signature", h3, blob + 33), 0);
	warp_hs_free(i);
}

static void test_spec_interop(void **state)
{
	spec_initiator(false);
	spec_initiator(true);
	spec_responder(false);
	spec_responder(true);
}

static int setup(void **state)
{
	uint8_t sk[32];

	memset(sk, 0x11, 32);
	id_i = warp_identity_from_secret(sk);
	memset(sk, 0x22, 32);
	id_r = warp_identity_from_secret(sk);
	memset(sk, 0x33, 32);
	id_other = warp_identity_from_secret(sk);
	return id_i && id_r && id_other ? 0 : -1;
}

static int teardown(void **state)
{
	warp_identity_free(id_i);
	warp_identity_free(id_r);
	warp_identity_free(id_other);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean),
		cmocka_unit_test(test_lossy_network),
		cmocka_unit_test(test_init_backoff),
		cmocka_unit_test(test_resp_lost),
		cmocka_unit_test(test_finish_lost),
		cmocka_unit_test(test_data_before_finish),
		cmocka_unit_test(test_wrong_identity),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_tampered_truncated),
		cmocka_unit_test(test_replayed_across_handshakes),
		cmocka_unit_test(test_low_order_points),
		cmocka_unit_test(test_cookie),
		cmocka_unit_test(test_cookie_network),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_timestamp_skew),
		cmocka_unit_test(test_init_parse),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_cids),
		cmocka_unit_test(test_spec_interop),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
