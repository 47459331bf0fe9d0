// SPDX-License-Identifier: MIT
/*
 * TURN client core, sans-IO, against a scripted fake server on a virtual clock: the 401
 * dance, stale nonces, wrong credentials, error mapping, forged and malformed responses,
 * refresh timing, permission and channel lifecycles (refresh, expiry, rebind, reuse of a
 * retired channel number), Send/Data indications and ChannelData, TCP reassembly under
 * arbitrary chunking, MESSAGE-INTEGRITY-SHA256 and deallocation.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "net/endpoint.h"
#include "nat/stun.h"
#include "relay/turn.h"

#define MS 1000000ull
#define S  1000000000ull

struct ev {
	struct warp_turn_event ev;
	struct sockaddr_storage peer;
};

struct fake {
	struct warp_turn *t;
	struct warp_turn_cfg cfg;
	uint64_t now;
	struct sockaddr_storage server, relayed, mapped;
	char realm[32];
	char nonce[64];
	uint8_t key[32];
	size_t keylen;
	bool sha256;
	/* what the client sent in the last drain */
	uint8_t out[64][2048];
	size_t outlen[64];
	int nout;
	struct ev evs[256];
	int nev;
	uint8_t data[70000];
	size_t dlen;
	struct sockaddr_storage dpeer;
	int ndata;
	bool release_in_cb; /* call warp_turn_release() from the ALLOCATED event */
};

static void on_event(struct warp_turn *t, const struct warp_turn_event *ev, void *user)
{
	struct fake *f = user;
	struct ev *e = &f->evs[f->nev++];

	assert_true(f->nev < 256);
	e->ev = *ev;
	if (ev->peer)
		memcpy(&e->peer, ev->peer, warp_ep_len(ev->peer));
	e->ev.peer = NULL;
	if (ev->type == WARP_TURN_EV_ALLOCATED && f->release_in_cb)
		assert_int_equal(warp_turn_release(t, f->now), 0);
}

static void on_data(struct warp_turn *t, const struct sockaddr *peer, uint8_t *data, size_t len,
		    void *user)
{
	struct fake *f = user;

	assert_true(f->dlen + len <= sizeof(f->data));
	memcpy(f->data + f->dlen, data, len);
	f->dlen += len;
	memcpy(&f->dpeer, peer, warp_ep_len(peer));
	f->ndata++;
}

static const struct warp_turn_ops ops = { .event = on_event, .data = on_data };

static void fake_init(struct fake *f, uint8_t transport, int family)
{
	memset(f, 0, sizeof(*f));
	f->now = 1 * S;
	warp_ep_parse("192.0.2.1:3478", 0, &f->server);
	if (family == AF_INET6) {
		warp_ep_parse("[2001:db8::1]:50000", 0, &f->relayed);
		warp_ep_parse("[2001:db8::77]:40000", 0, &f->mapped);
	} else {
		warp_ep_parse("192.0.2.1:50000", 0, &f->relayed);
		warp_ep_parse("203.0.113.7:40000", 0, &f->mapped);
	}
	snprintf(f->realm, sizeof(f->realm), "lab");
	snprintf(f->nonce, sizeof(f->nonce), "nonce-one");
	f->keylen = (size_t)warp_stun_long_term_key("u", "lab", "p", WARP_STUN_PW_MD5, f->key);
	f->cfg.username = "u";
	f->cfg.password = "p";
	f->cfg.realm = "lab";
	f->cfg.software = "warpgate-test";
	f->cfg.transport = transport;
	f->cfg.family = family;
}

static void fake_start(struct fake *f)
{
	f->t = warp_turn_new(&f->cfg, (struct sockaddr *)&f->server, &ops, f);
	assert_non_null(f->t);
	assert_int_equal(warp_turn_allocate(f->t, f->now), 0);
	assert_int_equal(warp_turn_allocate(f->t, f->now), -EALREADY);
}

/* Collects what the client sends at f->now. */
static int drain(struct fake *f)
{
	struct warp_turn_tx tx;

	f->nout = 0;
	while (warp_turn_poll_transmit(f->t, f->now, &tx)) {
		assert_true(f->nout < 64);
		assert_true(tx.len <= sizeof(f->out[0]));
		memcpy(f->out[f->nout], tx.data, tx.len);
		f->outlen[f->nout++] = tx.len;
	}
	return f->nout;
}

static void decode_out(struct fake *f, int i, struct warp_stun_msg *m)
{
	assert_true(i < f->nout);
	assert_int_equal(warp_stun_decode(m, f->out[i], f->outlen[i]), 0);
}

/* Index of the first request of that method in the last drain. */
static int find_out(struct fake *f, uint16_t method, struct warp_stun_msg *m)
{
	for (int i = 0; i < f->nout; i++) {
		if (warp_stun_decode(m, f->out[i], f->outlen[i]) == 0 && m->method == method &&
		    m->cls == WARP_STUN_REQUEST)
			return i;
	}
	fail_msg("no %s request sent", warp_stun_method_name(method));
	return -1;
}

struct resp {
	int code; /* 0: success */
	bool sign;
	bool bad_mi; /* sign with the wrong key */
	bool no_relayed;
	uint32_t lifetime;   /* 0: absent */
	const char *nonce;   /* NONCE + REALM (401/438) */
	const uint8_t *algs; /* PASSWORD-ALGORITHMS */
	size_t algs_len;
	const struct sockaddr *from; /* NULL: the server */
	const uint8_t *tid;	     /* NULL: the request's */
	uint16_t method;	     /* 0: the request's */
};

static int respond(struct fake *f, const struct warp_stun_msg *req, const struct resp *r)
{
	struct warp_stun_builder b;
	uint8_t buf[1500];
	int n;

	warp_stun_build_init(&b, buf, sizeof(buf), r->method ? r->method : req->method,
			     r->code ? WARP_STUN_ERROR : WARP_STUN_SUCCESS,
			     r->tid ? r->tid : req->tid);
	if (r->code)
		warp_stun_add_error(&b, r->code, "scripted");
	if (r->nonce) {
		warp_stun_add_str(&b, WARP_STUN_ATTR_NONCE, r->nonce);
		warp_stun_add_str(&b, WARP_STUN_ATTR_REALM, f->realm);
	}
	if (r->algs)
		warp_stun_add(&b, WARP_STUN_ATTR_PASSWORD_ALGORITHMS, r->algs, r->algs_len);
	if (!r->code && req->method == WARP_STUN_ALLOCATE) {
		if (!r->no_relayed)
			warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_RELAYED_ADDRESS,
					   (struct sockaddr *)&f->relayed);
		warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS,
				   (struct sockaddr *)&f->mapped);
	}
	if (r->lifetime)
		warp_stun_add_u32(&b, WARP_STUN_ATTR_LIFETIME, r->lifetime);
	if (r->sign || r->bad_mi) {
		uint8_t wrong[16] = { 1 };
		const void *k = r->bad_mi ? wrong : f->key;
		size_t kl = r->bad_mi ? sizeof(wrong) : f->keylen;

		if (f->sha256)
			warp_stun_add_mi256(&b, k, kl);
		else
			warp_stun_add_mi(&b, k, kl);
	}
	n = warp_stun_build_end(&b);
	assert_true(n > 0);
	if (f->cfg.transport == WARP_TURN_TCP && !r->from)
		return warp_turn_handle_stream(f->t, buf, (size_t)n, f->now) ?: 1;
	return warp_turn_handle_input(f->t, buf, (size_t)n,
				      r->from ? r->from : (struct sockaddr *)&f->server, f->now);
}

