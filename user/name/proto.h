/* SPDX-License-Identifier: MIT */
/*
 * Nickname protocol codec (docs/protocol-names.md), shared by the client, the local-link
 * resolver, namebumpd and nbload.  Pure functions: bytes in, structs out and back.
 */
#ifndef WARP_NAME_PROTO_H
#define WARP_NAME_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/identity.h>
#include <warpgate/name.h>

#include "core/bytes.h"
#include "name/sig.h"

#define WN_MAGIC0      0x57 /* 'W' */
#define WN_MAGIC1      0x4e /* 'N' */
#define WN_VERSION     1
#define WN_HDR_LEN     12
#define WN_MIN_REQUEST 320  /* requests are padded to this, so any error reply fits */
#define WN_MAX_PACKET  2048 /* largest request or reply (UDP datagram or TCP frame) */
#define WN_MAX_BATCH   64   /* replies under one server signature */
#define WN_MAX_DEPTH   6
#define WN_SEAL_KEY    32

enum wn_type {
	WN_T_GET = 0x01,
	WN_T_PUT = 0x02,
	WN_T_DEL = 0x03,
	WN_T_SEALED = 0x10,  /* envelope: warp_seal(server key, reply key || request) */
	WN_T_LQUERY = 0x21,  /* local link: who has this name? */
	WN_T_REPLY = 0x80,   /* reply type = WN_T_REPLY | request type */
	WN_T_LANSWER = 0xa1, /* local link answer */
};

enum wn_rec_kind {
	WN_REC_LIVE = 1,
	WN_REC_TOMB = 2,
};

enum wn_status {
	WN_OK = 0,
	WN_NOT_FOUND = 1,  /* GET: no record (a tombstone may be attached) */
	WN_NOT_STORED = 2, /* PUT with NO_BUMP and the quota full */
	WN_MALFORMED = 3,  /* detail: the parser's error code (positive) */
	WN_BAD_VERSION = 4,
	WN_BAD_TYPE = 5,
	WN_BAD_NAME = 6,
	WN_BAD_TLD = 7,
	WN_TOO_BIG = 8,
	WN_BAD_SIG = 9,
	WN_NOT_OWNER = 10, /* the stored record is attached */
	WN_STALE = 11,	   /* updated outside the clock window; detail: window ms */
	WN_REPLAY = 12,	   /* updated not newer than the stored one (attached) */
	WN_QUOTA = 13,
	WN_RATE_LIMITED = 14, /* detail: retry after this many ms */
	WN_TRUNCATED = 15,    /* reply larger than the request; detail: size needed; use TCP */
	WN_INTERNAL = 16,
	WN_BAD_SEAL = 17,
	WN_BAD_BUMP = 18,
	WN_STATUS_MAX
};

/* Reply flags. */
#define WN_RF_RECORD 0x01 /* a record follows */

struct wn_record {
	uint8_t kind;
	uint8_t name_len;
	char name[WARP_NAME_FQ_MAX + 1];
	uint16_t value_len;
	uint8_t value[WARP_NAME_VALUE_MAX];
	uint8_t owner[WARP_PUBKEY_LEN];
	uint64_t updated;
	uint8_t sig[WARP_SIG_LEN];
};

struct wn_request {
	uint8_t type; /* GET, PUT, DEL */
	uint64_t id;
	uint8_t bump;			 /* PUT/DEL */
	char name[WARP_NAME_FQ_MAX + 1]; /* GET */
	struct wn_record rec;		 /* PUT/DEL */
};

struct wn_reply {
	uint8_t type;
	uint64_t id;
	uint8_t status;
	uint8_t flags;
	uint64_t server_time;
	uint32_t detail;
	struct wn_record rec; /* valid when flags & WN_RF_RECORD */
};

/* Parsed server authenticator of a reply. */
struct wn_auth {
	uint8_t depth;
	uint16_t index;
	uint8_t server[WARP_PUBKEY_LEN];
	const uint8_t *path; /* depth * 32 bytes */
	const uint8_t *sig;
};

const char *wn_status_str(unsigned int status);
/* Maps a reply status to the client's error code (0 for OK). */
int wn_status_err(unsigned int status);

