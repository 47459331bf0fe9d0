// SPDX-License-Identifier: MIT
/*
 * warpgate status: identity, node, interfaces, NAT, brokers, names, BPF and pipes.  Asks the
 * daemon when one runs; otherwise starts a short-lived node (whose pipe list is empty).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/control.h>
#include <warpgate/error.h>
#include <warpgate/node.h>

#include "cli/common.h"
#include "daemon/cliutil.h"
#include "daemon/status.h"

static int cmd_status(int argc, char **argv);

CLI_COMMAND(status_cmd, .name = "status", .summary = "show identity, network, names and pipes",
	    .usage = "[--json] [--name NAME] [--no-daemon] [--socket PATH] [common options]",
	    .help = "  --json          the status document (schema in docs/cli.md)\n"
		    "  --name NAME     identity of the short-lived node (implies --no-daemon)\n"
		    "  --no-daemon     do not ask the daemon; start a short-lived node\n"
		    "  --socket PATH   the daemon's control socket\n"
		    "  -v, --verbose   also list interfaces the node does not use\n",
	    .run = cmd_status);

enum { OPT_NAME = 0x2600, OPT_NO_DAEMON, OPT_SOCKET };

struct status_opts {
	const char *name;
	const char *socket;
	bool no_daemon;
};

static int status_opt(int opt, const char *arg, void *user)
{
	struct status_opts *o = user;

	switch (opt) {
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

static int show(json_t *st, const struct cli_common *c)
{
	if (c->json) {
		char *s = json_dumps(st, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

		if (!s)
			return CLI_SYSTEM;
		printf("%s\n", s);
		free(s);
	} else {
		wd_status_print(stdout, st, c->verbose);
	}
	return CLI_OK;
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = { { "name", required_argument, NULL, OPT_NAME },
					      { "no-daemon", no_argument, NULL, OPT_NO_DAEMON },
					      { "socket", required_argument, NULL, OPT_SOCKET },
					      { 0 } };
	struct status_opts o = { 0 };
	struct warp_ctl *ctl = NULL;
	struct warp_node *node;
	struct cli_common c;
	char path[PATH_MAX], *js = NULL;
	json_t *st;
	int first, rc, err;

	rc = cli_common_parse(&c, &status_cmd, argc, argv, opts, "", status_opt, &o, &first);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (first < argc) {
		cli_error("status", "unexpected argument '%s'", argv[first]);
		return CLI_USAGE;
	}
	if (o.name && warp_name_validate(o.name)) {
		cli_error("status", "invalid --name '%s'", o.name);
		return CLI_USAGE;
	}
	if (!o.no_daemon && !o.name && wd_socket_path(&c.conf, o.socket, path, sizeof(path)) == 0)
		ctl = warp_ctl_open(path);
	if (!ctl && o.socket && !o.no_daemon) {
		cli_error("status", "no daemon at %s: %s", o.socket, warp_strerror(errno));
		return CLI_FAIL;
	}
	if (ctl) {
		err = warp_ctl_status(ctl, &js);
		warp_ctl_close(ctl);
		if (err) {
			cli_error("status", "the daemon did not answer: %s", warp_strerror(err));
			return CLI_FAIL;
		}
		st = json_loads(js, 0, NULL);
		free(js);
		if (!st)
			return CLI_SYSTEM;
		rc = show(st, &c);
		json_decref(st);
		return rc;
	}
	if (o.name)
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", o.name);
	node = warp_node_start(&c.conf, NULL);
	if (!node) {
		cli_error("status", "cannot start node: %s", warp_strerror(errno));
		return CLI_SYSTEM;
	}
	/* Let it learn what it can (NAT, clock, brokers: each bounded in time), so the status
	 * shows measurements, not "not measured yet". */
	if (warp_node_wait_ready(node, 10000) == -ETIMEDOUT)
		cli_error("status", "some network checks did not finish in 10 s");
	{
		char defname[WARP_NAME_MAX + 1] = "";
		bool named = c.conf.name[0] || !(c.conf.flags & WARP_CONF_TEST_MODE);

		if (named && !c.conf.name[0])
			warp_default_name(defname, sizeof(defname));
		st = wd_status_json(node, named ? (c.conf.name[0] ? c.conf.name : defname) : NULL,
				    NULL, NULL, NULL, NULL);
	}
	rc = st ? show(st, &c) : CLI_SYSTEM;
	json_decref(st);
	warp_node_close(node);
	return rc;
}
