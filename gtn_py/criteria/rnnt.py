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

from ..errors import ArgumentTypeError, ArgumentValueError, InvalidGraphError, LabelError
from ..graph import NEG_INF, Graph, as_batch, as_frame_counts, as_integer, as_tensor, gather
from ..losses import reduce_losses
from ..ops.dense import GraphsLike, LengthsLike
from ..ops.shortest import forward_score
from .ctc import label_sequences

__all__ = ["rnnt_lattice", "rnnt_graph_lattice", "rnnt_loss", "rnnt_graph_loss", "rnnt_greedy_decode"]


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


State = Union[Tensor, Sequence[Tensor], None]


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
    encoder_out = as_tensor(encoder_out, "encoder_out", ndim=3)
    for name, function in (("predictor", predictor), ("joiner", joiner)):
        if not callable(function):
            raise ArgumentTypeError(f"{name} must be callable (a module or a function), not {type(function).__name__}")
    num_seqs, num_frames, _ = encoder_out.shape
    device = encoder_out.device
    blank = as_integer(blank, "blank")
    max_symbols = as_integer(max_symbols_per_frame, "max_symbols_per_frame", ArgumentValueError)
    if max_symbols < 1:
        raise ArgumentValueError(f"max_symbols_per_frame is {max_symbols}; it must be at least 1")
    lens = torch.full((num_seqs,), num_frames, dtype=torch.long, device=device) if lengths is None \
        else as_frame_counts(lengths, num_seqs, num_frames, "lengths", device)
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
