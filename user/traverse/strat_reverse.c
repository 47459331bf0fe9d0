// SPDX-License-Identifier: MIT
/*
 * reverse_connect: when we are reachable and the peer is not (we have a public address, a
 * full-cone NAT or a port mapping; the peer sits behind a filtering NAT), ask the peer over
 * signalling to dial us.  Its pipe arrives as an inbound one, claimed by this attempt.
 * The request carries our current node address (the peer dials it with direct_connect).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "reverse"
#include "core/log.h"
#include "core/util.h"
#include "node/netstate.h"
#include "pipe/pipe_internal.h"
#include "signal/signal.h"
#include "traverse/traverse.h"

#define REVERSE_TIMEOUT_MS 6000

struct rev {
	struct tv_attempt *a;
	struct tv_claim *claim;
	struct warp_timer *timer;
	uint8_t attempt[WARP_SIG_ID_LEN];
	bool handler;
};

/* Reachable from anywhere on this route: no NAT, a full-cone NAT, or a port mapping. */
static bool route_reachable(const struct warp_addr_route *r)
{
	if (r->flags & WARP_ROUTE_F_PORTMAP)
		return r->ext_udp_port || r->ext_tcp_port;
	if (!r->has_ext)
		return false;
	return r->nat == WARP_ADDR_NAT_OPEN || r->nat == WARP_ADDR_NAT_FULL_CONE;
}

static void reverse_plan(struct warp_connect *c)
{
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct warp_node_addr me;
	struct tv_combo combo = { 0 };
	bool reachable = false;

	combo.route = "internet";
	combo.cls = WARP_PATH_DIRECT;
	combo.rroute = -1;
	if (!node_signal(c->node)) {
		tv_skip(c, &tv_reverse, &combo, "no signalling brokers configured");
		return;
	}
	if (!tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS)) {
		tv_skip(c, &tv_reverse, &combo, "the peer advertises no signalling broker");
		return;
	}
	warp_node_address(c->node, &me);
	for (size_t i = 0; i < me.nroutes; i++)
		reachable |= route_reachable(&me.routes[i]);
	if (!reachable) {
		tv_skip(c, &tv_reverse, &combo,
			"we are not reachable either (our NAT filters inbound, no port mapping)");
		return;
	}
	tv_add(c, &tv_reverse, &combo, 30);
}

static void rev_free(struct rev *r)
{
	struct warp_signal *sig = node_signal(r->a->c->node);

	tv_claim_cancel(r->claim);
	if (r->handler && sig)
		warp_signal_off_attempt(sig, r->attempt);
	warp_timer_free(r->timer);
	r->a->priv = NULL;
	free(r);
}

static void rev_claimed(struct tv_claim *cl, struct warp_pipe *pipe, void *user)
{
	struct rev *r = user;
	struct tv_attempt *a = r->a;

	r->claim = NULL;
	rev_free(r);
	tv_won(a, pipe);
}

static void rev_timeout(struct warp_timer *t, void *user)
{
	struct rev *r = user;
	struct tv_attempt *a = r->a;

	rev_free(r);
	tv_failed(a, -ETIMEDOUT, "the peer did not connect back");
}

static void rev_reply(struct warp_signal *sig, const struct warp_sig_msg *m, void *user)
{
	struct rev *r = user;
	struct tv_attempt *a = r->a;

	if (m->type != WARP_SIG_ERROR || memcmp(m->sender, a->c->to.pubkey, WARP_PUBKEY_LEN))
		return;
	rev_free(r);
	tv_failed(a, -ECONNREFUSED, "peer refused: %s", m->body.text[0] ? m->body.text : "error");
}

