"""Dense intersection: a batch of graphs against emission tensors ``[B, T, V]`` from a network.

Every arc of graph ``b`` consumes exactly one frame of sequence ``b`` and reads the emission
column of its input label: along a path, the arc taken at frame ``t`` adds
``weight + emissions[b, t, ilabel]``, and a successful path takes exactly ``lengths[b]`` arcs.
So, unlike in composition, **label 0 is not epsilon here**: it reads column 0 (where a CTC
blank usually lives, as in torch). Graphs must have labels in ``[0, V)``.

Two forms:

* :func:`dense_lattice` / :func:`intersect_dense` build the intersection as a graph (nodes are
  the reachable and co-accessible ``(graph node, frame)`` pairs, optionally beam-pruned), whose
  arc weights are differentiable gathers of the graph's weights and of the emissions, for
  decoding, drawing, n-best and alignment.
* :func:`dense_score` gives the log-semiring (or tropical) totals ``[B]`` without building the
  lattice: a forward sweep over frames keeps ``O(states)`` per frame, and a closed-form
  backward (forward-backward) gives the gradients of the emissions and of the graph's arc,
  start and final weights.

The sweeps run over frames with a few tensor operations per frame on all graphs of the batch
at once (a disjoint union; each node reads the emission row of its own sequence); the log
(temperature 1) and tropical semirings use compiled kernels instead, numba on the CPU and Triton
on CUDA: forward scores and totals, the log semiring's gradients, Viterbi backtracking. Each node's
incoming (outgoing) arcs are padded to the largest in- (out-) degree, so a frame is a dense
gather and a reduction, with no scatter; the emission gathers are done a chunk of frames at a
time. Graphs whose degrees are very uneven (one node with thousands of arcs) pay for the
padding in memory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Sequence, Tuple, Union

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

try:  # Triton compiles the CUDA kernels (torch's CUDA wheels bring it); without it they use tensor ops
    import triton
    import triton.language as tl
    _TRITON = True
except ImportError:  # pragma: no cover - depends on the install
    _TRITON = False

from ..backends import get_backend
from ..errors import DeviceMismatchError, DtypeMismatchError, InvalidGraphError, LabelError, WeightError
from ..graph import NEG_INF, Graph, as_frame_counts, has_nan_or_plus_inf, nan_or_plus_inf, subgraph
from ..semiring import Semiring, get_semiring, segment_max
from .search import SearchResult, token_passing
from .shortest import shortest_distance
from .traverse import group_arcs, reachable

GraphsLike = Union[Graph, Sequence[Graph]]
LengthsLike = Union[Tensor, Sequence[int], None]

# Elements of one chunk of gathered emissions (frames x padded arcs): bounds the memory of a sweep.
_CHUNK_ELEMENTS = 1 << 19
# Frames x arcs from which the kernels run on several threads.
_PARALLEL_WORK = 1 << 20


@dataclass(frozen=True)
class SweepChoice:
    """How the dense sweeps run (see :func:`sweeps`)."""

    compiled: bool = True
    triton_on_cpu: bool = False


_DEFAULT_SWEEPS = SweepChoice()  # frozen, so one instance serves every context
_SWEEPS: ContextVar[SweepChoice] = ContextVar("gtn_py_dense_sweeps", default=_DEFAULT_SWEEPS)


@contextmanager
def sweeps(compiled: bool = True, triton_on_cpu: bool = False) -> Iterator[SweepChoice]:
    """Choose how the dense sweeps (``dense_score``, ``ctc_loss``, ``viterbi_align``...) run inside
    the block. ``compiled``: the log (temperature 1) and tropical semirings use compiled kernels,
    numba on the CPU and Triton on CUDA (the default); else torch tensor operations, the portable
    formulation that other semirings use and that the kernels are tested against.
    ``triton_on_cpu``: the Triton kernels run on CPU tensors, under Triton's interpreter
    (``TRITON_INTERPRET=1`` before gtn_py is imported): how they are checked without a GPU. The
    choice holds for the block in this thread or task only (a context variable), never beyond."""
    token = _SWEEPS.set(SweepChoice(bool(compiled), bool(triton_on_cpu)))
    try:
        yield _SWEEPS.get()
    finally:
        _SWEEPS.reset(token)


# ---------------------------------------------------------------------- problem layout
@dataclass
class _Layout:
    """The integer structure of a batch of graphs, prepared once per call for the sweeps.

    Emissions enter the sweeps as *columns*: the ``P`` distinct (sequence, label) pairs the arcs
    read, gathered once for all frames into ``[T, P]`` (differentiably, outside the sweeps), so
    per-frame gathers and the gradient's scatter touch a small table instead of ``[B, T, V]``.
    """

    num_seqs: int
    num_nodes: int
    node_seq: Tensor      # [N] sequence (graph) of each node
    src: Tensor           # [A]
    dst: Tensor           # [A]
    ilabel: Tensor        # [A]
    arc_seq: Tensor       # [A] sequence of each arc
    columns: Tensor       # [P] distinct seq * V + label read by the arcs
    arc_column: Tensor    # [A] each arc's column (index into ``columns``)
    in_arc: Tensor        # [Din, N] incoming arcs of each node, -1 = padding
    out_arc: Tensor       # [Dout, N] outgoing arcs of each node, -1 = padding
    node_order: Tensor    # [N] nodes sorted by sequence
    seq_offsets: Tensor   # [B + 1] sequence b's nodes are node_order[seq_offsets[b]:seq_offsets[b + 1]]
    most_seq_nodes: int   # nodes of the largest sequence (sizes the CUDA kernels' blocks)

    @staticmethod
    def of(g: Graph, num_seqs: int, num_labels: int) -> _Layout:
        node_seq = g.node_graph
        src, dst = g.src, g.dst
        n = g.num_nodes
        arc_seq = node_seq.index_select(0, src)
        columns, arc_column = torch.unique(arc_seq * num_labels + g.ilabel, return_inverse=True)
        node_order, seq_offsets = group_arcs(node_seq, num_seqs)
        most_seq_nodes = int((seq_offsets[1:] - seq_offsets[:-1]).max()) if num_seqs else 0
        return _Layout(num_seqs, n, node_seq, src, dst, g.ilabel, arc_seq, columns, arc_column.reshape(-1),
                       _padded_arcs(dst, n), _padded_arcs(src, n), node_order, seq_offsets, most_seq_nodes)

    def emission_columns(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """``[T, P]``: the emissions the arcs read, frame by frame (differentiable).

        Raises WeightError where one of them, within its sequence's length, is NaN or +inf: the
        sweeps' max-shifted sums would drop a NaN that meets no finite score, and give a finite
        total for it."""
        num_seqs, num_frames, num_labels = emissions.shape
        if self.columns.numel() == 0:  # no arcs: one column that padding slots can read
            # (a zero tied to the emissions, so that a loss over an empty batch can still backward)
            return emissions.new_zeros(num_frames, 1) + emissions[:0].sum()
        frames_major = emissions.transpose(0, 1)
        if frames_major.is_contiguous():  # e.g. CTC's [T, B, V] input: one gather of columns
            read = _GatherColumns.apply(frames_major.reshape(num_frames, num_seqs * num_labels), self.columns)
        else:
            read = emissions[self.columns // num_labels, :, self.columns % num_labels].t().contiguous()
        if has_nan_or_plus_inf(read):
            bad = nan_or_plus_inf(read.detach())
            frames = torch.arange(num_frames, device=read.device)
            bad &= frames[:, None] < lengths.index_select(0, self.columns // num_labels)[None, :]
            found = bad.nonzero()
            if found.numel():
                t, p = found[0].tolist()
                column = int(self.columns[p])
                raise WeightError(f"emissions[{column // num_labels}, {t}, {column % num_labels}] is "
                                  f"{float(read[t, p])}: emissions are log-scores, finite or -inf")
        return read


class _GatherColumns(torch.autograd.Function):
    """``table.index_select(1, columns)`` for *distinct* columns, whose gradient is therefore a
    copy into zeros, not a sum: on the CPU numpy does it, where torch's ``index_add`` and the
    zero fill of a large tensor would wake its thread pool (milliseconds each on a busy machine)."""

    @staticmethod
    def forward(ctx: Any, table: Tensor, columns: Tensor) -> Tensor:
        ctx.save_for_backward(columns)
        ctx.table_shape = table.shape
        return table.index_select(1, columns)

    @staticmethod
    @once_differentiable  # the numpy copy is not recorded by autograd
    def backward(ctx: Any, grad: Tensor) -> Tuple[Tensor, None]:
        (columns,) = ctx.saved_tensors
        table_grad = _zeros(*ctx.table_shape, like=grad)
        if _numpy_dtype(grad) is None:
            return table_grad.index_copy_(1, columns, grad), None
        table_grad.numpy()[:, columns.numpy()] = grad.detach().numpy()
        return table_grad, None


def _padded_arcs(nodes: Tensor, num_nodes: int) -> Tensor:
    """``[max degree, num_nodes]`` table of the arcs whose ``nodes`` entry is each node (-1 pads)."""
    order, offsets = group_arcs(nodes, num_nodes)
    degree = offsets[1:] - offsets[:-1]
    width = max(int(degree.max()) if num_nodes else 0, 1)
    table = torch.full((width, num_nodes), -1, dtype=torch.long, device=nodes.device)
    grouped = nodes.index_select(0, order)
    slot = torch.arange(order.shape[0], device=nodes.device) - offsets.index_select(0, grouped)
    return table.view(-1).index_copy_(0, slot * num_nodes + grouped, order).view(width, num_nodes)


class _Inputs(NamedTuple):
    graph: Graph          # one graph per sequence (a batch unless there is one sequence)
    emissions: Tensor     # [B, T, V]
    lengths: Tensor       # [B] long, on the emissions' device
    single: bool          # the caller gave one [T, V] sequence: return unbatched results
    shared_arcs: int      # > 0: one graph of this many arcs was given for every sequence

    def user_arcs(self, arcs: Tensor) -> Tensor:
        """Arc ids of the batch graph as ids of the graph(s) the caller gave."""
        return torch.where(arcs >= 0, arcs % self.shared_arcs, arcs) if self.shared_arcs else arcs


# Emissions in these dtypes are summed in float32: a half-precision running sum over thousands of
# frames stops growing once its rounding step exceeds what a frame adds (8288 for 8795 at T = 3000).
_UPCAST = (torch.float16, torch.bfloat16)


def _prepare(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike, lengths_name: str = "lengths",
             labels_checked: bool = False, copy_shared: bool = True) -> _Inputs:
    """Normalise the inputs (see :class:`_Inputs`) and check them; ``lengths_name`` is what the
    caller calls the lengths, for the messages; ``labels_checked``: the caller has checked the
    graphs' labels against the emission columns already, in its own terms. Float16 and bfloat16
    emissions (and graphs) are cast to float32 here, differentiably: the results are float32,
    the gradients come back in the input dtype."""
    if not isinstance(emissions, Tensor) or not emissions.dtype.is_floating_point:
        raise DtypeMismatchError("emissions must be a floating-point tensor [B, T, V] (or [T, V])")
    single = emissions.dim() == 2
    if single:
        emissions = emissions.unsqueeze(0)
    if emissions.dim() != 3:
        raise InvalidGraphError(f"emissions must have shape [B, T, V] or [T, V], got {tuple(emissions.shape)}")
    num_seqs, num_frames, num_labels = emissions.shape
    shared_arcs = 0
    if isinstance(graphs, Graph):
        g = graphs
        if not g.is_batch and num_seqs > 1:
            # One graph for every sequence: copied into a batch, unless the caller reads it shared.
            g = Graph.batch([g] * num_seqs) if copy_shared else g
            shared_arcs = max(graphs.num_arcs, 1)
    else:
        items = list(graphs) if isinstance(graphs, Iterable) else [graphs]
        if not all(isinstance(one, Graph) for one in items):
            raise InvalidGraphError(f"graphs must be a Graph or a list of Graphs, got {type(graphs).__name__}")
        g = Graph.batch(items) if items or num_seqs else _empty_batch(emissions)
    if num_seqs == 0 and g.num_graphs != 0:  # an empty batch of emissions: an empty batch of graphs
        g = _empty_batch(emissions, g.dtype) if not g.is_batch or g.num_graphs == 1 else g
    if g.is_batch and g.num_graphs != num_seqs:
        raise InvalidGraphError(f"{g.num_graphs} graphs for {num_seqs} emission sequences")
    if g.device != emissions.device:
        raise DeviceMismatchError(f"graphs are on {g.device}, emissions on {emissions.device}")
    upcast = emissions.dtype in _UPCAST
    if g.dtype != emissions.dtype and not (upcast and g.dtype == torch.float32):
        raise DtypeMismatchError(f"graph weights are {g.dtype}, emissions {emissions.dtype}; cast one of them")
    if upcast:
        emissions = emissions.float()
        g = g.to(dtype=torch.float32)
    if g.num_arcs and not labels_checked:
        bad = (g.ilabel >= num_labels).nonzero()
        if bad.numel():
            a = int(bad[0, 0])
            raise LabelError(f"arc {a}: ilabel {int(g.ilabel[a])} has no emission column "
                             f"(emissions have V = {num_labels}; in dense intersection label 0 is column 0, "
                             "not epsilon)")
    if lengths is None:
        lens = torch.full((num_seqs,), num_frames, dtype=torch.long, device=emissions.device)
    else:
        lens = as_frame_counts(lengths, num_seqs, num_frames, lengths_name, emissions.device)
    return _Inputs(g, emissions, lens, single, shared_arcs)


def _empty_batch(like: Tensor, dtype: torch.dtype | None = None) -> Graph:
    """A batch of no graphs, for an empty batch of emission sequences."""
    none = torch.zeros(0, dtype=torch.long, device=like.device)
    weights = torch.zeros(0, dtype=dtype or like.dtype, device=like.device)
    return Graph.from_tensors(none, none, none, none, weights, weights, weights, node_graph=none, num_graphs=0)


def _chunk_frames(num_frames: int, width: int) -> int:
    return max(1, min(num_frames, _CHUNK_ELEMENTS // max(width, 1)))


def _take(values: Tensor, table: Tensor, fill: float) -> Tensor:
    """``values[table]`` with ``fill`` where ``table`` is -1 (also when ``values`` is empty)."""
    padded = torch.cat([values, values.new_full((1,), fill)])
    index = torch.where(table >= 0, table, torch.full_like(table, values.shape[0]))
    return padded.index_select(0, index.reshape(-1)).view(table.shape)


def _arc_table(lay: _Layout, table: Tensor, weights: Tensor, endpoint: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """For a padded ``[D, N]`` arc table: the other endpoint (flat), the weights (-inf pads) and
    the emission column of each slot (flat); padding reads column 0 with weight -inf at the slot's
    own node, so that a NaN score (from a NaN weight) stays in its own sequence."""
    own = torch.arange(table.shape[1], device=table.device).expand(table.shape)
    ends = torch.where(table >= 0, _take(endpoint, table, 0), own) if endpoint.numel() else own
    return ends.reshape(-1), _take(weights, table, NEG_INF), _take(lay.arc_column, table, 0).reshape(-1)


# ---------------------------------------------------------------------- sweeps
def _forward_sweep(lay: _Layout, weights: Tensor, start: Tensor, columns: Tensor,
                   semiring: Semiring, backpointers: bool = False) -> Tuple[Tensor, Tensor | None]:
    """Forward scores of every node at every frame boundary: ``[T + 1, N]`` (row ``t``: after
    ``t`` frames), and for the tropical semiring optionally the argmax slot ``[T, N]``."""
    num_frames = columns.shape[0]
    in_src, in_weight, in_column = _arc_table(lay, lay.in_arc, weights, lay.src)
    shape = lay.in_arc.shape
    alpha = columns.new_empty(num_frames + 1, lay.num_nodes)
    alpha[0] = start
    slots = torch.empty(num_frames, lay.num_nodes, dtype=torch.long, device=columns.device) \
        if backpointers else None
    step = _chunk_frames(num_frames, in_src.numel())
    for t0 in range(0, num_frames, step):
        t1 = min(t0 + step, num_frames)
        arc_scores = columns[t0:t1].index_select(1, in_column).view(t1 - t0, *shape) + in_weight
        for t in range(t0, t1):
            scores = alpha[t].index_select(0, in_src).view(shape) + arc_scores[t - t0]
            if slots is not None:
                torch.max(scores, 0, out=(alpha[t + 1], slots[t]))
            else:
                semiring.plus_into(scores, 0, alpha[t + 1])
    return alpha, slots


def _totals(lay: _Layout, alpha: Tensor, final: Tensor, lengths: Tensor, semiring: Semiring) -> Tensor:
    """Per-sequence totals: each sequence's forward scores read at its own length (NaN where one
    of them is NaN: ``segment_plus`` of the log semiring would give -inf there)."""
    ending = _ending(lay, alpha, final, lengths)
    nan = ending.new_zeros(lay.num_seqs).index_add_(0, lay.node_seq, torch.where(ending == ending, 0.0, ending))
    return semiring.segment_plus(ending, lay.node_seq, lay.num_seqs) + nan


def _ending(lay: _Layout, alpha: Tensor, final: Tensor, lengths: Tensor) -> Tensor:
    """Forward score times final weight of each node, at its sequence's length."""
    nodes = torch.arange(lay.num_nodes, device=alpha.device)
    at_length = lengths.index_select(0, lay.node_seq) * lay.num_nodes + nodes
    return alpha.reshape(-1).index_select(0, at_length) + final


