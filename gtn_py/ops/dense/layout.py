"""The problem layout of a dense intersection: the inputs normalised and checked, the integer
structure of a batch of graphs prepared once per call (padded arc tables, emission columns), and
the reads of it that every kind of kernel shares."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ...errors import DeviceMismatchError, DtypeMismatchError, InvalidGraphError, LabelError, WeightError
from ...graph import NEG_INF, Graph, as_frame_counts, has_nan_or_plus_inf, nan_or_plus_inf
from ...semiring import segment_max
from ..traverse import group_arcs

GraphsLike = Union[Graph, Sequence[Graph]]
LengthsLike = Union[Tensor, Sequence[int], None]

CHUNK_ELEMENTS = 1 << 19


@dataclass
class Layout:
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
    def of(g: Graph, num_seqs: int, num_labels: int) -> Layout:
        node_seq = g.node_graph
        src, dst = g.src, g.dst
        n = g.num_nodes
        arc_seq = node_seq.index_select(0, src)
        columns, arc_column = torch.unique(arc_seq * num_labels + g.ilabel, return_inverse=True)
        node_order, seq_offsets = group_arcs(node_seq, num_seqs)
        most_seq_nodes = int((seq_offsets[1:] - seq_offsets[:-1]).max()) if num_seqs else 0
        return Layout(num_seqs, n, node_seq, src, dst, g.ilabel, arc_seq, columns, arc_column.reshape(-1),
                       padded_arcs(dst, n), padded_arcs(src, n), node_order, seq_offsets, most_seq_nodes)

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
            read = GatherColumns.apply(frames_major.reshape(num_frames, num_seqs * num_labels), self.columns)
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


class GatherColumns(torch.autograd.Function):
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
        table_grad = zeros_for(*ctx.table_shape, like=grad)
        if numpy_dtype(grad) is None:
            return table_grad.index_copy_(1, columns, grad), None
        table_grad.numpy()[:, columns.numpy()] = grad.detach().numpy()
        return table_grad, None


def padded_arcs(nodes: Tensor, num_nodes: int) -> Tensor:
    """``[max degree, num_nodes]`` table of the arcs whose ``nodes`` entry is each node (-1 pads)."""
    order, offsets = group_arcs(nodes, num_nodes)
    degree = offsets[1:] - offsets[:-1]
    width = max(int(degree.max()) if num_nodes else 0, 1)
    table = torch.full((width, num_nodes), -1, dtype=torch.long, device=nodes.device)
    grouped = nodes.index_select(0, order)
    slot = torch.arange(order.shape[0], device=nodes.device) - offsets.index_select(0, grouped)
    return table.view(-1).index_copy_(0, slot * num_nodes + grouped, order).view(width, num_nodes)


class Inputs(NamedTuple):
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


def prepare_inputs(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike, lengths_name: str = "lengths",
                   labels_checked: bool = False, copy_shared: bool = True,
                   failure_label: int | None = None) -> Inputs:
    """Normalise the inputs (see :class:`Inputs`) and check them; ``lengths_name`` is what the
    caller calls the lengths, for the messages; ``labels_checked``: the caller has checked the
    graphs' labels against the emission columns already, in its own terms; ``failure_label``:
    arcs with this label are failure arcs, which read no column. Float16 and bfloat16
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
        g = Graph.batch(items) if items or num_seqs else empty_batch(emissions)
    if num_seqs == 0 and g.num_graphs != 0:  # an empty batch of emissions: an empty batch of graphs
        g = empty_batch(emissions, g.dtype) if not g.is_batch or g.num_graphs == 1 else g
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
        reads = g.ilabel >= num_labels
        if failure_label is not None:  # failure arcs read no column
            reads &= g.ilabel != failure_label
        bad = reads.nonzero()
        if bad.numel():
            a = int(bad[0, 0])
            raise LabelError(f"arc {a}: ilabel {int(g.ilabel[a])} has no emission column "
                             f"(emissions have V = {num_labels}; in dense intersection label 0 is column 0, "
                             "not epsilon)")
    if lengths is None:
        lens = torch.full((num_seqs,), num_frames, dtype=torch.long, device=emissions.device)
    else:
        lens = as_frame_counts(lengths, num_seqs, num_frames, lengths_name, emissions.device)
    return Inputs(g, emissions, lens, single, shared_arcs)


