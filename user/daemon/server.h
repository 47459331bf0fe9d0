/* SPDX-License-Identifier: MIT */
/*
 * The daemon: one node (identity, listen sockets, name registration, port mappings, BPF
 * programs) and a control socket that lets other processes open and use its pipes, forward
 * and expose ports.  The protocol is in docs/cli.md; the C client in warpgate/control.h.
 *
 * Signals: SIGHUP reloads the configuration (the node restarts when node settings changed;
 * pipes then end, forwards and exposes stay); SIGINT/SIGTERM shut down cleanly (pipes
 * closed, port mappings removed, BPF detached, the socket file removed; names stay
 * registered).
 */
#ifndef WARP_DAEMON_SERVER_H
#define WARP_DAEMON_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <warpgate/config.h>

/* Re-reads the configuration for a reload: 0 with *conf filled, or an error (reported). */
typedef int (*warpd_reload_fn)(void *user, struct warp_conf *conf);

struct warpd_opts {
	struct warp_conf conf;
	char socket[PATH_MAX];	    /* "" = <home>/control.sock */
	char config_path[PATH_MAX]; /* shown in status ("" = none) */
	warpd_reload_fn reload;
	void *reload_user;
	bool ready_line; /* print "ready SOCKET ADDRESS" on stdout once serving */
};

struct warpd;

/* Starts the node and the control socket.  NULL + errno; *why (may be NULL) gets a
 * message (static or in a buffer owned by the call) for the user. */
struct warpd *warpd_start(const struct warpd_opts *opts, char *why, size_t whylen);
/* Serves until SIGINT/SIGTERM.  Returns 0. */
int warpd_run(struct warpd *d);
/* Shuts down (see above) and frees. */
void warpd_free(struct warpd *d);

#endif
