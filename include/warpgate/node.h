/* SPDX-License-Identifier: MIT */
/*
 * Node: one identity, its listen sockets, interfaces and (outside test mode) its view of the
 * network: NAT type, clock, port mappings, signalling brokers and name registrations.
 *
 *	struct warp_conf conf;
 *	warp_conf_test(&conf);                 // loopback only, starts in well under 1 ms
 *	struct warp_node *n = warp_node_start(&conf, NULL);
 *	char text[1024];
 *	warp_node_address_text(n, text, sizeof(text));
 *
 * All calls on a node happen on the thread that runs its loop (see loop.h).
 */
#ifndef WARPGATE_NODE_H
#define WARPGATE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/address.h>
#include <warpgate/config.h>
#include <warpgate/identity.h>
#include <warpgate/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

struct warp_node;
struct warp_pipe;

typedef void (*warp_accept_cb)(struct warp_node *node, struct warp_pipe *pipe, void *user);

/* Starts a node on loop (NULL: the node creates and owns one).  identity NULL: loaded from
 * the keystore by conf->name (or, in test mode without a name, an ephemeral one).
 * Returns NULL and sets errno on failure. */
struct warp_node *warp_node_start_with(const struct warp_conf *conf, struct warp_loop *loop,
				       struct warp_identity *identity);
struct warp_node *warp_node_start(const struct warp_conf *conf, struct warp_loop *loop);
/* Closes every pipe, removes port mappings, detaches BPF programs, frees the node. */
void warp_node_close(struct warp_node *node);

struct warp_loop *warp_node_loop(const struct warp_node *node);
const struct warp_identity *warp_node_identity(const struct warp_node *node);
const struct warp_conf *warp_node_conf(const struct warp_node *node);
uint16_t warp_node_port(const struct warp_node *node);

/* Waits (running the loop) until the node has learned what it can about the network: NAT
 * type and external endpoints, clock, brokers (each part is time-bounded).  0 or -ETIMEDOUT.
 * A test-mode node is ready at once. */
int warp_node_wait_ready(struct warp_node *node, int timeout_ms);

int warp_node_address(struct warp_node *node, struct warp_node_addr *out);
int warp_node_address_text(struct warp_node *node, char *buf, size_t cap);

/* Inbound pipes are handed to cb once their handshake completes (the callee owns a
 * reference: warp_pipe_release() when done).  Without a callback inbound pipes are refused. */
void warp_node_on_accept(struct warp_node *node, warp_accept_cb cb, void *user);
/* Restricts inbound peers to these keys (NULL/0: everyone). */
int warp_node_allow(struct warp_node *node, const uint8_t (*keys)[WARP_PUBKEY_LEN], size_t n);

/* "bpf: active (xdp: eth0)" or "bpf: off (reason)". */
const char *warp_node_bpf_status(const struct warp_node *node);

/* Status as JSON (malloc'd). */
char *warp_node_status_json(struct warp_node *node);

#ifdef __cplusplus
}
#endif
#endif
