// SPDX-License-Identifier: MIT
/*
 * Loader lifecycle in a private network namespace: TC fallback on lo answering real pings
 * (loopback datagrams carry CHECKSUM_PARTIAL), probe events through the ring buffer, native
 * XDP on a veth and never generic XDP, pins removed on close, a crashed run's pins and TC
 * filter cleaned by the next start, a live owner refused, and the SK_REUSEPORT CID demux.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <cmocka.h>

#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <warpgate/wire.h>

#include "bpf/fastpath.h"
#include "../lib/bpf_test.h"
#include "../lib/pkt.h"

static char pin_root[64];

static const uint8_t CID_B[8] = {0xb0, 1, 2, 3, 4, 5, 6, 7};
static const uint8_t CID_A[8] = {0xa0, 9, 8, 7, 6, 5, 4, 3};

static int udp_sock(uint16_t port, bool reuseport)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct timeval tv = {.tv_sec = 1};
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(s >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (reuseport)
		assert_int_equal(setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	return s;
}

static struct sockaddr_in lo_addr(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static bool readable(int s, int ms)
{
	struct pollfd p = {.fd = s, .events = POLLIN};

	return poll(&p, 1, ms) == 1;
}

static bool path_exists(const char *p)
{
	struct stat st;

	return !stat(p, &st);
}

static bool tc_filter_present(int ifindex)
{
	struct bpf_tc_hook hook = {
		.sz = sizeof(hook), .ifindex = ifindex, .attach_point = BPF_TC_INGRESS};
	struct bpf_tc_opts o = {.sz = sizeof(o), .handle = 0x7770, .priority = 0x7770};

	return bpf_tc_query(&hook, &o) == 0;
}

static struct warp_fp *fp_new(const char *name, warp_fp_probe_cb cb, void *user)
{
	struct warp_fp_opts o = {.name = name, .pin_root = pin_root, .probe_cb = cb, .user = user};

	return warp_fp_new(&o);
}

/* Ping from A (127.0.0.1:7101) to B (127.0.0.1:7100): answered by the TC program on lo. */
static void test_tc_lo_keepalive(void **state)
{
	struct sockaddr_in pa = lo_addr(7101), pb = lo_addr(7100);
	uint8_t ping[WARP_PING_LEN], want[WARP_PING_LEN], buf[128];
	uint8_t nonce[8] = {1, 1, 1, 1, 2, 2, 2, 2}, auth[16] = {7};
	int a = udp_sock(7101, false), b = udp_sock(7100, false);
	struct warp_fp_stats st;
	struct warp_ka_entry e;
	struct warp_fp *fp;
	char path[128];
	ssize_t n;
	int i;

	fp = fp_new("lo", NULL, NULL);
	assert_non_null(fp);
	assert_true(warp_fp_active(fp));
	assert_string_equal(warp_fp_status(fp), "bpf: active (not attached)");
	/* lo has no native XDP: never generic, so XDP-only fails and the default is TC */
	assert_int_equal(warp_fp_attach(fp, 1, WARP_FP_ATTACH_NO_TC), -EOPNOTSUPP);
	assert_int_equal(warp_fp_attach(fp, 1, 0), WARP_FP_MODE_TC);
	assert_string_equal(warp_fp_status(fp), "bpf: active (tc: lo)");
	assert_int_equal(warp_fp_ka_add(fp, CID_B, CID_A, (struct sockaddr *)&pa, 7100), 0);
	snprintf(path, sizeof(path), "%s/lo/ka_map", pin_root);
	assert_true(path_exists(path));

	for (i = 0; i < 3; i++) {
		pkt_ping(ping, CID_B, (uint64_t)i, nonce, auth);
		pkt_pong(want, ping, CID_A);
		assert_int_equal(
			sendto(a, ping, sizeof(ping), 0, (struct sockaddr *)&pb, sizeof(pb)),
			sizeof(ping));
		n = recv(a, buf, sizeof(buf), 0);
		assert_int_equal(n, WARP_PING_LEN);
		assert_memory_equal(buf, want, WARP_PING_LEN);
	}
	assert_false(readable(b, 50)); /* the owner's socket never saw the pings */
	assert_int_equal(warp_fp_ka_get(fp, CID_B, &e), 0);
	assert_int_equal(e.answered, 3);
	assert_true(e.last_seen_ns > 0);
	assert_int_equal(warp_fp_stats(fp, &st), 0);
	assert_int_equal(st.ka[WARP_KA_STAT_TX_PONG], 3);

	/* from another port of the same host: a stranger, dropped in the kernel */
	{
		int c = udp_sock(7102, false);

		assert_int_equal(
			sendto(c, ping, sizeof(ping), 0, (struct sockaddr *)&pb, sizeof(pb)),
			sizeof(ping));
		assert_false(readable(c, 100));
		assert_false(readable(b, 10));
		close(c);
	}
	assert_int_equal(warp_fp_stats(fp, &st), 0);
	assert_int_equal(st.ka[WARP_KA_STAT_DROP_WRONG_SOURCE], 1);

	warp_fp_free(fp);
	assert_false(tc_filter_present(1));
	snprintf(path, sizeof(path), "%s/lo", pin_root);
	assert_false(path_exists(path));

	/* detached: the ping now reaches B's socket */
	assert_int_equal(sendto(a, ping, sizeof(ping), 0, (struct sockaddr *)&pb, sizeof(pb)),
			 sizeof(ping));
	assert_true(readable(b, 1000));
	close(a);
	close(b);
}

