// SPDX-License-Identifier: MIT
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf_test.h"

void bpf_test_require_root(void)
{
	int fd;

	if (geteuid() != 0) {
		printf("# SKIP needs root (CAP_BPF, CAP_NET_ADMIN)\n");
		fprintf(stderr, "needs root (CAP_BPF, CAP_NET_ADMIN)\n");
		exit(77);
	}
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "probe", 4, 4, 1, NULL);
	if (fd < 0) {
		fprintf(stderr, "bpf() unusable here: %s\n", strerror(errno));
		exit(77);
	}
	close(fd);
}

int bpf_test_run(int prog_fd, const void *in, size_t len, void *out, size_t *out_len,
		 uint32_t *retval)
{
	struct bpf_test_run_opts o = {.sz = sizeof(o),
				      .data_in = in,
				      .data_size_in = (uint32_t)len,
				      .data_out = out,
				      .data_size_out = (uint32_t)*out_len,
				      .repeat = 1};
	int err = bpf_prog_test_run_opts(prog_fd, &o);

	if (err)
		return err < 0 ? err : -errno;
	*out_len = o.data_size_out;
	*retval = o.retval;
	return 0;
}

int bpf_test_private_netns(void)
{
	if (unshare(CLONE_NEWNET))
		return -errno;
	return bpf_test_sh("ip link set lo up") ? -EIO : 0;
}

int bpf_test_sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	if (rc)
		fprintf(stderr, "# command failed (%d): %s\n", rc, cmd);
	return rc;
}

uint64_t bpf_test_percpu_sum(int map_fd, uint32_t key)
{
	int n = libbpf_num_possible_cpus(), i;
	uint64_t vals[512] = {0}, s = 0;

	if (n <= 0 || n > 512 || bpf_map_lookup_elem(map_fd, &key, vals))
		return 0;
	for (i = 0; i < n; i++)
		s += vals[i];
	return s;
}
