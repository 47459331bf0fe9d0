// SPDX-License-Identifier: MIT
/*
 * NAT classification core.  Probes live in one array in start order; callbacks from the STUN
 * client only record results, and evaluate() (run after every input and timeout, with the
 * caller's clock) starts follow-up probes and takes decisions.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "natclass"
#include "core/bytes.h"
#include "core/log.h"
#include "nat/natclass.h"
#include "nat/sockaddr.h"

#define MAX_PROBES 128
#define MS	   1000000ull

struct probe {
	struct warp_natclass *nc;
	uint8_t kind; /* enum warp_nat_probe_kind */
	uint8_t server;
	uint8_t sock; /* index into cfg.socks (TCP probes: the mapping socket) */
	bool tcp;
	bool active; /* a client transaction (or a TCP probe) is outstanding */
	bool done;
	bool ok; /* answered with a usable success (hairpin: own request seen) */
	bool has_other;
	int status;
	int error_code;
	uint64_t id;
	uint64_t start_ns, end_ns, rtt_ns;
	unsigned int tries;
	struct sockaddr_storage dest, mapped, from, other;
};

struct server {
	int m0, alt_ip, alt_ip_port, f0, fc, fp, tcp; /* probe indices, -1: none */
	int fsock;				      /* FILTER socket index, -1: none */
	bool has_other;
	struct sockaddr_storage other;
	bool map_done, filt_done, capable;
	bool outvoted; /* its answers disagree with the majority: not trusted */
	enum warp_nat_behavior map, filt;
};

struct warp_natclass {
	struct warp_natclass_cfg cfg;
	struct warp_stun_client *client;
	struct probe probes[MAX_PROBES];
	unsigned int nprobes;
	struct server srv[WARP_NATCLASS_MAX_SERVERS];
	int msock;
	uint64_t start_ns, hard_stop;
	bool started, done;
	int hairpin; /* probe index, -1: not started */
	bool tcp_started;
	unsigned int tcp_polled;
	bool map_decided, filt_decided, blocked;
	enum warp_nat_behavior map, filt;
	struct warp_nat_report report;
};

void warp_natclass_cfg_default(struct warp_natclass_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->quorum = 2;
	cfg->probe_rto_ms = 200;
	cfg->probe_timeout_ms = 1500;
	cfg->hairpin_timeout_ms = 150;
	cfg->filter_wait_ms = 150;
	cfg->max_duration_ms = 8000;
}

static struct probe *P(struct warp_natclass *nc, int i)
{
	return i >= 0 ? &nc->probes[i] : NULL;
}

static bool pdone(struct warp_natclass *nc, int i)
{
	return i < 0 || nc->probes[i].done;
}

static bool pok(struct warp_natclass *nc, int i)
{
	return i >= 0 && nc->probes[i].done && nc->probes[i].ok;
}

struct warp_natclass *warp_natclass_new(const struct warp_natclass_cfg *cfg)
{
	struct warp_natclass *nc;
	struct warp_stun_client_cfg ccfg = { 0 };
	unsigned int nfilter = 0;
	int msock = -1, family;

	if (!cfg || cfg->n_servers == 0 || cfg->n_servers > WARP_NATCLASS_MAX_SERVERS ||
	    cfg->n_socks == 0 || cfg->n_socks > WARP_NATCLASS_MAX_SOCKS ||
	    cfg->n_local_ips > WARP_NATCLASS_MAX_LOCAL) {
		errno = EINVAL;
		return NULL;
	}
	family = cfg->servers[0].ss_family;
	for (unsigned int i = 0; i < cfg->n_servers; i++)
		if (cfg->servers[i].ss_family != family ||
		    !nat_sa_len((const struct sockaddr *)&cfg->servers[i])) {
			errno = EINVAL;
			return NULL;
		}
	for (unsigned int i = 0; i < cfg->n_socks; i++) {
		if (cfg->socks[i].role == WARP_NATCLASS_MAPPING) {
			if (msock >= 0) {
				errno = EINVAL;
				return NULL;
			}
			msock = (int)i;
		} else if (cfg->socks[i].role == WARP_NATCLASS_FILTER) {
			nfilter++;
		} else if (cfg->socks[i].role > WARP_NATCLASS_DELTA_SEQ) {
			errno = EINVAL;
			return NULL;
		}
	}
	if (msock < 0 || nfilter > cfg->n_servers) {
		errno = EINVAL;
		return NULL;
	}
	nc = calloc(1, sizeof(*nc));
	if (!nc)
		return NULL;
	nc->cfg = *cfg;
	if (!nc->cfg.quorum)
		nc->cfg.quorum = 2;
	if (!nc->cfg.probe_rto_ms)
		nc->cfg.probe_rto_ms = 200;
	if (!nc->cfg.probe_timeout_ms)
		nc->cfg.probe_timeout_ms = 1500;
	if (!nc->cfg.hairpin_timeout_ms)
		nc->cfg.hairpin_timeout_ms = 150;
	if (!nc->cfg.filter_wait_ms)
		nc->cfg.filter_wait_ms = 150;
	if (!nc->cfg.max_duration_ms)
		nc->cfg.max_duration_ms = 8000;
	ccfg.rto_ms = nc->cfg.probe_rto_ms;
	ccfg.ti_ms = nc->cfg.probe_timeout_ms;
	nc->client = warp_stun_client_new(&ccfg);
	if (!nc->client) {
		free(nc);
		return NULL;
	}
	nc->msock = msock;
	nc->hairpin = -1;
	for (unsigned int s = 0, f = 0; s < cfg->n_servers; s++) {
		struct server *sv = &nc->srv[s];

		sv->m0 = sv->alt_ip = sv->alt_ip_port = sv->f0 = sv->fc = sv->fp = sv->tcp = -1;
		sv->fsock = -1;
		for (; f < cfg->n_socks; f++)
			if (cfg->socks[f].role == WARP_NATCLASS_FILTER) {
				sv->fsock = (int)f++;
				break;
			}
	}
	nc->report.family = family;
	return nc;
}

