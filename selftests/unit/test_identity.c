// SPDX-License-Identifier: MIT
/* Identities, signatures, sealed boxes and the keystore (permissions, atomic write, reuse). */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>

#include "core/util.h"

static char home[PATH_MAX];

static int setup(void **state)
{
	snprintf(home, sizeof(home), "/tmp/wpg-test-identity-XXXXXX");
	return mkdtemp(home) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
	return system(cmd);
}

static void test_sign_verify(void **state)
{
	struct warp_identity *a = warp_identity_generate(), *b = warp_identity_generate();
	uint8_t sig[WARP_SIG_LEN], pub[WARP_PUBKEY_LEN];
	const char msg[] = "hello warpgate";

	assert_non_null(a);
	assert_non_null(b);
	assert_memory_not_equal(warp_identity_pubkey(a), warp_identity_pubkey(b), WARP_PUBKEY_LEN);
	assert_true(warp_identity_pubkey(a)[0] == 2 || warp_identity_pubkey(a)[0] == 3);
	assert_int_equal(warp_identity_sign(a, msg, sizeof(msg), sig), 0);
	assert_int_equal(warp_verify(warp_identity_pubkey(a), msg, sizeof(msg), sig), 0);
	/* Wrong key, wrong message, flipped bit. */
	assert_int_equal(warp_verify(warp_identity_pubkey(b), msg, sizeof(msg), sig), -WARP_EAUTH);
	assert_int_equal(warp_verify(warp_identity_pubkey(a), msg, sizeof(msg) - 1, sig),
			 -WARP_EAUTH);
	sig[10] ^= 1;
	assert_int_equal(warp_verify(warp_identity_pubkey(a), msg, sizeof(msg), sig), -WARP_EAUTH);
	/* Not a point: rejected as malformed, not as a bad signature. */
	memcpy(pub, warp_identity_pubkey(a), sizeof(pub));
	pub[0] = 0x05;
	assert_int_equal(warp_verify(pub, msg, sizeof(msg), sig), -WARP_EMALFORMED);
	warp_identity_free(a);
	warp_identity_free(b);
}

static void test_low_s_only(void **state)
{
	/* n - s of a valid signature is also valid ECDSA; we must reject it (malleability). */
	static const uint8_t order[32] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
		0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
	};
	struct warp_identity *a = warp_identity_generate();
	uint8_t sig[WARP_SIG_LEN];
	int borrow = 0;

	assert_int_equal(warp_identity_sign(a, "m", 1, sig), 0);
	for (int i = 31; i >= 0; i--) {
		int v = order[i] - sig[32 + i] - borrow;

		borrow = v < 0;
		sig[32 + i] = (uint8_t)(v + (borrow ? 256 : 0));
	}
	assert_int_equal(warp_verify(warp_identity_pubkey(a), "m", 1, sig), -WARP_EAUTH);
	warp_identity_free(a);
}

static void test_secret_roundtrip(void **state)
{
	struct warp_identity *a = warp_identity_generate(), *b;
	uint8_t sk[WARP_SECKEY_LEN] = { 0 };

	assert_int_equal(warp_identity_secret(a, sk), 0);
	b = warp_identity_from_secret(sk);
	assert_non_null(b);
	assert_memory_equal(warp_identity_pubkey(a), warp_identity_pubkey(b), WARP_PUBKEY_LEN);
	memset(sk, 0, sizeof(sk));
	assert_null(warp_identity_from_secret(sk));
	assert_int_equal(errno, WARP_ERANGE);
	memset(sk, 0xff, sizeof(sk));
	assert_null(warp_identity_from_secret(sk));
	warp_identity_free(a);
	warp_identity_free(b);
}

static void test_seal_open(void **state)
{
	struct warp_identity *a = warp_identity_generate(), *b = warp_identity_generate();
	uint8_t box[64 + WARP_SEAL_OVERHEAD], out[64];
	const char msg[] = "secret rendezvous";

	assert_int_equal(warp_seal(warp_identity_pubkey(a), "aad", 3, msg, sizeof(msg), box), 0);
	assert_int_equal(warp_open_sealed(a, "aad", 3, box, sizeof(msg) + WARP_SEAL_OVERHEAD, out),
			 (int)sizeof(msg));
	assert_memory_equal(out, msg, sizeof(msg));
	/* Wrong recipient, wrong aad, tampering, truncation. */
	assert_int_equal(warp_open_sealed(b, "aad", 3, box, sizeof(msg) + WARP_SEAL_OVERHEAD, out),
			 -WARP_EAUTH);
	assert_int_equal(warp_open_sealed(a, "aaX", 3, box, sizeof(msg) + WARP_SEAL_OVERHEAD, out),
			 -WARP_EAUTH);
	box[WARP_SEAL_OVERHEAD] ^= 0x80;
	assert_int_equal(warp_open_sealed(a, "aad", 3, box, sizeof(msg) + WARP_SEAL_OVERHEAD, out),
			 -WARP_EAUTH);
	assert_int_equal(warp_open_sealed(a, NULL, 0, box, WARP_SEAL_OVERHEAD - 1, out),
			 -WARP_ETRUNCATED);
	warp_identity_free(a);
	warp_identity_free(b);
}

