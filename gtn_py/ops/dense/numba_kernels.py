"""The dense sweeps on the CPU as numba kernels, over the sequences listed in ``seqs``: a frame of
a few thousand states is too small for tensor operations to pay for their dispatch. The kernels
release the GIL; :func:`run_over_sequences` spreads the sequences over threads. They compute the
log (temperature 1) and tropical semirings (``Semiring.dense_kernel``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Tuple

import numba
import numpy as np
import torch
from torch import Tensor

from ...graph import NEG_INF, has_nan_or_plus_inf
from ...semiring import Semiring
from .layout import Layout, gradient_shift, numpy_dtype, take_slots, zeros_for
from .protocol import SweepKernels
from .torch_sweeps import TORCH_SWEEPS

# Frames x arcs from which the kernels run on several threads.
PARALLEL_WORK = 1 << 20


@numba.njit(cache=True, nogil=True)
def forward_kernel(seqs, tropical, in_src, in_weight, in_column, columns, start, final, node_order, seq_offsets,
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
def backward_log_kernel(seqs, out_arc, out_dst, out_weight, out_column, columns, start, final, alpha, shift,
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
def backtrack_kernel(in_arc, src, slots, last, lengths, arcs, first):  # pragma: no cover - jitted
    """:func:`_backtrack` sequence by sequence: from ``last`` back over the best incoming slots."""
    for b in range(last.shape[0]):
        node = last[b]
        if node >= 0:
            for t in range(lengths[b] - 1, -1, -1):
                arc = in_arc[slots[t, node], node]
                arcs[b, t] = arc
                node = src[arc]
        first[b] = node


def run_over_sequences(kernel: Callable[..., None], num_seqs: int, work: int, *args: Any) -> None:
    """``kernel(seqs, *args)`` over all sequences: in one call for small problems (``work`` =
    frames x arcs), else over chunks of sequences on ``torch.get_num_threads()`` threads. Chunks
    are small and taken in turn, and idle threads block instead of spinning, so one delayed
    thread does not hold up the rest (numba's own parallel loops split the work statically)."""
    seqs = np.arange(num_seqs, dtype=np.int64)
    threads = min(torch.get_num_threads(), num_seqs)
    if work < PARALLEL_WORK or threads <= 1:
        kernel(seqs, *args)
        return
    chunks = np.array_split(seqs, min(num_seqs, 4 * threads))
    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(kernel, chunk, *args) for chunk in chunks]:
            done.result()


def kernel_consts(like: Tensor) -> np.ndarray:
    return np.array([NEG_INF, 0.0], dtype=np.float32 if like.dtype == torch.float32 else np.float64)


def arc_tables_np(lay: Layout, table: Tensor, weights: Tensor, endpoint: Tensor) -> Tuple[np.ndarray, ...]:
    """The padded arc table and its other endpoints, weights and columns, node-major ``[N, D]``."""
    table = table.t().contiguous()
    return (table.numpy(), take_slots(endpoint, table, -1).numpy(),
            take_slots(weights.detach(), table, NEG_INF).numpy(), take_slots(lay.arc_column, table, 0).numpy())


def _np(t: Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (copied only if not contiguous)."""
    return t.detach().contiguous().numpy()


class NumbaKernels(SweepKernels):
    """The numba kernels: float32 and float64 CPU tensors, semirings with a dense kernel."""

    name = "numba"

    def applies(self, lay: Layout, columns: Tensor, semiring: Semiring) -> bool:
        return semiring.dense_kernel is not None and numpy_dtype(columns) is not None

    def forward(self, lay: Layout, weights: Tensor, start: Tensor, final: Tensor, columns: Tensor, lengths: Tensor,
                semiring: Semiring, backpointers: bool = False) -> Tuple[Tensor, Tensor, Tensor | None]:
        if has_nan_or_plus_inf(weights) or has_nan_or_plus_inf(start) or has_nan_or_plus_inf(final):
            # NaN weights (written after construction): the kernels' maxima would skip them, the
            # tensor sweeps' give NaN, as torch does (a numpy sum here; on CUDA, where the check
            # would cost a host sync, the Triton kernels carry NaN themselves).
            return TORCH_SWEEPS.forward(lay, weights, start, final, columns, lengths, semiring, backpointers)
        totals = columns.new_empty(lay.num_seqs)
        tropical = semiring.backtracks  # the max-plus kernels, which can keep the best slots
        keep = tropical and backpointers
        slots = torch.empty((columns.shape[0], lay.num_nodes) if keep else (0, 0), dtype=torch.long)
        alpha = columns.new_empty(columns.shape[0] + 1, lay.num_nodes)
        _, in_src, in_weight, in_column = arc_tables_np(lay, lay.in_arc, weights, lay.src)
        run_over_sequences(forward_kernel, lay.num_seqs, columns.shape[0] * lay.src.shape[0],
                           tropical, in_src, in_weight, in_column, _np(columns), _np(start), _np(final),
                           _np(lay.node_order), _np(lay.seq_offsets), _np(lengths), alpha.numpy(), totals.numpy(),
                           slots.numpy(), kernel_consts(columns))
        return alpha, totals, slots if keep else None

    def gradients(self, lay: Layout, semiring: Semiring, weights: Tensor, start: Tensor, final: Tensor,
                  columns: Tensor, lengths: Tensor, alpha: Tensor, totals: Tensor,
                  grad_totals: Tensor) -> Tuple[Tensor, ...]:
        shift = gradient_shift(totals)
        grad_w, grad_start, grad_final, grad_columns = (zeros_for(*t.shape, like=t)
                                                        for t in (weights, start, final, columns))
        beta = columns.new_empty(2, lay.num_nodes)
        out_arc, out_dst, out_weight, out_column = arc_tables_np(lay, lay.out_arc, weights, lay.dst)
        run_over_sequences(backward_log_kernel, lay.num_seqs, columns.shape[0] * lay.src.shape[0],
                           out_arc, out_dst, out_weight, out_column, _np(columns), _np(start), _np(final),
                           _np(alpha), _np(shift), _np(grad_totals), _np(lay.node_order), _np(lay.seq_offsets),
                           _np(lengths), grad_w.numpy(), grad_columns.numpy(), grad_start.numpy(),
                           grad_final.numpy(), beta.numpy(), kernel_consts(columns))
        return grad_w, grad_start, grad_final, grad_columns

    def backtrack(self, lay: Layout, slots: Tensor, last: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        arcs = torch.full((lay.num_seqs, slots.shape[0]), -1, dtype=torch.long)
        if lay.src.numel() == 0:  # no arcs: only length-0 sequences have a path, and it has no arcs
            return arcs, last
        first = torch.empty_like(last)
        backtrack_kernel(_np(lay.in_arc), _np(lay.src), _np(slots), _np(last), _np(lengths), arcs.numpy(),
                         first.numpy())
        return arcs, first


NUMBA_KERNELS = NumbaKernels()
