// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the STUN/TURN codec: decode, every accessor on every attribute, integrity
 * checks, ChannelData and stream framing.  A decoded message re-encoded attribute by attribute
 * must decode again to the same attributes (the decoder and the builder agree).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nat/stun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reencode(const struct warp_stun_msg *m)
{
	static uint8_t out[70000];
	struct warp_stun_builder b;
	struct warp_stun_msg m2;
	unsigned int kept = 0;
	int n;

	warp_stun_build_init(&b, out, sizeof(out), m->method, m->cls, m->tid);
	for (unsigned int i = 0; i < m->nattrs; i++) {
		uint16_t t = m->attrs[i].type;

		if (t == WARP_STUN_ATTR_MESSAGE_INTEGRITY || t == WARP_STUN_ATTR_FINGERPRINT ||
		    t == WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256)
			continue;
		warp_stun_add(&b, t, m->buf + m->attrs[i].off, m->attrs[i].len);
		kept++;
	}
	warp_stun_add_mi(&b, "fuzz", 4);
	warp_stun_add_fingerprint(&b);
	n = warp_stun_build_end(&b);
	if (n < 0)
		abort();
	if (warp_stun_decode(&m2, out, (size_t)n) != 0 || m2.nattrs != kept + 2)
		abort();
	if (warp_stun_check_integrity(&m2, "fuzz", 4) != 0)
		abort();
	for (unsigned int i = 0, j = 0; i < m->nattrs; i++) {
		const struct warp_stun_attr *a = &m->attrs[i];

		if (a->type == WARP_STUN_ATTR_MESSAGE_INTEGRITY ||
		    a->type == WARP_STUN_ATTR_FINGERPRINT ||
		    a->type == WARP_STUN_ATTR_MESSAGE_INTEGRITY_SHA256)
			continue;
		if (m2.attrs[j].type != a->type || m2.attrs[j].len != a->len ||
		    memcmp(out + m2.attrs[j].off, m->buf + a->off, a->len))
			abort();
		j++;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct warp_stun_msg m;
	struct sockaddr_storage ss;
	const uint8_t *p;
	size_t len;
	uint16_t types[16], ch;
	uint32_t v;
	uint8_t proto;
	int code;

	warp_stun_is_message(data, size);
	warp_stun_frame_len(data, size);
	warp_stun_channel_data_decode(data, size, &ch, &p, &len);
	if (warp_stun_decode(&m, data, size) != 0)
		return 0;
	for (unsigned int i = 0; i < m.nattrs; i++) {
		const struct warp_stun_attr *a = &m.attrs[i];

		if (a->off + a->len > size)
			abort();
		warp_stun_attr_addr(&m, a, &ss);
		warp_stun_attr_name(a->type);
	}
	warp_stun_get_mapped(&m, &ss);
	warp_stun_get_addr(&m, WARP_STUN_ATTR_OTHER_ADDRESS, &ss);
	warp_stun_get_error(&m, &code, (const char **)&p, &len);
	warp_stun_get_u32(&m, WARP_STUN_ATTR_LIFETIME, &v);
	warp_stun_get_unknown_attrs(&m, types, 16);
	warp_stun_get_channel(&m, &ch);
	warp_stun_get_requested_transport(&m, &proto);
	warp_stun_get_response_port(&m, &ch);
	warp_stun_get_bytes(&m, WARP_STUN_ATTR_DATA, &p, &len);
	warp_stun_check_integrity(&m, "key", 3);
	warp_stun_check_mi(&m, "key", 3);
	warp_stun_method_name(m.method);
	warp_stun_class_name(m.cls);
	reencode(&m);
	return 0;
}
