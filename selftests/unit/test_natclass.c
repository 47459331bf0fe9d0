// SPDX-License-Identifier: MIT
/*
 * NAT classification against an in-process fake Internet: a fake NAT (mapping, filtering,
 * port allocation, hairpinning, UDP blocking) in front of the host, and fake STUN servers
 * (RFC 5780 with four addresses, plain RFC 5389, or lying) behind it.  Real STUN bytes flow
 * through the real codec and client; time is virtual, so every run is exact and instant.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/nat.h>

#include "core/bytes.h"
#include "nat/natclass.h"
#include "nat/natreport.h"
#include "nat/sockaddr.h"
#include "nat/stun.h"

#define MS	 1000000ull
#define HOST_IP	 "10.0.0.2"
#define PUB_IP	 "198.51.100.20" /* the host's address when there is no NAT */
#define EXT_IP	 "203.0.113.10"
#define MAX_MAPS 256
#define MAX_PKTS 4096

enum alloc {
	ALLOC_PRESERVE, /* external = local port when free */
	ALLOC_SEQ,	/* base + n * delta for the n-th mapping */
	ALLOC_RANDOM,
	ALLOC_DEPENDENT, /* f(base + delta * local) (+97 per extra mapping of one socket) */
	ALLOC_OFFSET,	 /* local + delta */
};

enum server_kind { SRV_RFC5780, SRV_PLAIN, SRV_LIAR, SRV_DEAD };

struct nat_map {
	uint16_t local, ext;
	struct sockaddr_storage key_dest; /* destination that created it */
	unsigned int ncontacted;
	struct sockaddr_storage contacted[64];
};

struct pkt {
	uint64_t at;
	struct sockaddr_storage src, dst;
	uint8_t data[600];
	size_t len;
};

struct world {
	/* NAT */
	bool no_nat;
	enum warp_nat_behavior mapping, filtering;
	enum alloc alloc;
	int base, delta;
	bool hairpin;
	bool udp_blocked, tcp_ok;
	int drop_first_n; /* drop the first transmission of this many flows */
	struct nat_map maps[MAX_MAPS];
	unsigned int nmaps;
	uint32_t rng;
	/* servers */
	unsigned int nservers;
	enum server_kind kind[4];
	/* network */
	struct pkt *q;
	unsigned int nq;
	uint64_t now;
	/* host */
	struct warp_natclass_cfg cfg;
	struct warp_natclass *nc;
	int tcp_pending[4];
	uint64_t tcp_at[4];
	unsigned int sent, dropped;
	struct sockaddr_storage seen_first[512];
	unsigned int nseen;
};

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
	struct sockaddr_storage s;

	assert_int_equal(nat_sa_parse(ip, port, &s), 0);
	return s;
}

static struct sockaddr_storage srv_addr(unsigned int k, int ip, int port)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "192.0.2.%u", 10 + 2 * k + (unsigned int)ip);
	return sa(buf, (uint16_t)(3478 + port));
}

static uint32_t rnd(struct world *w)
{
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 17;
	w->rng ^= w->rng << 5;
	return w->rng;
}

static void enqueue(struct world *w, uint64_t at, const struct sockaddr_storage *src,
		    const struct sockaddr_storage *dst, const void *data, size_t len)
{
	struct pkt *p;

	assert_true(w->nq < MAX_PKTS);
	assert_true(len <= sizeof(p->data));
	p = &w->q[w->nq++];
	p->at = at;
	p->src = *src;
	p->dst = *dst;
	memcpy(p->data, data, len);
	p->len = len;
}

/* ---- fake NAT ---- */

static bool same_key(struct world *w, const struct nat_map *m, uint16_t local,
		     const struct sockaddr *dest)
{
	if (m->local != local)
		return false;
	if (w->mapping == WARP_NAT_BEH_ENDPOINT_INDEPENDENT)
		return true;
	if (w->mapping == WARP_NAT_BEH_ADDRESS_DEPENDENT)
		return nat_sa_same_ip((struct sockaddr *)&m->key_dest, dest);
	return nat_sa_equal((struct sockaddr *)&m->key_dest, dest);
}

static bool ext_used(struct world *w, uint16_t port)
{
	for (unsigned int i = 0; i < w->nmaps; i++)
		if (w->maps[i].ext == port)
			return true;
	return false;
}

static struct nat_map *nat_out(struct world *w, uint16_t local, const struct sockaddr *dest)
{
	struct nat_map *m;
	unsigned int per_sock = 0;
	uint16_t ext;

