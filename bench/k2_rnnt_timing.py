"""k2's RNN-T timings, as JSON, run with the Python 3.10 k2 environment's interpreter:
``python bench/k2_rnnt_timing.py INPUTS.npz REPEATS MODE S_RANGE`` (bench/rnnt.py writes the
inputs; blank 0, full lengths). Modes:

* ``logits``: ``k2.rnnt_loss`` (``rnnt_type="regular"``) from ``logits`` [B, T, U + 1, V];
* ``full``: the joiner ``tanh(e + p) @ output`` on the whole grid from ``encoder_out`` [B, T, J]
  and ``predictor_out`` [B, U + 1, J], then ``k2.rnnt_loss``;
* ``pruned``: the simple loss of ``encoder_out @ am`` and ``predictor_out @ lm``
  (``rnnt_loss_smoothed`` without smoothing, with its gradients), ``get_rnnt_prune_ranges``,
  ``do_rnnt_pruning``, the joiner on the bands and ``rnnt_loss_pruned``.

Times forward + backward (median of REPEATS after a warm-up), measures the peak extra resident
memory of one step after the timings (with glibc's mmap threshold fixed by ``mallopt``, as
bench/rnnt.py does, so that freed blocks are not reused unseen), and returns the per-sequence
losses (the full or pruned loss)."""

import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

import k2
import numpy as np
import torch


def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    data = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
    repeats, mode, s_range = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    symbols = data["targets"].long()
    batch, labels = symbols.shape

    def step() -> torch.Tensor:
        if mode == "logits":
            logits = data["logits"].clone().requires_grad_()
            losses = k2.rnnt_loss(logits, symbols, termination_symbol=0, reduction="none")
            losses.sum().backward()
            return losses.detach()
        enc = data["encoder_out"].clone().requires_grad_()
        pred = data["predictor_out"].clone().requires_grad_()
        out = data["output"].clone().requires_grad_()
        frames = enc.shape[1]
        boundary = torch.tensor([[0, 0, labels, frames]] * batch, dtype=torch.int64)
        if mode == "full":
            logits = torch.tanh(enc[:, :, None] + pred[:, None]) @ out
            losses = k2.rnnt_loss(logits, symbols, termination_symbol=0, boundary=boundary, reduction="none")
            losses.sum().backward()
            return losses.detach()
        am, lm = enc @ data["am"], pred @ data["lm"]
        simple, (px_grad, py_grad) = k2.rnnt_loss_smoothed(
            lm=lm, am=am, symbols=symbols, termination_symbol=0, lm_only_scale=0.0, am_only_scale=0.0,
            boundary=boundary, reduction="sum", return_grad=True)
        ranges = k2.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=s_range)
        enc_band, pred_band = k2.do_rnnt_pruning(am=enc, lm=pred, ranges=ranges)
        logits = torch.tanh(enc_band + pred_band) @ out
        losses = k2.rnnt_loss_pruned(logits, symbols, ranges, termination_symbol=0, boundary=boundary,
                                     reduction="none")
        (losses.sum() + simple).backward()
        return losses.detach()

    losses = step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    ctypes.CDLL("libc.so.6").mallopt(-3, 131072)  # M_MMAP_THRESHOLD: large blocks unmapped when freed
    step()
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kb("VmRSS")
    step()
    peak_mb = (status_kb("VmHWM") - before) / 1024
    version = getattr(k2, "__version__", getattr(k2, "__dev_version__", "?"))
    print(json.dumps({"ms": 1000 * statistics.median(times), "peak_mb": peak_mb, "k2": version,
                      "torch": torch.__version__, "losses": losses.tolist()}))


if __name__ == "__main__":
    main()
