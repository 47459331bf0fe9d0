// SPDX-License-Identifier: MIT
/* Session: seal/open, rejection of bad packets, replay window, key updates, keepalive, probes. */
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

#include "core/bytes.h"
#include "pipe/frame.h"
#include "pipe/handshake.h"
#include "pipe/keepalive.h"
#include "pipe/session.h"

#define MS 1000000ull
#define S  1000000000ull
#define T0 (5 * S)

static struct warp_identity *id_i, *id_r;
static uint64_t rng = 0x0123456789abcdefull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct pair {
	struct warp_session *i, *r;
};

/* A finished handshake, the responder's confirmation delivered. */
static void pair_new(struct pair *p, const struct warp_session_cfg *cfg, uint64_t now)
{
	struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
				 .identity = id_i,
				 .expected_peer = warp_identity_pubkey(id_r)};
	struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};
	struct warp_hs *hi = warp_hs_new(&ci, now), *hr = warp_hs_new(&cr, now);
	uint8_t a[WARP_HS_OUT_MAX], b[WARP_HS_OUT_MAX];
	size_t al, bl;
	struct warp_rx_info info;
	int n;

	assert_int_equal(warp_hs_poll(hi, now, a, &al), 0);
	assert_int_equal(warp_hs_recv(hr, a, al, now, b, &bl), 0);
	assert_int_equal(warp_hs_recv(hi, b, bl, now, a, &al), 0);
	assert_int_equal(warp_hs_recv(hr, a, al, now, b, &bl), 0);
	p->i = warp_session_new(hi, cfg, now);
	p->r = warp_session_new(hr, cfg, now);
	assert_non_null(p->i);
	assert_non_null(p->r);
	warp_hs_free(hi);
	warp_hs_free(hr);
	assert_false(warp_session_confirmed(p->i));
	assert_true(warp_session_confirmed(p->r));
	assert_int_equal(warp_session_next_timeout(p->r), 0);
	n = warp_session_poll(p->r, now, a, sizeof(a));
	assert_int_equal(n, WARP_SESSION_OVERHEAD); /* a bare ACK */
	assert_int_equal(warp_session_poll(p->r, now, b, sizeof(b)), 0);
	assert_int_equal(warp_session_open(p->i, a, (size_t)n, b, sizeof(b), now, &info), 0);
	assert_int_equal(info.type, WARP_PKT_ACK);
	assert_true(warp_session_confirmed(p->i));
	assert_int_equal(warp_session_next_timeout(p->i), UINT64_MAX);
}

static void pair_free(struct pair *p)
{
	warp_session_free(p->i);
	warp_session_free(p->r);
}

static void test_roundtrip(void **state)
{
	static uint8_t pkt[WARP_PKT_MAX + 16], out[WARP_PKT_MAX], msg[WARP_PKT_MAX];
	static const size_t sizes[] = {0, 1, 100, 1200, 1400, 65535 - WARP_SESSION_OVERHEAD};
	static const uint8_t types[] = {WARP_PKT_DATA, WARP_PKT_ACK, WARP_PKT_CLOSE};
	struct warp_rx_info info;
	struct warp_session_stats st;
	struct pair p;
	uint64_t pn = 1; /* the responder used pn 0 for its confirmation */
	int n;

	pair_new(&p, NULL, T0);
	for (size_t k = 0; k < sizeof(msg); k++)
		msg[k] = (uint8_t)(k * 7);
	for (size_t k = 0; k < WARP_ARRAY_SIZE(sizes); k++) {
		uint8_t t = types[k % 3];

		/* initiator -> responder */
		n = warp_session_seal(p.i, t, msg, sizes[k], pkt, sizeof(pkt), T0);
		assert_int_equal(n, sizes[k] + WARP_SESSION_OVERHEAD);
		assert_int_equal(pkt[0], 0xd0 | t);
		assert_memory_equal(pkt + WARP_CID_OFF, warp_session_local_cid(p.r), WARP_CID_LEN);
		assert_int_equal(warp_get_u64(pkt + WARP_PN_OFF), k);
		if (sizes[k] >= 16)
			assert_memory_not_equal(pkt + WARP_HDR_LEN, msg, 16); /* encrypted */
		assert_int_equal(
			warp_session_open(p.r, pkt, (size_t)n, out, sizeof(out), T0, &info),
			sizes[k]);
		assert_int_equal(info.type, t);
		assert_int_equal(info.pn, k);
		assert_false(info.key_updated);
		assert_memory_equal(out, msg, sizes[k]);
		/* responder -> initiator, sealed and opened in place */
		memcpy(pkt + WARP_HDR_LEN, msg, sizes[k]);
		n = warp_session_seal(p.r, t, pkt + WARP_HDR_LEN, sizes[k], pkt, sizeof(pkt), T0);
		assert_int_equal(warp_get_u64(pkt + WARP_PN_OFF), pn++);
		assert_int_equal(warp_session_open(p.i, pkt, (size_t)n, pkt + WARP_HDR_LEN,
						   sizeof(pkt) - WARP_HDR_LEN, T0, &info),
				 sizes[k]);
		assert_memory_equal(pkt + WARP_HDR_LEN, msg, sizes[k]);
	}
	/* limits */
	assert_int_equal(
		warp_session_seal(p.i, WARP_PKT_DATA, msg, 65535 - 35, pkt, sizeof(pkt), T0),
		-EMSGSIZE);
	assert_int_equal(warp_session_seal(p.i, WARP_PKT_DATA, msg, 10, pkt, 45, T0), -EMSGSIZE);
	assert_int_equal(warp_session_seal(p.i, WARP_PKT_PING, msg, 10, pkt, sizeof(pkt), T0),
			 -EINVAL);
	assert_int_equal(warp_session_seal(p.i, WARP_PKT_HS_FINISH, msg, 10, pkt, sizeof(pkt), T0),
			 -EINVAL);
	warp_session_stats(p.i, &st);
	assert_int_equal(st.sealed, WARP_ARRAY_SIZE(sizes));
	assert_int_equal(st.next_pn, WARP_ARRAY_SIZE(sizes));
	pair_free(&p);
}

