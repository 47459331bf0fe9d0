#!/usr/bin/env bash
# `warpgate daemon` as a process: the first stdout line, the socket (mode 0600, custom path,
# stale and foreign files, a second daemon), status through it, SIGHUP reloads (changed,
# unchanged and broken configuration), SIGTERM (exit 0, socket removed, key kept), and the
# commands that fall back to their own node when no daemon runs.
# The protocol itself is tested by test_daemon (C, through warpgate/control.h).
source "$(dirname "$0")/../lib/tap.sh"
W=$WARP_BUILD/bin/warpgate
[ -x "$W" ] || skip_all "no $W (build first)"
tmp=$(mktemp -d /tmp/wpg-daemon.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
export WARPGATE_HOME=$tmp/home
mkdir -p "$WARPGATE_HOME"
not() { ! "$@"; }
first_line() {
	local f=$1 pid=$2 i
	for i in $(seq 200); do
		[ -s "$f" ] && { head -n 1 "$f"; return 0; }
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
# A JSON integer field of the daemon's status (with a config of its own: the one in the
# home directory is broken on purpose below).
echo '{}' >"$tmp/empty.json"
status_int() {
	"$W" status --json --config "$tmp/empty.json" | sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" |
		head -n 1
}
wait_for() { # seconds command...
	local n=$(($1 * 20))
	shift
	while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.05; n=$((n - 1)); done
	return 1
}

# ---- no daemon: status runs a short-lived node
out=$("$W" status --test-mode --json)
check "status without a daemon: daemon.running false" \
	grep -q '"running": false' <<<"$out"
check "status without a daemon: no pipes" grep -q '"pipes": \[\]' <<<"$out"
out=$("$W" status --test-mode --socket "$tmp/none.sock" 2>&1)
check "status --socket to nothing: exit 1, says so" \
	[ $? = 1 ] && grep -q "no daemon at $tmp/none.sock" <<<"$out"

# ---- start, with the configuration in $WARPGATE_HOME/config.json
echo '{"test_mode": true, "name": "alice"}' >"$WARPGATE_HOME/config.json"
"$W" daemon >"$tmp/d.out" 2>"$tmp/d.err" &
dpid=$!
pids+=($dpid)
addr=$(first_line "$tmp/d.out" $dpid)
check "daemon prints its address first" grep -q '^wg1\.' <<<"$addr"
sock=$WARPGATE_HOME/control.sock
check "control socket exists, mode 0600" [ -S "$sock" -a "$(stat -c %a "$sock")" = 600 ]
check "identity key file created 0600" [ "$(stat -c %a "$WARPGATE_HOME/alice.json")" = 600 ]
out=$("$W" status --json)
check "status through the daemon: running, pid" \
	grep -q '"running": true' <<<"$out" && grep -q "\"pid\": $dpid" <<<"$out"
check "status through the daemon: identity alice, config path" \
	grep -q '"name": "alice"' <<<"$out" && grep -q "\"config\": \"$WARPGATE_HOME/config.json\"" <<<"$out"
out=$("$W" status)
check "status text names the daemon and the identity" \
	grep -q "^daemon *running, pid $dpid" <<<"$out" && grep -q "^identity *alice 0[23]" <<<"$out"

out=$("$W" daemon 2>&1)
check "a second daemon on the same socket: exit 1" [ $? = 1 ] && grep -q "already serves" <<<"$out"

# ---- SIGHUP: unchanged, changed, broken
kill -HUP $dpid
check "SIGHUP with the same settings: reload counted, no node restart" \
	wait_for 5 test "$(status_int reloads)" = 1
check "... node_restarts still 0" [ "$(status_int node_restarts)" = 0 ]
port0=$(status_int port)
echo '{"test_mode": true, "name": "alice", "idle_timeout_ms": 60000}' >"$WARPGATE_HOME/config.json"
kill -HUP $dpid
check "SIGHUP with changed settings restarts the node" \
	wait_for 5 test "$(status_int node_restarts)" = 1
check "the identity survives the restart" grep -q '"name": "alice"' <<<"$("$W" status --json)"
echo '{"test_mode": true, "nmae": "x"}' >"$WARPGATE_HOME/config.json"
kill -HUP $dpid
check "SIGHUP with a broken file: the error names file and key" \
	wait_for 5 grep -q 'config.json: \$.nmae: unknown key' "$tmp/d.err"
check "... and the daemon keeps running the old configuration" \
	[ "$(status_int node_restarts)" = 1 ] && kill -0 $dpid
echo '{"test_mode": true, "name": "alice"}' >"$WARPGATE_HOME/config.json"

# ---- SIGTERM
kill -TERM $dpid
wait $dpid
rc=$?
check "SIGTERM: exit 0" [ $rc = 0 ]
check "SIGTERM: socket removed, identity kept" [ ! -e "$sock" -a -f "$WARPGATE_HOME/alice.json" ]
check "no sanitizer reports" not grep -q "Sanitizer\|runtime error" "$tmp/d.err"

# ---- a stale socket (daemon killed hard) is replaced; a foreign file is not
"$W" daemon >"$tmp/d2.out" 2>"$tmp/d2.err" &
dpid=$!
pids+=($dpid)
first_line "$tmp/d2.out" $dpid >/dev/null
kill -KILL $dpid
wait $dpid 2>/dev/null
check "killed daemon leaves its socket" [ -S "$sock" ]
"$W" daemon >"$tmp/d3.out" 2>"$tmp/d3.err" &
dpid=$!
pids+=($dpid)
serves() { first_line "$@" >/dev/null; }
check "a new daemon replaces the stale socket" serves "$tmp/d3.out" $dpid
kill $dpid
wait $dpid
check "... and exits 0 on SIGTERM" [ $? = 0 ]
touch "$tmp/file"
out=$("$W" daemon --socket "$tmp/file" 2>&1)
check "--socket on a regular file: refused, file untouched" \
	[ $? = 1 ] && grep -q "not a socket" <<<"$out" && [ -f "$tmp/file" ]
long=$tmp/$(printf 'x%.0s' $(seq 120)).sock
out=$("$W" daemon --socket "$long" 2>&1)
check "--socket longer than sun_path: usage error" [ $? = 2 ] && grep -q "longer than" <<<"$out"

# ---- custom socket path
"$W" daemon --socket "$tmp/ctl.sock" >"$tmp/d4.out" 2>"$tmp/d4.err" &
dpid=$!
pids+=($dpid)
first_line "$tmp/d4.out" $dpid >/dev/null
check "--socket PATH serves there" [ -S "$tmp/ctl.sock" -a ! -e "$sock" ]
check "status --socket PATH reaches it" \
	grep -q '"running": true' <<<"$("$W" status --json --socket "$tmp/ctl.sock")"
check "status without --socket does not find it" \
	grep -q '"running": false' <<<"$("$W" status --json)"
kill $dpid
wait $dpid

# ---- bad flags and configuration
out=$("$W" daemon --bogus 2>&1)
check "daemon --bogus: exit 2" [ $? = 2 ] && grep -q "unrecognized option" <<<"$out"
out=$("$W" daemon extra 2>&1)
check "daemon with an argument: exit 2" [ $? = 2 ] && grep -q "unexpected argument 'extra'" <<<"$out"
out=$("$W" daemon --name 'bad/name' 2>&1)
check "daemon --name bad/name: exit 2" [ $? = 2 ] && grep -q "invalid --name" <<<"$out"
echo '{"port": "x"}' >"$tmp/bad.json"
out=$("$W" daemon --config "$tmp/bad.json" 2>&1)
check "daemon with a bad config: exit 3 naming the key" \
	[ $? = 3 ] && grep -q 'bad.json: \$.port: expected an integer' <<<"$out"
out=$("$W" daemon --help)
check "daemon --help: exit 0, mentions SIGHUP" [ $? = 0 ] && grep -q SIGHUP <<<"$out"
tap_done
