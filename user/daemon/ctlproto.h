/* SPDX-License-Identifier: MIT */
/* Control protocol pieces shared by the daemon and the client: base64, error names. */
#ifndef WARP_DAEMON_CTLPROTO_H
#define WARP_DAEMON_CTLPROTO_H

#include <stddef.h>
#include <stdint.h>

/* Standard base64 with padding (RFC 4648 section 4), what every language's library
 * produces.  out holds ctl_b64_len(n) + 1 bytes (NUL-terminated). */
size_t ctl_b64_len(size_t n);
void ctl_b64_encode(char *out, const void *in, size_t n);
/* Returns the decoded length or -EINVAL; out holds at least 3 * (len / 4) bytes. */
int ctl_b64_decode(uint8_t *out, const char *in, size_t len);

/* A symbolic name for an error code ("ETIMEDOUT", "ECLOSED", ...), stable for clients. */
const char *ctl_err_name(int err);

#endif
