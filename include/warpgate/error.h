/* SPDX-License-Identifier: MIT */
/*
 * Error convention: every int-returning function returns 0 (or a count) on success and a
 * negative error code on failure.  Codes below WARP_EBASE are plain errno values (-EINVAL,
 * -ENOMEM, ...); codes from WARP_EBASE up are warpgate's own.  Pointer-returning constructors
 * return NULL and set errno (to a positive value of either kind).
 */
#ifndef WARPGATE_ERROR_H
#define WARPGATE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum warp_error {
	WARP_EBASE = 10000,
	WARP_EMALFORMED,     /* input does not follow the format */
	WARP_ETRUNCATED,     /* input ends before a field it announces */
	WARP_EVERSION,       /* unsupported format or protocol version */
	WARP_EAUTH,          /* MAC or signature check failed */
	WARP_EIDENTITY,      /* the peer proved an identity other than the one expected */
	WARP_EREPLAY,        /* packet or message seen before */
	WARP_ESTALE,         /* timestamp outside the accepted window */
	WARP_EKEYPERM,       /* key file readable by group or others */
	WARP_ENAME,          /* invalid name */
	WARP_ENONAMESERVER,  /* no nickname server configured */
	WARP_ENOTFOUND,      /* name or record not found */
	WARP_ECLOSED,        /* end of pipe: the peer closed it */
	WARP_ENOPATH,        /* no strategy reached the peer */
	WARP_ENOTOWNER,      /* record owned by another key */
	WARP_EQUOTA,         /* quota exhausted */
	WARP_ERATELIMIT,     /* rate limit hit */
	WARP_ECONFIG,        /* bad configuration */
	WARP_ECLOCK,         /* no trustworthy clock */
	WARP_EDUPLICATE,     /* a field that must appear once appears twice */
	WARP_EMISSING,       /* a required field is absent */
	WARP_ERANGE,         /* a field value is out of range */
	WARP_ETRAILING,      /* bytes left after the end of a message */
	WARP_ESTATE,         /* message not valid in the current protocol state */
	WARP_EIDLE,          /* pipe closed after its idle timeout */
	WARP_ELAST
};

/* Text for any code this library returns (errno or warpgate's), with or without the sign. */
const char *warp_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
