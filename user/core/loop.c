// SPDX-License-Identifier: MIT
/*
 * Single-threaded epoll loop with a binary min-heap of timers and a deferred-call queue.
 *
 * fd registrations live in an array indexed by fd; epoll's data word carries (generation, fd)
 * so an event already returned by epoll_wait() for an fd that a previous callback removed (or
 * removed and re-added) in the same batch is recognised as stale and dropped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <warpgate/loop.h>

#define NO_SLOT SIZE_MAX
#define MAX_EVENTS 64

struct fd_entry {
	warp_io_cb cb;
	void *user;
	unsigned int events;
	uint32_t gen;
	bool used;
};

struct warp_timer {
	struct warp_loop *loop;
	warp_timer_cb cb;
	void *user;
	uint64_t deadline;
	size_t slot;
};

struct call {
	warp_call_cb cb;
	void *user;
	struct call *next;
};

struct call_queue {
	struct call *head, *tail;
};

struct warp_loop {
	int epfd;
	int evfd;
	struct fd_entry *fds;
	size_t nfds;
	uint32_t gen;
	struct warp_timer **heap;
	size_t heap_len, heap_cap;
	struct call_queue defer;
	pthread_mutex_t post_lock;
	struct call_queue posted;
	int stop;
	int dispatching;          /* > 0 while callbacks run (nested runs included) */
};

uint64_t warp_time_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t warp_time_ms(void)
{
	return warp_time_ns() / 1000000ull;
}

static void queue_push(struct call_queue *q, struct call *c)
{
	c->next = NULL;
	if (q->tail)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
}

static void evfd_read(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	uint64_t v;
	struct call_queue q;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&loop->post_lock);
	q = loop->posted;
	loop->posted.head = loop->posted.tail = NULL;
	pthread_mutex_unlock(&loop->post_lock);
	if (!q.head)
		return;
	if (loop->defer.tail)
		loop->defer.tail->next = q.head;
	else
		loop->defer.head = q.head;
	loop->defer.tail = q.tail;
}

struct warp_loop *warp_loop_new(void)
{
	struct warp_loop *loop = calloc(1, sizeof(*loop));
	int err;

	if (!loop)
		return NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	loop->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&loop->post_lock, NULL);
	if (loop->epfd < 0 || loop->evfd < 0)
		goto fail;
	err = warp_loop_add_fd(loop, loop->evfd, WARP_EV_READ, evfd_read, NULL);
	if (err) {
		errno = -err;
		goto fail;
	}
	return loop;
fail:
	err = errno;
	warp_loop_free(loop);
	errno = err;
	return NULL;
}

static void free_queue(struct call_queue *q)
{
	struct call *c, *n;

	for (c = q->head; c; c = n) {
		n = c->next;
		free(c);
	}
	q->head = q->tail = NULL;
}

static int run_deferred(struct warp_loop *loop);

void warp_loop_free(struct warp_loop *loop)
{
	if (!loop)
		return;
	/* Deferred and posted calls still queued own what they were given (results of worker
	 * threads, references): run them once so those are released, not leaked. */
	for (int round = 0; round < 4 && (loop->defer.head || loop->posted.head); round++) {
		evfd_read(loop, loop->evfd, WARP_EV_READ, NULL);
		run_deferred(loop);
	}
	for (size_t i = 0; i < loop->heap_len; i++)
		loop->heap[i]->slot = NO_SLOT;
	free(loop->heap);
	free(loop->fds);
	free_queue(&loop->defer);
	free_queue(&loop->posted);
	if (loop->epfd >= 0)
		close(loop->epfd);
	if (loop->evfd >= 0)
		close(loop->evfd);
	pthread_mutex_destroy(&loop->post_lock);
	free(loop);
}

static uint32_t to_epoll(unsigned int events)
{
	return (events & WARP_EV_READ ? EPOLLIN : 0) | (events & WARP_EV_WRITE ? EPOLLOUT : 0);
}

