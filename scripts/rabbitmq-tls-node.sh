#!/usr/bin/env bash
# rabbitmq-tls-node.sh: throwaway certificates and three extra RabbitMQ nodes for the TLS tests.
#
# Usage:
#   scripts/rabbitmq-tls-node.sh start   # make the certificates, start the nodes (idempotent)
#   scripts/rabbitmq-tls-node.sh env     # print KEY=value lines the tests read (see below)
#   scripts/rabbitmq-tls-node.sh check   # verify the nodes with openssl s_client; non-zero on a mismatch
#   scripts/rabbitmq-tls-node.sh stop    # stop the three nodes, remove /tmp/rmq-extra/tls
#
#   set -a; eval "$(scripts/rabbitmq-tls-node.sh env)"; set +a    # export the settings
#
# Nodes (via scripts/rabbitmq-node.sh; all state under /tmp/rmq-extra/NAME, default node untouched):
#   rabbittls          AMQP 5677, TLS 5671: TLS 1.2 and 1.3, client certificate REQUIRED
#                      (verify_peer, fail_if_no_peer_cert = true); auth PLAIN, AMQPLAIN, EXTERNAL
#                      (plugin rabbitmq_auth_mechanism_ssl, ssl_cert_login_from = common_name).
#   rabbittls-old      AMQP 5680, TLS 5681: TLS 1.1 ONLY (client certificate optional). Erlang/OTP 25
#                      serves TLS 1.1 with its default suites (ECDHE-ECDSA-AES256-SHA with our EC
#                      key); OpenSSL 3 clients only reach it at `-cipher 'DEFAULT:@SECLEVEL=0'`.
#   rabbittls-expired  AMQP 5682, TLS 5683: TLS 1.2 and 1.3, serves expired_server_certificate.pem
#                      (issued by the trusted CA, valid 2020-01-01 to 2020-01-02); client cert optional.
# On every node: loopback_users = none and these users, with full permissions on vhost "/":
#   guest/guest; warren-tls/warren-tls-password (PLAIN over TLS); tls-client without a password
#   (EXTERNAL: the client certificate's CN is the user name). They are loaded from a definitions
#   file at boot, which costs no CLI calls.
# Ports can be moved with the variables `env` prints (WARREN_TLS_PORT, WARREN_TLS_PLAIN_PORT,
# WARREN_TLS11_PORT, WARREN_TLS11_PLAIN_PORT, WARREN_TLS_EXPIRED_PORT,
# WARREN_TLS_EXPIRED_PLAIN_PORT); pass the same values to start, env, check and stop.
#
# Files in /tmp/rmq-extra/tls (EC P-256 keys; certificates valid 30 days, remade when less than a
# day is left, which restarts the nodes):
#   ca_certificate.pem, ca_key.pem                   trusted test CA (CN amqp-test-ca)
#   server_certificate.pem, server_key.pem           CN localhost, SAN DNS:localhost, IP:127.0.0.1
#   client_certificate.pem, client_key.pem           CN tls-client (clientAuth)
#   expired_server_certificate.pem                   server_key.pem's key, expired in 2020
#   expired_client_certificate.pem                   client_key.pem's key, CN tls-client, expired
#   other_ca_certificate.pem, other_ca_key.pem       untrusted CA (CN other-ca)
#   other_server_certificate.pem, other_server_key.pem   like the server certificate, by other-ca
#   definitions.json                                 users and permissions loaded by the nodes
#
# Needs root (or the rabbitmq user), a local rabbitmq-server and openssl (no Docker fallback).
# A cold `start` took 10-15 s here, 23 s on a busy machine (the three nodes boot in parallel; one
# node alone takes 6-7 s); `start` with everything running takes 0.3 s, `stop` about 5 s.
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node_sh=$here/rabbitmq-node.sh

readonly D=/tmp/rmq-extra/tls
readonly EXTRA_ROOT=/tmp/rmq-extra
readonly VALID_DAYS=30
readonly TLS_USER=warren-tls TLS_PASSWORD=warren-tls-password EXTERNAL_USER=tls-client

tls_port=${WARREN_TLS_PORT:-5671}
plain_port=${WARREN_TLS_PLAIN_PORT:-5677}
tls11_port=${WARREN_TLS11_PORT:-5681}
tls11_plain_port=${WARREN_TLS11_PLAIN_PORT:-5680}
expired_port=${WARREN_TLS_EXPIRED_PORT:-5683}
expired_plain_port=${WARREN_TLS_EXPIRED_PLAIN_PORT:-5682}

