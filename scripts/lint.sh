#!/usr/bin/env bash
# `make lint`: ansible-lint, production profile, on the whole collection (its
# yaml rule runs yamllint). Settings in .ansible-lint.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "${FLEETCERT_ROOT}"
exec ansible-lint --profile production --nocolor "$@"
