/* SPDX-License-Identifier: MIT */
/*
 * Pipe layer internals: paths (how packets leave), handshakes in progress, pipes.  Used by
 * user/traverse to dial and to move pipes between paths.
 */
#ifndef WARP_PIPE_INTERNAL_H
#define WARP_PIPE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/pipe.h>

#include "core/list.h"
#include "node/node_internal.h"

enum pipe_path_kind {
	PATH_UDP_SHARED = 0, /* the node's listen socket of the family */
	PATH_UDP_OWN,        /* a socket of its own (punched, probed) */
	PATH_TCP,            /* a connected TCP socket, length-prefixed frames */
	PATH_RELAY,          /* sent through a relay (TURN) by callbacks */
};

struct pipe_hs;
struct warp_deframer;

struct pipe_relay_ops {
	int (*send)(void *user, const uint8_t *pkt, size_t len);
	void (*release)(void *user);
};

struct pipe_path {
	enum pipe_path_kind kind;
	struct warp_node *node;
	int fd;
	struct sockaddr_storage remote;
	struct sockaddr_storage local;  /* local address to send from (may be unspecified) */
	int ifindex;
	enum warp_path_class cls;
	/* TCP */
	struct warp_deframer *deframer;
	uint8_t *outq;
	size_t outlen, outcap;
	bool connecting;
	/* relay */
	const struct pipe_relay_ops *relay;
	void *relay_user;
	struct list_head orphan;        /* inbound TCP before its INIT */
	int busy;                       /* inside its own I/O callback: free later */
	bool zombie;                    /* freed while busy */
	/* owner: exactly one is set */
	struct pipe_hs *hs;
	struct warp_pipe *pipe;
};

/* Paths.  The new path is owned by whoever it is handed to (a dial, then the pipe). */
struct pipe_path *pipe_path_udp(struct warp_node *node, const struct sockaddr *remote,
				const struct sockaddr *local, int ifindex);
/* Takes ownership of fd (a bound UDP socket). */
struct pipe_path *pipe_path_udp_own(struct warp_node *node, int fd, const struct sockaddr *remote);
/* Takes ownership of fd (connected or connecting TCP socket). */
struct pipe_path *pipe_path_tcp(struct warp_node *node, int fd, const struct sockaddr *remote,
				bool connecting);
struct pipe_path *pipe_path_relay(struct warp_node *node, const struct sockaddr *remote,
				  const struct pipe_relay_ops *ops, void *user);
void pipe_path_free(struct pipe_path *p);

/* Dialing: a handshake as initiator over a path.  cb runs once: with a pipe (the caller owns
 * a reference) or an error.  Cancelling frees the dial and its path; cb does not run. */
struct pipe_dial;
typedef void (*pipe_dial_cb)(struct warp_pipe *pipe, int err, void *user);

struct pipe_dial_opts {
	const uint8_t *expect_key;      /* peer identity to insist on (NULL: any) */
	const uint8_t *init_cid;        /* CID for the INIT header (NULL: zero) */
	uint32_t timeout_ms;            /* 0: handshake default */
	uint32_t rto_ms;                /* 0: handshake default */
	enum warp_path_class cls;
	const char *strategy;
};

struct pipe_dial *pipe_dial(struct warp_node *node, struct pipe_path *path,
			    const struct pipe_dial_opts *opts, pipe_dial_cb cb, void *user);
void pipe_dial_cancel(struct pipe_dial *d);

/* Moves a pipe onto another verified path (relay -> direct upgrade, roaming).  The old path
 * is released.  Messages in flight are retransmitted by the stream engine as needed. */
int pipe_migrate(struct warp_pipe *pipe, struct pipe_path *path);
struct pipe_path *pipe_current_path(const struct warp_pipe *pipe);
/* Direct endpoints of the peer to try while the pipe relays (relay -> direct upgrade). */
int pipe_add_candidates(struct warp_pipe *pipe, const struct sockaddr_storage *eps, int n);
/* The same for a relayed pipe from key that does not exist yet (the answering side). */
void pipe_hint_candidates(struct warp_node *node, const uint8_t key[WARP_PUBKEY_LEN],
			  const struct sockaddr_storage *eps, int n);
void pipe_set_strategy(struct warp_pipe *pipe, const char *strategy, enum warp_path_class cls);
const uint8_t *pipe_peer_key(const struct warp_pipe *pipe);
const uint8_t *pipe_local_cid(const struct warp_pipe *pipe);
/* Internal references (the public handle is warp_pipe_release()). */
void pipe_get(struct warp_pipe *pipe);
void pipe_put(struct warp_pipe *pipe);

/* Inbound pipes are offered to this hook before the node's accept callback: a traversal
 * attempt waiting for the peer to connect back claims its pipe (returns true; the hook then
 * owns the reference it was given). */
typedef bool (*pipe_inbound_fn)(struct warp_node *node, struct warp_pipe *pipe, void *user);
void pipe_set_inbound_hook(struct warp_node *node, pipe_inbound_fn fn, void *user);
/* A traversal attempt expects the peer to connect to us (delta +1 / -1): inbound handshakes
 * are then accepted even when the node does not listen; pipes nobody claims are closed. */
void pipe_expect_inbound(struct warp_node *node, int delta);
/* Inbound handshakes arriving on a socket that is not the node's (a relay allocation's):
 * fn makes the path to answer on, or returns NULL when fd is none of its sockets. */
typedef struct pipe_path *(*pipe_fd_acceptor_fn)(struct warp_node *node, int fd,
						 const struct sockaddr *src);
void pipe_set_fd_acceptor(struct warp_node *node, pipe_fd_acceptor_fn fn);
/* Hands a pipe made by a passive traversal side (it dialled back, or punched) to the node as
 * an inbound peer: the inbound hook first, then the accept callback. */
void pipe_deliver_inbound(struct warp_node *node, struct warp_pipe *pipe);

/* A hook for warpgate packets the pipe layer does not own (PROBE, PROBE_REPLY). */
typedef bool (*pipe_probe_fn)(struct warp_node *node, const uint8_t *pkt, size_t len,
			      const struct sockaddr *src, const struct sockaddr *dst, int ifindex,
			      int fd, void *user);
void pipe_set_probe_handler(struct warp_node *node, pipe_probe_fn fn, void *user);
/* Feeds a datagram received on a socket other than the node's (punch sockets). */
void pipe_rx_datagram(struct warp_node *node, int fd, uint8_t *pkt, size_t len,
		      const struct sockaddr *src, const struct sockaddr *dst, int ifindex);

#endif
