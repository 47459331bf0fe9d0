#!/usr/bin/env bash
# vmtest for CI: run `make vmtest` when it fits in the time CI has left, otherwise print
# "vmtest: skipped (reason)".
#
# usage: vmtest/ci.sh [--estimate]
#   --estimate         only print the estimate and whether it fits
# Environment:
#   WARP_CI_BUDGET_S   seconds CI has left for this step (unset: no limit)
#   O                  build dir (default build), as for make
#   VMTEST_CI_COLD_S   estimate when this machine has no passing run on record (default 900:
#                      kernel download, sanitizer build, TCG boot and the tiers)
# The estimate is 1.5 x the last passing run recorded in $O/vmtest/last-run plus 60 s.  The guest
# run is time-boxed to the budget minus a margin, so vmtest never eats the rest of CI's time.
# Exit: 0 passed or skipped, 1 failed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
O=${O:-build}
case "$O" in /*) build=$O ;; *) build="$top/$O" ;; esac
budget=${WARP_CI_BUDGET_S:-}
margin=60

skip() {
	echo "vmtest: skipped ($*)"
	exit 0
}

# Install what vmtest needs when CI runs as root on a machine without it; apt only.
ensure_tools() {
	local pkgs=()
	command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
	[ -x /bin/busybox ] && LC_ALL=C ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' ||
		pkgs+=(busybox-static)
	[ ${#pkgs[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || skip "${pkgs[*]} not installed and not root"
	echo "vmtest: installing ${pkgs[*]}"
	timeout 600 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${pkgs[@]}" >/dev/null 2>&1 ||
		{ timeout 300 apt-get update -qq >/dev/null 2>&1 &&
			timeout 600 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; } ||
		skip "apt-get install ${pkgs[*]} failed"
}

estimate() {
	local total _
	if [ -f "$build/vmtest/last-run" ] && read -r total _ <"$build/vmtest/last-run" &&
		[ -n "$total" ]; then
		echo $((total * 3 / 2 + margin)) "last passing run took ${total}s"
	else
		echo "${VMTEST_CI_COLD_S:-900}" "no passing run on record"
	fi
}

read -r est why < <(estimate)
case "$budget" in
'') fits=1 ;;
*[!0-9]*) echo "vmtest: WARP_CI_BUDGET_S must be seconds, not '$budget'" >&2; exit 1 ;;
*) fits=$((budget >= est + margin)) ;;
esac
if [ "${1:-}" = --estimate ]; then
	echo "vmtest: estimate ${est}s ($why), budget ${budget:-unlimited}${budget:+s}, fits: $fits"
	exit 0
fi
[ "$fits" = 1 ] ||
	skip "needs about ${est}s ($why), CI has ${budget}s left"

ensure_tools
timeout_s=${VMTEST_TIMEOUT:-1200}
if [ -n "$budget" ] && [ $((budget - margin)) -lt "$timeout_s" ]; then
	timeout_s=$((budget - margin))
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
VMTEST_TIMEOUT=$timeout_s make -C "$top" --no-print-directory O="$O" vmtest 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# make turns run.sh's 77 into its own error status: look for run.sh's line instead
if grep -q '^vmtest: skipped (' "$log"; then
	exit 0
fi
exit $((rc != 0))
