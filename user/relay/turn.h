/* SPDX-License-Identifier: MIT */
/*
 * TURN client (RFC 8656) for one allocation, sans-IO.  Nothing here touches a socket or a
 * clock: the caller passes CLOCK_MONOTONIC time, sends what warp_turn_poll_transmit() yields
 * to the server, feeds what the server sends to warp_turn_handle_input() (one datagram or one
 * framed message) or warp_turn_handle_stream() (TCP bytes, any chunking) and calls
 * warp_turn_handle_timeout() at warp_turn_next_deadline().
 *
 * What it does:
 *  - Allocate with the long-term credential dance (unsigned request, 401 with REALM and
 *    NONCE, signed retry), 438 stale-nonce retries, MESSAGE-INTEGRITY or, when the server
 *    announces RFC 8489 password algorithms in its nonce cookie, MESSAGE-INTEGRITY-SHA256;
 *    REQUESTED-TRANSPORT UDP, REQUESTED-ADDRESS-FAMILY for IPv6 relays, LIFETIME.
 *  - Refreshes the allocation before it expires, installs a permission per peer IP and
 *    refreshes it every 4 minutes, binds a channel per peer (0x4000-0x4fff) and rebinds it
 *    before its 10 minutes run out.  Data goes in Send indications until the channel is
 *    bound, then in ChannelData (padded to 4 bytes over TCP).
 *  - Deallocates (Refresh with LIFETIME 0, retransmitted, stale nonces retried) on release.
 *
 * Responses are matched by transaction ID, method and source.  A success response to a
 * signed request must carry a valid MESSAGE-INTEGRITY(-SHA256); an error response that
 * carries one must verify; unsigned error responses are accepted only for 400, 401, 420,
 * 437 and 438 (coturn sends 437 unsigned).  Anything else is ignored, so a forged reply
 * never ends a transaction.
 *
 * Errors (event err, negative): see warp_turn_map_error().  Callbacks run synchronously
 * from handle_input/handle_stream/handle_timeout/transport_lost; they may call any function
 * here except warp_turn_free().
 */
#ifndef WARP_RELAY_TURN_H
#define WARP_RELAY_TURN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define WARP_TURN_NEVER UINT64_MAX

/* Server-side lifetimes this client assumes (RFC 8656 sections 9 and 12). */
#define WARP_TURN_PERM_LIFETIME_S    300
#define WARP_TURN_CHAN_LIFETIME_S    600
#define WARP_TURN_DEFAULT_LIFETIME_S 600

/* Bytes added around a payload: ChannelData (4 + up to 3 padding) and Send indication
 * (header, XOR-PEER-ADDRESS for IPv6, DATA header and padding). */
#define WARP_TURN_CHANNEL_OVERHEAD 7
#define WARP_TURN_SEND_OVERHEAD	   (20 + 24 + 4 + 3)
/* Largest frame the server may send us (STUN message or padded ChannelData). */
#define WARP_TURN_FRAME_MAX (4 + 65535 + 3)

enum warp_turn_transport {
	WARP_TURN_UDP = 0,
	WARP_TURN_TCP = 1,
};

struct warp_turn_cfg {
	const char *username; /* NULL: the server asks for no credentials */
	const char *password;
	const char *realm;    /* expected realm; NULL: whatever the server says */
	const char *software; /* SOFTWARE in Allocate; NULL: none */
	uint8_t transport;    /* enum warp_turn_transport, to the server */
	int family;	      /* relayed address family: 0 or AF_INET, AF_INET6 */
	uint32_t lifetime_s;  /* LIFETIME to ask for; 0: server default (600 s) */
	/* Timers; 0 means the default in brackets. */
	uint32_t rto_ms;	     /* first retransmission over UDP (500) */
	unsigned int rc;	     /* transmissions over UDP (7) */
	unsigned int rm;	     /* final wait in RTOs (16) */
	uint32_t ti_ms;		     /* transaction timeout over TCP (39500) */
	uint32_t refresh_ms;	     /* allocation refresh (lifetime - 60 s, >= lifetime / 2) */
	uint32_t perm_refresh_ms;    /* CreatePermission refresh (240000) */
	uint32_t chan_refresh_ms;    /* ChannelBind refresh (540000) */
	uint32_t retry_ms;	     /* retry after a refresh timed out (5000) */
	uint32_t release_timeout_ms; /* deallocation give-up time (8000) */
};

enum warp_turn_state {
	WARP_TURN_IDLE = 0,
	WARP_TURN_ALLOCATING,
	WARP_TURN_READY,
	WARP_TURN_RELEASING,
	WARP_TURN_CLOSED, /* released, or never allocated */
	WARP_TURN_FAILED, /* allocation refused or lost */
};

struct warp_turn_info {
	struct sockaddr_storage server;
	struct sockaddr_storage relayed; /* XOR-RELAYED-ADDRESS */
	struct sockaddr_storage mapped;	 /* XOR-MAPPED-ADDRESS; AF_UNSPEC if absent */
	uint32_t lifetime_s;
	const char *realm;
	bool sha256; /* MESSAGE-INTEGRITY-SHA256 in use */
};

