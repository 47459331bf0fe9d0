// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * CID demux for a SO_REUSEPORT group: a datagram whose warpgate header carries a connection
 * ID listed in cid_routes goes to the socket at that route's index of cid_socks; everything
 * else (unknown CIDs, STUN, TURN, garbage) goes to the default socket.  The kernel runs this
 * for every datagram arriving on the group's address, before any socket is chosen.
 */
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <warpgate/wire.h>


char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define UDP_HLEN	    8
#define CID_DEMUX_MAX_SOCKS 256

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, CID_DEMUX_MAX_SOCKS);
	__type(key, __u32);
	__type(value, __u64);
} cid_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct warp_cid_key);
	__type(value, struct warp_cid_route);
} cid_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WARP_CID_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} cid_stats SEC(".maps");

/* Index of the default socket in cid_socks; set by the loader before attaching. */
__u32 default_index = 0;

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&cid_stats, &idx);

	if (c)
		*c += 1;
}

static __always_inline int to_default(struct sk_reuseport_md *md, __u32 stat)
{
	__u32 idx = default_index;

	count(stat);
	/* If even the default slot is empty, the kernel's hash choice is the last resort. */
	bpf_sk_select_reuseport(md, &cid_socks, &idx, 0);
	return SK_PASS;
}

SEC("sk_reuseport")
int warp_cid_select(struct sk_reuseport_md *md)
{
	struct warp_cid_route *route;
	struct warp_cid_key key;
	__u8 hdr[WARP_CID_OFF + WARP_CID_LEN];
	__u8 *data = md->data, *end = md->data_end;

	if (md->len < UDP_HLEN + WARP_HDR_LEN)
		return to_default(md, WARP_CID_STAT_NOT_WARP);
	/* data starts at the UDP header; read the payload directly when it is linear. */
	if (data + UDP_HLEN + sizeof(hdr) <= end)
		__builtin_memcpy(hdr, data + UDP_HLEN, sizeof(hdr));
	else if (bpf_skb_load_bytes(md, UDP_HLEN, hdr, sizeof(hdr)))
		return to_default(md, WARP_CID_STAT_NOT_WARP);
	if ((hdr[0] & (WARP_HDR_MARK_MASK | WARP_HDR_VER_MASK)) !=
	    (WARP_HDR_MARK | WARP_WIRE_VERSION << WARP_HDR_VER_SHIFT))
		return to_default(md, WARP_CID_STAT_NOT_WARP);

	__builtin_memcpy(key.cid, hdr + WARP_CID_OFF, WARP_CID_LEN);
	route = bpf_map_lookup_elem(&cid_routes, &key);
	if (!route)
		return to_default(md, WARP_CID_STAT_UNKNOWN);
	if (bpf_sk_select_reuseport(md, &cid_socks, &route->sock_index, 0))
		return to_default(md, WARP_CID_STAT_SELECT_ERR);
	count(WARP_CID_STAT_ROUTED);
	return SK_PASS;
}
