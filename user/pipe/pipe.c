// SPDX-License-Identifier: MIT
/*
 * The pipe layer: glues the sans-IO cores (handshake, session, stream) to paths (the node's
 * UDP sockets, sockets of their own, TCP connections, relays) and to the loop.
 *
 * Receive: every warpgate packet is routed by the connection ID at offset 4 — to a handshake
 * in progress or to an established pipe — whatever its 4-tuple, so a pipe survives NAT
 * rebinding and can move between paths.  An HS_INIT (which carries no CID of ours yet) is
 * matched by its ephemeral key for retransmissions, else starts a responder.
 *
 * Send: the stream engine produces payloads, the session seals them in place, the path
 * sends them.  One timer per pipe covers the stream, the session (FINISH retransmission,
 * confirmation) and keepalives.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <warpgate/error.h>
#include <warpgate/pipe.h>

#define LOG_COMPONENT "pipe"
#include "core/log.h"
#include "core/util.h"
#include "net/endpoint.h"
#include "bpf/fastpath.h"
#include "pipe/frame.h"
#include "pipe/handshake.h"
#include "pipe/pipe_internal.h"
#include "pipe/session.h"
#include "pipe/stream.h"
#undef WARP_SUB_ALL
#include "pipe/sub.h"

/* sub.h names its match-all spec WARP_SUB_ALL too; the public one (pipe.h) is an id. */
#undef WARP_SUB_ALL
#define WARP_SUB_ALL 0

#define UDP_PACKET_MAX    1200   /* fits every IPv6 path (1280) with room for tunnels */
#define TCP_PAYLOAD_MAX   16384
#define LOOPBACK_PACKET_MAX 32768
#define TCP_OUTQ_MAX      (4u << 20)
#define KEEPALIVE_DEF_MS  15000  /* under the 30 s UDP timeouts NATs commonly use */
#define DEAD_AFTER_PINGS  4      /* unanswered keepalives before the path is declared dead */
#define RESPONDER_COOKIE_THRESHOLD 256
#define CLOSE_LINGER_MS   3000

#define PIPE_MAX_CAND  4
#define PIPE_MAX_HINTS 8

/* Direct candidates of a peer learned while setting up a relay, for the pipe to come. */
struct pipe_hint {
	uint8_t key[WARP_PUBKEY_LEN];
	struct sockaddr_storage eps[PIPE_MAX_CAND];
	int n;
	uint64_t expires;
};

struct pipe_ctx {
	struct warp_node *node;
	struct pipe_hint hints[PIPE_MAX_HINTS];
	unsigned int next_hint;
	struct node_rx_hook hook;
	struct cidtab inits;            /* ephemeral key prefix -> responder pipe_hs */
	struct warp_cookie_jar *jar;
	unsigned int responders;
	pipe_probe_fn probe_fn;
	void *probe_user;
	pipe_inbound_fn inbound_fn;
	void *inbound_user;
	int inbound_expected;
	pipe_fd_acceptor_fn fd_acceptor;
	struct list_head orphans;       /* accepted TCP paths waiting for their INIT */
	/* UDP send batch: packets of one pipe flush go out in one sendmmsg */
	uint8_t *batch_buf;
	size_t batch_used;
	struct iovec batch[32];
	int nbatch;
	uint8_t buf[WARP_PKT_MAX + 64];
	uint8_t out[WARP_PKT_MAX + 64];
};

struct pipe_hs {
	struct list_head link;
	struct pipe_ctx *ctx;
	struct warp_hs *hs;
	struct pipe_path *path;
	struct warp_timer *timer;
	bool responder;
	bool in_inits;
	uint8_t eph_key[WARP_CID_LEN];
	uint64_t linger_until;
	/* initiator */
	pipe_dial_cb cb;
	void *user;
	enum warp_path_class cls;
	char strategy[24];
};

struct warp_pipe {
	struct list_head link;
	struct pipe_ctx *ctx;
	struct warp_node *node;
	int refs;
	bool registered;
	struct warp_session *sess;
	struct warp_stream *stream;
	struct pipe_path *path;
	struct warp_timer *timer;
	struct warp_subs *subs;
	uint8_t local_cid[WARP_CID_LEN];
	uint8_t peer_cid[WARP_CID_LEN];
	uint8_t peer_key[WARP_PUBKEY_LEN];
	char strategy[24];
	enum warp_path_class cls;
	bool initiator;
	bool open;             /* false once the stream closed or aborted */
	bool peer_eos;
	int close_err;
	uint64_t created_ns, last_rx_ns, last_tx_ns, last_msg_ns, last_pong_ns;
	uint64_t next_ping_ns;
	uint32_t keepalive_ms;
	uint32_t unanswered;
	uint64_t path_changes;
	uint64_t min_rtt_ns;
	warp_pipe_closed_cb closed_cb;
	void *closed_user;
	warp_pipe_event_cb writable_cb, eos_cb;
	void *writable_user, *eos_user;
	void *user;
	int all_sub;           /* internal id of the WARP_SUB_ALL subscription (0: none) */
	bool flush_pending;    /* a deferred flush is queued on the loop */
	bool ka_installed;     /* the kernel answers this pipe's keepalive pings */
	/* direct candidates pinged while the pipe relays */
	struct sockaddr_storage cand[PIPE_MAX_CAND];
	int ncand;
	struct warp_timer *upgrade_timer;
	bool half_close;
	struct list_head sub_cbs;
	uint64_t app_idle_ns;  /* close after this long without messages (0: never) */
};

/* Adapts a subscription callback to the public signature. */
struct sub_cb {
	struct list_head link;
	struct warp_pipe *pipe;
	int id;
	warp_msg_cb cb;
	void *user;
};

static void pipe_kick(struct warp_pipe *p);
static void pipe_free(struct warp_pipe *p);
static void ka_sync(struct warp_pipe *p);
static void apply_hints(struct warp_pipe *p);

void pipe_get(struct warp_pipe *p)
{
	p->refs++;
}

void pipe_put(struct warp_pipe *p)
{
	if (p && --p->refs == 0)
		pipe_free(p);
}
static void pipe_rx(struct pipe_ctx *ctx, struct pipe_path *via, uint8_t *pkt, size_t len,
		    const struct sockaddr *src, const struct sockaddr *dst, int ifindex, int fd);

static struct pipe_ctx *ctx_of(struct warp_node *node)
{
	return node->pipe_ctx;
}

/* ------------------------------------------------------------------ paths */

static void tcp_io(struct warp_loop *loop, int fd, unsigned int events, void *user);
static void own_udp_io(struct warp_loop *loop, int fd, unsigned int events, void *user);

static struct pipe_path *path_alloc(struct warp_node *node, enum pipe_path_kind kind, int fd,
				    const struct sockaddr *remote)
{
	struct pipe_path *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->kind = kind;
	p->node = node;
	p->fd = fd;
	list_init(&p->orphan);
	if (remote)
		memcpy(&p->remote, remote, warp_ep_len(remote));
	p->cls = warp_ep_is_loopback(remote) || warp_ep_is_private(remote) ||
				 warp_ep_is_linklocal(remote)
			 ? WARP_PATH_LOCAL
			 : WARP_PATH_DIRECT;
	return p;
}

struct pipe_path *pipe_path_udp(struct warp_node *node, const struct sockaddr *remote,
				const struct sockaddr *local, int ifindex)
{
	struct pipe_path *p;

	if (!node_udp_sock(node, remote->sa_family)) {
		errno = EAFNOSUPPORT;
		return NULL;
	}
	p = path_alloc(node, PATH_UDP_SHARED, -1, remote);
	if (p && local)
		memcpy(&p->local, local, warp_ep_len(local));
	if (p)
		p->ifindex = ifindex;
	return p;
}

struct pipe_path *pipe_path_udp_own(struct warp_node *node, int fd, const struct sockaddr *remote)
{
	struct pipe_path *p = path_alloc(node, PATH_UDP_OWN, fd, remote);
	int err;

	if (!p)
		return NULL;
	warp_sock_local(fd, &p->local);
	err = warp_loop_add_fd(node->loop, fd, WARP_EV_READ, own_udp_io, p);
	if (err) {
		p->fd = -1;
		free(p);
		errno = -err;
		return NULL;
	}
	return p;
}

