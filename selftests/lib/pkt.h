/* SPDX-License-Identifier: MIT */
/*
 * Crafted Ethernet/IPv4/IPv6/UDP frames for BPF_PROG_RUN tables and raw-socket tests.
 * A frame is built from a spec; the UDP checksum is either complete, zero (IPv4 "none"), or
 * CHECKSUM_PARTIAL style (only the folded pseudo-header sum, as a local sender's skb carries
 * it across a veth).
 */
#ifndef WARP_TEST_PKT_H
#define WARP_TEST_PKT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pkt_csum {
	PKT_CSUM_FULL = 0,
	PKT_CSUM_PARTIAL,
	PKT_CSUM_ZERO,
};

struct pkt_spec {
	int family; /* 4 or 6 */
	uint8_t smac[6], dmac[6];
	uint8_t saddr[16]; /* IPv4 in the first 4 bytes */
	uint8_t daddr[16];
	uint16_t sport, dport; /* host order */
	uint8_t ttl;	       /* 0: 64 */
	enum pkt_csum csum;
	int ip_options;	    /* IPv4: add this many 4-byte NOP words (ihl > 5) */
	uint16_t frag;	    /* IPv4 frag_off field (host order: MF 0x2000 | offset) */
	bool v6_frag_hdr;   /* IPv6: insert a fragment header */
	uint8_t proto;	    /* 0: UDP */
	uint16_t ethertype; /* 0: from family */
};

/* IPv4 198.18.0.x or IPv6 2001:db8::x style helpers for specs. */
void pkt_addr4(uint8_t out[16], uint8_t a, uint8_t b, uint8_t c, uint8_t d);
void pkt_addr6(uint8_t out[16], uint16_t last);

/* Builds the frame; returns its length or 0 when it does not fit. */
size_t pkt_build(uint8_t *out, size_t cap, const struct pkt_spec *s, const void *payload,
		 size_t plen);
/* The spec of the answer: MACs, addresses and ports swapped. */
struct pkt_spec pkt_reverse(const struct pkt_spec *s);

/* Offset of the UDP payload in a frame built from s. */
size_t pkt_payload_off(const struct pkt_spec *s);
/* True when the frame's UDP checksum is complete and correct (or zero on IPv4). */
bool pkt_udp_csum_ok(const uint8_t *frame, size_t len);
bool pkt_ip4_csum_ok(const uint8_t *frame, size_t len);

/* Keepalive ping payload (WARP_PING_LEN bytes): header with type PING, cid, packet number,
 * then nonce and authenticator. */
void pkt_ping(uint8_t *out, const uint8_t cid[8], uint64_t pn, const uint8_t nonce[8],
	      const uint8_t auth[16]);
/* The pong the responder must produce for that ping. */
void pkt_pong(uint8_t *out, const uint8_t *ping, const uint8_t peer_cid[8]);
/* STUN message header (20 bytes) of the given type with a transaction id. */
void pkt_stun(uint8_t *out, uint16_t type, const uint8_t txid[12]);
/* Punch PROBE_REPLY payload (WARP_PROBE_LEN bytes). */
void pkt_probe_reply(uint8_t *out, const uint8_t cid[8], const uint8_t nonce[12]);

/* Ones'-complement helpers. */
uint32_t pkt_csum_add(uint32_t sum, const void *data, size_t len);
uint16_t pkt_csum_fold(uint32_t sum);

/* Prints a hex diff of two buffers to stderr (TAP-friendly "# " lines). */
void pkt_hexdiff(const char *what, const uint8_t *got, const uint8_t *want, size_t len);

#endif
