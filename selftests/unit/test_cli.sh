#!/usr/bin/env bash
# Every subcommand through the real binary: help and version, exit codes and messages for
# bad flags, bad values, bad arguments and bad configuration (docs/cli.md lists the codes),
# missing servers and unreachable peers.  JSON output is checked by test_cli_json (C).
source "$(dirname "$0")/../lib/tap.sh"
W=$WARP_BUILD/bin/warpgate
[ -x "$W" ] || skip_all "no $W (build first)"
tmp=$(mktemp -d /tmp/wpg-cli.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
export WARPGATE_HOME=$tmp/home
unset WARPGATE_CONFIG

# t EXPECTED-RC PATTERN ARGS...: runs warpgate ARGS, checks the exit code and that the
# combined output matches PATTERN (grep -E).
t() {
	local want=$1 pat=$2 out rc
	shift 2
	out=$(timeout 30 "$W" "$@" 2>&1)
	rc=$?
	if [ "$rc" = "$want" ] && grep -Eq -- "$pat" <<<"$out"; then
		ok "warpgate $* -> $want"
	else
		not_ok "warpgate $* -> $want (got $rc: $(head -c 300 <<<"$out"))"
	fi
}

# Every command the binary lists is exercised below; the ones this suite knows must be there.
commands=$("$W" --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }' | xargs)
known="addr connect daemon expose forward id listen name nat status"

# ---- global
t 2 "usage: warpgate COMMAND" 
t 0 "commands:" --help
t 0 "Exit codes: 0 ok, 1 failed, 2 usage, 3 config, 4 system error" help
t 0 "^warpgate [0-9]+\.[0-9]+\.[0-9]+$" --version
t 2 "unknown command 'frobnicate'" frobnicate
for c in $commands; do
	t 0 "usage: warpgate $c" help "$c"
	t 0 "usage: warpgate $c" "$c" --help
done
missing=
for c in $known; do grep -qw "$c" <<<"$commands" || missing="$missing $c"; done
check "global help lists every known command (${commands})${missing:+ missing:$missing}" [ -z "$missing" ]

# ---- bad flags: exit 2, getopt's message plus a pointer to --help
for c in $commands; do
	t 2 "unrecognized option '--bogus'" "$c" --bogus
done
t 2 "run 'warpgate connect --help'" connect --bogus x
t 2 "requires an argument" addr --port

# ---- bad values of the common options (every node-starting command shares them)
t 2 "--port: 'abc' is not a port number 0-65535" addr --port abc
t 2 "--port: '70000' is not a port number" status --port 70000
t 2 "--log-level: expected debug, info, warn, error or none, not 'loud'" listen --log-level loud
t 2 "--stun: 'bad:xx' is not HOST:PORT" connect --stun bad:xx x
t 2 "--turn: 'nope': expected USER:PASSWORD@HOST:PORT" daemon --turn nope
t 2 "--nameserver: '1.2.3.4:99999' is not HOST:PORT" expose --nameserver 1.2.3.4:99999 80
t 2 "--nameserver-key needs a --nameserver before it" addr --nameserver-key 00
t 2 "--nameserver-key: expected 66 hex digits" addr --nameserver 127.0.0.1:5300 --nameserver-key 00
t 2 "--interface: 'a/b' is not an interface name" forward --interface a/b x 0:h:1
t 2 "--mqtt: 'x:0' is not HOST:PORT" listen --mqtt x:0

# ---- bad values and arguments of each command
t 2 "missing TARGET" connect --test-mode
t 2 "unexpected argument 'y'" connect --test-mode x y
t 2 "--strategy: unknown strategy 'foo'" connect --test-mode --strategy foo x
t 2 "--timeout: expected milliseconds, not 'abc'" connect --test-mode --timeout abc x
t 2 "--reply-timeout: expected milliseconds" connect --test-mode --reply-timeout 0 x
t 2 "invalid --name" connect --test-mode --name ../x x
t 2 "malformed|truncated" connect --test-mode wg1.AAAA
t 2 "--echo and --exec exclude each other" listen --echo --exec cat
t 2 "--count: expected a positive number, not '0'" listen --count 0
t 2 "unexpected argument 'b'" listen a b
t 2 "invalid name 'bad/name'" listen bad/name
t 2 "invalid name '../x'" id --name ../x
t 2 "unexpected argument 'extra'" id extra
t 2 "unexpected argument 'extra'" addr extra
t 2 "unexpected argument 'extra'" status extra
t 2 "invalid --name" status --name ../x
t 2 "invalid --name" expose --name ../x 80
t 2 "invalid --name" forward --name ../x x 0:h:1
t 2 "missing PORT" expose --test-mode
t 2 "expected PORT, HOST:PORT or \[IPV6\]:PORT" expose --test-mode 0
t 2 "expected PORT, HOST:PORT or \[IPV6\]:PORT" expose --test-mode host:
t 2 "is not a public key" expose --test-mode 80 --allow nothex
t 2 "expected TARGET and LOCALPORT:HOST:PORT" forward --test-mode x
t 2 "unexpected argument" forward --test-mode x 1:h:2 extra
t 2 "expected LOCALPORT:HOST:PORT" forward --test-mode x 1:h
t 2 "expected LOCALPORT:HOST:PORT" forward --test-mode x 1:h:0
t 2 "expected LOCALPORT:HOST:PORT" forward --test-mode x a:h:80
t 2 "expected LOCALPORT:HOST:PORT" forward --test-mode x 1:::1:80
t 2 "--timeout: expected milliseconds" forward --test-mode --timeout -5 x 1:h:2
t 2 "--strategy: unknown strategy" forward --test-mode --strategy x x 1:h:2
t 2 "--bind: 'host' is not an IP address" forward --test-mode --bind host x 1:h:2
t 2 "unexpected argument 'x'" daemon --test-mode x
t 2 "invalid --name" daemon --name ../x
t 2 "test mode has no network to classify" nat --test-mode
t 3 "no STUN server configured" nat
t 2 "unexpected argument 'x'" nat --stun 127.0.0.1:3478 x
t 2 "expected put.get.del NAME" name
t 2 "unknown operation 'frob'" name frob x
t 2 "test mode has no nickname servers" name --test-mode get alice

# ---- bad configuration: exit 3, naming the file, the key and what was expected
echo '{"stunn": ["x"]}' >"$tmp/unknown.json"
echo '{"port": 99999}' >"$tmp/range.json"
echo '{"turn": [{"server": "t:3478", "usr": "x"}]}' >"$tmp/nested.json"
echo '{"port": 1,' >"$tmp/syntax.json"
for c in addr connect daemon expose forward listen name nat status; do
	case $c in
	connect) args=(x) ;;
	name) args=(get x) ;;
	expose) args=(80) ;;
	forward) args=(x 0:h:1) ;;
	*) args=() ;;
	esac
	t 3 'unknown.json: \$\.stunn: unknown key' "$c" --config "$tmp/unknown.json" "${args[@]}"