/* The server verifies a signed request the way coturn does. */
static void check_signed(struct fake *f, const struct warp_stun_msg *m)
{
	const uint8_t *v;
	size_t len;

	assert_int_equal(warp_stun_get_bytes(m, WARP_STUN_ATTR_USERNAME, &v, &len), 0);
	assert_int_equal(len, 1);
	assert_memory_equal(v, "u", 1);
	assert_int_equal(warp_stun_get_bytes(m, WARP_STUN_ATTR_REALM, &v, &len), 0);
	assert_int_equal(len, strlen(f->realm));
	assert_int_equal(warp_stun_get_bytes(m, WARP_STUN_ATTR_NONCE, &v, &len), 0);
	assert_int_equal(len, strlen(f->nonce));
	assert_memory_equal(v, f->nonce, len);
	if (f->sha256) {
		assert_int_not_equal(m->mi256_off, 0);
		assert_int_equal(warp_stun_check_mi256(m, f->key, f->keylen), 0);
	} else {
		assert_int_not_equal(m->mi_off, 0);
		assert_int_equal(warp_stun_check_mi(m, f->key, f->keylen), 0);
	}
}

static int count_ev(struct fake *f, enum warp_turn_event_type type)
{
	int n = 0;

	for (int i = 0; i < f->nev; i++)
		n += f->evs[i].ev.type == type;
	return n;
}

static struct ev *last_ev(struct fake *f, enum warp_turn_event_type type)
{
	for (int i = f->nev - 1; i >= 0; i--)
		if (f->evs[i].ev.type == type)
			return &f->evs[i];
	return NULL;
}

/* Runs the whole 401 dance and a success with the given lifetime. */
static void allocate_ready(struct fake *f, uint32_t lifetime)
{
	struct warp_stun_msg m;

	fake_start(f);
	assert_int_equal(drain(f), 1);
	decode_out(f, 0, &m);
	assert_int_equal(respond(f, &m, &(struct resp){ .code = 401, .nonce = f->nonce }), 1);
	assert_int_equal(drain(f), 1);
	decode_out(f, 0, &m);
	check_signed(f, &m);
	assert_int_equal(respond(f, &m, &(struct resp){ .sign = true, .lifetime = lifetime }), 1);
	assert_int_equal(warp_turn_state(f->t),
			 f->release_in_cb ? WARP_TURN_RELEASING : WARP_TURN_READY);
}

static void fake_free(struct fake *f)
{
	warp_turn_free(f->t);
	f->t = NULL;
}

/* ------------------------------------------------------------------ tests */

static void test_allocate_dance(void **state)
{
	struct fake f;
	struct warp_stun_msg m;
	const struct warp_turn_info *info;
	const uint8_t *v;
	size_t len;
	uint8_t proto;

	fake_init(&f, WARP_TURN_UDP, AF_INET);
	fake_start(&f);
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_ALLOCATING);
	assert_int_equal(drain(&f), 1);
	decode_out(&f, 0, &m);
	/* first Allocate: unsigned, UDP relay, software, no family (IPv4 default) */
	assert_int_equal(m.method, WARP_STUN_ALLOCATE);
	assert_int_equal(m.mi_off, 0);
	assert_null(warp_stun_find(&m, WARP_STUN_ATTR_USERNAME));
	assert_null(warp_stun_find(&m, WARP_STUN_ATTR_REQUESTED_ADDRESS_FAMILY));
	assert_int_equal(warp_stun_get_requested_transport(&m, &proto), 0);
	assert_int_equal(proto, 17);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_SOFTWARE, &v, &len), 0);
	assert_int_equal(respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce }), 1);
	assert_int_equal(f.nev, 0);
	/* signed retry with a fresh transaction ID */
	assert_int_equal(drain(&f), 1);
	{
		struct warp_stun_msg m2;

		decode_out(&f, 0, &m2);
		assert_memory_not_equal(m2.tid, m.tid, WARP_STUN_TID_LEN);
		check_signed(&f, &m2);
		m = m2;
	}
	assert_int_equal(respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 }), 1);
	assert_int_equal(f.nev, 1);
	assert_int_equal(f.evs[0].ev.type, WARP_TURN_EV_ALLOCATED);
	assert_int_equal(f.evs[0].ev.err, 0);
	info = warp_turn_info(f.t);
	assert_non_null(info);
	assert_true(
		warp_ep_equal((struct sockaddr *)&info->relayed, (struct sockaddr *)&f.relayed));
	assert_true(warp_ep_equal((struct sockaddr *)&info->mapped, (struct sockaddr *)&f.mapped));
	assert_int_equal(info->lifetime_s, 600);
	assert_string_equal(info->realm, "lab");
	assert_false(info->sha256);
	/* the same response again (a retransmission) matches nothing */
	assert_int_equal(respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 }), 0);
	assert_int_equal(warp_turn_pending(f.t), 0);
	fake_free(&f);
}

static void test_stale_nonce(void **state)
{
	struct fake f;
	struct warp_stun_msg m;

	fake_init(&f, WARP_TURN_UDP, AF_INET);
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	drain(&f);
	decode_out(&f, 0, &m);
	/* 438 on the signed Allocate: resent with the new nonce */
	snprintf(f.nonce, sizeof(f.nonce), "nonce-two");
	assert_int_equal(respond(&f, &m, &(struct resp){ .code = 438, .nonce = f.nonce }), 1);
	assert_int_equal(drain(&f), 1);
	decode_out(&f, 0, &m);
	check_signed(&f, &m);
	respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 });
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_READY);

	/* the refresh goes stale too, repeatedly: a bounded number of retries */
	f.now += 540 * S;
	warp_turn_handle_timeout(f.t, f.now);
	for (int i = 0; i < 10 && warp_turn_state(f.t) == WARP_TURN_READY; i++) {
		assert_int_equal(drain(&f), 1);
		decode_out(&f, 0, &m);
		assert_int_equal(m.method, WARP_STUN_REFRESH);
		check_signed(&f, &m);
		snprintf(f.nonce, sizeof(f.nonce), "nonce-%d", 10 + i);
		respond(&f, &m, &(struct resp){ .code = 438, .nonce = f.nonce });
		assert_true(i < 5);
	}
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_FAILED);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -WARP_ESTALE);
	fake_free(&f);
}

