// SPDX-License-Identifier: MIT
/*
 * SNTP: packet codec and checks, timestamp arithmetic (incl. the 2036 era), selection,
 * the sans-IO query against fake servers in virtual time (falsetickers, kiss-o'-death,
 * spoofing, loss, silence), the synced clock, and a real chronyd on loopback (started by the
 * test with -x so it never touches the host clock; skipped when chronyd cannot run).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/loop.h>

#include "core/util.h"
#include "nat/sntp.h"
#include "nat/sntp_io.h"
#include "nat/sockaddr.h"

#define MS  1000000ll
#define SEC 1000000000ll

static void test_timestamps(void **state)
{
	/* the Unix epoch is 2208988800 s after the NTP epoch */
	assert_int_equal(warp_ntp_from_unix_ns(0), 2208988800ull << 32);
	assert_int_equal(warp_ntp_from_unix_ns(500 * MS), (2208988800ull << 32) | 0x80000000u);
	assert_int_equal(warp_ntp_to_unix_ns(2208988800ull << 32, 1700000000 * SEC), 0);
	/* 2040-01-01 is in NTP era 1: the seconds field wrapped, the pivot resolves it */
	{
		int64_t t = 2208988800ll * SEC + 123456789;
		uint64_t ts = warp_ntp_from_unix_ns(t);

		assert_true((ts >> 32) < 200000000u); /* wrapped */
		assert_int_equal(warp_ntp_to_unix_ns(ts, 2200000000ll * SEC) / 1000, t / 1000);
		/* a difference across the rollover */
		assert_int_equal(warp_ntp_diff_ns(ts, warp_ntp_from_unix_ns(t - 3 * SEC)) / 1000,
				 3000000);
	}
	assert_int_equal(
		warp_ntp_diff_ns(warp_ntp_from_unix_ns(1 * SEC), warp_ntp_from_unix_ns(3 * SEC)) /
			1000,
		-2000000);
}

static struct warp_ntp_packet server_reply(uint64_t org)
{
	struct warp_ntp_packet p = { .li = 0, .vn = 4, .mode = WARP_NTP_MODE_SERVER, .stratum = 2 };

	p.org = org;
	p.rec = warp_ntp_from_unix_ns(1700000000 * SEC);
	p.xmt = p.rec + 1000;
	p.refid = 0x7f7f0101;
	p.root_delay = 0x00000800; /* 31 ms */
	p.root_disp = 0x00000400;
	return p;
}

static void test_codec_and_checks(void **state)
{
	struct warp_ntp_packet p = server_reply(0x1122334455667788ull), q;
	uint8_t buf[200];

	assert_int_equal(warp_ntp_encode(&p, buf), WARP_NTP_LEN);
	assert_int_equal(buf[0], 0x24);
	assert_int_equal(warp_ntp_decode(buf, WARP_NTP_LEN, &q), 0);
	assert_memory_equal(&p, &q, sizeof(p));
	assert_int_equal(warp_ntp_decode(buf, 47, &q), -WARP_ETRUNCATED);
	assert_int_equal(warp_ntp_decode(buf, 50, &q), -WARP_EMALFORMED);
	assert_int_equal(warp_ntp_decode(buf, 68, &q), 0); /* with a MAC */
	p.li = 4;
	assert_int_equal(warp_ntp_encode(&p, buf), -EINVAL);

	p = server_reply(42);
	assert_int_equal(warp_ntp_check_reply(&p, 42), 0);
	assert_int_equal(warp_ntp_check_reply(&p, 43), -WARP_EREPLAY);
	p.mode = WARP_NTP_MODE_CLIENT;
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_EMALFORMED);
	p = server_reply(42);
	p.vn = 0;
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_EVERSION);
	p = server_reply(42);
	p.stratum = 0;
	p.refid = 0x52415445; /* RATE */
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_ERATELIMIT);
	p.refid = 0x44454e59; /* DENY */
	assert_int_equal(warp_ntp_check_reply(&p, 42), -EACCES);
	p.refid = 0x494e4954; /* INIT */
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_ESTATE);
	/* a forged kiss (wrong origin) is not believed */
	assert_int_equal(warp_ntp_check_reply(&p, 41), -WARP_EREPLAY);
	p = server_reply(42);
	p.li = 3;
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_ECLOCK);
	p = server_reply(42);
	p.stratum = 16;
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_ECLOCK);
	p = server_reply(42);
	p.xmt = 0;
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_EMALFORMED);
	p = server_reply(42);
	p.rec = 0;
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_EMALFORMED);
	p = server_reply(42);
	p.root_disp = 2 << 16; /* 2 s */
	assert_int_equal(warp_ntp_check_reply(&p, 42), -WARP_ERANGE);
}

