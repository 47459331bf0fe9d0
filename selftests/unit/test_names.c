// SPDX-License-Identifier: MIT
/*
 * Nickname client side: name rules and TLDs, the record/request/reply codec, batch reply
 * signatures, the sans-IO client core (retries, several servers, racing, forged replies) and
 * the local-link resolver and responder over loopback (unicast stands in for the group).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>
#include <warpgate/loop.h>
#include <warpgate/name.h>

#include "core/util.h"
#include "name/cc.h"
#include "name/proto.h"
#include "name/sig.h"

static struct warp_identity *key, *server_key;
static struct wn_signer server;

static int setup(void **state)
{
	assert_int_equal(warp_crypto_init(), 0);
	key = warp_identity_generate();
	server_key = warp_identity_generate();
	wn_signer_init(&server, server_key);
	return 0;
}

static int teardown(void **state)
{
	wn_signer_wipe(&server);
	warp_identity_free(key);
	warp_identity_free(server_key);
	return 0;
}

static void test_canonical(void **state)
{
	char out[WARP_NAME_FQ_MAX + 1];

	assert_int_equal(warp_name_canonical("alice", NULL, out), 0);
	assert_string_equal(out, "alice.p2p");
	assert_int_equal(warp_name_canonical("Alice.P2P.", NULL, out), 0);
	assert_string_equal(out, "alice.p2p");
	assert_int_equal(warp_name_canonical("bob", "node", out), 0);
	assert_string_equal(out, "bob.node");
	assert_int_equal(warp_name_canonical("a-b.c9.p2p", NULL, out), 0);
	assert_int_equal(warp_name_canonical("", NULL, out), -WARP_ENAME);
	assert_int_equal(warp_name_canonical("-alice", NULL, out), -WARP_ENAME);
	assert_int_equal(warp_name_canonical("alice-", NULL, out), -WARP_ENAME);
	assert_int_equal(warp_name_canonical("al ice", NULL, out), -WARP_ENAME);
	assert_int_equal(warp_name_canonical("al_ice", NULL, out), -WARP_ENAME);
	assert_int_equal(warp_name_canonical("a..p2p", NULL, out), -WARP_ENAME);
	assert_int_equal(warp_name_canonical("caf\xc3\xa9", NULL, out), -WARP_ENAME);
	/* 59 + ".p2p" = 63 fits, 60 does not */
	memset(out, 'a', 59);
	out[59] = '\0';
	{
		char in[64], res[WARP_NAME_FQ_MAX + 1];

		memcpy(in, out, 60);
		assert_int_equal(warp_name_canonical(in, NULL, res), 0);
		assert_int_equal(strlen(res), 63);
		in[59] = 'a';
		in[60] = '\0';
		assert_int_equal(warp_name_canonical(in, NULL, res), -WARP_ENAME);
	}
	assert_string_equal(wn_name_tld("x.y.p2p"), "p2p");
}

static void test_record_sign_verify(void **state)
{
	struct wn_record rec, back;
	uint8_t buf[WN_MAX_PACKET];
	struct warp_wr w = warp_wr_init(buf, sizeof(buf));
	struct warp_rd r;
	struct wn_signer s;

	assert_int_equal(wn_record_make(&rec, key, WN_REC_LIVE, "alice.p2p", "addr", 4, 1234), 0);
	assert_int_equal(wn_record_verify(&rec), 0);
	wn_record_encode(&w, &rec);
	r = warp_rd_init(buf, w.off);
	assert_int_equal(wn_record_decode(&r, &back), 0);
	assert_int_equal(wn_record_verify(&back), 0);
	/* every signed field matters */
	back.updated++;
	assert_int_equal(wn_record_verify(&back), -WARP_EAUTH);
	back = rec;
	back.value[0] ^= 1;
	assert_int_equal(wn_record_verify(&back), -WARP_EAUTH);
	back = rec;
	back.kind = WN_REC_TOMB;
	back.value_len = 0;
	assert_int_equal(wn_record_verify(&back), -WARP_EAUTH);
	back = rec;
	memcpy(back.name, "alicf.p2p", 9);
	assert_int_equal(wn_record_verify(&back), -WARP_EAUTH);
	/* the fast signer (when present) and OpenSSL agree on the format */
	wn_signer_init(&s, key);
	assert_int_equal(wn_record_sign_with(&back, &s), 0);
	assert_int_equal(wn_record_verify(&back), 0);
	{
		uint8_t msg[WN_MAX_PACKET];
		int len = wn_record_signed_msg(&back, msg, sizeof(msg));

		assert_int_equal(warp_verify(rec.owner, msg, (size_t)len, back.sig), 0);
	}
	wn_signer_wipe(&s);
	/* tombstones carry no value */
	assert_int_equal(wn_record_make(&rec, key, WN_REC_TOMB, "alice.p2p", "x", 1, 1), -EMSGSIZE);
	assert_int_equal(wn_record_make(&rec, key, WN_REC_LIVE, "Alice.p2p", "x", 1, 1),
			 -WARP_ENAME);
}

