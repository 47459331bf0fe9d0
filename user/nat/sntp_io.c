// SPDX-License-Identifier: MIT
/* SNTP query driver: connected UDP sockets and a timer around the sans-IO core. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "sntp"
#include "core/log.h"
#include "nat/sntp_io.h"
#include "nat/sockaddr.h"

struct warp_sntp_query {
	struct warp_loop *loop;
	struct warp_sntp *core;
	struct warp_timer *timer;
	int fds[WARP_SNTP_MAX_SERVERS];
	unsigned int n;
	warp_sntp_query_cb cb;
	void *user;
	bool finished;
};

static void close_fds(struct warp_sntp_query *q)
{
	for (unsigned int i = 0; i < q->n; i++) {
		if (q->fds[i] < 0)
			continue;
		warp_loop_del_fd(q->loop, q->fds[i]);
		close(q->fds[i]);
		q->fds[i] = -1;
	}
}

void warp_sntp_query_free(struct warp_sntp_query *q)
{
	if (!q)
		return;
	close_fds(q);
	warp_timer_free(q->timer);
	warp_sntp_free(q->core);
	free(q);
}

int warp_sntp_query_server(const struct warp_sntp_query *q, unsigned int server,
			   struct warp_ntp_sample *sample)
{
	return warp_sntp_server_status(q->core, server, sample);
}

/* Sends what is due and re-arms; runs the callback when done (q may be gone after). */
static void pump(struct warp_sntp_query *q)
{
	struct warp_sntp_tx tx;
	struct warp_sntp_result r;
	uint64_t next;
	int status;

	if (q->finished)
		return;
	while (warp_sntp_poll_transmit(q->core, warp_time_ns(), warp_sntp_wall_ns(), &tx))
		if (send(q->fds[tx.server], tx.data, tx.len, MSG_DONTWAIT) < 0)
			warp_sntp_server_error(q->core, tx.server, -errno, warp_time_ns());
	if (warp_sntp_done(q->core)) {
		q->finished = true;
		warp_timer_cancel(q->timer);
		close_fds(q);
		status = warp_sntp_result(q->core, &r);
		q->cb(q, status, status ? NULL : &r, q->user);
		return;
	}
	next = warp_sntp_next_deadline(q->core);
	if (next != UINT64_MAX)
		warp_timer_arm_at(q->timer, next);
}

static void on_timer(struct warp_timer *t, void *user)
{
	struct warp_sntp_query *q = user;

	warp_sntp_handle_timeout(q->core, warp_time_ns());
	pump(q);
}

static void on_readable(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_sntp_query *q = user;
	uint8_t buf[1100];
	unsigned int server;

	for (server = 0; server < q->n && q->fds[server] != fd; server++)
		;
	if (server == q->n)
		return;
	for (int budget = 16; budget > 0; budget--) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
		int err;

		if (n < 0) {
			/* connected socket: ICMP unreachable shows up here */
			if (errno != EAGAIN && errno != EINTR)
				warp_sntp_server_error(q->core, server, -errno, warp_time_ns());
			break;
		}
		if ((size_t)n > sizeof(buf))
			continue;
		err = warp_sntp_handle_input(q->core, server, buf, (size_t)n, NULL, warp_time_ns());
		if (err < 0)
			pr_debug("server %u: reply rejected: %s", server, warp_strerror(err));
		if (warp_sntp_done(q->core))
			break;
	}
	pump(q);
}

struct warp_sntp_query *warp_sntp_query_start(struct warp_loop *loop,
					      const struct warp_sntp_cfg *cfg,
					      warp_sntp_query_cb cb, void *user)
{
	struct warp_sntp_query *q;
	int err = 0;

	if (!loop || !cfg || !cb) {
		errno = EINVAL;
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->loop = loop;
	q->cb = cb;
	q->user = user;
	for (unsigned int i = 0; i < WARP_SNTP_MAX_SERVERS; i++)
		q->fds[i] = -1;
	q->core = warp_sntp_new(cfg);
	q->timer = warp_timer_new(loop, on_timer, q);
	if (!q->core || !q->timer) {
		err = -(errno ? errno : ENOMEM);
		goto fail;
	}
	for (unsigned int i = 0; i < cfg->n_servers; i++) {
		const struct sockaddr *sa = (const struct sockaddr *)&cfg->servers[i];
		int fd = socket(sa->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			err = -errno;
			goto fail;
		}
		q->fds[q->n++] = fd;
		if (connect(fd, sa, nat_sa_len(sa)) < 0) {
			/* no route to this one: the others may still answer */
			warp_loop_add_fd(loop, fd, WARP_EV_READ, on_readable, q);
			continue;
		}
		err = warp_loop_add_fd(loop, fd, WARP_EV_READ, on_readable, q);
		if (err)
			goto fail;
	}
	err = warp_sntp_start(q->core, warp_time_ns());
	if (err)
		goto fail;
	/* first transmissions from the loop: no callback before we return */
	warp_timer_arm_ns(q->timer, 0);
	return q;
fail:
	warp_sntp_query_free(q);
	errno = -err;
	return NULL;
}