def empty_batch(like: Tensor, dtype: torch.dtype | None = None) -> Graph:
    """A batch of no graphs, for an empty batch of emission sequences."""
    none = torch.zeros(0, dtype=torch.long, device=like.device)
    weights = torch.zeros(0, dtype=dtype or like.dtype, device=like.device)
    return Graph.from_tensors(none, none, none, none, weights, weights, weights, node_graph=none, num_graphs=0)


def chunk_frames(num_frames: int, width: int) -> int:
    return max(1, min(num_frames, CHUNK_ELEMENTS // max(width, 1)))


def take_slots(values: Tensor, table: Tensor, fill: float) -> Tensor:
    """``values[table]`` with ``fill`` where ``table`` is -1 (also when ``values`` is empty)."""
    padded = torch.cat([values, values.new_full((1,), fill)])
    index = torch.where(table >= 0, table, torch.full_like(table, values.shape[0]))
    return padded.index_select(0, index.reshape(-1)).view(table.shape)


def arc_table(lay: Layout, table: Tensor, weights: Tensor, endpoint: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """For a padded ``[D, N]`` arc table: the other endpoint (flat), the weights (-inf pads) and
    the emission column of each slot (flat); padding reads column 0 with weight -inf at the slot's
    own node, so that a NaN score (from a NaN weight) stays in its own sequence."""
    own = torch.arange(table.shape[1], device=table.device).expand(table.shape)
    ends = torch.where(table >= 0, take_slots(endpoint, table, 0), own) if endpoint.numel() else own
    return ends.reshape(-1), take_slots(weights, table, NEG_INF), take_slots(lay.arc_column, table, 0).reshape(-1)


def ending_scores(lay: Layout, alpha: Tensor, final: Tensor, lengths: Tensor) -> Tensor:
    """Forward score times final weight of each node, at its sequence's length."""
    nodes = torch.arange(lay.num_nodes, device=alpha.device)
    at_length = lengths.index_select(0, lay.node_seq) * lay.num_nodes + nodes
    return alpha.reshape(-1).index_select(0, at_length) + final


def best_nodes(lay: Layout, ending: Tensor) -> Tensor:
    """Per sequence, the node with the highest ``ending`` score (lowest id on ties; -1 if none)."""
    best = segment_max(ending, lay.node_seq, lay.num_seqs)
    nodes = torch.arange(lay.num_nodes, device=ending.device)
    hit = (ending == best[lay.node_seq]) & (ending > NEG_INF)
    candidate = torch.where(hit, nodes, torch.full_like(nodes, lay.num_nodes))
    pick = torch.full((lay.num_seqs,), lay.num_nodes, dtype=torch.long, device=ending.device)
    pick = pick.scatter_reduce(0, lay.node_seq, candidate, reduce="amin", include_self=True)
    return torch.where(pick < lay.num_nodes, pick, torch.full_like(pick, -1))


def gradient_shift(totals: Tensor) -> Tensor:
    """The totals that arc occupancies are taken relative to: an impossible sequence (total -inf)
    gets 0, so that all its occupancies are exp(-inf) = 0; a NaN total stays NaN, so that its
    gradients are NaN too."""
    return torch.where(torch.isinf(totals), torch.zeros_like(totals), totals)


def numpy_dtype(like: Tensor) -> Any:
    """The numpy dtype for a float32/float64 CPU tensor, else None."""
    if like.device.type != "cpu":
        return None
    return {torch.float32: np.float32, torch.float64: np.float64}.get(like.dtype)


def zeros_for(*shape: int, like: Tensor) -> Tensor:
    """Zeros like ``like``; on the CPU from numpy (calloc): torch.zeros fills large tensors on
    its thread pool, whose wake-up costs milliseconds on a busy machine."""
    dtype = numpy_dtype(like)
    return like.new_zeros(shape) if dtype is None else torch.from_numpy(np.zeros(shape, dtype=dtype))
