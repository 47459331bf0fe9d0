// SPDX-License-Identifier: MIT
/*
 * Configuration: defaults, the test configuration, and a strict JSON loader.  Every error
 * names the file and the key path ($.turn[1].user) and says what was expected, so a typo is
 * found in seconds; unknown keys are errors, not silently ignored settings.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/config.h>
#include <warpgate/error.h>
#include <warpgate/log.h>

#include "core/util.h"
#include "net/endpoint.h"

static const char *const strat_names[WARP_STRAT_MAX] = {
	"direct_connect", "reverse_connect", "tcp_punch", "udp_punch", "random_probe", "turn",
};

const char *warp_strategy_name(unsigned int s)
{
	return s < WARP_STRAT_MAX ? strat_names[s] : "?";
}

int warp_strategy_parse(const char *name)
{
	for (int i = 0; i < WARP_STRAT_MAX; i++)
		if (!strcmp(name, strat_names[i]))
			return i;
	return -EINVAL;
}

void warp_conf_init(struct warp_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->log_level = -1;
	strcpy(c->tld, "p2p");
}

void warp_conf_test(struct warp_conf *c)
{
	warp_conf_init(c);
	c->flags = WARP_CONF_TEST_FLAGS;
}

struct jctx {
	const char *origin;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 3, 4))) static int fail(struct jctx *j, const char *path,
						      const char *fmt, ...)
{
	va_list ap;
	int n;

	if (j->err && j->errlen) {
		n = snprintf(j->err, j->errlen, "%s: %s: ", j->origin, path);
		if (n > 0 && (size_t)n < j->errlen) {
			va_start(ap, fmt);
			vsnprintf(j->err + n, j->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -WARP_ECONFIG;
}

static int get_str(struct jctx *j, const char *path, json_t *v, char *out, size_t len)
{
	if (!json_is_string(v))
		return fail(j, path, "expected a string");
	if (json_string_length(v) >= len)
		return fail(j, path, "string longer than %zu bytes", len - 1);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return fail(j, path, "string contains a NUL byte");
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static int get_uint(struct jctx *j, const char *path, json_t *v, uint64_t max, uint64_t *out)
{
	json_int_t i;

	if (!json_is_integer(v))
		return fail(j, path, "expected an integer 0..%llu", (unsigned long long)max);
	i = json_integer_value(v);
	if (i < 0 || (uint64_t)i > max)
		return fail(j, path, "%lld is out of range 0..%llu", (long long)i,
			    (unsigned long long)max);
	*out = (uint64_t)i;
	return 0;
}

static int get_bool(struct jctx *j, const char *path, json_t *v, bool *out)
{
	*out = false;
	if (!json_is_boolean(v))
		return fail(j, path, "expected true or false");
	*out = json_is_true(v);
	return 0;
}

static int check_ep(struct jctx *j, const char *path, const char *text, uint16_t defport)
{
	static const char hostchars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					"0123456789.-";
	struct sockaddr_storage ss;
	const char *colon = strrchr(text, ':');
	size_t hostlen = colon ? (size_t)(colon - text) : strlen(text);
	char probe[32];
	int err = warp_ep_parse(text, defport, &ss);

	if (err == 0)
		return 0;
	/* A host name (resolved at start-up): check its characters and its port. */
	if (err == -WARP_EMALFORMED && hostlen > 0 && strspn(text, hostchars) == hostlen) {
		if (!colon)
			return defport ? 0 : fail(j, path, "'%s' needs a port", text);
		snprintf(probe, sizeof(probe), "127.0.0.1%.8s", colon);
		err = warp_ep_parse(probe, 0, &ss);
		if (err == 0)
			return 0;
	}
	return fail(j, path, "'%s' is not HOST:PORT (%s)", text, warp_strerror(err));
}

/* Parses USER:PASS@HOST:PORT. */
static int parse_turn_text(struct jctx *j, const char *path, const char *text,
			   struct warp_conf_turn *t)
{
	const char *at = strrchr(text, '@'), *colon;