/* Everything the receiver can observe; rejected packets must leave it as it was. */
static void snapshot(struct warp_session *s, struct warp_session_stats *st)
{
	warp_session_stats(s, st);
	st->rej_auth = st->rej_replay = st->rej_stale = st->rej_other = 0;
}

static void test_reject_bad(void **state)
{
	uint8_t pkt[256], bad[256], out[256];
	struct warp_session_stats before, after;
	struct warp_rx_info info;
	struct pair p;
	int n, rc;

	pair_new(&p, NULL, T0);
	n = warp_session_seal(p.i, WARP_PKT_DATA, "0123456789abcdef0123456789abcdef", 32, pkt,
			      sizeof(pkt), T0);
	snapshot(p.r, &before);
	/* every single-bit change anywhere */
	for (int k = 0; k < n * 8; k++) {
		memcpy(bad, pkt, (size_t)n);
		bad[k / 8] ^= (uint8_t)(1 << (k % 8));
		rc = warp_session_open(p.r, bad, (size_t)n, out, sizeof(out), T0, &info);
		assert_true(rc < 0);
		if (k / 8 >= 12) /* packet number, ciphertext, tag */
			assert_int_equal(rc, -WARP_EAUTH);
		else if (k / 8 >= 4)
			assert_int_equal(rc, -WARP_ENOTFOUND);
	}
	/* the phase bit is authenticated too: a flipped bit does not rotate keys */
	memcpy(bad, pkt, (size_t)n);
	bad[1] ^= WARP_PHASE_KEY;
	assert_int_equal(warp_session_open(p.r, bad, (size_t)n, out, sizeof(out), T0, &info),
			 -WARP_EAUTH);
	/* truncated */
	for (int k = 0; k < n; k++) {
		rc = warp_session_open(p.r, pkt, (size_t)k, out, sizeof(out), T0, &info);
		assert_int_equal(rc, k < WARP_SESSION_OVERHEAD ? -WARP_ETRUNCATED : -WARP_EAUTH);
	}
	/* wrong type: a keepalive, a handshake packet, an unknown type */
	memcpy(bad, pkt, (size_t)n);
	bad[0] = WARP_HDR_FLAGS(WARP_PKT_PING);
	assert_int_equal(warp_session_open(p.r, bad, (size_t)n, out, sizeof(out), T0, &info),
			 -WARP_ESTATE);
	bad[0] = WARP_HDR_FLAGS(WARP_PKT_HS_FINISH);
	assert_int_equal(warp_session_open(p.r, bad, (size_t)n, out, sizeof(out), T0, &info),
			 -WARP_ESTATE);
	bad[0] = WARP_HDR_FLAGS(0xe);
	assert_int_equal(warp_session_open(p.r, bad, (size_t)n, out, sizeof(out), T0, &info),
			 -WARP_EMALFORMED);
	bad[0] = 0xe4; /* version 2 */
	assert_int_equal(warp_session_open(p.r, bad, (size_t)n, out, sizeof(out), T0, &info),
			 -WARP_EVERSION);
	/* a DATA sealed as ACK: the type is in the additional data */
	memcpy(bad, pkt, (size_t)n);
	bad[0] = WARP_HDR_FLAGS(WARP_PKT_ACK);
	assert_int_equal(warp_session_open(p.r, bad, (size_t)n, out, sizeof(out), T0, &info),
			 -WARP_EAUTH);
	/* our own packet reflected back: other CID, and other key even with the CID patched */
	assert_int_equal(warp_session_open(p.i, pkt, (size_t)n, out, sizeof(out), T0, &info),
			 -WARP_ENOTFOUND);
	assert_int_equal(warp_session_seal(p.i, WARP_PKT_DATA, "x", 1, bad, sizeof(bad), T0), 37);
	memcpy(bad + WARP_CID_OFF, warp_session_local_cid(p.i), WARP_CID_LEN);
	assert_int_equal(warp_session_open(p.i, bad, 37, out, sizeof(out), T0, &info), -WARP_EAUTH);
	/* output too small */
	assert_int_equal(warp_session_open(p.r, pkt, (size_t)n, out, 31, T0, &info), -EMSGSIZE);

	snapshot(p.r, &after);
	assert_memory_equal(&before, &after, sizeof(before));
	warp_session_stats(p.r, &after);
	assert_true(after.rej_auth > 0 && after.rej_other > 0);

	/* the genuine packet still opens, once */
	assert_int_equal(warp_session_open(p.r, pkt, (size_t)n, out, sizeof(out), T0, &info), 32);
	assert_memory_equal(out, "0123456789abcdef0123456789abcdef", 32);
	assert_int_equal(warp_session_open(p.r, pkt, (size_t)n, out, sizeof(out), T0, &info),
			 -WARP_EREPLAY);
	pair_free(&p);
}

#define NPKT 10000
struct stash {
	uint8_t b[NPKT][WARP_SESSION_OVERHEAD + 8];
};

