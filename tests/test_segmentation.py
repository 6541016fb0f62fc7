"""Segmentation graphs and the recognition transformer (gtn_py.criteria.segmentation)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracle import paths, relation, total

from gtn_py.criteria.segmentation import recognition_graph, segmentation_graph, span_table
from gtn_py.errors import InvalidGraphError
from gtn_py.ops.shortest import forward_score, viterbi_path


def compositions(n: int, k: int) -> int:
    """Ways to write n as an ordered sum of parts in 1..k, counted by brute force."""
    return sum(1 for r in range(1, n + 1) for parts in itertools.product(range(1, k + 1), repeat=r)
               if sum(parts) == n)


@given(st.integers(1, 7), st.integers(1, 4))
def test_number_of_paths_is_the_number_of_segmentations(num_pieces, max_span):
    g = segmentation_graph(num_pieces, max_span)
    want = compositions(num_pieces, max_span)
    assert sum(1 for _ in paths(g, max_arcs=num_pieces)) == want
    # With zero weights, the forward score counts the paths.
    assert math.isclose(math.exp(float(forward_score(g))), want, rel_tol=1e-5)


def test_span_table_by_hand():
    image, begin, end = span_table(4, 2)
    assert begin.tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert end.tolist() == [1, 2, 2, 3, 3, 4, 4]
    assert image.tolist() == [0] * 7
    image, begin, end = span_table([2, 1], 3)
    assert image.tolist() == [0, 0, 0, 1]
    assert list(zip(begin.tolist(), end.tolist())) == [(0, 1), (0, 2), (1, 2), (0, 1)]


def test_true_segmentation_is_a_path():
    # 10 pieces, true characters covering pieces [0,3), [3,4), [4,8), [8,10).
    g = segmentation_graph(10, 4)
    boundaries = [0, 3, 4, 8, 10]
    arcs = list(zip(g.src.tolist(), g.dst.tolist()))
    for a, b in zip(boundaries, boundaries[1:]):
        assert (a, b) in arcs
    assert int(g.start_nodes[0]) == 0 and int(g.accept_nodes[0]) == 10
    # A character wider than max_span pieces is not.
    assert (0, 5) not in arcs


def test_batch_is_the_disjoint_union_of_single_graphs():
    counts, k = [3, 1, 5], 2
    batch = segmentation_graph(counts, k)
    assert batch.is_batch and batch.num_graphs == 3
    for b, n in enumerate(counts):
        single = segmentation_graph(n, k)
        part = batch[b]
        for name in ("src", "dst", "ilabel", "olabel"):
            assert torch.equal(getattr(part, name), getattr(single, name)), name
        assert torch.equal(part.start_weights, single.start_weights)
        assert torch.equal(part.final_weights, single.final_weights)


def test_keep_drops_spans_and_labels_stay_per_graph():
    _, begin, end = span_table([3, 3], 3)
    keep = (end - begin) < 3
    g = segmentation_graph([3, 3], 3, keep)
    assert g.num_arcs == int(keep.sum())
    assert g[1].ilabel.tolist() == list(range(1, g[1].num_arcs + 1))
    with pytest.raises(InvalidGraphError, match="one entry per span"):
        segmentation_graph(3, 3, keep[:2])


def test_bad_arguments_raise_typed_errors():
    with pytest.raises(InvalidGraphError, match="image 1"):
        segmentation_graph([2, 0], 2)
    with pytest.raises(InvalidGraphError, match="max_span"):
        segmentation_graph(2, 0)
    seg = segmentation_graph(2, 2)
    with pytest.raises(InvalidGraphError, match="span_scores"):
        recognition_graph(seg, torch.zeros(seg.num_arcs + 1, 3))


@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 10_000))
def test_recognition_graph_matches_brute_force(num_pieces, max_span, num_classes, seed):
    gen = torch.Generator().manual_seed(seed)
    seg = segmentation_graph(num_pieces, max_span, dtype=torch.float64)
    scores = torch.randn(seg.num_arcs, num_classes, generator=gen, dtype=torch.float64)
    g = recognition_graph(seg, scores)
    assert g.is_acceptor
    # Brute force: every segmentation, every class per segment.
    span_index = {(int(s), int(d)): a for a, (s, d) in enumerate(zip(seg.src, seg.dst))}
    want: dict = {}
    for path, _ in paths(seg, max_arcs=num_pieces):
        spans = [(int(seg.src[a]), int(seg.dst[a])) for a in path]
        for classes in itertools.product(range(num_classes), repeat=len(spans)):
            score = sum(float(scores[span_index[s], c]) for s, c in zip(spans, classes))
            labels = tuple(c + 1 for c in classes)
            want[labels] = want.get(labels, []) + [score]
    got = relation(g, max_arcs=num_pieces)
    assert set(k[0] for k in got) == set(want)
    for (inp, _), value in got.items():
        peak = max(want[inp])
        assert math.isclose(value, peak + math.log(sum(math.exp(v - peak) for v in want[inp])), rel_tol=1e-9)
    assert math.isclose(float(forward_score(g)), total(g, max_arcs=num_pieces), rel_tol=1e-9)


def test_recognition_transducer_keeps_span_labels():
    seg = segmentation_graph(3, 2)
    g = recognition_graph(seg, torch.zeros(seg.num_arcs, 4), keep_spans=True)
    assert not g.is_acceptor
    assert g.ilabel.tolist() == seg.ilabel.repeat_interleave(4).tolist()
    assert g.olabel.tolist() == [1, 2, 3, 4] * seg.num_arcs
    best = viterbi_path(recognition_graph(seg, torch.arange(seg.num_arcs * 4.0).reshape(-1, 4)))
    assert best.olabel.tolist()[-1] == 4


def test_gradient_through_batched_recognition_graph():
    seg = segmentation_graph([3, 2], 2, dtype=torch.float64)
    scores = torch.randn(seg.num_arcs, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: forward_score(recognition_graph(seg, s)), (scores,))
    # The gradient of the log-partition is the arc posterior: summed over a graph's arcs it is
    # the expected number of characters, between 1 and the number of pieces.
    out = forward_score(recognition_graph(seg, scores))
    assert out.shape == (2,)
    (grad,) = torch.autograd.grad(out.sum(), scores)
    assert torch.all(grad >= 0)
    per_graph = torch.zeros(2, dtype=torch.float64).index_add(0, seg.arc_graph, grad.sum(1))
    assert 1 <= float(per_graph[0]) <= 3 and 1 <= float(per_graph[1]) <= 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    seg = segmentation_graph([4, 3], 3, device="cuda")
    assert seg.device.type == "cuda"
    scores = torch.randn(seg.num_arcs, 5, device="cuda", requires_grad=True)
    g = recognition_graph(seg, scores)
    forward_score(g).sum().backward()
    assert scores.grad is not None and scores.grad.device.type == "cuda"
    cpu = forward_score(recognition_graph(segmentation_graph([4, 3], 3), scores.detach().cpu()))
    assert torch.allclose(forward_score(g).detach().cpu(), cpu, atol=1e-5)

