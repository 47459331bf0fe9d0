// SPDX-License-Identifier: MIT
/*
 * Network awareness (see netstate.h).  Every part starts at once and runs concurrently on
 * the node's loop; none blocks start-up, and each has its own time bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "net"
#include "core/log.h"
#include "core/util.h"
#include "nat/natdetect.h"
#include "nat/natreport.h"
#include "nat/portmap.h"
#include "nat/sntp_io.h"
#include "nat/stun.h"
#include "nat/stun_client.h"
#include "net/endpoint.h"
#include "node/netstate.h"
#include "signal/signal.h"

#define REFRESH_MS        25000 /* under the 30 s UDP timeouts many NATs use */
#define STUN_TIMEOUT_MS   1500
#define SIGNAL_WAIT_MS    2000  /* readiness waits this long for a broker at most */
#define CACHE_STANDIN_MS  2500  /* a cached NAT report stands in after this long */
#define MAX_SRV           8

struct refl {
	int pending;
	bool have;
	bool varies;                 /* two servers saw different ports: endpoint-dependent */
	unsigned int answers;
	struct sockaddr_storage ext;
	uint32_t ms;
};

struct netstate {
	struct warp_node *node;
	uint64_t t0;
	struct warp_stun_client *stun;
	struct warp_timer *stun_timer;
	struct node_rx_hook hook;
	unsigned int nsrv[2];
	struct sockaddr_storage srv[2][MAX_SRV];
	struct refl refl[2];
	struct warp_nat_detect *det[2];
	bool rep_have[2], rep_final[2];
	struct warp_nat_report rep[2];
	uint32_t nat_ms[2];
	struct warp_sntp_query *sntp;
	bool clock_pending, clock_warned;
	int clock_err;
	uint32_t clock_ms;
	struct warp_synced_clock clock;
	struct warp_signal *sig;
	uint32_t sig_ms;
	/* port mappings of the node's UDP and TCP listen port */
	struct warp_portmap *pm[2];
	bool pm_have[2], pm_done[2];
	struct warp_portmap_info pm_info[2];
	uint32_t pm_ms;
	struct warp_timer *refresh;
	char cache_path[PATH_MAX];
	uint8_t fingerprint[32];
};

struct stun_wait {
	struct netstate *ns;
	int fi;
	bool refl;
	node_stun_cb cb;
	void *user;
};

static struct netstate *ns_of(const struct warp_node *node)
{
	return node->ext;
}

static int fidx(int family)
{
	return family == AF_INET6 ? 1 : 0;
}

static double since(const struct netstate *ns)
{
	return (double)(warp_time_ns() - ns->t0) / 1e6;
}

/* ---- STUN from the node's own sockets ---- */

static void stun_pump(struct netstate *ns)
{
	uint64_t now = warp_time_ns(), next;
	struct warp_stun_tx tx;

	while (warp_stun_client_poll_transmit(ns->stun, now, &tx))
		node_send(ns->node, tx.data, tx.len, (struct sockaddr *)&tx.dest, NULL, 0);
	next = warp_stun_client_next_deadline(ns->stun);
	if (next == WARP_STUN_NEVER)
		warp_timer_cancel(ns->stun_timer);
	else
		warp_timer_arm_at(ns->stun_timer, next);
}

static void stun_timer(struct warp_timer *t, void *user)
{
	struct netstate *ns = user;

	warp_stun_client_handle_timeout(ns->stun, warp_time_ns());
	stun_pump(ns);
}

static bool stun_rx(struct warp_node *node, struct node_sock *s, struct warp_dgram *d, void *user)
{
	struct netstate *ns = user;
	int rc = warp_stun_client_handle_input(ns->stun, fidx(s->family), d->buf, d->len,
					       (struct sockaddr *)&d->src, warp_time_ns());

	stun_pump(ns);
	return rc == 1;
}

static void stun_done(const struct warp_stun_result *res, void *user)
{
	struct stun_wait *w = user;
	int err = res->status ? res->status : res->error_code ? -EPROTO : 0;

	if (!err && res->mapped.ss_family == AF_UNSPEC)
		err = -WARP_EMISSING;
	w->cb(err, err ? NULL : (struct sockaddr *)&res->mapped, res->rtt_ns, w->user);
	free(w);
}

