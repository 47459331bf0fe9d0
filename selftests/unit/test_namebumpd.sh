#!/usr/bin/env bash
# namebumpd command line: options, key file handling, configuration errors, serving and
# stopping, data kept across a restart (with nbload as the client).  Loopback only.
. "$(dirname "$0")/../lib/tap.sh"
nbd=$WARP_BUILD/bin/namebumpd
load=$WARP_BUILD/bin/nbload
[ -x "$nbd" ] && [ -x "$load" ] || skip_all "namebumpd or nbload not built in $WARP_BUILD"
dir=$(mktemp -d /tmp/nbsh.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

check "--help exits 0 and describes --listen" bash -c "'$nbd' --help | grep -q -- --listen"
"$nbd" --bogus >/dev/null 2>&1; check "unknown option exits 2" test $? = 2
"$nbd" --threads 99 >/dev/null 2>&1; check "--threads out of range exits 2" test $? = 2

key1=$("$nbd" --print-key --key "$dir/k" 2>/dev/null)
check "--print-key creates a key and prints 66 hex digits" \
	bash -c "[[ '$key1' =~ ^0[23][0-9a-f]{64}$ ]]"
check "the key file is mode 0600" test "$(stat -c %a "$dir/k")" = 600
key2=$("$nbd" --print-key --key "$dir/k" 2>/dev/null)
check "the same key next time" test "$key1" = "$key2"
cp "$dir/k" "$dir/k644"; chmod 644 "$dir/k644"
"$nbd" --print-key --key "$dir/k644" >/dev/null 2>"$dir/err"; rc=$?
check "a key readable by others is refused" test "$rc" != 0
check "... saying why" grep -q "readable by group or others" "$dir/err"
echo nothex >"$dir/kbad"; chmod 600 "$dir/kbad"
"$nbd" --print-key --key "$dir/kbad" >/dev/null 2>&1
check "a malformed key file is refused" test $? != 0

echo '{"quota_v4": 5, "typo": 1}' >"$dir/c1.json"
"$nbd" --config "$dir/c1.json" --print-key --key "$dir/k" >/dev/null 2>"$dir/err"
check "unknown config key exits 2" test $? = 2
check "... naming it" grep -q '"typo"' "$dir/err"
echo '{"clock_window_s": 600, "min_age_s": 60}' >"$dir/c2.json"
"$nbd" --config "$dir/c2.json" --print-key --key "$dir/k" >/dev/null 2>&1
check "min_age inside the clock window is refused" test $? = 2
echo '{"rate": 0, "quota_v4": 1000' >"$dir/c3.json"
"$nbd" --config "$dir/c3.json" >/dev/null 2>&1
check "broken JSON exits 2" test $? = 2
timeout 5 "$nbd" --listen "300.1.1.1:5" --db "$dir/db" --key "$dir/k" >/dev/null 2>&1; rc=$?
check "a bad listen address fails" test "$rc" != 0 -a "$rc" != 124

echo '{"rate": 0, "quota_v4": 1000}' >"$dir/c.json"
start() {
	: >"$dir/log"
	"$nbd" --listen 127.0.0.1:0 --db "$dir/db" --key "$dir/k" --config "$dir/c.json" \
		>/dev/null 2>"$dir/log" &
	pid=$!
	for _ in $(seq 200); do
		grep -q ": ready (" "$dir/log" && break
		sleep 0.05
	done
	port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$dir/log")
	[ -n "$port" ]
}
check "starts on a random port and logs it" start
check "logs its public key" grep -q "server public key $key1" "$dir/log"
check "50 signed PUTs acknowledged" \
	"$load" --server "127.0.0.1:$port" --op put --count 50 --names 50 -q
check "GETs find all 50" \
	"$load" --server "127.0.0.1:$port" --op get --duration 0.3 --names 50 --window 8 -q
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=
check "SIGTERM stops it cleanly" test "$rc" = 0
check "... logging its counters" grep -q "stats: rx" "$dir/log"
if command -v sqlite3 >/dev/null; then
	check "database at schema version 2" test "$(sqlite3 "$dir/db" 'PRAGMA user_version')" = 2
	check "50 names stored" test "$(sqlite3 "$dir/db" 'SELECT COUNT(*) FROM names')" = 50
else
	skip "database schema version" "no sqlite3 command"
	skip "names stored" "no sqlite3 command"
fi
check "restarts on the same database" start
check "names survive the restart" \
	"$load" --server "127.0.0.1:$port" --op get --duration 0.3 --names 50 --window 8 -q
kill -KILL "$pid"; wait "$pid" 2>/dev/null; pid=
# a wildcard listener answers from the address it was asked on (nbload's connected sockets
# drop answers from any other source)
: >"$dir/log"
"$nbd" --listen 0.0.0.0:0 --db "$dir/db" --key "$dir/k" --config "$dir/c.json" \
	>/dev/null 2>"$dir/log" &
pid=$!
for _ in $(seq 200); do grep -q ": ready (" "$dir/log" && break; sleep 0.05; done
port=$(sed -n 's/.*listening on 0.0.0.0:\([0-9]*\).*/\1/p' "$dir/log")
check "a wildcard listener answers from 127.0.0.2 when asked there" \
	"$load" --server "127.0.0.2:$port" --op get --duration 0.3 --names 50 --window 8 -q
kill -KILL "$pid"; wait "$pid" 2>/dev/null; pid=
tap_done
