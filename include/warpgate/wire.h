/* SPDX-License-Identifier: MIT */
/*
 * On-the-wire layout of warpgate packets and the structs shared by bpf/ and user/.
 * Included by BPF programs too: fixed-width types only, explicit padding, network-order
 * fields named *_be.  docs/protocol.md is the prose specification of the same layout.
 *
 * Every UDP datagram (and every TCP frame after its 2-byte length prefix) starts with:
 *
 *   0      1      2      3      4                      12                     20
 *   +------+------+------+------+----------------------+----------------------+---------
 *   |flags |phase | reserved    | connection ID (8)    | packet number (8, BE)| payload
 *   +------+------+------+------+----------------------+----------------------+---------
 *
 * flags = 0b11VVTTTT: the two top bits mark a warpgate packet (a STUN message starts 0b00,
 * TURN ChannelData 0b01, so one socket can carry all three), VV is the wire version (1),
 * TTTT the packet type.  The connection ID is chosen by the *receiver* of the packet, which
 * is what lets the kernel steer a datagram to its pipe whatever its 4-tuple.
 */
#ifndef WARPGATE_WIRE_H
#define WARPGATE_WIRE_H

#include <linux/types.h>

#define WARP_WIRE_VERSION   1
#define WARP_HDR_MARK       0xc0
#define WARP_HDR_MARK_MASK  0xc0
#define WARP_HDR_VER_SHIFT  4
#define WARP_HDR_VER_MASK   0x30
#define WARP_HDR_TYPE_MASK  0x0f
#define WARP_HDR_FLAGS(type) (WARP_HDR_MARK | (WARP_WIRE_VERSION << WARP_HDR_VER_SHIFT) | (type))

#define WARP_HDR_LEN        20
#define WARP_CID_OFF        4
#define WARP_CID_LEN        8
#define WARP_PN_OFF         12
#define WARP_TAG_LEN        16 /* AEAD tag after the sealed payload */

enum warp_pkt_type {
	WARP_PKT_HS_INIT = 0x1,   /* handshake 1: initiator -> responder (cleartext) */
	WARP_PKT_HS_RESP = 0x2,   /* handshake 2: responder -> initiator (partly sealed) */
	WARP_PKT_HS_FINISH = 0x3, /* handshake 3: initiator -> responder (sealed) */
	WARP_PKT_DATA = 0x4,      /* sealed frames (stream, datagram) */
	WARP_PKT_ACK = 0x5,       /* sealed acknowledgement */
	WARP_PKT_PING = 0x6,      /* keepalive ping: CID in clear + authenticator */
	WARP_PKT_PONG = 0x7,      /* keepalive pong: echoes the ping's nonce and authenticator */
	WARP_PKT_CLOSE = 0x8,     /* sealed close */
	WARP_PKT_PROBE = 0x9,     /* punch probe: nonce + authenticator */
	WARP_PKT_PROBE_REPLY = 0xa, /* answer to a probe: echoes nonce, own authenticator */
	WARP_PKT_HS_RETRY = 0xb,  /* stateless cookie reply to a handshake init under load */
};

/* phase byte: bit 0 is the key phase (flips at each key rotation); other bits must be 0. */
#define WARP_PHASE_KEY      0x01

struct warp_hdr {
	__u8 flags;
	__u8 phase;
	__u8 reserved[2];
	__u8 cid[WARP_CID_LEN];
	__u8 pn_be[8];
} __attribute__((packed));

/* Keepalive ping/pong body, right after the header: a random nonce and a 16-byte keyed
 * authenticator over header+nonce computed by the pinger.  The pong is the ping with the
 * type flipped, the CID replaced by the pinger's CID and the addresses swapped, so the
 * kernel can answer without keys; the pinger checks the echo against what it sent. */
#define WARP_PING_NONCE_LEN 8
#define WARP_PING_AUTH_LEN  16
#define WARP_PING_LEN       (WARP_HDR_LEN + WARP_PING_NONCE_LEN + WARP_PING_AUTH_LEN)

/* Punch probe body: 12-byte nonce (same size as a STUN transaction ID, so one BPF map
 * matches both) and a 16-byte authenticator keyed by the attempt's shared secret. */
