// SPDX-License-Identifier: MIT
/*
 * Key files: <home>/<name>.json = {"version":1,"name":..,"secret_key":hex,"public_key":hex}.
 * Created 0600 in a 0700 directory by atomic rename; loading refuses files that group or
 * others can read, since a readable secret key is already a compromised one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>

#define LOG_COMPONENT "keystore"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keystore.h"

#define KEYFILE_MAX 4096

int warp_name_validate(const char *name)
{
	size_t len;

	if (!name)
		return -WARP_ENAME;
	len = strlen(name);
	if (len == 0 || len > WARP_NAME_MAX || name[0] == '.' || strstr(name, ".."))
		return -WARP_ENAME;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return -WARP_ENAME;
	}
	return 0;
}

int warp_home_dir(char *buf, size_t len)
{
	const char *env = getenv("WARPGATE_HOME");
	const char *home = getenv("HOME");
	int n;

	if (env && *env)
		n = snprintf(buf, len, "%s", env);
	else
		n = snprintf(buf, len, "%s/.warpgate", home && *home ? home : "/root");
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int read_machine_id(char id[64])
{
	static const char *const paths[] = { "/etc/machine-id", "/var/lib/dbus/machine-id" };
	char *buf = NULL;
	size_t len = 0;

	for (size_t i = 0; i < 2; i++) {
		if (warp_read_file(paths[i], 256, &buf, &len) == 0) {
			while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
				len--;
			if (len >= 16 && len < 64) {
				memcpy(id, buf, len);
				id[len] = '\0';
				free(buf);
				return 0;
			}
			free(buf);
			buf = NULL;
		}
	}
	/* No machine id (minimal containers): fall back to the hostname, still hashed. */
	if (gethostname(id, 63) < 0)
		return -errno;
	id[63] = '\0';
	return 0;
}

static int machine_digest(const char *label, uint8_t *out, size_t outlen)
{
	char id[64];
	int err = read_machine_id(id);

	if (err)
		return err;
	if (warp_crypto_init())
		return -EIO;
	crypto_generichash(out, outlen, (const uint8_t *)id, strlen(id), (const uint8_t *)label,
			   strlen(label));
	sodium_memzero(id, sizeof(id));
	return 0;
}

int warp_machine_hash(uint8_t out[WARP_MACHINE_HASH_LEN])
{
	return machine_digest("warpgate machine hash v1", out, WARP_MACHINE_HASH_LEN);
}

int warp_default_name(char *buf, size_t len)
{
	uint8_t h[6];
	char hex[13];
	int err = machine_digest("warpgate default name v1", h, sizeof(h));

	if (err)
		return err;
	warp_hex_encode(hex, h, sizeof(h));
	return snprintf(buf, len, "node-%s", hex) >= (int)len ? -ENAMETOOLONG : 0;
}

int warp_keystore_path(const char *home, const char *name, char *buf, size_t len)
{
	char dir[PATH_MAX];
	int err = warp_name_validate(name);

	if (err)
		return err;
	if (!home) {
		err = warp_home_dir(dir, sizeof(dir));
		if (err)
			return err;
		home = dir;
	}
	return snprintf(buf, len, "%s/%s.json", home, name) >= (int)len ? -ENAMETOOLONG : 0;
}

int warp_keyfile_parse(const char *text, const char *origin, const char *name,
		       struct warp_identity **out)
{
	uint8_t sk[WARP_SECKEY_LEN], pub[WARP_PUBKEY_LEN];
	json_t *root;
	json_error_t jerr;
	const char *skhex, *pubhex, *fname;
	json_int_t version = 0;
	int err = -WARP_EMALFORMED;