static void seal_many(struct warp_session *s, struct stash *st, size_t n, uint64_t now)
{
	for (size_t k = 0; k < n; k++) {
		uint8_t payload[8];

		warp_put_u64(payload, k);
		assert_int_equal(warp_session_seal(s, WARP_PKT_DATA, payload, 8, st->b[k],
						   sizeof(st->b[k]), now),
				 sizeof(st->b[k]));
	}
}

static int deliver(struct warp_session *s, struct stash *st, uint64_t pn, uint64_t now)
{
	uint8_t out[16];
	int rc = warp_session_open(s, st->b[pn], sizeof(st->b[pn]), out, sizeof(out), now, NULL);

	if (rc >= 0) {
		assert_int_equal(rc, 8);
		assert_int_equal(warp_get_u64(out), pn);
	}
	return rc;
}

static void test_replay_window(void **state)
{
	struct stash *st = malloc(sizeof(*st));
	struct pair p;
	struct warp_session_stats ss;

	pair_new(&p, NULL, T0);
	seal_many(p.i, st, NPKT, T0);

	assert_int_equal(deliver(p.r, st, 3000, T0), 8);
	/* the window is 2048 packets: top - 2047 is the oldest accepted */
	assert_int_equal(deliver(p.r, st, 3000 - 2047, T0), 8);
	assert_int_equal(deliver(p.r, st, 3000 - 2048, T0), -WARP_ESTALE);
	assert_int_equal(deliver(p.r, st, 0, T0), -WARP_ESTALE);
	assert_int_equal(deliver(p.r, st, 3000, T0), -WARP_EREPLAY);
	assert_int_equal(deliver(p.r, st, 3000 - 2047, T0), -WARP_EREPLAY);
	/* reordering inside the window: every packet once, in any order */
	for (uint64_t k = 2999; k > 3000 - 2047; k--)
		assert_int_equal(deliver(p.r, st, k, T0), 8);
	for (uint64_t k = 3000 - 2047; k <= 3000; k++)
		assert_int_equal(deliver(p.r, st, k, T0), -WARP_EREPLAY);
	/* the window slides with the top */
	assert_int_equal(deliver(p.r, st, 3100, T0), 8);
	assert_int_equal(deliver(p.r, st, 3100 - 2048, T0), -WARP_ESTALE);
	assert_int_equal(deliver(p.r, st, 3050, T0), 8);
	assert_int_equal(deliver(p.r, st, 3050, T0), -WARP_EREPLAY);
	/* a jump of more than a window forgets everything below */
	assert_int_equal(deliver(p.r, st, 9000, T0), 8);
	assert_int_equal(deliver(p.r, st, 9000 - 2047, T0), 8);
	assert_int_equal(deliver(p.r, st, 9000 - 2048, T0), -WARP_ESTALE);
	assert_int_equal(deliver(p.r, st, 3100, T0), -WARP_ESTALE);
	for (uint64_t k = 8999; k > 9000 - 2047; k--)
		assert_int_equal(deliver(p.r, st, k, T0), 8);
	warp_session_stats(p.r, &ss);
	assert_int_equal(ss.rx_top, 9000);
	pair_free(&p);

	/* bitmap slot reuse at word boundaries: 100 must still count as seen when the top is
	 * 2147 (exactly 2047 above it), whose 64-bit word would share a slot in a 32-word ring */
	pair_new(&p, NULL, T0);
	seal_many(p.i, st, 2200, T0);
	assert_int_equal(deliver(p.r, st, 100, T0), 8);
	assert_int_equal(deliver(p.r, st, 2100, T0), 8);
	assert_int_equal(deliver(p.r, st, 2147, T0), 8);
	assert_int_equal(deliver(p.r, st, 100, T0), -WARP_EREPLAY);
	assert_int_equal(deliver(p.r, st, 101, T0), 8);
	assert_int_equal(deliver(p.r, st, 99, T0), -WARP_ESTALE);
	/* random order with duplicates over a sliding top: each packet accepted exactly once */
	{
		static uint8_t seen[2200];

		memset(seen, 0, sizeof(seen));
		seen[100] = seen[101] = seen[2100] = seen[2147] = 1;
		for (int k = 0; k < 20000; k++) {
			uint64_t pn = 150 + rnd() % 1900;
			int rc = deliver(p.r, st, pn, T0);

			assert_int_equal(rc, seen[pn] ? -WARP_EREPLAY : 8);
			seen[pn] = 1;
		}
	}
	pair_free(&p);
	free(st);
}

/* One direction's packets in flight, shuffled locally: a packet moves at most `spread`
 * places, like reordering on a real path. */
static void shuffle_near(uint32_t *order, size_t n, size_t spread)
{
	for (size_t k = 0; k + 1 < n; k++) {
		size_t j = k + rnd() % (spread + 1);

		if (j >= n)
			j = n - 1;
		uint32_t t = order[k];
		order[k] = order[j];
		order[j] = t;
	}
}

struct flight {
	uint8_t b[64][WARP_SESSION_OVERHEAD + 8];
	uint32_t order[64];
	size_t n;
};

static void fly(struct warp_session *from, struct flight *f, size_t n, uint64_t now, uint64_t tag)
{
	for (size_t k = 0; k < n; k++) {
		uint8_t payload[8];

		warp_put_u64(payload, tag + k);
		assert_true(warp_session_seal(from, WARP_PKT_DATA, payload, 8, f->b[k],
					      sizeof(f->b[0]), now) > 0);
		f->order[k] = (uint32_t)k;
	}
	f->n = n;
	shuffle_near(f->order, n, 6);
}

