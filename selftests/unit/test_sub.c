// SPDX-License-Identifier: MIT
/* Subscription tests: matching, fan-out, bounded queues, callbacks, end of pipe. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/error.h>

#include "pipe/stream.h"
#include "pipe/sub.h"

static struct sockaddr_storage v4(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	in->sin_family = AF_INET;
	in->sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static int dispatch_str(struct warp_subs *subs, const char *s, const struct sockaddr_storage *src)
{
	return warp_subs_dispatch(subs, s, strlen(s), src ? SA(*src) : NULL, WARP_MSG_RELIABLE);
}

/* Pops one message and checks its text; returns the pop result. */
static int pop_expect(struct warp_subs *subs, int id, const char *want)
{
	struct warp_sub_msg *m;
	int rc = warp_sub_pop(subs, id, &m);

	if (rc)
		return rc;
	if (m->len != strlen(want) || memcmp(m->data, want, m->len))
		fail_msg("sub %d: got '%.*s' want '%s'", id, (int)m->len, m->data, want);
	warp_sub_msg_free(m);
	return 0;
}

static void test_all_and_fanout(void **state)
{
	struct warp_subs *subs = warp_subs_new();
	struct sockaddr_storage a = v4("192.0.2.1", 4000);
	const struct warp_sub_msg *pk;
	struct warp_sub_msg *m;
	int all, all2;

	assert_non_null(subs);
	all = warp_sub_add(subs, WARP_SUB_ALL);
	all2 = warp_sub_add(subs, WARP_SUB_ALL);
	assert_true(all > 0 && all2 > 0 && all != all2);
	assert_int_equal(warp_sub_pop(subs, all, &m), -EAGAIN);
	assert_int_equal(dispatch_str(subs, "one", &a), 2);
	assert_int_equal(dispatch_str(subs, "two", NULL), 2);
	assert_int_equal(warp_sub_pending(subs, all), 2);
	/* every subscription gets its own copy, in order */
	assert_int_equal(warp_sub_peek(subs, all, &pk), 0);
	assert_int_equal(pk->len, 3);
	assert_true(pk->has_src);
	assert_int_equal(pk->seq, 1);
	assert_int_equal(pk->flags, WARP_MSG_RELIABLE);
	assert_int_equal(warp_sub_pop(subs, all, &m), 0);
	assert_memory_equal(m->data, "one", 3);
	assert_int_equal(((struct sockaddr_in *)&m->src)->sin_port, htons(4000));
	warp_sub_msg_free(m);
	assert_int_equal(pop_expect(subs, all, "two"), 0);
	assert_int_equal(pop_expect(subs, all2, "one"), 0);
	/* a message outlives the set it came from */
	assert_int_equal(warp_sub_pop(subs, all2, &m), 0);
	assert_false(m->has_src);
	warp_subs_free(subs);
	assert_memory_equal(m->data, "two", 3);
	warp_sub_msg_free(m);
}

static void test_prefix_and_regex(void **state)
{
	struct warp_subs *subs = warp_subs_new();
	struct warp_sub_spec pre = { .match = WARP_SUB_MATCH_PREFIX,
				     .prefix = "GET ",
				     .prefix_len = 4 };
	struct warp_sub_spec re = { .match = WARP_SUB_MATCH_REGEX, .regex = "^ping [0-9]+$" };
	struct warp_sub_spec icase = { .match = WARP_SUB_MATCH_REGEX,
				       .regex = "hello",
				       .regex_cflags = REG_ICASE };
	struct warp_sub_spec bin = { .match = WARP_SUB_MATCH_REGEX, .regex = "tail$" };
	struct warp_sub_spec bad = { .match = WARP_SUB_MATCH_REGEX, .regex = "([unclosed" };
	static const uint8_t withnul[] = { 'h', 'e', 'a', 'd', 0, 't', 'a', 'i', 'l' };
	int p, r, ic, b;

	p = warp_sub_add(subs, &pre);
	r = warp_sub_add(subs, &re);
	ic = warp_sub_add(subs, &icase);
	b = warp_sub_add(subs, &bin);
	assert_true(p > 0 && r > 0 && ic > 0 && b > 0);
	assert_int_equal(warp_sub_add(subs, &bad), -WARP_EMALFORMED);

	assert_int_equal(dispatch_str(subs, "GET /index", NULL), 1);
	assert_int_equal(dispatch_str(subs, "GE", NULL), 0);
	assert_int_equal(dispatch_str(subs, "ping 42", NULL), 1);
	assert_int_equal(dispatch_str(subs, "ping 42x", NULL), 0);
	assert_int_equal(dispatch_str(subs, "xping 1", NULL), 0);
	assert_int_equal(dispatch_str(subs, "say HeLLo there", NULL), 1);
	/* the regex sees the whole binary message, past the NUL */
	assert_int_equal(warp_subs_dispatch(subs, withnul, sizeof(withnul), NULL, 0), 1);
	assert_int_equal(warp_subs_dispatch(subs, "", 0, NULL, 0), 0);
	assert_int_equal(warp_subs_unmatched(subs), 4);

	assert_int_equal(pop_expect(subs, p, "GET /index"), 0);
	assert_int_equal(warp_sub_pop(subs, p, &(struct warp_sub_msg *){ NULL }), -EAGAIN);
	assert_int_equal(pop_expect(subs, r, "ping 42"), 0);
	assert_int_equal(pop_expect(subs, ic, "say HeLLo there"), 0);
	assert_int_equal(warp_sub_pending(subs, b), 1);
	/* empty prefix matches everything */
	pre.prefix_len = 0;
	p = warp_sub_add(subs, &pre);
	assert_int_equal(dispatch_str(subs, "anything", NULL), 1);
	assert_int_equal(pop_expect(subs, p, "anything"), 0);
	warp_subs_free(subs);
}

