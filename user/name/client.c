// SPDX-License-Identifier: MIT
/*
 * Loop-based nickname client: sockets and timers around the sans-IO core (cc.c).  One UDP
 * socket per address family carries requests to every server and the local-link queries;
 * replies are matched to an operation by request id and to a server by source address.
 * TCP is used per request only when a server says its answer does not fit a datagram.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warpgate/error.h>
#include <warpgate/name.h>

#define LOG_COMPONENT "name"
#include "core/log.h"
#include "core/util.h"
#include "name/cc.h"
#include "name/local.h"
#include "name/proto.h"

struct server {
	char spec[64];
	struct sockaddr_storage addr;
	socklen_t len;
};

struct tcp_req;

struct op {
	struct warp_name_client *c;
	struct wn_cc_op cc;
	warp_name_cb cb;
	void *user;
	struct warp_timer *timer;
	struct tcp_req *tcp[WN_CC_MAX_SERVERS];
	struct op *next, **pprev;
};

struct tcp_req {
	struct op *op;
	int server, fd;
	uint8_t buf[2 + WN_MAX_PACKET];
	size_t len, off;
	bool sent;
};

struct warp_name_client {
	struct warp_loop *loop;
	struct warp_name_client_opts opts;
	char tld[16];
	struct server servers[WN_CC_MAX_SERVERS];
	struct wn_cc_target targets[WN_CC_MAX_SERVERS + 1];
	unsigned int n;
	int fd4, fd6;
	struct wn_local_groups groups;
	struct op *ops;
	uint64_t last_updated;
};

static void udp_read(struct warp_loop *loop, int fd, unsigned int events, void *user);

struct warp_name_client *warp_name_client_new(struct warp_loop *loop,
					      const struct warp_name_client_opts *opts)
{
	struct warp_name_client *c;
	int err;

	if (!loop) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->loop = loop;
	c->fd4 = c->fd6 = -1;
	if (opts)
		c->opts = *opts;
	snprintf(c->tld, sizeof(c->tld), "%s",
		 c->opts.tld && *c->opts.tld ? c->opts.tld : WARP_NAME_TLD_DEFAULT);
	c->opts.tld = c->tld;
	if (!c->opts.timeout_ms)
		c->opts.timeout_ms = 3000;
	if (!c->opts.get_pad)
		c->opts.get_pad = 1024;
	err = warp_crypto_init();
	if (!err)
		err = wn_local_groups_init(&c->groups, &c->opts);
	if (err) {
		free(c);
		errno = -err;
		return NULL;
	}
	return c;
}

static void op_complete(struct op *op);

void warp_name_client_free(struct warp_name_client *c)
{
	if (!c)
		return;
	while (c->ops) {
		c->ops->cc.res.err = -ECANCELED;
		c->ops->cc.done = true;
		op_complete(c->ops);
	}
	if (c->fd4 >= 0) {
		warp_loop_del_fd(c->loop, c->fd4);
		close(c->fd4);
	}
	if (c->fd6 >= 0) {
		warp_loop_del_fd(c->loop, c->fd6);
		close(c->fd6);
	}
	free(c);
}

int wn_parse_hostport(const char *spec, uint16_t def_port, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	char host[80], port[8];
	const char *colon;
	struct addrinfo hints = { 0 }, *ai = NULL;
	size_t hl;

	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');

		if (!end || (end[1] && end[1] != ':'))
			return -WARP_EMALFORMED;
		hl = (size_t)(end - spec - 1);
		colon = end[1] ? end + 1 : NULL;
		spec++;
	} else {
		colon = strrchr(spec, ':');
		if (colon && strchr(spec, ':') != colon)
			colon = NULL;
		hl = colon ? (size_t)(colon - spec) : strlen(spec);
	}
	if (hl == 0 || hl >= sizeof(host))
		return -WARP_EMALFORMED;
	memcpy(host, spec, hl);
	host[hl] = '\0';
	if (colon) {
		char *end;
		long p = strtol(colon + 1, &end, 10);

		if (!colon[1] || *end || p <= 0 || p > 65535)
			return -WARP_EMALFORMED;
		snprintf(port, sizeof(port), "%ld", p);
	} else {
		snprintf(port, sizeof(port), "%u", def_port);
	}
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &ai) || !ai)
		return -WARP_EMALFORMED;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

int warp_name_client_add_server(struct warp_name_client *c, const char *hostport,
				const uint8_t pubkey[WARP_PUBKEY_LEN])
{
	struct server *s;
	int err;

	if (!c || !hostport || strlen(hostport) >= sizeof(s->spec))
		return -EINVAL;
	if (c->n == WN_CC_MAX_SERVERS)
		return -ENOSPC;
	if (pubkey && warp_pubkey_check(pubkey))
		return -WARP_EMALFORMED;
	s = &c->servers[c->n];
	err = wn_parse_hostport(hostport, WARP_NAME_PORT, &s->addr, &s->len);
	if (err)
		return err;
	snprintf(s->spec, sizeof(s->spec), "%s", hostport);
	memset(&c->targets[c->n], 0, sizeof(c->targets[c->n]));
	if (pubkey) {
		memcpy(c->targets[c->n].key, pubkey, WARP_PUBKEY_LEN);
		c->targets[c->n].key_known = true;
		c->targets[c->n].seal = c->opts.seal;
	}
	return (int)c->n++;
}

int warp_name_client_add_server_spec(struct warp_name_client *c, const char *spec)
{
	char host[64];
	uint8_t key[WARP_PUBKEY_LEN];
	/* "#KEY" or ",KEY" (the node configuration's form) */
	const char *hash = spec ? strpbrk(spec, "#,") : NULL;

	if (!spec)
		return -EINVAL;
	if (!hash)
		return warp_name_client_add_server(c, spec, NULL);
	if ((size_t)(hash - spec) >= sizeof(host))
		return -EINVAL;
	memcpy(host, spec, (size_t)(hash - spec));
	host[hash - spec] = '\0';
	if (warp_hex_decode(key, sizeof(key), hash + 1))
		return -WARP_EMALFORMED;
	return warp_name_client_add_server(c, host, key);
}

