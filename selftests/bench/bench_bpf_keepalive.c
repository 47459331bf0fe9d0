// SPDX-License-Identifier: MIT
/*
 * CPU needed to keep 10,000 idle pipes alive: userspace keepalive answers vs XDP answers.
 *
 * Namespace A pings 10,000 pipes (one CID each) of a responder in namespace B, every pipe
 * once per interval, paced in 10 ms ticks, over a veth, and counts the pongs.  The responder
 * is a separate process:
 *   userspace: poll + recvmmsg + warp_fp_input() (the fast path's userspace twin) + sendmmsg;
 *   xdp:       loads the fast path, attaches XDP to its veth, registers the pipes, sleeps.
 * Pings are spread evenly (one per slot), as pings of independent peers arrive.
 * Responder CPU = the process's user+system time while serving (its own getrusage, setup
 * excluded) + the XDP program's run time (kernel.bpf_stats; the program runs in softirq
 * context, charged to whichever thread sent the frame).  /proc/stat is not used: other
 * tenants of the machine would pollute it.
 *
 * usage: bench_bpf_keepalive   (WARP_BENCH_SECS default 60, WARP_BENCH_PIPES default 10000,
 *                               WARP_BENCH_INTERVAL_MS default 5000; 77 without root)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <warpgate/wire.h>

#include "bpf/fastpath.h"
#include "xdp_pass.skel.h"

#define PORT_A 7801
#define PORT_B 7800
#define BATCH  64

static char ns_a[32], ns_b[32];
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	stop = 1;
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

static void cleanup(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", ns_a,
		 ns_b);
	if (system(cmd))
		return;
}

static void make_cid(uint8_t *cid, uint32_t i)
{
	memset(cid, 0, 8);
	cid[0] = 0xb1;
	cid[4] = (uint8_t)(i >> 24);
	cid[5] = (uint8_t)(i >> 16);
	cid[6] = (uint8_t)(i >> 8);
	cid[7] = (uint8_t)i;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double ru_s(int who)
{
	struct rusage ru;

	getrusage(who, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double proc_cpu_s(void)
{
	return ru_s(RUSAGE_SELF);
}

struct child_report {
	double cpu;	  /* user+sys between "ready" and SIGTERM (setup excluded) */
	uint64_t pongs;	  /* answered by the responder (kernel or userspace) */
	uint64_t prog_ns; /* XDP program run time */
	uint64_t prog_runs;
	int ok;
};

/* ------------------------------------------------------------------ responder (child) */

