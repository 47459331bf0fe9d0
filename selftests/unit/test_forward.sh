#!/usr/bin/env bash
# `warpgate forward` / `warpgate expose` on loopback (test mode): HTTP through the forward,
# integrity of a large body, many connections at once, a stalled connection that must not
# stall the others, a port that is not exposed, keys not allowed, a peer that is not an
# expose side, bad arguments, and the same through two daemons.
# The two-NAT variant is selftests/natlab/test_forward_nat.sh (netns tier, root).
source "$(dirname "$0")/../lib/tap.sh"
W=$WARP_BUILD/bin/warpgate
[ -x "$W" ] || skip_all "no $W (build first)"
command -v busybox >/dev/null && busybox httpd --help >/dev/null 2>&1 ||
	skip_all "needs busybox with httpd (Debian: busybox-static)"
tmp=$(mktemp -d /tmp/wpg-forward.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap '' PIPE # a reset connection must fail a check, not kill the script
export WARPGATE_HOME=$tmp/home

# A free TCP port on 127.0.0.1 (the kernel picks it; we let it go again at once).
free_port() {
	local p
	for p in $(shuf -i 20000-60000 -n 50); do
		(exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
	done
	return 1
}
# Waits until FILE has a first line (or the process PID died); prints the line.
first_line() {
	local f=$1 pid=$2 i
	for i in $(seq 200); do
		[ -s "$f" ] && { head -n 1 "$f"; return 0; }
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
# HTTP/1.0 GET of HOST:PORT/PATH into OUT (the body only), with bash's /dev/tcp: no
# client tool needed.  Fails unless the status is 200.
get() {
	local hp=${1%%/*} path=/${1#*/} raw=$2.raw hdr
	exec 9<>"/dev/tcp/${hp%:*}/${hp#*:}" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hp" >&9 2>/dev/null
	timeout 30 cat <&9 >"$raw" 2>/dev/null
	exec 9<&-
	head -n 1 "$raw" | grep -q '^HTTP/1\.[01] 200' || return 1
	hdr=$(sed '/^\r$/q' "$raw" | wc -c)
	tail -c +$((hdr + 1)) "$raw" >"$2"
	rm -f "$raw"
}
not() { ! "$@"; }
can_connect() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
pubkey_of() { "$W" addr --decode "$1" --json | sed -n 's/.*"pubkey": "\([0-9a-f]*\)".*/\1/p'; }

mkdir -p "$tmp/www"
echo "hello through warpgate" >"$tmp/www/index.html"
head -c 8000000 /dev/urandom >"$tmp/www/big.bin"
head -c 40000000 /dev/zero >"$tmp/www/huge.bin"
hport=$(free_port)
busybox httpd -f -p "127.0.0.1:$hport" -h "$tmp/www" &
pids+=($!)
other=$(free_port)

# ---- expose + forward, standalone nodes
"$W" expose --test-mode "$hport" >"$tmp/ex.out" 2>"$tmp/ex.err" &
epid=$!
pids+=($epid)
addr=$(first_line "$tmp/ex.out" $epid)
check "expose prints its address first" grep -q '^wg1\.' <<<"$addr"
check "expose without --allow warns" grep -q "warning: no --allow" "$tmp/ex.err"

"$W" forward --test-mode "$addr" "0:127.0.0.1:$hport" >"$tmp/fw.out" 2>"$tmp/fw.err" &
fpid=$!
pids+=($fpid)
local_ep=$(first_line "$tmp/fw.out" $fpid)
check "forward prints its listen address first" grep -Eq '^127\.0\.0\.1:[0-9]+$' <<<"$local_ep"

get "$local_ep/index.html" "$tmp/got.html"
check "HTTP GET through forward/expose" cmp -s "$tmp/got.html" "$tmp/www/index.html"
get "$local_ep/big.bin" "$tmp/got.bin"
check "8 MB body arrives intact" cmp -s "$tmp/got.bin" "$tmp/www/big.bin"

gets=()
for i in $(seq 8); do
	get "$local_ep/big.bin" "$tmp/par.$i" &
	gets+=($!)
done
wait "${gets[@]}"
all=1
for i in $(seq 8); do cmp -s "$tmp/par.$i" "$tmp/www/big.bin" || all=0; done
check "8 parallel connections over one pipe, all intact" [ $all = 1 ]

# A connection that never reads a 40 MB reply must not stall the pipe for the others.
exec 7<>"/dev/tcp/${local_ep%:*}/${local_ep#*:}"
printf 'GET /huge.bin HTTP/1.0\r\n\r\n' >&7
sleep 0.5
start=$(date +%s%N)
get "$local_ep/index.html" "$tmp/got2.html"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "a stalled connection does not stall others (${ms} ms)" \
	[ "$ms" -lt 3000 ] && cmp -s "$tmp/got2.html" "$tmp/www/index.html"
head -c 1000 <&7 >/dev/null
exec 7<&-

# ---- a port the expose side does not expose
"$W" forward --test-mode "$addr" "0:127.0.0.1:$other" >"$tmp/fw2.out" 2>"$tmp/fw2.err" &
f2pid=$!
pids+=($f2pid)
ep2=$(first_line "$tmp/fw2.out" $f2pid)
exec 8<>"/dev/tcp/${ep2%:*}/${ep2#*:}"
printf 'GET / HTTP/1.0\r\n\r\n' >&8 2>/dev/null
reply=$(timeout 5 cat <&8 2>/dev/null | head -c 100)
exec 8<&-
check "unexposed port: the TCP connection is closed without data" [ -z "$reply" ]
sleep 0.2
check "unexposed port: forward names the refusal" \
	grep -q "refused by the peer: 127.0.0.1:$other is not exposed" "$tmp/fw2.err"
check "unexposed port: expose logs it" grep -q "127.0.0.1:$other refused" "$tmp/ex.err"
kill $f2pid $fpid $epid
wait $f2pid $fpid $epid 2>/dev/null

# ---- --allow: only bob's key gets a pipe
bob=$("$W" id --name bob 2>/dev/null)
"$W" id --name eve >/dev/null 2>&1
"$W" expose --test-mode "127.0.0.1:$hport" --allow "$bob" >"$tmp/ex3.out" 2>"$tmp/ex3.err" &
epid=$!
pids+=($epid)
addr3=$(first_line "$tmp/ex3.out" $epid)
check "expose --allow does not warn" not grep -q "warning" "$tmp/ex3.err"
out=$(timeout 20 "$W" forward --test-mode --name eve "$addr3" "0:127.0.0.1:$hport" 2>&1)
rc=$?
check "unlisted key: forward exits 1" [ $rc = 1 ]
check "unlisted key: refused at the handshake, said so" grep -q "does not allow our key" <<<"$out"
"$W" forward --test-mode --name bob "$addr3" "0:localhost:$hport" >"$tmp/fw3.out" 2>"$tmp/fw3.err" &
fpid=$!
pids+=($fpid)
ep3=$(first_line "$tmp/fw3.out" $fpid)
get "$ep3/index.html" "$tmp/got3.html"
check "listed key: HTTP through (localhost means 127.0.0.1)" cmp -s "$tmp/got3.html" "$tmp/www/index.html"
kill $fpid $epid
wait $fpid $epid 2>/dev/null

# ---- the pipe ends (expose restarts): the next connection opens a new one
nport=$(free_port)
"$W" expose --test-mode --name carol --port "$nport" "$hport" >"$tmp/ex4.out" 2>/dev/null &
epid=$!
pids+=($epid)
addr4=$(first_line "$tmp/ex4.out" $epid)
"$W" forward --test-mode "$addr4" "0:127.0.0.1:$hport" >"$tmp/fw4.out" 2>"$tmp/fw4.err" &
fpid=$!
pids+=($fpid)
ep4=$(first_line "$tmp/fw4.out" $fpid)
get "$ep4/index.html" "$tmp/got4a.html"
kill $epid
wait $epid 2>/dev/null
"$W" expose --test-mode --name carol --port "$nport" "$hport" >"$tmp/ex5.out" 2>/dev/null &
epid=$!
pids+=($epid)
first_line "$tmp/ex5.out" $epid >/dev/null
get "$ep4/index.html" "$tmp/got4b.html"
check "after the expose side restarted, the next connection gets through" \
	cmp -s "$tmp/got4b.html" "$tmp/www/index.html"
check "... and forward said the old pipe ended" grep -q "pipe closed" "$tmp/fw4.err"
kill $fpid $epid
wait $fpid $epid 2>/dev/null

# ---- a peer that is not an expose side; an unreachable one
"$W" listen --test-mode --echo >"$tmp/l.out" 2>/dev/null &
lpid=$!
pids+=($lpid)
laddr=$(first_line "$tmp/l.out" $lpid)
out=$(timeout 20 "$W" forward --test-mode "$laddr" "0:127.0.0.1:$hport" 2>&1)
rc=$?
check "non-expose peer: exit 1, says why" \
	[ $rc = 1 ] && grep -q "does not speak the forwarding protocol" <<<"$out"
kill $lpid
wait $lpid 2>/dev/null
out=$(timeout 20 "$W" forward --test-mode --timeout 1500 "$laddr" "0:127.0.0.1:$hport" 2>&1)
rc=$?
check "unreachable peer: exit 1 with the reason" [ $rc = 1 ] && grep -q "no pipe to" <<<"$out"

# ---- bad arguments
t() { # expected-rc pattern args...
	local want=$1 pat=$2 out rc
	shift 2
	out=$(timeout 20 "$W" "$@" 2>&1)
	rc=$?
	check "$* -> exit $want ($pat)" [ "$rc" = "$want" ] && grep -q -- "$pat" <<<"$out"
}
t 2 "missing PORT" expose --test-mode
t 2 "expected PORT" expose --test-mode 70000
t 2 "expected PORT" expose --test-mode "::1:80"
t 2 "is not a public key" expose --test-mode 80 --allow 1234
t 2 "expected TARGET" forward --test-mode "$addr"
t 2 "expected LOCALPORT:HOST:PORT" forward --test-mode "$addr" 8080:80
t 2 "expected LOCALPORT:HOST:PORT" forward --test-mode "$addr" 99999:127.0.0.1:80
t 2 "is not an IP address" forward --test-mode --bind nowhere "$addr" 0:127.0.0.1:80
t 2 "no pipe to" forward --test-mode wg1.AAAA 0:127.0.0.1:80
t 2 "unrecognized option" forward --test-mode --frobnicate "$addr" 0:127.0.0.1:80
busy=$(free_port)
busybox httpd -f -p "127.0.0.1:$busy" -h "$tmp/www" &
bpid=$!
pids+=($bpid)
sleep 0.2
t 4 "cannot listen on 127.0.0.1:$busy" forward --test-mode "$addr" "$busy:127.0.0.1:80"
echo '{"ports": 1}' >"$tmp/bad.json"
t 3 "bad.json: \$.ports: unknown key" expose --test-mode 80 --config "$tmp/bad.json"
t 3 "bad.json: \$.ports: unknown key" forward --test-mode "$addr" 0:127.0.0.1:80 --config "$tmp/bad.json"

# ---- the same through daemons: expose via daemon A, forward via daemon B
da=$tmp/a db=$tmp/b
WARPGATE_HOME=$da "$W" daemon --test-mode >"$tmp/da.out" 2>"$tmp/da.err" &
dapid=$!
pids+=($dapid)
WARPGATE_HOME=$db "$W" daemon --test-mode >"$tmp/db.out" 2>"$tmp/db.err" &
dbpid=$!
pids+=($dbpid)
daddr=$(first_line "$tmp/da.out" $dapid)
first_line "$tmp/db.out" $dbpid >/dev/null
WARPGATE_HOME=$da "$W" expose "$hport" >"$tmp/dex.out" 2>"$tmp/dex.err" &
depid=$!
pids+=($depid)
dexaddr=$(first_line "$tmp/dex.out" $depid)
check "expose through the daemon serves the daemon's identity" \
	[ -n "$dexaddr" ] && [ "$(pubkey_of "$dexaddr")" = "$(pubkey_of "$daddr")" ]
check "expose through the daemon says so" grep -q "through the daemon" "$tmp/dex.err"
WARPGATE_HOME=$db "$W" forward --json "$daddr" "0:127.0.0.1:$hport" >"$tmp/dfw.out" 2>"$tmp/dfw.err" &
dfpid=$!
pids+=($dfpid)
js=$(first_line "$tmp/dfw.out" $dfpid)
check "forward --json through the daemon: listen, peer, daemon:true" \
	grep -Eq '^\{"listen":"127\.0\.0\.1:[0-9]+","target":"wg1\.[^"]+","host":"127\.0\.0\.1","port":[0-9]+,"peer":"0[23][0-9a-f]{64}","daemon":true\}$' <<<"$js"
dep=$(sed 's/.*"listen":"\([^"]*\)".*/\1/' <<<"$js")
get "$dep/big.bin" "$tmp/dgot.bin"
check "8 MB through two daemons intact" cmp -s "$tmp/dgot.bin" "$tmp/www/big.bin"
st=$(WARPGATE_HOME=$db "$W" status --json)
check "daemon B status lists the forward and its pipe" \
	grep -q "\"listen\": \"$dep\"" <<<"$st" && grep -q '"owner": "forward"' <<<"$st"
st=$(WARPGATE_HOME=$da "$W" status --json)
check "daemon A status lists the exposed port" grep -q "\"port\": $hport" <<<"$st"
# Per-port keys: a second client exposes another port to carol only.  bob (allowed by the
# first rule) gets through the handshake, but not to carol's port.
carol=$("$W" id --name carol 2>/dev/null)
port2=$(free_port)
busybox httpd -f -p "127.0.0.1:$port2" -h "$tmp/www" &
pids+=($!)
WARPGATE_HOME=$da "$W" expose "$port2" --allow "$carol" >"$tmp/dex2.out" 2>"$tmp/dex2.err" &
de2pid=$!
pids+=($de2pid)
first_line "$tmp/dex2.out" $de2pid >/dev/null
"$W" forward --test-mode --name bob "$daddr" "0:127.0.0.1:$port2" >"$tmp/pb.out" 2>"$tmp/pb.err" &
pbpid=$!
pids+=($pbpid)
pbep=$(first_line "$tmp/pb.out" $pbpid)
check "daemon: a key allowed on one port opens a pipe" [ -n "$pbep" ]
get "$pbep/index.html" "$tmp/pb.html"
check "daemon: ... but carol's port refuses it" [ ! -s "$tmp/pb.html" ]
sleep 0.2
check "daemon: ... saying the port is not exposed to this key" \
	grep -q "is not exposed to this key" "$tmp/pb.err"
"$W" forward --test-mode --name carol "$daddr" "0:127.0.0.1:$port2" >"$tmp/pc.out" 2>/dev/null &
pcpid=$!
pids+=($pcpid)
pcep=$(first_line "$tmp/pc.out" $pcpid)
get "$pcep/index.html" "$tmp/pc.html"
check "daemon: carol reaches her port" cmp -s "$tmp/pc.html" "$tmp/www/index.html"
kill $pbpid $pcpid $de2pid
wait $pbpid $pcpid $de2pid 2>/dev/null

kill $dfpid
wait $dfpid 2>/dev/null
sleep 0.3
check "the forward ends with its client" not can_connect "$dep"
kill $depid
wait $depid 2>/dev/null
sleep 0.2
st=$(WARPGATE_HOME=$da "$W" status --json)
check "the expose ends with its client" grep -q '"exposes": \[\]' <<<"$st"
kill $dapid $dbpid
wait $dapid
rca=$?
wait $dbpid
rcb=$?
check "both daemons exit 0 on SIGTERM" [ $rca = 0 -a $rcb = 0 ]
# Sanitizer builds: every process we started must have ended clean.
check "no sanitizer reports from any process" \
	not grep -l "Sanitizer\|runtime error" "$tmp"/*.err
tap_done
