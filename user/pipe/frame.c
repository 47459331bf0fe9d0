// SPDX-License-Identifier: MIT
/* Packet header codec and the TCP length-prefix deframer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "pipe/frame.h"

bool warp_pkt_is_warp(const void *pkt, size_t len)
{
	return len > 0 && (((const uint8_t *)pkt)[0] & WARP_HDR_MARK_MASK) == WARP_HDR_MARK;
}

static bool type_known(uint8_t type)
{
	return type >= WARP_PKT_HS_INIT && type <= WARP_PKT_HS_RETRY;
}

/* Mark and version only: the part every consumer (demux included) must check. */
static int check_flags(const uint8_t *p, size_t len)
{
	if (len < WARP_HDR_LEN)
		return -WARP_ETRUNCATED;
	if ((p[0] & WARP_HDR_MARK_MASK) != WARP_HDR_MARK)
		return -WARP_EMALFORMED;
	if (((p[0] & WARP_HDR_VER_MASK) >> WARP_HDR_VER_SHIFT) != WARP_WIRE_VERSION)
		return -WARP_EVERSION;
	return 0;
}

int warp_hdr_decode(const void *pkt, size_t len, struct warp_pkt_hdr *hdr)
{
	const uint8_t *p = pkt;
	int err = check_flags(p, len);

	if (err)
		return err;
	if (!type_known(p[0] & WARP_HDR_TYPE_MASK) || (p[1] & ~WARP_PHASE_KEY) || p[2] || p[3])
		return -WARP_EMALFORMED;
	hdr->type = p[0] & WARP_HDR_TYPE_MASK;
	hdr->phase = p[1];
	memcpy(hdr->cid, p + WARP_CID_OFF, WARP_CID_LEN);
	hdr->pn = warp_get_u64(p + WARP_PN_OFF);
	return 0;
}

void warp_hdr_encode(uint8_t out[WARP_HDR_LEN], const struct warp_pkt_hdr *hdr)
{
	out[0] = WARP_HDR_FLAGS(hdr->type & WARP_HDR_TYPE_MASK);
	out[1] = hdr->phase & WARP_PHASE_KEY;
	out[2] = 0;
	out[3] = 0;
	memcpy(out + WARP_CID_OFF, hdr->cid, WARP_CID_LEN);
	warp_put_u64(out + WARP_PN_OFF, hdr->pn);
}

size_t warp_pkt_min_len(uint8_t type)
{
	switch (type) {
	case WARP_PKT_HS_INIT:
		return WARP_HS_INIT_LEN;
	case WARP_PKT_HS_RESP:
		return WARP_HS_RESP_LEN;
	case WARP_PKT_HS_FINISH:
		return WARP_HS_FINISH_LEN;
	case WARP_PKT_DATA:
	case WARP_PKT_ACK:
	case WARP_PKT_CLOSE:
		return WARP_SEALED_MIN_LEN;
	case WARP_PKT_PING:
	case WARP_PKT_PONG:
		return WARP_PING_LEN;
	case WARP_PKT_PROBE:
	case WARP_PKT_PROBE_REPLY:
		return WARP_PROBE_LEN;
	case WARP_PKT_HS_RETRY:
		return WARP_HS_RETRY_LEN;
	default:
		return 0;
	}
}

bool warp_pkt_fixed_len(uint8_t type)
{
	return type_known(type) && type != WARP_PKT_DATA && type != WARP_PKT_ACK &&
	       type != WARP_PKT_CLOSE;
}

int warp_pkt_check(const void *pkt, size_t len, struct warp_pkt_hdr *hdr)
{
	int err = warp_hdr_decode(pkt, len, hdr);

	if (err)
		return err;
	if (len < warp_pkt_min_len(hdr->type))
		return -WARP_ETRUNCATED;
	if (len > WARP_PKT_MAX ||
	    (warp_pkt_fixed_len(hdr->type) && len != warp_pkt_min_len(hdr->type)))
		return -WARP_ETRAILING;
	return 0;
}

int warp_pkt_cid(const void *pkt, size_t len, uint8_t cid[WARP_CID_LEN])
{
	int err = check_flags(pkt, len);

	if (err)
		return err;
	memcpy(cid, (const uint8_t *)pkt + WARP_CID_OFF, WARP_CID_LEN);
	return 0;
}

