"""to_k2 / from_k2 keep the weighted relation (checked with the brute-force oracle on an
independent, arc-by-arc reading of the k2 FSA) and the gradients."""

from __future__ import annotations

import k2
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracle import assert_relations_close, relation
from strategies import graphs

from gtn_py import CyclicGraphError, Graph, LabelError
from gtn_py.k2 import from_k2, to_k2

NEG_INF = float("-inf")


def literal_graph(fsa: k2.Fsa) -> Graph:
    """A single k2 FSA read arc by arc, as k2 defines it: state 0 starts, the last state accepts,
    and the -1 arcs into it are epsilons (a translation independent of from_k2)."""
    values = fsa.arcs.values()
    labels = values[:, 2].tolist()
    aux = fsa.aux_labels.tolist() if hasattr(fsa, "aux_labels") else labels
    num_states = fsa.shape[0]
    return Graph.from_arcs(num_states, values[:, 0].tolist(), values[:, 1].tolist(),
                           [max(x, 0) for x in labels], [max(x, 0) for x in aux],
                           fsa.scores.detach().double(), start=[0] if num_states else [],
                           accept=[num_states - 1] if num_states else [], dtype=torch.float64)


def assert_same_relation(got: Graph, want: Graph, max_arcs: int = 12, got_extra_arcs: int = 0) -> None:
    """Same (string pair -> score) map in both semirings, over paths of at most ``max_arcs`` arcs
    (``got``'s paths being ``got_extra_arcs`` longer): the conversions keep path lengths (a
    literal reading adds the final arc), so even the truncated relations of cyclic graphs agree."""
    for semiring in ("log", "tropical"):
        assert_relations_close(relation(got, semiring, max_arcs + got_extra_arcs),
                               relation(want, semiring, max_arcs), tol=1e-4)


cyclic_graphs = graphs(acyclic=False, max_nodes=3, max_arcs=5)
CYCLIC_PATH_ARCS = 5


@given(cyclic_graphs)
def test_to_k2_keeps_the_relation(g):
    fsa = to_k2(g)
    assert len(fsa.shape) == 2 and "Valid" in fsa.properties_str
    assert_same_relation(literal_graph(fsa), g, max_arcs=CYCLIC_PATH_ARCS, got_extra_arcs=1)


@given(graphs(acyclic=True, acceptor=True))
def test_to_k2_topsorted_acceptor(g):
    fsa = to_k2(g, topsort=True)
    assert "TopSorted" in fsa.properties_str
    assert not hasattr(fsa, "aux_labels")
    assert_same_relation(literal_graph(fsa), g)


@given(cyclic_graphs)
def test_round_trip_keeps_the_relation(g):
    back = from_k2(to_k2(g), dtype=torch.float64)
    assert not back.is_batch
    assert_same_relation(back, g, max_arcs=CYCLIC_PATH_ARCS)


@given(st.lists(graphs(max_nodes=4, max_arcs=6), min_size=1, max_size=4))
def test_batches_round_trip(gs):
    fsas = to_k2(gs)
    assert fsas.shape[0] == len(gs)
    back = from_k2(fsas, dtype=torch.float64)
    assert back.is_batch and back.num_graphs == len(gs)
    for i, g in enumerate(gs):
        assert_same_relation(literal_graph(fsas[i]), g)
        assert_same_relation(back[i], g)


def test_single_start_without_incoming_arcs_is_state_zero():
    g = Graph.from_arcs(3, [2, 0], [0, 1], [1, 2], start_weights=[NEG_INF, NEG_INF, -0.5],
                        final_weights=[NEG_INF, 0.25, NEG_INF], weights=[1.0, 2.0])
    fsa = to_k2(g)
    assert fsa.shape[0] == 4  # no extra start state: node 2 became state 0
    assert fsa.arcs.values()[:, :3].tolist() == [[0, 1, 1], [1, 2, 2], [2, 3, -1]]
    assert fsa.scores.tolist() == [0.5, 2.0, 0.25]  # the start weight moved onto the leaving arc


def test_several_final_arcs_from_one_state_stay_arcs():
    fsa = k2.Fsa.from_str("0 1 1 0.5\n0 1 2 0.25\n1 2 -1 0.1\n1 2 -1 0.2\n2")
    g = from_k2(fsa, dtype=torch.float64)
    assert g.num_nodes == 3 and g.num_arcs == 4
    assert_same_relation(literal_graph(fsa), g)


def test_one_final_arc_becomes_a_final_weight():
    fsa = k2.Fsa.from_str("0 1 1 0.5\n1 2 -1 0.1\n2")
    g = from_k2(fsa)
    assert g.num_nodes == 2 and g.num_arcs == 1
    assert g.final_weights.tolist() == pytest.approx([NEG_INF, 0.1])


def test_from_k2_of_k2_graphs():
    for fsa in (k2.ctc_graph([[1, 2]])[0], k2.ctc_topo(3), k2.linear_fst([1, 2, 3], [4, 0, 5])):
        assert_same_relation(literal_graph(fsa), from_k2(fsa, dtype=torch.float64), max_arcs=7, got_extra_arcs=1)


def test_ragged_aux_labels_are_expanded():
    fsa = k2.Fsa.from_str("0 1 5 0.5\n0 1 6 0.25\n1 2 -1 0.1\n2")
    fsa.aux_labels = k2.RaggedTensor([[1, 2], [], [-1]])
    g = from_k2(fsa, dtype=torch.float64)
    assert relation(g) == pytest.approx({((5,), (1, 2)): 0.6, ((6,), ()): 0.35})


def test_empty_fsa():
    g = from_k2(k2.Fsa.from_str("0"))
    assert g.num_nodes <= 1 and relation(g) == {}


def test_gradients_flow_through_to_k2():
    g = Graph.from_arcs(3, [0, 0, 1], [1, 2, 2], [1, 2, 3], weights=[0.5, -1.0, 0.25],
                        start_weights=[0.5, NEG_INF, NEG_INF], final_weights=[NEG_INF, 0.1, 0.2],
                        dtype=torch.float64)
    for t in (g.weights, g.start_weights, g.final_weights):
        t.requires_grad_(True)
    fsa = to_k2(g)
    assert fsa.scores.dtype == torch.float32 and fsa.scores.requires_grad
    fsa.scores.sum().backward()
    # Each weight counts once per k2 arc it went into; the start weight onto both leaving arcs.
    assert g.weights.grad.tolist() == [1.0, 1.0, 1.0]
    assert g.start_weights.grad.tolist() == [2.0, 0.0, 0.0]
    assert g.final_weights.grad.tolist() == [0.0, 1.0, 1.0]


def test_gradients_flow_through_from_k2():
    fsa = k2.Fsa.from_str("0 1 1 0.5\n0 1 2 0.25\n1 2 -1 0.1\n2").requires_grad_(True)
    g = from_k2(fsa, dtype=torch.float64)
    (g.weights.sum() + g.final_weights[1] * 3).backward()
    assert fsa.scores.grad.tolist() == [1.0, 1.0, 3.0]


def test_cyclic_graph_cannot_be_topsorted():
    g = Graph.from_arcs(2, [0, 1], [1, 0], [1, 1], start=[0], accept=[1])
    with pytest.raises(CyclicGraphError):
        to_k2(g, topsort=True)


def test_labels_beyond_int32_are_refused():
    g = Graph.from_arcs(2, [0], [1], [2**31], start=[0], accept=[1])
    with pytest.raises(LabelError, match="int32"):
        to_k2(g)