	memset(t, 0, sizeof(*t));
	if (!at)
		return fail(j, path, "'%s': expected USER:PASSWORD@HOST:PORT", text);
	colon = memchr(text, ':', (size_t)(at - text));
	if (!colon || colon == text)
		return fail(j, path, "'%s': expected USER:PASSWORD@HOST:PORT", text);
	if ((size_t)(colon - text) >= sizeof(t->user) || (size_t)(at - colon - 1) >= sizeof(t->password))
		return fail(j, path, "user or password too long");
	memcpy(t->user, text, (size_t)(colon - text));
	memcpy(t->password, colon + 1, (size_t)(at - colon - 1));
	if (strlen(at + 1) >= sizeof(t->server))
		return fail(j, path, "server too long");
	strcpy(t->server, at + 1);
	return check_ep(j, path, t->server, 3478);
}

static int parse_names_text(struct jctx *j, const char *path, const char *text,
			    struct warp_conf_names *n)
{
	const char *comma = strchr(text, ',');
	size_t hl = comma ? (size_t)(comma - text) : strlen(text);
	uint8_t key[33];

	memset(n, 0, sizeof(*n));
	if (hl >= sizeof(n->server))
		return fail(j, path, "server too long");
	memcpy(n->server, text, hl);
	if (comma) {
		if (warp_hex_decode(key, sizeof(key), comma + 1))
			return fail(j, path, "key must be 66 hex digits (a compressed public key)");
		strcpy(n->key_hex, comma + 1);
	}
	return check_ep(j, path, n->server, 5300);
}

enum list_kind { L_STUN, L_MQTT, L_NTP, L_IFACES };

static int add_list(struct jctx *j, const char *path, struct warp_conf *c, enum list_kind k,
		    const char *text)
{
	size_t *n;
	char(*arr)[WARP_CONF_EP_LEN] = NULL;
	uint16_t defport = 0;

	switch (k) {
	case L_STUN:
		n = &c->nstun;
		arr = c->stun;
		defport = 3478;
		break;
	case L_MQTT:
		n = &c->nmqtt;
		arr = c->mqtt;
		defport = 1883;
		break;
	case L_NTP:
		n = &c->nntp;
		arr = c->ntp;
		defport = 123;
		break;
	default:
		if (c->nifaces >= WARP_CONF_MAX_SERVERS)
			return fail(j, path, "at most %d interfaces", WARP_CONF_MAX_SERVERS);
		if (!text[0] || strlen(text) >= IF_NAMESIZE || strchr(text, '/'))
			return fail(j, path, "'%s' is not an interface name", text);
		strcpy(c->ifaces[c->nifaces++], text);
		return 0;
	}
	if (*n >= WARP_CONF_MAX_SERVERS)
		return fail(j, path, "at most %d servers", WARP_CONF_MAX_SERVERS);
	if (strlen(text) >= WARP_CONF_EP_LEN)
		return fail(j, path, "endpoint too long");
	if (check_ep(j, path, text, defport))
		return -WARP_ECONFIG;
	strcpy(arr[(*n)++], text);
	return 0;
}

int warp_conf_add(struct warp_conf *c, const char *kind, const char *text, char *err,
		  size_t errlen)
{
	struct jctx j = { "option", err, errlen };
	char path[64];

	snprintf(path, sizeof(path), "--%s", kind);
	if (!strcmp(kind, "stun"))
		return add_list(&j, path, c, L_STUN, text);
	if (!strcmp(kind, "mqtt"))
		return add_list(&j, path, c, L_MQTT, text);
	if (!strcmp(kind, "ntp"))
		return add_list(&j, path, c, L_NTP, text);
	if (!strcmp(kind, "interface"))
		return add_list(&j, path, c, L_IFACES, text);
	if (!strcmp(kind, "turn")) {
		if (c->nturn >= 4)
			return fail(&j, path, "at most 4 TURN servers");
		if (parse_turn_text(&j, path, text, &c->turn[c->nturn]))
			return -WARP_ECONFIG;
		c->nturn++;
		return 0;
	}
	if (!strcmp(kind, "nameserver")) {
		if (c->nnames >= 4)
			return fail(&j, path, "at most 4 nickname servers");
		if (parse_names_text(&j, path, text, &c->names[c->nnames]))
			return -WARP_ECONFIG;
		c->nnames++;
		return 0;
	}
	return fail(&j, path, "unknown server kind");
}

