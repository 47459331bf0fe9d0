#!/usr/bin/env bash
# Runs every libFuzzer target for --time seconds on a copy of its seed corpus.
# usage: selftests/fuzz/run.sh --build DIR [--time SECONDS] [TARGET...]
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=build time=30 targets=()
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--time) time=$2; shift 2 ;;
	*) targets+=("$1"); shift ;;
	esac
done
case "$build" in /*) ;; *) build="$top/$build" ;; esac
[ ${#targets[@]} -gt 0 ] || targets=($(ls "$build"/fuzz/fuzz_* 2>/dev/null | xargs -n1 basename))
pass=0 fail=0
for t in "${targets[@]}"; do
	name=${t#fuzz_}
	work="$build/fuzz/work/$name"
	mkdir -p "$work"
	cp -n "$top/selftests/fuzz/corpus/$name/"* "$work/" 2>/dev/null
	echo "== $t (${time}s)"
	if "$build/fuzz/$t" -max_total_time="$time" -max_len=65536 -print_final_stats=1 \
		"$work" >"$build/fuzz/$t.log" 2>&1; then
		pass=$((pass + 1)); grep -E 'stat::number_of_executed_units|cov:' "$build/fuzz/$t.log" | tail -2
	else
		fail=$((fail + 1)); tail -n 30 "$build/fuzz/$t.log"
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
