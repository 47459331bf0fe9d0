// SPDX-License-Identifier: MIT
/* Event loop: fds, timer ordering and re-arming, deferred and posted calls, embedding. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/loop.h>

struct rec {
	int order[64];
	int n;
};

struct tctx {
	struct rec *rec;
	int id;
	struct warp_timer *t;
	int rearm;
};

static void on_timer(struct warp_timer *t, void *user)
{
	struct tctx *c = user;

	c->rec->order[c->rec->n++] = c->id;
	if (c->rearm-- > 0)
		warp_timer_arm_ms(t, 1);
}

static bool rec_has(void *user)
{
	struct rec *r = user;
	return r->n >= 5;
}

static void test_timer_order(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct rec rec = { 0 };
	struct tctx c[5];
	static const int delays[5] = { 30, 10, 50, 20, 40 };

	assert_non_null(loop);
	for (int i = 0; i < 5; i++) {
		c[i] = (struct tctx){ .rec = &rec, .id = delays[i] };
		c[i].t = warp_timer_new(loop, on_timer, &c[i]);
		warp_timer_arm_ms(c[i].t, (uint64_t)delays[i]);
	}
	/* Cancel and re-arm one to exercise heap removal from the middle. */
	warp_timer_cancel(c[2].t);
	assert_false(warp_timer_pending(c[2].t));
	warp_timer_arm_ms(c[2].t, 50);
	assert_int_equal(warp_loop_run_until(loop, rec_has, &rec, 2000), 0);
	assert_int_equal(rec.n, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(rec.order[i], (i + 1) * 10);
	for (int i = 0; i < 5; i++)
		warp_timer_free(c[i].t);
	warp_loop_free(loop);
}

static void test_timer_deadline_respected(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct rec rec = { 0 };
	struct tctx c = { .rec = &rec, .id = 1 };
	uint64_t t0 = warp_time_ns();

	c.t = warp_timer_new(loop, on_timer, &c);
	warp_timer_arm_ms(c.t, 25);
	while (rec.n == 0)
		assert_true(warp_loop_run_once(loop, 1000) >= 0);
	assert_true(warp_time_ns() - t0 >= 25000000ull);
	warp_timer_free(c.t);
	warp_loop_free(loop);
}

static void test_timer_rearm_self(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct rec rec = { 0 };
	struct tctx c = { .rec = &rec, .id = 7, .rearm = 4 };

	c.t = warp_timer_new(loop, on_timer, &c);
	warp_timer_arm_ms(c.t, 1);
	assert_int_equal(warp_loop_run_until(loop, rec_has, &rec, 2000), 0);
	assert_int_equal(rec.n, 5);
	warp_timer_free(c.t);
	warp_loop_free(loop);
}

struct fdctx {
	struct warp_loop *loop;
	int reads;
	int other_fd;
	char buf[16];
};

static void on_read(struct warp_loop *loop, int fd, unsigned int ev, void *user)
{
	struct fdctx *c = user;
	ssize_t n = read(fd, c->buf, sizeof(c->buf));

	assert_true(ev & WARP_EV_READ);
	if (n > 0)
		c->reads++;
	/* Removing another fd whose event may already be in this batch must be safe. */
	if (c->other_fd >= 0) {
		warp_loop_del_fd(loop, c->other_fd);
		c->other_fd = -1;
	}
}

static void test_fd_events_and_removal(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	int p1[2], p2[2];
	struct fdctx a = { .loop = loop }, b = { .loop = loop, .other_fd = -1 };

	assert_int_equal(pipe(p1), 0);
	assert_int_equal(pipe(p2), 0);
	a.other_fd = p2[0];
	b.other_fd = p1[0];
	assert_int_equal(warp_loop_add_fd(loop, p1[0], WARP_EV_READ, on_read, &a), 0);
	assert_int_equal(warp_loop_add_fd(loop, p2[0], WARP_EV_READ, on_read, &b), 0);
	assert_int_equal(warp_loop_add_fd(loop, p2[0], WARP_EV_READ, on_read, &b), -EEXIST);
	assert_int_equal(write(p1[1], "x", 1), 1);
	assert_int_equal(write(p2[1], "y", 1), 1);
	assert_true(warp_loop_run_once(loop, 1000) >= 1);
	/* Exactly one callback ran: the first removed the other before it was dispatched. */
	assert_int_equal(a.reads + b.reads, 1);
	assert_int_equal(warp_loop_del_fd(loop, p1[0]) == 0 || warp_loop_del_fd(loop, p2[0]) == 0,
			 1);
	for (int i = 0; i < 2; i++) {
		close(p1[i]);
		close(p2[i]);
	}
	warp_loop_free(loop);
}

