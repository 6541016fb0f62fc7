"""What every kind of dense-sweep kernels offers (torch tensor sweeps, numba on the CPU, Triton on
CUDA): forward scores with the totals, the log semiring's gradients, and Viterbi backtracking."""

from __future__ import annotations

import abc
from typing import Tuple

from torch import Tensor

from ...semiring import Semiring
from .layout import Layout, best_nodes, ending_scores


class SweepKernels(abc.ABC):
    """One way to run the dense sweeps over a :class:`~.layout.Layout`. Emissions come as columns
    ``[T, P]`` (:meth:`~.layout.Layout.emission_columns`); ``lengths`` ``[B]`` frames."""

    name: str

    @abc.abstractmethod
    def applies(self, lay: Layout, columns: Tensor, semiring: Semiring) -> bool:
        """Whether these kernels can run this problem (its device, dtype, semiring, degrees)."""

    @abc.abstractmethod
    def forward(self, lay: Layout, weights: Tensor, start: Tensor, final: Tensor, columns: Tensor, lengths: Tensor,
                semiring: Semiring, backpointers: bool = False) -> Tuple[Tensor, Tensor, Tensor | None]:
        """Forward scores ``[T + 1, N]`` (-inf past each sequence's length), totals ``[B]`` and,
        for an idempotent semiring with ``backpointers``, the best incoming slots ``[T, N]``."""

    @abc.abstractmethod
    def gradients(self, lay: Layout, semiring: Semiring, weights: Tensor, start: Tensor, final: Tensor,
                  columns: Tensor, lengths: Tensor, alpha: Tensor, totals: Tensor,
                  grad_totals: Tensor) -> Tuple[Tensor, ...]:
        """Gradients of the arc weights, start and final weights and emission columns: the arc
        occupancies times the incoming gradient (a non-idempotent semiring's totals)."""

    @abc.abstractmethod
    def backtrack(self, lay: Layout, slots: Tensor, last: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """Follow the best slots back from ``last`` (per sequence): the arcs of the best path
        ``[B, T]`` (-1 beyond each length and where no path exists) and the first node ``[B]``."""

    def best_paths(self, lay: Layout, alpha: Tensor, slots: Tensor, final: Tensor, lengths: Tensor
                   ) -> Tuple[Tensor, Tensor, Tensor]:
        """Arcs ``[B, T]``, first and last node ``[B]`` (-1: no path) of each sequence's best path."""
        last = best_nodes(lay, ending_scores(lay, alpha, final, lengths))
        arcs, first = self.backtrack(lay, slots, last, lengths)
        return arcs, first, last
