// SPDX-License-Identifier: MIT
/*
 * NAT lab link delayer: holds every packet handed to it over NFQUEUE for a fixed time, then
 * accepts it.  One process serves one router: queue 0 carries packets leaving the site (they
 * enter the router from its LAN side), queue 1 packets entering it (from its WAN port).  The
 * kernel of this lab has no nft "queue" expression, so the delayer attaches itself with an
 * xtables-compat NFQUEUE target (with bypass: if the delayer dies packets pass undelayed).
 *
 *   delayer run [--delay-ms MS] [--reorder PCT] [--reorder-gap-ms MS] [--conf FILE]
 *               [--table NAME] [--seed N]
 *   delayer ctflush            flush this namespace's conntrack table (no conntrack tool here)
 *
 * SIGHUP re-reads --conf (lines "delay_ms=N", "reorder_pct=N", "reorder_gap_ms=N"), SIGUSR1
 * prints counters, SIGTERM releases every held packet and exits.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_tables_compat.h>
#include <linux/netfilter/xt_NFQUEUE.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter/nfnetlink_queue.h>

#define NQUEUES	     2
#define QUEUE_MAXLEN 65536
#define VERDICT_BUF  (64 * 1024)
#define NLBUF	     8192

struct held {
	uint64_t due;
	uint64_t seq;
	uint32_t id;
	uint16_t queue;
};

struct delayer {
	struct mnl_socket *nl;
	unsigned int portid;
	uint64_t delay_ns, gap_ns;
	unsigned int reorder_ppm;
	const char *conf;
	struct held *heap;
	size_t n, cap;
	uint64_t seq, rng;
	uint64_t pkts[NQUEUES], reordered, max_depth, late_ns_max;
	char *vbuf;
	size_t vlen;
};

static volatile sig_atomic_t got_hup, got_term, got_usr1;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		got_hup = 1;
	else if (sig == SIGUSR1)
		got_usr1 = 1;
	else
		got_term = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(struct delayer *d)
{
	/* xorshift64*: plenty for loss/reorder coin flips. */
	d->rng ^= d->rng >> 12;
	d->rng ^= d->rng << 25;
	d->rng ^= d->rng >> 27;
	return d->rng * 0x2545F4914F6CDD1Dull;
}

static bool held_before(const struct held *a, const struct held *b)
{
	return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static int heap_push(struct delayer *d, struct held h)
{
	size_t i;

	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 1024;
		struct held *p = realloc(d->heap, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		d->heap = p;
		d->cap = cap;
	}
	i = d->n++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!held_before(&h, &d->heap[parent]))
			break;
		d->heap[i] = d->heap[parent];
		i = parent;
	}
	d->heap[i] = h;
	if (d->n > d->max_depth)
		d->max_depth = d->n;
	return 0;
}

static struct held heap_pop(struct delayer *d)
{
	struct held top = d->heap[0], last = d->heap[--d->n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= d->n)
			break;
		if (c + 1 < d->n && held_before(&d->heap[c + 1], &d->heap[c]))
			c++;
		if (!held_before(&d->heap[c], &last))
			break;
		d->heap[i] = d->heap[c];
		i = c;
	}
	if (d->n)
		d->heap[i] = last;
	return top;
}

static int nl_send(struct delayer *d, const void *buf, size_t len)
{
	if (mnl_socket_sendto(d->nl, buf, len) < 0)
		return -errno;
	return 0;
}

static void verdict_flush(struct delayer *d)
{
	if (!d->vlen)
		return;
	if (nl_send(d, d->vbuf, d->vlen) < 0)
		fprintf(stderr, "delayer: verdict send: %s\n", strerror(errno));
	d->vlen = 0;
}

static void verdict_add(struct delayer *d, const struct held *h)
{
	struct nlmsghdr *nlh;

	if (d->vlen + 64 > VERDICT_BUF)
		verdict_flush(d);
	nlh = nfq_nlmsg_put(d->vbuf + d->vlen, NFQNL_MSG_VERDICT, h->queue);
	nfq_nlmsg_verdict_put(nlh, (int)h->id, NF_ACCEPT);
	d->vlen += NLMSG_ALIGN(nlh->nlmsg_len);
}

static void release_due(struct delayer *d, uint64_t now)
{
	while (d->n && d->heap[0].due <= now) {
		struct held h = heap_pop(d);

		if (now - h.due > d->late_ns_max)
			d->late_ns_max = now - h.due;
		verdict_add(d, &h);
	}
	verdict_flush(d);
}

