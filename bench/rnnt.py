"""RNN-T loss forward + backward: gtn_py against k2 (in the Python 3.10 k2 environment, when it
exists) and torchaudio (when it imports), same inputs, same run.

    python bench/rnnt.py [--repeats 5] [--s-range 5]

Shapes: B=16, T=200, U=40 and V=50 or 500, float32, full lengths, blank 0.

* **Full loss** from given joiner logits ``[B, T, U + 1, V]`` (log-softmax included): gtn_py's
  ``rnnt_loss`` against ``k2.rnnt_loss`` and torchaudio's.
* **Joiner and loss**, what a training step pays: encoder and predictor outputs (J=256) through
  a joiner ``tanh(e + p) @ W`` to the loss, gradients to both. *Full*: the joiner on the whole
  (t, u) grid, then the full loss. *Pruned* (``--s-range`` u per frame): the simple loss of linear
  projections of both to V, prune ranges from it, the joiner on the bands and the pruned loss
  (gtn_py: ``rnnt_loss_simple(..., s_range=S)`` giving the loss and the ranges from one
  lattice, ``rnnt_prune``, ``rnnt_loss_pruned``; k2:
  ``rnnt_loss_smoothed`` without smoothing, ``get_rnnt_prune_ranges``, ``do_rnnt_pruning``,
  ``rnnt_loss_pruned``).

Prints each median time, peak extra memory (resident set on the CPU: the high-water mark of a
step above the resident size before it, measured after the timings with glibc's mmap threshold
fixed by ``mallopt``, so that freed blocks go back to the system and are not silently reused;
gtn_py's in a process of its own), the ratios, how far the peers' losses are from gtn_py's, and
how far the pruned loss is above the exact loss of the same joiner.
"""

from __future__ import annotations

import argparse
import ctypes
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
JOINER_DIM = 256
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_blocks() -> None:
    """From now on, blocks above 128 KiB are mapped and unmapped, never kept in the heap: the
    resident size follows live memory (timings are taken before, with the default allocator)."""
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 131072)


def inputs(shape):
    """Joiner logits and targets for the full-loss comparison."""
    batch, frames, labels, classes = shape
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, frames, labels + 1, classes, generator=generator)
    targets = torch.randint(1, classes, (batch, labels), generator=generator)
    return logits, targets


def joiner_inputs(shape):
    """Encoder and predictor outputs, the joiner's output matrix, the simple projections, targets."""
    batch, frames, labels, classes = shape
    generator = torch.Generator().manual_seed(1)
    encoder_out = torch.randn(batch, frames, JOINER_DIM, generator=generator)
    predictor_out = torch.randn(batch, labels + 1, JOINER_DIM, generator=generator)
    weights = {name: torch.randn(JOINER_DIM, classes, generator=generator) / JOINER_DIM ** 0.5
               for name in ("output", "am", "lm")}
    targets = torch.randint(1, classes, (batch, labels), generator=generator)
    return {"encoder_out": encoder_out, "predictor_out": predictor_out, "targets": targets, **weights}


def gtn_py_step(logits, targets):
    x = logits.clone().requires_grad_()
    batch, frames, context, _ = x.shape
    losses = gtn_py.rnnt_loss(x, targets, [frames] * batch, [context - 1] * batch, reduction="none")
    losses.sum().backward()
    return losses.detach()


def joiner_step(data, s_range: int | None):
    """One training step's loss and gradients through the joiner: full when ``s_range`` is None."""
    enc = data["encoder_out"].clone().requires_grad_()
    pred = data["predictor_out"].clone().requires_grad_()
    out = data["output"].clone().requires_grad_()
    targets = data["targets"]
    batch, frames, _ = enc.shape
    lengths = ([frames] * batch, [targets.shape[1]] * batch)
    if s_range is None:
        logits = torch.tanh(enc[:, :, None] + pred[:, None]) @ out
        losses = gtn_py.rnnt_loss(logits, targets, *lengths, reduction="none")
        losses.sum().backward()
        return losses.detach()
    am, lm = enc @ data["am"], pred @ data["lm"]
    simple, ranges = gtn_py.rnnt_loss_simple(am, lm, targets, *lengths, reduction="sum", s_range=s_range)
    enc_band, pred_band = gtn_py.rnnt_prune(enc, pred, ranges, s_range)
    logits = torch.tanh(enc_band + pred_band) @ out
    losses = gtn_py.rnnt_loss_pruned(logits, targets, ranges, *lengths, reduction="none")
    (losses.sum() + simple).backward()
    return losses.detach()


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def measured_step(kind: str, shape, s_range: int):
    """The step that ``--peak KIND`` measures: ``logits`` (the full loss from logits), ``full`` or
    ``pruned`` (joiner and loss)."""
    if kind == "logits":
        logits, targets = inputs(shape)
        return lambda: gtn_py_step(logits, targets)
    data = joiner_inputs(shape)
    return lambda: joiner_step(data, None if kind == "full" else s_range)


def peak_here(step) -> float:
    map_large_blocks()
    step()  # compiles, caches
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current size
    before = status_kb("VmRSS")
    step()
    return (status_kb("VmHWM") - before) / 1024


