/* SPDX-License-Identifier: MIT */
/*
 * STUN message codec (RFC 8489, RFC 5389 compatible), the RFC 5780 NAT-discovery attributes
 * and the TURN attributes and ChannelData framing of RFC 8656.
 *
 * Decoding never copies: struct warp_stun_msg indexes the caller's buffer, which must stay
 * alive while the message is used.  warp_stun_decode() checks the framing, the length and
 * format of every attribute it knows, the position of MESSAGE-INTEGRITY(-SHA256) and
 * FINGERPRINT, and the FINGERPRINT value; integrity needs a key and is checked separately.
 * Comprehension-required attributes it does not know are listed in msg->unknown so the caller
 * can answer 420 or fail the transaction.
 *
 * Encoding goes through a builder writing into a caller buffer: init, add attributes, then
 * optionally MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (in that order),
 * then end.  The header length is kept current after every attribute.  Errors latch.
 */
#ifndef WARP_NAT_STUN_H
#define WARP_NAT_STUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define WARP_STUN_MAGIC	       0x2112a442u
#define WARP_STUN_HDR_LEN      20
#define WARP_STUN_TID_LEN      12
#define WARP_STUN_FP_XOR       0x5354554eu
#define WARP_STUN_MAX_ATTRS    64
#define WARP_STUN_MAX_UNKNOWN  8
#define WARP_STUN_MAX_TEXT     763 /* REALM, NONCE, SOFTWARE, reason phrase: < 763 bytes */
#define WARP_STUN_MAX_USERNAME 513
#define WARP_STUN_DEFAULT_PORT 3478

enum warp_stun_class {
	WARP_STUN_REQUEST = 0,
	WARP_STUN_INDICATION = 1,
	WARP_STUN_SUCCESS = 2,
	WARP_STUN_ERROR = 3,
};

enum warp_stun_method {
	WARP_STUN_BINDING = 0x001,
	WARP_STUN_ALLOCATE = 0x003,
	WARP_STUN_REFRESH = 0x004,
	WARP_STUN_SEND = 0x006,
	WARP_STUN_DATA = 0x007,
	WARP_STUN_CREATE_PERMISSION = 0x008,
	WARP_STUN_CHANNEL_BIND = 0x009,
};

enum warp_stun_attr_type {
	/* RFC 8489 */
	WARP_STUN_ATTR_MAPPED_ADDRESS = 0x0001,
	WARP_STUN_ATTR_USERNAME = 0x0006,
	WARP_STUN_ATTR_MESSAGE_INTEGRITY = 0x0008,
	WARP_STUN_ATTR_ERROR_CODE = 0x0009,
	WARP_STUN_ATTR_UNKNOWN_ATTRIBUTES = 0x000a,
	WARP_STUN_ATTR_REALM = 0x0014,
	WARP_STUN_ATTR_NONCE = 0x0015,
	WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001c,
	WARP_STUN_ATTR_PASSWORD_ALGORITHM = 0x001d,
	WARP_STUN_ATTR_USERHASH = 0x001e,
	WARP_STUN_ATTR_XOR_MAPPED_ADDRESS = 0x0020,
	WARP_STUN_ATTR_PASSWORD_ALGORITHMS = 0x8002,
	WARP_STUN_ATTR_ALTERNATE_DOMAIN = 0x8003,
	WARP_STUN_ATTR_SOFTWARE = 0x8022,
	WARP_STUN_ATTR_ALTERNATE_SERVER = 0x8023,
	WARP_STUN_ATTR_TRANSACTION_TRANSMIT_COUNTER = 0x8025,
	WARP_STUN_ATTR_FINGERPRINT = 0x8028,
	/* RFC 5780 */
	WARP_STUN_ATTR_CHANGE_REQUEST = 0x0003,
	WARP_STUN_ATTR_PADDING = 0x0026,
	WARP_STUN_ATTR_RESPONSE_PORT = 0x0027,
	WARP_STUN_ATTR_RESPONSE_ORIGIN = 0x802b,
	WARP_STUN_ATTR_OTHER_ADDRESS = 0x802c,
	/* RFC 8656 */
	WARP_STUN_ATTR_CHANNEL_NUMBER = 0x000c,
	WARP_STUN_ATTR_LIFETIME = 0x000d,
	WARP_STUN_ATTR_XOR_PEER_ADDRESS = 0x0012,
	WARP_STUN_ATTR_DATA = 0x0013,
	WARP_STUN_ATTR_XOR_RELAYED_ADDRESS = 0x0016,
	WARP_STUN_ATTR_REQUESTED_ADDRESS_FAMILY = 0x0017,
	WARP_STUN_ATTR_EVEN_PORT = 0x0018,
	WARP_STUN_ATTR_REQUESTED_TRANSPORT = 0x0019,
	WARP_STUN_ATTR_DONT_FRAGMENT = 0x001a,
	WARP_STUN_ATTR_RESERVATION_TOKEN = 0x0022,
	WARP_STUN_ATTR_ADDITIONAL_ADDRESS_FAMILY = 0x8000,
	WARP_STUN_ATTR_ADDRESS_ERROR_CODE = 0x8001,
	WARP_STUN_ATTR_ICMP = 0x8004,
	/* RFC 8445 (ICE), known so they are not reported as unknown */
	WARP_STUN_ATTR_PRIORITY = 0x0024,
	WARP_STUN_ATTR_USE_CANDIDATE = 0x0025,
	WARP_STUN_ATTR_ICE_CONTROLLED = 0x8029,
	WARP_STUN_ATTR_ICE_CONTROLLING = 0x802a,
};

