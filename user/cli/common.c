// SPDX-License-Identifier: MIT
/* Shared option parsing for node-starting commands (see common.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>
#include <warpgate/log.h>

#include "cli/common.h"
#include "core/util.h"

enum {
	OPT_CONFIG = 0x1000,
	OPT_HOME,
	OPT_STUN,
	OPT_TURN,
	OPT_MQTT,
	OPT_NAMESERVER,
	OPT_NAMESERVER_KEY,
	OPT_NTP,
	OPT_IFACE,
	OPT_PORT,
	OPT_NO_UPNP,
	OPT_NO_BPF,
	OPT_NO_IPV6,
	OPT_NO_MQTT,
	OPT_NO_TURN,
	OPT_NO_NAMES,
	OPT_TEST,
	OPT_LOG,
	OPT_JSON,
	OPT_VERBOSE,
	OPT_HELP,
};

static const struct option common_opts[] = {
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "home", required_argument, NULL, OPT_HOME },
	{ "stun", required_argument, NULL, OPT_STUN },
	{ "turn", required_argument, NULL, OPT_TURN },
	{ "mqtt", required_argument, NULL, OPT_MQTT },
	{ "nameserver", required_argument, NULL, OPT_NAMESERVER },
	{ "nameserver-key", required_argument, NULL, OPT_NAMESERVER_KEY },
	{ "ntp", required_argument, NULL, OPT_NTP },
	{ "interface", required_argument, NULL, OPT_IFACE },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "no-upnp", no_argument, NULL, OPT_NO_UPNP },
	{ "no-bpf", no_argument, NULL, OPT_NO_BPF },
	{ "no-ipv6", no_argument, NULL, OPT_NO_IPV6 },
	{ "no-mqtt", no_argument, NULL, OPT_NO_MQTT },
	{ "no-turn", no_argument, NULL, OPT_NO_TURN },
	{ "no-names", no_argument, NULL, OPT_NO_NAMES },
	{ "test-mode", no_argument, NULL, OPT_TEST },
	{ "log-level", required_argument, NULL, OPT_LOG },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "verbose", no_argument, NULL, OPT_VERBOSE },
	{ "help", no_argument, NULL, OPT_HELP },
};

#define NCOMMON (sizeof(common_opts) / sizeof(common_opts[0]))

static int add_server(struct cli_common *c, const char *cmd, const char *kind, const char *arg)
{
	char err[256];

	if (warp_conf_add(&c->conf, kind, arg, err, sizeof(err))) {
		cli_error(cmd, "%s", err);
		return CLI_USAGE;
	}
	return 0;
}

/* Finds --config / --home before anything else: the file is the base flags override. */
static int load_config(struct cli_common *c, const char *cmd, int argc, char **argv)
{
	const char *path = getenv("WARPGATE_CONFIG"), *home = NULL;
	char buf[PATH_MAX], err[512];
	bool explicit = path && *path;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--config") && i + 1 < argc) {
			path = argv[++i];
			explicit = true;
		} else if (!strncmp(argv[i], "--config=", 9)) {
			path = argv[i] + 9;
			explicit = true;
		} else if (!strcmp(argv[i], "--home") && i + 1 < argc) {
			home = argv[++i];
		} else if (!strncmp(argv[i], "--home=", 7)) {
			home = argv[i] + 7;
		}
	}
	if (home)
		snprintf(c->conf.home, sizeof(c->conf.home), "%s", home);
	if (!explicit) {
		if (home)
			snprintf(buf, sizeof(buf), "%s/config.json", home);
		else if (warp_home_dir(buf, sizeof(buf) - 16) == 0)
			strcat(buf, "/config.json");
		else
			return 0;
		if (access(buf, F_OK) != 0)
			return 0;
		path = buf;
	}
	if (warp_conf_load_file(&c->conf, path, err, sizeof(err))) {
		cli_error(cmd, "%s", err);
		return CLI_CONFIG;
	}
	snprintf(c->config_path, sizeof(c->config_path), "%s", path);
	if (home) /* --home beats the file's "home" */
		snprintf(c->conf.home, sizeof(c->conf.home), "%s", home);
	return 0;
}

