// SPDX-License-Identifier: MIT
/*
 * random_probe: the birthday-paradox method for a symmetric NAT with random ports ("hard"
 * side) facing an endpoint-independent one ("easy" side).
 *
 * The hard side opens N sockets (256 by default, within RLIMIT_NOFILE) and sends one probe
 * from each to the easy side's reflexive endpoint: N mappings open in its NAT, at random
 * ports, each letting in only the easy side's endpoint.  The easy side sends authenticated
 * probes from its node socket to distinct random ports of the hard side's address, at a
 * bounded rate for a bounded time.  A probe that lands on one of the N mappings reaches its
 * socket; the hard side answers it (PROBE_REPLY: the easy side stops) and starts the
 * handshake from that socket, the only one that holds the working mapping (an inbound INIT
 * on a socket of our own is not accepted by the pipe layer).  If the hard side is the
 * listener, the connector accepts that inbound pipe through a claim.
 *
 * With N mappings among R ports and P distinct probes, the chance of a hit is
 * 1 - C(R - N, P) / C(R, P); it is computed and logged before probing starts, and the trace
 * of a win says after how many probes it landed.
 *
 * Messages: the hard side sends its external address with the first port of the range as a
 * PREDICTED endpoint and PORT_INFO = (N mappings, range); the easy side sends its reflexive
 * endpoint, INTERVAL_MS (RP_BATCH probes per interval: the rate) and DURATION_MS.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "random_probe"
#include "core/log.h"
#include "core/util.h"
#include "net/endpoint.h"
#include "net/sock.h"
#include "node/netstate.h"
#include "pipe/pipe_internal.h"
#include "signal/signal.h"
#include "traverse/punch.h"
#include "traverse/traverse.h"

#define RP_SOCKETS     256
#define RP_MAX_SOCKETS 1024
#define RP_FD_RESERVE  128  /* descriptors left for everything else */
#define RP_RANGE_LO    1024 /* where NATs put random ports */
#define RP_RANGE_HI    65535
#define RP_RATE	       2000 /* probes per second */
#define RP_MAX_RATE    8000 /* whatever a peer asks */
#define RP_BATCH       4    /* probes per INTERVAL_MS on the wire */
#define RP_DURATION_MS 5000
#define RP_MAX_MS      10000
#define RP_ANSWER_MS   4000
#define RP_SLACK_MS    1500 /* after probing ends: the handshake through the hit */
#define RP_TICK_MS     5
#define RP_BURST       64 /* probes at most per tick */
#define RP_RTO_MS      50
#define RP_MAX_PASSIVE 2 /* concurrent listener sessions per process */

/* Tunables, from the environment for experiments (WARPGATE_RP_SOCKETS, _RATE, _MS). */
struct rp_params {
	uint32_t sockets, rate, duration_ms;
};

static uint32_t env_u32(const char *name, uint32_t def, uint32_t lo, uint32_t hi)
{
	const char *v = getenv(name);
	char *end;
	unsigned long x;

	if (!v || !*v)
		return def;
	x = strtoul(v, &end, 10);
	if (*end || x < lo || x > hi)
		return def;
	return (uint32_t)x;
}

static void rp_params(struct rp_params *p)
{
	p->sockets = env_u32("WARPGATE_RP_SOCKETS", RP_SOCKETS, 1, RP_MAX_SOCKETS);
	p->rate = env_u32("WARPGATE_RP_RATE", RP_RATE, 1, RP_MAX_RATE);
	p->duration_ms = env_u32("WARPGATE_RP_MS", RP_DURATION_MS, 100, RP_MAX_MS);
}

static uint32_t rate_of_interval(uint16_t interval_ms)
{
	return interval_ms ? RP_BATCH * 1000u / interval_ms : RP_RATE;
}

static uint16_t interval_of_rate(uint32_t rate)
{
	uint32_t iv = RP_BATCH * 1000u / (rate ? rate : 1);

	return (uint16_t)(iv ? (iv > 1000 ? 1000 : iv) : 1);
}

/* ---------------------------------------------------------------- hard side: N sockets */

struct rp_hard;

struct rp_sock {
	struct rp_hard *h;
	int fd;
};

struct rp_hard {
	struct warp_node *node;
	struct punch_sess *sess;
	struct rp_sock *socks;
	int n;
};

