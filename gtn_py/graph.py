"""The Graph: a weighted finite-state transducer (or a batch of them) held in torch tensors.

Layout (struct of arrays):

* arcs: ``src``, ``dst``, ``ilabel``, ``olabel`` (int64, shape ``[A]``) and ``weights``
  (float32 or float64, shape ``[A]``);
* nodes: ``start_weights`` and ``final_weights`` (shape ``[N]``). A node is a start node
  when its start weight is greater than -inf and an accept node when its final weight is.
  gtn's start and accept nodes have weight 0; OpenFst's final weights and a start weight
  on any node are the general case, so that ``reverse`` is a swap and files round-trip.

A path's score is ``start_weights[first] + sum(arc weights) + final_weights[last]``.
Weights are *scores* (log-probabilities, higher is better), as in gtn and k2; an energy is
a negative score. Label 0 is epsilon (``EPSILON``), as in OpenFst and k2.

A batch is a disjoint union of graphs with a per-node graph id (``node_graph``): every
algorithm runs on the union in one pass and reduces per graph at the end, so a single
graph is just a batch of one.

Operations never modify their inputs. Each new graph's weights are a differentiable
gather of its inputs' weights through an arc map (see :func:`gather`), so gradients reach
the weights of every input through ordinary torch autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .errors import (
    ArgumentTypeError,
    ArgumentValueError,
    DeviceMismatchError,
    DtypeMismatchError,
    GraphIndexError,
    InvalidGraphError,
    LabelError,
    WeightError,
)

EPSILON = 0
NEG_INF = float("-inf")

TensorLike = Union[Tensor, Sequence[float], Sequence[int]]


@dataclass(frozen=True)
class Arc:
    """One arc, as iteration over a graph yields it (for people who want a loop)."""

    src: int
    dst: int
    ilabel: int
    olabel: int
    weight: float


def nan_or_plus_inf(values: Tensor) -> Tensor:
    """The mask of entries that are no log-score: NaN or +inf."""
    return torch.isnan(values) | (values == float("inf"))


def has_nan_or_plus_inf(values: Tensor) -> bool:
    """Whether ``values`` hold a NaN or +inf, in one reduction where they do not: their sum is NaN
    or +inf only then (or when it overflows, which costs a closer look). On the CPU in numpy,
    single-threaded, since a torch reduction wakes its thread pool (milliseconds on a busy machine)."""
    values = values.detach()
    if values.numel() == 0:
        return False
    in_numpy = values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow or inf - inf is looked at closer below
        total = float(values.numpy().sum() if in_numpy else values.sum())
    if total == total and total != float("inf"):
        return False
    return bool(nan_or_plus_inf(values).any())


def as_integer(value: object, what: str, error: type[Exception] = LabelError) -> int:
    """``value`` as a Python int: an int or a numpy/torch integer scalar. A float (even 2.0) raises
    ``error`` and any other type (a bool, a string, None) ArgumentTypeError, since ``int()`` would
    truncate 1.7 to 1 or read True as 1 without a word."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        if value.dtype.is_floating_point or value.dtype.is_complex:
            raise error(f"{what} must be an integer, not the {value.dtype} tensor {value.reshape(()).item()}")
        return int(value)
    if isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{what} must be an integer, not the bool {value}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        raise error(f"{what} must be an integer, not {value!r}")
    raise ArgumentTypeError(f"{what} must be an integer, not {type(value).__name__} {_excerpt(value)}")


def as_count(value: object, what: str, least: int = 0) -> int:
    """An integer argument that counts something (states, labels, pieces): at least ``least``,
    else ArgumentValueError (a float such as 1.5 or inf included)."""
    number = as_integer(value, what, ArgumentValueError)
    if number < least:
        raise ArgumentValueError(f"{what} is {number}; it must be at least {least}")
    return number


