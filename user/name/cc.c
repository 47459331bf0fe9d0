// SPDX-License-Identifier: MIT
/*
 * Sans-IO client core.  Every server gets the same request id; UDP is retransmitted with
 * exponential backoff until the operation's deadline, a TRUNCATED answer moves that server to
 * TCP, and so does silence after WN_CC_UDP_TRIES datagrams (UDP may be blocked on the way:
 * the client then starts with TCP for that server).  Only replies whose server signature checks (against the pinned or learned key) and
 * whose records carry a valid owner signature are believed: anything else is ignored rather
 * than taken as an answer, so a forged datagram cannot end a lookup.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <warpgate/error.h>

#include "core/util.h"
#include "name/cc.h"

enum {
	S_SEND,
	S_WAIT,
	S_TCP_SEND,
	S_TCP_WAIT,
	S_DONE,
};

void wn_cc_init(struct wn_cc_op *op, const struct wn_request *req, unsigned int n_servers,
		bool local, uint64_t now, unsigned int timeout_ms, unsigned int retry_ms,
		unsigned int get_pad)
{
	memset(op, 0, sizeof(*op));
	op->req = *req;
	warp_random(&op->req.id, sizeof(op->req.id));
	op->n = n_servers > WN_CC_MAX_SERVERS ? WN_CC_MAX_SERVERS : n_servers;
	op->local = local && req->type == WN_T_GET;
	op->start = now;
	op->deadline = now + timeout_ms;
	op->retry_ms = retry_ms ? retry_ms : 200;
	op->get_pad = get_pad;
	for (unsigned int i = 0; i <= WN_CC_MAX_SERVERS; i++)
		op->srv[i].state = i < op->n || (i == WN_CC_LOCAL && op->local) ? S_SEND : S_DONE;
	snprintf(op->res.name, sizeof(op->res.name), "%s", req->name);
	op->res.server = WARP_NAME_SRC_NONE;
	op->res.err = -ETIMEDOUT;
	if (!op->n && !op->local) {
		op->res.err = -WARP_ENONAMESERVER;
		op->done = true;
	}
}

static bool all_done(const struct wn_cc_op *op, uint64_t now)
{
	for (unsigned int i = 0; i < op->n; i++)
		if (op->srv[i].state != S_DONE)
			return false;
	if (op->local && op->srv[WN_CC_LOCAL].state != S_DONE) {
		/* Servers have all answered; give the link its window and no more. */
		if (op->n && now < op->start + WN_CC_LOCAL_MS)
			return false;
		if (!op->n)
			return false;
	}
	return true;
}

static void finish(struct wn_cc_op *op)
{
	struct warp_name_result *r = &op->res;

	op->done = true;
	if (op->req.type == WN_T_GET) {
		/* nobody had it: every server said so, or only the link was asked */
		if (!r->found && r->err != -WARP_ENOTFOUND && (r->n_ok || !op->n))
			r->err = -WARP_ENOTFOUND;
		return;
	}
	if (r->n_ok) {
		r->err = 0;
		r->stored = true;
	} else if (op->saw_not_stored) {
		r->err = 0;
		r->stored = false;
	}
}

static void server_done(struct wn_cc_op *op, int server, int err, uint64_t now)
{
	struct wn_cc_srv *s = &op->srv[server];

	if (s->state == S_DONE)
		return;
	s->state = S_DONE;
	s->err = err;
	if (server != WN_CC_LOCAL) {
		if (err)
			op->res.n_err++;
		/* keep the most telling error: anything beats a timeout */
		if (err && (op->res.err == -ETIMEDOUT || op->res.err == -WARP_ENOTFOUND))
			op->res.err = err;
	}
	if (all_done(op, now))
		finish(op);
}

static int encode(struct wn_cc_op *op, struct wn_cc_target *t, int server, size_t *len)
{
	uint8_t inner[WN_MAX_PACKET];
	struct wn_cc_srv *s = &op->srv[server];
	size_t pad = op->req.type == WN_T_GET ? op->get_pad : 0;
	int n;

	if (!t->seal || !t->key_known) {
		n = wn_request_encode(&op->req, op->pkt, sizeof(op->pkt), pad);
		s->sealed = false;
	} else {
		/* the envelope adds its own bytes, so pad the inner request less */
		size_t over = WN_HDR_LEN + WARP_SEAL_OVERHEAD + WN_SEAL_KEY;

		n = wn_request_encode(&op->req, inner, sizeof(inner), pad > over ? pad - over : 0);
		if (n > 0)
			n = wn_seal_request(t->key, op->req.id, inner, (size_t)n, s->reply_key,
					    op->pkt, sizeof(op->pkt));
		s->sealed = n > 0;
	}
	if (n < 0)
		return n;
	*len = (size_t)n;
	return 0;
}

