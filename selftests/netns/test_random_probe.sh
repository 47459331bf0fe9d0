#!/usr/bin/env bash
# random_probe between real warpgate binaries in the NAT lab (10 ms per router crossing):
# port-restricted <-> symmetric-random with `--strategy random_probe`, the hard (random) side
# connecting and the hard side listening.  Each must give a direct path and the echo in
# under 3 s, log the computed success probability, and leave no sockets behind on the hard
# side; with few descriptors the hard side opens fewer mappings.  Symmetric-random <-> symmetric-random must be refused with the reason.  A hard
# listener frees its mappings when the connector cancels, and when the node closes.
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
	[ -n "$KEEP" ] && cp -r "$tmp" /tmp/keep-rp; rm -rf "$tmp"
	natlab_cleanup
}
trap cleanup EXIT

# Sites: 1 port-restricted, 2 and 3 symmetric-random.
if ! lab up --delay 10 --servers stun,mqtt,ntp port-restricted symmetric-random \
	symmetric-random >"$tmp/up" 2>&1; then
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

# listen HOST NAME: an echo listener; its address in $ADDR, its pid in $LPID.
listen() {
	local host=$1 name=$2 i
	mkdir -p "$tmp/$name"
	# Not through a shell function: $! must be the listener itself (natlab execs it).
	"$NATLAB" exec "$host" env WARPGATE_HOME="$tmp/$name" "$WG" listen "$name" --echo \
		"${SRV[@]}" --log-level info >"$tmp/$name.out" 2>"$tmp/$name.err" &
	LPID=$!
	pids+=("$LPID")
	for ((i = 0; i < 150; i++)); do
		[ -s "$tmp/$name.out" ] && break
		sleep 0.1
	done
	ADDR=$(head -n 1 "$tmp/$name.out")
}

connect() { # HOST TAG ADDR [EXTRA...]
	local host=$1 tag=$2 addr=$3
	shift 3
	mkdir -p "$tmp/c-$tag"
	in_ns "$host" env WARPGATE_HOME="$tmp/c-$tag" ${WARPGATE_RP_RATE:+WARPGATE_RP_RATE=$WARPGATE_RP_RATE} \
		timeout 40 "$WG" connect "$addr" --strategy random_probe --send "hi-$tag" --json --timeout 9000 "${SRV[@]}" \
		--log-level info "$@" >"$tmp/$tag.json" 2>"$tmp/$tag.err"
}