struct pipe_path *pipe_path_tcp(struct warp_node *node, int fd, const struct sockaddr *remote,
				bool connecting)
{
	struct pipe_path *p = path_alloc(node, PATH_TCP, fd, remote);
	int err;

	if (!p)
		return NULL;
	p->connecting = connecting;
	p->deframer = warp_deframer_new(0);
	if (!p->deframer) {
		free(p);
		return NULL;
	}
	warp_sock_local(fd, &p->local);
	err = warp_loop_add_fd(node->loop, fd, connecting ? WARP_EV_WRITE : WARP_EV_READ, tcp_io,
			       p);
	if (err) {
		warp_deframer_free(p->deframer);
		free(p);
		errno = -err;
		return NULL;
	}
	return p;
}

struct pipe_path *pipe_path_relay(struct warp_node *node, const struct sockaddr *remote,
				  const struct pipe_relay_ops *ops, void *user)
{
	struct pipe_path *p = path_alloc(node, PATH_RELAY, -1, remote);

	if (!p)
		return NULL;
	p->relay = ops;
	p->relay_user = user;
	p->cls = WARP_PATH_RELAY;
	return p;
}

void pipe_path_free(struct pipe_path *p)
{
	if (!p || p->zombie)
		return;
	list_del(&p->orphan);
	if (p->fd >= 0) {
		warp_loop_del_fd(p->node->loop, p->fd);
		close(p->fd);
		p->fd = -1;
	}
	p->hs = NULL;
	p->pipe = NULL;
	if (p->busy) {
		/* Freed from inside its own I/O callback (a handshake failed, a pipe closed):
		 * the callback finishes with the memory, then frees it. */
		p->zombie = true;
		return;
	}
	if (p->relay && p->relay->release)
		p->relay->release(p->relay_user);
	warp_deframer_free(p->deframer);
	free(p->outq);
	free(p);
}

static int tcp_queue(struct pipe_path *p, const uint8_t *data, size_t len)
{
	if (p->outlen + len > TCP_OUTQ_MAX)
		return -ENOBUFS;
	if (p->outlen + len > p->outcap) {
		size_t cap = p->outcap ? p->outcap : 16384;
		uint8_t *n;

		while (cap < p->outlen + len)
			cap *= 2;
		n = realloc(p->outq, cap);
		if (!n)
			return -ENOMEM;
		p->outq = n;
		p->outcap = cap;
	}
	memcpy(p->outq + p->outlen, data, len);
	p->outlen += len;
	return 0;
}

static int tcp_send(struct pipe_path *p, const uint8_t *pkt, size_t len)
{
	uint8_t prefix[WARP_TCP_PREFIX_LEN];
	struct iovec iov[2] = { { prefix, sizeof(prefix) }, { (void *)pkt, len } };
	ssize_t n = 0;
	size_t total = sizeof(prefix) + len;
	int err;

	err = warp_tcp_prefix(prefix, len);
	if (err)
		return err;
	if (!p->outlen && !p->connecting) {
		n = writev(p->fd, iov, 2);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			n = 0;
		}
		if ((size_t)n == total)
			return 0;
	}
	/* Queue what did not go out and wait for EPOLLOUT. */
	if ((size_t)n < sizeof(prefix)) {
		err = tcp_queue(p, prefix + n, sizeof(prefix) - (size_t)n);
		if (!err)
			err = tcp_queue(p, pkt, len);
	} else {
		err = tcp_queue(p, pkt + ((size_t)n - sizeof(prefix)), total - (size_t)n);
	}
	if (!err)
		warp_loop_mod_fd(p->node->loop, p->fd, WARP_EV_READ | WARP_EV_WRITE);
	return err;
}

static int path_send(struct pipe_path *p, const uint8_t *pkt, size_t len)
{
	switch (p->kind) {
	case PATH_UDP_SHARED: {
		int n = node_send(p->node, pkt, len, (struct sockaddr *)&p->remote,
				  p->local.ss_family ? (struct sockaddr *)&p->local : NULL,
				  p->ifindex);

		/* Our address went away (roaming, DHCP): let the kernel pick the source. */
		if ((n == -EINVAL || n == -EADDRNOTAVAIL || n == -ENETUNREACH) &&
		    p->local.ss_family) {
			memset(&p->local, 0, sizeof(p->local));
			p->ifindex = 0;
			n = node_send(p->node, pkt, len, (struct sockaddr *)&p->remote, NULL, 0);
		}
		return n;
	}
	case PATH_UDP_OWN:
		return warp_sock_sendto(p->fd, pkt, len, (struct sockaddr *)&p->remote, NULL, 0);
	case PATH_TCP:
		return tcp_send(p, pkt, len);
	case PATH_RELAY:
		return p->relay->send(p->relay_user, pkt, len);
	}
	return -EINVAL;
}

/* Payload budget per packet for the stream engine: small enough for any internet path
 * (IPv6's 1280-byte minimum MTU, tunnels), large on loopback where the MTU is 64 KiB and
 * per-packet costs dominate. */
static size_t path_payload_max(const struct pipe_path *p)
{
	if (p->kind == PATH_TCP)
		return TCP_PAYLOAD_MAX;
	if (p->kind != PATH_RELAY && warp_ep_is_loopback((const struct sockaddr *)&p->remote))
		return LOOPBACK_PACKET_MAX - WARP_SESSION_OVERHEAD;
	return UDP_PACKET_MAX - WARP_SESSION_OVERHEAD;
}

static bool path_backlogged(const struct pipe_path *p)
{
	return p->kind == PATH_TCP && (p->connecting || p->outlen > TCP_OUTQ_MAX / 2);
}

/* ------------------------------------------------------------------ handshakes */

static void hs_free(struct pipe_hs *h)
{
	if (!h)
		return;
	list_del(&h->link);
	if (h->hs) {
		const uint8_t *cid = warp_hs_local_cid(h->hs);
		struct node_cid_entry *e = cidtab_get(&h->ctx->node->cids, cid);

		if (e && e->obj == h)
			free(cidtab_del(&h->ctx->node->cids, cid));
	}
	if (h->in_inits)
		cidtab_del(&h->ctx->inits, h->eph_key);
	if (h->responder)
		h->ctx->responders--;
	warp_timer_free(h->timer);
	warp_hs_free(h->hs);
	pipe_path_free(h->path);
	free(h);
}

static void hs_arm(struct pipe_hs *h)
{
	uint64_t t = h->linger_until ? h->linger_until : warp_hs_next_timeout(h->hs);

	if (t == UINT64_MAX)
		warp_timer_cancel(h->timer);
	else
		warp_timer_arm_at(h->timer, t);
}

static void hs_fail(struct pipe_hs *h, int err)
{
	pipe_dial_cb cb = h->cb;
	void *user = h->user;

	if (h->responder) {
		char ep[WARP_EP_STRLEN];

		pr_debug("inbound handshake from %s failed: %s",
			 warp_ep_str((struct sockaddr *)&h->path->remote, ep, sizeof(ep)),
			 warp_strerror(err));
		hs_free(h);
		return;
	}
	hs_free(h);
	if (cb)
		cb(NULL, err, user);
}

static struct warp_pipe *pipe_create(struct pipe_hs *h);

/* The handshake finished: a pipe takes over its path, CID and keys. */
static void hs_done(struct pipe_hs *h)
{
	struct warp_node *node = h->ctx->node;
	struct warp_pipe *p = pipe_create(h);
	pipe_dial_cb cb = h->cb;
	void *user = h->user;

	if (!p) {
		hs_fail(h, -ENOMEM);
		return;
	}
	hs_free(h);
	if (!p->initiator) {
		char ep[WARP_EP_STRLEN];

		pr_debug("accepted pipe from %s",
			 warp_ep_str((struct sockaddr *)&p->path->remote, ep, sizeof(ep)));
		pipe_deliver_inbound(node, p);
	} else if (cb) {
		pipe_get(p);
		cb(p, 0, user);
	}
	pipe_kick(p);
}

static void hs_send(struct pipe_hs *h, const uint8_t *pkt, size_t len)
{
	int err = path_send(h->path, pkt, len);

	if (err < 0 && err != -EAGAIN)
		pr_debug("handshake send: %s", warp_strerror(err));
}

static void hs_timer(struct warp_timer *t, void *user)
{
	struct pipe_hs *h = user;
	uint8_t out[WARP_HS_OUT_MAX];
	size_t n = 0;
	int rc;

	if (h->linger_until) {
		hs_free(h);
		return;
	}
	rc = warp_hs_poll(h->hs, warp_time_ns(), out, &n);
	if (rc < 0) {
		hs_fail(h, rc);
		return;
	}
	if (n)
		hs_send(h, out, n);
	hs_arm(h);
}

