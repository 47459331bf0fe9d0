#!/usr/bin/env bash
# Keepalives in the NAT lab.
#  1. Routers forget UDP mappings after 2 s; a pipe idle for 10 s survives because keepalives
#     refresh them every second (control: with 30 s keepalives the idle pipe breaks).
#  2. The listener's process is stopped (SIGSTOP) for 60 s: the kernel (TC program on the
#     veth) answers the connector's keepalives, so the connector's pipe stays up and works
#     after SIGCONT (control: without BPF the connector declares the peer dead).
# WARP_KA_TEST_SECS shortens the 60 s stop when run by hand.
source "$(dirname "$0")/../lib/tap.sh"
source "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup
W=$WARP_BUILD/bin/warpgate
tmp=$(mktemp -d /tmp/wpg-ka.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; stop_pid "$p"; done; natlab_cleanup; rm -rf "$tmp"; }
trap cleanup EXIT
stop_secs=${WARP_KA_TEST_SECS:-60}

lab up --udp-timeout 2 full-cone port-restricted >"$tmp/up.log" 2>&1 ||
	{ cat "$tmp/up.log"; skip_all "natlab up failed"; }
labenv
C=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" --no-upnp)
echo '{"keepalive_ms": 1000}' >"$tmp/ka1.json"
echo '{"keepalive_ms": 30000}' >"$tmp/ka30.json"

# start_alice HOST CONFIG [extra args]: starts alice; sets apid and addr (not in a $(...)
# subshell: the pid must reach this shell)
start_alice() {
	local h=$1 conf=$2
	shift 2
	: >"$tmp/alice.out"
	bg_ns "$h" env WARPGATE_HOME="$tmp/alice" WARPGATE_LOG=info "$W" listen alice --echo --config "$conf" \
		"${C[@]}" "$@" >"$tmp/alice.out" 2>"$tmp/alice.err"
	apid=$BG_PID
	pids+=("$apid")
	for _ in $(seq 150); do [ -s "$tmp/alice.out" ] && break; sleep 0.1; done
	addr=$(head -n 1 "$tmp/alice.out")
}

# talk ADDR CONFIG IDLE: "a", IDLE seconds of silence, "b"; prints the replies
talk() {
	local addr=$1 conf=$2 idle=$3
	{ echo a; sleep "$idle"; echo b; sleep 2; } |
		in_ns h2a env WARPGATE_HOME="$tmp/bob" timeout $((idle + 30)) "$W" connect "$addr" \
			--config "$conf" "${C[@]}" 2>"$tmp/bob.err"
}

# ---- 1: 2 s conntrack timeout, 10 s idle
start_alice h1a "$tmp/ka1.json"
check "alice listens behind a full-cone NAT with 2 s UDP timeouts" grep -q '^wg1\.' <<<"$addr"
out=$(talk "$addr" "$tmp/ka1.json" 10)
check "1 s keepalives: the pipe survives 10 s idle (replies: $(tr '\n' ' ' <<<"$out"))" \
	[ "$out" = "$(printf 'echo:a\necho:b')" ]
stop_pid "$apid"
start_alice h1a "$tmp/ka30.json"
out=$(talk "$addr" "$tmp/ka30.json" 10)
check "control, 30 s keepalives: the mapping expires and the second message is lost" \
	[ "$out" != "$(printf 'echo:a\necho:b')" ]
stop_pid "$apid"

# ---- 2: the listener stopped, the kernel answers
stopped_run() { # bpf-flag seconds -> replies
	local flag=$1 secs=$2 out
	start_alice h1a "$tmp/ka1.json" $flag
	{
		echo a
		sleep 2
		kill -STOP "$apid"
		sleep "$secs"
		kill -CONT "$apid"
		sleep 1
		echo b
		sleep 3
	} | in_ns h2a env WARPGATE_HOME="$tmp/bob" timeout $((secs + 40)) "$W" connect "$addr" \
		--config "$tmp/ka1.json" "${C[@]}" --no-bpf 2>"$tmp/bob.err"
	stop_pid "$apid"
}
out=$(stopped_run "" "$stop_secs")
bpf=$(grep -o 'bpf: \(active\|off\)[^"]*' "$tmp/alice.err" | head -n 1)
if grep -q "bpf: active" <<<"$bpf"; then
	check "listener stopped ${stop_secs}s, pings answered in the kernel: pipe alive after (replies: $(tr '\n' ' ' <<<"$out"))" \
		[ "$out" = "$(printf 'echo:a\necho:b')" ]
	out=$(stopped_run --no-bpf 15)
	check "control without BPF: the connector gives the stopped peer up" \
		[ "$out" != "$(printf 'echo:a\necho:b')" ]
else
	skip "listener stopped, pings answered in the kernel" "fast path not active here ($bpf)"
	skip "control without BPF" "fast path not active"
fi
tap_done