static void count_cb(void *user)
{
	(*(int *)user)++;
}

static bool count_is_3(void *user)
{
	return *(int *)user == 3;
}

struct poster {
	struct warp_loop *loop;
	int *counter;
};

static void *post_thread(void *arg)
{
	struct poster *p = arg;

	for (int i = 0; i < 2; i++)
		warp_loop_post(p->loop, count_cb, p->counter);
	return NULL;
}

static void test_defer_and_post(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	int counter = 0;
	pthread_t th;
	struct poster p = { loop, &counter };

	assert_int_equal(warp_loop_defer(loop, count_cb, &counter), 0);
	assert_int_equal(warp_loop_next_timeout(loop), 0);
	assert_int_equal(pthread_create(&th, NULL, post_thread, &p), 0);
	assert_int_equal(warp_loop_run_until(loop, count_is_3, &counter, 2000), 0);
	pthread_join(th, NULL);
	assert_int_equal(counter, 3);
	warp_loop_free(loop);
}

static bool never(void *user)
{
	return false;
}

static void test_run_until_timeout(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	uint64_t t0 = warp_time_ms();

	assert_int_equal(warp_loop_run_until(loop, never, NULL, 30), -ETIMEDOUT);
	assert_true(warp_time_ms() - t0 >= 30);
	assert_true(warp_time_ms() - t0 < 1000);
	warp_loop_free(loop);
}

static void stop_cb(void *user)
{
	warp_loop_stop(user);
}

static void test_run_and_stop(void **state)
{
	struct warp_loop *loop = warp_loop_new();

	warp_loop_defer(loop, stop_cb, loop);
	assert_int_equal(warp_loop_run(loop), 0);
	/* The stop flag is consumed: a later run_until works normally. */
	assert_int_equal(warp_loop_run_until(loop, never, NULL, 5), -ETIMEDOUT);
	warp_loop_free(loop);
}

static void test_embed_fd(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	int fd = warp_loop_fd(loop);
	struct rec rec = { 0 };
	struct tctx c = { .rec = &rec, .id = 3 };

	assert_true(fd >= 0);
	c.t = warp_timer_new(loop, on_timer, &c);
	warp_timer_arm_ms(c.t, 10);
	assert_true(warp_loop_next_timeout(loop) > 0);
	assert_true(warp_loop_next_timeout(loop) <= 10);
	usleep(15000);
	assert_int_equal(warp_loop_next_timeout(loop), 0);
	assert_true(warp_loop_run_once(loop, 0) >= 1);
	assert_int_equal(rec.n, 1);
	assert_int_equal(warp_loop_next_timeout(loop), -1);
	warp_timer_free(c.t);
	warp_loop_free(loop);
}

static void count_timer(struct warp_timer *t, void *user)
{
	(*(int *)user)++;
}

static void test_many_timers(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	enum { N = 2000 };
	struct warp_timer **t = calloc(N, sizeof(*t));
	uint64_t last = 0;
	int fired = 0;

	for (int i = 0; i < N; i++) {
		t[i] = warp_timer_new(loop, count_timer, &fired);
		warp_timer_arm_at(t[i], (uint64_t)((i * 7919) % N) + 1);
	}
	for (int i = 0; i < N; i += 3)
		warp_timer_cancel(t[i]);
	/* Deadlines in the past: everything left fires in one run, in deadline order. */
	assert_true(warp_loop_run_once(loop, 0) >= N - (N + 2) / 3);
	assert_int_equal(fired, N - (N + 2) / 3);
	for (int i = 0; i < N; i++) {
		assert_false(warp_timer_pending(t[i]));
		last += warp_timer_deadline(t[i]) > 0;
		warp_timer_free(t[i]);
	}
	assert_int_equal(last, N);
	free(t);
	warp_loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timer_order),
		cmocka_unit_test(test_timer_deadline_respected),
		cmocka_unit_test(test_timer_rearm_self),
		cmocka_unit_test(test_fd_events_and_removal),
		cmocka_unit_test(test_defer_and_post),
		cmocka_unit_test(test_run_until_timeout),
		cmocka_unit_test(test_run_and_stop),
		cmocka_unit_test(test_embed_fd),
		cmocka_unit_test(test_many_timers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
