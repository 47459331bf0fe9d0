/* SPDX-License-Identifier: MIT */
/*
 * Port mapping on the local gateway: UPnP IGD (miniupnpc) and NAT-PMP (libnatpmp) raced,
 * plus an IPv6 pinhole (UPnP WANIPv6FirewallControl) when asked and offered.
 *
 * Both libraries block, so each method runs in its own worker thread; results come back to
 * the loop thread through warp_loop_post().  The first method to map wins (MAPPED event) and
 * renews its mapping at half its lifetime; a later success of the other method is deleted
 * again unless it is the very same mapping (one router speaking both protocols).  A renewal
 * that fails is retried with backoff until the lease runs out (LOST event), after which the
 * race starts over.
 *
 * Never leave a mapping behind: each worker remembers what it created and removes it when
 * it stops, so warp_portmap_free() deletes every mapping and pinhole before returning.  That
 * makes free() block for as long as the gateway takes to answer (bounded by the discovery
 * and request timeouts).  UPnP IGDs that answer "valid IGD, not connected"
 * (UPNP_GetValidIGD() == 2) are used anyway: lab routers sit in reserved address ranges.
 */
#ifndef WARP_NAT_PORTMAP_H
#define WARP_NAT_PORTMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/loop.h>

enum warp_portmap_method {
	WARP_PORTMAP_UPNP = 1u << 0,
	WARP_PORTMAP_NATPMP = 1u << 1,
	WARP_PORTMAP_PINHOLE6 = 1u << 2,
};

struct warp_portmap_cfg {
	int proto; /* IPPROTO_UDP (default) or IPPROTO_TCP */
	uint16_t internal_port;
	uint16_t external_port;	 /* wanted external port; 0: the internal port */
	char internal_addr[46];	 /* our LAN IPv4 for UPnP; "": the one miniupnpc reports */
	char internal_addr6[46]; /* global IPv6 to open a pinhole for; "": no pinhole */
	char multicast_if[64];	 /* interface name or IPv4 address for SSDP; "": default */
	char gateway[46];	 /* NAT-PMP gateway; "": the default route's */
	uint32_t lease_s;	 /* requested lifetime (3600) */
	uint32_t discover_ms;	 /* SSDP wait (2000; miniupnpc waits at least 1000) */
	uint32_t natpmp_ms;	 /* NAT-PMP answer wait (2000) */
	unsigned int methods;	 /* enum warp_portmap_method bits (UPNP | NATPMP) */
	char description[64];	 /* UPnP description ("warpgate") */
};

void warp_portmap_cfg_default(struct warp_portmap_cfg *cfg);

enum warp_portmap_event {
	WARP_PORTMAP_MAPPED,  /* first mapping, info->external is the endpoint */
	WARP_PORTMAP_RENEWED, /* lease extended (the endpoint may have changed) */
	WARP_PORTMAP_LOST,    /* the lease ran out without a renewal; racing again */
	WARP_PORTMAP_FAILED,  /* no method could map; info->err says why (the last error) */
	WARP_PORTMAP_PINHOLE, /* IPv6 pinhole: info->err 0 and info->external [addr6]:port when
			       * open; info->err < 0 when it could not be opened (-EOPNOTSUPP:
			       * the IGD has no WANIPv6FirewallControl) */
};

struct warp_portmap_info {
	unsigned int method; /* one WARP_PORTMAP_* bit */
	struct sockaddr_storage external;
	uint32_t lifetime_s; /* granted; 0: permanent (deleted on close anyway) */
	int err;
};

struct warp_portmap;

typedef void (*warp_portmap_cb)(struct warp_portmap *pm, enum warp_portmap_event ev,
				const struct warp_portmap_info *info, void *user);

/* Starts the race; NULL + errno for bad configuration. */
struct warp_portmap *warp_portmap_new(struct warp_loop *loop, const struct warp_portmap_cfg *cfg,
				      warp_portmap_cb cb, void *user);
/* The current mapping: 0, or -WARP_ENOTFOUND when none is held. */
int warp_portmap_get(const struct warp_portmap *pm, struct warp_portmap_info *out);
/* Removes every mapping and pinhole (blocking, bounded), then frees.  Results the workers
 * posted meanwhile are dropped (and their memory released) when the loop next runs them, so
 * run the loop once more before freeing it. */
void warp_portmap_free(struct warp_portmap *pm);

/* ---- pure pieces, exposed for tests ---- */

/* When to renew a lease granted at granted_ns: at half its lifetime (at least 1 s after the
 * grant); UINT64_MAX for permanent (0) leases. */
uint64_t warp_portmap_renew_at(uint64_t granted_ns, uint32_t lifetime_s);
/* After `failures` failed renewals at now_ns of a lease ending at expires_ns: retry after
 * min(5 s * 2^(failures-1), half the time left), at least 1 s; UINT64_MAX when the lease
 * has already run out (the caller declares it lost). */
uint64_t warp_portmap_retry_at(uint64_t now_ns, uint64_t expires_ns, unsigned int failures);

enum warp_portmap_action {
	WARP_PORTMAP_WAIT,	   /* nothing to do yet */
	WARP_PORTMAP_WIN,	   /* this result is the mapping */
	WARP_PORTMAP_KEEP_SAME,	   /* same mapping as the winner's: leave it, do not renew it */
	WARP_PORTMAP_DELETE_LOSER, /* a second, different mapping: remove it */
	WARP_PORTMAP_ALL_FAILED,
};

struct warp_portmap_race {
	int winner;	  /* index of the winning method, -1: none yet */
	unsigned int n;	  /* methods racing */
	uint8_t state[2]; /* 0 pending, 1 mapped, 2 failed */
	struct sockaddr_storage ext[2];
};

void warp_portmap_race_init(struct warp_portmap_race *r, unsigned int n);
enum warp_portmap_action warp_portmap_race_result(struct warp_portmap_race *r, unsigned int idx,
						  int status, const struct sockaddr *ext);

/* UPnP (positive UPnP error codes, negative miniupnpc codes) and NAT-PMP (NATPMP_ERR_* and
 * result codes) errors as negative errno / -WARP_E* values. */
int warp_portmap_upnp_err(int code);
int warp_portmap_natpmp_err(int code);

#endif
