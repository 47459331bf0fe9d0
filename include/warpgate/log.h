/* SPDX-License-Identifier: MIT */
/*
 * Logging.  Messages go to stderr unless a callback is installed.  The threshold comes from
 * WARPGATE_LOG (debug, info, warn, error, none) on first use, or from warp_log_set_level().
 * The logging functions are thread-safe.
 */
#ifndef WARPGATE_LOG_H
#define WARPGATE_LOG_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum warp_log_level {
	WARP_LOG_DEBUG = 0,
	WARP_LOG_INFO,
	WARP_LOG_WARN,
	WARP_LOG_ERROR,
	WARP_LOG_NONE,
};

typedef void (*warp_log_cb)(enum warp_log_level level, const char *component, const char *msg,
			    void *user);

void warp_log_set_level(enum warp_log_level level);
enum warp_log_level warp_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "none"; returns a level or -EINVAL. */
int warp_log_level_parse(const char *s);
/* NULL restores the stderr writer. */
void warp_log_set_callback(warp_log_cb cb, void *user);

void warp_log(enum warp_log_level level, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void warp_vlog(enum warp_log_level level, const char *component, const char *fmt, va_list ap);

#ifdef __cplusplus
}
#endif
#endif
