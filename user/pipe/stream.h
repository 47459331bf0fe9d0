/* SPDX-License-Identifier: MIT */
/*
 * Stream engine of a pipe: message framing, reliability, ordering, flow and congestion control.
 * Sans-IO: the caller feeds it the plaintext of every authenticated DATA/ACK packet, asks it
 * for the next payload to seal, and drives its single timer; time is always passed in as
 * now_ns (CLOCK_MONOTONIC).  docs/protocol-stream.md specifies the frames and algorithms.
 *
 * Two modes, one API:
 *   WARP_STREAM_UDP  reliable ordered messages (fragments, SACK, RTO, NewReno cwnd, receive
 *                    window) plus unreliable datagrams on the same pipe;
 *   WARP_STREAM_TCP  the transport is reliable already: framing and fragmentation only,
 *                    datagram fragments interleave with reliable ones.
 *
 * Driving it:
 *
 *	s = warp_stream_new(&conf);                 // NULL + errno on bad conf / no memory
 *	warp_stream_send(s, msg, len, WARP_MSG_RELIABLE, now);   // -EAGAIN: wait for on_writable
 *	warp_stream_input(s, plaintext, len, now);  // every authenticated DATA/ACK payload
 *	while ((n = warp_stream_poll(s, buf, cap, now, &ack_only)) > 0)
 *		seal buf[0..n) as an ACK packet if ack_only, else as a DATA packet, and send it;
 *	arm a timer at warp_stream_next_deadline(s); when it fires call warp_stream_on_timer();
 *	poll again after every send, input and timer call (each may make a payload due).
 *
 * Closing is per direction, like TCP: warp_stream_close(s, true) sends every queued reliable
 * message, then an end-of-stream marker.  The peer reports on_eos() after our last reliable
 * message; its own side stays open (it may go on sending: a half-close) until it calls
 * warp_stream_close(s, true) in turn, which is what a pipe wants by default.  Once both
 * directions are done (and, in UDP mode, our marker is acknowledged) on_closed(0) fires at
 * each end.  In UDP mode the stream then lingers 10 RTOs, restarted by every retransmission it
 * hears, to re-acknowledge the peer's last packets; it may be freed at any time, ideally once
 * warp_stream_state() is WARP_STREAM_DONE (next_deadline() then returns UINT64_MAX).
 * warp_stream_close(s, false) aborts: queues are dropped, no callback fires, and one RESET is
 * offered by the next poll; the peer gets on_closed(-ECONNRESET).  No packet received for
 * idle_timeout_ms ends the stream with on_closed(-WARP_EIDLE); warp_stream_touch() counts a
 * keepalive pong as received traffic.
 *
 * Callbacks run from warp_stream_input() and warp_stream_on_timer() only, after the call's
 * state changes are complete (events that arise in send/poll, e.g. on_writable in TCP mode,
 * make next_deadline() return 0 and fire from the next on_timer).  They may call warp_stream_send(), _close(), _stats() and
 * warp_stream_free() (deferred until the callbacks return), not _input() or _on_timer().
 * A stream belongs to one thread.
 */
#ifndef WARP_PIPE_STREAM_H
#define WARP_PIPE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum warp_stream_mode {
	WARP_STREAM_UDP = 0,
	WARP_STREAM_TCP = 1,
};

/* Message flags, for warp_stream_send() and on_message(): exactly one of the two. */
#define WARP_MSG_RELIABLE 0x1u
#define WARP_MSG_DATAGRAM 0x2u

typedef void (*warp_stream_msg_cb)(void *user, const uint8_t *data, size_t len, unsigned int flags);
typedef void (*warp_stream_event_cb)(void *user);
typedef void (*warp_stream_closed_cb)(void *user, int err);

/* Zero fields take the default in brackets. */
struct warp_stream_conf {
	enum warp_stream_mode mode;
	size_t payload_max;	  /* bytes per payload (required, 128..65535), e.g. 1200 - crypto */
	size_t max_message;	  /* largest reliable message [1 MiB] */
	size_t max_datagram;	  /* largest datagram [64 KiB] */
	size_t sndbuf;		  /* reliable bytes queued or unacknowledged [4 MiB] */
	size_t rcvbuf;		  /* receive window: reassembly + out-of-order bytes [4 MiB] */
	size_t dgram_sndbuf;	  /* datagram bytes waiting to be polled [1 MiB] */
	size_t dgram_rcvbuf;	  /* bytes of incomplete datagrams held [1 MiB] */
	uint32_t idle_timeout_ms; /* no packet for this long closes the stream [0: never] */
	uint32_t max_ack_delay_ms; /* delayed-ack bound, same value at both ends [25] */
	uint32_t rto_initial_ms;   /* RTO before the first RTT sample [1000] */
	uint32_t rto_min_ms;	   /* [200] */
	uint32_t rto_max_ms;	   /* [60000] */
	uint32_t max_rto_count;	   /* consecutive timeouts before -ETIMEDOUT [12] */
	uint32_t dgram_timeout_ms; /* incomplete datagrams are dropped after this [2000] */
	void *user;
	warp_stream_msg_cb on_message;	  /* a complete message, in order for reliable ones */
	warp_stream_event_cb on_writable; /* room again after send() returned -EAGAIN */
	warp_stream_event_cb on_eos;	  /* the peer's end of stream, after its last reliable
					   * message: close our side too unless half-closing */
	warp_stream_closed_cb on_closed;  /* 0 graceful, -ECONNRESET, -WARP_EIDLE, -ETIMEDOUT,
					    * -WARP_EMALFORMED (peer broke the protocol) */
};

