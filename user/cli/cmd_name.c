// SPDX-License-Identifier: MIT
/*
 * warpgate name put|get|del NAME: manage nickname records.  put registers this node's address
 * under NAME, signed by the identity NAME (the record's owner); get resolves a name (servers
 * and the local link, raced) and prints the verified address; del leaves a signed tombstone.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/address.h>
#include <warpgate/error.h>
#include <warpgate/name.h>
#include <warpgate/node.h>

#include "cli/common.h"
#include "core/util.h"
#include "node/resolve.h"

static int cmd_name(int argc, char **argv);

CLI_COMMAND(name_cmd, .name = "name", .summary = "register, look up or delete a nickname",
	    .usage = "put|get|del NAME [--value TEXT] [--json] [common options]",
	    .help = "  put NAME      register this node's address under NAME (owner: identity NAME)\n"
		    "  get NAME      resolve NAME and print the verified address\n"
		    "  del NAME      delete NAME (only its owner can)\n"
		    "  --value TEXT  put: store TEXT (an address text) instead of our address\n",
	    .run = cmd_name);

enum { OPT_VALUE = 0x2200 };

static int name_opt(int opt, const char *arg, void *user)
{
	if (opt != OPT_VALUE)
		return CLI_USAGE;
	*(const char **)user = arg;
	return 0;
}

static int print_result(const struct warp_name_result *r, bool json, const char *op)
{
	char hex[2 * WARP_PUBKEY_LEN + 1];
	struct warp_node_addr a;
	char text[2048] = "";

	warp_hex_encode(hex, r->owner, WARP_PUBKEY_LEN);
	if (!strcmp(op, "get") && r->found && warp_addr_decode(r->value, r->value_len, &a) == 0)
		warp_addr_to_text(&a, text, sizeof(text));
	if (json) {
		json_t *o = json_pack("{s:s, s:s, s:b, s:s}", "op", op, "name", r->name, "ok",
				      r->err == 0, "server", r->server_addr);

		if (r->err)
			json_object_set_new(o, "error", json_string(warp_strerror(r->err)));
		if (!strcmp(op, "get")) {
			json_object_set_new(o, "found", json_boolean(r->found));
			if (r->found) {
				json_object_set_new(o, "owner", json_string(hex));
				json_object_set_new(o, "address", json_string(text));
				json_object_set_new(o, "updated_ms",
						    json_integer((json_int_t)r->updated_ms));
			}
		} else {
			json_object_set_new(o, "stored", json_boolean(r->stored));
			json_object_set_new(o, "servers_ok", json_integer(r->n_ok));
		}
		char *js = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);

		printf("%s\n", js);
		free(js);
		json_decref(o);
	} else if (r->err) {
		cli_error("name", "%s %s: %s", op, r->name, warp_strerror(r->err));
	} else if (!strcmp(op, "get")) {
		printf("%s\n", text[0] ? text : "(not a node address)");
		fprintf(stderr, "%s: owner %s, via %s\n", r->name, hex, r->server_addr);
	} else {
		fprintf(stderr, "%s %s: %s on %u server(s)\n", op, r->name,
			r->stored ? "done" : "not stored (quota full)", r->n_ok);
	}
	return r->err ? CLI_FAIL : (!strcmp(op, "get") || r->stored) ? CLI_OK : CLI_FAIL;
}

static int cmd_name(int argc, char **argv)
{
	static const struct option opts[] = { { "value", required_argument, NULL, OPT_VALUE },
					      { 0 } };
	struct cli_common c;
	struct warp_name_result *res = calloc(1, sizeof(*res));
	struct warp_node *node = NULL;
	struct warp_name_client *nc;
	const char *value = NULL, *op, *name;
	char canon[WARP_NAME_FQ_MAX + 1];
	int first, rc, err;

	if (!res)
		return CLI_SYSTEM;
	rc = cli_common_parse(&c, &name_cmd, argc, argv, opts, "", name_opt, &value, &first);
	if (rc) {
		rc = rc < 0 ? CLI_OK : rc;
		goto out;
	}
	if (argc - first != 2) {
		cli_error("name", "expected put|get|del NAME");
		rc = CLI_USAGE;
		goto out;
	}
	op = argv[first];
	name = argv[first + 1];
	if (strcmp(op, "put") && strcmp(op, "get") && strcmp(op, "del")) {
		cli_error("name", "unknown operation '%s' (put, get, del)", op);
		rc = CLI_USAGE;
		goto out;
	}
	if (warp_name_canonical(name, c.conf.tld[0] ? c.conf.tld : NULL, canon)) {
		cli_error("name", "invalid name '%s' (labels of a-z, 0-9 and '-', up to 63 characters)",
			  name);
		rc = CLI_USAGE;
		goto out;
	}
	if (c.conf.flags & WARP_CONF_TEST_MODE) {
		cli_error("name", "test mode has no nickname servers");
		rc = CLI_USAGE;
		goto out;
	}
	/* The owner of NAME is the identity of the same name (its dots and TLD aside). */
	if (strcmp(op, "get")) {
		char idname[WARP_NAME_MAX + 1];
		size_t l = strcspn(name, ".");

		snprintf(idname, sizeof(idname), "%.*s", (int)l, name);
		if (warp_name_validate(idname)) {
			cli_error("name", "invalid name '%s'", name);
			rc = CLI_USAGE;
			goto out;
		}
		snprintf(c.conf.name, sizeof(c.conf.name), "%s", idname);
	}
	/* A put advertises what the world sees of us; get and del need no discovery. */
	if (strcmp(op, "put") || value)
		c.conf.flags |= WARP_CONF_NO_STUN | WARP_CONF_NO_UPNP | WARP_CONF_NO_NTP |
				WARP_CONF_NO_MQTT;
	c.conf.flags |= WARP_CONF_NO_BPF;
	node = warp_node_start(&c.conf, NULL);
	if (!node) {
		cli_error("name", "cannot start node: %s", warp_strerror(errno));
		rc = CLI_SYSTEM;
		goto out;
	}
	nc = node_name_client(node);
	if (!nc) {
		cli_error("name", "no nickname server configured (--nameserver HOST:PORT)");
		rc = CLI_CONFIG;
		goto out;
	}
	if (!strcmp(op, "get")) {
		err = warp_name_get_sync(nc, name, res);
		if (!err && !res->found)
			res->err = -WARP_ENOTFOUND;
	} else if (!strcmp(op, "del")) {
		err = warp_name_delete_sync(nc, warp_node_identity(node), name, res);
	} else {
		uint8_t blob[WARP_ADDR_MAX_BIN];
		struct warp_node_addr a;
		int n;

		if (value) {
			err = warp_addr_from_text(value, &a);
			if (err) {
				cli_error("name", "--value: %s", warp_strerror(err));
				rc = CLI_USAGE;
				goto out;
			}
		} else {
			warp_node_wait_ready(node, 5000);
			warp_node_address(node, &a);
		}
		n = warp_addr_encode(&a, blob, sizeof(blob));
		err = n < 0 ? n
			    : warp_name_put_sync(nc, warp_node_identity(node), name, blob, (size_t)n,
						 WARP_NAME_BUMP, res);
	}
	if (err && !res->err) {
		res->err = err;
		snprintf(res->name, sizeof(res->name), "%s", name);
	}
	rc = print_result(res, c.json, op);
out:
	warp_node_close(node);
	free(res);
	return rc;
}
