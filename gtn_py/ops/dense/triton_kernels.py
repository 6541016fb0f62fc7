"""The dense sweeps on CUDA as Triton kernels. A frame is too small for a dozen tensor launches per
frame to pay (they cost 100 times torch's own CTC). As on the CPU, one compiled program per
sequence runs all its frames: the forward kernel writes the forward scores and the total, the
backward kernel the backward scores (two rows that alternate) and every gradient, the arc
occupancies added atomically (arcs of one sequence share emission columns). A program takes its
nodes a block at a time, each node's arcs one tile, with a barrier between frames (frame t + 1
reads what frame t wrote). On CPU tensors the same kernels run under Triton's interpreter
(``TRITON_INTERPRET=1`` before gtn_py is imported): how they are checked without a GPU."""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor

try:  # Triton compiles the CUDA kernels (torch's CUDA wheels bring it); without it they use tensor ops
    import triton
    import triton.language as tl
    TRITON_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the install
    TRITON_AVAILABLE = False

from ...graph import NEG_INF
from ...semiring import Semiring
from .layout import Layout, gradient_shift, zeros_for
from .protocol import SweepKernels

MAX_SLOTS = 64   # in- or out-degree up to which a node's arcs are one tile (beyond: tensor ops)
TILE = 4096      # elements (slots x nodes) one program handles at once

if TRITON_AVAILABLE:
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
    def forward_kernel_cuda(alpha, totals, slots, table, arc_src, arc_weight, arc_column, columns, start, final,
                             node_order, seq_offsets, lengths, num_nodes, num_slots, num_columns,
                             MAX_PLUS: tl.constexpr, KEEP_SLOTS: tl.constexpr, SLOTS: tl.constexpr,
                             BLOCK: tl.constexpr):  # pragma: no cover - compiled for CUDA
        """:func:`forward_kernel` for one sequence per program: ``alpha[0] = start``, then
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
    def backward_log_kernel_cuda(beta, grad_w, grad_columns, grad_start, grad_final, table, arc_dst, arc_weight,
                                  arc_column, columns, start, final, alpha, shift, grad_totals,
                                  node_order, seq_offsets, lengths, num_nodes, num_slots, num_columns,
                                  SLOTS: tl.constexpr, BLOCK: tl.constexpr):  # pragma: no cover - compiled for CUDA
        """:func:`backward_log_kernel` for one sequence per program: backward scores from the
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


if TRITON_AVAILABLE:
    @triton.jit
    def backtrack_kernel_cuda(arcs, first, in_arc, src, slots, last, lengths, num_nodes,
                               num_frames):  # pragma: no cover - compiled for CUDA
        """:func:`backtrack_kernel` for one sequence per program (a scalar walk over its frames)."""
        seq = tl.program_id(0)
        node = tl.load(last + seq)
        steps = tl.where(node >= 0, tl.load(lengths + seq), 0)
        for step in range(0, steps):
            t = steps - 1 - step
            arc = tl.load(in_arc + tl.load(slots + t * num_nodes + node) * num_nodes + node)
            tl.store(arcs + seq * num_frames + t, arc)
            node = tl.load(src + arc)
        tl.store(first + seq, node)


