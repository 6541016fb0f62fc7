"""push: weights moved toward the start or the end keep every path's score (brute force), make the
graph stochastic in the log semiring (each node's continuations sum to 1), are differentiable."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import assert_relations_close, logsumexp, plus, relation
from strategies import graphs

import gtn_py as gtn

NEG_INF = float("-inf")


@settings(max_examples=60, deadline=None)
@given(graphs(max_nodes=5, max_arcs=8, acyclic=True), st.sampled_from(["log", "tropical"]),
       st.sampled_from(["start", "end"]))
def test_push_keeps_the_weighted_relation(g, semiring, toward):
    pushed = gtn.push(g, semiring, toward)
    assert torch.equal(pushed.src, g.src) and torch.equal(pushed.ilabel, g.ilabel)
    assert_relations_close(relation(pushed, semiring), relation(g, semiring), tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(graphs(max_nodes=4, max_arcs=7, acyclic=False), st.sampled_from(["log", "tropical"]))
def test_pushed_toward_the_start_each_useful_node_continues_with_total_one(g, semiring):
    """Log: the arcs and final weight out of a node sum to probability 1; tropical: the best is 0."""
    try:
        pushed = gtn.push(g, semiring, "start")
    except gtn.DivergenceError:
        return  # a cycle whose log sum diverges has no total to push
    reach = gtn.shortest_distance(g, semiring, reverse=True)
    for node in range(g.num_nodes):
        if reach[node] == NEG_INF:
            continue
        out = [float(w) for a, w in enumerate(pushed.weights) if int(pushed.src[a]) == node]
        continuation = plus(out + [float(pushed.final_weights[node])], semiring)
        assert continuation == pytest.approx(0.0, abs=1e-9)


def test_pushed_toward_the_end_each_reached_node_is_entered_with_total_one():
    g = gtn.Graph.from_arcs(4, [0, 0, 1, 2, 1], [1, 2, 3, 3, 1], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5],
                            [-1.0, -2.0, -0.5, -0.3, -1.0], start=[0], accept=[3], dtype=torch.float64)
    pushed = gtn.push(g, "log", "end")
    for node in range(g.num_nodes):
        entering = [float(w) for a, w in enumerate(pushed.weights) if int(pushed.dst[a]) == node]
        assert logsumexp(entering + [float(pushed.start_weights[node])]) == pytest.approx(0.0, abs=1e-12)
    assert float(gtn.forward_score(pushed)) == pytest.approx(float(gtn.forward_score(g)), abs=1e-12)


def test_nodes_on_no_path_get_minus_infinity_not_nan():
    g = gtn.Graph.from_arcs(4, [0, 0, 2], [1, 2, 3], [1, 2, 3], [1, 2, 3], [-1.0, -1.0, -1.0],
                            start=[0], accept=[1], dtype=torch.float64)  # 2 and 3 lead nowhere
    for toward in ("start", "end"):
        pushed = gtn.push(g, "log", toward)
        for values in (pushed.weights, pushed.start_weights, pushed.final_weights):
            assert not torch.isnan(values).any()
        assert float(gtn.forward_score(pushed)) == pytest.approx(-1.0)
    assert gtn.push(g, "log", "start").weights[1:].tolist() == [NEG_INF, NEG_INF]  # no potential toward the end


@pytest.mark.parametrize("toward", ["start", "end"])
def test_push_is_differentiable(toward):
    torch.manual_seed(0)
    weights = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def pushed_weights(w):
        g = gtn.Graph.from_arcs(4, [0, 0, 1, 2, 1], [1, 2, 3, 3, 2], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], w,
                                start=[0], accept=[3], dtype=torch.float64)
        p = gtn.push(g, "log", toward)
        return torch.cat([p.weights, p.start_weights[:1], p.final_weights[3:]])  # the finite ones

    assert torch.autograd.gradcheck(pushed_weights, (weights,))


def test_bad_direction_is_a_clear_error():
    with pytest.raises(gtn.ArgumentValueError, match="toward must be 'start' or 'end'"):
        gtn.push(gtn.string_graph([1]), "log", "middle")
