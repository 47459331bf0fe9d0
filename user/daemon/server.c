// SPDX-License-Identifier: MIT
/*
 * The daemon (see server.h): a node on our own loop, the control socket and its clients,
 * the pipes clients own, forwards and exposes, reload and shutdown.
 *
 * Clients speak JSON lines (docs/cli.md).  Requests that complete later (connect, recv,
 * send into a full pipe, forward) keep the request's id and answer when done; events go
 * to the client that owns the pipe, forward or expose rule.  A client that stops reading
 * is dropped once OUT_MAX bytes wait for it, so it cannot make the daemon grow unbounded.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include <warpgate/control.h>
#include <warpgate/error.h>
#include <warpgate/gate.h>
#include <warpgate/name.h>

#define LOG_COMPONENT "daemon"
#include "core/list.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon/cliutil.h"
#include "daemon/ctlproto.h"
#include "daemon/fwd.h"
#include "daemon/server.h"
#include "daemon/status.h"
#include "net/endpoint.h"
#include "node/resolve.h"

#define OUT_MAX	      (64u << 20) /* bytes waiting for a client before we drop it */
#define RXQ_MAX_MSGS  4096	  /* messages queued per pipe until recv'd */
#define RXQ_MAX_BYTES (64u << 20)
#define CLASSIFY_MS   3000 /* inbound pipe: wait this long for its first message */
#define SEND_RETRY_MS 5
#define MAX_CLIENTS   256

struct client;
struct dpipe;

struct rxmsg {
	struct list_head link;
	size_t len;
	uint8_t data[];
};

/* A request answered later. */
struct waiter {
	struct list_head link;
	struct client *c;
	json_t *id;
	struct dpipe *p;
	struct warp_timer *t; /* recv deadline */
	uint8_t *data;	      /* send: the message */
	size_t len;
};

struct dpipe {
	struct list_head link; /* warpd.pipes */
	struct warpd *d;
	uint32_t id;
	struct warp_pipe *pipe;
	struct client *owner;
	int sub;
	bool subscribed;
	bool ended;
	int end_err;
	struct list_head rxq;
	size_t rxn, rxbytes;
	uint64_t dropped;
	struct list_head recvs; /* struct waiter */
	struct list_head sends; /* struct waiter, with data */
};

struct pconn {
	struct list_head link; /* client.conns */
	struct client *c;
	json_t *id;
	struct fwd_dial *dial;
};

struct dfwd {
	struct list_head link; /* warpd.forwards */
	struct warpd *d;
	uint32_t id;
	struct client *owner;
	struct fwd_forwarder *f;
	json_t *pending; /* the "forward" request, until the first pipe */
	bool doomed;
	char listen[WARP_EP_STRLEN];
	char to[FWD_HOST_MAX + 16];
	char target[2048];
};

/* A nickname request in flight; the name client holds a pointer to it until it answers. */
struct aop {
	struct list_head link;  /* warpd.aops */
	struct client *c;       /* NULL once the client is gone */
	json_t *id;
};

struct pending_in {
	struct list_head link; /* warpd.classify */
	struct warpd *d;
	struct warp_pipe *pipe;
	int sub;
	struct warp_timer *t;
};

struct client {
	struct list_head link;
	struct warpd *d;
	int fd;
	uid_t uid;
	pid_t pid;
	char *in;
	size_t inlen, incap;
	char *out;
	size_t outlen, outoff, outcap;
	bool want_write;
	bool dead;
	bool listening;
	struct wd_keys allow;
	struct list_head conns; /* struct pconn */
};

struct warpd {
	struct warpd_opts o;
	struct warp_loop *loop;
	struct warp_gate *gate;
	struct warp_conf conf;
	bool named;
	int lfd;
	char sock[PATH_MAX];
	struct list_head clients;
	size_t nclients;
	struct list_head pipes;
	struct list_head forwards;
	struct list_head classify;
	struct list_head aops;
	uint32_t next_pipe, next_fwd;
	struct fwd_exposer *x;
	struct warp_timer *send_retry;
	struct wd_signals sig;
	uint64_t started_ms;
	unsigned int reloads, restarts;
};

static struct warp_node *node_of(struct warpd *d)
{
	return warp_gate_node(d->gate);
}

/* ------------------------------------------------------------------ client output */

static void client_kill(struct client *c);

static void client_update_io(struct client *c)
{
	bool want = c->outlen > c->outoff;

	if (c->dead || want == c->want_write)
		return;
	c->want_write = want;
	warp_loop_mod_fd(c->d->loop, c->fd, WARP_EV_READ | (want ? WARP_EV_WRITE : 0));
}

