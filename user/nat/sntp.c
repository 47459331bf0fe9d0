// SPDX-License-Identifier: MIT
/* SNTP: packet codec, sample arithmetic, server selection, sans-IO query, synced clock. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "sntp"
#include "core/bytes.h"
#include "core/log.h"
#include "core/util.h"
#include "nat/sntp.h"
#include "nat/sockaddr.h"

#define MS		1000000ll
#define MAX_ROOT_DIST	1500000000ull /* 1.5 s (RFC 5905 MAXDIST) */
#define DELAY_TOLERANCE 1000000ll     /* a delay this far below zero is rounding */
#define MAX_TRIES	8

int64_t warp_sntp_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* ---- timestamps ---- */

uint64_t warp_ntp_from_unix_ns(int64_t unix_ns)
{
	int64_t sec = unix_ns / 1000000000ll, rem = unix_ns % 1000000000ll;
	uint64_t frac;

	if (rem < 0) {
		rem += 1000000000ll;
		sec--;
	}
	frac = ((uint64_t)rem << 32) / 1000000000ull;
	/* the seconds field wraps every 2^32 s (era); the arithmetic below is modular */
	return (uint64_t)(sec + (int64_t)WARP_NTP_UNIX_DELTA) << 32 | frac;
}

int64_t warp_ntp_diff_ns(uint64_t a, uint64_t b)
{
	int64_t d = (int64_t)(a - b); /* 32.32, valid within +-68 years */

	return (int64_t)(((__int128)d * 1000000000) >> 32);
}

int64_t warp_ntp_to_unix_ns(uint64_t ts, int64_t pivot_ns)
{
	/* wraps instead of overflowing for absurd inputs */
	return (int64_t)((uint64_t)pivot_ns +
			 (uint64_t)warp_ntp_diff_ns(ts, warp_ntp_from_unix_ns(pivot_ns)));
}

/* ---- packet ---- */

int warp_ntp_encode(const struct warp_ntp_packet *p, uint8_t out[WARP_NTP_LEN])
{
	struct warp_wr w = warp_wr_init(out, WARP_NTP_LEN);

	if (p->li > 3 || p->vn > 7 || p->mode > 7)
		return -EINVAL;
	warp_wr_u8(&w, (uint8_t)(p->li << 6 | p->vn << 3 | p->mode));
	warp_wr_u8(&w, p->stratum);
	warp_wr_u8(&w, (uint8_t)p->poll);
	warp_wr_u8(&w, (uint8_t)p->precision);
	warp_wr_u32(&w, p->root_delay);
	warp_wr_u32(&w, p->root_disp);
	warp_wr_u32(&w, p->refid);
	warp_wr_u64(&w, p->ref);
	warp_wr_u64(&w, p->org);
	warp_wr_u64(&w, p->rec);
	warp_wr_u64(&w, p->xmt);
	return w.err ? w.err : WARP_NTP_LEN;
}

int warp_ntp_decode(const void *buf, size_t len, struct warp_ntp_packet *p)
{
	struct warp_rd r = warp_rd_init(buf, len);
	uint8_t b0;

	if (!buf || len < WARP_NTP_LEN)
		return -WARP_ETRUNCATED;
	/* extension fields and MAC: whole 32-bit words, bounded */
	if ((len - WARP_NTP_LEN) % 4 || len - WARP_NTP_LEN > 1024)
		return -WARP_EMALFORMED;
	b0 = warp_rd_u8(&r);
	p->li = b0 >> 6;
	p->vn = (b0 >> 3) & 7;
	p->mode = b0 & 7;
	p->stratum = warp_rd_u8(&r);
	p->poll = (int8_t)warp_rd_u8(&r);
	p->precision = (int8_t)warp_rd_u8(&r);
	p->root_delay = warp_rd_u32(&r);
	p->root_disp = warp_rd_u32(&r);
	p->refid = warp_rd_u32(&r);
	p->ref = warp_rd_u64(&r);
	p->org = warp_rd_u64(&r);
	p->rec = warp_rd_u64(&r);
	p->xmt = warp_rd_u64(&r);
	return r.err;
}

static uint64_t short_ns(uint32_t v) /* 16.16 seconds */
{
	return ((uint64_t)v * 1000000000ull) >> 16;
}

