// SPDX-License-Identifier: MIT
/*
 * Shared machinery of udp_punch and random_probe: NAT classes and port prediction, the
 * birthday-paradox numbers, probe sessions behind one node-wide PROBE dispatcher, NAT
 * allocation samples, temporary acceptance of inbound handshakes, CANCEL messages.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <warpgate/error.h>
#include <warpgate/nat.h>

#define LOG_COMPONENT "punch"
#include "core/bytes.h"
#include "core/log.h"
#include "core/util.h"
#include "nat/stun_io.h"
#include "net/endpoint.h"
#include "net/sock.h"
#include "node/netstate.h"
#include "pipe/frame.h"
#include "pipe/pipe_internal.h"
#include "signal/signal.h"
#include "traverse/punch.h"
#include "traverse/traverse.h"

/* ------------------------------------------------------------------ NAT classes */

static bool is_public(const uint8_t *addr, uint8_t family)
{
	struct sockaddr_storage ss;
	struct sockaddr *sa = (struct sockaddr *)&ss;

	warp_ep_from_raw(&ss, family == 4 ? AF_INET : AF_INET6, addr, 1, 0);
	return !warp_ep_is_private(sa) && !warp_ep_is_loopback(sa) && !warp_ep_is_linklocal(sa);
}

static enum punch_class sym_class(uint8_t delta)
{
	switch (delta) {
	case WARP_ADDR_DELTA_EQUAL:
	case WARP_ADDR_DELTA_PRESERVING:
	case WARP_ADDR_DELTA_INDEPENDENT:
	case WARP_ADDR_DELTA_DEPENDENT:
		return PUNCH_SYM_PRED;
	default:
		return PUNCH_SYM_RANDOM;
	}
}

void punch_nat_from_route(struct punch_nat *n, const struct warp_addr_route *r)
{
	memset(n, 0, sizeof(*n));
	n->family = r->family;
	n->nat = r->nat;
	n->filtering = r->filtering;
	n->delta_type = r->delta_type;
	n->delta_value = r->delta_value;
	n->local_port = r->udp_port;
	n->has_ext = r->has_ext;
	if (r->has_ext) {
		memcpy(n->ext_addr, r->ext_addr, 16);
		n->ext_port = r->ext_udp_port;
	} else if (is_public(r->nic_addr, r->family)) {
		/* No NAT seen (or not measured yet) but a public address. */
		n->has_ext = true;
		memcpy(n->ext_addr, r->nic_addr, 16);
		n->ext_port = r->udp_port;
	}
	if (r->flags & WARP_ROUTE_F_UDP_BLOCKED || r->nat == WARP_ADDR_NAT_BLOCKED) {
		n->cls = PUNCH_BLOCKED;
		return;
	}
	if (r->nat == WARP_ADDR_NAT_OPEN || r->nat == WARP_ADDR_NAT_UDP_FIREWALL) {
		n->cls = PUNCH_OPEN;
		return;
	}
	switch (r->mapping) {
	case WARP_ADDR_BEH_EI:
		n->cls = PUNCH_EIM;
		return;
	case WARP_ADDR_BEH_AD:
	case WARP_ADDR_BEH_APD:
		n->cls = sym_class(r->delta_type);
		return;
	}
	switch (r->nat) {
	case WARP_ADDR_NAT_FULL_CONE:
	case WARP_ADDR_NAT_RESTRICTED:
	case WARP_ADDR_NAT_PORT_RESTRICTED:
		n->cls = PUNCH_EIM;
		break;
	case WARP_ADDR_NAT_SYMMETRIC:
		n->cls = sym_class(r->delta_type);
		break;
	default:
		/* Not classified: a known external port means one mapping for everyone. */
		n->cls = n->ext_port ? PUNCH_EIM : PUNCH_UNKNOWN;
	}
}

const char *punch_class_name(enum punch_class c)
{
	static const char *const names[] = { "unknown",
					     "open",
					     "endpoint-independent",
					     "symmetric (predictable)",
					     "symmetric (random)",
					     "UDP blocked" };

	return (unsigned int)c < WARP_ARRAY_SIZE(names) ? names[c] : "?";
}

