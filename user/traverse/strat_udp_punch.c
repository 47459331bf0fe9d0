// SPDX-License-Identifier: MIT
/*
 * udp_punch: both sides send to each other's endpoints from their node sockets until the
 * NATs let the packets through; the connector's handshake INITs ride the hole.
 *
 * The connector (A) sends PUNCH_OFFER with its endpoints (reflexive, or predicted when its
 * NAT allocates a new port per destination), then probes and dials the peer's endpoints it
 * already knows.  The listener (B) probes A's endpoints (opening its NAT towards them),
 * answers with its own (fresh reflexive, or predicted), and keeps probing for the window.
 * A adds B's endpoints, and any endpoint a verified probe came from (a peer-reflexive one,
 * when A's NAT lets other ports of B's address in), and dials each; the first handshake to
 * complete wins.  A verified probe or reply from an endpoint starts a second handshake to it
 * at once instead of waiting for the first one's retransmission timer.
 *
 * Prediction: a sequential NAT's next port comes from a STUN Binding on a throwaway socket
 * (the port it just allocated) plus k * delta; first packets to the peer's endpoints go out
 * in order, so with both sides sequential the k-th pair of mappings meet.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "udp_punch"
#include "core/log.h"
#include "core/util.h"
#include "net/endpoint.h"
#include "node/netstate.h"
#include "pipe/pipe_internal.h"
#include "signal/signal.h"
#include "traverse/punch.h"
#include "traverse/traverse.h"

#define UP_ANSWER_MS	  4000 /* the peer's PUNCH_ANSWER must come within */
#define UP_WINDOW_MS	  4000 /* then the punch lasts at most */
#define UP_RTO_MS	  25   /* first INIT retransmission: the hole opens any moment */
#define UP_TICK_MS	  50   /* connector's probes */
#define UP_LISTEN_TICK_MS 25   /* listener's probes */
#define UP_LISTEN_MAX_MS  8000 /* whatever the offer asks */

struct up;

/* Up to two handshakes per endpoint: the first with the first packet, a second one at once
 * when the peer shows the path is open (instead of waiting for a retransmission; the first
 * is kept: its answer may already be on the way). */
struct up_dial {
	struct up *u;
	int idx;
	struct pipe_dial *d;
};

enum up_state { UP_SAMPLING, UP_OFFER_DUE, UP_OFFERED, UP_ANSWERED };

struct up {
	struct tv_attempt *a;
	struct warp_node *node;
	int family;
	enum up_state state;
	struct punch_nat us, peer;
	struct punch_sess sess;
	struct punch_sample *sample;
	uint16_t sample_port;
	struct warp_timer *timer, *tick;
	uint8_t attempt[WARP_SIG_ID_LEN];
	uint8_t secret[WARP_PROBE_SECRET_LEN];
	bool handler, offered;
	int last_err;
	struct warp_sig_body *pending; /* the answer, while we sample again */
	struct punch_cands cands;      /* the peer's */
	struct up_dial dials[PUNCH_MAX_CANDS][2];
};

/* ---------------------------------------------------------------- shared */

/* Our endpoints for a message: reflexive, predicted from a sample, or a guess. */
static int own_eps(struct warp_sig_body *b, const struct punch_nat *us, uint16_t sample)
{
	uint16_t ports[PUNCH_WINDOW];
	bool sym = us->cls == PUNCH_SYM_PRED || us->cls == PUNCH_SYM_RANDOM;
	unsigned int kind = sym ? WARP_SIG_EP_PREDICTED : WARP_SIG_EP_REFLEXIVE;
	int n = punch_predict(us, sample, ports, PUNCH_WINDOW);

	if (!n) /* random ports: the address still lets a restricted peer open up to us */
		ports[n++] = us->local_port;
	if (!us->has_ext || !ports[0])
		return -WARP_EMISSING;
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage ep;
		struct warp_sig_ep e;

		punch_ep(&ep, us, ports[i]);
		tv_sig_ep(&e, (struct sockaddr *)&ep, kind);
		warp_sig_add_ep(b, &e);
	}
	b->present |= WARP_SIGF_PORT_INFO;
	b->port_delta = us->delta_value;
	b->range_lo = b->range_hi = ports[0];
	for (int i = 1; i < n; i++) {
		if (ports[i] < b->range_lo)
			b->range_lo = ports[i];
		if (ports[i] > b->range_hi)
			b->range_hi = ports[i];
	}
	return n;
}

