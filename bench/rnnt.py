"""RNN-T loss forward + backward: gtn_py's ``rnnt_loss`` (the alignment lattice as a graph, its
forward score) against k2's ``rnnt_loss`` (in the Python 3.10 k2 environment, when it exists)
and torchaudio's (when it imports), same inputs, same run.

    python bench/rnnt.py [--repeats 5]

Shapes: B=16, T=200, U=40 and V=50 or 500, float32, full lengths, blank 0. Prints each peer's
median time, the ratio, the largest difference between the per-sequence losses, and gtn_py's
peak extra memory (resident set on the CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time  # noqa: E402

import gtn_py  # noqa: E402

K2_PYTHON = Path("/root/.cache/gtn_py/k2-py310/bin/python")
SHAPES = [(16, 200, 40, 50), (16, 200, 40, 500)]


def inputs(shape):
    batch, frames, labels, classes = shape
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, frames, labels + 1, classes, generator=generator)
    targets = torch.randint(1, classes, (batch, labels), generator=generator)
    return logits, targets


def gtn_py_step(logits, targets):
    x = logits.clone().requires_grad_()
    batch, frames, context, _ = x.shape
    losses = gtn_py.rnnt_loss(x, targets, [frames] * batch, [context - 1] * batch, reduction="none")
    losses.sum().backward()
    return losses.detach()


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def peak_extra_mb(logits, targets) -> float:
    gtn_py_step(logits, targets)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current size
    before = status_kb("VmRSS")
    gtn_py_step(logits, targets)
    return (status_kb("VmHWM") - before) / 1024


def k2_run(logits, targets, repeats):
    if not K2_PYTHON.exists():
        return None, f"not available ({K2_PYTHON} does not exist; make test-k2 builds it)"
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "inputs.npz"
        np.savez(data, logits=logits.numpy(), targets=targets.numpy())
        out = subprocess.run([str(K2_PYTHON), str(Path(__file__).with_name("k2_rnnt_timing.py")), str(data),
                              str(repeats)], capture_output=True, text=True)
    if out.returncode != 0:
        return None, "not available (" + (out.stderr.strip().splitlines() or ["failed"])[-1] + ")"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def report(shape, repeats, taf):
    """One shape: every peer's time, gtn_py's memory, and how far the peers' losses are from ours."""
    logits, targets = inputs(shape)
    ours = gtn_py_step(logits, targets)
    ms = 1000 * median_time(lambda: gtn_py_step(logits, targets), repeats)
    print(f"\nB={shape[0]} T={shape[1]} U={shape[2]} V={shape[3]}")
    print(f"  gtn_py     {ms:9.1f} ms   peak extra memory {peak_extra_mb(logits, targets):8.1f} MiB")
    k2, why = k2_run(logits, targets, repeats)
    if k2 is None:
        print(f"  k2: {why}")
    else:
        diff = float((torch.tensor(k2["losses"]) - ours).abs().max())
        print(f"  k2         {k2['ms']:9.1f} ms   (k2 {k2['k2']}, torch {k2['torch']}); gtn_py / k2 "
              f"{ms / k2['ms']:.2f}x; losses differ by at most {diff:.2e}")
    if taf is None:
        print("  torchaudio: not installed")
        return
    x = logits.clone().requires_grad_()
    lengths = [torch.full((shape[0],), n, dtype=torch.int32) for n in shape[1:3]]

    def audio_step():
        taf.rnnt_loss(x, targets.int(), *lengths, blank=0, reduction="sum").backward()
    audio_ms = 1000 * median_time(audio_step, repeats)
    print(f"  torchaudio {audio_ms:9.1f} ms   gtn_py / torchaudio {ms / audio_ms:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    try:
        import torchaudio.functional as taf
    except ImportError:
        taf = None
    print(f"RNN-T loss forward + backward, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {opts.repeats}")
    for shape in SHAPES:
        report(shape, opts.repeats, taf)


if __name__ == "__main__":
    main()