static int responder(bool xdp, uint32_t npipes, int report_fd, int ready_fd)
{
	struct warp_fp_opts o = {.flags = WARP_FP_F_NO_PIN | (xdp ? 0 : WARP_FP_F_NO_BPF),
				 .ka_max_entries = npipes + 16};
	struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(PORT_B)};
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(PORT_A)};
	struct child_report rep = {0};
	static uint8_t in[BATCH][128], out[BATCH][128];
	struct sockaddr_in src[BATCH];
	struct mmsghdr rm[BATCH], sm[BATCH];
	struct iovec riov[BATCH], siov[BATCH];
	struct sigaction sa = {.sa_handler = on_term};
	struct warp_fp_stats st;
	struct warp_fp *fp;
	uint8_t cid[8], peer_cid[8];
	uint32_t i;
	int s, err, rcv = 8 << 20;

	sigaction(SIGTERM, &sa, NULL);
	if (enter(ns_b))
		return 1;
	inet_pton(AF_INET, "198.18.3.2", &local.sin_addr);
	inet_pton(AF_INET, "198.18.3.1", &peer.sin_addr);
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv));
	if (bind(s, (struct sockaddr *)&local, sizeof(local)))
		return 1;
	fp = warp_fp_new(&o);
	if (!fp)
		return 1;
	if (xdp) {
		err = warp_fp_attach(fp, (int)if_nametoindex("kb"), WARP_FP_ATTACH_NO_TC);
		if (err != WARP_FP_MODE_XDP) {
			fprintf(stderr, "XDP attach: %s (%s)\n", strerror(-err),
				warp_fp_status(fp));
			return 1;
		}
	}
	for (i = 0; i < npipes; i++) {
		make_cid(cid, i);
		make_cid(peer_cid, i);
		peer_cid[0] = 0xa1;
		if (warp_fp_ka_add(fp, cid, peer_cid, (struct sockaddr *)&peer, PORT_B))
			return 1;
	}
	rep.cpu = -proc_cpu_s();
	if (write(ready_fd, "r", 1) != 1)
		return 1;

	memset(rm, 0, sizeof(rm));
	memset(sm, 0, sizeof(sm));
	for (i = 0; i < BATCH; i++) {
		riov[i].iov_base = in[i];
		riov[i].iov_len = sizeof(in[i]);
		rm[i].msg_hdr.msg_iov = &riov[i];
		rm[i].msg_hdr.msg_iovlen = 1;
		rm[i].msg_hdr.msg_name = &src[i];
	}
	while (!stop) {
		struct pollfd p = {.fd = s, .events = POLLIN};
		int n, k, ns = 0;

		if (poll(&p, 1, 500) <= 0)
			continue;
		for (i = 0; i < BATCH; i++)
			rm[i].msg_hdr.msg_namelen = sizeof(src[i]);
		n = recvmmsg(s, rm, BATCH, MSG_DONTWAIT, NULL);
		for (k = 0; k < n; k++) {
			size_t rl = sizeof(out[ns]);

			if (warp_fp_input(fp, in[k], rm[k].msg_len, (struct sockaddr *)&src[k],
					  PORT_B, 0, out[ns], &rl) != WARP_FP_REPLY)
				continue;
			siov[ns].iov_base = out[ns];
			siov[ns].iov_len = rl;
			sm[ns].msg_hdr.msg_iov = &siov[ns];
			sm[ns].msg_hdr.msg_iovlen = 1;
			sm[ns].msg_hdr.msg_name = &src[k];
			sm[ns].msg_hdr.msg_namelen = sizeof(src[k]);
			ns++;
		}
		if (ns)
			sendmmsg(s, sm, (unsigned int)ns, 0);
	}
	rep.cpu += proc_cpu_s();
	if (!warp_fp_stats(fp, &st))
		rep.pongs = st.ka[WARP_KA_STAT_TX_PONG];
	if (xdp) {
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);

		memset(&info, 0, sizeof(info));
		if (!bpf_obj_get_info_by_fd(warp_fp_xdp_prog_fd(fp), &info, &len)) {
			rep.prog_ns = info.run_time_ns;
			rep.prog_runs = info.run_cnt;
		}
	}
	rep.ok = 1;
	warp_fp_free(fp);
	close(s);
	return write(report_fd, &rep, sizeof(rep)) == sizeof(rep) ? 0 : 1;
}

/* ------------------------------------------------------------------ pinger (parent) */

struct result {
	const char *name;
	uint64_t pings, pongs;
	double resp_cpu, prog_cpu, pinger_cpu, secs;
	struct child_report rep;
};

