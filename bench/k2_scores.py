"""Forward scores (log-semiring totals, forward + backward) of batched lattices: gtn_py's native
path against k2, each in its own interpreter (k2 needs its own torch).

    python bench/k2_scores.py [--repeats 5]        # from the main venv: prints the table

The driver runs this file twice: ``--backend native`` in the current interpreter and
``--backend k2`` in the k2 environment (``tools/k2_env.sh`` builds it; its interpreter is
``${XDG_CACHE_HOME:-~/.cache}/gtn_py/k2-py310/bin/python``, or ``--k2-python``). Each prints
JSON rows; the driver prints one table with the ratios. Lattices are generated from numpy's
legacy ``RandomState`` (the same stream under numpy 1 and 2), so both sides score the same
graphs: the table checks that their totals agree.

Columns: ``native`` is ``total_score(batch, "log")`` and its backward; ``k2`` is the same
through :func:`gtn_py.k2.k2_total_score` (conversion included, what ``backend="k2"`` costs);
``k2 core`` is ``Fsa.get_tot_scores`` and its backward on an FsaVec built beforehand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from timing import median_time  # noqa: E402  (bench/timing.py)

from gtn_py import Graph  # noqa: E402

# (name, graphs in the batch, frames, states per frame, arcs leaving each state)
CASES = [
    ("8 x 100 frames x 10 states", 8, 100, 10, 3),
    ("32 x 200 frames x 20 states", 32, 200, 20, 4),
    ("4 x 2000 frames x 8 states", 4, 2000, 8, 3),
]
K2_PYTHON = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "gtn_py", "k2-py310", "bin", "python")


def lattice_batch(num_graphs: int, frames: int, states: int, out_degree: int, seed: int = 0) -> Graph:
    """A batch of layered lattices: one start node, ``frames - 1`` layers of ``states`` nodes,
    one accept node; each node has ``out_degree`` arcs to random nodes of the next layer."""
    rng = np.random.RandomState(seed)
    graphs = []
    for _ in range(num_graphs):
        layer_sizes = [1] + [states] * (frames - 1) + [1]
        offsets = np.cumsum([0] + layer_sizes)
        src, dst = [], []
        for t in range(frames):
            here = np.arange(offsets[t], offsets[t + 1])
            src.append(np.repeat(here, out_degree))
            dst.append(offsets[t + 1] + rng.randint(0, layer_sizes[t + 1], here.size * out_degree))
        s, d = np.concatenate(src), np.concatenate(dst)
        graphs.append(Graph.from_arcs(int(offsets[-1]), torch.from_numpy(s), torch.from_numpy(d),
                                      torch.from_numpy(rng.randint(1, 50, s.size)),
                                      weights=torch.from_numpy(rng.randn(s.size).astype(np.float32) * 0.5),
                                      start=[0], accept=[int(offsets[-1]) - 1]))
    return Graph.batch(graphs)



def leaf_batch(shape: List[int]) -> Tuple[Graph, torch.Tensor]:
    """The case's batch with its arc weights as a leaf that requires grad."""
    batch = lattice_batch(*shape)
    weights = batch.weights.detach().requires_grad_(True)
    return batch.with_weights(weights), weights


def native_case(shape: List[int], repeats: int) -> Dict[str, Any]:
    from gtn_py.ops.shortest import total_score

    batch, weights = leaf_batch(shape)

    def step() -> torch.Tensor:
        totals = total_score(batch, "log")
        torch.autograd.grad(totals.sum(), weights)
        return totals.detach()

    return {"arcs": batch.num_arcs, "native": median_time(step, repeats), "checksum": float(step().sum())}


def k2_case(shape: List[int], repeats: int) -> Dict[str, Any]:
    from gtn_py.k2 import k2_total_score, to_k2

    batch, weights = leaf_batch(shape)

    def with_conversion() -> torch.Tensor:
        totals = k2_total_score(batch, "log")
        torch.autograd.grad(totals.sum(), weights)
        return totals.detach()

    fsa = to_k2(batch.detach(), topsort=True)
    scores = fsa.scores.detach().clone().requires_grad_(True)

    def core() -> torch.Tensor:
        fsa.scores = scores  # drops k2's cached forward scores, as a new batch would
        totals = fsa.get_tot_scores(log_semiring=True, use_double_scores=True)
        torch.autograd.grad(totals.sum(), scores)
        return totals.detach()

    return {"arcs": batch.num_arcs, "k2": median_time(with_conversion, repeats),
            "k2 core": median_time(core, repeats), "checksum": float(with_conversion().sum())}


def run_side(backend: str, repeats: int) -> List[Dict[str, Any]]:
    case = native_case if backend == "native" else k2_case
    return [{"case": name, **case(shape, repeats)} for name, *shape in CASES]


def run_in(python: str, backend: str, repeats: int) -> List[Dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    out = subprocess.run([python, os.path.abspath(__file__), "--backend", backend, "--repeats", str(repeats)],
                         check=True, stdout=subprocess.PIPE, env=env, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["native", "k2"], help="run one side and print its JSON rows")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k2-python", default=K2_PYTHON, help="interpreter of the k2 environment")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.backend:
        print(json.dumps(run_side(args.backend, args.repeats)))
        return

    native = run_in(sys.executable, "native", args.repeats)
    if not os.path.exists(args.k2_python):
        sys.exit(f"no k2 environment at {args.k2_python}: build it with `bash tools/k2_env.sh`")
    k2_rows = run_in(args.k2_python, "k2", args.repeats)
    print(f"forward score + backward, log semiring, 1 thread, median of {args.repeats} (ms)")
    header = f"{'case':<30} {'arcs':>8} {'native':>9} {'k2':>9} {'k2 core':>9} {'k2/native':>10} {'core/native':>12}"
    print(header)
    print("-" * len(header))
    for n, k in zip(native, k2_rows):
        assert n["case"] == k["case"]
        if not np.isclose(n["checksum"], k["checksum"], rtol=1e-4):
            sys.exit(f"{n['case']}: totals differ (native {n['checksum']}, k2 {k['checksum']})")
        print(f"{n['case']:<30} {n['arcs']:>8} {n['native'] * 1e3:>9.2f} {k['k2'] * 1e3:>9.2f} "
              f"{k['k2 core'] * 1e3:>9.2f} {k['k2'] / n['native']:>10.2f} {k['k2 core'] / n['native']:>12.2f}")


if __name__ == "__main__":
    main()