/* Name syntax: canonical labels and a TLD, at most 63 characters.  Returns 0 or -WARP_ENAME. */
int wn_name_check(const char *name, size_t len);
/* The TLD (after the last dot) of a checked name. */
const char *wn_name_tld(const char *name);

/* Record (also the signed message after the domain prefix). */
void wn_record_encode(struct warp_wr *w, const struct wn_record *rec);
int wn_record_decode(struct warp_rd *r, struct wn_record *rec);
/* prefix || record without the signature; returns its length or -EMSGSIZE. */
int wn_record_signed_msg(const struct wn_record *rec, uint8_t *buf, size_t cap);
int wn_record_sign(struct wn_record *rec, const struct warp_identity *id);
int wn_record_sign_with(struct wn_record *rec, const struct wn_signer *s);
int wn_record_verify(const struct wn_record *rec);
/* Fills rec from parts (name already canonical) and signs it. */
int wn_record_make(struct wn_record *rec, const struct warp_identity *id, uint8_t kind,
		   const char *name, const void *value, size_t len, uint64_t updated);

/* Requests.  pad_to: total size to pad to (at least WN_MIN_REQUEST is used). */
int wn_request_encode(const struct wn_request *req, uint8_t *buf, size_t cap, size_t pad_to);
/* 0, or a negative error with *status set to the status a server should answer. */
int wn_request_decode(const uint8_t *buf, size_t len, struct wn_request *req, uint8_t *status);
/* Header peek: 0 and the type/id, or -WARP_EMALFORMED/-WARP_EVERSION. */
int wn_peek(const uint8_t *buf, size_t len, uint8_t *type, uint64_t *id);

/* Replies: body first (no authenticator); wn_auth_* adds the server signature. */
int wn_reply_encode_body(const struct wn_reply *rep, uint8_t *buf, size_t cap);
/* Sign n reply bodies under one signature (Merkle tree); each buf grows by the
 * authenticator, lens updated.  caps are the buffer capacities. */
int wn_auth_batch(const struct wn_signer *server, uint8_t **bufs, size_t *lens, const size_t *caps,
		  size_t n);
size_t wn_auth_len(unsigned int depth);
unsigned int wn_auth_depth(size_t n);
/* Parses a reply and its authenticator; does not check the signature. */
int wn_reply_decode(const uint8_t *buf, size_t len, struct wn_reply *rep, size_t *body_len,
		    struct wn_auth *auth);
/* Checks the authenticator against the body (and the server key, when pinned). */
int wn_reply_verify(const uint8_t *buf, size_t body_len, const struct wn_auth *auth);

/* Local link: query and answer (the answer is signed by the record's owner over the query id
 * and the record, so an old answer cannot be replayed to a new query). */
int wn_lquery_encode(uint64_t id, const char *name, uint8_t *buf, size_t cap);
int wn_lquery_decode(const uint8_t *buf, size_t len, uint64_t *id, char name[WARP_NAME_FQ_MAX + 1]);
int wn_lanswer_encode(uint64_t id, const struct wn_record *rec, const struct warp_identity *id_key,
		      uint8_t *buf, size_t cap);
int wn_lanswer_decode(const uint8_t *buf, size_t len, uint64_t *id, struct wn_record *rec);

/* Sealed envelope: request -> WN_T_SEALED packet (reply_key returned to decrypt the reply). */
int wn_seal_request(const uint8_t server[WARP_PUBKEY_LEN], uint64_t id, const uint8_t *inner,
		    size_t inner_len, uint8_t reply_key[WN_SEAL_KEY], uint8_t *out, size_t cap);
int wn_open_request(const struct warp_identity *server, const uint8_t *buf, size_t len,
		    uint8_t reply_key[WN_SEAL_KEY], uint8_t *inner, size_t cap);
int wn_seal_reply(const uint8_t reply_key[WN_SEAL_KEY], uint64_t id, const uint8_t *inner,
		  size_t inner_len, uint8_t *out, size_t cap);
int wn_open_reply(const uint8_t reply_key[WN_SEAL_KEY], const uint8_t *buf, size_t len,
		  uint8_t *inner, size_t cap);

#endif
