"""k2's RNN-T loss timings, as JSON, run with the Python 3.10 k2 environment's interpreter:
``python bench/k2_rnnt_timing.py INPUTS.npz repeats`` (bench/rnnt.py writes the inputs: ``logits``
[B, T, U + 1, V] float32 and ``targets`` [B, U]; blank 0, full lengths). Times k2.rnnt_loss
(``rnnt_type="regular"``) forward + backward and returns its per-sequence losses."""

import json
import statistics
import sys
import time

import k2
import numpy as np
import torch


def main() -> None:
    data = np.load(sys.argv[1])
    repeats = int(sys.argv[2])
    logits = torch.from_numpy(data["logits"]).requires_grad_()
    symbols = torch.from_numpy(data["targets"]).long()

    def step() -> torch.Tensor:
        losses = k2.rnnt_loss(logits, symbols, termination_symbol=0, reduction="none")
        losses.sum().backward()
        logits.grad = None
        return losses.detach()

    losses = step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    version = getattr(k2, "__version__", getattr(k2, "__dev_version__", "?"))
    print(json.dumps({"ms": 1000 * statistics.median(times), "k2": version, "torch": torch.__version__,
                      "losses": losses.tolist()}))


if __name__ == "__main__":
    main()
