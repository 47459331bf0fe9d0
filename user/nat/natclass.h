/* SPDX-License-Identifier: MIT */
/*
 * NAT classification, sans-IO (RFC 4787 / RFC 5780 behaviour discovery plus the classic
 * types and the port allocation delta).  The core owns a STUN client; the caller owns the
 * sockets.  Each socket is described by a tag (warp_stun_tx.sock), a role and its local
 * address:
 *
 *   MAPPING       one socket: Binding to every server's primary address, then (RFC 5780
 *                 servers) to the alternate IP and to the alternate IP+port; hairpin test.
 *   FILTER        one per server (server i uses the i-th FILTER socket): Binding plus
 *                 CHANGE-REQUEST (IP+port) and (port) to the primary address only, so no
 *                 other traffic opens the filter for the alternate address.
 *   DELTA_RANDOM  sockets on random local ports and DELTA_SEQ sockets on consecutive local
 *   DELTA_SEQ     ports: one Binding each, round-robin over the servers, for the delta.
 *
 * Everything starts at once; each verdict is taken at the first conclusive answer and the
 * run stops when all are in (or at max_duration_ms).  Per-server verdicts are combined with
 * a quorum: a behaviour is accepted when `quorum` servers agree (fewer when fewer servers
 * can answer); when servers disagree the majority wins and a tie goes to the more
 * restrictive behaviour; servers that were outvoted (or whose mapped address disagrees with
 * the majority) do not contribute to the external addresses and the delta.  Servers
 * without OTHER-ADDRESS (plain RFC 5389) still give mapped addresses: mapping is then
 * inferred by comparing the mappings seen from the MAPPING socket towards different
 * servers, and filtering stays unknown.  If no UDP probe is answered at
 * all, STUN over TCP is tried (warp_natclass_poll_tcp) to tell "UDP blocked" from "offline".
 *
 * The delta is computed over every mapping the run created, in the order the NAT saw them
 * (first transmissions leave in start order), keyed by the measured mapping behaviour; see
 * docs/nat.md.
 *
 * Driving it: start(now); then repeatedly drain poll_transmit() (send each datagram on the
 * socket with that tag) and poll_tcp() (run a STUN-over-TCP Binding, report it with
 * tcp_result()), feed every datagram received on the sockets to handle_input(), and call
 * handle_timeout() at next_deadline(), until done().
 */
#ifndef WARP_NAT_NATCLASS_H
#define WARP_NAT_NATCLASS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/nat.h>

#include "nat/stun_client.h"

#define WARP_NATCLASS_MAX_SERVERS 8
#define WARP_NATCLASS_MAX_SOCKS	  40
#define WARP_NATCLASS_MAX_LOCAL	  16

enum warp_natclass_role {
	WARP_NATCLASS_MAPPING = 0,
	WARP_NATCLASS_FILTER,
	WARP_NATCLASS_DELTA_RANDOM,
	WARP_NATCLASS_DELTA_SEQ,
};

struct warp_natclass_sock {
	int tag;
	uint8_t role;		       /* enum warp_natclass_role */
	struct sockaddr_storage local; /* bound address; its port matters, the IP may be any */
};

struct warp_natclass_cfg {
	unsigned int n_servers;
	struct sockaddr_storage servers[WARP_NATCLASS_MAX_SERVERS];
	unsigned int n_socks;
	struct warp_natclass_sock socks[WARP_NATCLASS_MAX_SOCKS];
	/* the host's own addresses: a mapped address among them (same port) means no NAT */
	unsigned int n_local_ips;
	struct sockaddr_storage local_ips[WARP_NATCLASS_MAX_LOCAL];
	unsigned int quorum;	     /* agreeing servers for a verdict (2) */
	uint32_t probe_rto_ms;	     /* first retransmission (200) */
	uint32_t probe_timeout_ms;   /* a probe unanswered by then is lost (1500) */
	uint32_t hairpin_timeout_ms; /* (150) */
	/* CHANGE-REQUEST probes count as lost this long after the filter socket's plain Binding
	 * was answered (at least 4 of its RTTs) (150) */
	uint32_t filter_wait_ms;
	uint32_t max_duration_ms; /* hard stop (8000) */
	bool no_hairpin;
	bool no_tcp;
	const char *software; /* SOFTWARE attribute, NULL: none */
};

void warp_natclass_cfg_default(struct warp_natclass_cfg *cfg);

struct warp_natclass_tcp_probe {
	unsigned int server;
	struct sockaddr_storage dest;
};

struct warp_natclass;

/* Validates cfg (one MAPPING socket, at most one FILTER socket per server, 1..8 servers of
 * one family).  NULL + errno. */
struct warp_natclass *warp_natclass_new(const struct warp_natclass_cfg *cfg);
void warp_natclass_free(struct warp_natclass *nc);
/* The internal client, e.g. to install eBPF mirroring hooks. */
struct warp_stun_client *warp_natclass_client(struct warp_natclass *nc);

int warp_natclass_start(struct warp_natclass *nc, uint64_t now_ns);
bool warp_natclass_poll_transmit(struct warp_natclass *nc, uint64_t now_ns,
				 struct warp_stun_tx *tx);
bool warp_natclass_poll_tcp(struct warp_natclass *nc, struct warp_natclass_tcp_probe *out);
/* Returns 1 if the datagram was a probe response or our own hairpinned request, else 0 or a
 * negative decode error. */
int warp_natclass_handle_input(struct warp_natclass *nc, int sock, const void *buf, size_t len,
			       const struct sockaddr *from, uint64_t rx_ns);
/* status 0 with the mapped address, or a negative error. */
void warp_natclass_tcp_result(struct warp_natclass *nc, unsigned int server, int status,
			      const struct sockaddr *mapped, uint64_t rtt_ns, uint64_t now_ns);
void warp_natclass_handle_timeout(struct warp_natclass *nc, uint64_t now_ns);
uint64_t warp_natclass_next_deadline(const struct warp_natclass *nc);
bool warp_natclass_done(const struct warp_natclass *nc);
/* Valid once done (partial before). */
const struct warp_nat_report *warp_natclass_report(const struct warp_natclass *nc);

/* ---- pieces exposed for tests ---- */

struct warp_nat_delta_sample {
	unsigned int order; /* index of the mapping in the order the NAT created them */
	uint16_t local;
	uint16_t mapped;
	bool seq; /* from a DELTA_SEQ socket */
};

/* Classifies the port allocation from samples sorted by order. */
enum warp_nat_delta warp_nat_delta_classify(const struct warp_nat_delta_sample *s, unsigned int n,
					    int32_t *value);

#endif
