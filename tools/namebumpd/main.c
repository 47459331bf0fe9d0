// SPDX-License-Identifier: MIT
/*
 * namebumpd: the nickname server.  See namebumpd(8) and docs/protocol-names.md.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include <warpgate/error.h>
#include <warpgate/log.h>

#define LOG_COMPONENT "namebumpd"
#include "core/log.h"
#include "core/util.h"
#include "name/proto.h"
#include "nbd.h"
#include "net.h"

enum {
	OPT_PRINT_KEY = 256,
	OPT_CLOCK_OFFSET,
	OPT_RATE,
	OPT_LOG,
	OPT_VERSION,
};

static const struct option long_opts[] = {
	{ "listen", required_argument, NULL, 'l' },
	{ "db", required_argument, NULL, 'd' },
	{ "key", required_argument, NULL, 'k' },
	{ "config", required_argument, NULL, 'c' },
	{ "threads", required_argument, NULL, 't' },
	{ "print-key", no_argument, NULL, OPT_PRINT_KEY },
	{ "rate", required_argument, NULL, OPT_RATE },
	{ "log-level", required_argument, NULL, OPT_LOG },
	{ "test-clock-offset", required_argument, NULL, OPT_CLOCK_OFFSET },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: namebumpd [options]\n"
		"  -l, --listen HOST:PORT  UDP and TCP address to serve (repeatable;\n"
		"                          default 0.0.0.0:%d and [::]:%d)\n"
		"  -d, --db PATH           SQLite database (default namebumpd.db)\n"
		"  -k, --key PATH          server key, created 0600 if missing (default "
		"namebumpd.key)\n"
		"      --print-key         print the server public key (hex) and exit\n"
		"  -c, --config FILE       JSON configuration (see namebumpd(8))\n"
		"  -t, --threads N         worker threads (default 2)\n"
		"      --rate R            requests per second per IPv4 address or IPv6 /64 (0: "
		"off)\n"
		"      --log-level LEVEL   debug, info, warn, error\n"
		"      --version\n"
		"  -h, --help\n",
		WARP_NAME_PORT, WARP_NAME_PORT);
}

static int parse_int(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || !*s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static void log_stats(const struct nb_shared *sh)
{
	const struct nb_stats *s = &sh->stats;

	pr_info("stats: rx %lu tx %lu get %lu put %lu del %lu ok %lu err %lu rate-limited %lu "
		"truncated %lu dropped %lu bumped %lu sealed %lu verify %lu batches %lu",
		(unsigned long)s->rx, (unsigned long)s->tx, (unsigned long)s->get,
		(unsigned long)s->put, (unsigned long)s->del, (unsigned long)s->ok,
		(unsigned long)s->err, (unsigned long)s->rate_limited, (unsigned long)s->truncated,
		(unsigned long)s->dropped, (unsigned long)s->bumped, (unsigned long)s->sealed,
		(unsigned long)s->verify, (unsigned long)s->batches);
}

int main(int argc, char **argv)
{
	static struct nb_config cfg;
	struct nb_shared sh = { 0 };
	struct nb_server *srv = NULL;
	const char *config = NULL;
	bool print_key = false, listen_cli = false, created;
	char hex[2 * WARP_PUBKEY_LEN + 1];
	sigset_t sigs;
	long long v;
	int opt, sig, rc = 1, err;

	nb_config_defaults(&cfg);
	if (!getenv("WARPGATE_LOG"))
		warp_log_set_level(WARP_LOG_INFO); /* a daemon says what it serves */
	/* the config file first, so the command line overrides it */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c"))
			config = i + 1 < argc ? argv[i + 1] : NULL;
		else if (!strncmp(argv[i], "--config=", 9))
			config = argv[i] + 9;
	}
	if (config && nb_config_load(&cfg, config))
		return 2;
	while ((opt = getopt_long(argc, argv, "l:d:k:c:t:h", long_opts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			/* command-line addresses replace the config file's */
			if (!listen_cli) {
				cfg.n_listen = 0;
				listen_cli = true;
			}
			if (cfg.n_listen == NB_MAX_LISTEN ||
			    strlen(optarg) >= sizeof(cfg.listen[0])) {
				fprintf(stderr, "namebumpd: too many or too long --listen\n");
				return 2;
			}
			snprintf(cfg.listen[cfg.n_listen++], sizeof(cfg.listen[0]), "%s", optarg);
			break;
		case 'd':
			snprintf(cfg.db, sizeof(cfg.db), "%s", optarg);
			break;
		case 'k':
			snprintf(cfg.key, sizeof(cfg.key), "%s", optarg);
			break;
		case 'c':
			break;
		case 't':
			if (parse_int(optarg, 1, NB_MAX_THREADS, &v)) {
				fprintf(stderr, "namebumpd: --threads must be 1..%d\n",
					NB_MAX_THREADS);
				return 2;
			}
			cfg.threads = (int)v;
			break;
		case OPT_PRINT_KEY:
			print_key = true;
			break;
		case OPT_RATE:
			cfg.rate = strtod(optarg, NULL);
			break;
		case OPT_LOG:
			err = warp_log_level_parse(optarg);
			if (err < 0) {
				fprintf(stderr, "namebumpd: bad log level %s\n", optarg);
				return 2;
			}
			warp_log_set_level((enum warp_log_level)err);
			break;
		case OPT_CLOCK_OFFSET:
			if (parse_int(optarg, -(1ll << 50), 1ll << 50, &v)) {
				fprintf(stderr, "namebumpd: bad clock offset\n");
				return 2;
			}
			cfg.clock_offset_ms = v;
			break;
		case OPT_VERSION:
			printf("namebumpd %s\n", WARP_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "namebumpd: unexpected argument %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!cfg.n_listen) {
		snprintf(cfg.listen[0], sizeof(cfg.listen[0]), "0.0.0.0:%d", WARP_NAME_PORT);
		snprintf(cfg.listen[1], sizeof(cfg.listen[1]), "[::]:%d", WARP_NAME_PORT);
		cfg.n_listen = 2;
	}
	if (nb_config_check(&cfg))
		return 2;
	if (warp_crypto_init())
		return 1;
	sh.cfg = &cfg;
	sh.key = nb_key_load(cfg.key, true, &created);
	if (!sh.key) {
		fprintf(stderr, "namebumpd: server key %s: %s\n", cfg.key, warp_strerror(errno));
		return 1;
	}
	warp_hex_encode(hex, warp_identity_pubkey(sh.key), WARP_PUBKEY_LEN);
	if (print_key) {
		printf("%s\n", hex);
		rc = 0;
		goto out;
	}
	wn_signer_init(&sh.signer, sh.key);
	if (created)
		pr_info("created server key %s", cfg.key);
	pr_info("signatures: %s", wn_sig_backend());
	pr_info("server public key %s", hex);
	if (cfg.clock_offset_ms)
		pr_warn("testing: clock offset %lld ms", (long long)cfg.clock_offset_ms);
	sh.ops = &nb_store_sqlite;
	pthread_mutex_init(&sh.write_lock, NULL);
	sh.rl = nb_ratelimit_new(cfg.rate, cfg.burst);
	if (!sh.rl)
		goto out;
	/* signals are taken by sigwait() below; workers inherit the blocked mask */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	srv = nb_server_new(&sh);
	if (!srv)
		goto out;
	err = nb_server_start(srv);
	if (err) {
		pr_err("cannot start workers: %s", warp_strerror(err));
		goto out;
	}
	pr_info("ready (db %s, sync %s, window %lus, lifetime %lus, min age %lus)", cfg.db,
		cfg.sync_full ? "full" : "normal", (unsigned long)(cfg.window_ms / 1000),
		(unsigned long)(cfg.lifetime_ms / 1000), (unsigned long)(cfg.min_age_ms / 1000));
	for (;;) {
		if (sigwait(&sigs, &sig))
			continue;
		if (sig == SIGHUP || sig == SIGUSR1) {
			log_stats(&sh);
			continue;
		}
		pr_info("signal %d: stopping", sig);
		break;
	}
	nb_server_stop(srv);
	log_stats(&sh);
	rc = 0;
out:
	nb_server_free(srv);
	nb_ratelimit_free(sh.rl);
	wn_signer_wipe(&sh.signer);
	warp_identity_free(sh.key);
	if (sh.ops)
		pthread_mutex_destroy(&sh.write_lock);
	return rc;
}