static void client_flush(struct client *c)
{
	while (c->outlen > c->outoff) {
		ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			client_kill(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	if (c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	client_update_io(c);
}

/* Writes one JSON line (o is stolen). */
static void client_write(struct client *c, json_t *o)
{
	char *s;
	size_t n;

	if (c->dead) {
		json_decref(o);
		return;
	}
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!s) {
		client_kill(c);
		return;
	}
	n = strlen(s);
	if (c->outlen - c->outoff + n + 1 > OUT_MAX) {
		pr_warn("client pid %d does not read its events: dropping it", (int)c->pid);
		free(s);
		client_kill(c);
		return;
	}
	if (c->outoff && c->outlen + n + 1 > c->outcap) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	if (c->outlen + n + 1 > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 4096;
		char *nb;

		while (cap < c->outlen + n + 1)
			cap *= 2;
		nb = realloc(c->out, cap);
		if (!nb) {
			free(s);
			client_kill(c);
			return;
		}
		c->out = nb;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, s, n);
	c->out[c->outlen + n] = '\n';
	c->outlen += n + 1;
	free(s);
	client_flush(c);
}

static void reply_ok(struct client *c, json_t *id, json_t *body)
{
	json_t *o = json_pack("{s:O, s:b}", "id", id ? id : json_null(), "ok", 1);

	if (body) {
		json_object_update(o, body);
		json_decref(body);
	}
	client_write(c, o);
}

__attribute__((format(printf, 4, 5))) static void reply_err(struct client *c, json_t *id, int err,
							    const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	client_write(c, json_pack("{s:O, s:b, s:s, s:s, s:i}", "id", id ? id : json_null(), "ok", 0,
				  "error", msg, "code", ctl_err_name(err), "errno", err));
}

static void reply_err_body(struct client *c, json_t *id, int err, const char *msg, json_t *body)
{
	json_t *o = json_pack("{s:O, s:b, s:s, s:s, s:i}", "id", id ? id : json_null(), "ok", 0,
			      "error", msg, "code", ctl_err_name(err), "errno", err);

	if (body) {
		json_object_update(o, body);
		json_decref(body);
	}
	client_write(c, o);
}

static char *b64(const uint8_t *data, size_t len)
{
	char *s = malloc(ctl_b64_len(len) + 1);

	if (s)
		ctl_b64_encode(s, data, len);
	return s;
}

/* ------------------------------------------------------------------ client pipes */

static void waiter_free(struct waiter *w)
{
	list_del(&w->link);
	warp_timer_free(w->t);
	json_decref(w->id);
	free(w->data);
	free(w);
}

static struct dpipe *dpipe_find(struct client *c, json_t *req, json_t *id)
{
	json_t *v = json_object_get(req, "pipe");
	struct list_head *pos;

	if (!json_is_integer(v)) {
		reply_err(c, id, -EINVAL, "\"pipe\": expected a pipe id");
		return NULL;
	}
	list_for_each (pos, &c->d->pipes) {
		struct dpipe *p = list_entry(pos, struct dpipe, link);

		if (p->owner == c && p->id == (uint32_t)json_integer_value(v))
			return p;
	}
	reply_err(c, id, -ENOENT, "no pipe %lld", (long long)json_integer_value(v));
	return NULL;
}

static int end_code(const struct dpipe *p)
{
	return p->end_err && p->end_err != -WARP_ECLOSED && p->end_err != -ECONNRESET
		       ? p->end_err
		       : -WARP_ECLOSED;
}

static void answer_recv(struct waiter *w, const uint8_t *data, size_t len)
{
	char *s = b64(data, len);

	if (s)
		reply_ok(w->c, w->id, json_pack("{s:s, s:I}", "data", s, "len", (json_int_t)len));
	else
		reply_err(w->c, w->id, -ENOMEM, "out of memory");
	free(s);
	waiter_free(w);
}

static void event_message(struct dpipe *p, const uint8_t *data, size_t len)
{
	char *s = b64(data, len);

	if (s)
		client_write(p->owner,
			     json_pack("{s:s, s:I, s:s, s:I}", "event", "message", "pipe",
				       (json_int_t)p->id, "data", s, "len", (json_int_t)len));
	free(s);
}

static void dp_msg(struct warp_pipe *pipe, const uint8_t *msg, size_t len, void *user)
{
	struct dpipe *p = user;
	struct rxmsg *m;

	if (!list_empty(&p->recvs)) {
		answer_recv(list_entry(p->recvs.next, struct waiter, link), msg, len);
		return;
	}
	if (p->subscribed) {
		event_message(p, msg, len);
		return;
	}
	/* Queued until recv'd; like a subscription queue, the oldest goes when full. */
	while (p->rxn && (p->rxn >= RXQ_MAX_MSGS || p->rxbytes + len > RXQ_MAX_BYTES)) {
		struct rxmsg *old = list_entry(p->rxq.next, struct rxmsg, link);

		list_del(&old->link);
		p->rxn--;
		p->rxbytes -= old->len;
		p->dropped++;
		free(old);
	}
	m = malloc(sizeof(*m) + len);
	if (!m)
		return;
	m->len = len;
	memcpy(m->data, msg, len);
	list_add_tail(&m->link, &p->rxq);
	p->rxn++;
	p->rxbytes += len;
}

static void dp_closed(struct warp_pipe *pipe, int err, void *user)
{
	struct dpipe *p = user;

	if (p->ended)
		return;
	p->ended = true;
	p->end_err = err;
	client_write(p->owner, json_pack("{s:s, s:I, s:i, s:s}", "event", "closed", "pipe",
					 (json_int_t)p->id, "errno", err, "error",
					 err ? warp_strerror(err) : "closed by the peer"));
	while (!list_empty(&p->recvs)) {
		struct waiter *w = list_entry(p->recvs.next, struct waiter, link);

		reply_err(w->c, w->id, end_code(p), "end of pipe: %s",
			  err ? warp_strerror(err) : "closed by the peer");
		waiter_free(w);
	}
	while (!list_empty(&p->sends)) {
		struct waiter *w = list_entry(p->sends.next, struct waiter, link);

		reply_err(w->c, w->id, -WARP_ECLOSED,
			  "the pipe closed before the message was sent");
		waiter_free(w);
	}
}

static struct dpipe *dpipe_new(struct warpd *d, struct client *owner, struct warp_pipe *pipe)
{
	struct dpipe *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->d = d;
	p->owner = owner;
	p->pipe = pipe;
	p->id = ++d->next_pipe;
	list_init(&p->rxq);
	list_init(&p->recvs);
	list_init(&p->sends);
	list_add_tail(&p->link, &d->pipes);
	p->sub = warp_pipe_on_message(pipe, dp_msg, p);
	warp_pipe_on_closed(pipe, dp_closed, p);
	if (!warp_pipe_is_open(pipe))
		dp_closed(pipe, -WARP_ECLOSED, p);
	return p;
}

static void dpipe_free(struct dpipe *p)
{
	while (!list_empty(&p->recvs)) {
		struct waiter *w = list_entry(p->recvs.next, struct waiter, link);

		reply_err(w->c, w->id, -WARP_ECLOSED, "pipe closed");
		waiter_free(w);
	}
	while (!list_empty(&p->sends)) {
		struct waiter *w = list_entry(p->sends.next, struct waiter, link);

		reply_err(w->c, w->id, -WARP_ECLOSED, "pipe closed");
		waiter_free(w);
	}
	while (!list_empty(&p->rxq)) {
		struct rxmsg *m = list_entry(p->rxq.next, struct rxmsg, link);

		list_del(&m->link);
		free(m);
	}
	if (p->sub > 0)
		warp_pipe_unsubscribe(p->pipe, p->sub);
	warp_pipe_on_closed(p->pipe, NULL, NULL);
	warp_pipe_close(p->pipe);
	warp_pipe_release(p->pipe);
	list_del(&p->link);
	free(p);
}

/* Sends queued behind a full pipe go out in order as room appears. */
static void send_retry(struct warp_timer *t, void *user)
{
	struct warpd *d = user;
	struct list_head *pos;
	bool again = false;

	list_for_each (pos, &d->pipes) {
		struct dpipe *p = list_entry(pos, struct dpipe, link);

		while (!list_empty(&p->sends)) {
			struct waiter *w = list_entry(p->sends.next, struct waiter, link);
			int err = warp_pipe_send(p->pipe, w->data, w->len);

			if (err == -EAGAIN) {
				again = true;
				break;
			}
			if (err)
				reply_err(w->c, w->id, err, "send: %s", warp_strerror(err));
			else
				reply_ok(w->c, w->id, NULL);
			waiter_free(w);
		}
	}
	if (again)
		warp_timer_arm_ms(t, SEND_RETRY_MS);
}

/* ------------------------------------------------------------------ node policy */

/* Keys the node admits: the union of every consumer's list, everyone when one of them
 * admits anyone, nobody (refused in the handshake) when nothing would take a pipe. */
static void update_allow(struct warpd *d)
{
	static const uint8_t nobody[1][WARP_PUBKEY_LEN]; /* not a valid key: matches no peer */
	struct wd_keys all = { 0 };
	bool anyone = false, consumers = false;
	char hex[2 * WARP_PUBKEY_LEN + 1];
	struct list_head *pos;

	for (size_t i = 0; i < fwd_exposer_nrules(d->x); i++) {
		const struct fwd_rule *r = fwd_exposer_rule(d->x, i);

		consumers = true;
		if (!r->nkeys)
			anyone = true;
		for (size_t k = 0; k < r->nkeys; k++) {
			fwd_key_hex(r->keys[k], hex);
			wd_keys_add(&all, hex);
		}
	}
	list_for_each (pos, &d->clients) {
		struct client *c = list_entry(pos, struct client, link);

		if (c->dead || !c->listening)
			continue;
		consumers = true;
		if (!c->allow.n)
			anyone = true;
		for (size_t k = 0; k < c->allow.n; k++) {
			fwd_key_hex(c->allow.keys[k], hex);
			wd_keys_add(&all, hex);
		}
	}
	if (!consumers)
		warp_node_allow(node_of(d), nobody, 1);
	else if (anyone)
		warp_node_allow(node_of(d), NULL, 0);
	else
		warp_node_allow(node_of(d), (const uint8_t(*)[WARP_PUBKEY_LEN])all.keys, all.n);
	wd_keys_free(&all);
}

static bool client_admits(const struct client *c, const uint8_t key[WARP_PUBKEY_LEN])
{
	if (!c->allow.n)
		return true;
	for (size_t i = 0; i < c->allow.n; i++)
		if (!memcmp(c->allow.keys[i], key, WARP_PUBKEY_LEN))
			return true;
	return false;
}

static void give_to_listener(struct warpd *d, struct warp_pipe *pipe, const uint8_t *first,
			     size_t len)
{
	struct warp_pipe_info info;
	char hex[2 * WARP_PUBKEY_LEN + 1];
	struct list_head *pos;

	warp_pipe_info(pipe, &info);
	list_for_each (pos, &d->clients) {
		struct client *c = list_entry(pos, struct client, link);
		struct dpipe *p;

		if (c->dead || !c->listening || !client_admits(c, info.peer_key))
			continue;
		p = dpipe_new(d, c, pipe);
		if (!p)
			break;
		fwd_key_hex(info.peer_key, hex);
		client_write(c, json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "event", "accept",
					  "pipe", (json_int_t)p->id, "peer", hex, "strategy",
					  info.strategy, "path", warp_path_class_name(info.path),
					  "transport", info.transport));
		if (first)
			dp_msg(pipe, first, len, p);
		return;
	}
	warp_pipe_close(pipe);
	warp_pipe_release(pipe);
}

static bool have_listeners(struct warpd *d)
{
	struct list_head *pos;

	list_for_each (pos, &d->clients)
		if (list_entry(pos, struct client, link)->listening)
			return true;
	return false;
}

static void pending_in_free(struct pending_in *pi, bool drop_pipe)
{
	list_del(&pi->link);
	warp_timer_free(pi->t);
	if (pi->sub > 0)
		warp_pipe_unsubscribe(pi->pipe, pi->sub);
	warp_pipe_on_closed(pi->pipe, NULL, NULL);
	if (drop_pipe) {
		warp_pipe_close(pi->pipe);
		warp_pipe_release(pi->pipe);
	}
	free(pi);
}

static void classify_msg(struct warp_pipe *pipe, const uint8_t *msg, size_t len, void *user)
{
	struct pending_in *pi = user;
	struct warpd *d = pi->d;

	pending_in_free(pi, false);
	if (fwd_is_hello(msg, len) && fwd_exposer_nrules(d->x))
		fwd_exposer_adopt(d->x, pipe, msg, len);
	else
		give_to_listener(d, pipe, msg, len);
}

static void classify_timeout(struct warp_timer *t, void *user)
{
	struct pending_in *pi = user;
	struct warpd *d = pi->d;
	struct warp_pipe *pipe = pi->pipe;

	/* Silent peer: not a forwarder (those speak first), so a listener's.  (Freeing a
	 * timer from its own callback is fine: the loop does not touch it afterwards.) */
	pending_in_free(pi, false);
	give_to_listener(d, pipe, NULL, 0);
}

static void classify_closed(struct warp_pipe *pipe, int err, void *user)
{
	pending_in_free(user, true);
}

static void on_link(struct warp_pipe *pipe, void *user)
{
	struct warpd *d = user;
	bool rules = fwd_exposer_nrules(d->x) > 0, listeners = have_listeners(d);
	struct pending_in *pi;

	if (rules && !listeners) {
		fwd_exposer_adopt(d->x, pipe, NULL, 0);
		return;
	}
	if (!rules && listeners) {
		give_to_listener(d, pipe, NULL, 0);
		return;
	}
	pi = rules ? calloc(1, sizeof(*pi)) : NULL;
	if (pi) {
		pi->d = d;
		pi->pipe = pipe;
		pi->t = warp_timer_new(d->loop, classify_timeout, pi);
	}
	if (!pi || !pi->t) {
		free(pi);
		warp_pipe_close(pipe);
		warp_pipe_release(pipe);
		return;
	}
	/* Both a forward peer and a listener's peer are possible: the first message tells. */
	list_add_tail(&pi->link, &d->classify);
	pi->sub = warp_pipe_on_message(pipe, classify_msg, pi);
	warp_pipe_on_closed(pipe, classify_closed, pi);
	warp_timer_arm_ms(pi->t, CLASSIFY_MS);
}

/* ------------------------------------------------------------------ forward / expose events */

static json_t *fwd_event_json(const struct fwd_event *ev, long long fwd_id)
{
	char hex[2 * WARP_PUBKEY_LEN + 1] = "";

	if (ev->peer)
		fwd_key_hex(ev->peer, hex);
	return json_pack("{s:s, s:o, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:s, s:I, s:I, s:s}",
			 "event", "forward", "forward",
			 fwd_id >= 0 ? json_integer(fwd_id) : json_null(), "side",
			 ev->expose ? "expose" : "forward", "kind", fwd_ev_name(ev->kind), "peer",
			 hex, "client", ev->client ? ev->client : "", "host",
			 ev->host ? ev->host : "", "port", ev->port, "code", (int)ev->code, "errno",
			 ev->err, "reason", ev->reason ? ev->reason : "", "bytes_up",
			 (json_int_t)ev->bytes_up, "bytes_down", (json_int_t)ev->bytes_down, "via",
			 ev->via ? ev->via : "");
}

static void expose_event(void *user, const struct fwd_event *ev)
{
	struct warpd *d = user;
	/* To every client with a rule for this HOST:PORT; pipe up/down and requests for
	 * ports nobody exposes to every client that exposes something. */
	bool all = !ev->port || (ev->kind == FWD_EV_REFUSED && ev->code == FWD_RST_REFUSED);
	struct list_head *pos;

	list_for_each (pos, &d->clients) {
		struct client *c = list_entry(pos, struct client, link);
		bool match = false;

		for (size_t i = 0; i < fwd_exposer_nrules(d->x) && !match; i++) {
			const struct fwd_rule *r = fwd_exposer_rule(d->x, i);

			match = r->owner == c &&
				(all || (r->port == ev->port && !strcmp(r->host, ev->host)));
		}
		if (match)
			client_write(c, fwd_event_json(ev, -1));
	}
}

static void dfwd_free(struct dfwd *f)
{
	list_del(&f->link);
	fwd_forwarder_free(f->f);
	json_decref(f->pending);
	free(f);
}

static void dfwd_free_deferred(void *user)
{
	dfwd_free(user);
}

static void forward_event(void *user, const struct fwd_event *ev)
{
	struct dfwd *f = user;
	char hex[2 * WARP_PUBKEY_LEN + 1] = "";

	if (f->doomed)
		return;
	if (f->pending && (ev->kind == FWD_EV_UP || ev->kind == FWD_EV_DOWN)) {
		json_t *id = f->pending;

		f->pending = NULL;
		if (ev->kind == FWD_EV_UP) {
			if (ev->peer)
				fwd_key_hex(ev->peer, hex);
			reply_ok(f->owner, id,
				 json_pack("{s:I, s:s, s:s, s:s}", "forward", (json_int_t)f->id,
					   "listen", f->listen, "peer", hex, "to", f->to));
		} else {
			char msg[512];

			snprintf(msg, sizeof(msg), "no pipe to %.32s%s: %.200s", f->target,
				 strlen(f->target) > 32 ? "..." : "",
				 ev->reason && ev->reason[0] ? ev->reason : warp_strerror(ev->err));
			/* After a pipe existed the target was fine: report a plain failure. */
			reply_err_body(f->owner, id,
				       ev->peer && ev->err != -EACCES ? -EPROTO
				       : ev->err		      ? ev->err
								      : -EIO,
				       msg, NULL);
			/* The forwarder is on the stack: free it afterwards. */
			f->doomed = true;
			warp_loop_defer(f->d->loop, dfwd_free_deferred, f);
		}
		json_decref(id);
		return;
	}
	client_write(f->owner, fwd_event_json(ev, f->id));
}

/* ------------------------------------------------------------------ requests */

static const char *get_str(json_t *req, const char *key)
{
	return json_string_value(json_object_get(req, key));
}

static int get_timeout(json_t *req, const char *key, int def, int *out)
{
	json_t *v = json_object_get(req, key);

	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) > 86400000 || json_integer_value(v) < -1)
		return -EINVAL;
	*out = (int)json_integer_value(v);
	return 0;
}