static void hs_input(struct pipe_hs *h, const uint8_t *pkt, size_t len)
{
	uint8_t out[WARP_HS_OUT_MAX];
	size_t n = 0;
	int rc = warp_hs_recv(h->hs, pkt, len, warp_time_ns(), out, &n);

	if (n)
		hs_send(h, out, n);
	switch (warp_hs_state(h->hs)) {
	case WARP_HS_DONE:
		hs_done(h);
		return;
	case WARP_HS_FAILED:
		if (h->responder && !h->linger_until) {
			/* Keep it a little so duplicates get the same refusal. */
			h->linger_until = warp_time_ns() + 2000000000ull;
			hs_arm(h);
			return;
		}
		if (!h->responder) {
			hs_fail(h, warp_hs_error(h->hs));
			return;
		}
		return;
	default:
		if (rc < 0)
			pr_debug("handshake packet ignored: %s", warp_strerror(rc));
		hs_arm(h);
	}
}

static int hs_register(struct pipe_hs *h)
{
	struct node_cid_entry *e = malloc(sizeof(*e));
	int err;

	if (!e)
		return -ENOMEM;
	e->kind = NODE_CID_HS;
	e->obj = h;
	err = cidtab_put(&h->ctx->node->cids, warp_hs_local_cid(h->hs), e);
	if (err)
		free(e);
	return err;
}

static struct pipe_hs *hs_new(struct pipe_ctx *ctx, struct pipe_path *path,
			      const struct warp_hs_cfg *cfg)
{
	struct pipe_hs *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->ctx = ctx;
	list_add_tail(&h->link, &ctx->node->handshakes);
	h->timer = warp_timer_new(ctx->node->loop, hs_timer, h);
	h->hs = h->timer ? warp_hs_new(cfg, warp_time_ns()) : NULL;
	if (!h->hs || hs_register(h)) {
		int err = errno ? errno : ENOMEM;

		h->path = NULL; /* not ours yet: the caller frees it */
		hs_free(h);
		errno = err;
		return NULL;
	}
	h->path = path;
	path->hs = h;
	list_del(&path->orphan);
	return h;
}

struct pipe_dial *pipe_dial(struct warp_node *node, struct pipe_path *path,
			    const struct pipe_dial_opts *opts, pipe_dial_cb cb, void *user)
{
	struct pipe_ctx *ctx = ctx_of(node);
	struct warp_hs_cfg cfg = { 0 };
	struct pipe_hs *h;

	cfg.role = WARP_HS_INITIATOR;
	cfg.identity = node->id;
	cfg.expected_peer = opts ? opts->expect_key : NULL;
	cfg.wall_ms = warp_wall_ms();
	if (opts && opts->init_cid)
		memcpy(cfg.init_cid, opts->init_cid, WARP_CID_LEN);
	if (opts) {
		cfg.timeout_ms = opts->timeout_ms;
		cfg.rto_ms = opts->rto_ms;
	}
	node_new_cid(node, cfg.local_cid);
	h = hs_new(ctx, path, &cfg);
	if (!h)
		return NULL;
	h->cb = cb;
	h->user = user;
	h->cls = opts ? opts->cls : path->cls;
	if (opts && opts->strategy)
		snprintf(h->strategy, sizeof(h->strategy), "%s", opts->strategy);
	/* The INIT goes out from the loop, so cb never runs inside this call; a TCP path still
	 * connecting sends it once connected (tcp_io). */
	if (!(path->kind == PATH_TCP && path->connecting))
		warp_timer_arm_ms(h->timer, 0);
	return (struct pipe_dial *)h;
}

void pipe_dial_cancel(struct pipe_dial *d)
{
	hs_free((struct pipe_hs *)d);
}

/* `expose --allow KEY`: only listed identities get a pipe (the refusal is sent sealed, so
 * the connector learns why instead of timing out). */
static int responder_policy(const uint8_t peer[WARP_PUBKEY_LEN], void *user)
{
	return node_peer_allowed(user, peer) ? 0 : -EACCES;
}

/* An HS_INIT from a peer: a retransmission, a cookie exchange, or a new responder. */
static void rx_init(struct pipe_ctx *ctx, struct pipe_path *via, const uint8_t *pkt, size_t len,
		    const struct sockaddr *src, const struct sockaddr *dst, int ifindex, int fd)
{
	struct warp_node *node = ctx->node;
	struct warp_hs_init_info info;
	struct warp_hs_cfg cfg = { 0 };
	struct pipe_hs *h;
	struct pipe_path *path, *relay = NULL;
	uint8_t out[WARP_HS_OUT_MAX], addr[18];
	int rc;

	if (warp_hs_init_peek(pkt, len, &info) < 0)
		return;
	h = cidtab_get(&ctx->inits, info.ephemeral);
	if (h) {
		hs_input(h, pkt, len);
		return;
	}
	if (!node->accept_cb && !ctx->inbound_expected) {
		pr_debug("inbound handshake refused: not listening");
		return;
	}
	/* On a relay's socket: the relay makes the path the answer goes back on. */
	if (!via && fd >= 0 && ctx->fd_acceptor) {
		relay = ctx->fd_acceptor(node, fd, src);
		if (!relay)
			return; /* own sockets belong to their dials */
		via = relay;
	}
	warp_ep_addr16(src, addr);
	memcpy(addr + 16, &((const struct sockaddr_in *)src)->sin_port, 2);
	warp_cookie_jar_set(ctx->jar, ctx->responders >= RESPONDER_COOKIE_THRESHOLD);
	rc = warp_cookie_check(ctx->jar, pkt, len, addr, sizeof(addr), warp_time_ns(), out);
	if (rc > 0) {
		if (via)
			path_send(via, out, (size_t)rc);
		else
			node_send(node, out, (size_t)rc, src, dst, ifindex);
		pipe_path_free(relay);
		return;
	}
	if (rc < 0) {
		pipe_path_free(relay);
		return;
	}
	if (via) {
		path = via; /* TCP connection or relay: the handshake owns it from now on */
	} else if (fd >= 0) {
		return; /* own sockets belong to dials; inbound handshakes use the node's */
	} else {
		path = pipe_path_udp(node, src, dst, ifindex);
		if (!path)
			return;
	}
	cfg.role = WARP_HS_RESPONDER;
	cfg.identity = node->id;
	cfg.policy = responder_policy;
	cfg.policy_user = node;
	cfg.wall_ms = warp_wall_ms();
	node_new_cid(node, cfg.local_cid);
	h = hs_new(ctx, path, &cfg);
	if (!h) {
		if (!via || relay)
			pipe_path_free(path);
		return;
	}
	h->responder = true;
	ctx->responders++;
	memcpy(h->eph_key, info.ephemeral, WARP_CID_LEN);
	if (cidtab_put(&ctx->inits, h->eph_key, h) == 0)
		h->in_inits = true;
	hs_input(h, pkt, len);
}

/* ------------------------------------------------------------------ pipes */

static void pipe_free(struct warp_pipe *p)
{
	struct list_head *pos, *tmp;

	list_for_each_safe(pos, tmp, &p->sub_cbs) {
		list_del(pos);
		free(list_entry(pos, struct sub_cb, link));
	}
	warp_timer_free(p->timer);
	warp_timer_free(p->upgrade_timer);
	warp_stream_free(p->stream);
	warp_session_free(p->sess);
	pipe_path_free(p->path);
	warp_subs_free(p->subs);
	free(p);
}

/* Takes the pipe out of the node: no more packets reach it.  The handle stays valid for
 * its owners until the last release. */
static void pipe_unregister(struct warp_pipe *p)
{
	struct node_cid_entry *e;

	if (!p->registered)
		return;
	p->open = false;
	ka_sync(p);
	p->registered = false;
	list_del(&p->link);
	e = cidtab_get(&p->node->cids, p->local_cid);
	if (e && e->obj == p)
		free(cidtab_del(&p->node->cids, p->local_cid));
	warp_timer_cancel(p->timer);
	warp_timer_cancel(p->upgrade_timer);
	if (p->path) {
		pipe_path_free(p->path);
		p->path = NULL;
	}
	pipe_put(p);
}

static void pipe_closed(struct warp_pipe *p, int err)
{
	if (!p->open)
		return;
	p->open = false;
	p->close_err = err;
	warp_subs_close(p->subs, err);
	if (p->closed_cb)
		p->closed_cb(p, err, p->closed_user);
}

static void on_stream_message(void *user, const uint8_t *data, size_t len, unsigned int flags)
{
	struct warp_pipe *p = user;

	p->last_msg_ns = warp_time_ns();
	warp_subs_dispatch(p->subs, data, len, p->path ? (struct sockaddr *)&p->path->remote : NULL,
			   flags);
}