static struct warp_probe_event got_ev;
static int n_ev;

static void on_ev(const struct warp_probe_event *ev, void *user)
{
	got_ev = *ev;
	n_ev++;
}

static void test_tc_lo_probe_event(void **state)
{
	static const uint8_t txid[12] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8};
	struct sockaddr_in pb = lo_addr(7200);
	int srv = udp_sock(7201, false), b = udp_sock(7200, false), i;
	struct warp_fp *fp = fp_new("probe", on_ev, NULL);
	uint8_t msg[20], buf[64];

	assert_non_null(fp);
	assert_int_equal(warp_fp_attach(fp, 1, 0), WARP_FP_MODE_TC);
	assert_true(warp_fp_event_fd(fp) >= 0);
	assert_int_equal(warp_fp_probe_add(fp, txid, 1234, 0), 0);
	pkt_stun(msg, 0x0101, txid);
	n_ev = 0;
	assert_int_equal(sendto(srv, msg, sizeof(msg), 0, (struct sockaddr *)&pb, sizeof(pb)),
			 sizeof(msg));
	for (i = 0; i < 100 && !n_ev; i++) {
		readable(warp_fp_event_fd(fp), 10);
		warp_fp_poll_events(fp);
	}
	assert_int_equal(n_ev, 1);
	assert_int_equal(got_ev.kind, WARP_PROBE_STUN);
	assert_int_equal(got_ev.family, 4);
	assert_int_equal(ntohs(got_ev.src_port_be), 7201);
	assert_int_equal(ntohs(got_ev.dst_port_be), 7200);
	assert_int_equal(got_ev.cookie, 1234);
	assert_true(got_ev.rx_ns >= got_ev.sent_ns);
	/* the reply still reaches the socket, and the userspace path does not report twice */
	assert_int_equal(recv(b, buf, sizeof(buf), 0), sizeof(msg));
	{
		struct sockaddr_in src = lo_addr(7201);
		size_t rl = 0;

		assert_int_equal(warp_fp_input(fp, buf, sizeof(msg), (struct sockaddr *)&src, 7200,
					       0, NULL, &rl),
				 WARP_FP_PASS);
		assert_int_equal(n_ev, 1);
	}
	warp_fp_free(fp);
	close(srv);
	close(b);
}

