/* SPDX-License-Identifier: MIT */
/* Name resolution and publication for nodes (nickname servers, local-link multicast). */
#ifndef WARP_NODE_RESOLVE_H
#define WARP_NODE_RESOLVE_H

#include <stddef.h>

#include <warpgate/address.h>
#include <warpgate/node.h>

/* Resolves "alice" / "alice.p2p" to a verified node address; *source (may be NULL) names
 * the server or "multicast".  -WARP_ENONAMESERVER when no resolver is configured. */
int node_resolve_name(struct warp_node *node, const char *name, struct warp_node_addr *out,
		      char *source, size_t source_len);
/* Registers our address under name on every configured resolver (servers, multicast), waits
 * for the servers' answer, and keeps the record current when the address changes. */
int node_publish_name(struct warp_node *node, const char *name);
/* The node's nickname client (created on first use); NULL when names are off. */
struct warp_name_client *node_name_client(struct warp_node *node);
void node_names_stop(struct warp_node *node);

#endif