static unsigned int land(struct warp_session *to, struct flight *f, uint64_t now, uint64_t tag,
			 unsigned int *updates, unsigned int drop_pct, unsigned int *dropped)
{
	unsigned int ok = 0;

	for (size_t k = 0; k < f->n; k++) {
		if (drop_pct && rnd() % 100 < drop_pct) {
			(*dropped)++;
			continue;
		}
		struct warp_rx_info info;
		uint8_t out[16];
		uint32_t idx = f->order[k];
		int rc = warp_session_open(to, f->b[idx], sizeof(f->b[0]), out, sizeof(out), now,
					   &info);

		assert_int_equal(rc, 8);
		assert_int_equal(warp_get_u64(out), tag + idx);
		ok++;
		*updates += info.key_updated;
	}
	return ok;
}

/* Small limits, traffic both ways, every flight reordered and optionally thinned: keys
 * rotate many times and no delivered packet is lost to a rotation. */
static void rotation_run(uint64_t rekey_packets, unsigned int drop_pct)
{
	struct warp_session_cfg cfg = {.rekey_packets = rekey_packets};
	struct warp_session_stats si, sr;
	struct flight *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	unsigned int got = 0, upd_r = 0, upd_i = 0, dropped = 0;
	uint64_t now = T0, tag = 0;
	struct pair p;

	pair_new(&p, &cfg, now);
	for (int round = 0; round < 300; round++) {
		size_t na = 1 + rnd() % 40, nb = 1 + rnd() % 10;

		now += 10 * MS;
		fly(p.i, a, na, now, tag);
		fly(p.r, b, nb, now, tag + 1000000);
		/* interleave the two directions differently each round */
		if (round % 2) {
			got += land(p.r, a, now, tag, &upd_r, drop_pct, &dropped);
			got += land(p.i, b, now, tag + 1000000, &upd_i, drop_pct, &dropped);
		} else {
			got += land(p.i, b, now, tag + 1000000, &upd_i, drop_pct, &dropped);
			got += land(p.r, a, now, tag, &upd_r, drop_pct, &dropped);
		}
		tag += 100;
	}
	warp_session_stats(p.i, &si);
	warp_session_stats(p.r, &sr);
	assert_int_equal(si.rej_auth + si.rej_stale + si.rej_replay + si.rej_other, 0);
	assert_int_equal(sr.rej_auth + sr.rej_stale + sr.rej_replay + sr.rej_other, 0);
	assert_int_equal(got + dropped, si.sealed + sr.sealed - 1); /* minus the confirmation */
	print_message("rekey %llu drop %u%%: phases %llu/%llu, %u delivered, %u dropped\n",
		      (unsigned long long)rekey_packets, drop_pct,
		      (unsigned long long)si.send_phase, (unsigned long long)sr.send_phase, got,
		      dropped);
	assert_true(si.send_phase >= 6000 / rekey_packets / 2 || si.send_phase >= 150);
	/* a receiver is at most one behind (a follower may not have sent in its new phase) */
	assert_true(sr.recv_phase == si.send_phase || sr.recv_phase + 1 == si.send_phase);
	assert_true(si.recv_phase == sr.send_phase || si.recv_phase + 1 == sr.send_phase);
	if (!drop_pct) {
		assert_int_equal(upd_r, sr.recv_phase);
		assert_int_equal(upd_i, si.recv_phase);
	}
	assert_true(si.send_phase <= sr.send_phase + 1 && sr.send_phase <= si.send_phase + 1);
	pair_free(&p);
	free(a);
	free(b);
}

static void test_key_rotation(void **state)
{
	rotation_run(50, 0);
	rotation_run(8, 25);
	rotation_run(3, 40);
}

/* The peer followed our update, all its packets of that phase were lost, and it updated
 * again: its packets now carry our current phase bit but need the key after next. */
static void test_skipped_phase(void **state)
{
	uint8_t a[64], b[4][64], c[64], bad[64], out[64];
	struct warp_session_stats st;
	struct warp_rx_info info;
	struct pair p;
	int na, nb[4], nc;

	pair_new(&p, NULL, T0);
	assert_int_equal(warp_session_key_update(p.i, T0), 0); /* initiator: phase 1 */
	na = warp_session_seal(p.i, WARP_PKT_DATA, "a", 1, a, sizeof(a), T0);
	assert_int_equal(warp_session_open(p.r, a, (size_t)na, out, sizeof(out), T0, &info), 1);
	assert_true(info.key_updated);
	for (int k = 0; k < 4; k++) /* responder's phase 1: all lost */
		nb[k] = warp_session_seal(p.r, WARP_PKT_DATA, "b", 1, b[k], sizeof(b[k]), T0);
	assert_int_equal(b[0][1], 1);
	assert_int_equal(warp_session_key_update(p.r, T0), 0); /* responder: phase 2 */
	nc = warp_session_seal(p.r, WARP_PKT_DATA, "c", 1, c, sizeof(c), T0);
	assert_int_equal(c[1], 0);

	/* a forgery in the same position costs two trials and changes nothing */
	memcpy(bad, c, (size_t)nc);
	bad[nc - 1] ^= 1;
	assert_int_equal(warp_session_open(p.i, bad, (size_t)nc, out, sizeof(out), T0, &info),
			 -WARP_EAUTH);
	warp_session_stats(p.i, &st);
	assert_int_equal(st.recv_phase, 0);

	/* in place, to be sure the first failed trial does not destroy the ciphertext */
	memcpy(bad, c, (size_t)nc);
	assert_int_equal(warp_session_open(p.i, bad, (size_t)nc, bad + WARP_HDR_LEN,
					   sizeof(bad) - WARP_HDR_LEN, T0, &info),
			 1);
	assert_int_equal(bad[WARP_HDR_LEN], 'c');
	assert_true(info.key_updated);
	warp_session_stats(p.i, &st);
	assert_int_equal(st.recv_phase, 2);
	assert_int_equal(st.send_phase, 2); /* followed */
	/* a straggler of the lost phase still opens with the previous key */
	assert_int_equal(warp_session_open(p.i, b[2], (size_t)nb[2], out, sizeof(out), T0, &info),
			 1);
	assert_false(info.key_updated);
	/* and traffic continues both ways */
	na = warp_session_seal(p.i, WARP_PKT_DATA, "d", 1, a, sizeof(a), T0);
	assert_int_equal(a[1], 0);
	assert_int_equal(warp_session_open(p.r, a, (size_t)na, out, sizeof(out), T0, &info), 1);
	assert_true(info.key_updated); /* the responder's receive side catches up */
	warp_session_stats(p.r, &st);
	assert_int_equal(st.recv_phase, 2);
	assert_int_equal(st.send_phase, 2);
	pair_free(&p);
}

