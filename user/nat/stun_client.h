/* SPDX-License-Identifier: MIT */
/*
 * STUN client transactions, sans-IO: a table of outstanding requests keyed by their 96-bit
 * CSPRNG transaction ID.  Nothing here touches a socket or a clock: the caller passes the
 * current CLOCK_MONOTONIC time, drains datagrams with warp_stun_client_poll_transmit(), feeds
 * received datagrams to warp_stun_client_handle_input() and calls
 * warp_stun_client_handle_timeout() at warp_stun_client_next_deadline().
 *
 * Retransmission follows RFC 8489 section 6.2.1: over UDP the request is sent at 0, RTO,
 * 3 RTO, 7 RTO, ... (Rc transmissions, RTO doubling, optionally capped) and fails Rm * RTO
 * after the last one; over TCP it is sent once and fails after Ti.  All values are
 * configurable per client and per request.
 *
 * A response completes its transaction only if the transaction ID matches, it arrives on the
 * socket the request left from, it comes from the expected source (the destination unless
 * told otherwise), its method matches and, for requests sent with a key, its
 * MESSAGE-INTEGRITY(-SHA256) verifies (error responses 400/401/438 may come unsigned).
 * Anything else is left to the caller (return 0), so a spoofed reply never ends a
 * transaction.
 *
 * The hooks let an eBPF probe matcher mirror the table: tx_add/tx_remove fire whenever a
 * transaction enters or leaves it, and a reply the kernel matched can be fed back with
 * warp_stun_client_kernel_reply() carrying the kernel's receive timestamp
 * (bpf_ktime_get_ns(), which is CLOCK_MONOTONIC like the times given here).
 *
 * Callbacks run synchronously from handle_input/handle_timeout/cancel_all; they may start or
 * cancel transactions but must not free the client.
 */
#ifndef WARP_NAT_STUN_CLIENT_H
#define WARP_NAT_STUN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "nat/stun.h"

#define WARP_STUN_NEVER UINT64_MAX

enum warp_stun_transport {
	WARP_STUN_UDP = 0,
	WARP_STUN_TCP = 1,
};

struct warp_stun_client_cfg {
	uint32_t rto_ms;     /* initial retransmission timeout (500) */
	uint32_t rto_max_ms; /* cap for the doubled RTO; 0: no cap */
	unsigned int rc;     /* transmissions over UDP (7) */
	unsigned int rm;     /* final wait after the last one, in initial RTOs (16) */
	uint32_t ti_ms;	     /* TCP transaction timeout (39500) */
};

void warp_stun_client_cfg_default(struct warp_stun_client_cfg *cfg);

struct warp_stun_result {
	uint64_t id;
	/* 0: a response arrived (msg is set; check msg->cls and error_code);
	 * -ETIMEDOUT: no response; -WARP_EMALFORMED: the response was unusable (unknown
	 * comprehension-required attributes, error response without ERROR-CODE). */
	int status;
	int error_code; /* STUN error code of an error response, else 0 */
	int sock;
	const struct warp_stun_msg *msg; /* valid during the callback only */
	const struct sockaddr *from;	 /* valid during the callback only */
	struct sockaddr_storage mapped;	 /* XOR-MAPPED/MAPPED-ADDRESS of a success; AF_UNSPEC */
	struct sockaddr_storage dest;
	uint64_t rtt_ns;      /* receive time - last transmission */
	uint64_t first_tx_ns; /* time of the first transmission */
	unsigned int transmissions;
	bool kernel_ts; /* rtt measured against a kernel receive timestamp */
};

typedef void (*warp_stun_result_cb)(const struct warp_stun_result *res, void *user);

/* Extra attributes for a request: called after the standard ones, before integrity. */
typedef void (*warp_stun_build_cb)(struct warp_stun_builder *b, void *user);

