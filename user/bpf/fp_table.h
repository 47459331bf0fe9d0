/* SPDX-License-Identifier: MIT */
/*
 * Small open-addressing hash table with fixed-size keys and values stored inline: the
 * userspace twin of the fast path's BPF hash maps (keepalive, probes, CID routes).
 */
#ifndef WARP_BPF_FP_TABLE_H
#define WARP_BPF_FP_TABLE_H

#include <stddef.h>
#include <stdint.h>

struct fp_table {
	uint8_t *slots; /* cap slots: state byte, key, value (8-byte aligned) */
	size_t cap;	/* power of two */
	size_t used;	/* live entries */
	size_t dead;	/* tombstones */
	size_t max;	/* entry limit, like a map's max_entries */
	size_t ksz, vsz;
};

int fp_table_init(struct fp_table *t, size_t ksz, size_t vsz, size_t max);
void fp_table_fini(struct fp_table *t);
/* Pointer to the value stored for key, or NULL. */
void *fp_table_get(const struct fp_table *t, const void *key);
/* Inserts or replaces; -ENOSPC past max. */
int fp_table_put(struct fp_table *t, const void *key, const void *val);
int fp_table_del(struct fp_table *t, const void *key);

#endif
