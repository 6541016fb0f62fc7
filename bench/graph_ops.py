"""Benchmarks of graph operations, gtn_py against OpenFst (pywrapfst).

    python bench/graph_ops.py [--repeats 7] [--only forward] [--threads 1]

Each case is a function returning table rows ``(case, gtn_py seconds, OpenFst seconds)``;
``CASES`` lists them and ``main`` prints one table with medians over ``--repeats`` runs
(after one warm-up run that also compiles numba kernels). Graphs are built, and converted
to OpenFst, before timing. OpenFst weights are costs (= -scores).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, List, Tuple, Union

import numpy as np
import pywrapfst as fst
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from compose_cases import compose_lexicon_bigram  # noqa: E402  (bench/compose_cases.py)
from timing import median_time  # noqa: E402  (bench/timing.py)

from gtn_py import Graph  # noqa: E402
from gtn_py.ops.compose import determinize, minimize  # noqa: E402
from gtn_py.ops.shortest import forward_score, prune, viterbi_score  # noqa: E402

Row = Tuple[str, float, Union[float, None]]
REPEATS = 7



# ---------------------------------------------------------------------- graphs
def lattice(levels: int = 1000, width: int = 10, seed: int = 0) -> Graph:
    """``levels`` layers of ``width`` nodes, each node linked to every node of the next layer
    (``levels * width**2`` arcs), starting in the first layer and accepting in the last."""
    gen = torch.Generator().manual_seed(seed)
    layer = torch.arange(width)
    level = torch.arange(levels)[:, None, None]
    src = (level * width + layer[None, :, None]).expand(levels, width, width).reshape(-1)
    dst = ((level + 1) * width + layer[None, None, :]).expand(levels, width, width).reshape(-1)
    num_nodes = (levels + 1) * width
    return Graph.from_arcs(num_nodes, src, dst, torch.randint(1, 30, (src.numel(),), generator=gen),
                           weights=-torch.rand(src.numel(), generator=gen) * 3,
                           start=list(range(width)), accept=list(range(num_nodes - width, num_nodes)))


def deep_dag(num_nodes: int = 20000, num_arcs: int = 100000, seed: int = 0) -> Graph:
    """A random DAG thousands of levels deep: a chain through all nodes plus random short
    forward arcs (span 1 to 20), in shuffled node numbering."""
    gen = torch.Generator().manual_seed(seed)
    extra = num_arcs - (num_nodes - 1)
    chain = torch.arange(num_nodes - 1)
    tail = torch.randint(0, num_nodes - 1, (extra,), generator=gen)
    head = (tail + torch.randint(1, 21, (extra,), generator=gen)).clamp(max=num_nodes - 1)
    rename = torch.randperm(num_nodes, generator=gen)
    src, dst = rename[torch.cat([chain, tail])], rename[torch.cat([chain + 1, head])]
    return Graph.from_arcs(num_nodes, src, dst, torch.randint(1, 30, (num_arcs,), generator=gen),
                           weights=-torch.rand(num_arcs, generator=gen) * 3,
                           start=[int(rename[0])], accept=[int(rename[-1])])


def word_list(num_words: int = 5000, num_letters: int = 26, seed: int = 0) -> Graph:
    """An acceptor of ``num_words`` random letter strings (3 to 8 letters), one path each from
    one start node, with random weights: non-deterministic (paths share first letters), and
    its trie has many equal suffixes for minimization to merge."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 9, num_words)
    num_arcs = int(lengths.sum())
    first = np.zeros(num_arcs, bool)
    first[np.cumsum(lengths) - lengths] = True
    src = np.where(first, 0, np.arange(num_arcs))  # node k + 1 is the end of arc k
    dst = np.arange(1, num_arcs + 1)
    weights = -np.round(rng.random(num_arcs) * 4) / 4  # few distinct values: suffixes can merge
    return Graph.from_arcs(num_arcs + 1, src, dst, rng.integers(1, num_letters + 1, num_arcs),
                           weights=torch.from_numpy(weights), start=[0], accept=np.cumsum(lengths).tolist(),
                           dtype=torch.float64)


def to_openfst(g: Graph, arc_type: str) -> fst.VectorFst:
    """The graph as an OpenFst machine; several start nodes get one new start state with
    epsilon arcs carrying their start weights."""
    f = fst.VectorFst(arc_type=arc_type)
    kind = f.weight_type()
    f.reserve_states(g.num_nodes + 1)
    for _ in range(g.num_nodes):
        f.add_state()
    starts = g.start_nodes.tolist()
    start_weights = g.start_weights.tolist()
    if len(starts) == 1 and start_weights[starts[0]] == 0.0:
        f.set_start(starts[0])
    else:
        s = f.add_state()
        f.set_start(s)
        for n in starts:
            f.add_arc(s, fst.Arc(0, 0, fst.Weight(kind, -start_weights[n]), n))
    finals = g.final_weights.tolist()
    for n in g.accept_nodes.tolist():
        f.set_final(n, fst.Weight(kind, -finals[n]))
    for src, dst, il, ol, w in zip(g.src.tolist(), g.dst.tolist(), g.ilabel.tolist(), g.olabel.tolist(),
                                   g.weights.tolist()):
        f.add_arc(src, fst.Arc(il, ol, fst.Weight(kind, -w), dst))
    return f


