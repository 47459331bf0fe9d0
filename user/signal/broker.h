/* SPDX-License-Identifier: MIT */
/*
 * One MQTT broker connection on a warp_loop: libmosquitto without its threads (the loop
 * watches mosquitto_socket() and calls mosquitto_loop_read/write/misc).  MQTT 3.1.1, clean
 * session, QoS 1 both ways.  Subscriptions are remembered and renewed on every connection;
 * a publish while disconnected waits in a bounded queue until the next connection or its
 * expiry.  A lost or refused connection is retried after an exponential backoff with jitter.
 *
 * Host names are resolved by libmosquitto with getaddrinfo(), which blocks: configure
 * brokers by address literal or /etc/hosts names when the loop must never stall.
 */
#ifndef WARP_SIGNAL_BROKER_H
#define WARP_SIGNAL_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warpgate/loop.h>

#define WARP_BROKER_HOST_MAX	 253
#define WARP_BROKER_DEFAULT_PORT 1883

struct warp_broker_addr {
	char host[WARP_BROKER_HOST_MAX + 1];
	uint16_t port;
};

/* "host", "host:port", "[v6]" or "[v6]:port" (port defaults to 1883). */
int warp_broker_addr_parse(const char *s, struct warp_broker_addr *out);
/* "host:port", or "[v6]:port" for IPv6 literals. */
int warp_broker_addr_format(const struct warp_broker_addr *a, char *buf, size_t len);
/* Same broker: host compared case-insensitively, then port. */
bool warp_broker_addr_equal(const struct warp_broker_addr *a, const struct warp_broker_addr *b);

enum warp_broker_state {
	WARP_BROKER_IDLE = 0,	/* not started, or stopped */
	WARP_BROKER_CONNECTING, /* TCP connect and CONNECT sent, waiting for CONNACK */
	WARP_BROKER_CONNECTED,	/* CONNACK accepted; subscriptions in flight */
	WARP_BROKER_READY,	/* every subscription acknowledged */
	WARP_BROKER_BACKOFF,	/* waiting before the next attempt */
};

const char *warp_broker_state_name(enum warp_broker_state st);

struct warp_broker;

struct warp_broker_ops {
	void (*on_message)(struct warp_broker *b, const char *topic, const void *payload,
			   size_t len, void *user);
	/* err: why the connection went down (negative), 0 otherwise. */
	void (*on_state)(struct warp_broker *b, enum warp_broker_state st, int err, void *user);
};

struct warp_broker_opts {
	uint32_t connect_timeout_ms; /* TCP + CONNACK; default 5000 */
	uint32_t backoff_min_ms;     /* first retry delay; default 500 */
	uint32_t backoff_max_ms;     /* cap; default 30000 */
	uint16_t keepalive_s;	     /* MQTT keepalive; default 30 */
	uint16_t queue_max;	     /* publishes held while disconnected; default 64 */
};

struct warp_broker_stats {
	uint64_t connects;   /* CONNACKs accepted */
	uint64_t failures;   /* attempts or connections that ended in error */
	uint64_t published;  /* handed to the connection */
	uint64_t queued;     /* held for a later connection */
	uint64_t expired;    /* dropped from the queue unsent */
	uint64_t received;   /* messages delivered to on_message */
	uint32_t backoff_ms; /* current (last chosen) retry delay */
};

/* NULL opts: defaults.  ops->on_* may be NULL.  The broker does nothing until started. */
struct warp_broker *warp_broker_new(struct warp_loop *loop, const struct warp_broker_addr *addr,
				    const struct warp_broker_opts *opts,
				    const struct warp_broker_ops *ops, void *user);
/* Disconnects and frees.  Not from inside this broker's own callbacks. */
void warp_broker_free(struct warp_broker *b);

/* Starts connecting (no-op when already started). */
int warp_broker_start(struct warp_broker *b);
/* Disconnects and stays idle; queued publishes are kept until they expire. */
void warp_broker_stop(struct warp_broker *b);

/* QoS 1 subscription, sent now if connected and renewed on every connection. */
int warp_broker_subscribe(struct warp_broker *b, const char *topic);
/* QoS 1 publish: sent now when connected, else queued until expires_ms (warp_time_ms()
 * clock; 0: the queue's default of 30 s).  -ENOBUFS when the queue is full. */
int warp_broker_publish(struct warp_broker *b, const char *topic, const void *payload, size_t len,
			uint64_t expires_ms);

enum warp_broker_state warp_broker_get_state(const struct warp_broker *b);
const struct warp_broker_addr *warp_broker_get_addr(const struct warp_broker *b);
void warp_broker_get_stats(const struct warp_broker *b, struct warp_broker_stats *st);

#endif