static void test_sample_math(void **state)
{
	struct warp_ntp_sample s;
	int64_t t1 = 1700000000 * SEC;
	/* server 500 ms ahead, 10 ms each way, 1 ms processing */
	uint64_t T1 = warp_ntp_from_unix_ns(t1);
	uint64_t T2 = warp_ntp_from_unix_ns(t1 + 10 * MS + 500 * MS);
	uint64_t T3 = warp_ntp_from_unix_ns(t1 + 11 * MS + 500 * MS);
	uint64_t T4 = warp_ntp_from_unix_ns(t1 + 21 * MS);

	assert_int_equal(warp_ntp_sample(T1, T2, T3, T4, &s), 0);
	assert_true(llabs(s.offset_ns - 500 * MS) < 10);
	assert_true(llabs(s.delay_ns - 20 * MS) < 10);
	/* asymmetric path: the offset error is half the asymmetry */
	T4 = warp_ntp_from_unix_ns(t1 + 31 * MS);
	assert_int_equal(warp_ntp_sample(T1, T2, T3, T4, &s), 0);
	assert_true(llabs(s.offset_ns - 495 * MS) < 10);
	/* a reply "before" the request: impossible */
	T4 = warp_ntp_from_unix_ns(t1 - 50 * MS);
	T2 = T3 = warp_ntp_from_unix_ns(t1);
	assert_int_equal(warp_ntp_sample(T1, T2, T3, T4, &s), -WARP_ERANGE);
}

static void test_combine(void **state)
{
	struct warp_ntp_sample s[4] = {
		{ .offset_ns = 100 * MS, .delay_ns = 40 * MS, .server = 0 },
		{ .offset_ns = 110 * MS, .delay_ns = 20 * MS, .server = 1 },
		{ .offset_ns = 2000 * MS, .delay_ns = 10 * MS, .server = 2 }, /* falseticker */
		{ .offset_ns = 95 * MS, .delay_ns = 30 * MS, .server = 3 },
	};
	struct warp_sntp_result r;

	assert_int_equal(warp_sntp_combine(s, 0, WARP_SNTP_INTERSECT, &r), -WARP_ECLOCK);
	/* lowest delay trusts the falseticker; the intersection does not */
	assert_int_equal(warp_sntp_combine(s, 4, WARP_SNTP_LOWEST_DELAY, &r), 0);
	assert_int_equal(r.server, 2);
	assert_int_equal(r.offset_ns, 2000 * MS);
	assert_int_equal(warp_sntp_combine(s, 4, WARP_SNTP_INTERSECT, &r), 0);
	assert_int_equal(r.agree, 3);
	/* [80,120] & [100,120] & [80,110] = [100,110] */
	assert_int_equal(r.offset_ns, 105 * MS);
	assert_int_equal(r.uncertainty_ns, 5 * MS);
	/* one against one: no majority */
	assert_int_equal(warp_sntp_combine(s + 1, 2, WARP_SNTP_INTERSECT, &r), -WARP_ECLOCK);
	/* a single server is its own interval, widened by its root distance */
	s[1].root_dist_ns = 3 * MS;
	assert_int_equal(warp_sntp_combine(s + 1, 1, WARP_SNTP_INTERSECT, &r), 0);
	assert_int_equal(r.offset_ns, 110 * MS);
	assert_int_equal(r.uncertainty_ns, 13 * MS);
}

/* ---- fake servers in virtual time ---- */

enum fake_kind { FAKE_GOOD, FAKE_FALSE, FAKE_RATE, FAKE_SILENT, FAKE_UNSYNC, FAKE_DROP_FIRST };

struct fake {
	enum fake_kind kind;
	int64_t clock_offset; /* server clock - true time */
	int64_t one_way;      /* ns */
	int seen;
};

struct inflight {
	uint64_t at;
	unsigned int server;
	uint8_t data[48];
	bool spoof;
};

