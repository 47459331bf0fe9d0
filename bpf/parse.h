/* SPDX-License-Identifier: MIT */
/*
 * Packet parsing and checksum helpers shared by the warpgate BPF programs.  UAPI headers only.
 *
 * warp_parse() walks Ethernet -> IPv4/IPv6 -> UDP with direct packet access and fills a
 * struct warp_pkt; it refuses what the fast path never handles (IPv4 options, fragments,
 * IPv6 extension headers, truncated or inconsistent lengths) by returning the
 * enum warp_ka_stat reason, so the caller can count it and pass the packet to the stack.
 */
#ifndef WARP_BPF_PARSE_H
#define WARP_BPF_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <warpgate/wire.h>


#define WARP_PONG_TTL	 64
#define IP_MF		 0x2000
#define IP_OFFSET	 0x1fff
#define NEXTHDR_FRAGMENT 44

/* STUN: 20-byte header, magic cookie at 4, transaction ID at 8 (RFC 5389 section 6). */
#define STUN_HDR_LEN  20
#define STUN_COOKIE   0x2112A442
#define STUN_TXID_OFF 8
/* Binding method, success (0x0101) or error (0x0111) response class. */
#define STUN_BINDING_RESP_MASK 0xffef
#define STUN_BINDING_RESP      0x0101

struct warp_pkt {
	void *data;
	void *data_end;
	struct ethhdr *eth;
	struct iphdr *ip4;   /* valid when !v6 */
	struct ipv6hdr *ip6; /* valid when v6 */
	/* A flag rather than null pointers: the verifier cannot null-test a packet pointer
	 * and would explore both branches. */
	int v6;
	struct udphdr *udp;
	__u8 *pl;     /* UDP payload */
	__u32 pl_len; /* from the UDP length field, checked against data_end */
	__u32 l3_off; /* offsets from data, for the skb helpers */
	__u32 l4_off;
};

/* Returns -1 when the packet is a well-formed UDP datagram the fast path may look at, or the
 * enum warp_ka_stat code telling why it is passed to the stack untouched. */
static __always_inline int warp_parse(struct warp_pkt *p)
{
	struct ethhdr *eth = p->data;
	__u32 udp_len, avail;
	__u8 *l4;

	if ((void *)(eth + 1) > p->data_end)
		return WARP_KA_STAT_PASS_MALFORMED;
	p->eth = eth;
	p->l3_off = sizeof(*eth);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 tot;

		if ((void *)(ip + 1) > p->data_end)
			return WARP_KA_STAT_PASS_MALFORMED;
		if (ip->version != 4 || ip->ihl != 5)
			return WARP_KA_STAT_PASS_MALFORMED; /* options: leave to the stack */
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return WARP_KA_STAT_PASS_FRAGMENT;
		if (ip->protocol != IPPROTO_UDP)
			return WARP_KA_STAT_PASS_NOT_UDP;
		tot = bpf_ntohs(ip->tot_len);
		/* Re-state the 16-bit bound after the byte swap: the 6.1 verifier loses it and
		 * then refuses the pointer arithmetic below. */
		asm volatile("%0 &= 0xffff" : "+r"(tot));
		if (tot < sizeof(*ip) + sizeof(struct udphdr) || (void *)ip + tot > p->data_end)
			return WARP_KA_STAT_PASS_MALFORMED;
		p->ip4 = ip;
		p->v6 = 0;
		l4 = (void *)(ip + 1);
		avail = tot - sizeof(*ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u32 plen;

		if ((void *)(ip6 + 1) > p->data_end)
			return WARP_KA_STAT_PASS_MALFORMED;
		if (ip6->version != 6)
			return WARP_KA_STAT_PASS_MALFORMED;
		if (ip6->nexthdr == NEXTHDR_FRAGMENT)
			return WARP_KA_STAT_PASS_FRAGMENT;
		if (ip6->nexthdr != IPPROTO_UDP)
			return WARP_KA_STAT_PASS_NOT_UDP; /* extension headers included */
		plen = bpf_ntohs(ip6->payload_len);
		asm volatile("%0 &= 0xffff" : "+r"(plen)); /* as for tot above */
		if (plen < sizeof(struct udphdr) || (void *)(ip6 + 1) + plen > p->data_end)
			return WARP_KA_STAT_PASS_MALFORMED; /* also jumbograms (plen 0) */
		p->ip6 = ip6;
		p->v6 = 1;
		l4 = (void *)(ip6 + 1);
		avail = plen;
	} else {
		return WARP_KA_STAT_PASS_NOT_UDP;
	}

	p->udp = (void *)l4;
	if ((void *)(p->udp + 1) > p->data_end)
		return WARP_KA_STAT_PASS_MALFORMED;
	udp_len = bpf_ntohs(p->udp->len);
	if (udp_len < sizeof(struct udphdr) || udp_len > avail)
		return WARP_KA_STAT_PASS_MALFORMED;
	p->l4_off = l4 - (__u8 *)p->data;
	p->pl = l4 + sizeof(struct udphdr);
	p->pl_len = udp_len - sizeof(struct udphdr);
	return -1;
}

/* Source address as the 16-byte form used in the maps (IPv6, or IPv4 as ::ffff:a.b.c.d). */
static __always_inline void warp_src_addr(const struct warp_pkt *p, __u8 out[16])
{
	if (!p->v6) {
		__builtin_memset(out, 0, 10);
		out[10] = 0xff;
		out[11] = 0xff;
		__builtin_memcpy(out + 12, &p->ip4->saddr, 4);
	} else {
		__builtin_memcpy(out, &p->ip6->saddr, 16);
	}
}

static __always_inline __u16 csum_fold32(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Ones'-complement sum of the UDP pseudo header (addresses, protocol, UDP length); swapping
 * source and destination does not change it. */
static __always_inline __u64 warp_pseudo_sum(const struct warp_pkt *p)
{
	__u64 s = bpf_htons(IPPROTO_UDP) + (__u64)p->udp->len;
	__u32 *a;
	int i;

	if (!p->v6) {
		s += (__u64)p->ip4->saddr + p->ip4->daddr;
	} else {
		a = (__u32 *)&p->ip6->saddr;
#pragma unroll
		for (i = 0; i < 8; i++)
			s += a[i];
	}
	return s;
}

#endif
