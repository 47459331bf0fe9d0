// SPDX-License-Identifier: MIT
/*
 * JSON output of the CLI, checked against the schemas in docs/cli.md with a real parser:
 * `id --json`, `addr --json` (own and --decode), `connect --json` (success, failure),
 * `status --json` (short-lived node; the daemon's is checked by test_daemon), and the
 * first lines of `expose --json` and `forward --json`.  Every command runs as the real
 * binary in test mode, in a temporary $WARPGATE_HOME.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

static char home[64] = "/tmp/wpg-clijson.XXXXXX";
static char bin[4096];

enum kind { T_STR, T_INT, T_NUM, T_BOOL, T_OBJ, T_ARR, T_STR_OR_OBJ, T_STR_OR_ARR };

struct field {
	const char *key;
	enum kind kind;
	bool nullable;
};

#define F(k, t)             \
	{                   \
		k, t, false \
	}
#define FN(k, t)           \
	{                  \
		k, t, true \
	} /* may be null */
#define END                        \
	{                          \
		NULL, T_STR, false \
	}

static bool is_kind(json_t *v, enum kind k)
{
	switch (k) {
	case T_STR:
		return json_is_string(v);
	case T_INT:
		return json_is_integer(v);
	case T_NUM:
		return json_is_number(v);
	case T_BOOL:
		return json_is_boolean(v);
	case T_OBJ:
		return json_is_object(v);
	case T_ARR:
		return json_is_array(v);
	case T_STR_OR_OBJ:
		return json_is_string(v) || json_is_object(v);
	case T_STR_OR_ARR:
		return json_is_string(v) || json_is_array(v);
	}
	return false;
}

/* Every listed key present with its type; no other keys unless extra is true. */
static void schema(json_t *o, const char *what, const struct field *f, bool extra)
{
	size_t n = 0;

	if (!json_is_object(o))
		fail_msg("%s: not a JSON object", what);
	for (; f->key; f++, n++) {
		json_t *v = json_object_get(o, f->key);

		if (!v)
			fail_msg("%s: missing \"%s\"", what, f->key);
		if (json_is_null(v) && f->nullable)
			continue;
		if (!is_kind(v, f->kind))
			fail_msg("%s: \"%s\" has the wrong type", what, f->key);
	}
	if (!extra && json_object_size(o) != n)
		fail_msg("%s: %zu keys, expected %zu", what, json_object_size(o), n);
}

static bool hex66(json_t *v)
{
	const char *s = json_string_value(v);

	return s && strlen(s) == 66 && strspn(s, "0123456789abcdef") == 66 &&
	       (s[1] == '2' || s[1] == '3') && s[0] == '0';
}

/* Runs the CLI, returns its stdout (malloc'd) and exit code. */
static char *run(int *rc, const char *fmt, ...)
{
	char cmd[8192], *out = NULL;
	size_t len = 0;
	va_list ap;
	FILE *f;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	f = popen(cmd, "r");
	assert_non_null(f);
	for (;;) {
		char buf[4096];
		size_t n = fread(buf, 1, sizeof(buf), f);
		char *nb;

		if (!n)
			break;
		nb = realloc(out, len + n + 1);
		assert_non_null(nb);
		out = nb;
		memcpy(out + len, buf, n);
		len += n;
	}
	st = pclose(f);
	*rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	if (!out)
		out = strdup("");
	else
		out[len] = '\0';
	return out;
}

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);

	if (!j)
		fail_msg("not JSON (%s): %.200s", e.text, text);
	return j;
}

/* A long-running command; returns its first stdout line. */
struct proc {
	pid_t pid;
	FILE *out;
};

