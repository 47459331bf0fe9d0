/* SPDX-License-Identifier: MIT */
/*
 * NAT behaviour report: what STUN probing learned about the path from one local address to
 * the Internet.  Two vocabularies describe the same measurement:
 *
 *  - RFC 4787 / RFC 5780: mapping and filtering behaviour, each endpoint-independent,
 *    address-dependent or address-and-port-dependent;
 *  - the classic seven types (open, udp-firewall, full-cone, restricted, port-restricted,
 *    symmetric, blocked) plus the port allocation delta used for port prediction.
 *
 * The numeric values match the NAT fields of the node address codec (enum warp_addr_nat,
 * warp_addr_behaviour, warp_addr_delta), so converting is a cast.  The names returned by the
 * *_name() functions are the JSON values of `warpgate nat --json` (docs/nat.md).
 */
#ifndef WARPGATE_NAT_H
#define WARPGATE_NAT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* RFC 4787 mapping or filtering behaviour. */
enum warp_nat_behavior {
	WARP_NAT_BEH_UNKNOWN = 0,
	WARP_NAT_BEH_ENDPOINT_INDEPENDENT = 1,
	WARP_NAT_BEH_ADDRESS_DEPENDENT = 2,
	WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT = 3,
};

/* Classic NAT type. */
enum warp_nat_type {
	WARP_NAT_TYPE_UNKNOWN = 0,
	WARP_NAT_OPEN = 1,	      /* no NAT, no filtering */
	WARP_NAT_UDP_FIREWALL = 2,    /* no NAT, inbound filtered */
	WARP_NAT_FULL_CONE = 3,	      /* EIM + EIF */
	WARP_NAT_RESTRICTED = 4,      /* EIM + ADF */
	WARP_NAT_PORT_RESTRICTED = 5, /* EIM + APDF */
	WARP_NAT_SYMMETRIC = 6,	      /* ADM or APDM */
	WARP_NAT_BLOCKED = 7,	      /* no UDP answer at all */
};

/* Port allocation delta: how the external port of a new mapping relates to earlier ones. */
enum warp_nat_delta {
	WARP_NAT_DELTA_NONE = 0,	/* not applicable (no NAT, blocked) or too few samples */
	WARP_NAT_DELTA_EQUAL = 1,	/* external port = local port */
	WARP_NAT_DELTA_PRESERVING = 2,	/* external - local constant (value = that offset) */
	WARP_NAT_DELTA_INDEPENDENT = 3, /* +value per new mapping, whatever the local port */
	WARP_NAT_DELTA_DEPENDENT = 4,	/* +value when local ports are consecutive */
	WARP_NAT_DELTA_RANDOM = 5,	/* no model fits the samples */
};

/* What one probe of the classification tested. */
enum warp_nat_probe_kind {
	WARP_NAT_PROBE_BINDING = 0, /* plain Binding to a server's primary address */
	WARP_NAT_PROBE_ALT_IP,	    /* mapping test: alternate IP, primary port */
	WARP_NAT_PROBE_ALT_IP_PORT, /* mapping test: alternate IP and port */
	WARP_NAT_PROBE_FILTER_BASE, /* filtering test control: Binding from the filter socket */
	WARP_NAT_PROBE_CHANGE_IP_PORT,
	WARP_NAT_PROBE_CHANGE_PORT,
	WARP_NAT_PROBE_HAIRPIN,
	WARP_NAT_PROBE_DELTA,
	WARP_NAT_PROBE_TCP,
	WARP_NAT_PROBE_KIND_MAX = WARP_NAT_PROBE_TCP,
};

struct warp_nat_probe {
	uint8_t kind;	/* enum warp_nat_probe_kind */
	uint8_t server; /* index into the configured server list */
	uint8_t socket; /* local socket index (0: mapping socket) */
	uint8_t tries;	/* transmissions */
	bool ok;	/* answered (hairpin: own request seen) */
	uint16_t local_port;
	uint32_t sent_ms; /* first transmission, ms after the start */
	uint32_t rtt_us;  /* last transmission to answer; 0 when not answered */
	struct sockaddr_storage dest;
	struct sockaddr_storage mapped; /* family AF_UNSPEC when unknown */
};

#define WARP_NAT_MAX_EXTERNAL 8
#define WARP_NAT_MAX_PROBES   64

struct warp_nat_report {
	int family; /* AF_INET or AF_INET6 */
	enum warp_nat_behavior mapping;
	enum warp_nat_behavior filtering;
	enum warp_nat_type type;
	enum warp_nat_delta delta;
	int32_t delta_value;
	bool hairpin; /* hairpinning works (false also when untested) */
	bool nat;     /* a translation was seen (mapped address is not a local one) */
	bool udp;     /* some UDP probe was answered */
	bool tcp;     /* STUN over TCP answered (only probed when UDP is blocked) */
	bool rfc5780; /* at least one server gave OTHER-ADDRESS and honoured CHANGE-REQUEST */
	uint8_t servers_answered;
	uint8_t delta_samples;
	uint32_t duration_ms;
	uint64_t measured_at_ms;       /* wall clock, ms since the epoch */
	struct sockaddr_storage local; /* source address of the mapping socket */
	unsigned int n_external;
	struct sockaddr_storage external[WARP_NAT_MAX_EXTERNAL]; /* distinct UDP mappings seen */
	struct sockaddr_storage tcp_external;
	unsigned int n_probes;
	struct warp_nat_probe probes[WARP_NAT_MAX_PROBES];
};

/* JSON names ("endpoint-independent", "full-cone", "preserving", ...); "unknown" for 0 and
 * for out-of-range values. */
const char *warp_nat_behavior_name(enum warp_nat_behavior b);
const char *warp_nat_type_name(enum warp_nat_type t);
const char *warp_nat_delta_name(enum warp_nat_delta d);
const char *warp_nat_probe_kind_name(enum warp_nat_probe_kind k);
/* Inverse of the *_name() functions: the value, or -EINVAL. */
int warp_nat_behavior_parse(const char *s);
int warp_nat_type_parse(const char *s);
int warp_nat_delta_parse(const char *s);

/* Classic type implied by the RFC 4787 behaviours ("open" needs nat == false). */
enum warp_nat_type warp_nat_type_from_behavior(bool nat, enum warp_nat_behavior mapping,
					       enum warp_nat_behavior filtering);

#ifdef __cplusplus
}
#endif
#endif