/* Native XDP attaches to a veth through a link and is gone after detach. */
static void test_xdp_veth(void **state)
{
	struct bpf_xdp_query_opts q = {.sz = sizeof(q)};
	struct warp_fp *fp;
	int ifindex;

	assert_int_equal(bpf_test_sh("ip link add wpt0 type veth peer name wpt1 && "
				     "ip link set wpt0 up && ip link set wpt1 up && "
				     "ip addr add 100.64.9.1/30 dev wpt0 && "
				     "ip addr add 100.64.9.2/30 dev wpt1"),
			 0);
	ifindex = (int)if_nametoindex("wpt0");
	assert_true(ifindex > 0);
	fp = fp_new("veth", NULL, NULL);
	assert_non_null(fp);
	assert_int_equal(warp_fp_attach(fp, ifindex, 0), WARP_FP_MODE_XDP);
	assert_string_equal(warp_fp_status(fp), "bpf: active (xdp: wpt0)");
	assert_int_equal(bpf_xdp_query(ifindex, 0, &q), 0);
	assert_int_equal(q.attach_mode, XDP_ATTACHED_DRV);
	assert_int_equal(warp_fp_attach(fp, ifindex, 0), -EALREADY);
	assert_int_equal(warp_fp_attach(fp, 1, 0), WARP_FP_MODE_TC);
	assert_string_equal(warp_fp_status(fp), "bpf: active (xdp: wpt0; tc: lo)");
	/* lo: no XDP of any kind, in particular no generic one */
	assert_int_equal(bpf_xdp_query(1, 0, &q), 0);
	assert_int_equal(q.attach_mode, XDP_ATTACHED_NONE);
	assert_int_equal(warp_fp_detach(fp, ifindex), 0);
	assert_int_equal(bpf_xdp_query(ifindex, 0, &q), 0);
	assert_int_equal(q.attach_mode, XDP_ATTACHED_NONE);
	warp_fp_free(fp);
	assert_false(tc_filter_present(1));

	/* automatic choice: a wildcard bind takes every Ethernet interface that is up but lo;
	 * a specific address takes its own interface (here lo, through TC) */
	{
		struct sockaddr_in any = {.sin_family = AF_INET};
		struct sockaddr_in loop = lo_addr(0);

		fp = fp_new("auto", NULL, NULL);
		assert_non_null(fp);
		assert_int_equal(warp_fp_attach_auto(fp, (struct sockaddr *)&any, 0), 2);
		assert_non_null(strstr(warp_fp_status(fp), "wpt0"));
		assert_non_null(strstr(warp_fp_status(fp), "wpt1"));
		assert_null(strstr(warp_fp_status(fp), "lo"));
		assert_int_equal(warp_fp_attach_auto(fp, (struct sockaddr *)&loop, 0), 1);
		assert_non_null(strstr(warp_fp_status(fp), "; tc: lo)"));
		warp_fp_free(fp);
	}
	bpf_test_sh("ip link del wpt0");
}

/* A run that dies without cleanup leaves pins and a TC filter; the next start removes them,
 * but only once the owner is really gone. */
static void test_stale_cleanup(void **state)
{
	int ready[2], status;
	char path[128], c;
	struct warp_fp *fp;
	pid_t pid;

	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct warp_fp *cfp = fp_new("crash", NULL, NULL);

		if (!cfp || warp_fp_attach(cfp, 1, 0) != WARP_FP_MODE_TC)
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		pause(); /* killed by the parent: no cleanup at all */
		_exit(0);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	snprintf(path, sizeof(path), "%s/crash/owner", pin_root);
	assert_true(path_exists(path));
	assert_true(tc_filter_present(1));

	/* the owner is alive: refused */
	errno = 0;
	assert_null(fp_new("crash", NULL, NULL));
	assert_int_equal(errno, EBUSY);

	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	assert_true(path_exists(path));
	assert_true(tc_filter_present(1)); /* TC filters outlive their process */

	fp = fp_new("crash", NULL, NULL);
	assert_non_null(fp);
	assert_false(tc_filter_present(1));
	assert_true(path_exists(path)); /* re-created for the new owner */
	warp_fp_free(fp);
	assert_false(path_exists(path));
}

