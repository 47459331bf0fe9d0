// SPDX-License-Identifier: MIT
/*
 * TCP port forwarding over a pipe: the frame codec, the per-pipe session that multiplexes
 * TCP connections as credit-controlled streams, the expose side (policy, connect, relay) and
 * the forward side (listener, one shared pipe, reconnect on demand).  See fwd.h.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warpgate/error.h>
#include <warpgate/name.h>

#define LOG_COMPONENT "fwd"
#include "core/bytes.h"
#include "core/list.h"
#include "core/log.h"
#include "core/util.h"
#include "daemon/fwd.h"
#include "net/endpoint.h"
#include "net/sock.h"
#include "node/resolve.h"

#define OUTQ_HIGH   (1u << 20) /* stop reading TCP sockets above this much queued */
#define RETRY_MS    5	       /* pipe send buffer full: try again this soon */
#define GRANT_AT    (FWD_WINDOW / 4)
#define PENDING_MAX 256 /* forward side: connections waiting for the pipe */

/* ------------------------------------------------------------------ frames */

static const char *const reset_names[] = {
	[FWD_RST_REFUSED] = "not exposed",     [FWD_RST_FORBIDDEN] = "key not allowed",
	[FWD_RST_CONNECT] = "connect failed",  [FWD_RST_ABORTED] = "connection reset",
	[FWD_RST_PROTOCOL] = "protocol error", [FWD_RST_LIMIT] = "too many connections",
	[FWD_RST_SHUTDOWN] = "shutting down",
};

const char *fwd_reset_name(unsigned int code)
{
	if (code < sizeof(reset_names) / sizeof(reset_names[0]) && reset_names[code])
		return reset_names[code];
	return "reset";
}

static const char *const ev_names[] = { "listening", "up", "down", "open", "refused", "close" };

const char *fwd_ev_name(enum fwd_ev kind)
{
	return (unsigned int)kind < 6 ? ev_names[kind] : "?";
}

int fwd_frame_encode(const struct fwd_frame *f, uint8_t *buf, size_t cap)
{
	size_t n = 5, hl, rl;

	if (cap < 5)
		return -EMSGSIZE;
	buf[0] = f->type;
	warp_put_u32(buf + 1, f->id);
	switch (f->type) {
	case FWD_HELLO:
		if (cap < n + 6)
			return -EMSGSIZE;
		memcpy(buf + n, FWD_MAGIC, 5);
		buf[n + 5] = f->version;
		n += 6;
		break;
	case FWD_OPEN:
		hl = strlen(f->host);
		if (!hl || hl > FWD_HOST_MAX)
			return -EINVAL;
		if (cap < n + 3 + hl)
			return -EMSGSIZE;
		warp_put_u16(buf + n, f->port);
		buf[n + 2] = (uint8_t)hl;
		memcpy(buf + n + 3, f->host, hl);
		n += 3 + hl;
		break;
	case FWD_OPEN_OK:
	case FWD_CLOSE:
		break;
	case FWD_DATA:
		if (!f->len || f->len > FWD_DATA_MAX)
			return -EINVAL;
		if (cap < n + f->len)
			return -EMSGSIZE;
		memcpy(buf + n, f->data, f->len);
		n += f->len;
		break;
	case FWD_WINDOW_UPDATE:
		if (!f->credit)
			return -EINVAL;
		if (cap < n + 4)
			return -EMSGSIZE;
		warp_put_u32(buf + n, f->credit);
		n += 4;
		break;
	case FWD_RESET:
		rl = strnlen(f->reason, FWD_REASON_MAX);
		if (cap < n + 2 + rl)
			return -EMSGSIZE;
		warp_put_u16(buf + n, f->code);
		memcpy(buf + n + 2, f->reason, rl);
		n += 2 + rl;
		break;
	default:
		return -EINVAL;
	}
	return (int)n;
}

