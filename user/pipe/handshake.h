/* SPDX-License-Identifier: MIT */
/*
 * Pipe handshake: a sans-IO SIGMA-I exchange.  X25519 ephemerals give the keys, each side's
 * secp256k1 identity signs the transcript, identities travel encrypted (the initiator's only
 * after it has authenticated the responder).  Wire format and key schedule:
 * docs/protocol-handshake.md.
 *
 *   INIT    I -> R   cid_i, e_i, random, timestamp [, cookie], zero padding   (cleartext)
 *   RESP    R -> I   cid_r, e_r, AEAD{id_r, sig_r(transcript)}
 *   FINISH  I -> R   AEAD{id_i, sig_i(transcript)}
 *   RETRY   R -> I   e_i echo, cookie              (only in cookie mode, instead of RESP)
 *
 * Nothing here touches a socket or a clock: packets go in and out as bytes, time comes in as
 * now_ns (CLOCK_MONOTONIC, e.g. warp_time_ns()), and warp_hs_next_timeout() says when to call
 * warp_hs_poll() again.  Buffers passed as `out` must hold WARP_HS_OUT_MAX bytes.
 *
 * Initiator (connector):
 *	cfg = { .role = WARP_HS_INITIATOR, .identity = me, .expected_peer = key_from_record,
 *		.wall_ms = warp_wall_ms() };
 *	hs = warp_hs_new(&cfg, now);
 *	register warp_hs_local_cid(hs) -> hs in the CID table
 *	loop:
 *	    on timer (warp_hs_next_timeout(hs)):  rc = warp_hs_poll(hs, now, out, &n);
 *	        rc == 0 && n: send out (the first call sends the INIT; later ones retransmit)
 *	        rc < 0:       failed (-ETIMEDOUT), free hs
 *	    on a packet whose CID is ours:         rc = warp_hs_recv(hs, pkt, len, now, out, &n);
 *	        n: send out (INIT with cookie after a RETRY, FINISH after a RESP)
 *	        rc < 0 and warp_hs_state(hs) != WARP_HS_FAILED: bad packet, ignore it
 *	        warp_hs_state(hs) == WARP_HS_FAILED: give up with warp_hs_error(hs)
 *	                          (-WARP_EIDENTITY: the peer is not who the record says)
 *	    warp_hs_state(hs) == WARP_HS_DONE: s = warp_session_new(hs, ...); free hs; the CID now
 *	        maps to s.  The session retransmits FINISH until the responder answers (session.h).
 *
 * Responder (listener), one shared warp_cookie_jar per socket or node:
 *	on an HS_INIT (route by type before the CID lookup: its header CID is zero or one the
 *	listener advertised, never a session's):
 *	    warp_hs_init_peek(pkt, len, &info)          (< 0: drop)
 *	    hs = pending handshake keyed by info.ephemeral?  yes: warp_hs_recv(hs, ...) re-sends
 *	        the cached RESP for a retransmitted INIT; done.
 *	    rc = warp_cookie_check(jar, pkt, len, src_addr, src_addr_len, now, out);
 *	        rc > 0: send the rc-byte HS_RETRY in out, keep no state; rc < 0: drop
 *	    cfg = { .role = WARP_HS_RESPONDER, .identity = me, .policy = allow_list, ... };
 *	    hs = warp_hs_new(&cfg, now); warp_hs_recv(hs, INIT, ...) -> send the RESP
 *	    register hs under info.ephemeral and under warp_hs_local_cid(hs)
 *	on a packet for warp_hs_local_cid(hs): warp_hs_recv(hs, ...)
 *	    DATA before FINISH is refused (-WARP_ESTATE): the responder never accepts data before
 *	    the initiator has proved its identity.
 *	    WARP_HS_DONE: s = warp_session_new(hs, ...); the CID maps to s; call warp_session_poll()
 *	        to send the confirmation.  warp_hs_peer_identity(hs) is the authenticated peer.
 *	    WARP_HS_FAILED after a policy refusal: out holds a sealed CLOSE telling the initiator
 *	        why; send it.  Keep the hs until it expires so duplicates get the same answer.
 *	on timer: warp_hs_poll() returns -ETIMEDOUT once the FINISH is overdue: free hs.
 *
 * Turn cookies on (warp_cookie_jar_set(jar, true)) when handshakes in progress pile up; every
 * new initiator then pays one round trip to prove it owns its source address before the
 * responder spends a Diffie-Hellman and a signature on it.
 */
