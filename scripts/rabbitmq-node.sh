#!/usr/bin/env bash
# rabbitmq-node.sh: start, stop or wait for an extra RabbitMQ node on this host, beside the
# default node (which it never touches, nor /etc/rabbitmq).
#
# Usage:
#   scripts/rabbitmq-node.sh start  NAME AMQP_PORT   # start node NAME@$(hostname -s); no-op if it runs
#   scripts/rabbitmq-node.sh wait   NAME AMQP_PORT   # wait until it has booted (timeout 60 s)
#   scripts/rabbitmq-node.sh stop   NAME AMQP_PORT   # stop it and remove /tmp/rmq-extra/NAME
#   scripts/rabbitmq-node.sh status NAME AMQP_PORT   # exit 0 if it runs, 3 if not
#   scripts/rabbitmq-node.sh pid    NAME AMQP_PORT   # print the OS pid of its beam.smp; exit 3 if none
#   scripts/rabbitmq-node.sh halt   NAME AMQP_PORT   # stop it cleanly but KEEP its files (`start` resumes)
#   scripts/rabbitmq-node.sh kill   NAME AMQP_PORT   # kill -9 it, keep its files; exit 3 if not running
#
# Everything of the node lives under /tmp/rmq-extra/NAME: mnesia/, log/ (NAME@HOST.log), its own
# rabbitmq.conf, enabled_plugins and an empty rabbitmq-env.conf, and the pid file NAME.pid. The
# Erlang distribution port is AMQP_PORT+20000. The node shares the default node's Erlang cookie
# (/var/lib/rabbitmq/.erlang.cookie), so plain `rabbitmqctl -n NAME@$(hostname -s) ...` reaches it.
#
# A caller may write /tmp/rmq-extra/NAME/rabbitmq.conf and/or enabled_plugins before `start`; they
# are kept. Otherwise `start` writes `listeners.tcp.default = AMQP_PORT`, `loopback_users = none`
# and no plugins. The new node has the usual guest/guest user, usable from any address.
#
# Needs root (the Debian wrappers in /usr/sbin switch to the rabbitmq user) or the rabbitmq user.
# `start` returns once the node has registered with epmd (about 1.5 s), not when it has booted:
# call `wait` before using it (start to end of `wait`: 6-7 s for one node here). `start`, `stop`,
# `halt` and `kill` of one NAME are serialised by flock on /tmp/rmq-extra/.NAME.lock. Recipe:
# shared/RABBITMQ.md §4.
#
# `halt` and `kill` are for fault injection and clusters: a node started again after either keeps
# its data and, in a cluster, rejoins its peers by itself. `kill` returns once the process is gone
# and the name has left epmd (about 0.1 s), so `start` can follow at once. A node restarted in a
# cluster waits (up to 10 x 30 s) for its peers' tables: `wait` for it before stopping the others.
set -euo pipefail

readonly EXTRA_ROOT=/tmp/rmq-extra
readonly WAIT_TIMEOUT=${RABBITMQ_NODE_WAIT_TIMEOUT:-60}