int node_stun_binding(struct warp_node *node, const struct sockaddr *dest, uint32_t timeout_ms,
		      node_stun_cb cb, void *user)
{
	struct netstate *ns = ns_of(node);
	struct warp_stun_req req = { 0 };
	struct stun_wait *w;
	uint64_t id;
	int err;

	if (!ns || !node_udp_sock(node, dest->sa_family))
		return -EAFNOSUPPORT;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->ns = ns;
	w->cb = cb;
	w->user = user;
	req.sock = fidx(dest->sa_family);
	req.dest = dest;
	req.fingerprint = true;
	req.rto_ms = 200;
	req.timeout_ms = timeout_ms ? timeout_ms : STUN_TIMEOUT_MS;
	req.cb = stun_done;
	req.user = w;
	err = warp_stun_client_start(ns->stun, &req, warp_time_ns(), &id);
	if (err) {
		free(w);
		return err;
	}
	stun_pump(ns);
	return 0;
}

bool node_stun_server(const struct warp_node *node, int family, unsigned int idx,
		      struct sockaddr_storage *out)
{
	struct netstate *ns = ns_of(node);
	int f = fidx(family);

	if (!ns || idx >= ns->nsrv[f])
		return false;
	*out = ns->srv[f][idx];
	return true;
}

struct refl_ctx {
	struct netstate *ns;
	int f;
};

static void refl_done(int err, const struct sockaddr *mapped, uint64_t rtt_ns, void *user)
{
	struct refl_ctx *c = user;
	struct refl *r = &c->ns->refl[c->f];
	char a[WARP_EP_STRLEN];

	if (!err) {
		if (r->answers && !warp_ep_equal((struct sockaddr *)&r->ext, mapped)) {
			/* Another server saw another mapping: the NAT maps per destination. */
			r->varies = true;
		} else if (!r->answers) {
			memcpy(&r->ext, mapped, warp_ep_len(mapped));
			warp_ep_unmap(&r->ext);
		}
		r->answers++;
		r->have = true;
		pr_debug("reflexive %s (rtt %.1f ms)", warp_ep_str(mapped, a, sizeof(a)),
			 (double)rtt_ns / 1e6);
	}
	if (--r->pending == 0)
		r->ms = (uint32_t)since(c->ns);
	free(c);
}

static void refl_start(struct netstate *ns)
{
	for (int f = 0; f < 2; f++) {
		struct refl *r = &ns->refl[f];

		if (r->pending || !node_udp_sock(ns->node, f ? AF_INET6 : AF_INET))
			continue;
		r->answers = 0;
		r->varies = false;
		for (unsigned int i = 0; i < ns->nsrv[f] && i < 2; i++) {
			struct refl_ctx *c = calloc(1, sizeof(*c));

			if (!c)
				break;
			c->ns = ns;
			c->f = f;
			r->pending++;
			if (node_stun_binding(ns->node, (struct sockaddr *)&ns->srv[f][i], 0,
					      refl_done, c)) {
				r->pending--;
				free(c);
			}
		}
	}
}

bool node_reflexive(const struct warp_node *node, int family, struct sockaddr_storage *out)
{
	struct netstate *ns = ns_of(node);
	struct refl *r;

	if (!ns)
		return false;
	r = &ns->refl[fidx(family)];
	if (!r->have)
		return false;
	*out = r->ext;
	return true;
}

/* ---- NAT classification ---- */

