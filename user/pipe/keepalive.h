/* SPDX-License-Identifier: MIT */
/*
 * Keepalive ping/pong and punch probe authenticators.  Pure functions over byte buffers plus
 * a small tracker of outstanding pings; no keys beyond what the caller passes in.
 *
 * Keepalive (per session; warp_session_ping() and friends wrap these with the session's key):
 *   PING = header(type PING, CID = the peer's CID, pn = ping sequence)
 *          || nonce(8) || auth(16),  auth = BLAKE2b-128(key = keepalive key, header || nonce)
 *   PONG = the same 44 bytes with the type nibble set to PONG and the CID replaced by the
 *          pinger's CID; nothing else changes, so the kernel can answer without keys.
 *   The pinger accepts a pong only when its 24 body bytes equal a ping it sent recently
 *   (constant-time compare); a userspace answerer verifies the ping's auth first.
 *
 * Punch probes (per connection attempt; the 32-byte secret travels over signalling, or comes
 * from warp_session_export() for later path checks):
 *   PROBE       = header(type PROBE)       || nonce(12) || auth(16)
 *   PROBE_REPLY = header(type PROBE_REPLY) || same nonce || own auth
 *   auth = BLAKE2b-128(key = BLAKE2b-256(key = secret, "warpgate probe" || sender role),
 *                      header || nonce)
 *   The sender's role is in the key, so a probe reflected back at its sender does not verify;
 *   the type is in the header, so a probe does not pass for a reply.
 */
#ifndef WARP_PIPE_KEEPALIVE_H
#define WARP_PIPE_KEEPALIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/wire.h>

#define WARP_KA_KEY_LEN	      32
#define WARP_PROBE_SECRET_LEN 32

/* Builds a ping into out (WARP_PING_LEN bytes).  peer_cid is the CID the peer chose. */
void warp_ping_build(uint8_t out[WARP_PING_LEN], const uint8_t key[WARP_KA_KEY_LEN],
		     const uint8_t peer_cid[WARP_CID_LEN], uint64_t pn,
		     const uint8_t nonce[WARP_PING_NONCE_LEN]);

/* Checks a received ping: exact length, header, type PING, CID == local_cid, auth.
 * 0, -WARP_ETRUNCATED/-WARP_ETRAILING/-WARP_EMALFORMED/-WARP_EVERSION, -WARP_ESTATE (not a
 * ping), -WARP_ENOTFOUND (other CID), -WARP_EAUTH. */
int warp_ping_verify(const uint8_t *pkt, size_t len, const uint8_t key[WARP_KA_KEY_LEN],
		     const uint8_t local_cid[WARP_CID_LEN]);

/*
 * The keyless ping -> pong rewrite, byte for byte what the XDP responder does:
 * pkt[0] = (pkt[0] & 0xf0) | PONG; pkt[4..12) = pinger_cid; everything else unchanged.
 * Checks only what the kernel checks: length == WARP_PING_LEN, mark, version, type PING.
 * 0, or -WARP_ETRAILING/-WARP_ETRUNCATED, -WARP_EMALFORMED, -WARP_EVERSION, -WARP_ESTATE.
 */
int warp_pong_rewrite(uint8_t *pkt, size_t len, const uint8_t pinger_cid[WARP_CID_LEN]);

/* Pings awaiting a pong.  A pong is accepted once, within window_ns of its ping. */
#define WARP_KA_TRACK 8

struct warp_ka_tracker {
	struct {
		uint8_t body[WARP_PING_NONCE_LEN + WARP_PING_AUTH_LEN];
		uint64_t sent_ns;
		bool live;     /* sent, not yet answered */
		bool answered; /* answered once: a second copy is a replay */
	} slot[WARP_KA_TRACK];
	unsigned int next;
	uint64_t window_ns;
	uint64_t seq;
};

/* window_ns 0 means 30 s. */
void warp_ka_tracker_init(struct warp_ka_tracker *t, uint64_t window_ns);

/* Builds a fresh ping (random nonce, next sequence number) and remembers it. */
void warp_ka_ping(struct warp_ka_tracker *t, const uint8_t key[WARP_KA_KEY_LEN],
		  const uint8_t peer_cid[WARP_CID_LEN], uint64_t now_ns,
		  uint8_t out[WARP_PING_LEN]);

/* Matches a pong: exact length, header, type PONG, CID == local_cid, echo of a live ping.
 * 0 with *rtt_ns set; -WARP_EAUTH for an echo of nothing we sent (or sent too long ago),
 * -WARP_EREPLAY for a second pong to the same ping, or a header error as above. */
int warp_ka_pong(struct warp_ka_tracker *t, const uint8_t *pkt, size_t len,
		 const uint8_t local_cid[WARP_CID_LEN], uint64_t now_ns, uint64_t *rtt_ns);

/* ---- punch probes ---- */

enum warp_probe_role {
	WARP_PROBE_CONNECTOR = 0,
	WARP_PROBE_LISTENER = 1,
};

struct warp_probe_keys {
	uint8_t mine[32]; /* authenticates what we send */
	uint8_t peer[32]; /* authenticates what the peer sends */
};

void warp_probe_keys_init(struct warp_probe_keys *k, const uint8_t secret[WARP_PROBE_SECRET_LEN],
			  enum warp_probe_role my_role);
void warp_probe_keys_wipe(struct warp_probe_keys *k);

void warp_probe_build(uint8_t out[WARP_PROBE_LEN], const struct warp_probe_keys *k,
		      const uint8_t cid[WARP_CID_LEN], uint64_t pn,
		      const uint8_t nonce[WARP_PROBE_NONCE_LEN]);

/* Checks a probe from the peer (type PROBE, exact length, auth).  Header errors as for pings,
 * -WARP_EAUTH for a bad authenticator. */
int warp_probe_verify(const uint8_t *pkt, size_t len, const struct warp_probe_keys *k);

/* Verifies a probe from the peer, then builds the reply: same nonce, header with the given CID
 * and pn, our authenticator. */
int warp_probe_reply_build(uint8_t out[WARP_PROBE_LEN], const struct warp_probe_keys *k,
			   const uint8_t *probe, size_t probe_len, const uint8_t cid[WARP_CID_LEN],
			   uint64_t pn);

/* Checks a reply: type PROBE_REPLY, exact length, the nonce we sent (constant time), the
 * peer's authenticator.  -WARP_EAUTH when either does not match. */
int warp_probe_reply_verify(const uint8_t *pkt, size_t len, const struct warp_probe_keys *k,
			    const uint8_t nonce[WARP_PROBE_NONCE_LEN]);

#endif
