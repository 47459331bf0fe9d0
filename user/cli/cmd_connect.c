// SPDX-License-Identifier: MIT
/*
 * warpgate connect: reach a peer by name or address and either send one message and print
 * the reply (--send) or act like netcat (stdin to the pipe, the pipe to stdout, clean
 * half-close on end of input).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <jansson.h>

#include <warpgate/connect.h>
#include <warpgate/error.h>
#include <warpgate/gate.h>

#include "cli/common.h"

static int cmd_connect(int argc, char **argv);

CLI_COMMAND(connect_cmd, .name = "connect", .summary = "open a pipe to a peer (name or address)",
	    .usage = "TARGET [--send MSG] [--strategy S]... [--timeout MS] [--name NAME] [--json]",
	    .help = "  TARGET          alice, alice.p2p, or an address text (wg1....)\n"
		    "  --send MSG      send MSG, print the first reply, exit\n"
		    "  --strategy S    only this strategy (repeatable): direct_connect,\n"
		    "                  reverse_connect, tcp_punch, udp_punch, random_probe, turn\n"
		    "  --timeout MS    give up after MS milliseconds (default 10000)\n"
		    "  --reply-timeout MS  wait this long for the reply to --send (default 5000)\n"
		    "  --name NAME     our identity (default: machine-derived; test mode: ephemeral)\n"
		    "Without --send: stdin goes to the pipe, the pipe to stdout.\n",
	    .run = cmd_connect);

struct connect_opts {
	const char *send;
	const char *name;
	uint32_t strategies;
	int timeout_ms;
	int reply_timeout_ms;
	bool verbose;
	bool json;
};

enum { OPT_SEND = 0x2000, OPT_STRATEGY, OPT_TIMEOUT, OPT_REPLY_TIMEOUT, OPT_NAME };

static int parse_ms(const char *arg, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || *end || v <= 0 || v > 86400000)
		return -1;
	*out = (int)v;
	return 0;
}

static int connect_opt(int opt, const char *arg, void *user)
{
	struct connect_opts *o = user;
	int s;

	switch (opt) {
	case OPT_SEND:
		o->send = arg;
		return 0;
	case OPT_NAME:
		o->name = arg;
		return 0;
	case OPT_STRATEGY:
		s = warp_strategy_parse(arg);
		if (s < 0) {
			cli_error("connect", "--strategy: unknown strategy '%s' (direct_connect, "
					     "reverse_connect, tcp_punch, udp_punch, random_probe, turn)",
				  arg);
			return CLI_USAGE;
		}
		o->strategies |= 1u << s;
		return 0;
	case OPT_TIMEOUT:
	case OPT_REPLY_TIMEOUT:
		if (parse_ms(arg, opt == OPT_TIMEOUT ? &o->timeout_ms : &o->reply_timeout_ms)) {
			cli_error("connect", "--%s: expected milliseconds, not '%s'",
				  opt == OPT_TIMEOUT ? "timeout" : "reply-timeout", arg);
			return CLI_USAGE;
		}
		return 0;
	}
	return CLI_USAGE;
}

static void progress(const struct warp_attempt *a, void *user)
{
	struct connect_opts *o = user;

	if (!o->verbose || o->json)
		return;
	if (a->outcome == WARP_ATTEMPT_RUNNING)
		fprintf(stderr, "  %7.1f ms  try  %-15s %s/%s %s\n", a->start_ms, a->strategy,
			a->transport, a->route, a->endpoint);
	else
		fprintf(stderr, "  %7.1f ms  %-4s %-15s %s/%s %s%s%s\n", a->end_ms,
			warp_attempt_outcome_name(a->outcome), a->strategy, a->transport, a->route,
			a->endpoint, a->reason[0] ? ": " : "", a->reason);
}

static void print_failure(const struct warp_connect_result *res)
{
	size_t shown = 0;

	cli_error("connect", "no pipe to the peer: %s", warp_strerror(res->err));
	for (size_t i = 0; i < res->nattempts && shown < 12; i++) {
		const struct warp_attempt *a = &res->attempts[i];

		if (a->outcome != WARP_ATTEMPT_FAILED && a->outcome != WARP_ATTEMPT_SKIPPED)
			continue;
		fprintf(stderr, "  %-15s %-3s %-8s %-24s %s: %s\n", a->strategy, a->transport,
			a->route, a->endpoint, warp_attempt_outcome_name(a->outcome), a->reason);
		shown++;
	}
}

static int print_json(const struct warp_connect_result *res, const char *reply, int reply_err)
{
	char *js = warp_connect_result_json(res, false);
	json_t *root;
	json_error_t jerr;

	if (!js)
		return CLI_SYSTEM;
	root = json_loads(js, JSON_DECODE_ANY, &jerr);
	free(js);
	if (!root)
		return CLI_SYSTEM;
	if (reply)
		json_object_set_new(root, "reply", json_string(reply));
	else if (reply_err)
		json_object_set_new(root, "reply_error", json_string(warp_strerror(reply_err)));
	js = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
	printf("%s\n", js);
	free(js);
	json_decref(root);
	return CLI_OK;
}

/* ---- netcat mode ---- */

