// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * warpgate receive fast path: keepalive responder and probe-reply matcher.
 *
 * warp_xdp is the native XDP entry; warp_tc is the same logic for clsact ingress, used where
 * native XDP cannot attach.  Both:
 *  - answer a PING whose CID is in ka_map and whose source is the recorded peer endpoint by
 *    rewriting it into the PONG in place (addresses and ports swapped, type PONG, CID = the
 *    peer's) and bouncing it out of the receiving interface; the map entry's last_seen_ns and
 *    answered fields tell userspace the path is alive;
 *  - report STUN Binding responses and punch PROBE_REPLYs whose 12-byte id is in probe_map
 *    through the probe_events ring buffer (kernel receive time, source as seen here), then
 *    pass them on so the owning socket still gets the payload.
 * Everything else is passed untouched.
 */
#include "parse.h"

#include <linux/pkt_cls.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct warp_ka_key);
	__type(value, struct warp_ka_entry);
} ka_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WARP_KA_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ka_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct warp_probe_key);
	__type(value, struct warp_probe_val);
} probe_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WARP_PROBE_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} probe_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} probe_events SEC(".maps");

enum fp_action {
	FP_PASS = 0,
	FP_DROP,
	FP_TX, /* packet rewritten into a pong: send it back out */
};

/* Bytes of the warpgate header the pong changes: flags..CID (12, a multiple of 4 for
 * bpf_csum_diff, starting at an even offset of the UDP header). */
#define KA_HDR_SPAN 12

struct ka_delta {
	__u8 old_hdr[KA_HDR_SPAN];
	__u8 new_hdr[KA_HDR_SPAN];
	__u16 old_ttlw; /* IPv4 16-bit word holding TTL and protocol */
	__u16 new_ttlw;
};

static __always_inline void count(void *map, __u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(map, &idx);

	if (c)
		*c += 1;
}

static __always_inline int probe_match(struct warp_pkt *p, __u32 id_off, __u8 kind)
{
	struct warp_probe_key key;
	struct warp_probe_val *val;
	struct warp_probe_event *ev;
	__u8 *id = p->pl + id_off;

	if ((void *)(id + sizeof(key.id)) > p->data_end || id_off + sizeof(key.id) > p->pl_len)
		return FP_PASS;
	__builtin_memcpy(key.id, id, sizeof(key.id));
	val = bpf_map_lookup_elem(&probe_map, &key);
	if (!val) {
		count(&probe_stats, WARP_PROBE_STAT_MISS);
		return FP_PASS;
	}
	ev = bpf_ringbuf_reserve(&probe_events, sizeof(*ev), 0);
	if (!ev) {
		/* Keep the entry: userspace still matches the reply from its socket. */
		count(&probe_stats, WARP_PROBE_STAT_RB_FULL);
		return FP_PASS;
	}
	__builtin_memcpy(ev->id, key.id, sizeof(ev->id));
	ev->kind = kind;
	ev->family = p->v6 ? 6 : 4;
	ev->src_port_be = p->udp->source;
	warp_src_addr(p, ev->src_addr);
	ev->dst_port_be = p->udp->dest;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	ev->cookie = val->cookie;
	ev->sent_ns = val->sent_ns;
	ev->rx_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(ev, 0);
	/* One event per probe: retransmitted or replayed replies are not reported again. */
	bpf_map_delete_elem(&probe_map, &key);
	count(&probe_stats, WARP_PROBE_STAT_MATCH);
	return FP_PASS;
}

