/* SPDX-License-Identifier: MIT */
/*
 * Gate: the high-level API, a node with a persistent identity and a name.
 *
 *	static void echo_msg(struct warp_pipe *link, const uint8_t *m, size_t n, void *u)
 *	{ ... warp_pipe_send(link, reply, len); }
 *	static void echo(struct warp_pipe *link, void *user)
 *	{ warp_pipe_on_message(link, echo_msg, NULL); }
 *
 *	alice = warp_gate_open("alice", &conf);     // loads or creates ~/.warpgate/alice.json,
 *	warp_gate_listen(alice, echo, NULL);        // starts a node, registers alice.p2p
 *	warp_gate_serve(alice, -1);                 // until warp_gate_stop()
 *
 *	bob = warp_gate_open("bob", &conf);
 *	warp_gate_connect(bob, "alice", &pipe, &strategy);   // or "alice.p2p" or "wg1...."
 */
#ifndef WARPGATE_GATE_H
#define WARPGATE_GATE_H

#include <warpgate/config.h>
#include <warpgate/connect.h>
#include <warpgate/node.h>
#include <warpgate/pipe.h>

#ifdef __cplusplus
extern "C" {
#endif

struct warp_gate;
struct warp_peer;

/* Called once per inbound peer with a link the handler owns (warp_pipe_release() it). */
typedef void (*warp_link_handler)(struct warp_pipe *link, void *user);

/* name NULL: the machine-derived default name (in test mode: an ephemeral identity that
 * is never written to disk).  conf NULL: defaults.  NULL + errno. */
struct warp_gate *warp_gate_open(const char *name, const struct warp_conf *conf);
/* Same, on a loop the caller runs (several gates may share one). */
struct warp_gate *warp_gate_open_on(const char *name, const struct warp_conf *conf,
				    struct warp_loop *loop);
void warp_gate_close(struct warp_gate *gate);
struct warp_node *warp_gate_node(const struct warp_gate *gate);
const char *warp_gate_name(const struct warp_gate *gate);

int warp_gate_listen(struct warp_gate *gate, warp_link_handler handler, void *user);
/* Runs the gate's loop until warp_gate_stop() (0) or timeout_ms (-ETIMEDOUT; < 0: none). */
int warp_gate_serve(struct warp_gate *gate, int timeout_ms);
/* Thread-safe. */
void warp_gate_stop(struct warp_gate *gate);

/* A handle for "the peer registered as NAME"; resolved on connect.  NULL + errno. */
struct warp_peer *warp_peer_find(const char *name);
void warp_peer_free(struct warp_peer *peer);
const char *warp_peer_name(const struct warp_peer *peer);

/* target: "wg1...." address text, "alice" or "alice.p2p".  Blocking.  *strategy (may be NULL)
 * points to a static name.  res (may be NULL) gets the attempt trace. */
int warp_gate_connect(struct warp_gate *gate, const char *target, struct warp_pipe **pipe,
		      const char **strategy);
int warp_gate_connect_peer(struct warp_gate *gate, const struct warp_peer *peer,
			   struct warp_pipe **pipe, const char **strategy);
int warp_gate_connect_ex(struct warp_gate *gate, const char *target,
			 const struct warp_connect_opts *opts, struct warp_pipe **pipe,
			 struct warp_connect_result *res);

#ifdef __cplusplus
}
#endif
#endif
