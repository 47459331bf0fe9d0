/* SPDX-License-Identifier: MIT */
/*
 * Kernel fast path (internal API): loads and attaches the BPF programs of bpf/ and keeps
 * their maps, or runs the same logic in userspace when BPF is not usable.
 *
 * One struct warp_fp per node:
 *
 *	struct warp_fp_opts o = { .name = "node", .probe_cb = on_probe,
 *				  .ka_verify = check_ping_auth, .user = node };
 *	struct warp_fp *fp = warp_fp_new(&o);          // never fails for lack of BPF
 *	pr_info("%s", warp_fp_status(fp));              // "bpf: active" / "bpf: off (reason)"
 *	warp_fp_attach(fp, if_nametoindex("eth0"), 0); // XDP native, else TC clsact
 *	warp_fp_loop_add(fp, loop);                     // probe events through the epoll loop
 *	warp_fp_ka_add(fp, cid, peer_cid, &peer_sa, local_port);
 *	...for every datagram the node's socket receives...
 *	if (warp_fp_input(fp, buf, n, &src_sa, local_port, 0, reply, &rlen) == WARP_FP_REPLY)
 *		sendto(sock, reply, rlen, 0, &src_sa, salen);
 *	warp_fp_free(fp);                               // detaches everything and unpins
 *
 * Keepalive: a PING whose CID is registered with warp_fp_ka_add() and whose source is the
 * registered peer endpoint is answered with the PONG (wire.h).  With BPF active the kernel
 * answers before the socket sees it; warp_fp_input() answers whatever still reaches
 * userspace (interfaces without the program, BPF off) with the same rules, so the node
 * behaves identically either way.  warp_fp_ka_get() returns last_seen_ns / answered.
 *
 * Probes: warp_fp_probe_add() registers an outstanding STUN transaction ID or punch nonce;
 * the first matching reply (STUN Binding success/error response, or PROBE_REPLY) produces one
 * struct warp_probe_event through opts.probe_cb: from the ring buffer (kernel receive time)
 * when BPF sees it, from warp_fp_input() otherwise.  The id is then forgotten.  The reply is
 * always delivered to the socket too.  Times are CLOCK_MONOTONIC ns (bpf_ktime_get_ns()).
 *
 * Pins: maps live under <pin_root>/<name>/ while the node runs, so other processes
 * (status tools, tests) can read them; warp_fp_new() removes what a crashed previous run left
 * there (pins and TC filters) unless its process is still alive (-EBUSY).  XDP is attached
 * through BPF links that are not pinned, so it goes away with the process.
 *
 * Never falls back to generic (SKB) XDP: an interface without native XDP gets the TC program.
 *
 * Threads: a struct warp_fp belongs to one thread (the node's loop thread); only
 * warp_fp_stats() may be called from any thread.
 * All int functions return 0 (or a count/mode) or a negative errno / WARP_E* code.
 */
#ifndef WARP_BPF_FASTPATH_H
#define WARP_BPF_FASTPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/wire.h>


struct warp_loop;
struct warp_fp;
struct warp_fp_demux;

#define WARP_FP_PIN_ROOT "/sys/fs/bpf/warpgate"

enum {
	WARP_FP_F_NO_BPF = 1u << 0, /* userspace logic only (also: env WARP_BPF=off) */
	WARP_FP_F_NO_PIN = 1u << 1, /* keep maps unpinned (benchmarks, throwaway tests) */
};

/* warp_fp_attach() flags and return values. */
enum {
	WARP_FP_ATTACH_TC = 1u << 0,	/* skip XDP, attach the clsact ingress program */
	WARP_FP_ATTACH_NO_TC = 1u << 1, /* native XDP or nothing */
};

enum warp_fp_mode {
	WARP_FP_MODE_XDP = 1, /* native (driver) XDP link */
	WARP_FP_MODE_TC = 2,  /* clsact ingress filter */
};

enum warp_fp_verdict {
	WARP_FP_PASS = 0,  /* not for the fast path: the node handles it */
	WARP_FP_REPLY = 1, /* keepalive answered: send the reply back to the source */
	WARP_FP_DROP = 2,  /* ping from a stranger: ignore it */
	WARP_FP_EVENT = 3, /* probe reply matched (callback run); the node handles it too */
};

typedef void (*warp_fp_probe_cb)(const struct warp_probe_event *ev, void *user);
/* Userspace can check what the kernel cannot: the ping's authenticator (warp_ping_verify()
 * with the session's keepalive key).  Return 0 to answer, non-zero to drop. */
typedef int (*warp_fp_ka_verify_cb)(const uint8_t *ping, size_t len, void *user);

struct warp_fp_opts {
	const char *name;	    /* pin directory name; default "node" */
	const char *pin_root;	    /* default WARP_FP_PIN_ROOT */
	unsigned int flags;	    /* WARP_FP_F_* */
	uint32_t ka_max_entries;    /* default 65536 */
	uint32_t probe_max_entries; /* default 4096 */
	warp_fp_probe_cb probe_cb;
	warp_fp_ka_verify_cb ka_verify; /* optional, for pings answered by warp_fp_input() */
	void *user;			/* passed to both callbacks */
};

struct warp_fp_stats {
	uint64_t ka[WARP_KA_STAT_MAX]; /* kernel and userspace answers summed */
	uint64_t probe[WARP_PROBE_STAT_MAX];
	uint64_t user_replies; /* pongs built by warp_fp_input() */
};

/* Checks privileges and kernel support without loading anything.  Returns 0, or a negative
 * error with a human reason ("no CAP_BPF", "kernel lacks BPF ring buffer", ...) in reason. */