def next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class TritonKernels(SweepKernels):
    """The Triton kernels, on tensors of ``device_type`` ("cuda"; "cpu": Triton's interpreter).
    ``kernels`` replaces the three compiled kernels (forward, backward, backtrack) by objects
    launched as ``kernel[grid](...)``, e.g. stubs that count launches (``bench/launches.py``)."""

    def __init__(self, device_type: str = "cuda", kernels: Tuple[Any, Any, Any] | None = None):
        self.name = "triton"
        self.device_type = device_type
        if kernels is None and TRITON_AVAILABLE:
            kernels = (forward_kernel_cuda, backward_log_kernel_cuda, backtrack_kernel_cuda)
        self.kernels = kernels

    def applies(self, lay: Layout, columns: Tensor, semiring: Semiring) -> bool:
        return (self.kernels is not None and semiring.dense_kernel is not None
                and columns.device.type == self.device_type and columns.dtype in (torch.float32, torch.float64)
                and max(lay.in_arc.shape[0], lay.out_arc.shape[0]) <= MAX_SLOTS)

    def launch(self, kernel: Any, lay: Layout, table: Tensor, num_columns: int, lengths: Tensor, *args: Tensor,
               **flags: bool) -> None:
        """``kernel(*args, layout tables and sizes, **flags)``, one program per sequence, its nodes in
        blocks of a ``TILE`` of ``table``'s arc slots. The kernels index raw memory, so the
        tensors go in detached and contiguous (outputs are fresh, hence contiguous already)."""
        if lay.num_seqs == 0:
            return
        slots = next_power_of_2(table.shape[0])
        block = max(16, min(next_power_of_2(max(lay.most_seq_nodes, 1)), TILE // slots))
        kernel[(lay.num_seqs,)](*(a.detach().contiguous() for a in args), lay.node_order, lay.seq_offsets, lengths,
                                lay.num_nodes, table.shape[0], num_columns, **flags, SLOTS=slots, BLOCK=block,
                                num_warps=8 if slots * block >= 2048 else 4)

    def forward(self, lay: Layout, weights: Tensor, start: Tensor, final: Tensor, columns: Tensor, lengths: Tensor,
                semiring: Semiring, backpointers: bool = False) -> Tuple[Tensor, Tensor, Tensor | None]:
        assert self.kernels is not None
        totals = columns.new_empty(lay.num_seqs)
        tropical = semiring.backtracks  # the max-plus kernels, which can keep the best slots
        keep = tropical and backpointers
        slots = torch.empty((columns.shape[0], lay.num_nodes) if keep else (0, 0), dtype=torch.long,
                            device=columns.device)
        alpha = columns.new_full((columns.shape[0] + 1, lay.num_nodes), NEG_INF)
        self.launch(self.kernels[0], lay, lay.in_arc, columns.shape[1], lengths, alpha, totals, slots,
                    lay.in_arc, lay.src, weights, lay.arc_column, columns, start, final, MAX_PLUS=tropical,
                    KEEP_SLOTS=keep)
        return alpha, totals, slots if keep else None

    def gradients(self, lay: Layout, semiring: Semiring, weights: Tensor, start: Tensor, final: Tensor,
                  columns: Tensor, lengths: Tensor, alpha: Tensor, totals: Tensor,
                  grad_totals: Tensor) -> Tuple[Tensor, ...]:
        assert self.kernels is not None
        shift = gradient_shift(totals)
        grad_w, grad_start, grad_final, grad_columns = (zeros_for(*t.shape, like=t)
                                                        for t in (weights, start, final, columns))
        beta = columns.new_empty(2, lay.num_nodes)
        self.launch(self.kernels[1], lay, lay.out_arc, columns.shape[1], lengths, beta, grad_w, grad_columns,
                    grad_start, grad_final, lay.out_arc, lay.dst, weights, lay.arc_column, columns, start, final,
                    alpha, shift, grad_totals)
        return grad_w, grad_start, grad_final, grad_columns

    def backtrack(self, lay: Layout, slots: Tensor, last: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        assert self.kernels is not None
        num_frames = slots.shape[0]
        arcs = torch.full((lay.num_seqs, num_frames), -1, dtype=torch.long, device=slots.device)
        if lay.src.numel() == 0:  # no arcs: only length-0 sequences have a path, and it has no arcs
            return arcs, last
        first = torch.empty_like(last)
        if lay.num_seqs:
            self.kernels[2][(lay.num_seqs,)](arcs, first, lay.in_arc, lay.src.contiguous(), slots, last.contiguous(),
                                             lengths, lay.num_nodes, num_frames)
        return arcs, first


TRITON_KERNELS = TritonKernels("cuda")
TRITON_INTERPRETED = TritonKernels("cpu")
