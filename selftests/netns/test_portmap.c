// SPDX-License-Identifier: MIT
/*
 * Port mapping against a real miniupnpd (UPnP IGD + NAT-PMP, nftables backend) in network
 * namespaces the test creates and removes itself:
 *
 *   [wan ns] 198.19.77.1/.2: coturn STUN (miniupnpd's ext_perform_stun needs one)
 *      |  veth
 *   [router ns] 198.19.77.10 (masquerade) | 192.168.77.1: miniupnpd
 *      |  veth
 *   [host ns] 192.168.77.2, default via .1: this test's thread runs here (setns)
 *
 * Checks: the race maps (UPnP and NAT-PMP reach the same rule), the mapping forwards a
 * datagram from the WAN to our socket, NAT-PMP renews a short lease, UPnP works alone
 * ("valid IGD, not connected" accepted), and nothing is left in the router's ruleset after
 * warp_portmap_free().  Needs root, ip, nft, miniupnpd and turnserver; exits 77 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/loop.h>

#include "core/util.h"
#include "nat/portmap.h"
#include "nat/sockaddr.h"

static char ns_w[32], ns_r[32], ns_h[32], dir[64];
static pid_t pid_stun, pid_upnp;
static int fd_root = -1, fd_host = -1, fd_wan = -1;
static bool made;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static void kill_wait(pid_t *pid)
{
	if (*pid <= 0)
		return;
	kill(*pid, SIGTERM);
	for (int i = 0; i < 40 && waitpid(*pid, NULL, WNOHANG) != *pid; i++)
		usleep(50000);
	kill(*pid, SIGKILL);
	waitpid(*pid, NULL, 0);
	*pid = 0;
}

static void cleanup(void)
{
	if (fd_root >= 0)
		setns(fd_root, CLONE_NEWNET);
	kill_wait(&pid_upnp);
	kill_wait(&pid_stun);
	if (made) {
		sh("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null; ip netns del %s "
		   "2>/dev/null",
		   ns_w, ns_r, ns_h);
		sh("rm -rf '%s'", dir);
		made = false;
	}
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static pid_t spawn_in(const char *ns, char *const argv[], const char *log)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		char *args[40] = { "ip", "netns", "exec", (char *)ns };
		int n = 4;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (int i = 0; argv[i] && n < 39; i++)
			args[n++] = argv[i];
		args[n] = NULL;
		dup2(fd, 1);
		dup2(fd, 2);
		execvp("ip", args);
		_exit(127);
	}
	return pid;
}

static void skip_all(const char *why)
{
	fprintf(stderr, "%s\n", why);
	exit(77);
}

static int setup(void **state)
{
	char conf[128], log[128], stunlog[128], pidf[128], db[128];
	FILE *f;

	if (geteuid() != 0)
		skip_all("needs root (network namespaces, nftables)");
	if (sh("command -v ip nft miniupnpd turnserver >/dev/null 2>&1"))
		skip_all("needs ip, nft, miniupnpd and turnserver");
	snprintf(ns_w, sizeof(ns_w), "wpgpm%dw", getpid());
	snprintf(ns_r, sizeof(ns_r), "wpgpm%dr", getpid());
	snprintf(ns_h, sizeof(ns_h), "wpgpm%dh", getpid());
	snprintf(dir, sizeof(dir), "/tmp/warp-portmap-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	atexit(cleanup);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	if (sh("ip netns add %s && ip netns add %s && ip netns add %s", ns_w, ns_r, ns_h)) {
		sh("rm -rf '%s'", dir);
		skip_all("cannot create network namespaces here");
	}
	made = true;
	if (sh("set -e; for n in %1$s %2$s %3$s; do ip -n $n link set lo up; done;"
	       "ip link add wa netns %1$s type veth peer name wb netns %2$s;"
	       "ip link add la netns %2$s type veth peer name lb netns %3$s;"
	       "ip -n %1$s addr add 198.19.77.1/24 dev wa; ip -n %1$s addr add 198.19.77.2/24 dev "
	       "wa;"
	       "ip -n %1$s link set wa up;"
	       "ip -n %2$s addr add 198.19.77.10/24 dev wb; ip -n %2$s link set wb up;"
	       "ip -n %2$s addr add 192.168.77.1/24 dev la; ip -n %2$s link set la up;"
	       "ip -n %3$s addr add 192.168.77.2/24 dev lb; ip -n %3$s link set lb up;"
	       "ip -n %3$s route add default via 192.168.77.1;"
	       "ip netns exec %2$s sysctl -qw net.ipv4.ip_forward=1",
	       ns_w, ns_r, ns_h))
		goto fail;
	if (sh("ip netns exec %s nft -f - <<'EOF'\n"
	       "table inet wpgpm {\n"
	       " chain forward { type filter hook forward priority 0; policy accept; jump "
	       "fwd_upnp; }\n"
	       " chain fwd_upnp { }\n"
	       " chain prerouting { type nat hook prerouting priority -100; policy accept; "
	       "jump pre_upnp; }\n"
	       " chain postrouting { type nat hook postrouting priority 100; policy accept; "
	       "jump post_upnp; oifname \"wb\" masquerade; }\n"
	       " chain pre_upnp { }\n"
	       " chain post_upnp { }\n"
	       "}\nEOF",
	       ns_r))
		goto fail;
	snprintf(stunlog, sizeof(stunlog), "%s/stun.log", dir);
	snprintf(pidf, sizeof(pidf), "%s/stun.pid", dir);
	snprintf(db, sizeof(db), "%s/stun.db", dir);
	{
		char *argv[] = { "turnserver",	 "-n",	      "-S",
				 "--no-tls",	 "--no-dtls", "--no-cli",
				 "--simple-log", "--pidfile", pidf,
				 "--userdb",	 db,	      "-L",
				 "198.19.77.1",	 "-L",	      "198.19.77.2",
				 "-p",		 "3478",      NULL };

		pid_stun = spawn_in(ns_w, argv, stunlog);
	}
	snprintf(conf, sizeof(conf), "%s/miniupnpd.conf", dir);
	f = fopen(conf, "w");
	if (!f)
		goto fail;
	fprintf(f, "ext_ifname=wb\nlistening_ip=la\nhttp_port=0\nenable_natpmp=yes\n"
		   "enable_upnp=yes\next_perform_stun=yes\next_stun_host=198.19.77.1\n"
		   "ext_stun_port=3478\nsecure_mode=yes\nsystem_uptime=yes\nmin_lifetime=2\n"
		   "uuid=3d5e1c3a-7b7e-4c3f-9a58-1f2e3d4c5b6a\nupnp_table_name=wpgpm\n"
		   "upnp_nat_table_name=wpgpm\nupnp_forward_chain=fwd_upnp\n"
		   "upnp_nat_chain=pre_upnp\nupnp_nat_postrouting_chain=post_upnp\n"
		   "allow 1024-65535 192.168.77.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n");
	fclose(f);
	usleep(300000); /* STUN first: miniupnpd asks it at start */
	snprintf(log, sizeof(log), "%s/miniupnpd.log", dir);
	snprintf(pidf, sizeof(pidf), "%s/miniupnpd.pid", dir);
	{
		char *argv[] = { "miniupnpd", "-d", "-f", conf, "-P", pidf, NULL };

		pid_upnp = spawn_in(ns_r, argv, log);
	}
	for (int i = 0; i < 50; i++) {
		usleep(100000);
		if (!sh("grep -q 'Listening for NAT-PMP' '%s'", log))
			break;
	}
	if (sh("grep -q 'Listening for NAT-PMP' '%s'", log)) {
		sh("cat '%s' >&2", log);
		goto fail;
	}
	{
		char p[64];

		fd_root = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
		snprintf(p, sizeof(p), "/run/netns/%s", ns_h);
		fd_host = open(p, O_RDONLY | O_CLOEXEC);
		snprintf(p, sizeof(p), "/run/netns/%s", ns_w);
		fd_wan = open(p, O_RDONLY | O_CLOEXEC);
	}
	/* this thread (and the portmap workers it creates) lives on the LAN side */
	if (fd_root < 0 || fd_host < 0 || fd_wan < 0 || setns(fd_host, CLONE_NEWNET))
		goto fail;
	return 0;
