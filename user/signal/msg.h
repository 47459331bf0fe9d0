/* SPDX-License-Identifier: MIT */
/*
 * Signalling envelope codec (sans-IO).  docs/protocol-signal.md is the specification; in short:
 *
 *   MQTT payload = version(1) | flags(1) | recipient tag(16) | sealed box of the inner message
 *   inner        = fixed header | meta TLVs | body TLVs | ECDSA signature by the sender
 *
 * The sealed box (warp_seal) takes the 18 outer bytes as associated data, so a broker sees only
 * the topic and the recipient tag, both derived from the recipient's public key.  The inner
 * message names its sender and recipient in full and is signed by the sender over everything
 * before the signature: a message re-sealed to a third party still names the first recipient
 * and is rejected by the third party.
 *
 * Decoding checks structure, recipient, signature and time window; replays are caught by a
 * separate cache (warp_sig_replay_*) that the caller consults after a successful decode.
 */
#ifndef WARP_SIGNAL_MSG_H
#define WARP_SIGNAL_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/identity.h>

#define WARP_SIG_VERSION     1
#define WARP_SIG_ID_LEN	     16 /* message ids and attempt ids: random 128-bit */
#define WARP_SIG_TAG_LEN     16 /* recipient tag: truncated hash of the recipient key */
#define WARP_SIG_SECRET_LEN  32
#define WARP_SIG_CID_LEN     8
#define WARP_SIG_OUTER_HDR   (2 + WARP_SIG_TAG_LEN)
#define WARP_SIG_MAX_PAYLOAD 8192 /* whole MQTT payload */
#define WARP_SIG_BLOB_MAX    4096 /* ADDR_REPLY address blob */
#define WARP_SIG_MAX_EPS     16
#define WARP_SIG_MAX_CIDS    4
#define WARP_SIG_MAX_BROKERS 8 /* reply brokers carried in the meta block */
#define WARP_SIG_HOST_MAX    253
#define WARP_SIG_TEXT_MAX    200
#define WARP_SIG_TTL_MAX_MS  120000u
#define WARP_SIG_SKEW_MS     5000u /* default clock skew tolerance */
/* "wg1/s/" + 32 hex digits + NUL */
#define WARP_SIG_TOPIC_PREFIX "wg1/s/"
#define WARP_SIG_TOPIC_LEN    (sizeof(WARP_SIG_TOPIC_PREFIX) - 1 + 2 * WARP_SIG_TAG_LEN)

enum warp_sig_type {
	WARP_SIG_ADDR_REQUEST = 1,
	WARP_SIG_ADDR_REPLY = 2,
	WARP_SIG_CONNECT_BACK = 3,
	WARP_SIG_PUNCH_OFFER = 4,
	WARP_SIG_PUNCH_ANSWER = 5,
	WARP_SIG_RELAY_OFFER = 6,
	WARP_SIG_RELAY_ANSWER = 7,
	WARP_SIG_CANCEL = 8,
	WARP_SIG_ERROR = 9,
	WARP_SIG_TYPE_MAX = WARP_SIG_ERROR,
};

enum warp_sig_transport {
	WARP_SIG_UDP = 1,
	WARP_SIG_TCP = 2,
};

enum warp_sig_role {
	WARP_SIG_ROLE_INITIATOR = 1,
	WARP_SIG_ROLE_RESPONDER = 2,
};

/* Where an endpoint comes from: tells the peer how much to trust it and how to probe it. */
enum warp_sig_ep_kind {
	WARP_SIG_EP_HOST = 1,	   /* a local interface address */
	WARP_SIG_EP_REFLEXIVE = 2, /* mapped address seen by a STUN server */
	WARP_SIG_EP_PREDICTED = 3, /* port predicted from the NAT's allocation pattern */
	WARP_SIG_EP_MAPPED = 4,	   /* explicit mapping (UPnP IGD, NAT-PMP, PCP) */
	WARP_SIG_EP_RELAYED = 5,   /* TURN relayed address */
};

