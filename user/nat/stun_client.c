// SPDX-License-Identifier: MIT
/*
 * Sans-IO STUN client transaction table.  A plain list in creation order: the table holds a
 * handful to a few hundred probes, and keeping creation order makes first transmissions leave
 * in start order, which the NAT classifier relies on to know the order in which the NAT saw
 * new flows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "stun"
#include "core/log.h"
#include "core/util.h"
#include "nat/sockaddr.h"
#include "nat/stun_client.h"

#define MSG_MAX 1280 /* requests we build stay well under the IPv6 minimum MTU */

struct tx {
	struct tx *prev, *next;
	uint64_t id;
	uint8_t tid[WARP_STUN_TID_LEN];
	int sock;
	uint8_t transport;
	uint16_t method;
	bool any_source;
	bool has_expect;
	struct sockaddr_storage dest;
	struct sockaddr_storage expect;
	uint8_t *msg;
	size_t len;
	uint8_t *key;
	size_t keylen;
	uint64_t due;	   /* next transmission; WARP_STUN_NEVER when none is left */
	uint64_t deadline; /* failure time; WARP_STUN_NEVER until the last transmission */
	uint64_t cap;	   /* timeout_ms after the first transmission */
	uint64_t first_tx, last_tx;
	uint32_t rto_init, rto_cur;
	unsigned int rc, rm, sent;
	uint32_t timeout_ms;
	warp_stun_result_cb cb;
	void *user;
};

struct warp_stun_client {
	struct warp_stun_client_cfg cfg;
	struct warp_stun_client_hooks hooks;
	struct tx *head, *tail;
	unsigned int count;
	uint64_t next_id;
};

void warp_stun_client_cfg_default(struct warp_stun_client_cfg *cfg)
{
	cfg->rto_ms = 500;
	cfg->rto_max_ms = 0;
	cfg->rc = 7;
	cfg->rm = 16;
	cfg->ti_ms = 39500;
}

struct warp_stun_client *warp_stun_client_new(const struct warp_stun_client_cfg *cfg)
{
	struct warp_stun_client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	warp_stun_client_cfg_default(&c->cfg);
	if (cfg) {
		if (cfg->rto_ms)
			c->cfg.rto_ms = cfg->rto_ms;
		c->cfg.rto_max_ms = cfg->rto_max_ms;
		if (cfg->rc)
			c->cfg.rc = cfg->rc;
		if (cfg->rm)
			c->cfg.rm = cfg->rm;
		if (cfg->ti_ms)
			c->cfg.ti_ms = cfg->ti_ms;
	}
	c->next_id = 1;
	return c;
}

static void unlink_tx(struct warp_stun_client *c, struct tx *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		c->head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	else
		c->tail = t->prev;
	t->prev = t->next = NULL;
	c->count--;
	if (c->hooks.tx_remove)
		c->hooks.tx_remove(c->hooks.user, t->tid);
}

static void free_tx(struct tx *t)
{
	if (!t)
		return;
	free(t->msg);
	if (t->key)
		memset(t->key, 0, t->keylen);
	free(t->key);
	free(t);
}

void warp_stun_client_free(struct warp_stun_client *c)
{
	if (!c)
		return;
	while (c->head) {
		struct tx *t = c->head;

		unlink_tx(c, t);
		free_tx(t);
	}
	free(c);
}

void warp_stun_client_set_hooks(struct warp_stun_client *c,
				const struct warp_stun_client_hooks *hooks)
{
	if (hooks)
		c->hooks = *hooks;
	else
		memset(&c->hooks, 0, sizeof(c->hooks));
}

static struct tx *find_tid(const struct warp_stun_client *c, const uint8_t *tid)
{
	for (struct tx *t = c->head; t; t = t->next)
		if (!memcmp(t->tid, tid, WARP_STUN_TID_LEN))
			return t;
	return NULL;
}

static struct tx *find_id(const struct warp_stun_client *c, uint64_t id)
{
	for (struct tx *t = c->head; t; t = t->next)
		if (t->id == id)
			return t;
	return NULL;
}

static int build_request(struct tx *t, const struct warp_stun_req *req)
{
	struct warp_stun_builder b;
	uint8_t buf[MSG_MAX];
	int n;

	warp_stun_build_init(&b, buf, sizeof(buf), t->method, WARP_STUN_REQUEST, t->tid);
	if (req->software)
		warp_stun_add_str(&b, WARP_STUN_ATTR_SOFTWARE, req->software);
	if (req->username)
		warp_stun_add_str(&b, WARP_STUN_ATTR_USERNAME, req->username);
	if (req->realm)
		warp_stun_add_str(&b, WARP_STUN_ATTR_REALM, req->realm);
	if (req->nonce)
		warp_stun_add_str(&b, WARP_STUN_ATTR_NONCE, req->nonce);
	if (req->change)
		warp_stun_add_change_request(&b, req->change);
	if (req->response_port)
		warp_stun_add_response_port(&b, req->response_port);
	if (req->padding)
		warp_stun_add_padding(&b, req->padding);
	if (req->build)
		req->build(&b, req->build_user);
	if (req->key) {
		warp_stun_add_mi(&b, req->key, req->keylen);
		if (req->mi256)
			warp_stun_add_mi256(&b, req->key, req->keylen);
	}
	if (req->fingerprint)
		warp_stun_add_fingerprint(&b);
	n = warp_stun_build_end(&b);
	if (n < 0)
		return n;
	t->msg = malloc((size_t)n);
	if (!t->msg)
		return -ENOMEM;
	memcpy(t->msg, buf, (size_t)n);
	t->len = (size_t)n;
	return 0;
}