bool punch_needs_sample(const struct punch_nat *n)
{
	return n->cls == PUNCH_SYM_PRED && (n->delta_type == WARP_ADDR_DELTA_INDEPENDENT ||
					    n->delta_type == WARP_ADDR_DELTA_DEPENDENT);
}

static int add_port(uint16_t *out, int n, int max, long port)
{
	if (n >= max || port < 1 || port > 65535)
		return n;
	for (int i = 0; i < n; i++)
		if (out[i] == port)
			return n;
	out[n] = (uint16_t)port;
	return n + 1;
}

int punch_predict(const struct punch_nat *n, uint16_t last_port, uint16_t *out, int max)
{
	int cnt = 0;

	switch (n->cls) {
	case PUNCH_OPEN:
	case PUNCH_EIM:
	case PUNCH_UNKNOWN:
		return add_port(out, 0, max, n->ext_port ? n->ext_port : n->local_port);
	case PUNCH_SYM_PRED:
		break;
	default:
		return 0;
	}
	switch (n->delta_type) {
	case WARP_ADDR_DELTA_EQUAL:
		return add_port(out, 0, max, n->local_port);
	case WARP_ADDR_DELTA_PRESERVING:
		return add_port(out, 0, max, (long)n->local_port + n->delta_value);
	case WARP_ADDR_DELTA_INDEPENDENT:
	case WARP_ADDR_DELTA_DEPENDENT:
		if (!last_port || !n->delta_value)
			return 0;
		/* The mapping our next new destination creates, then the ones after it in case
		 * other hosts behind the NAT take some meanwhile. */
		for (int k = 1; cnt < max && k <= max; k++)
			cnt = add_port(out, cnt, max, (long)last_port + (long)k * n->delta_value);
		return cnt;
	}
	return 0;
}

int punch_drift_index(const struct punch_nat *n, uint16_t first, uint16_t second)
{
	long d = n->delta_value, gap = (long)second - (long)first;

	if (!punch_needs_sample(n) || !d || !first || !second || gap % d || gap / d <= 0)
		return -1;
	/* Index i of the list is first + (i + 1) * d; the next mapping is second + d. */
	return (int)(gap / d);
}

static bool sym(const struct punch_nat *n)
{
	return n->cls == PUNCH_SYM_PRED || n->cls == PUNCH_SYM_RANDOM;
}

/* Inbound only from the exact endpoint contacted: a random port cannot be guessed. */
static bool filters_port(const struct punch_nat *n)
{
	if (n->filtering)
		return n->filtering == WARP_ADDR_BEH_APD;
	return n->nat == WARP_ADDR_NAT_PORT_RESTRICTED || n->nat == WARP_ADDR_NAT_SYMMETRIC;
}

const char *punch_udp_infeasible(const struct punch_nat *us, const struct punch_nat *peer)
{
	if (peer->cls == PUNCH_BLOCKED)
		return "peer's NAT blocks UDP";
	if (us->cls == PUNCH_BLOCKED)
		return "our network blocks UDP";
	if (!peer->has_ext)
		return "the peer's address has no external address";
	if (us->cls == PUNCH_SYM_RANDOM && peer->cls == PUNCH_SYM_RANDOM)
		return "both sides symmetric with random ports: "
		       "no prediction possible (turn is needed)";
	if ((us->cls == PUNCH_SYM_RANDOM && peer->cls == PUNCH_SYM_PRED) ||
	    (us->cls == PUNCH_SYM_PRED && peer->cls == PUNCH_SYM_RANDOM))
		return "one side symmetric with random ports, the other symmetric: no prediction "
		       "possible (turn is needed)";
	/* A random port is found only if the other side lets any port of that address in. */
	if (peer->cls == PUNCH_SYM_RANDOM && filters_port(us))
		return "peer symmetric with random ports and our NAT filters by port: "
		       "random_probe's case";
	if (us->cls == PUNCH_SYM_RANDOM && filters_port(peer))
		return "we are symmetric with random ports and the peer filters by port: "
		       "random_probe's case";
	return NULL;
}