void warp_name_client_prefer_tcp(struct warp_name_client *c, bool on)
{
	for (unsigned int i = 0; i < c->n; i++)
		c->targets[i].via_tcp = on;
}

unsigned int warp_name_client_server_count(const struct warp_name_client *c)
{
	return c ? c->n : 0;
}

/* ---- sockets ---- */

static int sock_for(struct warp_name_client *c, int family)
{
	int *fd = family == AF_INET ? &c->fd4 : &c->fd6;
	int one = 1, hops = 1;

	if (*fd >= 0)
		return *fd;
	*fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (*fd < 0)
		return -errno;
	if (family == AF_INET) {
		setsockopt(*fd, IPPROTO_IP, IP_MULTICAST_TTL, &hops, sizeof(hops));
		setsockopt(*fd, IPPROTO_IP, IP_MULTICAST_LOOP, &one, sizeof(one));
	} else {
		setsockopt(*fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		setsockopt(*fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops));
		setsockopt(*fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &one, sizeof(one));
	}
	if (warp_loop_add_fd(c->loop, *fd, WARP_EV_READ, udp_read, c)) {
		close(*fd);
		*fd = -1;
		return -EIO;
	}
	return *fd;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

	return x->sin6_port == y->sin6_port &&
	       !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
}

/* ---- operations ---- */

static void pump(struct op *op);

