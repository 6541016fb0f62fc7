"""Structural operations: union, concatenation, closure, projections, inversion, reversal,
trimming (connect), sorting, and comparisons.

Every output is built from its inputs through index maps: an output arc's weight is a
:func:`~gtn_py.graph.gather` (or a sum of gathers) of input arc, start and final weights,
so gradients reach every input through ordinary autograd. Nothing loops per arc or node
in Python; only :func:`connect` walks the integer structure, once, in a numba kernel
(on a CPU copy of the arc grouping; weights stay where they are).

Batches: the per-graph operations (:func:`closure`, :func:`project_input`,
:func:`project_output`, :func:`invert`, :func:`reverse`, :func:`connect`,
:func:`topsort`, :func:`arcsort`, :func:`clone`) act on each graph of a batch and keep
the batch layout (``num_graphs`` and ``node_graph``). :func:`union` and :func:`concat`
combine a *sequence* of graphs into one graph; a batch in that sequence stands for its
graphs in order, so ``union([batch])`` is the union of the batch's graphs and the result
is never a batch.
"""

from __future__ import annotations

from typing import Literal, Sequence, Tuple, overload

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentTypeError, ArgumentValueError, InvalidGraphError, LabelError
from ..graph import (
    EPSILON,
    NEG_INF,
    Graph,
    as_flag,
    as_graph,
    as_graph_list,
    as_integer,
    gather,
    subgraph,
    subgraph_with_arc_map,
)
from ..semiring import Semiring, get_semiring
from .traverse import group_arcs, topological_order, useful_nodes

__all__ = [
    "union", "concat", "closure", "project_input", "project_output", "invert", "reverse",
    "connect", "topsort", "arcsort", "clone", "equal", "equivalent",
]


