# Helpers for shell tests that use the NAT lab.  Source after selftests/lib/tap.sh:
#   natlab_setup [PROGRAM...]   root + programs present or skip_all; private lab state; the lab
#                               is taken down on exit whatever happens
#   lab ARGS...                 run natlab (output to stdout)
#   in_ns NAME CMD...           run CMD in a lab namespace (h1a, r1, inet, stun, ...)
#   labenv                      load `natlab env` into the shell (WPG_* variables)
#   kv KEY TEXT                 value of KEY=... in prober output
#   lab_procs / lab_pid NAME    the lab's processes ("name pid ns state") / one pid
#   alive PID                   a live process (not a zombie)?
#   json_ok <JSON               valid JSON? (jq or python3; 2 when neither exists)
#   quiet CMD...                CMD with its output discarded (for `check "desc" quiet CMD`)
#   not CMD...                  succeeds when CMD fails (for expected failures)
NATLAB=$WARP_TOP/selftests/natlab/natlab
NATLAB_TOOLS=$WARP_BUILD/natlab

natlab_setup() {
	local p
	need_root
	for p in ip nft nsenter setsid "$@"; do
		command -v "$p" >/dev/null 2>&1 || skip_all "needs $p (make deps)"
	done
	[ -x "$NATLAB_TOOLS/prober" ] && [ -x "$NATLAB_TOOLS/delayer" ] ||
		skip_all "lab tools missing in $NATLAB_TOOLS (make O=$WARP_BUILD natlab)"
	# The lab's namespace names are fixed: with another lab up this test cannot run.
	[ ! -e /run/netns/wpg-inet ] ||
		skip_all "another NAT lab is up (wpg-inet exists): run 'natlab down' first"
	# A private state directory: a test never takes down a lab someone else started.
	export WPG_NATLAB_STATE=/run/wpg-natlab-test.$$
	trap natlab_cleanup EXIT
	trap 'exit 130' INT TERM
}

natlab_cleanup() {
	"$NATLAB" down >/dev/null 2>&1
	rm -rf "$WPG_NATLAB_STATE"
}

lab() { "$NATLAB" "$@"; }
in_ns() {
	local ns=$1
	shift
	"$NATLAB" exec "$ns" "$@"
}

labenv() {
	local line
	while IFS= read -r line; do
		case $line in WPG_*=*) export "${line%%=*}=$(eval "printf '%s' ${line#*=}")" ;; esac
	done < <("$NATLAB" env)
}

# Lab processes from `natlab status`: "name pid ns state" per line.
lab_procs() { "$NATLAB" status | awk '$2 == "pid" { print $1, $3, $4, $5 }'; }
lab_pid() { lab_procs | awk -v n="$1" '$1 == n { print $2 }'; }

# A JSON checker that the machine has (jq is not among the lab's dependencies).
json_ok() {
	if command -v jq >/dev/null; then
		jq -e . >/dev/null
	elif command -v python3 >/dev/null; then
		python3 -m json.tool >/dev/null
	else
		return 2
	fi
}

# Is PID a live process (zombies, exited but not yet reaped by init, are not)?
alive() {
	local st
	st=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

quiet() { "$@" >/dev/null 2>&1; }
not() { ! "$@"; }
kv() { sed -n "s/^$1=//p" <<<"$2" | head -n 1; }

# num_between VALUE LOW HIGH (decimals allowed)
num_between() {
	[ -n "$1" ] && [ "$(echo "$1 >= $2 && $1 <= $3" | bc)" = 1 ]
}

# bg_ns NAME CMD...: run CMD in a lab namespace in the background; BG_PID is CMD's own pid
# (backgrounding a shell function would give the pid of a subshell, which a kill would not
# pass on).  Redirect with: bg_ns h1a cmd >out 2>err.
bg_ns() {
	local ns=$1
	shift
	"$NATLAB" exec "$ns" "$@" &
	BG_PID=$!
}

# stop_pid PID: SIGTERM, up to 5 s for a clean exit, then SIGKILL; returns the exit status.
stop_pid() {
	local pid=$1 i
	kill "$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}
