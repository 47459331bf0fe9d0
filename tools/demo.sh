#!/usr/bin/env bash
# make demo: two peers behind emulated NATs find each other by name.
#
# Builds a small internet in network namespaces (selftests/natlab): alice behind a
# port-restricted NAT, bob behind a symmetric NAT with sequential ports, with real STUN/TURN
# (coturn), MQTT (mosquitto), NTP (chrony) and nickname (namebumpd) servers, 10 ms of delay on
# every router link.  Then alice listens as alice.p2p and bob connects by name, and the demo
# prints what happens.  Everything is torn down at the end, also on failure.
#
# usage: tools/demo.sh [--build DIR] [--keep]      (root)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build keep=
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	*) echo "usage: $0 [--build DIR] [--keep]" >&2; exit 2 ;;
	esac
done
case "$build" in /*) ;; *) build="$top/$build" ;; esac
export WARP_BUILD=$build
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces); try: sudo make demo" >&2; exit 1; }
W=$build/bin/warpgate
natlab=$top/selftests/natlab/natlab
[ -x "$W" ] && [ -x "$build/bin/namebumpd" ] || { echo "demo: build first (make)" >&2; exit 1; }
state=$(mktemp -d /tmp/wpg-demo.XXXXXX)
export WPG_NATLAB_STATE=$state/lab
lpid=
cleanup() {
	[ -n "$lpid" ] && kill "$lpid" 2>/dev/null
	wait 2>/dev/null
	[ -n "$keep" ] || "$natlab" down >/dev/null 2>&1
	rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
field() { grep -o "\"$1\":\"[^\"]*\"" <<<"$2" | head -n 1 | cut -d'"' -f4; }
num() { grep -o "\"$1\":[0-9.e-]*" <<<"$2" | head -n 1 | cut -d: -f2; }

say "1. an internet with two NATs and real servers"
"$natlab" up --delay 10 port-restricted symmetric-seq || exit 1
eval "$("$natlab" env)"
common=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" --ntp "$WPG_NTP" --mqtt "$WPG_MQTT1"
	--mqtt "$WPG_MQTT2" --turn "$WPG_TURN_USER:$WPG_TURN_PASS@$WPG_TURN"
	--nameserver "$WPG_NAMES" --nameserver-key "$WPG_NAMES_KEY")
run() { local h=$1; shift; "$natlab" exec "$h" env WARPGATE_HOME="$state/$h" "$@"; }

say "2. each host finds out where it is (warpgate nat)"
for h in h1a h2a; do
	run "$h" "$W" nat --json "${common[@]}" 2>/dev/null | jq -r --arg h "$h" \
		'"  \($h): NAT \(.type), mapping \(.mapping), filtering \(.filtering), port delta \(.delta.type) \(.delta.value)  (\(.ms) ms)"'
done

say "3. alice listens (h1a) and registers alice.p2p"
run h1a "$W" listen alice --echo "${common[@]}" >"$state/alice.out" 2>"$state/alice.err" &
lpid=$!
for _ in $(seq 200); do [ -s "$state/alice.out" ] && break; sleep 0.05; done
[ -s "$state/alice.out" ] || { echo "alice did not start:"; cat "$state/alice.err"; exit 1; }
echo "  alice's address: $(head -c 60 "$state/alice.out")..."
js=$(run h2a "$W" name get alice --json "${common[@]}" 2>/dev/null)
echo "  bob resolves alice.p2p via $(field server "$js"): owner $(field owner "$js" | head -c 16)..."

say "4. bob (h2a) connects to alice by name: every strategy raced"
start=$(date +%s%N)
js=$(run h2a "$W" connect alice --send hi --json "${common[@]}" 2>"$state/bob.err")
rc=$?
total=$(( ($(date +%s%N) - start) / 1000000 ))
grep -o '{"strategy":"[^}]*}' <<<"$js" | while read -r a; do
	printf '  %-15s %-4s %-9s %-24s %-9s %s\n' "$(field strategy "$a")" \
		"$(field transport "$a")" "$(field route "$a")" "$(field endpoint "$a")" \
		"$(field outcome "$a")" "$(field reason "$a")"
done
if [ "$rc" != 0 ] || ! grep -q '"connected":true' <<<"$js"; then
	echo "  connect failed (exit $rc):"
	tail -n 5 "$state/bob.err"
	exit 1
fi
printf '  winner: %s, path %s, pipe verified in %.1f ms (name lookup %.1f ms; whole command, node start included: %s ms)\n' \
	"$(field strategy "$js")" "$(field path "$js")" "$(num ms "$js")" "$(num resolve_ms "$js")" "$total"

say "5. an echo exchange"
echo "  bob -> alice: hi"
echo "  alice -> bob: $(field reply "$js")"

say "6. throughput (bob -> alice -> bob, 4 MiB echoed through the pipe)"
start=$(date +%s%N)
got=$(head -c 4194304 /dev/zero | run h2a "$W" connect alice "${common[@]}" 2>/dev/null |
	tr -d 'echo:' | wc -c) # the zeros that came back, without the echo prefixes
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "  $got of 4194304 bytes back in $ms ms ($(( got * 1000 / (ms > 0 ? ms : 1) / 1024 )) KiB/s incl. connect, over a 40 ms RTT path)"
[ "$got" = 4194304 ] || { echo "  bytes were lost"; exit 1; }

say "7. relay first, then direct: the same pipe moves when a direct path opens"
# The two sites cannot see each other (dropped on the internet bridge; servers stay reachable):
# the race can only be won by the relay.  Then the block goes and the relayed pipe moves.
block() {
	"$natlab" exec inet nft -f - <<EOT
table bridge wpgdemo {
	chain filter {
		type filter hook forward priority 0; policy accept;
		ip saddr $WPG_R1_PUBLIC ip daddr $WPG_R2_PUBLIC drop
		ip saddr $WPG_R2_PUBLIC ip daddr $WPG_R1_PUBLIC drop
	}
}
EOT
}
block
(for i in 1 2 3 4 5 6 7 8 9 10; do
	echo "message $i"
	sleep 0.3
	if [ "$i" = 3 ]; then # lift the block once the relay has won
		for _ in $(seq 100); do grep -q "connected by" "$state/up.err" && break; sleep 0.1; done
		"$natlab" exec inet nft delete table bridge wpgdemo
	fi
done; sleep 2) | run h2a env WARPGATE_LOG=info "$W" connect alice "${common[@]}" \
	>"$state/up.out" 2>"$state/up.err"
grep -o 'connected by [a-z_]* over [^ ]*' "$state/up.err" | head -n 1 | sed 's/^/  /'
echo "  (block lifted)"
grep -o 'pipe moves .*' "$state/up.err" | head -n 1 | sed 's/^/  /'
if [ "$(sed 's/^echo://' "$state/up.out")" = "$(for i in $(seq 10); do echo "message $i"; done)" ]; then
	echo "  all 10 messages came back once each, in order, across the move"
else
	echo "  messages lost or out of order:"; sed 's/^/    /' "$state/up.out"; exit 1
fi
grep -q 'pipe moves .*(direct)' "$state/up.err" || { echo "  the pipe did not move"; exit 1; }

say "done: alice and bob found each other by name through two NATs"
