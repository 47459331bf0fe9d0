/* SPDX-License-Identifier: MIT */
/*
 * Shared machinery of the UDP punching strategies (udp_punch, random_probe):
 *
 *  - pure helpers: what kind of NAT a side has for punching, port prediction from the delta
 *    type, feasibility of a pair, the birthday-paradox success probability, a no-repeat port
 *    permutation, probe pacing, candidate lists (unit-tested, no network);
 *  - probe sessions: a per-attempt authenticated PROBE / PROBE_REPLY exchange, dispatched by
 *    one node-wide handler (pipe_set_probe_handler()), sessions found by the header CID
 *    (derived from the attempt id, so both sides use the same);
 *  - allocation sampling: a STUN Binding from a throwaway socket tells the port a
 *    sequential NAT handed out last, just before predicting the next ones;
 *  - temporary acceptance of inbound handshakes on a node that does not listen (the peer
 *    initiates from a socket only it can use; the pipe is claimed, anything else refused);
 *  - CANCEL to the peer when an attempt ends without a pipe.
 */
#ifndef WARP_TRAVERSE_PUNCH_H
#define WARP_TRAVERSE_PUNCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/address.h>

#include "core/list.h"
#include "pipe/keepalive.h"

struct warp_node;
struct punch_node;

/* ---- what a side's NAT means for punching ---- */

enum punch_class {
	PUNCH_UNKNOWN = 0,
	PUNCH_OPEN,	  /* public address, no translation (a firewall may still filter) */
	PUNCH_EIM,	  /* one external port for every destination: the reflexive endpoint */
	PUNCH_SYM_PRED,	  /* a new port per destination, predictable from the delta type */
	PUNCH_SYM_RANDOM, /* a new port per destination, random */
	PUNCH_BLOCKED,	  /* no UDP */
};

struct punch_nat {
	enum punch_class cls;
	uint8_t nat;	    /* enum warp_addr_nat */
	uint8_t filtering;  /* enum warp_addr_behaviour */
	uint8_t delta_type; /* enum warp_addr_delta */
	int32_t delta_value;
	bool has_ext;
	uint8_t family; /* 4 or 6 */
	uint8_t ext_addr[16];
	uint16_t ext_port;   /* reflexive port when EIM (0: unknown) */
	uint16_t local_port; /* the node's UDP port */
};

/* From a route of a node address (ours or the peer's). */
void punch_nat_from_route(struct punch_nat *n, const struct warp_addr_route *r);
const char *punch_class_name(enum punch_class c);
/* True when predicting needs the port of the NAT's latest allocation (a sample). */
bool punch_needs_sample(const struct punch_nat *n);

/* Predicted ports per sequential side: the next mapping and a few after it, in case other
 * traffic takes some first. */
#define PUNCH_WINDOW 8

/* External ports the node socket's next mappings will likely get, most likely first:
 * EQUAL -> the local port, PRESERVING -> local + offset, INDEPENDENT / DEPENDENT ->
 * last + k * delta for k = 1..max.  Returns how many (0: unpredictable). */
int punch_predict(const struct punch_nat *n, uint16_t last_port, uint16_t *out, int max);

/* After a second sample: the index, in the list punch_predict() made from the first sample,
 * of the port our next new mapping will get (the second sample took one; other traffic may
 * have taken more).  -1 when the two samples do not fit the delta. */
int punch_drift_index(const struct punch_nat *n, uint16_t first, uint16_t second);

/* NULL when udp_punch can connect this pair, else why not (for the trace). */
const char *punch_udp_infeasible(const struct punch_nat *us, const struct punch_nat *peer);
/* NULL when random_probe applies (one side symmetric, the other endpoint-independent); then
 * *we_hard says whether we are the side that opens the many mappings. */
const char *punch_random_infeasible(const struct punch_nat *us, const struct punch_nat *peer,
				    bool *we_hard);

/* The route of a node address of a family fit for punching (external facts, or a public
 * address): its index or -1. */
int punch_peer_route(const struct warp_node_addr *to, int family);
/* Our own side of a family (from our address, with the live reflexive endpoint). */
bool punch_own_nat(struct warp_node *node, int family, struct punch_nat *out);
/* External address of n with a port. */
void punch_ep(struct sockaddr_storage *out, const struct punch_nat *n, uint16_t port);

/* ---- birthday paradox ---- */

/* Chance that `probes` distinct random ports out of `range` hit at least one of `open` ports
 * (hypergeometric: 1 - C(range - open, probes) / C(range, probes)). */
