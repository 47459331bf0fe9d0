# TAP helpers for shell tests.  Source it, then:
#   check "description" cmd args...     # ok/not ok from the command's status
#   ok "description" / not_ok "description" / skip "description" "reason"
#   skip_all "reason"                   # whole test skipped (exit 77)
#   tap_done                            # prints the plan, returns non-zero if anything failed
# Paths: $WARP_TOP (source tree) and $WARP_BUILD (build dir) are set by selftests/run.sh;
# defaults let a test run by hand from the source tree.
: "${WARP_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${WARP_BUILD:=$WARP_TOP/build}"
export WARP_TOP WARP_BUILD
tap_n=0
tap_fail=0

ok() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $*"; }
not_ok() { tap_n=$((tap_n + 1)); tap_fail=$((tap_fail + 1)); echo "not ok $tap_n - $*"; }
skip() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $1 # SKIP $2"; }
check() {
	local desc=$1
	shift
	if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
skip_all() { echo "# SKIP $*"; echo "$*" >&2; exit 77; }
tap_done() { echo "1..$tap_n"; [ "$tap_fail" = 0 ]; }
need_root() { [ "$(id -u)" = 0 ] || skip_all "needs root"; }
