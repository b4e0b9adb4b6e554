#!/usr/bin/env bash
# start-rabbitmq.sh: make sure an AMQP broker answers for the tests; start one if none does.
#
# Usage:
#   scripts/start-rabbitmq.sh                                   # broker at 127.0.0.1:5672
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f scripts/start-rabbitmq.sh   # host:port of the URL
#
# "Answers" means: the port accepts a TCP connection and replies to the AMQP 0-9-1 protocol header
# with a frame (Connection.Start). For an amqps:// URL only the TCP connection is checked. Then:
#   1. a broker answers: say so, exit 0;
#   2. the host is not this machine: exit 1 (nothing can be started from here);
#   3. rabbitmq-server is installed: start it (systemd's rabbitmq-server unit if systemd runs,
#      else `rabbitmq-server -detached`; needs root) and wait up to 60 s for the port (5672 only:
#      for another port it points at scripts/rabbitmq-node.sh and exits 1);
#   4. a Docker engine answers (`docker info`): start container warren-rabbitmq from
#      rabbitmq:3-management (ports PORT->5672 and 15672) and wait up to 60 s;
#   5. otherwise print how to install or run one and exit 1.
# Only bash, coreutils' `timeout` and the broker's own tools are used.
set -euo pipefail

readonly WAIT_SECONDS=60
readonly CONTAINER=warren-rabbitmq
readonly IMAGE=rabbitmq:3-management

prog=${0##*/}
log() { echo "$prog: $*"; }
die() {
    echo "$prog: $*" >&2
    exit 1
}

# --- where: host and port from $AMQP_URL (amqp[s]://[user[:pass]@]host[:port][/vhost][?query])
scheme=amqp
host=127.0.0.1
port=5672
if [[ -n ${AMQP_URL:-} ]]; then
    rest=$AMQP_URL
    if [[ $rest == *://* ]]; then
        scheme=${rest%%://*}
        rest=${rest#*://}
    fi
    [[ $scheme == amqp || $scheme == amqps ]] || die "AMQP_URL: unknown scheme '$scheme' (amqp or amqps)"
    [[ $scheme == amqps ]] && port=5671
    rest=${rest%%[/?#]*} # authority only
    rest=${rest##*@}     # drop user:password
    if [[ $rest =~ ^\[([0-9A-Fa-f:.]+)\](:([0-9]+))?$ ]]; then # [IPv6]:port
        host=${BASH_REMATCH[1]}
        port=${BASH_REMATCH[3]:-$port}
    elif [[ $rest =~ ^([^:]*)(:([0-9]+))?$ ]]; then
        host=${BASH_REMATCH[1]:-$host}
        port=${BASH_REMATCH[3]:-$port}
    else
        die "AMQP_URL: cannot read host and port"
    fi
fi
where="$host:$port"
[[ $host == *:* ]] && where="[$host]:$port"

# --- probe (run under `timeout`, so it is passed to a child bash by `declare -f`)
# shellcheck disable=SC2317 # invoked indirectly
probe() { # probe HOST PORT SCHEME
    local b
    LC_ALL=C
    exec 3<>"/dev/tcp/$1/$2" || return 1
    [[ $3 == amqps ]] && return 0
    printf 'AMQP\0\0\x09\x01' >&3 || return 1
    IFS= read -r -n 1 -d '' b <&3 || return 1
    [[ $b == $'\x01' ]] # frame type 1: a method frame (Connection.Start)
}
answers() {
    timeout 5 bash -c "$(declare -f probe); probe \"\$@\"" _ "$host" "$port" "$scheme" 2>/dev/null
}

wait_for_broker() { # wait_for_broker WHAT
    local i
    for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
        if answers; then
            log "$1: a broker answers on $where after about $((i / 2)) s"
            return 0
        fi
        sleep 0.5
    done
    return 1
}

instructions() {
    cat >&2 <<EOF
$prog: no AMQP broker answers on $where, and none could be started here.
Start one, then run this script again:
  - Debian/Ubuntu:  sudo apt-get install rabbitmq-server
                    (the package starts it; without systemd: sudo rabbitmq-server -detached)
  - in a container: docker run -d --name $CONTAINER -p $port:5672 -p 15672:15672 $IMAGE
  - elsewhere:      set AMQP_URL=amqp://USER:PASSWORD@HOST:PORT/%2f to a broker that runs
EOF
    exit 1
}

if answers; then
    log "a broker answers on $where"
    exit 0
fi
log "no broker answers on $where"

case $host in
127.* | localhost | ::1 | 0:0:0:0:0:0:0:1) ;;
*) die "$where is not on this machine; start its broker there (or point AMQP_URL at one that runs)" ;;
esac

if command -v rabbitmq-server >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]] && [[ $(id -un) != rabbitmq ]]; then
        log "rabbitmq-server is installed, but starting it needs root"
        instructions
    fi
    if ((port != 5672)); then
        echo "$prog: rabbitmq-server's default node listens on 5672, not $port; for an extra node on" >&2
        echo "$prog: port $port run: scripts/rabbitmq-node.sh start NAME $port && scripts/rabbitmq-node.sh wait NAME $port" >&2
        exit 1
    fi
    if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
        # Booting, or listening elsewhere (/etc/rabbitmq/rabbitmq.conf): a second launch would fail.
        log "the rabbitmq-server node already runs; waiting for it to answer on $where"
    elif [[ -d /run/systemd/system ]] && systemctl cat rabbitmq-server.service >/dev/null 2>&1; then
        log "starting rabbitmq-server.service"
        systemctl start rabbitmq-server.service
    else
        log "starting rabbitmq-server -detached"
        rabbitmq-server -detached
    fi
    wait_for_broker "rabbitmq-server" && exit 0
    echo "$prog: rabbitmq-server did not answer on $where within ${WAIT_SECONDS}s." >&2
    echo "$prog: see /var/log/rabbitmq/ and \`rabbitmq-diagnostics status\`" >&2
    exit 1
fi

if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
    if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
        log "starting the existing container $CONTAINER"
        docker start "$CONTAINER" >/dev/null
    else
        log "docker run $IMAGE as $CONTAINER (the first run pulls the image)"
        docker run -d --name "$CONTAINER" -p "$port:5672" -p 15672:15672 "$IMAGE" >/dev/null
    fi
    wait_for_broker "docker container $CONTAINER" && exit 0
    echo "$prog: container $CONTAINER did not answer on $where within ${WAIT_SECONDS}s; see \`docker logs $CONTAINER\`" >&2
    exit 1
fi

instructions
