// SPDX-License-Identifier: MIT
/*
 * The passive side of traversal, per node: signalling handlers that start a strategy's
 * answer to a peer's offer, inbound claims (an attempt waiting for the peer to connect to
 * us), and the sessions those handlers create, freed when the node closes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "traverse"
#include "core/log.h"
#include "net/endpoint.h"
#include "node/netstate.h"
#include "pipe/pipe_internal.h"
#include "relay/turn_path.h"
#include "signal/signal.h"
#include "traverse/traverse.h"

struct tv_node {
	struct warp_node *node;
	struct list_head claims;
	struct list_head passive;
	struct list_head connects;      /* running warp_connect, cancelled on node close */
};

struct tv_claim {
	struct list_head link;
	struct tv_node *tn;
	uint8_t key[WARP_PUBKEY_LEN];
	tv_claim_cb cb;
	void *user;
};

static const struct tv_strategy *const passive_strategies[] = {
	&tv_reverse, &tv_tcp_punch, &tv_udp_punch, &tv_random_probe, &tv_turn,
};

static struct tv_node *tn_of(struct warp_node *node)
{
	return node->traverse;
}

size_t tv_peer_brokers(const struct warp_node_addr *to, struct warp_broker_addr *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < to->nhints && n < max; i++)
		if (to->hints[i].kind == WARP_HINT_MQTT &&
		    warp_broker_addr_parse(to->hints[i].text, &out[n]) == 0)
			n++;
	return n;
}

void tv_sig_ep(struct warp_sig_ep *out, const struct sockaddr *sa, unsigned int kind)
{
	memset(out, 0, sizeof(*out));
	out->family = sa->sa_family == AF_INET6 ? 6 : 4;
	out->kind = (uint8_t)kind;
	out->port = warp_ep_port(sa);
	warp_ep_addr16(sa, out->addr);
}

void tv_sig_ep_addr(const struct warp_sig_ep *ep, struct sockaddr_storage *out)
{
	if (ep->family == 4)
		warp_ep_from_raw(out, AF_INET, ep->addr + 12, ep->port, 0);
	else
		warp_ep_from_raw(out, AF_INET6, ep->addr, ep->port, 0);
}

/* ---- claims ---- */

static bool on_inbound(struct warp_node *node, struct warp_pipe *pipe, void *user)
{
	struct tv_node *tn = user;
	struct list_head *pos;

	list_for_each(pos, &tn->claims) {
		struct tv_claim *cl = list_entry(pos, struct tv_claim, link);

		if (!memcmp(cl->key, pipe_peer_key(pipe), WARP_PUBKEY_LEN)) {
			list_del(&cl->link);
			pipe_expect_inbound(node, -1);
			cl->cb(cl, pipe, cl->user);
			free(cl);
			return true;
		}
	}
	return false;
}

struct tv_claim *tv_claim_inbound(struct warp_node *node, const uint8_t key[WARP_PUBKEY_LEN],
				  tv_claim_cb cb, void *user)
{
	struct tv_node *tn = tn_of(node);
	struct tv_claim *cl;

	if (!tn) {
		errno = ENOTSUP;
		return NULL;
	}
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return NULL;
	cl->tn = tn;
	memcpy(cl->key, key, WARP_PUBKEY_LEN);
	cl->cb = cb;
	cl->user = user;
	list_add_tail(&cl->link, &tn->claims);
	pipe_expect_inbound(node, 1);
	return cl;
}

void tv_claim_cancel(struct tv_claim *cl)
{
	if (!cl)
		return;
	list_del(&cl->link);
	pipe_expect_inbound(cl->tn->node, -1);
	free(cl);
}

void tv_track_connect(struct warp_node *node, struct warp_connect *c)
{
	struct tv_node *tn = tn_of(node);

	if (tn)
		list_add_tail(&c->node_link, &tn->connects);
	else
		list_init(&c->node_link);
}

/* ---- passive sessions ---- */

