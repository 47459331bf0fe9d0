// SPDX-License-Identifier: MIT
/*
 * The thin I/O layer: worker threads, each with its own warp_loop, its own UDP and TCP sockets
 * on every listen address (SO_REUSEPORT spreads senders over the workers) and its own database
 * connection.  UDP datagrams are read and answered in batches (recvmmsg/sendmmsg); TCP carries
 * 2-byte length-prefixed frames for replies too large for a datagram.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <warpgate/error.h>
#include <warpgate/loop.h>

#define LOG_COMPONENT "namebumpd"
#include "core/log.h"
#include "net.h"

#define TCP_MAX_CONNS 256
#define TCP_IDLE_MS   10000
#define UDP_ROUNDS    8

struct tcp_conn {
	struct nb_worker *w;
	int fd;
	struct nb_ip src;
	uint8_t rbuf[2 + WN_MAX_PACKET];
	size_t rlen;
	uint8_t wbuf[4 * (2 + WN_MAX_PACKET)];
	size_t wlen;
	struct warp_timer *idle;
	struct tcp_conn *next, **pprev;
};

/* A batch of datagrams from one socket, in flight until its replies are sent. */
struct udp_batch {
	struct nb_batch b;
	struct nb_worker *w;
	int fd;
	bool busy;
	uint8_t (*rx)[WN_MAX_PACKET];
	struct sockaddr_storage from[WN_MAX_BATCH];
	/* the address each datagram was sent to, so the answer leaves from it (a wildcard
	 * listener on a host with several addresses would otherwise answer from another one,
	 * which clients do not accept) */
	union {
		struct cmsghdr align;
		uint8_t buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
	} ctl[WN_MAX_BATCH];
	size_t ctl_len[WN_MAX_BATCH];
	struct udp_batch *next; /* committer queue */
};

#define UDP_BATCHES 4

/*
 * The committer: one thread with its own database connection that commits the writes of every
 * batch queued while it was busy in one transaction.  Workers go on reading and verifying while
 * a commit (and its fsync) runs, so under load each fsync covers more writes.
 */
struct nb_committer {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct udp_batch *head, **tail;
	bool stop, running;
	struct nb_core core;
};

struct nb_worker {
	int idx;
	struct nb_shared *sh;
	struct nb_core core;
	struct nb_committer *committer;
	struct warp_loop *loop;
	int udp[NB_MAX_LISTEN], tcp[NB_MAX_LISTEN];
	int n;
	struct nb_slot *slots; /* UDP_BATCHES * WN_MAX_BATCH, then one for TCP */
	uint8_t (*rx)[WN_MAX_PACKET];
	struct udp_batch batches[UDP_BATCHES];
	bool paused;
	struct warp_timer *tick;
	struct tcp_conn *conns;
	int n_conns;
	pthread_t thread;
	bool running;
};

int nb_parse_hostport(const char *spec, uint16_t default_port, struct sockaddr_storage *ss,
		      socklen_t *sslen)
{
	char host[80], port[8];
	const char *colon;
	struct addrinfo hints = { 0 }, *ai = NULL;
	size_t hl;
	int rc;

	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');

		if (!end)
			return -WARP_EMALFORMED;
		hl = (size_t)(end - spec - 1);
		if (hl >= sizeof(host))
			return -WARP_EMALFORMED;
		memcpy(host, spec + 1, hl);
		host[hl] = '\0';
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] && !colon)
			return -WARP_EMALFORMED;
	} else {
		colon = strrchr(spec, ':');
		if (colon && strchr(spec, ':') != colon)
			colon = NULL; /* bare IPv6 address without a port */
		hl = colon ? (size_t)(colon - spec) : strlen(spec);
		if (hl >= sizeof(host))
			return -WARP_EMALFORMED;
		memcpy(host, spec, hl);
		host[hl] = '\0';
	}
	if (colon) {
		char *end;
		long p = strtol(colon + 1, &end, 10);

		if (!colon[1] || *end || p < 0 || p > 65535)
			return -WARP_EMALFORMED;
		snprintf(port, sizeof(port), "%ld", p);
	} else {
		snprintf(port, sizeof(port), "%u", default_port);
	}
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (rc || !ai)
		return -WARP_EMALFORMED;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sslen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

