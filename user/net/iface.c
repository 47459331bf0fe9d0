// SPDX-License-Identifier: MIT
/*
 * Interface discovery over rtnetlink with libmnl: one dump each of links, addresses and
 * routes.  Only default routes of the main table are kept (they tell which interface has a
 * way out, and through which gateway).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sodium.h>

#include <warpgate/iface.h>

#define LOG_COMPONENT "iface"
#include "core/log.h"
#include "core/util.h"

struct dump_ctx {
	struct warp_iface_list *list;
	int err;
};

static struct warp_iface *by_index(struct warp_iface_list *l, int index)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->ifs[i].index == index)
			return &l->ifs[i];
	return NULL;
}

static int link_attr(const struct nlattr *a, void *data)
{
	struct warp_iface *ifc = data;

	switch (mnl_attr_get_type(a)) {
	case IFLA_IFNAME:
		if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
			snprintf(ifc->name, sizeof(ifc->name), "%s", mnl_attr_get_str(a));
		break;
	case IFLA_MTU:
		if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
			ifc->mtu = mnl_attr_get_u32(a);
		break;
	case IFLA_ADDRESS:
		if (mnl_attr_get_payload_len(a) == 6)
			memcpy(ifc->mac, mnl_attr_get_payload(a), 6);
		break;
	}
	return MNL_CB_OK;
}

static int link_cb(const struct nlmsghdr *nlh, void *data)
{
	struct dump_ctx *c = data;
	struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
	struct warp_iface *n;

	if (nlh->nlmsg_type != RTM_NEWLINK)
		return MNL_CB_OK;
	n = realloc(c->list->ifs, (c->list->n + 1) * sizeof(*n));
	if (!n) {
		c->err = -ENOMEM;
		return MNL_CB_ERROR;
	}
	c->list->ifs = n;
	n = &c->list->ifs[c->list->n++];
	memset(n, 0, sizeof(*n));
	n->index = ifm->ifi_index;
	n->flags = ifm->ifi_flags;
	mnl_attr_parse(nlh, sizeof(*ifm), link_attr, n);
	return MNL_CB_OK;
}

struct addr_attrs {
	const struct nlattr *local, *address, *flags;
};

static int addr_attr(const struct nlattr *a, void *data)
{
	struct addr_attrs *at = data;

	switch (mnl_attr_get_type(a)) {
	case IFA_LOCAL:
		at->local = a;
		break;
	case IFA_ADDRESS:
		at->address = a;
		break;
	case IFA_FLAGS:
		if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
			at->flags = a;
		break;
	}
	return MNL_CB_OK;
}

static int addr_cb(const struct nlmsghdr *nlh, void *data)
{
	struct dump_ctx *c = data;
	struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
	struct addr_attrs at = { 0 };
	struct warp_iface *ifc;
	struct warp_ifaddr *wa;
	const struct nlattr *a;
	size_t alen = ifa->ifa_family == AF_INET ? 4 : 16;

	if (nlh->nlmsg_type != RTM_NEWADDR || (ifa->ifa_family != AF_INET &&
					       ifa->ifa_family != AF_INET6))
		return MNL_CB_OK;
	ifc = by_index(c->list, (int)ifa->ifa_index);
	if (!ifc || ifc->naddrs >= WARP_IFACE_MAX_ADDRS)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(*ifa), addr_attr, &at);
	/* IFA_LOCAL is our address on point-to-point links; IFA_ADDRESS otherwise. */
	a = at.local ? at.local : at.address;
	if (!a || mnl_attr_get_payload_len(a) != alen)
		return MNL_CB_OK;
	wa = &ifc->addrs[ifc->naddrs++];
	memset(wa, 0, sizeof(*wa));
	wa->family = ifa->ifa_family;
	memcpy(&wa->addr, mnl_attr_get_payload(a), alen);
	wa->prefix_len = ifa->ifa_prefixlen;
	wa->scope = ifa->ifa_scope;
	wa->flags = at.flags ? mnl_attr_get_u32(at.flags) : ifa->ifa_flags;
	if (wa->family == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&wa->addr.v6))
		wa->scope_id = ifa->ifa_index;
	return MNL_CB_OK;
}

struct route_attrs {
	const struct nlattr *oif, *gw, *table, *prio, *dst;
};

