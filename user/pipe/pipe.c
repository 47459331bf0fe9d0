// SPDX-License-Identifier: MIT
/* Pipe layer (placeholder until the handshake and stream cores are integrated). */
#include <unistd.h>

#include "node/node_internal.h"

int pipe_layer_init(struct warp_node *node)
{
	return 0;
}

void pipe_layer_fini(struct warp_node *node)
{
}

bool pipe_layer_rx(struct warp_node *node, struct node_sock *s, struct warp_dgram *d, void *user)
{
	return false;
}

void pipe_layer_tcp_accept(struct warp_node *node, int fd, const struct sockaddr *peer)
{
	close(fd);
}
