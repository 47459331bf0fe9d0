// SPDX-License-Identifier: MIT
/*
 * Session: AEAD packets, replay window, key updates, the tail of the handshake (FINISH
 * retransmission, confirmation) and the keepalive key.
 *
 * Key phases are counted per direction (send_phase, recv_phase); the header carries the low
 * bit.  A received packet selects its key by that bit and its packet number:
 *	bit == current bit                      -> current key
 *	bit != current, pn < first pn of phase  -> previous key (during the grace period)
 *	otherwise                               -> next key, committed only if it authenticates
 * Old-phase packets always have lower numbers than any packet of the new phase, because the
 * sender's numbers grow across phases; so the rule never picks the wrong key for an honest
 * peer.  The peer's sending phase can run at most two ahead of our receiving phase (see
 * warp_session_open()), so one extra trial with the key after next covers the rest.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <warpgate/error.h>

#define LOG_COMPONENT "session"
#include "core/bytes.h"
#include "core/log.h"
#include "core/util.h"
#include "pipe/keepalive.h"
#include "pipe/session.h"

#define NS_PER_MS	      1000000ull
#define NS_PER_S	      1000000000ull
#define DEFAULT_REKEY_PACKETS (1ull << 60) /* WireGuard's REKEY_AFTER_MESSAGES */
#define DEFAULT_REKEY_BYTES   (1ull << 40)
#define DEFAULT_REKEY_NS      (120 * NS_PER_S) /* WireGuard's REKEY_AFTER_TIME */
#define DEFAULT_PREV_KEY_NS   (5 * NS_PER_S)
#define PN_LIMIT	      (1ull << 62) /* far beyond any real session; keeps nonces unique */
/* One word more than the window: the word the top moves into is cleared whole, and the
 * oldest word still inside the window must not share its slot (RFC 6479). */
#define WINDOW_WORDS (WARP_REPLAY_WINDOW / 64 + 1)

struct warp_session {
	enum warp_hs_role role;
	uint8_t local_cid[WARP_CID_LEN];
	uint8_t peer_cid[WARP_CID_LEN];
	uint8_t peer_id[WARP_PUBKEY_LEN];
	uint8_t ka_key[32];
	uint8_t exporter[32];
	struct warp_session_cfg cfg;

	/* sending */
	uint8_t send_key[32];
	uint64_t send_phase;
	uint64_t next_pn;
	uint64_t phase_pkts, phase_bytes, phase_start_ns;
	bool update_blocked_logged;

	/* receiving */
	uint8_t recv_key[32];
	uint8_t recv_next[32];
	uint8_t recv_prev[32];
	uint64_t recv_phase;
	uint64_t phase_first_pn; /* pn of the packet that opened recv_phase */
	bool recv_seen;		 /* a packet of recv_phase has been accepted */
	bool prev_valid;
	uint64_t prev_expire_ns;
	bool rx_any;
	uint64_t rx_top;
	uint64_t window[WINDOW_WORDS];

	/* end of the handshake */
	bool confirmed;
	bool confirm_due; /* responder: send a bare ACK to confirm */
	uint8_t finish[WARP_HS_FINISH_LEN];
	uint8_t finish_hash[32];
	uint64_t fin_deadline_ns;
	uint32_t fin_attempts, fin_rto_ms, rto_max_ms, max_attempts;
	int error;

	struct warp_ka_tracker ka;
	struct warp_session_stats st;
};

static void kdf_update(uint8_t out[32], const uint8_t key[32])
{
	uint8_t tmp[32];

	warp_hkdf_expand(tmp, 32, key, "key update", NULL, 0);
	memcpy(out, tmp, 32);
	sodium_memzero(tmp, sizeof(tmp));
}

static void nonce_of(uint8_t n[12], uint64_t pn)
{
	memset(n, 0, 4);
	warp_put_u64(n + 4, pn);
}

