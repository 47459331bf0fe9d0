// SPDX-License-Identifier: MIT
/* NAT report cache: a small JSON file, rewritten atomically on every store. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include <warpgate/error.h>

#include "core/util.h"
#include "nat/natcache.h"
#include "nat/natreport.h"

#define CACHE_VERSION  1
#define CACHE_MAX_FILE (1u << 20)

static int key_of(const void *fp, size_t fplen, char key[33])
{
	uint8_t h[32];
	unsigned int n = 0;

	if (!fp || !fplen)
		return -EINVAL;
	if (!EVP_Digest(fp, fplen, h, &n, EVP_sha256(), NULL) || n != 32)
		return -EIO;
	warp_hex_encode(key, h, 16);
	return 0;
}

/* Loads the file; *root is NULL (no error) when it does not exist. */
static int load(const char *path, json_t **root)
{
	char *text = NULL;
	size_t len;
	json_t *j, *v;
	int err;

	*root = NULL;
	err = warp_read_file(path, CACHE_MAX_FILE, &text, &len);
	if (err)
		return err;
	j = json_loadb(text, len, 0, NULL);
	free(text);
	if (!json_is_object(j) || !json_is_object(json_object_get(j, "networks"))) {
		json_decref(j);
		return -WARP_EMALFORMED;
	}
	v = json_object_get(j, "version");
	if (!json_is_integer(v) || json_integer_value(v) != CACHE_VERSION) {
		json_decref(j);
		return -WARP_EVERSION;
	}
	*root = j;
	return 0;
}

static int save(const char *path, json_t *root)
{
	char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	int err;

	if (!text)
		return -ENOMEM;
	err = warp_write_file_atomic(path, text, strlen(text), 0600);
	if (err == -ENOENT) {
		char dir[PATH_MAX], *slash;

		snprintf(dir, sizeof(dir), "%s", path);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			if (!warp_mkdir_p(dir, 0700))
				err = warp_write_file_atomic(path, text, strlen(text), 0600);
		}
	}
	free(text);
	return err;
}

static uint64_t stored_at(const json_t *entry)
{
	const json_t *v = json_object_get(entry, "stored_at_ms");

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
							       : 0;
}

int warp_natcache_lookup(const char *path, const void *fp, size_t fplen, uint64_t now_ms,
			 uint64_t max_age_ms, struct warp_nat_report *out, uint64_t *age_ms)
{
	json_t *root = NULL, *entry;
	char key[33];
	uint64_t at, age;
	int err;

	err = key_of(fp, fplen, key);
	if (err)
		return err;
	err = load(path, &root);
	if (err)
		return err;
	entry = json_object_get(json_object_get(root, "networks"), key);
	if (!json_is_object(entry)) {
		err = -WARP_ENOTFOUND;
		goto out;
	}
	at = stored_at(entry);
	age = now_ms > at ? now_ms - at : 0;
	if (max_age_ms && age > max_age_ms) {
		err = -WARP_ENOTFOUND;
		goto out;
	}
	err = warp_nat_report_from_json(json_object_get(entry, "report"), out);
	if (err)
		goto out;
	if (age_ms)
		*age_ms = age;
out:
	json_decref(root);
	return err;
}

int warp_natcache_store(const char *path, const void *fp, size_t fplen,
			const struct warp_nat_report *r, uint64_t now_ms)
{
	json_t *root = NULL, *nets, *entry, *rep;
	char key[33];
	int err;

	err = key_of(fp, fplen, key);
	if (err)
		return err;
	if (load(path, &root) || !root) {
		/* unreadable or absent: start a new file rather than fail the caller */
		root = json_pack("{s:i, s:{}}", "version", CACHE_VERSION, "networks");
		if (!root)
			return -ENOMEM;
	}
	nets = json_object_get(root, "networks");
	rep = warp_nat_report_to_json(r, WARP_NAT_JSON_DETAILS);
	entry = rep ? json_pack("{s:I, s:o}", "stored_at_ms", (json_int_t)now_ms, "report", rep)
		    : NULL;
	if (!entry || json_object_set_new(nets, key, entry)) {
		err = -ENOMEM;
		goto out;
	}
	while (json_object_size(nets) > WARP_NATCACHE_MAX) {
		const char *k, *oldest = NULL;
		uint64_t oldest_at = UINT64_MAX;
		json_t *v;

		json_object_foreach(nets, k, v)
		{
			if (stored_at(v) < oldest_at) {
				oldest_at = stored_at(v);
				oldest = k;
			}
		}
		if (!oldest || json_object_del(nets, oldest))
			break;
	}
	err = save(path, root);
out:
	json_decref(root);
	return err;
}

int warp_natcache_forget(const char *path, const void *fp, size_t fplen)
{
	json_t *root = NULL;
	char key[33];
	int err;

	err = key_of(fp, fplen, key);
	if (err)
		return err;
	err = load(path, &root);
	if (err)
		return err;
	if (json_object_del(json_object_get(root, "networks"), key))
		err = -WARP_ENOTFOUND;
	else
		err = save(path, root);
	json_decref(root);
	return err;
}
