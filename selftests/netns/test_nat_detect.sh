#!/usr/bin/env bash
# `warpgate nat --json` behind every router behaviour of the NAT lab reports the behaviour the
# router was built with, and agrees with an external tool (stun-client's RFC 3489 verdict run
# from the same host).  A host behind a miniupnpd router gets a working port mapping that is
# gone once the node exits.
source "$(dirname "$0")/../lib/tap.sh"
source "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup stun upnpc
W=$WARP_BUILD/bin/warpgate
tmp=$(mktemp -d /tmp/wpg-natdet.XXXXXX)
trap 'natlab_cleanup; rm -rf "$tmp"' EXIT

types=(open full-cone restricted port-restricted,upnp symmetric-random symmetric-seq udp-blocked)
lab up "${types[@]}" >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; skip_all "natlab up failed"; }
labenv
stun_ip=${WPG_STUN1%:*}

field() { grep -o "\"$1\": *\"[^\"]*\"" <<<"$2" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/'; }
# The JSON is pretty-printed: flatten it before picking the delta object.
delta_type() { tr -d ' \n' <<<"$1" | grep -o '"delta":{[^}]*}' | grep -o '"type":"[a-z]*"' | cut -d'"' -f4; }
delta_value() { tr -d ' \n' <<<"$1" | grep -o '"delta":{[^}]*}' | grep -o '"value":-*[0-9]*' | cut -d: -f2; }

# What the classic type should be per router label, and stun-client's words for it.
expect_type() {
	case $1 in
	open) echo open ;;
	full-cone) echo full-cone ;;
	restricted) echo restricted ;;
	port-restricted*) echo port-restricted ;;
	symmetric-*) echo symmetric ;;
	udp-blocked) echo blocked ;;
	esac
}
stun_words() {
	case $1 in
	open) echo "Open" ;;
	full-cone) echo "Independent Mapping, Independent Filter" ;;
	restricted) echo "Independent Mapping, Address Dependent Filter" ;;
	port-restricted) echo "Independent Mapping, Port Dependent Filter" ;;
	symmetric) echo "Dependent Mapping" ;;
	blocked) echo "Blocked" ;;
	esac
}

n=0
for t in "${types[@]}"; do
	n=$((n + 1))
	label=${t%%,*}
	h=h${n}a
	want=$(expect_type "$label")
	js=$(in_ns "$h" env WARPGATE_HOME="$tmp/$h" "$W" nat --json --stun "$WPG_STUN1" \
		--stun "$WPG_STUN2" --ntp "$WPG_NTP" 2>"$tmp/$h.err")
	rc=$?
	got=$(field type "$js")
	check "$label: warpgate nat says '$got' (want '$want')" [ "$got" = "$want" ]
	check "$label: exit 0 (a verdict, \"blocked\" included, is an answer)" [ "$rc" = 0 ]
	case $label in
	full-cone | open) m=endpoint-independent f=endpoint-independent ;;
	restricted) m=endpoint-independent f=address-dependent ;;
	port-restricted) m=endpoint-independent f=address-and-port-dependent ;;
	symmetric-*) m=address-and-port-dependent f=address-and-port-dependent ;;
	*) m= f= ;;
	esac
	if [ -n "$m" ]; then
		check "$label: mapping $m" [ "$(field mapping "$js")" = "$m" ]
		[ "$label" != open ] && check "$label: filtering $f" [ "$(field filtering "$js")" = "$f" ]
		pubvar=WPG_R${n}_PUBLIC ipvar=WPG_H${n}A_IP
		# An open site's hosts are public themselves.
		[ "$label" = open ] && pub=${!ipvar} || pub=${!pubvar}
		check "$label: external address is the public one ($pub)" grep -q "\"$pub:" <<<"$js"
	fi
	case $label in
	symmetric-seq) check "$label: delta independent +2" \
		[ "$(delta_type "$js")" = independent -a "$(delta_value "$js")" = 2 ] ;;
	symmetric-random) check "$label: delta random" [ "$(delta_type "$js")" = random ] ;;
	full-cone | restricted | port-restricted) check "$label: delta equal (ports kept)" \
		[ "$(delta_type "$js")" = equal ] ;;
	esac
	ext=$(in_ns "$h" timeout 20 stun "$stun_ip" -v 2>&1 | grep -m1 '^Primary:')
	check "$label: stun-client agrees ('${ext#Primary: }')" grep -q "$(stun_words "$want")" <<<"$ext"
done

# Port mapping: site 4 runs miniupnpd.  The node maps its port while it runs ...
bg_ns h4a env WARPGATE_HOME="$tmp/pm" WARPGATE_LOG=debug timeout 30 "$W" listen --echo \
	--stun "$WPG_STUN1" --stun "$WPG_STUN2" >"$tmp/pm.out" 2>"$tmp/pm.err"
lpid=$BG_PID
for _ in $(seq 100); do [ -s "$tmp/pm.out" ] && break; sleep 0.1; done
addr=$(head -n 1 "$tmp/pm.out")
dec=$("$W" addr --decode "$addr" --json)
mapped=$(grep -o '"ext_udp_port": [0-9]*' <<<"$dec" | head -n 1 | grep -o '[0-9]*$')
sleep 1
listing=$(in_ns h4a upnpc -i -l 2>&1)
check "UPnP router: the node's address carries a mapped port ($mapped)" [ -n "$mapped" -a "$mapped" != 0 ]
check "UPnP router: miniupnpd lists the node's mapping" grep -q "UDP *$mapped->" <<<"$listing"
# ... reachable from the internet: a node outside connects through it.
out=$(in_ns inet env WARPGATE_HOME="$tmp/out" timeout 20 "$W" connect "$addr" --send hi \
	--strategy direct_connect --no-upnp 2>&1 | tail -n 1)
check "UPnP router: an outside host reaches the node through the mapping" [ "$out" = "echo:hi" ]
stop_pid "$lpid"
check "UPnP router: the node exits cleanly on SIGTERM" [ "$?" = 0 ]
sleep 0.5
listing=$(in_ns h4a upnpc -i -l 2>&1)
check "UPnP router: the mapping is gone after the node exits" not grep -q "UDP *$mapped->" <<<"$listing"
tap_done
