/* SPDX-License-Identifier: MIT */
/*
 * Subscriptions: who gets a pipe's incoming messages.
 *
 * A subscription matches on the message (everything, a byte prefix, or a POSIX extended
 * regex compiled once and searched over the whole message, NUL bytes included: anchor it with
 * ^...$ for a whole-message match) and on the source (any, an address with any port when the
 * port is 0, or an exact address and port; IPv4-mapped IPv6 addresses equal their IPv4 form).
 * Every incoming message goes to every matching subscription: queued (a bounded FIFO that
 * drops and counts its oldest message when full) or handed to the subscription's callback.
 * Messages no subscription wants are counted and discarded.
 *
 * End of pipe: warp_subs_close() marks the set closed; a queue still yields what it holds,
 * then -WARP_ECLOSED.  A blocking receive is built on top (by the pipe layer) from
 * warp_sub_pop(), warp_sub_is_closed() and the notify hook:
 *
 *	id = warp_sub_add(subs, WARP_SUB_ALL);
 *	warp_subs_dispatch(subs, data, len, &src, WARP_MSG_RELIABLE);  // from on_message
 *	err = warp_sub_pop(subs, id, &msg);   // 0, -EAGAIN (empty), -WARP_ECLOSED, -ENOENT
 *	... use msg->data, msg->len, msg->src ...
 *	warp_sub_msg_free(msg);
 *
 * Sans-IO and single-threaded: the caller serialises every call (the pipe's loop thread).
 */
#ifndef WARP_PIPE_SUB_H
#define WARP_PIPE_SUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum warp_sub_match {
	WARP_SUB_MATCH_ALL = 0,
	WARP_SUB_MATCH_PREFIX,
	WARP_SUB_MATCH_REGEX,
};

/* A received message.  Shared by every queue it was copied to: read-only. */
struct warp_sub_msg {
	const uint8_t *data; /* followed by a NUL byte not counted in len */
	size_t len;
	unsigned int flags; /* as given to warp_subs_dispatch() (WARP_MSG_*) */
	bool has_src;
	struct sockaddr_storage src;
	uint64_t seq; /* arrival order on this set, from 1 */
};

/* msg is NULL once, at the end of the pipe. */
typedef void (*warp_sub_cb)(void *user, int id, const struct warp_sub_msg *msg);
/* A queue gained a message (id) or the set closed (id 0). */
typedef void (*warp_subs_notify_cb)(void *user, int id);

struct warp_sub_spec {
	enum warp_sub_match match;
	const void *prefix; /* MATCH_PREFIX */
	size_t prefix_len;
	const char *regex;	       /* MATCH_REGEX: POSIX ERE */
	int regex_cflags;	       /* extra regcomp() flags, e.g. REG_ICASE */
	const struct sockaddr *source; /* NULL: any source; port 0: any port */
	size_t queue_max;	       /* messages kept [256] */
	warp_sub_cb cb;		       /* set: called instead of queueing */
	void *user;
};

/* Matches every message from every source. */
extern const struct warp_sub_spec warp_sub_all;
#define WARP_SUB_ALL (&warp_sub_all)

struct warp_sub_stats {
	uint64_t matched; /* messages that matched (queued or called back) */
	uint64_t dropped; /* oldest messages dropped from a full queue */
	uint64_t popped;
	uint64_t queued; /* held now */
};

struct warp_subs;

struct warp_subs *warp_subs_new(void);
/* Frees the set, its subscriptions and every queued message. */
void warp_subs_free(struct warp_subs *subs);
void warp_subs_set_notify(struct warp_subs *subs, warp_subs_notify_cb cb, void *user);

/* Returns a subscription id (> 0), -EINVAL, -WARP_EMALFORMED (regex does not compile),
 * -EAFNOSUPPORT (source not IPv4/IPv6) or -ENOMEM. */
int warp_sub_add(struct warp_subs *subs, const struct warp_sub_spec *spec);
/* Drops the subscription and its queue; -ENOENT if unknown. */
int warp_sub_remove(struct warp_subs *subs, int id);

/* Offers one message (src may be NULL) to every subscription.  Returns how many matched,
 * -WARP_ECLOSED after warp_subs_close(), or -ENOMEM. */
int warp_subs_dispatch(struct warp_subs *subs, const void *data, size_t len,
		       const struct sockaddr *src, unsigned int flags);

/* Takes the oldest queued message (free it with warp_sub_msg_free()).  Returns 0, -EAGAIN
 * when empty, -WARP_ECLOSED when empty and the pipe has ended, -ENOENT for an unknown id
 * (never subscribed, or removed), -EINVAL for a callback subscription. */
int warp_sub_pop(struct warp_subs *subs, int id, struct warp_sub_msg **out);
/* Like pop, but leaves the message queued; *out stays owned by the queue. */
int warp_sub_peek(const struct warp_subs *subs, int id, const struct warp_sub_msg **out);
/* Messages queued, or -ENOENT. */
int warp_sub_pending(const struct warp_subs *subs, int id);
/* 1 once the pipe has ended *and* the queue is drained (a blocking recv should stop),
 * 0 otherwise, -ENOENT for an unknown id. */
int warp_sub_is_closed(const struct warp_subs *subs, int id);
int warp_sub_stats(const struct warp_subs *subs, int id, struct warp_sub_stats *st);
void warp_sub_msg_free(struct warp_sub_msg *msg);

/* End of pipe (err: why, 0 for a graceful close; kept for warp_subs_close_err()).  Callback
 * subscriptions get their NULL message now; queues report -WARP_ECLOSED once drained.
 * Idempotent. */
void warp_subs_close(struct warp_subs *subs, int err);
bool warp_subs_closed(const struct warp_subs *subs);
int warp_subs_close_err(const struct warp_subs *subs);
/* Messages that matched no subscription. */
uint64_t warp_subs_unmatched(const struct warp_subs *subs);

#endif