	for (unsigned int i = 0; i < w->nmaps; i++) {
		if (same_key(w, &w->maps[i], local, dest))
			return &w->maps[i];
		per_sock += w->maps[i].local == local;
	}
	switch (w->alloc) {
	case ALLOC_PRESERVE:
		for (ext = local; ext_used(w, ext); ext++)
			;
		break;
	case ALLOC_SEQ:
		ext = (uint16_t)(w->base + (int)w->nmaps * w->delta);
		break;
	case ALLOC_DEPENDENT:
		ext = (uint16_t)((w->base + w->delta * local + 97 * (int)per_sock) % 50000 + 10000);
		break;
	case ALLOC_OFFSET:
		ext = (uint16_t)(local + w->delta);
		break;
	default:
		do {
			ext = (uint16_t)(1024 + rnd(w) % 64000);
		} while (ext_used(w, ext));
	}
	assert_true(w->nmaps < MAX_MAPS);
	m = &w->maps[w->nmaps++];
	memset(m, 0, sizeof(*m));
	m->local = local;
	m->ext = ext;
	memcpy(&m->key_dest, dest, nat_sa_len(dest));
	return m;
}

static void contact(struct nat_map *m, const struct sockaddr *dest)
{
	for (unsigned int i = 0; i < m->ncontacted; i++)
		if (nat_sa_equal((struct sockaddr *)&m->contacted[i], dest))
			return;
	if (m->ncontacted < 64)
		memcpy(&m->contacted[m->ncontacted++], dest, nat_sa_len(dest));
}

static bool filter_allows(struct world *w, const struct nat_map *m, const struct sockaddr *src)
{
	if (w->filtering == WARP_NAT_BEH_ENDPOINT_INDEPENDENT)
		return true;
	for (unsigned int i = 0; i < m->ncontacted; i++) {
		const struct sockaddr *c = (const struct sockaddr *)&m->contacted[i];

		if (w->filtering == WARP_NAT_BEH_ADDRESS_DEPENDENT ? nat_sa_same_ip(c, src)
								   : nat_sa_equal(c, src))
			return true;
	}
	return false;
}

static int sock_tag_of_port(struct world *w, uint16_t port)
{
	for (unsigned int i = 0; i < w->cfg.n_socks; i++)
		if (nat_sa_port((struct sockaddr *)&w->cfg.socks[i].local) == port)
			return w->cfg.socks[i].tag;
	return -1;
}

static void host_deliver(struct world *w, uint16_t local_port, const struct sockaddr_storage *src,
			 const uint8_t *data, size_t len)
{
	int tag = sock_tag_of_port(w, local_port);

	if (tag >= 0)
		warp_natclass_handle_input(w->nc, tag, data, len, (struct sockaddr *)src, w->now);
}

/* A packet arriving at the NAT's (or the host's public) address from the Internet. */
static void nat_in(struct world *w, const struct sockaddr_storage *src,
		   const struct sockaddr_storage *dst, const uint8_t *data, size_t len)
{
	uint16_t port = nat_sa_port((struct sockaddr *)dst);

	if (w->no_nat) {
		/* firewall only: the same filtering rules, keyed by local port */
		for (unsigned int i = 0; i < w->nmaps; i++)
			if (w->maps[i].local == port) {
				if (filter_allows(w, &w->maps[i], (struct sockaddr *)src))
					host_deliver(w, port, src, data, len);
				return;
			}
		return;
	}
	for (unsigned int i = 0; i < w->nmaps; i++)
		if (w->maps[i].ext == port) {
			if (filter_allows(w, &w->maps[i], (struct sockaddr *)src))
				host_deliver(w, w->maps[i].local, src, data, len);
			return;
		}
}

static bool first_of_flow(struct world *w, uint16_t local, const struct sockaddr *dest)
{
	struct sockaddr_storage k = *(const struct sockaddr_storage *)dest;

	/* encode the local port in the scope of the key: port pairs are unique enough */
	((struct sockaddr_in *)&k)->sin_zero[0] = (uint8_t)(local >> 8);
	((struct sockaddr_in *)&k)->sin_zero[1] = (uint8_t)local;
	for (unsigned int i = 0; i < w->nseen; i++)
		if (!memcmp(&w->seen_first[i], &k, sizeof(struct sockaddr_in)))
			return false;
	if (w->nseen < 512)
		w->seen_first[w->nseen++] = k;
	return true;
}

/* The host sends from local_port to dest. */
static void host_send(struct world *w, uint16_t local_port, const struct sockaddr_storage *dest,
		      const uint8_t *data, size_t len)
{
	struct sockaddr_storage src;
	struct nat_map *m;

	w->sent++;
	if (w->udp_blocked)
		return;
	if (w->drop_first_n > 0 && first_of_flow(w, local_port, (struct sockaddr *)dest)) {
		w->drop_first_n--;
		w->dropped++;
		return;
	}
	if (w->no_nat) {
		src = sa(PUB_IP, local_port);
		for (unsigned int i = 0; i < w->nmaps; i++)
			if (w->maps[i].local == local_port) {
				contact(&w->maps[i], (struct sockaddr *)dest);
				goto send;
			}
		m = &w->maps[w->nmaps++];
		memset(m, 0, sizeof(*m));
		m->local = m->ext = local_port;
		contact(m, (struct sockaddr *)dest);
		goto send;
	}
	m = nat_out(w, local_port, (struct sockaddr *)dest);
	contact(m, (struct sockaddr *)dest);
	src = sa(EXT_IP, m->ext);
	if (nat_sa_same_ip((struct sockaddr *)dest, (struct sockaddr *)&src)) {
		if (w->hairpin) /* back in through the NAT's inbound path */
			enqueue(w, w->now + 1 * MS, &src, dest, data, len);
		return;
	}
send:
	enqueue(w, w->now + 10 * MS, &src, dest, data, len);
}