void warp_natclass_free(struct warp_natclass *nc)
{
	if (!nc)
		return;
	warp_stun_client_free(nc->client);
	free(nc);
}

struct warp_stun_client *warp_natclass_client(struct warp_natclass *nc)
{
	return nc->client;
}

static void probe_cb(const struct warp_stun_result *res, void *user)
{
	struct probe *p = user;

	p->active = false;
	p->done = true;
	p->status = res->status;
	p->error_code = res->error_code;
	p->tries = res->transmissions;
	if (res->from)
		memcpy(&p->from, res->from, nat_sa_len(res->from));
	if (res->status || !res->msg || res->msg->cls != WARP_STUN_SUCCESS)
		return;
	p->rtt_ns = res->rtt_ns;
	if (res->mapped.ss_family == AF_UNSPEC)
		return; /* a success without a mapped address tells us nothing */
	p->mapped = res->mapped;
	p->ok = true;
	if (warp_stun_get_addr(res->msg, WARP_STUN_ATTR_OTHER_ADDRESS, &p->other) == 0)
		p->has_other = true;
}

static int start_probe(struct warp_natclass *nc, uint64_t now, uint8_t kind, unsigned int server,
		       int sock, const struct sockaddr *dest, uint32_t change, bool any_source,
		       uint32_t timeout_ms)
{
	struct warp_stun_req req = { 0 };
	struct probe *p;
	int idx, err;

	if (nc->nprobes == MAX_PROBES)
		return -1;
	idx = (int)nc->nprobes++;
	p = &nc->probes[idx];
	memset(p, 0, sizeof(*p));
	p->nc = nc;
	p->kind = kind;
	p->server = (uint8_t)server;
	p->sock = (uint8_t)sock;
	p->start_ns = now;
	memcpy(&p->dest, dest, nat_sa_len(dest));
	req.sock = nc->cfg.socks[sock].tag;
	req.dest = dest;
	req.any_source = any_source;
	req.change = change;
	req.software = nc->cfg.software;
	req.fingerprint = true;
	req.timeout_ms = timeout_ms;
	req.cb = probe_cb;
	req.user = p;
	err = warp_stun_client_start(nc->client, &req, now, &p->id);
	if (err) {
		p->done = true;
		p->status = err;
		return idx;
	}
	p->active = true;
	return idx;
}

int warp_natclass_start(struct warp_natclass *nc, uint64_t now_ns);
static void evaluate(struct warp_natclass *nc, uint64_t now);

int warp_natclass_start(struct warp_natclass *nc, uint64_t now_ns)
{
	const struct warp_natclass_cfg *cfg = &nc->cfg;
	uint32_t to = cfg->probe_timeout_ms;
	unsigned int rr = 0;

	if (nc->started)
		return -EALREADY;
	nc->started = true;
	nc->start_ns = now_ns;
	nc->hard_stop = now_ns + cfg->max_duration_ms * MS;
	for (unsigned int s = 0; s < cfg->n_servers; s++)
		nc->srv[s].m0 =
			start_probe(nc, now_ns, WARP_NAT_PROBE_BINDING, s, nc->msock,
				    (const struct sockaddr *)&cfg->servers[s], 0, false, to);
	for (unsigned int s = 0; s < cfg->n_servers; s++) {
		struct server *sv = &nc->srv[s];
		const struct sockaddr *d = (const struct sockaddr *)&cfg->servers[s];

		if (sv->fsock < 0)
			continue;
		sv->f0 = start_probe(nc, now_ns, WARP_NAT_PROBE_FILTER_BASE, s, sv->fsock, d, 0,
				     false, to);
		sv->fc = start_probe(nc, now_ns, WARP_NAT_PROBE_CHANGE_IP_PORT, s, sv->fsock, d,
				     WARP_STUN_CHANGE_IP | WARP_STUN_CHANGE_PORT, true, to);
		sv->fp = start_probe(nc, now_ns, WARP_NAT_PROBE_CHANGE_PORT, s, sv->fsock, d,
				     WARP_STUN_CHANGE_PORT, true, to);
	}
	/* delta sockets: random ports first, then the consecutive ones in port order */
	for (int role = WARP_NATCLASS_DELTA_RANDOM; role <= WARP_NATCLASS_DELTA_SEQ; role++)
		for (unsigned int i = 0; i < cfg->n_socks; i++) {
			unsigned int s = rr++ % cfg->n_servers;

			if (cfg->socks[i].role != role) {
				rr--;
				continue;
			}
			start_probe(nc, now_ns, WARP_NAT_PROBE_DELTA, s, (int)i,
				    (const struct sockaddr *)&cfg->servers[s], 0, false, to);
		}
	evaluate(nc, now_ns);
	return 0;
}

