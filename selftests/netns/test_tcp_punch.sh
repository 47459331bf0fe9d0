#!/usr/bin/env bash
# tcp_punch between real warpgate binaries in the NAT lab, alone (--strategy tcp_punch):
# UDP-blocked sites (TCP passes, port-restricted) reach port-restricted, full-cone, other
# UDP-blocked and sequential symmetric sites by TCP simultaneous open, both directions, and
# IPv6 hosts behind two stateful firewalls; a random symmetric NAT is refused up front with
# the reason in the trace.  Each connect's JSON trace (strategy, path, transport) and the echo
# reply are checked and the connect times printed; then the same with 10 ms per WAN crossing
# and with 5 % loss, and at the end no punch socket is left in any listener and every listener
# exits cleanly (sanitizers included).
set -u
. "$(dirname "$0")/../lib/tap.sh"
. "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup turnserver mosquitto chronyd ss timeout
WG=$WARP_BUILD/bin/warpgate
[ -x "$WG" ] || skip_all "no $WG (make O=$WARP_BUILD)"
command -v jq >/dev/null || command -v python3 >/dev/null || skip_all "needs jq or python3"

work=$(mktemp -d)
declare -A LPID ADDR LISTEN0
cleanup() {
	local h
	for h in "${!LPID[@]}"; do kill "${LPID[$h]}" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$work"
	natlab_cleanup
}
trap cleanup EXIT

