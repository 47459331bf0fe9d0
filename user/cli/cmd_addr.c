// SPDX-License-Identifier: MIT
/* warpgate addr: print this node's address, or decode one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/address.h>
#include <warpgate/error.h>
#include <warpgate/node.h>

#include "cli/common.h"

static int cmd_addr(int argc, char **argv);

CLI_COMMAND(addr_cmd, .name = "addr", .summary = "print this node's address, or decode one",
	    .usage = "[--decode TEXT] [--json] [--name NAME] [common options]",
	    .help = "  --decode TEXT  decode an address text (wg1....) instead\n"
		    "  --name NAME    identity name\n",
	    .run = cmd_addr);

struct addr_opts {
	const char *decode;
	const char *name;
};

static int addr_opt(int opt, const char *arg, void *user)
{
	struct addr_opts *o = user;

	switch (opt) {
	case 'd':
		o->decode = arg;
		return 0;
	case 'n':
		o->name = arg;
		return 0;
	}
	return CLI_USAGE;
}

static int print_addr(const struct warp_node_addr *a, bool json)
{
	char text[2048];
	char *js;

	if (json) {
		js = warp_addr_to_json(a, true);
		if (!js)
			return CLI_SYSTEM;
		printf("%s\n", js);
		free(js);
		return CLI_OK;
	}
	if (warp_addr_to_text(a, text, sizeof(text)))
		return CLI_SYSTEM;
	printf("%s\n", text);
	return CLI_OK;
}

static int cmd_addr(int argc, char **argv)
{
	static const struct option opts[] = { { "decode", required_argument, NULL, 'd' },
					      { "name", required_argument, NULL, 'n' },
					      { 0 } };
	struct cli_common c;
	struct addr_opts o = { 0 };
	struct warp_node_addr a;
	struct warp_node *node;
	int first, rc, err;

	rc = cli_common_parse(&c, &addr_cmd, argc, argv, opts, "d:n:", addr_opt, &o, &first);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (first < argc) {
		cli_error("addr", "unexpected argument '%s'", argv[first]);
		return CLI_USAGE;
	}
	if (o.decode) {
		err = warp_addr_from_text(o.decode, &a);
		if (err) {
			cli_error("addr", "cannot decode address: %s", warp_strerror(err));
			return CLI_FAIL;
		}
		return print_addr(&a, c.json);
	}
	if (o.name) {
		if (warp_name_validate(o.name)) {
			cli_error("addr", "invalid name '%s'", o.name);
			return CLI_USAGE;
		}
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", o.name);
	}
	node = warp_node_start(&c.conf, NULL);
	if (!node) {
		cli_error("addr", "cannot start node: %s", warp_strerror(errno));
		return CLI_SYSTEM;
	}
	/* The address is only complete once the NAT, clock and brokers are known. */
	if (warp_node_wait_ready(node, 5000))
		fprintf(stderr, "warpgate addr: network discovery still incomplete after 5 s\n");
	err = warp_node_address(node, &a);
	rc = err ? CLI_SYSTEM : print_addr(&a, c.json);
	warp_node_close(node);
	return rc;
}