static void on_stream_writable(void *user)
{
	struct warp_pipe *p = user;

	if (p->writable_cb)
		p->writable_cb(p, p->writable_user);
}

static void on_stream_eos(void *user)
{
	struct warp_pipe *p = user;

	/* The peer is done sending: readers see the end of the pipe once drained.  Unless the
	 * application wants a half-close, finish our side too, so both ends observe the close. */
	p->peer_eos = true;
	warp_subs_close(p->subs, 0);
	if (p->eos_cb)
		p->eos_cb(p, p->eos_user);
	if (!p->half_close && p->open)
		warp_stream_close(p->stream, true);
}

static void on_stream_closed(void *user, int err)
{
	struct warp_pipe *p = user;

	pipe_closed(p, err ? err : p->close_err);
}

static void pipe_send_packet(struct warp_pipe *p, const uint8_t *pkt, size_t len)
{
	int err;

	if (!p->path)
		return;
	err = path_send(p->path, pkt, len);
	if (err < 0 && err != -EAGAIN && err != -ENOBUFS)
		pr_debug("send: %s", warp_strerror(err));
	p->last_tx_ns = warp_time_ns();
}

#define BATCH_BYTES (1u << 20)

static void batch_send(struct warp_pipe *p)
{
	struct pipe_ctx *ctx = p->ctx;
	struct pipe_path *path = p->path;
	int off = 0;

	while (off < ctx->nbatch && path) {
		int fd = path->kind == PATH_UDP_OWN ? path->fd
						    : node_udp_sock(p->node, path->remote.ss_family)->fd;
		const struct sockaddr *src = path->kind == PATH_UDP_SHARED && path->local.ss_family
						     ? (struct sockaddr *)&path->local
						     : NULL;
		int n = warp_sock_sendmmsg(fd, ctx->batch + off, ctx->nbatch - off,
					   (struct sockaddr *)&path->remote, src, path->ifindex);

		if ((n == -EINVAL || n == -EADDRNOTAVAIL || n == -ENETUNREACH) && src) {
			/* Our address went away (roaming): let the kernel pick the source. */
			memset(&path->local, 0, sizeof(path->local));
			path->ifindex = 0;
			continue;
		}
		if (n <= 0) {
			if (n < 0 && n != -EAGAIN)
				pr_debug("sendmmsg: %s", warp_strerror(n));
			break; /* the stream engine retransmits what was lost */
		}
		off += n;
	}
	p->last_tx_ns = warp_time_ns();
	ctx->nbatch = 0;
	ctx->batch_used = 0;
}

/* Seals and sends everything the stream has due, then the session's own packets.  UDP
 * packets are sealed straight into a batch and leave with one sendmmsg. */
static void pipe_flush(struct warp_pipe *p, uint64_t now)
{
	struct pipe_ctx *ctx = p->ctx;
	uint8_t *buf = ctx->out;
	bool batch = p->path && (p->path->kind == PATH_UDP_SHARED || p->path->kind == PATH_UDP_OWN) &&
		     node_udp_sock(p->node, p->path->remote.ss_family);
	size_t pmax;
	int n;

	if (!p->registered)
		return;
	if (batch && !ctx->batch_buf && !(ctx->batch_buf = malloc(BATCH_BYTES)))
		batch = false;
	pmax = path_payload_max(p->path);
	for (int i = 0; i < 4096 && !path_backlogged(p->path); i++) {
		bool ack_only = false;

		if (batch) {
			if (ctx->nbatch == 32 ||
			    ctx->batch_used + pmax + WARP_SESSION_OVERHEAD > BATCH_BYTES)
				batch_send(p);
			buf = ctx->batch_buf + ctx->batch_used;
		}
		n = warp_stream_poll(p->stream, buf + WARP_HDR_LEN, pmax, now, &ack_only);
		if (n <= 0)
			break;
		n = warp_session_seal(p->sess, ack_only ? WARP_PKT_ACK : WARP_PKT_DATA,
				      buf + WARP_HDR_LEN, (size_t)n, buf, WARP_PKT_MAX, now);
		if (n < 0) {
			pr_warn("seal: %s", warp_strerror(n));
			break;
		}
		if (batch) {
			ctx->batch[ctx->nbatch].iov_base = buf;
			ctx->batch[ctx->nbatch++].iov_len = (size_t)n;
			ctx->batch_used += (size_t)n;
		} else {
			pipe_send_packet(p, buf, (size_t)n);
		}
	}
	if (batch && ctx->nbatch)
		batch_send(p);
	buf = ctx->out;
	for (int i = 0; i < 16; i++) {
		n = warp_session_poll(p->sess, now, buf, WARP_PKT_MAX);
		if (n == -ETIMEDOUT) {
			warp_stream_close(p->stream, false);
			pipe_closed(p, -ETIMEDOUT);
			break;
		}
		if (n <= 0)
			break;
		pipe_send_packet(p, buf, (size_t)n);
	}
}

/* The kernel (or the fast path's userspace twin) answers keepalive pings for pipes on UDP
 * paths, once the session is confirmed: before that a ping proves nothing. */
static void ka_sync(struct warp_pipe *p)
{
	struct warp_fp *fp = p->node ? p->node->fastpath : NULL;
	struct pipe_path *path = p->path;
	bool want = fp && p->registered && p->open && path &&
		    (path->kind == PATH_UDP_SHARED || path->kind == PATH_UDP_OWN) &&
		    warp_session_confirmed(p->sess);
	uint16_t lport;

	if (!fp)
		return;
	if (!want) {
		if (p->ka_installed)
			warp_fp_ka_del(fp, p->local_cid);
		p->ka_installed = false;
		return;
	}
	lport = path->kind == PATH_UDP_OWN ? warp_ep_port((struct sockaddr *)&path->local)
					   : p->node->port;
	if (warp_fp_ka_add(fp, p->local_cid, p->peer_cid, (struct sockaddr *)&path->remote,
			   lport) == 0)
		p->ka_installed = true;
}

static uint64_t min3(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t m = a < b ? a : b;

	return m < c ? m : c;
}

static void pipe_arm(struct warp_pipe *p)
{
	uint64_t t;

	if (!p->registered)
		return;
	if (warp_stream_state(p->stream) == WARP_STREAM_DONE) {
		pipe_closed(p, p->close_err);
		pipe_unregister(p);
		return;
	}
	if (!p->ka_installed && p->node->fastpath)
		ka_sync(p);
	t = min3(warp_stream_next_deadline(p->stream), warp_session_next_timeout(p->sess),
		 p->open ? p->next_ping_ns : UINT64_MAX);
	if (p->open && p->app_idle_ns && p->last_msg_ns + p->app_idle_ns < t)
		t = p->last_msg_ns + p->app_idle_ns;
	if (t != UINT64_MAX)
		warp_timer_arm_at(p->timer, t);
	else
		warp_timer_cancel(p->timer);
}

static void pipe_keepalive(struct warp_pipe *p, uint64_t now)
{
	uint8_t ping[WARP_PING_LEN];

	if (!p->open || now < p->next_ping_ns)
		return;
	/* Only when the path has been quiet: any traffic keeps NAT mappings alive too. */
	if (now - p->last_tx_ns >= (uint64_t)p->keepalive_ms * 1000000ull ||
	    now - p->last_rx_ns >= (uint64_t)p->keepalive_ms * 1000000ull) {
		if (warp_session_ping(p->sess, now, ping) == WARP_PING_LEN) {
			pipe_send_packet(p, ping, sizeof(ping));
			p->unanswered++;
		}
		if (p->unanswered > DEAD_AFTER_PINGS)
			pr_debug("path looks dead: %u keepalives unanswered", p->unanswered);
	}
	p->next_ping_ns = now + (uint64_t)p->keepalive_ms * 1000000ull;
}

/* Pings the kernel answered never reach us, but prove the peer alive: the keepalive map's
 * last-seen time counts as traffic before the idle timer may end the pipe. */
static void ka_liveness(struct warp_pipe *p)
{
	struct warp_ka_entry e;

	if (!p->ka_installed || !p->node->fastpath ||
	    warp_fp_ka_get(p->node->fastpath, p->local_cid, &e) ||
	    e.last_seen_ns <= p->last_rx_ns)
		return;
	p->last_rx_ns = e.last_seen_ns;
	warp_stream_touch(p->stream, e.last_seen_ns);
}

