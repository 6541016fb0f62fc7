"""k2's CTC loss (k2.ctc_graph + k2.ctc_loss, i.e. intersect_dense) forward+backward time, as JSON.

Run with the Python 3.10 k2 environment's interpreter (bench/ctc.py does it):
``python bench/k2_ctc_timing.py B T S V repeats device``.
"""

import json
import statistics
import sys
import time

import k2
import torch


def main() -> None:
    batch, frames, target_length, vocab, repeats = map(int, sys.argv[1:6])
    device = torch.device(sys.argv[6] if len(sys.argv) > 6 else "cpu")
    torch.manual_seed(0)
    log_probs = torch.randn(batch, frames, vocab, device=device).log_softmax(-1).requires_grad_()
    targets = torch.randint(1, vocab, (batch, target_length)).tolist()
    segments = torch.tensor([[b, 0, frames] for b in range(batch)], dtype=torch.int32)

    def step() -> None:
        graphs = k2.ctc_graph(targets, device=device)
        dense = k2.DenseFsaVec(log_probs, segments)
        loss = k2.ctc_loss(graphs, dense, output_beam=10.0, reduction="sum")
        loss.backward()
        log_probs.grad = None

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    version = getattr(k2, "__version__", getattr(k2, "__dev_version__", "?"))
    print(json.dumps({"ms": 1000 * statistics.median(times), "k2": version, "torch": torch.__version__,
                      "device": str(device)}))


if __name__ == "__main__":
    main()