done
t 3 'range.json: \$\.port: 99999 is out of range 0\.\.65535' addr --config "$tmp/range.json"
t 3 'nested.json: \$\.turn\[0\]\.usr: unknown key' status --config "$tmp/nested.json"
t 3 'syntax.json: line [0-9]+' listen --config "$tmp/syntax.json"
t 3 'missing\.json: ' addr --config "$tmp/missing.json"
mkdir -p "$WARPGATE_HOME"
cp "$tmp/unknown.json" "$WARPGATE_HOME/config.json"
t 3 'config\.json: \$\.stunn: unknown key' status
WARPGATE_CONFIG=$tmp/range.json t 3 'range.json: \$\.port' addr
rm "$WARPGATE_HOME/config.json"

# ---- identities
t 1 "identity 'nobody' in .*: No such file or directory" id --name nobody --no-create
t 0 "^0[23][0-9a-f]{64}$" id --name alice
check "the key file is 0600" [ "$(stat -c %a "$WARPGATE_HOME/alice.json")" = 600 ]
chmod 644 "$WARPGATE_HOME/alice.json"
t 1 "alice" id --name alice
chmod 600 "$WARPGATE_HOME/alice.json"
t 1 "cannot decode address" addr --decode garbage

# ---- missing servers, unreachable peers
t 1 "no nickname server configured" connect --test-mode alice
t 1 "no nickname server configured" forward --test-mode alice 0:127.0.0.1:80
"$W" listen --test-mode >"$tmp/l.out" 2>/dev/null &
lpid=$!
pids+=($lpid)
for _ in $(seq 100); do [ -s "$tmp/l.out" ] && break; sleep 0.05; done
gone=$(head -n 1 "$tmp/l.out")
kill $lpid
wait $lpid 2>/dev/null
t 1 "no pipe to the peer" connect --test-mode --timeout 1500 "$gone" --send hi
t 1 "no pipe to" forward --test-mode --timeout 1500 "$gone" 0:127.0.0.1:80
t 1 "no daemon at $tmp/none.sock" status --socket "$tmp/none.sock"
t 1 "no daemon at $tmp/none.sock" expose --socket "$tmp/none.sock" 80
t 1 "no daemon at $tmp/none.sock" forward --socket "$tmp/none.sock" x 0:h:1