static void pipe_timer(struct warp_timer *t, void *user)
{
	struct warp_pipe *p = user;
	uint64_t now = warp_time_ns();

	pipe_get(p);
	ka_liveness(p);
	warp_stream_on_timer(p->stream, now);
	if (p->open && p->app_idle_ns && now - p->last_msg_ns >= p->app_idle_ns) {
		pr_debug("pipe idle for %llu ms: closing",
			 (unsigned long long)(p->app_idle_ns / 1000000ull));
		p->close_err = -WARP_EIDLE;
		warp_stream_close(p->stream, true);
		warp_subs_close(p->subs, -WARP_EIDLE);
		p->app_idle_ns = 0;
	}
	pipe_keepalive(p, now);
	pipe_flush(p, now);
	pipe_arm(p);
	pipe_put(p);
}

static void pipe_kick(struct warp_pipe *p)
{
	uint64_t now = warp_time_ns();

	pipe_get(p);
	pipe_flush(p, now);
	pipe_arm(p);
	pipe_put(p);
}

static void deferred_flush(void *user)
{
	struct warp_pipe *p = user;

	p->flush_pending = false;
	pipe_kick(p);
	pipe_put(p);
}

/* New data queued: inside a loop callback, flush once the callbacks return so that several
 * sends share packets and one sendmmsg; called from outside the loop, send at once. */
static void pipe_after_send(struct warp_pipe *p)
{
	if (!warp_loop_dispatching(p->node->loop)) {
		pipe_kick(p);
		return;
	}
	if (p->flush_pending)
		return;
	if (warp_loop_defer(p->node->loop, deferred_flush, p) == 0) {
		p->flush_pending = true;
		pipe_get(p);
	} else {
		pipe_kick(p);
	}
}

static struct warp_pipe *pipe_create(struct pipe_hs *h)
{
	struct warp_node *node = h->ctx->node;
	struct warp_pipe *p = calloc(1, sizeof(*p));
	struct warp_stream_conf sc = { 0 };
	struct node_cid_entry *e = NULL;
	uint64_t now = warp_time_ns();

	if (!p)
		return NULL;
	p->ctx = h->ctx;
	p->node = node;
	p->refs = 1; /* the node's */
	p->open = true;
	p->initiator = !h->responder;
	p->created_ns = p->last_rx_ns = p->last_tx_ns = p->last_msg_ns = now;
	list_init(&p->sub_cbs);
	p->keepalive_ms = node->conf.keepalive_ms ? node->conf.keepalive_ms : KEEPALIVE_DEF_MS;
	p->app_idle_ns = (uint64_t)node->conf.idle_timeout_ms * 1000000ull;
	p->next_ping_ns = now + (uint64_t)p->keepalive_ms * 1000000ull;
	p->cls = h->responder ? h->path->cls : h->cls;
	snprintf(p->strategy, sizeof(p->strategy), "%s",
		 h->responder ? "inbound" : (h->strategy[0] ? h->strategy : "direct_connect"));
	p->sess = warp_session_new(h->hs, NULL, now);
	p->timer = warp_timer_new(node->loop, pipe_timer, p);
	p->subs = warp_subs_new();
	if (!p->sess || !p->timer || !p->subs)
		goto fail;
	memcpy(p->local_cid, warp_hs_local_cid(h->hs), WARP_CID_LEN);
	memcpy(p->peer_cid, warp_hs_peer_cid(h->hs), WARP_CID_LEN);
	memcpy(p->peer_key, warp_hs_peer_identity(h->hs), WARP_PUBKEY_LEN);
	sc.mode = h->path->kind == PATH_TCP ? WARP_STREAM_TCP : WARP_STREAM_UDP;
	sc.payload_max = path_payload_max(h->path);
	/* No packet at all (keepalive pongs included) for this long: the peer is gone. */
	sc.idle_timeout_ms = DEAD_AFTER_PINGS * p->keepalive_ms + 5000;
	sc.user = p;
	sc.on_message = on_stream_message;
	sc.on_eos = on_stream_eos;
	sc.on_writable = on_stream_writable;
	sc.on_closed = on_stream_closed;
	p->stream = warp_stream_new(&sc);
	if (!p->stream)
		goto fail;
	/* The handshake's CID entry becomes the pipe's. */
	e = cidtab_get(&node->cids, p->local_cid);
	if (!e)
		goto fail;
	e->kind = NODE_CID_PIPE;
	e->obj = p;
	p->path = h->path;
	p->path->hs = NULL;
	p->path->pipe = p;
	h->path = NULL;
	p->registered = true;
	list_add_tail(&p->link, &node->pipes);
	if (p->path->kind == PATH_RELAY)
		apply_hints(p);
	return p;
fail:
	pipe_free(p);
	return NULL;
}

/* Authenticated traffic from a new address on the node's own socket: the peer moved (NAT
 * rebinding, roaming) or found a direct path while we still relay.  Follow it, like
 * WireGuard's endpoint update: a UDP path just takes the new endpoint; a relayed pipe moves
 * onto a direct path (relay -> direct upgrade).  Packets through a relay or over TCP never
 * move a pipe. */
static void maybe_follow(struct warp_pipe *p, const struct sockaddr *src,
			 const struct sockaddr *dst, int ifindex, bool direct)
{
	char a[WARP_EP_STRLEN], b[WARP_EP_STRLEN];
	struct pipe_path *np;

	if (!direct || !p->path)
		return;
	if (p->path->kind == PATH_RELAY || p->path->kind == PATH_UDP_OWN) {
		np = pipe_path_udp(p->node, src, dst, ifindex);
		if (!np)
			return;
		np->cls = warp_ep_is_private(src) || warp_ep_is_linklocal(src) ? WARP_PATH_LOCAL
										 : WARP_PATH_DIRECT;
		if (pipe_migrate(p, np))
			pipe_path_free(np);
		return;
	}
	if (p->path->kind != PATH_UDP_SHARED)
		return;
	if (warp_ep_equal(src, (struct sockaddr *)&p->path->remote))
		return;
	pr_info("pipe path moved: %s -> %s",
		warp_ep_str((struct sockaddr *)&p->path->remote, a, sizeof(a)),
		warp_ep_str(src, b, sizeof(b)));
	memcpy(&p->path->remote, src, warp_ep_len(src));
	if (dst)
		memcpy(&p->path->local, dst, warp_ep_len(dst));
	else
		memset(&p->path->local, 0, sizeof(p->path->local));
	p->path->ifindex = ifindex;
	p->path_changes++;
	if (p->ka_installed)
		ka_sync(p); /* the kernel must answer the peer at its new endpoint */
}

/* ---- relay -> direct upgrade: while a pipe relays, ping the peer's direct candidates from
 * the node socket; the first authenticated pong (or data) from one moves the pipe there. */

#define UPGRADE_FAST_MS   1000
#define UPGRADE_FAST_FOR  60000
#define UPGRADE_SLOW_MS   10000

static void upgrade_tick(struct warp_timer *t, void *user)
{
	struct warp_pipe *p = user;
	uint8_t ping[WARP_PING_LEN];
	uint64_t now = warp_time_ns();

	if (!p->registered || !p->path || p->path->kind != PATH_RELAY || !p->ncand)
		return;
	for (int i = 0; i < p->ncand; i++)
		if (warp_session_ping(p->sess, now, ping) == WARP_PING_LEN)
			node_send(p->node, ping, sizeof(ping), (struct sockaddr *)&p->cand[i], NULL, 0);
	warp_timer_arm_ms(t, now - p->created_ns < UPGRADE_FAST_FOR * 1000000ull ? UPGRADE_FAST_MS
										   : UPGRADE_SLOW_MS);
}

int pipe_add_candidates(struct warp_pipe *p, const struct sockaddr_storage *eps, int n)
{
	for (int i = 0; i < n && p->ncand < PIPE_MAX_CAND; i++) {
		bool dup = false;

		for (int k = 0; k < p->ncand; k++)
			dup |= warp_ep_equal((struct sockaddr *)&p->cand[k], (struct sockaddr *)&eps[i]);
		if (!dup && node_udp_sock(p->node, eps[i].ss_family))
			p->cand[p->ncand++] = eps[i];
	}
	if (!p->ncand || !p->path || p->path->kind != PATH_RELAY)
		return 0;
	if (!p->upgrade_timer)
		p->upgrade_timer = warp_timer_new(p->node->loop, upgrade_tick, p);
	if (!p->upgrade_timer)
		return -ENOMEM;
	if (!warp_timer_pending(p->upgrade_timer))
		warp_timer_arm_ms(p->upgrade_timer, 0);
	return 0;
}