static void fill_common(struct warp_sig_body *b, struct warp_node *node, unsigned int role,
			const uint8_t secret[WARP_PROBE_SECRET_LEN], uint32_t duration_ms,
			uint16_t interval_ms)
{
	b->present |= WARP_SIGF_TRANSPORT | WARP_SIGF_ROLE | WARP_SIGF_START | WARP_SIGF_SECRET |
		      WARP_SIGF_INTERVAL | WARP_SIGF_DURATION;
	b->transport = WARP_SIG_UDP;
	b->role = (uint8_t)role;
	b->start_ms = node_clock_ms(node);
	memcpy(b->secret, secret, WARP_PROBE_SECRET_LEN);
	b->interval_ms = interval_ms;
	b->duration_ms = duration_ms;
}

/* ---------------------------------------------------------------- plan */

/* Reachable without signalling: direct_connect gets there first. */
static bool peer_reachable(const struct warp_addr_route *r)
{
	if (r->flags & WARP_ROUTE_F_PORTMAP)
		return r->ext_udp_port;
	return r->nat == WARP_ADDR_NAT_OPEN || r->nat == WARP_ADDR_NAT_FULL_CONE;
}

static void up_plan(struct warp_connect *c)
{
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct tv_combo combo = { 0 };
	int planned = 0;

	combo.route = "internet";
	combo.cls = WARP_PATH_DIRECT;
	combo.rroute = -1;
	if (!node_signal(c->node)) {
		tv_skip(c, &tv_udp_punch, &combo, "no signalling brokers configured");
		return;
	}
	if (!tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS)) {
		tv_skip(c, &tv_udp_punch, &combo, "the peer advertises no signalling broker");
		return;
	}
	for (int i = 0; i < 2; i++) {
		int fam = i ? AF_INET6 : AF_INET, r;
		struct punch_nat us, peer;
		const char *why;

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
		why = punch_udp_infeasible(&us, &peer);
		if (why) {
			tv_skip(c, &tv_udp_punch, &combo, "%s", why);
			planned++;
			continue;
		}
		tv_add(c, &tv_udp_punch, &combo, peer_reachable(&c->to.routes[r]) ? 150 : 0);
		planned++;
	}
	if (!planned) {
		combo.rroute = -1;
		tv_skip(c, &tv_udp_punch, &combo,
			"no address family with external facts in common");
	}
}

/* ---------------------------------------------------------------- connector */

static void up_free(struct up *u, uint16_t cancel_code)
{
	struct warp_signal *sig = node_signal(u->node);

	punch_sample_cancel(u->sample);
	free(u->pending);
	if (u->handler && sig)
		warp_signal_off_attempt(sig, u->attempt);
	if (u->offered && cancel_code)
		punch_send_cancel(u->node, &u->a->c->to, u->attempt, cancel_code);
	punch_sess_stop(&u->sess);
	for (int i = 0; i < PUNCH_MAX_CANDS; i++)
		for (int k = 0; k < 2; k++)
			if (u->dials[i][k].d)
				pipe_dial_cancel(u->dials[i][k].d);
	warp_timer_free(u->timer);
	warp_timer_free(u->tick);
	u->a->priv = NULL;
	explicit_bzero(u->secret, sizeof(u->secret));
	free(u);
}

static void up_fail(struct up *u, int err, const char *why)
{
	struct tv_attempt *a = u->a;

	up_free(u, WARP_SIG_CANCEL_ABANDONED);
	tv_failed(a, err, "%s", why);
}

static void dialed(struct warp_pipe *pipe, int err, void *user);