/* Codes of ERROR messages (and optional CANCEL reasons). */
enum warp_sig_code {
	WARP_SIG_ERR_UNSUPPORTED = 1, /* no handler for this request type */
	WARP_SIG_ERR_BUSY = 2,	      /* too many attempts in progress */
	WARP_SIG_ERR_REFUSED = 3,     /* policy says no */
	WARP_SIG_ERR_BAD_REQUEST = 4, /* request understood but unusable */
	WARP_SIG_ERR_INTERNAL = 5,
	WARP_SIG_CANCEL_DONE = 16,	/* CANCEL: the attempt succeeded another way */
	WARP_SIG_CANCEL_ABANDONED = 17, /* CANCEL: gave up */
};

struct warp_sig_ep {
	uint8_t family; /* 4 or 6 */
	uint8_t kind;	/* enum warp_sig_ep_kind */
	uint16_t port;
	uint8_t addr[16]; /* IPv6, or IPv4 as ::ffff:a.b.c.d */
};

struct warp_sig_broker {
	char host[WARP_SIG_HOST_MAX + 1];
	uint16_t port;
};

/* Presence bits of the optional body fields (struct warp_sig_body.present). */
enum {
	WARP_SIGF_BLOB = 1u << 0,
	WARP_SIGF_TRANSPORT = 1u << 1,
	WARP_SIGF_ROLE = 1u << 2,
	WARP_SIGF_START = 1u << 3,
	WARP_SIGF_SECRET = 1u << 4,
	WARP_SIGF_PORT_INFO = 1u << 5,
	WARP_SIGF_INTERVAL = 1u << 6,
	WARP_SIGF_DURATION = 1u << 7,
	WARP_SIGF_RELAY_SERVER = 1u << 8,
	WARP_SIGF_RELAYED = 1u << 9,
	WARP_SIGF_RELAY_NAME = 1u << 10,
	WARP_SIGF_LIFETIME = 1u << 11,
	WARP_SIGF_CODE = 1u << 12,
	WARP_SIGF_TEXT = 1u << 13,
};

/* One flat body for every type: the type says which fields are required (see
 * warp_sig_msg_check()); endpoints and CIDs are lists, the rest optional scalars. */
struct warp_sig_body {
	uint32_t present;
	uint8_t transport; /* enum warp_sig_transport */
	uint8_t role;	   /* enum warp_sig_role */
	uint64_t start_ms; /* synced clock: when both sides start probing */
	uint8_t secret[WARP_SIG_SECRET_LEN];
	int32_t port_delta;	     /* observed step between consecutive NAT port allocations */
	uint16_t range_lo, range_hi; /* ports worth trying around the prediction */
	uint16_t interval_ms;	     /* probe interval */
	uint32_t duration_ms;	     /* how long to keep probing */
	uint8_t neps;
	struct warp_sig_ep eps[WARP_SIG_MAX_EPS];
	uint8_t ncids;
	uint8_t cids[WARP_SIG_MAX_CIDS][WARP_SIG_CID_LEN];
	struct warp_sig_ep relay_server, relayed;
	char relay_name[WARP_SIG_HOST_MAX + 1];
	uint32_t lifetime_s;
	uint16_t code; /* enum warp_sig_code */
	char text[WARP_SIG_TEXT_MAX + 1];
	uint16_t blob_len;
	uint8_t blob[WARP_SIG_BLOB_MAX];
};

struct warp_sig_msg {
	uint8_t type; /* enum warp_sig_type */
	uint8_t sender[WARP_PUBKEY_LEN];
	uint8_t recipient[WARP_PUBKEY_LEN];
	uint8_t id[WARP_SIG_ID_LEN];
	uint8_t attempt[WARP_SIG_ID_LEN];  /* all zero: none */
	uint8_t reply_to[WARP_SIG_ID_LEN]; /* all zero: not a reply */
	uint64_t created_ms;		   /* synced wall clock, ms since the Unix epoch */
	uint32_t ttl_ms;
	uint8_t nbrokers; /* where the sender listens, for replies */
	struct warp_sig_broker brokers[WARP_SIG_MAX_BROKERS];
	struct warp_sig_body body;
};

