/* SPDX-License-Identifier: MIT */
/*
 * Thin socket transports around the sans-IO STUN client, on a warp_loop.
 *
 * warp_stun_udp: one client shared by several UDP sockets (each identified by a small
 * integer tag, used as warp_stun_req.sock).  Datagrams that do not complete a transaction
 * (requests, indications, non-STUN traffic) go to the rx callback, so the same socket can
 * carry other protocols.  Code that starts or cancels transactions directly on the client
 * (warp_stun_udp_client()) calls warp_stun_udp_kick() afterwards to flush and re-arm.
 * Callbacks (transaction results, rx) must not free the transport.
 *
 * warp_stun_tcp: one STUN request over its own TCP connection (RFC 8489 framing, single
 * transmission, Ti timeout).  The request frees itself after calling req->cb once.
 */
#ifndef WARP_NAT_STUN_IO_H
#define WARP_NAT_STUN_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <warpgate/loop.h>

#include "nat/stun_client.h"

#define WARP_STUN_UDP_MAX_SOCKS 64

struct warp_stun_udp;

typedef void (*warp_stun_udp_rx_cb)(struct warp_stun_udp *t, int sock, const uint8_t *buf,
				    size_t len, const struct sockaddr *from, uint64_t rx_ns,
				    void *user);

struct warp_stun_udp *warp_stun_udp_new(struct warp_loop *loop,
					const struct warp_stun_client_cfg *cfg);
/* Closes the sockets it opened or was given to own; transactions are dropped silently. */
void warp_stun_udp_free(struct warp_stun_udp *t);
/* Opens a non-blocking UDP socket bound to bind_addr (port 0: any).  Returns its tag. */
int warp_stun_udp_open(struct warp_stun_udp *t, const struct sockaddr *bind_addr);
/* Uses an existing non-blocking UDP socket; own: close it in warp_stun_udp_free(). */
int warp_stun_udp_adopt(struct warp_stun_udp *t, int fd, bool own);
int warp_stun_udp_fd(const struct warp_stun_udp *t, int sock);
int warp_stun_udp_local(const struct warp_stun_udp *t, int sock, struct sockaddr_storage *out);
void warp_stun_udp_set_rx_cb(struct warp_stun_udp *t, warp_stun_udp_rx_cb cb, void *user);
struct warp_stun_client *warp_stun_udp_client(struct warp_stun_udp *t);

int warp_stun_udp_request(struct warp_stun_udp *t, const struct warp_stun_req *req, uint64_t *id);
int warp_stun_udp_cancel(struct warp_stun_udp *t, uint64_t id);
/* Sends what is due and re-arms the timer. */
void warp_stun_udp_kick(struct warp_stun_udp *t);

struct warp_stun_tcp;

/* Connects to req->dest (from bind_addr when given) and runs one transaction; req->cb gets
 * the response, -ETIMEDOUT, a connect error (-ECONNREFUSED, ...) or -WARP_ECLOSED.
 * Returns NULL + errno when it cannot even start (the callback is then not called). */
struct warp_stun_tcp *warp_stun_tcp_request(struct warp_loop *loop,
					    const struct warp_stun_client_cfg *cfg,
					    const struct sockaddr *bind_addr,
					    const struct warp_stun_req *req);
/* Abandons a request whose callback has not run yet (no callback). */
void warp_stun_tcp_cancel(struct warp_stun_tcp *t);

#endif