struct warp_session *warp_session_from_result(const struct warp_hs_result *res,
					      const struct warp_session_cfg *cfg, uint64_t now_ns)
{
	struct warp_session *s;

	if (!res) {
		errno = EINVAL;
		return NULL;
	}
	if (warp_crypto_init()) {
		errno = EIO;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (cfg)
		s->cfg = *cfg;
	if (!s->cfg.rekey_packets)
		s->cfg.rekey_packets = DEFAULT_REKEY_PACKETS;
	if (!s->cfg.rekey_bytes)
		s->cfg.rekey_bytes = DEFAULT_REKEY_BYTES;
	if (!s->cfg.rekey_ns)
		s->cfg.rekey_ns = DEFAULT_REKEY_NS;
	if (!s->cfg.prev_key_ns)
		s->cfg.prev_key_ns = DEFAULT_PREV_KEY_NS;
	s->role = res->role;
	memcpy(s->local_cid, res->local_cid, WARP_CID_LEN);
	memcpy(s->peer_cid, res->peer_cid, WARP_CID_LEN);
	memcpy(s->peer_id, res->peer_identity, WARP_PUBKEY_LEN);
	memcpy(s->ka_key, res->ka_key, 32);
	memcpy(s->exporter, res->exporter, 32);
	memcpy(s->send_key, res->send_key, 32);
	memcpy(s->recv_key, res->recv_key, 32);
	kdf_update(s->recv_next, s->recv_key);
	s->phase_start_ns = now_ns;
	s->rto_max_ms = res->rto_max_ms ? res->rto_max_ms : 3200;
	s->max_attempts = res->max_attempts ? res->max_attempts : 8;
	if (s->role == WARP_HS_INITIATOR) {
		memcpy(s->finish, res->finish, sizeof(s->finish));
		s->fin_attempts = 1; /* the handshake sent it once */
		s->fin_rto_ms = res->rto_ms ? res->rto_ms : 200;
		s->fin_deadline_ns = res->finish_sent_ns + (uint64_t)s->fin_rto_ms * NS_PER_MS;
		s->fin_rto_ms =
			s->fin_rto_ms * 2 > s->rto_max_ms ? s->rto_max_ms : s->fin_rto_ms * 2;
	} else {
		memcpy(s->finish_hash, res->finish_hash, 32);
		s->confirmed = true; /* FINISH verified: the initiator holds the keys */
		s->confirm_due = true;
	}
	warp_ka_tracker_init(&s->ka, s->cfg.ping_window_ns);
	return s;
}

struct warp_session *warp_session_new(const struct warp_hs *hs, const struct warp_session_cfg *cfg,
				      uint64_t now_ns)
{
	struct warp_hs_result res;
	struct warp_session *s;

	if (!hs || warp_hs_result(hs, &res)) {
		errno = EINVAL;
		return NULL;
	}
	s = warp_session_from_result(&res, cfg, now_ns);
	sodium_memzero(&res, sizeof(res));
	return s;
}

void warp_session_free(struct warp_session *s)
{
	if (!s)
		return;
	sodium_memzero(s, sizeof(*s));
	free(s);
}

/* ---- sending ---- */

static bool can_update(const struct warp_session *s)
{
	return s->recv_phase == s->send_phase && s->recv_seen;
}

static void step_send(struct warp_session *s, uint64_t now_ns)
{
	kdf_update(s->send_key, s->send_key);
	s->send_phase++;
	s->phase_pkts = 0;
	s->phase_bytes = 0;
	s->phase_start_ns = now_ns;
	s->update_blocked_logged = false;
}

int warp_session_key_update(struct warp_session *s, uint64_t now_ns)
{
	if (!can_update(s))
		return -EAGAIN;
	step_send(s, now_ns);
	pr_debug("sending key updated to phase %llu", (unsigned long long)s->send_phase);
	return 0;
}

static void maybe_update(struct warp_session *s, size_t len, uint64_t now_ns)
{
	bool due = s->phase_pkts >= s->cfg.rekey_packets ||
		   s->phase_bytes + len > s->cfg.rekey_bytes ||
		   (now_ns >= s->phase_start_ns && now_ns - s->phase_start_ns >= s->cfg.rekey_ns);

	if (!due)
		return;
	if (!warp_session_key_update(s, now_ns))
		return;
	if (!s->update_blocked_logged) {
		pr_debug("key update due but the peer has not confirmed phase %llu yet",
			 (unsigned long long)s->send_phase);
		s->update_blocked_logged = true;
	}
}

static bool sealed_type(uint8_t type)
{
	return type == WARP_PKT_DATA || type == WARP_PKT_ACK || type == WARP_PKT_CLOSE;
}

int warp_session_seal(struct warp_session *s, uint8_t type, const void *payload, size_t len,
		      uint8_t *out, size_t cap, uint64_t now_ns)
{
	struct warp_pkt_hdr h = {.type = type};
	uint8_t n[12];

	if (!sealed_type(type))
		return -EINVAL;
	if (len > WARP_PKT_MAX - WARP_SESSION_OVERHEAD || cap < len + WARP_SESSION_OVERHEAD)
		return -EMSGSIZE;
	if (s->next_pn >= PN_LIMIT)
		return -WARP_ERANGE;
	maybe_update(s, len, now_ns);
	h.phase = (uint8_t)(s->send_phase & WARP_PHASE_KEY);
	memcpy(h.cid, s->peer_cid, WARP_CID_LEN);
	h.pn = s->next_pn++;
	/* In place when payload == out + WARP_HDR_LEN: libsodium allows m == c exactly. */
	nonce_of(n, h.pn);
	{
		uint8_t hdr[WARP_HDR_LEN];

		warp_hdr_encode(hdr, &h);
		crypto_aead_chacha20poly1305_ietf_encrypt(out + WARP_HDR_LEN, NULL, payload, len,
							  hdr, WARP_HDR_LEN, NULL, n, s->send_key);
		memcpy(out, hdr, WARP_HDR_LEN);
	}
	s->phase_pkts++;
	s->phase_bytes += len;
	s->st.sealed++;
	s->st.bytes_sealed += len;
	return (int)(len + WARP_SESSION_OVERHEAD);
}

/* ---- receiving ---- */

static bool window_test(const struct warp_session *s, uint64_t pn)
{
	return s->window[(pn / 64) % WINDOW_WORDS] & (1ull << (pn % 64));
}

/* 0, -WARP_EREPLAY or -WARP_ESTALE; no change. */
static int window_check(const struct warp_session *s, uint64_t pn)
{
	if (!s->rx_any || pn > s->rx_top)
		return 0;
	if (s->rx_top - pn >= WARP_REPLAY_WINDOW)
		return -WARP_ESTALE;
	return window_test(s, pn) ? -WARP_EREPLAY : 0;
}

static void window_mark(struct warp_session *s, uint64_t pn)
{
	if (!s->rx_any) {
		memset(s->window, 0, sizeof(s->window));
		s->rx_any = true;
		s->rx_top = pn;
	} else if (pn > s->rx_top) {
		uint64_t cur = s->rx_top / 64, to = pn / 64;

		if (to - cur >= WINDOW_WORDS)
			memset(s->window, 0, sizeof(s->window));
		else
			for (uint64_t w = cur + 1; w <= to; w++)
				s->window[w % WINDOW_WORDS] = 0;
		s->rx_top = pn;
	}
	s->window[(pn / 64) % WINDOW_WORDS] |= 1ull << (pn % 64);
}

static void drop_prev(struct warp_session *s)
{
	sodium_memzero(s->recv_prev, sizeof(s->recv_prev));
	s->prev_valid = false;
}

static void step_recv(struct warp_session *s, uint64_t pn, uint64_t now_ns)
{
	memcpy(s->recv_prev, s->recv_key, 32);
	s->prev_valid = true;
	s->prev_expire_ns = now_ns + s->cfg.prev_key_ns;
	memcpy(s->recv_key, s->recv_next, 32);
	kdf_update(s->recv_next, s->recv_key);
	s->recv_phase++;
	s->phase_first_pn = pn;
	/* Follow the peer: our sending key moves to the same phase. */
	if (s->send_phase < s->recv_phase)
		step_send(s, now_ns);
	pr_debug("receive key updated to phase %llu", (unsigned long long)s->recv_phase);
}

/*
 * One authentication attempt.  libsodium zeroes the output of a failed attempt, which would
 * destroy the ciphertext when decrypting in place, so aliased output is only written once a
 * key has verified (at the price of a second MAC pass).
 */
static int try_open(uint8_t *out, bool alias, const uint8_t *pkt, size_t len, const uint8_t n[12],
		    const uint8_t *key)
{
	const uint8_t *c = pkt + WARP_HDR_LEN;
	size_t clen = len - WARP_SESSION_OVERHEAD;

	if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(alias ? NULL : out, NULL, c, clen,
							       c + clen, pkt, WARP_HDR_LEN, n, key))
		return -WARP_EAUTH;
	if (alias && crypto_aead_chacha20poly1305_ietf_decrypt_detached(
			     out, NULL, c, clen, c + clen, pkt, WARP_HDR_LEN, n, key))
		return -WARP_EAUTH;
	return 0;
}

