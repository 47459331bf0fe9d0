// SPDX-License-Identifier: MIT
/*
 * Node address codec.  Layout (all integers big-endian):
 *
 *   'W' version(1) TLV*          TLV = type(1) length(2) value
 *
 * Top-level types: 1 pubkey(33) 2 machine hash(16) 3 created ms(8) 4 route(nested TLVs)
 * 5 hint(kind(1) text).  Route types: 1 family(1) 2 nic addr(4|16) 3 prefix(1) 4 ext addr
 * 5 ports(tcp 2, udp 2) 6 ext ports 7 nat(type, mapping, filtering) 8 delta(type 1, value 4)
 * 9 flags(1) 10 interface id(1).  Unknown types are skipped at both levels; known ones are
 * checked strictly.  The encoder writes a canonical order.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <warpgate/address.h>
#include <warpgate/error.h>

#include "core/bytes.h"
#include "core/util.h"

#define ADDR_MAGIC   0x57
#define ADDR_VERSION 1

enum { T_PUBKEY = 1, T_MACHINE, T_CREATED, T_ROUTE, T_HINT };
enum { R_FAMILY = 1, R_NIC, R_PREFIX, R_EXT, R_PORTS, R_EXT_PORTS, R_NAT, R_DELTA, R_FLAGS, R_IFID };

static size_t fam_len(uint8_t family)
{
	return family == 4 ? 4 : 16;
}

static void put_tlv_hdr(struct warp_wr *w, uint8_t type, size_t len)
{
	warp_wr_u8(w, type);
	warp_wr_u16(w, (uint16_t)len);
}

static void put_tlv(struct warp_wr *w, uint8_t type, const void *v, size_t len)
{
	put_tlv_hdr(w, type, len);
	warp_wr_bytes(w, v, len);
}

static int route_encode(struct warp_wr *w, const struct warp_addr_route *r)
{
	uint8_t tmp[8];
	size_t start, alen;
	uint8_t *lenp;

	if ((r->family != 4 && r->family != 6) || (!r->tcp_port && !r->udp_port) ||
	    r->nat > WARP_ADDR_NAT_MAX || r->mapping > WARP_ADDR_BEH_MAX ||
	    r->filtering > WARP_ADDR_BEH_MAX || r->delta_type > WARP_ADDR_DELTA_MAX ||
	    r->delta_value > 65535 || r->delta_value < -65535 ||
	    r->prefix_len > (r->family == 4 ? 32 : 128))
		return -WARP_ERANGE;
	alen = fam_len(r->family);
	warp_wr_u8(w, T_ROUTE);
	lenp = warp_wr_reserve(w, 2);
	start = w->off;
	put_tlv(w, R_FAMILY, &r->family, 1);
	put_tlv(w, R_IFID, &r->if_id, 1);
	put_tlv(w, R_NIC, r->nic_addr, alen);
	put_tlv(w, R_PREFIX, &r->prefix_len, 1);
	if (r->has_ext)
		put_tlv(w, R_EXT, r->ext_addr, alen);
	warp_put_u16(tmp, r->tcp_port);
	warp_put_u16(tmp + 2, r->udp_port);
	put_tlv(w, R_PORTS, tmp, 4);
	if (r->ext_tcp_port || r->ext_udp_port) {
		warp_put_u16(tmp, r->ext_tcp_port);
		warp_put_u16(tmp + 2, r->ext_udp_port);
		put_tlv(w, R_EXT_PORTS, tmp, 4);
	}
	tmp[0] = r->nat;
	tmp[1] = r->mapping;
	tmp[2] = r->filtering;
	put_tlv(w, R_NAT, tmp, 3);
	tmp[0] = r->delta_type;
	warp_put_u32(tmp + 1, (uint32_t)r->delta_value);
	put_tlv(w, R_DELTA, tmp, 5);
	if (r->flags)
		put_tlv(w, R_FLAGS, &r->flags, 1);
	if (lenp && !w->err)
		warp_put_u16(lenp, (uint16_t)(w->off - start));
	return w->err;
}

int warp_addr_encode(const struct warp_node_addr *a, uint8_t *buf, size_t cap)
{
	struct warp_wr w = warp_wr_init(buf, cap);
	uint8_t tmp[8];
	int err;

	if (a->nroutes > WARP_ADDR_MAX_ROUTES || a->nhints > WARP_ADDR_MAX_HINTS)
		return -WARP_ERANGE;
	warp_wr_u8(&w, ADDR_MAGIC);
	warp_wr_u8(&w, ADDR_VERSION);
	put_tlv(&w, T_PUBKEY, a->pubkey, WARP_PUBKEY_LEN);
	if (a->has_machine)
		put_tlv(&w, T_MACHINE, a->machine, WARP_MACHINE_HASH_LEN);
	if (a->created_ms) {
		warp_put_u64(tmp, a->created_ms);
		put_tlv(&w, T_CREATED, tmp, 8);
	}
	for (size_t i = 0; i < a->nroutes; i++) {
		err = route_encode(&w, &a->routes[i]);
		if (err)
			return err;
	}
	for (size_t i = 0; i < a->nhints; i++) {
		const struct warp_addr_hint *h = &a->hints[i];
		size_t n = strnlen(h->text, sizeof(h->text));

		if (!h->kind || h->kind > WARP_HINT_MAX || n == 0 || n > WARP_ADDR_HINT_MAX)
			return -WARP_ERANGE;
		put_tlv_hdr(&w, T_HINT, n + 1);
		warp_wr_u8(&w, h->kind);
		warp_wr_bytes(&w, h->text, n);
	}
	return w.err ? w.err : (int)w.off;
}

/* Fixed-size value check shared by both levels. */
static int want_len(size_t got, size_t want)
{
	return got == want ? 0 : -WARP_EMALFORMED;
}

