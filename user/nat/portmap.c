// SPDX-License-Identifier: MIT
/*
 * Port mapping: one worker thread per method running blocking miniupnpc / libnatpmp calls,
 * results posted back to the loop thread, race / renew / delete decisions on the loop thread.
 * The workers own the truth about what exists on the gateway; the loop side only schedules.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include <miniupnpc/miniupnpc.h>
#include <miniupnpc/upnpcommands.h>
#include <miniupnpc/upnperrors.h>
#include <natpmp.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "portmap"
#include "core/log.h"
#include "core/util.h"
#include "nat/portmap.h"
#include "nat/sockaddr.h"

#define SEC 1000000000ull

/* ---- pure pieces ---- */

uint64_t warp_portmap_renew_at(uint64_t granted_ns, uint32_t lifetime_s)
{
	uint64_t half;

	if (!lifetime_s)
		return UINT64_MAX;
	half = (uint64_t)lifetime_s * SEC / 2;
	return granted_ns + (half < SEC ? SEC : half);
}

uint64_t warp_portmap_retry_at(uint64_t now_ns, uint64_t expires_ns, unsigned int failures)
{
	uint64_t wait = 5 * SEC, left;

	if (now_ns >= expires_ns)
		return UINT64_MAX;
	for (unsigned int i = 1; i < failures && wait < 3600 * SEC; i++)
		wait *= 2;
	left = (expires_ns - now_ns) / 2;
	if (left < wait)
		wait = left;
	if (wait < SEC)
		wait = SEC;
	return now_ns + wait >= expires_ns ? UINT64_MAX : now_ns + wait;
}

void warp_portmap_race_init(struct warp_portmap_race *r, unsigned int n)
{
	memset(r, 0, sizeof(*r));
	r->winner = -1;
	r->n = n > 2 ? 2 : n;
}

enum warp_portmap_action warp_portmap_race_result(struct warp_portmap_race *r, unsigned int idx,
						  int status, const struct sockaddr *ext)
{
	if (idx >= r->n)
		return WARP_PORTMAP_WAIT;
	if (status) {
		r->state[idx] = 2;
		if (r->winner >= 0)
			return WARP_PORTMAP_WAIT;
		for (unsigned int i = 0; i < r->n; i++)
			if (r->state[i] != 2)
				return WARP_PORTMAP_WAIT;
		return WARP_PORTMAP_ALL_FAILED;
	}
	r->state[idx] = 1;
	memset(&r->ext[idx], 0, sizeof(r->ext[idx]));
	if (ext)
		memcpy(&r->ext[idx], ext, nat_sa_len(ext));
	if (r->winner < 0) {
		r->winner = (int)idx;
		return WARP_PORTMAP_WIN;
	}
	if ((int)idx == r->winner)
		return WARP_PORTMAP_WIN;
	/* one router speaking both protocols: the same rule, deleting it would kill the winner */
	if (nat_sa_port((struct sockaddr *)&r->ext[idx]) ==
	    nat_sa_port((struct sockaddr *)&r->ext[r->winner]))
		return WARP_PORTMAP_KEEP_SAME;
	return WARP_PORTMAP_DELETE_LOSER;
}

int warp_portmap_upnp_err(int code)
{
	switch (code) {
	case UPNPCOMMAND_SUCCESS:
		return 0;
	case UPNPCOMMAND_INVALID_ARGS:
	case 402:
		return -EINVAL;
	case UPNPCOMMAND_HTTP_ERROR:
		return -EHOSTUNREACH;
	case UPNPCOMMAND_INVALID_RESPONSE:
		return -WARP_EMALFORMED;
	case UPNPCOMMAND_MEM_ALLOC_ERROR:
		return -ENOMEM;
	case 606:
		return -EACCES;
	case 718:
	case 729:
		return -EADDRINUSE;
	case 725:
		return -EOPNOTSUPP;
	case 728:
		return -ENOSPC;
	default:
		return -EIO;
	}
}

