"""The auto-segmentation criterion (ASG) of wav2letter, on the general dense intersection.

An *alignment* of a target ``y_1 .. y_L`` to ``T`` frames splits the frames into ``L``
non-empty consecutive segments, segment ``k`` labelled ``y_k``. A frame-label sequence
``pi_1 .. pi_T`` scores ``sum_t emissions[t, pi_t] + sum_{t > 1} transitions[pi_{t-1}, pi_t]``
(``transitions[i, j]``: score of label ``j`` following label ``i``; a trainable ``[V, V]``
parameter). The loss is

    ``-log sum_{alignments of y} exp(score) + log sum_{all pi} exp(score)``,

i.e. minus the constrained forward score (the target's *ASG graph*: a chain with a self-loop
per label, arcs weighted by the transitions) plus the full forward score (the *transition
graph*: one node per last label, every label reachable from every node). Both are
:func:`~gtn_py.ops.dense.dense_score` totals, so the gradients of the emissions and the
transitions come from the generic forward-backward.

There is no blank: label 0 is an ordinary class here. As in wav2letter, a target with a label
repeated twice in a row is ambiguous (its segments could merge); encode repeats with extra
"repeat" labels first if that matters.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from ..errors import InvalidGraphError, LabelError
from ..graph import NEG_INF, Graph, as_tensor, gather
from ..losses import reduce_losses
from ..ops.dense import LengthsLike, dense_score
from .ctc import TargetsLike, label_sequences


def _square(transitions: object) -> Tensor:
    """The ``[V, V]`` transition scores, checked."""
    transitions = as_tensor(transitions, "transitions", ndim=2)
    if transitions.shape[0] != transitions.shape[1]:
        raise InvalidGraphError(f"transitions must be square [V, V], got {tuple(transitions.shape)}")
    return transitions


def asg_transition_graph(transitions: Tensor) -> Graph:
    """The graph of all label sequences with transition scores: node 0 is the start (before the
    first frame), node ``1 + j`` means "last label was ``j``"; arcs ``0 -> 1 + j`` (weight 0) and
    ``1 + i -> 1 + j`` (weight ``transitions[i, j]``), both labelled ``j``."""
    transitions = _square(transitions)
    num_labels = transitions.shape[0]
    device = transitions.device
    labels = torch.arange(num_labels, device=device)
    prev = labels.repeat_interleave(num_labels)
    nxt = labels.repeat(num_labels)
    src = torch.cat([torch.zeros_like(labels), 1 + prev])
    dst = torch.cat([1 + labels, 1 + nxt])
    ilabel = torch.cat([labels, nxt])
    weights = torch.cat([transitions.new_zeros(num_labels), transitions.reshape(-1)])
    final = torch.zeros(num_labels + 1, dtype=transitions.dtype, device=device)
    start = torch.full_like(final, NEG_INF)
    start[0] = 0.0
    return Graph.from_tensors(src, dst, ilabel, ilabel, weights, start, final).check_weights()


def asg_target_graphs(targets: TargetsLike, target_lengths: LengthsLike, transitions: Tensor) -> Graph:
    """The ASG graphs of a batch of targets: target ``y_1 .. y_L`` gives a chain of ``L + 1`` nodes
    with arc ``k -> k + 1`` labelled ``y_{k+1}`` (weight ``transitions[y_k, y_{k+1}]``, 0 for the
    first) and a self-loop labelled ``y_k`` on node ``k >= 1`` (weight ``transitions[y_k, y_k]``)."""
    transitions = _square(transitions)
    num_labels = transitions.shape[0]
    chains = label_sequences(targets, target_lengths, dtype=transitions.dtype, device=transitions.device)
    labels = chains.ilabel
    if labels.numel() and int(labels.max()) >= num_labels:
        i = int((labels >= num_labels).nonzero()[0, 0])
        raise LabelError(f"target label {int(labels[i])} (position {i} of the concatenated targets) is "
                         f">= the number of labels {num_labels}")
    flat = transitions.reshape(-1)
    first = chains.start_weights[chains.src] > NEG_INF            # arcs leaving a chain's first node
    # The label before each arc is the previous arc's label (arcs of a chain are consecutive).
    previous = torch.cat([labels.new_zeros(1), labels[:-1]])
    step_weights = gather(flat, torch.where(first, -1, previous * num_labels + labels), 0.0)
    # Node k >= 1 of a chain is the destination of the arc labelled y_k: its self-loop.
    loop_weights = flat.index_select(0, labels * num_labels + labels)
    return Graph.from_tensors(
        torch.cat([chains.src, chains.dst]), torch.cat([chains.dst, chains.dst]),
        torch.cat([labels, labels]), torch.cat([labels, labels]),
        torch.cat([step_weights, loop_weights]), chains.start_weights, chains.final_weights,
        node_graph=chains.node_graph, num_graphs=chains.num_graphs)


def asg_loss(emissions: Tensor, targets: TargetsLike, transitions: Tensor, input_lengths: LengthsLike = None,
             target_lengths: LengthsLike = None, reduction: str = "mean") -> Tensor:
    """ASG loss of ``[B, T, V]`` emissions (batch first, as in wav2letter) with ``[V, V]``
    transition scores; targets as for :func:`~gtn_py.criteria.ctc.label_sequences`.
    ``reduction``: ``"none"`` (``[B]``), ``"sum"`` or ``"mean"`` (over the batch). A target that
    cannot fit its input (more labels than frames) has loss ``+inf`` and zero gradient."""
    emissions = as_tensor(emissions, "emissions", ndim=3)
    num_labels = emissions.shape[2]
    transitions = _square(transitions)
    if transitions.shape != (num_labels, num_labels):
        raise InvalidGraphError(f"transitions must be [{num_labels}, {num_labels}], got {tuple(transitions.shape)}")
    constrained = dense_score(asg_target_graphs(targets, target_lengths, transitions), emissions, input_lengths)
    full = dense_score(asg_transition_graph(transitions), emissions, input_lengths)
    # An impossible target: +inf, and `where` keeps the full score's gradient out of it.
    possible = torch.isfinite(constrained)
    losses = torch.where(possible, full - torch.where(possible, constrained, torch.zeros_like(constrained)),
                         torch.full_like(full, float("inf")))
    return reduce_losses(losses, reduction)


class ASGLoss(nn.Module):
    """ASG with trainable transitions ``[V, V]`` (initialised to zero, as in wav2letter)."""

    def __init__(self, num_labels: int, reduction: str = "mean", dtype: Union[torch.dtype, None] = None):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_labels, num_labels, dtype=dtype))
        self.reduction = reduction

    def forward(self, emissions: Tensor, targets: TargetsLike, input_lengths: LengthsLike = None,
                target_lengths: LengthsLike = None) -> Tensor:
        return asg_loss(emissions, targets, self.transitions, input_lengths, target_lengths, self.reduction)