const char *warp_sig_type_name(unsigned int type);
/* Default TTL of a type in ms (10-30 s). */
uint32_t warp_sig_default_ttl(unsigned int type);
/* Request types get an automatic ERROR reply when nobody handles them. */
bool warp_sig_is_request(unsigned int type);
bool warp_sig_id_is_zero(const uint8_t id[WARP_SIG_ID_LEN]);

/* tag = first 16 bytes of SHA-256("warpgate signal topic v1" || pub). */
void warp_sig_recipient_tag(const uint8_t pub[WARP_PUBKEY_LEN], uint8_t tag[WARP_SIG_TAG_LEN]);
/* topic = "wg1/s/" + lower-case hex of the tag; buf holds WARP_SIG_TOPIC_LEN + 1. */
int warp_sig_topic(const uint8_t pub[WARP_PUBKEY_LEN], char *buf, size_t len);

/* Clears m and sets type, recipient, a random id, created_ms = now_ms and the type's TTL. */
void warp_sig_msg_init(struct warp_sig_msg *m, unsigned int type,
		       const uint8_t recipient[WARP_PUBKEY_LEN], uint64_t now_ms);
int warp_sig_add_ep(struct warp_sig_body *b, const struct warp_sig_ep *ep);

/* Semantic checks of a decoded or about-to-be-encoded message: known type, TTL range, the
 * fields its type requires, value ranges. */
int warp_sig_msg_check(const struct warp_sig_msg *m);

/* Signs m with id (m->sender is overwritten with id's key) and seals it to m->recipient.
 * Returns the payload length or a negative error (-EMSGSIZE when cap is too small). */
int warp_sig_encode(const struct warp_identity *id, struct warp_sig_msg *m, uint8_t *out,
		    size_t cap);

/* Opens, parses and checks a payload addressed to id: recipient tag and key, signature, TTL
 * against now_ms with skew_ms tolerance, body.  Does not check replays. */
int warp_sig_decode(const struct warp_identity *id, const uint8_t *in, size_t len, uint64_t now_ms,
		    uint32_t skew_ms, struct warp_sig_msg *m);

/* Parses a plaintext inner message without checking its signature or time (fuzzing, tests);
 * *signed_len receives the length covered by the signature. */
int warp_sig_parse_inner(const uint8_t *in, size_t len, struct warp_sig_msg *m, size_t *signed_len);
/* Writes the unsigned inner message (everything before the signature). */
int warp_sig_write_inner(const struct warp_sig_msg *m, uint8_t *out, size_t cap);

/* Body TLVs alone (exposed for fuzzing). */
int warp_sig_body_decode(const uint8_t *in, size_t len, struct warp_sig_body *b);
int warp_sig_body_encode(const struct warp_sig_body *b, uint8_t *out, size_t cap);

/* Replay cache: remembers (sender, id) until the message's expiry on the synced clock. */
struct warp_sig_replay;
struct warp_sig_replay *warp_sig_replay_new(size_t max_entries);
void warp_sig_replay_free(struct warp_sig_replay *r);
/* 0 and remembers the message when new; -WARP_EREPLAY when seen; -WARP_EQUOTA when the cache
 * is full of live entries (the message is dropped: failing closed). */
int warp_sig_replay_check(struct warp_sig_replay *r, const uint8_t sender[WARP_PUBKEY_LEN],
			  const uint8_t id[WARP_SIG_ID_LEN], uint64_t expires_ms, uint64_t now_ms);
size_t warp_sig_replay_count(const struct warp_sig_replay *r);

/* Expiry of a message as the replay cache and the staleness check see it. */
static inline uint64_t warp_sig_expiry(const struct warp_sig_msg *m, uint32_t skew_ms)
{
	return m->created_ms + m->ttl_ms + skew_ms;
}

#endif