/* ---- fake STUN servers ---- */

static bool server_of(struct world *w, const struct sockaddr *a, unsigned int *k, int *ip,
		      int *port)
{
	for (unsigned int s = 0; s < w->nservers; s++)
		for (int i = 0; i < 2; i++)
			for (int p = 0; p < 2; p++) {
				struct sockaddr_storage x = srv_addr(s, i, p);

				if (nat_sa_equal(a, (struct sockaddr *)&x)) {
					*k = s;
					*ip = i;
					*port = p;
					return true;
				}
			}
	return false;
}

static void server_recv(struct world *w, const struct pkt *p)
{
	struct warp_stun_msg m;
	struct warp_stun_builder b;
	struct sockaddr_storage from, other, mapped = p->src;
	unsigned int k;
	int ip, port, n;
	uint32_t change = 0;
	uint8_t out[256];

	if (!server_of(w, (struct sockaddr *)&p->dst, &k, &ip, &port))
		return; /* nobody there */
	if (w->kind[k] == SRV_DEAD || (w->kind[k] == SRV_PLAIN && (ip || port)))
		return;
	if (warp_stun_decode(&m, p->data, p->len) || m.cls != WARP_STUN_REQUEST)
		return;
	warp_stun_get_u32(&m, WARP_STUN_ATTR_CHANGE_REQUEST, &change);
	if (w->kind[k] == SRV_PLAIN && change) {
		const uint16_t unk = WARP_STUN_ATTR_CHANGE_REQUEST;

		warp_stun_build_init(&b, out, sizeof(out), m.method, WARP_STUN_ERROR, m.tid);
		warp_stun_add_error(&b, 420, "Unknown Attribute");
		warp_stun_add_unknown_attrs(&b, &unk, 1);
		n = warp_stun_build_end(&b);
		enqueue(w, w->now + 10 * MS, &p->dst, &p->src, out, (size_t)n);
		return;
	}
	if (change & WARP_STUN_CHANGE_IP)
		ip = !ip;
	if (change & WARP_STUN_CHANGE_PORT)
		port = !port;
	from = srv_addr(k, ip, port);
	other = srv_addr(k, 1, 1);
	if (w->kind[k] == SRV_LIAR)
		nat_sa_set_port((struct sockaddr *)&mapped, (uint16_t)(1024 + rnd(w) % 60000));
	warp_stun_build_init(&b, out, sizeof(out), m.method, WARP_STUN_SUCCESS, m.tid);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, (struct sockaddr *)&mapped);
	if (w->kind[k] != SRV_PLAIN) {
		warp_stun_add_addr(&b, WARP_STUN_ATTR_OTHER_ADDRESS, (struct sockaddr *)&other);
		warp_stun_add_addr(&b, WARP_STUN_ATTR_RESPONSE_ORIGIN, (struct sockaddr *)&from);
	}
	warp_stun_add_fingerprint(&b);
	n = warp_stun_build_end(&b);
	assert_true(n > 0);
	enqueue(w, w->now + 10 * MS, &from, &p->src, out, (size_t)n);
}

static bool to_host_side(struct world *w, const struct sockaddr_storage *dst)
{
	struct sockaddr_storage ext = sa(w->no_nat ? PUB_IP : EXT_IP, 0);

	return nat_sa_same_ip((struct sockaddr *)dst, (struct sockaddr *)&ext);
}

/* ---- driving ---- */