int wn_cc_poll(struct wn_cc_op *op, struct wn_cc_target *targets, uint64_t now, struct wn_tx *tx)
{
	if (op->done)
		return 0;
	for (int i = 0; i <= WN_CC_MAX_SERVERS; i++) {
		struct wn_cc_srv *s = &op->srv[i];
		bool tcp;
		int n;

		if (i != WN_CC_LOCAL && s->state == S_SEND && targets[i].via_tcp)
			s->state = S_TCP_SEND;
		if (i != WN_CC_LOCAL && s->state == S_WAIT && now >= s->next &&
		    s->attempts >= WN_CC_UDP_TRIES && !s->fallback) {
			s->state = S_TCP_SEND;
			s->fallback = true;
		}
		tcp = s->state == S_TCP_SEND;
		if (!(s->state == S_SEND || tcp || (s->state == S_WAIT && now >= s->next)))
			continue;
		if (i == WN_CC_LOCAL) {
			n = wn_lquery_encode(op->req.id, op->req.name, op->pkt, sizeof(op->pkt));
			tx->kind = WN_TX_LOCAL;
			tx->len = n > 0 ? (size_t)n : 0;
		} else {
			n = encode(op, &targets[i], i, &tx->len);
			tx->kind = tcp ? WN_TX_TCP : WN_TX_UDP;
		}
		if (n < 0) {
			server_done(op, i, n, now);
			continue;
		}
		tx->server = i;
		tx->buf = op->pkt;
		if (tcp) {
			s->state = S_TCP_WAIT;
		} else {
			s->state = S_WAIT;
			s->next = now +
				  ((uint64_t)op->retry_ms << (s->attempts < 5 ? s->attempts : 5));
			s->attempts++;
		}
		return 1;
	}
	return 0;
}

uint64_t wn_cc_deadline(const struct wn_cc_op *op)
{
	uint64_t d = op->deadline;

	if (op->local && op->n && op->start + WN_CC_LOCAL_MS < d)
		d = op->start + WN_CC_LOCAL_MS; /* may end the lookup early */
	for (int i = 0; i <= WN_CC_MAX_SERVERS; i++)
		if (op->srv[i].state == S_WAIT && op->srv[i].next < d)
			d = op->srv[i].next;
		else if ((op->srv[i].state == S_SEND || op->srv[i].state == S_TCP_SEND))
			d = op->start < d ? op->start : d;
	return d;
}

bool wn_cc_done(const struct wn_cc_op *op)
{
	return op->done;
}

bool wn_cc_server_done(const struct wn_cc_op *op, int server)
{
	return server < 0 || server > WN_CC_MAX_SERVERS || op->srv[server].state == S_DONE;
}

void wn_cc_timeout(struct wn_cc_op *op, uint64_t now)
{
	if (op->done)
		return;
	if (now >= op->deadline) {
		for (int i = 0; i <= WN_CC_MAX_SERVERS; i++)
			if (op->srv[i].state != S_DONE)
				server_done(op, i, i == WN_CC_LOCAL ? 0 : -ETIMEDOUT, now);
		if (!op->done)
			finish(op);
		return;
	}
	if (all_done(op, now))
		finish(op);
}

void wn_cc_fail(struct wn_cc_op *op, int server, int err, uint64_t now)
{
	if (!op->done && server >= 0 && server <= WN_CC_MAX_SERVERS)
		server_done(op, server, err, now);
}

static void take_record(struct wn_cc_op *op, const struct wn_record *rec, int server)
{
	struct warp_name_result *r = &op->res;

	r->server = server;
	memcpy(r->value, rec->value, rec->value_len);
	r->value_len = rec->value_len;
	memcpy(r->owner, rec->owner, WARP_PUBKEY_LEN);
	r->updated_ms = rec->updated;
}

