// SPDX-License-Identifier: MIT
/*
 * Pipe benchmarks on loopback: test-mode node start time, handshake time, and throughput of
 * reliable and datagram modes at 1 KiB and 64 KiB next to plain-socket baselines (raw UDP with
 * sendmmsg/recvmmsg, raw TCP) measured the same way: one sender thread, one receiver thread,
 * goodput counted at the receiver.
 *
 * usage: bench_pipe [--secs S] [--quick]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warpgate/connect.h>
#include <warpgate/error.h>
#include <warpgate/log.h>
#include <warpgate/node.h>
#include <warpgate/pipe.h>

static double secs = 2.0;

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void pct(uint64_t *v, int n, double *med, double *p99)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	*med = (double)v[n / 2] / 1000.0;
	*p99 = (double)v[(n * 99) / 100] / 1000.0;
}

static void release_pipe(struct warp_node *n, struct warp_pipe *p, void *user)
{
	warp_pipe_release(p);
}

static void bench_start(void)
{
	enum { N = 300 };
	uint64_t t[N], hs[100];
	struct warp_conf c;
	struct warp_loop *loop = warp_loop_new();
	double med, p99;

	warp_conf_test(&c);
	for (int i = 0; i < N; i++) {
		uint64_t t0 = warp_time_ns();
		struct warp_node *n = warp_node_start(&c, loop);

		t[i] = warp_time_ns() - t0;
		warp_node_close(n);
	}
	pct(t, N, &med, &p99);
	printf("%-34s median %8.1f us   p99 %8.1f us   (n=%d; target < 1000 us)\n",
	       "node start, test mode", med, p99, N);

	for (int i = 0; i < 100; i++) {
		struct warp_node *a = warp_node_start(&c, loop), *b = warp_node_start(&c, loop);
		struct warp_node_addr to;
		struct warp_pipe *p = NULL;
		struct warp_connect_opts o = { .strategies = 1u << WARP_STRAT_DIRECT };
		uint64_t t0;

		warp_node_on_accept(b, release_pipe, NULL);
		warp_node_address(b, &to);
		to.nroutes = 1; /* IPv4 UDP first: time one handshake, not the race */
		t0 = warp_time_ns();
		warp_auto_connect(a, &to, &o, &p, NULL);
		hs[i] = warp_time_ns() - t0;
		warp_pipe_release(p);
		warp_node_close(a);
		warp_node_close(b);
	}
	pct(hs, 100, &med, &p99);
	printf("%-34s median %8.1f us   p99 %8.1f us   (n=100, incl. connect setup)\n",
	       "handshake over loopback (UDP)", med, p99);
	warp_loop_free(loop);
}

/* ---- pipe throughput ---- */

struct rx {
	struct warp_loop *loop;
	struct warp_node *node;
	uint64_t bytes, msgs;
	int stop;
	char addr[2048];
	int ready;
	unsigned int flags;
};

static void rx_msg(struct warp_pipe *p, const uint8_t *m, size_t len, void *user)
{
	struct rx *rx = user;

	__atomic_add_fetch(&rx->bytes, len, __ATOMIC_RELAXED);
	__atomic_add_fetch(&rx->msgs, 1, __ATOMIC_RELAXED);
}

static void rx_accept(struct warp_node *n, struct warp_pipe *p, void *user)
{
	warp_pipe_on_message(p, rx_msg, user);
	warp_pipe_release(p);
}

static bool rx_stop(void *user)
{
	return __atomic_load_n(&((struct rx *)user)->stop, __ATOMIC_ACQUIRE);
}

static void *rx_thread(void *arg)
{
	struct rx *rx = arg;
	struct warp_conf c;

	warp_conf_test(&c);
	c.flags |= rx->flags;
	rx->loop = warp_loop_new();
	rx->node = warp_node_start(&c, rx->loop);
	warp_node_on_accept(rx->node, rx_accept, rx);
	warp_node_address_text(rx->node, rx->addr, sizeof(rx->addr));
	__atomic_store_n(&rx->ready, 1, __ATOMIC_RELEASE);
	warp_loop_run_until(rx->loop, rx_stop, rx, -1);
	warp_node_close(rx->node);
	warp_loop_free(rx->loop);
	return NULL;
}

