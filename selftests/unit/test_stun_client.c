// SPDX-License-Identifier: MIT
/*
 * STUN client transactions: the sans-IO core driven with a virtual clock (retransmission
 * schedule, matching, integrity, hooks, kernel replies), then the UDP and TCP transports on a
 * real loop against small in-test servers on 127.0.0.1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/loop.h>

#include "nat/sockaddr.h"
#include "nat/stun.h"
#include "nat/stun_client.h"
#include "nat/stun_io.h"

#define MS 1000000ull

struct rec {
	int calls;
	struct warp_stun_result res;
	int error_code;
	bool had_msg;
};

static void rec_cb(const struct warp_stun_result *res, void *user)
{
	struct rec *r = user;

	r->calls++;
	r->res = *res;
	r->res.msg = NULL;
	r->res.from = NULL;
	r->had_msg = res->msg != NULL;
}

static struct sockaddr_storage server, other, local;

static int setup(void **state)
{
	nat_sa_parse("192.0.2.1:3478", 0, &server);
	nat_sa_parse("192.0.2.2:3479", 0, &other);
	nat_sa_parse("203.0.113.7:40000", 0, &local);
	return 0;
}

static struct warp_stun_req binding(struct rec *r)
{
	struct warp_stun_req req = {
		.dest = (struct sockaddr *)&server,
		.cb = rec_cb,
		.user = r,
	};
	return req;
}

/* A success response to the request in tx, from `from`, with an optional key. */
static int respond(uint8_t *out, size_t cap, const struct warp_stun_tx *tx, int cls, int code,
		   const char *key, bool unknown_attr)
{
	struct warp_stun_builder b;
	struct warp_stun_msg m;

	assert_int_equal(warp_stun_decode(&m, tx->data, tx->len), 0);
	warp_stun_build_init(&b, out, cap, m.method, cls, m.tid);
	if (cls == WARP_STUN_SUCCESS)
		warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS,
				   (struct sockaddr *)&local);
	else
		warp_stun_add_error(&b, code, "err");
	if (unknown_attr)
		warp_stun_add(&b, 0x0002, "abcd", 4);
	if (key)
		warp_stun_add_mi(&b, key, strlen(key));
	warp_stun_add_fingerprint(&b);
	return warp_stun_build_end(&b);
}

static void test_schedule_default(void **state)
{
	struct warp_stun_client *c = warp_stun_client_new(NULL);
	struct rec r = { 0 };
	struct warp_stun_req req = binding(&r);
	struct warp_stun_tx tx;
	static const uint64_t at[] = { 0, 500, 1500, 3500, 7500, 15500, 31500 };
	uint64_t id;

	assert_non_null(c);
	assert_int_equal(warp_stun_client_start(c, &req, 0, &id), 0);
	assert_int_equal(warp_stun_client_pending(c), 1);
	for (size_t i = 0; i < 7; i++) {
		uint64_t t = at[i] * MS;

		if (t)
			assert_false(warp_stun_client_poll_transmit(c, t - 1, &tx));
		assert_int_equal(warp_stun_client_next_deadline(c), t);
		warp_stun_client_handle_timeout(c, t);
		assert_true(warp_stun_client_poll_transmit(c, t, &tx));
		assert_int_equal(tx.attempt, i + 1);
		assert_int_equal(tx.id, id);
		assert_false(warp_stun_client_poll_transmit(c, t, &tx));
	}
	/* Rm * RTO after the last transmission: 31.5 s + 16 * 0.5 s = 39.5 s */
	assert_int_equal(warp_stun_client_next_deadline(c), 39500 * MS);
	warp_stun_client_handle_timeout(c, 39500 * MS - 1);
	assert_int_equal(r.calls, 0);
	warp_stun_client_handle_timeout(c, 39500 * MS);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.res.status, -ETIMEDOUT);
	assert_int_equal(r.res.transmissions, 7);
	assert_int_equal(warp_stun_client_pending(c), 0);
	assert_int_equal(warp_stun_client_next_deadline(c), WARP_STUN_NEVER);
	warp_stun_client_free(c);
}

