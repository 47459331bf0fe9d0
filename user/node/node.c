// SPDX-License-Identifier: MIT
/*
 * Node lifecycle: identity, listen sockets (one UDP and one TCP socket per family, wildcard
 * or loopback in test mode, all on one port), interfaces, the receive path that classifies
 * datagrams by their first byte, and the node address.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include <warpgate/error.h>
#include <warpgate/log.h>
#include <warpgate/node.h>

#define LOG_COMPONENT "node"
#include "core/bytes.h"
#include "core/log.h"
#include "core/util.h"
#include "bpf/fastpath.h"
#include "net/endpoint.h"
#include "node/netstate.h"
#include "node/node_internal.h"
#include "node/resolve.h"
#include "traverse/traverse.h"

int node_rx_hook_add(struct warp_node *node, enum node_rx_class cls, struct node_rx_hook *h)
{
	if (cls >= NODE_RX_NCLASS || !h->fn)
		return -EINVAL;
	list_add_tail(&h->link, &node->rx_hooks[cls]);
	return 0;
}

void node_rx_hook_del(struct node_rx_hook *h)
{
	if (h->link.next)
		list_del(&h->link);
}

struct node_sock *node_udp_sock(struct warp_node *node, int family)
{
	struct node_sock *s = &node->socks[family == AF_INET6 ? NODE_UDP6 : NODE_UDP4];

	return s->fd >= 0 ? s : NULL;
}

int node_send(struct warp_node *node, const void *buf, size_t len, const struct sockaddr *dst,
	      const struct sockaddr *src, int ifindex)
{
	struct node_sock *s = node_udp_sock(node, dst->sa_family);

	if (!s)
		return -EAFNOSUPPORT;
	return warp_sock_sendto(s->fd, buf, len, dst, src, ifindex);
}

void node_new_cid(struct warp_node *node, uint8_t cid[WARP_CID_LEN])
{
	static const uint8_t zero[WARP_CID_LEN];

	do
		warp_random(cid, WARP_CID_LEN);
	while (!memcmp(cid, zero, WARP_CID_LEN) || cidtab_get(&node->cids, cid));
}

bool node_peer_allowed(const struct warp_node *node, const uint8_t key[WARP_PUBKEY_LEN])
{
	if (!node->nallow)
		return true;
	for (size_t i = 0; i < node->nallow; i++)
		if (!memcmp(node->allow[i], key, WARP_PUBKEY_LEN))
			return true;
	return false;
}

static enum node_rx_class classify(const uint8_t *p, size_t len)
{
	if (!len)
		return NODE_RX_NCLASS;
	switch (p[0] >> 6) {
	case 0:
		return NODE_RX_STUN;
	case 1:
		return NODE_RX_CHANNEL;
	case 3:
		return NODE_RX_WARP;
	default:
		return NODE_RX_NCLASS;
	}
}

static void udp_readable(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct node_sock *s = user;
	struct warp_node *node;
	struct warp_dgram d[NODE_RX_BATCH];
	int rounds = 8; /* bounded: let timers and other sockets run between bursts */

	node = s->node;
	while (rounds--) {
		int n;

		for (int i = 0; i < NODE_RX_BATCH; i++) {
			d[i].buf = node->rxbufs + (size_t)i * NODE_RX_BUF;
			d[i].len = NODE_RX_BUF;
		}
		n = warp_sock_recv_batch(fd, d, NODE_RX_BATCH);
		if (n <= 0)
			break;
		for (int i = 0; i < n; i++) {
			enum node_rx_class cls = classify(d[i].buf, d[i].len);
			struct list_head *pos, *tmp;
			bool done = false;

			warp_ep_unmap(&d[i].src);
			if (d[i].truncated || cls >= NODE_RX_NCLASS)
				continue;
			list_for_each_safe(pos, tmp, &node->rx_hooks[cls]) {
				struct node_rx_hook *h = list_entry(pos, struct node_rx_hook, link);

				if (h->fn(node, s, &d[i], h->user)) {
					done = true;
					break;
				}
			}
			if (!done && warp_log_enabled(WARP_LOG_DEBUG)) {
				char ep[WARP_EP_STRLEN];

				pr_debug("unhandled %zu-byte datagram (class %d) from %s", d[i].len,
					 cls, warp_ep_str((struct sockaddr *)&d[i].src, ep, sizeof(ep)));
			}
		}
		if (n < NODE_RX_BATCH)
			break;
	}
}