static void wake(void *u)
{
}

/* The sender runs inside loop callbacks, as an application driven by its event loop (a
 * tunnel reading its TUN device) would: bursts of sends share packets and sendmmsg calls. */
struct tx {
	struct warp_loop *loop;
	struct warp_pipe *pipe;
	uint8_t *msg;
	size_t size;
	bool dgram;
	uint64_t until;
	bool done;
};

static void tx_burst(void *user)
{
	struct tx *t = user;

	if (warp_time_ns() >= t->until) {
		t->done = true;
		return;
	}
	for (int i = 0; i < 32; i++) {
		int err = t->dgram ? warp_pipe_send_datagram(t->pipe, t->msg, t->size)
				   : warp_pipe_send(t->pipe, t->msg, t->size);

		if (err)
			break; /* -EAGAIN: the buffer is full; the loop drains it first */
	}
	warp_loop_defer(t->loop, tx_burst, t);
}

static bool tx_done(void *user)
{
	return ((struct tx *)user)->done;
}

static double pipe_tput(size_t size, bool dgram, bool tcp)
{
	struct rx rx = { .flags = tcp ? WARP_CONF_NO_UDP : 0 };
	struct warp_conf c;
	struct warp_loop *loop = warp_loop_new();
	struct warp_node *a;
	struct warp_node_addr to;
	struct warp_pipe *p = NULL;
	uint8_t *msg = calloc(1, size);
	pthread_t th;
	uint64_t t0, t1, b0;
	double mbps = 0;

	pthread_create(&th, NULL, rx_thread, &rx);
	while (!__atomic_load_n(&rx.ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	warp_conf_test(&c);
	c.flags |= tcp ? WARP_CONF_NO_UDP : 0;
	a = warp_node_start(&c, loop);
	warp_addr_from_text(rx.addr, &to);
	if (warp_auto_connect(a, &to, NULL, &p, NULL))
		goto out;
	/* Warm up, then measure at the receiver. */
	for (int i = 0; i < 64; i++)
		dgram ? warp_pipe_send_datagram(p, msg, size) : warp_pipe_send_wait(p, msg, size, 1000);
	usleep(100000);
	b0 = __atomic_load_n(&rx.bytes, __ATOMIC_RELAXED);
	t0 = warp_time_ns();
	{
		struct tx t = { loop, p, msg, size, dgram, t0 + (uint64_t)(secs * 1e9), false };

		warp_loop_defer(loop, tx_burst, &t);
		warp_loop_run_until(loop, tx_done, &t, -1);
	}
	usleep(50000);
	t1 = warp_time_ns();
	mbps = (double)(__atomic_load_n(&rx.bytes, __ATOMIC_RELAXED) - b0) / ((double)(t1 - t0) / 1e9) /
	       1e6;
	warp_pipe_close_wait(p, 1000);
out:
	warp_pipe_release(p);
	warp_node_close(a);
	warp_loop_free(loop);
	__atomic_store_n(&rx.stop, 1, __ATOMIC_RELEASE);
	while (!rx.loop)
		usleep(1000);
	warp_loop_post(rx.loop, wake, NULL);
	pthread_join(th, NULL);
	free(msg);
	return mbps;
}

/* ---- raw baselines ---- */

struct raw {
	int fd;
	size_t size;
	bool tcp;
	uint64_t bytes;
	int stop;
};

static void *raw_rx(void *arg)
{
	struct raw *r = arg;
	enum { B = 32 };
	static __thread uint8_t buf[B][65536];
	struct mmsghdr mm[B];
	struct iovec iov[B];
	struct timeval tv = { 0, 100000 };

	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		if (r->tcp) {
			ssize_t n = read(r->fd, buf[0], sizeof(buf[0]));

			if (n > 0)
				__atomic_add_fetch(&r->bytes, (uint64_t)n, __ATOMIC_RELAXED);
			else if (n == 0)
				break;
			continue;
		}
		for (int i = 0; i < B; i++) {
			iov[i].iov_base = buf[i];
			iov[i].iov_len = sizeof(buf[i]);
			memset(&mm[i].msg_hdr, 0, sizeof(mm[i].msg_hdr));
			mm[i].msg_hdr.msg_iov = &iov[i];
			mm[i].msg_hdr.msg_iovlen = 1;
		}
		int n = recvmmsg(r->fd, mm, B, 0, NULL);

		for (int i = 0; i < n; i++)
			__atomic_add_fetch(&r->bytes, mm[i].msg_len, __ATOMIC_RELAXED);
	}
	return NULL;
}

static double raw_tput(size_t size, bool tcp)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	struct raw r = { .size = size, .tcp = tcp };
	int lfd, sfd, one = 1, big = 4 << 20;
	uint8_t *msg = calloc(1, size);
	pthread_t th;
	uint64_t t0, t1, b0;

	lfd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	bind(lfd, (struct sockaddr *)&a, sizeof(a));
	getsockname(lfd, (struct sockaddr *)&a, &al);
	sfd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	if (tcp) {
		listen(lfd, 1);
		connect(sfd, (struct sockaddr *)&a, sizeof(a));
		r.fd = accept(lfd, NULL, NULL);
		setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	} else {
		connect(sfd, (struct sockaddr *)&a, sizeof(a));
		r.fd = lfd;
	}
	pthread_create(&th, NULL, raw_rx, &r);
	usleep(50000);
	b0 = __atomic_load_n(&r.bytes, __ATOMIC_RELAXED);
	t0 = warp_time_ns();
	while ((t1 = warp_time_ns()) - t0 < (uint64_t)(secs * 1e9)) {
		if (tcp) {
			if (write(sfd, msg, size) < 0)
				break;
		} else {
			struct mmsghdr mm[32];
			struct iovec iov = { msg, size };

			for (int i = 0; i < 32; i++) {
				memset(&mm[i].msg_hdr, 0, sizeof(mm[i].msg_hdr));
				mm[i].msg_hdr.msg_iov = &iov;
				mm[i].msg_hdr.msg_iovlen = 1;
			}
			sendmmsg(sfd, mm, 32, 0);
		}
	}
	usleep(50000);
	t1 = warp_time_ns();
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	if (tcp)
		shutdown(sfd, SHUT_WR);
	pthread_join(th, NULL);
	close(sfd);
	close(lfd);
	if (tcp)
		close(r.fd);
	free(msg);
	return (double)(__atomic_load_n(&r.bytes, __ATOMIC_RELAXED) - b0) /
	       ((double)(t1 - t0) / 1e9) / 1e6;
}

