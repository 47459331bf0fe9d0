/* SPDX-License-Identifier: MIT */
/*
 * auto_connect: build every valid (strategy, address family, route) combination between this
 * node and a target address, race them with short staggers (cheap local paths first, relay
 * last), keep the first pipe whose handshake completes, cancel the rest.  The result says
 * which strategy won, the path class, and why every other attempt ended as it did.
 */
#ifndef WARPGATE_CONNECT_H
#define WARPGATE_CONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/address.h>
#include <warpgate/node.h>
#include <warpgate/pipe.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WARP_CONNECT_MAX_ATTEMPTS 96

enum warp_attempt_outcome {
	WARP_ATTEMPT_PENDING = 0,  /* scheduled, not started */
	WARP_ATTEMPT_RUNNING,
	WARP_ATTEMPT_WON,
	WARP_ATTEMPT_FAILED,
	WARP_ATTEMPT_CANCELLED,    /* another attempt won first */
	WARP_ATTEMPT_SKIPPED,      /* not possible for this pair (reason says why) */
};

struct warp_attempt {
	char strategy[24];         /* direct_connect, reverse_connect, tcp_punch, ... */
	char transport[4];         /* "udp" / "tcp" */
	int family;                /* 4 or 6 (0: not applicable) */
	char route[12];            /* "loopback", "lan", "internet", "relay" */
	char endpoint[64];         /* the remote endpoint tried */
	double start_ms, end_ms;   /* since the connect started */
	enum warp_attempt_outcome outcome;
	int err;
	char reason[112];
};

typedef void (*warp_attempt_cb)(const struct warp_attempt *a, void *user);

struct warp_connect_opts {
	uint32_t strategies;       /* bit mask of 1 << enum warp_strategy; 0: the node's config */
	int timeout_ms;            /* 0: the node's config, else 10 s */
	int family;                /* 4, 6 or 0 for both */
	warp_attempt_cb progress;  /* called when attempts start and end */
	void *user;
};

struct warp_connect_result {
	int err;                   /* 0 or why nothing won (-WARP_ENOPATH, -ETIMEDOUT, ...) */
	char strategy[24];
	enum warp_path_class path;
	double ms;                 /* time to the verified pipe */
	double resolve_ms;         /* name lookup before the attempts (0: connected by address) */
	size_t nattempts;
	struct warp_attempt attempts[WARP_CONNECT_MAX_ATTEMPTS];
};

struct warp_connect;
typedef void (*warp_connect_cb)(struct warp_connect *c, struct warp_pipe *pipe,
				const struct warp_connect_result *res, void *user);

/* Asynchronous: cb runs once, on the loop, with a pipe (the callee owns a reference) or
 * NULL.  The connect object is freed after cb returns. */
struct warp_connect *warp_connect_start(struct warp_node *node, const struct warp_node_addr *to,
					const struct warp_connect_opts *opts, warp_connect_cb cb,
					void *user);
void warp_connect_cancel(struct warp_connect *c);

/* Blocking: runs the node's loop until done.  Returns 0 with *pipe set, or the error; res
 * (may be NULL) gets the trace either way. */
int warp_auto_connect(struct warp_node *node, const struct warp_node_addr *to,
		      const struct warp_connect_opts *opts, struct warp_pipe **pipe,
		      struct warp_connect_result *res);

/* The result as JSON (malloc'd): {"connected", "strategy", "path", "ms", "resolve_ms",
 * "attempts": [...]} */
char *warp_connect_result_json(const struct warp_connect_result *res, bool pretty);
const char *warp_attempt_outcome_name(enum warp_attempt_outcome o);

#ifdef __cplusplus
}
#endif
#endif
