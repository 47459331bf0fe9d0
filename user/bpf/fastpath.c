// SPDX-License-Identifier: MIT
/*
 * Fast path loader: capability probing, skeleton load, XDP/TC attach, pins and stale
 * cleanup, map access, ring buffer, and the userspace twin of the BPF logic.
 */
#define LOG_COMPONENT "bpf"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <limits.h>
#include <linux/capability.h>
#include <net/if_arp.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <warpgate/loop.h>

#include "bpf/fastpath.h"
#include "bpf/fp_table.h"
#include "core/bytes.h"
#include "core/log.h"
#include "fastpath.skel.h"

#ifndef CAP_BPF
#define CAP_BPF 39
#endif
#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

/* Our clsact filter: fixed handle and priority so a later run can find and remove it. */
#define WARP_TC_HANDLE 0x7770
#define WARP_TC_PRIO   0x7770
#define WARP_FP_MAX_IF 32

#define STUN_COOKIE 0x2112A442u

/* Record pinned next to the maps: who owns the instance and which TC filters it holds
 * (TC filters outlive the process, XDP links do not). */
struct owner_rec {
	uint32_t pid;
	uint32_t n_tc;
	uint64_t starttime; /* /proc/<pid>/stat field 22, against pid reuse */
	uint64_t netns_ino;
	int32_t tc_ifindex[WARP_FP_MAX_IF];
};

struct fp_attach {
	int ifindex;
	enum warp_fp_mode mode;
	int link_fd;	   /* XDP */
	bool hook_created; /* TC: we created the clsact qdisc */
	char name[IF_NAMESIZE];
};

struct warp_fp {
	struct warp_fp_opts opts;
	struct fastpath_bpf *skel; /* NULL in userspace mode */
	struct ring_buffer *rb;
	struct warp_loop *loop;
	int owner_fd;
	struct owner_rec owner;
	bool pinned;
	char pin_dir[PATH_MAX];
	char reason[160];
	char status[320];
	struct fp_attach att[WARP_FP_MAX_IF];
	unsigned int natt;
	struct fp_table ka, probes; /* userspace mode */
	uint64_t ka_stat[WARP_KA_STAT_MAX];
	uint64_t probe_stat[WARP_PROBE_STAT_MAX];
	uint64_t user_replies;
};

static void status_update(struct warp_fp *fp);

static const char *const pinned_maps[] = {"ka_map", "ka_stats", "probe_map", "probe_stats"};

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* Probe failures and verifier logs are expected noise unless debugging; the loader
	 * logs its own summary of anything that matters. */
	if (warp_log_enabled(WARP_LOG_DEBUG))
		warp_vlog(WARP_LOG_DEBUG, "libbpf", fmt, ap);
	return 0;
}

static void libbpf_setup(void)
{
	libbpf_set_print(libbpf_log);
}

static void setup_once(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, libbpf_setup);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ support probing */

static bool have_cap(const struct __user_cap_data_struct d[2], int cap)
{
	return d[cap / 32].effective & (1u << (cap % 32));
}

int warp_fp_check_support(char *reason, size_t len)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {0};
	const char *why = NULL;
	int err = 0;

	setup_once();
	if (syscall(SYS_capget, &h, d)) {
		err = -errno;
		why = "cannot read capabilities";
		goto out;
	}
	if (!have_cap(d, CAP_SYS_ADMIN) && !have_cap(d, CAP_BPF)) {
		err = -EPERM;
		why = "no CAP_BPF";
		goto out;
	}
	if (!have_cap(d, CAP_NET_ADMIN)) {
		err = -EPERM;
		why = "no CAP_NET_ADMIN";
		goto out;
	}
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_XDP, NULL) != 1) {
		err = -EOPNOTSUPP;
		why = "kernel lacks XDP";
		goto out;
	}
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SCHED_CLS, NULL) != 1) {
		err = -EOPNOTSUPP;
		why = "kernel lacks TC BPF";
		goto out;
	}
	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) != 1) {
		err = -EOPNOTSUPP;
		why = "kernel lacks BPF ring buffer (< 5.8)";
		goto out;
	}
	if (libbpf_probe_bpf_helper(BPF_PROG_TYPE_XDP, BPF_FUNC_ktime_get_coarse_ns, NULL) != 1) {
		err = -EOPNOTSUPP;
		why = "kernel lacks bpf_ktime_get_coarse_ns (< 5.11)";
		goto out;
	}
	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_LRU_HASH, NULL) != 1) {
		err = -EOPNOTSUPP;
		why = "kernel lacks LRU hash maps";
		goto out;
	}
