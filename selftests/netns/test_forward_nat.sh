#!/usr/bin/env bash
# `warpgate forward` / `expose` across two NATs in the NAT lab: an HTTP server behind a full-cone
# NAT (site 2) exposed with --allow, a forward behind a port-restricted NAT (site 1) carries HTTP
# requests to it over a direct pipe through both NATs; a port that is not exposed is refused; a
# key that is not allowed is refused in the handshake.  The loopback variant (no root) is
# selftests/unit/test_forward.sh.
set -u
. "$(dirname "$0")/../lib/tap.sh"
. "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup busybox
W=$WARP_BUILD/bin/warpgate
[ -x "$W" ] || skip_all "no $W (build first)"
busybox httpd --help >/dev/null 2>&1 || skip_all "needs busybox with httpd (busybox-static)"

tmp=$(mktemp -d /tmp/wpg-fwdnat.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
	natlab_cleanup
}
trap cleanup EXIT
trap '' PIPE

out=$(lab up --delay 5 --servers stun,names port-restricted full-cone 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
[ "$rc" = 0 ] || { not_ok "natlab up"; tap_done; exit 1; }
ok "natlab up: site 1 port-restricted (forward), site 2 full-cone (expose), STUN"
labenv

first_line() {
	local f=$1 pid=$2 i
	for i in $(seq 400); do
		[ -s "$f" ] && { head -n 1 "$f"; return 0; }
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
# The same bash /dev/tcp client as the loopback test, run inside a host's namespace.
cat >"$tmp/get.sh" <<'EOF'
hp=${1%%/*} path=/${1#*/}
exec 9<>"/dev/tcp/${hp%:*}/${hp#*:}" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hp" >&9 2>/dev/null
timeout 60 cat <&9 >"$2.raw" 2>/dev/null
head -n 1 "$2.raw" | grep -q '^HTTP/1\.[01] 200' || exit 1
hdr=$(sed '/^\r$/q' "$2.raw" | wc -c)
tail -c +$((hdr + 1)) "$2.raw" >"$2"
EOF
get() { in_ns "$1" bash "$tmp/get.sh" "$2" "$3"; }
# Long-running programs in a host: nsenter execs them, so $! is the program itself and the
# cleanup's kill reaches it (a wrapper's pid would leave it running after the lab is gone).
bg_in() {
	local ns=$1
	shift
	nsenter --net="/run/netns/wpg-$ns" "$@" &
	pids+=($!)
}
node_opts=(--stun "$WPG_STUN1" --stun "$WPG_STUN2" --no-upnp --no-mqtt --no-bpf)
# With the lab's nickname server the expose side registers srv.p2p and forward finds it by name.
[ -n "${WPG_NAMES:-}" ] && node_opts+=(--nameserver "$WPG_NAMES,$WPG_NAMES_KEY")

mkdir -p "$tmp/www"
echo "hello across two NATs" >"$tmp/www/index.html"
head -c 4000000 /dev/urandom >"$tmp/www/big.bin"
bg_in h2a busybox httpd -f -p 127.0.0.1:8080 -h "$tmp/www"

fkey=$(WARPGATE_HOME=$tmp/f "$W" id --name fwd 2>/dev/null)
bg_in h2a env WARPGATE_HOME="$tmp/e" "$W" expose "${node_opts[@]}" --name srv 8080 \
	--allow "$fkey" >"$tmp/ex.out" 2>"$tmp/ex.err"
epid=$!
addr=$(first_line "$tmp/ex.out" $epid)
check "expose behind the full cone prints its address" grep -q '^wg1\.' <<<"$addr"
dec=$("$W" addr --decode "$addr" --json)
check "its address carries the NAT's public address ($WPG_R2_PUBLIC)" \
	grep -q "\"ext\": \"$WPG_R2_PUBLIC\"" <<<"$dec"

bg_in h1a env WARPGATE_HOME="$tmp/f" "$W" forward -v "${node_opts[@]}" --name fwd "$addr" \
	0:localhost:8080 >"$tmp/fw.out" 2>"$tmp/fw.err"
fpid=$!
ep=$(first_line "$tmp/fw.out" $fpid)
check "forward behind the port-restricted NAT opens a pipe" grep -Eq '^127\.0\.0\.1:[0-9]+$' <<<"$ep"
check "... a direct one, to the full cone's public address" \
	grep -Eq "pipe up with .*\(.*, direct, (udp|tcp) $WPG_R2_PUBLIC:[0-9]+\)" "$tmp/fw.err"
sed 's/^/# forward: /' "$tmp/fw.err"

get h1a "$ep/index.html" "$tmp/got.html"
check "HTTP GET through forward/expose across two NATs" cmp -s "$tmp/got.html" "$tmp/www/index.html"
get h1a "$ep/big.bin" "$tmp/got.bin"
check "4 MB body intact across two NATs" cmp -s "$tmp/got.bin" "$tmp/www/big.bin"

# A port the expose side does not expose: the connection is reset, both sides say why.
bg_in h1a env WARPGATE_HOME="$tmp/f" "$W" forward "${node_opts[@]}" --name fwd \
	"$addr" 0:127.0.0.1:22 >"$tmp/fw2.out" 2>"$tmp/fw2.err"
f2pid=$!
ep2=$(first_line "$tmp/fw2.out" $f2pid)
get h1a "$ep2/" "$tmp/none" || true
check "unexposed port: no HTTP answer" [ ! -s "$tmp/none" ]
sleep 0.5
check "unexposed port: forward prints the refusal" \
	grep -q "refused by the peer: 127.0.0.1:22 is not exposed" "$tmp/fw2.err"
check "unexposed port: expose logs it" grep -q "127.0.0.1:22 refused" "$tmp/ex.err"

# A key the expose side does not allow: refused in the handshake.
out=$(in_ns h1a env WARPGATE_HOME="$tmp/x" timeout 30 "$W" forward "${node_opts[@]}" --name other \
	"$addr" 0:127.0.0.1:8080 2>&1)
rc=$?
check "unlisted key across the NATs: exit 1, refused in the handshake" \
	[ $rc = 1 ] && grep -q "does not allow our key" <<<"$out"

# By name, through the nickname server.
if [ -n "${WPG_NAMES:-}" ]; then
	bg_in h1a env WARPGATE_HOME="$tmp/f" "$W" forward "${node_opts[@]}" --name fwd srv \
		0:127.0.0.1:8080 >"$tmp/fw3.out" 2>"$tmp/fw3.err"
	f3pid=$!
	ep3=$(first_line "$tmp/fw3.out" $f3pid)
	get h1a "$ep3/index.html" "$tmp/got3.html"
	check "forward to the name srv (resolved by the nickname server) across two NATs" \
		cmp -s "$tmp/got3.html" "$tmp/www/index.html"
	kill $f3pid
	wait $f3pid 2>/dev/null
else
	skip "forward by name" "no nickname server in the lab (build namebumpd)"
fi

kill $f2pid $fpid $epid
wait $f2pid $fpid $epid 2>/dev/null
kill "${pids[@]}" 2>/dev/null
wait "${pids[@]}" 2>/dev/null
none_alive() { local p; for p in "$@"; do ! alive "$p" || return 1; done; }
check "every process it started has exited" none_alive "${pids[@]}"
check "no sanitizer reports" not grep -l "Sanitizer\|runtime error" "$tmp"/*.err
tap_done
