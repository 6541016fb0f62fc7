"""The dense sweeps as torch tensor operations: a few operations per frame on all graphs of the
batch at once (a disjoint union; each node reads the emission row of its own sequence). The
portable formulation: any semiring, any device, and what the compiled kernels are tested against."""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

from ...graph import NEG_INF
from ...semiring import Semiring
from .layout import Layout, arc_table, chunk_frames, ending_scores, gradient_shift
from .protocol import SweepKernels


def forward_sweep(lay: Layout, weights: Tensor, start: Tensor, columns: Tensor,
                   semiring: Semiring, backpointers: bool = False) -> Tuple[Tensor, Tensor | None]:
    """Forward scores of every node at every frame boundary: ``[T + 1, N]`` (row ``t``: after
    ``t`` frames), and for the tropical semiring optionally the argmax slot ``[T, N]``."""
    num_frames = columns.shape[0]
    in_src, in_weight, in_column = arc_table(lay, lay.in_arc, weights, lay.src)
    shape = lay.in_arc.shape
    alpha = columns.new_empty(num_frames + 1, lay.num_nodes)
    alpha[0] = start
    slots = torch.empty(num_frames, lay.num_nodes, dtype=torch.long, device=columns.device) \
        if backpointers else None
    step = chunk_frames(num_frames, in_src.numel())
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


def sequence_totals(lay: Layout, alpha: Tensor, final: Tensor, lengths: Tensor, semiring: Semiring) -> Tensor:
    """Per-sequence totals: each sequence's forward scores read at its own length (NaN where one
    of them is NaN: ``segment_plus`` of the log semiring would give -inf there)."""
    ending = ending_scores(lay, alpha, final, lengths)
    nan = ending.new_zeros(lay.num_seqs).index_add_(0, lay.node_seq, torch.where(ending == ending, 0.0, ending))
    return semiring.segment_plus(ending, lay.node_seq, lay.num_seqs) + nan


def backward_sweep(lay: Layout, weights: Tensor, final: Tensor, columns: Tensor, lengths: Tensor,
                    semiring: Semiring, visit: Callable[[int, int, Tensor], None] | None = None) -> Tensor:
    """Backward scores, one chunk of frames at a time from the end: ``visit(t0, t1, beta)`` gets
    ``beta`` of shape ``[t1 - t0, N]`` (row ``k``: backward scores at boundary ``t0 + k + 1``).
    Returns the backward scores at boundary 0.

    A sequence's backward scores start from the final weights at its own length (boundary
    ``lengths[b]``) and are -inf beyond it.
    """
    num_frames = columns.shape[0]
    out_dst, out_weight, out_column = arc_table(lay, lay.out_arc, weights, lay.dst)
    shape = lay.out_arc.shape
    node_length = lengths[lay.node_seq]
    neg_inf = final.new_full((), NEG_INF)
    beta = torch.where(node_length == num_frames, final, neg_inf)
    step = chunk_frames(num_frames, out_dst.numel())
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


class TorchSweeps(SweepKernels):
    """The tensor sweeps: every semiring, every device."""

    name = "torch"

    def applies(self, lay: Layout, columns: Tensor, semiring: Semiring) -> bool:
        return True

    def forward(self, lay: Layout, weights: Tensor, start: Tensor, final: Tensor, columns: Tensor, lengths: Tensor,
                semiring: Semiring, backpointers: bool = False) -> Tuple[Tensor, Tensor, Tensor | None]:
        alpha, slots = forward_sweep(lay, weights, start, columns, semiring, backpointers)
        return alpha, sequence_totals(lay, alpha, final, lengths, semiring), slots

    def gradients(self, lay: Layout, semiring: Semiring, weights: Tensor, start: Tensor, final: Tensor,
                  columns: Tensor, lengths: Tensor, alpha: Tensor, totals: Tensor,
                  grad_totals: Tensor) -> Tuple[Tensor, ...]:
        """Arc occupancies ``exp(beta (alpha[src] + w + e + beta[dst] - total))`` scaled by the
        incoming gradient, summed into the emission columns and the arc weights."""
        scale = semiring.beta
        shift = gradient_shift(totals)
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

        beta0 = backward_sweep(lay, weights, final, columns, lengths, semiring, visit)
        node_shift, node_grad = shift[lay.node_seq], grad_totals[lay.node_seq]
        grad_start = occupancy(start + beta0, node_shift, node_grad)
        grad_final = occupancy(ending_scores(lay, alpha, final, lengths), node_shift, node_grad)
        return grad_w, grad_start, grad_final, grad_columns

    def backtrack(self, lay: Layout, slots: Tensor, last: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        num_frames = slots.shape[0]
        arcs = torch.full((lay.num_seqs, num_frames), -1, dtype=torch.long, device=slots.device)
        node = last
        if lay.src.numel() == 0:  # no arcs: only length-0 sequences have a path, and it has no arcs
            return arcs, node
        for t in range(num_frames - 1, -1, -1):
            active = (t < lengths) & (node >= 0)
            at = node.clamp(min=0)
            arc = lay.in_arc[slots[t, at], at]
            arcs[:, t] = torch.where(active, arc, arcs[:, t])
            node = torch.where(active, lay.src[arc.clamp(min=0)], node)
        return arcs, node


TORCH_SWEEPS = TorchSweeps()
