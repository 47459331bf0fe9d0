// SPDX-License-Identifier: MIT
/*
 * The request core, sans-IO: a batch of request datagrams in, reply datagrams out.
 *
 * Per batch: cheap checks and signature verification happen outside any lock (a verification
 * costs far more than the database work), then all writes of the batch run in one transaction
 * under the process-wide write lock and are acknowledged only after its commit, so one fsync
 * covers the whole batch and a GET that follows an acknowledged PUT always sees it.  Replies
 * are then signed together: one server signature over a Merkle tree of the batch.
 */
#include <errno.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "namebumpd"
#include "core/log.h"
#include "core/util.h"
#include "nbd.h"

uint64_t nb_now(const struct nb_config *cfg)
{
	return (uint64_t)((int64_t)warp_wall_ms() + cfg->clock_offset_ms);
}

int nb_core_init(struct nb_core *c, struct nb_shared *sh)
{
	memset(c, 0, sizeof(*c));
	c->sh = sh;
	c->store = sh->ops->open(sh->cfg->db, sh->cfg->sync_full);
	if (!c->store)
		return errno ? -errno : -EIO;
	c->vc = nb_vcache_new(4096);
	if (!c->vc) {
		sh->ops->close(c->store);
		return -ENOMEM;
	}
	return 0;
}

void nb_core_fini(struct nb_core *c)
{
	if (c->store)
		c->sh->ops->close(c->store);
	nb_vcache_free(c->vc);
	c->store = NULL;
	c->vc = NULL;
}

static void reply(struct nb_slot *s, uint8_t status, uint32_t detail)
{
	s->rep.status = status;
	s->rep.detail = detail;
	s->rep.flags = 0;
	s->send = true;
}

static void attach(struct nb_slot *s, const struct wn_record *rec)
{
	s->rep.flags |= WN_RF_RECORD;
	s->rep.rec = *rec;
}

static bool tld_ok(const struct nb_config *cfg, const char *name)
{
	const char *tld = wn_name_tld(name);

	for (int i = 0; i < cfg->n_tlds; i++)
		if (!strcmp(tld, cfg->tlds[i]))
			return true;
	return false;
}

static bool same_ip(const struct nb_ip *a, const struct nb_ip *b)
{
	return a->af == b->af && !memcmp(a->addr, b->addr, a->af == 4 ? 4 : 16);
}

static bool same_bucket(const struct nb_ip *a, const struct nb_ip *b, enum nb_bucket bk)
{
	return a->af == b->af && !memcmp(a->addr, b->addr, nb_bucket_bytes(bk));
}

static bool identical(const struct wn_record *a, const struct wn_record *b)
{
	return a->kind == b->kind && a->updated == b->updated &&
	       !memcmp(a->sig, b->sig, WARP_SIG_LEN) &&
	       !memcmp(a->owner, b->owner, WARP_PUBKEY_LEN);
}

static bool hard_expired(const struct nb_config *cfg, const struct nb_row *row, uint64_t now)
{
	return now >= row->refreshed + cfg->lifetime_ms;
}

static double cost_of(uint8_t type)
{
	switch (type) {
	case WN_T_GET:
		return 1;
	case WN_T_SEALED:
		return 8; /* an ECDH to open it, then probably a verification */
	default:
		return 4; /* a signature verification */
	}
}

static void do_get(struct nb_core *c, struct nb_slot *s, uint64_t now)
{
	struct nb_row row;
	int err = c->sh->ops->get(c->store, s->req.name, &row);

	NB_STAT_ADD(c->sh, get, 1);
	if (err == -WARP_ENOTFOUND || (!err && hard_expired(c->sh->cfg, &row, now))) {
		reply(s, WN_NOT_FOUND, 0);
	} else if (err) {
		reply(s, WN_INTERNAL, 0);
	} else if (row.rec.kind == WN_REC_TOMB) {
		reply(s, WN_NOT_FOUND, 0);
		attach(s, &row.rec);
	} else {
		reply(s, WN_OK, 0);
		attach(s, &row.rec);
	}
}