void nb_sockaddr_ip(const struct sockaddr_storage *ss, struct nb_ip *ip)
{
	memset(ip, 0, sizeof(*ip));
	if (ss->ss_family == AF_INET) {
		ip->af = 4;
		memcpy(ip->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
		return;
	}
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

	if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		ip->af = 4;
		memcpy(ip->addr, s6->sin6_addr.s6_addr + 12, 4);
	} else {
		ip->af = 6;
		memcpy(ip->addr, s6->sin6_addr.s6_addr, 16);
	}
}

static int open_sock(const struct sockaddr_storage *ss, socklen_t len, int type)
{
	int one = 1, fd = socket(ss->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (type == SOCK_DGRAM) {
		int sz = 4 << 20;

		if (ss->ss_family == AF_INET)
			setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
		else
			setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));

		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	if (bind(fd, (const struct sockaddr *)ss, len) < 0 ||
	    (type == SOCK_STREAM && listen(fd, 128) < 0)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static uint16_t *port_of(struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET ? &((struct sockaddr_in *)ss)->sin_port
					: &((struct sockaddr_in6 *)ss)->sin6_port;
}

/* ---- UDP ---- */

/*
 * Turns the packet-info control message of a received datagram into the one that makes the
 * answer leave from the address the request was sent to; returns its length (0: none).
 * buf holds the received control data (copied there with the slot) and is rewritten.
 */
static size_t reply_source(const struct msghdr *mh, uint8_t *buf)
{
	struct msghdr tmp = *mh;
	struct cmsghdr *c;
	struct in_pktinfo pi;
	struct in6_pktinfo pi6;

	tmp.msg_control = buf;
	for (c = CMSG_FIRSTHDR(&tmp); c; c = CMSG_NXTHDR(&tmp, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			pi.ipi_spec_dst = pi.ipi_addr;
			pi.ipi_ifindex = 0;
			c = (struct cmsghdr *)buf;
			c->cmsg_level = IPPROTO_IP;
			c->cmsg_type = IP_PKTINFO;
			c->cmsg_len = CMSG_LEN(sizeof(pi));
			memcpy(CMSG_DATA(c), &pi, sizeof(pi));
			return CMSG_SPACE(sizeof(pi));
		}
		if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
			memcpy(&pi6, CMSG_DATA(c), sizeof(pi6));
			c = (struct cmsghdr *)buf;
			c->cmsg_level = IPPROTO_IPV6;
			c->cmsg_type = IPV6_PKTINFO;
			c->cmsg_len = CMSG_LEN(sizeof(pi6));
			memcpy(CMSG_DATA(c), &pi6, sizeof(pi6));
			return CMSG_SPACE(sizeof(pi6));
		}
	}
	return 0;
}

static void set_reading(struct nb_worker *w, bool on)
{
	if (w->paused == !on)
		return;
	w->paused = !on;
	for (int i = 0; i < w->n; i++)
		warp_loop_mod_fd(w->loop, w->udp[i], on ? WARP_EV_READ : 0);
}

static void batch_send(struct udp_batch *ub)
{
	struct nb_worker *w = ub->w;
	struct mmsghdr msgs[WN_MAX_BATCH];
	struct iovec iov[WN_MAX_BATCH];
	unsigned int m = 0;

	nb_core_finish(&w->core, &ub->b);
	for (size_t i = 0; i < ub->b.n; i++) {
		struct nb_slot *s = &ub->b.slots[i];

		if (!s->send)
			continue;
		iov[m].iov_base = s->out;
		iov[m].iov_len = s->out_len;
		memset(&msgs[m].msg_hdr, 0, sizeof(msgs[m].msg_hdr));
		msgs[m].msg_hdr.msg_iov = &iov[m];
		msgs[m].msg_hdr.msg_iovlen = 1;
		msgs[m].msg_hdr.msg_name = &ub->from[i];
		msgs[m].msg_hdr.msg_namelen = ub->from[i].ss_family == AF_INET
						      ? sizeof(struct sockaddr_in)
						      : sizeof(struct sockaddr_in6);
		if (ub->ctl_len[i]) {
			msgs[m].msg_hdr.msg_control = ub->ctl[i].buf;
			msgs[m].msg_hdr.msg_controllen = ub->ctl_len[i];
		}
		m++;
	}
	for (unsigned int off = 0; off < m;) {
		int sent = sendmmsg(ub->fd, msgs + off, m - off, 0);

		if (sent <= 0) {
			if (sent < 0 && errno == EINTR)
				continue;
			break; /* full buffer: UDP may drop, the client retries */
		}
		off += (unsigned int)sent;
	}
	ub->busy = false;
}

/* Back on the worker's loop once the committer has made the batch's writes durable. */
static void batch_committed(void *user)
{
	struct udp_batch *ub = user;

	batch_send(ub);
	set_reading(ub->w, true);
}

static void committer_submit(struct nb_committer *cm, struct udp_batch *ub)
{
	pthread_mutex_lock(&cm->lock);
	ub->next = NULL;
	*cm->tail = ub;
	cm->tail = &ub->next;
	pthread_cond_signal(&cm->cond);
	pthread_mutex_unlock(&cm->lock);
}

static void *committer_main(void *arg)
{
	struct nb_committer *cm = arg;
	struct nb_batch *bs[NB_MAX_THREADS * UDP_BATCHES];
	struct udp_batch *ubs[NB_MAX_THREADS * UDP_BATCHES];

	for (;;) {
		struct udp_batch *list;
		size_t n = 0;

		pthread_mutex_lock(&cm->lock);
		while (!cm->head && !cm->stop)
			pthread_cond_wait(&cm->cond, &cm->lock);
		list = cm->head;
		cm->head = NULL;
		cm->tail = &cm->head;
		pthread_mutex_unlock(&cm->lock);
		if (!list)
			break; /* stopping, and nothing left */
		for (; list; list = list->next) {
			ubs[n] = list;
			bs[n++] = &list->b;
		}
		nb_core_commit(&cm->core, bs, n);
		for (size_t i = 0; i < n; i++)
			if (warp_loop_post(ubs[i]->w->loop, batch_committed, ubs[i]))
				ubs[i]->busy = false; /* out of memory: the client will retry */
	}
	return NULL;
}

static void batch_committed_sync(struct nb_worker *w, struct udp_batch *ub)
{
	struct nb_batch *b = &ub->b;

	nb_core_commit(&w->core, &b, 1);
	batch_send(ub);
}

static void udp_read(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct nb_worker *w = user;
	struct mmsghdr msgs[WN_MAX_BATCH];
	struct iovec iov[WN_MAX_BATCH];
	int n;

	for (int round = 0; round < UDP_ROUNDS; round++) {
		struct udp_batch *ub = NULL;
		size_t k = 0;

		for (int i = 0; i < UDP_BATCHES && !ub; i++)
			if (!w->batches[i].busy)
				ub = &w->batches[i];
		if (!ub) {
			/* every batch waits for a commit: let the socket buffer hold the rest */
			set_reading(w, false);
			return;
		}
		memset(msgs, 0, sizeof(msgs));
		for (int i = 0; i < WN_MAX_BATCH; i++) {
			iov[i].iov_base = ub->rx[i];
			iov[i].iov_len = WN_MAX_PACKET;
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &ub->from[i];
			msgs[i].msg_hdr.msg_namelen = sizeof(ub->from[i]);
			msgs[i].msg_hdr.msg_control = ub->ctl[i].buf;
			msgs[i].msg_hdr.msg_controllen = sizeof(ub->ctl[i].buf);
		}
		n = recvmmsg(fd, msgs, WN_MAX_BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		for (int i = 0; i < n; i++) {
			struct nb_slot *s = &ub->b.slots[k];

			if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
				continue; /* larger than any valid request */
			s->in = ub->rx[i];
			s->in_len = msgs[i].msg_len;
			s->udp = true;
			if (k != (size_t)i) {
				ub->from[k] = ub->from[i];
				ub->ctl[k] = ub->ctl[i];
			}
			ub->ctl_len[k] = reply_source(&msgs[i].msg_hdr, ub->ctl[k].buf);
			nb_sockaddr_ip(&ub->from[k], &s->src);
			k++;
		}
		ub->b.n = k;
		ub->fd = fd;
		ub->busy = true;
		if (w->committer && nb_core_prepare(&w->core, &ub->b))
			committer_submit(w->committer, ub);
		else if (!w->committer && nb_core_prepare(&w->core, &ub->b))
			batch_committed_sync(w, ub);
		else
			batch_send(ub);
		if (n < WN_MAX_BATCH)
			return;
	}
}

/* ---- TCP ---- */

static void conn_close(struct tcp_conn *c)
{
	struct nb_worker *w = c->w;

	warp_loop_del_fd(w->loop, c->fd);
	close(c->fd);
	warp_timer_free(c->idle);
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	w->n_conns--;
	free(c);
}

static void conn_idle(struct warp_timer *t, void *user)
{
	conn_close(user);
}

static int conn_flush(struct tcp_conn *c)
{
	while (c->wlen) {
		ssize_t n = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -errno;
		}
		memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
		c->wlen -= (size_t)n;
	}
	warp_loop_mod_fd(c->w->loop, c->fd, c->wlen ? WARP_EV_READ | WARP_EV_WRITE : WARP_EV_READ);
	return 0;
}

static void conn_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct tcp_conn *c = user;
	struct nb_worker *w = c->w;

	if ((events & WARP_EV_WRITE) && conn_flush(c)) {
		conn_close(c);
		return;
	}
	if (!(events & WARP_EV_READ))
		return;
	/* stop reading while replies pile up: the peer must read them first */
	if (c->wlen > sizeof(c->wbuf) - (2 + WN_MAX_PACKET))
		return;
	ssize_t n = recv(fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(c);
		return;
	}
	if (n < 0)
		return;
	c->rlen += (size_t)n;
	warp_timer_arm_ms(c->idle, TCP_IDLE_MS);
	while (c->rlen >= 2) {
		size_t flen = warp_get_u16(c->rbuf);
		struct nb_slot *s = &w->slots[UDP_BATCHES * WN_MAX_BATCH];

		if (flen == 0 || flen > WN_MAX_PACKET) {
			conn_close(c);
			return;
		}
		if (c->rlen < 2 + flen)
			break;
		s->in = c->rbuf + 2;
		s->in_len = flen;
		s->udp = false;
		s->src = c->src;
		nb_core_run(&w->core, s, 1);
		if (s->send) {
			if (c->wlen + 2 + s->out_len > sizeof(c->wbuf)) {
				conn_close(c);
				return;
			}
			warp_put_u16(c->wbuf + c->wlen, (uint16_t)s->out_len);
			memcpy(c->wbuf + c->wlen + 2, s->out, s->out_len);
			c->wlen += 2 + s->out_len;
		}
		memmove(c->rbuf, c->rbuf + 2 + flen, c->rlen - 2 - flen);
		c->rlen -= 2 + flen;
		if (c->wlen > sizeof(c->wbuf) - (2 + WN_MAX_PACKET))
			break;
	}
	if (conn_flush(c))
		conn_close(c);
}