int warp_stun_client_start(struct warp_stun_client *c, const struct warp_stun_req *req,
			   uint64_t now_ns, uint64_t *id)
{
	struct tx *t = NULL;
	int err;

	if (!c || !req || !req->dest || !nat_sa_len(req->dest) || !req->cb ||
	    req->transport > WARP_STUN_TCP)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	do {
		warp_random(t->tid, sizeof(t->tid));
	} while (find_tid(c, t->tid));
	t->sock = req->sock;
	t->transport = req->transport;
	t->method = req->method ? req->method : WARP_STUN_BINDING;
	t->any_source = req->any_source;
	memcpy(&t->dest, req->dest, nat_sa_len(req->dest));
	if (req->expect_from && nat_sa_len(req->expect_from)) {
		memcpy(&t->expect, req->expect_from, nat_sa_len(req->expect_from));
		t->has_expect = true;
	}
	if (req->key) {
		if (!req->keylen) {
			err = -EINVAL;
			goto fail;
		}
		t->key = malloc(req->keylen);
		if (!t->key) {
			err = -ENOMEM;
			goto fail;
		}
		memcpy(t->key, req->key, req->keylen);
		t->keylen = req->keylen;
	}
	err = build_request(t, req);
	if (err)
		goto fail;
	t->rto_init = req->rto_ms ? req->rto_ms : c->cfg.rto_ms;
	t->rto_cur = t->rto_init;
	t->rc = req->rc ? req->rc : c->cfg.rc;
	t->rm = req->rm ? req->rm : c->cfg.rm;
	t->timeout_ms = req->timeout_ms;
	t->due = now_ns;
	t->deadline = WARP_STUN_NEVER;
	t->cap = WARP_STUN_NEVER;
	t->cb = req->cb;
	t->user = req->user;
	t->id = c->next_id++;
	t->prev = c->tail;
	if (c->tail)
		c->tail->next = t;
	else
		c->head = t;
	c->tail = t;
	c->count++;
	if (c->hooks.tx_add)
		c->hooks.tx_add(c->hooks.user, t->tid, t->sock, (struct sockaddr *)&t->dest);
	if (id)
		*id = t->id;
	return 0;
fail:
	free_tx(t);
	return err;
}

int warp_stun_client_cancel(struct warp_stun_client *c, uint64_t id)
{
	struct tx *t = find_id(c, id);

	if (!t)
		return -ENOENT;
	unlink_tx(c, t);
	free_tx(t);
	return 0;
}

const uint8_t *warp_stun_client_tid(const struct warp_stun_client *c, uint64_t id)
{
	struct tx *t = find_id(c, id);

	return t ? t->tid : NULL;
}

unsigned int warp_stun_client_pending(const struct warp_stun_client *c)
{
	return c->count;
}

/* Unlinks t, runs its callback, frees it. */
static void complete(struct warp_stun_client *c, struct tx *t, struct warp_stun_result *res)
{
	unlink_tx(c, t);
	res->id = t->id;
	res->sock = t->sock;
	res->transmissions = t->sent;
	res->first_tx_ns = t->first_tx;
	memcpy(&res->dest, &t->dest, sizeof(t->dest));
	t->cb(res, t->user);
	free_tx(t);
}

void warp_stun_client_fail_all(struct warp_stun_client *c, int err)
{
	while (c->head) {
		struct warp_stun_result res = { .status = err };

		complete(c, c->head, &res);
	}
}

static uint64_t deadline_of(const struct tx *t)
{
	return t->deadline < t->cap ? t->deadline : t->cap;
}

bool warp_stun_client_poll_transmit(struct warp_stun_client *c, uint64_t now_ns,
				    struct warp_stun_tx *out)
{
	struct tx *best = NULL;

