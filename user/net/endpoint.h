/* SPDX-License-Identifier: MIT */
/* Socket endpoints: parsing "HOST:PORT", "[V6]:PORT", "[fe80::1%eth0]:PORT", formatting,
 * comparison.  Parsing is numeric unless the _resolve variant is used. */
#ifndef WARP_NET_ENDPOINT_H
#define WARP_NET_ENDPOINT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define WARP_EP_STRLEN 64

/* Numeric address with optional port; default_port applies when none is given
 * (default_port 0 means the port is required). */
int warp_ep_parse(const char *s, uint16_t default_port, struct sockaddr_storage *out);
/* Like warp_ep_parse but also resolves host names (getaddrinfo; prefers family if set). */
int warp_ep_resolve(const char *s, uint16_t default_port, int family, struct sockaddr_storage *out);
/* "1.2.3.4:5", "[2001:db8::1]:5", "[fe80::1%eth0]:5"; returns buf. */
const char *warp_ep_str(const struct sockaddr *sa, char *buf, size_t len);
/* Address only, no port. */
const char *warp_ep_addr_str(const struct sockaddr *sa, char *buf, size_t len);
socklen_t warp_ep_len(const struct sockaddr *sa);
uint16_t warp_ep_port(const struct sockaddr *sa);
void warp_ep_set_port(struct sockaddr *sa, uint16_t port);
bool warp_ep_equal(const struct sockaddr *a, const struct sockaddr *b);
bool warp_ep_addr_equal(const struct sockaddr *a, const struct sockaddr *b);
/* IPv4-mapped IPv6 addresses become plain IPv4. */
void warp_ep_unmap(struct sockaddr_storage *ss);
/* 16-byte form used in BPF maps: IPv6, or ::ffff:a.b.c.d for IPv4. */
void warp_ep_addr16(const struct sockaddr *sa, uint8_t out[16]);
bool warp_ep_is_loopback(const struct sockaddr *sa);
bool warp_ep_is_private(const struct sockaddr *sa);
bool warp_ep_is_linklocal(const struct sockaddr *sa);
/* Build from raw bytes (4 or 16) + port (host order). */
void warp_ep_from_raw(struct sockaddr_storage *out, int family, const void *addr, uint16_t port,
		      uint32_t scope_id);

#endif
