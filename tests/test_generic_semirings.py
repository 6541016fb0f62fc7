"""Semirings evaluated through their interface alone (no compiled kernels, no closed-form
derivatives): the entropy semiring and the k-max semiring against enumeration of the paths of
small random graphs, gradcheck, batches, dense lattices, -inf, and a semiring defined here, in
the test, that reproduces the log semiring's totals and gradients through the interface."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import logsumexp, paths
from strategies import graphs

import gtn_py as gtn
from gtn_py.semiring import Semiring, segment_logsumexp
from gtn_py.semiring import logsumexp as stable_logsumexp


def enumerated_entropy(g: gtn.Graph) -> float:
    scores = [s for _, s in paths(g) if s > -math.inf]
    if not scores:
        return math.nan
    total = logsumexp(scores)
    return -sum(math.exp(s - total) * (s - total) for s in scores)


def enumerated_best(g: gtn.Graph, k: int) -> list:
    scores = sorted((s for _, s in paths(g)), reverse=True)[:k]
    return scores + [-math.inf] * (k - len(scores))


def weighted_dag(weights: torch.Tensor) -> gtn.Graph:
    return gtn.Graph.from_arcs(4, [0, 0, 1, 1, 2, 0], [1, 2, 2, 3, 3, 3], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6],
                               weights, start=[0], accept=[3], dtype=torch.float64)


@settings(max_examples=80, deadline=None)
@given(graphs(max_nodes=5, max_arcs=8, acyclic=True))
def test_entropy_semiring_matches_enumeration(g):
    got = float(gtn.total_score(g, gtn.EntropySemiring()))
    want = enumerated_entropy(g)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-9)
        assert got == pytest.approx(float(gtn.path_entropy(g)), abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(graphs(max_nodes=5, max_arcs=8, acyclic=True), st.integers(1, 5))
def test_kmax_semiring_gives_the_k_best_path_scores(g, k):
    got = gtn.total_score(g, gtn.KMaxSemiring(k)).tolist()
    assert got == pytest.approx(enumerated_best(g, k), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(graphs(max_nodes=5, max_arcs=8, acyclic=True))
def test_kmax_of_one_is_the_tropical_total_and_node_distances_agree(g):
    assert float(gtn.total_score(g, gtn.KMaxSemiring(1))[0]) == pytest.approx(float(gtn.viterbi_score(g)), abs=1e-9)
    best_two = gtn.shortest_distance(g, gtn.KMaxSemiring(2))
    assert best_two.shape == (g.num_nodes, 2)
    assert torch.allclose(best_two[:, 0], gtn.shortest_distance(g, "tropical"))
    assert bool((best_two[:, 0] >= best_two[:, 1]).all())


def test_a_batch_gives_each_graph_its_own_total():
    one = gtn.string_graph([1, 2]).to(dtype=torch.float64)
    two = gtn.Graph.from_arcs(3, [0, 0, 1], [1, 2, 2], [1, 2, 3], [1, 2, 3], [math.log(0.3), math.log(0.7), 0.0],
                              start=[0], accept=[2], dtype=torch.float64)
    empty = gtn.Graph().to(dtype=torch.float64)
    entropy = gtn.total_score([one, two, empty], "entropy")
    assert entropy[0] == 0 and float(entropy[1]) == pytest.approx(-(0.3 * math.log(0.3) + 0.7 * math.log(0.7)))
    assert math.isnan(float(entropy[2]))  # no path, no distribution
    best = gtn.total_score([one, two, empty], gtn.KMaxSemiring(3))
    want = torch.tensor([[0.0, -math.inf, -math.inf], [math.log(0.7), math.log(0.3), -math.inf], [-math.inf] * 3],
                        dtype=torch.float64)
    assert torch.allclose(best, want)


def test_generic_semirings_are_differentiable():
    weights = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: gtn.total_score(weighted_dag(w), gtn.ENTROPY), (weights,))
    assert torch.autograd.gradcheck(lambda w: gtn.total_score(weighted_dag(w), gtn.KMaxSemiring(3)), (weights,))
    # the entropy semiring's gradient is path_entropy's (a closed form over posteriors)
    by_semiring, = torch.autograd.grad(gtn.total_score(weighted_dag(weights), gtn.ENTROPY), weights)
    by_posteriors, = torch.autograd.grad(gtn.path_entropy(weighted_dag(weights)), weights)
    assert torch.allclose(by_semiring, by_posteriors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_entropy_of_a_dense_lattice_with_impossible_arcs_is_finite(dtype):
    emissions = torch.randn(2, 7, 4, generator=torch.Generator().manual_seed(1), dtype=dtype).log_softmax(-1)
    emissions[:, :, 3] = -math.inf  # a label no frame can emit
    emissions.requires_grad_(True)
    targets = gtn.ctc_graph([[1, 2], [3]]).to(dtype=dtype)
    lattice = gtn.intersect_dense(gtn.ctc_graph([[1, 2], [2]]).to(dtype=dtype), emissions)
    entropy = gtn.total_score(lattice, gtn.ENTROPY)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(entropy, gtn.path_entropy(lattice), atol=tolerance)
    assert bool(torch.isfinite(entropy).all()) and bool((entropy > 0).all())
    grad, = torch.autograd.grad(entropy.sum(), emissions)
    assert bool(torch.isfinite(grad).all())
    nothing = gtn.total_score(gtn.intersect_dense(targets, emissions.detach()), gtn.ENTROPY)
    assert math.isnan(float(nothing[1]))  # label 3 is impossible: no path


class InterfaceLog(Semiring):
    """The log semiring written against the interface alone (no kernel id): the algorithms must
    evaluate it through lift/times/plus2/segment_plus and get the log semiring's results."""

    name = "interface-log"

    def plus(self, x, dim):
        return stable_logsumexp(x, dim)

    def segment_plus(self, values, segment, num_segments):
        return segment_logsumexp(values, segment, num_segments)