/* 4 workers + a default socket on 127.0.0.1:7300; each CID lands on its owner. */
static void test_demux_lo(void **state)
{
	enum { NS = 5, NCID = 16, PER = 5 };
	struct sockaddr_in dst = lo_addr(7300);
	int fds[NS], senders[4], i, j, k;
	uint8_t cids[NCID][8], pkt[64], buf[64];
	uint64_t st[WARP_CID_STAT_MAX];
	struct warp_fp_demux *d;

	for (i = 0; i < NS; i++)
		fds[i] = udp_sock(7300, true);
	d = warp_fp_demux_new(fds, NS, 0, 0);
	assert_non_null(d);
	assert_true(warp_fp_demux_active(d));
	for (i = 0; i < NCID; i++) {
		memset(cids[i], 0, 8);
		cids[i][0] = 0xc1;
		cids[i][7] = (uint8_t)i;
		assert_int_equal(warp_fp_demux_route_add(d, cids[i], 1 + (unsigned int)i % 4), 0);
	}
	for (i = 0; i < 4; i++)
		senders[i] = udp_sock((uint16_t)(7310 + i), false);
	memset(pkt, 0, sizeof(pkt));
	assert_int_equal(warp_fp_demux_route_add(d, pkt, 1), -EINVAL); /* zero CID */
	assert_int_equal(warp_fp_demux_route_add(d, cids[0], NS), -EINVAL);

	/* many source ports per CID: the kernel's hash would scatter them */
	memset(pkt, 0, sizeof(pkt));
	for (i = 0; i < NCID; i++) {
		pkt[0] = WARP_HDR_FLAGS(WARP_PKT_DATA);
		memcpy(pkt + WARP_CID_OFF, cids[i], 8);
		for (j = 0; j < PER; j++)
			assert_int_equal(sendto(senders[j % 4], pkt, 32, 0, (struct sockaddr *)&dst,
						sizeof(dst)),
					 32);
	}
	/* drain each worker and check every datagram's CID */
	for (k = 1; k < NS; k++) {
		int got = 0;

		while (readable(fds[k], 50)) {
			ssize_t n = recv(fds[k], buf, sizeof(buf), 0);

			assert_int_equal(n, 32);
			assert_int_equal(1 + buf[WARP_CID_OFF + 7] % 4, k);
			got++;
		}
		assert_int_equal(got, NCID / 4 * PER);
	}
	assert_false(readable(fds[0], 10));

	/* unknown CID, STUN and short datagrams go to the default socket */
	pkt[WARP_CID_OFF] = 0xee;
	assert_int_equal(sendto(senders[0], pkt, 32, 0, (struct sockaddr *)&dst, sizeof(dst)), 32);
	pkt[0] = 0;
	assert_int_equal(sendto(senders[1], pkt, 32, 0, (struct sockaddr *)&dst, sizeof(dst)), 32);
	assert_int_equal(sendto(senders[2], pkt, 3, 0, (struct sockaddr *)&dst, sizeof(dst)), 3);
	for (k = 0; k < 3; k++)
		assert_true(recv(fds[0], buf, sizeof(buf), 0) > 0);
	for (k = 1; k < NS; k++)
		assert_false(readable(fds[k], 10));

	/* a removed route falls back to the default socket */
	assert_int_equal(warp_fp_demux_route_del(d, cids[3]), 0);
	pkt[0] = WARP_HDR_FLAGS(WARP_PKT_DATA);
	memcpy(pkt + WARP_CID_OFF, cids[3], 8);
	assert_int_equal(sendto(senders[3], pkt, 32, 0, (struct sockaddr *)&dst, sizeof(dst)), 32);
	assert_true(recv(fds[0], buf, sizeof(buf), 0) == 32);
	assert_int_equal(warp_fp_demux_select(d, pkt, 32), 0);
	memcpy(pkt + WARP_CID_OFF, cids[5], 8);
	assert_int_equal(warp_fp_demux_select(d, pkt, 32), 2);

	assert_int_equal(warp_fp_demux_stats(d, st), 0);
	assert_int_equal(st[WARP_CID_STAT_ROUTED], NCID * PER + 1);
	assert_int_equal(st[WARP_CID_STAT_UNKNOWN], 2 + 1);
	assert_int_equal(st[WARP_CID_STAT_NOT_WARP], 2);

	warp_fp_demux_free(d);

	/* detached: the kernel's 4-tuple hash picks sockets again, so one CID sent from 4
	 * source ports no longer lands on its old owner alone (4 ports all hashing to one
	 * socket of 5 happens with p = 1/125; a second round of 4 other ports makes a false
	 * failure p < 1e-4) */
	memcpy(pkt + WARP_CID_OFF, cids[5], 8); /* was routed to socket 2 */
	for (j = 0; j < 8; j++) {
		int s = j < 4 ? senders[j] : udp_sock((uint16_t)(7320 + j), false);

		for (k = 0; k < 5; k++)
			assert_int_equal(
				sendto(s, pkt, 32, 0, (struct sockaddr *)&dst, sizeof(dst)), 32);
		if (j >= 4)
			close(s);
	}
	{
		int holders = 0;

		for (k = 0; k < NS; k++) {
			int got = 0;

			while (readable(fds[k], 20) && recv(fds[k], buf, sizeof(buf), 0) == 32)
				got++;
			holders += got > 0;
		}
		print_message("# after detach: CID spread over %d sockets\n", holders);
		assert_true(holders > 1);
	}
	for (i = 0; i < NS; i++)
		close(fds[i]);
	for (i = 0; i < 4; i++)
		close(senders[i]);
}

