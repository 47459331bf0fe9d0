// SPDX-License-Identifier: MIT
/*
 * NAT lab prober: the lab's own, warpgate-independent view of what a NAT does.
 *
 *   prober server --addr IP[,IP...] --ports P1,P2
 *	Serves on every address x port.  Per family the first two addresses and the two ports form
 *	the RFC 5780 grid: a request can ask for the reply to leave from the other port, the other
 *	address or both.  Also a rendezvous point (punch) and an echo responder (rtt).
 *   prober nat --server IP --server2 IP2 --port P1 --port2 P2 [--timeout-ms MS]
 *	From behind a NAT: mapping behaviour (with the port delta of sequential NATs), filtering
 *	behaviour and hairpinning, printed as key=value lines.
 *   prober rtt --to IP:PORT [-n N] [--interval-ms MS]     echo round trips to a prober server
 *   prober punch --server IP:PORT --id ME --peer OTHER [--ping] [-n N] [--timeout-ms MS]
 *	Meet OTHER through the server, punch a direct path, and (--ping) measure its round trip.
 *   prober listen --bind IP:PORT [--count N] [--timeout-ms MS] [--echo]
 *   prober send --to IP:PORT [--bind IP:PORT] [--data TEXT] [--wait-ms MS] [-n N]
 *	With -n, N datagrams "TEXT <seq>"; listen counts them (unique, dup, reordered).
 *   prober reply-after --to IP:PORT --after-ms MS [--keepalive-ms MS]
 *	The server answers only after MS: does the NAT mapping live that long (with keepalives)?
 *
 * Addresses are IP:PORT or [IPv6]:PORT.  Exit status 0 on success, 1 on a failed probe or
 * timeout, 2 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define MAGIC	0x57504750u /* "WPGP" */
#define VERSION 1
#define IDLEN	32
#define MAXSOCK 16
#define MAXREG	256
#define MAXLATE 64

enum { MAP_REQ = 1, MAP_RESP, REG, REG_RESP, ECHO, ECHO_RESP, PUNCH, PUNCH_ACK, DATA, BYE };
/* MAP_REQ flags; DELAYED: answer only after "seq" milliseconds (mapping-timeout tests). */
enum { CHANGE_PORT = 1, CHANGE_ADDR = 2, ALSO_SAME = 4, DELAYED = 8 };

struct wire_addr {
	uint8_t family; /* 4 or 6, 0 = none */
	uint8_t pad;
	uint16_t port;	/* network order */
	uint8_t addr[16];
} __attribute__((packed));

struct pmsg {
	uint32_t magic;
	uint8_t version;
	uint8_t type;
	uint8_t flags;
	uint8_t pad;
	uint32_t txid;
	uint32_t seq;
	uint64_t stamp;
	struct wire_addr observed; /* the request's source as the server saw it */
	struct wire_addr from;	   /* the server socket the reply left from */
	struct wire_addr peer;	   /* rendezvous: the peer's observed endpoint */
	char id[IDLEN];
	char peer_id[IDLEN];
} __attribute__((packed));

typedef struct sockaddr_storage ss_t;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint32_t rand32(void)
{
	static uint64_t s;

	if (!s)
		s = now_us() ^ ((uint64_t)getpid() << 20) ^ 0x9E3779B97F4A7C15ull;
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return (uint32_t)(s >> 11);
}

static socklen_t ss_len(const ss_t *a)
{
	return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static uint16_t ss_port(const ss_t *a)
{
	if (a->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
	return ntohs(((const struct sockaddr_in *)a)->sin_port);
}

static void ss_set_port(ss_t *a, uint16_t port)
{
	if (a->ss_family == AF_INET6)
		((struct sockaddr_in6 *)a)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)a)->sin_port = htons(port);
}

static bool ss_same_ip(const ss_t *a, const ss_t *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
	       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

static bool ss_equal(const ss_t *a, const ss_t *b)
{
	return ss_same_ip(a, b) && ss_port(a) == ss_port(b);
}

static const char *ss_str(const ss_t *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (a->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ss_port(a));
	} else if (a->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ss_port(a));
	} else {
		snprintf(buf, len, "none");
	}
	return buf;
}

#define SS(a) ss_str((a), (char[64]){ 0 }, 64)