static int get_strategies(json_t *req, uint32_t *out)
{
	json_t *a = json_object_get(req, "strategies"), *e;
	size_t i;

	*out = 0;
	if (!a)
		return 0;
	if (!json_is_array(a))
		return -EINVAL;
	json_array_foreach(a, i, e) {
		int s = json_is_string(e) ? warp_strategy_parse(json_string_value(e)) : -EINVAL;

		if (s < 0)
			return -EINVAL;
		*out |= 1u << s;
	}
	return 0;
}

static void op_hello(struct client *c, json_t *req, json_t *id)
{
	char hex[2 * WARP_PUBKEY_LEN + 1];
	json_t *v = json_object_get(req, "version");

	if (v && json_integer_value(v) != WARP_CTL_PROTOCOL) {
		reply_err(c, id, -EPROTO, "protocol version %lld not supported (this daemon: %d)",
			  json_integer_value(v), WARP_CTL_PROTOCOL);
		return;
	}
	fwd_key_hex(warp_identity_pubkey(warp_node_identity(node_of(c->d))), hex);
	reply_ok(c, id,
		 json_pack("{s:i, s:s, s:i, s:s}", "version", WARP_CTL_PROTOCOL, "daemon",
			   "warpgate " WARP_VERSION, "pid", (int)getpid(), "public_key", hex));
}

