// SPDX-License-Identifier: MIT
/*
 * Keepalive peer for the netns tests: speaks only the keepalive part of the wire format.
 *
 *   bpf_ka_peer responder --netns NS --ifname IF --bind IP:PORT --peer IP:PORT
 *               --cid HEX --peer-cid HEX --name PIN [--tc] [--no-bpf] [--ready FILE]
 *       loads the fast path (XDP native, or TC with --tc), registers the pipe and answers
 *       whatever reaches its socket with the userspace twin until SIGTERM.
 *   bpf_ka_peer pinger --netns NS --bind IP:PORT --peer IP:PORT --cid HEX --peer-cid HEX
 *               --count N [--interval-ms MS] [--xdp-pass IF] [--no-csum] --expect all|none
 *       sends authenticated pings (nonce + keyed BLAKE2b over header and nonce) and checks
 *       every pong: type, CID, echoed nonce and authenticator.
 *   bpf_ka_peer stat --name PIN --cid HEX [--pin-root DIR]
 *       prints the pinned keepalive entry ("answered N age_ms M").
 *
 * Namespaces are entered with setns() rather than `ip netns exec`, which remounts /sys and
 * so hides bpffs pins.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sodium.h>

#include <warpgate/loop.h>
#include <warpgate/wire.h>

#include "bpf/fastpath.h"
#include "core/util.h"
#include "xdp_pass.skel.h"

static const uint8_t auth_key[32] = "warpgate-keepalive-test-key-0001";

struct args {
	const char *mode, *netns, *ifname, *bind, *peer, *name, *ready, *xdp_pass, *expect;
	const char *pin_root;
	uint8_t cid[8], peer_cid[8];
	int count, interval_ms;
	bool tc, no_bpf, no_csum;
};

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	stop = 1;
}

static int enter_netns(const char *name)
{
	char path[256];
	int fd, err = 0;

	if (!name)
		return 0;
	snprintf(path, sizeof(path), "/var/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (setns(fd, CLONE_NEWNET))
		err = -errno;
	close(fd);
	return err;
}

/* "198.18.0.1:7000" or "[fd00::1]:7000" */
static int parse_ep(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				 .ai_socktype = SOCK_DGRAM},
			*res;
	size_t hl;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (s[0] == '[') {
		s++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = 0;
	if (getaddrinfo(host, colon + 1, &hints, &res))
		return -EINVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static uint16_t ep_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
					      : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

static int bound_socket(const struct args *a, struct sockaddr_storage *peer, socklen_t *plen,
			uint16_t *lport)
{
	struct sockaddr_storage local;
	socklen_t llen;
	int s, one = 1;

	if (parse_ep(a->bind, &local, &llen) || parse_ep(a->peer, peer, plen)) {
		fprintf(stderr, "bad --bind/--peer\n");
		return -EINVAL;
	}
	s = socket(local.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (a->no_csum && setsockopt(s, SOL_SOCKET, SO_NO_CHECK, &one, sizeof(one)))
		fprintf(stderr, "SO_NO_CHECK: %s\n", strerror(errno));
	if (bind(s, (struct sockaddr *)&local, llen)) {
		fprintf(stderr, "bind %s: %s\n", a->bind, strerror(errno));
		close(s);
		return -errno;
	}
	*lport = ep_port(&local);
	return s;
}

static int run_responder(const struct args *a)
{
	struct warp_fp_opts o = {.name = a->name,
				 .pin_root = a->pin_root,
				 .flags = a->no_bpf ? WARP_FP_F_NO_BPF : 0};
	struct sockaddr_storage peer, src;
	socklen_t plen, slen;
	uint8_t buf[2048], reply[2048];
	struct warp_fp *fp = NULL;
	uint16_t lport;
	int s = -1, err = 0, ifindex;
	FILE *f;

	s = bound_socket(a, &peer, &plen, &lport);
	if (s < 0)
		return 1;
	fp = warp_fp_new(&o);
	if (!fp) {
		fprintf(stderr, "warp_fp_new: %s\n", strerror(errno));
		err = 1;
		goto out;
	}
	if (warp_fp_active(fp)) {
		ifindex = (int)if_nametoindex(a->ifname);
		err = warp_fp_attach(fp, ifindex, a->tc ? WARP_FP_ATTACH_TC : WARP_FP_ATTACH_NO_TC);
		if (err < 0) {
			fprintf(stderr, "attach %s: %s\n", a->ifname, strerror(-err));
			err = 1;
			goto out;
		}
	}
	err = warp_fp_ka_add(fp, a->cid, a->peer_cid, (struct sockaddr *)&peer, lport);
	if (err) {
		fprintf(stderr, "ka_add: %s\n", strerror(-err));
		err = 1;
		goto out;
	}
	if (a->ready) {
		f = fopen(a->ready, "w");
		if (f) {
			fprintf(f, "%s\n", warp_fp_status(fp));
			fclose(f);
		}
	}
	while (!stop) {
		struct pollfd p = {.fd = s, .events = POLLIN};
		size_t rlen = sizeof(reply);
		ssize_t n;

		if (poll(&p, 1, 200) <= 0)
			continue;
		slen = sizeof(src);
		n = recvfrom(s, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&src, &slen);
		if (n <= 0)
			continue;
		if (warp_fp_input(fp, buf, (size_t)n, (struct sockaddr *)&src, lport, 0, reply,
				  &rlen) == WARP_FP_REPLY)
			sendto(s, reply, rlen, 0, (struct sockaddr *)&src, slen);
	}
	err = 0;
out:
	warp_fp_free(fp);
	close(s);
	return err;
}

static void make_auth(uint8_t out[16], const uint8_t *ping)
{
	crypto_generichash(out, WARP_PING_AUTH_LEN, ping, WARP_HDR_LEN + WARP_PING_NONCE_LEN,
			   auth_key, sizeof(auth_key));
}

static int attach_xdp_pass(const char *ifname, struct xdp_pass_bpf **skel)
{
	struct bpf_link_create_opts lo = {.sz = sizeof(lo), .flags = XDP_FLAGS_DRV_MODE};
	int fd;

	*skel = xdp_pass_bpf__open_and_load();
	if (!*skel)
		return -errno;
	fd = bpf_link_create(bpf_program__fd((*skel)->progs.warp_xdp_pass),
			     (int)if_nametoindex(ifname), BPF_XDP, &lo);
	return fd < 0 ? -errno : fd;
}

static int run_pinger(const struct args *a)
{
	struct sockaddr_storage peer;
	struct xdp_pass_bpf *xp = NULL;
	uint8_t(*sent)[WARP_PING_LEN] = NULL;
	uint8_t buf[2048];
	socklen_t plen;
	int s, i, pongs = 0, bad = 0, link = -1, rc = 1;
	uint16_t lport;

	s = bound_socket(a, &peer, &plen, &lport);
	if (s < 0)
		return 1;
	if (a->xdp_pass) {
		link = attach_xdp_pass(a->xdp_pass, &xp);
		if (link < 0) {
			fprintf(stderr, "xdp_pass on %s: %s\n", a->xdp_pass, strerror(-link));
			goto out;
		}
	}
	sent = calloc((size_t)a->count, sizeof(*sent));
	if (!sent)
		goto out;
	for (i = 0; i < a->count && !stop; i++) {
		uint8_t *p = sent[i];
		uint64_t deadline;

		/* CID in a ping is the receiver's (the responder's) */
		memset(p, 0, WARP_PING_LEN);
		p[0] = WARP_HDR_FLAGS(WARP_PKT_PING);
		memcpy(p + WARP_CID_OFF, a->peer_cid, WARP_CID_LEN);
		p[WARP_PN_OFF + 7] = (uint8_t)i;
		p[WARP_PN_OFF + 6] = (uint8_t)(i >> 8);
		randombytes_buf(p + WARP_HDR_LEN, WARP_PING_NONCE_LEN);
		make_auth(p + WARP_HDR_LEN + WARP_PING_NONCE_LEN, p);
		if (sendto(s, p, WARP_PING_LEN, 0, (struct sockaddr *)&peer, plen) != WARP_PING_LEN)
			fprintf(stderr, "sendto: %s\n", strerror(errno));
		deadline = warp_time_ms() + (uint64_t)a->interval_ms;
		for (;;) {
			int64_t left = (int64_t)(deadline - warp_time_ms());
			struct pollfd pf = {.fd = s, .events = POLLIN};
			uint8_t want_auth[16];
			ssize_t n;
			int j;

			if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
				break;
			n = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
			if (n != WARP_PING_LEN || buf[0] != WARP_HDR_FLAGS(WARP_PKT_PONG) ||
			    memcmp(buf + WARP_CID_OFF, a->cid, WARP_CID_LEN)) {
				bad++;
				continue;
			}
			/* the pong echoes one of our pings: nonce, pn and authenticator */
			for (j = 0; j <= i; j++)
				if (!memcmp(buf + WARP_HDR_LEN, sent[j] + WARP_HDR_LEN,
					    WARP_PING_NONCE_LEN))
					break;
			if (j > i) {
				bad++;
				continue;
			}
			memcpy(buf + WARP_CID_OFF, a->peer_cid, WARP_CID_LEN);
			buf[0] = WARP_HDR_FLAGS(WARP_PKT_PING);
			make_auth(want_auth, buf);
			if (memcmp(buf, sent[j], WARP_PING_LEN) ||
			    memcmp(want_auth, buf + WARP_HDR_LEN + WARP_PING_NONCE_LEN, 16)) {
				bad++;
				continue;
			}
			sent[j][0] = 0; /* a duplicate pong would not match again */
			pongs++;
		}
	}
	printf("pings %d pongs %d bad %d\n", i, pongs, bad);
	if (!strcmp(a->expect, "all"))
		rc = pongs == a->count && !bad ? 0 : 1;
	else
		rc = pongs == 0 ? 0 : 1;
out:
	free(sent);
	if (link >= 0)
		close(link);
	xdp_pass_bpf__destroy(xp);
	close(s);
	return rc;
}

static int run_stat(const struct args *a)
{
	char path[512];
	struct warp_ka_entry e;
	struct timespec ts;
	int fd;

	snprintf(path, sizeof(path), "%s/%s/ka_map", a->pin_root ? a->pin_root : WARP_FP_PIN_ROOT,
		 a->name);
	fd = bpf_obj_get(path);
	if (fd < 0 || bpf_map_lookup_elem(fd, a->cid, &e)) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	printf("answered %llu age_ms %llu\n", (unsigned long long)e.answered,
	       (unsigned long long)(((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec -
				     e.last_seen_ns) /
				    1000000));
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {{"netns", 1, 0, 'n'},
					      {"ifname", 1, 0, 'i'},
					      {"bind", 1, 0, 'b'},
					      {"peer", 1, 0, 'p'},
					      {"cid", 1, 0, 'c'},
					      {"peer-cid", 1, 0, 'C'},
					      {"name", 1, 0, 'N'},
					      {"ready", 1, 0, 'r'},
					      {"count", 1, 0, 'k'},
					      {"interval-ms", 1, 0, 'I'},
					      {"xdp-pass", 1, 0, 'x'},
					      {"expect", 1, 0, 'e'},
					      {"tc", 0, 0, 't'},
					      {"no-bpf", 0, 0, 'B'},
					      {"no-csum", 0, 0, 'Z'},
					      {"pin-root", 1, 0, 'R'},
					      {0}};
	struct args a = {.count = 1, .interval_ms = 1000, .expect = "all", .name = "ka-test"};
	struct sigaction sa = {.sa_handler = on_term};
	int c, err;

	if (argc < 2) {
		fprintf(stderr, "usage: %s responder|pinger|stat [options]\n", argv[0]);
		return 2;
	}
	a.mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			a.netns = optarg;
			break;
		case 'i':
			a.ifname = optarg;
			break;
		case 'b':
			a.bind = optarg;
			break;
		case 'p':
			a.peer = optarg;
			break;
		case 'c':
			if (warp_hex_decode(a.cid, 8, optarg))
				return 2;
			break;
		case 'C':
			if (warp_hex_decode(a.peer_cid, 8, optarg))
				return 2;
			break;
		case 'N':
			a.name = optarg;
			break;
		case 'r':
			a.ready = optarg;
			break;
		case 'k':
			a.count = atoi(optarg);
			break;
		case 'I':
			a.interval_ms = atoi(optarg);
			break;
		case 'x':
			a.xdp_pass = optarg;
			break;
		case 'e':
			a.expect = optarg;
			break;
		case 't':
			a.tc = true;
			break;
		case 'B':
			a.no_bpf = true;
			break;
		case 'Z':
			a.no_csum = true;
			break;
		case 'R':
			a.pin_root = optarg;
			break;
		default:
			return 2;
		}
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (sodium_init() < 0)
		return 1;
	err = enter_netns(a.netns);
	if (err) {
		fprintf(stderr, "setns %s: %s\n", a.netns, strerror(-err));
		return 1;
	}
	if (!strcmp(a.mode, "responder"))
		return run_responder(&a);
	if (!strcmp(a.mode, "pinger"))
		return run_pinger(&a);
	if (!strcmp(a.mode, "stat"))
		return run_stat(&a);
	fprintf(stderr, "unknown mode %s\n", a.mode);
	return 2;
}
