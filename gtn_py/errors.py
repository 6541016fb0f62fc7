"""Typed exceptions. Every error gtn_py raises on bad input derives from GraphError."""

from __future__ import annotations


class GraphError(Exception):
    """Base class of every error gtn_py raises on bad input."""


class ArgumentTypeError(GraphError, TypeError):
    """An argument has the wrong type (a float where an integer label or count is needed, a list
    where a Graph is needed...); also a TypeError, as Python's own argument checks raise."""


class ArgumentValueError(GraphError, ValueError):
    """An argument that is not a graph has a value the operation cannot take (a negative or NaN
    tolerance, k < 1, an unknown semiring or reduction name...)."""


class GraphIndexError(GraphError, IndexError):
    """An index into a batch of graphs is out of range."""


class InvalidGraphError(GraphError, ValueError):
    """The graph is malformed: an arc names a node that does not exist, shapes disagree..."""


class LabelError(GraphError, ValueError):
    """A label is negative or outside the range an operation allows."""


class WeightError(GraphError, ValueError):
    """A weight is NaN or +inf (scores are log-values: -inf means 'impossible', +inf is not allowed)."""


class NoStartError(GraphError, ValueError):
    """The operation needs a start node and the graph has none."""


class CyclicGraphError(GraphError, ValueError):
    """The operation needs an acyclic graph and the graph has a cycle."""


class DivergenceError(GraphError, ArithmeticError):
    """A sum over the paths of a cyclic graph does not converge in the log semiring."""


class DeviceMismatchError(GraphError, ValueError):
    """Graphs or tensors given to one operation live on different devices."""


class DtypeMismatchError(GraphError, TypeError):
    """Graphs or tensors given to one operation have different floating-point dtypes."""


class FormatError(GraphError, ValueError):
    """A file is not valid OpenFst text (or gtn_py's save format); the message names the line."""

    def __init__(self, message: str, line: int | None = None, path: str | None = None):
        where = ""
        if path is not None:
            where += f"{path}:"
        if line is not None:
            where += f"{line}: "
        elif where:
            where += " "
        super().__init__(where + message)
        self.line = line
        self.path = path


class BackendUnavailableError(GraphError, ImportError):
    """An optional backend (k2, numba) is not installed."""
