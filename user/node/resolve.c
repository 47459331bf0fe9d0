// SPDX-License-Identifier: MIT
/* Name resolution for nodes (placeholder until the nickname client is integrated). */
#include <warpgate/error.h>

#include "node/node_internal.h"
#include "node/resolve.h"

int node_resolve_name(struct warp_node *node, const char *name, struct warp_node_addr *out,
		      char *source, size_t source_len)
{
	return -WARP_ENONAMESERVER;
}

int node_publish_name(struct warp_node *node, const char *name)
{
	return -WARP_ENONAMESERVER;
}
