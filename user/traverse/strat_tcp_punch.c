// SPDX-License-Identifier: MIT
/*
 * tcp_punch: TCP simultaneous open through both NATs, for sites that drop UDP.
 *
 *   connector (us)                          listener (the peer)
 *   reserve a port, STUN over TCP from it
 *   PUNCH_OFFER (endpoints, start >= now) -->
 *                                           reserve a port, STUN over TCP from it;
 *                                           meeting time = now + offer transit + margin
 *                                       <-- PUNCH_ANSWER (endpoints, start, interval, window)
 *   at the meeting time both connect() from the reserved port to the other's endpoints,
 *   retrying a failed connect each interval and replacing an unanswered one, for the window.
 *   The first connection up is ours: the           every connection that comes up is handed
 *   handshake runs on it as initiator; the         to the pipe layer as inbound; the one
 *   others are closed.                             carrying the INIT becomes the pipe.
 *   CANCEL when done or abandoned          -->     stops trying.
 *
 * Each family with an internet route on both sides gets one attempt.  Sequential symmetric
 * NATs announce predicted ports; random ones cannot punch (unless the other side is open).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "tcp_punch"
#include "core/log.h"
#include "core/util.h"
#include "net/endpoint.h"
#include "node/netstate.h"
#include "pipe/pipe_internal.h"
#include "signal/signal.h"
#include "traverse/tcp_punch.h"
#include "traverse/traverse.h"

#define STUN_TIMEOUT_MS	  1500
#define ANSWER_TIMEOUT_MS 5000
#define DELAY_FIRST_MS	  40   /* UDP cannot work here: right after direct_connect */
#define DELAY_FALLBACK_MS 1000 /* UDP punching usually wins before: no signalling spent */

static const char *fam_name(int family)
{
	return family == AF_INET ? "IPv4" : "IPv6";
}

static void self_nat(struct warp_node *node, int family, struct tp_nat *n)
{
	const struct warp_nat_report *r = node_nat_report(node, family);

	memset(n, 0, sizeof(*n));
	if (!r)
		return;
	n->type = (uint8_t)r->type;
	n->mapping = (uint8_t)r->mapping;
	n->delta = (uint8_t)r->delta;
	n->delta_value = r->delta_value;
	n->udp_blocked = !r->udp && r->type == WARP_NAT_BLOCKED;
}

static void route_nat(const struct warp_addr_route *r, struct tp_nat *n)
{
	memset(n, 0, sizeof(*n));
	n->type = r->nat;
	n->mapping = r->mapping;
	n->delta = r->delta_type;
	n->delta_value = r->delta_value;
	n->udp_blocked = (r->flags & WARP_ROUTE_F_UDP_BLOCKED) || r->nat == WARP_ADDR_NAT_BLOCKED;
}

/* The peer's route of a family that leads to the internet (the default one preferred):
 * an external address, a UDP-blocked site (its TCP mapping comes with the answer), or a
 * public interface address. */
static int peer_route(const struct warp_node_addr *to, int family)
{
	uint8_t fam = family == AF_INET ? 4 : 6;
	int best = -1;

	for (size_t i = 0; i < to->nroutes; i++) {
		const struct warp_addr_route *r = &to->routes[i];
		struct sockaddr_storage nic;

		if (r->family != fam || (r->flags & WARP_ROUTE_F_LOOPBACK))
			continue;
		warp_ep_from_raw(&nic, family, r->nic_addr, 1, 0);
		if (!r->has_ext && !(r->flags & WARP_ROUTE_F_UDP_BLOCKED) &&
		    (warp_ep_is_private((struct sockaddr *)&nic) ||
		     warp_ep_is_linklocal((struct sockaddr *)&nic) ||
		     warp_ep_is_loopback((struct sockaddr *)&nic)))
			continue;
		if (best < 0 || (r->flags & WARP_ROUTE_F_DEFAULT))
			best = (int)i;
	}
	return best;
}