/* Wait for the ack of the request just sent; returns 0 or -errno. */
static int nl_ack(struct mnl_socket *nl, unsigned int seq)
{
	char buf[NLBUF];
	unsigned int portid = mnl_socket_get_portid(nl);
	ssize_t n;

	for (;;) {
		n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (n < 0)
			return -errno;
		int ret = mnl_cb_run(buf, (size_t)n, seq, portid, NULL, NULL);
		if (ret < 0)
			return -errno;
		if (ret == MNL_CB_STOP)
			return 0;
	}
}

static int queue_config(struct delayer *d, uint16_t q)
{
	char buf[NLBUF];
	struct nlmsghdr *nlh;
	int err;

	nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q);
	nlh->nlmsg_flags |= NLM_F_ACK;
	nlh->nlmsg_seq = 100 + q;
	nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
	err = nl_send(d, nlh, nlh->nlmsg_len);
	if (!err)
		err = nl_ack(d->nl, nlh->nlmsg_seq);
	if (err)
		return err;

	nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q);
	nlh->nlmsg_flags |= NLM_F_ACK;
	nlh->nlmsg_seq = 200 + q;
	/* Metadata only: the delayer never looks at payloads. */
	nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_META, 0);
	nfq_nlmsg_cfg_put_qmaxlen(nlh, QUEUE_MAXLEN);
	mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_GSO));
	mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO));
	err = nl_send(d, nlh, nlh->nlmsg_len);
	if (!err)
		err = nl_ack(d->nl, nlh->nlmsg_seq);
	return err;
}

/* One nftables operation in its own batch, so a missing table fails only that operation. */
static int nft_one(struct mnl_socket *nl, uint16_t type, uint16_t flags, uint8_t family,
		   const char *table, const char *chain, uint16_t queue)
{
	static unsigned int seq = 1000;
	char buf[NLBUF];
	struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, sizeof(buf));
	struct nlmsghdr *nlh;
	struct nfgenmsg *nfg;
	unsigned int op_seq;
	int err;

	nlh = mnl_nlmsg_put_header(mnl_nlmsg_batch_current(b));
	nlh->nlmsg_type = NFNL_MSG_BATCH_BEGIN;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	nlh->nlmsg_seq = seq++;
	nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
	nfg->nfgen_family = AF_UNSPEC;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = htons(NFNL_SUBSYS_NFTABLES);
	mnl_nlmsg_batch_next(b);

	nlh = mnl_nlmsg_put_header(mnl_nlmsg_batch_current(b));
	nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | type;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	op_seq = nlh->nlmsg_seq = seq++;
	nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
	nfg->nfgen_family = family;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = 0;
	mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table);
	mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, chain);
	if (type == NFT_MSG_NEWRULE) {
		/* xt_NFQ_info_v3 padded to XT_ALIGN() as nft_compat insists. */
		uint8_t info[8] = { 0 };
		struct xt_NFQ_info_v3 q = { .queuenum = queue, .queues_total = 1,
					    .flags = NFQ_FLAG_BYPASS };
		struct nlattr *exprs, *elem, *data;

		memcpy(info, &q, sizeof(q));
		exprs = mnl_attr_nest_start(nlh, NFTA_RULE_EXPRESSIONS);
		elem = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
		mnl_attr_put_strz(nlh, NFTA_EXPR_NAME, "target");
		data = mnl_attr_nest_start(nlh, NFTA_EXPR_DATA);
		mnl_attr_put_strz(nlh, NFTA_TARGET_NAME, "NFQUEUE");
		mnl_attr_put_u32(nlh, NFTA_TARGET_REV, htonl(3));
		mnl_attr_put(nlh, NFTA_TARGET_INFO, sizeof(info), info);
		mnl_attr_nest_end(nlh, data);
		mnl_attr_nest_end(nlh, elem);
		mnl_attr_nest_end(nlh, exprs);
	}
	mnl_nlmsg_batch_next(b);

	nlh = mnl_nlmsg_put_header(mnl_nlmsg_batch_current(b));
	nlh->nlmsg_type = NFNL_MSG_BATCH_END;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	nlh->nlmsg_seq = seq++;
	nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
	nfg->nfgen_family = AF_UNSPEC;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = htons(NFNL_SUBSYS_NFTABLES);
	mnl_nlmsg_batch_next(b);

	if (mnl_socket_sendto(nl, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b)) < 0)
		err = -errno;
	else
		err = nl_ack(nl, op_seq);
	mnl_nlmsg_batch_stop(b);
	return err;
}

/*
 * Point the empty chains "q_out" and "q_in" of TABLE (ip and ip6) at queues 0 and 1.  The lab's
 * script owns the tables and the rules that jump here; a missing ip6 table just means the site
 * has no IPv6.
 */