static void world_init(struct world *w, unsigned int nservers, const enum server_kind *kinds)
{
	uint16_t seq_base = 41000;

	memset(w, 0, sizeof(*w));
	w->q = calloc(MAX_PKTS, sizeof(*w->q));
	assert_non_null(w->q);
	w->rng = 0x12345678;
	w->mapping = WARP_NAT_BEH_ENDPOINT_INDEPENDENT;
	w->filtering = WARP_NAT_BEH_ENDPOINT_INDEPENDENT;
	w->hairpin = true;
	w->nservers = nservers;
	warp_natclass_cfg_default(&w->cfg);
	w->cfg.n_servers = nservers;
	for (unsigned int s = 0; s < nservers; s++) {
		w->kind[s] = kinds[s];
		w->cfg.servers[s] = srv_addr(s, 0, 0);
	}
	/* mapping socket, one filter socket per server, 4 random + 4 consecutive delta sockets */
	{
		static const uint16_t random_ports[] = { 51234, 33007, 47711, 38999, 60123 };
		unsigned int n = 0;

		w->cfg.socks[n].role = WARP_NATCLASS_MAPPING;
		w->cfg.socks[n].local = sa(HOST_IP, 45000);
		n++;
		for (unsigned int s = 0; s < nservers; s++, n++) {
			w->cfg.socks[n].role = WARP_NATCLASS_FILTER;
			w->cfg.socks[n].local = sa(HOST_IP, (uint16_t)(46000 + 7 * s));
		}
		for (unsigned int i = 0; i < 4; i++, n++) {
			w->cfg.socks[n].role = WARP_NATCLASS_DELTA_RANDOM;
			w->cfg.socks[n].local = sa(HOST_IP, random_ports[i]);
		}
		for (unsigned int i = 0; i < 4; i++, n++) {
			w->cfg.socks[n].role = WARP_NATCLASS_DELTA_SEQ;
			w->cfg.socks[n].local = sa(HOST_IP, (uint16_t)(seq_base + i));
		}
		for (unsigned int i = 0; i < n; i++)
			w->cfg.socks[i].tag = 100 + 3 * (int)i;
		w->cfg.n_socks = n;
	}
	w->cfg.n_local_ips = 1;
	w->cfg.local_ips[0] = sa(HOST_IP, 0);
}

/* Switches the host to a public address (no NAT). */
static void world_no_nat(struct world *w, enum warp_nat_behavior filtering)
{
	w->no_nat = true;
	w->filtering = filtering;
	for (unsigned int i = 0; i < w->cfg.n_socks; i++) {
		uint16_t port = nat_sa_port((struct sockaddr *)&w->cfg.socks[i].local);

		w->cfg.socks[i].local = sa(PUB_IP, port);
	}
	w->cfg.local_ips[0] = sa(PUB_IP, 0);
}

static uint16_t tag_port(struct world *w, int tag)
{
	for (unsigned int i = 0; i < w->cfg.n_socks; i++)
		if (w->cfg.socks[i].tag == tag)
			return nat_sa_port((struct sockaddr *)&w->cfg.socks[i].local);
	fail_msg("unknown socket tag %d", tag);
	return 0;
}

static const struct warp_nat_report *world_run(struct world *w)
{
	struct warp_stun_tx tx;
	struct warp_natclass_tcp_probe tp;

	w->nc = warp_natclass_new(&w->cfg);
	assert_non_null(w->nc);
	assert_int_equal(warp_natclass_start(w->nc, 0), 0);
	for (int iter = 0; iter < 100000 && !warp_natclass_done(w->nc); iter++) {
		uint64_t next;

		while (warp_natclass_poll_transmit(w->nc, w->now, &tx))
			host_send(w, tag_port(w, tx.sock), &tx.dest, tx.data, tx.len);
		while (warp_natclass_poll_tcp(w->nc, &tp)) {
			w->tcp_pending[tp.server] = 1;
			w->tcp_at[tp.server] = w->now + 30 * MS;
		}
		next = warp_natclass_next_deadline(w->nc);
		for (unsigned int i = 0; i < w->nq; i++)
			if (w->q[i].at < next)
				next = w->q[i].at;
		for (unsigned int s = 0; s < w->nservers; s++)
			if (w->tcp_pending[s] && w->tcp_at[s] < next)
				next = w->tcp_at[s];
		if (next == WARP_STUN_NEVER)
			break;
		assert_true(next >= w->now);
		w->now = next;
		/* deliver due packets in queue order */
		for (unsigned int i = 0; i < w->nq;) {
			struct pkt p;

			if (w->q[i].at > w->now) {
				i++;
				continue;
			}
			p = w->q[i];
			memmove(&w->q[i], &w->q[i + 1], (w->nq - i - 1) * sizeof(w->q[0]));
			w->nq--;
			if (to_host_side(w, &p.dst))
				nat_in(w, &p.src, &p.dst, p.data, p.len);
			else
				server_recv(w, &p);
			if (warp_natclass_done(w->nc))
				break;
		}
		for (unsigned int s = 0; s < w->nservers; s++) {
			if (!w->tcp_pending[s] || w->tcp_at[s] > w->now)
				continue;
			w->tcp_pending[s] = 0;
			if (w->tcp_ok && w->kind[s] != SRV_DEAD) {
				struct sockaddr_storage m = sa(w->no_nat ? PUB_IP : EXT_IP, 50001);

				warp_natclass_tcp_result(w->nc, s, 0, (struct sockaddr *)&m,
							 30 * MS, w->now);
			} else {
				warp_natclass_tcp_result(w->nc, s, -ECONNREFUSED, NULL, 0, w->now);
			}
		}
		warp_natclass_handle_timeout(w->nc, w->now);
	}
	assert_true(warp_natclass_done(w->nc));
	return warp_natclass_report(w->nc);
}

static void world_free(struct world *w)
{
	warp_natclass_free(w->nc);
	free(w->q);
}

static const enum server_kind two5780[] = { SRV_RFC5780, SRV_RFC5780 };