static int route_attr(const struct nlattr *a, void *data)
{
	struct route_attrs *at = data;

	switch (mnl_attr_get_type(a)) {
	case RTA_OIF:
		if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
			at->oif = a;
		break;
	case RTA_GATEWAY:
		at->gw = a;
		break;
	case RTA_TABLE:
		if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
			at->table = a;
		break;
	case RTA_PRIORITY:
		if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
			at->prio = a;
		break;
	case RTA_DST:
		at->dst = a;
		break;
	}
	return MNL_CB_OK;
}

static int route_cb(const struct nlmsghdr *nlh, void *data)
{
	struct dump_ctx *c = data;
	struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	struct route_attrs at = { 0 };
	struct warp_iface *ifc;
	uint32_t table, metric;

	if (nlh->nlmsg_type != RTM_NEWROUTE || rtm->rtm_dst_len != 0 ||
	    rtm->rtm_type != RTN_UNICAST)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(*rtm), route_attr, &at);
	table = at.table ? mnl_attr_get_u32(at.table) : rtm->rtm_table;
	if (table != RT_TABLE_MAIN || !at.oif)
		return MNL_CB_OK;
	ifc = by_index(c->list, (int)mnl_attr_get_u32(at.oif));
	if (!ifc)
		return MNL_CB_OK;
	metric = at.prio ? mnl_attr_get_u32(at.prio) : 0;
	if (rtm->rtm_family == AF_INET && (!ifc->has_gw4 || metric < ifc->metric4)) {
		ifc->has_gw4 = true;
		ifc->metric4 = metric;
		memset(&ifc->gw4, 0, sizeof(ifc->gw4));
		if (at.gw && mnl_attr_get_payload_len(at.gw) == 4)
			memcpy(&ifc->gw4, mnl_attr_get_payload(at.gw), 4);
	} else if (rtm->rtm_family == AF_INET6 && (!ifc->has_gw6 || metric < ifc->metric6)) {
		ifc->has_gw6 = true;
		ifc->metric6 = metric;
		memset(&ifc->gw6, 0, sizeof(ifc->gw6));
		if (at.gw && mnl_attr_get_payload_len(at.gw) == 16)
			memcpy(&ifc->gw6, mnl_attr_get_payload(at.gw), 16);
	}
	return MNL_CB_OK;
}

static int dump(struct mnl_socket *nl, uint16_t type, uint8_t family, mnl_cb_t cb,
		struct dump_ctx *c)
{
	char buf[32768];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct rtgenmsg *g;
	unsigned int seq = (unsigned int)time(NULL) ^ type, portid = mnl_socket_get_portid(nl);
	int ret;

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = seq;
	/* rtmsg/ifaddrmsg/ifinfomsg all start with the family byte; send the largest header. */
	g = mnl_nlmsg_put_extra_header(nlh, sizeof(struct rtmsg));
	g->rtgen_family = family;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		ret = (int)mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (ret < 0)
			return -errno;
		ret = mnl_cb_run(buf, (size_t)ret, seq, portid, cb, c);
		if (ret <= MNL_CB_STOP)
			break;
	}
	if (c->err)
		return c->err;
	return ret < 0 ? -errno : 0;
}

static int cmp_index(const void *a, const void *b)
{
	return ((const struct warp_iface *)a)->index - ((const struct warp_iface *)b)->index;
}

int warp_iface_list_get(struct warp_iface_list *out)
{
	struct mnl_socket *nl;
	struct dump_ctx c = { out, 0 };
	int err;

	memset(out, 0, sizeof(*out));
	nl = mnl_socket_open(NETLINK_ROUTE);
	if (!nl)
		return -errno;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		err = -errno;
		goto out;
	}
	err = dump(nl, RTM_GETLINK, AF_UNSPEC, link_cb, &c);
	if (!err)
		err = dump(nl, RTM_GETADDR, AF_UNSPEC, addr_cb, &c);
	if (!err)
		err = dump(nl, RTM_GETROUTE, AF_INET, route_cb, &c);
	if (!err)
		err = dump(nl, RTM_GETROUTE, AF_INET6, route_cb, &c);
	if (!err && out->n)
		qsort(out->ifs, out->n, sizeof(*out->ifs), cmp_index);
out:
	mnl_socket_close(nl);
	if (err)
		warp_iface_list_free(out);
	return err;
}

