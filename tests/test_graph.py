import math

import pytest
import torch
from oracle import relation, total

import gtn_py
from gtn_py import Graph


def test_builder_and_properties():
    g = Graph()
    s = g.add_node(start=True)
    a = g.add_node(accept=True)
    assert g.add_arc(s, a, 1, 2, -0.5) == 0
    assert g.add_arc(a, a, 3) == 1
    assert (g.num_nodes, g.num_arcs) == (2, 2)
    assert not g.is_acceptor
    assert g.olabel.tolist() == [2, 3]
    assert g.start_nodes.tolist() == [0] and g.accept_nodes.tolist() == [1]
    assert [a.weight for a in g] == [-0.5, 0.0]
    g.add_arc(s, s, 1)  # keeps building after a read
    assert g.num_arcs == 3 and g.src.tolist() == [0, 1, 0]


def test_from_arcs_keeps_weight_tensor_for_autograd():
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    g = Graph.from_arcs(3, [0, 1], [1, 2], [1, 2], weights=w, start=[0], accept=[2])
    assert g.weights is w
    g.weights.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0]


def test_string_linear_scalar_graphs():
    g = gtn_py.string_graph([1, 2, 3])
    assert relation(g) == {((1, 2, 3), (1, 2, 3)): 0.0}
    lin = gtn_py.linear_graph(2, 3, torch.log(torch.full((2, 3), 1 / 3)))
    assert math.isclose(total(lin), 0.0, abs_tol=1e-6)
    sc = gtn_py.scalar_graph(1.5)
    assert total(sc) == 1.5


def test_final_and_start_weights_count_in_paths():
    g = Graph.from_arcs(2, [0], [1], [1], weights=[1.0], start_weights=[0.25, float("-inf")],
                        final_weights=[float("-inf"), 0.5])
    assert relation(g) == {((1,), (1,)): 1.75}


def test_batch_round_trip():
    a = gtn_py.string_graph([1, 2])
    b = gtn_py.string_graph([3])
    batch = Graph.batch([a, b, a])
    assert batch.is_batch and len(batch) == 3 and batch.num_nodes == 3 + 2 + 3
    assert batch.node_graph.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    for original, part in zip([a, b, a], batch.unbatch()):
        assert relation(part) == relation(original)


def test_to_dtype_and_detach():
    g = gtn_py.string_graph([1, 2], weights=[0.5, 0.25]).to(dtype=torch.float64)
    assert g.dtype == torch.float64 and g.start_weights.dtype == torch.float64
    assert not g.detach().requires_grad


def _spoiled(shape, bad, sign=1.0):
    t = torch.rand(*shape, dtype=torch.float64)
    t.view(-1)[t.numel() // 2] = sign * bad
    return t


def _graph_builders():
    from gtn_py.criteria import (
        asg_transition_graph,
        crf_log_partition,
        crf_viterbi,
        dtw_distance,
        hmm_topology,
        recognition_graph,
        segmentation_graph,
    )

    k = torch.zeros(4, 4, dtype=torch.float64)
    seg = segmentation_graph(3, 2, dtype=torch.float64)
    return {
        "dtw": lambda bad: dtw_distance(_spoiled((5, 4), bad, -1.0)),  # a distance of -inf is a weight of +inf
        "crf unary": lambda bad: crf_log_partition(_spoiled((5, 4), bad), k),
        "crf transitions": lambda bad: crf_log_partition(torch.rand(5, 4, dtype=torch.float64), _spoiled((4, 4), bad)),
        "crf viterbi": lambda bad: crf_viterbi(_spoiled((5, 4), bad), k),
        "hmm": lambda bad: hmm_topology(3, transition_scores=_spoiled((3, 3), bad)),
        "asg": lambda bad: asg_transition_graph(_spoiled((4, 4), bad)),
        "recognition": lambda bad: recognition_graph(seg, _spoiled((seg.num_arcs, 3), bad)),
    }


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("case", sorted(_graph_builders()))
def test_graphs_built_from_scores_reject_nan_and_plus_inf(case, bad):
    """The criteria build their graphs from a caller's tensors without Graph.validate; a NaN there
    that meets no finite score used to vanish in the sweeps' max-shifted sums and give a finite
    total (DTW, CRF) or -inf. Each constructor checks its weights."""
    with pytest.raises(gtn_py.WeightError, match="NaN or \\+inf"):
        _graph_builders()[case](bad)


def test_has_nan_or_plus_inf_is_exact():
    """The one-sum fast path must not be fooled: -inf is fine, an overflowing sum is not +inf,
    +inf beside -inf (a NaN sum) is found, and dtypes numpy lacks go through torch."""
    from gtn_py.graph import has_nan_or_plus_inf

    assert not has_nan_or_plus_inf(torch.tensor([1.0, -math.inf]))
    assert not has_nan_or_plus_inf(torch.tensor([3e38, 3e38]))
    assert has_nan_or_plus_inf(torch.tensor([math.inf, -math.inf]))
    assert has_nan_or_plus_inf(torch.tensor([0.0, math.nan], dtype=torch.float64))
    assert has_nan_or_plus_inf(torch.tensor([1.0, math.nan], dtype=torch.bfloat16))
    assert not has_nan_or_plus_inf(torch.tensor([1.0, 2.0], dtype=torch.bfloat16))
    assert not has_nan_or_plus_inf(torch.zeros(0))


def test_unique_rows_is_unique_over_rows():
    """The 1-D mixed-radix key and its fallback (ranges past int64) give torch.unique(dim=0)'s answer."""
    from gtn_py.graph import unique_rows

    generator = torch.Generator().manual_seed(0)
    for high in (3, 10**6, 2**40):
        columns = [torch.randint(-high, high, (500,), generator=generator) for _ in range(3)]
        columns[1][:250] = columns[1][250:]  # repeated rows
        columns[0][:250], columns[2][:250] = columns[0][250:], columns[2][250:]
        values, inverse = unique_rows(columns)
        want_values, want_inverse = torch.unique(torch.stack(columns, 1), dim=0, return_inverse=True)
        assert torch.equal(values, want_values) and torch.equal(inverse, want_inverse)
    values, inverse = unique_rows([torch.zeros(0, dtype=torch.long)] * 2)
    assert values.shape == (0, 2) and inverse.shape == (0,)
