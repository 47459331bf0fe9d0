// SPDX-License-Identifier: MIT
/*
 * STUN client and NAT detection against a real coturn on loopback.  The test starts its own
 * `turnserver` (STUN only, no TLS/DTLS, random high ports, files in a temporary directory):
 * one instance with two addresses (127.0.0.1 and 127.0.0.2, RFC 5780 OTHER-ADDRESS and
 * CHANGE-REQUEST), one with a single address (plain RFC 5389) and one without UDP (to see
 * "UDP blocked, TCP works").  Every instance dies with the test (SIGTERM in teardown,
 * PR_SET_PDEATHSIG otherwise).  Skipped (exit 77) when turnserver is not installed.
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/loop.h>
#include <warpgate/nat.h>

#include "core/util.h"
#include "nat/natdetect.h"
#include "nat/natreport.h"
#include "nat/sockaddr.h"
#include "nat/stun_io.h"

struct server {
	pid_t pid;
	uint16_t port;
};

static char tmpdir[64];
static struct server s5780, splain, stcp;

static void stop(struct server *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGTERM);
	for (int i = 0; i < 40; i++) {
		if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
			s->pid = 0;
			return;
		}
		usleep(50000);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
}

static void stop_all(void)
{
	stop(&s5780);
	stop(&splain);
	stop(&stcp);
}

static void on_signal(int sig)
{
	stop_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

struct done_flag {
	struct warp_stun_result res;
	int calls;
};

static void got(const struct warp_stun_result *res, void *user)
{
	struct done_flag *f = user;

	f->res = *res;
	f->calls++;
}

static bool flag_set(void *user)
{
	return ((struct done_flag *)user)->calls > 0;
}

/* Binding over UDP or TCP from 127.0.0.1; returns the status. */
static int binding(struct warp_loop *loop, const char *server_ip, uint16_t port, bool tcp,
		   struct warp_stun_result *out)
{
	struct sockaddr_storage dest, any;
	struct done_flag f = { 0 };
	struct warp_stun_req req = { .cb = got, .user = &f, .software = "warpgate-test" };
	struct warp_stun_client_cfg cfg = { .rto_ms = 100, .rc = 4, .rm = 4, .ti_ms = 2000 };
	struct warp_stun_udp *t = NULL;

	nat_sa_parse(server_ip, port, &dest);
	nat_sa_parse("127.0.0.1:0", 0, &any);
	req.dest = (struct sockaddr *)&dest;
	if (tcp) {
		if (!warp_stun_tcp_request(loop, &cfg, NULL, &req))
			return -errno;
	} else {
		t = warp_stun_udp_new(loop, &cfg);
		req.sock = warp_stun_udp_open(t, (struct sockaddr *)&any);
		if (req.sock < 0 || warp_stun_udp_request(t, &req, NULL)) {
			warp_stun_udp_free(t);
			return -EIO;
		}
	}
	warp_loop_run_until(loop, flag_set, &f, 3000);
	if (out)
		*out = f.res;
	warp_stun_udp_free(t);
	return f.calls ? f.res.status : -ETIMEDOUT;
}

