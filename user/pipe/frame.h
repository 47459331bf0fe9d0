/* SPDX-License-Identifier: MIT */
/*
 * Packet header codec and TCP framing (layout: include/warpgate/wire.h,
 * docs/protocol-handshake.md).
 *
 * Demux for the integrator: every warpgate packet carries, at a fixed offset, the connection
 * ID chosen by its receiver.  warp_pkt_cid() pulls it out after the cheapest sanity checks;
 * look it up in the table of local CIDs (handshakes in progress and sessions) and hand the
 * packet to the owner.  HS_INIT is the exception, routed by type before the lookup: it opens
 * a handshake (see handshake.h).  Any other packet whose CID is unknown is dropped.
 *
 * On TCP every packet is preceded by its length as a 2-byte big-endian integer.  Writers use
 * warp_tcp_frame() (or warp_tcp_prefix() with writev); readers push whatever recv() returned
 * into a warp_deframer, in chunks of any size, and get whole packets back.
 */
#ifndef WARP_PIPE_FRAME_H
#define WARP_PIPE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/wire.h>

/* Largest packet: what a 2-byte TCP length prefix can describe. */
#define WARP_PKT_MAX	    65535
#define WARP_TCP_PREFIX_LEN 2

/* Packet sizes that follow from the handshake layout (docs/protocol-handshake.md). */
#define WARP_SEALED_MIN_LEN (WARP_HDR_LEN + WARP_TAG_LEN) /* DATA, ACK, CLOSE: at least */
#define WARP_HS_INIT_LEN    192 /* padded so no answer is larger than the INIT */
#define WARP_HS_RESP_LEN    173 /* hdr, cid, ephemeral, sealed{pubkey, sig} */
#define WARP_HS_FINISH_LEN  133 /* hdr, sealed{pubkey, sig} */
#define WARP_HS_RETRY_LEN   68	/* hdr, echoed ephemeral, cookie */

/* Decoded header.  type is enum warp_pkt_type; phase is the whole phase byte. */
struct warp_pkt_hdr {
	uint8_t type;
	uint8_t phase;
	uint8_t cid[WARP_CID_LEN];
	uint64_t pn;
};

/* True when the first byte carries the warpgate mark (0b11......): tells warpgate packets
 * from STUN (0b00) and TURN ChannelData (0b01) on a shared socket.  No other check. */
bool warp_pkt_is_warp(const void *pkt, size_t len);

/* Strict header parse: -WARP_ETRUNCATED when shorter than a header, -WARP_EMALFORMED for a
 * missing mark, non-zero reserved bytes or phase bits other than the key phase, or an unknown
 * type, -WARP_EVERSION for another wire version.  Does not look at the payload. */
int warp_hdr_decode(const void *pkt, size_t len, struct warp_pkt_hdr *hdr);

/* Writes the 20-byte header. */
void warp_hdr_encode(uint8_t out[WARP_HDR_LEN], const struct warp_pkt_hdr *hdr);

/* warp_hdr_decode() plus the length rule of the type (exact for fixed-size packets, a minimum
 * for sealed ones, at most WARP_PKT_MAX): -WARP_ETRUNCATED or -WARP_ETRAILING otherwise. */
int warp_pkt_check(const void *pkt, size_t len, struct warp_pkt_hdr *hdr);

/* The receiver-chosen connection ID, for demux.  0, or -WARP_ETRUNCATED / -WARP_EMALFORMED
 * (not a warpgate packet) / -WARP_EVERSION. */
int warp_pkt_cid(const void *pkt, size_t len, uint8_t cid[WARP_CID_LEN]);

/* Minimum length of a packet of the given type (0 for an unknown type), and whether the type
 * has a fixed length (then the minimum is the exact length). */
size_t warp_pkt_min_len(uint8_t type);
bool warp_pkt_fixed_len(uint8_t type);

/* "HS_INIT", "DATA", ...; "?" for an unknown type. */
const char *warp_pkt_type_name(uint8_t type);

/* ---- TCP framing ---- */

/* Writes the 2-byte prefix for a packet of len bytes: 0 or -EMSGSIZE (len > WARP_PKT_MAX). */
int warp_tcp_prefix(uint8_t out[WARP_TCP_PREFIX_LEN], size_t len);

/* Writes prefix + packet into out; returns the total length or -EMSGSIZE. */
int warp_tcp_frame(uint8_t *out, size_t cap, const void *pkt, size_t len);

struct warp_deframer;

/* max_frame: largest packet accepted (WARP_HDR_LEN..WARP_PKT_MAX; 0 means WARP_PKT_MAX). */
struct warp_deframer *warp_deframer_new(size_t max_frame);
void warp_deframer_free(struct warp_deframer *d);

/*
 * Consumes input until one packet is complete.  Returns 1 with *pkt and *pkt_len set (valid until
 * the next call; it points into `in` when the frame arrived in one piece, else into the
 * deframer's buffer), 0 when all of `in` was consumed without completing a packet, or a
 * negative error that ends the stream: -EMSGSIZE for a length above max_frame,
 * -WARP_EMALFORMED for a length below WARP_HDR_LEN.  The error is latched: later calls return
 * it again.  *used is the number of bytes of `in` consumed; call again with the rest:
 *
 *	while (len) {
 *		rc = warp_deframer_feed(d, in, len, &used, &pkt, &pkt_len);
 *		if (rc < 0) -> close the connection
 *		in += used; len -= used;
 *		if (rc == 1) -> handle pkt
 *	}
 */
int warp_deframer_feed(struct warp_deframer *d, const uint8_t *in, size_t len, size_t *used,
		       const uint8_t **pkt, size_t *pkt_len);

/* Bytes held for an incomplete packet (prefix included). */
size_t warp_deframer_pending(const struct warp_deframer *d);

#endif
