// SPDX-License-Identifier: MIT
/*
 * auto_connect: plans every strategy's attempts, starts them on staggered timers, keeps the
 * first verified pipe and cancels the rest, and records a trace of every attempt so a user
 * can see why a path was chosen (or why none was found).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/connect.h>
#include <warpgate/error.h>

#define LOG_COMPONENT "connect"
#include "core/log.h"
#include "net/endpoint.h"
#include "pipe/pipe_internal.h"
#include "traverse/traverse.h"

#define DEFAULT_TIMEOUT_MS 10000

/* In stagger order: cheap local paths first, relay last. */
static const struct tv_strategy *const strategies[] = {
	&tv_direct,
	&tv_reverse,
	&tv_tcp_punch,
	&tv_udp_punch,
	&tv_random_probe,
	&tv_turn,
};

double tv_elapsed_ms(const struct warp_connect *c)
{
	return (double)(warp_time_ns() - c->t0) / 1e6;
}

static struct warp_attempt *new_rec(struct warp_connect *c, const struct tv_strategy *st,
				    const struct tv_combo *combo)
{
	struct warp_attempt *r;

	if (c->res.nattempts >= WARP_CONNECT_MAX_ATTEMPTS)
		return NULL;
	r = &c->res.attempts[c->res.nattempts++];
	memset(r, 0, sizeof(*r));
	snprintf(r->strategy, sizeof(r->strategy), "%s", st->name);
	if (combo) {
		snprintf(r->transport, sizeof(r->transport), "%s", combo->tcp ? "tcp" : "udp");
		r->family = combo->family == AF_INET6 ? 6 : combo->family == AF_INET ? 4 : 0;
		snprintf(r->route, sizeof(r->route), "%s", combo->route ? combo->route : "");
		if (combo->remote.ss_family)
			warp_ep_str((const struct sockaddr *)&combo->remote, r->endpoint,
				    sizeof(r->endpoint));
	}
	return r;
}

static void report(struct warp_connect *c, const struct warp_attempt *r)
{
	if (c->opts.progress)
		c->opts.progress(r, c->opts.user);
}

static void attempt_start(struct warp_timer *t, void *user)
{
	struct tv_attempt *a = user;
	int err;

	if (a->done || a->c->finished)
		return;
	a->running = true;
	a->rec->outcome = WARP_ATTEMPT_RUNNING;
	a->rec->start_ms = tv_elapsed_ms(a->c);
	report(a->c, a->rec);
	err = a->st->start(a);
	if (err && !a->done)
		tv_failed(a, err, "%s", warp_strerror(err));
}

struct tv_attempt *tv_add(struct warp_connect *c, const struct tv_strategy *st,
			  const struct tv_combo *combo, uint32_t delay_ms)
{
	struct tv_attempt *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->rec = new_rec(c, st, combo);
	a->timer = warp_timer_new(c->node->loop, attempt_start, a);
	if (!a->rec || !a->timer) {
		warp_timer_free(a->timer);
		free(a);
		return NULL;
	}
	a->c = c;
	a->st = st;
	a->combo = *combo;
	list_add_tail(&a->link, &c->attempts);
	warp_timer_arm_ms(a->timer, delay_ms);
	return a;
}

void tv_skip(struct warp_connect *c, const struct tv_strategy *st, const struct tv_combo *combo,
	     const char *fmt, ...)
{
	struct warp_attempt *r = new_rec(c, st, combo);
	va_list ap;

	if (!r)
		return;
	r->outcome = WARP_ATTEMPT_SKIPPED;
	r->start_ms = r->end_ms = tv_elapsed_ms(c);
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
}

static void free_attempts(struct warp_connect *c)
{
	struct list_head *pos, *tmp;

	list_for_each_safe(pos, tmp, &c->attempts) {
		struct tv_attempt *a = list_entry(pos, struct tv_attempt, link);

		if (a->running && !a->done && a->st->cancel)
			a->st->cancel(a);
		list_del(&a->link);
		warp_timer_free(a->timer);
		free(a);
	}
}