static void tcp_acceptable(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct node_sock *s = user;
	struct warp_node *node;

	node = s->node;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int c = accept4(fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c < 0)
			break;
		warp_ep_unmap(&peer);
		pipe_layer_tcp_accept(node, c, (struct sockaddr *)&peer);
	}
}

/* Stable port per identity: restarts keep their port (and any port mapping stays valid),
 * while several identities on one host get different ones. */
static uint16_t stable_port(const struct warp_node *node, unsigned int attempt)
{
	uint8_t h[4];
	crypto_generichash_state st;

	crypto_generichash_init(&st, (const uint8_t *)"warpgate port v1", 16, sizeof(h));
	crypto_generichash_update(&st, node->machine, sizeof(node->machine));
	crypto_generichash_update(&st, warp_identity_pubkey(node->id), WARP_PUBKEY_LEN);
	crypto_generichash_update(&st, (const uint8_t *)&attempt, sizeof(attempt));
	crypto_generichash_final(&st, h, sizeof(h));
	return (uint16_t)(20000 + warp_get_u32(h) % 40000);
}

static bool iface_wanted(const struct warp_node *node, const struct warp_iface *f);

static void close_socks(struct warp_node *node)
{
	for (int i = 0; i < NODE_NSOCK; i++) {
		if (node->socks[i].fd >= 0) {
			warp_loop_del_fd(node->loop, node->socks[i].fd);
			close(node->socks[i].fd);
		}
		node->socks[i].fd = -1;
	}
}

static int bind_family(struct warp_node *node, int family, uint16_t port, uint16_t *got)
{
	struct sockaddr_storage addr;
	bool test = node->conf.flags & WARP_CONF_TEST_MODE;
	struct node_sock *u = &node->socks[family == AF_INET ? NODE_UDP4 : NODE_UDP6];
	struct node_sock *t = &node->socks[family == AF_INET ? NODE_TCP4 : NODE_TCP6];
	unsigned int fl = WARP_SOCK_PKTINFO | WARP_SOCK_V6ONLY;
	int fd;

	if (family == AF_INET)
		warp_ep_parse(test ? "127.0.0.1" : "0.0.0.0", 1, &addr);
	else
		warp_ep_parse(test ? "::1" : "::", 1, &addr);
	warp_ep_set_port((struct sockaddr *)&addr, port);
	if (!(node->conf.flags & WARP_CONF_NO_UDP)) {
		fd = warp_sock_udp((struct sockaddr *)&addr, fl);
		if (fd < 0)
			return fd;
		u->fd = fd;
		u->family = family;
		warp_sock_local(fd, &u->local);
		port = warp_ep_port((struct sockaddr *)&u->local);
		warp_ep_set_port((struct sockaddr *)&addr, port);
	}
	if (!(node->conf.flags & WARP_CONF_NO_TCP)) {
		fd = warp_sock_tcp((struct sockaddr *)&addr,
				   WARP_SOCK_REUSEADDR | WARP_SOCK_LISTEN | WARP_SOCK_V6ONLY);
		if (fd < 0)
			return fd;
		t->fd = fd;
		t->family = family;
		t->tcp = true;
		warp_sock_local(fd, &t->local);
		port = warp_ep_port((struct sockaddr *)&t->local);
	}
	*got = port;
	return 0;
}

static int open_socks(struct warp_node *node)
{
	bool want6 = !(node->conf.flags & WARP_CONF_NO_IPV6);
	bool test = node->conf.flags & WARP_CONF_TEST_MODE;
	int err = -EADDRINUSE;

	for (unsigned int attempt = 0; attempt < 24; attempt++) {
		uint16_t port, got4 = 0, got6 = 0;

		/* Explicit port: only that one.  Test mode: kernel-chosen.  Else: stable
		 * candidates, then kernel-chosen. */
		if (node->conf.port)
			port = node->conf.port;
		else if (test || attempt >= 16)
			port = 0;
		else
			port = stable_port(node, attempt);
		err = bind_family(node, AF_INET, port, &got4);
		if (!err && want6) {
			int e6 = bind_family(node, AF_INET6, got4, &got6);

			/* No IPv6 on this host (or no ::1): run IPv4 only. */
			if (e6 == -EADDRNOTAVAIL || e6 == -EAFNOSUPPORT) {
				close(node->socks[NODE_UDP6].fd);
				close(node->socks[NODE_TCP6].fd);
				node->socks[NODE_UDP6].fd = node->socks[NODE_TCP6].fd = -1;
				pr_debug("IPv6 unavailable: %s", warp_strerror(e6));
			} else {
				err = e6;
			}
		}
		if (!err) {
			node->port = got4;
			return 0;
		}
		close_socks(node);
		if (node->conf.port || err != -EADDRINUSE)
			break;
	}
	return err;
}