static void dial(struct up *u, int i, int k)
{
	struct up_dial *d = &u->dials[i][k];
	struct pipe_dial_opts o = { 0 };
	struct pipe_path *path;

	o.expect_key = u->a->c->to.pubkey;
	o.cls = WARP_PATH_DIRECT;
	o.strategy = tv_udp_punch.name;
	o.rto_ms = UP_RTO_MS;
	o.timeout_ms = UP_WINDOW_MS;
	d->u = u;
	d->idx = i;
	path = pipe_path_udp(u->node, (struct sockaddr *)&u->cands.ep[i], NULL, 0);
	if (!path)
		return;
	path->cls = WARP_PATH_DIRECT;
	d->d = pipe_dial(u->node, path, &o, dialed, d);
	if (!d->d)
		pipe_path_free(path);
}

/* A new endpoint of the peer: the first packet to it goes out now, in list order (a
 * sequential NAT on our side allocates in that order), then a handshake follows it. */
static void add_cand(struct up *u, const struct sockaddr *ep, uint8_t kind)
{
	char s[WARP_EP_STRLEN];
	int i = punch_cands_add(&u->cands, ep, kind);

	if (i < 0)
		return;
	pr_debug("candidate %s (%s)", warp_ep_str(ep, s, sizeof(s)), punch_kind_name(kind));
	punch_send_probe(&u->sess, -1, (struct sockaddr *)&u->cands.ep[i]);
	dial(u, i, 0);
}

static void dialed(struct warp_pipe *pipe, int err, void *user)
{
	struct up_dial *d = user;
	struct up *u = d->u;
	struct tv_attempt *a = u->a;
	char ep[WARP_EP_STRLEN];

	d->d = NULL; /* the pipe layer freed it */
	if (!pipe) {
		/* The window timer ends the attempt; remember why for its reason. */
		if (err != -ETIMEDOUT)
			u->last_err = err;
		return;
	}
	snprintf(a->rec->reason, sizeof(a->rec->reason), "via %s endpoint %s",
		 punch_kind_name(u->cands.kind[d->idx]),
		 warp_ep_str((struct sockaddr *)&u->cands.ep[d->idx], ep, sizeof(ep)));
	up_free(u, 0);
	tv_won(a, pipe);
}

static void up_rx(struct punch_sess *s, bool reply, const struct sockaddr *src, int fd, uint64_t pn,
		  void *user)
{
	struct up *u = user;
	int i = punch_cands_find(&u->cands, src);

	if (i < 0) {
		/* Our NAT let in a port we never sent to: the peer's real mapping. */
		add_cand(u, src, 0);
		return;
	}
	/* Evidence that the path is open: an INIT goes now, not at the next retransmission. */
	if (!u->dials[i][1].u)
		dial(u, i, 1);
}

/* The peer's endpoints from index `from` on, in its order. */
static void add_eps(struct up *u, const struct warp_sig_body *b, unsigned int from)
{
	for (unsigned int k = from; k < b->neps; k++) {
		struct sockaddr_storage ep;

		if (b->eps[k].family != (u->family == AF_INET6 ? 6 : 4))
			continue;
		tv_sig_ep_addr(&b->eps[k], &ep);
		add_cand(u, (struct sockaddr *)&ep, b->eps[k].kind);
	}
}

static unsigned int npredicted(const struct warp_sig_body *b)
{
	unsigned int n = 0;

	for (unsigned int k = 0; k < b->neps; k++)
		n += b->eps[k].kind == WARP_SIG_EP_PREDICTED;
	return n;
}

/* Both sides sequential: the peer opened its k-th new mapping towards our k-th predicted
 * port, so its k-th endpoint only works from that port of ours.  Anything our NAT handed out
 * since our sample (other attempts, other hosts) shifted our sequence: the second sample
 * says by how much, and we skip the pairs we can no longer meet. */