/* Descriptors we may still open, leaving a reserve for the rest of the process. */
static int fd_budget(void)
{
	struct rlimit rl;
	struct dirent *e;
	long open = 0, left;
	DIR *d;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY)
		return RP_MAX_SOCKETS;
	d = opendir("/proc/self/fd");
	if (d) {
		while ((e = readdir(d)))
			open += e->d_name[0] != '.';
		closedir(d);
	}
	left = (long)rl.rlim_cur - open - RP_FD_RESERVE;
	return left <= 0 ? 0 : left > RP_MAX_SOCKETS ? RP_MAX_SOCKETS : (int)left;
}

static void hard_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct rp_sock *rs = user;
	uint8_t buf[2048];

	for (int i = 0; i < 8; i++) {
		struct sockaddr_storage src;
		socklen_t sl = sizeof(src);
		ssize_t n =
			recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&src, &sl);

		if (n <= 0)
			return;
		warp_ep_unmap(&src);
		/* A hit ends the hard side (this socket included): touch nothing after it. */
		if (punch_sess_input(rs->h->sess, buf, (size_t)n, (struct sockaddr *)&src, fd))
			return;
	}
}

static void hard_close(struct rp_hard *h)
{
	for (int i = 0; i < h->n; i++) {
		if (h->socks[i].fd < 0)
			continue;
		warp_loop_del_fd(h->node->loop, h->socks[i].fd);
		close(h->socks[i].fd);
	}
	free(h->socks);
	h->socks = NULL;
	h->n = 0;
}

/* Opens up to want sockets, each sending one probe to target.  Returns how many. */
static int hard_open(struct rp_hard *h, struct warp_node *node, struct punch_sess *sess, int family,
		     uint32_t want, const struct sockaddr *target)
{
	struct sockaddr_storage any = { 0 };
	int budget = fd_budget();

	h->node = node;
	h->sess = sess;
	if ((int)want > budget)
		want = budget > 0 ? (uint32_t)budget : 0;
	h->socks = calloc(want ? want : 1, sizeof(*h->socks));
	if (!h->socks)
		return -ENOMEM;
	any.ss_family = (sa_family_t)family;
	for (uint32_t i = 0; i < want; i++) {
		int fd = warp_sock_udp((struct sockaddr *)&any, 0);

		if (fd < 0)
			break; /* EMFILE and friends: go with what we have */
		h->socks[h->n].h = h;
		h->socks[h->n].fd = fd;
		if (warp_loop_add_fd(node->loop, fd, WARP_EV_READ, hard_io, &h->socks[h->n])) {
			close(fd);
			break;
		}
		h->n++;
		/* Opens the mapping; reaches the peer only if its NAT lets any port in. */
		punch_send_probe(sess, fd, target);
	}
	return h->n;
}

/* Takes fd out of the set (the caller owns it) and closes the others. */
static int hard_take(struct rp_hard *h, int fd)
{
	for (int i = 0; i < h->n; i++)
		if (h->socks[i].fd == fd) {
			warp_loop_del_fd(h->node->loop, fd);
			h->socks[i].fd = -1;
			hard_close(h);
			return fd;
		}
	return -1;
}

/* ---------------------------------------------------------------- easy side: the spray */

struct rp_spray {
	struct punch_sess *sess;
	struct warp_timer *tick;
	struct sockaddr_storage dst;
	struct punch_perm perm;
	uint32_t rate;
	uint64_t t0, until, sent;
	bool running;
};

static void spray_stop(struct rp_spray *sp)
{
	sp->running = false;
	warp_timer_free(sp->tick);
	sp->tick = NULL;
}

static void spray_tick(struct warp_timer *t, void *user)
{
	struct rp_spray *sp = user;
	uint64_t now = warp_time_ns();
	uint32_t due = punch_pace_due(sp->rate, now - sp->t0, sp->sent, RP_BURST);

	for (uint32_t i = 0; i < due; i++) {
		uint16_t port = punch_perm_next(&sp->perm);

		if (!port) {
			sp->running = false;
			return; /* every port tried */
		}
		warp_ep_set_port((struct sockaddr *)&sp->dst, port);
		punch_send_probe(sp->sess, -1, (struct sockaddr *)&sp->dst);
		sp->sent++;
	}
	if (now >= sp->until) {
		sp->running = false;
		return;
	}
	warp_timer_arm_ms(sp->tick, RP_TICK_MS);
}

