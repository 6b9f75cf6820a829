#!/usr/bin/env bash
# memorybot setup and entry point. Both commands install everything first (idempotent):
#   ./run.sh chat [--user NAME]   install, then open the terminal chat
#   ./run.sh test [PYTEST ARGS]   install, then run the whole test suite
# Anything else is passed to the `memorybot` command, e.g. ./run.sh memories --platform console --user dana
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON=${PYTHON:-python3}

install() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall only when the project's requirements changed.
    local stamp="$VENV/.memorybot-installed"
    local want
    want=$(sha256sum pyproject.toml run.sh | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first and pinned: any other request for torch would pull a multi-GB CUDA build.
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    # the llama extra builds llama-cpp-python from source the first time (~8 minutes); pip caches the wheel.
    "$VENV/bin/python" -m pip install --quiet -e ".[dev,llama]"
    echo "$want" > "$stamp"
}

command=${1:-chat}
[ $# -gt 0 ] && shift
install
case "$command" in
    test)
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        exec "$VENV/bin/memorybot" "$command" "$@"
        ;;
esac