static void finish(struct warp_connect *c, struct warp_pipe *pipe, int err)
{
	struct list_head *pos;

	if (c->finished)
		return;
	c->finished = true;
	c->res.err = err;
	c->res.ms = tv_elapsed_ms(c);
	list_for_each(pos, &c->attempts) {
		struct tv_attempt *a = list_entry(pos, struct tv_attempt, link);

		if (a->done)
			continue;
		warp_timer_cancel(a->timer);
		if (a->running && a->st->cancel)
			a->st->cancel(a);
		a->done = true;
		a->rec->outcome = WARP_ATTEMPT_CANCELLED;
		a->rec->end_ms = c->res.ms;
		if (!a->running)
			a->rec->start_ms = c->res.ms;
		snprintf(a->rec->reason, sizeof(a->rec->reason), "%s",
			 pipe ? "another attempt won" : "connect gave up");
	}
	warp_timer_cancel(c->deadline);
	if (pipe) {
		struct warp_pipe_info info;

		warp_pipe_info(pipe, &info);
		c->res.path = info.path;
		snprintf(c->res.strategy, sizeof(c->res.strategy), "%s", info.strategy);
	}
	list_del(&c->node_link);
	c->cb(c, pipe, &c->res, c->user);
	free_attempts(c);
	warp_timer_free(c->deadline);
	free(c);
}

static void check_done(struct warp_connect *c)
{
	struct list_head *pos;
	int last_err = -WARP_ENOPATH;

	list_for_each(pos, &c->attempts) {
		struct tv_attempt *a = list_entry(pos, struct tv_attempt, link);

		if (!a->done)
			return;
		if (a->rec->err)
			last_err = a->rec->err;
	}
	/* Every attempt ended without a pipe.  A wrong identity is worth reporting as such:
	 * the peer answered, but it is not who the address says. */
	finish(c, NULL, last_err == -WARP_EIDENTITY ? last_err : -WARP_ENOPATH);
}

void tv_won(struct tv_attempt *a, struct warp_pipe *pipe)
{
	struct warp_connect *c = a->c;

	a->done = true;
	a->rec->end_ms = tv_elapsed_ms(c);
	if (c->finished) {
		/* Lost a photo finish: close the extra pipe so the peer sees it end. */
		a->rec->outcome = WARP_ATTEMPT_CANCELLED;
		warp_pipe_close(pipe);
		warp_pipe_release(pipe);
		return;
	}
	a->rec->outcome = WARP_ATTEMPT_WON;
	pipe_set_strategy(pipe, a->st->name, a->combo.cls);
	report(c, a->rec);
	pr_info("connected by %s over %s/%s %s in %.1f ms", a->st->name, a->rec->transport,
		a->rec->route, a->rec->endpoint, a->rec->end_ms);
	finish(c, pipe, 0);
}

void tv_failed(struct tv_attempt *a, int err, const char *fmt, ...)
{
	va_list ap;

	if (a->done)
		return;
	a->done = true;
	a->rec->outcome = WARP_ATTEMPT_FAILED;
	a->rec->err = err;
	a->rec->end_ms = tv_elapsed_ms(a->c);
	va_start(ap, fmt);
	vsnprintf(a->rec->reason, sizeof(a->rec->reason), fmt, ap);
	va_end(ap);
	report(a->c, a->rec);
	pr_debug("%s %s %s failed: %s", a->st->name, a->rec->transport, a->rec->endpoint,
		 a->rec->reason);
	if (!a->c->finished)
		check_done(a->c);
}

static void on_deadline(struct warp_timer *t, void *user)
{
	finish(user, NULL, -ETIMEDOUT);
}

static void start_deferred_finish(void *user)
{
	struct warp_connect *c = user;

	if (list_empty(&c->attempts))
		finish(c, NULL, -WARP_ENOPATH);
}

struct warp_connect *warp_connect_start(struct warp_node *node, const struct warp_node_addr *to,
					const struct warp_connect_opts *opts, warp_connect_cb cb,
					void *user)
{
	struct warp_connect *c = calloc(1, sizeof(*c));
	uint32_t timeout;

	if (!c)
		return NULL;
	c->node = node;
	c->to = *to;
	if (opts)
		c->opts = *opts;
	c->cb = cb;
	c->user = user;
	c->t0 = warp_time_ns();
	c->on_link = -1;
	list_init(&c->attempts);
	c->strategies = c->opts.strategies ? c->opts.strategies
					   : node->conf.strategies ? node->conf.strategies
								   : ~0u;
	c->same_host = to->has_machine && node->has_machine &&
		       !memcmp(to->machine, node->machine, WARP_MACHINE_HASH_LEN);
	timeout = c->opts.timeout_ms > 0 ? (uint32_t)c->opts.timeout_ms
		  : node->conf.connect_timeout_ms ? node->conf.connect_timeout_ms
						  : DEFAULT_TIMEOUT_MS;
	c->deadline = warp_timer_new(node->loop, on_deadline, c);
	if (!c->deadline) {
		free(c);
		return NULL;
	}
	warp_timer_arm_ms(c->deadline, timeout);
	tv_track_connect(node, c);
	if (!memcmp(to->pubkey, warp_identity_pubkey(node->id), WARP_PUBKEY_LEN))
		pr_warn("connecting to our own identity");
	for (size_t i = 0; i < sizeof(strategies) / sizeof(strategies[0]); i++) {
		const struct tv_strategy *st = strategies[i];

		if (!(c->strategies & (1u << st->id))) {
			tv_skip(c, st, NULL, "disabled by configuration");
			continue;
		}
		st->plan(c);
	}
	/* Nothing to try: report it from the loop, not from inside this call. */
	if (list_empty(&c->attempts))
		warp_loop_defer(node->loop, start_deferred_finish, c);
	return c;
}

