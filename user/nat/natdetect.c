// SPDX-License-Identifier: MIT
/* NAT detection driver: sockets and timers around the sans-IO classifier. */
#include <errno.h>
#include <ifaddrs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "natdetect"
#include "core/log.h"
#include "core/util.h"
#include "nat/natcache.h"
#include "nat/natdetect.h"
#include "nat/sockaddr.h"
#include "nat/stun_io.h"

#define RX_BUF 2048

struct tcp_ctx {
	struct warp_nat_detect *d;
	unsigned int server;
	struct warp_stun_tcp *req;
};

struct warp_nat_detect {
	struct warp_loop *loop;
	struct warp_nat_detect_cfg cfg;
	warp_nat_detect_cb cb;
	void *user;
	struct warp_natclass *nc;
	struct warp_timer *timer;
	struct warp_timer *cache_timer;
	int fds[WARP_NATCLASS_MAX_SOCKS];
	unsigned int nfds;
	struct tcp_ctx tcp[WARP_NATCLASS_MAX_SERVERS];
	struct warp_nat_report cached;
	uint64_t cached_age;
	bool finished;
	uint8_t buf[RX_BUF];
};

void warp_nat_detect_cfg_default(struct warp_nat_detect_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	warp_natclass_cfg_default(&cfg->cls);
	cfg->n_delta_random = 4;
	cfg->n_delta_seq = 4;
	cfg->tcp_timeout_ms = 3000;
}

static void close_all(struct warp_nat_detect *d)
{
	for (unsigned int i = 0; i < d->nfds; i++) {
		if (d->fds[i] < 0)
			continue;
		warp_loop_del_fd(d->loop, d->fds[i]);
		close(d->fds[i]);
		d->fds[i] = -1;
	}
	for (unsigned int s = 0; s < WARP_NATCLASS_MAX_SERVERS; s++) {
		warp_stun_tcp_cancel(d->tcp[s].req);
		d->tcp[s].req = NULL;
	}
}

void warp_nat_detect_free(struct warp_nat_detect *d)
{
	if (!d)
		return;
	close_all(d);
	warp_timer_free(d->timer);
	warp_timer_free(d->cache_timer);
	warp_natclass_free(d->nc);
	free(d);
}

/* Runs the final callback; d may be gone afterwards. */
static void finish(struct warp_nat_detect *d, int status)
{
	struct warp_nat_report *r = NULL;

	d->finished = true;
	warp_timer_cancel(d->timer);
	warp_timer_cancel(d->cache_timer);
	if (!status) {
		r = (struct warp_nat_report *)warp_natclass_report(d->nc);
		r->measured_at_ms = warp_wall_ms();
		if (d->cfg.cache_path && d->cfg.fingerprint) {
			int err = warp_natcache_store(d->cfg.cache_path, d->cfg.fingerprint,
						      d->cfg.fingerprint_len, r, r->measured_at_ms);

			if (err)
				pr_warn("cannot update the NAT cache %s: %s", d->cfg.cache_path,
					warp_strerror(err));
		}
	}
	close_all(d);
	d->cb(d, r, status, false, 0, d->user);
}

static void tcp_done(const struct warp_stun_result *res, void *user);
static bool pump(struct warp_nat_detect *d);

static bool start_tcp(struct warp_nat_detect *d, const struct warp_natclass_tcp_probe *p)
{
	struct tcp_ctx *t = &d->tcp[p->server];
	struct warp_stun_client_cfg ccfg = { .ti_ms = d->cfg.tcp_timeout_ms };
	struct warp_stun_req req = {
		.dest = (const struct sockaddr *)&p->dest,
		.software = d->cfg.cls.software,
		.cb = tcp_done,
		.user = t,
	};
	const struct sockaddr *bind_addr =
		d->cfg.bind.ss_family ? (struct sockaddr *)&d->cfg.bind : NULL;

	t->d = d;
	t->server = p->server;
	t->req = warp_stun_tcp_request(d->loop, &ccfg, bind_addr, &req);
	if (!t->req) {
		warp_natclass_tcp_result(d->nc, p->server, -errno, NULL, 0, warp_time_ns());
		return false;
	}
	return true;
}

static void tcp_done(const struct warp_stun_result *res, void *user)
{
	struct tcp_ctx *t = user;
	struct warp_nat_detect *d = t->d;
	int status = res->status;

	t->req = NULL; /* it frees itself */
	if (!status && (res->error_code || res->mapped.ss_family == AF_UNSPEC))
		status = -WARP_EMALFORMED;
	warp_natclass_tcp_result(d->nc, t->server, status,
				 status ? NULL : (const struct sockaddr *)&res->mapped, res->rtt_ns,
				 warp_time_ns());
	pump(d);
}

