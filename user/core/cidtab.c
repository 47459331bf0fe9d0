// SPDX-License-Identifier: MIT
/* Connection-ID hash table (see cidtab.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/cidtab.h"

static size_t slot_of(const struct cidtab *t, const uint8_t cid[WARP_CID_LEN])
{
	uint64_t h;

	memcpy(&h, cid, sizeof(h));
	h ^= h >> 29; /* CIDs are random, but a caller may pick structured ones */
	h *= 0xbf58476d1ce4e5b9ull;
	return (size_t)(h ^ (h >> 32)) & (t->cap - 1);
}

void cidtab_init(struct cidtab *t)
{
	memset(t, 0, sizeof(*t));
}

void cidtab_free(struct cidtab *t)
{
	free(t->slots);
	cidtab_init(t);
}

static int grow(struct cidtab *t)
{
	struct cidtab n = { 0 };

	n.cap = t->cap ? t->cap * 2 : 64;
	if (t->cap && t->used * 2 < t->cap)
		n.cap = t->cap; /* mostly tombstones: rehash in place size */
	n.slots = calloc(n.cap, sizeof(*n.slots));
	if (!n.slots)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		struct cidtab_slot *s = &t->slots[i];

		if (s->val && s->val != CIDTAB_TOMB) {
			size_t j = slot_of(&n, s->cid);

			while (n.slots[j].val)
				j = (j + 1) & (n.cap - 1);
			n.slots[j] = *s;
			n.used++;
		}
	}
	free(t->slots);
	*t = n;
	return 0;
}

int cidtab_put(struct cidtab *t, const uint8_t cid[WARP_CID_LEN], void *val)
{
	size_t i, tomb = SIZE_MAX;

	if (!val || val == CIDTAB_TOMB)
		return -EINVAL;
	if ((t->used + t->tombs + 1) * 2 > t->cap) {
		int err = grow(t);

		if (err)
			return err;
	}
	for (i = slot_of(t, cid);; i = (i + 1) & (t->cap - 1)) {
		struct cidtab_slot *s = &t->slots[i];

		if (!s->val)
			break;
		if (s->val == CIDTAB_TOMB) {
			if (tomb == SIZE_MAX)
				tomb = i;
			continue;
		}
		if (!memcmp(s->cid, cid, WARP_CID_LEN))
			return -EEXIST;
	}
	if (tomb != SIZE_MAX) {
		i = tomb;
		t->tombs--;
	}
	memcpy(t->slots[i].cid, cid, WARP_CID_LEN);
	t->slots[i].val = val;
	t->used++;
	return 0;
}

static struct cidtab_slot *find(const struct cidtab *t, const uint8_t cid[WARP_CID_LEN])
{
	if (!t->cap)
		return NULL;
	for (size_t i = slot_of(t, cid);; i = (i + 1) & (t->cap - 1)) {
		struct cidtab_slot *s = &t->slots[i];

		if (!s->val)
			return NULL;
		if (s->val != CIDTAB_TOMB && !memcmp(s->cid, cid, WARP_CID_LEN))
			return s;
	}
}

void *cidtab_get(const struct cidtab *t, const uint8_t cid[WARP_CID_LEN])
{
	struct cidtab_slot *s = find(t, cid);

	return s ? s->val : NULL;
}

void *cidtab_del(struct cidtab *t, const uint8_t cid[WARP_CID_LEN])
{
	struct cidtab_slot *s = find(t, cid);
	void *v;

	if (!s)
		return NULL;
	v = s->val;
	s->val = CIDTAB_TOMB;
	t->used--;
	t->tombs++;
	return v;
}
