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

from typing import Callable, List, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import ArgumentTypeError, ArgumentValueError, InvalidGraphError, LabelError, NoStartError
from ..graph import (
    NEG_INF,
    Graph,
    as_batch,
    as_count,
    as_frame_counts,
    as_graph,
    as_integer,
    as_number,
    as_tensor,
    gather,
    unique_rows,
)
from ..losses import reduce_losses
from ..ops.dense import GraphsLike, LengthsLike
from ..ops.shortest import forward_score
from .ctc import label_sequences

__all__ = ["rnnt_lattice", "rnnt_graph_lattice", "rnnt_loss", "rnnt_graph_loss", "rnnt_greedy_decode",
           "rnnt_beam_search", "rnnt_loss_simple", "rnnt_prune_ranges", "rnnt_prune", "rnnt_loss_pruned"]


def rnnt_graph_lattice(log_probs: Tensor, target_graphs: GraphsLike, logit_lengths: LengthsLike,
                       blank: int = 0) -> Graph:
    """The RNN-T lattices of a batch of target graphs (alternative transcriptions, a lexicon
    from letters to words...), as one batch graph.

    ``log_probs`` ``[B, T, Q, V]`` are the joiner's log-probabilities at each frame and each
    *state* ``q`` of the sequence's target graph (its nodes numbered from 0 within the graph;
    ``Q`` at least the largest graph's node count): the prediction network's output after the
    labels that lead to ``q``, which the graph's states must determine (a linear chain, a trie, a
    lexicon's prefix tree). Node ``(t, q)`` of the lattice: a blank arc to ``(t + 1, q)``
    weighing ``log p(blank | t, q)``; for each target arc ``q -> q'`` with label ``y`` and weight
    ``w`` an arc to ``(t, q')`` weighing ``log p(y | t, q) + w``, with the target arc's output
    label (blank arcs output epsilon). Start: ``(0, q)`` with ``q``'s start weight; final:
    ``(T - 1, q)`` with ``q``'s final weight plus the closing blank. Every arc label of a target
    graph is a class of ``log_probs`` other than ``blank``. Differentiable w.r.t. ``log_probs``
    and the target graphs' weights."""
    log_probs = as_tensor(log_probs, "log_probs", ndim=4)
    graphs = as_batch(target_graphs, "target_graphs")
    num_seqs, max_frames, num_states, num_classes = log_probs.shape
    device = log_probs.device
    blank = as_integer(blank, "blank")
    if not 0 <= blank < num_classes:
        raise LabelError(f"blank = {blank} is outside the {num_classes} classes of log_probs (0..{num_classes - 1})")
    if graphs.num_graphs != num_seqs:
        raise InvalidGraphError(f"{graphs.num_graphs} target graphs for {num_seqs} sequences of log_probs")
    graphs = graphs.to(device)
    frames = as_frame_counts(logit_lengths, num_seqs, max_frames, "logit_lengths", device)
    if bool((frames < 1).any()):
        b = int((frames < 1).nonzero()[0, 0])
        raise InvalidGraphError(f"logit_lengths[{b}] = 0: a transducer reads at least one frame")
    bad = ((graphs.ilabel < 0) | (graphs.ilabel >= num_classes) | (graphs.ilabel == blank)).nonzero()
    if bad.numel():
        a = int(bad[0, 0])
        raise LabelError(f"target graph arc {a} reads {int(graphs.ilabel[a])}, which is not a label: labels are "
                         f"the {num_classes} classes of log_probs but the blank {blank}")
    states = torch.bincount(graphs.node_graph, minlength=num_seqs)
    if num_seqs and int(states.max()) > num_states:
        b = int(states.argmax())
        raise InvalidGraphError(f"target graph {b} has {int(states[b])} nodes but log_probs has {num_states} "
                                "state columns (dimension 2)")
    first_state = torch.cumsum(states, 0) - states
    state_in_graph = torch.arange(graphs.num_nodes, device=device) - first_state[graphs.node_graph]

    # Lattice nodes (b, t, q), t < T_b, q < N_b, numbered per sequence: offsets[b] + t * N_b + q.
    sizes = frames * states
    offsets = torch.cumsum(sizes, 0) - sizes
    node_seq = torch.repeat_interleave(torch.arange(num_seqs, device=device), sizes)
    local = torch.arange(int(sizes.sum()), device=device) - offsets[node_seq]
    t, q = local // states[node_seq], local % states[node_seq]
    node = torch.arange(local.shape[0], device=device)
    state = first_state[node_seq] + q  # the target graph's node
    # Where each lattice node's distribution sits in log_probs.reshape(-1).
    row = ((node_seq * max_frames + t) * num_states + q) * num_classes
    flat = log_probs.reshape(-1)
    # Blank arcs: to the next frame, same state.
    moves = t + 1 < frames[node_seq]
    blank_src = node[moves]
    # Label arcs: each target arc at each frame of its sequence.
    arc_seq = graphs.node_graph[graphs.src] if graphs.num_arcs else graphs.src
    repeats = frames[arc_seq]
    arc = torch.repeat_interleave(torch.arange(graphs.num_arcs, device=device), repeats)
    arc_t = torch.arange(arc.shape[0], device=device) - torch.repeat_interleave(torch.cumsum(repeats, 0) - repeats,
                                                                                 repeats)
    b_of_arc, src_state, dst_state = arc_seq[arc], state_in_graph[graphs.src[arc]], state_in_graph[graphs.dst[arc]]
    base = offsets[b_of_arc] + arc_t * states[b_of_arc]
    label_row = ((b_of_arc * max_frames + arc_t) * num_states + src_state) * num_classes
    src = torch.cat([blank_src, base + src_state])
    dst = torch.cat([blank_src + states[node_seq[moves]], base + dst_state])
    ilabel = torch.cat([torch.full_like(blank_src, blank), graphs.ilabel[arc]])
    olabel = torch.cat([torch.zeros_like(blank_src), graphs.olabel[arc]])
    weights = torch.cat([gather(flat, row[moves] + blank),
                         gather(flat, label_row + graphs.ilabel[arc]) + graphs.weights.index_select(0, arc)])
    none = flat.new_full((), NEG_INF)
    start = torch.where(t == 0, graphs.start_weights.index_select(0, state), none)
    closing = graphs.final_weights.index_select(0, state) + gather(flat, row + blank)
    final = torch.where(t + 1 == frames[node_seq], closing, none)
    return Graph.from_tensors(src, dst, ilabel, olabel, weights, start, final, node_graph=node_seq,
                              num_graphs=num_seqs)