	*out = NULL;
	root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		pr_err("%s: not valid JSON (line %d: %s)", origin, jerr.line, jerr.text);
		goto out;
	}
	if (json_unpack_ex(root, &jerr, JSON_STRICT, "{s:I, s:s, s:s, s:s}", "version", &version,
			   "name", &fname, "secret_key", &skhex, "public_key", &pubhex) < 0) {
		pr_err("%s: %s", origin, jerr.text);
		goto out;
	}
	if (version != 1) {
		pr_err("%s: unsupported key file version %lld", origin, (long long)version);
		err = -WARP_EVERSION;
		goto out;
	}
	if (strcmp(fname, name) != 0) {
		pr_err("%s: file names key '%s', expected '%s'", origin, fname, name);
		goto out;
	}
	if (warp_hex_decode(sk, sizeof(sk), skhex) || warp_hex_decode(pub, sizeof(pub), pubhex)) {
		pr_err("%s: secret_key/public_key must be %d/%d hex bytes", origin, WARP_SECKEY_LEN,
		       WARP_PUBKEY_LEN);
		goto out;
	}
	*out = warp_identity_from_secret(sk);
	if (!*out) {
		pr_err("%s: secret key is out of range", origin);
		goto out;
	}
	if (memcmp(warp_identity_pubkey(*out), pub, sizeof(pub)) != 0) {
		pr_err("%s: public_key does not match secret_key", origin);
		warp_identity_free(*out);
		*out = NULL;
		goto out;
	}
	err = 0;
out:
	sodium_memzero(sk, sizeof(sk));
	json_decref(root);
	return err;
}

static struct warp_identity *load_file(const char *path, const char *name)
{
	struct warp_identity *id = NULL;
	char *text = NULL;
	struct stat st;
	int err, fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		err = errno == ELOOP ? WARP_EKEYPERM : errno;
		goto out;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		err = WARP_EMALFORMED;
		goto out;
	}
	close(fd);
	if (st.st_mode & 077) {
		pr_err("%s: key file is readable by group or others (mode %04o); "
		       "fix it with: chmod 600 %s",
		       path, (unsigned int)(st.st_mode & 07777), path);
		err = WARP_EKEYPERM;
		goto out;
	}
	err = -warp_read_file(path, KEYFILE_MAX, &text, NULL);
	if (err)
		goto out;
	err = -warp_keyfile_parse(text, path, name, &id);
out:
	if (text) {
		sodium_memzero(text, strlen(text));
		free(text);
	}
	if (!id)
		errno = err ? err : EIO;
	return id;
}

/* Writes a fresh key file without ever replacing one: the content goes to a private
 * temporary name first, then link() publishes it only if path does not exist yet. */
static int save_file(const char *path, const char *name, const struct warp_identity *id)
{
	char tmp[PATH_MAX];
	uint8_t sk[WARP_SECKEY_LEN];
	char skhex[2 * WARP_SECKEY_LEN + 1], pubhex[2 * WARP_PUBKEY_LEN + 1];
	char *text = NULL;
	json_t *root = NULL;
	int err;

	err = warp_identity_secret(id, sk);
	if (err)
		goto out;
	warp_hex_encode(skhex, sk, sizeof(sk));
	warp_hex_encode(pubhex, warp_identity_pubkey(id), WARP_PUBKEY_LEN);
	root = json_pack("{s:i, s:s, s:s, s:s}", "version", 1, "name", name, "secret_key", skhex,
			 "public_key", pubhex);
	text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	if (!text) {
		err = -ENOMEM;
		goto out;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.new.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
		err = -ENAMETOOLONG;
		goto out;
	}
	err = warp_write_file_atomic(tmp, text, strlen(text), 0600);
	if (err)
		goto out;
	if (link(tmp, path) < 0)
		err = -errno;
	unlink(tmp);
out:
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(skhex, sizeof(skhex));
	if (text) {
		sodium_memzero(text, strlen(text));
		free(text);
	}
	json_decref(root);
	return err;
}

struct warp_identity *warp_keystore_load(const char *home, const char *name, bool create,
					 bool *created)
{
	char dir[PATH_MAX], path[PATH_MAX];
	struct warp_identity *id;
	int err;

	if (created)
		*created = false;
	if (!home) {
		err = warp_home_dir(dir, sizeof(dir));
		if (err)
			goto fail;
		home = dir;
	}
	err = warp_keystore_path(home, name, path, sizeof(path));
	if (err)
		goto fail;
	id = load_file(path, name);
	if (id || errno != ENOENT || !create)
		return id;
	err = warp_mkdir_p(home, 0700);
	if (err)
		goto fail;
	id = warp_identity_generate();
	if (!id)
		return NULL;
	err = save_file(path, name, id);
	if (err == -EEXIST) {
		/* Another process created it meanwhile: use theirs so both agree. */
		warp_identity_free(id);
		return load_file(path, name);
	}
	if (err) {
		warp_identity_free(id);
		goto fail;
	}
	if (created)
		*created = true;
	pr_info("created identity '%s' in %s", name, path);
	return id;
fail:
	errno = -err;
	return NULL;
}
