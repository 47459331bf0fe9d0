/* SPDX-License-Identifier: MIT */
/*
 * Pipe session: the keys of a finished handshake put to work.  Sans-IO like the handshake:
 * bytes in, bytes out, time passed in as now_ns (CLOCK_MONOTONIC).
 *
 * Packets: DATA, ACK and CLOSE are sealed with ChaCha20-Poly1305; the 20-byte header is the
 * additional data and the nonce is 0^32 || packet number (64-bit, big-endian).  Each
 * direction has its own key and its own monotonic packet numbers; the receiver keeps a
 * 2048-packet replay window.  Keys are updated QUIC-style: the header's key-phase bit flips,
 * the new key is HKDF-Expand(old key, "key update"), the receiver follows a flip it can
 * authenticate (and flips its own sending key with it), and keeps the previous key for a
 * grace period for packets reordered around the flip.  A side starts an update only after
 * it has received a packet in its current phase, so the two phases never drift more than one
 * step apart.  A rejected packet changes nothing but the statistics counters.
 *
 * Integration (see handshake.h for how a session comes to be):
 *
 *	s = warp_session_new(hs, NULL, now);	then free hs; local CID -> s in the CID table
 *	    warp_session_local_cid(s): CID on packets we receive (the table key)
 *	    warp_session_peer_cid(s):  CID the peer chose (keepalive map, demux on its side)
 *	    warp_session_peer_identity(s): the authenticated 33-byte peer key
 *	send:     n = warp_session_seal(s, WARP_PKT_DATA, payload, len, out, cap, now)
 *	receive:  look the CID up (warp_pkt_cid()), then by type:
 *	    DATA, ACK, CLOSE:  n = warp_session_open(s, pkt, len, buf, cap, now, &info)
 *	        n > 0: hand the payload to the stream engine; n == 0: a bare acknowledgement
 *	        (handshake confirmation), nothing to deliver; n < 0: drop the packet, nothing
 *	        else to do (the error says why: -WARP_EAUTH forged or damaged, -WARP_EREPLAY,
 *	        -WARP_ESTALE too old, -WARP_ENOTFOUND other CID, -WARP_ESTATE wrong type, ...)
 *	    PING:  warp_session_answer_ping(s, pkt, len) == 0 -> send pkt back (now a PONG)
 *	    PONG:  warp_session_pong(s, pkt, len, now, &rtt)
 *	    HS_*:  n = warp_session_hs_recv(s, pkt, len, now, out, cap): late handshake packets;
 *	        n > 0: send out (the responder re-confirms a retransmitted FINISH)
 *	timer:    at warp_session_next_timeout(s), n = warp_session_poll(s, now, out, cap) until
 *	          it returns 0: the initiator retransmits FINISH until the responder is heard
 *	          from, the responder sends its confirmation; -ETIMEDOUT: the responder never
 *	          confirmed, close the pipe.
 *	keepalive: warp_session_ping(s, now, out) whenever the pipe wants one.
 *
 * Install the kernel keepalive entry (local CID -> peer CID) only once
 * warp_session_confirmed(s) is true; until then pings prove nothing.
 */
#ifndef WARP_PIPE_SESSION_H
#define WARP_PIPE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/identity.h>
#include <warpgate/wire.h>

#include "pipe/frame.h"
#include "pipe/handshake.h"

#define WARP_SESSION_OVERHEAD (WARP_HDR_LEN + WARP_TAG_LEN)
#define WARP_REPLAY_WINDOW    2048

/* Zero fields take the defaults. */
struct warp_session_cfg {
	uint64_t rekey_packets;	 /* update the sending key after this many packets: 2^60 */
	uint64_t rekey_bytes;	 /* ... or payload bytes: 2^40 */
	uint64_t rekey_ns;	 /* ... or this long: 120 s */
	uint64_t prev_key_ns;	 /* keep the previous receive key this long after a flip: 5 s */
	uint64_t ping_window_ns; /* a pong must come back within this: 30 s */
};

struct warp_session_stats {
	uint64_t sealed, opened;	     /* packets */
	uint64_t bytes_sealed, bytes_opened; /* payload bytes */
	uint64_t rej_auth, rej_replay, rej_stale, rej_other;
	uint64_t send_phase, recv_phase; /* key updates so far, per direction */
	uint64_t next_pn;		 /* next packet number we send */
	uint64_t rx_top;		 /* highest packet number accepted */
};

struct warp_rx_info {
	uint8_t type; /* WARP_PKT_DATA, _ACK or _CLOSE */
	uint64_t pn;
	bool key_updated; /* this packet moved the receive key forward */
};

struct warp_session;

/* From a handshake in WARP_HS_DONE (-> errno EINVAL otherwise).  cfg may be NULL. */
struct warp_session *warp_session_new(const struct warp_hs *hs, const struct warp_session_cfg *cfg,
				      uint64_t now_ns);