static int input_local(struct wn_cc_op *op, const uint8_t *buf, size_t len, uint64_t now)
{
	struct wn_record rec;
	uint64_t id;
	int err;

	if (!op->local || op->srv[WN_CC_LOCAL].state == S_DONE)
		return -ENOENT;
	err = wn_lanswer_decode(buf, len, &id, &rec);
	if (err)
		return err;
	if (id != op->req.id || strcmp(rec.name, op->req.name) || rec.kind != WN_REC_LIVE)
		return -ENOENT;
	take_record(op, &rec, WARP_NAME_SRC_LOCAL);
	op->res.found = true;
	op->res.err = 0;
	op->srv[WN_CC_LOCAL].state = S_DONE;
	finish(op);
	return 0;
}

int wn_cc_input(struct wn_cc_op *op, struct wn_cc_target *targets, int server, const uint8_t *buf,
		size_t len, uint64_t now)
{
	uint8_t inner[WN_MAX_PACKET];
	struct wn_reply rep;
	struct wn_auth auth;
	struct wn_cc_srv *s;
	struct wn_cc_target *t;
	size_t body;
	int err, n;

	if (op->done)
		return -ENOENT;
	if (server == WN_CC_LOCAL)
		return input_local(op, buf, len, now);
	if (server < 0 || (unsigned int)server >= op->n)
		return -EINVAL;
	s = &op->srv[server];
	t = &targets[server];
	if (s->state == S_DONE)
		return -ENOENT;
	if (s->sealed) {
		n = wn_open_reply(s->reply_key, buf, len, inner, sizeof(inner));
		if (n < 0)
			return n;
		buf = inner;
		len = (size_t)n;
	}
	err = wn_reply_decode(buf, len, &rep, &body, &auth);
	if (err)
		return err;
	if (rep.id != op->req.id || rep.type != (WN_T_REPLY | op->req.type))
		return -ENOENT;
	if (t->key_known && memcmp(t->key, auth.server, WARP_PUBKEY_LEN))
		return -WARP_EIDENTITY;
	if (wn_reply_verify(buf, body, &auth))
		return -WARP_EAUTH;
	if (!t->key_known) {
		memcpy(t->key, auth.server, WARP_PUBKEY_LEN); /* trust on first use */
		t->key_known = true;
	}
	if (s->fallback && s->state == S_TCP_WAIT)
		t->via_tcp = true;
	switch (rep.status) {
	case WN_TRUNCATED:
		if (s->state != S_TCP_WAIT)
			s->state = S_TCP_SEND;
		return 0;
	case WN_RATE_LIMITED:
		s->state = S_WAIT;
		s->next = now + (rep.detail < 10000 ? rep.detail : 10000);
		return 0;
	default:
		break;
	}
	if (rep.flags & WN_RF_RECORD) {
		/* a server may only hand over records their owners signed */
		if (strcmp(rep.rec.name, op->req.name) || wn_record_verify(&rep.rec)) {
			server_done(op, server, -WARP_EAUTH, now);
			return 0;
		}
	}
	if (op->req.type == WN_T_GET) {
		if (rep.status == WN_OK && (rep.flags & WN_RF_RECORD) &&
		    rep.rec.kind == WN_REC_LIVE) {
			/* first verified record wins */
			take_record(op, &rep.rec, server);
			op->res.found = true;
			op->res.deleted = false;
			op->res.err = 0;
			op->res.n_ok++;
			s->state = S_DONE;
			finish(op);
			return 0;
		}
		if (rep.status == WN_NOT_FOUND) {
			op->res.n_ok++;
			if ((rep.flags & WN_RF_RECORD) && rep.rec.kind == WN_REC_TOMB &&
			    !op->res.found) {
				op->res.deleted = true;
				take_record(op, &rep.rec, server);
			}
			if (op->res.err == -ETIMEDOUT)
				op->res.err = -WARP_ENOTFOUND;
			server_done(op, server, 0, now);
			return 0;
		}
		server_done(op, server, wn_status_err(rep.status), now);
		return 0;
	}
	if (rep.status == WN_OK) {
		if (!op->res.n_ok++)
			op->res.server = server;
		server_done(op, server, 0, now);
		return 0;
	}
	if (rep.status == WN_NOT_STORED) {
		op->saw_not_stored = true;
		if (op->res.server == WARP_NAME_SRC_NONE)
			op->res.server = server;
		server_done(op, server, 0, now);
		return 0;
	}
	if (rep.flags & WN_RF_RECORD && op->res.server == WARP_NAME_SRC_NONE)
		take_record(op, &rep.rec, WARP_NAME_SRC_NONE); /* who owns it, for the caller */
	server_done(op, server, wn_status_err(rep.status), now);
	return 0;
}
