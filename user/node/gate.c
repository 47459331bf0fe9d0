// SPDX-License-Identifier: MIT
/* Gate: a named node (persistent identity, name registration) with listen/connect. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>
#include <warpgate/gate.h>

#define LOG_COMPONENT "gate"
#include "core/log.h"
#include "node/node_internal.h"
#include "node/resolve.h"

struct warp_gate {
	struct warp_node *node;
	char name[WARP_NAME_MAX + 1];
	bool named;                     /* false: ephemeral identity, nothing to publish */
	warp_link_handler handler;
	void *user;
	int stop;
};

struct warp_peer {
	char name[WARP_NAME_MAX + 1];
};

struct warp_gate *warp_gate_open_on(const char *name, const struct warp_conf *conf,
				    struct warp_loop *loop)
{
	struct warp_gate *g = calloc(1, sizeof(*g));
	struct warp_conf c;
	int err;

	if (!g)
		return NULL;
	if (conf)
		c = *conf;
	else
		warp_conf_init(&c);
	if (name) {
		err = warp_name_validate(name);
		if (err) {
			free(g);
			errno = -err;
			return NULL;
		}
		snprintf(c.name, sizeof(c.name), "%s", name);
	} else if (!c.name[0] && !(c.flags & WARP_CONF_TEST_MODE) &&
		   (err = warp_default_name(c.name, sizeof(c.name)))) {
		/* (test mode without a name: the node makes an ephemeral identity) */
		free(g);
		errno = -err;
		return NULL;
	}
	snprintf(g->name, sizeof(g->name), "%s", c.name[0] ? c.name : "ephemeral");
	g->named = c.name[0] != '\0';
	g->node = warp_node_start(&c, loop);
	if (!g->node) {
		err = errno;
		free(g);
		errno = err;
		return NULL;
	}
	/* Like the quickstart promises: the gate comes back knowing its NAT, clock and
	 * brokers, so its address (and the name registered with it) is complete. */
	if (warp_node_wait_ready(g->node, 5000))
		pr_warn("network discovery still incomplete after 5 s; continuing");
	return g;
}

struct warp_gate *warp_gate_open(const char *name, const struct warp_conf *conf)
{
	return warp_gate_open_on(name, conf, NULL);
}

void warp_gate_close(struct warp_gate *g)
{
	if (!g)
		return;
	warp_node_close(g->node);
	free(g);
}

struct warp_node *warp_gate_node(const struct warp_gate *g)
{
	return g->node;
}

const char *warp_gate_name(const struct warp_gate *g)
{
	return g->name;
}

static void on_accept(struct warp_node *node, struct warp_pipe *pipe, void *user)
{
	struct warp_gate *g = user;

	g->handler(pipe, g->user);
}

int warp_gate_listen(struct warp_gate *g, warp_link_handler handler, void *user)
{
	int err;

	if (!handler)
		return -EINVAL;
	g->handler = handler;
	g->user = user;
	warp_node_on_accept(g->node, on_accept, g);
	err = g->named ? node_publish_name(g->node, g->name) : 0;
	if (err && err != -WARP_ENONAMESERVER)
		pr_warn("cannot publish name %s: %s", g->name, warp_strerror(err));
	return 0;
}

static bool stopped(void *user)
{
	return __atomic_load_n(&((struct warp_gate *)user)->stop, __ATOMIC_ACQUIRE);
}

int warp_gate_serve(struct warp_gate *g, int timeout_ms)
{
	int err = warp_loop_run_until(g->node->loop, stopped, g, timeout_ms);

	__atomic_store_n(&g->stop, 0, __ATOMIC_RELEASE);
	return err;
}

static void wake(void *user)
{
	(void)user; /* the posted call only has to wake the loop so it re-checks the flag */
}

void warp_gate_stop(struct warp_gate *g)
{
	__atomic_store_n(&g->stop, 1, __ATOMIC_RELEASE);
	warp_loop_post(g->node->loop, wake, g);
}

struct warp_peer *warp_peer_find(const char *name)
{
	struct warp_peer *p;

	if (!name || !*name || strlen(name) > WARP_NAME_MAX) {
		errno = WARP_ENAME;
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	snprintf(p->name, sizeof(p->name), "%s", name);
	return p;
}

void warp_peer_free(struct warp_peer *p)
{
	free(p);
}

const char *warp_peer_name(const struct warp_peer *p)
{
	return p->name;
}

int warp_gate_connect_ex(struct warp_gate *g, const char *target,
			 const struct warp_connect_opts *opts, struct warp_pipe **pipe,
			 struct warp_connect_result *res)
{
	struct warp_node_addr to;
	double resolve_ms = 0;
	uint64_t t0;
	int err;

	*pipe = NULL;
	if (!strncmp(target, WARP_ADDR_TEXT_PREFIX, strlen(WARP_ADDR_TEXT_PREFIX))) {
		err = warp_addr_from_text(target, &to);
	} else {
		t0 = warp_time_ns();
		err = node_resolve_name(g->node, target, &to, NULL, 0);
		resolve_ms = (double)(warp_time_ns() - t0) / 1e6;
	}
	if (err) {
		if (res) {
			memset(res, 0, sizeof(*res));
			res->err = err;
			res->resolve_ms = resolve_ms;
		}
		return err;
	}
	err = warp_auto_connect(g->node, &to, opts, pipe, res);
	if (res)
		res->resolve_ms = resolve_ms;
	return err;
}

int warp_gate_connect(struct warp_gate *g, const char *target, struct warp_pipe **pipe,
		      const char **strategy)
{
	static struct warp_connect_result res; /* the strategy name must outlive the call */
	int err = warp_gate_connect_ex(g, target, NULL, pipe, &res);

	if (strategy)
		*strategy = err ? NULL : res.strategy;
	return err;
}

int warp_gate_connect_peer(struct warp_gate *g, const struct warp_peer *peer,
			   struct warp_pipe **pipe, const char **strategy)
{
	return warp_gate_connect(g, peer->name, pipe, strategy);
}
