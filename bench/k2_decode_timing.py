"""k2's pruned decoding timings, as JSON, run with the Python 3.10 k2 environment's interpreter:
``python bench/k2_decode_timing.py INPUTS.npz REPEATS SEARCH_BEAM MAX_ACTIVE`` (bench/decode.py
writes the graph's arcs, start and final weights and the emissions [B, T, V]). The graph becomes
a k2 Fsa (its start node renumbered 0, final weights as arcs to a final state); times
``intersect_dense_pruned`` (output beam = search beam, min active 30) + ``shortest_path`` and
returns the best paths' scores and the lattice's state count."""

import json
import statistics
import sys
import time

import k2
import numpy as np
import torch


def fsa_of(data) -> k2.Fsa:
    src, dst, label, score = data["src"], data["dst"], data["ilabel"], data["weights"]
    start, final = data["start"], data["final"]
    n = start.shape[0]
    first = int(np.flatnonzero(start > -np.inf)[0])
    order = np.concatenate([[first], np.delete(np.arange(n), first)])
    new_id = np.empty(n, np.int64)
    new_id[order] = np.arange(n)
    finals = np.flatnonzero(final > -np.inf)
    rows = np.concatenate([
        np.stack([new_id[src], new_id[dst], label, np.zeros_like(src)], 1),
        np.stack([new_id[finals], np.full_like(finals, n), np.full_like(finals, -1), np.zeros_like(finals)], 1)])
    scores = np.concatenate([score, final[finals]]).astype(np.float32)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    scores_sorted = scores[np.argsort(np.concatenate([new_id[src], new_id[finals]]), kind="stable")]
    text = "\n".join(f"{a} {b} {c} {s:.6f}" for (a, b, c, _), s in zip(rows.tolist(), scores_sorted.tolist()))
    return k2.Fsa.from_str(text + f"\n{n}", acceptor=True)


def main() -> None:
    data = dict(np.load(sys.argv[1]))
    repeats, search_beam, max_active = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    graph = fsa_of(data)
    em = torch.from_numpy(data["emissions"])
    batch, frames, _ = em.shape
    segments = torch.tensor([[b, 0, frames] for b in range(batch)], dtype=torch.int32)
    graphs = k2.create_fsa_vec([graph] * batch)

    def step():
        dense = k2.DenseFsaVec(em, segments)
        lattice = k2.intersect_dense_pruned(graphs, dense, search_beam=search_beam, output_beam=search_beam,
                                            min_active_states=30, max_active_states=max_active)
        best = k2.shortest_path(lattice, use_double_scores=True)
        return lattice, best.get_tot_scores(use_double_scores=True, log_semiring=False)

    lattice, scores = step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    version = getattr(k2, "__version__", getattr(k2, "__dev_version__", "?"))
    print(json.dumps({"ms": 1000 * statistics.median(times), "k2": version, "scores": scores.tolist(),
                      "states": int(lattice.shape[0] and lattice.arcs.num_elements() and
                                    lattice.arcs.shape().tot_size(1))}))


if __name__ == "__main__":
    main()