# ---------------------------------------------------------------------- cases
def _scores(name: str, graphs: List[Graph], repeats: int) -> List[Row]:
    """forward_score (log) and viterbi_score (tropical) of one graph or a batch of them,
    against OpenFst's shortestdistance in the log and standard arc types (looping over the
    graphs of a batch)."""
    g = graphs[0] if len(graphs) == 1 else Graph.batch(graphs)
    rows = []
    for score, arc_type in ((forward_score, "log"), (viterbi_score, "standard")):
        machines = [to_openfst(h, arc_type) for h in graphs]
        ours = median_time(lambda score=score: score(g), repeats)  # type: ignore[misc]
        theirs = median_time(lambda machines=machines: [fst.shortestdistance(f) for f in machines], repeats)
        rows.append((f"{score.__name__} {name}", ours, theirs))
    return rows


def scores_lattice(repeats: int) -> List[Row]:
    return _scores("lattice 1000x10 (100k arcs)", [lattice()], repeats)


def scores_lattice_batch(repeats: int) -> List[Row]:
    return _scores("lattice x32", [lattice(seed=i) for i in range(32)], repeats)


def scores_deep_dag(repeats: int) -> List[Row]:
    return _scores("deep DAG 20k nodes/100k arcs", [deep_dag()], repeats)


def scores_deep_dag_batch(repeats: int) -> List[Row]:
    return _scores("deep DAG x32", [deep_dag(seed=i) for i in range(32)], repeats)


def forward_backward_lattice(repeats: int) -> List[Row]:
    """forward_score with its backward (arc posteriors), against OpenFst's forward and
    reverse shortestdistance (what posteriors need there)."""
    g = lattice()
    f = to_openfst(g, "log")

    def ours() -> None:
        w = g.weights.detach().requires_grad_()
        forward_score(g.with_weights(w)).backward()

    theirs = median_time(lambda: (fst.shortestdistance(f), fst.shortestdistance(f, reverse=True)), repeats)
    return [("forward_score + backward, lattice", median_time(ours, repeats), theirs)]


def determinize_minimize_words(repeats: int) -> List[Row]:
    """determinize (tropical) of a 5000-word list, then minimize of the result, against
    OpenFst's determinize and minimize (which works in place, so each run minimizes a
    fresh copy; the copy is timed too)."""
    g = word_list()
    d = determinize(g)
    f = to_openfst(g, "standard")
    fd = fst.determinize(f)
    return [
        (f"determinize, 5000 words ({g.num_nodes} -> {d.num_nodes} states)",
         median_time(lambda: determinize(g), repeats), median_time(lambda: fst.determinize(f), repeats)),
        (f"minimize, their trie (-> {minimize(d).num_nodes} states)", median_time(lambda: minimize(d), repeats),
         median_time(lambda: fd.copy().minimize(), repeats)),
    ]


def prune_lattice(repeats: int) -> List[Row]:
    """prune with beam 5 (tropical, OpenFst's weight threshold) of the 1000x10 lattice, against
    OpenFst's prune (which returns a pruned copy). The kept states and arcs are printed for both
    (OpenFst's without the new start state and its epsilon arcs); they can differ by an arc or two
    whose score sits on the beam's edge, where float32 sums in other orders disagree."""
    g = lattice()
    f = to_openfst(g, "standard")
    ours, theirs = prune(g, 5.0), fst.prune(f, weight=5.0)
    start = theirs.start()
    their_arcs = sum(theirs.num_arcs(q) for q in theirs.states()) - theirs.num_arcs(start)
    return [(f"prune beam 5, lattice (kept {ours.num_nodes}/{ours.num_arcs}, OpenFst "
             f"{theirs.num_states() - 1}/{their_arcs})",
             median_time(lambda: prune(g, 5.0), repeats), median_time(lambda: fst.prune(f, weight=5.0), repeats))]


CASES: List[Callable[[int], List[Row]]] = [
    scores_lattice, scores_lattice_batch, scores_deep_dag, scores_deep_dag_batch, forward_backward_lattice,
    compose_lexicon_bigram, determinize_minimize_words, prune_lattice,
]


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed runs per case (median reported)")
    parser.add_argument("--only", default="", help="run only cases whose function name contains this")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'case':<48} {'gtn_py ms':>10} {'OpenFst ms':>11} {'ratio':>7}")
    for case in CASES:
        if args.only not in case.__name__:
            continue
        for name, ours, theirs in case(args.repeats):
            ratio = f"{ours / theirs:7.2f}" if theirs else "      -"
            other = f"{theirs * 1e3:11.2f}" if theirs else "          -"
            print(f"{name:<48} {ours * 1e3:10.2f} {other} {ratio}", flush=True)


if __name__ == "__main__":
    main()