static void resampled(int err, uint16_t port, void *user)
{
	struct up *u = user;
	struct warp_sig_body *b = u->pending;
	int idx = err ? -1 : punch_drift_index(&u->us, u->sample_port, port);

	u->sample = NULL;
	u->pending = NULL;
	if (idx < 0) {
		pr_debug("second sample unusable (%s): trying every pair",
			 err ? warp_strerror(err) : "off the delta");
		idx = 0;
	} else if (idx > 1) {
		pr_info("our NAT handed out %d port%s to other traffic since the sample", idx - 1,
			idx == 2 ? "" : "s");
	}
	add_eps(u, b, (unsigned int)idx);
	free(b);
}

static void up_sig(struct warp_signal *sig, const struct warp_sig_msg *m, void *user)
{
	struct up *u = user;
	char why[96];

	if (memcmp(m->sender, u->a->c->to.pubkey, WARP_PUBKEY_LEN))
		return;
	switch (m->type) {
	case WARP_SIG_PUNCH_ANSWER:
		if (u->state != UP_OFFERED)
			return;
		u->state = UP_ANSWERED;
		warp_timer_arm_ms(u->timer, UP_WINDOW_MS);
		if (punch_needs_sample(&u->us) && npredicted(&m->body) > 1) {
			u->pending = malloc(sizeof(*u->pending));
			if (u->pending) {
				memcpy(u->pending, &m->body, sizeof(*u->pending));
				u->sample = punch_sample_start(u->node, u->family, resampled, u);
				if (u->sample)
					break;
				free(u->pending);
				u->pending = NULL;
			}
		}
		add_eps(u, &m->body, 0);
		break;
	case WARP_SIG_ERROR:
		snprintf(why, sizeof(why), "peer refused: %.80s",
			 m->body.text[0] ? m->body.text : "error");
		up_fail(u, -ECONNREFUSED, why);
		break;
	case WARP_SIG_CANCEL:
		u->offered = false; /* no CANCEL back */
		up_fail(u, -ECONNABORTED, "the peer gave up");
		break;
	}
}

static void offer(struct up *u, uint16_t sample);

static void up_timeout(struct warp_timer *t, void *user)
{
	struct up *u = user;
	char why[112];

	switch (u->state) {
	case UP_OFFER_DUE:
		offer(u, 0);
		return;
	case UP_OFFERED:
		up_fail(u, -ETIMEDOUT, "the peer did not answer the offer");
		return;
	default:
		break;
	}
	if (u->last_err)
		snprintf(why, sizeof(why), "no handshake through %d endpoint%s: %s", u->cands.n,
			 u->cands.n == 1 ? "" : "s", warp_strerror(u->last_err));
	else
		snprintf(why, sizeof(why),
			 "no handshake through %d endpoint%s (%llu probes out, %llu in)",
			 u->cands.n, u->cands.n == 1 ? "" : "s",
			 (unsigned long long)u->sess.probes_sent,
			 (unsigned long long)(u->sess.probes_rx + u->sess.replies_rx));
	up_fail(u, u->last_err ? u->last_err : -ETIMEDOUT, why);
}

static void up_tick(struct warp_timer *t, void *user)
{
	struct up *u = user;

	for (int i = 0; i < u->cands.n; i++)
		punch_send_probe(&u->sess, -1, (struct sockaddr *)&u->cands.ep[i]);
	warp_timer_arm_ms(u->tick, UP_TICK_MS);
}

