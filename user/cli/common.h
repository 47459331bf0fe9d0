/* SPDX-License-Identifier: MIT */
/* Options every node-starting command shares, and the config file they read. */
#ifndef WARP_CLI_COMMON_H
#define WARP_CLI_COMMON_H

#include <stdbool.h>

#include <warpgate/config.h>

#include "cli/cli.h"

struct cli_common {
	struct warp_conf conf;
	bool json;
	bool verbose;
	char config_path[PATH_MAX];
};

#define CLI_COMMON_HELP                                                                            \
	"common options:\n"                                                                        \
	"  --config FILE        JSON config (default $WARPGATE_CONFIG or $WARPGATE_HOME/config.json)\n" \
	"  --home DIR           identity and state directory ($WARPGATE_HOME, ~/.warpgate)\n"   \
	"  --stun HOST:PORT     STUN server (repeatable)\n"                                       \
	"  --turn USER:PASS@HOST:PORT  TURN relay (repeatable)\n"                                 \
	"  --mqtt HOST:PORT     signalling broker (repeatable)\n"                                 \
	"  --nameserver HOST:PORT[,KEY]  nickname server (repeatable)\n"                          \
	"  --nameserver-key HEX pin the key of the last --nameserver\n"                           \
	"  --ntp HOST[:PORT]    time server (repeatable)\n"                                       \
	"  --interface IF       use only this interface (repeatable)\n"                           \
	"  --port N             listen port (TCP and UDP)\n"                                      \
	"  --no-upnp --no-bpf --no-ipv6 --no-mqtt --no-turn --no-names\n"                         \
	"  --test-mode          loopback only, no servers\n"                                      \
	"  --log-level LEVEL    debug, info, warn, error, none\n"                                 \
	"  --json               machine-readable output\n"                                        \
	"  -v, --verbose        more detail\n"

/* Callback for the command's own options: return 0 if handled, CLI_USAGE on a bad value. */
typedef int (*cli_opt_fn)(int opt, const char *arg, void *user);

/*
 * Parses argv with the common options plus cmd_opts/cmd_short.  The config file is read
 * first (wherever --config appears), then flags override it.  Returns 0 and sets *first_arg
 * to the index of the first positional argument, or an exit code (CLI_USAGE, CLI_CONFIG, or
 * -1 after printing --help).
 */
int cli_common_parse(struct cli_common *c, const struct cli_command *cmd, int argc, char **argv,
		     const struct option *cmd_opts, const char *cmd_short, cli_opt_fn fn,
		     void *user, int *first_arg);

#endif