void tv_passive_add(struct warp_node *node, struct tv_passive *ps)
{
	list_add_tail(&ps->link, &tn_of(node)->passive);
}

void tv_passive_del(struct tv_passive *ps)
{
	list_del(&ps->link);
}

struct tv_passive *tv_passive_find(struct warp_node *node, const uint8_t attempt[16])
{
	struct tv_node *tn = tn_of(node);
	struct list_head *pos;

	if (!tn)
		return NULL;
	list_for_each(pos, &tn->passive) {
		struct tv_passive *ps = list_entry(pos, struct tv_passive, link);

		if (!memcmp(ps->attempt, attempt, 16))
			return ps;
	}
	return NULL;
}

/* ---- offers ---- */

static void on_offer(struct warp_signal *sig, const struct warp_sig_msg *m, void *user)
{
	struct warp_node *node = user;
	const char *want = m->type == WARP_SIG_CONNECT_BACK ? "reverse_connect"
			   : m->type == WARP_SIG_RELAY_OFFER ? "turn"
							     : m->body.text;

	if (!node->accept_cb) {
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_REFUSED, "not listening");
		return;
	}
	if (!node_peer_allowed(node, m->sender)) {
		warp_signal_reply_error(sig, m, WARP_SIG_ERR_REFUSED, "not allowed");
		return;
	}
	for (size_t i = 0; i < sizeof(passive_strategies) / sizeof(passive_strategies[0]); i++) {
		const struct tv_strategy *st = passive_strategies[i];

		if (!strcmp(st->name, want) && st->offer &&
		    (!node->conf.strategies || (node->conf.strategies & (1u << st->id)))) {
			pr_debug("%s offer from a peer", st->name);
			st->offer(node, sig, m);
			return;
		}
	}
	warp_signal_reply_error(sig, m, WARP_SIG_ERR_UNSUPPORTED, "strategy not available");
}

static void on_cancel(struct warp_signal *sig, const struct warp_sig_msg *m, void *user)
{
	struct tv_passive *ps = tv_passive_find(user, m->attempt);

	if (ps && !memcmp(ps->peer, m->sender, WARP_PUBKEY_LEN)) {
		tv_passive_del(ps);
		ps->free(ps);
	}
}

int traverse_node_start(struct warp_node *node)
{
	struct tv_node *tn = calloc(1, sizeof(*tn));
	struct warp_signal *sig = node_signal(node);

	if (!tn)
		return -ENOMEM;
	tn->node = node;
	list_init(&tn->claims);
	list_init(&tn->passive);
	list_init(&tn->connects);
	node->traverse = tn;
	pipe_set_inbound_hook(node, on_inbound, tn);
	pipe_set_fd_acceptor(node, turn_path_inbound);
	if (sig) {
		warp_signal_on(sig, WARP_SIG_CONNECT_BACK, on_offer, node);
		warp_signal_on(sig, WARP_SIG_PUNCH_OFFER, on_offer, node);
		warp_signal_on(sig, WARP_SIG_RELAY_OFFER, on_offer, node);
		warp_signal_on(sig, WARP_SIG_CANCEL, on_cancel, node);
	}
	return 0;
}

void traverse_node_stop(struct warp_node *node)
{
	struct tv_node *tn = tn_of(node);
	struct list_head *pos, *tmp;

	if (!tn)
		return;
	/* Connects still running (their callers gave up on them): free their sockets. */
	list_for_each_safe(pos, tmp, &tn->connects)
		warp_connect_cancel(list_entry(pos, struct warp_connect, node_link));
	list_for_each_safe(pos, tmp, &tn->passive) {
		struct tv_passive *ps = list_entry(pos, struct tv_passive, link);

		list_del(pos);
		ps->free(ps);
	}
	list_for_each_safe(pos, tmp, &tn->claims) {
		list_del(pos);
		free(list_entry(pos, struct tv_claim, link));
	}
	if (node->pipe_ctx)
		pipe_set_inbound_hook(node, NULL, NULL);
	free(tn);
	node->traverse = NULL;
}