int warp_loop_add_fd(struct warp_loop *loop, int fd, unsigned int events, warp_io_cb cb,
		     void *user)
{
	struct epoll_event ev = { 0 };
	struct fd_entry *e;

	if (!loop || fd < 0 || !cb)
		return -EINVAL;
	if ((size_t)fd >= loop->nfds) {
		size_t n = loop->nfds ? loop->nfds : 64;
		struct fd_entry *nf;

		while (n <= (size_t)fd)
			n *= 2;
		nf = realloc(loop->fds, n * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		memset(nf + loop->nfds, 0, (n - loop->nfds) * sizeof(*nf));
		loop->fds = nf;
		loop->nfds = n;
	}
	e = &loop->fds[fd];
	if (e->used)
		return -EEXIST;
	e->gen = ++loop->gen;
	ev.events = to_epoll(events);
	ev.data.u64 = ((uint64_t)e->gen << 32) | (uint32_t)fd;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	e->cb = cb;
	e->user = user;
	e->events = events;
	e->used = true;
	return 0;
}

int warp_loop_mod_fd(struct warp_loop *loop, int fd, unsigned int events)
{
	struct epoll_event ev = { 0 };
	struct fd_entry *e;

	if (!loop || fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].used)
		return -ENOENT;
	e = &loop->fds[fd];
	if (e->events == events)
		return 0;
	ev.events = to_epoll(events);
	ev.data.u64 = ((uint64_t)e->gen << 32) | (uint32_t)fd;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	e->events = events;
	return 0;
}

int warp_loop_del_fd(struct warp_loop *loop, int fd)
{
	if (!loop || fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].used)
		return -ENOENT;
	loop->fds[fd].used = false;
	loop->fds[fd].cb = NULL;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno != EBADF)
		return -errno;
	return 0;
}

/* ---- timers: binary min-heap keyed by deadline ---- */

static void heap_set(struct warp_loop *loop, size_t i, struct warp_timer *t)
{
	loop->heap[i] = t;
	t->slot = i;
}

static void heap_up(struct warp_loop *loop, size_t i)
{
	struct warp_timer *t = loop->heap[i];

	while (i > 0) {
		size_t p = (i - 1) / 2;

		if (loop->heap[p]->deadline <= t->deadline)
			break;
		heap_set(loop, i, loop->heap[p]);
		i = p;
	}
	heap_set(loop, i, t);
}

static void heap_down(struct warp_loop *loop, size_t i)
{
	struct warp_timer *t = loop->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= loop->heap_len)
			break;
		if (c + 1 < loop->heap_len && loop->heap[c + 1]->deadline < loop->heap[c]->deadline)
			c++;
		if (t->deadline <= loop->heap[c]->deadline)
			break;
		heap_set(loop, i, loop->heap[c]);
		i = c;
	}
	heap_set(loop, i, t);
}

static void heap_remove(struct warp_loop *loop, struct warp_timer *t)
{
	size_t i = t->slot;
	struct warp_timer *last;

	t->slot = NO_SLOT;
	last = loop->heap[--loop->heap_len];
	if (last == t)
		return;
	heap_set(loop, i, last);
	heap_down(loop, i);
	heap_up(loop, last->slot);
}

struct warp_timer *warp_timer_new(struct warp_loop *loop, warp_timer_cb cb, void *user)
{
	struct warp_timer *t;

