/* SPDX-License-Identifier: MIT */
/* Node internals shared by user/node, user/pipe and user/traverse. */
#ifndef WARP_NODE_INTERNAL_H
#define WARP_NODE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/config.h>
#include <warpgate/iface.h>
#include <warpgate/node.h>

#include "core/cidtab.h"
#include "core/list.h"
#include "net/sock.h"

#define NODE_RX_BATCH 32
#define NODE_RX_BUF   65536

enum node_sock_kind { NODE_UDP4, NODE_UDP6, NODE_TCP4, NODE_TCP6, NODE_NSOCK };

struct node_sock {
	struct warp_node *node;
	int fd;
	int family;
	bool tcp;
	struct sockaddr_storage local;
};

/* First-byte classes of datagrams arriving on a node socket. */
enum node_rx_class {
	NODE_RX_STUN = 0,      /* 0b00: STUN / TURN control */
	NODE_RX_CHANNEL = 1,   /* 0b01: TURN ChannelData */
	NODE_RX_WARP = 3,      /* 0b11: warpgate packets */
	NODE_RX_NCLASS = 4,
};

/* A datagram handler; returns true when it consumed the datagram. */
typedef bool (*node_rx_fn)(struct warp_node *node, struct node_sock *s, struct warp_dgram *d,
			   void *user);

struct node_rx_hook {
	node_rx_fn fn;
	void *user;
	struct list_head link;
};

struct warp_node {
	struct warp_conf conf;
	struct warp_loop *loop;
	bool own_loop;
	struct warp_identity *id;
	bool own_id;
	bool has_machine;
	uint8_t machine[WARP_MACHINE_HASH_LEN];
	uint64_t started_ns;

	struct warp_iface_list ifs;
	struct warp_netwatch *watch;

	struct node_sock socks[NODE_NSOCK];
	uint16_t port;
	struct list_head rx_hooks[NODE_RX_NCLASS];
	uint8_t *rxbufs;               /* NODE_RX_BATCH * NODE_RX_BUF */

	warp_accept_cb accept_cb;
	void *accept_user;
	uint8_t (*allow)[WARP_PUBKEY_LEN];
	size_t nallow;

	struct cidtab cids;            /* local CID -> struct node_cid_entry */
	struct list_head pipes;        /* struct warp_pipe, link */
	struct list_head handshakes;   /* struct node_hs, link */
	struct list_head tcp_conns;    /* accepted/connecting TCP transports not yet pipes */
	void *pipe_ctx;                /* owned by user/pipe */
	void *traverse;                /* owned by user/traverse */
	void *ext;                     /* network awareness (NAT, clock, port maps) */
	void *names;                   /* nickname client */
	void *signal;                  /* signalling service */
	void *fastpath;                /* BPF loader */
};

/* Kinds of objects in the CID table. */
enum node_cid_kind {
	NODE_CID_HS = 1,
	NODE_CID_PIPE = 2,
};

struct node_cid_entry {
	enum node_cid_kind kind;
	void *obj;
};

int node_rx_hook_add(struct warp_node *node, enum node_rx_class cls, struct node_rx_hook *h);
void node_rx_hook_del(struct node_rx_hook *h);
struct node_sock *node_udp_sock(struct warp_node *node, int family);
/* Sends a datagram from the node's UDP socket of dst's family; src/ifindex pick the local
 * address (may be NULL/0). */
int node_send(struct warp_node *node, const void *buf, size_t len, const struct sockaddr *dst,
	      const struct sockaddr *src, int ifindex);
/* Generates a fresh, unused, non-zero local CID. */
void node_new_cid(struct warp_node *node, uint8_t cid[WARP_CID_LEN]);
bool node_peer_allowed(const struct warp_node *node, const uint8_t key[WARP_PUBKEY_LEN]);

/* Pipe layer entry points called by the node (user/pipe/pipe.c). */
int pipe_layer_init(struct warp_node *node);
void pipe_layer_fini(struct warp_node *node);
bool pipe_layer_rx(struct warp_node *node, struct node_sock *s, struct warp_dgram *d, void *user);
void pipe_layer_tcp_accept(struct warp_node *node, int fd, const struct sockaddr *peer);

#endif
