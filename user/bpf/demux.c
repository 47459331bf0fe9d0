// SPDX-License-Identifier: MIT
/*
 * CID demux over a SO_REUSEPORT group: the sk_reuseport program of bpf/cid_demux.bpf.c with
 * a REUSEPORT_SOCKARRAY of the group's sockets, or the same table consulted in userspace.
 */
#define LOG_COMPONENT "bpf"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/fastpath.h"
#include "bpf/fp_table.h"
#include "cid_demux.skel.h"
#include "core/log.h"

#define DEMUX_MAX_ROUTES 65536

struct warp_fp_demux {
	struct cid_demux_bpf *skel; /* NULL: userspace demux */
	struct fp_table routes;	    /* mirror of cid_routes, used by warp_fp_demux_select() */
	unsigned int nsocks;
	unsigned int default_index;
	int attach_fd;			  /* the group member carrying the program (not owned) */
	uint64_t stat[WARP_CID_STAT_MAX]; /* userspace selections */
	char status[160];
};

static int load(struct warp_fp_demux *d, const int *fds)
{
	char reason[96];
	uint32_t i;
	uint64_t fd;
	int err;

	err = warp_fp_check_support(reason, sizeof(reason));
	if (err)
		goto fail;
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_REUSEPORT, NULL) != 1) {
		err = -EOPNOTSUPP;
		snprintf(reason, sizeof(reason), "kernel lacks SK_REUSEPORT programs");
		goto fail;
	}
	d->skel = cid_demux_bpf__open();
	if (!d->skel) {
		err = -errno;
		snprintf(reason, sizeof(reason), "open failed: %s", strerror(-err));
		goto fail;
	}
	d->skel->bss->default_index = d->default_index;
	err = cid_demux_bpf__load(d->skel);
	if (err) {
		snprintf(reason, sizeof(reason), "load failed: %s", strerror(-err));
		goto fail;
	}
	for (i = 0; i < d->nsocks; i++) {
		fd = (uint64_t)fds[i];
		if (bpf_map_update_elem(bpf_map__fd(d->skel->maps.cid_socks), &i, &fd, BPF_ANY)) {
			err = -errno;
			snprintf(reason, sizeof(reason), "socket %u not in a reuseport group: %s",
				 i, strerror(-err));
			goto fail;
		}
	}
	/* One member carries the program for the whole group. */
	fd = (uint64_t)bpf_program__fd(d->skel->progs.warp_cid_select);
	if (setsockopt(fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &(int){(int)fd},
		       sizeof(int))) {
		err = -errno;
		snprintf(reason, sizeof(reason), "SO_ATTACH_REUSEPORT_EBPF: %s", strerror(-err));
		goto fail;
	}
	d->attach_fd = fds[0];
	snprintf(d->status, sizeof(d->status), "bpf: active (sk_reuseport, %u sockets)", d->nsocks);
	return 0;
fail:
	cid_demux_bpf__destroy(d->skel);
	d->skel = NULL;
	snprintf(d->status, sizeof(d->status), "bpf: off (%s)", reason);
	return err;
}

struct warp_fp_demux *warp_fp_demux_new(const int *fds, unsigned int n, unsigned int default_index,
					unsigned int flags)
{
	struct warp_fp_demux *d;
	const char *env = getenv("WARP_BPF");
	int err;

	if (!n || n > 256 || default_index >= n) {
		errno = EINVAL;
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		errno = ENOMEM;
		return NULL;
	}
	d->nsocks = n;
	d->default_index = default_index;
	d->attach_fd = -1;
	err = fp_table_init(&d->routes, sizeof(struct warp_cid_key), sizeof(struct warp_cid_route),
			    DEMUX_MAX_ROUTES);
	if (err)
		goto out;
	if (flags & WARP_FP_F_NO_BPF)
		snprintf(d->status, sizeof(d->status), "bpf: off (disabled by configuration)");
	else if (env && !strcmp(env, "off"))
		snprintf(d->status, sizeof(d->status), "bpf: off (disabled by WARP_BPF=off)");
	else if (load(d, fds))
		pr_warn("CID demux: %s; demultiplexing in userspace", d->status);
	pr_info("CID demux: %s", d->status);
out:
	if (err) {
		warp_fp_demux_free(d);
		errno = -err;
		return NULL;
	}
	return d;
}