static void test_schedule_custom(void **state)
{
	struct warp_stun_client_cfg cfg = { .rto_ms = 100, .rto_max_ms = 300, .rc = 5, .rm = 4 };
	struct warp_stun_client *c = warp_stun_client_new(&cfg);
	struct rec r = { 0 }, r2 = { 0 };
	struct warp_stun_req req = binding(&r);
	struct warp_stun_tx tx;
	/* intervals 100, 200, 300 (capped), 300; then 4 * 100 */
	static const uint64_t at[] = { 0, 100, 300, 600, 900 };

	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	for (size_t i = 0; i < 5; i++) {
		warp_stun_client_handle_timeout(c, at[i] * MS);
		assert_true(warp_stun_client_poll_transmit(c, at[i] * MS, &tx));
	}
	assert_int_equal(warp_stun_client_next_deadline(c), 1300 * MS);
	warp_stun_client_handle_timeout(c, 1300 * MS);
	assert_int_equal(r.res.status, -ETIMEDOUT);
	assert_int_equal(r.res.transmissions, 5);

	/* per-request overrides and a hard cap */
	req = binding(&r2);
	req.rto_ms = 1000;
	req.rc = 2;
	req.timeout_ms = 1500;
	assert_int_equal(warp_stun_client_start(c, &req, 10 * MS, NULL), 0);
	assert_true(warp_stun_client_poll_transmit(c, 10 * MS, &tx));
	assert_true(warp_stun_client_poll_transmit(c, 1010 * MS, &tx));
	assert_int_equal(warp_stun_client_next_deadline(c), 1510 * MS);
	warp_stun_client_handle_timeout(c, 1510 * MS);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r2.res.status, -ETIMEDOUT);
	warp_stun_client_free(c);
}

static void test_schedule_tcp(void **state)
{
	struct warp_stun_client *c = warp_stun_client_new(NULL);
	struct rec r = { 0 };
	struct warp_stun_req req = binding(&r);
	struct warp_stun_tx tx;

	req.transport = WARP_STUN_TCP;
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	assert_true(warp_stun_client_poll_transmit(c, 0, &tx));
	assert_int_equal(tx.transport, WARP_STUN_TCP);
	assert_int_equal(warp_stun_client_next_deadline(c), 39500 * MS);
	assert_false(warp_stun_client_poll_transmit(c, 39000 * MS, &tx));
	warp_stun_client_handle_timeout(c, 39500 * MS);
	assert_int_equal(r.res.status, -ETIMEDOUT);
	assert_int_equal(r.res.transmissions, 1);
	warp_stun_client_free(c);
}

static void test_matching(void **state)
{
	struct warp_stun_client *c = warp_stun_client_new(NULL);
	struct rec r = { 0 };
	struct warp_stun_req req = binding(&r);
	struct warp_stun_tx tx;
	uint8_t resp[256];
	int n;

	req.sock = 3;
	req.software = "warpgate";
	req.fingerprint = true;
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	assert_true(warp_stun_client_poll_transmit(c, 0, &tx));
	assert_int_equal(tx.sock, 3);
	assert_true(warp_stun_client_poll_transmit(c, 500 * MS, &tx)); /* retransmission */
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_SUCCESS, 0, NULL, false);
	assert_true(n > 0);
	/* wrong source, wrong socket: ignored */
	assert_int_equal(warp_stun_client_handle_input(c, 3, resp, (size_t)n,
						       (struct sockaddr *)&other, 600 * MS),
			 0);
	assert_int_equal(warp_stun_client_handle_input(c, 2, resp, (size_t)n,
						       (struct sockaddr *)&server, 600 * MS),
			 0);
	/* not STUN */
	assert_true(warp_stun_client_handle_input(c, 3, "hello", 5, (struct sockaddr *)&server,
						  600 * MS) < 0);
	/* a request with the same transaction ID (hairpin) is not a response */
	assert_int_equal(warp_stun_client_handle_input(c, 3, tx.data, tx.len,
						       (struct sockaddr *)&server, 600 * MS),
			 0);
	assert_int_equal(r.calls, 0);
	assert_int_equal(warp_stun_client_handle_input(c, 3, resp, (size_t)n,
						       (struct sockaddr *)&server, 620 * MS),
			 1);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.res.status, 0);
	assert_true(r.had_msg);
	assert_int_equal(r.res.sock, 3);
	assert_true(nat_sa_equal((struct sockaddr *)&r.res.mapped, (struct sockaddr *)&local));
	assert_int_equal(r.res.rtt_ns, 120 * MS); /* from the last transmission */
	assert_int_equal(r.res.first_tx_ns, 0);
	assert_int_equal(r.res.transmissions, 2);
	assert_false(r.res.kernel_ts);
	/* a duplicate is no longer ours */
	assert_int_equal(warp_stun_client_handle_input(c, 3, resp, (size_t)n,
						       (struct sockaddr *)&server, 630 * MS),
			 0);
	assert_int_equal(r.calls, 1);
	warp_stun_client_free(c);
}