static int count_reject(struct warp_session *s, int err)
{
	if (err == -WARP_EAUTH)
		s->st.rej_auth++;
	else if (err == -WARP_EREPLAY)
		s->st.rej_replay++;
	else if (err == -WARP_ESTALE)
		s->st.rej_stale++;
	else
		s->st.rej_other++;
	return err;
}

int warp_session_open(struct warp_session *s, const uint8_t *pkt, size_t len, uint8_t *out,
		      size_t cap, uint64_t now_ns, struct warp_rx_info *info)
{
	enum { CUR, PREV, NEXT, NEXT2 } which;
	struct warp_pkt_hdr h;
	const uint8_t *key;
	uint8_t n[12], k2[32];
	size_t plen;
	bool alias;
	int err = warp_hdr_decode(pkt, len, &h);

	if (err)
		return count_reject(s, err);
	if (!sealed_type(h.type))
		return count_reject(s, -WARP_ESTATE);
	if (memcmp(h.cid, s->local_cid, WARP_CID_LEN))
		return count_reject(s, -WARP_ENOTFOUND);
	if (len < WARP_SESSION_OVERHEAD)
		return count_reject(s, -WARP_ETRUNCATED);
	if (len > WARP_PKT_MAX)
		return count_reject(s, -WARP_ETRAILING);
	plen = len - WARP_SESSION_OVERHEAD;
	if (cap < plen)
		return count_reject(s, -EMSGSIZE);
	err = window_check(s, h.pn);
	if (err)
		return count_reject(s, err);

	if ((h.phase & WARP_PHASE_KEY) == (s->recv_phase & WARP_PHASE_KEY)) {
		which = CUR;
		key = s->recv_key;
	} else if (s->recv_phase > 0 && h.pn < s->phase_first_pn) {
		if (!s->prev_valid || now_ns >= s->prev_expire_ns)
			return count_reject(s, -WARP_ESTALE);
		which = PREV;
		key = s->recv_prev;
	} else {
		which = NEXT;
		key = s->recv_next;
	}
	alias = out < pkt + len && pkt < out + plen;
	nonce_of(n, h.pn);
	err = try_open(out, alias, pkt, len, n, key);
	/*
	 * The peer may be two phases ahead: it followed our update, every packet of that phase
	 * was lost, and it has started the next one.  Its packets then carry our current bit.
	 * Only packets newer than anything seen can be in that position.
	 */
	if (err && which == CUR && s->rx_any && h.pn > s->rx_top) {
		kdf_update(k2, s->recv_next);
		err = try_open(out, alias, pkt, len, n, k2);
		sodium_memzero(k2, sizeof(k2));
		which = NEXT2;
	}
	if (err)
		return count_reject(s, -WARP_EAUTH);

	/* Authentic: commit. */
	window_mark(s, h.pn);
	if (which == NEXT || which == NEXT2)
		step_recv(s, h.pn, now_ns);
	if (which == NEXT2)
		step_recv(s, h.pn, now_ns);
	if (which != PREV)
		s->recv_seen = true;
	if (!s->confirmed) {
		s->confirmed = true;
		pr_debug("handshake confirmed by the responder");
	}
	s->st.opened++;
	s->st.bytes_opened += plen;
	if (info) {
		info->type = h.type;
		info->pn = h.pn;
		info->key_updated = which == NEXT || which == NEXT2;
	}
	return (int)plen;
}

