/* SPDX-License-Identifier: MIT */
/*
 * Traversal framework: a connect operation holds attempts; each strategy plans its
 * attempts for the pair of addresses (or records why it can't), starts them when their
 * stagger delay expires, and reports a verified pipe or a failure.
 */
#ifndef WARP_TRAVERSE_H
#define WARP_TRAVERSE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/connect.h>

#include "core/list.h"
#include "node/node_internal.h"
#include "signal/msg.h"

struct warp_connect;
struct tv_attempt;

/* One way to reach the peer: family, route class, transport and endpoints. */
struct tv_combo {
	int family;                     /* AF_INET or AF_INET6 */
	const char *route;              /* "loopback", "lan", "internet", "relay" */
	bool tcp;
	struct sockaddr_storage remote;
	struct sockaddr_storage local;  /* source address (unspecified: any) */
	int ifindex;
	int rroute;                     /* index of the target's route, -1 if none */
	enum warp_path_class cls;
	bool long_shot;                 /* the peer's NAT likely drops it: does not hold the relay back */
};

struct warp_sig_msg;
struct warp_signal;
struct warp_broker_addr;

struct tv_strategy {
	enum warp_strategy id;
	const char *name;
	/* Passive side: an offer for this strategy arrived over signalling from an allowed
	 * peer while we listen (PUNCH_OFFER with text = name, CONNECT_BACK, RELAY_OFFER). */
	void (*offer)(struct warp_node *node, struct warp_signal *sig, const struct warp_sig_msg *m);
	/* Adds attempts with tv_add() and impossible combinations with tv_skip(). */
	void (*plan)(struct warp_connect *c);
	/* Starts an attempt: 0, or an error that fails it at once. */
	int (*start)(struct tv_attempt *a);
	/* Stops a running attempt and frees what start() allocated (not called after the
	 * attempt reported its end). */
	void (*cancel)(struct tv_attempt *a);
};

struct tv_attempt {
	struct warp_connect *c;
	const struct tv_strategy *st;
	struct tv_combo combo;
	struct warp_attempt *rec;
	struct warp_timer *timer;
	bool running, done;
	void *priv;
	struct list_head link;
};

struct warp_connect {
	struct warp_node *node;
	struct warp_node_addr to;
	struct warp_connect_opts opts;
	struct warp_connect_result res;
	uint32_t strategies;
	uint64_t t0;
	bool same_host;
	int on_link;                    /* peer shares a link with us: -1 unknown yet, 0, 1 */
	bool finished;
	int depth;                      /* re-entrancy guard for finishing inside callbacks */
	struct list_head attempts;
	struct list_head node_link;     /* the node's running connects */
	struct warp_timer *deadline;
	warp_connect_cb cb;
	void *user;
};

struct tv_attempt *tv_add(struct warp_connect *c, const struct tv_strategy *st,
			  const struct tv_combo *combo, uint32_t delay_ms);
void tv_skip(struct warp_connect *c, const struct tv_strategy *st, const struct tv_combo *combo,
	     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* An attempt produced a verified pipe (the attempt's reference passes to the connect). */
void tv_won(struct tv_attempt *a, struct warp_pipe *pipe);
void tv_failed(struct tv_attempt *a, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
double tv_elapsed_ms(const struct warp_connect *c);

/* Endpoint of a target route for a transport on its LAN (nic) or internet (ext) side;
 * false when the route has none. */
bool tv_route_endpoint(const struct warp_addr_route *r, bool tcp, bool external,
		       struct sockaddr_storage *out);
/* Classifies how this node can reach a target route from its interfaces: fills combos
 * (loopback / lan / internet) and returns how many. */
int tv_route_combos(struct warp_connect *c, int rroute, bool tcp, struct tv_combo *out, int max);

/* ---- signalling helpers ---- */

/* The peer's brokers from its address hints; returns how many. */
size_t tv_peer_brokers(const struct warp_node_addr *to, struct warp_broker_addr *out, size_t max);
/* 16-byte endpoint form of signalling messages. */
void tv_sig_ep(struct warp_sig_ep *out, const struct sockaddr *sa, unsigned int kind);
void tv_sig_ep_addr(const struct warp_sig_ep *ep, struct sockaddr_storage *out);

/* ---- inbound claims: wait for the peer to connect to us (reverse connect, punching where
 * the peer ends up initiating) ---- */
struct tv_claim;
typedef void (*tv_claim_cb)(struct tv_claim *cl, struct warp_pipe *pipe, void *user);
/* The next inbound pipe proving key goes to cb (which owns the reference) instead of the
 * listener.  Freed after cb runs, or by tv_claim_cancel(). */
struct tv_claim *tv_claim_inbound(struct warp_node *node, const uint8_t key[WARP_PUBKEY_LEN],
				  tv_claim_cb cb, void *user);
void tv_claim_cancel(struct tv_claim *cl);

/* ---- passive sessions: per-node list the node frees on close ---- */
struct tv_passive {
	struct list_head link;
	void (*free)(struct tv_passive *ps);
	uint8_t attempt[16];
	uint8_t peer[WARP_PUBKEY_LEN];
};
void tv_passive_add(struct warp_node *node, struct tv_passive *ps);
void tv_passive_del(struct tv_passive *ps);
struct tv_passive *tv_passive_find(struct warp_node *node, const uint8_t attempt[16]);

void tv_track_connect(struct warp_node *node, struct warp_connect *c);
int traverse_node_start(struct warp_node *node);
void traverse_node_stop(struct warp_node *node);

extern const struct tv_strategy tv_direct;
extern const struct tv_strategy tv_reverse;
extern const struct tv_strategy tv_tcp_punch;
extern const struct tv_strategy tv_udp_punch;
extern const struct tv_strategy tv_random_probe;
extern const struct tv_strategy tv_turn;

#endif
