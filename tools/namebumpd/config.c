// SPDX-License-Identifier: MIT
/*
 * namebumpd configuration: defaults, a JSON file (see namebumpd(8)) and sanity checks.  The
 * checks enforce what replay protection relies on: a name can neither expire nor be bumped
 * while a PUT signed for it could still be inside the clock window.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "namebumpd"
#include "core/log.h"
#include "nbd.h"

void nb_config_defaults(struct nb_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->db, sizeof(cfg->db), "namebumpd.db");
	snprintf(cfg->key, sizeof(cfg->key), "namebumpd.key");
	cfg->threads = 2;
	cfg->window_ms = 60 * 1000;
	cfg->lifetime_ms = 7ull * 24 * 3600 * 1000;
	cfg->min_age_ms = 3600 * 1000;
	cfg->quota[NB_B_V4] = 20;
	cfg->quota[NB_B_V6_128] = 5;
	cfg->quota[NB_B_V6_64] = 50;
	cfg->quota[NB_B_V6_48] = 1000;
	cfg->rate = 20;
	cfg->burst = 100;
	snprintf(cfg->tlds[0], sizeof(cfg->tlds[0]), "%s", "p2p");
	cfg->n_tlds = 1;
	cfg->sync_full = true;
	cfg->allow_sealed = true;
	cfg->batch_max = WN_MAX_BATCH;
	cfg->gc_interval_ms = 60 * 1000;
}

static int get_u64(json_t *root, const char *key, uint64_t *out, uint64_t scale)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		pr_err("config: %s must be a non-negative integer", key);
		return -WARP_ECONFIG;
	}
	*out = (uint64_t)json_integer_value(v) * scale;
	return 0;
}

static int get_u32(json_t *root, const char *key, uint32_t *out)
{
	uint64_t v = *out;
	int err = get_u64(root, key, &v, 1);

	if (!err && v > UINT32_MAX) {
		pr_err("config: %s too large", key);
		return -WARP_ECONFIG;
	}
	*out = (uint32_t)v;
	return err;
}

static int get_num(json_t *root, const char *key, double *out)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return 0;
	if (!json_is_number(v) || json_number_value(v) < 0) {
		pr_err("config: %s must be a non-negative number", key);
		return -WARP_ECONFIG;
	}
	*out = json_number_value(v);
	return 0;
}

static int get_str(json_t *root, const char *key, char *out, size_t cap)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return 0;
	if (!json_is_string(v) || json_string_length(v) >= cap) {
		pr_err("config: %s must be a string shorter than %zu", key, cap);
		return -WARP_ECONFIG;
	}
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static int get_bool(json_t *root, const char *key, bool *out)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return 0;
	if (!json_is_boolean(v)) {
		pr_err("config: %s must be true or false", key);
		return -WARP_ECONFIG;
	}
	*out = json_is_true(v);
	return 0;
}

static int get_strs(json_t *root, const char *key, char *out, size_t each, int max, int *n)
{
	json_t *v = json_object_get(root, key), *e;
	size_t i;

	if (!v)
		return 0;
	if (!json_is_array(v) || json_array_size(v) > (size_t)max) {
		pr_err("config: %s must be an array of at most %d strings", key, max);
		return -WARP_ECONFIG;
	}
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e) || json_string_length(e) >= each) {
			pr_err("config: %s[%zu] must be a string shorter than %zu", key, i, each);
			return -WARP_ECONFIG;
		}
		memcpy(out + i * each, json_string_value(e), json_string_length(e) + 1);
	}
	*n = (int)json_array_size(v);
	return 0;
}

static const char *const known_keys[] = {
	"listen",
	"db",
	"key",
	"threads",
	"clock_window_s",
	"lifetime_s",
	"min_age_s",
	"quota_v4",
	"quota_v6_128",
	"quota_v6_64",
	"quota_v6_48",
	"rate",
	"burst",
	"tlds",
	"sync",
	"allow_sealed",
	"batch_max",
	"gc_interval_s",
	"test_clock_offset_ms",
};

int nb_config_load(struct nb_config *cfg, const char *path)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr), *v;
	char sync[16] = "";
	uint64_t u;
	const char *k;
	int err = -WARP_ECONFIG;

	if (!root) {
		pr_err("config %s:%d: %s", path, jerr.line, jerr.text);
		return -WARP_ECONFIG;
	}
	if (!json_is_object(root)) {
		pr_err("config %s: not a JSON object", path);
		goto out;
	}
	json_object_foreach(root, k, v)
	{
		size_t i;

		for (i = 0; i < WARP_ARRAY_SIZE(known_keys); i++)
			if (!strcmp(k, known_keys[i]))
				break;
		if (i == WARP_ARRAY_SIZE(known_keys)) {
			pr_err("config %s: unknown key \"%s\"", path, k);
			goto out;
		}
	}
	u = (uint64_t)cfg->threads;
	if (get_strs(root, "listen", &cfg->listen[0][0], sizeof(cfg->listen[0]), NB_MAX_LISTEN,
		     &cfg->n_listen) ||
	    get_str(root, "db", cfg->db, sizeof(cfg->db)) ||
	    get_str(root, "key", cfg->key, sizeof(cfg->key)) || get_u64(root, "threads", &u, 1) ||
	    get_u64(root, "clock_window_s", &cfg->window_ms, 1000) ||
	    get_u64(root, "lifetime_s", &cfg->lifetime_ms, 1000) ||
	    get_u64(root, "min_age_s", &cfg->min_age_ms, 1000) ||
	    get_u32(root, "quota_v4", &cfg->quota[NB_B_V4]) ||
	    get_u32(root, "quota_v6_128", &cfg->quota[NB_B_V6_128]) ||
	    get_u32(root, "quota_v6_64", &cfg->quota[NB_B_V6_64]) ||
	    get_u32(root, "quota_v6_48", &cfg->quota[NB_B_V6_48]) ||
	    get_num(root, "rate", &cfg->rate) || get_num(root, "burst", &cfg->burst) ||
	    get_strs(root, "tlds", &cfg->tlds[0][0], sizeof(cfg->tlds[0]), NB_MAX_TLDS,
		     &cfg->n_tlds) ||
	    get_str(root, "sync", sync, sizeof(sync)) ||
	    get_bool(root, "allow_sealed", &cfg->allow_sealed) ||
	    get_u32(root, "batch_max", &cfg->batch_max))
		goto out;
	cfg->threads = u > NB_MAX_THREADS ? NB_MAX_THREADS + 1 : (int)u;
	u = cfg->gc_interval_ms / 1000;
	if (get_u64(root, "gc_interval_s", &u, 1000))
		goto out;
	cfg->gc_interval_ms = (unsigned int)(u > UINT32_MAX ? UINT32_MAX : u);
	v = json_object_get(root, "test_clock_offset_ms");
	if (v) {
		if (!json_is_integer(v)) {
			pr_err("config: test_clock_offset_ms must be an integer");
			goto out;
		}
		cfg->clock_offset_ms = json_integer_value(v);
	}
	if (*sync) {
		if (!strcmp(sync, "full")) {
			cfg->sync_full = true;
		} else if (!strcmp(sync, "normal")) {
			cfg->sync_full = false;
		} else {
			pr_err("config: sync must be \"full\" or \"normal\"");
			goto out;
		}
	}
	err = 0;
out:
	json_decref(root);
	return err;
}

int nb_config_check(const struct nb_config *cfg)
{
	if (cfg->threads < 1 || cfg->threads > NB_MAX_THREADS) {
		pr_err("config: threads must be 1..%d", NB_MAX_THREADS);
		return -WARP_ECONFIG;
	}
	if (cfg->window_ms < 1000) {
		pr_err("config: clock_window_s must be at least 1");
		return -WARP_ECONFIG;
	}
	/* A record must outlive any PUT that could still be replayed into the window. */
	if (cfg->min_age_ms <= cfg->window_ms || cfg->lifetime_ms < cfg->min_age_ms) {
		pr_err("config: need clock_window_s < min_age_s <= lifetime_s");
		return -WARP_ECONFIG;
	}
	for (int b = 0; b < NB_B_MAX; b++)
		if (!cfg->quota[b]) {
			pr_err("config: quotas must be at least 1");
			return -WARP_ECONFIG;
		}
	if (cfg->batch_max < 1 || cfg->batch_max > WN_MAX_BATCH) {
		pr_err("config: batch_max must be 1..%d", WN_MAX_BATCH);
		return -WARP_ECONFIG;
	}
	if (cfg->n_tlds < 1) {
		pr_err("config: at least one TLD");
		return -WARP_ECONFIG;
	}
	for (int i = 0; i < cfg->n_tlds; i++) {
		char probe[WARP_NAME_FQ_MAX + 1];

		if (snprintf(probe, sizeof(probe), "a.%s", cfg->tlds[i]) >= (int)sizeof(probe) ||
		    wn_name_check(probe, strlen(probe)) || strchr(cfg->tlds[i], '.')) {
			pr_err("config: bad TLD \"%s\"", cfg->tlds[i]);
			return -WARP_ECONFIG;
		}
	}
	if (cfg->rate > 0 && cfg->burst < 1) {
		pr_err("config: burst must be at least 1");
		return -WARP_ECONFIG;
	}
	return 0;
}
