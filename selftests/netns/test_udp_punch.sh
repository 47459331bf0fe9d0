#!/usr/bin/env bash
# udp_punch between real warpgate binaries in the NAT lab (10 ms per router crossing):
# port-restricted <-> port-restricted, restricted -> port-restricted, port-restricted <->
# symmetric-seq (the sequential side predicts its next port), symmetric-seq <-> symmetric-seq
# (prediction on both sides), restricted <-> symmetric-random (peer-reflexive), each with
# `--strategy udp_punch`: a direct path, the echo reply and the trace; the same with every
# strategy racing (second sample); symmetric-random pairs over IPv6 when they have it.  Symmetric-random <-> symmetric-random must fail cleanly (exit 1, the reason
# in the trace) and leave the listener serving.
. "$(dirname "$0")/../lib/tap.sh"
. "$WARP_TOP/selftests/natlab/testlib.sh"

natlab_setup mosquitto turnserver chronyd jq timeout
WG=$WARP_BUILD/bin/warpgate
[ -x "$WG" ] || skip_all "no $WG (make O=$WARP_BUILD)"

tmp=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
	natlab_cleanup
}
trap cleanup EXIT

# Sites: 1, 2 port-restricted; 3 restricted; 4, 5 symmetric-seq (delta 2, different bases
# so their ports never coincide); 6, 7 symmetric-random; 8, 9 symmetric-random with IPv6.
if ! lab up --delay 10 --servers stun,mqtt,ntp port-restricted port-restricted restricted \
	symmetric-seq symmetric-seq,base=30000 symmetric-random symmetric-random \
	symmetric-random,ipv6 symmetric-random,ipv6 >"$tmp/up" 2>&1; then
	cat "$tmp/up" >&2
	not_ok "lab up"
	# Stop the listeners the way a user does; nothing may have been reported by the sanitizers