int warp_portmap_natpmp_err(int code)
{
	switch (code) {
	case 0:
		return 0;
	case NATPMP_TRYAGAIN:
		return -ETIMEDOUT;
	case NATPMP_ERR_INVALIDARGS:
		return -EINVAL;
	case NATPMP_ERR_CANNOTGETGATEWAY:
		return -ENETUNREACH;
	case NATPMP_ERR_RECVFROM:
	case NATPMP_ERR_CONNECTERR:
		return -ECONNREFUSED;
	case NATPMP_ERR_NOGATEWAYSUPPORT:
	case NATPMP_ERR_UNSUPPORTEDOPCODE:
		return -EOPNOTSUPP;
	case NATPMP_ERR_UNSUPPORTEDVERSION:
		return -WARP_EVERSION;
	case NATPMP_ERR_NOTAUTHORIZED:
		return -EACCES;
	case NATPMP_ERR_NETWORKFAILURE:
		return -ENETDOWN;
	case NATPMP_ERR_OUTOFRESOURCES:
		return -ENOSPC;
	default:
		return -EIO;
	}
}

void warp_portmap_cfg_default(struct warp_portmap_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->proto = IPPROTO_UDP;
	cfg->lease_s = 3600;
	cfg->discover_ms = 2000;
	cfg->natpmp_ms = 2000;
	cfg->methods = WARP_PORTMAP_UPNP | WARP_PORTMAP_NATPMP;
	snprintf(cfg->description, sizeof(cfg->description), "warpgate");
}

/* ---- workers ---- */

enum job_type { JOB_ADD, JOB_RENEW, JOB_DELETE, JOB_RENEW_PINHOLE };

struct job {
	enum job_type type;
	struct job *next;
};

/* Lives until the last posted result is consumed; pm is NULL once the owner is gone. */
struct shared {
	int refs;
	struct warp_portmap *pm;
};

struct igd {
	bool have;
	struct UPNPUrls urls;
	struct IGDdatas data;
	char lanaddr[64];
};

struct worker {
	struct shared *sh;
	struct warp_loop *loop;
	struct warp_portmap_cfg cfg; /* a copy: the worker never touches the owner */
	unsigned int method;
	unsigned int idx;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail;
	bool quit;
	bool discovering; /* in SSDP discovery (uninterruptible, nothing to undo yet) */
	bool orphan;	  /* the owner left during discovery: the thread frees the worker */
	bool abandon; /* another method won the race: do not add a mapping any more */
	/* IGD found over IPv4 (port mappings) and over IPv6 (pinholes: miniupnpd and the spec
	 * want the pinhole requested from the internal IPv6 address itself) */
	struct igd igd4, igd6;
	/* what exists on the gateway because of us */
	bool mapped;
	uint16_t ext_port;
	uint32_t lease;
	bool pinhole;
	struct igd *pinhole_igd;
	char pinhole_id[16];
};

struct result {
	struct shared *sh;
	unsigned int idx;
	enum job_type job;
	bool pinhole;
	int status;
	struct sockaddr_storage ext;
	uint32_t lifetime;
};

struct warp_portmap {
	struct warp_loop *loop;
	struct warp_portmap_cfg cfg;
	warp_portmap_cb cb;
	void *user;
	struct shared *sh;
	struct worker *w[2]; /* heap: a worker stuck in discovery outlives us */
	unsigned int nw;
	struct warp_portmap_race race;
	struct warp_timer *renew_timer, *pinhole_timer;
	bool have;
	struct warp_portmap_info cur;
	uint64_t granted_ns, expires_ns;
	unsigned int failures;
	uint32_t pinhole_lifetime;
	int last_err;
};