static void test_request_codec(void **state)
{
	struct wn_request req = { 0 }, back;
	uint8_t buf[WN_MAX_PACKET], st;
	int n;

	req.type = WN_T_GET;
	req.id = 0x1122334455667788ull;
	strcpy(req.name, "alice.p2p");
	n = wn_request_encode(&req, buf, sizeof(buf), 0);
	assert_int_equal(n, WN_MIN_REQUEST);
	assert_int_equal(wn_request_decode(buf, (size_t)n, &back, &st), 0);
	assert_int_equal(back.id, req.id);
	assert_string_equal(back.name, "alice.p2p");
	n = wn_request_encode(&req, buf, sizeof(buf), 1000);
	assert_int_equal(n, 1000);
	assert_int_equal(wn_request_decode(buf, (size_t)n, &back, &st), 0);
	assert_int_equal(wn_request_decode(buf, (size_t)n - 1, &back, &st), -WARP_ETRUNCATED);
	assert_int_equal(st, WN_MALFORMED);
	buf[2] = 2;
	assert_int_equal(wn_request_decode(buf, (size_t)n, &back, &st), -WARP_EVERSION);
	assert_int_equal(st, WN_BAD_VERSION);
	req.type = WN_T_PUT;
	req.bump = WARP_NAME_NO_BUMP;
	assert_int_equal(wn_record_make(&req.rec, key, WN_REC_LIVE, "alice.p2p", "v", 1, 5), 0);
	n = wn_request_encode(&req, buf, sizeof(buf), 0);
	assert_int_equal(wn_request_decode(buf, (size_t)n, &back, &st), 0);
	assert_int_equal(back.bump, WARP_NAME_NO_BUMP);
	assert_int_equal(back.rec.updated, 5);
	assert_string_equal(back.name, "alice.p2p");
	/* a PUT must carry a live record, a DEL a tombstone */
	buf[3] = WN_T_DEL;
	assert_int_equal(wn_request_decode(buf, (size_t)n, &back, &st), -WARP_EMALFORMED);
}

static int make_reply(uint8_t *buf, size_t cap, uint64_t id, uint8_t type, uint8_t status,
		      const struct wn_record *rec)
{
	struct wn_reply rep = { 0 };
	uint8_t *bufs[1] = { buf };
	size_t lens[1], caps[1] = { cap };
	int n;

	rep.type = WN_T_REPLY | type;
	rep.id = id;
	rep.status = status;
	if (rec) {
		rep.flags = WN_RF_RECORD;
		rep.rec = *rec;
	}
	n = wn_reply_encode_body(&rep, buf, cap);
	assert_true(n > 0);
	lens[0] = (size_t)n;
	assert_int_equal(wn_auth_batch(&server, bufs, lens, caps, 1), 0);
	return (int)lens[0];
}

