// SPDX-License-Identifier: MIT
/*
 * TCP hole punching helpers (see tcp_punch.h).
 *
 * Why simultaneous open works through the NATs we meet: a NAT that has seen our SYN to the
 * peer's external endpoint treats the peer's SYN from that endpoint as the reply direction
 * of the same connection (Linux conntrack: SYN_SENT2) and forwards it; a SYN that arrives
 * before the local one left is dropped (or reset) and the other side's SYN, leaving later,
 * gets through.  So one SYN crossing after both are out is enough; retries only repair
 * losses and resets, which is why they are few and spaced by the measured transit time.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <warpgate/address.h>
#include <warpgate/error.h>

#define LOG_COMPONENT "tcp_punch"
#include "core/log.h"
#include "nat/stun.h"
#include "nat/stun_client.h"
#include "net/endpoint.h"
#include "net/sock.h"
#include "signal/msg.h"
#include "traverse/tcp_punch.h"

#define SOCK_FLAGS (WARP_SOCK_REUSEADDR | WARP_SOCK_REUSEPORT | WARP_SOCK_V6ONLY)

/* ---- decisions ---- */

static bool symmetric(const struct tp_nat *n)
{
	return n->type == WARP_ADDR_NAT_SYMMETRIC || n->mapping == WARP_ADDR_BEH_AD ||
	       n->mapping == WARP_ADDR_BEH_APD;
}

/* A sequential symmetric NAT: the next mapping is the last one plus delta. */
static bool sequential(const struct tp_nat *n)
{
	return (n->delta == WARP_ADDR_DELTA_INDEPENDENT || n->delta == WARP_ADDR_DELTA_DEPENDENT) &&
	       n->delta_value != 0;
}

static bool predictable(const struct tp_nat *n)
{
	return !symmetric(n) || n->delta == WARP_ADDR_DELTA_EQUAL ||
	       n->delta == WARP_ADDR_DELTA_PRESERVING || sequential(n);
}

const char *tp_infeasible(const struct tp_nat *self, const struct tp_nat *peer)
{
	/* An open host takes any SYN on the punch port's listener, so the other side's port
	 * needs no prediction. */
	if (!predictable(self) && peer->type != WARP_ADDR_NAT_OPEN)
		return self->delta == WARP_ADDR_DELTA_RANDOM
			       ? "our NAT maps each connection to a random port (symmetric): the "
				 "peer cannot know where to connect"
			       : "our NAT maps each connection to a new port in no known pattern "
				 "(symmetric)";
	if (!predictable(peer) && self->type != WARP_ADDR_NAT_OPEN)
		return peer->delta == WARP_ADDR_DELTA_RANDOM
			       ? "the peer's NAT maps each connection to a random port "
				 "(symmetric): "
				 "its TCP endpoint cannot be predicted"
			       : "the peer's NAT maps each connection to a new port in no known "
				 "pattern (symmetric)";
	return NULL;
}

int tp_predict(const struct tp_nat *self, const struct sockaddr *mapped, unsigned int nconn,
	       struct sockaddr_storage *out, uint8_t *kinds, int max)
{
	int port = warp_ep_port(mapped), n = 0;

	if (max <= 0)
		return 0;
	if (!symmetric(self) || !sequential(self)) {
		/* One mapping for every destination (or the port is kept): STUN saw it. */
		memcpy(&out[0], mapped, warp_ep_len(mapped));
		kinds[0] = WARP_SIG_EP_REFLEXIVE;
		return 1;
	}
	/* Each of our connects is a new mapping: the ones after STUN's, plus a little slack
	 * for other hosts' connections through the same NAT in between. */
	for (unsigned int k = 1; k <= nconn + TP_SEQ_SLACK && n < max; k++) {
		long p = port + (long)k * self->delta_value;

		if (p < 1 || p > 65535)
			break;
		memcpy(&out[n], mapped, warp_ep_len(mapped));
		warp_ep_set_port((struct sockaddr *)&out[n], (uint16_t)p);
		kinds[n++] = WARP_SIG_EP_PREDICTED;
	}
	return n;
}

static uint32_t clamp32(uint64_t v, uint32_t lo, uint32_t hi)
{
	return v < lo ? lo : v > hi ? hi : (uint32_t)v;
}