static int attach(const char *table)
{
	static const uint8_t families[] = { NFPROTO_IPV4, NFPROTO_IPV6 };
	static const char *const chains[NQUEUES] = { "q_out", "q_in" };
	struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);
	int attached = 0, err = 0;

	if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		err = -errno;
		goto out;
	}
	for (size_t f = 0; f < sizeof(families); f++) {
		for (uint16_t q = 0; q < NQUEUES; q++) {
			err = nft_one(nl, NFT_MSG_DELRULE, 0, families[f], table, chains[q], q);
			if (!err)
				err = nft_one(nl, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
					      families[f], table, chains[q], q);
			if (err == -ENOENT && families[f] == NFPROTO_IPV6)
				break;
			if (err) {
				fprintf(stderr, "delayer: attach %s %s/%s: %s\n",
					families[f] == NFPROTO_IPV4 ? "ip" : "ip6", table, chains[q],
					strerror(-err));
				goto out;
			}
			attached++;
		}
	}
	err = attached ? 0 : -ENOENT;
out:
	if (nl)
		mnl_socket_close(nl);
	return err;
}

static int on_packet(const struct nlmsghdr *nlh, void *data)
{
	struct delayer *d = data;
	struct nlattr *attr[NFQA_MAX + 1] = { NULL };
	struct nfgenmsg *nfg = mnl_nlmsg_get_payload(nlh);
	struct nfqnl_msg_packet_hdr *ph;
	struct held h;

	if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR])
		return MNL_CB_OK;
	ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
	h.id = ntohl(ph->packet_id);
	h.queue = ntohs(nfg->res_id);
	h.seq = d->seq++;
	h.due = now_ns() + d->delay_ns;
	if (d->reorder_ppm && rnd(d) % 1000000 < d->reorder_ppm) {
		/* Held longer so that packets behind it overtake it. */
		h.due += d->gap_ns;
		d->reordered++;
	}
	if (h.queue < NQUEUES)
		d->pkts[h.queue]++;
	if (heap_push(d, h) < 0) {
		verdict_add(d, &h); /* out of memory: pass it on rather than lose it */
		verdict_flush(d);
	}
	return MNL_CB_OK;
}

static void set_params(struct delayer *d, double delay_ms, double reorder_pct, double gap_ms)
{
	d->delay_ns = (uint64_t)(delay_ms * 1e6);
	d->reorder_ppm = (unsigned int)(reorder_pct * 10000.0);
	if (gap_ms < 0)
		gap_ms = delay_ms > 5 ? delay_ms : 5;
	d->gap_ns = (uint64_t)(gap_ms * 1e6);
}

static int load_conf(struct delayer *d)
{
	double delay = d->delay_ns / 1e6, reorder = d->reorder_ppm / 10000.0, gap = -1;
	char line[256];
	FILE *f;

	if (!d->conf)
		return 0;
	f = fopen(d->conf, "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "delay_ms=%lf", &delay);
		sscanf(line, "reorder_pct=%lf", &reorder);
		sscanf(line, "reorder_gap_ms=%lf", &gap);
	}
	fclose(f);
	set_params(d, delay, reorder, gap);
	return 0;
}

static void print_stats(const struct delayer *d)
{
	fprintf(stderr,
		"delayer: delay=%.3fms reorder=%.2f%% out=%llu in=%llu reordered=%llu held=%zu "
		"max_held=%llu max_late=%.3fms\n",
		d->delay_ns / 1e6, d->reorder_ppm / 10000.0, (unsigned long long)d->pkts[0],
		(unsigned long long)d->pkts[1], (unsigned long long)d->reordered, d->n,
		(unsigned long long)d->max_depth, d->late_ns_max / 1e6);
}

