/* SPDX-License-Identifier: MIT */
/*
 * SNTP client (RFC 5905 client mode, RFC 4330 checks), sans-IO, plus a "synced clock".
 *
 * Each request carries a random transmit timestamp (the real send time stays local), so a
 * reply is accepted only if its origin timestamp echoes one of our outstanding requests: an
 * off-path attacker cannot forge one, and a stale reply is matched to the request it answers.
 * Replies are rejected when malformed, from a kiss-o'-death (stratum 0), unsynchronised
 * (leap indicator 3, stratum >= 16), with zero receive/transmit timestamps, a negative delay
 * or a root distance above 1.5 s.
 *
 * For each server, offset = ((T2 - T1) + (T3 - T4)) / 2 and delay = (T4 - T1) - (T3 - T2),
 * with T1/T4 taken from the caller's wall clock at send time plus the monotonic time elapsed
 * (a wall-clock step during the exchange does not corrupt the sample).  Servers are queried
 * concurrently; the result is either the lowest-delay sample or the intersection (Marzullo)
 * of the intervals [offset - delay/2, offset + delay/2], each widened by the server's own
 * root distance (root delay/2 + root dispersion), agreed on by a majority.  When no
 * server gives a usable answer, or no majority agrees, the result is -WARP_ECLOCK: the local
 * clock is never trusted silently.
 */
#ifndef WARP_NAT_SNTP_H
#define WARP_NAT_SNTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define WARP_NTP_PORT	      123
#define WARP_NTP_LEN	      48
#define WARP_NTP_UNIX_DELTA   2208988800ull /* seconds from 1900 to 1970 */
#define WARP_SNTP_MAX_SERVERS 8

enum { WARP_NTP_MODE_CLIENT = 3, WARP_NTP_MODE_SERVER = 4 };

/* ---- packet codec ---- */

struct warp_ntp_packet {
	uint8_t li, vn, mode, stratum;
	int8_t poll, precision;
	uint32_t root_delay;	     /* 16.16 seconds */
	uint32_t root_disp;	     /* 16.16 seconds */
	uint32_t refid;		     /* for stratum 0: the kiss code, e.g. "RATE" */
	uint64_t ref, org, rec, xmt; /* 32.32 NTP timestamps */
};

/* 48-byte header; returns WARP_NTP_LEN or -EINVAL (field out of range). */
int warp_ntp_encode(const struct warp_ntp_packet *p, uint8_t out[WARP_NTP_LEN]);
/* Accepts 48 bytes optionally followed by extension fields / a MAC (a multiple of 4 bytes,
 * at most 1024).  -WARP_ETRUNCATED, -WARP_EMALFORMED. */
int warp_ntp_decode(const void *buf, size_t len, struct warp_ntp_packet *p);
/* Client-side acceptance of a server reply to the request whose transmit timestamp was xmt:
 * -WARP_EMALFORMED (not a server reply, zero timestamps), -WARP_EVERSION, -WARP_EREPLAY
 * (origin mismatch: spoofed or stale), -WARP_ERATELIMIT (kiss RATE), -EACCES (kiss DENY/RSTR),
 * -WARP_ESTATE (other kiss codes), -WARP_ECLOCK (server unsynchronised), -WARP_ERANGE (root
 * distance too large). */
int warp_ntp_check_reply(const struct warp_ntp_packet *p, uint64_t xmt);

/* NTP timestamp <-> nanoseconds since the Unix epoch.  to_unix picks the 136-year era that
 * puts the result closest to pivot_ns (e.g. the local clock). */
uint64_t warp_ntp_from_unix_ns(int64_t unix_ns);
int64_t warp_ntp_to_unix_ns(uint64_t ts, int64_t pivot_ns);
/* Signed difference a - b of two NTP timestamps, in ns (correct across an era rollover). */
int64_t warp_ntp_diff_ns(uint64_t a, uint64_t b);

struct warp_ntp_sample {
	int64_t offset_ns; /* server clock - local clock */
	int64_t delay_ns;  /* round trip minus the server's processing time */
	uint64_t root_dist_ns;
	uint8_t stratum;
	int server;
};

/* Offset and delay from the four timestamps; -WARP_ERANGE when the delay is negative. */
int warp_ntp_sample(uint64_t t1, uint64_t t2, uint64_t t3, uint64_t t4,
		    struct warp_ntp_sample *out);

