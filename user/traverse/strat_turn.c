// SPDX-License-Identifier: MIT
/*
 * turn: the relay of last resort.  We allocate on our TURN server (UDP, falling back to TCP
 * when UDP gets no answer or is known to be blocked) and offer the relayed address over
 * signalling.  The peer answers with its own relayed address when it has a TURN server too,
 * or with its reflexive endpoint after sending one packet to our relayed address (that opens
 * its NAT towards the relay).  We permit the address the peer's packets will come from and
 * dial through our relay.  The pipe is a relay pipe; the other strategies (and the upgrade to
 * a direct path) keep working beside it.  See docs/relay.md.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "turn"
#include "core/log.h"
#include "core/util.h"
#include "net/endpoint.h"
#include "node/netstate.h"
#include "pipe/pipe_internal.h"
#include "relay/turn_path.h"
#include "signal/signal.h"
#include "traverse/traverse.h"

#define ANSWER_TIMEOUT_MS  5000
#define HEAD_START_MS      800   /* direct and punch attempts go first when they can */
#define PASSIVE_HOLD_MS    30000 /* the answering side keeps its allocation this long */

static bool udp_blocked(struct warp_node *node)
{
	const struct warp_nat_report *r = node_nat_report(node, AF_INET);

	return r && !r->udp;
}

static int server_of(struct warp_node *node, struct turn_server *srv)
{
	int err;

	if (!node->conf.nturn || (node->conf.flags & WARP_CONF_NO_TURN))
		return -ENOENT;
	err = turn_server_from_conf(&node->conf.turn[0], AF_INET, srv);
	if (err)
		return err;
	srv->tcp = node->conf.turn[0].tcp || udp_blocked(node);
	srv->tcp_fallback = !srv->tcp;
	return 0;
}

/* ------------------------------------------------------------------ the connecting side */

struct tn {
	struct tv_attempt *a;
	struct turn_lease *lease;
	struct pipe_dial *dial;
	struct warp_timer *timer;
	uint8_t attempt[WARP_SIG_ID_LEN];
	uint8_t req_id[WARP_SIG_ID_LEN];
	bool requested;
	struct sockaddr_storage target;
	struct sockaddr_storage relayed;
	bool peer_relays;
	struct sockaddr_storage cand[4];
	int ncand;
};

static void add_cand(struct sockaddr_storage *cand, int *n, const struct sockaddr_storage *ep)
{
	for (int i = 0; i < *n; i++)
		if (warp_ep_equal((struct sockaddr *)&cand[i], (const struct sockaddr *)ep))
			return;
	if (*n < 4 && warp_ep_port((const struct sockaddr *)ep))
		cand[(*n)++] = *ep;
}

/* Our own direct endpoint, for the peer's upgrade attempts. */
static void add_own_ep(struct warp_node *node, struct warp_sig_body *b)
{
	struct sockaddr_storage refl;
	struct warp_sig_ep e;

	if (node_reflexive(node, AF_INET, &refl)) {
		tv_sig_ep(&e, (struct sockaddr *)&refl, WARP_SIG_EP_REFLEXIVE);
		warp_sig_add_ep(b, &e);
	}
}

static void turn_plan(struct warp_connect *c)
{
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct turn_server srv;
	struct tv_combo combo = { 0 };
	struct list_head *pos;
	bool others = false;

	combo.family = AF_INET;
	combo.route = "relay";
	combo.cls = WARP_PATH_RELAY;
	combo.rroute = -1;
	if (server_of(c->node, &srv)) {
		tv_skip(c, &tv_turn, &combo, "no TURN server configured");
		return;
	}
	combo.remote = srv.addr;
	combo.tcp = srv.tcp;
	if (!node_signal(c->node) || !tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS)) {
		tv_skip(c, &tv_turn, &combo, "%s",
			node_signal(c->node) ? "the peer advertises no signalling broker"
					     : "no signalling brokers configured");
		return;
	}
	list_for_each(pos, &c->attempts)
		others |= !list_entry(pos, struct tv_attempt, link)->combo.long_shot;
	/* Relayed last: only when nothing else is likely to work does it start at once. */
	tv_add(c, &tv_turn, &combo, others ? HEAD_START_MS : 0);
}