prog=${0##*/}

usage() {
    echo "usage: $prog start|stop|wait|status|pid|halt|kill NAME AMQP_PORT" >&2
    exit 2
}

die() {
    echo "$prog: $*" >&2
    exit 1
}

[[ $# -eq 3 ]] || usage
cmd=$1
name=$2
port=$3
[[ $name =~ ^[A-Za-z][A-Za-z0-9_-]*$ ]] || die "bad node name '$name' (letters, digits, _ and - only)"
if ! [[ $port =~ ^[1-9][0-9]*$ ]] || ((port < 1024 || port > 45535)); then
    die "bad AMQP port '$port' (1024..45535, so that the distribution port AMQP_PORT+20000 is valid)"
fi

host=$(hostname -s)
node=$name@$host
base=$EXTRA_ROOT/$name
pidfile=$base/$name.pid
dist_port=$((port + 20000))

# Prints the node's OS pid if its pid file names a live (not zombie: a killed node stays one for a
# second or two here) beam.smp process.
live_pid() {
    local pid comm state
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    { read -r _ comm state _ <"/proc/$pid/stat"; } 2>/dev/null || return 1
    [[ $comm == "(beam.smp)" && $state != Z ]] || return 1
    echo "$pid"
}

# True if the node is registered with epmd (it is booting or running, pid file or not).
registered() {
    command -v epmd >/dev/null 2>&1 || return 1
    epmd -names 2>/dev/null | grep -q "^name $name at port "
}

running() {
    live_pid >/dev/null || registered
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_busy() {
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Serialises start and stop of this node across processes (held until this script exits). Children
# that may outlive the script (the node, an epmd started by it) must get `9>&-`.
take_lock() {
    (umask 022 && mkdir -p "$EXTRA_ROOT")
    exec 9>"$EXTRA_ROOT/.$name.lock"
    flock -w 120 9 || die "timed out waiting for the lock on $node"
}

need_privileges() {
    local uid
    uid=$(id -u)
    [[ $uid -eq 0 ]] || [[ $uid -eq $(id -u rabbitmq 2>/dev/null || echo -1) ]] ||
        die "must run as root or as the rabbitmq user"
}

do_start() {
    local i
    take_lock
    if running; then
        echo "$prog: $node already running (AMQP port $port)"
        return 0
    fi
    command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server is not installed"
    need_privileges
    port_busy "$port" && die "127.0.0.1:$port is already in use by another process"
    port_busy "$dist_port" && die "127.0.0.1:$dist_port (distribution port) is already in use"

    # 0755 on every level, whatever the caller's umask: the node runs as the rabbitmq user.
    (umask 022 && mkdir -p "$base/mnesia" "$base/log")
    chmod 0755 "$EXTRA_ROOT"
    [[ -f $base/rabbitmq.conf ]] ||
        printf 'listeners.tcp.default = %s\nloopback_users = none\n' "$port" >"$base/rabbitmq.conf"
    [[ -f $base/enabled_plugins ]] || echo '[].' >"$base/enabled_plugins"
    # An empty env file, so that /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@...) is not read.
    : >"$base/rabbitmq-env.conf"
    rm -f "$pidfile"
    [[ $(id -u) -ne 0 ]] || chown -R rabbitmq:rabbitmq "$base"

    echo "$prog: starting $node (AMQP port $port, distribution port $dist_port, dir $base)"
    # /usr/sbin/rabbitmq-server runs `su rabbitmq`, which keeps this environment.
    RABBITMQ_NODENAME=$node \
        RABBITMQ_NODE_PORT=$port \
        RABBITMQ_DIST_PORT=$dist_port \
        RABBITMQ_MNESIA_BASE=$base/mnesia \
        RABBITMQ_LOG_BASE=$base/log \
        RABBITMQ_CONFIG_FILE=$base/rabbitmq.conf \
        RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins \
        RABBITMQ_CONF_ENV_FILE=$base/rabbitmq-env.conf \
        RABBITMQ_PID_FILE=$pidfile \
        rabbitmq-server -detached 9>&-
    # -detached returns before the node exists. Hold the lock until it registers with epmd (about
    # 1.6 s here), so that a concurrent or immediately repeated `start` sees it and does nothing.
    for ((i = 0; i < 200; i++)); do
        running && return 0
        sleep 0.1
    done
    echo "$prog: $node did not come up within 20 s; last lines of its log:" >&2
    tail -n 30 "$base/log/$node.log" >&2 2>/dev/null || true
    exit 1
}

do_wait() {
    command -v rabbitmqctl >/dev/null 2>&1 || die "rabbitmqctl is not installed"
    # `await_startup` fails at once before the node registers with epmd; `wait PIDFILE` does not.
    if ! rabbitmqctl -q -n "$node" wait --timeout "$WAIT_TIMEOUT" "$pidfile" >/dev/null; then
        echo "$prog: $node did not boot within ${WAIT_TIMEOUT}s; last lines of its log:" >&2
        tail -n 30 "$base/log/$node.log" >&2 2>/dev/null || true
        exit 1
    fi
    echo "$prog: $node is up (AMQP port $port)"
}

# Stops the node; removes its files unless $1 is "keep".
do_stop() {
    local keep=${1:-} pid i
    take_lock
    if running; then
        pid=$(live_pid || true)
        echo "$prog: stopping $node"
        # With a pid file, `stop` also waits for the OS process to exit.
        if ! rabbitmqctl -q -n "$node" stop ${pid:+"$pidfile"} >/dev/null 2>&1 9>&- && [[ -n $pid ]]; then
            echo "$prog: rabbitmqctl stop failed; sending SIGTERM to $pid" >&2
            kill "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    if [[ $keep == keep ]]; then
        echo "$prog: $node stopped, $base kept"
        return 0
    fi
    rm -rf "$base"
    echo "$prog: $node stopped, $base removed"
}

# kill -9 of the node's beam.smp; waits until the process has exited and epmd has dropped the name.
do_kill() {
    local pid i
    take_lock
    if ! pid=$(live_pid); then
        echo "$prog: $node is not running (no live pid in $pidfile)" >&2
        exit 3
    fi
    kill -9 "$pid"
    for ((i = 0; i < 200; i++)); do
        if ! live_pid >/dev/null && ! registered; then
            echo "$prog: $node killed (kill -9 $pid), $base kept"
            return 0
        fi
        sleep 0.05
    done
    die "$node (pid $pid) still there 10 s after kill -9"
}

case $cmd in
start) do_start ;;
wait) do_wait ;;
stop) do_stop ;;
halt) do_stop keep ;;
kill) do_kill ;;
pid)
    live_pid || {
        echo "$prog: $node has no live process" >&2
        exit 3
    }
    ;;
status)
    if running; then
        echo "$prog: $node is running"
    else
        echo "$prog: $node is not running"
        exit 3
    fi
    ;;
*) usage ;;
esac
