// SPDX-License-Identifier: MIT
/*
 * Socket helpers.  Listen sockets are bound to wildcard addresses with packet-info enabled,
 * so one socket per family serves every interface and replies leave from the address the
 * request came to (what a multi-homed host needs for NAT mappings to line up).
 */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/endpoint.h"
#include "net/sock.h"

static int setopt(int fd, int level, int name, int v)
{
	return setsockopt(fd, level, name, &v, sizeof(v)) < 0 ? -errno : 0;
}

static int sock_new(const struct sockaddr *addr, int type, unsigned int flags)
{
	int fd, err = 0, fam = addr->sa_family;

	fd = socket(fam, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (flags & WARP_SOCK_REUSEADDR)
		err = setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (!err && (flags & WARP_SOCK_REUSEPORT))
		err = setopt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
	if (!err && fam == AF_INET6)
		err = setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, !!(flags & WARP_SOCK_V6ONLY));
	if (!err && (flags & WARP_SOCK_PKTINFO))
		err = fam == AF_INET ? setopt(fd, IPPROTO_IP, IP_PKTINFO, 1)
				     : setopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
	if (!err && !(flags & WARP_SOCK_NOBIND) && bind(fd, addr, warp_ep_len(addr)) < 0)
		err = -errno;
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

int warp_sock_udp(const struct sockaddr *addr, unsigned int flags)
{
	int fd = sock_new(addr, SOCK_DGRAM, flags);

	if (fd >= 0) {
		/* Bursts (handshakes of many pipes, probe sprays) must not be dropped by a
		 * default-sized buffer; the kernel caps this at net.core.rmem_max. */
		setopt(fd, SOL_SOCKET, SO_RCVBUF, 1 << 21);
		setopt(fd, SOL_SOCKET, SO_SNDBUF, 1 << 21);
	}
	return fd;
}

int warp_sock_tcp(const struct sockaddr *addr, unsigned int flags)
{
	int fd = sock_new(addr, SOCK_STREAM, flags);

	if (fd < 0)
		return fd;
	setopt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	if ((flags & WARP_SOCK_LISTEN) && listen(fd, 128) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

int warp_sock_bind_dev(int fd, const char *ifname)
{
	if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) < 0)
		return -errno;
	return 0;
}

int warp_sock_local(int fd, struct sockaddr_storage *out)
{
	socklen_t len = sizeof(*out);

	memset(out, 0, sizeof(*out));
	return getsockname(fd, (struct sockaddr *)out, &len) < 0 ? -errno : 0;
}

#define BATCH_MAX 64

int warp_sock_recv_batch(int fd, struct warp_dgram *d, int n)
{
	struct mmsghdr msgs[BATCH_MAX];
	struct iovec iov[BATCH_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
		struct cmsghdr align;
	} ctl[BATCH_MAX];
	int got;

	if (n > BATCH_MAX)
		n = BATCH_MAX;
	memset(msgs, 0, sizeof(msgs[0]) * (size_t)n);
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = d[i].buf;
		iov[i].iov_len = d[i].len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &d[i].src;
		msgs[i].msg_hdr.msg_namelen = sizeof(d[i].src);
		msgs[i].msg_hdr.msg_control = ctl[i].buf;
		msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
	}
	got = recvmmsg(fd, msgs, (unsigned int)n, MSG_DONTWAIT, NULL);
	if (got < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
	for (int i = 0; i < got; i++) {
		struct msghdr *m = &msgs[i].msg_hdr;

		d[i].len = msgs[i].msg_len;
		d[i].truncated = m->msg_flags & MSG_TRUNC;
		d[i].ifindex = 0;
		memset(&d[i].dst, 0, sizeof(d[i].dst));
		for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
			if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
				struct in_pktinfo pi;
				struct sockaddr_in *sin = (struct sockaddr_in *)&d[i].dst;

				memcpy(&pi, CMSG_DATA(c), sizeof(pi));
				sin->sin_family = AF_INET;
				sin->sin_addr = pi.ipi_addr;
				d[i].ifindex = pi.ipi_ifindex;
			} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
				struct in6_pktinfo pi;
				struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&d[i].dst;

				memcpy(&pi, CMSG_DATA(c), sizeof(pi));
				sin6->sin6_family = AF_INET6;
				sin6->sin6_addr = pi.ipi6_addr;
				if (IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr))
					sin6->sin6_scope_id = pi.ipi6_ifindex;
				d[i].ifindex = (int)pi.ipi6_ifindex;
			}
		}
	}
	return got;
}

/* Fills a control buffer selecting the source address; returns its length (0: none). */
static size_t pktinfo_cmsg(void *ctl, size_t cap, const struct sockaddr *src, int family,
			   int ifindex)
{
	struct cmsghdr *c = ctl;

	if (!src || src->sa_family != family)
		return 0;
	memset(ctl, 0, cap);
	if (src->sa_family == AF_INET) {
		struct in_pktinfo pi = { 0 };

		pi.ipi_spec_dst = ((const struct sockaddr_in *)src)->sin_addr;
		pi.ipi_ifindex = ifindex;
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		return CMSG_SPACE(sizeof(pi));
	} else {
		struct in6_pktinfo pi = { 0 };

		pi.ipi6_addr = ((const struct sockaddr_in6 *)src)->sin6_addr;
		pi.ipi6_ifindex = (unsigned int)ifindex;
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		return CMSG_SPACE(sizeof(pi));
	}
}

union ctlbuf {
	char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
	struct cmsghdr align;
};

int warp_sock_sendto(int fd, const void *buf, size_t len, const struct sockaddr *dst,
		     const struct sockaddr *src, int ifindex)
{
	struct iovec iov = { (void *)buf, len };
	struct msghdr m = { 0 };
	union ctlbuf ctl;
	ssize_t n;

	m.msg_name = (void *)dst;
	m.msg_namelen = warp_ep_len(dst);
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_controllen = pktinfo_cmsg(ctl.buf, sizeof(ctl), src, dst->sa_family, ifindex);
	m.msg_control = m.msg_controllen ? ctl.buf : NULL;
	n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	return (int)n;
}

int warp_sock_sendmmsg(int fd, const struct iovec *pkts, int n, const struct sockaddr *dst,
		       const struct sockaddr *src, int ifindex)
{
	struct mmsghdr mm[BATCH_MAX];
	union ctlbuf ctl;
	size_t clen;
	int sent;

	if (n > BATCH_MAX)
		n = BATCH_MAX;
	clen = pktinfo_cmsg(ctl.buf, sizeof(ctl), src, dst->sa_family, ifindex);
	for (int i = 0; i < n; i++) {
		memset(&mm[i], 0, sizeof(mm[i]));
		mm[i].msg_hdr.msg_name = (void *)dst;
		mm[i].msg_hdr.msg_namelen = warp_ep_len(dst);
		mm[i].msg_hdr.msg_iov = (struct iovec *)&pkts[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		mm[i].msg_hdr.msg_control = clen ? ctl.buf : NULL;
		mm[i].msg_hdr.msg_controllen = clen;
	}
	sent = sendmmsg(fd, mm, (unsigned int)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	return sent < 0 ? -errno : sent;
}
