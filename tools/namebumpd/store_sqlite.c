// SPDX-License-Identifier: MIT
/*
 * SQLite backend: WAL journal (readers never block the writer), prepared statements, schema
 * versioned with PRAGMA user_version and upgraded by the migrations below, in one
 * transaction each.  With synchronous=FULL every commit is fsynced before it returns, so a
 * write the server acknowledged survives a crash or power loss; NORMAL (sync_full false) only
 * survives a crash of the process.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "namebumpd"
#include "core/log.h"
#include "store.h"

#define SCHEMA_VERSION 2

#define BCOUNT_INC1(c, col)                                                            \
	" INSERT INTO bcount (col, k, n) SELECT " #c ", NEW." col ", 1 WHERE NEW." col \
	" IS NOT NULL"                                                                 \
	" ON CONFLICT (col, k) DO UPDATE SET n = n + 1;"
#define BCOUNT_DEC1(c, col) " UPDATE bcount SET n = n - 1 WHERE col = " #c " AND k = OLD." col ";"
#define BCOUNT_INC \
	BCOUNT_INC1(0, "b32") BCOUNT_INC1(1, "b128") BCOUNT_INC1(2, "b64") BCOUNT_INC1(3, "b48")
#define BCOUNT_DEC \
	BCOUNT_DEC1(0, "b32") BCOUNT_DEC1(1, "b128") BCOUNT_DEC1(2, "b64") BCOUNT_DEC1(3, "b48")

static const char *const migrations[SCHEMA_VERSION] = {
	/* 0 -> 1 */
	"CREATE TABLE names ("
	" name TEXT PRIMARY KEY,"
	" kind INTEGER NOT NULL,"
	" value BLOB NOT NULL,"
	" owner BLOB NOT NULL,"
	" updated INTEGER NOT NULL,"
	" sig BLOB NOT NULL,"
	" refreshed INTEGER NOT NULL,"
	" expires INTEGER NOT NULL,"
	" af INTEGER NOT NULL,"
	" b32 INTEGER, b48 INTEGER, b64 INTEGER, b128 BLOB"
	") WITHOUT ROWID;"
	"CREATE INDEX names_b32 ON names(b32, refreshed) WHERE b32 IS NOT NULL;"
	"CREATE INDEX names_b48 ON names(b48, refreshed) WHERE b48 IS NOT NULL;"
	"CREATE INDEX names_b64 ON names(b64, refreshed) WHERE b64 IS NOT NULL;"
	"CREATE INDEX names_b128 ON names(b128, refreshed) WHERE b128 IS NOT NULL;"
	"CREATE INDEX names_refreshed ON names(refreshed);"
	"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"INSERT INTO meta VALUES ('created_by', 'namebumpd');",
	/*
	 * 1 -> 2: per-bucket name counts kept by triggers, so a quota check is one lookup
	 * instead of counting an index range (col: 0 b32, 1 b128, 2 b64, 3 b48).
	 */
	"CREATE TABLE bcount (col INTEGER NOT NULL, k NOT NULL, n INTEGER NOT NULL,"
	" PRIMARY KEY (col, k)) WITHOUT ROWID;"
	"INSERT INTO bcount SELECT 0, b32, COUNT(*) FROM names WHERE b32 IS NOT NULL GROUP BY b32;"
	"INSERT INTO bcount SELECT 1, b128, COUNT(*) FROM names WHERE b128 IS NOT NULL"
	" GROUP BY b128;"
	"INSERT INTO bcount SELECT 2, b64, COUNT(*) FROM names WHERE b64 IS NOT NULL GROUP BY b64;"
	"INSERT INTO bcount SELECT 3, b48, COUNT(*) FROM names WHERE b48 IS NOT NULL GROUP BY b48;"
	"CREATE TRIGGER names_ins AFTER INSERT ON names BEGIN" BCOUNT_INC " END;"
	"CREATE TRIGGER names_del AFTER DELETE ON names BEGIN" BCOUNT_DEC " END;"
	"CREATE TRIGGER names_upd AFTER UPDATE OF b32, b48, b64, b128 ON names BEGIN" BCOUNT_DEC
		BCOUNT_INC " END;",
};