def _backward_sweep(lay: _Layout, weights: Tensor, final: Tensor, columns: Tensor, lengths: Tensor,
                    semiring: Semiring, visit: Callable[[int, int, Tensor], None] | None = None) -> Tensor:
    """Backward scores, one chunk of frames at a time from the end: ``visit(t0, t1, beta)`` gets
    ``beta`` of shape ``[t1 - t0, N]`` (row ``k``: backward scores at boundary ``t0 + k + 1``).
    Returns the backward scores at boundary 0.

    A sequence's backward scores start from the final weights at its own length (boundary
    ``lengths[b]``) and are -inf beyond it.
    """
    num_frames = columns.shape[0]
    out_dst, out_weight, out_column = _arc_table(lay, lay.out_arc, weights, lay.dst)
    shape = lay.out_arc.shape
    node_length = lengths[lay.node_seq]
    neg_inf = final.new_full((), NEG_INF)
    beta = torch.where(node_length == num_frames, final, neg_inf)
    step = _chunk_frames(num_frames, out_dst.numel())
    for t1 in range(num_frames, 0, -step):
        t0 = max(t1 - step, 0)
        arc_scores = columns[t0:t1].index_select(1, out_column).view(t1 - t0, *shape) + out_weight
        betas = columns.new_empty(t1 - t0, lay.num_nodes)
        for t in range(t1 - 1, t0 - 1, -1):
            betas[t - t0] = beta
            scores = beta.index_select(0, out_dst).view(shape) + arc_scores[t - t0]
            beta = torch.where(node_length == t, final, semiring.plus_into(scores, 0, torch.empty_like(beta)))
        if visit is not None:
            visit(t0, t1, betas)
    return beta


