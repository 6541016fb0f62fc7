"""The fused total of a dense intersection (:func:`dense_score`) and its autograd function: the
forward sweep's totals, and the forward-backward gradients (the best path's for the tropical
semiring), by the kernels :func:`~.dispatch.choose_kernels` picks."""

from __future__ import annotations

from typing import Any, Tuple, Union

import torch
from torch import Tensor

from ...backends import get_backend
from ...semiring import Semiring, get_semiring
from .dispatch import choose_kernels
from .layout import GraphsLike, Layout, LengthsLike, prepare_inputs
from .protocol import SweepKernels


class DenseScore(torch.autograd.Function):
    """Totals of the dense intersection from the emission columns, with the forward-backward gradient."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, start: Tensor, final: Tensor, columns: Tensor,
                lay: Layout, lengths: Tensor, semiring: Semiring) -> Tensor:
        kernels = choose_kernels(lay, columns, semiring)
        alpha, totals, slots = kernels.forward(lay, weights, start, final, columns, lengths, semiring,
                                               backpointers=semiring.backtracks)
        ctx.lay, ctx.semiring, ctx.kernels = lay, semiring, kernels
        ctx.save_for_backward(weights, start, final, columns, lengths, alpha, totals,
                              *(() if slots is None else (slots,)))
        return totals

    @staticmethod
    def backward(ctx: Any, grad_totals: Tensor) -> Tuple[Tensor | None, ...]:
        weights, start, final, columns, lengths, alpha, totals, *rest = ctx.saved_tensors
        lay: Layout = ctx.lay
        kernels: SweepKernels = ctx.kernels
        if ctx.semiring.backtracks:
            grads = viterbi_grads(kernels, lay, rest[0], weights, start, final, columns, lengths, alpha, grad_totals)
        else:
            grads = kernels.gradients(lay, ctx.semiring, weights, start, final, columns, lengths, alpha, totals,
                                      grad_totals)
        return tuple(grad if need else None for grad, need in zip(grads, ctx.needs_input_grad[:4])) \
            + (None, None, None)


def viterbi_grads(kernels: SweepKernels, lay: Layout, slots: Tensor, weights: Tensor, start: Tensor, final: Tensor,
                   columns: Tensor, lengths: Tensor, alpha: Tensor, grad_totals: Tensor) -> Tuple[Tensor, ...]:
    """The tropical total's gradient: the incoming gradient along the best path of each sequence."""
    arcs, first, last = kernels.best_paths(lay, alpha, slots, final, lengths)
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
    g, emissions, lens, single, _ = prepare_inputs(graphs, emissions, lengths, lengths_name, labels_checked)
    if other is not None:
        totals = other.dense_totals(g, emissions, lens, sr)
        return totals[0] if single else totals
    lay = Layout.of(g, emissions.shape[0], emissions.shape[2])
    totals = DenseScore.apply(g.weights, g.start_weights, g.final_weights, lay.emission_columns(emissions, lens),
                               lay, lens, sr)
    return totals[0] if single else totals
