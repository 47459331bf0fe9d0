#!/usr/bin/env bash
# `make bench`: every benchmark table in one run.  Benchmarks that need root or servers print
# why they were skipped (exit 77).  Timing goals live here, never in tests.
# usage: selftests/bench/run.sh --build DIR [--quick]
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=build quick=
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--quick) quick=1; shift ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
case "$build" in /*) ;; *) build="$top/$build" ;; esac
export WARP_BUILD="$build" WARP_TOP="$top"
[ -n "$quick" ] && export WARP_BENCH_SECS=${WARP_BENCH_SECS:-2}

run() {
	local name=$1
	shift
	echo
	echo "######## $name"
	"$@"
	local rc=$?
	case "$rc" in
	0) ;;
	77) echo "(skipped)" ;;
	*) echo "($name exited with $rc)" ;;
	esac
}

echo "warpgate benchmarks on $(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
run "pipes" "$build/bench/bench_pipe" ${quick:+--quick}
run "crypto" "$build/bench/bench_crypto"
run "stream engine" "$build/bench/bench_stream"
run "BPF programs (BPF_PROG_RUN)" "$build/bench/bench_bpf_prog"
run "CID demux: userspace vs SK_REUSEPORT" "$build/bench/bench_bpf_demux"
if [ -n "$quick" ]; then
	run "keepalives: userspace vs XDP" env WARP_BENCH_SECS=10 "$build/bench/bench_bpf_keepalive"
else
	run "keepalives: userspace vs XDP" "$build/bench/bench_bpf_keepalive"
fi
for s in "$top"/selftests/bench/bench_*.sh; do
	[ -x "$s" ] && run "$(basename "$s" .sh)" "$s"
done
exit 0
