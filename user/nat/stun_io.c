// SPDX-License-Identifier: MIT
/* UDP and TCP transports for the sans-IO STUN client. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "stun"
#include "core/log.h"
#include "nat/sockaddr.h"
#include "nat/stun_io.h"

#define RX_BUF 2048

struct udp_sock {
	int fd;
	bool own;
};

struct warp_stun_udp {
	struct warp_loop *loop;
	struct warp_stun_client *client;
	struct warp_timer *timer;
	struct udp_sock socks[WARP_STUN_UDP_MAX_SOCKS];
	int nsocks;
	warp_stun_udp_rx_cb rx_cb;
	void *rx_user;
	uint8_t buf[RX_BUF];
};

static void flush(struct warp_stun_udp *t)
{
	uint64_t now = warp_time_ns(), next;
	struct warp_stun_tx tx;

	while (warp_stun_client_poll_transmit(t->client, now, &tx)) {
		const struct sockaddr *sa = (const struct sockaddr *)&tx.dest;

		if (tx.sock < 0 || tx.sock >= t->nsocks || t->socks[tx.sock].fd < 0)
			continue;
		if (sendto(t->socks[tx.sock].fd, tx.data, tx.len, MSG_DONTWAIT, sa,
			   nat_sa_len(sa)) < 0) {
			char a[NAT_SA_STRLEN];

			/* the transaction times out on its own; nothing else to do */
			pr_debug("sendto %s: %s", nat_sa_str(sa, a, sizeof(a)), strerror(errno));
		}
	}
	next = warp_stun_client_next_deadline(t->client);
	if (next == WARP_STUN_NEVER)
		warp_timer_cancel(t->timer);
	else
		warp_timer_arm_at(t->timer, next);
}

static void on_timer(struct warp_timer *timer, void *user)
{
	struct warp_stun_udp *t = user;

	warp_stun_client_handle_timeout(t->client, warp_time_ns());
	flush(t);
}

static void on_readable(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_stun_udp *t = user;
	int sock = -1;

	for (int i = 0; i < t->nsocks; i++)
		if (t->socks[i].fd == fd)
			sock = i;
	if (sock < 0)
		return;
	for (int budget = 64; budget > 0; budget--) {
		struct sockaddr_storage from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(fd, t->buf, sizeof(t->buf), MSG_DONTWAIT | MSG_TRUNC,
				     (struct sockaddr *)&from, &flen);
		uint64_t now = warp_time_ns();

		if (n < 0)
			break; /* EAGAIN, or an ICMP error queued on the socket */
		if ((size_t)n > sizeof(t->buf))
			continue; /* truncated: not one of ours */
		if (warp_stun_client_handle_input(t->client, sock, t->buf, (size_t)n,
						  (struct sockaddr *)&from, now) != 1 &&
		    t->rx_cb)
			t->rx_cb(t, sock, t->buf, (size_t)n, (struct sockaddr *)&from, now,
				 t->rx_user);
	}
	flush(t);
}

struct warp_stun_udp *warp_stun_udp_new(struct warp_loop *loop,
					const struct warp_stun_client_cfg *cfg)
{
	struct warp_stun_udp *t = calloc(1, sizeof(*t));
	int err;

	if (!t)
		return NULL;
	t->loop = loop;
	t->client = warp_stun_client_new(cfg);
	t->timer = warp_timer_new(loop, on_timer, t);
	if (!t->client || !t->timer) {
		err = errno ? errno : ENOMEM;
		warp_stun_udp_free(t);
		errno = err;
		return NULL;
	}
	return t;
}

void warp_stun_udp_free(struct warp_stun_udp *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->nsocks; i++) {
		if (t->socks[i].fd < 0)
			continue;
		warp_loop_del_fd(t->loop, t->socks[i].fd);
		if (t->socks[i].own)
			close(t->socks[i].fd);
	}
	warp_timer_free(t->timer);
	warp_stun_client_free(t->client);
	free(t);
}

int warp_stun_udp_adopt(struct warp_stun_udp *t, int fd, bool own)
{
	int err;

	if (t->nsocks == WARP_STUN_UDP_MAX_SOCKS)
		return -ENOSPC;
	err = warp_loop_add_fd(t->loop, fd, WARP_EV_READ, on_readable, t);
	if (err)
		return err;
	t->socks[t->nsocks].fd = fd;
	t->socks[t->nsocks].own = own;
	return t->nsocks++;
}

