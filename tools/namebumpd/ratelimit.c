// SPDX-License-Identifier: MIT
/*
 * Per-source token buckets in a fixed-size table (no allocation per sender, so a flood of
 * spoofed addresses costs memory only up to the table): an IPv4 address or an IPv6 /64 maps to
 * a slot by keyed hash; on a collision the stalest of a few probed slots is recycled.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/util.h"
#include "nbd.h"

#define RL_SLOTS 16384
#define RL_PROBE 4

struct rl_slot {
	uint8_t key[9]; /* af + 8 address bytes */
	bool used;
	double tokens;
	uint64_t last_ms;
};

struct nb_ratelimit {
	pthread_mutex_t lock;
	double rate, burst;
	uint8_t hkey[crypto_shorthash_KEYBYTES];
	struct rl_slot slots[RL_SLOTS];
};

struct nb_ratelimit *nb_ratelimit_new(double rate, double burst)
{
	struct nb_ratelimit *rl = calloc(1, sizeof(*rl));

	if (!rl)
		return NULL;
	pthread_mutex_init(&rl->lock, NULL);
	rl->rate = rate;
	rl->burst = burst;
	warp_random(rl->hkey, sizeof(rl->hkey));
	return rl;
}

void nb_ratelimit_free(struct nb_ratelimit *rl)
{
	if (!rl)
		return;
	pthread_mutex_destroy(&rl->lock);
	free(rl);
}

uint32_t nb_ratelimit_take(struct nb_ratelimit *rl, const struct nb_ip *ip, double cost,
			   uint64_t now_ms, bool *drop)
{
	uint8_t key[9] = { ip->af };
	uint8_t h[crypto_shorthash_BYTES];
	struct rl_slot *s = NULL, *stalest = NULL;
	uint32_t wait = 0;
	size_t base;

	*drop = false;
	if (!rl || rl->rate <= 0)
		return 0;
	memcpy(key + 1, ip->addr, ip->af == 4 ? 4 : 8);
	crypto_shorthash(h, key, sizeof(key), rl->hkey);
	base = (size_t)(h[0] | h[1] << 8 | h[2] << 16) % RL_SLOTS;
	pthread_mutex_lock(&rl->lock);
	for (size_t i = 0; i < RL_PROBE; i++) {
		struct rl_slot *c = &rl->slots[(base + i) % RL_SLOTS];

		if (c->used && !memcmp(c->key, key, sizeof(key))) {
			s = c;
			break;
		}
		if (!c->used) {
			if (!stalest || stalest->used)
				stalest = c;
		} else if (!stalest || (stalest->used && c->last_ms < stalest->last_ms)) {
			stalest = c;
		}
	}
	if (!s) {
		s = stalest;
		memcpy(s->key, key, sizeof(key));
		s->used = true;
		s->tokens = rl->burst;
		s->last_ms = now_ms;
	}
	if (now_ms > s->last_ms) {
		s->tokens += (double)(now_ms - s->last_ms) * rl->rate / 1000.0;
		if (s->tokens > rl->burst)
			s->tokens = rl->burst;
		s->last_ms = now_ms;
	}
	if (s->tokens >= cost) {
		s->tokens -= cost;
	} else {
		/* Refusals cost a token too, so a sender that keeps pushing sinks further and
		 * past one burst below zero stops getting (signed) refusals at all. */
		s->tokens -= 1;
		if (s->tokens < -rl->burst) {
			s->tokens = -rl->burst;
			*drop = true;
		}
		wait = (uint32_t)((cost - s->tokens) * 1000.0 / rl->rate) + 1;
	}
	pthread_mutex_unlock(&rl->lock);
	return wait;
}
