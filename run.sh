#!/usr/bin/env bash
# memorybot setup and entry point. Both commands install what they need first (idempotent):
#   ./run.sh chat [--user NAME]   install, then open the terminal chat (llama.cpp too if MODEL_BACKEND=llama_cpp)
#   ./run.sh test [PYTEST ARGS]   install everything (test tools, llama.cpp), then run the whole test suite
# Anything else is passed to the `memorybot` command, e.g. ./run.sh memories --platform console --user dana
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON=${PYTHON:-python3}

# llama-cpp-python has no wheel for this platform: it is built from source once (~8-15 minutes on 2 cores)
# into a cache outside the checkout, keyed by its version and build flags. The flags name the instruction
# sets this CPU reports instead of -march=native, whose build was seen to die with SIGILL on these virtual
# machines (AMD EPYC, AVX-512 on some, AVX2 only on others, AMX on none). AVX-512 (where present) makes prompt
# processing ~1.5x faster.
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

python_is_311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }

install() {
    local extras=$1
    # A venv left broken or made with another Python (half-created, no pip, 3.12) is made again.
    if [ -x "$VENV/bin/python" ] && ! { python_is_311 "$VENV/bin/python" && "$VENV/bin/python" -m pip --version \
            >/dev/null 2>&1; }; then
        echo "Recreating $VENV (not a working Python 3.11 environment)"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        if ! python_is_311 "$PYTHON"; then
            echo "memorybot needs Python 3.11: set PYTHON=/path/to/python3.11 (now: $PYTHON)" >&2
            exit 1
        fi
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall only when the project's requirements or the extras asked for changed.
    local stamp="$VENV/.memorybot-installed"
    local want
    want=$( (sha256sum pyproject.toml run.sh; echo "$extras") | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first and pinned to the CPU build: a torch pulled in by another package would be the multi-GB CUDA
    # build. This machine finds torch-2.13.0+cpu among its local wheels; elsewhere pip takes it from PyTorch's
    # CPU index (add --index-url https://download.pytorch.org/whl/cpu if the plain install picks CUDA).
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    case ",$extras," in *,llama,*) build_llama_wheel ;; esac
    "$VENV/bin/python" -m pip install --quiet --find-links "$LLAMA_WHEELS" -e ".[$extras]"
    echo "$want" > "$stamp"
}

# The llama.cpp backend's extra is built (once, with a C++ compiler) for the tests, or when .env or the
# environment picks that backend; the default (OpenVINO) backend needs no compiler.
wants_llama() {
    [ "${MODEL_BACKEND:-}" = "llama_cpp" ] || grep -Eq '^[[:space:]]*MODEL_BACKEND[[:space:]]*=[[:space:]]*"?llama_cpp' \
        .env 2>/dev/null
}

command=${1:-chat}
[ $# -gt 0 ] && shift
if [ "$command" = test ]; then
    install "dev,llama,pgvector"
elif wants_llama; then
    install "llama,pgvector"
else
    install "pgvector"
fi
case "$command" in
    test)
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        exec "$VENV/bin/memorybot" "$command" "$@"
        ;;
esac
