// SPDX-License-Identifier: MIT
/*
 * Subscriptions (see sub.h).  A message is stored once and reference-counted: each matching
 * queue holds a reference, pop hands one to the caller.  Queues are rings that grow on demand
 * up to their bound.  Subscriptions removed from inside a callback are unlinked after the
 * outermost dispatch loop, so no loop walks freed memory.  Callbacks may add and remove
 * subscriptions and dispatch (relay) into this set, but not free it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "sub"
#include "core/log.h"
#include "pipe/sub.h"

#define QUEUE_DEFAULT 256

const struct warp_sub_spec warp_sub_all = { .match = WARP_SUB_MATCH_ALL };

struct msg {
	struct warp_sub_msg m; /* first: warp_sub_msg_free() gets this pointer back */
	unsigned int refs;
	uint8_t data[];
};

/* A source filter, normalised: IPv4-mapped IPv6 is stored as IPv4. */
struct src {
	int family; /* 0: any source */
	uint8_t addr[16];
	uint16_t port; /* host order, 0 = any */
};

struct sub {
	int id;
	bool dead;
	enum warp_sub_match match;
	uint8_t *prefix;
	size_t prefix_len;
	regex_t re;
	bool have_re;
	struct src src;
	warp_sub_cb cb;
	void *user;
	struct msg **q;
	size_t qhead, qlen, qcap, qmax;
	struct warp_sub_stats st;
};

struct warp_subs {
	struct sub **v;
	size_t n, cap;
	int next_id;
	bool closed, dirty;
	unsigned int depth; /* nested dispatches under way (a callback may relay) */
	int close_err;
	uint64_t seq, unmatched;
	warp_subs_notify_cb notify;
	void *notify_user;
};

static void msg_put(struct msg *m)
{
	if (m && !--m->refs)
		free(m);
}

/* Returns 0 and fills out, or -EAFNOSUPPORT. */
static int src_norm(const struct sockaddr *sa, struct src *out)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		out->family = AF_INET;
		memcpy(out->addr, &in->sin_addr, 4);
		out->port = ntohs(in->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		out->port = ntohs(in6->sin6_port);
		if (!memcmp(in6->sin6_addr.s6_addr, mapped, sizeof(mapped))) {
			out->family = AF_INET;
			memcpy(out->addr, in6->sin6_addr.s6_addr + 12, 4);
		} else {
			out->family = AF_INET6;
			memcpy(out->addr, in6->sin6_addr.s6_addr, 16);
		}
		return 0;
	}
	return -EAFNOSUPPORT;
}

static bool src_match(const struct src *want, const struct src *got)
{
	if (!want->family)
		return true;
	if (!got || want->family != got->family)
		return false;
	if (memcmp(want->addr, got->addr, want->family == AF_INET ? 4 : 16))
		return false;
	return !want->port || want->port == got->port;
}

static bool body_match(const struct sub *sb, const uint8_t *data, size_t len)
{
	regmatch_t span[1];

	switch (sb->match) {
	case WARP_SUB_MATCH_ALL:
		return true;
	case WARP_SUB_MATCH_PREFIX:
		return !sb->prefix_len ||
		       (len >= sb->prefix_len && !memcmp(data, sb->prefix, sb->prefix_len));
	case WARP_SUB_MATCH_REGEX:
		/* REG_STARTEND bounds the subject explicitly, so binary messages with NUL bytes
		 * are searched whole. */
		span[0].rm_so = 0;
		span[0].rm_eo = (regoff_t)len;
		return regexec(&sb->re, (const char *)data, 1, span, REG_STARTEND) == 0;
	}
	return false;
}

static void sub_destroy(struct sub *sb)
{
	for (size_t i = 0; i < sb->qlen; i++)
		msg_put(sb->q[(sb->qhead + i) % sb->qcap]);
	free(sb->q);
	if (sb->have_re)
		regfree(&sb->re);
	free(sb->prefix);
	free(sb);
}

static struct sub *find(const struct warp_subs *subs, int id)
{
	for (size_t i = 0; i < subs->n; i++)
		if (subs->v[i]->id == id && !subs->v[i]->dead)
			return subs->v[i];
	return NULL;
}

static void compact(struct warp_subs *subs)
{
	size_t k = 0;

	for (size_t i = 0; i < subs->n; i++) {
		if (subs->v[i]->dead)
			sub_destroy(subs->v[i]);
		else
			subs->v[k++] = subs->v[i];
	}
	subs->n = k;
	subs->dirty = false;
}

struct warp_subs *warp_subs_new(void)
{
	struct warp_subs *subs = calloc(1, sizeof(*subs));