enum warp_sntp_pick {
	WARP_SNTP_INTERSECT = 0, /* Marzullo over offset +- (delay/2 + root distance) */
	WARP_SNTP_LOWEST_DELAY,
};

struct warp_sntp_result {
	int64_t offset_ns;
	uint64_t uncertainty_ns; /* half-width of the interval the true offset lies in */
	unsigned int samples;	 /* usable answers */
	unsigned int agree;	 /* samples inside the chosen interval */
	int server;		 /* lowest delay: its index; intersection: -1 */
};

/* -WARP_ECLOCK with no sample, or when no interval is shared by a majority. */
int warp_sntp_combine(const struct warp_ntp_sample *s, unsigned int n, enum warp_sntp_pick pick,
		      struct warp_sntp_result *out);

/* ---- concurrent query of several servers (sans-IO) ---- */

struct warp_sntp_cfg {
	unsigned int n_servers;
	struct sockaddr_storage servers[WARP_SNTP_MAX_SERVERS];
	enum warp_sntp_pick pick;
	uint32_t rto_ms;     /* resend after (1000) */
	unsigned int tries;  /* requests per server (3) */
	uint32_t timeout_ms; /* whole query (4000) */
};

void warp_sntp_cfg_default(struct warp_sntp_cfg *cfg);

struct warp_sntp_tx {
	unsigned int server;
	struct sockaddr_storage dest;
	uint8_t data[WARP_NTP_LEN];
	size_t len;
};

struct warp_sntp;

struct warp_sntp *warp_sntp_new(const struct warp_sntp_cfg *cfg);
void warp_sntp_free(struct warp_sntp *s);
int warp_sntp_start(struct warp_sntp *s, uint64_t mono_ns);
/* wall_ns: the caller's CLOCK_REALTIME now, used as T1 of this request. */
bool warp_sntp_poll_transmit(struct warp_sntp *s, uint64_t mono_ns, int64_t wall_ns,
			     struct warp_sntp_tx *tx);
/* A reply from server `server` (from may be NULL when the socket is connected).  Returns 1
 * if accepted, 0 if ignored (spoofed, duplicate, from elsewhere), or the rejection error. */
int warp_sntp_handle_input(struct warp_sntp *s, unsigned int server, const void *buf, size_t len,
			   const struct sockaddr *from, uint64_t mono_ns);
/* A hard error for one server (e.g. ICMP port unreachable seen on its socket). */
void warp_sntp_server_error(struct warp_sntp *s, unsigned int server, int err, uint64_t mono_ns);
void warp_sntp_handle_timeout(struct warp_sntp *s, uint64_t mono_ns);
uint64_t warp_sntp_next_deadline(const struct warp_sntp *s);
bool warp_sntp_done(const struct warp_sntp *s);
/* Valid once done: 0 or -WARP_ECLOCK. */
int warp_sntp_result(const struct warp_sntp *s, struct warp_sntp_result *out);
/* Per server: 0 answered, -EINPROGRESS, -ETIMEDOUT or the last rejection error. */
int warp_sntp_server_status(const struct warp_sntp *s, unsigned int server,
			    struct warp_ntp_sample *sample);

/* ---- synced clock ---- */

/* True time anchored to the monotonic clock at the moment of synchronisation, so later
 * steps of the local wall clock do not move it; the uncertainty grows by drift_ppm. */
struct warp_synced_clock {
	bool synced;
	int64_t offset_ns;	 /* as measured */
	uint64_t uncertainty_ns; /* at sync time */
	uint64_t mono_at_sync;
	int64_t true_at_sync; /* wall clock + offset, ns since the epoch */
	uint32_t drift_ppm;   /* (50) */
};

void warp_clock_init(struct warp_synced_clock *c);
void warp_clock_set(struct warp_synced_clock *c, const struct warp_sntp_result *r, uint64_t mono_ns,
		    int64_t wall_ns);
/* ns since the epoch; -WARP_ECLOCK when not synchronised. */
int warp_clock_now_ns_at(const struct warp_synced_clock *c, uint64_t mono_ns, int64_t *out);
int warp_clock_now_ms(const struct warp_synced_clock *c, int64_t *out);
uint64_t warp_clock_uncertainty_ns(const struct warp_synced_clock *c, uint64_t mono_ns);

/* CLOCK_REALTIME in ns. */
int64_t warp_sntp_wall_ns(void);

#endif
