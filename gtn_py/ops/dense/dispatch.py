"""The one place where the dense sweeps' kernels are chosen, by :func:`dense_kernels` (a context,
per thread or task) from what applies to each problem."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Tuple, Union

from torch import Tensor

from ...errors import ArgumentValueError
from ...semiring import Semiring
from .layout import Layout
from .numba_kernels import NUMBA_KERNELS
from .protocol import SweepKernels
from .torch_sweeps import TORCH_SWEEPS
from .triton_kernels import TRITON_INTERPRETED, TRITON_KERNELS

KernelsLike = Union[str, SweepKernels]
# What each choice tries, in order, before the tensor sweeps (which run everything).
_CANDIDATES = {
    "auto": (TRITON_KERNELS, NUMBA_KERNELS),
    "torch": (),
    "numba": (NUMBA_KERNELS,),
    "triton": (TRITON_KERNELS, TRITON_INTERPRETED),
}
_CHOICE: ContextVar[Tuple[SweepKernels, ...]] = ContextVar("gtn_py_dense_kernels", default=_CANDIDATES["auto"])


@contextmanager
def dense_kernels(kernels: KernelsLike = "auto") -> Iterator[None]:
    """Choose the kernels of the dense sweeps (``dense_score``, ``ctc_loss``, ``viterbi_align``,
    the lattices...) inside the block, in this thread or task only:

    * ``"auto"`` (the default): Triton on CUDA, numba on the CPU, where they apply (the log
      semiring at temperature 1 and the tropical one, float32 and float64, in-degrees up to 64
      for Triton), else the tensor sweeps;
    * ``"torch"``: the tensor sweeps everywhere, the portable formulation that other semirings
      use and that the kernels are tested against;
    * ``"numba"``: numba where it applies (CPU tensors), else the tensor sweeps;
    * ``"triton"``: Triton where it applies, also on CPU tensors, run by Triton's interpreter
      (``TRITON_INTERPRET=1`` before gtn_py is imported): how the CUDA kernels are checked
      without a GPU;
    * a :class:`~.protocol.SweepKernels` object: those kernels where they apply.
    """
    if isinstance(kernels, SweepKernels):
        candidates: Tuple[SweepKernels, ...] = (kernels,)
    elif isinstance(kernels, str) and kernels in _CANDIDATES:
        candidates = _CANDIDATES[kernels]
    else:
        raise ArgumentValueError(f"kernels must be one of {tuple(_CANDIDATES)} or a SweepKernels, not {kernels!r}")
    token = _CHOICE.set(candidates)
    try:
        yield
    finally:
        _CHOICE.reset(token)


def choose_kernels(lay: Layout, columns: Tensor, semiring: Semiring) -> SweepKernels:
    """The kernels that run this problem: the first of the chosen ones that applies, else the
    tensor sweeps."""
    return next((k for k in _CHOICE.get() if k.applies(lay, columns, semiring)), TORCH_SWEEPS)