static void nat_done(struct warp_nat_detect *d, const struct warp_nat_report *rep, int status,
		     bool cached, uint64_t age_ms, void *user)
{
	struct netstate *ns = user;
	int f = ns->det[0] == d ? 0 : 1;

	if (status == 0) {
		ns->rep[f] = *rep;
		ns->rep_have[f] = true;
		pr_info("NAT (IPv%d%s): %s, mapping %s, filtering %s, delta %s %d", f ? 6 : 4,
			cached ? ", cached" : "", warp_nat_type_name(rep->type),
			warp_nat_behavior_name(rep->mapping), warp_nat_behavior_name(rep->filtering),
			warp_nat_delta_name(rep->delta), rep->delta_value);
	} else if (!cached) {
		pr_warn("NAT classification (IPv%d) failed: %s", f ? 6 : 4, warp_strerror(status));
	}
	if (!cached && status == 0 && !f && !rep->udp && ns->sntp) {
		/* NTP is UDP too: waiting out its timeout would only delay the start. */
		warp_sntp_query_free(ns->sntp);
		ns->sntp = NULL;
		ns->clock_pending = false;
		ns->clock_ms = (uint32_t)since(ns);
		ns->clock_err = -ENETUNREACH;
		pr_warn("UDP is blocked here, so is NTP: using the system clock, unverified");
	}
	if (!cached) {
		ns->rep_final[f] = true;
		ns->nat_ms[f] = (uint32_t)since(ns);
		ns->det[f] = NULL;
		warp_nat_detect_free(d);
	}
}

static void nat_start(struct netstate *ns)
{
	struct warp_node *node = ns->node;

	for (int f = 0; f < 2; f++) {
		struct warp_nat_detect_cfg cfg;

		if (ns->det[f] || !ns->nsrv[f] || !node_udp_sock(node, f ? AF_INET6 : AF_INET))
			continue;
		warp_nat_detect_cfg_default(&cfg);
		for (unsigned int i = 0; i < ns->nsrv[f] && i < WARP_NATCLASS_MAX_SERVERS; i++)
			cfg.cls.servers[cfg.cls.n_servers++] = ns->srv[f][i];
		if (cfg.cls.n_servers < 2)
			cfg.cls.quorum = 1;
		for (size_t i = 0; i < node->ifs.n; i++)
			for (size_t j = 0; j < node->ifs.ifs[i].naddrs; j++) {
				const struct warp_ifaddr *x = &node->ifs.ifs[i].addrs[j];
				struct sockaddr_storage *ss;

				if (x->family != (f ? AF_INET6 : AF_INET) ||
				    cfg.cls.n_local_ips >= WARP_NATCLASS_MAX_LOCAL)
					continue;
				ss = &cfg.cls.local_ips[cfg.cls.n_local_ips++];
				warp_ep_from_raw(ss, x->family, &x->addr, 0, x->scope_id);
			}
		if (ns->cache_path[0]) {
			cfg.cache_path = ns->cache_path;
			cfg.fingerprint = ns->fingerprint;
			cfg.fingerprint_len = sizeof(ns->fingerprint);
		}
		ns->rep_final[f] = false;
		ns->det[f] = warp_nat_detect_start(node->loop, &cfg, nat_done, ns);
		if (!ns->det[f]) {
			pr_warn("cannot start NAT classification: %s", warp_strerror(errno));
			ns->rep_final[f] = true;
		}
	}
}

const struct warp_nat_report *node_nat_report(const struct warp_node *node, int family)
{
	struct netstate *ns = ns_of(node);

	return ns && ns->rep_have[fidx(family)] ? &ns->rep[fidx(family)] : NULL;
}

/* ---- clock ---- */

static void clock_done(struct warp_sntp_query *q, int status, const struct warp_sntp_result *r,
		       void *user)
{
	struct netstate *ns = user;

	ns->clock_pending = false;
	ns->clock_ms = (uint32_t)since(ns);
	ns->clock_err = status;
	if (status == 0) {
		warp_clock_set(&ns->clock, r, warp_time_ns(), warp_sntp_wall_ns());
		pr_info("clock offset %+.1f ms (+/- %.1f ms, %u samples)",
			(double)r->offset_ns / 1e6, (double)r->uncertainty_ns / 1e6, r->samples);
	} else {
		pr_warn("no time server answered: using the system clock, unverified");
	}
	ns->sntp = NULL;
	warp_sntp_query_free(q);
}

