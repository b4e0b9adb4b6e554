#!/usr/bin/env bash
# rabbitmq-cluster.sh: a 3-node RabbitMQ cluster on this host for the failover tests, beside the
# default node (which it never touches, nor /etc/rabbitmq).
#
# Usage:
#   scripts/rabbitmq-cluster.sh start          # start the three nodes and join them (idempotent)
#   scripts/rabbitmq-cluster.sh stop           # stop the three nodes, remove their files
#   scripts/rabbitmq-cluster.sh env            # print shell assignments for the tests (below)
#   scripts/rabbitmq-cluster.sh status         # each node's state, the running nodes; exit 0 if
#                                              # the three run as one cluster, 3 if not
#   scripts/rabbitmq-cluster.sh kill NODE      # kill -9 one node (its files stay)
#   scripts/rabbitmq-cluster.sh restart NODE   # start it again and wait until it has rejoined
#
#   set -a; eval "$(scripts/rabbitmq-cluster.sh env)"; set +a    # export the settings
#
# NODE is any of: the node's number (1, 2, 3), its short name (warren-cluster-2), its full name as
# `rabbitmqctl -n` takes it and WARREN_CLUSTER_NODES lists it (warren-cluster-2@HOST), or its AMQP
# port (5702).
#
# Nodes (via scripts/rabbitmq-node.sh; all state under /tmp/rmq-extra/NAME; HOST = hostname -s):
#   warren-cluster-1@HOST   AMQP 5701, distribution 25701
#   warren-cluster-2@HOST   AMQP 5702, distribution 25702
#   warren-cluster-3@HOST   AMQP 5703, distribution 25703
# Each has guest/guest usable from any address (loopback_users = none) and no plugins. The ports
# can be moved with WARREN_CLUSTER_PORTS="P1 P2 P3" and the names with WARREN_CLUSTER_NAME
# (prefix, default warren-cluster); pass the same values to every command.
#
# `env` prints:
#   WARREN_CLUSTER_URIS=amqp://guest:guest@127.0.0.1:5701/%2f,...:5702/%2f,...:5703/%2f
#   WARREN_CLUSTER_NODES='warren-cluster-1@HOST warren-cluster-2@HOST warren-cluster-3@HOST'
#   WARREN_CLUSTER_PORTS='5701 5702 5703'
#   WARREN_CLUSTER_SCRIPT=<absolute path of this script>   (the tests call kill and restart)
#
# What the commands do:
#   start    Leaves a running, joined cluster alone. From nothing, boots the three nodes in
#            parallel, then joins nodes 2 and 3 to node 1 in parallel: stop_app, join_cluster,
#            start_app (RABBITMQ.md §4) as one `rabbitmqctl eval` instead of three CLI calls.
#            (Classic-config peer discovery, joining while booting, saved 3 s but raced: a node
#            that joined node 1 while node 1 was still enabling its feature flags failed to boot
#            with schema_integrity_check_failed.) A half-started cluster is repaired: nodes
#            stopped with their files (killed, halted) are started again and rejoin by
#            themselves; a node running outside node 1's cluster is joined to it; anything else
#            (a node without files beside nodes with files, a repair that fails) is rebuilt from
#            nothing, once. Ends with `rabbitmqctl cluster_status` on node 1, which must list the
#            three as running nodes.
#   stop     Stops the three in parallel while all are up (rabbitmqctl stop), kill -9 for any that
#            does not stop within 60 s, and removes their files.
#   kill     kill -9 of the node's beam.smp; returns once it is gone. The other nodes keep running.
#   restart  A killed or halted node is started from its files; a running one is first stopped
#            cleanly (files kept). Then waits until it has booted and node 1's (or, if NODE is
#            node 1, node 2's) cluster_status shows 3 running nodes again. Per RabbitMQ.md §4, a
#            restarted node waits for its peers' tables: this command returns only when it is up,
#            so the next command may touch the others.
# start, stop, kill and restart are serialised by flock on /tmp/rmq-extra/.warren-cluster.lock.
#
# Timings (every action prints its own). Measured on this 2-core machine while others compiled
# (load average 8-10), three runs each:
#   start from nothing         19.4-22.2 s (parallel boot 13.5-16.5 s, parallel join 4.3-5.3 s);
#                              on a quiet machine: boot 10.4 s, join 3.3 s (with three CLI calls)
#   start, already running     0.7-2.2 s   (one cluster_status)
#   status                     0.6-1.8 s
#   kill                       0.1 s
#   restart after kill         6.9-13.8 s  (boot from its files, rejoin, cluster_status)
#   restart of a running node  9.9-15.8 s  (clean stop first)
#   stop                       4.5-6.0 s
# Booting a node costs about 5 CPU-seconds and one CLI call 0.5: on 2 cores, start is CPU-bound.
#
# Needs root (or the rabbitmq user) and a local rabbitmq-server. Recipe: shared/RABBITMQ.md §4.
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self=$here/$prog