def as_number(value: object, what: str, *, positive: bool = False) -> float:
    """A real argument (a temperature, a margin, a smoothing width) as a finite float; a one-element
    tensor is read. NaN, infinities (and values <= 0 where ``positive``) raise ArgumentValueError,
    anything that is not a number ArgumentTypeError."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype.is_floating_point:
        value = float(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(f"{what} must be a number, not {type(value).__name__} {_excerpt(value)}")
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0):
        raise ArgumentValueError(f"{what} is {number}; it must be a finite number{' > 0' if positive else ''}")
    return number


def as_tensor(value: object, what: str, *, integer: bool = False, ndim: int | tuple[int, ...] | None = None,
              least: int | None = None) -> Tensor:
    """A tensor argument, checked at the front door so that errors name it in the caller's terms.

    Float arguments (scores, emissions, distances) must be floating-point tensors; integer
    arguments (labels, tags, unit ids) may also be given as nested lists of ints, and must hold
    integers (>= ``least`` when given; a value check reads the tensor, so it is used for label
    tensors, which are small). ``ndim`` is the rank or ranks allowed. A tensor on the ``meta``
    device holds no values and is refused. Wrong types raise ArgumentTypeError, wrong dtypes
    DtypeMismatchError, wrong ranks ArgumentValueError, bad labels LabelError.
    """
    kind = "an integer" if integer else "a floating-point"
    if integer and isinstance(value, (list, tuple)):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ArgumentTypeError(f"{what} must be {kind} tensor or a list of ints: {error}") from None
        if value.dtype.is_floating_point and value.numel():
            raise LabelError(f"{what} must hold integers, not {_excerpt(value.tolist())}")
        value = value.long()
    if not isinstance(value, Tensor):
        hint = " (torch.tensor(...) makes one)" if isinstance(value, (list, tuple)) else ""
        raise ArgumentTypeError(f"{what} must be {kind} tensor, not {type(value).__name__} {_excerpt(value)}{hint}")
    if value.device.type == "meta":
        raise ArgumentValueError(f"{what} is on the meta device, which holds no values")
    if integer and (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool):
        raise DtypeMismatchError(f"{what} must be {kind} tensor, not {value.dtype}")
    if not integer and not value.dtype.is_floating_point:
        raise DtypeMismatchError(f"{what} must be {kind} tensor, not {value.dtype}")
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if ranks is not None and value.dim() not in ranks:
        wanted = " or ".join(str(r) for r in ranks)
        raise ArgumentValueError(f"{what} must have {wanted} dimensions, not shape {tuple(value.shape)}")
    if integer and least is not None and value.numel():
        low = int(value.min())
        if low < least:
            raise LabelError(f"{what} holds {low}; its values must be at least {least}")
    return value


def as_whole_numbers(values: object, name: str, device: torch.device | str | None) -> Tensor:
    """``values`` (lengths, counts) as a flat long tensor on ``device``; floats are accepted only
    where they are whole numbers (truncating 2.7 frames to 2 would answer another problem)."""
    try:
        given = torch.as_tensor(values, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidGraphError(f"{name} must be whole numbers (a list or an integer tensor): {error}") from None
    if given.dtype == torch.bool or given.dtype.is_complex:
        raise InvalidGraphError(f"{name} must be whole numbers, got {given.dtype}")
    given = given.reshape(-1)
    if given.dtype.is_floating_point:
        bad = (~torch.isfinite(given) | (given != given.round())).nonzero()
        if bad.numel():
            i = int(bad[0, 0])
            raise InvalidGraphError(f"{name}[{i}] = {float(given[i])} is not a whole number")
    return given.to(torch.long)


def as_frame_counts(lengths: object, num_seqs: int, num_frames: int, name: str,
                    device: torch.device) -> Tensor:
    """``lengths`` as ``[B]`` long on ``device``, checked: whole numbers in ``[0, T]``."""
    lens = as_whole_numbers(lengths, name, device)
    if lens.shape[0] != num_seqs:
        raise InvalidGraphError(f"{lens.shape[0]} {name} for {num_seqs} sequences")
    bad = ((lens < 0) | (lens > num_frames)).nonzero()
    if bad.numel():
        b = int(bad[0, 0])
        raise InvalidGraphError(f"{name}[{b}] = {int(lens[b])} is outside [0, {num_frames}] "
                                f"(a sequence has at most the T = {num_frames} frames given)")
    return lens


def as_device(device: object) -> torch.device:
    """``device`` as a torch.device; a name torch does not know raises ArgumentTypeError."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, (str, int)) or isinstance(device, bool):
        raise ArgumentTypeError(f"device must be a torch.device or a name such as 'cpu', not "
                                f"{type(device).__name__} {_excerpt(device)}")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ArgumentTypeError(f"device {_excerpt(device)} is not a device torch knows ({error})") from None


