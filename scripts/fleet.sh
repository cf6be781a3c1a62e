#!/usr/bin/env bash
# A local fleet: web nodes behind a TCP load balancer, and a throwaway ACME CA.
#
#   fleet.sh up|down|status|check|orders|add-node|demo [--name NAME] [--nodes N]
#            [--port-base N] [--domain NAME]
#
#   up        podman network fleet-NAME; web nodes fleet-NAME-web1..N
#             (fleet-host image, --privileged, nested podman for the app); a
#             load balancer fleet-NAME-lb (nginx stream) round-robining TCP 80
#             and 443 over the nodes; Pebble instance fleet-NAME (scripts/pebble.sh)
#             whose DNS resolves --domain to the load balancer; an ACME account
#             key in .cache/fleet/NAME/account.key. Idempotent.
#   add-node  one more web node, added to the load balancer.
#   check     what an operator checks: https through the load balancer,
#             verified against Pebble's root, and the serial each node serves.
#   orders    number of ACME orders Pebble has received (its log).
#   demo      up, the stand-in Meteor bundle, then playbooks/site.yml with
#             demo/inventory.yml, then check (the `make demo` target).
#   down      removes all of it.
# Defaults: --name demo, --nodes 3, --port-base 14700, --domain app.fleet.test.
# State (load balancer config, account key, env) in .cache/fleet/NAME/.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

usage() {
    sed -n '2,22s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}
log() { printf 'fleet.sh: %s\n' "$*" >&2; }
die() { printf 'fleet.sh: ERROR: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] || usage
ARGS=("$@")
ACTION="$1"
shift
NAME=demo
NODES=3
PORT_BASE=14700
DOMAIN=app.fleet.test
while [ $# -gt 0 ]; do
    case "$1" in
        --name) [ $# -ge 2 ] || usage; NAME="$2"; shift 2 ;;
        --nodes) [ $# -ge 2 ] || usage; NODES="$2"; shift 2 ;;
        --port-base) [ $# -ge 2 ] || usage; PORT_BASE="$2"; shift 2 ;;
        --domain) [ $# -ge 2 ] || usage; DOMAIN="$2"; shift 2 ;;
        -h|--help) usage ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "${ACTION}" in up|down|status|check|orders|add-node|demo) ;; *) die "unknown action '${ACTION}' (see --help)" ;; esac
