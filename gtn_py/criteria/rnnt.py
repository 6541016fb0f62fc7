"""RNN-T (the transducer loss of Graves 2012) as a graph: the alignment lattice of each sequence
is a gtn_py graph whose arc weights are a differentiable gather of the joiner's log-probabilities,
and the loss is minus its forward score.

For a sequence with ``T`` encoder frames and target ``y_1 .. y_U``, node ``(t, u)`` means "at frame
``t``, ``u`` labels emitted". From it a *blank* arc goes to ``(t + 1, u)`` with weight
``log p(blank | t, u)`` and a *label* arc to ``(t, u + 1)`` with weight ``log p(y_{u+1} | t, u)``;
the lattice starts at ``(0, 0)`` and ends with the blank out of ``(T - 1, U)`` (its final weight).
Every path is one alignment, so the forward score is ``log P(y | x)`` summed over alignments,
exactly, with the gradient of the forward-backward algorithm (gtn_py's closed-form backward of
acyclic distances). Its tropical total (``viterbi_score``) is the best alignment's score.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InvalidGraphError, LabelError
from ..graph import NEG_INF, Graph, as_frame_counts, as_integer, as_tensor, gather
from ..losses import reduce_losses
from ..ops.dense import LengthsLike
from ..ops.shortest import forward_score

__all__ = ["rnnt_lattice", "rnnt_loss"]


def rnnt_lattice(log_probs: Tensor, targets: Tensor, logit_lengths: LengthsLike, target_lengths: LengthsLike,
                 blank: int = 0) -> Graph:
    """The alignment lattices of a batch (see the module documentation) as one batch graph,
    from joiner log-probabilities ``[B, T, U + 1, V]`` and padded targets ``[B, U]`` (int), with
    ``logit_lengths`` (frames, >= 1) and ``target_lengths`` ``[B]``. Arcs are labelled with
    the class they emit (blank arcs ``blank``, label arcs the target label), so the lattice
    can be composed and searched like any graph; weights are differentiable gathers of
    ``log_probs``."""
    log_probs = as_tensor(log_probs, "log_probs", ndim=4)
    targets = as_tensor(targets, "targets", integer=True, ndim=2)
    num_seqs, max_frames, max_context, num_classes = log_probs.shape
    device = log_probs.device
    blank = as_integer(blank, "blank")
    if not 0 <= blank < num_classes:
        raise LabelError(f"blank = {blank} is outside the {num_classes} classes of log_probs (0..{num_classes - 1})")
    if targets.shape[0] != num_seqs:
        raise InvalidGraphError(f"{targets.shape[0]} target rows for {num_seqs} sequences of log_probs")
    frames = as_frame_counts(logit_lengths, num_seqs, max_frames, "logit_lengths", device)
    labels = as_frame_counts(target_lengths, num_seqs, min(targets.shape[1], max_context - 1), "target_lengths",
                             device)
    if bool((frames < 1).any()):
        b = int((frames < 1).nonzero()[0, 0])
        raise InvalidGraphError(f"logit_lengths[{b}] = 0: a transducer reads at least one frame")
    targets = targets.to(device)
    inside = torch.arange(targets.shape[1], device=device)[None, :] < labels[:, None]
    bad = (inside & ((targets < 0) | (targets >= num_classes) | (targets == blank))).nonzero()
    if bad.numel():
        seq, pos = int(bad[0, 0]), int(bad[0, 1])
        raise LabelError(f"targets[{seq}, {pos}] = {int(targets[seq, pos])} is not a label: labels are the "
                         f"{num_classes} classes of log_probs but the blank {blank}")

    # Nodes (b, t, u) with t < T_b and u <= U_b, in that order, numbered per sequence.
    width = labels + 1
    sizes = frames * width
    offsets = torch.cumsum(sizes, 0) - sizes
    node_seq = torch.repeat_interleave(torch.arange(num_seqs, device=device), sizes)
    local = torch.arange(int(sizes.sum()), device=device) - offsets[node_seq]
    t, u = local // width[node_seq], local % width[node_seq]
    # Where each node's distribution sits in log_probs.reshape(-1): ((b * T + t) * (U + 1) + u) * V.
    row = ((node_seq * max_frames + t) * max_context + u) * num_classes
    node = torch.arange(local.shape[0], device=device)
    is_blank = t + 1 < frames[node_seq]
    is_label = u < labels[node_seq]
    next_label = targets[node_seq, u.clamp(max=targets.shape[1] - 1)]
    src = torch.cat([node[is_blank], node[is_label]])
    dst = torch.cat([node[is_blank] + width[node_seq[is_blank]], node[is_label] + 1])
    emitted = torch.cat([torch.full_like(src[:int(is_blank.sum())], blank), next_label[is_label]])
    flat = log_probs.reshape(-1)
    weights = gather(flat, torch.cat([row[is_blank] + blank, row[is_label] + next_label[is_label]]))
    start = torch.where(local == 0, flat.new_zeros(()), flat.new_full((), NEG_INF))
    last = is_blank.logical_not() & is_label.logical_not()
    final = torch.where(last, gather(flat, row + blank), flat.new_full((), NEG_INF))
    return Graph.from_tensors(src, dst, emitted, emitted, weights, start, final, node_graph=node_seq,
                              num_graphs=num_seqs)


def rnnt_loss(logits: Tensor, targets: Tensor, logit_lengths: LengthsLike, target_lengths: LengthsLike,
              blank: int = 0, clamp: float = -1.0, reduction: str = "mean", fused_log_softmax: bool = True) -> Tensor:
    """The RNN-T loss with ``torchaudio.functional.rnnt_loss``'s arguments: joiner outputs
    ``logits`` ``[B, T, U + 1, V]`` (log-softmaxed over ``V`` here when ``fused_log_softmax``,
    else taken as log-probabilities), padded ``targets`` ``[B, U]``, ``logit_lengths`` and
    ``target_lengths`` ``[B]``. ``-log P(y | x)`` summed over all alignments, per sequence
    (``reduction="none"``), summed or averaged over the batch. ``clamp > 0`` clips the gradient
    of the log-probabilities to ``[-clamp, clamp]`` as torchaudio does. Exact, differentiable,
    float32 or float64; the lattice is :func:`rnnt_lattice`."""
    logits = as_tensor(logits, "logits", ndim=4)
    log_probs = logits.log_softmax(-1) if fused_log_softmax else logits
    if clamp > 0:
        log_probs = _ClampGradient.apply(log_probs, float(clamp))
    lattice = rnnt_lattice(log_probs, targets, logit_lengths, target_lengths, blank)
    return reduce_losses(-forward_score(lattice).reshape(-1), reduction)


class _ClampGradient(torch.autograd.Function):
    """Identity forward; the gradient clipped to ``[-clamp, clamp]`` (torchaudio's ``clamp``)."""

    @staticmethod
    def forward(ctx, values: Tensor, clamp: float) -> Tensor:  # type: ignore[override]
        ctx.clamp = clamp
        return values.view_as(values)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad.clamp(-ctx.clamp, ctx.clamp), None