out=$(lab up --servers stun,mqtt,ntp udp-blocked port-restricted full-cone symmetric-random \
	udp-blocked symmetric-seq udp-blocked,ipv6 port-restricted,ipv6 open 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
[ "$rc" = 0 ] || { not_ok "natlab up"; tap_done; exit 1; }
ok "natlab up: udp-blocked, port-restricted, full-cone, symmetric-random, udp-blocked," \
	"symmetric-seq, udp-blocked+ipv6, port-restricted+ipv6, open"
labenv
SERVERS=(--ntp "$WPG_NTP" --mqtt "$WPG_MQTT1" --mqtt "$WPG_MQTT2" --no-upnp --log-level debug)
COMMON=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" "${SERVERS[@]}")
CONN_COMMON=("${COMMON[@]}")
HOSTS="h1a h2a h3a h4a h5a h6a h8a h9a"

# Listeners: an echo server per site; the first stdout line is its address.
for h in $HOSTS; do
	# Not through a shell function: $! must be the listener itself (natlab exec execs it).
	"$NATLAB" exec "$h" env WARPGATE_HOME="$work/$h" "$WG" listen "l$h" --echo "${COMMON[@]}" \
		--stun "$WPG_STUN1_V6" \
		>"$work/$h.out" 2>"$work/$h.err" &
	LPID[$h]=$!
done
for h in $HOSTS; do
	for ((i = 0; i < 300; i++)); do
		[ -s "$work/$h.out" ] && break
		alive "${LPID[$h]}" || break
		sleep 0.1
	done
	ADDR[$h]=$(head -n 1 "$work/$h.out")
	check "listener on $h ready (address printed)" test -n "${ADDR[$h]}"
done
[ -n "${ADDR[h1a]}" ] && [ -n "${ADDR[h2a]}" ] || { tap_done; exit 1; }
for h in $HOSTS; do
	LISTEN0[$h]=$(in_ns "$h" ss -Htln | wc -l)
done

# key=value lines from a connect's JSON: the result, the tcp_punch attempt that won (else the
# first one) and the reasons of all tcp_punch attempts.
summary() {
	if command -v jq >/dev/null; then
		jq -r '"connected=\(.connected)", "strategy=\(.strategy)", "path=\(.path)",
			"ms=\(.ms)", "reply=\(.reply // "")",
			([.attempts[] | select(.strategy == "tcp_punch")] |
			 (map(select(.outcome == "won")) + map(select(.outcome != "won")))) as $t |
			($t[0] | "tp_outcome=\(.outcome)", "tp_transport=\(.transport)",
			 "tp_family=\(.family)", "tp_endpoint=\(.endpoint)",
			 "tp_reason=\(.reason)", "tp_ms=\(.end_ms - .start_ms)"),
			"tp_reasons=\($t | map(.reason) | join("; "))"' "$1" 2>/dev/null
	else
		python3 - "$1" <<-'EOF' 2>/dev/null
			import json, sys
			j = json.load(open(sys.argv[1]))
			s = lambda v: "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
			for k in ("connected", "strategy", "path", "ms"):
			    print(f"{k}={s(j.get(k))}")
			print(f"reply={j.get('reply') or ''}")
			t = [a for a in j["attempts"] if a["strategy"] == "tcp_punch"]
			t.sort(key=lambda a: a["outcome"] != "won")
			a = t[0]
			print(f"tp_outcome={a['outcome']}\ntp_transport={a['transport']}")
			print(f"tp_family={s(a['family'])}\ntp_endpoint={a['endpoint']}")
			print(f"tp_reason={a['reason']}\ntp_ms={a['end_ms'] - a['start_ms']}")
			print("tp_reasons=" + "; ".join(a["reason"] for a in t))
		EOF
	fi
}

# connect FROM TO: --strategy tcp_punch, one message, JSON on stdout.
n=0
CONNECT_OPTS=(--timeout 8000)
connect() {
	local from=$1 to=$2
	n=$((n + 1))
	last="$work/c$n"
	in_ns "$from" env WARPGATE_HOME="$work/c$n" timeout 40 "$WG" connect "${ADDR[$to]}" \
		--strategy tcp_punch --send "hi from $from" --json "${CONNECT_OPTS[@]}" \
		"${CONN_COMMON[@]}" >"$last.json" 2>"$last.err"
	echo $? >"$last.rc"
	S=$(summary "$last.json")
}

expect_punched() {
	local from=$1 to=$2 what=$3
	connect "$from" "$to"
	check "$what $from -> $to: connected, strategy tcp_punch, path direct" \
		test "$(kv connected "$S")/$(kv strategy "$S")/$(kv path "$S")" = "true/tcp_punch/direct"
	check "$what $from -> $to: the tcp_punch attempt won over TCP" \
		test "$(kv tp_outcome "$S")/$(kv tp_transport "$S")" = "won/tcp"
	check "$what $from -> $to: echo reply" test "$(kv reply "$S")" = "echo:hi from $from"
	check "$what $from -> $to: exit status 0, no sanitizer report" \
		test "$(cat "$last.rc")" = 0 -a -z "$(grep -l Sanitizer "$last.err")"
	LC_NUMERIC=C printf '# %s %s -> %s: connected in %.1f ms (tcp_punch attempt %.1f ms)\n' \
		"$what" "$from" "$to" "$(kv ms "$S")" "$(kv tp_ms "$S")"
	if [ "$(kv connected "$S")" != true ]; then
		sed 's/^/#   json: /' "$last.json"
		grep -E 'tcp_punch|connect:' "$last.err" | sed 's/^/#   log: /'
	fi
}

expect_refused() {
	local from=$1 to=$2 want=$3
	connect "$from" "$to"
	check "random symmetric $from -> $to: not connected, exit status 1, no sanitizer report" \
		test "$(kv connected "$S")/$(cat "$last.rc")" = "false/1" -a \
		-z "$(grep -l Sanitizer "$last.err")"
	check "random symmetric $from -> $to: tcp_punch skipped, reason names $want" \
		test "$(kv tp_outcome "$S")" = skipped -a -n "$(grep -F "$want" <<<"$(kv tp_reason "$S")")"
	check "random symmetric $from -> $to: fails at once (under 1 s)" \
		num_between "$(kv ms "$S")" 0 1000
	echo "# reason: $(kv tp_reason "$S")"
}

# Sites: 1 udp-blocked, 2 port-restricted, 3 full-cone, 4 symmetric-random, 5 udp-blocked,
# 6 symmetric-seq, 7 udp-blocked+ipv6, 8 port-restricted+ipv6, 9 open.  The listener is the
# second host.
expect_punched h1a h2a "udp-blocked -> port-restricted:"
expect_punched h2a h1a "port-restricted -> udp-blocked:"
expect_punched h1a h3a "udp-blocked -> full-cone:"
expect_punched h3a h1a "full-cone -> udp-blocked:"
expect_punched h1a h5a "udp-blocked -> udp-blocked:"
expect_punched h5a h1a "udp-blocked -> udp-blocked:"
expect_punched h1a h6a "udp-blocked -> symmetric-seq (predicted ports):"
expect_punched h6a h1a "symmetric-seq -> udp-blocked (predicted ports):"
expect_refused h1a h4a "the peer's NAT maps each connection to a random port"
expect_refused h4a h1a "our NAT maps each connection to a random port"
# ... unless the other side is an open host: its punch port's listener takes the SYN from
# whatever port the random NAT picked (also when it arrives before the answer did).
expect_punched h4a h9a "symmetric-random -> open:"
expect_punched h9a h4a "open -> symmetric-random:"

# IPv6: no NAT, but both sites' firewalls forward only replies: a simultaneous open is a reply
# for both.  IPv4 is left out (no IPv4 STUN server for the connector).
CONN_COMMON=(--stun "$WPG_STUN1_V6" "${SERVERS[@]}")
expect_punched h7a h8a "IPv6 udp-blocked -> port-restricted (stateful firewalls):"
check "IPv6: the connection is over IPv6 ($(kv tp_endpoint "$S"))" \
	test "$(kv tp_family "$S")/$(kv tp_endpoint "$S" | cut -c1-10)" = "6/[2001:db8:"
check "IPv6: IPv4 skipped for want of a STUN server" \
	grep -q "no IPv4 STUN server" <<<"$(kv tp_reasons "$S")"
CONN_COMMON=("${COMMON[@]}")

# Latency: 10 ms per WAN crossing (40 ms RTT host to host): the meeting time follows the
# measured transit, both SYNs still cross.
lab impair r1 --delay 10 >/dev/null && lab impair r2 --delay 10 >/dev/null
expect_punched h1a h2a "10 ms delay: udp-blocked -> port-restricted:"
expect_punched h2a h1a "10 ms delay: port-restricted -> udp-blocked:"
# Loss: a lost SYN is retransmitted by the kernel (1 s, 3 s: inside the window).  A loss after
# the simultaneous open costs TCP's initial RTO (1 s, 3 s once a SYN was retransmitted: the
# open gives no RTT sample), hence the longer time limits.
lab impair r1 --delay 10 --loss 5 >/dev/null
CONNECT_OPTS=(--timeout 15000 --reply-timeout 15000)
expect_punched h1a h2a "10 ms delay, 5 % loss on one site: udp-blocked -> port-restricted:"
lab impair r1 >/dev/null && lab impair r2 >/dev/null

# Nothing left behind: the peers' CANCEL (or the window's end) closed every punch socket.
sleep 0.5
for h in $HOSTS; do
	check "$h: no punch socket left (listening sockets as at start, none in SYN-SENT)" \
		test "$(in_ns "$h" ss -Htln | wc -l)/$(in_ns "$h" ss -Htn state syn-sent | wc -l)" = \
		"${LISTEN0[$h]}/0"
done
for h in $HOSTS; do
	kill "${LPID[$h]}" 2>/dev/null
	wait "${LPID[$h]}"
	rc=$?
	unset "LPID[$h]"
	check "listener on $h exits cleanly (status $rc, no sanitizer report)" \
		test "$rc" = 0 -a -z "$(grep -l Sanitizer "$work/$h.err")"
done
tap_done
