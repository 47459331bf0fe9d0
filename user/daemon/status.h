/* SPDX-License-Identifier: MIT */
/*
 * `warpgate status`: one JSON document (schema in docs/cli.md) built from a node, by the
 * daemon or by the CLI's short-lived node.  Parts the node does not provide yet are reported
 * as a string saying so ("off (not integrated)"), never as made-up values; keys the node's
 * own warp_node_status_json() provides replace those placeholders.
 */
#ifndef WARP_DAEMON_STATUS_H
#define WARP_DAEMON_STATUS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <jansson.h>

#include <warpgate/node.h>
#include <warpgate/pipe.h>

#define WD_STATUS_SCHEMA 1

struct wd_daemon_info {
	pid_t pid;
	const char *socket;
	uint64_t uptime_ms;
	size_t clients;
	unsigned int reloads;  /* SIGHUP / "reload" requests that took effect */
	unsigned int restarts; /* of those, the ones that restarted the node */
	const char *config;    /* "" when none */
};

/* name: the identity name (NULL: ephemeral).  daemon NULL: no daemon.  pipes, forwards and
 * exposes are stolen (NULL: empty arrays). */
json_t *wd_status_json(struct warp_node *node, const char *name,
		       const struct wd_daemon_info *daemon, json_t *pipes, json_t *forwards,
		       json_t *exposes);
/* One pipe: id < 0 means none (forward and expose pipes have no control id). */
json_t *wd_pipe_json(struct warp_pipe *pipe, long long id, const char *owner);
/* The human-readable form. */
void wd_status_print(FILE *out, json_t *status, bool verbose);

#endif