static void offer(struct up *u, uint16_t sample)
{
	struct warp_connect *c = u->a->c;
	struct warp_signal *sig = node_signal(u->node);
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct warp_sig_msg *m = calloc(1, sizeof(*m));
	struct sockaddr_storage ep;
	int err, n;

	if (!m) {
		up_fail(u, -ENOMEM, "out of memory");
		return;
	}
	err = warp_signal_msg_init(sig, m, WARP_SIG_PUNCH_OFFER, c->to.pubkey);
	if (err)
		goto fail;
	memcpy(m->attempt, u->attempt, sizeof(u->attempt));
	fill_common(&m->body, u->node, WARP_SIG_ROLE_INITIATOR, u->secret, UP_WINDOW_MS,
		    UP_LISTEN_TICK_MS);
	m->body.present |= WARP_SIGF_TEXT;
	snprintf(m->body.text, sizeof(m->body.text), "%s", tv_udp_punch.name);
	err = own_eps(&m->body, &u->us, sample);
	if (err < 0)
		goto fail;
	if (!warp_signal_on_attempt(sig, u->attempt, up_sig, u))
		u->handler = true;
	n = (int)tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS);
	err = warp_signal_send(sig, m, b, (size_t)n);
	if (err < 0)
		goto fail;
	u->offered = true;
	u->state = UP_OFFERED;
	free(m);
	warp_timer_arm_ms(u->timer, UP_ANSWER_MS);
	warp_timer_arm_ms(u->tick, UP_TICK_MS);
	/* What the address already tells: an endpoint-independent peer's reflexive endpoint.
	 * A symmetric peer's ports come with its answer; a guess is only probed when it costs
	 * us no mapping (then it opens a restricted NAT to the peer's address). */
	if (u->peer.cls == PUNCH_EIM || u->peer.cls == PUNCH_OPEN) {
		punch_ep(&ep, &u->peer, u->peer.ext_port ? u->peer.ext_port : u->peer.local_port);
		add_cand(u, (struct sockaddr *)&ep,
			 u->peer.ext_port ? WARP_SIG_EP_REFLEXIVE : WARP_SIG_EP_PREDICTED);
	} else if (u->us.cls == PUNCH_EIM || u->us.cls == PUNCH_OPEN) {
		punch_ep(&ep, &u->peer, u->peer.local_port);
		add_cand(u, (struct sockaddr *)&ep, WARP_SIG_EP_PREDICTED);
	}
	return;
fail:
	free(m);
	up_fail(u, err, warp_strerror(err));
}

static void sampled(int err, uint16_t port, void *user)
{
	struct up *u = user;
	char why[96];

	u->sample = NULL;
	if (err) {
		snprintf(why, sizeof(why), "cannot sample our NAT's port allocation: %s",
			 warp_strerror(err));
		up_fail(u, err, why);
		return;
	}
	pr_debug("our NAT allocated port %u last", port);
	u->sample_port = port;
	offer(u, port);
}

static int up_start(struct tv_attempt *a)
{
	struct warp_connect *c = a->c;
	struct up *u = calloc(1, sizeof(*u));
	int err = -ENOMEM;

	if (!u)
		return -ENOMEM;
	u->a = a;
	u->node = c->node;
	u->family = a->combo.family;
	a->priv = u;
	warp_random(u->attempt, sizeof(u->attempt));
	warp_random(u->secret, sizeof(u->secret));
	punch_nat_from_route(&u->peer, &c->to.routes[a->combo.rroute]);
	err = -EADDRNOTAVAIL;
	if (!punch_own_nat(u->node, u->family, &u->us))
		goto fail;
	err = punch_sess_start(&u->sess, u->node, u->attempt, u->secret, WARP_PROBE_CONNECTOR,
			       up_rx, u);
	if (err)
		goto fail;
	err = -ENOMEM;
	u->timer = warp_timer_new(u->node->loop, up_timeout, u);
	u->tick = warp_timer_new(u->node->loop, up_tick, u);
	if (!u->timer || !u->tick)
		goto fail;
	if (punch_needs_sample(&u->us)) {
		u->sample = punch_sample_start(u->node, u->family, sampled, u);
		if (!u->sample) {
			err = -errno;
			goto fail;
		}
	} else {
		/* Offer from the loop: start() must not end the attempt itself. */
		u->state = UP_OFFER_DUE;
		warp_timer_arm_ms(u->timer, 0);
	}
	return 0;
fail:
	up_free(u, 0);
	return err;
}

