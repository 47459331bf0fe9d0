/* SPDX-License-Identifier: MIT */
/*
 * The warpgate command line: one binary, subcommands registered by their own files with
 * CLI_COMMAND().  Exit codes (documented in warpgate(1)):
 *   0 success, 1 operation failed (peer unreachable, name not found ...), 2 usage error
 *   (bad flag or argument), 3 configuration error, 4 I/O or system error.
 */
#ifndef WARP_CLI_H
#define WARP_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

enum {
	CLI_OK = 0,
	CLI_FAIL = 1,
	CLI_USAGE = 2,
	CLI_CONFIG = 3,
	CLI_SYSTEM = 4,
};

struct cli_command {
	const char *name;
	const char *summary;
	const char *usage;  /* argument synopsis after the command name */
	const char *help;   /* option list for --help */
	int (*run)(int argc, char **argv);
	struct cli_command *next;
};

void cli_register(struct cli_command *cmd);

#define CLI_COMMAND(var, ...)                                                                      \
	static struct cli_command var = { __VA_ARGS__ };                                           \
	__attribute__((constructor)) static void var##_register(void)                              \
	{                                                                                          \
		cli_register(&var);                                                                \
	}

/* Prints "warpgate CMD: message" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_usage(const struct cli_command *cmd, FILE *out);
const struct cli_command *cli_find(const char *name);

#endif
