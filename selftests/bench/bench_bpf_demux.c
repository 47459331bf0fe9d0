// SPDX-License-Identifier: MIT
/*
 * Packets/s delivered to the right worker: userspace demux vs SK_REUSEPORT BPF demux.
 *
 * Namespace A sends 64-byte warpgate DATA datagrams for 256 pipes from 16 source ports, as
 * fast as it can, over a veth into namespace B, where a 4-worker node receives them:
 *   userspace: one socket; a demux thread reads batches with recvmmsg(), looks each CID up
 *              (warp_fp_demux_select(), a hash lookup) and hands the datagram to the owning
 *              worker through a single-producer ring + eventfd;
 *   bpf:       a SO_REUSEPORT group (default socket + one per worker) steered by the
 *              sk_reuseport program; each worker reads its own socket with recvmmsg().
 * Only datagrams that reach their owner count.  Same sender, same duration, same machine.
 *
 * Two receiver policies are measured: blocking reads, and reads that nap 100 us after a short
 * batch (fewer wakeups).  WARP_BENCH_COALESCE_US=N runs only that nap; WARP_BENCH_PIN=1 pins
 * the sender to CPU 0 and the node to CPU 1.
 *
 * usage: bench_bpf_demux   (WARP_BENCH_SECS: seconds per run, default 4; 77 without root)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <warpgate/wire.h>

#include "bpf/fastpath.h"

enum {
	NWORK = 4,
	NPIPE = 256,
	NSRC = 16,
	BATCH = 64,
	PKT = 64,
	RING = 4096, /* per worker, power of two */
	PORT = 7700,
};

static char ns_a[32], ns_b[32];
static int pin_cpus;	/* WARP_BENCH_PIN=1: sender on CPU 0, receivers on CPU 1 */
static int coalesce_us; /* WARP_BENCH_COALESCE_US: nap after a short batch */

static void pin(int cpu)
{
	cpu_set_t set;

	if (!pin_cpus)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void nap(int n)
{
	if (coalesce_us && n < BATCH / 2)
		usleep((useconds_t)coalesce_us);
}
static atomic_bool stop_send, stop_recv;

static int owner_of(unsigned int pipe)
{
	return 1 + (int)(pipe % NWORK);
}

static void make_cid(uint8_t *cid, unsigned int i)
{
	memset(cid, 0, 8);
	cid[0] = 0xc1;
	cid[6] = (uint8_t)(i >> 8);
	cid[7] = (uint8_t)i;
}

static int pipe_of(const uint8_t *p, size_t n)
{
	if (n < WARP_HDR_LEN || p[WARP_CID_OFF] != 0xc1)
		return -1;
	return p[WARP_CID_OFF + 6] << 8 | p[WARP_CID_OFF + 7];
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
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

/* ------------------------------------------------------------------ sender */

struct sender {
	pthread_t th;
	uint64_t sent;
	double secs;
	double cpu; /* includes the veth receive softirq, which runs in the sender's context */
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	static uint8_t bufs[BATCH][PKT];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	int fds[NSRC], i, k = 0;
	unsigned int pipe = 0;
	double t0;

	if (enter(ns_a))
		return NULL;
	pin(0);
	inet_pton(AF_INET, "198.18.2.2", &dst.sin_addr);
	for (i = 0; i < NSRC; i++)
		fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		memset(bufs[i], 0, PKT);
		bufs[i][0] = WARP_HDR_FLAGS(WARP_PKT_DATA);
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = PKT;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &dst;
		msgs[i].msg_hdr.msg_namelen = sizeof(dst);
	}
	t0 = now_s();
	s->cpu = thread_cpu_s();
	while (!atomic_load(&stop_send)) {
		int n;

		for (i = 0; i < BATCH; i++)
			make_cid(bufs[i] + WARP_CID_OFF, pipe++ % NPIPE);
		n = sendmmsg(fds[k++ % NSRC], msgs, BATCH, 0);
		if (n > 0)
			s->sent += (uint64_t)n;
	}
	s->secs = now_s() - t0;
	s->cpu = thread_cpu_s() - s->cpu;
	for (i = 0; i < NSRC; i++)
		close(fds[i]);
	return NULL;
}

/* ------------------------------------------------------------------ receivers */

struct worker {
	pthread_t th;
	int fd;	 /* bpf mode: own socket */
	int efd; /* userspace mode: wakeups from the demux thread */
	int index;
	uint8_t (*ring)[PKT];
	_Atomic uint32_t head, tail;
	uint64_t ok, wrong;
	double cpu;
};

static void count(struct worker *w, const uint8_t *p, size_t n)
{
	int pipe = pipe_of(p, n);

	if (pipe >= 0 && owner_of((unsigned int)pipe) == w->index)
		w->ok++;
	else
		w->wrong++;
}

static void *bpf_worker(void *arg)
{
	struct worker *w = arg;
	static __thread uint8_t bufs[BATCH][PKT];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	double c0 = thread_cpu_s();
	int i;

	pin(1);
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = PKT;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	while (!atomic_load(&stop_recv)) {
		int n = recvmmsg(w->fd, msgs, BATCH, MSG_WAITFORONE, NULL);

		for (i = 0; i < n; i++)
			count(w, bufs[i], msgs[i].msg_len);
		nap(n);
	}
	w->cpu = thread_cpu_s() - c0;
	return NULL;
}

static void *ring_worker(void *arg)
{
	struct worker *w = arg;
	double c0 = thread_cpu_s();
	uint64_t v;

	pin(1);
	while (!atomic_load(&stop_recv)) {
		uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
		uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);

		if (t == h) {
			if (read(w->efd, &v, sizeof(v)) < 0 && errno != EAGAIN && errno != EINTR)
				break;
			continue;
		}
		while (t != h) {
			count(w, w->ring[t & (RING - 1)], PKT);
			t++;
		}
		atomic_store_explicit(&w->tail, t, memory_order_release);
	}
	w->cpu = thread_cpu_s() - c0;
	return NULL;
}

