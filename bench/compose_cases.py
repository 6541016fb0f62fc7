"""Composition benchmark: a lexicon transducer (letters -> words) composed with a sparse word
bigram acceptor with epsilon backoff, gtn_py against OpenFst (pywrapfst).

Only the composition call is timed, on both sides; OpenFst gets arc-sorted inputs (its
``compose`` needs them), gtn_py gets both arc-sorted and shuffled inputs (it sorts a copy of
the arc index itself). Run ``python bench/compose_cases.py`` or call :func:`run`.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from gtn_py import Graph
from gtn_py.ops.compose import compose
from gtn_py.ops.structure import arcsort

NEG_INF = float("-inf")


def lexicon_and_bigram(num_words: int = 5000, followers: int = 20, num_letters: int = 26,
                       seed: int = 0) -> Tuple[Graph, Graph]:
    """``L``: the closure of a union of word paths (letters 1..26 in, the word id out on the
    first arc, epsilons after) through one root state. ``G``: one state per word plus a
    backoff (unigram) state; each word state has ``followers`` bigram arcs and an epsilon
    backoff arc; the backoff state has an arc for every word."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 9, num_words)
    letters = rng.integers(1, num_letters + 1, int(lengths.sum()))
    # Word w's path: root -> interior nodes -> root. Interior nodes are numbered from 1.
    word_of_arc = np.repeat(np.arange(num_words), lengths)
    first = np.zeros(letters.shape[0], bool)
    first[np.cumsum(lengths) - lengths] = True
    last = np.zeros(letters.shape[0], bool)
    last[np.cumsum(lengths) - 1] = True
    interior = np.cumsum(~last)  # 1 + index of the interior node an arc enters
    src_l = np.where(first, 0, np.concatenate([[0], interior[:-1]]))
    dst_l = np.where(last, 0, interior)
    olabel_l = np.where(first, word_of_arc + 1, 0)
    weights_l = np.where(first, -np.log(2.0), 0.0)  # e.g. pronunciation probabilities
    num_l = int(interior.max()) + 1 if (~last).any() else 1
    lexicon = Graph.from_arcs(num_l, src_l, dst_l, letters, olabel_l, torch.from_numpy(weights_l), start=[0],
                              accept=[0], dtype=torch.float32)

    # G: state 0 is the backoff state, state w (1..num_words) follows word w.
    words = np.arange(1, num_words + 1)
    bigram_src = np.repeat(words, followers)
    bigram_dst = rng.integers(1, num_words + 1, bigram_src.shape[0])
    src_g = np.concatenate([bigram_src, words, np.zeros(num_words, np.int64)])
    dst_g = np.concatenate([bigram_dst, np.zeros(num_words, np.int64), words])
    labels_g = np.concatenate([bigram_dst, np.zeros(num_words, np.int64), words])
    weights_g = np.concatenate([np.log(rng.uniform(0.01, 0.05, bigram_src.shape[0])),
                                np.full(num_words, math.log(0.3)), np.log(rng.dirichlet(np.ones(num_words)))])
    grammar = Graph.from_arcs(num_words + 1, src_g, dst_g, labels_g, labels_g, torch.from_numpy(weights_g).float(),
                              start=[0], accept=words, dtype=torch.float32)
    return lexicon, grammar


def shuffled(g: Graph, seed: int = 1) -> Graph:
    """The same graph with its arcs in random order."""
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(g.num_arcs))
    return g._replace(src=g.src[perm], dst=g.dst[perm], ilabel=g.ilabel[perm], olabel=g.olabel[perm],
                      weights=g.weights[perm])


def to_openfst(g: Graph):
    """The graph as a pywrapfst ``standard`` FST (one start node with start weight 0)."""
    import pywrapfst

    f = pywrapfst.VectorFst(arc_type="standard")
    f.add_states(g.num_nodes)
    weight_type = f.weight_type()
    rows = zip(g.src.tolist(), g.dst.tolist(), g.ilabel.tolist(), g.olabel.tolist(), g.weights.tolist())
    for s, d, i, o, w in rows:
        f.add_arc(s, pywrapfst.Arc(i, o, pywrapfst.Weight(weight_type, -w), d))
    for n, w in enumerate(g.final_weights.tolist()):
        if w > NEG_INF:
            f.set_final(n, pywrapfst.Weight(weight_type, -w))
    (start,) = g.start_nodes.tolist()
    f.set_start(start)
    return f


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(repeats: int = 5, num_words: int = 5000, followers: int = 20) -> List[Dict[str, object]]:
    """Time the compose case; returns one row per implementation (seconds, best of ``repeats``)."""
    import pywrapfst

    lexicon, grammar = lexicon_and_bigram(num_words, followers)
    lexicon_sorted, grammar_sorted = arcsort(lexicon, "olabel"), arcsort(grammar, "ilabel")
    lexicon_shuffled, grammar_shuffled = shuffled(lexicon), shuffled(grammar)
    fst_l, fst_g = to_openfst(lexicon), to_openfst(grammar)
    fst_l.arcsort("olabel")
    fst_g.arcsort("ilabel")

    compose(lexicon_sorted, grammar_sorted)  # compile the kernels (cached on disk afterwards)
    ours = compose(lexicon_sorted, grammar_sorted)
    theirs = pywrapfst.compose(fst_l, fst_g)
    theirs_arcs = sum(theirs.num_arcs(s) for s in theirs.states())
    case = (f"lexicon({lexicon.num_nodes} nodes, {lexicon.num_arcs} arcs) "
            f"o bigram({grammar.num_nodes}, {grammar.num_arcs})")
    openfst_s = best_time(lambda: pywrapfst.compose(fst_l, fst_g), repeats)
    rows: List[Dict[str, object]] = [
        dict(case=case, impl="openfst (arcsorted)", seconds=openfst_s, nodes=theirs.num_states(), arcs=theirs_arcs)]
    for impl, (a, b) in (("gtn_py (arcsorted)", (lexicon_sorted, grammar_sorted)),
                         ("gtn_py (unsorted)", (lexicon_shuffled, grammar_shuffled))):
        seconds = best_time(lambda a=a, b=b: compose(a, b), repeats)
        rows.append(dict(case=case, impl=impl, seconds=seconds, nodes=ours.num_nodes, arcs=ours.num_arcs,
                         vs_openfst=seconds / openfst_s))
    return rows


def main() -> None:
    torch.set_num_threads(1)
    for row in run():
        ratio = f"  ({row['vs_openfst']:.2f}x OpenFst)" if "vs_openfst" in row else ""
        print(f"{row['case']}  {row['impl']:<22} {1e3 * float(row['seconds']):8.2f} ms  "  # type: ignore[arg-type]
              f"-> {row['nodes']} nodes, {row['arcs']} arcs{ratio}")


if __name__ == "__main__":
    main()