/* Same, from a result copied out with warp_hs_result() (tests, benchmarks). */
struct warp_session *warp_session_from_result(const struct warp_hs_result *res,
					      const struct warp_session_cfg *cfg, uint64_t now_ns);
/* Wipes every key. */
void warp_session_free(struct warp_session *s);

/*
 * Seals payload into out as a packet of the given type (DATA, ACK or CLOSE; else -EINVAL).
 * Returns the packet length (len + WARP_SESSION_OVERHEAD), -EMSGSIZE when cap or
 * WARP_PKT_MAX is too small, -WARP_ERANGE when packet numbers are exhausted.  payload may
 * be out + WARP_HDR_LEN (in place).  Updates the sending key first when a limit is due.
 */
int warp_session_seal(struct warp_session *s, uint8_t type, const void *payload, size_t len,
		      uint8_t *out, size_t cap, uint64_t now_ns);

/*
 * Authenticates and decrypts a DATA, ACK or CLOSE packet into out (cap >= len -
 * WARP_SESSION_OVERHEAD, else -EMSGSIZE); returns the payload length.  Errors:
 * -WARP_ETRUNCATED, -WARP_EMALFORMED, -WARP_EVERSION (header), -WARP_ESTATE (not a sealed
 * type), -WARP_ENOTFOUND (CID is not ours), -WARP_EREPLAY (seen), -WARP_ESTALE (older than
 * the window, or from a key phase already dropped), -WARP_EAUTH (forged or damaged).
 * out may be pkt + WARP_HDR_LEN (in place; costs a second MAC pass); a rejected packet
 * leaves the input intact.
 */
int warp_session_open(struct warp_session *s, const uint8_t *pkt, size_t len, uint8_t *out,
		      size_t cap, uint64_t now_ns, struct warp_rx_info *info);

/* Late handshake packets routed here by CID.  Returns the length of a reply written to out
 * (cap >= WARP_SESSION_OVERHEAD), 0 when the packet is ignored, or a header error. */
int warp_session_hs_recv(struct warp_session *s, const uint8_t *pkt, size_t len, uint64_t now_ns,
			 uint8_t *out, size_t cap);

/* Absolute deadline for warp_session_poll(); UINT64_MAX: none. */
uint64_t warp_session_next_timeout(const struct warp_session *s);
/* Timer work.  Returns the length of a packet written to out (send it and call again), 0 when
 * there is nothing more, or -ETIMEDOUT once FINISH has gone unanswered for good.
 * cap >= WARP_HS_FINISH_LEN. */
int warp_session_poll(struct warp_session *s, uint64_t now_ns, uint8_t *out, size_t cap);

/* Starts a key update now: 0, or -EAGAIN while the peer has not caught up with the last one. */
int warp_session_key_update(struct warp_session *s, uint64_t now_ns);

/* ---- keepalive ---- */

/* A fresh authenticated ping for the peer.  Returns WARP_PING_LEN. */
int warp_session_ping(struct warp_session *s, uint64_t now_ns, uint8_t out[WARP_PING_LEN]);
/* Accepts a pong that echoes one of our recent pings (0, *rtt_ns set), else -WARP_EAUTH
 * (forged, or echo of nothing recent), -WARP_EREPLAY (already answered) or a header error. */
int warp_session_pong(struct warp_session *s, const uint8_t *pkt, size_t len, uint64_t now_ns,
		      uint64_t *rtt_ns);
/* Verifies the peer's ping and rewrites it in place into the pong to send back (the same
 * bytes the kernel would produce).  0, or an error from warp_ping_verify(). */
int warp_session_answer_ping(struct warp_session *s, uint8_t *pkt, size_t len);

/* ---- close ---- */

/* CLOSE payload: 4-byte big-endian error code (positive errno or WARP_E* value; 0 = normal
 * close), then an optional UTF-8 reason. */
int warp_session_close(struct warp_session *s, int err, const char *reason, uint8_t *out,
		       size_t cap, uint64_t now_ns);
/* The negative error code carried by a CLOSE payload (0 for a normal close). */
int warp_close_code(const uint8_t *payload, size_t len);

/* ---- accessors ---- */

const uint8_t *warp_session_local_cid(const struct warp_session *s);
const uint8_t *warp_session_peer_cid(const struct warp_session *s);
const uint8_t *warp_session_peer_identity(const struct warp_session *s);
enum warp_hs_role warp_session_role(const struct warp_session *s);
/* True once the peer has proved it holds the session keys (always, for the responder). */
bool warp_session_confirmed(const struct warp_session *s);
void warp_session_stats(const struct warp_session *s, struct warp_session_stats *st);

/* Keying material for other protocols (e.g. a probe secret for a new path): HKDF-Expand of
 * the session's exporter secret with label and context.  Both sides get the same bytes. */
int warp_session_export(const struct warp_session *s, const char *label, const uint8_t *ctx,
			size_t ctx_len, uint8_t *out, size_t len);

#endif
