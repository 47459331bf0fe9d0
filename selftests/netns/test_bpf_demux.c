// SPDX-License-Identifier: MIT
/*
 * CID demux end to end: a node in namespace B with 4 worker threads, each owning one
 * SO_REUSEPORT socket on 198.18.1.2:7400, plus the default socket; a sender in namespace A
 * sends datagrams for 64 pipes from 16 source ports over a veth.  With the SK_REUSEPORT
 * program every datagram lands on the worker that owns its CID, unknown CIDs and STUN on the
 * default socket.  The control run without the program shows the kernel's 4-tuple hash
 * scattering the same pipes across workers.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include <warpgate/wire.h>

#include "bpf/fastpath.h"
#include "../lib/bpf_test.h"

enum {
	NWORK = 4,
	NSOCK = NWORK + 1, /* index 0: default socket */
	NCID = 64,
	PER = 50,
	NSEND = 16,
	NUNKNOWN = 100,
	PORT = 7400,
};

static char ns_a[32], ns_b[32];
static int ns_orig = -1;

struct worker {
	pthread_t th;
	int fd;
	int index;
	unsigned int per_cid[NCID];
	unsigned int misrouted; /* a routed CID on a socket other than its owner */
	unsigned int unknown;	/* unknown CID / not warpgate */
};

static int owner_of(int cid_index)
{
	return 1 + cid_index % NWORK;
}

static void make_cid(uint8_t cid[8], int i)
{
	memset(cid, 0, 8);
	cid[0] = 0xc1;
	cid[6] = (uint8_t)(i >> 8);
	cid[7] = (uint8_t)i;
}

