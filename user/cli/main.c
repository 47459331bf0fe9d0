// SPDX-License-Identifier: MIT
/* warpgate: subcommand dispatch, global help and version. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warpgate/log.h>

#include "cli/cli.h"

static struct cli_command *commands;

void cli_register(struct cli_command *cmd)
{
	struct cli_command **p = &commands;

	/* Keep the list sorted so help output is stable. */
	while (*p && strcmp((*p)->name, cmd->name) < 0)
		p = &(*p)->next;
	cmd->next = *p;
	*p = cmd;
}

const struct cli_command *cli_find(const char *name)
{
	for (struct cli_command *c = commands; c; c = c->next)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

void cli_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "warpgate%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void cli_usage(const struct cli_command *cmd, FILE *out)
{
	fprintf(out, "usage: warpgate %s %s\n\n%s\n", cmd->name, cmd->usage ? cmd->usage : "",
		cmd->summary);
	if (cmd->help)
		fprintf(out, "\n%s", cmd->help);
}

static void global_usage(FILE *out)
{
	fprintf(out, "usage: warpgate COMMAND [OPTIONS]\n\n"
		     "Authenticated, encrypted pipes between Linux hosts, by name, through NATs.\n\n"
		     "commands:\n");
	for (struct cli_command *c = commands; c; c = c->next)
		fprintf(out, "  %-10s %s\n", c->name, c->summary);
	fprintf(out, "\nRun 'warpgate COMMAND --help' for a command's options.\n"
		     "Exit codes: 0 ok, 1 failed, 2 usage, 3 config, 4 system error.\n");
}

int main(int argc, char **argv)
{
	const struct cli_command *cmd;
	static char prog[64];

	if (argc < 2) {
		global_usage(stderr);
		return CLI_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		if (argc > 2 && (cmd = cli_find(argv[2]))) {
			cli_usage(cmd, stdout);
			return CLI_OK;
		}
		global_usage(stdout);
		return CLI_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("warpgate %s\n", WARP_VERSION);
		return CLI_OK;
	}
	cmd = cli_find(argv[1]);
	if (!cmd) {
		cli_error(NULL, "unknown command '%s' (see 'warpgate --help')", argv[1]);
		return CLI_USAGE;
	}
	/* getopt prefixes its messages with argv[0]: make it "warpgate CMD". */
	snprintf(prog, sizeof(prog), "warpgate %s", cmd->name);
	argv[1] = prog;
	return cmd->run(argc - 1, argv + 1);
}
