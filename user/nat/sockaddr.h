/* SPDX-License-Identifier: MIT */
/*
 * Small sockaddr helpers private to user/nat (static inline: no exported symbols, so they
 * never clash with the endpoint helpers of user/net).
 */
#ifndef WARP_NAT_SOCKADDR_H
#define WARP_NAT_SOCKADDR_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define NAT_SA_STRLEN (INET6_ADDRSTRLEN + 8)

static inline socklen_t nat_sa_len(const struct sockaddr *sa)
{
	if (!sa)
		return 0;
	if (sa->sa_family == AF_INET)
		return sizeof(struct sockaddr_in);
	if (sa->sa_family == AF_INET6)
		return sizeof(struct sockaddr_in6);
	return 0;
}

static inline uint16_t nat_sa_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

static inline void nat_sa_set_port(struct sockaddr *sa, uint16_t port)
{
	if (sa->sa_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(port);
	else if (sa->sa_family == AF_INET6)
		((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

/* Same family and IP (ports ignored; IPv6 scope ids ignored). */
static inline bool nat_sa_same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
	if (!a || !b || a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->sa_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
	return false;
}

static inline bool nat_sa_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	return nat_sa_same_ip(a, b) && nat_sa_port(a) == nat_sa_port(b);
}

static inline bool nat_sa_is_any(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return true;
}

/* "192.0.2.1:3478" or "[2001:db8::1]:3478"; "-" for AF_UNSPEC. */
static inline const char *nat_sa_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (!sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) {
		snprintf(buf, len, "-");
		return buf;
	}
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, nat_sa_port(sa));
	} else {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, nat_sa_port(sa));
	}
	return buf;
}

/* Numeric "ip", "ip:port", "[v6]" or "[v6]:port"; a bare IPv6 literal takes default_port. */
static inline int nat_sa_parse(const char *s, uint16_t default_port, struct sockaddr_storage *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port_s = NULL, *end;
	struct sockaddr_in *sin = (struct sockaddr_in *)out;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
	unsigned long port = default_port;
	size_t n;

	if (!s || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (s[0] == '[') {
		end = strchr(s, ']');
		if (!end)
			return -EINVAL;
		n = (size_t)(end - s - 1);
		if (end[1] == ':')
			port_s = end + 2;
		else if (end[1])
			return -EINVAL;
		s++;
	} else {
		const char *colon = strchr(s, ':');

		if (colon && strchr(colon + 1, ':')) { /* bare IPv6 */
			n = strlen(s);
		} else {
			n = colon ? (size_t)(colon - s) : strlen(s);
			port_s = colon ? colon + 1 : NULL;
		}
	}
	if (n == 0 || n >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, n);
	host[n] = '\0';
	if (port_s) {
		char *e;

		errno = 0;
		port = strtoul(port_s, &e, 10);
		if (!*port_s || *e || errno || port > 65535)
			return -EINVAL;
	}
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	return -EINVAL;
}

#endif
