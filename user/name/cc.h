/* SPDX-License-Identifier: MIT */
/*
 * Sans-IO client core: one operation (GET, PUT or DEL) sent to several servers and, for a GET,
 * raced against the local link.  The I/O layer asks what to send (wn_cc_poll), hands back what
 * arrived (wn_cc_input) and calls again at wn_cc_deadline(); no sockets, no clock reads.
 */
#ifndef WARP_NAME_CC_H
#define WARP_NAME_CC_H

#include <stdbool.h>
#include <stdint.h>

#include <warpgate/name.h>

#include "name/proto.h"

#define WN_CC_MAX_SERVERS 8
#define WN_CC_LOCAL	  WN_CC_MAX_SERVERS /* slot of the local link */
#define WN_CC_LOCAL_MS	  800 /* how long a lookup waits for the link once servers are done */
#define WN_CC_UDP_TRIES	  2 /* unanswered datagrams before a server is asked over TCP */

enum wn_tx_kind {
	WN_TX_UDP,
	WN_TX_TCP,
	WN_TX_LOCAL, /* multicast query */
};

struct wn_tx {
	int server;
	enum wn_tx_kind kind;
	const uint8_t *buf; /* valid until the next call on the op */
	size_t len;
};

/* What the core knows about a server: its key, pinned or learned on first use. */
struct wn_cc_target {
	uint8_t key[WARP_PUBKEY_LEN];
	bool key_known;
	bool seal; /* encrypt requests to key (needs key_known) */
	bool via_tcp; /* UDP went unanswered but TCP worked (UDP blocked): start with TCP */
};

struct wn_cc_srv {
	uint8_t state;
	uint8_t attempts;
	bool fallback; /* moved to TCP because UDP stayed silent */
	uint64_t next;
	int err;
	uint8_t reply_key[WN_SEAL_KEY];
	bool sealed;
};

struct wn_cc_op {
	struct wn_request req;
	unsigned int n; /* servers */
	bool local;	/* race the local link (GET only) */
	uint64_t start, deadline;
	unsigned int retry_ms, get_pad;
	struct wn_cc_srv srv[WN_CC_MAX_SERVERS + 1];
	uint8_t pkt[WN_MAX_PACKET];
	bool done, saw_not_stored;
	struct warp_name_result res;
};

/* req: type, name (GET) or the signed record (PUT/DEL) and bump; the id is chosen here. */
void wn_cc_init(struct wn_cc_op *op, const struct wn_request *req, unsigned int n_servers,
		bool local, uint64_t now, unsigned int timeout_ms, unsigned int retry_ms,
		unsigned int get_pad);
/* Next packet to send now: 1 and *tx filled, 0 when nothing is due.  Call until 0. */
int wn_cc_poll(struct wn_cc_op *op, struct wn_cc_target *targets, uint64_t now, struct wn_tx *tx);
/* A datagram or TCP frame from server (or WN_CC_LOCAL).  Returns 0 when it was used,
 * negative when ignored (not ours, forged, stale).  targets[server] may learn its key. */
int wn_cc_input(struct wn_cc_op *op, struct wn_cc_target *targets, int server, const uint8_t *buf,
		size_t len, uint64_t now);
/* The I/O layer could not reach a server (e.g. TCP refused). */
void wn_cc_fail(struct wn_cc_op *op, int server, int err, uint64_t now);
/* Ends timed-out servers; call at the deadline. */
void wn_cc_timeout(struct wn_cc_op *op, uint64_t now);
uint64_t wn_cc_deadline(const struct wn_cc_op *op);
bool wn_cc_done(const struct wn_cc_op *op);
bool wn_cc_server_done(const struct wn_cc_op *op, int server);

#endif