static int spray_start(struct rp_spray *sp, struct warp_node *node, struct punch_sess *sess,
		       const struct sockaddr *ip, uint16_t lo, uint16_t hi, uint32_t rate,
		       uint32_t ms)
{
	sp->sess = sess;
	if (lo < 1)
		lo = 1; /* port 0 is nobody's */
	sp->tick = warp_timer_new(node->loop, spray_tick, sp);
	if (!sp->tick)
		return -ENOMEM;
	memcpy(&sp->dst, ip, warp_ep_len(ip));
	punch_perm_init(&sp->perm, lo, hi, warp_random_u32(), warp_random_u32());
	sp->rate = rate;
	sp->t0 = warp_time_ns();
	sp->until = sp->t0 + (uint64_t)ms * 1000000ull;
	sp->sent = 0;
	sp->running = true;
	warp_timer_arm_ms(sp->tick, 0);
	return 0;
}

/* ---------------------------------------------------------------- messages */

static bool msg_is_hard(const struct warp_sig_msg *m)
{
	return (m->body.present & WARP_SIGF_PORT_INFO) && m->body.port_delta > 0 &&
	       m->body.range_hi > m->body.range_lo && m->body.neps &&
	       m->body.eps[0].kind == WARP_SIG_EP_PREDICTED;
}

static void fill_msg(struct warp_sig_body *b, struct warp_node *node, unsigned int role,
		     const uint8_t secret[WARP_PROBE_SECRET_LEN], const struct sockaddr *ep,
		     bool hard, uint32_t n, uint32_t rate, uint32_t ms)
{
	struct warp_sig_ep e;

	b->present |= WARP_SIGF_TRANSPORT | WARP_SIGF_ROLE | WARP_SIGF_START | WARP_SIGF_SECRET |
		      WARP_SIGF_DURATION;
	b->transport = WARP_SIG_UDP;
	b->role = (uint8_t)role;
	b->start_ms = node_clock_ms(node);
	memcpy(b->secret, secret, WARP_PROBE_SECRET_LEN);
	b->duration_ms = ms;
	tv_sig_ep(&e, ep, hard ? WARP_SIG_EP_PREDICTED : WARP_SIG_EP_REFLEXIVE);
	warp_sig_add_ep(b, &e);
	if (hard) {
		b->present |= WARP_SIGF_PORT_INFO;
		b->port_delta = (int32_t)n;
		b->range_lo = RP_RANGE_LO;
		b->range_hi = RP_RANGE_HI;
	} else {
		b->present |= WARP_SIGF_INTERVAL;
		b->interval_ms = interval_of_rate(rate);
	}
}

/* Computes and logs the odds before probing starts; *miss gets the chance of no hit. */
static void log_odds(const char *who, uint32_t range, uint32_t n, uint32_t rate, uint32_t ms,
		     double *miss)
{
	uint64_t probes = (uint64_t)rate * ms / 1000;
	double e = punch_expected_probes(range, n);

	*miss = punch_birthday_miss(range, n, probes);
	pr_info("%s: %u mappings among %u ports, %llu probes (%u/s for %u ms): success "
		"probability %.6f%% (miss %.2g), first hit expected after %.0f probes (%.0f ms)",
		who, n, range, (unsigned long long)probes, rate, ms,
		punch_birthday_p(range, n, probes) * 100.0, *miss, e, e * 1000.0 / rate);
}

/* Our endpoint for messages: the hard side's external address (the range's first port),
 * or the easy side's reflexive endpoint. */
static void own_ep(struct sockaddr_storage *out, const struct punch_nat *us, bool hard)
{
	punch_ep(out, us, hard ? RP_RANGE_LO : (us->ext_port ? us->ext_port : us->local_port));
}

/* ---------------------------------------------------------------- plan */