static int start_server(struct server *s, const char *name, bool two_ips, bool udp)
{
	struct warp_loop *loop = warp_loop_new();
	int err = -1;

	for (int attempt = 0; attempt < 4 && err; attempt++) {
		char port[8], alt[8], log[128], pidf[128], db[128];
		char *argv[40];
		int n = 0;

		s->port = (uint16_t)(20000 + warp_random_uniform(30000));
		snprintf(port, sizeof(port), "%u", s->port);
		snprintf(alt, sizeof(alt), "%u", (unsigned int)s->port + 1);
		snprintf(log, sizeof(log), "%s/%s.log", tmpdir, name);
		snprintf(pidf, sizeof(pidf), "%s/%s.pid", tmpdir, name);
		snprintf(db, sizeof(db), "%s/%s.db", tmpdir, name);
		argv[n++] = "turnserver";
		argv[n++] = "-n";
		argv[n++] = "-S";
		argv[n++] = "--no-tls";
		argv[n++] = "--no-dtls";
		argv[n++] = "--no-cli";
		argv[n++] = "--no-stdout-log";
		argv[n++] = "--simple-log";
		argv[n++] = "-l";
		argv[n++] = log;
		argv[n++] = "--pidfile";
		argv[n++] = pidf;
		argv[n++] = "--userdb";
		argv[n++] = db;
		argv[n++] = "-L";
		argv[n++] = "127.0.0.1";
		if (two_ips) {
			argv[n++] = "-L";
			argv[n++] = "127.0.0.2";
			argv[n++] = "--alt-listening-port";
			argv[n++] = alt;
		}
		if (!udp)
			argv[n++] = "--no-udp";
		argv[n++] = "-p";
		argv[n++] = port;
		argv[n] = NULL;
		s->pid = fork();
		if (s->pid == 0) {
			int fd = open("/dev/null", O_RDWR);

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			execvp(argv[0], argv);
			_exit(127);
		}
		if (s->pid < 0)
			break;
		/* wait until it answers */
		for (int i = 0; i < 30 && err; i++) {
			usleep(100000);
			if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
				s->pid = 0;
				break;
			}
			err = binding(loop, "127.0.0.1", s->port, !udp, NULL);
		}
		if (err)
			stop(s);
	}
	warp_loop_free(loop);
	return err;
}