static void tn_free(struct tn *t)
{
	struct warp_signal *sig = node_signal(t->a->c->node);

	if (t->dial)
		pipe_dial_cancel(t->dial);
	if (t->requested && sig)
		warp_signal_request_cancel(sig, t->req_id);
	turn_lease_release(&t->lease);
	warp_timer_free(t->timer);
	t->a->priv = NULL;
	free(t);
}

static void tn_fail(struct tn *t, int err, const char *why)
{
	struct tv_attempt *a = t->a;

	tn_free(t);
	tv_failed(a, err, "%s%s%s", why, err ? ": " : "", err ? warp_strerror(err) : "");
}

static void tn_dialed(struct warp_pipe *pipe, int err, void *user)
{
	struct tn *t = user;
	struct tv_attempt *a = t->a;

	t->dial = NULL;
	if (!pipe) {
		tn_fail(t, err, "handshake through the relay failed");
		return;
	}
	/* Keep looking for a direct path while relaying: the peer's reflexive endpoints. */
	if (t->ncand)
		pipe_add_candidates(pipe, t->cand, t->ncand);
	tn_free(t); /* the pipe's relay path holds its own lease */
	tv_won(a, pipe);
}

static void tn_permitted(struct turn_lease *l, const struct sockaddr *peer, int err, void *user)
{
	struct tn *t = user;
	struct pipe_dial_opts o = { 0 };
	struct pipe_path *path;

	if (err) {
		tn_fail(t, err, "the relay refused a permission for the peer");
		return;
	}
	path = turn_path_new(t->lease, (struct sockaddr *)&t->target);
	if (!path) {
		tn_fail(t, -errno, "no relay path");
		return;
	}
	path->cls = WARP_PATH_RELAY;
	o.expect_key = t->a->c->to.pubkey;
	o.cls = WARP_PATH_RELAY;
	o.strategy = "turn";
	t->dial = pipe_dial(t->a->c->node, path, &o, tn_dialed, t);
	if (!t->dial) {
		pipe_path_free(path);
		tn_fail(t, -errno, "cannot dial through the relay");
	}
}

static void tn_answer(struct warp_signal *sig, int err, const struct warp_sig_msg *m, void *user)
{
	struct tn *t = user;
	char ep[WARP_EP_STRLEN];

	t->requested = false;
	if (err) {
		tn_fail(t, err, "the peer did not answer the relay offer");
		return;
	}
	if (m->type == WARP_SIG_ERROR) {
		struct tv_attempt *a = t->a;

		tn_free(t);
		tv_failed(a, -ECONNREFUSED, "peer: %s", m->body.text[0] ? m->body.text : "error");
		return;
	}
	for (int i = 0; i < m->body.neps; i++) {
		struct sockaddr_storage refl;

		if (m->body.eps[i].kind != WARP_SIG_EP_REFLEXIVE)
			continue;
		tv_sig_ep_addr(&m->body.eps[i], &refl);
		add_cand(t->cand, &t->ncand, &refl);
	}
	if (m->body.present & WARP_SIGF_RELAYED) {
		tv_sig_ep_addr(&m->body.relayed, &t->target);
		t->peer_relays = true;
	} else if (m->body.neps) {
		tv_sig_ep_addr(&m->body.eps[0], &t->target);
	} else {
		tn_fail(t, -WARP_EMISSING, "the relay answer names no endpoint");
		return;
	}
	pr_debug("relaying to the peer's %s %s", t->peer_relays ? "relayed address" : "endpoint",
		 warp_ep_str((struct sockaddr *)&t->target, ep, sizeof(ep)));
	err = turn_lease_permit(t->lease, (struct sockaddr *)&t->target, true, tn_permitted, t);
	if (err)
		tn_fail(t, err, "cannot permit the peer");
}