/* Sends what is due, starts TCP probes, re-arms; true when the run finished (d may be gone). */
static bool pump(struct warp_nat_detect *d)
{
	struct warp_stun_tx tx;
	struct warp_natclass_tcp_probe tp;
	uint64_t now = warp_time_ns(), next;

	if (d->finished)
		return true;
	while (warp_natclass_poll_transmit(d->nc, now, &tx)) {
		const struct sockaddr *sa = (const struct sockaddr *)&tx.dest;

		if (tx.sock < 0 || (unsigned int)tx.sock >= d->nfds)
			continue;
		if (sendto(d->fds[tx.sock], tx.data, tx.len, MSG_DONTWAIT, sa, nat_sa_len(sa)) <
		    0) {
			char a[NAT_SA_STRLEN];

			pr_debug("sendto %s: %s", nat_sa_str(sa, a, sizeof(a)), strerror(errno));
		}
	}
	while (warp_natclass_poll_tcp(d->nc, &tp))
		start_tcp(d, &tp);
	if (warp_natclass_done(d->nc)) {
		finish(d, 0);
		return true;
	}
	next = warp_natclass_next_deadline(d->nc);
	if (next != WARP_STUN_NEVER)
		warp_timer_arm_at(d->timer, next);
	return false;
}

static void on_timer(struct warp_timer *timer, void *user)
{
	struct warp_nat_detect *d = user;

	warp_natclass_handle_timeout(d->nc, warp_time_ns());
	pump(d);
}

static void on_cached(struct warp_timer *timer, void *user)
{
	struct warp_nat_detect *d = user;

	d->cb(d, &d->cached, 0, true, d->cached_age, d->user);
}

static void on_readable(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_nat_detect *d = user;
	int tag = -1;

	for (unsigned int i = 0; i < d->nfds; i++)
		if (d->fds[i] == fd)
			tag = (int)i;
	if (tag < 0)
		return;
	for (int budget = 64; budget > 0 && !d->finished; budget--) {
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, d->buf, sizeof(d->buf), MSG_DONTWAIT | MSG_TRUNC,
				     (struct sockaddr *)&from, &fl);

		if (n < 0)
			break;
		if ((size_t)n > sizeof(d->buf))
			continue;
		warp_natclass_handle_input(d->nc, tag, d->buf, (size_t)n, (struct sockaddr *)&from,
					   warp_time_ns());
	}
	pump(d);
}

static int open_udp(const struct sockaddr_storage *bind_addr, uint16_t port, int *fd_out,
		    struct sockaddr_storage *local)
{
	struct sockaddr_storage a = *bind_addr;
	socklen_t len = sizeof(*local);
	int fd, err;

	nat_sa_set_port((struct sockaddr *)&a, port);
	fd = socket(a.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, nat_sa_len((struct sockaddr *)&a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)local, &len) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	*fd_out = fd;
	return 0;
}

static int add_sock(struct warp_nat_detect *d, int fd, uint8_t role,
		    const struct sockaddr_storage *local)
{
	struct warp_natclass_cfg *c = &d->cfg.cls;
	int err;

	if (d->nfds == WARP_NATCLASS_MAX_SOCKS) {
		close(fd);
		return -ENOSPC;
	}
	err = warp_loop_add_fd(d->loop, fd, WARP_EV_READ, on_readable, d);
	if (err) {
		close(fd);
		return err;
	}
	c->socks[d->nfds].tag = (int)d->nfds;
	c->socks[d->nfds].role = role;
	c->socks[d->nfds].local = *local;
	d->fds[d->nfds++] = fd;
	c->n_socks = d->nfds;
	return 0;
}

