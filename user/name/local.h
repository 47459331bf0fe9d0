/* SPDX-License-Identifier: MIT */
/* Local-link (multicast) name resolution: group addresses shared by querier and responder. */
#ifndef WARP_NAME_LOCAL_H
#define WARP_NAME_LOCAL_H

#include <sys/socket.h>

#include <warpgate/name.h>

#define WN_LOCAL_GROUP4 "239.255.82.80" /* administratively scoped, sent with TTL 1 */
#define WN_LOCAL_GROUP6 "ff02::5750"	/* link-local scope */

struct wn_local_groups {
	struct sockaddr_storage addr[2];
	int n;
};

/* Defaults, or the opts' addresses (setting one disables the other family unless set too). */
int wn_local_groups_init(struct wn_local_groups *g, const struct warp_name_client_opts *opts);

int wn_parse_hostport(const char *spec, uint16_t def_port, struct sockaddr_storage *ss,
		      socklen_t *len);

#endif