void warp_iface_list_free(struct warp_iface_list *list)
{
	free(list->ifs);
	list->ifs = NULL;
	list->n = 0;
}

const struct warp_iface *warp_iface_find(const struct warp_iface_list *list, const char *name)
{
	for (size_t i = 0; i < list->n; i++)
		if (!strcmp(list->ifs[i].name, name))
			return &list->ifs[i];
	return NULL;
}

static int cmp_key(const void *a, const void *b)
{
	return memcmp(a, b, 9);
}

void warp_iface_fingerprint(const struct warp_iface_list *list, uint8_t out[32])
{
	crypto_generichash_state st;

	warp_crypto_init();
	crypto_generichash_init(&st, (const uint8_t *)"warpgate netfp v1", 17, 32);
	for (size_t i = 0; i < list->n; i++) {
		const struct warp_iface *f = &list->ifs[i];
		/* family byte + IPv4 address or IPv6 /64 prefix, sorted and deduplicated so
		 * that extra or reordered addresses within one /64 change nothing. */
		uint8_t keys[WARP_IFACE_MAX_ADDRS][9];
		size_t nk = 0;

		if (f->flags & IFF_LOOPBACK)
			continue;
		crypto_generichash_update(&st, (const uint8_t *)f->name, strlen(f->name) + 1);
		for (size_t j = 0; j < f->naddrs; j++) {
			const struct warp_ifaddr *a = &f->addrs[j];

			memset(keys[nk], 0, 9);
			keys[nk][0] = (uint8_t)a->family;
			if (a->family == AF_INET)
				memcpy(keys[nk++] + 1, &a->addr.v4, 4);
			else if (a->scope == RT_SCOPE_UNIVERSE)
				memcpy(keys[nk++] + 1, &a->addr.v6, 8);
		}
		qsort(keys, nk, 9, cmp_key);
		for (size_t j = 0; j < nk; j++)
			if (j == 0 || memcmp(keys[j], keys[j - 1], 9))
				crypto_generichash_update(&st, keys[j], 9);
		if (f->has_gw4)
			crypto_generichash_update(&st, (const uint8_t *)&f->gw4, 4);
		if (f->has_gw6)
			crypto_generichash_update(&st, (const uint8_t *)&f->gw6, 16);
	}
	crypto_generichash_final(&st, out, 32);
}

/* ---- change watcher ---- */

struct warp_netwatch {
	struct warp_loop *loop;
	struct mnl_socket *nl;
	struct warp_timer *debounce;
	warp_netwatch_cb cb;
	void *user;
};

static void netwatch_fire(struct warp_timer *t, void *user)
{
	struct warp_netwatch *w = user;

	w->cb(w->user);
}

static void netwatch_read(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_netwatch *w = user;
	char buf[32768];
	bool any = false;

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n <= 0) {
			/* ENOBUFS: events were lost, so something changed. */
			if (n < 0 && errno == ENOBUFS)
				any = true;
			break;
		}
		any = true;
	}
	if (any && !warp_timer_pending(w->debounce))
		warp_timer_arm_ms(w->debounce, 100);
}

struct warp_netwatch *warp_netwatch_new(struct warp_loop *loop, warp_netwatch_cb cb, void *user)
{
	struct warp_netwatch *w = calloc(1, sizeof(*w));
	unsigned int groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
			      RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
	int err;

	if (!w)
		return NULL;
	w->loop = loop;
	w->cb = cb;
	w->user = user;
	w->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (!w->nl || mnl_socket_bind(w->nl, groups, MNL_SOCKET_AUTOPID) < 0)
		goto fail;
	w->debounce = warp_timer_new(loop, netwatch_fire, w);
	if (!w->debounce)
		goto fail;
	err = warp_loop_add_fd(loop, mnl_socket_get_fd(w->nl), WARP_EV_READ, netwatch_read, w);
	if (err) {
		errno = -err;
		goto fail;
	}
	return w;
fail:
	err = errno;
	warp_netwatch_free(w);
	errno = err;
	return NULL;
}

void warp_netwatch_free(struct warp_netwatch *w)
{
	if (!w)
		return;
	if (w->nl) {
		warp_loop_del_fd(w->loop, mnl_socket_get_fd(w->nl));
		mnl_socket_close(w->nl);
	}
	warp_timer_free(w->debounce);
	free(w);
}