static int run(struct delayer *d, const char *table)
{
	size_t bufsz = 256 * 1024;
	char *buf = malloc(bufsz);
	struct sigaction sa = { .sa_handler = on_signal };
	sigset_t block, waitmask;
	int one = 1, rcvbuf = 16 << 20, fd, err = 0;

	d->vbuf = malloc(VERDICT_BUF);
	if (!buf || !d->vbuf) {
		err = -ENOMEM;
		goto out;
	}
	/* Timing is the point of this process: wake on time even when the machine is busy.  It
	 * only ever blocks in ppoll(), so a real-time class cannot starve anything. */
	prctl(PR_SET_TIMERSLACK, 1UL);
	sched_setscheduler(0, SCHED_FIFO, &(struct sched_param){ .sched_priority = 10 });
	sigemptyset(&block);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &waitmask);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);

	d->nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!d->nl || mnl_socket_bind(d->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		err = -errno;
		fprintf(stderr, "delayer: netlink: %s\n", strerror(errno));
		goto out;
	}
	d->portid = mnl_socket_get_portid(d->nl);
	fd = mnl_socket_get_fd(d->nl);
	setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	for (uint16_t q = 0; q < NQUEUES; q++) {
		err = queue_config(d, q);
		if (err) {
			fprintf(stderr, "delayer: bind queue %u: %s\n", q, strerror(-err));
			goto out;
		}
	}
	err = attach(table);
	if (err)
		goto out;
	printf("delayer: ready delay=%.3fms reorder=%.2f%%\n", d->delay_ns / 1e6,
	       d->reorder_ppm / 10000.0);
	fflush(stdout);

	while (!got_term) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		struct timespec ts, *tsp = NULL;
		uint64_t now = now_ns();

		release_due(d, now);
		if (d->n) {
			uint64_t wait = d->heap[0].due - now_ns();

			if ((int64_t)wait < 0)
				wait = 0;
			ts.tv_sec = (time_t)(wait / 1000000000ull);
			ts.tv_nsec = (long)(wait % 1000000000ull);
			tsp = &ts;
		}
		if (ppoll(&pfd, 1, tsp, &waitmask) < 0 && errno != EINTR) {
			err = -errno;
			break;
		}
		if (got_hup) {
			got_hup = 0;
			if (load_conf(d) < 0)
				fprintf(stderr, "delayer: reload %s: %s\n", d->conf, strerror(errno));
			print_stats(d);
		}
		if (got_usr1) {
			got_usr1 = 0;
			print_stats(d);
		}
		if (!(pfd.revents & POLLIN))
			continue;
		for (;;) {
			ssize_t n = recv(fd, buf, bufsz, MSG_DONTWAIT);

			if (n <= 0)
				break;
			mnl_cb_run(buf, (size_t)n, 0, d->portid, on_packet, d);
		}
	}
	/* Let every held packet go rather than drop it. */
	while (d->n) {
		struct held h = heap_pop(d);

		verdict_add(d, &h);
	}
	verdict_flush(d);
	print_stats(d);
out:
	if (d->nl)
		mnl_socket_close(d->nl);
	free(d->heap);
	free(d->vbuf);
	free(buf);
	return err ? 1 : 0;
}

static int ctflush(void)
{
	static const uint8_t families[] = { AF_INET, AF_INET6 };
	char buf[NLBUF];
	struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);
	int err = 0;

	if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		perror("delayer: netlink");
		if (nl)
			mnl_socket_close(nl);
		return 1;
	}
	for (size_t i = 0; i < sizeof(families) && !err; i++) {
		struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
		struct nfgenmsg *nfg;

		/* A delete without a tuple flushes the whole table of that family. */
		nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
		nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
		nlh->nlmsg_seq = 1 + (unsigned int)i;
		nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
		nfg->nfgen_family = families[i];
		nfg->version = NFNETLINK_V0;
		nfg->res_id = 0;
		if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
			err = -errno;
		else
			err = nl_ack(nl, nlh->nlmsg_seq);
	}
	mnl_socket_close(nl);
	if (err) {
		fprintf(stderr, "delayer: conntrack flush: %s\n", strerror(-err));
		return 1;
	}
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: delayer run [--delay-ms MS] [--reorder PCT] [--reorder-gap-ms MS]\n"
	      "                   [--conf FILE] [--table NAME] [--seed N]\n"
	      "       delayer ctflush\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "delay-ms", required_argument, NULL, 'd' },
		{ "reorder", required_argument, NULL, 'r' },
		{ "reorder-gap-ms", required_argument, NULL, 'g' },
		{ "conf", required_argument, NULL, 'c' },
		{ "table", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct delayer d = { 0 };
	double delay = 0, reorder = 0, gap = -1;
	const char *table = "wpg_q";
	int c;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "ctflush"))
		return ctflush();
	if (strcmp(argv[1], "run")) {
		usage(strcmp(argv[1], "--help") ? stderr : stdout);
		return strcmp(argv[1], "--help") ? 2 : 0;
	}
	d.rng = now_ns() ^ ((uint64_t)getpid() << 32);
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			delay = strtod(optarg, NULL);
			break;
		case 'r':
			reorder = strtod(optarg, NULL);
			break;
		case 'g':
			gap = strtod(optarg, NULL);
			break;
		case 'c':
			d.conf = optarg;
			break;
		case 't':
			table = optarg;
			break;
		case 's':
			d.rng = strtoull(optarg, NULL, 0) | 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (delay < 0 || delay > 60000 || reorder < 0 || reorder > 100) {
		fprintf(stderr, "delayer: delay must be 0..60000 ms and reorder 0..100 %%\n");
		return 2;
	}
	set_params(&d, delay, reorder, gap);
	if (d.conf && load_conf(&d) < 0 && errno != ENOENT) {
		fprintf(stderr, "delayer: %s: %s\n", d.conf, strerror(errno));
		return 1;
	}
	return run(&d, table);
}
