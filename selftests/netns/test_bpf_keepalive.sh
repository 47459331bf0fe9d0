#!/usr/bin/env bash
# Keepalives answered by the kernel while the node is stopped.
#
# Two namespaces joined by a veth: the pinger (A, 198.18.0.1 / fd00:77::1) pings the
# responder (B, .2 / ::2) every second.  B loads the fast path, registers the pipe, and is
# SIGSTOPped: every ping must still get its pong (XDP_TX on B's veth; A's veth runs a
# trivial XDP program so the bounced frames are received).  Then: IPv6, a sender without UDP
# checksums, the TC fallback, crash leftovers cleaned by the next start, and a control run
# without BPF where pongs stop as soon as B stops.
# WARP_KA_TEST_SECS (default 60) sets the length of the main run.
# vmtest: yes
. "$(dirname "$0")/../lib/tap.sh"
need_root

SECS=${WARP_KA_TEST_SECS:-60}
PEER=$WARP_BUILD/tests/netns/bpf_ka_peer
[ -x "$PEER" ] || skip_all "missing $PEER (build the tests first)"
NA=wpk-a-$$
NB=wpk-b-$$
PIN=/sys/fs/bpf/warpgate-kat-$$
TMP=$(mktemp -d)
CID_A=a0a1a2a3a4a5a6a7
CID_B=b0b1b2b3b4b5b6b7
RESP=

cleanup() {
	if [ -n "$RESP" ]; then
		kill -CONT "$RESP" 2>/dev/null
		kill -TERM "$RESP" 2>/dev/null
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$RESP" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$RESP" 2>/dev/null
		wait "$RESP" 2>/dev/null
	fi
	ip netns del "$NA" 2>/dev/null
	ip netns del "$NB" 2>/dev/null
	rm -rf "$PIN" "$TMP"
}
trap cleanup EXIT