static void test_wrong_password(void **state)
{
	struct fake f;
	struct warp_stun_msg m;

	fake_init(&f, WARP_TURN_UDP, AF_INET);
	f.cfg.password = "wrong";
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	drain(&f);
	decode_out(&f, 0, &m);
	assert_int_not_equal(warp_stun_check_mi(&m, f.key, f.keylen), 0);
	/* the server cannot sign its answer: the same unsigned 401 again */
	assert_int_equal(respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce }), 1);
	assert_int_equal(drain(&f), 0);
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_FAILED);
	assert_int_equal(f.nev, 1);
	assert_int_equal(f.evs[0].ev.type, WARP_TURN_EV_FAILED);
	assert_int_equal(f.evs[0].ev.err, -EACCES);
	assert_int_equal(warp_turn_add_peer(f.t, (struct sockaddr *)&f.mapped, true, f.now),
			 -ENOTCONN);
	assert_int_equal(warp_turn_release(f.t, f.now), 1);
	fake_free(&f);

	/* no credentials configured but the server asks: -EACCES at once */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	f.cfg.username = f.cfg.password = NULL;
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -EACCES);
	fake_free(&f);

	/* a 401 without REALM/NONCE is a protocol error */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401 });
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -EPROTO);
	fake_free(&f);
}

static void test_error_mapping(void **state)
{
	static const struct {
		int code;
		int err;
	} cases[] = {
		{ 300, -EREMCHG },	{ 400, -EPROTO },
		{ 403, -EPERM },	{ 420, -EOPNOTSUPP },
		{ 437, -EADDRINUSE },	{ 440, -EAFNOSUPPORT },
		{ 441, -EKEYREJECTED }, { 442, -EPROTONOSUPPORT },
		{ 486, -WARP_EQUOTA },	{ 508, -EBUSY },
		{ 500, -EIO },		{ 499, -EPROTO },
	};

	for (size_t i = 0; i < WARP_ARRAY_SIZE(cases); i++) {
		struct fake f;
		struct warp_stun_msg m;

		assert_int_equal(warp_turn_map_error(cases[i].code, WARP_STUN_ALLOCATE),
				 cases[i].err);
		fake_init(&f, WARP_TURN_UDP, AF_INET);
		fake_start(&f);
		drain(&f);
		decode_out(&f, 0, &m);
		respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
		drain(&f);
		decode_out(&f, 0, &m);
		assert_int_equal(
			respond(&f, &m, &(struct resp){ .code = cases[i].code, .sign = true }), 1);
		assert_int_equal(warp_turn_state(f.t), WARP_TURN_FAILED);
		assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, cases[i].err);
		fake_free(&f);
	}
	assert_int_equal(warp_turn_map_error(437, WARP_STUN_REFRESH), -ENOENT);
	assert_int_equal(warp_turn_map_error(438, WARP_STUN_REFRESH), -WARP_ESTALE);
	assert_int_equal(warp_turn_map_error(401, WARP_STUN_REFRESH), -EACCES);
}

static void test_forged_and_malformed(void **state)
{
	struct fake f;
	struct warp_stun_msg m;
	struct sockaddr_storage other;
	uint8_t tid[WARP_STUN_TID_LEN] = { 9 }, junk[64];

	warp_ep_parse("192.0.2.99:3478", 0, &other);
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	drain(&f);
	decode_out(&f, 0, &m);
	/* success with a bad, or no, MESSAGE-INTEGRITY */
	assert_int_equal(respond(&f, &m, &(struct resp){ .bad_mi = true, .lifetime = 600 }), 0);
	assert_int_equal(respond(&f, &m, &(struct resp){ .lifetime = 600 }), 0);
	/* signed errors that do not verify; unsigned errors that must be signed */
	assert_int_equal(respond(&f, &m, &(struct resp){ .code = 486, .bad_mi = true }), 0);
	assert_int_equal(respond(&f, &m, &(struct resp){ .code = 486 }), 0);
	assert_int_equal(respond(&f, &m, &(struct resp){ .code = 403 }), 0);
	/* wrong transaction, wrong method, wrong source */
	assert_int_equal(respond(&f, &m, &(struct resp){ .sign = true, .tid = tid }), 0);
	assert_int_equal(
		respond(&f, &m, &(struct resp){ .sign = true, .method = WARP_STUN_REFRESH }), 0);
	assert_int_equal(
		respond(&f, &m, &(struct resp){ .sign = true, .from = (struct sockaddr *)&other }),
		0);
	/* garbage */
	memset(junk, 0, sizeof(junk));
	assert_true(warp_turn_handle_input(f.t, junk, 3, (struct sockaddr *)&f.server, f.now) < 0);
	assert_true(warp_turn_handle_input(f.t, junk, sizeof(junk), (struct sockaddr *)&f.server,
					   f.now) < 0);
	memcpy(junk, f.out[0], 20);
	junk[0] = 0x01;
	junk[1] = 0x03; /* success class, length claims 0 but 44 bytes follow */
	assert_true(warp_turn_handle_input(f.t, junk, sizeof(junk), (struct sockaddr *)&f.server,
					   f.now) < 0);
	junk[0] = 0x40; /* ChannelData announcing more than there is */
	junk[2] = 0x10;
	assert_true(warp_turn_handle_input(f.t, junk, 8, (struct sockaddr *)&f.server, f.now) < 0);
	assert_int_equal(f.nev, 0);
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_ALLOCATING);
	/* the real answer still completes the transaction */
	assert_int_equal(respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 }), 1);
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_READY);
	fake_free(&f);

	/* a success without a relayed address is refused */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .sign = true, .no_relayed = true });
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -WARP_EMISSING);
	fake_free(&f);
}