static void tn_allocated(struct turn_lease *l, int err, const struct warp_turn_info *info,
			 void *user)
{
	struct tn *t = user;
	struct warp_connect *c = t->a->c;
	struct warp_signal *sig = node_signal(c->node);
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct warp_sig_msg *m;
	size_t n;

	if (err) {
		/* A lease lost after the dial started is the pipe's business, not ours. */
		if (!t->dial)
			tn_fail(t, err, "TURN allocation failed");
		return;
	}
	if (t->requested || t->dial || t->target.ss_family)
		return; /* a later notification of the same allocation */
	t->relayed = info->relayed;
	m = calloc(1, sizeof(*m));
	if (!m) {
		tn_fail(t, -ENOMEM, "out of memory");
		return;
	}
	err = warp_signal_msg_init(sig, m, WARP_SIG_RELAY_OFFER, c->to.pubkey);
	if (!err) {
		memcpy(m->attempt, t->attempt, sizeof(t->attempt));
		m->body.present |= WARP_SIGF_TRANSPORT | WARP_SIGF_RELAY_SERVER | WARP_SIGF_RELAYED;
		m->body.transport = WARP_SIG_UDP;
		tv_sig_ep(&m->body.relay_server, (struct sockaddr *)&info->server,
			  WARP_SIG_EP_RELAYED);
		tv_sig_ep(&m->body.relayed, (struct sockaddr *)&info->relayed, WARP_SIG_EP_RELAYED);
		add_own_ep(c->node, &m->body);
		n = tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS);
		err = warp_signal_request(sig, m, b, n, ANSWER_TIMEOUT_MS, tn_answer, t);
		if (err >= 0) {
			memcpy(t->req_id, m->id, sizeof(t->req_id));
			t->requested = true;
			err = 0;
		}
	}
	free(m);
	if (err)
		tn_fail(t, err, "cannot send the relay offer");
}

static int turn_start(struct tv_attempt *a)
{
	struct turn_server srv;
	struct tn *t;
	int err = server_of(a->c->node, &srv);

	if (err)
		return err;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->a = a;
	a->priv = t;
	warp_random(t->attempt, sizeof(t->attempt));
	for (size_t i = 0; i < a->c->to.nroutes; i++) {
		struct sockaddr_storage ep;

		if (tv_route_endpoint(&a->c->to.routes[i], false, true, &ep))
			add_cand(t->cand, &t->ncand, &ep);
	}
	t->lease = turn_lease_get(a->c->node, &srv, tn_allocated, t);
	if (!t->lease) {
		err = -errno;
		tn_free(t);
		return err;
	}
	return 0;
}

static void turn_cancel(struct tv_attempt *a)
{
	if (a->priv)
		tn_free(a->priv);
}

/* ------------------------------------------------------------------ the answering side */

struct tn_passive {
	struct tv_passive ps;
	struct warp_node *node;
	struct warp_sig_msg *offer;
	struct turn_lease *lease;
	struct warp_timer *timer;
	struct sockaddr_storage peer_rel;
	bool answered;
};

static void tp_free(struct tv_passive *ps)
{
	struct tn_passive *p = (struct tn_passive *)ps;

	turn_lease_release(&p->lease);
	warp_timer_free(p->timer);
	free(p->offer);
	free(p);
}

static void tp_end(struct tn_passive *p)
{
	tv_passive_del(&p->ps);
	tp_free(&p->ps);
}

static void tp_expire(struct warp_timer *t, void *user)
{
	tp_end(user);
}

static void tp_reply(struct tn_passive *p, const struct sockaddr *relayed,
		     const struct sockaddr *reflexive)
{
	struct warp_signal *sig = node_signal(p->node);
	struct warp_sig_msg *ans = calloc(1, sizeof(*ans));
	struct warp_sig_ep ep;
	int err = -ENOMEM;

	if (ans)
		err = warp_signal_msg_init(sig, ans, WARP_SIG_RELAY_ANSWER, p->offer->sender);
	if (!err) {
		if (relayed) {
			ans->body.present |= WARP_SIGF_RELAYED;
			tv_sig_ep(&ans->body.relayed, relayed, WARP_SIG_EP_RELAYED);
			add_own_ep(p->node, &ans->body);
		} else {
			tv_sig_ep(&ep, reflexive, WARP_SIG_EP_REFLEXIVE);
			warp_sig_add_ep(&ans->body, &ep);
		}
		err = warp_signal_reply(sig, p->offer, ans);
	}
	free(ans);
	p->answered = err >= 0;
	if (err < 0) {
		warp_signal_reply_error(sig, p->offer, WARP_SIG_ERR_INTERNAL, "cannot answer");
		tp_end(p);
	}
}

