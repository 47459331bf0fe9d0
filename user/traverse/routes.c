// SPDX-License-Identifier: MIT
/*
 * Which ways lead from this node to a route of a target address: loopback (same host), the
 * LAN (a shared subnet, IPv6 link-local on any up interface, or the same external address:
 * both behind one NAT) and the internet (the route's external endpoint, or its NIC address
 * when that is public).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/rtnetlink.h>
#include <string.h>

#include "net/endpoint.h"
#include "node/netstate.h"
#include "traverse/traverse.h"

bool tv_route_endpoint(const struct warp_addr_route *r, bool tcp, bool external,
		       struct sockaddr_storage *out)
{
	int fam = r->family == 4 ? AF_INET : AF_INET6;
	uint16_t port = tcp ? r->tcp_port : r->udp_port;

	if (!tcp && (r->flags & WARP_ROUTE_F_UDP_BLOCKED))
		return false;
	if (external) {
		uint16_t ext = tcp ? r->ext_tcp_port : r->ext_udp_port;

		if (!r->has_ext)
			return false;
		/* Guessing "external address + local port" only makes sense when the NAT keeps
		 * one mapping for every destination; an endpoint-dependent NAT allocates a new
		 * port for us, and the dial would wait out its whole timeout. */
		if (!ext && (r->mapping == WARP_ADDR_BEH_AD || r->mapping == WARP_ADDR_BEH_APD ||
			     r->nat == WARP_ADDR_NAT_SYMMETRIC))
			return false;
		/* Unknown external port: NATs that keep ports (and open hosts) use the same. */
		warp_ep_from_raw(out, fam, r->ext_addr, ext ? ext : port, 0);
		return ext || port;
	}
	if (!port)
		return false;
	warp_ep_from_raw(out, fam, r->nic_addr, port, 0);
	return true;
}

static bool same_prefix(const uint8_t *a, const uint8_t *b, unsigned int bits)
{
	unsigned int bytes = bits / 8, rem = bits % 8;

	if (memcmp(a, b, bytes))
		return false;
	return !rem || ((a[bytes] ^ b[bytes]) & (0xff << (8 - rem))) == 0;
}

static void fill(struct tv_combo *o, int fam, const char *route, bool tcp,
		 const struct sockaddr_storage *remote, int rroute, enum warp_path_class cls)
{
	memset(o, 0, sizeof(*o));
	o->family = fam;
	o->route = route;
	o->tcp = tcp;
	o->remote = *remote;
	o->rroute = rroute;
	o->cls = cls;
}

/* Our external address of a family, as published in our own address (set once the NAT
 * classification ran). */
static bool own_ext(struct warp_node *node, uint8_t family, uint8_t out[16])
{
	struct warp_node_addr me;

	if (warp_node_address(node, &me))
		return false;
	for (size_t i = 0; i < me.nroutes; i++)
		if (me.routes[i].family == family && me.routes[i].has_ext) {
			memcpy(out, me.routes[i].ext_addr, 16);
			return true;
		}
	return false;
}

/* Does a non-link-local route of the peer sit on one of our subnets? */
static bool route_on_our_subnet(struct warp_node *node, const struct warp_addr_route *r)
{
	int fam = r->family == 4 ? AF_INET : AF_INET6;

	for (size_t i = 0; i < node->ifs.n; i++) {
		const struct warp_iface *f = &node->ifs.ifs[i];

		if (f->flags & IFF_LOOPBACK)
			continue;
		for (size_t j = 0; j < f->naddrs; j++) {
			const struct warp_ifaddr *a = &f->addrs[j];
			unsigned int bits = a->prefix_len < r->prefix_len ? a->prefix_len
									   : r->prefix_len;

			if (a->family == fam && a->scope == RT_SCOPE_UNIVERSE && bits &&
			    same_prefix((const uint8_t *)&a->addr, r->nic_addr, bits))
				return true;
		}
	}
	return false;
}

static bool own_ext(struct warp_node *node, uint8_t family, uint8_t out[16]);

/* Link-local addresses only mean something on a shared link: try them when the peer has a
 * route on one of our subnets, the same external address, or nothing but link-local. */
static bool peer_on_link(struct warp_connect *c)
{
	bool only_ll = true;
	uint8_t ext[16];

	if (c->on_link >= 0)
		return c->on_link;
	c->on_link = 0;
	for (size_t i = 0; i < c->to.nroutes; i++) {
		const struct warp_addr_route *r = &c->to.routes[i];
		bool ll = r->family == 6 && r->nic_addr[0] == 0xfe && (r->nic_addr[1] & 0xc0) == 0x80;

		if (ll || (r->flags & WARP_ROUTE_F_LOOPBACK))
			continue;
		only_ll = false;
		if (route_on_our_subnet(c->node, r) ||
		    (r->has_ext && own_ext(c->node, r->family, ext) &&
		     !memcmp(ext, r->ext_addr, r->family == 4 ? 4 : 16)))
			c->on_link = 1;
	}
	if (only_ll)
		c->on_link = 1;
	return c->on_link;
}

