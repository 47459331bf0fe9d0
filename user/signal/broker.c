// SPDX-License-Identifier: MIT
/*
 * MQTT broker client on warp_loop.  libmosquitto does the protocol; this file owns the socket
 * registration, timers, reconnection and the offline queue.
 *
 * libmosquitto closes its socket itself (lost connection, keepalive timeout, DISCONNECT) and
 * may reuse the number on the next connect, so the fd is removed from the loop in every
 * path that can close it (on_disconnect, before a reconnect) and re-synchronised with
 * mosquitto_socket() after every libmosquitto call.
 */
#define LOG_COMPONENT "mqtt"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <mosquitto.h>

#include <warpgate/error.h>

#include "core/bytes.h"
#include "core/log.h"
#include "core/util.h"
#include "signal/broker.h"

#define TICK_MS		 1000
#define QUEUE_DEFAULT_MS 30000

struct queued {
	struct queued *next;
	uint64_t expires;
	char *topic;
	size_t len;
	uint8_t data[];
};

struct sub {
	char *topic;
	int mid;    /* SUBSCRIBE in flight on this connection, or -1 */
	bool acked; /* acknowledged on this connection */
};

/* getaddrinfo() blocks, and peers advertise broker names we must reach: names are resolved
 * on a short-lived thread that signals an eventfd watched by the loop.  The job is shared by
 * the thread and the broker and freed by whichever lets go last, so a broker freed during a
 * lookup neither waits for it nor leaves the thread writing to a closed (or reused) fd. */
struct resolve_job {
	atomic_int refs;
	int efd;
	char host[WARP_BROKER_HOST_MAX + 1];
	int err;
	unsigned int naddrs;
	char addrs[4][INET6_ADDRSTRLEN];
};

struct warp_broker {
	struct warp_loop *loop;
	struct warp_broker_addr addr;
	char name[WARP_BROKER_HOST_MAX + 10];
	struct warp_broker_opts opts;
	struct warp_broker_ops ops;
	void *user;

	struct mosquitto *mosq;
	struct resolve_job *job; /* lookup in progress */
	int fd;
	unsigned int fd_events;

	enum warp_broker_state state;
	unsigned int failures;	  /* consecutive, drives the backoff */
	struct warp_timer *retry; /* connect timeout or backoff */
	struct warp_timer *tick;  /* keepalive and queue expiry */

	struct sub *subs;
	size_t nsubs;

	struct queued *qhead, *qtail;
	size_t qlen;

	struct warp_broker_stats stats;
	int in_cb;  /* depth of libmosquitto calls that may run our callbacks */
	bool dying; /* freed from inside a callback: destroy when it unwinds */
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_err;

static void lib_init(void)
{
	lib_err = mosquitto_lib_init() == MOSQ_ERR_SUCCESS ? 0 : -EIO;
}

static int mosq_err(int rc)
{
	switch (rc) {
	case MOSQ_ERR_SUCCESS:
		return 0;
	case MOSQ_ERR_NOMEM:
		return -ENOMEM;
	case MOSQ_ERR_INVAL:
		return -EINVAL;
	case MOSQ_ERR_NO_CONN:
		return -ENOTCONN;
	case MOSQ_ERR_CONN_REFUSED:
		return -ECONNREFUSED;
	case MOSQ_ERR_CONN_LOST:
		return -ECONNRESET;
	case MOSQ_ERR_PAYLOAD_SIZE:
		return -EMSGSIZE;
	case MOSQ_ERR_EAI:
		return -EHOSTUNREACH;
	case MOSQ_ERR_KEEPALIVE:
		return -ETIMEDOUT;
	case MOSQ_ERR_PROTOCOL:
	case MOSQ_ERR_MALFORMED_PACKET:
		return -EPROTO;
	case MOSQ_ERR_ERRNO:
		return errno ? -errno : -EIO;
	default:
		return -EIO;
	}
}

const char *warp_broker_state_name(enum warp_broker_state st)
{
	switch (st) {
	case WARP_BROKER_IDLE:
		return "idle";
	case WARP_BROKER_CONNECTING:
		return "connecting";
	case WARP_BROKER_CONNECTED:
		return "connected";
	case WARP_BROKER_READY:
		return "ready";
	case WARP_BROKER_BACKOFF:
		return "backoff";
	}
	return "?";
}

/* ---- addresses ---- */

static bool host_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == ':' || c == '_' || c == '%';
}