/* ---- end of the handshake ---- */

static int confirmation(struct warp_session *s, uint8_t *out, size_t cap, uint64_t now_ns)
{
	return warp_session_seal(s, WARP_PKT_ACK, NULL, 0, out, cap, now_ns);
}

int warp_session_hs_recv(struct warp_session *s, const uint8_t *pkt, size_t len, uint64_t now_ns,
			 uint8_t *out, size_t cap)
{
	struct warp_pkt_hdr h;
	uint8_t fh[32];
	int err = warp_pkt_check(pkt, len, &h);

	if (err)
		return err;
	if (h.type == WARP_PKT_HS_FINISH && s->role == WARP_HS_RESPONDER &&
	    !memcmp(h.cid, s->local_cid, WARP_CID_LEN)) {
		crypto_hash_sha256(fh, pkt, len);
		/* The initiator missed our confirmation: send another. */
		if (warp_ct_equal(fh, s->finish_hash, 32))
			return confirmation(s, out, cap, now_ns);
		return 0;
	}
	if (h.type == WARP_PKT_HS_INIT || h.type == WARP_PKT_HS_RESP ||
	    h.type == WARP_PKT_HS_FINISH || h.type == WARP_PKT_HS_RETRY)
		return 0;
	return -WARP_ESTATE;
}

uint64_t warp_session_next_timeout(const struct warp_session *s)
{
	uint64_t d = UINT64_MAX;

	if (s->error)
		return UINT64_MAX;
	if (s->confirm_due)
		return 0;
	if (!s->confirmed)
		d = s->fin_deadline_ns;
	if (s->prev_valid && s->prev_expire_ns < d)
		d = s->prev_expire_ns;
	return d;
}

