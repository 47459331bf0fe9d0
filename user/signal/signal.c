// SPDX-License-Identifier: MIT
/*
 * Signalling service: broker pool, send fan-out, receive checks, dispatch, request/reply.
 */
#define LOG_COMPONENT "signal"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/bytes.h"
#include "core/log.h"
#include "core/util.h"
#include "signal/signal.h"

#define SWEEP_MS       5000
#define SENDER_BUCKETS 1024
#define SEEN_SLOTS     256
#define SEEN_HASH_LEN  16

struct conn {
	struct warp_signal *s;
	struct warp_broker *b;
	bool home;
	uint64_t last_used; /* warp_time_ms() of the last publish (extra connections) */
};

struct type_handler {
	warp_signal_handler fn;
	void *user;
};

struct attempt_handler {
	uint8_t id[WARP_SIG_ID_LEN];
	warp_signal_handler fn;
	void *user;
};

struct request {
	struct request *next;
	struct warp_signal *s;
	uint8_t id[WARP_SIG_ID_LEN];
	uint8_t peer[WARP_PUBKEY_LEN];
	struct warp_timer *timer;
	warp_signal_reply_cb cb;
	void *user;
};

/* Token bucket in thousandths of a token, so integer arithmetic keeps sub-token refills. */
struct bucket {
	uint64_t last_ms;
	uint64_t milli;
};

struct sender_bucket {
	uint8_t key[8];
	struct bucket b;
};

struct warp_signal {
	struct warp_loop *loop;
	const struct warp_identity *id;
	struct warp_signal_cfg cfg;
	struct warp_broker_addr *home;
	size_t nhome;
	char topic[WARP_SIG_TOPIC_LEN + 1];

	struct conn **conns;
	size_t nconns;
	struct warp_timer *sweep;

	struct type_handler types[WARP_SIG_TYPE_MAX + 1];
	struct attempt_handler *attempts;
	size_t nattempts;
	struct request *requests;

	struct warp_sig_replay *replay;
	/* Hashes of recently accepted payloads: the copy from the second broker is the same
	 * ciphertext and is dropped without paying for ECDH and ECDSA again. */
	uint8_t seen[SEEN_SLOTS][SEEN_HASH_LEN];
	unsigned int seen_next;
	struct bucket global;
	struct bucket newconn; /* publish-only connections opened on peers' say-so */
	struct sender_bucket *senders;
	uint8_t bucket_key[crypto_shorthash_KEYBYTES];

	struct warp_signal_stats stats;
	bool freeing;
};

/* ---- helpers ---- */

static bool bucket_take(struct bucket *b, uint32_t rate, uint32_t burst, uint64_t now)
{
	uint64_t cap = (uint64_t)burst * 1000;

	if (b->last_ms == 0) {
		b->milli = cap;
	} else if (now > b->last_ms) {
		b->milli += (now - b->last_ms) * rate;
		if (b->milli > cap)
			b->milli = cap;
	}
	b->last_ms = now;
	if (b->milli < 1000)
		return false;
	b->milli -= 1000;
	return true;
}

static bool sender_allowed(struct warp_signal *s, const uint8_t pub[WARP_PUBKEY_LEN])
{
	uint8_t h[crypto_shorthash_BYTES];
	struct sender_bucket *sb;

	crypto_shorthash(h, pub, WARP_PUBKEY_LEN, s->bucket_key);
	sb = &s->senders[warp_get_u64(h) % SENDER_BUCKETS];
	/* Direct-mapped: a colliding sender takes the slot over with a full bucket.  That can
	 * only help the evicted sender; the global bucket bounds what many keys can do. */
	if (memcmp(sb->key, h, sizeof(sb->key))) {
		memcpy(sb->key, h, sizeof(sb->key));
		sb->b.last_ms = 0;
	}
	return bucket_take(&sb->b, s->cfg.rx_rate_sender, s->cfg.rx_burst_sender, warp_time_ms());
}

uint64_t warp_signal_now(const struct warp_signal *s)
{
	return s->cfg.clock ? s->cfg.clock(s->cfg.clock_user) : warp_wall_ms();
}

