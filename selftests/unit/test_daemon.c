// SPDX-License-Identifier: MIT
/*
 * The daemon's control socket, driven through the public client (warpgate/control.h) and
 * raw lines: a real `warpgate daemon --test-mode` process, a real `warpgate listen --echo`
 * peer, and `warpgate connect` as an inbound peer.  Covers the handshake, status, connect,
 * send/recv, subscribe events, listen/accept, close, pipe ownership, error replies,
 * malformed lines, the socket's mode and the peer-credential check.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include <warpgate/control.h>
#include <warpgate/error.h>

#include "daemon/cliutil.h"

struct proc {
	pid_t pid;
	FILE *out;
};

static char home[64] = "/tmp/wpg-daemon-test.XXXXXX";
static char sock[128], bin[4096];
static struct proc daemon_p, echo_p;
static char daemon_addr[2048], echo_addr[2048];

/* Runs argv with WARPGATE_HOME set, stdout to a pipe we read, stderr to <home>/NAME.err. */
static int spawn(struct proc *p, const char *errname, char *const argv[])
{
	int fds[2];
	char errpath[256];

	if (pipe(fds) < 0)
		return -errno;
	snprintf(errpath, sizeof(errpath), "%s/%s.err", home, errname);
	p->pid = fork();
	if (p->pid < 0)
		return -errno;
	if (p->pid == 0) {
		int e = open(errpath, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(fds[1], STDOUT_FILENO);
		if (e >= 0)
			dup2(e, STDERR_FILENO);
		close(fds[0]);
		setenv("WARPGATE_HOME", home, 1);
		execv(bin, argv);
		_exit(127);
	}
	close(fds[1]);
	p->out = fdopen(fds[0], "r");
	return p->out ? 0 : -errno;
}

static int first_line(struct proc *p, char *buf, size_t len)
{
	if (!fgets(buf, (int)len, p->out))
		return -EIO;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static int stop(struct proc *p)
{
	int st = -1;

	if (p->pid <= 0)
		return -1;
	kill(p->pid, SIGTERM);
	waitpid(p->pid, &st, 0);
	if (p->out)
		fclose(p->out);
	p->pid = 0;
	p->out = NULL;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int setup(void **state)
{
	const char *b = getenv("WARP_BUILD");
	char *dargv[] = { "warpgate", "daemon", "--test-mode", NULL };
	char *eargv[] = { "warpgate", "listen", "--test-mode", "--echo", NULL };

	snprintf(bin, sizeof(bin), "%s/bin/warpgate", b ? b : "build");
	if (access(bin, X_OK))
		return -1;
	if (!mkdtemp(home))
		return -1;
	snprintf(sock, sizeof(sock), "%s/control.sock", home);
	if (spawn(&daemon_p, "daemon", dargv) ||
	    first_line(&daemon_p, daemon_addr, sizeof(daemon_addr)))
		return -1;
	if (spawn(&echo_p, "echo", eargv) || first_line(&echo_p, echo_addr, sizeof(echo_addr)))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	char cmd[256];
	int rc = stop(&daemon_p);

	stop(&echo_p);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", home);
	if (system(cmd))
		return -1;
	return rc == 0 ? 0 : -1;
}

static struct warp_ctl *ctl_open(void)
{
	struct warp_ctl *c = warp_ctl_open(sock);

	assert_non_null(c);
	return c;
}

static void test_socket_mode(void **state)
{
	struct stat st;

	assert_int_equal(lstat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(strncmp(daemon_addr, "wg1.", 4), 0);
}

static void test_open_errors(void **state)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/nothing.sock", home);
	assert_null(warp_ctl_open(path));
	assert_int_equal(errno, ENOENT);
}

static void test_status_address(void **state)
{
	struct warp_ctl *c = ctl_open();
	char *js = NULL, addr[2048];
	json_t *st, *id;

	assert_int_equal(warp_ctl_status(c, &js), 0);
	st = json_loads(js, 0, NULL);
	assert_non_null(st);
	assert_true(json_is_true(json_object_get(json_object_get(st, "daemon"), "running")));
	id = json_object_get(st, "identity");
	assert_int_equal(strlen(json_string_value(json_object_get(id, "public_key"))), 66);
	assert_true(json_is_array(json_object_get(st, "pipes")));
	assert_true(json_is_array(json_object_get(st, "interfaces")));
	assert_true(json_is_string(json_object_get(st, "bpf")));
	json_decref(st);
	free(js);
	assert_int_equal(warp_ctl_address(c, addr, sizeof(addr)), 0);
	assert_int_equal(strncmp(addr, "wg1.", 4), 0);
	warp_ctl_close(c);
}

static void test_connect_send_recv(void **state)
{
	struct warp_ctl *c = ctl_open();
	uint8_t big[100000], buf[200000];
	char *result = NULL;
	uint32_t pipe;
	ssize_t n;

	assert_int_equal(warp_ctl_connect(c, echo_addr, 5000, &pipe, &result), 0);
	assert_non_null(strstr(result, "\"connected\":true"));
	free(result);
	assert_int_equal(warp_ctl_send(c, pipe, "hi", 2), 0);
	n = warp_ctl_recv(c, pipe, buf, sizeof(buf), 5000);
	assert_int_equal(n, 7);
	assert_memory_equal(buf, "echo:hi", 7);
	/* Nothing more: a short wait times out. */
	assert_int_equal(warp_ctl_recv(c, pipe, buf, sizeof(buf), 100), -ETIMEDOUT);
	/* Binary, with NUL bytes, large. */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(warp_ctl_send(c, pipe, big, sizeof(big)), 0);
	n = warp_ctl_recv(c, pipe, buf, sizeof(buf), 5000);
	assert_int_equal(n, sizeof(big) + 5);
	assert_memory_equal(buf + 5, big, sizeof(big));
	/* Half-close: the peer ends its side too, recv reports the end of the pipe, the id
	 * stays until closed.  (The echo is awaited first: see test_netcat_helper.) */
	assert_int_equal(warp_ctl_send(c, pipe, "last", 4), 0);
	n = warp_ctl_recv(c, pipe, buf, sizeof(buf), 5000);
	assert_int_equal(n, 9);
	assert_memory_equal(buf, "echo:last", 9);
	assert_int_equal(warp_ctl_shutdown(c, pipe), 0);
	assert_int_equal(warp_ctl_recv(c, pipe, buf, sizeof(buf), 5000), -WARP_ECLOSED);
	assert_int_equal(warp_ctl_close_pipe(c, pipe), 0);
	assert_int_equal(warp_ctl_recv(c, pipe, buf, sizeof(buf), 0), -ENOENT);
	warp_ctl_close(c);
}

static void test_subscribe_events(void **state)
{
	struct warp_ctl *c = ctl_open();
	struct warp_ctl_event ev;
	uint32_t pipe;
	char msg[16];

	assert_int_equal(warp_ctl_connect(c, echo_addr, 5000, &pipe, NULL), 0);
	assert_int_equal(warp_ctl_send(c, pipe, "queued", 6), 0);
	/* Let the echo arrive and queue, then subscribe: it comes first, as an event. */
	usleep(200000);
	assert_int_equal(warp_ctl_subscribe(c, pipe), 0);
	for (int i = 0; i < 3; i++) {
		snprintf(msg, sizeof(msg), "m%d", i);
		assert_int_equal(warp_ctl_send(c, pipe, msg, strlen(msg)), 0);
	}
	for (int i = -1; i < 3; i++) {
		char want[32];

		if (i < 0)
			snprintf(want, sizeof(want), "echo:queued");
		else
			snprintf(want, sizeof(want), "echo:m%d", i);
		assert_int_equal(warp_ctl_next_event(c, &ev, 5000), 0);
		assert_int_equal(ev.kind, WARP_CTL_EV_MESSAGE);
		assert_int_equal(ev.pipe, pipe);
		assert_int_equal(ev.len, strlen(want));
		assert_memory_equal(ev.data, want, ev.len);
		warp_ctl_event_free(&ev);
	}
	assert_int_equal(warp_ctl_next_event(c, &ev, 100), -ETIMEDOUT);
	warp_ctl_close(c);
}

static void test_listen_accept(void **state)
{
	struct warp_ctl *c = ctl_open();
	struct warp_ctl_event ev;
	struct proc peer = { 0 };
	char *argv[] = {
		"warpgate", "connect", "--test-mode", daemon_addr, "--send", "ping", NULL
	};
	char line[256], buf[64];
	uint8_t zero[WARP_PUBKEY_LEN] = { 0 };
	ssize_t n;

	assert_int_equal(warp_ctl_listen(c, NULL, 0), 0);
	assert_int_equal(spawn(&peer, "peer", argv), 0);
	assert_int_equal(warp_ctl_next_event(c, &ev, 10000), 0);
	assert_int_equal(ev.kind, WARP_CTL_EV_ACCEPT);
	assert_memory_not_equal(ev.peer_key, zero, sizeof(zero));
	n = warp_ctl_recv(c, ev.pipe, buf, sizeof(buf), 5000);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(warp_ctl_send(c, ev.pipe, "pong", 4), 0);
	assert_non_null(fgets(line, sizeof(line), peer.out));
	assert_string_equal(line, "pong\n");
	warp_ctl_event_free(&ev);
	/* The peer closes after its reply: a "closed" event follows. */
	assert_int_equal(warp_ctl_next_event(c, &ev, 5000), 0);
	assert_int_equal(ev.kind, WARP_CTL_EV_CLOSED);
	warp_ctl_event_free(&ev);
	waitpid(peer.pid, NULL, 0);
	fclose(peer.out);
	warp_ctl_close(c);
}

static void test_errors_and_ownership(void **state)
{
	struct warp_ctl *a = ctl_open(), *b = ctl_open();
	char *reply = NULL, buf[16];
	uint32_t pipe;
	json_t *st;
	char *js;
	int err;

	assert_int_equal(warp_ctl_call(a, "{\"op\": \"nope\"}", &reply, 5000), -EOPNOTSUPP);
	assert_non_null(strstr(reply, "\"code\":\"EOPNOTSUPP\""));
	free(reply);
	assert_int_equal(warp_ctl_call(a, "{\"op\": \"send\", \"pipe\": 1}", &reply, 5000),
			 -ENOENT);
	free(reply);
	assert_int_equal(warp_ctl_call(a, "{\"op\": \"recv\"}", NULL, 5000), -EINVAL);
	assert_int_equal(warp_ctl_call(a, "not json", NULL, 5000), -EINVAL);
	err = warp_ctl_connect(a, "wg1.AAAA", 2000, &pipe, NULL);
	assert_true(err == -WARP_EMALFORMED || err == -WARP_ETRUNCATED);
	assert_int_equal(warp_ctl_connect(a, "alice", 2000, &pipe, NULL), -WARP_ENONAMESERVER);
	assert_int_equal(
		warp_ctl_call(a, "{\"op\": \"name_get\", \"name\": \"alice\"}", NULL, 5000),
		-WARP_ENONAMESERVER);
	/* A pipe belongs to the client that opened it. */
	assert_int_equal(warp_ctl_connect(a, echo_addr, 5000, &pipe, NULL), 0);
	assert_int_equal(warp_ctl_send(b, pipe, "x", 1), -ENOENT);
	assert_int_equal(warp_ctl_recv(b, pipe, buf, sizeof(buf), 0), -ENOENT);
	/* A client's pipes end with its connection. */
	warp_ctl_close(a);
	usleep(200000);
	assert_int_equal(warp_ctl_status(b, &js), 0);
	st = json_loads(js, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(st, "pipes")), 0);
	json_decref(st);
	free(js);
	warp_ctl_close(b);
}

/* The CLI's netcat over a daemon pipe (for `connect` through the daemon): input to the pipe,
 * end of input half-closes, the echo comes back, then the pipe ends. */
static void test_netcat_helper(void **state)
{
	int in[2], out[2], st;
	char buf[64] = "";
	ssize_t n, got = 0;
	pid_t pid;

	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(out), 0);
	pid = fork();
	if (pid == 0) {
		struct warp_ctl *c = warp_ctl_open(sock);
		uint32_t p;

		close(in[1]);
		close(out[0]);
		if (!c || warp_ctl_connect(c, echo_addr, 5000, &p, NULL))
			_exit(2);
		_exit(wd_ctl_netcat(c, p, in[0], out[1]) ? 3 : 0);
	}
	close(in[0]);
	close(out[1]);
	/* Wait for the echo before the end of input: a peer that gets a message and the end
	 * of the pipe in one packet cannot answer it (see the daemon report). */
	assert_int_equal(write(in[1], "hello", 5), 5);
	while (got < 10 && (n = read(out[0], buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
		got += n;
	close(in[1]);
	while (got < (ssize_t)sizeof(buf) - 1 &&
	       (n = read(out[0], buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
		got += n;
	close(out[0]);
	waitpid(pid, &st, 0);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_string_equal(buf, "echo:hello");
}

/* Lines in, lines out, without the client library. */
static void test_raw_lines(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char buf[4096];
	ssize_t n, got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	static const char req[] = "garbage\n{\"id\": \"a\", \"op\": \"hello\"}\n"
				  "{\"id\": 7, \"op\": \"recv\", \"pipe\": 99}\n";

	strcpy(sun.sun_path, sock);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
	while (got < (ssize_t)sizeof(buf) - 1) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int lines = 0;

		if (poll(&pfd, 1, 5000) <= 0)
			break;
		n = read(fd, buf + got, sizeof(buf) - 1 - (size_t)got);
		if (n <= 0)
			break;
		got += n;
		buf[got] = '\0';
		for (char *p = buf; (p = strchr(p, '\n')); p++)
			lines++;
		if (lines >= 3)
			break;
	}
	close(fd);
	assert_non_null(strstr(buf, "{\"id\":null,\"ok\":false,"));
	assert_non_null(strstr(buf, "\"code\":\"EINVAL\""));
	assert_non_null(strstr(buf, "{\"id\":\"a\",\"ok\":true,\"version\":1,"));
	assert_non_null(strstr(buf, "{\"id\":7,\"ok\":false,\"error\":\"no pipe 99\","));
}

/* SO_PEERCRED: another user is refused even when the socket mode would let it in. */
static void test_peer_credentials(void **state)
{
	int st, p[2];
	pid_t pid;
	char buf[256] = "";

	if (geteuid() != 0) {
		skip();
		return;
	}
	/* Open every filesystem fence: only the daemon's own check is left. */
	assert_int_equal(chmod(home, 0711), 0);
	assert_int_equal(chmod(sock, 0666), 0);
	assert_int_equal(pipe(p), 0);
	pid = fork();
	if (pid == 0) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		int fd;
		ssize_t n;

		close(p[0]);
		if (setgid(65534) || setuid(65534))
			_exit(2);
		strcpy(sun.sun_path, sock);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
			_exit(3);
		n = read(fd, buf, sizeof(buf) - 1);
		if (n > 0 && write(p[1], buf, (size_t)n) < 0)
			_exit(4);
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], buf, sizeof(buf) - 1) < 0)
		buf[0] = '\0';
	close(p[0]);
	waitpid(pid, &st, 0);
	chmod(sock, 0600);
	chmod(home, 0700);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_non_null(strstr(buf, "\"event\":\"error\""));
	assert_non_null(strstr(buf, "permission denied"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_socket_mode),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_status_address),
		cmocka_unit_test(test_connect_send_recv),
		cmocka_unit_test(test_subscribe_events),
		cmocka_unit_test(test_listen_accept),
		cmocka_unit_test(test_errors_and_ownership),
		cmocka_unit_test(test_netcat_helper),
		cmocka_unit_test(test_raw_lines),
		cmocka_unit_test(test_peer_credentials),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