static void clock_start(struct netstate *ns)
{
	const struct warp_conf *c = &ns->node->conf;
	struct warp_sntp_cfg cfg;

	warp_sntp_cfg_default(&cfg);
	for (size_t i = 0; i < c->nntp && cfg.n_servers < WARP_SNTP_MAX_SERVERS; i++)
		if (warp_ep_resolve(c->ntp[i], 123, 0, &cfg.servers[cfg.n_servers]) == 0)
			cfg.n_servers++;
	if (!cfg.n_servers)
		return;
	ns->clock_pending = true;
	ns->sntp = warp_sntp_query_start(ns->node->loop, &cfg, clock_done, ns);
	if (!ns->sntp)
		ns->clock_pending = false;
}

uint64_t node_clock_ms(struct warp_node *node)
{
	struct netstate *ns = ns_of(node);
	int64_t ms;

	if (ns && warp_clock_now_ms(&ns->clock, &ms) == 0)
		return (uint64_t)ms;
	if (ns && !ns->clock_warned && node->conf.nntp && !ns->clock_pending) {
		ns->clock_warned = true;
		pr_warn("clock not synchronised: falling back to the system clock");
	}
	return warp_wall_ms();
}

bool node_clock_info(const struct warp_node *node, int64_t *offset_ns, uint64_t *unc_ns)
{
	struct netstate *ns = ns_of(node);

	if (!ns || !ns->clock.synced)
		return false;
	*offset_ns = ns->clock.offset_ns;
	*unc_ns = warp_clock_uncertainty_ns(&ns->clock, warp_time_ns());
	return true;
}

/* ---- signalling ---- */

static uint64_t signal_clock(void *user)
{
	return node_clock_ms(user);
}

static void signal_start(struct netstate *ns)
{
	const struct warp_conf *c = &ns->node->conf;
	struct warp_broker_addr brokers[WARP_CONF_MAX_SERVERS];
	struct warp_signal_cfg cfg = { 0 };
	size_t n = 0;

	for (size_t i = 0; i < c->nmqtt; i++)
		if (warp_broker_addr_parse(c->mqtt[i], &brokers[n]) == 0)
			n++;
	if (!n)
		return;
	cfg.brokers = brokers;
	cfg.nbrokers = n;
	cfg.clock = signal_clock;
	cfg.clock_user = ns->node;
	ns->sig = warp_signal_new(ns->node->loop, ns->node->id, &cfg);
	if (!ns->sig)
		pr_warn("signalling unavailable: %s", warp_strerror(errno));
}

bool node_portmap(const struct warp_node *node, bool tcp, bool *done,
		  struct sockaddr_storage *external, const char **method)
{
	struct netstate *ns = ns_of(node);
	int i = tcp ? 1 : 0;

	*done = !ns || !ns->pm[i] || ns->pm_done[i];
	if (!ns || !ns->pm_have[i])
		return false;
	*external = ns->pm_info[i].external;
	*method = ns->pm_info[i].method == WARP_PORTMAP_UPNP ? "upnp" : "nat-pmp";
	return true;
}

struct warp_signal *node_signal(const struct warp_node *node)
{
	struct netstate *ns = ns_of(node);

	return ns ? ns->sig : NULL;
}

/* ---- port mapping (UPnP IGD, NAT-PMP): not awaited by readiness, the address gains the
 * mapped ports when they come ---- */

static void pm_event(struct warp_portmap *pm, enum warp_portmap_event ev,
		     const struct warp_portmap_info *info, void *user)
{
	struct netstate *ns = user;
	int i = ns->pm[1] == pm ? 1 : 0;
	char ep[WARP_EP_STRLEN];

	ns->pm_done[i] = true;
	switch (ev) {
	case WARP_PORTMAP_MAPPED:
	case WARP_PORTMAP_RENEWED:
		ns->pm_have[i] = true;
		ns->pm_info[i] = *info;
		if (!ns->pm_ms)
			ns->pm_ms = (uint32_t)since(ns);
		pr_info("%s port mapped: %s (%s)", i ? "TCP" : "UDP",
			warp_ep_str((struct sockaddr *)&info->external, ep, sizeof(ep)),
			info->method == WARP_PORTMAP_UPNP ? "UPnP" : "NAT-PMP");
		break;
	case WARP_PORTMAP_LOST:
		ns->pm_have[i] = false;
		break;
	case WARP_PORTMAP_FAILED:
		ns->pm_have[i] = false;
		pr_debug("no port mapping: %s", warp_strerror(info->err));
		break;
	default:
		break;
	}
}

