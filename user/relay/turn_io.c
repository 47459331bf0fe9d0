// SPDX-License-Identifier: MIT
/*
 * Socket and timer glue for the sans-IO TURN client.  One socket per allocation: RFC 8656
 * ties an allocation to its 5-tuple, so sharing happens a level up (relay/turn_path.c), not
 * here.  The object frees itself through a zero-delay timer so that nothing is freed under
 * a callback that is still running.
 */
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "turn"
#include "core/list.h"
#include "core/log.h"
#include "net/endpoint.h"
#include "net/sock.h"
#include "relay/turn_io.h"

#define RX_BUF	   (65536 + 64)
#define TX_BUF	   (65536 + WARP_TURN_SEND_OVERHEAD + 64)
#define OUTQ_MAX   (4u << 20) /* TCP: bytes queued before sends fail with -ENOBUFS */
#define UDP_BUDGET 64

struct warp_turn_io {
	struct list_head link; /* background releases, while released */
	struct warp_loop *loop;
	struct warp_turn *t;
	struct warp_timer *timer;
	int fd;
	bool tcp;
	bool connected; /* TCP connect finished */
	bool reported;	/* ops.allocated ran */
	bool released;	/* no more callbacks; waiting for the deallocation */
	bool dying;	/* free at the next timer run */
	struct warp_turn_io_ops ops;
	void *user;
	struct sockaddr_storage server;
	uint8_t *outq; /* TCP bytes not yet written */
	size_t outlen, outcap;
	uint8_t rx[RX_BUF];
	uint8_t tx[TX_BUF];
};

/* Released objects are owned by nobody but the loop: keep them findable for shutdown. */
static pthread_mutex_t bg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list_head background = LIST_HEAD_INIT(background);

static void bg_add(struct warp_turn_io *io)
{
	pthread_mutex_lock(&bg_lock);
	list_add_tail(&io->link, &background);
	pthread_mutex_unlock(&bg_lock);
}

static void bg_del(struct warp_turn_io *io)
{
	pthread_mutex_lock(&bg_lock);
	list_del(&io->link);
	list_init(&io->link);
	pthread_mutex_unlock(&bg_lock);
}

static void close_fd(struct warp_turn_io *io)
{
	if (io->fd >= 0) {
		warp_loop_del_fd(io->loop, io->fd);
		close(io->fd);
		io->fd = -1;
	}
}

static void destroy(struct warp_turn_io *io)
{
	bg_del(io);
	close_fd(io);
	warp_timer_free(io->timer);
	warp_turn_free(io->t);
	free(io->outq);
	free(io);
}

/* Frees from the timer, outside any callback of ours. */
static void die_soon(struct warp_turn_io *io)
{
	io->dying = true;
	close_fd(io);
	warp_timer_arm_ns(io->timer, 0);
}

static void io_lost(struct warp_turn_io *io, int err)
{
	warp_turn_transport_lost(io->t, err);
}

/* TCP: writes what the queue holds. */
static int tcp_write(struct warp_turn_io *io)
{
	while (io->outlen) {
		ssize_t n = send(io->fd, io->outq, io->outlen, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return -errno;
		}
		memmove(io->outq, io->outq + n, io->outlen - (size_t)n);
		io->outlen -= (size_t)n;
	}
	warp_loop_mod_fd(io->loop, io->fd, WARP_EV_READ | (io->outlen ? WARP_EV_WRITE : 0));
	return 0;
}

static int tcp_queue(struct warp_turn_io *io, const uint8_t *data, size_t len)
{
	if (io->outlen + len > OUTQ_MAX)
		return -ENOBUFS;
	if (io->outlen + len > io->outcap) {
		size_t cap = io->outcap ? io->outcap : 16384;
		uint8_t *n;

		while (cap < io->outlen + len)
			cap *= 2;
		n = realloc(io->outq, cap);
		if (!n)
			return -ENOMEM;
		io->outq = n;
		io->outcap = cap;
	}
	memcpy(io->outq + io->outlen, data, len);
	io->outlen += len;
	return 0;
}

/* Hands one message to the socket. */
static int put(struct warp_turn_io *io, const uint8_t *data, size_t len)
{
	int err;

	if (io->fd < 0)
		return -ENOTCONN;
	if (!io->tcp) {
		if (send(io->fd, data, len, MSG_DONTWAIT) < 0)
			return -errno;
		return 0;
	}
	err = tcp_queue(io, data, len);
	if (!err && io->connected)
		err = tcp_write(io);
	return err;
}