/* "IP", "IP:PORT", "[IP6]:PORT" or bare "IP6"; port 0 when absent. */
static int parse_ep(const char *s, ss_t *out)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *port = NULL;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (s[0] == '[') {
		const char *e = strchr(s, ']');

		if (!e || (size_t)(e - s - 1) >= sizeof(host))
			return -EINVAL;
		n = (size_t)(e - s - 1);
		memcpy(host, s + 1, n);
		host[n] = 0;
		if (e[1] == ':')
			port = e + 2;
	} else {
		const char *c = strchr(s, ':');

		if (c && !strchr(c + 1, ':')) {
			n = (size_t)(c - s);
			port = c + 1;
		} else {
			n = strlen(s);
		}
		if (n >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, n);
		host[n] = 0;
	}
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)out)->sin_addr) == 1) {
		out->ss_family = AF_INET;
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
		out->ss_family = AF_INET6;
	} else {
		return -EINVAL;
	}
	if (port) {
		char *end;
		long p = strtol(port, &end, 10);

		if (*end || p < 0 || p > 65535)
			return -EINVAL;
		ss_set_port(out, (uint16_t)p);
	}
	return 0;
}

static void to_wire(const ss_t *a, struct wire_addr *w)
{
	memset(w, 0, sizeof(*w));
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)a;

		w->family = 4;
		w->port = in->sin_port;
		memcpy(w->addr, &in->sin_addr, 4);
	} else if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;

		w->family = 6;
		w->port = in6->sin6_port;
		memcpy(w->addr, &in6->sin6_addr, 16);
	}
}

static void from_wire(const struct wire_addr *w, ss_t *a)
{
	memset(a, 0, sizeof(*a));
	if (w->family == 4) {
		struct sockaddr_in *in = (struct sockaddr_in *)a;

		in->sin_family = AF_INET;
		in->sin_port = w->port;
		memcpy(&in->sin_addr, w->addr, 4);
	} else if (w->family == 6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)a;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = w->port;
		memcpy(&in6->sin6_addr, w->addr, 16);
	}
}

static int udp_socket(int family, const ss_t *bind_to)
{
	int s = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1;

	if (s < 0)
		return -1;
	if (family == AF_INET6)
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind_to) {
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, (const struct sockaddr *)bind_to, ss_len(bind_to)) < 0) {
			close(s);
			return -1;
		}
	}
	return s;
}

static void msg_init(struct pmsg *m, uint8_t type)
{
	memset(m, 0, sizeof(*m));
	m->magic = htonl(MAGIC);
	m->version = VERSION;
	m->type = type;
	m->txid = rand32();
}

static bool msg_ok(const struct pmsg *m, ssize_t n)
{
	return n == (ssize_t)sizeof(*m) && ntohl(m->magic) == MAGIC && m->version == VERSION;
}

static int send_msg(int s, const struct pmsg *m, const ss_t *to)
{
	return sendto(s, m, sizeof(*m), 0, (const struct sockaddr *)to, ss_len(to)) < 0 ? -errno :
											  0;
}

/* Receive one lab message on s within timeout_ms (0: poll once).  1 = got one, 0 = timeout. */
static int recv_msg(int s, struct pmsg *m, ss_t *from, int timeout_ms)
{
	struct pollfd pfd = { .fd = s, .events = POLLIN };
	uint64_t end = now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);

	for (;;) {
		int left = (int)(end - now_ms());
		socklen_t fl = sizeof(*from);
		ssize_t n;

		if (left < 0)
			left = 0;
		if (poll(&pfd, 1, left) <= 0)
			return 0;
		n = recvfrom(s, m, sizeof(*m), MSG_DONTWAIT, (struct sockaddr *)from, &fl);
		if (msg_ok(m, n))
			return 1;
		if (now_ms() >= end)
			return 0;
	}
}

/* Request/response with retransmission; the reply must carry the request's txid. */
static int xact(int s, const ss_t *dst, const struct pmsg *req, struct pmsg *resp, ss_t *from,
		int timeout_ms, int tries)
{
	int per = timeout_ms / (tries > 0 ? tries : 1);

	for (int t = 0; t < tries; t++) {
		uint64_t end = now_ms() + (uint64_t)per;

		send_msg(s, req, dst);
		while (now_ms() < end) {
			if (recv_msg(s, resp, from, (int)(end - now_ms())) &&
			    resp->txid == req->txid && resp->type == req->type + 1)
				return 0;
		}
	}
	return -ETIMEDOUT;
}

/* ------------------------------------------------------------------ server */

struct reg {
	char id[IDLEN];
	ss_t ep;
	uint64_t seen;
};

struct late {
	uint64_t due;
	int fd;
	ss_t to;
	struct pmsg m;
};

struct server {
	struct late late[MAXLATE];
	int fd[MAXSOCK];
	ss_t addr[MAXSOCK];
	int n;
	/* RFC 5780 grid per family: grid[fam][addr idx][port idx] = socket index or -1 */
	int grid[2][2][2];
	struct reg regs[MAXREG];
};

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

static int grid_pos(const struct server *sv, int i, int *fam, int *ai, int *pi)
{
	for (*fam = 0; *fam < 2; (*fam)++)
		for (*ai = 0; *ai < 2; (*ai)++)
			for (*pi = 0; *pi < 2; (*pi)++)
				if (sv->grid[*fam][*ai][*pi] == i)
					return 0;
	return -1;
}