	if (!subs) {
		errno = ENOMEM;
		return NULL;
	}
	subs->next_id = 1;
	return subs;
}

void warp_subs_free(struct warp_subs *subs)
{
	if (!subs)
		return;
	for (size_t i = 0; i < subs->n; i++)
		sub_destroy(subs->v[i]);
	free(subs->v);
	free(subs);
}

void warp_subs_set_notify(struct warp_subs *subs, warp_subs_notify_cb cb, void *user)
{
	if (!subs)
		return;
	subs->notify = cb;
	subs->notify_user = user;
}

int warp_sub_add(struct warp_subs *subs, const struct warp_sub_spec *spec)
{
	struct sub *sb;
	int err;

	if (!subs || !spec)
		return -EINVAL;
	if (spec->match == WARP_SUB_MATCH_PREFIX && !spec->prefix && spec->prefix_len)
		return -EINVAL;
	if (spec->match == WARP_SUB_MATCH_REGEX && !spec->regex)
		return -EINVAL;
	if (spec->match > WARP_SUB_MATCH_REGEX || subs->next_id == INT32_MAX)
		return -EINVAL;
	sb = calloc(1, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	sb->match = spec->match;
	sb->cb = spec->cb;
	sb->user = spec->user;
	sb->qmax = spec->queue_max ? spec->queue_max : QUEUE_DEFAULT;
	if (spec->source) {
		err = src_norm(spec->source, &sb->src);
		if (err)
			goto out;
	}
	if (spec->match == WARP_SUB_MATCH_PREFIX && spec->prefix_len) {
		sb->prefix = malloc(spec->prefix_len);
		if (!sb->prefix) {
			err = -ENOMEM;
			goto out;
		}
		memcpy(sb->prefix, spec->prefix, spec->prefix_len);
		sb->prefix_len = spec->prefix_len;
	}
	if (spec->match == WARP_SUB_MATCH_REGEX) {
		err = regcomp(&sb->re, spec->regex, REG_EXTENDED | REG_NOSUB | spec->regex_cflags);
		if (err) {
			char why[128];

			regerror(err, &sb->re, why, sizeof(why));
			pr_debug("bad subscription pattern '%s': %s", spec->regex, why);
			err = err == REG_ESPACE ? -ENOMEM : -WARP_EMALFORMED;
			goto out;
		}
		sb->have_re = true;
	}
	if (subs->n == subs->cap) {
		size_t cap = subs->cap ? subs->cap * 2 : 8;
		struct sub **v = realloc(subs->v, cap * sizeof(*v));

		if (!v) {
			err = -ENOMEM;
			goto out;
		}
		subs->v = v;
		subs->cap = cap;
	}
	sb->id = subs->next_id++;
	subs->v[subs->n++] = sb;
	return sb->id;
out:
	sub_destroy(sb);
	return err;
}

int warp_sub_remove(struct warp_subs *subs, int id)
{
	struct sub *sb = subs ? find(subs, id) : NULL;

	if (!sb)
		return -ENOENT;
	sb->dead = true;
	if (subs->depth)
		subs->dirty = true;
	else
		compact(subs);
	return 0;
}

static int enqueue(struct sub *sb, struct msg *m)
{
	if (sb->qlen == sb->qmax) {
		/* Full: the oldest goes, the newest is kept. */
		msg_put(sb->q[sb->qhead]);
		sb->qhead = (sb->qhead + 1) % sb->qcap;
		sb->qlen--;
		sb->st.dropped++;
	} else if (sb->qlen == sb->qcap) {
		size_t cap = sb->qcap ? sb->qcap * 2 : 8;
		struct msg **q;

		if (cap > sb->qmax)
			cap = sb->qmax;
		q = malloc(cap * sizeof(*q));
		if (!q)
			return -ENOMEM;
		for (size_t i = 0; i < sb->qlen; i++)
			q[i] = sb->q[(sb->qhead + i) % sb->qcap];
		free(sb->q);
		sb->q = q;
		sb->qcap = cap;
		sb->qhead = 0;
	}
	sb->q[(sb->qhead + sb->qlen) % sb->qcap] = m;
	sb->qlen++;
	m->refs++;
	return 0;
}

int warp_subs_dispatch(struct warp_subs *subs, const void *data, size_t len,
		       const struct sockaddr *src, unsigned int flags)
{
	struct src from, *fromp = NULL;
	struct msg *m;
	size_t n;
	int matched = 0, err = 0;

	if (!subs || (!data && len))
		return -EINVAL;
	if (subs->closed)
		return -WARP_ECLOSED;
	if (src && !src_norm(src, &from))
		fromp = &from;
	/* A NUL after the data: text consumers may use it as a string, and regexec()
	 * implementations that look for a terminator despite REG_STARTEND stay in bounds. */
	m = malloc(sizeof(*m) + len + 1);
	if (!m)
		return -ENOMEM;
	memset(&m->m, 0, sizeof(m->m));
	if (len)
		memcpy(m->data, data, len);
	m->data[len] = 0;
	m->m.data = m->data;
	m->m.len = len;
	m->m.flags = flags;
	m->m.seq = ++subs->seq;
	if (src && (src->sa_family == AF_INET || src->sa_family == AF_INET6)) {
		m->m.has_src = true;
		memcpy(&m->m.src, src,
		       src->sa_family == AF_INET ? sizeof(struct sockaddr_in)
						 : sizeof(struct sockaddr_in6));
	}
	m->refs = 1; /* ours, for the duration of the loop */
	subs->depth++;
	/* Subscriptions added by a callback see the next message, not this one. */
	n = subs->n;
	for (size_t i = 0; i < n; i++) {
		struct sub *sb = subs->v[i];

		if (sb->dead || !src_match(&sb->src, fromp) || !body_match(sb, m->data, len))
			continue;
		matched++;
		sb->st.matched++;
		if (sb->cb) {
			sb->cb(sb->user, sb->id, &m->m);
			continue;
		}
		if (enqueue(sb, m)) {
			err = -ENOMEM;
			continue;
		}
		if (subs->notify)
			subs->notify(subs->notify_user, sb->id);
	}
	if (!--subs->depth && subs->dirty)
		compact(subs);
	msg_put(m);
	if (!matched) {
		subs->unmatched++;
		pr_debug("message of %zu bytes matched no subscription", len);
	}
	return err ? err : matched;
}

static int get_queue(const struct warp_subs *subs, int id, struct sub **out)
{
	struct sub *sb = subs ? find(subs, id) : NULL;

	if (!sb)
		return -ENOENT;
	if (sb->cb)
		return -EINVAL;
	*out = sb;
	if (!sb->qlen)
		return subs->closed ? -WARP_ECLOSED : -EAGAIN;
	return 0;
}

int warp_sub_pop(struct warp_subs *subs, int id, struct warp_sub_msg **out)
{
	struct sub *sb;
	struct msg *m;
	int err;

	if (!out)
		return -EINVAL;
	err = get_queue(subs, id, &sb);
	if (err)
		return err;
	m = sb->q[sb->qhead];
	sb->qhead = (sb->qhead + 1) % sb->qcap;
	sb->qlen--;
	sb->st.popped++;
	*out = &m->m;
	return 0;
}

int warp_sub_peek(const struct warp_subs *subs, int id, const struct warp_sub_msg **out)
{
	struct sub *sb;
	int err;

	if (!out)
		return -EINVAL;
	err = get_queue(subs, id, &sb);
	if (err)
		return err;
	*out = &sb->q[sb->qhead]->m;
	return 0;
}

int warp_sub_pending(const struct warp_subs *subs, int id)
{
	struct sub *sb = subs ? find(subs, id) : NULL;

	return sb ? (int)sb->qlen : -ENOENT;
}

int warp_sub_is_closed(const struct warp_subs *subs, int id)
{
	struct sub *sb = subs ? find(subs, id) : NULL;

	if (!sb)
		return -ENOENT;
	return subs->closed && !sb->qlen;
}

int warp_sub_stats(const struct warp_subs *subs, int id, struct warp_sub_stats *st)
{
	struct sub *sb = subs ? find(subs, id) : NULL;

	if (!sb || !st)
		return sb ? -EINVAL : -ENOENT;
	*st = sb->st;
	st->queued = sb->qlen;
	return 0;
}

void warp_sub_msg_free(struct warp_sub_msg *msg)
{
	/* The public struct is the first member of the refcounted allocation. */
	msg_put((struct msg *)msg);
}

void warp_subs_close(struct warp_subs *subs, int err)
{
	if (!subs || subs->closed)
		return;
	subs->closed = true;
	subs->close_err = err;
	subs->depth++;
	for (size_t i = 0, n = subs->n; i < n; i++) {
		struct sub *sb = subs->v[i];

		if (!sb->dead && sb->cb)
			sb->cb(sb->user, sb->id, NULL);
	}
	if (!--subs->depth && subs->dirty)
		compact(subs);
	if (subs->notify)
		subs->notify(subs->notify_user, 0);
}

bool warp_subs_closed(const struct warp_subs *subs)
{
	return subs && subs->closed;
}

int warp_subs_close_err(const struct warp_subs *subs)
{
	return subs ? subs->close_err : 0;
}

uint64_t warp_subs_unmatched(const struct warp_subs *subs)
{
	return subs ? subs->unmatched : 0;
}