static void tcp_accept(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct nb_worker *w = user;

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int one = 1,
		    cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct tcp_conn *c;

		if (cfd < 0)
			return;
		if (w->n_conns >= TCP_MAX_CONNS) {
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->w = w;
		c->fd = cfd;
		nb_sockaddr_ip(&ss, &c->src);
		c->idle = warp_timer_new(loop, conn_idle, c);
		if (!c->idle || warp_loop_add_fd(loop, cfd, WARP_EV_READ, conn_io, c)) {
			warp_timer_free(c->idle);
			close(cfd);
			free(c);
			continue;
		}
		warp_timer_arm_ms(c->idle, TCP_IDLE_MS);
		c->next = w->conns;
		if (w->conns)
			w->conns->pprev = &c->next;
		c->pprev = &w->conns;
		w->conns = c;
		w->n_conns++;
	}
}

static void tick(struct warp_timer *t, void *user)
{
	struct nb_worker *w = user;

	if (w->idx == 0)
		nb_core_tick(&w->core);
	warp_timer_arm_ms(t, 1000);
}

/* ---- workers ---- */

static void worker_free(struct nb_worker *w)
{
	if (!w)
		return;
	while (w->conns)
		conn_close(w->conns);
	for (int i = 0; i < w->n; i++) {
		if (w->udp[i] >= 0)
			close(w->udp[i]);
		if (w->tcp[i] >= 0)
			close(w->tcp[i]);
	}
	warp_timer_free(w->tick);
	nb_core_fini(&w->core);
	warp_loop_free(w->loop);
	free(w->slots);
	free(w->rx);
	free(w);
}

