// SPDX-License-Identifier: MIT
/*
 * Corpus replay driver for the fuzz targets, so `make check-unit` exercises every parser on
 * every build (with ASan/UBSan) without libFuzzer.  It feeds each seed of
 * selftests/fuzz/corpus/<name>/ to LLVMFuzzerTestOneInput, then a bounded number of
 * deterministic mutations of the seeds (bit flips, truncations, insertions, splices).
 * A crash or sanitizer report fails the run; TAP output.
 */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seed {
	uint8_t *data;
	size_t len;
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int load(const char *dir, struct seed **out, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char path[PATH_MAX];
		FILE *f;
		long len;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		f = fopen(path, "rb");
		if (!f)
			continue;
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		fseek(f, 0, SEEK_SET);
		if (len < 0 || len > (1 << 20)) {
			fclose(f);
			continue;
		}
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			*out = realloc(*out, cap * sizeof(**out));
		}
		(*out)[*n].data = malloc((size_t)len + 1);
		(*out)[*n].len = fread((*out)[*n].data, 1, (size_t)len, f);
		(*n)++;
		fclose(f);
	}
	closedir(d);
	return 0;
}

int main(int argc, char **argv)
{
	char name[128], dir[PATH_MAX - 256];
	const char *top = getenv("WARP_TOP");
	const char *iters_env = getenv("WARP_FUZZ_ITERS");
	long iters = iters_env ? atol(iters_env) : 20000;
	struct seed *seeds = NULL;
	size_t nseeds = 0;
	uint8_t *buf = malloc(1 << 17);

	snprintf(name, sizeof(name), "%s", basename(argv[0]));
	if (!strncmp(name, "fuzz_", 5))
		memmove(name, name + 5, strlen(name + 5) + 1);
	if (argc > 1)
		snprintf(dir, sizeof(dir), "%s", argv[1]);
	else
		snprintf(dir, sizeof(dir), "%s/selftests/fuzz/corpus/%s", top ? top : ".", name);
	if (load(dir, &seeds, &nseeds) || nseeds == 0) {
		printf("not ok 1 - corpus %s has no seeds\n1..1\n", dir);
		free(buf);
		return 1;
	}
	for (size_t i = 0; i < nseeds; i++)
		LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].len);
	printf("ok 1 - %zu seeds of %s replayed\n", nseeds, name);
	fflush(stdout);
	for (long it = 0; it < iters; it++) {
		struct seed *s = &seeds[next() % nseeds];
		size_t len = s->len > (1 << 16) ? (1 << 16) : s->len;

		memcpy(buf, s->data, len);
		switch (next() % 5) {
		case 0: /* flip a few bits */
			for (int k = 0, m = 1 + (int)(next() % 4); len && k < m; k++)
				buf[next() % len] ^= (uint8_t)(1u << (next() % 8));
			break;
		case 1: /* truncate */
			len = len ? next() % len : 0;
			break;
		case 2: /* insert random bytes */
			for (int k = 0, m = 1 + (int)(next() % 8); k < m && len < (1 << 16); k++) {
				size_t at = len ? next() % (len + 1) : 0;

				memmove(buf + at + 1, buf + at, len - at);
				buf[at] = (uint8_t)next();
				len++;
			}
			break;
		case 3: /* overwrite with interesting values */
			if (len) {
				static const uint8_t vals[] = { 0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe };
				buf[next() % len] = vals[next() % sizeof(vals)];
			}
			break;
		default: { /* splice with another seed */
			struct seed *o = &seeds[next() % nseeds];
			size_t cut = len ? next() % len : 0;
			size_t take = o->len ? next() % o->len : 0;

			if (cut + take > (1 << 16))
				take = (1 << 16) - cut;
			memcpy(buf + cut, o->data, take);
			len = cut + take;
			break;
		}
		}
		LLVMFuzzerTestOneInput(buf, len);
	}
	printf("ok 2 - %ld mutations of %s survived\n1..2\n", iters, name);
	for (size_t i = 0; i < nseeds; i++)
		free(seeds[i].data);
	free(seeds);
	free(buf);
	return 0;
}