def peak_extra_mb(kind: str, shape, s_range: int = 0) -> float:
    """Peak extra memory of one step, in a fresh process (see the module documentation)."""
    out = subprocess.run([sys.executable, __file__, "--peak", kind, "--shape", ",".join(map(str, shape)),
                          "--s-range", str(s_range)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def k2_run(data: dict, mode: str, repeats: int, s_range: int = 0):
    if not K2_PYTHON.exists():
        return None, f"not available ({K2_PYTHON} does not exist; make test-k2 builds it)"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inputs.npz"
        np.savez(path, **{k: v.numpy() for k, v in data.items()})
        out = subprocess.run([str(K2_PYTHON), str(Path(__file__).with_name("k2_rnnt_timing.py")), str(path),
                              str(repeats), mode, str(s_range)], capture_output=True, text=True)
    if out.returncode != 0:
        return None, "not available (" + (out.stderr.strip().splitlines() or ["failed"])[-1] + ")"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def full_loss_report(shape, repeats, taf):
    """Every peer's full loss from the same logits: time, memory, how far the losses are from ours."""
    logits, targets = inputs(shape)
    ours = gtn_py_step(logits, targets)
    ms = 1000 * median_time(lambda: gtn_py_step(logits, targets), repeats)
    print(f"\nB={shape[0]} T={shape[1]} U={shape[2]} V={shape[3]}: full loss from logits")
    print(f"  gtn_py     {ms:9.1f} ms   peak extra memory {peak_extra_mb('logits', shape):8.1f} MiB")
    k2, why = k2_run({"logits": logits, "targets": targets}, "logits", repeats)
    if k2 is None:
        print(f"  k2: {why}")
    else:
        diff = float((torch.tensor(k2["losses"]) - ours).abs().max())
        print(f"  k2         {k2['ms']:9.1f} ms   peak extra memory {k2['peak_mb']:8.1f} MiB   (k2 {k2['k2']}, torch "
              f"{k2['torch']}); gtn_py / k2 {ms / k2['ms']:.2f}x; losses differ by at most {diff:.2e}")
    if taf is None:
        print("  torchaudio: not installed")
        return
    x = logits.clone().requires_grad_()
    lengths = [torch.full((shape[0],), n, dtype=torch.int32) for n in shape[1:3]]

    def audio_step():
        taf.rnnt_loss(x, targets.int(), *lengths, blank=0, reduction="sum").backward()
    audio_ms = 1000 * median_time(audio_step, repeats)
    print(f"  torchaudio {audio_ms:9.1f} ms   gtn_py / torchaudio {ms / audio_ms:.2f}x")


def joiner_report(shape, repeats, s_range):
    """The joiner and the loss, full and pruned, gtn_py and k2."""
    data = joiner_inputs(shape)
    print(f"\nB={shape[0]} T={shape[1]} U={shape[2]} V={shape[3]}: joiner (J={JOINER_DIM}) and loss, "
          f"pruned to {s_range} u per frame")
    exact = joiner_step(data, None)
    pruned = joiner_step(data, s_range)
    rows = {}
    for name, s in (("full", None), ("pruned", s_range)):
        ms = 1000 * median_time(lambda s=s: joiner_step(data, s), repeats)
        rows[name] = (ms, peak_extra_mb(name, shape, s_range))
    for mode in ("full", "pruned"):
        k2, why = k2_run(data, mode, repeats, s_range)
        ms, mb = rows[mode]
        if k2 is None:
            print(f"  gtn_py {mode:6s} {ms:9.1f} ms {mb:8.1f} MiB   k2: {why}")
            continue
        ours = exact if mode == "full" else pruned
        diff = float((torch.tensor(k2["losses"]) - ours).abs().max())
        print(f"  gtn_py {mode:6s} {ms:9.1f} ms {mb:8.1f} MiB   k2 {k2['ms']:9.1f} ms {k2['peak_mb']:8.1f} MiB   "
              f"gtn_py / k2 time {ms / k2['ms']:.2f}x memory {mb / k2['peak_mb']:.2f}x; losses differ by {diff:.2e}")
    above = (pruned - exact) / exact
    print(f"  pruned / full: time {rows['pruned'][0] / rows['full'][0]:.2f}x, memory "
          f"{rows['pruned'][1] / rows['full'][1]:.2f}x; pruned loss above the exact loss by {float(above.mean()):.2%} "
          f"(mean), {float(above.max()):.2%} (max) on these random inputs")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--s-range", type=int, default=5, help="u per frame of the pruned loss")
    parser.add_argument("--peak", choices=("logits", "full", "pruned"), help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.peak:  # a measuring child process
        print(peak_here(measured_step(opts.peak, tuple(int(x) for x in opts.shape.split(",")), opts.s_range)))
        return
    try:
        import torchaudio.functional as taf
    except ImportError:
        taf = None
    print(f"RNN-T loss forward + backward, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {opts.repeats}")
    for shape in SHAPES:
        full_loss_report(shape, opts.repeats, taf)
        joiner_report(shape, opts.repeats, opts.s_range)


if __name__ == "__main__":
    main()