static void test_batch_auth(void **state)
{
	uint8_t bufs_mem[5][WN_MAX_PACKET];
	uint8_t *bufs[5];
	size_t lens[5], caps[5];
	struct wn_reply rep;
	struct wn_auth auth;
	size_t body;

	for (int i = 0; i < 5; i++) {
		struct wn_reply r = { .type = WN_T_REPLY | WN_T_GET, .id = (uint64_t)i };

		bufs[i] = bufs_mem[i];
		caps[i] = WN_MAX_PACKET;
		lens[i] = (size_t)wn_reply_encode_body(&r, bufs[i], caps[i]);
	}
	assert_int_equal(wn_auth_batch(&server, bufs, lens, caps, 5), 0);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(wn_reply_decode(bufs[i], lens[i], &rep, &body, &auth), 0);
		assert_int_equal(auth.depth, 3);
		assert_int_equal(auth.index, i);
		assert_memory_equal(auth.server, server.pub, WARP_PUBKEY_LEN);
		assert_int_equal(wn_reply_verify(bufs[i], body, &auth), 0);
		/* a reply moved to another slot, or altered, fails */
		bufs[i][WN_HDR_LEN] ^= 1;
		assert_int_equal(wn_reply_verify(bufs[i], body, &auth), -WARP_EAUTH);
		bufs[i][WN_HDR_LEN] ^= 1;
		auth.index ^= 1;
		assert_int_equal(wn_reply_verify(bufs[i], body, &auth), -WARP_EAUTH);
	}
}

static void test_sealed_envelope(void **state)
{
	uint8_t inner[64] = "inner request", out[WN_MAX_PACKET], back[WN_MAX_PACKET];
	uint8_t k1[WN_SEAL_KEY], k2[WN_SEAL_KEY];
	int n, m;

	n = wn_seal_request(server.pub, 9, inner, sizeof(inner), k1, out, sizeof(out));
	assert_true(n > 0);
	m = wn_open_request(server_key, out, (size_t)n, k2, back, sizeof(back));
	assert_int_equal(m, sizeof(inner));
	assert_memory_equal(back, inner, sizeof(inner));
	assert_memory_equal(k1, k2, WN_SEAL_KEY);
	out[3] ^= 1; /* the header is authenticated */
	assert_true(wn_open_request(server_key, out, (size_t)n, k2, back, sizeof(back)) < 0);
	n = wn_seal_reply(k1, 9, inner, sizeof(inner), out, sizeof(out));
	assert_int_equal(wn_open_reply(k1, out, (size_t)n, back, sizeof(back)), sizeof(inner));
	out[n - 1] ^= 1;
	assert_int_equal(wn_open_reply(k1, out, (size_t)n, back, sizeof(back)), -WARP_EAUTH);
}

/* ---- sans-IO client core ---- */

static void test_cc_retries_and_race(void **state)
{
	struct wn_cc_target t[WN_CC_MAX_SERVERS + 1] = { 0 };
	struct wn_request req = { .type = WN_T_GET };
	static struct wn_cc_op op;
	struct wn_record rec;
	struct wn_tx tx;
	uint8_t buf[WN_MAX_PACKET];
	int sent[3] = { 0 }, n;

	strcpy(req.name, "alice.p2p");
	memcpy(t[1].key, server.pub, WARP_PUBKEY_LEN);
	t[1].key_known = true;
	wn_cc_init(&op, &req, 2, false, 1000, 3000, 100, 512);
	while (wn_cc_poll(&op, t, 1000, &tx))
		sent[tx.server]++;
	assert_int_equal(sent[0], 1);
	assert_int_equal(sent[1], 1);
	assert_int_equal(tx.len, 512);
	assert_int_equal(wn_cc_deadline(&op), 1100);
	/* nothing due before the retry time, both again after it */
	assert_int_equal(wn_cc_poll(&op, t, 1050, &tx), 0);
	while (wn_cc_poll(&op, t, 1100, &tx))
		sent[tx.server]++;
	assert_int_equal(sent[0], 2);
	assert_int_equal(wn_cc_deadline(&op), 1300); /* backoff doubled */
	/* server 0 says "not found"; a forged answer for server 1 signed by another key is
	 * ignored; then server 1 answers with the record */
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_GET, WN_NOT_FOUND, NULL);
	assert_int_equal(wn_cc_input(&op, t, 0, buf, (size_t)n, 1150), 0);
	assert_false(wn_cc_done(&op));
	assert_int_equal(wn_record_make(&rec, key, WN_REC_LIVE, "alice.p2p", "addr", 4, 77), 0);
	{
		struct wn_signer evil;

		wn_signer_init(&evil, key);
		{
			struct wn_signer saved = server;

			server = evil;
			n = make_reply(buf, sizeof(buf), op.req.id, WN_T_GET, WN_OK, &rec);
			server = saved;
		}
	}
	assert_int_equal(wn_cc_input(&op, t, 1, buf, (size_t)n, 1160), -WARP_EIDENTITY);
	assert_false(wn_cc_done(&op));
	/* wrong request id: not ours */
	n = make_reply(buf, sizeof(buf), op.req.id + 1, WN_T_GET, WN_OK, &rec);
	assert_int_equal(wn_cc_input(&op, t, 1, buf, (size_t)n, 1160), -ENOENT);
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_GET, WN_OK, &rec);
	assert_int_equal(wn_cc_input(&op, t, 1, buf, (size_t)n, 1170), 0);
	assert_true(wn_cc_done(&op));
	assert_int_equal(op.res.err, 0);
	assert_true(op.res.found);
	assert_int_equal(op.res.server, 1);
	assert_int_equal(op.res.updated_ms, 77);
	/* server 0 learned its key on first use */
	assert_true(t[0].key_known);
}