static void test_expect_and_any_source(void **state)
{
	struct warp_stun_client *c = warp_stun_client_new(NULL);
	struct rec r1 = { 0 }, r2 = { 0 };
	struct warp_stun_req req = binding(&r1);
	struct warp_stun_tx tx1, tx2;
	uint8_t resp[256];
	int n;

	req.expect_from = (struct sockaddr *)&other;
	req.change = WARP_STUN_CHANGE_IP | WARP_STUN_CHANGE_PORT;
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	req = binding(&r2);
	req.any_source = true;
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	assert_true(warp_stun_client_poll_transmit(c, 0, &tx1));
	assert_true(warp_stun_client_poll_transmit(c, 0, &tx2));
	{
		struct warp_stun_msg m;
		uint32_t flags;

		assert_int_equal(warp_stun_decode(&m, tx1.data, tx1.len), 0);
		assert_int_equal(warp_stun_get_u32(&m, WARP_STUN_ATTR_CHANGE_REQUEST, &flags), 0);
		assert_int_equal(flags, 6);
	}
	n = respond(resp, sizeof(resp), &tx1, WARP_STUN_SUCCESS, 0, NULL, false);
	assert_int_equal(warp_stun_client_handle_input(c, 0, resp, (size_t)n,
						       (struct sockaddr *)&server, 10 * MS),
			 0);
	assert_int_equal(warp_stun_client_handle_input(c, 0, resp, (size_t)n,
						       (struct sockaddr *)&other, 10 * MS),
			 1);
	assert_int_equal(r1.calls, 1);
	n = respond(resp, sizeof(resp), &tx2, WARP_STUN_SUCCESS, 0, NULL, false);
	assert_int_equal(warp_stun_client_handle_input(c, 0, resp, (size_t)n,
						       (struct sockaddr *)&local, 10 * MS),
			 1);
	assert_int_equal(r2.calls, 1);
	warp_stun_client_free(c);
}

