#!/usr/bin/env bash
# Time to connect by name across the NAT lab, per pair of router types, with a one-way delay on
# every router's internet link (10 ms: 20 ms to a server, 40 ms host to host).
#
# For each unordered pair of the eight types, `warpgate connect alice-X --send hi --json` runs
# RUNS times (default 10) from a fresh process; the table shows the median time from the start
# of the name lookup to the verified pipe (resolve_ms + ms of the JSON), the winning strategy
# (most frequent), min and max, and the theoretical floor beside it:
#     floor = name lookup RTT (2 d) + signalling one way, host -> broker -> host (2 d)
#             + one peer round trip (4 d) = 2 x measured host-to-host RTT
# Targets: punched or direct pairs within 2x the floor, relayed pairs within 3x, random_probe
# under 3 s.  A second table gives node start-up in the lab (`warpgate addr`: key, sockets,
# STUN classification, NTP, brokers; median of 20), and one in test mode on loopback.
# usage: bench_connect.sh [--runs N] [--delay MS] [--types "a b ..."]
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
WARP_BUILD=${WARP_BUILD:-$top/build}
WARP_TOP=$top
export WARP_BUILD WARP_TOP
runs=${BENCH_CONNECT_RUNS:-10} delay=10
types="open full-cone restricted port-restricted symmetric-seq symmetric-random udp-blocked cgnat"
[ -n "${WARP_BENCH_SECS:-}" ] && [ "${WARP_BENCH_SECS}" -le 2 ] && runs=${BENCH_CONNECT_RUNS:-3}
while [ $# -gt 0 ]; do
	case "$1" in
	--runs) runs=$2; shift 2 ;;
	--delay) delay=$2; shift 2 ;;
	--types) types=$2; shift 2 ;;
	*) echo "usage: $0 [--runs N] [--delay MS] [--types LIST]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench_connect: needs root (network namespaces)"; exit 77; }
for p in jq bc ip nft; do
	command -v $p >/dev/null || { echo "bench_connect: needs $p (make deps)"; exit 77; }
done
[ -x "$WARP_BUILD/natlab/prober" ] && [ -x "$WARP_BUILD/bin/namebumpd" ] ||
	{ echo "bench_connect: lab tools or namebumpd missing (make O=$WARP_BUILD natlab all)"; exit 77; }
