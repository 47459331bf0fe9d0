// SPDX-License-Identifier: MIT
/*
 * BPF_PROG_RUN tables for bpf/fastpath.bpf.c: every row runs through both the XDP and the
 * TC program (and the userspace twin, warp_fp_input()) and checks the verdict, the output
 * bytes (exactly the expected pong, or untouched), the per-action counter and the map.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <warpgate/wire.h>

#include "bpf/fastpath.h"
#include "fastpath.skel.h"
#include "../lib/bpf_test.h"
#include "../lib/pkt.h"

static struct fastpath_bpf *skel;
static struct ring_buffer *rb;
static struct warp_probe_event last_ev;
static int n_ev;

static const uint8_t CID_B[8] = {0xb0, 1, 2, 3, 4, 5, 6, 7}; /* ours (receiver) */
static const uint8_t CID_A[8] = {0xa0, 9, 8, 7, 6, 5, 4, 3}; /* the pinger's */
static const uint8_t CID_X[8] = {0xee, 0, 0, 0, 0, 0, 0, 1}; /* nobody's */
static const uint8_t NONCE[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static const uint8_t AUTH[16] = {0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
#define PORT_A 7001
#define PORT_B 7000

enum { DO_XDP = 1, DO_TC = 2, DO_USER = 4, DO_ALL = 7 };

struct ka_case {
	const char *name;
	int family;
	enum pkt_csum csum;
	void (*mutate)(struct pkt_spec *s, uint8_t *pl, size_t *plen);
	void (*mutate_frame)(uint8_t *f, size_t *len);
	int entry_flags; /* 0: default active entry; -1: no entry */
	bool pong;	 /* expect the rewritten pong (else: untouched) */
	bool drop;
	int stat;	   /* counter expected to move by one */
	unsigned int runs; /* DO_* */
};

static void base_spec(struct pkt_spec *s, int family, enum pkt_csum csum)
{
	static const uint8_t mac_a[6] = {0x02, 0, 0, 0, 0, 0xa};
	static const uint8_t mac_b[6] = {0x02, 0, 0, 0, 0, 0xb};

	memset(s, 0, sizeof(*s));
	s->family = family;
	memcpy(s->smac, mac_a, 6);
	memcpy(s->dmac, mac_b, 6);
	if (family == 4) {
		pkt_addr4(s->saddr, 198, 18, 0, 1);
		pkt_addr4(s->daddr, 198, 18, 0, 2);
	} else {
		pkt_addr6(s->saddr, 0xa);
		pkt_addr6(s->daddr, 0xb);
	}
	s->sport = PORT_A;
	s->dport = PORT_B;
	s->ttl = 50; /* the pong must leave with a fresh TTL */
	s->csum = csum;
}

static void peer_sockaddr(int family, struct sockaddr_storage *ss, const struct pkt_spec *s)
{
	memset(ss, 0, sizeof(*ss));
	if (family == 4) {
		struct sockaddr_in *a = (void *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(s->sport);
		memcpy(&a->sin_addr, s->saddr, 4);
	} else {
		struct sockaddr_in6 *a = (void *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(s->sport);
		memcpy(&a->sin6_addr, s->saddr, 16);
	}
}

static void put_entry(int map_fd, int family, int flags)
{
	struct warp_ka_entry e = {0};
	struct pkt_spec s;

	base_spec(&s, family, PKT_CSUM_FULL);
	memcpy(e.peer_cid, CID_A, 8);
	if (family == 4) {
		e.peer_addr[10] = e.peer_addr[11] = 0xff;
		memcpy(e.peer_addr + 12, s.saddr, 4);
	} else {
		memcpy(e.peer_addr, s.saddr, 16);
	}
	e.peer_port_be = htons(PORT_A);
	e.local_port_be = htons(PORT_B);
	e.flags = (uint32_t)flags;
	assert_int_equal(bpf_map_update_elem(map_fd, CID_B, &e, BPF_ANY), 0);
}

static void reset_maps(void)
{
	int fds[] = {bpf_map__fd(skel->maps.ka_stats), bpf_map__fd(skel->maps.probe_stats)};
	uint64_t zero[512] = {0};
	uint32_t k;
	unsigned int i;

	bpf_map_delete_elem(bpf_map__fd(skel->maps.ka_map), CID_B);
	for (i = 0; i < 2; i++)
		for (k = 0; k < WARP_KA_STAT_MAX; k++)
			bpf_map_update_elem(fds[i], &k, zero, BPF_ANY);
}

static uint64_t ka_stat(int idx)
{
	return bpf_test_percpu_sum(bpf_map__fd(skel->maps.ka_stats), (uint32_t)idx);
}

/* ---------------------------------------------------------------- mutations */

static void m_bad_cid(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	memcpy(pl + WARP_CID_OFF, CID_X, 8);
}

static void m_wrong_src_addr(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->saddr[s->family == 4 ? 3 : 15] ^= 0x40;
}

static void m_wrong_src_port(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->sport = 7777;
}

static void m_wrong_dst_port(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->dport = 7002;
}

static void m_short_ping(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	*plen = WARP_PING_LEN - 1;
}

static void m_long_ping(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	*plen = WARP_PING_LEN + 4;
}

static void m_reserved(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	pl[2] = 0x80;
}

static void m_phase(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	pl[1] = WARP_PHASE_KEY;
}

static void m_ip_options(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->ip_options = 1;
}

static void m_frag_mf(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->frag = 0x2000;
}

static void m_frag_off(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->frag = 0x0010;
}

static void m_v6_frag(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->v6_frag_hdr = true;
}

static void m_tcp(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->proto = 6;
}

static void m_arp(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	s->ethertype = 0x0806;
}

static void m_data_type(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	pl[0] = WARP_HDR_FLAGS(WARP_PKT_DATA);
}

static void m_pong_type(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	pl[0] = WARP_HDR_FLAGS(WARP_PKT_PONG);
}

static void m_version2(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	pl[0] = (uint8_t)(WARP_HDR_MARK | 2 << WARP_HDR_VER_SHIFT | WARP_PKT_PING);
}

static void m_turn_chan(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	pl[0] = 0x40; /* TURN ChannelData */
}

static void m_empty(struct pkt_spec *s, uint8_t *pl, size_t *plen)
{
	*plen = 0;
}

static void f_cut_udp(uint8_t *f, size_t *len)
{
	*len = 14 + 20 + 4; /* IPv4 header, half a UDP header; tot_len left claiming more */
}

static void f_cut_payload(uint8_t *f, size_t *len)
{
	*len -= 10; /* lengths claim 44 payload bytes, the frame ends before */
}

static void f_udp_len_big(uint8_t *f, size_t *len)
{
	size_t u = 14 + (f[12] == 0x08 ? 20 : 40);

	f[u + 5] += 8; /* UDP length beyond the IP payload */
}

static void f_cut_ip(uint8_t *f, size_t *len)
{
	*len = 14 + 8; /* Ethernet and a third of an IPv4 header */
}

static const struct ka_case ka_cases[] = {
	{"v4 ping, full csum -> pong", 4, PKT_CSUM_FULL, NULL, NULL, 0, true, false,
	 WARP_KA_STAT_TX_PONG, DO_ALL},
	{"v6 ping, full csum -> pong", 6, PKT_CSUM_FULL, NULL, NULL, 0, true, false,
	 WARP_KA_STAT_TX_PONG, DO_ALL},
	{"v4 ping, partial csum -> pong with full csum", 4, PKT_CSUM_PARTIAL, NULL, NULL, 0, true,
	 false, WARP_KA_STAT_TX_PONG, DO_XDP | DO_USER},
	{"v6 ping, partial csum -> pong with full csum", 6, PKT_CSUM_PARTIAL, NULL, NULL, 0, true,
	 false, WARP_KA_STAT_TX_PONG, DO_XDP | DO_USER},
	{"v4 ping, zero csum -> pong with zero csum", 4, PKT_CSUM_ZERO, NULL, NULL, 0, true, false,
	 WARP_KA_STAT_TX_PONG, DO_ALL},
	{"v6 ping, zero csum (invalid) -> pass", 6, PKT_CSUM_ZERO, NULL, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_XDP | DO_TC},
	{"v4 unknown CID -> pass", 4, PKT_CSUM_FULL, m_bad_cid, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_UNKNOWN_CID, DO_ALL},
	{"v6 unknown CID -> pass", 6, PKT_CSUM_FULL, m_bad_cid, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_UNKNOWN_CID, DO_ALL},
	{"v4 no map entry -> pass", 4, PKT_CSUM_FULL, NULL, NULL, -1, false, false,
	 WARP_KA_STAT_PASS_UNKNOWN_CID, DO_ALL},
	{"v4 inactive entry -> pass", 4, PKT_CSUM_FULL, NULL, NULL, 2, false, false,
	 WARP_KA_STAT_PASS_UNKNOWN_CID, DO_ALL},
	{"v4 other local port -> pass", 4, PKT_CSUM_FULL, m_wrong_dst_port, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_UNKNOWN_CID, DO_ALL},
	{"v4 wrong source address -> drop", 4, PKT_CSUM_FULL, m_wrong_src_addr, NULL, 0, false,
	 true, WARP_KA_STAT_DROP_WRONG_SOURCE, DO_ALL},
	{"v6 wrong source address -> drop", 6, PKT_CSUM_FULL, m_wrong_src_addr, NULL, 0, false,
	 true, WARP_KA_STAT_DROP_WRONG_SOURCE, DO_ALL},
	{"v4 wrong source port -> drop", 4, PKT_CSUM_FULL, m_wrong_src_port, NULL, 0, false, true,
	 WARP_KA_STAT_DROP_WRONG_SOURCE, DO_ALL},
	{"v4 ping one byte short -> pass", 4, PKT_CSUM_FULL, m_short_ping, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_ALL},
	{"v4 ping with reserved bits set -> pass", 4, PKT_CSUM_FULL, m_reserved, NULL, 0, false,
	 false, WARP_KA_STAT_PASS_MALFORMED, DO_ALL},
	{"v6 ping with a key phase -> pass", 6, PKT_CSUM_FULL, m_phase, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_ALL},
	{"v4 ping with trailing bytes -> pass", 4, PKT_CSUM_FULL, m_long_ping, NULL, 0, false,
	 false, WARP_KA_STAT_PASS_MALFORMED, DO_ALL},
	{"v4 truncated UDP header -> pass", 4, PKT_CSUM_FULL, NULL, f_cut_udp, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_XDP | DO_TC},
	{"v4 truncated payload -> pass", 4, PKT_CSUM_FULL, NULL, f_cut_payload, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_XDP | DO_TC},
	{"v6 truncated payload -> pass", 6, PKT_CSUM_FULL, NULL, f_cut_payload, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_XDP | DO_TC},
	{"v4 UDP length beyond IP -> pass", 4, PKT_CSUM_FULL, NULL, f_udp_len_big, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_XDP | DO_TC},
	{"v6 UDP length beyond IP -> pass", 6, PKT_CSUM_FULL, NULL, f_udp_len_big, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_XDP | DO_TC},
	/* BPF_PROG_RUN refuses this frame for TC (and so does the stack before TC) */
	{"v4 truncated IP header -> pass", 4, PKT_CSUM_FULL, NULL, f_cut_ip, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_XDP},
	{"v4 IP options -> pass", 4, PKT_CSUM_FULL, m_ip_options, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_MALFORMED, DO_XDP | DO_TC},
	{"v4 first fragment (MF) -> pass", 4, PKT_CSUM_FULL, m_frag_mf, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_FRAGMENT, DO_XDP | DO_TC},
	{"v4 later fragment -> pass", 4, PKT_CSUM_FULL, m_frag_off, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_FRAGMENT, DO_XDP | DO_TC},
	{"v6 fragment header -> pass", 6, PKT_CSUM_FULL, m_v6_frag, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_FRAGMENT, DO_XDP | DO_TC},
	{"v4 TCP -> pass", 4, PKT_CSUM_FULL, m_tcp, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_NOT_UDP, DO_XDP | DO_TC},
	{"ARP ethertype -> pass", 4, PKT_CSUM_FULL, m_arp, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_NOT_UDP, DO_XDP | DO_TC},
	{"v4 DATA packet -> pass", 4, PKT_CSUM_FULL, m_data_type, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_NOT_PING, DO_ALL},
	{"v4 PONG is never answered -> pass", 4, PKT_CSUM_FULL, m_pong_type, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_NOT_PING, DO_ALL},
	{"v4 wire version 2 -> pass", 4, PKT_CSUM_FULL, m_version2, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_NOT_WARP, DO_ALL},
	{"v4 TURN ChannelData -> pass", 4, PKT_CSUM_FULL, m_turn_chan, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_NOT_WARP, DO_ALL},
	{"v4 empty UDP -> pass", 4, PKT_CSUM_FULL, m_empty, NULL, 0, false, false,
	 WARP_KA_STAT_PASS_NOT_WARP, DO_ALL},
};

/* Builds the input frame of a case and the frame it must turn into when answered. */
static void build_case(const struct ka_case *c, uint8_t *in, size_t *in_len, uint8_t *want,
		       size_t *want_len, struct pkt_spec *spec, uint8_t *pl, size_t *plen)
{
	struct pkt_spec rs;
	uint8_t pong[WARP_PING_LEN];

	base_spec(spec, c->family, c->csum);
	pkt_ping(pl, CID_B, 42, NONCE, AUTH);
	*plen = WARP_PING_LEN;
	if (c->mutate)
		c->mutate(spec, pl, plen);
	*in_len = pkt_build(in, 256, spec, pl, *plen);
	assert_true(*in_len > 0);
	if (c->mutate_frame)
		c->mutate_frame(in, in_len);

	rs = pkt_reverse(spec);
	rs.ttl = 64;
	rs.csum = c->csum == PKT_CSUM_ZERO ? PKT_CSUM_ZERO : PKT_CSUM_FULL;
	pkt_pong(pong, pl, CID_A);
	*want_len = pkt_build(want, 256, &rs, pong, WARP_PING_LEN);
}

static void run_kernel(const struct ka_case *c, int prog_fd, bool tc)
{
	uint8_t in[256], out[256], want[256], pl[256];
	size_t in_len, out_len = sizeof(out), want_len, plen;
	struct warp_ka_entry e;
	struct pkt_spec spec;
	uint32_t ret;
	int map_fd = bpf_map__fd(skel->maps.ka_map);
	int want_ret, err;

	reset_maps();
	if (c->entry_flags >= 0)
		put_entry(map_fd, c->family, c->entry_flags ? 0 : WARP_KA_F_ACTIVE);
	build_case(c, in, &in_len, want, &want_len, &spec, pl, &plen);

	err = bpf_test_run(prog_fd, in, in_len, out, &out_len, &ret);
	if (err)
		print_message("# %s: BPF_PROG_RUN: %s\n", tc ? "tc" : "xdp", strerror(-err));
	assert_int_equal(err, 0);
	if (c->pong)
		want_ret = tc ? TC_ACT_REDIRECT : XDP_TX;
	else if (c->drop)
		want_ret = tc ? TC_ACT_SHOT : XDP_DROP;
	else
		want_ret = tc ? TC_ACT_OK : XDP_PASS;
	assert_int_equal(ret, want_ret);
	assert_int_equal(ka_stat(c->stat), 1);

	if (c->pong) {
		assert_int_equal(out_len, want_len);
		if (memcmp(out, want, want_len))
			pkt_hexdiff(c->name, out, want, want_len);
		assert_memory_equal(out, want, want_len);
		assert_true(pkt_udp_csum_ok(out, out_len));
		if (c->family == 4)
			assert_true(pkt_ip4_csum_ok(out, out_len));
		assert_int_equal(bpf_map_lookup_elem(map_fd, CID_B, &e), 0);
		assert_int_equal(e.answered, 1);
		assert_true(e.last_seen_ns > 0);
	} else {
		assert_int_equal(out_len, in_len);
		assert_memory_equal(out, in, in_len);
		assert_int_equal(ka_stat(WARP_KA_STAT_TX_PONG), 0);
		if (c->entry_flags >= 0) {
			assert_int_equal(bpf_map_lookup_elem(map_fd, CID_B, &e), 0);
			assert_int_equal(e.answered, 0);
			assert_int_equal(e.last_seen_ns, 0);
		}
	}
}

static void run_user(const struct ka_case *c)
{
	struct warp_fp_opts o = {.flags = WARP_FP_F_NO_BPF};
	uint8_t in[256], want[256], pl[256], reply[256];
	size_t in_len, want_len, plen, rlen = sizeof(reply), off;
	struct sockaddr_storage src;
	struct warp_fp_stats st;
	struct warp_ka_entry e;
	struct pkt_spec spec, base;
	enum warp_fp_verdict v;
	struct warp_fp *fp = warp_fp_new(&o);

	assert_non_null(fp);
	assert_false(warp_fp_active(fp));
	base_spec(&base, c->family, PKT_CSUM_FULL);
	peer_sockaddr(c->family, &src, &base);
	if (c->entry_flags >= 0) {
		assert_int_equal(warp_fp_ka_add(fp, CID_B, CID_A, (struct sockaddr *)&src, PORT_B),
				 0);
		if (c->entry_flags) {
			/* userspace has no "inactive" knob: model it by deleting */
			assert_int_equal(warp_fp_ka_del(fp, CID_B), 0);
		}
	}
	build_case(c, in, &in_len, want, &want_len, &spec, pl, &plen);
	peer_sockaddr(c->family, &src, &spec);
	off = pkt_payload_off(&spec);
	v = warp_fp_input(fp, in + off, plen, (struct sockaddr *)&src, spec.dport, 0, reply, &rlen);
	assert_int_equal(v, c->pong ? WARP_FP_REPLY : c->drop ? WARP_FP_DROP : WARP_FP_PASS);
	assert_int_equal(warp_fp_stats(fp, &st), 0);
	assert_int_equal(st.ka[c->stat], 1);
	if (c->pong) {
		assert_int_equal(rlen, WARP_PING_LEN);
		assert_memory_equal(reply, want + off, WARP_PING_LEN);
		assert_int_equal(warp_fp_ka_get(fp, CID_B, &e), 0);
		assert_int_equal(e.answered, 1);
	}
	warp_fp_free(fp);
}

static void test_ka_case(void **state)
{
	const struct ka_case *c = *state;

	if (c->runs & DO_XDP)
		run_kernel(c, bpf_program__fd(skel->progs.warp_xdp), false);
	if (c->runs & DO_TC)
		run_kernel(c, bpf_program__fd(skel->progs.warp_tc), true);
	if (c->runs & DO_USER)
		run_user(c);
}

/* ---------------------------------------------------------------- probe matcher */

static int on_event(void *ctx, void *data, size_t len)
{
	assert_int_equal(len, sizeof(last_ev));
	memcpy(&last_ev, data, sizeof(last_ev));
	n_ev++;
	return 0;
}

static void probe_put(const uint8_t id[12], uint64_t cookie, uint64_t sent)
{
	struct warp_probe_val v = {.cookie = cookie, .sent_ns = sent};

	assert_int_equal(bpf_map_update_elem(bpf_map__fd(skel->maps.probe_map), id, &v, BPF_ANY),
			 0);
}

static bool probe_present(const uint8_t id[12])
{
	struct warp_probe_val v;

	return !bpf_map_lookup_elem(bpf_map__fd(skel->maps.probe_map), id, &v);
}

static void probe_frame(int family, const uint8_t *pl, size_t plen, uint8_t *f, size_t *len,
			struct pkt_spec *s)
{
	base_spec(s, family, PKT_CSUM_FULL);
	s->sport = 3478;
	s->dport = 40000;
	*len = pkt_build(f, 256, s, pl, plen);
	assert_true(*len > 0);
}

static void run_probe(int prog_fd, const uint8_t *f, size_t len, uint32_t want_ret)
{
	uint8_t out[256];
	size_t out_len = sizeof(out);
	uint32_t ret;

	n_ev = 0;
	assert_int_equal(bpf_test_run(prog_fd, f, len, out, &out_len, &ret), 0);
	assert_int_equal(ret, want_ret);
	assert_memory_equal(out, f, len); /* the matcher never rewrites */
	ring_buffer__consume(rb);
}

static void test_probe_stun(void **state)
{
	static const uint8_t txid[12] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
					 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc};
	int progs[2] = {bpf_program__fd(skel->progs.warp_xdp),
			bpf_program__fd(skel->progs.warp_tc)};
	uint32_t pass[2] = {XDP_PASS, TC_ACT_OK};
	uint8_t pl[20], f[256];
	struct pkt_spec s;
	size_t len;
	int i, fam;

	for (i = 0; i < 2; i++) {
		for (fam = 4; fam <= 6; fam += 2) {
			reset_maps();
			pkt_stun(pl, 0x0101, txid);
			probe_frame(fam, pl, sizeof(pl), f, &len, &s);
			probe_put(txid, 0xc00c1e, 1000);
			run_probe(progs[i], f, len, pass[i]);
			assert_int_equal(n_ev, 1);
			assert_memory_equal(last_ev.id, txid, 12);
			assert_int_equal(last_ev.kind, WARP_PROBE_STUN);
			assert_int_equal(last_ev.family, fam);
			assert_int_equal(ntohs(last_ev.src_port_be), 3478);
			assert_int_equal(ntohs(last_ev.dst_port_be), 40000);
			if (fam == 4) {
				assert_int_equal(last_ev.src_addr[10], 0xff);
				assert_memory_equal(last_ev.src_addr + 12, s.saddr, 4);
			} else {
				assert_memory_equal(last_ev.src_addr, s.saddr, 16);
			}
			assert_int_equal(last_ev.cookie, 0xc00c1e);
			assert_int_equal(last_ev.sent_ns, 1000);
			assert_true(last_ev.rx_ns > 1000);
			assert_false(probe_present(txid)); /* matched ids are forgotten */
			assert_int_equal(bpf_test_percpu_sum(bpf_map__fd(skel->maps.probe_stats),
							     WARP_PROBE_STAT_MATCH),
					 1);

			/* the same reply again: no second event */
			run_probe(progs[i], f, len, pass[i]);
			assert_int_equal(n_ev, 0);
			assert_int_equal(bpf_test_percpu_sum(bpf_map__fd(skel->maps.probe_stats),
							     WARP_PROBE_STAT_MISS),
					 1);
		}

		/* error responses match too; requests and indications do not */
		probe_put(txid, 1, 1);
		pkt_stun(pl, 0x0111, txid);
		probe_frame(4, pl, sizeof(pl), f, &len, &s);
		run_probe(progs[i], f, len, pass[i]);
		assert_int_equal(n_ev, 1);
		probe_put(txid, 1, 1);
		pkt_stun(pl, 0x0001, txid);
		probe_frame(4, pl, sizeof(pl), f, &len, &s);
		run_probe(progs[i], f, len, pass[i]);
		assert_int_equal(n_ev, 0);
		pkt_stun(pl, 0x0101, txid);
		pl[4] ^= 1; /* wrong magic cookie */
		probe_frame(4, pl, sizeof(pl), f, &len, &s);
		run_probe(progs[i], f, len, pass[i]);
		assert_int_equal(n_ev, 0);
		pkt_stun(pl, 0x0101, txid);
		probe_frame(4, pl, 19, f, &len, &s); /* shorter than a STUN header */
		run_probe(progs[i], f, len, pass[i]);
		assert_int_equal(n_ev, 0);
		assert_true(probe_present(txid));
		bpf_map_delete_elem(bpf_map__fd(skel->maps.probe_map), txid);
	}
}

static void test_probe_punch(void **state)
{
	static const uint8_t nonce[12] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0xfe, 0xfd};
	int progs[2] = {bpf_program__fd(skel->progs.warp_xdp),
			bpf_program__fd(skel->progs.warp_tc)};
	uint32_t pass[2] = {XDP_PASS, TC_ACT_OK};
	uint8_t pl[WARP_PROBE_LEN], f[256];
	struct pkt_spec s;
	size_t len;
	int i;

	for (i = 0; i < 2; i++) {
		reset_maps();
		pkt_probe_reply(pl, CID_B, nonce);
		probe_frame(6, pl, sizeof(pl), f, &len, &s);
		probe_put(nonce, 77, 5);
		run_probe(progs[i], f, len, pass[i]);
		assert_int_equal(n_ev, 1);
		assert_int_equal(last_ev.kind, WARP_PROBE_PUNCH);
		assert_int_equal(last_ev.family, 6);
		assert_memory_equal(last_ev.id, nonce, 12);
		assert_int_equal(last_ev.cookie, 77);

		/* truncated probe reply (no full nonce+auth): not matched */
		probe_put(nonce, 77, 5);
		probe_frame(4, pl, WARP_PROBE_LEN - 1, f, &len, &s);
		run_probe(progs[i], f, len, pass[i]);
		assert_int_equal(n_ev, 0);
		/* a PROBE (not a reply) with the same nonce: not matched */
		pl[0] = WARP_HDR_FLAGS(WARP_PKT_PROBE);
		probe_frame(4, pl, sizeof(pl), f, &len, &s);
		run_probe(progs[i], f, len, pass[i]);
		assert_int_equal(n_ev, 0);
		assert_true(probe_present(nonce));
	}
}

/* The userspace twin reports the same event from a socket-level datagram. */
static void user_ev_cb(const struct warp_probe_event *ev, void *user)
{
	last_ev = *ev;
	n_ev++;
}

static void test_probe_user(void **state)
{
	static const uint8_t txid[12] = {1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144};
	struct warp_fp_opts o = {.flags = WARP_FP_F_NO_BPF, .probe_cb = user_ev_cb};
	struct sockaddr_in6 src = {.sin6_family = AF_INET6, .sin6_port = htons(3478)};
	struct warp_fp *fp = warp_fp_new(&o);
	uint8_t pl[20];

	assert_non_null(fp);
	pkt_addr6(src.sin6_addr.s6_addr, 0x99);
	assert_int_equal(warp_fp_probe_add(fp, txid, 5, 100), 0);
	pkt_stun(pl, 0x0101, txid);
	n_ev = 0;
	assert_int_equal(
		warp_fp_input(fp, pl, sizeof(pl), (struct sockaddr *)&src, 40000, 999, NULL, NULL),
		WARP_FP_EVENT);
	assert_int_equal(n_ev, 1);
	assert_int_equal(last_ev.family, 6);
	assert_int_equal(last_ev.rx_ns, 999);
	assert_int_equal(last_ev.cookie, 5);
	assert_int_equal(ntohs(last_ev.dst_port_be), 40000);
	assert_int_equal(
		warp_fp_input(fp, pl, sizeof(pl), (struct sockaddr *)&src, 40000, 999, NULL, NULL),
		WARP_FP_PASS);
	assert_int_equal(n_ev, 1);
	warp_fp_free(fp);
}

static int verify_auth(const uint8_t *ping, size_t len, void *user)
{
	int *calls = user;

	(*calls)++;
	return memcmp(ping + WARP_HDR_LEN + WARP_PING_NONCE_LEN, AUTH, sizeof(AUTH)) ? -1 : 0;
}

/* The userspace path can verify the authenticator before answering. */
static void test_user_verify(void **state)
{
	int calls = 0;
	struct warp_fp_opts o = {
		.flags = WARP_FP_F_NO_BPF, .ka_verify = verify_auth, .user = &calls};
	struct sockaddr_storage src;
	struct pkt_spec s;
	uint8_t ping[WARP_PING_LEN], reply[64];
	size_t rl = sizeof(reply);
	struct warp_fp *fp = warp_fp_new(&o);

	assert_non_null(fp);
	base_spec(&s, 4, PKT_CSUM_FULL);
	peer_sockaddr(4, &src, &s);
	assert_int_equal(warp_fp_ka_add(fp, CID_B, CID_A, (struct sockaddr *)&src, PORT_B), 0);
	memset(reply, 0, sizeof(reply)); /* the zero CID is never registered */
	assert_int_equal(warp_fp_ka_add(fp, reply, CID_A, (struct sockaddr *)&src, PORT_B),
			 -EINVAL);
	pkt_ping(ping, CID_B, 1, NONCE, AUTH);
	assert_int_equal(warp_fp_input(fp, ping, sizeof(ping), (struct sockaddr *)&src, PORT_B, 0,
				       reply, &rl),
			 WARP_FP_REPLY);
	ping[WARP_PING_LEN - 1] ^= 1;
	rl = sizeof(reply);
	assert_int_equal(warp_fp_input(fp, ping, sizeof(ping), (struct sockaddr *)&src, PORT_B, 0,
				       reply, &rl),
			 WARP_FP_DROP);
	assert_int_equal(calls, 2);
	warp_fp_free(fp);
}

/* Every object of bpf/ loads on this kernel (each program through the verifier). */
static void test_objects_load(void **state)
{
	const char *build = getenv("WARP_BUILD");
	char dir[512], path[1024];
	struct dirent *de;
	int n = 0, err;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/bpf", build ? build : "build");
	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d))) {
		struct bpf_object *obj;
		size_t l = strlen(de->d_name);

		if (l < 6 || strcmp(de->d_name + l - 6, ".bpf.o"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		obj = bpf_object__open_file(path, NULL);
		assert_non_null(obj);
		err = bpf_object__load(obj);
		if (err)
			print_message("# %s does not load: %s\n", path, strerror(-err));
		assert_int_equal(err, 0);
		bpf_object__close(obj);
		n++;
	}
	closedir(d);
	print_message("# %d objects loaded\n", n);
	assert_true(n >= 3);
}

static int group_setup(void **state)
{
	skel = fastpath_bpf__open_and_load();
	if (!skel)
		return -1;
	rb = ring_buffer__new(bpf_map__fd(skel->maps.probe_events), on_event, NULL, NULL);
	return rb ? 0 : -1;
}

static int group_teardown(void **state)
{
	ring_buffer__free(rb);
	fastpath_bpf__destroy(skel);
	return 0;
}

int main(void)
{
	enum { NK = sizeof(ka_cases) / sizeof(ka_cases[0]) };
	struct CMUnitTest tests[NK + 5];
	size_t i, n = 0;

	bpf_test_require_root();
	for (i = 0; i < NK; i++) {
		memset(&tests[n], 0, sizeof(tests[n]));
		tests[n].name = ka_cases[i].name;
		tests[n].test_func = test_ka_case;
		tests[n].initial_state = (void *)&ka_cases[i];
		n++;
	}
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_probe_stun);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_probe_punch);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_probe_user);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_user_verify);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_objects_load);
	return _cmocka_run_group_tests("fastpath", tests, n, group_setup, group_teardown);
}