static int start_io(struct warp_node *node)
{
	for (int i = 0; i < NODE_NSOCK; i++) {
		struct node_sock *s = &node->socks[i];
		int err;

		if (s->fd < 0)
			continue;
		err = warp_loop_add_fd(node->loop, s->fd, WARP_EV_READ,
				       s->tcp ? tcp_acceptable : udp_readable, s);
		if (err)
			return err;
	}
	return 0;
}

static void on_netchange(void *user)
{
	struct warp_node *node = user;
	struct warp_iface_list l;

	if (warp_iface_list_get(&l) == 0) {
		warp_iface_list_free(&node->ifs);
		node->ifs = l;
		pr_info("network changed: %zu interfaces", l.n);
	}
}

/* Virtual devices (veth, bridges): XDP_TX only reaches a veth's peer when the peer runs an
 * XDP program too, which we cannot arrange on the other end; the TC program answers there. */
static bool iface_is_virtual(const char *name)
{
	char path[128], target[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/class/net/%s", name);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return true;
	target[n] = '\0';
	return strstr(target, "/virtual/") != NULL;
}

/* The kernel fast path: keepalive answers and probe matching in XDP/TC where possible, the
 * same logic in userspace otherwise; either way the node says which (warp_node_bpf_status). */
static void start_fastpath(struct warp_node *node)
{
	struct warp_fp_opts o = { 0 };
	char name[32], hex[9];

	warp_hex_encode(hex, warp_identity_pubkey(node->id) + 1, 4);
	snprintf(name, sizeof(name), "%s-%u", hex, node->port);
	o.name = name;
	node->fastpath = warp_fp_new(&o);
	if (!node->fastpath) {
		pr_warn("fast path unavailable: %s", warp_strerror(errno));
		return;
	}
	if (!warp_fp_active(node->fastpath)) {
		pr_info("%s", warp_fp_status(node->fastpath));
		return;
	}
	if (node->conf.flags & WARP_CONF_TEST_MODE) {
		warp_fp_attach(node->fastpath, (int)if_nametoindex("lo"), WARP_FP_ATTACH_TC);
	} else {
		for (size_t i = 0; i < node->ifs.n; i++) {
			const struct warp_iface *f = &node->ifs.ifs[i];

			if (!iface_wanted(node, f))
				continue;
			warp_fp_attach(node->fastpath, f->index,
				       iface_is_virtual(f->name) ? WARP_FP_ATTACH_TC : 0);
		}
	}
	warp_fp_loop_add(node->fastpath, node->loop);
	pr_info("%s", warp_fp_status(node->fastpath));
}

const char *warp_node_bpf_status(const struct warp_node *node)
{
	if (node->conf.flags & WARP_CONF_NO_BPF)
		return "bpf: off (disabled by configuration)";
	return node->fastpath ? warp_fp_status(node->fastpath) : "bpf: off (not loaded)";
}

struct warp_node *warp_node_start_with(const struct warp_conf *conf, struct warp_loop *loop,
				       struct warp_identity *identity)
{
	struct warp_node *node = calloc(1, sizeof(*node));
	bool test;
	int err = 0;

	if (!node)
		return NULL;
	node->started_ns = warp_time_ns();
	if (conf)
		node->conf = *conf;
	else
		warp_conf_init(&node->conf);
	test = node->conf.flags & WARP_CONF_TEST_MODE;
	if (node->conf.log_level >= 0)
		warp_log_set_level((enum warp_log_level)node->conf.log_level);
	for (int i = 0; i < NODE_NSOCK; i++) {
		node->socks[i].fd = -1;
		node->socks[i].node = node;
	}
	for (int i = 0; i < NODE_RX_NCLASS; i++)
		list_init(&node->rx_hooks[i]);
	list_init(&node->pipes);
	list_init(&node->handshakes);
	list_init(&node->tcp_conns);
	cidtab_init(&node->cids);
	if (warp_crypto_init()) {
		err = -EIO;
		goto fail;
	}
	node->loop = loop;
	if (!loop) {
		node->loop = warp_loop_new();
		if (!node->loop) {
			err = -errno;
			goto fail;
		}
		node->own_loop = true;
	}
	if (identity) {
		node->id = identity;
	} else if (test && !node->conf.name[0]) {
		node->id = warp_identity_generate();
		node->own_id = true;
	} else {
		char name[WARP_NAME_MAX + 1];

		if (node->conf.name[0])
			snprintf(name, sizeof(name), "%s", node->conf.name);
		else if ((err = warp_default_name(name, sizeof(name))))
			goto fail;
		node->id = warp_keystore_load(node->conf.home[0] ? node->conf.home : NULL, name,
					      true, NULL);
		node->own_id = true;
	}
	if (!node->id) {
		err = -errno;
		goto fail;
	}
	node->has_machine = warp_machine_hash(node->machine) == 0;
	node->rxbufs = malloc((size_t)NODE_RX_BATCH * NODE_RX_BUF);
	if (!node->rxbufs) {
		err = -ENOMEM;
		goto fail;
	}
	if (!test) {
		err = warp_iface_list_get(&node->ifs);
		if (err)
			goto fail;
		node->watch = warp_netwatch_new(node->loop, on_netchange, node);
		if (!node->watch)
			pr_warn("cannot watch network changes: %s", warp_strerror(errno));
	}
	err = open_socks(node);
	if (err) {
		pr_err("cannot open listen sockets: %s", warp_strerror(err));
		goto fail;
	}
	err = pipe_layer_init(node);
	if (err)
		goto fail;
	if (!(node->conf.flags & WARP_CONF_NO_BPF))
		start_fastpath(node);
	err = start_io(node);
	if (err)
		goto fail;
	/* Network awareness only when something of it is on (never in test mode). */
	if (!(node->conf.flags & WARP_CONF_TEST_MODE) &&
	    (node->conf.nstun || node->conf.nntp || node->conf.nmqtt)) {
		err = netstate_start(node);
		if (err)
			goto fail;
	}
	err = traverse_node_start(node);
	if (err)
		goto fail;
	pr_debug("node started on port %u in %.3f ms", node->port,
		 (double)(warp_time_ns() - node->started_ns) / 1e6);
	return node;
fail:
	warp_node_close(node);
	errno = -err;
	return NULL;
}

struct warp_node *warp_node_start(const struct warp_conf *conf, struct warp_loop *loop)
{
	return warp_node_start_with(conf, loop, NULL);
}

void warp_node_close(struct warp_node *node)
{
	if (!node)
		return;
	traverse_node_stop(node);
	node_names_stop(node);
	pipe_layer_fini(node);
	netstate_stop(node);
	warp_fp_free(node->fastpath);
	close_socks(node);
	warp_netwatch_free(node->watch);
	warp_iface_list_free(&node->ifs);
	cidtab_free(&node->cids);
	free(node->allow);
	free(node->rxbufs);
	if (node->own_id)
		warp_identity_free(node->id);
	if (node->own_loop)
		warp_loop_free(node->loop);
	free(node);
}

struct warp_loop *warp_node_loop(const struct warp_node *node)
{
	return node->loop;
}

const struct warp_identity *warp_node_identity(const struct warp_node *node)
{
	return node->id;
}

const struct warp_conf *warp_node_conf(const struct warp_node *node)
{
	return &node->conf;
}

uint16_t warp_node_port(const struct warp_node *node)
{
	return node->port;
}

void warp_node_on_accept(struct warp_node *node, warp_accept_cb cb, void *user)
{
	node->accept_cb = cb;
	node->accept_user = user;
}

int warp_node_allow(struct warp_node *node, const uint8_t (*keys)[WARP_PUBKEY_LEN], size_t n)
{
	uint8_t(*copy)[WARP_PUBKEY_LEN] = NULL;

	if (n) {
		copy = malloc(n * WARP_PUBKEY_LEN);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, keys, n * WARP_PUBKEY_LEN);
	}
	free(node->allow);
	node->allow = copy;
	node->nallow = n;
	return 0;
}