/* Old-phase packets after the flip: accepted during the grace period, then refused. */
static void test_prev_key_grace(void **state)
{
	struct warp_session_cfg cfg = {.prev_key_ns = 2 * S};
	struct stash *st = malloc(sizeof(*st));
	struct warp_session_stats ss;
	struct pair p;
	uint8_t ack[64], out[64];
	int n;

	pair_new(&p, &cfg, T0);
	/* the responder has heard nothing from the initiator yet: it cannot update */
	assert_int_equal(warp_session_key_update(p.r, T0), -EAGAIN);
	seal_many(p.i, st, 4, T0);				     /* phase 0: pn 0..3 */
	assert_int_equal(warp_session_key_update(p.i, T0), 0);	     /* initiator flips */
	assert_int_equal(warp_session_key_update(p.i, T0), -EAGAIN); /* not again yet */
	n = warp_session_seal(p.i, WARP_PKT_DATA, "new", 3, ack, sizeof(ack), T0);
	assert_int_equal(ack[1], 1); /* phase bit set */
	assert_int_equal(warp_get_u64(ack + WARP_PN_OFF), 4);

	assert_int_equal(deliver(p.r, st, 0, T0), 8);
	{
		struct warp_rx_info info;

		assert_int_equal(
			warp_session_open(p.r, ack, (size_t)n, out, sizeof(out), T0, &info), 3);
		assert_true(info.key_updated);
	}
	warp_session_stats(p.r, &ss);
	assert_int_equal(ss.recv_phase, 1);
	assert_int_equal(ss.send_phase, 1);		      /* the responder followed */
	assert_int_equal(deliver(p.r, st, 2, T0 + 1 * S), 8); /* late, old phase, in grace */
	assert_int_equal(warp_session_next_timeout(p.r), T0 + 2 * S);
	assert_int_equal(deliver(p.r, st, 1, T0 + 2 * S), -WARP_ESTALE); /* grace is over */
	assert_int_equal(warp_session_poll(p.r, T0 + 2 * S, out, sizeof(out)), 0);
	assert_int_equal(warp_session_next_timeout(p.r), UINT64_MAX); /* previous key wiped */
	assert_int_equal(deliver(p.r, st, 3, T0 + 3 * S), -WARP_ESTALE);

	/* the responder's next packet carries phase 1; the initiator may then update again */
	n = warp_session_seal(p.r, WARP_PKT_ACK, NULL, 0, ack, sizeof(ack), T0 + 3 * S);
	assert_int_equal(ack[1], 1);
	assert_int_equal(warp_session_open(p.i, ack, (size_t)n, out, sizeof(out), T0 + 3 * S, NULL),
			 0);
	assert_int_equal(warp_session_key_update(p.i, T0 + 3 * S), 0);
	pair_free(&p);
	free(st);
}

/* Limits by time and by bytes. */
static void test_rekey_limits(void **state)
{
	struct warp_session_cfg cfg = {.rekey_ns = 1 * S, .rekey_bytes = 1000};
	struct warp_session_stats ss;
	uint8_t pkt[700], out[700], payload[600] = {0};
	struct pair p;
	int n;

	pair_new(&p, &cfg, T0);
	n = warp_session_seal(p.i, WARP_PKT_DATA, "x", 1, pkt, sizeof(pkt), T0 + 999 * MS);
	assert_int_equal(pkt[1], 0);
	assert_int_equal(warp_session_open(p.r, pkt, (size_t)n, out, sizeof(out), T0, NULL), 1);
	n = warp_session_seal(p.i, WARP_PKT_DATA, "x", 1, pkt, sizeof(pkt), T0 + 1000 * MS);
	assert_int_equal(pkt[1], 1); /* a second later: new phase */
	assert_int_equal(
		warp_session_open(p.r, pkt, (size_t)n, out, sizeof(out), T0 + 1000 * MS, NULL), 1);
	/* the responder followed just now: its own timer restarted */
	n = warp_session_seal(p.r, WARP_PKT_DATA, "y", 1, pkt, sizeof(pkt), T0 + 1000 * MS);
	assert_int_equal(pkt[1], 1);
	assert_int_equal(
		warp_session_open(p.i, pkt, (size_t)n, out, sizeof(out), T0 + 1000 * MS, NULL), 1);
	/* bytes: 600 fit, the next 600 would cross 1000 */
	n = warp_session_seal(p.i, WARP_PKT_DATA, payload, 600, pkt, sizeof(pkt), T0 + 1001 * MS);
	assert_int_equal(pkt[1], 1);
	n = warp_session_seal(p.i, WARP_PKT_DATA, payload, 600, pkt, sizeof(pkt), T0 + 1002 * MS);
	assert_int_equal(pkt[1], 0);
	warp_session_stats(p.i, &ss);
	assert_int_equal(ss.send_phase, 2);
	pair_free(&p);
}