struct demuxer {
	pthread_t th;
	int fd;
	struct warp_fp_demux *d;
	struct worker *w;
	uint64_t dropped, other;
	double cpu;
};

static void *demux_main(void *arg)
{
	struct demuxer *dm = arg;
	static uint8_t bufs[BATCH][PKT];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	double c0 = thread_cpu_s();
	int i;

	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = PKT;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	pin(1);
	while (!atomic_load(&stop_recv)) {
		bool touched[NWORK + 1] = {false};
		int n = recvmmsg(dm->fd, msgs, BATCH, MSG_WAITFORONE, NULL);

		for (i = 0; i < n; i++) {
			unsigned int idx = warp_fp_demux_select(dm->d, bufs[i], msgs[i].msg_len);
			struct worker *w;
			uint32_t h;

			if (idx == 0 || idx > NWORK) {
				dm->other++;
				continue;
			}
			w = &dm->w[idx];
			h = atomic_load_explicit(&w->head, memory_order_relaxed);
			if (h - atomic_load_explicit(&w->tail, memory_order_acquire) >= RING) {
				dm->dropped++;
				continue;
			}
			memcpy(w->ring[h & (RING - 1)], bufs[i], PKT);
			atomic_store_explicit(&w->head, h + 1, memory_order_release);
			touched[idx] = true;
		}
		for (i = 1; i <= NWORK; i++) {
			uint64_t one = 1;

			if (touched[i] && write(dm->w[i].efd, &one, sizeof(one)) < 0)
				break;
		}
		nap(n);
	}
	dm->cpu = thread_cpu_s() - c0;
	return NULL;
}

static int udp_sock(bool reuse)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	struct timeval tv = {.tv_usec = 200000};
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1, rcv = 8 << 20;

	inet_pton(AF_INET, "198.18.2.2", &a.sin_addr);
	if (reuse)
		setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv));
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(s, (struct sockaddr *)&a, sizeof(a))) {
		close(s);
		return -1;
	}
	return s;
}

struct run {
	const char *name;
	uint64_t sent, ok, wrong, dropped;
	double secs, recv_cpu, send_cpu, prog_ns;
};