int fwd_frame_decode(const uint8_t *buf, size_t len, struct fwd_frame *f)
{
	const uint8_t *p;
	size_t left;

	memset(f, 0, sizeof(*f));
	if (len < 5)
		return -WARP_ETRUNCATED;
	p = buf + 5;
	f->type = buf[0];
	f->id = warp_get_u32(buf + 1);
	left = len - 5;
	switch (f->type) {
	case FWD_HELLO:
		if (f->id)
			return -WARP_EMALFORMED;
		if (left < 6)
			return -WARP_ETRUNCATED;
		if (memcmp(p, FWD_MAGIC, 5))
			return -WARP_EMALFORMED;
		f->version = p[5];
		if (left > 6)
			return -WARP_ETRAILING;
		return f->version == FWD_VERSION ? 0 : -WARP_EVERSION;
	case FWD_OPEN:
		if (left < 3)
			return -WARP_ETRUNCATED;
		f->port = warp_get_u16(p);
		if (!p[2] || !f->port)
			return -WARP_ERANGE;
		if (left < 3u + p[2])
			return -WARP_ETRUNCATED;
		if (left > 3u + p[2])
			return -WARP_ETRAILING;
		memcpy(f->host, p + 3, p[2]);
		f->host[p[2]] = '\0';
		if (strlen(f->host) != p[2])
			return -WARP_EMALFORMED;
		break;
	case FWD_OPEN_OK:
	case FWD_CLOSE:
		if (left)
			return -WARP_ETRAILING;
		break;
	case FWD_DATA:
		if (!left)
			return -WARP_ETRUNCATED;
		if (left > FWD_DATA_MAX)
			return -WARP_ERANGE;
		f->data = p;
		f->len = left;
		break;
	case FWD_WINDOW_UPDATE:
		if (left < 4)
			return -WARP_ETRUNCATED;
		if (left > 4)
			return -WARP_ETRAILING;
		f->credit = warp_get_u32(p);
		if (!f->credit)
			return -WARP_ERANGE;
		break;
	case FWD_RESET:
		if (left < 2)
			return -WARP_ETRUNCATED;
		if (left > 2 + FWD_REASON_MAX)
			return -WARP_ETRAILING;
		f->code = warp_get_u16(p);
		memcpy(f->reason, p + 2, left - 2);
		f->reason[left - 2] = '\0';
		/* Shown to users: keep it printable. */
		for (char *c = f->reason; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
		break;
	default:
		return -WARP_EMALFORMED;
	}
	if (!f->id)
		return -WARP_EMALFORMED;
	return 0;
}

bool fwd_is_hello(const uint8_t *msg, size_t len)
{
	return len >= 11 && msg[0] == FWD_HELLO && !memcmp(msg + 5, FWD_MAGIC, 5);
}

/* ------------------------------------------------------------------ keys, hosts, rules */

void fwd_key_hex(const uint8_t key[WARP_PUBKEY_LEN], char out[2 * WARP_PUBKEY_LEN + 1])
{
	warp_hex_encode(out, key, WARP_PUBKEY_LEN);
}

int fwd_key_parse(const char *hex, uint8_t key[WARP_PUBKEY_LEN])
{
	if (strlen(hex) != 2 * WARP_PUBKEY_LEN || warp_hex_decode(key, WARP_PUBKEY_LEN, hex))
		return -EINVAL;
	return warp_pubkey_check(key) ? -EINVAL : 0;
}

int fwd_host_norm(const char *in, char *out, size_t cap)
{
	char tmp[FWD_HOST_MAX + 1];
	size_t n = strlen(in);
	struct in6_addr a6;
	struct in_addr a4;

	if (!n || n > FWD_HOST_MAX)
		return -EINVAL;
	if (in[0] == '[' && in[n - 1] == ']') {
		memcpy(tmp, in + 1, n - 2);
		tmp[n - 2] = '\0';
	} else {
		memcpy(tmp, in, n + 1);
	}
	if (inet_pton(AF_INET, tmp, &a4) == 1)
		return inet_ntop(AF_INET, &a4, out, (socklen_t)cap) ? 0 : -EINVAL;
	if (inet_pton(AF_INET6, tmp, &a6) == 1)
		return inet_ntop(AF_INET6, &a6, out, (socklen_t)cap) ? 0 : -EINVAL;
	if (!strcasecmp(tmp, "localhost"))
		return snprintf(out, cap, "127.0.0.1") < (int)cap ? 0 : -EINVAL;
	for (char *c = tmp; *c; c++) {
		if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.' && *c != '_')
			return -EINVAL;
		*c = (char)tolower((unsigned char)*c);
	}
	if (strlen(tmp) >= cap)
		return -EINVAL;
	strcpy(out, tmp);
	return 0;
}

int fwd_hostport_parse(const char *text, char *host, size_t cap, uint16_t *port)
{
	const char *colon = strrchr(text, ':');
	char h[FWD_HOST_MAX + 3];
	char *end;
	long v;

	if (!colon || colon == text || (size_t)(colon - text) >= sizeof(h))
		return -EINVAL;
	memcpy(h, text, (size_t)(colon - text));
	h[colon - text] = '\0';
	if (strchr(h, ':') && h[0] != '[')
		return -EINVAL; /* IPv6 needs brackets: [::1]:80 */
	errno = 0;
	v = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || v < 1 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return fwd_host_norm(h, host, cap);
}

int fwd_listen_parse(const char *text, struct sockaddr_storage *out)
{
	const char *colon = strrchr(text, ':');
	char addr[INET6_ADDRSTRLEN + 16];
	char *end;
	long v;

	if (!colon || colon == text || (size_t)(colon - text) >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, text, (size_t)(colon - text));
	addr[colon - text] = '\0';
	errno = 0;
	v = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || v < 0 || v > 65535)
		return -EINVAL;
	if (strchr(addr, ':') && addr[0] != '[')
		return -EINVAL;
	if (warp_ep_parse(addr, 1, out))
		return -EINVAL;
	warp_ep_set_port((struct sockaddr *)out, (uint16_t)v);
	return 0;
}

int fwd_rule_parse(const char *text, struct fwd_rule *r, char *err, size_t errlen)
{
	char ep[FWD_HOST_MAX + 16], with_host[32];
	int e;

	memset(r, 0, sizeof(*r));
	/* A bare PORT means 127.0.0.1:PORT. */
	if (!strchr(text, ':') && strlen(text) < 8) {
		snprintf(with_host, sizeof(with_host), "127.0.0.1:%s", text);
		e = fwd_hostport_parse(with_host, r->host, sizeof(r->host), &r->port);
	} else {
		e = fwd_hostport_parse(text, r->host, sizeof(r->host), &r->port);
	}
	if (e) {
		snprintf(err, errlen,
			 "'%s': expected PORT, HOST:PORT or [IPV6]:PORT (port 1-65535)", text);
		return -EINVAL;
	}
	snprintf(ep, sizeof(ep), strchr(r->host, ':') ? "[%s]:%u" : "%s:%u", r->host, r->port);
	e = warp_ep_resolve(ep, 0, 0, &r->addr);
	if (e) {
		snprintf(err, errlen, "'%s': cannot resolve %s: %s", text, r->host,
			 warp_strerror(e));
		return -EINVAL;
	}
	return 0;
}

/* ------------------------------------------------------------------ sessions and streams */

struct fwd_sess;

struct fwd_stream {
	struct list_head link;
	struct fwd_sess *s; /* NULL while waiting for the forward side's pipe */
	struct warp_loop *loop;
	uint32_t id;
	int fd;
	bool registered;
	unsigned int events;
	bool connecting; /* expose side: connect() in progress */
	bool rd_eof;	 /* our TCP peer finished: CLOSE sent */
	bool wr_eof;	 /* the pipe peer finished: shut our write side once flushed */
	bool wr_shut;
	uint32_t credit;   /* bytes we may still send */
	uint32_t rwin;	   /* bytes the peer may still send us */
	uint32_t consumed; /* written to TCP since our last WINDOW */
	uint8_t *wbuf;	   /* from the pipe, waiting for the TCP socket */
	size_t wlen, woff, wcap;
	uint64_t up, down; /* bytes towards HOST:PORT / back */
	char client[WARP_EP_STRLEN];
	char host[FWD_HOST_MAX + 1];
	uint16_t port;
};

struct outmsg {
	struct list_head link;
	size_t len;
	uint8_t data[];
};