bool warp_natclass_poll_transmit(struct warp_natclass *nc, uint64_t now_ns, struct warp_stun_tx *tx)
{
	return !nc->done && warp_stun_client_poll_transmit(nc->client, now_ns, tx);
}

bool warp_natclass_poll_tcp(struct warp_natclass *nc, struct warp_natclass_tcp_probe *out)
{
	while (!nc->done && nc->tcp_started && nc->tcp_polled < nc->cfg.n_servers) {
		struct server *sv = &nc->srv[nc->tcp_polled++];

		if (sv->tcp < 0)
			continue;
		out->server = (unsigned int)(sv - nc->srv);
		out->dest = nc->probes[sv->tcp].dest;
		return true;
	}
	return false;
}

/* ---- verdicts ---- */

static bool is_local(const struct warp_natclass *nc, const struct sockaddr *mapped, int sock)
{
	const struct sockaddr *l = (const struct sockaddr *)&nc->cfg.socks[sock].local;

	if (nat_sa_port(mapped) != nat_sa_port(l))
		return false;
	if (l->sa_family == mapped->sa_family && !nat_sa_is_any(l) && nat_sa_same_ip(l, mapped))
		return true;
	for (unsigned int i = 0; i < nc->cfg.n_local_ips; i++)
		if (nat_sa_same_ip((const struct sockaddr *)&nc->cfg.local_ips[i], mapped))
			return true;
	return false;
}

static bool same(const struct probe *a, const struct probe *b)
{
	return nat_sa_equal((const struct sockaddr *)&a->mapped,
			    (const struct sockaddr *)&b->mapped);
}

/* OTHER-ADDRESS is usable only when it differs from the primary in IP and in port. */
static void learn_other(struct warp_natclass *nc, unsigned int s, const struct probe *p)
{
	struct server *sv = &nc->srv[s];
	const struct sockaddr *pri = (const struct sockaddr *)&nc->cfg.servers[s];
	const struct sockaddr *o = (const struct sockaddr *)&p->other;

	if (sv->has_other || !p->ok || !p->has_other || o->sa_family != pri->sa_family)
		return;
	if (nat_sa_same_ip(o, pri) || nat_sa_port(o) == nat_sa_port(pri))
		return;
	sv->other = p->other;
	sv->has_other = true;
}

static void server_mapping(struct warp_natclass *nc, unsigned int s)
{
	struct server *sv = &nc->srv[s];
	struct probe *m0 = P(nc, sv->m0), *a, *b;

	if (sv->map_done || !m0 || !m0->done)
		return;
	if (!m0->ok || !sv->has_other || sv->alt_ip < 0) {
		/* the alternate probes start in evaluate() as soon as OTHER-ADDRESS is known */
		if (!m0->ok || (!sv->has_other && pdone(nc, sv->f0)))
			sv->map_done = true;
		return;
	}
	a = P(nc, sv->alt_ip);
	b = P(nc, sv->alt_ip_port);
	if (a->done && a->ok) {
		if (same(a, m0)) {
			sv->map = WARP_NAT_BEH_ENDPOINT_INDEPENDENT;
		} else if (!b->done) {
			return;
		} else if (b->ok) {
			sv->map = same(b, a) ? WARP_NAT_BEH_ADDRESS_DEPENDENT
					     : WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
		} else {
			sv->map = WARP_NAT_BEH_ADDRESS_DEPENDENT; /* at least */
		}
		sv->map_done = true;
		return;
	}
	if (!a->done || !b->done)
		return;
	if (b->ok)
		sv->map = same(b, m0) ? WARP_NAT_BEH_ENDPOINT_INDEPENDENT
				      : WARP_NAT_BEH_ADDRESS_DEPENDENT;
	sv->map_done = true;
}

static uint64_t filter_grace(const struct warp_natclass *nc, const struct probe *f0)
{
	uint64_t wait = nc->cfg.filter_wait_ms * MS;

	if (4 * f0->rtt_ns > wait)
		wait = 4 * f0->rtt_ns;
	return f0->end_ns + wait;
}

/* Declares an unanswered probe lost. */
static void give_up(struct warp_natclass *nc, struct probe *p, uint64_t now)
{
	if (p->done)
		return;
	if (p->active)
		warp_stun_client_cancel(nc->client, p->id);
	p->active = false;
	p->done = true;
	p->status = -ETIMEDOUT;
	p->end_ns = now;
}

/* Completion times: the client's callbacks do not know the clock, the caller does. */
static void stamp(struct warp_natclass *nc, uint64_t now)
{
	for (unsigned int i = 0; i < nc->nprobes; i++)
		if (nc->probes[i].done && !nc->probes[i].end_ns)
			nc->probes[i].end_ns = now ? now : 1;
}

