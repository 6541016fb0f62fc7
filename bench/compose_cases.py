"""Composition benchmark: a lexicon transducer (letters -> words) composed with a sparse word
bigram acceptor with epsilon backoff, gtn_py against OpenFst (pywrapfst).

Only the composition call is timed (median of ``repeats`` runs after a warm-up), on both
sides; OpenFst gets arc-sorted inputs (its ``compose`` needs them), gtn_py gets both
arc-sorted and shuffled inputs (it sorts a copy of the arc index itself). Run
``python bench/compose_cases.py``; ``bench/graph_ops.py`` lists
:func:`compose_lexicon_bigram` among its cases.
"""

from __future__ import annotations

import math
import os
import sys
from typing import List, Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from timing import median_time  # noqa: E402  (bench/timing.py)

from gtn_py import Graph  # noqa: E402
from gtn_py.ops.compose import compose  # noqa: E402
from gtn_py.ops.structure import arcsort  # noqa: E402

NEG_INF = float("-inf")
REPEATS = 7
Row = Tuple[str, float, float]


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
    return g.replace(src=g.src[perm], dst=g.dst[perm], ilabel=g.ilabel[perm], olabel=g.olabel[perm],
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



def compose_lexicon_bigram(repeats: int, num_words: int = 5000, followers: int = 20) -> List[Row]:
    """Rows ``(case, gtn_py seconds, OpenFst seconds)`` as ``bench/graph_ops.py`` prints them:
    arc-sorted inputs on both sides, then gtn_py on shuffled inputs (OpenFst needs sorted)."""
    import pywrapfst

    lexicon, grammar = lexicon_and_bigram(num_words, followers)
    fst_l, fst_g = to_openfst(lexicon), to_openfst(grammar)
    fst_l.arcsort("olabel")
    fst_g.arcsort("ilabel")
    theirs = median_time(lambda: pywrapfst.compose(fst_l, fst_g), repeats)
    sorted_inputs = arcsort(lexicon, "olabel"), arcsort(grammar, "ilabel")
    shuffled_inputs = shuffled(lexicon), shuffled(grammar)
    name = f"compose lexicon({num_words} words) o bigram"
    return [(f"{name}, arcsorted", median_time(lambda: compose(*sorted_inputs), repeats), theirs),
            (f"{name}, unsorted", median_time(lambda: compose(*shuffled_inputs), repeats), theirs)]


def main() -> None:
    lexicon, grammar = lexicon_and_bigram()
    ours = compose(lexicon, grammar)
    print(f"lexicon: {lexicon.num_nodes} nodes, {lexicon.num_arcs} arcs; bigram: {grammar.num_nodes} nodes, "
          f"{grammar.num_arcs} arcs; composition: {ours.num_nodes} nodes, {ours.num_arcs} arcs")
    for name, gtn_s, openfst_s in compose_lexicon_bigram(REPEATS):
        print(f"{name:<48} gtn_py {gtn_s * 1e3:8.2f} ms   OpenFst {openfst_s * 1e3:8.2f} ms   "
              f"ratio {gtn_s / openfst_s:5.2f}")


if __name__ == "__main__":
    main()