# name, AMQP port, TLS port of each node
nodes=(
    "rabbittls $plain_port $tls_port"
    "rabbittls-old $tls11_plain_port $tls11_port"
    "rabbittls-expired $expired_plain_port $expired_port"
)

log() { echo "$prog: $*"; }
die() {
    echo "$prog: $*" >&2
    exit 1
}

# Runs a command silently; shows its output only if it fails.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        echo "$prog: failed: $*" >&2
        echo "$out" >&2
        return 1
    fi
}

ec_key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

# RabbitMQ's rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)), 4-byte salt.
password_hash() {
    local tmp
    tmp=$(mktemp -d)
    openssl rand 4 >"$tmp/salt"
    { cat "$tmp/salt" && printf '%s' "$1"; } | openssl dgst -sha256 -binary >"$tmp/hash"
    cat "$tmp/salt" "$tmp/hash" | openssl base64 -A
    rm -rf "$tmp"
}

write_definitions() {
    local u users="" perms=""
    for u in "guest:guest:administrator" "$TLS_USER:$TLS_PASSWORD:" "$EXTERNAL_USER::"; do
        local name pass tags hash=""
        IFS=: read -r name pass tags <<<"$u"
        [[ -z $pass ]] || hash=$(password_hash "$pass")
        users+="${users:+,}
    {\"name\": \"$name\", \"password_hash\": \"$hash\", \"hashing_algorithm\": \"rabbit_password_hashing_sha256\", \"tags\": [${tags:+\"$tags\"}]}"
        perms+="${perms:+,}
    {\"user\": \"$name\", \"vhost\": \"/\", \"configure\": \".*\", \"write\": \".*\", \"read\": \".*\"}"
    done
    cat >"$D/definitions.json" <<EOF
{
  "vhosts": [{"name": "/"}],
  "users": [$users
  ],
  "permissions": [$perms
  ]
}
EOF
}

# True if the certificates exist and stay valid for at least one more day.
certs_fresh() {
    local f
    for f in ca_certificate ca_key server_certificate server_key client_certificate client_key \
        expired_server_certificate expired_client_certificate other_ca_certificate other_ca_key \
        other_server_certificate other_server_key; do
        [[ -s $D/$f.pem ]] || return 1
    done
    [[ -s $D/definitions.json ]] || return 1
    for f in ca_certificate server_certificate client_certificate other_ca_certificate \
        other_server_certificate; do
        openssl x509 -in "$D/$f.pem" -noout -checkend 86400 >/dev/null || return 1
    done
}

make_certs() {
    log "making certificates in $D"
    rm -rf "$D"
    (umask 022 && mkdir -p "$D/ca-newcerts")
    cd "$D"
    local ca_ext=(-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign")
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >client.ext

    # trusted CA, server and client certificates (RABBITMQ.md section 4)
    quiet openssl req -x509 "${ec_key[@]}" -keyout ca_key.pem -out ca_certificate.pem -days "$VALID_DAYS" \
        -subj "/CN=amqp-test-ca" "${ca_ext[@]}"
    quiet openssl req "${ec_key[@]}" -keyout server_key.pem -out server.csr -subj "/CN=localhost"
    quiet openssl x509 -req -in server.csr -CA ca_certificate.pem -CAkey ca_key.pem -CAcreateserial \
        -out server_certificate.pem -days "$VALID_DAYS" -sha256 -extfile server.ext
    quiet openssl req "${ec_key[@]}" -keyout client_key.pem -out client.csr -subj "/CN=$EXTERNAL_USER"
    quiet openssl x509 -req -in client.csr -CA ca_certificate.pem -CAkey ca_key.pem -CAcreateserial \
        -out client_certificate.pem -days "$VALID_DAYS" -sha256 -extfile client.ext

    # Expired certificates from the same CA and keys. OpenSSL before 3.4 has no `x509 -not_before`;
    # `openssl ca -startdate/-enddate` sets any validity period.
    cat >ca.cnf <<EOF
[ca]
default_ca = test_ca
[test_ca]
database = $D/ca-index.txt
new_certs_dir = $D/ca-newcerts
serial = $D/ca-serial
certificate = $D/ca_certificate.pem
private_key = $D/ca_key.pem
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
[policy_any]
commonName = supplied
EOF
    : >ca-index.txt
    echo 1000 >ca-serial
    quiet openssl ca -batch -config ca.cnf -notext -in server.csr -out expired_server_certificate.pem \
        -startdate 20200101000000Z -enddate 20200102000000Z -extfile server.ext
    quiet openssl ca -batch -config ca.cnf -notext -in client.csr -out expired_client_certificate.pem \
        -startdate 20200101000000Z -enddate 20200102000000Z -extfile client.ext

    # untrusted CA and a server certificate issued by it
    quiet openssl req -x509 "${ec_key[@]}" -keyout other_ca_key.pem -out other_ca_certificate.pem \
        -days "$VALID_DAYS" -subj "/CN=other-ca" "${ca_ext[@]}"
    quiet openssl req "${ec_key[@]}" -keyout other_server_key.pem -out other_server.csr -subj "/CN=localhost"
    quiet openssl x509 -req -in other_server.csr -CA other_ca_certificate.pem -CAkey other_ca_key.pem \
        -CAcreateserial -out other_server_certificate.pem -days "$VALID_DAYS" -sha256 -extfile server.ext

    write_definitions
    # Test material: readable by any local test runner, except the CA keys. The nodes run as the
    # rabbitmq user and must read server_key.pem.
    chmod 0644 ./*.pem definitions.json
    chmod 0600 ca_key.pem other_ca_key.pem
    [[ $(id -u) -ne 0 ]] || chown -R rabbitmq:rabbitmq "$D"
    cd - >/dev/null
}

# Writes the node's rabbitmq.conf and enabled_plugins before rabbitmq-node.sh starts it.
write_node_config() {
    local name=$1 plain=$2 tls=$3 base=$EXTRA_ROOT/$1
    (umask 022 && mkdir -p "$base")
    {
        echo "listeners.tcp.default = $plain"
        echo "listeners.ssl.default = $tls"
        echo "ssl_options.cacertfile = $D/ca_certificate.pem"
        echo "ssl_options.keyfile = $D/server_key.pem"
        echo "ssl_options.verify = verify_peer"
        case $name in
        rabbittls)
            echo "ssl_options.certfile = $D/server_certificate.pem"
            echo "ssl_options.fail_if_no_peer_cert = true"
            echo "ssl_options.versions.1 = tlsv1.3"
            echo "ssl_options.versions.2 = tlsv1.2"
            echo "auth_mechanisms.1 = PLAIN"
            echo "auth_mechanisms.2 = AMQPLAIN"
            echo "auth_mechanisms.3 = EXTERNAL"
            echo "ssl_cert_login_from = common_name"
            ;;
        rabbittls-old)
            echo "ssl_options.certfile = $D/server_certificate.pem"
            echo "ssl_options.fail_if_no_peer_cert = false"
            echo "ssl_options.versions.1 = tlsv1.1"
            ;;
        rabbittls-expired)
            echo "ssl_options.certfile = $D/expired_server_certificate.pem"
            echo "ssl_options.fail_if_no_peer_cert = false"
            echo "ssl_options.versions.1 = tlsv1.3"
            echo "ssl_options.versions.2 = tlsv1.2"
            ;;
        esac
        echo "loopback_users = none"
        echo "load_definitions = $D/definitions.json"
    } >"$base/rabbitmq.conf"
    if [[ $name == rabbittls ]]; then
        echo '[rabbitmq_auth_mechanism_ssl].' >"$base/enabled_plugins"
    else
        echo '[].' >"$base/enabled_plugins"
    fi
}

node_running() {
    "$node_sh" status "$1" "$2" >/dev/null 2>&1
}

port_answers() {
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

stop_nodes() {
    local n pids=()
    for n in "${nodes[@]}"; do
        read -r name plain _ <<<"$n"
        "$node_sh" stop "$name" "$plain" | sed "s/^/  /" &
        pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n"; done
}

do_start() {
    local n name plain tls t0=$SECONDS pids=() all_up=1
    for n in "${nodes[@]}"; do
        read -r name plain _ <<<"$n"
        node_running "$name" "$plain" || all_up=0
    done
    if ! certs_fresh; then
        # Nodes running with certificates that are about to be replaced would serve stale ones.
        for n in "${nodes[@]}"; do
            read -r name plain _ <<<"$n"
            if node_running "$name" "$plain"; then
                log "certificates missing or expiring: stopping $name"
                "$node_sh" stop "$name" "$plain" | sed "s/^/  /"
            fi
        done
        make_certs
    elif ((all_up)); then
        log "all nodes already running (TLS $tls_port, TLS 1.1 $tls11_port, expired $expired_port)"
        return 0
    fi
    for n in "${nodes[@]}"; do
        read -r name plain tls <<<"$n"
        node_running "$name" "$plain" && continue
        port_answers "$tls" && die "port $tls (TLS listener of $name) is in use by another process"
        write_node_config "$name" "$plain" "$tls"
    done
    # The nodes boot in parallel (`start` is a no-op for a running node; `wait` returns at once).
    for n in "${nodes[@]}"; do
        read -r name plain _ <<<"$n"
        { "$node_sh" start "$name" "$plain" && "$node_sh" wait "$name" "$plain"; } | sed "s/^/  /" &
        pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n" || die "a node failed to boot (see above)"; done
    log "nodes up in $((SECONDS - t0)) s: rabbittls TLS $tls_port (plain $plain_port)," \
        "rabbittls-old TLS 1.1 $tls11_port, rabbittls-expired TLS $expired_port"
}

do_stop() {
    stop_nodes
    rm -rf "$D"
    log "TLS nodes stopped, $D removed"
}

do_env() {
    cat <<EOF
WARREN_TLS_DIR=$D
WARREN_TLS_PORT=$tls_port
WARREN_TLS_PLAIN_PORT=$plain_port
WARREN_TLS11_PORT=$tls11_port
WARREN_TLS11_PLAIN_PORT=$tls11_plain_port
WARREN_TLS_EXPIRED_PORT=$expired_port
WARREN_TLS_EXPIRED_PLAIN_PORT=$expired_plain_port
WARREN_TLS_CA=$D/ca_certificate.pem
WARREN_TLS_CLIENT_CERT=$D/client_certificate.pem
WARREN_TLS_CLIENT_KEY=$D/client_key.pem
WARREN_TLS_EXPIRED_CLIENT_CERT=$D/expired_client_certificate.pem
WARREN_TLS_OTHER_CA=$D/other_ca_certificate.pem
WARREN_TLS_OTHER_SERVER_CERT=$D/other_server_certificate.pem
WARREN_TLS_OTHER_SERVER_KEY=$D/other_server_key.pem
WARREN_TLS_USER=$TLS_USER
WARREN_TLS_PASSWORD=$TLS_PASSWORD
WARREN_TLS_EXTERNAL_USER=$EXTERNAL_USER
EOF
}

# One TLS handshake with openssl s_client, then the AMQP protocol header. Prints
# "ok PROTOCOL CIPHER MECHANISMS" (MECHANISMS from the broker's Connection.Start), or the first
# error. s_client's input stays open until the broker has answered, with its Connection.Start or
# an alert (a TLS 1.3 server sends "certificate required" and "certificate expired" only after
# the handshake), for at most 10 s: on a busy machine, right after boot, that took over 1 s.
handshake() {
    local out log proto cipher mechanisms
    log=$(mktemp)
    {
        printf 'AMQP\0\0\x09\x01'
        for _ in {1..100}; do
            grep -qaE 'PLAIN|alert|error' "$log" && break
            sleep 0.1
        done
    } | timeout 15 openssl s_client -connect "127.0.0.1:$1" -verify_return_error "${@:2}" >"$log" 2>&1 || true
    out=$(tr -c '[:print:]\n' '.' <"$log")
    rm -f "$log"
    mechanisms=$(grep -m1 -oE '[A-Z][A-Z ]*PLAIN[A-Z ]*' <<<"$out" || true)
    if grep -q 'Verify return code: 0 ' <<<"$out" && grep -qE 'Cipher is [A-Z]' <<<"$out" &&
        ! grep -qE 'alert|error:|verify error' <<<"$out"; then
        if [[ -z $mechanisms ]]; then
            echo "handshake ok, but no Connection.Start came"
            return
        fi
        proto=$(grep -m1 -oE 'Protocol *: *TLSv[0-9.]+' <<<"$out" || grep -m1 -oE 'New, TLSv[0-9.]+' <<<"$out" || true)
        cipher=$(grep -m1 -oE 'Cipher is [A-Z0-9_-]+' <<<"$out" || true)
        echo "ok ${proto##* } ${cipher##* } $mechanisms"
    else
        grep -m1 -E 'alert|error:|verify error' <<<"$out" |
            sed -E 's/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:[a-z0-9_]+://; s/:\.\.\/ssl.*//' || echo "failed"
    fi
}

do_check() {
    local tmp i fails=0 wants=() whats=()
    local ca=(-CAfile "$D/ca_certificate.pem") cli=(-cert "$D/client_certificate.pem" -key "$D/client_key.pem")
    local old=(-tls1_1 -cipher 'DEFAULT:@SECLEVEL=0') # OpenSSL 3 offers TLS 1.1 only at level 0
    tmp=$(mktemp -d)
    # expect REGEX DESCRIPTION PORT S_CLIENT_ARGS...: runs in the background, judged below.
    expect() {
        wants+=("$1")
        whats+=("$2")
        handshake "${@:3}" >"$tmp/${#wants[@]}" &
    }
    expect '^ok TLSv1\.3 .* EXTERNAL' "rabbittls: CA + client cert, host localhost" "$tls_port" "${ca[@]}" "${cli[@]}" -verify_hostname localhost
    expect '^ok TLSv1\.3' "rabbittls: IP 127.0.0.1 (IP SAN)" "$tls_port" "${ca[@]}" "${cli[@]}" -verify_ip 127.0.0.1
    expect 'hostname mismatch' "rabbittls: wrong host name refused" "$tls_port" "${ca[@]}" "${cli[@]}" -verify_hostname wrong.example
    expect 'IP address mismatch' "rabbittls: wrong IP 127.0.0.2 refused" "$tls_port" "${ca[@]}" "${cli[@]}" -verify_ip 127.0.0.2
    expect 'self-signed certificate in certificate chain' "rabbittls: other CA refused" "$tls_port" -CAfile "$D/other_ca_certificate.pem" "${cli[@]}"
    expect 'certificate required' "rabbittls: no client certificate refused" "$tls_port" "${ca[@]}" -verify_hostname localhost
    expect 'certificate expired' "rabbittls: expired client certificate refused" "$tls_port" "${ca[@]}" -cert "$D/expired_client_certificate.pem" -key "$D/client_key.pem"
    expect '^ok TLSv1\.2 ECDHE-ECDSA-AES256-GCM-SHA384' "rabbittls: TLS 1.2" "$tls_port" "${ca[@]}" "${cli[@]}" -tls1_2
    expect 'protocol version' "rabbittls: TLS 1.1 refused" "$tls_port" "${ca[@]}" "${cli[@]}" "${old[@]}"
    expect '^ok TLSv1\.1 ECDHE-ECDSA-AES256-SHA' "rabbittls-old: TLS 1.1 at SECLEVEL=0" "$tls11_port" "${ca[@]}" "${old[@]}" -verify_hostname localhost
    expect 'legacy sigalg disallowed' "rabbittls-old: TLS 1.1 at default SECLEVEL refused" "$tls11_port" "${ca[@]}" -tls1_1
    expect 'unsupported protocol' "rabbittls-old: TLS 1.2 refused" "$tls11_port" "${ca[@]}" -tls1_2
    expect 'certificate has expired' "rabbittls-expired: expired server cert refused" "$expired_port" "${ca[@]}" -verify_hostname localhost
    wait
    for i in "${!wants[@]}"; do
        local got
        got=$(<"$tmp/$((i + 1))")
        if [[ $got =~ ${wants[$i]} ]]; then
            printf 'PASS  %-50s %s\n' "${whats[$i]}" "$got"
        else
            printf 'FAIL  %-50s %s (wanted /%s/)\n' "${whats[$i]}" "$got" "${wants[$i]}"
            fails=$((fails + 1))
        fi
    done
    rm -rf "$tmp"
    if ((fails)); then
        echo "$prog: $fails of ${#wants[@]} checks failed" >&2
        return 1
    fi
    echo "$prog: all ${#wants[@]} checks passed"
}

case ${1:-} in
start) do_start ;;
stop) do_stop ;;
env) do_env ;;
check) do_check ;;
*)
    echo "usage: $prog start|stop|env|check" >&2
    exit 2
    ;;
esac