#ifndef WARP_PIPE_HANDSHAKE_H
#define WARP_PIPE_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/identity.h>
#include <warpgate/wire.h>

#include "pipe/frame.h"

#define WARP_HS_OUT_MAX	   WARP_HS_INIT_LEN /* largest packet warp_hs_* writes */
#define WARP_HS_KEY_LEN	   32
#define WARP_HS_COOKIE_LEN 16

enum warp_hs_role {
	WARP_HS_INITIATOR = 0,
	WARP_HS_RESPONDER = 1,
};

enum warp_hs_state {
	WARP_HS_WAIT_RESP,   /* initiator: INIT sent (or due), waiting for RESP or RETRY */
	WARP_HS_WAIT_INIT,   /* responder: created, waiting for the INIT */
	WARP_HS_WAIT_FINISH, /* responder: RESP sent, waiting for FINISH */
	WARP_HS_DONE,	     /* keys and peer identity available */
	WARP_HS_FAILED,	     /* warp_hs_error() says why */
};

/* Decides whether to talk to an authenticated peer: 0 accepts, a negative errno (e.g.
 * -EACCES) refuses and becomes the handshake's error. */
typedef int (*warp_hs_policy_cb)(const uint8_t peer[WARP_PUBKEY_LEN], void *user);

struct warp_hs_cfg {
	enum warp_hs_role role;
	const struct warp_identity *identity; /* borrowed; must outlive the handshake */
	/* Initiator: the key the peer must prove (name record or address).  A mismatch fails
	 * with -WARP_EIDENTITY.  May be NULL only when a policy callback decides instead. */
	const uint8_t *expected_peer;
	/* Responder (and initiator without expected_peer): NULL accepts everyone. */
	warp_hs_policy_cb policy;
	void *policy_user;
	/* CID the peer must put on packets to us; all-zero picks a random one.  Zero is never
	 * a valid CID: it marks an INIT sent before the initiator knows the responder's. */
	uint8_t local_cid[WARP_CID_LEN];
	/* Initiator: CID for the INIT's header, e.g. one the listener advertised so the kernel
	 * can steer it; zero otherwise. */
	uint8_t init_cid[WARP_CID_LEN];
	/* Wall clock in ms (warp_wall_ms()): the initiator stamps INIT with it; the responder
	 * compares against it when max_skew_ms is set. */
	uint64_t wall_ms;
	uint32_t max_skew_ms;  /* responder: reject INITs stamped further away; 0: no check */
	uint32_t rto_ms;       /* first retransmission after this; doubles; 0: 200 ms */
	uint32_t rto_max_ms;   /* retransmission interval cap; 0: 3200 ms */
	uint32_t max_attempts; /* transmissions of INIT (and of FINISH); 0: 8 */
	uint32_t timeout_ms;   /* whole handshake; 0: 10 s */
	const uint8_t *test_ephemeral; /* tests only: 32-byte X25519 secret; NULL: random */
};

struct warp_hs;

/* NULL + errno: EINVAL for a bad configuration, ENOMEM. */
struct warp_hs *warp_hs_new(const struct warp_hs_cfg *cfg, uint64_t now_ns);
/* Wipes every secret. */
void warp_hs_free(struct warp_hs *hs);

/*
 * Feeds a packet addressed to this handshake.  *out_len is set to the length of a packet to
 * send back (0: none).  Returns 0 when the packet was used (or was a harmless duplicate), else
 * a negative error: a packet that is malformed, forged, stale or of the wrong type leaves the
 * handshake untouched; one that proves a wrong identity or is refused by policy moves it to
 * WARP_HS_FAILED (check warp_hs_state()).
 */
int warp_hs_recv(struct warp_hs *hs, const uint8_t *pkt, size_t len, uint64_t now_ns,
		 uint8_t out[WARP_HS_OUT_MAX], size_t *out_len);

/* Absolute CLOCK_MONOTONIC deadline of the next warp_hs_poll(); UINT64_MAX: none. */
uint64_t warp_hs_next_timeout(const struct warp_hs *hs);

/* Timer work: (re)sends INIT, expires the handshake.  0 with *out_len set (0: nothing to
 * send), or -ETIMEDOUT (now WARP_HS_FAILED). */