static void portmap_start(struct netstate *ns)
{
	struct warp_node *node = ns->node;

	for (int i = 0; i < 2; i++) {
		struct warp_portmap_cfg cfg;

		if (node->socks[i ? NODE_TCP4 : NODE_UDP4].fd < 0)
			continue;
		warp_portmap_cfg_default(&cfg);
		cfg.proto = i ? IPPROTO_TCP : IPPROTO_UDP;
		cfg.internal_port = node->port;
		ns->pm[i] = warp_portmap_new(node->loop, &cfg, pm_event, ns);
	}
}

/* ---- lifecycle ---- */

static void refresh(struct warp_timer *t, void *user)
{
	struct netstate *ns = user;

	refl_start(ns);
	warp_timer_arm_ms(t, REFRESH_MS);
}

static void resolve_servers(struct netstate *ns)
{
	const struct warp_conf *c = &ns->node->conf;

	for (size_t i = 0; i < c->nstun; i++) {
		struct sockaddr_storage ss;
		int f;

		if (warp_ep_resolve(c->stun[i], 3478, 0, &ss)) {
			pr_warn("STUN server '%s' does not resolve", c->stun[i]);
			continue;
		}
		f = fidx(ss.ss_family);
		if (ns->nsrv[f] < MAX_SRV)
			ns->srv[f][ns->nsrv[f]++] = ss;
	}
}

int netstate_start(struct warp_node *node)
{
	struct netstate *ns = calloc(1, sizeof(*ns));
	char home[PATH_MAX];
	bool stun_on = !(node->conf.flags & WARP_CONF_NO_STUN);

	if (!ns)
		return -ENOMEM;
	ns->node = node;
	ns->t0 = warp_time_ns();
	node->ext = ns;
	warp_clock_init(&ns->clock);
	ns->stun = warp_stun_client_new(NULL);
	ns->stun_timer = warp_timer_new(node->loop, stun_timer, ns);
	ns->refresh = warp_timer_new(node->loop, refresh, ns);
	if (!ns->stun || !ns->stun_timer || !ns->refresh)
		return -ENOMEM;
	ns->hook.fn = stun_rx;
	ns->hook.user = ns;
	node_rx_hook_add(node, NODE_RX_STUN, &ns->hook);
	if (stun_on)
		resolve_servers(ns);
	if (warp_home_dir(home, sizeof(home) - 32) == 0 &&
	    snprintf(ns->cache_path, sizeof(ns->cache_path), "%.*s/natcache.json", PATH_MAX - 32,
		     node->conf.home[0] ? node->conf.home : home) >= (int)sizeof(ns->cache_path))
		ns->cache_path[0] = '\0';
	warp_iface_fingerprint(&node->ifs, ns->fingerprint);
	if (stun_on) {
		refl_start(ns);
		nat_start(ns);
		warp_timer_arm_ms(ns->refresh, REFRESH_MS);
	}
	if (!(node->conf.flags & WARP_CONF_NO_NTP))
		clock_start(ns);
	if (!(node->conf.flags & WARP_CONF_NO_MQTT))
		signal_start(ns);
	if (!(node->conf.flags & WARP_CONF_NO_UPNP))
		portmap_start(ns);
	return 0;
}

void netstate_stop(struct warp_node *node)
{
	struct netstate *ns = ns_of(node);

	if (!ns)
		return;
	node_rx_hook_del(&ns->hook);
	for (int f = 0; f < 2; f++)
		warp_nat_detect_free(ns->det[f]);
	warp_sntp_query_free(ns->sntp);
	warp_signal_free(ns->sig);
	/* Never leave a mapping behind: freeing deletes it at the gateway. */
	warp_portmap_free(ns->pm[0]);
	warp_portmap_free(ns->pm[1]);
	if (ns->stun)
		warp_stun_client_fail_all(ns->stun, -ECANCELED);
	warp_stun_client_free(ns->stun);
	warp_timer_free(ns->stun_timer);
	warp_timer_free(ns->refresh);
	free(ns);
	node->ext = NULL;
}