# UDP sockets of a process (the hard side's mappings must be closed after the punch).
udp_socks() {
	local n=0 fd
	for fd in /proc/"$1"/fd/*; do
		case $(readlink "$fd" 2>/dev/null) in socket:*) n=$((n + 1)) ;; esac
	done
	echo "$n"
}

# The probability line: "... success probability 99.9999%, ...".
odds() { grep -o 'success probability [0-9.]*%' "$1" | head -n 1; }

pair() { # DESC HOST TAG ADDR LISTENER_LOG
	local desc=$1 host=$2 tag=$3 addr=$4 llog=$5 j=$tmp/$3.json ms reason
	if [ -z "$addr" ]; then
		not_ok "$desc: listener address"
		return
	fi
	connect "$host" "$tag" "$addr"
	check "$desc: exit 0" [ $? = 0 ]
	if [ "$(jq -r .connected "$j")" = true ] && [ "$(jq -r .strategy "$j")" = random_probe ] &&
		[ "$(jq -r .path "$j")" = direct ] && [ "$(jq -r .reply "$j")" = "echo:hi-$tag" ]; then
		ok "$desc: random_probe, direct path, echo"
	else
		not_ok "$desc: random_probe, direct path, echo"
		sed 's/^/#   /' "$j"
		grep -v libbpf "$tmp/$tag.err" | tail -n 30 | sed 's/^/#   /'
	fi
	ms=$(jq -r .ms "$j")
	reason=$(jq -r '.attempts[] | select(.strategy == "random_probe") | .reason' "$j")
	echo "# $desc: connected in $ms ms; $reason"
	echo "# connector logged: $(odds "$tmp/$tag.err"); listener logged: $(odds "$llog")"
	check "$desc: under 3 s" num_between "$ms" 0 3000
	check "$desc: trace names the landed probe and the odds" \
		grep -Eq '^probe [0-9]+ landed; p=[0-9.]+% \(miss [^)]*\) for [0-9]+ mappings' <<<"$reason"
	check "$desc: connector logged the success probability" grep -q "success probability" \
		"$tmp/$tag.err"
	check "$desc: listener logged the success probability" grep -q "success probability" "$llog"
}

listen h1a easy && A1=$ADDR && P1=$LPID
listen h2a hard && A2=$ADDR && P2=$LPID
base2=$(udp_socks "$P2")

# The hard side connects: it opens the mappings, the port-restricted listener probes them.
pair "symmetric-random -> port-restricted" h3a rnd-pr "$A1" "$tmp/easy.err"
# The hard side listens: the connector probes, the listener's lucky socket dials back.
pair "port-restricted -> symmetric-random" h1a pr-rnd "$A2" "$tmp/hard.err"

# Few descriptors: the hard side opens fewer mappings (RLIMIT_NOFILE minus what is in use
# minus a reserve), says so in the odds, and still gets through.
(
	ulimit -n 230
	connect h3a rlimit "$A1"
)
check "RLIMIT_NOFILE 230: connected" [ "$(jq -r .connected "$tmp/rlimit.json")" = true ]
n=$(jq -r '.attempts[] | select(.strategy == "random_probe") | .reason' "$tmp/rlimit.json" |
	sed -n 's/.* for \([0-9]*\) mappings.*/\1/p')
echo "# RLIMIT_NOFILE 230: $n mappings, $(jq -r .ms "$tmp/rlimit.json") ms"
check "RLIMIT_NOFILE 230: fewer mappings (${n:-?})" [ "${n:-256}" -lt 256 ] 2>/dev/null

# The listener closed all its probe sockets but the one that became the pipe, and that one
# closes with the pipe.
for ((i = 0; i < 30; i++)); do
	[ "$(udp_socks "$P2")" -le $((base2 + 1)) ] && break
	sleep 0.1
done
check "hard listener: probe sockets closed ($(udp_socks "$P2") sockets, $base2 before)" \
	[ "$(udp_socks "$P2")" -le $((base2 + 1)) ]

# Two random NATs: nothing to find; refused at once with the reason.
connect h3a rnd-rnd "$A2"
check "symmetric-random -> symmetric-random: exit 1" [ $? = 1 ]
reason=$(jq -r '.attempts[] | select(.strategy == "random_probe") | .reason' "$tmp/rnd-rnd.json")
echo "# symmetric-random -> symmetric-random: $reason"
check "symmetric-random -> symmetric-random: reason" grep -q "turn is needed" <<<"$reason"

check "listeners still running" alive "$P1"
check "hard listener still running" alive "$P2"

stopped() { grep -c "stopped from outside" "$tmp/hard.err"; }
probing() { grep -c "peer probing us" "$tmp/hard.err"; }

# The connector gives up while the hard listener holds its mappings: its CANCEL must make the
# listener close them at once, long before the listener's own time bound.  (Probing at 1/s:
# a lucky first probe, 0.4 %, would end the session by itself, which is fine too.)
s0=$(stopped)
c0=$(grep -c "^peer .* connected" "$tmp/hard.err")
WARPGATE_RP_RATE=1 connect h1a cancel "$A2" --timeout 100
check "cancel: connector gives up (exit 1)" [ $? = 1 ]
for ((i = 0; i < 30; i++)); do
	[ "$(stopped)" -gt "$s0" ] && [ "$(udp_socks "$P2")" -le "$base2" ] && break
	sleep 0.1
done
check "cancel: the listener stopped on the CANCEL" \
	[ "$(stopped)" -gt "$s0" -o "$(grep -c "^peer .* connected" "$tmp/hard.err")" -gt "$c0" ]
check "cancel: its mappings are closed ($(udp_socks "$P2") sockets, $base2 before)" \
	[ "$(udp_socks "$P2")" -le "$base2" ]

# The connector dies without a word (probing at 1/s, so nothing lands meanwhile): the
# listener's session lives on with its mappings until the node closes, which must free them.
p0=$(probing)
mkdir -p "$tmp/c-dead"
"$NATLAB" exec h1a env WARPGATE_HOME="$tmp/c-dead" WARPGATE_RP_RATE=1 "$WG" connect "$A2" \
	--strategy random_probe --send x --timeout 9000 "${SRV[@]}" >/dev/null 2>"$tmp/dead.err" &
cpid=$!
for ((i = 0; i < 100; i++)); do
	[ "$(probing)" -gt "$p0" ] && break
	sleep 0.1
done
sleep 0.2
kill -KILL "$cpid" 2>/dev/null
wait "$cpid" 2>/dev/null
check "killed connector: the listener still holds its mappings ($(udp_socks "$P2") sockets)" \
	[ "$(udp_socks "$P2")" -ge $((base2 + 100)) ]
s0=$(stopped)
kill -TERM "$P2"
wait "$P2"
check "hard listener exits cleanly while holding a session" [ $? = 0 ]
check "its session was freed by the node closing" [ "$(stopped)" -gt "$s0" ]
# Stop the listeners the way a user does; nothing may have been reported by the sanitizers
# (when built with them) on either side, leaks included.
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()
bad=$(grep -l -E "Sanitizer|runtime error" "$tmp"/*.err 2>/dev/null)
check "no sanitizer reports${bad:+ (in: $(basename -a $bad | tr '\n' ' '))}" [ -z "$bad" ]
for f in $bad; do grep -A 12 -E "Sanitizer|runtime error" "$f" | head -n 30 | sed 's/^/#   /'; done

tap_done