static void serve_one(struct server *sv, int i)
{
	struct pmsg m, r;
	ss_t from;
	socklen_t fl = sizeof(from);
	ssize_t n = recvfrom(sv->fd[i], &m, sizeof(m), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
	int fam, ai, pi, out = i;

	if (!msg_ok(&m, n))
		return;
	r = m;
	r.type = m.type + 1;
	to_wire(&from, &r.observed);
	switch (m.type) {
	case MAP_REQ:
		if (m.flags & DELAYED) {
			for (int k = 0; k < MAXLATE; k++) {
				struct late *l = &sv->late[k];

				if (l->due)
					continue;
				l->due = now_ms() + ntohl(m.seq);
				l->fd = sv->fd[i];
				l->to = from;
				l->m = r;
				to_wire(&sv->addr[i], &l->m.from);
				break;
			}
			break;
		}
		if (grid_pos(sv, i, &fam, &ai, &pi) == 0) {
			int ca = m.flags & CHANGE_ADDR ? 1 : 0, cp = m.flags & CHANGE_PORT ? 1 : 0;
			int o = sv->grid[fam][ai ^ ca][pi ^ cp];

			if (o >= 0)
				out = o;
		}
		to_wire(&sv->addr[out], &r.from);
		send_msg(sv->fd[out], &r, &from);
		if (out != i && (m.flags & ALSO_SAME)) {
			to_wire(&sv->addr[i], &r.from);
			send_msg(sv->fd[i], &r, &from);
		}
		break;
	case REG: {
		struct reg *slot = NULL, *oldest = &sv->regs[0];
		uint64_t now = now_ms();

		m.id[IDLEN - 1] = m.peer_id[IDLEN - 1] = 0;
		for (int k = 0; k < MAXREG; k++) {
			struct reg *g = &sv->regs[k];

			if (!strcmp(g->id, m.id)) {
				slot = g;
				break;
			}
			if (g->seen < oldest->seen)
				oldest = g;
		}
		if (!slot)
			slot = oldest;
		snprintf(slot->id, sizeof(slot->id), "%s", m.id);
		slot->ep = from;
		slot->seen = now;
		for (int k = 0; k < MAXREG; k++) {
			struct reg *g = &sv->regs[k];

			if (g->id[0] && !strcmp(g->id, m.peer_id) && now - g->seen < 30000)
				to_wire(&g->ep, &r.peer);
		}
		to_wire(&sv->addr[i], &r.from);
		send_msg(sv->fd[i], &r, &from);
		break;
	}
	case ECHO:
		to_wire(&sv->addr[i], &r.from);
		send_msg(sv->fd[i], &r, &from);
		break;
	default:
		break;
	}
}

static int split_list(char *s, char **out, int max)
{
	int n = 0;

	for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ","))
		out[n++] = tok;
	return n;
}

