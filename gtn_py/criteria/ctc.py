"""Connectionist temporal classification on the general dense intersection.

The CTC loss of a target is ``-log`` of the total score of its *CTC-expanded graph* (optional
blanks between and around the labels, each label repeated over one or more frames) intersected
with the network's log-probabilities: :func:`ctc_expand` builds that graph for any epsilon-free
target graph (one transcription, alternatives, a lexicon, a grammar), :func:`ctc_graph` for
padded or concatenated label sequences, and the loss is :func:`~gtn_py.ops.dense.dense_score`
of it, so gradients come from the generic forward-backward (there is no CTC-special kernel).

:func:`ctc_loss` and :class:`CTCLoss` take exactly the arguments of
``torch.nn.functional.ctc_loss`` / ``torch.nn.CTCLoss`` (log-probabilities ``[T, B, V]``).
One difference: torch's gradient w.r.t. ``log_probs`` assumes they come from ``log_softmax``
(it adds ``exp(log_probs)``, which the softmax's backward cancels); gtn_py's is the exact
gradient w.r.t. ``log_probs`` (it passes gradcheck). Both give the same gradients for the
logits before a ``log_softmax``, which is how CTC is used.

The blank is an ordinary emission column (0 by default): in a dense intersection label 0 is
column 0, not epsilon.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import DtypeMismatchError, InvalidGraphError, LabelError
from ..graph import NEG_INF, Graph, as_batch, as_count, as_frame_counts, as_whole_numbers, gather
from ..losses import reduce_losses
from ..ops.compose import compose, remove_epsilon
from ..ops.dense import GraphsLike, LengthsLike, dense_score, viterbi_align
from ..ops.traverse import group_arcs
from ..semiring import Semiring

TargetsLike = Union[Tensor, Sequence[Sequence[int]]]


def ctc_expand(graphs: GraphsLike, blank: int = 0) -> Graph:
    """The CTC expansion of epsilon-free label graphs (acceptors or transducers).

    For every node ``q`` of a graph there is a *blank state* (``q`` reached, last frame blank
    or nothing read yet) and for every arc ``a`` a *label state* (``a``'s label just read, at
    ``a``'s destination). Arcs, each reading one frame: a blank self-loop on blank states;
    entering ``a``'s label state from the blank state of ``a``'s source or, when the labels
    differ, from the label state of an arc into that source (a repeated label needs a blank in
    between); a self-loop on label states (the label held over several frames); a blank from
    ``a``'s label state to its destination's blank state. The arc entering a label state carries
    the graph arc's weight and output label; the others weigh 0 and output epsilon, so the
    output of a path is the collapsed transcription. Start weights sit on blank states, final
    weights on blank and label states of final nodes. Differentiable w.r.t. the graph weights.

    Every arc reads a frame, so label 0 is not epsilon here (remove epsilons first); an arc
    labelled ``blank`` raises :class:`LabelError`. Works on batches (nodes stay grouped by graph).
    """
    if isinstance(blank, bool) or not isinstance(blank, int) or blank < 0:
        raise LabelError(f"blank must be a class index >= 0, got {blank!r}")
    g = as_batch(graphs)
    num_nodes, num_arcs, device = g.num_nodes, g.num_arcs, g.device
    src, dst, ilabel, olabel = g.src, g.dst, g.ilabel, g.olabel
    bad = (ilabel == blank).nonzero()
    if bad.numel():
        a = int(bad[0, 0])
        raise LabelError(f"arc {a}: ilabel {blank} is the CTC blank (and label 0 is epsilon elsewhere); "
                         "a target graph must be epsilon-free and must not contain the blank")
    # Pairs (a, b) of consecutive arcs (dst of a == src of b) with different labels.
    order, offsets = group_arcs(src, num_nodes)
    # (index_select rather than advanced indexing throughout: on the CPU, small advanced-indexing
    # ops wake torch's thread pool, which costs milliseconds each on a busy machine.)
    follow = (offsets[1:] - offsets[:-1]).index_select(0, dst)
    arcs = torch.arange(num_arcs, device=device)
    first = _repeat_ids(follow)  # arc a, follow[a] times
    slot = torch.arange(first.shape[0], device=device) - (torch.cumsum(follow, 0) - follow).index_select(0, first)
    second = order.index_select(0, offsets.index_select(0, dst.index_select(0, first)) + slot)
    differ = (ilabel.index_select(0, first) != ilabel.index_select(0, second)).nonzero().reshape(-1)
    first, second = first.index_select(0, differ), second.index_select(0, differ)

    nodes = torch.arange(num_nodes, device=device)
    label_state = num_nodes + arcs

    def const(value: int, count: int) -> Tensor:
        return torch.full((count,), value, dtype=torch.long, device=device)

    new_src = torch.cat([nodes, src, label_state, label_state, num_nodes + first])
    new_dst = torch.cat([nodes, label_state, label_state, dst, num_nodes + second])
    second_ilabel, second_olabel = ilabel.index_select(0, second), olabel.index_select(0, second)
    new_ilabel = torch.cat([const(blank, num_nodes), ilabel, ilabel, const(blank, num_arcs), second_ilabel])
    new_olabel = torch.cat([const(0, num_nodes), olabel, const(0, 2 * num_arcs), second_olabel])
    arc_map = torch.cat([const(-1, num_nodes), arcs, const(-1, 2 * num_arcs), second])
    weights = gather(g.weights, arc_map, 0.0)
    start = torch.cat([g.start_weights, g.start_weights.new_full((num_arcs,), NEG_INF)])
    final = torch.cat([g.final_weights, g.final_weights.index_select(0, dst)])
    if not g.is_batch:
        return Graph.from_tensors(new_src, new_dst, new_ilabel, new_olabel, weights, start, final)
    # Keep each graph's nodes (and arcs) together, as Graph.batch lays them out.
    node_graph = torch.cat([g.node_graph, g.arc_graph])
    perm = torch.argsort(node_graph, stable=True)
    renumber = torch.empty_like(perm).index_copy_(0, perm, torch.arange(perm.shape[0], device=device))
    arc_order = torch.argsort(node_graph.index_select(0, new_src), stable=True)

    def arcs_in_order(values: Tensor) -> Tensor:
        return values.index_select(0, arc_order)

    def nodes_in_order(values: Tensor) -> Tensor:
        return values.index_select(0, perm)

    return Graph.from_tensors(renumber.index_select(0, arcs_in_order(new_src)),
                               renumber.index_select(0, arcs_in_order(new_dst)), arcs_in_order(new_ilabel),
                               arcs_in_order(new_olabel), arcs_in_order(weights), nodes_in_order(start),
                               nodes_in_order(final), node_graph=nodes_in_order(node_graph), num_graphs=g.num_graphs)


def _repeat_ids(counts: Tensor) -> Tensor:
    """``torch.repeat_interleave(counts)`` (``i`` repeated ``counts[i]`` times) from a bincount
    and a cumsum, which stay off torch's CPU thread pool for small inputs."""
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1]) if ends.numel() else 0
    return torch.bincount(ends, minlength=total + 1)[:total].cumsum(0)


