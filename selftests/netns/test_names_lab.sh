#!/usr/bin/env bash
# Names and signalling across the NAT lab: a listener registers NAME.p2p on namebumpd, a host
# behind another NAT resolves it at once and connects by name; another key cannot take the
# name; reverse_connect (pure signalling) keeps working with one MQTT broker stopped; two hosts
# on one LAN with no servers at all connect by name over the local link.
source "$(dirname "$0")/../lib/tap.sh"
source "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup
W=$WARP_BUILD/bin/warpgate
[ -x "$WARP_BUILD/bin/namebumpd" ] || skip_all "namebumpd not built"
tmp=$(mktemp -d /tmp/wpg-names.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do stop_pid "$p"; done; natlab_cleanup; rm -rf "$tmp"; }
trap cleanup EXIT

lab up full-cone port-restricted:2 >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; skip_all "natlab up failed"; }
labenv
[ -n "${WPG_NAMES:-}" ] || skip_all "the lab has no nickname server"
C=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" --ntp "$WPG_NTP" --mqtt "$WPG_MQTT1" --mqtt "$WPG_MQTT2"
	--nameserver "$WPG_NAMES" --nameserver-key "$WPG_NAMES_KEY" --no-upnp)
wg() { local h=$1; shift; in_ns "$h" env WARPGATE_HOME="$tmp/$h" "$W" "$@"; }
listen() { # host name logfile-prefix args...
	local h=$1 name=$2 out=$3
	shift 3
	bg_ns "$h" env WARPGATE_HOME="$tmp/$h" "$W" listen "$name" --echo "$@" >"$out.out" 2>"$out.err"
	pids+=("$BG_PID")
	for _ in $(seq 150); do [ -s "$out.out" ] && return 0; sleep 0.1; done
	return 1
}

check "alice (full cone) listens and registers alice.p2p" listen h1a alice "$tmp/alice" "${C[@]}"
alice_key=$(wg h1a id --name alice)
t0=$(date +%s%N)
js=$(wg h2a name get alice --json "${C[@]}")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "bob resolves alice.p2p right after registration (${ms} ms, incl. start-up)" \
	grep -q '"found":true' <<<"$js"
check "the record is owned by alice's key" grep -q "\"owner\":\"$alice_key\"" <<<"$js"
check "the record came from namebumpd" grep -q "\"server\":\"$WPG_NAMES\"" <<<"$js"
out=$(wg h2a name put alice "${C[@]}" 2>&1)
check "a PUT of alice with another key is refused (exit 1)" [ "$?" = 1 ]
check "... saying the name is owned by another key" grep -q "owned by another key" <<<"$out"
out=$(wg h2a connect alice --send hi "${C[@]}")
check "bob connects to alice by name: echo:hi" [ "$out" = "echo:hi" ]

# Reverse connect is signalling only: bob (port-restricted) cannot be dialled, alice can.
check "bob listens (port-restricted)" listen h2a bob "$tmp/bob" "${C[@]}"
js=$(wg h1a connect bob --send hi --strategy reverse_connect --json "${C[@]}")
check "alice reaches bob by reverse_connect over MQTT" grep -q '"reply":"echo:hi"' <<<"$js"
kill "$(lab_pid mqtt1)" 2>/dev/null
sleep 0.3
check "broker 1 is down" not alive "$(lab_pid mqtt1)"
js=$(wg h1a connect bob --send hi --strategy reverse_connect --json "${C[@]}")
check "with broker 1 down, signalling still arrives through broker 2" \
	grep -q '"reply":"echo:hi"' <<<"$js"

# No servers at all: carol and bob's second host share a LAN.
check "carol listens with no servers configured" \
	listen h2b carol "$tmp/carol" --no-upnp
out=$(wg h2a connect carol --send hi --no-upnp 2>"$tmp/lan.err")
check "a host on carol's LAN connects to carol by name with no servers: echo:hi" \
	[ "$out" = "echo:hi" ]
tap_done
