// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bpf/fp_table.h"

enum { SLOT_FREE = 0, SLOT_LIVE, SLOT_DEAD };

/* Slot: state byte padded to 8, key, value; values stay 8-byte aligned for direct access. */
#define ROUND8(x) (((x) + 7) & ~(size_t)7)

static size_t key_off(void)
{
	return 8;
}

static size_t val_off(const struct fp_table *t)
{
	return 8 + ROUND8(t->ksz);
}

static size_t slot_size(const struct fp_table *t)
{
	return val_off(t) + ROUND8(t->vsz);
}

static uint8_t *slot(const struct fp_table *t, size_t i)
{
	return t->slots + i * slot_size(t);
}

/* FNV-1a: keys are random IDs already, this only has to mix the bytes. */
static size_t hash(const struct fp_table *t, const void *key)
{
	const uint8_t *p = key;
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;

	for (i = 0; i < t->ksz; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return (size_t)(h ^ h >> 32);
}

int fp_table_init(struct fp_table *t, size_t ksz, size_t vsz, size_t max)
{
	memset(t, 0, sizeof(*t));
	t->ksz = ksz;
	t->vsz = vsz;
	t->max = max;
	t->cap = 16;
	t->slots = calloc(t->cap, slot_size(t));
	return t->slots ? 0 : -ENOMEM;
}

void fp_table_fini(struct fp_table *t)
{
	free(t->slots);
	t->slots = NULL;
}

static size_t find(const struct fp_table *t, const void *key, int *found)
{
	size_t mask = t->cap - 1, i = hash(t, key) & mask, tomb = SIZE_MAX;
	uint8_t *s;

	for (;;) {
		s = slot(t, i);
		if (s[0] == SLOT_FREE) {
			*found = 0;
			return tomb != SIZE_MAX ? tomb : i;
		}
		if (s[0] == SLOT_DEAD) {
			if (tomb == SIZE_MAX)
				tomb = i;
		} else if (!memcmp(s + key_off(), key, t->ksz)) {
			*found = 1;
			return i;
		}
		i = (i + 1) & mask;
	}
}

void *fp_table_get(const struct fp_table *t, const void *key)
{
	int found;
	size_t i = find(t, key, &found);

	return found ? slot(t, i) + val_off(t) : NULL;
}

static int grow(struct fp_table *t)
{
	struct fp_table n = *t;
	size_t i;
	int found;

	n.cap = (t->used + 1) * 4 > t->cap ? t->cap * 2 : t->cap; /* else just drop tombstones */
	n.slots = calloc(n.cap, slot_size(t));
	if (!n.slots)
		return -ENOMEM;
	n.dead = 0;
	for (i = 0; i < t->cap; i++) {
		uint8_t *s = slot(t, i);

		if (s[0] == SLOT_LIVE)
			memcpy(slot(&n, find(&n, s + key_off(), &found)), s, slot_size(t));
	}
	free(t->slots);
	*t = n;
	return 0;
}

int fp_table_put(struct fp_table *t, const void *key, const void *val)
{
	int found, err;
	size_t i;
	uint8_t *s;

	i = find(t, key, &found);
	if (!found) {
		if (t->used >= t->max)
			return -ENOSPC;
		if ((t->used + t->dead + 1) * 4 > t->cap * 3) {
			err = grow(t);
			if (err)
				return err;
			i = find(t, key, &found);
		}
		s = slot(t, i);
		if (s[0] == SLOT_DEAD)
			t->dead--;
		t->used++;
		s[0] = SLOT_LIVE;
		memcpy(s + key_off(), key, t->ksz);
	}
	memcpy(slot(t, i) + val_off(t), val, t->vsz);
	return 0;
}

int fp_table_del(struct fp_table *t, const void *key)
{
	int found;
	size_t i = find(t, key, &found);

	if (!found)
		return -ENOENT;
	slot(t, i)[0] = SLOT_DEAD;
	t->used--;
	t->dead++;
	return 0;
}