double punch_birthday_p(uint32_t range, uint32_t open, uint64_t probes);
/* The chance of no hit, 1 - p, precise where p rounds to 1. */
double punch_birthday_miss(uint32_t range, uint32_t open, uint64_t probes);
/* Expected number of distinct probes until the first hit: (range + 1) / (open + 1). */
double punch_expected_probes(uint32_t range, uint32_t open);

/* Visits every port of [lo, hi] once in a scrambled order: lo + (a * i + b) mod n, a coprime
 * with n. */
struct punch_perm {
	uint32_t lo, n, a, b, i;
};

void punch_perm_init(struct punch_perm *p, uint16_t lo, uint16_t hi, uint32_t ra, uint32_t rb);
/* Next port, 0 once all were visited. */
uint16_t punch_perm_next(struct punch_perm *p);

/* How many probes are due after elapsed_ns at rate per second, `sent` already out, at most
 * burst at once (a stalled loop does not turn into a flood). */
uint32_t punch_pace_due(uint32_t rate, uint64_t elapsed_ns, uint64_t sent, uint32_t burst);

/* ---- candidate endpoints ---- */

#define PUNCH_MAX_CANDS 16

struct punch_cands {
	int n;
	struct sockaddr_storage ep[PUNCH_MAX_CANDS];
	uint8_t kind[PUNCH_MAX_CANDS]; /* enum warp_sig_ep_kind, 0 = peer-reflexive (seen) */
};

/* Index of ep in the list, or -1. */
int punch_cands_find(const struct punch_cands *c, const struct sockaddr *ep);
/* Appends ep when new: its index, -EEXIST (already there) or -ENOSPC. */
int punch_cands_add(struct punch_cands *c, const struct sockaddr *ep, uint8_t kind);
const char *punch_kind_name(uint8_t kind);

/* ---- probe sessions ---- */

struct punch_sess;
/* A verified PROBE (reply false; it was already answered) or PROBE_REPLY from src, received
 * on the node's socket (fd -1) or on socket fd.  pn: the probe's number (a reply echoes the
 * number of the probe it answers). */
typedef void (*punch_rx_fn)(struct punch_sess *s, bool reply, const struct sockaddr *src, int fd,
			    uint64_t pn, void *user);

struct punch_sess {
	struct list_head link;
	struct punch_node *pn;
	uint8_t cid[WARP_CID_LEN];
	struct warp_probe_keys keys;
	uint64_t pn_next;
	uint64_t probes_sent, probes_rx, replies_rx;
	punch_rx_fn rx;
	void *user;
};

int punch_sess_start(struct punch_sess *s, struct warp_node *node, const uint8_t attempt[16],
		     const uint8_t secret[WARP_PROBE_SECRET_LEN], enum warp_probe_role role,
		     punch_rx_fn rx, void *user);
/* Safe on a session that never started or already stopped. */
void punch_sess_stop(struct punch_sess *s);
/* Sends a PROBE to dst from the node's socket (fd < 0) or from fd. */
int punch_send_probe(struct punch_sess *s, int fd, const struct sockaddr *dst);
/* Handles a datagram that arrived on a socket of our own: a PROBE for this session is
 * answered from fd and reported to rx.  True when it belonged to the session. */
bool punch_sess_input(struct punch_sess *s, const uint8_t *pkt, size_t len,
		      const struct sockaddr *src, int fd);

/* ---- NAT allocation sample ---- */

struct punch_sample;
/* err 0 and the external port the NAT gave the throwaway socket. */
typedef void (*punch_sample_cb)(int err, uint16_t port, void *user);
/* STUN Binding from a fresh socket of the family to the node's first STUN server.  The
 * callback never runs inside this call. */
struct punch_sample *punch_sample_start(struct warp_node *node, int family, punch_sample_cb cb,
					void *user);
void punch_sample_cancel(struct punch_sample *s);

/* ---- inbound handshakes on a node that does not listen ---- */

/* While held, the node accepts inbound handshakes even without an accept callback; pipes
 * that no claim takes are closed.  No-op on a listening node.  Reference counted. */
struct punch_node *punch_accept_hold(struct warp_node *node);
void punch_accept_release(struct punch_node *pn);

/* ---- signalling ---- */

/* Tells the peer to stop (CANCEL with code, fire and forget). */
void punch_send_cancel(struct warp_node *node, const struct warp_node_addr *to,
		       const uint8_t attempt[16], uint16_t code);

#endif