static const char *const bucket_col[NB_B_MAX] = { "b32", "b128", "b64", "b48" };

enum {
	ST_GET,
	ST_UPSERT,
	ST_REMOVE,
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_GC,
	ST_GC2,
	ST_TOTAL,
	ST_COUNT0,
	ST_OLDEST0 = ST_COUNT0 + NB_B_MAX,
	ST_MAX = ST_OLDEST0 + NB_B_MAX
};

struct nb_store {
	sqlite3 *db;
	sqlite3_stmt *st[ST_MAX];
};

static int db_err(struct nb_store *s, const char *what)
{
	pr_err("sqlite: %s: %s", what, sqlite3_errmsg(s->db));
	return -EIO;
}

static int exec(struct nb_store *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		pr_err("sqlite: %s", msg ? msg : "error");
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

static int user_version(struct nb_store *s, int *v)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return db_err(s, "user_version");
	rc = sqlite3_step(st);
	*v = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
	sqlite3_finalize(st);
	return *v < 0 ? db_err(s, "user_version") : 0;
}

static int migrate(struct nb_store *s)
{
	char sql[64];
	int v, err;

	err = exec(s, "BEGIN IMMEDIATE");
	if (err)
		return err;
	err = user_version(s, &v);
	if (err)
		goto fail;
	if (v > SCHEMA_VERSION) {
		pr_err("database schema %d is newer than this namebumpd (%d)", v, SCHEMA_VERSION);
		err = -WARP_EVERSION;
		goto fail;
	}
	for (; v < SCHEMA_VERSION; v++) {
		pr_info("database: migrating schema %d -> %d", v, v + 1);
		err = exec(s, migrations[v]);
		if (err)
			goto fail;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		err = exec(s, sql);
		if (err)
			goto fail;
	}
	return exec(s, "COMMIT");
fail:
	exec(s, "ROLLBACK");
	return err;
}

static int sq_prepare(struct nb_store *s, int i, const char *sql)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL) !=
	    SQLITE_OK)
		return db_err(s, sql);
	return 0;
}

static void sq_close(struct nb_store *s)
{
	if (!s)
		return;
	for (int i = 0; i < ST_MAX; i++)
		sqlite3_finalize(s->st[i]);
	sqlite3_close(s->db);
	free(s);
}

static struct nb_store *sq_open(const char *path, bool sync_full)
{
	struct nb_store *s = calloc(1, sizeof(*s));
	char sql[256];
	int err = EIO;

