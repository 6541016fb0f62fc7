"""CTC three ways agree: k2's own (k2.ctc_graph + k2.ctc_loss), gtn_py's native ctc_loss, and
gtn_py's CTC graphs scored by the k2 backend (dense_score(backend="k2")), values and gradients."""

from __future__ import annotations

import k2
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gtn_py.criteria.ctc import ctc_graph, ctc_loss
from gtn_py.k2 import from_k2
from gtn_py.ops.dense import dense_score

TOL = dict(rtol=1e-4, atol=1e-4)


@st.composite
def ctc_batches(draw):
    """Logits ``[T, B, V]``, padded targets and lengths; some targets do not fit their input."""
    num_labels = draw(st.integers(2, 5))
    num_seqs = draw(st.integers(1, 4))
    frames = draw(st.integers(1, 8))
    input_lengths = [draw(st.integers(1, frames)) for _ in range(num_seqs)]
    targets = [draw(st.lists(st.integers(1, num_labels - 1), max_size=5)) for _ in range(num_seqs)]
    seed = draw(st.integers(0, 2**31 - 1))
    logits = torch.randn(frames, num_seqs, num_labels, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(seed))
    return logits, targets, torch.tensor(input_lengths)


def padded(targets):
    width = max([len(t) for t in targets] + [1])
    return torch.tensor([t + [0] * (width - len(t)) for t in targets]), torch.tensor([len(t) for t in targets])


def k2_reference(logits: torch.Tensor, targets, input_lengths: torch.Tensor) -> torch.Tensor:
    """Per-sequence CTC losses computed by k2 alone (sequences sorted by length, as it wants)."""
    log_probs = logits.log_softmax(-1).transpose(0, 1).to(torch.float32)
    order = torch.argsort(-input_lengths, stable=True)
    segments = torch.stack([order, torch.zeros_like(order), input_lengths[order]], 1).to(torch.int32)
    graphs = k2.ctc_graph([targets[i] for i in order.tolist()])
    losses = k2.ctc_loss(graphs, k2.DenseFsaVec(log_probs, segments), output_beam=float("inf"),
                         reduction="none")
    return torch.empty_like(losses).index_copy(0, order, losses).to(logits.dtype)


def logit_grads(losses: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(losses)
    if not bool(finite.any()):
        return torch.zeros_like(logits)
    return torch.autograd.grad(losses[finite].sum(), logits, retain_graph=True)[0]


@given(ctc_batches())
def test_ctc_matches_k2_ctc_loss(batch):
    logits, targets, input_lengths = batch
    logits.requires_grad_(True)
    target_tensor, target_lengths = padded(targets)
    want = k2_reference(logits, targets, input_lengths)
    native = ctc_loss(logits.log_softmax(-1), target_tensor, input_lengths, target_lengths, reduction="none")
    via_k2 = -dense_score(ctc_graph(target_tensor, target_lengths, dtype=torch.float64),
                          logits.log_softmax(-1).transpose(0, 1), input_lengths, backend="k2")
    for got in (native, via_k2):
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(logit_grads(got, logits), logit_grads(want, logits), **TOL)


def test_impossible_targets_cost_inf_with_zero_gradients():
    logits = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)
    targets, lengths = padded([[1, 1, 2]])  # needs 4 frames (a blank between the repeats)
    loss = -dense_score(ctc_graph(targets, lengths, dtype=torch.float64),
                        logits.log_softmax(-1).transpose(0, 1), torch.tensor([2]), backend="k2")
    assert loss.tolist() == [float("inf")]
    (grad,) = torch.autograd.grad(loss.clamp(max=1e30).sum(), logits)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("targets", [[1, 2, 2], [3], []])
def test_k2_ctc_graph_converts_to_gtn_ctc_graph(targets):
    """from_k2 of k2's CTC graph scores like gtn_py's own CTC graph."""
    emissions = torch.randn(1, 7, 4, dtype=torch.float64).log_softmax(-1)
    target_tensor, target_lengths = padded([targets])
    ours = ctc_graph(target_tensor, target_lengths, dtype=torch.float64)
    theirs = from_k2(k2.ctc_graph([targets]), dtype=torch.float64)
    torch.testing.assert_close(dense_score(theirs, emissions, backend="k2"), dense_score(ours, emissions, backend="k2"),
                               **TOL)
