"""Decoding with a back-off trigram language model: its failure (phi) arcs taken by gtn_py's
search as it goes, against the same model with the failure arcs removed beforehand, same run.

    python bench/backoff.py [--repeats 3] [--words 1000] [--frames 60] [--batch 8]

The model (random, seed 0): an ARPA trigram over ``--words`` words, read by ``read_arpa`` into
an acceptor whose back-off arcs are failure arcs: every word a unigram, 20 successors per word
as bigrams, 5 successors for one bigram history in 10 as trigrams, random log-probabilities and
back-off weights. The emissions ``[B, T, words + 1]`` score one word per frame (every arc of the
model reads one frame): log-softmax of noise with a bonus of 6 on a word sequence drawn from
the bigrams, so the best path is clear but not given. Each search returns the best path of
every sequence; the table gives the median time, the graph searched and whether the best paths'
scores agree.

* on the fly: ``viterbi_align(model.graph, emissions, phi=model.phi, search_beam=8, max_active=200)``.
* removed: ``remove_failure_arcs(model.graph, model.phi)`` (timed apart: once per model), then
  ``viterbi_align(that, emissions, search_beam=8, max_active=200)``.

Both searches propose the same (token, word) pairs, so they find the same paths; what differs is
the graph held (and built once). ``--exact`` also runs the search without pruning (slow: every
node at every frame reads every word) and says whether the pruned best paths are the exact ones.

k2 has no failure arcs in its dense intersection (its recipes approximate back-off by epsilon
arcs), so it has no column here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time  # noqa: E402

import gtn_py  # noqa: E402

SEARCH_BEAM, MAX_ACTIVE = 8.0, 200
SUCCESSORS, TRIGRAM_SHARE, TRIGRAM_SUCCESSORS = 20, 10, 5


def trigram_arpa(words: int, rng: np.random.Generator) -> tuple[str, dict[int, np.ndarray]]:
    """ARPA text of a random trigram model, and each word's bigram successors (word ids)."""
    names = [f"w{i}" for i in range(words)]
    successors = {i: rng.choice(words, SUCCESSORS, replace=False) for i in range(words)}
    logp = lambda: f"{-rng.uniform(0.3, 3.0):.4f}"  # noqa: E731
    backoff = lambda: f"{-rng.uniform(0.05, 1.0):.4f}"  # noqa: E731
    unigrams = [f"{logp()} </s>", f"-99 <s> {backoff()}"] + [f"{logp()} {n} {backoff()}" for n in names]
    bigrams = [f"{logp()} <s> {names[j]}" for j in range(min(words, 50))]
    trigrams = []
    for i in range(words):
        for j in successors[i]:
            history = i * words + j
            if history % TRIGRAM_SHARE == 0:
                bigrams.append(f"{logp()} {names[i]} {names[j]} {backoff()}")
                for k in rng.choice(words, TRIGRAM_SUCCESSORS, replace=False):
                    trigrams.append(f"{logp()} {names[i]} {names[j]} {names[k]}")
            else:
                bigrams.append(f"{logp()} {names[i]} {names[j]}")
    text = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", f"ngram 3={len(trigrams)}", "",
            "\\1-grams:", *unigrams, "", "\\2-grams:", *bigrams, "", "\\3-grams:", *trigrams, "", "\\end\\", ""]
    return "\n".join(text), successors


def emissions(successors: dict[int, np.ndarray], labels: dict[str, int], num_columns: int, frames: int,
              batch: int, rng: np.random.Generator) -> torch.Tensor:
    scores = 0.5 * torch.from_numpy(rng.standard_normal((batch, frames, num_columns)).astype(np.float32))
    for b in range(batch):
        word = int(rng.integers(len(successors)))
        for t in range(frames):
            scores[b, t, labels[f"w{word}"]] += 6.0
            word = int(rng.choice(successors[word]))
    return scores.log_softmax(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--words", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--exact", action="store_true", help="also search without pruning, for the best scores")
    opts = parser.parse_args()
    rng = np.random.default_rng(0)
    text, successors = trigram_arpa(opts.words, rng)
    model = gtn_py.read_arpa(text)
    labels = {word: label for label, word in model.symbols.items()}
    em = emissions(successors, labels, max(model.symbols) + 1, opts.frames, opts.batch, rng)
    graph = model.graph
    print(f"decoding B={opts.batch} T={opts.frames} with a back-off trigram over {opts.words} words "
          f"({graph.num_nodes} nodes, {graph.num_arcs} arcs of which {int((graph.ilabel == model.phi).sum())} "
          f"back-off), CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {opts.repeats}")
    search = dict(search_beam=SEARCH_BEAM, max_active=MAX_ACTIVE)
    fly = gtn_py.viterbi_align(graph, em, phi=model.phi, **search)
    fly_ms = 1000 * median_time(lambda: gtn_py.viterbi_align(graph, em, phi=model.phi, **search), opts.repeats)
    remove_ms = 1000 * median_time(lambda: gtn_py.remove_failure_arcs(graph, model.phi), opts.repeats)
    removed = gtn_py.remove_failure_arcs(graph, model.phi)
    flat = gtn_py.viterbi_align(removed, em, **search)
    flat_ms = 1000 * median_time(lambda: gtn_py.viterbi_align(removed, em, **search), opts.repeats)
    same = bool(torch.allclose(fly.scores, flat.scores, rtol=1e-5))
    print(f"  on the fly      {fly_ms:9.1f} ms   graph {graph.num_arcs:>9} arcs")
    print(f"  removed         {flat_ms:9.1f} ms   graph {removed.num_arcs:>9} arcs   (+ {remove_ms:.1f} ms to remove "
          f"the failure arcs, once per model)   same best paths: {same}")
    print(f"  removed / on the fly: search {flat_ms / fly_ms:.2f}x, graph {removed.num_arcs / graph.num_arcs:.1f}x")
    if opts.exact:
        exact = gtn_py.viterbi_align(graph, em, phi=model.phi)
        equal = int(torch.isclose(fly.scores, exact.scores, rtol=1e-5).sum())
        print(f"  pruned best paths equal to the exact ones: {equal} of {opts.batch}; mean score lost "
              f"{float((exact.scores - fly.scores).mean()):.3f}")

if __name__ == "__main__":
    main()
