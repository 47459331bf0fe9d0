// SPDX-License-Identifier: MIT
/*
 * bpf-insns: load every program of BPF objects into the running kernel and print how many
 * instructions the verifier processed for each (bpf_prog_info.verified_insns, Linux >= 5.16),
 * a complexity measure that changes from kernel to kernel.  Nothing is attached or pinned.
 *
 * usage: bpf-insns [--limit N] DIR|OBJ...     (DIR: every DIR/ *.bpf.o)
 * prints "prog NAME: N insns processed (OBJ)" per program, then "bpf-insns: ..." summary lines;
 * exits 1 when a program fails to load or exceeds N (default 100000), 0 otherwise.
 *
 * Each program is loaded on its own (the others' autoload switched off) so that one program
 * the verifier rejects does not hide the counts of the rest.  Built by vmtest/run.sh.
 */
#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static int print_warnings;

#define LOG_TAIL_LINES 30

/*
 * libbpf's warnings carry the verifier log of a rejected program: show them for that load only,
 * and of the log only its end, where the verifier says what it refused.
 */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char *msg = NULL, *start, *p;
	int lines = 0;

	if (level != LIBBPF_WARN || !print_warnings)
		return 0;
	if (vasprintf(&msg, fmt, ap) < 0)
		return 0;
	start = strstr(msg, "-- BEGIN PROG LOAD LOG --\n");
	if (start) {
		start += strlen("-- BEGIN PROG LOAD LOG --\n");
		for (p = msg + strlen(msg); p > start; p--)
			if (p[-1] == '\n' && ++lines > LOG_TAIL_LINES + 1)
				break;
		if (p > start) {
			fwrite(msg, 1, (size_t)(start - msg), stderr);
			fputs("[...]\n", stderr);
			start = p;
		} else {
			start = msg;
		}
	} else {
		start = msg;
	}
	fputs(start, stderr);
	free(msg);
	return 0;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

struct totals {
	unsigned int progs, objs, over, failed;
	unsigned int max_insns;
	char max_name[64];
};

/* Load program number IDX of OBJPATH alone; returns 0 and sets *insns, or -errno. */
static int load_one(const char *objpath, int idx, char *name, size_t name_len, unsigned int *insns)
{
	struct bpf_prog_info info;
	__u32 info_len = sizeof(info);
	struct bpf_object *obj;
	struct bpf_program *prog, *me = NULL;
	int i = 0, err;

	obj = bpf_object__open_file(objpath, NULL);
	if (!obj)
		return -errno;
	bpf_object__for_each_program(prog, obj)
	{
		bpf_program__set_autoload(prog, i == idx);
		if (i++ == idx)
			me = prog;
	}
	if (!me) {
		bpf_object__close(obj);
		return -ENOENT;
	}
	snprintf(name, name_len, "%s", bpf_program__name(me));
	print_warnings = 1;
	err = bpf_object__load(obj);
	print_warnings = 0;
	if (!err) {
		memset(&info, 0, sizeof(info));
		err = bpf_obj_get_info_by_fd(bpf_program__fd(me), &info, &info_len);
		*insns = info.verified_insns;
	}
	bpf_object__close(obj);
	return err;
}

static int count_programs(const char *objpath)
{
	struct bpf_object *obj = bpf_object__open_file(objpath, NULL);
	struct bpf_program *prog;
	int n = 0;

	if (!obj)
		return -errno;
	bpf_object__for_each_program(prog, obj)
	{
		n++;
	}
	bpf_object__close(obj);
	return n;
}

static void check_object(const char *objpath, unsigned int limit, struct totals *t)
{
	char name[64];
	unsigned int insns;
	int n, i, err;

	t->objs++;
	n = count_programs(objpath);
	if (n < 0) {
		printf("bpf-insns: error: %s: cannot open: %s\n", base_name(objpath), strerror(-n));
		t->failed++;
		return;
	}
	for (i = 0; i < n; i++) {
		insns = 0;
		err = load_one(objpath, i, name, sizeof(name), &insns);
		t->progs++;
		if (err) {
			printf("bpf-insns: error: %s: program %s failed to load: %s\n",
			       base_name(objpath), name, strerror(-err));
			t->failed++;
			continue;
		}
		printf("prog %s: %u insns processed (%s)\n", name, insns, base_name(objpath));
		if (insns > limit) {
			printf("bpf-insns: error: %s: program %s processed %u insns, over the "
			       "limit of %u\n",
			       base_name(objpath), name, insns, limit);
			t->over++;
		}
		if (insns >= t->max_insns) {
			t->max_insns = insns;
			snprintf(t->max_name, sizeof(t->max_name), "%s", name);
		}
	}
}

static void check_path(const char *path, unsigned int limit, struct totals *t)
{
	struct stat st;
	char pattern[4096];
	glob_t g;
	size_t i;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(pattern, sizeof(pattern), "%s/*.bpf.o", path);
		if (glob(pattern, 0, NULL, &g) != 0)
			return; /* no objects: nothing to check */
		for (i = 0; i < g.gl_pathc; i++)
			check_object(g.gl_pathv[i], limit, t);
		globfree(&g);
		return;
	}
	check_object(path, limit, t);
}

int main(int argc, char **argv)
{
	struct totals t = {0};
	unsigned long limit = 100000;
	char *end;
	int i = 1;

	if (argc > 2 && strcmp(argv[1], "--limit") == 0) {
		limit = strtoul(argv[2], &end, 10);
		if (*argv[2] == '\0' || *end != '\0' || limit > 0xffffffffUL) {
			fprintf(stderr, "bpf-insns: bad --limit %s\n", argv[2]);
			return 2;
		}
		i = 3;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: bpf-insns [--limit N] DIR|OBJ...\n");
		return 2;
	}
	libbpf_set_print(libbpf_print);
	for (; i < argc; i++)
		check_path(argv[i], (unsigned int)limit, &t);

	if (t.progs == 0 && t.failed == 0)
		printf("bpf-insns: 0 programs (no BPF objects)\n");
	else
		printf("bpf-insns: %u programs in %u objects, max %u insns (%s), limit %lu, "
		       "%u over the limit, %u failed to load\n",
		       t.progs, t.objs, t.max_insns, t.max_name[0] ? t.max_name : "-", limit,
		       t.over, t.failed);
	return t.over || t.failed ? 1 : 0;
}