void tp_sched_from(uint64_t start_ms, uint32_t interval_ms, uint32_t duration_ms,
		   struct tp_sched *out)
{
	out->start_ms = start_ms;
	out->interval_ms = clamp32(interval_ms, 50, 1000);
	out->duration_ms = clamp32(duration_ms, TP_MIN_DURATION, 10000);
	out->max_tries = clamp32(out->duration_ms / out->interval_ms + 1, 1, 64);
}

void tp_schedule(uint64_t now_ms, uint64_t transit_ms, uint64_t offer_start_ms,
		 uint32_t offer_duration_ms, uint32_t unc_ms, struct tp_sched *out)
{
	uint64_t start, dur = TP_DURATION_MS;

	if (transit_ms > TP_MAX_TRANSIT_MS)
		transit_ms = TP_MAX_TRANSIT_MS;
	/* The answer takes about as long as the offer did; then both start together. */
	start = now_ms + transit_ms + TP_MARGIN_MS + unc_ms;
	if (offer_start_ms > start)
		start = offer_start_ms < now_ms + 5000 ? offer_start_ms : now_ms + 5000;
	if (offer_duration_ms && offer_duration_ms < dur)
		dur = offer_duration_ms;
	tp_sched_from(start, clamp32(2 * transit_ms, 50, 250), (uint32_t)dur, out);
}

bool tp_slot_due(const struct tp_sched *s, const struct tp_slot *sl, uint64_t now_ms,
		 uint64_t end_ms)
{
	return !sl->done && !sl->open && sl->tries < s->max_tries && now_ms < end_ms;
}

/* ---- the punch ---- */

struct tp_target {
	struct tcp_punch *tp;
	struct sockaddr_storage addr;
	int fd;
	struct tp_slot slot;
};

struct tcp_punch {
	struct warp_loop *loop;
	int lfd;
	struct sockaddr_storage local;
	const struct tp_ops *ops;
	void *user;
	struct warp_timer *timer;
	struct tp_sched sched;
	bool running;
	uint64_t end_ms;
	unsigned int ntargets;
	struct tp_target t[TP_MAX_TARGETS];
	unsigned int tries;
	int last_err;
	/* Accepted before the peer's endpoints were known (an open host's listener can be
	 * reached before the answer arrives): matched at the next tick. */
	unsigned int nheld;
	struct {
		int fd;
		struct sockaddr_storage peer;
	} held[TP_MAX_TARGETS];
};

static struct tp_target *match_peer(struct tcp_punch *tp, const struct sockaddr *peer)
{
	for (unsigned int i = 0; i < tp->ntargets; i++)
		if (warp_ep_equal((struct sockaddr *)&tp->t[i].addr, peer))
			return &tp->t[i];
	for (unsigned int i = 0; i < tp->ntargets; i++)
		if (warp_ep_addr_equal((struct sockaddr *)&tp->t[i].addr, peer))
			return &tp->t[i];
	return NULL;
}

static void target_close(struct tp_target *t)
{
	if (t->fd < 0)
		return;
	warp_loop_del_fd(t->tp->loop, t->fd);
	close(t->fd);
	t->fd = -1;
	t->slot.open = false;
}

static void on_connect(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct tp_target *t = user;
	struct tcp_punch *tp = t->tp;
	struct sockaddr_storage remote;
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr) {
		/* Reset or unreachable: the next tick tries again. */
		tp->last_err = -soerr;
		target_close(t);
		return;
	}
	if (!(events & WARP_EV_WRITE))
		return;
	warp_loop_del_fd(loop, fd);
	t->fd = -1;
	t->slot.open = false;
	t->slot.done = true;
	remote = t->addr; /* the callback may free the punch */
	tp->ops->connected(tp, fd, (struct sockaddr *)&remote, tp->user);
}

