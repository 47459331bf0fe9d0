// SPDX-License-Identifier: MIT
/*
 * Names for nodes: publish our address under a name on every configured nickname server and
 * on the local link (multicast answers signed by our key), and resolve a peer's name by
 * racing both.  A resolved record is only accepted when the address it carries names the same
 * key that signed it: the handshake then insists on that key, so no server can redirect us.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>
#include <warpgate/name.h>

#define LOG_COMPONENT "names"
#include "core/log.h"
#include "node/netstate.h"
#include "node/node_internal.h"
#include "node/resolve.h"

#define REPUBLISH_CHECK_MS 15000     /* address changes reach the record this fast */
#define REFRESH_MS (24ull * 3600 * 1000) /* names expire after 7 days without refresh */

struct node_names {
	struct warp_node *node;
	struct warp_name_client *client;
	struct warp_name_responder *resp;
	char name[WARP_NAME_FQ_MAX + 1];
	uint8_t blob[WARP_ADDR_MAX_BIN];
	size_t blob_len;
	uint64_t put_ms;
	struct warp_timer *timer;
	bool put_pending;
};

static bool names_wanted(const struct warp_node *node, bool *servers, bool *local)
{
	*servers = !(node->conf.flags & WARP_CONF_NO_NAMES) && node->conf.nnames > 0;
	*local = !(node->conf.flags & WARP_CONF_NO_MCAST) && !(node->conf.flags & WARP_CONF_TEST_MODE);
	return *servers || *local;
}

static void opts_of(const struct warp_node *node, struct warp_name_client_opts *o, bool local)
{
	memset(o, 0, sizeof(*o));
	o->tld = node->conf.tld[0] ? node->conf.tld : NULL;
	o->local = local ? 1 : -1;
}

static struct node_names *names_get(struct warp_node *node)
{
	struct node_names *nn = node->names;
	const struct warp_nat_report *rep;
	struct warp_name_client_opts o;
	bool servers, local;

	if (nn)
		goto out;
	if (!names_wanted(node, &servers, &local))
		return NULL;
	nn = calloc(1, sizeof(*nn));
	if (!nn)
		return NULL;
	nn->node = node;
	opts_of(node, &o, local);
	nn->client = warp_name_client_new(node->loop, &o);
	if (!nn->client) {
		free(nn);
		return NULL;
	}
	for (size_t i = 0; servers && i < node->conf.nnames; i++) {
		char spec[WARP_CONF_EP_LEN + 80];

		snprintf(spec, sizeof(spec), "%s%s%s", node->conf.names[i].server,
			 node->conf.names[i].key_hex[0] ? "," : "", node->conf.names[i].key_hex);
		if (warp_name_client_add_server_spec(nn->client, spec) < 0)
			pr_warn("nickname server '%s' is not usable", node->conf.names[i].server);
	}
	node->names = nn;
out:
	/* Our own NAT drops UDP (classified at start): no point waiting for datagrams. */
	rep = node_nat_report(node, AF_INET);
	if (rep && !rep->udp)
		warp_name_client_prefer_tcp(nn->client, true);
	return nn;
}

static int encode_stable(struct warp_node *node, uint8_t *blob, size_t cap)
{
	struct warp_node_addr a;
	int err = warp_node_address(node, &a);

	if (err)
		return err;
	return warp_addr_encode(&a, blob, cap);
}

/* ---- resolve ---- */

struct resolve_wait {
	bool done;
	struct warp_name_result res;
};

static void resolved(const struct warp_name_result *res, void *user)
{
	struct resolve_wait *w = user;

	w->res = *res;
	w->done = true;
}

static bool resolve_done(void *user)
{
	return ((struct resolve_wait *)user)->done;
}