int warp_stun_udp_open(struct warp_stun_udp *t, const struct sockaddr *bind_addr)
{
	int fd, tag;

	if (!bind_addr || !nat_sa_len(bind_addr))
		return -EINVAL;
	fd = socket(bind_addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, bind_addr, nat_sa_len(bind_addr)) < 0) {
		tag = -errno;
		close(fd);
		return tag;
	}
	tag = warp_stun_udp_adopt(t, fd, true);
	if (tag < 0)
		close(fd);
	return tag;
}

int warp_stun_udp_fd(const struct warp_stun_udp *t, int sock)
{
	return sock >= 0 && sock < t->nsocks ? t->socks[sock].fd : -ENOENT;
}

int warp_stun_udp_local(const struct warp_stun_udp *t, int sock, struct sockaddr_storage *out)
{
	socklen_t len = sizeof(*out);
	int fd = warp_stun_udp_fd(t, sock);

	if (fd < 0)
		return fd;
	if (getsockname(fd, (struct sockaddr *)out, &len) < 0)
		return -errno;
	return 0;
}

void warp_stun_udp_set_rx_cb(struct warp_stun_udp *t, warp_stun_udp_rx_cb cb, void *user)
{
	t->rx_cb = cb;
	t->rx_user = user;
}

struct warp_stun_client *warp_stun_udp_client(struct warp_stun_udp *t)
{
	return t->client;
}

int warp_stun_udp_request(struct warp_stun_udp *t, const struct warp_stun_req *req, uint64_t *id)
{
	int err;

	if (!req || req->transport != WARP_STUN_UDP || req->sock < 0 || req->sock >= t->nsocks)
		return -EINVAL;
	err = warp_stun_client_start(t->client, req, warp_time_ns(), id);
	if (!err)
		flush(t);
	return err;
}

int warp_stun_udp_cancel(struct warp_stun_udp *t, uint64_t id)
{
	int err = warp_stun_client_cancel(t->client, id);

	flush(t);
	return err;
}

void warp_stun_udp_kick(struct warp_stun_udp *t)
{
	flush(t);
}

/* ---- one request over TCP ---- */

struct warp_stun_tcp {
	struct warp_loop *loop;
	struct warp_stun_client *client;
	struct warp_timer *timer;
	int fd;
	bool connected;
	bool done;
	struct sockaddr_storage dest;
	warp_stun_result_cb cb;
	void *user;
	uint8_t out[1280];
	size_t out_len, out_off;
	uint8_t in[RX_BUF];
	size_t in_len;
};

static void tcp_destroy(struct warp_stun_tcp *t)
{
	if (t->fd >= 0) {
		warp_loop_del_fd(t->loop, t->fd);
		close(t->fd);
	}
	warp_timer_free(t->timer);
	warp_stun_client_free(t->client);
	free(t);
}

static void tcp_destroy_deferred(void *user)
{
	tcp_destroy(user);
}

/* Wrapper around the caller's callback: exactly once, then self-destruct. */
static void tcp_result(const struct warp_stun_result *res, void *user)
{
	struct warp_stun_tcp *t = user;

	if (t->done)
		return;
	t->done = true;
	if (t->fd >= 0) {
		warp_loop_del_fd(t->loop, t->fd);
		close(t->fd);
		t->fd = -1;
	}
	warp_timer_cancel(t->timer);
	t->cb(res, t->user);
	if (warp_loop_defer(t->loop, tcp_destroy_deferred, t))
		abort(); /* cannot free safely from inside our own call chain */
}

static void tcp_fail(struct warp_stun_tcp *t, int err)
{
	struct warp_stun_result res = { .status = err, .sock = 0 };

	memcpy(&res.dest, &t->dest, sizeof(t->dest));
	warp_stun_client_fail_all(t->client, err);
	if (!t->done) /* no transaction yet: report directly */
		tcp_result(&res, t);
}

static void tcp_rearm(struct warp_stun_tcp *t, uint64_t hard)
{
	uint64_t next = warp_stun_client_next_deadline(t->client);

	if (hard < next)
		next = hard;
	if (next != WARP_STUN_NEVER)
		warp_timer_arm_at(t->timer, next);
}

static void tcp_on_timer(struct warp_timer *timer, void *user)
{
	struct warp_stun_tcp *t = user;
	uint64_t now = warp_time_ns();

	if (!t->connected) {
		tcp_fail(t, -ETIMEDOUT);
		return;
	}
	warp_stun_client_handle_timeout(t->client, now);
	if (!t->done)
		tcp_rearm(t, WARP_STUN_NEVER);
}