readonly EXTRA_ROOT=/tmp/rmq-extra
readonly JOIN_TIMEOUT=60 STOP_TIMEOUT=60

prefix=${WARREN_CLUSTER_NAME:-warren-cluster}
read -r -a ports <<<"${WARREN_CLUSTER_PORTS:-5701 5702 5703}"
((${#ports[@]} == 3)) || {
    echo "$prog: WARREN_CLUSTER_PORTS must name three ports" >&2
    exit 2
}
host=$(hostname -s)
names=("$prefix-1" "$prefix-2" "$prefix-3")
nodes=("${names[0]}@$host" "${names[1]}@$host" "${names[2]}@$host")

log() { echo "$prog: $*"; }
die() {
    echo "$prog: $*" >&2
    exit 1
}

# Seconds since $1 (an $EPOCHREALTIME), with one decimal.
since() {
    local now=${EPOCHREALTIME/./} then=${1/./}
    local ds=$(((now - then) / 100000))
    echo "$((ds / 10)).$((ds % 10)) s"
}

# scripts/rabbitmq-node.sh, without our lock's descriptor: a node it starts must not hold it.
node_sh() {
    "$here/rabbitmq-node.sh" "$@" 8>&-
}

# rabbitmqctl, quiet, without our lock's descriptor.
ctl() {
    rabbitmqctl -q "$@" 8>&-
}

take_lock() {
    (umask 022 && mkdir -p "$EXTRA_ROOT")
    exec 8>"$EXTRA_ROOT/.$prefix.lock"
    flock -w 600 8 || die "timed out waiting for the lock of the cluster"
}

# Runs node I's `rabbitmq-node.sh CMD` with its output indented and tagged, for parallel runs.
node_cmd() {
    local i=$1
    shift
    node_sh "$1" "${names[$i]}" "${ports[$i]}" 2>&1 | sed "s/^/  [node $((i + 1))] /"
    return "${PIPESTATUS[0]}"
}

# Index (0-2) of the node named by $1: number, short name, full name or AMQP port.
resolve() {
    local i
    for i in 0 1 2; do
        case $1 in
        "$((i + 1))" | "${names[$i]}" | "${nodes[$i]}" | "${ports[$i]}")
            echo "$i"
            return 0
            ;;
        esac
    done
    die "unknown node '$1': give 1-3, a name (${names[*]}), a full name (${nodes[*]}) or a port (${ports[*]})"
}

is_running() {
    node_sh status "${names[$1]}" "${ports[$1]}" >/dev/null 2>&1
}

# True if node I has database files (it booted once and was killed or halted).
has_files() {
    [[ -n $(ls -A "$EXTRA_ROOT/${names[$1]}/mnesia" 2>/dev/null) ]]
}

# The running nodes as node I sees them (`cluster_status`), one per line; fails if it cannot say.
running_seen_by() {
    local json
    json=$(ctl -n "${nodes[$1]}" cluster_status --formatter json 2>/dev/null) || return 1
    grep -o '"running_nodes":\[[^]]*\]' <<<"$json" | grep -o '"[^"]*@[^"]*"' | tr -d '"'
}

# True if the list of running nodes on stdin names all three.
all_three() {
    local seen i
    seen=$(cat)
    for i in 0 1 2; do
        grep -qx "${nodes[$i]}" <<<"$seen" || return 1
    done
}

# True if node I sees all three nodes running.
sees_all() {
    local seen
    seen=$(running_seen_by "$1") || return 1
    all_three <<<"$seen"
}

# Starts the nodes with the given indexes in parallel and waits until each has booted.
boot() {
    local i pids=() failed=0
    for i in "$@"; do
        { node_cmd "$i" start && node_cmd "$i" wait; } &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || failed=1; done
    return "$failed"
}

# Kills (if running) and removes the nodes with the given indexes, in parallel.
wipe() {
    local i
    for i in "$@"; do
        [[ -e $EXTRA_ROOT/${names[$i]} ]] || is_running "$i" || continue
        {
            ! is_running "$i" || node_cmd "$i" kill || true
            node_cmd "$i" stop
        } &
    done
    wait
}

# Three new standalone nodes (rabbitmq-node.sh's default configuration), booted in parallel.
fresh_start() {
    local t0=$EPOCHREALTIME
    wipe 0 1 2
    boot 0 1 2 || return 1
    log "three standalone nodes booted in $(since "$t0")"
}

# What `rabbitmqctl stop_app; join_cluster NODE; start_app` does (the CLI commands call these
# functions), in one CLI call instead of three: each call costs about 0.5 CPU-second, and the
# join is on the critical path. Node 1's name is substituted for @SEED@.
readonly JOIN_EXPR='ok = rabbit:stop(),
case rabbit_mnesia:join_cluster('"'"'@SEED@'"'"', disc) of
    ok -> ok;
    {ok, already_member} -> ok;
    Error -> erlang:error({join_cluster_failed, Error})
end,
rabbit:start().'

# Joins to node 1 every running node that node 1 does not see running; in parallel.
join_stragglers() {
    local seen i pids=() failed=0 t0=$EPOCHREALTIME
    seen=$(running_seen_by 0) || return 1
    for i in 1 2; do
        grep -qx "${nodes[$i]}" <<<"$seen" && continue
        log "joining ${nodes[$i]} to ${nodes[0]}"
        # The join logs harmless feature-flag and "tracked connection table" messages: the
        # output is shown only if it fails.
        {
            local out
            out=$(ctl -n "${nodes[$i]}" eval "${JOIN_EXPR//@SEED@/${nodes[0]}}" 2>&1) || {
                echo "$out" | sed "s/^/  [node $((i + 1))] /" >&2
                exit 1
            }
        } &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || failed=1; done
    ((${#pids[@]} == 0 || failed)) || log "joined in $(since "$t0")"
    return "$failed"
}

# Waits until node I sees all three running (a rejoin shows there within a second or so).
await_all_seen_by() {
    local i=$1 deadline=$((SECONDS + JOIN_TIMEOUT))
    until sees_all "$i"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.25
    done
}

# The check: node 1's cluster_status lists the three nodes as running, within $1 seconds (0:
# one look; a node that has just joined or rejoined shows there at once). Prints the list.
check() {
    local deadline=$((SECONDS + $1)) seen
    until seen=$(running_seen_by 0) && all_three <<<"$seen"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.25
    done
    seen=$(tr "\n" " " <<<"$seen")
    log "cluster_status on ${nodes[0]}: running_nodes = ${seen% }"
}

# One attempt at getting from the current state to a joined cluster, repairing what it can.
repair() {
    local i states=() with_files=0 without=0 stopped=()
    for i in 0 1 2; do
        if is_running "$i"; then
            states+=(running)
            with_files=1
        elif has_files "$i"; then
            states+=(stopped)
            with_files=1
            stopped+=("$i")
        else
            states+=(absent)
            without=1
        fi
    done
    log "node states: ${states[*]}"
    if ((without)); then
        # A node without files cannot rejoin peers that have data (nor vice versa): start over.
        ((with_files)) && log "rebuilding: some nodes have no files, others do"
        fresh_start || return 1
    elif ((${#stopped[@]})); then
        local list=()
        for i in "${stopped[@]}"; do list+=("${nodes[$i]}"); done
        log "starting the stopped nodes (files kept): ${list[*]}"
        boot "${stopped[@]}" || return 1
    fi
    join_stragglers
}

do_start() {
    local t0=$EPOCHREALTIME i
    take_lock
    if is_running 0 && is_running 1 && is_running 2 && check 0; then
        log "cluster already running (${ports[*]}); checked in $(since "$t0")"
        return 0
    fi
    if ! repair || ! check 20; then
        log "the cluster did not come up whole: rebuilding it from nothing"
        if ! fresh_start || ! join_stragglers || ! check "$JOIN_TIMEOUT"; then
            for i in 0 1 2; do ctl -n "${nodes[$i]}" cluster_status >&2 || true; done
            die "the cluster did not form (cluster_status above, if the nodes answered)"
        fi
    fi
    log "cluster up in $(since "$t0"): ${nodes[*]} on ports ${ports[*]}"
}

do_stop() {
    local t0=$EPOCHREALTIME i
    take_lock
    # In parallel, while all are up (RABBITMQ.md §4): no node is left waiting for stopped peers.
    for i in 0 1 2; do
        {
            if ! timeout "$STOP_TIMEOUT" "$here/rabbitmq-node.sh" halt "${names[$i]}" "${ports[$i]}" \
                8>&- >/dev/null 2>&1; then
                echo "  [node $((i + 1))] clean stop failed or took over ${STOP_TIMEOUT}s: kill -9"
                node_cmd "$i" kill || true
            fi
            node_cmd "$i" stop
        } &
    done
    wait
    log "cluster stopped in $(since "$t0")"
}

do_kill() {
    local i t0=$EPOCHREALTIME
    i=$(resolve "$1")
    take_lock
    node_cmd "$i" kill || die "cannot kill ${nodes[$i]}"
    log "killed ${nodes[$i]} in $(since "$t0")"
}

do_restart() {
    local i peer t0=$EPOCHREALTIME
    i=$(resolve "$1")
    take_lock
    has_files "$i" || die "${nodes[$i]} has no files: run '$prog start' instead"
    if is_running "$i"; then
        node_cmd "$i" halt || die "cannot stop ${nodes[$i]}"
    fi
    boot "$i" || die "${nodes[$i]} did not boot (see above)"
    peer=$((i == 0 ? 1 : 0))
    await_all_seen_by "$peer" || {
        ctl -n "${nodes[$peer]}" cluster_status >&2 || true
        die "${nodes[$i]} did not rejoin within ${JOIN_TIMEOUT}s"
    }
    log "${nodes[$i]} restarted and rejoined in $(since "$t0") (${nodes[$peer]} sees 3 running nodes)"
}

do_status() {
    local i rc=0
    for i in 0 1 2; do
        if is_running "$i"; then
            log "${nodes[$i]} (port ${ports[$i]}): running"
        elif has_files "$i"; then
            log "${nodes[$i]} (port ${ports[$i]}): stopped, files kept"
            rc=3
        else
            log "${nodes[$i]} (port ${ports[$i]}): absent"
            rc=3
        fi
    done
    for i in 0 1 2; do
        is_running "$i" || continue
        if sees_all "$i"; then
            log "${nodes[$i]} sees all three nodes running"
        else
            log "${nodes[$i]} sees running: $(running_seen_by "$i" | tr '\n' ' ')"
            rc=3
        fi
        break
    done
    return "$rc"
}

do_env() {
    local i uris=()
    for i in 0 1 2; do uris+=("amqp://guest:guest@127.0.0.1:${ports[$i]}/%2f"); done
    local IFS=,
    echo "WARREN_CLUSTER_URIS=${uris[*]}"
    IFS=' '
    echo "WARREN_CLUSTER_NODES='${nodes[*]}'"
    echo "WARREN_CLUSTER_PORTS='${ports[*]}'"
    echo "WARREN_CLUSTER_SCRIPT=$self"
}

usage() {
    echo "usage: $prog start|stop|env|status|kill NODE|restart NODE" >&2
    exit 2
}

case ${1:-} in
start | stop | env | status) [[ $# -eq 1 ]] || usage ;;
kill | restart) [[ $# -eq 2 ]] || usage ;;
*) usage ;;
esac
case $1 in
start) do_start ;;
stop) do_stop ;;
env) do_env ;;
status) do_status ;;
kill) do_kill "$2" ;;
restart) do_restart "$2" ;;
esac