static int parse_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;

	if (!*s)
		return -WARP_EMALFORMED;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -WARP_EMALFORMED;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 65535)
			return -WARP_ERANGE;
	}
	if (v == 0)
		return -WARP_ERANGE;
	*port = (uint16_t)v;
	return 0;
}

int warp_broker_addr_parse(const char *s, struct warp_broker_addr *out)
{
	const char *host = s, *end, *colon;
	size_t hlen;
	int err;

	memset(out, 0, sizeof(*out));
	out->port = WARP_BROKER_DEFAULT_PORT;
	if (!s || !*s)
		return -WARP_EMALFORMED;
	if (s[0] == '[') {
		host = s + 1;
		end = strchr(host, ']');
		if (!end)
			return -WARP_EMALFORMED;
		if (end[1] == ':') {
			err = parse_port(end + 2, &out->port);
			if (err)
				return err;
		} else if (end[1]) {
			return -WARP_EMALFORMED;
		}
	} else {
		colon = strchr(s, ':');
		end = s + strlen(s);
		/* One colon: host:port.  More: a bare IPv6 literal. */
		if (colon && !strchr(colon + 1, ':')) {
			err = parse_port(colon + 1, &out->port);
			if (err)
				return err;
			end = colon;
		}
	}
	hlen = (size_t)(end - host);
	if (hlen == 0 || hlen > WARP_BROKER_HOST_MAX)
		return -WARP_ERANGE;
	for (size_t i = 0; i < hlen; i++)
		if (!host_char_ok(host[i]))
			return -WARP_EMALFORMED;
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	return 0;
}

