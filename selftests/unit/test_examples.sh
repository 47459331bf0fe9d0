#!/usr/bin/env bash
# The C quickstart and the Node API example, and the CLI quickstart: `warpgate listen
# --test-mode --echo` in one process, `warpgate connect --test-mode ADDR --send hi` in another.
source "$(dirname "$0")/../lib/tap.sh"
B=$WARP_BUILD
tmp=$(mktemp -d /tmp/wpg-examples.XXXXXX)
lpid=
cleanup() { [ -n "$lpid" ] && kill "$lpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
export WARPGATE_HOME=$tmp/home

out=$(timeout 30 "$B/examples/quickstart" 2>"$tmp/qs.err")
check "quickstart prints echo:hi and exits 0" [ "$?" = 0 -a "$out" = "echo:hi" ]
check "quickstart keys are 0600" [ "$(stat -c %a "$WARPGATE_HOME/alice.json")" = 600 ]

out=$(timeout 30 "$B/examples/node_api" 2>"$tmp/na.err")
check "node_api example delivers hi" [ "$?" = 0 -a "$(echo "$out" | tail -n 1)" = "hi" ]
check "node_api reports the strategy" grep -q "connected by direct_connect (local)" <<<"$out"

timeout 60 "$B/bin/warpgate" listen --test-mode --echo >"$tmp/listen.out" 2>"$tmp/listen.err" &
lpid=$!
for _ in $(seq 100); do [ -s "$tmp/listen.out" ] && break; sleep 0.05; done
addr=$(head -n 1 "$tmp/listen.out")
check "listen prints its address first" grep -q '^wg1\.' <<<"$addr"

out=$(timeout 20 "$B/bin/warpgate" connect --test-mode "$addr" --send hi)
check "connect --send hi prints echo:hi" [ "$?" = 0 -a "$out" = "echo:hi" ]

js=$(timeout 20 "$B/bin/warpgate" connect --test-mode "$addr" --send hi --json)
check "json: connected true" grep -q '"connected":true' <<<"$js"
check "json: strategy direct_connect" grep -q '"strategy":"direct_connect"' <<<"$js"
check "json: path local" grep -q '"path":"local"' <<<"$js"
check "json: ms is a number" grep -Eq '"ms":[0-9]+(\.[0-9]+)?(e-?[0-9]+)?,' <<<"$js"
check "json: reply echo:hi" grep -q '"reply":"echo:hi"' <<<"$js"
check "json: attempts with outcomes" grep -q '"attempts":\[{"strategy":' <<<"$js"
check "json: one attempt won" [ "$(grep -o '"outcome":"won"' <<<"$js" | wc -l)" = 1 ]

out=$(printf 'one\ntwo\n' | timeout 20 "$B/bin/warpgate" connect --test-mode "$addr")
check "netcat mode: stdin to the pipe, reply to stdout, clean exit" \
	[ "$?" = 0 -a "$out" = "$(printf 'echo:one\ntwo')" ]

echo '{"stunn": ["x"]}' >"$tmp/bad.json"
out=$(timeout 20 "$B/bin/warpgate" connect --test-mode "$addr" --send hi --config "$tmp/bad.json" 2>&1)
check "bad config: exit 3 naming the file and the key" \
	[ "$?" = 3 ] && grep -q "bad.json: \$.stunn: unknown key" <<<"$out"

# Unreachable: a valid address whose port nobody serves fails fast with a trace.
kill "$lpid"; wait "$lpid" 2>/dev/null; lpid=
start=$(date +%s%N)
js=$(timeout 20 "$B/bin/warpgate" connect --test-mode "$addr" --send hi --json --timeout 1500)
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "unreachable peer: exit 1" [ "$rc" = 1 ]
check "unreachable peer: json says not connected" grep -q '"connected":false' <<<"$js"
check "unreachable peer: every attempt failed with a reason" \
	[ "$(grep -o '"outcome":"failed","reason":"[^"]\+"' <<<"$js" | wc -l)" -ge 2 ]
check "unreachable peer: gives up within the timeout (${ms} ms)" [ "$ms" -lt 5000 ]

out=$("$B/bin/warpgate" connect --test-mode wg1.AAAA 2>&1)
check "malformed address: usage error (exit 2) naming the problem" \
	[ "$?" = 2 ] && grep -q "malformed\|truncated" <<<"$out"
tap_done