def rnnt_lattice(log_probs: Tensor, targets: Tensor, logit_lengths: LengthsLike, target_lengths: LengthsLike,
                 blank: int = 0) -> Graph:
    """The alignment lattices of a batch (see the module documentation) as one batch graph,
    from joiner log-probabilities ``[B, T, U + 1, V]`` and padded targets ``[B, U]`` (int), with
    ``logit_lengths`` (frames, >= 1) and ``target_lengths`` ``[B]``: :func:`rnnt_graph_lattice`
    of the targets as linear chains (state ``u``: ``u`` labels emitted). Blank arcs read
    ``blank`` and write epsilon, label arcs read and write their label, so the lattice can be
    composed and searched like any graph; weights are differentiable gathers of ``log_probs``."""
    log_probs = as_tensor(log_probs, "log_probs", ndim=4)
    targets = as_tensor(targets, "targets", integer=True, ndim=2)
    if targets.shape[0] != log_probs.shape[0]:
        raise InvalidGraphError(f"{targets.shape[0]} target rows for {log_probs.shape[0]} sequences of log_probs")
    chains = label_sequences(targets, target_lengths, dtype=log_probs.dtype, device=log_probs.device)
    return rnnt_graph_lattice(log_probs, chains, logit_lengths, blank)


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


def rnnt_graph_loss(logits: Tensor, target_graphs: GraphsLike, logit_lengths: LengthsLike, blank: int = 0,
                    reduction: str = "mean", fused_log_softmax: bool = True) -> Tensor:
    """RNN-T against target graphs: ``-log`` of the total over every alignment of every path of
    each sequence's target graph (weighted by the graph), from joiner outputs ``[B, T, Q, V]``
    per target-graph state (see :func:`rnnt_graph_lattice`). With linear chains it is
    :func:`rnnt_loss`."""
    logits = as_tensor(logits, "logits", ndim=4)
    log_probs = logits.log_softmax(-1) if fused_log_softmax else logits
    lattice = rnnt_graph_lattice(log_probs, target_graphs, logit_lengths, blank)
    return reduce_losses(-forward_score(lattice).reshape(-1), reduction)


# ---------------------------------------------------------------- pruned RNN-T (k2's idea)
# The full joiner costs [B, T, U + 1, V] logits and as much again in gradients. An additive
# "simple" joiner (am[t] + lm[u], whose normaliser over V is one matrix product) scores the whole
# (t, u) grid cheaply; its alignment occupancies show, for each frame, the few u where the
# alignments are; the full joiner is then evaluated only on a band of ``s_range`` u per frame,
# and the exact loss of the band is the loss of the lattice with every arc outside it at -inf.
# Every lattice below is rnnt_lattice over two classes: 0 the blank, 1 "the next label".


def _next_label_lattice(scores: Tensor, logit_lengths: LengthsLike, target_lengths: LengthsLike) -> Graph:
    """The alignment lattices of ``scores`` ``[B, T, U + 1, 2]`` (the blank's and the next
    label's log-probability at each (t, u))."""
    num_seqs, _, context, _ = scores.shape
    chains = torch.ones((num_seqs, context - 1), dtype=torch.long, device=scores.device)
    return rnnt_lattice(scores, chains, logit_lengths, target_lengths, blank=0)


