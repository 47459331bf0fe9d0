// SPDX-License-Identifier: MIT
/*
 * Stream engine: see stream.h for the API and docs/protocol-stream.md for the wire format.
 *
 * Sender (UDP mode).  Reliable messages are cut into fragments when a payload is built, so a
 * fragment fills whatever room is left; each fragment gets the next 64-bit sequence number
 * (32 bits on the wire) and keeps it across retransmissions.  Sent fragments live in a ring
 * indexed by sequence number and, while in flight, on a list ordered by transmission time.
 * Acks carry a cumulative point, SACK blocks and an echo of the newest payload timestamp, so
 * every ack gives an RTT sample even for retransmitted data (no Karn ambiguity).  Loss is
 * declared QUIC/RACK style: a fragment sent before one that has since been delivered is lost
 * once 9/8 RTT old, or at once if three later sequence numbers were delivered; the RTO
 * (RFC 6298 with ack-delay, exponential backoff) catches tail losses.  NewReno in bytes.
 *
 * Receiver.  The in-order fragment is consumed immediately (single-fragment messages are
 * delivered straight from the caller's buffer); out-of-order ones wait in a ring, with a
 * sorted range list from which SACK blocks are cut.  The advertised window is the receive
 * buffer minus the bytes already reassembled for the current message; out-of-order
 * fragments that would overflow the buffer are dropped, the in-order one never is.
 *
 * Datagrams use a separate id space, are never retransmitted and never acknowledged; a
 * 1024-id bitmap suppresses duplicates and stale fragments.
 *
 * Callbacks are queued as events and dispatched at the end of input()/on_timer(), so no
 * callback ever sees a half-updated stream.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "stream"
#include "core/bytes.h"
#include "core/log.h"
#include "pipe/stream.h"

/* Frame types and reliable-fragment flags (docs/protocol-stream.md). */
#define FT_PAD	 0x00
#define FT_TS	 0x01
#define FT_ACK	 0x02
#define FT_REL	 0x03
#define FT_DGRAM 0x04
#define FT_RESET 0x05

#define RF_FIRST 0x01
#define RF_LAST	 0x02
#define RF_FIN	 0x04
#define RF_ALL	 (RF_FIRST | RF_LAST | RF_FIN)

#define TS_LEN	       5
#define ACK_FIXED      16
#define ACK_BLOCK      8
#define ACK_MAX_BLOCKS 32
#define REL_HDR	       8
#define REL_FIRST_HDR  12
#define DGRAM_HDR      11
#define RESET_LEN      3

#define RESET_APP     0 /* the application aborted */
#define RESET_PROTO   1 /* the peer broke the protocol */
#define RESET_TIMEOUT 2 /* retransmission limit */

/* Accounting overheads so tiny messages cannot pin unbounded memory. */
#define FRAG_CHARGE 32
#define MSG_CHARGE  64
#define DG_CHARGE   32

#define MIN_CUT		64 /* smallest fragment cut from a longer message */
#define ACK_DELAY_UNIT	8  /* microseconds per unit of the ack-delay field */
#define DG_WINDOW	1024
#define DG_MAX_PARTIALS 64
#define DG_MIN_FRAG	64 /* a sender's datagram fragments are never smaller (but the last) */
#define LINGER_RTOS	10 /* after a graceful close, re-acknowledge retransmissions this long */
#define LINGER_ACKS	3  /* ... and repeat the final ack unprompted, after 1, 2, 4 RTOs */
#define PKT_THRESH	3
#define REO_MAX		8 /* reordering tolerance steps (see reordering_seen()) */
#define GRANULARITY_NS	1000000ull
#define MAX_BACKOFF	16
#define CWND_MAX	(1ull << 30)
#define NIL		UINT64_MAX
#define MS		1000000ull

enum { SF_FREE = 0, SF_INFLIGHT, SF_LOST, SF_SACKED };
enum { EV_MSG = 1, EV_WRITABLE, EV_EOS, EV_CLOSED };

struct wmsg {
	struct wmsg *next;
	uint32_t refs; /* the send queue's, plus one per fragment still unacknowledged */
	uint32_t len;
	uint32_t off; /* bytes already cut into fragments */
	uint8_t data[];
};

struct sfrag {
	struct wmsg *m; /* NULL for the end-of-stream marker */
	uint64_t sent_ns;
	uint64_t tx_order;   /* transmission counter: orders sends that share a timestamp */
	uint64_t prev, next; /* in-flight list, by sequence number */
	uint32_t off;
	uint16_t len;
	uint8_t flags;
	uint8_t state;
	bool fast_lost; /* last declared lost by ack-based detection (not by the RTO) */
	uint32_t tx_count;
};

struct dmsg {
	struct dmsg *next;
	uint64_t id;
	uint32_t len;
	uint16_t idx, count; /* count 0: not started */
	uint8_t data[];
};

struct rfrag {
	uint64_t seq;
	uint32_t len, total;
	uint8_t flags;
	uint8_t data[];
};

struct range {
	uint64_t s, e; /* [s, e) */
};

/* Sorted, disjoint, non-adjacent ranges of sequence numbers. */
struct rset {
	struct range *r;
	size_t n, cap;
};

struct dfrag {
	uint8_t *p;
	uint32_t len;
	bool have;
};

struct dpart {
	uint64_t id;
	uint64_t first_ns;
	uint32_t count, got, bytes;
	struct dfrag frags[];
};

struct event {
	int type;
	int err;
	unsigned int flags;
	const uint8_t *p;
	size_t len;
	void *owned;
};

struct ack_in {
	uint64_t cum;
	uint32_t echo;
	uint16_t delay;
	uint32_t rwnd;
	unsigned int n;
	struct range b[ACK_MAX_BLOCKS];
};

struct warp_stream {
	struct warp_stream_conf c;
	enum warp_stream_state state;
	bool started;
	bool local_closed;
	bool fin_queued, fin_sent, fin_acked, peer_fin;
	bool reset_pending, close_check, app_aborted, failed;
	bool closed_reported; /* on_closed queued: it fires once */
	uint16_t reset_code;
	int close_err;
	uint64_t fin_seq, peer_fin_seq;
	uint64_t linger_until;
	uint64_t linger_ack_at; /* next unprompted repeat of the final ack */
	unsigned int linger_acks;
	uint64_t last_rx;

	/* reliable send */
	struct wmsg *sq_head, *sq_tail;
	size_t sq_msgs;
	size_t snd_used;
	uint64_t snd_una, snd_nxt;
	struct sfrag *sring;
	size_t scap;
	uint64_t tx_head, tx_tail, tx_counter;
	size_t lost_count;
	uint64_t lost_cursor;
	uint64_t in_flight, outstanding;
	struct rset sacked; /* SACK scoreboard above snd_una */
	uint64_t peer_rwnd, peer_cum_max;

	/* congestion control and RTT */
	uint64_t mss, cwnd, ssthresh, ca_acc, recovery_start;
	bool cwnd_limited;
	bool have_rtt;
	uint64_t srtt, rttvar, min_rtt, latest_rtt;
	unsigned int backoff;
	uint32_t consecutive_rto;
	uint64_t rack_order, rack_seq_hi, loss_deadline;
	unsigned int reo_level; /* widened after spurious fast retransmits */
	uint32_t ack_echo;	/* echo of the ack being processed */

	/* datagram send */
	struct dmsg *dq_head, *dq_tail;
	size_t dq_bytes;
	uint64_t dg_next_id;
	size_t dg_frag_max;
	bool turn_dgram;
	size_t want_rel, want_dg;

	/* reliable receive */
	uint64_t rcv_nxt;
	struct rfrag **ooo;
	size_t ocap, ooo_span_max;
	size_t ooo_bytes;
	struct rset rcvd; /* out-of-order fragments held */
	uint64_t last_ooo_seq;
	uint8_t *reasm;
	uint32_t reasm_total, reasm_filled;
	bool reasm_active;

	/* acknowledgement state */
	bool ack_pending, ack_immediate, have_ts;
	uint32_t rx_unacked;
	uint64_t ack_deadline;
	uint32_t last_ts;
	uint64_t last_ts_rx;

	/* datagram receive */
	uint64_t dg_highest;
	uint64_t dg_done[DG_WINDOW / 64];
	struct dpart *parts[DG_MAX_PARTIALS];
	size_t nparts, dg_part_bytes;

	/* events */
	struct event *ev;
	size_t nev, evcap;
	bool dispatching, free_pending;

	struct warp_stream_stats st;
};

