#!/usr/bin/env bash
# Runs a throwaway ACME CA (Pebble + pebble-challtestsrv) for tests and demos.
#
#   pebble.sh start|stop|status|env [--name NAME] [--port-base N] [--env K=V ...]
#                                   [--retry-after SECONDS] [--eab KID=MACKEY ...]
#
# Ports: N ACME directory (https), N+1 Pebble management (https), N+2
# challtestsrv DNS (udp+tcp, 127.0.0.1), N+3 challtestsrv management (http,
# 127.0.0.1). State in .cache/pebble/NAME/: ca.pem (trust it for the ACME API),
# pebble.log, challtestsrv.log, pid files and `env` (shell-sourceable).
# `start` is idempotent: a running instance with the same settings is kept,
# one with other settings is restarted. Pebble's env: PEBBLE_VA_NOSLEEP=1 plus
# every --env (e.g. PEBBLE_WFE_NONCEREJECT=50). --retry-after: the Retry-After
# Pebble sends on pending authorizations and processing orders (default 1;
# 0 sends none, as for protocol-speed benchmarks). --eab: require External
# Account Binding and accept this key id with its base64url HMAC key.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}
die() { printf 'pebble.sh: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] || usage
ACTION="$1"
shift
NAME=default
PORT_BASE=14000
EXTRA_ENV=()
RETRY_AFTER=1
EAB_KEYS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --name) [ $# -ge 2 ] || usage; NAME="$2"; shift 2 ;;
        --port-base) [ $# -ge 2 ] || usage; PORT_BASE="$2"; shift 2 ;;
        --env) [ $# -ge 2 ] || usage; EXTRA_ENV+=("$2"); shift 2 ;;
        --retry-after) [ $# -ge 2 ] || usage; RETRY_AFTER="$2"; shift 2 ;;
        --eab) [ $# -ge 2 ] || usage; EAB_KEYS+=("$2"); shift 2 ;;
        -h|--help) usage ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "${ACTION}" in start|stop|status|env) ;; *) die "unknown action '${ACTION}': use start, stop, status or env" ;; esac
[[ "${NAME}" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "--name '${NAME}': use letters, digits, '.', '_', '-'"
if ! [[ "${PORT_BASE}" =~ ^[0-9]+$ ]] || [ "${PORT_BASE}" -lt 1024 ] || [ "${PORT_BASE}" -gt 65532 ]; then
    die "--port-base '${PORT_BASE}': must be a number from 1024 to 65532"
fi
if ! [[ "${RETRY_AFTER}" =~ ^[0-9]+$ ]] || [ "${RETRY_AFTER}" -gt 60 ]; then
    die "--retry-after '${RETRY_AFTER}': must be a number of seconds from 0 to 60"
fi
for kv in "${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"}"; do
    [[ "${kv}" =~ ^[A-Z_][A-Z0-9_]*=.*$ ]] || die "--env '${kv}': expected KEY=VALUE"
done
for kv in "${EAB_KEYS[@]+"${EAB_KEYS[@]}"}"; do
    [[ "${kv}" =~ ^[A-Za-z0-9_.-]+=[A-Za-z0-9_-]+$ ]] || die "--eab '${kv}': expected KID=MACKEY (MACKEY base64url)"
done

DIR="${FLEETCERT_CACHE}/pebble/${NAME}"
ACME_PORT="${PORT_BASE}"
MGMT_PORT=$((PORT_BASE + 1))
DNS_PORT=$((PORT_BASE + 2))
CTS_PORT=$((PORT_BASE + 3))

# pid_alive FILE: the pid in FILE runs one of our binaries (pids get reused).
pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid="$(cat "$1")"
    [ -n "${pid}" ] && [ -r "/proc/${pid}/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -e "^/usr/bin/pebble " -e "^/usr/bin/pebble-challtestsrv "
}

running() {
    pid_alive "${DIR}/pebble.pid" && pid_alive "${DIR}/challtestsrv.pid"
}

stop_instance() {
    local f pid _
    for f in "${DIR}/pebble.pid" "${DIR}/challtestsrv.pid"; do
        if pid_alive "${f}"; then
            pid="$(cat "${f}")"
            kill "${pid}" 2>/dev/null || true
            for _ in $(seq 50); do
                [ -d "/proc/${pid}" ] || break
                sleep 0.1
            done
            if [ -d "/proc/${pid}" ]; then
                kill -9 "${pid}" 2>/dev/null || true
            fi
        fi
        rm -f "${f}"
    done
    rm -f "${DIR}/settings"
}

# Everything that changes how the instance behaves; a difference means restart.
settings() {
    printf 'port_base=%s\n' "${PORT_BASE}"
    printf 'retry_after=%s\n' "${RETRY_AFTER}"
    printf 'env=%s\n' "${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"}" | sort
    printf 'eab=%s\n' "${EAB_KEYS[@]+"${EAB_KEYS[@]}"}" | sort
    sha256sum "${BASH_SOURCE[0]}" /usr/bin/pebble | cut -d' ' -f1
}