static struct nb_worker *worker_new(struct nb_shared *sh, int idx)
{
	struct nb_worker *w = calloc(1, sizeof(*w));
	int err;

	if (!w)
		return NULL;
	w->idx = idx;
	w->sh = sh;
	for (int i = 0; i < NB_MAX_LISTEN; i++)
		w->udp[i] = w->tcp[i] = -1;
	w->loop = warp_loop_new();
	w->slots = calloc(UDP_BATCHES * WN_MAX_BATCH + 1, sizeof(*w->slots));
	w->rx = calloc(UDP_BATCHES * WN_MAX_BATCH, sizeof(*w->rx));
	if (!w->loop || !w->slots || !w->rx)
		goto fail;
	for (int i = 0; i < UDP_BATCHES; i++) {
		w->batches[i].w = w;
		w->batches[i].b.slots = w->slots + i * WN_MAX_BATCH;
		w->batches[i].rx = w->rx + i * WN_MAX_BATCH;
	}
	err = nb_core_init(&w->core, sh);
	if (err) {
		errno = -err;
		goto fail;
	}
	w->tick = warp_timer_new(w->loop, tick, w);
	if (!w->tick)
		goto fail;
	warp_timer_arm_ms(w->tick, 10);
	return w;
fail:
	err = errno;
	worker_free(w);
	errno = err ? err : ENOMEM;
	return NULL;
}