enum warp_turn_event_type {
	WARP_TURN_EV_ALLOCATED,	 /* info is set */
	WARP_TURN_EV_FAILED,	 /* err: refused, timed out or lost; terminal */
	WARP_TURN_EV_PERMISSION, /* peer: permission installed (err 0) or refused/lost */
	WARP_TURN_EV_CHANNEL,	 /* peer, channel: bound (err 0) or not (Send continues) */
	WARP_TURN_EV_RELEASED,	 /* deallocation confirmed (err 0) or given up; terminal */
};

struct warp_turn_event {
	enum warp_turn_event_type type;
	int err;
	const struct sockaddr *peer;
	uint16_t channel;
	const struct warp_turn_info *info;
};

struct warp_turn;

struct warp_turn_ops {
	void (*event)(struct warp_turn *t, const struct warp_turn_event *ev, void *user);
	/* Relayed data from peer; data points into the caller's (or the stream) buffer and
	 * may be modified in place. */
	void (*data)(struct warp_turn *t, const struct sockaddr *peer, uint8_t *data, size_t len,
		     void *user);
};

/* One message to send to the server. */
struct warp_turn_tx {
	const uint8_t *data; /* valid until the next call on the client */
	size_t len;
};

/* cfg is copied (strings too).  NULL + errno (EINVAL, ENOMEM). */
struct warp_turn *warp_turn_new(const struct warp_turn_cfg *cfg, const struct sockaddr *server,
				const struct warp_turn_ops *ops, void *user);
/* No callbacks; does not deallocate (call warp_turn_release() first and wait). */
void warp_turn_free(struct warp_turn *t);

/* Starts the allocation.  -EALREADY unless idle. */
int warp_turn_allocate(struct warp_turn *t, uint64_t now_ns);

/* Adds a reference on peer: a permission for its IP and, with channel, a channel.  Works
 * before the allocation is ready (requests start when it is).  Returns 0 or -ENOMEM,
 * -EINVAL, -EAFNOSUPPORT (not the relay's family), -ENOTCONN (failed or released). */
int warp_turn_add_peer(struct warp_turn *t, const struct sockaddr *peer, bool channel,
		       uint64_t now_ns);
/* Drops a reference; at zero the permission and channel are no longer refreshed (the
 * channel number stays reserved for the peer until it expired plus 5 minutes). */
int warp_turn_remove_peer(struct warp_turn *t, const struct sockaddr *peer, uint64_t now_ns);
/* Channel bound to peer (0 when none yet). */
uint16_t warp_turn_peer_channel(const struct warp_turn *t, const struct sockaddr *peer);

/* Frames data for peer: ChannelData when its channel is bound, else a Send indication.
 * Returns the length written to out, -ENOTCONN when not allocated, -EMSGSIZE. */
int warp_turn_wrap(struct warp_turn *t, const struct sockaddr *peer, const void *data, size_t len,
		   uint8_t *out, size_t cap);

/* Deallocates.  Returns 0 when a deallocation is under way (WARP_TURN_EV_RELEASED
 * follows), 1 when there is nothing to release (now CLOSED, no event).  Idempotent. */
int warp_turn_release(struct warp_turn *t, uint64_t now_ns);

/* The connection to the server is gone (TCP closed, ICMP unreachable): fails the
 * allocation, or completes a release (the server deletes a TCP allocation with its
 * connection). */
void warp_turn_transport_lost(struct warp_turn *t, int err);

bool warp_turn_poll_transmit(struct warp_turn *t, uint64_t now_ns, struct warp_turn_tx *tx);
uint64_t warp_turn_next_deadline(const struct warp_turn *t);
void warp_turn_handle_timeout(struct warp_turn *t, uint64_t now_ns);

/* One datagram (UDP) or one complete frame.  from: the sender (NULL over TCP); anything
 * not from the server is ignored.  Returns 1 when used, 0 when ignored, or a negative
 * decode error. */
int warp_turn_handle_input(struct warp_turn *t, uint8_t *buf, size_t len,
			   const struct sockaddr *from, uint64_t now_ns);
/* TCP byte stream: reassembles STUN and ChannelData frames.  Returns 0, or -EPROTO when
 * the stream is not TURN framing (the allocation has then failed). */
int warp_turn_handle_stream(struct warp_turn *t, const uint8_t *buf, size_t len, uint64_t now_ns);

enum warp_turn_state warp_turn_state(const struct warp_turn *t);
/* Valid once allocated. */
const struct warp_turn_info *warp_turn_info(const struct warp_turn *t);
unsigned int warp_turn_pending(const struct warp_turn *t);
const char *warp_turn_state_name(enum warp_turn_state s);

/* STUN error code -> negative error: 300 -EREMCHG, 400 -EPROTO, 401 -EACCES,
 * 403 -EPERM, 420 -EOPNOTSUPP, 437 -EADDRINUSE (Allocate) / -ENOENT (otherwise),
 * 438 -WARP_ESTALE, 440 -EAFNOSUPPORT, 441 -EKEYREJECTED, 442 -EPROTONOSUPPORT,
 * 486 -WARP_EQUOTA, 508 -EBUSY, other 4xx -EPROTO, 5xx -EIO. */
int warp_turn_map_error(int code, uint16_t method);

#endif
