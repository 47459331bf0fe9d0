// SPDX-License-Identifier: MIT
/* Leveled logging to stderr or a user callback; level from WARPGATE_LOG. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_level = WARP_LOG_WARN;
static warp_log_cb log_cb;
static void *log_user;

static const char *const level_names[] = { "debug", "info", "warn", "error", "none" };

int warp_log_level_parse(const char *s)
{
	for (size_t i = 0; s && i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (!strcasecmp(s, level_names[i]))
			return (int)i;
	if (s && !strcasecmp(s, "warning"))
		return WARP_LOG_WARN;
	return -EINVAL;
}

static void log_init(void)
{
	int lvl = warp_log_level_parse(getenv("WARPGATE_LOG"));

	if (lvl >= 0)
		__atomic_store_n(&log_level, lvl, __ATOMIC_RELAXED);
}

void warp_log_set_level(enum warp_log_level level)
{
	pthread_once(&log_once, log_init);
	__atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

enum warp_log_level warp_log_get_level(void)
{
	pthread_once(&log_once, log_init);
	return (enum warp_log_level)__atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

bool warp_log_enabled(enum warp_log_level level)
{
	return (int)level >= (int)warp_log_get_level() && level < WARP_LOG_NONE;
}

void warp_log_set_callback(warp_log_cb cb, void *user)
{
	pthread_mutex_lock(&log_lock);
	log_cb = cb;
	log_user = user;
	pthread_mutex_unlock(&log_lock);
}

void warp_vlog(enum warp_log_level level, const char *component, const char *fmt, va_list ap)
{
	char msg[1024];
	int saved = errno;

	if (!warp_log_enabled(level))
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	pthread_mutex_lock(&log_lock);
	if (log_cb) {
		log_cb(level, component ? component : "warp", msg, log_user);
	} else {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		fprintf(stderr, "%02ld:%02ld:%02ld.%03ld %-5s %s: %s\n", (ts.tv_sec / 3600) % 24,
			(ts.tv_sec / 60) % 60, ts.tv_sec % 60, ts.tv_nsec / 1000000, level_names[level],
			component ? component : "warp", msg);
	}
	pthread_mutex_unlock(&log_lock);
	errno = saved;
}

void warp_log(enum warp_log_level level, const char *component, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	warp_vlog(level, component, fmt, ap);
	va_end(ap);
}
