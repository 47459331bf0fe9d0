// SPDX-License-Identifier: MIT
/*
 * ns/packet of every fast-path program.
 *
 * XDP and TC paths run through BPF_PROG_RUN.  A rewriting path (ping -> pong) is timed with
 * separate runs of repeat=1, because repeat=N would re-run the already rewritten buffer (a
 * pong, which takes the cheap pass path); a matched probe is re-armed between runs.
 * Non-rewriting paths use one run with a large repeat.  Two numbers per row:
 *   prog ns  - kernel.bpf_stats run_time_ns / run_cnt: the program alone;
 *   run ns   - BPF_PROG_RUN's own duration (adds the test harness and timer overhead).
 * The SK_REUSEPORT demux program has no BPF_PROG_RUN support, so it is timed with
 * bpf_stats over real datagrams on loopback (in a private network namespace).
 *
 * usage: bench_bpf_prog [runs]   (default 20000; exits 77 without root)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <warpgate/wire.h>

#include "bpf/fastpath.h"
#include "cid_demux.skel.h"
#include "fastpath.skel.h"
#include "xdp_pass.skel.h"

#define TARGET_NS 100.0

static const uint8_t CID_B[8] = {0xb0, 1, 2, 3, 4, 5, 6, 7};
static const uint8_t CID_A[8] = {0xa0, 9, 8, 7, 6, 5, 4, 3};
static const uint8_t TXID[12] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
				 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc};

struct prog_time {
	uint64_t run_ns, run_cnt;
};

static struct prog_time prog_time(int fd)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	struct prog_time t = {0};

	memset(&info, 0, sizeof(info));
	if (!bpf_obj_get_info_by_fd(fd, &info, &len)) {
		t.run_ns = info.run_time_ns;
		t.run_cnt = info.run_cnt;
	}
	return t;
}

static uint32_t verified_insns(int fd)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	return bpf_obj_get_info_by_fd(fd, &info, &len) ? 0 : info.verified_insns;
}

/* ------------------------------------------------------------ packet building (bench-local) */

