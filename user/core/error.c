// SPDX-License-Identifier: MIT
/* warp_strerror(): one table for warpgate's own codes, strerror() for the rest. */
#include <stdlib.h>
#include <string.h>

#include <warpgate/error.h>

static const char *const warp_errors[WARP_ELAST - WARP_EBASE] = {
	[0] = "unknown warpgate error",
	[WARP_EMALFORMED - WARP_EBASE] = "malformed input",
	[WARP_ETRUNCATED - WARP_EBASE] = "input truncated",
	[WARP_EVERSION - WARP_EBASE] = "unsupported version",
	[WARP_EAUTH - WARP_EBASE] = "authentication failed",
	[WARP_EIDENTITY - WARP_EBASE] = "peer identity does not match the expected key",
	[WARP_EREPLAY - WARP_EBASE] = "replayed message",
	[WARP_ESTALE - WARP_EBASE] = "timestamp outside the accepted window",
	[WARP_EKEYPERM - WARP_EBASE] = "key file is readable by group or others",
	[WARP_ENAME - WARP_EBASE] = "invalid name",
	[WARP_ENONAMESERVER - WARP_EBASE] = "no nickname server configured",
	[WARP_ENOTFOUND - WARP_EBASE] = "not found",
	[WARP_ECLOSED - WARP_EBASE] = "end of pipe",
	[WARP_ENOPATH - WARP_EBASE] = "no path to the peer",
	[WARP_ENOTOWNER - WARP_EBASE] = "name is owned by another key",
	[WARP_EQUOTA - WARP_EBASE] = "quota exhausted",
	[WARP_ERATELIMIT - WARP_EBASE] = "rate limited",
	[WARP_ECONFIG - WARP_EBASE] = "bad configuration",
	[WARP_ECLOCK - WARP_EBASE] = "no trustworthy clock",
	[WARP_EDUPLICATE - WARP_EBASE] = "duplicate field",
	[WARP_EMISSING - WARP_EBASE] = "required field missing",
	[WARP_ERANGE - WARP_EBASE] = "field value out of range",
	[WARP_ETRAILING - WARP_EBASE] = "trailing bytes after message",
	[WARP_ESTATE - WARP_EBASE] = "message not valid in this state",
	[WARP_EIDLE - WARP_EBASE] = "idle timeout",
};

const char *warp_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err >= WARP_EBASE && err < WARP_ELAST)
		return warp_errors[err - WARP_EBASE] ? warp_errors[err - WARP_EBASE] : warp_errors[0];
	if (err == 0)
		return "success";
	return strerror(err);
}