static int reverse_start(struct tv_attempt *a)
{
	struct warp_connect *c = a->c;
	struct warp_signal *sig = node_signal(c->node);
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct warp_node_addr me;
	struct warp_sig_msg *m;
	struct rev *r;
	int n, err;

	r = calloc(1, sizeof(*r));
	m = calloc(1, sizeof(*m));
	if (!r || !m) {
		free(r);
		free(m);
		return -ENOMEM;
	}
	r->a = a;
	a->priv = r;
	warp_random(r->attempt, sizeof(r->attempt));
	r->claim = tv_claim_inbound(c->node, c->to.pubkey, rev_claimed, r);
	r->timer = warp_timer_new(c->node->loop, rev_timeout, r);
	err = -ENOMEM;
	if (!r->claim || !r->timer)
		goto fail;
	err = warp_signal_msg_init(sig, m, WARP_SIG_CONNECT_BACK, c->to.pubkey);
	if (err)
		goto fail;
	memcpy(m->attempt, r->attempt, sizeof(r->attempt));
	m->body.present |= WARP_SIGF_TRANSPORT | WARP_SIGF_SECRET | WARP_SIGF_BLOB;
	m->body.transport = WARP_SIG_UDP;
	warp_random(m->body.secret, sizeof(m->body.secret));
	warp_node_address(c->node, &me);
	for (size_t i = 0; i < me.nroutes && m->body.neps < WARP_SIG_MAX_EPS; i++) {
		struct sockaddr_storage ep;

		if (route_reachable(&me.routes[i]) && tv_route_endpoint(&me.routes[i], false, true, &ep)) {
			struct warp_sig_ep e;

			tv_sig_ep(&e, (struct sockaddr *)&ep, WARP_SIG_EP_REFLEXIVE);
			warp_sig_add_ep(&m->body, &e);
		}
	}
	n = warp_addr_encode(&me, m->body.blob, sizeof(m->body.blob));
	if (n < 0) {
		err = n;
		goto fail;
	}
	m->body.blob_len = (uint16_t)n;
	if (!warp_signal_on_attempt(sig, r->attempt, rev_reply, r))
		r->handler = true;
	n = (int)tv_peer_brokers(&c->to, b, WARP_ADDR_MAX_HINTS);
	err = warp_signal_send(sig, m, b, (size_t)n);
	if (err < 0)
		goto fail;
	warp_timer_arm_ms(r->timer, REVERSE_TIMEOUT_MS);
	free(m);
	return 0;
fail:
	free(m);
	rev_free(r);
	return err;
}

static void reverse_cancel(struct tv_attempt *a)
{
	if (a->priv)
		rev_free(a->priv);
}

/* ---- passive side: the peer asked us to connect back ---- */

struct rev_passive {
	struct tv_passive ps;
	struct warp_node *node;
	struct warp_connect *conn;
};

static void rp_free(struct tv_passive *ps)
{
	struct rev_passive *rp = (struct rev_passive *)ps;

	if (rp->conn)
		warp_connect_cancel(rp->conn);
	free(rp);
}

static void rp_done(struct warp_connect *conn, struct warp_pipe *pipe,
		    const struct warp_connect_result *res, void *user)
{
	struct rev_passive *rp = user;

	rp->conn = NULL;
	if (pipe) {
		pipe_set_strategy(pipe, "reverse_connect", res->path);
		pipe_deliver_inbound(rp->node, pipe);
		warp_pipe_release(pipe);
	} else {
		pr_info("could not connect back to the peer: %s", warp_strerror(res->err));
	}
	tv_passive_del(&rp->ps);
	rp_free(&rp->ps);
}

static void reverse_offer(struct warp_node *node, struct warp_signal *sig,
			  const struct warp_sig_msg *m)
{
	struct warp_connect_opts o = { .strategies = 1u << WARP_STRAT_DIRECT, .timeout_ms = 5000 };
	struct warp_node_addr to;
	struct rev_passive *rp;

	if (!(m->body.present & WARP_SIGF_BLOB) ||
	    warp_addr_decode(m->body.blob, m->body.blob_len, &to) ||
	    memcmp(to.pubkey, m->sender, WARP_PUBKEY_LEN)) {
		/* The address must be the sender's own: never dial on behalf of someone else. */
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_BAD_REQUEST, "bad address");
		return;
	}
	if (tv_passive_find(node, m->attempt))
		return; /* duplicate */
	rp = calloc(1, sizeof(*rp));
	if (!rp)
		return;
	rp->ps.free = rp_free;
	memcpy(rp->ps.attempt, m->attempt, 16);
	memcpy(rp->ps.peer, m->sender, WARP_PUBKEY_LEN);
	rp->node = node;
	tv_passive_add(node, &rp->ps);
	rp->conn = warp_connect_start(node, &to, &o, rp_done, rp);
	if (!rp->conn) {
		tv_passive_del(&rp->ps);
		free(rp);
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_INTERNAL, "cannot dial");
	}
}

const struct tv_strategy tv_reverse = {
	.id = WARP_STRAT_REVERSE,
	.name = "reverse_connect",
	.plan = reverse_plan,
	.start = reverse_start,
	.cancel = reverse_cancel,
	.offer = reverse_offer,
};