def as_score(value: object, what: str) -> float | Tensor:
    """A weight given to the builder API: a number, or a one-element tensor. A tensor that requires
    grad is returned as it is (a 0-d view), so that the graph keeps its gradient; anything else
    becomes a float. NaN and +inf raise WeightError."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype == torch.bool:
            raise ArgumentTypeError(f"{what} must be a number or a one-element tensor, not a "
                                    f"{value.dtype} tensor of shape {tuple(value.shape)}")
        number = float(value.detach().reshape(()))
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        number = float(value)
    else:
        raise ArgumentTypeError(f"{what} must be a number, not {type(value).__name__} {_excerpt(value)}")
    if number != number or number == float("inf"):
        raise WeightError(f"{what} {number} is NaN or +inf (scores are finite or -inf)")
    if isinstance(value, Tensor) and value.requires_grad:
        return value.reshape(())
    return number


def as_graph(value: object, what: str = "g") -> Graph:
    """``value`` itself when it is a Graph; anything else raises ArgumentTypeError naming ``what``."""
    if isinstance(value, Graph):
        return value
    hint = ""
    if isinstance(value, (list, tuple)):
        hint = " (Graph.batch(graphs) makes one batch of several graphs)"
    elif isinstance(value, Tensor):
        hint = " (emission tensors go with a graph to dense_score or intersect_dense)"
    raise ArgumentTypeError(f"{what} must be a Graph, not {type(value).__name__}{hint}")


def as_graph_list(value: object, what: str = "graphs") -> list[Graph]:
    """A list or tuple of Graphs as a list; anything else raises ArgumentTypeError."""
    if not isinstance(value, (list, tuple)):
        raise ArgumentTypeError(f"{what} must be a list of Graphs, not {type(value).__name__}")
    return [as_graph(g, f"{what}[{k}]") for k, g in enumerate(value)]


def as_batch(value: object, what: str = "graphs") -> Graph:
    """A Graph (a single graph or a batch) as it is, or a non-empty list of Graphs as one batch;
    anything else raises ArgumentTypeError, an empty list ArgumentValueError."""
    if isinstance(value, Graph):
        return value
    graphs = as_graph_list(value, what)
    if not graphs:
        raise ArgumentValueError(f"{what} is an empty list; give a Graph, a batch or a non-empty list of Graphs")
    return Graph.batch(graphs)


def _excerpt(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about arbitrary user input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def unique_rows(columns: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """The distinct rows of integer columns (each ``[N]``), in lexicographic order ``[K, C]``, and
    each row's index among them ``[N]``: ``torch.unique(dim=0, return_inverse=True)`` of the
    stacked columns, computed as a 1-D unique of one mixed-radix key when the columns' ranges
    fit in int64 (a sort, tens of times faster than unique over rows), else over rows."""
    stacked = torch.stack(list(columns), 1)
    if stacked.shape[0] == 0:
        return stacked, stacked.new_zeros(0)
    low, high = stacked.min(0).values, stacked.max(0).values
    spans = (high - low + 1).tolist()
    if math.prod(spans) >= 1 << 62:
        values, inverse = torch.unique(stacked, dim=0, return_inverse=True)
        return values, inverse.reshape(-1)
    key = torch.zeros_like(stacked[:, 0])
    for c, span in enumerate(spans):
        key = key * span + (stacked[:, c] - low[c])
    keys, inverse = torch.unique(key, return_inverse=True)
    digits = []
    for span in reversed(spans):
        digits.append(keys % span)
        keys = torch.div(keys, span, rounding_mode="floor")
    return torch.stack(digits[::-1], 1) + low, inverse


def gather(values: Tensor, index: Tensor, fill: float = 0.0) -> Tensor:
    """``values[index]`` where ``index >= 0``, ``fill`` where ``index == -1``; differentiable.

    This is how weights follow an arc map: an output arc's weight is the sum of the gathered
    weights of the input arcs it came from (-1 where an input contributes no arc).
    """
    if values.numel() == 0:  # every index is -1; keep the result connected to autograd
        return values.sum() * 0 + values.new_full(index.shape, fill)
    picked = values.index_select(0, index.clamp(min=0))
    if bool((index < 0).any()):
        picked = torch.where(index >= 0, picked, picked.new_full((), fill))
    return picked


class Graph:
    """A weighted finite-state transducer (acceptor when ``ilabel == olabel`` everywhere).

    Build one node and arc at a time, as in gtn::

        g = Graph()
        s = g.add_node(start=True)
        a = g.add_node(accept=True)
        g.add_arc(s, a, 1, 2, weight=-0.5)

    or all at once with :meth:`Graph.from_arcs`. Adding nodes and arcs is cheap (they are
    buffered and turned into tensors on the next read), so building big graphs arc by arc
    costs no quadratic copying; reading any tensor property gives the current graph.
    """

    def __init__(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        if dtype not in (torch.float32, torch.float64):
            raise DtypeMismatchError(f"weights must be float32 or float64, not {dtype}")
        device = as_device(device)
        self._src = torch.zeros(0, dtype=torch.long, device=device)
        self._dst = self._src
        self._ilabel = self._src
        self._olabel = self._src
        self._weights = torch.zeros(0, dtype=dtype, device=device)
        self._start = torch.zeros(0, dtype=dtype, device=device)
        self._final = torch.zeros(0, dtype=dtype, device=device)
        self._node_graph: Tensor | None = None
        self._num_graphs = 1
        # Write buffers of the builder API; _flush() moves them into the tensors above.
        self._new_nodes: list[tuple[float, float]] = []
        self._new_arcs: list[tuple[int, int, int, int, float]] = []
        # Weights of buffered nodes and arcs that require grad: (row, column, tensor) and
        # (row, tensor), spliced differentiably into the buffered values by _flush().
        self._new_node_tensors: list[tuple[int, int, Tensor]] = []
        self._new_arc_tensors: list[tuple[int, Tensor]] = []
        self._num_nodes = 0

    # ------------------------------------------------------------------ builder API
    def add_node(self, start: bool = False, accept: bool = False, *,
                 start_weight: float | Tensor | None = None, final_weight: float | Tensor | None = None) -> int:
        """Add a node and return its id. ``start``/``accept`` give weight 0; the keyword
        weights set any other value (and imply start/accept); a weight tensor that requires grad
        keeps its gradient."""
        self._check_buildable()
        node = self._num_nodes
        for name, flag in (("start", start), ("accept", accept)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ArgumentTypeError(f"add_node: {name} must be True or False, not {type(flag).__name__} "
                                        f"(start_weight= and final_weight= take a weight)")
        row: list[float] = []
        given = (("start", start_weight, start), ("final", final_weight, accept))
        for column, (name, weight, flag) in enumerate(given):
            if weight is None:
                row.append(0.0 if flag else NEG_INF)
                continue
            value = as_score(weight, f"node {node}: {name} weight")
            if isinstance(value, Tensor):
                self._new_node_tensors.append((len(self._new_nodes), column, value))
                value = float(value.detach())
            row.append(value)
        self._new_nodes.append((row[0], row[1]))
        self._num_nodes += 1
        return node

    def add_arc(self, src: int, dst: int, ilabel: int, olabel: int | None = None,
                weight: float | Tensor = 0.0) -> int:
        """Add an arc and return its index; ``olabel`` defaults to ``ilabel`` (an acceptor arc).

        Nodes and labels are integers (Python, numpy or torch); ``weight`` is a number or a
        one-element tensor, and a tensor that requires grad keeps its gradient."""
        self._check_buildable()
        olabel = ilabel if olabel is None else olabel
        index = self.num_arcs
        nodes = []
        for name, node in (("src", src), ("dst", dst)):
            node = as_integer(node, f"arc {index}: {name} node", InvalidGraphError)
            if not 0 <= node < self._num_nodes:
                raise InvalidGraphError(
                    f"arc {index}: {name} node {node} does not exist (graph has {self._num_nodes} nodes)")
            nodes.append(node)
        labels = []
        for name, label in (("ilabel", ilabel), ("olabel", olabel)):
            label = as_integer(label, f"arc {index}: {name}")
            if label < 0:
                raise LabelError(f"arc {index}: {name} {label} is negative (labels are >= 0; 0 is epsilon)")
            labels.append(label)
        value = as_score(weight, f"arc {index}: weight")
        if isinstance(value, Tensor):
            self._new_arc_tensors.append((len(self._new_arcs), value))
            value = float(value.detach())
        self._new_arcs.append((nodes[0], nodes[1], labels[0], labels[1], value))
        return index

    def make_start(self, node: int, weight: float | Tensor = 0.0) -> None:
        """Make an existing node a start node (gtn's ``makeAccept`` counterpart)."""
        self._set_node_weight(node, weight, final=False)

    def make_accept(self, node: int, weight: float | Tensor = 0.0) -> None:
        """Make an existing node an accept node with the given final weight."""
        self._set_node_weight(node, weight, final=True)

    def _set_node_weight(self, node: int, weight: float | Tensor, final: bool) -> None:
        self._check_buildable()
        node = as_integer(node, "node", InvalidGraphError)
        if not 0 <= node < self._num_nodes:
            raise InvalidGraphError(f"node {node} does not exist (graph has {self._num_nodes} nodes)")
        value = as_score(weight, f"node {node}: {'final' if final else 'start'} weight")
        self._flush()
        target = self._final if final else self._start
        target = target.detach().clone() if not target.requires_grad else target.clone()
        # an item assignment of a tensor that requires grad is differentiable
        target[node] = value
        if final:
            self._final = target
        else:
            self._start = target

    def _check_buildable(self) -> None:
        if self._node_graph is not None:
            raise InvalidGraphError("a batch of graphs cannot be extended node by node; build each graph first")

    def _flush(self) -> None:
        if self._new_nodes:
            nodes = torch.tensor(self._new_nodes, dtype=self._weights.dtype, device=self._weights.device)
            if self._new_node_tensors:
                rows, columns, values = zip(*self._new_node_tensors)
                index = (torch.tensor(rows, device=nodes.device), torch.tensor(columns, device=nodes.device))
                nodes = nodes.index_put(index, torch.stack(values).to(nodes))
                self._new_node_tensors = []
            self._start = torch.cat([self._start, nodes[:, 0]])
            self._final = torch.cat([self._final, nodes[:, 1]])
            self._new_nodes = []
        if self._new_arcs:
            device = self._weights.device
            ints = torch.tensor([a[:4] for a in self._new_arcs], dtype=torch.long, device=device)
            weights = torch.tensor([a[4] for a in self._new_arcs], dtype=self._weights.dtype, device=device)
            if self._new_arc_tensors:
                rows, values = zip(*self._new_arc_tensors)
                weights = weights.index_put((torch.tensor(rows, device=device),), torch.stack(values).to(weights))
                self._new_arc_tensors = []
            self._src = torch.cat([self._src, ints[:, 0]])
            self._dst = torch.cat([self._dst, ints[:, 1]])
            self._ilabel = torch.cat([self._ilabel, ints[:, 2]])
            self._olabel = torch.cat([self._olabel, ints[:, 3]])
            self._weights = torch.cat([self._weights, weights])
            self._new_arcs = []

    # ------------------------------------------------------------------ bulk constructors
    @classmethod
    def from_arcs(cls, num_nodes: int, src: TensorLike, dst: TensorLike, ilabel: TensorLike,
                  olabel: TensorLike | None = None, weights: TensorLike | None = None, *,
                  start: TensorLike | None = None, accept: TensorLike | None = None,
                  start_weights: TensorLike | None = None, final_weights: TensorLike | None = None,
                  dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                  ) -> Graph:
        """Build a graph from arc arrays in one go (no Python loop per arc).

        ``start``/``accept`` are lists (or tensors) of node ids with weight 0;
        ``start_weights``/``final_weights`` are full ``[num_nodes]`` tensors (-inf = not a
        start / accept node) and take precedence. ``weights`` may require grad: the graph
        keeps the tensor itself, so gradients flow back to it.
        """
        num_nodes = as_integer(num_nodes, "num_nodes", InvalidGraphError)
        if num_nodes < 0:
            raise InvalidGraphError(f"num_nodes is {num_nodes}; a graph has 0 or more nodes")
        if isinstance(weights, Tensor) and dtype is None:
            dtype = weights.dtype
        dtype = dtype or torch.float32
        if dtype not in (torch.float32, torch.float64):
            raise DtypeMismatchError(f"weights must be float32 or float64, not {dtype}")
        if device is None:
            device = next((t.device for t in (weights, src) if isinstance(t, Tensor)), torch.device("cpu"))
        device = as_device(device)

        def tensor(x: TensorLike, name: str, **kwargs: object) -> Tensor:
            try:
                return torch.as_tensor(x, device=device, **kwargs)  # type: ignore[arg-type]
            except (TypeError, ValueError, RuntimeError, OverflowError, NotImplementedError) as error:
                raise ArgumentTypeError(f"{name} must be a tensor or a sequence of numbers, not "
                                        f"{type(x).__name__} {_excerpt(x)} ({error})") from None

        def ints(x: TensorLike, name: str) -> Tensor:
            t = tensor(x, name)
            if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex):  # an empty list reads as float
                raise InvalidGraphError(f"{name}: node ids and labels must be integers, not {t.dtype}")
            if t.dtype == torch.bool:
                raise ArgumentTypeError(f"{name}: node ids and labels must be integers, not bool")
            return t.to(torch.long).reshape(-1)

        def floats(x: TensorLike, name: str) -> Tensor:
            t = tensor(x, name, dtype=dtype)
            return t if t.dim() == 1 else t.reshape(-1)

        src_t, dst_t, il_t = ints(src, "src"), ints(dst, "dst"), ints(ilabel, "ilabel")
        ol_t = il_t if olabel is None else ints(olabel, "olabel")
        w_t = (torch.zeros(src_t.shape[0], dtype=dtype, device=device) if weights is None
               else floats(weights, "weights"))

        def node_weights(full: TensorLike | None, ids: TensorLike | None, name: str, ids_name: str) -> Tensor:
            if full is not None:
                t = floats(full, name)
                if t.shape != (num_nodes,):
                    raise InvalidGraphError(f"{name} has shape {tuple(t.shape)}, expected ({num_nodes},) "
                                            f"for num_nodes={num_nodes}")
                return t
            out = torch.full((num_nodes,), NEG_INF, dtype=dtype, device=device)
            if ids is not None:
                idx = ints(ids, ids_name)
                if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_nodes):
                    bad = int(idx[(idx < 0) | (idx >= num_nodes)][0])
                    raise InvalidGraphError(f"{ids_name}: node {bad} does not exist (graph has {num_nodes} nodes)")
                out[idx] = 0.0
            return out

        g = cls.from_tensors(src_t, dst_t, il_t, ol_t, w_t,
                              node_weights(start_weights, start, "start_weights", "start"),
                              node_weights(final_weights, accept, "final_weights", "accept"))
        g.validate()
        return g

    @classmethod
    def from_tensors(cls, src: Tensor, dst: Tensor, ilabel: Tensor, olabel: Tensor, weights: Tensor,
                     start_weights: Tensor, final_weights: Tensor, node_graph: Tensor | None = None,
                     num_graphs: int = 1) -> Graph:
        """How operations build their results: wrap tensors as a graph, without copying or
        checking. Arcs: ``src``, ``dst``, ``ilabel``, ``olabel`` (long) and ``weights`` ``[A]``;
        nodes: ``start_weights`` and ``final_weights`` ``[N]`` (-inf: not a start / accept node);
        a batch of ``num_graphs`` graphs gives each node's graph in ``node_graph`` ``[N]``, nodes
        grouped by graph. The tensors must be consistent (same device, ids in range): user input
        goes through :meth:`from_arcs`, which checks it."""
        g = cls.__new__(cls)
        g._src, g._dst, g._ilabel, g._olabel = src, dst, ilabel, olabel
        g._weights, g._start, g._final = weights, start_weights, final_weights
        g._node_graph, g._num_graphs = node_graph, num_graphs
        g._new_nodes, g._new_arcs, g._new_node_tensors, g._new_arc_tensors = [], [], [], []
        g._num_nodes = int(start_weights.shape[0])
        return g

    def replace(self, **changes: Tensor) -> Graph:
        """A graph with the same nodes and batch layout and some of the tensors of
        :meth:`from_tensors` replaced (e.g. ``g.replace(ilabel=g.olabel)``), unchecked."""
        self._flush()
        fields = dict(src=self._src, dst=self._dst, ilabel=self._ilabel, olabel=self._olabel,
                      weights=self._weights, start_weights=self._start, final_weights=self._final,
                      node_graph=self._node_graph)
        fields.update(changes)
        return Graph.from_tensors(num_graphs=self._num_graphs, **fields)  # type: ignore[arg-type]

    def with_weights(self, weights: Tensor, final_weights: Tensor | None = None,
                     start_weights: Tensor | None = None) -> Graph:
        """The same structure with new arc (and optionally node) weights, e.g. from a network."""
        changes = {"weights": weights}
        if final_weights is not None:
            changes["final_weights"] = final_weights
        if start_weights is not None:
            changes["start_weights"] = start_weights
        for name, value in changes.items():
            if not isinstance(value, Tensor):
                raise ArgumentTypeError(f"with_weights: {name} must be a tensor, not {type(value).__name__}")
        g = self.replace(**changes)
        g.validate()
        return g

    # ------------------------------------------------------------------ validation
    def validate(self) -> Graph:
        """Check the graph and raise a typed error naming the first offending arc or node."""
        self._flush()
        n, a = self._num_nodes, self._src.shape[0]
        for name, t in (("dst", self._dst), ("ilabel", self._ilabel), ("olabel", self._olabel),
                        ("weights", self._weights)):
            if t.shape != (a,):
                raise InvalidGraphError(f"{name} has shape {tuple(t.shape)}, expected ({a},) like src")
        for name, t in (("start_weights", self._start), ("final_weights", self._final)):
            if t.shape != (n,):
                raise InvalidGraphError(f"{name} has shape {tuple(t.shape)}, expected ({n},)")
        tensors = (self._src, self._dst, self._ilabel, self._olabel, self._weights, self._start, self._final)
        if len({t.device for t in tensors}) > 1:
            devices = sorted({str(t.device) for t in tensors})
            raise DeviceMismatchError(f"graph tensors are on several devices: {devices}")
        if len({t.dtype for t in tensors[4:]}) > 1 or not self._weights.dtype.is_floating_point:
            raise DtypeMismatchError("arc, start and final weights must share one floating dtype")

        def first(mask: Tensor) -> int | None:
            hit = mask.nonzero()
            return int(hit[0, 0]) if hit.numel() else None

        for name, nodes in (("src", self._src), ("dst", self._dst)):
            bad = first((nodes < 0) | (nodes >= n))
            if bad is not None:
                raise InvalidGraphError(
                    f"arc {bad}: {name} node {int(nodes[bad])} does not exist (graph has {n} nodes)")
        for name, labels in (("ilabel", self._ilabel), ("olabel", self._olabel)):
            bad = first(labels < 0)
            if bad is not None:
                raise LabelError(f"arc {bad}: {name} {int(labels[bad])} is negative (labels are >= 0; 0 is epsilon)")
        return self.check_weights()

    def check_weights(self) -> Graph:
        """Raise WeightError naming the first arc, start or final weight that is NaN or +inf
        (log-scores are finite or -inf). Cheap where all is well: one sum per tensor. Graphs built
        from a caller's scores (DTW, CRF, HMM, ASG, the recognition transformer) are checked so,
        since the sweeps' max-shifted sums would drop a NaN that meets no finite score."""
        self._flush()
        for what, w in (("arc", self._weights), ("start weight of node", self._start),
                        ("final weight of node", self._final)):
            if has_nan_or_plus_inf(w):
                bad = int(nan_or_plus_inf(w).nonzero()[0, 0])
                raise WeightError(f"{what} {bad}: weight {float(w[bad])} is NaN or +inf")
        return self

    # ------------------------------------------------------------------ properties
    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    @property
    def num_arcs(self) -> int:
        return int(self._src.shape[0]) + len(self._new_arcs)

    @property
    def src(self) -> Tensor:
        self._flush()
        return self._src

    @property
    def dst(self) -> Tensor:
        self._flush()
        return self._dst

    @property
    def ilabel(self) -> Tensor:
        self._flush()
        return self._ilabel

    @property
    def olabel(self) -> Tensor:
        self._flush()
        return self._olabel

    @property
    def weights(self) -> Tensor:
        """Arc weights ``[num_arcs]``; may require grad."""
        self._flush()
        return self._weights

    @property
    def start_weights(self) -> Tensor:
        """Per-node start weights ``[num_nodes]`` (-inf: not a start node)."""
        self._flush()
        return self._start

    @property
    def final_weights(self) -> Tensor:
        """Per-node final weights ``[num_nodes]`` (-inf: not an accept node)."""
        self._flush()
        return self._final

    @property
    def start_nodes(self) -> Tensor:
        return (self.start_weights > NEG_INF).nonzero().reshape(-1)

    @property
    def accept_nodes(self) -> Tensor:
        return (self.final_weights > NEG_INF).nonzero().reshape(-1)

    @property
    def is_acceptor(self) -> bool:
        return bool(torch.equal(self.ilabel, self.olabel))

    @property
    def dtype(self) -> torch.dtype:
        return self._weights.dtype

    @property
    def device(self) -> torch.device:
        return self._weights.device

    @property
    def requires_grad(self) -> bool:
        return self.weights.requires_grad or self._start.requires_grad or self._final.requires_grad

    # ------------------------------------------------------------------ batches
    @property
    def is_batch(self) -> bool:
        return self._node_graph is not None

    @property
    def num_graphs(self) -> int:
        return self._num_graphs

    @property
    def node_graph(self) -> Tensor:
        """Which graph of the batch each node belongs to (all zeros for a single graph)."""
        self._flush()
        if self._node_graph is None:
            return torch.zeros(self._num_nodes, dtype=torch.long, device=self.device)
        return self._node_graph

    @property
    def arc_graph(self) -> Tensor:
        """Which graph of the batch each arc belongs to."""
        return self.node_graph.index_select(0, self.src)

    @staticmethod
    def batch(graphs: Sequence[Graph]) -> Graph:
        """Stack graphs into one batch (a disjoint union that remembers which graph is which)."""
        graphs = as_graph_list(graphs)
        if not graphs:
            raise InvalidGraphError("cannot batch an empty list of graphs")
        check_compatible(*graphs)
        flat = [g.unbatch() if g.is_batch else [g] for g in graphs]
        parts = [g for group in flat for g in group]
        for g in parts:
            g._flush()
        device = parts[0].device
        sizes = torch.tensor([g.num_nodes for g in parts], dtype=torch.long, device=device)
        offsets = torch.cumsum(sizes, 0) - sizes
        arc_counts = torch.tensor([g.num_arcs for g in parts], dtype=torch.long, device=device)
        arc_offsets = torch.repeat_interleave(offsets, arc_counts)
        return Graph.from_tensors(
            torch.cat([g._src for g in parts]) + arc_offsets,
            torch.cat([g._dst for g in parts]) + arc_offsets,
            torch.cat([g._ilabel for g in parts]),
            torch.cat([g._olabel for g in parts]),
            torch.cat([g._weights for g in parts]),
            torch.cat([g._start for g in parts]),
            torch.cat([g._final for g in parts]),
            node_graph=torch.repeat_interleave(torch.arange(len(parts), device=device), sizes),
            num_graphs=len(parts),
        )

    def unbatch(self) -> list[Graph]:
        """The graphs of a batch, each on its own (weights stay connected to the batch's)."""
        return [self[i] for i in range(self._num_graphs)]

    def __getitem__(self, index: int) -> Graph:
        index = as_integer(index, "graph index", ArgumentTypeError)
        if not self.is_batch:
            if index in (0, -1):
                return self
            raise GraphIndexError(f"graph index {index} out of range for a single graph")
        if index < 0:
            index += self._num_graphs
        if not 0 <= index < self._num_graphs:
            raise GraphIndexError(f"graph index {index} out of range for a batch of {self._num_graphs}")
        nodes = (self.node_graph == index).nonzero().reshape(-1)
        return subgraph(self, nodes, keep_batch=False)

    def __len__(self) -> int:
        return self._num_graphs

    # ------------------------------------------------------------------ conversions
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Graph:
        """Move the graph to a device and/or cast its weights (differentiably)."""
        self._flush()
        device = as_device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        if dtype not in (torch.float32, torch.float64):
            raise DtypeMismatchError(f"weights must be float32 or float64, not {dtype}")
        ng = self._node_graph.to(device) if self._node_graph is not None else None
        return Graph.from_tensors(
            self._src.to(device), self._dst.to(device), self._ilabel.to(device), self._olabel.to(device),
            self._weights.to(device=device, dtype=dtype), self._start.to(device=device, dtype=dtype),
            self._final.to(device=device, dtype=dtype), node_graph=ng, num_graphs=self._num_graphs)

    def cpu(self) -> Graph:
        return self.to("cpu")

    def double(self) -> Graph:
        return self.to(dtype=torch.float64)

    def detach(self) -> Graph:
        """The same graph with weights cut from autograd."""
        return self.replace(weights=self.weights.detach(), start_weights=self._start.detach(),
                             final_weights=self._final.detach())

    def requires_grad_(self, requires_grad: bool = True) -> Graph:
        """Make the arc weights a leaf that requires grad (as ``Tensor.requires_grad_``)."""
        self.weights.requires_grad_(requires_grad)
        return self

    # ------------------------------------------------------------------ operators (pynini style)
    # Imported on use: the operations live on a floor above this module.
    def __or__(self, other: Graph) -> Graph:
        """``g1 | g2``: union."""
        from .ops.structure import union
        return union([self, other])

    def __add__(self, other: Graph) -> Graph:
        """``g1 + g2``: concatenation."""
        from .ops.structure import concat
        return concat([self, other])

    def star(self) -> Graph:
        """Kleene closure (``g*``)."""
        from .ops.structure import closure
        return closure(self)

    def __matmul__(self, other: Graph) -> Graph:
        """``g1 @ g2``: composition."""
        from .ops.compose import compose
        return compose(self, other)

    def _repr_svg_(self) -> str:
        """Draw the graph in Jupyter: a large graph as an excerpt of ``io.DRAW_EXCERPT_ARCS`` arcs
        and nodes, with a caption (``gtn_py.draw(g)`` draws all of it)."""
        from .io import DRAW_EXCERPT_ARCS, draw
        return draw(self, max_arcs=DRAW_EXCERPT_ARCS).pipe(format="svg", encoding="utf-8")

    # ------------------------------------------------------------------ iteration and printing
    def arcs(self) -> Iterator[Arc]:
        """Iterate over arcs as :class:`Arc` records (a convenience; operations never loop)."""
        self._flush()
        rows = zip(self._src.tolist(), self._dst.tolist(), self._ilabel.tolist(),
                   self._olabel.tolist(), self._weights.detach().tolist())
        for src, dst, il, ol, w in rows:
            yield Arc(src, dst, il, ol, w)

    def __iter__(self) -> Iterator[Arc]:
        return self.arcs()

    def __repr__(self) -> str:
        kind = "acceptor" if self.is_acceptor else "transducer"
        batch = f", batch of {self._num_graphs}" if self.is_batch else ""
        return (f"Graph({kind}, {self.num_nodes} nodes, {self.num_arcs} arcs, "
                f"{self.dtype}, {self.device}{batch})")