int warp_ntp_check_reply(const struct warp_ntp_packet *p, uint64_t xmt)
{
	if (p->mode != WARP_NTP_MODE_SERVER)
		return -WARP_EMALFORMED;
	if (p->vn < 1 || p->vn > 4)
		return -WARP_EVERSION;
	/* before anything else: an unmatched reply may be forged (even a kiss-o'-death) */
	if (p->org != xmt)
		return -WARP_EREPLAY;
	if (p->stratum == 0) {
		switch (p->refid) {
		case 0x52415445: /* RATE */
			return -WARP_ERATELIMIT;
		case 0x44454e59: /* DENY */
		case 0x52535452: /* RSTR */
			return -EACCES;
		default:
			return -WARP_ESTATE;
		}
	}
	if (p->li == 3 || p->stratum >= 16)
		return -WARP_ECLOCK;
	if (!p->xmt || !p->rec)
		return -WARP_EMALFORMED;
	if (short_ns(p->root_delay) / 2 + short_ns(p->root_disp) > MAX_ROOT_DIST)
		return -WARP_ERANGE;
	return 0;
}

int warp_ntp_sample(uint64_t t1, uint64_t t2, uint64_t t3, uint64_t t4, struct warp_ntp_sample *out)
{
	int64_t a = warp_ntp_diff_ns(t2, t1), b = warp_ntp_diff_ns(t3, t4);
	int64_t delay = warp_ntp_diff_ns(t4, t1) - warp_ntp_diff_ns(t3, t2);

	if (delay < 0) {
		if (delay < -DELAY_TOLERANCE)
			return -WARP_ERANGE;
		delay = 0;
	}
	memset(out, 0, sizeof(*out));
	out->offset_ns = a / 2 + b / 2;
	out->delay_ns = delay;
	return 0;
}

/* ---- selection ---- */

struct edge {
	int64_t at;
	int type; /* -1: start of an interval, +1: end (starts sort first at equal points) */
};

static int cmp_edge(const void *x, const void *y)
{
	const struct edge *a = x, *b = y;

	if (a->at != b->at)
		return a->at < b->at ? -1 : 1;
	return a->type - b->type;
}

int warp_sntp_combine(const struct warp_ntp_sample *s, unsigned int n, enum warp_sntp_pick pick,
		      struct warp_sntp_result *out)
{
	struct edge e[2 * WARP_SNTP_MAX_SERVERS];
	int best = 0, cur = 0;
	int64_t lo = 0, hi = 0;

	memset(out, 0, sizeof(*out));
	out->server = -1;
	if (!n)
		return -WARP_ECLOCK;
	if (n > WARP_SNTP_MAX_SERVERS)
		n = WARP_SNTP_MAX_SERVERS;
	out->samples = n;
	if (pick == WARP_SNTP_LOWEST_DELAY) {
		unsigned int b = 0;

		for (unsigned int i = 1; i < n; i++)
			if (s[i].delay_ns < s[b].delay_ns)
				b = i;
		out->offset_ns = s[b].offset_ns;
		out->uncertainty_ns = (uint64_t)s[b].delay_ns / 2 + s[b].root_dist_ns;
		out->agree = 1;
		out->server = s[b].server;
		return 0;
	}
	/* Marzullo: the region covered by the most intervals offset +- (delay/2 + root distance);
	 * the root distance is what the server itself may be off by (RFC 5905 section 11.2.1) */
	for (unsigned int i = 0; i < n; i++) {
		int64_t half = s[i].delay_ns / 2 + (int64_t)s[i].root_dist_ns;

		e[2 * i] = (struct edge){ s[i].offset_ns - half, -1 };
		e[2 * i + 1] = (struct edge){ s[i].offset_ns + half, +1 };
	}
	qsort(e, 2 * n, sizeof(e[0]), cmp_edge);
	for (unsigned int i = 0; i < 2 * n; i++) {
		cur -= e[i].type;
		if (e[i].type < 0 && cur > best) {
			best = cur;
			lo = e[i].at;
			hi = e[i + 1].at; /* the next edge bounds this region */
		}
	}
	out->agree = (unsigned int)best;
	if ((unsigned int)best * 2 <= n && n > 1)
		return -WARP_ECLOCK; /* no majority: cannot tell which clocks are wrong */
	out->offset_ns = lo / 2 + hi / 2;
	out->uncertainty_ns = (uint64_t)(hi - lo) / 2;
	return 0;
}

/* ---- sans-IO query ---- */

struct req {
	uint64_t xmt;
	int64_t t1_wall;
	uint64_t t1_mono;
};

struct srv {
	struct req reqs[MAX_TRIES];
	unsigned int nreq;
	uint64_t next_tx;
	bool done;
	int status;
	struct warp_ntp_sample sample;
};