static void test_retransmission(void **state)
{
	struct fake f;
	uint64_t t0;
	int sends = 0;

	fake_init(&f, WARP_TURN_UDP, AF_INET);
	f.cfg.rto_ms = 100;
	f.cfg.rc = 4;
	f.cfg.rm = 2;
	fake_start(&f);
	t0 = f.now;
	/* sent at 0, 100, 300, 700 ms; fails 200 ms after the last one */
	for (;;) {
		uint64_t next = warp_turn_next_deadline(f.t);

		if (next == WARP_TURN_NEVER)
			break;
		f.now = next;
		warp_turn_handle_timeout(f.t, f.now);
		if (drain(&f)) {
			static const uint64_t at[] = { 0, 100, 300, 700 };

			assert_true(sends < 4);
			assert_int_equal(f.now - t0, at[sends] * MS);
			sends++;
		}
	}
	assert_int_equal(sends, 4);
	assert_int_equal(f.now - t0, 900 * MS);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -ETIMEDOUT);
	fake_free(&f);

	/* TCP: one transmission, Ti */
	fake_init(&f, WARP_TURN_TCP, AF_INET);
	f.cfg.ti_ms = 3000;
	fake_start(&f);
	assert_int_equal(drain(&f), 1);
	assert_int_equal(warp_turn_next_deadline(f.t), f.now + 3000 * MS);
	f.now += 2999 * MS;
	warp_turn_handle_timeout(f.t, f.now);
	assert_int_equal(drain(&f), 0);
	f.now += MS;
	warp_turn_handle_timeout(f.t, f.now);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -ETIMEDOUT);
	fake_free(&f);
}

static void test_refresh_timing(void **state)
{
	struct fake f;
	struct warp_stun_msg m;
	uint32_t lt;

	fake_init(&f, WARP_TURN_UDP, AF_INET);
	f.cfg.lifetime_s = 900;
	allocate_ready(&f, 600);
	/* refresh one minute before expiry, asking for the configured lifetime */
	assert_int_equal(warp_turn_next_deadline(f.t), f.now + 540 * S);
	f.now += 539 * S;
	warp_turn_handle_timeout(f.t, f.now);
	assert_int_equal(drain(&f), 0);
	f.now += S;
	warp_turn_handle_timeout(f.t, f.now);
	assert_int_equal(drain(&f), 1);
	decode_out(&f, 0, &m);
	assert_int_equal(m.method, WARP_STUN_REFRESH);
	check_signed(&f, &m);
	assert_int_equal(warp_stun_get_u32(&m, WARP_STUN_ATTR_LIFETIME, &lt), 0);
	assert_int_equal(lt, 900);
	/* a short granted lifetime: refresh at half of it */
	respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 100 });
	assert_int_equal(warp_turn_info(f.t)->lifetime_s, 100);
	assert_int_equal(warp_turn_next_deadline(f.t), f.now + 50 * S);

	/* refreshes time out: retried every retry_ms until the allocation would expire */
	f.now += 50 * S;
	warp_turn_handle_timeout(f.t, f.now);
	{
		int refreshes = 0;

		while (warp_turn_state(f.t) == WARP_TURN_READY) {
			f.now = warp_turn_next_deadline(f.t);
			warp_turn_handle_timeout(f.t, f.now);
			if (drain(&f)) {
				decode_out(&f, 0, &m);
				if (m.mi_off)
					refreshes++;
			}
		}
		assert_true(refreshes >= 2);
	}
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -ETIMEDOUT);
	fake_free(&f);

	/* explicit refresh interval; a refresh answered with 437: allocation lost */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	f.cfg.refresh_ms = 2000;
	allocate_ready(&f, 600);
	assert_int_equal(warp_turn_next_deadline(f.t), f.now + 2 * S);
	f.now += 2 * S;
	warp_turn_handle_timeout(f.t, f.now);
	drain(&f);
	decode_out(&f, 0, &m);
	assert_null(warp_stun_find(&m, WARP_STUN_ATTR_LIFETIME));
	respond(&f, &m, &(struct resp){ .code = 437 });
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -ENOENT);
	fake_free(&f);
}

