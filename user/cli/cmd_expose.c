// SPDX-License-Identifier: MIT
/*
 * warpgate expose: the listening half of port forwarding.  Peers running `warpgate forward`
 * may reach the exposed HOST:PORTs, and only those; with --allow only the named keys may
 * open a pipe at all (the node refuses others in the handshake) and each port checks the
 * key again.  Uses the daemon's node when a daemon runs, else starts its own.
 */
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

static int cmd_expose(int argc, char **argv);

CLI_COMMAND(expose_cmd, .name = "expose", .summary = "let peers forward to local TCP ports",
	    .usage = "[HOST:]PORT... [--allow KEY]... [--name NAME] [--no-daemon] "
		     "[common options]",
	    .help = "  PORT            expose 127.0.0.1:PORT; HOST:PORT or [IPV6]:PORT for others\n"
		    "  --allow KEY     only this peer key (66 hex digits; repeatable); without\n"
		    "                  --allow any peer that reaches this node may connect\n"
		    "  --name NAME     identity to serve as (default: machine-derived; test mode:\n"
		    "                  ephemeral)\n"
		    "  --no-daemon     run a node of our own even when the daemon runs\n"
		    "  --socket PATH   the daemon's control socket\n"
		    "The first line of stdout is this node's address (--json: an object).\n",
	    .run = cmd_expose);

enum { OPT_ALLOW = 0x2300, OPT_NAME, OPT_NO_DAEMON, OPT_SOCKET };

struct expose_opts {
	struct wd_keys keys;
	const char *name;
	const char *socket;
	bool no_daemon;
	int bad;
};

static int expose_opt(int opt, const char *arg, void *user)
{
	struct expose_opts *o = user;

	switch (opt) {
	case OPT_ALLOW:
		if (wd_keys_add(&o->keys, arg)) {
			cli_error("expose",
				  "--allow: '%s' is not a public key (66 hex digits of a "
				  "compressed key, as 'warpgate id' prints)",
				  arg);
			return CLI_USAGE;
		}
		return 0;
	case OPT_NAME:
		o->name = arg;
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

static json_t *rules_json(const struct fwd_rule *rules, size_t n, const struct wd_keys *keys)
{
	json_t *a = json_array();
	char hex[2 * WARP_PUBKEY_LEN + 1];

	for (size_t i = 0; i < n; i++) {
		json_t *allow = keys->n ? json_array() : json_string("any");

		for (size_t k = 0; k < keys->n; k++) {
			fwd_key_hex(keys->keys[k], hex);
			json_array_append_new(allow, json_string(hex));
		}
		json_array_append_new(a, json_pack("{s:s, s:i, s:o}", "host", rules[i].host, "port",
						   rules[i].port, "allow", allow));
	}
	return a;
}

static void print_start(const char *addr, const char *key, const struct fwd_rule *rules, size_t n,
			const struct wd_keys *keys, bool json, bool daemon)
{
	if (json) {
		json_t *o = json_pack("{s:s, s:s, s:o, s:b}", "address", addr, "public_key", key,
				      "exposed", rules_json(rules, n, keys), "daemon", daemon);
		char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);

		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		printf("%s\n", addr);
	}
	fflush(stdout);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "warpgate expose: %s:%u exposed to %s%s\n", rules[i].host,
			rules[i].port, keys->n ? "the allowed keys" : "any peer",
			daemon ? " (through the daemon)" : "");
	if (!keys->n)
		fprintf(stderr, "warpgate expose: warning: no --allow: any peer that can reach "
				"this node may connect to the exposed ports\n");
}

static void on_event(void *user, const struct fwd_event *ev)
{
	wd_fwd_event_print("expose", ev, *(bool *)user);
}

struct standalone {
	struct fwd_exposer *x;
};

static void on_link(struct warp_pipe *link, void *user)
{
	struct standalone *st = user;

	fwd_exposer_adopt(st->x, link, NULL, 0);
}

static int run_standalone(struct cli_common *c, struct expose_opts *o, struct fwd_rule *rules,
			  size_t n)
{
	struct warp_loop *loop = warp_loop_new();
	struct warp_gate *gate = NULL;
	struct standalone st = { 0 };
	struct wd_signals sig = { .fd = -1 };
	char addr[2048], key[2 * WARP_PUBKEY_LEN + 1];
	int rc = CLI_SYSTEM, err;

	if (!loop)
		return CLI_SYSTEM;
	gate = warp_gate_open_on(c->conf.name[0] ? c->conf.name : NULL, &c->conf, loop);
	if (!gate) {
		cli_error("expose", "cannot start node: %s", warp_strerror(errno));
		goto out;
	}
	st.x = fwd_exposer_new(loop, on_event, &c->verbose);
	if (!st.x)
		goto out;
	for (size_t i = 0; i < n; i++) {
		rules[i].keys = o->keys.keys;
		rules[i].nkeys = o->keys.n;
		if (fwd_exposer_add(st.x, &rules[i], NULL))
			goto out;
	}
	/* Unlisted keys are refused in the handshake already; the rules check again. */
	err = warp_node_allow(warp_gate_node(gate), (const uint8_t(*)[WARP_PUBKEY_LEN])o->keys.keys,
			      o->keys.n);
	if (err) {
		cli_error("expose", "cannot set the allowed keys: %s", warp_strerror(err));
		goto out;
	}
	warp_gate_listen(gate, on_link, &st);
	if (warp_node_address_text(warp_gate_node(gate), addr, sizeof(addr)))
		goto out;
	fwd_key_hex(warp_identity_pubkey(warp_node_identity(warp_gate_node(gate))), key);
	err = wd_signals_start(&sig, loop);
	if (err) {
		cli_error("expose", "signals: %s", warp_strerror(err));
		goto out;
	}
	print_start(addr, key, rules, n, &o->keys, c->json, false);
	warp_loop_run_until(loop, wd_signals_stopped, &sig, -1);
	rc = CLI_OK;
out:
	wd_signals_stop(&sig);
	if (st.x)
		fwd_exposer_drop_all(st.x);
	warp_gate_close(gate);
	wd_loop_drain(loop);
	fwd_exposer_free(st.x);
	warp_loop_free(loop);
	return rc;
}

