// SPDX-License-Identifier: MIT
/* tcp_punch: not implemented yet; the plan records why it was not tried. */
#include "traverse/traverse.h"

static void plan(struct warp_connect *c)
{
	tv_skip(c, &tv_tcp_punch, NULL, "not implemented yet");
}

static int start(struct tv_attempt *a)
{
	return -95; /* -EOPNOTSUPP */
}

const struct tv_strategy tv_tcp_punch = {
	.id = WARP_STRAT_TCP_PUNCH,
	.name = "tcp_punch",
	.plan = plan,
	.start = start,
};