static int open_socks(struct warp_nat_detect *d)
{
	const struct sockaddr_storage *b = &d->cfg.bind;
	struct sockaddr_storage local;
	int fd, err;

	err = open_udp(b, 0, &fd, &local);
	if (err || (err = add_sock(d, fd, WARP_NATCLASS_MAPPING, &local)))
		return err;
	for (unsigned int s = 0; !d->cfg.no_filter && s < d->cfg.cls.n_servers; s++) {
		err = open_udp(b, 0, &fd, &local);
		if (err || (err = add_sock(d, fd, WARP_NATCLASS_FILTER, &local)))
			return err;
	}
	for (unsigned int i = 0; i < d->cfg.n_delta_random; i++) {
		for (int tries = 0;; tries++) {
			uint16_t port = (uint16_t)(10000 + warp_random_uniform(50000));

			err = open_udp(b, port, &fd, &local);
			if (!err || err != -EADDRINUSE || tries > 20)
				break;
		}
		if (err || (err = add_sock(d, fd, WARP_NATCLASS_DELTA_RANDOM, &local)))
			return err;
	}
	/* consecutive ports: all or nothing, from a random base */
	for (int tries = 0; d->cfg.n_delta_seq && tries < 20; tries++) {
		uint16_t base = (uint16_t)(20000 + warp_random_uniform(40000 - d->cfg.n_delta_seq));
		int fds[WARP_NATCLASS_MAX_SOCKS];
		struct sockaddr_storage locals[WARP_NATCLASS_MAX_SOCKS];
		unsigned int n = 0;

		for (; n < d->cfg.n_delta_seq; n++)
			if (open_udp(b, (uint16_t)(base + n), &fds[n], &locals[n]))
				break;
		if (n == d->cfg.n_delta_seq) {
			for (unsigned int i = 0; i < n; i++)
				if ((err = add_sock(d, fds[i], WARP_NATCLASS_DELTA_SEQ,
						    &locals[i]))) {
					while (++i < n)
						close(fds[i]);
					return err;
				}
			return 0;
		}
		while (n--)
			close(fds[n]);
	}
	return d->cfg.n_delta_seq ? -EADDRINUSE : 0;
}

/* The host's own addresses of that family: a mapped address among them means no NAT. */
static void local_ips(struct warp_nat_detect *d, int family)
{
	struct warp_natclass_cfg *c = &d->cfg.cls;
	struct ifaddrs *ifa = NULL;

	c->n_local_ips = 0;
	if (!nat_sa_is_any((struct sockaddr *)&d->cfg.bind))
		c->local_ips[c->n_local_ips++] = d->cfg.bind;
	if (getifaddrs(&ifa) < 0)
		return;
	for (struct ifaddrs *i = ifa; i && c->n_local_ips < WARP_NATCLASS_MAX_LOCAL;
	     i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != family)
			continue;
		memset(&c->local_ips[c->n_local_ips], 0, sizeof(c->local_ips[0]));
		memcpy(&c->local_ips[c->n_local_ips++], i->ifa_addr, nat_sa_len(i->ifa_addr));
	}
	freeifaddrs(ifa);
}

struct warp_nat_detect *warp_nat_detect_start(struct warp_loop *loop,
					      const struct warp_nat_detect_cfg *cfg,
					      warp_nat_detect_cb cb, void *user)
{
	struct warp_nat_detect *d;
	int err, family;

	if (!loop || !cfg || !cb || !cfg->cls.n_servers ||
	    cfg->cls.n_servers > WARP_NATCLASS_MAX_SERVERS) {
		errno = EINVAL;
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->loop = loop;
	d->cfg = *cfg;
	d->cb = cb;
	d->user = user;
	if (!d->cfg.tcp_timeout_ms)
		d->cfg.tcp_timeout_ms = 3000;
	d->cfg.cls.n_socks = 0;
	family = d->cfg.cls.servers[0].ss_family;
	if (d->cfg.bind.ss_family == AF_UNSPEC)
		d->cfg.bind.ss_family = (sa_family_t)family;
	if (d->cfg.bind.ss_family != family) {
		err = -EAFNOSUPPORT;
		goto fail;
	}
	d->timer = warp_timer_new(loop, on_timer, d);
	d->cache_timer = warp_timer_new(loop, on_cached, d);
	if (!d->timer || !d->cache_timer) {
		err = -ENOMEM;
		goto fail;
	}
	err = open_socks(d);
	if (err)
		goto fail;
	local_ips(d, family);
	d->nc = warp_natclass_new(&d->cfg.cls);
	if (!d->nc) {
		err = -errno;
		goto fail;
	}
	if (d->cfg.cache_path && d->cfg.fingerprint &&
	    warp_natcache_lookup(d->cfg.cache_path, d->cfg.fingerprint, d->cfg.fingerprint_len,
				 warp_wall_ms(), d->cfg.cache_max_age_ms, &d->cached,
				 &d->cached_age) == 0)
		warp_timer_arm_ns(d->cache_timer, 0); /* a hint now, the measurement later */
	err = warp_natclass_start(d->nc, warp_time_ns());
	if (err)
		goto fail;
	/* first transmissions from the loop, so no callback runs before we return */
	warp_timer_arm_ns(d->timer, 0);
	return d;
fail:
	warp_nat_detect_free(d);
	errno = -err;
	return NULL;
}