static void tcp_on_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_stun_tcp *t = user;
	struct warp_stun_tx tx;

	if (!t->connected && (events & (WARP_EV_WRITE | WARP_EV_ERROR))) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr) {
			tcp_fail(t, -soerr);
			return;
		}
		t->connected = true;
		if (warp_stun_client_poll_transmit(t->client, warp_time_ns(), &tx)) {
			memcpy(t->out, tx.data, tx.len);
			t->out_len = tx.len;
		}
		tcp_rearm(t, WARP_STUN_NEVER);
	}
	if (t->out_off < t->out_len) {
		ssize_t n = send(fd, t->out + t->out_off, t->out_len - t->out_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno != EAGAIN) {
			tcp_fail(t, -errno);
			return;
		}
		if (n > 0)
			t->out_off += (size_t)n;
		warp_loop_mod_fd(loop, fd,
				 WARP_EV_READ | (t->out_off < t->out_len ? WARP_EV_WRITE : 0));
	}
	if (events & WARP_EV_READ) {
		ssize_t n = recv(fd, t->in + t->in_len, sizeof(t->in) - t->in_len, MSG_DONTWAIT);
		int flen;

		if (n == 0) {
			tcp_fail(t, -WARP_ECLOSED);
			return;
		}
		if (n < 0) {
			if (errno != EAGAIN)
				tcp_fail(t, -errno);
			return;
		}
		t->in_len += (size_t)n;
		while ((flen = warp_stun_frame_len(t->in, t->in_len)) > 0 &&
		       (size_t)flen <= t->in_len) {
			warp_stun_client_handle_input(t->client, 0, t->in, (size_t)flen,
						      (struct sockaddr *)&t->dest, warp_time_ns());
			if (t->done)
				return;
			memmove(t->in, t->in + flen, t->in_len - (size_t)flen);
			t->in_len -= (size_t)flen;
		}
		if (flen < 0 || (flen > 0 && (size_t)flen > sizeof(t->in)))
			tcp_fail(t, -WARP_EMALFORMED);
	}
}

struct warp_stun_tcp *warp_stun_tcp_request(struct warp_loop *loop,
					    const struct warp_stun_client_cfg *cfg,
					    const struct sockaddr *bind_addr,
					    const struct warp_stun_req *req)
{
	struct warp_stun_tcp *t;
	struct warp_stun_req r;
	uint64_t now = warp_time_ns();
	int err;

	if (!loop || !req || !req->dest || !nat_sa_len(req->dest) || !req->cb) {
		errno = EINVAL;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->fd = -1;
	t->loop = loop;
	t->cb = req->cb;
	t->user = req->user;
	memcpy(&t->dest, req->dest, nat_sa_len(req->dest));
	t->client = warp_stun_client_new(cfg);
	t->timer = warp_timer_new(loop, tcp_on_timer, t);
	if (!t->client || !t->timer) {
		err = -ENOMEM;
		goto fail;
	}
	r = *req;
	r.transport = WARP_STUN_TCP;
	r.sock = 0;
	r.cb = tcp_result;
	r.user = t;
	err = warp_stun_client_start(t->client, &r, now, NULL);
	if (err)
		goto fail;
	t->fd = socket(req->dest->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0) {
		err = -errno;
		goto fail;
	}
	if (bind_addr && nat_sa_len(bind_addr) &&
	    bind(t->fd, bind_addr, nat_sa_len(bind_addr)) < 0) {
		err = -errno;
		goto fail;
	}
	if (connect(t->fd, req->dest, nat_sa_len(req->dest)) < 0 && errno != EINPROGRESS) {
		err = -errno;
		goto fail;
	}
	err = warp_loop_add_fd(loop, t->fd, WARP_EV_READ | WARP_EV_WRITE, tcp_on_io, t);
	if (err)
		goto fail;
	/* the connect shares the transaction budget */
	warp_timer_arm_at(t->timer, now + (cfg && cfg->ti_ms ? cfg->ti_ms : 39500) * 1000000ull);
	return t;
fail:
	if (t->fd >= 0) {
		close(t->fd);
		t->fd = -1;
	}
	warp_stun_client_free(t->client);
	t->client = NULL;
	warp_timer_free(t->timer);
	free(t);
	errno = -err;
	return NULL;
}

void warp_stun_tcp_cancel(struct warp_stun_tcp *t)
{
	if (!t || t->done)
		return;
	t->done = true;
	tcp_destroy(t);
}