static void test_permission_channel(void **state)
{
	struct fake f;
	struct warp_stun_msg m, perm, chan;
	struct sockaddr_storage p1, p2, p3, got;
	uint8_t buf[256];
	const uint8_t *d;
	size_t dlen;
	uint16_t ch;
	int n, i;

	warp_ep_parse("198.51.100.5:7000", 0, &p1);
	warp_ep_parse("198.51.100.5:7001", 0, &p2);
	warp_ep_parse("198.51.100.9:7000", 0, &p3);
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	/* peers added before the allocation is ready wait for it */
	fake_start(&f);
	assert_int_equal(warp_turn_add_peer(f.t, (struct sockaddr *)&p1, true, f.now), 0);
	{
		struct sockaddr_storage v6;

		warp_ep_parse("[2001:db8::5]:7000", 0, &v6);
		assert_int_equal(warp_turn_add_peer(f.t, (struct sockaddr *)&v6, true, f.now),
				 -EAFNOSUPPORT);
	}
	assert_int_equal(drain(&f), 1);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 });
	/* CreatePermission and ChannelBind leave at once */
	assert_int_equal(drain(&f), 2);
	i = find_out(&f, WARP_STUN_CREATE_PERMISSION, &perm);
	check_signed(&f, &perm);
	assert_int_equal(warp_stun_get_addr(&perm, WARP_STUN_ATTR_XOR_PEER_ADDRESS, &got), 0);
	assert_true(warp_ep_addr_equal((struct sockaddr *)&got, (struct sockaddr *)&p1));
	i = find_out(&f, WARP_STUN_CHANNEL_BIND, &chan);
	(void)i;
	check_signed(&f, &chan);
	assert_int_equal(warp_stun_get_channel(&chan, &ch), 0);
	assert_int_equal(ch, 0x4000);
	assert_int_equal(warp_stun_get_addr(&chan, WARP_STUN_ATTR_XOR_PEER_ADDRESS, &got), 0);
	assert_true(warp_ep_equal((struct sockaddr *)&got, (struct sockaddr *)&p1));

	/* until the channel is bound, data goes in Send indications */
	n = warp_turn_wrap(f.t, (struct sockaddr *)&p1, "hello", 5, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), 0);
	assert_int_equal(m.method, WARP_STUN_SEND);
	assert_int_equal(m.cls, WARP_STUN_INDICATION);
	assert_int_equal(m.mi_off, 0);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_DATA, &d, &dlen), 0);
	assert_int_equal(dlen, 5);
	assert_memory_equal(d, "hello", 5);
	assert_int_equal(warp_stun_get_addr(&m, WARP_STUN_ATTR_XOR_PEER_ADDRESS, &got), 0);
	assert_true(warp_ep_equal((struct sockaddr *)&got, (struct sockaddr *)&p1));

	/* permission then channel granted: one event each */
	respond(&f, &perm, &(struct resp){ .sign = true });
	assert_int_equal(count_ev(&f, WARP_TURN_EV_PERMISSION), 1);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_PERMISSION)->ev.err, 0);
	assert_true(warp_ep_equal((struct sockaddr *)&last_ev(&f, WARP_TURN_EV_PERMISSION)->peer,
				  (struct sockaddr *)&p1));
	assert_int_equal(warp_turn_peer_channel(f.t, (struct sockaddr *)&p1), 0);
	respond(&f, &chan, &(struct resp){ .sign = true });
	assert_int_equal(count_ev(&f, WARP_TURN_EV_CHANNEL), 1);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_CHANNEL)->ev.channel, 0x4000);
	assert_int_equal(warp_turn_peer_channel(f.t, (struct sockaddr *)&p1), 0x4000);
	n = warp_turn_wrap(f.t, (struct sockaddr *)&p1, "hello", 5, buf, sizeof(buf));
	assert_int_equal(n, 9); /* no padding over UDP */
	assert_int_equal(warp_get_u16(buf), 0x4000);
	assert_int_equal(warp_get_u16(buf + 2), 5);

	/* a second peer on the same IP shares the permission but gets its own channel */
	assert_int_equal(warp_turn_add_peer(f.t, (struct sockaddr *)&p2, true, f.now), 0);
	assert_int_equal(drain(&f), 1);
	find_out(&f, WARP_STUN_CHANNEL_BIND, &chan);
	warp_stun_get_channel(&chan, &ch);
	assert_int_equal(ch, 0x4001);
	/* its permission is already there: reported on the next timeout call, due now */
	assert_int_equal(count_ev(&f, WARP_TURN_EV_PERMISSION), 1);
	assert_true(warp_turn_next_deadline(f.t) <= f.now);
	warp_turn_handle_timeout(f.t, f.now);
	assert_int_equal(count_ev(&f, WARP_TURN_EV_PERMISSION), 2);
	respond(&f, &chan, &(struct resp){ .sign = true });

	/* permissions refresh every 240 s, channels every 540 s, with the same numbers */
	f.now += 240 * S;
	warp_turn_handle_timeout(f.t, f.now);
	assert_int_equal(drain(&f), 1);
	find_out(&f, WARP_STUN_CREATE_PERMISSION, &perm);
	respond(&f, &perm, &(struct resp){ .sign = true });
	f.now += 240 * S;
	warp_turn_handle_timeout(f.t, f.now);
	assert_int_equal(drain(&f), 1);
	find_out(&f, WARP_STUN_CREATE_PERMISSION, &perm);
	respond(&f, &perm, &(struct resp){ .sign = true });
	f.now += 60 * S; /* 540 s after binding */
	warp_turn_handle_timeout(f.t, f.now);
	assert_int_equal(drain(&f), 3); /* two rebinds + the allocation refresh */
	for (int k = 0; k < 3; k++) {
		decode_out(&f, k, &m);
		if (m.method == WARP_STUN_CHANNEL_BIND) {
			warp_stun_get_channel(&m, &ch);
			warp_stun_get_addr(&m, WARP_STUN_ATTR_XOR_PEER_ADDRESS, &got);
			assert_int_equal(ch, warp_ep_port((struct sockaddr *)&got) == 7000
						     ? 0x4000
						     : 0x4001);
		}
		respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 });
	}
	assert_int_equal(count_ev(&f, WARP_TURN_EV_CHANNEL), 2); /* rebinds are silent */
	assert_int_equal(count_ev(&f, WARP_TURN_EV_PERMISSION), 2);

	/* removing a peer stops its refreshes; the shared permission stays for p2 */
	assert_int_equal(warp_turn_remove_peer(f.t, (struct sockaddr *)&p1, f.now), 0);
	assert_int_equal(warp_turn_remove_peer(f.t, (struct sockaddr *)&p1, f.now), -ENOENT);
	f.now += 240 * S; /* permission refresh due (last one 300 s ago... at 480 s) */
	warp_turn_handle_timeout(f.t, f.now);
	n = drain(&f);
	for (int k = 0; k < n; k++) {
		decode_out(&f, k, &m);
		if (m.method == WARP_STUN_CHANNEL_BIND) {
			warp_stun_get_channel(&m, &ch);
			assert_int_equal(ch, 0x4001);
		}
		respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 });
	}
	/* re-adding p1 while its old binding is still remembered: same number */
	assert_int_equal(warp_turn_add_peer(f.t, (struct sockaddr *)&p1, true, f.now), 0);
	n = drain(&f);
	{
		bool rebound = false;

		for (int k = 0; k < n; k++) {
			decode_out(&f, k, &m);
			if (m.method == WARP_STUN_CHANNEL_BIND) {
				warp_stun_get_channel(&m, &ch);
				assert_int_equal(ch, 0x4000);
				rebound = true;
			}
			respond(&f, &m, &(struct resp){ .sign = true });
		}
		(void)rebound;
	}
	warp_turn_handle_timeout(f.t, f.now);
	assert_true(warp_ep_equal((struct sockaddr *)&last_ev(&f, WARP_TURN_EV_PERMISSION)->peer,
				  (struct sockaddr *)&p1));

	/* a third peer on another IP: the server refuses its permission */
	assert_int_equal(warp_turn_add_peer(f.t, (struct sockaddr *)&p3, false, f.now), 0);
	assert_int_equal(drain(&f), 1);
	find_out(&f, WARP_STUN_CREATE_PERMISSION, &perm);
	respond(&f, &perm, &(struct resp){ .code = 403, .sign = true });
	assert_int_equal(last_ev(&f, WARP_TURN_EV_PERMISSION)->ev.err, -EPERM);
	assert_true(warp_ep_equal((struct sockaddr *)&last_ev(&f, WARP_TURN_EV_PERMISSION)->peer,
				  (struct sockaddr *)&p3));
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_READY);

	/* permission and channel refreshes that time out: both are reported lost once they
	 * would have expired on the server, and data falls back to Send indications */
	{
		uint64_t until = f.now + 700 * S;
		int lost = 0, chan_lost = 0;

		while (f.now < until) {
			f.now = warp_turn_next_deadline(f.t);
			warp_turn_handle_timeout(f.t, f.now);
			n = drain(&f);
			for (int k = 0; k < n; k++) {
				decode_out(&f, k, &m);
				/* keep the allocation alive, drop everything else */
				if (m.method == WARP_STUN_REFRESH)
					respond(&f, &m,
						&(struct resp){ .sign = true, .lifetime = 600 });
			}
		}
		for (int k = 0; k < f.nev; k++) {
			if (f.evs[k].ev.err != -ETIMEDOUT)
				continue;
			lost += f.evs[k].ev.type == WARP_TURN_EV_PERMISSION;
			chan_lost += f.evs[k].ev.type == WARP_TURN_EV_CHANNEL;
		}
		assert_int_equal(lost, 2); /* p1 and p2 share the lost permission */
		assert_int_equal(chan_lost, 2);
		assert_int_equal(warp_turn_peer_channel(f.t, (struct sockaddr *)&p1), 0);
		n = warp_turn_wrap(f.t, (struct sockaddr *)&p1, "hello", 5, buf, sizeof(buf));
		assert_int_equal(warp_stun_decode(&m, buf, (size_t)n), 0);
		assert_int_equal(m.method, WARP_STUN_SEND);
		assert_int_equal(warp_turn_state(f.t), WARP_TURN_READY);
	}
	fake_free(&f);
}