int warp_session_poll(struct warp_session *s, uint64_t now_ns, uint8_t *out, size_t cap)
{
	if (s->error)
		return s->error;
	if (s->prev_valid && now_ns >= s->prev_expire_ns)
		drop_prev(s);
	if (s->confirm_due) {
		int n = confirmation(s, out, cap, now_ns);

		if (n > 0)
			s->confirm_due = false;
		return n;
	}
	if (s->confirmed || now_ns < s->fin_deadline_ns)
		return 0;
	if (s->fin_attempts >= s->max_attempts) {
		pr_info("no answer to %u FINISH transmissions: handshake not confirmed",
			s->fin_attempts);
		s->error = -ETIMEDOUT;
		return s->error;
	}
	if (cap < sizeof(s->finish))
		return -EMSGSIZE;
	memcpy(out, s->finish, sizeof(s->finish));
	s->fin_attempts++;
	s->fin_deadline_ns = now_ns + (uint64_t)s->fin_rto_ms * NS_PER_MS;
	s->fin_rto_ms = s->fin_rto_ms * 2 > s->rto_max_ms ? s->rto_max_ms : s->fin_rto_ms * 2;
	return (int)sizeof(s->finish);
}

/* ---- keepalive ---- */

int warp_session_ping(struct warp_session *s, uint64_t now_ns, uint8_t out[WARP_PING_LEN])
{
	warp_ka_ping(&s->ka, s->ka_key, s->peer_cid, now_ns, out);
	return WARP_PING_LEN;
}

int warp_session_pong(struct warp_session *s, const uint8_t *pkt, size_t len, uint64_t now_ns,
		      uint64_t *rtt_ns)
{
	return warp_ka_pong(&s->ka, pkt, len, s->local_cid, now_ns, rtt_ns);
}

int warp_session_answer_ping(struct warp_session *s, uint8_t *pkt, size_t len)
{
	int err = warp_ping_verify(pkt, len, s->ka_key, s->local_cid);

	if (err)
		return err;
	/* Only the peer holds the keepalive key: this proves it finished the handshake. */
	s->confirmed = true;
	return warp_pong_rewrite(pkt, len, s->peer_cid);
}

/* ---- close ---- */

int warp_session_close(struct warp_session *s, int err, const char *reason, uint8_t *out,
		       size_t cap, uint64_t now_ns)
{
	size_t rlen = reason ? strlen(reason) : 0;
	uint8_t *body;

	if (rlen > WARP_PKT_MAX - WARP_SESSION_OVERHEAD - 4)
		return -EMSGSIZE;
	if (cap < WARP_SESSION_OVERHEAD + 4 + rlen)
		return -EMSGSIZE;
	body = out + WARP_HDR_LEN; /* sealed in place */
	warp_put_u32(body, (uint32_t)(err < 0 ? -err : err));
	if (rlen)
		memcpy(body + 4, reason, rlen);
	return warp_session_seal(s, WARP_PKT_CLOSE, body, 4 + rlen, out, cap, now_ns);
}

int warp_close_code(const uint8_t *payload, size_t len)
{
	uint32_t code;

	if (len < 4)
		return -WARP_ETRUNCATED;
	code = warp_get_u32(payload);
	if (code > 0x7fffffff)
		return -WARP_ERANGE;
	return -(int)code;
}

/* ---- accessors ---- */

const uint8_t *warp_session_local_cid(const struct warp_session *s)
{
	return s->local_cid;
}

const uint8_t *warp_session_peer_cid(const struct warp_session *s)
{
	return s->peer_cid;
}

const uint8_t *warp_session_peer_identity(const struct warp_session *s)
{
	return s->peer_id;
}

enum warp_hs_role warp_session_role(const struct warp_session *s)
{
	return s->role;
}

bool warp_session_confirmed(const struct warp_session *s)
{
	return s->confirmed;
}

void warp_session_stats(const struct warp_session *s, struct warp_session_stats *st)
{
	*st = s->st;
	st->send_phase = s->send_phase;
	st->recv_phase = s->recv_phase;
	st->next_pn = s->next_pn;
	st->rx_top = s->rx_top;
}

int warp_session_export(const struct warp_session *s, const char *label, const uint8_t *ctx,
			size_t ctx_len, uint8_t *out, size_t len)
{
	if (!label || len == 0 || len > 255 * 32)
		return -EINVAL;
	warp_hkdf_expand(out, len, s->exporter, label, ctx, ctx_len);
	return 0;
}
