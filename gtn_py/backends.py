"""Backends: another library's kernels computing what gtn_py's own ("native") kernels compute,
chosen by the ``backend=`` argument of :func:`~gtn_py.ops.shortest.total_score` (and
``forward_score``, ``viterbi_score``) and of :func:`~gtn_py.ops.dense.dense_score`.

A backend is a :class:`Backend` of two functions, registered under its name by its own module
when that module is imported (:func:`register_backend`). The core imports no backend: a name in
:data:`KNOWN_BACKENDS` (``"k2"``: :mod:`gtn_py.k2`) is imported the first time it is asked for,
so an optional library stays optional and its adapter sits above the operations it serves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import NamedTuple, Union

from torch import Tensor

from .errors import ArgumentValueError
from .graph import Graph
from .semiring import Semiring

NATIVE = "native"
# Backends that ship with gtn_py: name -> the module that registers it when imported.
KNOWN_BACKENDS = {"k2": "gtn_py.k2"}


class Backend(NamedTuple):
    """What a backend computes, with the arguments and results of the native functions."""

    total_score: Callable[[Union[Graph, Sequence[Graph]], Semiring], Tensor]
    """Per-graph totals as :func:`~gtn_py.ops.shortest.total_score` gives them."""
    dense_totals: Callable[[Graph, Tensor, Tensor, Semiring], Tensor]
    """``(graphs, emissions [B, T, V], lengths [B], semiring)`` -> totals ``[B]`` as
    :func:`~gtn_py.ops.dense.dense_score` gives them (its arguments already checked)."""


_registered: dict[str, Backend] = {}


def register_backend(name: str, backend: Backend) -> None:
    """Make ``backend`` the one ``backend=name`` selects (a module registers its own backend)."""
    if name == NATIVE:
        raise ArgumentValueError(f"{NATIVE!r} names gtn_py's own kernels; register a backend under another name")
    _registered[name] = backend


def backend_names() -> tuple[str, ...]:
    """Every name ``backend=`` accepts."""
    return (NATIVE, *sorted(set(KNOWN_BACKENDS) | set(_registered)))


def get_backend(name: str) -> Backend | None:
    """The backend ``backend=name`` selects: None for gtn_py's own kernels; a known backend's
    module is imported on first use (an optional library missing raises there, when it is used);
    :class:`~gtn_py.errors.ArgumentValueError` for a name nobody registered."""
    if not isinstance(name, str):
        raise ArgumentValueError(f"backend must be one of {backend_names()}, not {name!r}")
    if name == NATIVE:
        return None
    if name not in _registered and name in KNOWN_BACKENDS:
        importlib.import_module(KNOWN_BACKENDS[name])
    if name not in _registered:
        raise ArgumentValueError(f"backend must be one of {backend_names()}, not {name!r}")
    return _registered[name]
