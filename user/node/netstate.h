/* SPDX-License-Identifier: MIT */
/*
 * Network awareness of a node: what the world sees of it and the services it uses, learned
 * concurrently at start-up and kept fresh afterwards.
 *
 *  - reflexive endpoints: STUN Binding from the node's own UDP sockets (the endpoints peers
 *    will punch towards), refreshed periodically;
 *  - NAT classification per family (RFC 4787 mapping/filtering, classic type, port delta,
 *    hairpin, UDP blocked) on probe sockets of its own, with a cache per network;
 *  - the clock (SNTP), signalling brokers (MQTT), port mappings and name registrations.
 *
 * Each part is bounded in time; warp_node_wait_ready() waits until every started part has
 * an answer (or gave up) so that the node's address is complete.
 */
#ifndef WARP_NODE_NETSTATE_H
#define WARP_NODE_NETSTATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/address.h>
#include <warpgate/nat.h>

#include "node/node_internal.h"

struct warp_signal;

int netstate_start(struct warp_node *node);
void netstate_stop(struct warp_node *node);
bool netstate_ready(const struct warp_node *node);
/* Adds what the node knows of the outside (external endpoints, NAT, hints) to its address. */
void netstate_fill_address(struct warp_node *node, struct warp_node_addr *a);

/* The synced clock in ms since the epoch: SNTP when it answered, else the system clock
 * (with a logged warning once, never silently). */
uint64_t node_clock_ms(struct warp_node *node);
/* Clock state for status output: offset and uncertainty (ns), synced or not. */
bool node_clock_info(const struct warp_node *node, int64_t *offset_ns, uint64_t *uncertainty_ns);

struct warp_signal *node_signal(const struct warp_node *node);
/* Port mapping of the node's UDP (tcp false) or TCP listen port: true with the external
 * endpoint and "upnp" / "nat-pmp"; *done tells whether the attempt has an answer yet. */
bool node_portmap(const struct warp_node *node, bool tcp, bool *done,
		  struct sockaddr_storage *external, const char **method);
/* The NAT report of a family (AF_INET/AF_INET6), NULL until measured. */
const struct warp_nat_report *node_nat_report(const struct warp_node *node, int family);
/* Reflexive endpoint of the node's UDP socket of a family; false when unknown. */
bool node_reflexive(const struct warp_node *node, int family, struct sockaddr_storage *out);

/* A STUN Binding from the node's UDP socket of dest's family (e.g. to refresh a mapping just
 * before punching).  cb gets 0 and the mapped address, or an error. */
typedef void (*node_stun_cb)(int err, const struct sockaddr *mapped, uint64_t rtt_ns,
			     void *user);
int node_stun_binding(struct warp_node *node, const struct sockaddr *dest, uint32_t timeout_ms,
		      node_stun_cb cb, void *user);
/* First configured STUN server of a family, resolved. */
bool node_stun_server(const struct warp_node *node, int family, unsigned int idx,
		      struct sockaddr_storage *out);

/* Status pieces as JSON (malloc'd) for `warpgate status` and `warpgate nat`. */
char *netstate_json(struct warp_node *node, bool pretty);

#endif