static bool same_ext(struct warp_node *node, const struct warp_addr_route *r)
{
	struct warp_node_addr me;

	if (!r->has_ext || warp_node_address(node, &me))
		return false;
	for (size_t i = 0; i < me.nroutes; i++)
		if (me.routes[i].family == r->family && me.routes[i].has_ext &&
		    !memcmp(me.routes[i].ext_addr, r->ext_addr, r->family == 4 ? 4 : 16))
			return true;
	return false;
}

static void plan(struct warp_connect *c)
{
	static const int fams[] = { AF_INET, AF_INET6 };
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct tv_combo combo = { 0 };
	int planned = 0, skipped = 0;

	combo.route = "internet";
	combo.tcp = true;
	combo.cls = WARP_PATH_DIRECT;
	combo.rroute = -1;
	if (!node_signal(c->node) || !tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS)) {
		tv_skip(c, &tv_tcp_punch, &combo, "%s",
			!node_signal(c->node) ? "no signalling brokers configured"
					      : "the peer advertises no signalling broker");
		return;
	}
	for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
		int fam = fams[i], rr = peer_route(&c->to, fam);
		const struct warp_addr_route *r;
		struct sockaddr_storage srv;
		struct tp_nat self, peer;
		const char *why;
		bool udp_ok;

		if (rr < 0 || (fam == AF_INET6 && (c->node->conf.flags & WARP_CONF_NO_IPV6)))
			continue;
		r = &c->to.routes[rr];
		combo.family = fam;
		combo.rroute = rr;
		self_nat(c->node, fam, &self);
		route_nat(r, &peer);
		why = tp_infeasible(&self, &peer);
		if (!why && !node_stun_server(c->node, fam, 0, &srv))
			why = fam == AF_INET ? "no IPv4 STUN server to learn our TCP mapping"
					     : "no IPv6 STUN server to learn our TCP mapping";
		if (!why && same_ext(c->node, r))
			why = "behind the same NAT as the peer: its LAN address is the path";
		if (why) {
			tv_skip(c, &tv_tcp_punch, &combo, "%s", why);
			skipped++;
			continue;
		}
		udp_ok = !self.udp_blocked && !peer.udp_blocked &&
			 (c->strategies & (1u << WARP_STRAT_UDP_PUNCH));
		tv_add(c, &tv_tcp_punch, &combo,
		       udp_ok					     ? DELAY_FALLBACK_MS
		       : (c->strategies & (1u << WARP_STRAT_DIRECT)) ? DELAY_FIRST_MS
								     : 0);
		planned++;
	}
	if (!planned && !skipped) {
		combo.family = 0;
		tv_skip(c, &tv_tcp_punch, &combo, "the peer has no route to the internet");
	}
}

/* Without a STUN answer: the address the NAT classification saw over TCP (or our external
 * one) with the local port, right for the port-keeping NATs that are the common case. */
static bool guess_mapping(struct warp_node *node, int family, uint16_t port,
			  struct sockaddr_storage *out)
{
	const struct warp_nat_report *r = node_nat_report(node, family);

	if (r && r->delta != WARP_NAT_DELTA_EQUAL && r->delta != WARP_NAT_DELTA_NONE)
		return false;
	if (r && r->tcp && r->tcp_external.ss_family == family)
		*out = r->tcp_external;
	else if (!node_reflexive(node, family, out))
		return false;
	warp_ep_set_port((struct sockaddr *)out, port);
	return true;
}

/* ---- connector side ---- */

struct tcpa {
	struct tv_attempt *a;
	struct warp_node *node;
	int family;
	struct tp_nat self;
	struct tcp_punch *tp;
	struct tp_stun *stun;
	unsigned int stun_idx;
	int stun_err;
	struct pipe_dial *dial;
	struct warp_timer *timer;
	uint8_t attempt[WARP_SIG_ID_LEN];
	bool handler, offered, guessed;
	uint64_t offer_ns, meet_ns;
	struct sockaddr_storage mapped;
};

