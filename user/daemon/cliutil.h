/* SPDX-License-Identifier: MIT */
/* Helpers shared by the daemon and the CLI commands that talk to it or run a node. */
#ifndef WARP_DAEMON_CLIUTIL_H
#define WARP_DAEMON_CLIUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/config.h>
#include <warpgate/identity.h>
#include <warpgate/loop.h>

/* SIGINT/SIGTERM (stop) and SIGHUP (hups++) through a signalfd on the loop. */
struct wd_signals {
	int fd;
	struct warp_loop *loop;
	volatile bool stop;
	unsigned int hups;
	int last; /* last signal number seen */
};

int wd_signals_start(struct wd_signals *s, struct warp_loop *loop);
void wd_signals_stop(struct wd_signals *s);
bool wd_signals_stopped(void *s);

/* Runs what is due now (deferred frees, zero timers) so nothing is left when the loop goes. */
void wd_loop_drain(struct warp_loop *loop);

/* The control socket: override, else <home>/control.sock with home from conf or
 * $WARPGATE_HOME / ~/.warpgate.  -ENAMETOOLONG when it does not fit a sockaddr_un. */
int wd_socket_path(const struct warp_conf *conf, const char *override, char *buf, size_t len);

/* Collects --allow values: 66 hex digits of a compressed public key each. */
struct wd_keys {
	size_t n;
	uint8_t (*keys)[WARP_PUBKEY_LEN];
};

int wd_keys_add(struct wd_keys *k, const char *hex);
void wd_keys_free(struct wd_keys *k);

struct fwd_event;
struct warp_ctl;

/* One line on stderr for a forwarding event ("warpgate CMD: ..."); opens and clean closes
 * only when verbose. */
void wd_fwd_event_print(const char *cmd, const struct fwd_event *ev, bool verbose);
/* The same from a daemon's {"event": "forward", ...} line. */
void wd_fwd_event_print_json(const char *cmd, const char *json, bool verbose);
/* The running daemon for this configuration (override: --socket), or NULL (errno) when none
 * answers.  For commands that use the daemon when it runs. */
struct warp_ctl *wd_ctl_find(const struct warp_conf *conf, const char *override);
/* netcat over a daemon pipe: in_fd to the pipe (end of input half-closes it), the pipe's
 * messages to out_fd, until the pipe ends (0), SIGINT/SIGTERM (0) or an error. */
int wd_ctl_netcat(struct warp_ctl *ctl, uint32_t pipe, int in_fd, int out_fd);
/* Prints the daemon's forward events until SIGINT/SIGTERM (0) or the daemon goes away
 * (-EPIPE). */
int wd_ctl_follow(struct warp_ctl *ctl, const char *cmd, bool verbose);

#endif