static void server_filtering(struct warp_natclass *nc, unsigned int s, uint64_t now)
{
	struct server *sv = &nc->srv[s];
	struct probe *f0 = P(nc, sv->f0), *fc, *fp;
	struct sockaddr_storage want;

	if (sv->filt_done)
		return;
	if (!f0) {
		sv->filt_done = true;
		return;
	}
	if (!f0->done || !pdone(nc, sv->m0))
		return;
	if (!f0->ok || !sv->has_other) {
		sv->filt_done = true;
		return;
	}
	fc = P(nc, sv->fc);
	fp = P(nc, sv->fp);
	if (fc->done && fc->ok) {
		/* a reply from the primary address means the server ignored CHANGE-REQUEST */
		if (nat_sa_equal((struct sockaddr *)&fc->from, (struct sockaddr *)&sv->other)) {
			sv->filt = WARP_NAT_BEH_ENDPOINT_INDEPENDENT;
			sv->capable = true;
		}
		sv->filt_done = true;
		return;
	}
	if (fc->done && fc->error_code) { /* 420: no RFC 5780 support after all */
		sv->filt_done = true;
		return;
	}
	if (!fc->done) {
		if (now < filter_grace(nc, f0))
			return;
		give_up(nc, fc, now);
	}
	/* the change-IP-and-port answer is lost: endpoint-independent filtering is ruled out */
	if (!fp->done && !(fp->active && now >= filter_grace(nc, f0)))
		return;
	want = nc->cfg.servers[s];
	nat_sa_set_port((struct sockaddr *)&want, nat_sa_port((struct sockaddr *)&sv->other));
	if (fp->done && fp->ok) {
		if (nat_sa_equal((struct sockaddr *)&fp->from, (struct sockaddr *)&want)) {
			sv->filt = WARP_NAT_BEH_ADDRESS_DEPENDENT;
			sv->capable = true;
		}
	} else if (!fp->done || !fp->error_code) {
		give_up(nc, fp, now);
		sv->filt = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
		sv->capable = true;
	}
	sv->filt_done = true;
}

/* Quorum over per-server verdicts; a tie goes to the more restrictive behaviour. */
static bool combine(const enum warp_nat_behavior *v, unsigned int n, unsigned int pending,
		    unsigned int quorum, enum warp_nat_behavior *out)
{
	unsigned int count[4] = { 0 }, best = 0;

	if (!n)
		return false;
	for (unsigned int i = 0; i < n; i++)
		count[v[i]]++;
	for (unsigned int b = 1; b <= 3; b++)
		if (count[b] && count[b] >= count[best])
			best = b;
	if (count[best] >= quorum || pending == 0) {
		*out = (enum warp_nat_behavior)best;
		return true;
	}
	return false;
}

/* Mapping from the MAPPING socket's mappings towards different destinations (plain
 * servers): equal everywhere is endpoint-independent; a difference between two ports of one
 * IP is address-and-port-dependent; otherwise (different IPs only) address-dependent is the
 * most that can be said. */
static enum warp_nat_behavior mapping_from_pairs(struct warp_natclass *nc)
{
	bool differ = false, port_dep = false, any_pair = false;

	for (unsigned int i = 0; i < nc->nprobes; i++) {
		struct probe *a = &nc->probes[i];

		if (!a->ok || a->tcp || (int)a->sock != nc->msock ||
		    a->kind == WARP_NAT_PROBE_HAIRPIN)
			continue;
		for (unsigned int j = i + 1; j < nc->nprobes; j++) {
			struct probe *b = &nc->probes[j];

			if (!b->ok || b->tcp || (int)b->sock != nc->msock ||
			    b->kind == WARP_NAT_PROBE_HAIRPIN ||
			    nat_sa_equal((struct sockaddr *)&a->dest, (struct sockaddr *)&b->dest))
				continue;
			any_pair = true;
			if (same(a, b))
				continue;
			differ = true;
			if (nat_sa_same_ip((struct sockaddr *)&a->dest,
					   (struct sockaddr *)&b->dest))
				port_dep = true;
		}
	}
	if (!any_pair)
		return WARP_NAT_BEH_UNKNOWN;
	if (!differ)
		return WARP_NAT_BEH_ENDPOINT_INDEPENDENT;
	return port_dep ? WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT : WARP_NAT_BEH_ADDRESS_DEPENDENT;
}

/* true when most mappings seen by the MAPPING socket are not the socket's own address */
static bool behind_nat(struct warp_natclass *nc, bool *known)
{
	unsigned int local = 0, other = 0;

	for (unsigned int i = 0; i < nc->nprobes; i++) {
		struct probe *p = &nc->probes[i];

		if (!p->ok || p->tcp || (int)p->sock != nc->msock ||
		    p->kind == WARP_NAT_PROBE_HAIRPIN)
			continue;
		if (is_local(nc, (struct sockaddr *)&p->mapped, p->sock))
			local++;
		else
			other++;
	}
	*known = local + other > 0;
	return other >= local;
}