static int run_daemon(struct warp_ctl *ctl, struct cli_common *c, struct expose_opts *o,
		      struct fwd_rule *rules, size_t n, char **texts)
{
	json_t *req = json_pack("{s:s, s:[], s:[]}", "op", "expose", "rules", "allow");
	json_t *rep = NULL;
	char hex[2 * WARP_PUBKEY_LEN + 1], *text, *reply = NULL;
	int err, rc = CLI_FAIL;

	for (size_t i = 0; i < n; i++)
		json_array_append_new(json_object_get(req, "rules"), json_string(texts[i]));
	for (size_t i = 0; i < o->keys.n; i++) {
		fwd_key_hex(o->keys.keys[i], hex);
		json_array_append_new(json_object_get(req, "allow"), json_string(hex));
	}
	text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	err = warp_ctl_call(ctl, text, &reply, 10000);
	free(text);
	rep = reply ? json_loads(reply, 0, NULL) : NULL;
	if (err) {
		const char *why = json_string_value(json_object_get(rep, "error"));

		cli_error("expose", "the daemon refused: %s", why ? why : warp_strerror(err));
		rc = err == -EINVAL ? CLI_USAGE : CLI_FAIL;
		goto out;
	}
	print_start(json_string_value(json_object_get(rep, "address")) ?: "",
		    json_string_value(json_object_get(rep, "public_key")) ?: "", rules, n, &o->keys,
		    c->json, true);
	err = wd_ctl_follow(ctl, "expose", c->verbose);
	if (err) {
		cli_error("expose", "the daemon went away: %s", warp_strerror(err));
		goto out;
	}
	rc = CLI_OK;
out:
	json_decref(rep);
	free(reply);
	return rc;
}

static int cmd_expose(int argc, char **argv)
{
	static const struct option opts[] = { { "allow", required_argument, NULL, OPT_ALLOW },
					      { "name", required_argument, NULL, OPT_NAME },
					      { "no-daemon", no_argument, NULL, OPT_NO_DAEMON },
					      { "socket", required_argument, NULL, OPT_SOCKET },
					      { 0 } };
	struct expose_opts o = { 0 };
	struct fwd_rule *rules = NULL;
	struct warp_ctl *ctl = NULL;
	struct cli_common c;
	char path[PATH_MAX], err[256];
	int first, rc;
	size_t n;

	rc = cli_common_parse(&c, &expose_cmd, argc, argv, opts, "", expose_opt, &o, &first);
	if (rc) {
		rc = rc < 0 ? CLI_OK : rc;
		goto out;
	}
	if (first >= argc) {
		cli_error("expose", "missing PORT (what to expose, e.g. 8080 or 127.0.0.1:8080)");
		rc = CLI_USAGE;
		goto out;
	}
	n = (size_t)(argc - first);
	rules = calloc(n, sizeof(*rules));
	if (!rules) {
		rc = CLI_SYSTEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (fwd_rule_parse(argv[first + (int)i], &rules[i], err, sizeof(err))) {
			cli_error("expose", "%s", err);
			rc = CLI_USAGE;
			goto out;
		}
	}
	if (o.name && warp_name_validate(o.name)) {
		cli_error("expose", "invalid --name '%s'", o.name);
		rc = CLI_USAGE;
		goto out;
	}
	if (o.name)
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", o.name);
	if (!o.no_daemon && !o.name && wd_socket_path(&c.conf, o.socket, path, sizeof(path)) == 0)
		ctl = warp_ctl_open(path);
	if (!ctl && o.socket && !o.no_daemon) {
		cli_error("expose", "no daemon at %s: %s", o.socket, warp_strerror(errno));
		rc = CLI_FAIL;
		goto out;
	}
	if (ctl)
		rc = run_daemon(ctl, &c, &o, rules, n, argv + first);
	else
		rc = run_standalone(&c, &o, rules, n);
out:
	warp_ctl_close(ctl);
	free(rules);
	wd_keys_free(&o.keys);
	return rc;
}
