// SPDX-License-Identifier: MIT
/*
 * warpgate nat: what this host's network looks like from outside — NAT mapping and filtering
 * (RFC 4787) and the classic type, port delta, hairpinning, external addresses, clock offset
 * and how long each probe took.  To warpgate what `tailscale netcheck` is to Tailscale.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/error.h>
#include <warpgate/nat.h>
#include <warpgate/node.h>

#include "cli/common.h"
#include "nat/natreport.h"
#include "net/endpoint.h"
#include "node/netstate.h"
#include "node/node_internal.h"

static int cmd_nat(int argc, char **argv);

CLI_COMMAND(nat_cmd, .name = "nat", .summary = "classify this host's NAT and show its view of the internet",
	    .usage = "[--json] [--stun HOST:PORT]... [common options]",
	    .help = "  Needs at least one STUN server (--stun or the config file); two RFC 5780\n"
		    "  servers (or one with an alternate address) give the filtering behaviour.\n",
	    .run = cmd_nat);

static void print_family(const struct warp_nat_report *r)
{
	char ep[WARP_EP_STRLEN];

	printf("IPv%d: %s (mapping %s, filtering %s)\n", r->family == AF_INET6 ? 6 : 4,
	       warp_nat_type_name(r->type), warp_nat_behavior_name(r->mapping),
	       warp_nat_behavior_name(r->filtering));
	printf("  external:");
	for (unsigned int i = 0; i < r->n_external; i++)
		printf(" %s", warp_ep_str((struct sockaddr *)&r->external[i], ep, sizeof(ep)));
	if (!r->n_external)
		printf(" none");
	printf("\n  port delta: %s %+d   hairpin: %s   udp: %s%s\n", warp_nat_delta_name(r->delta),
	       r->delta_value, r->hairpin ? "yes" : "no", r->udp ? "yes" : "blocked",
	       !r->udp ? (r->tcp ? " (TCP works)" : " (TCP too)") : "");
	printf("  %u probes to %u servers in %u ms\n", r->n_probes, r->servers_answered,
	       r->duration_ms);
}

static bool portmap_done(void *user)
{
	struct sockaddr_storage ext;
	const char *m;
	bool d4, d6;

	node_portmap(user, false, &d4, &ext, &m);
	node_portmap(user, true, &d6, &ext, &m);
	return d4 && d6;
}

static json_t *portmap_json(struct warp_node *node)
{
	json_t *arr = json_array();
	struct sockaddr_storage ext;
	const char *method;
	char ep[WARP_EP_STRLEN];
	bool done;

	for (int tcp = 0; tcp < 2; tcp++)
		if (node_portmap(node, tcp, &done, &ext, &method))
			json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "proto",
							     tcp ? "tcp" : "udp", "method", method,
							     "external",
							     warp_ep_str((struct sockaddr *)&ext, ep,
									 sizeof(ep))));
	return arr;
}

static int cmd_nat(int argc, char **argv)
{
	struct cli_common c;
	struct warp_node *node;
	const struct warp_nat_report *r4, *r6;
	int64_t off;
	uint64_t unc, t0;
	int first, rc, err;

	rc = cli_common_parse(&c, &nat_cmd, argc, argv, NULL, "", NULL, NULL, &first);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (first < argc) {
		cli_error("nat", "unexpected argument '%s'", argv[first]);
		return CLI_USAGE;
	}
	if (c.conf.flags & WARP_CONF_TEST_MODE) {
		cli_error("nat", "test mode has no network to classify");
		return CLI_USAGE;
	}
	if (!c.conf.nstun) {
		cli_error("nat", "no STUN server configured (use --stun HOST:PORT or the config "
				 "file's \"stun\" key)");
		return CLI_CONFIG;
	}
	/* What the classification needs (and port mapping, unless --no-upnp): no brokers, no
	 * names, no BPF. */
	c.conf.flags |= WARP_CONF_NO_MQTT | WARP_CONF_NO_BPF | WARP_CONF_NO_NAMES;
	c.conf.nmqtt = 0;
	if (!c.json)
		fprintf(stderr, "probing %zu STUN server(s)...\n", c.conf.nstun);
	t0 = warp_time_ms();
	node = warp_node_start(&c.conf, NULL);
	if (!node) {
		cli_error("nat", "cannot start node: %s", warp_strerror(errno));
		return CLI_SYSTEM;
	}
	err = warp_node_wait_ready(node, 15000);
	if (err)
		cli_error("nat", "classification incomplete: %s", warp_strerror(err));
	if (!(c.conf.flags & WARP_CONF_NO_UPNP))
		warp_loop_run_until(warp_node_loop(node), portmap_done, node, 4000);
	r4 = node_nat_report(node, AF_INET);
	r6 = node_nat_report(node, AF_INET6);
	if (c.json) {
		json_t *root = r4 ? warp_nat_report_to_json(r4, 0) : json_object();
		char *js;

		if (!r4)
			json_object_set_new(root, "type", json_string("unknown"));
		if (r6)
			json_object_set_new(root, "ipv6", warp_nat_report_to_json(r6, 0));
		if (node_clock_info(node, &off, &unc))
			json_object_set_new(root, "clock",
					    json_pack("{s:f, s:f}", "offset_ms", (double)off / 1e6,
						      "uncertainty_ms", (double)unc / 1e6));
		else
			json_object_set_new(root, "clock", json_null());
		json_object_set_new(root, "portmap", portmap_json(node));
		json_object_set_new(root, "ms", json_integer((json_int_t)(warp_time_ms() - t0)));
		js = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
		printf("%s\n", js);
		free(js);
		json_decref(root);
	} else {
		if (r4)
			print_family(r4);
		if (r6)
			print_family(r6);
		if (!r4 && !r6)
			printf("no STUN server answered: UDP blocked or servers unreachable\n");
		if (node_clock_info(node, &off, &unc))
			printf("clock: offset %+.1f ms (+/- %.1f ms)\n", (double)off / 1e6,
			       (double)unc / 1e6);
		else if (c.conf.nntp)
			printf("clock: no time server answered\n");
		{
			json_t *pm = portmap_json(node);
			size_t i;
			json_t *e;

			if (!json_array_size(pm))
				printf("port mapping: none%s\n",
				       c.conf.flags & WARP_CONF_NO_UPNP ? " (--no-upnp)" : "");
			json_array_foreach(pm, i, e)
				printf("port mapping: %s %s via %s\n",
				       json_string_value(json_object_get(e, "proto")),
				       json_string_value(json_object_get(e, "external")),
				       json_string_value(json_object_get(e, "method")));
			json_decref(pm);
		}
		printf("took %llu ms\n", (unsigned long long)(warp_time_ms() - t0));
	}
	warp_node_close(node);
	return (r4 || r6) ? CLI_OK : CLI_FAIL;
}