static void test_ping_pong(void **state)
{
	uint8_t ping[WARP_PING_LEN], pong[WARP_PING_LEN], kernel[WARP_PING_LEN];
	uint8_t bad[WARP_PING_LEN], old[WARP_PING_LEN];
	uint64_t rtt = 0;
	struct pair p, q;

	pair_new(&p, NULL, T0);
	pair_new(&q, NULL, T0);
	assert_int_equal(warp_session_ping(p.i, T0, ping), WARP_PING_LEN);
	assert_int_equal(ping[0], 0xd6);
	assert_memory_equal(ping + WARP_CID_OFF, warp_session_local_cid(p.r), WARP_CID_LEN);

	/* what the kernel does: no keys, byte 0 and the CID change, nothing else */
	memcpy(kernel, ping, sizeof(ping));
	assert_int_equal(warp_pong_rewrite(kernel, sizeof(kernel), warp_session_local_cid(p.i)), 0);
	assert_int_equal(kernel[0], 0xd7);
	assert_memory_equal(kernel + 1, ping + 1, 3);
	assert_memory_equal(kernel + WARP_CID_OFF, warp_session_local_cid(p.i), WARP_CID_LEN);
	assert_memory_equal(kernel + 12, ping + 12, WARP_PING_LEN - 12);
	/* userspace answers with exactly the same bytes after checking the ping */
	memcpy(pong, ping, sizeof(ping));
	assert_int_equal(warp_session_answer_ping(p.r, pong, sizeof(pong)), 0);
	assert_memory_equal(pong, kernel, sizeof(pong));
	assert_int_equal(warp_pong_rewrite(pong, sizeof(pong), warp_session_local_cid(p.i)),
			 -WARP_ESTATE); /* already a pong */

	/* forged pongs: any bit of nonce or authenticator */
	for (int k = WARP_HDR_LEN * 8; k < WARP_PING_LEN * 8; k++) {
		memcpy(bad, pong, sizeof(bad));
		bad[k / 8] ^= (uint8_t)(1 << (k % 8));
		assert_int_equal(warp_session_pong(p.i, bad, sizeof(bad), T0 + MS, &rtt),
				 -WARP_EAUTH);
	}
	memcpy(bad, pong, sizeof(bad));
	bad[WARP_CID_OFF] ^= 1;
	assert_int_equal(warp_session_pong(p.i, bad, sizeof(bad), T0 + MS, &rtt), -WARP_ENOTFOUND);
	assert_int_equal(warp_session_pong(p.i, pong, sizeof(pong) - 1, T0 + MS, &rtt),
			 -WARP_ETRUNCATED);
	assert_int_equal(warp_session_pong(p.i, ping, sizeof(ping), T0 + MS, &rtt), -WARP_ESTATE);
	/* a pong from the right session but another pinger's nonce */
	assert_int_equal(warp_session_ping(q.i, T0, bad), WARP_PING_LEN);
	warp_pong_rewrite(bad, sizeof(bad), warp_session_local_cid(p.i));
	assert_int_equal(warp_session_pong(p.i, bad, sizeof(bad), T0 + MS, &rtt), -WARP_EAUTH);

	/* the genuine pong, once */
	assert_int_equal(warp_session_pong(p.i, pong, sizeof(pong), T0 + 7 * MS, &rtt), 0);
	assert_int_equal(rtt, 7 * MS);
	assert_int_equal(warp_session_pong(p.i, pong, sizeof(pong), T0 + 8 * MS, &rtt),
			 -WARP_EREPLAY);

	/* pongs that come too late, or for a ping pushed out by newer ones */
	warp_session_ping(p.i, T0, old);
	warp_pong_rewrite(old, sizeof(old), warp_session_local_cid(p.i));
	assert_int_equal(warp_session_pong(p.i, old, sizeof(old), T0 + 31 * S, &rtt), -WARP_EAUTH);
	warp_session_ping(p.i, T0, old);
	warp_pong_rewrite(old, sizeof(old), warp_session_local_cid(p.i));
	for (int k = 0; k < WARP_KA_TRACK; k++)
		warp_session_ping(p.i, T0, bad);
	assert_int_equal(warp_session_pong(p.i, old, sizeof(old), T0 + MS, &rtt), -WARP_EAUTH);

	/* pings that must not be answered */
	warp_session_ping(p.i, T0, ping);
	memcpy(bad, ping, sizeof(bad));
	bad[WARP_HDR_LEN] ^= 1;
	memcpy(old, bad, sizeof(bad));
	assert_int_equal(warp_session_answer_ping(p.r, bad, sizeof(bad)), -WARP_EAUTH);
	assert_memory_equal(bad, old, sizeof(bad)); /* untouched */
	memcpy(bad, ping, sizeof(bad));
	bad[WARP_PN_OFF] ^= 1; /* the header is authenticated */
	assert_int_equal(warp_session_answer_ping(p.r, bad, sizeof(bad)), -WARP_EAUTH);
	memcpy(bad, ping, sizeof(bad));
	assert_int_equal(warp_session_answer_ping(p.i, bad, sizeof(bad)), -WARP_ENOTFOUND);
	warp_session_ping(q.i, T0, bad); /* another session's key */
	memcpy(bad + WARP_CID_OFF, warp_session_local_cid(p.r), WARP_CID_LEN);
	assert_int_equal(warp_session_answer_ping(p.r, bad, sizeof(bad)), -WARP_EAUTH);
	pair_free(&p);
	pair_free(&q);
}