out:
	if (reason && len)
		snprintf(reason, len, "%s", why ? why : "ok");
	return err;
}

/* ------------------------------------------------------------------ pins and stale state */

static uint64_t proc_starttime(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	p = p ? strrchr(buf, ')') : NULL; /* comm may contain spaces and parentheses */
	/* fields 3..21 skipped, 22 is starttime */
	if (!p || sscanf(p + 2,
			 "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
			 "%*d %*d %*d %llu",
			 &st) != 1)
		return 0;
	return st;
}

static uint64_t netns_ino(void)
{
	struct stat st;

	return stat("/proc/self/ns/net", &st) ? 0 : (uint64_t)st.st_ino;
}

static bool owner_alive(const struct owner_rec *r)
{
	if (!r->pid || r->pid == (uint32_t)getpid())
		return false;
	if (kill((pid_t)r->pid, 0) && errno == ESRCH)
		return false;
	return proc_starttime((pid_t)r->pid) == r->starttime;
}

static void tc_detach_one(int ifindex)
{
	struct bpf_tc_hook hook = {
		.sz = sizeof(hook), .ifindex = ifindex, .attach_point = BPF_TC_INGRESS};
	struct bpf_tc_opts o = {
		.sz = sizeof(o), .handle = WARP_TC_HANDLE, .priority = WARP_TC_PRIO};
	int err = bpf_tc_detach(&hook, &o);

	if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL)
		pr_warn("removing TC filter on ifindex %d: %s", ifindex, strerror(-err));
}

int warp_fp_cleanup_stale(const char *pin_root, const char *name)
{
	char dir[PATH_MAX], path[PATH_MAX + 320];
	struct owner_rec rec;
	struct dirent *de;
	uint32_t key = 0;
	int fd, err = 0;
	unsigned int i;
	DIR *d;

	setup_once();
	snprintf(dir, sizeof(dir), "%s/%s", pin_root ? pin_root : WARP_FP_PIN_ROOT,
		 name ? name : "node");
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;

	snprintf(path, sizeof(path), "%s/owner", dir);
	fd = bpf_obj_get(path);
	if (fd >= 0 && !bpf_map_lookup_elem(fd, &key, &rec)) {
		if (owner_alive(&rec)) {
			pr_warn("%s is in use by live pid %u", dir, rec.pid);
			err = -EBUSY;
			goto out;
		}
		if (rec.netns_ino == netns_ino()) {
			for (i = 0; i < rec.n_tc && i < WARP_FP_MAX_IF; i++)
				tc_detach_one(rec.tc_ifindex[i]);
		} else if (rec.n_tc) {
			pr_warn("stale TC filters of pid %u are in another network namespace",
				rec.pid);
		}
		pr_info("cleaning state left by dead pid %u in %s", rec.pid, dir);
	}
	/* Pinned links (none by default) are detached explicitly: unpinning alone would leave
	 * them attached while any fd remains. */
	while ((de = readdir(d))) {
		int lfd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (!strncmp(de->d_name, "link", 4)) {
			lfd = bpf_obj_get(path);
			if (lfd >= 0) {
				bpf_link_detach(lfd);
				close(lfd);
			}
		}
		if (unlink(path))
			pr_warn("unlink %s: %s", path, strerror(errno));
	}
	if (rmdir(dir))
		pr_warn("rmdir %s: %s", dir, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	closedir(d);
	return err;
}

static void owner_sync(struct warp_fp *fp)
{
	uint32_t key = 0;
	unsigned int i;

	if (fp->owner_fd < 0)
		return;
	fp->owner.n_tc = 0;
	for (i = 0; i < fp->natt; i++)
		if (fp->att[i].mode == WARP_FP_MODE_TC)
			fp->owner.tc_ifindex[fp->owner.n_tc++] = fp->att[i].ifindex;
	if (bpf_map_update_elem(fp->owner_fd, &key, &fp->owner, BPF_ANY))
		pr_warn("updating owner record: %s", strerror(errno));
}

static int pin_all(struct warp_fp *fp)
{
	struct bpf_map *maps[] = {fp->skel->maps.ka_map, fp->skel->maps.ka_stats,
				  fp->skel->maps.probe_map, fp->skel->maps.probe_stats};
	char path[PATH_MAX + 32];
	struct statfs sfs;
	unsigned int i;
	int err;

	if (statfs("/sys/fs/bpf", &sfs) || sfs.f_type != BPF_FS_MAGIC) {
		pr_warn("bpffs not mounted on /sys/fs/bpf: maps stay unpinned");
		return -ENOENT;
	}
	if (mkdir(fp->opts.pin_root, 0700) && errno != EEXIST)
		return -errno;
	if (mkdir(fp->pin_dir, 0700))
		return -errno;
	fp->pinned = true;

	fp->owner_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "warp_owner", sizeof(uint32_t),
				      sizeof(struct owner_rec), 1, NULL);
	if (fp->owner_fd < 0)
		return -errno;
	fp->owner.pid = (uint32_t)getpid();
	fp->owner.starttime = proc_starttime(getpid());
	fp->owner.netns_ino = netns_ino();
	owner_sync(fp);
	snprintf(path, sizeof(path), "%s/owner", fp->pin_dir);
	if (bpf_obj_pin(fp->owner_fd, path))
		return -errno;
	for (i = 0; i < WARP_ARRAY_SIZE(maps); i++) {
		snprintf(path, sizeof(path), "%s/%s", fp->pin_dir, pinned_maps[i]);
		err = bpf_map__pin(maps[i], path);
		if (err)
			return err;
	}
	return 0;
}

