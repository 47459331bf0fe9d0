#!/usr/bin/env bash
# NAT lab speed and link impairment: `natlab up` of two sites plus every server in under 3 s;
# the NFQUEUE delayer's real round trip with --delay 10; loss, duplication and reordering as
# measured by a receiver; `natlab impair` on a running lab; the conntrack UDP timeout knob with
# and without keepalives.
set -u
. "$(dirname "$0")/../lib/tap.sh"
. "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup turnserver mosquitto chronyd bc
P=$NATLAB_TOOLS/prober

# ---- speed: two sites + all servers
t0=$EPOCHREALTIME
out=$(lab up port-restricted full-cone 2>&1)
rc=$?
wall=$(echo "$EPOCHREALTIME - $t0" | bc)
echo "$out" | sed 's/^/# /'
check "natlab up of two sites + all servers" test "$rc" = 0
secs=$(sed -n 's/^natlab: up in \([0-9.]*\) s.*/\1/p' <<<"$out")
check "natlab up reports ${secs:-?} s, under 3 s" num_between "${secs:-99}" 0 2.999
check "wall clock of natlab up ${wall} s, under 3 s" num_between "$wall" 0 2.999
check "a second identical up is a no-op" grep -q "already up" <<<"$(lab up port-restricted full-cone)"
lab down >/dev/null

# ---- delay: 10 ms per WAN crossing, both directions
out=$(lab up --delay 10 port-restricted port-restricted open 2>&1)
echo "$out" | sed 's/^/# /'
check "natlab up --delay 10" test $? = 0
r=$(lab rtt h1a h2a 30)
echo "# $r"
min=$(sed -n 's/.*min=\([0-9.]*\).*/\1/p' <<<"$r")
med=$(sed -n 's/.* median=\([0-9.]*\).*/\1/p' <<<"$r")
check "host-to-host RTT across two routers never beats 4 x 10 ms (min $min ms)" num_between "${min:-0}" 40 41.5
check "host-to-host RTT across two routers is 40 ms + small overhead (median $med ms)" \
	num_between "${med:-0}" 40 42
r=$(in_ns h1a "$P" rtt --to "${WPG_PROBE1:-198.18.0.2:4000}" -n 20 --interval-ms 20)
echo "# h1a -> internet: $r"
med=$(sed -n 's/.* median=\([0-9.]*\).*/\1/p' <<<"$r")
check "host-to-internet RTT across one router is 20 ms + small overhead (median $med ms)" \
	num_between "${med:-0}" 20 21.5
pids=$(lab_procs | grep -c '^delay')
check "one delayer process per router ($pids for 3 sites)" test "$pids" = 3

# ---- loss, duplication, reordering on r3's link (an open site: the internet sends straight in)
burst() {
	local log
	log=$(mktemp)
	in_ns h3a "$P" listen --bind 0.0.0.0:7000 --count 100000 --timeout-ms 2500 --quiet >"$log" &
	local lpid=$!
	for ((i = 0; i < 300; i++)); do
		grep -q listening "$log" && break
		sleep 0.01
	done
	in_ns inet "$P" send --to "$WPG_H3A_IP:7000" -n 500 --interval-ms 1 --data burst
	wait "$lpid"
	tail -n 1 "$log"
	rm -f "$log"
}
labenv
lab impair r3 --delay 0 --loss 20 >/dev/null
b=$(burst)
echo "# loss 20%: $b"
u=$(sed -n 's/.*unique=\([0-9]*\).*/\1/p' <<<"$b")
check "loss 20%: $u of 500 arrive (expect 400 +- 50)" num_between "${u:-0}" 350 450
lab impair r3 --loss 0 --dup 20 >/dev/null
b=$(burst)
echo "# dup 20%: $b"
u=$(sed -n 's/.*unique=\([0-9]*\).*/\1/p' <<<"$b")
d=$(sed -n 's/.*dup=\([0-9]*\).*/\1/p' <<<"$b")
check "dup 20%: all 500 arrive once ($u)" test "${u:-0}" = 500
check "dup 20%: $d duplicates (expect 100 +- 50)" num_between "${d:-0}" 50 150
lab impair r3 --dup 0 --reorder 20 --delay 2 >/dev/null
b=$(burst)
echo "# reorder 20%: $b"
u=$(sed -n 's/.*unique=\([0-9]*\).*/\1/p' <<<"$b")
o=$(sed -n 's/.*reordered=\([0-9]*\).*/\1/p' <<<"$b")
check "reorder 20%: all 500 arrive ($u)" test "${u:-0}" = 500
check "reorder 20%: $o arrive after a later one (expect about 100)" num_between "${o:-0}" 40 160
lab impair r3 --reorder 0 --delay 0 >/dev/null
b=$(burst)
echo "# clean: $b"
check "impairments removed: 500 in order, no duplicates" \
	grep -q "unique=500 dup=0 reordered=0" <<<"$b"
pids=$(lab_procs | grep -c '^delay3 ')
check "no delayer left on r3 without delay or reordering" test "$pids" = 0
lab down >/dev/null

# ---- conntrack UDP timeout: mappings die after 2 s idle unless kept alive
lab up --udp-timeout 2 --servers stun port-restricted full-cone >/dev/null
check "routers run with nf_conntrack_udp_timeout=2" \
	test "$(in_ns r1 cat /proc/sys/net/netfilter/nf_conntrack_udp_timeout)" = 2
for h in h1a h2a; do
	t=port-restricted
	[ "$h" = h2a ] && t=full-cone
	check "$t: an answer 1 s later still gets through" \
		quiet in_ns "$h" "$P" reply-after --to 198.18.0.2:4000 --after-ms 1000
	check "$t: an answer 3 s later is dropped (mapping expired)" \
		not quiet in_ns "$h" "$P" reply-after --to 198.18.0.2:4000 --after-ms 3000
	check "$t: with a keepalive every second an answer 3.5 s later gets through" \
		quiet in_ns "$h" "$P" reply-after --to 198.18.0.2:4000 --after-ms 3500 --keepalive-ms 1000
done

check "natlab down" quiet lab down
tap_done
