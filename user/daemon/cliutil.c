// SPDX-License-Identifier: MIT
/* Helpers shared by the daemon and the daemon-aware CLI commands (see cliutil.h). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include <warpgate/control.h>
#include <warpgate/error.h>

#include "daemon/cliutil.h"
#include "daemon/fwd.h"
#include "net/endpoint.h"

static void on_signal(struct warp_loop *loop, int fd, unsigned int events, void *user)
{
	struct wd_signals *s = user;
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		s->last = (int)si.ssi_signo;
		if (si.ssi_signo == SIGHUP)
			s->hups++;
		else if (si.ssi_signo != SIGPIPE)
			s->stop = true;
	}
}

int wd_signals_start(struct wd_signals *s, struct warp_loop *loop)
{
	sigset_t mask;
	int err;

	memset(s, 0, sizeof(*s));
	s->loop = loop;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGPIPE);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	s->fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s->fd < 0)
		return -errno;
	err = warp_loop_add_fd(loop, s->fd, WARP_EV_READ, on_signal, s);
	if (err) {
		close(s->fd);
		s->fd = -1;
	}
	return err;
}

void wd_signals_stop(struct wd_signals *s)
{
	if (s->fd < 0)
		return;
	warp_loop_del_fd(s->loop, s->fd);
	close(s->fd);
	s->fd = -1;
}

bool wd_signals_stopped(void *s)
{
	return ((struct wd_signals *)s)->stop;
}

void wd_loop_drain(struct warp_loop *loop)
{
	for (int i = 0; i < 16 && warp_loop_next_timeout(loop) == 0; i++)
		warp_loop_run_once(loop, 0);
}

int wd_socket_path(const struct warp_conf *conf, const char *override, char *buf, size_t len)
{
	struct sockaddr_un sun;
	char home[PATH_MAX];
	int n;

	if (override && *override) {
		n = snprintf(buf, len, "%s", override);
	} else {
		if (conf && conf->home[0])
			snprintf(home, sizeof(home), "%s", conf->home);
		else if (warp_home_dir(home, sizeof(home)))
			return -ENAMETOOLONG;
		n = snprintf(buf, len, "%s/control.sock", home);
	}
	if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	return 0;
}

int wd_keys_add(struct wd_keys *k, const char *hex)
{
	uint8_t key[WARP_PUBKEY_LEN];
	uint8_t(*nk)[WARP_PUBKEY_LEN];

	if (fwd_key_parse(hex, key))
		return -EINVAL;
	for (size_t i = 0; i < k->n; i++)
		if (!memcmp(k->keys[i], key, WARP_PUBKEY_LEN))
			return 0;
	nk = realloc(k->keys, (k->n + 1) * WARP_PUBKEY_LEN);
	if (!nk)
		return -ENOMEM;
	k->keys = nk;
	memcpy(k->keys[k->n++], key, WARP_PUBKEY_LEN);
	return 0;
}

void wd_keys_free(struct wd_keys *k)
{
	free(k->keys);
	k->keys = NULL;
	k->n = 0;
}

void wd_fwd_event_print(const char *cmd, const struct fwd_event *ev, bool verbose)
{
	char key[2 * WARP_PUBKEY_LEN + 1] = "?", from[WARP_EP_STRLEN + 2 * WARP_PUBKEY_LEN + 16];
	const char *why = ev->reason && ev->reason[0] ? ev->reason : NULL;

	if (ev->peer)
		fwd_key_hex(ev->peer, key);
	/* Who asked: the local TCP client on the forward side, the peer on the expose side. */
	if (ev->expose)
		snprintf(from, sizeof(from), "peer %.16s..: ", key);
	else if (ev->client && ev->client[0])
		snprintf(from, sizeof(from), "%s -> ", ev->client);
	else
		from[0] = '\0';
	switch (ev->kind) {
	case FWD_EV_LISTENING:
		break;
	case FWD_EV_UP:
		if (verbose)
			fprintf(stderr, "warpgate %s: pipe up with %s%s%s%s\n", cmd, key,
				ev->via && ev->via[0] ? " (" : "", ev->via ? ev->via : "",
				ev->via && ev->via[0] ? ")" : "");
		break;
	case FWD_EV_DOWN:
		/* Our own shutdown, or a peer that finished: news only when asked for. */
		if ((ev->err == -ECANCELED || ev->err == -WARP_ECLOSED) && !verbose)
			break;
		if (ev->peer)
			fprintf(stderr, "warpgate %s: pipe with %s ended: %s\n", cmd, key,
				why ? why : warp_strerror(ev->err));
		else
			fprintf(stderr, "warpgate %s: no pipe: %s\n", cmd,
				why ? why : warp_strerror(ev->err));
		break;
	case FWD_EV_OPEN:
		if (verbose)
			fprintf(stderr, "warpgate %s: %s%s:%u open\n", cmd, from, ev->host,
				ev->port);
		break;
	case FWD_EV_REFUSED:
		fprintf(stderr, "warpgate %s: %s%s:%u %s: %s\n", cmd, from, ev->host, ev->port,
			ev->code != FWD_RST_REFUSED && ev->code != FWD_RST_FORBIDDEN
				? fwd_reset_name(ev->code)
			: ev->expose ? "refused"
				     : "refused by the peer",
			why ? why : fwd_reset_name(ev->code));
		break;
	case FWD_EV_CLOSE:
		if (verbose)
			fprintf(stderr, "warpgate %s: %s%s:%u closed (%llu bytes up, %llu down)\n",
				cmd, from, ev->host, ev->port, (unsigned long long)ev->bytes_up,
				(unsigned long long)ev->bytes_down);
		break;
	}
}