static void send_cancel(struct tcpa *ta, uint16_t code)
{
	struct warp_connect *c = ta->a->c;
	struct warp_signal *sig = node_signal(ta->node);
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct warp_sig_msg *m;

	if (!ta->offered || !sig)
		return;
	ta->offered = false;
	m = calloc(1, sizeof(*m));
	if (!m || warp_signal_msg_init(sig, m, WARP_SIG_CANCEL, c->to.pubkey)) {
		free(m);
		return;
	}
	memcpy(m->attempt, ta->attempt, sizeof(ta->attempt));
	m->body.present |= WARP_SIGF_CODE;
	m->body.code = code;
	warp_signal_send(sig, m, b, tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS));
	free(m);
}

static void ta_free(struct tcpa *ta)
{
	struct warp_signal *sig = node_signal(ta->node);

	tp_stun_cancel(ta->stun);
	tp_free(ta->tp);
	if (ta->dial)
		pipe_dial_cancel(ta->dial);
	if (ta->handler && sig)
		warp_signal_off_attempt(sig, ta->attempt);
	warp_timer_free(ta->timer);
	ta->a->priv = NULL;
	free(ta);
}

static void ta_fail(struct tcpa *ta, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ta_fail(struct tcpa *ta, int err, const char *fmt, ...)
{
	struct tv_attempt *a = ta->a;
	char why[sizeof(a->rec->reason)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	send_cancel(ta, WARP_SIG_CANCEL_ABANDONED);
	ta_free(ta);
	tv_failed(a, err, "%s", why);
}

static void set_endpoint(struct tcpa *ta, const struct sockaddr *remote)
{
	struct tv_attempt *a = ta->a;

	memcpy(&a->combo.remote, remote, warp_ep_len(remote));
	warp_ep_str(remote, a->rec->endpoint, sizeof(a->rec->endpoint));
}

static void ta_dialed(struct warp_pipe *pipe, int err, void *user)
{
	struct tcpa *ta = user;
	struct tv_attempt *a = ta->a;

	ta->dial = NULL;
	if (!pipe) {
		ta_fail(ta, err, "TCP connected, but the handshake failed: %s",
			err == -ETIMEDOUT ? "no answer" : warp_strerror(err));
		return;
	}
	pr_info("%s: pipe up %.1f ms after the meeting time", a->rec->endpoint,
		(double)(warp_time_ns() - ta->meet_ns) / 1e6);
	send_cancel(ta, WARP_SIG_CANCEL_DONE);
	ta_free(ta);
	tv_won(a, pipe);
}

static void ta_connected(struct tcp_punch *tp, int fd, const struct sockaddr *remote, void *user)
{
	struct tcpa *ta = user;
	struct warp_connect *c = ta->a->c;
	struct pipe_dial_opts o = { 0 };
	struct pipe_path *path;

	set_endpoint(ta, remote);
	remote = (struct sockaddr *)&ta->a->combo.remote;
	pr_debug("TCP open with %s %.1f ms after the meeting time", ta->a->rec->endpoint,
		 ((double)warp_time_ns() - (double)ta->meet_ns) / 1e6);
	/* The first connection is the one: close the others and the port's listener. */
	tp_free(ta->tp);
	ta->tp = NULL;
	path = pipe_path_tcp(ta->node, fd, remote, false);
	if (!path) {
		int err = -errno;

		close(fd);
		ta_fail(ta, err, "%s", warp_strerror(err));
		return;
	}
	path->cls = WARP_PATH_DIRECT;
	o.expect_key = c->to.pubkey;
	o.cls = WARP_PATH_DIRECT;
	o.strategy = "tcp_punch";
	ta->dial = pipe_dial(ta->node, path, &o, ta_dialed, ta);
	if (!ta->dial) {
		int err = -errno;

		pipe_path_free(path);
		ta_fail(ta, err, "%s", warp_strerror(err));
	}
}

static void ta_ended(struct tcp_punch *tp, void *user)
{
	struct tcpa *ta = user;
	unsigned int tries, n = tp_ntargets(tp);
	int last;

	tp_stats(tp, &tries, &last);
	ta_fail(ta, -ETIMEDOUT,
		"no TCP connection through: %u connect%s to %u endpoint%s (%s), last error: %s",
		tries, tries == 1 ? "" : "s", n, n == 1 ? "" : "s", ta->a->rec->endpoint,
		last ? warp_strerror(last) : "none (SYNs unanswered)");
}

static const struct tp_ops ta_ops = {
	.connected = ta_connected,
	.ended = ta_ended,
};

static void ta_reply(struct warp_signal *sig, const struct warp_sig_msg *m, void *user)
{
	struct tcpa *ta = user;
	struct warp_connect *c = ta->a->c;
	const struct warp_sig_body *b = &m->body;
	struct tp_sched s;
	uint64_t now, delay;
	double rtt;

	if (memcmp(m->sender, c->to.pubkey, WARP_PUBKEY_LEN) || !ta->handler)
		return;
	if (m->type == WARP_SIG_ERROR) {
		ta_fail(ta, -ECONNREFUSED, "peer refused: %s", b->text[0] ? b->text : "error");
		return;
	}
	if (m->type != WARP_SIG_PUNCH_ANSWER)
		return;
	warp_signal_off_attempt(sig, ta->attempt);
	ta->handler = false;
	warp_timer_cancel(ta->timer);
	for (unsigned int i = 0; i < b->neps; i++) {
		struct sockaddr_storage ep;

		if (b->eps[i].kind == WARP_SIG_EP_RELAYED || b->eps[i].kind == WARP_SIG_EP_HOST)
			continue;
		tv_sig_ep_addr(&b->eps[i], &ep);
		if (ep.ss_family == ta->family && !tp_add_target(ta->tp, (struct sockaddr *)&ep) &&
		    tp_ntargets(ta->tp) == 1)
			set_endpoint(ta, (struct sockaddr *)&ep);
	}
	if (b->transport != WARP_SIG_TCP || !tp_ntargets(ta->tp)) {
		ta_fail(ta, -WARP_EMALFORMED, "the peer's answer has no TCP %s endpoint",
			fam_name(ta->family));
		return;
	}
	tp_sched_from(b->start_ms, (b->present & WARP_SIGF_INTERVAL) ? b->interval_ms : 100,
		      (b->present & WARP_SIGF_DURATION) ? b->duration_ms : TP_DURATION_MS, &s);
	now = node_clock_ms(ta->node);
	delay = s.start_ms > now ? s.start_ms - now : 0;
	rtt = (double)(warp_time_ns() - ta->offer_ns) / 1e6;
	ta->meet_ns = warp_time_ns() + delay * 1000000ull;
	pr_debug("answer after %.1f ms: %u endpoint(s), meeting in %llu ms, every %u ms for %u ms",
		 rtt, tp_ntargets(ta->tp), (unsigned long long)delay, s.interval_ms, s.duration_ms);
	tp_start(ta->tp, &s, delay);
}

static void ta_timeout(struct warp_timer *t, void *user)
{
	ta_fail(user, -ETIMEDOUT, "no answer from the peer over signalling in %u ms",
		ANSWER_TIMEOUT_MS);
}

static int ta_send_offer(struct tcpa *ta)
{
	struct warp_connect *c = ta->a->c;
	struct warp_signal *sig = node_signal(ta->node);
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct sockaddr_storage eps[TP_MAX_TARGETS];
	uint8_t kinds[TP_MAX_TARGETS];
	struct warp_sig_msg *m = calloc(1, sizeof(*m));
	uint64_t left = warp_timer_deadline(c->deadline);
	struct warp_node_addr me;
	uint16_t lo = 65535, hi = 0;
	int n, err;

	if (!m)
		return -ENOMEM;
	err = warp_signal_msg_init(sig, m, WARP_SIG_PUNCH_OFFER, c->to.pubkey);
	if (err)
		goto out;
	memcpy(m->attempt, ta->attempt, sizeof(ta->attempt));
	m->body.present |= WARP_SIGF_TRANSPORT | WARP_SIGF_ROLE | WARP_SIGF_START |
			   WARP_SIGF_SECRET | WARP_SIGF_PORT_INFO | WARP_SIGF_DURATION |
			   WARP_SIGF_TEXT;
	m->body.transport = WARP_SIG_TCP;
	m->body.role = WARP_SIG_ROLE_INITIATOR;
	m->body.start_ms = node_clock_ms(ta->node); /* ready now: the answerer picks the time */
	warp_random(m->body.secret, sizeof(m->body.secret));
	snprintf(m->body.text, sizeof(m->body.text), "%s", tv_tcp_punch.name);
	/* Whatever is left of the connect's time, less the signalling and the handshake. */
	left = left > warp_time_ns() ? (left - warp_time_ns()) / 1000000ull : 0;
	m->body.duration_ms = left > 1500 + TP_DURATION_MS    ? TP_DURATION_MS
			      : left > 1500 + TP_MIN_DURATION ? (uint32_t)(left - 1500)
							      : TP_MIN_DURATION;
	n = tp_predict(&ta->self, (struct sockaddr *)&ta->mapped, 1, eps, kinds, TP_MAX_TARGETS);
	for (int i = 0; i < n; i++) {
		struct warp_sig_ep e;
		uint16_t p = warp_ep_port((struct sockaddr *)&eps[i]);

		tv_sig_ep(&e, (struct sockaddr *)&eps[i],
			  ta->guessed ? WARP_SIG_EP_PREDICTED : kinds[i]);
		warp_sig_add_ep(&m->body, &e);
		lo = p < lo ? p : lo;
		hi = p > hi ? p : hi;
	}
	m->body.port_delta = ta->self.delta_value;
	m->body.range_lo = lo <= hi ? lo : 0;
	m->body.range_hi = hi;
	/* Our address tells the peer our NAT (an open host can punch with a random one). */
	if (!warp_node_address(ta->node, &me)) {
		n = warp_addr_encode(&me, m->body.blob, sizeof(m->body.blob));
		if (n > 0) {
			m->body.blob_len = (uint16_t)n;
			m->body.present |= WARP_SIGF_BLOB;
		}
	}
	if (!warp_signal_on_attempt(sig, ta->attempt, ta_reply, ta))
		ta->handler = true;
	err = warp_signal_send(sig, m, b, tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS));
	if (err < 0)
		goto out;
	err = 0;
	ta->offered = true;
	ta->offer_ns = warp_time_ns();
	warp_timer_arm_ms(ta->timer, ANSWER_TIMEOUT_MS);
out:
	free(m);
	return err;
}

static int ta_stun_next(struct tcpa *ta);

static void ta_mapped(int err, const struct sockaddr *mapped, void *user)
{
	struct tcpa *ta = user;
	char ep[WARP_EP_STRLEN];

	ta->stun = NULL;
	if (err) {
		ta->stun_err = err;
		if (!ta_stun_next(ta))
			return;
		ta->guessed = guess_mapping(ta->node, ta->family, warp_ep_port(tp_local(ta->tp)),
					    &ta->mapped);
		if (!ta->guessed) {
			ta_fail(ta, err, "could not learn our TCP mapping (STUN over TCP: %s)",
				warp_strerror(err));
			return;
		}
	} else {
		memcpy(&ta->mapped, mapped, warp_ep_len(mapped));
	}
	pr_debug("punch port %u maps to %s%s", warp_ep_port(tp_local(ta->tp)),
		 warp_ep_str((struct sockaddr *)&ta->mapped, ep, sizeof(ep)),
		 ta->guessed ? " (guessed)" : "");
	err = ta_send_offer(ta);
	if (err)
		ta_fail(ta, err, "cannot send the offer: %s", warp_strerror(err));
}

/* STUN from the punch port, next configured server first; 0 when one is under way. */
static int ta_stun_next(struct tcpa *ta)
{
	struct sockaddr_storage srv;

	while (node_stun_server(ta->node, ta->family, ta->stun_idx, &srv)) {
		ta->stun_idx++;
		ta->stun = tp_stun_start(ta->node->loop, tp_local(ta->tp), (struct sockaddr *)&srv,
					 STUN_TIMEOUT_MS, ta_mapped, ta);
		if (ta->stun)
			return 0;
		ta->stun_err = -errno;
	}
	return ta->stun_err ? ta->stun_err : -ENOENT;
}

static int start(struct tv_attempt *a)
{
	struct warp_node *node = a->c->node;
	struct tcpa *ta = calloc(1, sizeof(*ta));
	int err = -ENOMEM;

	if (!ta)
		return -ENOMEM;
	ta->a = a;
	ta->node = node;
	ta->family = a->combo.family;
	a->priv = ta;
	if (a->combo.rroute >= 0 && a->c->to.routes[a->combo.rroute].has_ext) {
		struct sockaddr_storage ext;

		/* The port comes with the answer. */
		warp_ep_from_raw(&ext, ta->family, a->c->to.routes[a->combo.rroute].ext_addr, 0, 0);
		warp_ep_addr_str((struct sockaddr *)&ext, a->rec->endpoint,
				 sizeof(a->rec->endpoint));
	}
	self_nat(node, ta->family, &ta->self);
	warp_random(ta->attempt, sizeof(ta->attempt));
	ta->timer = warp_timer_new(node->loop, ta_timeout, ta);
	if (!ta->timer)
		goto out;
	ta->tp = tp_new(node->loop, ta->family, &ta_ops, ta);
	if (!ta->tp) {
		err = -errno;
		goto out;
	}
	err = ta_stun_next(ta);
	if (!err)
		return 0;
	/* No STUN server could even be asked: the guess still lets a port-keeping NAT punch. */
	ta->guessed = guess_mapping(node, ta->family, warp_ep_port(tp_local(ta->tp)), &ta->mapped);
	if (ta->guessed) {
		err = ta_send_offer(ta);
		if (!err)
			return 0;
	}
out:
	ta_free(ta);
	return err;
}

static void cancel(struct tv_attempt *a)
{
	struct tcpa *ta = a->priv;

	if (!ta)
		return;
	send_cancel(ta, WARP_SIG_CANCEL_ABANDONED);
	ta_free(ta);
}

/* ---- listener side: a peer's offer ---- */

struct tcpp {
	struct tv_passive ps;
	struct warp_node *node;
	struct warp_sig_msg *offer;
	int family;
	struct tp_nat self;
	struct tcp_punch *tp;
	struct tp_stun *stun;
	unsigned int stun_idx;
	uint64_t transit_ms;
	bool guessed;
	struct sockaddr_storage mapped;
};

static void pp_free(struct tv_passive *ps)
{
	struct tcpp *pp = (struct tcpp *)ps;

	tp_stun_cancel(pp->stun);
	tp_free(pp->tp);
	free(pp->offer);
	free(pp);
}

static void pp_end(struct tcpp *pp)
{
	tv_passive_del(&pp->ps);
	pp_free(&pp->ps);
}

static void pp_error(struct tcpp *pp, uint16_t code, const char *why)
{
	struct warp_signal *sig = node_signal(pp->node);

	pr_info("cannot punch for a peer: %s", why);
	if (sig)
		warp_signal_reply_error(sig, pp->offer, code, why);
	pp_end(pp);
}

static void pp_connected(struct tcp_punch *tp, int fd, const struct sockaddr *remote, void *user)
{
	struct tcpp *pp = user;
	char ep[WARP_EP_STRLEN];

	/* Inbound from here on: the connector picks the connection and sends its INIT on it;
	 * any other one it closes ends as an orphan. */
	pr_debug("TCP through with %s", warp_ep_str(remote, ep, sizeof(ep)));
	pipe_layer_tcp_accept(pp->node, fd, remote);
	if (!tp_pending(tp))
		pp_end(pp);
}

static void pp_ended(struct tcp_punch *tp, void *user)
{
	pp_end(user);
}

static const struct tp_ops pp_ops = {
	.connected = pp_connected,
	.ended = pp_ended,
};

static void pp_answer(struct tcpp *pp)
{
	struct warp_signal *sig = node_signal(pp->node);
	const struct warp_sig_body *ob = &pp->offer->body;
	struct sockaddr_storage eps[TP_MAX_TARGETS];
	uint8_t kinds[TP_MAX_TARGETS];
	struct warp_sig_msg *m = calloc(1, sizeof(*m));
	int64_t off_ns;
	uint64_t unc_ns = 0, now;
	struct tp_sched s;
	int n, err;

	if (!m) {
		pp_error(pp, WARP_SIG_ERR_INTERNAL, "out of memory");
		return;
	}
	for (unsigned int i = 0; i < ob->neps; i++) {
		struct sockaddr_storage ep;

		if (ob->eps[i].kind == WARP_SIG_EP_RELAYED || ob->eps[i].kind == WARP_SIG_EP_HOST)
			continue;
		tv_sig_ep_addr(&ob->eps[i], &ep);
		if (ep.ss_family == pp->family)
			tp_add_target(pp->tp, (struct sockaddr *)&ep);
	}
	node_clock_info(pp->node, &off_ns, &unc_ns);
	now = node_clock_ms(pp->node);
	tp_schedule(now, pp->transit_ms, ob->start_ms,
		    (ob->present & WARP_SIGF_DURATION) ? ob->duration_ms : 0,
		    (uint32_t)(unc_ns / 1000000ull), &s);
	err = warp_signal_msg_init(sig, m, WARP_SIG_PUNCH_ANSWER, pp->offer->sender);
	if (err)
		goto fail;
	m->body.present |= WARP_SIGF_TRANSPORT | WARP_SIGF_ROLE | WARP_SIGF_START |
			   WARP_SIGF_SECRET | WARP_SIGF_PORT_INFO | WARP_SIGF_INTERVAL |
			   WARP_SIGF_DURATION | WARP_SIGF_TEXT;
	m->body.transport = WARP_SIG_TCP;
	m->body.role = WARP_SIG_ROLE_RESPONDER;
	m->body.start_ms = s.start_ms;
	memcpy(m->body.secret, ob->secret, sizeof(m->body.secret));
	m->body.interval_ms = (uint16_t)s.interval_ms;
	m->body.duration_ms = s.duration_ms;
	m->body.port_delta = pp->self.delta_value;
	snprintf(m->body.text, sizeof(m->body.text), "%s", tv_tcp_punch.name);
	n = tp_predict(&pp->self, (struct sockaddr *)&pp->mapped, tp_ntargets(pp->tp), eps, kinds,
		       TP_MAX_TARGETS);
	for (int i = 0; i < n; i++) {
		struct warp_sig_ep e;
		uint16_t p = warp_ep_port((struct sockaddr *)&eps[i]);

		tv_sig_ep(&e, (struct sockaddr *)&eps[i],
			  pp->guessed ? WARP_SIG_EP_PREDICTED : kinds[i]);
		warp_sig_add_ep(&m->body, &e);
		m->body.range_lo = i == 0 || p < m->body.range_lo ? p : m->body.range_lo;
		m->body.range_hi = p > m->body.range_hi ? p : m->body.range_hi;
	}
	err = warp_signal_reply(sig, pp->offer, m);
	if (err < 0)
		goto fail;
	free(m);
	pr_debug("offer took %llu ms: meeting in %llu ms, %u endpoint(s) of the peer",
		 (unsigned long long)pp->transit_ms, (unsigned long long)(s.start_ms - now),
		 tp_ntargets(pp->tp));
	tp_start(pp->tp, &s, s.start_ms > now ? s.start_ms - now : 0);
	return;
fail:
	free(m);
	pp_error(pp, WARP_SIG_ERR_INTERNAL, "cannot answer");
}

static int pp_stun_next(struct tcpp *pp);

static void pp_mapped(int err, const struct sockaddr *mapped, void *user)
{
	struct tcpp *pp = user;

	pp->stun = NULL;
	if (!err) {
		memcpy(&pp->mapped, mapped, warp_ep_len(mapped));
	} else if (!pp_stun_next(pp)) {
		return;
	} else {
		pp->guessed = guess_mapping(pp->node, pp->family, warp_ep_port(tp_local(pp->tp)),
					    &pp->mapped);
		if (!pp->guessed) {
			pp_error(pp, WARP_SIG_ERR_INTERNAL, "could not learn our TCP mapping");
			return;
		}
	}
	pp_answer(pp);
}

static int pp_stun_next(struct tcpp *pp)
{
	struct sockaddr_storage srv;
	int err = -ENOENT;

	while (node_stun_server(pp->node, pp->family, pp->stun_idx, &srv)) {
		pp->stun_idx++;
		pp->stun = tp_stun_start(pp->node->loop, tp_local(pp->tp), (struct sockaddr *)&srv,
					 STUN_TIMEOUT_MS, pp_mapped, pp);
		if (pp->stun)
			return 0;
		err = -errno;
	}
	return err;
}

static void offer(struct warp_node *node, struct warp_signal *sig, const struct warp_sig_msg *m)
{
	struct sockaddr_storage srv;
	struct tp_nat peer = { 0 };
	struct warp_node_addr from;
	const char *why = NULL;
	struct tcpp *pp;
	uint64_t now;
	int family = 0;

	if (tv_passive_find(node, m->attempt))
		return; /* the same offer through the other broker */
	for (unsigned int i = 0; i < m->body.neps && !family; i++)
		if (m->body.eps[i].kind != WARP_SIG_EP_RELAYED &&
		    m->body.eps[i].kind != WARP_SIG_EP_HOST)
			family = m->body.eps[i].family == 4 ? AF_INET : AF_INET6;
	if (m->body.transport != WARP_SIG_TCP || !family) {
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_BAD_REQUEST,
					"tcp_punch needs TCP and an endpoint");
		return;
	}
	pp = calloc(1, sizeof(*pp));
	if (!pp || !(pp->offer = malloc(sizeof(*m)))) {
		free(pp);
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_INTERNAL, "out of memory");
		return;
	}
	memcpy(pp->offer, m, sizeof(*m));
	pp->ps.free = pp_free;
	memcpy(pp->ps.attempt, m->attempt, sizeof(pp->ps.attempt));
	memcpy(pp->ps.peer, m->sender, WARP_PUBKEY_LEN);
	pp->node = node;
	pp->family = family;
	now = node_clock_ms(node);
	pp->transit_ms = now > m->created_ms ? now - m->created_ms : 0;
	tv_passive_add(node, &pp->ps);
	self_nat(node, family, &pp->self);
	/* The offerer's NAT, when it sent its own address. */
	if ((m->body.present & WARP_SIGF_BLOB) &&
	    !warp_addr_decode(m->body.blob, m->body.blob_len, &from) &&
	    !memcmp(from.pubkey, m->sender, WARP_PUBKEY_LEN)) {
		int rr = peer_route(&from, family);

		if (rr >= 0)
			route_nat(&from.routes[rr], &peer);
	}
	why = tp_infeasible(&pp->self, &peer);
	if (!why && !node_stun_server(node, family, 0, &srv))
		why = "no STUN server to learn our TCP mapping";
	if (!why) {
		pp->tp = tp_new(node->loop, family, &pp_ops, pp);
		if (!pp->tp || pp_stun_next(pp))
			why = "cannot open a punch socket";
	}
	if (why)
		pp_error(pp, WARP_SIG_ERR_BAD_REQUEST, why);
}

const struct tv_strategy tv_tcp_punch = {
	.id = WARP_STRAT_TCP_PUNCH,
	.name = "tcp_punch",
	.offer = offer,
	.plan = plan,
	.start = start,
	.cancel = cancel,
};
