#!/usr/bin/env bash
# NAT lab self-check: every NAT behaviour the lab offers, proven from the outside by
# `natlab verify` (the lab's own prober, cross-checked with stun-client and coturn's
# turnutils_natdiscovery), and a router that does not behave as labelled must fail it.
set -u
. "$(dirname "$0")/../lib/tap.sh"
. "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup turnserver mosquitto chronyd stun turnutils_natdiscovery bc

SITES=(open full-cone restricted port-restricted symmetric-random symmetric-seq,delta=3
	udp-blocked cgnat port-restricted:2,hairpin,ipv6 full-cone,hairpin
	symmetric-seq,hairpin,delta=1,base=40000 restricted,ipv6)

out=$(lab up "${SITES[@]}" 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
[ "$rc" = 0 ] || { not_ok "natlab up ${SITES[*]}"; tap_done; exit 1; }
ok "natlab up with ${#SITES[@]} sites, one per behaviour and modifier"
secs=$(sed -n 's/^natlab: up in \([0-9.]*\) s.*/\1/p' <<<"$out")
check "up of ${#SITES[@]} sites + all servers took ${secs:-?} s (< 5 s)" num_between "${secs:-99}" 0 5

# Re-emit verify's TAP lines as this test's own.
t0=$EPOCHREALTIME
vout=$(lab verify 2>&1)
vrc=$?
nv=0
while IFS= read -r line; do
	case $line in
	"ok "*) ok "${line#ok * - }"; nv=$((nv + 1)) ;;
	"not ok "*) not_ok "${line#not ok * - }"; nv=$((nv + 1)) ;;
	"#"*) echo "$line" ;;
	esac
done <<<"$vout"
echo "# verify took $(echo "$EPOCHREALTIME - $t0" | bc) s"
check "natlab verify exits 0 ($nv checks)" test "$vrc" = 0
check "verify covered every site (>= 60 checks, got $nv)" test "$nv" -ge 60

# Every NAT type really was checked by both external tools.
for t in full-cone restricted port-restricted symmetric-random symmetric-seq cgnat; do
	check "$t cross-checked by stun-client" grep -q "$t: stun-client says" <<<"$vout"
	check "$t cross-checked by turnutils_natdiscovery" grep -q "$t: turnutils_natdiscovery says" <<<"$vout"
done

# Mislabelled router: r4 is labelled port-restricted; a DMZ-style forward of every inbound UDP
# port turns it into endpoint-independent filtering, and verify must notice.
in_ns r4 nft insert rule inet wpg nat_pre iifname wan meta l4proto udp dnat ip to 10.4.0.2
bad=$(lab verify r4 2>&1)
brc=$?
check "verify fails for a router that filters unlike its label" test "$brc" != 0
check "the failure names the filtering mismatch" \
	grep -q "not ok .*r4 port-restricted: filtering: got 'endpoint-independent'" <<<"$bad"
check "other routers still verify" quiet lab verify r2 r3

# A sequential NAT whose ports step by 7 while labelled delta=3 must fail too.
elems=$(for ((i = 0; i < 1000; i++)); do printf '%d : %d, ' "$i" $((20000 + 7 * i)); done)
in_ns r6 nft flush map inet wpg seqport
in_ns r6 nft add element inet wpg seqport "{ ${elems%, } }"
bad=$(lab verify r6 2>&1)
check "verify fails for a sequential NAT with another port delta" \
	grep -q "not ok .*r6 symmetric-seq: port delta: got '7', want '3'" <<<"$bad"

check "natlab down" lab down
tap_done