static int enter(const char *name)
{
	char path[128];
	int fd, err = 0;

	snprintf(path, sizeof(path), "/var/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (setns(fd, CLONE_NEWNET))
		err = -errno;
	close(fd);
	return err;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint8_t buf[256];
	int idle = 0;

	/* stop after 500 ms without traffic */
	while (idle < 5) {
		struct pollfd p = {.fd = w->fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 100) <= 0) {
			idle++;
			continue;
		}
		idle = 0;
		while ((n = recv(w->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
			int i;

			if (n < WARP_HDR_LEN || buf[0] != WARP_HDR_FLAGS(WARP_PKT_DATA) ||
			    buf[WARP_CID_OFF] != 0xc1) {
				w->unknown++;
				continue;
			}
			i = buf[WARP_CID_OFF + 6] << 8 | buf[WARP_CID_OFF + 7];
			if (i >= NCID) {
				w->unknown++;
				continue;
			}
			if (owner_of(i) != w->index)
				w->misrouted++;
			w->per_cid[i]++;
		}
	}
	return NULL;
}

static int reuse_sock(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1, rcv = 4 << 20;

	assert_true(s >= 0);
	inet_pton(AF_INET, "198.18.1.2", &a.sin_addr);
	assert_int_equal(setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
	setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv));
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	return s;
}

/* Runs one round; returns the workers' results in w[]. */
static void run_round(struct worker w[NSOCK], unsigned int flags, bool *active)
{
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	int fds[NSOCK], snd[NSEND], i, j;
	struct warp_fp_demux *d;
	uint8_t pkt[64], cid[8];

	inet_pton(AF_INET, "198.18.1.2", &dst.sin_addr);
	assert_int_equal(enter(ns_b), 0);
	for (i = 0; i < NSOCK; i++)
		fds[i] = reuse_sock();
	d = warp_fp_demux_new(fds, NSOCK, 0, flags);
	assert_non_null(d);
	*active = warp_fp_demux_active(d);
	print_message("# demux: %s\n", warp_fp_demux_status(d));
	for (i = 0; i < NCID; i++) {
		make_cid(cid, i);
		assert_int_equal(warp_fp_demux_route_add(d, cid, (unsigned int)owner_of(i)), 0);
	}
	memset(w, 0, sizeof(struct worker) * NSOCK);
	for (i = 0; i < NSOCK; i++) {
		w[i].fd = fds[i];
		w[i].index = i;
		assert_int_equal(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
	}

	assert_int_equal(enter(ns_a), 0);
	for (i = 0; i < NSEND; i++) {
		snd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		assert_true(snd[i] >= 0);
	}
	memset(pkt, 0, sizeof(pkt));
	for (j = 0; j < PER; j++) {
		for (i = 0; i < NCID; i++) {
			pkt[0] = WARP_HDR_FLAGS(WARP_PKT_DATA);
			make_cid(pkt + WARP_CID_OFF, i);
			assert_int_equal(sendto(snd[(i + j) % NSEND], pkt, sizeof(pkt), 0,
						(struct sockaddr *)&dst, sizeof(dst)),
					 sizeof(pkt));
		}
		usleep(1000); /* stay far below the receive buffers */
	}
	for (i = 0; i < NUNKNOWN; i++) {
		pkt[0] = WARP_HDR_FLAGS(WARP_PKT_DATA);
		make_cid(pkt + WARP_CID_OFF, NCID + i); /* never routed */
		pkt[WARP_CID_OFF] = 0xee;
		sendto(snd[i % NSEND], pkt, sizeof(pkt), 0, (struct sockaddr *)&dst, sizeof(dst));
		pkt[0] = 0x00; /* STUN-looking */
		sendto(snd[(i + 1) % NSEND], pkt, sizeof(pkt), 0, (struct sockaddr *)&dst,
		       sizeof(dst));
	}
	for (i = 0; i < NSOCK; i++)
		pthread_join(w[i].th, NULL);
	for (i = 0; i < NSEND; i++)
		close(snd[i]);
	warp_fp_demux_free(d);
	for (i = 0; i < NSOCK; i++)
		close(fds[i]);
	assert_int_equal(setns(ns_orig, CLONE_NEWNET), 0);
}

static void test_bpf_demux_4_workers(void **state)
{
	struct worker w[NSOCK];
	unsigned int total = 0, misrouted = 0;
	bool active;
	int i, k;

	run_round(w, 0, &active);
	assert_true(active);
	for (k = 0; k < NSOCK; k++) {
		misrouted += w[k].misrouted;
		print_message("# socket %d: unknown %u misrouted %u\n", k, w[k].unknown,
			      w[k].misrouted);
	}
	for (i = 0; i < NCID; i++) {
		unsigned int got = 0;

		for (k = 0; k < NSOCK; k++)
			got += w[k].per_cid[i];
		total += got;
		/* each pipe: everything on its owner, nothing lost */
		assert_int_equal(w[owner_of(i)].per_cid[i], PER);
	}
	assert_int_equal(total, NCID * PER);
	assert_int_equal(misrouted, 0);
	assert_int_equal(w[0].unknown, 2 * NUNKNOWN);
	for (k = 1; k < NSOCK; k++)
		assert_int_equal(w[k].unknown, 0);
}

/* Without the program the kernel hashes the 4-tuple: the same pipes land on several
 * sockets, which is what makes userspace demux (or this program) necessary. */
static void test_control_without_bpf(void **state)
{
	struct worker w[NSOCK];
	unsigned int misrouted = 0, total = 0, split = 0;
	bool active;
	int i, k;

	run_round(w, WARP_FP_F_NO_BPF, &active);
	assert_false(active);
	for (i = 0; i < NCID; i++) {
		int holders = 0;

		for (k = 0; k < NSOCK; k++) {
			total += w[k].per_cid[i];
			holders += w[k].per_cid[i] > 0;
		}
		split += holders > 1;
	}
	for (k = 0; k < NSOCK; k++)
		misrouted += w[k].misrouted;
	print_message("# without BPF: %u of %u datagrams on a non-owner socket, %u of %d pipes "
		      "split across sockets\n",
		      misrouted, total, split, NCID);
	assert_int_equal(total, NCID * PER);
	assert_true(misrouted > total / 4);
	assert_true(split > NCID / 2);
}

static int setup(void **state)
{
	snprintf(ns_a, sizeof(ns_a), "wpd-a-%d", (int)getpid());
	snprintf(ns_b, sizeof(ns_b), "wpd-b-%d", (int)getpid());
	ns_orig = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns_orig < 0)
		return -1;
	return bpf_test_sh("ip netns add %s && ip netns add %s && "
			   "ip link add da netns %s type veth peer name db netns %s && "
			   "ip -n %s addr add 198.18.1.1/24 dev da && "
			   "ip -n %s addr add 198.18.1.2/24 dev db && "
			   "ip -n %s link set da up && ip -n %s link set db up",
			   ns_a, ns_b, ns_a, ns_b, ns_a, ns_b, ns_a, ns_b)
		       ? -1
		       : 0;
}

static int teardown(void **state)
{
	if (ns_orig >= 0) {
		setns(ns_orig, CLONE_NEWNET);
		close(ns_orig);
	}
	bpf_test_sh("ip netns del %s; ip netns del %s", ns_a, ns_b);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bpf_demux_4_workers),
		cmocka_unit_test(test_control_without_bpf),
	};

	bpf_test_require_root();
	return cmocka_run_group_tests_name("bpf_demux", tests, setup, teardown);
}
