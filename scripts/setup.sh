#!/usr/bin/env bash
# Prepares this machine for `make test` (what `make setup` runs). Idempotent:
# every step first checks whether its result is already there, so a second run
# takes seconds. Needs root on Debian 12 (bookworm).
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "${FLEETCERT_ROOT}"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (podman is used rootful)"
grep -q '^VERSION_CODENAME=bookworm' /etc/os-release || die "needs Debian 12 (bookworm); /etc/os-release says otherwise"

export DEBIAN_FRONTEND=noninteractive

# Several checkouts/engineers may run set-up at once; apt, dpkg and pip into one
# venv do not mix.
mkdir -p "${FLEETCERT_MACHINE_CACHE}"
exec 7>"${FLEETCERT_MACHINE_CACHE}/setup.lock"
flock 7

APT_PACKAGES=(
    podman runc debootstrap uidmap iproute2 openssl curl make jq wrk lego
    # git: CI clones; python3-venv: the venv; bind9-dnsutils: dig for DNS checks;
    # shellcheck: ansible-test sanity skips its shellcheck test without it
    git python3-venv bind9-dnsutils ca-certificates shellcheck
    # podman 4.3 here uses CNI networks: without this plugin (a recommendation
    # --no-install-recommends skips) containers cannot resolve each other by
    # name or --network-alias
    golang-github-containernetworking-plugin-dnsname
)
PEBBLE_MIN_VERSION=2.10

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${db:Status-Status}\n' "${p}" 2>/dev/null | grep -qx installed || printf '%s\n' "${p}"
    done
}

step_apt() {
    local missing
    mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing ${missing[*]}"
    # Existing package lists are usually good enough; refresh only when they
    # are absent or too stale for the install to succeed.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null \
        || ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

step_containers_conf() {
    local want
    want="$(cat "${FLEETCERT_ROOT}/scripts/containers.conf")"
    if [ -f /etc/containers/containers.conf ] && [ "$(cat /etc/containers/containers.conf)" = "${want}" ]; then
        return 0
    fi
    # A conf with the same settings but other comments is fine as it is.
    if [ -f /etc/containers/containers.conf ] \
        && diff -q <(grep -v '^#' /etc/containers/containers.conf) <(printf '%s\n' "${want}" | grep -v '^#') >/dev/null; then
        return 0
    fi
    log "writing /etc/containers/containers.conf"
    mkdir -p /etc/containers
    [ -f /etc/containers/containers.conf ] && cp -p /etc/containers/containers.conf /etc/containers/containers.conf.fleetcert-bak
    printf '%s\n' "${want}" >/etc/containers/containers.conf.tmp
    mv /etc/containers/containers.conf.tmp /etc/containers/containers.conf
}

# `pebble -version` prints "Pebble version: dev" for Debian's build, so the
# version comes from dpkg.
pebble_ok() {
    local v
    command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || return 1
    v="$(dpkg-query -W -f='${Version}' pebble 2>/dev/null)" || return 1
    dpkg --compare-versions "${v}" ge "${PEBBLE_MIN_VERSION}"
}

step_pebble() {
    pebble_ok && return 0
    # bookworm ships 2.4 (no ARI, no profiles); sid's .deb only needs libc6 >= 2.34.
    # A private APT state dir keeps sid out of the system's sources.
    local mirror dir
    mirror="$(fleetcert_debian_mirror)"
    dir="${FLEETCERT_MACHINE_CACHE}/apt-sid"
    log "installing pebble >= ${PEBBLE_MIN_VERSION} from Debian sid (${mirror})"
    mkdir -p "${dir}/lists/partial" "${dir}/archives/partial" "${dir}/debs"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\n' "${mirror}" >"${dir}/sources.list"
    local opts=(
        -o "Dir::Etc::SourceList=${dir}/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=${dir}/lists"
        -o "Dir::Cache::Archives=${dir}/archives"
        -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
        -o "APT::Sandbox::User=root"
    )
    apt-get "${opts[@]}" update -q
    rm -f "${dir}"/debs/pebble_*.deb
    (cd "${dir}/debs" && apt-get "${opts[@]}" download pebble)
    dpkg -i "${dir}"/debs/pebble_*.deb
    pebble_ok || die "pebble from sid installed but is still older than ${PEBBLE_MIN_VERSION}"
}

requirements_hash() {
    cat requirements-dev.txt requirements.txt | sha256sum | cut -d' ' -f1
}

step_venv() {
    local stamp="${FLEETCERT_VENV}/.fleetcert-requirements.sha256" want
    want="$(requirements_hash)"
    if [ -x "${FLEETCERT_PYTHON}" ] && [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ]; then
        return 0
    fi
    # Debian's python3 (3.11): present on every bookworm machine, unlike pyenv builds.
    if [ ! -x "${FLEETCERT_PYTHON}" ]; then
        log "creating ${FLEETCERT_VENV}"
        /usr/bin/python3 -m venv "${FLEETCERT_VENV}"
    fi
    log "installing requirements-dev.txt into the venv"
    rm -f "${stamp}"
    "${FLEETCERT_PYTHON}" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    printf '%s\n' "${want}" >"${stamp}"
}

# ansible-test sanity --venv bootstraps pip in each venv with a get-pip.py it
# downloads from a host the test bed cannot reach; it uses a cached copy when
# one exists, so put ours there (for the pip version this ansible-test wants).
step_ansible_test_get_pip() {
    local reqs version cache
    reqs="$(echo "${FLEETCERT_VENV}"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)"
    version="$(sed -n "s/^ *pip='\([0-9.]*\)',\{0,1\}$/\1/p" "${reqs}" | head -n 1)"
    [ -n "${version}" ] || die "cannot find the pip version ansible-test bootstraps in ${reqs}"
    cache="${HOME}/.ansible/test/cache/get_pip_${version//./_}.py"
    if ! cmp -s "${FLEETCERT_ROOT}/scripts/ansible-test-get-pip.py" "${cache}"; then
        mkdir -p "$(dirname "${cache}")"
        cp "${FLEETCERT_ROOT}/scripts/ansible-test-get-pip.py" "${cache}"
    fi
}

step_collection_link() {
    local parent="${FLEETCERT_CACHE}/collections/ansible_collections/fleetcert"
    mkdir -p "${parent}"
    if [ "$(readlink "${parent}/meteor" 2>/dev/null)" != "${FLEETCERT_ROOT}" ]; then
        ln -sfn "${FLEETCERT_ROOT}" "${parent}/meteor"
    fi
}

start=${SECONDS}
step_apt
step_containers_conf
step_pebble
step_venv
step_ansible_test_get_pip
step_collection_link
if [ "${FLEETCERT_SKIP_IMAGES:-0}" != 1 ]; then
    "${FLEETCERT_ROOT}/scripts/build-images.sh"
fi
log "done in $((SECONDS - start)) s"
