"""The k2 backend gives the native totals and gradients: shortest-distance totals
(k2_total_score vs total_score) and dense intersection totals (dense_score with backend="k2" vs native)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracle import total
from strategies import graphs

from gtn_py import CyclicGraphError, Graph, LogSemiring
from gtn_py.k2 import k2_total_score
from gtn_py.ops.dense import dense_score
from gtn_py.ops.shortest import total_score

NEG_INF = float("-inf")
SEMIRINGS = ["log", "tropical", LogSemiring(beta=2.5)]
TOL = dict(rtol=1e-4, atol=1e-4)  # k2 keeps scores in float32


def leaf_weights(g: Graph, noise: torch.Generator | None = None) -> Graph:
    """``g`` with arc, start and final weights as fresh leaves requiring grad (optionally
    jittered so that the tropical best path is unique and its gradient well defined)."""
    def leaf(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clone()
        if noise is not None:
            t = t + 1e-2 * torch.rand(t.shape, generator=noise, dtype=t.dtype)
        return t.requires_grad_(True)
    return g.with_weights(leaf(g.weights), final_weights=leaf(g.final_weights),
                          start_weights=leaf(g.start_weights))


def grads(value: torch.Tensor, g: Graph, *extra: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of ``value.sum()`` w.r.t. the graph's weights (and ``extra`` tensors); zeros
    where the weight did not take part."""
    inputs = [g.weights, g.start_weights, g.final_weights, *extra]
    got = torch.autograd.grad(value.sum(), inputs, allow_unused=True)
    return [torch.zeros_like(x) if d is None else d for x, d in zip(inputs, got)]


def assert_same_totals_and_grads(got: torch.Tensor, want: torch.Tensor, g: Graph, *extra: torch.Tensor) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, **TOL)
    finite = torch.isfinite(want)
    if bool(finite.any()):
        for d_got, d_want in zip(grads(got[finite], g, *extra), grads(want[finite], g, *extra)):
            assert not torch.isnan(d_got).any()
            torch.testing.assert_close(d_got, d_want, **TOL)


# ---------------------------------------------------------------------- shortest-distance totals
@given(graphs(), st.sampled_from(["log", "tropical"]))
def test_totals_match_the_oracle(g, semiring):
    want = total(g, semiring)
    got = k2_total_score(g, semiring)
    assert got.dim() == 0 and got.dtype == torch.float64
    assert math.isclose(got.item(), want, rel_tol=1e-5, abs_tol=1e-5) or got.item() == want == NEG_INF


@given(st.lists(graphs(max_nodes=5, max_arcs=8), min_size=1, max_size=4), st.sampled_from(SEMIRINGS),
       st.integers(0, 2**31 - 1))
def test_totals_and_gradients_match_native(gs, semiring, seed):
    batch = leaf_weights(Graph.batch(gs), torch.Generator().manual_seed(seed))
    # Through the public dispatch: total_score(..., backend="k2") is k2_total_score.
    assert_same_totals_and_grads(total_score(batch, semiring, backend="k2"), total_score(batch, semiring), batch)


@given(graphs(dtype=torch.float32), st.sampled_from(["log", "tropical"]))
def test_float32_single_graph(g, semiring):
    g = leaf_weights(g, torch.Generator().manual_seed(0))
    got, want = k2_total_score(g, semiring), total_score(g, semiring)
    assert got.dim() == 0
    assert_same_totals_and_grads(got.reshape(1), want.reshape(1), g)


def test_list_of_graphs_gives_a_batch_of_totals():
    g = Graph.from_arcs(2, [0, 0], [1, 1], [1, 2], weights=[0.0, 0.0], start=[0], accept=[1])
    got = k2_total_score([g, g, g])
    torch.testing.assert_close(got, torch.full((3,), math.log(2.0)))


@pytest.mark.parametrize("semiring", ["log", "tropical"])
def test_impossible_graphs_score_minus_inf_with_zero_gradients(semiring):
    no_accept = Graph.from_arcs(3, [0, 1], [1, 2], [1, 2], weights=[0.5, 0.25], start=[0], accept=[])
    dead_end = Graph.from_arcs(3, [0, 0], [1, 2], [1, 2], weights=[0.5, 0.25], start=[0], accept=[1])
    dead_end = dead_end.with_weights(dead_end.weights, start_weights=torch.tensor([0.0, NEG_INF, NEG_INF]),
                                     final_weights=torch.tensor([NEG_INF, NEG_INF, NEG_INF]))
    batch = leaf_weights(Graph.batch([no_accept, dead_end]))
    totals = k2_total_score(batch, semiring)
    assert totals.tolist() == [NEG_INF, NEG_INF]
    for d in grads(totals, batch):
        assert torch.equal(d, torch.zeros_like(d))


def test_minus_inf_arc_weights():
    g = Graph.from_arcs(2, [0, 0], [1, 1], [1, 2], weights=torch.tensor([NEG_INF, 0.5], dtype=torch.float64),
                        start=[0], accept=[1])
    g = leaf_weights(g)
    for semiring in ("log", "tropical"):
        assert_same_totals_and_grads(k2_total_score(g, semiring).reshape(1),
                                     total_score(g, semiring).reshape(1), g)


def test_cyclic_graphs_are_refused():
    g = Graph.from_arcs(2, [0, 1], [1, 0], [1, 1], weights=[-1.0, -1.0], start=[0], accept=[1])
    with pytest.raises(CyclicGraphError, match="k2 backend needs acyclic"):
        k2_total_score(g)


# ---------------------------------------------------------------------- dense intersection totals
@st.composite
def dense_problems(draw, max_frames: int = 5):
    """A batch of graphs (labels < V, cycles allowed: every arc consumes a frame) with
    emissions ``[B, T, V]`` and lengths (0 included)."""
    num_labels = draw(st.integers(2, 4))
    gs = draw(st.lists(graphs(max_nodes=4, max_arcs=7, num_labels=num_labels - 1, acyclic=draw(st.booleans())),
                       min_size=1, max_size=3))
    frames = draw(st.integers(1, max_frames))
    lengths = [draw(st.integers(0, frames)) for _ in gs]
    seed = draw(st.integers(0, 2**31 - 1))
    emissions = torch.randn(len(gs), frames, num_labels, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(seed)).log_softmax(-1)
    return gs, emissions.requires_grad_(True), torch.tensor(lengths), seed


@given(dense_problems(), st.sampled_from(SEMIRINGS))
def test_dense_totals_and_gradients_match_native(problem, semiring):
    gs, emissions, lengths, seed = problem
    batch = leaf_weights(Graph.batch(gs), torch.Generator().manual_seed(seed))
    got = dense_score(batch, emissions, lengths, semiring, backend="k2")
    want = dense_score(batch, emissions, lengths, semiring)
    assert_same_totals_and_grads(got, want, batch, emissions)


def test_dense_one_sequence_and_one_graph_for_all():
    g = Graph.from_arcs(2, [0, 0, 1], [0, 1, 1], [0, 1, 0], weights=[0.0, -0.5, 0.0], start=[0], accept=[1])
    emissions = torch.randn(3, 4, 2).log_softmax(-1)
    one = dense_score(g, emissions[0], backend="k2")
    assert one.dim() == 0
    torch.testing.assert_close(one, dense_score(g, emissions[0]), **TOL)
    torch.testing.assert_close(dense_score(g, emissions, [4, 1, 0], backend="k2"),
                               dense_score(g, emissions, [4, 1, 0]), **TOL)