static void test_integrity_and_errors(void **state)
{
	struct warp_stun_client *c = warp_stun_client_new(NULL);
	struct rec r = { 0 };
	struct warp_stun_req req = binding(&r);
	struct warp_stun_tx tx;
	uint8_t resp[256];
	int n;

	req.username = "alice";
	req.key = "secret";
	req.keylen = 6;
	req.mi256 = true;
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	assert_true(warp_stun_client_poll_transmit(c, 0, &tx));
	{
		struct warp_stun_msg m;

		assert_int_equal(warp_stun_decode(&m, tx.data, tx.len), 0);
		assert_int_equal(warp_stun_check_mi(&m, "secret", 6), 0);
		assert_int_equal(warp_stun_check_mi256(&m, "secret", 6), 0);
	}
	/* unsigned success and wrongly signed success are dropped */
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_SUCCESS, 0, NULL, false);
	assert_int_equal(
		warp_stun_client_handle_input(c, 0, resp, (size_t)n, (struct sockaddr *)&server, 1),
		0);
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_SUCCESS, 0, "wrong", false);
	assert_int_equal(
		warp_stun_client_handle_input(c, 0, resp, (size_t)n, (struct sockaddr *)&server, 1),
		0);
	/* unsigned 438 is accepted (RFC 8489 allows 400, 401 and 438 without integrity) */
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_ERROR, 438, NULL, false);
	assert_int_equal(
		warp_stun_client_handle_input(c, 0, resp, (size_t)n, (struct sockaddr *)&server, 1),
		1);
	assert_int_equal(r.res.status, 0);
	assert_int_equal(r.res.error_code, 438);
	assert_int_equal(r.res.mapped.ss_family, AF_UNSPEC);

	/* signed success accepted; unsigned 420 with a key is dropped */
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	assert_true(warp_stun_client_poll_transmit(c, 0, &tx));
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_ERROR, 420, NULL, false);
	assert_int_equal(
		warp_stun_client_handle_input(c, 0, resp, (size_t)n, (struct sockaddr *)&server, 1),
		0);
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_SUCCESS, 0, "secret", false);
	assert_int_equal(
		warp_stun_client_handle_input(c, 0, resp, (size_t)n, (struct sockaddr *)&server, 1),
		1);
	assert_int_equal(r.calls, 2);
	assert_int_equal(r.res.status, 0);
	assert_int_equal(r.res.error_code, 0);

	/* no key: an error response and a success with unknown comprehension-required attrs */
	req = binding(&r);
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	assert_true(warp_stun_client_poll_transmit(c, 0, &tx));
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_ERROR, 420, NULL, false);
	assert_int_equal(
		warp_stun_client_handle_input(c, 0, resp, (size_t)n, (struct sockaddr *)&server, 1),
		1);
	assert_int_equal(r.res.error_code, 420);
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	assert_true(warp_stun_client_poll_transmit(c, 0, &tx));
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_SUCCESS, 0, NULL, true);
	assert_int_equal(
		warp_stun_client_handle_input(c, 0, resp, (size_t)n, (struct sockaddr *)&server, 1),
		1);
	assert_int_equal(r.res.status, -WARP_EMALFORMED);
	warp_stun_client_free(c);
}

struct hook_log {
	int adds, removes;
	uint8_t last_add[12], last_remove[12];
	int last_sock;
};

static void hook_add(void *user, const uint8_t tid[12], int sock, const struct sockaddr *dest)
{
	struct hook_log *h = user;

	h->adds++;
	memcpy(h->last_add, tid, 12);
	h->last_sock = sock;
	assert_true(nat_sa_equal(dest, (struct sockaddr *)&server));
}

static void hook_remove(void *user, const uint8_t tid[12])
{
	struct hook_log *h = user;

	h->removes++;
	memcpy(h->last_remove, tid, 12);
}

