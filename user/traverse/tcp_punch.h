/* SPDX-License-Identifier: MIT */
/*
 * TCP hole punching helpers: the decisions (can this pair punch, which external ports to
 * announce, when to meet and how often to retry) as pure functions, and the socket work:
 * one local port per attempt, its TCP mapping learnt by STUN over TCP from that very port,
 * and simultaneous connect()s to the peer's endpoints in a bounded window.
 *
 * One port per attempt: a listening socket holds it for the whole attempt (SO_REUSEADDR +
 * SO_REUSEPORT, so the STUN and connect sockets can bind it too) and answers a peer SYN that
 * arrives while no connect socket for that peer exists (between retries), instead of the
 * kernel resetting it.
 */
#ifndef WARP_TRAVERSE_TCP_PUNCH_H
#define WARP_TRAVERSE_TCP_PUNCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/loop.h>

#define TP_MAX_TARGETS	  8
#define TP_MARGIN_MS	  25   /* added to the measured transit before the meeting time */
#define TP_DURATION_MS	  3500 /* default window: the kernel's SYN retries at 1 s and 3 s */
#define TP_MIN_DURATION	  500
#define TP_MAX_TRANSIT_MS 3000 /* larger "transit" times are clock trouble, not latency */
#define TP_SEQ_SLACK	  2    /* extra predictions for other hosts' mappings in between */
#define TP_STUN_RESYN_MS  300  /* STUN connect unanswered: a fresh SYN */

/* What one side knows of its NAT (values of enum warp_addr_nat / _behaviour / _delta, which
 * equal the warp_nat_* ones). */
struct tp_nat {
	uint8_t type;
	uint8_t mapping;
	uint8_t delta;
	int32_t delta_value;
	bool udp_blocked;
};

/* NULL when the pair can punch, else why not ("our ..." or "the peer's ..."). */
const char *tp_infeasible(const struct tp_nat *self, const struct tp_nat *peer);

/* Endpoints to announce for a punch socket whose mapping STUN saw as `mapped`, when it will
 * open `nconn` connections (one per peer endpoint): the mapping itself for endpoint-
 * independent (or port-preserving) NATs, the next ports of a sequential symmetric NAT.
 * kinds[] gets WARP_SIG_EP_REFLEXIVE or _PREDICTED.  Returns how many (at most max). */
int tp_predict(const struct tp_nat *self, const struct sockaddr *mapped, unsigned int nconn,
	       struct sockaddr_storage *out, uint8_t *kinds, int max);

struct tp_sched {
	uint64_t start_ms;    /* meeting time, synced clock */
	uint32_t interval_ms; /* tick: a failed connect is retried at the next one */
	uint32_t duration_ms; /* window from the meeting time */
	uint32_t max_tries;   /* connect() calls per peer endpoint */
};

/* The answerer's plan.  transit_ms: how long the offer took (synced clocks), a measure of
 * how long the answer needs back; offer_start_ms: the offerer's earliest start;
 * offer_duration_ms: what it can spend (0: default); unc_ms: clock uncertainty. */
void tp_schedule(uint64_t now_ms, uint64_t transit_ms, uint64_t offer_start_ms,
		 uint32_t offer_duration_ms, uint32_t unc_ms, struct tp_sched *out);
/* The offerer's side of the same plan, from the answer's start, interval and duration. */
void tp_sched_from(uint64_t start_ms, uint32_t interval_ms, uint32_t duration_ms,
		   struct tp_sched *out);

/* One peer endpoint's connect state.  A connect in progress is never replaced: the kernel
 * retransmits its SYN (1 s, 3 s), and a fresh socket (new sequence number) would answer a
 * late SYN-ACK or challenge ACK to the old one with a reset, killing the half-open
 * connection the peer holds. */
struct tp_slot {
	bool open; /* a connect is in progress */
	bool done; /* connected: nothing more to do */
	uint32_t tries;
};
/* Does the slot need a (new) connect() at now_ms?  Only after a failure (reset,
 * unreachable), never after end_ms or max_tries. */
bool tp_slot_due(const struct tp_sched *s, const struct tp_slot *sl, uint64_t now_ms,
		 uint64_t end_ms);

/* ---- sockets ---- */

struct tcp_punch;

struct tp_ops {
	/* A TCP connection to the peer is up; fd (non-blocking, connected) now belongs to the
	 * callee.  The callee may free the punch from here. */
	void (*connected)(struct tcp_punch *tp, int fd, const struct sockaddr *remote, void *user);
	/* The window closed with endpoints still unconnected.  May free the punch. */
	void (*ended)(struct tcp_punch *tp, void *user);
};

/* Reserves a local port of family (listening socket on the wildcard address). */
struct tcp_punch *tp_new(struct warp_loop *loop, int family, const struct tp_ops *ops, void *user);
/* Closes every socket the punch still owns; no callbacks. */
void tp_free(struct tcp_punch *tp);
/* Wildcard address with the reserved port. */
const struct sockaddr *tp_local(const struct tcp_punch *tp);
int tp_add_target(struct tcp_punch *tp, const struct sockaddr *remote);
unsigned int tp_ntargets(const struct tcp_punch *tp);
/* Starts connecting after delay_ms, as s says (its start_ms is not used). */
void tp_start(struct tcp_punch *tp, const struct tp_sched *s, uint64_t delay_ms);
/* Endpoints still being tried. */
unsigned int tp_pending(const struct tcp_punch *tp);
/* connect() calls so far and the last error a connect ended with (0: none). */
void tp_stats(const struct tcp_punch *tp, unsigned int *tries, int *last_err);

/* STUN Binding over TCP from local (bound with SO_REUSEADDR + SO_REUSEPORT, so it can share
 * the punch port): cb gets 0 and the mapping, or an error.  Frees itself after cb. */
struct tp_stun;
typedef void (*tp_stun_cb)(int err, const struct sockaddr *mapped, void *user);
struct tp_stun *tp_stun_start(struct warp_loop *loop, const struct sockaddr *local,
			      const struct sockaddr *server, uint32_t timeout_ms, tp_stun_cb cb,
			      void *user);
/* Abandons a request whose callback has not run (no callback). */
void tp_stun_cancel(struct tp_stun *st);

#endif