static int route_decode(struct warp_rd *r, struct warp_addr_route *out)
{
	const uint8_t *nic = NULL, *ext = NULL;
	size_t nic_len = 0, ext_len = 0;
	uint32_t seen = 0;
	int err;

	memset(out, 0, sizeof(*out));
	while (warp_rd_left(r)) {
		uint8_t type = warp_rd_u8(r);
		uint16_t len = warp_rd_u16(r);
		const uint8_t *v = warp_rd_bytes(r, len);

		if (r->err)
			return r->err;
		if (type < 32 && (seen & (1u << type)))
			return -WARP_EDUPLICATE;
		if (type < 32)
			seen |= 1u << type;
		err = 0;
		switch (type) {
		case R_FAMILY:
			err = want_len(len, 1);
			out->family = v[0];
			if (!err && out->family != 4 && out->family != 6)
				err = -WARP_ERANGE;
			break;
		case R_IFID:
			err = want_len(len, 1);
			out->if_id = v[0];
			break;
		case R_NIC:
			nic = v;
			nic_len = len;
			break;
		case R_EXT:
			ext = v;
			ext_len = len;
			break;
		case R_PREFIX:
			err = want_len(len, 1);
			out->prefix_len = v[0];
			break;
		case R_PORTS:
			err = want_len(len, 4);
			if (!err) {
				out->tcp_port = warp_get_u16(v);
				out->udp_port = warp_get_u16(v + 2);
			}
			break;
		case R_EXT_PORTS:
			err = want_len(len, 4);
			if (!err) {
				out->ext_tcp_port = warp_get_u16(v);
				out->ext_udp_port = warp_get_u16(v + 2);
			}
			break;
		case R_NAT:
			err = want_len(len, 3);
			if (!err) {
				out->nat = v[0];
				out->mapping = v[1];
				out->filtering = v[2];
				if (v[0] > WARP_ADDR_NAT_MAX || v[1] > WARP_ADDR_BEH_MAX ||
				    v[2] > WARP_ADDR_BEH_MAX)
					err = -WARP_ERANGE;
			}
			break;
		case R_DELTA:
			err = want_len(len, 5);
			if (!err) {
				out->delta_type = v[0];
				out->delta_value = (int32_t)warp_get_u32(v + 1);
				if (v[0] > WARP_ADDR_DELTA_MAX || out->delta_value > 65535 ||
				    out->delta_value < -65535)
					err = -WARP_ERANGE;
			}
			break;
		case R_FLAGS:
			err = want_len(len, 1);
			out->flags = v[0];
			break;
		default:
			break; /* unknown: skipped */
		}
		if (err)
			return err;
	}
	if (!(seen & (1u << R_FAMILY)) || !nic || !(seen & (1u << R_PORTS)))
		return -WARP_EMISSING;
	if (nic_len != fam_len(out->family) || (ext && ext_len != fam_len(out->family)))
		return -WARP_EMALFORMED;
	if (out->prefix_len > (out->family == 4 ? 32 : 128) || (!out->tcp_port && !out->udp_port))
		return -WARP_ERANGE;
	memcpy(out->nic_addr, nic, nic_len);
	if (ext) {
		out->has_ext = true;
		memcpy(out->ext_addr, ext, ext_len);
	}
	return 0;
}