static void op_complete(struct op *op)
{
	struct warp_name_client *c = op->c;
	struct warp_name_result *r = &op->cc.res;

	*op->pprev = op->next;
	if (op->next)
		op->next->pprev = op->pprev;
	for (int i = 0; i < WN_CC_MAX_SERVERS; i++) {
		struct tcp_req *t = op->tcp[i];

		if (!t)
			continue;
		warp_loop_del_fd(c->loop, t->fd);
		close(t->fd);
		free(t);
	}
	warp_timer_free(op->timer);
	if (r->server >= 0 && (unsigned int)r->server < c->n)
		snprintf(r->server_addr, sizeof(r->server_addr), "%s", c->servers[r->server].spec);
	else if (r->server == WARP_NAME_SRC_LOCAL)
		snprintf(r->server_addr, sizeof(r->server_addr), "local");
	if (op->cb)
		op->cb(r, op->user);
	free(op);
}

static void op_timer(struct warp_timer *t, void *user)
{
	struct op *op = user;

	wn_cc_timeout(&op->cc, warp_time_ms());
	pump(op);
}

static void tcp_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct tcp_req *t = user;
	struct op *op = t->op;
	ssize_t n;
	int err = 0;

	if (!t->sent) {
		n = send(fd, t->buf + t->off, t->len - t->off, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN && errno != EINPROGRESS) {
			err = -errno;
			goto fail;
		}
		if (n > 0)
			t->off += (size_t)n;
		if (t->off == t->len) {
			t->sent = true;
			t->len = t->off = 0;
			warp_loop_mod_fd(loop, fd, WARP_EV_READ);
		}
		return;
	}
	n = recv(fd, t->buf + t->len, sizeof(t->buf) - t->len, 0);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		err = n == 0 ? -ECONNRESET : -errno;
		goto fail;
	}
	t->len += (size_t)n;
	if (t->len < 2 || t->len < 2u + warp_get_u16(t->buf))
		return;
	wn_cc_input(&op->cc, op->c->targets, t->server, t->buf + 2, warp_get_u16(t->buf),
		    warp_time_ms());
	if (!wn_cc_server_done(&op->cc, t->server))
		err = -WARP_EMALFORMED; /* one frame, and it was not an answer */
fail:
	op->tcp[t->server] = NULL;
	warp_loop_del_fd(loop, fd);
	close(fd);
	if (err)
		wn_cc_fail(&op->cc, t->server, err, warp_time_ms());
	free(t);
	pump(op);
}

static int tcp_start(struct op *op, const struct wn_tx *tx)
{
	struct warp_name_client *c = op->c;
	struct server *s = &c->servers[tx->server];
	struct tcp_req *t;
	int err;

	if (op->tcp[tx->server])
		return 0;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->op = op;
	t->server = tx->server;
	warp_put_u16(t->buf, (uint16_t)tx->len);
	memcpy(t->buf + 2, tx->buf, tx->len);
	t->len = tx->len + 2;
	t->fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0) {
		err = -errno;
		free(t);
		return err;
	}
	if (connect(t->fd, (struct sockaddr *)&s->addr, s->len) < 0 && errno != EINPROGRESS) {
		err = -errno;
		goto fail;
	}
	err = warp_loop_add_fd(c->loop, t->fd, WARP_EV_WRITE, tcp_io, t);
	if (err)
		goto fail;
	op->tcp[tx->server] = t;
	return 0;
fail:
	close(t->fd);
	free(t);
	return err;
}

static void send_local(struct op *op, const struct wn_tx *tx)
{
	struct warp_name_client *c = op->c;

	for (int i = 0; i < c->groups.n; i++) {
		const struct sockaddr_storage *g = &c->groups.addr[i];
		int fd = sock_for(c, g->ss_family);

		if (fd >= 0)
			sendto(fd, tx->buf, tx->len, 0, (const struct sockaddr *)g,
			       g->ss_family == AF_INET ? sizeof(struct sockaddr_in)
						       : sizeof(struct sockaddr_in6));
	}
}