static __always_inline int addr_eq(const __u32 a[4], const __u8 *b8)
{
	const __u32 *b = (const __u32 *)b8;

	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

/* Looks the ping up and checks its source; returns the entry or NULL with *stat set. */
static __always_inline struct warp_ka_entry *ka_lookup(struct warp_pkt *p, __u32 *stat)
{
	struct warp_ka_key key;
	struct warp_ka_entry *e;
	__u32 src[4];

	if (p->pl_len != WARP_PING_LEN || (void *)(p->pl + WARP_PING_LEN) > p->data_end) {
		*stat = WARP_KA_STAT_PASS_MALFORMED;
		return 0;
	}
	/* A ping has phase 0 and zero reserved bytes (docs/protocol-handshake.md); userspace
	 * drops anything else, so the kernel must not answer it either.  An IPv6 UDP checksum
	 * of zero is invalid: let the stack drop it. */
	if ((p->pl[1] | p->pl[2] | p->pl[3]) || (p->v6 && !p->udp->check)) {
		*stat = WARP_KA_STAT_PASS_MALFORMED;
		return 0;
	}
	__builtin_memcpy(key.cid, p->pl + WARP_CID_OFF, WARP_CID_LEN);
	e = bpf_map_lookup_elem(&ka_map, &key);
	if (!e || !(e->flags & WARP_KA_F_ACTIVE) ||
	    (e->local_port_be && e->local_port_be != p->udp->dest)) {
		*stat = WARP_KA_STAT_PASS_UNKNOWN_CID;
		return 0;
	}
	warp_src_addr(p, (__u8 *)src);
	if (e->peer_port_be != p->udp->source || !addr_eq(src, e->peer_addr)) {
		/* No reflection towards strangers (spoofed sources included). */
		*stat = WARP_KA_STAT_DROP_WRONG_SOURCE;
		return 0;
	}
	return e;
}

/* Turns the ping into the pong with direct writes; checksums are the caller's job. */
static __always_inline void ka_rewrite(struct warp_pkt *p, const struct warp_ka_entry *e,
				       struct ka_delta *d)
{
	struct ethhdr *eth = p->eth;
	__u8 mac[ETH_ALEN];
	__be16 port;

	__builtin_memcpy(d->old_hdr, p->pl, KA_HDR_SPAN);

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

	if (!p->v6) {
		__be32 a = p->ip4->saddr;

		p->ip4->saddr = p->ip4->daddr;
		p->ip4->daddr = a;
		d->old_ttlw = *(__u16 *)&p->ip4->ttl;
		p->ip4->ttl = WARP_PONG_TTL;
		d->new_ttlw = *(__u16 *)&p->ip4->ttl;
	} else {
		struct in6_addr a = p->ip6->saddr;

		p->ip6->saddr = p->ip6->daddr;
		p->ip6->daddr = a;
		p->ip6->hop_limit = WARP_PONG_TTL;
	}

	port = p->udp->source;
	p->udp->source = p->udp->dest;
	p->udp->dest = port;

	p->pl[0] = (p->pl[0] & ~WARP_HDR_TYPE_MASK) | WARP_PKT_PONG;
	__builtin_memcpy(p->pl + WARP_CID_OFF, e->peer_cid, WARP_CID_LEN);
	__builtin_memcpy(d->new_hdr, p->pl, KA_HDR_SPAN);
}

static __always_inline void ka_account(struct warp_ka_entry *e)
{
	/* Liveness needs seconds, not nanoseconds: the coarse clock (jiffies resolution, same
	 * CLOCK_MONOTONIC base) is several times cheaper to read under a hypervisor.  The
	 * counter is informational, so a rare lost increment between CPUs answering the same
	 * pipe is preferred to a locked add on every ping. */
	e->last_seen_ns = bpf_ktime_get_coarse_ns();
	e->answered++;
	count(&ka_stats, WARP_KA_STAT_TX_PONG);
}

/* Classifies the datagram: >= 0 is an action already decided, -1 means "keepalive ping". */
static __always_inline int classify(struct warp_pkt *p)
{
	int r = warp_parse(p);
	__u8 b0;

	if (r >= 0) {
		count(&ka_stats, r);
		return FP_PASS;
	}
	if (p->pl_len < 1 || (void *)(p->pl + 1) > p->data_end) {
		count(&ka_stats, WARP_KA_STAT_PASS_NOT_WARP);
		return FP_PASS;
	}
	b0 = p->pl[0];
	if ((b0 & WARP_HDR_MARK_MASK) == WARP_HDR_MARK) {
		if ((b0 & WARP_HDR_VER_MASK) != (WARP_WIRE_VERSION << WARP_HDR_VER_SHIFT)) {
			count(&ka_stats, WARP_KA_STAT_PASS_NOT_WARP);
			return FP_PASS;
		}
		if ((b0 & WARP_HDR_TYPE_MASK) == WARP_PKT_PING)
			return -1;
		count(&ka_stats, WARP_KA_STAT_PASS_NOT_PING);
		if ((b0 & WARP_HDR_TYPE_MASK) == WARP_PKT_PROBE_REPLY &&
		    p->pl_len >= WARP_PROBE_LEN)
			return probe_match(p, WARP_HDR_LEN, WARP_PROBE_PUNCH);
		return FP_PASS;
	}
	count(&ka_stats, WARP_KA_STAT_PASS_NOT_WARP);
	if (!(b0 & 0xc0) && p->pl_len >= STUN_HDR_LEN && (void *)(p->pl + 8) <= p->data_end) {
		__u16 type = bpf_ntohs(*(__be16 *)p->pl);
		__u32 magic = bpf_ntohl(*(__be32 *)(p->pl + 4));

		if (magic == STUN_COOKIE && (type & STUN_BINDING_RESP_MASK) == STUN_BINDING_RESP)
			return probe_match(p, STUN_TXID_OFF, WARP_PROBE_STUN);
	}
	return FP_PASS;
}

/* XDP frames carry no checksum state: a locally generated datagram crossing a veth still has
 * only the pseudo-header sum in its UDP checksum (CHECKSUM_PARTIAL).  Recognise that and
 * compute the full checksum; otherwise fix the valid one incrementally (RFC 1624). */
static __always_inline int xdp_fix_csum(struct warp_pkt *p, struct ka_delta *d)
{
	__u16 *ow = (__u16 *)d->old_hdr, *nw = (__u16 *)d->new_hdr;
	__u16 check = p->udp->check, c;
	__u64 s;
	int i;

	if (!p->v6) {
		s = (__u16)~p->ip4->check + (__u16)~d->old_ttlw + d->new_ttlw;
		p->ip4->check = ~csum_fold32(s);
		if (!check)
			return 0; /* IPv4 without UDP checksum stays so */
	}
	s = warp_pseudo_sum(p);
	if (check == csum_fold32(s)) {
		if ((void *)p->udp + sizeof(struct udphdr) + WARP_PING_LEN > p->data_end)
			return -1;
		p->udp->check = 0;
		s += (__u32)bpf_csum_diff(0, 0, (void *)p->udp,
					  sizeof(struct udphdr) + WARP_PING_LEN, 0);
		c = ~csum_fold32(s);
	} else {
		s = (__u16)~check;
#pragma unroll
		for (i = 0; i < KA_HDR_SPAN / 2; i++)
			s += (__u16)~ow[i] + nw[i];
		c = ~csum_fold32(s);
	}
	p->udp->check = c ? c : 0xffff;
	return 0;
}

SEC("xdp")
int warp_xdp(struct xdp_md *ctx)
{
	struct warp_pkt p = {
		.data = (void *)(long)ctx->data,
		.data_end = (void *)(long)ctx->data_end,
	};
	struct warp_ka_entry *e;
	struct ka_delta d;
	__u32 stat = 0;
	int r;

	r = classify(&p);
	if (r >= 0)
		return r == FP_DROP ? XDP_DROP : XDP_PASS;
	e = ka_lookup(&p, &stat);
	if (!e) {
		count(&ka_stats, stat);
		return stat == WARP_KA_STAT_DROP_WRONG_SOURCE ? XDP_DROP : XDP_PASS;
	}
	ka_rewrite(&p, e, &d);
	if (xdp_fix_csum(&p, &d))
		return XDP_DROP; /* unreachable: length checked in ka_lookup */
	ka_account(e);
	return XDP_TX;
}

/* Linear bytes the TC path needs: Ethernet + IPv6 + UDP + ping. */
#define TC_PULL_LEN \
	(sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct udphdr) + WARP_PING_LEN)