static void test_source(void **state)
{
	struct warp_subs *subs = warp_subs_new();
	struct sockaddr_storage host = v4("198.51.100.7", 0);
	struct sockaddr_storage exact = v4("198.51.100.7", 5000);
	struct sockaddr_storage six = v6("2001:db8::1", 0);
	struct sockaddr_storage from1 = v4("198.51.100.7", 5000);
	struct sockaddr_storage from2 = v4("198.51.100.7", 5001);
	struct sockaddr_storage from3 = v4("198.51.100.8", 5000);
	struct sockaddr_storage mapped = v6("::ffff:198.51.100.7", 5000);
	struct sockaddr_storage from6 = v6("2001:db8::1", 9);
	struct sockaddr_storage unix_sa = { .ss_family = AF_UNIX };
	struct warp_sub_spec s_host = { .source = SA(host) };
	struct warp_sub_spec s_exact = { .source = SA(exact) };
	struct warp_sub_spec s_six = { .source = SA(six) };
	struct warp_sub_spec s_bad = { .source = SA(unix_sa) };
	struct warp_sub_spec s_both = {
		.match = WARP_SUB_MATCH_PREFIX, .prefix = "x", .prefix_len = 1, .source = SA(exact)
	};
	int h, e, s6, both;

	h = warp_sub_add(subs, &s_host);
	e = warp_sub_add(subs, &s_exact);
	s6 = warp_sub_add(subs, &s_six);
	both = warp_sub_add(subs, &s_both);
	assert_int_equal(warp_sub_add(subs, &s_bad), -EAFNOSUPPORT);

	assert_int_equal(dispatch_str(subs, "a", &from1), 2);  /* host + exact */
	assert_int_equal(dispatch_str(subs, "b", &from2), 1);  /* host: any port */
	assert_int_equal(dispatch_str(subs, "c", &from3), 0);  /* other host */
	assert_int_equal(dispatch_str(subs, "d", &mapped), 2); /* v4-mapped is v4 */
	assert_int_equal(dispatch_str(subs, "e", &from6), 1);
	assert_int_equal(dispatch_str(subs, "f", NULL), 0);    /* unknown source */
	assert_int_equal(dispatch_str(subs, "xy", &from1), 3); /* prefix and source */
	assert_int_equal(dispatch_str(subs, "xy", &from2), 1);

	assert_int_equal(pop_expect(subs, h, "a"), 0);
	assert_int_equal(pop_expect(subs, h, "b"), 0);
	assert_int_equal(pop_expect(subs, h, "d"), 0);
	assert_int_equal(pop_expect(subs, e, "a"), 0);
	assert_int_equal(pop_expect(subs, e, "d"), 0);
	assert_int_equal(pop_expect(subs, s6, "e"), 0);
	assert_int_equal(pop_expect(subs, both, "xy"), 0);
	assert_int_equal(warp_sub_pending(subs, both), 0);
	warp_subs_free(subs);
}