static uint32_t csum_add(uint32_t s, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* Ethernet + IPv4/IPv6 + UDP 198.18.0.1:7001 -> .2:7000 (or 2001:db8::a -> ::b). */
static size_t frame(uint8_t *f, int family, const uint8_t *pl, size_t plen, bool partial)
{
	size_t l3 = family == 4 ? 20 : 40, ulen = 8 + plen;
	uint8_t *ip = f + 14, *udp = ip + l3, sa[16] = {0}, da[16] = {0};
	uint32_t ps;
	uint16_t c;

	memset(f, 0, 14 + l3 + ulen);
	f[0] = 2, f[5] = 0xb, f[6] = 2, f[11] = 0xa;
	if (family == 4) {
		f[12] = 0x08;
		sa[0] = da[0] = 198, sa[1] = da[1] = 18, sa[3] = 1, da[3] = 2;
		ip[0] = 0x45;
		ip[2] = (uint8_t)((20 + ulen) >> 8), ip[3] = (uint8_t)(20 + ulen);
		ip[8] = 64, ip[9] = 17;
		memcpy(ip + 12, sa, 4), memcpy(ip + 16, da, 4);
		c = (uint16_t)~fold(csum_add(0, ip, 20));
		ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
	} else {
		f[12] = 0x86, f[13] = 0xdd;
		sa[0] = da[0] = 0x20, sa[1] = da[1] = 0x01, sa[2] = da[2] = 0x0d;
		sa[3] = da[3] = 0xb8, sa[15] = 0xa, da[15] = 0xb;
		ip[0] = 0x60;
		ip[4] = (uint8_t)(ulen >> 8), ip[5] = (uint8_t)ulen;
		ip[6] = 17, ip[7] = 64;
		memcpy(ip + 8, sa, 16), memcpy(ip + 24, da, 16);
	}
	udp[0] = 7001 >> 8, udp[1] = 7001 & 0xff, udp[2] = 7000 >> 8, udp[3] = 7000 & 0xff;
	udp[4] = (uint8_t)(ulen >> 8), udp[5] = (uint8_t)ulen;
	memcpy(udp + 8, pl, plen);
	ps = csum_add(csum_add(0, sa, family == 4 ? 4 : 16), da, family == 4 ? 4 : 16) + 17 +
	     (uint32_t)ulen;
	c = partial ? fold(ps) : (uint16_t)~fold(csum_add(ps, udp, ulen));
	udp[6] = (uint8_t)(c >> 8), udp[7] = (uint8_t)c;
	return 14 + l3 + ulen;
}

static void ping_payload(uint8_t *p)
{
	memset(p, 0x5a, WARP_PING_LEN);
	p[0] = WARP_HDR_FLAGS(WARP_PKT_PING);
	p[1] = p[2] = p[3] = 0;
	memcpy(p + WARP_CID_OFF, CID_B, 8);
}

/* ------------------------------------------------------------ timing */

struct result {
	double prog_ns, run_ns;
	uint32_t retval;
};

static struct fastpath_bpf *fp_skel;

static void rearm_probe(void)
{
	struct warp_probe_val v = {.cookie = 1, .sent_ns = 1};

	bpf_map_update_elem(bpf_map__fd(fp_skel->maps.probe_map), TXID, &v, BPF_ANY);
}

/* runs: number of repeat=1 runs (fresh input each); repeat: one run with that repeat. */
static int measure(int fd, const uint8_t *pkt, size_t len, int runs, int repeat, bool rearm,
		   struct ring_buffer *rb, struct result *r)
{
	uint8_t out[256];
	struct prog_time t0, t1;
	uint64_t dur = 0;
	int i, n = repeat ? 1 : runs;

	t0 = prog_time(fd);
	for (i = 0; i < n; i++) {
		struct bpf_test_run_opts o = {.sz = sizeof(o),
					      .data_in = pkt,
					      .data_size_in = (uint32_t)len,
					      .data_out = out,
					      .data_size_out = sizeof(out),
					      .repeat = repeat ? (uint32_t)repeat : 1};

		if (rearm) {
			rearm_probe();
			if (rb && (i & 255) == 255)
				ring_buffer__consume(rb);
		}
		if (bpf_prog_test_run_opts(fd, &o))
			return -errno;
		dur += o.duration;
		r->retval = o.retval;
	}
	t1 = prog_time(fd);
	if (rb)
		ring_buffer__consume(rb);
	r->run_ns = (double)dur / n;
	r->prog_ns = t1.run_cnt > t0.run_cnt
			     ? (double)(t1.run_ns - t0.run_ns) / (double)(t1.run_cnt - t0.run_cnt)
			     : 0;
	return 0;
}

static int drain_cb(void *ctx, void *data, size_t len)
{
	return 0;
}

static double baseline_ns; /* bpf_stats cost of an empty program: the accounting itself */

static void row(const char *prog, const char *path, const char *verdict, const struct result *r,
		bool target)
{
	char run[16] = "-";

	if (r->run_ns > 0)
		snprintf(run, sizeof(run), "%.1f", r->run_ns);
	printf("%-14s %-34s %-10s %8.1f %8.1f %8s %8.2f  %s\n", prog, path, verdict, r->prog_ns,
	       r->prog_ns - baseline_ns, run, r->prog_ns > 0 ? 1000.0 / r->prog_ns : 0,
	       !target			? ""
	       : r->prog_ns < TARGET_NS ? "< 100 ns: met"
					: "< 100 ns: MISSED");
}

/* SK_REUSEPORT: real datagrams on loopback, program time from bpf_stats. */
static int demux_time(struct result *r, uint32_t *insns)
{
	enum { NS = 5, N = 20000 };
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7600)};
	struct warp_fp_demux *d = NULL;
	int fds[NS], snd, i, one = 1, err = 0, rcv = 8 << 20;
	uint8_t pkt[64] = {0}, cid[8] = {0xc1}, buf[64];
	struct prog_time t0, t1;

	if (unshare(CLONE_NEWNET) || system("ip link set lo up"))
		return -EPERM;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (i = 0; i < NS; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		setsockopt(fds[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		setsockopt(fds[i], SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv));
		if (bind(fds[i], (struct sockaddr *)&a, sizeof(a)))
			return -errno;
	}
	d = warp_fp_demux_new(fds, NS, 0, 0);
	if (!d || !warp_fp_demux_active(d)) {
		err = -EOPNOTSUPP;
		goto out;
	}
	*insns = verified_insns(warp_fp_demux_prog_fd(d));
	for (i = 0; i < 1024; i++) {
		cid[6] = (uint8_t)(i >> 8), cid[7] = (uint8_t)i;
		warp_fp_demux_route_add(d, cid, 1 + (unsigned int)i % 4);
	}
	snd = socket(AF_INET, SOCK_DGRAM, 0);
	pkt[0] = WARP_HDR_FLAGS(WARP_PKT_DATA);
	pkt[WARP_CID_OFF] = 0xc1;
	t0 = prog_time(warp_fp_demux_prog_fd(d));
	for (i = 0; i < N; i++) {
		int k;

		pkt[WARP_CID_OFF + 7] = (uint8_t)i;
		sendto(snd, pkt, sizeof(pkt), 0, (struct sockaddr *)&a, sizeof(a));
		if ((i & 63) == 63)
			for (k = 0; k < NS; k++)
				while (recv(fds[k], buf, sizeof(buf), 0) > 0)
					;
	}
	t1 = prog_time(warp_fp_demux_prog_fd(d));
	close(snd);
	r->prog_ns = t1.run_cnt > t0.run_cnt
			     ? (double)(t1.run_ns - t0.run_ns) / (double)(t1.run_cnt - t0.run_cnt)
			     : 0;
	r->run_ns = 0;
out:
	warp_fp_demux_free(d);
	for (i = 0; i < NS; i++)
		close(fds[i]);
	return err;
}