/* Checks that need no lock; leaves s->pending set when the write should be attempted. */
static void pre_write(struct nb_core *c, struct nb_slot *s, uint64_t now)
{
	const struct nb_config *cfg = c->sh->cfg;
	const struct wn_record *rec = &s->req.rec;
	struct nb_row row;
	int err;

	NB_STAT_ADD(c->sh, put, s->req.type == WN_T_PUT);
	NB_STAT_ADD(c->sh, del, s->req.type == WN_T_DEL);
	err = c->sh->ops->get(c->store, rec->name, &row);
	if (err && err != -WARP_ENOTFOUND) {
		reply(s, WN_INTERNAL, 0);
		return;
	}
	if (!err && !hard_expired(cfg, &row, now)) {
		/* A retransmission of what is stored: acknowledge again, change nothing. */
		if (identical(&row.rec, rec)) {
			reply(s, WN_OK, 0);
			return;
		}
		/* Refuse early without paying for a verification; rechecked under the lock. */
		if (memcmp(row.rec.owner, rec->owner, WARP_PUBKEY_LEN)) {
			reply(s, WN_NOT_OWNER, 0);
			attach(s, &row.rec);
			return;
		}
	}
	if (rec->updated + cfg->window_ms < now || rec->updated > now + cfg->window_ms) {
		reply(s, WN_STALE, (uint32_t)cfg->window_ms);
		return;
	}
	if (!err && !hard_expired(cfg, &row, now) && rec->updated <= row.rec.updated) {
		reply(s, WN_REPLAY, 0);
		attach(s, &row.rec);
		return;
	}
	NB_STAT_ADD(c->sh, verify, 1);
	if (nb_vcache_verify_record(c->vc, rec)) {
		reply(s, WN_BAD_SIG, 0);
		return;
	}
	s->pending = true;
}

static int buckets_of(const struct nb_ip *ip, enum nb_bucket out[3])
{
	if (ip->af == 4) {
		out[0] = NB_B_V4;
		return 1;
	}
	out[0] = NB_B_V6_128;
	out[1] = NB_B_V6_64;
	out[2] = NB_B_V6_48;
	return 3;
}

/*
 * Makes room in every bucket of s->src for one more name.  Returns 0 with *status WN_OK when
 * there is room, 0 with another status when the write must be refused, or a storage error.
 */
static int make_room(struct nb_core *c, struct nb_slot *s, const struct nb_row *old, uint64_t now,
		     uint8_t *status)
{
	const struct nb_config *cfg = c->sh->cfg;
	const struct nb_store_ops *ops = c->sh->ops;
	enum nb_bucket bk[3];
	int nb = buckets_of(&s->src, bk), err;

	*status = WN_OK;
	for (int i = 0; i < nb; i++) {
		uint64_t n;

		err = ops->count(c->store, bk[i], &s->src, &n);
		if (err)
			return err;
		if (old && same_bucket(&old->ip, &s->src, bk[i]) && n)
			n--; /* the name itself moves within this bucket */
		while (n >= cfg->quota[bk[i]]) {
			char victim[WARP_NAME_FQ_MAX + 1];

			if (s->req.bump == WARP_NAME_NO_BUMP) {
				*status = WN_NOT_STORED;
				return 0;
			}
			if (s->req.bump == WARP_NAME_ERROR) {
				*status = WN_QUOTA;
				return 0;
			}
			err = ops->oldest_bumpable(c->store, bk[i], &s->src, now, s->req.name,
						   victim);
			if (err == -WARP_ENOTFOUND) {
				*status = WN_QUOTA;
				return 0;
			}
			if (err)
				return err;
			pr_debug("bumping %s for %s", victim, s->req.name);
			err = ops->remove(c->store, victim);
			if (err)
				return err;
			NB_STAT_ADD(c->sh, bumped, 1);
			n--;
		}
	}
	return 0;
}

/*
 * How long the name may live unrefreshed before it can be bumped: the fuller the busiest of
 * the writer's buckets (this name included), the shorter, from lifetime down to min_age.
 */
static int bump_after(struct nb_core *c, struct nb_slot *s, const struct nb_row *old,
		      uint64_t *life)
{
	const struct nb_config *cfg = c->sh->cfg;
	enum nb_bucket bk[3];
	int nb = buckets_of(&s->src, bk), err;
	double frac = 0;

	for (int i = 0; i < nb; i++) {
		uint64_t n;
		double f;

		err = c->sh->ops->count(c->store, bk[i], &s->src, &n);
		if (err)
			return err;
		if (!old || !same_bucket(&old->ip, &s->src, bk[i]))
			n++;
		f = n > 1 ? (double)(n - 1) / cfg->quota[bk[i]] : 0;
		if (f > frac)
			frac = f > 1 ? 1 : f;
	}
	*life = cfg->lifetime_ms - (uint64_t)((double)(cfg->lifetime_ms - cfg->min_age_ms) * frac);
	return 0;
}