static void sh_put(struct shared *sh)
{
	if (__atomic_sub_fetch(&sh->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(sh);
}

static void on_result(void *arg);

static void post(struct worker *w, struct result *res)
{
	res->sh = w->sh;
	res->idx = w->idx;
	pr_debug("%s: %s%s: %s", w->method == WARP_PORTMAP_UPNP ? "UPnP" : "NAT-PMP",
		 res->job == JOB_ADD ? "add" : "renew", res->pinhole ? " pinhole" : "",
		 warp_strerror(res->status));
	/* Under the lock, so that once the owner has set quit nothing reaches its loop (which
	 * may be gone by then). */
	pthread_mutex_lock(&w->lock);
	if (__atomic_load_n(&w->quit, __ATOMIC_ACQUIRE)) {
		pthread_mutex_unlock(&w->lock);
		free(res);
		return;
	}
	__atomic_add_fetch(&w->sh->refs, 1, __ATOMIC_ACQ_REL);
	if (warp_loop_post(w->loop, on_result, res)) {
		sh_put(w->sh);
		free(res);
	}
	pthread_mutex_unlock(&w->lock);
}

static const char *proto_name(const struct worker *w)
{
	return w->cfg.proto == IPPROTO_TCP ? "TCP" : "UDP";
}

static void set_ext(struct sockaddr_storage *ss, int family, const char *ip, uint16_t port)
{
	char buf[64];

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6)
		snprintf(buf, sizeof(buf), "[%s]", ip && *ip ? ip : "::");
	else
		snprintf(buf, sizeof(buf), "%s", ip && *ip ? ip : "0.0.0.0");
	if (nat_sa_parse(buf, port, ss)) {
		/* unknown external IP: the port alone is still worth reporting */
		nat_sa_parse(family == AF_INET6 ? "[::]" : "0.0.0.0", port, ss);
	}
}

static const char *const igd_types[] = {
	"urn:schemas-upnp-org:device:InternetGatewayDevice:1",
	"urn:schemas-upnp-org:device:InternetGatewayDevice:2",
	NULL,
};

static int upnp_discover(struct worker *w, struct igd *g, bool ipv6)
{
	struct UPNPDev *devs;
	int err = 0, r;

	if (g->have)
		return 0;
	/* both IGD generations in one M-SEARCH round: one wait (miniupnpc makes it >= 1 s)
	 * instead of one per device type */
	pthread_mutex_lock(&w->lock);
	w->discovering = true;
	pthread_mutex_unlock(&w->lock);
	devs = upnpDiscoverDevices(igd_types, (int)w->cfg.discover_ms,
				   w->cfg.multicast_if[0] ? w->cfg.multicast_if : NULL, NULL,
				   UPNP_LOCAL_PORT_ANY, ipv6, 2, &err, 1);
	pthread_mutex_lock(&w->lock);
	w->discovering = false;
	pthread_mutex_unlock(&w->lock);
	if (!devs)
		return -WARP_ENOTFOUND;
	memset(&g->urls, 0, sizeof(g->urls));
	r = UPNP_GetValidIGD(devs, &g->urls, &g->data, g->lanaddr, sizeof(g->lanaddr));
	freeUPNPDevlist(devs);
	/* 2 = "valid IGD, not connected": lab routers in reserved ranges say that */
	if (r == 1 || r == 2) {
		g->have = true;
		pr_debug("IGD at %s (%s)", g->urls.controlURL,
			 r == 1 ? "connected" : "not connected");
		return 0;
	}
	if (r)
		FreeUPNPUrls(&g->urls);
	return -WARP_ENOTFOUND;
}

static int upnp_add(struct worker *w, uint16_t ext, uint32_t lease, uint16_t *got)
{
	struct igd *g = &w->igd4;
	const char *client = w->cfg.internal_addr[0] ? w->cfg.internal_addr : g->lanaddr;
	char ext_s[8], in_s[8], lease_s[12], reserved[8] = "";
	int r = -1;

	snprintf(in_s, sizeof(in_s), "%u", w->cfg.internal_port);
	for (int attempt = 0; attempt < 4; attempt++) {
		snprintf(ext_s, sizeof(ext_s), "%u", ext);
		snprintf(lease_s, sizeof(lease_s), "%u", lease);
		r = UPNP_AddPortMapping(g->urls.controlURL, g->data.first.servicetype, ext_s, in_s,
					client, w->cfg.description, proto_name(w), NULL, lease_s);
		if (r == 725 && lease) { /* OnlyPermanentLeasesSupported */
			lease = 0;
			continue;
		}
		if (r != 718 || w->mapped)
			break;
		/* taken by someone else: let an IGDv2 pick, else try a random port */
		if (UPNP_AddAnyPortMapping(g->urls.controlURL, g->data.first.servicetype, ext_s,
					   in_s, client, w->cfg.description, proto_name(w), NULL,
					   lease_s, reserved) == 0) {
			ext = (uint16_t)atoi(reserved);
			r = 0;
			break;
		}
		ext = (uint16_t)(1024 + warp_random_uniform(64511));
	}
	if (r)
		return warp_portmap_upnp_err(r);
	*got = ext;
	w->lease = lease;
	return 0;
}

static void upnp_map(struct worker *w, bool renew)
{
	struct result *res = calloc(1, sizeof(*res));
	char extip[64] = "";
	uint16_t port = 0;
	int err;

	if (!res)
		return;
	res->job = renew ? JOB_RENEW : JOB_ADD;
	err = upnp_discover(w, &w->igd4, false);
	if (!err && (__atomic_load_n(&w->quit, __ATOMIC_ACQUIRE) ||
		     (!renew && __atomic_load_n(&w->abandon, __ATOMIC_ACQUIRE))))
		err = -ECANCELED;
	if (!err) {
		uint16_t want = renew		       ? w->ext_port
				: w->cfg.external_port ? w->cfg.external_port
						       : w->cfg.internal_port;

		err = upnp_add(w, want, w->cfg.lease_s, &port);
	}
	if (!err) {
		w->mapped = true;
		w->ext_port = port;
		if (UPNP_GetExternalIPAddress(w->igd4.urls.controlURL,
					      w->igd4.data.first.servicetype, extip))
			extip[0] = '\0';
		set_ext(&res->ext, AF_INET, extip, port);
		res->lifetime = w->lease;
	}
	res->status = err;
	post(w, res);
}

static void upnp_pinhole(struct worker *w, bool renew)
{
	struct result *res;
	char in_s[8], lease_s[12], proto_s[4];
	uint32_t lease = w->cfg.lease_s > 86400 ? 86400 : w->cfg.lease_s ? w->cfg.lease_s : 3600;
	struct igd *g;
	int r, err;

	if (!w->cfg.internal_addr6[0] || !(w->cfg.methods & WARP_PORTMAP_PINHOLE6))
		return;
	res = calloc(1, sizeof(*res));
	if (!res)
		return;
	res->pinhole = true;
	res->job = renew ? JOB_RENEW_PINHOLE : JOB_ADD;
	/* over IPv6 first (the request must come from the address being opened), else over
	 * the IPv4 IGD for gateways that do not check */
	g = &w->igd6;
	err = upnp_discover(w, g, true);
	if (err || !g->urls.controlURL_6FC || !g->data.IPv6FC.servicetype[0]) {
		g = &w->igd4;
		err = upnp_discover(w, g, false);
	}
	if (!err && (!g->urls.controlURL_6FC || !g->data.IPv6FC.servicetype[0]))
		err = -EOPNOTSUPP; /* the IGD offers no WANIPv6FirewallControl */
	snprintf(in_s, sizeof(in_s), "%u", w->cfg.internal_port);
	snprintf(lease_s, sizeof(lease_s), "%u", lease);
	snprintf(proto_s, sizeof(proto_s), "%d", w->cfg.proto == IPPROTO_TCP ? 6 : 17);
	if (!err && renew && w->pinhole) {
		r = UPNP_UpdatePinhole(w->pinhole_igd->urls.controlURL_6FC,
				       w->pinhole_igd->data.IPv6FC.servicetype, w->pinhole_id,
				       lease_s);
		err = warp_portmap_upnp_err(r);
	} else if (!err) {
		r = UPNP_AddPinhole(g->urls.controlURL_6FC, g->data.IPv6FC.servicetype, "", "0",
				    w->cfg.internal_addr6, in_s, proto_s, lease_s, w->pinhole_id);
		err = warp_portmap_upnp_err(r);
		w->pinhole = !err;
		w->pinhole_igd = g;
	}
	if (!err) {
		set_ext(&res->ext, AF_INET6, w->cfg.internal_addr6, w->cfg.internal_port);
		res->lifetime = lease;
	}
	res->status = err;
	post(w, res);
}

static void upnp_delete(struct worker *w)
{
	char ext_s[8];
	int r;

	if (w->mapped && w->igd4.have) {
		snprintf(ext_s, sizeof(ext_s), "%u", w->ext_port);
		r = UPNP_DeletePortMapping(w->igd4.urls.controlURL, w->igd4.data.first.servicetype,
					   ext_s, proto_name(w), NULL);
		if (r && r != 714) /* 714 NoSuchEntryInArray: already gone */
			pr_warn("UPnP: cannot delete mapping %s/%s: %s", ext_s, proto_name(w),
				strupnperror(r));
		w->mapped = false;
	}
}

static void upnp_cleanup(struct worker *w)
{
	upnp_delete(w);
	if (w->pinhole && w->pinhole_igd && w->pinhole_igd->have) {
		int r = UPNP_DeletePinhole(w->pinhole_igd->urls.controlURL_6FC,
					   w->pinhole_igd->data.IPv6FC.servicetype, w->pinhole_id);

		if (r)
			pr_warn("UPnP: cannot delete pinhole %s: %s", w->pinhole_id,
				strupnperror(r));
		w->pinhole = false;
	}
	for (int i = 0; i < 2; i++) {
		struct igd *g = i ? &w->igd6 : &w->igd4;

		if (g->have)
			FreeUPNPUrls(&g->urls);
		g->have = false;
	}
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One NAT-PMP exchange (public address when mapping is false), bounded by natpmp_ms. */
static int natpmp_do(struct worker *w, bool mapping, uint16_t priv, uint16_t pub, uint32_t life,
		     natpmpresp_t *resp)
{
	natpmp_t n;
	in_addr_t gw = 0;
	uint64_t deadline = mono_ms() + (w->cfg.natpmp_ms ? w->cfg.natpmp_ms : 2000);
	int r, proto = w->cfg.proto == IPPROTO_TCP ? NATPMP_PROTOCOL_TCP : NATPMP_PROTOCOL_UDP;

	if (w->cfg.gateway[0] && inet_pton(AF_INET, w->cfg.gateway, &gw) != 1)
		return -EINVAL;
	r = initnatpmp(&n, w->cfg.gateway[0] ? 1 : 0, gw);
	if (r < 0)
		return warp_portmap_natpmp_err(r);
	r = mapping ? sendnewportmappingrequest(&n, proto, priv, pub, life)
		    : sendpublicaddressrequest(&n);
	while (r >= 0) {
		struct timeval tv;
		fd_set fds;
		uint64_t now = mono_ms();

		if (now >= deadline) {
			r = NATPMP_TRYAGAIN;
			break;
		}
		FD_ZERO(&fds);
		FD_SET(n.s, &fds);
		if (getnatpmprequesttimeout(&n, &tv) < 0 ||
		    (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000 > deadline - now) {
			tv.tv_sec = (time_t)((deadline - now) / 1000);
			tv.tv_usec = (suseconds_t)((deadline - now) % 1000 * 1000);
		}
		select(n.s + 1, &fds, NULL, NULL, &tv);
		r = readnatpmpresponseorretry(&n, resp);
		if (r != NATPMP_TRYAGAIN)
			break;
	}
	closenatpmp(&n);
	return r < 0 ? warp_portmap_natpmp_err(r) : 0;
}

static void natpmp_map(struct worker *w, bool renew)
{
	struct result *res = calloc(1, sizeof(*res));
	natpmpresp_t resp;
	char extip[INET_ADDRSTRLEN] = "";
	uint16_t want;
	int err;

	if (!res)
		return;
	res->job = renew ? JOB_RENEW : JOB_ADD;
	want = renew		      ? w->ext_port
	       : w->cfg.external_port ? w->cfg.external_port
				      : w->cfg.internal_port;
	err = natpmp_do(w, false, 0, 0, 0, &resp);
	if (!err)
		inet_ntop(AF_INET, &resp.pnu.publicaddress.addr, extip, sizeof(extip));
	else if (err != -ETIMEDOUT)
		extip[0] = '\0'; /* some gateways only map; carry on */
	if (err == -ETIMEDOUT && !renew)
		goto out; /* nobody speaks NAT-PMP here */
	if (__atomic_load_n(&w->quit, __ATOMIC_ACQUIRE) ||
	    (!renew && __atomic_load_n(&w->abandon, __ATOMIC_ACQUIRE))) {
		err = -ECANCELED;
		goto out;
	}
	err = natpmp_do(w, true, w->cfg.internal_port, want, w->cfg.lease_s ? w->cfg.lease_s : 3600,
			&resp);
	if (!err) {
		w->mapped = true;
		w->ext_port = resp.pnu.newportmapping.mappedpublicport;
		w->lease = resp.pnu.newportmapping.lifetime;
		set_ext(&res->ext, AF_INET, extip, w->ext_port);
		res->lifetime = w->lease;
	}
out:
	res->status = err;
	post(w, res);
}

static void natpmp_delete(struct worker *w)
{
	natpmpresp_t resp;
	int err;

	if (!w->mapped)
		return;
	/* lifetime 0 removes the mapping of this internal port (RFC 6886 section 3.4) */
	err = natpmp_do(w, true, w->cfg.internal_port, 0, 0, &resp);
	if (err)
		pr_warn("NAT-PMP: cannot delete the mapping of port %u: %s", w->cfg.internal_port,
			warp_strerror(err));
	w->mapped = false;
}

static void run_job(struct worker *w, enum job_type type)
{
	if (w->method == WARP_PORTMAP_UPNP) {
		switch (type) {
		case JOB_ADD:
			if (w->cfg.methods & WARP_PORTMAP_UPNP)
				upnp_map(w, false);
			upnp_pinhole(w, false);
			break;
		case JOB_RENEW:
			upnp_map(w, true);
			break;
		case JOB_RENEW_PINHOLE:
			upnp_pinhole(w, true);
			break;
		case JOB_DELETE:
			upnp_delete(w);
			break;
		}
	} else {
		if (type == JOB_ADD || type == JOB_RENEW)
			natpmp_map(w, type == JOB_RENEW);
		else if (type == JOB_DELETE)
			natpmp_delete(w);
	}
}

static void worker_free(struct worker *w)
{
	while (w->head) {
		struct job *j = w->head;

		w->head = j->next;
		free(j);
	}
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	bool orphan;

	for (;;) {
		struct job *j;
		enum job_type type;

		pthread_mutex_lock(&w->lock);
		while (!w->head && !w->quit)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->quit) {
			pthread_mutex_unlock(&w->lock);
			break;
		}
		j = w->head;
		w->head = j->next;
		if (!w->head)
			w->tail = NULL;
		pthread_mutex_unlock(&w->lock);
		type = j->type;
		free(j);
		run_job(w, type);
	}
	/* never leave anything behind */
	if (w->method == WARP_PORTMAP_UPNP)
		upnp_cleanup(w);
	else
		natpmp_delete(w);
	pthread_mutex_lock(&w->lock);
	orphan = w->orphan;
	pthread_mutex_unlock(&w->lock);
	if (orphan)
		worker_free(w);
	return NULL;
}

static int enqueue(struct worker *w, enum job_type type)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->type = type;
	pthread_mutex_lock(&w->lock);
	if (w->tail)
		w->tail->next = j;
	else
		w->head = j;
	w->tail = j;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

/* ---- loop side ---- */

static void emit(struct warp_portmap *pm, enum warp_portmap_event ev, unsigned int method,
		 const struct result *res, int err)
{
	struct warp_portmap_info info = { .method = method, .err = err };

	if (res) {
		info.external = res->ext;
		info.lifetime_s = res->lifetime;
	}
	pm->cb(pm, ev, &info, pm->user);
}

static void start_race(struct warp_portmap *pm)
{
	warp_portmap_race_init(&pm->race, pm->nw);
	for (unsigned int i = 0; i < pm->nw; i++)
		if (pm->w[i]->method == WARP_PORTMAP_NATPMP || (pm->cfg.methods & WARP_PORTMAP_UPNP))
			enqueue(pm->w[i], JOB_ADD);
		else
			warp_portmap_race_result(&pm->race, i, -EOPNOTSUPP, NULL);
}

static void on_renew_timer(struct warp_timer *t, void *user)
{
	struct warp_portmap *pm = user;

	if (pm->race.winner >= 0)
		enqueue(pm->w[pm->race.winner], JOB_RENEW);
}

static void on_pinhole_timer(struct warp_timer *t, void *user)
{
	struct warp_portmap *pm = user;

	for (unsigned int i = 0; i < pm->nw; i++)
		if (pm->w[i]->method == WARP_PORTMAP_UPNP)
			enqueue(pm->w[i], JOB_RENEW_PINHOLE);
}

static void handle_pinhole(struct warp_portmap *pm, const struct result *res)
{
	uint64_t now = warp_time_ns();

	if (res->status) {
		pr_debug("IPv6 pinhole: %s", warp_strerror(res->status));
		if (res->job == JOB_RENEW_PINHOLE)
			warp_timer_arm_at(pm->pinhole_timer, now + 30 * SEC);
		else if (res->status != -ECANCELED)
			emit(pm, WARP_PORTMAP_PINHOLE, WARP_PORTMAP_PINHOLE6, NULL, res->status);
		return;
	}
	pm->pinhole_lifetime = res->lifetime;
	warp_timer_arm_at(pm->pinhole_timer, warp_portmap_renew_at(now, res->lifetime));
	if (res->job == JOB_ADD)
		emit(pm, WARP_PORTMAP_PINHOLE, WARP_PORTMAP_PINHOLE6, res, 0);
}

static void handle(struct warp_portmap *pm, const struct result *res)
{
	uint64_t now = warp_time_ns();
	unsigned int method = pm->w[res->idx]->method;
	enum warp_portmap_action act;
	uint64_t at;

	if (res->pinhole) {
		handle_pinhole(pm, res);
		return;
	}
	if (res->status && res->status != -ECANCELED)
		pm->last_err = res->status;
	if (res->job == JOB_RENEW) {
		if ((int)res->idx != pm->race.winner)
			return;
		if (!res->status) {
			pm->cur.external = res->ext;
			pm->cur.lifetime_s = res->lifetime;
			pm->granted_ns = now;
			pm->expires_ns = res->lifetime ? now + res->lifetime * SEC : UINT64_MAX;
			pm->failures = 0;
			at = warp_portmap_renew_at(now, res->lifetime);
			if (at != UINT64_MAX)
				warp_timer_arm_at(pm->renew_timer, at);
			emit(pm, WARP_PORTMAP_RENEWED, method, res, 0);
			return;
		}
		at = warp_portmap_retry_at(now, pm->expires_ns, ++pm->failures);
		if (at != UINT64_MAX) {
			warp_timer_arm_at(pm->renew_timer, at);
			return;
		}
		/* the lease ran out: start over, then tell */
		pm->have = false;
		pm->failures = 0;
		start_race(pm);
		emit(pm, WARP_PORTMAP_LOST, method, NULL, res->status);
		return;
	}
	act = warp_portmap_race_result(&pm->race, res->idx, res->status,
				       res->status ? NULL : (const struct sockaddr *)&res->ext);
	switch (act) {
	case WARP_PORTMAP_WIN:
		/* The slower method must not add a second rule for the same port: on the
		 * gateways that speak both, deleting it later would take ours down too. */
		for (unsigned int i = 0; i < pm->nw; i++)
			if (i != res->idx)
				__atomic_store_n(&pm->w[i]->abandon, true, __ATOMIC_RELEASE);
		pm->have = true;
		pm->cur.method = method;
		pm->cur.external = res->ext;
		pm->cur.lifetime_s = res->lifetime;
		pm->cur.err = 0;
		pm->granted_ns = now;
		pm->expires_ns = res->lifetime ? now + res->lifetime * SEC : UINT64_MAX;
		at = warp_portmap_renew_at(now, res->lifetime);
		if (at != UINT64_MAX)
			warp_timer_arm_at(pm->renew_timer, at);
		emit(pm, WARP_PORTMAP_MAPPED, method, res, 0);
		break;
	case WARP_PORTMAP_DELETE_LOSER:
		/* The same external endpoint is the same rule (one gateway, two protocols):
		 * deleting it would remove the winner's; it goes when the winner's does. */
		if (pm->have && !nat_sa_equal((const struct sockaddr *)&res->ext,
						 (const struct sockaddr *)&pm->cur.external))
			enqueue(pm->w[res->idx], JOB_DELETE);
		break;
	case WARP_PORTMAP_ALL_FAILED:
		emit(pm, WARP_PORTMAP_FAILED, 0, NULL, pm->last_err ? pm->last_err : res->status);
		break;
	default:
		break;
	}
}

static void on_result(void *arg)
{
	struct result *res = arg;
	struct shared *sh = res->sh;

	if (sh->pm)
		handle(sh->pm, res);
	free(res);
	sh_put(sh);
}

static struct worker *new_worker(unsigned int method)
{
	struct worker *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->method = method;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	return w;
}

struct warp_portmap *warp_portmap_new(struct warp_loop *loop, const struct warp_portmap_cfg *cfg,
				      warp_portmap_cb cb, void *user)
{
	struct warp_portmap *pm;
	int err = 0;

	if (!loop || !cfg || !cb || !cfg->internal_port ||
	    (cfg->proto != IPPROTO_UDP && cfg->proto != IPPROTO_TCP) ||
	    !(cfg->methods & (WARP_PORTMAP_UPNP | WARP_PORTMAP_NATPMP | WARP_PORTMAP_PINHOLE6))) {
		errno = EINVAL;
		return NULL;
	}
	pm = calloc(1, sizeof(*pm));
	if (!pm)
		return NULL;
	pm->loop = loop;
	pm->cfg = *cfg;
	if (!pm->cfg.description[0])
		snprintf(pm->cfg.description, sizeof(pm->cfg.description), "warpgate");
	if (!pm->cfg.discover_ms)
		pm->cfg.discover_ms = 2000;
	pm->cb = cb;
	pm->user = user;
	pm->sh = calloc(1, sizeof(*pm->sh));
	pm->renew_timer = warp_timer_new(loop, on_renew_timer, pm);
	pm->pinhole_timer = warp_timer_new(loop, on_pinhole_timer, pm);
	if (!pm->sh || !pm->renew_timer || !pm->pinhole_timer) {
		err = ENOMEM;
		goto fail;
	}
	pm->sh->refs = 1;
	pm->sh->pm = pm;
	if (cfg->methods & (WARP_PORTMAP_UPNP | WARP_PORTMAP_PINHOLE6))
		pm->w[pm->nw++] = new_worker(WARP_PORTMAP_UPNP);
	if (cfg->methods & WARP_PORTMAP_NATPMP)
		pm->w[pm->nw++] = new_worker(WARP_PORTMAP_NATPMP);
	for (unsigned int i = 0; i < pm->nw; i++) {
		struct worker *w = pm->w[i];

		if (!w) {
			err = ENOMEM;
			goto fail;
		}

		w->sh = pm->sh;
		w->loop = loop;
		w->cfg = pm->cfg;
		w->idx = i;
		err = pthread_create(&w->thread, NULL, worker_main, w);
		if (err)
			goto fail;
		w->started = true;
	}
	start_race(pm);
	return pm;
fail:
	warp_portmap_free(pm);
	errno = err;
	return NULL;
}

int warp_portmap_get(const struct warp_portmap *pm, struct warp_portmap_info *out)
{
	if (!pm->have)
		return -WARP_ENOTFOUND;
	*out = pm->cur;
	return 0;
}

void warp_portmap_free(struct warp_portmap *pm)
{
	if (!pm)
		return;
	if (pm->sh)
		pm->sh->pm = NULL; /* results still in the loop's queue are dropped */
	for (unsigned int i = 0; i < pm->nw; i++) {
		struct worker *w = pm->w[i];
		bool orphan;

		if (!w)
			continue;
		if (!w->started) {
			worker_free(w);
			continue;
		}
		pthread_mutex_lock(&w->lock);
		__atomic_store_n(&w->quit, true, __ATOMIC_RELEASE);
		/* SSDP discovery cannot be interrupted and made nothing yet that needs undoing:
		 * leave the thread to finish (and free its worker) instead of waiting seconds
		 * for it.  Anything else (a mapping to delete) is waited for. */
		orphan = w->orphan = w->discovering;
		pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->lock);
		if (orphan) {
			pthread_detach(w->thread);
		} else {
			pthread_join(w->thread, NULL);
			worker_free(w);
		}
	}
	warp_timer_free(pm->renew_timer);
	warp_timer_free(pm->pinhole_timer);
	if (pm->sh)
		sh_put(pm->sh);
	free(pm);
}
