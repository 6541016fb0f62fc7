"""What a semiring without closed forms costs: the same quantities through the semiring interface
(a level sweep with autograd) and through the closed forms (compiled sweeps, closed-form
gradients), same run, on a batch of CTC lattices.

    python bench/semirings.py [--repeats 5] [--batch 8] [--frames 200] [--labels 10]

Each row times a total and its gradient (``backward``), and checks that both ways agree:

* log semiring: ``total_score(lattice, LOG)`` against the log semiring written as an interface-only
  ``Semiring`` (what any new semiring runs as);
* entropy: ``total_score(lattice, EntropySemiring())`` against ``path_entropy`` (posteriors of one
  forward and one backward pass);
* 5 best path scores: ``total_score(lattice, KMaxSemiring(5))`` against ``n_best(lattice, 5)``
  (exact n-best by sidetracks, no gradient).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time  # noqa: E402

import gtn_py  # noqa: E402
from gtn_py.semiring import Semiring, logsumexp, segment_logsumexp  # noqa: E402


class InterfaceLog(Semiring):
    """The log semiring through the interface alone (no kernel id, no closed forms)."""

    name = "interface-log"

    def plus(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return logsumexp(x, dim)

    def segment_plus(self, values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
        return segment_logsumexp(values, segment, num_segments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--labels", type=int, default=10)
    opts = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    emissions = torch.randn(opts.batch, opts.frames, 30, generator=generator, dtype=torch.float64).log_softmax(-1)
    emissions.requires_grad_(True)
    targets = torch.randint(1, 30, (opts.batch, opts.labels), generator=generator).tolist()
    lattice = gtn_py.intersect_dense(gtn_py.ctc_graph(targets).to(dtype=torch.float64), emissions.detach())
    weights = lattice.weights.detach().requires_grad_(True)
    lattice = lattice.with_weights(weights)
    print(f"B={opts.batch} CTC lattices of T={opts.frames} frames, {opts.labels} labels each "
          f"({lattice.num_nodes} nodes, {lattice.num_arcs} arcs), float64, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {opts.repeats}")

    def largest(difference: torch.Tensor) -> float:
        return float(difference.detach().abs().max())

    def with_gradient(total):
        return lambda: torch.autograd.grad(total().sum(), weights)

    rows = [
        ("log total", with_gradient(lambda: gtn_py.total_score(lattice, InterfaceLog())),
         with_gradient(lambda: gtn_py.total_score(lattice, gtn_py.LOG)), "LOG, compiled",
         lambda: largest(gtn_py.total_score(lattice, InterfaceLog()) - gtn_py.total_score(lattice, gtn_py.LOG))),
        ("entropy", with_gradient(lambda: gtn_py.total_score(lattice, gtn_py.ENTROPY)),
         with_gradient(lambda: gtn_py.path_entropy(lattice)), "path_entropy",
         lambda: largest(gtn_py.total_score(lattice, gtn_py.ENTROPY) - gtn_py.path_entropy(lattice))),
        ("5 best scores", with_gradient(lambda: gtn_py.total_score(lattice, gtn_py.KMaxSemiring(5))),
         lambda: gtn_py.n_best(lattice, 5), "n_best (no gradient)",
         lambda: max(largest(gtn_py.viterbi_score(paths) - best[:paths.num_graphs])
                     for paths, best in zip(gtn_py.n_best(lattice, 5),
                                            gtn_py.total_score(lattice, gtn_py.KMaxSemiring(5))))),
    ]
    print(f"  {'quantity':<14} {'interface':>11} {'closed form':>12}  {'ratio':>6}  largest difference")
    for name, interface, closed, closed_name, difference in rows:
        interface_ms = 1000 * median_time(interface, opts.repeats)
        closed_ms = 1000 * median_time(closed, opts.repeats)
        print(f"  {name:<14} {interface_ms:9.1f} ms {closed_ms:9.1f} ms  {interface_ms / closed_ms:5.1f}x  "
              f"{difference():.2e}   (closed form: {closed_name})")


if __name__ == "__main__":
    main()