static int cmd_server(char *addrs, char *ports)
{
	static struct server sv;
	char *alist[8], *plist[2];
	int na = split_list(addrs, alist, 8), np = split_list(ports, plist, 2);
	int count[2] = { 0, 0 };
	struct pollfd pfd[MAXSOCK];
	struct sigaction sa = { .sa_handler = on_stop };

	memset(sv.grid, 0xff, sizeof(sv.grid));
	if (!na || !np) {
		fprintf(stderr, "prober server: need --addr and --ports\n");
		return 2;
	}
	for (int a = 0; a < na; a++) {
		ss_t base;
		int fam;

		if (parse_ep(alist[a], &base) < 0) {
			fprintf(stderr, "prober server: bad address %s\n", alist[a]);
			return 2;
		}
		fam = base.ss_family == AF_INET6;
		for (int p = 0; p < np && sv.n < MAXSOCK; p++) {
			ss_t sa_ = base;
			int s;

			ss_set_port(&sa_, (uint16_t)atoi(plist[p]));
			s = udp_socket(sa_.ss_family, &sa_);
			if (s < 0) {
				fprintf(stderr, "prober server: bind %s: %s\n", SS(&sa_),
					strerror(errno));
				return 1;
			}
			if (count[fam] < 2)
				sv.grid[fam][count[fam]][p] = sv.n;
			sv.addr[sv.n] = sa_;
			sv.fd[sv.n] = s;
			pfd[sv.n].fd = s;
			pfd[sv.n].events = POLLIN;
			sv.n++;
		}
		count[fam]++;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("prober: serving %d sockets\n", sv.n);
	fflush(stdout);
	while (!stop) {
		uint64_t now = now_ms(), next = now + 1000;

		for (int k = 0; k < MAXLATE; k++) {
			struct late *l = &sv.late[k];

			if (l->due && l->due <= now) {
				send_msg(l->fd, &l->m, &l->to);
				l->due = 0;
			} else if (l->due && l->due < next) {
				next = l->due;
			}
		}
		if (poll(pfd, (nfds_t)sv.n, (int)(next - now)) <= 0)
			continue;
		for (int i = 0; i < sv.n; i++)
			if (pfd[i].revents & POLLIN)
				serve_one(&sv, i);
	}
	for (int i = 0; i < sv.n; i++)
		close(sv.fd[i]);
	return 0;
}

/* ------------------------------------------------------------------ nat */

/* Source address the kernel picks towards dst, with port. */
static int local_ep(int s, const ss_t *dst, ss_t *out)
{
	int t = socket(dst->ss_family, SOCK_DGRAM, 0);
	socklen_t l = sizeof(*out);
	ss_t bound;

	if (t < 0)
		return -1;
	if (connect(t, (const struct sockaddr *)dst, ss_len(dst)) < 0 ||
	    getsockname(t, (struct sockaddr *)out, &l) < 0) {
		close(t);
		return -1;
	}
	close(t);
	l = sizeof(bound);
	if (getsockname(s, (struct sockaddr *)&bound, &l) < 0)
		return -1;
	ss_set_port(out, ss_port(&bound));
	return 0;
}

static int map_once(int s, const ss_t *dst, ss_t *mapped, int timeout_ms)
{
	struct pmsg req, resp;
	ss_t from;

	msg_init(&req, MAP_REQ);
	if (xact(s, dst, &req, &resp, &from, timeout_ms, 3) < 0)
		return -1;
	from_wire(&resp.observed, mapped);
	return 0;
}

/* Ask the server at dst to answer from another socket; 1 = that answer got through. */
static int filter_once(const ss_t *dst, uint8_t change, int timeout_ms, bool *control)
{
	int s = udp_socket(dst->ss_family, NULL);
	int per = timeout_ms / 3, got = 0;
	struct pmsg req, resp;
	ss_t from;

	*control = false;
	if (s < 0)
		return -1;
	msg_init(&req, MAP_REQ);
	req.flags = change | ALSO_SAME;
	for (int t = 0; t < 3 && !*control; t++) {
		uint64_t end = now_ms() + (uint64_t)per;

		send_msg(s, &req, dst);
		while (now_ms() < end) {
			if (!recv_msg(s, &resp, &from, (int)(end - now_ms())) ||
			    resp.txid != req.txid)
				continue;
			if (ss_equal(&from, dst)) {
				*control = true;
				/* The changed answer left first; allow it a little slack. */
				end = now_ms() + 50;
			} else {
				got = 1;
			}
		}
	}
	close(s);
	return got;
}

static const char *mapping_name(const ss_t *local, const ss_t m[4], int nm)
{
	bool all = true;

	if (ss_equal(&m[0], local))
		return "none";
	for (int i = 1; i < nm; i++)
		all &= ss_equal(&m[i], &m[0]);
	if (all)
		return "endpoint-independent";
	if (nm == 4 && ss_equal(&m[0], &m[1]) && ss_equal(&m[2], &m[3]))
		return "address-dependent";
	return "address-and-port-dependent";
}

static int cmd_nat(const char *srv1, const char *srv2, int port1, int port2, int timeout_ms)
{
	ss_t dst[4], local, m[4];
	int nd = 0, nm = 0, s, ret = 0;
	bool c1, c2, c3;
	int fport, faddr, fboth;

	if (!srv1 || parse_ep(srv1, &dst[0]) < 0 || (srv2 && parse_ep(srv2, &dst[2]) < 0)) {
		fprintf(stderr, "prober nat: bad --server/--server2\n");
		return 2;
	}
	ss_set_port(&dst[0], (uint16_t)port1);
	dst[1] = dst[0];
	ss_set_port(&dst[1], (uint16_t)port2);
	nd = 2;
	if (srv2) {
		ss_set_port(&dst[2], (uint16_t)port1);
		dst[3] = dst[2];
		ss_set_port(&dst[3], (uint16_t)port2);
		nd = 4;
	}
	/* Mapping: one socket, the destinations in a fixed order (delta needs the order). */
	s = udp_socket(dst[0].ss_family, NULL);
	if (s < 0) {
		perror("prober: socket");
		return 1;
	}
	for (int i = 0; i < nd; i++) {
		if (map_once(s, &dst[i], &m[nm], timeout_ms) < 0) {
			if (i == 0) {
				printf("udp=blocked\nmapping=none\nfiltering=none\nhairpin=no\n");
				close(s);
				return 0;
			}
			printf("# no answer from %s\n", SS(&dst[i]));
			ret = 1;
			break;
		}
		nm++;
	}
	local_ep(s, &dst[0], &local);
	close(s);
	printf("udp=yes\nlocal=%s\nmapped=%s\n", SS(&local), SS(&m[0]));
	printf("mapped_all=");
	for (int i = 0; i < nm; i++)
		printf("%s%s", i ? "," : "", SS(&m[i]));
	printf("\nmapping=%s\n", mapping_name(&local, m, nm));
	printf("port_preserved=%s\n", ss_port(&m[0]) == ss_port(&local) ? "yes" : "no");
	if (nm >= 3) {
		int d0 = (int)ss_port(&m[1]) - (int)ss_port(&m[0]);
		bool same = true;

		for (int i = 2; i < nm; i++)
			same &= (int)ss_port(&m[i]) - (int)ss_port(&m[i - 1]) == d0;
		if (same)
			printf("delta=%d\n", d0);
		else
			printf("delta=random\n");
	}

	/* Filtering: a fresh socket (fresh mapping) per test so earlier answers cannot help. */
	fport = filter_once(&dst[0], CHANGE_PORT, timeout_ms, &c1);
	faddr = nd == 4 ? filter_once(&dst[0], CHANGE_ADDR, timeout_ms, &c2) : -1;
	fboth = nd == 4 ? filter_once(&dst[0], CHANGE_ADDR | CHANGE_PORT, timeout_ms, &c3) : -1;
	printf("filter_port=%s\nfilter_addr=%s\nfilter_both=%s\n", fport > 0 ? "pass" : "drop",
	       faddr > 0 ? "pass" : "drop", fboth > 0 ? "pass" : "drop");
	if (!c1 || (nd == 4 && (!c2 || !c3))) {
		printf("# control answer missing: filtering result unreliable\n");
		ret = 1;
	}
	if (fboth > 0 && faddr > 0 && fport > 0)
		printf("filtering=endpoint-independent\n");
	else if (fport > 0 && faddr <= 0 && fboth <= 0)
		printf("filtering=address-dependent\n");
	else if (fport <= 0 && faddr <= 0 && fboth <= 0)
		printf("filtering=address-and-port-dependent\n");
	else
		printf("filtering=inconsistent\n");

	/* Hairpin: the second socket sends to the first one's public mapping. */
	{
		int h1 = udp_socket(dst[0].ss_family, NULL), h2 = udp_socket(dst[0].ss_family, NULL);
		ss_t m1, m2, from;
		struct pmsg d, r;
		bool got = false;

		if (h1 >= 0 && h2 >= 0 && !map_once(h1, &dst[0], &m1, timeout_ms) &&
		    !map_once(h2, &dst[0], &m2, timeout_ms)) {
			msg_init(&d, DATA);
			for (int t = 0; t < 3 && !got; t++) {
				uint64_t end = now_ms() + (uint64_t)(timeout_ms / 3);

				send_msg(h2, &d, &m1);
				while (!got && now_ms() < end)
					got = recv_msg(h1, &r, &from, (int)(end - now_ms())) &&
					      r.txid == d.txid;
			}
			printf("hairpin=%s\n", got ? "yes" : "no");
			if (got)
				printf("hairpin_src=%s\nhairpin_src_is_mapping=%s\n", SS(&from),
				       ss_equal(&from, &m2) ? "yes" : "no");
		} else {
			printf("hairpin=unknown\n");
		}
		if (h1 >= 0)
			close(h1);
		if (h2 >= 0)
			close(h2);
	}
	return ret;
}

/* ------------------------------------------------------------------ rtt, punch */

#define MAXSAMPLES 4096

struct rtt_stats {
	double min, max, sum, sum2;
	double sample[MAXSAMPLES];
	int n, lost, dup;
};

static void rtt_add(struct rtt_stats *st, double ms)
{
	if (!st->n || ms < st->min)
		st->min = ms;
	if (!st->n || ms > st->max)
		st->max = ms;
	st->sum += ms;
	st->sum2 += ms * ms;
	if (st->n < MAXSAMPLES)
		st->sample[st->n] = ms;
	st->n++;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median shrugs off the odd scheduling stall of a busy machine; avg and max do not. */
static int rtt_print(struct rtt_stats *st)
{
	double avg = st->n ? st->sum / st->n : 0;
	double var = st->n ? st->sum2 / st->n - avg * avg : 0;
	int k = st->n < MAXSAMPLES ? st->n : MAXSAMPLES;
	double med = 0;

	if (k) {
		qsort(st->sample, (size_t)k, sizeof(st->sample[0]), cmp_double);
		med = k % 2 ? st->sample[k / 2] : (st->sample[k / 2 - 1] + st->sample[k / 2]) / 2;
	}
	printf("rtt_ms min=%.3f median=%.3f avg=%.3f max=%.3f mdev=%.3f n=%d lost=%d dup=%d\n",
	       st->min, med, avg, st->max, sqrt(var > 0 ? var : 0), st->n, st->lost, st->dup);
	return st->n ? 0 : 1;
}

/* Echo round trips from socket s to dst; the peer answers ECHO with ECHO_RESP. */
static int ping_loop(int s, const ss_t *dst, int count, int interval_ms, struct rtt_stats *st)
{
	uint32_t prev = 0;

	for (int i = 0; i < count; i++) {
		struct pmsg req, resp;
		ss_t from;
		uint64_t t0 = now_us(), end = now_ms() + 1000;
		bool got = false;

		msg_init(&req, ECHO);
		req.seq = htonl((uint32_t)i);
		send_msg(s, &req, dst);
		while (!got && now_ms() < end) {
			if (!recv_msg(s, &resp, &from, (int)(end - now_ms())) ||
			    resp.type != ECHO_RESP)
				continue;
			if (resp.txid == req.txid)
				got = true;
			else if (prev && resp.txid == prev)
				st->dup++;
		}
		prev = req.txid;
		if (got)
			rtt_add(st, (double)(now_us() - t0) / 1000.0);
		else
			st->lost++;
		if (i + 1 < count && interval_ms > 0)
			usleep((useconds_t)interval_ms * 1000);
	}
	return 0;
}

static int cmd_rtt(const char *to, int count, int interval_ms)
{
	static struct rtt_stats st;
	ss_t dst;
	int s;

	if (!to || parse_ep(to, &dst) < 0 || !ss_port(&dst)) {
		fprintf(stderr, "prober rtt: need --to IP:PORT\n");
		return 2;
	}
	s = udp_socket(dst.ss_family, NULL);
	if (s < 0)
		return 1;
	ping_loop(s, &dst, count, interval_ms, &st);
	close(s);
	return rtt_print(&st);
}

static int cmd_punch(const char *server, const char *id, const char *peer, bool pinger, int count,
		     int interval_ms, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms, next_reg = 0, next_punch = 0;
	bool have_peer = false, heard = false, acked = false;
	static struct rtt_stats st;
	ss_t srv, peer_ep, from;
	struct pmsg m;
	int s, ret = 1;

	if (!server || !id || !peer || parse_ep(server, &srv) < 0) {
		fprintf(stderr, "prober punch: need --server IP:PORT --id ME --peer OTHER\n");
		return 2;
	}
	s = udp_socket(srv.ss_family, NULL);
	if (s < 0)
		return 1;
	/* Register until the server knows the peer, then punch until both directions work. */
	while (now_ms() < deadline) {
		uint64_t now = now_ms();

		if (now >= next_reg && !(heard && acked)) {
			msg_init(&m, REG);
			snprintf(m.id, IDLEN, "%s", id);
			snprintf(m.peer_id, IDLEN, "%s", peer);
			send_msg(s, &m, &srv);
			next_reg = now + 100;
		}
		if (have_peer && now >= next_punch) {
			msg_init(&m, heard ? PUNCH_ACK : PUNCH);
			send_msg(s, &m, &peer_ep);
			next_punch = now + 20;
		}
		if (!recv_msg(s, &m, &from, 10))
			continue;
		if (m.type == REG_RESP && m.peer.family && !heard) {
			from_wire(&m.peer, &peer_ep);
			have_peer = true;
		} else if (m.type == PUNCH || m.type == PUNCH_ACK) {
			/* Answer where it really came from: the peer's NAT may map per destination. */
			peer_ep = from;
			have_peer = heard = true;
			if (m.type == PUNCH_ACK) {
				acked = true;
			} else {
				msg_init(&m, PUNCH_ACK);
				send_msg(s, &m, &peer_ep);
			}
		} else if (m.type == ECHO && heard) {
			m.type = ECHO_RESP;
			send_msg(s, &m, &from);
			acked = true;
		} else if (m.type == BYE) {
			ret = 0;
			break;
		}
		if (pinger && heard && acked) {
			ping_loop(s, &peer_ep, count, interval_ms, &st);
			msg_init(&m, BYE);
			for (int i = 0; i < 3; i++)
				send_msg(s, &m, &peer_ep);
			printf("peer=%s\n", SS(&peer_ep));
			ret = rtt_print(&st);
			break;
		}
	}
	if (ret && !pinger && heard)
		ret = 0;
	if (!heard)
		printf("punch=failed\n");
	close(s);
	return ret;
}

/* ------------------------------------------------------------------ listen, send */

/*
 * Datagrams whose payload ends in " <seq>" (as "send --count" makes them) are also counted:
 * unique, duplicated and reordered (arrived after a higher sequence number).
 */
static int cmd_listen(const char *bind_to, int count, int timeout_ms, bool echo, bool quiet)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	static uint8_t seen[65536 / 8];
	long highest = -1;
	int s, got = 0, uniq = 0, dup = 0, reord = 0;
	char buf[2048];
	ss_t b, from;

	if (!bind_to || parse_ep(bind_to, &b) < 0) {
		fprintf(stderr, "prober listen: need --bind IP:PORT\n");
		return 2;
	}
	s = udp_socket(b.ss_family, &b);
	if (s < 0) {
		fprintf(stderr, "prober listen: bind %s: %s\n", bind_to, strerror(errno));
		return 1;
	}
	printf("listening=%s\n", bind_to);
	fflush(stdout);
	while (got < count) {
		struct pollfd pfd = { .fd = s, .events = POLLIN };
		int left = timeout_ms > 0 ? (int)(deadline - now_ms()) : -1;
		socklen_t fl = sizeof(from);
		const char *sp;
		ssize_t n;

		if (timeout_ms > 0 && left <= 0)
			break;
		if (poll(&pfd, 1, left) <= 0)
			continue;
		n = recvfrom(s, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&from, &fl);
		if (n < 0)
			continue;
		buf[n] = 0;
		if (echo)
			sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
		sp = strrchr(buf, ' ');
		if (sp && sp[1] >= '0' && sp[1] <= '9') {
			long seq = strtol(sp + 1, NULL, 10) & 0xffff;

			if (seen[seq / 8] & (1u << (seq % 8))) {
				dup++;
			} else {
				seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
				uniq++;
				if (seq < highest)
					reord++;
				else
					highest = seq;
			}
		}
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] < 32 || buf[i] > 126)
				buf[i] = '.';
		if (!quiet)
			printf("from=%s len=%zd data=%s\n", SS(&from), n, buf);
		got++;
	}
	printf("received=%d unique=%d dup=%d reordered=%d\n", got, uniq, dup, reord);
	close(s);
	return got >= count ? 0 : 1;
}