/* The write itself, inside the batch transaction. */
static int apply(struct nb_core *c, struct nb_slot *s, uint64_t now)
{
	const struct nb_config *cfg = c->sh->cfg;
	const struct nb_store_ops *ops = c->sh->ops;
	const struct wn_record *rec = &s->req.rec;
	struct nb_row old, row;
	uint64_t life;
	uint8_t status;
	bool exists;
	int err;

	err = ops->get(c->store, rec->name, &old);
	if (err && err != -WARP_ENOTFOUND)
		return err;
	exists = !err;
	if (exists && hard_expired(cfg, &old, now)) {
		err = ops->remove(c->store, rec->name);
		if (err)
			return err;
		exists = false;
	}
	if (exists && memcmp(old.rec.owner, rec->owner, WARP_PUBKEY_LEN)) {
		reply(s, WN_NOT_OWNER, 0);
		attach(s, &old.rec);
		return 0;
	}
	if (exists && rec->updated <= old.rec.updated) {
		if (identical(&old.rec, rec)) {
			reply(s, WN_OK, 0);
		} else {
			reply(s, WN_REPLAY, 0);
			attach(s, &old.rec);
		}
		return 0;
	}
	if (!exists && rec->kind == WN_REC_TOMB) {
		reply(s, WN_NOT_FOUND, 0);
		return 0;
	}
	row.rec = *rec;
	row.refreshed = now;
	if (rec->kind == WN_REC_TOMB) {
		/* Keeps its slot where the name lived and frees it soon. */
		row.ip = old.ip;
		row.expires = now + cfg->min_age_ms;
	} else {
		row.ip = s->src;
		if (!exists || !same_ip(&old.ip, &s->src)) {
			err = make_room(c, s, exists ? &old : NULL, now, &status);
			if (err)
				return err;
			if (status != WN_OK) {
				reply(s, status, 0);
				return 0;
			}
		}
		err = bump_after(c, s, exists ? &old : NULL, &life);
		if (err)
			return err;
		row.expires = now + life;
	}
	err = ops->upsert(c->store, &row);
	if (err)
		return err;
	reply(s, WN_OK, 0);
	return 0;
}

void nb_core_commit(struct nb_core *c, struct nb_batch **batches, size_t nb)
{
	const struct nb_store_ops *ops = c->sh->ops;
	int err;

	pthread_mutex_lock(&c->sh->write_lock);
	err = ops->begin(c->store);
	for (size_t b = 0; b < nb && !err; b++)
		for (size_t i = 0; i < batches[b]->n && !err; i++)
			if (batches[b]->slots[i].pending)
				err = apply(c, &batches[b]->slots[i], batches[b]->now);
	if (!err)
		err = ops->commit(c->store);
	else
		ops->rollback(c->store);
	pthread_mutex_unlock(&c->sh->write_lock);
	/* acknowledged only now, after the commit returned */
	for (size_t b = 0; b < nb; b++) {
		for (size_t i = 0; i < batches[b]->n; i++) {
			struct nb_slot *s = &batches[b]->slots[i];

			if (!s->pending)
				continue;
			s->pending = false;
			if (err)
				reply(s, WN_INTERNAL, 0);
		}
	}
	if (err)
		pr_err("write batch failed: %s", warp_strerror(err));
}

/* Parses one slot and answers what can be answered without a write. */
static void prepare(struct nb_core *c, struct nb_slot *s, uint64_t now)
{
	const struct nb_config *cfg = c->sh->cfg;
	const uint8_t *pkt = s->in;
	size_t len = s->in_len;
	uint8_t type = 0, status;
	uint32_t wait;
	bool drop;
	int err, n;

	s->send = s->sealed = s->pending = false;
	s->out_len = 0;
	memset(&s->rep, 0, sizeof(s->rep));
	NB_STAT_ADD(c->sh, rx, 1);
	err = wn_peek(pkt, len, &type, &s->rep.id);
	if (err == -WARP_EMALFORMED) {
		NB_STAT_ADD(c->sh, dropped, 1); /* not this protocol: stay silent */
		return;
	}
	s->req.type = type;
	s->rep.type = (uint8_t)(WN_T_REPLY | (type & 0x7f));
	wait = nb_ratelimit_take(c->sh->rl, &s->src, cost_of(type), warp_time_ms(), &drop);
	if (wait) {
		NB_STAT_ADD(c->sh, rate_limited, 1);
		if (!drop)
			reply(s, WN_RATE_LIMITED, wait);
		return;
	}
	if (err == -WARP_EVERSION) {
		reply(s, WN_BAD_VERSION, WN_VERSION);
		return;
	}
	if (type == WN_T_SEALED) {
		if (!cfg->allow_sealed) {
			reply(s, WN_BAD_TYPE, 0);
			return;
		}
		NB_STAT_ADD(c->sh, sealed, 1);
		n = wn_open_request(c->sh->key, pkt, len, s->reply_key, s->inner, sizeof(s->inner));
		if (n < 0) {
			reply(s, WN_BAD_SEAL, (uint32_t)-n);
			return;
		}
		s->sealed = true;
		pkt = s->inner;
		len = (size_t)n;
	}
	err = wn_request_decode(pkt, len, &s->req, &status);
	if (s->sealed)
		s->rep.id = s->req.id;
	if (err) {
		reply(s, status, (uint32_t)-err);
		return;
	}
	s->rep.type = (uint8_t)(WN_T_REPLY | s->req.type);
	if (!tld_ok(cfg, s->req.name)) {
		reply(s, WN_BAD_TLD, 0);
		return;
	}
	if (s->req.type == WN_T_GET)
		do_get(c, s, now);
	else
		pre_write(c, s, now);
}

