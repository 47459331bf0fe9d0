// SPDX-License-Identifier: MIT
/*
 * Local-link resolution, mDNS-style: a lookup multicasts a query (IPv4 239.255.82.80 with TTL 1
 * and IPv6 ff02::5750, port 5380) and the node that owns the name answers by unicast with its
 * record, signed by the name's key over the query id as well, so an answer recorded earlier
 * cannot be replayed to a later query.  Nothing is trusted on the strength of arriving from
 * the LAN: the answer proves the key, and connecting then proves the peer holds it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
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
#include "name/local.h"
#include "name/proto.h"

#define RESP_MAX_NAMES 8
#define RESP_RATE      20.0 /* answers per second (each costs a signature) */

static int group_parse(const char *addr, uint16_t port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		return 0;
	}
	if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		return 0;
	}
	return -WARP_EMALFORMED;
}

int wn_local_groups_init(struct wn_local_groups *g, const struct warp_name_client_opts *opts)
{
	uint16_t port = opts && opts->local_port ? opts->local_port : WARP_NAME_LOCAL_PORT;
	const char *a4 = WN_LOCAL_GROUP4, *a6 = WN_LOCAL_GROUP6;
	int err;

	memset(g, 0, sizeof(*g));
	if (opts && opts->local < 0)
		return 0;
	if (opts && (opts->local_group4 || opts->local_group6)) {
		a4 = opts->local_group4;
		a6 = opts->local_group6;
	}
	if (a4 && *a4) {
		err = group_parse(a4, port, &g->addr[g->n]);
		if (err)
			return err;
		g->n++;
	}
	if (a6 && *a6) {
		err = group_parse(a6, port, &g->addr[g->n]);
		if (err)
			return err;
		g->n++;
	}
	return 0;
}

/* ---- responder ---- */

struct published {
	bool used;
	const struct warp_identity *id;
	struct wn_record rec;
};

struct warp_name_responder {
	struct warp_loop *loop;
	struct wn_local_groups groups;
	int fd[2];
	struct published names[RESP_MAX_NAMES];
	char tld[16];
	double tokens;
	uint64_t last_ms;
	uint64_t last_updated;
};

static bool is_multicast(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return IN_MULTICAST(ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr));
	return IN6_IS_ADDR_MULTICAST(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* Joins the group on every multicast-capable interface that is up. */
static void join_all(int fd, const struct sockaddr_storage *g)
{
	struct ifaddrs *ifa, *i;
	unsigned int joined = 0;

	if (getifaddrs(&ifa) < 0)
		return;
	for (i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || !(i->ifa_flags & IFF_MULTICAST) ||
		    i->ifa_addr->sa_family != g->ss_family)
			continue;
		if (g->ss_family == AF_INET) {
			struct ip_mreqn m = { 0 };

			m.imr_multiaddr = ((const struct sockaddr_in *)g)->sin_addr;
			m.imr_address = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
			m.imr_ifindex = (int)if_nametoindex(i->ifa_name);
			if (!setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof(m)))
				joined++;
		} else {
			struct ipv6_mreq m = { 0 };

			m.ipv6mr_multiaddr = ((const struct sockaddr_in6 *)g)->sin6_addr;
			m.ipv6mr_interface = if_nametoindex(i->ifa_name);
			/* one join per interface: several addresses share an index */
			if (!setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &m, sizeof(m)))
				joined++;
		}
	}
	freeifaddrs(ifa);
	pr_debug("local responder joined %u interface(s)", joined);
}

static bool take_token(struct warp_name_responder *r)
{
	uint64_t now = warp_time_ms();

	r->tokens += (double)(now - r->last_ms) * RESP_RATE / 1000.0;
	if (r->tokens > RESP_RATE)
		r->tokens = RESP_RATE;
	r->last_ms = now;
	if (r->tokens < 1)
		return false;
	r->tokens -= 1;
	return true;
}

static void resp_read(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_name_responder *r = user;
	uint8_t buf[WN_MAX_PACKET], out[WN_MAX_PACKET];

	for (int round = 0; round < 32; round++) {
		struct sockaddr_storage from;
		socklen_t flen = sizeof(from);
		char name[WARP_NAME_FQ_MAX + 1];
		uint64_t id;
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
		int len;

		if (n < 0)
			return;
		if (wn_lquery_decode(buf, (size_t)n, &id, name))
			continue;
		for (int i = 0; i < RESP_MAX_NAMES; i++) {
			struct published *p = &r->names[i];

			if (!p->used || strcmp(p->rec.name, name))
				continue;
			if (!take_token(r))
				break;
			len = wn_lanswer_encode(id, &p->rec, p->id, out, sizeof(out));
			if (len > 0)
				sendto(fd, out, (size_t)len, 0, (struct sockaddr *)&from, flen);
			break;
		}
	}
}