enum warp_stream_state {
	WARP_STREAM_OPEN,    /* we may send (the peer may have ended its side: on_eos) */
	WARP_STREAM_CLOSING, /* we closed; queued data still flows, the peer's too */
	WARP_STREAM_CLOSED,  /* on_closed has fired (or we aborted); lingering for acks */
	WARP_STREAM_DONE,    /* nothing left to do: free it */
};

struct warp_stream_stats {
	/* RTT estimator and congestion control (UDP mode; zero in TCP mode) */
	uint64_t srtt_us, rttvar_us, rto_us, min_rtt_us, latest_rtt_us;
	uint64_t cwnd, ssthresh, bytes_in_flight;
	uint64_t pacing_rate; /* hint, bytes/s: 1.25 * cwnd / srtt (0 before a sample) */
	uint64_t peer_rwnd;   /* last window advertised by the peer */
	uint64_t outstanding; /* window-charged bytes sent beyond the peer's cumulative ack */
	/* traffic */
	uint64_t msgs_sent, bytes_sent;		/* reliable messages accepted by send() */
	uint64_t msgs_received, bytes_received; /* reliable messages delivered */
	uint64_t dgrams_sent, dgrams_received;
	uint64_t dgrams_dropped_tx; /* refused by send(): queue full */
	uint64_t dgrams_dropped_rx; /* incomplete: timed out, evicted, or their window passed */
	uint64_t payloads_sent, payloads_received, acks_sent;
	uint64_t frags_sent, frags_retransmitted, rto_count, spurious_dups_received;
	uint64_t frags_dropped_window; /* out-of-order fragments refused: receive buffer full */
	uint64_t malformed;	       /* payloads rejected by warp_stream_input() */
	/* queues */
	uint64_t sndbuf_used;	  /* reliable bytes queued or unacknowledged (charged) */
	uint64_t send_queue_msgs; /* reliable messages not yet fully fragmented */
	uint64_t dgram_queue_bytes;
	uint64_t rcv_buffered; /* reassembly + out-of-order bytes (charged) */
	uint64_t last_activity_ns;
	int state; /* enum warp_stream_state */
	int close_err;
};

struct warp_stream;

struct warp_stream *warp_stream_new(const struct warp_stream_conf *conf);
void warp_stream_free(struct warp_stream *s);

/* Queues one message (flags: WARP_MSG_RELIABLE or WARP_MSG_DATAGRAM).  Returns 0, -EAGAIN
 * when its buffer is full (on_writable fires once room for it returns; a refused datagram is
 * also counted as dropped), -EMSGSIZE over the size limit, -EINVAL, -EPIPE after our close,
 * -WARP_ECLOSED after a reset, idle timeout or failure.  The peer's end of stream alone does
 * not stop us sending. */
int warp_stream_send(struct warp_stream *s, const void *data, size_t len, unsigned int flags,
		     uint64_t now_ns);

/* Feeds the plaintext of one authenticated payload.  A payload that does not follow the
 * format returns -WARP_EMALFORMED / -WARP_ETRUNCATED / -WARP_ERANGE / -WARP_EDUPLICATE and
 * changes nothing.  A well-formed payload that contradicts earlier ones (e.g. a continuation
 * fragment with no first fragment) aborts the stream: -WARP_EMALFORMED and on_closed. */
int warp_stream_input(struct warp_stream *s, const void *buf, size_t len, uint64_t now_ns);

/* Writes the next payload into buf (cap >= payload_max) and returns its length, 0 when
 * nothing is due, or -EMSGSIZE.  *ack_only tells the caller to send it as an ACK packet. */
int warp_stream_poll(struct warp_stream *s, uint8_t *buf, size_t cap, uint64_t now_ns,
		     bool *ack_only);

/* Earliest time on_timer has work (UINT64_MAX: none). */
uint64_t warp_stream_next_deadline(const struct warp_stream *s);
void warp_stream_on_timer(struct warp_stream *s, uint64_t now_ns);

/* graceful: after all queued reliable data (see above); else abort.  Returns 0 or
 * -WARP_ECLOSED when already closed. */
int warp_stream_close(struct warp_stream *s, bool graceful);

/* A keepalive pong (or other proof of life) arrived: resets the idle timer. */
void warp_stream_touch(struct warp_stream *s, uint64_t now_ns);
uint64_t warp_stream_last_activity(const struct warp_stream *s);

enum warp_stream_state warp_stream_state(const struct warp_stream *s);
void warp_stream_stats(const struct warp_stream *s, struct warp_stream_stats *st);

/* Bytes send() would accept now for a reliable message (charged per-message overhead
 * included in the accounting, so a message of this size fits). */
size_t warp_stream_writable(const struct warp_stream *s);

#endif