void warp_fp_demux_free(struct warp_fp_demux *d)
{
	if (!d)
		return;
	/* The attached program keeps its maps alive: detach it, or the group would go on
	 * steering by the old routes.  The sockets must still be open here. */
	if (d->skel && d->attach_fd >= 0 &&
	    setsockopt(d->attach_fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &(int){0}, sizeof(int)))
		pr_warn("SO_DETACH_REUSEPORT_BPF: %s", strerror(errno));
	cid_demux_bpf__destroy(d->skel);
	fp_table_fini(&d->routes);
	free(d);
}

bool warp_fp_demux_active(const struct warp_fp_demux *d)
{
	return d && d->skel;
}

const char *warp_fp_demux_status(const struct warp_fp_demux *d)
{
	return d->status;
}

int warp_fp_demux_route_add(struct warp_fp_demux *d, const uint8_t cid[WARP_CID_LEN],
			    unsigned int index)
{
	static const uint8_t zero[WARP_CID_LEN];
	struct warp_cid_route r = {.sock_index = index};
	int err;

	/* the zero CID means "not known yet" and is never routed */
	if (index >= d->nsocks || !memcmp(cid, zero, WARP_CID_LEN))
		return -EINVAL;
	err = fp_table_put(&d->routes, cid, &r);
	if (err || !d->skel)
		return err;
	if (bpf_map_update_elem(bpf_map__fd(d->skel->maps.cid_routes), cid, &r, BPF_ANY)) {
		err = -errno;
		fp_table_del(&d->routes, cid);
	}
	return err;
}

int warp_fp_demux_route_del(struct warp_fp_demux *d, const uint8_t cid[WARP_CID_LEN])
{
	int err = fp_table_del(&d->routes, cid);

	if (!err && d->skel && bpf_map_delete_elem(bpf_map__fd(d->skel->maps.cid_routes), cid))
		err = -errno;
	return err;
}

unsigned int warp_fp_demux_select(const struct warp_fp_demux *d, const void *buf, size_t len)
{
	struct warp_fp_demux *w = (struct warp_fp_demux *)d;
	const struct warp_cid_route *r;
	const uint8_t *p = buf;

	if (len < WARP_HDR_LEN ||
	    (p[0] & (WARP_HDR_MARK_MASK | WARP_HDR_VER_MASK)) !=
		    (WARP_HDR_MARK | WARP_WIRE_VERSION << WARP_HDR_VER_SHIFT)) {
		w->stat[WARP_CID_STAT_NOT_WARP]++;
		return d->default_index;
	}
	r = fp_table_get(&d->routes, p + WARP_CID_OFF);
	if (!r) {
		w->stat[WARP_CID_STAT_UNKNOWN]++;
		return d->default_index;
	}
	w->stat[WARP_CID_STAT_ROUTED]++;
	return r->sock_index;
}

int warp_fp_demux_stats(struct warp_fp_demux *d, uint64_t out[WARP_CID_STAT_MAX])
{
	int ncpu = libbpf_num_possible_cpus(), c;
	uint64_t *vals;
	uint32_t k;

	memcpy(out, d->stat, sizeof(d->stat));
	if (!d->skel)
		return 0;
	if (ncpu <= 0)
		return -EINVAL;
	vals = calloc((size_t)ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	for (k = 0; k < WARP_CID_STAT_MAX; k++)
		if (!bpf_map_lookup_elem(bpf_map__fd(d->skel->maps.cid_stats), &k, vals))
			for (c = 0; c < ncpu; c++)
				out[k] += vals[c];
	free(vals);
	return 0;
}

int warp_fp_demux_prog_fd(const struct warp_fp_demux *d)
{
	return d->skel ? bpf_program__fd(d->skel->progs.warp_cid_select) : -1;
}
