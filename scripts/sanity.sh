#!/usr/bin/env bash
# `make sanity`: ansible-test sanity on a COPY of the collection. ansible-test
# needs the checkout under .../ansible_collections/fleetcert/meteor, and a copy
# (not the .cache symlink) keeps .cache, .git and local junk out of its file list.
# `--venv --requirements` makes ansible-test build one venv per sanity test
# under ~/.ansible/test/venv (pip from PyPI once, reused on later runs).
#
# Usage: sanity.sh [ansible-test sanity args...]
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "${FLEETCERT_ROOT}"

PYTHON_VERSION=3.11
# Outside the checkout: inside a git work tree ansible-test would list files
# with git, and .cache is git-ignored.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fleetcert-sanity.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
DEST="${WORK}/ansible_collections/fleetcert/meteor"

# The files git would ship (tracked + untracked not ignored), so a stale
# .pyc or an ignored result file never reaches the sanity run.
mkdir -p "${DEST}"
# shellcheck disable=SC2016  # $f expands in the inner sh
git ls-files -z --cached --others --exclude-standard \
    | (cd "${FLEETCERT_ROOT}" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
    | tar --null -T - -c -f - \
    | tar -C "${DEST}" -x -f -

cd "${DEST}"
# Without .git, ansible-test lists every file in the directory (all of them ours).
ansible-test sanity --venv --requirements --python "${PYTHON_VERSION}" --color no "$@"