# ---- netcat mode against --echo and --exec: nothing lost under backpressure, clean ends
"$W" listen --test-mode --echo >"$tmp/e.out" 2>/dev/null &
epid=$!
pids+=($epid)
for _ in $(seq 100); do [ -s "$tmp/e.out" ] && break; sleep 0.05; done
eaddr=$(head -n 1 "$tmp/e.out")
head -c 16777216 /dev/zero | timeout 60 "$W" connect --test-mode "$eaddr" >"$tmp/e.got" 2>"$tmp/e.err"
rc=$?
# every byte comes back (each message with its "echo:" prefix), then both ends close
check "16 MiB through --echo: every byte back, exit 0 ($rc)" \
	[ "$rc" = 0 ] && [ "$(tr -d 'echo:' <"$tmp/e.got" | wc -c)" = 16777216 ]
check "... each chunk once, prefixed" [ "$(grep -ao 'echo:' "$tmp/e.got" | wc -l)" -ge 1 ]
kill $epid
wait $epid 2>/dev/null
"$W" listen --test-mode --exec 'wc -c' >"$tmp/x.out" 2>/dev/null &
xpid=$!
pids+=($xpid)
for _ in $(seq 100); do [ -s "$tmp/x.out" ] && break; sleep 0.05; done
out=$(head -c 100000 /dev/zero | timeout 30 "$W" connect --test-mode "$(head -n 1 "$tmp/x.out")" 2>&1)
check "--exec 'wc -c': the command sees the end of its input and answers ($out)" \
	[ "$(tr -d ' \n' <<<"$out")" = 100000 ]
kill $xpid
wait $xpid 2>/dev/null
"$W" listen --test-mode --exec 'head -c 20000000 /dev/zero' >"$tmp/x.out" 2>/dev/null &
xpid=$!
pids+=($xpid)
for _ in $(seq 100); do [ -s "$tmp/x.out" ] && break; sleep 0.05; done
# a slow reader: the command's output waits in its own pipe while ours is full
n=$(timeout 60 "$W" connect --test-mode "$(head -n 1 "$tmp/x.out")" </dev/null 2>/dev/null |
	(sleep 1; wc -c))
check "--exec with 20 MB of output and a slow reader: every byte arrives ($n)" [ "$n" = 20000000 ]
kill $xpid
wait $xpid 2>/dev/null

# ---- status and addr in test mode, text form
t 0 "^identity +\(ephemeral\) 0[23]" status --test-mode
t 0 "^bpf +off \(disabled by configuration\)" status --test-mode
t 0 "^daemon +not running" status --test-mode
t 0 "^identity +bob 0[23]" status --test-mode --name bob
t 0 "^wg1\." addr --test-mode

# ---- the manual pages document what exists
man1=$WARP_TOP/docs/man/warpgate.1 man5=$WARP_TOP/docs/man/warpgate.conf.5
missing=
for c in $commands; do
	grep -q "^\.B $c\b" "$man1" || missing="$missing $c"
	for o in $("$W" "$c" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
		grep -qF -- "$(sed 's/-/\\-/g' <<<"$o")" "$man1" || missing="$missing $c:$o"
	done
done
check "warpgate(1) documents every command and option${missing:+ (missing:$missing)}" [ -z "$missing" ]
missing=
for k in $(sed -n 's/.*strcmp(key, "\([a-z_0-9]*\)").*/\1/p' "$WARP_TOP/user/node/config.c"); do
	grep -qE "^\.B(R)? \"?$k\b" "$man5" || missing="$missing $k"
done
check "warpgate.conf(5) documents every configuration key${missing:+ (missing:$missing)}" [ -z "$missing" ]
tap_done