static void test_cc_bad_record_and_timeout(void **state)
{
	struct wn_cc_target t[WN_CC_MAX_SERVERS + 1] = { 0 };
	struct wn_request req = { .type = WN_T_GET };
	static struct wn_cc_op op;
	struct wn_record rec;
	struct wn_tx tx;
	uint8_t buf[WN_MAX_PACKET];
	int n;

	strcpy(req.name, "alice.p2p");
	wn_cc_init(&op, &req, 1, false, 0, 1000, 100, 512);
	while (wn_cc_poll(&op, t, 0, &tx))
		;
	/* a server handing out a record its owner did not sign is not believed */
	assert_int_equal(wn_record_make(&rec, key, WN_REC_LIVE, "alice.p2p", "addr", 4, 77), 0);
	rec.value[0] ^= 1;
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_GET, WN_OK, &rec);
	assert_int_equal(wn_cc_input(&op, t, 0, buf, (size_t)n, 10), 0);
	assert_true(wn_cc_done(&op));
	assert_int_equal(op.res.err, -WARP_EAUTH);
	assert_false(op.res.found);
	/* silence ends at the deadline */
	wn_cc_init(&op, &req, 1, false, 0, 1000, 100, 512);
	while (wn_cc_poll(&op, t, 0, &tx))
		;
	wn_cc_timeout(&op, 999);
	assert_false(wn_cc_done(&op));
	wn_cc_timeout(&op, 1000);
	assert_true(wn_cc_done(&op));
	assert_int_equal(op.res.err, -ETIMEDOUT);
	/* nothing to ask at all */
	wn_cc_init(&op, &req, 0, false, 0, 1000, 100, 512);
	assert_true(wn_cc_done(&op));
	assert_int_equal(op.res.err, -WARP_ENONAMESERVER);
}