/* ---- node address ---- */

static bool iface_wanted(const struct warp_node *node, const struct warp_iface *f)
{
	if (!(f->flags & IFF_UP) || (f->flags & IFF_LOOPBACK))
		return false;
	if (!node->conf.nifaces)
		return true;
	for (size_t i = 0; i < node->conf.nifaces; i++)
		if (!strcmp(node->conf.ifaces[i], f->name))
			return true;
	return false;
}

static void add_route(struct warp_node_addr *a, uint8_t family, uint8_t if_id, const void *nic,
		      uint8_t prefix, uint16_t tcp, uint16_t udp, uint8_t flags)
{
	struct warp_addr_route *r;

	if (a->nroutes >= WARP_ADDR_MAX_ROUTES || (!tcp && !udp))
		return;
	r = &a->routes[a->nroutes++];
	memset(r, 0, sizeof(*r));
	r->family = family;
	r->if_id = if_id;
	memcpy(r->nic_addr, nic, family == 4 ? 4 : 16);
	r->prefix_len = prefix;
	r->tcp_port = tcp;
	r->udp_port = udp;
	r->flags = flags;
}

static uint16_t sock_port(const struct warp_node *node, int kind)
{
	return node->socks[kind].fd >= 0 ? node->port : 0;
}

int warp_node_address(struct warp_node *node, struct warp_node_addr *a)
{
	uint16_t t4 = sock_port(node, NODE_TCP4), u4 = sock_port(node, NODE_UDP4);
	uint16_t t6 = sock_port(node, NODE_TCP6), u6 = sock_port(node, NODE_UDP6);

	memset(a, 0, sizeof(*a));
	memcpy(a->pubkey, warp_identity_pubkey(node->id), WARP_PUBKEY_LEN);
	a->has_machine = node->has_machine;
	memcpy(a->machine, node->machine, sizeof(a->machine));
	a->created_ms = warp_wall_ms();
	if (node->conf.flags & WARP_CONF_TEST_MODE) {
		struct in_addr lo4 = { htonl(INADDR_LOOPBACK) };

		add_route(a, 4, 0, &lo4, 8, t4, u4, WARP_ROUTE_F_LOOPBACK);
		add_route(a, 6, 0, &in6addr_loopback, 128, t6, u6, WARP_ROUTE_F_LOOPBACK);
		for (size_t i = 0; i < a->nroutes; i++)
			a->routes[i].nat = WARP_ADDR_NAT_OPEN;
		return 0;
	}
	for (size_t i = 0; i < node->ifs.n; i++) {
		const struct warp_iface *f = &node->ifs.ifs[i];
		bool have6 = false, have_ll = false;

		if (!iface_wanted(node, f))
			continue;
		for (size_t j = 0; j < f->naddrs; j++) {
			const struct warp_ifaddr *x = &f->addrs[j];

			if (x->family == AF_INET && x->scope == RT_SCOPE_UNIVERSE && u4 + t4) {
				add_route(a, 4, (uint8_t)i, &x->addr.v4, x->prefix_len, t4, u4,
					  f->has_gw4 ? WARP_ROUTE_F_DEFAULT : 0);
			} else if (x->family == AF_INET6 && x->scope == RT_SCOPE_UNIVERSE && !have6 &&
				   !(x->flags & (IFA_F_DEPRECATED | IFA_F_TENTATIVE |
						 IFA_F_TEMPORARY)) && u6 + t6) {
				/* One stable global address per interface: temporary (privacy)
				 * addresses rotate and would make the address go stale. */
				add_route(a, 6, (uint8_t)i, &x->addr.v6, x->prefix_len, t6, u6,
					  f->has_gw6 ? WARP_ROUTE_F_DEFAULT : 0);
				have6 = true;
			} else if (x->family == AF_INET6 && x->scope == RT_SCOPE_LINK && !have_ll &&
				   u6 + t6) {
				add_route(a, 6, (uint8_t)i, &x->addr.v6, x->prefix_len, t6, u6, 0);
				have_ll = true;
			}
		}
	}
	netstate_fill_address(node, a);
	return 0;
}

int warp_node_address_text(struct warp_node *node, char *buf, size_t cap)
{
	struct warp_node_addr a;
	int err = warp_node_address(node, &a);

	return err ? err : warp_addr_to_text(&a, buf, cap);
}

char *warp_node_status_json(struct warp_node *node)
{
	char hex[2 * WARP_PUBKEY_LEN + 1];
	json_t *root = json_object();
	char *out;

	warp_hex_encode(hex, warp_identity_pubkey(node->id), WARP_PUBKEY_LEN);
	json_object_set_new(root, "public_key", json_string(hex));
	json_object_set_new(root, "port", json_integer(node->port));
	json_object_set_new(root, "test_mode",
			    json_boolean(node->conf.flags & WARP_CONF_TEST_MODE));
	json_object_set_new(root, "bpf", json_string(warp_node_bpf_status(node)));
	out = json_dumps(root, JSON_INDENT(2));
	json_decref(root);
	return out;
}
