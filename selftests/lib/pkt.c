// SPDX-License-Identifier: MIT
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <warpgate/wire.h>

#include "pkt.h"

#define ETH_HLEN   14
#define IP6_HLEN   40
#define FRAG6_HLEN 8
#define UDP_HLEN   8

void pkt_addr4(uint8_t out[16], uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	memset(out, 0, 16);
	out[0] = a;
	out[1] = b;
	out[2] = c;
	out[3] = d;
}

void pkt_addr6(uint8_t out[16], uint16_t last)
{
	memset(out, 0, 16);
	out[0] = 0x20;
	out[1] = 0x01;
	out[2] = 0x0d;
	out[3] = 0xb8;
	out[14] = (uint8_t)(last >> 8);
	out[15] = (uint8_t)last;
}

uint32_t pkt_csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

uint16_t pkt_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

static size_t l3_len(const struct pkt_spec *s)
{
	if (s->family == 4)
		return 20 + 4 * (size_t)s->ip_options;
	return IP6_HLEN + (s->v6_frag_hdr ? FRAG6_HLEN : 0);
}

size_t pkt_payload_off(const struct pkt_spec *s)
{
	return ETH_HLEN + l3_len(s) + UDP_HLEN;
}

static uint32_t pseudo_sum(int family, const uint8_t *sa, const uint8_t *da, uint16_t ulen)
{
	uint32_t sum = 0;

	sum = pkt_csum_add(sum, sa, family == 4 ? 4 : 16);
	sum = pkt_csum_add(sum, da, family == 4 ? 4 : 16);
	return sum + 17 + ulen;
}

size_t pkt_build(uint8_t *out, size_t cap, const struct pkt_spec *s, const void *payload,
		 size_t plen)
{
	size_t l3 = l3_len(s), total = ETH_HLEN + l3 + UDP_HLEN + plen;
	uint16_t ulen = (uint16_t)(UDP_HLEN + plen), etype, c;
	uint8_t *ip = out + ETH_HLEN, *udp = ip + l3, proto = s->proto ? s->proto : 17;

	if (total > cap)
		return 0;
	memset(out, 0, total);
	memcpy(out, s->dmac, 6);
	memcpy(out + 6, s->smac, 6);
	etype = s->ethertype ? s->ethertype : (s->family == 4 ? 0x0800 : 0x86dd);
	out[12] = (uint8_t)(etype >> 8);
	out[13] = (uint8_t)etype;

	if (s->family == 4) {
		uint16_t tot = (uint16_t)(l3 + ulen);
		int i;

		ip[0] = (uint8_t)(0x40 | (l3 / 4));
		ip[2] = (uint8_t)(tot >> 8);
		ip[3] = (uint8_t)tot;
		ip[4] = 0x12; /* id */
		ip[5] = 0x34;
		ip[6] = (uint8_t)(s->frag >> 8);
		ip[7] = (uint8_t)s->frag;
		ip[8] = s->ttl ? s->ttl : 64;
		ip[9] = proto;
		memcpy(ip + 12, s->saddr, 4);
		memcpy(ip + 16, s->daddr, 4);
		for (i = 0; i < s->ip_options * 4; i++)
			ip[20 + i] = 1; /* NOP */
		c = (uint16_t)~pkt_csum_fold(pkt_csum_add(0, ip, l3));
		ip[10] = (uint8_t)(c >> 8);
		ip[11] = (uint8_t)c;
	} else {
		uint16_t pl = (uint16_t)(l3 - IP6_HLEN + ulen);

		ip[0] = 0x60;
		ip[4] = (uint8_t)(pl >> 8);
		ip[5] = (uint8_t)pl;
		ip[6] = s->v6_frag_hdr ? 44 : proto;
		ip[7] = s->ttl ? s->ttl : 64;
		memcpy(ip + 8, s->saddr, 16);
		memcpy(ip + 24, s->daddr, 16);
		if (s->v6_frag_hdr) {
			ip[40] = proto;
			ip[43] = 1; /* offset 0, M=1 */
			ip[44] = 0xab;
		}
	}
	udp[0] = (uint8_t)(s->sport >> 8);
	udp[1] = (uint8_t)s->sport;
	udp[2] = (uint8_t)(s->dport >> 8);
	udp[3] = (uint8_t)s->dport;
	udp[4] = (uint8_t)(ulen >> 8);
	udp[5] = (uint8_t)ulen;
	if (plen)
		memcpy(udp + UDP_HLEN, payload, plen);

	switch (s->csum) {
	case PKT_CSUM_ZERO:
		c = 0;
		break;
	case PKT_CSUM_PARTIAL:
		c = pkt_csum_fold(pseudo_sum(s->family, s->saddr, s->daddr, ulen));
		break;
	default:
		c = (uint16_t)~pkt_csum_fold(
			pkt_csum_add(pseudo_sum(s->family, s->saddr, s->daddr, ulen), udp, ulen));
		if (!c)
			c = 0xffff;
		break;
	}
	udp[6] = (uint8_t)(c >> 8);
	udp[7] = (uint8_t)c;
	return total;
}