static int parse_list(struct jctx *j, const char *key, json_t *v, struct warp_conf *c,
		      enum list_kind k)
{
	char path[96];
	size_t i;
	json_t *e;

	if (json_is_string(v))
		return add_list(j, key, c, k, json_string_value(v));
	if (!json_is_array(v))
		return fail(j, key, "expected a string or an array of strings");
	json_array_foreach(v, i, e) {
		snprintf(path, sizeof(path), "%s[%zu]", key, i);
		if (!json_is_string(e))
			return fail(j, path, "expected a string");
		if (add_list(j, path, c, k, json_string_value(e)))
			return -WARP_ECONFIG;
	}
	return 0;
}

static int parse_turn(struct jctx *j, json_t *v, struct warp_conf *c)
{
	char path[96];
	size_t i;
	json_t *e;

	if (!json_is_array(v))
		return fail(j, "$.turn", "expected an array");
	json_array_foreach(v, i, e) {
		struct warp_conf_turn *t;

		snprintf(path, sizeof(path), "$.turn[%zu]", i);
		if (c->nturn >= 4)
			return fail(j, path, "at most 4 TURN servers");
		t = &c->turn[c->nturn];
		if (json_is_string(e)) {
			if (parse_turn_text(j, path, json_string_value(e), t))
				return -WARP_ECONFIG;
		} else if (json_is_object(e)) {
			const char *k;
			json_t *f;
			char fp[128];

			memset(t, 0, sizeof(*t));
			json_object_foreach(e, k, f) {
				int err = 0;

				snprintf(fp, sizeof(fp), "%s.%s", path, k);
				if (!strcmp(k, "server"))
					err = get_str(j, fp, f, t->server, sizeof(t->server)) ?:
					      check_ep(j, fp, t->server, 3478);
				else if (!strcmp(k, "user"))
					err = get_str(j, fp, f, t->user, sizeof(t->user));
				else if (!strcmp(k, "password"))
					err = get_str(j, fp, f, t->password, sizeof(t->password));
				else if (!strcmp(k, "realm"))
					err = get_str(j, fp, f, t->realm, sizeof(t->realm));
				else if (!strcmp(k, "tcp"))
					err = get_bool(j, fp, f, &t->tcp);
				else
					err = fail(j, fp, "unknown key (expected server, user, "
							  "password, realm, tcp)");
				if (err)
					return err;
			}
			if (!t->server[0])
				return fail(j, path, "missing \"server\"");
		} else {
			return fail(j, path, "expected \"USER:PASS@HOST:PORT\" or an object");
		}
		c->nturn++;
	}
	return 0;
}

static int parse_names(struct jctx *j, json_t *v, struct warp_conf *c)
{
	char path[96], fp[128];
	size_t i;
	json_t *e;

	if (json_is_string(v))
		v = json_pack("[O]", v);
	else
		json_incref(v);
	if (!json_is_array(v)) {
		json_decref(v);
		return fail(j, "$.nameservers", "expected an array");
	}
	json_array_foreach(v, i, e) {
		struct warp_conf_names *n;
		int err = 0;

		snprintf(path, sizeof(path), "$.nameservers[%zu]", i);
		if (c->nnames >= 4) {
			err = fail(j, path, "at most 4 nickname servers");
		} else if (json_is_string(e)) {
			err = parse_names_text(j, path, json_string_value(e), &c->names[c->nnames]);
		} else if (json_is_object(e)) {
			const char *k;
			json_t *f;
			uint8_t key[33];

			n = &c->names[c->nnames];
			memset(n, 0, sizeof(*n));
			json_object_foreach(e, k, f) {
				snprintf(fp, sizeof(fp), "%s.%s", path, k);
				if (!strcmp(k, "server"))
					err = get_str(j, fp, f, n->server, sizeof(n->server)) ?:
					      check_ep(j, fp, n->server, 5300);
				else if (!strcmp(k, "key"))
					err = get_str(j, fp, f, n->key_hex, sizeof(n->key_hex)) ?:
					      (warp_hex_decode(key, sizeof(key), n->key_hex)
						       ? fail(j, fp, "expected 66 hex digits")
						       : 0);
				else
					err = fail(j, fp, "unknown key (expected server, key)");
				if (err)
					break;
			}
			if (!err && !n->server[0])
				err = fail(j, path, "missing \"server\"");
		} else {
			err = fail(j, path, "expected \"HOST:PORT[,KEY]\" or an object");
		}
		if (err) {
			json_decref(v);
			return err;
		}
		c->nnames++;
	}
	json_decref(v);
	return 0;
}