/* Local wall clock = true time + local_err; servers answer in virtual time. */
static int run_fake(struct fake *f, unsigned int n, enum warp_sntp_pick pick, int64_t local_err,
		    struct warp_sntp_result *res, struct warp_sntp **out)
{
	struct warp_sntp_cfg cfg;
	struct warp_sntp *s;
	struct inflight q[64];
	unsigned int nq = 0;
	uint64_t now = 1000 * SEC; /* monotonic */
	const int64_t true0 = 1700000000 * SEC;

	warp_sntp_cfg_default(&cfg);
	cfg.n_servers = n;
	cfg.pick = pick;
	for (unsigned int i = 0; i < n; i++) {
		char ip[32];

		snprintf(ip, sizeof(ip), "192.0.2.%u", i + 1);
		nat_sa_parse(ip, 123, &cfg.servers[i]);
	}
	s = warp_sntp_new(&cfg);
	assert_non_null(s);
	assert_int_equal(warp_sntp_start(s, now), 0);
	while (!warp_sntp_done(s)) {
		struct warp_sntp_tx tx;
		uint64_t next;
		int64_t truth = true0 + (int64_t)(now - 1000 * SEC);

		while (warp_sntp_poll_transmit(s, now, truth + local_err, &tx)) {
			struct fake *fk = &f[tx.server];
			struct warp_ntp_packet req, rep = { .vn = 4, .mode = WARP_NTP_MODE_SERVER };
			int64_t srv_now = truth + fk->one_way + fk->clock_offset;

			assert_int_equal(warp_ntp_decode(tx.data, tx.len, &req), 0);
			assert_int_equal(req.mode, WARP_NTP_MODE_CLIENT);
			assert_true(nat_sa_equal((struct sockaddr *)&tx.dest,
						 (struct sockaddr *)&cfg.servers[tx.server]));
			fk->seen++;
			if (fk->kind == FAKE_SILENT ||
			    (fk->kind == FAKE_DROP_FIRST && fk->seen == 1))
				continue;
			rep.stratum = fk->kind == FAKE_RATE ? 0 : 2;
			rep.refid = fk->kind == FAKE_RATE ? 0x52415445 : 0x0a000001;
			rep.li = fk->kind == FAKE_UNSYNC ? 3 : 0;
			rep.org = req.xmt;
			rep.rec = warp_ntp_from_unix_ns(srv_now);
			rep.xmt = warp_ntp_from_unix_ns(srv_now + 1 * MS);
			assert_true(nq + 2 <= 64);
			/* an off-path attacker races the real answer with a guess */
			{
				struct warp_ntp_packet forged = rep;

				forged.org ^= 1;
				forged.rec = forged.xmt = warp_ntp_from_unix_ns(true0 + 3600 * SEC);
				q[nq].at = now + (uint64_t)fk->one_way;
				q[nq].server = tx.server;
				q[nq].spoof = true;
				warp_ntp_encode(&forged, q[nq++].data);
			}
			q[nq].at = now + 2 * (uint64_t)fk->one_way + 1 * MS;
			q[nq].server = tx.server;
			q[nq].spoof = false;
			warp_ntp_encode(&rep, q[nq++].data);
		}
		next = warp_sntp_next_deadline(s);
		for (unsigned int i = 0; i < nq; i++)
			if (q[i].at < next)
				next = q[i].at;
		assert_true(next != UINT64_MAX && next >= now);
		now = next;
		for (unsigned int i = 0; i < nq;) {
			if (q[i].at > now) {
				i++;
				continue;
			}
			{
				int ret = warp_sntp_handle_input(
					s, q[i].server, q[i].data, 48,
					(struct sockaddr *)&cfg.servers[q[i].server], now);

				if (q[i].spoof)
					assert_int_equal(ret, 0);
			}
			q[i] = q[--nq];
		}
		warp_sntp_handle_timeout(s, now);
	}
	*out = s;
	return warp_sntp_result(s, res);
}