static void expect(const struct warp_nat_report *r, enum warp_nat_type type,
		   enum warp_nat_behavior mapping, enum warp_nat_behavior filtering,
		   enum warp_nat_delta delta, int32_t value)
{
	if (r->type != type || r->mapping != mapping || r->filtering != filtering ||
	    r->delta != delta || r->delta_value != value)
		fail_msg("got %s mapping=%s filtering=%s delta=%s/%d; want %s %s %s %s/%d",
			 warp_nat_type_name(r->type), warp_nat_behavior_name(r->mapping),
			 warp_nat_behavior_name(r->filtering), warp_nat_delta_name(r->delta),
			 r->delta_value, warp_nat_type_name(type), warp_nat_behavior_name(mapping),
			 warp_nat_behavior_name(filtering), warp_nat_delta_name(delta), value);
}

static void test_full_cone(void **state)
{
	struct world w;
	const struct warp_nat_report *r;
	struct sockaddr_storage ext = sa(EXT_IP, 45000);

	world_init(&w, 2, two5780);
	w.alloc = ALLOC_PRESERVE;
	r = world_run(&w);
	expect(r, WARP_NAT_FULL_CONE, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ENDPOINT_INDEPENDENT, WARP_NAT_DELTA_EQUAL, 0);
	assert_true(r->hairpin);
	assert_true(r->nat);
	assert_true(r->udp);
	assert_true(r->rfc5780);
	assert_int_equal(r->servers_answered, 2);
	assert_int_equal(r->n_external, 1);
	assert_true(nat_sa_equal((struct sockaddr *)&r->external[0], (struct sockaddr *)&ext));
	/* first conclusive answers: no probe had to time out */
	assert_true(r->duration_ms < 200);
	assert_true(r->n_probes >= 2 * 6 + 8 + 1);
	assert_int_equal(r->probes[0].kind, WARP_NAT_PROBE_BINDING);
	assert_true(r->probes[0].ok);
	assert_int_equal(r->probes[0].rtt_us, 20000);
	world_free(&w);
}

static void test_restricted(void **state)
{
	struct world w;
	const struct warp_nat_report *r;

	world_init(&w, 2, two5780);
	w.filtering = WARP_NAT_BEH_ADDRESS_DEPENDENT;
	r = world_run(&w);
	expect(r, WARP_NAT_RESTRICTED, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ADDRESS_DEPENDENT, WARP_NAT_DELTA_EQUAL, 0);
	assert_true(r->hairpin);
	world_free(&w);
}

static void test_port_restricted(void **state)
{
	struct world w;
	const struct warp_nat_report *r;

	world_init(&w, 2, two5780);
	w.filtering = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
	w.hairpin = false;
	r = world_run(&w);
	expect(r, WARP_NAT_PORT_RESTRICTED, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT, WARP_NAT_DELTA_EQUAL, 0);
	assert_false(r->hairpin);
	/* lost change answers are declared lost filter_wait_ms after the control answer */
	assert_true(r->duration_ms >= 170 && r->duration_ms < 250);
	world_free(&w);
}

static void test_symmetric_sequential(void **state)
{
	static const struct {
		enum warp_nat_behavior mapping;
		int delta;
	} cases[] = {
		{ WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT, 1 },
		{ WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT, 2 },
		{ WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT, -3 },
		{ WARP_NAT_BEH_ADDRESS_DEPENDENT, 5 },
	};

	for (size_t i = 0; i < WARP_ARRAY_SIZE(cases); i++) {
		struct world w;
		const struct warp_nat_report *r;

		world_init(&w, 2, two5780);
		w.mapping = cases[i].mapping;
		w.filtering = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
		w.alloc = ALLOC_SEQ;
		w.base = 30000;
		w.delta = cases[i].delta;
		r = world_run(&w);
		expect(r, WARP_NAT_SYMMETRIC, cases[i].mapping, WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT,
		       WARP_NAT_DELTA_INDEPENDENT, cases[i].delta);
		assert_true(r->delta_samples >= 10);
		/* one external mapping per destination of the mapping socket */
		assert_true(r->n_external >= 4);
		world_free(&w);
	}
}

static void test_symmetric_random(void **state)
{
	struct world w;
	const struct warp_nat_report *r;

	world_init(&w, 2, two5780);
	w.mapping = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
	w.filtering = WARP_NAT_BEH_ADDRESS_DEPENDENT;
	w.alloc = ALLOC_RANDOM;
	r = world_run(&w);
	expect(r, WARP_NAT_SYMMETRIC, WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT,
	       WARP_NAT_BEH_ADDRESS_DEPENDENT, WARP_NAT_DELTA_RANDOM, 0);
	world_free(&w);
}

static void test_symmetric_dependent(void **state)
{
	struct world w;
	const struct warp_nat_report *r;

	world_init(&w, 2, two5780);
	w.mapping = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
	w.filtering = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
	w.alloc = ALLOC_DEPENDENT;
	w.base = 20000;
	w.delta = 3;
	r = world_run(&w);
	expect(r, WARP_NAT_SYMMETRIC, WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT,
	       WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT, WARP_NAT_DELTA_DEPENDENT, 3);
	world_free(&w);
}