static void spawn(struct proc *p, char *line, size_t len, const char *fmt, ...)
{
	char cmd[8192];
	int fds[2];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(pipe(fds), 0);
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(fds[1], STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		close(fds[0]);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	p->out = fdopen(fds[0], "r");
	assert_non_null(fgets(line, (int)len, p->out));
	line[strcspn(line, "\n")] = '\0';
}

static void reap(struct proc *p)
{
	kill(p->pid, SIGTERM);
	waitpid(p->pid, NULL, 0);
	fclose(p->out);
}

static int setup(void **state)
{
	const char *b = getenv("WARP_BUILD");

	snprintf(bin, sizeof(bin), "exec %s/bin/warpgate", b ? b : "build");
	if (access(bin + 5, X_OK) || !mkdtemp(home))
		return -1;
	setenv("WARPGATE_HOME", home, 1);
	unsetenv("WARPGATE_CONFIG");
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", home);
	return system(cmd) ? -1 : 0;
}

static void test_id(void **state)
{
	static const struct field f[] = { F("name", T_STR), F("public_key", T_STR),
					  F("key_file", T_STR), F("created", T_BOOL), END };
	int rc;
	char *out = run(&rc, "%s id --name carol --json", bin);
	json_t *j = parse(out);

	assert_int_equal(rc, 0);
	schema(j, "id --json", f, false);
	assert_true(hex66(json_object_get(j, "public_key")));
	assert_true(json_is_true(json_object_get(j, "created")));
	json_decref(j);
	free(out);
	out = run(&rc, "%s id --name carol --json", bin);
	j = parse(out);
	assert_true(json_is_false(json_object_get(j, "created")));
	json_decref(j);
	free(out);
}

static const struct field addr_fields[] = { F("version", T_INT),
					    F("pubkey", T_STR),
					    FN("machine", T_STR),
					    F("created_ms", T_INT),
					    F("routes", T_ARR),
					    F("hints", T_ARR),
					    END };
static const struct field route_fields[] = {
	F("family", T_INT),	F("if_id", T_INT),	  F("nic", T_STR),
	F("prefix_len", T_INT), FN("ext", T_STR),	  F("tcp_port", T_INT),
	F("udp_port", T_INT),	F("ext_tcp_port", T_INT), F("ext_udp_port", T_INT),
	F("nat", T_STR),	F("mapping", T_STR),	  F("filtering", T_STR),
	F("delta", T_OBJ),	F("flags", T_ARR),	  END
};

static void check_addr(json_t *j, const char *what)
{
	json_t *r;
	size_t i;

	schema(j, what, addr_fields, true);
	assert_true(hex66(json_object_get(j, "pubkey")));
	assert_true(json_array_size(json_object_get(j, "routes")) > 0);
	json_array_foreach(json_object_get(j, "routes"), i, r) {
		schema(r, "route", route_fields, true);
	}
}

static void test_addr(void **state)
{
	int rc;
	char *out = run(&rc, "%s addr --test-mode --json", bin), *text;
	json_t *j = parse(out);

	assert_int_equal(rc, 0);
	check_addr(j, "addr --json");
	json_decref(j);
	free(out);
	text = run(&rc, "%s addr --test-mode", bin);
	text[strcspn(text, "\n")] = '\0';
	out = run(&rc, "%s addr --decode '%s' --json", bin, text);
	j = parse(out);
	assert_int_equal(rc, 0);
	check_addr(j, "addr --decode --json");
	json_decref(j);
	free(out);
	free(text);
}

static const struct field connect_fields[] = { F("connected", T_BOOL), FN("strategy", T_STR),
					       FN("path", T_STR),      F("ms", T_NUM),
					       F("attempts", T_ARR),   END };
static const struct field attempt_fields[] = { F("strategy", T_STR), F("transport", T_STR),
					       FN("family", T_INT),  F("route", T_STR),
					       F("endpoint", T_STR), F("outcome", T_STR),
					       F("reason", T_STR),   F("start_ms", T_NUM),
					       F("end_ms", T_NUM),   END };

static void test_connect(void **state)
{
	struct proc l;
	char addr[2048], *out;
	json_t *j, *a;
	size_t i;
	int rc, won = 0;

	spawn(&l, addr, sizeof(addr), "%s listen --test-mode --echo", bin);
	out = run(&rc, "%s connect --test-mode '%s' --send hi --json", bin, addr);
	j = parse(out);
	assert_int_equal(rc, 0);
	schema(j, "connect --json", connect_fields, true);
	assert_true(json_is_true(json_object_get(j, "connected")));
	assert_string_equal(json_string_value(json_object_get(j, "reply")), "echo:hi");
	json_array_foreach(json_object_get(j, "attempts"), i, a) {
		schema(a, "attempt", attempt_fields, false);
		won += !strcmp(json_string_value(json_object_get(a, "outcome")), "won");
	}
	assert_int_equal(won, 1);
	json_decref(j);
	free(out);
	reap(&l);
	/* The same peer, gone: connected false, an error, every attempt with a reason. */
	out = run(&rc, "%s connect --test-mode '%s' --timeout 1500 --json", bin, addr);
	j = parse(out);
	assert_int_equal(rc, 1);
	schema(j, "connect --json (failed)", connect_fields, true);
	assert_true(json_is_false(json_object_get(j, "connected")));
	assert_true(json_is_null(json_object_get(j, "strategy")));
	assert_true(json_is_string(json_object_get(j, "error")));
	json_array_foreach(json_object_get(j, "attempts"), i, a) {
		schema(a, "attempt", attempt_fields, false);
		assert_true(strlen(json_string_value(json_object_get(a, "reason"))) > 0);
	}
	json_decref(j);
	free(out);
}

static void test_status(void **state)
{
	static const struct field top[] = { F("schema", T_INT),
					    F("version", T_STR),
					    F("daemon", T_OBJ),
					    F("identity", T_OBJ),
					    F("node", T_OBJ),
					    F("interfaces", T_ARR),
					    F("nat", T_STR_OR_ARR),
					    F("clock", T_STR_OR_OBJ),
					    F("port_mappings", T_STR_OR_ARR),
					    F("brokers", T_ARR),
					    F("stun", T_ARR),
					    F("names", T_ARR),
					    F("bpf", T_STR_OR_OBJ),
					    F("pipes", T_ARR),
					    F("forwards", T_ARR),
					    F("exposes", T_ARR),
					    END };
	static const struct field ident[] = { FN("name", T_STR), F("public_key", T_STR),
					      F("ephemeral", T_BOOL), END };
	static const struct field node[] = { F("port", T_INT), F("test_mode", T_BOOL),
					     F("address", T_STR), END };
	static const struct field iface[] = {
		F("name", T_STR),	    F("index", T_INT), F("up", T_BOOL),
		F("loopback", T_BOOL),	    F("mtu", T_INT),   F("addresses", T_ARR),
		F("default_route", T_BOOL), F("used", T_BOOL), END
	};
	static const struct field names[] = { F("name", T_STR), F("tld", T_STR), F("state", T_STR),
					      END };
	static const struct field server[] = { F("server", T_STR), F("state", T_STR), END };
	int rc;
	char *out = run(&rc,
			"%s status --test-mode --json --name dave --stun 127.0.0.1:3478 "
			"--mqtt 127.0.0.1:1883",
			bin);
	json_t *j = parse(out), *e;
	size_t i;
	bool lo = false;

	assert_int_equal(rc, 0);
	schema(j, "status --json", top, true);
	assert_int_equal(json_integer_value(json_object_get(j, "schema")), 1);
	assert_true(json_is_false(json_object_get(json_object_get(j, "daemon"), "running")));
	schema(json_object_get(j, "identity"), "identity", ident, false);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(j, "identity"), "name")), "dave");
	assert_true(hex66(json_object_get(json_object_get(j, "identity"), "public_key")));
	schema(json_object_get(j, "node"), "node", node, false);
	json_array_foreach(json_object_get(j, "interfaces"), i, e) {
		schema(e, "interface", iface, false);
		lo |= json_is_true(json_object_get(e, "loopback")) &&
		      json_is_true(json_object_get(e, "used"));
	}
	assert_true(lo); /* test mode uses loopback */
	json_array_foreach(json_object_get(j, "names"), i, e) {
		schema(e, "names[]", names, false);
	}
	assert_int_equal(json_array_size(json_object_get(j, "brokers")), 1);
	json_array_foreach(json_object_get(j, "brokers"), i, e) {
		schema(e, "brokers[]", server, false);
	}
	json_array_foreach(json_object_get(j, "stun"), i, e) {
		schema(e, "stun[]", server, false);
	}
	/* Nothing integrated yet must say so, not pretend. */
	if (json_is_string(json_object_get(j, "bpf")))
		assert_non_null(strstr(json_string_value(json_object_get(j, "bpf")), "off"));
	assert_int_equal(json_array_size(json_object_get(j, "pipes")), 0);
	json_decref(j);
	free(out);
}