@settings(max_examples=40, deadline=None)
@given(graphs(max_nodes=5, max_arcs=8, acyclic=True))
def test_a_semiring_defined_outside_the_library_runs_through_the_interface(g):
    leaves = [t.clone().requires_grad_(True) for t in (g.weights, g.final_weights, g.start_weights)]
    ours = gtn.total_score(g.with_weights(*leaves), InterfaceLog())
    closed = gtn.total_score(g.with_weights(*leaves), gtn.LOG)
    assert torch.allclose(ours, closed, atol=1e-9)  # -inf where there is no path
    if float(closed.detach()) > -math.inf:  # gradients of arc, final and start weights: the posteriors
        for by_interface, by_closed_form in zip(torch.autograd.grad(ours, leaves, materialize_grads=True),
                                                torch.autograd.grad(closed, leaves, materialize_grads=True)):
            assert torch.allclose(by_interface, by_closed_form, atol=1e-9)


@pytest.mark.parametrize("semiring", [InterfaceLog(), gtn.ENTROPY, gtn.KMaxSemiring(2)], ids=str)
def test_nodes_no_path_reaches_pass_on_zero_gradients(semiring):
    # node 2 is reached by no path, node 3 reaches no accept node: every sum there is of -inf
    leaves = [torch.tensor([0.5, -0.25], dtype=torch.float64, requires_grad=True),
              torch.tensor([-math.inf, 0.0, 0.3, -math.inf], dtype=torch.float64, requires_grad=True),
              torch.tensor([0.0, -math.inf, -math.inf, -math.inf], dtype=torch.float64, requires_grad=True)]
    g = gtn.Graph.from_arcs(4, [0, 2], [1, 3], [1, 2], [1, 2], torch.zeros(2), start=[0], accept=[1],
                            dtype=torch.float64).with_weights(*leaves)
    total = gtn.total_score(g, semiring)
    grads = torch.autograd.grad(total.sum(), leaves, materialize_grads=True)
    assert all(bool(torch.isfinite(grad).all()) for grad in grads)
    assert grads[0][1] == 0 and grads[1][2] == 0 and grads[2][2] == 0


def test_what_the_interface_route_refuses():
    cyclic = gtn.closure(gtn.string_graph([1]).to(dtype=torch.float64))
    with pytest.raises(gtn.CyclicGraphError, match="acyclic"):
        gtn.total_score(cyclic, gtn.ENTROPY)
    g = weighted_dag(torch.zeros(6, dtype=torch.float64))
    emissions = torch.zeros(3, 7, dtype=torch.float64)
    for operation in (lambda: gtn.push(g, gtn.ENTROPY), lambda: gtn.remove_epsilon(g, gtn.KMaxSemiring(2)),
                      lambda: gtn.minimize(gtn.determinize(g), "entropy"),
                      lambda: gtn.dense_score(g, emissions, semiring="entropy")):
        with pytest.raises(gtn.ArgumentValueError, match="log or the tropical"):
            operation()
    with pytest.raises(gtn.ArgumentValueError, match="at least 1"):
        gtn.KMaxSemiring(0)
    with pytest.raises(gtn.ArgumentTypeError, match="int"):
        gtn.KMaxSemiring(2.0)  # type: ignore[arg-type]
