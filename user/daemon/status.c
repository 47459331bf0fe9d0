// SPDX-License-Identifier: MIT
/* Status document for `warpgate status` and the daemon's "status" request (see status.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/config.h>
#include <warpgate/iface.h>
#include <warpgate/identity.h>

#include "core/util.h"
#include "daemon/status.h"
#include "net/endpoint.h"
#include "node/netstate.h"

static bool iface_used(const struct warp_conf *conf, const struct warp_iface *f)
{
	if (conf->flags & WARP_CONF_TEST_MODE)
		return f->flags & IFF_LOOPBACK;
	if (!(f->flags & IFF_UP) || (f->flags & IFF_LOOPBACK))
		return false;
	if (!conf->nifaces)
		return true;
	for (size_t i = 0; i < conf->nifaces; i++)
		if (!strcmp(conf->ifaces[i], f->name))
			return true;
	return false;
}

static json_t *interfaces_json(const struct warp_conf *conf)
{
	struct warp_iface_list l;
	json_t *a = json_array();

	if (warp_iface_list_get(&l))
		return a;
	for (size_t i = 0; i < l.n; i++) {
		const struct warp_iface *f = &l.ifs[i];
		json_t *addrs = json_array();
		char buf[INET6_ADDRSTRLEN + 8], ip[INET6_ADDRSTRLEN];

		for (size_t j = 0; j < f->naddrs; j++) {
			const struct warp_ifaddr *x = &f->addrs[j];

			inet_ntop(x->family, &x->addr, ip, sizeof(ip));
			snprintf(buf, sizeof(buf), "%s/%u", ip, x->prefix_len);
			json_array_append_new(addrs, json_string(buf));
		}
		json_array_append_new(
			a, json_pack("{s:s, s:i, s:b, s:b, s:i, s:o, s:b, s:b}", "name", f->name,
				     "index", f->index, "up", (f->flags & IFF_UP) != 0, "loopback",
				     (f->flags & IFF_LOOPBACK) != 0, "mtu", (int)f->mtu,
				     "addresses", addrs, "default_route", f->has_gw4 || f->has_gw6,
				     "used", iface_used(conf, f)));
	}
	warp_iface_list_free(&l);
	return a;
}

static json_t *servers_json(const char (*list)[WARP_CONF_EP_LEN], size_t n, const char *state)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a,
				      json_pack("{s:s, s:s}", "server", list[i], "state", state));
	return a;
}

json_t *wd_pipe_json(struct warp_pipe *pipe, long long id, const char *owner)
{
	struct warp_pipe_info in;
	char hex[2 * WARP_PUBKEY_LEN + 1], l[WARP_EP_STRLEN] = "", r[WARP_EP_STRLEN] = "";

	if (warp_pipe_info(pipe, &in))
		return json_null();
	warp_hex_encode(hex, in.peer_key, WARP_PUBKEY_LEN);
	if (in.local.ss_family)
		warp_ep_str((struct sockaddr *)&in.local, l, sizeof(l));
	if (in.remote.ss_family)
		warp_ep_str((struct sockaddr *)&in.remote, r, sizeof(r));
	return json_pack("{s:o, s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f, "
			 "s:f, s:I, s:I, s:I}",
			 "id", id >= 0 ? json_integer(id) : json_null(), "owner", owner, "peer",
			 hex, "open", in.open, "strategy", in.strategy, "path",
			 warp_path_class_name(in.path), "transport", in.transport, "local", l,
			 "remote", r, "bytes_sent", (json_int_t)in.bytes_sent, "bytes_received",
			 (json_int_t)in.bytes_received, "msgs_sent", (json_int_t)in.msgs_sent,
			 "msgs_received", (json_int_t)in.msgs_received, "srtt_ms",
			 (double)in.srtt_us / 1000.0, "min_rtt_ms", (double)in.min_rtt_us / 1000.0,
			 "retransmits", (json_int_t)in.retransmits, "age_ms", (json_int_t)in.age_ms,
			 "idle_ms", (json_int_t)in.idle_ms);
}

json_t *wd_status_json(struct warp_node *node, const char *name, const struct wd_daemon_info *d,
		       json_t *pipes, json_t *forwards, json_t *exposes)
{
	const struct warp_conf *conf = warp_node_conf(node);
	bool test = conf->flags & WARP_CONF_TEST_MODE;
	char hex[2 * WARP_PUBKEY_LEN + 1], addr[2048] = "";
	json_t *root = json_object(), *names, *nodejs = NULL, *netjs, *v;
	const char *k, *bpf;
	size_t ready;
	char *ns;

	warp_hex_encode(hex, warp_identity_pubkey(warp_node_identity(node)), WARP_PUBKEY_LEN);
	warp_node_address_text(node, addr, sizeof(addr));
	json_object_set_new(root, "schema", json_integer(WD_STATUS_SCHEMA));
	json_object_set_new(root, "version", json_string(WARP_VERSION));
	if (d)
		json_object_set_new(root, "daemon",
				    json_pack("{s:b, s:i, s:s, s:I, s:I, s:i, s:i, s:s}", "running",
					      1, "pid", (int)d->pid, "socket", d->socket,
					      "uptime_s", (json_int_t)(d->uptime_ms / 1000),
					      "clients", (json_int_t)d->clients, "reloads",
					      (int)d->reloads, "node_restarts", (int)d->restarts,
					      "config", d->config ? d->config : ""));
	else
		json_object_set_new(root, "daemon", json_pack("{s:b}", "running", 0));
	json_object_set_new(root, "identity",
			    json_pack("{s:o, s:s, s:b}", "name",
				      name ? json_string(name) : json_null(), "public_key", hex,
				      "ephemeral", name == NULL));
	json_object_set_new(root, "node",
			    json_pack("{s:i, s:b, s:s}", "port", warp_node_port(node), "test_mode",
				      test, "address", addr));
	json_object_set_new(root, "interfaces", interfaces_json(conf));
	/* What the node measured (NAT per family, clock, brokers); parts it does not do yet
	 * say so rather than guess. */
	ns = netstate_json(node, false);
	netjs = ns ? json_loads(ns, 0, NULL) : NULL;
	free(ns);
	v = json_object_get(netjs, "nat");
	if (json_is_array(v) && json_array_size(v))
		json_object_set(root, "nat", v);
	else
		json_object_set_new(root, "nat",
				    json_string(test ? "off (test mode)"
						: conf->flags & WARP_CONF_NO_STUN
							? "off (disabled by configuration)"
						: !conf->nstun
							? "unknown (no STUN server configured)"
							: "not measured yet"));
	v = json_object_get(netjs, "clock");
	json_object_set(root, "clock",
			v ? v : json_pack("{s:b, s:s}", "synced", 0, "source", "system"));
	json_object_set_new(
		root, "port_mappings",
		json_string(test ? "off (test mode)"
			    : conf->flags & WARP_CONF_NO_UPNP
				    ? "off (disabled by configuration)"
				    : "none (UPnP/NAT-PMP not integrated into the node)"));
	v = json_object_get(netjs, "brokers_ready");
	ready = json_is_integer(v) ? (size_t)json_integer_value(v) : 0;
	json_object_set_new(root, "brokers",
			    servers_json(conf->mqtt, conf->nmqtt,
					 conf->flags & WARP_CONF_NO_MQTT
						 ? "off (disabled by configuration)"
					 : !v			? "not connected"
					 : ready >= conf->nmqtt ? "connected"
					 : ready		? "some of the brokers connected"
								: "not connected"));
	json_object_set_new(root, "stun",
			    servers_json(conf->stun, conf->nstun,
					 conf->flags & WARP_CONF_NO_STUN
						 ? "off (disabled by configuration)"
						 : "configured"));
	json_decref(netjs);
	names = json_array();
	if (name) {
		char state[160];
		bool mcast = !(conf->flags & (WARP_CONF_NO_MCAST | WARP_CONF_TEST_MODE));

		if (conf->flags & WARP_CONF_NO_NAMES)
			snprintf(state, sizeof(state), "off (disabled by configuration)");
		else if (test)
			snprintf(state, sizeof(state), "off (test mode)");
		else if (!d)
			snprintf(state, sizeof(state),
				 "not published (only a daemon or 'warpgate listen NAME' registers "
				 "names)");
		else if (conf->nnames)
			snprintf(state, sizeof(state),
				 "published to %zu nickname server(s)%s, kept fresh (their answers "
				 "are in the daemon's log)",
				 conf->nnames, mcast ? " and the local link" : "");
		else if (mcast)
			snprintf(state, sizeof(state),
				 "answered on the local link (no nickname server configured)");
		else
			snprintf(state, sizeof(state),
				 "not published (no nickname server configured, multicast off)");
		json_array_append_new(names, json_pack("{s:s, s:s, s:s}", "name", name, "tld",
						       conf->tld, "state", state));
	}
	json_object_set_new(root, "names", names);
	/* "bpf: active (xdp: eth0)" -> "active (xdp: eth0)" */
	bpf = warp_node_bpf_status(node);
	if (!strncmp(bpf, "bpf: ", 5))
		bpf += 5;
	json_object_set_new(root, "bpf", json_string(bpf));
	json_object_set_new(root, "pipes", pipes ? pipes : json_array());
	json_object_set_new(root, "forwards", forwards ? forwards : json_array());
	json_object_set_new(root, "exposes", exposes ? exposes : json_array());
	/* Whatever the node reports itself wins over the placeholders above. */
	ns = warp_node_status_json(node);
	if (ns)
		nodejs = json_loads(ns, 0, NULL);
	free(ns);
	json_object_foreach(nodejs, k, v) {
		if (!strcmp(k, "public_key") || !strcmp(k, "port") || !strcmp(k, "test_mode") ||
		    !strcmp(k, "bpf"))
			continue;
		json_object_set(root, k, v);
	}
	json_decref(nodejs);
	return root;
}

