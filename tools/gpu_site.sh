#!/usr/bin/env bash
# The test dependencies a GPU machine's own Python lacks, as a folder to put on PYTHONPATH there:
# pywrapfst (from pynini's wheel, its libraries stripped of debug symbols: 19 MB instead of
# 700 MB, small enough to travel) and graphviz. Built here, for another machine's Python
# (default 3.12, the lent GPU machines' image; its torch, numba, pytest and hypothesis are used).
#
#   bash tools/gpu_site.sh [PYTHON_VERSION] [OUT_DIR]      # default: 3.12 .whl/site
#   # there: PYTHONPATH=$PWD/.whl/site:$PWD python3 -m pytest -m cuda tests
set -euo pipefail
version=${1:-3.12}
out=${2:-.whl/site}
tag=cp${version/./}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$work" pynini==2.1.7 graphviz==0.21
unzip -q "$work"/pynini-*-"$tag"-*.whl -d "$work/pynini"
rm -rf "$out" && mkdir -p "$out/pynini.libs"
cp -r "$work/pynini/pywrapfst" "$work"/pynini/_pywrapfst.*.so "$out/"
# only the libraries _pywrapfst links (readelf -d): libfst, libfstscript, libfstfar, libfstfarscript
for lib in libfst- libfstscript libfstfar- libfstfarscript; do cp "$work"/pynini/pynini.libs/$lib*.so* "$out/pynini.libs/"; done
strip --strip-unneeded "$out"/_pywrapfst.*.so "$out"/pynini.libs/*
unzip -q -o "$work"/graphviz-*.whl -d "$out"
du -sh "$out"