static void target_connect(struct tp_target *t)
{
	struct tcp_punch *tp = t->tp;
	const struct sockaddr *ra = (struct sockaddr *)&t->addr;
	int fd, err;

	t->slot.tries++;
	tp->tries++;
	fd = warp_sock_tcp((struct sockaddr *)&tp->local, SOCK_FLAGS);
	if (fd < 0) {
		tp->last_err = fd;
		return;
	}
	if (connect(fd, ra, warp_ep_len(ra)) < 0 && errno != EINPROGRESS) {
		tp->last_err = -errno;
		close(fd);
		return;
	}
	err = warp_loop_add_fd(tp->loop, fd, WARP_EV_WRITE, on_connect, t);
	if (err) {
		tp->last_err = err;
		close(fd);
		return;
	}
	t->fd = fd;
	t->slot.open = true;
}

static void on_tick(struct warp_timer *timer, void *user)
{
	struct tcp_punch *tp = user;
	uint64_t now = warp_time_ms(), next;

	if (!tp->running) {
		tp->running = true;
		tp->end_ms = now + tp->sched.duration_ms;
	}
	while (tp->nheld) {
		struct sockaddr_storage peer = tp->held[--tp->nheld].peer;
		struct tp_target *match = match_peer(tp, (struct sockaddr *)&peer);
		int fd = tp->held[tp->nheld].fd;

		if (!match || match->slot.done) {
			close(fd);
			continue;
		}
		target_close(match);
		match->slot.done = true;
		warp_timer_arm_ms(tp->timer, 0); /* the rest of the tick next */
		tp->ops->connected(tp, fd, (struct sockaddr *)&peer, tp->user);
		return;
	}
	for (unsigned int i = 0; i < tp->ntargets; i++)
		if (tp_slot_due(&tp->sched, &tp->t[i].slot, now, tp->end_ms))
			target_connect(&tp->t[i]);
	if (now >= tp->end_ms) {
		for (unsigned int i = 0; i < tp->ntargets; i++)
			target_close(&tp->t[i]);
		tp->running = false;
		if (tp_pending(tp))
			tp->ops->ended(tp, tp->user);
		return;
	}
	next = tp->sched.interval_ms;
	if (now + next > tp->end_ms)
		next = tp->end_ms - now;
	warp_timer_arm_ms(tp->timer, next);
}

/* A peer SYN that found no connect socket of ours (between retries, before our start, or an
 * open peer's unpredicted port): take it if it comes from the peer. */
static void on_accept(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct tcp_punch *tp = user;
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	struct tp_target *match;
	int c;

	c = accept4(fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (c < 0)
		return;
	warp_ep_unmap(&peer);
	match = match_peer(tp, (struct sockaddr *)&peer);
	if (!match && !tp->ntargets && tp->nheld < TP_MAX_TARGETS) {
		tp->held[tp->nheld].fd = c;
		tp->held[tp->nheld++].peer = peer;
		return;
	}
	if (!match) {
		close(c);
		return;
	}
	target_close(match);
	match->slot.done = true;
	tp->ops->connected(tp, c, (struct sockaddr *)&peer, tp->user);
}

struct tcp_punch *tp_new(struct warp_loop *loop, int family, const struct tp_ops *ops, void *user)
{
	struct tcp_punch *tp = calloc(1, sizeof(*tp));
	struct sockaddr_storage any = { 0 };
	int err = -ENOMEM;

	if (!tp)
		goto out;
	tp->loop = loop;
	tp->ops = ops;
	tp->user = user;
	tp->lfd = -1;
	for (unsigned int i = 0; i < TP_MAX_TARGETS; i++) {
		tp->t[i].tp = tp;
		tp->t[i].fd = -1;
	}
	tp->timer = warp_timer_new(loop, on_tick, tp);
	if (!tp->timer)
		goto out;
	any.ss_family = (sa_family_t)family;
	/* Port 0: the kernel picks a port nobody else uses. */
	tp->lfd = warp_sock_tcp((struct sockaddr *)&any, SOCK_FLAGS | WARP_SOCK_LISTEN);
	if (tp->lfd < 0) {
		err = tp->lfd;
		goto out;
	}
	err = warp_sock_local(tp->lfd, &tp->local);
	if (!err)
		err = warp_loop_add_fd(loop, tp->lfd, WARP_EV_READ, on_accept, tp);
	if (err) {
		close(tp->lfd);
		tp->lfd = -1;
		goto out;
	}
	return tp;
out:
	if (tp) {
		warp_timer_free(tp->timer);
		free(tp);
	}
	errno = -err;
	return NULL;
}

void tp_free(struct tcp_punch *tp)
{
	if (!tp)
		return;
	for (unsigned int i = 0; i < tp->ntargets; i++)
		target_close(&tp->t[i]);
	for (unsigned int i = 0; i < tp->nheld; i++)
		close(tp->held[i].fd);
	if (tp->lfd >= 0) {
		warp_loop_del_fd(tp->loop, tp->lfd);
		close(tp->lfd);
	}
	warp_timer_free(tp->timer);
	free(tp);
}

const struct sockaddr *tp_local(const struct tcp_punch *tp)
{
	return (const struct sockaddr *)&tp->local;
}

int tp_add_target(struct tcp_punch *tp, const struct sockaddr *remote)
{
	if (remote->sa_family != tp->local.ss_family || !warp_ep_port(remote))
		return -EAFNOSUPPORT;
	for (unsigned int i = 0; i < tp->ntargets; i++)
		if (warp_ep_equal((struct sockaddr *)&tp->t[i].addr, remote))
			return 0;
	if (tp->ntargets >= TP_MAX_TARGETS)
		return -ENOSPC;
	memcpy(&tp->t[tp->ntargets++].addr, remote, warp_ep_len(remote));
	return 0;
}

unsigned int tp_ntargets(const struct tcp_punch *tp)
{
	return tp->ntargets;
}

void tp_start(struct tcp_punch *tp, const struct tp_sched *s, uint64_t delay_ms)
{
	tp->sched = *s;
	warp_timer_arm_ms(tp->timer, delay_ms);
}

unsigned int tp_pending(const struct tcp_punch *tp)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < tp->ntargets; i++)
		n += !tp->t[i].slot.done;
	return n;
}

