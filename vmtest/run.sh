#!/usr/bin/env bash
# vmtest: run selftest tiers under a second kernel in qemu (Debian 12's 6.1 by default).
#
# The guest boots a tiny busybox initramfs, mounts the host root read-only over 9p (with a tmpfs
# overlay on top), runs `selftests/run.sh --build GUEST_BUILD --vm TIERS` against the sanitizer
# build and loads every BPF object to record the verifier's processed-insn count per program.
# Result lines come back over a second serial port; see docs/vmtest.md.
#
# usage: vmtest/run.sh [--build DIR] [--kernel BZIMAGE [--modules DIR]] [--tiers "bpf netns"]
#                      [--timeout S] [--accel auto|kvm|tcg] [--mem MIB] [--smp N]
#                      [--insn-limit N] [--filter REGEX] [--guest-build DIR] [--no-build]
#   --build DIR        build dir of `make` (default build); the guest runs DIR/san
#   --guest-build DIR  run this (already built) build dir in the guest instead of DIR/san
#   --no-build         do not (re)build the guest build dir first
#   --kernel BZIMAGE   boot this kernel instead of Debian's linux-image-amd64; modules come
#                      from --modules DIR, BZIMAGE/../lib/modules/KVER or /lib/modules/KVER
#   --tiers LIST       selftest tiers to run in the guest (default "bpf netns")
#   --filter REGEX     passed to selftests/run.sh
#   --timeout S        time box for the whole guest run (default 1200)
#   --accel A          auto (default): KVM when /dev/kvm works and a probe boot succeeds
#                      within VMTEST_KVM_PROBE_S (default 6) seconds, else TCG
#   --insn-limit N     fail when a BPF program makes the verifier process more than N insns
#                      (default 100000)
# Environment: VMTEST_CACHE (download cache, default vmtest/cache), VMTEST_KERNEL_PKG (default
# linux-image-amd64), VMTEST_MODULES (module list, default vmtest/modules.list), and
# VMTEST_TIMEOUT, VMTEST_ACCEL, VMTEST_MEM, VMTEST_SMP, VMTEST_INSN_LIMIT for the options above.
# Exit: 0 pass, 1 fail, 77 skipped (no qemu, busybox-static or kernel package).
set -u
VMTEST_DIR=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$VMTEST_DIR/.." && pwd)

build=build
guest_build=
do_build=1
kernel=
moddir=
tiers=${VMTEST_TIERS:-bpf netns}
filter=
timeout_s=${VMTEST_TIMEOUT:-1200}
accel=${VMTEST_ACCEL:-auto}
mem=${VMTEST_MEM:-2048}
smp=${VMTEST_SMP:-$(($(nproc) < 4 ? $(nproc) : 4))}
insn_limit=${VMTEST_INSN_LIMIT:-100000}
probe_s=${VMTEST_KVM_PROBE_S:-6}
cache=${VMTEST_CACHE:-$VMTEST_DIR/cache}
modlist=${VMTEST_MODULES:-$VMTEST_DIR/modules.list}

log() { echo "vmtest: $*"; }
die() {
	echo "vmtest: error: $*"
	exit 1
}
skip() {
	echo "vmtest: skipped ($*)"
	exit 77
}
usage() {
	sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'
	exit "${1:-0}"
}

tmp_paths=()
tmp_add() { tmp_paths+=("$1"); }
qemu_pidfile=
cleanup() {
	local pid
	# a signal may stop us while qemu still runs: stop that qemu, and only it
	if [ -n "$qemu_pidfile" ] && pid=$(cat "$qemu_pidfile" 2>/dev/null) &&
		grep -q '^qemu-system' "/proc/$pid/comm" 2>/dev/null; then
		kill "$pid" 2>/dev/null
	fi
	[ ${#tmp_paths[@]} -gt 0 ] && rm -rf "${tmp_paths[@]}"
	return 0
}
trap cleanup EXIT
trap 'echo "vmtest: interrupted"; exit 130' INT TERM

while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--guest-build) guest_build=$2; shift 2 ;;
	--no-build) do_build=0; shift ;;
	--kernel) kernel=$2; shift 2 ;;
	--modules) moddir=$2; shift 2 ;;
	--tiers) tiers=$2; shift 2 ;;
	--filter) filter=$2; shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--accel) accel=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--insn-limit) insn_limit=$2; shift 2 ;;
	-h | --help) usage 0 ;;
	*) echo "vmtest: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
tiers=$(echo "$tiers" | tr ',' ' ')
case "$accel" in auto | kvm | tcg) ;; *) die "--accel must be auto, kvm or tcg" ;; esac
for n in "$timeout_s" "$mem" "$smp" "$insn_limit" "$probe_s"; do
	case "$n" in '' | *[!0-9]*) die "not a number: '$n'" ;; esac
done

# shellcheck source=vmtest/lib/kernel.sh
. "$VMTEST_DIR/lib/kernel.sh"
# shellcheck source=vmtest/lib/initramfs.sh
. "$VMTEST_DIR/lib/initramfs.sh"