	if (!s)
		return NULL;
	if (sqlite3_open_v2(path, &s->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		pr_err("cannot open database %s: %s", path,
		       s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 10000);
	snprintf(sql, sizeof(sql),
		 "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA temp_store=MEMORY;"
		 /* checkpoints run from maintain(); this is only the safety net */
		 " PRAGMA wal_autocheckpoint=16384;",
		 sync_full ? "FULL" : "NORMAL");
	if (exec(s, sql))
		goto fail;
	err = -migrate(s);
	if (err)
		goto fail;
	err = EIO;
	if (sq_prepare(s, ST_GET,
		       "SELECT kind, value, owner, updated, sig, refreshed, expires, af, b32, b128"
		       " FROM names WHERE name = ?1") ||
	    sq_prepare(
		    s, ST_UPSERT,
		    "INSERT INTO names (name, kind, value, owner, updated, sig,"
		    " refreshed, expires, af, b32, b48, b64, b128)"
		    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
		    " ON CONFLICT (name) DO UPDATE SET kind = excluded.kind,"
		    " value = excluded.value, owner = excluded.owner, updated = excluded.updated,"
		    " sig = excluded.sig, refreshed = excluded.refreshed,"
		    " expires = excluded.expires, af = excluded.af, b32 = excluded.b32,"
		    " b48 = excluded.b48, b64 = excluded.b64, b128 = excluded.b128") ||
	    sq_prepare(s, ST_REMOVE, "DELETE FROM names WHERE name = ?1") ||
	    sq_prepare(s, ST_BEGIN, "BEGIN IMMEDIATE") || sq_prepare(s, ST_COMMIT, "COMMIT") ||
	    sq_prepare(s, ST_ROLLBACK, "ROLLBACK") ||
	    sq_prepare(s, ST_GC, "DELETE FROM names WHERE refreshed < ?1") ||
	    sq_prepare(s, ST_GC2, "DELETE FROM bcount WHERE n <= 0") ||
	    sq_prepare(s, ST_TOTAL, "SELECT COUNT(*) FROM names"))
		goto fail;
	for (int b = 0; b < NB_B_MAX; b++) {
		snprintf(sql, sizeof(sql), "SELECT n FROM bcount WHERE col = %d AND k = ?1", b);
		if (sq_prepare(s, ST_COUNT0 + b, sql))
			goto fail;
		snprintf(sql, sizeof(sql),
			 "SELECT name FROM names WHERE %s = ?1 AND expires <= ?2 AND name != ?3"
			 " ORDER BY refreshed LIMIT 1",
			 bucket_col[b]);
		if (sq_prepare(s, ST_OLDEST0 + b, sql))
			goto fail;
	}
	return s;
fail:
	sq_close(s);
	errno = err;
	return NULL;
}

/* Binds the bucket key of ip for bucket b at index idx. */
static void bind_bucket(sqlite3_stmt *st, int idx, enum nb_bucket b, const struct nb_ip *ip)
{
	uint64_t v = 0;

	if (b == NB_B_V6_128) {
		sqlite3_bind_blob(st, idx, ip->addr, 16, SQLITE_TRANSIENT);
		return;
	}
	for (unsigned int i = 0; i < nb_bucket_bytes(b); i++)
		v = v << 8 | ip->addr[i];
	sqlite3_bind_int64(st, idx, (sqlite3_int64)v);
}

static int step_done(struct nb_store *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : db_err(s, what);
}

static int blob_copy(sqlite3_stmt *st, int col, void *dst, size_t want, size_t max)
{
	const void *p = sqlite3_column_blob(st, col);
	size_t n = (size_t)sqlite3_column_bytes(st, col);

	if ((want && n != want) || n > max || (n && !p))
		return -WARP_EMALFORMED;
	if (n)
		memcpy(dst, p, n);
	return (int)n;
}

static int sq_get(struct nb_store *s, const char *name, struct nb_row *row)
{
	sqlite3_stmt *st = s->st[ST_GET];
	int rc, n, err = 0;

	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		err = -WARP_ENOTFOUND;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		err = db_err(s, "get");
		goto out;
	}
	memset(row, 0, sizeof(*row));
	row->rec.kind = (uint8_t)sqlite3_column_int(st, 0);
	row->rec.name_len = (uint8_t)strlen(name);
	memcpy(row->rec.name, name, row->rec.name_len + 1u);
	n = blob_copy(st, 1, row->rec.value, 0, WARP_NAME_VALUE_MAX);
	if (n < 0 || blob_copy(st, 2, row->rec.owner, WARP_PUBKEY_LEN, WARP_PUBKEY_LEN) < 0 ||
	    blob_copy(st, 4, row->rec.sig, WARP_SIG_LEN, WARP_SIG_LEN) < 0) {
		err = -EIO;
		pr_err("corrupt row for %s", name);
		goto out;
	}
	row->rec.value_len = (uint16_t)n;
	row->rec.updated = (uint64_t)sqlite3_column_int64(st, 3);
	row->refreshed = (uint64_t)sqlite3_column_int64(st, 5);
	row->expires = (uint64_t)sqlite3_column_int64(st, 6);
	row->ip.af = (uint8_t)sqlite3_column_int(st, 7);
	if (row->ip.af == 4) {
		uint32_t v = (uint32_t)sqlite3_column_int64(st, 8);

		row->ip.addr[0] = (uint8_t)(v >> 24);
		row->ip.addr[1] = (uint8_t)(v >> 16);
		row->ip.addr[2] = (uint8_t)(v >> 8);
		row->ip.addr[3] = (uint8_t)v;
	} else if (blob_copy(st, 9, row->ip.addr, 16, 16) < 0) {
		err = -EIO;
	}
out:
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return err;
}

static int sq_begin(struct nb_store *s)
{
	return step_done(s, s->st[ST_BEGIN], "begin");
}

static int sq_commit(struct nb_store *s)
{
	int err = step_done(s, s->st[ST_COMMIT], "commit");

	if (err && !sqlite3_get_autocommit(s->db))
		step_done(s, s->st[ST_ROLLBACK], "rollback");
	return err;
}

static void sq_rollback(struct nb_store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		step_done(s, s->st[ST_ROLLBACK], "rollback");
}

static int sq_upsert(struct nb_store *s, const struct nb_row *row)
{
	sqlite3_stmt *st = s->st[ST_UPSERT];
	const struct wn_record *r = &row->rec;

	sqlite3_bind_text(st, 1, r->name, r->name_len, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, r->kind);
	sqlite3_bind_blob(st, 3, r->value, r->value_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 4, r->owner, WARP_PUBKEY_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)r->updated);
	sqlite3_bind_blob(st, 6, r->sig, WARP_SIG_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)row->refreshed);
	sqlite3_bind_int64(st, 8, (sqlite3_int64)row->expires);
	sqlite3_bind_int(st, 9, row->ip.af);
	if (row->ip.af == 4) {
		bind_bucket(st, 10, NB_B_V4, &row->ip);
	} else {
		bind_bucket(st, 11, NB_B_V6_48, &row->ip);
		bind_bucket(st, 12, NB_B_V6_64, &row->ip);
		bind_bucket(st, 13, NB_B_V6_128, &row->ip);
	}
	return step_done(s, st, "upsert");
}