const char *punch_random_infeasible(const struct punch_nat *us, const struct punch_nat *peer,
				    bool *we_hard)
{
	*we_hard = false;
	if (peer->cls == PUNCH_BLOCKED)
		return "peer's NAT blocks UDP";
	if (us->cls == PUNCH_BLOCKED)
		return "our network blocks UDP";
	if (!peer->has_ext)
		return "the peer's address has no external address";
	if (sym(us) && sym(peer))
		return "both sides symmetric: random_probe needs one endpoint-independent side "
		       "(turn is needed)";
	if (!sym(us) && !sym(peer))
		return "neither side is symmetric: no random ports to find";
	*we_hard = sym(us);
	if (!*we_hard && !peer->has_ext)
		return "the peer's external address is unknown";
	if (*we_hard && peer->cls != PUNCH_OPEN && !peer->ext_port)
		return "the peer's external port is unknown";
	return NULL;
}

/* ------------------------------------------------------------------ birthday paradox */

static double lchoose(double n, double k)
{
	return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1);
}

/* ln(C(range - open, probes) / C(range, probes)): the binomials themselves are huge. */
static double log_miss(uint32_t range, uint32_t open, uint64_t probes)
{
	return lchoose(range - open, (double)probes) - lchoose(range, (double)probes);
}

double punch_birthday_p(uint32_t range, uint32_t open, uint64_t probes)
{
	if (!range || !open || !probes)
		return 0.0;
	if (open >= range || probes > (uint64_t)(range - open))
		return 1.0;
	return -expm1(log_miss(range, open, probes));
}

double punch_birthday_miss(uint32_t range, uint32_t open, uint64_t probes)
{
	if (!range || !open || !probes)
		return 1.0;
	if (open >= range || probes > (uint64_t)(range - open))
		return 0.0;
	return exp(log_miss(range, open, probes));
}

double punch_expected_probes(uint32_t range, uint32_t open)
{
	return ((double)range + 1.0) / ((double)open + 1.0);
}