# (when built with them) on either side, leaks included.
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()
bad=$(grep -l -E "Sanitizer|runtime error" "$tmp"/*.err 2>/dev/null)
check "no sanitizer reports${bad:+ (in: $(basename -a $bad | tr '\n' ' '))}" [ -z "$bad" ]
for f in $bad; do grep -A 12 -E "Sanitizer|runtime error" "$f" | head -n 30 | sed 's/^/#   /'; done

tap_done
	exit 1
fi
labenv
SRV=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" --ntp "$WPG_NTP" --mqtt "$WPG_MQTT1"
	--mqtt "$WPG_MQTT2" --no-upnp)

# listen HOST NAME: starts an echo listener; its address (first stdout line) in $ADDR.
listen() {
	local host=$1 name=$2 i
	mkdir -p "$tmp/$name"
	# Not through a shell function: $! must be the listener itself (natlab execs it).
	"$NATLAB" exec "$host" env WARPGATE_HOME="$tmp/$name" "$WG" listen "$name" --echo \
		"${SRV[@]}" --log-level debug >"$tmp/$name.out" 2>"$tmp/$name.err" &
	pids+=($!)
	for ((i = 0; i < 150; i++)); do
		[ -s "$tmp/$name.out" ] && break
		sleep 0.1
	done
	ADDR=$(head -n 1 "$tmp/$name.out")
}

# connect HOST TAG ADDR [STRATEGY]: `connect --strategy udp_punch --send hi-TAG --json` into
# $tmp/TAG.json ("all": every strategy).
connect() {
	local host=$1 tag=$2 addr=$3 st=${4:-udp_punch}
	mkdir -p "$tmp/c-$tag"
	[ "$st" = all ] && st= || st="--strategy=$st"
	in_ns "$host" env WARPGATE_HOME="$tmp/c-$tag" timeout 40 "$WG" connect "$addr" $st \
		--send "hi-$tag" --json --timeout 9000 "${SRV[@]}" \
		--log-level debug >"$tmp/$tag.json" 2>"$tmp/$tag.err"
}

# punched TAG: connected by udp_punch over a direct path, the echo came back, the winning
# attempt says which endpoint.
punched() {
	local j=$tmp/$1.json
	[ "$(jq -r .connected "$j")" = true ] &&
		[ "$(jq -r .strategy "$j")" = udp_punch ] &&
		[ "$(jq -r .path "$j")" = direct ] &&
		[ "$(jq -r .reply "$j")" = "echo:hi-$1" ] &&
		jq -e '.attempts[] | select(.strategy == "udp_punch" and .outcome == "won")
			| select(.reason | test("^via "))' "$j" >/dev/null
}

show() {
	local j=$tmp/$1.json
	echo "# $1: $(jq -r '"\(.strategy) \(.path) in \(.ms) ms"' "$j" 2>/dev/null);" \
		"$(jq -r '.attempts[] | select(.strategy == "udp_punch") | .reason' "$j" 2>/dev/null |
			head -n 1)"
}

pair() { # DESC HOST TAG ADDR
	local desc=$1 host=$2 tag=$3 addr=$4
	if [ -z "$addr" ]; then
		not_ok "$desc: listener address"
		return
	fi
	connect "$host" "$tag" "$addr"
	check "$desc: exit 0" [ $? = 0 ]
	if punched "$tag"; then
		ok "$desc: udp_punch, direct path, echo"
	else
		not_ok "$desc: udp_punch, direct path, echo"
		sed 's/^/#   /' "$tmp/$tag.json"
		grep -v libbpf "$tmp/$tag.err" | tail -n 30 | sed 's/^/#   /'
	fi
	show "$tag"
	check "$desc: within 3 s" num_between "$(jq -r .ms "$tmp/$tag.json")" 0 3000
}

listen h1a pr1 && A1=$ADDR
listen h2a pr2 && A2=$ADDR
listen h3a rc3 && A3=$ADDR
listen h4a seq4 && A4=$ADDR
listen h7a rnd7 && A7=$ADDR

pair "port-restricted -> port-restricted" h1a pr-pr "$A2"
pair "restricted -> port-restricted" h3a rc-pr "$A1"
pair "port-restricted -> symmetric-seq" h2a pr-seq "$A4"
pair "symmetric-seq -> port-restricted" h4a seq-pr "$A1"
pair "symmetric-seq -> symmetric-seq" h5a seq-seq "$A4"
# A random port is found without prediction when the other NAT lets any port of the address
# in: the restricted side learns it from the first probe that arrives (peer-reflexive).
pair "restricted -> symmetric-random" h3a rc-rnd "$A7"
pair "symmetric-random -> restricted" h6a rnd-rc "$A3"

# Every strategy at once: direct_connect's dial to the peer's guessed endpoint takes a port
# of our sequential NAT between our sample and our first packets; the second sample must
# find the shift and still meet the peer's mappings.
connect h5a seq-seq-all "$A4" all
check "all strategies, symmetric-seq -> symmetric-seq: exit 0" [ $? = 0 ]
check "all strategies, symmetric-seq -> symmetric-seq: direct path, echo" \
	[ "$(jq -r '"\(.path) \(.reply)"' "$tmp/seq-seq-all.json")" = "direct echo:hi-seq-seq-all" ]
echo "# all strategies, seq-seq: $(jq -r '"\(.strategy) in \(.ms) ms"' "$tmp/seq-seq-all.json");" \
	"$(grep -o "handed out.*" "$tmp/seq-seq-all.err")"

# Both random: nothing to predict; udp_punch must say so and exit 1 quickly.
connect h6a rnd-rnd "$A7"
check "symmetric-random -> symmetric-random: exit 1" [ $? = 1 ]
check "symmetric-random -> symmetric-random: not connected" \
	[ "$(jq -r .connected "$tmp/rnd-rnd.json")" = false ]
reason=$(jq -r '.attempts[] | select(.strategy == "udp_punch") | .reason' "$tmp/rnd-rnd.json")
echo "# symmetric-random -> symmetric-random: $reason"
check "symmetric-random -> symmetric-random: reason names the cause" \
	grep -q "random ports.*turn is needed" <<<"$reason"

# The same NATs with IPv6 beside them: IPv4 is skipped with the reason, IPv6 (no translation,
# a stateful firewall on each side) punches.
listen h9a rnd9 && A9=$ADDR
connect h8a rnd-rnd-v6 "$A9"
check "symmetric-random -> symmetric-random with IPv6: exit 0" [ $? = 0 ]
check "... udp_punch over IPv6, direct path, echo" [ "$(jq -r '[.strategy, .path, .reply,
	(.attempts[] | select(.outcome == "won") | .family)] | join(" ")' "$tmp/rnd-rnd-v6.json")" = \
	"udp_punch direct echo:hi-rnd-rnd-v6 6" ]
check "... IPv4 skipped: turn is needed" jq -e '.attempts[] | select(.strategy == "udp_punch"
	and .family == 4 and .outcome == "skipped") | select(.reason | test("turn is needed"))' \
	"$tmp/rnd-rnd-v6.json"
echo "# rnd-rnd over IPv6: $(jq -r .ms "$tmp/rnd-rnd-v6.json") ms"

# The listeners survived everything above and still serve.
for p in "${pids[@]}"; do
	check "listener $p still running" alive "$p"
done
pair "port-restricted -> port-restricted again" h1a pr-pr2 "$A2"

# Stop the listeners the way a user does; nothing may have been reported by the sanitizers
# (when built with them) on either side, leaks included.
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()
bad=$(grep -l -E "Sanitizer|runtime error" "$tmp"/*.err 2>/dev/null)
check "no sanitizer reports${bad:+ (in: $(basename -a $bad | tr '\n' ' '))}" [ -z "$bad" ]
for f in $bad; do grep -A 12 -E "Sanitizer|runtime error" "$f" | head -n 30 | sed 's/^/#   /'; done

tap_done