static void up_cancel(struct tv_attempt *a)
{
	/* Another attempt won, or the connect gave up (deadline, cancelled by the caller). */
	if (a->priv)
		up_free(a->priv, a->c->res.err ? WARP_SIG_CANCEL_ABANDONED : WARP_SIG_CANCEL_DONE);
}

/* ---------------------------------------------------------------- listener */

struct upl {
	struct tv_passive ps;
	struct warp_node *node;
	int family;
	struct punch_nat us;
	struct punch_sess sess;
	struct punch_sample *sample;
	struct tv_claim *claim;
	struct warp_timer *timer, *tick;
	struct warp_sig_msg *offer; /* kept until answered */
	struct punch_cands cands;   /* the connector's */
	uint32_t duration_ms;
};

static void upl_free(struct tv_passive *ps)
{
	struct upl *l = (struct upl *)ps;

	punch_sample_cancel(l->sample);
	tv_claim_cancel(l->claim);
	punch_sess_stop(&l->sess);
	warp_timer_free(l->timer);
	warp_timer_free(l->tick);
	free(l->offer);
	free(l);
}

static void upl_end(struct upl *l)
{
	tv_passive_del(&l->ps);
	upl_free(&l->ps);
}

static void upl_claimed(struct tv_claim *cl, struct warp_pipe *pipe, void *user)
{
	struct upl *l = user;
	struct warp_node *node = l->node;

	l->claim = NULL;
	pr_debug("punched: %llu probes out, %llu in", (unsigned long long)l->sess.probes_sent,
		 (unsigned long long)(l->sess.probes_rx + l->sess.replies_rx));
	upl_end(l);
	pipe_deliver_inbound(node, pipe);
	warp_pipe_release(pipe);
}

static void upl_timeout(struct warp_timer *t, void *user)
{
	struct upl *l = user;

	pr_info("no pipe from the peer within %u ms (%llu probes out, %llu in)", l->duration_ms,
		(unsigned long long)l->sess.probes_sent,
		(unsigned long long)(l->sess.probes_rx + l->sess.replies_rx));
	upl_end(l);
}

static void upl_tick(struct warp_timer *t, void *user)
{
	struct upl *l = user;

	for (int i = 0; i < l->cands.n; i++)
		punch_send_probe(&l->sess, -1, (struct sockaddr *)&l->cands.ep[i]);
	warp_timer_arm_ms(l->tick, UP_LISTEN_TICK_MS);
}

static void upl_rx(struct punch_sess *s, bool reply, const struct sockaddr *src, int fd,
		   uint64_t pn, void *user)
{
	struct upl *l = user;

	/* A port of the connector we did not know (its NAT is symmetric and ours lets the
	 * address in): keep that mapping open too. */
	if (punch_cands_find(&l->cands, src) < 0 && punch_cands_add(&l->cands, src, 0) >= 0)
		punch_send_probe(&l->sess, -1, src);
}

/* Opens our NAT towards the connector's endpoints (first packets in order), then answers. */
static void upl_go(struct upl *l, uint16_t sample)
{
	struct warp_signal *sig = node_signal(l->node);
	struct warp_sig_msg *ans = calloc(1, sizeof(*ans));
	int err = -ENOMEM;

	if (!ans)
		goto fail;
	for (int i = 0; i < l->cands.n; i++)
		punch_send_probe(&l->sess, -1, (struct sockaddr *)&l->cands.ep[i]);
	err = warp_signal_msg_init(sig, ans, WARP_SIG_PUNCH_ANSWER, l->offer->sender);
	if (err)
		goto fail;
	fill_common(&ans->body, l->node, WARP_SIG_ROLE_RESPONDER, l->offer->body.secret,
		    l->duration_ms, UP_LISTEN_TICK_MS);
	err = own_eps(&ans->body, &l->us, sample);
	if (err < 0)
		goto fail;
	err = warp_signal_reply(sig, l->offer, ans);
	if (err < 0)
		goto fail;
	free(ans);
	free(l->offer);
	l->offer = NULL;
	warp_timer_arm_ms(l->timer, l->duration_ms);
	warp_timer_arm_ms(l->tick, UP_LISTEN_TICK_MS);
	return;
fail:
	free(ans);
	pr_info("cannot answer a udp_punch offer: %s", warp_strerror(err));
	if (sig && l->offer)
		warp_signal_reply_error(sig, l->offer, WARP_SIG_ERR_INTERNAL, "cannot punch");
	upl_end(l);
}