static int run_mode(bool bpf, double secs, struct run *r)
{
	struct worker w[NWORK + 1];
	struct demuxer dm = {0};
	struct sender snd = {0};
	int fds[NWORK + 1] = {-1, -1, -1, -1, -1}, i, nfd = bpf ? NWORK + 1 : 1;
	struct warp_fp_demux *d = NULL;
	uint64_t rt0 = 0, rc0 = 0;
	int err = 0;

	memset(w, 0, sizeof(w));
	memset(r, 0, sizeof(*r));
	r->name = bpf ? "bpf (SK_REUSEPORT)" : "userspace (recvmmsg)";
	atomic_store(&stop_send, false);
	atomic_store(&stop_recv, false);
	if (enter(ns_b))
		return -EPERM;
	for (i = 0; i < nfd; i++) {
		fds[i] = udp_sock(bpf);
		if (fds[i] < 0)
			return -errno;
	}
	d = warp_fp_demux_new(fds, (unsigned int)(bpf ? nfd : NWORK + 1), 0,
			      bpf ? 0 : WARP_FP_F_NO_BPF);
	if (!d)
		return -errno;
	if (bpf && !warp_fp_demux_active(d)) {
		fprintf(stderr, "%s\n", warp_fp_demux_status(d));
		err = -EOPNOTSUPP;
		goto out;
	}
	for (i = 0; i < NPIPE; i++) {
		uint8_t cid[8];

		make_cid(cid, (unsigned int)i);
		warp_fp_demux_route_add(d, cid, (unsigned int)owner_of((unsigned int)i));
	}
	for (i = 1; i <= NWORK; i++) {
		w[i].index = i;
		if (bpf) {
			w[i].fd = fds[i];
			pthread_create(&w[i].th, NULL, bpf_worker, &w[i]);
		} else {
			w[i].ring = calloc(RING, PKT);
			w[i].efd = eventfd(0, EFD_CLOEXEC);
			pthread_create(&w[i].th, NULL, ring_worker, &w[i]);
		}
	}
	if (!bpf) {
		dm.fd = fds[0];
		dm.d = d;
		dm.w = w;
		pthread_create(&dm.th, NULL, demux_main, &dm);
	} else {
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);

		memset(&info, 0, sizeof(info));
		bpf_obj_get_info_by_fd(warp_fp_demux_prog_fd(d), &info, &len);
		rt0 = info.run_time_ns;
		rc0 = info.run_cnt;
	}
	pthread_create(&snd.th, NULL, sender_main, &snd);
	usleep((useconds_t)(secs * 1e6));
	atomic_store(&stop_send, true);
	pthread_join(snd.th, NULL);
	usleep(300000); /* let queued datagrams drain */
	atomic_store(&stop_recv, true);
	for (i = 1; i <= NWORK; i++) {
		if (!bpf) {
			uint64_t one = 1;

			if (write(w[i].efd, &one, sizeof(one)) < 0)
				err = -errno;
		}
		pthread_join(w[i].th, NULL);
	}
	if (!bpf)
		pthread_join(dm.th, NULL);
	if (bpf) {
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);

		memset(&info, 0, sizeof(info));
		bpf_obj_get_info_by_fd(warp_fp_demux_prog_fd(d), &info, &len);
		if (info.run_cnt > rc0)
			r->prog_ns =
				(double)(info.run_time_ns - rt0) / (double)(info.run_cnt - rc0);
	}
	r->sent = snd.sent;
	r->secs = snd.secs;
	r->send_cpu = snd.cpu;
	r->recv_cpu = dm.cpu;
	r->dropped = dm.dropped;
	for (i = 1; i <= NWORK; i++) {
		r->ok += w[i].ok;
		r->wrong += w[i].wrong;
		r->recv_cpu += w[i].cpu;
		free(w[i].ring);
		if (!bpf)
			close(w[i].efd);
	}
out:
	warp_fp_demux_free(d);
	for (i = 0; i < nfd; i++)
		close(fds[i]);
	return err;
}

static void print_run(const struct run *r)
{
	char prog[16] = "-";

	if (r->prog_ns > 0)
		snprintf(prog, sizeof(prog), "%.1f", r->prog_ns);
	printf("%-22s %7d %10.0f %10.0f %9llu %10.0f %10.0f %8s\n", r->name, NWORK,
	       (double)r->sent / r->secs, (double)r->ok / r->secs, (unsigned long long)r->wrong,
	       r->ok ? r->recv_cpu * 1e9 / (double)r->ok : 0,
	       r->ok ? (r->recv_cpu + r->send_cpu) * 1e9 / (double)r->ok : 0, prog);
}