static const char *str(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_string(v) ? json_string_value(v) : "";
}

/* A field that may be a placeholder string or the node's own object. */
static void print_field(FILE *out, const char *label, json_t *v)
{
	char *s;

	if (json_is_string(v)) {
		fprintf(out, "%-12s %s\n", label, json_string_value(v));
		return;
	}
	s = json_dumps(v, JSON_COMPACT);
	fprintf(out, "%-12s %s\n", label, s ? s : "?");
	free(s);
}

static void print_servers(FILE *out, const char *label, json_t *a)
{
	size_t i;
	json_t *e;

	if (!json_is_array(a)) {
		print_field(out, label, a);
		return;
	}
	if (!json_array_size(a))
		fprintf(out, "%-12s none configured\n", label);
	json_array_foreach(a, i, e) {
		fprintf(out, "%-12s %s: %s\n", i ? "" : label, str(e, "server"), str(e, "state"));
	}
}

void wd_status_print(FILE *out, json_t *st, bool verbose)
{
	json_t *id = json_object_get(st, "identity"), *node = json_object_get(st, "node");
	json_t *d = json_object_get(st, "daemon"), *a, *e;
	size_t i;

	fprintf(out, "%-12s %s %s\n", "identity",
		json_is_string(json_object_get(id, "name")) ? str(id, "name") : "(ephemeral)",
		str(id, "public_key"));
	if (json_is_true(json_object_get(d, "running")))
		fprintf(out, "%-12s running, pid %lld, socket %s, up %lld s, %lld clients\n",
			"daemon", json_integer_value(json_object_get(d, "pid")), str(d, "socket"),
			json_integer_value(json_object_get(d, "uptime_s")),
			json_integer_value(json_object_get(d, "clients")));
	else
		fprintf(out, "%-12s not running (this status comes from a short-lived node)\n",
			"daemon");
	fprintf(out, "%-12s port %lld%s\n", "node",
		json_integer_value(json_object_get(node, "port")),
		json_is_true(json_object_get(node, "test_mode")) ? ", test mode (loopback only)"
								 : "");
	fprintf(out, "%-12s %s\n", "address", str(node, "address"));
	a = json_object_get(st, "interfaces");
	json_array_foreach(a, i, e) {
		json_t *addrs = json_object_get(e, "addresses"), *x;
		size_t j;

		if (!verbose && !json_is_true(json_object_get(e, "used")))
			continue;
		fprintf(out, "%-12s %s%s%s", "interface", str(e, "name"),
			json_is_true(json_object_get(e, "default_route")) ? " (default route)" : "",
			json_is_true(json_object_get(e, "used")) ? "" : " (unused)");
		json_array_foreach(addrs, j, x) {
			fprintf(out, " %s", json_string_value(x));
		}
		fputc('\n', out);
	}
	a = json_object_get(st, "nat");
	if (json_is_array(a))
		json_array_foreach(a, i, e) {
			fprintf(out, "%-12s IPv%lld %s (mapping %s, filtering %s), reflexive %s\n",
				i ? "" : "nat", json_integer_value(json_object_get(e, "family")),
				str(e, "type")[0] ? str(e, "type") : "not classified",
				str(e, "mapping")[0] ? str(e, "mapping") : "?",
				str(e, "filtering")[0] ? str(e, "filtering") : "?",
				str(e, "reflexive")[0] ? str(e, "reflexive") : "unknown");
		}
	else
		print_field(out, "nat", a);
	e = json_object_get(st, "clock");
	if (json_is_true(json_object_get(e, "synced")))
		fprintf(out, "%-12s synced, offset %+.1f ms (uncertainty %.1f ms)\n", "clock",
			json_number_value(json_object_get(e, "offset_ms")),
			json_number_value(json_object_get(e, "uncertainty_ms")));
	else if (json_is_object(e))
		fprintf(out, "%-12s not synced: %s\n", "clock", str(e, "source"));
	else
		print_field(out, "clock", e);
	print_field(out, "port maps", json_object_get(st, "port_mappings"));
	print_servers(out, "brokers", json_object_get(st, "brokers"));
	print_servers(out, "stun", json_object_get(st, "stun"));
	a = json_object_get(st, "names");
	if (json_is_array(a) && !json_array_size(a))
		fprintf(out, "%-12s none (ephemeral identity)\n", "names");
	else if (json_is_array(a))
		json_array_foreach(a, i, e) {
			fprintf(out, "%-12s %s.%s: %s\n", i ? "" : "names", str(e, "name"),
				str(e, "tld"), str(e, "state"));
		}
	else
		print_field(out, "names", a);
	print_field(out, "bpf", json_object_get(st, "bpf"));
	a = json_object_get(st, "pipes");
	fprintf(out, "%-12s %zu\n", "pipes", json_array_size(a));
	json_array_foreach(a, i, e) {
		json_t *pid = json_object_get(e, "id");
		char ids[24] = "-";

		if (json_is_integer(pid))
			snprintf(ids, sizeof(ids), "#%lld", json_integer_value(pid));
		fprintf(out,
			"  %-5s %.16s.. %-7s %-6s %-3s %s rtt %.2f ms, %lld B out, %lld B in%s\n",
			ids, str(e, "peer"), str(e, "owner"), str(e, "path"), str(e, "transport"),
			str(e, "remote"), json_real_value(json_object_get(e, "srtt_ms")),
			json_integer_value(json_object_get(e, "bytes_sent")),
			json_integer_value(json_object_get(e, "bytes_received")),
			json_is_true(json_object_get(e, "open")) ? "" : " (closed)");
	}
	a = json_object_get(st, "forwards");
	json_array_foreach(a, i, e) {
		fprintf(out, "%-12s %s -> %s at %.24s.. (%lld connections)\n", i ? "" : "forwards",
			str(e, "listen"), str(e, "to"), str(e, "target"),
			json_integer_value(json_object_get(e, "connections")));
	}
	a = json_object_get(st, "exposes");
	json_array_foreach(a, i, e) {
		fprintf(out, "%-12s %s:%lld to %s\n", i ? "" : "exposes", str(e, "host"),
			json_integer_value(json_object_get(e, "port")),
			json_is_array(json_object_get(e, "allow")) ? "the allowed keys"
								   : "any peer");
	}
}