static void unpin_all(struct warp_fp *fp)
{
	char path[PATH_MAX + 32];
	unsigned int i;

	if (!fp->pinned)
		return;
	for (i = 0; i < WARP_ARRAY_SIZE(pinned_maps); i++) {
		snprintf(path, sizeof(path), "%s/%s", fp->pin_dir, pinned_maps[i]);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/owner", fp->pin_dir);
	unlink(path);
	if (rmdir(fp->pin_dir))
		pr_warn("rmdir %s: %s", fp->pin_dir, strerror(errno));
	rmdir(fp->opts.pin_root); /* only succeeds when no other instance is pinned */
	fp->pinned = false;
}

/* ------------------------------------------------------------------ lifecycle */

static int on_ring_event(void *ctx, void *data, size_t len)
{
	struct warp_fp *fp = ctx;
	struct warp_probe_event ev;

	if (len < sizeof(ev))
		return 0;
	memcpy(&ev, data, sizeof(ev));
	if (fp->opts.probe_cb)
		fp->opts.probe_cb(&ev, fp->opts.user);
	return 0;
}

static int load_bpf(struct warp_fp *fp)
{
	int err;

	fp->skel = fastpath_bpf__open();
	if (!fp->skel) {
		err = -errno;
		snprintf(fp->reason, sizeof(fp->reason), "open failed: %s", strerror(-err));
		return err;
	}
	bpf_map__set_max_entries(fp->skel->maps.ka_map, fp->opts.ka_max_entries);
	bpf_map__set_max_entries(fp->skel->maps.probe_map, fp->opts.probe_max_entries);
	err = fastpath_bpf__load(fp->skel);
	if (err) {
		snprintf(fp->reason, sizeof(fp->reason), "load failed: %s", strerror(-err));
		return err;
	}
	fp->rb =
		ring_buffer__new(bpf_map__fd(fp->skel->maps.probe_events), on_ring_event, fp, NULL);
	if (!fp->rb) {
		err = -errno;
		snprintf(fp->reason, sizeof(fp->reason), "ring buffer: %s", strerror(-err));
		return err;
	}
	if (!(fp->opts.flags & WARP_FP_F_NO_PIN)) {
		err = pin_all(fp);
		if (err && err != -ENOENT)
			pr_warn("pinning maps under %s: %s", fp->pin_dir, strerror(-err));
	}
	return 0;
}

static void unload_bpf(struct warp_fp *fp)
{
	ring_buffer__free(fp->rb);
	fp->rb = NULL;
	unpin_all(fp);
	if (fp->owner_fd >= 0)
		close(fp->owner_fd);
	fp->owner_fd = -1;
	fastpath_bpf__destroy(fp->skel);
	fp->skel = NULL;
}

struct warp_fp *warp_fp_new(const struct warp_fp_opts *opts)
{
	static const struct warp_fp_opts defaults;
	struct warp_fp *fp;
	const char *env;
	int err = 0;

	setup_once();
	if (!opts)
		opts = &defaults;
	fp = calloc(1, sizeof(*fp));
	if (!fp) {
		errno = ENOMEM;
		return NULL;
	}
	fp->opts = *opts;
	fp->owner_fd = -1;
	if (!fp->opts.name)
		fp->opts.name = "node";
	if (!fp->opts.pin_root)
		fp->opts.pin_root = WARP_FP_PIN_ROOT;
	if (!fp->opts.ka_max_entries)
		fp->opts.ka_max_entries = 65536;
	if (!fp->opts.probe_max_entries)
		fp->opts.probe_max_entries = 4096;
	if (strchr(fp->opts.name, '/') || !fp->opts.name[0]) {
		err = -EINVAL;
		goto out;
	}
	snprintf(fp->pin_dir, sizeof(fp->pin_dir), "%s/%s", fp->opts.pin_root, fp->opts.name);

	env = getenv("WARP_BPF");
	if (fp->opts.flags & WARP_FP_F_NO_BPF) {
		snprintf(fp->reason, sizeof(fp->reason), "disabled by configuration");
	} else if (env && !strcmp(env, "off")) {
		snprintf(fp->reason, sizeof(fp->reason), "disabled by WARP_BPF=off");
	} else if (warp_fp_check_support(fp->reason, sizeof(fp->reason)) == 0) {
		fp->reason[0] = 0;
		if (!(fp->opts.flags & WARP_FP_F_NO_PIN)) {
			err = warp_fp_cleanup_stale(fp->opts.pin_root, fp->opts.name);
			if (err == -EBUSY)
				goto out;
			err = 0;
		}
		if (load_bpf(fp)) {
			pr_warn("fast path: %s; running it in userspace", fp->reason);
			unload_bpf(fp);
		}
	}
	if (!fp->skel) {
		err = fp_table_init(&fp->ka, sizeof(struct warp_ka_key),
				    sizeof(struct warp_ka_entry), fp->opts.ka_max_entries);
		if (!err)
			err = fp_table_init(&fp->probes, sizeof(struct warp_probe_key),
					    sizeof(struct warp_probe_val),
					    fp->opts.probe_max_entries);
		if (err)
			goto out;
	}
	status_update(fp);
	pr_info("%s", warp_fp_status(fp));
out:
	if (err) {
		warp_fp_free(fp);
		errno = -err;
		return NULL;
	}
	return fp;
}

void warp_fp_free(struct warp_fp *fp)
{
	if (!fp)
		return;
	warp_fp_loop_del(fp);
	while (fp->natt)
		warp_fp_detach(fp, fp->att[fp->natt - 1].ifindex);
	if (fp->skel || fp->owner_fd >= 0 || fp->pinned)
		unload_bpf(fp);
	fp_table_fini(&fp->ka);
	fp_table_fini(&fp->probes);
	free(fp);
}

bool warp_fp_active(const struct warp_fp *fp)
{
	return fp && fp->skel;
}

/* Appends to a bounded buffer; the text is truncated, never overflowed. */
static void sappend(char *buf, size_t cap, size_t *off, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void sappend(char *buf, size_t cap, size_t *off, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*off >= cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *off, cap - *off, fmt, ap);
	va_end(ap);
	if (n > 0)
		*off += (size_t)n;
}

/* Rebuilt whenever the state changes, so warp_fp_status() is a plain read. */
static void status_update(struct warp_fp *fp)
{
	static const char *const mode_name[] = {
		[WARP_FP_MODE_XDP] = "xdp", [WARP_FP_MODE_TC] = "tc"};
	const char *sep = " (";
	size_t off = 0, cap = sizeof(fp->status);
	unsigned int i, m;

	if (!fp->skel) {
		sappend(fp->status, cap, &off, "bpf: off (%s)",
			fp->reason[0] ? fp->reason : "unknown");
		return;
	}
	sappend(fp->status, cap, &off, "bpf: active");
	if (!fp->natt) {
		sappend(fp->status, cap, &off, " (not attached)");
		return;
	}
	/* "bpf: active (xdp: eth0, eth1; tc: lo)" */
	for (m = WARP_FP_MODE_XDP; m <= WARP_FP_MODE_TC; m++) {
		const char *item = "";

		for (i = 0; i < fp->natt; i++) {
			if (fp->att[i].mode != m)
				continue;
			if (!item[0]) {
				sappend(fp->status, cap, &off, "%s%s: ", sep, mode_name[m]);
				sep = "; ";
			}
			sappend(fp->status, cap, &off, "%s%s", item, fp->att[i].name);
			item = ", ";
		}
	}
	sappend(fp->status, cap, &off, ")");
}

const char *warp_fp_status(const struct warp_fp *fp)
{
	return fp->status;
}

/* ------------------------------------------------------------------ attach */

static int if_arphrd(int ifindex, char name[IF_NAMESIZE])
{
	struct ifreq ifr;
	int s, err = 0;

	if (!if_indextoname((unsigned int)ifindex, name))
		return -ENODEV;
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFHWADDR, &ifr))
		err = -errno;
	close(s);
	return err ? err : ifr.ifr_hwaddr.sa_family;
}

