// SPDX-License-Identifier: MIT
/*
 * Sans-IO TURN client: one allocation, its permissions (one per peer IP) and channels (one
 * per peer transport address), and a small transaction table of its own.  The STUN client
 * of user/nat is not reused because TURN needs a different integrity policy (coturn sends
 * some error responses unsigned) and re-signs requests with a fresh nonce on 438.
 *
 * Every object owns at most one transaction; the transaction points back at it.  Objects
 * are only freed where no callback is running (remove_peer unlinks nothing: peers retire
 * and are swept in handle_timeout), and every scan that calls back restarts afterwards.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "turn"
#include "core/bytes.h"
#include "core/log.h"
#include "core/util.h"
#include "net/endpoint.h"
#include "nat/stun.h"
#include "relay/turn.h"

#define REQ_MAX	     1400 /* our requests: credentials + one peer address */
#define MAX_RETRIES  4	  /* 401/438 re-sends of one request */
#define PROTO_UDP    17
#define NONCE_COOKIE "obMatJos2"
#define MS	     1000000ull
#define S	     1000000000ull

enum obj_state { OBJ_IDLE = 0, OBJ_PENDING, OBJ_OK, OBJ_FAILED };

enum tx_kind { TX_ALLOCATE, TX_REFRESH, TX_DEALLOC, TX_PERM, TX_CHAN };

struct turn_perm;
struct turn_peer;

struct turn_tx {
	struct turn_tx *next;
	enum tx_kind kind;
	uint16_t method;
	uint8_t tid[WARP_STUN_TID_LEN];
	uint8_t retries;
	bool signed_req;
	uint8_t key[32];
	size_t keylen;
	struct turn_perm *perm;
	struct turn_peer *peer;
	uint8_t *msg;
	size_t len;
	uint64_t due;	   /* next transmission */
	uint64_t deadline; /* failure time once the last transmission left */
	uint64_t cap;	   /* hard limit (release) */
	uint32_t rto;
	unsigned int sent;
};

struct turn_perm {
	struct turn_perm *next;
	struct sockaddr_storage ip; /* port 0 */
	unsigned int refs;
	enum obj_state state;
	int err;
	uint64_t next_at; /* next CreatePermission */
	uint64_t expires;
	struct turn_tx *tx;
};

struct turn_peer {
	struct turn_peer *next;
	struct sockaddr_storage addr;
	unsigned int refs; /* 0: retired, kept for its channel number */
	bool want_channel;
	bool notified; /* PERMISSION event sent for the perm's current state */
	struct turn_perm *perm;
	uint16_t channel;
	enum obj_state chan_state;
	uint64_t chan_next;
	uint64_t chan_expires;
	uint64_t retire_until;
	struct turn_tx *tx;
};

struct warp_turn {
	struct warp_turn_cfg cfg;
	char *username, *password, *realm_hint, *software;
	struct warp_turn_ops ops;
	void *user;
	enum warp_turn_state state;
	struct warp_turn_info info;

	/* credentials learnt from the server */
	char realm[WARP_STUN_MAX_TEXT + 1];
	char nonce[WARP_STUN_MAX_TEXT + 1];
	uint8_t key[32];
	size_t keylen;
	bool have_auth;
	bool sha256;	  /* sign with MESSAGE-INTEGRITY-SHA256 */
	uint16_t pw_alg;  /* PASSWORD-ALGORITHM chosen; 0: none sent */
	uint8_t *pw_algs; /* PASSWORD-ALGORITHMS as received, echoed back */
	size_t pw_algs_len;

	uint64_t expires; /* allocation */
	uint64_t refresh_at;
	bool release_pending;	  /* release asked while Allocate was in flight */
	struct turn_tx *alloc_tx; /* Allocate, Refresh or the deallocation */

	struct turn_tx *txs;
	unsigned int ntx;
	struct turn_perm *perms;
	struct turn_peer *peers;
	uint16_t next_channel;

	uint8_t out[REQ_MAX]; /* last message handed out by poll_transmit */
	uint8_t *rx;	      /* TCP reassembly */
	size_t rx_len;
};

/* ------------------------------------------------------------------ helpers */

static uint64_t ms_ns(uint32_t ms)
{
	return (uint64_t)ms * MS;
}

static char *dup_or_null(const char *s, int *err)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*err = -ENOMEM;
	return d;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static const char *sa_str(const struct sockaddr *sa, char *buf, size_t len)
{
	return warp_ep_str(sa, buf, len);
}

static bool addr_ok(const struct sockaddr *sa)
{
	return sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6);
}

static void copy_sa(struct sockaddr_storage *dst, const struct sockaddr *src)
{
	memset(dst, 0, sizeof(*dst));
	memcpy(dst, src, warp_ep_len(src));
}

const char *warp_turn_state_name(enum warp_turn_state s)
{
	static const char *const names[] = { "idle",	  "allocating", "ready",
					     "releasing", "closed",	"failed" };

	return (unsigned int)s < WARP_ARRAY_SIZE(names) ? names[s] : "?";
}

int warp_turn_map_error(int code, uint16_t method)
{
	switch (code) {
	case WARP_STUN_ERR_TRY_ALTERNATE:
		return -EREMCHG;
	case WARP_STUN_ERR_BAD_REQUEST:
		return -EPROTO;
	case WARP_STUN_ERR_UNAUTHORIZED:
		return -EACCES;
	case WARP_STUN_ERR_FORBIDDEN:
		return -EPERM;
	case WARP_STUN_ERR_UNKNOWN_ATTRIBUTE:
		return -EOPNOTSUPP;
	case WARP_STUN_ERR_ALLOCATION_MISMATCH:
		return method == WARP_STUN_ALLOCATE ? -EADDRINUSE : -ENOENT;
	case WARP_STUN_ERR_STALE_NONCE:
		return -WARP_ESTALE;
	case WARP_STUN_ERR_ADDRESS_FAMILY:
		return -EAFNOSUPPORT;
	case WARP_STUN_ERR_WRONG_CREDENTIALS:
		return -EKEYREJECTED;
	case WARP_STUN_ERR_UNSUPPORTED_TRANSPORT:
		return -EPROTONOSUPPORT;
	case WARP_STUN_ERR_ALLOCATION_QUOTA:
		return -WARP_EQUOTA;
	case WARP_STUN_ERR_INSUFFICIENT_CAPACITY:
		return -EBUSY;
	}
	return code >= 500 ? -EIO : -EPROTO;
}