static void add_pipe_json(struct warp_pipe *pipe, void *user)
{
	json_array_append_new(user, wd_pipe_json(pipe, -1, "expose"));
}

static json_t *pipes_json(struct warpd *d, struct client *only)
{
	json_t *a = json_array();
	struct list_head *pos;

	list_for_each (pos, &d->pipes) {
		struct dpipe *p = list_entry(pos, struct dpipe, link);

		if (!only || p->owner == only)
			json_array_append_new(a, wd_pipe_json(p->pipe, p->id, "client"));
	}
	if (only)
		return a;
	list_for_each (pos, &d->forwards) {
		struct dfwd *f = list_entry(pos, struct dfwd, link);
		struct warp_pipe *p = fwd_forwarder_pipe(f->f);

		if (p)
			json_array_append_new(a, wd_pipe_json(p, -1, "forward"));
	}
	fwd_exposer_for_each_pipe(d->x, add_pipe_json, a);
	return a;
}

static json_t *status_doc(struct warpd *d)
{
	struct wd_daemon_info info = { .pid = getpid(),
				       .socket = d->sock,
				       .uptime_ms = warp_time_ms() - d->started_ms,
				       .clients = d->nclients,
				       .reloads = d->reloads,
				       .restarts = d->restarts,
				       .config = d->o.config_path };
	json_t *fw = json_array(), *ex = json_array();
	char hex[2 * WARP_PUBKEY_LEN + 1];
	struct list_head *pos;

	list_for_each (pos, &d->forwards) {
		struct dfwd *f = list_entry(pos, struct dfwd, link);

		json_array_append_new(fw, json_pack("{s:I, s:s, s:s, s:s, s:I, s:b}", "id",
						    (json_int_t)f->id, "listen", f->listen, "to",
						    f->to, "target", f->target, "connections",
						    (json_int_t)fwd_forwarder_nstreams(f->f),
						    "pipe_open", fwd_forwarder_pipe(f->f) != NULL));
	}
	for (size_t i = 0; i < fwd_exposer_nrules(d->x); i++) {
		const struct fwd_rule *r = fwd_exposer_rule(d->x, i);
		json_t *allow = r->nkeys ? json_array() : json_string("any");

		for (size_t k = 0; k < r->nkeys; k++) {
			fwd_key_hex(r->keys[k], hex);
			json_array_append_new(allow, json_string(hex));
		}
		json_array_append_new(ex, json_pack("{s:s, s:i, s:o}", "host", r->host, "port",
						    r->port, "allow", allow));
	}
	return wd_status_json(node_of(d), d->named ? warp_gate_name(d->gate) : NULL, &info,
			      pipes_json(d, NULL), fw, ex);
}

static void op_status(struct client *c, json_t *req, json_t *id)
{
	reply_ok(c, id, json_pack("{s:o}", "status", status_doc(c->d)));
}

static void op_addr(struct client *c, json_t *req, json_t *id)
{
	struct warp_node_addr a;
	char text[2048], hex[2 * WARP_PUBKEY_LEN + 1], *js;
	json_t *aj;
	int err = warp_node_address(node_of(c->d), &a);

	if (!err)
		err = warp_addr_to_text(&a, text, sizeof(text));
	if (err) {
		reply_err(c, id, err, "address: %s", warp_strerror(err));
		return;
	}
	js = warp_addr_to_json(&a, false);
	aj = js ? json_loads(js, 0, NULL) : NULL;
	free(js);
	fwd_key_hex(a.pubkey, hex);
	reply_ok(c, id,
		 json_pack("{s:s, s:s, s:o}", "address", text, "public_key", hex, "decoded",
			   aj ? aj : json_null()));
}

static void connect_done(void *user, struct warp_pipe *pipe, const struct warp_connect_result *res)
{
	struct pconn *pc = user;
	struct client *c = pc->c;
	char *js = warp_connect_result_json(res, false);
	json_t *rj = js ? json_loads(js, 0, NULL) : NULL;
	struct dpipe *p;

	free(js);
	list_del(&pc->link);
	if (!pipe) {
		char msg[256];

		snprintf(msg, sizeof(msg), "no pipe to the peer: %s", warp_strerror(res->err));
		reply_err_body(c, pc->id, res->err, msg,
			       json_pack("{s:o}", "result", rj ? rj : json_null()));
	} else if (!(p = dpipe_new(c->d, c, pipe))) {
		warp_pipe_close(pipe);
		warp_pipe_release(pipe);
		json_decref(rj);
		reply_err(c, pc->id, -ENOMEM, "out of memory");
	} else {
		reply_ok(c, pc->id,
			 json_pack("{s:I, s:o}", "pipe", (json_int_t)p->id, "result",
				   rj ? rj : json_null()));
	}
	json_decref(pc->id);
	free(pc);
}

static void op_connect(struct client *c, json_t *req, json_t *id)
{
	const char *target = get_str(req, "target");
	struct warp_connect_opts co = { 0 };
	struct pconn *pc;

	if (!target || !*target) {
		reply_err(c, id, -EINVAL, "\"target\": expected a name or an address text");
		return;
	}
	if (get_timeout(req, "timeout_ms", 0, &co.timeout_ms) || co.timeout_ms < 0 ||
	    get_strategies(req, &co.strategies)) {
		reply_err(c, id, -EINVAL, "bad \"timeout_ms\" or \"strategies\"");
		return;
	}
	pc = calloc(1, sizeof(*pc));
	if (!pc) {
		reply_err(c, id, -ENOMEM, "out of memory");
		return;
	}
	pc->c = c;
	pc->id = json_incref(id);
	list_add_tail(&pc->link, &c->conns);
	pc->dial = fwd_dial_start(node_of(c->d), target, &co, connect_done, pc);
	if (!pc->dial) {
		list_del(&pc->link);
		json_decref(pc->id);
		free(pc);
		reply_err(c, id, -ENOMEM, "out of memory");
	}
}