static uint32_t gcd32(uint32_t a, uint32_t b)
{
	while (b) {
		uint32_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

void punch_perm_init(struct punch_perm *p, uint16_t lo, uint16_t hi, uint32_t ra, uint32_t rb)
{
	memset(p, 0, sizeof(*p));
	if (hi < lo)
		return;
	p->lo = lo;
	p->n = (uint32_t)hi - lo + 1;
	/* A multiplier coprime with n makes i -> a * i + b a bijection of Z/n. */
	p->a = ra % p->n;
	if (p->n == 1)
		p->a = 1;
	while (gcd32(p->a, p->n) != 1)
		p->a = (p->a + 1) % p->n;
	p->b = rb % p->n;
}

uint16_t punch_perm_next(struct punch_perm *p)
{
	uint64_t v;

	if (p->i >= p->n)
		return 0;
	v = ((uint64_t)p->a * p->i + p->b) % p->n;
	p->i++;
	return (uint16_t)(p->lo + v);
}

uint32_t punch_pace_due(uint32_t rate, uint64_t elapsed_ns, uint64_t sent, uint32_t burst)
{
	uint64_t due = (uint64_t)rate * elapsed_ns / 1000000000ull + 1; /* first one at once */

	if (due <= sent)
		return 0;
	due -= sent;
	return due > burst ? burst : (uint32_t)due;
}

/* ------------------------------------------------------------------ candidates */

/* Endpoints are kept unmapped: a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d. */
static void plain(struct sockaddr_storage *out, const struct sockaddr *ep)
{
	memset(out, 0, sizeof(*out));
	memcpy(out, ep, warp_ep_len(ep));
	warp_ep_unmap(out);
}

int punch_cands_find(const struct punch_cands *c, const struct sockaddr *ep)
{
	struct sockaddr_storage p;

	plain(&p, ep);
	for (int i = 0; i < c->n; i++)
		if (warp_ep_equal((const struct sockaddr *)&c->ep[i], (struct sockaddr *)&p))
			return i;
	return -1;
}

int punch_cands_add(struct punch_cands *c, const struct sockaddr *ep, uint8_t kind)
{
	if (punch_cands_find(c, ep) >= 0)
		return -EEXIST;
	if (c->n >= PUNCH_MAX_CANDS)
		return -ENOSPC;
	plain(&c->ep[c->n], ep);
	c->kind[c->n] = kind;
	return c->n++;
}

const char *punch_kind_name(uint8_t kind)
{
	switch (kind) {
	case WARP_SIG_EP_HOST:
		return "host";
	case WARP_SIG_EP_REFLEXIVE:
		return "reflexive";
	case WARP_SIG_EP_PREDICTED:
		return "predicted";
	case WARP_SIG_EP_MAPPED:
		return "mapped";
	case 0:
		return "peer-reflexive";
	}
	return "?";
}

/* ------------------------------------------------------------------ per-node state */

/* Per node: the probe sessions behind its PROBE handler, and holds on inbound acceptance.
 * Nodes may live on different threads, so only the registry itself is locked; everything
 * inside a punch_node belongs to its node's loop. */
struct punch_node {
	struct list_head link;
	struct warp_node *node;
	struct list_head sessions;
	int users;
	int holds;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list_head reg = LIST_HEAD_INIT(reg);

static bool dispatch(struct warp_node *node, const uint8_t *pkt, size_t len,
		     const struct sockaddr *src, const struct sockaddr *dst, int ifindex, int fd,
		     void *user);

static struct punch_node *pn_get(struct warp_node *node)
{
	struct punch_node *pn = NULL;
	struct list_head *pos;

	pthread_mutex_lock(&reg_lock);
	list_for_each(pos, &reg) {
		struct punch_node *p = list_entry(pos, struct punch_node, link);

		if (p->node == node) {
			pn = p;
			break;
		}
	}
	if (!pn) {
		pn = calloc(1, sizeof(*pn));
		if (pn) {
			pn->node = node;
			list_init(&pn->sessions);
			list_add_tail(&pn->link, &reg);
			pipe_set_probe_handler(node, dispatch, pn);
		}
	}
	if (pn)
		pn->users++;
	pthread_mutex_unlock(&reg_lock);
	return pn;
}

static void pn_put(struct punch_node *pn)
{
	pthread_mutex_lock(&reg_lock);
	if (--pn->users == 0) {
		list_del(&pn->link);
		if (pn->node->pipe_ctx)
			pipe_set_probe_handler(pn->node, NULL, NULL);
		free(pn);
	}
	pthread_mutex_unlock(&reg_lock);
}

/* ------------------------------------------------------------------ probe sessions */

static int sess_send(struct punch_sess *s, int fd, const uint8_t *pkt, const struct sockaddr *dst,
		     const struct sockaddr *src, int ifindex)
{
	if (fd >= 0)
		return warp_sock_sendto(fd, pkt, WARP_PROBE_LEN, dst, NULL, 0);
	return node_send(s->pn->node, pkt, WARP_PROBE_LEN, dst, src, ifindex);
}

/* Verifies a probe or reply of this session, answers probes, reports both. */
static bool sess_handle(struct punch_sess *s, const uint8_t *pkt, size_t len,
			const struct sockaddr *src, const struct sockaddr *dst, int ifindex, int fd)
{
	uint8_t type = pkt[0] & WARP_HDR_TYPE_MASK;
	uint64_t pn = warp_get_u64(pkt + WARP_PN_OFF);
	uint8_t out[WARP_PROBE_LEN];

	if (type == WARP_PKT_PROBE) {
		/* The reply echoes the probe's number: the prober learns which one landed. */
		if (warp_probe_reply_build(out, &s->keys, pkt, len, s->cid, pn))
			return false;
		sess_send(s, fd, out, src, dst, ifindex);
		s->probes_rx++;
		s->rx(s, false, src, fd, pn, s->user);
		return true;
	}
	if (type == WARP_PKT_PROBE_REPLY) {
		if (warp_probe_reply_verify(pkt, len, &s->keys, pkt + WARP_HDR_LEN))
			return false;
		s->replies_rx++;
		s->rx(s, true, src, fd, pn, s->user);
		return true;
	}
	return false;
}

static bool dispatch(struct warp_node *node, const uint8_t *pkt, size_t len,
		     const struct sockaddr *src, const struct sockaddr *dst, int ifindex, int fd,
		     void *user)
{
	struct punch_node *pn = user;
	struct list_head *pos;

	if (len != WARP_PROBE_LEN)
		return false;
	list_for_each(pos, &pn->sessions) {
		struct punch_sess *s = list_entry(pos, struct punch_sess, link);

		/* rx may end the session (and pn with it): nothing is touched afterwards. */
		if (!memcmp(s->cid, pkt + WARP_CID_OFF, WARP_CID_LEN))
			return sess_handle(s, pkt, len, src, dst, ifindex, fd);
	}
	return false;
}

int punch_sess_start(struct punch_sess *s, struct warp_node *node, const uint8_t attempt[16],
		     const uint8_t secret[WARP_PROBE_SECRET_LEN], enum warp_probe_role role,
		     punch_rx_fn rx, void *user)
{
	memset(s, 0, sizeof(*s));
	list_init(&s->link);
	s->pn = pn_get(node);
	if (!s->pn)
		return -ENOMEM;
	/* Both sides derive the same CID from the attempt id: it names the session on the
	 * wire without revealing anything the signalling did not already carry. */
	memcpy(s->cid, attempt, WARP_CID_LEN);
	warp_probe_keys_init(&s->keys, secret, role);
	s->pn_next = 1;
	s->rx = rx;
	s->user = user;
	list_add_tail(&s->link, &s->pn->sessions);
	return 0;
}

void punch_sess_stop(struct punch_sess *s)
{
	if (!s->pn)
		return;
	list_del(&s->link);
	warp_probe_keys_wipe(&s->keys);
	pn_put(s->pn);
	s->pn = NULL;
}

int punch_send_probe(struct punch_sess *s, int fd, const struct sockaddr *dst)
{
	uint8_t pkt[WARP_PROBE_LEN], nonce[WARP_PROBE_NONCE_LEN];
	uint64_t pn = s->pn_next++;
	int err;

	/* Unique per probe within the attempt; the authenticator is what proves origin. */
	memcpy(nonce, s->cid, 4);
	warp_put_u64(nonce + 4, pn);
	warp_probe_build(pkt, &s->keys, s->cid, pn, nonce);
	err = sess_send(s, fd, pkt, dst, NULL, 0);
	if (err >= 0)
		s->probes_sent++;
	return err < 0 ? err : 0;
}

bool punch_sess_input(struct punch_sess *s, const uint8_t *pkt, size_t len,
		      const struct sockaddr *src, int fd)
{
	if (!s->pn || len != WARP_PROBE_LEN || !warp_pkt_is_warp(pkt, len) ||
	    memcmp(s->cid, pkt + WARP_CID_OFF, WARP_CID_LEN))
		return false;
	return sess_handle(s, pkt, len, src, NULL, 0, fd);
}

/* ------------------------------------------------------------------ allocation sample */

struct punch_sample {
	struct warp_stun_udp *t;
	struct warp_timer *timer; /* reports from the loop, outside the transport's callback */
	punch_sample_cb cb;
	void *user;
	int err;
	uint16_t port;
};

static void sample_result(const struct warp_stun_result *res, void *user)
{
	struct punch_sample *s = user;

	s->err = res->status ? res->status : res->error_code ? -EPROTO : 0;
	if (!s->err && res->mapped.ss_family == AF_UNSPEC)
		s->err = -WARP_EMISSING;
	if (!s->err)
		s->port = warp_ep_port((const struct sockaddr *)&res->mapped);
	warp_timer_arm_ms(s->timer, 0);
}

static void sample_report(struct warp_timer *t, void *user)
{
	struct punch_sample *s = user;
	punch_sample_cb cb = s->cb;
	void *cb_user = s->user;
	int err = s->err;
	uint16_t port = s->port;

	punch_sample_cancel(s);
	cb(err, port, cb_user);
}

struct punch_sample *punch_sample_start(struct warp_node *node, int family, punch_sample_cb cb,
					void *user)
{
	struct punch_sample *s = calloc(1, sizeof(*s));
	struct warp_stun_client_cfg cfg;
	struct sockaddr_storage any = { 0 }, srv;
	struct warp_stun_req req = { 0 };
	uint64_t id;
	int sock, err = -ENOMEM;

	if (!s)
		return NULL;
	s->cb = cb;
	s->user = user;
	s->err = -ETIMEDOUT;
	warp_stun_client_cfg_default(&cfg);
	s->timer = warp_timer_new(node->loop, sample_report, s);
	s->t = warp_stun_udp_new(node->loop, &cfg);
	if (!s->timer || !s->t)
		goto fail;
	err = -EDESTADDRREQ;
	if (!node_stun_server(node, family, 0, &srv))
		goto fail;
	any.ss_family = (sa_family_t)family;
	sock = warp_stun_udp_open(s->t, (struct sockaddr *)&any);
	if (sock < 0) {
		err = sock;
		goto fail;
	}
	req.sock = sock;
	req.dest = (struct sockaddr *)&srv;
	req.fingerprint = true;
	req.rto_ms = 100;
	req.timeout_ms = 1500;
	req.cb = sample_result;
	req.user = s;
	err = warp_stun_udp_request(s->t, &req, &id);
	if (err)
		goto fail;
	return s;
fail:
	punch_sample_cancel(s);
	errno = -err;
	return NULL;
}

void punch_sample_cancel(struct punch_sample *s)
{
	if (!s)
		return;
	warp_stun_udp_free(s->t);
	warp_timer_free(s->timer);
	free(s);
}

/* ------------------------------------------------------------------ inbound acceptance */

struct punch_node *punch_accept_hold(struct warp_node *node)
{
	struct punch_node *pn = pn_get(node);

	if (!pn)
		return NULL;
	/* The attempt's inbound claim already makes the pipe layer accept the peer's
	 * handshake (and close pipes nobody claims); the hold only pins the session. */
	pn->holds++;
	return pn;
}

void punch_accept_release(struct punch_node *pn)
{
	if (!pn)
		return;
	pn->holds--;
	pn_put(pn);
}

/* ------------------------------------------------------------------ signalling */

void punch_send_cancel(struct warp_node *node, const struct warp_node_addr *to,
		       const uint8_t attempt[16], uint16_t code)
{
	struct warp_signal *sig = node_signal(node);
	struct warp_broker_addr b[WARP_ADDR_MAX_HINTS];
	struct warp_sig_msg *m;
	size_t n;

	if (!sig)
		return;
	n = tv_peer_brokers(to, b, WARP_ADDR_MAX_HINTS);
	m = calloc(1, sizeof(*m));
	if (!m || !n || warp_signal_msg_init(sig, m, WARP_SIG_CANCEL, to->pubkey)) {
		free(m);
		return;
	}
	memcpy(m->attempt, attempt, WARP_SIG_ID_LEN);
	m->body.present |= WARP_SIGF_CODE;
	m->body.code = code;
	if (warp_signal_send(sig, m, b, n) < 0)
		pr_debug("cannot send CANCEL");
	free(m);
}

/* ------------------------------------------------------------------ routes */

int punch_peer_route(const struct warp_node_addr *to, int family)
{
	uint8_t f = family == AF_INET6 ? 6 : 4;
	int best = -1;

	for (size_t i = 0; i < to->nroutes; i++) {
		const struct warp_addr_route *r = &to->routes[i];

		if (r->family != f || (r->flags & WARP_ROUTE_F_LOOPBACK))
			continue;
		if (r->has_ext)
			return (int)i; /* where the NAT facts are */
		if (best < 0 && is_public(r->nic_addr, r->family) && r->udp_port)
			best = (int)i;
	}
	return best;
}

bool punch_own_nat(struct warp_node *node, int family, struct punch_nat *out)
{
	struct warp_node_addr *me = malloc(sizeof(*me));
	struct sockaddr_storage refl;
	int r;

	if (!me)
		return false;
	if (warp_node_address(node, me) || (r = punch_peer_route(me, family)) < 0) {
		free(me);
		return false;
	}
	punch_nat_from_route(out, &me->routes[r]);
	free(me);
	/* The live reflexive endpoint beats the one published in our address. */
	if (out->cls == PUNCH_EIM && node_reflexive(node, family, &refl)) {
		out->has_ext = true;
		warp_ep_addr16((struct sockaddr *)&refl, out->ext_addr);
		if (family == AF_INET) {
			memmove(out->ext_addr, out->ext_addr + 12, 4);
			memset(out->ext_addr + 4, 0, 12);
		}
		out->ext_port = warp_ep_port((struct sockaddr *)&refl);
	}
	return true;
}

void punch_ep(struct sockaddr_storage *out, const struct punch_nat *n, uint16_t port)
{
	warp_ep_from_raw(out, n->family == 6 ? AF_INET6 : AF_INET, n->ext_addr, port, 0);
}