static int run(bool xdp, uint32_t npipes, double secs, unsigned int interval_ms, struct result *r)
{
	struct bpf_link_create_opts lo = {.sz = sizeof(lo), .flags = XDP_FLAGS_DRV_MODE};
	struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(PORT_A)};
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(PORT_B)};
	static uint8_t pings[BATCH][WARP_PING_LEN], rbuf[BATCH][128];
	struct mmsghdr sm[BATCH], rm[BATCH];
	struct iovec siov[BATCH], riov[BATCH];
	int rfd[2], ready[2], s, link = -1, status, i, orig, rcv = 8 << 20;
	struct xdp_pass_bpf *pass = NULL;
	uint32_t next_pipe = 0;
	uint64_t slot_ns;
	struct timespec next;
	double t0, c0;
	struct rusage ru;
	uint64_t pn = 0;
	pid_t pid;
	char c;

	memset(r, 0, sizeof(*r));
	r->name = xdp ? "xdp answers" : "userspace answers";
	if (pipe(rfd) || pipe(ready))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		close(rfd[0]);
		close(ready[0]);
		_exit(responder(xdp, npipes, rfd[1], ready[1]));
	}
	close(rfd[1]);
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1) {
		waitpid(pid, &status, 0);
		return -EIO;
	}
	close(ready[0]);

	orig = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (enter(ns_a))
		return -EPERM;
	/* same setup for both runs: the peer veth needs an XDP program to receive XDP_TX */
	pass = xdp_pass_bpf__open_and_load();
	if (pass)
		link = bpf_link_create(bpf_program__fd(pass->progs.warp_xdp_pass),
				       (int)if_nametoindex("ka"), BPF_XDP, &lo);
	inet_pton(AF_INET, "198.18.3.1", &local.sin_addr);
	inet_pton(AF_INET, "198.18.3.2", &dst.sin_addr);
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv));
	if (bind(s, (struct sockaddr *)&local, sizeof(local)))
		return -errno;
	memset(sm, 0, sizeof(sm));
	memset(rm, 0, sizeof(rm));
	for (i = 0; i < BATCH; i++) {
		memset(pings[i], 0x5a, WARP_PING_LEN);
		pings[i][0] = WARP_HDR_FLAGS(WARP_PKT_PING);
		pings[i][1] = pings[i][2] = pings[i][3] = 0;
		siov[i].iov_base = pings[i];
		siov[i].iov_len = WARP_PING_LEN;
		sm[i].msg_hdr.msg_iov = &siov[i];
		sm[i].msg_hdr.msg_iovlen = 1;
		sm[i].msg_hdr.msg_name = &dst;
		sm[i].msg_hdr.msg_namelen = sizeof(dst);
		riov[i].iov_base = rbuf[i];
		riov[i].iov_len = sizeof(rbuf[i]);
		rm[i].msg_hdr.msg_iov = &riov[i];
		rm[i].msg_hdr.msg_iovlen = 1;
	}
	/* Idle pipes belong to independent peers: their pings arrive spread out, one by one,
	 * not in bursts, so each ping gets its own slot. */
	slot_ns = (uint64_t)interval_ms * 1000000ull / npipes;
	t0 = now_s();
	c0 = ru_s(RUSAGE_THREAD);
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (now_s() - t0 < secs) {
		int n;

		make_cid(pings[0] + WARP_CID_OFF, next_pipe++ % npipes);
		pings[0][WARP_PN_OFF + 7] = (uint8_t)pn++;
		if (sendto(s, pings[0], WARP_PING_LEN, 0, (struct sockaddr *)&dst, sizeof(dst)) ==
		    WARP_PING_LEN)
			r->pings++;
		while ((n = recvmmsg(s, rm, BATCH, MSG_DONTWAIT, NULL)) > 0)
			for (i = 0; i < n; i++)
				r->pongs += rm[i].msg_len == WARP_PING_LEN &&
					    rbuf[i][0] == WARP_HDR_FLAGS(WARP_PKT_PONG);
		next.tv_nsec += (long)slot_ns;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	usleep(200000);
	{
		int n;

		while ((n = recvmmsg(s, rm, BATCH, MSG_DONTWAIT, NULL)) > 0)
			for (i = 0; i < n; i++)
				r->pongs += rbuf[i][0] == WARP_HDR_FLAGS(WARP_PKT_PONG);
	}
	r->secs = now_s() - t0;
	r->pinger_cpu = ru_s(RUSAGE_THREAD) - c0;
	kill(pid, SIGTERM);
	if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "responder exited abnormally\n");
	if (read(rfd[0], &r->rep, sizeof(r->rep)) != sizeof(r->rep))
		memset(&r->rep, 0, sizeof(r->rep));
	close(rfd[0]);
	r->resp_cpu = r->rep.cpu;
	r->prog_cpu = (double)r->rep.prog_ns / 1e9;
	close(s);
	if (link >= 0)
		close(link);
	xdp_pass_bpf__destroy(pass);
	if (orig >= 0) {
		setns(orig, CLONE_NEWNET);
		close(orig);
	}
	return 0;
}