/* CHANGE-REQUEST flags (RFC 5780 section 7.2). */
#define WARP_STUN_CHANGE_IP   0x4u
#define WARP_STUN_CHANGE_PORT 0x2u

/* Error codes used by this stack. */
enum {
	WARP_STUN_ERR_TRY_ALTERNATE = 300,
	WARP_STUN_ERR_BAD_REQUEST = 400,
	WARP_STUN_ERR_UNAUTHORIZED = 401,
	WARP_STUN_ERR_FORBIDDEN = 403,
	WARP_STUN_ERR_UNKNOWN_ATTRIBUTE = 420,
	WARP_STUN_ERR_ALLOCATION_MISMATCH = 437,
	WARP_STUN_ERR_STALE_NONCE = 438,
	WARP_STUN_ERR_ADDRESS_FAMILY = 440,
	WARP_STUN_ERR_WRONG_CREDENTIALS = 441,
	WARP_STUN_ERR_UNSUPPORTED_TRANSPORT = 442,
	WARP_STUN_ERR_ALLOCATION_QUOTA = 486,
	WARP_STUN_ERR_SERVER_ERROR = 500,
	WARP_STUN_ERR_INSUFFICIENT_CAPACITY = 508,
};

/* TURN channel numbers (RFC 8656 section 12). */
#define WARP_STUN_CHANNEL_MIN 0x4000
#define WARP_STUN_CHANNEL_MAX 0x4fff

struct warp_stun_attr {
	uint16_t type;
	uint16_t len; /* value length, without padding */
	uint32_t off; /* offset of the value from the start of the message */
};

struct warp_stun_msg {
	const uint8_t *buf;
	size_t len; /* 20 + header length */
	uint16_t method;
	uint8_t cls; /* enum warp_stun_class */
	uint8_t tid[WARP_STUN_TID_LEN];
	unsigned int nattrs;
	struct warp_stun_attr attrs[WARP_STUN_MAX_ATTRS];
	/* offsets of these attributes' headers; 0 when absent */
	uint32_t mi_off, mi256_off, fp_off;
	/* comprehension-required attribute types this codec does not know */
	unsigned int n_unknown;
	uint16_t unknown[WARP_STUN_MAX_UNKNOWN];
};

/* ---- quick checks for demultiplexing ---- */

/* A complete STUN message with the RFC 5389 magic cookie (datagram: len must be exact). */
bool warp_stun_is_message(const void *buf, size_t len);
/* Stream framing for STUN and ChannelData: total frame length (ChannelData padded to 4),
 * 0 when fewer than 4 bytes are available, -WARP_EMALFORMED for anything else. */
int warp_stun_frame_len(const void *buf, size_t len);

/* ---- decoding ---- */

/* Decodes exactly len bytes.  Errors: -WARP_ETRUNCATED (short header, attribute or length),
 * -WARP_ETRAILING (bytes after the message), -WARP_EMALFORMED (not STUN, bad length alignment,
 * bad attribute value, attribute after FINGERPRINT), -WARP_EVERSION (no magic cookie:
 * RFC 3489), -WARP_ERANGE (value out of range, too many attributes), -WARP_EAUTH (FINGERPRINT
 * mismatch). */
int warp_stun_decode(struct warp_stun_msg *m, const void *buf, size_t len);

/* First attribute of that type, or NULL. */
const struct warp_stun_attr *warp_stun_find(const struct warp_stun_msg *m, uint16_t type);
static inline const uint8_t *warp_stun_attr_value(const struct warp_stun_msg *m,
						  const struct warp_stun_attr *a)
{
	return m->buf + a->off;
}

/* Address attribute (XOR-* types are un-XORed).  -WARP_EMISSING when absent. */
int warp_stun_get_addr(const struct warp_stun_msg *m, uint16_t type, struct sockaddr_storage *out);
int warp_stun_attr_addr(const struct warp_stun_msg *m, const struct warp_stun_attr *a,
			struct sockaddr_storage *out);
/* Mapped address: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS. */
int warp_stun_get_mapped(const struct warp_stun_msg *m, struct sockaddr_storage *out);
/* ERROR-CODE: code 300..699 and the reason phrase (not NUL-terminated). */
int warp_stun_get_error(const struct warp_stun_msg *m, int *code, const char **reason,
			size_t *reason_len);
/* 32-bit attributes (LIFETIME, CHANGE-REQUEST, PRIORITY, TRANSACTION-TRANSMIT-COUNTER...). */
int warp_stun_get_u32(const struct warp_stun_msg *m, uint16_t type, uint32_t *out);
/* Raw value of any attribute (USERNAME, REALM, NONCE, SOFTWARE, DATA, ...). */
int warp_stun_get_bytes(const struct warp_stun_msg *m, uint16_t type, const uint8_t **val,
			size_t *len);
