// SPDX-License-Identifier: MIT
/*
 * nbload: load generator for namebumpd.  Keeps many requests outstanding from one process over
 * several UDP sockets (distinct source ports, so the server's SO_REUSEPORT workers all get a
 * share) and reports requests per second and latency percentiles.
 *
 * PUT requests are signed before the clock starts: a secp256k1 signature costs as much as the
 * server's verification, so signing inline would measure the generator, not the server.  Each
 * name gets strictly increasing timestamps, so every PUT is a real update.
 *
 *   nbload --server 127.0.0.1:5300 --op put --count 20000 --names 2000
 *   nbload --server 127.0.0.1:5300 --op get --duration 5 --names 2000
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>
#include <warpgate/loop.h>

#include "core/util.h"
#include "name/local.h"
#include "name/proto.h"

#define MAX_SOCKS 16
#define LOST_MS	  1000

struct pkt {
	uint8_t *buf;
	uint16_t len;
};

struct inflight {
	bool used;
	uint32_t req; /* index into the request list */
	uint64_t sent_ns;
	int sock;
};

static struct {
	const char *server, *prefix, *op;
	unsigned int names, window, socks, value_size, pad, threads;
	unsigned long count;
	double duration;
	bool quiet;
} opt = {
	.server = "127.0.0.1:5300",
	.prefix = "load",
	.op = "get",
	.names = 1000,
	.window = 256,
	.socks = 8,
	.value_size = 200,
	.pad = 1024,
	.threads = 2,
	.count = 0,
	.duration = 5,
};

struct sign_job {
	struct pkt *pkts;
	struct warp_identity **keys;
	struct wn_signer *signers;
	unsigned long from, to;
	uint64_t base;
	int err;
};

static void *sign_range(void *arg)
{
	struct sign_job *j = arg;
	uint8_t value[WARP_NAME_VALUE_MAX];
	struct wn_request req;

	memset(value, 'v', sizeof(value));
	for (unsigned long i = j->from; i < j->to && !j->err; i++) {
		unsigned int name = (unsigned int)(i % opt.names);
		uint8_t buf[WN_MAX_PACKET];
		int n;

		memset(&req, 0, sizeof(req));
		req.type = WN_T_PUT;
		req.bump = 0;
		snprintf(req.name, sizeof(req.name), "%s%u.p2p", opt.prefix, name);
		/* round k of name i: updated grows by one ms per round */
		req.rec.kind = WN_REC_LIVE;
		req.rec.name_len = (uint8_t)strlen(req.name);
		memcpy(req.rec.name, req.name, req.rec.name_len + 1u);
		req.rec.value_len = (uint16_t)opt.value_size;
		memcpy(req.rec.value, value, opt.value_size);
		memcpy(req.rec.owner, j->signers[name].pub, WARP_PUBKEY_LEN);
		/* round k of name i: updated grows by one ms per round */
		req.rec.updated = j->base + i / opt.names;
		n = wn_record_sign_with(&req.rec, &j->signers[name]);
		if (!n)
			n = wn_request_encode(&req, buf, sizeof(buf), 0);
		if (n < 0) {
			j->err = n;
			break;
		}
		j->pkts[i].buf = malloc((size_t)n);
		if (!j->pkts[i].buf) {
			j->err = -ENOMEM;
			break;
		}
		memcpy(j->pkts[i].buf, buf, (size_t)n);
		j->pkts[i].len = (uint16_t)n;
	}
	return NULL;
}

static int build_puts(struct pkt *pkts, unsigned long count)
{
	struct warp_identity **keys = calloc(opt.names, sizeof(*keys));
	struct wn_signer *signers = calloc(opt.names, sizeof(*signers));
	struct sign_job jobs[8];
	pthread_t th[8];
	unsigned int nt = opt.threads < 1 ? 1 : opt.threads > 8 ? 8 : opt.threads;
	uint64_t base = warp_wall_ms();
	int err = 0;

	if (!keys || !signers)
		return -ENOMEM;
	for (unsigned int i = 0; i < opt.names; i++) {
		keys[i] = warp_identity_generate();
		if (!keys[i])
			return -ENOMEM;
		wn_signer_init(&signers[i], keys[i]);
	}
	for (unsigned int t = 0; t < nt; t++) {
		jobs[t] = (struct sign_job){
			pkts, keys, signers, count * t / nt, count * (t + 1) / nt, base, 0
		};
		pthread_create(&th[t], NULL, sign_range, &jobs[t]);
	}
	for (unsigned int t = 0; t < nt; t++) {
		pthread_join(th[t], NULL);
		if (jobs[t].err)
			err = jobs[t].err;
	}
	for (unsigned int i = 0; i < opt.names; i++) {
		wn_signer_wipe(&signers[i]);
		warp_identity_free(keys[i]);
	}
	free(signers);
	free(keys);
	return err;
}