def _best_nodes(lay: _Layout, ending: Tensor) -> Tensor:
    """Per sequence, the node with the highest ``ending`` score (lowest id on ties; -1 if none)."""
    best = segment_max(ending, lay.node_seq, lay.num_seqs)
    nodes = torch.arange(lay.num_nodes, device=ending.device)
    hit = (ending == best[lay.node_seq]) & (ending > NEG_INF)
    candidate = torch.where(hit, nodes, torch.full_like(nodes, lay.num_nodes))
    pick = torch.full((lay.num_seqs,), lay.num_nodes, dtype=torch.long, device=ending.device)
    pick = pick.scatter_reduce(0, lay.node_seq, candidate, reduce="amin", include_self=True)
    return torch.where(pick < lay.num_nodes, pick, torch.full_like(pick, -1))


def _backtrack(lay: _Layout, slots: Tensor, last: Tensor, lengths: Tensor, backend: str | None
               ) -> Tuple[Tensor, Tensor]:
    """Follow the argmax slots back from ``last`` (per sequence): the arcs of the best path
    ``[B, T]`` (-1 beyond each length and where no path exists) and the first node ``[B]``."""
    num_frames = slots.shape[0]
    arcs = torch.full((lay.num_seqs, num_frames), -1, dtype=torch.long, device=slots.device)
    node = last
    if lay.src.numel() == 0:  # no arcs: only length-0 sequences have a path, and it has no arcs
        return arcs, node
    if backend == "numba":
        first = torch.empty_like(last)
        _backtrack_kernel(_np(lay.in_arc), _np(lay.src), _np(slots), _np(last), _np(lengths), arcs.numpy(),
                          first.numpy())
        return arcs, first
    if backend == "triton":
        first = torch.empty_like(last)
        if lay.num_seqs:
            _backtrack_kernel_cuda[(lay.num_seqs,)](arcs, first, lay.in_arc, lay.src.contiguous(), slots,
                                                    last.contiguous(), lengths, lay.num_nodes, num_frames)
        return arcs, first
    for t in range(num_frames - 1, -1, -1):
        active = (t < lengths) & (node >= 0)
        at = node.clamp(min=0)
        arc = lay.in_arc[slots[t, at], at]
        arcs[:, t] = torch.where(active, arc, arcs[:, t])
        node = torch.where(active, lay.src[arc.clamp(min=0)], node)
    return arcs, node


def _best_paths(lay: _Layout, alpha: Tensor, slots: Tensor, final: Tensor, lengths: Tensor
                ) -> Tuple[Tensor, Tensor, Tensor]:
    """Arcs ``[B, T]``, first and last node ``[B]`` (-1: no path) of each sequence's best path."""
    last = _best_nodes(lay, _ending(lay, alpha, final, lengths))
    arcs, first = _backtrack(lay, slots, last, lengths, _kernel_backend(lay, alpha, get_semiring("tropical")))
    return arcs, first, last


# ---------------------------------------------------------------------- CPU kernels
# On the CPU the log and tropical sweeps run as numba kernels over the sequences listed in ``seqs``:
# a frame of a few thousand states is too small for tensor operations to pay for their dispatch
# (the torch formulation above serves other semirings, CUDA without Triton, and checks these
# kernels in the tests). The kernels release the GIL; _run_over_sequences spreads the sequences over threads.
@numba.njit(cache=True, nogil=True)
def _forward_kernel(seqs, tropical, in_src, in_weight, in_column, columns, start, final, node_order, seq_offsets,
                    lengths, alpha, totals, slots, consts):  # pragma: no cover - jitted
    """Forward scores ``alpha`` [T + 1, N] and each sequence's total (forward score times final
    weight at its length, summed over its nodes; ``tropical``: maximised), and, where ``slots``
    has rows, the best incoming slot of each node at each frame (the first on ties)."""
    # consts = [-inf, 0] in the weights' dtype: float32 inputs get float32 exp/log, not float64
    neg_inf, zero = consts[0], consts[1]
    num_slots = in_src.shape[1]
    num_frames = columns.shape[0]
    keep_slots = slots.shape[0] > 0
    for b in seqs:
        values = np.empty(num_slots, alpha.dtype)
        nodes = node_order[seq_offsets[b]:seq_offsets[b + 1]]
        for n in nodes:
            alpha[0, n] = start[n]
        for t in range(num_frames):
            if t >= lengths[b]:  # forward scores past the end are never read
                for n in nodes:
                    alpha[t + 1, n] = neg_inf
                continue
            alpha_t, columns_t, alpha_next = alpha[t], columns[t], alpha[t + 1]
            for n in nodes:
                n = np.uint64(n)  # unsigned indices: no negative-index wraparound checks
                peak = neg_inf
                best = 0
                count = 0
                for d in range(num_slots):
                    s = in_src[n, d]
                    if s < 0:
                        break
                    v = alpha_t[np.uint64(s)] + in_weight[n, d] + columns_t[np.uint64(in_column[n, d])]
                    values[d] = v
                    if v > peak:
                        peak = v
                        best = d
                    count += 1
                if keep_slots:
                    slots[t, n] = best
                if tropical or peak == neg_inf:
                    alpha_next[n] = peak
                    continue
                acc = zero
                for d in range(count):
                    acc += np.exp(values[d] - peak)
                alpha_next[n] = peak + np.log(acc)
        length = lengths[b]
        peak = neg_inf
        for n in nodes:
            peak = max(peak, alpha[length, n] + final[n])
        if tropical or peak == neg_inf:
            totals[b] = peak
            continue
        acc = zero
        for n in nodes:
            acc += np.exp(alpha[length, n] + final[n] - peak)
        totals[b] = peak + np.log(acc)


