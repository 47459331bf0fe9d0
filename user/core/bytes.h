/* SPDX-License-Identifier: MIT */
/*
 * Bounds-checked big-endian readers and writers shared by every codec.  A reader or writer
 * latches its first error (-WARP_ETRUNCATED for a short read, -EMSGSIZE for a full writer);
 * later calls do nothing, so a parser checks once at the end, e.g.:
 *
 *	struct warp_rd r = warp_rd_init(buf, len);
 *	uint8_t type = warp_rd_u8(&r);
 *	uint16_t n = warp_rd_u16(&r);
 *	const uint8_t *v = warp_rd_bytes(&r, n);
 *	if (r.err) return r.err;
 */
#ifndef WARP_CORE_BYTES_H
#define WARP_CORE_BYTES_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <warpgate/error.h>

struct warp_rd {
	const uint8_t *p;
	size_t len;
	size_t off;
	int err;
};

struct warp_wr {
	uint8_t *p;
	size_t cap;
	size_t off;
	int err;
};

static inline struct warp_rd warp_rd_init(const void *p, size_t len)
{
	struct warp_rd r = { (const uint8_t *)p, len, 0, 0 };
	return r;
}

static inline size_t warp_rd_left(const struct warp_rd *r)
{
	return r->err ? 0 : r->len - r->off;
}

/* Returns a pointer to the next n bytes and advances, or NULL (and latches the error). */
static inline const uint8_t *warp_rd_bytes(struct warp_rd *r, size_t n)
{
	const uint8_t *p;

	if (r->err)
		return NULL;
	if (n > r->len - r->off) {
		r->err = -WARP_ETRUNCATED;
		return NULL;
	}
	p = r->p + r->off;
	r->off += n;
	return p;
}

static inline int warp_rd_copy(struct warp_rd *r, void *dst, size_t n)
{
	const uint8_t *p = warp_rd_bytes(r, n);

	if (!p)
		return r->err;
	memcpy(dst, p, n);
	return 0;
}

static inline uint8_t warp_rd_u8(struct warp_rd *r)
{
	const uint8_t *p = warp_rd_bytes(r, 1);
	return p ? p[0] : 0;
}

static inline uint16_t warp_rd_u16(struct warp_rd *r)
{
	const uint8_t *p = warp_rd_bytes(r, 2);
	return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

static inline uint32_t warp_rd_u32(struct warp_rd *r)
{
	const uint8_t *p = warp_rd_bytes(r, 4);
	return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

static inline uint64_t warp_rd_u64(struct warp_rd *r)
{
	uint64_t hi = warp_rd_u32(r);
	return hi << 32 | warp_rd_u32(r);
}

/* A sub-reader over the next n bytes (for nested TLVs). */
static inline struct warp_rd warp_rd_sub(struct warp_rd *r, size_t n)
{
	const uint8_t *p = warp_rd_bytes(r, n);
	struct warp_rd s = { p, p ? n : 0, 0, p ? 0 : r->err };
	return s;
}

static inline struct warp_wr warp_wr_init(void *p, size_t cap)
{
	struct warp_wr w = { (uint8_t *)p, cap, 0, 0 };
	return w;
}

/* Reserves n bytes and returns where to write them, or NULL (error latched). */
static inline uint8_t *warp_wr_reserve(struct warp_wr *w, size_t n)
{
	uint8_t *p;

	if (w->err)
		return NULL;
	if (n > w->cap - w->off) {
		w->err = -EMSGSIZE;
		return NULL;
	}
	p = w->p + w->off;
	w->off += n;
	return p;
}

static inline void warp_wr_bytes(struct warp_wr *w, const void *src, size_t n)
{
	uint8_t *p = warp_wr_reserve(w, n);

	if (p && n)
		memcpy(p, src, n);
}

static inline void warp_wr_u8(struct warp_wr *w, uint8_t v)
{
	uint8_t *p = warp_wr_reserve(w, 1);

	if (p)
		p[0] = v;
}

static inline void warp_wr_u16(struct warp_wr *w, uint16_t v)
{
	uint8_t *p = warp_wr_reserve(w, 2);

	if (p) {
		p[0] = (uint8_t)(v >> 8);
		p[1] = (uint8_t)v;
	}
}

static inline void warp_wr_u32(struct warp_wr *w, uint32_t v)
{
	uint8_t *p = warp_wr_reserve(w, 4);

	if (p) {
		p[0] = (uint8_t)(v >> 24);
		p[1] = (uint8_t)(v >> 16);
		p[2] = (uint8_t)(v >> 8);
		p[3] = (uint8_t)v;
	}
}

static inline void warp_wr_u64(struct warp_wr *w, uint64_t v)
{
	warp_wr_u32(w, (uint32_t)(v >> 32));
	warp_wr_u32(w, (uint32_t)v);
}

static inline void warp_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void warp_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void warp_put_u64(uint8_t *p, uint64_t v)
{
	warp_put_u32(p, (uint32_t)(v >> 32));
	warp_put_u32(p + 4, (uint32_t)v);
}

static inline uint16_t warp_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t warp_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t warp_get_u64(const uint8_t *p)
{
	return (uint64_t)warp_get_u32(p) << 32 | warp_get_u32(p + 4);
}

#define WARP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
