#!/usr/bin/env bash
# Packs the stand-in Meteor bundle (tests/fixtures/meteor-bundle) into a
# .tar.gz shaped like `meteor build` output (one top-level bundle/ folder).
# The archive is byte-for-byte reproducible: same inputs, same sha256, so the
# meteor role's content-hash image tag stays put between runs.
#
# Usage: make-bundle.sh [--output PATH] [--version LABEL] [--without-force-ssl]
#   --output PATH          where to write (default .cache/meteor-bundle.tar.gz)
#   --version LABEL        reported by the app as bundle_version (default "dev");
#                          a different label gives a different archive
#   --without-force-ssl    leave out packages/force-ssl.js, like an app that
#                          never added force-ssl (the meteor role refuses it)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

output="${FLEETCERT_CACHE}/meteor-bundle.tar.gz"
version=""
force_ssl=1
while [ $# -gt 0 ]; do
    case "$1" in
        --output) output="${2:?--output needs a path}"; shift 2 ;;
        --version) version="${2:?--version needs a label}"; shift 2 ;;
        --without-force-ssl) force_ssl=0; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "make-bundle.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "${version}" ] && ! [[ "${version}" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "make-bundle.sh: --version must match [A-Za-z0-9._-]+, got: ${version}" >&2
    exit 2
fi

src="${FLEETCERT_ROOT}/tests/fixtures/meteor-bundle/bundle"
work="$(mktemp -d "${TMPDIR:-/tmp}/fleetcert-bundle.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
cp -a "${src}" "${work}/bundle"

if [ -n "${version}" ]; then
    printf '%s\n' "${version}" >"${work}/bundle/programs/server/fleetcert-version.txt"
fi
if [ "${force_ssl}" = 0 ]; then
    rm "${work}/bundle/programs/server/packages/force-ssl.js"
    # program.json must stop loading it too, as in a bundle built without it.
    python3 - "${work}/bundle/programs/server/program.json" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    program = json.load(f)
program["load"] = [e for e in program["load"] if e["path"] != "packages/force-ssl.js"]
with open(sys.argv[1], "w") as f:
    f.write(json.dumps(program, indent=2) + "\n")
PY
fi

mkdir -p "$(dirname "${output}")"
tmp_out="$(mktemp "$(dirname "${output}")/.meteor-bundle.XXXXXX")"
# Fixed order, owners, modes and times make the archive reproducible.
chmod -R u=rwX,go=rX "${work}/bundle"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    --format=gnu -C "${work}" -c bundle | gzip -n -9 >"${tmp_out}"
chmod 0644 "${tmp_out}"
mv -f "${tmp_out}" "${output}"
printf '%s\n' "${output}"
