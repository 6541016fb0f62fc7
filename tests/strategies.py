"""Hypothesis strategies for small random graphs (epsilons, several start/accept nodes,
final and start weights, optional cycles)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from gtn_py import Graph

NEG_INF = float("-inf")


@st.composite
def graphs(draw, max_nodes: int = 5, max_arcs: int = 8, num_labels: int = 3, acyclic: bool = True,
           acceptor: bool = False, epsilons: bool = True, dtype: torch.dtype = torch.float64,
           min_nodes: int = 1, node_weights: bool = True) -> Graph:
    """A random graph with labels in ``[0, num_labels]`` (0 is epsilon unless ``epsilons=False``).

    With ``acyclic=True`` arcs go forward in a random node order, so the graph is a DAG whose
    node ids are not already topologically sorted. Cyclic graphs get non-positive cycle
    weights on average (arc weights <= 0), so tropical and log sums stay finite.
    """
    n = draw(st.integers(min_nodes, max_nodes))
    order = draw(st.permutations(list(range(n))))
    rank = {node: i for i, node in enumerate(order)}
    num_arcs = draw(st.integers(0, max_arcs))
    low = 0 if epsilons else 1
    label = st.integers(low, num_labels)
    weight = st.floats(-2.0, 1.0 if acyclic else -0.2, allow_nan=False).map(lambda x: round(x, 3))
    src, dst, il, ol, w = [], [], [], [], []
    for _ in range(num_arcs):
        a = draw(st.integers(0, n - 1))
        b = draw(st.integers(0, n - 1))
        if acyclic:
            if rank[a] == rank[b]:
                continue
            if rank[a] > rank[b]:
                a, b = b, a
        i = draw(label)
        src.append(a); dst.append(b); il.append(i)
        ol.append(i if acceptor else draw(label))
        w.append(draw(weight))
    node_weight = weight if node_weights else st.just(0.0)
    maybe = st.one_of(st.just(NEG_INF), node_weight)
    start = [draw(maybe) for _ in range(n)]
    final = [draw(maybe) for _ in range(n)]
    if draw(st.booleans()) or all(s == NEG_INF for s in start):
        start[order[0]] = draw(node_weight)
    if draw(st.booleans()) or all(f == NEG_INF for f in final):
        final[order[-1]] = draw(node_weight)
    return Graph.from_arcs(n, src, dst, il, ol, w, start_weights=start, final_weights=final, dtype=dtype)
