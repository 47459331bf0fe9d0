#!/usr/bin/env bash
# Relay -> direct upgrade under a live pipe.  The two sites cannot reach each other directly
# (blocked on the internet bridge; the servers stay reachable), so the pipe starts on TURN;
# once the block is lifted the same pipe moves to a direct path, and a stream of numbered
# messages sent across the move arrives exactly once and in order.
source "$(dirname "$0")/../lib/tap.sh"
source "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup
W=$WARP_BUILD/bin/warpgate
tmp=$(mktemp -d /tmp/wpg-upg.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do stop_pid "$p"; done; natlab_cleanup; rm -rf "$tmp"; }
trap cleanup EXIT

lab up port-restricted port-restricted >"$tmp/up.log" 2>&1 ||
	{ cat "$tmp/up.log"; skip_all "natlab up failed"; }
labenv
C=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" --ntp "$WPG_NTP" --mqtt "$WPG_MQTT1" --mqtt "$WPG_MQTT2"
	--no-upnp --turn "$WPG_TURN_USER:$WPG_TURN_PASS@$WPG_TURN")
r1=$WPG_R1_PUBLIC r2=$WPG_R2_PUBLIC

block() { # the two sites cannot talk to each other directly (servers stay reachable)
	in_ns inet nft -f - <<EOT
table bridge wpgtest {
	chain filter {
		type filter hook forward priority 0; policy accept;
		ip saddr $r1 ip daddr $r2 drop
		ip saddr $r2 ip daddr $r1 drop
	}
}
EOT
}
unblock() { in_ns inet nft delete table bridge wpgtest; }

start_alice() {
	: >"$tmp/alice.out"
	bg_ns h1a env WARPGATE_HOME="$tmp/alice" WARPGATE_LOG=info "$W" listen alice --echo \
		"${C[@]}" >"$tmp/alice.out" 2>"$tmp/alice.err"
	pids+=("$BG_PID")
	for _ in $(seq 150); do [ -s "$tmp/alice.out" ] && break; sleep 0.1; done
	addr=$(head -n 1 "$tmp/alice.out")
}

# numbers N EVERY_S [ACTION_AT ACTION]: prints 1..N, one per EVERY_S seconds, runs ACTION
# before number ACTION_AT
numbers() {
	local n=$1 every=$2 at=${3:-0} action=${4:-true} i
	for ((i = 1; i <= n; i++)); do
		[ "$i" = "$at" ] && $action
		echo "$i"
		sleep "$every"
	done
	sleep 3
}

# All of 1..N, once each, in order.  The connector sends what it reads from stdin as it comes
# (lines typed before the pipe is up go as one message) and the listener echoes each message
# with an "echo:" prefix, so the prefixes say nothing about the line count.
expect_all() {
	[ "$(sed 's/^echo://' "$2")" = "$(seq "$1")" ]
}


block
start_alice
check "alice listens" grep -q '^wg1\.' <<<"$addr"
numbers 60 0.1 20 unblock | in_ns h2a env WARPGATE_HOME="$tmp/bob" WARPGATE_LOG=info \
	timeout 60 "$W" connect "$addr" "${C[@]}" >"$tmp/up.out" 2>"$tmp/up.err"
check "the pipe started on the relay" grep -q "connected by turn" "$tmp/up.err"
check "then moved to a direct path" grep -q "pipe moves .*(direct)" "$tmp/up.err"
check "alice moved too" grep -q "pipe moves .*(direct)" "$tmp/alice.err"
check "60 numbered messages across the move: each once, in order" expect_all 60 "$tmp/up.out"
stop_pid "${pids[-1]}"

tap_done