SEC("tc")
int warp_tc(struct __sk_buff *skb)
{
	struct warp_pkt p;
	struct warp_ka_entry *e;
	struct ka_delta d;
	__u32 stat = 0, l3, l4;
	__s64 diff;
	int v4;
	int r;

	/* A GRO super-packet holds several datagrams behind one header: leave it alone. */
	if (skb->gso_segs > 1) {
		count(&ka_stats, WARP_KA_STAT_PASS_FRAGMENT);
		return TC_ACT_OK;
	}
	if ((long)skb->data + TC_PULL_LEN > (long)skb->data_end)
		bpf_skb_pull_data(skb, skb->len < TC_PULL_LEN ? skb->len : TC_PULL_LEN);
	p.data = (void *)(long)skb->data;
	p.data_end = (void *)(long)skb->data_end;

	r = classify(&p);
	if (r >= 0)
		return r == FP_DROP ? TC_ACT_SHOT : TC_ACT_OK;
	e = ka_lookup(&p, &stat);
	if (!e) {
		count(&ka_stats, stat);
		return stat == WARP_KA_STAT_DROP_WRONG_SOURCE ? TC_ACT_SHOT : TC_ACT_OK;
	}
	ka_rewrite(&p, e, &d);
	ka_account(e);
	v4 = !p.v6;
	l3 = p.l3_off;
	l4 = p.l4_off;

	/* The skb helpers know the checksum state: with CHECKSUM_PARTIAL the payload change
	 * needs no fix, otherwise the field is updated incrementally (zero stays zero). */
	if (v4)
		bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), d.old_ttlw, d.new_ttlw,
				    2);
	diff = bpf_csum_diff((__be32 *)d.old_hdr, KA_HDR_SPAN, (__be32 *)d.new_hdr, KA_HDR_SPAN, 0);
	bpf_l4_csum_replace(skb, l4 + offsetof(struct udphdr, check), 0, diff,
			    BPF_F_MARK_MANGLED_0);
	return bpf_redirect(skb->ifindex, 0);
}