static void decide(struct warp_natclass *nc)
{
	enum warp_nat_behavior mv[WARP_NATCLASS_MAX_SERVERS], fv[WARP_NATCLASS_MAX_SERVERS];
	unsigned int nm = 0, nf = 0, pm = 0, pf = 0;
	bool known, nat = behind_nat(nc, &known);

	for (unsigned int s = 0; s < nc->cfg.n_servers; s++) {
		struct server *sv = &nc->srv[s];

		if (!sv->map_done)
			pm++;
		else if (sv->map)
			mv[nm++] = sv->map;
		if (!sv->filt_done)
			pf++;
		else if (sv->filt)
			fv[nf++] = sv->filt;
	}
	if (!nc->map_decided) {
		if (known && !nat && pm == 0) {
			nc->map = WARP_NAT_BEH_ENDPOINT_INDEPENDENT; /* nothing is translated */
			nc->map_decided = true;
		} else if (combine(mv, nm, pm, nc->cfg.quorum, &nc->map)) {
			nc->map_decided = true;
		} else if (pm == 0) {
			nc->map = mapping_from_pairs(nc);
			nc->map_decided = true;
		}
	}
	if (!nc->filt_decided) {
		if (combine(fv, nf, pf, nc->cfg.quorum, &nc->filt)) {
			nc->filt_decided = true;
		} else if (pf == 0) {
			nc->filt = WARP_NAT_BEH_UNKNOWN;
			nc->filt_decided = true;
		}
	}
}

/* Servers whose answers disagree with a verdict other servers agree on. */
static void mark_outvoted(struct warp_natclass *nc)
{
	unsigned int support = 0, best = 0;
	int best_s = -1;

	for (unsigned int s = 0; s < nc->cfg.n_servers; s++)
		support += nc->srv[s].map && nc->srv[s].map == nc->map;
	if (support >= 2)
		for (unsigned int s = 0; s < nc->cfg.n_servers; s++)
			if (nc->srv[s].map && nc->srv[s].map != nc->map)
				nc->srv[s].outvoted = true;
	if (nc->map != WARP_NAT_BEH_ENDPOINT_INDEPENDENT)
		return;
	/* one mapping for every destination: the servers must all report the same one */
	for (unsigned int s = 0; s < nc->cfg.n_servers; s++) {
		unsigned int n = 0;

		if (!pok(nc, nc->srv[s].m0))
			continue;
		for (unsigned int t = 0; t < nc->cfg.n_servers; t++)
			n += pok(nc, nc->srv[t].m0) &&
			     same(P(nc, nc->srv[s].m0), P(nc, nc->srv[t].m0));
		if (n > best) {
			best = n;
			best_s = (int)s;
		}
	}
	if (best < 2)
		return;
	for (unsigned int s = 0; s < nc->cfg.n_servers; s++)
		if (pok(nc, nc->srv[s].m0) &&
		    !same(P(nc, nc->srv[s].m0), P(nc, nc->srv[best_s].m0)))
			nc->srv[s].outvoted = true;
}

/* ---- delta ---- */

static int mode(const int *v, unsigned int n, unsigned int *count)
{
	int best = 0;

	*count = 0;
	for (unsigned int i = 0; i < n; i++) {
		unsigned int c = 0;

		if (v[i] == INT_MIN)
			continue;
		for (unsigned int j = 0; j < n; j++)
			c += v[j] == v[i];
		if (c > *count) {
			*count = c;
			best = v[i];
		}
	}
	return best;
}

static unsigned int need(unsigned int n, unsigned int floor)
{
	unsigned int t = (n * 6 + 9) / 10; /* 60 %, rounded up */

	return t < floor ? floor : t;
}

static int cmp_local(const void *a, const void *b)
{
	const struct warp_nat_delta_sample *x = a, *y = b;

	return (int)x->local - (int)y->local;
}

enum warp_nat_delta warp_nat_delta_classify(const struct warp_nat_delta_sample *s, unsigned int n,
					    int32_t *value)
{
	int v[WARP_NATCLASS_MAX_SOCKS * 4];
	struct warp_nat_delta_sample seq[WARP_NATCLASS_MAX_SOCKS * 4];
	unsigned int cnt, eq = 0, nseq = 0, k;
	int best;

	*value = 0;
	if (n < 3)
		return WARP_NAT_DELTA_NONE;
	if (n > WARP_ARRAY_SIZE(v))
		n = WARP_ARRAY_SIZE(v);
	for (unsigned int i = 0; i < n; i++)
		eq += s[i].mapped == s[i].local;
	if (eq >= need(n, 3))
		return WARP_NAT_DELTA_EQUAL;

	/* preserving: external - local constant, over local ports that are not evenly spaced */
	for (unsigned int i = 0; i < n; i++)
		v[i] = (int)s[i].mapped - (int)s[i].local;
	best = mode(v, n, &cnt);
	if (best && cnt >= need(n, 3)) {
		int d0 = INT_MIN;
		bool varied = false;
		int prev = -1;

		for (unsigned int i = 0; i < n; i++) {
			if (v[i] != best)
				continue;
			if (prev >= 0) {
				int d = (int)s[i].local - prev;

				if (d0 == INT_MIN)
					d0 = d;
				else if (d != d0)
					varied = true;
			}
			prev = s[i].local;
		}
		if (varied) {
			*value = best;
			return WARP_NAT_DELTA_PRESERVING;
		}
	}

	/* independent: +d per new mapping, whatever the local port */
	for (unsigned int i = 1; i < n; i++) {
		int dn = (int)s[i].order - (int)s[i - 1].order;
		int dm = (int)s[i].mapped - (int)s[i - 1].mapped;

		v[i - 1] = dn > 0 && dm % dn == 0 && dm ? dm / dn : INT_MIN;
	}
	best = mode(v, n - 1, &cnt);
	if (cnt && cnt >= need(n - 1, 2)) {
		*value = best;
		return WARP_NAT_DELTA_INDEPENDENT;
	}

	/* dependent: +d between consecutive local ports */
	for (unsigned int i = 0; i < n; i++)
		if (s[i].seq)
			seq[nseq++] = s[i];
	qsort(seq, nseq, sizeof(seq[0]), cmp_local);
	k = 0;
	for (unsigned int i = 1; i < nseq; i++)
		if (seq[i].local - seq[i - 1].local == 1 && seq[i].mapped != seq[i - 1].mapped)
			v[k++] = (int)seq[i].mapped - (int)seq[i - 1].mapped;
	best = mode(v, k, &cnt);
	if (k >= 2 && cnt >= need(k, 2)) {
		*value = best;
		return WARP_NAT_DELTA_DEPENDENT;
	}
	return WARP_NAT_DELTA_RANDOM;
}

