// SPDX-License-Identifier: MIT
/* Keepalive ping/pong and punch probe authenticators (keyed BLAKE2b-128). */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "core/util.h"
#include "pipe/frame.h"
#include "pipe/keepalive.h"

#define PING_BODY_LEN	  (WARP_PING_NONCE_LEN + WARP_PING_AUTH_LEN)
#define DEFAULT_WINDOW_NS (30ull * 1000000000ull)

/* auth = BLAKE2b-128(key, header || nonce), over the first hdr+nonce bytes of pkt. */
static void mac16(uint8_t out[16], const uint8_t key[32], const uint8_t *pkt, size_t len)
{
	crypto_generichash(out, 16, pkt, len, key, 32);
}

/* Header checks shared by every fixed-size keyless packet. */
static int check_fixed(const uint8_t *pkt, size_t len, uint8_t type, size_t want,
		       struct warp_pkt_hdr *h)
{
	int err = warp_hdr_decode(pkt, len, h);

	if (err)
		return err;
	if (h->type != type)
		return -WARP_ESTATE;
	if (len < want)
		return -WARP_ETRUNCATED;
	if (len > want)
		return -WARP_ETRAILING;
	return 0;
}

void warp_ping_build(uint8_t out[WARP_PING_LEN], const uint8_t key[WARP_KA_KEY_LEN],
		     const uint8_t peer_cid[WARP_CID_LEN], uint64_t pn,
		     const uint8_t nonce[WARP_PING_NONCE_LEN])
{
	struct warp_pkt_hdr h = {.type = WARP_PKT_PING, .pn = pn};

	memcpy(h.cid, peer_cid, WARP_CID_LEN);
	warp_hdr_encode(out, &h);
	memcpy(out + WARP_HDR_LEN, nonce, WARP_PING_NONCE_LEN);
	mac16(out + WARP_HDR_LEN + WARP_PING_NONCE_LEN, key, out,
	      WARP_HDR_LEN + WARP_PING_NONCE_LEN);
}

int warp_ping_verify(const uint8_t *pkt, size_t len, const uint8_t key[WARP_KA_KEY_LEN],
		     const uint8_t local_cid[WARP_CID_LEN])
{
	struct warp_pkt_hdr h;
	uint8_t mac[WARP_PING_AUTH_LEN];
	int err = check_fixed(pkt, len, WARP_PKT_PING, WARP_PING_LEN, &h);

	if (err)
		return err;
	if (memcmp(h.cid, local_cid, WARP_CID_LEN))
		return -WARP_ENOTFOUND;
	mac16(mac, key, pkt, WARP_HDR_LEN + WARP_PING_NONCE_LEN);
	if (crypto_verify_16(mac, pkt + WARP_HDR_LEN + WARP_PING_NONCE_LEN))
		return -WARP_EAUTH;
	return 0;
}

int warp_pong_rewrite(uint8_t *pkt, size_t len, const uint8_t pinger_cid[WARP_CID_LEN])
{
	if (len < WARP_PING_LEN)
		return -WARP_ETRUNCATED;
	if (len > WARP_PING_LEN)
		return -WARP_ETRAILING;
	if ((pkt[0] & WARP_HDR_MARK_MASK) != WARP_HDR_MARK)
		return -WARP_EMALFORMED;
	if (((pkt[0] & WARP_HDR_VER_MASK) >> WARP_HDR_VER_SHIFT) != WARP_WIRE_VERSION)
		return -WARP_EVERSION;
	if ((pkt[0] & WARP_HDR_TYPE_MASK) != WARP_PKT_PING)
		return -WARP_ESTATE;
	pkt[0] = (uint8_t)((pkt[0] & ~WARP_HDR_TYPE_MASK) | WARP_PKT_PONG);
	memcpy(pkt + WARP_CID_OFF, pinger_cid, WARP_CID_LEN);
	return 0;
}

void warp_ka_tracker_init(struct warp_ka_tracker *t, uint64_t window_ns)
{
	memset(t, 0, sizeof(*t));
	t->window_ns = window_ns ? window_ns : DEFAULT_WINDOW_NS;
}

void warp_ka_ping(struct warp_ka_tracker *t, const uint8_t key[WARP_KA_KEY_LEN],
		  const uint8_t peer_cid[WARP_CID_LEN], uint64_t now_ns, uint8_t out[WARP_PING_LEN])
{
	uint8_t nonce[WARP_PING_NONCE_LEN];
	unsigned int i = t->next;

	warp_random(nonce, sizeof(nonce));
	warp_ping_build(out, key, peer_cid, t->seq++, nonce);
	memcpy(t->slot[i].body, out + WARP_HDR_LEN, PING_BODY_LEN);
	t->slot[i].sent_ns = now_ns;
	t->slot[i].live = true;
	t->slot[i].answered = false;
	t->next = (i + 1) % WARP_KA_TRACK;
}