static void test_cone_allocations(void **state)
{
	struct world w;
	const struct warp_nat_report *r;

	/* a cone NAT that hands out sequential ports */
	world_init(&w, 2, two5780);
	w.alloc = ALLOC_SEQ;
	w.base = 20000;
	w.delta = 1;
	r = world_run(&w);
	expect(r, WARP_NAT_FULL_CONE, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ENDPOINT_INDEPENDENT, WARP_NAT_DELTA_INDEPENDENT, 1);
	world_free(&w);

	/* a cone NAT that shifts every port by a constant */
	world_init(&w, 2, two5780);
	w.alloc = ALLOC_OFFSET;
	w.delta = 1000;
	w.filtering = WARP_NAT_BEH_ADDRESS_DEPENDENT;
	r = world_run(&w);
	expect(r, WARP_NAT_RESTRICTED, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ADDRESS_DEPENDENT, WARP_NAT_DELTA_PRESERVING, 1000);
	world_free(&w);
}

static void test_open_and_firewall(void **state)
{
	struct world w;
	const struct warp_nat_report *r;

	world_init(&w, 2, two5780);
	world_no_nat(&w, WARP_NAT_BEH_ENDPOINT_INDEPENDENT);
	r = world_run(&w);
	expect(r, WARP_NAT_OPEN, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ENDPOINT_INDEPENDENT, WARP_NAT_DELTA_NONE, 0);
	assert_false(r->nat);
	assert_true(r->hairpin);
	world_free(&w);

	world_init(&w, 2, two5780);
	world_no_nat(&w, WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT);
	r = world_run(&w);
	expect(r, WARP_NAT_UDP_FIREWALL, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT, WARP_NAT_DELTA_NONE, 0);
	world_free(&w);
}

static void test_blocked(void **state)
{
	struct world w;
	const struct warp_nat_report *r;

	world_init(&w, 2, two5780);
	w.udp_blocked = true;
	w.tcp_ok = true;
	r = world_run(&w);
	expect(r, WARP_NAT_BLOCKED, WARP_NAT_BEH_UNKNOWN, WARP_NAT_BEH_UNKNOWN, WARP_NAT_DELTA_NONE,
	       0);
	assert_false(r->udp);
	assert_true(r->tcp);
	assert_int_equal(r->tcp_external.ss_family, AF_INET);
	assert_false(r->hairpin);
	assert_int_equal(r->n_external, 0);
	/* UDP gives up after the probe timeout, TCP answers right after */
	assert_true(r->duration_ms >= 1500 && r->duration_ms < 1600);
	world_free(&w);

	world_init(&w, 2, two5780);
	w.udp_blocked = true;
	w.tcp_ok = false;
	r = world_run(&w);
	assert_int_equal(r->type, WARP_NAT_BLOCKED);
	assert_false(r->tcp);
	assert_int_equal(r->servers_answered, 0);
	world_free(&w);
}

static void test_plain_servers(void **state)
{
	static const enum server_kind plain[] = { SRV_PLAIN, SRV_PLAIN };
	struct world w;
	const struct warp_nat_report *r;

	world_init(&w, 2, plain);
	w.filtering = WARP_NAT_BEH_ADDRESS_DEPENDENT;
	r = world_run(&w);
	/* mapping from two servers; filtering cannot be measured */
	expect(r, WARP_NAT_PORT_RESTRICTED, WARP_NAT_BEH_ENDPOINT_INDEPENDENT, WARP_NAT_BEH_UNKNOWN,
	       WARP_NAT_DELTA_EQUAL, 0);
	assert_false(r->rfc5780);
	assert_true(r->duration_ms < 200);
	world_free(&w);

	world_init(&w, 2, plain);
	w.mapping = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
	w.alloc = ALLOC_SEQ;
	w.base = 10000;
	w.delta = 2;
	r = world_run(&w);
	/* two servers on two IPs: address dependence is all that can be shown */
	expect(r, WARP_NAT_SYMMETRIC, WARP_NAT_BEH_ADDRESS_DEPENDENT, WARP_NAT_BEH_UNKNOWN,
	       WARP_NAT_DELTA_INDEPENDENT, 2);
	world_free(&w);

	/* one plain server: a NAT is seen but its mapping is unknown */
	world_init(&w, 1, plain);
	r = world_run(&w);
	assert_int_equal(r->type, WARP_NAT_TYPE_UNKNOWN);
	assert_int_equal(r->mapping, WARP_NAT_BEH_UNKNOWN);
	assert_true(r->nat);
	world_free(&w);
}