def _checked_targets(targets: Tensor, target_lengths: LengthsLike, num_seqs: int, num_classes: int,
                     blank: int) -> Tuple[Tensor, Tensor]:
    targets = as_tensor(targets, "targets", integer=True, ndim=2)
    if targets.shape[0] != num_seqs:
        raise InvalidGraphError(f"{targets.shape[0]} target rows for {num_seqs} sequences")
    lengths = as_frame_counts(target_lengths, num_seqs, targets.shape[1], "target_lengths", targets.device)
    used = torch.arange(targets.shape[1], device=targets.device)[None, :] < lengths[:, None]
    bad = (used & ((targets < 0) | (targets >= num_classes) | (targets == blank))).nonzero()
    if bad.numel():
        b, u = (int(x) for x in bad[0])
        raise LabelError(f"targets[{b}, {u}] = {int(targets[b, u])} is not a label: labels are the {num_classes} "
                         f"classes but the blank {blank}")
    return targets, lengths


def _simple_scores(am: Tensor, lm: Tensor, targets: Tensor, target_lengths: LengthsLike, blank: int) -> Tensor:
    """``[B, T, U + 1, 2]``: log-probabilities of the blank and of the next label under the
    additive joiner ``log_softmax(am[b, t] + lm[b, u])``, from ``am`` ``[B, T, V]`` and ``lm``
    ``[B, U + 1, V]``."""
    am = as_tensor(am, "am", ndim=3)
    lm = as_tensor(lm, "lm", ndim=3)
    num_seqs, _, num_classes = am.shape
    if lm.shape[0] != num_seqs or lm.shape[2] != num_classes:
        raise InvalidGraphError(f"lm has shape {tuple(lm.shape)}; am {tuple(am.shape)} needs [{num_seqs}, U + 1, "
                                f"{num_classes}]")
    blank = as_integer(blank, "blank")
    if not 0 <= blank < num_classes:
        raise LabelError(f"blank = {blank} is outside the {num_classes} classes (0..{num_classes - 1})")
    targets, _ = _checked_targets(targets, target_lengths, num_seqs, num_classes, blank)
    if lm.shape[1] != targets.shape[1] + 1:
        raise InvalidGraphError(f"lm has {lm.shape[1]} predictor steps; {targets.shape[1]} targets need "
                                f"{targets.shape[1] + 1}")
    am_peak = am.detach().amax(-1, keepdim=True)
    lm_peak = lm.detach().amax(-1, keepdim=True)
    # log sum_v exp(am[t, v] + lm[u, v]) for every (t, u), as one batched matrix product.
    normaliser = torch.bmm((am - am_peak).exp(), (lm - lm_peak).exp().transpose(1, 2)).log() \
        + am_peak + lm_peak.transpose(1, 2)
    blank_score = am[:, :, blank, None] + lm[:, None, :, blank]
    following = torch.cat([targets, targets.new_full((num_seqs, 1), blank)], 1).to(am.device)  # [B, U + 1]
    am_label = am.gather(2, following[:, None, :].expand(-1, am.shape[1], -1))  # [B, T, U + 1]
    label_score = am_label + lm.gather(2, following[:, :, None])[:, :, 0][:, None, :]
    return torch.stack([blank_score, label_score], -1) - normaliser[..., None]


