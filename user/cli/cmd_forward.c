// SPDX-License-Identifier: MIT
/*
 * warpgate forward: like `ssh -L`.  Listens on LOCALPORT and carries every accepted TCP
 * connection over one pipe to TARGET, whose `warpgate expose` connects it to HOST:PORT.
 * Uses the daemon's node when a daemon runs, else starts its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/control.h>
#include <warpgate/error.h>
#include <warpgate/gate.h>

#include "cli/common.h"
#include "daemon/cliutil.h"
#include "daemon/fwd.h"
#include "net/endpoint.h"

static int cmd_forward(int argc, char **argv);

CLI_COMMAND(
	forward_cmd, .name = "forward", .summary = "forward a local TCP port to a peer",
	.usage = "TARGET LOCALPORT:HOST:PORT [--bind ADDR] [--name NAME] [--timeout MS] "
		 "[--no-daemon] [common options]",
	.help = "  TARGET          the exposing peer: alice, alice.p2p or an address (wg1....)\n"
		"  LOCALPORT:HOST:PORT  listen on LOCALPORT (0: any free port) and reach\n"
		"                  HOST:PORT as the peer sees it ([IPV6] in brackets)\n"
		"  --bind ADDR     local address to listen on (default 127.0.0.1)\n"
		"  --name NAME     our identity (default: machine-derived; test mode: ephemeral)\n"
		"  --timeout MS    give up opening the pipe after MS milliseconds\n"
		"  --strategy S    only this strategy (repeatable)\n"
		"  --no-daemon     run a node of our own even when the daemon runs\n"
		"  --socket PATH   the daemon's control socket\n"
		"The first line of stdout is the local listen address (--json: an object).\n",
	.run = cmd_forward);

enum { OPT_BIND = 0x2400, OPT_NAME, OPT_TIMEOUT, OPT_STRATEGY, OPT_NO_DAEMON, OPT_SOCKET };

struct forward_opts {
	const char *bind;
	const char *name;
	const char *socket;
	uint32_t strategies;
	int timeout_ms;
	bool no_daemon;
};

static int forward_opt(int opt, const char *arg, void *user)
{
	struct forward_opts *o = user;
	char *end;
	long v;
	int s;

	switch (opt) {
	case OPT_BIND:
		o->bind = arg;
		return 0;
	case OPT_NAME:
		o->name = arg;
		return 0;
	case OPT_TIMEOUT:
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno || *end || v <= 0 || v > 86400000) {
			cli_error("forward", "--timeout: expected milliseconds, not '%s'", arg);
			return CLI_USAGE;
		}
		o->timeout_ms = (int)v;
		return 0;
	case OPT_STRATEGY:
		s = warp_strategy_parse(arg);
		if (s < 0) {
			cli_error("forward", "--strategy: unknown strategy '%s'", arg);
			return CLI_USAGE;
		}
		o->strategies |= 1u << s;
		return 0;
	case OPT_NO_DAEMON:
		o->no_daemon = true;
		return 0;
	case OPT_SOCKET:
		o->socket = arg;
		return 0;
	}
	return CLI_USAGE;
}

struct spec {
	uint16_t lport;
	char host[FWD_HOST_MAX + 1];
	uint16_t port;
};

static int parse_port(const char *s, size_t len, bool zero_ok, uint16_t *out)
{
	char buf[8];
	char *end;
	long v;

	if (!len || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno || *end || v < (zero_ok ? 0 : 1) || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

/* LOCALPORT:HOST:PORT, HOST possibly [IPV6]. */
static int parse_spec(const char *text, struct spec *sp)
{
	const char *c1 = strchr(text, ':');

	if (!c1 || parse_port(text, (size_t)(c1 - text), true, &sp->lport))
		return -EINVAL;
	return fwd_hostport_parse(c1 + 1, sp->host, sizeof(sp->host), &sp->port);
}

static void print_start(const char *local, const struct spec *sp, const char *target,
			const char *peer, bool json, bool daemon)
{
	if (json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:s, s:b}", "listen", local, "target",
				      target, "host", sp->host, "port", sp->port, "peer", peer,
				      "daemon", daemon);
		char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);

		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		printf("%s\n", local);
	}
	fflush(stdout);
	fprintf(stderr, "warpgate forward: %s -> %s:%u at the peer%s\n", local, sp->host, sp->port,
		daemon ? " (through the daemon)" : "");
}