static void test_quorum(void **state)
{
	static const enum server_kind liar3[] = { SRV_LIAR, SRV_RFC5780, SRV_RFC5780 };
	static const enum server_kind liar2[] = { SRV_LIAR, SRV_RFC5780 };
	static const enum server_kind dead_and_one[] = { SRV_DEAD, SRV_RFC5780 };
	struct world w;
	const struct warp_nat_report *r;

	/* one lying server out of three is outvoted */
	world_init(&w, 3, liar3);
	w.filtering = WARP_NAT_BEH_ADDRESS_DEPENDENT;
	r = world_run(&w);
	expect(r, WARP_NAT_RESTRICTED, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ADDRESS_DEPENDENT, WARP_NAT_DELTA_EQUAL, 0);
	/* the liar's addresses are left out */
	assert_int_equal(r->n_external, 1);
	world_free(&w);

	/* one against one: the tie goes to the more restrictive answer */
	world_init(&w, 2, liar2);
	r = world_run(&w);
	assert_int_equal(r->mapping, WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT);
	assert_int_equal(r->type, WARP_NAT_SYMMETRIC);
	world_free(&w);

	/* a dead server does not block the quorum: one answering server decides */
	world_init(&w, 2, dead_and_one);
	w.filtering = WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT;
	r = world_run(&w);
	expect(r, WARP_NAT_PORT_RESTRICTED, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT, WARP_NAT_DELTA_EQUAL, 0);
	assert_int_equal(r->servers_answered, 1);
	world_free(&w);
}

static void test_loss(void **state)
{
	struct world w;
	const struct warp_nat_report *r;

	/* the first packet of the first ten flows is lost: retransmissions recover */
	world_init(&w, 2, two5780);
	w.filtering = WARP_NAT_BEH_ADDRESS_DEPENDENT;
	w.alloc = ALLOC_PRESERVE;
	w.drop_first_n = 10;
	r = world_run(&w);
	expect(r, WARP_NAT_RESTRICTED, WARP_NAT_BEH_ENDPOINT_INDEPENDENT,
	       WARP_NAT_BEH_ADDRESS_DEPENDENT, WARP_NAT_DELTA_EQUAL, 0);
	assert_int_equal(w.dropped, 10);
	bool retried = false;
	for (unsigned int i = 0; i < r->n_probes; i++)
		retried |= r->probes[i].ok && r->probes[i].tries > 1;
	assert_true(retried);
	world_free(&w);
}

static void test_config_errors(void **state)
{
	struct world w;

	world_init(&w, 2, two5780);
	w.cfg.n_servers = 0;
	assert_null(warp_natclass_new(&w.cfg));
	w.cfg.n_servers = 2;
	w.cfg.socks[1].role = WARP_NATCLASS_MAPPING; /* two mapping sockets */
	assert_null(warp_natclass_new(&w.cfg));
	w.cfg.socks[1].role = WARP_NATCLASS_FILTER;
	w.cfg.servers[1] = sa("2001:db8::1", 3478); /* mixed families */
	assert_null(warp_natclass_new(&w.cfg));
	free(w.q);
}

static void test_delta_classify(void **state)
{
	struct warp_nat_delta_sample s[12] = { { 0 } };
	int32_t v;

	/* too few */
	assert_int_equal(warp_nat_delta_classify(s, 2, &v), WARP_NAT_DELTA_NONE);
	/* equal, with one outlier */
	for (unsigned int i = 0; i < 8; i++)
		s[i] = (struct warp_nat_delta_sample){ i, (uint16_t)(1000 + 37 * i),
						       (uint16_t)(1000 + 37 * i), false };
	s[3].mapped = 5;
	assert_int_equal(warp_nat_delta_classify(s, 8, &v), WARP_NAT_DELTA_EQUAL);
	/* preserving: +7 over uneven local ports */
	for (unsigned int i = 0; i < 8; i++)
		s[i].mapped = (uint16_t)(s[i].local + 7 + (i == 5 ? 300 : 0));
	s[2].local = 4000;
	s[2].mapped = 4007;
	assert_int_equal(warp_nat_delta_classify(s, 8, &v), WARP_NAT_DELTA_PRESERVING);
	assert_int_equal(v, 7);
	/* independent with gaps in the order (mappings we never saw) */
	for (unsigned int i = 0; i < 8; i++) {
		s[i].order = 2 * i + (i > 4);
		s[i].mapped = (uint16_t)(30000 + 4 * s[i].order);
		s[i].local = (uint16_t)(2000 + 991 * i % 5000);
	}
	assert_int_equal(warp_nat_delta_classify(s, 8, &v), WARP_NAT_DELTA_INDEPENDENT);
	assert_int_equal(v, 4);
	/* dependent: consecutive local ports map 2 apart, random ones do not line up */
	for (unsigned int i = 0; i < 8; i++) {
		s[i].order = i;
		s[i].seq = i >= 4;
		s[i].local = (uint16_t)(i >= 4 ? 41000 + i : 1000 + 7919 * i % 20000);
		s[i].mapped = (uint16_t)(s[i].local * 2 % 60000 + 100 * (i % 3));
	}
	for (unsigned int i = 4; i < 8; i++)
		s[i].mapped = (uint16_t)(20000 + 2 * (s[i].local - 41000));
	assert_int_equal(warp_nat_delta_classify(s, 8, &v), WARP_NAT_DELTA_DEPENDENT);
	assert_int_equal(v, 2);
	/* random */
	{
		static const uint16_t ports[] = { 31337, 1207,	60001, 44443,
						  8086,	 23456, 51515, 9999 };

		for (unsigned int i = 0; i < 8; i++) {
			s[i].seq = false;
			s[i].mapped = ports[i];
		}
	}
	assert_int_equal(warp_nat_delta_classify(s, 8, &v), WARP_NAT_DELTA_RANDOM);
}