/* ------------------------------------------------------------------ helpers */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* Expands a 32-bit wire number to the 64-bit value nearest to expected. */
static uint64_t decode32(uint32_t wire, uint64_t expected)
{
	const uint64_t win = 1ull << 32, hwin = win / 2;
	uint64_t cand = (expected & ~(win - 1)) | wire;

	if (cand + hwin <= expected && cand < UINT64_MAX - win)
		return cand + win;
	if (cand > expected + hwin && cand >= win)
		return cand - win;
	return cand;
}

static bool is_udp(const struct warp_stream *s)
{
	return s->c.mode == WARP_STREAM_UDP;
}

static struct sfrag *sf(const struct warp_stream *s, uint64_t seq)
{
	return &s->sring[seq & (s->scap - 1)];
}

static size_t rel_wire(const struct sfrag *f)
{
	return (f->flags & RF_FIRST ? REL_FIRST_HDR : REL_HDR) + f->len;
}

static int ev_push(struct warp_stream *s, int type, int err, unsigned int flags, const uint8_t *p,
		   size_t len, void *owned)
{
	if (s->nev == s->evcap) {
		size_t cap = s->evcap ? s->evcap * 2 : 16;
		struct event *n = realloc(s->ev, cap * sizeof(*n));

		if (!n) {
			free(owned);
			return -ENOMEM;
		}
		s->ev = n;
		s->evcap = cap;
	}
	s->ev[s->nev++] = (struct event){ type, err, flags, p, len, owned };
	return 0;
}

static void start(struct warp_stream *s, uint64_t now)
{
	if (!s->started) {
		s->started = true;
		s->last_rx = now;
	}
}

/* ------------------------------------------------------------------ range sets */