static int build_gets(struct pkt *pkts, unsigned long count)
{
	for (unsigned long i = 0; i < count; i++) {
		struct wn_request req = { 0 };
		uint8_t buf[WN_MAX_PACKET];
		int n;

		req.type = WN_T_GET;
		snprintf(req.name, sizeof(req.name), "%s%lu.p2p", opt.prefix, i % opt.names);
		n = wn_request_encode(&req, buf, sizeof(buf), opt.pad);
		if (n < 0)
			return n;
		pkts[i].buf = malloc((size_t)n);
		if (!pkts[i].buf)
			return -ENOMEM;
		memcpy(pkts[i].buf, buf, (size_t)n);
		pkts[i].len = (uint16_t)n;
	}
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "server", required_argument, NULL, 's' },
		{ "op", required_argument, NULL, 'o' },
		{ "count", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "names", required_argument, NULL, 'N' },
		{ "window", required_argument, NULL, 'w' },
		{ "sockets", required_argument, NULL, 'S' },
		{ "value-size", required_argument, NULL, 'v' },
		{ "pad", required_argument, NULL, 'p' },
		{ "prefix", required_argument, NULL, 'P' },
		{ "sign-threads", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sockaddr_storage dst;
	socklen_t dlen;
	int fds[MAX_SOCKS], c;
	struct pkt *pkts;
	struct inflight *fl;
	uint32_t *lat;
	unsigned long count, count0, next = 0, done = 0, ok = 0, errs = 0, lost = 0, timed = 0;
	unsigned long status[WN_STATUS_MAX + 1] = { 0 };
	bool put;
	uint64_t t0, t_end, last_sweep;
	int err;

	while ((c = getopt_long(argc, argv, "s:o:n:d:N:w:S:v:p:P:t:qh", lo, NULL)) != -1) {
		switch (c) {
		case 's':
			opt.server = optarg;
			break;
		case 'o':
			opt.op = optarg;
			break;
		case 'n':
			opt.count = strtoul(optarg, NULL, 10);
			break;
		case 'd':
			opt.duration = strtod(optarg, NULL);
			break;
		case 'N':
			opt.names = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'w':
			opt.window = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'S':
			opt.socks = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'v':
			opt.value_size = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'p':
			opt.pad = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'P':
			opt.prefix = optarg;
			break;
		case 't':
			opt.threads = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		case 'q':
			opt.quiet = true;
			break;
		case 'h':
			printf("usage: nbload --server HOST:PORT --op get|put [--count N | "
			       "--duration S]\n"
			       "  [--names N] [--window OUTSTANDING] [--sockets N] [--value-size "
			       "B]\n"
			       "  [--pad BYTES] [--prefix P] [--sign-threads N] [--quiet]\n"
			       "PUT packets are pre-signed (not timed); GETs ask for the names\n"
			       "PREFIX0..PREFIX<N-1>.p2p, so run a PUT pass with the same --names "
			       "first.\n");
			return 0;
		default:
			return 2;
		}
	}
	put = !strcmp(opt.op, "put");
	if ((!put && strcmp(opt.op, "get")) || !opt.names || !opt.window || !opt.socks ||
	    opt.socks > MAX_SOCKS || opt.value_size > WARP_NAME_VALUE_MAX) {
		fprintf(stderr, "nbload: bad arguments (see --help)\n");
		return 2;
	}
	if (warp_crypto_init())
		return 1;
	if (wn_parse_hostport(opt.server, WARP_NAME_PORT, &dst, &dlen)) {
		fprintf(stderr, "nbload: bad server %s\n", opt.server);
		return 2;
	}
	/* a PUT pass signs count requests up front; a GET pass cycles through prebuilt ones */
	count = opt.count ? opt.count : put ? 20000 : 0;
	if (!count)
		count = (unsigned long)(opt.duration * 1000000); /* upper bound for a GET run */
	if (put && count < opt.names)
		count = opt.names;
	count0 = count;
	pkts = calloc(put ? count : opt.names, sizeof(*pkts));
	fl = calloc(opt.window, sizeof(*fl));
	lat = calloc(count, sizeof(*lat));
	if (!pkts || !fl || !lat)
		return 1;
	if (!opt.quiet)
		fprintf(stderr, "nbload: preparing %lu %s requests...\n", put ? count : opt.names,
			opt.op);
	err = put ? build_puts(pkts, count) : build_gets(pkts, opt.names);
	if (err) {
		fprintf(stderr, "nbload: %s\n", warp_strerror(err));
		return 1;
	}
	for (unsigned int i = 0; i < opt.socks; i++) {
		int sz = 4 << 20;

		fds[i] = socket(dst.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&dst, dlen) < 0) {
			perror("nbload: socket");
			return 1;
		}
		setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	t0 = warp_time_ns();
	t_end = opt.count || put ? UINT64_MAX : t0 + (uint64_t)(opt.duration * 1e9);
	last_sweep = t0;
	while (done < count) {
		struct pollfd pfd[MAX_SOCKS];
		uint8_t buf[WN_MAX_PACKET];
		uint64_t now = warp_time_ns();

		/* fill the window */
		for (unsigned int s = 0; s < opt.window && next < count && now < t_end; s++) {
			struct inflight *f = &fl[s];
			struct pkt *p;

			if (f->used)
				continue;
			p = &pkts[put ? next : next % opt.names];
			/* the id names the window slot; the record signature does not cover it */
			warp_put_u64(p->buf + 4, ((uint64_t)next << 20) | s);
			f->sock = (int)(s % opt.socks);
			if (send(fds[f->sock], p->buf, p->len, 0) < 0) {
				if (errno == EAGAIN || errno == ENOBUFS)
					break;
				perror("nbload: send");
				return 1;
			}
			f->used = true;
			f->req = (uint32_t)next++;
			f->sent_ns = now;
		}
		if (now >= t_end && next == done + 0 && next < count) {
			count = next; /* duration over: stop issuing */
		}
		if (now >= t_end)
			count = next;
		if (done >= count)
			break;
		for (unsigned int i = 0; i < opt.socks; i++)
			pfd[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		poll(pfd, opt.socks, 10);
		for (unsigned int i = 0; i < opt.socks; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			for (;;) {
				ssize_t n = recv(fds[i], buf, sizeof(buf), 0);
				uint64_t id;
				unsigned int slot;
				uint8_t st;

				if (n < (ssize_t)(WN_HDR_LEN + 2))
					break;
				id = warp_get_u64(buf + 4);
				slot = (unsigned int)(id & 0xfffff);
				if (slot >= opt.window || !fl[slot].used ||
				    fl[slot].req != (uint32_t)(id >> 20))
					continue;
				st = buf[WN_HDR_LEN];
				status[st < WN_STATUS_MAX ? st : WN_STATUS_MAX]++;
				if (st == WN_OK)
					ok++;
				else
					errs++;
				lat[timed++] =
					(uint32_t)((warp_time_ns() - fl[slot].sent_ns) / 1000);
				fl[slot].used = false;
				done++;
			}
		}
		now = warp_time_ns();
		if (now - last_sweep > 100000000ull) {
			last_sweep = now;
			for (unsigned int s = 0; s < opt.window; s++)
				if (fl[s].used && now - fl[s].sent_ns > LOST_MS * 1000000ull) {
					fl[s].used = false;
					lost++;
					done++;
				}
		}
	}
	{
		double secs = (double)(warp_time_ns() - t0) / 1e9;

		qsort(lat, timed, sizeof(*lat), cmp_u32);
		printf("%-4s %9lu req %10.0f req/s  p50 %6.2f ms  p99 %6.2f ms  ok %lu  errors %lu"
		       "  lost %lu\n",
		       put ? "PUT" : "GET", done, (double)done / secs,
		       timed ? lat[timed / 2] / 1000.0 : 0,
		       timed ? lat[timed * 99 / 100] / 1000.0 : 0, ok, errs, lost);
		for (unsigned int s = 1; s <= WN_STATUS_MAX; s++)
			if (status[s] && !opt.quiet)
				fprintf(stderr, "nbload: %lu x %s\n", status[s], wn_status_str(s));
	}
	for (unsigned long i = 0; i < (put ? count0 : opt.names); i++)
		free(pkts[i].buf);
	free(pkts);
	free(fl);
	free(lat);
	for (unsigned int i = 0; i < opt.socks; i++)
		close(fds[i]);
	return errs || lost ? 3 : 0;
}
