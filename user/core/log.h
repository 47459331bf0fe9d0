/* SPDX-License-Identifier: MIT */
/* Internal logging macros.  Define LOG_COMPONENT before including to tag a file's messages. */
#ifndef WARP_CORE_LOG_H
#define WARP_CORE_LOG_H

#include <stdbool.h>

#include <warpgate/log.h>

#ifndef LOG_COMPONENT
#define LOG_COMPONENT "warp"
#endif

bool warp_log_enabled(enum warp_log_level level);

#define pr_debug(...)                                                                              \
	do {                                                                                       \
		if (warp_log_enabled(WARP_LOG_DEBUG))                                              \
			warp_log(WARP_LOG_DEBUG, LOG_COMPONENT, __VA_ARGS__);                      \
	} while (0)
#define pr_info(...)  warp_log(WARP_LOG_INFO, LOG_COMPONENT, __VA_ARGS__)
#define pr_warn(...)  warp_log(WARP_LOG_WARN, LOG_COMPONENT, __VA_ARGS__)
#define pr_err(...)   warp_log(WARP_LOG_ERROR, LOG_COMPONENT, __VA_ARGS__)

#endif