static void op_send(struct client *c, json_t *req, json_t *id)
{
	struct dpipe *p = dpipe_find(c, req, id);
	const char *data = get_str(req, "data"), *text = get_str(req, "text");
	struct waiter *w;
	uint8_t *buf;
	size_t len;
	int err;

	if (!p)
		return;
	if (!data == !text) {
		reply_err(c, id, -EINVAL, "expected \"data\" (base64) or \"text\"");
		return;
	}
	if (data) {
		buf = malloc(strlen(data) / 4 * 3 + 3);
		err = buf ? ctl_b64_decode(buf, data, strlen(data)) : -ENOMEM;
		if (err < 0) {
			free(buf);
			reply_err(c, id, err, "\"data\": expected base64 (RFC 4648, with padding)");
			return;
		}
		len = (size_t)err;
	} else {
		len = json_string_length(json_object_get(req, "text"));
		buf = malloc(len + 1);
		if (buf)
			memcpy(buf, text, len);
	}
	if (!buf) {
		reply_err(c, id, -ENOMEM, "out of memory");
		return;
	}
	err = list_empty(&p->sends) ? warp_pipe_send(p->pipe, buf, len) : -EAGAIN;
	if (err != -EAGAIN) {
		free(buf);
		if (err)
			reply_err(c, id, err, "send: %s", warp_strerror(err));
		else
			reply_ok(c, id, NULL);
		return;
	}
	/* The pipe's send buffer is full: answer once it took the message. */
	w = calloc(1, sizeof(*w));
	if (!w) {
		free(buf);
		reply_err(c, id, -ENOMEM, "out of memory");
		return;
	}
	w->c = c;
	w->id = json_incref(id);
	w->p = p;
	w->data = buf;
	w->len = len;
	list_add_tail(&w->link, &p->sends);
	if (!warp_timer_pending(c->d->send_retry))
		warp_timer_arm_ms(c->d->send_retry, SEND_RETRY_MS);
}

static void recv_timeout(struct warp_timer *t, void *user)
{
	struct waiter *w = user;

	reply_err(w->c, w->id, -ETIMEDOUT, "no message within the timeout");
	waiter_free(w);
}

static void op_recv(struct client *c, json_t *req, json_t *id)
{
	struct dpipe *p = dpipe_find(c, req, id);
	struct waiter *w;
	int timeout;

	if (!p)
		return;
	if (get_timeout(req, "timeout_ms", 0, &timeout)) {
		reply_err(c, id, -EINVAL, "\"timeout_ms\": expected milliseconds (-1: no limit)");
		return;
	}
	if (p->subscribed) {
		reply_err(c, id, -EINVAL, "pipe %u is subscribed: its messages come as events",
			  p->id);
		return;
	}
	if (p->rxn) {
		struct rxmsg *m = list_entry(p->rxq.next, struct rxmsg, link);
		char *s = b64(m->data, m->len);

		if (!s) {
			reply_err(c, id, -ENOMEM, "out of memory");
			return;
		}
		reply_ok(c, id, json_pack("{s:s, s:I}", "data", s, "len", (json_int_t)m->len));
		free(s);
		list_del(&m->link);
		p->rxn--;
		p->rxbytes -= m->len;
		free(m);
		return;
	}
	if (p->ended) {
		reply_err(c, id, end_code(p), "end of pipe: %s",
			  p->end_err ? warp_strerror(p->end_err) : "closed by the peer");
		return;
	}
	if (timeout == 0) {
		reply_err(c, id, -ETIMEDOUT, "no message queued");
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		reply_err(c, id, -ENOMEM, "out of memory");
		return;
	}
	w->c = c;
	w->p = p;
	w->id = json_incref(id);
	list_add_tail(&w->link, &p->recvs);
	if (timeout > 0) {
		w->t = warp_timer_new(c->d->loop, recv_timeout, w);
		if (w->t)
			warp_timer_arm_ms(w->t, (uint64_t)timeout);
	}
}

static void op_subscribe(struct client *c, json_t *req, json_t *id)
{
	struct dpipe *p = dpipe_find(c, req, id);

	if (!p)
		return;
	if (!list_empty(&p->recvs)) {
		reply_err(c, id, -EBUSY, "a recv is waiting on pipe %u", p->id);
		return;
	}
	reply_ok(c, id, json_pack("{s:I}", "queued", (json_int_t)p->rxn));
	while (!list_empty(&p->rxq)) {
		struct rxmsg *m = list_entry(p->rxq.next, struct rxmsg, link);

		event_message(p, m->data, m->len);
		list_del(&m->link);
		free(m);
	}
	p->rxn = p->rxbytes = 0;
	p->subscribed = true;
}

static void op_close(struct client *c, json_t *req, json_t *id)
{
	struct dpipe *p = dpipe_find(c, req, id);

	if (!p)
		return;
	reply_ok(c, id, json_pack("{s:I}", "dropped", (json_int_t)p->dropped));
	dpipe_free(p);
}

/* Half-close: our side ends (after what is queued), the peer's messages keep coming until it
 * ends too; then "closed". */
static void op_shutdown(struct client *c, json_t *req, json_t *id)
{
	struct dpipe *p = dpipe_find(c, req, id);
	int err;

	if (!p)
		return;
	err = p->ended ? 0 : warp_pipe_close(p->pipe);
	if (err)
		reply_err(c, id, err, "shutdown: %s", warp_strerror(err));
	else
		reply_ok(c, id, NULL);
}

static void op_pipes(struct client *c, json_t *req, json_t *id)
{
	reply_ok(c, id, json_pack("{s:o}", "pipes", pipes_json(c->d, c)));
}

static int parse_keys(json_t *a, struct wd_keys *k)
{
	json_t *e;
	size_t i;

	if (!a)
		return 0;
	if (!json_is_array(a))
		return -EINVAL;
	json_array_foreach(a, i, e) {
		if (!json_is_string(e) || wd_keys_add(k, json_string_value(e)))
			return -EINVAL;
	}
	return 0;
}

static void op_listen(struct client *c, json_t *req, json_t *id)
{
	struct wd_keys k = { 0 };

	if (parse_keys(json_object_get(req, "allow"), &k)) {
		wd_keys_free(&k);
		reply_err(c, id, -EINVAL, "\"allow\": expected public keys (66 hex digits)");
		return;
	}
	wd_keys_free(&c->allow);
	c->allow = k;
	c->listening = true;
	update_allow(c->d);
	reply_ok(c, id, NULL);
}

static void op_expose(struct client *c, json_t *req, json_t *id)
{
	json_t *rules = json_object_get(req, "rules"), *e;
	struct warp_node_addr a;
	struct wd_keys k = { 0 };
	char err[256], text[2048], hex[2 * WARP_PUBKEY_LEN + 1];
	struct fwd_rule *parsed = NULL;
	size_t i, n;

	if (!json_is_array(rules) || !json_array_size(rules)) {
		reply_err(c, id, -EINVAL, "\"rules\": expected [\"PORT\" or \"HOST:PORT\", ...]");
		return;
	}
	if (parse_keys(json_object_get(req, "allow"), &k)) {
		reply_err(c, id, -EINVAL, "\"allow\": expected public keys (66 hex digits)");
		goto out;
	}
	n = json_array_size(rules);
	parsed = calloc(n, sizeof(*parsed));
	if (!parsed) {
		reply_err(c, id, -ENOMEM, "out of memory");
		goto out;
	}
	json_array_foreach(rules, i, e) {
		if (!json_is_string(e) ||
		    fwd_rule_parse(json_string_value(e), &parsed[i], err, sizeof(err))) {
			reply_err(c, id, -EINVAL, "%s",
				  json_is_string(e) ? err : "rules: expected strings");
			goto out;
		}
		parsed[i].keys = k.keys;
		parsed[i].nkeys = k.n;
	}
	for (i = 0; i < n; i++)
		if (fwd_exposer_add(c->d->x, &parsed[i], c)) {
			fwd_exposer_remove_owner(c->d->x, c);
			reply_err(c, id, -ENOMEM, "out of memory");
			goto out;
		}
	update_allow(c->d);
	warp_node_address(node_of(c->d), &a);
	warp_addr_to_text(&a, text, sizeof(text));
	fwd_key_hex(a.pubkey, hex);
	reply_ok(c, id,
		 json_pack("{s:s, s:s, s:I}", "address", text, "public_key", hex, "rules",
			   (json_int_t)n));
out:
	free(parsed);
	wd_keys_free(&k);
}