struct fwd_sess {
	struct list_head link; /* in the exposer's list */
	struct warp_loop *loop;
	struct warp_pipe *pipe;
	int sub;
	bool server;
	bool dead;
	bool broken; /* the pipe refused a frame: ends at the next timer tick */
	int broken_err;
	bool hello_rx;
	uint8_t peer[WARP_PUBKEY_LEN];
	struct list_head streams;
	size_t nstreams;
	uint32_t next_id;
	struct list_head outq;
	size_t outq_bytes;
	struct warp_timer *retry;
	struct fwd_exposer *x;	 /* server */
	struct fwd_forwarder *f; /* client */
	uint8_t frame[FWD_FRAME_MAX + FWD_HOST_MAX];
};

struct fwd_exposer {
	struct warp_loop *loop;
	struct fwd_rule *rules;
	size_t nrules;
	struct list_head sessions;
	size_t nsessions;
	fwd_event_cb cb;
	void *user;
};

struct fwd_forwarder {
	struct fwd_forwarder_conf c;
	struct warp_loop *loop;
	int lfd;
	struct sockaddr_storage local;
	struct fwd_sess *sess;
	struct fwd_dial *dial;
	struct list_head pending; /* fwd_stream waiting for the pipe */
	size_t npending;
};

static void stream_io(struct warp_loop *loop, int fd, unsigned int events, void *user);
static void sess_kill(struct fwd_sess *s, int err, const char *why, bool defer);
static void stream_interest(struct fwd_stream *st);
static void fwd_reset_pending(struct fwd_forwarder *f);

static void emit(struct fwd_sess *s, struct fwd_forwarder *f, struct fwd_event *ev)
{
	fwd_event_cb cb = NULL;
	void *user = NULL;

	if (s && !f)
		f = s->f;
	if (f) {
		cb = f->c.event;
		user = f->c.user;
	} else if (s && s->x) {
		cb = s->x->cb;
		user = s->x->user;
	}
	char via[128];

	if (s && !ev->peer)
		ev->peer = s->peer;
	if (ev->kind == FWD_EV_UP && s && s->pipe) {
		struct warp_pipe_info in;
		char ep[WARP_EP_STRLEN] = "";

		warp_pipe_info(s->pipe, &in);
		if (in.remote.ss_family)
			warp_ep_str((struct sockaddr *)&in.remote, ep, sizeof(ep));
		snprintf(via, sizeof(via), "%s, %s, %s %s", in.strategy,
			 warp_path_class_name(in.path), in.transport, ep);
		ev->via = via;
	}
	ev->expose = s ? s->server : false;
	if (!ev->client)
		ev->client = "";
	if (!ev->host)
		ev->host = "";
	if (!ev->reason)
		ev->reason = "";
	if (cb)
		cb(user, ev);
}

/* Queues a frame behind anything already waiting, else hands it to the pipe. */
static int sess_send(struct fwd_sess *s, const struct fwd_frame *fr)
{
	struct outmsg *m;
	int n, err;

	if (s->dead || s->broken)
		return -WARP_ECLOSED;
	n = fwd_frame_encode(fr, s->frame, sizeof(s->frame));
	if (n < 0)
		return n;
	if (list_empty(&s->outq)) {
		err = warp_pipe_send(s->pipe, s->frame, (size_t)n);
		if (err && err != -EAGAIN) {
			/* The peer ended the pipe (its close can reach us long before ours is
			 * acknowledged): end the session from the timer, not under the caller. */
			s->broken = true;
			s->broken_err = err;
			warp_timer_arm_ms(s->retry, 0);
		}
		if (err != -EAGAIN)
			return err;
	}
	m = malloc(sizeof(*m) + (size_t)n);
	if (!m)
		return -ENOMEM;
	m->len = (size_t)n;
	memcpy(m->data, s->frame, (size_t)n);
	list_add_tail(&m->link, &s->outq);
	s->outq_bytes += (size_t)n;
	if (!warp_timer_pending(s->retry))
		warp_timer_arm_ms(s->retry, RETRY_MS);
	return 0;
}

static void sess_retry(struct warp_timer *t, void *user)
{
	struct fwd_sess *s = user;
	bool was_high = s->outq_bytes >= OUTQ_HIGH;
	struct list_head *pos;

	if (s->broken) {
		sess_kill(s, s->broken_err,
			  s->broken_err == -WARP_ECLOSED ? "the peer ended the pipe"
							 : warp_strerror(s->broken_err),
			  true);
		return;
	}
	while (!list_empty(&s->outq)) {
		struct outmsg *m = list_entry(s->outq.next, struct outmsg, link);
		int err = warp_pipe_send(s->pipe, m->data, m->len);

		if (err == -EAGAIN)
			break;
		if (err) {
			sess_kill(s, err, "pipe send failed", true);
			return;
		}
		list_del(&m->link);
		s->outq_bytes -= m->len;
		free(m);
	}
	if (!list_empty(&s->outq))
		warp_timer_arm_ms(s->retry, RETRY_MS);
	if (was_high && s->outq_bytes < OUTQ_HIGH)
		list_for_each (pos, &s->streams)
			stream_interest(list_entry(pos, struct fwd_stream, link));
}

static void send_reset(struct fwd_sess *s, uint32_t id, unsigned int code, const char *reason)
{
	struct fwd_frame fr = { .type = FWD_RESET, .id = id, .code = (uint16_t)code };

	snprintf(fr.reason, sizeof(fr.reason), "%s", reason ? reason : "");
	sess_send(s, &fr);
}

static void stream_unregister(struct fwd_stream *st)
{
	if (st->registered)
		warp_loop_del_fd(st->loop, st->fd);
	st->registered = false;
	st->events = 0;
}