struct warp_sntp {
	struct warp_sntp_cfg cfg;
	struct srv srv[WARP_SNTP_MAX_SERVERS];
	bool started, done;
	uint64_t deadline;
	int status;
	struct warp_sntp_result result;
};

void warp_sntp_cfg_default(struct warp_sntp_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->pick = WARP_SNTP_INTERSECT;
	cfg->rto_ms = 1000;
	cfg->tries = 3;
	cfg->timeout_ms = 4000;
}

struct warp_sntp *warp_sntp_new(const struct warp_sntp_cfg *cfg)
{
	struct warp_sntp *s;

	if (!cfg || !cfg->n_servers || cfg->n_servers > WARP_SNTP_MAX_SERVERS) {
		errno = EINVAL;
		return NULL;
	}
	for (unsigned int i = 0; i < cfg->n_servers; i++)
		if (!nat_sa_len((const struct sockaddr *)&cfg->servers[i])) {
			errno = EINVAL;
			return NULL;
		}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->cfg = *cfg;
	if (!s->cfg.rto_ms)
		s->cfg.rto_ms = 1000;
	if (!s->cfg.tries)
		s->cfg.tries = 3;
	if (s->cfg.tries > MAX_TRIES)
		s->cfg.tries = MAX_TRIES;
	if (!s->cfg.timeout_ms)
		s->cfg.timeout_ms = 4000;
	s->status = -EINPROGRESS;
	return s;
}

void warp_sntp_free(struct warp_sntp *s)
{
	free(s);
}

int warp_sntp_start(struct warp_sntp *s, uint64_t mono_ns)
{
	if (s->started)
		return -EALREADY;
	s->started = true;
	s->deadline = mono_ns + s->cfg.timeout_ms * (uint64_t)MS;
	for (unsigned int i = 0; i < s->cfg.n_servers; i++) {
		s->srv[i].next_tx = mono_ns;
		s->srv[i].status = -EINPROGRESS;
	}
	return 0;
}

static void finish(struct warp_sntp *s)
{
	struct warp_ntp_sample smp[WARP_SNTP_MAX_SERVERS];
	unsigned int n = 0;

	for (unsigned int i = 0; i < s->cfg.n_servers; i++) {
		struct srv *v = &s->srv[i];

		if (!v->done) {
			v->done = true;
			if (v->status == -EINPROGRESS)
				v->status = -ETIMEDOUT;
		}
		if (!v->status)
			smp[n++] = v->sample;
	}
	s->done = true;
	s->status = warp_sntp_combine(smp, n, s->cfg.pick, &s->result);
	if (s->status)
		pr_debug("no trustworthy time from %u answers", n);
}

static void check_all_done(struct warp_sntp *s)
{
	for (unsigned int i = 0; i < s->cfg.n_servers; i++)
		if (!s->srv[i].done)
			return;
	finish(s);
}

bool warp_sntp_poll_transmit(struct warp_sntp *s, uint64_t mono_ns, int64_t wall_ns,
			     struct warp_sntp_tx *tx)
{
	struct warp_ntp_packet p = { .vn = 4, .mode = WARP_NTP_MODE_CLIENT };

	if (!s->started || s->done)
		return false;
	for (unsigned int i = 0; i < s->cfg.n_servers; i++) {
		struct srv *v = &s->srv[i];
		struct req *r;

		if (v->done || v->nreq >= s->cfg.tries || v->next_tx > mono_ns)
			continue;
		r = &v->reqs[v->nreq++];
		/* a random transmit timestamp: the server echoes it, nobody else can guess it */
		do {
			warp_random(&r->xmt, sizeof(r->xmt));
		} while (!r->xmt);
		r->t1_wall = wall_ns;
		r->t1_mono = mono_ns;
		v->next_tx = mono_ns + s->cfg.rto_ms * (uint64_t)MS;
		p.xmt = r->xmt;
		tx->server = i;
		tx->dest = s->cfg.servers[i];
		tx->len = (size_t)warp_ntp_encode(&p, tx->data);
		return true;
	}
	return false;
}