static void print_row(const struct result *r, double resp)
{
	printf("%-18s %9llu %9llu %9llu %10.3f %10.3f %10.3f %8.0f %10.3f\n", r->name,
	       (unsigned long long)r->pings, (unsigned long long)r->pongs,
	       (unsigned long long)r->rep.pongs, r->resp_cpu, r->prog_cpu, resp,
	       r->pings ? resp * 1e9 / (double)r->pings : 0, r->pinger_cpu);
}

int main(void)
{
	const char *es = getenv("WARP_BENCH_SECS"), *ep = getenv("WARP_BENCH_PIPES"),
		   *ei = getenv("WARP_BENCH_INTERVAL_MS");
	double secs = es ? atof(es) : 60;
	uint32_t npipes = ep ? (uint32_t)atoi(ep) : 10000;
	unsigned int interval_ms = ei ? (unsigned int)atoi(ei) : 5000;
	struct result u, x;
	double ur, xr;
	int stats_fd, err;
	char cmd[512];

	if (geteuid() != 0) {
		fprintf(stderr, "bench_bpf_keepalive needs root (namespaces, XDP)\n");
		return 77;
	}
	if (secs <= 0 || !npipes || interval_ms < 10) {
		fprintf(stderr, "bad WARP_BENCH_* setting\n");
		return 2;
	}
	libbpf_set_print(NULL);
	snprintf(ns_a, sizeof(ns_a), "wpk-a-%d", (int)getpid());
	snprintf(ns_b, sizeof(ns_b), "wpk-b-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd),
		 "ip netns add %s && ip netns add %s && "
		 "ip link add ka netns %s type veth peer name kb netns %s && "
		 "ip -n %s addr add 198.18.3.1/24 dev ka && ip -n %s addr add 198.18.3.2/24 dev kb "
		 "&& "
		 "ip -n %s link set ka up && ip -n %s link set kb up",
		 ns_a, ns_b, ns_a, ns_b, ns_a, ns_b, ns_a, ns_b);
	atexit(cleanup);
	if (system(cmd)) {
		fprintf(stderr, "cannot create the namespaces\n");
		return 77;
	}
	stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (stats_fd < 0) {
		fprintf(stderr, "cannot enable bpf_stats: %s\n", strerror(errno));
		return 77;
	}
	err = run(false, npipes, secs, interval_ms, &u);
	if (!err)
		err = run(true, npipes, secs, interval_ms, &x);
	if (err) {
		fprintf(stderr, "keepalive benchmark failed: %s\n", strerror(-err));
		return 1;
	}
	printf("== keepalive CPU: %u idle pipes, one ping per pipe every %u ms (%.0f pings/s), "
	       "%.0f s per mode\n",
	       npipes, interval_ms, npipes * 1000.0 / interval_ms, secs);
	printf("%-18s %9s %9s %9s %10s %10s %10s %8s %10s\n", "mode", "pings", "pongs", "answered",
	       "proc cpu s", "bpf cpu s", "resp cpu s", "ns/ping", "pinger s");
	ur = u.resp_cpu + u.prog_cpu;
	xr = x.resp_cpu + x.prog_cpu;
	print_row(&u, ur);
	print_row(&x, xr);
	printf("ratio responder CPU userspace/xdp: %.1fx (target >= 10x: %s)\n",
	       xr > 0 ? ur / xr : 0, xr > 0 && ur / xr >= 10 ? "met" : "MISSED");
	printf("resp cpu = responder process user+sys while serving (setup excluded) + XDP program "
	       "run time (bpf_stats).\npinger s = the pinger thread, which also runs the veth "
	       "receive softirq of both directions (so the socket\ndelivery of userspace answers "
	       "and the XDP program itself): pinger+resp = %.3f s vs %.3f s (%.2fx)\n",
	       u.pinger_cpu + u.resp_cpu, x.pinger_cpu + x.resp_cpu,
	       (u.pinger_cpu + u.resp_cpu) / (x.pinger_cpu + x.resp_cpu));
	close(stats_fd);
	return 0;
}
