/* SPDX-License-Identifier: MIT */
/* Socket helpers: non-blocking UDP/TCP sockets, interface pinning, packet-info I/O. */
#ifndef WARP_NET_SOCK_H
#define WARP_NET_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

enum warp_sock_flags {
	WARP_SOCK_REUSEADDR = 1u << 0,
	WARP_SOCK_REUSEPORT = 1u << 1,
	WARP_SOCK_V6ONLY = 1u << 2,
	WARP_SOCK_PKTINFO = 1u << 3,  /* learn the local address of each datagram */
	WARP_SOCK_LISTEN = 1u << 4,   /* TCP: listen() after bind() */
	WARP_SOCK_NOBIND = 1u << 5,   /* create only */
};

/* Creates a non-blocking, close-on-exec socket bound to addr (port 0 = any).
 * Returns the fd or a negative errno. */
int warp_sock_udp(const struct sockaddr *addr, unsigned int flags);
int warp_sock_tcp(const struct sockaddr *addr, unsigned int flags);
/* Pins a socket to an interface: SO_BINDTODEVICE when permitted, else nothing (the caller
 * binds the interface's address instead).  Returns 0, or -EPERM when only the fallback is
 * possible. */
int warp_sock_bind_dev(int fd, const char *ifname);
/* Local address of a bound socket. */
int warp_sock_local(int fd, struct sockaddr_storage *out);

/* One received datagram with its addresses. */
struct warp_dgram {
	uint8_t *buf;
	size_t len;                   /* in: capacity, out: length */
	struct sockaddr_storage src;
	struct sockaddr_storage dst;  /* local address it was sent to (PKTINFO sockets) */
	int ifindex;                  /* receiving interface (PKTINFO sockets), 0 if unknown */
	bool truncated;
};

/* Receives up to n datagrams (recvmmsg).  Returns the count, 0 when nothing is queued, or a
 * negative errno. */
int warp_sock_recv_batch(int fd, struct warp_dgram *d, int n);
/* Sends one datagram; src (may be NULL) selects the local address (and ifindex) via
 * IP_PKTINFO / IPV6_PKTINFO on an unconnected wildcard socket. */
int warp_sock_sendto(int fd, const void *buf, size_t len, const struct sockaddr *dst,
		     const struct sockaddr *src, int ifindex);

/* Sends n datagrams to one destination with one sendmmsg (src/ifindex as above).  Returns
 * how many went out or a negative errno. */
int warp_sock_sendmmsg(int fd, const struct iovec *pkts, int n, const struct sockaddr *dst,
		       const struct sockaddr *src, int ifindex);

#endif