port_busy() {
    ss -H -ltnu "( sport = :$1 )" 2>/dev/null | grep -q .
}

make_tls() {
    local t="${DIR}/tls"
    rm -rf "${t}"
    mkdir -p "${t}"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "${t}/ca.key" -out "${t}/ca.pem" -days 30 \
        -subj "/CN=fleetcert throwaway Pebble API CA ${NAME}" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "${t}/server.key" -out "${t}/server.csr" -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"${t}/ext.cnf"
    openssl x509 -req -in "${t}/server.csr" -CA "${t}/ca.pem" -CAkey "${t}/ca.key" \
        -CAcreateserial -days 30 -extfile "${t}/ext.cnf" -out "${t}/server.pem" 2>/dev/null
    chmod 600 "${t}/ca.key" "${t}/server.key"
    cp "${t}/ca.pem" "${DIR}/ca.pem"
}

# The externalAccountMACKeys object for --eab (both parts were checked above,
# so they need no JSON escaping).
eab_json() {
    local kv sep=''
    printf '{'
    for kv in "${EAB_KEYS[@]+"${EAB_KEYS[@]}"}"; do
        printf '%s"%s": "%s"' "${sep}" "${kv%%=*}" "${kv#*=}"
        sep=', '
    done
    printf '}'
}

write_config() {
    # Profiles mirror Let's Encrypt's (classic 90 days, shortlived ~6.7 days).
    # Pebble gives orders that name no profile a random one (even with a
    # profile called "default"): tests that depend on validity name a profile.
    # short Retry-After values keep polling tests fast while still exercising it.
    cat >"${DIR}/pebble-config.json" <<JSON
{
  "pebble": {
    "listenAddress": "0.0.0.0:${ACME_PORT}",
    "managementListenAddress": "0.0.0.0:${MGMT_PORT}",
    "certificate": "${DIR}/tls/server.pem",
    "privateKey": "${DIR}/tls/server.key",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": $([ ${#EAB_KEYS[@]} -gt 0 ] && echo true || echo false),
    "externalAccountMACKeys": $(eab_json),
    "domainBlocklist": ["blocked-domain.example"],
    "retryAfter": {"authz": ${RETRY_AFTER}, "order": ${RETRY_AFTER}},
    "keyAlgorithm": "ecdsa",
    "profiles": {
      "classic": {"description": "90-day certificates, like Let's Encrypt classic", "validityPeriod": 7776000},
      "shortlived": {"description": "160-hour certificates, like Let's Encrypt shortlived", "validityPeriod": 576000}
    }
  }
}
JSON
}

write_env() {
    cat >"${DIR}/env.tmp" <<ENV
export PEBBLE_NAME='${NAME}'
export PEBBLE_PORT_BASE='${PORT_BASE}'
export PEBBLE_DIRECTORY='https://localhost:${ACME_PORT}/dir'
export PEBBLE_CA='${DIR}/ca.pem'
export PEBBLE_MGMT='https://localhost:${MGMT_PORT}'
export PEBBLE_DNS='127.0.0.1:${DNS_PORT}'
export PEBBLE_LOG='${DIR}/pebble.log'
export CHALLTESTSRV_MGMT='http://127.0.0.1:${CTS_PORT}'
ENV
    mv "${DIR}/env.tmp" "${DIR}/env"
}

