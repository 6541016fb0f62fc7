"""path_entropy: the entropy of the path distribution, against enumeration of the paths of small
random graphs, differentiable (gradcheck), batched, and on a dense lattice."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from oracle import logsumexp, paths
from strategies import graphs

import gtn_py as gtn


def enumerated_entropy(g: gtn.Graph) -> float:
    scores = [s for _, s in paths(g)]
    total = logsumexp(scores)
    return -sum(math.exp(s - total) * (s - total) for s in scores if s > -math.inf)


@settings(max_examples=80, deadline=None)
@given(graphs(max_nodes=5, max_arcs=8, acyclic=True))
def test_entropy_matches_enumeration(g):
    got = float(gtn.path_entropy(g))
    if not any(s > -math.inf for _, s in paths(g)):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(enumerated_entropy(g), abs=1e-9)


def test_a_batch_gives_each_graph_its_entropy():
    one = gtn.string_graph([1, 2]).to(dtype=torch.float64)
    two = gtn.Graph.from_arcs(3, [0, 0, 1], [1, 2, 2], [1, 2, 3], [1, 2, 3], [math.log(0.3), math.log(0.7), 0.0],
                              start=[0], accept=[2], dtype=torch.float64)
    entropy = gtn.path_entropy([one, two, gtn.Graph().to(dtype=torch.float64)])
    assert entropy[0] == 0 and float(entropy[1]) == pytest.approx(-(0.3 * math.log(0.3) + 0.7 * math.log(0.7)))
    assert math.isnan(float(entropy[2]))  # no path, no distribution


def test_entropy_is_differentiable():
    weights = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def entropy(w):
        g = gtn.Graph.from_arcs(4, [0, 0, 1, 1, 2, 0], [1, 2, 2, 3, 3, 3], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6],
                                w, start=[0], accept=[3], dtype=torch.float64)
        return gtn.path_entropy(g)

    assert torch.autograd.gradcheck(entropy, (weights,))


def test_entropy_of_a_ctc_lattice_is_zero_for_one_frame_per_label_and_grows_with_frames():
    emissions = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64).log_softmax(-1)
    target = gtn.ctc_graph([[1, 2]]).to(dtype=torch.float64)
    tight = gtn.path_entropy(gtn.intersect_dense(target, emissions[:, :2], lengths=[2]))
    loose = gtn.path_entropy(gtn.intersect_dense(target, emissions, lengths=[6]))
    assert float(tight[0] if tight.dim() else tight) == pytest.approx(0.0, abs=1e-12)  # only "1 2" fits
    assert float(loose[0] if loose.dim() else loose) > 0.5


def test_float32_entropy_of_a_long_lattice_is_as_precise_as_its_weights():
    # the entropy is the difference of two totals of about -700 here: computed in float32, it
    # would lose two digits (0.02 nats off)
    emissions = torch.randn(4, 200, 30, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    lattice = gtn.intersect_dense(gtn.ctc_graph([list(range(1, 11))] * 4), emissions)
    exact = gtn.path_entropy(lattice.to(dtype=torch.float64))
    assert float(exact.min()) > 30
    assert gtn.path_entropy(lattice).dtype == torch.float32
    assert torch.allclose(gtn.path_entropy(lattice).double(), exact, atol=1e-4, rtol=0)
    assert torch.allclose(gtn.total_score(lattice, gtn.ENTROPY).double(), exact, atol=1e-2, rtol=0)
