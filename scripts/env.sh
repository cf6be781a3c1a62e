# shellcheck shell=bash
# Sourced by every script, make target and test of the test bed (never run it).
# Keeping all environment decisions here means a test run and a developer shell
# see the same tools, collections and images.

FLEETCERT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FLEETCERT_ROOT
export FLEETCERT_CACHE="${FLEETCERT_ROOT}/.cache"
export FLEETCERT_VENV="${FLEETCERT_CACHE}/venv"
export FLEETCERT_PYTHON="${FLEETCERT_VENV}/bin/python"
# Machine-wide caches that survive fresh clones (speed only).
export FLEETCERT_MACHINE_CACHE="${FLEETCERT_MACHINE_CACHE:-/var/cache/fleetcert}"

case ":${PATH}:" in
    *":${FLEETCERT_VENV}/bin:"*) ;;
    *) PATH="${FLEETCERT_VENV}/bin:${PATH}" ;;
esac
export PATH
unset PYTHONHOME

# The pinned `ansible` package bundles containers.podman, community.crypto, ...
# in the venv's site-packages; the checkout itself is found through the symlink
# in .cache/collections. Glob instead of asking python: this file must stay fast.
fleetcert_site=""
for fleetcert_d in "${FLEETCERT_VENV}"/lib/python3*/site-packages; do
    [ -d "${fleetcert_d}" ] && fleetcert_site="${fleetcert_d}"
done
export ANSIBLE_COLLECTIONS_PATH="${FLEETCERT_CACHE}/collections${fleetcert_site:+:${fleetcert_site}}"
unset fleetcert_site fleetcert_d

# Output must be plain text for logs and for tests that parse it.
export ANSIBLE_FORCE_COLOR=0
export ANSIBLE_NOCOLOR=1
export ANSIBLE_HOST_KEY_CHECKING=False
export ANSIBLE_RETRY_FILES_ENABLED=False
export ANSIBLE_DEPRECATION_WARNINGS="${ANSIBLE_DEPRECATION_WARNINGS:-True}"
export ANSIBLE_LOCAL_TEMP="${FLEETCERT_CACHE}/ansible-tmp"
# Containers only have /usr/bin/python3: let discovery find it silently there.
# localhost must use the venv python (acme, josepy, cryptography live there):
# the implicit localhost already does; inventories that name localhost set
# ansible_python_interpreter to "${FLEETCERT_PYTHON}" (the test harness does).
export ANSIBLE_PYTHON_INTERPRETER="${ANSIBLE_PYTHON_INTERPRETER:-auto_silent}"

# Images built by scripts/build-images.sh (see docs/DEVELOPING.md "Images").
export FLEETCERT_IMAGE_BASE="localhost/fleetcert-debian:bookworm"
export FLEETCERT_IMAGE_NODE="localhost/fleetcert-node:bookworm"
export FLEETCERT_IMAGE_HOST="localhost/fleetcert-host:bookworm"
# Test-only: the base image with nginx-light preinstalled.
export FLEETCERT_IMAGE_WEB="localhost/fleetcert-web:bookworm"
# Read-only vfs image store holding the base and node images, mounted into
# fleet-host containers at /var/lib/fleetcert/image-store (see build-images.sh).
export FLEETCERT_IMAGE_STORE="${FLEETCERT_MACHINE_CACHE}/image-store"

# The Debian mirror the host uses (apt inside containers and Pebble from sid
# use the same one). Prints the URI of the first bookworm main source.
fleetcert_debian_mirror() {
    local f uri
    f=/etc/apt/sources.list.d/debian.sources
    if [ -r "${f}" ]; then
        uri="$(awk '
            /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )bookworm( |$)/) { print u; exit } u = ""; s = ""; next }
            /^URIs:/ { u = $2 }
            /^Suites:/ { s = $0; sub(/^Suites:[[:space:]]*/, "", s) }
            END { if (u != "" && s ~ /(^| )bookworm( |$)/) print u }
        ' "${f}" | head -n1)"
    fi
    if [ -z "${uri:-}" ] && [ -r /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit } }' /etc/apt/sources.list)"
    fi
    if [ -z "${uri:-}" ]; then
        echo "fleetcert: cannot find a bookworm source in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2
        return 1
    fi
    printf '%s\n' "${uri%/}"
}
