/* SPDX-License-Identifier: MIT */
/*
 * Pipes: encrypted, authenticated message channels to one peer, over UDP (reliable ordered
 * messages plus unreliable datagrams), TCP or a relay, with one API.
 *
 * Receiving: subscribe, then recv (blocking, runs the loop) or get callbacks.
 *
 *	warp_pipe_subscribe(p, NULL);                       // WARP_SUB_ALL
 *	warp_pipe_send(p, "hi", 2);
 *	n = warp_pipe_recv(p, WARP_SUB_ALL, buf, sizeof(buf), 2000);
 *	    n >= 0: a message of n bytes; -ETIMEDOUT; -WARP_ECLOSED: end of pipe (after every
 *	    queued message has been read); -EMSGSIZE: buf too small (the message stays queued)
 *
 * A pipe handle is reference counted: the one returned by connect or given to an accept
 * handler belongs to the caller, who drops it with warp_pipe_release().  Releasing does not
 * close: an open pipe lives on (served by its callbacks) until either end closes it, its
 * idle timeout passes, the peer disappears, or the node closes.  All calls happen on the
 * loop's thread.
 */
#ifndef WARPGATE_PIPE_H
#define WARPGATE_PIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <warpgate/identity.h>

#ifdef __cplusplus
extern "C" {
#endif

struct warp_pipe;

/* Subscription id that matches every message; exists once warp_pipe_subscribe(p, NULL) ran. */
#define WARP_SUB_ALL 0

typedef void (*warp_msg_cb)(struct warp_pipe *pipe, const uint8_t *msg, size_t len, void *user);
typedef void (*warp_pipe_closed_cb)(struct warp_pipe *pipe, int err, void *user);
typedef void (*warp_pipe_event_cb)(struct warp_pipe *pipe, void *user);

struct warp_sub {
	const void *prefix;          /* message must start with these bytes (NULL: any) */
	size_t prefix_len;
	const char *pattern;         /* POSIX extended regex over the message (NULL: any) */
	const struct sockaddr *source; /* only from this address (port 0: any port); NULL: any */
	size_t queue_max;            /* queued messages kept (0: 1024); the oldest is dropped */
	warp_msg_cb cb;              /* deliver by callback instead of queueing */
	void *user;
};

/* Adds a subscription; NULL subscribes WARP_SUB_ALL.  Returns the id (>= 0) or an error. */
int warp_pipe_subscribe(struct warp_pipe *pipe, const struct warp_sub *sub);
int warp_pipe_unsubscribe(struct warp_pipe *pipe, int sub);
/* Shorthand: every message to cb (a WARP_SUB_ALL callback subscription). */
int warp_pipe_on_message(struct warp_pipe *pipe, warp_msg_cb cb, void *user);
void warp_pipe_on_closed(struct warp_pipe *pipe, warp_pipe_closed_cb cb, void *user);
/* Room in the send buffer again after warp_pipe_send() returned -EAGAIN (once per refusal). */
void warp_pipe_on_writable(struct warp_pipe *pipe, warp_pipe_event_cb cb, void *user);
/* The peer has finished sending (after its last message).  Without half-close our side
 * closes right after this callback returns. */
void warp_pipe_on_eos(struct warp_pipe *pipe, warp_pipe_event_cb cb, void *user);
/* Keep our sending side open after the peer's end of pipe (like shutdown(SHUT_WR) on the
 * other end of a socket); recv still reports -WARP_ECLOSED once the peer's messages are
 * drained.  Default off: the pipe closes once the peer has. */
void warp_pipe_set_half_close(struct warp_pipe *pipe, bool on);

/* Reliable, ordered.  -EAGAIN when the send buffer is full (nothing queued). */
int warp_pipe_send(struct warp_pipe *pipe, const void *msg, size_t len);
/* Like warp_pipe_send but waits (running the loop) up to timeout_ms for room. */
int warp_pipe_send_wait(struct warp_pipe *pipe, const void *msg, size_t len, int timeout_ms);
/* Unreliable datagram (tunnels): may be lost, never duplicated, never partially delivered. */
int warp_pipe_send_datagram(struct warp_pipe *pipe, const void *msg, size_t len);
/* Next message of a subscription (see above).  timeout_ms 0 polls, < 0 waits forever. */
ssize_t warp_pipe_recv(struct warp_pipe *pipe, int sub, void *buf, size_t len, int timeout_ms);
/* Messages dropped from a subscription's full queue. */
uint64_t warp_pipe_dropped(struct warp_pipe *pipe, int sub);

/* Graceful close: queued messages are delivered first; both ends observe the end of pipe. */
int warp_pipe_close(struct warp_pipe *pipe);
/* Waits (running the loop) until the close completed or timeout_ms passed. */
int warp_pipe_close_wait(struct warp_pipe *pipe, int timeout_ms);
bool warp_pipe_is_open(const struct warp_pipe *pipe);
void warp_pipe_ref(struct warp_pipe *pipe);
void warp_pipe_release(struct warp_pipe *pipe);

enum warp_path_class {
	WARP_PATH_LOCAL = 0,  /* same host or same LAN */
	WARP_PATH_DIRECT = 1, /* across NATs, no relay */
	WARP_PATH_RELAY = 2,  /* through a TURN server */
};

struct warp_pipe_info {
	uint8_t peer_key[WARP_PUBKEY_LEN];
	char strategy[24];
	enum warp_path_class path;
	char transport[8];              /* "udp", "tcp" */
	struct sockaddr_storage local, remote;
	uint64_t srtt_us, min_rtt_us;
	uint64_t bytes_sent, bytes_received, msgs_sent, msgs_received;
	uint64_t retransmits, dgrams_dropped, path_changes;
	uint64_t age_ms, idle_ms;
	int close_err;
	bool open;
};

int warp_pipe_info(const struct warp_pipe *pipe, struct warp_pipe_info *out);
const char *warp_path_class_name(enum warp_path_class c);
void warp_pipe_set_user(struct warp_pipe *pipe, void *user);
void *warp_pipe_get_user(const struct warp_pipe *pipe);

#ifdef __cplusplus
}
#endif
#endif
