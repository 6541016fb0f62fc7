"""Search-time pruned dense intersection (token passing): without pruning it is the exact
Viterbi search and the full lattice; with pruning it keeps exactly the tokens an independent
reference search keeps; bad pruning arguments are typed errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import graphs

import gtn_py as gtn

NEG_INF = float("-inf")


def emissions_for(g: gtn.Graph, frames: int, seed: int) -> torch.Tensor:
    classes = int(g.ilabel.max()) + 1 if g.num_arcs else 1
    return torch.randn(1, frames, classes, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64).log_softmax(-1)


def untied(g: gtn.Graph, seed: int) -> gtn.Graph:
    """``g`` with tiny distinct offsets on its weights: which of two equal tokens a search keeps
    is arbitrary, so the comparison with the reference avoids ties."""
    generator = torch.Generator().manual_seed(seed)

    def jitter(values: torch.Tensor) -> torch.Tensor:
        return values + 1e-4 * torch.rand(values.shape, generator=generator, dtype=values.dtype)

    return gtn.Graph.from_tensors(g.src, g.dst, g.ilabel, g.olabel, jitter(g.weights), jitter(g.start_weights),
                                  jitter(g.final_weights))


def reference(g: gtn.Graph, emissions: torch.Tensor, search_beam: float, max_active: int | None):
    """Token passing written plainly: the kept (frame, node) tokens with their scores, and the
    best final score."""
    arcs = list(zip(g.src.tolist(), g.dst.tolist(), g.ilabel.tolist(), g.weights.tolist()))
    tokens = {n: w for n, w in enumerate(g.start_weights.tolist()) if w > NEG_INF}
    kept = []

    final = g.final_weights.tolist()

    def prune(candidates, last):
        """At the last frame tokens are ranked with their final weights."""
        rank = {n: s + (final[n] if last else 0.0) for n, s in candidates.items()}
        rank = {n: r for n, r in rank.items() if r > NEG_INF}
        if not rank:
            return {}
        best = max(rank.values())
        alive = sorted(((r, n) for n, r in rank.items() if r >= best - search_beam), reverse=True)
        if max_active is not None:
            alive = alive[:max_active]
        return {n: candidates[n] for _, n in alive}

    frames = emissions.shape[1]
    tokens = prune(tokens, frames == 0)
    kept.append(tokens)
    for t in range(frames):
        candidates: dict[int, float] = {}
        for n, s in tokens.items():
            for src, dst, label, w in arcs:
                if src == n:
                    score = s + w + float(emissions[0, t, label])
                    if score > NEG_INF and score > candidates.get(dst, NEG_INF):
                        candidates[dst] = score
        tokens = prune(candidates, t + 1 == frames)
        kept.append(tokens)
    best = max((s + final[n] for n, s in tokens.items()), default=NEG_INF)
    return kept, best


@settings(max_examples=40, deadline=None)
@given(graphs(acyclic=False, max_nodes=5, max_arcs=9), st.integers(0, 5), st.integers(0, 10_000))
def test_without_pruning_it_is_the_exact_search_and_the_full_lattice(g, frames, seed):
    g = g.to(dtype=torch.float64)
    em = emissions_for(g, frames, seed)
    exact = gtn.viterbi_align(g, em)
    searched = gtn.viterbi_align(g, em, search_beam=math.inf)
    torch.testing.assert_close(searched.scores, exact.scores)
    full = gtn.intersect_dense(g, em)
    lattice = gtn.intersect_dense(g, em, search_beam=math.inf)
    assert (lattice.num_nodes, lattice.num_arcs) == (full.num_nodes, full.num_arcs)
    if full.num_nodes:
        torch.testing.assert_close(gtn.forward_score(lattice), gtn.forward_score(full))
        torch.testing.assert_close(gtn.forward_score(gtn.intersect_dense(g, em, beam=1.0, search_beam=math.inf)),
                                   gtn.forward_score(gtn.intersect_dense(g, em, beam=1.0)))


@settings(max_examples=60, deadline=None)
@given(graphs(acyclic=False, max_nodes=6, max_arcs=12, num_labels=3), st.integers(1, 6), st.integers(0, 10_000),
       st.sampled_from([0.0, 0.5, 2.0, math.inf]), st.sampled_from([None, 1, 2, 3]))
def test_pruned_search_keeps_what_the_reference_keeps(g, frames, seed, search_beam, max_active):
    g = untied(g.to(dtype=torch.float64), seed)
    em = emissions_for(g, frames, seed)
    kept, best = reference(g, em, search_beam, max_active)
    searched = gtn.viterbi_align(g, em, search_beam=search_beam, max_active=max_active)
    assert float(searched.scores) == pytest.approx(best, abs=1e-9) or (best == NEG_INF and
                                                                       float(searched.scores) == NEG_INF)
    if best > NEG_INF:
        # the path's own score agrees with the scores it reports, and it ends in a kept token
        assert float(gtn.viterbi_score(searched.path)) == pytest.approx(best, abs=1e-9)
    lattice = gtn.dense_lattice(g, em, search_beam=search_beam, max_active=max_active)
    per_frame = torch.zeros(frames + 1, dtype=torch.long)
    for frame, node in zip(lattice.frame.tolist(), g.src[lattice.arc_map].tolist()):
        assert node in kept[frame]  # every lattice arc leaves a kept token
    if lattice.graph.num_nodes:
        levels = torch.bincount(lattice.frame, minlength=frames)
        per_frame[:frames] = levels
        # every kept lattice node is a kept token: no frame has more than max_active sources
        if max_active is not None:
            sources = {(f, n) for f, n in zip(lattice.frame.tolist(), g.src[lattice.arc_map].tolist())}
            assert all(sum(1 for f, _ in sources if f == t) <= max_active for t in range(frames))


def test_pruning_bounds_the_work_on_a_large_graph_and_keeps_the_best_path_here():
    """A 400-word loop of 3-state word models read by random emissions peaked on a true path:
    a beam of 8 and 200 active states keep under a tenth of the states and find the same best path."""
    generator = torch.Generator().manual_seed(0)
    words, states = 400, 3
    units = gtn.hmm_units(words, states)
    graph = gtn.decoding_graph(gtn.lexicon({w + 1: [w] for w in range(words)}, units))
    # A true path: random words, each of its states held 2 to 4 frames (state labels from 1).
    truth = []
    for word in torch.randint(0, words, (8,), generator=generator).tolist():
        for state in range(states):
            truth += [1 + word * states + state] * int(torch.randint(2, 5, (1,), generator=generator))
    frames = len(truth)
    em = torch.randn(1, frames, words * states + 1, generator=generator) * 0.5
    em[0, torch.arange(frames), torch.tensor(truth)] += 6.0
    em = em.log_softmax(-1)
    exact = gtn.viterbi_align(graph, em)
    pruned = gtn.viterbi_align(graph, em, search_beam=8.0, max_active=200)
    assert float(pruned.scores) == pytest.approx(float(exact.scores), rel=1e-6)
    lattice = gtn.dense_lattice(graph, em, search_beam=8.0, max_active=200)
    assert lattice.graph.num_nodes < 0.1 * graph.num_nodes * (frames + 1)


def test_scores_are_differentiable_and_bad_arguments_are_typed_errors():
    g = gtn.ctc_topology(3, dtype=torch.float64)
    em = torch.randn(2, 6, 4, dtype=torch.float64).log_softmax(-1).requires_grad_()
    exact = torch.autograd.grad(gtn.viterbi_align(g, em).scores.sum(), em)[0]
    searched = torch.autograd.grad(gtn.viterbi_align(g, em, search_beam=math.inf).scores.sum(), em)[0]
    torch.testing.assert_close(searched, exact)
    with pytest.raises(gtn.InvalidGraphError, match="max_active must be a whole number >= 1"):
        gtn.viterbi_align(g, em, max_active=0)
    with pytest.raises(gtn.WeightError, match="search_beam must be a score margin >= 0"):
        gtn.intersect_dense(g, em, search_beam=-1.0)
    bad = em.detach().clone()
    bad[0, 2, 1] = float("nan")
    with pytest.raises(gtn.WeightError, match="pruned search"):
        gtn.viterbi_align(g, bad, search_beam=1.0)
