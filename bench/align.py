"""CTC forced alignment (the best path of each target): gtn_py vs k2, and gtn_py's compiled
kernels vs its tensor sweeps; also the Viterbi total with its gradient (what the perceptron and
hinge losses compute), compiled vs tensor sweeps.

    python bench/align.py [--repeats 5] [--device cpu|cuda]

gtn_py: ``viterbi_align(ctc_graph(targets), log_probs)`` (the dense intersection's tropical
forward pass with best slots, then backtracking: numba kernels on the CPU, Triton on CUDA; the
"tensor sweeps" column turns the kernels off: the portable path without numba or Triton).
k2: ``k2.ctc_graph`` + ``k2.intersect_dense`` (output_beam 10) + ``k2.shortest_path``, in the
Python 3.10 k2 environment (bench/k2_ctc_timing.py), on the same inputs; the best paths' scores
of both are compared. Shapes are bench/ctc.py's (B, T, target length, V); medians of repeats.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ctc import K2_PYTHON, SHAPES  # noqa: E402
from timing import median_time  # noqa: E402

import gtn_py  # noqa: E402
from gtn_py.ops import dense  # noqa: E402


def inputs(shape, device):
    """bench/k2_ctc_timing.py's inputs: seed 0, log-probabilities [B, T, V], then the targets."""
    batch, frames, target_length, vocab = shape
    torch.manual_seed(0)
    log_probs = torch.randn(batch, frames, vocab).log_softmax(-1)
    targets = torch.randint(1, vocab, (batch, target_length))
    return log_probs.to(device), targets.to(device)


def gtn_py_align(log_probs, targets):
    return gtn_py.viterbi_align(gtn_py.ctc_graph(targets, dtype=log_probs.dtype, device=log_probs.device), log_probs)


def viterbi_total_and_gradient(log_probs, targets):
    x = log_probs.detach().requires_grad_()
    graphs = gtn_py.ctc_graph(targets, dtype=log_probs.dtype, device=log_probs.device)
    gtn_py.dense_score(graphs, x, semiring="tropical").sum().backward()


def gtn_py_ms(work, shape, device, repeats, compiled):
    log_probs, targets = inputs(shape, device)

    def step():
        work(log_probs, targets)
        if device.type == "cuda":
            torch.cuda.synchronize()
    with dense.dense_kernels("auto" if compiled else "torch"):
        return 1000 * median_time(step, repeats)


def k2_result(shape, device, repeats):
    if not K2_PYTHON.exists():
        return None, f"not available ({K2_PYTHON} does not exist)"
    script = Path(__file__).resolve().parent / "k2_ctc_timing.py"
    out = subprocess.run([str(K2_PYTHON), str(script), *map(str, shape), str(repeats), str(device), "align"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None, "not available (" + (out.stderr.strip().splitlines() or ["failed"])[-1] + ")"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    opts = parser.parse_args()
    device = torch.device(opts.device)
    print(f"CTC forced alignment, device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {opts.repeats}")
    for shape in SHAPES:
        b, t, s, v = shape
        compiled, tensors = (gtn_py_ms(gtn_py_align, shape, device, opts.repeats, c) for c in (True, False))
        total, total_tensors = (gtn_py_ms(viterbi_total_and_gradient, shape, device, opts.repeats, c)
                                for c in (True, False))
        print(f"\nB={b} T={t} S={s} V={v}")
        print(f"  gtn_py, compiled kernels {compiled:9.1f} ms")
        print(f"  gtn_py, tensor sweeps    {tensors:9.1f} ms   tensor sweeps / compiled {tensors / compiled:.2f}x")
        print(f"  Viterbi total + gradient: compiled {total:.1f} ms, tensor sweeps {total_tensors:.1f} ms "
              f"({total_tensors / total:.2f}x)")
        k2, note = k2_result(shape, device, opts.repeats)
        if k2 is None:
            print(f"  k2: {note}")
            continue
        ours = gtn_py_align(*inputs(shape, device)).scores.double().cpu()
        gap = float((ours - torch.tensor(k2["scores"], dtype=torch.float64)).abs().max())
        print(f"  k2                       {k2['ms']:9.1f} ms   (k2 {k2['k2']}, torch {k2['torch']}); "
              f"k2 / gtn_py {k2['ms'] / compiled:.2f}x; best-path scores differ by at most {gap:.2g}")


if __name__ == "__main__":
    main()