int warp_addr_decode(const uint8_t *buf, size_t len, struct warp_node_addr *a)
{
	struct warp_rd r = warp_rd_init(buf, len);
	bool have_pub = false;
	uint8_t magic, version;
	int err;

	memset(a, 0, sizeof(*a));
	if (len > WARP_ADDR_MAX_BIN)
		return -EMSGSIZE;
	magic = warp_rd_u8(&r);
	version = warp_rd_u8(&r);
	if (r.err)
		return r.err;
	if (magic != ADDR_MAGIC)
		return -WARP_EMALFORMED;
	if (version != ADDR_VERSION)
		return -WARP_EVERSION;
	while (warp_rd_left(&r)) {
		uint8_t type = warp_rd_u8(&r);
		uint16_t tlen = warp_rd_u16(&r);
		struct warp_rd v = warp_rd_sub(&r, tlen);

		if (r.err)
			return r.err;
		switch (type) {
		case T_PUBKEY:
			if (have_pub)
				return -WARP_EDUPLICATE;
			if (tlen != WARP_PUBKEY_LEN)
				return -WARP_EMALFORMED;
			memcpy(a->pubkey, v.p, WARP_PUBKEY_LEN);
			if (warp_pubkey_check(a->pubkey))
				return -WARP_EMALFORMED;
			have_pub = true;
			break;
		case T_MACHINE:
			if (a->has_machine)
				return -WARP_EDUPLICATE;
			if (tlen != WARP_MACHINE_HASH_LEN)
				return -WARP_EMALFORMED;
			memcpy(a->machine, v.p, WARP_MACHINE_HASH_LEN);
			a->has_machine = true;
			break;
		case T_CREATED:
			if (a->created_ms)
				return -WARP_EDUPLICATE;
			if (tlen != 8)
				return -WARP_EMALFORMED;
			a->created_ms = warp_get_u64(v.p);
			if (!a->created_ms)
				return -WARP_ERANGE;
			break;
		case T_ROUTE:
			if (a->nroutes >= WARP_ADDR_MAX_ROUTES)
				return -WARP_ERANGE;
			err = route_decode(&v, &a->routes[a->nroutes]);
			if (err)
				return err;
			a->nroutes++;
			break;
		case T_HINT: {
			struct warp_addr_hint *h;

			if (a->nhints >= WARP_ADDR_MAX_HINTS)
				return -WARP_ERANGE;
			if (tlen < 2 || tlen > WARP_ADDR_HINT_MAX + 1)
				return -WARP_EMALFORMED;
			h = &a->hints[a->nhints];
			h->kind = v.p[0];
			if (!h->kind || h->kind > WARP_HINT_MAX)
				return -WARP_ERANGE;
			for (size_t i = 1; i < tlen; i++)
				if (v.p[i] <= 0x20 || v.p[i] >= 0x7f) /* printable, no spaces */
					return -WARP_EMALFORMED;
			memcpy(h->text, v.p + 1, tlen - 1u);
			h->text[tlen - 1] = '\0';
			a->nhints++;
			break;
		}
		default:
			break; /* unknown: skipped for forward compatibility */
		}
	}
	return have_pub ? 0 : -WARP_EMISSING;
}

int warp_addr_to_text(const struct warp_node_addr *a, char *buf, size_t cap)
{
	uint8_t bin[WARP_ADDR_MAX_BIN];
	size_t plen = strlen(WARP_ADDR_TEXT_PREFIX);
	int n = warp_addr_encode(a, bin, sizeof(bin));

	if (n < 0)
		return n;
	if (plen + warp_b64url_len((size_t)n) + 1 > cap)
		return -EMSGSIZE;
	memcpy(buf, WARP_ADDR_TEXT_PREFIX, plen);
	warp_b64url_encode(buf + plen, bin, (size_t)n);
	return 0;
}

int warp_addr_from_text(const char *text, struct warp_node_addr *a)
{
	uint8_t bin[WARP_ADDR_MAX_BIN];
	size_t plen = strlen(WARP_ADDR_TEXT_PREFIX);
	int n;

	if (!text || strncmp(text, WARP_ADDR_TEXT_PREFIX, plen) != 0)
		return -WARP_EMALFORMED;
	n = warp_b64url_decode(bin, sizeof(bin), text + plen, strlen(text + plen));
	if (n < 0)
		return n;
	return warp_addr_decode(bin, (size_t)n, a);
}

static const char *const nat_names[] = { "unknown", "open", "udp-firewall", "full-cone",
					 "restricted", "port-restricted", "symmetric", "blocked" };
static const char *const beh_names[] = { "unknown", "endpoint-independent", "address-dependent",
					 "address-and-port-dependent" };
