/* SPDX-License-Identifier: MIT */
/*
 * Node address: everything a peer needs to reach a node, as a versioned TLV blob and a text
 * form for command lines ("wg1." + base64url).  docs/protocol.md specifies the layout.
 * Decoding skips unknown TLVs (forward compatibility) and rejects malformed input with a
 * specific error; encoding then decoding gives back the same struct.
 */
#ifndef WARPGATE_ADDRESS_H
#define WARPGATE_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/identity.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WARP_ADDR_MAX_ROUTES 8
#define WARP_ADDR_MAX_HINTS  8
#define WARP_ADDR_HINT_MAX   127
#define WARP_ADDR_MAX_BIN    1024  /* fits a nickname record value */
#define WARP_ADDR_TEXT_PREFIX "wg1."

/* NAT classes as carried in addresses (the classic seven plus unknown). */
enum warp_addr_nat {
	WARP_ADDR_NAT_UNKNOWN = 0,
	WARP_ADDR_NAT_OPEN = 1,
	WARP_ADDR_NAT_UDP_FIREWALL = 2,
	WARP_ADDR_NAT_FULL_CONE = 3,
	WARP_ADDR_NAT_RESTRICTED = 4,
	WARP_ADDR_NAT_PORT_RESTRICTED = 5,
	WARP_ADDR_NAT_SYMMETRIC = 6,
	WARP_ADDR_NAT_BLOCKED = 7,
	WARP_ADDR_NAT_MAX = 7,
};

/* RFC 4787 mapping / filtering behaviour. */
enum warp_addr_behaviour {
	WARP_ADDR_BEH_UNKNOWN = 0,
	WARP_ADDR_BEH_EI = 1,  /* endpoint-independent */
	WARP_ADDR_BEH_AD = 2,  /* address-dependent */
	WARP_ADDR_BEH_APD = 3, /* address-and-port-dependent */
	WARP_ADDR_BEH_MAX = 3,
};

/* Port allocation delta. */
enum warp_addr_delta {
	WARP_ADDR_DELTA_NONE = 0,        /* not applicable (no NAT) or unknown */
	WARP_ADDR_DELTA_EQUAL = 1,       /* external port = local port */
	WARP_ADDR_DELTA_PRESERVING = 2,  /* distances between ports preserved */
	WARP_ADDR_DELTA_INDEPENDENT = 3, /* +value per new mapping, whatever the local port */
	WARP_ADDR_DELTA_DEPENDENT = 4,   /* +value when local ports are consecutive */
	WARP_ADDR_DELTA_RANDOM = 5,
	WARP_ADDR_DELTA_MAX = 5,
};

enum warp_addr_route_flags {
	WARP_ROUTE_F_PORTMAP = 1u << 0, /* ext ports come from UPnP / NAT-PMP / PCP */
	WARP_ROUTE_F_HAIRPIN = 1u << 1, /* the NAT hairpins */
	WARP_ROUTE_F_UDP_BLOCKED = 1u << 2,
	WARP_ROUTE_F_DEFAULT = 1u << 3, /* carries the default route of its family */
	WARP_ROUTE_F_LOOPBACK = 1u << 4,
};

/* One path out of the node: an interface address and what the world sees of it. */
struct warp_addr_route {
	uint8_t family;          /* 4 or 6 */
	uint8_t if_id;           /* ordinal of the interface in the node's list */
	uint8_t prefix_len;
	uint8_t flags;           /* enum warp_addr_route_flags */
	uint8_t nic_addr[16];    /* 4 or 16 bytes used */
	bool has_ext;
	uint8_t ext_addr[16];
	uint16_t tcp_port, udp_port;         /* listeners on nic_addr (0 = none) */
	uint16_t ext_tcp_port, ext_udp_port; /* known external ports (0 = unknown) */
	uint8_t nat;             /* enum warp_addr_nat */
	uint8_t mapping;         /* enum warp_addr_behaviour */
	uint8_t filtering;       /* enum warp_addr_behaviour */
	uint8_t delta_type;      /* enum warp_addr_delta */
	int32_t delta_value;
};

enum warp_addr_hint_kind {
	WARP_HINT_MQTT = 1,      /* signalling broker HOST:PORT */
	WARP_HINT_TURN = 2,      /* relay HOST:PORT */
	WARP_HINT_NAMES = 3,     /* nickname server HOST:PORT */
	WARP_HINT_STUN = 4,
	WARP_HINT_MAX = 4,
};

struct warp_addr_hint {
	uint8_t kind;
	char text[WARP_ADDR_HINT_MAX + 1];
};

struct warp_node_addr {
	uint8_t pubkey[WARP_PUBKEY_LEN];
	bool has_machine;
	uint8_t machine[WARP_MACHINE_HASH_LEN];
	uint64_t created_ms;     /* wall clock when the address was made (0 = unset) */
	size_t nroutes;
	struct warp_addr_route routes[WARP_ADDR_MAX_ROUTES];
	size_t nhints;
	struct warp_addr_hint hints[WARP_ADDR_MAX_HINTS];
};

/* Returns the encoded length or a negative error (-EMSGSIZE when cap is too small). */
int warp_addr_encode(const struct warp_node_addr *a, uint8_t *buf, size_t cap);
int warp_addr_decode(const uint8_t *buf, size_t len, struct warp_node_addr *a);
/* Text form: "wg1." + base64url(binary). */
int warp_addr_to_text(const struct warp_node_addr *a, char *buf, size_t cap);
int warp_addr_from_text(const char *text, struct warp_node_addr *a);
/* JSON rendering (malloc'd string, caller frees); NULL on error. */
char *warp_addr_to_json(const struct warp_node_addr *a, bool pretty);

const char *warp_addr_nat_name(unsigned int nat);
const char *warp_addr_behaviour_name(unsigned int b);
const char *warp_addr_delta_name(unsigned int d);
const char *warp_addr_hint_name(unsigned int kind);

#ifdef __cplusplus
}
#endif
#endif