@numba.njit(cache=True, nogil=True)
def _backward_log_kernel(seqs, out_arc, out_dst, out_weight, out_column, columns, start, final, alpha, shift,
                         grad_totals, node_order, seq_offsets, lengths, grad_w, grad_columns, grad_start,
                         grad_final, beta, consts):  # pragma: no cover - jitted
    """Backward scores (two rows of ``beta`` [2, N] alternate) with the arc occupancies
    ``exp(alpha[t, src] + w + e + beta[t + 1, dst] - total)`` summed into the gradients.

    The occupancies are taken first, and a node's backward score from their sum, its posterior:
    ``beta[t, n] = log(sum of its arcs' occupancies) - alpha[t, n] + total``. No occupancy
    exceeds 1, so no running maximum is needed, and one exp per arc gives both the score and the
    gradient. A node whose posterior underflows gets beta -inf; every arc into it has an occupancy
    below that posterior, so the gradients lose only what is below the dtype's smallest number.
    A node not reached from the start (alpha -inf) has no occupancy and needs no backward score."""
    neg_inf, zero = consts[0], consts[1]
    num_slots = out_arc.shape[1]
    for b in seqs:
        nodes = node_order[seq_offsets[b]:seq_offsets[b + 1]]
        length, total, g = lengths[b], shift[b], grad_totals[b]
        row = length % 2
        for n in nodes:
            beta[row, n] = final[n]
            grad_final[n] = np.exp(alpha[length, n] + final[n] - total) * g
        for t in range(length - 1, -1, -1):
            nxt, row = row, t % 2
            alpha_t, columns_t, grad_columns_t = alpha[t], columns[t], grad_columns[t]
            beta_t, beta_next = beta[row], beta[nxt]
            for n in nodes:
                n = np.uint64(n)  # unsigned indices: no negative-index wraparound checks
                base = alpha_t[n] - total
                posterior = zero
                if base != neg_inf:
                    for d in range(num_slots):
                        a = out_arc[n, d]
                        if a < 0:
                            break
                        column = np.uint64(out_column[n, d])
                        occupancy = np.exp(base + out_weight[n, d] + columns_t[column]
                                           + beta_next[np.uint64(out_dst[n, d])])
                        if occupancy != zero:
                            posterior += occupancy
                            grad_w[np.uint64(a)] += occupancy * g
                            grad_columns_t[column] += occupancy * g
                beta_t[n] = np.log(posterior) - base if posterior != zero else neg_inf
        for n in nodes:
            grad_start[n] = np.exp(start[n] + beta[row, n] - total) * g


@numba.njit(cache=True, nogil=True)
def _backtrack_kernel(in_arc, src, slots, last, lengths, arcs, first):  # pragma: no cover - jitted
    """:func:`_backtrack` sequence by sequence: from ``last`` back over the best incoming slots."""
    for b in range(last.shape[0]):
        node = last[b]
        if node >= 0:
            for t in range(lengths[b] - 1, -1, -1):
                arc = in_arc[slots[t, node], node]
                arcs[b, t] = arc
                node = src[arc]
        first[b] = node


def _run_over_sequences(kernel: Callable[..., None], num_seqs: int, work: int, *args: Any) -> None:
    """``kernel(seqs, *args)`` over all sequences: in one call for small problems (``work`` =
    frames x arcs), else over chunks of sequences on ``torch.get_num_threads()`` threads. Chunks
    are small and taken in turn, and idle threads block instead of spinning, so one delayed
    thread does not hold up the rest (numba's own parallel loops split the work statically)."""
    seqs = np.arange(num_seqs, dtype=np.int64)
    threads = min(torch.get_num_threads(), num_seqs)
    if work < _PARALLEL_WORK or threads <= 1:
        kernel(seqs, *args)
        return
    chunks = np.array_split(seqs, min(num_seqs, 4 * threads))
    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(kernel, chunk, *args) for chunk in chunks]:
            done.result()


def _consts(like: Tensor) -> np.ndarray:
    return np.array([NEG_INF, 0.0], dtype=np.float32 if like.dtype == torch.float32 else np.float64)


def _kernel_backend(lay: _Layout, columns: Tensor, semiring: Semiring) -> str | None:
    """Which compiled kernels compute these forward scores and totals (log or tropical; and the
    log semiring's gradients, the tropical best paths): "numba" (CPU), "triton" (CUDA, or the CPU
    under Triton's interpreter inside ``sweeps(triton_on_cpu=True)``), or None (tensor sweeps)."""
    choice = _SWEEPS.get()
    if not (choice.compiled and semiring.dense_kernel is not None):
        return None
    triton_device = "cpu" if choice.triton_on_cpu else "cuda"
    if _TRITON and columns.device.type == triton_device and columns.dtype in (torch.float32, torch.float64) \
            and max(lay.in_arc.shape[0], lay.out_arc.shape[0]) <= _TRITON_MAX_SLOTS:
        return "triton"
    return "numba" if columns.device.type == "cpu" and _numpy_dtype(columns) is not None else None


def _arc_tables_np(lay: _Layout, table: Tensor, weights: Tensor, endpoint: Tensor) -> Tuple[np.ndarray, ...]:
    """The padded arc table and its other endpoints, weights and columns, node-major ``[N, D]``."""
    table = table.t().contiguous()
    return (table.numpy(), _take(endpoint, table, -1).numpy(), _take(weights.detach(), table, NEG_INF).numpy(),
            _take(lay.arc_column, table, 0).numpy())