/* Index of the first range ending after x. */
static size_t rset_find(const struct rset *rs, uint64_t x)
{
	size_t lo = 0, hi = rs->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (rs->r[mid].e > x)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Adds [a, b), merging what it overlaps or touches. */
static int rset_add(struct rset *rs, uint64_t a, uint64_t b)
{
	size_t i = a ? rset_find(rs, a - 1) : 0, j = i;

	while (j < rs->n && rs->r[j].s <= b)
		j++;
	if (i == j) {
		if (rs->n == rs->cap) {
			size_t cap = rs->cap ? rs->cap * 2 : 16;
			struct range *n = realloc(rs->r, cap * sizeof(*n));

			if (!n)
				return -ENOMEM;
			rs->r = n;
			rs->cap = cap;
		}
		memmove(&rs->r[i + 1], &rs->r[i], (rs->n - i) * sizeof(*rs->r));
		rs->r[i] = (struct range){ a, b };
		rs->n++;
		return 0;
	}
	rs->r[i].s = min_u64(rs->r[i].s, a);
	rs->r[i].e = max_u64(rs->r[j - 1].e, b);
	memmove(&rs->r[i + 1], &rs->r[j], (rs->n - j) * sizeof(*rs->r));
	rs->n -= j - i - 1;
	return 0;
}

/* Forgets everything below x. */
static void rset_trim(struct rset *rs, uint64_t x)
{
	size_t i = rset_find(rs, x);

	if (i) {
		memmove(&rs->r[0], &rs->r[i], (rs->n - i) * sizeof(*rs->r));
		rs->n -= i;
	}
	if (rs->n && rs->r[0].s < x)
		rs->r[0].s = x;
}

/* ------------------------------------------------------------------ RTT, RTO, cwnd */

static uint64_t rto_base(const struct warp_stream *s)
{
	uint64_t rto;

	if (!s->have_rtt)
		return s->c.rto_initial_ms * MS;
	rto = s->srtt + max_u64(GRANULARITY_NS, 4 * s->rttvar) + s->c.max_ack_delay_ms * MS;
	return min_u64(max_u64(rto, s->c.rto_min_ms * MS), s->c.rto_max_ms * MS);
}

/* Only the end-of-stream marker is unacknowledged: everything else was delivered. */
static bool only_fin_left(const struct warp_stream *s)
{
	return s->fin_sent && s->snd_una == s->fin_seq;
}

static uint64_t rto_cur(const struct warp_stream *s)
{
	/* Both ends' markers are out: the peer may be done and lingering (LINGER_RTOS of its
	 * own, restarted by each retransmission it hears), so back off once at most to stay
	 * well inside that; max_rto_count still bounds the retries. */
	unsigned int backoff = s->fin_sent && s->peer_fin && s->backoff > 1 ? 1 : s->backoff;

	return min_u64(rto_base(s) << backoff, s->c.rto_max_ms * MS);
}

/* Time threshold: 9/8 RTT, growing by 1/8 RTT per reordering step seen on the path. */
static uint64_t loss_delay(const struct warp_stream *s)
{
	uint64_t base = s->have_rtt ? max_u64(s->srtt, s->latest_rtt) : s->c.rto_initial_ms * MS;

	return max_u64(base + base * (1 + s->reo_level) / 8, GRANULARITY_NS);
}

/* Packet threshold: 3, doubling per reordering step. */
static uint64_t pkt_thresh(const struct warp_stream *s)
{
	return (uint64_t)PKT_THRESH << s->reo_level;
}

/* RFC 6298 smoothing of an RTT sample, with RFC 9002's ack-delay correction. */
static void rtt_sample(struct warp_stream *s, uint64_t rtt, uint64_t ack_delay)
{
	uint64_t adj = rtt, diff;

	s->latest_rtt = rtt;
	if (!s->have_rtt) {
		s->have_rtt = true;
		s->min_rtt = s->srtt = rtt;
		s->rttvar = rtt / 2;
		return;
	}
	s->min_rtt = min_u64(s->min_rtt, rtt);
	ack_delay = min_u64(ack_delay, s->c.max_ack_delay_ms * MS);
	if (rtt >= s->min_rtt + ack_delay)
		adj = rtt - ack_delay;
	diff = s->srtt > adj ? s->srtt - adj : adj - s->srtt;
	s->rttvar = (3 * s->rttvar + diff) / 4;
	s->srtt = (7 * s->srtt + adj) / 8;
}

static uint64_t min_cwnd(const struct warp_stream *s)
{
	return 2 * s->mss;
}

static void cc_on_ack(struct warp_stream *s, const struct sfrag *f, bool limited)
{
	uint64_t bytes = rel_wire(f);

	/* No growth for data sent before the last reduction, nor when the application, not
	 * the window, limited the sending rate. */
	if (f->sent_ns <= s->recovery_start || !limited)
		return;
	if (s->cwnd < s->ssthresh) {
		s->cwnd += bytes;
	} else {
		s->ca_acc += bytes;
		if (s->ca_acc >= s->cwnd) {
			s->ca_acc -= s->cwnd;
			s->cwnd += s->mss;
		}
	}
	s->cwnd = min_u64(s->cwnd, CWND_MAX);
}

static void cc_on_loss(struct warp_stream *s, uint64_t sent_ns, uint64_t now)
{
	/* One reduction per window: losses of data sent before the last one are old news. */
	if (sent_ns <= s->recovery_start)
		return;
	s->recovery_start = now;
	s->ssthresh = max_u64(s->cwnd / 2, min_cwnd(s));
	s->cwnd = s->ssthresh;
	s->ca_acc = 0;
}

/* ------------------------------------------------------------------ send side */

static void check_writable(struct warp_stream *s)
{
	bool rel = s->want_rel && s->c.sndbuf - s->snd_used >= s->want_rel;
	bool dg = s->want_dg && s->c.dgram_sndbuf - s->dq_bytes >= s->want_dg;

	if (rel || dg) {
		s->want_rel = s->want_dg = 0;
		ev_push(s, EV_WRITABLE, 0, 0, NULL, 0, NULL);
	}
}

static void wmsg_put(struct warp_stream *s, struct wmsg *m)
{
	if (!m || --m->refs)
		return;
	s->snd_used -= m->len + MSG_CHARGE;
	free(m);
	check_writable(s);
}

static void txl_append(struct warp_stream *s, uint64_t seq)
{
	struct sfrag *f = sf(s, seq);

	f->prev = s->tx_tail;
	f->next = NIL;
	if (s->tx_tail != NIL)
		sf(s, s->tx_tail)->next = seq;
	else
		s->tx_head = seq;
	s->tx_tail = seq;
}

static void txl_remove(struct warp_stream *s, uint64_t seq)
{
	struct sfrag *f = sf(s, seq);

	if (f->prev != NIL)
		sf(s, f->prev)->next = f->next;
	else
		s->tx_head = f->next;
	if (f->next != NIL)
		sf(s, f->next)->prev = f->prev;
	else
		s->tx_tail = f->prev;
	f->prev = f->next = NIL;
}

static int sring_reserve(struct warp_stream *s)
{
	size_t ncap;
	struct sfrag *n;

	if (s->snd_nxt - s->snd_una < s->scap)
		return 0;
	ncap = s->scap ? s->scap * 2 : 64;
	n = calloc(ncap, sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (uint64_t q = s->snd_una; q < s->snd_nxt; q++)
		n[q & (ncap - 1)] = *sf(s, q);
	free(s->sring);
	s->sring = n;
	s->scap = ncap;
	return 0;
}

/* Records a first transmission or a retransmission of fragment seq. */
static void frag_sent(struct warp_stream *s, uint64_t seq, uint64_t now)
{
	struct sfrag *f = sf(s, seq);

	if (f->tx_count)
		s->st.frags_retransmitted++;
	f->state = SF_INFLIGHT;
	f->sent_ns = now;
	f->tx_order = ++s->tx_counter;
	f->tx_count++;
	txl_append(s, seq);
	s->in_flight += rel_wire(f);
	s->st.frags_sent++;
	if (s->in_flight >= s->cwnd)
		s->cwnd_limited = true;
}

static void mark_lost(struct warp_stream *s, uint64_t seq)
{
	struct sfrag *f = sf(s, seq);

	txl_remove(s, seq);
	s->in_flight -= rel_wire(f);
	f->state = SF_LOST;
	s->lost_count++;
	if (seq < s->lost_cursor)
		s->lost_cursor = seq;
}

/* A fragment is known to have arrived (by the cumulative point or a SACK block). */
/*
 * A fragment declared lost by ack-based detection turned out to have arrived: the path
 * reorders more than the thresholds allow, so widen them (RACK's reo_wnd adaptation, with the
 * timestamp echo standing in for DSACK).
 */
static void reordering_seen(struct warp_stream *s)
{
	if (s->reo_level < REO_MAX) {
		s->reo_level++;
		pr_debug("reordering: tolerance step %u", s->reo_level);
	}
}

static void frag_delivered(struct warp_stream *s, uint64_t seq, bool limited)
{
	struct sfrag *f = sf(s, seq);

	/* Spurious if acknowledged before its retransmission was even sent, or by an ack
	 * the peer generated before our retransmission could have reached it. */
	if (f->fast_lost &&
	    (f->state == SF_LOST || (f->tx_count > 1 && s->ack_echo &&
				     (int32_t)(s->ack_echo - (uint32_t)(f->sent_ns / 1000)) < 0)))
		reordering_seen(s);
	if (f->state == SF_INFLIGHT) {
		txl_remove(s, seq);
		s->in_flight -= rel_wire(f);
		cc_on_ack(s, f, limited);
	} else if (f->state == SF_LOST) {
		s->lost_count--;
	}
	f->state = SF_SACKED;
	if (f->tx_order > s->rack_order)
		s->rack_order = f->tx_order;
	if (seq > s->rack_seq_hi || s->rack_seq_hi == NIL)
		s->rack_seq_hi = seq;
}

static void frag_release(struct warp_stream *s, uint64_t seq)
{
	struct sfrag *f = sf(s, seq);

	s->outstanding -= f->len + FRAG_CHARGE;
	wmsg_put(s, f->m);
	memset(f, 0, sizeof(*f));
}

static void detect_losses(struct warp_stream *s, uint64_t now)
{
	uint64_t delay = loss_delay(s), seq = s->tx_head;

	s->loss_deadline = NIL;
	while (seq != NIL) {
		struct sfrag *f = sf(s, seq);
		uint64_t next = f->next;

		/* Only fragments sent before the newest delivered one can be judged. */
		if (f->tx_order >= s->rack_order)
			break;
		if (f->sent_ns + delay <= now || (f->tx_count == 1 && s->rack_seq_hi != NIL &&
						  seq + pkt_thresh(s) <= s->rack_seq_hi)) {
			uint64_t sent = f->sent_ns;

			mark_lost(s, seq);
			f->fast_lost = true;
			cc_on_loss(s, sent, now);
		} else {
			s->loss_deadline = min_u64(s->loss_deadline, f->sent_ns + delay);
		}
		seq = next;
	}
}

static void stream_fail(struct warp_stream *s, int err, bool send_reset, uint16_t code);
static void check_close_done(struct warp_stream *s, uint64_t now);

static void on_rto(struct warp_stream *s, uint64_t now)
{
	uint64_t flight = s->in_flight;

	s->st.rto_count++;
	if (s->c.max_rto_count && ++s->consecutive_rto > s->c.max_rto_count) {
		if (only_fin_left(s) && s->peer_fin) {
			/* All our data was acknowledged and the peer's stream ended: the peer has
			 * finished and stopped answering, nothing was lost. */
			pr_debug("end-of-stream marker unacknowledged; closing anyway");
			s->fin_acked = true;
			check_close_done(s, now);
			s->state = WARP_STREAM_DONE;
			return;
		}
		pr_debug("retransmission limit reached");
		stream_fail(s, -ETIMEDOUT, true, RESET_TIMEOUT);
		return;
	}
	while (s->tx_head != NIL) {
		sf(s, s->tx_head)->fast_lost = false;
		mark_lost(s, s->tx_head);
	}
	s->ssthresh = max_u64(flight / 2, min_cwnd(s));
	s->cwnd = min_cwnd(s);
	s->ca_acc = 0;
	s->recovery_start = now;
	s->loss_deadline = NIL;
	if (s->backoff < MAX_BACKOFF)
		s->backoff++;
}

static uint64_t rto_deadline(const struct warp_stream *s)
{
	if (s->tx_head == NIL)
		return NIL;
	return sf(s, s->tx_head)->sent_ns + rto_cur(s);
}

static void check_close_done(struct warp_stream *s, uint64_t now)
{
	bool ours = is_udp(s) ? s->fin_acked : s->fin_sent;

	if (s->state >= WARP_STREAM_CLOSED || !ours || !s->peer_fin)
		return;
	if (is_udp(s)) {
		s->state = WARP_STREAM_CLOSED;
		s->linger_until = now + LINGER_RTOS * rto_base(s);
		/* Our last ack may be lost while the peer's retransmissions are too: offer it
		 * again a few times rather than only when asked. */
		s->linger_acks = LINGER_ACKS;
		s->linger_ack_at = now + rto_base(s);
	} else {
		s->state = WARP_STREAM_DONE;
	}
	s->close_err = 0;
	s->closed_reported = true;
	ev_push(s, EV_CLOSED, 0, 0, NULL, 0, NULL);
}

static void process_ack(struct warp_stream *s, const struct ack_in *a, uint64_t now)
{
	bool limited = s->cwnd_limited;
	uint64_t newly = 0;

	s->cwnd_limited = false;
	s->ack_echo = a->echo;
	if (a->cum > s->snd_una) {
		for (uint64_t q = s->snd_una; q < a->cum; q++) {
			if (sf(s, q)->state != SF_SACKED) {
				frag_delivered(s, q, limited);
				newly++;
			}
			frag_release(s, q);
		}
		s->snd_una = a->cum;
	}
	if (a->cum >= s->peer_cum_max) {
		s->peer_cum_max = a->cum;
		s->peer_rwnd = a->rwnd;
	}
	rset_trim(&s->sacked, s->snd_una);
	for (unsigned int i = 0; i < a->n; i++) {
		uint64_t lo = max_u64(a->b[i].s, s->snd_una), hi = a->b[i].e, cur = lo;
		size_t k;

		if (lo >= hi)
			continue;
		/* Visit only what the scoreboard does not already hold: repeated blocks cost
		 * nothing however large the window. */
		for (k = rset_find(&s->sacked, lo); k <= s->sacked.n; k++) {
			uint64_t end = k < s->sacked.n ? min_u64(s->sacked.r[k].s, hi) : hi;

			for (uint64_t q = cur; q < end; q++) {
				if (sf(s, q)->state != SF_SACKED) {
					frag_delivered(s, q, limited);
					newly++;
				}
			}
			if (k == s->sacked.n || s->sacked.r[k].s >= hi)
				break;
			cur = max_u64(cur, s->sacked.r[k].e);
		}
		rset_add(&s->sacked, lo, hi);
	}
	if (newly) {
		uint32_t rtt_us = (uint32_t)(now / 1000) - a->echo;

		/* The echo dates the newest payload the peer had; ack_delay is how long it held
		 * it.  Implausible samples (clock wrap, forged echo) are skipped. */
		if (a->echo && rtt_us < 120u * 1000 * 1000)
			rtt_sample(s, (uint64_t)rtt_us * 1000,
				   (uint64_t)a->delay * ACK_DELAY_UNIT * 1000);
		s->backoff = 0;
		s->consecutive_rto = 0;
	}
	detect_losses(s, now);
	if (s->fin_sent && !s->fin_acked && s->snd_una > s->fin_seq) {
		s->fin_acked = true;
		check_close_done(s, now);
	}
	check_writable(s);
}

/* ------------------------------------------------------------------ receive side */

static void rx_reset_state(struct warp_stream *s)
{
	for (size_t i = 0; i < s->ocap; i++) {
		free(s->ooo[i]);
		s->ooo[i] = NULL;
	}
	s->ooo_bytes = 0;
	s->rcvd.n = 0;
	free(s->reasm);
	s->reasm = NULL;
	s->reasm_active = false;
	s->reasm_filled = 0;
	for (size_t i = 0; i < s->nparts; i++) {
		for (uint32_t k = 0; k < s->parts[i]->count; k++)
			free(s->parts[i]->frags[k].p);
		free(s->parts[i]);
	}
	s->nparts = 0;
	s->dg_part_bytes = 0;
}

static void tx_reset_state(struct warp_stream *s)
{
	struct wmsg *m, *mn;
	struct dmsg *d, *dn;

	for (uint64_t q = s->snd_una; is_udp(s) && q < s->snd_nxt; q++) {
		struct sfrag *f = sf(s, q);

		if (f->m && !--f->m->refs)
			free(f->m);
		memset(f, 0, sizeof(*f));
	}
	s->snd_una = s->snd_nxt;
	for (m = s->sq_head; m; m = mn) {
		mn = m->next;
		if (!--m->refs)
			free(m);
	}
	s->sq_head = s->sq_tail = NULL;
	s->sq_msgs = 0;
	for (d = s->dq_head; d; d = dn) {
		dn = d->next;
		free(d);
	}
	s->dq_head = s->dq_tail = NULL;
	s->dq_bytes = 0;
	s->snd_used = 0;
	s->tx_head = s->tx_tail = NIL;
	s->sacked.n = 0;
	s->lost_count = 0;
	s->in_flight = s->outstanding = 0;
	s->loss_deadline = NIL;
	s->want_rel = s->want_dg = 0;
}

static void stream_fail(struct warp_stream *s, int err, bool send_reset, uint16_t code)
{
	if (s->state == WARP_STREAM_DONE)
		return;
	tx_reset_state(s);
	rx_reset_state(s);
	s->ack_pending = false;
	s->failed = true;
	s->reset_pending = send_reset;
	s->reset_code = code;
	s->state = send_reset ? WARP_STREAM_CLOSED : WARP_STREAM_DONE;
	if (s->closed_reported)
		return; /* e.g. a RESET while lingering after a graceful close */
	s->close_err = err;
	s->closed_reported = true;
	ev_push(s, EV_CLOSED, err, 0, NULL, 0, NULL);
}

static int ooo_reserve(struct warp_stream *s, uint64_t dist)
{
	size_t ncap = s->ocap ? s->ocap : 64;
	struct rfrag **n;

	if (dist < s->ocap)
		return 0;
	while (ncap <= dist)
		ncap *= 2;
	n = calloc(ncap, sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (size_t i = 0; i < s->ocap; i++)
		if (s->ooo[i])
			n[s->ooo[i]->seq & (ncap - 1)] = s->ooo[i];
	free(s->ooo);
	s->ooo = n;
	s->ocap = ncap;
	return 0;
}

static void deliver(struct warp_stream *s, const uint8_t *p, size_t len, unsigned int flags,
		    void *owned)
{
	if (flags & WARP_MSG_RELIABLE) {
		s->st.msgs_received++;
		s->st.bytes_received += len;
	} else {
		s->st.dgrams_received++;
	}
	ev_push(s, EV_MSG, 0, flags, p, len, owned);
}

/*
 * Consumes the in-order fragment at rcv_nxt.  owner, if not NULL, is the allocation holding
 * p; it is handed to the delivery event when the fragment is a whole message (and *taken is
 * set), else the caller frees it.  Returns -WARP_EMALFORMED on a sequencing violation.
 */
static int consume(struct warp_stream *s, uint8_t flags, uint32_t total, const uint8_t *p,
		   uint32_t len, void *owner, bool *taken)
{
	*taken = false;
	if (s->peer_fin)
		return -WARP_EMALFORMED;
	if (flags & RF_FIN) {
		if (s->reasm_active)
			return -WARP_EMALFORMED;
		/* Half-close: our side stays open until the application closes it too. */
		s->peer_fin = true;
		s->peer_fin_seq = s->rcv_nxt++;
		ev_push(s, EV_EOS, 0, 0, NULL, 0, NULL);
		return 0;
	}
	if (flags & RF_FIRST) {
		if (s->reasm_active)
			return -WARP_EMALFORMED;
		if (flags & RF_LAST) {
			deliver(s, p, len, WARP_MSG_RELIABLE, owner);
			*taken = owner != NULL;
		} else {
			s->reasm = malloc(total ? total : 1);
			if (!s->reasm)
				return -ENOMEM;
			memcpy(s->reasm, p, len);
			s->reasm_total = total;
			s->reasm_filled = len;
			s->reasm_active = true;
		}
	} else {
		if (!s->reasm_active || len > s->reasm_total - s->reasm_filled)
			return -WARP_EMALFORMED;
		if (len)
			memcpy(s->reasm + s->reasm_filled, p, len);
		s->reasm_filled += len;
		if (flags & RF_LAST) {
			if (s->reasm_filled != s->reasm_total)
				return -WARP_EMALFORMED;
			deliver(s, s->reasm, s->reasm_total, WARP_MSG_RELIABLE, s->reasm);
			s->reasm = NULL;
			s->reasm_active = false;
			s->reasm_filled = 0;
		}
	}
	s->rcv_nxt++;
	return 0;
}

/* One reliable fragment (seq already expanded).  Sets *immediate when the ack should not
 * wait: out-of-order arrival, a duplicate, a filled gap, or the end of stream. */
static int rx_rel(struct warp_stream *s, uint64_t seq, uint8_t flags, uint32_t total,
		  const uint8_t *p, uint32_t len, uint64_t now, bool *immediate)
{
	struct rfrag *r;
	uint64_t dist;
	size_t charge = len + FRAG_CHARGE;
	bool taken;
	int err;

	if (seq < s->rcv_nxt) {
		s->st.spurious_dups_received++;
		*immediate = true;
		/* The peer has not heard our ack yet: stay to answer it. */
		if (s->state == WARP_STREAM_CLOSED)
			s->linger_until = max_u64(s->linger_until, now + LINGER_RTOS * rto_base(s));
		return 0;
	}
	if (seq == s->rcv_nxt) {
		err = consume(s, flags, total, p, len, NULL, &taken);
		if (err == -ENOMEM)
			return 0; /* not acknowledged: it will be retransmitted */
		if (err)
			return err;
		if (flags & RF_FIN)
			*immediate = true;
		if (!s->rcvd.n)
			return 0;
		*immediate = true;
		while (s->ocap && (r = s->ooo[s->rcv_nxt & (s->ocap - 1)]) &&
		       r->seq == s->rcv_nxt) {
			s->ooo[s->rcv_nxt & (s->ocap - 1)] = NULL;
			s->ooo_bytes -= r->len + FRAG_CHARGE;
			err = consume(s, r->flags, r->total, r->data, r->len, r, &taken);
			if (err == -ENOMEM) {
				/* Keep it (already acknowledged) and retry on the next arrival. */
				s->ooo[r->seq & (s->ocap - 1)] = r;
				s->ooo_bytes += r->len + FRAG_CHARGE;
				err = 0;
				break;
			}
			if (!taken)
				free(r);
			if (err)
				return err;
		}
		rset_trim(&s->rcvd, s->rcv_nxt);
		return 0;
	}
	*immediate = true;
	dist = seq - s->rcv_nxt;
	if (s->peer_fin || dist >= s->ooo_span_max ||
	    s->reasm_filled + s->ooo_bytes + charge > s->c.rcvbuf) {
		s->st.frags_dropped_window++;
		return 0;
	}
	if (ooo_reserve(s, dist))
		return 0;
	if (s->ooo[seq & (s->ocap - 1)]) {
		s->st.spurious_dups_received++;
		return 0;
	}
	r = malloc(sizeof(*r) + len);
	if (!r)
		return 0;
	if (rset_add(&s->rcvd, seq, seq + 1)) {
		free(r);
		return 0;
	}
	r->seq = seq;
	r->len = len;
	r->total = total;
	r->flags = flags;
	if (len)
		memcpy(r->data, p, len);
	s->ooo[seq & (s->ocap - 1)] = r;
	s->ooo_bytes += charge;
	s->last_ooo_seq = seq;
	return 0;
}

static bool dg_done(const struct warp_stream *s, uint64_t id)
{
	return s->dg_done[(id % DG_WINDOW) / 64] >> (id % 64) & 1;
}

static void dg_mark(struct warp_stream *s, uint64_t id)
{
	s->dg_done[(id % DG_WINDOW) / 64] |= 1ull << (id % 64);
}

static void dpart_drop(struct warp_stream *s, size_t i, bool count)
{
	struct dpart *p = s->parts[i];

	for (uint32_t k = 0; k < p->count; k++)
		free(p->frags[k].p);
	s->dg_part_bytes -= p->bytes;
	if (p->id + DG_WINDOW > s->dg_highest)
		dg_mark(s, p->id); /* later fragments of it are stale */
	if (count)
		s->st.dgrams_dropped_rx++;
	free(p);
	memmove(&s->parts[i], &s->parts[i + 1], (s->nparts - i - 1) * sizeof(s->parts[0]));
	s->nparts--;
}

static void dg_advance(struct warp_stream *s, uint64_t id)
{
	for (uint64_t x = s->dg_highest + 1; x <= id && x - s->dg_highest <= DG_WINDOW; x++)
		s->dg_done[(x % DG_WINDOW) / 64] &= ~(1ull << (x % 64));
	s->dg_highest = id;
	/* Incomplete datagrams that fell out of the window can no longer be tracked. */
	for (size_t i = 0; i < s->nparts;) {
		if (s->parts[i]->id + DG_WINDOW <= id)
			dpart_drop(s, i, true);
		else
			i++;
	}
}

static void rx_dgram(struct warp_stream *s, uint64_t id, uint16_t idx, uint16_t count,
		     const uint8_t *p, uint16_t len, uint64_t now)
{
	struct dpart *part = NULL;
	size_t i;
	uint8_t *buf;

	if (id + DG_WINDOW <= s->dg_highest)
		return; /* stale */
	if (id > s->dg_highest)
		dg_advance(s, id);
	if (dg_done(s, id))
		return; /* duplicate, or the rest of a message already given up */
	if (count == 1) {
		dg_mark(s, id);
		deliver(s, p, len, WARP_MSG_DATAGRAM, NULL);
		return;
	}
	for (i = 0; i < s->nparts && s->parts[i]->id != id; i++)
		;
	if (i < s->nparts) {
		part = s->parts[i];
		if (part->count != count || part->frags[idx].have)
			return;
		if (part->bytes + len > s->c.max_datagram) {
			dpart_drop(s, i, true);
			return;
		}
	}
	/* Make room: the oldest incomplete datagrams go first. */
	while (s->nparts && (s->dg_part_bytes + len > s->c.dgram_rcvbuf ||
			     (!part && s->nparts == DG_MAX_PARTIALS))) {
		bool own = s->parts[0] == part;

		dpart_drop(s, 0, true);
		if (own)
			return;
	}
	if (s->dg_part_bytes + len > s->c.dgram_rcvbuf)
		return;
	if (!part) {
		part = calloc(1, sizeof(*part) + count * sizeof(part->frags[0]));
		if (!part)
			return;
		part->id = id;
		part->count = count;
		part->first_ns = now;
		s->parts[s->nparts++] = part;
	}
	buf = malloc(len ? len : 1);
	if (!buf)
		return;
	if (len)
		memcpy(buf, p, len);
	part->frags[idx] = (struct dfrag){ buf, len, true };
	part->got++;
	part->bytes += len;
	s->dg_part_bytes += len;
	if (part->got < part->count)
		return;
	for (i = 0; s->parts[i] != part; i++)
		;
	buf = malloc(part->bytes ? part->bytes : 1);
	if (!buf) {
		dpart_drop(s, i, true);
		return;
	}
	for (uint32_t k = 0, off = 0; k < part->count; k++) {
		if (part->frags[k].len)
			memcpy(buf + off, part->frags[k].p, part->frags[k].len);
		off += part->frags[k].len;
	}
	deliver(s, buf, part->bytes, WARP_MSG_DATAGRAM, buf);
	dpart_drop(s, i, false);
}

/* ------------------------------------------------------------------ input */

struct rx_ctx {
	uint64_t rcv_nxt0, snd_una0, dg_base0;
	bool have_ts, eliciting, immediate, have_ack;
	uint32_t ts;
	struct ack_in ack;
	/* TCP mode: reassembly simulated during validation, so a bad sequence is refused
	 * before anything changes. */
	uint64_t v_expect;
	bool v_active;
	uint32_t v_total, v_filled;
	bool v_fin;
};

/*
 * Walks the frames of one payload.  With apply false it only checks them (against a
 * snapshot of the state taken by the caller); with apply true it acts on them.  Both passes
 * expand sequence numbers from the same snapshot, so they agree.
 */
static int walk(struct warp_stream *s, const uint8_t *buf, size_t len, uint64_t now,
		struct rx_ctx *cx, bool apply)
{
	struct warp_rd r = warp_rd_init(buf, len);
	bool udp = is_udp(s);
	int err;

	while (warp_rd_left(&r)) {
		uint8_t type = warp_rd_u8(&r);

		switch (type) {
		case FT_PAD:
			break;
		case FT_TS: {
			uint32_t ts = warp_rd_u32(&r);

			if (r.err)
				return r.err;
			if (!udp)
				return -WARP_EMALFORMED;
			if (!apply && cx->have_ts)
				return -WARP_EDUPLICATE;
			cx->have_ts = true;
			cx->ts = ts;
			break;
		}
		case FT_ACK: {
			struct ack_in *a = &cx->ack;
			uint64_t prev;

			a->cum = decode32(warp_rd_u32(&r), cx->snd_una0);
			a->echo = warp_rd_u32(&r);
			a->delay = warp_rd_u16(&r);
			a->rwnd = warp_rd_u32(&r);
			a->n = warp_rd_u8(&r);
			if (r.err)
				return r.err;
			if (!udp)
				return -WARP_EMALFORMED;
			if (!apply && cx->have_ack)
				return -WARP_EDUPLICATE;
			if (a->n > ACK_MAX_BLOCKS)
				return -WARP_ERANGE;
			if (a->cum > s->snd_nxt)
				return -WARP_ERANGE;
			prev = a->cum;
			for (unsigned int i = 0; i < a->n; i++) {
				a->b[i].s = decode32(warp_rd_u32(&r), a->cum);
				a->b[i].e = decode32(warp_rd_u32(&r), a->cum);
				if (r.err)
					return r.err;
				if (a->b[i].s <= prev || a->b[i].e <= a->b[i].s ||
				    a->b[i].e > s->snd_nxt)
					return -WARP_ERANGE;
				prev = a->b[i].e;
			}
			cx->have_ack = true;
			if (apply && !s->failed)
				process_ack(s, a, now);
			break;
		}
		case FT_REL: {
			uint8_t flags = warp_rd_u8(&r);
			uint64_t seq = decode32(warp_rd_u32(&r), cx->rcv_nxt0);
			uint16_t flen = warp_rd_u16(&r);
			uint32_t total = flags & RF_FIRST ? warp_rd_u32(&r) : 0;
			const uint8_t *p = warp_rd_bytes(&r, flen);

			if (r.err)
				return r.err;
			if (flags & ~RF_ALL)
				return -WARP_EMALFORMED;
			if ((flags & RF_FIN) && (flags != RF_FIN || flen))
				return -WARP_EMALFORMED;
			if (flags & RF_FIRST) {
				if (total > s->c.max_message)
					return -WARP_ERANGE;
				if (flen > total || ((flags & RF_LAST) && flen != total))
					return -WARP_EMALFORMED;
			}
			if (s->peer_fin && seq > s->peer_fin_seq)
				return -WARP_EMALFORMED;
			if (!udp && !apply) {
				/* In order by construction: check the sequence now. */
				if (seq != cx->v_expect++ || cx->v_fin)
					return -WARP_EMALFORMED;
				if (flags & RF_FIN) {
					if (cx->v_active)
						return -WARP_EMALFORMED;
					cx->v_fin = true;
				} else if (flags & RF_FIRST) {
					if (cx->v_active)
						return -WARP_EMALFORMED;
					cx->v_active = !(flags & RF_LAST);
					cx->v_total = total;
					cx->v_filled = flen;
				} else {
					if (!cx->v_active || flen > cx->v_total - cx->v_filled)
						return -WARP_EMALFORMED;
					cx->v_filled += flen;
					if (flags & RF_LAST) {
						if (cx->v_filled != cx->v_total)
							return -WARP_EMALFORMED;
						cx->v_active = false;
					}
				}
			}
			cx->eliciting = true;
			if (apply && !s->failed) {
				err = rx_rel(s, seq, flags, total, p, flen, now, &cx->immediate);
				if (err == -WARP_EMALFORMED) {
					pr_warn("peer broke fragment sequencing at %llu",
						(unsigned long long)seq);
					stream_fail(s, err, true, RESET_PROTO);
				}
				if (err)
					return err;
			}
			break;
		}
		case FT_DGRAM: {
			uint64_t id = decode32(warp_rd_u32(&r), cx->dg_base0);
			uint16_t idx = warp_rd_u16(&r);
			uint16_t count = warp_rd_u16(&r);
			uint16_t flen = warp_rd_u16(&r);
			const uint8_t *p = warp_rd_bytes(&r, flen);

			if (r.err)
				return r.err;
			if (!count || idx >= count)
				return -WARP_EMALFORMED;
			/* Bounds the fragment table an incomplete datagram allocates. */
			if (flen > s->c.max_datagram || count > s->c.max_datagram / DG_MIN_FRAG + 1)
				return -WARP_ERANGE;
			if (apply && !s->failed && s->state < WARP_STREAM_CLOSED)
				rx_dgram(s, id, idx, count, p, flen, now);
			break;
		}
		case FT_RESET: {
			uint16_t code = warp_rd_u16(&r);

			if (r.err)
				return r.err;
			if (apply) {
				pr_debug("peer reset the stream (code %u)", code);
				stream_fail(s, -ECONNRESET, false, code);
				return 0;
			}
			break;
		}
		default:
			return -WARP_EMALFORMED;
		}
	}
	return r.err;
}

static void dispatch(struct warp_stream *s);

int warp_stream_input(struct warp_stream *s, const void *buf, size_t len, uint64_t now)
{
	struct rx_ctx cx = { 0 };
	int err;

	if (!s || (!buf && len))
		return -EINVAL;
	if (s->dispatching)
		return -EBUSY;
	if (s->state == WARP_STREAM_DONE)
		return 0;
	if (!len) {
		s->st.malformed++;
		return -WARP_EMALFORMED;
	}
	cx.rcv_nxt0 = s->rcv_nxt;
	cx.snd_una0 = s->snd_una;
	cx.dg_base0 = s->dg_highest + 1;
	cx.v_expect = s->rcv_nxt;
	cx.v_active = s->reasm_active;
	cx.v_total = s->reasm_total;
	cx.v_filled = s->reasm_filled;
	cx.v_fin = s->peer_fin;
	err = walk(s, buf, len, now, &cx, false);
	if (err) {
		s->st.malformed++;
		return err;
	}
	start(s, now);
	s->last_rx = now;
	s->st.payloads_received++;
	cx.have_ts = cx.have_ack = cx.eliciting = false;
	err = walk(s, buf, len, now, &cx, true);
	if (!err && is_udp(s) && cx.eliciting && !s->failed) {
		s->ack_pending = true;
		s->rx_unacked++;
		/* Echo the newest timestamp seen: a late duplicate or reordered payload carries
		 * an older one and would inflate the sender's RTT samples. */
		if (cx.have_ts && (!s->have_ts || (int32_t)(cx.ts - s->last_ts) > 0)) {
			s->have_ts = true;
			s->last_ts = cx.ts;
			s->last_ts_rx = now;
		}
		if (cx.immediate || s->rx_unacked >= 2)
			s->ack_immediate = true;
		else if (s->ack_deadline == NIL)
			s->ack_deadline = now + s->c.max_ack_delay_ms * MS;
	}
	if (!err)
		check_close_done(s, now);
	dispatch(s);
	return err;
}

/* ------------------------------------------------------------------ output */

static bool cwnd_open(struct warp_stream *s)
{
	if (!is_udp(s) || s->in_flight < s->cwnd)
		return true;
	s->cwnd_limited = true;
	return false;
}

/* Shrinks *len to what the peer's receive window allows; false when it allows nothing
 * worth sending.  With nothing outstanding one fragment always goes, so a window smaller
 * than a fragment cannot stall the stream. */
static bool rwnd_fit(const struct warp_stream *s, size_t *len, size_t rem)
{
	uint64_t room;

	if (!is_udp(s) || s->outstanding == 0)
		return true;
	if (s->outstanding + FRAG_CHARGE >= s->peer_rwnd)
		return false;
	room = s->peer_rwnd - s->outstanding - FRAG_CHARGE;
	if (room >= *len)
		return true;
	if (room < MIN_CUT && room < rem)
		return false;
	*len = room;
	return true;
}

static struct sfrag *lost_next(struct warp_stream *s, uint64_t *seq)
{
	if (!s->lost_count)
		return NULL;
	if (s->lost_cursor < s->snd_una)
		s->lost_cursor = s->snd_una;
	for (; s->lost_cursor < s->snd_nxt; s->lost_cursor++) {
		if (sf(s, s->lost_cursor)->state == SF_LOST) {
			*seq = s->lost_cursor;
			return sf(s, s->lost_cursor);
		}
	}
	return NULL;
}

static void put_rel(struct warp_wr *w, uint8_t flags, uint64_t seq, const uint8_t *p, size_t len,
		    uint32_t total)
{
	warp_wr_u8(w, FT_REL);
	warp_wr_u8(w, flags);
	warp_wr_u32(w, (uint32_t)seq);
	warp_wr_u16(w, (uint16_t)len);
	if (flags & RF_FIRST)
		warp_wr_u32(w, total);
	warp_wr_bytes(w, p, len);
}

static bool rel_ready(struct warp_stream *s)
{
	uint64_t seq;
	size_t one = 1;

	if (s->lost_count && lost_next(s, &seq) && cwnd_open(s))
		return true;
	if (s->sq_head && cwnd_open(s) && rwnd_fit(s, &one, 1))
		return true;
	return s->fin_queued && !s->fin_sent && !s->sq_head;
}

/* Writes one reliable item (retransmission, new fragment or end-of-stream marker) if one
 * is ready and fits; returns true if it wrote. */
static bool try_rel(struct warp_stream *s, struct warp_wr *w, uint64_t now)
{
	size_t room = w->cap - w->off;
	struct sfrag *f;
	struct wmsg *m;
	uint64_t seq;

	f = lost_next(s, &seq);
	if (f) {
		if (!cwnd_open(s) || rel_wire(f) > room)
			return false;
		put_rel(w, f->flags, seq, f->m ? f->m->data + f->off : NULL, f->len,
			f->m ? f->m->len : 0);
		s->lost_count--;
		frag_sent(s, seq, now);
		return true;
	}
	m = s->sq_head;
	if (m) {
		size_t hdr = m->off ? REL_HDR : REL_FIRST_HDR, rem = m->len - m->off, len;
		uint8_t flags = m->off ? 0 : RF_FIRST;

		if (!cwnd_open(s) || room < hdr)
			return false;
		len = min_u64(min_u64(rem, room - hdr), UINT16_MAX);
		if (len < rem && len < MIN_CUT)
			return false;
		if (!rwnd_fit(s, &len, rem))
			return false;
		if (m->off + len == m->len)
			flags |= RF_LAST;
		if (is_udp(s)) {
			if (sring_reserve(s))
				return false;
			seq = s->snd_nxt++;
			f = sf(s, seq);
			*f = (struct sfrag){ .m = m,
					     .off = m->off,
					     .len = (uint16_t)len,
					     .flags = flags,
					     .prev = NIL,
					     .next = NIL };
			m->refs++;
			s->outstanding += len + FRAG_CHARGE;
			frag_sent(s, seq, now);
		} else {
			seq = s->snd_nxt++;
			s->st.frags_sent++;
		}
		put_rel(w, flags, seq, m->data + m->off, len, m->len);
		m->off += len;
		if (m->off == m->len) {
			s->sq_head = m->next;
			if (!s->sq_head)
				s->sq_tail = NULL;
			s->sq_msgs--;
			wmsg_put(s, m);
		}
		return true;
	}
	if (s->fin_queued && !s->fin_sent) {
		if (room < REL_HDR || (is_udp(s) && sring_reserve(s)))
			return false;
		seq = s->snd_nxt++;
		s->fin_seq = seq;
		s->fin_sent = true;
		put_rel(w, RF_FIN, seq, NULL, 0, 0);
		if (is_udp(s)) {
			f = sf(s, seq);
			*f = (struct sfrag){ .flags = RF_FIN, .prev = NIL, .next = NIL };
			s->outstanding += FRAG_CHARGE;
			frag_sent(s, seq, now);
		} else {
			s->close_check = true;
		}
		return true;
	}
	return false;
}

static bool try_dgram(struct warp_stream *s, struct warp_wr *w)
{
	struct dmsg *d = s->dq_head;
	size_t room = w->cap - w->off, off, len;

	if (!d)
		return false;
	if (!d->count) {
		d->id = s->dg_next_id++;
		d->count = (uint16_t)(d->len ? (d->len + s->dg_frag_max - 1) / s->dg_frag_max : 1);
	}
	off = (size_t)d->idx * s->dg_frag_max;
	len = min_u64(s->dg_frag_max, d->len - off);
	if (room < DGRAM_HDR + len)
		return false;
	warp_wr_u8(w, FT_DGRAM);
	warp_wr_u32(w, (uint32_t)d->id);
	warp_wr_u16(w, d->idx);
	warp_wr_u16(w, d->count);
	warp_wr_u16(w, (uint16_t)len);
	warp_wr_bytes(w, d->data + off, len);
	if (++d->idx == d->count) {
		s->dq_head = d->next;
		if (!s->dq_head)
			s->dq_tail = NULL;
		s->dq_bytes -= d->len + DG_CHARGE;
		s->st.dgrams_sent++;
		free(d);
		check_writable(s);
	}
	return true;
}

/* Writes an ACK frame of at most max bytes (>= ACK_FIXED), trimming SACK blocks to fit. */
static void put_ack(struct warp_stream *s, struct warp_wr *w, size_t max, uint64_t now)
{
	size_t room = min_u64(w->cap - w->off, max), nb = 0, k = 0;
	uint64_t rwnd = s->c.rcvbuf - s->reasm_filled, delay = 0;

	if (room >= ACK_FIXED)
		nb = min_u64(min_u64(s->rcvd.n, ACK_MAX_BLOCKS), (room - ACK_FIXED) / ACK_BLOCK);
	if (s->have_ts)
		delay = min_u64((now - s->last_ts_rx) / 1000 / ACK_DELAY_UNIT, UINT16_MAX);
	warp_wr_u8(w, FT_ACK);
	warp_wr_u32(w, (uint32_t)s->rcv_nxt);
	warp_wr_u32(w, s->have_ts ? s->last_ts : 0);
	warp_wr_u16(w, (uint16_t)delay);
	warp_wr_u32(w, (uint32_t)min_u64(rwnd, UINT32_MAX));
	warp_wr_u8(w, (uint8_t)nb);
	/* Too many holes to report: the lowest ones (what the sender needs to fill first)
	 * plus the one holding the newest arrival (what drives its loss detection). */
	if (nb && nb < s->rcvd.n) {
		k = rset_find(&s->rcvd, s->last_ooo_seq);
		if (k < nb - 1 || k == s->rcvd.n)
			k = nb - 1;
	}
	for (size_t i = 0; i < nb; i++) {
		const struct range *g = &s->rcvd.r[i == nb - 1 && nb < s->rcvd.n ? k : i];

		warp_wr_u32(w, (uint32_t)g->s);
		warp_wr_u32(w, (uint32_t)g->e);
	}
	s->ack_pending = s->ack_immediate = false;
	s->ack_deadline = NIL;
	s->rx_unacked = 0;
	s->st.acks_sent++;
}

int warp_stream_poll(struct warp_stream *s, uint8_t *buf, size_t cap, uint64_t now, bool *ack_only)
{
	struct warp_wr w;
	bool data, ack, wrote = false, elicit = false, any;

	if (!s || !buf || !ack_only)
		return -EINVAL;
	*ack_only = false;
	if (cap < s->c.payload_max)
		return -EMSGSIZE;
	start(s, now);
	if (s->state == WARP_STREAM_DONE)
		return 0;
	w = warp_wr_init(buf, s->c.payload_max);
	if (s->reset_pending) {
		warp_wr_u8(&w, FT_RESET);
		warp_wr_u16(&w, s->reset_code);
		s->reset_pending = false;
		s->state = WARP_STREAM_DONE;
		s->st.payloads_sent++;
		return (int)w.off;
	}
	data = s->state < WARP_STREAM_CLOSED && (rel_ready(s) || s->dq_head);
	ack = is_udp(s) && s->ack_pending &&
	      (data || s->ack_immediate || (s->ack_deadline != NIL && now >= s->ack_deadline));
	if (!data && !ack)
		return 0;
	if (data && is_udp(s))
		warp_wr_reserve(&w, TS_LEN);
	/* Acks go first; with data to follow they may take at most a quarter of the room. */
	if (ack)
		put_ack(s, &w, data ? max_u64(ACK_FIXED, w.cap / 4) : w.cap, now);
	for (any = data; any;) {
		bool rel_first = !s->turn_dgram;

		any = false;
		if (rel_first && try_rel(s, &w, now)) {
			any = elicit = wrote = true;
			s->turn_dgram = true;
		} else if (try_dgram(s, &w)) {
			any = wrote = true;
			s->turn_dgram = false;
		} else if (!rel_first && try_rel(s, &w, now)) {
			any = elicit = wrote = true;
			s->turn_dgram = true;
		}
	}
	if (data && is_udp(s)) {
		if (elicit) {
			uint32_t ts = (uint32_t)(now / 1000);

			buf[0] = FT_TS;
			warp_put_u32(buf + 1, ts ? ts : 1);
		} else {
			memmove(buf, buf + TS_LEN, w.off - TS_LEN);
			w.off -= TS_LEN;
		}
	}
	if (!w.off)
		return 0;
	*ack_only = !wrote;
	s->st.payloads_sent++;
	return (int)w.off;
}

/* ------------------------------------------------------------------ timers, events */

uint64_t warp_stream_next_deadline(const struct warp_stream *s)
{
	uint64_t d = NIL;

	if (!s || s->state == WARP_STREAM_DONE)
		return s && s->nev ? 0 : NIL;
	if (s->nev || s->close_check)
		return 0;
	if (s->state == WARP_STREAM_CLOSED) {
		if (!s->reset_pending)
			d = s->linger_until;
		if (!s->reset_pending && s->linger_acks)
			d = min_u64(d, s->linger_ack_at);
	} else if (s->c.idle_timeout_ms && s->started)
		d = s->last_rx + s->c.idle_timeout_ms * MS;
	if (is_udp(s)) {
		if (s->ack_pending && !s->ack_immediate && s->ack_deadline != NIL)
			d = min_u64(d, s->ack_deadline);
		d = min_u64(d, rto_deadline(s));
		d = min_u64(d, s->loss_deadline);
	}
	if (s->nparts)
		d = min_u64(d, s->parts[0]->first_ns + s->c.dgram_timeout_ms * MS);
	return d;
}

void warp_stream_on_timer(struct warp_stream *s, uint64_t now)
{
	if (!s || s->dispatching)
		return;
	start(s, now);
	if (s->close_check) {
		s->close_check = false;
		check_close_done(s, now);
	}
	if (s->state == WARP_STREAM_CLOSED && !s->reset_pending && s->linger_acks &&
	    now >= s->linger_ack_at) {
		s->linger_acks--;
		s->linger_ack_at = now + (rto_base(s) << (LINGER_ACKS - s->linger_acks));
		s->ack_pending = s->ack_immediate = true;
	}
	if (s->state == WARP_STREAM_CLOSED && !s->reset_pending && now >= s->linger_until)
		s->state = WARP_STREAM_DONE;
	if (s->state < WARP_STREAM_CLOSED && s->c.idle_timeout_ms &&
	    now >= s->last_rx + s->c.idle_timeout_ms * MS) {
		pr_debug("idle for %u ms", s->c.idle_timeout_ms);
		stream_fail(s, -WARP_EIDLE, false, 0);
	}
	if (is_udp(s) && s->state < WARP_STREAM_DONE) {
		if (s->ack_pending && s->ack_deadline != NIL && now >= s->ack_deadline)
			s->ack_immediate = true;
		if (s->loss_deadline <= now)
			detect_losses(s, now);
		if (rto_deadline(s) <= now)
			on_rto(s, now);
	}
	while (s->nparts && s->parts[0]->first_ns + s->c.dgram_timeout_ms * MS <= now)
		dpart_drop(s, 0, true);
	dispatch(s);
}

static void stream_destroy(struct warp_stream *s)
{
	tx_reset_state(s);
	rx_reset_state(s);
	for (size_t i = 0; i < s->nev; i++)
		free(s->ev[i].owned);
	free(s->ev);
	free(s->sring);
	free(s->ooo);
	free(s->rcvd.r);
	free(s->sacked.r);
	free(s);
}

static void dispatch(struct warp_stream *s)
{
	const struct warp_stream_conf *c = &s->c;

	if (s->dispatching)
		return;
	s->dispatching = true;
	for (size_t i = 0; i < s->nev; i++) {
		struct event e = s->ev[i];
		/* After a local abort the application wants nothing more. */
		if (!s->free_pending && !s->app_aborted) {
			switch (e.type) {
			case EV_MSG:
				if (c->on_message)
					c->on_message(c->user, e.p, e.len, e.flags);
				break;
			case EV_WRITABLE:
				if (c->on_writable)
					c->on_writable(c->user);
				break;
			case EV_EOS:
				if (c->on_eos)
					c->on_eos(c->user);
				break;
			case EV_CLOSED:
				if (c->on_closed)
					c->on_closed(c->user, e.err);
				break;
			}
		}
		free(e.owned);
	}
	s->nev = 0;
	s->dispatching = false;
	if (s->free_pending)
		stream_destroy(s);
}

/* ------------------------------------------------------------------ public API */

static int conf_check(struct warp_stream_conf *c)
{
	if (c->mode != WARP_STREAM_UDP && c->mode != WARP_STREAM_TCP)
		return -EINVAL;
	if (c->payload_max < 128 || c->payload_max > UINT16_MAX)
		return -EINVAL;
	if (!c->max_message)
		c->max_message = 1u << 20;
	if (!c->max_datagram)
		c->max_datagram = 64u << 10;
	if (!c->sndbuf)
		c->sndbuf = max_u64(4u << 20, c->max_message + MSG_CHARGE);
	if (!c->rcvbuf)
		c->rcvbuf = max_u64(4u << 20, c->max_message);
	if (!c->dgram_sndbuf)
		c->dgram_sndbuf = max_u64(1u << 20, c->max_datagram + DG_CHARGE);
	if (!c->dgram_rcvbuf)
		c->dgram_rcvbuf = max_u64(1u << 20, c->max_datagram);
	if (!c->max_ack_delay_ms)
		c->max_ack_delay_ms = 25;
	if (!c->rto_initial_ms)
		c->rto_initial_ms = 1000;
	if (!c->rto_min_ms)
		c->rto_min_ms = 200;
	if (!c->rto_max_ms)
		c->rto_max_ms = 60000;
	if (!c->max_rto_count)
		c->max_rto_count = 12;
	if (!c->dgram_timeout_ms)
		c->dgram_timeout_ms = 2000;
	if (c->max_message > UINT32_MAX - MSG_CHARGE || c->sndbuf < c->max_message + MSG_CHARGE ||
	    c->rcvbuf < c->max_message || c->rcvbuf > UINT32_MAX ||
	    c->dgram_sndbuf < c->max_datagram + DG_CHARGE || c->dgram_rcvbuf < c->max_datagram)
		return -WARP_ECONFIG;
	if (c->rto_min_ms > c->rto_max_ms ||
	    (uint64_t)c->max_ack_delay_ms * 1000 > (uint64_t)UINT16_MAX * ACK_DELAY_UNIT)
		return -WARP_ECONFIG;
	return 0;
}

struct warp_stream *warp_stream_new(const struct warp_stream_conf *conf)
{
	struct warp_stream *s;
	int err;

	if (!conf) {
		errno = EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		errno = ENOMEM;
		return NULL;
	}
	s->c = *conf;
	err = conf_check(&s->c);
	if (err)
		goto out;
	s->dg_frag_max = s->c.payload_max - DGRAM_HDR - (is_udp(s) ? TS_LEN : 0);
	if ((s->c.max_datagram + s->dg_frag_max - 1) / s->dg_frag_max > UINT16_MAX) {
		err = -WARP_ECONFIG;
		goto out;
	}
	s->state = WARP_STREAM_OPEN;
	s->tx_head = s->tx_tail = NIL;
	s->loss_deadline = NIL;
	s->ack_deadline = NIL;
	s->rack_seq_hi = NIL;
	s->mss = s->c.payload_max;
	s->cwnd = min_u64(10 * s->mss, max_u64(14720, 2 * s->mss));
	s->ssthresh = UINT64_MAX;
	s->peer_rwnd = 64u << 10; /* until the first ack says otherwise */
	s->dg_next_id = 1;
	s->ooo_span_max = s->c.rcvbuf / FRAG_CHARGE;
	return s;
out:
	free(s);
	errno = -err;
	return NULL;
}

void warp_stream_free(struct warp_stream *s)
{
	if (!s)
		return;
	if (s->dispatching) {
		s->free_pending = true;
		return;
	}
	stream_destroy(s);
}

int warp_stream_send(struct warp_stream *s, const void *data, size_t len, unsigned int flags,
		     uint64_t now)
{
	if (!s || (!data && len))
		return -EINVAL;
	if (flags != WARP_MSG_RELIABLE && flags != WARP_MSG_DATAGRAM)
		return -EINVAL;
	start(s, now);
	if (s->local_closed)
		return -EPIPE;
	if (s->state != WARP_STREAM_OPEN)
		return -WARP_ECLOSED;
	if (flags == WARP_MSG_RELIABLE) {
		struct wmsg *m;

		if (len > s->c.max_message)
			return -EMSGSIZE;
		if (s->snd_used + len + MSG_CHARGE > s->c.sndbuf) {
			s->want_rel = len + MSG_CHARGE;
			return -EAGAIN;
		}
		m = malloc(sizeof(*m) + len);
		if (!m)
			return -ENOMEM;
		m->next = NULL;
		m->refs = 1;
		m->len = (uint32_t)len;
		m->off = 0;
		if (len)
			memcpy(m->data, data, len);
		if (s->sq_tail)
			s->sq_tail->next = m;
		else
			s->sq_head = m;
		s->sq_tail = m;
		s->sq_msgs++;
		s->snd_used += len + MSG_CHARGE;
		s->st.msgs_sent++;
		s->st.bytes_sent += len;
	} else {
		struct dmsg *d;

		if (len > s->c.max_datagram)
			return -EMSGSIZE;
		if (s->dq_bytes + len + DG_CHARGE > s->c.dgram_sndbuf) {
			s->want_dg = len + DG_CHARGE;
			s->st.dgrams_dropped_tx++;
			return -EAGAIN;
		}
		d = calloc(1, sizeof(*d) + len);
		if (!d)
			return -ENOMEM;
		d->len = (uint32_t)len;
		if (len)
			memcpy(d->data, data, len);
		if (s->dq_tail)
			s->dq_tail->next = d;
		else
			s->dq_head = d;
		s->dq_tail = d;
		s->dq_bytes += len + DG_CHARGE;
	}
	return 0;
}

int warp_stream_close(struct warp_stream *s, bool graceful)
{
	if (!s)
		return -EINVAL;
	if (s->state >= WARP_STREAM_CLOSED)
		return -WARP_ECLOSED;
	if (!graceful) {
		s->local_closed = true;
		s->app_aborted = true;
		stream_fail(s, -ECONNABORTED, true, RESET_APP);
		return 0;
	}
	if (s->local_closed)
		return 0;
	s->local_closed = true;
	s->fin_queued = true;
	s->state = WARP_STREAM_CLOSING;
	return 0;
}

void warp_stream_touch(struct warp_stream *s, uint64_t now)
{
	if (!s)
		return;
	start(s, now);
	if (now > s->last_rx)
		s->last_rx = now;
}

uint64_t warp_stream_last_activity(const struct warp_stream *s)
{
	return s ? s->last_rx : 0;
}

enum warp_stream_state warp_stream_state(const struct warp_stream *s)
{
	return s ? s->state : WARP_STREAM_DONE;
}

size_t warp_stream_writable(const struct warp_stream *s)
{
	size_t room;

	if (!s || s->state != WARP_STREAM_OPEN || s->local_closed)
		return 0;
	room = s->c.sndbuf - s->snd_used;
	room = room > MSG_CHARGE ? room - MSG_CHARGE : 0;
	return min_u64(room, s->c.max_message);
}

void warp_stream_stats(const struct warp_stream *s, struct warp_stream_stats *st)
{
	if (!s || !st)
		return;
	*st = s->st;
	if (is_udp(s)) {
		st->srtt_us = s->srtt / 1000;
		st->rttvar_us = s->rttvar / 1000;
		st->rto_us = rto_cur(s) / 1000;
		st->min_rtt_us = s->min_rtt / 1000;
		st->latest_rtt_us = s->latest_rtt / 1000;
		st->cwnd = s->cwnd;
		st->ssthresh = s->ssthresh;
		st->bytes_in_flight = s->in_flight;
		st->pacing_rate = s->have_rtt && s->srtt ? s->cwnd * 1250000000ull / s->srtt : 0;
		st->peer_rwnd = s->peer_rwnd;
		st->outstanding = s->outstanding;
	}
	st->sndbuf_used = s->snd_used;
	st->send_queue_msgs = s->sq_msgs;
	st->dgram_queue_bytes = s->dq_bytes;
	st->rcv_buffered = s->reasm_filled + s->ooo_bytes;
	st->last_activity_ns = s->last_rx;
	st->state = s->state;
	st->close_err = s->close_err;
}