/* UNKNOWN-ATTRIBUTES list: number of types (up to max copied). */
int warp_stun_get_unknown_attrs(const struct warp_stun_msg *m, uint16_t *types, size_t max);
int warp_stun_get_channel(const struct warp_stun_msg *m, uint16_t *channel);
int warp_stun_get_requested_transport(const struct warp_stun_msg *m, uint8_t *proto);
int warp_stun_get_response_port(const struct warp_stun_msg *m, uint16_t *port);

/* Checks MESSAGE-INTEGRITY-SHA256 when present, else MESSAGE-INTEGRITY, with the key of the
 * credential mechanism in use (short-term: the password; long-term: warp_stun_long_term_key).
 * Returns 0, -WARP_EMISSING (neither present) or -WARP_EAUTH. */
int warp_stun_check_integrity(const struct warp_stun_msg *m, const void *key, size_t keylen);
/* Verifies one specific attribute; -WARP_EMISSING when that one is absent. */
int warp_stun_check_mi(const struct warp_stun_msg *m, const void *key, size_t keylen);
int warp_stun_check_mi256(const struct warp_stun_msg *m, const void *key, size_t keylen);

enum warp_stun_pw_alg {
	WARP_STUN_PW_MD5 = 1,	 /* key = MD5(user:realm:pass), 16 bytes */
	WARP_STUN_PW_SHA256 = 2, /* key = SHA-256(user:realm:pass), 32 bytes */
};
/* Long-term credential key (RFC 8489 section 9.2.2).  Strings are used as given (already
 * in their OpaqueString form).  Returns the key length or a negative error. */
int warp_stun_long_term_key(const char *user, const char *realm, const char *pass,
			    enum warp_stun_pw_alg alg, uint8_t out[32]);

/* CRC-32 (ISO-HDLC) as used by FINGERPRINT before the XOR. */
uint32_t warp_stun_crc32(const void *buf, size_t len);

/* ---- encoding ---- */

struct warp_stun_builder {
	uint8_t *buf;
	size_t cap;
	size_t len;
	int err;
	uint8_t state; /* 0 open, 1 after MI, 2 after MI-SHA256, 3 after FINGERPRINT */
};

/* Writes the header; returns 0 or -EMSGSIZE / -EINVAL (method > 0xfff, class > 3). */
int warp_stun_build_init(struct warp_stun_builder *b, void *buf, size_t cap, uint16_t method,
			 enum warp_stun_class cls, const uint8_t tid[WARP_STUN_TID_LEN]);
void warp_stun_add(struct warp_stun_builder *b, uint16_t type, const void *val, size_t len);
void warp_stun_add_u32(struct warp_stun_builder *b, uint16_t type, uint32_t v);
void warp_stun_add_str(struct warp_stun_builder *b, uint16_t type, const char *s);
/* Address attribute; XOR-* types are XORed with the cookie and transaction ID. */
void warp_stun_add_addr(struct warp_stun_builder *b, uint16_t type, const struct sockaddr *sa);
void warp_stun_add_error(struct warp_stun_builder *b, int code, const char *reason);
void warp_stun_add_unknown_attrs(struct warp_stun_builder *b, const uint16_t *types, size_t n);
void warp_stun_add_change_request(struct warp_stun_builder *b, uint32_t flags);
void warp_stun_add_response_port(struct warp_stun_builder *b, uint16_t port);
void warp_stun_add_padding(struct warp_stun_builder *b, size_t len);
void warp_stun_add_channel(struct warp_stun_builder *b, uint16_t channel);
void warp_stun_add_requested_transport(struct warp_stun_builder *b, uint8_t proto);
/* MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, full 32 bytes),
 * FINGERPRINT.  Each must come after the ones before it in this list. */
void warp_stun_add_mi(struct warp_stun_builder *b, const void *key, size_t keylen);
void warp_stun_add_mi256(struct warp_stun_builder *b, const void *key, size_t keylen);
void warp_stun_add_fingerprint(struct warp_stun_builder *b);
/* Total message length, or the first error. */
int warp_stun_build_end(struct warp_stun_builder *b);

/* ---- ChannelData (RFC 8656 section 12.4) ---- */

/* pad: round up to 4 bytes (required over TCP).  Returns the frame length or an error. */
int warp_stun_channel_data_encode(void *buf, size_t cap, uint16_t channel, const void *data,
				  size_t len, bool pad);
/* Accepts up to 3 bytes of padding after the data.  Errors: -WARP_ETRUNCATED,
 * -WARP_EMALFORMED (not a channel number), -WARP_ETRAILING. */
int warp_stun_channel_data_decode(const void *buf, size_t len, uint16_t *channel,
				  const uint8_t **data, size_t *data_len);

/* Names for logs ("Binding", "success", "XOR-MAPPED-ADDRESS"); "?" when unknown. */
const char *warp_stun_method_name(uint16_t method);
const char *warp_stun_class_name(unsigned int cls);
const char *warp_stun_attr_name(uint16_t type);

#endif