static void test_data_in(void **state)
{
	struct fake f;
	struct warp_stun_msg perm, chan;
	struct warp_stun_builder b;
	struct sockaddr_storage p1, other;
	uint8_t buf[256], tid[WARP_STUN_TID_LEN] = { 1, 2, 3 };
	int n;

	warp_ep_parse("198.51.100.5:7000", 0, &p1);
	warp_ep_parse("198.51.100.6:7000", 0, &other);
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	allocate_ready(&f, 600);
	warp_turn_add_peer(f.t, (struct sockaddr *)&p1, true, f.now);
	drain(&f);
	find_out(&f, WARP_STUN_CREATE_PERMISSION, &perm);
	find_out(&f, WARP_STUN_CHANNEL_BIND, &chan);
	/* Data indication */
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_DATA, WARP_STUN_INDICATION, tid);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_PEER_ADDRESS, (struct sockaddr *)&p1);
	warp_stun_add(&b, WARP_STUN_ATTR_DATA, "abc", 3);
	n = warp_stun_build_end(&b);
	assert_int_equal(
		warp_turn_handle_input(f.t, buf, (size_t)n, (struct sockaddr *)&f.server, f.now),
		1);
	assert_int_equal(f.ndata, 1);
	assert_int_equal(f.dlen, 3);
	assert_memory_equal(f.data, "abc", 3);
	assert_true(warp_ep_equal((struct sockaddr *)&f.dpeer, (struct sockaddr *)&p1));
	/* the same bytes from anyone but the server are ignored */
	assert_int_equal(
		warp_turn_handle_input(f.t, buf, (size_t)n, (struct sockaddr *)&other, f.now), 0);
	/* a Data indication without DATA is malformed */
	warp_stun_build_init(&b, buf, sizeof(buf), WARP_STUN_DATA, WARP_STUN_INDICATION, tid);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_PEER_ADDRESS, (struct sockaddr *)&p1);
	n = warp_stun_build_end(&b);
	assert_true(warp_turn_handle_input(f.t, buf, (size_t)n, (struct sockaddr *)&f.server,
					   f.now) < 0);
	/* ChannelData on the channel being bound, and on an unknown one */
	n = warp_stun_channel_data_encode(buf, sizeof(buf), 0x4000, "defg", 4, false);
	assert_int_equal(
		warp_turn_handle_input(f.t, buf, (size_t)n, (struct sockaddr *)&f.server, f.now),
		1);
	assert_int_equal(f.ndata, 2);
	assert_memory_equal(f.data + 3, "defg", 4);
	n = warp_stun_channel_data_encode(buf, sizeof(buf), 0x4abc, "x", 1, false);
	assert_int_equal(
		warp_turn_handle_input(f.t, buf, (size_t)n, (struct sockaddr *)&f.server, f.now),
		0);
	/* padded ChannelData is accepted over UDP too */
	n = warp_stun_channel_data_encode(buf, sizeof(buf), 0x4000, "h", 1, true);
	assert_int_equal(n, 8);
	assert_int_equal(
		warp_turn_handle_input(f.t, buf, (size_t)n, (struct sockaddr *)&f.server, f.now),
		1);
	assert_int_equal(f.ndata, 3);
	fake_free(&f);
}

/* Feeds a TCP stream in chunks of the given sizes (cycled). */
static void feed(struct fake *f, const uint8_t *s, size_t len, const size_t *chunks, size_t nch)
{
	size_t off = 0, k = 0;

	while (off < len) {
		size_t n = chunks[k++ % nch];

		if (n > len - off)
			n = len - off;
		assert_int_equal(warp_turn_handle_stream(f->t, s + off, n, f->now), 0);
		off += n;
	}
}

