#!/usr/bin/env bash
# `make demo` as a test: tools/demo.sh runs start to end (its own lab, torn down after) and
# prints every step of its trace with real results.
source "$(dirname "$0")/../lib/tap.sh"
source "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup
[ -x "$WARP_BUILD/bin/namebumpd" ] || skip_all "namebumpd missing in $WARP_BUILD"
out=$(mktemp /tmp/wpg-demo-test.XXXXXX)
trap 'rm -f "$out"; natlab_cleanup' EXIT

timeout -k 10 240 "$WARP_TOP/tools/demo.sh" --build "$WARP_BUILD" >"$out" 2>&1
rc=$?
sed 's/\x1b\[[0-9;]*m//g; s/^/# /' "$out"
check "the demo finishes successfully (exit $rc)" test "$rc" = 0
check "both hosts classified their NAT" \
	test "$(grep -cE "^  h[12]a: NAT (port-restricted|symmetric), mapping" "$out")" = 2
check "bob resolved alice.p2p" grep -q "bob resolves alice.p2p via" "$out"
check "the race is shown, with a winner and its time" grep -qE "winner: [a-z_]+, path direct, pipe verified in [0-9.]+ ms" "$out"
check "the echo came back" grep -q "alice -> bob: echo:hi" "$out"
check "a throughput figure, every byte back" grep -qE "4194304 of 4194304 bytes back in [0-9]+ ms" "$out"
check "relay first" grep -q "connected by turn" "$out"
check "then the same pipe moved to a direct path" grep -q "pipe moves .*(direct)" "$out"
check "no message lost or duplicated across the move" grep -q "all 10 messages came back" "$out"
check "the lab is gone afterwards" test ! -e /run/netns/wpg-inet
tap_done
