// SPDX-License-Identifier: MIT
/*
 * warpgate daemon: keep a node running (identity, name registration, port mappings, BPF
 * programs) and serve the control socket other processes use its pipes through.  Runs in
 * the foreground (systemd, see tools/warpgate.service).  SIGHUP reloads the configuration;
 * SIGTERM/SIGINT shut down cleanly.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>

#include "cli/common.h"
#include "daemon/server.h"

static int cmd_daemon(int argc, char **argv);

CLI_COMMAND(
	daemon_cmd, .name = "daemon", .summary = "run a node and serve its control socket",
	.usage = "[--socket PATH] [--name NAME] [common options]",
	.help = "  --socket PATH   control socket (default $WARPGATE_HOME/control.sock);\n"
		"                  mode 0600, only this user and root may connect\n"
		"  --name NAME     identity (default: the config's \"name\", else derived from\n"
		"                  the machine; test mode: ephemeral)\n"
		"The first line of stdout is the node's address, once the socket serves.\n"
		"SIGHUP reloads the configuration; SIGTERM or SIGINT shut down cleanly.\n",
	.run = cmd_daemon);

enum { OPT_SOCKET = 0x2500, OPT_NAME };

struct daemon_opts {
	const char *socket;
	const char *name;
};

static int daemon_opt(int opt, const char *arg, void *user)
{
	struct daemon_opts *o = user;

	switch (opt) {
	case OPT_SOCKET:
		o->socket = arg;
		return 0;
	case OPT_NAME:
		if (warp_name_validate(arg)) {
			cli_error("daemon", "invalid --name '%s'", arg);
			return CLI_USAGE;
		}
		o->name = arg;
		return 0;
	}
	return CLI_USAGE;
}

static const struct option opts[] = { { "socket", required_argument, NULL, OPT_SOCKET },
				      { "name", required_argument, NULL, OPT_NAME },
				      { 0 } };

struct argv_copy {
	int argc;
	char **argv;
};

/* A reload is the same command line over the file as it is now. */
static int reload(void *user, struct warp_conf *conf)
{
	struct argv_copy *a = user;
	struct daemon_opts o = { 0 };
	struct cli_common c;
	int first, rc;

	rc = cli_common_parse(&c, &daemon_cmd, a->argc, a->argv, opts, "", daemon_opt, &o, &first);
	if (rc)
		return rc == CLI_CONFIG ? -WARP_ECONFIG : -EINVAL;
	if (o.name)
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", o.name);
	*conf = c.conf;
	return 0;
}

static int cmd_daemon(int argc, char **argv)
{
	struct daemon_opts o = { 0 };
	struct warpd_opts wo = { 0 };
	struct argv_copy a = { argc, argv };
	struct cli_common c;
	struct warpd *d;
	char why[512];
	int first, rc;

	rc = cli_common_parse(&c, &daemon_cmd, argc, argv, opts, "", daemon_opt, &o, &first);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (first < argc) {
		cli_error("daemon", "unexpected argument '%s'", argv[first]);
		return CLI_USAGE;
	}
	if (o.name)
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", o.name);
	wo.conf = c.conf;
	if (o.socket && snprintf(wo.socket, sizeof(wo.socket), "%s", o.socket) >= 108) {
		cli_error("daemon", "--socket: path longer than 107 bytes");
		return CLI_USAGE;
	}
	snprintf(wo.config_path, sizeof(wo.config_path), "%s", c.config_path);
	wo.reload = reload;
	wo.reload_user = &a;
	wo.ready_line = true;
	d = warpd_start(&wo, why, sizeof(why));
	if (!d) {
		cli_error("daemon", "%s", why);
		return errno == EADDRINUSE || errno == EEXIST ? CLI_FAIL : CLI_SYSTEM;
	}
	rc = warpd_run(d) ? CLI_SYSTEM : CLI_OK;
	warpd_free(d);
	return rc;
}
