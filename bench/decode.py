"""Decoding with a large graph: gtn_py's pruned search against its exact Viterbi search and
k2's ``intersect_dense_pruned`` (in the Python 3.10 k2 environment, when it exists), same run.

    python bench/decode.py [--repeats 3] [--words 1000] [--frames 300] [--batch 8]

The graph: a loop over ``--words`` words, each a 3-state left-to-right HMM (``hmm_units``,
``lexicon``, ``decoding_graph``: every word's last state leads to every word's first, so
``3 W + 1`` nodes and about ``W**2`` arcs). Emissions ``[B, T, 3 W + 1]``: log-softmax of noise
with a bonus of 6 on a true state sequence (random words, each state held 2 to 4 frames), so
the best path is clear, as with a trained acoustic model. Each search returns the best path of
every sequence; the table gives the median time, the states kept (summed over frames), whether
the best path's score equals the exact one, and the ratios.

* gtn_py exact: ``viterbi_align(graph, emissions)`` (the full dense sweep).
* gtn_py pruned: ``viterbi_align(..., search_beam=10, max_active=500)``.
* k2: ``k2.intersect_dense_pruned(graph, DenseFsaVec, search_beam=10, output_beam=10,
  min_active_states=30, max_active_states=500)`` then ``k2.shortest_path``.
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
STATES = 3
SEARCH_BEAM, MAX_ACTIVE = 10.0, 500


def word_loop(words: int) -> gtn_py.Graph:
    units = gtn_py.hmm_units(words, STATES)
    return gtn_py.decoding_graph(gtn_py.lexicon({w + 1: [w] for w in range(words)}, units))


def emissions(words: int, frames: int, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    scores = 0.5 * torch.randn(batch, frames, words * STATES + 1, generator=generator)
    for b in range(batch):
        truth: list[int] = []
        while len(truth) < frames:
            word = int(torch.randint(0, words, (1,), generator=generator))
            for state in range(STATES):
                truth += [1 + word * STATES + state] * int(torch.randint(2, 5, (1,), generator=generator))
        scores[b, torch.arange(frames), torch.tensor(truth[:frames])] += 6.0
    return scores.log_softmax(-1)


def k2_run(graph: gtn_py.Graph, em: torch.Tensor, repeats: int):
    if not K2_PYTHON.exists():
        return None, f"not available ({K2_PYTHON} does not exist; make test-k2 builds it)"
    host = {"src": graph.src, "dst": graph.dst, "ilabel": graph.ilabel, "weights": graph.weights,
            "start": graph.start_weights, "final": graph.final_weights, "emissions": em}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inputs.npz"
        np.savez(path, **{k: v.numpy() for k, v in host.items()})
        out = subprocess.run([str(K2_PYTHON), str(Path(__file__).with_name("k2_decode_timing.py")), str(path),
                              str(repeats), str(SEARCH_BEAM), str(MAX_ACTIVE)], capture_output=True, text=True)
    if out.returncode != 0:
        return None, "not available (" + (out.stderr.strip().splitlines() or ["failed"])[-1] + ")"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--words", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    opts = parser.parse_args()
    graph = word_loop(opts.words)
    em = emissions(opts.words, opts.frames, opts.batch)
    print(f"decoding B={opts.batch} T={opts.frames} through a {opts.words}-word loop ({graph.num_nodes} nodes, "
          f"{graph.num_arcs} arcs), CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
          f"{opts.repeats}")
    exact = gtn_py.viterbi_align(graph, em)
    exact_ms = 1000 * median_time(lambda: gtn_py.viterbi_align(graph, em), opts.repeats)
    pruned = gtn_py.viterbi_align(graph, em, search_beam=SEARCH_BEAM, max_active=MAX_ACTIVE)
    pruned_ms = 1000 * median_time(
        lambda: gtn_py.viterbi_align(graph, em, search_beam=SEARCH_BEAM, max_active=MAX_ACTIVE), opts.repeats)
    kept = gtn_py.dense_lattice(graph, em, search_beam=SEARCH_BEAM, max_active=MAX_ACTIVE).graph.num_nodes
    same = bool(torch.allclose(pruned.scores, exact.scores, rtol=1e-5))
    full_states = graph.num_nodes * (opts.frames + 1) * opts.batch
    print(f"  gtn_py exact   {exact_ms:9.1f} ms   states {full_states:>10}")
    print(f"  gtn_py pruned  {pruned_ms:9.1f} ms   states {kept:>10} (trimmed lattice)   best paths exact: {same}   "
          f"exact / pruned {exact_ms / pruned_ms:.1f}x")
    k2, why = k2_run(graph, em, opts.repeats)
    if k2 is None:
        print(f"  k2: {why}")
        return
    k2_same = bool(np.allclose(k2["scores"], exact.scores.numpy(), rtol=1e-4))
    print(f"  k2 pruned      {k2['ms']:9.1f} ms   states {k2['states']:>10} (its lattice)   best paths exact: "
          f"{k2_same}   (k2 {k2['k2']}); k2 / gtn_py pruned {k2['ms'] / pruned_ms:.2f}x")


if __name__ == "__main__":
    main()
