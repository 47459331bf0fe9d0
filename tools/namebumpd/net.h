/* SPDX-License-Identifier: MIT */
/* namebumpd I/O layer: worker threads with UDP and TCP listeners. */
#ifndef NAMEBUMPD_NET_H
#define NAMEBUMPD_NET_H

#include <sys/socket.h>

#include "nbd.h"

struct nb_server;

/* Creates the workers and binds every listen address of sh->cfg. */
struct nb_server *nb_server_new(struct nb_shared *sh);
int nb_server_start(struct nb_server *srv);
void nb_server_stop(struct nb_server *srv);
void nb_server_free(struct nb_server *srv);

/* "host:port", "[v6]:port" or "host" (default_port). */
int nb_parse_hostport(const char *spec, uint16_t default_port, struct sockaddr_storage *ss,
		      socklen_t *sslen);
void nb_sockaddr_ip(const struct sockaddr_storage *ss, struct nb_ip *ip);

#endif