static void rp_plan(struct warp_connect *c)
{
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct tv_combo combo = { 0 };
	int planned = 0;

	combo.route = "internet";
	combo.cls = WARP_PATH_DIRECT;
	combo.rroute = -1;
	if (!node_signal(c->node)) {
		tv_skip(c, &tv_random_probe, &combo, "no signalling brokers configured");
		return;
	}
	if (!tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS)) {
		tv_skip(c, &tv_random_probe, &combo, "the peer advertises no signalling broker");
		return;
	}
	for (int i = 0; i < 2; i++) {
		int fam = i ? AF_INET6 : AF_INET, r;
		struct punch_nat us, peer;
		const char *why;
		bool hard, udp_can;

		if ((c->opts.family == 4 && fam != AF_INET) ||
		    (c->opts.family == 6 && fam != AF_INET6) || !node_udp_sock(c->node, fam))
			continue;
		r = punch_peer_route(&c->to, fam);
		if (r < 0 || !punch_own_nat(c->node, fam, &us))
			continue;
		punch_nat_from_route(&peer, &c->to.routes[r]);
		combo.family = fam;
		combo.rroute = r;
		punch_ep(&combo.remote, &peer, peer.ext_port ? peer.ext_port : peer.local_port);
		planned++;
		why = punch_random_infeasible(&us, &peer, &hard);
		if (why) {
			tv_skip(c, &tv_random_probe, &combo, "%s", why);
			continue;
		}
		/* Spraying is the heavy way: when udp_punch can do the pair (prediction, or a
		 * NAT that lets any port of the address in), it is only the fallback. */
		udp_can = (c->strategies & (1u << WARP_STRAT_UDP_PUNCH)) &&
			  !punch_udp_infeasible(&us, &peer);
		tv_add(c, &tv_random_probe, &combo, udp_can ? 1500 : 0);
	}
	if (!planned)
		tv_skip(c, &tv_random_probe, &combo,
			"no address family with external facts in common");
}

/* ---------------------------------------------------------------- connector */

struct rp {
	struct tv_attempt *a;
	struct warp_node *node;
	int family;
	bool hard;
	struct punch_nat us, peer;
	struct rp_params par;
	struct punch_sess sess;
	struct rp_hard hs;
	struct rp_spray spray;
	struct punch_node *hold;
	struct tv_claim *claim;
	struct pipe_dial *dial;
	struct warp_timer *timer;
	uint8_t attempt[WARP_SIG_ID_LEN];
	uint8_t secret[WARP_PROBE_SECRET_LEN];
	bool handler, offered, answered, landed;
	uint32_t n, rate, ms; /* the numbers of the odds: mappings, probe rate, probe time */
	double miss;	      /* the chance of no hit */
	uint64_t hit_pn;
};

static void rp_free(struct rp *r, uint16_t cancel_code)
{
	struct warp_signal *sig = node_signal(r->node);

	if (r->handler && sig)
		warp_signal_off_attempt(sig, r->attempt);
	if (r->offered && cancel_code)
		punch_send_cancel(r->node, &r->a->c->to, r->attempt, cancel_code);
	spray_stop(&r->spray);
	hard_close(&r->hs);
	if (r->dial)
		pipe_dial_cancel(r->dial);
	tv_claim_cancel(r->claim);
	punch_accept_release(r->hold);
	punch_sess_stop(&r->sess);
	warp_timer_free(r->timer);
	r->a->priv = NULL;
	explicit_bzero(r->secret, sizeof(r->secret));
	free(r);
}

static void rp_fail(struct rp *r, int err, const char *why)
{
	struct tv_attempt *a = r->a;

	rp_free(r, WARP_SIG_CANCEL_ABANDONED);
	tv_failed(a, err, "%s", why);
}

static void rp_win(struct rp *r, struct warp_pipe *pipe)
{
	struct tv_attempt *a = r->a;

	snprintf(a->rec->reason, sizeof(a->rec->reason),
		 "probe %llu landed; p=%.4f%% (miss %.1g) for %u mappings, %llu probes",
		 (unsigned long long)r->hit_pn, (1.0 - r->miss) * 100.0, r->miss, r->n,
		 (unsigned long long)((uint64_t)r->rate * r->ms / 1000));
	rp_free(r, 0);
	tv_won(a, pipe);
}

static void rp_dialed(struct warp_pipe *pipe, int err, void *user)
{
	struct rp *r = user;
	char why[96];

	r->dial = NULL;
	if (pipe) {
		rp_win(r, pipe);
		return;
	}
	snprintf(why, sizeof(why), "a probe landed but the handshake failed: %s",
		 warp_strerror(err));
	rp_fail(r, err, why);
}

static void rp_claimed(struct tv_claim *cl, struct warp_pipe *pipe, void *user)
{
	struct rp *r = user;

	r->claim = NULL;
	rp_win(r, pipe);
}

