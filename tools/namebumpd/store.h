/* SPDX-License-Identifier: MIT */
/*
 * namebumpd storage interface.  A backend stores rows and answers the few bucket queries the
 * quota logic needs; all policy (ownership, replay, quotas, bumping) lives above it in core.c,
 * so a PostgreSQL backend for several servers sharing one database only has to implement these
 * primitives (with SELECT ... FOR UPDATE in get() inside a transaction).
 *
 * One nb_store is one connection, used by one thread.  Writes happen between begin() and
 * commit(); commit() returns only once the transaction is durable (the server acknowledges
 * writes after it).
 */
#ifndef NAMEBUMPD_STORE_H
#define NAMEBUMPD_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "name/proto.h"

/* The address a name was last written from. */
struct nb_ip {
	uint8_t af; /* 4 or 6 */
	uint8_t addr[16];
};

enum nb_bucket {
	NB_B_V4,     /* IPv4 address */
	NB_B_V6_128, /* IPv6 address */
	NB_B_V6_64,
	NB_B_V6_48,
	NB_B_MAX
};

struct nb_row {
	struct wn_record rec;
	uint64_t refreshed; /* server clock (ms) of the last accepted write */
	uint64_t expires;   /* server clock (ms) from which the name may be bumped */
	struct nb_ip ip;
};

struct nb_store;

struct nb_store_ops {
	const char *name;
	/* dsn: the backend's location (SQLite: a file path).  sync_full: fsync every commit. */
	struct nb_store *(*open)(const char *dsn, bool sync_full);
	void (*close)(struct nb_store *s);
	/* 0 and the row, or -WARP_ENOTFOUND. */
	int (*get)(struct nb_store *s, const char *name, struct nb_row *row);
	int (*begin)(struct nb_store *s);
	int (*commit)(struct nb_store *s);
	void (*rollback)(struct nb_store *s);
	int (*upsert)(struct nb_store *s, const struct nb_row *row);
	int (*remove)(struct nb_store *s, const char *name);
	/* Names whose address falls in bucket b of ip. */
	int (*count)(struct nb_store *s, enum nb_bucket b, const struct nb_ip *ip, uint64_t *n);
	/* The least recently refreshed name of the bucket with expires <= now, other than skip;
	 * -WARP_ENOTFOUND when none. */
	int (*oldest_bumpable)(struct nb_store *s, enum nb_bucket b, const struct nb_ip *ip,
			       uint64_t now, const char *skip, char name[WARP_NAME_FQ_MAX + 1]);
	/* Deletes rows refreshed before `before`; returns how many. */
	int (*gc)(struct nb_store *s, uint64_t before);
	/* Background upkeep on its own connection (SQLite: a passive WAL checkpoint, so commits
	 * never stall on one); may be NULL. */
	int (*maintain)(struct nb_store *s);
	/* Number of rows (statistics). */
	int (*total)(struct nb_store *s, uint64_t *n);
};

extern const struct nb_store_ops nb_store_sqlite;

/* Bucket key bytes of ip for bucket b (how many leading address bytes count). */
static inline unsigned int nb_bucket_bytes(enum nb_bucket b)
{
	static const unsigned int bytes[NB_B_MAX] = { 4, 16, 8, 6 };
	return bytes[b];
}

#endif