[ ! -e /run/netns/wpg-inet ] || { echo "bench_connect: another NAT lab is up"; exit 77; }
NATLAB=$top/selftests/natlab/natlab
export WPG_NATLAB_STATE=/run/wpg-natlab-bench.$$
W=$WARP_BUILD/bin/warpgate
tmp=$(mktemp -d /tmp/wpg-bconn.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	"$NATLAB" down >/dev/null 2>&1
	rm -rf "$WPG_NATLAB_STATE" "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -ra T <<<"$types"
nt=${#T[@]}
"$NATLAB" up --delay "$delay" "${T[@]}" "${T[@]}" >"$tmp/up.log" 2>&1 ||
	{ cat "$tmp/up.log"; exit 1; }
while IFS= read -r line; do
	case $line in WPG_*=*) export "${line%%=*}=$(eval "printf '%s' ${line#*=}")" ;; esac
done < <("$NATLAB" env)
C=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" --ntp "$WPG_NTP" --mqtt "$WPG_MQTT1" --mqtt "$WPG_MQTT2"
	--nameserver "$WPG_NAMES,$WPG_NAMES_KEY" --no-upnp
	--turn "$WPG_TURN_USER:$WPG_TURN_PASS@$WPG_TURN")

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Host-to-host RTT between two sites (ICMP when the far host is public, else punched UDP).
"$NATLAB" rtt h1a "h$((nt + 1))a" 20 >"$tmp/rtt" 2>&1
rtt=$(sed -n 's/.*= [0-9.]*\/\([0-9.]*\)\/.*/\1/p; s/.*median \([0-9.]*\).*/\1/p' "$tmp/rtt" | head -n 1)
[ -n "$rtt" ] || rtt=$(echo "4 * $delay" | bc)
floor=$(echo "2 * $rtt" | bc -l)

for ((i = 0; i < nt; i++)); do
	s=$((i + 1))
	"$NATLAB" exec "h${s}a" env WARPGATE_HOME="$tmp/l$s" WARPGATE_LOG=info "$W" listen \
		"alice-${T[i]}" --echo "${C[@]}" >"$tmp/l$s.out" 2>"$tmp/l$s.err" &
	pids+=("$!")
done
for _ in $(seq 300); do
	[ "$(cat "$tmp"/l*.err 2>/dev/null | grep -c "names: registered")" -ge "$nt" ] && break
	sleep 0.1
done

echo "time to connect by name, $delay ms one-way delay per router link, host-to-host RTT $rtt ms,"
echo "floor $(printf '%.0f' "$floor") ms (lookup + signalling one way + peer RTT), median of $runs runs"
echo
printf '| %-16s | %-16s | %-13s | %-6s | %7s | %7s | %7s | %6s | %-8s |\n' listener connector \
	strategy path median min max floor× target
printf '|%s|\n' "------------------+------------------+---------------+--------+---------+---------+---------+--------+----------"
met=0 total=0
for ((a = 0; a < nt; a++)); do
	for ((b = a; b < nt; b++)); do
		: >"$tmp/times" && : >"$tmp/strats"
		for ((r = 0; r < runs; r++)); do
			"$NATLAB" exec "h$((nt + b + 1))a" env WARPGATE_HOME="$tmp/c$b" WARPGATE_LOG=none \
				timeout -k 5 40 "$W" connect "alice-${T[a]}" --send hi --json --timeout 15000 \
				"${C[@]}" >"$tmp/out" 2>/dev/null
			jq -r 'select(.connected) | "\(.resolve_ms + .ms) \(.strategy) \(.path)"' \
				"$tmp/out" 2>/dev/null >"$tmp/one"
			if [ -s "$tmp/one" ]; then
				awk '{ print $1 }' "$tmp/one" >>"$tmp/times"
				awk '{ print $2, $3 }' "$tmp/one" >>"$tmp/strats"
			fi
		done
		n=$(wc -l <"$tmp/times")
		read -r strat path < <(sort "$tmp/strats" | uniq -c | sort -rn | awk 'NR == 1 { print $2, $3 }')
		med=$(median <"$tmp/times")
		total=$((total + 1))
		if [ "$n" = 0 ]; then
			printf '| %-16s | %-16s | %-13s | %-6s | %7s | %7s | %7s | %6s | %-8s |\n' \
				"${T[a]}" "${T[b]}" "(failed)" - - - - - -
			continue
		fi
		mn=$(sort -n "$tmp/times" | head -n 1) mx=$(sort -n "$tmp/times" | tail -n 1)
		case "$strat/$path" in
		random_probe/*) target=3000 tlabel="< 3 s" ;;
		*/relay) target=$(echo "3 * $floor" | bc -l) tlabel="<= 3x" ;;
		*) target=$(echo "2 * $floor" | bc -l) tlabel="<= 2x" ;;
		esac
		ok=$(echo "$med <= $target" | bc -l)
		[ "$ok" = 1 ] && met=$((met + 1)) && tlabel="$tlabel ok" || tlabel="$tlabel MISS"
		[ "$n" != "$runs" ] && strat="$strat ($n/$runs)"
		printf '| %-16s | %-16s | %-13s | %-6s | %7.1f | %7.1f | %7.1f | %6.2f | %-8s |\n' \
			"${T[a]}" "${T[b]}" "$strat" "$path" "$med" "$mn" "$mx" \
			"$(echo "$med / $floor" | bc -l)" "$tlabel"
	done
done
echo
echo "$met of $total pairs within their target"

# ---- node start-up
echo
printf '| %-44s | %8s | %8s | %8s |\n' "node start-up (median of 20)" median min max
printf '|%s|\n' "----------------------------------------------+----------+----------+----------"
startup() { # label, namespace or "", extra args
	local label=$1 ns=$2 t0 t1
	shift 2
	: >"$tmp/st"
	for ((r = 0; r < 20; r++)); do
		t0=$(date +%s%N)
		if [ -n "$ns" ]; then
			"$NATLAB" exec "$ns" env WARPGATE_HOME="$tmp/st-home" WARPGATE_LOG=none "$W" addr "$@" \
				>/dev/null 2>&1
		else
			env WARPGATE_HOME="$tmp/st-home" WARPGATE_LOG=none "$W" addr "$@" >/dev/null 2>&1
		fi
		t1=$(date +%s%N)
		echo "$(((t1 - t0) / 1000)) " | awk '{ printf "%.1f\n", $1 / 1000 }' >>"$tmp/st"
	done
	printf '| %-44s | %8.1f | %8.1f | %8.1f |\n' "$label" "$(median <"$tmp/st")" \
		"$(sort -n "$tmp/st" | head -n 1)" "$(sort -n "$tmp/st" | tail -n 1)"
}
startup "test mode, loopback (ms, whole process)" "" --test-mode
for ((i = 0; i < nt; i++)); do
	case "${T[i]}" in port-restricted | udp-blocked) startup "lab, ${T[i]}, all servers (ms)" "h$((i + 1))a" "${C[@]}" ;; esac
done
exit 0