/* The hard side found its mapping: handshake from that socket to where the probe came from. */
static int dial_from(struct warp_node *node, struct rp_hard *h, int fd, const struct sockaddr *src,
		     const uint8_t *key, pipe_dial_cb cb, void *user, struct pipe_dial **out)
{
	struct pipe_dial_opts o = { 0 };
	struct pipe_path *path;

	fd = hard_take(h, fd);
	if (fd < 0)
		return -ENOENT;
	path = pipe_path_udp_own(node, fd, src);
	if (!path) {
		int err = -errno;

		close(fd);
		return err;
	}
	path->cls = WARP_PATH_DIRECT;
	o.expect_key = key;
	o.cls = WARP_PATH_DIRECT;
	o.strategy = tv_random_probe.name;
	o.rto_ms = RP_RTO_MS;
	o.timeout_ms = RP_SLACK_MS + 1500;
	*out = pipe_dial(node, path, &o, cb, user);
	if (!*out) {
		int err = -errno;

		pipe_path_free(path);
		return err;
	}
	return 0;
}

static void rp_rx(struct punch_sess *s, bool reply, const struct sockaddr *src, int fd, uint64_t pn,
		  void *user)
{
	struct rp *r = user;
	char ep[WARP_EP_STRLEN];
	int err;

	if (r->hard) {
		if (fd < 0 || r->dial)
			return;
		r->hit_pn = pn;
		pr_info("probe %llu reached mapping socket %d from %s", (unsigned long long)pn, fd,
			warp_ep_str(src, ep, sizeof(ep)));
		err = dial_from(r->node, &r->hs, fd, src, r->a->c->to.pubkey, rp_dialed, r,
				&r->dial);
		if (err)
			rp_fail(r, err, "cannot start the handshake through the found mapping");
		return;
	}
	if (fd >= 0 || r->landed)
		return;
	r->landed = true;
	/* A reply to one of our probes (or a hard socket's own probe): the peer has it. */
	r->hit_pn = pn;
	pr_info("probe %llu landed at %s after %llu sent; waiting for the peer's handshake",
		(unsigned long long)pn, warp_ep_str(src, ep, sizeof(ep)),
		(unsigned long long)r->spray.sent);
	spray_stop(&r->spray);
}

static void rp_sig(struct warp_signal *sig, const struct warp_sig_msg *m, void *user)
{
	struct rp *r = user;
	struct sockaddr_storage ip;
	char why[96];

	if (memcmp(m->sender, r->a->c->to.pubkey, WARP_PUBKEY_LEN))
		return;
	if (m->type == WARP_SIG_ERROR) {
		snprintf(why, sizeof(why), "peer refused: %.80s",
			 m->body.text[0] ? m->body.text : "error");
		rp_fail(r, -ECONNREFUSED, why);
		return;
	}
	if (m->type == WARP_SIG_CANCEL) {
		r->offered = false;
		rp_fail(r, -ECONNABORTED, "the peer gave up");
		return;
	}
	if (m->type != WARP_SIG_PUNCH_ANSWER || r->answered)
		return;
	r->answered = true;
	if (r->hard) {
		/* The peer sprays at its own pace: the odds use its numbers. */
		r->rate = rate_of_interval(m->body.interval_ms);
		r->ms = m->body.duration_ms ? m->body.duration_ms : r->par.duration_ms;
		log_odds("peer probing us", RP_RANGE_HI - RP_RANGE_LO + 1, r->n, r->rate, r->ms,
			 &r->miss);
		warp_timer_arm_ms(r->timer, r->ms + RP_SLACK_MS);
		return;
	}
	if (!msg_is_hard(m) || m->body.eps[0].family != (r->family == AF_INET6 ? 6 : 4)) {
		rp_fail(r, -EPROTO, "the peer's answer names no port range");
		return;
	}
	r->n = (uint32_t)m->body.port_delta;
	log_odds("probing the peer", (uint32_t)m->body.range_hi - m->body.range_lo + 1, r->n,
		 r->rate, r->ms, &r->miss);
	warp_timer_arm_ms(r->timer, r->ms + RP_SLACK_MS);
	if (r->landed)
		return; /* one of its mappings already got through to us */
	tv_sig_ep_addr(&m->body.eps[0], &ip);
	if (spray_start(&r->spray, r->node, &r->sess, (struct sockaddr *)&ip, m->body.range_lo,
			m->body.range_hi, r->rate, r->ms))
		rp_fail(r, -ENOMEM, "out of memory");
}