void pipe_hint_candidates(struct warp_node *node, const uint8_t key[WARP_PUBKEY_LEN],
			  const struct sockaddr_storage *eps, int n)
{
	struct pipe_ctx *ctx = ctx_of(node);
	struct pipe_hint *h = &ctx->hints[ctx->next_hint++ % PIPE_MAX_HINTS];

	memcpy(h->key, key, WARP_PUBKEY_LEN);
	h->n = n < PIPE_MAX_CAND ? n : PIPE_MAX_CAND;
	memcpy(h->eps, eps, (size_t)h->n * sizeof(*eps));
	h->expires = warp_time_ns() + 60000000000ull;
}

static void apply_hints(struct warp_pipe *p)
{
	struct pipe_ctx *ctx = p->ctx;
	uint64_t now = warp_time_ns();

	for (int i = 0; i < PIPE_MAX_HINTS; i++) {
		struct pipe_hint *h = &ctx->hints[i];

		if (h->n && h->expires > now && !memcmp(h->key, p->peer_key, WARP_PUBKEY_LEN))
			pipe_add_candidates(p, h->eps, h->n);
	}
}

static void rx_pipe(struct warp_pipe *p, uint8_t type, uint8_t *pkt, size_t len,
		    const struct sockaddr *src, const struct sockaddr *dst, int ifindex,
		    struct pipe_path *via, int fd)
{
	bool direct = !via && fd < 0; /* on the node's own socket */
	uint64_t now = warp_time_ns();
	struct warp_rx_info info;
	uint8_t *buf = p->ctx->buf;
	uint64_t rtt;
	int n;

	pipe_get(p);
	switch (type) {
	case WARP_PKT_DATA:
	case WARP_PKT_ACK:
	case WARP_PKT_CLOSE:
		n = warp_session_open(p->sess, pkt, len, buf, sizeof(p->ctx->buf), now, &info);
		if (n < 0) {
			pr_debug("packet rejected: %s", warp_strerror(n));
			break;
		}
		p->last_rx_ns = now;
		p->unanswered = 0;
		maybe_follow(p, src, dst, ifindex, direct);
		if (type == WARP_PKT_CLOSE) {
			int code = warp_close_code(buf, (size_t)n);

			warp_stream_close(p->stream, false);
			pipe_closed(p, code ? code : -ECONNRESET);
		} else if (n > 0) {
			int err = warp_stream_input(p->stream, buf, (size_t)n, now);

			if (err < 0)
				pr_debug("stream input: %s", warp_strerror(err));
		}
		pipe_flush(p, now);
		break;
	case WARP_PKT_PING:
		if (warp_session_answer_ping(p->sess, pkt, len) == 0) {
			/* Answer where the ping came from: a ping on another path is the peer
			 * testing it (upgrade), not a move. */
			if (direct && p->path && !(p->path->kind == PATH_UDP_SHARED &&
						   warp_ep_equal(src, (struct sockaddr *)&p->path->remote)))
				node_send(p->node, pkt, len, src, dst, ifindex);
			else
				pipe_send_packet(p, pkt, len);
		}
		break;
	case WARP_PKT_PONG:
		if (warp_session_pong(p->sess, pkt, len, now, &rtt) == 0) {
			p->last_rx_ns = p->last_pong_ns = now;
			p->unanswered = 0;
			if (!p->min_rtt_ns || rtt < p->min_rtt_ns)
				p->min_rtt_ns = rtt;
			warp_stream_touch(p->stream, now);
			/* A pong over a direct path proves it works both ways: leave the relay. */
			if (p->path && p->path->kind == PATH_RELAY)
				maybe_follow(p, src, dst, ifindex, direct);
		}
		break;
	case WARP_PKT_HS_INIT:
	case WARP_PKT_HS_RESP:
	case WARP_PKT_HS_FINISH:
	case WARP_PKT_HS_RETRY:
		n = warp_session_hs_recv(p->sess, pkt, len, now, buf, sizeof(p->ctx->buf));
		if (n > 0)
			pipe_send_packet(p, buf, (size_t)n);
		pipe_flush(p, now);
		break;
	default:
		break;
	}
	pipe_arm(p);
	pipe_put(p);
}

static void pipe_rx(struct pipe_ctx *ctx, struct pipe_path *via, uint8_t *pkt, size_t len,
		    const struct sockaddr *src, const struct sockaddr *dst, int ifindex, int fd)
{
	struct node_cid_entry *e;
	uint8_t cid[WARP_CID_LEN];
	uint8_t type;

	if (len < WARP_HDR_LEN || !warp_pkt_is_warp(pkt, len))
		return;
	type = pkt[0] & WARP_HDR_TYPE_MASK;
	if (type == WARP_PKT_PROBE || type == WARP_PKT_PROBE_REPLY) {
		if (ctx->probe_fn)
			ctx->probe_fn(ctx->node, pkt, len, src, dst, ifindex, fd, ctx->probe_user);
		return;
	}
	if (warp_pkt_cid(pkt, len, cid) < 0)
		return;
	e = cidtab_get(&ctx->node->cids, cid);
	if (type == WARP_PKT_HS_INIT && (!e || e->kind != NODE_CID_PIPE)) {
		rx_init(ctx, via, pkt, len, src, dst, ifindex, fd);
		return;
	}
	if (!e)
		return;
	if (e->kind == NODE_CID_HS) {
		struct pipe_hs *h = e->obj;

		/* TCP handshakes stay on their connection. */
		if (h->path->kind == PATH_TCP && via != h->path)
			return;
		hs_input(h, pkt, len);
	} else {
		struct warp_pipe *p = e->obj;

		if (p->path && p->path->kind == PATH_TCP && via != p->path)
			return;
		rx_pipe(p, type, pkt, len, src, dst, ifindex, via, fd);
	}
}

/* ------------------------------------------------------------------ socket I/O */

static bool node_rx(struct warp_node *node, struct node_sock *s, struct warp_dgram *d, void *user)
{
	pipe_rx(user, NULL, d->buf, d->len, (struct sockaddr *)&d->src,
		d->dst.ss_family ? (struct sockaddr *)&d->dst : NULL, d->ifindex, -1);
	return true;
}

void pipe_rx_datagram(struct warp_node *node, int fd, uint8_t *pkt, size_t len,
		      const struct sockaddr *src, const struct sockaddr *dst, int ifindex)
{
	pipe_rx(ctx_of(node), NULL, pkt, len, src, dst, ifindex, fd);
}

static void own_udp_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct pipe_path *p = user;
	struct pipe_ctx *ctx = ctx_of(p->node);

	p->busy++;
	for (int i = 0; i < 64 && !p->zombie; i++) {
		struct sockaddr_storage src;
		socklen_t sl = sizeof(src);
		ssize_t n = recvfrom(fd, ctx->buf, sizeof(ctx->buf), MSG_DONTWAIT,
				     (struct sockaddr *)&src, &sl);

		if (n <= 0)
			break;
		warp_ep_unmap(&src);
		pipe_rx(ctx, NULL, ctx->buf, (size_t)n, (struct sockaddr *)&src, NULL, 0, fd);
	}
	if (--p->busy == 0 && p->zombie) {
		p->zombie = false;
		pipe_path_free(p);
	}
}

static void tcp_dead(struct pipe_path *p, int err)
{
	if (p->hs) {
		struct pipe_hs *h = p->hs;

		if (h->responder)
			hs_free(h);
		else
			hs_fail(h, err);
	} else if (p->pipe) {
		struct warp_pipe *pp = p->pipe;

		pipe_get(pp);
		warp_stream_close(pp->stream, false);
		pipe_closed(pp, pp->peer_eos ? 0 : err);
		pipe_unregister(pp);
		pipe_put(pp);
	} else {
		pipe_path_free(p);
	}
}

static void tcp_io_locked(struct warp_loop *loop, int fd, unsigned int events,
			  struct pipe_path *p);

static void tcp_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct pipe_path *p = user;

	p->busy++;
	tcp_io_locked(loop, fd, events, p);
	if (--p->busy == 0 && p->zombie) {
		p->zombie = false;
		pipe_path_free(p);
	}
}

static void tcp_io_locked(struct warp_loop *loop, int fd, unsigned int events,
			  struct pipe_path *p)
{
	struct pipe_ctx *ctx = ctx_of(p->node);
	uint8_t in[16384];

