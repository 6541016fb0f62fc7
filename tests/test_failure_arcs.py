"""Failure (phi) arcs in composition: against a direct reading of the failure semantics on
random graphs (every path enumerated), gradients by gradcheck, clear errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gtn_py as gtn

PHI = 9
NEG_INF = float("-inf")


@st.composite
def backoff_graphs(draw, max_nodes: int = 5, num_labels: int = 3):
    """A random acceptor over labels 1..num_labels with failure arcs (label PHI) that always go to
    a lower node (no cycle), any arcs (several with one label allowed), random finals."""
    n = draw(st.integers(1, max_nodes))
    weight = st.floats(-2.0, 0.5, allow_nan=False).map(lambda x: round(x, 3))
    src, dst, labels, weights = [], [], [], []
    for _ in range(draw(st.integers(0, 3 * n))):
        src.append(draw(st.integers(0, n - 1)))
        dst.append(draw(st.integers(0, n - 1)))
        labels.append(draw(st.integers(1, num_labels)))
        weights.append(draw(weight))
    for node in range(1, n):
        if draw(st.booleans()):
            src.append(node)
            dst.append(draw(st.integers(0, node - 1)))
            labels.append(PHI)
            weights.append(draw(weight))
    final = [draw(st.one_of(st.just(NEG_INF), weight)) for _ in range(n)]
    start = draw(st.integers(0, n - 1))
    return gtn.Graph.from_arcs(n, src, dst, labels, labels, weights=weights, start=[start],
                               final_weights=final, dtype=torch.float64)


def _arcs(g: gtn.Graph):
    return list(zip(g.src.tolist(), g.dst.tolist(), g.ilabel.tolist(), g.weights.tolist()))


def failure_scores(g: gtn.Graph, string, semiring: str) -> float:
    """The total (log) or best (tropical) score of ``string`` under failure semantics, by
    enumerating every path: a label with an arc at the node takes one of those arcs; without,
    the failure arc is taken and the label tried at its end; finals through failure arcs too."""
    arcs = _arcs(g)
    start = g.start_weights.tolist()
    final = g.final_weights.tolist()

    def final_through(node):
        score = 0.0
        while final[node] == NEG_INF:
            phi = [a for a in arcs if a[0] == node and a[2] == PHI]
            if not phi:
                return NEG_INF
            score += phi[0][3]
            node = phi[0][1]
        return score + final[node]

    def paths(node, rest, score):
        if not rest:
            yield score + final_through(node)
            return
        label = rest[0]
        matching = [a for a in arcs if a[0] == node and a[2] == label]
        if matching:
            for _, dst, _, w in matching:
                yield from paths(dst, rest[1:], score + w)
            return
        phi = [a for a in arcs if a[0] == node and a[2] == PHI]
        if phi:
            yield from paths(phi[0][1], rest, score + phi[0][3])

    scores = [s for q, w in enumerate(start) if w > NEG_INF for s in paths(q, list(string), w)]
    scores = [s for s in scores if s > NEG_INF]
    if not scores:
        return NEG_INF
    if semiring == "tropical":
        return max(scores)
    peak = max(scores)
    return peak + math.log(sum(math.exp(s - peak) for s in scores))


@settings(max_examples=60, deadline=None)
@given(backoff_graphs())
def test_composition_with_failure_arcs_scores_every_string_as_the_semantics_say(g):
    for length in range(4):
        for string in itertools.product([1, 2, 3], repeat=length):
            composed = gtn.compose(gtn.string_graph(list(string), dtype=torch.float64), g, phi=PHI)
            for semiring, score in (("log", gtn.forward_score), ("tropical", gtn.viterbi_score)):
                want = failure_scores(g, string, semiring)
                got = float(score(composed)) if composed.num_nodes else NEG_INF
                assert got == pytest.approx(want, abs=1e-9), (string, semiring)


def test_a_batch_of_strings_and_a_transducer_on_the_left():
    """A backoff bigram over words 1..3 (unigram node 0, history nodes 1..3); a lexicon maps
    letters 4, 5 to words; a batch of strings composes pairwise."""
    src = [0, 0, 0, 1, 1, 2, 1, 2, 3]
    dst = [1, 2, 3, 2, 3, 1, 0, 0, 0]
    labels = [1, 2, 3, 2, 3, 1, PHI, PHI, PHI]
    weights = [-1.0, -1.2, -1.5, -0.3, -0.9, -0.4, -0.7, -0.2, -0.1]
    lm = gtn.Graph.from_arcs(4, src, dst, labels, labels, weights=weights, start=[0],
                             final_weights=[NEG_INF, -0.5, -0.6, -0.8], dtype=torch.float64)
    strings = [[1, 2, 3], [3, 3], [2, 1, 1]]
    batch = gtn.compose(gtn.Graph.batch([gtn.string_graph(s, dtype=torch.float64) for s in strings]), lm, phi=PHI)
    want = [failure_scores(lm, s, "log") for s in strings]
    torch.testing.assert_close(gtn.forward_score(batch), torch.tensor(want, dtype=torch.float64))
    # "1 2 3" by hand: -1.0 (1 at the unigram node), -0.3 (2 after 1), 3 after 2: back off -0.2,
    # then -1.5 (3 at the unigram node), final of node 3: -0.8.
    assert want[0] == pytest.approx(-1.0 - 0.3 - 0.2 - 1.5 - 0.8)
    spell = gtn.Graph.from_arcs(1, [0, 0], [0, 0], [4, 5], [1, 3], start=[0], accept=[0], dtype=torch.float64)
    words = gtn.project_output(gtn.compose(gtn.compose(gtn.string_graph([5, 4], dtype=torch.float64), spell),
                                           lm, phi=PHI))
    assert float(gtn.forward_score(words)) == pytest.approx(failure_scores(lm, [3, 1], "log"))


def test_gradients_reach_the_failure_arcs_and_finals():
    lm = gtn.Graph.from_arcs(3, [0, 0, 1, 1, 2], [1, 2, 2, 0, 0], [1, 2, 2, PHI, PHI], [1, 2, 2, PHI, PHI],
                             weights=[-1.0, -2.0, -0.5, -0.3, -0.4], start=[0],
                             final_weights=[-1.0, NEG_INF, NEG_INF], dtype=torch.float64)
    weights = lm.weights.clone().requires_grad_()
    final = lm.final_weights.clone().requires_grad_()

    def total(w, f):
        g = gtn.Graph.from_tensors(lm.src, lm.dst, lm.ilabel, lm.olabel, w, lm.start_weights, f)
        strings = gtn.Graph.batch([gtn.string_graph(s, dtype=torch.float64) for s in ([1, 1], [1, 2], [2, 1])])
        return gtn.forward_score(gtn.compose(strings, g, phi=PHI)).sum()

    assert torch.autograd.gradcheck(total, (weights, final))
    total(weights, final).backward()
    assert float(weights.grad[3]) > 0 and float(weights.grad[4]) > 0  # both failure arcs used


def test_failure_arc_errors_name_the_problem():
    one = gtn.string_graph([1])
    two_phis = gtn.Graph.from_arcs(3, [0, 0], [1, 2], [PHI, PHI], [PHI, PHI], start=[0], accept=[1, 2])
    with pytest.raises(gtn.InvalidGraphError, match="node 0 has two failure arcs"):
        gtn.compose(one, two_phis, phi=PHI)
    cycle = gtn.Graph.from_arcs(2, [0, 1], [1, 0], [PHI, PHI], [PHI, PHI], start=[0], accept=[1])
    with pytest.raises(gtn.InvalidGraphError, match="form a cycle"):
        gtn.compose(one, cycle, phi=PHI)
    with pytest.raises(gtn.LabelError, match="writes the failure label"):
        gtn.compose(gtn.string_graph([PHI]), one, phi=PHI)
    with pytest.raises(gtn.LabelError, match="epsilon"):
        gtn.compose(one, one, phi=0)
    writes = gtn.Graph.from_arcs(2, [0], [1], [PHI], [3], start=[0], accept=[1])
    with pytest.raises(gtn.LabelError, match="writes 3"):
        gtn.compose(one, writes, phi=PHI)


@settings(max_examples=60, deadline=None)
@given(backoff_graphs())
def test_removing_failure_arcs_keeps_every_strings_score(g):
    """remove_failure_arcs: an ordinary graph scoring every string as the failure semantics do."""
    plain = gtn.remove_failure_arcs(g, PHI)
    assert not bool((plain.ilabel == PHI).any())
    for length in range(4):
        for string in itertools.product([1, 2, 3], repeat=length):
            composed = gtn.compose(gtn.string_graph(list(string), dtype=torch.float64), plain)
            got = float(gtn.forward_score(composed)) if composed.num_nodes else NEG_INF
            assert got == pytest.approx(failure_scores(g, string, "log"), abs=1e-9), string


def test_a_label_matched_halfway_down_the_chain_is_not_taken_further_down():
    """Node 2 backs off to 1, 1 to 0; label 1 is read at nodes 1 and 0, label 2 only at 0: from
    node 2, label 1 takes node 1's arc (one back-off), label 2 node 0's (two)."""
    g = gtn.Graph.from_arcs(3, [2, 1, 1, 0, 0], [1, 0, 0, 0, 0], [PHI, PHI, 1, 1, 2], [PHI, PHI, 1, 1, 2],
                            weights=[-0.1, -0.2, -1.0, -3.0, -2.0], start=[2], accept=[0, 1, 2], dtype=torch.float64)
    plain = gtn.remove_failure_arcs(g, PHI)
    for string in ([1], [2], [1, 1], [2, 1]):
        composed = gtn.compose(gtn.string_graph(string, dtype=torch.float64), plain)
        assert float(gtn.forward_score(composed)) == pytest.approx(failure_scores(g, string, "log"))
    from_two = sorted((int(i), round(float(w), 6)) for s_, i, w in zip(plain.src, plain.ilabel, plain.weights)
                      if int(s_) == 2)
    assert from_two == [(1, -1.1), (2, -2.3)]


@settings(max_examples=30, deadline=None)
@given(backoff_graphs(), st.integers(1, 3), st.integers(0, 10_000))
def test_dense_intersection_with_a_back_off_graph(g, frames, seed):
    """dense_score of the expanded graph = log-sum over every frame labelling of its emission
    score plus the failure semantics' score of the labels read."""
    emissions = torch.randn(frames, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    emissions[:, 0] = NEG_INF  # label 0 is no word here
    want = []
    for string in itertools.product([1, 2, 3], repeat=frames):
        score = failure_scores(g, string, "log")
        if score > NEG_INF:
            want.append(score + float(sum(emissions[t, v] for t, v in enumerate(string))))
    expected = torch.logsumexp(torch.tensor(want, dtype=torch.float64), 0) if want else torch.tensor(NEG_INF)
    got = gtn.dense_score(gtn.remove_failure_arcs(g, PHI), emissions)
    assert float(got) == pytest.approx(float(expected), abs=1e-9)


def test_removing_failure_arcs_is_differentiable():
    lm = gtn.Graph.from_arcs(3, [0, 0, 1, 1, 2], [1, 2, 2, 0, 0], [1, 2, 2, PHI, PHI], [1, 2, 2, PHI, PHI],
                             weights=[-1.0, -2.0, -0.5, -0.3, -0.4], start=[1],
                             final_weights=[-1.0, NEG_INF, NEG_INF], dtype=torch.float64)
    weights = lm.weights.clone().requires_grad_()
    final = lm.final_weights.clone().requires_grad_()
    emissions = torch.randn(3, 4, dtype=torch.float64)

    def total(w, f):
        g = gtn.Graph.from_tensors(lm.src, lm.dst, lm.ilabel, lm.olabel, w, lm.start_weights, f)
        return gtn.dense_score(gtn.remove_failure_arcs(g, PHI), emissions)

    assert torch.autograd.gradcheck(total, (weights, final))


# ---------------------------------------------------------------------- in the pruned dense search
@settings(max_examples=80, deadline=None)
@given(backoff_graphs(), st.integers(0, 4), st.integers(0, 2**31 - 1))
def test_dense_search_takes_failure_arcs_as_their_removal_does(g, frames, seed):
    """Dense intersection with ``phi`` (the failure arcs taken by the search, on the fly) gives
    the lattice of the graph whose failure arcs are removed: the same totals and gradients, and
    the same best paths, for one graph shared by two sequences."""
    generator = torch.Generator().manual_seed(seed)
    emissions = torch.randn(2, frames, 4, generator=generator, dtype=torch.float64).log_softmax(-1)
    lengths = [frames, max(frames - 1, 0)]
    weights = g.weights.detach().clone().requires_grad_()
    on_the_fly = gtn.forward_score(gtn.intersect_dense(g.replace(weights=weights), emissions, lengths, phi=PHI))
    removed_weights = g.weights.detach().clone().requires_grad_()
    removed = gtn.dense_score(gtn.remove_failure_arcs(g.replace(weights=removed_weights), PHI), emissions, lengths)
    torch.testing.assert_close(on_the_fly, removed)
    if bool(torch.isfinite(removed).any()):
        finite = torch.isfinite(removed)
        grad, = torch.autograd.grad(on_the_fly[finite].sum(), weights)
        want, = torch.autograd.grad(removed[finite].sum(), removed_weights)
        torch.testing.assert_close(grad, want)
    best = gtn.viterbi_align(g, emissions, lengths, phi=PHI)
    exact = gtn.viterbi_align(gtn.remove_failure_arcs(g, PHI), emissions, lengths)
    torch.testing.assert_close(best.scores, exact.scores)
    # the path graph carries the failure arcs' weights: its score is the alignment's
    torch.testing.assert_close(gtn.viterbi_score(best.path), best.scores)
    # pruning keeps a path no better than the exact one
    pruned = gtn.viterbi_align(g, emissions, lengths, search_beam=0.5, max_active=2, phi=PHI)
    assert bool((pruned.scores <= best.scores + 1e-9).all())


def test_dense_search_with_a_back_off_model():
    """A bigram read from an ARPA file, its back-off arcs taken by the search: the best path of
    emissions that spell a sentence is that sentence, scored as the failure-free graph scores it."""
    arpa = ("\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-1.0 </s>\n-99 <s> -0.5\n-0.7 a -0.3\n-0.9 b -0.2\n\n"
            "\\2-grams:\n-0.1 <s> a\n-0.2 a b\n\n\\end\\\n")
    model = gtn.read_arpa(arpa, dtype=torch.float64)
    num_labels = max(model.symbols) + 1
    spelled = [model.symbols.index(w) if isinstance(model.symbols, list) else
               next(k for k, v in model.symbols.items() if v == w) for w in ("a", "b", "a")]
    emissions = torch.full((3, num_labels), -20.0, dtype=torch.float64)
    emissions[torch.arange(3), torch.tensor(spelled)] = 0.0
    graph = model.graph
    best = gtn.viterbi_align(graph, emissions, phi=model.phi)
    assert best.labels.tolist() == spelled
    exact = gtn.viterbi_align(gtn.remove_failure_arcs(graph, model.phi), emissions)
    assert float(best.scores) == pytest.approx(float(exact.scores))


def test_dense_search_refuses_a_phi_label_elsewhere():
    g = gtn.Graph.from_arcs(2, [0, 1], [1, 0], [1, 7], weights=[0.0, -1.0], start=[0], accept=[1])
    with pytest.raises(gtn.LabelError, match="ilabel 7 has no emission column"):
        gtn.viterbi_align(g, torch.zeros(2, 3), phi=9)
    with pytest.raises(gtn.LabelError, match="epsilon"):
        gtn.viterbi_align(g, torch.zeros(2, 8), phi=0)
