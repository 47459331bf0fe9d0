/* SPDX-License-Identifier: MIT */
/*
 * TURN allocations as pipe paths.
 *
 * A lease is one user's reference on a shared allocation: allocations are keyed by (node,
 * server, credentials, transport, relayed family) and reference counted, so every pipe and
 * attempt that uses the same server shares one allocation and one socket.  The allocation
 * is deallocated in the background when its last lease goes.
 *
 * The `turn` strategy:
 *	l = turn_lease_get(node, &srv, on_ready, a);       on_ready(l, 0, info): relayed and
 *	                                                   mapped endpoints for signalling
 *	turn_lease_permit(l, peer_addr, true, on_perm, a); before the peer's first packet
 *	path = turn_path_new(l, peer_addr);                 -> pipe_dial(node, path, ...)
 *	turn_lease_release(&l);                             loser or done: idempotent
 *
 * A path holds a lease of its own, so the strategy may release its lease as soon as the
 * path is handed to a dial.  Relayed data from any peer is fed to the pipe layer with
 * pipe_rx_datagram(node, relay fd, pkt, len, peer, NULL, 0).
 *
 * All of this runs on the node's loop thread.
 */
#ifndef WARP_RELAY_TURN_PATH_H
#define WARP_RELAY_TURN_PATH_H

#include <stdbool.h>
#include <sys/socket.h>

#include <warpgate/config.h>

#include "node/node_internal.h"
#include "relay/turn.h"

struct pipe_path;
struct turn_lease;

struct turn_server {
	struct sockaddr_storage addr;
	const char *username;
	const char *password;
	const char *realm; /* hint; NULL: the server's */
	bool tcp;	   /* TCP to the server (when UDP is blocked) */
	bool tcp_fallback; /* UDP first; TCP when UDP gets no answer or an ICMP error */
	int family;	   /* relayed family; 0: AF_INET */
	const struct warp_turn_cfg *tuning; /* timers; NULL: defaults (credentials ignored) */
};

/* Fills srv from a configured server (USER:PASS@HOST:PORT in the config; strings point into
 * c).  The host goes through warp_ep_resolve(), which blocks on DNS for names: resolve
 * ahead of time, or use IP literals.  family: relayed family wanted (0: AF_INET). */
int turn_server_from_conf(const struct warp_conf_turn *c, int family, struct turn_server *srv);

/* The allocation is ready (err 0, info set), failed, or was lost later (err < 0; may follow
 * an earlier success). */
typedef void (*turn_lease_cb)(struct turn_lease *l, int err, const struct warp_turn_info *info,
			      void *user);
/* The permission for peer was installed (0) or refused / lost (< 0). */
typedef void (*turn_permit_cb)(struct turn_lease *l, const struct sockaddr *peer, int err,
			       void *user);

/* Joins the allocation for srv, creating it if needed.  cb (may be NULL) runs from the
 * loop, never from inside this call.  NULL + errno when it cannot start. */
struct turn_lease *turn_lease_get(struct warp_node *node, const struct turn_server *srv,
				  turn_lease_cb cb, void *user);
/* Permission for peer's IP (and a channel to peer) for as long as the lease lives. */
int turn_lease_permit(struct turn_lease *l, const struct sockaddr *peer, bool channel,
		      turn_permit_cb cb, void *user);
/* Drops the lease and sets *l to NULL; NULL or *l NULL is fine.  Safe from callbacks. */
void turn_lease_release(struct turn_lease **l);

/* NULL until allocated. */
const struct warp_turn_info *turn_lease_info(const struct turn_lease *l);
int turn_lease_fd(const struct turn_lease *l);

/* A relay path to peer through l's allocation (permission + channel for peer); the path
 * owns a lease of its own, dropped by pipe_path_free().  NULL + errno. */
struct pipe_path *turn_path_new(struct turn_lease *l, const struct sockaddr *peer);
/* The same for an inbound handshake: the relay whose socket is fd, replying to src.
 * NULL + ENOENT when fd is no relay of node's. */
struct pipe_path *turn_path_inbound(struct warp_node *node, int fd, const struct sockaddr *src);

/* Live shared allocations (for tests and diagnostics). */
unsigned int turn_relay_count(const struct warp_node *node);

#endif