static int attach_xdp(struct warp_fp *fp, struct fp_attach *a)
{
	/* Native mode only: without the flag the kernel silently picks generic XDP on
	 * devices without driver support. */
	struct bpf_link_create_opts lo = {.sz = sizeof(lo), .flags = XDP_FLAGS_DRV_MODE};
	int fd = bpf_link_create(bpf_program__fd(fp->skel->progs.warp_xdp), a->ifindex, BPF_XDP,
				 &lo);

	if (fd < 0)
		return -errno;
	a->link_fd = fd;
	a->mode = WARP_FP_MODE_XDP;
	return 0;
}

static int attach_tc(struct warp_fp *fp, struct fp_attach *a)
{
	struct bpf_tc_hook hook = {
		.sz = sizeof(hook), .ifindex = a->ifindex, .attach_point = BPF_TC_INGRESS};
	struct bpf_tc_opts o = {.sz = sizeof(o),
				.handle = WARP_TC_HANDLE,
				.priority = WARP_TC_PRIO,
				.prog_fd = bpf_program__fd(fp->skel->progs.warp_tc),
				.flags = BPF_TC_F_REPLACE};
	int err;

	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST)
		return err;
	a->hook_created = !err;
	err = bpf_tc_attach(&hook, &o);
	if (err) {
		if (a->hook_created) {
			hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
			bpf_tc_hook_destroy(&hook);
		}
		return err;
	}
	a->mode = WARP_FP_MODE_TC;
	return 0;
}

