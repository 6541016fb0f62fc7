"""Semirings: all the algebra of gtn_py, so that every algorithm is written once.

Weights are scores (higher is better). The two scalar semirings share ``times = +`` and
``one = 0``, ``zero = -inf``; they differ in ``plus``:

* :class:`LogSemiring` with inverse temperature ``beta``:
  ``a (+) b = log(exp(beta a) + exp(beta b)) / beta``. With ``beta = 1`` a total is the
  log-partition function (the negated free energy); as ``beta -> inf`` it tends to the
  tropical total, so the free energy ``-1/beta log sum exp(-beta E)`` and its zero-temperature
  limit are one family.
* :class:`TropicalSemiring`: ``a (+) b = max(a, b)`` (Viterbi).

Every reduction is stable at -inf: reducing only -inf gives -inf, never NaN, and gradients
through such reductions are zero.

Both have compiled kernels and closed-form derivatives in every algorithm (:attr:`Semiring.closed_form`).
Any other semiring is evaluated through its interface alone (:meth:`Semiring.lift`,
:meth:`~Semiring.times`, :meth:`~Semiring.plus2`, :meth:`~Semiring.segment_plus`,
:meth:`~Semiring.readout`) by the algorithms that accept any semiring (``total_score`` and
``shortest_distance``, on acyclic graphs), with gradients by autograd. Its elements may be
vectors (``element_shape``); two are defined here:

* :class:`EntropySemiring`: elements ``(log-total, entropy)``; the total of a graph reads out as
  the entropy of its path distribution;
* :class:`KMaxSemiring` ``(k)``: elements are the ``k`` best scores in decreasing order; the total
  of a graph reads out as the scores of its ``k`` best paths.
"""

from __future__ import annotations

import math
from typing import Tuple

import numba
import numpy as np
import torch
from torch import Tensor

from .errors import ArgumentTypeError, ArgumentValueError

__all__ = ["Semiring", "LogSemiring", "TropicalSemiring", "EntropySemiring", "KMaxSemiring", "LOG", "TROPICAL",
           "ENTROPY", "get_semiring"]

NEG_INF = float("-inf")

# How compiled kernels (numba) name a semiring: ``(semiring.kernel_id, semiring.beta)`` is all
# a kernel needs to evaluate ``plus`` with :func:`kernel_plus`.
KERNEL_LOG = 0
KERNEL_TROPICAL = 1


