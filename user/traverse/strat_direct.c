// SPDX-License-Identifier: MIT
/*
 * direct_connect: dial the peer's advertised endpoints (loopback, LAN, external — including
 * UPnP / NAT-PMP mapped ports) over UDP and TCP.  Works whenever the peer is reachable:
 * same host, same LAN, open or full-cone NAT, or a port mapping.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "direct"
#include "core/log.h"
#include "net/endpoint.h"
#include "net/sock.h"
#include "pipe/pipe_internal.h"
#include "traverse/traverse.h"

static void direct_plan(struct warp_connect *c)
{
	struct tv_combo combos[16];
	int routes_tried = 0;

	for (size_t i = 0; i < c->to.nroutes; i++) {
		for (int tcp = 0; tcp < 2; tcp++) {
			int n = tv_route_combos(c, (int)i, tcp, combos, 16);

			for (int k = 0; k < n; k++) {
				/* Local paths at once; the internet shortly after; TCP a beat
				 * after UDP, happy-eyeballs style. */
				uint32_t delay = (!strcmp(combos[k].route, "internet") ? 20 : 0) +
						 (tcp ? 10 : 0);

				tv_add(c, &tv_direct, &combos[k], delay);
				routes_tried++;
			}
		}
	}
	if (!routes_tried)
		tv_skip(c, &tv_direct, NULL, "no endpoint of the peer is reachable from here");
}

static void dialed(struct warp_pipe *pipe, int err, void *user)
{
	struct tv_attempt *a = user;

	a->priv = NULL;
	if (pipe)
		tv_won(a, pipe);
	else
		tv_failed(a, err, "%s", err == -ETIMEDOUT ? "no answer (handshake timed out)"
						     : warp_strerror(err));
}

static int direct_start(struct tv_attempt *a)
{
	struct warp_node *node = a->c->node;
	struct pipe_dial_opts o = { 0 };
	struct pipe_path *path;

	o.expect_key = a->c->to.pubkey;
	o.cls = a->combo.cls;
	o.strategy = "direct_connect";
	if (a->combo.tcp) {
		struct sockaddr_storage any = { 0 };
		int fd;

		any.ss_family = (sa_family_t)a->combo.family;
		fd = warp_sock_tcp((struct sockaddr *)&any, WARP_SOCK_NOBIND);
		if (fd < 0)
			return fd;
		if (connect(fd, (struct sockaddr *)&a->combo.remote,
			    warp_ep_len((struct sockaddr *)&a->combo.remote)) < 0 &&
		    errno != EINPROGRESS) {
			int err = -errno;

			close(fd);
			return err;
		}
		path = pipe_path_tcp(node, fd, (struct sockaddr *)&a->combo.remote, true);
		if (!path) {
			close(fd);
			return -errno;
		}
	} else {
		path = pipe_path_udp(node, (struct sockaddr *)&a->combo.remote,
				     a->combo.local.ss_family ? (struct sockaddr *)&a->combo.local
							      : NULL,
				     a->combo.ifindex);
		if (!path)
			return -errno;
	}
	path->cls = a->combo.cls;
	a->priv = pipe_dial(node, path, &o, dialed, a);
	if (!a->priv) {
		int err = -errno;

		pipe_path_free(path);
		return err;
	}
	return 0;
}

static void direct_cancel(struct tv_attempt *a)
{
	if (a->priv)
		pipe_dial_cancel(a->priv);
	a->priv = NULL;
}

const struct tv_strategy tv_direct = {
	.id = WARP_STRAT_DIRECT,
	.name = "direct_connect",
	.plan = direct_plan,
	.start = direct_start,
	.cancel = direct_cancel,
};