struct standalone {
	bool verbose;
	bool first_done;
	bool had_pipe; /* the first attempt got as far as a pipe */
	int first_err;
	char first_reason[256];
	char peer[2 * WARP_PUBKEY_LEN + 1];
};

static void on_event(void *user, const struct fwd_event *ev)
{
	struct standalone *st = user;

	if (!st->first_done && (ev->kind == FWD_EV_UP || ev->kind == FWD_EV_DOWN)) {
		st->first_done = true;
		st->first_err = ev->kind == FWD_EV_DOWN ? (ev->err ? ev->err : -EIO) : 0;
		snprintf(st->first_reason, sizeof(st->first_reason), "%s", ev->reason);
		st->had_pipe = ev->peer != NULL;
		if (ev->peer)
			fwd_key_hex(ev->peer, st->peer);
		if (ev->kind == FWD_EV_UP)
			wd_fwd_event_print("forward", ev, st->verbose);
		return;
	}
	if (ev->kind == FWD_EV_DOWN && ev->err != -ECANCELED)
		fprintf(stderr,
			"warpgate forward: pipe closed (%s); the next connection opens a "
			"new one\n",
			ev->reason);
	else
		wd_fwd_event_print("forward", ev, st->verbose);
}

static bool first_done(void *user)
{
	return ((struct standalone *)user)->first_done;
}

static int run_standalone(struct cli_common *c, struct forward_opts *o, const char *target,
			  const struct spec *sp, const struct sockaddr_storage *bind)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_gate *gate = NULL;
	struct fwd_forwarder *f = NULL;
	struct fwd_forwarder_conf fc = { 0 };
	struct standalone st = { .verbose = c->verbose };
	struct wd_signals sig = { .fd = -1 };
	struct sockaddr_storage local;
	char ls[WARP_EP_STRLEN];
	int rc = CLI_SYSTEM, err;

	if (!loop)
		return CLI_SYSTEM;
	gate = warp_gate_open_on(c->conf.name[0] ? c->conf.name : NULL, &c->conf, loop);
	if (!gate) {
		cli_error("forward", "cannot start node: %s", warp_strerror(errno));
		goto out;
	}
	fc.node = warp_gate_node(gate);
	snprintf(fc.target, sizeof(fc.target), "%s", target);
	fc.bind = *bind;
	snprintf(fc.host, sizeof(fc.host), "%s", sp->host);
	fc.port = sp->port;
	fc.copts.strategies = o->strategies;
	fc.copts.timeout_ms = o->timeout_ms;
	fc.event = on_event;
	fc.user = &st;
	f = fwd_forwarder_new(&fc);
	if (!f) {
		cli_error("forward", "cannot listen on %s: %s",
			  warp_ep_str((const struct sockaddr *)bind, ls, sizeof(ls)),
			  warp_strerror(errno));
		goto out;
	}
	err = wd_signals_start(&sig, loop);
	if (err)
		goto out;
	/* Open the pipe now, like ssh does: a wrong target fails here, not on first use. */
	err = fwd_forwarder_dial(f);
	if (!err)
		err = warp_loop_run_until(loop, first_done, &st, -1);
	if (!err && st.first_err)
		err = st.first_err;
	if (err) {
		if (!sig.stop)
			cli_error("forward", "no pipe to %.*s%s: %s", 32, target,
				  strlen(target) > 32 ? "..." : "",
				  st.first_reason[0] ? st.first_reason : warp_strerror(err));
		/* A target that does not parse is a usage error; anything later is not. */
		rc = sig.stop ? CLI_OK
		     : !st.had_pipe && (err == -WARP_EMALFORMED || err == -WARP_ENAME ||
					err == -WARP_ETRUNCATED)
			     ? CLI_USAGE
			     : CLI_FAIL;
		goto out;
	}
	fwd_forwarder_local(f, &local);
	print_start(warp_ep_str((struct sockaddr *)&local, ls, sizeof(ls)), sp, target, st.peer,
		    c->json, false);
	warp_loop_run_until(loop, wd_signals_stopped, &sig, -1);
	rc = CLI_OK;
out:
	wd_signals_stop(&sig);
	fwd_forwarder_free(f);
	warp_gate_close(gate);
	wd_loop_drain(loop);
	warp_loop_free(loop);
	return rc;
}