static void upl_sampled(int err, uint16_t port, void *user)
{
	struct upl *l = user;

	l->sample = NULL;
	if (err) {
		struct warp_signal *sig = node_signal(l->node);

		pr_info("cannot sample our NAT's port allocation: %s", warp_strerror(err));
		if (sig)
			warp_signal_reply_error(sig, l->offer, WARP_SIG_ERR_INTERNAL,
						"cannot predict our ports");
		upl_end(l);
		return;
	}
	upl_go(l, port);
}

static void up_offer(struct warp_node *node, struct warp_signal *sig, const struct warp_sig_msg *m)
{
	struct upl *l;
	int family = 0;

	if (m->body.transport != WARP_SIG_UDP || !m->body.neps) {
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_BAD_REQUEST, "udp endpoints needed");
		return;
	}
	if (tv_passive_find(node, m->attempt))
		return; /* the same offer through another broker */
	for (unsigned int i = 0; i < m->body.neps && !family; i++) {
		int f = m->body.eps[i].family == 6 ? AF_INET6 : AF_INET;

		if (node_udp_sock(node, f))
			family = f;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return;
	l->ps.free = upl_free;
	memcpy(l->ps.attempt, m->attempt, sizeof(l->ps.attempt));
	memcpy(l->ps.peer, m->sender, WARP_PUBKEY_LEN);
	l->node = node;
	l->family = family;
	l->duration_ms = m->body.present & WARP_SIGF_DURATION ? m->body.duration_ms : UP_WINDOW_MS;
	if (l->duration_ms > UP_LISTEN_MAX_MS)
		l->duration_ms = UP_LISTEN_MAX_MS;
	tv_passive_add(node, &l->ps);
	l->offer = malloc(sizeof(*l->offer));
	l->timer = warp_timer_new(node->loop, upl_timeout, l);
	l->tick = warp_timer_new(node->loop, upl_tick, l);
	l->claim = tv_claim_inbound(node, m->sender, upl_claimed, l);
	if (!family || !l->offer || !l->timer || !l->tick || !l->claim ||
	    !punch_own_nat(node, family, &l->us) ||
	    punch_sess_start(&l->sess, node, m->attempt, m->body.secret, WARP_PROBE_LISTENER,
			     upl_rx, l)) {
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_INTERNAL,
					family ? "cannot punch" : "no socket of that family");
		upl_end(l);
		return;
	}
	memcpy(l->offer, m, sizeof(*m));
	for (unsigned int i = 0; i < m->body.neps; i++) {
		struct sockaddr_storage ep;

		if (m->body.eps[i].family != (family == AF_INET6 ? 6 : 4))
			continue;
		tv_sig_ep_addr(&m->body.eps[i], &ep);
		punch_cands_add(&l->cands, (struct sockaddr *)&ep, m->body.eps[i].kind);
	}
	if (l->us.cls == PUNCH_BLOCKED) {
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_REFUSED, "our network blocks UDP");
		upl_end(l);
		return;
	}
	if (punch_needs_sample(&l->us)) {
		/* Our next mapping is predicted from the NAT's latest allocation. */
		l->sample = punch_sample_start(node, family, upl_sampled, l);
		if (!l->sample) {
			warp_signal_reply_error(sig, m, WARP_SIG_ERR_INTERNAL, "cannot sample");
			upl_end(l);
		}
		return;
	}
	upl_go(l, 0);
}

const struct tv_strategy tv_udp_punch = {
	.id = WARP_STRAT_UDP_PUNCH,
	.name = "udp_punch",
	.plan = up_plan,
	.start = up_start,
	.cancel = up_cancel,
	.offer = up_offer,
};
