// SPDX-License-Identifier: MIT
/* NAT report names and JSON rendering. */
#include <errno.h>
#include <string.h>

#include <warpgate/error.h>
#include <warpgate/nat.h>

#include "core/bytes.h"
#include "nat/natreport.h"
#include "nat/sockaddr.h"

static const char *const behavior_names[] = {
	"unknown",
	"endpoint-independent",
	"address-dependent",
	"address-and-port-dependent",
};

static const char *const type_names[] = {
	"unknown",	   "open",	"udp-firewall", "full-cone", "restricted",
	"port-restricted", "symmetric", "blocked",
};

static const char *const delta_names[] = {
	"none", "equal", "preserving", "independent", "dependent", "random",
};

static const char *const probe_names[] = {
	"binding",     "alt-ip",  "alt-ip-port", "filter-base", "change-ip-port",
	"change-port", "hairpin", "delta",	 "tcp",
};

const char *warp_nat_behavior_name(enum warp_nat_behavior b)
{
	return (unsigned int)b < WARP_ARRAY_SIZE(behavior_names) ? behavior_names[b] : "unknown";
}

const char *warp_nat_type_name(enum warp_nat_type t)
{
	return (unsigned int)t < WARP_ARRAY_SIZE(type_names) ? type_names[t] : "unknown";
}

const char *warp_nat_delta_name(enum warp_nat_delta d)
{
	return (unsigned int)d < WARP_ARRAY_SIZE(delta_names) ? delta_names[d] : "none";
}

const char *warp_nat_probe_kind_name(enum warp_nat_probe_kind k)
{
	return (unsigned int)k < WARP_ARRAY_SIZE(probe_names) ? probe_names[k] : "?";
}

static int lookup(const char *const *names, size_t n, const char *s)
{
	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(names[i], s))
			return (int)i;
	return -EINVAL;
}

int warp_nat_behavior_parse(const char *s)
{
	return lookup(behavior_names, WARP_ARRAY_SIZE(behavior_names), s);
}

int warp_nat_type_parse(const char *s)
{
	return lookup(type_names, WARP_ARRAY_SIZE(type_names), s);
}

int warp_nat_delta_parse(const char *s)
{
	return lookup(delta_names, WARP_ARRAY_SIZE(delta_names), s);
}

enum warp_nat_type warp_nat_type_from_behavior(bool nat, enum warp_nat_behavior mapping,
					       enum warp_nat_behavior filtering)
{
	if (!nat)
		return filtering == WARP_NAT_BEH_ENDPOINT_INDEPENDENT ? WARP_NAT_OPEN
								      : WARP_NAT_UDP_FIREWALL;
	switch (mapping) {
	case WARP_NAT_BEH_ENDPOINT_INDEPENDENT:
		if (filtering == WARP_NAT_BEH_ENDPOINT_INDEPENDENT)
			return WARP_NAT_FULL_CONE;
		if (filtering == WARP_NAT_BEH_ADDRESS_DEPENDENT)
			return WARP_NAT_RESTRICTED;
		/* unknown filtering: assume the most restrictive cone */
		return WARP_NAT_PORT_RESTRICTED;
	case WARP_NAT_BEH_ADDRESS_DEPENDENT:
	case WARP_NAT_BEH_ADDRESS_PORT_DEPENDENT:
		return WARP_NAT_SYMMETRIC;
	default:
		return WARP_NAT_TYPE_UNKNOWN;
	}
}

static json_t *addr_json(const struct sockaddr_storage *ss)
{
	char buf[NAT_SA_STRLEN];

	if (ss->ss_family != AF_INET && ss->ss_family != AF_INET6)
		return json_null();
	return json_string(nat_sa_str((const struct sockaddr *)ss, buf, sizeof(buf)));
}

static int set(json_t *o, const char *key, json_t *v)
{
	return v && json_object_set_new(o, key, v) == 0 ? 0 : -ENOMEM;
}

