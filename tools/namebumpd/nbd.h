/* SPDX-License-Identifier: MIT */
/* namebumpd internals: configuration, shared state, the sans-IO request core. */
#ifndef NAMEBUMPD_NBD_H
#define NAMEBUMPD_NBD_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <warpgate/identity.h>

#include "name/proto.h"
#include "store.h"

#define NB_MAX_LISTEN  8
#define NB_MAX_TLDS    8
#define NB_MAX_THREADS 16

struct nb_config {
	char listen[NB_MAX_LISTEN][80];
	int n_listen;
	char db[PATH_MAX];
	char key[PATH_MAX];
	int threads;
	uint64_t window_ms;   /* accepted |updated - now| */
	uint64_t lifetime_ms; /* a name unrefreshed this long is gone */
	uint64_t min_age_ms;  /* never bumpable before this age */
	uint32_t quota[NB_B_MAX];
	double rate; /* tokens per second per IPv4 address / IPv6 /64; 0: off */
	double burst;
	char tlds[NB_MAX_TLDS][16];
	int n_tlds;
	int64_t clock_offset_ms; /* testing only: shifts the server's wall clock */
	bool sync_full;
	bool allow_sealed;
	unsigned int batch_max; /* replies per signature */
	unsigned int gc_interval_ms;
};

void nb_config_defaults(struct nb_config *cfg);
/* Reads a JSON config file over the current values. */
int nb_config_load(struct nb_config *cfg, const char *path);
int nb_config_check(const struct nb_config *cfg);

/* Token buckets per IPv4 address / IPv6 /64, shared by the workers. */
struct nb_ratelimit;
struct nb_ratelimit *nb_ratelimit_new(double rate, double burst);
void nb_ratelimit_free(struct nb_ratelimit *rl);
/* 0 when cost tokens were taken; otherwise the ms until they will be there (>0), and
 * *drop set when the sender is far enough over that it gets no answer at all. */
uint32_t nb_ratelimit_take(struct nb_ratelimit *rl, const struct nb_ip *ip, double cost,
			   uint64_t now_ms, bool *drop);

/* Per-thread cache of parsed public keys for signature checks. */
struct nb_vcache;
struct nb_vcache *nb_vcache_new(unsigned int slots);
void nb_vcache_free(struct nb_vcache *vc);
/* Same contract as wn_record_verify(). */
int nb_vcache_verify_record(struct nb_vcache *vc, const struct wn_record *rec);

struct nb_stats {
	uint64_t rx, tx, get, put, del, ok, err, dropped, rate_limited, truncated, bumped, sealed,
		batches, verify;
};

struct nb_shared {
	const struct nb_config *cfg;
	const struct nb_store_ops *ops;
	struct warp_identity *key;
	struct wn_signer signer;    /* signs reply batches with key */
	pthread_mutex_t write_lock; /* one writer at a time, without SQLite's busy sleeps */
	struct nb_ratelimit *rl;
	struct nb_stats stats; /* updated with atomics */
};

struct nb_core {
	struct nb_shared *sh;
	struct nb_store *store;
	struct nb_vcache *vc;
	uint64_t next_gc;
};

/* One request in a batch: input, then output. */
struct nb_slot {
	const uint8_t *in;
	size_t in_len;
	struct nb_ip src;
	bool udp; /* replies must not be larger than the request */
	uint8_t out[WN_MAX_PACKET];
	size_t out_len;
	bool send;
	/* private to core.c */
	struct wn_request req;
	struct wn_reply rep;
	bool sealed, pending;
	uint8_t reply_key[WN_SEAL_KEY];
	uint8_t inner[WN_MAX_PACKET]; /* opened sealed request, then the reply before sealing */
	size_t inner_len;
};

/* A batch of requests that are answered together. */
struct nb_batch {
	struct nb_slot *slots;
	size_t n;
	uint64_t now; /* server clock for the whole batch */
};

int nb_core_init(struct nb_core *c, struct nb_shared *sh);
void nb_core_fini(struct nb_core *c);
/* Handles n requests (n <= WN_MAX_BATCH): writes in one transaction, replies under one
 * signature.  Sets out/out_len/send of every slot. */
void nb_core_run(struct nb_core *c, struct nb_slot *slots, size_t n);
/* The same in three steps, so writes of several batches can share one commit (and one fsync)
 * on another thread: prepare parses, answers reads and verifies signatures (returns true when
 * the batch has writes); commit applies the writes of nb batches in one transaction; finish
 * signs and encodes the replies. */
bool nb_core_prepare(struct nb_core *c, struct nb_batch *b);
void nb_core_commit(struct nb_core *c, struct nb_batch **batches, size_t nb);
void nb_core_finish(struct nb_core *c, struct nb_batch *b);
/* Periodic housekeeping (expired names); call now and then. */
void nb_core_tick(struct nb_core *c);
uint64_t nb_now(const struct nb_config *cfg);

/* Server key file: 64 hex digits, created 0600 when missing. */
struct warp_identity *nb_key_load(const char *path, bool create, bool *created);

#define NB_STAT_ADD(sh, field, n) __atomic_add_fetch(&(sh)->stats.field, (n), __ATOMIC_RELAXED)

#endif
