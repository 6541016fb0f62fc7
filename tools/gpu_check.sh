#!/usr/bin/env bash
# The GPU checks, run first thing on a lent GPU machine (about 7 minutes; each step has its own
# time limit and the next one runs whatever happened): the CUDA tests, the CUDA benchmarks, and a
# short check-reader training on CUDA (the speech recipe's CUDA steps are in the CUDA tests).
# Everything it needs travels in the working tree; build the test dependencies the machine's own
# Python lacks here first, once, and carry them:
#
#   bash tools/gpu_site.sh                      # .whl/site (pywrapfst, graphviz) for Python 3.12
#   # on the GPU machine (the device tool's run, carry [".whl/site"]):
#   bash tools/gpu_check.sh                     # results in $OUT (default out/gpu_check)
set -u
out=${OUT:-out/gpu_check}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD/.whl/site:$PWD
step() {  # step NAME SECONDS COMMAND...: run it with a time limit, its output into $out/NAME.txt
    local name=$1 limit=$2
    shift 2
    local began=$SECONDS
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    echo "$name: exit $? after $((SECONDS - began)) s" | tee -a "$out/summary.txt"
    tail -n 15 "$out/$name.txt"
}
step machine 30 bash -c "nvidia-smi; $py -c 'import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name()); import triton; print(\"triton\", triton.__version__)'"
step test-cuda 200 "$py" -m pytest -q -p no:cacheprovider -m cuda tests
step bench-ctc 100 "$py" bench/ctc.py --device cuda --repeats 20
step bench-align 60 "$py" bench/align.py --device cuda --repeats 10
step launches 20 "$py" bench/launches.py
step check-reader-train 60 "$py" -m recipes.check_reader train --out "$out/check_reader" --device cuda --steps 40 \
    --pretrain-steps 40 --batch-size 16 --valid-strings 50 --valid-every 40 --quiet
cat "$out/summary.txt"