int warp_sntp_handle_input(struct warp_sntp *s, unsigned int server, const void *buf, size_t len,
			   const struct sockaddr *from, uint64_t mono_ns)
{
	struct warp_ntp_packet p;
	struct srv *v;
	struct req *r = NULL;
	int err;

	if (!s->started || s->done || server >= s->cfg.n_servers)
		return 0;
	v = &s->srv[server];
	if (v->done)
		return 0;
	if (from && !nat_sa_equal(from, (const struct sockaddr *)&s->cfg.servers[server]))
		return 0;
	err = warp_ntp_decode(buf, len, &p);
	if (err)
		return err;
	for (unsigned int i = 0; i < v->nreq; i++)
		if (v->reqs[i].xmt == p.org)
			r = &v->reqs[i];
	if (!r)
		return 0; /* spoofed or not ours: keep waiting */
	err = warp_ntp_check_reply(&p, r->xmt);
	if (!err) {
		/* T4 from the monotonic time elapsed since T1: immune to wall-clock steps */
		int64_t t4_wall = r->t1_wall + (int64_t)(mono_ns - r->t1_mono);

		err = warp_ntp_sample(warp_ntp_from_unix_ns(r->t1_wall), p.rec, p.xmt,
				      warp_ntp_from_unix_ns(t4_wall), &v->sample);
		v->sample.root_dist_ns = short_ns(p.root_delay) / 2 + short_ns(p.root_disp);
		v->sample.stratum = p.stratum;
		v->sample.server = (int)server;
	}
	v->done = true;
	v->status = err;
	check_all_done(s);
	return err ? err : 1;
}

void warp_sntp_server_error(struct warp_sntp *s, unsigned int server, int err, uint64_t mono_ns)
{
	if (!s->started || s->done || server >= s->cfg.n_servers || s->srv[server].done)
		return;
	s->srv[server].done = true;
	s->srv[server].status = err;
	check_all_done(s);
}

void warp_sntp_handle_timeout(struct warp_sntp *s, uint64_t mono_ns)
{
	if (!s->started || s->done)
		return;
	if (mono_ns >= s->deadline) {
		finish(s);
		return;
	}
	for (unsigned int i = 0; i < s->cfg.n_servers; i++) {
		struct srv *v = &s->srv[i];

		if (!v->done && v->nreq >= s->cfg.tries && mono_ns >= v->next_tx) {
			v->done = true;
			v->status = -ETIMEDOUT;
		}
	}
	check_all_done(s);
}

uint64_t warp_sntp_next_deadline(const struct warp_sntp *s)
{
	uint64_t d;

	if (!s->started || s->done)
		return UINT64_MAX;
	d = s->deadline;
	for (unsigned int i = 0; i < s->cfg.n_servers; i++)
		if (!s->srv[i].done && s->srv[i].next_tx < d)
			d = s->srv[i].next_tx;
	return d;
}

bool warp_sntp_done(const struct warp_sntp *s)
{
	return s->done;
}

int warp_sntp_result(const struct warp_sntp *s, struct warp_sntp_result *out)
{
	if (out)
		*out = s->result;
	return s->done ? s->status : -EINPROGRESS;
}

int warp_sntp_server_status(const struct warp_sntp *s, unsigned int server,
			    struct warp_ntp_sample *sample)
{
	if (server >= s->cfg.n_servers)
		return -EINVAL;
	if (sample)
		*sample = s->srv[server].sample;
	return s->srv[server].status;
}

/* ---- synced clock ---- */

void warp_clock_init(struct warp_synced_clock *c)
{
	memset(c, 0, sizeof(*c));
	c->drift_ppm = 50;
}

void warp_clock_set(struct warp_synced_clock *c, const struct warp_sntp_result *r, uint64_t mono_ns,
		    int64_t wall_ns)
{
	c->synced = true;
	c->offset_ns = r->offset_ns;
	c->uncertainty_ns = r->uncertainty_ns;
	c->mono_at_sync = mono_ns;
	c->true_at_sync = wall_ns + r->offset_ns;
	if (!c->drift_ppm)
		c->drift_ppm = 50;
}

int warp_clock_now_ns_at(const struct warp_synced_clock *c, uint64_t mono_ns, int64_t *out)
{
	if (!c || !c->synced)
		return -WARP_ECLOCK;
	*out = c->true_at_sync + (int64_t)(mono_ns - c->mono_at_sync);
	return 0;
}

int warp_clock_now_ms(const struct warp_synced_clock *c, int64_t *out)
{
	struct timespec ts;
	int64_t ns;
	int err;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	err = warp_clock_now_ns_at(c, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec,
				   &ns);
	if (!err)
		*out = ns / 1000000;
	return err;
}

uint64_t warp_clock_uncertainty_ns(const struct warp_synced_clock *c, uint64_t mono_ns)
{
	uint64_t elapsed = mono_ns > c->mono_at_sync ? mono_ns - c->mono_at_sync : 0;

	return c->uncertainty_ns + elapsed / 1000000 * c->drift_ppm;
}
