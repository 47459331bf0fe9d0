/* SPDX-License-Identifier: MIT */
/*
 * Event loop: one thread, epoll, monotonic timers (a binary heap), deferred calls.
 *
 * Thread-safety: a loop and every object attached to it (nodes, pipes, timers) belong to the
 * thread that runs the loop.  The only calls allowed from other threads are warp_loop_post()
 * and warp_loop_stop().  Several nodes may share one loop.
 *
 * Embedding: poll warp_loop_fd() for readability in another loop and call
 * warp_loop_run_once(loop, 0) when it is readable or when warp_loop_next_timeout() expires.
 */
#ifndef WARPGATE_LOOP_H
#define WARPGATE_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct warp_loop;
struct warp_timer;

enum {
	WARP_EV_READ = 1u << 0,
	WARP_EV_WRITE = 1u << 1,
	WARP_EV_ERROR = 1u << 2, /* reported only: error or hang-up on the fd */
};

typedef void (*warp_io_cb)(struct warp_loop *loop, int fd, unsigned int events, void *user);
typedef void (*warp_timer_cb)(struct warp_timer *timer, void *user);
typedef void (*warp_call_cb)(void *user);
/* Predicate for warp_loop_run_until(): return true when the wait is over. */
typedef bool (*warp_done_cb)(void *user);

struct warp_loop *warp_loop_new(void);
/* Frees the loop; deferred and posted calls still queued run once first; timers and fds
 * still registered are dropped (fds are not closed). */
void warp_loop_free(struct warp_loop *loop);

int warp_loop_add_fd(struct warp_loop *loop, int fd, unsigned int events, warp_io_cb cb,
		     void *user);
int warp_loop_mod_fd(struct warp_loop *loop, int fd, unsigned int events);
/* Safe from inside any callback, including the fd's own. */
int warp_loop_del_fd(struct warp_loop *loop, int fd);

struct warp_timer *warp_timer_new(struct warp_loop *loop, warp_timer_cb cb, void *user);
/* (Re)arms a one-shot timer; a pending timer is moved. */
void warp_timer_arm_ns(struct warp_timer *timer, uint64_t delay_ns);
void warp_timer_arm_ms(struct warp_timer *timer, uint64_t delay_ms);
void warp_timer_arm_at(struct warp_timer *timer, uint64_t deadline_ns);
void warp_timer_cancel(struct warp_timer *timer);
bool warp_timer_pending(const struct warp_timer *timer);
uint64_t warp_timer_deadline(const struct warp_timer *timer);
void warp_timer_free(struct warp_timer *timer);

/* Runs cb once, on the loop thread, after the current callback returns. */
int warp_loop_defer(struct warp_loop *loop, warp_call_cb cb, void *user);
/* Thread-safe variant of warp_loop_defer(); wakes the loop. */
int warp_loop_post(struct warp_loop *loop, warp_call_cb cb, void *user);

int warp_loop_fd(const struct warp_loop *loop);
/* Milliseconds until the next timer or deferred call (-1: none, 0: due now). */
int warp_loop_next_timeout(const struct warp_loop *loop);
/* One iteration: waits at most timeout_ms (-1: no limit) for I/O, then dispatches I/O, expired
 * timers and deferred calls.  Returns the number of callbacks run or a negative error. */
int warp_loop_run_once(struct warp_loop *loop, int timeout_ms);
/* Runs until warp_loop_stop(). */
int warp_loop_run(struct warp_loop *loop);
void warp_loop_stop(struct warp_loop *loop);
/* Blocking helper: runs the loop until done(user) is true (0) or timeout_ms passes
 * (-ETIMEDOUT; timeout_ms < 0 waits forever).  Nested calls are allowed. */
int warp_loop_run_until(struct warp_loop *loop, warp_done_cb done, void *user, int timeout_ms);

/* True while the loop runs callbacks (work queued now is flushed when they return). */
bool warp_loop_dispatching(const struct warp_loop *loop);

/* CLOCK_MONOTONIC in nanoseconds / milliseconds. */
uint64_t warp_time_ns(void);
uint64_t warp_time_ms(void);

#ifdef __cplusplus
}
#endif
#endif