static void rp_timeout(struct warp_timer *t, void *user)
{
	struct rp *r = user;
	char why[112];

	if (!r->answered) {
		rp_fail(r, -ETIMEDOUT, "the peer did not answer the offer");
		return;
	}
	snprintf(why, sizeof(why), "no probe landed: %u mappings, %llu probes (p was %.4f%%)", r->n,
		 (unsigned long long)(r->hard ? (uint64_t)r->rate * r->ms / 1000 : r->spray.sent),
		 (1.0 - r->miss) * 100.0);
	rp_fail(r, -ETIMEDOUT, why);
}

static int rp_offer(struct rp *r)
{
	struct warp_connect *c = r->a->c;
	struct warp_signal *sig = node_signal(r->node);
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct warp_sig_msg *m = calloc(1, sizeof(*m));
	struct sockaddr_storage ep;
	int err, n;

	if (!m)
		return -ENOMEM;
	err = warp_signal_msg_init(sig, m, WARP_SIG_PUNCH_OFFER, c->to.pubkey);
	if (err)
		goto out;
	memcpy(m->attempt, r->attempt, sizeof(r->attempt));
	own_ep(&ep, &r->us, r->hard);
	fill_msg(&m->body, r->node, WARP_SIG_ROLE_INITIATOR, r->secret, (struct sockaddr *)&ep,
		 r->hard, r->n, r->rate, r->ms);
	m->body.present |= WARP_SIGF_TEXT;
	snprintf(m->body.text, sizeof(m->body.text), "%s", tv_random_probe.name);
	if (!warp_signal_on_attempt(sig, r->attempt, rp_sig, r))
		r->handler = true;
	n = (int)tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS);
	err = warp_signal_send(sig, m, b, (size_t)n);
	if (err >= 0) {
		err = 0;
		r->offered = true;
	}
out:
	free(m);
	return err;
}

static int rp_start(struct tv_attempt *a)
{
	struct warp_connect *c = a->c;
	struct rp *r = calloc(1, sizeof(*r));
	struct sockaddr_storage target;
	int err;

	if (!r)
		return -ENOMEM;
	r->a = a;
	r->node = c->node;
	r->family = a->combo.family;
	a->priv = r;
	rp_params(&r->par);
	r->rate = r->par.rate;
	r->ms = r->par.duration_ms;
	warp_random(r->attempt, sizeof(r->attempt));
	warp_random(r->secret, sizeof(r->secret));
	punch_nat_from_route(&r->peer, &c->to.routes[a->combo.rroute]);
	err = -EADDRNOTAVAIL;
	if (!punch_own_nat(r->node, r->family, &r->us) ||
	    punch_random_infeasible(&r->us, &r->peer, &r->hard))
		goto fail;
	err = punch_sess_start(&r->sess, r->node, r->attempt, r->secret, WARP_PROBE_CONNECTOR,
			       rp_rx, r);
	if (err)
		goto fail;
	err = -ENOMEM;
	r->timer = warp_timer_new(r->node->loop, rp_timeout, r);
	if (!r->timer)
		goto fail;
	if (r->hard) {
		/* Mappings first, so they exist when the peer's probes arrive. */
		punch_ep(&target, &r->peer,
			 r->peer.ext_port ? r->peer.ext_port : r->peer.local_port);
		err = hard_open(&r->hs, r->node, &r->sess, r->family, r->par.sockets,
				(struct sockaddr *)&target);
		if (err <= 0) {
			err = err ? err : -EMFILE;
			goto fail;
		}
		r->n = (uint32_t)err;
		pr_info("opened %u mappings towards the peer", r->n);
	} else {
		/* The peer will start the handshake from its lucky socket: accept it even if
		 * we do not listen, and take it before any accept callback. */
		r->hold = punch_accept_hold(r->node);
		r->claim = tv_claim_inbound(r->node, c->to.pubkey, rp_claimed, r);
		if (!r->hold || !r->claim)
			goto fail;
	}
	err = rp_offer(r);
	if (err)
		goto fail;
	warp_timer_arm_ms(r->timer, RP_ANSWER_MS);
	return 0;
fail:
	rp_free(r, 0);
	return err;
}