static void test_hooks_cancel_kernel(void **state)
{
	struct warp_stun_client *c = warp_stun_client_new(NULL);
	struct hook_log h = { 0 };
	struct warp_stun_client_hooks hooks = { hook_add, hook_remove, &h };
	struct rec r = { 0 };
	struct warp_stun_req req = binding(&r);
	struct warp_stun_tx tx;
	uint8_t resp[256];
	uint64_t id;
	int n;

	warp_stun_client_set_hooks(c, &hooks);
	req.sock = 7;
	assert_int_equal(warp_stun_client_start(c, &req, 0, &id), 0);
	assert_int_equal(h.adds, 1);
	assert_int_equal(h.last_sock, 7);
	assert_memory_equal(warp_stun_client_tid(c, id), h.last_add, 12);
	assert_int_equal(warp_stun_client_cancel(c, id), 0);
	assert_int_equal(h.removes, 1);
	assert_memory_equal(h.last_remove, h.last_add, 12);
	assert_int_equal(warp_stun_client_cancel(c, id), -ENOENT);
	assert_null(warp_stun_client_tid(c, id));
	assert_int_equal(r.calls, 0);

	/* a kernel-matched reply: RTT from the kernel timestamp */
	assert_int_equal(warp_stun_client_start(c, &req, 1000 * MS, &id), 0);
	assert_true(warp_stun_client_poll_transmit(c, 1000 * MS, &tx));
	assert_memory_equal(tx.tid, h.last_add, 12);
	n = respond(resp, sizeof(resp), &tx, WARP_STUN_SUCCESS, 0, NULL, false);
	assert_int_equal(warp_stun_client_kernel_reply(c, 7, resp, (size_t)n,
						       (struct sockaddr *)&server, 1003 * MS),
			 1);
	assert_int_equal(r.res.rtt_ns, 3 * MS);
	assert_true(r.res.kernel_ts);
	assert_int_equal(h.removes, 2);

	/* fail_all completes everything through the callbacks */
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), 0);
	warp_stun_client_fail_all(c, -ECANCELED);
	assert_int_equal(r.calls, 3);
	assert_int_equal(r.res.status, -ECANCELED);
	assert_int_equal(h.removes, 4);
	warp_stun_client_free(c);
}

static void test_tids_and_order(void **state)
{
	struct warp_stun_client *c = warp_stun_client_new(NULL);
	struct rec r = { 0 };
	struct warp_stun_req req = binding(&r);
	struct warp_stun_tx tx;
	enum { N = 500 };
	static uint8_t tids[N][12];
	uint64_t ids[N];

	for (int i = 0; i < N; i++)
		assert_int_equal(warp_stun_client_start(c, &req, 0, &ids[i]), 0);
	/* first transmissions leave in start order */
	for (int i = 0; i < N; i++) {
		assert_true(warp_stun_client_poll_transmit(c, 0, &tx));
		assert_int_equal(tx.id, ids[i]);
		memcpy(tids[i], tx.tid, 12);
	}
	for (int i = 0; i < N; i++)
		for (int j = i + 1; j < N; j++)
			assert_memory_not_equal(tids[i], tids[j], 12);
	/* a later start is sent before the older ones' retransmissions that are due later */
	assert_int_equal(warp_stun_client_start(c, &req, 100 * MS, &ids[0]), 0);
	assert_true(warp_stun_client_poll_transmit(c, 600 * MS, &tx));
	assert_int_equal(tx.id, ids[0]);
	assert_true(warp_stun_client_poll_transmit(c, 600 * MS, &tx));
	assert_int_equal(tx.attempt, 2);
	warp_stun_client_free(c);

	/* bad arguments */
	c = warp_stun_client_new(NULL);
	req.dest = NULL;
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), -EINVAL);
	req = binding(&r);
	req.key = "k";
	req.keylen = 0;
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), -EINVAL);
	req = binding(&r);
	req.cb = NULL;
	assert_int_equal(warp_stun_client_start(c, &req, 0, NULL), -EINVAL);
	warp_stun_client_free(c);
}

/* ---- transports on a real loop ---- */

struct echo_server {
	int fd;
	int answered;
	bool drop_first;
};

/* Answers Binding requests with XOR-MAPPED-ADDRESS = the request's source. */
static int answer(const uint8_t *req, size_t len, const struct sockaddr *from, uint8_t *out,
		  size_t cap)
{
	struct warp_stun_msg m;
	struct warp_stun_builder b;

	if (warp_stun_decode(&m, req, len) || m.cls != WARP_STUN_REQUEST)
		return -1;
	warp_stun_build_init(&b, out, cap, m.method, WARP_STUN_SUCCESS, m.tid);
	warp_stun_add_addr(&b, WARP_STUN_ATTR_XOR_MAPPED_ADDRESS, from);
	warp_stun_add_fingerprint(&b);
	return warp_stun_build_end(&b);
}

