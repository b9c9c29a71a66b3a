#!/usr/bin/env bash
# The README's two quick-start commands, on a fresh machine or a used one:
#
#   bash deploy/dev.sh run [basicsync run options]   basicsync run --embedded: the consumer with
#                                                    local Kafka + WorkfloPlus sandbox + demo
#   bash deploy/dev.sh test [pytest options]         the whole test suite, in two workers
#
# Both create .venv and install the project with its dev extra when that is missing or
# pyproject.toml changed since. The local broker needs Java 17+ and (once) Maven: kafka.sh
# says how to get them when they are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ensure_venv() {
    local stamp=.venv/.installed-from
    local wanted
    wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [[ -x .venv/bin/python && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        return
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "dev.sh: Python 3.11 or newer is needed as python3" >&2
        exit 2
    fi
    echo "dev.sh: installing the project into .venv" >&2
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
    echo "$wanted" >"$stamp"
}

command="${1:-}"
shift || true
case "$command" in
install)
    ensure_venv
    ;;
run)
    ensure_venv
    exec .venv/bin/basicsync run --embedded "$@"
    ;;
test)
    ensure_venv
    # Two pytest-xdist workers, each with a broker of its own: most of the integration time is
    # waiting out faults, not CPU. A test file runs whole in one worker (--dist loadfile), so
    # the security tests (one file) start one secured broker, not one per worker.
    # Options after these win: -n 0 runs everything in this process (for --pdb).
    exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
    ;;
*)
    echo "usage: bash deploy/dev.sh run|test|install [options]" >&2
    exit 2
    ;;
esac