#define WARP_PROBE_NONCE_LEN 12
#define WARP_PROBE_AUTH_LEN  16
#define WARP_PROBE_LEN       (WARP_HDR_LEN + WARP_PROBE_NONCE_LEN + WARP_PROBE_AUTH_LEN)

/* ---- BPF maps shared with userspace ---- */

/* Key of the keepalive map: the local (receiver-chosen) CID. */
struct warp_ka_key {
	__u8 cid[WARP_CID_LEN];
};

/* Value of the keepalive map.  Addresses are 16 bytes: IPv6, or IPv4 as ::ffff:a.b.c.d. */
struct warp_ka_entry {
	__u8 peer_cid[WARP_CID_LEN];  /* written into the pong */
	__u8 peer_addr[16];           /* only pings from this address:port are answered */
	__be16 peer_port_be;
	__be16 local_port_be;         /* our UDP port the pipe lives on */
	__u32 flags;                  /* WARP_KA_F_* */
	__u64 last_seen_ns;           /* CLOCK_MONOTONIC of the last answered ping; jiffies
				       * resolution (bpf_ktime_get_coarse_ns()) */
	__u64 answered;               /* pings answered (kernel and userspace); not atomic
				       * across CPUs, informational */
};

#define WARP_KA_F_ACTIVE 0x1

/* Per-action counters of the keepalive responder (array map indexed by this enum). */
enum warp_ka_stat {
	WARP_KA_STAT_PASS_NOT_UDP = 0,
	WARP_KA_STAT_PASS_NOT_WARP,
	WARP_KA_STAT_PASS_NOT_PING,
	WARP_KA_STAT_PASS_UNKNOWN_CID,
	WARP_KA_STAT_DROP_WRONG_SOURCE,
	WARP_KA_STAT_PASS_MALFORMED,      /* also IPv4 options, ping not 44 bytes, phase or
					   * reserved bits set, IPv6 UDP checksum 0 */
	WARP_KA_STAT_PASS_FRAGMENT,       /* also TC: a GRO super-packet */
	WARP_KA_STAT_TX_PONG,
	WARP_KA_STAT_MAX,
};

/* Per-action counters of the probe matcher (per-CPU array indexed by this enum). */
#define WARP_HAVE_PROBE_STATS 1
enum warp_probe_stat {
	WARP_PROBE_STAT_MATCH = 0, /* reply matched an outstanding id: event emitted */
	WARP_PROBE_STAT_MISS,      /* STUN response or probe reply with an unknown id */
	WARP_PROBE_STAT_RB_FULL,   /* matched, but the ring buffer had no room */
	WARP_PROBE_STAT_MAX,
};

/* Probe matcher: outstanding STUN transaction IDs and punch nonces. */
struct warp_probe_key {
	__u8 id[12];
};

struct warp_probe_val {
	__u64 cookie;   /* opaque to the kernel: which userspace transaction */
	__u64 sent_ns;  /* bpf_ktime_get_ns() clock, set by userspace at send time */
};

enum warp_probe_kind {
	WARP_PROBE_STUN = 1,
	WARP_PROBE_PUNCH = 2,
};

/* Ring-buffer event for a matched reply. */
struct warp_probe_event {
	__u8 id[12];
	__u8 kind;           /* enum warp_probe_kind */
	__u8 family;         /* 4 or 6 */
	__be16 src_port_be;  /* source port as the kernel saw it */
	__u8 src_addr[16];   /* IPv6, or IPv4-mapped */
	__be16 dst_port_be;
	__u8 pad[6];
	__u64 cookie;
	__u64 sent_ns;
	__u64 rx_ns;         /* bpf_ktime_get_ns() at receive */
};

/* CID demux: CID -> index of the owning socket in the reuseport group. */
struct warp_cid_key {
	__u8 cid[WARP_CID_LEN];
};

struct warp_cid_route {
	__u32 sock_index;
	__u32 flags;
};

/* Counters of the CID demux program (per-CPU array indexed by this enum). */
enum warp_cid_stat {
	WARP_CID_STAT_ROUTED = 0,  /* CID found: steered to its owner */
	WARP_CID_STAT_UNKNOWN,     /* warpgate packet, CID not routed: default socket */
	WARP_CID_STAT_NOT_WARP,    /* STUN, TURN, garbage: default socket */
	WARP_CID_STAT_SELECT_ERR,  /* owner slot empty: default socket */
	WARP_CID_STAT_MAX,
};

#endif