static int parse_flag(struct jctx *j, const char *path, json_t *v, struct warp_conf *c,
		      unsigned int flag, bool inverted)
{
	bool b;
	int err = get_bool(j, path, v, &b);

	if (err)
		return err;
	if (b != inverted)
		c->flags |= flag;
	else
		c->flags &= ~flag;
	return 0;
}

static int parse_strategies(struct jctx *j, json_t *v, struct warp_conf *c)
{
	char path[64];
	size_t i;
	json_t *e;

	if (!json_is_array(v) || json_array_size(v) == 0)
		return fail(j, "$.strategies", "expected a non-empty array of strategy names");
	c->strategies = 0;
	json_array_foreach(v, i, e) {
		int s;

		snprintf(path, sizeof(path), "$.strategies[%zu]", i);
		if (!json_is_string(e) || (s = warp_strategy_parse(json_string_value(e))) < 0)
			return fail(j, path, "expected one of direct_connect, reverse_connect, "
					     "tcp_punch, udp_punch, random_probe, turn");
		c->strategies |= 1u << s;
	}
	return 0;
}

static int parse_root(struct jctx *j, json_t *root, struct warp_conf *c)
{
	const char *key;
	json_t *v;
	char path[96];
	uint64_t u;

	if (!json_is_object(root))
		return fail(j, "$", "expected a JSON object");
	json_object_foreach(root, key, v) {
		int err = 0;

		snprintf(path, sizeof(path), "$.%s", key);
		if (!strcmp(key, "home")) {
			err = get_str(j, path, v, c->home, sizeof(c->home));
		} else if (!strcmp(key, "name")) {
			err = get_str(j, path, v, c->name, sizeof(c->name));
		} else if (!strcmp(key, "tld")) {
			err = get_str(j, path, v, c->tld, sizeof(c->tld));
		} else if (!strcmp(key, "port")) {
			err = get_uint(j, path, v, 65535, &u);
			c->port = (uint16_t)u;
		} else if (!strcmp(key, "log_level")) {
			int lvl = json_is_string(v) ? warp_log_level_parse(json_string_value(v)) : -1;

			if (lvl < 0)
				err = fail(j, path, "expected debug, info, warn, error or none");
			c->log_level = lvl;
		} else if (!strcmp(key, "test_mode")) {
			bool b;

			err = get_bool(j, path, v, &b);
			if (b)
				c->flags |= WARP_CONF_TEST_FLAGS;
		} else if (!strcmp(key, "upnp")) {
			err = parse_flag(j, path, v, c, WARP_CONF_NO_UPNP, true);
		} else if (!strcmp(key, "bpf")) {
			err = parse_flag(j, path, v, c, WARP_CONF_NO_BPF, true);
		} else if (!strcmp(key, "ipv6")) {
			err = parse_flag(j, path, v, c, WARP_CONF_NO_IPV6, true);
		} else if (!strcmp(key, "multicast_names")) {
			err = parse_flag(j, path, v, c, WARP_CONF_NO_MCAST, true);
		} else if (!strcmp(key, "tcp")) {
			err = parse_flag(j, path, v, c, WARP_CONF_NO_TCP, true);
		} else if (!strcmp(key, "udp")) {
			err = parse_flag(j, path, v, c, WARP_CONF_NO_UDP, true);
		} else if (!strcmp(key, "interfaces")) {
			err = parse_list(j, path, v, c, L_IFACES);
		} else if (!strcmp(key, "stun")) {
			err = parse_list(j, path, v, c, L_STUN);
		} else if (!strcmp(key, "mqtt")) {
			err = parse_list(j, path, v, c, L_MQTT);
		} else if (!strcmp(key, "ntp")) {
			err = parse_list(j, path, v, c, L_NTP);
		} else if (!strcmp(key, "turn")) {
			err = parse_turn(j, v, c);
		} else if (!strcmp(key, "nameservers")) {
			err = parse_names(j, v, c);
		} else if (!strcmp(key, "strategies")) {
			err = parse_strategies(j, v, c);
		} else if (!strcmp(key, "keepalive_ms")) {
			err = get_uint(j, path, v, 3600000, &u);
			c->keepalive_ms = (uint32_t)u;
		} else if (!strcmp(key, "idle_timeout_ms")) {
			err = get_uint(j, path, v, 86400000, &u);
			c->idle_timeout_ms = (uint32_t)u;
		} else if (!strcmp(key, "connect_timeout_ms")) {
			err = get_uint(j, path, v, 600000, &u);
			c->connect_timeout_ms = (uint32_t)u;
		} else if (!strcmp(key, "workers")) {
			err = get_uint(j, path, v, 64, &u);
			c->workers = (unsigned int)u;
		} else {
			err = fail(j, path, "unknown key");
		}
		if (err)
			return err;
	}
	return 0;
}