# ---------------------------------------------------------------------- helpers
def _pairs_by_group(left: Tensor, left_group: Tensor, right: Tensor, right_group: Tensor,
                    num_groups: int) -> Tuple[Tensor, Tensor]:
    """Every pair ``(l, r)`` of ``left x right`` whose groups are equal (left-major order)."""
    order, offsets = group_arcs(right_group, num_groups)
    counts = (offsets[1:] - offsets[:-1])[left_group]
    pair_left = left.repeat_interleave(counts)
    first = offsets[:-1][left_group].repeat_interleave(counts)
    # Position of each pair within its left element's run of partners.
    run_start = (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    rank = torch.arange(pair_left.shape[0], device=left.device) - run_start
    return pair_left, right[order[first + rank]]


def _epsilon_arcs(src: Tensor, dst: Tensor, weights: Tensor) -> Tuple[Tensor, ...]:
    """Arc tensors ``(src, dst, ilabel, olabel, weights)`` for epsilon arcs."""
    eps = torch.zeros_like(src)
    return src, dst, eps, eps, weights


def _with_arcs(arcs: Sequence[Tuple[Tensor, ...]], start_weights: Tensor, final_weights: Tensor,
               node_graph: Tensor | None = None, num_graphs: int = 1) -> Graph:
    """A graph whose arcs are the concatenation of groups of ``(src, dst, il, ol, w)`` tensors."""
    src, dst, il, ol, w = (torch.cat(column) for column in zip(*arcs))
    return Graph.from_tensors(src, dst, il, ol, w, start_weights, final_weights,
                               node_graph=node_graph, num_graphs=num_graphs)


def _arcs_of(g: Graph, node_id: Tensor | None = None) -> Tuple[Tensor, ...]:
    """The arc tensors of ``g``, with nodes renamed through ``node_id`` if given."""
    src, dst = (g.src, g.dst) if node_id is None else (node_id[g.src], node_id[g.dst])
    return src, dst, g.ilabel, g.olabel, g.weights


def _empty_string_graph(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Graph:
    g = Graph(dtype=dtype, device=device)
    g.add_node(start=True, accept=True)
    return g


# ---------------------------------------------------------------------- combining graphs
def union(graphs: Sequence[Graph]) -> Graph:
    """The graph accepting the union of the relations of ``graphs`` (weights add up in the
    semiring where relations overlap).

    The result is the disjoint union of the inputs' nodes, in order, with their start and
    final weights; it is one graph, not a batch (a batch among ``graphs`` contributes each
    of its graphs). The union of no graphs is the empty graph, which accepts nothing.
    """
    if len(as_graph_list(graphs)) == 0:
        return Graph()
    flat = Graph.batch(graphs)
    return _with_arcs([_arcs_of(flat)], flat.start_weights, flat.final_weights)


def concat(graphs: Sequence[Graph]) -> Graph:
    """The concatenation ``graphs[0] graphs[1] ...``: a path of the result is a successful
    path of each graph in turn, and its score is the sum of theirs.

    Built as gtn does: the disjoint union of the graphs plus an epsilon arc from every
    accept node of graph ``i`` to every start node of graph ``i + 1``, carrying the final
    weight of the one plus the start weight of the other. Only graph 0's start weights and
    the last graph's final weights remain. A batch among ``graphs`` contributes each of its
    graphs in order; the result is one graph. ``concat([])`` accepts only the empty string.
    """
    if len(as_graph_list(graphs)) == 0:
        return _empty_string_graph()
    flat = Graph.batch(graphs)
    part, last = flat.node_graph, flat.num_graphs - 1
    start, final = flat.start_weights, flat.final_weights
    nodes = torch.arange(flat.num_nodes, device=flat.device)
    accepts = (final > NEG_INF) & (part < last)
    starts = (start > NEG_INF) & (part > 0)
    # Pair accept nodes of part p with start nodes of part p + 1 (group: the earlier part).
    left, right = _pairs_by_group(nodes[accepts], part[accepts], nodes[starts], part[starts] - 1, last + 1)
    bridges = _epsilon_arcs(left, right, final.index_select(0, left) + start.index_select(0, right))
    none = torch.full_like(nodes, -1)
    return _with_arcs([_arcs_of(flat), bridges],
                      gather(start, torch.where(part == 0, nodes, none), NEG_INF),
                      gather(final, torch.where(part == last, nodes, none), NEG_INF))


def closure(g: Graph) -> Graph:
    """Kleene closure ``g*``: the weighted relation ``sum_{k >= 0} g^k``.

    As in gtn, each graph gets a new start node (placed before its nodes; node 0 for a single
    graph) that is also an accept node with weights 0, so the empty string is accepted with
    score 0. Epsilon arcs go from it to every start node (carrying the start weight) and from
    every accept node back to every start node (carrying final + start weight); the old
    accept nodes keep their final weights. Each path of the result is one sequence of paths
    of ``g``, so nothing is counted twice. Per graph on a batch.
    """
    as_graph(g)
    n, b, device = g.num_nodes, g.num_graphs, g.device
    graph_of = g.node_graph
    new_graph = torch.arange(b, device=device)
    # Lay the nodes out as [old nodes..., new nodes...] then move each graph's new node in
    # front of that graph's nodes, keeping the rest in order.
    layout = torch.argsort(torch.cat([graph_of * 2 + 1, new_graph * 2]), stable=True)
    position = torch.empty_like(layout)
    position[layout] = torch.arange(n + b, device=device)
    old_id, new_id = position[:n], position[n:]

    start, final = g.start_weights, g.final_weights
    starts = (start > NEG_INF).nonzero().reshape(-1)
    accepts = (final > NEG_INF).nonzero().reshape(-1)
    entries = _epsilon_arcs(new_id[graph_of[starts]], old_id[starts], start.index_select(0, starts))
    back_from, back_to = _pairs_by_group(accepts, graph_of[accepts], starts, graph_of[starts], b)
    loops = _epsilon_arcs(old_id[back_from], old_id[back_to],
                          final.index_select(0, back_from) + start.index_select(0, back_to))
    zeros = start.new_zeros(b)
    return _with_arcs(
        [_arcs_of(g, old_id), entries, loops],
        torch.cat([torch.full_like(start, NEG_INF), zeros]).index_select(0, layout),
        torch.cat([final, zeros]).index_select(0, layout),
        node_graph=torch.cat([graph_of, new_graph])[layout] if g.is_batch else None,
        num_graphs=b)


# ---------------------------------------------------------------------- relabelling and reversal
def project_input(g: Graph) -> Graph:
    """The acceptor of the input side: output labels replaced by input labels."""
    as_graph(g)
    return g.replace(olabel=g.ilabel)


def project_output(g: Graph) -> Graph:
    """The acceptor of the output side: input labels replaced by output labels."""
    as_graph(g)
    return g.replace(ilabel=g.olabel)


def invert(g: Graph) -> Graph:
    """The inverse transducer: input and output labels swapped."""
    as_graph(g)
    return g.replace(ilabel=g.olabel, olabel=g.ilabel)


def reverse(g: Graph) -> Graph:
    """The reversed graph: every arc flipped, start and final weights swapped, so it accepts
    each string of ``g`` read backwards with the same score."""
    as_graph(g)
    return g.replace(src=g.dst, dst=g.src, start_weights=g.final_weights, final_weights=g.start_weights)


# ---------------------------------------------------------------------- trimming and sorting
@overload
def connect(g: Graph, return_arc_map: Literal[False] = False) -> Graph: ...
@overload
def connect(g: Graph, return_arc_map: Literal[True]) -> Tuple[Graph, Tensor]: ...
def connect(g: Graph, return_arc_map: bool = False) -> Graph | Tuple[Graph, Tensor]:
    """Keep only the nodes on some successful path: reachable from a start node and reaching
    an accept node (node order and arc order kept). Per graph on a batch; a graph with no
    successful path becomes empty but keeps its place in the batch.

    ``return_arc_map``: also return the arc map, the index in ``g`` of each arc kept (``[E]``),
    so that per-arc attributes follow the arcs: ``values[arc_map]``."""
    as_graph(g)
    out, arc_map = subgraph_with_arc_map(g, torch.from_numpy(np.flatnonzero(useful_nodes(g))).to(g.device))
    return (out, arc_map) if as_flag(return_arc_map, "return_arc_map") else out


def topsort(g: Graph) -> Graph:
    """Renumber the nodes in topological order, so every arc goes from a lower to a higher
    node id (arc order kept). Raises :class:`CyclicGraphError` if ``g`` has a cycle. On a
    batch each graph's nodes stay together, in batch order."""
    as_graph(g)
    order = topological_order(g)
    if g.is_batch:
        order = order[torch.argsort(g.node_graph[order], stable=True)]
    return subgraph(g, order)


def arcsort(g: Graph, by: str = "ilabel") -> Graph:
    """Sort the arcs by source node, then by ``by`` (``"ilabel"`` or ``"olabel"``); stable,
    so ties keep their order. Weights follow the arcs."""
    as_graph(g)
    if not isinstance(by, str) or by not in ("ilabel", "olabel"):
        raise ArgumentValueError(f"arcsort by must be 'ilabel' or 'olabel', not {by!r}")
    label = g.ilabel if by == "ilabel" else g.olabel
    span = int(label.max()) + 1 if label.numel() else 1
    if span < (1 << 62) // max(g.num_nodes, 1):  # one sort on a combined key that fits int64
        perm = torch.argsort(g.src * span + label, stable=True)
    else:  # labels near 2**62: sort by label, then (stably) by source node
        by_label = torch.argsort(label, stable=True)
        perm = by_label[torch.argsort(g.src[by_label], stable=True)]
    return g.replace(src=g.src[perm], dst=g.dst[perm], ilabel=g.ilabel[perm], olabel=g.olabel[perm],
                      weights=g.weights.index_select(0, perm))


def clone(g: Graph) -> Graph:
    """A copy in fresh tensors: changing the copy in place never touches ``g``.

    Like gtn's ``clone`` and ``torch.Tensor.clone``, the copy stays connected to autograd
    (gradients with respect to its weights reach ``g``'s); ``clone(g).detach()`` (or
    ``g.detach()``) gives a copy cut from autograd.
    """
    as_graph(g)
    ng = g.node_graph.clone() if g.is_batch else None
    return Graph.from_tensors(g.src.clone(), g.dst.clone(), g.ilabel.clone(), g.olabel.clone(),
                               g.weights.clone(), g.start_weights.clone(), g.final_weights.clone(),
                               node_graph=ng, num_graphs=g.num_graphs)


# ---------------------------------------------------------------------- comparisons
def equal(g1: Graph, g2: Graph, tol: float = 1e-6) -> bool:
    """Whether the graphs are the same graph: same nodes, arcs (in the same order), labels,
    batch layout, and arc/start/final weights within ``tol`` (absolute and relative).
    Not an isomorphism or equivalence test (see :func:`equivalent`)."""
    as_graph(g1, "g1")
    as_graph(g2, "g2")
    _check_tolerance(tol)
    layout1 = (g1.num_nodes, g1.num_arcs, g1.is_batch, g1.num_graphs)
    if layout1 != (g2.num_nodes, g2.num_arcs, g2.is_batch, g2.num_graphs):
        return False
    device = g1.device
    for a, b in ((g1.src, g2.src), (g1.dst, g2.dst), (g1.ilabel, g2.ilabel), (g1.olabel, g2.olabel),
                 (g1.node_graph, g2.node_graph)):
        if not torch.equal(a, b.to(device)):
            return False
    for a, b in ((g1.weights, g2.weights), (g1.start_weights, g2.start_weights),
                 (g1.final_weights, g2.final_weights)):
        b = b.detach().to(device=device, dtype=a.dtype)
        if not bool(torch.isclose(a.detach(), b, rtol=tol, atol=tol).all()):
            return False
    return True


def _check_tolerance(tol: object) -> None:
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(f"tol must be a number, not {type(tol).__name__}")
    if not tol >= 0:
        raise ArgumentValueError(f"tol is {tol}; a tolerance is a number >= 0")


def _weighted_strings(g: Graph, max_paths: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Enumerate the successful paths of an acyclic graph, one path length at a time.

    Returns, per path, its graph id ``[P]``, input and output labels ``[P, L]`` with the
    epsilons moved to the end (so equal strings give equal rows), and its score ``[P]``;
    all detached.
    """
    n, device = g.num_nodes, g.device
    topological_order(g)  # raises CyclicGraphError: a cycle has infinitely many paths
    order, offsets = group_arcs(g.src, n)
    out_degree = offsets[1:] - offsets[:-1]
    start, final, weights = g.start_weights.detach(), g.final_weights.detach(), g.weights.detach()

    node = (start > NEG_INF).nonzero().reshape(-1)
    score, graph_id = start[node], g.node_graph[node]
    il = ol = torch.zeros(node.shape[0], 0, dtype=torch.long, device=device)
    done: list[Tuple[Tensor, ...]] = []
    found = 0
    while node.shape[0] > 0:
        accepted = final[node] > NEG_INF
        done.append((graph_id[accepted], il[accepted], ol[accepted], score[accepted] + final[node[accepted]]))
        found += int(accepted.sum())
        degree = out_degree[node]
        if found + int(degree.sum()) > max_paths:
            raise ArgumentValueError(f"graph has more than max_paths={max_paths} paths; equivalent() enumerates "
                                     "paths and is meant for small graphs")
        # Extend every partial path by each of its last node's out-arcs.
        parent = torch.arange(node.shape[0], device=device).repeat_interleave(degree)
        rank = torch.arange(parent.shape[0], device=device) - (torch.cumsum(degree, 0) - degree)[parent]
        arc = order[offsets[node][parent] + rank]
        node, score, graph_id = g.dst[arc], score[parent] + weights[arc], graph_id[parent]
        il = torch.cat([il[parent], g.ilabel[arc, None]], 1)
        ol = torch.cat([ol[parent], g.olabel[arc, None]], 1)

    width = max(len(done) - 1, 0)  # the longest path length

    def compact(labels: Tensor) -> Tensor:
        labels = torch.nn.functional.pad(labels, (0, width - labels.shape[1]))
        return labels.gather(1, torch.argsort((labels == 0).to(torch.uint8), dim=1, stable=True))

    graph_ids, ils, ols, scores = zip(*done) if done else ((graph_id,), (il,), (ol,), (score,))
    return (torch.cat(graph_ids), torch.cat([compact(x) for x in ils]), torch.cat([compact(x) for x in ols]),
            torch.cat(scores))


def equivalent(g1: Graph, g2: Graph, semiring: str | Semiring = "log", tol: float = 1e-5,
               max_paths: int = 100_000) -> bool:
    """Whether two acyclic graphs have the same weighted relation: every (input string,
    output string) pair, epsilons removed, gets the same total score (within ``tol``,
    absolute and relative) in ``semiring``; pairs with total -inf count as absent. On
    batches, graph ``i`` of one is compared with graph ``i`` of the other.

    A testing and debugging helper: it enumerates every successful path (vectorized, one
    path length at a time), so it raises :class:`CyclicGraphError` on a cycle and
    :class:`ArgumentValueError` when a graph has more than ``max_paths`` paths.
    """
    as_graph(g1, "g1")
    as_graph(g2, "g2")
    _check_tolerance(tol)
    max_paths = as_integer(max_paths, "max_paths", ArgumentTypeError)
    if max_paths < 0:
        raise ArgumentValueError(f"max_paths is {max_paths}; it is a number of paths, >= 0")
    ring = get_semiring(semiring)
    if g1.num_graphs != g2.num_graphs:
        return False
    first = _weighted_strings(g1, max_paths)
    second = _weighted_strings(g2.to(g1.device, g1.dtype), max_paths)
    width = max(first[1].shape[1], second[1].shape[1])

    def keys(graph_id: Tensor, il: Tensor, ol: Tensor) -> Tensor:
        pad = (0, width - il.shape[1])
        return torch.cat([graph_id[:, None], torch.nn.functional.pad(il, pad), torch.nn.functional.pad(ol, pad)], 1)

    all_keys = torch.cat([keys(*first[:3]), keys(*second[:3])])
    if all_keys.shape[0] == 0:
        return True
    distinct, which = torch.unique(all_keys, dim=0, return_inverse=True)
    split = first[0].shape[0]
    total1 = ring.segment_plus(first[3], which[:split], distinct.shape[0])
    total2 = ring.segment_plus(second[3], which[split:], distinct.shape[0])
    return bool(torch.isclose(total1, total2, rtol=tol, atol=tol).all())


# ---------------------------------------------------------------------- failure (phi) arcs
def failure_structure(g: Graph, phi: object, what: str) -> Tuple[int, np.ndarray]:
    """The failure label (checked) and each node's failure arc (an arc id, or -1) of a graph
    whose arcs reading ``phi`` are failure arcs: at most one per node, writing nothing (``phi``
    or epsilon), no cycle of them. ``what`` names the graph in the errors."""
    phi = as_integer(phi, "phi")
    if phi == EPSILON:
        raise LabelError(f"phi = {EPSILON} is epsilon; failure arcs need a label of their own")
    arcs = (g.ilabel == phi).nonzero().reshape(-1).cpu().numpy()
    olabel = g.olabel.cpu().numpy()[arcs]
    bad = np.flatnonzero((olabel != phi) & (olabel != EPSILON))
    if bad.shape[0]:
        raise LabelError(f"{what}'s failure arc {int(arcs[bad[0]])} writes {int(olabel[bad[0]])}: a failure arc "
                         f"writes nothing (output label {phi} or epsilon)")
    nodes = g.src.cpu().numpy()[arcs]
    unique, counts = np.unique(nodes, return_counts=True)
    if (counts > 1).any():
        raise InvalidGraphError(f"{what}'s node {int(unique[counts > 1][0])} has two failure arcs (label {phi}); "
                                "a node has at most one")
    failure_arc = np.full(g.num_nodes, -1, np.int64)
    failure_arc[nodes] = arcs
    # A cycle of failure arcs would never end: pointer doubling finds one in log2(N) steps.
    jump = np.full(g.num_nodes, -1, np.int64)
    jump[nodes] = g.dst.cpu().numpy()[arcs]
    for _ in range(max(1, int(np.ceil(np.log2(g.num_nodes + 1)))) + 1):
        jump = np.where(jump >= 0, jump[np.maximum(jump, 0)], -1)
    if (jump >= 0).any():
        raise InvalidGraphError(f"{what}'s failure arcs (label {phi}) form a cycle through node "
                                f"{int(np.flatnonzero(jump >= 0)[0])}: a failure chain must end")
    return phi, failure_arc


def final_through_failures(g: Graph, failure_arc: np.ndarray) -> Tensor:
    """``g``'s final weights through its failure arcs: a node that does not accept takes its
    failure arc's weight plus the final weight where the chain leads (differentiable)."""
    device = g.device
    node = torch.arange(g.num_nodes, device=device)
    chain_weight = torch.zeros_like(g.final_weights)
    failure = torch.from_numpy(failure_arc).to(device)
    while True:
        moving = (g.final_weights.index_select(0, node) == NEG_INF) & (failure.index_select(0, node) >= 0)
        if not bool(moving.any()):
            break
        arc = failure.index_select(0, node).clamp(min=0)
        chain_weight = chain_weight + torch.where(moving, gather(g.weights, arc), torch.zeros_like(chain_weight))
        node = torch.where(moving, g.dst.index_select(0, arc), node)
    return chain_weight + g.final_weights.index_select(0, node)