/* Why a code matters, for the log line. */
static const char *error_hint(int code, uint16_t method)
{
	switch (code) {
	case WARP_STUN_ERR_TRY_ALTERNATE:
		return "server redirects to another server";
	case WARP_STUN_ERR_UNAUTHORIZED:
		return "wrong username or password";
	case WARP_STUN_ERR_FORBIDDEN:
		return "forbidden by server policy";
	case WARP_STUN_ERR_ALLOCATION_MISMATCH:
		return method == WARP_STUN_ALLOCATE ? "allocation exists for this 5-tuple"
						    : "the allocation no longer exists";
	case WARP_STUN_ERR_STALE_NONCE:
		return "nonce kept going stale";
	case WARP_STUN_ERR_ADDRESS_FAMILY:
		return "address family not supported";
	case WARP_STUN_ERR_WRONG_CREDENTIALS:
		return "credentials differ from the allocation's";
	case WARP_STUN_ERR_UNSUPPORTED_TRANSPORT:
		return "UDP relaying not supported";
	case WARP_STUN_ERR_ALLOCATION_QUOTA:
		return "allocation quota reached";
	case WARP_STUN_ERR_INSUFFICIENT_CAPACITY:
		return "server out of capacity";
	}
	return code >= 500 ? "server error" : "request refused";
}

/* ------------------------------------------------------------------ construction */