def _np(t: Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (copied only if not contiguous)."""
    return t.detach().contiguous().numpy()


def _numpy_dtype(like: Tensor) -> Any:
    """The numpy dtype for a float32/float64 CPU tensor, else None."""
    if like.device.type != "cpu":
        return None
    return {torch.float32: np.float32, torch.float64: np.float64}.get(like.dtype)


def _zeros(*shape: int, like: Tensor) -> Tensor:
    """Zeros like ``like``; on the CPU from numpy (calloc): torch.zeros fills large tensors on
    its thread pool, whose wake-up costs milliseconds on a busy machine."""
    dtype = _numpy_dtype(like)
    return like.new_zeros(shape) if dtype is None else torch.from_numpy(np.zeros(shape, dtype=dtype))


def _forward(lay: _Layout, weights: Tensor, start: Tensor, final: Tensor, columns: Tensor, lengths: Tensor,
             semiring: Semiring, backpointers: bool = False) -> Tuple[Tensor, Tensor, Tensor | None]:
    """Forward scores ``[T + 1, N]`` (-inf past each sequence's length), totals ``[B]`` and, for
    the tropical semiring with ``backpointers``, the best incoming slots ``[T, N]``: by the
    compiled kernels where :func:`_kernel_backend` names them, else by the tensor sweeps."""
    backend = _kernel_backend(lay, columns, semiring)
    if backend == "numba" and (has_nan_or_plus_inf(weights) or has_nan_or_plus_inf(start)
                               or has_nan_or_plus_inf(final)):
        # NaN weights (written after construction): the numba kernels' maxima would skip them,
        # the tensor sweeps' give NaN, as torch does. On the CPU this check is a numpy sum; on
        # CUDA, where it would cost a host sync, the Triton kernels carry NaN themselves.
        backend = None
    if backend is None:
        alpha, slots = _forward_sweep(lay, weights, start, columns, semiring, backpointers)
        return alpha, _totals(lay, alpha, final, lengths, semiring), slots
    totals = columns.new_empty(lay.num_seqs)
    tropical = semiring.backtracks  # the max-plus kernels, which can keep the best slots
    slots = torch.empty((columns.shape[0], lay.num_nodes) if tropical and backpointers else (0, 0), dtype=torch.long,
                        device=columns.device)
    if backend == "triton":
        alpha = columns.new_full((columns.shape[0] + 1, lay.num_nodes), NEG_INF)
        _triton_launch(_forward_kernel_cuda, lay, lay.in_arc, columns.shape[1], lengths, alpha, totals, slots,
                       lay.in_arc, lay.src, weights, lay.arc_column, columns, start, final, MAX_PLUS=tropical,
                       KEEP_SLOTS=tropical and backpointers)
        return alpha, totals, slots if tropical and backpointers else None
    alpha = columns.new_empty(columns.shape[0] + 1, lay.num_nodes)
    _, in_src, in_weight, in_column = _arc_tables_np(lay, lay.in_arc, weights, lay.src)
    _run_over_sequences(_forward_kernel, lay.num_seqs, columns.shape[0] * lay.src.shape[0],
                        tropical, in_src, in_weight, in_column, _np(columns), _np(start), _np(final),
                        _np(lay.node_order), _np(lay.seq_offsets), _np(lengths), alpha.numpy(), totals.numpy(),
                        slots.numpy(), _consts(columns))
    return alpha, totals, slots if tropical and backpointers else None


def _gradient_shift(totals: Tensor) -> Tensor:
    """The totals that arc occupancies are taken relative to: an impossible sequence (total -inf)
    gets 0, so that all its occupancies are exp(-inf) = 0; a NaN total stays NaN, so that its
    gradients are NaN too."""
    return torch.where(torch.isinf(totals), torch.zeros_like(totals), totals)


def _kernel_grads(backend: str, lay: _Layout, weights: Tensor, start: Tensor, final: Tensor, columns: Tensor,
                  lengths: Tensor, alpha: Tensor, totals: Tensor, grad_totals: Tensor) -> Tuple[Tensor, ...]:
    shift = _gradient_shift(totals)
    grads = [_zeros(*t.shape, like=t) for t in (weights, start, final, columns)]
    grad_w, grad_start, grad_final, grad_columns = grads
    beta = columns.new_empty(2, lay.num_nodes)
    if backend == "triton":
        _triton_launch(_backward_log_kernel_cuda, lay, lay.out_arc, columns.shape[1], lengths, beta, grad_w,
                       grad_columns, grad_start, grad_final, lay.out_arc, lay.dst, weights, lay.arc_column, columns,
                       start, final, alpha, shift, grad_totals)
        return grad_w, grad_start, grad_final, grad_columns
    out_arc, out_dst, out_weight, out_column = _arc_tables_np(lay, lay.out_arc, weights, lay.dst)
    _run_over_sequences(_backward_log_kernel, lay.num_seqs, columns.shape[0] * lay.src.shape[0],
                        out_arc, out_dst, out_weight, out_column, _np(columns), _np(start), _np(final),
                        _np(alpha), _np(shift), _np(grad_totals), _np(lay.node_order), _np(lay.seq_offsets),
                        _np(lengths), grad_w.numpy(), grad_columns.numpy(), grad_start.numpy(),
                        grad_final.numpy(), beta.numpy(), _consts(columns))
    return grad_w, grad_start, grad_final, grad_columns


# ---------------------------------------------------------------------- CUDA kernels
# On CUDA a frame is too small for a dozen tensor launches per frame to pay (they cost 100 times
# torch's own CTC). As on the CPU, one compiled program per sequence runs all its frames: the
# forward kernel writes the forward scores and the total, the backward kernel the backward
# scores (two rows that alternate) and every gradient, the arc occupancies added atomically
# (arcs of one sequence share emission columns). A program takes its nodes a block at a time,
# each node's arcs one tile, with a barrier between frames (frame t + 1 reads what frame t wrote).
_TRITON_MAX_SLOTS = 64   # in- or out-degree up to which a node's arcs are one tile (beyond: tensor ops)
_TRITON_TILE = 4096      # elements (slots x nodes) one program handles at once

if _TRITON:
    @triton.jit
    def _slot_scores(table, arc_end, arc_weight, arc_column, columns_t, scores, node, live, num_nodes, num_slots,
                     SLOTS: tl.constexpr):  # pragma: no cover - compiled for CUDA
        """For a block of nodes: their arcs ``[SLOTS, BLOCK]`` from the padded ``table`` (padding
        reads arc 0 and is masked by ``used``), the arcs' emission columns, and their scores:
        weight + emission at this frame + ``scores`` at the arc's other end."""
        slots = tl.arange(0, SLOTS)[:, None]
        arc = tl.load(table + slots * num_nodes + node[None, :], mask=live[None, :] & (slots < num_slots), other=-1)
        used = arc >= 0
        arc = tl.where(used, arc, 0)
        column = tl.load(arc_column + arc, mask=used, other=0)
        end = tl.load(arc_end + arc, mask=used, other=0)
        value = tl.load(arc_weight + arc, mask=used, other=float("-inf")) \
            + tl.load(columns_t + column, mask=used, other=0.0) \
            + tl.load(scores + end, mask=used, other=float("-inf"), cache_modifier=".cg")
        return arc, column, used, value

    @triton.jit
    def _block_nodes(node_order, chunk, last, BLOCK: tl.constexpr):  # pragma: no cover - compiled for CUDA
        """The nodes ``node_order[chunk:chunk + BLOCK]`` of a sequence ending at ``last``, and
        which of the block's lanes hold one."""
        index = chunk + tl.arange(0, BLOCK)
        live = index < last
        return tl.load(node_order + index, mask=live, other=0), live

    @triton.jit
    def _ending_scores(alpha, final, length, num_nodes, node, live):  # pragma: no cover - compiled for CUDA
        """``alpha[length, node] + final[node]`` for a block of nodes (-inf on dead lanes)."""
        return tl.load(alpha + length * num_nodes + node, mask=live, other=float("-inf"), cache_modifier=".cg") \
            + tl.load(final + node, mask=live, other=float("-inf"))

    @triton.jit
    def _nan_of(value, axis: tl.constexpr):  # pragma: no cover - compiled for CUDA
        """NaN where ``value`` has a NaN along ``axis``, else 0: added to a maximum, which on the
        GPU drops NaNs, it makes a NaN (weight) give a NaN result, as in torch."""
        return tl.sum(tl.where(value == value, 0.0, value), axis=axis)

    @triton.jit
    def _log_plus_slots(value):  # pragma: no cover - compiled for CUDA
        """logsumexp over the slots (axis 0), exact at -inf, NaN where a slot is NaN (the maximum
        skips a NaN; the sum of exponentials does not)."""
        peak = tl.max(value, axis=0)
        shift = tl.where(peak == float("-inf"), 0.0, peak)
        total = tl.sum(tl.exp(value - shift[None, :]), axis=0)
        return tl.where((peak == float("-inf")) & (total == total), peak, shift + tl.log(total))

    @triton.jit
    def _forward_kernel_cuda(alpha, totals, slots, table, arc_src, arc_weight, arc_column, columns, start, final,
                             node_order, seq_offsets, lengths, num_nodes, num_slots, num_columns,
                             MAX_PLUS: tl.constexpr, KEEP_SLOTS: tl.constexpr, SLOTS: tl.constexpr,
                             BLOCK: tl.constexpr):  # pragma: no cover - compiled for CUDA
        """:func:`_forward_kernel` for one sequence per program: ``alpha[0] = start``, then
        ``alpha[t + 1, n]`` = logsumexp (MAX_PLUS: max, and with KEEP_SLOTS the first best slot
        into ``slots[t, n]``) over n's incoming arcs of ``alpha[t, src] + w + columns[t, col]``
        up to the sequence's length, then its total."""
        seq = tl.program_id(0)
        first = tl.load(seq_offsets + seq)
        last = tl.load(seq_offsets + seq + 1)
        length = tl.load(lengths + seq)
        for chunk in range(first, last, BLOCK):
            node, live = _block_nodes(node_order, chunk, last, BLOCK)
            tl.store(alpha + node, tl.load(start + node, mask=live), mask=live)
        tl.debug_barrier()
        for t in range(0, length):
            for chunk in range(first, last, BLOCK):
                node, live = _block_nodes(node_order, chunk, last, BLOCK)
                arc, column, used, value = _slot_scores(table, arc_src, arc_weight, arc_column,
                                                        columns + t * num_columns, alpha + t * num_nodes, node, live,
                                                        num_nodes, num_slots, SLOTS)
                if MAX_PLUS:
                    score = tl.max(value, axis=0) + _nan_of(value, 0)
                    if KEEP_SLOTS:
                        tl.store(slots + t * num_nodes + node, tl.argmax(value, axis=0, tie_break_left=True),
                                 mask=live)
                else:
                    score = _log_plus_slots(value)
                tl.store(alpha + (t + 1) * num_nodes + node, score, mask=live)
            tl.debug_barrier()
        # The total over the nodes of alpha[length] + final: max, then (log) the sum below it.
        best = tl.full([BLOCK], float("-inf"), alpha.dtype.element_ty)
        nan = tl.zeros([BLOCK], alpha.dtype.element_ty)
        for chunk in range(first, last, BLOCK):
            node, live = _block_nodes(node_order, chunk, last, BLOCK)
            ending = _ending_scores(alpha, final, length, num_nodes, node, live)
            best = tl.maximum(best, ending)
            nan += tl.where(ending == ending, 0.0, ending)
        peak = tl.max(best, axis=0) + tl.sum(nan, axis=0)
        if MAX_PLUS:
            tl.store(totals + seq, peak)
        else:
            shift = tl.where(peak == float("-inf"), 0.0, peak)
            acc = tl.zeros([BLOCK], alpha.dtype.element_ty)
            for chunk in range(first, last, BLOCK):
                node, live = _block_nodes(node_order, chunk, last, BLOCK)
                acc += tl.exp(_ending_scores(alpha, final, length, num_nodes, node, live) - shift)
            tl.store(totals + seq, tl.where(peak == float("-inf"), peak, shift + tl.log(tl.sum(acc, axis=0))))

    @triton.jit
    def _backward_log_kernel_cuda(beta, grad_w, grad_columns, grad_start, grad_final, table, arc_dst, arc_weight,
                                  arc_column, columns, start, final, alpha, shift, grad_totals,
                                  node_order, seq_offsets, lengths, num_nodes, num_slots, num_columns,
                                  SLOTS: tl.constexpr, BLOCK: tl.constexpr):  # pragma: no cover - compiled for CUDA
        """:func:`_backward_log_kernel` for one sequence per program: backward scores from the
        final weights at the sequence's length down to frame 0 (rows ``t % 2`` of ``beta``, each
        from its node's posterior, as there), and the gradients: each arc's occupancy
        ``exp(alpha[t, src] + w + e + beta[t + 1, dst] - total)`` times the incoming gradient,
        added to its weight's and its emission column's."""
        seq = tl.program_id(0)
        first = tl.load(seq_offsets + seq)
        last = tl.load(seq_offsets + seq + 1)
        length = tl.load(lengths + seq)
        total = tl.load(shift + seq)
        incoming = tl.load(grad_totals + seq)
        for chunk in range(first, last, BLOCK):
            node, live = _block_nodes(node_order, chunk, last, BLOCK)
            last_weight = tl.load(final + node, mask=live, other=float("-inf"))
            tl.store(beta + (length % 2) * num_nodes + node, last_weight, mask=live)
            ending = tl.load(alpha + length * num_nodes + node, mask=live, other=float("-inf")) + last_weight
            tl.store(grad_final + node, tl.exp(ending - total) * incoming, mask=live)
        tl.debug_barrier()
        for step in range(0, length):
            t = length - 1 - step
            for chunk in range(first, last, BLOCK):
                node, live = _block_nodes(node_order, chunk, last, BLOCK)
                arc, column, used, value = _slot_scores(table, arc_dst, arc_weight, arc_column,
                                                        columns + t * num_columns, beta + ((t + 1) % 2) * num_nodes,
                                                        node, live, num_nodes, num_slots, SLOTS)
                base = tl.load(alpha + t * num_nodes + node, mask=live, other=float("-inf")) - total
                occupancy = tl.exp(base[None, :] + value)  # at most 1: the arc's posterior
                posterior = tl.sum(occupancy, axis=0)
                tl.store(beta + (t % 2) * num_nodes + node,
                         tl.where(posterior > 0.0, tl.log(posterior) - base, float("-inf")), mask=live)
                occupancy = occupancy * incoming
                hit = used & (occupancy != 0.0)
                tl.atomic_add(grad_w + arc, occupancy, mask=hit, sem="relaxed")
                tl.atomic_add(grad_columns + t * num_columns + column, occupancy, mask=hit, sem="relaxed")
            tl.debug_barrier()
        for chunk in range(first, last, BLOCK):
            node, live = _block_nodes(node_order, chunk, last, BLOCK)
            through = tl.load(start + node, mask=live, other=float("-inf")) \
                + tl.load(beta + node, mask=live, other=float("-inf"), cache_modifier=".cg")
            tl.store(grad_start + node, tl.exp(through - total) * incoming, mask=live)


if _TRITON:
    @triton.jit
    def _backtrack_kernel_cuda(arcs, first, in_arc, src, slots, last, lengths, num_nodes,
                               num_frames):  # pragma: no cover - compiled for CUDA
        """:func:`_backtrack_kernel` for one sequence per program (a scalar walk over its frames)."""
        seq = tl.program_id(0)
        node = tl.load(last + seq)
        steps = tl.where(node >= 0, tl.load(lengths + seq), 0)
        for step in range(0, steps):
            t = steps - 1 - step
            arc = tl.load(in_arc + tl.load(slots + t * num_nodes + node) * num_nodes + node)
            tl.store(arcs + seq * num_frames + t, arc)
            node = tl.load(src + arc)
        tl.store(first + seq, node)


def _triton_launch(kernel: Any, lay: _Layout, table: Tensor, num_columns: int, lengths: Tensor, *args: Tensor,
                   **flags: bool) -> None:
    """``kernel(*args, layout tables and sizes, **flags)``, one program per sequence, its nodes in
    blocks of a ``_TRITON_TILE`` of ``table``'s arc slots. The kernels index raw memory, so the
    tensors go in detached and contiguous (outputs are fresh, hence contiguous already)."""
    if lay.num_seqs == 0:
        return
    slots = triton.next_power_of_2(table.shape[0])
    block = max(16, min(triton.next_power_of_2(max(lay.most_seq_nodes, 1)), _TRITON_TILE // slots))
    kernel[(lay.num_seqs,)](*(a.detach().contiguous() for a in args), lay.node_order, lay.seq_offsets, lengths,
                            lay.num_nodes, table.shape[0], num_columns, **flags, SLOTS=slots, BLOCK=block,
                            num_warps=8 if slots * block >= 2048 else 4)


# ---------------------------------------------------------------------- fused total
class _DenseScore(torch.autograd.Function):
    """Totals of the dense intersection from the emission columns, with the forward-backward gradient."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, start: Tensor, final: Tensor, columns: Tensor,
                lay: _Layout, lengths: Tensor, semiring: Semiring) -> Tensor:
        alpha, totals, slots = _forward(lay, weights, start, final, columns, lengths, semiring,
                                        backpointers=semiring.backtracks)
        ctx.lay, ctx.semiring = lay, semiring
        ctx.save_for_backward(weights, start, final, columns, lengths, alpha, totals,
                              *(() if slots is None else (slots,)))
        return totals

    @staticmethod
    def backward(ctx: Any, grad_totals: Tensor) -> Tuple[Tensor | None, ...]:
        weights, start, final, columns, lengths, alpha, totals, *rest = ctx.saved_tensors
        lay: _Layout = ctx.lay
        backend = _kernel_backend(lay, columns, ctx.semiring)
        if ctx.semiring.backtracks:
            grads = _viterbi_grads(lay, rest[0], weights, start, final, columns, lengths, alpha, grad_totals)
        elif backend:
            grads = _kernel_grads(backend, lay, weights, start, final, columns, lengths, alpha, totals, grad_totals)
        else:
            grads = _forward_backward_grads(lay, ctx.semiring, weights, start, final, columns, lengths,
                                            alpha, totals, grad_totals)
        return tuple(grad if need else None for grad, need in zip(grads, ctx.needs_input_grad[:4])) \
            + (None, None, None)


def _forward_backward_grads(lay: _Layout, semiring: Semiring, weights: Tensor, start: Tensor, final: Tensor,
                            columns: Tensor, lengths: Tensor, alpha: Tensor, totals: Tensor,
                            grad_totals: Tensor) -> Tuple[Tensor, ...]:
    """Arc occupancies ``exp(beta (alpha[src] + w + e + beta[dst] - total))`` scaled by the
    incoming gradient, summed into the emission columns and the arc weights."""
    scale = semiring.beta
    shift = _gradient_shift(totals)
    arc_shift, arc_grad = shift[lay.arc_seq], grad_totals[lay.arc_seq]
    grad_w = torch.zeros_like(weights)
    grad_columns = torch.zeros_like(columns)

    def occupancy(log_value: Tensor, value_shift: Tensor, value_grad: Tensor) -> Tensor:
        value = log_value - value_shift
        return torch.exp(value * scale if scale != 1.0 else value) * value_grad

    def visit(t0: int, t1: int, betas: Tensor) -> None:
        nonlocal grad_w
        occ = occupancy(alpha[t0:t1].index_select(1, lay.src) + weights
                        + columns[t0:t1].index_select(1, lay.arc_column) + betas.index_select(1, lay.dst),
                        arc_shift, arc_grad)
        grad_w = grad_w + occ.sum(0)
        grad_columns[t0:t1].index_add_(1, lay.arc_column, occ)

    beta0 = _backward_sweep(lay, weights, final, columns, lengths, semiring, visit)
    node_shift, node_grad = shift[lay.node_seq], grad_totals[lay.node_seq]
    grad_start = occupancy(start + beta0, node_shift, node_grad)
    grad_final = occupancy(_ending(lay, alpha, final, lengths), node_shift, node_grad)
    return grad_w, grad_start, grad_final, grad_columns


def _viterbi_grads(lay: _Layout, slots: Tensor, weights: Tensor, start: Tensor, final: Tensor,
                   columns: Tensor, lengths: Tensor, alpha: Tensor, grad_totals: Tensor) -> Tuple[Tensor, ...]:
    """The tropical total's gradient: the incoming gradient along the best path of each sequence."""
    arcs, first, last = _best_paths(lay, alpha, slots, final, lengths)
    seq, frame = (arcs >= 0).nonzero(as_tuple=True)
    path_arcs = arcs[seq, frame]
    grad_w = torch.zeros_like(weights).index_add_(0, path_arcs, grad_totals[seq])
    grad_columns = torch.zeros_like(columns).index_put_((frame, lay.arc_column[path_arcs]), grad_totals[seq],
                                                        accumulate=True)
    found = last >= 0
    grad_start = torch.zeros_like(start).index_add_(0, first[found], grad_totals[found])
    grad_final = torch.zeros_like(final).index_add_(0, last[found], grad_totals[found])
    return grad_w, grad_start, grad_final, grad_columns


def dense_score(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None,
                semiring: Union[str, Semiring] = "log", backend: str = "native", *,
                lengths_name: str = "lengths", labels_checked: bool = False) -> Tensor:
    """Total score of each graph intersected with its emission sequence, without building the lattice.

    ``emissions`` are ``[B, T, V]`` (or ``[T, V]`` for one sequence) log-scores; ``graphs`` are a
    batch of ``B`` graphs, a list of them, or one graph used for every sequence; ``lengths``
    (``[B]``, default ``T``) are the number of frames of each sequence. The total of sequence
    ``b`` sums (log semiring) or maximises (``"tropical"``) over the paths of exactly
    ``lengths[b]`` arcs the score ``start + sum(arc weight + emissions[b, t, ilabel]) + final``.
    Label 0 reads emission column 0 (it is not epsilon here).

    Returns ``[B]`` (a 0-dim tensor for ``[T, V]`` emissions); ``-inf`` where no path fits.
    Differentiable w.r.t. the emissions and the graph's arc, start and final weights (the log
    semiring's gradient is the arc occupancy, the tropical one is the best path's indicator).
    Memory: the forward scores ``[T + 1, N]`` are kept for the backward, and chunks of frames
    (or the compiled kernels' two rows of backward scores) bound the rest.

    Float16 and bfloat16 emissions are summed in float32 (as torch's autocast runs its own
    ``ctc_loss``): the totals are float32 and the gradients come back in the emissions' dtype;
    the graph may then be float32 or of the emissions' dtype. A NaN arc, start or final weight
    gives its sequence a NaN total (and NaN gradients), as a NaN does in torch (the weights are
    checked when a graph is built, not here: a check would cost a host sync on CUDA); a NaN or
    +inf emission within a sequence's length raises :class:`WeightError`.

    ``backend="k2"`` computes the same totals and gradients with ``k2.intersect_dense``
    (:mod:`gtn_py.backends`).

    For wrappers that speak of the inputs in their own terms (``ctc_loss``): ``lengths_name`` is
    what the error messages call the lengths, and ``labels_checked`` skips the check of the
    graphs' labels against the emission columns that the caller has made already.
    """
    other = get_backend(backend)
    sr = get_semiring(semiring)
    g, emissions, lens, single, _ = _prepare(graphs, emissions, lengths, lengths_name, labels_checked)
    if other is not None:
        totals = other.dense_totals(g, emissions, lens, sr)
        return totals[0] if single else totals
    lay = _Layout.of(g, emissions.shape[0], emissions.shape[2])
    totals = _DenseScore.apply(g.weights, g.start_weights, g.final_weights, lay.emission_columns(emissions, lens),
                               lay, lens, sr)
    return totals[0] if single else totals


# ---------------------------------------------------------------------- lattice and alignment
class DenseLattice(NamedTuple):
    """The dense intersection as a graph, with its arc maps: lattice arc ``i`` is arc
    ``arc_map[i]`` of the graph given (or of ``Graph.batch`` of the list given) taken at frame
    ``frame[i]`` (its weight is that arc's weight plus the emission of its ilabel at that frame,
    a differentiable gather of both)."""

    graph: Graph
    arc_map: Tensor
    frame: Tensor


def _margin(value: float | None, name: str) -> float | None:
    """A pruning margin: None, or a number >= 0 (inf allowed)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise WeightError(f"{name} must be a number >= 0 (or None for no pruning), got {value!r}") from None
    if not number >= 0:  # also NaN
        raise WeightError(f"{name} must be a score margin >= 0 (or None for no pruning), got {number}")
    return number


def _search(inputs: _Inputs, search_beam: float | None, max_active: int | None,
            keep_lattice: bool = True) -> SearchResult:
    """Token passing with search-time pruning (:mod:`.search`) on CPU copies of the inputs."""
    g, emissions, lens, _, _ = inputs
    if max_active is not None:
        if isinstance(max_active, bool) or not isinstance(max_active, (int, np.integer)) or max_active < 1:
            raise InvalidGraphError(f"max_active must be a whole number >= 1 (or None for no limit), got "
                                    f"{max_active!r}")
    detached = emissions.detach()
    frames = torch.arange(detached.shape[1], device=detached.device)
    used = (frames[None, :] < lens[:, None])[:, :, None]
    if bool((nan_or_plus_inf(detached) & used).any()) or bool(torch.isnan(g.weights.detach()).any()):
        raise WeightError("emissions (within the lengths) and graph weights must be finite or -inf for a pruned "
                          "search: a NaN or +inf has no rank to prune by")
    host = lambda t: t.detach().cpu().numpy()  # noqa: E731
    # Each node's sequence; -1: one graph shared by every sequence (not copied).
    node_seq = host(g.node_graph) if g.is_batch else np.full(g.num_nodes, -1 if inputs.shared_arcs else 0)
    as_float64 = lambda t: host(t).astype(np.float64)  # noqa: E731
    return token_passing(host(g.src), host(g.dst), host(g.ilabel), as_float64(g.weights), as_float64(g.start_weights),
                         as_float64(g.final_weights), node_seq, host(detached), host(lens),
                         float("inf") if search_beam is None else search_beam, max_active or 0, keep_lattice)


def _searched_lattice(inputs: _Inputs, found: SearchResult, beam: float | None) -> DenseLattice:
    """The lattice a pruned search kept, trimmed to its successful paths (and, with ``beam``, to
    those within ``beam`` of the best), as :func:`dense_lattice` returns it."""
    g, emissions, lens, single, _ = inputs
    num_seqs = emissions.shape[0]
    device = emissions.device
    lens_host = lens.cpu().numpy()
    level, nodes, seqs = found.token_frame, found.token_node, found.token_seq
    accepts = (level == lens_host[seqs]) & (g.final_weights.detach().cpu().numpy()[nodes] > NEG_INF)
    useful = reachable(found.arc_dst, found.arc_src, accepts)  # every token is reached from a start
    keep_arc = useful[found.arc_src] & useful[found.arc_dst]
    renumber = np.cumsum(useful) - 1
    to_device = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    level_t, node_t, seq_t = to_device(level[useful]), to_device(nodes[useful]), to_device(seqs[useful])
    arc_map = to_device(found.arc_id[keep_arc])
    frame = to_device(level[found.arc_src[keep_arc]])
    weights, start, final = g.weights, g.start_weights, g.final_weights
    seq = seq_t.index_select(0, to_device(renumber[found.arc_src[keep_arc]]))
    arc_weights = weights.index_select(0, arc_map) + emissions[seq, frame, g.ilabel[arc_map]]
    neg_inf = start.new_full((), NEG_INF)
    start_weights = torch.where(level_t == 0, start.index_select(0, node_t), neg_inf)
    final_weights = torch.where(level_t == lens[seq_t], final.index_select(0, node_t), neg_inf)
    lattice = Graph.from_tensors(to_device(renumber[found.arc_src[keep_arc]]),
                                 to_device(renumber[found.arc_dst[keep_arc]]), g.ilabel[arc_map], g.olabel[arc_map],
                                 arc_weights, start_weights, final_weights,
                                 node_graph=None if single else seq_t, num_graphs=1 if single else num_seqs)
    if beam is not None and lattice.num_nodes:
        # Output beam: the arcs on a path within ``beam`` of the best, by Viterbi scores both ways.
        with torch.no_grad():
            alpha = shortest_distance(lattice.detach(), "tropical")
            beta = shortest_distance(lattice.detach(), "tropical", reverse=True)
            best_of_seq = torch.full((num_seqs,), NEG_INF, dtype=alpha.dtype, device=device).scatter_reduce(
                0, seq_t, alpha + lattice.final_weights.detach(), "amax")
            floor = best_of_seq - beam
            kept = alpha[lattice.src] + lattice.weights.detach() + beta[lattice.dst] >= floor[seq]
            kept_nodes = (alpha + beta >= floor[seq_t]).nonzero().reshape(-1)
        lattice = subgraph(lattice, kept_nodes, arcs=kept)
        arc_map, frame = arc_map[kept], frame[kept]
    return DenseLattice(lattice, inputs.user_arcs(arc_map), frame)


def dense_lattice(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None,
                  beam: float | None = None, search_beam: float | None = None,
                  max_active: int | None = None) -> DenseLattice:
    """Build the dense intersection as a (batch) graph; see :func:`intersect_dense`."""
    beam = _margin(beam, "beam")
    search_beam = _margin(search_beam, "search_beam")
    searching = search_beam is not None or max_active is not None
    inputs = _prepare(graphs, emissions, lengths, copy_shared=not searching)
    if searching:
        return _searched_lattice(inputs, _search(inputs, search_beam, max_active), beam)
    g, emissions, lens, single, _ = inputs
    num_seqs, num_frames, _ = emissions.shape
    lay = _Layout.of(g, num_seqs, emissions.shape[2])
    weights, start, final = g.weights, g.start_weights, g.final_weights
    tropical = get_semiring("tropical")
    with torch.no_grad():
        # Viterbi forward and backward scores: a node (arc) is kept when the best path through
        # it is possible and, with a beam, within ``beam`` of the sequence's best path.
        columns = lay.emission_columns(emissions.detach(), lens)
        alpha, best, _ = _forward(lay, weights.detach(), start.detach(), final.detach(), columns, lens, tropical)
        betas: List[Tensor] = []
        beta0 = _backward_sweep(lay, weights.detach(), final.detach(), columns, lens, tropical,
                                lambda t0, t1, b: betas.insert(0, b))
        beta = torch.cat([beta0[None]] + betas)
        floor = best - beam if beam is not None else torch.full_like(best, NEG_INF)
        node_floor = floor[lay.node_seq]
        through = alpha + beta                                  # [T + 1, N]
        # (NaN, from a NaN weight, is kept: the lattice carries it as the totals do.)
        keep_node = (through != NEG_INF) & ~(through < node_floor)
        level, node = keep_node.nonzero(as_tuple=True)
        order = torch.argsort(lay.node_seq[node], stable=True)  # nodes of one graph together
        level, node = level[order], node[order]
        node_id = torch.full_like(keep_node, -1, dtype=torch.long)
        node_id[level, node] = torch.arange(level.shape[0], device=level.device)
        arc_floor = node_floor[lay.src]
        kept_frames, kept_arcs = [lens.new_zeros(0)], [lens.new_zeros(0)]
        step = _chunk_frames(num_frames, max(g.num_arcs, 1))
        for t0 in range(0, num_frames, step):
            t1 = min(t0 + step, num_frames)
            via = (alpha[t0:t1].index_select(1, lay.src) + weights.detach()
                   + columns[t0:t1].index_select(1, lay.arc_column) + beta[t0 + 1:t1 + 1].index_select(1, lay.dst))
            t, a = ((via != NEG_INF) & ~(via < arc_floor)).nonzero(as_tuple=True)
            kept_frames.append(t + t0)
            kept_arcs.append(a)
        frame, arc_map = torch.cat(kept_frames), torch.cat(kept_arcs)
        order = torch.argsort(lay.arc_seq[arc_map], stable=True)
        frame, arc_map = frame[order], arc_map[order]
        src = node_id[frame, lay.src[arc_map]]
        dst = node_id[frame + 1, lay.dst[arc_map]]
    seq = lay.arc_seq[arc_map]
    arc_weights = weights.index_select(0, arc_map) + emissions[seq, frame, lay.ilabel[arc_map]]
    neg_inf = start.new_full((), NEG_INF)
    start_weights = torch.where(level == 0, start.index_select(0, node), neg_inf)
    final_weights = torch.where(level == lens[lay.node_seq[node]], final.index_select(0, node), neg_inf)
    lattice = Graph.from_tensors(src, dst, g.ilabel[arc_map], g.olabel[arc_map], arc_weights,
                                  start_weights, final_weights, node_graph=None if single else lay.node_seq[node],
                                  num_graphs=1 if single else num_seqs)
    return DenseLattice(lattice, inputs.user_arcs(arc_map), frame)


def intersect_dense(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None,
                    beam: float | None = None, search_beam: float | None = None,
                    max_active: int | None = None) -> Graph:
    """The dense intersection as a graph (a batch of ``B`` lattices; one graph for ``[T, V]``).

    Nodes are the ``(graph node, frame)`` pairs on some successful path (reachable and
    co-accessible), ordered by frame; the arc for graph arc ``a`` at frame ``t`` has ``a``'s labels
    and weight ``weights[a] + emissions[b, t, ilabel[a]]``, differentiable w.r.t. both. Start
    weights sit on frame 0, final weights at each sequence's length. ``beam`` keeps only nodes and
    arcs on a path whose score is within ``beam`` of the sequence's best path (pruning the output).
    Label 0 is emission column 0 here, not epsilon. A graph with failure (back-off) arcs is
    intersected after :func:`~gtn_py.ops.compose.remove_failure_arcs`.

    Search-time pruning, for decoding with large graphs (``search_beam`` and/or ``max_active``):
    the lattice is built frame by frame by token passing (:mod:`gtn_py.ops.search`), keeping at
    each frame only the (node, frame) pairs whose best score is within ``search_beam`` of the
    frame's best, at most ``max_active`` of them, so time and memory follow the active pairs,
    not the graph; ``beam`` then prunes the lattice kept. An approximation: the best path can be
    pruned away (exact with ``search_beam=inf`` and no ``max_active``). Runs on the CPU (CUDA
    inputs are copied there for the search; the lattice's weights stay on their device).
    """
    return dense_lattice(graphs, emissions, lengths, beam, search_beam, max_active).graph


class Alignment(NamedTuple):
    """Best path of each sequence through a dense intersection."""

    labels: Tensor   # [B, T] input label read at each frame (-1 beyond the length or with no path)
    arcs: Tensor     # [B, T] arc taken at each frame (ids in the graph given, or in Graph.batch of the list)
    scores: Tensor   # [B] best path scores (-inf with no path), differentiable
    path: Graph      # the best paths as a batch of linear graphs, differentiable weights


def viterbi_align(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None,
                  search_beam: float | None = None, max_active: int | None = None) -> Alignment:
    """Viterbi alignment: the best path of each sequence, as frame-level labels and as a graph.

    The path graph of sequence ``b`` has ``lengths[b] + 1`` nodes (none if no path exists), the
    arcs taken with their labels and weights (arc weight + emission, differentiable), and the
    first node's start weight and the last node's final weight. ``search_beam`` and
    ``max_active`` search with pruning at each frame (see :func:`intersect_dense`): the best
    path the pruned search keeps, found in time and memory that follow the active states.
    """
    search_beam = _margin(search_beam, "search_beam")
    searching = search_beam is not None or max_active is not None
    inputs = _prepare(graphs, emissions, lengths, copy_shared=not searching)
    g, emissions, lens, single, _ = inputs
    num_seqs, num_frames, _ = emissions.shape
    weights, start, final = g.weights, g.start_weights, g.final_weights
    if searching:
        searched = _search(inputs, search_beam, max_active, keep_lattice=False)
        device = emissions.device
        arcs = torch.from_numpy(searched.best_arcs).to(device)
        first, last = torch.from_numpy(searched.first).to(device), torch.from_numpy(searched.last).to(device)
        no_path = torch.full((num_seqs,), NEG_INF, dtype=weights.dtype, device=device)
    else:
        lay = _Layout.of(g, num_seqs, emissions.shape[2])
        with torch.no_grad():
            columns = lay.emission_columns(emissions.detach(), lens)
            alpha, best, slots = _forward(lay, weights.detach(), start.detach(), final.detach(), columns, lens,
                                          get_semiring("tropical"), backpointers=True)
            assert slots is not None
            arcs, first, last = _best_paths(lay, alpha, slots, final.detach(), lens)
            # The score of a sequence without a path: -inf, or NaN where a NaN weight made its best score NaN.
            no_path = best.masked_fill(best == best, NEG_INF)
    # (A graph without arcs has no labels to read: its arcs are all -1.)
    labels = torch.where(arcs >= 0, g.ilabel[arcs.clamp(min=0)], arcs) if g.ilabel.numel() else arcs
    found = last >= 0
    # Path graphs: sequence b contributes lengths[b] + 1 nodes when it has a path.
    sizes = torch.where(found, lens + 1, torch.zeros_like(lens))
    offsets = torch.cumsum(sizes, 0) - sizes
    on_path = arcs >= 0
    seq, frame = on_path.nonzero(as_tuple=True)
    path_arcs = arcs[seq, frame]
    arc_weights = weights.index_select(0, path_arcs) + emissions[seq, frame, g.ilabel[path_arcs]]
    num_nodes = int(sizes.sum())
    node_seq = torch.repeat_interleave(sizes)
    neg_inf = start.new_full((num_nodes,), NEG_INF)
    start_weights = neg_inf.index_put((offsets[found],), start.index_select(0, first[found]))
    final_weights = neg_inf.index_put((offsets[found] + lens[found],), final.index_select(0, last[found]))
    path = Graph.from_tensors(offsets[seq] + frame, offsets[seq] + frame + 1, g.ilabel[path_arcs],
                               g.olabel[path_arcs], arc_weights, start_weights, final_weights,
                               node_graph=None if single else node_seq, num_graphs=1 if single else num_seqs)
    ends = no_path.index_put(
        (found.nonzero().reshape(-1),), start.index_select(0, first[found]) + final.index_select(0, last[found]))
    scores = ends.index_add(0, seq, arc_weights)
    arcs = inputs.user_arcs(arcs)
    if single:
        return Alignment(labels[0], arcs[0], scores[0], path)
    return Alignment(labels, arcs, scores, path)