json_t *warp_nat_report_to_json(const struct warp_nat_report *r, unsigned int flags)
{
	json_t *o = json_object(), *delta = json_object(), *ext = json_array();
	int err = 0;

	if (!o || !delta || !ext) {
		err = -ENOMEM;
		goto out;
	}
	err |= set(o, "mapping", json_string(warp_nat_behavior_name(r->mapping)));
	err |= set(o, "filtering", json_string(warp_nat_behavior_name(r->filtering)));
	err |= set(o, "type", json_string(warp_nat_type_name(r->type)));
	err |= set(delta, "type", json_string(warp_nat_delta_name(r->delta)));
	err |= set(delta, "value", json_integer(r->delta_value));
	err |= set(o, "delta", delta);
	delta = NULL;
	err |= set(o, "hairpin", json_boolean(r->hairpin));
	for (unsigned int i = 0; i < r->n_external && i < WARP_NAT_MAX_EXTERNAL; i++)
		err |= json_array_append_new(ext, addr_json(&r->external[i])) ? -ENOMEM : 0;
	err |= set(o, "external", ext);
	ext = NULL;
	if (!(flags & WARP_NAT_JSON_NO_PROBES)) {
		json_t *probes = json_array();

		for (unsigned int i = 0; probes && i < r->n_probes && i < WARP_NAT_MAX_PROBES;
		     i++) {
			const struct warp_nat_probe *p = &r->probes[i];
			json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:o, s:o, s:b, s:i, s:i, s:f}",
					      "kind", warp_nat_probe_kind_name(p->kind), "server",
					      (int)p->server, "socket", (int)p->socket,
					      "local_port", (int)p->local_port, "dest",
					      addr_json(&p->dest), "mapped", addr_json(&p->mapped),
					      "ok", (int)p->ok, "tries", (int)p->tries, "sent_ms",
					      (int)p->sent_ms, "rtt_ms", p->rtt_us / 1000.0);

			err |= json_array_append_new(probes, j) ? -ENOMEM : 0;
		}
		err |= set(o, "probes", probes);
	}
	if (flags & WARP_NAT_JSON_DETAILS) {
		err |= set(o, "nat", json_boolean(r->nat));
		err |= set(o, "udp", json_boolean(r->udp));
		err |= set(o, "tcp", json_boolean(r->tcp));
		err |= set(o, "rfc5780", json_boolean(r->rfc5780));
		err |= set(o, "family", json_string(r->family == AF_INET6 ? "ipv6" : "ipv4"));
		err |= set(o, "local", addr_json(&r->local));
		err |= set(o, "tcp_external", addr_json(&r->tcp_external));
		err |= set(o, "servers_answered", json_integer(r->servers_answered));
		err |= set(o, "delta_samples", json_integer(r->delta_samples));
		err |= set(o, "duration_ms", json_integer(r->duration_ms));
		err |= set(o, "measured_at_ms", json_integer((json_int_t)r->measured_at_ms));
	}
out:
	json_decref(delta);
	json_decref(ext);
	if (err) {
		json_decref(o);
		errno = ENOMEM;
		return NULL;
	}
	return o;
}

static int get_addr(const json_t *j, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (!j || json_is_null(j))
		return 0;
	if (!json_is_string(j) || nat_sa_parse(json_string_value(j), 0, out))
		return -WARP_EMALFORMED;
	return 0;
}

static int get_enum(const json_t *o, const char *key, int (*parse)(const char *), int *out)
{
	const json_t *v = json_object_get(o, key);
	int x;

	if (!json_is_string(v))
		return -WARP_EMALFORMED;
	x = parse(json_string_value(v));
	if (x < 0)
		return -WARP_EMALFORMED;
	*out = x;
	return 0;
}

static int probe_kind_parse(const char *s)
{
	return lookup(probe_names, WARP_ARRAY_SIZE(probe_names), s);
}