static void op_unexpose(struct client *c, json_t *req, json_t *id)
{
	fwd_exposer_remove_owner(c->d->x, c);
	update_allow(c->d);
	reply_ok(c, id, NULL);
}

static void op_forward(struct client *c, json_t *req, json_t *id)
{
	const char *target = get_str(req, "target"), *to = get_str(req, "to");
	const char *listen = get_str(req, "listen");
	struct fwd_forwarder_conf fc = { 0 };
	struct dfwd *f;
	struct fwd_rule r;
	struct sockaddr_storage local;
	int e;

	if (!target || !*target || !to) {
		reply_err(c, id, -EINVAL, "expected \"target\" and \"to\": \"HOST:PORT\"");
		return;
	}
	/* The peer resolves HOST: only its syntax is checked here. */
	if (fwd_hostport_parse(to, r.host, sizeof(r.host), &r.port)) {
		reply_err(c, id, -EINVAL, "\"to\": expected HOST:PORT or [IPV6]:PORT");
		return;
	}
	if (fwd_listen_parse(listen ? listen : "127.0.0.1:0", &fc.bind)) {
		reply_err(c, id, -EINVAL, "\"listen\": expected ADDRESS:PORT");
		return;
	}
	if (get_timeout(req, "timeout_ms", 0, &fc.copts.timeout_ms) || fc.copts.timeout_ms < 0 ||
	    get_strategies(req, &fc.copts.strategies)) {
		reply_err(c, id, -EINVAL, "bad \"timeout_ms\" or \"strategies\"");
		return;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		reply_err(c, id, -ENOMEM, "out of memory");
		return;
	}
	f->d = c->d;
	f->owner = c;
	f->id = ++c->d->next_fwd;
	snprintf(f->target, sizeof(f->target), "%s", target);
	snprintf(f->to, sizeof(f->to), strchr(r.host, ':') ? "[%s]:%u" : "%s:%u", r.host, r.port);
	fc.node = node_of(c->d);
	snprintf(fc.target, sizeof(fc.target), "%s", target);
	snprintf(fc.host, sizeof(fc.host), "%s", r.host);
	fc.port = r.port;
	fc.event = forward_event;
	fc.user = f;
	f->f = fwd_forwarder_new(&fc);
	if (!f->f) {
		e = -errno;
		reply_err(c, id, e, "cannot listen on %s: %s", listen ? listen : "127.0.0.1:0",
			  warp_strerror(e));
		free(f);
		return;
	}
	fwd_forwarder_local(f->f, &local);
	warp_ep_str((struct sockaddr *)&local, f->listen, sizeof(f->listen));
	list_add_tail(&f->link, &c->d->forwards);
	f->pending = json_incref(id);
	e = fwd_forwarder_dial(f->f);
	if (e) {
		json_decref(f->pending);
		f->pending = NULL;
		reply_err(c, id, e, "cannot open a pipe: %s", warp_strerror(e));
		dfwd_free(f);
	}
}

static void op_unforward(struct client *c, json_t *req, json_t *id)
{
	json_t *v = json_object_get(req, "forward");
	struct list_head *pos;

	list_for_each (pos, &c->d->forwards) {
		struct dfwd *f = list_entry(pos, struct dfwd, link);

		if (f->owner == c && json_is_integer(v) && f->id == json_integer_value(v) &&
		    !f->doomed) {
			dfwd_free(f);
			reply_ok(c, id, NULL);
			return;
		}
	}
	reply_err(c, id, -ENOENT, "no such forward");
}

static struct aop *aop_new(struct client *c, json_t *id)
{
	struct aop *a = calloc(1, sizeof(*a));

	if (!a) {
		reply_err(c, id, -ENOMEM, "out of memory");
		return NULL;
	}
	a->c = c;
	a->id = json_incref(id);
	list_add_tail(&a->link, &c->d->aops);
	return a;
}

static void aop_free(struct aop *a)
{
	list_del(&a->link);
	json_decref(a->id);
	free(a);
}

static void name_got(const struct warp_name_result *res, void *user)
{
	struct aop *a = user;
	struct warp_node_addr addr;
	char text[2048], hex[2 * WARP_PUBKEY_LEN + 1];
	int err = res->err;

	if (!err && !res->found)
		err = -WARP_ENOTFOUND;
	if (!err)
		err = warp_addr_decode(res->value, res->value_len, &addr);
	/* The address must name the key that signed the record. */
	if (!err && memcmp(addr.pubkey, res->owner, WARP_PUBKEY_LEN))
		err = -WARP_EAUTH;
	if (!err)
		err = warp_addr_to_text(&addr, text, sizeof(text));
	if (a->c && err) {
		reply_err(a->c, a->id, err, "%s: %s", res->name, warp_strerror(err));
	} else if (a->c) {
		fwd_key_hex(res->owner, hex);
		reply_ok(a->c, a->id,
			 json_pack("{s:s, s:s, s:s, s:s}", "name", res->name, "address", text, "owner",
				   hex, "source", res->server_addr));
	}
	aop_free(a);
}

static void op_name_get(struct client *c, json_t *req, json_t *id)
{
	const char *name = get_str(req, "name");
	struct warp_name_client *nc = node_name_client(node_of(c->d));
	struct aop *a;
	int err;

	if (!name || !*name) {
		reply_err(c, id, -WARP_ENAME, "\"name\": expected a name");
		return;
	}
	if (!nc) {
		reply_err(c, id, -WARP_ENONAMESERVER, "%s: %s", name,
			  warp_strerror(-WARP_ENONAMESERVER));
		return;
	}
	a = aop_new(c, id);
	if (!a)
		return;
	err = warp_name_resolve(nc, name, name_got, a);
	if (err) {
		reply_err(c, id, err, "%s: %s", name, warp_strerror(err));
		aop_free(a);
	}
}

static void name_put_done(const struct warp_name_result *res, void *user)
{
	struct aop *a = user;

	if (a->c && res->err)
		reply_err(a->c, a->id, res->err, "%s: %s", res->name, warp_strerror(res->err));
	else if (a->c && !res->stored)
		reply_err(a->c, a->id, -WARP_EQUOTA, "%s: not stored on any server (%u refused)",
			  res->name, res->n_err);
	else if (a->c)
		reply_ok(a->c, a->id,
			 json_pack("{s:s, s:i, s:i}", "name", res->name, "servers_ok", (int)res->n_ok,
				   "servers_failed", (int)res->n_err));
	aop_free(a);
}

/* One PUT of the node's address under another name (the daemon keeps its own name
 * registered and fresh by itself). */
static void op_name_put(struct client *c, json_t *req, json_t *id)
{
	const char *name = get_str(req, "name");
	struct warp_node *node = node_of(c->d);
	struct warp_name_client *nc = node_name_client(node);
	uint8_t blob[WARP_ADDR_MAX_BIN];
	struct warp_node_addr a;
	struct aop *op;
	int n, err;

	if (!name && c->d->named)
		name = warp_gate_name(c->d->gate);
	if (!name || !*name) {
		reply_err(c, id, -WARP_ENAME, "\"name\": expected a name");
		return;
	}
	if (!nc) {
		reply_err(c, id, -WARP_ENONAMESERVER, "%s: %s", name,
			  warp_strerror(-WARP_ENONAMESERVER));
		return;
	}
	err = warp_node_address(node, &a);
	n = err ? err : warp_addr_encode(&a, blob, sizeof(blob));
	if (n < 0) {
		reply_err(c, id, n, "address: %s", warp_strerror(n));
		return;
	}
	op = aop_new(c, id);
	if (!op)
		return;
	err = warp_name_put(nc, warp_node_identity(node), name, blob, (size_t)n, WARP_NAME_BUMP,
			    name_put_done, op);
	if (err) {
		reply_err(c, id, err, "%s: %s", name, warp_strerror(err));
		aop_free(op);
	}
}

