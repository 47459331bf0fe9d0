// SPDX-License-Identifier: MIT
/*
 * Shared TURN allocations, leases on them and relay pipe paths.
 *
 * The registry is process-wide (a node has no slot for it), guarded by a mutex and keyed by
 * node, so two loops in two threads never see each other's relays.  Each relay holds one
 * warp_turn_io; leases count its users.  Callbacks into leases are dispatched by scans that
 * restart after every call (a callback may release any lease), with the relay pinned by an
 * extra reference meanwhile.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "turn"
#include "core/list.h"
#include "core/log.h"
#include "net/endpoint.h"
#include "pipe/pipe_internal.h"
#include "relay/turn_io.h"
#include "relay/turn_path.h"

struct turn_relay {
	struct list_head link; /* registry, while it may be shared */
	bool linked;
	struct warp_node *node;
	struct sockaddr_storage server;
	char *username, *password, *realm;
	bool key_tcp;  /* transport asked for (registry key) */
	bool fallback; /* may move from UDP to TCP */
	bool tcp;      /* transport in use */
	int family;
	struct warp_turn_cfg tuning;
	struct warp_turn_io *io;
	struct warp_timer *kick; /* deferred lease notifications */
	int refs;
	int status;		 /* 1 allocating, 0 ready, < 0 failed or lost */
	unsigned int generation; /* bumped on every status change */
	unsigned int peer_events;
	struct list_head leases;
};

struct turn_permit {
	struct list_head link;
	struct sockaddr_storage peer;
	turn_permit_cb cb;
	void *user;
	bool channel;
	unsigned int seen; /* last peer event reported */
};

