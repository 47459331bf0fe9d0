/* SPDX-License-Identifier: MIT */
/*
 * TURN allocation on a warp_loop: the sans-IO client of relay/turn.h plus its socket to the
 * server, UDP (connected, so only the server's datagrams arrive) or TCP (RFC 8656 framing:
 * STUN messages and ChannelData padded to 4 bytes, reassembled from the stream).
 *
 *	io = warp_turn_io_new(loop, &cfg, &ops, user);     allocation starts at once
 *	  ops.allocated(io, 0, info)                        relayed + mapped endpoints
 *	warp_turn_io_add_peer(io, peer, true);              permission + channel
 *	  ops.peer(io, peer, 0)                             permission installed
 *	warp_turn_io_send(io, peer, bytes, len);            Send indication or ChannelData
 *	  ops.data(io, peer, bytes, len)                    what peers sent to the relay
 *	warp_turn_io_release(io);                           deallocate, then free itself
 *
 * Callbacks run on the loop thread; they may call any function here, including
 * warp_turn_io_release(), but not warp_turn_io_free().
 */
#ifndef WARP_RELAY_TURN_IO_H
#define WARP_RELAY_TURN_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/loop.h>

#include "relay/turn.h"

struct warp_turn_io;

struct warp_turn_io_cfg {
	struct warp_turn_cfg turn; /* credentials, transport, relayed family, timers */
	struct sockaddr_storage server;
	struct sockaddr_storage local; /* address to bind; AF_UNSPEC: any */
};

struct warp_turn_io_ops {
	/* Once: the allocation is ready (err 0, info set) or could not be made. */
	void (*allocated)(struct warp_turn_io *io, int err, const struct warp_turn_info *info,
			  void *user);
	/* A peer's permission was installed (err 0) or refused / lost (err < 0). */
	void (*peer)(struct warp_turn_io *io, const struct sockaddr *peer, int err, void *user);
	/* Data a peer sent to the relayed address; may be modified in place. */
	void (*data)(struct warp_turn_io *io, const struct sockaddr *peer, uint8_t *data,
		     size_t len, void *user);
	/* A ready allocation was lost (refresh failed, connection closed). */
	void (*lost)(struct warp_turn_io *io, int err, void *user);
};

/* Opens the socket and starts the allocation.  NULL + errno when it cannot start. */
struct warp_turn_io *warp_turn_io_new(struct warp_loop *loop, const struct warp_turn_io_cfg *cfg,
				      const struct warp_turn_io_ops *ops, void *user);

/* Permission for peer's IP, and a channel for peer when channel is set (reference
 * counted; see warp_turn_add_peer()).  May be called before the allocation is ready. */
int warp_turn_io_add_peer(struct warp_turn_io *io, const struct sockaddr *peer, bool channel);
int warp_turn_io_remove_peer(struct warp_turn_io *io, const struct sockaddr *peer);

/* Sends through the relay.  Returns 0, -ENOTCONN (not allocated), -EAGAIN / -ENOBUFS
 * (socket or queue full), -EMSGSIZE. */
int warp_turn_io_send(struct warp_turn_io *io, const struct sockaddr *peer, const void *data,
		      size_t len);

/* Stops the callbacks, deallocates (Refresh with LIFETIME 0, retransmitted, bounded by
 * release_timeout_ms) and frees the object afterwards.  The loop must keep running for
 * that; the first deallocation request leaves before this returns.  NULL is fine. */
void warp_turn_io_release(struct warp_turn_io *io);
/* Immediate teardown: one best-effort deallocation request, then close.  Not from a
 * callback of this object. */
void warp_turn_io_free(struct warp_turn_io *io);

/* Objects of loop still deallocating in the background after warp_turn_io_release().  A
 * loop owner shutting down may run the loop until this is 0 (each is bounded by its
 * release_timeout_ms), then call warp_turn_io_shutdown(). */
unsigned int warp_turn_io_releasing(const struct warp_loop *loop);
/* Frees every background release of loop now (their first request already left).  Call
 * before warp_loop_free(). */
void warp_turn_io_shutdown(struct warp_loop *loop);

int warp_turn_io_fd(const struct warp_turn_io *io);
/* NULL until allocated. */
const struct warp_turn_info *warp_turn_io_info(const struct warp_turn_io *io);
enum warp_turn_state warp_turn_io_state(const struct warp_turn_io *io);
struct warp_turn *warp_turn_io_core(struct warp_turn_io *io);

#endif
