#!/usr/bin/env bash
# NAT lab hygiene: names, idempotency, exec/env/status interfaces, `set` on a running lab, and
# that `down` removes everything the lab made (also after `up` was killed half way) while never
# touching namespaces or processes it did not create.
set -u
. "$(dirname "$0")/../lib/tap.sh"
. "$WARP_TOP/selftests/natlab/testlib.sh"
natlab_setup turnserver mosquitto chronyd setpriv

FOREIGN_NS=wpg-foreign-$$
ip netns add "$FOREIGN_NS"
sleep 300 &
FOREIGN_PID=$!
cleanup_foreign() {
	kill "$FOREIGN_PID" 2>/dev/null
	ip netns del "$FOREIGN_NS" 2>/dev/null
	ip netns del wpg-r1 2>/dev/null
	natlab_cleanup
}
trap cleanup_foreign EXIT

check "natlab down with no lab is a no-op" quiet lab down
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$NATLAB" up port-restricted 2>&1)
check "natlab up without root fails and says why" grep -q "needs root" <<<"$out"

# A namespace with a lab name that is not ours: up must refuse and leave it alone.
ip netns add wpg-r1
out=$(lab up port-restricted 2>&1)
check "up refuses when a lab namespace name is taken by someone else" \
	grep -q "wpg-r1 exists and is not this lab's" <<<"$out"
check "the foreign wpg-r1 survives the failed up" test -e /run/netns/wpg-r1
ip netns del wpg-r1

out=$(lab up --servers stun,mqtt port-restricted:2,hairpin symmetric-seq 2>&1)
check "natlab up" test $? = 0
check "every lab namespace has the wpg- prefix" \
	test -z "$(grep -v '^wpg-' "$WPG_NATLAB_STATE/netns")"
check "namespaces of the lab exist" test -e /run/netns/wpg-h1b -a -e /run/netns/wpg-r2
pids_before=$(lab_procs | awk '{print $2}')
check "identical up is idempotent" grep -q "already up" <<<"$(lab up --servers stun,mqtt port-restricted:2,hairpin symmetric-seq)"
check "idempotent up kept the same processes" \
	test "$(lab_procs | awk '{print $2}')" = "$pids_before"

# exec: short and full names
check "exec h1a runs in wpg-h1a" test "$(lab exec h1a ip -4 -o addr show dev eth0 | awk '{print $4}')" = 10.1.0.2/24
check "exec wpg-h1b runs in wpg-h1b" test "$(lab exec wpg-h1b ip -4 -o addr show dev eth0 | awk '{print $4}')" = 10.1.0.3/24
check "exec refuses a namespace that is not the lab's" not quiet lab exec "${FOREIGN_NS#wpg-}" true

# env and status
env_out=$(lab env)
for v in WPG_STUN1=198.18.0.2:3478 WPG_STUN2=198.18.0.3:3478 WPG_MQTT1=198.18.0.5:1883 \
	WPG_MQTT2=198.18.0.6:1883 WPG_H1A_IP=10.1.0.2 WPG_H1B_IP=10.1.0.3 WPG_H2A_IP=10.2.0.2 \
	WPG_R1_WAN=198.18.1.1 WPG_R2_WAN=198.18.1.2 WPG_R2_TYPE=symmetric-seq; do
	check "env: $v" grep -qx -- "$v" <<<"$env_out"
done
check "env: no TURN when not started" not grep -q '^WPG_TURN=' <<<"$env_out"
check "env is shell-sourceable" bash -c 'set -e -u; eval "$1"; test "$WPG_HOSTS" = "h1a h1b h2a"' _ "$env_out"
js=$(lab status --json)
json_ok <<<"$js"
case $? in
0) ok "status --json is valid JSON" ;;
2) skip "status --json is valid JSON" "neither jq nor python3 here" ;;
*) not_ok "status --json is valid JSON" ;;
esac
check "status --json: 3 hosts" test "$(grep -o '"netns": "wpg-h' <<<"$js" | wc -l)" = 3
check "status --json: every process running" not grep -q '"running": false' <<<"$js"
check "status: every process running" test -z "$(lab_procs | awk '$4 != "running"')"
check "status (human) lists the sites" grep -q "site 2: wpg-r2 symmetric-seq" <<<"$(lab status)"

# set: change behaviour on a running lab; verify proves the new label
check "set r2 full-cone" quiet lab set r2 full-cone
check "after set, r2 verifies as full cone" quiet lab verify r2
check "env follows set" grep -qx WPG_R2_TYPE=full-cone <<<"$(lab env)"
check "set r1 open renumbers its hosts to public addresses" quiet lab set r1 open
check "h1a now has 198.19.1.2" test "$(lab exec h1a ip -4 -o addr show dev eth0 | awk '{print $4}')" = 198.19.1.2/24
check "after set, r1 verifies as open" quiet lab verify r1
check "set refuses to turn a site into cgnat" not quiet lab set r1 cgnat

# down removes everything it made, nothing else
procs=$(lab_procs | awk '{print $2}')
nslist=$(cat "$WPG_NATLAB_STATE/netns")
check "natlab down" quiet lab down
left=0
for ns in $nslist; do [ -e "/run/netns/$ns" ] && left=1; done
check "down removed every lab namespace" test "$left" = 0
left=0
for p in $procs; do alive "$p" && left=1; done
check "down stopped every lab process" test "$left" = 0
check "down removed the state directory" test ! -e "$WPG_NATLAB_STATE"
check "a foreign wpg- namespace survives down" test -e "/run/netns/$FOREIGN_NS"
check "a foreign process survives down" kill -0 "$FOREIGN_PID"

# crash: up killed half way (after servers started), then down cleans up from the state files
lab up --delay 5 port-restricted full-cone cgnat >/dev/null 2>&1 &
up_pid=$!
for ((i = 0; i < 300; i++)); do
	[ -s "$WPG_NATLAB_STATE/pids" ] && [ "$(wc -l <"$WPG_NATLAB_STATE/pids")" -ge 3 ] && break
	sleep 0.01
done
kill -9 "$up_pid"
wait "$up_pid" 2>/dev/null
procs=$(awk '{print $2}' "$WPG_NATLAB_STATE/pids" 2>/dev/null)
nslist=$(cat "$WPG_NATLAB_STATE/netns" 2>/dev/null)
check "the killed up left processes behind (test premise)" test -n "$procs"
check "natlab down after a crash" quiet lab down
left=0
for ns in $nslist; do [ -e "/run/netns/$ns" ] && left=1; done
check "down after a crash removed every namespace" test "$left" = 0
left=0
for p in $procs; do alive "$p" && left=1; done
check "down after a crash stopped every process" test "$left" = 0
check "and still left the foreign namespace alone" test -e "/run/netns/$FOREIGN_NS"

tap_done