def check_compatible(*graphs: Graph) -> None:
    """Raise if the graphs do not share one device and one weight dtype (or are no Graphs)."""
    for k, g in enumerate(graphs):
        as_graph(g, f"graph {k}")
    devices = {g.device for g in graphs}
    if len(devices) > 1:
        raise DeviceMismatchError(f"graphs are on different devices: {sorted(map(str, devices))}")
    dtypes = {g.dtype for g in graphs}
    if len(dtypes) > 1:
        raise DtypeMismatchError(f"graphs have different weight dtypes: {sorted(map(str, dtypes))}")


def subgraph(g: Graph, nodes: Tensor, keep_batch: bool = True, arcs: Tensor | None = None) -> Graph:
    """The graph induced by ``nodes`` (in that order): the arcs between kept nodes (of those
    ``arcs``, a boolean mask, allows), renumbered.

    Differentiable: weights are gathered from ``g``.
    """
    return subgraph_with_arc_map(g, nodes, keep_batch, arcs)[0]


def subgraph_with_arc_map(g: Graph, nodes: Tensor, keep_batch: bool = True,
                          arcs: Tensor | None = None) -> tuple[Graph, Tensor]:
    """:func:`subgraph` and its arc map: the index in ``g`` of each arc of the result."""
    g._flush()
    remap = torch.full((g.num_nodes,), -1, dtype=torch.long, device=g.device)
    remap[nodes] = torch.arange(nodes.shape[0], device=g.device)
    between = (remap[g._src] >= 0) & (remap[g._dst] >= 0)
    kept = (between if arcs is None else between & arcs).nonzero().reshape(-1)
    node_graph = None
    num_graphs = 1
    if keep_batch and g._node_graph is not None:
        node_graph, num_graphs = g._node_graph[nodes], g._num_graphs
    return Graph.from_tensors(
        remap[g._src[kept]], remap[g._dst[kept]], g._ilabel[kept], g._olabel[kept],
        g._weights.index_select(0, kept), g._start.index_select(0, nodes),
        g._final.index_select(0, nodes), node_graph=node_graph, num_graphs=num_graphs), kept