/* Does probe b reuse the mapping of probe a under mapping behaviour m? */
static bool same_mapping_key(const struct probe *a, const struct probe *b, enum warp_nat_behavior m)
{
	if (a->sock != b->sock)
		return false;
	if (m == WARP_NAT_BEH_ENDPOINT_INDEPENDENT)
		return true;
	if (m == WARP_NAT_BEH_ADDRESS_DEPENDENT)
		return nat_sa_same_ip((struct sockaddr *)&a->dest, (struct sockaddr *)&b->dest);
	return nat_sa_equal((struct sockaddr *)&a->dest, (struct sockaddr *)&b->dest);
}

static void compute_delta(struct warp_natclass *nc, bool nat)
{
	struct warp_nat_delta_sample smp[MAX_PROBES];
	int owner[MAX_PROBES]; /* first probe of each mapping */
	unsigned int nkeys = 0, n = 0;
	struct warp_nat_report *r = &nc->report;

	r->delta = WARP_NAT_DELTA_NONE;
	r->delta_value = 0;
	if (!nat)
		return;
	for (unsigned int i = 0; i < nc->nprobes; i++) {
		struct probe *p = &nc->probes[i];
		unsigned int k;

		if (p->tcp || !p->id)
			continue; /* never sent */
		for (k = 0; k < nkeys; k++)
			if (same_mapping_key(&nc->probes[owner[k]], p, nc->map))
				break;
		if (k == nkeys) {
			owner[nkeys] = (int)i;
			smp[nkeys].order = nkeys;
			smp[nkeys].local =
				nat_sa_port((struct sockaddr *)&nc->cfg.socks[p->sock].local);
			smp[nkeys].mapped = 0;
			smp[nkeys].seq = nc->cfg.socks[p->sock].role == WARP_NATCLASS_DELTA_SEQ;
			nkeys++;
		}
		if (p->ok && p->kind != WARP_NAT_PROBE_HAIRPIN && !smp[k].mapped &&
		    !nc->srv[p->server].outvoted)
			smp[k].mapped = nat_sa_port((struct sockaddr *)&p->mapped);
	}
	for (unsigned int k = 0; k < nkeys; k++)
		if (smp[k].mapped)
			smp[n++] = smp[k];
	r->delta_samples = (uint8_t)(n > 255 ? 255 : n);
	r->delta = warp_nat_delta_classify(smp, n, &r->delta_value);
}

/* ---- completion ---- */

static void add_external(struct warp_nat_report *r, const struct sockaddr_storage *a)
{
	for (unsigned int i = 0; i < r->n_external; i++)
		if (nat_sa_equal((const struct sockaddr *)&r->external[i],
				 (const struct sockaddr *)a))
			return;
	if (r->n_external < WARP_NAT_MAX_EXTERNAL)
		r->external[r->n_external++] = *a;
}

