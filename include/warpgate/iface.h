/* SPDX-License-Identifier: MIT */
/*
 * Network interfaces, their addresses and default gateways, read over rtnetlink (libmnl),
 * plus a watcher that reports changes on the event loop.
 */
#ifndef WARPGATE_IFACE_H
#define WARPGATE_IFACE_H

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WARP_IFACE_MAX_ADDRS 16

struct warp_ifaddr {
	int family;              /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr;
	uint8_t prefix_len;
	uint8_t scope;           /* RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST */
	uint32_t flags;          /* IFA_F_* (e.g. IFA_F_TEMPORARY, IFA_F_DEPRECATED) */
	uint32_t scope_id;       /* interface index for link-local IPv6, else 0 */
};

struct warp_iface {
	int index;
	char name[IF_NAMESIZE];
	unsigned int flags;      /* IFF_UP, IFF_LOOPBACK, IFF_RUNNING ... */
	unsigned int mtu;
	uint8_t mac[6];
	size_t naddrs;
	struct warp_ifaddr addrs[WARP_IFACE_MAX_ADDRS];
	bool has_gw4, has_gw6;   /* a default route leaves through this interface */
	struct in_addr gw4;
	struct in6_addr gw6;
	uint32_t metric4, metric6;
};

struct warp_iface_list {
	size_t n;
	struct warp_iface *ifs;  /* sorted by index */
};

/* Reads links, addresses and default routes of the calling thread's network namespace. */
int warp_iface_list_get(struct warp_iface_list *out);
void warp_iface_list_free(struct warp_iface_list *list);
const struct warp_iface *warp_iface_find(const struct warp_iface_list *list, const char *name);
/* A digest of names, IPv4 addresses, IPv6 /64 prefixes and gateways: equal lists give equal
 * fingerprints even when IPv6 privacy addresses rotate (used to key the NAT cache). */
void warp_iface_fingerprint(const struct warp_iface_list *list, uint8_t out[32]);

struct warp_netwatch;
typedef void (*warp_netwatch_cb)(void *user);
/* Calls cb (debounced by 100 ms) after any link, address or route change. */
struct warp_netwatch *warp_netwatch_new(struct warp_loop *loop, warp_netwatch_cb cb, void *user);
void warp_netwatch_free(struct warp_netwatch *w);

#ifdef __cplusplus
}
#endif
#endif