int warp_fp_attach(struct warp_fp *fp, int ifindex, unsigned int flags)
{
	struct fp_attach *a;
	unsigned int i;
	int err, type;

	if (!fp->skel)
		return -EOPNOTSUPP;
	for (i = 0; i < fp->natt; i++)
		if (fp->att[i].ifindex == ifindex)
			return -EALREADY;
	if (fp->natt == WARP_FP_MAX_IF)
		return -ENOSPC;
	a = &fp->att[fp->natt];
	memset(a, 0, sizeof(*a));
	a->ifindex = ifindex;
	a->link_fd = -1;
	type = if_arphrd(ifindex, a->name);
	if (type < 0)
		return type;
	if (type != ARPHRD_ETHER && type != ARPHRD_LOOPBACK) {
		pr_warn("%s: not an Ethernet interface (type %d), fast path not attached", a->name,
			type);
		return -EOPNOTSUPP;
	}

	err = -EOPNOTSUPP;
	if (!(flags & WARP_FP_ATTACH_TC) && type == ARPHRD_ETHER) {
		err = attach_xdp(fp, a);
		if (err && err != -EOPNOTSUPP && err != -EINVAL) {
			pr_warn("%s: native XDP attach failed: %s", a->name, strerror(-err));
			return err;
		}
	}
	if (err) {
		if (flags & WARP_FP_ATTACH_NO_TC)
			return err;
		if (!(flags & WARP_FP_ATTACH_TC))
			pr_info("%s: no native XDP, using TC ingress", a->name);
		err = attach_tc(fp, a);
		if (err) {
			pr_warn("%s: TC attach failed: %s", a->name, strerror(-err));
			return err;
		}
	}
	fp->natt++;
	owner_sync(fp);
	status_update(fp);
	pr_info("%s: fast path attached (%s)", a->name, a->mode == WARP_FP_MODE_XDP ? "xdp" : "tc");
	return a->mode;
}

int warp_fp_detach(struct warp_fp *fp, int ifindex)
{
	struct fp_attach *a = NULL;
	unsigned int i;

	for (i = 0; i < fp->natt; i++)
		if (fp->att[i].ifindex == ifindex)
			a = &fp->att[i];
	if (!a)
		return -ENOENT;
	if (a->mode == WARP_FP_MODE_XDP) {
		close(a->link_fd);
	} else {
		tc_detach_one(a->ifindex);
		if (a->hook_created) {
			struct bpf_tc_hook hook = {.sz = sizeof(hook),
						   .ifindex = a->ifindex,
						   .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS};
			bpf_tc_hook_destroy(&hook);
		}
	}
	*a = fp->att[--fp->natt];
	owner_sync(fp);
	status_update(fp);
	return 0;
}