static void finish(struct warp_natclass *nc, uint64_t now)
{
	struct warp_nat_report *r = &nc->report;
	bool known, nat;

	decide(nc);
	mark_outvoted(nc);
	for (unsigned int i = 0; i < nc->nprobes; i++) {
		struct probe *p = &nc->probes[i];

		if (p->active && !p->tcp)
			warp_stun_client_cancel(nc->client, p->id);
		if (!p->done) {
			p->active = false;
			p->done = true;
			p->status = -ECANCELED;
		}
	}
	nc->done = true;
	nat = behind_nat(nc, &known);
	r->udp = false;
	r->tcp = false;
	r->rfc5780 = false;
	r->servers_answered = 0;
	for (unsigned int s = 0; s < nc->cfg.n_servers; s++) {
		struct server *sv = &nc->srv[s];

		if (pok(nc, sv->m0) || pok(nc, sv->f0) || pok(nc, sv->tcp))
			r->servers_answered++;
		if (sv->capable)
			r->rfc5780 = true;
		if (pok(nc, sv->tcp) && !r->tcp) {
			r->tcp = true;
			r->tcp_external = nc->probes[sv->tcp].mapped;
		}
	}
	for (unsigned int i = 0; i < nc->nprobes; i++) {
		struct probe *p = &nc->probes[i];

		if (p->ok && !p->tcp && p->kind != WARP_NAT_PROBE_HAIRPIN)
			r->udp = true;
		if (p->ok && !p->tcp && (int)p->sock == nc->msock &&
		    p->kind != WARP_NAT_PROBE_HAIRPIN && !nc->srv[p->server].outvoted)
			add_external(r, &p->mapped);
	}
	r->nat = r->udp && (!known || nat);
	r->mapping = r->udp ? nc->map : WARP_NAT_BEH_UNKNOWN;
	r->filtering = r->udp ? nc->filt : WARP_NAT_BEH_UNKNOWN;
	r->hairpin = nc->hairpin >= 0 && nc->probes[nc->hairpin].ok;
	if (!r->udp)
		r->type = WARP_NAT_BLOCKED;
	else
		r->type = warp_nat_type_from_behavior(r->nat, r->mapping, r->filtering);
	if (r->udp)
		compute_delta(nc, r->nat);
	r->duration_ms = (uint32_t)((now - nc->start_ns) / MS);
	r->local = nc->cfg.socks[nc->msock].local;
	if (nat_sa_is_any((struct sockaddr *)&r->local)) {
		for (unsigned int i = 0; i < nc->cfg.n_local_ips; i++) {
			uint16_t port = nat_sa_port((struct sockaddr *)&r->local);

			if (nc->cfg.local_ips[i].ss_family != r->local.ss_family)
				continue;
			r->local = nc->cfg.local_ips[i];
			nat_sa_set_port((struct sockaddr *)&r->local, port);
			break;
		}
	}
	r->n_probes = 0;
	for (unsigned int i = 0; i < nc->nprobes && r->n_probes < WARP_NAT_MAX_PROBES; i++) {
		struct probe *p = &nc->probes[i];
		struct warp_nat_probe *o = &r->probes[r->n_probes++];

		memset(o, 0, sizeof(*o));
		o->kind = p->kind;
		o->server = p->server;
		o->socket = p->sock;
		o->tries = (uint8_t)(p->tries > 255 ? 255 : p->tries);
		o->ok = p->ok;
		o->local_port = nat_sa_port((struct sockaddr *)&nc->cfg.socks[p->sock].local);
		o->sent_ms = (uint32_t)((p->start_ns - nc->start_ns) / MS);
		o->rtt_us = p->ok ? (uint32_t)(p->rtt_ns / 1000) : 0;
		o->dest = p->dest;
		if (p->ok)
			o->mapped = p->mapped;
	}
	pr_debug("done in %u ms: %s, mapping %s, filtering %s, delta %s %d", r->duration_ms,
		 warp_nat_type_name(r->type), warp_nat_behavior_name(r->mapping),
		 warp_nat_behavior_name(r->filtering), warp_nat_delta_name(r->delta),
		 r->delta_value);
}

static void evaluate(struct warp_natclass *nc, uint64_t now)
{
	const struct warp_natclass_cfg *cfg = &nc->cfg;
	bool udp_ok = false, udp_pending = false, delta_pending = false, hairpin_done;

	if (!nc->started || nc->done)
		return;
	for (unsigned int s = 0; s < cfg->n_servers; s++) {
		struct server *sv = &nc->srv[s];

		learn_other(nc, s, P(nc, sv->m0));
		if (sv->f0 >= 0)
			learn_other(nc, s, P(nc, sv->f0));
		if (sv->has_other && pok(nc, sv->m0) && sv->alt_ip < 0) {
			struct sockaddr_storage alt = sv->other;

			nat_sa_set_port((struct sockaddr *)&alt,
					nat_sa_port((struct sockaddr *)&cfg->servers[s]));
			sv->alt_ip = start_probe(nc, now, WARP_NAT_PROBE_ALT_IP, s, nc->msock,
						 (struct sockaddr *)&alt, 0, false,
						 cfg->probe_timeout_ms);
			sv->alt_ip_port = start_probe(nc, now, WARP_NAT_PROBE_ALT_IP_PORT, s,
						      nc->msock, (struct sockaddr *)&sv->other, 0,
						      false, cfg->probe_timeout_ms);
		}
		server_mapping(nc, s);
		server_filtering(nc, s, now);
	}
	for (unsigned int i = 0; i < nc->nprobes; i++) {
		struct probe *p = &nc->probes[i];

		if (p->tcp || p->kind == WARP_NAT_PROBE_HAIRPIN)
			continue;
		udp_ok |= p->ok;
		udp_pending |= !p->done;
		if (p->kind == WARP_NAT_PROBE_DELTA)
			delta_pending |= !p->done;
	}
	/* hairpin: send a request to our own mapped address, from the mapping socket */
	if (!cfg->no_hairpin && nc->hairpin < 0) {
		for (unsigned int s = 0; s < cfg->n_servers; s++) {
			struct probe *m0 = P(nc, nc->srv[s].m0);

			if (!m0 || !m0->ok)
				continue;
			nc->hairpin = start_probe(nc, now, WARP_NAT_PROBE_HAIRPIN, s, nc->msock,
						  (struct sockaddr *)&m0->mapped, 0, true,
						  cfg->hairpin_timeout_ms);
			break;
		}
	}
	decide(nc);
	if (!udp_ok && !udp_pending) {
		/* UDP is blocked; ask over TCP whether anything gets out at all */
		nc->blocked = true;
		if (!cfg->no_tcp && !nc->tcp_started) {
			nc->tcp_started = true;
			for (unsigned int s = 0; s < cfg->n_servers && nc->nprobes < MAX_PROBES;
			     s++) {
				struct probe *p = &nc->probes[nc->nprobes];

				memset(p, 0, sizeof(*p));
				p->nc = nc;
				p->kind = WARP_NAT_PROBE_TCP;
				p->server = (uint8_t)s;
				p->sock = (uint8_t)nc->msock;
				p->tcp = true;
				p->active = true;
				p->start_ns = now;
				p->dest = cfg->servers[s];
				nc->srv[s].tcp = (int)nc->nprobes++;
			}
		}
		{
			bool tcp_ok = false, tcp_pending = false;

			for (unsigned int s = 0; s < cfg->n_servers; s++) {
				tcp_ok |= pok(nc, nc->srv[s].tcp);
				tcp_pending |= !pdone(nc, nc->srv[s].tcp);
			}
			if (cfg->no_tcp || tcp_ok || !tcp_pending)
				finish(nc, now);
		}
		return;
	}
	if (cfg->no_hairpin)
		hairpin_done = true;
	else if (nc->hairpin >= 0)
		hairpin_done = nc->probes[nc->hairpin].done;
	else /* it can only start from a mapping-socket answer */
		hairpin_done = !udp_pending;
	if (udp_ok && nc->map_decided && nc->filt_decided && !delta_pending && hairpin_done)
		finish(nc, now);
}