def _parse_targets(targets: TargetsLike, target_lengths: LengthsLike, device: torch.device | str | None,
                   blank: int | None = None, num_classes: int | None = None
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``targets`` as :func:`label_sequences` takes them, checked: the labels of all sequences
    concatenated, each sequence's length, and each label's sequence and position in it. Labels
    must be >= 0, and where given, not ``blank`` and below ``num_classes``; the messages name
    the entry of ``targets`` as the caller wrote it."""
    nested = not isinstance(targets, Tensor)
    if not isinstance(targets, Tensor):
        try:
            seqs = [[int(x) for x in t] for t in targets]
        except (TypeError, ValueError) as error:
            raise InvalidGraphError("targets must be a tensor (padded [B, S] or concatenated 1-D) or a list "
                                    f"of label lists: {error}") from None
        lengths = torch.tensor([len(t) for t in seqs], dtype=torch.long)
        targets = torch.tensor([x for t in seqs for x in t], dtype=torch.long)
        target_lengths = lengths if target_lengths is None else target_lengths
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise DtypeMismatchError(f"targets must be integer labels, got {targets.dtype}")
    device = torch.device(device) if device is not None else targets.device
    targets = targets.to(device=device, dtype=torch.long)
    if target_lengths is None:
        if targets.dim() != 2:
            raise InvalidGraphError("concatenated 1-D targets need target_lengths")
        target_lengths = [targets.shape[1]] * targets.shape[0]
    if targets.dim() > 2:
        raise InvalidGraphError(f"targets must be padded [B, S] or concatenated 1-D, got {tuple(targets.shape)}")
    lengths = as_whole_numbers(target_lengths, "target_lengths", device)
    if bool((lengths < 0).any()):
        b = int((lengths < 0).nonzero()[0, 0])
        raise InvalidGraphError(f"target_lengths[{b}] = {int(lengths[b])} is negative")
    num_seqs = lengths.shape[0]
    seq = _repeat_ids(lengths)  # sequence b, lengths[b] times
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(seq.shape[0], device=device) - starts.index_select(0, seq)
    if targets.dim() == 2:
        if targets.shape[0] != num_seqs:
            raise InvalidGraphError(f"{targets.shape[0]} target rows for {num_seqs} target_lengths")
        if num_seqs and int(lengths.max()) > targets.shape[1]:
            b = int(lengths.argmax())
            raise InvalidGraphError(f"target_lengths[{b}] = {int(lengths[b])} exceeds the padded width "
                                    f"S = {targets.shape[1]} of targets")
        labels = targets.reshape(-1).index_select(0, seq * targets.shape[1] + pos)
    else:
        if seq.shape[0] > targets.numel():
            raise InvalidGraphError(f"target_lengths sum to {seq.shape[0]} but the concatenated targets hold "
                                    f"{targets.numel()} labels")
        labels = targets.reshape(-1)[: seq.shape[0]]
    # One check (one host sync on CUDA) for every way a label can be wrong.
    bad = labels < 0
    if blank is not None:
        bad = bad | (labels == blank)
    if num_classes is not None:
        bad = bad | (labels >= num_classes)
    found = bad.nonzero()
    if found.numel():
        i = int(found[0, 0])
        b, k, label = int(seq[i]), int(pos[i]), int(labels[i])
        where = f"targets[{b}][{k}]" if nested else f"targets[{b}, {k}]" if targets.dim() == 2 else f"targets[{i}]"
        if label == blank:
            raise LabelError(f"{where} = {label} is the blank (blank = {blank}); targets must not contain it")
        if num_classes is not None:
            raise LabelError(f"{where} = {label} is outside the {num_classes} classes of log_probs "
                             f"(0..{num_classes - 1})")
        raise LabelError(f"{where} = {label} is negative: targets are class indices")
    return labels, lengths, seq, pos


def label_sequences(targets: TargetsLike, target_lengths: LengthsLike = None, *,
                    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Graph:
    """A batch of linear acceptors, one per target: ``targets`` padded ``[B, S]`` (lengths default
    to ``S``), concatenated 1-D (lengths required, as in torch's ctc_loss) or a list of lists."""
    labels, lengths, seq, pos = _parse_targets(targets, target_lengths, device)
    device = labels.device
    sizes = lengths + 1
    node_start = torch.cumsum(sizes, 0) - sizes
    src = node_start.index_select(0, seq) + pos
    num_nodes = int(sizes.sum())
    start = torch.full((num_nodes,), NEG_INF, dtype=dtype, device=device).index_fill_(0, node_start, 0.0)
    final = torch.full((num_nodes,), NEG_INF, dtype=dtype, device=device).index_fill_(0, node_start + lengths, 0.0)
    return Graph.from_tensors(src, src + 1, labels, labels, torch.zeros(src.shape[0], dtype=dtype, device=device),
                               start, final, node_graph=_repeat_ids(sizes), num_graphs=lengths.shape[0])


def ctc_graph(targets: TargetsLike, target_lengths: LengthsLike = None, blank: int = 0, *,
              dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Graph:
    """The CTC graphs of a batch of label sequences (see :func:`label_sequences` for the target
    formats), the usual CTC alignment graph: ``2 S + 1`` nodes each, node ``2 i`` the blank before
    label ``i`` (and node ``2 S`` the last blank), node ``2 i + 1`` label ``i``. Arcs are grouped by
    source node: a self-loop, then the arc to the next node, then where two labels in a row
    differ the arc that skips the blank between them. The arcs entering a label node output
    it; the others output epsilon (0). Every arc reads a frame: node 0 is the start (before
    the first frame), and the last two nodes are final.

    The same graph as ``ctc_expand(label_sequences(...))``, with its nodes in this order, built
    in closed form: about 30 tensor operations and 3 host syncs fewer than the general
    expansion, which matters on CUDA, where a CTC loss is bound by launching small operations."""
    return _ctc_graph(targets, target_lengths, blank, dtype, device)


def _ctc_graph(targets: TargetsLike, target_lengths: LengthsLike, blank: int, dtype: torch.dtype,
               device: torch.device | str | None, num_classes: int | None = None) -> Graph:
    """:func:`ctc_graph`, the labels also checked to be below ``num_classes`` where given."""
    if isinstance(blank, bool) or not isinstance(blank, int) or blank < 0:
        raise LabelError(f"blank must be a class index >= 0, got {blank!r}")
    labels, lengths, seq, pos = _parse_targets(targets, target_lengths, device, blank, num_classes)
    device = labels.device
    sizes = 2 * lengths + 1
    node_seq = _repeat_ids(sizes)
    num_nodes = node_seq.shape[0]
    first_node = torch.cumsum(sizes, 0) - sizes
    j = torch.arange(num_nodes, device=device) - first_node.index_select(0, node_seq)  # node in its graph
    span = (2 * lengths).index_select(0, node_seq)  # its graph's last node
    is_label = j % 2 == 1
    # Each node's label (the blank on blank nodes, read from the padding slot after the labels).
    label_at = (torch.cumsum(lengths, 0) - lengths).index_select(0, node_seq) + (j - 1).div(2, rounding_mode="floor")
    node_label = torch.cat([labels, labels.new_full((1,), blank)]).index_select(
        0, torch.where(is_label, label_at, torch.full_like(j, labels.shape[0])))
    two_on = torch.cat([node_label[2:], node_label.new_full((min(2, num_nodes),), blank)])
    has_skip = is_label & (j + 2 < span) & (node_label != two_on)
    degree = 1 + (j < span).long() + has_skip.long()
    # Arcs grouped by source: the k-th arc of node n goes to node n + k (loop, next, skip).
    src = _repeat_ids(degree)
    dst = src + torch.arange(src.shape[0], device=device) - (torch.cumsum(degree, 0) - degree).index_select(0, src)
    ilabel = node_label.index_select(0, dst)
    olabel = torch.where((dst != src) & is_label.index_select(0, dst), ilabel, torch.zeros_like(ilabel))
    zero, none = torch.zeros((), dtype=dtype, device=device), torch.full((), NEG_INF, dtype=dtype, device=device)
    # Node 0 is where a path is before its first frame; it ends after reading a blank or the last label.
    start = torch.where(j == 0, zero, none)
    final = torch.where(j >= span - 1, zero, none)
    return Graph.from_tensors(src, dst, ilabel, olabel, torch.zeros(src.shape[0], dtype=dtype, device=device),
                               start, final, node_graph=node_seq, num_graphs=lengths.shape[0])


def ctc_topology(num_labels: int, blank: int = 0, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> Graph:
    """The CTC topology over ``num_labels`` classes: a transducer from frame labels to their
    collapsed transcription (output epsilon on blanks and repeats), ``num_labels`` nodes.
    Compose it with an epsilon-free grammar over labels (:func:`ctc_decoding_graph` removes the
    grammar's epsilons and composes), or use :func:`ctc_expand` on the grammar directly, which
    checks this. In a dense intersection
    every arc reads a frame, so the input-epsilon arcs that a grammar's epsilon arcs put into
    the composition (label 0) would read blank frames; composition itself cannot tell them
    from the topology's blank arcs, which are ``0:0`` arcs too when ``blank = 0``."""
    num_labels = as_count(num_labels, "num_labels", 1)
    _check_classes(blank, num_labels, "the topology")
    labels = torch.tensor([c for c in range(num_labels) if c != blank], dtype=torch.long, device=device)
    zeros = torch.zeros_like(labels)
    loop = Graph.from_arcs(1, zeros, zeros, labels, labels, start=[0], accept=[0], dtype=dtype, device=device)
    return ctc_expand(loop, blank)


def ctc_decoding_graph(grammar: GraphsLike, num_labels: int, blank: int = 0,
                       semiring: str | Semiring = "log") -> Graph:
    """The CTC decoding graph of a grammar: ``ctc_topology(num_labels, blank)`` composed with
    the grammar after its epsilons are removed (weights kept in ``semiring``).

    ``grammar`` is an acceptor or transducer over labels (a single graph or a batch; e.g. a
    lexicon from letters to words, a word-loop grammar with epsilon arcs); its label 0 is
    epsilon, as everywhere in gtn_py. Arcs reading epsilon and writing a label (``0:w``) are
    left after epsilon removal and raise :class:`LabelError`: they would read a frame.

    In a dense intersection every arc reads one frame and input label 0 is the blank column,
    so composing the topology with a grammar that still has epsilon arcs would read each
    epsilon as an extra blank frame (composition cannot tell them from the topology's own
    ``0:0`` blank arcs); this function is the safe way to build the graph for
    :func:`viterbi_decode` or :func:`~gtn_py.ops.dense.dense_score`. The output side is the
    grammar's output.
    """
    grammar = remove_epsilon(as_batch(grammar, "grammar"), semiring)
    left = (grammar.ilabel == 0).nonzero()
    if left.numel():
        a = int(left[0, 0])
        raise LabelError(f"grammar arc {a} reads epsilon and writes {int(grammar.olabel[a])}: in CTC decoding every "
                         "arc reads a frame, so an output needs an input label (put it on a neighbouring arc, "
                         "e.g. a word on its first letter's arc)")
    topology = ctc_topology(num_labels, blank, dtype=grammar.dtype, device=grammar.device)
    return compose(topology, grammar)


def _check_classes(blank: int, num_classes: int, what: str = "log_probs") -> None:
    """``blank`` must be one of the ``num_classes`` columns of ``what``."""
    if isinstance(blank, bool) or not isinstance(blank, int):
        raise LabelError(f"blank must be an int class index, got {blank!r}")
    if not 0 <= blank < num_classes:
        raise LabelError(f"blank = {blank} is outside the {num_classes} classes of {what} (0..{num_classes - 1})")


def _losses(log_probs: Tensor, graphs: Graph, input_lengths: LengthsLike, zero_infinity: bool,
            backend: str, labels_checked: bool = False) -> Tensor:
    if not isinstance(log_probs, Tensor) or not log_probs.dtype.is_floating_point:
        raise DtypeMismatchError("log_probs must be a floating-point tensor [T, B, V]")
    if log_probs.dim() != 3:
        raise InvalidGraphError(f"log_probs must be [T, B, V], got {tuple(log_probs.shape)}")
    losses = -dense_score(graphs, log_probs.transpose(0, 1), input_lengths, "log", backend,
                          lengths_name="input_lengths", labels_checked=labels_checked)
    if zero_infinity:
        losses = torch.where(torch.isinf(losses), torch.zeros_like(losses), losses)
    return losses


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths: LengthsLike, target_lengths: LengthsLike,
             blank: int = 0, reduction: str = "mean", zero_infinity: bool = False, *,
             backend: str = "native") -> Tensor:
    """Drop-in for ``torch.nn.functional.ctc_loss``, computed by dense intersection.

    ``log_probs``: ``[T, B, V]`` (or ``[T, V]`` unbatched); ``targets``: padded ``[B, S]`` or
    concatenated 1-D (``[S]`` unbatched), class indices in ``[0, V)`` other than ``blank``;
    ``input_lengths``, ``target_lengths``: ``[B]`` tensors or lists of whole numbers, the input
    lengths at most ``T``, the target lengths at most ``S`` for padded targets. ``reduction``:
    ``"none"`` (``[B]``), ``"sum"``, or ``"mean"`` (each loss divided by its target length
    clamped to >= 1, then averaged over the batch; undefined, so an error, for an empty batch,
    where torch refuses every reduction). A target that cannot fit its input has loss ``+inf``
    and zero gradient; ``zero_infinity=True`` makes that loss 0. ``backend="k2"`` intersects
    with k2. Bad arguments raise a :class:`~gtn_py.GraphError` naming the argument and entry
    (e.g. ``targets[1, 3] = 7 is outside the 5 classes of log_probs (0..4)``).

    Float16 and bfloat16 ``log_probs`` are summed in float32 and the loss is float32, as under
    torch's autocast (torch's own ``ctc_loss`` has no half-precision kernel; autocast runs it in
    float32); the gradient comes back in the dtype of ``log_probs``. A NaN or +inf in
    ``log_probs`` within an input length raises :class:`~gtn_py.WeightError`.
    """
    if not isinstance(log_probs, Tensor) or not log_probs.dtype.is_floating_point:
        raise DtypeMismatchError(f"log_probs must be floating point, got "
                                 f"{log_probs.dtype if isinstance(log_probs, Tensor) else type(log_probs).__name__}")
    unbatched = log_probs.dim() == 2
    if unbatched:  # targets [S] and a scalar target length: one concatenated target
        log_probs = log_probs.unsqueeze(1)
        targets = torch.as_tensor(targets).reshape(-1)
    if log_probs.dim() != 3:
        raise InvalidGraphError(f"log_probs must be [T, B, V] or [T, V], got {tuple(log_probs.shape)}")
    num_seqs, num_classes = log_probs.shape[1], log_probs.shape[2]
    _check_classes(blank, num_classes)
    device = log_probs.device
    lengths = as_whole_numbers(target_lengths, "target_lengths", device)
    if lengths.shape[0] != num_seqs:
        raise InvalidGraphError(f"{lengths.shape[0]} target_lengths for a batch of {num_seqs} in log_probs")
    # The graphs hold zeros: float32 for half-precision inputs, which are summed in float32.
    dtype = torch.float32 if log_probs.dtype in (torch.float16, torch.bfloat16) else log_probs.dtype
    graphs = _ctc_graph(targets, lengths, blank, dtype, device, num_classes)
    losses = _losses(log_probs, graphs, input_lengths, zero_infinity, backend, labels_checked=True)
    out = reduce_losses(losses, reduction, lengths)
    return out[0] if unbatched and reduction == "none" else out


class CTCLoss(nn.Module):
    """Drop-in for ``torch.nn.CTCLoss`` (same arguments), computed by dense intersection."""

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False, *,
                 backend: str = "native"):
        super().__init__()
        self.blank, self.reduction, self.zero_infinity = blank, reduction, zero_infinity
        self.backend = backend

    def forward(self, log_probs: Tensor, targets: Tensor, input_lengths: LengthsLike,
                target_lengths: LengthsLike) -> Tensor:
        return ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction,
                        self.zero_infinity, backend=self.backend)


def ctc_graph_loss(log_probs: Tensor, target_graphs: GraphsLike, input_lengths: LengthsLike, blank: int = 0,
                   reduction: str = "mean", zero_infinity: bool = False, *, backend: str = "native") -> Tensor:
    """CTC against target graphs (alternative transcriptions, a lexicon, a grammar): each
    sequence's loss is minus the log of the total over every label sequence the graph accepts
    (weighted by the graph, differentiably). ``log_probs`` are ``[T, B, V]`` as in
    :func:`ctc_loss`; ``"mean"`` averages over the batch."""
    targets = as_batch(target_graphs, "target_graphs")
    checked = isinstance(log_probs, Tensor) and log_probs.dim() == 3
    if checked:
        num_classes = log_probs.shape[2]
        _check_classes(blank, num_classes)
        bad = (targets.ilabel >= num_classes).nonzero()
        if bad.numel():
            a = int(bad[0, 0])
            raise LabelError(f"target graph arc {a}: label {int(targets.ilabel[a])} is outside the {num_classes} "
                             f"classes of log_probs (0..{num_classes - 1})")
    graphs = ctc_expand(targets, blank)
    return reduce_losses(_losses(log_probs, graphs, input_lengths, zero_infinity, backend, labels_checked=checked),
                   reduction, None)


def ctc_greedy_decode(emissions: Tensor, lengths: LengthsLike = None, blank: int = 0) -> List[List[int]]:
    """Best label per frame, repeats merged, blanks removed. ``emissions``: ``[B, T, V]``."""
    _check_emissions(emissions, blank)
    best = emissions.argmax(-1)
    num_seqs, num_frames = best.shape
    lens = torch.full((num_seqs,), num_frames, dtype=torch.long) if lengths is None \
        else as_frame_counts(lengths, num_seqs, num_frames, "lengths", torch.device("cpu"))
    frames = torch.arange(num_frames, device=best.device)
    previous = torch.cat([best.new_full((num_seqs, 1), -1), best[:, :-1]], 1)
    keep = (best != blank) & (best != previous) & (frames[None, :] < lens.to(best.device)[:, None])
    best, keep = best.cpu(), keep.cpu()
    return [best[b][keep[b]].tolist() for b in range(num_seqs)]


def viterbi_decode(decoding_graph: GraphsLike, emissions: Tensor, lengths: LengthsLike = None) -> List[List[int]]:
    """Output labels (epsilons dropped) along the best path of each sequence through a decoding
    graph, e.g. ``ctc_topology(V) @ grammar`` or ``ctc_expand(grammar)`` for an epsilon-free
    grammar. ``emissions``: ``[B, T, V]``."""
    g = as_batch(decoding_graph, "decoding_graph")
    alignment = viterbi_align(decoding_graph, emissions, lengths)
    arcs = alignment.arcs if alignment.arcs.dim() == 2 else alignment.arcs[None]
    out = gather(g.olabel, arcs.reshape(-1), 0).reshape(arcs.shape).cpu()
    return [row[row != 0].tolist() for row in out]


def ctc_decode(emissions: Tensor, lengths: LengthsLike = None, grammar: GraphsLike | None = None,
               blank: int = 0) -> List[List[int]]:
    """CTC decoding of ``[B, T, V]`` emissions: greedy without a grammar, else the best path
    through the CTC expansion of ``grammar`` (an epsilon-free acceptor or transducer over labels,
    e.g. a lexicon mapping letters to words: the output labels are returned)."""
    if grammar is None:
        return ctc_greedy_decode(emissions, lengths, blank)
    _check_emissions(emissions, blank)
    return viterbi_decode(ctc_expand(grammar, blank), emissions, lengths)


def _check_emissions(emissions: Tensor, blank: int) -> None:
    """Decoders' emissions: floating point ``[B, T, V]`` with ``blank`` among the ``V`` classes."""
    if not isinstance(emissions, Tensor) or not emissions.dtype.is_floating_point or emissions.dim() != 3:
        got = tuple(emissions.shape) if isinstance(emissions, Tensor) else type(emissions).__name__
        raise InvalidGraphError(f"emissions must be a floating-point tensor [B, T, V], got {got}")
    _check_classes(blank, emissions.shape[2], "emissions")