/* Sends what the client has due and re-arms the timer. */
static void flush(struct warp_turn_io *io)
{
	uint64_t now = warp_time_ns(), next;
	struct warp_turn_tx tx;

	if (io->dying)
		return;
	if (!io->tcp || io->connected) {
		while (warp_turn_poll_transmit(io->t, now, &tx)) {
			int err = put(io, tx.data, tx.len);

			/* a lost request is retransmitted or times out on its own */
			if (err)
				pr_debug("TURN send: %s", warp_strerror(err));
		}
	}
	next = warp_turn_next_deadline(io->t);
	if (next == WARP_TURN_NEVER)
		warp_timer_cancel(io->timer);
	else
		warp_timer_arm_at(io->timer, next);
}

static void on_timer(struct warp_timer *timer, void *user)
{
	struct warp_turn_io *io = user;

	if (io->dying) {
		destroy(io);
		return;
	}
	warp_turn_handle_timeout(io->t, warp_time_ns());
	flush(io);
}

static void on_event(struct warp_turn *t, const struct warp_turn_event *ev, void *user)
{
	struct warp_turn_io *io = user;

	switch (ev->type) {
	case WARP_TURN_EV_ALLOCATED:
		io->reported = true;
		if (!io->released && io->ops.allocated)
			io->ops.allocated(io, 0, ev->info, io->user);
		break;
	case WARP_TURN_EV_FAILED:
		if (io->released) {
			die_soon(io);
		} else if (!io->reported) {
			io->reported = true;
			if (io->ops.allocated)
				io->ops.allocated(io, ev->err, NULL, io->user);
		} else if (io->ops.lost) {
			io->ops.lost(io, ev->err, io->user);
		}
		break;
	case WARP_TURN_EV_PERMISSION:
		if (!io->released && io->ops.peer)
			io->ops.peer(io, ev->peer, ev->err, io->user);
		break;
	case WARP_TURN_EV_CHANNEL:
		break;
	case WARP_TURN_EV_RELEASED:
		if (io->released)
			die_soon(io);
		break;
	}
}

static void on_data(struct warp_turn *t, const struct sockaddr *peer, uint8_t *data, size_t len,
		    void *user)
{
	struct warp_turn_io *io = user;

	if (!io->released && io->ops.data)
		io->ops.data(io, peer, data, len, io->user);
}

static const struct warp_turn_ops core_ops = { .event = on_event, .data = on_data };

static void udp_readable(struct warp_turn_io *io)
{
	for (int i = 0; i < UDP_BUDGET && io->fd >= 0 && !io->dying; i++) {
		ssize_t n = recv(io->fd, io->rx, sizeof(io->rx), MSG_DONTWAIT | MSG_TRUNC);

		if (n < 0) {
			/* ICMP unreachable on the connected socket: the server is not there */
			if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH)
				io_lost(io, -errno);
			break;
		}
		if ((size_t)n > sizeof(io->rx))
			continue;
		warp_turn_handle_input(io->t, io->rx, (size_t)n, NULL, warp_time_ns());
	}
}

static void tcp_readable(struct warp_turn_io *io)
{
	for (int i = 0; i < 16 && io->fd >= 0 && !io->dying; i++) {
		ssize_t n = recv(io->fd, io->rx, sizeof(io->rx), MSG_DONTWAIT);

		if (n == 0) {
			io_lost(io, -WARP_ECLOSED);
			close_fd(io);
			return;
		}
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				io_lost(io, -errno);
				close_fd(io);
			}
			return;
		}
		if (warp_turn_handle_stream(io->t, io->rx, (size_t)n, warp_time_ns()) < 0) {
			close_fd(io);
			return;
		}
	}
}

static void on_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_turn_io *io = user;

	if (io->tcp && !io->connected && (events & (WARP_EV_WRITE | WARP_EV_ERROR))) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr) {
			io_lost(io, -soerr);
			close_fd(io);
			flush(io);
			return;
		}
		io->connected = true;
		warp_loop_mod_fd(loop, fd, WARP_EV_READ);
	}
	if (io->tcp && io->connected && (events & WARP_EV_WRITE) && io->fd >= 0) {
		int err = tcp_write(io);

		if (err) {
			io_lost(io, err);
			close_fd(io);
		}
	}
	if ((events & (WARP_EV_READ | WARP_EV_ERROR)) && io->fd >= 0) {
		if (io->tcp)
			tcp_readable(io);
		else
			udp_readable(io);
	}
	flush(io);
}

static int open_socket(struct warp_turn_io *io, const struct warp_turn_io_cfg *cfg)
{
	const struct sockaddr *srv = (const struct sockaddr *)&cfg->server;
	struct sockaddr_storage any = { 0 };
	const struct sockaddr *local = (const struct sockaddr *)&cfg->local;
	int fd, one = 1;

	if (cfg->local.ss_family == AF_UNSPEC) {
		any.ss_family = srv->sa_family;
		local = (struct sockaddr *)&any;
	}
	fd = io->tcp ? warp_sock_tcp(local, 0) : warp_sock_udp(local, 0);
	if (fd < 0)
		return fd;
	if (io->tcp)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, srv, warp_ep_len(srv)) < 0 && errno != EINPROGRESS) {
		int err = -errno;

		close(fd);
		return err;
	}
	io->fd = fd;
	io->connected = !io->tcp;
	return warp_loop_add_fd(io->loop, fd, io->tcp ? WARP_EV_READ | WARP_EV_WRITE : WARP_EV_READ,
				on_io, io);
}