static bool conn_up(const struct conn *c)
{
	enum warp_broker_state st = warp_broker_get_state(c->b);

	return st == WARP_BROKER_CONNECTED || st == WARP_BROKER_READY;
}

static struct conn *find_conn(struct warp_signal *s, const struct warp_broker_addr *a)
{
	for (size_t i = 0; i < s->nconns; i++)
		if (warp_broker_addr_equal(warp_broker_get_addr(s->conns[i]->b), a))
			return s->conns[i];
	return NULL;
}

/* ---- broker callbacks ---- */

static void conn_message(struct warp_broker *b, const char *topic, const void *payload, size_t len,
			 void *user)
{
	struct conn *c = user;

	if (!c->home || strcmp(topic, c->s->topic))
		return;
	warp_signal_input(c->s, payload, len);
}

static void conn_state(struct warp_broker *b, enum warp_broker_state st, int err, void *user)
{
	struct conn *c = user;
	struct warp_signal *s = c->s;

	if (c->home && s->cfg.on_state && !s->freeing)
		s->cfg.on_state(s, warp_broker_get_addr(b), st, s->cfg.user);
}

static const struct warp_broker_ops conn_ops = {
	.on_message = conn_message,
	.on_state = conn_state,
};

static struct conn *add_conn(struct warp_signal *s, const struct warp_broker_addr *a, bool home)
{
	struct conn *c = calloc(1, sizeof(*c)), **v;

	if (!c)
		return NULL;
	v = realloc(s->conns, (s->nconns + 1) * sizeof(*v));
	if (!v)
		goto fail;
	s->conns = v;
	c->s = s;
	c->home = home;
	c->last_used = warp_time_ms();
	c->b = warp_broker_new(s->loop, a, &s->cfg.broker, &conn_ops, c);
	if (!c->b)
		goto fail;
	if (home && warp_broker_subscribe(c->b, s->topic))
		goto fail;
	s->conns[s->nconns++] = c;
	warp_broker_start(c->b);
	return c;
fail:
	warp_broker_free(c->b);
	free(c);
	return NULL;
}

static void sweep(struct warp_timer *t, void *user)
{
	struct warp_signal *s = user;
	uint64_t now = warp_time_ms();
	size_t i = 0;

	while (i < s->nconns) {
		struct conn *c = s->conns[i];

		if (!c->home && now - c->last_used > s->cfg.extra_idle_ms) {
			char name[WARP_BROKER_HOST_MAX + 10];

			warp_broker_addr_format(warp_broker_get_addr(c->b), name, sizeof(name));
			pr_debug("closing idle publish-only connection to %s", name);
			warp_broker_free(c->b);
			free(c);
			s->conns[i] = s->conns[--s->nconns];
			continue;
		}
		i++;
	}
	warp_timer_arm_ms(t, SWEEP_MS);
}

/* ---- lifecycle ---- */

