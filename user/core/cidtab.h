/* SPDX-License-Identifier: MIT */
/* Connection-ID table: 8-byte CIDs (random, so the first bytes are the hash) to objects.
 * Open addressing with linear probing and tombstones; grows at 50% load. */
#ifndef WARP_CORE_CIDTAB_H
#define WARP_CORE_CIDTAB_H

#include <stddef.h>
#include <stdint.h>

#include <warpgate/wire.h>

struct cidtab_slot {
	uint8_t cid[WARP_CID_LEN];
	void *val;     /* NULL: empty; CIDTAB_TOMB: deleted */
};

struct cidtab {
	struct cidtab_slot *slots;
	size_t cap, used, tombs;
};

#define CIDTAB_TOMB ((void *)1)

void cidtab_init(struct cidtab *t);
void cidtab_free(struct cidtab *t);
int cidtab_put(struct cidtab *t, const uint8_t cid[WARP_CID_LEN], void *val);
void *cidtab_get(const struct cidtab *t, const uint8_t cid[WARP_CID_LEN]);
void *cidtab_del(struct cidtab *t, const uint8_t cid[WARP_CID_LEN]);

#endif