int warp_natclass_handle_input(struct warp_natclass *nc, int sock, const void *buf, size_t len,
			       const struct sockaddr *from, uint64_t rx_ns)
{
	int ret;

	if (nc->done)
		return 0;
	ret = warp_stun_client_handle_input(nc->client, sock, buf, len, from, rx_ns);
	stamp(nc, rx_ns);
	if (ret == 0 && nc->hairpin >= 0 && !nc->probes[nc->hairpin].done &&
	    sock == nc->cfg.socks[nc->msock].tag) {
		struct probe *p = &nc->probes[nc->hairpin];
		const uint8_t *tid = warp_stun_client_tid(nc->client, p->id);
		struct warp_stun_msg m;

		if (tid && warp_stun_decode(&m, buf, len) == 0 && m.cls == WARP_STUN_REQUEST &&
		    !memcmp(m.tid, tid, WARP_STUN_TID_LEN)) {
			warp_stun_client_cancel(nc->client, p->id);
			p->active = false;
			p->done = true;
			p->ok = true;
			p->tries = 1;
			p->end_ns = rx_ns;
			p->rtt_ns = rx_ns > p->start_ns ? rx_ns - p->start_ns : 0;
			if (from)
				memcpy(&p->mapped, from, nat_sa_len(from));
			ret = 1;
		}
	}
	evaluate(nc, rx_ns);
	return ret;
}

void warp_natclass_tcp_result(struct warp_natclass *nc, unsigned int server, int status,
			      const struct sockaddr *mapped, uint64_t rtt_ns, uint64_t now_ns)
{
	struct probe *p;

	if (nc->done || server >= nc->cfg.n_servers || nc->srv[server].tcp < 0)
		return;
	p = &nc->probes[nc->srv[server].tcp];
	if (p->done)
		return;
	p->active = false;
	p->done = true;
	p->status = status;
	p->tries = 1;
	p->end_ns = now_ns;
	if (!status && mapped && nat_sa_len(mapped)) {
		p->ok = true;
		p->rtt_ns = rtt_ns;
		memcpy(&p->mapped, mapped, nat_sa_len(mapped));
	}
	evaluate(nc, now_ns);
}

void warp_natclass_handle_timeout(struct warp_natclass *nc, uint64_t now_ns)
{
	if (!nc->started || nc->done)
		return;
	warp_stun_client_handle_timeout(nc->client, now_ns);
	stamp(nc, now_ns);
	if (now_ns >= nc->hard_stop) {
		finish(nc, now_ns);
		return;
	}
	evaluate(nc, now_ns);
}

uint64_t warp_natclass_next_deadline(const struct warp_natclass *nc)
{
	uint64_t d;

	if (!nc->started || nc->done)
		return WARP_STUN_NEVER;
	d = warp_stun_client_next_deadline(nc->client);
	if (nc->hard_stop < d)
		d = nc->hard_stop;
	for (unsigned int s = 0; s < nc->cfg.n_servers; s++) {
		const struct server *sv = &nc->srv[s];
		const struct probe *f0;
		uint64_t g;

		if (sv->filt_done || sv->f0 < 0)
			continue;
		f0 = &nc->probes[sv->f0];
		if (!f0->ok || !f0->end_ns)
			continue;
		if (nc->probes[sv->fc].done && nc->probes[sv->fp].done)
			continue;
		g = filter_grace(nc, f0);
		if (g < d)
			d = g;
	}
	return d;
}

bool warp_natclass_done(const struct warp_natclass *nc)
{
	return nc->done;
}

const struct warp_nat_report *warp_natclass_report(const struct warp_natclass *nc)
{
	return &nc->report;
}