bool netstate_ready(const struct warp_node *node)
{
	struct netstate *ns = ns_of(node);

	if (!ns)
		return true;
	for (int f = 0; f < 2; f++) {
		if (ns->refl[f].pending)
			return false;
		/* Wait for the fresh classification; a cached one (same network fingerprint)
		 * stands in only if the measurement is slow. */
		if (ns->det[f] && !(ns->rep_have[f] && since(ns) >= CACHE_STANDIN_MS))
			return false;
	}
	if (ns->clock_pending)
		return false;
	if (ns->sig && !warp_signal_ready_count(ns->sig) && since(ns) < SIGNAL_WAIT_MS)
		return false;
	return true;
}

static bool ready_pred(void *user)
{
	return netstate_ready(user);
}

int warp_node_wait_ready(struct warp_node *node, int timeout_ms)
{
	return warp_loop_run_until(node->loop, ready_pred, node, timeout_ms);
}

/* ---- address ---- */

static void fill_portmap(struct netstate *ns, struct warp_addr_route *r)
{
	for (int i = 0; i < 2; i++) {
		const struct sockaddr *sa = (struct sockaddr *)&ns->pm_info[i].external;

		if (!ns->pm_have[i] || sa->sa_family != AF_INET || r->family != 4)
			continue;
		if (i)
			r->ext_tcp_port = warp_ep_port(sa);
		else
			r->ext_udp_port = warp_ep_port(sa);
		r->flags |= WARP_ROUTE_F_PORTMAP;
		if (!r->has_ext) {
			r->has_ext = true;
			memcpy(r->ext_addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		}
	}
}

static void fill_route(struct netstate *ns, struct warp_addr_route *r)
{
	int f = r->family == 6 ? 1 : 0;
	const struct warp_nat_report *rep = ns->rep_have[f] ? &ns->rep[f] : NULL;
	struct refl *rf = &ns->refl[f];
	size_t alen = r->family == 4 ? 4 : 16;

	if (rep) {
		r->nat = (uint8_t)rep->type;
		r->mapping = (uint8_t)rep->mapping;
		r->filtering = (uint8_t)rep->filtering;
		r->delta_type = (uint8_t)rep->delta;
		r->delta_value = rep->delta_value;
		if (rep->hairpin)
			r->flags |= WARP_ROUTE_F_HAIRPIN;
		if (rep->type == WARP_NAT_BLOCKED || !rep->udp)
			r->flags |= WARP_ROUTE_F_UDP_BLOCKED;
	}
	if (rf->have) {
		const struct sockaddr *sa = (struct sockaddr *)&rf->ext;
		bool eim = !rf->varies && (!rep || (rep->mapping != WARP_NAT_BEH_ADDRESS_DEPENDENT &&
							rep->mapping != WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT));

		r->has_ext = true;
		memcpy(r->ext_addr,
		       sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
						: (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
		       alen);
		/* Only an endpoint-independent mapping gives every peer the same port. */
		if (eim)
			r->ext_udp_port = warp_ep_port(sa);
	} else if (rep && !rep->udp && rep->tcp && rep->tcp_external.ss_family) {
		/* UDP is blocked but STUN over TCP answered: the external address is known. */
		const struct sockaddr *sa = (struct sockaddr *)&rep->tcp_external;

		r->has_ext = true;
		memcpy(r->ext_addr,
		       sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
						: (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
		       alen);
	} else if (rep && rep->n_external) {
		const struct sockaddr *sa = (struct sockaddr *)&rep->external[0];

		r->has_ext = true;
		memcpy(r->ext_addr,
		       sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
						: (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
		       alen);
	}
}

void netstate_fill_address(struct warp_node *node, struct warp_node_addr *a)
{
	struct netstate *ns = ns_of(node);
	bool seen[2] = { false, false };

	if (!ns)
		return;
	/* External facts belong to the route that carries the default route of its family
	 * (where STUN went out); without one, to the first route of the family. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < a->nroutes; i++) {
			struct warp_addr_route *r = &a->routes[i];
			int f = r->family == 6 ? 1 : 0;

			if (seen[f] || (pass == 0 && !(r->flags & WARP_ROUTE_F_DEFAULT)))
				continue;
			if (r->family == 6 && (r->nic_addr[0] & 0xfe) == 0xfc)
				continue;
			if (r->family == 6 && r->nic_addr[0] == 0xfe && (r->nic_addr[1] & 0xc0) == 0x80)
				continue; /* link-local */
			fill_route(ns, r);
			fill_portmap(ns, r);
			seen[f] = true;
		}
	if (ns->sig) {
		const struct warp_broker_addr *b;
		size_t n = warp_signal_brokers(ns->sig, &b);

		for (size_t i = 0; i < n && a->nhints < WARP_ADDR_MAX_HINTS; i++) {
			struct warp_addr_hint *h = &a->hints[a->nhints];

			if (warp_broker_addr_format(&b[i], h->text, sizeof(h->text)) == 0) {
				h->kind = WARP_HINT_MQTT;
				a->nhints++;
			}
		}
	}
}

char *netstate_json(struct warp_node *node, bool pretty)
{
	struct netstate *ns = ns_of(node);
	json_t *root = json_object(), *fams = json_array();
	char ep[WARP_EP_STRLEN];
	char *out;

	for (int f = 0; ns && f < 2; f++) {
		json_t *o;

		if (!ns->nsrv[f])
			continue;
		o = ns->rep_have[f] ? warp_nat_report_to_json(&ns->rep[f], 0) : json_object();
		json_object_set_new(o, "family", json_integer(f ? 6 : 4));
		json_object_set_new(o, "reflexive",
				    ns->refl[f].have
					    ? json_string(warp_ep_str((struct sockaddr *)&ns->refl[f].ext,
								      ep, sizeof(ep)))
					    : json_null());
		json_object_set_new(o, "reflexive_ms", json_integer(ns->refl[f].ms));
		json_object_set_new(o, "classify_ms", json_integer(ns->nat_ms[f]));
		json_object_set_new(o, "final", json_boolean(ns->rep_final[f]));
		json_array_append_new(fams, o);
	}
	json_object_set_new(root, "nat", fams);
	if (ns && ns->clock.synced) {
		json_object_set_new(root, "clock",
				    json_pack("{s:b, s:f, s:f, s:i}", "synced", 1, "offset_ms",
					      (double)ns->clock.offset_ns / 1e6, "uncertainty_ms",
					      (double)warp_clock_uncertainty_ns(&ns->clock,
									      warp_time_ns()) / 1e6,
					      "sync_ms", (int)ns->clock_ms));
	} else {
		json_object_set_new(root, "clock",
				    json_pack("{s:b, s:s}", "synced", 0, "source",
					      node->conf.nntp ? "system (no server answered)"
							      : "system (no server configured)"));
	}
	{
		json_t *pm = json_array();

		for (int i = 0; ns && i < 2; i++)
			if (ns->pm_have[i])
				json_array_append_new(
					pm, json_pack("{s:s, s:s, s:s, s:i}", "proto", i ? "tcp" : "udp",
						      "method",
						      ns->pm_info[i].method == WARP_PORTMAP_UPNP
							      ? "upnp"
							      : "nat-pmp",
						      "external",
						      warp_ep_str((struct sockaddr *)&ns->pm_info[i]
									  .external,
								  ep, sizeof(ep)),
						      "lifetime_s", (int)ns->pm_info[i].lifetime_s));
		json_object_set_new(root, "portmap", pm);
	}
	if (ns && ns->sig)
		json_object_set_new(root, "brokers_ready",
				    json_integer(warp_signal_ready_count(ns->sig)));
	out = json_dumps(root, (pretty ? JSON_INDENT(2) : JSON_COMPACT) | JSON_PRESERVE_ORDER |
				       JSON_REAL_PRECISION(6));
	json_decref(root);
	return out;
}