int node_resolve_name(struct warp_node *node, const char *name, struct warp_node_addr *out,
		      char *source, size_t source_len)
{
	struct node_names *nn = names_get(node);
	struct resolve_wait *w;
	int err;

	if (!nn)
		return -WARP_ENONAMESERVER;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	err = warp_name_resolve(nn->client, name, resolved, w);
	if (!err)
		err = warp_loop_run_until(node->loop, resolve_done, w, 10000);
	if (!err)
		err = w->res.err;
	if (!err && !w->res.found)
		err = -WARP_ENOTFOUND;
	if (!err) {
		err = warp_addr_decode(w->res.value, w->res.value_len, out);
		if (err)
			pr_warn("%s: the record does not hold a node address: %s", w->res.name,
				warp_strerror(err));
		else if (memcmp(out->pubkey, w->res.owner, WARP_PUBKEY_LEN))
			err = -WARP_EAUTH; /* signed by one key, pointing at another */
	}
	if (!err) {
		pr_info("%s resolved via %s", w->res.name, w->res.server_addr);
		if (source)
			snprintf(source, source_len, "%s", w->res.server_addr);
	}
	free(w);
	return err;
}

/* ---- publish ---- */

static void put_done(const struct warp_name_result *res, void *user)
{
	struct node_names *nn = user;

	nn->put_pending = false;
	if (res->err)
		pr_warn("registering %s failed: %s", res->name, warp_strerror(res->err));
	else if (!res->stored)
		pr_warn("%s not stored: the quota of this address is full", res->name);
	else
		pr_info("registered %s on %u server(s)", res->name, res->n_ok);
}

static void publish_now(struct node_names *nn)
{
	struct warp_node *node = nn->node;
	uint8_t blob[WARP_ADDR_MAX_BIN];
	int n = encode_stable(node, blob, sizeof(blob));
	uint64_t now = node_clock_ms(node);

	if (n < 0)
		return;
	if (nn->resp)
		warp_name_responder_publish(nn->resp, node->id, nn->name, blob, (size_t)n);
	/* The servers get a PUT only when something changed, or once a day to keep the name
	 * from expiring. */
	if (warp_name_client_server_count(nn->client) && !nn->put_pending &&
	    ((size_t)n != nn->blob_len || memcmp(blob, nn->blob, (size_t)n) ||
	     now - nn->put_ms > REFRESH_MS)) {
		if (warp_name_put(nn->client, node->id, nn->name, blob, (size_t)n, WARP_NAME_BUMP,
				  put_done, nn) == 0) {
			nn->put_pending = true;
			nn->put_ms = now;
		}
	}
	memcpy(nn->blob, blob, (size_t)n);
	nn->blob_len = (size_t)n;
}

static void republish(struct warp_timer *t, void *user)
{
	publish_now(user);
	warp_timer_arm_ms(t, REPUBLISH_CHECK_MS);
}

static bool put_settled(void *user)
{
	return !((struct node_names *)user)->put_pending;
}

int node_publish_name(struct warp_node *node, const char *name)
{
	struct node_names *nn = names_get(node);
	struct warp_name_client_opts o;
	bool servers, local;

	if (!nn)
		return -WARP_ENONAMESERVER;
	names_wanted(node, &servers, &local);
	snprintf(nn->name, sizeof(nn->name), "%s", name);
	if (local && !nn->resp) {
		opts_of(node, &o, true);
		nn->resp = warp_name_responder_new(node->loop, &o);
		if (!nn->resp)
			pr_warn("local-link name answers unavailable: %s", warp_strerror(errno));
	}
	if (!nn->timer)
		nn->timer = warp_timer_new(node->loop, republish, nn);
	nn->blob_len = 0;
	publish_now(nn);
	if (nn->timer)
		warp_timer_arm_ms(nn->timer, REPUBLISH_CHECK_MS);
	/* Read-your-writes for whoever looks the name up next: wait for the first PUT. */
	warp_loop_run_until(node->loop, put_settled, nn, 5000);
	return 0;
}

struct warp_name_client *node_name_client(struct warp_node *node)
{
	struct node_names *nn = names_get(node);

	return nn ? nn->client : NULL;
}

void node_names_stop(struct warp_node *node)
{
	struct node_names *nn = node->names;

	if (!nn)
		return;
	warp_timer_free(nn->timer);
	warp_name_responder_free(nn->resp);
	warp_name_client_free(nn->client);
	free(nn);
	node->names = NULL;
}
