// SPDX-License-Identifier: MIT
/*
 * warpgate listen: serve inbound peers.  The first line on stdout is our address text (for
 * scripts); with NAME the node also registers NAME.p2p.  Each peer gets an echo (--echo), a
 * spawned command wired to the pipe (--exec), or by default its messages on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <warpgate/error.h>
#include <warpgate/gate.h>

#include "cli/common.h"
#include "core/list.h"

static int cmd_listen(int argc, char **argv);

CLI_COMMAND(listen_cmd, .name = "listen", .summary = "serve inbound peers (echo, exec or print)",
	    .usage = "[NAME] [--echo | --exec CMD] [--count N] [common options]",
	    .help = "  NAME          identity to serve as; registers NAME.p2p when names are on\n"
		    "  --echo        answer every message with \"echo:\" + message\n"
		    "  --exec CMD    run CMD (sh -c) per peer: its stdout to the pipe, the pipe to\n"
		    "                its stdin\n"
		    "  --count N     exit after N peers have come and gone\n"
		    "The first line of stdout is this node's address text.\n",
	    .run = cmd_listen);

enum { OPT_ECHO = 0x2100, OPT_EXEC, OPT_COUNT };

struct listen_state {
	bool echo;
	const char *exec;
	long count, served;
	struct warp_gate *gate;
	struct warp_loop *loop;
	struct list_head kids;
	int sigfd;
	bool stop;
};

struct kid {
	struct list_head link;
	struct listen_state *st;
	struct warp_pipe *pipe;
	pid_t pid;
	int in_fd, out_fd;
	size_t pend_len; /* bytes in pend the pipe refused (stdout not polled meanwhile) */
	uint8_t pend[32768];
};

static int listen_opt(int opt, const char *arg, void *user)
{
	struct listen_state *st = user;
	char *end;

	switch (opt) {
	case OPT_ECHO:
		st->echo = true;
		return 0;
	case OPT_EXEC:
		st->exec = arg;
		return 0;
	case OPT_COUNT:
		st->count = strtol(arg, &end, 10);
		if (*end || st->count <= 0) {
			cli_error("listen", "--count: expected a positive number, not '%s'", arg);
			return CLI_USAGE;
		}
		return 0;
	}
	return CLI_USAGE;
}

static void peer_done(struct listen_state *st)
{
	st->served++;
	if (st->count && st->served >= st->count)
		st->stop = true;
}

/* ---- echo ---- */

/* Replies the send buffer refused wait here, in order, until the pipe has room again; the
 * pipe half-closes so that replies still queued when the peer ends its side are not lost. */
struct echo_q {
	struct echo_q *next;
	size_t len;
	uint8_t data[];
};

struct echo {
	struct listen_state *st;
	struct echo_q *head, **tail;
	size_t queued;
	bool peer_done;
};

#define ECHO_QUEUE_MAX (64u << 20)

static void echo_drain(struct warp_pipe *link, void *user)
{
	struct echo *e = user;

	while (e->head) {
		struct echo_q *q = e->head;
		int err = warp_pipe_send(link, q->data, q->len);

		if (err == -EAGAIN)
			return; /* on_writable calls again */
		e->head = q->next;
		e->queued -= q->len;
		free(q);
		if (err) {
			warp_pipe_close(link);
			return;
		}
	}
	e->tail = &e->head;
	if (e->peer_done)
		warp_pipe_close(link);
}

static void echo_msg(struct warp_pipe *link, const uint8_t *msg, size_t len, void *user)
{
	struct echo *e = user;
	struct echo_q *q = malloc(sizeof(*q) + len + 5);

	if (!q || e->queued + len > ECHO_QUEUE_MAX) {
		/* The peer sends faster than it reads its replies: give up loudly, not silently. */
		fprintf(stderr, "echo: %s; closing the pipe\n",
			q ? "over 64 MiB of replies waiting" : "out of memory");
		free(q);
		warp_pipe_close(link);
		return;
	}
	memcpy(q->data, "echo:", 5);
	memcpy(q->data + 5, msg, len);
	q->len = len + 5;
	q->next = NULL;
	*e->tail = q;
	e->tail = &q->next;
	e->queued += q->len;
	if (e->head == q)
		echo_drain(link, e);
}