/* The pure rewrite on its own: only what the XDP program checks. */
static void test_pong_rewrite(void **state)
{
	uint8_t key[32] = {1}, cid[8] = {1, 2, 3, 4, 5, 6, 7, 8}, nonce[8] = {9};
	uint8_t mine[8] = {0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11, 0x22};
	uint8_t ping[WARP_PING_LEN], want[WARP_PING_LEN], big[WARP_PING_LEN + 1];

	warp_ping_build(ping, key, cid, 0x1122334455667788ull, nonce);
	assert_int_equal(warp_ping_verify(ping, sizeof(ping), key, cid), 0);
	memcpy(want, ping, sizeof(ping));
	want[0] = 0xd7;
	memcpy(want + 4, mine, 8);
	assert_int_equal(warp_pong_rewrite(ping, sizeof(ping), mine), 0);
	assert_memory_equal(ping, want, sizeof(ping));
	assert_int_equal(warp_pong_rewrite(ping, WARP_PING_LEN - 1, mine), -WARP_ETRUNCATED);
	memset(big, 0, sizeof(big));
	memcpy(big, want, sizeof(want));
	big[0] = 0xd6;
	assert_int_equal(warp_pong_rewrite(big, sizeof(big), mine), -WARP_ETRAILING);
	big[0] = 0x16;
	assert_int_equal(warp_pong_rewrite(big, WARP_PING_LEN, mine), -WARP_EMALFORMED);
	big[0] = 0xe6;
	assert_int_equal(warp_pong_rewrite(big, WARP_PING_LEN, mine), -WARP_EVERSION);
}

/* A verified ping from the responder also confirms an initiator that missed the ACK. */
static void test_ping_confirms(void **state)
{
	struct warp_hs_cfg ci = {.role = WARP_HS_INITIATOR,
				 .identity = id_i,
				 .expected_peer = warp_identity_pubkey(id_r)};
	struct warp_hs_cfg cr = {.role = WARP_HS_RESPONDER, .identity = id_r};
	struct warp_hs *hi = warp_hs_new(&ci, T0), *hr = warp_hs_new(&cr, T0);
	uint8_t a[WARP_HS_OUT_MAX], b[WARP_HS_OUT_MAX], fin[WARP_HS_OUT_MAX], ping[WARP_PING_LEN];
	size_t al, bl, fl;
	struct warp_session *si, *sr;

	warp_hs_poll(hi, T0, a, &al);
	warp_hs_recv(hr, a, al, T0, b, &bl);
	warp_hs_recv(hi, b, bl, T0, fin, &fl);
	warp_hs_recv(hr, fin, fl, T0, b, &bl);
	si = warp_session_new(hi, NULL, T0);
	sr = warp_session_new(hr, NULL, T0);
	assert_false(warp_session_confirmed(si));
	/* FINISH retransmission is due after 200 ms */
	assert_int_equal(warp_session_next_timeout(si), T0 + 200 * MS);
	assert_int_equal(warp_session_poll(si, T0 + 200 * MS, a, sizeof(a)), WARP_HS_FINISH_LEN);
	assert_memory_equal(a, fin, WARP_HS_FINISH_LEN);
	/* the responder's session answers a duplicate FINISH with a bare ACK */
	assert_int_equal(warp_session_hs_recv(sr, a, WARP_HS_FINISH_LEN, T0, b, sizeof(b)),
			 WARP_SESSION_OVERHEAD);
	/* but not a changed one, and other late handshake packets are ignored */
	a[WARP_HS_FINISH_LEN - 1] ^= 1;
	assert_int_equal(warp_session_hs_recv(sr, a, WARP_HS_FINISH_LEN, T0, b, sizeof(b)), 0);
	assert_int_equal(warp_session_hs_recv(si, a, WARP_HS_FINISH_LEN, T0, b, sizeof(b)), 0);
	assert_int_equal(warp_session_hs_recv(sr, ping, 3, T0, b, sizeof(b)), -WARP_ETRUNCATED);
	warp_session_ping(sr, T0, ping);
	assert_int_equal(warp_session_hs_recv(sr, ping, sizeof(ping), T0, b, sizeof(b)),
			 -WARP_ESTATE);
	assert_int_equal(warp_session_answer_ping(si, ping, sizeof(ping)), 0);
	assert_true(warp_session_confirmed(si));
	assert_int_equal(warp_session_next_timeout(si), UINT64_MAX);
	warp_session_free(si);
	warp_session_free(sr);
	warp_hs_free(hi);
	warp_hs_free(hr);
	/* a session needs a finished handshake */
	hi = warp_hs_new(&ci, T0);
	assert_null(warp_session_new(hi, NULL, T0));
	assert_int_equal(errno, EINVAL);
	warp_hs_free(hi);
}