struct nc {
	struct warp_pipe *pipe;
	struct warp_loop *loop;
	bool in_done, done, polled;
	int sigfd;
};

static void nc_msg(struct warp_pipe *pipe, const uint8_t *msg, size_t len, void *user)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = write(STDOUT_FILENO, msg + off, len - off);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
}

static void nc_closed(struct warp_pipe *pipe, int err, void *user)
{
	struct nc *nc = user;

	nc->done = true;
	if (err && err != -WARP_ECLOSED)
		cli_error("connect", "pipe ended: %s", warp_strerror(err));
}

static void nc_stdin(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct nc *nc = user;
	uint8_t buf[32768];
	ssize_t n = read(fd, buf, sizeof(buf));

	if (n > 0) {
		int err = warp_pipe_send(nc->pipe, buf, (size_t)n);

		if (err == -EAGAIN) {
			/* Waiting for room runs the loop: stdin must not be read meanwhile, or a
			 * nested call could reach the end of input and close the pipe before this
			 * chunk went out. */
			if (nc->polled)
				warp_loop_del_fd(loop, fd);
			err = warp_pipe_send_wait(nc->pipe, buf, (size_t)n, 30000);
			if (nc->polled && !err)
				warp_loop_add_fd(loop, fd, WARP_EV_READ, nc_stdin, nc);
		}
		if (err < 0) {
			nc->done = true;
			nc->in_done = true; /* (no longer polled) */
		}
		return;
	}
	if (n < 0 && errno == EAGAIN)
		return;
	/* End of input: half-close; keep printing until the peer ends too. */
	warp_loop_del_fd(loop, fd);
	nc->in_done = true;
	warp_pipe_close(nc->pipe);
}

static void nc_signal(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct nc *nc = user;
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) > 0)
		nc->done = true;
}

static bool nc_finished(void *user)
{
	struct nc *nc = user;

	return nc->done || !warp_pipe_is_open(nc->pipe);
}