static int setup(void **state)
{
	if (system("command -v turnserver >/dev/null 2>&1") != 0) {
		fprintf(stderr, "turnserver (coturn) is not installed\n");
		exit(77);
	}
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/warp-coturn-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	atexit(stop_all);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	if (start_server(&s5780, "rfc5780", true, true) ||
	    start_server(&splain, "plain", false, true) ||
	    start_server(&stcp, "tcponly", false, false)) {
		fprintf(stderr, "turnserver did not come up on loopback\n");
		stop_all();
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	stop_all();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_binding_udp_tcp(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_stun_result r;

	assert_int_equal(binding(loop, "127.0.0.1", s5780.port, false, &r), 0);
	assert_int_equal(r.error_code, 0);
	assert_int_equal(r.mapped.ss_family, AF_INET);
	assert_true(r.rtt_ns < 1000000000ull);
	assert_int_equal(binding(loop, "127.0.0.1", s5780.port, true, &r), 0);
	assert_int_equal(r.mapped.ss_family, AF_INET);
	/* the alternate address answers too */
	assert_int_equal(binding(loop, "127.0.0.2", s5780.port + 1, false, &r), 0);
	warp_loop_free(loop);
}

struct detect_log {
	int calls, cached_calls;
	int status;
	bool final;
	struct warp_nat_report report, cached;
	uint64_t age;
};

static void detect_cb(struct warp_nat_detect *d, const struct warp_nat_report *r, int status,
		      bool cached, uint64_t age_ms, void *user)
{
	struct detect_log *l = user;

	if (cached) {
		l->cached_calls++;
		l->cached = *r;
		l->age = age_ms;
		return;
	}
	l->calls++;
	l->status = status;
	if (r)
		l->report = *r;
	l->final = true;
}

static bool detect_done(void *user)
{
	return ((struct detect_log *)user)->final;
}

static void run_detect(struct warp_nat_detect_cfg *cfg, struct detect_log *l)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_nat_detect *d;

	memset(l, 0, sizeof(*l));
	nat_sa_parse("127.0.0.1", 0, &cfg->bind);
	d = warp_nat_detect_start(loop, cfg, detect_cb, l);
	assert_non_null(d);
	assert_int_equal(warp_loop_run_until(loop, detect_done, l, 10000), 0);
	warp_nat_detect_free(d);
	warp_loop_free(loop);
	assert_int_equal(l->calls, 1);
	assert_int_equal(l->status, 0);
}

static void test_detect_rfc5780(void **state)
{
	struct warp_nat_detect_cfg cfg;
	struct detect_log l;
	const struct warp_nat_report *r = &l.report;
	json_t *j;

	warp_nat_detect_cfg_default(&cfg);
	cfg.cls.n_servers = 1;
	nat_sa_parse("127.0.0.1", s5780.port, &cfg.cls.servers[0]);
	cfg.cls.software = "warpgate-test";
	run_detect(&cfg, &l);
	/* loopback: no translation, no filtering, hairpinning trivially works */
	assert_int_equal(r->type, WARP_NAT_OPEN);
	assert_int_equal(r->mapping, WARP_NAT_BEH_ENDPOINT_INDEPENDENT);
	assert_int_equal(r->filtering, WARP_NAT_BEH_ENDPOINT_INDEPENDENT);
	assert_int_equal(r->delta, WARP_NAT_DELTA_NONE);
	assert_true(r->rfc5780);
	assert_false(r->nat);
	assert_true(r->udp);
	assert_true(r->hairpin);
	assert_int_equal(r->n_external, 1);
	assert_true(nat_sa_equal((struct sockaddr *)&r->external[0], (struct sockaddr *)&r->local));
	assert_true(r->duration_ms < 1000); /* every answer was conclusive */
	assert_true(r->measured_at_ms > 0);
	{
		bool alt_ok = false, change_ok = false;

		/* the run stops at the first conclusive answer: one alternate is enough */
		for (unsigned int i = 0; i < r->n_probes; i++) {
			bool alt = r->probes[i].kind == WARP_NAT_PROBE_ALT_IP ||
				   r->probes[i].kind == WARP_NAT_PROBE_ALT_IP_PORT;

			alt_ok |= alt && r->probes[i].ok;
			change_ok |= r->probes[i].kind == WARP_NAT_PROBE_CHANGE_IP_PORT &&
				     r->probes[i].ok;
		}
		assert_true(alt_ok);
		assert_true(change_ok);
	}
	j = warp_nat_report_to_json(r, 0);
	assert_string_equal(json_string_value(json_object_get(j, "type")), "open");
	json_decref(j);
}

static void test_detect_plain_and_cache(void **state)
{
	struct warp_nat_detect_cfg cfg;
	struct detect_log l;
	char cache[128];
	const char fp[] = "lo|127.0.0.1||";

	snprintf(cache, sizeof(cache), "%s/cache/nat.json", tmpdir);
	warp_nat_detect_cfg_default(&cfg);
	cfg.cls.n_servers = 1;
	nat_sa_parse("127.0.0.1", splain.port, &cfg.cls.servers[0]);
	cfg.cache_path = cache;
	cfg.fingerprint = fp;
	cfg.fingerprint_len = sizeof(fp);
	run_detect(&cfg, &l);
	/* no OTHER-ADDRESS: filtering cannot be measured */
	assert_false(l.report.rfc5780);
	assert_int_equal(l.report.filtering, WARP_NAT_BEH_UNKNOWN);
	assert_int_equal(l.report.mapping, WARP_NAT_BEH_ENDPOINT_INDEPENDENT);
	assert_int_equal(l.report.type, WARP_NAT_UDP_FIREWALL);
	assert_int_equal(l.cached_calls, 0);

	/* second run: the cached report comes first, the fresh one after */
	run_detect(&cfg, &l);
	assert_int_equal(l.cached_calls, 1);
	assert_int_equal(l.cached.type, WARP_NAT_UDP_FIREWALL);
	assert_true(l.age < 60000);
	assert_int_equal(l.report.type, WARP_NAT_UDP_FIREWALL);
}

static void test_detect_udp_blocked(void **state)
{
	struct warp_nat_detect_cfg cfg;
	struct detect_log l;

	warp_nat_detect_cfg_default(&cfg);
	cfg.cls.n_servers = 1;
	nat_sa_parse("127.0.0.1", stcp.port, &cfg.cls.servers[0]);
	cfg.cls.probe_timeout_ms = 600;
	run_detect(&cfg, &l);
	assert_int_equal(l.report.type, WARP_NAT_BLOCKED);
	assert_false(l.report.udp);
	assert_true(l.report.tcp);
	assert_int_equal(l.report.tcp_external.ss_family, AF_INET);
	assert_true(l.report.duration_ms >= 600 && l.report.duration_ms < 3000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_binding_udp_tcp),
		cmocka_unit_test(test_detect_rfc5780),
		cmocka_unit_test(test_detect_plain_and_cache),
		cmocka_unit_test(test_detect_udp_blocked),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