	for (struct tx *t = c->head; t; t = t->next)
		if (t->due <= now_ns && deadline_of(t) > now_ns && (!best || t->due < best->due))
			best = t;
	if (!best)
		return false;
	best->sent++;
	best->last_tx = now_ns;
	if (best->sent == 1) {
		best->first_tx = now_ns;
		if (best->timeout_ms)
			best->cap = now_ns + best->timeout_ms * 1000000ull;
	}
	if (best->transport == WARP_STUN_TCP) {
		best->due = WARP_STUN_NEVER;
		best->deadline = now_ns + c->cfg.ti_ms * 1000000ull;
	} else if (best->sent < best->rc) {
		uint32_t iv = best->rto_cur;

		if (c->cfg.rto_max_ms && iv > c->cfg.rto_max_ms)
			iv = c->cfg.rto_max_ms;
		best->due = now_ns + iv * 1000000ull;
		best->rto_cur = iv * 2;
	} else {
		best->due = WARP_STUN_NEVER;
		best->deadline = now_ns + (uint64_t)best->rm * best->rto_init * 1000000ull;
	}
	out->id = best->id;
	out->sock = best->sock;
	out->transport = best->transport;
	out->attempt = best->sent;
	out->data = best->msg;
	out->len = best->len;
	memcpy(&out->dest, &best->dest, sizeof(best->dest));
	memcpy(out->tid, best->tid, WARP_STUN_TID_LEN);
	return true;
}

uint64_t warp_stun_client_next_deadline(const struct warp_stun_client *c)
{
	uint64_t next = WARP_STUN_NEVER;

	for (struct tx *t = c->head; t; t = t->next) {
		uint64_t d = deadline_of(t);

		if (t->due < d)
			d = t->due;
		if (d < next)
			next = d;
	}
	return next;
}

void warp_stun_client_handle_timeout(struct warp_stun_client *c, uint64_t now_ns)
{
	/* restart the scan after each callback: it may have changed the list */
	for (;;) {
		struct tx *t;

		for (t = c->head; t; t = t->next)
			if (deadline_of(t) <= now_ns)
				break;
		if (!t)
			return;
		{
			struct warp_stun_result res = { .status = -ETIMEDOUT };

			complete(c, t, &res);
		}
	}
}

static bool unsigned_error_ok(int code)
{
	return code == WARP_STUN_ERR_BAD_REQUEST || code == WARP_STUN_ERR_UNAUTHORIZED ||
	       code == WARP_STUN_ERR_STALE_NONCE;
}

static int input(struct warp_stun_client *c, int sock, const void *buf, size_t len,
		 const struct sockaddr *from, uint64_t rx_ns, bool kernel)
{
	struct warp_stun_result res = { 0 };
	struct warp_stun_msg m;
	struct tx *t;
	int err, code = 0;

	err = warp_stun_decode(&m, buf, len);
	if (err)
		return err;
	if (m.cls == WARP_STUN_REQUEST || m.cls == WARP_STUN_INDICATION)
		return 0;
	t = find_tid(c, m.tid);
	if (!t || t->sent == 0)
		return 0;
	if (t->sock != sock || m.method != t->method)
		return 0;
	if (!t->any_source) {
		const struct sockaddr *want =
			t->has_expect ? (struct sockaddr *)&t->expect : (struct sockaddr *)&t->dest;

		if (!from || !nat_sa_equal(from, want)) {
			char a[NAT_SA_STRLEN], b[NAT_SA_STRLEN];

			pr_debug("response from %s, expected %s: ignored",
				 nat_sa_str(from, a, sizeof(a)), nat_sa_str(want, b, sizeof(b)));
			return 0;
		}
	}
	if (m.cls == WARP_STUN_ERROR && warp_stun_get_error(&m, &code, NULL, NULL) == 0)
		res.error_code = code;
	if (t->key) {
		int ierr = warp_stun_check_integrity(&m, t->key, t->keylen);

		if (ierr && !(ierr == -WARP_EMISSING && m.cls == WARP_STUN_ERROR &&
			      unsigned_error_ok(code))) {
			pr_debug("response failed its integrity check (%s): ignored",
				 warp_strerror(ierr));
			return 0;
		}
	}
	if (m.n_unknown || (m.cls == WARP_STUN_ERROR && !code))
		res.status = -WARP_EMALFORMED;
	if (m.cls == WARP_STUN_SUCCESS && warp_stun_get_mapped(&m, &res.mapped) != 0)
		res.mapped.ss_family = AF_UNSPEC;
	res.msg = &m;
	res.from = from;
	res.rtt_ns = rx_ns > t->last_tx ? rx_ns - t->last_tx : 0;
	res.kernel_ts = kernel;
	complete(c, t, &res);
	return 1;
}

int warp_stun_client_handle_input(struct warp_stun_client *c, int sock, const void *buf, size_t len,
				  const struct sockaddr *from, uint64_t rx_ns)
{
	return input(c, sock, buf, len, from, rx_ns, false);
}

int warp_stun_client_kernel_reply(struct warp_stun_client *c, int sock, const void *buf, size_t len,
				  const struct sockaddr *from, uint64_t ktime_ns)
{
	return input(c, sock, buf, len, from, ktime_ns, true);
}
