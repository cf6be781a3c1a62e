#!/usr/bin/env bash
# Builds the local images of docs/DEVELOPING.md "Images" without any registry:
# a debootstrap rootfs imported as the base, the others `podman build` FROM it.
# Each image carries a label with the hash of its inputs (recipe files, mirror,
# parent image id); an image is rebuilt only when that hash changes.
#
# Nested podman: fleet-host containers (fleetcert-host, --privileged) see the
# base and node images through a read-only additional image store (overlay, on
# the host's disk), so nothing is copied or loaded per container; measured:
# first nested `podman run` 1 s, vs 6-12 s for vfs or podman load:
#   podman run -d --privileged \
#     -v "${FLEETCERT_IMAGE_STORE}:/var/lib/fleetcert/image-store:ro" \
#     "${FLEETCERT_IMAGE_HOST}"
# then inside: podman run --rm localhost/fleetcert-node:bookworm node -v
# The image declares VOLUME /var/lib/containers (anonymous volume: remove the
# container with `podman rm -v` to drop it).
#
# Usage: build-images.sh [--force]
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

IMAGES_DIR="${FLEETCERT_ROOT}/scripts/images"
LABEL=org.fleetcert.inputs
# Bump when the base recipe below changes in a way its files do not show.
BASE_RECIPE=1
FORCE=0
[ "${1:-}" = --force ] && FORCE=1

log() { printf 'build-images: %s\n' "$*" >&2; }

mkdir -p "${FLEETCERT_MACHINE_CACHE}"
# Several engineers/CI jobs may run set-up at once: one builder at a time.
exec 8>"${FLEETCERT_MACHINE_CACHE}/build-images.lock"
flock 8

image_label() {
    podman image inspect --format "{{index .Labels \"${LABEL}\"}}" "$1" 2>/dev/null || true
}

image_id() {
    podman image inspect --format '{{.Id}}' "$1"
}

# Hash of every file under the given directories plus extra strings.
inputs_hash() {
    local dir
    {
        for dir in "$@"; do
            if [ -d "${dir}" ]; then
                (cd "${dir}" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
            else
                printf '%s\n' "${dir}"
            fi
        done
    } | sha256sum | cut -d' ' -f1
}

up_to_date() {
    [ "${FORCE}" = 0 ] && [ "$(image_label "$1")" = "$2" ]
}

build_base() {
    local mirror hash work include
    mirror="$(fleetcert_debian_mirror)"
    hash="$(inputs_hash "${IMAGES_DIR}/debian" "recipe=${BASE_RECIPE}" "mirror=${mirror}")"
    if up_to_date "${FLEETCERT_IMAGE_BASE}" "${hash}"; then
        return 0
    fi
    log "building ${FLEETCERT_IMAGE_BASE} (debootstrap from ${mirror})"
    mkdir -p "${FLEETCERT_MACHINE_CACHE}/debootstrap"
    work="$(mktemp -d /var/tmp/fleetcert-rootfs.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the trap must remove this dir
    trap "rm -rf '${work}'" EXIT
    include="$(grep -v -e '^#' -e '^[[:space:]]*$' "${IMAGES_DIR}/debian/packages" | paste -sd, -)"
    debootstrap --variant=minbase --include="${include}" \
        --cache-dir="${FLEETCERT_MACHINE_CACHE}/debootstrap" \
        bookworm "${work}/rootfs" "${mirror}" >"${work}/debootstrap.log" 2>&1 \
        || { tail -n 30 "${work}/debootstrap.log" >&2; exit 1; }
    cp "${IMAGES_DIR}/debian/finalize.sh" "${work}/rootfs/tmp/finalize.sh"
    chroot "${work}/rootfs" /bin/sh /tmp/finalize.sh "${mirror}"
    tar --numeric-owner -C "${work}/rootfs" -c . \
        | podman import --quiet \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'ENTRYPOINT ["/usr/bin/tini", "--"]' \
            --change 'CMD ["sleep", "infinity"]' \
            --change "LABEL ${LABEL}=${hash}" \
            - "${FLEETCERT_IMAGE_BASE}" >/dev/null
    rm -rf "${work}"
    trap - EXIT
}

# build_derived NAME DIR PARENT: podman build of DIR/Containerfile FROM PARENT.
build_derived() {
    local name="$1" dir="$2" parent="$3" hash ctx
    ctx="$(mktemp -d /var/tmp/fleetcert-ctx.XXXXXX)"
    cp -a "${dir}/." "${ctx}/"
    if [ "$(basename "${dir}")" = host ]; then
        # Nested podman uses the host's settings plus a default network outside
        # 10.88.0.0/16, the outer podman's default.
        {
            cat "${FLEETCERT_ROOT}/scripts/containers.conf"
            printf '[network]\ndefault_subnet = "10.250.0.0/24"\n'
        } >"${ctx}/containers.conf"
    fi
    hash="$(inputs_hash "${ctx}" "parent=$(image_id "${parent}")")"
    if up_to_date "${name}" "${hash}"; then
        rm -rf "${ctx}"
        return 0
    fi
    log "building ${name}"
    podman build --pull=never --quiet --layers=false --label "${LABEL}=${hash}" \
        -t "${name}" -f "${ctx}/Containerfile" "${ctx}" >/dev/null
    rm -rf "${ctx}"
}

# The read-only image store for nested podman (overlay, like the nested storage).
update_store() {
    local store="${FLEETCERT_IMAGE_STORE}" img want have
    local sp=(--root "${store}" --runroot /run/fleetcert-image-store --storage-driver overlay)
    for img in "${FLEETCERT_IMAGE_BASE}" "${FLEETCERT_IMAGE_NODE}"; do
        want="$(image_id "${img}")"
        have="$(podman "${sp[@]}" image inspect --format '{{.Id}}' "${img}" 2>/dev/null || true)"
        [ "${want}" = "${have}" ] && continue
        log "copying ${img} into ${store}"
        podman save --format oci-archive "${img}" | podman "${sp[@]}" load -q >/dev/null
    done
    podman "${sp[@]}" image prune -f >/dev/null
}

build_base
build_derived "${FLEETCERT_IMAGE_NODE}" "${IMAGES_DIR}/node" "${FLEETCERT_IMAGE_BASE}"
build_derived "${FLEETCERT_IMAGE_HOST}" "${IMAGES_DIR}/host" "${FLEETCERT_IMAGE_BASE}"
build_derived "${FLEETCERT_IMAGE_WEB}" "${IMAGES_DIR}/web" "${FLEETCERT_IMAGE_BASE}"
update_store
# Superseded builds leave dangling images behind.
podman image prune -f >/dev/null