static int daemon_reload(struct warpd *d, char *why, size_t len);

static void op_reload(struct client *c, json_t *req, json_t *id)
{
	char why[256] = "";
	unsigned int before = c->d->restarts;
	int err = daemon_reload(c->d, why, sizeof(why));

	if (err)
		reply_err(c, id, err, "%s", why[0] ? why : warp_strerror(err));
	else
		reply_ok(c, id, json_pack("{s:b}", "restarted", c->d->restarts != before));
}

static const struct {
	const char *name;
	void (*fn)(struct client *c, json_t *req, json_t *id);
} ops[] = {
	{ "hello", op_hello },	       { "status", op_status },	    { "addr", op_addr },
	{ "connect", op_connect },     { "send", op_send },	    { "recv", op_recv },
	{ "subscribe", op_subscribe }, { "close", op_close },	    { "shutdown", op_shutdown },
	{ "pipes", op_pipes },	       { "listen", op_listen },	    { "expose", op_expose },
	{ "unexpose", op_unexpose },   { "forward", op_forward },   { "unforward", op_unforward },
	{ "name_get", op_name_get },   { "name_put", op_name_put }, { "reload", op_reload },
};

static void handle_line(struct client *c, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr), *id;
	const char *op;

	if (!len)
		return;
	if (!json_is_object(req)) {
		reply_err(c, NULL, -EINVAL, "expected one JSON object per line: %s",
			  req ? "not an object" : jerr.text);
		json_decref(req);
		return;
	}
	id = json_object_get(req, "id");
	op = get_str(req, "op");
	if (!op) {
		reply_err(c, id, -EINVAL, "missing \"op\"");
		json_decref(req);
		return;
	}
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (!strcmp(ops[i].name, op)) {
			ops[i].fn(c, req, id);
			json_decref(req);
			return;
		}
	}
	reply_err(c, id, -EOPNOTSUPP, "unknown op '%s'", op);
	json_decref(req);
}

/* ------------------------------------------------------------------ clients */

static void client_free(struct client *c)
{
	struct warpd *d = c->d;
	struct list_head *pos, *tmp;
	bool had_rules = false;

	list_for_each_safe (pos, tmp, &d->pipes) {
		struct dpipe *p = list_entry(pos, struct dpipe, link);

		if (p->owner == c)
			dpipe_free(p);
	}
	list_for_each(pos, &d->aops) {
		struct aop *a = list_entry(pos, struct aop, link);

		if (a->c == c)
			a->c = NULL;
	}
	/* Waiters of this client on other clients' pipes cannot exist: pipes are per client. */
	list_for_each_safe (pos, tmp, &c->conns) {
		struct pconn *pc = list_entry(pos, struct pconn, link);

		fwd_dial_cancel(pc->dial);
		list_del(&pc->link);
		json_decref(pc->id);
		free(pc);
	}
	list_for_each_safe (pos, tmp, &d->forwards) {
		struct dfwd *f = list_entry(pos, struct dfwd, link);

		if (f->owner == c && !f->doomed)
			dfwd_free(f);
	}
	for (size_t i = 0; i < fwd_exposer_nrules(d->x); i++)
		had_rules |= fwd_exposer_rule(d->x, i)->owner == c;
	fwd_exposer_remove_owner(d->x, c);
	list_del(&c->link);
	d->nclients--;
	if (had_rules || c->listening) {
		c->listening = false;
		update_allow(d);
	}
	warp_loop_del_fd(d->loop, c->fd);
	close(c->fd);
	wd_keys_free(&c->allow);
	free(c->in);
	free(c->out);
	free(c);
}

static void client_free_deferred(void *user)
{
	client_free(user);
}

static void client_kill(struct client *c)
{
	if (c->dead)
		return;
	c->dead = true;
	warp_loop_del_fd(c->d->loop, c->fd);
	if (warp_loop_defer(c->d->loop, client_free_deferred, c))
		pr_err("cannot free a client: out of memory");
}

static void client_read(struct client *c)
{
	for (int round = 0; round < 16 && !c->dead; round++) {
		ssize_t n;
		char *nl;

		if (c->incap - c->inlen < 65536) {
			size_t cap = c->incap ? c->incap * 2 : 65536 * 2;
			char *nb = cap <= 2 * WARP_CTL_LINE_MAX ? realloc(c->in, cap) : NULL;

			if (!nb) {
				client_kill(c);
				return;
			}
			c->in = nb;
			c->incap = cap;
		}
		n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			client_kill(c);
			return;
		}
		if (n < 0)
			return;
		c->inlen += (size_t)n;
		while (!c->dead && (nl = memchr(c->in, '\n', c->inlen))) {
			size_t l = (size_t)(nl - c->in);

			handle_line(c, c->in, l);
			memmove(c->in, nl + 1, c->inlen - l - 1);
			c->inlen -= l + 1;
		}
		if (c->inlen > WARP_CTL_LINE_MAX) {
			client_write(c, json_pack("{s:s, s:s, s:i}", "event", "error", "error",
						  "request line too long", "errno", -EMSGSIZE));
			client_kill(c);
			return;
		}
	}
}

static void client_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct client *c = user;

	if (events & WARP_EV_WRITE)
		client_flush(c);
	if (!c->dead && (events & (WARP_EV_READ | WARP_EV_ERROR)))
		client_read(c);
}

