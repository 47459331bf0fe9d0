/* SPDX-License-Identifier: MIT */
/*
 * Nicknames: a registration-free key-value service where a name belongs to the first key that
 * signs it (see docs/protocol-names.md and namebumpd(8)).
 *
 * A client sends every operation to all configured servers at once and, for lookups, races
 * them against the local link (multicast query answered by the name's owner), so two machines
 * on one LAN resolve each other with no server at all.  Every record is signed by its owner
 * and checked here, so a server can withhold a record but never forge one; replies are also
 * signed by the server key, which may be pinned per server.
 *
 * All calls belong to the thread that runs the loop.  Callbacks run on the loop, exactly once
 * per started operation (also on timeout); the result is only valid during the callback.
 */
#ifndef WARPGATE_NAME_H
#define WARPGATE_NAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/identity.h>
#include <warpgate/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WARP_NAME_VALUE_MAX   1024 /* bytes of value (a node address blob) */
#define WARP_NAME_FQ_MAX      63   /* characters of a canonical name, TLD included */
#define WARP_NAME_TLD_DEFAULT "p2p"
#define WARP_NAME_PORT	      5300 /* default namebumpd port (UDP and TCP) */
#define WARP_NAME_LOCAL_PORT  5380 /* default local-link multicast port */

/* What a PUT does when the quota of the sender's address is full. */
enum warp_name_bump {
	WARP_NAME_BUMP = 0,    /* evict the sender's oldest expired name, then store */
	WARP_NAME_NO_BUMP = 1, /* store nothing and report it (result.stored = false, err 0) */
	WARP_NAME_ERROR = 2,   /* store nothing and fail with -WARP_EQUOTA */
};

/* Where an answer came from. */
#define WARP_NAME_SRC_NONE  (-1)
#define WARP_NAME_SRC_LOCAL (-2) /* the local link (multicast) */

struct warp_name_result {
	int err;    /* 0, or a negative errno / -WARP_E* */
	int server; /* index in add order of the server that answered, or WARP_NAME_SRC_* */
	char server_addr[64];		 /* "host:port" of that server, "local" for the link */
	char name[WARP_NAME_FQ_MAX + 1]; /* canonical name */
	bool found;			 /* GET: a live record was returned */
	bool deleted;			 /* GET: the owner deleted it (tombstone) */
	bool stored;			 /* PUT/DEL: the record is stored on at least one server */
	unsigned int n_ok;		 /* servers that accepted (PUT/DEL) */
	unsigned int n_err;		 /* servers that refused or did not answer */
	uint8_t value[WARP_NAME_VALUE_MAX];
	size_t value_len;
	uint8_t owner[WARP_PUBKEY_LEN]; /* the key to expect when connecting to this peer */
	uint64_t updated_ms;		/* the owner's timestamp, ms since the Unix epoch */
};

typedef void (*warp_name_cb)(const struct warp_name_result *res, void *user);

struct warp_name_client_opts {
	const char *tld;	 /* appended to names without one; NULL: "p2p" */
	unsigned int timeout_ms; /* whole operation; 0: 3000 */
	unsigned int retry_ms;	 /* first retransmission; doubles; 0: 200 */
	unsigned int get_pad;	 /* pad GET datagrams to this size (replies never exceed the
				   * request); 0: 1024 */
	int local;		 /* local-link lookups: -1 off, 1 on, 0 auto (on when no server) */
	bool seal;		 /* encrypt requests to servers with a pinned key */
	int64_t clock_offset_ms; /* added to the wall clock for `updated` (an NTP correction) */
	/* Local link: group addresses and port, NULL/0 for the defaults
	 * (239.255.82.80 and ff02::5750, port 5380).  Tests use unicast loopback here. */
	const char *local_group4;
	const char *local_group6;
	uint16_t local_port;
};

struct warp_name_client;

struct warp_name_client *warp_name_client_new(struct warp_loop *loop,
					      const struct warp_name_client_opts *opts);
/* Pending operations complete with -ECANCELED before the client is freed. */
void warp_name_client_free(struct warp_name_client *c);
/* "host:port", "[v6]:port" or "host" (port 5300); pubkey pins the server key (NULL: trust on
 * first use, then pinned for the client's life).  Returns the server index or an error. */
int warp_name_client_add_server(struct warp_name_client *c, const char *hostport,
				const uint8_t pubkey[WARP_PUBKEY_LEN]);
/* Parses "HOST:PORT[#PUBKEYHEX]" or "HOST:PORT[,PUBKEYHEX]" (the --nameserver option). */
int warp_name_client_add_server_spec(struct warp_name_client *c, const char *spec);
unsigned int warp_name_client_server_count(const struct warp_name_client *c);
/* Ask every server over TCP first (on: UDP is known to be blocked here) or UDP first again.
 * Without it a server that never answers UDP is asked over TCP after two datagrams. */
void warp_name_client_prefer_tcp(struct warp_name_client *c, bool on);

/* Signs {name, value, owner = id, updated = now ms (strictly increasing per client)} and
 * stores it on every server. */
int warp_name_put(struct warp_name_client *c, const struct warp_identity *id, const char *name,
		  const void *value, size_t len, enum warp_name_bump bump, warp_name_cb cb,
		  void *user);
/* First verified live record from any server or the local link wins. */
int warp_name_get(struct warp_name_client *c, const char *name, warp_name_cb cb, void *user);
/* Leaves a signed tombstone so an older PUT cannot bring the name back. */
int warp_name_delete(struct warp_name_client *c, const struct warp_identity *id, const char *name,
		     warp_name_cb cb, void *user);

/* Blocking wrappers: run the loop until the operation completes; return res->err. */
int warp_name_put_sync(struct warp_name_client *c, const struct warp_identity *id, const char *name,
		       const void *value, size_t len, enum warp_name_bump bump,
		       struct warp_name_result *res);
int warp_name_get_sync(struct warp_name_client *c, const char *name, struct warp_name_result *res);
int warp_name_delete_sync(struct warp_name_client *c, const struct warp_identity *id,
			  const char *name, struct warp_name_result *res);

/*
 * Resolver for peer handles (warp_peer_find("alice")): resolve when the handle connects.
 * The result's value is the peer's address blob and owner the key its handshake must prove.
 * Same as warp_name_get() but also answers -WARP_ENONAMESERVER when neither a server nor the
 * local link is available.
 */
int warp_name_resolve(struct warp_name_client *c, const char *name, warp_name_cb cb, void *user);

/* Canonical form: lowercase, trailing dot dropped, tld appended when absent (NULL: "p2p").
 * Labels are [a-z0-9-] (no leading/trailing '-'), the whole name at most 63 characters. */
int warp_name_canonical(const char *in, const char *tld, char out[WARP_NAME_FQ_MAX + 1]);

/*
 * Local-link responder: answers multicast queries for the names it publishes, each answer
 * signed by the name's key and bound to the query's id.  Create it when the node starts
 * (after its identity is loaded), publish the node's name and address blob, publish again when
 * the address changes, free it when the node stops.
 */
struct warp_name_responder;

struct warp_name_responder *warp_name_responder_new(struct warp_loop *loop,
						    const struct warp_name_client_opts *opts);
void warp_name_responder_free(struct warp_name_responder *r);
/* Adds or replaces the record for name (a copy of the value is kept; id must outlive r). */
int warp_name_responder_publish(struct warp_name_responder *r, const struct warp_identity *id,
				const char *name, const void *value, size_t len);
int warp_name_responder_withdraw(struct warp_name_responder *r, const char *name);

#ifdef __cplusplus
}
#endif
#endif
