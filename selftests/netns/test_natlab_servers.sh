#!/usr/bin/env bash
# NAT lab servers, each used the way warpgate will use it, from hosts behind NATs: STUN (RFC 5780
# behaviour discovery), TURN (an allocation with long-term credentials), MQTT (publish/subscribe
# across two NATed hosts, both brokers), UPnP IGD and NAT-PMP (a mapping reachable from the
# internet side; refused behind CGNAT), NTP (chrony serving time) and the nickname server.
set -u
. "$(dirname "$0")/../lib/tap.sh"
. "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup turnserver turnutils_uclient turnutils_natdiscovery mosquitto mosquitto_sub \
	mosquitto_pub chronyd miniupnpd upnpc natpmpc bc

out=$(lab up port-restricted:2,upnp symmetric-random cgnat,upnp 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
[ "$rc" = 0 ] || { not_ok "natlab up"; tap_done; exit 1; }
ok "natlab up: port-restricted+upnp, symmetric-random, cgnat+upnp, all servers"
labenv
P=$NATLAB_TOOLS/prober

for v in WPG_STUN1 WPG_STUN2 WPG_STUN1_ALT WPG_STUN2_ALT WPG_TURN WPG_TURN_USER WPG_TURN_PASS \
	WPG_TURN_REALM WPG_MQTT1 WPG_MQTT2 WPG_NTP WPG_H1A_IP WPG_H2A_IP WPG_R1_WAN WPG_R2_WAN; do
	check "natlab env sets $v (${!v:-})" test -n "${!v:-}"
done

# ---- STUN: RFC 5780 (two addresses, two ports, OTHER-ADDRESS, CHANGE-REQUEST)
nd=$(in_ns h2a timeout 20 turnutils_natdiscovery -m -f "${WPG_STUN1%:*}" 2>&1)
check "STUN answers with OTHER-ADDRESS $WPG_STUN2_ALT" grep -q "Other addr: : $WPG_STUN2_ALT" <<<"$nd"
check "STUN mapping discovery (symmetric NAT): address and port dependent" \
	grep -q "NAT with Address and Port Dependent Mapping" <<<"$nd"
check "STUN CHANGE-REQUEST answers arrive from the alternate address (full view from an open path)" \
	grep -q "Response origin: : $WPG_STUN2_ALT" <<<"$(in_ns inet timeout 20 turnutils_natdiscovery -f "${WPG_STUN1%:*}" 2>&1)"

# ---- TURN: long-term credentials; allocation, permissions, channel data through two NATs
tu=$(in_ns h1a timeout 30 turnutils_uclient -u "$WPG_TURN_USER" -w "$WPG_TURN_PASS" -y -n 20 \
	-m 2 -l 200 "${WPG_TURN%:*}" 2>&1)
echo "$tu" | grep -E 'tot_send_msgs|lost packets|round trip' | sed 's/^/# h1a: /'
check "TURN relays every message between two allocations (behind port-restricted NAT)" \
	grep -q "Total lost packets 0 (0.000000%)" <<<"$tu"
check "TURN sent and received the same count" \
	grep -qE "tot_send_msgs=([0-9]+), tot_recv_msgs=\1$" <<<"$(grep 'start_mclient: tot_send_msgs' <<<"$tu")"
tu=$(in_ns h2a timeout 30 turnutils_uclient -u "$WPG_TURN_USER" -w "$WPG_TURN_PASS" -y -n 10 \
	-m 1 "${WPG_TURN%:*}" 2>&1)
check "TURN works from behind a symmetric NAT" grep -q "Total lost packets 0 (0.000000%)" <<<"$tu"
tu=$(in_ns h2a timeout 30 turnutils_uclient -u "$WPG_TURN_USER" -w wrong-password -y -n 2 \
	"${WPG_TURN%:*}" 2>&1)
check "TURN refuses a wrong password" grep -qiE "error 401|Unauthorized|Cannot complete Allocation" <<<"$tu"
# coturn tears a whole allocation down on ENETUNREACH: the TURN namespace must be able to send
# towards private space (the internet blackholes it, as the real one does).
check "TURN namespace has a default route" test -n "$(ip -n wpg-turn route show default)"
check "a datagram from the TURN server to an unroutable private address is sent, not refused" \
	quiet in_ns turn "$P" send --to 10.77.0.1:3480

# ---- MQTT: publish/subscribe across two NATed hosts, on both brokers
mqtt_across() {
	local broker=$1 sub=$2 pub=$3 topic=natlab/$RANDOM msg="hello-$RANDOM" log i got
	log=$(mktemp)
	in_ns "$sub" timeout 10 mosquitto_sub -h "${broker%:*}" -p "${broker#*:}" -t "$topic" -C 1 \
		-d >"$log" 2>&1 &
	local spid=$!
	for ((i = 0; i < 500; i++)); do
		grep -q SUBACK "$log" && break
		sleep 0.01
	done
	in_ns "$pub" mosquitto_pub -h "${broker%:*}" -p "${broker#*:}" -t "$topic" -m "$msg" -q 1
	wait "$spid"
	got=$(grep -c -x -- "$msg" "$log")
	rm -f "$log"
	[ "$got" = 1 ]
}
check "MQTT broker 1: h1a subscribes, h2a (symmetric NAT) publishes" mqtt_across "$WPG_MQTT1" h1a h2a
check "MQTT broker 2: h2a subscribes, h3a (CGNAT) publishes" mqtt_across "$WPG_MQTT2" h2a h3a

# ---- UPnP IGD and NAT-PMP on r1 (port-restricted): a real mapping, reachable from outside
up_out=$(in_ns h1a upnpc -i -a "$WPG_H1A_IP" 5555 5555 UDP 2>&1)
echo "$up_out" | tail -n 3 | sed 's/^/# /'
check "UPnP: miniupnpd reports the STUN-learned public address" \
	grep -q "ExternalIPAddress = $WPG_R1_PUBLIC" <<<"$up_out"
check "UPnP: AddPortMapping succeeds" grep -q "is redirected to internal $WPG_H1A_IP:5555" <<<"$up_out"
reach() {
	local host=$1 port=$2 public=$3 log
	log=$(mktemp)
	in_ns "$host" "$P" listen --bind "0.0.0.0:$port" --timeout-ms 3000 >"$log" 2>&1 &
	local lpid=$!
	for ((i = 0; i < 300; i++)); do
		grep -q listening "$log" && break
		sleep 0.01
	done
	in_ns inet "$P" send --to "$public:$port" --data "from-the-internet"
	wait "$lpid"
	local rc=$?
	grep -q "data=from-the-internet" "$log" && [ "$rc" = 0 ]
	rc=$?
	rm -f "$log"
	return "$rc"
}
check "UPnP: the mapped port is reachable from the internet" reach h1a 5555 "$WPG_R1_PUBLIC"
check "without a mapping the same NAT drops unsolicited datagrams" \
	not reach h1a 5557 "$WPG_R1_PUBLIC"
pmp=$(in_ns h1b natpmpc -g "$WPG_R1_LAN" -a 5556 5556 udp 60 2>&1)
check "NAT-PMP: mapping granted" grep -q "Mapped public port 5556 protocol UDP to local port 5556" <<<"$pmp"
check "NAT-PMP: the mapped port is reachable from the internet" reach h1b 5556 "$WPG_R1_PUBLIC"
check "UPnP: deleting the mapping closes the port" quiet in_ns h1a upnpc -i -d 5555 UDP
check "UPnP: after delete the port is closed again" not reach h1a 5555 "$WPG_R1_PUBLIC"
cg=$(in_ns h3a upnpc -i -a "$WPG_H3A_IP" 5555 5555 UDP 2>&1)
check "UPnP behind CGNAT: miniupnpd refuses (its STUN sees a restrictive NAT)" \
	grep -q "failed with code 501" <<<"$cg"

# ---- NTP: chrony serves time (and never steps this machine's shared clock: -x)
ntp=$(in_ns h2a timeout 15 chronyd -Q -t 10 "server $WPG_NTP iburst maxsamples 1" 2>&1)
echo "$ntp" | tail -n 2 | sed 's/^/# /'
off=$(sed -n 's/.*System clock wrong by \(-\?[0-9.]*\) seconds.*/\1/p' <<<"$ntp")
check "chrony answers an NTP client behind a symmetric NAT (offset ${off:-none} s)" \
	num_between "${off:-99}" -0.5 0.5
pid=$(lab_pid ntp)
check "chronyd runs with -x (does not touch the clock)" \
	grep -q -- ' -x ' <<<"$(tr '\0' ' ' <"/proc/$pid/cmdline")"

# ---- nickname server: started and waited for when built, otherwise reported absent
if [ -x "$WARP_BUILD/bin/namebumpd" ]; then
	check "namebumpd runs and natlab env names it ($WPG_NAMES)" test -n "${WPG_NAMES:-}"
	check "natlab env gives the name server's key" test -n "${WPG_NAMES_KEY:-}"
else
	skip "namebumpd serves names" "not built yet ($WARP_BUILD/bin/namebumpd)"
	check "natlab up reports the name server as absent" grep -q "names absent" <<<"$out"
fi

check "natlab down" quiet lab down
tap_done