static int cmd_send(const char *to, const char *bind_to, const char *data, int wait_ms, int count,
		    int interval_ms)
{
	char buf[2048];
	ss_t dst, b, from;
	int s;

	if (!to || parse_ep(to, &dst) < 0 || (bind_to && parse_ep(bind_to, &b) < 0)) {
		fprintf(stderr, "prober send: need --to IP:PORT\n");
		return 2;
	}
	s = udp_socket(dst.ss_family, bind_to ? &b : NULL);
	if (s < 0) {
		perror("prober send: socket");
		return 1;
	}
	for (int i = 0; i < count; i++) {
		int len = count > 1 ? snprintf(buf, sizeof(buf), "%s %d", data, i) :
				      snprintf(buf, sizeof(buf), "%s", data);

		if (sendto(s, buf, (size_t)len, 0, (struct sockaddr *)&dst, ss_len(&dst)) < 0) {
			perror("prober send");
			close(s);
			return 1;
		}
		if (i + 1 < count && interval_ms > 0)
			usleep((useconds_t)interval_ms * 1000);
	}
	if (wait_ms > 0) {
		struct pollfd pfd = { .fd = s, .events = POLLIN };
		socklen_t fl = sizeof(from);
		ssize_t n = -1;

		if (poll(&pfd, 1, wait_ms) > 0)
			n = recvfrom(s, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&from, &fl);
		close(s);
		if (n < 0) {
			printf("reply=none\n");
			return 1;
		}
		buf[n] = 0;
		printf("reply_from=%s len=%zd\n", SS(&from), n);
		return 0;
	}
	close(s);
	return 0;
}