static int resp_socket(struct warp_name_responder *r, const struct sockaddr_storage *g)
{
	struct sockaddr_storage any = { 0 };
	int one = 1, fd;
	socklen_t len;

	any.ss_family = g->ss_family;
	if (g->ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&any;

		a->sin_port = ((const struct sockaddr_in *)g)->sin_port;
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&any;

		a->sin6_port = ((const struct sockaddr_in6 *)g)->sin6_port;
		len = sizeof(*a);
	}
	fd = socket(g->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* several nodes on one host may all answer for their own names */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (g->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&any, len) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	if (is_multicast(g))
		join_all(fd, g);
	return fd;
}

struct warp_name_responder *warp_name_responder_new(struct warp_loop *loop,
						    const struct warp_name_client_opts *opts)
{
	struct warp_name_responder *r;
	int err, ok = 0;

	if (!loop) {
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->loop = loop;
	r->fd[0] = r->fd[1] = -1;
	r->tokens = RESP_RATE;
	r->last_ms = warp_time_ms();
	snprintf(r->tld, sizeof(r->tld), "%s",
		 opts && opts->tld && *opts->tld ? opts->tld : WARP_NAME_TLD_DEFAULT);
	err = warp_crypto_init();
	if (!err)
		err = wn_local_groups_init(&r->groups, opts);
	for (int i = 0; !err && i < r->groups.n; i++) {
		int fd = resp_socket(r, &r->groups.addr[i]);

		if (fd < 0) {
			pr_warn("local responder: %s socket: %s",
				r->groups.addr[i].ss_family == AF_INET ? "IPv4" : "IPv6",
				warp_strerror(fd));
			continue;
		}
		r->fd[i] = fd;
		if (warp_loop_add_fd(loop, fd, WARP_EV_READ, resp_read, r) == 0)
			ok++;
	}
	if (!err && r->groups.n && !ok)
		err = -EADDRNOTAVAIL;
	if (err) {
		warp_name_responder_free(r);
		errno = -err;
		return NULL;
	}
	return r;
}

void warp_name_responder_free(struct warp_name_responder *r)
{
	if (!r)
		return;
	for (int i = 0; i < 2; i++)
		if (r->fd[i] >= 0) {
			warp_loop_del_fd(r->loop, r->fd[i]);
			close(r->fd[i]);
		}
	free(r);
}

int warp_name_responder_publish(struct warp_name_responder *r, const struct warp_identity *id,
				const char *name, const void *value, size_t len)
{
	char canon[WARP_NAME_FQ_MAX + 1];
	struct published *slot = NULL;
	uint64_t now;
	int err;

	if (!r || !id || !name || (len && !value))
		return -EINVAL;
	if (len > WARP_NAME_VALUE_MAX)
		return -EMSGSIZE;
	err = warp_name_canonical(name, r->tld, canon);
	if (err)
		return err;
	for (int i = 0; i < RESP_MAX_NAMES; i++) {
		if (r->names[i].used && !strcmp(r->names[i].rec.name, canon)) {
			slot = &r->names[i];
			break;
		}
		if (!r->names[i].used && !slot)
			slot = &r->names[i];
	}
	if (!slot)
		return -ENOSPC;
	now = warp_wall_ms();
	r->last_updated = now > r->last_updated ? now : r->last_updated + 1;
	err = wn_record_make(&slot->rec, id, WN_REC_LIVE, canon, value, len, r->last_updated);
	if (err)
		return err;
	slot->id = id;
	slot->used = true;
	return 0;
}

int warp_name_responder_withdraw(struct warp_name_responder *r, const char *name)
{
	char canon[WARP_NAME_FQ_MAX + 1];
	int err;

	if (!r || !name)
		return -EINVAL;
	err = warp_name_canonical(name, r->tld, canon);
	if (err)
		return err;
	for (int i = 0; i < RESP_MAX_NAMES; i++)
		if (r->names[i].used && !strcmp(r->names[i].rec.name, canon)) {
			r->names[i].used = false;
			return 0;
		}
	return -WARP_ENOTFOUND;
}