int warp_nat_report_from_json(const json_t *j, struct warp_nat_report *r)
{
	const json_t *delta, *ext, *probes, *v;
	int x, err;
	size_t i;

	if (!json_is_object(j))
		return -WARP_EMALFORMED;
	memset(r, 0, sizeof(*r));
	if ((err = get_enum(j, "mapping", warp_nat_behavior_parse, &x)))
		return err;
	r->mapping = (enum warp_nat_behavior)x;
	if ((err = get_enum(j, "filtering", warp_nat_behavior_parse, &x)))
		return err;
	r->filtering = (enum warp_nat_behavior)x;
	if ((err = get_enum(j, "type", warp_nat_type_parse, &x)))
		return err;
	r->type = (enum warp_nat_type)x;
	delta = json_object_get(j, "delta");
	if (!json_is_object(delta) || get_enum(delta, "type", warp_nat_delta_parse, &x) ||
	    !json_is_integer(json_object_get(delta, "value")))
		return -WARP_EMALFORMED;
	r->delta = (enum warp_nat_delta)x;
	r->delta_value = (int32_t)json_integer_value(json_object_get(delta, "value"));
	v = json_object_get(j, "hairpin");
	if (!json_is_boolean(v))
		return -WARP_EMALFORMED;
	r->hairpin = json_is_true(v);
	ext = json_object_get(j, "external");
	if (!json_is_array(ext) || json_array_size(ext) > WARP_NAT_MAX_EXTERNAL)
		return -WARP_EMALFORMED;
	json_array_foreach(ext, i, v)
	{
		if (get_addr(v, &r->external[r->n_external]) || json_is_null(v))
			return -WARP_EMALFORMED;
		r->n_external++;
	}
	probes = json_object_get(j, "probes");
	if (json_is_array(probes)) {
		json_array_foreach(probes, i, v)
		{
			struct warp_nat_probe *p;
			const char *kind = NULL;
			json_t *dest = NULL, *mapped = NULL;
			int server = 0, sock = 0, lport = 0, ok = 0, tries = 0, sent = 0;
			double rtt = 0;

			if (r->n_probes == WARP_NAT_MAX_PROBES)
				break;
			if (json_unpack((json_t *)v,
					"{s:s, s:i, s:i, s:i, s:o, s:o, s:b, s:i, s:i, s:F}",
					"kind", &kind, "server", &server, "socket", &sock,
					"local_port", &lport, "dest", &dest, "mapped", &mapped,
					"ok", &ok, "tries", &tries, "sent_ms", &sent, "rtt_ms",
					&rtt))
				return -WARP_EMALFORMED;
			x = probe_kind_parse(kind);
			if (x < 0 || server < 0 || server > 255 || sock < 0 || sock > 255 ||
			    lport < 0 || lport > 65535 || tries < 0 || sent < 0 || rtt < 0)
				return -WARP_EMALFORMED;
			p = &r->probes[r->n_probes++];
			p->kind = (uint8_t)x;
			p->server = (uint8_t)server;
			p->socket = (uint8_t)sock;
			p->local_port = (uint16_t)lport;
			p->ok = ok;
			p->tries = (uint8_t)(tries > 255 ? 255 : tries);
			p->sent_ms = (uint32_t)sent;
			p->rtt_us = (uint32_t)(rtt * 1000.0);
			if (get_addr(dest, &p->dest) || get_addr(mapped, &p->mapped))
				return -WARP_EMALFORMED;
		}
	}
	/* details, when present */
	if ((v = json_object_get(j, "nat")))
		r->nat = json_is_true(v);
	else
		r->nat = r->type != WARP_NAT_OPEN && r->type != WARP_NAT_UDP_FIREWALL;
	if ((v = json_object_get(j, "udp")))
		r->udp = json_is_true(v);
	else
		r->udp = r->type != WARP_NAT_BLOCKED;
	r->tcp = json_is_true(json_object_get(j, "tcp"));
	r->rfc5780 = json_is_true(json_object_get(j, "rfc5780"));
	v = json_object_get(j, "family");
	r->family = json_is_string(v) && !strcmp(json_string_value(v), "ipv6") ? AF_INET6 : AF_INET;
	if (get_addr(json_object_get(j, "local"), &r->local) ||
	    get_addr(json_object_get(j, "tcp_external"), &r->tcp_external))
		return -WARP_EMALFORMED;
	if (json_is_integer(v = json_object_get(j, "servers_answered")))
		r->servers_answered = (uint8_t)json_integer_value(v);
	if (json_is_integer(v = json_object_get(j, "delta_samples")))
		r->delta_samples = (uint8_t)json_integer_value(v);
	if (json_is_integer(v = json_object_get(j, "duration_ms")))
		r->duration_ms = (uint32_t)json_integer_value(v);
	if (json_is_integer(v = json_object_get(j, "measured_at_ms")))
		r->measured_at_ms = (uint64_t)json_integer_value(v);
	return 0;
}