int warp_ka_pong(struct warp_ka_tracker *t, const uint8_t *pkt, size_t len,
		 const uint8_t local_cid[WARP_CID_LEN], uint64_t now_ns, uint64_t *rtt_ns)
{
	struct warp_pkt_hdr h;
	int err = check_fixed(pkt, len, WARP_PKT_PONG, WARP_PING_LEN, &h);
	int hit = -1, replay = -1;

	if (err)
		return err;
	if (memcmp(h.cid, local_cid, WARP_CID_LEN))
		return -WARP_ENOTFOUND;
	/* Compare against every slot so timing says nothing about which one matched. */
	for (int i = 0; i < WARP_KA_TRACK; i++) {
		bool eq = warp_ct_equal(t->slot[i].body, pkt + WARP_HDR_LEN, PING_BODY_LEN);

		if (eq && t->slot[i].live && now_ns - t->slot[i].sent_ns <= t->window_ns &&
		    now_ns >= t->slot[i].sent_ns)
			hit = i;
		else if (eq && t->slot[i].answered)
			replay = i;
	}
	if (hit < 0)
		return replay >= 0 ? -WARP_EREPLAY : -WARP_EAUTH;
	t->slot[hit].live = false;
	t->slot[hit].answered = true;
	if (rtt_ns)
		*rtt_ns = now_ns - t->slot[hit].sent_ns;
	return 0;
}

/* ---- punch probes ---- */

static void probe_role_key(uint8_t out[32], const uint8_t secret[32], enum warp_probe_role role)
{
	static const char label[] = "warpgate probe";
	uint8_t msg[sizeof(label)];

	memcpy(msg, label, sizeof(label) - 1);
	msg[sizeof(label) - 1] = (uint8_t)role;
	crypto_generichash(out, 32, msg, sizeof(msg), secret, WARP_PROBE_SECRET_LEN);
}

void warp_probe_keys_init(struct warp_probe_keys *k, const uint8_t secret[WARP_PROBE_SECRET_LEN],
			  enum warp_probe_role my_role)
{
	enum warp_probe_role peer =
		my_role == WARP_PROBE_CONNECTOR ? WARP_PROBE_LISTENER : WARP_PROBE_CONNECTOR;

	probe_role_key(k->mine, secret, my_role);
	probe_role_key(k->peer, secret, peer);
}

void warp_probe_keys_wipe(struct warp_probe_keys *k)
{
	sodium_memzero(k, sizeof(*k));
}

static void probe_fill(uint8_t out[WARP_PROBE_LEN], uint8_t type, const uint8_t key[32],
		       const uint8_t cid[WARP_CID_LEN], uint64_t pn, const uint8_t *nonce)
{
	struct warp_pkt_hdr h = {.type = type, .pn = pn};

	memcpy(h.cid, cid, WARP_CID_LEN);
	warp_hdr_encode(out, &h);
	memmove(out + WARP_HDR_LEN, nonce, WARP_PROBE_NONCE_LEN);
	mac16(out + WARP_HDR_LEN + WARP_PROBE_NONCE_LEN, key, out,
	      WARP_HDR_LEN + WARP_PROBE_NONCE_LEN);
}

void warp_probe_build(uint8_t out[WARP_PROBE_LEN], const struct warp_probe_keys *k,
		      const uint8_t cid[WARP_CID_LEN], uint64_t pn,
		      const uint8_t nonce[WARP_PROBE_NONCE_LEN])
{
	probe_fill(out, WARP_PKT_PROBE, k->mine, cid, pn, nonce);
}

static int probe_check(const uint8_t *pkt, size_t len, uint8_t type, const uint8_t key[32])
{
	struct warp_pkt_hdr h;
	uint8_t mac[WARP_PROBE_AUTH_LEN];
	int err = check_fixed(pkt, len, type, WARP_PROBE_LEN, &h);

	if (err)
		return err;
	mac16(mac, key, pkt, WARP_HDR_LEN + WARP_PROBE_NONCE_LEN);
	if (crypto_verify_16(mac, pkt + WARP_HDR_LEN + WARP_PROBE_NONCE_LEN))
		return -WARP_EAUTH;
	return 0;
}

int warp_probe_verify(const uint8_t *pkt, size_t len, const struct warp_probe_keys *k)
{
	return probe_check(pkt, len, WARP_PKT_PROBE, k->peer);
}

int warp_probe_reply_build(uint8_t out[WARP_PROBE_LEN], const struct warp_probe_keys *k,
			   const uint8_t *probe, size_t probe_len, const uint8_t cid[WARP_CID_LEN],
			   uint64_t pn)
{
	uint8_t nonce[WARP_PROBE_NONCE_LEN];
	int err = warp_probe_verify(probe, probe_len, k);

	if (err)
		return err;
	memcpy(nonce, probe + WARP_HDR_LEN, sizeof(nonce)); /* out may alias probe */
	probe_fill(out, WARP_PKT_PROBE_REPLY, k->mine, cid, pn, nonce);
	return 0;
}

int warp_probe_reply_verify(const uint8_t *pkt, size_t len, const struct warp_probe_keys *k,
			    const uint8_t nonce[WARP_PROBE_NONCE_LEN])
{
	int err = probe_check(pkt, len, WARP_PKT_PROBE_REPLY, k->peer);

	if (err)
		return err;
	if (!warp_ct_equal(pkt + WARP_HDR_LEN, nonce, WARP_PROBE_NONCE_LEN))
		return -WARP_EAUTH;
	return 0;
}
