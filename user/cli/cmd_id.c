// SPDX-License-Identifier: MIT
/* warpgate id: show (creating on first use) the identity of a name. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>
#include <warpgate/identity.h>

#include "cli/cli.h"
#include "core/util.h"

static int cmd_id(int argc, char **argv);

CLI_COMMAND(id_cmd, .name = "id", .summary = "show this host's identity for a name",
	    .usage = "[--name NAME] [--home DIR] [--json] [--no-create]",
	    .help = "  --name NAME   identity name (default: derived from /etc/machine-id)\n"
		    "  --home DIR    key directory (default $WARPGATE_HOME or ~/.warpgate)\n"
		    "  --json        machine-readable output\n"
		    "  --no-create   fail instead of creating a missing identity\n",
	    .run = cmd_id);

static int cmd_id(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' }, { "home", required_argument, NULL, 'H' },
		{ "json", no_argument, NULL, 'j' },       { "no-create", no_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },       { 0 }
	};
	char name[WARP_NAME_MAX + 1] = "", home[PATH_MAX], path[PATH_MAX];
	char hex[2 * WARP_PUBKEY_LEN + 1];
	struct warp_identity *id;
	bool json = false, create = true, created;
	int c, err;

	if (warp_home_dir(home, sizeof(home)))
		return CLI_SYSTEM;
	while ((c = getopt_long(argc, argv, "n:H:jNh", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (strlen(optarg) > WARP_NAME_MAX || warp_name_validate(optarg)) {
				cli_error("id", "invalid name '%s': use 1-%d of [A-Za-z0-9._-], "
						"no leading dot", optarg, WARP_NAME_MAX);
				return CLI_USAGE;
			}
			snprintf(name, sizeof(name), "%s", optarg);
			break;
		case 'H':
			snprintf(home, sizeof(home), "%s", optarg);
			break;
		case 'j':
			json = true;
			break;
		case 'N':
			create = false;
			break;
		case 'h':
			cli_usage(&id_cmd, stdout);
			return CLI_OK;
		default:
			cli_usage(&id_cmd, stderr);
			return CLI_USAGE;
		}
	}
	if (optind < argc) {
		cli_error("id", "unexpected argument '%s'", argv[optind]);
		return CLI_USAGE;
	}
	if (!name[0] && (err = warp_default_name(name, sizeof(name)))) {
		cli_error("id", "cannot derive a default name: %s", warp_strerror(err));
		return CLI_SYSTEM;
	}
	id = warp_keystore_load(home, name, create, &created);
	if (!id) {
		err = errno;
		cli_error("id", "identity '%s' in %s: %s", name, home, warp_strerror(err));
		return err == WARP_EKEYPERM || err == WARP_EMALFORMED || err == ENOENT ? CLI_FAIL
											: CLI_SYSTEM;
	}
	warp_keystore_path(home, name, path, sizeof(path));
	warp_hex_encode(hex, warp_identity_pubkey(id), WARP_PUBKEY_LEN);
	if (json)
		printf("{\"name\": \"%s\", \"public_key\": \"%s\", \"key_file\": \"%s\", "
		       "\"created\": %s}\n",
		       name, hex, path, created ? "true" : "false");
	else
		printf("%s\n", hex);
	if (!json && created)
		fprintf(stderr, "created identity '%s' (%s)\n", name, path);
	warp_identity_free(id);
	return CLI_OK;
}