static void rp_cancel(struct tv_attempt *a)
{
	/* Another attempt won, or the connect gave up (deadline, cancelled by the caller). */
	if (a->priv)
		rp_free(a->priv, a->c->res.err ? WARP_SIG_CANCEL_ABANDONED : WARP_SIG_CANCEL_DONE);
}

/* ---------------------------------------------------------------- listener */

static int passive_count;

struct rpl {
	struct tv_passive ps;
	struct warp_node *node;
	int family;
	bool hard, ended;
	struct rp_params par;
	struct punch_nat us;
	struct punch_sess sess;
	struct rp_hard hs;
	struct rp_spray spray;
	struct tv_claim *claim;
	struct pipe_dial *dial;
	struct warp_timer *timer;
};

static void rpl_free(struct tv_passive *ps)
{
	struct rpl *l = (struct rpl *)ps;

	if (!l->ended)
		pr_info("stopped from outside (CANCEL or node closing): %d mappings, %llu probes",
			l->hs.n, (unsigned long long)l->spray.sent);
	spray_stop(&l->spray);
	hard_close(&l->hs);
	if (l->dial)
		pipe_dial_cancel(l->dial);
	tv_claim_cancel(l->claim);
	punch_sess_stop(&l->sess);
	warp_timer_free(l->timer);
	free(l);
	__atomic_sub_fetch(&passive_count, 1, __ATOMIC_RELAXED);
}

static void rpl_end(struct rpl *l)
{
	l->ended = true;
	tv_passive_del(&l->ps);
	rpl_free(&l->ps);
}

static void rpl_deliver(struct rpl *l, struct warp_pipe *pipe)
{
	struct warp_node *node = l->node;

	rpl_end(l);
	pipe_deliver_inbound(node, pipe);
	warp_pipe_release(pipe);
}

static void rpl_claimed(struct tv_claim *cl, struct warp_pipe *pipe, void *user)
{
	struct rpl *l = user;

	l->claim = NULL;
	rpl_deliver(l, pipe);
}

static void rpl_dialed(struct warp_pipe *pipe, int err, void *user)
{
	struct rpl *l = user;

	l->dial = NULL;
	if (pipe) {
		pipe_set_strategy(pipe, tv_random_probe.name, WARP_PATH_DIRECT);
		rpl_deliver(l, pipe);
		return;
	}
	pr_info("a probe landed but the handshake failed: %s", warp_strerror(err));
	rpl_end(l);
}

static void rpl_rx(struct punch_sess *s, bool reply, const struct sockaddr *src, int fd,
		   uint64_t pn, void *user)
{
	struct rpl *l = user;
	char ep[WARP_EP_STRLEN];

	if (l->hard) {
		if (fd < 0 || l->dial)
			return;
		pr_info("probe %llu reached mapping socket %d from %s", (unsigned long long)pn, fd,
			warp_ep_str(src, ep, sizeof(ep)));
		if (dial_from(l->node, &l->hs, fd, src, l->ps.peer, rpl_dialed, l, &l->dial))
			rpl_end(l);
		return;
	}
	if (fd < 0 && l->spray.running) {
		pr_info("probe %llu landed at %s after %llu sent", (unsigned long long)pn,
			warp_ep_str(src, ep, sizeof(ep)), (unsigned long long)l->spray.sent);
		spray_stop(&l->spray);
	}
}

static void rpl_timeout(struct warp_timer *t, void *user)
{
	struct rpl *l = user;

	pr_info("no pipe from the peer (%llu probes sent, %d mappings)",
		(unsigned long long)l->spray.sent, l->hs.n);
	rpl_end(l);
}

