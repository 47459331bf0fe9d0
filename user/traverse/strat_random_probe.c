// SPDX-License-Identifier: MIT
/* random_probe: not implemented yet; the plan records why it was not tried. */
#include "traverse/traverse.h"

static void plan(struct warp_connect *c)
{
	tv_skip(c, &tv_random_probe, NULL, "not implemented yet");
}

static int start(struct tv_attempt *a)
{
	return -95; /* -EOPNOTSUPP */
}

const struct tv_strategy tv_random_probe = {
	.id = WARP_STRAT_RANDOM_PROBE,
	.name = "random_probe",
	.plan = plan,
	.start = start,
};