static void test_cc_put_truncated_and_results(void **state)
{
	struct wn_cc_target t[WN_CC_MAX_SERVERS + 1] = { 0 };
	struct wn_request req = { .type = WN_T_PUT, .bump = WARP_NAME_NO_BUMP };
	static struct wn_cc_op op;
	struct wn_tx tx;
	uint8_t buf[WN_MAX_PACKET];
	int n;

	strcpy(req.name, "alice.p2p");
	assert_int_equal(wn_record_make(&req.rec, key, WN_REC_LIVE, "alice.p2p", "v", 1, 5), 0);
	wn_cc_init(&op, &req, 3, true, 0, 1000, 100, 512);
	assert_false(op.local); /* the link is only raced for lookups */
	while (wn_cc_poll(&op, t, 0, &tx))
		assert_int_equal(tx.kind, WN_TX_UDP);
	/* server 0: too big for UDP, go TCP */
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_PUT, WN_TRUNCATED, NULL);
	assert_int_equal(wn_cc_input(&op, t, 0, buf, (size_t)n, 5), 0);
	assert_int_equal(wn_cc_poll(&op, t, 5, &tx), 1);
	assert_int_equal(tx.kind, WN_TX_TCP);
	assert_int_equal(tx.server, 0);
	/* server 1 refuses (quota, no bump), server 2 rejects the owner */
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_PUT, WN_NOT_STORED, NULL);
	assert_int_equal(wn_cc_input(&op, t, 1, buf, (size_t)n, 6), 0);
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_PUT, WN_NOT_OWNER, NULL);
	assert_int_equal(wn_cc_input(&op, t, 2, buf, (size_t)n, 6), 0);
	assert_false(wn_cc_done(&op));
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_PUT, WN_OK, NULL);
	assert_int_equal(wn_cc_input(&op, t, 0, buf, (size_t)n, 7), 0);
	assert_true(wn_cc_done(&op));
	assert_int_equal(op.res.err, 0);
	assert_true(op.res.stored);
	assert_int_equal(op.res.n_ok, 1);
	assert_int_equal(op.res.n_err, 1);
	/* all refuse: the most telling error wins */
	wn_cc_init(&op, &req, 1, false, 0, 1000, 100, 512);
	while (wn_cc_poll(&op, t, 0, &tx))
		;
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_PUT, WN_REPLAY, NULL);
	assert_int_equal(wn_cc_input(&op, t, 0, buf, (size_t)n, 1), 0);
	assert_int_equal(op.res.err, -WARP_EREPLAY);
}

/* UDP blocked on the way: after WN_CC_UDP_TRIES silent datagrams the server is asked over TCP,
 * and once TCP has answered, the next operation starts there. */
static void test_cc_udp_silence_falls_back_to_tcp(void **state)
{
	struct wn_cc_target t[WN_CC_MAX_SERVERS + 1] = { 0 };
	struct wn_request req = { .type = WN_T_GET };
	static struct wn_cc_op op;
	struct wn_record rec;
	struct wn_tx tx;
	uint8_t buf[WN_MAX_PACKET];
	uint64_t now = 0;
	int udp = 0, n;

	strcpy(req.name, "alice.p2p");
	wn_cc_init(&op, &req, 1, false, 0, 3000, 100, 512);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(wn_cc_poll(&op, t, now, &tx), 1);
		if (tx.kind == WN_TX_TCP)
			break;
		assert_int_equal(tx.kind, WN_TX_UDP);
		udp++;
		now = wn_cc_deadline(&op);
	}
	assert_int_equal(udp, WN_CC_UDP_TRIES);
	assert_int_equal(tx.kind, WN_TX_TCP);
	assert_int_equal(now, 300); /* 100 ms, then 200 ms of backoff */
	/* no more datagrams while TCP is under way */
	assert_int_equal(wn_cc_poll(&op, t, 2000, &tx), 0);
	assert_false(t[0].via_tcp);
	assert_int_equal(wn_record_make(&rec, key, WN_REC_LIVE, "alice.p2p", "addr", 4, 77), 0);
	n = make_reply(buf, sizeof(buf), op.req.id, WN_T_GET, WN_OK, &rec);
	assert_int_equal(wn_cc_input(&op, t, 0, buf, (size_t)n, 350), 0);
	assert_true(wn_cc_done(&op));
	assert_true(op.res.found);
	assert_true(t[0].via_tcp);
	/* the next operation goes straight to TCP */
	wn_cc_init(&op, &req, 1, false, 400, 3000, 100, 512);
	assert_int_equal(wn_cc_poll(&op, t, 400, &tx), 1);
	assert_int_equal(tx.kind, WN_TX_TCP);
	assert_int_equal(wn_cc_poll(&op, t, 400, &tx), 0);
}

/* ---- local link over loopback ---- */

