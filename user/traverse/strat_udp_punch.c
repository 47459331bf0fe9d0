// SPDX-License-Identifier: MIT
/* udp_punch: not implemented yet; the plan records why it was not tried. */
#include "traverse/traverse.h"

static void plan(struct warp_connect *c)
{
	tv_skip(c, &tv_udp_punch, NULL, "not implemented yet");
}

static int start(struct tv_attempt *a)
{
	return -95; /* -EOPNOTSUPP */
}

const struct tv_strategy tv_udp_punch = {
	.id = WARP_STRAT_UDP_PUNCH,
	.name = "udp_punch",
	.plan = plan,
	.start = start,
};
