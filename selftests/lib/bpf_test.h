/* SPDX-License-Identifier: MIT */
/* Helpers for the BPF tier: privilege gate, BPF_PROG_RUN wrapper, private netns. */
#ifndef WARP_TEST_BPF_TEST_H
#define WARP_TEST_BPF_TEST_H

#include <stddef.h>
#include <stdint.h>

/* Exits 77 (skipped) with a reason unless root with a working bpf(). */
void bpf_test_require_root(void);

/* One BPF_PROG_RUN of prog_fd on a packet; *out_len is the capacity on entry.  Returns 0 or
 * -errno; *retval is the program's verdict. */
int bpf_test_run(int prog_fd, const void *in, size_t len, void *out, size_t *out_len,
		 uint32_t *retval);

/* Moves the calling process into a fresh network namespace with lo up, so attachments and
 * sockets vanish with it.  Returns 0 or -errno. */
int bpf_test_private_netns(void);

/* Runs a shell command (for ip(8) setup inside the private namespace); 0 on exit status 0. */
int bpf_test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sum of a per-CPU u64 array map slot. */
uint64_t bpf_test_percpu_sum(int map_fd, uint32_t key);

#endif