static void pump(struct op *op)
{
	struct warp_name_client *c = op->c;
	struct wn_tx tx;
	uint64_t now = warp_time_ms();

	while (!wn_cc_done(&op->cc) && wn_cc_poll(&op->cc, c->targets, now, &tx) == 1) {
		struct server *s = &c->servers[tx.server];
		int fd, err = 0;

		switch (tx.kind) {
		case WN_TX_LOCAL:
			send_local(op, &tx);
			break;
		case WN_TX_TCP:
			err = tcp_start(op, &tx);
			break;
		case WN_TX_UDP:
			fd = sock_for(c, s->addr.ss_family);
			if (fd < 0)
				err = fd;
			else if (sendto(fd, tx.buf, tx.len, 0, (struct sockaddr *)&s->addr,
					s->len) < 0 &&
				 errno != EAGAIN && errno != ENOBUFS)
				err = -errno;
			break;
		}
		if (err)
			wn_cc_fail(&op->cc, tx.server, err, now);
	}
	if (wn_cc_done(&op->cc)) {
		op_complete(op);
		return;
	}
	warp_timer_arm_at(op->timer, wn_cc_deadline(&op->cc) * 1000000ull);
}

static void udp_read(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_name_client *c = user;
	uint8_t buf[WN_MAX_PACKET];

	for (int round = 0; round < 64; round++) {
		struct sockaddr_storage from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
		uint8_t type;
		uint64_t id;
		int server = -1;

		if (n < 0)
			return;
		if (wn_peek(buf, (size_t)n, &type, &id))
			continue;
		if (type == WN_T_LANSWER) {
			server = WN_CC_LOCAL;
		} else {
			for (unsigned int i = 0; i < c->n; i++)
				if (same_addr(&from, &c->servers[i].addr))
					server = (int)i;
			if (server < 0)
				continue;
		}
		for (struct op *op = c->ops; op; op = op->next) {
			if (op->cc.req.id != id)
				continue;
			if (wn_cc_input(&op->cc, c->targets, server, buf, (size_t)n,
					warp_time_ms()) == 0)
				pump(op);
			break;
		}
	}
}

static int op_start(struct warp_name_client *c, const struct wn_request *req, warp_name_cb cb,
		    void *user)
{
	struct op *op = calloc(1, sizeof(*op));
	bool local;

	if (!op)
		return -ENOMEM;
	op->c = c;
	op->cb = cb;
	op->user = user;
	op->timer = warp_timer_new(c->loop, op_timer, op);
	if (!op->timer) {
		free(op);
		return -ENOMEM;
	}
	local = c->groups.n && c->opts.local >= 0;
	wn_cc_init(&op->cc, req, c->n, local, warp_time_ms(), c->opts.timeout_ms, c->opts.retry_ms,
		   c->opts.get_pad);
	op->next = c->ops;
	if (c->ops)
		c->ops->pprev = &op->next;
	op->pprev = &c->ops;
	c->ops = op;
	/* complete from the loop, never from inside the caller's call */
	warp_timer_arm_ms(op->timer, 0);
	return 0;
}

static uint64_t next_updated(struct warp_name_client *c)
{
	uint64_t now = (uint64_t)((int64_t)warp_wall_ms() + c->opts.clock_offset_ms);

	/* strictly increasing, so two quick updates never look like a replay */
	c->last_updated = now > c->last_updated ? now : c->last_updated + 1;
	return c->last_updated;
}

static int signed_op(struct warp_name_client *c, const struct warp_identity *id, uint8_t type,
		     const char *name, const void *value, size_t len, enum warp_name_bump bump,
		     warp_name_cb cb, void *user)
{
	struct wn_request *req;
	int err;

	if (!c || !id || !name || (len && !value))
		return -EINVAL;
	if (len > WARP_NAME_VALUE_MAX)
		return -EMSGSIZE;
	if ((unsigned int)bump > WARP_NAME_ERROR)
		return -EINVAL;
	if (!c->n)
		return -WARP_ENONAMESERVER;
	req = calloc(1, sizeof(*req));
	if (!req)
		return -ENOMEM;
	req->type = type;
	req->bump = (uint8_t)bump;
	err = warp_name_canonical(name, c->tld, req->name);
	if (!err)
		err = wn_record_make(&req->rec, id, type == WN_T_PUT ? WN_REC_LIVE : WN_REC_TOMB,
				     req->name, value, len, next_updated(c));
	if (!err)
		err = op_start(c, req, cb, user);
	free(req);
	return err;
}