static void test_tcp_chunking(void **state)
{
	static const size_t patterns[][4] = {
		{ 1 }, { 2 }, { 3 }, { 7 }, { 4096 }, { 1, 5, 13, 2 }, { 19, 1, 1, 100 }, { 65536 },
	};
	struct fake f;
	struct warp_stun_msg perm, chan;
	struct warp_stun_builder b;
	struct sockaddr_storage p1;
	uint8_t *stream = malloc(200000), *expect = malloc(200000), buf[256];
	uint8_t tid[WARP_STUN_TID_LEN] = { 7 };
	size_t slen = 0, elen = 0;
	int n;

	warp_ep_parse("198.51.100.5:7000", 0, &p1);
	fake_init(&f, WARP_TURN_TCP, AF_INET);
	allocate_ready(&f, 600);
	warp_turn_add_peer(f.t, (struct sockaddr *)&p1, true, f.now);
	drain(&f);
	find_out(&f, WARP_STUN_CREATE_PERMISSION, &perm);
	find_out(&f, WARP_STUN_CHANNEL_BIND, &chan);
	respond(&f, &perm, &(struct resp){ .sign = true });
	respond(&f, &chan, &(struct resp){ .sign = true });
	/* our ChannelData is padded over TCP */
	n = warp_turn_wrap(f.t, (struct sockaddr *)&p1, "hello", 5, buf, sizeof(buf));
	assert_int_equal(n, 12);
	/* a stream mixing ChannelData of every padding, Data indications and a big frame */
	for (size_t len = 0; len < 40; len++) {
		uint8_t payload[40];

		for (size_t i = 0; i < len; i++)
			payload[i] = (uint8_t)(len * 31 + i);
		n = warp_stun_channel_data_encode(stream + slen, 200000 - slen, 0x4000, payload,
						  len, true);
		assert_true(n > 0);
		slen += (size_t)n;
		memcpy(expect + elen, payload, len);
		elen += len;
		if (len % 5 == 0) {
			warp_stun_build_init(&b, stream + slen, 200000 - slen, WARP_STUN_DATA,
					     WARP_STUN_INDICATION, tid);
			warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_PEER_ADDRESS,
					   (struct sockaddr *)&p1);
			warp_stun_add(&b, WARP_STUN_ATTR_DATA, payload, len);
			n = warp_stun_build_end(&b);
			assert_true(n > 0);
			slen += (size_t)n;
			memcpy(expect + elen, payload, len);
			elen += len;
		}
	}
	{
		static uint8_t big[65535];

		for (size_t i = 0; i < sizeof(big); i++)
			big[i] = (uint8_t)(i ^ (i >> 8));
		n = warp_stun_channel_data_encode(stream + slen, 200000 - slen, 0x4000, big,
						  sizeof(big), true);
		assert_int_equal(n, 4 + 65536);
		slen += (size_t)n;
		memcpy(expect + elen, big, sizeof(big));
		elen += sizeof(big);
	}
	for (size_t p = 0; p < WARP_ARRAY_SIZE(patterns); p++) {
		size_t nch = 0;

		while (nch < 4 && patterns[p][nch])
			nch++;
		f.dlen = 0;
		f.ndata = 0;
		feed(&f, stream, slen, patterns[p], nch);
		assert_int_equal(f.dlen, elen);
		assert_memory_equal(f.data, expect, elen);
		assert_int_equal(f.ndata, 40 + 8 + 1);
	}
	/* garbage on the stream: framing lost, allocation failed */
	memset(buf, 0xff, 8);
	assert_int_equal(warp_turn_handle_stream(f.t, buf, 8, f.now), -EPROTO);
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_FAILED);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -EPROTO);
	fake_free(&f);
	free(stream);
	free(expect);
}

static void test_sha256(void **state)
{
	/* PASSWORD-ALGORITHMS: MD5 then SHA-256 (each: algorithm, parameter length 0) */
	static const uint8_t algs[] = { 0, 1, 0, 0, 0, 2, 0, 0 };
	static const uint8_t md5_only[] = { 0, 1, 0, 0 };
	struct fake f;
	struct warp_stun_msg m;
	const uint8_t *v;
	size_t len;

	fake_init(&f, WARP_TURN_UDP, AF_INET);
	snprintf(f.nonce, sizeof(f.nonce), "obMatJos2gAAAfresh-nonce");
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m,
		&(struct resp){
			.code = 401, .nonce = f.nonce, .algs = algs, .algs_len = sizeof(algs) });
	f.sha256 = true;
	f.keylen = (size_t)warp_stun_long_term_key("u", "lab", "p", WARP_STUN_PW_SHA256, f.key);
	assert_int_equal(f.keylen, 32);
	assert_int_equal(drain(&f), 1);
	decode_out(&f, 0, &m);
	check_signed(&f, &m);
	assert_int_equal(m.mi_off, 0);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_PASSWORD_ALGORITHM, &v, &len), 0);
	assert_int_equal(len, 4);
	assert_int_equal(warp_get_u16(v), WARP_STUN_PW_SHA256);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_PASSWORD_ALGORITHMS, &v, &len), 0);
	assert_int_equal(len, sizeof(algs));
	assert_memory_equal(v, algs, sizeof(algs));
	respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 });
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_READY);
	assert_true(warp_turn_info(f.t)->sha256);
	/* a stale nonce that drops SHA-256 from the list: a downgrade, refused */
	f.now += 540 * S;
	warp_turn_handle_timeout(f.t, f.now);
	drain(&f);
	decode_out(&f, 0, &m);
	check_signed(&f, &m);
	respond(&f, &m,
		&(struct resp){ .code = 438,
				.nonce = "obMatJos2gAAAother",
				.algs = md5_only,
				.algs_len = sizeof(md5_only) });
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_FAILED);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -EPROTO);
	fake_free(&f);

	/* a nonce without the cookie: classic MESSAGE-INTEGRITY even if algorithms appear */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m,
		&(struct resp){
			.code = 401, .nonce = f.nonce, .algs = algs, .algs_len = sizeof(algs) });
	drain(&f);
	decode_out(&f, 0, &m);
	check_signed(&f, &m);
	assert_int_equal(m.mi256_off, 0);
	assert_null(warp_stun_find(&m, WARP_STUN_ATTR_PASSWORD_ALGORITHM));
	fake_free(&f);
}

static void test_ipv6_family(void **state)
{
	struct fake f;
	struct warp_stun_msg m;
	const uint8_t *v;
	size_t len;

	fake_init(&f, WARP_TURN_UDP, AF_INET6);
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	drain(&f);
	decode_out(&f, 0, &m);
	assert_int_equal(warp_stun_get_bytes(&m, WARP_STUN_ATTR_REQUESTED_ADDRESS_FAMILY, &v, &len),
			 0);
	assert_int_equal(len, 4);
	assert_int_equal(v[0], 0x02);
	respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 });
	assert_int_equal(warp_turn_info(f.t)->relayed.ss_family, AF_INET6);
	fake_free(&f);

	fake_init(&f, WARP_TURN_UDP, AF_INET6);
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 440, .sign = true });
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -EAFNOSUPPORT);
	fake_free(&f);
}