struct warp_stun_req {
	uint16_t method;   /* 0: Binding */
	uint8_t transport; /* enum warp_stun_transport */
	int sock;	   /* caller's tag for the local socket */
	const struct sockaddr *dest;
	const struct sockaddr *expect_from; /* NULL: the response must come from dest */
	bool any_source;	/* accept a response from any source (RFC 5780 change tests) */
	uint32_t change;	/* CHANGE-REQUEST flags; 0: attribute absent */
	uint16_t response_port; /* RESPONSE-PORT; 0: absent */
	uint16_t padding;	/* PADDING length; 0: absent */
	const char *software;
	/* credentials: USERNAME/REALM/NONCE added when set; key signs with MI (and MI-SHA256
	 * when mi256) and is kept to verify the response */
	const char *username;
	const char *realm;
	const char *nonce;
	const void *key;
	size_t keylen;
	bool mi256;
	bool fingerprint;
	warp_stun_build_cb build;
	void *build_user;
	/* per-request overrides (0: client configuration) */
	uint32_t rto_ms;
	unsigned int rc;
	unsigned int rm;
	uint32_t timeout_ms; /* hard cap after the first transmission */
	warp_stun_result_cb cb;
	void *user;
};

/* One datagram (or TCP frame) to send. */
struct warp_stun_tx {
	uint64_t id;
	int sock;
	uint8_t transport;
	unsigned int attempt; /* 1 for the first transmission */
	const uint8_t *data;  /* valid until the next call on the client */
	size_t len;
	struct sockaddr_storage dest;
	uint8_t tid[WARP_STUN_TID_LEN];
};

struct warp_stun_client_hooks {
	void (*tx_add)(void *user, const uint8_t tid[WARP_STUN_TID_LEN], int sock,
		       const struct sockaddr *dest);
	void (*tx_remove)(void *user, const uint8_t tid[WARP_STUN_TID_LEN]);
	void *user;
};

struct warp_stun_client;

/* cfg NULL: defaults.  NULL + errno on failure. */
struct warp_stun_client *warp_stun_client_new(const struct warp_stun_client_cfg *cfg);
/* Drops every transaction without callbacks (tx_remove hooks still fire). */
void warp_stun_client_free(struct warp_stun_client *c);
void warp_stun_client_set_hooks(struct warp_stun_client *c,
				const struct warp_stun_client_hooks *hooks);

/* Builds the request with a fresh transaction ID and queues its first transmission (due
 * now).  Returns 0 and the transaction's id, or a negative error. */
int warp_stun_client_start(struct warp_stun_client *c, const struct warp_stun_req *req,
			   uint64_t now_ns, uint64_t *id);
/* Removes a transaction without calling its callback; -ENOENT if it is gone. */
int warp_stun_client_cancel(struct warp_stun_client *c, uint64_t id);
/* Completes every transaction with status err (e.g. -ECANCELED) through its callback. */
void warp_stun_client_fail_all(struct warp_stun_client *c, int err);
const uint8_t *warp_stun_client_tid(const struct warp_stun_client *c, uint64_t id);
unsigned int warp_stun_client_pending(const struct warp_stun_client *c);

/* Next datagram due at now_ns, in due-time order (first transmissions in start order).
 * Returns false when nothing is due.  The transmission counts as sent at now_ns. */
bool warp_stun_client_poll_transmit(struct warp_stun_client *c, uint64_t now_ns,
				    struct warp_stun_tx *tx);
/* Earliest time the client needs attention (a retransmission or a timeout); WARP_STUN_NEVER
 * when idle, now-ish when a transmission is waiting in poll_transmit. */
uint64_t warp_stun_client_next_deadline(const struct warp_stun_client *c);
/* Fails the transactions whose time is up (callbacks) and makes retransmissions due. */
void warp_stun_client_handle_timeout(struct warp_stun_client *c, uint64_t now_ns);

/* A datagram received on socket sock.  Returns 1 if it completed a transaction, 0 if it is
 * not a response to one (requests, indications, unknown or mismatched transactions: the
 * caller may use it), or a negative decode error when it is not a valid STUN message. */
int warp_stun_client_handle_input(struct warp_stun_client *c, int sock, const void *buf, size_t len,
				  const struct sockaddr *from, uint64_t rx_ns);
/* Same, for a reply the BPF matcher caught; ktime_ns is its kernel receive timestamp. */
int warp_stun_client_kernel_reply(struct warp_stun_client *c, int sock, const void *buf, size_t len,
				  const struct sockaddr *from, uint64_t ktime_ns);

#endif