int main(int argc, char **argv)
{
	int runs = argc > 1 ? atoi(argv[1]) : 20000, repeat = 1000000, stats_fd, xdp, tc, err;
	struct warp_ka_entry e = {0};
	uint8_t pl[64], pkt[256];
	struct xdp_pass_bpf *pass = NULL;
	struct ring_buffer *rb = NULL;
	struct result r;
	uint32_t demux_insns = 0;
	size_t len;

	if (geteuid() != 0) {
		fprintf(stderr, "bench_bpf_prog needs root (BPF_PROG_RUN, bpf_stats)\n");
		return 77;
	}
	libbpf_set_print(NULL);
	stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (stats_fd < 0) {
		fprintf(stderr, "cannot enable bpf_stats: %s\n", strerror(errno));
		return 77;
	}
	fp_skel = fastpath_bpf__open_and_load();
	pass = xdp_pass_bpf__open_and_load();
	if (!fp_skel || !pass) {
		fprintf(stderr, "cannot load the BPF objects: %s\n", strerror(errno));
		return 77;
	}
	rb = ring_buffer__new(bpf_map__fd(fp_skel->maps.probe_events), drain_cb, NULL, NULL);
	xdp = bpf_program__fd(fp_skel->progs.warp_xdp);
	tc = bpf_program__fd(fp_skel->progs.warp_tc);

	memcpy(e.peer_cid, CID_A, 8);
	e.peer_addr[10] = e.peer_addr[11] = 0xff;
	e.peer_addr[12] = 198, e.peer_addr[13] = 18, e.peer_addr[15] = 1;
	e.peer_port_be = htons(7001);
	e.local_port_be = htons(7000);
	e.flags = WARP_KA_F_ACTIVE;
	bpf_map_update_elem(bpf_map__fd(fp_skel->maps.ka_map), CID_B, &e, BPF_ANY);

	printf("== BPF program cost per packet (%d separate runs for rewriting paths, "
	       "repeat=%d otherwise)\n",
	       runs, repeat);
	printf("%-14s %-34s %-10s %8s %8s %8s %8s\n", "program", "path", "verdict", "prog ns",
	       "net ns", "run ns", "Mpps");
	len = frame(pkt, 4, pl, 20, false);
	measure(bpf_program__fd(pass->progs.warp_xdp_pass), pkt, len, 0, repeat, false, NULL, &r);
	row("warp_xdp_pass", "baseline: return XDP_PASS", "XDP_PASS", &r, false);
	baseline_ns = r.prog_ns;

	ping_payload(pl);
	len = frame(pkt, 4, pl, WARP_PING_LEN, false);
	err = measure(xdp, pkt, len, runs, 0, false, NULL, &r);
	if (err)
		goto fail;
	row("warp_xdp", "keepalive v4 ping -> pong", r.retval == XDP_TX ? "XDP_TX" : "??", &r,
	    true);
	len = frame(pkt, 4, pl, WARP_PING_LEN, true);
	measure(xdp, pkt, len, runs, 0, false, NULL, &r);
	row("warp_xdp", "keepalive v4, partial csum", r.retval == XDP_TX ? "XDP_TX" : "??", &r,
	    true);

	memset(e.peer_addr, 0, 16);
	e.peer_addr[0] = 0x20, e.peer_addr[1] = 0x01, e.peer_addr[2] = 0x0d;
	e.peer_addr[3] = 0xb8, e.peer_addr[15] = 0xa;
	bpf_map_update_elem(bpf_map__fd(fp_skel->maps.ka_map), CID_B, &e, BPF_ANY);
	len = frame(pkt, 6, pl, WARP_PING_LEN, false);
	measure(xdp, pkt, len, runs, 0, false, NULL, &r);
	row("warp_xdp", "keepalive v6 ping -> pong", r.retval == XDP_TX ? "XDP_TX" : "??", &r,
	    true);
	measure(tc, pkt, len, runs, 0, false, NULL, &r);
	row("warp_tc", "keepalive v6 ping -> pong", r.retval == TC_ACT_REDIRECT ? "REDIRECT" : "??",
	    &r, true);

	memset(e.peer_addr, 0, 16);
	e.peer_addr[10] = e.peer_addr[11] = 0xff;
	e.peer_addr[12] = 198, e.peer_addr[13] = 18, e.peer_addr[15] = 1;
	bpf_map_update_elem(bpf_map__fd(fp_skel->maps.ka_map), CID_B, &e, BPF_ANY);
	len = frame(pkt, 4, pl, WARP_PING_LEN, false);
	measure(tc, pkt, len, runs, 0, false, NULL, &r);
	row("warp_tc", "keepalive v4 ping -> pong", r.retval == TC_ACT_REDIRECT ? "REDIRECT" : "??",
	    &r, true);

	pl[WARP_CID_OFF] ^= 0xff;
	len = frame(pkt, 4, pl, WARP_PING_LEN, false);
	measure(xdp, pkt, len, 0, repeat, false, NULL, &r);
	row("warp_xdp", "ping, unknown CID", r.retval == XDP_PASS ? "XDP_PASS" : "??", &r, true);
	pl[WARP_CID_OFF] ^= 0xff;
	pl[0] = WARP_HDR_FLAGS(WARP_PKT_DATA);
	len = frame(pkt, 4, pl, 64, false);
	measure(xdp, pkt, len, 0, repeat, false, NULL, &r);
	row("warp_xdp", "DATA datagram (pass-through)", r.retval == XDP_PASS ? "XDP_PASS" : "??",
	    &r, true);
	measure(tc, pkt, len, 0, repeat, false, NULL, &r);
	row("warp_tc", "DATA datagram (pass-through)", r.retval == TC_ACT_OK ? "TC_OK" : "??", &r,
	    true);

	memset(pl, 0, sizeof(pl));
	pl[0] = 0x01, pl[1] = 0x01, pl[4] = 0x21, pl[5] = 0x12, pl[6] = 0xa4, pl[7] = 0x42;
	memcpy(pl + 8, TXID, 12);
	len = frame(pkt, 4, pl, 20, false);
	measure(xdp, pkt, len, runs, 0, true, rb, &r);
	row("warp_xdp", "STUN reply, matched -> ringbuf", r.retval == XDP_PASS ? "XDP_PASS" : "??",
	    &r, false);
	bpf_map_delete_elem(bpf_map__fd(fp_skel->maps.probe_map), TXID);
	measure(xdp, pkt, len, 0, repeat, false, NULL, &r);
	row("warp_xdp", "STUN reply, unknown id", r.retval == XDP_PASS ? "XDP_PASS" : "??", &r,
	    false);

	err = demux_time(&r, &demux_insns);
	if (!err)
		row("warp_cid_sel", "SK_REUSEPORT, routed CID (lo)", "selected", &r, true);
	else
		printf("%-14s %-34s skipped: %s\n", "warp_cid_sel", "SK_REUSEPORT", strerror(-err));

	printf("\nverifier: warp_xdp %u insns, warp_tc %u, warp_cid_select %u, warp_xdp_pass %u\n",
	       verified_insns(xdp), verified_insns(tc), demux_insns,
	       verified_insns(bpf_program__fd(pass->progs.warp_xdp_pass)));
	printf("prog ns: bpf_stats run_time_ns/run_cnt (program + stats accounting); net ns: minus "
	       "the empty program's %.1f ns;\nrun ns: BPF_PROG_RUN duration (harness included); "
	       "Mpps = 1000 / prog ns; target applies to prog ns\n",
	       baseline_ns);
	ring_buffer__free(rb);
	fastpath_bpf__destroy(fp_skel);
	xdp_pass_bpf__destroy(pass);
	close(stats_fd);
	return 0;
fail:
	fprintf(stderr, "BPF_PROG_RUN failed: %s\n", strerror(-err));
	return 1;
}