void tp_stats(const struct tcp_punch *tp, unsigned int *tries, int *last_err)
{
	*tries = tp->tries;
	*last_err = tp->last_err;
}

/* ---- STUN over TCP from the punch port ---- */

struct tp_stun {
	struct warp_loop *loop;
	struct warp_stun_client *client;
	struct warp_timer *timer;
	int fd;
	bool sent, answered;
	int status;
	uint64_t deadline_ms;
	struct sockaddr_storage local, server, mapped;
	tp_stun_cb cb;
	void *user;
	size_t in_len;
	uint8_t in[1024];
};

static void stun_free(struct tp_stun *st)
{
	if (st->fd >= 0) {
		warp_loop_del_fd(st->loop, st->fd);
		close(st->fd);
	}
	warp_timer_free(st->timer);
	warp_stun_client_free(st->client);
	free(st);
}

static void stun_finish(struct tp_stun *st, int err)
{
	/* Close before the callback: the caller binds the same port next. */
	if (st->fd >= 0) {
		warp_loop_del_fd(st->loop, st->fd);
		close(st->fd);
		st->fd = -1;
	}
	st->cb(err, err ? NULL : (struct sockaddr *)&st->mapped, st->user);
	stun_free(st);
}

static void stun_result(const struct warp_stun_result *res, void *user)
{
	struct tp_stun *st = user;

	st->answered = true;
	st->status = res->status	      ? res->status
		     : res->error_code	      ? -ECONNREFUSED
		     : !res->mapped.ss_family ? -WARP_EMALFORMED
					      : 0;
	if (!st->status) {
		st->mapped = res->mapped;
		warp_ep_unmap(&st->mapped);
	}
}