	if (p->connecting && (events & (WARP_EV_WRITE | WARP_EV_ERROR))) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			tcp_dead(p, -soerr);
			return;
		}
		p->connecting = false;
		warp_sock_local(fd, &p->local);
		warp_loop_mod_fd(loop, fd, WARP_EV_READ | (p->outlen ? WARP_EV_WRITE : 0));
		if (p->hs && !p->hs->responder)
			hs_timer(p->hs->timer, p->hs); /* sends the INIT */
		return;
	}
	if (events & WARP_EV_WRITE) {
		while (p->outlen) {
			ssize_t n = write(fd, p->outq, p->outlen);

			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				tcp_dead(p, -errno);
				return;
			}
			memmove(p->outq, p->outq + n, p->outlen - (size_t)n);
			p->outlen -= (size_t)n;
		}
		if (!p->outlen) {
			warp_loop_mod_fd(loop, fd, WARP_EV_READ);
			if (p->pipe)
				pipe_kick(p->pipe);
		}
	}
	if (!(events & WARP_EV_READ))
		return;
	for (int round = 0; round < 16; round++) {
		ssize_t n = read(fd, in, sizeof(in));
		const uint8_t *cur = in;
		size_t left;

		if (n == 0) {
			tcp_dead(p, -ECONNRESET);
			return;
		}
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				tcp_dead(p, -errno);
			return;
		}
		left = (size_t)n;
		while (left) {
			const uint8_t *pkt;
			size_t used = 0, plen;
			int rc = warp_deframer_feed(p->deframer, cur, left, &used, &pkt, &plen);

			if (rc < 0) {
				tcp_dead(p, rc);
				return;
			}
			cur += used;
			left -= used;
			if (rc == 1) {
				/* Copy: the packet may point into the deframer, and handlers
				 * decrypt in place. */
				memcpy(ctx->out, pkt, plen);
				pipe_rx(ctx, p, ctx->out, plen, (struct sockaddr *)&p->remote,
					(struct sockaddr *)&p->local, 0, -1);
				/* The path may be gone (pipe closed, handshake failed). */
				if (p->zombie)
					return;
			}
		}
	}
}

/* Inbound TCP connection: it waits for an INIT under an anonymous path. */
void pipe_layer_tcp_accept(struct warp_node *node, int fd, const struct sockaddr *peer)
{
	struct pipe_path *p;

	if (!node->accept_cb) {
		close(fd);
		return;
	}
	p = pipe_path_tcp(node, fd, peer, false);
	if (!p) {
		close(fd);
		return;
	}
	p->cls = warp_ep_is_loopback(peer) || warp_ep_is_private(peer) ? WARP_PATH_LOCAL
								     : WARP_PATH_DIRECT;
	/* Until its INIT arrives the connection has no owner; the node frees it on close. */
	list_add_tail(&p->orphan, &ctx_of(node)->orphans);
}

/* ------------------------------------------------------------------ layer */

int pipe_layer_init(struct warp_node *node)
{
	struct pipe_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx)
		return -ENOMEM;
	ctx->node = node;
	cidtab_init(&ctx->inits);
	list_init(&ctx->orphans);
	ctx->jar = warp_cookie_jar_new();
	if (!ctx->jar) {
		free(ctx);
		return -ENOMEM;
	}
	ctx->hook.fn = node_rx;
	ctx->hook.user = ctx;
	node->pipe_ctx = ctx;
	return node_rx_hook_add(node, NODE_RX_WARP, &ctx->hook);
}

void pipe_layer_fini(struct warp_node *node)
{
	struct pipe_ctx *ctx = ctx_of(node);
	struct list_head *pos, *tmp;

	if (!ctx)
		return;
	list_for_each_safe(pos, tmp, &node->pipes) {
		struct warp_pipe *p = list_entry(pos, struct warp_pipe, link);

		pipe_get(p);
		pipe_closed(p, -ECANCELED);
		pipe_unregister(p);
		/* Owners keep their handles; the node is gone, so detach it. */
		p->node = NULL;
		pipe_put(p);
	}
	list_for_each_safe(pos, tmp, &node->handshakes)
		hs_free(list_entry(pos, struct pipe_hs, link));
	list_for_each_safe(pos, tmp, &ctx->orphans)
		pipe_path_free(list_entry(pos, struct pipe_path, orphan));
	node_rx_hook_del(&ctx->hook);
	cidtab_free(&ctx->inits);
	warp_cookie_jar_free(ctx->jar);
	free(ctx->batch_buf);
	free(ctx);
	node->pipe_ctx = NULL;
}

bool pipe_layer_rx(struct warp_node *node, struct node_sock *s, struct warp_dgram *d, void *user)
{
	return node_rx(node, s, d, ctx_of(node));
}

void pipe_set_inbound_hook(struct warp_node *node, pipe_inbound_fn fn, void *user)
{
	ctx_of(node)->inbound_fn = fn;
	ctx_of(node)->inbound_user = user;
}

void pipe_expect_inbound(struct warp_node *node, int delta)
{
	ctx_of(node)->inbound_expected += delta;
}

void pipe_set_fd_acceptor(struct warp_node *node, pipe_fd_acceptor_fn fn)
{
	ctx_of(node)->fd_acceptor = fn;
}

void pipe_deliver_inbound(struct warp_node *node, struct warp_pipe *p)
{
	struct pipe_ctx *ctx = ctx_of(node);

	pipe_get(p);
	if (ctx->inbound_fn && ctx->inbound_fn(node, p, ctx->inbound_user))
		return;
	if (node->accept_cb) {
		node->accept_cb(node, p, node->accept_user);
		return;
	}
	/* Nobody wants it (not listening any more): end it so the peer knows. */
	warp_pipe_close(p);
	pipe_put(p);
}

void pipe_set_probe_handler(struct warp_node *node, pipe_probe_fn fn, void *user)
{
	ctx_of(node)->probe_fn = fn;
	ctx_of(node)->probe_user = user;
}

/* ------------------------------------------------------------------ public API */


static bool pipe_usable(const struct warp_pipe *p)
{
	return p->registered && p->open && p->node;
}

int warp_pipe_send(struct warp_pipe *p, const void *msg, size_t len)
{
	int err;

	if (!pipe_usable(p))
		return -WARP_ECLOSED;
	err = warp_stream_send(p->stream, msg, len, WARP_MSG_RELIABLE, warp_time_ns());
	if (!err) {
		p->last_msg_ns = warp_time_ns();
		pipe_after_send(p);
	}
	return err;
}

int warp_pipe_send_datagram(struct warp_pipe *p, const void *msg, size_t len)
{
	int err;

	if (!pipe_usable(p))
		return -WARP_ECLOSED;
	err = warp_stream_send(p->stream, msg, len, WARP_MSG_DATAGRAM, warp_time_ns());
	if (!err) {
		p->last_msg_ns = warp_time_ns();
		pipe_after_send(p);
	}
	return err;
}

struct send_wait {
	struct warp_pipe *p;
	size_t len;
};

static bool room_for(void *user)
{
	struct send_wait *w = user;

	return !pipe_usable(w->p) || warp_stream_writable(w->p->stream) >= w->len;
}

int warp_pipe_send_wait(struct warp_pipe *p, const void *msg, size_t len, int timeout_ms)
{
	struct send_wait w = { p, len };
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
					   : warp_time_ns() + (uint64_t)timeout_ms * 1000000ull;

	for (;;) {
		int err = warp_pipe_send(p, msg, len);
		uint64_t now;

		if (err != -EAGAIN)
			return err;
		now = warp_time_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		pipe_get(p);
		err = warp_loop_run_until(p->node->loop, room_for, &w,
					  deadline == UINT64_MAX ? -1
								 : (int)((deadline - now) / 1000000ull + 1));
		pipe_put(p);
		if (err && err != -ETIMEDOUT)
			return err;
	}
}

static int sub_id(const struct warp_pipe *p, int sub)
{
	return sub == WARP_SUB_ALL ? p->all_sub : sub;
}

static void sub_cb_adapter(void *user, int id, const struct warp_sub_msg *msg)
{
	struct sub_cb *c = user;

	if (msg)
		c->cb(c->pipe, msg->data, msg->len, c->user);
}

int warp_pipe_subscribe(struct warp_pipe *p, const struct warp_sub *sub)
{
	struct warp_sub_spec spec = { 0 };
	struct sub_cb *c = NULL;
	int id;

	if (!sub) {
		if (p->all_sub)
			return WARP_SUB_ALL;
		spec.queue_max = 1024;
		id = warp_sub_add(p->subs, &spec);
		if (id < 0)
			return id;
		p->all_sub = id;
		return WARP_SUB_ALL;
	}
	if (sub->pattern) {
		spec.match = WARP_SUB_MATCH_REGEX;
		spec.regex = sub->pattern;
	} else if (sub->prefix && sub->prefix_len) {
		spec.match = WARP_SUB_MATCH_PREFIX;
		spec.prefix = sub->prefix;
		spec.prefix_len = sub->prefix_len;
	}
	spec.source = sub->source;
	spec.queue_max = sub->queue_max ? sub->queue_max : 1024;
	if (sub->cb) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return -ENOMEM;
		c->pipe = p;
		c->cb = sub->cb;
		c->user = sub->user;
		spec.cb = sub_cb_adapter;
		spec.user = c;
	}
	id = warp_sub_add(p->subs, &spec);
	if (id < 0) {
		free(c);
		return id;
	}
	if (c) {
		c->id = id;
		list_add_tail(&c->link, &p->sub_cbs);
	}
	return id;
}