struct warp_signal *warp_signal_new(struct warp_loop *loop, const struct warp_identity *id,
				    const struct warp_signal_cfg *cfg)
{
	struct warp_signal *s;
	int err = ENOMEM;

	if (!loop || !id || !cfg || !cfg->brokers || !cfg->nbrokers) {
		errno = EINVAL;
		return NULL;
	}
	if (warp_crypto_init()) {
		errno = EIO;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->loop = loop;
	s->id = id;
	s->cfg = *cfg;
	if (!s->cfg.fanout)
		s->cfg.fanout = 2;
	if (!s->cfg.skew_ms)
		s->cfg.skew_ms = WARP_SIG_SKEW_MS;
	if (!s->cfg.rx_rate_sender)
		s->cfg.rx_rate_sender = 20;
	if (!s->cfg.rx_burst_sender)
		s->cfg.rx_burst_sender = 40;
	if (!s->cfg.rx_rate_global)
		s->cfg.rx_rate_global = 200;
	if (!s->cfg.rx_burst_global)
		s->cfg.rx_burst_global = 400;
	if (!s->cfg.extra_idle_ms)
		s->cfg.extra_idle_ms = 60000;
	if (!s->cfg.max_extra)
		s->cfg.max_extra = 16;
	warp_sig_topic(warp_identity_pubkey(id), s->topic, sizeof(s->topic));
	warp_random(s->bucket_key, sizeof(s->bucket_key));

	s->home = calloc(cfg->nbrokers, sizeof(*s->home));
	s->senders = calloc(SENDER_BUCKETS, sizeof(*s->senders));
	s->replay = warp_sig_replay_new(0);
	s->sweep = warp_timer_new(loop, sweep, s);
	if (!s->home || !s->senders || !s->replay || !s->sweep)
		goto fail;
	for (size_t i = 0; i < cfg->nbrokers; i++) {
		const struct warp_broker_addr *a = &cfg->brokers[i];
		bool dup = false;

		for (size_t j = 0; j < s->nhome; j++)
			dup |= warp_broker_addr_equal(&s->home[j], a);
		if (dup)
			continue;
		s->home[s->nhome++] = *a;
		if (!add_conn(s, a, true)) {
			err = errno ? errno : ENOMEM;
			goto fail;
		}
	}
	s->cfg.brokers = s->home;
	s->cfg.nbrokers = s->nhome;
	warp_timer_arm_ms(s->sweep, SWEEP_MS);
	pr_debug("listening on %s via %zu brokers", s->topic, s->nhome);
	return s;
fail:
	warp_signal_free(s);
	errno = err;
	return NULL;
}

void warp_signal_free(struct warp_signal *s)
{
	struct request *r;

	if (!s || s->freeing)
		return;
	s->freeing = true;
	while ((r = s->requests)) {
		s->requests = r->next;
		warp_timer_free(r->timer);
		r->cb(s, -ECANCELED, NULL, r->user);
		free(r);
	}
	for (size_t i = 0; i < s->nconns; i++) {
		warp_broker_free(s->conns[i]->b);
		free(s->conns[i]);
	}
	free(s->conns);
	warp_timer_free(s->sweep);
	warp_sig_replay_free(s->replay);
	free(s->attempts);
	free(s->senders);
	free(s->home);
	free(s);
}

const char *warp_signal_topic(const struct warp_signal *s)
{
	return s->topic;
}

size_t warp_signal_brokers(const struct warp_signal *s, const struct warp_broker_addr **out)
{
	*out = s->home;
	return s->nhome;
}

unsigned int warp_signal_ready_count(const struct warp_signal *s)
{
	unsigned int n = 0;

	for (size_t i = 0; i < s->nconns; i++)
		n += s->conns[i]->home &&
		     warp_broker_get_state(s->conns[i]->b) == WARP_BROKER_READY;
	return n;
}

void warp_signal_get_stats(const struct warp_signal *s, struct warp_signal_stats *st)
{
	*st = s->stats;
}

/* ---- sending ---- */

int warp_signal_msg_init(struct warp_signal *s, struct warp_sig_msg *m, unsigned int type,
			 const uint8_t peer[WARP_PUBKEY_LEN])
{
	uint64_t now = warp_signal_now(s);

	if (!now)
		return -WARP_ECLOCK;
	warp_sig_msg_init(m, type, peer, now);
	return 0;
}

/* Up to fanout targets among the peer's brokers: connected ones first (in the peer's order),
 * then others, which get a publish-only connection and hold the message until it is up. */
static size_t pick_targets(struct warp_signal *s, const struct warp_broker_addr *peer, size_t npeer,
			   bool allow_new, struct conn **out)
{
	size_t n = 0, nextra = 0;

	for (size_t i = 0; i < s->nconns; i++)
		nextra += !s->conns[i]->home;
	for (size_t i = 0; i < npeer && n < s->cfg.fanout; i++) {
		struct conn *c = find_conn(s, &peer[i]);
		bool dup = false;

		for (size_t j = 0; j < n; j++)
			dup |= out[j] == c;
		if (c && !dup && conn_up(c))
			out[n++] = c;
	}
	for (size_t i = 0; i < npeer && n < s->cfg.fanout; i++) {
		struct conn *c = find_conn(s, &peer[i]);
		bool dup = false;

		if (!peer[i].host[0] || !peer[i].port)
			continue;
		for (size_t j = 0; j < n; j++)
			dup |= out[j] == c;
		if (c && (dup || conn_up(c)))
			continue;
		if (!c) {
			/* Broker names come from peers: bound how many connections they make us
			 * open, and how fast. */
			if (!allow_new || nextra >= s->cfg.max_extra ||
			    !bucket_take(&s->newconn, 1, s->cfg.max_extra, warp_time_ms()))
				continue;
			c = add_conn(s, &peer[i], false);
			if (!c)
				continue;
			nextra++;
		}
		out[n++] = c;
	}
	return n;
}

static int send_msg(struct warp_signal *s, struct warp_sig_msg *m,
		    const struct warp_broker_addr *peer_brokers, size_t npeer, bool allow_new)
{
	struct conn *targets[16];
	char topic[WARP_SIG_TOPIC_LEN + 1];
	uint64_t now = warp_signal_now(s), left, mono;
	uint8_t *buf = NULL;
	size_t nt;
	int n, err, sent = 0;

	if (s->freeing)
		return -ECANCELED;
	if (!now)
		return -WARP_ECLOCK;
	if (!peer_brokers || !npeer)
		return -WARP_ENOPATH;
	m->nbrokers = 0;
	for (size_t i = 0; i < s->nhome && i < WARP_SIG_MAX_BROKERS; i++) {
		struct warp_sig_broker *br = &m->brokers[m->nbrokers++];

		memcpy(br->host, s->home[i].host, sizeof(br->host));
		br->port = s->home[i].port;
	}
	buf = malloc(WARP_SIG_MAX_PAYLOAD);
	if (!buf)
		return -ENOMEM;
	n = warp_sig_encode(s->id, m, buf, WARP_SIG_MAX_PAYLOAD);
	if (n < 0) {
		err = n;
		goto out;
	}
	/* Brokers hold it (offline queue) no longer than the receiver would accept it. */
	if (m->created_ms + m->ttl_ms <= now) {
		err = -WARP_ESTALE;
		goto out;
	}
	left = m->created_ms + m->ttl_ms - now;
	mono = warp_time_ms() + left;
	warp_sig_topic(m->recipient, topic, sizeof(topic));
	if (s->cfg.fanout > WARP_ARRAY_SIZE(targets))
		s->cfg.fanout = WARP_ARRAY_SIZE(targets);
	nt = pick_targets(s, peer_brokers, npeer, allow_new, targets);
	err = -WARP_ENOPATH;
	for (size_t i = 0; i < nt; i++) {
		int e = warp_broker_publish(targets[i]->b, topic, buf, (size_t)n, mono);

		targets[i]->last_used = warp_time_ms();
		if (e == 0)
			sent++;
		else
			err = e;
	}
	if (sent) {
		s->stats.tx++;
		s->stats.tx_publishes += (uint64_t)sent;
		err = sent;
		pr_debug("sent %s to %zu/%zu brokers", warp_sig_type_name(m->type), (size_t)sent,
			 npeer);
	}
out:
	free(buf);
	return err;
}

int warp_signal_send(struct warp_signal *s, struct warp_sig_msg *m,
		     const struct warp_broker_addr *peer_brokers, size_t npeer)
{
	return send_msg(s, m, peer_brokers, npeer, true);
}

static size_t brokers_of(const struct warp_sig_msg *m, struct warp_broker_addr *out)
{
	size_t n = 0;

	for (size_t i = 0; i < m->nbrokers && i < WARP_SIG_MAX_BROKERS; i++) {
		memcpy(out[n].host, m->brokers[i].host, sizeof(out[n].host));
		out[n].port = m->brokers[i].port;
		n++;
	}
	return n;
}

static int reply_msg(struct warp_signal *s, const struct warp_sig_msg *req,
		     struct warp_sig_msg *reply, bool allow_new)
{
	struct warp_broker_addr peer[WARP_SIG_MAX_BROKERS];
	size_t n = brokers_of(req, peer);

	memcpy(reply->recipient, req->sender, WARP_PUBKEY_LEN);
	memcpy(reply->reply_to, req->id, WARP_SIG_ID_LEN);
	if (warp_sig_id_is_zero(reply->attempt))
		memcpy(reply->attempt, req->attempt, WARP_SIG_ID_LEN);
	/* A sender that named no broker probably shares ours. */
	if (!n)
		return send_msg(s, reply, s->home, s->nhome, allow_new);
	return send_msg(s, reply, peer, n, allow_new);
}

int warp_signal_reply(struct warp_signal *s, const struct warp_sig_msg *req,
		      struct warp_sig_msg *reply)
{
	return reply_msg(s, req, reply, true);
}

static int error_reply(struct warp_signal *s, const struct warp_sig_msg *req, uint16_t code,
		       const char *text, bool allow_new)
{
	struct warp_sig_msg *m = malloc(sizeof(*m));
	int err;

	if (!m)
		return -ENOMEM;
	err = warp_signal_msg_init(s, m, WARP_SIG_ERROR, req->sender);
	if (err)
		goto out;
	m->body.present |= WARP_SIGF_CODE;
	m->body.code = code;
	if (text) {
		m->body.present |= WARP_SIGF_TEXT;
		snprintf(m->body.text, sizeof(m->body.text), "%s", text);
	}
	err = reply_msg(s, req, m, allow_new);
out:
	free(m);
	return err;
}

int warp_signal_reply_error(struct warp_signal *s, const struct warp_sig_msg *req, uint16_t code,
			    const char *text)
{
	return error_reply(s, req, code, text, true);
}

/* ---- request/reply ---- */

static struct request *take_request(struct warp_signal *s, const uint8_t id[WARP_SIG_ID_LEN],
				    const uint8_t *peer)
{
	for (struct request **pp = &s->requests; *pp; pp = &(*pp)->next) {
		struct request *r = *pp;

		if (memcmp(r->id, id, WARP_SIG_ID_LEN))
			continue;
		if (peer && memcmp(r->peer, peer, WARP_PUBKEY_LEN))
			return NULL;
		*pp = r->next;
		return r;
	}
	return NULL;
}

static void request_timeout(struct warp_timer *t, void *user)
{
	struct request *r = user;
	struct warp_signal *s = r->s;

	if (take_request(s, r->id, NULL) != r)
		return;
	warp_timer_free(r->timer);
	r->cb(s, -ETIMEDOUT, NULL, r->user);
	free(r);
}

int warp_signal_request(struct warp_signal *s, struct warp_sig_msg *m,
			const struct warp_broker_addr *peer_brokers, size_t npeer,
			uint32_t timeout_ms, warp_signal_reply_cb cb, void *user)
{
	struct request *r;
	int n;

	if (!cb)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->timer = warp_timer_new(s->loop, request_timeout, r);
	if (!r->timer) {
		free(r);
		return -ENOMEM;
	}
	n = warp_signal_send(s, m, peer_brokers, npeer);
	if (n < 0) {
		warp_timer_free(r->timer);
		free(r);
		return n;
	}
	r->s = s;
	memcpy(r->id, m->id, WARP_SIG_ID_LEN);
	memcpy(r->peer, m->recipient, WARP_PUBKEY_LEN);
	r->cb = cb;
	r->user = user;
	r->next = s->requests;
	s->requests = r;
	warp_timer_arm_ms(r->timer, timeout_ms ? timeout_ms : m->ttl_ms);
	return n;
}

int warp_signal_request_cancel(struct warp_signal *s, const uint8_t id[WARP_SIG_ID_LEN])
{
	struct request *r = take_request(s, id, NULL);

	if (!r)
		return -ENOENT;
	warp_timer_free(r->timer);
	r->cb(s, -ECANCELED, NULL, r->user);
	free(r);
	return 0;
}

/* ---- handlers ---- */

int warp_signal_on(struct warp_signal *s, unsigned int type, warp_signal_handler fn, void *user)
{
	if (type == 0 || type > WARP_SIG_TYPE_MAX)
		return -EINVAL;
	s->types[type].fn = fn;
	s->types[type].user = user;
	return 0;
}

static struct attempt_handler *find_attempt(struct warp_signal *s,
					    const uint8_t id[WARP_SIG_ID_LEN])
{
	for (size_t i = 0; i < s->nattempts; i++)
		if (!memcmp(s->attempts[i].id, id, WARP_SIG_ID_LEN))
			return &s->attempts[i];
	return NULL;
}

int warp_signal_on_attempt(struct warp_signal *s, const uint8_t attempt[WARP_SIG_ID_LEN],
			   warp_signal_handler fn, void *user)
{
	struct attempt_handler *a, *v;

	if (!fn || warp_sig_id_is_zero(attempt))
		return -EINVAL;
	a = find_attempt(s, attempt);
	if (!a) {
		v = realloc(s->attempts, (s->nattempts + 1) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->attempts = v;
		a = &s->attempts[s->nattempts++];
		memcpy(a->id, attempt, WARP_SIG_ID_LEN);
	}
	a->fn = fn;
	a->user = user;
	return 0;
}

int warp_signal_off_attempt(struct warp_signal *s, const uint8_t attempt[WARP_SIG_ID_LEN])
{
	struct attempt_handler *a = find_attempt(s, attempt);

	if (!a)
		return -ENOENT;
	*a = s->attempts[--s->nattempts];
	return 0;
}

/* ---- receiving ---- */

static void dispatch(struct warp_signal *s, const struct warp_sig_msg *m)
{
	struct attempt_handler *a;
	warp_signal_handler fn = NULL;
	void *user = NULL;

	if (!warp_sig_id_is_zero(m->reply_to)) {
		struct request *r = take_request(s, m->reply_to, m->sender);

		if (r) {
			warp_timer_free(r->timer);
			r->cb(s, 0, m, r->user);
			free(r);
			return;
		}
	}
	if (!warp_sig_id_is_zero(m->attempt) && (a = find_attempt(s, m->attempt))) {
		fn = a->fn;
		user = a->user;
	} else if (s->types[m->type].fn) {
		fn = s->types[m->type].fn;
		user = s->types[m->type].user;
	}
	if (fn) {
		fn(s, m, user);
		return;
	}
	s->stats.rx_unhandled++;
	pr_debug("no handler for %s", warp_sig_type_name(m->type));
	/* Automatic answers go only through brokers we are already connected to: anyone
	 * can make up a key and a list of brokers. */
	if (warp_sig_is_request(m->type))
		error_reply(s, m, WARP_SIG_ERR_UNSUPPORTED, NULL, false);
}

int warp_signal_input(struct warp_signal *s, const void *payload, size_t len)
{
	struct warp_sig_msg *m = NULL;
	uint8_t hash[SEEN_HASH_LEN];
	uint64_t now;
	int err;

	if (s->freeing)
		return -ECANCELED;
	crypto_generichash(hash, sizeof(hash), payload, len, NULL, 0);
	for (unsigned int i = 0; i < SEEN_SLOTS; i++) {
		if (!memcmp(s->seen[i], hash, sizeof(hash))) {
			s->stats.rx_duplicate++;
			return -WARP_EREPLAY;
		}
	}
	/* Before any public-key work: decryption is what a flood would make us pay for. */
	if (!bucket_take(&s->global, s->cfg.rx_rate_global, s->cfg.rx_burst_global,
			 warp_time_ms())) {
		s->stats.rx_ratelimited++;
		return -WARP_ERATELIMIT;
	}
	now = warp_signal_now(s);
	if (!now)
		return -WARP_ECLOCK;
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	err = warp_sig_decode(s->id, payload, len, now, s->cfg.skew_ms, m);
	if (err) {
		if (err == -WARP_ESTALE)
			s->stats.rx_stale++;
		else
			s->stats.rx_invalid++;
		pr_debug("dropped a %zu-byte message: %s", len, warp_strerror(err));
		goto out;
	}
	memcpy(s->seen[s->seen_next], hash, sizeof(hash));
	s->seen_next = (s->seen_next + 1) % SEEN_SLOTS;
	err = warp_sig_replay_check(s->replay, m->sender, m->id, warp_sig_expiry(m, s->cfg.skew_ms),
				    now);
	if (err) {
		if (err == -WARP_EREPLAY)
			s->stats.rx_duplicate++;
		else
			s->stats.rx_ratelimited++;
		goto out;
	}
	if (!sender_allowed(s, m->sender)) {
		s->stats.rx_ratelimited++;
		err = -WARP_ERATELIMIT;
		goto out;
	}
	s->stats.rx++;
	dispatch(s, m);
out:
	free(m);
	return err;
}