static void echo_eos(struct warp_pipe *link, void *user)
{
	struct echo *e = user;

	e->peer_done = true;
	if (!e->head)
		warp_pipe_close(link);
}

static void echo_closed(struct warp_pipe *link, int err, void *user)
{
	struct echo *e = user;
	struct listen_state *st = e->st;

	while (e->head) {
		struct echo_q *q = e->head;

		e->head = q->next;
		free(q);
	}
	free(e);
	peer_done(st);
}

static void print_msg(struct warp_pipe *link, const uint8_t *msg, size_t len, void *user)
{
	fwrite(msg, 1, len, stdout);
	fflush(stdout);
}

static void plain_closed(struct warp_pipe *link, int err, void *user)
{
	peer_done(user);
}

/* ---- exec ---- */

static void kid_free(struct kid *k)
{
	list_del(&k->link);
	if (k->out_fd >= 0) {
		warp_loop_del_fd(k->st->loop, k->out_fd);
		close(k->out_fd);
	}
	if (k->in_fd >= 0)
		close(k->in_fd);
	if (k->pid > 0) {
		kill(k->pid, SIGTERM);
		waitpid(k->pid, NULL, 0);
	}
	warp_pipe_release(k->pipe);
	free(k);
}

static void kid_msg(struct warp_pipe *link, const uint8_t *msg, size_t len, void *user)
{
	struct kid *k = user;

	for (size_t off = 0; k->in_fd >= 0 && off < len;) {
		ssize_t n = write(k->in_fd, msg + off, len - off);

		if (n <= 0) {
			close(k->in_fd);
			k->in_fd = -1;
			break;
		}
		off += (size_t)n;
	}
}

static void kid_out(struct warp_loop *loop, int fd, unsigned int events, void *user);

static void kid_out_end(struct kid *k)
{
	warp_loop_del_fd(k->st->loop, k->out_fd);
	close(k->out_fd);
	k->out_fd = -1;
	warp_pipe_close(k->pipe);
}

/* Room in the pipe again: the chunk that did not fit goes out, then the command's output is
 * read again (it stays unread meanwhile, so the command blocks instead of us buffering). */
static void kid_writable(struct warp_pipe *link, void *user)
{
	struct kid *k = user;
	int err;

	if (!k->pend_len || k->out_fd < 0)
		return;
	err = warp_pipe_send(link, k->pend, k->pend_len);
	if (err == -EAGAIN)
		return;
	k->pend_len = 0;
	if (err < 0 || warp_loop_add_fd(k->st->loop, k->out_fd, WARP_EV_READ, kid_out, k) < 0)
		kid_out_end(k);
}

static void kid_out(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct kid *k = user;
	ssize_t n = read(fd, k->pend, sizeof(k->pend));
	int err;

	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) { /* the command finished its output: end our side of the pipe */
		kid_out_end(k);
		return;
	}
	err = warp_pipe_send(k->pipe, k->pend, (size_t)n);
	if (err == -EAGAIN) {
		k->pend_len = (size_t)n;
		warp_loop_del_fd(loop, fd);
	} else if (err < 0) {
		kid_out_end(k);
	}
}

static void kid_closed(struct warp_pipe *link, int err, void *user)
{
	struct kid *k = user;
	struct listen_state *st = k->st;

	kid_free(k);
	peer_done(st);
}

/* The peer is done sending: the command sees the end of its input. */
static void kid_eos(struct warp_pipe *link, void *user)
{
	struct kid *k = user;

	if (k->in_fd >= 0) {
		close(k->in_fd);
		k->in_fd = -1;
	}
}