int warp_hs_poll(struct warp_hs *hs, uint64_t now_ns, uint8_t out[WARP_HS_OUT_MAX],
		 size_t *out_len);

enum warp_hs_state warp_hs_state(const struct warp_hs *hs);
enum warp_hs_role warp_hs_role(const struct warp_hs *hs);
int warp_hs_error(const struct warp_hs *hs);
const uint8_t *warp_hs_local_cid(const struct warp_hs *hs);
/* The peer's CID: known to the responder from INIT, to the initiator from RESP; else NULL. */
const uint8_t *warp_hs_peer_cid(const struct warp_hs *hs);
/* The authenticated peer identity, once WARP_HS_DONE; else NULL. */
const uint8_t *warp_hs_peer_identity(const struct warp_hs *hs);

/* ---- responder helpers ---- */

struct warp_hs_init_info {
	uint8_t cid[WARP_CID_LEN]; /* the initiator's CID */
	uint8_t ephemeral[32];	   /* identifies the attempt: key for retransmitted INITs */
	uint64_t timestamp_ms;
	bool has_cookie;
};

/* Parses an HS_INIT without any crypto. */
int warp_hs_init_peek(const uint8_t *pkt, size_t len, struct warp_hs_init_info *info);

/*
 * Stateless cookies.  A cookie is BLAKE2b-128 keyed by a per-2-minute secret (derived from a
 * random master) over the source address, the initiator's CID and ephemeral.  Both the
 * current and the previous period's cookies are accepted.  Default: disabled.
 */
struct warp_cookie_jar;

struct warp_cookie_jar *warp_cookie_jar_new(void);
void warp_cookie_jar_free(struct warp_cookie_jar *jar);
void warp_cookie_jar_set(struct warp_cookie_jar *jar, bool enabled);
bool warp_cookie_jar_enabled(const struct warp_cookie_jar *jar);

/*
 * Decides what to do with an INIT that matches no handshake in progress.  addr is the source
 * address in whatever stable encoding the caller uses (e.g. 16-byte IP + 2-byte port).
 * Returns 0: go ahead and create a responder; > 0: a HS_RETRY of that many bytes is in out
 * (send it, keep nothing); < 0: drop (malformed INIT, or -WARP_EAUTH for an invalid or
 * expired cookie).  With cookies disabled every well-formed INIT gets 0.
 */
int warp_cookie_check(const struct warp_cookie_jar *jar, const uint8_t *pkt, size_t len,
		      const void *addr, size_t addr_len, uint64_t now_ns,
		      uint8_t out[WARP_HS_OUT_MAX]);

/* ---- internal to user/pipe: what warp_session_new() takes from a finished handshake ---- */

struct warp_hs_result {
	enum warp_hs_role role;
	uint8_t local_cid[WARP_CID_LEN];
	uint8_t peer_cid[WARP_CID_LEN];
	uint8_t peer_identity[WARP_PUBKEY_LEN];
	uint8_t send_key[WARP_HS_KEY_LEN];
	uint8_t recv_key[WARP_HS_KEY_LEN];
	uint8_t ka_key[WARP_HS_KEY_LEN];
	uint8_t exporter[WARP_HS_KEY_LEN];
	uint8_t finish[WARP_HS_FINISH_LEN]; /* initiator: FINISH, for retransmission */
	uint8_t finish_hash[32];	    /* responder: recognises a retransmitted FINISH */
	uint64_t start_ns;		    /* handshake creation */
	uint64_t finish_sent_ns;	    /* initiator: first FINISH transmission */
	uint32_t rto_ms, rto_max_ms, max_attempts, timeout_ms;
};

/* Copies the result out (0), or -WARP_ESTATE before WARP_HS_DONE.  Wipe it after use. */
int warp_hs_result(const struct warp_hs *hs, struct warp_hs_result *res);

/* HKDF-SHA256 (RFC 5869) pieces shared with the session code. */
void warp_hkdf_extract(uint8_t prk[32], const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
		       size_t ikm_len);
/* out_len <= 255 * 32. */
void warp_hkdf_expand(uint8_t *out, size_t out_len, const uint8_t prk[32], const char *label,
		      const uint8_t *ctx, size_t ctx_len);

#endif