static int sq_remove(struct nb_store *s, const char *name)
{
	sqlite3_bind_text(s->st[ST_REMOVE], 1, name, -1, SQLITE_STATIC);
	return step_done(s, s->st[ST_REMOVE], "remove");
}

static int one_int(struct nb_store *s, sqlite3_stmt *st, uint64_t *n)
{
	int rc = sqlite3_step(st);
	sqlite3_int64 v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;

	*n = v > 0 ? (uint64_t)v : 0;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, "count");
}

static int sq_count(struct nb_store *s, enum nb_bucket b, const struct nb_ip *ip, uint64_t *n)
{
	bind_bucket(s->st[ST_COUNT0 + b], 1, b, ip);
	return one_int(s, s->st[ST_COUNT0 + b], n);
}

static int sq_oldest(struct nb_store *s, enum nb_bucket b, const struct nb_ip *ip, uint64_t now,
		     const char *skip, char name[WARP_NAME_FQ_MAX + 1])
{
	sqlite3_stmt *st = s->st[ST_OLDEST0 + b];
	int rc, err = -WARP_ENOTFOUND;

	bind_bucket(st, 1, b, ip);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
	sqlite3_bind_text(st, 3, skip ? skip : "", -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(st, 0);

		if (t && strlen(t) <= WARP_NAME_FQ_MAX) {
			strcpy(name, t);
			err = 0;
		} else {
			err = -EIO;
		}
	} else if (rc != SQLITE_DONE) {
		err = db_err(s, "oldest");
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return err;
}

static int sq_gc(struct nb_store *s, uint64_t before)
{
	int err, n;

	sqlite3_bind_int64(s->st[ST_GC], 1, (sqlite3_int64)before);
	err = step_done(s, s->st[ST_GC], "gc");
	if (err)
		return err;
	n = sqlite3_changes(s->db);
	err = step_done(s, s->st[ST_GC2], "gc");
	return err ? err : n;
}

static int sq_maintain(struct nb_store *s)
{
	int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

	return rc == SQLITE_OK || rc == SQLITE_BUSY ? 0 : db_err(s, "checkpoint");
}

static int sq_total(struct nb_store *s, uint64_t *n)
{
	return one_int(s, s->st[ST_TOTAL], n);
}

const struct nb_store_ops nb_store_sqlite = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.get = sq_get,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.upsert = sq_upsert,
	.remove = sq_remove,
	.count = sq_count,
	.oldest_bumpable = sq_oldest,
	.gc = sq_gc,
	.maintain = sq_maintain,
	.total = sq_total,
};