class Semiring:
    """Interface of a semiring over score tensors (``times`` is ``+`` for all of ours).

    Algorithms ask a semiring, never test which one they hold:

    * :meth:`plus`, :meth:`plus_into`, :meth:`plus2`, :meth:`segment_plus`: its addition, over a
      dimension, into a preallocated tensor, elementwise, and into segments;
    * :attr:`idempotent`: ``a (+) a = a``. Ours that are idempotent are also selective (``a (+) b``
      is ``a`` or ``b``), so a total is the score of one best path: cycles add nothing once
      relaxed (shortest distance by relaxation, not by solving a linear system), and the
      derivative of a total with respect to an arc is the indicator of a best path through it
      (:meth:`backtracks`). Otherwise the derivative is the arc's occupancy, its expected count
      under the path distribution at inverse temperature :attr:`beta`;
    * :attr:`kernel_id` and :attr:`beta`: how compiled graph kernels evaluate ``plus``
      (:func:`kernel_plus`), and :attr:`dense_kernel`: which compiled dense-intersection
      kernels (numba on the CPU, Triton on CUDA) compute its totals, if any;
    * :attr:`closed_form`: whether the algorithms' compiled kernels and closed-form
      derivatives apply (the log semiring at any temperature, the tropical one). Otherwise the
      semiring is evaluated through :meth:`lift`, :meth:`times`, :meth:`plus2`,
      :meth:`segment_plus` and :meth:`readout` on elements of shape ``[..., *element_shape]``.
    """

    name: str = "semiring"
    zero: float = NEG_INF
    one: float = 0.0
    kernel_id: int = -1
    beta: float = 1.0
    idempotent: bool = False
    element_shape: Tuple[int, ...] = ()

    @property
    def closed_form(self) -> bool:
        """Whether every algorithm has compiled kernels and closed-form derivatives for it."""
        return self.kernel_id >= 0

    def lift(self, scores: Tensor) -> Tensor:
        """The elements ``[..., *element_shape]`` that weights (scores ``[...]``) stand for."""
        return scores

    def readout(self, elements: Tensor) -> Tensor:
        """What a total (an element) tells the user, e.g. an entropy or the k best scores."""
        return elements

    @property
    def dense_kernel(self) -> int | None:
        """The id of the compiled dense sweeps for this semiring (:data:`KERNEL_LOG` for the
        log semiring at temperature 1, :data:`KERNEL_TROPICAL`), or None for tensor sweeps."""
        return None

    @property
    def backtracks(self) -> bool:
        """Whether totals come with best paths to backtrack (and gradients along them)."""
        return self.idempotent

    def plus(self, x: Tensor, dim: int) -> Tensor:
        """Reduce ``x`` along ``dim`` with the semiring's addition."""
        raise NotImplementedError

    def plus_into(self, x: Tensor, dim: int, out: Tensor) -> Tensor:
        """:meth:`plus` written into ``out`` (no new allocation where torch allows it)."""
        return out.copy_(self.plus(x, dim))

    def plus2(self, a: Tensor, b: Tensor) -> Tensor:
        """Elementwise ``a (+) b``."""
        return self.plus(torch.stack([a, b]), 0)

    def segment_plus(self, values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
        """Reduce ``values`` into ``num_segments`` bins given by ``segment`` (empty bins: zero)."""
        raise NotImplementedError

    def times(self, a: Tensor, b: Tensor) -> Tensor:
        """Elementwise ``a (x) b`` (``+`` for scores)."""
        return a + b

    def __repr__(self) -> str:
        return self.name


class LogSemiring(Semiring):
    """log-sum-exp addition with inverse temperature ``beta`` (``beta = 1``: ordinary log semiring)."""

    def __init__(self, beta: float = 1.0):
        if isinstance(beta, Tensor) and beta.numel() == 1 and beta.dtype.is_floating_point:
            beta = float(beta)
        if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (int, float, np.integer, np.floating)):
            raise ArgumentTypeError(f"LogSemiring: the inverse temperature beta must be a number, "
                                    f"not {type(beta).__name__}")
        if beta == math.inf:
            raise ArgumentValueError("LogSemiring: beta = inf is the zero-temperature limit; use the tropical "
                                     "semiring (gtn_py.TROPICAL or semiring='tropical') for it")
        if not beta > 0:
            raise ArgumentValueError(f"LogSemiring: the inverse temperature beta must be a finite number > 0, "
                                     f"got {beta}")
        self.beta = float(beta)
        self.kernel_id = KERNEL_LOG
        self.name = "log" if self.beta == 1.0 else f"log(beta={self.beta:g})"

    @property
    def dense_kernel(self) -> int | None:
        return KERNEL_LOG if self.beta == 1.0 else None

    def plus(self, x: Tensor, dim: int) -> Tensor:
        if self.beta == 1.0:
            return torch.logsumexp(x, dim)
        return torch.logsumexp(x * self.beta, dim) / self.beta

    def plus_into(self, x: Tensor, dim: int, out: Tensor) -> Tensor:
        if self.beta == 1.0:
            return torch.logsumexp(x, dim, out=out)
        return out.copy_(torch.logsumexp(x * self.beta, dim) / self.beta)

    def segment_plus(self, values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
        scaled = values * self.beta if self.beta != 1.0 else values
        out = segment_logsumexp(scaled, segment, num_segments)
        return out / self.beta if self.beta != 1.0 else out


class TropicalSemiring(Semiring):
    """max addition: totals are best-path scores."""

    name = "tropical"
    kernel_id = KERNEL_TROPICAL
    beta = math.inf  # the zero-temperature limit of LogSemiring(beta)
    idempotent = True

    @property
    def dense_kernel(self) -> int | None:
        return KERNEL_TROPICAL

    def plus_into(self, x: Tensor, dim: int, out: Tensor) -> Tensor:
        return torch.amax(x, dim, out=out)

    def plus(self, x: Tensor, dim: int) -> Tensor:
        if x.shape[dim] == 0:
            shape = list(x.shape)
            del shape[dim]
            return x.new_full(shape, NEG_INF)
        return x.amax(dim)

    def segment_plus(self, values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
        return segment_max(values, segment, num_segments)


class EntropySemiring(Semiring):
    """The expectation semiring of the entropy of the path distribution (Li and Eisner 2009),
    kept in log space and in entropy form: an element ``(a, h)`` stands for a set of paths with
    log-sum of scores ``a`` whose distribution (each path weighted by ``exp(score - a)``) has
    entropy ``h``. A weight ``w`` is ``(w, 0)`` (one path); ``times`` adds both parts (the
    entropy of independent choices adds); ``plus`` takes the log-sum of the ``a`` and, by the
    chain rule of entropy, ``h = sum_i p_i h_i - sum_i p_i log p_i`` with ``p_i = exp(a_i - a)``.
    A total reads out as the entropy in nats (NaN where there is no path: no distribution).
    Every term is a non-negative share, so no two large totals cancel (as they would in the
    expected-score form, where the entropy is the log-total minus the mean score); stable at
    -inf. In float32 the entropy of a 200-frame CTC lattice (36 nats) is within 4e-3 of the
    float64 one (``bench/semirings.py``); ``path_entropy`` computes in float64."""

    name = "entropy"
    element_shape = (2,)

    def lift(self, scores: Tensor) -> Tensor:
        return torch.stack([scores, torch.zeros_like(scores)], -1)

    def readout(self, elements: Tensor) -> Tensor:
        log_total, entropy = elements[..., 0], elements[..., 1]
        return torch.where(log_total > NEG_INF, entropy, torch.full_like(entropy, math.nan))

    @staticmethod
    def _mixed(log_part: Tensor, entropy: Tensor, log_total: Tensor) -> Tensor:
        """Each part's term of a sum's entropy, ``p_i (h_i - log p_i)``: 0 for an impossible part
        (and for every part of an empty sum), without an ``inf - inf`` on the way."""
        total = torch.where(log_total > NEG_INF, log_total, torch.zeros_like(log_total))
        part = torch.where(log_part > NEG_INF, log_part, total)
        return torch.exp(log_part - total) * (entropy + total - part)

    def plus(self, x: Tensor, dim: int) -> Tensor:
        dim = dim % (x.dim() - 1)  # ``dim`` counts the element dimension out
        log_total = logsumexp(x[..., 0], dim)
        entropy = self._mixed(x[..., 0], x[..., 1], log_total.unsqueeze(dim)).sum(dim)
        return torch.stack([log_total, entropy], -1)

    def segment_plus(self, values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
        log_total = segment_logsumexp(values[:, 0], segment, num_segments)
        terms = self._mixed(values[:, 0], values[:, 1], log_total[segment])
        return torch.stack([log_total, values.new_zeros(num_segments).index_add(0, segment, terms)], -1)


class KMaxSemiring(Semiring):
    """The ``k`` best scores: an element is a vector of ``k`` scores in decreasing order
    (-inf where there are fewer). ``plus`` keeps the ``k`` best of both, ``times`` the ``k``
    best pairwise sums; a weight ``w`` is ``(w, -inf, ..., -inf)``. A total reads out as the
    scores of the ``k`` best paths (paths, not distinct strings: see ``n_best`` for those),
    ``[..., k]``; ``KMaxSemiring(1)`` is the tropical semiring. The derivative of the ``i``-th
    score is the indicator of the ``i``-th best path (ties: one of them)."""

    def __init__(self, k: int):
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise ArgumentTypeError(f"KMaxSemiring: k must be an int, not {type(k).__name__}")
        if k < 1:
            raise ArgumentValueError(f"KMaxSemiring: k must be at least 1, got {k}")
        self.k = int(k)
        self.element_shape = (self.k,)
        self.name = f"kmax({self.k})"

    def lift(self, scores: Tensor) -> Tensor:
        rest = scores.new_full((*scores.shape, self.k - 1), NEG_INF)
        return torch.cat([scores.unsqueeze(-1), rest], -1)

    def _best(self, x: Tensor) -> Tensor:
        """The ``k`` largest entries of the last dimension, in decreasing order."""
        return x.topk(self.k, -1).values

    def times(self, a: Tensor, b: Tensor) -> Tensor:
        return self._best((a.unsqueeze(-1) + b.unsqueeze(-2)).flatten(-2))

    def plus(self, x: Tensor, dim: int) -> Tensor:
        dim = dim % (x.dim() - 1)
        if x.shape[dim] == 0:
            return x.new_full((*x.shape[:dim], *x.shape[dim + 1:]), NEG_INF)
        return self._best(x.movedim(dim, -2).flatten(-2))

    def plus2(self, a: Tensor, b: Tensor) -> Tensor:
        return self._best(torch.cat([a, b], -1))

    def segment_plus(self, values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
        out = values.new_full((num_segments, self.k), NEG_INF)
        if values.numel() == 0:
            return out
        flat = values.reshape(-1)
        owner = segment.repeat_interleave(self.k)
        # best first within each segment: sort by score, then (stably) by segment
        by_score = flat.detach().argsort(descending=True, stable=True)
        order = by_score[owner[by_score].argsort(stable=True)]
        owner = owner[order]
        first = torch.searchsorted(owner, owner, right=False)
        rank = torch.arange(owner.shape[0], device=owner.device) - first
        keep = rank < self.k
        return out.index_put((owner[keep], rank[keep]), flat[order[keep]])


LOG = LogSemiring()
TROPICAL = TropicalSemiring()
ENTROPY = EntropySemiring()


def get_semiring(semiring: str | Semiring, any_semiring: bool = False) -> Semiring:
    """Accept a semiring or its name: ``"log"``, ``"tropical"`` (also ``"max"``, ``"viterbi"``),
    ``"entropy"``. Another type raises :class:`ArgumentTypeError`, an unknown name
    :class:`ArgumentValueError`, and so does a semiring without closed forms
    (:attr:`Semiring.closed_form`) unless the caller evaluates ``any_semiring``."""
    names = {"log": LOG, "tropical": TROPICAL, "max": TROPICAL, "viterbi": TROPICAL, "entropy": ENTROPY}
    if isinstance(semiring, Semiring):
        if not (any_semiring or semiring.closed_form):
            raise ArgumentValueError(
                f"this operation needs the log or the tropical semiring, not {semiring}; semirings evaluated "
                "through their interface are taken by total_score and shortest_distance")
        return semiring
    if not isinstance(semiring, str):
        raise ArgumentTypeError(f"semiring must be a name ({', '.join(sorted(names))}) or a Semiring such as "
                                f"LogSemiring(beta), not {type(semiring).__name__}")
    try:
        return get_semiring(names[semiring], any_semiring)
    except KeyError:
        raise ArgumentValueError(f"unknown semiring {semiring[:40]!r}; use one of {sorted(names)} "
                                 "or a Semiring") from None


@numba.njit(cache=True, nogil=True)
def kernel_plus(kernel_id: int, beta: float, a: float, b: float) -> float:  # pragma: no cover - jitted
    """``a (+) b`` for compiled kernels, given a semiring's ``kernel_id`` and ``beta``; exact at -inf.
    A NaN operand gives NaN in both semirings, as torch's reductions do."""
    if kernel_id == KERNEL_TROPICAL:
        if a >= b:
            return a
        if b > a:
            return b
        return a + b  # one of them is NaN
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(beta * (b - a))) / beta


def segment_max(values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """Per-segment maximum (-inf for empty segments); differentiable (ties share the gradient)."""
    out = values.new_full((num_segments,), NEG_INF)
    if values.numel() == 0:
        return out
    return out.scatter_reduce(0, segment, values, reduce="amax", include_self=True)


def logsumexp(x: Tensor, dim: int) -> Tensor:
    """``log(sum(exp(x)))`` along ``dim``, stable at -inf: where every term is -inf (or there are
    none) the result is -inf with a zero gradient, where ``torch.logsumexp``'s gradient is NaN.
    What a semiring evaluated by autograd needs, e.g. at a node no path reaches."""
    if x.shape[dim] == 0:
        return x.sum(dim) + NEG_INF
    peak = x.detach().amax(dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    return safe_log(torch.exp(x - peak).sum(dim)) + peak.squeeze(dim)


def segment_logsumexp(values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """Per-segment log-sum-exp, stable at -inf (empty or all -inf segments give -inf, zero grad)."""
    if values.numel() == 0:
        return values.new_full((num_segments,), NEG_INF)
    peak = segment_max(values.detach(), segment, num_segments)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    shifted = torch.exp(values - peak[segment])
    total = values.new_zeros(num_segments).index_add(0, segment, shifted)
    return safe_log(total) + peak


def safe_log(x: Tensor) -> Tensor:
    """``log(x)`` with ``log(0) = -inf`` and a zero (not NaN) gradient there; NaN stays NaN."""
    zero = x == 0
    return torch.where(zero, torch.full_like(x, NEG_INF), torch.log(torch.where(zero, torch.ones_like(x), x)))
