/* SPDX-License-Identifier: MIT */
/*
 * Signalling service: a node's mailbox on MQTT brokers.
 *
 * The service connects to the node's own ("home") brokers and subscribes there to the topic
 * derived from the node's public key.  warp_signal_send() signs and seals a message to a peer
 * and publishes it to `fanout` (default 2) of the brokers the peer advertises, preferring
 * ones already connected and opening publish-only connections to the others on demand (they
 * are closed after a minute unused).  Received messages are opened, checked (signature,
 * recipient, TTL against the synced clock, per-sender and global rate limits), de-duplicated
 * across brokers by message id, then dispatched in this order:
 *
 *   1. a pending warp_signal_request() whose id the message answers (reply_to), if it comes
 *      from the peer the request went to;
 *   2. the handler registered for the message's attempt id (warp_signal_on_attempt());
 *   3. the handler registered for its type (warp_signal_on());
 *   4. otherwise a request type gets an automatic ERROR(UNSUPPORTED) reply; others are dropped.
 *
 * Every message carries the sender's home brokers, so a handler can answer with
 * warp_signal_reply() without knowing the sender's address.
 *
 * All calls belong to the loop's thread.  A handler may send, reply, register and unregister
 * handlers (its own included) but must not free the service.
 */
#ifndef WARP_SIGNAL_SIGNAL_H
#define WARP_SIGNAL_SIGNAL_H

#include <stddef.h>
#include <stdint.h>

#include <warpgate/identity.h>
#include <warpgate/loop.h>

#include "signal/broker.h"
#include "signal/msg.h"

struct warp_signal;

/* Synced wall clock in ms since the Unix epoch; 0 when no trustworthy time is known yet
 * (sending then fails with -WARP_ECLOCK and received messages are dropped). */
typedef uint64_t (*warp_signal_clock_cb)(void *user);

typedef void (*warp_signal_handler)(struct warp_signal *s, const struct warp_sig_msg *msg,
				    void *user);
/* err 0: reply is the answer (possibly an ERROR message); -ETIMEDOUT: none in time;
 * -ECANCELED: cancelled or the service is being freed (reply NULL in both). */
typedef void (*warp_signal_reply_cb)(struct warp_signal *s, int err,
				     const struct warp_sig_msg *reply, void *user);
typedef void (*warp_signal_state_cb)(struct warp_signal *s, const struct warp_broker_addr *addr,
				     enum warp_broker_state st, void *user);

struct warp_signal_cfg {
	const struct warp_broker_addr *brokers; /* home brokers (at least one) */
	size_t nbrokers;
	warp_signal_clock_cb clock; /* NULL: the system clock */
	void *clock_user;
	unsigned int fanout;		/* brokers per message; default 2 */
	uint32_t skew_ms;		/* clock skew tolerance; default WARP_SIG_SKEW_MS */
	uint32_t rx_rate_sender;	/* messages per second per sender; default 20 */
	uint32_t rx_burst_sender;	/* default 40 */
	uint32_t rx_rate_global;	/* messages per second before decryption; default 200 */
	uint32_t rx_burst_global;	/* default 400 */
	uint32_t extra_idle_ms;		/* publish-only connections closed after; default 60000 */
	unsigned int max_extra;		/* publish-only connections at once; default 16 */
	struct warp_broker_opts broker; /* zeros: broker defaults */
	warp_signal_state_cb on_state;	/* home broker state changes; may be NULL */
	void *user;
};

struct warp_signal_stats {
	uint64_t tx;		 /* messages sent */
	uint64_t tx_publishes;	 /* broker publishes (>= tx: fanout) */
	uint64_t rx;		 /* messages accepted and dispatched */
	uint64_t rx_duplicate;	 /* same message via another broker, or a replay */
	uint64_t rx_invalid;	 /* malformed, forged, not for us */
	uint64_t rx_stale;	 /* outside the TTL window */
	uint64_t rx_ratelimited; /* dropped by a rate limit */
	uint64_t rx_unhandled;	 /* no handler */
};

/* Starts connecting to the home brokers at once.  id must outlive the service. */
struct warp_signal *warp_signal_new(struct warp_loop *loop, const struct warp_identity *id,
				    const struct warp_signal_cfg *cfg);
/* Disconnects everything; pending requests complete with -ECANCELED. */
void warp_signal_free(struct warp_signal *s);

/* Own topic and home brokers (what the node address advertises). */
const char *warp_signal_topic(const struct warp_signal *s);
size_t warp_signal_brokers(const struct warp_signal *s, const struct warp_broker_addr **out);
/* Home brokers whose subscription is acknowledged. */
unsigned int warp_signal_ready_count(const struct warp_signal *s);
void warp_signal_get_stats(const struct warp_signal *s, struct warp_signal_stats *st);
/* Synced clock as the service sees it (0: none). */
uint64_t warp_signal_now(const struct warp_signal *s);

/* Prepares a message to peer: random id, created = now, type's default TTL.  Fill the body
 * (and attempt id) afterwards.  -WARP_ECLOCK without a clock. */
int warp_signal_msg_init(struct warp_signal *s, struct warp_sig_msg *m, unsigned int type,
			 const uint8_t peer[WARP_PUBKEY_LEN]);

/* Signs, seals and publishes m to m->recipient via its brokers.  Sets m->sender and
 * m->brokers (our home brokers).  Returns the number of brokers it went to (sent now or
 * queued until connected) or a negative error (-WARP_ENOPATH: no usable broker). */
int warp_signal_send(struct warp_signal *s, struct warp_sig_msg *m,
		     const struct warp_broker_addr *peer_brokers, size_t npeer);
/* Answers req via the brokers it names: reply_to = req->id, attempt copied when unset,
 * recipient = req->sender. */
int warp_signal_reply(struct warp_signal *s, const struct warp_sig_msg *req,
		      struct warp_sig_msg *reply);
int warp_signal_reply_error(struct warp_signal *s, const struct warp_sig_msg *req, uint16_t code,
			    const char *text);

/* Sends m and calls cb once with its reply or a timeout (timeout_ms 0: m's TTL). */
int warp_signal_request(struct warp_signal *s, struct warp_sig_msg *m,
			const struct warp_broker_addr *peer_brokers, size_t npeer,
			uint32_t timeout_ms, warp_signal_reply_cb cb, void *user);
/* cb runs with -ECANCELED; -ENOENT if no such request is pending. */
int warp_signal_request_cancel(struct warp_signal *s, const uint8_t id[WARP_SIG_ID_LEN]);

/* One handler per type (NULL removes it). */
int warp_signal_on(struct warp_signal *s, unsigned int type, warp_signal_handler fn, void *user);
/* One handler per attempt id, any type; takes precedence over type handlers. */
int warp_signal_on_attempt(struct warp_signal *s, const uint8_t attempt[WARP_SIG_ID_LEN],
			   warp_signal_handler fn, void *user);
int warp_signal_off_attempt(struct warp_signal *s, const uint8_t attempt[WARP_SIG_ID_LEN]);

/* Feeds a payload as if a broker delivered it (tests, other transports). */
int warp_signal_input(struct warp_signal *s, const void *payload, size_t len);

#endif