static int run_daemon(struct warp_ctl *ctl, struct cli_common *c, struct forward_opts *o,
		      const char *target, const struct spec *sp,
		      const struct sockaddr_storage *bind)
{
	char ls[WARP_EP_STRLEN], to[FWD_HOST_MAX + 16], *text, *reply = NULL;
	json_t *req, *rep = NULL;
	int err, rc = CLI_FAIL;

	snprintf(to, sizeof(to), strchr(sp->host, ':') ? "[%s]:%u" : "%s:%u", sp->host, sp->port);
	req = json_pack("{s:s, s:s, s:s, s:s, s:i}", "op", "forward", "target", target, "listen",
			warp_ep_str((const struct sockaddr *)bind, ls, sizeof(ls)), "to", to,
			"timeout_ms", o->timeout_ms);
	if (o->strategies) {
		json_t *a = json_array();

		for (unsigned int s = 0; s < WARP_STRAT_MAX; s++)
			if (o->strategies & (1u << s))
				json_array_append_new(a, json_string(warp_strategy_name(s)));
		json_object_set_new(req, "strategies", a);
	}
	text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	err = warp_ctl_call(ctl, text, &reply, (o->timeout_ms ? o->timeout_ms : 30000) + 5000);
	free(text);
	rep = reply ? json_loads(reply, 0, NULL) : NULL;
	if (err) {
		const char *why = json_string_value(json_object_get(rep, "error"));

		cli_error("forward", "%s", why ? why : warp_strerror(err));
		rc = err == -EINVAL || err == -WARP_EMALFORMED || err == -WARP_ENAME ? CLI_USAGE
		     : err == -EADDRINUSE || err == -EACCES			     ? CLI_SYSTEM
										     : CLI_FAIL;
		goto out;
	}
	print_start(json_string_value(json_object_get(rep, "listen")) ?: "", sp, target,
		    json_string_value(json_object_get(rep, "peer")) ?: "", c->json, true);
	err = wd_ctl_follow(ctl, "forward", c->verbose);
	if (err) {
		cli_error("forward", "the daemon went away: %s", warp_strerror(err));
		goto out;
	}
	rc = CLI_OK;
out:
	json_decref(rep);
	free(reply);
	return rc;
}

static int cmd_forward(int argc, char **argv)
{
	static const struct option opts[] = { { "bind", required_argument, NULL, OPT_BIND },
					      { "name", required_argument, NULL, OPT_NAME },
					      { "timeout", required_argument, NULL, OPT_TIMEOUT },
					      { "strategy", required_argument, NULL, OPT_STRATEGY },
					      { "no-daemon", no_argument, NULL, OPT_NO_DAEMON },
					      { "socket", required_argument, NULL, OPT_SOCKET },
					      { 0 } };
	struct forward_opts o = { 0 };
	struct warp_ctl *ctl = NULL;
	struct sockaddr_storage bind;
	struct cli_common c;
	struct spec sp;
	char path[PATH_MAX];
	int first, rc;

	rc = cli_common_parse(&c, &forward_cmd, argc, argv, opts, "", forward_opt, &o, &first);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (argc - first != 2) {
		if (argc - first < 2)
			cli_error("forward", "expected TARGET and LOCALPORT:HOST:PORT");
		else
			cli_error("forward", "unexpected argument '%s'", argv[first + 2]);
		return CLI_USAGE;
	}
	if (parse_spec(argv[first + 1], &sp)) {
		cli_error("forward", "'%s': expected LOCALPORT:HOST:PORT (e.g. 8080:127.0.0.1:80)",
			  argv[first + 1]);
		return CLI_USAGE;
	}
	if (warp_ep_parse(o.bind ? o.bind : "127.0.0.1", 1, &bind)) {
		cli_error("forward", "--bind: '%s' is not an IP address", o.bind);
		return CLI_USAGE;
	}
	warp_ep_set_port((struct sockaddr *)&bind, sp.lport);
	if (o.name && warp_name_validate(o.name)) {
		cli_error("forward", "invalid --name '%s'", o.name);
		return CLI_USAGE;
	}
	if (o.name)
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", o.name);
	if (!o.no_daemon && !o.name && wd_socket_path(&c.conf, o.socket, path, sizeof(path)) == 0)
		ctl = warp_ctl_open(path);
	if (!ctl && o.socket && !o.no_daemon) {
		cli_error("forward", "no daemon at %s: %s", o.socket, warp_strerror(errno));
		return CLI_FAIL;
	}
	if (ctl)
		rc = run_daemon(ctl, &c, &o, argv[first], &sp, &bind);
	else
		rc = run_standalone(&c, &o, argv[first], &sp, &bind);
	warp_ctl_close(ctl);
	return rc;
}
