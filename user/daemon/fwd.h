/* SPDX-License-Identifier: MIT */
/*
 * TCP port forwarding over a pipe (`warpgate forward` / `warpgate expose`, and the daemon's
 * "forward" / "expose" requests).
 *
 * The forward side listens on a local TCP port and carries every accepted connection as a
 * stream over ONE pipe to the target; the expose side checks each stream's HOST:PORT against
 * its exposed list and the peer's key against the rule's allowed keys, connects, and relays.
 * Streams are multiplexed with a small framing, one frame per pipe message (big-endian):
 *
 *	u8 type | u32 stream id | body
 *	HELLO    id 0   "WGFWD" u8 version
 *	OPEN     id     u16 port | u8 host length | host        (forward -> expose)
 *	OPEN_OK  id     -                                         (expose -> forward)
 *	DATA     id     1..FWD_DATA_MAX bytes
 *	WINDOW   id     u32 credit (> 0)
 *	CLOSE    id     -   no more DATA in this direction (TCP FIN)
 *	RESET    id     u16 code | reason text (0..200 bytes)   the stream is gone
 *
 * Flow control is per stream and credit based: each direction starts with FWD_WINDOW bytes
 * of credit and the receiver returns credit (WINDOW) as it writes the data to its TCP socket.
 * A slow TCP consumer therefore stops only its own stream, never the pipe or other streams.
 * The forward side sends DATA right after OPEN (no round trip); the expose side buffers it
 * while it connects and discards it if it refuses the stream.  docs/cli.md describes the
 * frames in full.
 *
 * Everything here runs on the loop thread of the node whose pipes it uses.
 */
#ifndef WARP_DAEMON_FWD_H
#define WARP_DAEMON_FWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/connect.h>
#include <warpgate/identity.h>
#include <warpgate/node.h>
#include <warpgate/pipe.h>

#define FWD_VERSION	1
#define FWD_MAGIC	"WGFWD"
#define FWD_WINDOW	(256u * 1024) /* initial credit per stream and direction */
#define FWD_DATA_MAX	32768	      /* bytes per DATA frame */
#define FWD_HOST_MAX	255
#define FWD_REASON_MAX	200
#define FWD_MAX_STREAMS 1024 /* open streams per pipe */
#define FWD_FRAME_MAX	(5 + FWD_DATA_MAX)

enum fwd_type {
	FWD_HELLO = 0,
	FWD_OPEN = 1,
	FWD_OPEN_OK = 2,
	FWD_DATA = 3,
	FWD_WINDOW_UPDATE = 4,
	FWD_CLOSE = 5,
	FWD_RESET = 6,
};

/* RESET codes. */
enum fwd_reset_code {
	FWD_RST_REFUSED = 1,   /* HOST:PORT is not exposed */
	FWD_RST_FORBIDDEN = 2, /* exposed, but not to this key */
	FWD_RST_CONNECT = 3,   /* the expose side could not connect to HOST:PORT */
	FWD_RST_ABORTED = 4,   /* a TCP end reset the connection */
	FWD_RST_PROTOCOL = 5,  /* the peer broke the framing or the flow control */
	FWD_RST_LIMIT = 6,     /* too many streams */
	FWD_RST_SHUTDOWN = 7,  /* the other side is shutting down */
};

const char *fwd_reset_name(unsigned int code);

struct fwd_frame {
	uint8_t type;
	uint32_t id;
	uint8_t version;		 /* HELLO */
	uint16_t port;			 /* OPEN */
	char host[FWD_HOST_MAX + 1];	 /* OPEN */
	uint32_t credit;		 /* WINDOW */
	uint16_t code;			 /* RESET */
	char reason[FWD_REASON_MAX + 1]; /* RESET */
	const uint8_t *data;		 /* DATA: points into the decoded buffer */
	size_t len;
};

/* Returns the encoded length, -EMSGSIZE when cap is too small, -EINVAL on a bad frame. */
int fwd_frame_encode(const struct fwd_frame *f, uint8_t *buf, size_t cap);
/* 0, or -WARP_EMALFORMED / -WARP_ETRUNCATED / -WARP_ETRAILING / -WARP_ERANGE /
 * -WARP_EVERSION (HELLO of another version). */
int fwd_frame_decode(const uint8_t *buf, size_t len, struct fwd_frame *f);
/* True when a pipe message opens a forwarding session (a HELLO of any version). */
bool fwd_is_hello(const uint8_t *msg, size_t len);

/* ---- events, for logs and the daemon's clients ---- */

enum fwd_ev {
	FWD_EV_LISTENING, /* forward: listening (local) */
	FWD_EV_UP,	  /* a pipe carries streams now (peer) */
	FWD_EV_DOWN,	  /* the pipe is gone or could not be opened (err, reason) */
	FWD_EV_OPEN,	  /* a stream started (client, host, port) */
	FWD_EV_REFUSED,	  /* a stream was refused or reset (code, reason) */
	FWD_EV_CLOSE,	  /* a stream ended cleanly (bytes) */
};

struct fwd_event {
	enum fwd_ev kind;
	bool expose;	     /* reported by the expose side */
	const uint8_t *peer; /* the pipe's peer key (NULL before a pipe exists) */
	const char *client;  /* forward: the local TCP client; expose: "" */
	const char *host;
	uint16_t port;
	int err;	   /* DOWN: a negative error */
	unsigned int code; /* REFUSED: enum fwd_reset_code */
	const char *reason;
	uint64_t bytes_up, bytes_down; /* CLOSE: towards HOST:PORT, back from it */
	const char *via;       /* UP: "strategy, path class, transport remote" */
};