static void test_dealloc(void **state)
{
	struct fake f;
	struct warp_stun_msg m;
	uint32_t lt = 1;

	/* release: Refresh LIFETIME 0, a stale nonce on the way, confirmed */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	allocate_ready(&f, 600);
	assert_int_equal(warp_turn_release(f.t, f.now), 0);
	assert_int_equal(warp_turn_release(f.t, f.now), 0); /* idempotent */
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_RELEASING);
	assert_int_equal(drain(&f), 1);
	decode_out(&f, 0, &m);
	assert_int_equal(m.method, WARP_STUN_REFRESH);
	assert_int_equal(warp_stun_get_u32(&m, WARP_STUN_ATTR_LIFETIME, &lt), 0);
	assert_int_equal(lt, 0);
	check_signed(&f, &m);
	snprintf(f.nonce, sizeof(f.nonce), "nonce-after");
	respond(&f, &m, &(struct resp){ .code = 438, .nonce = f.nonce });
	assert_int_equal(drain(&f), 1);
	decode_out(&f, 0, &m);
	check_signed(&f, &m);
	respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 0 + 0 });
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_CLOSED);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_RELEASED)->ev.err, 0);
	assert_int_equal(count_ev(&f, WARP_TURN_EV_RELEASED), 1);
	assert_int_equal(warp_turn_release(f.t, f.now), 1);
	assert_int_equal(warp_turn_next_deadline(f.t), WARP_TURN_NEVER);
	fake_free(&f);

	/* 437 on the deallocation: already gone, fine */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	allocate_ready(&f, 600);
	warp_turn_release(f.t, f.now);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 437 });
	assert_int_equal(last_ev(&f, WARP_TURN_EV_RELEASED)->ev.err, 0);
	fake_free(&f);

	/* no answer: retransmitted, given up after release_timeout_ms */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	f.cfg.release_timeout_ms = 3000;
	allocate_ready(&f, 600);
	{
		uint64_t t0 = f.now;
		int sends = 0;

		warp_turn_release(f.t, f.now);
		while (warp_turn_state(f.t) == WARP_TURN_RELEASING) {
			sends += drain(&f);
			f.now = warp_turn_next_deadline(f.t);
			warp_turn_handle_timeout(f.t, f.now);
		}
		assert_int_equal(f.now - t0, 3000 * MS);
		assert_int_equal(sends, 3); /* 0, 0.5, 1.5 s */
	}
	assert_int_equal(last_ev(&f, WARP_TURN_EV_RELEASED)->ev.err, -ETIMEDOUT);
	fake_free(&f);

	/* release while the signed Allocate is in flight: deallocated when it succeeds */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	fake_start(&f);
	drain(&f);
	decode_out(&f, 0, &m);
	respond(&f, &m, &(struct resp){ .code = 401, .nonce = f.nonce });
	drain(&f);
	decode_out(&f, 0, &m);
	assert_int_equal(warp_turn_release(f.t, f.now), 0);
	respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 });
	assert_int_equal(count_ev(&f, WARP_TURN_EV_ALLOCATED), 0);
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_RELEASING);
	drain(&f);
	decode_out(&f, 0, &m);
	assert_int_equal(warp_stun_get_u32(&m, WARP_STUN_ATTR_LIFETIME, &lt), 0);
	assert_int_equal(lt, 0);
	respond(&f, &m, &(struct resp){ .sign = true });
	assert_int_equal(last_ev(&f, WARP_TURN_EV_RELEASED)->ev.err, 0);
	fake_free(&f);

	/* before any signed request: nothing to release */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	fake_start(&f);
	assert_int_equal(warp_turn_release(f.t, f.now), 1);
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_CLOSED);
	assert_int_equal(drain(&f), 0);
	fake_free(&f);

	/* release from inside the ALLOCATED callback */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	f.release_in_cb = true;
	allocate_ready(&f, 600);
	assert_int_equal(drain(&f), 1);
	decode_out(&f, 0, &m);
	assert_int_equal(warp_stun_get_u32(&m, WARP_STUN_ATTR_LIFETIME, &lt), 0);
	assert_int_equal(lt, 0);
	fake_free(&f);

	/* over TCP, losing the connection completes a release */
	fake_init(&f, WARP_TURN_TCP, AF_INET);
	allocate_ready(&f, 600);
	warp_turn_release(f.t, f.now);
	warp_turn_transport_lost(f.t, -ECONNRESET);
	assert_int_equal(warp_turn_state(f.t), WARP_TURN_CLOSED);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_RELEASED)->ev.err, 0);
	fake_free(&f);

	/* and fails a live allocation */
	fake_init(&f, WARP_TURN_TCP, AF_INET);
	allocate_ready(&f, 600);
	warp_turn_transport_lost(f.t, -ECONNRESET);
	assert_int_equal(last_ev(&f, WARP_TURN_EV_FAILED)->ev.err, -ECONNRESET);
	fake_free(&f);
}

static void test_peer_churn(void **state)
{
	struct fake f;
	struct sockaddr_storage p;
	char s[32];
	int n;

	/* many peers come and go: retired entries are swept, nothing leaks */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	allocate_ready(&f, 600);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 20; i++) {
			snprintf(s, sizeof(s), "198.51.100.%d:%d", i + 1, 7000 + round);
			warp_ep_parse(s, 0, &p);
			assert_int_equal(
				warp_turn_add_peer(f.t, (struct sockaddr *)&p, true, f.now), 0);
		}
		n = drain(&f);
		for (int k = 0; k < n; k++) {
			struct warp_stun_msg m;

			decode_out(&f, k, &m);
			respond(&f, &m, &(struct resp){ .sign = true, .lifetime = 600 });
		}
		for (int i = 0; i < 20; i++) {
			snprintf(s, sizeof(s), "198.51.100.%d:%d", i + 1, 7000 + round);
			warp_ep_parse(s, 0, &p);
			assert_int_equal(warp_turn_remove_peer(f.t, (struct sockaddr *)&p, f.now),
					 0);
		}
	}
	assert_int_equal(count_ev(&f, WARP_TURN_EV_CHANNEL), 60);
	f.now += 20 * 60 * S;
	warp_turn_handle_timeout(f.t, f.now);
	fake_free(&f);

	/* a peer removed while its ChannelBind is unanswered may be bound on the server: a
	 * re-added peer asks for the same number, never a second one */
	fake_init(&f, WARP_TURN_UDP, AF_INET);
	allocate_ready(&f, 600);
	warp_ep_parse("198.51.100.1:7000", 0, &p);
	for (int round = 0; round < 2; round++) {
		struct warp_stun_msg m;
		uint16_t ch;

		assert_int_equal(warp_turn_add_peer(f.t, (struct sockaddr *)&p, true, f.now), 0);
		drain(&f);
		find_out(&f, WARP_STUN_CHANNEL_BIND, &m);
		warp_stun_get_channel(&m, &ch);
		assert_int_equal(ch, 0x4000);
		assert_int_equal(warp_turn_remove_peer(f.t, (struct sockaddr *)&p, f.now), 0);
		f.now += 60 * S;
		warp_turn_handle_timeout(f.t, f.now);
	}
	fake_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allocate_dance),
		cmocka_unit_test(test_stale_nonce),
		cmocka_unit_test(test_wrong_password),
		cmocka_unit_test(test_error_mapping),
		cmocka_unit_test(test_forged_and_malformed),
		cmocka_unit_test(test_retransmission),
		cmocka_unit_test(test_refresh_timing),
		cmocka_unit_test(test_permission_channel),
		cmocka_unit_test(test_data_in),
		cmocka_unit_test(test_tcp_chunking),
		cmocka_unit_test(test_sha256),
		cmocka_unit_test(test_ipv6_family),
		cmocka_unit_test(test_dealloc),
		cmocka_unit_test(test_peer_churn),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
