/* SPDX-License-Identifier: MIT */
/*
 * Control client: use the pipes of a running `warpgate daemon` from another process.
 *
 * The daemon serves a Unix socket ($WARPGATE_HOME/control.sock, mode 0600, only the same
 * user or root may connect) speaking JSON lines: one request object per line with an "id"
 * and an "op", one reply per request with the same "id", and unsolicited event lines
 * ({"event": ...}) in between.  docs/cli.md specifies every request, reply and event, so
 * any language can speak it with a socket and a JSON parser; this is the C binding.
 *
 *	struct warp_ctl *ctl = warp_ctl_open(NULL);         // NULL + errno: no daemon
 *	uint32_t pipe;
 *	warp_ctl_connect(ctl, "wg1....", 10000, &pipe, NULL);
 *	warp_ctl_send(ctl, pipe, "hi", 2);
 *	n = warp_ctl_recv(ctl, pipe, buf, sizeof(buf), 5000);   // bytes, -ETIMEDOUT,
 *	                                                        // -WARP_ECLOSED (end of pipe)
 *	warp_ctl_close_pipe(ctl, pipe);
 *	warp_ctl_close(ctl);                                   // the daemon closes our pipes
 *
 * Inbound pipes: warp_ctl_listen(), then warp_ctl_next_event() returns WARP_CTL_EV_ACCEPT
 * with the new pipe's id.  Messages of a pipe are queued in the daemon until recv'd, or
 * streamed as WARP_CTL_EV_MESSAGE events after warp_ctl_subscribe().
 *
 * Calls block (bounded by their timeout); a handle is for one thread at a time.  Every call
 * returns 0 (or a count) or a negative error: errno values, or WARP_E* codes the daemon
 * reported.  Pointer-returning calls return NULL and set errno.
 */
#ifndef WARPGATE_CONTROL_H
#define WARPGATE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <warpgate/identity.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WARP_CTL_PROTOCOL 1
#define WARP_CTL_LINE_MAX (4u << 20) /* longest line either side accepts */

struct warp_ctl;

/* The default socket path: <home>/control.sock (home NULL: $WARPGATE_HOME or ~/.warpgate). */
int warp_ctl_default_path(const char *home, char *buf, size_t len);
/* Connects (path NULL: the default path) and checks the protocol version.  NULL + errno:
 * ENOENT / ECONNREFUSED when no daemon runs there, EACCES when it is another user's,
 * EPROTO when it speaks another protocol version. */
struct warp_ctl *warp_ctl_open(const char *path);
void warp_ctl_close(struct warp_ctl *ctl);
/* Readable when a reply or event line has arrived (for poll/epoll). */
int warp_ctl_fd(const struct warp_ctl *ctl);

/*
 * Generic request: req is a JSON object text (e.g. {"op": "status"}); an "id" is added.
 * *reply (may be NULL) gets the reply line (malloc'd) whether it succeeded or not.  Returns
 * 0 when the daemon answered "ok": true, its error code when it answered false, -ETIMEDOUT,
 * or -EPIPE when the daemon went away.
 */
int warp_ctl_call(struct warp_ctl *ctl, const char *req, char **reply, int timeout_ms);

/* The daemon's status as JSON (malloc'd; the schema is in docs/cli.md). */
int warp_ctl_status(struct warp_ctl *ctl, char **json);
/* The daemon node's address text (wg1....). */
int warp_ctl_address(struct warp_ctl *ctl, char *buf, size_t cap);

/* Opens a pipe to target (name or address text) through the daemon.  *result (may be NULL)
 * gets the connect trace as JSON (malloc'd), also on failure. */
int warp_ctl_connect(struct warp_ctl *ctl, const char *target, int timeout_ms, uint32_t *pipe,
		     char **result);
/* Reliable, ordered; returns once the daemon's pipe has taken the message. */
int warp_ctl_send(struct warp_ctl *ctl, uint32_t pipe, const void *msg, size_t len);
/* The next message: its length, -ETIMEDOUT, -WARP_ECLOSED at the end of the pipe, -EMSGSIZE
 * when cap is too small (the message is lost: size buffers for the largest message). */
ssize_t warp_ctl_recv(struct warp_ctl *ctl, uint32_t pipe, void *buf, size_t cap, int timeout_ms);
/* Streams the pipe's messages as events from now on (queued ones first). */
int warp_ctl_subscribe(struct warp_ctl *ctl, uint32_t pipe);
/* Graceful close: queued messages are delivered first; the id is gone afterwards. */
int warp_ctl_close_pipe(struct warp_ctl *ctl, uint32_t pipe);
/* Half-close: no more sending; the peer's messages still arrive until it ends the pipe too
 * (then recv reports -WARP_ECLOSED / a WARP_CTL_EV_CLOSED event). */
int warp_ctl_shutdown(struct warp_ctl *ctl, uint32_t pipe);
/* Inbound pipes come to this client as accept events.  n 0: from any key the daemon's node
 * admits; else only from these keys. */
int warp_ctl_listen(struct warp_ctl *ctl, const uint8_t (*allow)[WARP_PUBKEY_LEN], size_t n);

enum warp_ctl_event_kind {
	WARP_CTL_EV_OTHER = 0, /* see json */
	WARP_CTL_EV_ACCEPT,    /* pipe, peer_key */
	WARP_CTL_EV_MESSAGE,   /* pipe, data, len */
	WARP_CTL_EV_CLOSED,    /* pipe, err (0: the peer closed it cleanly) */
	WARP_CTL_EV_FORWARD,   /* a forward or expose reports (json) */
};

struct warp_ctl_event {
	enum warp_ctl_event_kind kind;
	uint32_t pipe;
	uint8_t peer_key[WARP_PUBKEY_LEN];
	uint8_t *data;
	size_t len;
	int err;
	char *json; /* the whole event line */
};

/* The next event (0), -ETIMEDOUT, or -EPIPE when the daemon went away. */
int warp_ctl_next_event(struct warp_ctl *ctl, struct warp_ctl_event *ev, int timeout_ms);
void warp_ctl_event_free(struct warp_ctl_event *ev);

#ifdef __cplusplus
}
#endif
#endif