int warp_name_put(struct warp_name_client *c, const struct warp_identity *id, const char *name,
		  const void *value, size_t len, enum warp_name_bump bump, warp_name_cb cb,
		  void *user)
{
	return signed_op(c, id, WN_T_PUT, name, value, len, bump, cb, user);
}

int warp_name_delete(struct warp_name_client *c, const struct warp_identity *id, const char *name,
		     warp_name_cb cb, void *user)
{
	return signed_op(c, id, WN_T_DEL, name, NULL, 0, WARP_NAME_BUMP, cb, user);
}

int warp_name_get(struct warp_name_client *c, const char *name, warp_name_cb cb, void *user)
{
	struct wn_request req;
	int err;

	if (!c || !name)
		return -EINVAL;
	memset(&req, 0, sizeof(req));
	req.type = WN_T_GET;
	err = warp_name_canonical(name, c->tld, req.name);
	if (err)
		return err;
	return op_start(c, &req, cb, user);
}

int warp_name_resolve(struct warp_name_client *c, const char *name, warp_name_cb cb, void *user)
{
	bool local;

	if (!c)
		return -EINVAL;
	local = c->groups.n && c->opts.local >= 0;
	if (!c->n && !local)
		return -WARP_ENONAMESERVER;
	return warp_name_get(c, name, cb, user);
}

/* ---- blocking wrappers ---- */

struct sync_wait {
	struct warp_name_result *res;
	bool done;
};

static void sync_cb(const struct warp_name_result *res, void *user)
{
	struct sync_wait *w = user;

	*w->res = *res;
	w->done = true;
}

static bool sync_done(void *user)
{
	return ((struct sync_wait *)user)->done;
}

static int sync_run(struct warp_name_client *c, struct sync_wait *w, int err)
{
	if (err) {
		w->res->err = err;
		w->res->server = WARP_NAME_SRC_NONE;
		return err;
	}
	err = warp_loop_run_until(c->loop, sync_done, w, (int)c->opts.timeout_ms + 1000);
	if (err && !w->done) {
		/* the loop was stopped: drop the operation, its callback points at our stack */
		for (struct op *op = c->ops; op; op = op->next)
			if (op->user == w) {
				op->cb = NULL;
				op_complete(op);
				break;
			}
		w->res->err = err;
		return err;
	}
	return w->res->err;
}

int warp_name_put_sync(struct warp_name_client *c, const struct warp_identity *id, const char *name,
		       const void *value, size_t len, enum warp_name_bump bump,
		       struct warp_name_result *res)
{
	/* res is only written (the operation fills it), never read */
	// cppcheck-suppress ctuuninitvar
	struct sync_wait w = { res, false };

	memset(res, 0, sizeof(*res));

	return sync_run(c, &w, warp_name_put(c, id, name, value, len, bump, sync_cb, &w));
}

int warp_name_get_sync(struct warp_name_client *c, const char *name, struct warp_name_result *res)
{
	/* res is only written (the operation fills it), never read */
	// cppcheck-suppress ctuuninitvar
	struct sync_wait w = { res, false };

	memset(res, 0, sizeof(*res));

	return sync_run(c, &w, warp_name_get(c, name, sync_cb, &w));
}

int warp_name_delete_sync(struct warp_name_client *c, const struct warp_identity *id,
			  const char *name, struct warp_name_result *res)
{
	/* res is only written (the operation fills it), never read */
	// cppcheck-suppress ctuuninitvar
	struct sync_wait w = { res, false };

	memset(res, 0, sizeof(*res));

	return sync_run(c, &w, warp_name_delete(c, id, name, sync_cb, &w));
}