int warp_broker_addr_format(const struct warp_broker_addr *a, char *buf, size_t len)
{
	int n;

	if (strchr(a->host, ':'))
		n = snprintf(buf, len, "[%s]:%u", a->host, a->port);
	else
		n = snprintf(buf, len, "%s:%u", a->host, a->port);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

bool warp_broker_addr_equal(const struct warp_broker_addr *a, const struct warp_broker_addr *b)
{
	return a->port == b->port && !strcasecmp(a->host, b->host);
}

/* ---- socket registration ---- */

static void on_io(struct warp_loop *loop, int fd, unsigned int events, void *user);
static void job_abandon(struct warp_broker *b);

static void drop_fd(struct warp_broker *b)
{
	if (b->fd >= 0)
		warp_loop_del_fd(b->loop, b->fd);
	b->fd = -1;
}

static void sync_fd(struct warp_broker *b)
{
	int fd = mosquitto_socket(b->mosq);
	unsigned int ev;

	if (fd != b->fd)
		drop_fd(b);
	if (fd < 0)
		return;
	ev = WARP_EV_READ | (mosquitto_want_write(b->mosq) ? WARP_EV_WRITE : 0);
	if (b->fd < 0) {
		if (warp_loop_add_fd(b->loop, fd, ev, on_io, b) == 0) {
			b->fd = fd;
			b->fd_events = ev;
		}
	} else if (ev != b->fd_events && warp_loop_mod_fd(b->loop, fd, ev) == 0) {
		b->fd_events = ev;
	}
}

/* ---- state machine ---- */

static void set_state(struct warp_broker *b, enum warp_broker_state st, int err)
{
	if (b->state == st)
		return;
	pr_debug("%s: %s -> %s%s%s", b->name, warp_broker_state_name(b->state),
		 warp_broker_state_name(st), err ? ": " : "", err ? warp_strerror(err) : "");
	b->state = st;
	if (b->ops.on_state)
		b->ops.on_state(b, st, err, b->user);
}

/* Exponential backoff with jitter: the delay doubles per consecutive failure up to the cap,
 * and the actual wait is drawn from [delay/2, delay] so a fleet that lost the same broker
 * does not come back in lockstep. */
static uint32_t next_backoff(struct warp_broker *b)
{
	uint64_t d = b->opts.backoff_min_ms;

	for (unsigned int i = 0; i < b->failures && d < b->opts.backoff_max_ms; i++)
		d *= 2;
	if (d > b->opts.backoff_max_ms)
		d = b->opts.backoff_max_ms;
	b->failures++;
	return (uint32_t)(d / 2 + warp_random_uniform((uint32_t)(d - d / 2) + 1));
}

/* Idempotent: the first report of a failure schedules the retry, later ones are ignored. */
static void conn_lost(struct warp_broker *b, int err)
{
	if (b->state != WARP_BROKER_CONNECTING && b->state != WARP_BROKER_CONNECTED &&
	    b->state != WARP_BROKER_READY)
		return;
	drop_fd(b);
	job_abandon(b);
	b->stats.failures++;
	b->stats.backoff_ms = next_backoff(b);
	if (b->state != WARP_BROKER_CONNECTING)
		pr_info("%s: connection lost (%s), retry in %u ms", b->name, warp_strerror(err),
			b->stats.backoff_ms);
	else
		pr_debug("%s: connect failed (%s), retry in %u ms", b->name, warp_strerror(err),
			 b->stats.backoff_ms);
	warp_timer_arm_ms(b->retry, b->stats.backoff_ms);
	set_state(b, WARP_BROKER_BACKOFF, err);
}

static void job_put(struct resolve_job *j)
{
	if (atomic_fetch_sub(&j->refs, 1) == 1) {
		close(j->efd);
		free(j);
	}
}

static void *resolve_thread(void *arg)
{
	struct resolve_job *j = arg;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
	struct addrinfo *res = NULL;
	uint64_t one = 1;
	int rc;

	rc = getaddrinfo(j->host, NULL, &hints, &res);
	if (rc)
		j->err = rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	for (struct addrinfo *ai = res; ai && j->naddrs < WARP_ARRAY_SIZE(j->addrs);
	     ai = ai->ai_next) {
		const void *a;

		if (ai->ai_family == AF_INET)
			a = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			a = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		else
			continue;
		if (inet_ntop(ai->ai_family, a, j->addrs[j->naddrs], INET6_ADDRSTRLEN))
			j->naddrs++;
	}
	if (!j->err && !j->naddrs)
		j->err = -EHOSTUNREACH;
	if (res)
		freeaddrinfo(res);
	if (write(j->efd, &one, sizeof(one)) < 0)
		j->err = j->err ? j->err : -EIO;
	job_put(j);
	return NULL;
}

static void job_abandon(struct warp_broker *b)
{
	if (!b->job)
		return;
	warp_loop_del_fd(b->loop, b->job->efd);
	job_put(b->job);
	b->job = NULL;
}

static void mosq_connect(struct warp_broker *b, const char *numeric)
{
	int rc;

	b->in_cb++;
	rc = mosquitto_connect_async(b->mosq, numeric, b->addr.port, b->opts.keepalive_s);
	b->in_cb--;
	if (b->dying)
		return;
	if (rc != MOSQ_ERR_SUCCESS) {
		conn_lost(b, mosq_err(rc));
		return;
	}
	sync_fd(b);
}

static void on_resolved(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_broker *b = user;
	struct resolve_job *j = b->job;
	char addr[INET6_ADDRSTRLEN];
	int err;

	if (!j || j->efd != fd)
		return;
	err = j->err;
	/* Each failed attempt moves on to the next address (e.g. ::1 then 127.0.0.1). */
	if (!err)
		memcpy(addr, j->addrs[b->failures % j->naddrs], sizeof(addr));
	job_abandon(b);
	if (err) {
		pr_debug("%s: cannot resolve: %s", b->name, warp_strerror(err));
		conn_lost(b, err);
		return;
	}
	pr_debug("%s: resolved to %s", b->name, addr);
	mosq_connect(b, addr);
}

static int resolve_start(struct warp_broker *b)
{
	struct resolve_job *j = calloc(1, sizeof(*j));
	pthread_attr_t attr;
	pthread_t th;
	int err;

	if (!j)
		return -ENOMEM;
	atomic_init(&j->refs, 2);
	memcpy(j->host, b->addr.host, sizeof(j->host));
	j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (j->efd < 0) {
		err = -errno;
		free(j);
		return err;
	}
	err = warp_loop_add_fd(b->loop, j->efd, WARP_EV_READ, on_resolved, b);
	if (err) {
		close(j->efd);
		free(j);
		return err;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	err = -pthread_create(&th, &attr, resolve_thread, j);
	pthread_attr_destroy(&attr);
	if (err) {
		warp_loop_del_fd(b->loop, j->efd);
		close(j->efd);
		free(j);
		return err;
	}
	b->job = j;
	return 0;
}

static bool is_literal(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

/* One attempt: resolve (names, off the loop thread) then connect; the connect timeout
 * covers both. */
static void connect_now(struct warp_broker *b)
{
	int err;

	drop_fd(b);
	job_abandon(b);
	set_state(b, WARP_BROKER_CONNECTING, 0);
	if (b->state != WARP_BROKER_CONNECTING) /* stopped from on_state */
		return;
	warp_timer_arm_ms(b->retry, b->opts.connect_timeout_ms);
	if (is_literal(b->addr.host)) {
		mosq_connect(b, b->addr.host);
		return;
	}
	err = resolve_start(b);
	if (err)
		conn_lost(b, err);
}

static void on_retry(struct warp_timer *t, void *user)
{
	struct warp_broker *b = user;

	if (b->state == WARP_BROKER_BACKOFF) {
		connect_now(b);
	} else if (b->state == WARP_BROKER_CONNECTING) {
		pr_debug("%s: no CONNACK within %u ms", b->name, b->opts.connect_timeout_ms);
		conn_lost(b, -ETIMEDOUT);
		/* The half-open socket is closed by the next reconnect (or the free). */
	}
}

static void queue_expire(struct warp_broker *b, uint64_t now)
{
	struct queued **pp = &b->qhead, *q;

	b->qtail = NULL;
	while ((q = *pp)) {
		if (q->expires < now) {
			*pp = q->next;
			b->qlen--;
			b->stats.expired++;
			free(q->topic);
			free(q);
			continue;
		}
		b->qtail = q;
		pp = &q->next;
	}
}

static void on_tick(struct warp_timer *t, void *user)
{
	struct warp_broker *b = user;
	int rc;

	queue_expire(b, warp_time_ms());
	if (b->state == WARP_BROKER_CONNECTED || b->state == WARP_BROKER_READY) {
		b->in_cb++;
		rc = mosquitto_loop_misc(b->mosq);
		b->in_cb--;
		if (b->dying)
			return;
		if (rc != MOSQ_ERR_SUCCESS)
			conn_lost(b, mosq_err(rc));
		else
			sync_fd(b);
	}
	if (b->state != WARP_BROKER_IDLE)
		warp_timer_arm_ms(t, TICK_MS);
}

static int send_sub(struct warp_broker *b, struct sub *s)
{
	int rc = mosquitto_subscribe(b->mosq, &s->mid, s->topic, 1);

	if (rc != MOSQ_ERR_SUCCESS) {
		s->mid = -1;
		return mosq_err(rc);
	}
	return 0;
}

static void check_ready(struct warp_broker *b)
{
	for (size_t i = 0; i < b->nsubs; i++)
		if (!b->subs[i].acked)
			return;
	if (b->state == WARP_BROKER_CONNECTED)
		set_state(b, WARP_BROKER_READY, 0);
}

static void flush_queue(struct warp_broker *b)
{
	uint64_t now = warp_time_ms();
	struct queued *q;

	while ((q = b->qhead)) {
		int rc = MOSQ_ERR_SUCCESS;

		if (q->expires >= now)
			rc = mosquitto_publish(b->mosq, NULL, q->topic, (int)q->len, q->data, 1,
					       false);
		if (rc == MOSQ_ERR_NO_CONN)
			break;
		if (q->expires < now)
			b->stats.expired++;
		else if (rc == MOSQ_ERR_SUCCESS)
			b->stats.published++;
		b->qhead = q->next;
		b->qlen--;
		free(q->topic);
		free(q);
	}
	if (!b->qhead)
		b->qtail = NULL;
}

/* ---- libmosquitto callbacks (run inside mosquitto_loop_*) ---- */

static void cb_connect(struct mosquitto *mosq, void *obj, int rc)
{
	struct warp_broker *b = obj;

	if (b->dying || b->state != WARP_BROKER_CONNECTING)
		return;
	if (rc != 0) {
		pr_warn("%s: connection refused: %s", b->name, mosquitto_connack_string(rc));
		conn_lost(b, -ECONNREFUSED);
		return;
	}
	warp_timer_cancel(b->retry);
	b->failures = 0;
	b->stats.connects++;
	pr_debug("%s: connected", b->name);
	set_state(b, WARP_BROKER_CONNECTED, 0);
	if (b->state != WARP_BROKER_CONNECTED)
		return;
	for (size_t i = 0; i < b->nsubs; i++) {
		b->subs[i].acked = false;
		send_sub(b, &b->subs[i]);
	}
	flush_queue(b);
	check_ready(b);
}

static void cb_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
			 const int *granted)
{
	struct warp_broker *b = obj;

	if (b->dying)
		return;
	for (size_t i = 0; i < b->nsubs; i++) {
		if (b->subs[i].mid != mid)
			continue;
		b->subs[i].mid = -1;
		if (qos_count < 1 || granted[0] > 2) {
			pr_warn("%s: subscription to %s refused", b->name, b->subs[i].topic);
			continue;
		}
		b->subs[i].acked = true;
	}
	check_ready(b);
}

static void cb_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
	struct warp_broker *b = obj;

	/* The socket is already closed: forget it before its number is reused. */
	drop_fd(b);
	if (b->dying)
		return;
	conn_lost(b, rc ? mosq_err(rc) : -ECONNRESET);
}

static void cb_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
	struct warp_broker *b = obj;

	if (b->dying || m->payloadlen < 0)
		return;
	b->stats.received++;
	if (b->ops.on_message)
		b->ops.on_message(b, m->topic, m->payload, (size_t)m->payloadlen, b->user);
}