static void udp_server_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct echo_server *s = user;
	uint8_t buf[1500], out[256];
	struct sockaddr_storage from;
	socklen_t fl = sizeof(from);
	ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
	int m;

	if (n <= 0)
		return;
	if (s->drop_first) {
		s->drop_first = false;
		return;
	}
	m = answer(buf, (size_t)n, (struct sockaddr *)&from, out, sizeof(out));
	if (m > 0 && sendto(fd, out, (size_t)m, 0, (struct sockaddr *)&from, fl) == m)
		s->answered++;
}

static bool rec_done(void *user)
{
	return ((struct rec *)user)->calls > 0;
}

struct rx_log {
	int n;
};

static void rx_cb(struct warp_stun_udp *t, int sock, const uint8_t *buf, size_t len,
		  const struct sockaddr *from, uint64_t rx_ns, void *user)
{
	((struct rx_log *)user)->n++;
}

static void test_udp_transport(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_stun_client_cfg cfg = { .rto_ms = 50 };
	struct warp_stun_udp *t = warp_stun_udp_new(loop, &cfg);
	struct echo_server srv = { .drop_first = true };
	struct sockaddr_storage any, saddr, laddr;
	socklen_t sl = sizeof(saddr);
	struct rec r = { 0 };
	struct rx_log rx = { 0 };
	struct warp_stun_req req = { .cb = rec_cb, .user = &r };
	int sock;

	assert_non_null(t);
	nat_sa_parse("127.0.0.1:0", 0, &any);
	srv.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	assert_int_equal(bind(srv.fd, (struct sockaddr *)&any, sizeof(struct sockaddr_in)), 0);
	getsockname(srv.fd, (struct sockaddr *)&saddr, &sl);
	assert_int_equal(warp_loop_add_fd(loop, srv.fd, WARP_EV_READ, udp_server_io, &srv), 0);

	sock = warp_stun_udp_open(t, (struct sockaddr *)&any);
	assert_true(sock >= 0);
	assert_int_equal(warp_stun_udp_local(t, sock, &laddr), 0);
	warp_stun_udp_set_rx_cb(t, rx_cb, &rx);
	req.sock = sock;
	req.dest = (struct sockaddr *)&saddr;
	assert_int_equal(warp_stun_udp_request(t, &req, NULL), 0);
	assert_int_equal(warp_loop_run_until(loop, rec_done, &r, 3000), 0);
	assert_int_equal(r.res.status, 0);
	assert_int_equal(r.res.transmissions, 2); /* the first was dropped */
	assert_true(nat_sa_equal((struct sockaddr *)&r.res.mapped, (struct sockaddr *)&laddr));
	assert_true(r.res.rtt_ns < 1000 * MS);

	/* non-STUN traffic on the socket reaches the rx callback */
	assert_int_equal(
		sendto(srv.fd, "xyz", 3, 0, (struct sockaddr *)&laddr, sizeof(struct sockaddr_in)),
		3);
	for (int i = 0; i < 50 && !rx.n; i++)
		warp_loop_run_once(loop, 20);
	assert_int_equal(rx.n, 1);

	/* a request nobody answers times out on the loop */
	r.calls = 0;
	close(srv.fd);
	warp_loop_del_fd(loop, srv.fd);
	req.rc = 2;
	req.rm = 2;
	assert_int_equal(warp_stun_udp_request(t, &req, NULL), 0);
	assert_int_equal(warp_loop_run_until(loop, rec_done, &r, 3000), 0);
	assert_int_equal(r.res.status, -ETIMEDOUT);
	assert_int_equal(warp_stun_udp_request(t, &(struct warp_stun_req){ .sock = 99 }, NULL),
			 -EINVAL);
	warp_stun_udp_free(t);
	warp_loop_free(loop);
}

struct tcp_server {
	int lfd, cfd;
	uint8_t buf[512];
	size_t len;
	bool close_instead;
};