static bool addr_match(const struct sockaddr *a, const struct sockaddr *b)
{
	if (!a || a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
}

static bool is_wildcard(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

int warp_fp_attach_auto(struct warp_fp *fp, const struct sockaddr *bound, unsigned int flags)
{
	struct ifaddrs *ifa, *i;
	bool any;
	int n = 0, idx, err;
	unsigned int k;

	if (!fp->skel)
		return -EOPNOTSUPP;
	if (bound->sa_family != AF_INET && bound->sa_family != AF_INET6)
		return -EAFNOSUPPORT;
	any = is_wildcard(bound);
	if (getifaddrs(&ifa))
		return -errno;
	for (i = ifa; i; i = i->ifa_next) {
		bool seen = false;

		if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK && any))
			continue;
		if (!any && !addr_match(i->ifa_addr, bound))
			continue;
		idx = (int)if_nametoindex(i->ifa_name);
		for (k = 0; k < fp->natt; k++)
			seen |= fp->att[k].ifindex == idx;
		if (!idx || seen)
			continue;
		err = warp_fp_attach(fp, idx, flags);
		if (err > 0)
			n++;
		else if (err != -EOPNOTSUPP || !any)
			pr_warn("%s: fast path not attached: %s", i->ifa_name, strerror(-err));
	}
	freeifaddrs(ifa);
	return n;
}

int warp_fp_xdp_prog_fd(const struct warp_fp *fp)
{
	return fp->skel ? bpf_program__fd(fp->skel->progs.warp_xdp) : -1;
}

int warp_fp_tc_prog_fd(const struct warp_fp *fp)
{
	return fp->skel ? bpf_program__fd(fp->skel->progs.warp_tc) : -1;
}

/* ------------------------------------------------------------------ maps */

/* 16-byte map form of a socket address: IPv6, or IPv4 as ::ffff:a.b.c.d. */
static int sa_to_mapped(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port_be)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;

		memset(addr, 0, 10);
		addr[10] = addr[11] = 0xff;
		memcpy(addr + 12, &s4->sin_addr, 4);
		*port_be = s4->sin_port;
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;

		memcpy(addr, &s6->sin6_addr, 16);
		*port_be = s6->sin6_port;
		return IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) ? 4 : 6;
	}
	return -EAFNOSUPPORT;
}

int warp_fp_ka_add(struct warp_fp *fp, const uint8_t cid[WARP_CID_LEN],
		   const uint8_t peer_cid[WARP_CID_LEN], const struct sockaddr *peer,
		   uint16_t local_port)
{
	struct warp_ka_entry e, old;
	struct warp_ka_key k;
	int err;

	static const uint8_t zero[WARP_CID_LEN];

	/* the zero CID means "not known yet" and is never chosen */
	if (!memcmp(cid, zero, WARP_CID_LEN) || !memcmp(peer_cid, zero, WARP_CID_LEN))
		return -EINVAL;
	memset(&e, 0, sizeof(e));
	memcpy(k.cid, cid, WARP_CID_LEN);
	memcpy(e.peer_cid, peer_cid, WARP_CID_LEN);
	err = sa_to_mapped(peer, e.peer_addr, &e.peer_port_be);
	if (err < 0)
		return err;
	e.local_port_be = htons(local_port);
	e.flags = WARP_KA_F_ACTIVE;
	/* Re-adding (peer moved) keeps the liveness history. */
	if (!warp_fp_ka_get(fp, cid, &old)) {
		e.last_seen_ns = old.last_seen_ns;
		e.answered = old.answered;
	}
	if (fp->skel)
		return bpf_map_update_elem(bpf_map__fd(fp->skel->maps.ka_map), &k, &e, BPF_ANY)
			       ? -errno
			       : 0;
	return fp_table_put(&fp->ka, &k, &e);
}

int warp_fp_ka_del(struct warp_fp *fp, const uint8_t cid[WARP_CID_LEN])
{
	if (fp->skel)
		return bpf_map_delete_elem(bpf_map__fd(fp->skel->maps.ka_map), cid) ? -errno : 0;
	return fp_table_del(&fp->ka, cid);
}

int warp_fp_ka_get(struct warp_fp *fp, const uint8_t cid[WARP_CID_LEN], struct warp_ka_entry *out)
{
	const struct warp_ka_entry *e;

	if (fp->skel)
		return bpf_map_lookup_elem(bpf_map__fd(fp->skel->maps.ka_map), cid, out) ? -errno
											 : 0;
	e = fp_table_get(&fp->ka, cid);
	if (!e)
		return -ENOENT;
	*out = *e;
	return 0;
}

int warp_fp_probe_add(struct warp_fp *fp, const uint8_t id[12], uint64_t cookie, uint64_t sent_ns)
{
	struct warp_probe_val v = {.cookie = cookie, .sent_ns = sent_ns ? sent_ns : mono_ns()};

	if (fp->skel)
		return bpf_map_update_elem(bpf_map__fd(fp->skel->maps.probe_map), id, &v, BPF_ANY)
			       ? -errno
			       : 0;
	return fp_table_put(&fp->probes, id, &v);
}