struct pkt_spec pkt_reverse(const struct pkt_spec *s)
{
	struct pkt_spec r = *s;

	memcpy(r.smac, s->dmac, 6);
	memcpy(r.dmac, s->smac, 6);
	memcpy(r.saddr, s->daddr, 16);
	memcpy(r.daddr, s->saddr, 16);
	r.sport = s->dport;
	r.dport = s->sport;
	return r;
}

bool pkt_udp_csum_ok(const uint8_t *f, size_t len)
{
	int family = f[12] == 0x08 ? 4 : 6;
	const uint8_t *ip = f + ETH_HLEN, *udp, *sa, *da;
	uint16_t ulen;

	if (family == 4) {
		udp = ip + (ip[0] & 15) * 4;
		sa = ip + 12;
		da = ip + 16;
	} else {
		udp = ip + IP6_HLEN;
		sa = ip + 8;
		da = ip + 24;
	}
	if ((size_t)(udp + UDP_HLEN - f) > len)
		return false;
	ulen = (uint16_t)(udp[4] << 8 | udp[5]);
	if ((size_t)(udp - f) + ulen > len)
		return false;
	if (family == 4 && !udp[6] && !udp[7])
		return true;
	return pkt_csum_fold(pkt_csum_add(pseudo_sum(family, sa, da, ulen), udp, ulen)) == 0xffff;
}

bool pkt_ip4_csum_ok(const uint8_t *f, size_t len)
{
	const uint8_t *ip = f + ETH_HLEN;

	return pkt_csum_fold(pkt_csum_add(0, ip, (size_t)(ip[0] & 15) * 4)) == 0xffff;
}

static void hdr(uint8_t *out, uint8_t type, const uint8_t cid[8], uint64_t pn)
{
	int i;

	out[0] = WARP_HDR_FLAGS(type);
	out[1] = 0;
	out[2] = out[3] = 0;
	memcpy(out + WARP_CID_OFF, cid, WARP_CID_LEN);
	for (i = 0; i < 8; i++)
		out[WARP_PN_OFF + i] = (uint8_t)(pn >> (56 - 8 * i));
}

void pkt_ping(uint8_t *out, const uint8_t cid[8], uint64_t pn, const uint8_t nonce[8],
	      const uint8_t auth[16])
{
	hdr(out, WARP_PKT_PING, cid, pn);
	memcpy(out + WARP_HDR_LEN, nonce, WARP_PING_NONCE_LEN);
	memcpy(out + WARP_HDR_LEN + WARP_PING_NONCE_LEN, auth, WARP_PING_AUTH_LEN);
}

void pkt_pong(uint8_t *out, const uint8_t *ping, const uint8_t peer_cid[8])
{
	memcpy(out, ping, WARP_PING_LEN);
	out[0] = (uint8_t)((out[0] & ~WARP_HDR_TYPE_MASK) | WARP_PKT_PONG);
	memcpy(out + WARP_CID_OFF, peer_cid, WARP_CID_LEN);
}

void pkt_stun(uint8_t *out, uint16_t type, const uint8_t txid[12])
{
	out[0] = (uint8_t)(type >> 8);
	out[1] = (uint8_t)type;
	out[2] = out[3] = 0; /* no attributes */
	out[4] = 0x21;
	out[5] = 0x12;
	out[6] = 0xa4;
	out[7] = 0x42;
	memcpy(out + 8, txid, 12);
}

void pkt_probe_reply(uint8_t *out, const uint8_t cid[8], const uint8_t nonce[12])
{
	hdr(out, WARP_PKT_PROBE_REPLY, cid, 1);
	memcpy(out + WARP_HDR_LEN, nonce, WARP_PROBE_NONCE_LEN);
	memset(out + WARP_HDR_LEN + WARP_PROBE_NONCE_LEN, 0x5a, WARP_PROBE_AUTH_LEN);
}

void pkt_hexdiff(const char *what, const uint8_t *got, const uint8_t *want, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (got[i] != want[i])
			fprintf(stderr, "# %s: byte %zu: got %02x want %02x\n", what, i, got[i],
				want[i]);
}
