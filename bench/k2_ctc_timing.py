"""k2's CTC timings, as JSON, run with the Python 3.10 k2 environment's interpreter:
``python bench/k2_ctc_timing.py B T S V repeats device [loss|align]``.

``loss`` (bench/ctc.py): k2.ctc_graph + k2.ctc_loss (intersect_dense) forward+backward.
``align`` (bench/align.py): the best path of each target, k2.ctc_graph + intersect_dense
(output_beam 10) + shortest_path; the JSON has the paths' scores too, to check the peers agree.
Inputs: ``torch.manual_seed(0)``, log-probabilities ``randn(B, T, V).log_softmax(-1)``, then
targets ``randint(1, V, (B, S))``.
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
    mode = sys.argv[7] if len(sys.argv) > 7 else "loss"
    torch.manual_seed(0)
    log_probs = torch.randn(batch, frames, vocab, device=device).log_softmax(-1).requires_grad_()
    targets = torch.randint(1, vocab, (batch, target_length)).tolist()
    segments = torch.tensor([[b, 0, frames] for b in range(batch)], dtype=torch.int32)

    def loss_step() -> None:
        graphs = k2.ctc_graph(targets, device=device)
        dense = k2.DenseFsaVec(log_probs, segments)
        loss = k2.ctc_loss(graphs, dense, output_beam=10.0, reduction="sum")
        loss.backward()
        log_probs.grad = None

    def align_step() -> torch.Tensor:
        with torch.no_grad():
            graphs = k2.ctc_graph(targets, device=device)
            lattice = k2.intersect_dense(graphs, k2.DenseFsaVec(log_probs, segments), output_beam=10.0)
            best = k2.shortest_path(lattice, use_double_scores=True)
            return best.get_tot_scores(use_double_scores=True, log_semiring=False)

    step = align_step if mode == "align" else loss_step

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
    result = {"ms": 1000 * statistics.median(times), "k2": version, "torch": torch.__version__, "device": str(device)}
    if mode == "align":
        result["scores"] = align_step().tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