fail:
	cleanup();
	return -1;
}

static int teardown(void **state)
{
	cleanup();
	return 0;
}

struct log {
	int mapped, renewed, failed, lost;
	struct warp_portmap_info info;
};

static void cb(struct warp_portmap *pm, enum warp_portmap_event ev,
	       const struct warp_portmap_info *info, void *user)
{
	struct log *l = user;

	if (ev == WARP_PORTMAP_MAPPED) {
		l->mapped++;
		l->info = *info;
	} else if (ev == WARP_PORTMAP_RENEWED) {
		l->renewed++;
	} else if (ev == WARP_PORTMAP_FAILED) {
		l->failed++;
		l->info = *info;
	} else if (ev == WARP_PORTMAP_LOST) {
		l->lost++;
	}
}

static bool settled(void *user)
{
	struct log *l = user;

	return l->mapped || l->failed;
}

static bool renewed(void *user)
{
	return ((struct log *)user)->renewed > 0;
}

/* Number of port forwarding rules miniupnpd has in the router. */
static int router_rules(void)
{
	char cmd[256];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd),
		 "ip netns exec %s nft list chain inet wpgpm pre_upnp | grep -c dnat", ns_r);
	setns(fd_root, CLONE_NEWNET);
	p = popen(cmd, "r");
	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	setns(fd_host, CLONE_NEWNET);
	return n;
}