void warp_connect_cancel(struct warp_connect *c)
{
	c->cb = NULL;
	list_del(&c->node_link);
	free_attempts(c);
	warp_timer_free(c->deadline);
	free(c);
}

struct blocking {
	bool done;
	struct warp_pipe *pipe;
	struct warp_connect_result *res;
};

static void blocking_cb(struct warp_connect *c, struct warp_pipe *pipe,
			const struct warp_connect_result *res, void *user)
{
	struct blocking *b = user;

	b->done = true;
	b->pipe = pipe;
	if (b->res)
		*b->res = *res;
}

static bool blocking_done(void *user)
{
	return ((struct blocking *)user)->done;
}

int warp_auto_connect(struct warp_node *node, const struct warp_node_addr *to,
		      const struct warp_connect_opts *opts, struct warp_pipe **pipe,
		      struct warp_connect_result *res)
{
	struct warp_connect_result local;
	struct blocking b = { .res = res ? res : &local };
	struct warp_connect *c = warp_connect_start(node, to, opts, blocking_cb, &b);
	int err;

	*pipe = NULL;
	if (!c)
		return -errno;
	err = warp_loop_run_until(node->loop, blocking_done, &b, -1);
	if (err) {
		if (!b.done)
			warp_connect_cancel(c);
		return err;
	}
	*pipe = b.pipe;
	return b.pipe ? 0 : b.res->err;
}

static const char *const outcome_names[] = { "pending", "running", "won",
					     "failed",  "cancelled", "skipped" };

const char *warp_attempt_outcome_name(enum warp_attempt_outcome o)
{
	return (unsigned int)o < 6 ? outcome_names[o] : "?";
}

char *warp_connect_result_json(const struct warp_connect_result *res, bool pretty)
{
	json_t *root = json_object(), *arr = json_array();
	char *out;

	json_object_set_new(root, "connected", json_boolean(res->err == 0));
	json_object_set_new(root, "strategy", res->err ? json_null() : json_string(res->strategy));
	json_object_set_new(root, "path",
			    res->err ? json_null() : json_string(warp_path_class_name(res->path)));
	json_object_set_new(root, "ms", json_real(res->ms));
	json_object_set_new(root, "resolve_ms", json_real(res->resolve_ms));
	if (res->err)
		json_object_set_new(root, "error", json_string(warp_strerror(res->err)));
	for (size_t i = 0; i < res->nattempts; i++) {
		const struct warp_attempt *a = &res->attempts[i];
		json_t *o = json_object();

		json_object_set_new(o, "strategy", json_string(a->strategy));
		json_object_set_new(o, "transport", json_string(a->transport));
		json_object_set_new(o, "family", a->family ? json_integer(a->family) : json_null());
		json_object_set_new(o, "route", json_string(a->route));
		json_object_set_new(o, "endpoint", json_string(a->endpoint));
		json_object_set_new(o, "outcome", json_string(warp_attempt_outcome_name(a->outcome)));
		json_object_set_new(o, "reason", json_string(a->reason));
		json_object_set_new(o, "start_ms", json_real(a->start_ms));
		json_object_set_new(o, "end_ms", json_real(a->end_ms));
		json_array_append_new(arr, o);
	}
	json_object_set_new(root, "attempts", arr);
	out = json_dumps(root, (pretty ? JSON_INDENT(2) : JSON_COMPACT) | JSON_PRESERVE_ORDER |
				       JSON_REAL_PRECISION(6));
	json_decref(root);
	return out;
}