struct warp_turn_io *warp_turn_io_new(struct warp_loop *loop, const struct warp_turn_io_cfg *cfg,
				      const struct warp_turn_io_ops *ops, void *user)
{
	struct warp_turn_io *io;
	int err;

	if (!loop || !cfg) {
		errno = EINVAL;
		return NULL;
	}
	io = calloc(1, sizeof(*io));
	if (!io)
		return NULL;
	list_init(&io->link);
	io->loop = loop;
	io->fd = -1;
	io->tcp = cfg->turn.transport == WARP_TURN_TCP;
	io->server = cfg->server;
	if (ops)
		io->ops = *ops;
	io->user = user;
	io->t = warp_turn_new(&cfg->turn, (const struct sockaddr *)&cfg->server, &core_ops, io);
	if (!io->t) {
		err = -errno;
		goto fail;
	}
	io->timer = warp_timer_new(loop, on_timer, io);
	if (!io->timer) {
		err = -ENOMEM;
		goto fail;
	}
	err = open_socket(io, cfg);
	if (err)
		goto fail;
	err = warp_turn_allocate(io->t, warp_time_ns());
	if (err)
		goto fail;
	flush(io);
	return io;
fail:
	destroy(io);
	errno = -err;
	return NULL;
}

int warp_turn_io_add_peer(struct warp_turn_io *io, const struct sockaddr *peer, bool channel)
{
	int err = warp_turn_add_peer(io->t, peer, channel, warp_time_ns());

	if (!err)
		flush(io);
	return err;
}

int warp_turn_io_remove_peer(struct warp_turn_io *io, const struct sockaddr *peer)
{
	int err = warp_turn_remove_peer(io->t, peer, warp_time_ns());

	flush(io);
	return err;
}

int warp_turn_io_send(struct warp_turn_io *io, const struct sockaddr *peer, const void *data,
		      size_t len)
{
	int n;

	if (io->released || io->fd < 0)
		return -ENOTCONN;
	n = warp_turn_wrap(io->t, peer, data, len, io->tx, sizeof(io->tx));
	if (n < 0)
		return n;
	return put(io, io->tx, (size_t)n);
}

void warp_turn_io_release(struct warp_turn_io *io)
{
	if (!io || io->released)
		return;
	io->released = true;
	bg_add(io);
	if (warp_turn_release(io->t, warp_time_ns()) != 0 || io->fd < 0) {
		die_soon(io);
		return;
	}
	flush(io);
}

void warp_turn_io_free(struct warp_turn_io *io)
{
	if (!io)
		return;
	io->released = true;
	if (io->fd >= 0 && (!io->tcp || io->connected) &&
	    warp_turn_release(io->t, warp_time_ns()) == 0) {
		struct warp_turn_tx tx;

		if (warp_turn_poll_transmit(io->t, warp_time_ns(), &tx) &&
		    put(io, tx.data, tx.len) == 0 && io->tcp)
			tcp_write(io);
	}
	destroy(io);
}

unsigned int warp_turn_io_releasing(const struct warp_loop *loop)
{
	struct list_head *pos;
	unsigned int n = 0;

	pthread_mutex_lock(&bg_lock);
	list_for_each (pos, &background)
		n += list_entry(pos, struct warp_turn_io, link)->loop == loop;
	pthread_mutex_unlock(&bg_lock);
	return n;
}

void warp_turn_io_shutdown(struct warp_loop *loop)
{
	for (;;) {
		struct warp_turn_io *io = NULL;
		struct list_head *pos;

		pthread_mutex_lock(&bg_lock);
		list_for_each (pos, &background) {
			struct warp_turn_io *c = list_entry(pos, struct warp_turn_io, link);

			if (c->loop == loop) {
				io = c;
				break;
			}
		}
		pthread_mutex_unlock(&bg_lock);
		if (!io)
			return;
		destroy(io);
	}
}

int warp_turn_io_fd(const struct warp_turn_io *io)
{
	return io->fd;
}

const struct warp_turn_info *warp_turn_io_info(const struct warp_turn_io *io)
{
	return warp_turn_info(io->t);
}

enum warp_turn_state warp_turn_io_state(const struct warp_turn_io *io)
{
	return warp_turn_state(io->t);
}

struct warp_turn *warp_turn_io_core(struct warp_turn_io *io)
{
	return io->t;
}
