#!/usr/bin/env bash
# Test runner for every tier.  Each test is an executable (cmocka binary or script) that prints
# TAP lines ("ok N - name", "not ok N - name", "ok N - name # SKIP reason") on stdout.  A test
# that exits 77 is skipped as a whole (its last stderr line says why).  A non-zero exit with no
# "not ok" line counts as one failure, so a crash is never silent.
#
# usage: selftests/run.sh --build DIR [--filter REGEX] [--vm] TIER...   (TIER: unit bpf netns)
# --vm: inside vmtest's guest; the netns tier runs only scripts marked "# vmtest: yes"
# (those that need no outside servers).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=build
filter=
vm=0
tiers=()
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--filter) filter=$2; shift 2 ;;
	--vm) vm=1; shift ;;
	-h|--help) sed -n "2,11p" "$0"; exit 0 ;;
	*) tiers+=("$1"); shift ;;
	esac
done
[ ${#tiers[@]} -gt 0 ] || tiers=(unit bpf netns)
case "$build" in /*) ;; *) build="$top/$build" ;; esac
export WARP_BUILD="$build" WARP_TOP="$top" CMOCKA_MESSAGE_OUTPUT=TAP
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
timeout_s=${WARP_TEST_TIMEOUT:-600}
logdir="$build/test-logs"
mkdir -p "$logdir"

pass=0 fail=0 skip=0
failed_names=()

tier_reason() {
	case "$1" in
	unit) return 0 ;;
	bpf|netns)
		if [ "$(id -u)" != 0 ]; then
			echo "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run as root"
			return 1
		fi
		if [ "$1" = netns ] && ! ip netns add wpg-probe-$$ 2>/dev/null; then
			echo "cannot create network namespaces here"
			return 1
		fi
		[ "$1" = netns ] && ip netns del wpg-probe-$$ 2>/dev/null
		return 0 ;;
	*) echo "unknown tier"; return 1 ;;
	esac
}

tests_of() {
	local t=$1
	case "$t" in
	unit)
		ls "$build"/tests/unit/test_* "$build"/tests/fuzz/fuzz_* 2>/dev/null | grep -v '\.d$'
		ls "$top"/selftests/unit/test_*.sh 2>/dev/null ;;
	bpf)
		ls "$build"/tests/bpf/test_* 2>/dev/null
		ls "$top"/selftests/bpf/test_*.sh 2>/dev/null ;;
	netns)
		if [ "$vm" = 1 ]; then
			grep -l '^# vmtest: yes' "$top"/selftests/netns/test_*.sh 2>/dev/null
		else
			ls "$top"/selftests/netns/test_*.sh 2>/dev/null
			ls "$build"/tests/netns/test_* 2>/dev/null
		fi ;;
	esac
}

run_one() {
	local tier=$1 exe=$2 name out rc np nf ns
	name=$(basename "$exe")
	out="$logdir/$tier-$name.log"
	local t0=$(date +%s.%N)
	timeout --kill-after=10 "$timeout_s" "$exe" >"$out" 2>&1 </dev/null
	rc=$?
	local dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
	np=$(grep -cE '^ok [0-9]+' "$out" | head -1)
	ns=$(grep -cE '^ok [0-9]+.*# ?SKIP' "$out" | head -1)
	nf=$(grep -cE '^not ok [0-9]+' "$out" | head -1)
	np=$((np - ns))
	if [ "$rc" = 77 ]; then
		ns=$((ns + 1))
		printf '  SKIP  %-36s %s\n' "$tier/$name" "$(tail -n 1 "$out")"
	elif [ "$rc" != 0 ] && [ "$nf" = 0 ]; then
		nf=1
		[ "$rc" = 124 ] && echo "# timed out after ${timeout_s}s" >>"$out"
	fi
	pass=$((pass + np)); fail=$((fail + nf)); skip=$((skip + ns))
	if [ "$nf" != 0 ]; then
		failed_names+=("$tier/$name")
		printf '  FAIL  %-36s %3d ok, %d failed, rc=%s (%ss) log: %s\n' "$tier/$name" "$np" "$nf" "$rc" "$dt" "$out"
		grep -E '^not ok|^# ' "$out" | head -n 40 | sed 's/^/        /'
		[ "$rc" != 0 ] && tail -n 25 "$out" | sed 's/^/        | /'
	elif [ "$rc" != 77 ]; then
		printf '  PASS  %-36s %3d ok%s (%ss)\n' "$tier/$name" "$np" "$([ "$ns" -gt 0 ] && echo ", $ns skipped")" "$dt"
	fi
}

for tier in "${tiers[@]}"; do
	echo "== tier $tier"
	list=$(tests_of "$tier")
	if [ -n "$filter" ]; then list=$(echo "$list" | grep -E "$filter"); fi
	if ! reason=$(tier_reason "$tier"); then
		n=$(echo "$list" | grep -c . )
		[ "$n" -gt 0 ] || n=1
		echo "  SKIP  tier $tier: $reason ($n test programs not run)"
		skip=$((skip + n))
		continue
	fi
	if [ -z "$list" ]; then
		echo "  (no tests in tier $tier)"
		continue
	fi
	for exe in $list; do
		run_one "$tier" "$exe"
	done
done

echo
[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$skip skipped"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
