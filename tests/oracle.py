"""Brute-force oracles: enumerate the paths of small graphs and sum them in plain Python.

Independent of gtn_py's algorithms (it only reads the arc tensors), so tests can compare
every operation's weighted relation against it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Iterator, List, Tuple

from gtn_py import EPSILON, Graph

NEG_INF = float("-inf")
Strings = Tuple[Tuple[int, ...], Tuple[int, ...]]


def logsumexp(values: List[float]) -> float:
    values = [v for v in values if v > NEG_INF]
    if not values:
        return NEG_INF
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def plus(values: List[float], semiring: str) -> float:
    if semiring == "log":
        return logsumexp(values)
    return max(values, default=NEG_INF)


def paths(g: Graph, max_arcs: int = 12) -> Iterator[Tuple[List[int], float]]:
    """Every successful path (list of arc indices) with at most ``max_arcs`` arcs, and its score."""
    for _, path, _, score in paths_with_ends(g, max_arcs):
        yield path, score


def paths_with_ends(g: Graph, max_arcs: int = 12) -> Iterator[Tuple[int, List[int], int, float]]:
    """Every successful path with at most ``max_arcs`` arcs as (first node, arcs, last node, score)."""
    src, dst = g.src.tolist(), g.dst.tolist()
    w = g.weights.detach().tolist()
    start, final = g.start_weights.detach().tolist(), g.final_weights.detach().tolist()
    out_arcs: Dict[int, List[int]] = defaultdict(list)
    for a, s in enumerate(src):
        out_arcs[s].append(a)

    def walk(first: int, node: int, path: List[int], score: float) -> Iterator[Tuple[int, List[int], int, float]]:
        if final[node] > NEG_INF:
            yield first, list(path), node, score + final[node]
        if len(path) == max_arcs:
            return
        for a in out_arcs[node]:
            path.append(a)
            yield from walk(first, dst[a], path, score + w[a])
            path.pop()

    for node, sw in enumerate(start):
        if sw > NEG_INF:
            yield from walk(node, node, [], sw)


def strings_of(g: Graph, path: List[int]) -> Strings:
    il, ol = g.ilabel.tolist(), g.olabel.tolist()
    return (tuple(il[a] for a in path if il[a] != EPSILON), tuple(ol[a] for a in path if ol[a] != EPSILON))


def relation(g: Graph, semiring: str = "log", max_arcs: int = 12) -> Dict[Strings, float]:
    """(input string, output string) -> total score over the paths producing it (epsilons removed)."""
    groups: Dict[Strings, List[float]] = defaultdict(list)
    for path, score in paths(g, max_arcs):
        groups[strings_of(g, path)].append(score)
    return {k: plus(v, semiring) for k, v in groups.items() if plus(v, semiring) > NEG_INF}


def total(g: Graph, semiring: str = "log", max_arcs: int = 12) -> float:
    return plus([s for _, s in paths(g, max_arcs)], semiring)


def node_distances(g: Graph, semiring: str = "log", max_arcs: int = 12) -> List[float]:
    """Forward shortest distance of every node: total over partial paths from a start node to it."""
    src, dst = g.src.tolist(), g.dst.tolist()
    w = g.weights.detach().tolist()
    start = g.start_weights.detach().tolist()
    reach: Dict[int, List[float]] = defaultdict(list)

    def walk(node: int, depth: int, score: float) -> None:
        reach[node].append(score)
        if depth == max_arcs:
            return
        for a, s in enumerate(src):
            if s == node:
                walk(dst[a], depth + 1, score + w[a])

    for node, sw in enumerate(start):
        if sw > NEG_INF:
            walk(node, 0, sw)
    return [plus(reach[n], semiring) for n in range(g.num_nodes)]


def assert_relations_close(got: Dict[Strings, float], want: Dict[Strings, float], tol: float = 1e-4) -> None:
    only_got, only_want = set(got) - set(want), set(want) - set(got)
    assert not only_got and not only_want, f"string pairs differ: only got {only_got}, only want {only_want}"
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=tol, abs_tol=tol), f"{key}: got {got[key]}, want {value}"