/* Would the route's NAT drop an unsolicited dial to its external endpoint?  TCP through a NAT
 * needs a port mapping; UDP also gets through full cones. */
static bool inbound_filtered(const struct warp_addr_route *r, bool tcp)
{
	if ((r->flags & WARP_ROUTE_F_PORTMAP) || r->nat == WARP_ADDR_NAT_UNKNOWN ||
	    r->nat == WARP_ADDR_NAT_OPEN)
		return false;
	if (tcp)
		return true;
	return r->nat != WARP_ADDR_NAT_FULL_CONE;
}

int tv_route_combos(struct warp_connect *c, int rroute, bool tcp, struct tv_combo *out, int max)
{
	const struct warp_addr_route *r = &c->to.routes[rroute];
	struct warp_node *node = c->node;
	int fam = r->family == 4 ? AF_INET : AF_INET6;
	size_t alen = r->family == 4 ? 4 : 16;
	int sk = fam == AF_INET ? (tcp ? NODE_TCP4 : NODE_UDP4) : (tcp ? NODE_TCP6 : NODE_UDP6);
	struct sockaddr_storage ep;
	uint8_t ext[16];
	bool lan = false;
	int n = 0;

	if ((node->conf.flags & WARP_CONF_NO_IPV6) && fam == AF_INET6)
		return 0;
	/* TCP dials use a fresh socket, but only where we also listen (the family works). */
	if (node->socks[sk].fd < 0)
		return 0;
	if (r->flags & WARP_ROUTE_F_LOOPBACK) {
		if (c->same_host && n < max && tv_route_endpoint(r, tcp, false, &ep))
			fill(&out[n++], fam, "loopback", tcp, &ep, rroute, WARP_PATH_LOCAL);
		return n;
	}
	if (tv_route_endpoint(r, tcp, false, &ep)) {
		struct sockaddr *sa = (struct sockaddr *)&ep;

		if (fam == AF_INET6 && warp_ep_is_linklocal(sa)) {
			/* Link-local: try it on every interface that has a link-local address. */
			for (size_t i = 0; peer_on_link(c) && i < node->ifs.n && n < max; i++) {
				const struct warp_iface *f = &node->ifs.ifs[i];

				if (!(f->flags & IFF_UP) || (f->flags & IFF_LOOPBACK))
					continue;
				for (size_t j = 0; j < f->naddrs; j++)
					if (f->addrs[j].family == AF_INET6 &&
					    f->addrs[j].scope == RT_SCOPE_LINK) {
						fill(&out[n], fam, "lan", tcp, &ep, rroute,
						     WARP_PATH_LOCAL);
						((struct sockaddr_in6 *)&out[n].remote)->sin6_scope_id =
							(uint32_t)f->index;
						out[n].ifindex = f->index;
						n++;
						break;
					}
			}
		} else {
			for (size_t i = 0; i < node->ifs.n && !lan; i++) {
				const struct warp_iface *f = &node->ifs.ifs[i];

				for (size_t j = 0; j < f->naddrs && !lan; j++) {
					const struct warp_ifaddr *a = &f->addrs[j];
					unsigned int bits = a->prefix_len < r->prefix_len
								    ? a->prefix_len
								    : r->prefix_len;

					if (a->family != fam || a->scope != RT_SCOPE_UNIVERSE ||
					    (f->flags & IFF_LOOPBACK) || !bits)
						continue;
					lan = same_prefix((const uint8_t *)&a->addr, r->nic_addr,
							  bits);
				}
			}
			/* Behind the same NAT (same external address): the NIC address is
			 * likely reachable even without a shared subnet we can see. */
			if (!lan && r->has_ext && own_ext(node, r->family, ext))
				lan = !memcmp(ext, r->ext_addr, alen);
			if (lan && n < max)
				fill(&out[n++], fam, "lan", tcp, &ep, rroute, WARP_PATH_LOCAL);
			else if (!warp_ep_is_private(sa) && !warp_ep_is_loopback(sa) &&
				 !warp_ep_is_linklocal(sa) && !r->has_ext && n < max)
				/* A public address without NAT. */
				fill(&out[n++], fam, "internet", tcp, &ep, rroute, WARP_PATH_DIRECT);
		}
	}
	/* Our own NAT drops UDP to the internet: only local paths are worth a UDP dial. */
	if (!tcp) {
		const struct warp_nat_report *rep = node_nat_report(node, fam);

		if (rep && !rep->udp)
			return n;
	}
	if (r->has_ext && n < max && tv_route_endpoint(r, tcp, true, &ep)) {
		bool dup = false;

		for (int i = 0; i < n; i++)
			dup |= warp_ep_equal((struct sockaddr *)&out[i].remote, (struct sockaddr *)&ep);
		if (!dup) {
			fill(&out[n], fam, "internet", tcp, &ep, rroute, WARP_PATH_DIRECT);
			out[n++].long_shot = inbound_filtered(r, tcp);
		}
	}
	return n;
}
