// SPDX-License-Identifier: MIT
/*
 * Control client (include/warpgate/control.h): a blocking JSON-lines client of the daemon's
 * Unix socket.  Event lines that arrive while a call waits for its reply are queued for
 * warp_ctl_next_event(); replies to calls that timed out are dropped by id.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include <warpgate/control.h>
#include <warpgate/error.h>
#include <warpgate/loop.h>

#include "core/util.h"
#include "daemon/ctlproto.h"

struct evline {
	struct evline *next;
	char *line;
};

struct warp_ctl {
	int fd;
	uint64_t next_id;
	char *buf;
	size_t len, cap;
	struct evline *head, *tail;
	bool eof;
};

int warp_ctl_default_path(const char *home, char *buf, size_t len)
{
	char h[PATH_MAX];
	int n;

	if (home && *home)
		snprintf(h, sizeof(h), "%s", home);
	else if (warp_home_dir(h, sizeof(h)))
		return -ENAMETOOLONG;
	n = snprintf(buf, len, "%s/control.sock", h);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int remaining(uint64_t deadline)
{
	uint64_t now;

	if (deadline == UINT64_MAX)
		return -1;
	now = warp_time_ms();
	return now >= deadline ? 0 : (int)(deadline - now);
}

static uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : warp_time_ms() + (uint64_t)timeout_ms;
}

/* Next complete line (malloc'd, without the newline), -ETIMEDOUT, -EPIPE or -EMSGSIZE. */
static int read_line(struct warp_ctl *c, uint64_t deadline, char **out)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		ssize_t n;
		int w;

		if (nl) {
			size_t l = (size_t)(nl - c->buf);

			*out = malloc(l + 1);
			if (!*out)
				return -ENOMEM;
			memcpy(*out, c->buf, l);
			(*out)[l] = '\0';
			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
			return 0;
		}
		if (c->eof)
			return -EPIPE;
		if (c->len >= WARP_CTL_LINE_MAX)
			return -EMSGSIZE;
		if (c->cap - c->len < 65536) {
			size_t cap = c->cap ? c->cap * 2 : 131072;
			char *nb = realloc(c->buf, cap);

			if (!nb)
				return -ENOMEM;
			c->buf = nb;
			c->cap = cap;
		}
		n = read(c->fd, c->buf + c->len, c->cap - c->len);
		if (n > 0) {
			c->len += (size_t)n;
			continue;
		}
		if (n == 0) {
			c->eof = true;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -EPIPE;
		w = remaining(deadline);
		if (w == 0)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, w) < 0 && errno != EINTR)
			return -errno;
	}
}

static int write_all(struct warp_ctl *c, const char *s, size_t len, uint64_t deadline)
{
	while (len) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
		ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL);
		int w;

		if (n > 0) {
			s += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return -EPIPE;
		w = remaining(deadline);
		if (w == 0)
			return -ETIMEDOUT;
		poll(&pfd, 1, w);
	}
	return 0;
}

static void queue_event(struct warp_ctl *c, char *line)
{
	struct evline *e = malloc(sizeof(*e));

	if (!e) {
		free(line);
		return;
	}
	e->line = line;
	e->next = NULL;
	if (c->tail)
		c->tail->next = e;
	else
		c->head = e;
	c->tail = e;
}

static int reply_err(json_t *rep)
{
	json_t *e;

	if (json_is_true(json_object_get(rep, "ok")))
		return 0;
	e = json_object_get(rep, "errno");
	if (json_is_integer(e) && json_integer_value(e) < 0)
		return (int)json_integer_value(e);
	return -EIO;
}

int warp_ctl_call(struct warp_ctl *c, const char *req, char **reply, int timeout_ms)
{
	uint64_t deadline = deadline_of(timeout_ms);
	json_t *r = json_loads(req, 0, NULL);
	uint64_t id = ++c->next_id;
	char *text;
	int err;

	if (reply)
		*reply = NULL;
	if (!json_is_object(r)) {
		json_decref(r);
		return -EINVAL;
	}
	json_object_set_new(r, "id", json_integer((json_int_t)id));
	text = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	if (!text)
		return -ENOMEM;
	err = write_all(c, text, strlen(text), deadline);
	if (!err)
		err = write_all(c, "\n", 1, deadline);
	free(text);
	if (err)
		return err;
	for (;;) {
		json_t *rep, *rid, *ev;
		char *line;

		err = read_line(c, deadline, &line);
		if (err)
			return err;
		rep = json_loads(line, 0, NULL);
		rid = json_object_get(rep, "id");
		ev = json_object_get(rep, "event");
		if (json_is_integer(rid) && (uint64_t)json_integer_value(rid) == id) {
			err = reply_err(rep);
			json_decref(rep);
			if (reply)
				*reply = line;
			else
				free(line);
			return err;
		}
		if (json_is_string(ev)) {
			/* The daemon refuses us before any reply: report its reason. */
			if (!strcmp(json_string_value(ev), "error")) {
				err = reply_err(rep);
				json_decref(rep);
				free(line);
				return err ? err : -EIO;
			}
			queue_event(c, line);
		} else {
			free(line); /* a reply to a call that gave up waiting */
		}
		json_decref(rep);
	}
}