wait_ready() {
    local _
    # Up to 60 s (600 x 0.1 s, plus the curls): a loaded machine starts Pebble slowly.
    for _ in $(seq 600); do
        if curl -fsS -o /dev/null --cacert "${DIR}/ca.pem" "https://localhost:${ACME_PORT}/dir" 2>/dev/null \
            && curl -fsS -o /dev/null --cacert "${DIR}/ca.pem" "https://localhost:${MGMT_PORT}/roots/0" 2>/dev/null \
            && curl -sS -o /dev/null "http://127.0.0.1:${CTS_PORT}/" 2>/dev/null; then
            return 0
        fi
        running || break
        sleep 0.1
    done
    return 1
}

start_instance() {
    local p
    mkdir -p "${DIR}"
    if running && [ "$(cat "${DIR}/settings" 2>/dev/null)" = "$(settings)" ]; then
        write_env
        return 0
    fi
    stop_instance
    for p in "${ACME_PORT}" "${MGMT_PORT}" "${DNS_PORT}" "${CTS_PORT}"; do
        port_busy "${p}" && die "port ${p} is in use: pick another --port-base (instance '${NAME}' uses ${PORT_BASE}..$((PORT_BASE + 3)))"
    done
    make_tls
    write_config
    : >"${DIR}/pebble.log"
    : >"${DIR}/challtestsrv.log"
    # setsid: the CA must outlive the calling shell (make, pytest) until `stop`.
    setsid /usr/bin/pebble-challtestsrv \
        -management "127.0.0.1:${CTS_PORT}" -dnsserver "127.0.0.1:${DNS_PORT}" \
        -http01 "" -https01 "" -tlsalpn01 "" -doh "" \
        -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
        </dev/null >>"${DIR}/challtestsrv.log" 2>&1 9>&- &
    echo $! >"${DIR}/challtestsrv.pid"
    env PEBBLE_VA_NOSLEEP=1 "${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"}" \
        setsid /usr/bin/pebble -config "${DIR}/pebble-config.json" -dnsserver "127.0.0.1:${DNS_PORT}" \
        </dev/null >>"${DIR}/pebble.log" 2>&1 9>&- &
    echo $! >"${DIR}/pebble.pid"
    if ! wait_ready; then
        printf '%s\n' "--- pebble.log" >&2
        tail -n 20 "${DIR}/pebble.log" >&2
        printf '%s\n' "--- challtestsrv.log" >&2
        tail -n 20 "${DIR}/challtestsrv.log" >&2
        stop_instance
        die "instance '${NAME}' did not become ready within 60 s on ports ${PORT_BASE}..$((PORT_BASE + 3)) (or exited); see ${DIR}/pebble.log and ${DIR}/challtestsrv.log"
    fi
    settings >"${DIR}/settings"
    write_env
}

mkdir -p "${DIR}"
# Serialises actions on one instance; the daemons must not inherit this fd.
exec 9>"${DIR}/lock"
flock 9
case "${ACTION}" in
    start)
        start_instance
        printf 'pebble.sh: %s running: https://localhost:%s/dir (CA %s)\n' "${NAME}" "${ACME_PORT}" "${DIR}/ca.pem" >&2
        ;;
    stop)
        stop_instance
        ;;
    status)
        if running; then
            printf '%s running (pebble pid %s, challtestsrv pid %s)\n' "${NAME}" "$(cat "${DIR}/pebble.pid")" "$(cat "${DIR}/challtestsrv.pid")"
        else
            printf '%s stopped\n' "${NAME}"
            exit 3
        fi
        ;;
    env)
        [ -f "${DIR}/env" ] || die "instance '${NAME}' was never started (no ${DIR}/env)"
        cat "${DIR}/env"
        ;;
esac