static void stun_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct tp_stun *st = user;
	struct warp_stun_tx tx;
	uint64_t now;
	ssize_t n;
	int flen;

	if (!st->sent) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr) {
			stun_finish(st, -soerr);
			return;
		}
		if (!(events & WARP_EV_WRITE))
			return;
		if (!warp_stun_client_poll_transmit(st->client, warp_time_ns(), &tx)) {
			stun_finish(st, -EPROTO);
			return;
		}
		/* A fresh connection's send buffer takes a ~30-byte request whole. */
		n = send(fd, tx.data, tx.len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n != (ssize_t)tx.len) {
			stun_finish(st, n < 0 ? -errno : -EIO);
			return;
		}
		st->sent = true;
		warp_loop_mod_fd(loop, fd, WARP_EV_READ);
		now = warp_time_ms();
		warp_timer_arm_ms(st->timer, st->deadline_ms > now ? st->deadline_ms - now : 0);
		return;
	}
	n = recv(fd, st->in + st->in_len, sizeof(st->in) - st->in_len, MSG_DONTWAIT);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		stun_finish(st, n < 0 ? -errno : -WARP_ECLOSED);
		return;
	}
	st->in_len += (size_t)n;
	flen = warp_stun_frame_len(st->in, st->in_len);
	if (flen < 0 || (size_t)flen > sizeof(st->in)) {
		stun_finish(st, -WARP_EMALFORMED);
		return;
	}
	if (!flen || (size_t)flen > st->in_len)
		return;
	warp_stun_client_handle_input(st->client, 0, st->in, (size_t)flen,
				      (struct sockaddr *)&st->server, warp_time_ns());
	stun_finish(st, st->answered ? st->status : -WARP_EMALFORMED);
}

static int stun_connect(struct tp_stun *st)
{
	int err;

	if (st->fd >= 0) {
		warp_loop_del_fd(st->loop, st->fd);
		close(st->fd);
	}
	st->fd = warp_sock_tcp((struct sockaddr *)&st->local, SOCK_FLAGS);
	if (st->fd < 0)
		return st->fd;
	if (connect(st->fd, (struct sockaddr *)&st->server,
		    warp_ep_len((struct sockaddr *)&st->server)) < 0 &&
	    errno != EINPROGRESS)
		err = -errno;
	else
		err = warp_loop_add_fd(st->loop, st->fd, WARP_EV_WRITE, stun_io, st);
	if (err) {
		close(st->fd);
		st->fd = -1;
	}
	return err;
}

static void stun_tick(struct warp_timer *t, void *user)
{
	struct tp_stun *st = user;
	uint64_t now = warp_time_ms();
	int err;

	if (now >= st->deadline_ms) {
		stun_finish(st, -ETIMEDOUT);
		return;
	}
	/* A lost SYN would wait for the kernel's 1 s retransmission: send a fresh one.  Same
	 * 4-tuple, so the NAT keeps the mapping (a sequential NAT does not step). */
	if (!st->sent) {
		err = stun_connect(st);
		if (err) {
			stun_finish(st, err);
			return;
		}
	}
	warp_timer_arm_ms(st->timer, st->sent || st->deadline_ms - now < TP_STUN_RESYN_MS
					     ? st->deadline_ms - now
					     : TP_STUN_RESYN_MS);
}

struct tp_stun *tp_stun_start(struct warp_loop *loop, const struct sockaddr *local,
			      const struct sockaddr *server, uint32_t timeout_ms, tp_stun_cb cb,
			      void *user)
{
	struct warp_stun_client_cfg cfg = { .ti_ms = timeout_ms };
	struct warp_stun_req req = { 0 };
	struct tp_stun *st = calloc(1, sizeof(*st));
	int err = -ENOMEM;

	if (!st)
		goto out;
	st->loop = loop;
	st->fd = -1;
	st->cb = cb;
	st->user = user;
	memcpy(&st->server, server, warp_ep_len(server));
	memcpy(&st->local, local, warp_ep_len(local));
	st->client = warp_stun_client_new(&cfg);
	st->timer = warp_timer_new(loop, stun_tick, st);
	if (!st->client || !st->timer)
		goto out;
	req.transport = WARP_STUN_TCP;
	req.dest = (struct sockaddr *)&st->server;
	req.cb = stun_result;
	req.user = st;
	err = warp_stun_client_start(st->client, &req, warp_time_ns(), NULL);
	if (err)
		goto out;
	err = stun_connect(st);
	if (err)
		goto out;
	st->deadline_ms = warp_time_ms() + timeout_ms;
	warp_timer_arm_ms(st->timer, timeout_ms < TP_STUN_RESYN_MS ? timeout_ms : TP_STUN_RESYN_MS);
	return st;
out:
	if (st)
		stun_free(st);
	errno = -err;
	return NULL;
}

void tp_stun_cancel(struct tp_stun *st)
{
	if (st)
		stun_free(st);
}
