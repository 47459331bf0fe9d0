#!/usr/bin/env bash
# namebumpd load table: signed PUT/s and GET/s over UDP on loopback, with p50/p99 latency.
# Starts namebumpd on 127.0.0.1 (temporary database, fsync on every commit), pre-signs PUTs
# with nbload, then measures.  Targets on a 2-core machine: >= 5,000 PUT/s and >= 20,000 GET/s
# with p99 under 5 ms.  The second pair of rows forces OpenSSL for the server's signatures.
# usage: selftests/bench/bench_names.sh [--build DIR] [--duration S]
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${WARP_BUILD:-$top/build}
duration=${WARP_BENCH_SECS:-3}
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	*) echo "usage: $0 [--build DIR] [--duration S]" >&2; exit 2 ;;
	esac
done
case "$build" in /*) ;; *) build="$top/$build" ;; esac
nbd=$build/bin/namebumpd
load=$build/bin/nbload
for b in "$nbd" "$load"; do
	[ -x "$b" ] || { echo "bench_names: $b missing (make O=$build)" >&2; exit 77; }
done
dir=$(mktemp -d /tmp/nbbench.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

port=
start() { # $1: extra environment; sets $pid and $port
	for _ in $(seq 20); do
		port=$((20000 + RANDOM % 40000))
		rm -f "$dir"/db*
		env $1 "$nbd" --listen "127.0.0.1:$port" --db "$dir/db" --key "$dir/key" \
			--config "$dir/config.json" >/dev/null 2>"$dir/log" &
		pid=$!
		for _ in $(seq 100); do
			grep -q ": ready (" "$dir/log" 2>/dev/null && break
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
		if grep -q ": ready (" "$dir/log"; then return 0; fi
		wait "$pid" 2>/dev/null; pid=
	done
	return 1
}
stop() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=; }

row() { # label, nbload output line
	awk -v l="$1" '{ printf "| %-42s | %8d | %9.0f | %7.2f | %7.2f | %6d |\n", l, $2, $4, $7, $10, $15 + $17 }' <<<"$2"
}

names=2000
echo "namebumpd load ($(nproc) cores, loopback UDP, 2 workers, $names names, 200-byte values)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews latency)"
echo
echo "| operation                                  | requests |     req/s | p50 ms  | p99 ms  | errors |"
echo "|--------------------------------------------|----------|-----------|---------|---------|--------|"
for mode in fast:full fast:normal openssl:full; do
	backend=${mode%%:*} sync=${mode#*:}
	env=
	label=
	[ "$sync" = normal ] && label=" [sync=normal]"
	if [ "$backend" = openssl ]; then env=WARP_NAMES_OPENSSL=1; label=" [openssl]"; fi
	echo "{ \"rate\": 0, \"quota_v4\": 10000000, \"threads\": 2, \"sync\": \"$sync\" }" \
		>"$dir/config.json"
	start "$env" || { echo "bench_names: namebumpd did not start" >&2; cat "$dir/log" >&2; exit 1; }
	sigs=$(sed -n 's/.*signatures: //p' "$dir/log")
	# names for the GETs (not in the table), then the measured passes; each PUT pass claims
	# its own names in the first round and updates them in the following ones
	"$load" --server "127.0.0.1:$port" --op put --count "$names" --names "$names" \
		--prefix load -q >/dev/null
	cnt=$([ "$backend" = fast ] && echo 20000 || echo 6000)
	out=$("$load" --server "127.0.0.1:$port" --op put --count "$cnt" --names "$names" \
		--window 8 --prefix "w8$backend$sync" -q 2>/dev/null)
	row "signed PUT ($sigs), window 8$label" "$out"
	out=$("$load" --server "127.0.0.1:$port" --op put --count "$cnt" --names "$names" \
		--window 16 --prefix "w16$backend$sync" -q 2>/dev/null)
	row "signed PUT, window 16$label" "$out"
	out=$("$load" --server "127.0.0.1:$port" --op put --count "$cnt" --names "$names" \
		--window 128 --prefix "w128$backend$sync" -q 2>/dev/null)
	row "signed PUT, window 128$label" "$out"
	out=$("$load" --server "127.0.0.1:$port" --op get --duration "$duration" --names "$names" \
		--window 16 --pad 768 --prefix load -q 2>/dev/null)
	row "GET, window 16$label" "$out"
	out=$("$load" --server "127.0.0.1:$port" --op get --duration "$duration" --names "$names" \
		--window 128 --pad 768 --prefix load -q 2>/dev/null)
	row "GET, window 128$label" "$out"
	stop
done
echo
echo "window: requests kept outstanding by nbload; PUTs pre-signed, each a real update (newer"
echo "timestamp), acknowledged after its commit (sync=full: fsynced; normal: survives a crash of"
echo "namebumpd but not of the machine); replies signed in Merkle batches."