static void test_queue_bound(void **state)
{
	struct warp_subs *subs = warp_subs_new();
	struct warp_sub_spec small = { .queue_max = 3 };
	struct warp_sub_stats st;
	char buf[16];
	int q;

	q = warp_sub_add(subs, &small);
	for (int i = 0; i < 10; i++) {
		snprintf(buf, sizeof(buf), "m%d", i);
		assert_int_equal(dispatch_str(subs, buf, NULL), 1);
		assert_true(warp_sub_pending(subs, q) <= 3);
	}
	assert_int_equal(warp_sub_stats(subs, q, &st), 0);
	assert_int_equal(st.matched, 10);
	assert_int_equal(st.dropped, 7);
	assert_int_equal(st.queued, 3);
	/* the newest are kept */
	assert_int_equal(pop_expect(subs, q, "m7"), 0);
	assert_int_equal(pop_expect(subs, q, "m8"), 0);
	assert_int_equal(dispatch_str(subs, "m10", NULL), 1);
	assert_int_equal(pop_expect(subs, q, "m9"), 0);
	assert_int_equal(pop_expect(subs, q, "m10"), 0);
	assert_int_equal(warp_sub_stats(subs, q, &st), 0);
	assert_int_equal(st.popped, 4);
	assert_int_equal(st.dropped, 7);
	/* the default bound, with the ring growing on the way */
	q = warp_sub_add(subs, WARP_SUB_ALL);
	for (int i = 0; i < 1000; i++)
		dispatch_str(subs, "z", NULL);
	assert_int_equal(warp_sub_pending(subs, q), 256);
	assert_int_equal(warp_sub_stats(subs, q, &st), 0);
	assert_int_equal(st.dropped, 1000 - 256);
	warp_subs_free(subs);
}

struct cb_log {
	int calls, ends, last_id;
	char last[32];
	struct warp_subs *subs;
	int remove_id, add_on_call;
};

static void cb(void *user, int id, const struct warp_sub_msg *m)
{
	struct cb_log *l = user;

	l->last_id = id;
	if (!m) {
		l->ends++;
		return;
	}
	l->calls++;
	snprintf(l->last, sizeof(l->last), "%.*s", (int)m->len, m->data);
	if (l->remove_id) {
		assert_int_equal(warp_sub_remove(l->subs, l->remove_id), 0);
		l->remove_id = 0;
	}
	if (l->add_on_call) {
		assert_true(warp_sub_add(l->subs, WARP_SUB_ALL) > 0);
		l->add_on_call = 0;
	}
}

static void test_callbacks(void **state)
{
	struct warp_subs *subs = warp_subs_new();
	struct cb_log log = { .subs = subs };
	struct warp_sub_spec spec = { .match = WARP_SUB_MATCH_PREFIX,
				      .prefix = "cb",
				      .prefix_len = 2,
				      .cb = cb,
				      .user = &log };
	struct warp_sub_msg *m;
	int c, q, q2;

	c = warp_sub_add(subs, &spec);
	q = warp_sub_add(subs, WARP_SUB_ALL);
	assert_int_equal(dispatch_str(subs, "cb-1", NULL), 2);
	assert_int_equal(log.calls, 1);
	assert_int_equal(log.last_id, c);
	assert_string_equal(log.last, "cb-1");
	assert_int_equal(dispatch_str(subs, "other", NULL), 1);
	assert_int_equal(log.calls, 1);
	/* callback subscriptions have no queue */
	assert_int_equal(warp_sub_pop(subs, c, &m), -EINVAL);
	/* a callback may remove another subscription, which gets nothing more, not even the
	 * message being dispatched */
	log.remove_id = q;
	assert_int_equal(dispatch_str(subs, "cb-2", NULL), 1);
	assert_int_equal(warp_sub_pop(subs, q, &m), -ENOENT);
	/* ... and add one, which sees the next message only */
	log.add_on_call = 1;
	assert_int_equal(dispatch_str(subs, "cb-3", NULL), 1);
	q2 = c + 2;
	assert_int_equal(warp_sub_pending(subs, q2), 0);
	assert_int_equal(dispatch_str(subs, "cb-4", NULL), 2);
	assert_int_equal(pop_expect(subs, q2, "cb-4"), 0);
	/* end of pipe reaches the callback once */
	warp_subs_close(subs, 0);
	warp_subs_close(subs, -ECONNRESET);
	assert_int_equal(log.ends, 1);
	assert_int_equal(warp_subs_close_err(subs), 0);
	warp_subs_free(subs);
}

static int notified[8];

