// SPDX-License-Identifier: MIT
/* Endpoint text forms and comparisons for IPv4 and IPv6 (with scope ids). */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

#include "net/endpoint.h"

static int parse_port(const char *s, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (!*s || *s == '-' || *s == '+')
		return -WARP_EMALFORMED;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -WARP_ERANGE;
	*port = (uint16_t)v;
	return 0;
}

/* Splits s into host and optional port; host points into buf. */
static int split(const char *s, char *buf, size_t len, const char **host, const char **port)
{
	char *p;

	if (strlen(s) >= len || !*s)
		return -WARP_EMALFORMED;
	strcpy(buf, s);
	*port = NULL;
	if (buf[0] == '[') {
		p = strchr(buf, ']');
		if (!p)
			return -WARP_EMALFORMED;
		*p = '\0';
		*host = buf + 1;
		if (p[1] == ':')
			*port = p + 2;
		else if (p[1])
			return -WARP_EMALFORMED;
		return 0;
	}
	p = strchr(buf, ':');
	if (p && strchr(p + 1, ':')) { /* bare IPv6 without brackets: no port */
		*host = buf;
		return 0;
	}
	if (p) {
		*p = '\0';
		*port = p + 1;
	}
	*host = buf;
	return 0;
}

int warp_ep_parse(const char *s, uint16_t default_port, struct sockaddr_storage *out)
{
	char buf[128], hostbuf[128];
	const char *host, *portstr;
	uint16_t port = default_port;
	char *pct;
	int err;

	if (!s)
		return -EINVAL;
	err = split(s, buf, sizeof(buf), &host, &portstr);
	if (err)
		return err;
	if (portstr) {
		err = parse_port(portstr, &port);
		if (err)
			return err;
	} else if (!default_port) {
		return -WARP_EMISSING;
	}
	memset(out, 0, sizeof(*out));
	snprintf(hostbuf, sizeof(hostbuf), "%s", host);
	pct = strchr(hostbuf, '%');
	if (pct)
		*pct++ = '\0';
	if (!pct && inet_pton(AF_INET, hostbuf, &((struct sockaddr_in *)out)->sin_addr) == 1) {
		struct sockaddr_in *in = (struct sockaddr_in *)out;

		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		return 0;
	}
	if (inet_pton(AF_INET6, hostbuf, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		if (pct) {
			char *end;
			unsigned long idx = strtoul(pct, &end, 10);

			in6->sin6_scope_id = *end ? if_nametoindex(pct) : (uint32_t)idx;
			if (!in6->sin6_scope_id)
				return -ENODEV;
		}
		return 0;
	}
	return -WARP_EMALFORMED;
}

int warp_ep_resolve(const char *s, uint16_t default_port, int family,
		    struct sockaddr_storage *out)
{
	char buf[256];
	const char *host, *portstr;
	struct addrinfo hints = { 0 }, *res = NULL;
	uint16_t port = default_port;
	int err = warp_ep_parse(s, default_port, out);

	if (err != -WARP_EMALFORMED)
		return err;
	err = split(s, buf, sizeof(buf), &host, &portstr);
	if (err)
		return err;
	if (portstr && (err = parse_port(portstr, &port)))
		return err;
	if (!port)
		return -WARP_EMISSING;
	hints.ai_family = family ? family : AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return -EHOSTUNREACH;
	memset(out, 0, sizeof(*out));
	memcpy(out, res->ai_addr, res->ai_addrlen);
	warp_ep_set_port((struct sockaddr *)out, port);
	freeaddrinfo(res);
	return 0;
}

const char *warp_ep_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char ifn[IF_NAMESIZE];

	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		size_t n;

		inet_ntop(AF_INET6, &in6->sin6_addr, buf, (socklen_t)len);
		n = strlen(buf);
		if (in6->sin6_scope_id && n + 2 < len) {
			if (if_indextoname(in6->sin6_scope_id, ifn))
				snprintf(buf + n, len - n, "%%%s", ifn);
			else
				snprintf(buf + n, len - n, "%%%u", in6->sin6_scope_id);
		}
	} else {
		snprintf(buf, len, "?");
	}
	return buf;
}

const char *warp_ep_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char a[WARP_EP_STRLEN];

	warp_ep_addr_str(sa, a, sizeof(a));
	if (sa->sa_family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", a, warp_ep_port(sa));
	else
		snprintf(buf, len, "%s:%u", a, warp_ep_port(sa));
	return buf;
}

socklen_t warp_ep_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

uint16_t warp_ep_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

void warp_ep_set_port(struct sockaddr *sa, uint16_t port)
{
	if (sa->sa_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(port);
	else if (sa->sa_family == AF_INET6)
		((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

bool warp_ep_addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return !memcmp(&x->sin6_addr, &y->sin6_addr, 16) &&
		       (!IN6_IS_ADDR_LINKLOCAL(&x->sin6_addr) ||
			x->sin6_scope_id == y->sin6_scope_id);
	}
	return false;
}

bool warp_ep_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	return warp_ep_addr_equal(a, b) && warp_ep_port(a) == warp_ep_port(b);
}

void warp_ep_unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in in = { 0 };

	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
		return;
	in.sin_family = AF_INET;
	in.sin_port = in6->sin6_port;
	memcpy(&in.sin_addr, in6->sin6_addr.s6_addr + 12, 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &in, sizeof(in));
}

void warp_ep_addr16(const struct sockaddr *sa, uint8_t out[16])
{
	memset(out, 0, 16);
	if (sa->sa_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	}
}

bool warp_ep_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

bool warp_ep_is_linklocal(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 16) == 0xa9fe;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LINKLOCAL(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

bool warp_ep_is_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);

		return (a >> 24) == 10 || (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8 ||
		       (a >> 22) == (100u << 2 | 1) /* 100.64/10 */;
	}
	if (sa->sa_family == AF_INET6)
		return (((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr[0] & 0xfe) == 0xfc;
	return false;
}

void warp_ep_from_raw(struct sockaddr_storage *out, int family, const void *addr, uint16_t port,
		      uint32_t scope_id)
{
	memset(out, 0, sizeof(*out));
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)out;

		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		memcpy(&in->sin_addr, addr, 4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		memcpy(&in6->sin6_addr, addr, 16);
		in6->sin6_scope_id = scope_id;
	}
}
