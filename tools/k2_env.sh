#!/usr/bin/env bash
# The k2 environment: Python 3.10 + torch 1.13.1 + k2 1.23.4 (+ numba, pytest, hypothesis),
# in which gtn_py's k2 interop (gtn_py/k2.py, tests/k2_interop/) is tested.
#
# k2 wheels are built against one exact torch, so k2 cannot live in the project's main venv
# (newer torch, Python 3.11). This venv is built once and cached OUTSIDE the repository, at
#   ${XDG_CACHE_HOME:-$HOME/.cache}/gtn_py/k2-py310
# (bench/ scripts find its interpreter there). gtn_py itself is not installed into it: the
# commands below put the repository on PYTHONPATH, so one venv serves every checkout.
#
# Usage:
#   bash tools/k2_env.sh          build the environment if it is not ready; print its python
#   bash tools/k2_env.sh test     build if needed, then run the k2 tests (and a Python 3.10 /
#                                 torch 1.13 smoke run of the core tests) in it
#
# Exit status: 0 ready (tests passed); 75 unavailable here for a reason outside the project
# (no Python 3.10 interpreter, or the package index cannot be reached) - `test` then prints
# "k2 environment unavailable: <reason>, skipping k2 interop tests" and exits 0; anything else
# is a real failure (a build step or a test failed) and fails loudly.
#
# Why the pins: PyPI's k2 1.23.4 for Linux (CUDA 11.7 build, torch 1.13.1) comes as one wheel
# per Python version, named k2-1.23.4-py3.X-none-any.whl. pip >= 24 rejects those file names,
# and older pip sees them all as "py3" wheels and may pick another Python's build, so pip is
# held below 24 and the Python 3.10 file is chosen by its sha256. torch 1.13.1 from PyPI pulls
# about 2 GB of NVIDIA CUDA libraries (cached by pip after the first build).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/gtn_py/k2-py310"
PY="$ENV_DIR/bin/python"
K2_WHEEL_SHA256=1404589732fdb7f6f5bf62297a20dd73318b7b4f2e10dd52dc3d5b6669688a4c
PACKAGES=(torch==1.13.1 "numpy<2" "numba>=0.57,<0.61" graphviz pytest hypothesis)
# Tests run there: the k2 interop, and core tests as a Python 3.10 / torch 1.13 smoke test.
TESTS=(tests/k2_interop tests/test_k2_optional.py tests/test_graph.py)
UNAVAILABLE=75
# The stamp names the pins: changing one rebuilds the environment.
STAMP="$ENV_DIR/.gtn_py-ready-$(echo "pip<24 ${PACKAGES[*]} k2==1.23.4 $K2_WHEEL_SHA256" | md5sum | cut -c1-8)"

MODE=${1:-build}
unavailable() {
    echo "k2 environment unavailable: $1${SKIP_NOTE:-}" >&2
    exit "$UNAVAILABLE"
}

find_python310() {
    local candidate
    for candidate in "${K2_PYTHON:-}" python3.10 "$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python \
                     "$HOME"/.pyenv/versions/3.10*/bin/python; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 \
           && "$candidate" -c 'import sys, venv; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# Run pip; on failure tell a network failure (unavailable) from a real one.
pip_install() {
    local log
    log=$(mktemp)
    if ! "$PY" -m pip install --disable-pip-version-check "$@" >"$log" 2>&1; then
        if grep -qiE 'NewConnectionError|Temporary failure in name resolution|Name or service not known|Network is unreachable|Max retries exceeded|ConnectTimeoutError|ReadTimeoutError|Connection refused' "$log"; then
            tail -n 5 "$log" >&2
            rm -f "$log"
            unavailable "the package index cannot be reached (pip install $*)"
        fi
        grep -v 'is ignored: it is neither a file nor a directory' "$log" | tail -n 30 >&2
        rm -f "$log"
        echo "error: building the k2 environment failed at: pip install $*" >&2
        exit 1
    fi
    rm -f "$log"
}

build() {
    local base
    base=$(find_python310) || unavailable "no Python 3.10 interpreter (set K2_PYTHON=/path/to/python3.10)"
    echo "building the k2 environment in $ENV_DIR with $base (a few minutes the first time)" >&2
    rm -rf "$ENV_DIR"
    mkdir -p "$(dirname "$ENV_DIR")"
    "$base" -m venv "$ENV_DIR"
    pip_install -q "pip<24"
    pip_install -q "${PACKAGES[@]}"
    local requirement
    requirement=$(mktemp)
    echo "k2==1.23.4 --hash=sha256:$K2_WHEEL_SHA256" >"$requirement"
    pip_install -q --no-deps --require-hashes -r "$requirement"
    rm -f "$requirement"
    (cd / && "$PY" -c 'import k2, torch; k2.ctc_graph([[1, 2]]); assert torch.__version__.startswith("1.13.1")') \
        || { echo "error: k2 does not work in the freshly built $ENV_DIR" >&2; exit 1; }
    touch "$STAMP"
}

ensure() {
    [ -x "$PY" ] && [ -e "$STAMP" ] || build
}

case "$MODE" in
    build)
        ensure
        echo "$PY"
        ;;
    test)
        shift
        status=0
        (SKIP_NOTE=", skipping k2 interop tests"; ensure) || status=$?
        [ "$status" = "$UNAVAILABLE" ] && exit 0
        [ "$status" = 0 ] || exit "$status"
        cd "$REPO"
        PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" "$@"
        ;;
    *)
        echo "usage: bash tools/k2_env.sh [build|test [pytest args]]" >&2
        exit 2
        ;;
esac