static void test_query_fake(void **state)
{
	struct warp_sntp_result r;
	struct warp_sntp *s;
	struct warp_ntp_sample smp;

	/* local clock 250 ms slow; one falseticker, one rate-limiting, one unsynchronised */
	{
		struct fake f[5] = {
			{ FAKE_GOOD, 0, 10 * MS, 0 },
			{ FAKE_GOOD, 2 * MS, 25 * MS, 0 },
			{ FAKE_FALSE, 5 * SEC, 5 * MS, 0 },
			{ FAKE_RATE, 0, 5 * MS, 0 },
			{ FAKE_DROP_FIRST, -1 * MS, 15 * MS, 0 },
		};

		assert_int_equal(run_fake(f, 5, WARP_SNTP_INTERSECT, -250 * MS, &r, &s), 0);
		assert_int_equal(r.samples, 4);
		assert_int_equal(r.agree, 3);
		assert_true(llabs(r.offset_ns - 250 * MS) < 5 * MS);
		assert_true(r.uncertainty_ns < 20 * MS);
		assert_int_equal(warp_sntp_server_status(s, 3, NULL), -WARP_ERATELIMIT);
		assert_int_equal(warp_sntp_server_status(s, 4, &smp), 0); /* after a resend */
		assert_true(f[4].seen == 2);
		warp_sntp_free(s);
	}
	/* lowest delay */
	{
		struct fake f[2] = { { FAKE_GOOD, 0, 40 * MS, 0 },
				     { FAKE_GOOD, 3 * MS, 2 * MS, 0 } };

		assert_int_equal(run_fake(f, 2, WARP_SNTP_LOWEST_DELAY, 0, &r, &s), 0);
		assert_int_equal(r.server, 1);
		assert_true(llabs(r.offset_ns - 3 * MS) < 1 * MS);
		warp_sntp_free(s);
	}
	/* nobody usable: a distinct error, never the local clock */
	{
		struct fake f[3] = { { FAKE_SILENT, 0, 0, 0 },
				     { FAKE_UNSYNC, 0, 5 * MS, 0 },
				     { FAKE_RATE, 0, 5 * MS, 0 } };

		assert_int_equal(run_fake(f, 3, WARP_SNTP_INTERSECT, 0, &r, &s), -WARP_ECLOCK);
		assert_int_equal(warp_sntp_server_status(s, 0, NULL), -ETIMEDOUT);
		assert_int_equal(warp_sntp_server_status(s, 1, NULL), -WARP_ECLOCK);
		assert_int_equal(f[0].seen, 3); /* all retries were sent */
		warp_sntp_free(s);
	}
}

static void test_synced_clock(void **state)
{
	struct warp_synced_clock c;
	struct warp_sntp_result r = { .offset_ns = 250 * MS, .uncertainty_ns = 5 * MS };
	int64_t now;

	warp_clock_init(&c);
	assert_int_equal(warp_clock_now_ns_at(&c, 0, &now), -WARP_ECLOCK);
	assert_int_equal(warp_clock_now_ms(&c, &now), -WARP_ECLOCK);
	warp_clock_set(&c, &r, 10 * SEC, 1700000000 * SEC);
	assert_int_equal(warp_clock_now_ns_at(&c, 10 * SEC, &now), 0);
	assert_int_equal(now, 1700000000 * SEC + 250 * MS);
	/* follows the monotonic clock, not later wall-clock steps */
	assert_int_equal(warp_clock_now_ns_at(&c, 70 * SEC, &now), 0);
	assert_int_equal(now, 1700000060 * SEC + 250 * MS);
	/* 60 s at 50 ppm adds 3 ms */
	assert_int_equal(warp_clock_uncertainty_ns(&c, 70 * SEC), 8 * MS);
	/* real clock: close to the wall clock + offset */
	warp_clock_set(&c, &r, warp_time_ns(), warp_sntp_wall_ns());
	assert_int_equal(warp_clock_now_ms(&c, &now), 0);
	assert_true(llabs(now - (int64_t)warp_wall_ms() - 250) < 50);
}

/* ---- real chronyd on loopback ---- */

static pid_t chrony_pid;
static char chrony_dir[64];

static void chrony_stop(void)
{
	if (chrony_pid <= 0)
		return;
	kill(chrony_pid, SIGTERM);
	for (int i = 0; i < 40 && waitpid(chrony_pid, NULL, WNOHANG) != chrony_pid; i++)
		usleep(50000);
	kill(chrony_pid, SIGKILL);
	waitpid(chrony_pid, NULL, 0);
	chrony_pid = 0;
}

struct qlog {
	int calls, status;
	struct warp_sntp_result r;
};