/*
 * Ask a prober server to answer only after after_ms: the answer gets through only while the
 * NAT still holds the mapping (optionally refreshed by a keepalive every keepalive_ms).
 */
static int cmd_reply_after(const char *to, int after_ms, int keepalive_ms)
{
	uint64_t start = now_ms(), end = start + (uint64_t)after_ms + 1500, next_ka;
	struct pmsg req, resp;
	ss_t dst, from;
	int s;

	if (!to || parse_ep(to, &dst) < 0 || !ss_port(&dst) || after_ms < 0) {
		fprintf(stderr, "prober reply-after: need --to IP:PORT --after-ms MS\n");
		return 2;
	}
	s = udp_socket(dst.ss_family, NULL);
	if (s < 0)
		return 1;
	msg_init(&req, MAP_REQ);
	req.flags = DELAYED;
	req.seq = htonl((uint32_t)after_ms);
	send_msg(s, &req, &dst);
	next_ka = keepalive_ms > 0 ? start + (uint64_t)keepalive_ms : UINT64_MAX;
	while (now_ms() < end) {
		uint64_t now = now_ms(), wake = next_ka < end ? next_ka : end;

		if (now >= next_ka) {
			struct pmsg ka;

			/* Any outbound datagram on the mapping refreshes it. */
			msg_init(&ka, ECHO);
			send_msg(s, &ka, &dst);
			next_ka = now + (uint64_t)keepalive_ms;
			continue;
		}
		if (recv_msg(s, &resp, &from, (int)(wake - now)) && resp.txid == req.txid &&
		    resp.type == MAP_RESP) {
			printf("reply=yes after_ms=%llu\n", (unsigned long long)(now_ms() - start));
			close(s);
			return 0;
		}
	}
	printf("reply=none\n");
	close(s);
	return 1;
}