struct warp_turn *warp_turn_new(const struct warp_turn_cfg *cfg, const struct sockaddr *server,
				const struct warp_turn_ops *ops, void *user)
{
	struct warp_turn *t;
	int err = 0;

	if (!cfg || !addr_ok(server) || cfg->transport > WARP_TURN_TCP ||
	    (cfg->family && cfg->family != AF_INET && cfg->family != AF_INET6) ||
	    (cfg->username && (!cfg->password || strlen(cfg->username) > WARP_STUN_MAX_USERNAME)) ||
	    (cfg->realm && strlen(cfg->realm) > WARP_STUN_MAX_TEXT)) {
		errno = EINVAL;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->cfg = *cfg;
	t->username = dup_or_null(cfg->username, &err);
	t->password = dup_or_null(cfg->password, &err);
	t->realm_hint = dup_or_null(cfg->realm, &err);
	t->software = dup_or_null(cfg->software, &err);
	if (err) {
		warp_turn_free(t);
		errno = ENOMEM;
		return NULL;
	}
	t->cfg.username = t->cfg.password = t->cfg.realm = t->cfg.software = NULL;
	if (!t->cfg.family)
		t->cfg.family = AF_INET;
	if (!t->cfg.rto_ms)
		t->cfg.rto_ms = 500;
	if (!t->cfg.rc)
		t->cfg.rc = 7;
	if (!t->cfg.rm)
		t->cfg.rm = 16;
	if (!t->cfg.ti_ms)
		t->cfg.ti_ms = 39500;
	if (!t->cfg.perm_refresh_ms)
		t->cfg.perm_refresh_ms = 240000;
	if (!t->cfg.chan_refresh_ms)
		t->cfg.chan_refresh_ms = 540000;
	if (!t->cfg.retry_ms)
		t->cfg.retry_ms = 5000;
	if (!t->cfg.release_timeout_ms)
		t->cfg.release_timeout_ms = 8000;
	if (ops)
		t->ops = *ops;
	t->user = user;
	copy_sa(&t->info.server, server);
	t->info.realm = t->realm;
	t->next_channel = WARP_STUN_CHANNEL_MIN;
	return t;
}

static void tx_free(struct turn_tx *x)
{
	if (!x)
		return;
	explicit_bzero(x->key, sizeof(x->key));
	free(x->msg);
	free(x);
}

/* Unlinks x and clears its owner's pointer; does not free. */
static void tx_unlink(struct warp_turn *t, struct turn_tx *x)
{
	for (struct turn_tx **pp = &t->txs; *pp; pp = &(*pp)->next) {
		if (*pp == x) {
			*pp = x->next;
			t->ntx--;
			break;
		}
	}
	x->next = NULL;
	if (t->alloc_tx == x)
		t->alloc_tx = NULL;
	if (x->perm && x->perm->tx == x)
		x->perm->tx = NULL;
	if (x->peer && x->peer->tx == x)
		x->peer->tx = NULL;
}

static void tx_cancel(struct warp_turn *t, struct turn_tx *x)
{
	if (x) {
		tx_unlink(t, x);
		tx_free(x);
	}
}

static void cancel_all(struct warp_turn *t)
{
	while (t->txs)
		tx_cancel(t, t->txs);
}

void warp_turn_free(struct warp_turn *t)
{
	if (!t)
		return;
	cancel_all(t);
	while (t->perms) {
		struct turn_perm *p = t->perms;

		t->perms = p->next;
		free(p);
	}
	while (t->peers) {
		struct turn_peer *p = t->peers;

		t->peers = p->next;
		free(p);
	}
	wipe_free(t->username);
	wipe_free(t->password);
	free(t->realm_hint);
	free(t->software);
	free(t->pw_algs);
	free(t->rx);
	explicit_bzero(t, sizeof(*t));
	free(t);
}

enum warp_turn_state warp_turn_state(const struct warp_turn *t)
{
	return t->state;
}

const struct warp_turn_info *warp_turn_info(const struct warp_turn *t)
{
	return t->state == WARP_TURN_READY || t->state == WARP_TURN_RELEASING ? &t->info : NULL;
}

unsigned int warp_turn_pending(const struct warp_turn *t)
{
	return t->ntx;
}

/* ------------------------------------------------------------------ events */

static void emit(struct warp_turn *t, enum warp_turn_event_type type, int err,
		 const struct sockaddr *peer, uint16_t channel)
{
	struct warp_turn_event ev = { .type = type, .err = err, .peer = peer, .channel = channel };

	if (type == WARP_TURN_EV_ALLOCATED)
		ev.info = &t->info;
	if (t->ops.event)
		t->ops.event(t, &ev, t->user);
}

static void fail(struct warp_turn *t, int err)
{
	char a[WARP_EP_STRLEN];

	if (t->state == WARP_TURN_FAILED || t->state == WARP_TURN_CLOSED)
		return;
	pr_warn("relay via %s %s: %s", sa_str((struct sockaddr *)&t->info.server, a, sizeof(a)),
		t->state == WARP_TURN_READY ? "lost" : "failed", warp_strerror(err));
	cancel_all(t);
	t->state = WARP_TURN_FAILED;
	emit(t, WARP_TURN_EV_FAILED, err, NULL, 0);
}

static void closed(struct warp_turn *t, int err)
{
	char a[WARP_EP_STRLEN];

	cancel_all(t);
	t->state = WARP_TURN_CLOSED;
	if (err)
		pr_warn("relay via %s: deallocation not confirmed: %s",
			sa_str((struct sockaddr *)&t->info.server, a, sizeof(a)),
			warp_strerror(err));
	else
		pr_debug("relay via %s released",
			 sa_str((struct sockaddr *)&t->info.server, a, sizeof(a)));
	emit(t, WARP_TURN_EV_RELEASED, err, NULL, 0);
}

/* PERMISSION events for peers whose permission changed state; restarts after every callback
 * because the callback may add or remove peers. */
static void notify_perms(struct warp_turn *t)
{
	for (;;) {
		struct turn_peer *p;
		struct sockaddr_storage addr;
		int err;

		for (p = t->peers; p; p = p->next)
			if (p->refs && p->perm && !p->notified &&
			    (p->perm->state == OBJ_OK || p->perm->state == OBJ_FAILED))
				break;
		if (!p || t->state != WARP_TURN_READY)
			return;
		p->notified = true;
		err = p->perm->state == OBJ_OK ? 0 : p->perm->err;
		addr = p->addr;
		emit(t, WARP_TURN_EV_PERMISSION, err, (struct sockaddr *)&addr, 0);
	}
}

static void perm_set_state(struct warp_turn *t, struct turn_perm *perm, enum obj_state st, int err)
{
	if (perm->state == st && perm->err == err)
		return;
	perm->state = st;
	perm->err = err;
	for (struct turn_peer *p = t->peers; p; p = p->next)
		if (p->perm == perm)
			p->notified = false;
}

/* ------------------------------------------------------------------ requests */

static void add_xor_peer(struct warp_stun_builder *b, const struct sockaddr *peer)
{
	warp_stun_add_addr(b, WARP_STUN_ATTR_XOR_PEER_ADDRESS, peer);
}

static void add_credentials(struct warp_turn *t, struct warp_stun_builder *b)
{
	if (!t->have_auth)
		return;
	warp_stun_add_str(b, WARP_STUN_ATTR_USERNAME, t->username);
	warp_stun_add_str(b, WARP_STUN_ATTR_REALM, t->realm);
	warp_stun_add_str(b, WARP_STUN_ATTR_NONCE, t->nonce);
	if (t->pw_alg) {
		uint8_t v[4] = { 0 };

		warp_put_u16(v, t->pw_alg);
		warp_stun_add(b, WARP_STUN_ATTR_PASSWORD_ALGORITHMS, t->pw_algs, t->pw_algs_len);
		warp_stun_add(b, WARP_STUN_ATTR_PASSWORD_ALGORITHM, v, sizeof(v));
	}
	if (t->sha256)
		warp_stun_add_mi256(b, t->key, t->keylen);
	else
		warp_stun_add_mi(b, t->key, t->keylen);
}

static uint16_t kind_method(enum tx_kind kind)
{
	switch (kind) {
	case TX_ALLOCATE:
		return WARP_STUN_ALLOCATE;
	case TX_REFRESH:
	case TX_DEALLOC:
		return WARP_STUN_REFRESH;
	case TX_PERM:
		return WARP_STUN_CREATE_PERMISSION;
	case TX_CHAN:
		return WARP_STUN_CHANNEL_BIND;
	}
	return 0;
}

static int build(struct warp_turn *t, struct turn_tx *x)
{
	struct warp_stun_builder b;
	uint8_t buf[REQ_MAX];
	int n;

	warp_stun_build_init(&b, buf, sizeof(buf), x->method, WARP_STUN_REQUEST, x->tid);
	switch (x->kind) {
	case TX_ALLOCATE:
		warp_stun_add_requested_transport(&b, PROTO_UDP);
		if (t->cfg.family == AF_INET6)
			warp_stun_add_u32(&b, WARP_STUN_ATTR_REQUESTED_ADDRESS_FAMILY, 0x02000000u);
		if (t->cfg.lifetime_s)
			warp_stun_add_u32(&b, WARP_STUN_ATTR_LIFETIME, t->cfg.lifetime_s);
		if (t->software)
			warp_stun_add_str(&b, WARP_STUN_ATTR_SOFTWARE, t->software);
		break;
	case TX_REFRESH:
		if (t->cfg.lifetime_s)
			warp_stun_add_u32(&b, WARP_STUN_ATTR_LIFETIME, t->cfg.lifetime_s);
		break;
	case TX_DEALLOC:
		warp_stun_add_u32(&b, WARP_STUN_ATTR_LIFETIME, 0);
		break;
	case TX_PERM:
		add_xor_peer(&b, (struct sockaddr *)&x->perm->ip);
		break;
	case TX_CHAN:
		warp_stun_add_channel(&b, x->peer->channel);
		add_xor_peer(&b, (struct sockaddr *)&x->peer->addr);
		break;
	}
	add_credentials(t, &b);
	n = warp_stun_build_end(&b);
	if (n < 0)
		return n;
	x->msg = malloc((size_t)n);
	if (!x->msg)
		return -ENOMEM;
	memcpy(x->msg, buf, (size_t)n);
	x->len = (size_t)n;
	x->signed_req = t->have_auth;
	if (t->have_auth) {
		memcpy(x->key, t->key, t->keylen);
		x->keylen = t->keylen;
	}
	return 0;
}

static bool tid_in_use(const struct warp_turn *t, const uint8_t *tid)
{
	for (const struct turn_tx *x = t->txs; x; x = x->next)
		if (!memcmp(x->tid, tid, WARP_STUN_TID_LEN))
			return true;
	return false;
}

/* Starts a request of kind for its object; retries counts earlier 401/438 re-sends. */
static int start(struct warp_turn *t, enum tx_kind kind, struct turn_perm *perm,
		 struct turn_peer *peer, uint8_t retries, uint64_t now)
{
	struct turn_tx *x = calloc(1, sizeof(*x)), **tail;
	int err;

	if (!x)
		return -ENOMEM;
	x->kind = kind;
	x->method = kind_method(kind);
	x->perm = perm;
	x->peer = peer;
	x->retries = retries;
	do {
		warp_random(x->tid, sizeof(x->tid));
	} while (tid_in_use(t, x->tid));
	err = build(t, x);
	if (err) {
		tx_free(x);
		return err;
	}
	x->due = now;
	x->deadline = WARP_TURN_NEVER;
	x->cap = kind == TX_DEALLOC ? now + ms_ns(t->cfg.release_timeout_ms) : WARP_TURN_NEVER;
	x->rto = t->cfg.rto_ms;
	for (tail = &t->txs; *tail; tail = &(*tail)->next)
		;
	*tail = x;
	t->ntx++;
	if (kind == TX_ALLOCATE || kind == TX_REFRESH || kind == TX_DEALLOC)
		t->alloc_tx = x;
	else if (perm)
		perm->tx = x;
	else if (peer)
		peer->tx = x;
	return 0;
}

/* Starts every refresh, permission and channel request that is due. */
static void kick(struct warp_turn *t, uint64_t now)
{
	if (t->state != WARP_TURN_READY)
		return;
	if (!t->alloc_tx && t->refresh_at <= now)
		start(t, TX_REFRESH, NULL, NULL, 0, now);
	for (struct turn_perm *p = t->perms; p; p = p->next)
		if (p->refs && !p->tx && p->next_at <= now) {
			if (p->state == OBJ_IDLE)
				p->state = OBJ_PENDING;
			start(t, TX_PERM, p, NULL, 0, now);
		}
	for (struct turn_peer *p = t->peers; p; p = p->next)
		if (p->refs && p->channel && !p->tx && p->chan_next <= now) {
			if (p->chan_state == OBJ_IDLE)
				p->chan_state = OBJ_PENDING;
			start(t, TX_CHAN, NULL, p, 0, now);
		}
}

int warp_turn_allocate(struct warp_turn *t, uint64_t now_ns)
{
	int err;

	if (t->state != WARP_TURN_IDLE)
		return -EALREADY;
	err = start(t, TX_ALLOCATE, NULL, NULL, 0, now_ns);
	if (err)
		return err;
	t->state = WARP_TURN_ALLOCATING;
	return 0;
}

/* ------------------------------------------------------------------ peers */

static struct turn_peer *find_peer(const struct warp_turn *t, const struct sockaddr *addr)
{
	for (struct turn_peer *p = t->peers; p; p = p->next)
		if (warp_ep_equal((struct sockaddr *)&p->addr, addr))
			return p;
	return NULL;
}

static struct turn_peer *find_channel(const struct warp_turn *t, uint16_t ch)
{
	for (struct turn_peer *p = t->peers; p; p = p->next)
		if (p->channel == ch)
			return p;
	return NULL;
}

static struct turn_perm *get_perm(struct warp_turn *t, const struct sockaddr *addr)
{
	struct turn_perm *perm;

	for (perm = t->perms; perm; perm = perm->next)
		if (warp_ep_addr_equal((struct sockaddr *)&perm->ip, addr))
			break;
	if (!perm) {
		perm = calloc(1, sizeof(*perm));
		if (!perm)
			return NULL;
		copy_sa(&perm->ip, addr);
		warp_ep_set_port((struct sockaddr *)&perm->ip, 0);
		perm->next = t->perms;
		t->perms = perm;
	}
	if (!perm->refs++ && perm->state != OBJ_OK) {
		perm->state = OBJ_IDLE;
		perm->next_at = 0;
	}
	return perm;
}

static void put_perm(struct warp_turn *t, struct turn_perm *perm)
{
	if (--perm->refs)
		return;
	tx_cancel(t, perm->tx);
	for (struct turn_perm **pp = &t->perms; *pp; pp = &(*pp)->next) {
		if (*pp == perm) {
			*pp = perm->next;
			break;
		}
	}
	for (struct turn_peer *p = t->peers; p; p = p->next)
		if (p->perm == perm)
			p->perm = NULL;
	free(perm);
}

int warp_turn_add_peer(struct warp_turn *t, const struct sockaddr *peer, bool channel,
		       uint64_t now_ns)
{
	struct turn_peer *p;

	if (!addr_ok(peer))
		return -EINVAL;
	if (peer->sa_family != t->cfg.family)
		return -EAFNOSUPPORT; /* a relay reaches peers of its own family only */
	if (t->state != WARP_TURN_IDLE && t->state != WARP_TURN_ALLOCATING &&
	    t->state != WARP_TURN_READY)
		return -ENOTCONN;
	p = find_peer(t, peer);
	if (!p) {
		p = calloc(1, sizeof(*p));
		if (!p)
			return -ENOMEM;
		copy_sa(&p->addr, peer);
		p->next = t->peers;
		t->peers = p;
	}
	if (p->refs++ == 0) {
		p->perm = get_perm(t, peer);
		if (!p->perm) {
			p->refs = 0;
			return -ENOMEM;
		}
		p->notified = false;
		/* a revived peer keeps its channel; rebind unless it is comfortably alive */
		if (p->channel && p->chan_expires < now_ns + ms_ns(t->cfg.retry_ms) * 2) {
			p->chan_state = OBJ_IDLE;
			p->chan_next = 0;
		}
	}
	if (channel && !p->want_channel) {
		p->want_channel = true;
		if (!p->channel && t->next_channel <= WARP_STUN_CHANNEL_MAX) {
			p->channel = t->next_channel++;
			p->chan_state = OBJ_IDLE;
			p->chan_next = 0;
		}
	}
	kick(t, now_ns);
	return 0;
}

int warp_turn_remove_peer(struct warp_turn *t, const struct sockaddr *peer, uint64_t now_ns)
{
	struct turn_peer *p = addr_ok(peer) ? find_peer(t, peer) : NULL;

	if (!p || !p->refs)
		return -ENOENT;
	if (--p->refs)
		return 0;
	tx_cancel(t, p->tx);
	if (p->perm)
		put_perm(t, p->perm);
	p->perm = NULL;
	p->want_channel = false;
	/* RFC 8656 section 12: a channel number stays tied to its peer until 5 minutes after
	 * the binding expired; keep the entry so a re-added peer gets the same number. */
	if (p->channel && p->chan_state == OBJ_OK)
		p->retire_until = p->chan_expires + 300 * S;
	else if (p->channel && p->chan_state != OBJ_IDLE) /* a bind may have reached it */
		p->retire_until = now_ns + (WARP_TURN_CHAN_LIFETIME_S + 300) * S;
	else
		p->retire_until = 0;
	return 0;
}

uint16_t warp_turn_peer_channel(const struct warp_turn *t, const struct sockaddr *peer)
{
	const struct turn_peer *p = addr_ok(peer) ? find_peer(t, peer) : NULL;

	return p && p->chan_state == OBJ_OK ? p->channel : 0;
}

static void sweep_peers(struct warp_turn *t, uint64_t now)
{
	struct turn_peer **pp = &t->peers;

	while (*pp) {
		struct turn_peer *p = *pp;

		if (!p->refs && !p->tx && p->retire_until <= now) {
			*pp = p->next;
			free(p);
		} else {
			pp = &p->next;
		}
	}
}

/* ------------------------------------------------------------------ data */

int warp_turn_wrap(struct warp_turn *t, const struct sockaddr *peer, const void *data, size_t len,
		   uint8_t *out, size_t cap)
{
	const struct turn_peer *p;
	struct warp_stun_builder b;
	uint8_t tid[WARP_STUN_TID_LEN];

	if (t->state != WARP_TURN_READY)
		return -ENOTCONN;
	if (!addr_ok(peer) || len > 65535)
		return -EINVAL;
	p = find_peer(t, peer);
	if (p && p->channel && p->chan_state == OBJ_OK)
		return warp_stun_channel_data_encode(out, cap, p->channel, data, len,
						     t->cfg.transport == WARP_TURN_TCP);
	warp_random(tid, sizeof(tid));
	warp_stun_build_init(&b, out, cap, WARP_STUN_SEND, WARP_STUN_INDICATION, tid);
	add_xor_peer(&b, peer);
	warp_stun_add(&b, WARP_STUN_ATTR_DATA, data, len);
	return warp_stun_build_end(&b);
}

/* ------------------------------------------------------------------ release */

int warp_turn_release(struct warp_turn *t, uint64_t now_ns)
{
	switch (t->state) {
	case WARP_TURN_RELEASING:
		return 0;
	case WARP_TURN_ALLOCATING:
		/* A signed Allocate may have created the allocation: wait for its answer. */
		if (t->alloc_tx && t->alloc_tx->signed_req) {
			t->release_pending = true;
			return 0;
		}
		break;
	case WARP_TURN_READY:
		cancel_all(t);
		t->state = WARP_TURN_RELEASING;
		if (start(t, TX_DEALLOC, NULL, NULL, 0, now_ns) == 0)
			return 0;
		break;
	default:
		break;
	}
	cancel_all(t);
	t->state = WARP_TURN_CLOSED;
	return 1;
}

void warp_turn_transport_lost(struct warp_turn *t, int err)
{
	if (t->state == WARP_TURN_RELEASING ||
	    (t->state == WARP_TURN_ALLOCATING && t->release_pending))
		closed(t, t->cfg.transport == WARP_TURN_TCP ? 0 : err);
	else if (t->state == WARP_TURN_ALLOCATING || t->state == WARP_TURN_READY)
		fail(t, err ? err : -ECONNRESET);
}

/* ------------------------------------------------------------------ transmission */

static uint64_t tx_deadline(const struct turn_tx *x)
{
	return x->deadline < x->cap ? x->deadline : x->cap;
}

bool warp_turn_poll_transmit(struct warp_turn *t, uint64_t now_ns, struct warp_turn_tx *out)
{
	struct turn_tx *best = NULL;

	for (struct turn_tx *x = t->txs; x; x = x->next)
		if (x->due <= now_ns && tx_deadline(x) > now_ns && (!best || x->due < best->due))
			best = x;
	if (!best)
		return false;
	best->sent++;
	if (t->cfg.transport == WARP_TURN_TCP) {
		best->due = WARP_TURN_NEVER;
		best->deadline = now_ns + ms_ns(t->cfg.ti_ms);
	} else if (best->sent < t->cfg.rc) {
		best->due = now_ns + ms_ns(best->rto);
		best->rto *= 2;
	} else {
		best->due = WARP_TURN_NEVER;
		best->deadline = now_ns + ms_ns(t->cfg.rm * t->cfg.rto_ms);
	}
	memcpy(t->out, best->msg, best->len);
	out->data = t->out;
	out->len = best->len;
	return true;
}

uint64_t warp_turn_next_deadline(const struct warp_turn *t)
{
	uint64_t next = WARP_TURN_NEVER;

#define AT(v)                       \
	do {                        \
		if ((v) < next)     \
			next = (v); \
	} while (0)
	for (const struct turn_tx *x = t->txs; x; x = x->next) {
		AT(x->due);
		AT(tx_deadline(x));
	}
	if (t->state == WARP_TURN_READY) {
		if (!t->alloc_tx)
			AT(t->refresh_at);
		for (const struct turn_perm *p = t->perms; p; p = p->next)
			if (p->refs && !p->tx)
				AT(p->next_at);
	}
	for (const struct turn_peer *p = t->peers; p; p = p->next) {
		if (t->state == WARP_TURN_READY && p->refs && p->channel && !p->tx)
			AT(p->chan_next);
		/* a peer added on a permission that is already decided: report it now */
		if (t->state == WARP_TURN_READY && p->refs && p->perm && !p->notified &&
		    (p->perm->state == OBJ_OK || p->perm->state == OBJ_FAILED))
			AT(0);
		if (!p->refs && !p->tx)
			AT(p->retire_until);
	}
#undef AT
	return next;
}

/* ------------------------------------------------------------------ outcomes */

static void log_error(struct warp_turn *t, const struct turn_tx *x, int code,
		      const struct warp_stun_msg *m, const char *what)
{
	char a[WARP_EP_STRLEN], reason[128] = "";
	const char *r = NULL;
	size_t rlen = 0;

	if (m && warp_stun_get_error(m, &code, &r, &rlen) == 0 && r) {
		size_t n = rlen < sizeof(reason) - 1 ? rlen : sizeof(reason) - 1;

		for (size_t i = 0; i < n; i++)
			reason[i] = r[i] >= 0x20 && r[i] < 0x7f ? r[i] : '?';
		reason[n] = '\0';
	}
	pr_warn("TURN %s %s via %s: %d %s (%s)%s%s%s", warp_stun_method_name(x->method), what,
		sa_str((struct sockaddr *)&t->info.server, a, sizeof(a)), code, reason,
		error_hint(code, x->method), code == 401 ? " for realm '" : "",
		code == 401 ? t->realm : "", code == 401 ? "'" : "");
}

static void refresh_schedule(struct warp_turn *t, uint32_t lifetime, uint64_t now)
{
	uint64_t life = (uint64_t)lifetime * S, ahead;

	t->info.lifetime_s = lifetime;
	t->expires = now + life;
	if (t->cfg.refresh_ms) {
		t->refresh_at = now + ms_ns(t->cfg.refresh_ms);
		return;
	}
	ahead = life > 120 * S ? 60 * S : life / 2;
	t->refresh_at = now + life - ahead;
}

static void allocate_ok(struct warp_turn *t, const struct warp_stun_msg *m, uint64_t now)
{
	struct sockaddr_storage relayed = { 0 };
	char a[WARP_EP_STRLEN], b[WARP_EP_STRLEN], c[WARP_EP_STRLEN];
	uint32_t lifetime = WARP_TURN_DEFAULT_LIFETIME_S;

	for (unsigned int i = 0; i < m->nattrs; i++) {
		struct sockaddr_storage ss;

		if (m->attrs[i].type == WARP_STUN_ATTR_XOR_RELAYED_ADDRESS &&
		    warp_stun_attr_addr(m, &m->attrs[i], &ss) == 0 &&
		    ss.ss_family == t->cfg.family) {
			relayed = ss;
			break;
		}
	}
	if (relayed.ss_family == AF_UNSPEC) {
		/* unusable; the server frees it when its lifetime ends */
		pr_warn("TURN Allocate via %s: no XOR-RELAYED-ADDRESS of the requested family",
			sa_str((struct sockaddr *)&t->info.server, a, sizeof(a)));
		fail(t, -WARP_EMISSING);
		return;
	}
	t->info.relayed = relayed;
	if (warp_stun_get_addr(m, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, &t->info.mapped) != 0)
		t->info.mapped.ss_family = AF_UNSPEC;
	warp_stun_get_u32(m, WARP_STUN_ATTR_LIFETIME, &lifetime);
	if (!lifetime)
		lifetime = WARP_TURN_DEFAULT_LIFETIME_S;
	refresh_schedule(t, lifetime, now);
	t->info.sha256 = t->sha256;
	if (t->release_pending) {
		t->state = WARP_TURN_READY;
		t->release_pending = false;
		warp_turn_release(t, now);
		return;
	}
	t->state = WARP_TURN_READY;
	pr_info("relay %s allocated via %s over %s (mapped %s, lifetime %u s%s)",
		sa_str((struct sockaddr *)&relayed, a, sizeof(a)),
		sa_str((struct sockaddr *)&t->info.server, b, sizeof(b)),
		t->cfg.transport == WARP_TURN_TCP ? "tcp" : "udp",
		sa_str((struct sockaddr *)&t->info.mapped, c, sizeof(c)), lifetime,
		t->sha256 ? ", SHA-256" : "");
	emit(t, WARP_TURN_EV_ALLOCATED, 0, NULL, 0);
	kick(t, now);
	notify_perms(t);
}

static int b64_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* RFC 8489 section 9.2: "obMatJos2" + base64 of the 24 security feature bits; the first bit
 * announces password algorithms. */
static bool nonce_has_pw_algs(const char *nonce, size_t len)
{
	uint32_t bits = 0;

	if (len < 13 || memcmp(nonce, NONCE_COOKIE, 9))
		return false;
	for (int i = 0; i < 4; i++) {
		int v = b64_val(nonce[9 + i]);

		if (v < 0)
			return false;
		bits = bits << 6 | (uint32_t)v;
	}
	return bits & 0x800000u;
}

/* Picks SHA-256 over MD5 from a PASSWORD-ALGORITHMS value; 0 when neither is listed. */
static uint16_t pick_pw_alg(const uint8_t *v, size_t len)
{
	struct warp_rd r = warp_rd_init(v, len);
	uint16_t best = 0;

	while (warp_rd_left(&r) >= 4) {
		uint16_t alg = warp_rd_u16(&r), plen = warp_rd_u16(&r);

		warp_rd_bytes(&r, (size_t)(plen + 3) & ~(size_t)3);
		if (r.err)
			return 0;
		if (alg == WARP_STUN_PW_SHA256)
			best = WARP_STUN_PW_SHA256;
		else if (alg == WARP_STUN_PW_MD5 && !best)
			best = WARP_STUN_PW_MD5;
	}
	return best;
}

/* Takes REALM, NONCE and the password algorithms from a 401/438 and derives the key.
 * Returns 0 or a negative error (missing attributes, downgrade, no credentials). */
static int learn_auth(struct warp_turn *t, const struct warp_stun_msg *m)
{
	const uint8_t *realm, *nonce, *algs = NULL;
	size_t rlen, nlen, alen = 0;
	bool cookie;
	uint16_t alg = 0;
	char a[WARP_EP_STRLEN];
	int n;

	if (!t->username) {
		pr_warn("TURN server %s wants credentials and none are configured",
			sa_str((struct sockaddr *)&t->info.server, a, sizeof(a)));
		return -EACCES;
	}
	if (warp_stun_get_bytes(m, WARP_STUN_ATTR_REALM, &realm, &rlen) ||
	    warp_stun_get_bytes(m, WARP_STUN_ATTR_NONCE, &nonce, &nlen) || !rlen || !nlen ||
	    rlen > WARP_STUN_MAX_TEXT || nlen > WARP_STUN_MAX_TEXT || memchr(realm, 0, rlen) ||
	    memchr(nonce, 0, nlen))
		return -EPROTO;
	cookie = nonce_has_pw_algs((const char *)nonce, nlen);
	if (cookie && !warp_stun_get_bytes(m, WARP_STUN_ATTR_PASSWORD_ALGORITHMS, &algs, &alen)) {
		alg = pick_pw_alg(algs, alen);
		if (!alg)
			return -EPROTO; /* nothing we support */
	}
	/* RFC 8489 section 9.2.5: the algorithm list must not change under us (downgrade) */
	if (t->have_auth && t->pw_alg &&
	    (!alg || alen != t->pw_algs_len || memcmp(algs, t->pw_algs, alen))) {
		pr_warn("TURN server %s changed its password algorithms: refusing a downgrade",
			sa_str((struct sockaddr *)&t->info.server, a, sizeof(a)));
		return -EPROTO;
	}
	if (t->realm_hint && (strlen(t->realm_hint) != rlen || memcmp(t->realm_hint, realm, rlen)))
		pr_warn("TURN server %s uses realm '%.*s', expected '%s'",
			sa_str((struct sockaddr *)&t->info.server, a, sizeof(a)), (int)rlen,
			(const char *)realm, t->realm_hint);
	memcpy(t->realm, realm, rlen);
	t->realm[rlen] = '\0';
	memcpy(t->nonce, nonce, nlen);
	t->nonce[nlen] = '\0';
	if (alg && !t->pw_alg) {
		t->pw_algs = malloc(alen);
		if (!t->pw_algs)
			return -ENOMEM;
		memcpy(t->pw_algs, algs, alen);
		t->pw_algs_len = alen;
	}
	t->pw_alg = alg;
	t->sha256 = cookie; /* an RFC 8489 server: MESSAGE-INTEGRITY-SHA256 */
	n = warp_stun_long_term_key(
		t->username, t->realm, t->password,
		alg == WARP_STUN_PW_SHA256 ? WARP_STUN_PW_SHA256 : WARP_STUN_PW_MD5, t->key);
	if (n < 0)
		return n;
	t->keylen = (size_t)n;
	t->have_auth = true;
	return 0;
}

static void tx_failed(struct warp_turn *t, struct turn_tx *x, int err, uint64_t now);

/* 401/438: learn the new nonce and send the request again.  Returns true when resent. */
static bool retry_auth(struct warp_turn *t, struct turn_tx *x, int code,
		       const struct warp_stun_msg *m, uint64_t now)
{
	bool had = t->have_auth;
	char old_nonce[sizeof(t->nonce)];
	int err;

	if (x->retries >= MAX_RETRIES)
		return false;
	memcpy(old_nonce, t->nonce, sizeof(old_nonce));
	if (code == WARP_STUN_ERR_UNAUTHORIZED && x->signed_req) {
		/* Credentials were sent: another 401 means they are wrong, unless the server
		 * moved to a new nonce or realm in the meantime. */
		const uint8_t *nonce;
		size_t nlen;

		if (warp_stun_get_bytes(m, WARP_STUN_ATTR_NONCE, &nonce, &nlen) ||
		    (nlen == strlen(old_nonce) && !memcmp(nonce, old_nonce, nlen)))
			return false;
	}
	err = learn_auth(t, m);
	if (err) {
		tx_failed(t, x, err, now);
		return true;
	}
	pr_debug("TURN %s: %s, retrying with %s nonce", warp_stun_method_name(x->method),
		 code == WARP_STUN_ERR_STALE_NONCE ? "stale nonce" : "challenge",
		 had ? "a new" : "the server's");
	err = start(t, x->kind, x->perm, x->peer, (uint8_t)(x->retries + 1), now);
	if (err)
		tx_failed(t, x, err, now);
	return true;
}

/* A transaction ended without success (error response, timeout, local error). */
static void tx_failed(struct warp_turn *t, struct turn_tx *x, int err, uint64_t now)
{
	char a[WARP_EP_STRLEN];

	switch (x->kind) {
	case TX_ALLOCATE:
		if (t->release_pending) {
			t->release_pending = false;
			closed(t, 0);
		} else {
			fail(t, err);
		}
		break;
	case TX_REFRESH:
		if (err == -ETIMEDOUT && now + ms_ns(t->cfg.retry_ms) < t->expires) {
			pr_debug("TURN refresh timed out; retrying");
			t->refresh_at = now + ms_ns(t->cfg.retry_ms);
		} else {
			fail(t, err);
		}
		break;
	case TX_DEALLOC:
		/* 437: nothing left to delete, which is what we wanted */
		closed(t, err == -ENOENT ? 0 : err);
		break;
	case TX_PERM: {
		struct turn_perm *p = x->perm;

		if (!p)
			break;
		if (err == -ETIMEDOUT && p->state == OBJ_OK &&
		    now + ms_ns(t->cfg.retry_ms) < p->expires) {
			p->next_at = now + ms_ns(t->cfg.retry_ms);
			break;
		}
		pr_warn("TURN permission for %s: %s",
			warp_ep_addr_str((struct sockaddr *)&p->ip, a, sizeof(a)),
			warp_strerror(err));
		perm_set_state(t, p, OBJ_FAILED, err);
		/* a refusal is final; a timeout is tried again later */
		p->next_at =
			err == -ETIMEDOUT ? now + ms_ns(t->cfg.perm_refresh_ms) : WARP_TURN_NEVER;
		notify_perms(t);
		break;
	}
	case TX_CHAN: {
		struct turn_peer *p = x->peer;
		struct sockaddr_storage addr;
		uint16_t ch;

		if (!p)
			break;
		if (err == -ETIMEDOUT && p->chan_state == OBJ_OK &&
		    now + ms_ns(t->cfg.retry_ms) < p->chan_expires) {
			p->chan_next = now + ms_ns(t->cfg.retry_ms);
			break;
		}
		pr_warn("TURN channel %#x for %s: %s (Send indications instead)", p->channel,
			sa_str((struct sockaddr *)&p->addr, a, sizeof(a)), warp_strerror(err));
		p->chan_state = OBJ_FAILED;
		p->chan_next = WARP_TURN_NEVER;
		addr = p->addr;
		ch = p->channel;
		if (p->refs && t->state == WARP_TURN_READY)
			emit(t, WARP_TURN_EV_CHANNEL, err, (struct sockaddr *)&addr, ch);
		break;
	}
	}
}

static void tx_succeeded(struct warp_turn *t, struct turn_tx *x, const struct warp_stun_msg *m,
			 uint64_t now)
{
	switch (x->kind) {
	case TX_ALLOCATE:
		allocate_ok(t, m, now);
		break;
	case TX_REFRESH: {
		uint32_t lifetime =
			t->cfg.lifetime_s ? t->cfg.lifetime_s : WARP_TURN_DEFAULT_LIFETIME_S;

		warp_stun_get_u32(m, WARP_STUN_ATTR_LIFETIME, &lifetime);
		if (!lifetime) {
			fail(t, -ENOENT);
			break;
		}
		refresh_schedule(t, lifetime, now);
		pr_debug("TURN allocation refreshed (%u s)", lifetime);
		break;
	}
	case TX_DEALLOC:
		closed(t, 0);
		break;
	case TX_PERM: {
		struct turn_perm *p = x->perm;

		if (!p)
			break;
		p->expires = now + WARP_TURN_PERM_LIFETIME_S * S;
		p->next_at = now + ms_ns(t->cfg.perm_refresh_ms);
		perm_set_state(t, p, OBJ_OK, 0);
		notify_perms(t);
		break;
	}
	case TX_CHAN: {
		struct turn_peer *p = x->peer;
		struct sockaddr_storage addr;
		bool first;

		if (!p)
			break;
		first = p->chan_state != OBJ_OK;
		p->chan_state = OBJ_OK;
		p->chan_expires = now + WARP_TURN_CHAN_LIFETIME_S * S;
		p->chan_next = now + ms_ns(t->cfg.chan_refresh_ms);
		/* ChannelBind refreshes the permission of the peer's IP too */
		if (p->perm && p->perm->state == OBJ_OK)
			p->perm->expires = now + WARP_TURN_PERM_LIFETIME_S * S;
		addr = p->addr;
		if (first && p->refs && t->state == WARP_TURN_READY)
			emit(t, WARP_TURN_EV_CHANNEL, 0, (struct sockaddr *)&addr, p->channel);
		break;
	}
	}
}

/* Unsigned error responses are believed only for these (RFC 8489 section 9.2.5 plus 437,
 * which coturn sends unsigned). */
static bool unsigned_error_ok(int code)
{
	return code == WARP_STUN_ERR_BAD_REQUEST || code == WARP_STUN_ERR_UNAUTHORIZED ||
	       code == WARP_STUN_ERR_UNKNOWN_ATTRIBUTE ||
	       code == WARP_STUN_ERR_ALLOCATION_MISMATCH || code == WARP_STUN_ERR_STALE_NONCE;
}

static int response(struct warp_turn *t, const struct warp_stun_msg *m, uint64_t now)
{
	struct turn_tx *x;
	int code = 0;

	for (x = t->txs; x; x = x->next)
		if (!memcmp(x->tid, m->tid, WARP_STUN_TID_LEN))
			break;
	if (!x || !x->sent || x->method != m->method)
		return 0;
	if (m->cls == WARP_STUN_ERROR && warp_stun_get_error(m, &code, NULL, NULL) != 0)
		code = 0;
	if (x->signed_req) {
		int ierr = warp_stun_check_integrity(m, x->key, x->keylen);
		bool unsigned_ok = ierr == -WARP_EMISSING && m->cls == WARP_STUN_ERROR &&
				   unsigned_error_ok(code);

		if (ierr && !unsigned_ok) {
			pr_debug("TURN %s %s failed its integrity check (%s): ignored",
				 warp_stun_method_name(m->method), warp_stun_class_name(m->cls),
				 warp_strerror(ierr));
			return 0;
		}
	}
	tx_unlink(t, x);
	if (m->cls == WARP_STUN_ERROR && !code) {
		tx_failed(t, x, -EPROTO, now);
	} else if (m->n_unknown) {
		pr_warn("TURN %s response with unknown comprehension-required attribute %#x",
			warp_stun_method_name(m->method), m->unknown[0]);
		tx_failed(t, x, -EPROTO, now);
	} else if (m->cls == WARP_STUN_SUCCESS) {
		tx_succeeded(t, x, m, now);
	} else if (code == WARP_STUN_ERR_UNAUTHORIZED || code == WARP_STUN_ERR_STALE_NONCE) {
		if (!retry_auth(t, x, code, m, now)) {
			log_error(t, x, code, m, "failed");
			tx_failed(t, x, warp_turn_map_error(code, x->method), now);
		}
	} else {
		if (!(x->kind == TX_DEALLOC && code == WARP_STUN_ERR_ALLOCATION_MISMATCH))
			log_error(t, x, code, m, "failed");
		tx_failed(t, x, warp_turn_map_error(code, x->method), now);
	}
	tx_free(x);
	return 1;
}

static bool deliverable(const struct warp_turn *t)
{
	return t->state == WARP_TURN_READY || t->state == WARP_TURN_RELEASING;
}

static int data_indication(struct warp_turn *t, uint8_t *buf, const struct warp_stun_msg *m)
{
	struct sockaddr_storage peer;
	const uint8_t *data;
	size_t len;

	if (m->method != WARP_STUN_DATA || !deliverable(t))
		return 0;
	if (warp_stun_get_addr(m, WARP_STUN_ATTR_XOR_PEER_ADDRESS, &peer) ||
	    warp_stun_get_bytes(m, WARP_STUN_ATTR_DATA, &data, &len))
		return -WARP_EMISSING;
	if (t->ops.data)
		t->ops.data(t, (struct sockaddr *)&peer, buf + (data - m->buf), len, t->user);
	return 1;
}

int warp_turn_handle_input(struct warp_turn *t, uint8_t *buf, size_t len,
			   const struct sockaddr *from, uint64_t now_ns)
{
	struct warp_stun_msg m;
	int err;

	if (!buf || len < 4)
		return -WARP_ETRUNCATED;
	if (from && !warp_ep_equal(from, (struct sockaddr *)&t->info.server))
		return 0;
	if ((buf[0] & 0xc0) == 0x40) {
		const uint8_t *data;
		size_t dlen;
		uint16_t ch;
		struct turn_peer *p;
		struct sockaddr_storage peer;

		err = warp_stun_channel_data_decode(buf, len, &ch, &data, &dlen);
		if (err)
			return err;
		p = find_channel(t, ch);
		if (!p || !deliverable(t))
			return 0;
		peer = p->addr;
		if (t->ops.data)
			t->ops.data(t, (struct sockaddr *)&peer, buf + 4, dlen, t->user);
		return 1;
	}
	err = warp_stun_decode(&m, buf, len);
	if (err)
		return err;
	switch (m.cls) {
	case WARP_STUN_SUCCESS:
	case WARP_STUN_ERROR:
		err = response(t, &m, now_ns);
		if (err > 0)
			kick(t, now_ns);
		return err;
	case WARP_STUN_INDICATION:
		return data_indication(t, buf, &m);
	default:
		return 0; /* the server sends no requests to clients */
	}
}

int warp_turn_handle_stream(struct warp_turn *t, const uint8_t *buf, size_t len, uint64_t now_ns)
{
	if (!t->rx) {
		t->rx = malloc(WARP_TURN_FRAME_MAX);
		if (!t->rx)
			return -ENOMEM;
	}
	while (len) {
		size_t n = WARP_TURN_FRAME_MAX - t->rx_len;
		int fl;

		if (n > len)
			n = len;
		memcpy(t->rx + t->rx_len, buf, n);
		t->rx_len += n;
		buf += n;
		len -= n;
		while ((fl = warp_stun_frame_len(t->rx, t->rx_len)) > 0 &&
		       (size_t)fl <= t->rx_len) {
			int err = warp_turn_handle_input(t, t->rx, (size_t)fl, NULL, now_ns);

			if (err < 0)
				pr_debug("TURN frame dropped: %s", warp_strerror(err));
			memmove(t->rx, t->rx + fl, t->rx_len - (size_t)fl);
			t->rx_len -= (size_t)fl;
		}
		if (fl < 0 || (size_t)fl > WARP_TURN_FRAME_MAX) {
			t->rx_len = 0;
			pr_warn("TURN stream from the server lost its framing");
			warp_turn_transport_lost(t, -EPROTO);
			return -EPROTO;
		}
	}
	return 0;
}

void warp_turn_handle_timeout(struct warp_turn *t, uint64_t now_ns)
{
	sweep_peers(t, now_ns);
	for (;;) {
		struct turn_tx *x;

		for (x = t->txs; x; x = x->next)
			if (tx_deadline(x) <= now_ns)
				break;
		if (!x)
			break;
		tx_unlink(t, x);
		pr_debug("TURN %s timed out after %u transmissions",
			 warp_stun_method_name(x->method), x->sent);
		tx_failed(t, x, -ETIMEDOUT, now_ns);
		tx_free(x);
	}
	kick(t, now_ns);
	notify_perms(t);
}