typedef void (*fwd_event_cb)(void *user, const struct fwd_event *ev);

const char *fwd_ev_name(enum fwd_ev kind);

/* ---- expose side ---- */

struct fwd_rule {
	char host[FWD_HOST_MAX + 1]; /* normalised: what OPEN must name ("127.0.0.1") */
	uint16_t port;
	struct sockaddr_storage addr; /* where to connect */
	size_t nkeys;		      /* 0: any key */
	uint8_t (*keys)[WARP_PUBKEY_LEN];
	void *owner; /* who added it (fwd_exposer_remove_owner) */
};

/* Parses "PORT" (127.0.0.1:PORT), "HOST:PORT" or "[V6]:PORT"; host names are resolved now.
 * Returns 0 or -EINVAL with a message in err. */
int fwd_rule_parse(const char *text, struct fwd_rule *r, char *err, size_t errlen);
/* Parses "HOST:PORT" / "[IPV6]:PORT" (port 1-65535) without resolving HOST; host is
 * normalised (fwd_host_norm).  -EINVAL when malformed. */
int fwd_hostport_parse(const char *text, char *host, size_t cap, uint16_t *port);
/* Parses a local listen address "ADDR:PORT" / "[IPV6]:PORT" with PORT 0-65535 (0: any). */
int fwd_listen_parse(const char *text, struct sockaddr_storage *out);
/* Normalises a host as OPEN names it: IP literals in canonical form, "localhost" as
 * 127.0.0.1, names in lower case.  -EINVAL when it is not a plausible host. */
int fwd_host_norm(const char *in, char *out, size_t cap);

struct fwd_exposer;

struct fwd_exposer *fwd_exposer_new(struct warp_loop *loop, fwd_event_cb cb, void *user);
/* Resets every stream and drops every pipe, then frees. */
void fwd_exposer_free(struct fwd_exposer *x);
/* Adds a copy of the rule (keys included) for owner. */
int fwd_exposer_add(struct fwd_exposer *x, const struct fwd_rule *r, void *owner);
void fwd_exposer_remove_owner(struct fwd_exposer *x, void *owner);
size_t fwd_exposer_nrules(const struct fwd_exposer *x);
const struct fwd_rule *fwd_exposer_rule(const struct fwd_exposer *x, size_t i);
size_t fwd_exposer_nsessions(const struct fwd_exposer *x);
/* Serves an inbound pipe; takes over the caller's reference.  first/len: a message that
 * was already read from the pipe (NULL: none). */
int fwd_exposer_adopt(struct fwd_exposer *x, struct warp_pipe *pipe, const uint8_t *first,
		      size_t len);
/* Resets every stream and drops every pipe (before the node closes). */
void fwd_exposer_drop_all(struct fwd_exposer *x);
/* Calls fn for every pipe it serves. */
void fwd_exposer_for_each_pipe(struct fwd_exposer *x,
			       void (*fn)(struct warp_pipe *pipe, void *user), void *user);

/* ---- forward side ---- */

struct fwd_forwarder_conf {
	struct warp_node *node;
	char target[2048];	      /* name or address text (wg1....) */
	struct sockaddr_storage bind; /* local listen address; port 0: kernel's choice */
	char host[FWD_HOST_MAX + 1];  /* what to reach on the expose side */
	uint16_t port;
	struct warp_connect_opts copts; /* progress callbacks are ignored */
	fwd_event_cb event;
	void *user;
};

struct fwd_forwarder;

/* Listens at once; the pipe is opened for the first connection (and again after it ends).
 * NULL + errno (EADDRINUSE, EACCES ...). */
struct fwd_forwarder *fwd_forwarder_new(const struct fwd_forwarder_conf *conf);
void fwd_forwarder_free(struct fwd_forwarder *f);
int fwd_forwarder_local(const struct fwd_forwarder *f, struct sockaddr_storage *out);
/* Opens the pipe now instead of at the first connection. */
int fwd_forwarder_dial(struct fwd_forwarder *f);
/* Drops the pipe (streams are reset) and uses node for the next one (NULL: keep). */
void fwd_forwarder_reset(struct fwd_forwarder *f, struct warp_node *node);
struct warp_pipe *fwd_forwarder_pipe(const struct fwd_forwarder *f);
size_t fwd_forwarder_nstreams(const struct fwd_forwarder *f);
const struct fwd_forwarder_conf *fwd_forwarder_conf(const struct fwd_forwarder *f);

/* ---- dialing a target by name or address text, asynchronously ---- */

typedef void (*fwd_dial_cb)(void *user, struct warp_pipe *pipe,
			    const struct warp_connect_result *res);
struct fwd_dial;

/* cb runs once, later on the loop (never from inside this call), with a pipe (the callee owns
 * a reference) or NULL and the result (res->err says why).  NULL + errno only when out of
 * memory. */
struct fwd_dial *fwd_dial_start(struct warp_node *node, const char *target,
				const struct warp_connect_opts *opts, fwd_dial_cb cb, void *user);
void fwd_dial_cancel(struct fwd_dial *d);

/* "03ab..." (66 hex digits) of a key into out (67 bytes). */
void fwd_key_hex(const uint8_t key[WARP_PUBKEY_LEN], char out[2 * WARP_PUBKEY_LEN + 1]);
/* Parses 66 hex digits of a valid compressed public key. */
int fwd_key_parse(const char *hex, uint8_t key[WARP_PUBKEY_LEN]);

#endif
