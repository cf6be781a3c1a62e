#!/usr/bin/env bash
# Runs one test suite for `make test` and records how many checks passed and
# failed, so the last line of `make test` can sum every suite.
#
#   run-suite.sh reset                        forget earlier results
#   run-suite.sh run NAME KIND -- CMD [ARG...] run a suite; KIND says how to count:
#       pytest       tests from a JUnit XML report (exit code 5, no tests: 0/0, ok)
#       ansible-test sanity tests from ansible-test's output
#       molecule     one check per molecule/*/molecule.yml scenario (CMD unused)
#       command      the command is one check
#   run-suite.sh summary NAME...              per-suite lines, then "N passed, N failed"
#
# Results: .cache/results/NAME.{log,counts,xml}.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "${FLEETCERT_ROOT}"

RESULTS="${FLEETCERT_CACHE}/results"
mkdir -p "${RESULTS}"

record() { # NAME PASSED FAILED
    printf '%s %s\n' "$2" "$3" >"${RESULTS}/$1.counts"
}

run_logged() { # NAME CMD... ; output to the terminal and the log, returns CMD's status
    local name="$1"
    shift
    set +e
    "$@" 2>&1 | tee -a "${RESULTS}/${name}.log"
    local rc="${PIPESTATUS[0]}"
    set -e
    return "${rc}"
}

junit_counts() { # XML -> "passed failed"
    /usr/bin/python3 - "$1" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == 'testsuite' else root.iter('testsuite')
tests = failed = skipped = 0
for suite in suites:
    tests += int(suite.get('tests', 0))
    failed += int(suite.get('failures', 0)) + int(suite.get('errors', 0))
    skipped += int(suite.get('skipped', 0))
print(max(tests - failed - skipped, 0), failed)
PY
}

run_pytest() {
    local name="$1" rc=0 counts
    shift
    rm -f "${RESULTS}/${name}.xml"
    run_logged "${name}" "$@" --junitxml="${RESULTS}/${name}.xml" -o junit_family=xunit2 || rc=$?
    if [ "${rc}" = 5 ]; then
        echo "run-suite: ${name}: no tests collected" >&2
        record "${name}" 0 0
        return 0
    fi
    if [ -s "${RESULTS}/${name}.xml" ]; then
        counts="$(junit_counts "${RESULTS}/${name}.xml")"
        # A crash after the report (or an interrupted session) must still fail.
        if [ "${rc}" != 0 ] && [ "${counts#* }" = 0 ]; then
            counts="${counts% *} 1"
        fi
        record "${name}" "${counts% *}" "${counts#* }"
    else
        record "${name}" 0 1
    fi
    return "${rc}"
}

run_ansible_test() {
    local name="$1" rc=0 total bad
    shift
    run_logged "${name}" "$@" || rc=$?
    total="$(grep -c '^Running sanity test ' "${RESULTS}/${name}.log" || true)"
    bad="$(sed -n 's/^FATAL: The \([0-9]*\) sanity test(s) listed below (out of \([0-9]*\)) failed.*/\1 \2/p' "${RESULTS}/${name}.log" | tail -n1)"
    if [ -n "${bad}" ]; then
        record "${name}" "$((${bad#* } - ${bad% *}))" "${bad% *}"
    elif [ "${rc}" = 0 ]; then
        record "${name}" "${total}" 0
    else
        record "${name}" "${total}" 1
    fi
    return "${rc}"
}

run_molecule() {
    local name="$1" rc=0 passed=0 failed=0 file scenario
    for file in molecule/*/molecule.yml; do
        [ -e "${file}" ] || continue
        scenario="$(basename "$(dirname "${file}")")"
        echo "run-suite: molecule test -s ${scenario}" | tee -a "${RESULTS}/${name}.log"
        if run_logged "${name}" molecule test -s "${scenario}"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            rc=1
        fi
    done
    [ "$((passed + failed))" -gt 0 ] || echo "run-suite: ${name}: no molecule scenarios" >&2
    record "${name}" "${passed}" "${failed}"
    return "${rc}"
}

run_command() {
    local name="$1" rc=0
    shift
    run_logged "${name}" "$@" || rc=$?
    if [ "${rc}" = 0 ]; then record "${name}" 1 0; else record "${name}" 0 1; fi
    return "${rc}"
}

case "${1:-}" in
    reset)
        rm -f "${RESULTS}"/*.counts "${RESULTS}"/*.log "${RESULTS}"/*.xml
        ;;
    run)
        if [ $# -lt 4 ] || [ "$4" != -- ]; then
            echo "usage: run-suite.sh run NAME KIND -- CMD..." >&2
            exit 2
        fi
        name="$2" kind="$3"
        shift 4
        [[ "${name}" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "run-suite: bad suite name '${name}'" >&2; exit 2; }
        rm -f "${RESULTS}/${name}.counts" "${RESULTS}/${name}.log"
        case "${kind}" in
            pytest) run_pytest "${name}" "$@" ;;
            ansible-test) run_ansible_test "${name}" "$@" ;;
            molecule) run_molecule "${name}" ;;
            command) run_command "${name}" "$@" ;;
            *) echo "run-suite: unknown kind '${kind}'" >&2; exit 2 ;;
        esac
        ;;
    summary)
        shift
        total_passed=0 total_failed=0
        for name in "$@"; do
            if [ -f "${RESULTS}/${name}.counts" ]; then
                read -r p f <"${RESULTS}/${name}.counts"
            else
                # The suite never got to record anything (e.g. set-up failed).
                p=0 f=1
            fi
            printf '%-12s %s passed, %s failed\n' "${name}:" "${p}" "${f}"
            total_passed=$((total_passed + p))
            total_failed=$((total_failed + f))
        done
        printf '%s passed, %s failed\n' "${total_passed}" "${total_failed}"
        ;;
    *)
        sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
        exit 2
        ;;
esac