	if (!loop || !cb) {
		errno = EINVAL;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->loop = loop;
	t->cb = cb;
	t->user = user;
	t->slot = NO_SLOT;
	return t;
}

void warp_timer_arm_at(struct warp_timer *t, uint64_t deadline_ns)
{
	struct warp_loop *loop = t->loop;

	if (t->slot != NO_SLOT) {
		uint64_t old = t->deadline;

		t->deadline = deadline_ns;
		if (deadline_ns < old)
			heap_up(loop, t->slot);
		else
			heap_down(loop, t->slot);
		return;
	}
	if (loop->heap_len == loop->heap_cap) {
		size_t n = loop->heap_cap ? loop->heap_cap * 2 : 32;
		struct warp_timer **nh = realloc(loop->heap, n * sizeof(*nh));

		if (!nh)
			abort(); /* a lost timer would hang its owner; there is no sane recovery */
		loop->heap = nh;
		loop->heap_cap = n;
	}
	t->deadline = deadline_ns;
	heap_set(loop, loop->heap_len++, t);
	heap_up(loop, t->slot);
}

void warp_timer_arm_ns(struct warp_timer *t, uint64_t delay_ns)
{
	warp_timer_arm_at(t, warp_time_ns() + delay_ns);
}

void warp_timer_arm_ms(struct warp_timer *t, uint64_t delay_ms)
{
	warp_timer_arm_at(t, warp_time_ns() + delay_ms * 1000000ull);
}

void warp_timer_cancel(struct warp_timer *t)
{
	if (t && t->slot != NO_SLOT)
		heap_remove(t->loop, t);
}

bool warp_timer_pending(const struct warp_timer *t)
{
	return t && t->slot != NO_SLOT;
}

uint64_t warp_timer_deadline(const struct warp_timer *t)
{
	return t->deadline;
}

void warp_timer_free(struct warp_timer *t)
{
	if (!t)
		return;
	warp_timer_cancel(t);
	free(t);
}

/* ---- deferred and posted calls ---- */

int warp_loop_defer(struct warp_loop *loop, warp_call_cb cb, void *user)
{
	struct call *c = malloc(sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->cb = cb;
	c->user = user;
	queue_push(&loop->defer, c);
	return 0;
}

int warp_loop_post(struct warp_loop *loop, warp_call_cb cb, void *user)
{
	struct call *c = malloc(sizeof(*c));
	uint64_t one = 1;

	if (!c)
		return -ENOMEM;
	c->cb = cb;
	c->user = user;
	pthread_mutex_lock(&loop->post_lock);
	queue_push(&loop->posted, c);
	pthread_mutex_unlock(&loop->post_lock);
	if (write(loop->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

int warp_loop_fd(const struct warp_loop *loop)
{
	return loop->epfd;
}

int warp_loop_next_timeout(const struct warp_loop *loop)
{
	uint64_t now, d;

	if (loop->defer.head)
		return 0;
	if (!loop->heap_len)
		return -1;
	now = warp_time_ns();
	d = loop->heap[0]->deadline;
	if (d <= now)
		return 0;
	d = (d - now + 999999) / 1000000; /* round up: never wake before the deadline */
	return d > INT32_MAX ? INT32_MAX : (int)d;
}

static int run_timers(struct warp_loop *loop)
{
	uint64_t now = warp_time_ns();
	size_t budget = loop->heap_len + 16; /* a timer re-armed at 0 waits for the next round */
	int n = 0;

	while (loop->heap_len && loop->heap[0]->deadline <= now && budget--) {
		struct warp_timer *t = loop->heap[0];

		heap_remove(loop, t);
		t->cb(t, t->user);
		n++;
	}
	return n;
}

static int run_deferred(struct warp_loop *loop)
{
	struct call_queue q = loop->defer;
	struct call *c, *next;
	int n = 0;

	loop->defer.head = loop->defer.tail = NULL;
	for (c = q.head; c; c = next) {
		next = c->next;
		c->cb(c->user);
		free(c);
		n++;
	}
	return n;
}

int warp_loop_run_once(struct warp_loop *loop, int timeout_ms)
{
	struct epoll_event evs[MAX_EVENTS];
	int wait = warp_loop_next_timeout(loop);
	int n, done = 0;

	if (timeout_ms >= 0 && (wait < 0 || timeout_ms < wait))
		wait = timeout_ms;
	n = epoll_wait(loop->epfd, evs, MAX_EVENTS, wait);
	if (n < 0) {
		if (errno != EINTR)
			return -errno;
		n = 0;
	}
	loop->dispatching++;
	for (int i = 0; i < n; i++) {
		int fd = (int)(uint32_t)evs[i].data.u64;
		uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
		struct fd_entry *e;
		unsigned int what = 0;

		if ((size_t)fd >= loop->nfds)
			continue;
		e = &loop->fds[fd];
		if (!e->used || e->gen != gen)
			continue; /* removed by an earlier callback of this batch */
		if (evs[i].events & EPOLLIN)
			what |= WARP_EV_READ;
		if (evs[i].events & EPOLLOUT)
			what |= WARP_EV_WRITE;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			what |= WARP_EV_ERROR | (e->events & WARP_EV_READ);
		e->cb(loop, fd, what, e->user);
		done++;
	}
	done += run_timers(loop);
	done += run_deferred(loop);
	loop->dispatching--;
	return done;
}

bool warp_loop_dispatching(const struct warp_loop *loop)
{
	return loop->dispatching > 0;
}

int warp_loop_run(struct warp_loop *loop)
{
	int err = 0;

	while (!__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE)) {
		err = warp_loop_run_once(loop, -1);
		if (err < 0)
			break;
		err = 0;
	}
	__atomic_store_n(&loop->stop, 0, __ATOMIC_RELEASE);
	return err;
}

void warp_loop_stop(struct warp_loop *loop)
{
	uint64_t one = 1;

	__atomic_store_n(&loop->stop, 1, __ATOMIC_RELEASE);
	if (write(loop->evfd, &one, sizeof(one)) < 0) {
		/* the eventfd counter can only saturate; the flag is already set */
	}
}

int warp_loop_run_until(struct warp_loop *loop, warp_done_cb done, void *user, int timeout_ms)
{
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : warp_time_ns() + timeout_ms * 1000000ull;

	for (;;) {
		uint64_t now;
		int err, wait = -1;

		if (done(user))
			return 0;
		if (__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE))
			return -ECANCELED;
		now = warp_time_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (deadline != UINT64_MAX)
			wait = (int)((deadline - now + 999999) / 1000000);
		err = warp_loop_run_once(loop, wait);
		if (err < 0)
			return err;
	}
}