static void on_accept_client(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warpd *d = user;

	for (int i = 0; i < 16; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ucred cred;
		socklen_t cl = sizeof(cred);
		struct client *c;

		if (cfd < 0)
			return;
		/* Same user or root only: the socket mode is the first fence, this the second. */
		if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 ||
		    (cred.uid != geteuid() && cred.uid != 0) || d->nclients >= MAX_CLIENTS) {
			const char *msg =
				d->nclients >= MAX_CLIENTS
					? "{\"event\":\"error\",\"error\":\"too many "
					  "clients\",\"errno\":-11}\n"
					: "{\"event\":\"error\",\"error\":\"permission denied: "
					  "not the daemon's user\",\"errno\":-13}\n";

			if (send(cfd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				pr_debug("refused client: %s", strerror(errno));
			pr_warn("refused control client uid %d pid %d", (int)cred.uid,
				(int)cred.pid);
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->d = d;
		c->fd = cfd;
		c->uid = cred.uid;
		c->pid = cred.pid;
		list_init(&c->conns);
		if (warp_loop_add_fd(loop, cfd, WARP_EV_READ, client_io, c)) {
			close(cfd);
			free(c);
			continue;
		}
		list_add_tail(&c->link, &d->clients);
		d->nclients++;
		pr_debug("control client pid %d uid %d", (int)c->pid, (int)c->uid);
	}
}

/* ------------------------------------------------------------------ node lifecycle */

static int node_open(struct warpd *d, const struct warp_conf *conf)
{
	bool test = conf->flags & WARP_CONF_TEST_MODE;

	d->gate = warp_gate_open_on(conf->name[0] ? conf->name : NULL, conf, d->loop);
	if (!d->gate)
		return -errno;
	d->named = conf->name[0] || !test;
	d->conf = *conf;
	warp_gate_listen(d->gate, on_link, d);
	update_allow(d);
	return 0;
}

/* Everything that holds pipes of the node lets go of them. */
static void node_detach(struct warpd *d)
{
	struct list_head *pos, *tmp, *cpos, *ctmp;

	list_for_each_safe (pos, tmp, &d->classify)
		pending_in_free(list_entry(pos, struct pending_in, link), true);
	fwd_exposer_drop_all(d->x);
	list_for_each (pos, &d->forwards)
		fwd_forwarder_reset(list_entry(pos, struct dfwd, link)->f, NULL);
	list_for_each (cpos, &d->clients) {
		struct client *c = list_entry(cpos, struct client, link);

		list_for_each_safe (pos, ctmp, &c->conns) {
			struct pconn *pc = list_entry(pos, struct pconn, link);

			fwd_dial_cancel(pc->dial);
			reply_err(c, pc->id, -ECANCELED, "the daemon's node restarted");
			list_del(&pc->link);
			json_decref(pc->id);
			free(pc);
		}
	}
	/* Client pipes end with the node (their owners get "closed" events). */
	list_for_each (pos, &d->pipes) {
		struct dpipe *p = list_entry(pos, struct dpipe, link);

		warp_pipe_close(p->pipe);
	}
}

static int daemon_reload(struct warpd *d, char *why, size_t len)
{
	struct warp_conf nc, old = d->conf;
	struct list_head *pos;
	int err;

	if (!d->o.reload) {
		snprintf(why, len, "no configuration to reload");
		return -EOPNOTSUPP;
	}
	err = d->o.reload(d->o.reload_user, &nc);
	if (err) {
		snprintf(why, len, "configuration rejected, keeping the running one");
		pr_err("reload: %s", why);
		return err;
	}
	if (nc.log_level >= 0)
		warp_log_set_level((enum warp_log_level)nc.log_level);
	old.log_level = nc.log_level;
	d->reloads++;
	if (!memcmp(&old, &nc, sizeof(nc))) {
		pr_info("reload: node settings unchanged");
		return 0;
	}
	pr_info("reload: node settings changed, restarting the node");
	node_detach(d);
	warp_gate_close(d->gate);
	d->gate = NULL;
	err = node_open(d, &nc);
	if (err) {
		snprintf(why, len,
			 "the new configuration does not start a node (%s); "
			 "kept the old one",
			 warp_strerror(err));
		pr_err("reload: %s", why);
		if (node_open(d, &old)) {
			pr_err("reload: cannot restart the old node either: exiting");
			d->sig.stop = true;
			warp_loop_stop(d->loop);
			return err;
		}
	}
	d->restarts++;
	list_for_each (pos, &d->forwards)
		fwd_forwarder_reset(list_entry(pos, struct dfwd, link)->f, node_of(d));
	return err;
}

static int sock_open(struct warpd *d, char *why, size_t len)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t um;
	char dir[PATH_MAX], *slash;
	int fd, err;

	snprintf(dir, sizeof(dir), "%s", d->sock);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		err = warp_mkdir_p(dir, 0700);
		if (err) {
			snprintf(why, len, "cannot create %s: %s", dir, warp_strerror(err));
			return err;
		}
	}
	strcpy(sun.sun_path, d->sock);
	if (lstat(d->sock, &st) == 0) {
		struct warp_ctl *other;

		if (!S_ISSOCK(st.st_mode)) {
			snprintf(why, len, "%s exists and is not a socket", d->sock);
			return -EEXIST;
		}
		other = warp_ctl_open(d->sock);
		if (other || errno != ECONNREFUSED) {
			warp_ctl_close(other);
			snprintf(why, len, "a daemon already serves %s", d->sock);
			return -EADDRINUSE;
		}
		unlink(d->sock); /* stale: its daemon is gone */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Created 0600 (no window where others could connect), then checked by chmod. */
	um = umask(0177);
	err = bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ? -errno : 0;
	umask(um);
	if (!err && chmod(d->sock, 0600) < 0)
		err = -errno;
	if (!err && listen(fd, 64) < 0)
		err = -errno;
	if (err) {
		snprintf(why, len, "cannot serve %s: %s", d->sock, warp_strerror(err));
		close(fd);
		return err;
	}
	d->lfd = fd;
	return warp_loop_add_fd(d->loop, fd, WARP_EV_READ, on_accept_client, d);
}

struct warpd *warpd_start(const struct warpd_opts *opts, char *why, size_t whylen)
{
	struct warpd *d = calloc(1, sizeof(*d));
	int err;

	if (!d)
		return NULL;
	why[0] = '\0';
	d->o = *opts;
	d->lfd = -1;
	d->sig.fd = -1;
	d->started_ms = warp_time_ms();
	list_init(&d->clients);
	list_init(&d->pipes);
	list_init(&d->forwards);
	list_init(&d->classify);
	list_init(&d->aops);
	err = wd_socket_path(&opts->conf, opts->socket, d->sock, sizeof(d->sock));
	if (err) {
		snprintf(why, whylen, "control socket path too long (at most 107 bytes)");
		goto fail;
	}
	d->loop = warp_loop_new();
	if (!d->loop) {
		err = -errno;
		goto fail;
	}
	d->x = fwd_exposer_new(d->loop, expose_event, d);
	d->send_retry = warp_timer_new(d->loop, send_retry, d);
	if (!d->x || !d->send_retry) {
		err = -ENOMEM;
		goto fail;
	}
	err = wd_signals_start(&d->sig, d->loop);
	if (err)
		goto fail;
	err = node_open(d, &opts->conf);
	if (err) {
		snprintf(why, whylen, "cannot start node: %s", warp_strerror(err));
		goto fail;
	}
	err = sock_open(d, why, whylen);
	if (err)
		goto fail;
	if (opts->ready_line) {
		char addr[2048];

		if (warp_node_address_text(node_of(d), addr, sizeof(addr)) == 0)
			printf("%s\n", addr);
		fflush(stdout);
	}
	pr_info("serving %s", d->sock);
	return d;
fail:
	if (!why[0])
		snprintf(why, whylen, "%s", warp_strerror(err));
	warpd_free(d);
	errno = -err;
	return NULL;
}

int warpd_run(struct warpd *d)
{
	unsigned int seen = d->sig.hups;

	while (!d->sig.stop) {
		int err = warp_loop_run_once(d->loop, -1);

		if (err < 0 && err != -EINTR) {
			pr_err("loop: %s", warp_strerror(err));
			return err;
		}
		if (d->sig.hups != seen) {
			char why[256];

			seen = d->sig.hups;
			pr_info("SIGHUP: reloading the configuration");
			daemon_reload(d, why, sizeof(why));
		}
	}
	pr_info("shutting down (signal %d)", d->sig.last);
	return 0;
}

void warpd_free(struct warpd *d)
{
	struct list_head *pos, *tmp;

	if (!d)
		return;
	/* Deferred frees (killed clients, failed forwards) first: they are in our lists. */
	if (d->loop)
		wd_loop_drain(d->loop);
	if (d->lfd >= 0) {
		warp_loop_del_fd(d->loop, d->lfd);
		close(d->lfd);
		unlink(d->sock);
	}
	while (!list_empty(&d->clients)) {
		struct client *c = list_entry(d->clients.next, struct client, link);

		c->dead = true;
		client_free(c);
	}
	if (d->loop)
		wd_loop_drain(d->loop);
	if (d->gate) {
		node_detach(d);
		warp_gate_close(d->gate); /* port mappings and BPF go with the node; names stay */
	}
	if (d->loop)
		wd_loop_drain(d->loop);
	list_for_each_safe (pos, tmp, &d->forwards)
		if (!list_entry(pos, struct dfwd, link)->doomed)
			dfwd_free(list_entry(pos, struct dfwd, link));
	wd_signals_stop(&d->sig);
	fwd_exposer_free(d->x);
	warp_timer_free(d->send_retry);
	if (d->loop) {
		wd_loop_drain(d->loop);
		warp_loop_free(d->loop);
	}
	free(d);
}
