"""ASG against brute-force sums over label sequences and alignments on tiny cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gtn_py import LabelError
from gtn_py.criteria import ASGLoss, asg_loss


def sequence_score(emissions, transitions, labels):
    score = sum(float(emissions[t, c]) for t, c in enumerate(labels))
    return score + sum(float(transitions[a, b]) for a, b in zip(labels, labels[1:]))


def logsumexp(values):
    values = [v for v in values if v > -math.inf]
    if not values:
        return -math.inf
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def segmentations(target, num_frames):
    """Frame labellings that split the frames into len(target) non-empty runs, run k = target[k]."""
    for cuts in itertools.combinations(range(1, num_frames), len(target) - 1):
        bounds = (0, *cuts, num_frames)
        yield [target[k] for k in range(len(target)) for _ in range(bounds[k + 1] - bounds[k])]


def brute_asg(emissions, transitions, target, length):
    e = emissions[:length]
    num_labels = emissions.shape[1]
    full = logsumexp([sequence_score(e, transitions, seq)
                      for seq in itertools.product(range(num_labels), repeat=length)])
    if not target or len(target) > length:
        return math.inf
    constrained = logsumexp([sequence_score(e, transitions, seq) for seq in segmentations(target, length)])
    return full - constrained


@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force_and_gradcheck(seed):
    gen = torch.Generator().manual_seed(seed)
    num_labels, frames = 3, 5
    emissions = torch.randn(3, frames, num_labels, dtype=torch.float64, generator=gen, requires_grad=True)
    transitions = torch.randn(num_labels, num_labels, dtype=torch.float64, generator=gen, requires_grad=True)
    targets = [[0, 2], [1, 0, 1], [2, 2, 0]]  # the last repeats a label (segments, as in wav2letter)
    lengths = [5, 4, 3]
    losses = asg_loss(emissions, targets, transitions, lengths, reduction="none").detach()
    for b in range(3):
        want = brute_asg(emissions[b].detach(), transitions.detach(), targets[b], lengths[b])
        assert math.isclose(float(losses[b]), want, rel_tol=1e-9, abs_tol=1e-9)
    # without repeats, alignments are exactly the label sequences collapsing to the target
    collapse = lambda seq: [c for i, c in enumerate(seq) if i == 0 or seq[i - 1] != c]  # noqa: E731
    e, tr = emissions[1, :4].detach(), transitions.detach()
    constrained = logsumexp([sequence_score(e, tr, s) for s in itertools.product(range(3), repeat=4)
                             if collapse(list(s)) == [1, 0, 1]])
    full = logsumexp([sequence_score(e, tr, s) for s in itertools.product(range(3), repeat=4)])
    assert math.isclose(float(losses[1]), full - constrained, rel_tol=1e-9)
    assert torch.autograd.gradcheck(
        lambda em, tr: asg_loss(em, targets, tr, lengths, reduction="sum"), (emissions, transitions), fast_mode=True)


def test_impossible_target_is_inf_with_zero_gradient():
    emissions = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    transitions = torch.zeros(4, 4, dtype=torch.float64, requires_grad=True)
    losses = asg_loss(emissions, [[1, 2, 3, 1], [1]], transitions, reduction="none")
    assert math.isinf(float(losses[0].detach())) and math.isfinite(float(losses[1].detach()))
    grad_e, grad_t = torch.autograd.grad(losses[0], (emissions, transitions))
    assert torch.all(grad_e == 0) and torch.all(grad_t == 0)


def test_module_trains_transitions():
    torch.manual_seed(0)
    criterion = ASGLoss(4, dtype=torch.float64)
    emissions = torch.randn(4, 6, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2, 3], [3, 1, 0], [2, 0, 0], [0, 1, 2]])
    loss = criterion(emissions, targets, [6, 5, 4, 6], [3, 2, 1, 3])
    loss.backward()
    assert criterion.transitions.grad is not None and criterion.transitions.grad.abs().sum() > 0
    with pytest.raises(LabelError):
        criterion(emissions, [[5]])