static void qcb(struct warp_sntp_query *q, int status, const struct warp_sntp_result *r, void *user)
{
	struct qlog *l = user;

	l->calls++;
	l->status = status;
	if (r)
		l->r = *r;
}

static bool qdone(void *user)
{
	return ((struct qlog *)user)->calls > 0;
}

static int query(uint16_t port, uint16_t dead_port, struct qlog *l, unsigned int *stratum)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_sntp_cfg cfg;
	struct warp_sntp_query *q;
	struct warp_ntp_sample smp;

	warp_sntp_cfg_default(&cfg);
	cfg.rto_ms = 300;
	cfg.timeout_ms = 2000;
	nat_sa_parse("127.0.0.1", port, &cfg.servers[cfg.n_servers++]);
	if (dead_port)
		nat_sa_parse("127.0.0.1", dead_port, &cfg.servers[cfg.n_servers++]);
	memset(l, 0, sizeof(*l));
	q = warp_sntp_query_start(loop, &cfg, qcb, l);
	assert_non_null(q);
	assert_int_equal(warp_loop_run_until(loop, qdone, l, 5000), 0);
	if (stratum)
		*stratum = warp_sntp_query_server(q, 0, &smp) == 0 ? smp.stratum : 0;
	if (dead_port)
		assert_int_equal(warp_sntp_query_server(q, 1, NULL), -ECONNREFUSED);
	warp_sntp_query_free(q);
	warp_loop_free(loop);
	return l->status;
}

static void test_chronyd(void **state)
{
	char conf[128], pidf[128], cmd[256];
	uint16_t port = (uint16_t)(20000 + warp_random_uniform(30000));
	struct qlog l;
	unsigned int stratum = 0;
	int fd, up = 0;

	if (access("/usr/sbin/chronyd", X_OK) != 0)
		skip(); /* chronyd is not installed */
	snprintf(chrony_dir, sizeof(chrony_dir), "/tmp/warp-chrony-XXXXXX");
	assert_non_null(mkdtemp(chrony_dir));
	snprintf(conf, sizeof(conf), "%s/chrony.conf", chrony_dir);
	snprintf(pidf, sizeof(pidf), "%s/chronyd.pid", chrony_dir);
	fd = open(conf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	dprintf(fd,
		"port %u\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\n"
		"pidfile %s\ndriftfile %s/drift\n",
		port, pidf, chrony_dir);
	close(fd);
	atexit(chrony_stop);
	chrony_pid = fork();
	if (chrony_pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		/* -x: never touch the system clock; -d: stay in the foreground */
		if (geteuid() == 0)
			execl("/usr/sbin/chronyd", "chronyd", "-x", "-d", "-u", "root", "-f", conf,
			      (char *)NULL);
		else
			execl("/usr/sbin/chronyd", "chronyd", "-x", "-d", "-f", conf, (char *)NULL);
		_exit(127);
	}
	assert_true(chrony_pid > 0);
	for (int i = 0; i < 30 && !up; i++) {
		usleep(100000);
		if (waitpid(chrony_pid, NULL, WNOHANG) == chrony_pid) {
			chrony_pid = 0;
			break;
		}
		up = query(port, 0, &l, NULL) == 0;
	}
	if (!up) {
		chrony_stop();
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", chrony_dir);
		if (system(cmd)) {
		}
		print_message("# chronyd could not be started here (not root?)\n");
		skip();
	}
	/* a live server and a closed port: the closed one fails fast, the result stands */
	assert_int_equal(query(port, (uint16_t)(port ^ 1), &l, &stratum), 0);
	assert_int_equal(stratum, 8);
	assert_int_equal(l.r.samples, 1);
	/* same host clock: offset within a few ms */
	assert_true(llabs(l.r.offset_ns) < 20 * MS);
	assert_true(l.r.uncertainty_ns < 50 * MS);

	/* chronyd gone: a distinct error */
	chrony_stop();
	assert_int_equal(query(port, 0, &l, NULL), -WARP_ECLOCK);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", chrony_dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timestamps),  cmocka_unit_test(test_codec_and_checks),
		cmocka_unit_test(test_sample_math), cmocka_unit_test(test_combine),
		cmocka_unit_test(test_query_fake),  cmocka_unit_test(test_synced_clock),
		cmocka_unit_test(test_chronyd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
