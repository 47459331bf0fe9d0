#!/usr/bin/env bash
# The NAT matrix: every unordered pair of the lab's eight router types, by name, with the real
# servers.  For each pair `warpgate listen alice-X --echo` runs behind one router and
# `warpgate connect alice-X --send hi --json` behind another (a second site of the same type
# for X with X).  Expected, with TURN: every pair connects; every pair gets a direct path except
# symmetric-random with symmetric-random or symmetric-seq, and udp-blocked with either
# symmetric kind (there the relay is the only sure way; a direct path is welcome).  Without
# TURN those four pairs either still go direct or fail cleanly, in bounded time, with every
# attempt in the trace saying why.  The matrix is written to $WARP_BUILD/nat-matrix.txt.
#
# NAT_MATRIX_TYPES="a b ..." limits the types (for a quick run by hand).
source "$(dirname "$0")/../lib/tap.sh"
source "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup jq
W=$WARP_BUILD/bin/warpgate
tmp=$(mktemp -d /tmp/wpg-matrix.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do stop_pid "$p"; done; natlab_cleanup; rm -rf "$tmp"; }
trap cleanup EXIT

read -ra types <<<"${NAT_MATRIX_TYPES:-open full-cone restricted port-restricted symmetric-seq symmetric-random udp-blocked cgnat}"
nt=${#types[@]}
# Sites 1..nt hold the listeners, sites nt+1..2nt the connectors.
lab up "${types[@]}" "${types[@]}" >"$tmp/up.log" 2>&1 ||
	{ cat "$tmp/up.log"; skip_all "natlab up failed"; }
labenv
[ -n "${WPG_NAMES:-}" ] || skip_all "no nickname server in the lab (build namebumpd)"
C=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" --ntp "$WPG_NTP" --mqtt "$WPG_MQTT1" --mqtt "$WPG_MQTT2"
	--nameserver "$WPG_NAMES,$WPG_NAMES_KEY" --no-upnp)
TURN=(--turn "$WPG_TURN_USER:$WPG_TURN_PASS@$WPG_TURN")

# The pairs where only a relay is sure to work.
relay_pair() {
	case "$1+$2" in
	symmetric-random+symmetric-random | symmetric-random+symmetric-seq | symmetric-seq+symmetric-random) ;;
	udp-blocked+symmetric-* | symmetric-*+udp-blocked) ;;
	*) return 1 ;;
	esac
}

# ---- listeners, one per type, each registering its name
for ((i = 0; i < nt; i++)); do
	s=$((i + 1))
	bg_ns "h${s}a" env WARPGATE_HOME="$tmp/l$s" WARPGATE_LOG=info "$W" listen "alice-${types[i]}" \
		--echo "${C[@]}" "${TURN[@]}" >"$tmp/l$s.out" 2>"$tmp/l$s.err"
	pids+=("$BG_PID")
done
registered=0
for _ in $(seq 300); do
	registered=$(cat "$tmp"/l*.err 2>/dev/null | grep -c "names: registered")
	[ "$registered" -ge "$nt" ] && break
	sleep 0.1
done
check "all $nt listeners registered their names ($registered)" test "$registered" -ge "$nt"

# connect_pair LISTENER_SITE CONNECTOR_SITE OUT [EXTRA...]: prints the JSON result to OUT
connect_pair() {
	local ls=$1 cs=$2 out=$3
	shift 3
	in_ns "h${cs}a" env WARPGATE_HOME="$tmp/c$cs" WARPGATE_LOG=info timeout -k 5 40 "$W" connect \
		"alice-${types[ls - 1]}" --send hi --json --timeout 15000 "${C[@]}" "$@" \
		>"$out" 2>"$out.err"
}