static const char *const delta_names[] = { "none", "equal", "preserving",
					   "independent", "dependent", "random" };
static const char *const hint_names[] = { "?", "mqtt", "turn", "names", "stun" };

const char *warp_addr_nat_name(unsigned int v)
{
	return v < WARP_ARRAY_SIZE(nat_names) ? nat_names[v] : "?";
}

const char *warp_addr_behaviour_name(unsigned int v)
{
	return v < WARP_ARRAY_SIZE(beh_names) ? beh_names[v] : "?";
}

const char *warp_addr_delta_name(unsigned int v)
{
	return v < WARP_ARRAY_SIZE(delta_names) ? delta_names[v] : "?";
}

const char *warp_addr_hint_name(unsigned int v)
{
	return v < WARP_ARRAY_SIZE(hint_names) ? hint_names[v] : "?";
}

static json_t *ip_json(uint8_t family, const uint8_t *a)
{
	char s[INET6_ADDRSTRLEN];

	inet_ntop(family == 4 ? AF_INET : AF_INET6, a, s, sizeof(s));
	return json_string(s);
}

char *warp_addr_to_json(const struct warp_node_addr *a, bool pretty)
{
	char hex[2 * WARP_PUBKEY_LEN + 1], mh[2 * WARP_MACHINE_HASH_LEN + 1];
	json_t *root = json_object(), *routes = json_array(), *hints = json_array();
	char *out;

	warp_hex_encode(hex, a->pubkey, WARP_PUBKEY_LEN);
	json_object_set_new(root, "version", json_integer(ADDR_VERSION));
	json_object_set_new(root, "pubkey", json_string(hex));
	if (a->has_machine) {
		warp_hex_encode(mh, a->machine, WARP_MACHINE_HASH_LEN);
		json_object_set_new(root, "machine", json_string(mh));
	}
	if (a->created_ms)
		json_object_set_new(root, "created_ms", json_integer((json_int_t)a->created_ms));
	for (size_t i = 0; i < a->nroutes; i++) {
		const struct warp_addr_route *r = &a->routes[i];
		json_t *o = json_object(), *flags = json_array();

		json_object_set_new(o, "family", json_integer(r->family));
		json_object_set_new(o, "if_id", json_integer(r->if_id));
		json_object_set_new(o, "nic", ip_json(r->family, r->nic_addr));
		json_object_set_new(o, "prefix_len", json_integer(r->prefix_len));
		json_object_set_new(o, "ext", r->has_ext ? ip_json(r->family, r->ext_addr)
							 : json_null());
		json_object_set_new(o, "tcp_port", json_integer(r->tcp_port));
		json_object_set_new(o, "udp_port", json_integer(r->udp_port));
		json_object_set_new(o, "ext_tcp_port", json_integer(r->ext_tcp_port));
		json_object_set_new(o, "ext_udp_port", json_integer(r->ext_udp_port));
		json_object_set_new(o, "nat", json_string(warp_addr_nat_name(r->nat)));
		json_object_set_new(o, "mapping", json_string(warp_addr_behaviour_name(r->mapping)));
		json_object_set_new(o, "filtering",
				    json_string(warp_addr_behaviour_name(r->filtering)));
		json_object_set_new(o, "delta", json_pack("{s:s, s:i}", "type",
							  warp_addr_delta_name(r->delta_type),
							  "value", (int)r->delta_value));
		if (r->flags & WARP_ROUTE_F_PORTMAP)
			json_array_append_new(flags, json_string("portmap"));
		if (r->flags & WARP_ROUTE_F_HAIRPIN)
			json_array_append_new(flags, json_string("hairpin"));
		if (r->flags & WARP_ROUTE_F_UDP_BLOCKED)
			json_array_append_new(flags, json_string("udp-blocked"));
		if (r->flags & WARP_ROUTE_F_DEFAULT)
			json_array_append_new(flags, json_string("default"));
		if (r->flags & WARP_ROUTE_F_LOOPBACK)
			json_array_append_new(flags, json_string("loopback"));
		json_object_set_new(o, "flags", flags);
		json_array_append_new(routes, o);
	}
	for (size_t i = 0; i < a->nhints; i++)
		json_array_append_new(hints, json_pack("{s:s, s:s}", "kind",
						       warp_addr_hint_name(a->hints[i].kind),
						       "endpoint", a->hints[i].text));
	json_object_set_new(root, "routes", routes);
	json_object_set_new(root, "hints", hints);
	out = json_dumps(root, pretty ? JSON_INDENT(2) : JSON_COMPACT);
	json_decref(root);
	return out;
}