static void tcp_conn_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct tcp_server *s = user;
	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);
	ssize_t n = recv(fd, s->buf + s->len, sizeof(s->buf) - s->len, MSG_DONTWAIT);
	int flen, m;
	uint8_t out[256];

	if (n <= 0)
		return;
	s->len += (size_t)n;
	flen = warp_stun_frame_len(s->buf, s->len);
	if (flen <= 0 || (size_t)flen > s->len)
		return;
	warp_loop_del_fd(loop, fd);
	if (s->close_instead) {
		close(fd);
		return;
	}
	getpeername(fd, (struct sockaddr *)&peer, &pl);
	m = answer(s->buf, (size_t)flen, (struct sockaddr *)&peer, out, sizeof(out));
	/* send in two pieces to exercise stream reassembly */
	assert_int_equal(send(fd, out, 7, 0), 7);
	usleep(10000);
	assert_int_equal(send(fd, out + 7, (size_t)m - 7, 0), m - 7);
	close(fd);
}

static void tcp_accept_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct tcp_server *s = user;

	s->cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK);
	if (s->cfd >= 0) {
		s->len = 0;
		warp_loop_add_fd(loop, s->cfd, WARP_EV_READ, tcp_conn_io, s);
	}
}

static void test_tcp_transport(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct tcp_server srv = { 0 };
	struct sockaddr_storage any, saddr;
	socklen_t sl = sizeof(saddr);
	struct rec r = { 0 };
	struct warp_stun_req req = { .cb = rec_cb, .user = &r, .software = "t" };
	struct warp_stun_client_cfg cfg = { .ti_ms = 2000 };
	int one = 1;

	nat_sa_parse("127.0.0.1:0", 0, &any);
	srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(srv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(srv.lfd, (struct sockaddr *)&any, sizeof(struct sockaddr_in)), 0);
	assert_int_equal(listen(srv.lfd, 4), 0);
	getsockname(srv.lfd, (struct sockaddr *)&saddr, &sl);
	warp_loop_add_fd(loop, srv.lfd, WARP_EV_READ, tcp_accept_io, &srv);

	req.dest = (struct sockaddr *)&saddr;
	assert_non_null(warp_stun_tcp_request(loop, &cfg, NULL, &req));
	assert_int_equal(warp_loop_run_until(loop, rec_done, &r, 3000), 0);
	assert_int_equal(r.res.status, 0);
	assert_int_equal(r.res.mapped.ss_family, AF_INET);
	assert_true(nat_sa_same_ip((struct sockaddr *)&r.res.mapped, (struct sockaddr *)&saddr));

	/* the server closes without answering */
	r.calls = 0;
	srv.close_instead = true;
	assert_non_null(warp_stun_tcp_request(loop, &cfg, NULL, &req));
	assert_int_equal(warp_loop_run_until(loop, rec_done, &r, 3000), 0);
	assert_int_equal(r.res.status, -WARP_ECLOSED);

	/* nobody listening */
	r.calls = 0;
	warp_loop_del_fd(loop, srv.lfd);
	close(srv.lfd);
	assert_non_null(warp_stun_tcp_request(loop, &cfg, NULL, &req));
	assert_int_equal(warp_loop_run_until(loop, rec_done, &r, 3000), 0);
	assert_int_equal(r.res.status, -ECONNREFUSED);

	/* cancelled before anything happens: no callback */
	r.calls = 0;
	warp_stun_tcp_cancel(warp_stun_tcp_request(loop, &cfg, NULL, &req));
	for (int i = 0; i < 5; i++)
		warp_loop_run_once(loop, 10);
	assert_int_equal(r.calls, 0);
	/* drain deferred frees */
	warp_loop_run_once(loop, 0);
	warp_loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schedule_default),
		cmocka_unit_test(test_schedule_custom),
		cmocka_unit_test(test_schedule_tcp),
		cmocka_unit_test(test_matching),
		cmocka_unit_test(test_expect_and_any_source),
		cmocka_unit_test(test_integrity_and_errors),
		cmocka_unit_test(test_hooks_cancel_kernel),
		cmocka_unit_test(test_tids_and_order),
		cmocka_unit_test(test_udp_transport),
		cmocka_unit_test(test_tcp_transport),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