static void test_json(void **state)
{
	struct world w;
	const struct warp_nat_report *r;
	struct warp_nat_report back;
	json_t *j, *d;
	char *text;

	world_init(&w, 2, two5780);
	w.filtering = WARP_NAT_BEH_ADDRESS_DEPENDENT;
	w.alloc = ALLOC_SEQ;
	w.base = 20000;
	w.delta = 1;
	r = world_run(&w);
	j = warp_nat_report_to_json(r, 0);
	assert_non_null(j);
	assert_int_equal(json_object_size(j), 7);
	assert_string_equal(json_string_value(json_object_get(j, "mapping")),
			    "endpoint-independent");
	assert_string_equal(json_string_value(json_object_get(j, "filtering")),
			    "address-dependent");
	assert_string_equal(json_string_value(json_object_get(j, "type")), "restricted");
	d = json_object_get(j, "delta");
	assert_string_equal(json_string_value(json_object_get(d, "type")), "independent");
	assert_int_equal(json_integer_value(json_object_get(d, "value")), 1);
	assert_true(json_is_true(json_object_get(j, "hairpin")));
	assert_string_equal(json_string_value(json_array_get(json_object_get(j, "external"), 0)),
			    "203.0.113.10:20000");
	assert_int_equal(json_array_size(json_object_get(j, "probes")), r->n_probes);
	assert_true(json_is_real(
		json_object_get(json_array_get(json_object_get(j, "probes"), 0), "rtt_ms")));
	json_decref(j);

	j = warp_nat_report_to_json(r, WARP_NAT_JSON_NO_PROBES);
	assert_int_equal(json_object_size(j), 6);
	json_decref(j);

	j = warp_nat_report_to_json(r, WARP_NAT_JSON_DETAILS);
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	j = json_loads(text, 0, NULL);
	free(text);
	assert_int_equal(warp_nat_report_from_json(j, &back), 0);
	json_decref(j);
	assert_int_equal(back.type, r->type);
	assert_int_equal(back.mapping, r->mapping);
	assert_int_equal(back.filtering, r->filtering);
	assert_int_equal(back.delta, r->delta);
	assert_int_equal(back.delta_value, r->delta_value);
	assert_int_equal(back.hairpin, r->hairpin);
	assert_int_equal(back.nat, r->nat);
	assert_int_equal(back.rfc5780, r->rfc5780);
	assert_int_equal(back.n_external, r->n_external);
	assert_true(nat_sa_equal((struct sockaddr *)&back.external[0],
				 (struct sockaddr *)&r->external[0]));
	assert_int_equal(back.n_probes, r->n_probes);
	assert_int_equal(back.probes[1].rtt_us, r->probes[1].rtt_us);
	assert_true(nat_sa_equal((struct sockaddr *)&back.local, (struct sockaddr *)&r->local));
	world_free(&w);

	/* names */
	assert_string_equal(warp_nat_type_name(WARP_NAT_PORT_RESTRICTED), "port-restricted");
	assert_string_equal(warp_nat_type_name(99), "unknown");
	assert_int_equal(warp_nat_type_parse("udp-firewall"), WARP_NAT_UDP_FIREWALL);
	assert_int_equal(warp_nat_behavior_parse("address-and-port-dependent"),
			 WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT);
	assert_int_equal(warp_nat_delta_parse("none"), WARP_NAT_DELTA_NONE);
	assert_int_equal(warp_nat_delta_parse("bogus"), -EINVAL);
	j = json_pack("{s:s}", "mapping", "sideways");
	assert_int_equal(warp_nat_report_from_json(j, &back), -WARP_EMALFORMED);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_cone),
		cmocka_unit_test(test_restricted),
		cmocka_unit_test(test_port_restricted),
		cmocka_unit_test(test_symmetric_sequential),
		cmocka_unit_test(test_symmetric_random),
		cmocka_unit_test(test_symmetric_dependent),
		cmocka_unit_test(test_cone_allocations),
		cmocka_unit_test(test_open_and_firewall),
		cmocka_unit_test(test_blocked),
		cmocka_unit_test(test_plain_servers),
		cmocka_unit_test(test_quorum),
		cmocka_unit_test(test_loss),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_delta_classify),
		cmocka_unit_test(test_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