int warp_fp_probe_del(struct warp_fp *fp, const uint8_t id[12])
{
	if (fp->skel)
		return bpf_map_delete_elem(bpf_map__fd(fp->skel->maps.probe_map), id) ? -errno : 0;
	return fp_table_del(&fp->probes, id);
}

int warp_fp_event_fd(const struct warp_fp *fp)
{
	return fp->rb ? ring_buffer__epoll_fd(fp->rb) : -1;
}

int warp_fp_poll_events(struct warp_fp *fp)
{
	return fp->rb ? ring_buffer__consume(fp->rb) : 0;
}

static void on_event_fd(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	int n = warp_fp_poll_events(user);

	if (n < 0)
		pr_warn("ring buffer: %s", strerror(-n));
}

int warp_fp_loop_add(struct warp_fp *fp, struct warp_loop *loop)
{
	int err;

	if (!fp->rb)
		return 0;
	if (fp->loop)
		return -EALREADY;
	err = warp_loop_add_fd(loop, ring_buffer__epoll_fd(fp->rb), WARP_EV_READ, on_event_fd, fp);
	if (!err)
		fp->loop = loop;
	return err;
}

void warp_fp_loop_del(struct warp_fp *fp)
{
	if (fp->loop)
		warp_loop_del_fd(fp->loop, ring_buffer__epoll_fd(fp->rb));
	fp->loop = NULL;
}

static int sum_percpu(int map_fd, uint32_t n, uint64_t *out)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t *vals;
	uint32_t k;
	int c;

	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	vals = calloc((size_t)ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	for (k = 0; k < n; k++) {
		if (bpf_map_lookup_elem(map_fd, &k, vals))
			continue;
		for (c = 0; c < ncpu; c++)
			out[k] += vals[c];
	}
	free(vals);
	return 0;
}

int warp_fp_stats(struct warp_fp *fp, struct warp_fp_stats *out)
{
	unsigned int i;
	int err = 0;

	memset(out, 0, sizeof(*out));
	if (fp->skel) {
		err = sum_percpu(bpf_map__fd(fp->skel->maps.ka_stats), WARP_KA_STAT_MAX, out->ka);
		if (!err)
			err = sum_percpu(bpf_map__fd(fp->skel->maps.probe_stats),
					 WARP_PROBE_STAT_MAX, out->probe);
	}
	for (i = 0; i < WARP_KA_STAT_MAX; i++)
		out->ka[i] += __atomic_load_n(&fp->ka_stat[i], __ATOMIC_RELAXED);
	for (i = 0; i < WARP_PROBE_STAT_MAX; i++)
		out->probe[i] += __atomic_load_n(&fp->probe_stat[i], __ATOMIC_RELAXED);
	out->user_replies = __atomic_load_n(&fp->user_replies, __ATOMIC_RELAXED);
	return err;
}

/* ------------------------------------------------------------------ userspace twin */

static void ucount(struct warp_fp *fp, uint64_t *ctr, bool always)
{
	/* With BPF loaded the kernel already counted the pass-through categories; userspace
	 * only adds the actions it takes itself. */
	if (always || !fp->skel)
		__atomic_fetch_add(ctr, 1, __ATOMIC_RELAXED);
}

static enum warp_fp_verdict user_probe(struct warp_fp *fp, const uint8_t *id, uint8_t kind,
				       const struct sockaddr *src, uint16_t local_port,
				       uint64_t rx_ns)
{
	struct warp_probe_event ev;
	struct warp_probe_val v;
	const struct warp_probe_val *pv;
	int fam;

	if (fp->skel) {
		/* Still in the map: the kernel did not see this reply (other interface). */
		if (bpf_map_lookup_elem(bpf_map__fd(fp->skel->maps.probe_map), id, &v))
			return WARP_FP_PASS;
		bpf_map_delete_elem(bpf_map__fd(fp->skel->maps.probe_map), id);
	} else {
		pv = fp_table_get(&fp->probes, id);
		if (!pv) {
			ucount(fp, &fp->probe_stat[WARP_PROBE_STAT_MISS], false);
			return WARP_FP_PASS;
		}
		v = *pv;
		fp_table_del(&fp->probes, id);
	}
	memset(&ev, 0, sizeof(ev));
	memcpy(ev.id, id, sizeof(ev.id));
	ev.kind = kind;
	fam = sa_to_mapped(src, ev.src_addr, &ev.src_port_be);
	ev.family = fam == 6 ? 6 : 4;
	ev.dst_port_be = htons(local_port);
	ev.cookie = v.cookie;
	ev.sent_ns = v.sent_ns;
	ev.rx_ns = rx_ns ? rx_ns : mono_ns();
	ucount(fp, &fp->probe_stat[WARP_PROBE_STAT_MATCH], true);
	if (fp->opts.probe_cb)
		fp->opts.probe_cb(&ev, fp->opts.user);
	return WARP_FP_EVENT;
}