static void *worker_main(void *arg)
{
	struct nb_worker *w = arg;

	warp_loop_run(w->loop);
	return NULL;
}

struct nb_server {
	struct nb_shared *sh;
	struct nb_worker *w[NB_MAX_THREADS];
	int n;
	struct nb_committer cm;
	bool cm_init;
	/* WAL checkpoints, off the commit path */
	pthread_t maint;
	bool maint_running;
	struct nb_store *maint_store;
	pthread_mutex_t maint_lock;
	pthread_cond_t maint_cond;
	bool maint_stop;
};

static void *maint_main(void *arg)
{
	struct nb_server *srv = arg;

	pthread_mutex_lock(&srv->maint_lock);
	while (!srv->maint_stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&srv->maint_cond, &srv->maint_lock, &ts);
		if (srv->maint_stop)
			break;
		pthread_mutex_unlock(&srv->maint_lock);
		srv->sh->ops->maintain(srv->maint_store);
		pthread_mutex_lock(&srv->maint_lock);
	}
	pthread_mutex_unlock(&srv->maint_lock);
	return NULL;
}

/* Binds UDP then TCP on one address for every worker; port 0 picks one port for all. */
static int bind_all(struct nb_server *srv, const char *spec)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char text[INET6_ADDRSTRLEN];
	int err = nb_parse_hostport(spec, WARP_NAME_PORT, &ss, &len);
	bool any = *port_of(&ss) == 0;

	if (err) {
		pr_err("bad listen address \"%s\"", spec);
		return -WARP_ECONFIG;
	}
	for (int attempt = 0; attempt < (any ? 20 : 1); attempt++) {
		int slot = srv->w[0]->n;

		*port_of(&ss) = any ? 0 : *port_of(&ss);
		for (int i = 0; i < srv->n; i++) {
			struct nb_worker *w = srv->w[i];

			w->udp[slot] = open_sock(&ss, len, SOCK_DGRAM);
			if (w->udp[slot] >= 0 && i == 0 && any) {
				socklen_t l = len;

				getsockname(w->udp[slot], (struct sockaddr *)&ss, &l);
			}
			w->tcp[slot] = w->udp[slot] < 0 ? -1 : open_sock(&ss, len, SOCK_STREAM);
			err = w->udp[slot] < 0 ? w->udp[slot] : w->tcp[slot] < 0 ? w->tcp[slot] : 0;
			if (err)
				break;
		}
		if (!err) {
			for (int i = 0; i < srv->n; i++) {
				struct nb_worker *w = srv->w[i];

				w->n = slot + 1;
				warp_loop_add_fd(w->loop, w->udp[slot], WARP_EV_READ, udp_read, w);
				warp_loop_add_fd(w->loop, w->tcp[slot], WARP_EV_READ, tcp_accept,
						 w);
			}
			if (ss.ss_family == AF_INET)
				inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, text,
					  sizeof(text));
			else
				inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, text,
					  sizeof(text));
			pr_info("listening on %s%s%s:%u (udp, tcp, %d workers)",
				ss.ss_family == AF_INET6 ? "[" : "", text,
				ss.ss_family == AF_INET6 ? "]" : "", ntohs(*port_of(&ss)), srv->n);
			return 0;
		}
		for (int i = 0; i < srv->n; i++) {
			struct nb_worker *w = srv->w[i];

			if (w->udp[slot] >= 0)
				close(w->udp[slot]);
			if (w->tcp[slot] >= 0)
				close(w->tcp[slot]);
			w->udp[slot] = w->tcp[slot] = -1;
		}
	}
	pr_err("cannot listen on %s: %s", spec, warp_strerror(err));
	return err;
}