int warp_pipe_unsubscribe(struct warp_pipe *p, int sub)
{
	int id = sub_id(p, sub);
	struct list_head *pos, *tmp;
	int err;

	if (!id)
		return -ENOENT;
	err = warp_sub_remove(p->subs, id);
	if (err)
		return err;
	if (sub == WARP_SUB_ALL)
		p->all_sub = 0;
	list_for_each_safe(pos, tmp, &p->sub_cbs) {
		struct sub_cb *c = list_entry(pos, struct sub_cb, link);

		if (c->id == id) {
			list_del(pos);
			free(c);
		}
	}
	return 0;
}

int warp_pipe_on_message(struct warp_pipe *p, warp_msg_cb cb, void *user)
{
	struct warp_sub s = { .cb = cb, .user = user };

	return warp_pipe_subscribe(p, &s);
}

void warp_pipe_on_closed(struct warp_pipe *p, warp_pipe_closed_cb cb, void *user)
{
	p->closed_cb = cb;
	p->closed_user = user;
}

void warp_pipe_on_writable(struct warp_pipe *p, warp_pipe_event_cb cb, void *user)
{
	p->writable_cb = cb;
	p->writable_user = user;
}

void warp_pipe_on_eos(struct warp_pipe *p, warp_pipe_event_cb cb, void *user)
{
	p->eos_cb = cb;
	p->eos_user = user;
}

void warp_pipe_set_half_close(struct warp_pipe *p, bool on)
{
	p->half_close = on;
}

struct recv_wait {
	struct warp_pipe *p;
	int id;
};

static bool recv_ready(void *user)
{
	struct recv_wait *w = user;
	const struct warp_sub_msg *m;

	return warp_sub_peek(w->p->subs, w->id, &m) != -EAGAIN;
}

ssize_t warp_pipe_recv(struct warp_pipe *p, int sub, void *buf, size_t len, int timeout_ms)
{
	struct recv_wait w = { p, sub_id(p, sub) };
	const struct warp_sub_msg *m;
	struct warp_sub_msg *msg;
	size_t n;
	int err;

	if (!w.id)
		return -ENOENT;
	err = warp_sub_peek(p->subs, w.id, &m);
	if (err == -EAGAIN && timeout_ms != 0 && p->node) {
		pipe_get(p);
		err = warp_loop_run_until(p->node->loop, recv_ready, &w, timeout_ms);
		pipe_put(p);
		if (err)
			return err;
		err = warp_sub_peek(p->subs, w.id, &m);
	}
	if (err == -EAGAIN)
		return -ETIMEDOUT;
	if (err == -WARP_ECLOSED && warp_subs_close_err(p->subs))
		return warp_subs_close_err(p->subs); /* why it ended: idle, refused, reset */
	if (err)
		return err;
	if (m->len > len)
		return -EMSGSIZE; /* stays queued: a bigger buffer gets it */
	err = warp_sub_pop(p->subs, w.id, &msg);
	if (err)
		return err;
	n = msg->len;
	memcpy(buf, msg->data, n);
	warp_sub_msg_free(msg);
	return (ssize_t)n;
}

uint64_t warp_pipe_dropped(struct warp_pipe *p, int sub)
{
	struct warp_sub_stats st;

	return warp_sub_stats(p->subs, sub_id(p, sub), &st) ? 0 : st.dropped;
}

int warp_pipe_close(struct warp_pipe *p)
{
	int err;

	if (!p->registered)
		return 0;
	err = warp_stream_close(p->stream, true);
	pipe_kick(p);
	return err == -WARP_ECLOSED ? 0 : err;
}

/* Done once both ends have closed and ours was acknowledged; the stream may linger after that
 * to re-acknowledge the peer's last packets, but nobody needs to wait for it. */
static bool close_done(void *user)
{
	return !pipe_usable(user);
}

int warp_pipe_close_wait(struct warp_pipe *p, int timeout_ms)
{
	int err = warp_pipe_close(p);

	if (err || !p->registered)
		return err;
	pipe_get(p);
	err = warp_loop_run_until(p->node->loop, close_done, p, timeout_ms);
	pipe_put(p);
	return err;
}

bool warp_pipe_is_open(const struct warp_pipe *p)
{
	return pipe_usable(p);
}

void warp_pipe_ref(struct warp_pipe *p)
{
	pipe_get(p);
}

void warp_pipe_release(struct warp_pipe *p)
{
	if (p)
		pipe_put(p);
}

static const char *const class_names[] = { "local", "direct", "relay" };

const char *warp_path_class_name(enum warp_path_class c)
{
	return (unsigned int)c < 3 ? class_names[c] : "?";
}

int warp_pipe_info(const struct warp_pipe *p, struct warp_pipe_info *out)
{
	struct warp_stream_stats st;
	uint64_t now = warp_time_ns();

	memset(out, 0, sizeof(*out));
	memcpy(out->peer_key, p->peer_key, WARP_PUBKEY_LEN);
	snprintf(out->strategy, sizeof(out->strategy), "%s", p->strategy);
	out->path = p->cls;
	if (p->path) {
		snprintf(out->transport, sizeof(out->transport), "%s",
			 p->path->kind == PATH_TCP ? "tcp" : p->path->kind == PATH_RELAY ? "relay"
											  : "udp");
		out->local = p->path->local;
		out->remote = p->path->remote;
	}
	warp_stream_stats(p->stream, &st);
	out->srtt_us = st.srtt_us;
	out->min_rtt_us = st.min_rtt_us ? st.min_rtt_us : p->min_rtt_ns / 1000;
	out->bytes_sent = st.bytes_sent;
	out->bytes_received = st.bytes_received;
	out->msgs_sent = st.msgs_sent + st.dgrams_sent;
	out->msgs_received = st.msgs_received + st.dgrams_received;
	out->retransmits = st.frags_retransmitted;
	out->dgrams_dropped = st.dgrams_dropped_rx + st.dgrams_dropped_tx;
	out->path_changes = p->path_changes;
	out->age_ms = (now - p->created_ns) / 1000000ull;
	out->idle_ms = (now - p->last_msg_ns) / 1000000ull;
	out->close_err = p->close_err;
	out->open = pipe_usable(p);
	return 0;
}

void warp_pipe_set_user(struct warp_pipe *p, void *user)
{
	p->user = user;
}

void *warp_pipe_get_user(const struct warp_pipe *p)
{
	return p->user;
}

/* ------------------------------------------------------------------ traversal hooks */

void pipe_set_strategy(struct warp_pipe *p, const char *strategy, enum warp_path_class cls)
{
	snprintf(p->strategy, sizeof(p->strategy), "%s", strategy);
	p->cls = cls;
}

const uint8_t *pipe_peer_key(const struct warp_pipe *p)
{
	return p->peer_key;
}

const uint8_t *pipe_local_cid(const struct warp_pipe *p)
{
	return p->local_cid;
}

struct pipe_path *pipe_current_path(const struct warp_pipe *p)
{
	return p->path;
}

int pipe_migrate(struct warp_pipe *p, struct pipe_path *path)
{
	char a[WARP_EP_STRLEN], b[WARP_EP_STRLEN];

	if (!p->registered)
		return -WARP_ECLOSED;
	/* A TCP stream engine cannot move onto datagrams (and back): framing differs. */
	if ((path->kind == PATH_TCP) != (p->path->kind == PATH_TCP))
		return -EINVAL;
	pr_info("pipe moves %s -> %s (%s)",
		warp_ep_str((struct sockaddr *)&p->path->remote, a, sizeof(a)),
		warp_ep_str((struct sockaddr *)&path->remote, b, sizeof(b)),
		warp_path_class_name(path->cls));
	path->hs = NULL;
	path->pipe = p;
	pipe_path_free(p->path);
	p->path = path;
	p->cls = path->cls;
	p->path_changes++;
	if (path->kind != PATH_RELAY)
		warp_timer_cancel(p->upgrade_timer);
	ka_sync(p);
	pipe_kick(p);
	return 0;
}