struct turn_lease {
	struct list_head link; /* relay->leases */
	struct turn_relay *relay;
	turn_lease_cb cb;
	void *user;
	unsigned int seen; /* relay generation last reported */
	struct list_head permits;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list_head registry = LIST_HEAD_INIT(registry);

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static int family_of(const struct turn_server *srv)
{
	return srv->family ? srv->family : AF_INET;
}

static bool relay_matches(const struct turn_relay *r, const struct warp_node *node,
			  const struct turn_server *srv)
{
	return r->node == node && r->status >= 0 && r->key_tcp == srv->tcp &&
	       r->fallback == (!srv->tcp && srv->tcp_fallback) && r->family == family_of(srv) &&
	       warp_ep_equal((const struct sockaddr *)&r->server,
			     (const struct sockaddr *)&srv->addr) &&
	       str_eq(r->username, srv->username) && str_eq(r->password, srv->password) &&
	       str_eq(r->realm, srv->realm);
}

static void unregister(struct turn_relay *r)
{
	pthread_mutex_lock(&reg_lock);
	if (r->linked) {
		list_del(&r->link);
		r->linked = false;
	}
	pthread_mutex_unlock(&reg_lock);
}

static void free_str(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void relay_free(struct turn_relay *r)
{
	unregister(r);
	warp_turn_io_release(r->io); /* deallocates in the background */
	warp_timer_free(r->kick);
	free_str(r->username);
	free_str(r->password);
	free(r->realm);
	free(r);
}

static void relay_put(struct turn_relay *r)
{
	if (--r->refs == 0)
		relay_free(r);
}

/* Reports the relay's status to every lease that has not seen it; restarts after each
 * callback because it may release leases. */
static void notify_leases(struct turn_relay *r)
{
	r->refs++;
	for (;;) {
		struct list_head *pos;
		struct turn_lease *l = NULL;

		if (r->status > 0)
			break;
		list_for_each (pos, &r->leases) {
			struct turn_lease *c = list_entry(pos, struct turn_lease, link);

			if (c->seen != r->generation) {
				l = c;
				break;
			}
		}
		if (!l)
			break;
		l->seen = r->generation;
		if (l->cb)
			l->cb(l, r->status, r->status == 0 ? warp_turn_io_info(r->io) : NULL,
			      l->user);
	}
	relay_put(r);
}

static void on_kick(struct warp_timer *timer, void *user)
{
	notify_leases(user);
}

static void set_status(struct turn_relay *r, int status)
{
	r->status = status;
	r->generation++;
	if (status < 0)
		unregister(r); /* later gets make a fresh allocation */
	notify_leases(r);
}

static struct warp_turn_io *open_io(struct turn_relay *r);

/* No answer over UDP, or an ICMP error: UDP is probably blocked on the way. */
static bool transport_error(int err)
{
	return err == -ETIMEDOUT || err == -ECONNREFUSED || err == -EHOSTUNREACH ||
	       err == -ENETUNREACH;
}

static void on_allocated(struct warp_turn_io *io, int err, const struct warp_turn_info *info,
			 void *user)
{
	struct turn_relay *r = user;

	if (err && r->fallback && !r->tcp && transport_error(err)) {
		char a[WARP_EP_STRLEN];

		pr_info("TURN over UDP to %s failed (%s): trying TCP",
			warp_ep_str((struct sockaddr *)&r->server, a, sizeof(a)),
			warp_strerror(err));
		r->tcp = true;
		r->io = open_io(r);
		warp_turn_io_release(io);
		if (r->io) {
			struct list_head *lp, *pp;

			/* the permits move along */
			list_for_each (lp, &r->leases) {
				struct turn_lease *l = list_entry(lp, struct turn_lease, link);

				list_for_each (pp, &l->permits) {
					struct turn_permit *p =
						list_entry(pp, struct turn_permit, link);

					warp_turn_io_add_peer(r->io, (struct sockaddr *)&p->peer,
							      p->channel);
				}
			}
			return;
		}
		err = -errno;
	}
	set_status(r, err);
}

static void on_lost(struct warp_turn_io *io, int err, void *user)
{
	set_status(user, err ? err : -ECONNRESET);
}

static void on_peer(struct warp_turn_io *io, const struct sockaddr *peer, int err, void *user)
{
	struct turn_relay *r = user;
	struct sockaddr_storage addr;
	unsigned int ev = ++r->peer_events;

	memcpy(&addr, peer, warp_ep_len(peer));
	r->refs++;
	for (;;) {
		struct list_head *lp, *pp;
		struct turn_permit *hit = NULL;
		struct turn_lease *owner = NULL;

		list_for_each (lp, &r->leases) {
			struct turn_lease *l = list_entry(lp, struct turn_lease, link);

			list_for_each (pp, &l->permits) {
				struct turn_permit *p = list_entry(pp, struct turn_permit, link);

				if (p->cb && p->seen != ev &&
				    warp_ep_equal((struct sockaddr *)&p->peer,
						  (struct sockaddr *)&addr)) {
					hit = p;
					owner = l;
					break;
				}
			}
			if (hit)
				break;
		}
		if (!hit)
			break;
		hit->seen = ev;
		hit->cb(owner, (struct sockaddr *)&addr, err, hit->user);
	}
	relay_put(r);
}

static void on_data(struct warp_turn_io *io, const struct sockaddr *peer, uint8_t *data, size_t len,
		    void *user)
{
	struct turn_relay *r = user;

	r->refs++;
	pipe_rx_datagram(r->node, warp_turn_io_fd(io), data, len, peer, NULL, 0);
	relay_put(r);
}

static const struct warp_turn_io_ops relay_ops = {
	.allocated = on_allocated,
	.peer = on_peer,
	.data = on_data,
	.lost = on_lost,
};

static char *dup_str(const char *s, bool *oom)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

static struct warp_turn_io *open_io(struct turn_relay *r)
{
	struct warp_turn_io_cfg cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.turn = r->tuning;
	cfg.turn.username = r->username;
	cfg.turn.password = r->password;
	cfg.turn.realm = r->realm;
	cfg.turn.transport = r->tcp ? WARP_TURN_TCP : WARP_TURN_UDP;
	cfg.turn.family = r->family;
	if (!cfg.turn.software)
		cfg.turn.software = "warpgate " WARP_VERSION;
	cfg.server = r->server;
	return warp_turn_io_new(r->node->loop, &cfg, &relay_ops, r);
}

static struct turn_relay *relay_new(struct warp_node *node, const struct turn_server *srv)
{
	struct turn_relay *r = calloc(1, sizeof(*r));
	bool oom = false;
	int err;

	if (!r)
		return NULL;
	list_init(&r->leases);
	list_init(&r->link);
	r->node = node;
	r->server = srv->addr;
	r->key_tcp = r->tcp = srv->tcp;
	r->fallback = !srv->tcp && srv->tcp_fallback;
	r->family = family_of(srv);
	if (srv->tuning)
		r->tuning = *srv->tuning;
	r->tuning.username = r->tuning.password = r->tuning.realm = r->tuning.software = NULL;
	r->username = dup_str(srv->username, &oom);
	r->password = dup_str(srv->password, &oom);
	r->realm = dup_str(srv->realm, &oom);
	r->status = 1;
	r->kick = warp_timer_new(node->loop, on_kick, r);
	if (oom || !r->kick) {
		err = ENOMEM;
		goto fail;
	}
	r->io = open_io(r);
	if (!r->io) {
		err = errno;
		goto fail;
	}
	return r;
fail:
	warp_timer_free(r->kick);
	free_str(r->username);
	free_str(r->password);
	free(r->realm);
	free(r);
	errno = err;
	return NULL;
}

static struct turn_lease *lease_new(struct turn_relay *r, turn_lease_cb cb, void *user)
{
	struct turn_lease *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->relay = r;
	l->cb = cb;
	l->user = user;
	list_init(&l->permits);
	list_add_tail(&l->link, &r->leases);
	r->refs++;
	/* a new lease learns the current status from the loop, never synchronously */
	if (r->status <= 0)
		warp_timer_arm_ns(r->kick, 0);
	return l;
}

struct turn_lease *turn_lease_get(struct warp_node *node, const struct turn_server *srv,
				  turn_lease_cb cb, void *user)
{
	struct turn_relay *r = NULL;
	struct list_head *pos;

	if (!node || !srv || !warp_ep_len((const struct sockaddr *)&srv->addr)) {
		errno = EINVAL;
		return NULL;
	}
	pthread_mutex_lock(&reg_lock);
	list_for_each (pos, &registry) {
		struct turn_relay *c = list_entry(pos, struct turn_relay, link);

		if (relay_matches(c, node, srv)) {
			r = c;
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
	if (!r) {
		r = relay_new(node, srv);
		if (!r)
			return NULL;
		pthread_mutex_lock(&reg_lock);
		list_add_tail(&r->link, &registry);
		r->linked = true;
		pthread_mutex_unlock(&reg_lock);
	}
	{
		struct turn_lease *l = lease_new(r, cb, user);

		if (!l && !r->refs)
			relay_free(r);
		return l;
	}
}

int turn_lease_permit(struct turn_lease *l, const struct sockaddr *peer, bool channel,
		      turn_permit_cb cb, void *user)
{
	struct turn_permit *p;
	int err;

	if (!l || !peer || !warp_ep_len(peer))
		return -EINVAL;
	if (l->relay->status < 0)
		return l->relay->status;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	memcpy(&p->peer, peer, warp_ep_len(peer));
	p->cb = cb;
	p->user = user;
	p->channel = channel;
	err = warp_turn_io_add_peer(l->relay->io, peer, channel);
	if (err) {
		free(p);
		return err;
	}
	list_add_tail(&p->link, &l->permits);
	return 0;
}

void turn_lease_release(struct turn_lease **lp)
{
	struct turn_lease *l;
	struct turn_relay *r;

	if (!lp || !*lp)
		return;
	l = *lp;
	*lp = NULL;
	r = l->relay;
	while (!list_empty(&l->permits)) {
		struct turn_permit *p = list_entry(l->permits.next, struct turn_permit, link);

		list_del(&p->link);
		if (r->io)
			warp_turn_io_remove_peer(r->io, (struct sockaddr *)&p->peer);
		free(p);
	}
	list_del(&l->link);
	free(l);
	relay_put(r);
}

const struct warp_turn_info *turn_lease_info(const struct turn_lease *l)
{
	return l && l->relay->status == 0 ? warp_turn_io_info(l->relay->io) : NULL;
}

int turn_lease_fd(const struct turn_lease *l)
{
	if (!l)
		return -EINVAL;
	return l->relay->io ? warp_turn_io_fd(l->relay->io) : -ENOTCONN;
}

/* ------------------------------------------------------------------ pipe paths */

struct relay_path {
	struct turn_lease *lease;
	struct sockaddr_storage peer;
};

static int path_send(void *user, const uint8_t *pkt, size_t len)
{
	struct relay_path *rp = user;

	if (!rp->lease || !rp->lease->relay->io)
		return -ENOTCONN;
	return warp_turn_io_send(rp->lease->relay->io, (struct sockaddr *)&rp->peer, pkt, len);
}

static void path_release(void *user)
{
	struct relay_path *rp = user;

	turn_lease_release(&rp->lease);
	free(rp);
}

static const struct pipe_relay_ops path_ops = { .send = path_send, .release = path_release };

static struct pipe_path *path_on(struct turn_relay *r, const struct sockaddr *peer)
{
	struct relay_path *rp = calloc(1, sizeof(*rp));
	struct pipe_path *path;
	int err;

	if (!rp)
		return NULL;
	memcpy(&rp->peer, peer, warp_ep_len(peer));
	rp->lease = lease_new(r, NULL, NULL);
	if (!rp->lease) {
		free(rp);
		errno = ENOMEM;
		return NULL;
	}
	err = turn_lease_permit(rp->lease, peer, true, NULL, NULL);
	if (err) {
		path_release(rp);
		errno = -err;
		return NULL;
	}
	path = pipe_path_relay(r->node, peer, &path_ops, rp);
	if (!path) {
		err = errno;
		path_release(rp);
		errno = err;
	}
	return path;
}

struct pipe_path *turn_path_new(struct turn_lease *l, const struct sockaddr *peer)
{
	if (!l || !peer || !warp_ep_len(peer)) {
		errno = EINVAL;
		return NULL;
	}
	return path_on(l->relay, peer);
}

struct pipe_path *turn_path_inbound(struct warp_node *node, int fd, const struct sockaddr *src)
{
	struct turn_relay *r = NULL;
	struct list_head *pos;

	if (fd < 0 || !src || !warp_ep_len(src)) {
		errno = EINVAL;
		return NULL;
	}
	pthread_mutex_lock(&reg_lock);
	list_for_each (pos, &registry) {
		struct turn_relay *c = list_entry(pos, struct turn_relay, link);

		if (c->node == node && c->status == 0 && warp_turn_io_fd(c->io) == fd) {
			r = c;
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
	if (!r) {
		errno = ENOENT;
		return NULL;
	}
	return path_on(r, src);
}

int turn_server_from_conf(const struct warp_conf_turn *c, int family, struct turn_server *srv)
{
	int err;

	if (!c || !srv || !c->server[0])
		return -EINVAL;
	memset(srv, 0, sizeof(*srv));
	err = warp_ep_resolve(c->server, 3478, 0, &srv->addr);
	if (err)
		return err;
	srv->username = c->user[0] ? c->user : NULL;
	srv->password = c->user[0] ? c->password : NULL;
	srv->realm = c->realm[0] ? c->realm : NULL;
	srv->tcp = c->tcp;
	srv->family = family;
	return 0;
}

unsigned int turn_relay_count(const struct warp_node *node)
{
	struct list_head *pos;
	unsigned int n = 0;

	pthread_mutex_lock(&reg_lock);
	list_for_each (pos, &registry)
		n += list_entry(pos, struct turn_relay, link)->node == node;
	pthread_mutex_unlock(&reg_lock);
	return n;
}