static void test_status_off(void **state)
{
	struct warp_fp_opts o = {.flags = WARP_FP_F_NO_BPF};
	struct warp_fp *fp = warp_fp_new(&o);
	char reason[96];

	assert_non_null(fp);
	assert_string_equal(warp_fp_status(fp), "bpf: off (disabled by configuration)");
	assert_int_equal(warp_fp_attach(fp, 1, 0), -EOPNOTSUPP);
	assert_int_equal(warp_fp_event_fd(fp), -1);
	warp_fp_free(fp);
	setenv("WARP_BPF", "off", 1);
	fp = fp_new("env", NULL, NULL);
	assert_non_null(fp);
	assert_string_equal(warp_fp_status(fp), "bpf: off (disabled by WARP_BPF=off)");
	warp_fp_free(fp);
	unsetenv("WARP_BPF");
	assert_int_equal(warp_fp_check_support(reason, sizeof(reason)), 0);
	assert_string_equal(reason, "ok");
}

/* Without the capabilities the node runs the userspace twin and says why. */
static int drop_caps_and_check(int keep_bpf, const char *want)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2];
	struct warp_fp_opts o = {.flags = WARP_FP_F_NO_PIN};
	struct warp_fp *fp;
	int ok;

	if (syscall(SYS_capget, &h, d))
		return 2;
	d[0].effective = 0;
	d[1].effective = keep_bpf ? 1u << (39 - 32) : 0; /* CAP_BPF only */
	if (syscall(SYS_capset, &h, d))
		return 3;
	fp = warp_fp_new(&o);
	if (!fp)
		return 4;
	ok = !strcmp(warp_fp_status(fp), want) && !warp_fp_active(fp);
	if (!ok)
		fprintf(stderr, "# status: %s\n", warp_fp_status(fp));
	warp_fp_free(fp);
	return ok ? 0 : 1;
}

static void test_no_caps(void **state)
{
	int i, status;

	for (i = 0; i < 2; i++) {
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0)
			_exit(drop_caps_and_check(i, i ? "bpf: off (no CAP_NET_ADMIN)"
						       : "bpf: off (no CAP_BPF)"));
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", pin_root);
	return system(cmd) ? -1 : 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_off),	cmocka_unit_test(test_no_caps),
		cmocka_unit_test(test_tc_lo_keepalive), cmocka_unit_test(test_tc_lo_probe_event),
		cmocka_unit_test(test_xdp_veth),	cmocka_unit_test(test_stale_cleanup),
		cmocka_unit_test(test_demux_lo),
	};

	bpf_test_require_root();
	if (bpf_test_private_netns()) {
		fprintf(stderr, "cannot create a network namespace\n");
		return 77;
	}
	snprintf(pin_root, sizeof(pin_root), "/sys/fs/bpf/warpgate-test-%d", (int)getpid());
	return cmocka_run_group_tests_name("loader", tests, NULL, teardown);
}