int warp_conf_load_string(struct warp_conf *c, const char *json, const char *origin, char *err,
			  size_t errlen)
{
	struct jctx j = { origin ? origin : "config", err, errlen };
	json_error_t jerr;
	json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
	int rc;

	if (!root) {
		char where[64];

		snprintf(where, sizeof(where), "line %d column %d", jerr.line, jerr.column);
		return fail(&j, where, "%s", jerr.text);
	}
	rc = parse_root(&j, root, c);
	json_decref(root);
	return rc;
}

int warp_conf_load_file(struct warp_conf *c, const char *path, char *err, size_t errlen)
{
	char *text = NULL;
	int rc = warp_read_file(path, 1 << 20, &text, NULL);

	if (rc) {
		if (err)
			snprintf(err, errlen, "%s: %s", path, warp_strerror(rc));
		return rc;
	}
	rc = warp_conf_load_string(c, text, path, err, errlen);
	free(text);
	return rc;
}

char *warp_conf_to_json(const struct warp_conf *c)
{
	json_t *root = json_object(), *a;
	char *out;

	json_object_set_new(root, "home", json_string(c->home));
	json_object_set_new(root, "name", json_string(c->name));
	json_object_set_new(root, "port", json_integer(c->port));
	json_object_set_new(root, "test_mode", json_boolean(c->flags & WARP_CONF_TEST_MODE));
	json_object_set_new(root, "upnp", json_boolean(!(c->flags & WARP_CONF_NO_UPNP)));
	json_object_set_new(root, "bpf", json_boolean(!(c->flags & WARP_CONF_NO_BPF)));
	json_object_set_new(root, "ipv6", json_boolean(!(c->flags & WARP_CONF_NO_IPV6)));
	a = json_array();
	for (size_t i = 0; i < c->nstun; i++)
		json_array_append_new(a, json_string(c->stun[i]));
	json_object_set_new(root, "stun", a);
	a = json_array();
	for (size_t i = 0; i < c->nmqtt; i++)
		json_array_append_new(a, json_string(c->mqtt[i]));
	json_object_set_new(root, "mqtt", a);
	a = json_array();
	for (size_t i = 0; i < c->nntp; i++)
		json_array_append_new(a, json_string(c->ntp[i]));
	json_object_set_new(root, "ntp", a);
	a = json_array();
	for (size_t i = 0; i < c->nturn; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:b}", "server", c->turn[i].server,
						   "user", c->turn[i].user, "tcp", c->turn[i].tcp));
	json_object_set_new(root, "turn", a);
	a = json_array();
	for (size_t i = 0; i < c->nnames; i++)
		json_array_append_new(a, json_pack("{s:s, s:s}", "server", c->names[i].server, "key",
						   c->names[i].key_hex));
	json_object_set_new(root, "nameservers", a);
	out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return out;
}