static void cb_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
	struct warp_broker *b = obj;

	if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
		pr_debug("%s: libmosquitto: %s", b->name, str);
}

static void on_io(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct warp_broker *b = user;
	int rc = MOSQ_ERR_SUCCESS;

	b->in_cb++;
	if (events & (WARP_EV_READ | WARP_EV_ERROR))
		rc = mosquitto_loop_read(b->mosq, 1);
	/* Write right away what the read queued (PUBACKs, replies published by handlers). */
	if (rc == MOSQ_ERR_SUCCESS && !b->dying && mosquitto_socket(b->mosq) >= 0 &&
	    ((events & WARP_EV_WRITE) || mosquitto_want_write(b->mosq)))
		rc = mosquitto_loop_write(b->mosq, 1);
	b->in_cb--;
	if (b->dying)
		return;
	if (rc != MOSQ_ERR_SUCCESS)
		conn_lost(b, mosq_err(rc));
	else if (b->state == WARP_BROKER_CONNECTING || b->state == WARP_BROKER_CONNECTED ||
		 b->state == WARP_BROKER_READY)
		sync_fd(b);
}

/* ---- public API ---- */

struct warp_broker *warp_broker_new(struct warp_loop *loop, const struct warp_broker_addr *addr,
				    const struct warp_broker_opts *opts,
				    const struct warp_broker_ops *ops, void *user)
{
	struct warp_broker *b = NULL;
	char id[24];
	uint8_t rnd[10];
	int err;

	pthread_once(&lib_once, lib_init);
	if (lib_err) {
		errno = -lib_err;
		return NULL;
	}
	if (!loop || !addr || !addr->host[0] || !addr->port) {
		errno = EINVAL;
		return NULL;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->loop = loop;
	b->addr = *addr;
	b->fd = -1;
	warp_broker_addr_format(addr, b->name, sizeof(b->name));
	if (opts)
		b->opts = *opts;
	if (!b->opts.connect_timeout_ms)
		b->opts.connect_timeout_ms = 5000;
	if (!b->opts.backoff_min_ms)
		b->opts.backoff_min_ms = 500;
	if (!b->opts.backoff_max_ms)
		b->opts.backoff_max_ms = 30000;
	if (b->opts.backoff_max_ms < b->opts.backoff_min_ms)
		b->opts.backoff_max_ms = b->opts.backoff_min_ms;
	if (b->opts.keepalive_s < 5)
		b->opts.keepalive_s = 30;
	if (!b->opts.queue_max)
		b->opts.queue_max = 64;
	if (ops)
		b->ops = *ops;
	b->user = user;

	/* A random client id: a stable one would link a node's sessions across restarts. */
	warp_random(rnd, sizeof(rnd));
	memcpy(id, "wg-", 3);
	warp_hex_encode(id + 3, rnd, sizeof(rnd));
	b->mosq = mosquitto_new(id, true, b);
	b->retry = warp_timer_new(loop, on_retry, b);
	b->tick = warp_timer_new(loop, on_tick, b);
	if (!b->mosq || !b->retry || !b->tick) {
		err = ENOMEM;
		goto fail;
	}
	mosquitto_int_option(b->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	/* Signalling is latency-bound and tiny: no Nagle. */
	mosquitto_int_option(b->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_connect_callback_set(b->mosq, cb_connect);
	mosquitto_disconnect_callback_set(b->mosq, cb_disconnect);
	mosquitto_subscribe_callback_set(b->mosq, cb_subscribe);
	mosquitto_message_callback_set(b->mosq, cb_message);
	mosquitto_log_callback_set(b->mosq, cb_log);
	return b;
fail:
	warp_broker_free(b);
	errno = err;
	return NULL;
}

static void destroy(void *user)
{
	struct warp_broker *b = user;
	struct queued *q, *n;

	if (b->mosq)
		mosquitto_destroy(b->mosq);
	warp_timer_free(b->retry);
	warp_timer_free(b->tick);
	for (q = b->qhead; q; q = n) {
		n = q->next;
		free(q->topic);
		free(q);
	}
	for (size_t i = 0; i < b->nsubs; i++)
		free(b->subs[i].topic);
	free(b->subs);
	free(b);
}

static void disconnect(struct warp_broker *b)
{
	drop_fd(b);
	job_abandon(b);
	warp_timer_cancel(b->retry);
	warp_timer_cancel(b->tick);
	if (b->mosq && mosquitto_socket(b->mosq) >= 0) {
		/* Best effort DISCONNECT so the broker drops the session at once; the
		 * callback it may run sees the state below and does nothing. */
		b->state = WARP_BROKER_IDLE;
		b->in_cb++;
		mosquitto_disconnect(b->mosq);
		b->in_cb--;
		drop_fd(b);
	}
}

void warp_broker_free(struct warp_broker *b)
{
	if (!b || b->dying)
		return;
	if (b->in_cb) {
		/* Inside libmosquitto: finish the unwinding first. */
		b->dying = true;
		drop_fd(b);
		job_abandon(b);
		warp_timer_cancel(b->retry);
		warp_timer_cancel(b->tick);
		if (warp_loop_defer(b->loop, destroy, b) == 0)
			return;
		pr_err("%s: cannot defer destruction; leaking it", b->name);
		return;
	}
	b->dying = true;
	disconnect(b);
	destroy(b);
}

int warp_broker_start(struct warp_broker *b)
{
	if (b->dying)
		return -EINVAL;
	if (b->state != WARP_BROKER_IDLE)
		return 0;
	warp_timer_arm_ms(b->tick, TICK_MS);
	connect_now(b);
	return 0;
}

void warp_broker_stop(struct warp_broker *b)
{
	if (b->dying || b->state == WARP_BROKER_IDLE)
		return;
	disconnect(b);
	b->failures = 0;
	set_state(b, WARP_BROKER_IDLE, 0);
}

int warp_broker_subscribe(struct warp_broker *b, const char *topic)
{
	struct sub *subs;
	char *t;

	for (size_t i = 0; i < b->nsubs; i++)
		if (!strcmp(b->subs[i].topic, topic))
			return 0;
	t = strdup(topic);
	subs = realloc(b->subs, (b->nsubs + 1) * sizeof(*subs));
	if (!t || !subs) {
		free(t);
		if (subs)
			b->subs = subs;
		return -ENOMEM;
	}
	b->subs = subs;
	b->subs[b->nsubs] = (struct sub){.topic = t, .mid = -1};
	b->nsubs++;
	if (b->state == WARP_BROKER_CONNECTED || b->state == WARP_BROKER_READY) {
		if (b->state == WARP_BROKER_READY)
			set_state(b, WARP_BROKER_CONNECTED, 0);
		send_sub(b, &b->subs[b->nsubs - 1]);
		if (!b->in_cb)
			sync_fd(b);
	}
	return 0;
}

int warp_broker_publish(struct warp_broker *b, const char *topic, const void *payload, size_t len,
			uint64_t expires_ms)
{
	uint64_t now = warp_time_ms();
	struct queued *q;
	int rc;

	if (b->dying || len > 256 * 1024)
		return -EINVAL;
	if (b->state == WARP_BROKER_CONNECTED || b->state == WARP_BROKER_READY) {
		rc = mosquitto_publish(b->mosq, NULL, topic, (int)len, payload, 1, false);
		if (rc == MOSQ_ERR_SUCCESS) {
			b->stats.published++;
			if (!b->in_cb)
				sync_fd(b);
			return 0;
		}
		if (rc != MOSQ_ERR_NO_CONN)
			return mosq_err(rc);
	}
	if (!expires_ms)
		expires_ms = now + QUEUE_DEFAULT_MS;
	if (expires_ms < now)
		return -WARP_ESTALE;
	if (b->qlen >= b->opts.queue_max) {
		queue_expire(b, now);
		if (b->qlen >= b->opts.queue_max)
			return -ENOBUFS;
	}
	q = malloc(sizeof(*q) + len);
	if (!q)
		return -ENOMEM;
	q->topic = strdup(topic);
	if (!q->topic) {
		free(q);
		return -ENOMEM;
	}
	q->next = NULL;
	q->expires = expires_ms;
	q->len = len;
	memcpy(q->data, payload, len);
	if (b->qtail)
		b->qtail->next = q;
	else
		b->qhead = q;
	b->qtail = q;
	b->qlen++;
	b->stats.queued++;
	return 0;
}

enum warp_broker_state warp_broker_get_state(const struct warp_broker *b)
{
	return b->state;
}

const struct warp_broker_addr *warp_broker_get_addr(const struct warp_broker *b)
{
	return &b->addr;
}

void warp_broker_get_stats(const struct warp_broker *b, struct warp_broker_stats *st)
{
	*st = b->stats;
}