int warp_fp_check_support(char *reason, size_t len);

/* Loads the programs (or runs in userspace mode, with the reason kept for status).  Fails
 * only for bad options, memory, or a live instance of the same name (-EBUSY). */
struct warp_fp *warp_fp_new(const struct warp_fp_opts *opts);
void warp_fp_free(struct warp_fp *fp);

bool warp_fp_active(const struct warp_fp *fp);
/* "bpf: active (xdp: eth0, tc: lo)", "bpf: active (not attached)" or "bpf: off (reason)". */
const char *warp_fp_status(const struct warp_fp *fp);

/* Attaches the responder/matcher to an interface: native XDP, else (no native XDP support)
 * TC clsact ingress.  Returns enum warp_fp_mode.  Non-Ethernet interfaces: -EOPNOTSUPP.
 * In userspace mode returns -EOPNOTSUPP (nothing to attach; warp_fp_input() does the work). */
int warp_fp_attach(struct warp_fp *fp, int ifindex, unsigned int flags);
int warp_fp_detach(struct warp_fp *fp, int ifindex);
/* Attaches to the interfaces a socket bound to `bound` receives on: the interface holding
 * that address, or for a wildcard address every interface that is up, except loopback and
 * non-Ethernet ones.  Returns the number of interfaces attached (failures are logged and
 * skipped), -EOPNOTSUPP in userspace mode. */
int warp_fp_attach_auto(struct warp_fp *fp, const struct sockaddr *bound, unsigned int flags);

/* Keepalive map.  peer: AF_INET or AF_INET6 (v4-mapped accepted); local_port host order,
 * 0 = any port. */
int warp_fp_ka_add(struct warp_fp *fp, const uint8_t cid[WARP_CID_LEN],
		   const uint8_t peer_cid[WARP_CID_LEN], const struct sockaddr *peer,
		   uint16_t local_port);
int warp_fp_ka_del(struct warp_fp *fp, const uint8_t cid[WARP_CID_LEN]);
/* Copies the entry (last_seen_ns, answered, ...); -ENOENT if absent. */
int warp_fp_ka_get(struct warp_fp *fp, const uint8_t cid[WARP_CID_LEN], struct warp_ka_entry *out);

/* Probe map.  sent_ns: CLOCK_MONOTONIC at send time (0: now). */
int warp_fp_probe_add(struct warp_fp *fp, const uint8_t id[12], uint64_t cookie, uint64_t sent_ns);
int warp_fp_probe_del(struct warp_fp *fp, const uint8_t id[12]);

/* Ring buffer: an fd that polls readable when events wait (-1 in userspace mode), and the
 * call that drains it into opts.probe_cb (returns the number of events). */
int warp_fp_event_fd(const struct warp_fp *fp);
int warp_fp_poll_events(struct warp_fp *fp);
/* Registers / removes the event fd with an epoll loop (no-op in userspace mode). */
int warp_fp_loop_add(struct warp_fp *fp, struct warp_loop *loop);
void warp_fp_loop_del(struct warp_fp *fp);

/* Userspace path: a UDP payload received on local_port from src.  WARP_FP_REPLY puts the
 * pong (same length as the ping) into reply (*reply_len is its capacity on entry).  rx_ns
 * is the receive time for probe events (0: now). */
enum warp_fp_verdict warp_fp_input(struct warp_fp *fp, const void *buf, size_t len,
				   const struct sockaddr *src, uint16_t local_port, uint64_t rx_ns,
				   void *reply, size_t *reply_len);

int warp_fp_stats(struct warp_fp *fp, struct warp_fp_stats *out);

/* Removes <pin_root>/<name> and the TC filters a dead previous owner left; -EBUSY if the
 * owner is alive.  warp_fp_new() calls it. */
int warp_fp_cleanup_stale(const char *pin_root, const char *name);

/* ---- CID demux over a SO_REUSEPORT group ----
 * fds: the group's sockets, all bound to the same address with SO_REUSEPORT; fds[i] is
 * route index i; default_index receives unknown CIDs and non-warpgate datagrams.  With
 * WARP_FP_F_NO_BPF (or without BPF) the object only keeps the table and
 * warp_fp_demux_select() is the userspace demux; warp_fp_demux_active() tells which. */
struct warp_fp_demux *warp_fp_demux_new(const int *fds, unsigned int n, unsigned int default_index,
					unsigned int flags);
/* Detaches the program from the group (the sockets must still be open) and frees. */
void warp_fp_demux_free(struct warp_fp_demux *d);
bool warp_fp_demux_active(const struct warp_fp_demux *d);
const char *warp_fp_demux_status(const struct warp_fp_demux *d);
int warp_fp_demux_route_add(struct warp_fp_demux *d, const uint8_t cid[WARP_CID_LEN],
			    unsigned int index);
int warp_fp_demux_route_del(struct warp_fp_demux *d, const uint8_t cid[WARP_CID_LEN]);
/* Index of the socket that owns the datagram (same rules as the BPF program). */
unsigned int warp_fp_demux_select(const struct warp_fp_demux *d, const void *buf, size_t len);
int warp_fp_demux_stats(struct warp_fp_demux *d, uint64_t out[WARP_CID_STAT_MAX]);
/* Program fd (for run-time statistics); -1 in userspace mode. */
int warp_fp_demux_prog_fd(const struct warp_fp_demux *d);

/* Test and benchmark hooks: program fds of the loaded fast path (-1 when off). */
int warp_fp_xdp_prog_fd(const struct warp_fp *fp);
int warp_fp_tc_prog_fd(const struct warp_fp *fp);

#endif
