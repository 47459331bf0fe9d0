// SPDX-License-Identifier: MIT
/* Server key file: the 32-byte secret as 64 hex digits and a newline, mode 0600. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "namebumpd"
#include "core/log.h"
#include "core/util.h"
#include "nbd.h"

static struct warp_identity *create_key(const char *path)
{
	struct warp_identity *id = warp_identity_generate();
	uint8_t sk[WARP_SECKEY_LEN];
	char hex[2 * WARP_SECKEY_LEN + 2];
	int err;

	if (!id)
		return NULL;
	err = warp_identity_secret(id, sk);
	if (!err) {
		warp_hex_encode(hex, sk, sizeof(sk));
		strcat(hex, "\n");
		err = warp_write_file_atomic(path, hex, strlen(hex), 0600);
	}
	sodium_memzero(sk, sizeof(sk));
	sodium_memzero(hex, sizeof(hex));
	if (err) {
		pr_err("cannot write server key %s: %s", path, warp_strerror(err));
		warp_identity_free(id);
		errno = -err;
		return NULL;
	}
	return id;
}

struct warp_identity *nb_key_load(const char *path, bool create, bool *created)
{
	struct warp_identity *id = NULL;
	uint8_t sk[WARP_SECKEY_LEN];
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	int err, fd;

	*created = false;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT && create) {
		id = create_key(path);
		*created = id != NULL;
		return id;
	}
	if (fd < 0) {
		err = errno;
		pr_err("cannot open server key %s: %s", path, strerror(err));
		errno = err;
		return NULL;
	}
	if (fstat(fd, &st) < 0 || (st.st_mode & 077)) {
		close(fd);
		pr_err("server key %s is readable by group or others; chmod 600 it", path);
		errno = WARP_EKEYPERM;
		return NULL;
	}
	close(fd);
	err = warp_read_file(path, 256, &text, &len);
	if (err) {
		errno = -err;
		return NULL;
	}
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		text[--len] = '\0';
	err = warp_hex_decode(sk, sizeof(sk), text);
	sodium_memzero(text, len);
	free(text);
	if (err) {
		pr_err("server key %s: expected 64 hex digits", path);
		errno = WARP_EMALFORMED;
		return NULL;
	}
	id = warp_identity_from_secret(sk);
	sodium_memzero(sk, sizeof(sk));
	return id;
}