/* Closes the TCP side; abort sends an RST so the application sees the failure. */
static void stream_free(struct fwd_stream *st, bool abort)
{
	stream_unregister(st);
	if (st->fd >= 0) {
		if (abort) {
			struct linger lg = { 1, 0 };

			setsockopt(st->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(st->fd);
	}
	list_del(&st->link);
	if (st->s)
		st->s->nstreams--;
	free(st->wbuf);
	free(st);
}

/* Ends a stream with an error, telling the pipe peer unless it told us. */
static void stream_reset(struct fwd_stream *st, bool tell, unsigned int code, const char *reason)
{
	struct fwd_event ev = { .kind = FWD_EV_REFUSED,
				.client = st->client,
				.host = st->host,
				.port = st->port,
				.code = code,
				.reason = reason };

	if (tell && st->s)
		send_reset(st->s, st->id, code, reason);
	emit(st->s, NULL, &ev);
	stream_free(st, true);
}

static void stream_maybe_done(struct fwd_stream *st)
{
	struct fwd_event ev = {
		.kind = FWD_EV_CLOSE, .client = st->client, .host = st->host, .port = st->port
	};

	if (!st->rd_eof || !st->wr_shut)
		return;
	ev.bytes_up = st->up;
	ev.bytes_down = st->down;
	emit(st->s, NULL, &ev);
	stream_free(st, false);
}

static void stream_interest(struct fwd_stream *st)
{
	unsigned int ev = 0;

	if (st->fd < 0)
		return;
	if (st->connecting) {
		ev = WARP_EV_WRITE;
	} else if (st->s && !st->s->dead) {
		if (!st->rd_eof && st->credit && st->s->outq_bytes < OUTQ_HIGH)
			ev |= WARP_EV_READ;
		if (st->wlen > st->woff)
			ev |= WARP_EV_WRITE;
	}
	if (ev == st->events && st->registered)
		return;
	/* No interest: leave epoll, so a hang-up cannot spin the loop while we wait. */
	if (!ev) {
		stream_unregister(st);
		return;
	}
	if (st->registered) {
		if (warp_loop_mod_fd(st->loop, st->fd, ev) == 0)
			st->events = ev;
		return;
	}
	if (warp_loop_add_fd(st->loop, st->fd, ev, stream_io, st) == 0) {
		st->registered = true;
		st->events = ev;
	}
}

/* Returns false when the stream is gone. */
static bool stream_flush(struct fwd_stream *st)
{
	struct fwd_frame fr = { .type = FWD_WINDOW_UPDATE, .id = st->id };

	while (st->wlen > st->woff) {
		ssize_t n = send(st->fd, st->wbuf + st->woff, st->wlen - st->woff, MSG_NOSIGNAL);

		if (n < 0) {
			char why[96];

			if (errno == EAGAIN || errno == EINTR)
				break;
			snprintf(why, sizeof(why), "write: %s", strerror(errno));
			stream_reset(st, true, FWD_RST_ABORTED, why);
			return false;
		}
		st->woff += (size_t)n;
		st->consumed += (uint32_t)n;
	}
	if (st->woff == st->wlen)
		st->wlen = st->woff = 0;
	/* Return credit in batches; a drained buffer leaves the sender at least 3/4 of a
	 * window, so it never waits for a grant we hold back. */
	if (st->consumed >= GRANT_AT && st->s) {
		fr.credit = st->consumed;
		st->rwin += st->consumed;
		st->consumed = 0;
		sess_send(st->s, &fr);
	}
	if (st->wr_eof && !st->wr_shut && st->wlen == 0) {
		shutdown(st->fd, SHUT_WR);
		st->wr_shut = true;
		if (st->rd_eof) {
			stream_maybe_done(st);
			return false;
		}
	}
	return true;
}

static void stream_read(struct fwd_stream *st)
{
	struct fwd_sess *s = st->s;
	uint8_t buf[FWD_DATA_MAX];
	struct fwd_frame fr = { .type = FWD_DATA, .id = st->id, .data = buf };
	size_t want = st->credit < sizeof(buf) ? st->credit : sizeof(buf);
	ssize_t n;

	if (!want || st->rd_eof)
		return;
	n = recv(st->fd, buf, want, 0);
	if (n < 0) {
		char why[96];

		if (errno == EAGAIN || errno == EINTR)
			return;
		snprintf(why, sizeof(why), "read: %s", strerror(errno));
		stream_reset(st, true, FWD_RST_ABORTED, why);
		return;
	}
	if (n == 0) {
		fr.type = FWD_CLOSE;
		st->rd_eof = true;
		sess_send(s, &fr);
		stream_maybe_done(st);
		return;
	}
	fr.len = (size_t)n;
	st->credit -= (uint32_t)n;
	if (s->server)
		st->down += (uint64_t)n;
	else
		st->up += (uint64_t)n;
	sess_send(s, &fr);
}

static void connect_done(struct fwd_stream *st)
{
	struct fwd_frame fr = { .type = FWD_OPEN_OK, .id = st->id };
	struct fwd_event ev = { .kind = FWD_EV_OPEN, .host = st->host, .port = st->port };
	socklen_t sl = sizeof(int);
	int err = 0;

	if (getsockopt(st->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	st->connecting = false;
	if (err) {
		char why[FWD_REASON_MAX];

		snprintf(why, sizeof(why), "connect to %.120s:%u: %.60s", st->host, st->port,
			 strerror(err));
		stream_reset(st, true, FWD_RST_CONNECT, why);
		return;
	}
	sess_send(st->s, &fr);
	emit(st->s, NULL, &ev);
	if (stream_flush(st))
		stream_interest(st);
}

static void stream_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct fwd_stream *st = user;

	if (st->connecting) {
		connect_done(st);
		return;
	}
	if ((events & (WARP_EV_WRITE | WARP_EV_ERROR)) && st->wlen > st->woff) {
		if (!stream_flush(st))
			return;
	}
	if ((events & (WARP_EV_READ | WARP_EV_ERROR)) && (st->events & WARP_EV_READ)) {
		struct fwd_sess *s = st->s;
		size_t before = s->nstreams;

		stream_read(st);
		if (s->nstreams != before)
			return; /* freed */
		if (st->rd_eof && st->wr_shut)
			return;
	}
	stream_interest(st);
}

static struct fwd_stream *stream_find(struct fwd_sess *s, uint32_t id)
{
	struct list_head *pos;

	list_for_each (pos, &s->streams) {
		struct fwd_stream *st = list_entry(pos, struct fwd_stream, link);

		if (st->id == id)
			return st;
	}
	return NULL;
}

static struct fwd_stream *stream_new(struct warp_loop *loop, int fd)
{
	struct fwd_stream *st = calloc(1, sizeof(*st));
	int one = 1;

	if (!st)
		return NULL;
	st->loop = loop;
	st->fd = fd;
	st->credit = FWD_WINDOW;
	st->rwin = FWD_WINDOW;
	list_init(&st->link);
	/* Forwarded data arrives in bursts: Nagle would only add latency. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return st;
}

static void stream_attach(struct fwd_sess *s, struct fwd_stream *st)
{
	st->s = s;
	list_add_tail(&st->link, &s->streams);
	s->nstreams++;
}

/* ---- frames from the pipe ---- */

static int on_data(struct fwd_sess *s, struct fwd_stream *st, const struct fwd_frame *fr)
{
	if (st->wr_eof)
		return -WARP_ESTATE;
	if (fr->len > st->rwin)
		return -WARP_ERANGE; /* the peer ignored our window */
	if (st->wlen + fr->len > st->wcap) {
		size_t cap = st->wcap ? st->wcap : 65536;
		uint8_t *nb;

		if (st->woff) {
			memmove(st->wbuf, st->wbuf + st->woff, st->wlen - st->woff);
			st->wlen -= st->woff;
			st->woff = 0;
		}
		while (cap < st->wlen + fr->len)
			cap *= 2;
		if (cap != st->wcap) {
			nb = realloc(st->wbuf, cap);
			if (!nb)
				return -ENOMEM;
			st->wbuf = nb;
			st->wcap = cap;
		}
	}
	memcpy(st->wbuf + st->wlen, fr->data, fr->len);
	st->wlen += fr->len;
	st->rwin -= (uint32_t)fr->len;
	if (s->server)
		st->up += fr->len;
	else
		st->down += fr->len;
	if (!st->connecting && stream_flush(st))
		stream_interest(st);
	return 0;
}

static bool key_allowed(const struct fwd_rule *r, const uint8_t key[WARP_PUBKEY_LEN])
{
	if (!r->nkeys)
		return true;
	for (size_t i = 0; i < r->nkeys; i++)
		if (!memcmp(r->keys[i], key, WARP_PUBKEY_LEN))
			return true;
	return false;
}

static void on_open(struct fwd_sess *s, const struct fwd_frame *fr)
{
	struct fwd_exposer *x = s->x;
	const struct fwd_rule *rule = NULL;
	bool exposed = false;
	char host[FWD_HOST_MAX + 1], why[FWD_REASON_MAX];
	struct fwd_stream *st;
	int fd;

	if (fwd_host_norm(fr->host, host, sizeof(host)))
		snprintf(host, sizeof(host), "%s", fr->host);
	for (size_t i = 0; i < x->nrules; i++) {
		if (x->rules[i].port != fr->port || strcmp(x->rules[i].host, host))
			continue;
		exposed = true;
		if (key_allowed(&x->rules[i], s->peer)) {
			rule = &x->rules[i];
			break;
		}
	}
	if (!rule) {
		struct fwd_event ev = { .kind = FWD_EV_REFUSED,
					.host = host,
					.port = fr->port,
					.code = exposed ? FWD_RST_FORBIDDEN : FWD_RST_REFUSED,
					.reason = why };

		if (exposed)
			snprintf(why, sizeof(why), "%.150s:%u is not exposed to this key", host,
				 fr->port);
		else
			snprintf(why, sizeof(why), "%.150s:%u is not exposed", host, fr->port);
		send_reset(s, fr->id, ev.code, why);
		emit(s, NULL, &ev);
		return;
	}
	if (s->nstreams >= FWD_MAX_STREAMS) {
		send_reset(s, fr->id, FWD_RST_LIMIT, "too many connections on this pipe");
		return;
	}
	fd = socket(rule->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, sizeof(why), "socket: %s", strerror(errno));
		send_reset(s, fr->id, FWD_RST_CONNECT, why);
		return;
	}
	st = stream_new(s->loop, fd);
	if (!st) {
		close(fd);
		send_reset(s, fr->id, FWD_RST_CONNECT, "out of memory");
		return;
	}
	st->id = fr->id;
	st->port = fr->port;
	snprintf(st->host, sizeof(st->host), "%s", host);
	stream_attach(s, st);
	if (connect(fd, (const struct sockaddr *)&rule->addr,
		    warp_ep_len((const struct sockaddr *)&rule->addr)) == 0 ||
	    errno == EINPROGRESS) {
		st->connecting = true;
		stream_interest(st);
		return;
	}
	snprintf(why, sizeof(why), "connect to %.120s:%u: %.60s", host, fr->port, strerror(errno));
	stream_reset(st, true, FWD_RST_CONNECT, why);
}

static void on_frame(struct fwd_sess *s, const uint8_t *msg, size_t len)
{
	struct fwd_frame fr;
	struct fwd_stream *st;
	int err = fwd_frame_decode(msg, len, &fr);

	if (err == -WARP_EVERSION) {
		sess_kill(s, err, "the peer speaks another forwarding protocol version", true);
		return;
	}
	if (err) {
		sess_kill(s, err,
			  s->hello_rx ? "malformed forwarding frame"
				      : "the peer does not speak the forwarding protocol "
					"(is it running 'warpgate expose'?)",
			  true);
		return;
	}
	if (!s->hello_rx) {
		if (fr.type != FWD_HELLO) {
			sess_kill(s, -WARP_ESTATE,
				  "the peer does not speak the forwarding protocol", true);
			return;
		}
		s->hello_rx = true;
		if (s->server) {
			struct fwd_frame h = { .type = FWD_HELLO, .version = FWD_VERSION };

			sess_send(s, &h);
		} else {
			struct fwd_event ev = { .kind = FWD_EV_UP };

			emit(s, NULL, &ev);
		}
		return;
	}
	if (fr.type == FWD_HELLO) {
		sess_kill(s, -WARP_EDUPLICATE, "second HELLO", true);
		return;
	}
	st = stream_find(s, fr.id);
	if (fr.type == FWD_OPEN) {
		if (!s->server || st) {
			sess_kill(s, -WARP_ESTATE, "unexpected OPEN", true);
			return;
		}
		on_open(s, &fr);
		return;
	}
	/* Frames for streams already gone (reset, or refused with data in flight) are fine. */
	if (!st)
		return;
	switch (fr.type) {
	case FWD_OPEN_OK:
		if (!s->server) {
			struct fwd_event ev = { .kind = FWD_EV_OPEN,
						.client = st->client,
						.host = st->host,
						.port = st->port };

			emit(s, NULL, &ev);
		}
		break;
	case FWD_DATA:
		err = on_data(s, st, &fr);
		if (err)
			stream_reset(st, true, FWD_RST_PROTOCOL,
				     err == -WARP_ERANGE ? "window exceeded" : "data after close");
		break;
	case FWD_WINDOW_UPDATE:
		if ((uint64_t)st->credit + fr.credit > 64u * FWD_WINDOW) {
			stream_reset(st, true, FWD_RST_PROTOCOL, "window overflow");
			break;
		}
		st->credit += fr.credit;
		stream_interest(st);
		break;
	case FWD_CLOSE:
		if (st->wr_eof) {
			stream_reset(st, true, FWD_RST_PROTOCOL, "second CLOSE");
			break;
		}
		st->wr_eof = true;
		if (!st->connecting && stream_flush(st))
			stream_interest(st);
		break;
	case FWD_RESET:
		stream_reset(st, false, fr.code, fr.reason);
		break;
	}
}

static void sess_msg(struct warp_pipe *pipe, const uint8_t *msg, size_t len, void *user)
{
	struct fwd_sess *s = user;

	if (!s->dead)
		on_frame(s, msg, len);
}

static void sess_closed(struct warp_pipe *pipe, int err, void *user)
{
	struct fwd_sess *s = user;
	const char *why = err ? warp_strerror(err) : "the peer closed the pipe";

	/* The expose side closes pipes from keys it does not allow right after the
	 * handshake, with EACCES. */
	if (!s->server && !s->hello_rx && err == -EACCES)
		why = "the peer does not allow our key";
	else if (!s->server && !s->hello_rx && !err)
		why = "the peer closed the pipe (is it running 'warpgate expose'?)";
	sess_kill(s, err ? err : -WARP_ECLOSED, why, true);
}

static struct fwd_sess *sess_new(struct warp_loop *loop, struct warp_pipe *pipe, bool server)
{
	struct fwd_sess *s = calloc(1, sizeof(*s));
	struct warp_pipe_info info;

	if (!s)
		return NULL;
	s->loop = loop;
	s->pipe = pipe;
	s->server = server;
	s->next_id = 1;
	list_init(&s->link);
	list_init(&s->streams);
	list_init(&s->outq);
	s->retry = warp_timer_new(loop, sess_retry, s);
	if (!s->retry) {
		free(s);
		return NULL;
	}
	if (warp_pipe_info(pipe, &info) == 0)
		memcpy(s->peer, info.peer_key, WARP_PUBKEY_LEN);
	s->sub = warp_pipe_on_message(pipe, sess_msg, s);
	warp_pipe_on_closed(pipe, sess_closed, s);
	/* Streams carry their own half-close; the pipe should not end on the peer's close
	 * before our own queued frames are out. */
	warp_pipe_set_half_close(pipe, false);
	return s;
}

static void sess_free_now(void *user)
{
	struct fwd_sess *s = user;

	while (!list_empty(&s->outq)) {
		struct outmsg *m = list_entry(s->outq.next, struct outmsg, link);

		list_del(&m->link);
		free(m);
	}
	warp_timer_free(s->retry);
	free(s);
}

/* The session ends: every stream is reset, the pipe dropped, the owner told.  From inside
 * the pipe's or the timer's callbacks (defer) the memory goes on a deferred call. */
static void sess_kill(struct fwd_sess *s, int err, const char *why, bool defer)
{
	struct fwd_event ev = { .kind = FWD_EV_DOWN, .err = err, .reason = why };
	struct fwd_forwarder *f = s->f;

	if (s->dead)
		return;
	s->dead = true;
	while (!list_empty(&s->streams)) {
		struct fwd_stream *st = list_entry(s->streams.next, struct fwd_stream, link);

		stream_free(st, true);
	}
	warp_timer_cancel(s->retry);
	if (s->pipe) {
		if (s->sub >= 0)
			warp_pipe_unsubscribe(s->pipe, s->sub);
		warp_pipe_on_closed(s->pipe, NULL, NULL);
		if (err != -WARP_ECLOSED && warp_pipe_is_open(s->pipe))
			warp_pipe_close(s->pipe);
		warp_pipe_release(s->pipe);
		s->pipe = NULL;
	}
	if (s->x) {
		list_del(&s->link);
		s->x->nsessions--;
	}
	if (f && f->sess == s)
		f->sess = NULL;
	emit(s, f, &ev);
	s->f = NULL;
	s->x = NULL;
	/* Connections that were waiting for this pipe get a new one. */
	if (f && f->npending && !f->sess && !f->dial && fwd_forwarder_dial(f))
		fwd_reset_pending(f);
	if (!defer || warp_loop_defer(s->loop, sess_free_now, s))
		sess_free_now(s);
}

/* ------------------------------------------------------------------ expose side */

struct fwd_exposer *fwd_exposer_new(struct warp_loop *loop, fwd_event_cb cb, void *user)
{
	struct fwd_exposer *x = calloc(1, sizeof(*x));

	if (!x)
		return NULL;
	x->loop = loop;
	x->cb = cb;
	x->user = user;
	list_init(&x->sessions);
	return x;
}

void fwd_exposer_drop_all(struct fwd_exposer *x)
{
	while (!list_empty(&x->sessions)) {
		struct fwd_sess *s = list_entry(x->sessions.next, struct fwd_sess, link);
		struct list_head *pos;

		list_for_each (pos, &s->streams)
			send_reset(s, list_entry(pos, struct fwd_stream, link)->id,
				   FWD_RST_SHUTDOWN, "the expose side is shutting down");
		sess_kill(s, -ECANCELED, "shutting down", false);
	}
}

void fwd_exposer_free(struct fwd_exposer *x)
{
	if (!x)
		return;
	fwd_exposer_drop_all(x);
	for (size_t i = 0; i < x->nrules; i++)
		free(x->rules[i].keys);
	free(x->rules);
	free(x);
}

int fwd_exposer_add(struct fwd_exposer *x, const struct fwd_rule *r, void *owner)
{
	struct fwd_rule *nr = realloc(x->rules, (x->nrules + 1) * sizeof(*nr));
	struct fwd_rule *dst;

	if (!nr)
		return -ENOMEM;
	x->rules = nr;
	dst = &x->rules[x->nrules];
	*dst = *r;
	dst->owner = owner;
	dst->keys = NULL;
	if (r->nkeys) {
		dst->keys = malloc(r->nkeys * WARP_PUBKEY_LEN);
		if (!dst->keys)
			return -ENOMEM;
		memcpy(dst->keys, r->keys, r->nkeys * WARP_PUBKEY_LEN);
	}
	x->nrules++;
	return 0;
}

void fwd_exposer_remove_owner(struct fwd_exposer *x, void *owner)
{
	size_t j = 0;

	for (size_t i = 0; i < x->nrules; i++) {
		if (x->rules[i].owner == owner) {
			free(x->rules[i].keys);
			continue;
		}
		x->rules[j++] = x->rules[i];
	}
	x->nrules = j;
}

size_t fwd_exposer_nrules(const struct fwd_exposer *x)
{
	return x->nrules;
}

const struct fwd_rule *fwd_exposer_rule(const struct fwd_exposer *x, size_t i)
{
	return i < x->nrules ? &x->rules[i] : NULL;
}

size_t fwd_exposer_nsessions(const struct fwd_exposer *x)
{
	return x->nsessions;
}

int fwd_exposer_adopt(struct fwd_exposer *x, struct warp_pipe *pipe, const uint8_t *first,
		      size_t len)
{
	struct fwd_sess *s = sess_new(x->loop, pipe, true);
	struct fwd_event ev = { .kind = FWD_EV_UP };

	if (!s) {
		warp_pipe_close(pipe);
		warp_pipe_release(pipe);
		return -ENOMEM;
	}
	s->x = x;
	list_add_tail(&s->link, &x->sessions);
	x->nsessions++;
	emit(s, NULL, &ev);
	if (first)
		on_frame(s, first, len);
	return 0;
}

void fwd_exposer_for_each_pipe(struct fwd_exposer *x,
			       void (*fn)(struct warp_pipe *pipe, void *user), void *user)
{
	struct list_head *pos;

	list_for_each (pos, &x->sessions) {
		struct fwd_sess *s = list_entry(pos, struct fwd_sess, link);

		if (s->pipe)
			fn(s->pipe, user);
	}
}

/* ------------------------------------------------------------------ forward side */

static void fwd_open_pending(struct fwd_forwarder *f)
{
	struct fwd_sess *s = f->sess;

	while (!list_empty(&f->pending) && s && !s->dead) {
		struct fwd_stream *st = list_entry(f->pending.next, struct fwd_stream, link);
		struct fwd_frame fr = { .type = FWD_OPEN, .port = f->c.port };

		list_del(&st->link);
		f->npending--;
		if (s->nstreams >= FWD_MAX_STREAMS) {
			list_init(&st->link);
			stream_free(st, true);
			continue;
		}
		st->id = s->next_id++;
		fr.id = st->id;
		snprintf(fr.host, sizeof(fr.host), "%s", f->c.host);
		if (sess_send(s, &fr)) {
			/* This pipe is done: the connection waits for the next one. */
			list_add_tail(&st->link, f->pending.next); /* back to the head */
			f->npending++;
			return;
		}
		stream_attach(s, st);
		stream_interest(st);
	}
}

static void fwd_reset_pending(struct fwd_forwarder *f)
{
	while (!list_empty(&f->pending)) {
		struct fwd_stream *st = list_entry(f->pending.next, struct fwd_stream, link);

		f->npending--;
		stream_free(st, true);
	}
}

static void fwd_dialed(void *user, struct warp_pipe *pipe, const struct warp_connect_result *res)
{
	struct fwd_forwarder *f = user;
	struct fwd_frame hello = { .type = FWD_HELLO, .version = FWD_VERSION };

	f->dial = NULL;
	if (!pipe) {
		struct fwd_event ev = { .kind = FWD_EV_DOWN,
					.err = res->err,
					.reason = warp_strerror(res->err) };

		fwd_reset_pending(f);
		emit(NULL, f, &ev);
		return;
	}
	f->sess = sess_new(f->loop, pipe, false);
	if (!f->sess) {
		struct fwd_event ev = { .kind = FWD_EV_DOWN,
					.err = -ENOMEM,
					.reason = "out of memory" };

		warp_pipe_close(pipe);
		warp_pipe_release(pipe);
		fwd_reset_pending(f);
		emit(NULL, f, &ev);
		return;
	}
	f->sess->f = f;
	if (sess_send(f->sess, &hello)) {
		sess_kill(f->sess, -WARP_ECLOSED, "the pipe closed at once", true);
		fwd_reset_pending(f);
		return;
	}
	/* Streams go out at once; the pipe counts as up when the peer's HELLO proves it
	 * accepted us and speaks the protocol. */
	fwd_open_pending(f);
}

int fwd_forwarder_dial(struct fwd_forwarder *f)
{
	if (f->sess || f->dial)
		return 0;
	f->dial = fwd_dial_start(f->c.node, f->c.target, &f->c.copts, fwd_dialed, f);
	return f->dial ? 0 : -errno;
}

static void fwd_accept(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct fwd_forwarder *f = user;

	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int c = accept4(fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct fwd_stream *st;

		if (c < 0)
			break;
		if (f->npending >= PENDING_MAX ||
		    (f->sess && f->sess->nstreams >= FWD_MAX_STREAMS)) {
			struct linger lg = { 1, 0 };

			setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(c);
			continue;
		}
		st = stream_new(loop, c);
		if (!st) {
			close(c);
			continue;
		}
		warp_ep_unmap(&peer);
		warp_ep_str((struct sockaddr *)&peer, st->client, sizeof(st->client));
		snprintf(st->host, sizeof(st->host), "%s", f->c.host);
		st->port = f->c.port;
		list_add_tail(&st->link, &f->pending);
		f->npending++;
	}
	if (f->sess && !f->sess->dead)
		fwd_open_pending(f);
	else if (!list_empty(&f->pending) && fwd_forwarder_dial(f)) {
		struct fwd_event ev = { .kind = FWD_EV_DOWN,
					.err = -errno,
					.reason = warp_strerror(errno) };

		fwd_reset_pending(f);
		emit(NULL, f, &ev);
	}
}

struct fwd_forwarder *fwd_forwarder_new(const struct fwd_forwarder_conf *conf)
{
	struct fwd_forwarder *f = calloc(1, sizeof(*f));
	int err;

	if (!f)
		return NULL;
	f->c = *conf;
	f->c.copts.progress = NULL;
	f->loop = warp_node_loop(conf->node);
	list_init(&f->pending);
	f->lfd = warp_sock_tcp((const struct sockaddr *)&conf->bind,
			       WARP_SOCK_REUSEADDR | WARP_SOCK_LISTEN);
	if (f->lfd < 0) {
		err = f->lfd;
		goto fail;
	}
	warp_sock_local(f->lfd, &f->local);
	err = warp_loop_add_fd(f->loop, f->lfd, WARP_EV_READ, fwd_accept, f);
	if (err)
		goto fail;
	return f;
fail:
	if (f->lfd >= 0)
		close(f->lfd);
	free(f);
	errno = -err;
	return NULL;
}

void fwd_forwarder_reset(struct fwd_forwarder *f, struct warp_node *node)
{
	if (f->dial) {
		fwd_dial_cancel(f->dial);
		f->dial = NULL;
	}
	fwd_reset_pending(f);
	if (f->sess) {
		struct fwd_sess *s = f->sess;
		struct list_head *pos;

		list_for_each (pos, &s->streams)
			send_reset(s, list_entry(pos, struct fwd_stream, link)->id,
				   FWD_RST_SHUTDOWN, "the forward side is shutting down");
		sess_kill(s, -ECANCELED, "stopped", false);
	}
	if (node)
		f->c.node = node;
}

void fwd_forwarder_free(struct fwd_forwarder *f)
{
	if (!f)
		return;
	fwd_forwarder_reset(f, NULL);
	warp_loop_del_fd(f->loop, f->lfd);
	close(f->lfd);
	free(f);
}

int fwd_forwarder_local(const struct fwd_forwarder *f, struct sockaddr_storage *out)
{
	*out = f->local;
	return 0;
}

struct warp_pipe *fwd_forwarder_pipe(const struct fwd_forwarder *f)
{
	return f->sess ? f->sess->pipe : NULL;
}

size_t fwd_forwarder_nstreams(const struct fwd_forwarder *f)
{
	return (f->sess ? f->sess->nstreams : 0) + f->npending;
}

const struct fwd_forwarder_conf *fwd_forwarder_conf(const struct fwd_forwarder *f)
{
	return &f->c;
}

/* ------------------------------------------------------------------ dialing */

struct fwd_dial {
	struct warp_node *node;
	struct warp_connect_opts opts;
	struct warp_connect *c;
	struct warp_timer *fail;
	struct warp_connect_result *res;
	bool resolving;  /* a name lookup holds a pointer to us */
	bool cancelled;  /* ... and frees us when it answers */
	fwd_dial_cb cb;
	void *user;
};

static void dial_free(struct fwd_dial *d)
{
	warp_timer_free(d->fail);
	free(d->res);
	free(d);
}

static void dial_connected(struct warp_connect *c, struct warp_pipe *pipe,
			   const struct warp_connect_result *res, void *user)
{
	struct fwd_dial *d = user;

	d->c = NULL;
	d->cb(d->user, pipe, res);
	dial_free(d);
}

static void dial_failed(struct warp_timer *t, void *user)
{
	struct fwd_dial *d = user;

	d->cb(d->user, NULL, d->res);
	dial_free(d);
}

static void dial_to(struct fwd_dial *d, const struct warp_node_addr *to)
{
	d->c = warp_connect_start(d->node, to, &d->opts, dial_connected, d);
	if (!d->c) {
		d->res->err = -errno;
		warp_timer_arm_ms(d->fail, 0);
	}
}

/* The name's record: the address it holds must name the key that signed it (the handshake
 * then insists on that key, so no server can redirect us). */
static void dial_resolved(const struct warp_name_result *res, void *user)
{
	struct fwd_dial *d = user;
	struct warp_node_addr to;
	int err = res->err;

	d->resolving = false;
	if (d->cancelled) {
		dial_free(d);
		return;
	}
	if (!err && !res->found)
		err = -WARP_ENOTFOUND;
	if (!err)
		err = warp_addr_decode(res->value, res->value_len, &to);
	if (!err && memcmp(to.pubkey, res->owner, WARP_PUBKEY_LEN))
		err = -WARP_EAUTH;
	if (err) {
		d->res->err = err;
		warp_timer_arm_ms(d->fail, 0);
		return;
	}
	dial_to(d, &to);
}

struct fwd_dial *fwd_dial_start(struct warp_node *node, const char *target,
				const struct warp_connect_opts *opts, fwd_dial_cb cb, void *user)
{
	struct fwd_dial *d = calloc(1, sizeof(*d));
	struct warp_name_client *nc;
	struct warp_node_addr to;
	int err;

	if (!d)
		return NULL;
	d->node = node;
	if (opts)
		d->opts = *opts;
	d->cb = cb;
	d->user = user;
	d->res = calloc(1, sizeof(*d->res));
	d->fail = warp_timer_new(warp_node_loop(node), dial_failed, d);
	if (!d->res || !d->fail) {
		dial_free(d);
		errno = ENOMEM;
		return NULL;
	}
	if (!strncmp(target, WARP_ADDR_TEXT_PREFIX, strlen(WARP_ADDR_TEXT_PREFIX))) {
		err = warp_addr_from_text(target, &to);
		if (!err) {
			dial_to(d, &to);
			return d;
		}
	} else if (warp_name_validate(target)) {
		err = -WARP_ENAME;
	} else if (!(nc = node_name_client(node))) {
		err = -WARP_ENONAMESERVER;
	} else {
		/* Asynchronous: the daemon's loop keeps serving while the name resolves. */
		d->resolving = true;
		err = warp_name_resolve(nc, target, dial_resolved, d);
		if (!err)
			return d;
		d->resolving = false;
	}
	d->res->err = err;
	warp_timer_arm_ms(d->fail, 0);
	return d;
}

void fwd_dial_cancel(struct fwd_dial *d)
{
	if (!d)
		return;
	if (d->c)
		warp_connect_cancel(d->c);
	d->c = NULL;
	if (d->resolving) {
		warp_timer_cancel(d->fail);
		d->cancelled = true;
		return;
	}
	dial_free(d);
}
