"""Compiling a decoding graph: lexicon o grammar, determinized and minimized, gtn_py against
OpenFst (pywrapfst), same graphs, same run.

    python bench/compile.py [--words 2000] [--repeats 3]

The graphs (random, seed 0): ``--words`` words over 40 phones, pronunciations of 2 to 6
phones. L maps phones to words (the word on the first arc), each pronunciation closed by a
word-end disambiguation symbol ``#1`` back to the loop state, and passes the back-off symbol
``#0``. G is a back-off bigram acceptor: a unigram state with every word, a state per word
history with 5 successors and a ``#0`` back-off arc to the unigram state, a sentence-start
state with 20 words, final weights everywhere. Then ``LG = compose(L, G)``,
``determinize(LG)`` and ``minimize`` of that, in the tropical semiring, both over (input,
output) label pairs (OpenFst: ``EncodeMapper`` with labels, ``determinize``, ``minimize``,
decode). Prints each stage's median time and the states and arcs of each result in both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pywrapfst
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time  # noqa: E402

import gtn_py  # noqa: E402

PHONES = 40
SUCCESSORS, STARTS = 5, 20


def graphs(words: int, seed: int = 0) -> tuple[gtn_py.Graph, gtn_py.Graph]:
    """L (phones -> words) and G (a back-off bigram over words) as gtn_py graphs."""
    rng = np.random.default_rng(seed)
    word_end, backoff_in = PHONES + 1, PHONES + 2   # L's input disambiguation symbols
    backoff = words + 1                              # #0 among the words
    src, dst, il, ol = [], [], [], []
    nodes = 1
    for w in range(1, words + 1):
        phones = rng.integers(1, PHONES + 1, rng.integers(2, 7)).tolist()
        previous = 0
        for k, p in enumerate(phones):
            src.append(previous)
            dst.append(nodes)
            il.append(p)
            ol.append(w if k == 0 else 0)
            previous, nodes = nodes, nodes + 1
        src.append(previous)
        dst.append(0)
        il.append(word_end)
        ol.append(0)
    src.append(0)
    dst.append(0)
    il.append(backoff_in)
    ol.append(backoff)
    lexicon = gtn_py.Graph.from_arcs(nodes, src, dst, il, ol, start=[0], accept=[0], dtype=torch.float64)
    unigram = np.log(rng.dirichlet(np.ones(words)))
    start_state = words + 1
    src, dst, labels, weights = [], [], [], []
    for w in range(1, words + 1):  # unigram state 0 -> the history state of each word
        src.append(0)
        dst.append(w)
        labels.append(w)
        weights.append(unigram[w - 1])
    for h in list(range(1, words + 1)) + [start_state]:
        successors = rng.choice(words, STARTS if h == start_state else SUCCESSORS, replace=False) + 1
        for v in successors.tolist():
            src.append(h)
            dst.append(v)
            labels.append(v)
            weights.append(float(np.log(rng.uniform(0.05, 0.3))))
        src.append(h)
        dst.append(0)
        labels.append(backoff)
        weights.append(float(np.log(rng.uniform(0.2, 0.6))))
    final = np.log(rng.uniform(0.01, 0.1, words + 2))
    grammar = gtn_py.Graph.from_arcs(words + 2, src, dst, labels, labels, weights=weights, start=[start_state],
                                     final_weights=final.tolist(), dtype=torch.float64)
    return lexicon, grammar


def to_openfst(g: gtn_py.Graph) -> pywrapfst.VectorFst:
    f = pywrapfst.VectorFst()
    f.add_states(g.num_nodes)
    one = pywrapfst.Weight.one(f.weight_type())
    for a in g.arcs():
        f.add_arc(a.src, pywrapfst.Arc(a.ilabel, a.olabel, pywrapfst.Weight(f.weight_type(), -a.weight), a.dst))
    for n, w in enumerate(g.final_weights.tolist()):
        if w > -np.inf:
            f.set_final(n, pywrapfst.Weight(f.weight_type(), -w))
    f.set_start(int(g.start_nodes[0]))
    del one
    return f


def size(f) -> tuple[int, int]:
    if isinstance(f, gtn_py.Graph):
        return f.num_nodes, f.num_arcs
    return f.num_states(), sum(f.num_arcs(s) for s in f.states())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    lexicon, grammar = graphs(opts.words)
    lf, gf = to_openfst(lexicon), to_openfst(grammar)
    lf.arcsort("olabel")
    gf.arcsort("ilabel")
    print(f"compiling LG: {opts.words} words, L {size(lexicon)} and G {size(grammar)} (states, arcs), tropical, "
          f"CPU, median of {opts.repeats}")

    ours: dict[str, object] = {}
    theirs: dict[str, object] = {}

    def ours_compose():
        ours["compose"] = gtn_py.compose(lexicon, grammar)

    def ours_determinize():
        ours["determinize"] = gtn_py.determinize(ours["compose"], "tropical")

    def ours_minimize():
        ours["minimize"] = gtn_py.minimize(ours["determinize"], "tropical")

    def theirs_compose():
        theirs["compose"] = pywrapfst.compose(lf, gf)

    def theirs_determinize():
        mapper = pywrapfst.EncodeMapper(theirs["compose"].arc_type(), encode_labels=True)
        encoded = theirs["compose"].copy().encode(mapper)
        theirs["mapper"] = mapper
        theirs["determinize"] = pywrapfst.determinize(encoded)

    def theirs_minimize():
        minimal = theirs["determinize"].copy().minimize()
        theirs["minimize"] = minimal.decode(theirs["mapper"])

    total_ours = total_theirs = 0.0
    for stage, (mine, other) in {"compose": (ours_compose, theirs_compose),
                                 "determinize": (ours_determinize, theirs_determinize),
                                 "minimize": (ours_minimize, theirs_minimize)}.items():
        ms = 1000 * median_time(mine, opts.repeats)
        their_ms = 1000 * median_time(other, opts.repeats)
        total_ours += ms
        total_theirs += their_ms
        print(f"  {stage:12s} gtn_py {ms:9.1f} ms {str(size(ours[stage])):>18}   OpenFst {their_ms:9.1f} ms "
              f"{str(size(theirs[stage])):>18}   gtn_py / OpenFst {ms / their_ms:.2f}x")
    print(f"  {'all three':12s} gtn_py {total_ours:9.1f} ms   OpenFst {total_theirs:9.1f} ms   gtn_py / OpenFst "
          f"{total_ours / total_theirs:.2f}x")


if __name__ == "__main__":
    main()
