"""Arc maps (``return_arc_map=True``): for every arc of an operation's result, the input arc(s)
it came from, so that per-arc attributes (a frame index, a word id) follow the arcs. Checked on
random graphs: the result's weights and labels are gathers of the inputs' through the map."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import graphs

import gtn_py as gtn
from gtn_py import Graph, gather


def labels_through(g: Graph, arc_map: torch.Tensor, which: str) -> torch.Tensor:
    """The labels of ``g``'s arcs through the map (epsilon where the map says no arc)."""
    return torch.where(arc_map >= 0, gather(getattr(g, which), arc_map), torch.zeros_like(arc_map))


@settings(max_examples=120, deadline=None)
@given(graphs(max_nodes=4, max_arcs=7, num_labels=2), graphs(max_nodes=4, max_arcs=7, num_labels=2))
def test_compose_map_gives_the_weights_and_labels(g1, g2):
    out, arc_map = gtn.compose(g1, g2, return_arc_map=True)
    assert arc_map.shape == (out.num_arcs, 2) and arc_map.dtype == torch.long
    assert gtn.equal(out, gtn.compose(g1, g2))
    torch.testing.assert_close(out.weights, gather(g1.weights, arc_map[:, 0]) + gather(g2.weights, arc_map[:, 1]))
    assert torch.equal(out.ilabel, labels_through(g1, arc_map[:, 0], "ilabel"))
    assert torch.equal(out.olabel, labels_through(g2, arc_map[:, 1], "olabel"))
    # an arc moves in one input at least; where g2 stays put, g1's arc writes epsilon, and where
    # g1 stays put, g2's arc reads epsilon
    assert bool((arc_map >= 0).any(1).all())
    only1, only2 = arc_map[:, 1] < 0, arc_map[:, 0] < 0
    assert bool((g1.olabel[arc_map[only1, 0]] == 0).all()) and bool((g2.ilabel[arc_map[only2, 1]] == 0).all())


@settings(max_examples=60, deadline=None)
@given(graphs(max_nodes=4, max_arcs=7, num_labels=2, acceptor=True),
       graphs(max_nodes=4, max_arcs=7, num_labels=2, acceptor=True))
def test_intersect_map_gives_the_weights(g1, g2):
    out, arc_map = gtn.intersect(g1, g2, return_arc_map=True)
    assert gtn.equal(out, gtn.intersect(g1, g2))
    torch.testing.assert_close(out.weights, gather(g1.weights, arc_map[:, 0]) + gather(g2.weights, arc_map[:, 1]))


def test_compose_map_of_batches_indexes_the_batches_arcs():
    a = [gtn.string_graph([1, 2], weights=[-0.1, -0.2]), gtn.string_graph([2], weights=[-0.3])]
    b = Graph.from_arcs(1, [0, 0], [0, 0], [1, 2], [3, 4], [-1.0, -2.0], start=[0], accept=[0])
    out, arc_map = gtn.compose(Graph.batch(a), b, return_arc_map=True)
    batch = Graph.batch(a)
    torch.testing.assert_close(out.weights, gather(batch.weights, arc_map[:, 0]) + gather(b.weights, arc_map[:, 1]))
    # a per-arc attribute of the first input (here: its position in the string) follows
    position = torch.tensor([0, 1, 0])
    assert gather(position, arc_map[:, 0]).tolist() == [0, 1, 0]


@settings(max_examples=120, deadline=None)
@given(graphs(max_nodes=5, max_arcs=9, acyclic=False))
def test_connect_map_gives_the_arcs_kept(g):
    out, arc_map = gtn.connect(g, return_arc_map=True)
    assert gtn.equal(out, gtn.connect(g))
    for name in ("weights", "ilabel", "olabel"):
        assert torch.equal(getattr(out, name), getattr(g, name)[arc_map])


@settings(max_examples=80, deadline=None)
@given(graphs(max_nodes=5, max_arcs=9), st.floats(0.0, 3.0), st.sampled_from([None, 0.05, 0.3]))
def test_prune_map_gives_the_arcs_kept(g, beam, min_posterior):
    out, arc_map = gtn.prune(g, beam, min_posterior=min_posterior, return_arc_map=True)
    assert gtn.equal(out, gtn.prune(g, beam, min_posterior=min_posterior))
    for name in ("weights", "ilabel", "olabel"):
        assert torch.equal(getattr(out, name), getattr(g, name)[arc_map])


@settings(max_examples=120, deadline=None)
@given(graphs(max_nodes=5, max_arcs=9))
def test_remove_epsilon_map_gives_the_label_arc(g):
    out, arc_map = gtn.remove_epsilon(g, "log", return_arc_map=True)
    assert gtn.equal(out, gtn.remove_epsilon(g, "log"))
    assert torch.equal(out.ilabel, g.ilabel[arc_map]) and torch.equal(out.olabel, g.olabel[arc_map])
    assert not bool(((g.ilabel[arc_map] == 0) & (g.olabel[arc_map] == 0)).any())


@settings(max_examples=60, deadline=None)
@given(graphs(max_nodes=5, max_arcs=9, epsilons=False))
def test_remove_epsilon_map_without_epsilons_gives_the_weights(g):
    out, arc_map = gtn.remove_epsilon(g, "tropical", return_arc_map=True)
    torch.testing.assert_close(out.weights, g.weights[arc_map])


def test_the_flag_is_checked():
    g = gtn.string_graph([1])
    with pytest.raises(gtn.ArgumentTypeError, match="return_arc_map"):
        gtn.connect(g, return_arc_map="yes")  # type: ignore[call-overload]