static void rp_offer_in(struct warp_node *node, struct warp_signal *sig,
			const struct warp_sig_msg *m)
{
	struct warp_sig_msg *ans = NULL;
	struct sockaddr_storage peer_ep, ep;
	struct rpl *l;
	const char *why = "cannot probe";
	uint32_t ms, rate;
	double miss;
	int err;

	if (m->body.transport != WARP_SIG_UDP || !m->body.neps) {
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_BAD_REQUEST, "udp endpoint needed");
		return;
	}
	if (tv_passive_find(node, m->attempt))
		return;
	if (__atomic_add_fetch(&passive_count, 1, __ATOMIC_RELAXED) > RP_MAX_PASSIVE) {
		__atomic_sub_fetch(&passive_count, 1, __ATOMIC_RELAXED);
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_BUSY, "random_probe busy");
		return;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		__atomic_sub_fetch(&passive_count, 1, __ATOMIC_RELAXED);
		return;
	}
	l->ps.free = rpl_free;
	memcpy(l->ps.attempt, m->attempt, sizeof(l->ps.attempt));
	memcpy(l->ps.peer, m->sender, WARP_PUBKEY_LEN);
	l->node = node;
	l->family = m->body.eps[0].family == 6 ? AF_INET6 : AF_INET;
	l->hard = !msg_is_hard(m);
	rp_params(&l->par);
	tv_passive_add(node, &l->ps);
	tv_sig_ep_addr(&m->body.eps[0], &peer_ep);
	/* The hard side keeps its mappings as long as the prober asks (within a cap); the easy
	 * side probes within its own limits whatever the peer asks (probing is traffic towards
	 * an address only the peer vouches for). */
	ms = m->body.duration_ms ? m->body.duration_ms : l->par.duration_ms;
	if (ms > (l->hard ? RP_MAX_MS : l->par.duration_ms))
		ms = l->hard ? RP_MAX_MS : l->par.duration_ms;
	rate = l->par.rate;
	ans = calloc(1, sizeof(*ans));
	l->timer = warp_timer_new(node->loop, rpl_timeout, l);
	if (!ans || !l->timer || !node_udp_sock(node, l->family) ||
	    !punch_own_nat(node, l->family, &l->us))
		goto fail;
	err = punch_sess_start(&l->sess, node, m->attempt, m->body.secret, WARP_PROBE_LISTENER,
			       rpl_rx, l);
	if (err)
		goto fail;
	if (l->hard) {
		if (l->us.cls != PUNCH_SYM_PRED && l->us.cls != PUNCH_SYM_RANDOM) {
			why = "neither side is symmetric";
			goto fail;
		}
		err = hard_open(&l->hs, node, &l->sess, l->family, l->par.sockets,
				(struct sockaddr *)&peer_ep);
		if (err <= 0) {
			why = "cannot open sockets";
			goto fail;
		}
		log_odds("peer probing us", RP_RANGE_HI - RP_RANGE_LO + 1, (uint32_t)l->hs.n,
			 rate_of_interval(m->body.interval_ms), ms, &miss);
	} else {
		if (l->us.cls == PUNCH_SYM_PRED || l->us.cls == PUNCH_SYM_RANDOM ||
		    l->us.cls == PUNCH_BLOCKED || !l->us.has_ext) {
			why = "both sides symmetric: turn is needed";
			goto fail;
		}
		l->claim = tv_claim_inbound(node, m->sender, rpl_claimed, l);
		if (!l->claim)
			goto fail;
	}
	err = warp_signal_msg_init(sig, ans, WARP_SIG_PUNCH_ANSWER, m->sender);
	if (err)
		goto fail;
	own_ep(&ep, &l->us, l->hard);
	fill_msg(&ans->body, node, WARP_SIG_ROLE_RESPONDER, m->body.secret, (struct sockaddr *)&ep,
		 l->hard, (uint32_t)l->hs.n, rate, ms);
	if (warp_signal_reply(sig, m, ans) < 0)
		goto fail;
	free(ans);
	if (!l->hard) {
		log_odds("probing the peer", (uint32_t)m->body.range_hi - m->body.range_lo + 1,
			 (uint32_t)m->body.port_delta, rate, ms, &miss);
		if (spray_start(&l->spray, node, &l->sess, (struct sockaddr *)&peer_ep,
				m->body.range_lo, m->body.range_hi, rate, ms)) {
			rpl_end(l);
			return;
		}
	}
	warp_timer_arm_ms(l->timer, ms + RP_SLACK_MS + (l->hard ? RP_ANSWER_MS : 0));
	return;
fail:
	free(ans);
	warp_signal_reply_error(sig, m, WARP_SIG_ERR_INTERNAL, why);
	rpl_end(l);
}

const struct tv_strategy tv_random_probe = {
	.id = WARP_STRAT_RANDOM_PROBE,
	.name = "random_probe",
	.plan = rp_plan,
	.start = rp_start,
	.cancel = rp_cancel,
	.offer = rp_offer_in,
};