static void test_local_link(void **state)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_name_client_opts o = { 0 };
	struct warp_name_responder *resp;
	struct warp_name_client *c;
	struct warp_name_result r;
	uint16_t port = (uint16_t)(20000 + warp_random_uniform(40000));

	/* unicast loopback stands in for the multicast group: no traffic leaves the host */
	o.local_group4 = "127.0.0.1";
	o.local_port = port;
	o.timeout_ms = 600;
	o.retry_ms = 100;
	resp = warp_name_responder_new(loop, &o);
	assert_non_null(resp);
	assert_int_equal(warp_name_responder_publish(resp, key, "Alice", "lan-addr", 8), 0);
	c = warp_name_client_new(loop, &o);
	assert_non_null(c);
	/* no server configured: the link answers, signed by alice's key */
	assert_int_equal(warp_name_get_sync(c, "alice", &r), 0);
	assert_true(r.found);
	assert_int_equal(r.server, WARP_NAME_SRC_LOCAL);
	assert_string_equal(r.server_addr, "local");
	assert_int_equal(r.value_len, 8);
	assert_memory_equal(r.owner, warp_identity_pubkey(key), WARP_PUBKEY_LEN);
	assert_int_equal(warp_name_get_sync(c, "carol", &r), -WARP_ENOTFOUND);
	warp_name_client_free(c);
	/* with a server configured (here one that never answers) the link is raced too */
	c = warp_name_client_new(loop, &o);
	assert_int_equal(warp_name_client_add_server(c, "127.0.0.1:9", NULL), 0);
	{
		uint64_t t0 = warp_time_ms();

		assert_int_equal(warp_name_get_sync(c, "alice", &r), 0);
		assert_int_equal(r.server, WARP_NAME_SRC_LOCAL);
		assert_true(warp_time_ms() - t0 < 500); /* did not wait for the server */
	}
	warp_name_client_free(c);
	c = warp_name_client_new(loop, &o);
	assert_int_equal(warp_name_responder_withdraw(resp, "alice"), 0);
	assert_int_equal(warp_name_get_sync(c, "alice", &r), -WARP_ENOTFOUND);
	/* PUT needs a server */
	assert_int_equal(warp_name_put_sync(c, key, "alice", "x", 1, WARP_NAME_BUMP, &r),
			 -WARP_ENONAMESERVER);
	warp_name_client_free(c);
	/* local disabled and no server: nothing to resolve with */
	o.local = -1;
	c = warp_name_client_new(loop, &o);
	assert_int_equal(warp_name_resolve(c, "alice", NULL, NULL), -WARP_ENONAMESERVER);
	warp_name_client_free(c);
	warp_name_responder_free(resp);
	warp_loop_free(loop);
}

static void test_lanswer_binding(void **state)
{
	struct wn_record rec, back;
	uint8_t buf[WN_MAX_PACKET];
	uint64_t id;
	int n;

	assert_int_equal(wn_record_make(&rec, key, WN_REC_LIVE, "alice.p2p", "a", 1, 3), 0);
	n = wn_lanswer_encode(1234, &rec, key, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(wn_lanswer_decode(buf, (size_t)n, &id, &back), 0);
	assert_int_equal(id, 1234);
	/* replayed to another query id: the binding signature fails */
	warp_put_u64(buf + 4, 1235);
	assert_int_equal(wn_lanswer_decode(buf, (size_t)n, &id, &back), -WARP_EAUTH);
	/* answered by a key other than the record's owner */
	n = wn_lanswer_encode(1, &rec, server_key, buf, sizeof(buf));
	assert_int_equal(wn_lanswer_decode(buf, (size_t)n, &id, &back), -WARP_EAUTH);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_canonical),
		cmocka_unit_test(test_record_sign_verify),
		cmocka_unit_test(test_request_codec),
		cmocka_unit_test(test_batch_auth),
		cmocka_unit_test(test_sealed_envelope),
		cmocka_unit_test(test_cc_retries_and_race),
		cmocka_unit_test(test_cc_bad_record_and_timeout),
		cmocka_unit_test(test_cc_put_truncated_and_results),
		cmocka_unit_test(test_cc_udp_silence_falls_back_to_tcp),
		cmocka_unit_test(test_local_link),
		cmocka_unit_test(test_lanswer_binding),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