ip netns add "$NA" && ip netns add "$NB" || skip_all "cannot create namespaces"
# pins need bpffs on /sys/fs/bpf (a bare VM guest may not mount it)
BPFFS=0
[ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" = bpf_fs ] && BPFFS=1
ip link add va netns "$NA" type veth peer name vb netns "$NB"
ip -n "$NA" addr add 198.18.0.1/24 dev va
ip -n "$NB" addr add 198.18.0.2/24 dev vb
ip -n "$NA" addr add fd00:77::1/64 dev va nodad
ip -n "$NB" addr add fd00:77::2/64 dev vb nodad
for n in "$NA" "$NB"; do ip -n "$n" link set lo up; done
ip -n "$NA" link set va up
ip -n "$NB" link set vb up

# start_responder NAME ARGS...: runs B in the background, waits until it is serving.
start_responder() {
	local name=$1
	shift
	rm -f "$TMP/ready"
	"$PEER" responder --netns "$NB" --ifname vb --pin-root "$PIN" --name "$name" \
		--cid $CID_B --peer-cid $CID_A --ready "$TMP/ready" "$@" 2>"$TMP/resp.err" &
	RESP=$!
	for _ in $(seq 50); do [ -s "$TMP/ready" ] && break; sleep 0.1; done
	[ -s "$TMP/ready" ] || { cat "$TMP/resp.err" >&2; return 1; }
	echo "# responder: $(cat "$TMP/ready")"
}

stop_responder() {
	kill -CONT "$RESP" 2>/dev/null
	kill -TERM "$RESP"
	wait "$RESP"
	local rc=$?
	RESP=
	return $rc
}

# ping COUNT EXPECT ARGS...
ping_b() {
	local count=$1 expect=$2
	shift 2
	"$PEER" pinger --netns "$NA" --cid $CID_A --peer-cid $CID_B --count "$count" \
		--xdp-pass va --expect "$expect" "$@" >"$TMP/ping.out" 2>&1
	local rc=$?
	echo "# pinger: $(tr '\n' ' ' <"$TMP/ping.out")"
	return $rc
}

v4="--bind 198.18.0.1:7001 --peer 198.18.0.2:7000"
b4="--bind 198.18.0.2:7000 --peer 198.18.0.1:7001"
v6="--bind [fd00:77::1]:7001 --peer [fd00:77::2]:7000"
b6="--bind [fd00:77::2]:7000 --peer [fd00:77::1]:7001"

# --- main run: IPv4, XDP, responder stopped for SECS seconds
if start_responder ka $b4; then
	check "responder runs native XDP" grep -q "bpf: active (xdp: vb)" "$TMP/ready"
	kill -STOP "$RESP"
	check "all $SECS pings answered over ${SECS}s while the responder is stopped" \
		ping_b "$SECS" all $v4
	if [ $BPFFS = 1 ]; then
		"$PEER" stat --pin-root "$PIN" --name ka --cid $CID_B >"$TMP/stat" 2>&1
		echo "# map: $(cat "$TMP/stat")"
		check "map counts $SECS answers and a fresh last_seen" \
			awk -v n="$SECS" '$1=="answered" && $2==n && $4 < 2000 {ok=1} END {exit !ok}' "$TMP/stat"
	else
		skip "map counts $SECS answers and a fresh last_seen" "no bpffs on /sys/fs/bpf"
	fi
	check "responder exits cleanly after SIGCONT+SIGTERM" stop_responder
	check "pins removed on close" test ! -e "$PIN/ka"
	check "XDP detached on close" sh -c "! ip -n $NB link show vb | grep -q xdp"
else
	not_ok "responder starts (XDP, IPv4)"
fi

# --- IPv6 and a sender without UDP checksums
if start_responder ka6 $b6; then
	kill -STOP "$RESP"
	check "IPv6: 5 pings answered while stopped" ping_b 5 all $v6 --interval-ms 300
	stop_responder
else
	not_ok "responder starts (XDP, IPv6)"
fi
if start_responder kaz $b4; then
	kill -STOP "$RESP"
	check "IPv4 without UDP checksum: 5 pings answered" \
		ping_b 5 all $v4 --interval-ms 300 --no-csum
	stop_responder
else
	not_ok "responder starts (XDP, no checksum)"
fi

# --- TC fallback (clsact ingress + redirect) does the same
if start_responder katc $b4 --tc; then
	check "responder runs the TC fallback" grep -q "bpf: active (tc: vb)" "$TMP/ready"
	kill -STOP "$RESP"
	check "TC: 5 pings answered while stopped" ping_b 5 all $v4 --interval-ms 300
	stop_responder
else
	not_ok "responder starts (TC)"
fi

# --- a crashed run: TC filter and pins stay behind, the next start removes them
if start_responder crash $b4 --tc; then
	kill -KILL "$RESP"
	wait "$RESP" 2>/dev/null
	RESP=
	if [ $BPFFS = 1 ]; then
		check "crash leaves pins behind" test -e "$PIN/crash/owner"
	else
		skip "crash leaves pins behind" "no bpffs on /sys/fs/bpf"
	fi
	check "crash leaves the TC filter behind" sh -c "ip netns exec $NB tc filter show dev vb ingress | grep -q warp_tc"
	if start_responder crash $b4; then
		check "restart removed the stale TC filter" \
			sh -c "! ip netns exec $NB tc filter show dev vb ingress | grep -q warp_tc"
		check "restart answers pings (XDP)" ping_b 3 all $v4 --interval-ms 300
		stop_responder
	else
		not_ok "restart after a crash"
	fi
else
	not_ok "responder starts (crash run)"
fi

# --- control: no BPF; userspace answers while running, nothing once stopped
if start_responder ctl $b4 --no-bpf; then
	check "control responder reports bpf off" grep -q "bpf: off" "$TMP/ready"
	check "control: userspace answers while running" ping_b 3 all $v4 --interval-ms 300
	kill -STOP "$RESP"
	check "control: no pong at all once the responder is stopped" \
		ping_b 5 none $v4 --interval-ms 300
	stop_responder
else
	not_ok "responder starts (no BPF)"
fi

tap_done