static void tp_permitted(struct turn_lease *l, const struct sockaddr *peer, int err, void *user)
{
	struct tn_passive *p = user;
	const struct warp_turn_info *info = turn_lease_info(l);

	if (err || !info) {
		warp_signal_reply_error(node_signal(p->node), p->offer, WARP_SIG_ERR_INTERNAL,
					"our relay refused the permission");
		tp_end(p);
		return;
	}
	tp_reply(p, (struct sockaddr *)&info->relayed, NULL);
}

static void tp_allocated(struct turn_lease *l, int err, const struct warp_turn_info *info,
			 void *user)
{
	struct tn_passive *p = user;

	if (p->answered || !p->offer)
		return;
	if (err) {
		warp_signal_reply_error(node_signal(p->node), p->offer, WARP_SIG_ERR_INTERNAL,
					"our TURN allocation failed");
		tp_end(p);
		return;
	}
	if (turn_lease_permit(l, (struct sockaddr *)&p->peer_rel, true, tp_permitted, p)) {
		warp_signal_reply_error(node_signal(p->node), p->offer, WARP_SIG_ERR_INTERNAL,
					"cannot permit");
		tp_end(p);
	}
}

static void turn_offer(struct warp_node *node, struct warp_signal *sig,
		       const struct warp_sig_msg *m)
{
	struct tn_passive *p;
	struct turn_server srv;
	struct sockaddr_storage refl;
	const struct warp_nat_report *rep = node_nat_report(node, AF_INET);

	if (tv_passive_find(node, m->attempt))
		return; /* the same offer through the second broker */
	p = calloc(1, sizeof(*p));
	if (!p)
		return;
	p->offer = malloc(sizeof(*m));
	p->timer = warp_timer_new(node->loop, tp_expire, p);
	if (!p->offer || !p->timer) {
		tp_free(&p->ps);
		return;
	}
	memcpy(p->offer, m, sizeof(*m));
	p->node = node;
	p->ps.free = tp_free;
	memcpy(p->ps.attempt, m->attempt, 16);
	memcpy(p->ps.peer, m->sender, WARP_PUBKEY_LEN);
	tv_sig_ep_addr(&m->body.relayed, &p->peer_rel);
	tv_passive_add(node, &p->ps);
	{
		/* The relayed pipe to come will try the connector's direct endpoints. */
		struct sockaddr_storage cand[4];
		int n = 0;

		for (int i = 0; i < m->body.neps && n < 4; i++) {
			if (m->body.eps[i].kind != WARP_SIG_EP_REFLEXIVE)
				continue;
			tv_sig_ep_addr(&m->body.eps[i], &cand[n]);
			n++;
		}
		if (n)
			pipe_hint_candidates(node, m->sender, cand, n);
	}
	warp_timer_arm_ms(p->timer, PASSIVE_HOLD_MS);
	if (server_of(node, &srv) == 0) {
		/* Relay to relay: each side only ever talks to its own server. */
		p->lease = turn_lease_get(node, &srv, tp_allocated, p);
		if (!p->lease) {
			warp_signal_reply_error(sig, m, WARP_SIG_ERR_INTERNAL, "cannot allocate");
			tp_end(p);
		}
		return;
	}
	/* No relay of our own: the peer's relay must reach our node socket. */
	if (!node_reflexive(node, AF_INET, &refl) ||
	    (rep && rep->mapping != WARP_NAT_BEH_ENDPOINT_INDEPENDENT)) {
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_REFUSED,
					"no TURN server here and our NAT maps per destination");
		tp_end(p);
		return;
	}
	{
		/* One datagram towards the relay opens our NAT's filter for it. */
		uint8_t knock[WARP_HDR_LEN] = { WARP_HDR_FLAGS(WARP_PKT_PROBE) };

		node_send(node, knock, sizeof(knock), (struct sockaddr *)&p->peer_rel, NULL, 0);
	}
	tp_reply(p, NULL, (struct sockaddr *)&refl);
}

const struct tv_strategy tv_turn = {
	.id = WARP_STRAT_TURN,
	.name = "turn",
	.plan = turn_plan,
	.start = turn_start,
	.cancel = turn_cancel,
	.offer = turn_offer,
};