static void test_names(void **state)
{
	static const char *const good[] = { "alice", "a", "node-1.lab", "A_b-c" };
	static const char *const bad[] = { "", ".hidden", "a/b", "../x", "a..b", "sp ace",
					   "x\n", "0123456789012345678901234567890123456789"
						  "012345678901234567890123" };

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(warp_name_validate(good[i]), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(warp_name_validate(bad[i]), -WARP_ENAME);
}

static void test_keystore_same_name_same_key(void **state)
{
	struct warp_identity *a, *b, *c;
	bool created;
	char path[PATH_MAX];
	struct stat st;

	a = warp_keystore_load(home, "alice", true, &created);
	assert_non_null(a);
	assert_true(created);
	assert_int_equal(warp_keystore_path(home, "alice", path, sizeof(path)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(home, &st), 0);
	b = warp_keystore_load(home, "alice", true, &created);
	assert_non_null(b);
	assert_false(created);
	assert_memory_equal(warp_identity_pubkey(a), warp_identity_pubkey(b), WARP_PUBKEY_LEN);
	c = warp_keystore_load(home, "bob", true, &created);
	assert_non_null(c);
	assert_memory_not_equal(warp_identity_pubkey(a), warp_identity_pubkey(c), WARP_PUBKEY_LEN);
	/* No stray temporary files after atomic writes. */
	assert_int_equal(system("ls -A /tmp/wpg-test-identity-* | grep -c tmp >/dev/null"), 256);
	warp_identity_free(a);
	warp_identity_free(b);
	warp_identity_free(c);
}

static void test_keystore_no_create(void **state)
{
	assert_null(warp_keystore_load(home, "nobody", false, NULL));
	assert_int_equal(errno, ENOENT);
	assert_null(warp_keystore_load(home, "../etc", true, NULL));
	assert_int_equal(errno, WARP_ENAME);
}

static void test_keystore_refuses_readable(void **state)
{
	char path[PATH_MAX];
	struct warp_identity *a = warp_keystore_load(home, "perm", true, NULL);

	assert_non_null(a);
	warp_identity_free(a);
	warp_keystore_path(home, "perm", path, sizeof(path));
	assert_int_equal(chmod(path, 0640), 0);
	assert_null(warp_keystore_load(home, "perm", true, NULL));
	assert_int_equal(errno, WARP_EKEYPERM);
	assert_int_equal(chmod(path, 0604), 0);
	assert_null(warp_keystore_load(home, "perm", true, NULL));
	assert_int_equal(errno, WARP_EKEYPERM);
	assert_int_equal(chmod(path, 0600), 0);
	a = warp_keystore_load(home, "perm", false, NULL);
	assert_non_null(a);
	warp_identity_free(a);
}

static void write_key(const char *name, const char *text)
{
	char path[PATH_MAX];
	FILE *f;

	warp_keystore_path(home, name, path, sizeof(path));
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, 0600);
}

static void test_keystore_malformed(void **state)
{
	static const char *const files[] = {
		"not json",
		"{\"version\":1,\"name\":\"m\",\"secret_key\":\"00\",\"public_key\":\"00\"}",
		"{\"version\":2,\"name\":\"m\",\"secret_key\":\"%s\",\"public_key\":\"%s\"}",
		"{\"version\":1,\"name\":\"other\",\"secret_key\":\"%s\",\"public_key\":\"%s\"}",
		"{\"version\":1,\"name\":\"m\",\"secret_key\":\"%s\",\"public_key\":\"%s\",\"x\":1}",
		"{\"version\":1,\"name\":\"m\",\"secret_key\":\"%s\"}",
	};
	struct warp_identity *a = warp_identity_generate();
	uint8_t sk[32];
	char skh[65], pkh[67], text[512];

	warp_identity_secret(a, sk);
	warp_hex_encode(skh, sk, 32);
	warp_hex_encode(pkh, warp_identity_pubkey(a), 33);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(text, sizeof(text), files[i], skh, pkh);
		write_key("m", text);
		assert_null(warp_keystore_load(home, "m", true, NULL));
		assert_true(errno == WARP_EMALFORMED || errno == WARP_EVERSION);
	}
	/* Public key that does not belong to the secret. */
	pkh[10] = pkh[10] == '0' ? '1' : '0';
	snprintf(text, sizeof(text), files[2], skh, pkh);
	text[11] = '1';
	write_key("m", text);
	assert_null(warp_keystore_load(home, "m", true, NULL));
	assert_int_equal(errno, WARP_EMALFORMED);
	warp_identity_free(a);
}

static void test_default_name_stable(void **state)
{
	char a[64], b[64];
	uint8_t h1[WARP_MACHINE_HASH_LEN], h2[WARP_MACHINE_HASH_LEN];

	assert_int_equal(warp_default_name(a, sizeof(a)), 0);
	assert_int_equal(warp_default_name(b, sizeof(b)), 0);
	assert_string_equal(a, b);
	assert_int_equal(warp_name_validate(a), 0);
	assert_int_equal(warp_machine_hash(h1), 0);
	assert_int_equal(warp_machine_hash(h2), 0);
	assert_memory_equal(h1, h2, sizeof(h1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sign_verify),
		cmocka_unit_test(test_low_s_only),
		cmocka_unit_test(test_secret_roundtrip),
		cmocka_unit_test(test_seal_open),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_keystore_same_name_same_key),
		cmocka_unit_test(test_keystore_no_create),
		cmocka_unit_test(test_keystore_refuses_readable),
		cmocka_unit_test(test_keystore_malformed),
		cmocka_unit_test(test_default_name_stable),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