static void test_expose_forward_first_lines(void **state)
{
	static const struct field ex[] = { F("address", T_STR), F("public_key", T_STR),
					   F("exposed", T_ARR), F("daemon", T_BOOL), END };
	static const struct field rule[] = { F("host", T_STR), F("port", T_INT),
					     F("allow", T_STR_OR_ARR), END };
	static const struct field fw[] = { F("listen", T_STR),
					   F("target", T_STR),
					   F("host", T_STR),
					   F("port", T_INT),
					   F("peer", T_STR),
					   F("daemon", T_BOOL),
					   END };
	struct proc e, f;
	char line[4096], addr[2048];
	json_t *j, *r;
	size_t i;
	int rc;
	char *key = run(&rc, "%s id --name erin", bin);

	key[strcspn(key, "\n")] = '\0';
	spawn(&e, line, sizeof(line), "%s expose --test-mode --json 8080 '[::1]:9090' --allow %s",
	      bin, key);
	j = parse(line);
	schema(j, "expose --json", ex, false);
	assert_true(json_is_false(json_object_get(j, "daemon")));
	assert_int_equal(json_array_size(json_object_get(j, "exposed")), 2);
	json_array_foreach(json_object_get(j, "exposed"), i, r) {
		schema(r, "exposed[]", rule, false);
	}
	r = json_array_get(json_object_get(j, "exposed"), 1);
	assert_string_equal(json_string_value(json_object_get(r, "host")), "::1");
	assert_string_equal(json_string_value(json_array_get(json_object_get(r, "allow"), 0)), key);
	snprintf(addr, sizeof(addr), "%s", json_string_value(json_object_get(j, "address")));
	json_decref(j);
	spawn(&f, line, sizeof(line),
	      "%s forward --test-mode --name erin --json '%s' 0:localhost:8080", bin, addr);
	j = parse(line);
	schema(j, "forward --json", fw, false);
	assert_string_equal(json_string_value(json_object_get(j, "host")), "127.0.0.1");
	assert_true(hex66(json_object_get(j, "peer")));
	json_decref(j);
	reap(&f);
	reap(&e);
	free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_id),
		cmocka_unit_test(test_addr),
		cmocka_unit_test(test_connect),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_expose_forward_first_lines),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