static int netcat(struct warp_node *node, struct warp_pipe *pipe)
{
	struct nc nc = { .pipe = pipe, .loop = warp_node_loop(node) };
	sigset_t mask;

	warp_pipe_on_message(pipe, nc_msg, &nc);
	warp_pipe_on_closed(pipe, nc_closed, &nc);
	warp_pipe_set_half_close(pipe, true);
	fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
	nc.polled = warp_loop_add_fd(nc.loop, STDIN_FILENO, WARP_EV_READ, nc_stdin, &nc) == 0;
	if (!nc.polled) {
		/* stdin is a regular file (epoll refuses those): send it all now. */
		nc_stdin(nc.loop, STDIN_FILENO, WARP_EV_READ, &nc);
		while (!nc.in_done && !nc.done)
			nc_stdin(nc.loop, STDIN_FILENO, WARP_EV_READ, &nc);
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	nc.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (nc.sigfd >= 0)
		warp_loop_add_fd(nc.loop, nc.sigfd, WARP_EV_READ, nc_signal, &nc);
	warp_loop_run_until(nc.loop, nc_finished, &nc, -1);
	warp_pipe_close_wait(pipe, 2000);
	if (nc.sigfd >= 0) {
		warp_loop_del_fd(nc.loop, nc.sigfd);
		close(nc.sigfd);
	}
	if (!nc.in_done)
		warp_loop_del_fd(nc.loop, STDIN_FILENO);
	return CLI_OK;
}

/* --send: one message out, the first reply printed. */
static int send_one(struct warp_pipe *pipe, const struct connect_opts *o,
		    const struct warp_connect_result *res)
{
	char *buf = malloc(65536 + 1);
	ssize_t n;

	if (!buf)
		return CLI_SYSTEM;
	warp_pipe_subscribe(pipe, NULL);
	n = warp_pipe_send(pipe, o->send, strlen(o->send));
	if (n == 0)
		n = warp_pipe_recv(pipe, WARP_SUB_ALL, buf, 65536, o->reply_timeout_ms);
	if (n >= 0)
		buf[n] = '\0';
	if (o->json)
		print_json(res, n >= 0 ? buf : NULL, n < 0 ? (int)n : 0);
	else if (n >= 0)
		printf("%s\n", buf);
	else
		cli_error("connect", "no reply: %s", warp_strerror((int)n));
	free(buf);
	warp_pipe_close_wait(pipe, 1000);
	return n < 0 ? CLI_FAIL : CLI_OK;
}

static int cmd_connect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "send", required_argument, NULL, OPT_SEND },
		{ "strategy", required_argument, NULL, OPT_STRATEGY },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "reply-timeout", required_argument, NULL, OPT_REPLY_TIMEOUT },
		{ "name", required_argument, NULL, OPT_NAME },
		{ 0 }
	};
	struct cli_common c;
	struct connect_opts o = { .reply_timeout_ms = 5000 };
	struct warp_connect_opts co = { 0 };
	struct warp_connect_result *res = calloc(1, sizeof(*res));
	struct warp_gate *gate = NULL;
	struct warp_pipe *pipe = NULL;
	int first, rc, err;

	if (!res)
		return CLI_SYSTEM;
	rc = cli_common_parse(&c, &connect_cmd, argc, argv, opts, "", connect_opt, &o, &first);
	if (rc) {
		rc = rc < 0 ? CLI_OK : rc;
		goto out;
	}
	if (first != argc - 1) {
		if (first >= argc)
			cli_error("connect", "missing TARGET (a name or an address)");
		else
			cli_error("connect", "unexpected argument '%s'", argv[argc - 1]);
		rc = CLI_USAGE;
		goto out;
	}
	o.verbose = c.verbose;
	o.json = c.json;
	if (o.name && warp_name_validate(o.name)) {
		cli_error("connect", "invalid --name '%s'", o.name);
		rc = CLI_USAGE;
		goto out;
	}
	if (o.name)
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", o.name);
	/* Test mode without a name runs on an ephemeral identity (no key file). */
	gate = warp_gate_open(c.conf.name[0] ? c.conf.name : NULL, &c.conf);
	if (!gate) {
		cli_error("connect", "cannot start node: %s", warp_strerror(errno));
		rc = CLI_SYSTEM;
		goto out;
	}
	co.strategies = o.strategies;
	co.timeout_ms = o.timeout_ms;
	co.progress = progress;
	co.user = &o;
	err = warp_gate_connect_ex(gate, argv[first], &co, &pipe, res);
	if (err) {
		if (o.json)
			print_json(res, NULL, 0);
		else
			print_failure(res);
		rc = err == -WARP_EMALFORMED || err == -WARP_ENAME ? CLI_USAGE : CLI_FAIL;
		goto out;
	}
	if (c.verbose && !o.json)
		fprintf(stderr, "connected by %s (%s) in %.1f ms\n", res->strategy,
			warp_path_class_name(res->path), res->ms);
	if (o.send) {
		rc = send_one(pipe, &o, res);
	} else {
		if (o.json)
			print_json(res, NULL, 0);
		rc = netcat(warp_gate_node(gate), pipe);
	}
	warp_pipe_release(pipe);
out:
	warp_gate_close(gate);
	free(res);
	return rc;
}
