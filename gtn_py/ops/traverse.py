"""Shared traversal primitives: arcs grouped by node (CSR) and topological order.

Sequential graph walks that cannot be vectorized run as numba-compiled kernels on CPU
copies of the (integer) structure; weights never leave their device.
"""

from __future__ import annotations

from typing import Tuple

import numba
import numpy as np
import torch
from torch import Tensor

from ..errors import CyclicGraphError
from ..graph import NEG_INF, Graph, as_graph


def group_arcs(nodes: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    """Group arc indices by ``nodes`` (an arc's src or dst): returns ``(order, offsets)`` where
    ``order[offsets[n]:offsets[n+1]]`` are the arcs of node ``n`` (stable, original order kept)."""
    order = torch.argsort(nodes, stable=True)
    counts = torch.bincount(nodes, minlength=num_nodes)
    offsets = torch.zeros(num_nodes + 1, dtype=torch.long, device=nodes.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return order, offsets


@numba.njit(cache=True, nogil=True)
def csr_arcs(num_nodes: int, nodes: np.ndarray):  # pragma: no cover - jitted
    """:func:`group_arcs` for numba kernels (a linear counting sort): ``(order, offsets)``."""
    counts = np.zeros(num_nodes + 1, np.int64)
    for a in range(nodes.shape[0]):
        counts[nodes[a] + 1] += 1
    offsets = np.cumsum(counts)
    order = np.empty(nodes.shape[0], np.int64)
    fill = offsets[:-1].copy()
    for a in range(nodes.shape[0]):
        order[fill[nodes[a]]] = a
        fill[nodes[a]] += 1
    return order, offsets


@numba.njit(cache=True, nogil=True)
def _kahn(num_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:  # pragma: no cover - jitted
    indegree = np.zeros(num_nodes, np.int64)
    for a in range(src.shape[0]):
        indegree[dst[a]] += 1
    out_arcs, offsets = csr_arcs(num_nodes, src)
    order = np.empty(num_nodes, np.int64)
    head = 0
    tail = 0
    for n in range(num_nodes):
        if indegree[n] == 0:
            order[tail] = n
            tail += 1
    while head < tail:
        n = order[head]
        head += 1
        for k in range(offsets[n], offsets[n + 1]):
            m = dst[out_arcs[k]]
            indegree[m] -= 1
            if indegree[m] == 0:
                order[tail] = m
                tail += 1
    return order[:tail]


@numba.njit(cache=True, nogil=True)
def reachable(tails: np.ndarray, heads: np.ndarray, seeds: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Mask of the nodes reachable from the ``seeds`` mask along arcs ``tails -> heads``."""
    out_arcs, offsets = csr_arcs(seeds.shape[0], tails)
    reached = seeds.copy()
    stack = np.empty(seeds.shape[0], np.int64)  # each node is pushed at most once
    top = 0
    for n in np.flatnonzero(seeds):
        stack[top] = n
        top += 1
    while top > 0:
        top -= 1
        node = stack[top]
        for k in range(offsets[node], offsets[node + 1]):
            m = heads[out_arcs[k]]
            if not reached[m]:
                reached[m] = True
                stack[top] = m
                top += 1
    return reached


def useful_nodes(g: Graph) -> np.ndarray:
    """Mask (numpy, host) of the nodes on some successful path: reachable from a start node
    and reaching an accept node."""
    host = lambda t: t.detach().cpu().numpy()
    src, dst = host(g.src), host(g.dst)
    return reachable(src, dst, host(g.start_weights > NEG_INF)) & reachable(dst, src, host(g.final_weights > NEG_INF))


def topological_order(g: Graph) -> Tensor:
    """Node ids in a topological order (every arc goes from an earlier to a later node).

    Raises :class:`CyclicGraphError` (naming a node on a cycle) if the graph has a cycle.
    The result is on the graph's device.
    """
    as_graph(g)
    src = g.src.detach().cpu().numpy()
    dst = g.dst.detach().cpu().numpy()
    order = _kahn(g.num_nodes, src, dst)
    if order.shape[0] < g.num_nodes:
        placed = np.zeros(g.num_nodes, dtype=bool)
        placed[order] = True
        stuck = int(np.flatnonzero(~placed)[0])
        raise CyclicGraphError(f"graph has a cycle (node {stuck} is on or after one); "
                               "this operation needs an acyclic graph")
    return torch.from_numpy(order).to(g.device)


def is_acyclic(g: Graph) -> bool:
    """Whether the graph has no cycle (a self-loop is a cycle)."""
    as_graph(g)
    try:
        topological_order(g)
    except CyclicGraphError:
        return False
    return True


@numba.njit(cache=True, nogil=True)
def node_depths(num_nodes, tail, head):  # pragma: no cover - jitted
    """Longest-path depth of every node along arcs ``tail -> head`` (0 for nodes without
    in-arcs); all ``-1`` when a cycle keeps some node from the topological order."""
    order = _kahn(num_nodes, tail, head)
    depth = np.full(num_nodes, -1, np.int64)
    if order.shape[0] < num_nodes:
        return depth
    out_arcs, offsets = csr_arcs(num_nodes, tail)
    depth[:] = 0
    for n in order:
        for k in range(offsets[n], offsets[n + 1]):
            m = head[out_arcs[k]]
            depth[m] = max(depth[m], depth[n] + 1)
    return depth