int main(int argc, char **argv)
{
	static const size_t sizes[2] = { 1024, 65536 };

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--secs") && i + 1 < argc)
			secs = atof(argv[++i]);
		else if (!strcmp(argv[i], "--quick"))
			secs = 0.5;
	}
	warp_log_set_level(WARP_LOG_ERROR);
	if (getenv("BENCH_ONLY_DGRAM")) { /* profiling aid */
		printf("datagram 1K: %.1f MB/s\n", pipe_tput(1024, true, false));
		return 0;
	}
	printf("== pipes on loopback (2 threads: sender, receiver; %.1f s per row)\n", secs);
	bench_start();
	printf("\n%-22s %7s %14s %22s %8s\n", "throughput", "message", "warpgate MB/s",
	       "baseline MB/s", "ratio");
	for (int s = 0; s < 2; s++) {
		double w = pipe_tput(sizes[s], false, false);
		double b = raw_tput(sizes[s] > 65000 ? 65000 : sizes[s], false);

		printf("%-22s %6zuK %14.1f %13.1f (raw UDP) %8.2f\n", "reliable, UDP",
		       sizes[s] / 1024, w, b, b > 0 ? w / b : 0);
		w = pipe_tput(sizes[s], true, false);
		printf("%-22s %6zuK %14.1f %13.1f (raw UDP) %8.2f\n", "datagram, UDP",
		       sizes[s] / 1024, w, b, b > 0 ? w / b : 0);
		w = pipe_tput(sizes[s], false, true);
		b = raw_tput(sizes[s], true);
		printf("%-22s %6zuK %14.1f %13.1f (raw TCP) %8.2f\n", "reliable, TCP",
		       sizes[s] / 1024, w, b, b > 0 ? w / b : 0);
	}
	printf("target: encrypted datagram mode >= 0.70 of raw UDP\n");
	return 0;
}