const char *warp_pkt_type_name(uint8_t type)
{
	static const char *const names[] = {
		[WARP_PKT_HS_INIT] = "HS_INIT",
		[WARP_PKT_HS_RESP] = "HS_RESP",
		[WARP_PKT_HS_FINISH] = "HS_FINISH",
		[WARP_PKT_DATA] = "DATA",
		[WARP_PKT_ACK] = "ACK",
		[WARP_PKT_PING] = "PING",
		[WARP_PKT_PONG] = "PONG",
		[WARP_PKT_CLOSE] = "CLOSE",
		[WARP_PKT_PROBE] = "PROBE",
		[WARP_PKT_PROBE_REPLY] = "PROBE_REPLY",
		[WARP_PKT_HS_RETRY] = "HS_RETRY",
	};

	return type_known(type) ? names[type] : "?";
}

/* ---- TCP framing ---- */

int warp_tcp_prefix(uint8_t out[WARP_TCP_PREFIX_LEN], size_t len)
{
	if (len > WARP_PKT_MAX)
		return -EMSGSIZE;
	warp_put_u16(out, (uint16_t)len);
	return 0;
}

int warp_tcp_frame(uint8_t *out, size_t cap, const void *pkt, size_t len)
{
	if (len > WARP_PKT_MAX || cap < len + WARP_TCP_PREFIX_LEN)
		return -EMSGSIZE;
	warp_put_u16(out, (uint16_t)len);
	memmove(out + WARP_TCP_PREFIX_LEN, pkt, len);
	return (int)(len + WARP_TCP_PREFIX_LEN);
}

struct warp_deframer {
	size_t max_frame;
	size_t have; /* bytes of the current frame in buf (prefix excluded) */
	size_t want; /* its length once the prefix is known */
	uint8_t pfx[WARP_TCP_PREFIX_LEN];
	size_t pfx_have;
	int err;       /* latched stream error */
	uint8_t buf[]; /* max_frame bytes */
};

struct warp_deframer *warp_deframer_new(size_t max_frame)
{
	struct warp_deframer *d;

	if (!max_frame)
		max_frame = WARP_PKT_MAX;
	if (max_frame < WARP_HDR_LEN || max_frame > WARP_PKT_MAX) {
		errno = EINVAL;
		return NULL;
	}
	d = calloc(1, sizeof(*d) + max_frame);
	if (!d)
		return NULL;
	d->max_frame = max_frame;
	return d;
}

void warp_deframer_free(struct warp_deframer *d)
{
	free(d);
}

size_t warp_deframer_pending(const struct warp_deframer *d)
{
	return d->pfx_have + d->have;
}

/* Validates a freshly read length; latches the error that ends the stream. */
static int set_want(struct warp_deframer *d, size_t want)
{
	if (want > d->max_frame)
		d->err = -EMSGSIZE;
	else if (want < WARP_HDR_LEN)
		d->err = -WARP_EMALFORMED;
	else
		d->want = want;
	return d->err;
}

int warp_deframer_feed(struct warp_deframer *d, const uint8_t *in, size_t len, size_t *used,
		       const uint8_t **pkt, size_t *pkt_len)
{
	size_t off = 0, n;

	*used = 0;
	if (d->err)
		return d->err;
	/* Fast path: nothing buffered and the whole frame is in the input. */
	if (d->pfx_have == 0 && len >= WARP_TCP_PREFIX_LEN) {
		size_t flen = warp_get_u16(in);

		if (set_want(d, flen))
			return d->err;
		if (len - WARP_TCP_PREFIX_LEN >= flen) {
			*pkt = in + WARP_TCP_PREFIX_LEN;
			*pkt_len = flen;
			*used = WARP_TCP_PREFIX_LEN + flen;
			d->want = 0;
			return 1;
		}
		memcpy(d->pfx, in, WARP_TCP_PREFIX_LEN);
		d->pfx_have = WARP_TCP_PREFIX_LEN;
		off = WARP_TCP_PREFIX_LEN;
	}
	while (d->pfx_have < WARP_TCP_PREFIX_LEN && off < len) {
		d->pfx[d->pfx_have++] = in[off++];
		if (d->pfx_have == WARP_TCP_PREFIX_LEN && set_want(d, warp_get_u16(d->pfx))) {
			*used = off;
			return d->err;
		}
	}
	if (d->pfx_have < WARP_TCP_PREFIX_LEN) {
		*used = off;
		return 0;
	}
	n = d->want - d->have;
	if (n > len - off)
		n = len - off;
	memcpy(d->buf + d->have, in + off, n);
	d->have += n;
	off += n;
	*used = off;
	if (d->have < d->want)
		return 0;
	*pkt = d->buf;
	*pkt_len = d->want;
	d->have = 0;
	d->want = 0;
	d->pfx_have = 0;
	return 1;
}