/* Builds, size-checks and signs the replies of slots[0..n). */
static void finish(struct nb_core *c, struct nb_slot *slots, size_t n, uint64_t now)
{
	uint8_t *bufs[WN_MAX_BATCH];
	size_t lens[WN_MAX_BATCH], caps[WN_MAX_BATCH];
	struct nb_slot *who[WN_MAX_BATCH];
	size_t k = 0, i;
	unsigned int depth;
	int len;

	for (i = 0; i < n; i++)
		k += slots[i].send;
	if (!k)
		return;
	depth = wn_auth_depth(k);
	k = 0;
	for (i = 0; i < n; i++) {
		struct nb_slot *s = &slots[i];
		uint8_t *buf = s->sealed ? s->inner : s->out;
		size_t extra = wn_auth_len(depth) + (s->sealed ? WN_HDR_LEN + 24 + 16 : 0);

		if (!s->send)
			continue;
		s->rep.server_time = now;
		len = wn_reply_encode_body(&s->rep, buf, WN_MAX_PACKET);
		if (len > 0 && s->udp && (size_t)len + extra > s->in_len) {
			/* never answer a datagram with a bigger one */
			uint32_t need = (uint32_t)((size_t)len + extra);

			NB_STAT_ADD(c->sh, truncated, 1);
			s->rep.flags = 0;
			s->rep.status = WN_TRUNCATED;
			s->rep.detail = need;
			len = wn_reply_encode_body(&s->rep, buf, WN_MAX_PACKET);
			if (len > 0 && (size_t)len + extra > s->in_len)
				len = -EMSGSIZE;
		}
		if (len < 0) {
			s->send = false;
			NB_STAT_ADD(c->sh, dropped, 1);
			continue;
		}
		bufs[k] = buf;
		lens[k] = (size_t)len;
		caps[k] = WN_MAX_PACKET;
		who[k++] = s;
	}
	if (!k)
		return;
	NB_STAT_ADD(c->sh, batches, 1);
	if (wn_auth_batch(&c->sh->signer, bufs, lens, caps, k)) {
		for (i = 0; i < k; i++)
			who[i]->send = false;
		return;
	}
	for (i = 0; i < k; i++) {
		struct nb_slot *s = who[i];

		if (s->sealed) {
			len = wn_seal_reply(s->reply_key, s->rep.id, s->inner, lens[i], s->out,
					    sizeof(s->out));
			if (len < 0) {
				s->send = false;
				continue;
			}
			s->out_len = (size_t)len;
		} else {
			s->out_len = lens[i];
		}
		NB_STAT_ADD(c->sh, tx, 1);
		if (s->rep.status == WN_OK || s->rep.status == WN_NOT_FOUND)
			NB_STAT_ADD(c->sh, ok, 1);
		else
			NB_STAT_ADD(c->sh, err, 1);
	}
}

bool nb_core_prepare(struct nb_core *c, struct nb_batch *b)
{
	bool pending = false;

	b->now = nb_now(c->sh->cfg);
	for (size_t i = 0; i < b->n; i++) {
		prepare(c, &b->slots[i], b->now);
		pending |= b->slots[i].pending;
	}
	return pending;
}

void nb_core_finish(struct nb_core *c, struct nb_batch *b)
{
	size_t step = c->sh->cfg->batch_max;

	for (size_t i = 0; i < b->n; i += step)
		finish(c, b->slots + i, b->n - i < step ? b->n - i : step, b->now);
}

void nb_core_run(struct nb_core *c, struct nb_slot *slots, size_t n)
{
	struct nb_batch b = { .slots = slots, .n = n };
	struct nb_batch *bp = &b;

	if (nb_core_prepare(c, &b))
		nb_core_commit(c, &bp, 1);
	nb_core_finish(c, &b);
}

void nb_core_tick(struct nb_core *c)
{
	const struct nb_config *cfg = c->sh->cfg;
	uint64_t now = nb_now(cfg);
	int n;

	if (now < c->next_gc)
		return;
	c->next_gc = now + cfg->gc_interval_ms;
	if (now < cfg->lifetime_ms)
		return;
	pthread_mutex_lock(&c->sh->write_lock);
	n = c->sh->ops->gc(c->store, now - cfg->lifetime_ms);
	pthread_mutex_unlock(&c->sh->write_lock);
	if (n > 0)
		pr_info("expired %d names", n);
}
