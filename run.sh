#!/usr/bin/env bash
# memorybot setup and entry point. Both commands install everything first (idempotent):
#   ./run.sh chat [--user NAME]   install, then open the terminal chat
#   ./run.sh test [PYTEST ARGS]   install, then run the whole test suite
# Anything else is passed to the `memorybot` command, e.g. ./run.sh memories --platform console --user dana
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON=${PYTHON:-python3}

# llama-cpp-python has no wheel for this platform: it is built from source once (~8-15 minutes on 2 cores)
# into a cache outside the checkout, keyed by its version and build flags. The flags name the instruction
# sets this CPU reports, never AMX, instead of -march=native: a native build faulted (SIGILL) in its AMX
# kernels on these virtual machines. AVX-512 (where present) makes prompt processing ~1.5x faster.
LLAMA_VERSION=0.3.36
cpu_has() { grep -qw "$1" /proc/cpuinfo 2>/dev/null; }
LLAMA_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
if cpu_has avx512f && cpu_has avx512bw && cpu_has avx512vl; then
    LLAMA_FLAGS="$LLAMA_FLAGS -DGGML_AVX512=ON"
    cpu_has avx512vbmi && LLAMA_FLAGS="$LLAMA_FLAGS -DGGML_AVX512_VBMI=ON"
    cpu_has avx512_vnni && LLAMA_FLAGS="$LLAMA_FLAGS -DGGML_AVX512_VNNI=ON"
    cpu_has avx512_bf16 && LLAMA_FLAGS="$LLAMA_FLAGS -DGGML_AVX512_BF16=ON"
fi
cpu_has avx_vnni && LLAMA_FLAGS="$LLAMA_FLAGS -DGGML_AVX_VNNI=ON"
LLAMA_WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/memorybot/wheels/$(echo "$LLAMA_VERSION $LLAMA_FLAGS" | sha256sum | cut -c1-12)"

build_llama_wheel() {
    if ls "$LLAMA_WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
        return
    fi
    echo "Building llama-cpp-python $LLAMA_VERSION from source (once; about 10 minutes)..."
    mkdir -p "$LLAMA_WHEELS"
    CMAKE_ARGS="$LLAMA_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$VENV/bin/python" -m pip wheel --quiet --no-deps --no-cache-dir -w "$LLAMA_WHEELS" \
        "llama-cpp-python==$LLAMA_VERSION"
}

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
    build_llama_wheel
    "$VENV/bin/python" -m pip install --quiet --find-links "$LLAMA_WHEELS" -e ".[dev,llama,pgvector]"
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
