// SPDX-License-Identifier: MIT
/* Control protocol helpers (see ctlproto.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <warpgate/error.h>

#include "daemon/ctlproto.h"

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t ctl_b64_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

void ctl_b64_encode(char *out, const void *in, size_t n)
{
	const uint8_t *p = in;
	size_t i = 0;

	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		*out++ = b64chars[v >> 18];
		*out++ = b64chars[(v >> 12) & 63];
		*out++ = b64chars[(v >> 6) & 63];
		*out++ = b64chars[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);

		*out++ = b64chars[v >> 18];
		*out++ = b64chars[(v >> 12) & 63];
		*out++ = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
		*out++ = '=';
	}
	*out = '\0';
}

static int b64val(char c)
{
	const char *p = c ? strchr(b64chars, c) : NULL;

	return p ? (int)(p - b64chars) : -1;
}

int ctl_b64_decode(uint8_t *out, const char *in, size_t len)
{
	size_t o = 0;

	if (len % 4)
		return -EINVAL;
	for (size_t i = 0; i < len; i += 4) {
		int a = b64val(in[i]), b = b64val(in[i + 1]), c, d;
		bool last = i + 4 == len;
		uint32_t v;

		c = last && in[i + 2] == '=' && in[i + 3] == '=' ? 0 : b64val(in[i + 2]);
		d = last && in[i + 3] == '=' ? 0 : b64val(in[i + 3]);
		if (a < 0 || b < 0 || c < 0 || d < 0)
			return -EINVAL;
		v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		out[o++] = (uint8_t)(v >> 16);
		if (last && in[i + 2] == '=')
			break;
		out[o++] = (uint8_t)(v >> 8);
		if (last && in[i + 3] == '=')
			break;
		out[o++] = (uint8_t)v;
	}
	return (int)o;
}

static const struct {
	int err;
	const char *name;
} names[] = {
	{ EPERM, "EPERM" },
	{ ENOENT, "ENOENT" },
	{ EIO, "EIO" },
	{ EBADF, "EBADF" },
	{ EAGAIN, "EAGAIN" },
	{ ENOMEM, "ENOMEM" },
	{ EACCES, "EACCES" },
	{ EEXIST, "EEXIST" },
	{ EINVAL, "EINVAL" },
	{ EPIPE, "EPIPE" },
	{ EMSGSIZE, "EMSGSIZE" },
	{ EPROTO, "EPROTO" },
	{ EOPNOTSUPP, "EOPNOTSUPP" },
	{ EADDRINUSE, "EADDRINUSE" },
	{ EADDRNOTAVAIL, "EADDRNOTAVAIL" },
	{ ECONNRESET, "ECONNRESET" },
	{ ECONNREFUSED, "ECONNREFUSED" },
	{ ETIMEDOUT, "ETIMEDOUT" },
	{ ECANCELED, "ECANCELED" },
	{ EHOSTUNREACH, "EHOSTUNREACH" },
	{ WARP_EMALFORMED, "EMALFORMED" },
	{ WARP_ETRUNCATED, "ETRUNCATED" },
	{ WARP_EVERSION, "EVERSION" },
	{ WARP_EAUTH, "EAUTH" },
	{ WARP_EIDENTITY, "EIDENTITY" },
	{ WARP_EKEYPERM, "EKEYPERM" },
	{ WARP_ENAME, "ENAME" },
	{ WARP_ENONAMESERVER, "ENONAMESERVER" },
	{ WARP_ENOTFOUND, "ENOTFOUND" },
	{ WARP_ECLOSED, "ECLOSED" },
	{ WARP_ENOPATH, "ENOPATH" },
	{ WARP_ENOTOWNER, "ENOTOWNER" },
	{ WARP_EQUOTA, "EQUOTA" },
	{ WARP_ERATELIMIT, "ERATELIMIT" },
	{ WARP_ECONFIG, "ECONFIG" },
	{ WARP_ECLOCK, "ECLOCK" },
	{ WARP_ERANGE, "ERANGE" },
	{ WARP_ESTATE, "ESTATE" },
	{ WARP_EIDLE, "EIDLE" },
};

const char *ctl_err_name(int err)
{
	static __thread char buf[16];

	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].err == err)
			return names[i].name;
	snprintf(buf, sizeof(buf), "E%d", err);
	return buf;
}