struct nb_server *nb_server_new(struct nb_shared *sh)
{
	const struct nb_config *cfg = sh->cfg;
	struct nb_server *srv = calloc(1, sizeof(*srv));
	int err = 0;

	if (!srv)
		return NULL;
	srv->sh = sh;
	pthread_mutex_init(&srv->cm.lock, NULL);
	pthread_cond_init(&srv->cm.cond, NULL);
	srv->cm.tail = &srv->cm.head;
	srv->cm_init = true;
	err = nb_core_init(&srv->cm.core, sh);
	if (err)
		goto fail;
	pthread_mutex_init(&srv->maint_lock, NULL);
	pthread_cond_init(&srv->maint_cond, NULL);
	if (sh->ops->maintain) {
		srv->maint_store = sh->ops->open(cfg->db, cfg->sync_full);
		if (!srv->maint_store) {
			err = errno ? -errno : -EIO;
			goto fail;
		}
	}
	for (int i = 0; i < cfg->threads; i++) {
		srv->w[i] = worker_new(sh, i);
		if (!srv->w[i]) {
			err = -errno;
			goto fail;
		}
		srv->w[i]->committer = &srv->cm;
		srv->n++;
	}
	for (int i = 0; i < cfg->n_listen; i++) {
		err = bind_all(srv, cfg->listen[i]);
		if (err)
			goto fail;
	}
	return srv;
fail:
	nb_server_free(srv);
	errno = -err;
	return NULL;
}

int nb_server_start(struct nb_server *srv)
{
	int err = pthread_create(&srv->cm.thread, NULL, committer_main, &srv->cm);

	if (err)
		return -err;
	srv->cm.running = true;
	if (srv->maint_store) {
		err = pthread_create(&srv->maint, NULL, maint_main, srv);
		if (err)
			return -err;
		srv->maint_running = true;
	}
	for (int i = 0; i < srv->n; i++) {
		err = pthread_create(&srv->w[i]->thread, NULL, worker_main, srv->w[i]);
		if (err)
			return -err;
		srv->w[i]->running = true;
	}
	return 0;
}

void nb_server_stop(struct nb_server *srv)
{
	for (int i = 0; i < srv->n; i++)
		if (srv->w[i]->running) {
			warp_loop_stop(srv->w[i]->loop);
			pthread_join(srv->w[i]->thread, NULL);
			srv->w[i]->running = false;
		}
	if (srv->maint_running) {
		pthread_mutex_lock(&srv->maint_lock);
		srv->maint_stop = true;
		pthread_cond_signal(&srv->maint_cond);
		pthread_mutex_unlock(&srv->maint_lock);
		pthread_join(srv->maint, NULL);
		srv->maint_running = false;
	}
	/* after the workers: it drains what they queued (their loops no longer run) */
	if (srv->cm.running) {
		pthread_mutex_lock(&srv->cm.lock);
		srv->cm.stop = true;
		pthread_cond_signal(&srv->cm.cond);
		pthread_mutex_unlock(&srv->cm.lock);
		pthread_join(srv->cm.thread, NULL);
		srv->cm.running = false;
	}
}

void nb_server_free(struct nb_server *srv)
{
	if (!srv)
		return;
	nb_server_stop(srv);
	for (int i = 0; i < srv->n; i++)
		worker_free(srv->w[i]);
	if (srv->cm_init) {
		if (srv->maint_store)
			srv->sh->ops->close(srv->maint_store);
		pthread_mutex_destroy(&srv->maint_lock);
		pthread_cond_destroy(&srv->maint_cond);
		nb_core_fini(&srv->cm.core);
		pthread_mutex_destroy(&srv->cm.lock);
		pthread_cond_destroy(&srv->cm.cond);
	}
	free(srv);
}