def as_flag(value: object, what: str) -> bool:
    """``value`` if it is a bool (numpy's included); :class:`ArgumentTypeError` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{what} must be True or False, not {type(value).__name__} {value!r}")
    return bool(value)


# ---------------------------------------------------------------------- common graphs
def linear_graph(num_frames: int, num_labels: int, weights: Tensor | None = None, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Graph:
    """gtn's ``linear_graph``: ``num_frames + 1`` nodes in a chain, ``num_labels`` parallel arcs
    per frame labelled ``0 .. num_labels-1`` (label ``c`` reads emission column ``c``).

    ``weights`` (``[num_frames, num_labels]``, e.g. a network's log-probabilities) become the
    arc weights in frame-major order; note that composition treats label 0 as epsilon.
    """
    num_frames = as_integer(num_frames, "num_frames", ArgumentTypeError)
    num_labels = as_integer(num_labels, "num_labels", ArgumentTypeError)
    if num_frames < 0 or num_labels < 0:
        raise InvalidGraphError(f"linear_graph({num_frames}, {num_labels}): the sizes must be >= 0")
    if weights is not None and not isinstance(weights, Tensor):
        raise ArgumentTypeError(f"weights must be a tensor [num_frames, num_labels], not {type(weights).__name__}")
    device = weights.device if weights is not None else as_device(device)
    dtype = weights.dtype if weights is not None else dtype
    frames = torch.arange(num_frames, device=device).repeat_interleave(num_labels)
    labels = torch.arange(num_labels, device=device).repeat(num_frames)
    w = weights.reshape(-1) if weights is not None else None
    if w is not None and w.shape[0] != num_frames * num_labels:
        raise InvalidGraphError(f"weights of shape {tuple(weights.shape)} do not match "  # type: ignore[union-attr]
                                f"[{num_frames}, {num_labels}]")
    return Graph.from_arcs(num_frames + 1, frames, frames + 1, labels, labels, w,
                           start=[0], accept=[num_frames], dtype=dtype, device=device)


def string_graph(ilabels: Sequence[int] | Tensor, olabels: Sequence[int] | Tensor | None = None,
                 weights: TensorLike | None = None, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> Graph:
    """A chain accepting exactly one label sequence (a transducer if ``olabels`` is given)."""
    device = as_device(device)
    il = _labels_tensor(ilabels, "ilabels", device)
    ol = il if olabels is None else _labels_tensor(olabels, "olabels", device)
    if ol.shape != il.shape:
        raise InvalidGraphError(f"ilabels ({il.shape[0]}) and olabels ({ol.shape[0]}) differ in length")
    n = il.shape[0]
    nodes = torch.arange(n, device=device)
    return Graph.from_arcs(n + 1, nodes, nodes + 1, il, ol, weights, start=[0], accept=[n],
                           dtype=dtype, device=device)


def _labels_tensor(labels: object, what: str, device: torch.device) -> Tensor:
    """A sequence of integer labels as a 1-d long tensor on ``device``."""
    if isinstance(labels, (str, bytes)) or labels is None:
        raise ArgumentTypeError(f"{what} must be a sequence of integer labels, not {type(labels).__name__}")
    try:
        t = torch.as_tensor(labels, device=device)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as error:
        raise ArgumentTypeError(f"{what} must be a sequence of integer labels ({error})") from None
    if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
        raise LabelError(f"{what} must be integers, not {t.dtype}")
    return t.to(torch.long).reshape(-1)


def scalar_graph(weight: float | Tensor = 0.0, ilabel: int = EPSILON, olabel: int | None = None, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Graph:
    """gtn's scalar graph: two nodes and one arc carrying ``weight`` (differentiable if a tensor)."""
    if isinstance(weight, Tensor) and weight.numel() != 1:
        raise ArgumentTypeError(f"weight must be a number or a one-element tensor, not shape {tuple(weight.shape)}")
    w = (weight.reshape(1) if isinstance(weight, Tensor)
         else torch.tensor([as_score(weight, "weight")], dtype=dtype, device=as_device(device)))
    return Graph.from_arcs(2, [0], [1], [ilabel], [ilabel if olabel is None else olabel], w,
                           start=[0], accept=[1], device=w.device)