static void notify(void *user, int id)
{
	(void)user;
	notified[id < 8 ? id : 7]++;
}

static void test_unknown_and_close(void **state)
{
	struct warp_subs *subs = warp_subs_new();
	struct warp_sub_msg *m;
	int q, r;

	warp_subs_set_notify(subs, notify, NULL);
	/* never subscribed */
	assert_int_equal(warp_sub_pop(subs, 42, &m), -ENOENT);
	assert_int_equal(warp_sub_pending(subs, 42), -ENOENT);
	assert_int_equal(warp_sub_is_closed(subs, 42), -ENOENT);
	assert_int_equal(warp_sub_remove(subs, 42), -ENOENT);
	assert_int_equal(warp_sub_add(subs, NULL), -EINVAL);
	assert_int_equal(
		warp_sub_add(subs, &(struct warp_sub_spec){ .match = WARP_SUB_MATCH_REGEX }),
		-EINVAL);

	q = warp_sub_add(subs, WARP_SUB_ALL);
	r = warp_sub_add(subs, WARP_SUB_ALL);
	dispatch_str(subs, "1", NULL);
	dispatch_str(subs, "2", NULL);
	assert_int_equal(notified[q], 2);
	assert_int_equal(warp_sub_is_closed(subs, q), 0);
	warp_subs_close(subs, -WARP_EIDLE);
	assert_int_equal(notified[0], 1);
	assert_true(warp_subs_closed(subs));
	assert_int_equal(warp_subs_close_err(subs), -WARP_EIDLE);
	/* no more messages after the end */
	assert_int_equal(dispatch_str(subs, "late", NULL), -WARP_ECLOSED);
	/* queued messages drain first, then the end is reported, repeatedly */
	assert_int_equal(warp_sub_is_closed(subs, q), 0);
	assert_int_equal(pop_expect(subs, q, "1"), 0);
	assert_int_equal(pop_expect(subs, q, "2"), 0);
	assert_int_equal(warp_sub_is_closed(subs, q), 1);
	assert_int_equal(warp_sub_pop(subs, q, &m), -WARP_ECLOSED);
	assert_int_equal(warp_sub_pop(subs, q, &m), -WARP_ECLOSED);
	/* the other queue still holds its copies */
	assert_int_equal(warp_sub_pending(subs, r), 2);
	/* removed: unknown again */
	assert_int_equal(warp_sub_remove(subs, r), 0);
	assert_int_equal(warp_sub_pop(subs, r, &m), -ENOENT);
	/* a subscription made after the end is closed at once */
	q = warp_sub_add(subs, WARP_SUB_ALL);
	assert_int_equal(warp_sub_pop(subs, q, &m), -WARP_ECLOSED);
	warp_subs_free(subs);
}

/* A relay callback that dispatches into the same set (nested) and removes subscriptions. */
static struct warp_subs *relay_subs;
static int relay_target;

static void relay_cb(void *user, int id, const struct warp_sub_msg *m)
{
	if (!m || m->len != 3)
		return;
	assert_int_equal(warp_subs_dispatch(relay_subs, "relayed", 7, NULL, 0), 2);
	if (relay_target) {
		warp_sub_remove(relay_subs, relay_target);
		relay_target = 0;
	}
}

static void test_nested_dispatch(void **state)
{
	struct warp_sub_spec r = { .match = WARP_SUB_MATCH_REGEX,
				   .regex = "^...$",
				   .cb = relay_cb };
	int q1, q2;

	relay_subs = warp_subs_new();
	assert_true(warp_sub_add(relay_subs, &r) > 0);
	q1 = warp_sub_add(relay_subs, WARP_SUB_ALL);
	q2 = warp_sub_add(relay_subs, WARP_SUB_ALL);
	relay_target = q1;
	assert_int_equal(dispatch_str(relay_subs, "abc", NULL), 2); /* relay + q2 */
	assert_int_equal(warp_sub_pending(relay_subs, q1), -ENOENT);
	assert_int_equal(pop_expect(relay_subs, q2, "relayed"), 0);
	assert_int_equal(pop_expect(relay_subs, q2, "abc"), 0);
	warp_subs_free(relay_subs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_all_and_fanout),	cmocka_unit_test(test_prefix_and_regex),
		cmocka_unit_test(test_source),		cmocka_unit_test(test_queue_bound),
		cmocka_unit_test(test_callbacks),	cmocka_unit_test(test_unknown_and_close),
		cmocka_unit_test(test_nested_dispatch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