[[ "${NAME}" =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] || die "--name '${NAME}': lowercase letters, digits and '-', at most 31"
if ! [[ "${NODES}" =~ ^[0-9]+$ ]] || [ "${NODES}" -lt 1 ] || [ "${NODES}" -gt 50 ]; then
    die "--nodes '${NODES}': a number from 1 to 50"
fi
[[ "${PORT_BASE}" =~ ^[0-9]+$ ]] || die "--port-base '${PORT_BASE}': a number"
[[ "${DOMAIN}" =~ ^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$ ]] || die "--domain '${DOMAIN}': a lowercase DNS name"

PREFIX="fleet-${NAME}"
NET="${PREFIX}"
LB="${PREFIX}-lb"
STATE="${FLEETCERT_CACHE}/fleet/${NAME}"
PEBBLE_NAME="${PREFIX}"
IMAGE_LB="localhost/fleetcert-lb:bookworm"
LABEL="org.fleetcert.fleet=${NAME}"
# `make clean` removes containers and networks carrying this label.
SESSION_LABEL="org.fleetcert.test-session=fleet-${NAME}"

# Every node and the load balancer get a fixed address, so a restarted node
# comes back where the load balancer expects it: gateway .1, balancer .2,
# web node i at .(10+i).
net_prefix() {
    podman network inspect "${NET}" --format '{{range .Subnets}}{{.Subnet}}{{end}}' \
        | sed -E 's#^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$#\1#'
}

nodes() {
    podman ps -a --filter "label=${LABEL}" --filter "label=org.fleetcert.role=web" --format '{{.Names}}' | sort -V
}

node_ip() {
    printf '%s.%d\n' "$(net_prefix)" $((10 + ${1##*-web}))
}

ensure_images() {
    local img
    for img in "${FLEETCERT_IMAGE_HOST}" "${FLEETCERT_IMAGE_WEB}"; do
        podman image exists "${img}" || die "image ${img} is missing: run 'make setup' first"
    done
    [ -d "${FLEETCERT_IMAGE_STORE}" ] || die "${FLEETCERT_IMAGE_STORE} is missing: run 'make setup' first"
    # The load balancer needs nginx's stream module, which nginx-light lacks.
    local want have
    want="$(printf 'v1 %s\n' "$(podman image inspect --format '{{.Id}}' "${FLEETCERT_IMAGE_WEB}")" | sha256sum | cut -c1-16)"
    have="$(podman image inspect --format '{{index .Labels "org.fleetcert.inputs"}}' "${IMAGE_LB}" 2>/dev/null || true)"
    if [ "${want}" != "${have}" ]; then
        log "building ${IMAGE_LB}"
        podman build --pull=never --quiet --layers=false --label "org.fleetcert.inputs=${want}" \
            -t "${IMAGE_LB}" -f - <<EOF >/dev/null
FROM ${FLEETCERT_IMAGE_WEB}
RUN apt-get update -q && apt-get install -y -q libnginx-mod-stream \
    && apt-get clean && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/apt/lists/partial
EOF
    fi
}

ensure_network() {
    podman network exists "${NET}" || podman network create --label "${LABEL}" --label "${SESSION_LABEL}" "${NET}" >/dev/null
    [ -n "$(net_prefix)" ] || die "network ${NET} does not have a /24 IPv4 subnet"
}

start_node() {
    local name="$1"
    if podman container exists "${name}"; then
        [ "$(podman inspect --format '{{.State.Running}}' "${name}")" = true ] || podman start "${name}" >/dev/null
        return 0
    fi
    log "starting web node ${name}"
    podman volume exists "${name}-containers" \
        || podman volume create --label "${LABEL}" --label "${SESSION_LABEL}" "${name}-containers" >/dev/null
    # The nested podman (vfs, like the read-only image store it reads the base
    # images from) keeps its storage on a volume, outside the node's own layer.
    podman run -d --name "${name}" --hostname "${name}" --privileged \
        --label "${LABEL}" --label "${SESSION_LABEL}" --label org.fleetcert.role=web \
        --network "${NET}" --ip "$(node_ip "${name}")" \
        -v "${name}-containers:/var/lib/containers" \
        -v "${FLEETCERT_IMAGE_STORE}:/var/lib/fleetcert/image-store:ro" \
        "${FLEETCERT_IMAGE_HOST}" >/dev/null
}

lb_config() {
    local n
    printf 'user www-data;\nworker_processes 1;\npid /run/nginx.pid;\n'
    printf 'include /etc/nginx/modules-enabled/*.conf;\nerror_log /var/log/nginx/error.log;\n'
    printf 'events { worker_connections 1024; }\n'
    printf '# TCP round robin: TLS ends on the web nodes, like a cloud TCP load balancer.\n'
    printf 'stream {\n'
    for port in 80 443; do
        printf '    upstream web_%s {\n' "${port}"
        for n in $(nodes); do
            printf '        server %s:%s max_fails=1 fail_timeout=5s;\n' "$(node_ip "${n}")" "${port}"
        done
        printf '    }\n'
        printf '    server { listen %s; proxy_pass web_%s; proxy_connect_timeout 2s; }\n' "${port}" "${port}"
    done
    printf '}\n'
}

sync_lb() {
    local conf="${STATE}/lb-nginx.conf"
    mkdir -p "${STATE}"
    lb_config >"${conf}.tmp"
    if ! podman container exists "${LB}"; then
        mv "${conf}.tmp" "${conf}"
        log "starting load balancer ${LB}"
        podman run -d --name "${LB}" --hostname "${LB}" --label "${LABEL}" --label "${SESSION_LABEL}" --label org.fleetcert.role=lb \
            --network "${NET}" --ip "$(net_prefix).2" \
            -v "${conf}:/etc/nginx/nginx.conf:ro" \
            "${IMAGE_LB}" nginx -g 'daemon off;' >/dev/null
        return 0
    fi
    [ "$(podman inspect --format '{{.State.Running}}' "${LB}")" = true ] || podman start "${LB}" >/dev/null
    if ! cmp -s "${conf}.tmp" "${conf}"; then
        # Rewrite in place: the bind mount follows the inode.
        cat "${conf}.tmp" >"${conf}"
        podman exec "${LB}" nginx -t -q
        podman exec "${LB}" nginx -s reload 2>/dev/null
    fi
    rm -f "${conf}.tmp"
}

pebble_env() {
    "${FLEETCERT_ROOT}/scripts/pebble.sh" env --name "${PEBBLE_NAME}"
}

start_ca() {
    # No authorization reuse: every order is validated through the load balancer.
    "${FLEETCERT_ROOT}/scripts/pebble.sh" start --name "${PEBBLE_NAME}" --port-base "${PORT_BASE}" \
        --env PEBBLE_AUTHZREUSE=0
    # shellcheck disable=SC1090
    . <(pebble_env)
    # Pebble validates HTTP-01 at the address its DNS (challtestsrv) gives for
    # the name: the load balancer, like a public DNS record would.
    curl -fsS -o /dev/null -X POST "${CHALLTESTSRV_MGMT}/add-a" \
        -d "{\"host\":\"${DOMAIN}\",\"addresses\":[\"$(net_prefix).2\"]}"
}

write_state() {
    mkdir -p "${STATE}"
    if [ ! -s "${STATE}/account.key" ]; then
        (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${STATE}/account.key.tmp" 2>/dev/null)
        mv "${STATE}/account.key.tmp" "${STATE}/account.key"
    fi
    # shellcheck disable=SC1090
    . <(pebble_env)
    cat >"${STATE}/env.tmp" <<EOF
export FLEET_NAME='${NAME}'
export FLEET_DOMAIN='${DOMAIN}'
export FLEET_LB_IP='$(net_prefix).2'
# Web node i is at \${FLEET_NET_PREFIX}.(10+i).
export FLEET_NET_PREFIX='$(net_prefix)'
export FLEET_ACCOUNT_KEY='${STATE}/account.key'
export FLEET_DIRECTORY='${PEBBLE_DIRECTORY}'
export FLEET_ACME_CA='${PEBBLE_CA}'
export FLEET_PEBBLE_MGMT='${PEBBLE_MGMT}'
export FLEET_PEBBLE_LOG='${PEBBLE_LOG}'
EOF
    mv "${STATE}/env.tmp" "${STATE}/env"
}

wait_for_nodes() {
    local n i
    for n in $(nodes); do
        for i in $(seq 50); do
            podman exec "${n}" true 2>/dev/null && break
            sleep 0.1
        done
    done
}

do_up() {
    local i
    ensure_images
    ensure_network
    for i in $(seq 1 "${NODES}"); do
        start_node "${PREFIX}-web${i}"
    done
    sync_lb
    start_ca
    write_state
    wait_for_nodes
    log "up: $(nodes | wc -l) web nodes behind ${LB} ($(net_prefix).2); ${DOMAIN} -> load balancer in Pebble's DNS; ACME directory ${PEBBLE_DIRECTORY}"
}

do_add_node() {
    local last
    ensure_network
    last="$(nodes | tail -n1)"
    start_node "${PREFIX}-web$(( ${last##*-web} + 1 ))"
    sync_lb
    wait_for_nodes
}

do_down() {
    local ids left
    ids="$(podman ps -aq --filter "label=${LABEL}")"
    if [ -n "${ids}" ]; then
        # shellcheck disable=SC2086  # one id per word
        podman rm -f -t 2 ${ids} >/dev/null
        log "removed the containers of fleet ${NAME}"
    fi
    # Labelled volumes, and unlabelled ones from before volumes carried labels.
    for v in $(podman volume ls -q --filter "label=${LABEL}") \
             $(podman volume ls -q | grep -E "^${PREFIX}-web[0-9]+-containers$" || true); do
        podman volume rm -f "${v}" >/dev/null 2>&1 || true
    done
    if podman network exists "${NET}"; then
        podman network rm -f "${NET}" >/dev/null
        log "removed network ${NET}"
    fi
    "${FLEETCERT_ROOT}/scripts/pebble.sh" stop --name "${PEBBLE_NAME}" --port-base "${PORT_BASE}"
    rm -rf "${STATE}" "${FLEETCERT_CACHE}/pebble/${PEBBLE_NAME}"
    left="$(podman ps -aq --filter "label=${LABEL}"; podman volume ls -q --filter "label=${LABEL}"
            if podman network exists "${NET}"; then echo "${NET}"; fi)"
    [ -z "${left}" ] || die "could not remove everything of fleet ${NAME}: ${left}"
}

# The root Pebble issues from changes on every start: fetch the current one.
pebble_root() {
    # shellcheck disable=SC1090
    . <(pebble_env)
    curl -fsS --cacert "${PEBBLE_CA}" "${PEBBLE_MGMT}/roots/0" >"${STATE}/issuing-root.pem"
    printf '%s\n' "${STATE}/issuing-root.pem"
}

served_serial() {
    # $1 address; prints the serial (lowercase hex, no leading zeros) or "-"
    local s
    s="$(openssl s_client -connect "$1:443" -servername "${DOMAIN}" </dev/null 2>/dev/null \
        | openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//' | tr 'A-F' 'a-f' | sed 's/^0*//')"
    printf '%s\n' "${s:--}"
}

do_check() {
    local root lb_ip n rc=0 status body
    root="$(pebble_root)"
    lb_ip="$(net_prefix).2"
    printf 'https://%s/ through the load balancer (%s), verified against Pebble'"'"'s root:\n' "${DOMAIN}" "${lb_ip}"
    for _ in 1 2 3; do
        # Any HTTP answer below 400 from the app, over TLS verified against the root.
        if body="$(curl -sS --max-time 10 --cacert "${root}" --resolve "${DOMAIN}:443:${lb_ip}" \
            -o /dev/null -w '%{http_code}' "https://${DOMAIN}/" 2>&1)" && [ "${body}" -ge 200 ] && [ "${body}" -lt 400 ]; then
            status="ok"
        else
            status="FAILED"; rc=1
        fi
        printf '  HTTP %s, TLS verified (%s)\n' "${body}" "${status}"
    done
    printf 'Certificate served by each node (openssl s_client):\n'
    for n in $(nodes); do
        printf '  %-24s serial %s\n' "${n}" "$(served_serial "$(node_ip "${n}")")"
    done
    printf 'ACME orders received by the CA so far: %s\n' "$(count_orders)"
    return "${rc}"
}

count_orders() {
    # shellcheck disable=SC1090
    . <(pebble_env)
    # Orders the CA created; a rejected POST /order-plz (badNonce, retried) is none.
    grep -c '^Pebble .* Added order ".*" to the db$' "${PEBBLE_LOG}" || true
}

do_status() {
    podman ps -a --filter "label=${LABEL}" --format '{{.Names}}\t{{.Status}}'
    "${FLEETCERT_ROOT}/scripts/pebble.sh" status --name "${PEBBLE_NAME}" --port-base "${PORT_BASE}" || true
}

do_demo() {
    local before after
    do_up
    "${FLEETCERT_ROOT}/scripts/make-bundle.sh" >/dev/null
    before="$(count_orders)"
    log "running playbooks/site.yml on demo/inventory.yml"
    (cd "${FLEETCERT_ROOT}" && ansible-playbook -i demo/inventory.yml playbooks/site.yml)
    after="$(count_orders)"
    do_check
    printf 'ACME orders placed by this run: %s (a second "make demo" places none)\n' "$((after - before))"
}

# One run per fleet at a time. flock -o keeps the lock out of the children:
# conmon and aardvark-dns outlive this script and would hold it forever.
if [ -z "${FLEET_SH_LOCKED:-}" ]; then
    mkdir -p "${FLEETCERT_CACHE}/fleet"
    FLEET_SH_LOCKED=1 exec flock -o "${FLEETCERT_CACHE}/fleet/.${NAME}.run-lock" "${BASH_SOURCE[0]}" "${ARGS[@]}"
fi
case "${ACTION}" in
    up) do_up ;;
    add-node) do_add_node ;;
    down) do_down ;;
    status) do_status ;;
    check) do_check ;;
    orders) count_orders ;;
    demo)
        [ "${NAME}" = demo ] || die "demo uses --name demo (demo/inventory.yml names its nodes fleet-demo-web*)"
        do_demo
        ;;
esac