static void test_close(void **state)
{
	uint8_t pkt[128], out[128];
	struct warp_rx_info info;
	struct pair p;
	int n;

	pair_new(&p, NULL, T0);
	n = warp_session_close(p.i, -WARP_EIDLE, "idle", pkt, sizeof(pkt), T0);
	assert_int_equal(n, WARP_SESSION_OVERHEAD + 4 + 4);
	n = warp_session_open(p.r, pkt, (size_t)n, out, sizeof(out), T0, &info);
	assert_int_equal(n, 8);
	assert_int_equal(info.type, WARP_PKT_CLOSE);
	assert_int_equal(warp_close_code(out, (size_t)n), -WARP_EIDLE);
	assert_memory_equal(out + 4, "idle", 4);
	n = warp_session_close(p.r, 0, NULL, pkt, sizeof(pkt), T0);
	n = warp_session_open(p.i, pkt, (size_t)n, out, sizeof(out), T0, &info);
	assert_int_equal(warp_close_code(out, (size_t)n), 0);
	assert_int_equal(warp_close_code(out, 3), -WARP_ETRUNCATED);
	assert_int_equal(warp_session_close(p.r, 0, "long reason", pkt, 40, T0), -EMSGSIZE);
	pair_free(&p);
}

static void test_probe(void **state)
{
	uint8_t secret[32], other[32], nonce[12], cid[8] = {7}, probe[WARP_PROBE_LEN];
	uint8_t reply[WARP_PROBE_LEN], bad[WARP_PROBE_LEN];
	struct warp_probe_keys conn, lis, wrong;

	memset(secret, 0x5c, sizeof(secret));
	memset(other, 0x5d, sizeof(other));
	memset(nonce, 0xab, sizeof(nonce));
	warp_probe_keys_init(&conn, secret, WARP_PROBE_CONNECTOR);
	warp_probe_keys_init(&lis, secret, WARP_PROBE_LISTENER);
	warp_probe_keys_init(&wrong, other, WARP_PROBE_LISTENER);
	assert_memory_equal(conn.mine, lis.peer, 32);
	assert_memory_not_equal(conn.mine, conn.peer, 32);

	warp_probe_build(probe, &conn, cid, 3, nonce);
	assert_int_equal(probe[0], 0xd9);
	assert_memory_equal(probe + WARP_HDR_LEN, nonce, 12);
	assert_int_equal(warp_probe_verify(probe, sizeof(probe), &lis), 0);
	/* reflected at its sender, or checked with another attempt's secret */
	assert_int_equal(warp_probe_verify(probe, sizeof(probe), &conn), -WARP_EAUTH);
	assert_int_equal(warp_probe_verify(probe, sizeof(probe), &wrong), -WARP_EAUTH);
	for (int k = 4; k < WARP_PROBE_LEN; k++) {
		memcpy(bad, probe, sizeof(bad));
		bad[k] ^= 0x10;
		assert_int_equal(warp_probe_verify(bad, sizeof(bad), &lis), -WARP_EAUTH);
	}
	assert_int_equal(warp_probe_verify(probe, sizeof(probe) - 1, &lis), -WARP_ETRUNCATED);

	assert_int_equal(warp_probe_reply_build(reply, &lis, probe, sizeof(probe), cid, 4), 0);
	assert_int_equal(reply[0], 0xda);
	assert_memory_equal(reply + WARP_HDR_LEN, nonce, 12);
	assert_int_equal(warp_probe_reply_verify(reply, sizeof(reply), &conn, nonce), 0);
	/* a probe is not a reply, a reply for another nonce is not ours */
	assert_int_equal(warp_probe_reply_verify(probe, sizeof(probe), &conn, nonce), -WARP_ESTATE);
	nonce[0] ^= 1;
	assert_int_equal(warp_probe_reply_verify(reply, sizeof(reply), &conn, nonce), -WARP_EAUTH);
	nonce[0] ^= 1;
	/* the listener's own reply does not verify for the listener */
	assert_int_equal(warp_probe_reply_verify(reply, sizeof(reply), &lis, nonce), -WARP_EAUTH);
	/* no reply to a forged probe; in place works */
	memcpy(bad, probe, sizeof(bad));
	bad[30] ^= 1;
	assert_int_equal(warp_probe_reply_build(reply, &lis, bad, sizeof(bad), cid, 4),
			 -WARP_EAUTH);
	memcpy(bad, probe, sizeof(bad));
	assert_int_equal(warp_probe_reply_build(bad, &lis, bad, sizeof(bad), cid, 4), 0);
	assert_int_equal(warp_probe_reply_verify(bad, sizeof(bad), &conn, nonce), 0);
	warp_probe_keys_wipe(&conn);
	assert_true(conn.mine[0] == 0 && conn.peer[31] == 0);
}

static int setup(void **state)
{
	uint8_t sk[32];

	memset(sk, 0x44, 32);
	id_i = warp_identity_from_secret(sk);
	memset(sk, 0x55, 32);
	id_r = warp_identity_from_secret(sk);
	return id_i && id_r ? 0 : -1;
}

static int teardown(void **state)
{
	warp_identity_free(id_i);
	warp_identity_free(id_r);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),     cmocka_unit_test(test_reject_bad),
		cmocka_unit_test(test_replay_window), cmocka_unit_test(test_key_rotation),
		cmocka_unit_test(test_skipped_phase), cmocka_unit_test(test_prev_key_grace),
		cmocka_unit_test(test_rekey_limits),  cmocka_unit_test(test_ping_pong),
		cmocka_unit_test(test_pong_rewrite),  cmocka_unit_test(test_ping_confirms),
		cmocka_unit_test(test_close),	      cmocka_unit_test(test_probe),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