abspath() {
	case "$1" in /*) echo "$1" ;; *) echo "$top/$1" ;; esac
}
build=$(abspath "$build")
guest_build=$(abspath "${guest_build:-$build/san}")
[ -n "$kernel" ] && kernel=$(cd "$(dirname "$kernel")" && echo "$PWD/$(basename "$kernel")")
wdir="$build/vmtest"
out="$wdir/out"
insns_bin="$wdir/bpf-insns"

# ---------------------------------------------------------------- prerequisites
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not found: apt-get install qemu-system-x86"
BUSYBOX=${VMTEST_BUSYBOX:-/bin/busybox}
is_static "$BUSYBOX" || skip "no static busybox at $BUSYBOX: apt-get install busybox-static"
[ "$(uname -m)" = x86_64 ] || skip "host is $(uname -m); vmtest boots x86_64 guests only"

# ---------------------------------------------------------------- guest build, insn counter
mkdir -p "$wdir" || die "cannot create $wdir"
# one run per build dir at a time: runs share $wdir/out
exec 9>"$wdir/lock"
flock -n 9 || die "another vmtest run is using $wdir"
if [ "$do_build" = 1 ]; then
	# `tests` builds the BPF objects too: every C object waits for the skeletons
	log "building the sanitizer tests in $guest_build"
	# a clean environment: our caller may be make, whose MAKEFLAGS would override O=
	env -u MAKEFLAGS -u MFLAGS -u MAKEOVERRIDES -u MAKELEVEL \
		make -C "$top" --no-print-directory -j"$(nproc)" SAN=1 O="${guest_build#"$top"/}" tests ||
		die "building $guest_build failed"
fi
[ -d "$guest_build" ] || die "guest build dir $guest_build does not exist"
if [ ! -x "$insns_bin" ] || [ "$VMTEST_DIR/bpf-insns.c" -nt "$insns_bin" ]; then
	# shellcheck disable=SC2046  # pkg-config prints several flags
	cc -std=gnu11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -o "$insns_bin.tmp" "$VMTEST_DIR/bpf-insns.c" \
		$(pkg-config --cflags --libs libbpf 2>/dev/null || echo -lbpf) &&
		mv "$insns_bin.tmp" "$insns_bin" || die "building bpf-insns failed (libbpf-dev missing?)"
fi

# ---------------------------------------------------------------- kernel and initramfs
if [ -n "$kernel" ]; then
	custom_kernel "$kernel" "$moddir" "$wdir/kstage" "$modlist"
else
	debian_kernel "$cache" "$modlist"
fi
initrd="$wdir/initramfs-$KVER.cpio.gz"
build_initramfs "$initrd" "$KSTAGE" "$KVER" || die "building the initramfs failed"

# ---------------------------------------------------------------- qemu
qemu_version=$(qemu-system-x86_64 --version | head -n 1)
firmware=
# qboot starts the kernel as fast as SeaBIOS but writes no screen control codes to the console
for f in /usr/share/qemu/qboot.rom /usr/share/qboot/bios.bin; do
	[ -f "$f" ] && firmware=$f && break
done

# qemu_args ACCEL SERIAL1 APPEND...: the common command line
qemu_args() {
	local acc=$1 s1=$2 cpu=max
	shift 2
	[ "$acc" = kvm ] && cpu=host
	q=(qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot -monitor none
		-machine q35 -accel "$acc" -cpu "$cpu" -smp "$smp" -m "$mem"
		-kernel "$VMLINUZ" -initrd "$initrd"
		-append "console=ttyS0 panic=-1 quiet loglevel=4 random.trust_cpu=on $*"
		-serial stdio -serial "file:$s1" -device virtio-rng-pci)
	[ -n "$firmware" ] && q+=(-bios "$firmware")
	return 0
}

# KVM only when a probe boot of this very kernel reaches /init in time: with nested
# virtualisation /dev/kvm can exist and answer ioctls while guests hang.  The verdict is
# cached per host boot, qemu and kernel.
pick_accel() {
	ACCEL=$accel ACCEL_WHY=requested
	[ "$accel" = auto ] || return 0
	ACCEL=tcg
	if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
		ACCEL_WHY="no usable /dev/kvm"
		return 0
	fi
	local key s1 pf="$cache/kvm-probe"
	key="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null) $qemu_version $KVER $probe_s"
	if [ "$(head -n 1 "$pf" 2>/dev/null)" = "$key" ]; then
		ACCEL=$(sed -n 2p "$pf") ACCEL_WHY="$(sed -n 3p "$pf") (cached)"
		return 0
	fi
	log "probing KVM (${probe_s}s time box)"
	s1=$(mktemp) && tmp_add "$s1"
	qemu_args kvm "$s1" vmtest.probe=1
	timeout -k 2 "$probe_s" "${q[@]}" </dev/null >/dev/null 2>&1
	if grep -q '^probe ok' "$s1"; then
		ACCEL=kvm ACCEL_WHY="KVM probe boot succeeded"
	else
		ACCEL_WHY="KVM probe boot did not finish in ${probe_s}s"
	fi
	mkdir -p "$cache" && printf '%s\n%s\n%s\n' "$key" "$ACCEL" "$ACCEL_WHY" >"$pf"
}
pick_accel

# ---------------------------------------------------------------- run
rm -rf "$out"
mkdir -p "$out/test-logs" "$guest_build/test-logs" || die "cannot create $out"
{
	printf 'VMTEST_TOP=%q\n' "$top"
	printf 'VMTEST_BUILD=%q\n' "$guest_build"
	printf 'VMTEST_TIERS=%q\n' "$tiers"
	printf 'VMTEST_FILTER=%q\n' "$filter"
	printf 'VMTEST_INSN_LIMIT=%q\n' "$insn_limit"
	printf 'VMTEST_BPF_DIR=%q\n' "$guest_build/bpf"
	printf 'VMTEST_INSNS_BIN=%q\n' "$insns_bin"
	printf 'VMTEST_TEST_TIMEOUT=%q\n' "${WARP_TEST_TIMEOUT:-600}"
} >"$out/job.env"
s1="$out/serial1.log"
qemu_args "$ACCEL" "$s1"
q+=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
	-virtfs "local,path=$out,mount_tag=out,security_model=none,multidevs=remap")

log "kernel $KVER ($VMLINUZ), $ACCEL ($ACCEL_WHY), $smp vCPUs, $mem MiB, time box ${timeout_s}s"
log "guest runs: selftests/run.sh --build $guest_build --vm $tiers"
t0=$SECONDS
qemu_pidfile="$out/qemu.pid"
q+=(-pidfile "$qemu_pidfile")
# Console: strip terminal control codes and CRs, keep everything else (kernel warnings included).
# In the background so that a signal reaches our trap while we wait.
(
	timeout -k 10 "$timeout_s" "${q[@]}" </dev/null 2>&1 |
		sed -u -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' -e 's/\r$//' |
		tee "$out/console.log"
	exit "${PIPESTATUS[0]}"
) &
wait $!
qrc=$?
dt=$((SECONDS - t0))
# the guest's serial port is a tty: lines end in CRLF
[ -f "$s1" ] && sed -i 's/\r$//' "$s1"

# ---------------------------------------------------------------- verdict
field() { sed -n "s/^$1 //p" "$s1" 2>/dev/null | tail -n 1; }
gkver=$(field kernel)
counts=$(field counts)
gerror=$(field error)
echo
if [ -z "$gkver" ]; then
	log "guest printed no kernel line (qemu exit $qrc); console: $out/console.log"
	gkver=$KVER
else
	log "guest kernel $gkver"
fi

fail_reasons=()
if [ -n "$gerror" ]; then
	fail_reasons+=("guest: $gerror")
elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	fail_reasons+=("timed out after ${timeout_s}s")
elif ! grep -q '^done$' "$s1" 2>/dev/null; then
	fail_reasons+=("guest stopped before reporting (qemu exit $qrc)")
fi
read -r passed failed skipped <<<"${counts:-0 0 0}"
[ "$(field runner-exit)" = 0 ] || [ -z "$counts" ] || [ "$failed" != 0 ] ||
	fail_reasons+=("selftests/run.sh exited $(field runner-exit)")

# Per-program verifier counts, with the host kernel's for comparison when we may load BPF here.
declare -A host_insns=()
nprog=$(grep -c '^insns ' "$s1" 2>/dev/null)
if [ "$nprog" -gt 0 ] && [ "$(id -u)" = 0 ] && [ "${VMTEST_HOST_INSNS:-1}" = 1 ]; then
	while read -r p name n _; do
		[ "$p" = prog ] && host_insns[${name%:}]=$n
	done < <("$insns_bin" --limit "$insn_limit" "$guest_build/bpf" 2>/dev/null)
fi
log "verifier: processed insns per BPF program on $gkver (limit $insn_limit)"
while read -r _ name n obj; do
	h=${host_insns[$name]:-}
	echo "prog $name: $n insns processed ${obj:+$obj}${h:+ (host $(uname -r): $h)}"
done < <(grep '^insns ' "$s1")
if [ "$nprog" = 0 ]; then
	if grep -q '^insns-summary ' "$s1"; then
		echo "prog (none): 0 programs in $guest_build/bpf"
	else
		echo "prog (none): the guest did not get to load BPF objects"
	fi
fi
ninsn_err=0
while read -r line; do
	echo "vmtest: verifier: $line"
	ninsn_err=$((ninsn_err + 1))
done < <(sed -n 's/^insns-error //p' "$s1")
failed=$((failed + ninsn_err))
[ "$ninsn_err" = 0 ] || fail_reasons+=("$ninsn_err BPF programs failed to load or exceeded $insn_limit insns")

# for vmtest/ci.sh's estimate: seconds of the whole script and of the guest alone
[ ${#fail_reasons[@]} -eq 0 ] && echo "$SECONDS $dt $ACCEL $tiers" >"$wdir/last-run"
log "guest run took ${dt}s ($ACCEL); logs: $out"
for r in "${fail_reasons[@]}"; do
	log "FAIL: $r"
done
[ ${#fail_reasons[@]} -eq 0 ] || [ "$failed" != 0 ] || failed=1
echo "vmtest: kernel $gkver: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