static double pps(const struct run *r)
{
	return (double)r->ok / r->secs;
}

int main(void)
{
	const char *e = getenv("WARP_BENCH_SECS");
	double secs = e ? atof(e) : 4;
	struct run u, b;
	int stats_fd, err, c, coalesce_env;
	char cmd[512];

	if (geteuid() != 0) {
		fprintf(stderr, "bench_bpf_demux needs root (namespaces, BPF)\n");
		return 77;
	}
	if (secs <= 0)
		secs = 4;
	pin_cpus = getenv("WARP_BENCH_PIN") && atoi(getenv("WARP_BENCH_PIN"));
	coalesce_env =
		getenv("WARP_BENCH_COALESCE_US") ? atoi(getenv("WARP_BENCH_COALESCE_US")) : -1;
	libbpf_set_print(NULL);
	snprintf(ns_a, sizeof(ns_a), "wpb-a-%d", (int)getpid());
	snprintf(ns_b, sizeof(ns_b), "wpb-b-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd),
		 "ip netns add %s && ip netns add %s && "
		 "ip link add ba netns %s type veth peer name bb netns %s && "
		 "ip -n %s addr add 198.18.2.1/24 dev ba && ip -n %s addr add 198.18.2.2/24 dev bb "
		 "&& "
		 "ip -n %s link set ba up && ip -n %s link set bb up",
		 ns_a, ns_b, ns_a, ns_b, ns_a, ns_b, ns_a, ns_b);
	atexit(cleanup);
	if (system(cmd)) {
		fprintf(stderr, "cannot create the namespaces\n");
		return 77;
	}
	if (pin_cpus) {
		/* receive softirq on the node's CPU, not in the sender's context */
		snprintf(cmd, sizeof(cmd),
			 "ip netns exec %s sh -c 'echo 2 > /sys/class/net/bb/queues/rx-0/rps_cpus'",
			 ns_b);
		if (system(cmd))
			fprintf(stderr, "RPS setup failed\n");
	}
	stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);

	printf("== CID demux over veth: %d pipes, %d source ports, %d-byte datagrams, %.0f s per "
	       "run, %ld CPUs, sender and receivers on the same machine\n",
	       NPIPE, NSRC, PKT, secs, sysconf(_SC_NPROCESSORS_ONLN));
	printf("%-22s %7s %10s %10s %9s %10s %10s %8s\n", "mode", "workers", "sent pps",
	       "right pps", "misrouted", "recv ns/pk", "all ns/pkt", "prog ns");
	for (c = 0; c < 2; c++) {
		/* blocking reads as datagrams come, then batched reads (a short nap after a short
		 * batch, as busy UDP servers do) */
		coalesce_us = coalesce_env >= 0 ? coalesce_env : c ? 100 : 0;
		if (c && coalesce_env >= 0)
			break;
		printf("-- receivers: %s\n", coalesce_us ? "nap after a short batch" : "blocking");
		err = run_mode(false, secs, &u);
		if (!err)
			err = run_mode(true, secs, &b);
		if (err) {
			fprintf(stderr, "demux benchmark failed: %s\n", strerror(-err));
			return err == -EOPNOTSUPP ? 77 : 1;
		}
		print_run(&u);
		print_run(&b);
		printf("   bpf/userspace right pps: %.2fx (target >= 2x: %s); CPU per delivered "
		       "packet userspace/bpf: node threads %.2f, all %.2f; ring drops %llu\n",
		       pps(&b) / pps(&u), pps(&b) >= 2 * pps(&u) ? "met" : "MISSED",
		       (u.recv_cpu / (double)u.ok) / (b.recv_cpu / (double)b.ok),
		       ((u.recv_cpu + u.send_cpu) / (double)u.ok) /
			       ((b.recv_cpu + b.send_cpu) / (double)b.ok),
		       (unsigned long long)u.dropped);
	}
	printf("right pps: datagrams delivered to their owner per second; recv ns/pkt: CPU of the "
	       "node's threads per delivered datagram;\nall ns/pkt: plus the sender thread, "
	       "which also runs the veth receive softirq (and so the BPF program)\n");
	if (stats_fd >= 0)
		close(stats_fd);
	return 0;
}