static const char *jstr(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v ? v : "";
}

void wd_fwd_event_print_json(const char *cmd, const char *json, bool verbose)
{
	json_t *o = json_loads(json, 0, NULL);
	struct fwd_event ev = { 0 };
	uint8_t key[WARP_PUBKEY_LEN];
	const char *kind;
	int k;

	if (!o)
		return;
	kind = jstr(o, "kind");
	for (k = 0; k <= FWD_EV_CLOSE; k++)
		if (!strcmp(kind, fwd_ev_name((enum fwd_ev)k)))
			break;
	if (k <= FWD_EV_CLOSE) {
		ev.kind = (enum fwd_ev)k;
		ev.expose = !strcmp(jstr(o, "side"), "expose");
		if (!fwd_key_parse(jstr(o, "peer"), key))
			ev.peer = key;
		ev.client = jstr(o, "client");
		ev.host = jstr(o, "host");
		ev.port = (uint16_t)json_integer_value(json_object_get(o, "port"));
		ev.err = (int)json_integer_value(json_object_get(o, "errno"));
		ev.code = (unsigned int)json_integer_value(json_object_get(o, "code"));
		ev.reason = jstr(o, "reason");
		ev.bytes_up = (uint64_t)json_integer_value(json_object_get(o, "bytes_up"));
		ev.bytes_down = (uint64_t)json_integer_value(json_object_get(o, "bytes_down"));
		ev.via = jstr(o, "via");
		wd_fwd_event_print(cmd, &ev, verbose);
	}
	json_decref(o);
}

int wd_ctl_follow(struct warp_ctl *ctl, const char *cmd, bool verbose)
{
	struct pollfd pfd[2];
	sigset_t mask;
	int sfd, err = 0;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return -errno;
	pfd[0].fd = warp_ctl_fd(ctl);
	pfd[0].events = POLLIN;
	pfd[1].fd = sfd;
	pfd[1].events = POLLIN;
	for (;;) {
		struct warp_ctl_event ev;
		struct signalfd_siginfo si;

		/* Lines may already be buffered in the handle: drain before polling. */
		while ((err = warp_ctl_next_event(ctl, &ev, 0)) == 0) {
			if (ev.kind == WARP_CTL_EV_FORWARD)
				wd_fwd_event_print_json(cmd, ev.json, verbose);
			warp_ctl_event_free(&ev);
		}
		if (err != -ETIMEDOUT)
			break;
		err = 0;
		if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
			err = -errno;
			break;
		}
		if ((pfd[1].revents & POLLIN) && read(sfd, &si, sizeof(si)) > 0 &&
		    si.ssi_signo != SIGHUP)
			break;
	}
	close(sfd);
	return err;
}

struct warp_ctl *wd_ctl_find(const struct warp_conf *conf, const char *override)
{
	char path[PATH_MAX];
	int err = wd_socket_path(conf, override, path, sizeof(path));

	if (err) {
		errno = -err;
		return NULL;
	}
	return warp_ctl_open(path);
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int wd_ctl_netcat(struct warp_ctl *ctl, uint32_t pipe, int in_fd, int out_fd)
{
	struct pollfd pfd[3];
	bool in_done = false;
	sigset_t mask;
	int sfd, err;

	err = warp_ctl_subscribe(ctl, pipe);
	if (err)
		return err;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return -errno;
	for (;;) {
		struct warp_ctl_event ev;
		int n = 0;

		while ((err = warp_ctl_next_event(ctl, &ev, 0)) == 0) {
			bool end = ev.pipe == pipe && ev.kind == WARP_CTL_EV_CLOSED;

			if (ev.pipe == pipe && ev.kind == WARP_CTL_EV_MESSAGE)
				err = write_all(out_fd, ev.data, ev.len);
			warp_ctl_event_free(&ev);
			if (end || err)
				goto out;
		}
		if (err != -ETIMEDOUT)
			goto out;
		err = 0;
		pfd[n].fd = warp_ctl_fd(ctl);
		pfd[n++].events = POLLIN;
		pfd[n].fd = sfd;
		pfd[n++].events = POLLIN;
		if (!in_done) {
			pfd[n].fd = in_fd;
			pfd[n++].events = POLLIN;
		}
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			goto out;
		}
		if (pfd[1].revents & POLLIN)
			goto out;
		if (!in_done && pfd[2].revents) {
			uint8_t buf[32768];
			ssize_t r = read(in_fd, buf, sizeof(buf));

			if (r > 0) {
				err = warp_ctl_send(ctl, pipe, buf, (size_t)r);
			} else if (r == 0 || errno != EINTR) {
				/* End of input: half-close, keep printing until the peer ends. */
				in_done = true;
				err = warp_ctl_shutdown(ctl, pipe);
			}
			if (err)
				goto out;
		}
	}
out:
	close(sfd);
	return err == -WARP_ECLOSED ? 0 : err;
}