static void usage(FILE *f)
{
	fputs("usage: prober server --addr IP[,IP..] --ports P1[,P2]\n"
	      "       prober nat --server IP [--server2 IP] [--port P1] [--port2 P2] [--timeout-ms MS]\n"
	      "       prober rtt --to IP:PORT [-n N] [--interval-ms MS]\n"
	      "       prober punch --server IP:PORT --id ME --peer OTHER [--ping] [-n N]\n"
	      "                    [--interval-ms MS] [--timeout-ms MS]\n"
	      "       prober listen --bind IP:PORT [--count N] [--timeout-ms MS] [--echo] [--quiet]\n"
	      "       prober send --to IP:PORT [--bind IP:PORT] [--data TEXT] [--wait-ms MS]\n"
	      "                   [-n COUNT] [--interval-ms MS]\n"
	      "       prober reply-after --to IP:PORT --after-ms MS [--keepalive-ms MS]\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "ports", required_argument, NULL, 'P' },
		{ "server", required_argument, NULL, 's' },
		{ "server2", required_argument, NULL, 'S' },
		{ "port", required_argument, NULL, 'p' },
		{ "port2", required_argument, NULL, 'q' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "to", required_argument, NULL, 'T' },
		{ "bind", required_argument, NULL, 'b' },
		{ "data", required_argument, NULL, 'd' },
		{ "wait-ms", required_argument, NULL, 'w' },
		{ "count", required_argument, NULL, 'n' },
		{ "interval-ms", required_argument, NULL, 'i' },
		{ "id", required_argument, NULL, 'I' },
		{ "peer", required_argument, NULL, 'R' },
		{ "ping", no_argument, NULL, 'g' },
		{ "echo", no_argument, NULL, 'e' },
		{ "quiet", no_argument, NULL, 'Q' },
		{ "after-ms", required_argument, NULL, 'A' },
		{ "keepalive-ms", required_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *addrs = NULL, *ports = NULL;
	const char *srv1 = NULL, *srv2 = NULL, *to = NULL, *bind_to = NULL, *data = "natlab";
	const char *id = NULL, *peer = NULL, *cmd;
	int port1 = 4000, port2 = 4001, timeout_ms = -1, wait_ms = 0, count = -1, interval = 200;
	int after_ms = -1, keepalive_ms = 0;
	bool pinger = false, echo = false, quiet = false;
	int c;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			addrs = optarg;
			break;
		case 'P':
			ports = optarg;
			break;
		case 's':
			srv1 = optarg;
			break;
		case 'S':
			srv2 = optarg;
			break;
		case 'p':
			port1 = atoi(optarg);
			break;
		case 'q':
			port2 = atoi(optarg);
			break;
		case 't':
			timeout_ms = atoi(optarg);
			break;
		case 'T':
			to = optarg;
			break;
		case 'b':
			bind_to = optarg;
			break;
		case 'd':
			data = optarg;
			break;
		case 'w':
			wait_ms = atoi(optarg);
			break;
		case 'n':
			count = atoi(optarg);
			break;
		case 'i':
			interval = atoi(optarg);
			break;
		case 'I':
			id = optarg;
			break;
		case 'R':
			peer = optarg;
			break;
		case 'g':
			pinger = true;
			break;
		case 'e':
			echo = true;
			break;
		case 'Q':
			quiet = true;
			break;
		case 'A':
			after_ms = atoi(optarg);
			break;
		case 'K':
			keepalive_ms = atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(cmd, "server"))
		return cmd_server(addrs, ports);
	if (!strcmp(cmd, "nat"))
		return cmd_nat(srv1, srv2, port1, port2, timeout_ms > 0 ? timeout_ms : 600);
	if (!strcmp(cmd, "rtt"))
		return cmd_rtt(to, count > 0 ? count : 10, interval);
	if (!strcmp(cmd, "punch"))
		return cmd_punch(srv1, id, peer, pinger, count > 0 ? count : 10, interval,
				 timeout_ms > 0 ? timeout_ms : 10000);
	if (!strcmp(cmd, "listen"))
		return cmd_listen(bind_to, count > 0 ? count : 1, timeout_ms > 0 ? timeout_ms : 0,
				  echo, quiet);
	if (!strcmp(cmd, "send"))
		return cmd_send(to, bind_to, data, wait_ms, count > 0 ? count : 1,
				count > 0 ? interval : 0);
	if (!strcmp(cmd, "reply-after"))
		return cmd_reply_after(to, after_ms, keepalive_ms);
	usage(stderr);
	return 2;
}