struct warp_ctl *warp_ctl_open(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char def[PATH_MAX], *reply = NULL;
	struct warp_ctl *c;
	json_t *rep;
	int err;

	if (!path) {
		err = warp_ctl_default_path(NULL, def, sizeof(def));
		if (err) {
			errno = -err;
			return NULL;
		}
		path = def;
	}
	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	strcpy(sun.sun_path, path);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		err = -errno;
		goto fail;
	}
	/* A local stream socket connects at once or fails: no EINPROGRESS to wait for. */
	if (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		err = errno == EAGAIN ? -ECONNREFUSED : -errno;
		goto fail;
	}
	err = warp_ctl_call(c, "{\"op\": \"hello\", \"version\": 1}", &reply, 5000);
	if (err)
		goto fail;
	rep = json_loads(reply, 0, NULL);
	err = json_integer_value(json_object_get(rep, "version")) == WARP_CTL_PROTOCOL ? 0
										       : -EPROTO;
	json_decref(rep);
	free(reply);
	if (err)
		goto fail;
	return c;
fail:
	free(reply);
	warp_ctl_close(c);
	errno = -err;
	return NULL;
}

void warp_ctl_close(struct warp_ctl *c)
{
	if (!c)
		return;
	while (c->head) {
		struct evline *e = c->head;

		c->head = e->next;
		free(e->line);
		free(e);
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	free(c);
}

int warp_ctl_fd(const struct warp_ctl *c)
{
	return c->fd;
}

/* Runs a call built with jansson; *rep gets the parsed reply when wanted. */
static int call_json(struct warp_ctl *c, json_t *req, json_t **rep, int timeout_ms)
{
	char *text = json_dumps(req, JSON_COMPACT), *reply = NULL;
	int err;

	json_decref(req);
	if (rep)
		*rep = NULL;
	if (!text)
		return -ENOMEM;
	err = warp_ctl_call(c, text, &reply, timeout_ms);
	free(text);
	if (rep && reply)
		*rep = json_loads(reply, 0, NULL);
	free(reply);
	return err;
}

int warp_ctl_status(struct warp_ctl *c, char **json)
{
	json_t *rep;
	int err = call_json(c, json_pack("{s:s}", "op", "status"), &rep, 10000);

	*json = NULL;
	if (!err) {
		*json = json_dumps(json_object_get(rep, "status"),
				   JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (!*json)
			err = -ENOMEM;
	}
	json_decref(rep);
	return err;
}

int warp_ctl_address(struct warp_ctl *c, char *buf, size_t cap)
{
	json_t *rep;
	int err = call_json(c, json_pack("{s:s}", "op", "addr"), &rep, 10000);
	const char *a = json_string_value(json_object_get(rep, "address"));

	if (!err && !a)
		err = -EPROTO;
	if (!err && (size_t)snprintf(buf, cap, "%s", a) >= cap)
		err = -EMSGSIZE;
	json_decref(rep);
	return err;
}

int warp_ctl_connect(struct warp_ctl *c, const char *target, int timeout_ms, uint32_t *pipe,
		     char **result)
{
	json_t *req = json_pack("{s:s, s:s}", "op", "connect", "target", target), *rep;
	int err;

	if (timeout_ms > 0)
		json_object_set_new(req, "timeout_ms", json_integer(timeout_ms));
	err = call_json(c, req, &rep, (timeout_ms > 0 ? timeout_ms : 30000) + 5000);
	if (result)
		*result = json_object_get(rep, "result")
				  ? json_dumps(json_object_get(rep, "result"), JSON_COMPACT)
				  : NULL;
	if (!err)
		*pipe = (uint32_t)json_integer_value(json_object_get(rep, "pipe"));
	json_decref(rep);
	return err;
}

int warp_ctl_send(struct warp_ctl *c, uint32_t pipe, const void *msg, size_t len)
{
	char *b64 = malloc(ctl_b64_len(len) + 1);
	int err;

	if (!b64)
		return -ENOMEM;
	ctl_b64_encode(b64, msg, len);
	err = call_json(
		c,
		json_pack("{s:s, s:I, s:s}", "op", "send", "pipe", (json_int_t)pipe, "data", b64),
		NULL, 60000);
	free(b64);
	return err;
}

ssize_t warp_ctl_recv(struct warp_ctl *c, uint32_t pipe, void *buf, size_t cap, int timeout_ms)
{
	json_t *rep;
	const char *d;
	uint8_t *tmp;
	int err, n;

	err = call_json(c,
			json_pack("{s:s, s:I, s:i}", "op", "recv", "pipe", (json_int_t)pipe,
				  "timeout_ms", timeout_ms),
			&rep, timeout_ms < 0 ? -1 : timeout_ms + 5000);
	if (err) {
		json_decref(rep);
		return err;
	}
	d = json_string_value(json_object_get(rep, "data"));
	if (!d) {
		json_decref(rep);
		return -EPROTO;
	}
	tmp = malloc(strlen(d) / 4 * 3 + 3);
	n = tmp ? ctl_b64_decode(tmp, d, strlen(d)) : -ENOMEM;
	if (n >= 0 && (size_t)n > cap)
		n = -EMSGSIZE;
	if (n > 0)
		memcpy(buf, tmp, (size_t)n);
	free(tmp);
	json_decref(rep);
	return n == -EINVAL ? -EPROTO : n;
}

int warp_ctl_subscribe(struct warp_ctl *c, uint32_t pipe)
{
	return call_json(c, json_pack("{s:s, s:I}", "op", "subscribe", "pipe", (json_int_t)pipe),
			 NULL, 10000);
}

int warp_ctl_close_pipe(struct warp_ctl *c, uint32_t pipe)
{
	return call_json(c, json_pack("{s:s, s:I}", "op", "close", "pipe", (json_int_t)pipe), NULL,
			 10000);
}

int warp_ctl_shutdown(struct warp_ctl *c, uint32_t pipe)
{
	return call_json(c, json_pack("{s:s, s:I}", "op", "shutdown", "pipe", (json_int_t)pipe),
			 NULL, 10000);
}

int warp_ctl_listen(struct warp_ctl *c, const uint8_t (*allow)[WARP_PUBKEY_LEN], size_t n)
{
	json_t *req = json_pack("{s:s}", "op", "listen");
	char hex[2 * WARP_PUBKEY_LEN + 1];

	if (n) {
		json_t *a = json_array();

		for (size_t i = 0; i < n; i++) {
			warp_hex_encode(hex, allow[i], WARP_PUBKEY_LEN);
			json_array_append_new(a, json_string(hex));
		}
		json_object_set_new(req, "allow", a);
	}
	return call_json(c, req, NULL, 10000);
}

static int parse_event(char *line, struct warp_ctl_event *ev)
{
	json_t *o = json_loads(line, 0, NULL);
	const char *kind = json_string_value(json_object_get(o, "event"));
	const char *s;

	memset(ev, 0, sizeof(*ev));
	ev->json = line;
	if (!kind) {
		json_decref(o);
		return 0;
	}
	ev->pipe = (uint32_t)json_integer_value(json_object_get(o, "pipe"));
	if (!strcmp(kind, "accept")) {
		ev->kind = WARP_CTL_EV_ACCEPT;
		s = json_string_value(json_object_get(o, "peer"));
		if (s && strlen(s) == 2 * WARP_PUBKEY_LEN)
			warp_hex_decode(ev->peer_key, WARP_PUBKEY_LEN, s);
	} else if (!strcmp(kind, "message")) {
		ev->kind = WARP_CTL_EV_MESSAGE;
		s = json_string_value(json_object_get(o, "data"));
		if (s) {
			int n;

			ev->data = malloc(strlen(s) / 4 * 3 + 3);
			n = ev->data ? ctl_b64_decode(ev->data, s, strlen(s)) : -ENOMEM;
			ev->len = n > 0 ? (size_t)n : 0;
		}
	} else if (!strcmp(kind, "closed")) {
		ev->kind = WARP_CTL_EV_CLOSED;
		ev->err = (int)json_integer_value(json_object_get(o, "errno"));
	} else if (!strcmp(kind, "forward")) {
		ev->kind = WARP_CTL_EV_FORWARD;
	}
	json_decref(o);
	return 0;
}

int warp_ctl_next_event(struct warp_ctl *c, struct warp_ctl_event *ev, int timeout_ms)
{
	uint64_t deadline = deadline_of(timeout_ms);

	memset(ev, 0, sizeof(*ev));
	for (;;) {
		char *line;
		json_t *o;
		bool is_event;
		int err;

		if (c->head) {
			struct evline *e = c->head;

			c->head = e->next;
			if (!c->head)
				c->tail = NULL;
			line = e->line;
			free(e);
			return parse_event(line, ev);
		}
		err = read_line(c, deadline, &line);
		if (err)
			return err;
		o = json_loads(line, 0, NULL);
		is_event = json_is_string(json_object_get(o, "event"));
		json_decref(o);
		if (is_event)
			return parse_event(line, ev);
		free(line); /* a late reply */
	}
}

void warp_ctl_event_free(struct warp_ctl_event *ev)
{
	free(ev->data);
	free(ev->json);
	memset(ev, 0, sizeof(*ev));
}
