// SPDX-License-Identifier: MIT
/* turn: not implemented yet; the plan records why it was not tried. */
#include "traverse/traverse.h"

static void plan(struct warp_connect *c)
{
	tv_skip(c, &tv_turn, NULL, "not implemented yet");
}

static int start(struct tv_attempt *a)
{
	return -95; /* -EOPNOTSUPP */
}

const struct tv_strategy tv_turn = {
	.id = WARP_STRAT_TURN,
	.name = "turn",
	.plan = plan,
	.start = start,
};