/* Sends a datagram from the WAN namespace to the mapped endpoint; true if `fd` gets it. */
static bool forwarded(int fd, const struct sockaddr_storage *ext)
{
	char buf[16];
	int s;
	ssize_t n = -1;

	setns(fd_wan, CLONE_NEWNET);
	s = socket(AF_INET, SOCK_DGRAM, 0);
	setns(fd_host, CLONE_NEWNET);
	if (s < 0)
		return false;
	for (int i = 0; i < 10 && n < 0; i++) {
		sendto(s, "hello", 5, 0, (const struct sockaddr *)ext, sizeof(struct sockaddr_in));
		usleep(100000);
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	}
	close(s);
	return n == 5 && !memcmp(buf, "hello", 5);
}

static int bound_socket(uint16_t *port)
{
	struct sockaddr_storage a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	nat_sa_parse("0.0.0.0", (uint16_t)(20000 + warp_random_uniform(20000)), &a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(struct sockaddr_in)), 0);
	getsockname(fd, (struct sockaddr *)&a, &len);
	*port = nat_sa_port((struct sockaddr *)&a);
	return fd;
}

static void run(unsigned int methods, const char *gateway, uint32_t lease, struct log *l,
		bool wait_renew)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_portmap_cfg cfg;
	struct warp_portmap *pm;
	struct warp_portmap_info info;
	char ext[NAT_SA_STRLEN];
	uint16_t port;
	int fd = bound_socket(&port);

	memset(l, 0, sizeof(*l));
	warp_portmap_cfg_default(&cfg);
	cfg.internal_port = port;
	cfg.methods = methods;
	cfg.lease_s = lease;
	cfg.discover_ms = 1000;
	snprintf(cfg.multicast_if, sizeof(cfg.multicast_if), "lb");
	if (gateway)
		snprintf(cfg.gateway, sizeof(cfg.gateway), "%s", gateway);
	pm = warp_portmap_new(loop, &cfg, cb, l);
	assert_non_null(pm);
	assert_int_equal(warp_loop_run_until(loop, settled, l, 8000), 0);
	if (l->failed)
		fail_msg("mapping failed: %s", warp_strerror(l->info.err));
	assert_int_equal(l->mapped, 1);
	nat_sa_str((struct sockaddr *)&l->info.external, ext, sizeof(ext));
	print_message("# mapped by %s: %s, lease %u s\n",
		      l->info.method == WARP_PORTMAP_UPNP ? "UPnP" : "NAT-PMP", ext,
		      l->info.lifetime_s);
	assert_int_equal(warp_portmap_get(pm, &info), 0);
	{
		struct sockaddr_storage want;

		nat_sa_parse("198.19.77.10", 0, &want);
		assert_true(nat_sa_same_ip((struct sockaddr *)&l->info.external,
					   (struct sockaddr *)&want));
	}
	assert_true(router_rules() >= 1);
	assert_true(forwarded(fd, &l->info.external));
	if (wait_renew) {
		assert_int_equal(warp_loop_run_until(loop, renewed, l, 8000), 0);
		assert_true(forwarded(fd, &l->info.external));
	}
	/* let the race's loser report before closing */
	for (int i = 0; i < 20; i++)
		warp_loop_run_once(loop, 50);
	warp_portmap_free(pm);
	warp_loop_run_once(loop, 0); /* results posted meanwhile release their memory */
	/* nothing is left behind */
	assert_int_equal(router_rules(), 0);
	assert_false(forwarded(fd, &l->info.external));
	close(fd);
	warp_loop_free(loop);
}

static void test_race_both(void **state)
{
	struct log l;

	run(WARP_PORTMAP_UPNP | WARP_PORTMAP_NATPMP, NULL, 3600, &l, false);
}

static void test_upnp_only(void **state)
{
	struct log l;

	run(WARP_PORTMAP_UPNP, NULL, 3600, &l, false);
	assert_int_equal(l.info.method, WARP_PORTMAP_UPNP);
}

static void test_natpmp_renew(void **state)
{
	struct log l;

	/* explicit gateway, a 4 s lease renewed after 2 s */
	run(WARP_PORTMAP_NATPMP, "192.168.77.1", 4, &l, true);
	assert_int_equal(l.info.method, WARP_PORTMAP_NATPMP);
	assert_int_equal(l.info.lifetime_s, 4);
	assert_int_equal(l.lost, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_race_both),
		cmocka_unit_test(test_upnp_only),
		cmocka_unit_test(test_natpmp_renew),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