static int spawn(struct kid *k, const char *cmd)
{
	int in[2], out[2];

	if (pipe2(in, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(out, O_CLOEXEC) < 0) {
		close(in[0]);
		close(in[1]);
		return -errno;
	}
	k->pid = fork();
	if (k->pid < 0)
		return -errno;
	if (k->pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	k->in_fd = in[1];
	k->out_fd = out[0];
	fcntl(k->out_fd, F_SETFL, O_NONBLOCK);
	return warp_loop_add_fd(k->st->loop, k->out_fd, WARP_EV_READ, kid_out, k);
}

static void on_link(struct warp_pipe *link, void *user)
{
	struct listen_state *st = user;
	struct warp_pipe_info info;
	char hex[2 * WARP_PUBKEY_LEN + 1];

	warp_pipe_info(link, &info);
	for (int i = 0; i < WARP_PUBKEY_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", info.peer_key[i]);
	fprintf(stderr, "peer %s connected (%s)\n", hex, info.transport);
	if (st->exec) {
		struct kid *k = calloc(1, sizeof(*k));

		if (!k) {
			warp_pipe_close(link);
			warp_pipe_release(link);
			return;
		}
		k->st = st;
		k->pipe = link;
		k->in_fd = k->out_fd = -1;
		list_add_tail(&k->link, &st->kids);
		warp_pipe_set_half_close(link, true);
		if (spawn(k, st->exec) < 0) {
			warp_pipe_close(link);
			kid_free(k);
			return;
		}
		warp_pipe_on_message(link, kid_msg, k);
		warp_pipe_on_writable(link, kid_writable, k);
		warp_pipe_on_eos(link, kid_eos, k);
		warp_pipe_on_closed(link, kid_closed, k);
		return;
	}
	if (st->echo) {
		struct echo *e = calloc(1, sizeof(*e));

		if (!e) {
			warp_pipe_close(link);
			warp_pipe_release(link);
			return;
		}
		e->st = st;
		e->tail = &e->head;
		warp_pipe_set_half_close(link, true);
		warp_pipe_on_message(link, echo_msg, e);
		warp_pipe_on_writable(link, echo_drain, e);
		warp_pipe_on_eos(link, echo_eos, e);
		warp_pipe_on_closed(link, echo_closed, e);
	} else {
		warp_pipe_on_message(link, print_msg, st);
		warp_pipe_on_closed(link, plain_closed, st);
	}
	warp_pipe_release(link);
}

static void on_signal(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct listen_state *st = user;
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) > 0)
		st->stop = true;
}

static bool stopping(void *user)
{
	return ((struct listen_state *)user)->stop;
}

static int cmd_listen(int argc, char **argv)
{
	static const struct option opts[] = { { "echo", no_argument, NULL, OPT_ECHO },
					      { "exec", required_argument, NULL, OPT_EXEC },
					      { "count", required_argument, NULL, OPT_COUNT },
					      { 0 } };
	struct listen_state st = { 0 };
	struct cli_common c;
	char addr[2048];
	sigset_t mask;
	int first, rc;

	list_init(&st.kids);
	rc = cli_common_parse(&c, &listen_cmd, argc, argv, opts, "", listen_opt, &st, &first);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (st.echo && st.exec) {
		cli_error("listen", "--echo and --exec exclude each other");
		return CLI_USAGE;
	}
	if (first < argc - 1) {
		cli_error("listen", "unexpected argument '%s'", argv[first + 1]);
		return CLI_USAGE;
	}
	if (first < argc) {
		if (warp_name_validate(argv[first])) {
			cli_error("listen", "invalid name '%s'", argv[first]);
			return CLI_USAGE;
		}
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", argv[first]);
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGPIPE);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	st.gate = warp_gate_open(c.conf.name[0] ? c.conf.name : NULL, &c.conf);
	if (!st.gate) {
		cli_error("listen", "cannot start node: %s", warp_strerror(errno));
		return CLI_SYSTEM;
	}
	st.loop = warp_node_loop(warp_gate_node(st.gate));
	warp_gate_listen(st.gate, on_link, &st);
	if (warp_node_address_text(warp_gate_node(st.gate), addr, sizeof(addr)) == 0) {
		printf("%s\n", addr);
		fflush(stdout);
	}
	st.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (st.sigfd >= 0)
		warp_loop_add_fd(st.loop, st.sigfd, WARP_EV_READ, on_signal, &st);
	warp_loop_run_until(st.loop, stopping, &st, -1);
	while (!list_empty(&st.kids))
		kid_free(list_entry(st.kids.next, struct kid, link));
	if (st.sigfd >= 0) {
		warp_loop_del_fd(st.loop, st.sigfd);
		close(st.sigfd);
	}
	warp_gate_close(st.gate);
	return CLI_OK;
}