static enum warp_fp_verdict user_ping(struct warp_fp *fp, const uint8_t *buf, size_t len,
				      const struct sockaddr *src, uint16_t local_port, void *reply,
				      size_t *reply_len)
{
	struct warp_ka_entry e;
	uint8_t addr[16];
	uint16_t port_be;
	uint8_t *r = reply;

	if (len != WARP_PING_LEN || (buf[1] | buf[2] | buf[3]) || !reply || !reply_len ||
	    *reply_len < len) {
		ucount(fp, &fp->ka_stat[WARP_KA_STAT_PASS_MALFORMED], false);
		return WARP_FP_PASS;
	}
	if (warp_fp_ka_get(fp, buf + WARP_CID_OFF, &e) || !(e.flags & WARP_KA_F_ACTIVE) ||
	    (e.local_port_be && e.local_port_be != htons(local_port))) {
		ucount(fp, &fp->ka_stat[WARP_KA_STAT_PASS_UNKNOWN_CID], false);
		return WARP_FP_PASS;
	}
	if (sa_to_mapped(src, addr, &port_be) < 0 || port_be != e.peer_port_be ||
	    memcmp(addr, e.peer_addr, 16)) {
		ucount(fp, &fp->ka_stat[WARP_KA_STAT_DROP_WRONG_SOURCE], true);
		return WARP_FP_DROP;
	}
	if (fp->opts.ka_verify && fp->opts.ka_verify(buf, len, fp->opts.user)) {
		/* a forged authenticator: not the peer either */
		ucount(fp, &fp->ka_stat[WARP_KA_STAT_DROP_WRONG_SOURCE], true);
		return WARP_FP_DROP;
	}
	memcpy(r, buf, len);
	r[0] = (uint8_t)((r[0] & ~WARP_HDR_TYPE_MASK) | WARP_PKT_PONG);
	memcpy(r + WARP_CID_OFF, e.peer_cid, WARP_CID_LEN);
	*reply_len = len;

	e.last_seen_ns = mono_ns();
	e.answered++;
	if (fp->skel)
		bpf_map_update_elem(bpf_map__fd(fp->skel->maps.ka_map), buf + WARP_CID_OFF, &e,
				    BPF_EXIST);
	else
		fp_table_put(&fp->ka, buf + WARP_CID_OFF, &e);
	ucount(fp, &fp->ka_stat[WARP_KA_STAT_TX_PONG], true);
	__atomic_fetch_add(&fp->user_replies, 1, __ATOMIC_RELAXED);
	return WARP_FP_REPLY;
}

enum warp_fp_verdict warp_fp_input(struct warp_fp *fp, const void *buf, size_t len,
				   const struct sockaddr *src, uint16_t local_port, uint64_t rx_ns,
				   void *reply, size_t *reply_len)
{
	const uint8_t *p = buf;
	uint8_t type;

	if (len < 1) {
		ucount(fp, &fp->ka_stat[WARP_KA_STAT_PASS_NOT_WARP], false);
		return WARP_FP_PASS;
	}
	if ((p[0] & WARP_HDR_MARK_MASK) == WARP_HDR_MARK) {
		if ((p[0] & WARP_HDR_VER_MASK) != WARP_WIRE_VERSION << WARP_HDR_VER_SHIFT) {
			ucount(fp, &fp->ka_stat[WARP_KA_STAT_PASS_NOT_WARP], false);
			return WARP_FP_PASS;
		}
		type = p[0] & WARP_HDR_TYPE_MASK;
		if (type == WARP_PKT_PING)
			return user_ping(fp, p, len, src, local_port, reply, reply_len);
		ucount(fp, &fp->ka_stat[WARP_KA_STAT_PASS_NOT_PING], false);
		if (type == WARP_PKT_PROBE_REPLY && len >= WARP_PROBE_LEN)
			return user_probe(fp, p + WARP_HDR_LEN, WARP_PROBE_PUNCH, src, local_port,
					  rx_ns);
		return WARP_FP_PASS;
	}
	ucount(fp, &fp->ka_stat[WARP_KA_STAT_PASS_NOT_WARP], false);
	if (!(p[0] & 0xc0) && len >= 20 && ((p[0] << 8 | p[1]) & 0xffef) == 0x0101 &&
	    ((uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7]) ==
		    STUN_COOKIE)
		return user_probe(fp, p + 8, WARP_PROBE_STUN, src, local_port, rx_ns);
	return WARP_FP_PASS;
}