def rnnt_loss_simple(am: Tensor, lm: Tensor, targets: Tensor, logit_lengths: LengthsLike,
                     target_lengths: LengthsLike, blank: int = 0, reduction: str = "mean",
                     s_range: int | None = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """The RNN-T loss of the additive ("simple") joiner ``log_softmax(am[b, t] + lm[b, u])``:
    ``am`` ``[B, T, V]`` projected from the encoder, ``lm`` ``[B, U + 1, V]`` from the prediction
    network (after blank, then each target). Equal to :func:`rnnt_loss` of the logits
    ``am[:, :, None] + lm[:, None]``, without making them: memory ``[B, T, U + 1]``. Trained
    beside the pruned loss (it teaches ``am`` and ``lm`` where the alignments are). With
    ``s_range``, also returns :func:`rnnt_prune_ranges`'s bands, taken from this loss's own
    lattice (one lattice instead of two: the occupancies are its gradient)."""
    scores = _simple_scores(am, lm, targets, target_lengths, blank)
    totals = forward_score(_next_label_lattice(scores, logit_lengths, target_lengths)).reshape(-1)
    loss = reduce_losses(-totals, reduction)
    if s_range is None:
        return loss
    width = as_count(s_range, "s_range", least=2)
    with torch.enable_grad():
        (occupancy,) = torch.autograd.grad(totals.sum(), scores, retain_graph=True, allow_unused=True) \
            if scores.requires_grad else (None,)
    if occupancy is None:  # nothing to differentiate: the ranges' own lattice
        return loss, rnnt_prune_ranges(am, lm, targets, logit_lengths, target_lengths, width, blank)
    return loss, _bands(occupancy.detach(), logit_lengths, target_lengths, width)


def rnnt_prune_ranges(am: Tensor, lm: Tensor, targets: Tensor, logit_lengths: LengthsLike,
                      target_lengths: LengthsLike, s_range: int, blank: int = 0) -> Tensor:
    """For each frame, the first ``u`` of a band of ``s_range`` consecutive ``u`` ``[B, T]``
    (long) holding the most alignment probability under the simple joiner (its occupancies, the
    gradient of its forward score), adjusted so that a path stays inside: the first frame's band
    starts at 0, the last one's ends at ``U``, and each band starts at or after the previous one's
    start and at most ``s_range - 1`` after it. A sequence whose ``U`` labels need more than
    ``s_range - 1`` labels per frame has no path in its band (its pruned loss is +inf). No
    gradient flows through the ranges. (``rnnt_loss_simple(..., s_range=S)`` gives the loss and
    these ranges from one lattice.)"""
    width = as_count(s_range, "s_range", least=2)
    am, lm = as_tensor(am, "am", ndim=3), as_tensor(lm, "lm", ndim=3)
    with torch.enable_grad():
        scores = _simple_scores(am.detach(), lm.detach(), targets, target_lengths, blank).detach().requires_grad_()
        total = forward_score(_next_label_lattice(scores, logit_lengths, target_lengths))
        (occupancy,) = torch.autograd.grad(total.sum(), scores)
    return _bands(occupancy, logit_lengths, target_lengths, width)


def _bands(occupancy: Tensor, logit_lengths: LengthsLike, target_lengths: LengthsLike, width: int) -> Tensor:
    """:func:`rnnt_prune_ranges` from the occupancies ``[B, T, U + 1, 2]`` of the simple lattice."""
    num_seqs, num_frames, context, _ = occupancy.shape
    device = occupancy.device
    frames = as_frame_counts(logit_lengths, num_seqs, num_frames, "logit_lengths", device)
    labels = as_frame_counts(target_lengths, num_seqs, context - 1, "target_lengths", device)
    last_start = (labels + 1 - width).clamp(min=0)[:, None]  # [B, 1]
    if context <= width:
        return torch.zeros((num_seqs, num_frames), dtype=torch.long, device=device)
    # Probability in each band [s, s + width) of each frame; bands past a sequence's U excluded.
    visits = torch.cat([occupancy.sum(-1).new_zeros(num_seqs, num_frames, 1), occupancy.sum(-1).cumsum(-1)], -1)
    band = visits[:, :, width:] - visits[:, :, :-width]  # [B, T, context + 1 - width]
    start = torch.arange(band.shape[2], device=device)
    band = torch.where(start[None, None, :] <= last_start[:, :, None], band, band.new_full((), -1.0))
    best = band.argmax(-1)
    t = torch.arange(num_frames, device=device)[None, :]
    step = width - 1
    low = (last_start - (frames[:, None] - 1 - t) * step).clamp(min=0)
    high = torch.minimum(last_start, t * step)
    best = torch.cummax(torch.maximum(torch.minimum(best, high), low), 1).values
    # No gap wider than a band between frames: pull each start up to within `step` of the next.
    lag = torch.where(t < frames[:, None], best - t * step, torch.full_like(best, -(1 << 40)))
    best = torch.maximum(best, torch.flip(torch.cummax(torch.flip(lag, [1]), 1).values, [1]) + t * step)
    return torch.minimum(best, last_start)


def rnnt_prune(encoder_out: Tensor, predictor_out: Tensor, ranges: Tensor, s_range: int) -> Tuple[Tensor, Tensor]:
    """The joiner's inputs on the bands: ``encoder_out`` ``[B, T, J]`` expanded to ``[B, T, S, J]``
    and ``predictor_out`` ``[B, U + 1, J]`` gathered at ``u = ranges[b, t] + s`` (``S =
    s_range``; past ``U``, the last step), for ``joiner(...) -> logits [B, T, S, V]``."""
    encoder_out = as_tensor(encoder_out, "encoder_out", ndim=3)
    predictor_out = as_tensor(predictor_out, "predictor_out", ndim=3)
    width = as_count(s_range, "s_range", least=1)
    ranges = as_tensor(ranges, "ranges", integer=True, ndim=2)
    num_seqs, num_frames, dim = encoder_out.shape
    if tuple(ranges.shape) != (num_seqs, num_frames) or predictor_out.shape[0] != num_seqs:
        raise InvalidGraphError(f"ranges {tuple(ranges.shape)} and predictor_out {tuple(predictor_out.shape)} do "
                                f"not match encoder_out {tuple(encoder_out.shape)}: [B, T] and [B, U + 1, J]")
    u = (ranges[:, :, None] + torch.arange(width, device=ranges.device)).clamp(0, predictor_out.shape[1] - 1)
    gathered = predictor_out.gather(1, u.reshape(num_seqs, -1, 1).expand(-1, -1, predictor_out.shape[2]))
    return (encoder_out[:, :, None].expand(-1, -1, width, -1),
            gathered.reshape(num_seqs, num_frames, width, predictor_out.shape[2]))


def rnnt_loss_pruned(logits: Tensor, targets: Tensor, ranges: Tensor, logit_lengths: LengthsLike,
                     target_lengths: LengthsLike, blank: int = 0, reduction: str = "mean",
                     fused_log_softmax: bool = True) -> Tensor:
    """The RNN-T loss over the alignments inside the bands: joiner ``logits`` ``[B, T, S, V]`` at
    ``u = ranges[b, t] + s`` (from :func:`rnnt_prune_ranges` and :func:`rnnt_prune`), every arc
    outside the bands at -inf. Exact for the band: with ``S > U`` it is :func:`rnnt_loss`; with
    fewer, a sum over fewer alignments, so at least the exact loss."""
    logits = as_tensor(logits, "logits", ndim=4)
    log_probs = logits.log_softmax(-1) if fused_log_softmax else logits
    num_seqs, num_frames, width, num_classes = log_probs.shape
    blank = as_integer(blank, "blank")
    if not 0 <= blank < num_classes:
        raise LabelError(f"blank = {blank} is outside the {num_classes} classes of logits (0..{num_classes - 1})")
    targets, labels = _checked_targets(targets, target_lengths, num_seqs, num_classes, blank)
    ranges = as_tensor(ranges, "ranges", integer=True, ndim=2).to(log_probs.device)
    if tuple(ranges.shape) != (num_seqs, num_frames):
        raise InvalidGraphError(f"ranges has shape {tuple(ranges.shape)}; logits need [{num_seqs}, {num_frames}]")
    context = targets.shape[1] + 1
    u = ranges[:, :, None] + torch.arange(width, device=log_probs.device)  # [B, T, S]
    inside = (u >= 0) & (u <= labels.to(u.device)[:, None, None])
    following = torch.cat([targets, targets.new_zeros(num_seqs, 1)], 1).to(log_probs.device)
    label = following.gather(1, u.clamp(0, context - 1).reshape(num_seqs, -1)).reshape(u.shape)
    pair = torch.stack([log_probs[..., blank], log_probs.gather(-1, label[..., None])[..., 0]], -1)
    # Each band cell to its (t, u); cells outside the lattice to a spare column, dropped.
    column = torch.where(inside, u, torch.full_like(u, context))[..., None].expand(-1, -1, -1, 2)
    scores = log_probs.new_full((num_seqs, num_frames, context + 1, 2), NEG_INF).scatter(2, column, pair)
    lattice = _next_label_lattice(scores[:, :, :context], logit_lengths, labels)
    return reduce_losses(-forward_score(lattice).reshape(-1), reduction)


State = Union[Tensor, Sequence[Tensor], None]


def _decoding_inputs(encoder_out: Tensor, lengths: LengthsLike, predictor: object, joiner: object,
                     blank: int) -> Tuple[Tensor, Tensor, int]:
    """The checked arguments of the decoders: ``encoder_out`` ``[B, T, D]``, the lengths ``[B]``
    (None: all ``T``) and the blank."""
    encoder_out = as_tensor(encoder_out, "encoder_out", ndim=3)
    for name, function in (("predictor", predictor), ("joiner", joiner)):
        if not callable(function):
            raise ArgumentTypeError(f"{name} must be callable (a module or a function), not {type(function).__name__}")
    num_seqs, num_frames, _ = encoder_out.shape
    lens = torch.full((num_seqs,), num_frames, dtype=torch.long, device=encoder_out.device) if lengths is None \
        else as_frame_counts(lengths, num_seqs, num_frames, "lengths", encoder_out.device)
    return encoder_out, lens, as_integer(blank, "blank")


def rnnt_greedy_decode(encoder_out: Tensor, lengths: LengthsLike,
                       predictor: Callable[[Tensor, State], Tuple[Tensor, State]],
                       joiner: Callable[[Tensor, Tensor], Tensor], blank: int = 0,
                       max_symbols_per_frame: int = 10) -> List[List[int]]:
    """Greedy decoding of an RNN-T model, a batch at once: at each frame the joiner's most likely
    class; a label is emitted and fed to the prediction network, and the joiner is asked again at
    the same frame (at most ``max_symbols_per_frame`` labels per frame); blank moves on to the
    next frame.

    ``encoder_out`` ``[B, T, D]`` with ``lengths`` ``[B]`` (None: all ``T``);
    ``predictor(labels [B] long, state) -> (output [B, H], state)``, called first with every label
    ``blank`` and state None (the start of every hypothesis), its state a tensor or a tuple/list of
    tensors with the batch in dimension 0 (rows that emit nothing keep theirs);
    ``joiner(encoder frames [B, D], predictor outputs [B, H]) -> logits [B, V]``. Returns the
    labels of each sequence. Runs without gradients."""
    encoder_out, lens, blank = _decoding_inputs(encoder_out, lengths, predictor, joiner, blank)
    num_seqs, device = encoder_out.shape[0], encoder_out.device
    max_symbols = as_integer(max_symbols_per_frame, "max_symbols_per_frame", ArgumentValueError)
    if max_symbols < 1:
        raise ArgumentValueError(f"max_symbols_per_frame is {max_symbols}; it must be at least 1")
    hypotheses: List[List[int]] = [[] for _ in range(num_seqs)]
    with torch.no_grad():
        output, state = predictor(torch.full((num_seqs,), blank, dtype=torch.long, device=device), None)
        for t in range(int(lens.max()) if num_seqs else 0):
            asking = t < lens
            for _ in range(max_symbols):
                logits = joiner(encoder_out[:, t], output)
                if not 0 <= blank < logits.shape[-1]:
                    raise LabelError(f"blank = {blank} is outside the {logits.shape[-1]} classes of the joiner")
                best = logits.argmax(-1)
                emit = asking & (best != blank)
                rows = emit.nonzero().reshape(-1).tolist()
                if not rows:
                    break
                for b, label in zip(rows, best[emit].tolist()):
                    hypotheses[b].append(label)
                new_output, new_state = predictor(torch.where(emit, best, torch.full_like(best, blank)), state)
                output = torch.where(emit[:, None], new_output, output)
                state = _keep_rows(emit, new_state, state)
                asking = emit  # only the rows that emitted ask again at this frame
    return hypotheses


def rnnt_beam_search(encoder_out: Tensor, lengths: LengthsLike,
                     predictor: Callable[[Tensor, State], Tuple[Tensor, State]],
                     joiner: Callable[[Tensor, Tensor], Tensor], beam: int = 4, blank: int = 0,
                     grammar: Graph | None = None, grammar_scale: float = 1.0) -> List[List[int]]:
    """Beam search of an RNN-T model, a batch at once, optionally through a ``grammar``.

    Time-synchronous with at most one label per frame (the "modified beam search" of k2 and
    icefall): at each frame every hypothesis either reads the frame with a blank or emits one
    label, scored by the joiner's log-softmax; hypotheses that reach the same label sequence (and
    grammar state) are merged by adding their probabilities (exactly: sequences are nodes of a
    prefix tree, never hashes), and the ``beam`` best are kept. The answer of each sequence is the
    best hypothesis after its last frame. With ``beam`` at least the number of label sequences
    the frames allow, this is the exact most probable sequence under the one-label-per-frame
    topology.

    ``grammar`` (optional): an epsilon-free acceptor over the labels, deterministic on its input
    labels (``determinize`` it first if not), whose arc weights, times ``grammar_scale``, are
    added when a label is emitted and whose final weights end each hypothesis (a hypothesis
    whose grammar state is not final scores -inf; a sequence with no final hypothesis gets ``[]``).
    Its start states (at most ``beam``, best first) begin the search.

    ``encoder_out``, ``lengths``, ``predictor`` and ``joiner`` as for :func:`rnnt_greedy_decode`
    (the predictor's state may also be a tensor or tuple with the batch in dimension 0). Runs
    without gradients."""
    encoder_out, lens, blank = _decoding_inputs(encoder_out, lengths, predictor, joiner, blank)
    num_seqs, device = encoder_out.shape[0], encoder_out.device
    width = as_count(beam, "beam", least=1)
    scale = as_number(grammar_scale, "grammar_scale")
    if num_seqs == 0:
        return []
    seq_of_row = torch.arange(num_seqs, device=device).repeat_interleave(width)
    with torch.no_grad():
        output, state = predictor(torch.full((num_seqs,), blank, dtype=torch.long, device=device), None)
        output, state = output.index_select(0, seq_of_row), _select_rows(state, seq_of_row)
        num_classes = joiner(encoder_out[:1, 0], output[:1]).shape[-1]
        if not 0 <= blank < num_classes:
            raise LabelError(f"blank = {blank} is outside the {num_classes} classes of the joiner")
        search = _GrammarSearch(grammar, num_classes, blank, width, scale, device)
        score, gstate = search.starts(num_seqs)
        score = score.to(torch.promote_types(encoder_out.dtype, torch.float32))
        tree = _PrefixTree(num_classes, device)
        node = torch.zeros_like(gstate)  # the empty sequence
        label = torch.arange(num_classes, device=device)
        for t in range(int(lens.max())):
            active = (t < lens)[:, None, None]
            frames = encoder_out[:, t].index_select(0, seq_of_row)
            log_probs = joiner(frames, output).to(score.dtype).log_softmax(-1).reshape(num_seqs, width, -1)
            # Candidate (k, v): hypothesis k reads frame t with blank (v = blank) or emits v.
            stays = label == blank
            next_state, arc_score = search.step(gstate)
            candidate = score[:, :, None] + torch.where(active, log_probs, torch.zeros_like(log_probs))
            candidate = torch.where(stays, candidate, candidate + arc_score.to(score.dtype))
            candidate = torch.where(active | stays, candidate, torch.full_like(candidate, NEG_INF))
            cand_node = torch.where(stays, node[:, :, None], tree.children(node))
            cand_state = torch.where(stays, gstate[:, :, None], next_state)
            score, chosen = _merge_and_keep(candidate.reshape(num_seqs, -1), cand_node.reshape(num_seqs, -1),
                                            cand_state.reshape(num_seqs, -1), width)
            parent, emitted = chosen // num_classes, chosen % num_classes
            alive = torch.isfinite(score)
            none = torch.zeros_like(gstate)
            node = tree.settle(torch.where(alive, cand_node.reshape(num_seqs, -1).gather(1, chosen), none))
            gstate = torch.where(alive, cand_state.reshape(num_seqs, -1).gather(1, chosen), none)
            rows_of_parent = (torch.arange(num_seqs, device=device)[:, None] * width + parent).reshape(-1)
            output, state = output.index_select(0, rows_of_parent), _select_rows(state, rows_of_parent)
            emits = (alive & (emitted != blank)).reshape(-1)
            if bool(emits.any()):
                new_output, new_state = predictor(torch.where(emits, emitted.reshape(-1), blank), state)
                output = torch.where(emits[:, None], new_output, output)
                state = _keep_rows(emits, new_state, state)
        final = score + search.final_scores(gstate).to(score.dtype)
        best = final.argmax(1)
        reached = torch.isfinite(final.gather(1, best[:, None]))[:, 0]
        return tree.sequences(torch.where(reached, node.gather(1, best[:, None])[:, 0], torch.zeros_like(best)))


def _merge_and_keep(scores: Tensor, nodes: Tensor, states: Tensor, width: int) -> Tuple[Tensor, Tensor]:
    """Per row of ``scores`` ``[B, C]``, the candidates with the same (prefix-tree node, grammar
    state) merged by log-adding their scores (kept at the first of them), then the ``width`` best:
    their scores and candidate indices ``[B, width]``."""
    num_rows, num_candidates = scores.shape
    row = torch.arange(num_rows, device=scores.device).repeat_interleave(num_candidates)
    _, group = unique_rows([row, nodes.reshape(-1), states.reshape(-1)])
    flat = scores.reshape(-1)
    num_groups = int(group.max()) + 1
    peak = flat.new_full((num_groups,), NEG_INF).scatter_reduce(0, group, flat, "amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    mass = flat.new_zeros(num_groups).index_add_(0, group, (flat - peak[group]).exp())
    index = torch.arange(flat.shape[0], device=scores.device)
    first = torch.full((num_groups,), flat.shape[0], device=scores.device).scatter_reduce(0, group, index, "amin")
    merged = torch.where(first[group] == index, mass.log()[group] + peak[group], flat.new_full((), NEG_INF))
    return merged.reshape(num_rows, num_candidates).topk(min(width, num_candidates), dim=1)


class _PrefixTree:
    """Label sequences as nodes of a prefix tree (node 0: the empty sequence), so that equal
    sequences have equal ids. Children not yet in the tree get provisional ids ``-(parent * V +
    label) - 1``, made permanent by :meth:`settle` for the hypotheses that survive."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.parent = torch.full((1,), -1, dtype=torch.long, device=device)
        self.label = torch.full((1,), -1, dtype=torch.long, device=device)
        self.keys = torch.zeros(0, dtype=torch.long, device=device)  # parent * V + label, sorted
        self.ids = torch.zeros(0, dtype=torch.long, device=device)

    def children(self, nodes: Tensor) -> Tensor:
        """``[..., V]``: the id of each node's child by each label (provisional where new)."""
        query = nodes[..., None] * self.num_classes + torch.arange(self.num_classes, device=nodes.device)
        if not self.keys.numel():
            return -query - 1
        at = torch.searchsorted(self.keys, query).clamp(max=self.keys.shape[0] - 1)
        return torch.where(self.keys[at] == query, self.ids[at], -query - 1)

    def settle(self, nodes: Tensor) -> Tensor:
        """``nodes`` with their provisional ids replaced by new permanent ones."""
        new = nodes < 0
        if not bool(new.any()):
            return nodes
        keys, slot = torch.unique(-nodes[new] - 1, return_inverse=True)
        ids = torch.arange(keys.shape[0], device=nodes.device) + self.parent.shape[0]
        self.parent = torch.cat([self.parent, keys // self.num_classes])
        self.label = torch.cat([self.label, keys % self.num_classes])
        self.keys, order = torch.sort(torch.cat([self.keys, keys]))
        self.ids = torch.cat([self.ids, ids])[order]
        return nodes.masked_scatter(new, ids[slot])

    def sequences(self, nodes: Tensor) -> List[List[int]]:
        """The label sequence of each node of ``nodes`` ``[B]``."""
        steps = []
        while bool((nodes > 0).any()):
            steps.append(torch.where(nodes > 0, self.label[nodes], -1))
            nodes = torch.where(nodes > 0, self.parent[nodes], nodes)
        if not steps:
            return [[] for _ in range(nodes.shape[0])]
        table = torch.stack(steps[::-1], 1).tolist()
        return [[x for x in row if x >= 0] for row in table]


class _GrammarSearch:
    """What beam search asks of its grammar (none: every label allowed, no scores): start states
    and scores, each state's successor and score by each label (a sorted arc table), final scores."""

    def __init__(self, grammar: Graph | None, num_classes: int, blank: int, width: int, scale: float,
                 device: torch.device):
        self.num_classes, self.width, self.device = num_classes, width, device
        self.graph = None if grammar is None else as_graph(grammar, "grammar").to(device)
        if self.graph is None:
            return
        g = self.graph
        if g.num_graphs != 1:
            raise InvalidGraphError(f"grammar is a batch of {g.num_graphs} graphs; beam search takes one grammar")
        bad = ((g.ilabel <= 0) | (g.ilabel >= num_classes) | (g.ilabel == blank)).nonzero()
        if bad.numel():
            a = int(bad[0, 0])
            raise LabelError(f"grammar arc {a} reads {int(g.ilabel[a])}: grammar labels are the joiner's classes "
                             f"1..{num_classes - 1} but the blank {blank} (0 is epsilon: remove_epsilon first)")
        keys, order = torch.sort(g.src * num_classes + g.ilabel)
        twice = (keys[1:] == keys[:-1]).nonzero()
        if twice.numel():
            a = int(order[int(twice[0, 0])])
            raise InvalidGraphError(f"grammar node {int(g.src[a])} has two arcs reading label {int(g.ilabel[a])}: "
                                    "beam search needs a grammar deterministic on its input labels (determinize it)")
        self.keys, self.next_state = keys, g.dst[order]
        self.arc_score = scale * g.weights.detach()[order]
        self.final = scale * g.final_weights.detach()

    def starts(self, num_seqs: int) -> Tuple[Tensor, Tensor]:
        """Scores and grammar states ``[B, width]`` of the first hypotheses (unused slots -inf)."""
        score = torch.full((num_seqs, self.width), NEG_INF, device=self.device)
        state = torch.zeros((num_seqs, self.width), dtype=torch.long, device=self.device)
        if self.graph is None:
            score[:, 0] = 0.0
            return score, state
        start = self.graph.start_weights.detach()
        if not bool(torch.isfinite(start).any()):
            raise NoStartError("grammar has no start state")
        best = start.topk(min(self.width, start.shape[0]))
        count = int(torch.isfinite(best.values).sum())
        score[:, :count] = best.values[:count].to(score.dtype)
        state[:, :count] = best.indices[:count]
        return score, state

    def step(self, states: Tensor) -> Tuple[Tensor, Tensor]:
        """``[..., V]``: each state's successor by each label and the score added (-inf: no arc)."""
        shape = (*states.shape, self.num_classes)
        if self.graph is None:
            return torch.zeros(shape, dtype=torch.long, device=self.device), torch.zeros(shape, device=self.device)
        query = states[..., None] * self.num_classes + torch.arange(self.num_classes, device=self.device)
        if not self.keys.numel():
            return torch.zeros_like(query), torch.full(shape, NEG_INF, device=self.device)
        at = torch.searchsorted(self.keys, query).clamp(max=self.keys.shape[0] - 1)
        found = self.keys[at] == query
        return (torch.where(found, self.next_state[at], torch.zeros_like(query)),
                torch.where(found, self.arc_score[at], torch.full((), NEG_INF, device=self.device)))

    def final_scores(self, states: Tensor) -> Tensor:
        return torch.zeros(states.shape, device=self.device) if self.graph is None else self.final[states]


def _select_rows(state: State, rows: Tensor) -> State:
    """The predictor state's rows ``rows`` (batch in dimension 0 of each tensor)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.index_select(0, rows)
    selected = [s.index_select(0, rows) for s in state]
    return tuple(selected) if isinstance(state, tuple) else selected


def _keep_rows(take: Tensor, new: State, old: State) -> State:
    """``new``'s rows where ``take``, ``old``'s elsewhere (batch in dimension 0 of each tensor; a
    state is a tensor or a tuple/list of tensors)."""
    if new is None or old is None:
        return new
    if isinstance(new, Tensor) and isinstance(old, Tensor):
        return torch.where(take.reshape(-1, *([1] * (new.dim() - 1))), new, old)
    if isinstance(new, Tensor) or isinstance(old, Tensor):  # a tensor, then a sequence of them
        raise InvalidGraphError("the predictor's state changed form between calls (a tensor and a sequence)")
    kept = [torch.where(take.reshape(-1, *([1] * (n.dim() - 1))), n, o) for n, o in zip(new, old)]
    return tuple(kept) if isinstance(new, tuple) else kept


class _ClampGradient(torch.autograd.Function):
    """Identity forward; the gradient clipped to ``[-clamp, clamp]`` (torchaudio's ``clamp``)."""

    @staticmethod
    def forward(ctx, values: Tensor, clamp: float) -> Tensor:  # type: ignore[override]
        ctx.clamp = clamp
        return values.view_as(values)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad.clamp(-ctx.clamp, ctx.clamp), None
