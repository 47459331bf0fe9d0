#!/bin/bash
# Runs inside the vmtest guest, chrooted into the host root by vmtest/guest/init, as root.
# Runs the selftest tiers and the verifier budget check; the console gets the human-readable
# output, fd 3 (the second serial port) one result line per fact:
#   counts PASSED FAILED SKIPPED | runner-exit RC | insns NAME N OBJ | insns-error TEXT |
#   insns-summary TEXT | done
set -u
out=/run/vmtest
# shellcheck source=/dev/null
. "$out/job.env"
res() { echo "$*" >&3; }

for d in "$VMTEST_TOP" "$VMTEST_BUILD"; do
	if [ ! -d "$d" ]; then
		echo "vmtest-guest: $d is not visible in the guest"
		res "error $d is not visible in the guest"
		exit 1
	fi
done
cd "$VMTEST_TOP" || exit 1
export WARP_TEST_TIMEOUT=${VMTEST_TEST_TIMEOUT:-600}

read -r -a tiers <<<"$VMTEST_TIERS"
args=(--build "$VMTEST_BUILD" --vm)
[ -n "$VMTEST_FILTER" ] && args+=(--filter "$VMTEST_FILTER")
echo "vmtest-guest: selftests/run.sh ${args[*]} ${tiers[*]}"
selftests/run.sh "${args[@]}" "${tiers[@]}" 2>&1 | tee "$out/runner.log"
rc=${PIPESTATUS[0]}
skipped=$(sed -n 's/^\([0-9][0-9]*\) skipped$/\1/p' "$out/runner.log" | tail -n 1)
counts=$(sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1 \2/p' "$out/runner.log" |
	tail -n 1)
[ -n "$counts" ] || counts="0 1"
res "counts $counts ${skipped:-0}"
res "runner-exit $rc"

# Verifier complexity: load every object and record each program's processed-insn count.
echo "vmtest-guest: verifier budget check, limit $VMTEST_INSN_LIMIT insns/program"
if [ -d "$VMTEST_BPF_DIR" ]; then
	"$VMTEST_INSNS_BIN" --limit "$VMTEST_INSN_LIMIT" "$VMTEST_BPF_DIR" 2>&1 | tee "$out/insns.log"
else
	echo "bpf-insns: 0 programs (no $VMTEST_BPF_DIR)" | tee "$out/insns.log"
fi
while read -r line; do
	case "$line" in
	"prog "*": "*" insns processed"*)
		# prog NAME: N insns processed (OBJ)
		read -r _ name n _ _ obj <<<"$line"
		res "insns ${name%:} $n $obj"
		;;
	"bpf-insns: error"*) res "insns-error ${line#bpf-insns: error: }" ;;
	"bpf-insns: "*) res "insns-summary ${line#bpf-insns: }" ;;
	esac
done <"$out/insns.log"
res "done"