int cli_common_parse(struct cli_common *c, const struct cli_command *cmd, int argc, char **argv,
		     const struct option *cmd_opts, const char *cmd_short, cli_opt_fn fn,
		     void *user, int *first_arg)
{
	struct option opts[NCOMMON + 32];
	char shortopts[64];
	size_t n = 0;
	int o, rc;

	memset(c, 0, sizeof(*c));
	warp_conf_init(&c->conf);
	for (const struct option *p = cmd_opts; p && p->name && n < 31; p++)
		opts[n++] = *p;
	for (size_t i = 0; i < NCOMMON; i++)
		opts[n++] = common_opts[i];
	memset(&opts[n], 0, sizeof(opts[n]));
	snprintf(shortopts, sizeof(shortopts), "v%s", cmd_short ? cmd_short : "");
	rc = load_config(c, cmd->name, argc, argv);
	if (rc)
		return rc;
	optind = 1;
	while ((o = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
		char *end;
		long v;

		switch (o) {
		case OPT_CONFIG:
		case OPT_HOME:
			break; /* handled by load_config() */
		case OPT_STUN:
			rc = add_server(c, cmd->name, "stun", optarg);
			break;
		case OPT_TURN:
			rc = add_server(c, cmd->name, "turn", optarg);
			break;
		case OPT_MQTT:
			rc = add_server(c, cmd->name, "mqtt", optarg);
			break;
		case OPT_NAMESERVER:
			rc = add_server(c, cmd->name, "nameserver", optarg);
			break;
		case OPT_NAMESERVER_KEY: {
			uint8_t key[WARP_PUBKEY_LEN];

			if (!c->conf.nnames) {
				cli_error(cmd->name, "--nameserver-key needs a --nameserver before it");
				return CLI_USAGE;
			}
			if (warp_hex_decode(key, sizeof(key), optarg) || warp_pubkey_check(key)) {
				cli_error(cmd->name, "--nameserver-key: expected 66 hex digits of a "
						     "compressed public key");
				return CLI_USAGE;
			}
			snprintf(c->conf.names[c->conf.nnames - 1].key_hex,
				 sizeof(c->conf.names[0].key_hex), "%s", optarg);
			break;
		}
		case OPT_NTP:
			rc = add_server(c, cmd->name, "ntp", optarg);
			break;
		case OPT_IFACE:
			rc = add_server(c, cmd->name, "interface", optarg);
			break;
		case OPT_PORT:
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || v < 0 || v > 65535) {
				cli_error(cmd->name, "--port: '%s' is not a port number 0-65535", optarg);
				return CLI_USAGE;
			}
			c->conf.port = (uint16_t)v;
			break;
		case OPT_NO_UPNP:
			c->conf.flags |= WARP_CONF_NO_UPNP;
			break;
		case OPT_NO_BPF:
			c->conf.flags |= WARP_CONF_NO_BPF;
			break;
		case OPT_NO_IPV6:
			c->conf.flags |= WARP_CONF_NO_IPV6;
			break;
		case OPT_NO_MQTT:
			c->conf.flags |= WARP_CONF_NO_MQTT;
			break;
		case OPT_NO_TURN:
			c->conf.flags |= WARP_CONF_NO_TURN;
			break;
		case OPT_NO_NAMES:
			c->conf.flags |= WARP_CONF_NO_NAMES;
			break;
		case OPT_TEST:
			c->conf.flags |= WARP_CONF_TEST_FLAGS;
			break;
		case OPT_LOG:
			c->conf.log_level = warp_log_level_parse(optarg);
			if (c->conf.log_level < 0) {
				cli_error(cmd->name, "--log-level: expected debug, info, warn, error "
						     "or none, not '%s'", optarg);
				return CLI_USAGE;
			}
			warp_log_set_level((enum warp_log_level)c->conf.log_level);
			break;
		case OPT_JSON:
			c->json = true;
			break;
		case 'v':
		case OPT_VERBOSE:
			c->verbose = true;
			break;
		case OPT_HELP:
			cli_usage(cmd, stdout);
			fputs(CLI_COMMON_HELP, stdout);
			return -1;
		case '?':
		case ':':
			fprintf(stderr, "run 'warpgate %s --help' for the options\n", cmd->name);
			return CLI_USAGE;
		default:
			rc = fn ? fn(o, optarg, user) : CLI_USAGE;
			break;
		}
		if (rc)
			return rc;
	}
	*first_arg = optind;
	return 0;
}
