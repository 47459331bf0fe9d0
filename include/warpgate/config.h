/* SPDX-License-Identifier: MIT */
/*
 * Node configuration: one value struct (no pointers to keep alive) that the JSON config file,
 * the command line and programs fill in.  warp_conf_test() is the test configuration: UPnP,
 * NTP, STUN, nickname servers, MQTT and BPF off, loopback only — a node then starts in well
 * under a millisecond.
 */
#ifndef WARPGATE_CONFIG_H
#define WARPGATE_CONFIG_H

#include <limits.h>
#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Traversal strategies, in the order auto_connect staggers them. */
enum warp_strategy {
	WARP_STRAT_DIRECT = 0,   /* "direct_connect" */
	WARP_STRAT_REVERSE,      /* "reverse_connect" */
	WARP_STRAT_TCP_PUNCH,    /* "tcp_punch" */
	WARP_STRAT_UDP_PUNCH,    /* "udp_punch" */
	WARP_STRAT_RANDOM_PROBE, /* "random_probe" */
	WARP_STRAT_TURN,         /* "turn" */
	WARP_STRAT_MAX,
};

const char *warp_strategy_name(unsigned int s);
/* Returns the strategy for a name or -EINVAL. */
int warp_strategy_parse(const char *name);

#define WARP_CONF_MAX_SERVERS 8
#define WARP_CONF_EP_LEN      256

enum warp_conf_flags {
	WARP_CONF_TEST_MODE = 1u << 0,  /* loopback only, nothing external */
	WARP_CONF_NO_UPNP = 1u << 1,
	WARP_CONF_NO_NTP = 1u << 2,
	WARP_CONF_NO_STUN = 1u << 3,
	WARP_CONF_NO_NAMES = 1u << 4,   /* no nickname registration or lookup */
	WARP_CONF_NO_MQTT = 1u << 5,
	WARP_CONF_NO_BPF = 1u << 6,
	WARP_CONF_NO_IPV6 = 1u << 7,
	WARP_CONF_NO_MCAST = 1u << 8,   /* no local-link multicast name resolution */
	WARP_CONF_NO_TURN = 1u << 9,
	WARP_CONF_NO_TCP = 1u << 10,
	WARP_CONF_NO_UDP = 1u << 11,
};

#define WARP_CONF_TEST_FLAGS                                                                       \
	(WARP_CONF_TEST_MODE | WARP_CONF_NO_UPNP | WARP_CONF_NO_NTP | WARP_CONF_NO_STUN |          \
	 WARP_CONF_NO_NAMES | WARP_CONF_NO_MQTT | WARP_CONF_NO_BPF | WARP_CONF_NO_MCAST |          \
	 WARP_CONF_NO_TURN)

struct warp_conf_turn {
	char server[WARP_CONF_EP_LEN]; /* HOST:PORT */
	char user[128];
	char password[128];
	char realm[128];
	bool tcp;                      /* TURN over TCP to the server */
};

struct warp_conf_names {
	char server[WARP_CONF_EP_LEN];
	char key_hex[2 * 33 + 1];      /* pinned server key ("" = trust on first use) */
};

struct warp_conf {
	char home[PATH_MAX];           /* "" = $WARPGATE_HOME or ~/.warpgate */
	char name[64];                 /* identity name ("" = default from the machine id) */
	unsigned int flags;            /* enum warp_conf_flags */
	uint16_t port;                 /* TCP+UDP listen port (0 = stable per identity) */
	int log_level;                 /* enum warp_log_level, or -1 = leave as is */
	char tld[16];                  /* nickname top-level domain, default "p2p" */
	size_t nifaces;
	char ifaces[WARP_CONF_MAX_SERVERS][IF_NAMESIZE]; /* restrict to these (none = all) */
	size_t nstun;
	char stun[WARP_CONF_MAX_SERVERS][WARP_CONF_EP_LEN];
	size_t nturn;
	struct warp_conf_turn turn[4];
	size_t nmqtt;
	char mqtt[WARP_CONF_MAX_SERVERS][WARP_CONF_EP_LEN];
	size_t nnames;
	struct warp_conf_names names[4];
	size_t nntp;
	char ntp[WARP_CONF_MAX_SERVERS][WARP_CONF_EP_LEN];
	uint32_t strategies;           /* bit mask of enum warp_strategy (0 = all) */
	uint32_t keepalive_ms;         /* 0 = learnt / default */
	uint32_t idle_timeout_ms;      /* pipe idle timeout (0 = default) */
	uint32_t connect_timeout_ms;   /* auto_connect overall budget (0 = default) */
	unsigned int workers;          /* UDP receive workers (SO_REUSEPORT group), 0 = 1 */
};

/* Defaults: everything on, no servers configured. */
void warp_conf_init(struct warp_conf *c);
/* The test configuration (see above). */
void warp_conf_test(struct warp_conf *c);
/* Loads a JSON file over c.  Unknown keys and bad values fail with -WARP_ECONFIG and a
 * message naming the file, the key path and what was expected in err. */
int warp_conf_load_file(struct warp_conf *c, const char *path, char *err, size_t errlen);
int warp_conf_load_string(struct warp_conf *c, const char *json, const char *origin, char *err,
			  size_t errlen);
/* Adds a server of a kind ("stun", "turn", "mqtt", "nameserver", "ntp") given as text
 * (turn: USER:PASS@HOST:PORT; nameserver: HOST:PORT[,KEYHEX]). */
int warp_conf_add(struct warp_conf *c, const char *kind, const char *text, char *err,
		  size_t errlen);
/* Renders c as JSON (malloc'd). */
char *warp_conf_to_json(const struct warp_conf *c);

#ifdef __cplusplus
}
#endif
#endif