table=$WARP_BUILD/nat-matrix.txt
{
	printf '%-17s %-17s %-9s %-15s %-7s %9s\n' listener connector result strategy path ms
	printf '%s\n' "-----------------------------------------------------------------------------"
} >"$table"
pairs=0 connected=0 direct=0 want_direct=0 got_direct=0
for ((a = 0; a < nt; a++)); do
	for ((b = a; b < nt; b++)); do
		A=${types[a]} B=${types[b]} out="$tmp/m-$a-$b.json"
		pairs=$((pairs + 1))
		connect_pair $((a + 1)) $((nt + b + 1)) "$out" "${TURN[@]}"
		rc=$?
		res=$(jq -r '[(.connected // false), (.strategy // "-"), (.path // "-"),
			(.ms // 0 | floor), (.reply // "")] | @tsv' "$out" 2>/dev/null)
		IFS=$'\t' read -r ok strat path ms reply <<<"$res"
		[ "$ok" = true ] && connected=$((connected + 1))
		[ "$ok" = true ] && [ "$path" != relay ] && direct=$((direct + 1))
		printf '%-17s %-17s %-9s %-15s %-7s %9s\n' "$A" "$B" \
			"$([ "$ok" = true ] && echo connected || echo FAILED)" "$strat" "$path" "$ms" >>"$table"
		check "$A <- $B: connected, echo came back (rc $rc)" \
			test "$ok" = true -a "$reply" = "echo:hi" -a "$rc" = 0
		if relay_pair "$A" "$B"; then
			check "$A <- $B: any path ($strat, $path)" test "$ok" = true
		else
			want_direct=$((want_direct + 1))
			[ "$path" = direct ] && got_direct=$((got_direct + 1))
			check "$A <- $B: a direct path ($strat, $path)" test "$path" = direct
		fi
		check "$A <- $B: a trace of every attempt, each with an outcome" \
			jq -e '(.attempts | length) > 0 and all(.attempts[]; .outcome != null and .strategy != null)' \
			"$out"
	done
done
echo "$connected of $pairs connected, $direct of $pairs direct ($got_direct of $want_direct where direct is expected)" >>"$table"

# ---- the relay-only pairs without TURN: direct after all, or a clean failure that says why
{
	echo
	echo "without TURN:"
} >>"$table"
for ((a = 0; a < nt; a++)); do
	for ((b = a; b < nt; b++)); do
		A=${types[a]} B=${types[b]} out="$tmp/n-$a-$b.json"
		relay_pair "$A" "$B" || continue
		t0=$(date +%s.%N)
		connect_pair $((a + 1)) $((nt + b + 1)) "$out" --no-turn
		rc=$?
		took=$(echo "$(date +%s.%N) - $t0" | bc)
		ok=$(jq -r '.connected // false' "$out" 2>/dev/null)
		if [ "$ok" = true ]; then
			printf '%-17s %-17s connected %s %s\n' "$A" "$B" "$(jq -r .strategy "$out")" \
				"$(jq -r .path "$out")" >>"$table"
			check "$A <- $B without TURN: connected directly" jq -e '.path == "direct"' "$out"
			continue
		fi
		printf '%-17s %-17s failed in %.1f s: %s\n' "$A" "$B" "$took" \
			"$(jq -r '[.attempts[] | "\(.strategy)/\(.transport): \(.reason)"] | unique | join("; ")' \
				"$out" | cut -c1-400)" >>"$table"
		check "$A <- $B without TURN: fails with a non-zero status ($rc) in bounded time (${took%.*} s)" \
			test "$rc" != 0 -a "$rc" != 124 -a "$rc" != 137
		check "$A <- $B without TURN: an error and every attempt's reason in the trace" \
			jq -e '(.error | length) > 0 and (.attempts | length) > 0 and
				all(.attempts[]; (.reason | length) > 0 and .outcome != "won")' "$out"
		check "$A <- $B without TURN: the relay is reported as not configured" \
			jq -e 'any(.attempts[]; .strategy == "turn" and .outcome == "skipped")' "$out"
	done
done

echo "# NAT matrix ($table):"
sed 's/^/# /' "$table"
tap_done
