"""Composition and friends: ``compose``, ``intersect``, ``remove_epsilon``, ``determinize``,
``minimize``.

Each operation decides the *structure* of its result with a sequential numba kernel over
numpy copies of the integer structure (the queue of state pairs or subsets cannot be
vectorized), then builds the result's weights on the inputs' device with differentiable
torch ops through arc maps, so gradients reach both inputs' arc, start and final weights.

Composition matches ``g1``'s output labels with ``g2``'s input labels. Epsilons are
handled with OpenFst's *sequence* filter: on an epsilon run, ``g1``'s epsilon moves come
first and ``g2``'s after, so each pair of matching paths gives exactly one path of the
result (no duplicates, none missing), and the result has the states OpenFst's default
composition has. The result is trimmed: only states on a path from a start to an
accept state are kept (an empty relation gives a graph with no nodes; its weights stay
connected to autograd, so downstream scores are -inf with zero gradients).

:func:`minimize` pushes the weights of a deterministic acyclic acceptor towards its start
and merges equivalent states (Revuz's bottom-up algorithm, by hash-consing in a kernel).

On CUDA the integer structure (and, for :func:`determinize` and :func:`minimize`, a
detached float64 copy of the weights that decides which subsets or states are equal) goes
to the CPU once per call; the result's weights are computed on the inputs' device.
"""

from __future__ import annotations

import math
from typing import Literal, Tuple, overload

import numba
import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidGraphError, LabelError, WeightError
from ..graph import (
    EPSILON,
    NEG_INF,
    Graph,
    as_count,
    as_flag,
    as_graph,
    check_compatible,
    gather,
    subgraph,
    unique_rows,
)
from ..semiring import Semiring, get_semiring, kernel_plus
from .distance import path_distances
from .shortest import push
from .structure import connect, failure_structure, final_through_failures
from .traverse import node_depths, reachable, useful_nodes

# ---------------------------------------------------------------------- numba helpers


@numba.njit(cache=True, nogil=True)
def _grow(rows: np.ndarray) -> np.ndarray:  # pragma: no cover - jitted
    """The same rows in an array twice as long (geometric growth of kernel outputs)."""
    bigger = np.empty((2 * rows.shape[0] + 16, rows.shape[1]), rows.dtype)
    bigger[: rows.shape[0]] = rows
    return bigger


@numba.njit(cache=True, nogil=True)
def _hash_slot(keys: np.ndarray, key: np.int64) -> np.int64:  # pragma: no cover - jitted
    """Slot of ``key`` in an open-addressing table (``-1`` marks free slots): where it is, or
    the free slot where it would go."""
    mask = keys.shape[0] - 1
    slot = (key * np.int64(-7046029254386353131)) >> np.int64(17)
    slot &= mask
    while keys[slot] != -1 and keys[slot] != key:
        slot = (slot + 1) & mask
    return slot


@numba.njit(cache=True, nogil=True)
def _rehash(keys: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    new_keys = np.full(2 * keys.shape[0], -1, np.int64)
    new_values = np.empty(2 * keys.shape[0], np.int64)
    for i in range(keys.shape[0]):
        if keys[i] != -1:
            slot = _hash_slot(new_keys, keys[i])
            new_keys[slot] = keys[i]
            new_values[slot] = values[i]
    return new_keys, new_values


@numba.njit(cache=True, nogil=True)
def _lower_bound(labels: np.ndarray, lo: np.int64, hi: np.int64, x: np.int64) -> np.int64:  # pragma: no cover
    while lo < hi:
        mid = (lo + hi) >> 1
        if labels[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True)
def _compose_kernel(off1: np.ndarray, match1: np.ndarray, out1: np.ndarray, dst1: np.ndarray,
                    id1: np.ndarray, final1: np.ndarray,
                    off2: np.ndarray, match2: np.ndarray, out2: np.ndarray, dst2: np.ndarray,
                    id2: np.ndarray, num_nodes2: np.int64,
                    start1: np.ndarray, start2: np.ndarray, phi_out: np.ndarray):  # pragma: no cover - jitted
    """Explore the state pairs reachable from the start pairs ``(start1[i], start2[i])``.

    ``g1``'s arcs come grouped by source node (``off1``) and sorted by output label within
    a node (``match1`` = output label, ``out1`` = input label, ``dst1``, ``id1`` = original
    arc index); ``g2``'s likewise, sorted by input label. A state is ``(n1, n2, filter)``:
    filter 1 means ``g2`` has taken an epsilon move since the last match, so ``g1`` may not
    (the sequence filter).

    Failure arcs: ``phi_out[n2]`` is the sorted index of ``g2``'s failure (phi) arc out of
    ``n2``, or -1 (all -1: no failure arcs). A label of ``g1`` that no arc of ``n2`` reads
    follows the failure arcs until a node reads it (or none is left): the chain's arcs are
    recorded for the result arc's weight.

    Returns states ``[S, 3]``, arcs ``[A, 8]`` rows of ``(src, dst, ilabel, olabel, arc1, arc2,
    chain start, chain length)`` (arc index -1: the implicit epsilon self-loop of the input that
    stays put; the chain: ``g2``'s failure arcs taken before ``arc2``, in ``chains``), the
    number of start states and ``chains``.
    """
    use_phi = False
    for n in range(phi_out.shape[0]):
        if phi_out[n] >= 0:
            use_phi = True
            break
    chains = np.empty(16, np.int64)
    num_chain = 0
    states = np.empty((max(16, 2 * start1.shape[0]), 3), np.int64)
    arcs = np.empty((64, 8), np.int64)
    keys = np.full(64, -1, np.int64)
    values = np.empty(64, np.int64)
    # (sorted arc of g1 or -1, sorted arc of g2 or -1, failure chain start, chain length)
    moves = np.zeros((16, 4), np.int64)
    num_states = 0
    num_arcs = 0
    for i in range(start1.shape[0]):
        key = (start1[i] * num_nodes2 + start2[i]) * 2
        slot = _hash_slot(keys, key)
        if keys[slot] == -1:
            if 2 * (num_states + 1) > keys.shape[0]:
                keys, values = _rehash(keys, values)
                slot = _hash_slot(keys, key)
            keys[slot] = key
            values[slot] = num_states
            states[num_states, 0] = start1[i]
            states[num_states, 1] = start2[i]
            states[num_states, 2] = 0
            num_states += 1
    num_starts = num_states

    head = 0
    while head < num_states:
        q1, q2, filt = states[head, 0], states[head, 1], states[head, 2]
        b1, e1, b2, e2 = off1[q1], off1[q1 + 1], off2[q2], off2[q2 + 1]
        ne1 = b1
        while ne1 < e1 and match1[ne1] == 0:
            ne1 += 1
        ne2 = b2
        while ne2 < e2 and match2[ne2] == 0:
            ne2 += 1
        num_moves = 0
        # g1 moves on an output epsilon, g2 stays (not after a g2 epsilon move).
        if filt == 0:
            for k in range(b1, ne1):
                if num_moves == moves.shape[0]:
                    moves = _grow(moves)
                moves[num_moves, 0] = k
                moves[num_moves, 1] = -1
                moves[num_moves, 2] = 0
                moves[num_moves, 3] = 0
                num_moves += 1
        # g2 moves on an input epsilon, g1 stays; useless when g1 can only move on
        # epsilons from here and does not accept (OpenFst's pruning).
        if not (ne1 == e1 and not final1[q1]):
            for k in range(b2, ne2):
                if num_moves == moves.shape[0]:
                    moves = _grow(moves)
                moves[num_moves, 0] = -1
                moves[num_moves, 1] = k
                moves[num_moves, 2] = 0
                moves[num_moves, 3] = 0
                num_moves += 1
        # Matching labels: walk the side with fewer arcs, binary-search the other. With
        # failure arcs, walk g1 (a label g2 lacks matters) and follow g2's chain per label.
        if use_phi:
            k = ne1
            while k < e1:
                x = match1[k]
                group_end = k
                while group_end < e1 and match1[group_end] == x:
                    group_end += 1
                cur = q2
                chain_begin = num_chain
                while True:
                    cb, ce = off2[cur], off2[cur + 1]
                    j = _lower_bound(match2, cb, ce, x)
                    if j < ce and match2[j] == x:
                        while j < ce and match2[j] == x:
                            for i in range(k, group_end):
                                if num_moves == moves.shape[0]:
                                    moves = _grow(moves)
                                moves[num_moves, 0] = i
                                moves[num_moves, 1] = j
                                moves[num_moves, 2] = chain_begin
                                moves[num_moves, 3] = num_chain - chain_begin
                                num_moves += 1
                            j += 1
                        break
                    p = phi_out[cur]
                    if p < 0:
                        num_chain = chain_begin  # no match anywhere: forget the chain
                        break
                    if num_chain == chains.shape[0]:
                        chains = np.concatenate((chains, np.empty(chains.shape[0], np.int64)))
                    chains[num_chain] = id2[p]
                    num_chain += 1
                    cur = dst2[p]
                k = group_end
        walk_g1 = (e1 - ne1) <= (e2 - ne2)
        if walk_g1:
            k, end, lo, hi, walked, searched = ne1, e1, ne2, e2, match1, match2
        else:
            k, end, lo, hi, walked, searched = ne2, e2, ne1, e1, match2, match1
        if use_phi:
            end = k  # matched above
        while k < end and lo < hi:
            x = walked[k]
            group_end = k
            while group_end < end and walked[group_end] == x:
                group_end += 1
            lo = _lower_bound(searched, lo, hi, x)
            j = lo
            while j < hi and searched[j] == x:
                for i in range(k, group_end):
                    if num_moves == moves.shape[0]:
                        moves = _grow(moves)
                    moves[num_moves, 0] = i if walk_g1 else j
                    moves[num_moves, 1] = j if walk_g1 else i
                    moves[num_moves, 2] = 0
                    moves[num_moves, 3] = 0
                    num_moves += 1
                j += 1
            k = group_end

        for m in range(num_moves):
            k1, k2 = moves[m, 0], moves[m, 1]
            chain_start, chain_length = moves[m, 2], moves[m, 3]
            n1 = q1 if k1 < 0 else dst1[k1]
            n2 = q2 if k2 < 0 else dst2[k2]
            # After a g2 epsilon move g1 is blocked, unless it has no epsilons to block.
            new_filt = 1 if (k1 < 0 and ne1 > b1) else 0
            key = (n1 * num_nodes2 + n2) * 2 + new_filt
            slot = _hash_slot(keys, key)
            if keys[slot] == -1:
                if 2 * (num_states + 1) > keys.shape[0]:
                    keys, values = _rehash(keys, values)
                    slot = _hash_slot(keys, key)
                if num_states == states.shape[0]:
                    states = _grow(states)
                keys[slot] = key
                values[slot] = num_states
                states[num_states, 0] = n1
                states[num_states, 1] = n2
                states[num_states, 2] = new_filt
                num_states += 1
            if num_arcs == arcs.shape[0]:
                arcs = _grow(arcs)
            arcs[num_arcs, 0] = head
            arcs[num_arcs, 1] = values[slot]
            arcs[num_arcs, 2] = EPSILON if k1 < 0 else out1[k1]
            arcs[num_arcs, 3] = EPSILON if k2 < 0 else out2[k2]
            arcs[num_arcs, 4] = -1 if k1 < 0 else id1[k1]
            arcs[num_arcs, 5] = -1 if k2 < 0 else id2[k2]
            arcs[num_arcs, 6] = chain_start
            arcs[num_arcs, 7] = chain_length
            num_arcs += 1
        head += 1
    return states[:num_states], arcs[:num_arcs], num_starts, chains[:num_chain]


# ---------------------------------------------------------------------- Python side


def _sorted_arcs(g: Graph, by: Tensor, other: Tensor) -> Tuple[np.ndarray, ...]:
    """CPU copies of ``g``'s arcs grouped by source node and sorted by ``by`` within a node:
    ``(offsets, by, other, dst, arc ids)``. Already sorted inputs skip the sort."""
    src = g.src.detach().cpu().numpy()
    labels = by.detach().cpu().numpy()
    # Sorted by (src, label) as two keys: one combined key src * (max label + 1) + label
    # overflows int64 for labels near 2**63 / (number of nodes).
    in_order = (src[1:] > src[:-1]) | ((src[1:] == src[:-1]) & (labels[1:] >= labels[:-1]))
    if src.shape[0] > 1 and not bool(np.all(in_order)):
        order = np.lexsort((labels, src))  # stable: last key first
    else:
        order = np.arange(src.shape[0])
    offsets = np.zeros(g.num_nodes + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=g.num_nodes), out=offsets[1:])
    return (offsets, np.ascontiguousarray(labels[order]), other.detach().cpu().numpy()[order],
            g.dst.detach().cpu().numpy()[order], order.astype(np.int64))


def _start_pairs(g1: Graph, g2: Graph) -> Tuple[np.ndarray, np.ndarray]:
    """All (start node of g1, start node of g2) pairs; of the same graph when both are batches."""
    s1 = g1.start_nodes.cpu().numpy()
    s2 = g2.start_nodes.cpu().numpy()
    i1 = np.repeat(np.arange(s1.shape[0]), s2.shape[0])
    i2 = np.tile(np.arange(s2.shape[0]), s1.shape[0])
    if g1.is_batch and g2.is_batch:
        same = g1.node_graph.cpu().numpy()[s1[i1]] == g2.node_graph.cpu().numpy()[s2[i2]]
        i1, i2 = i1[same], i2[same]
    return s1[i1].astype(np.int64), s2[i2].astype(np.int64)


def _check_batches(g1: Graph, g2: Graph) -> None:
    for name, g in (("g1", g1), ("g2", g2)):
        if not isinstance(g, Graph):
            raise InvalidGraphError(f"compose needs two graphs, but {name} is a {type(g).__name__}")
    check_compatible(g1, g2)
    if g1.is_batch and g2.is_batch and g1.num_graphs != g2.num_graphs:
        raise InvalidGraphError(f"cannot compose a batch of {g1.num_graphs} graphs with a batch of "
                                f"{g2.num_graphs}: batches compose pairwise (or with a single graph)")


def _failure_arcs(g1: Graph, g2: Graph, phi: int | None, id2: np.ndarray) -> Tuple[np.ndarray, Tensor]:
    """For :func:`compose` with failure arcs: ``phi_out`` (each ``g2`` node's failure arc, as a
    position in ``g2``'s sorted arcs ``id2``, or -1; all -1 without ``phi``) and ``g2``'s final
    weights through its failure arcs."""
    phi_out = np.full(g2.num_nodes, -1, np.int64)
    if phi is None:
        return phi_out, g2.final_weights
    phi, failure_arc = failure_structure(g2, phi, "g2")
    writes = (g1.olabel == phi).nonzero()
    if writes.numel():
        a = int(writes[0, 0])
        raise LabelError(f"g1's arc {a} writes the failure label {phi}: g1's output labels are matched, and a "
                         "failure arc is taken only when no label matches")
    position = np.empty(id2.shape[0], np.int64)
    position[id2] = np.arange(id2.shape[0])
    has = failure_arc >= 0
    phi_out[has] = position[failure_arc[has]]
    return phi_out, final_through_failures(g2, failure_arc)


def remove_failure_arcs(g: Graph, phi: int) -> Graph:
    """An equivalent graph without failure arcs (label ``phi``, the semantics of
    :func:`compose`'s ``phi``): each node gets, for every label its own arcs lack, the arcs of
    the first node of its failure chain that reads it, weighted by the failure arcs taken plus
    that arc; a node that does not accept accepts through its chain. For dense intersection
    (``intersect_dense``, ``dense_score``, ``viterbi_align``) with a back-off model, and for
    any operation without failure semantics. The expansion adds up to (nodes x labels) arcs;
    differentiable in ``g``'s weights."""
    g = as_graph(g)
    phi, failure_arc = failure_structure(g, phi, "g")
    device = g.device
    src, dst, ilabel = (t.cpu().numpy() for t in (g.src, g.dst, g.ilabel))
    ordinary = np.flatnonzero(ilabel != phi)
    width = int(ilabel.max()) + 1 if ilabel.shape[0] else 1
    # Arcs of each node, by node: CSR over the ordinary arcs.
    order = ordinary[np.argsort(src[ordinary], kind="stable")]
    offsets = np.zeros(g.num_nodes + 1, np.int64)
    np.cumsum(np.bincount(src[order], minlength=g.num_nodes), out=offsets[1:])
    covered = np.unique(src[ordinary] * width + ilabel[ordinary])  # (node, label) pairs with an arc
    origin = np.flatnonzero(failure_arc >= 0)        # nodes still following their chain
    taken = failure_arc[origin]                      # the failure arc taken at this depth
    chain_weight = g.weights.index_select(0, torch.from_numpy(taken).to(device))
    new_src, new_arc, new_weight = [], [], []
    while origin.shape[0]:
        at = dst[taken]                              # the node reached
        counts = offsets[at + 1] - offsets[at]
        owner = np.repeat(np.arange(origin.shape[0]), counts)
        arc = order[np.repeat(offsets[at], counts) + np.arange(owner.shape[0])
                    - np.repeat(np.cumsum(counts) - counts, counts)]
        keys = origin[owner] * width + ilabel[arc]
        fresh = ~np.isin(keys, covered)
        new_src.append(origin[owner[fresh]])
        new_arc.append(arc[fresh])
        new_weight.append(chain_weight.index_select(0, torch.from_numpy(owner[fresh]).to(device))
                          + g.weights.index_select(0, torch.from_numpy(arc[fresh]).to(device)))
        covered = np.union1d(covered, keys)          # labels read here are matched here
        going = failure_arc[at] >= 0
        origin, taken = origin[going], failure_arc[at[going]]
        chain_weight = chain_weight.index_select(0, torch.from_numpy(np.flatnonzero(going)).to(device)) \
            + g.weights.index_select(0, torch.from_numpy(taken).to(device))
    added_arc = np.concatenate(new_arc) if new_arc else np.zeros(0, np.int64)
    keep = torch.from_numpy(np.concatenate([ordinary, added_arc])).to(device)
    sources = torch.from_numpy(np.concatenate([src[ordinary]] + new_src)).to(device)
    weights = torch.cat([g.weights.index_select(0, torch.from_numpy(ordinary).to(device))] + new_weight)
    return Graph.from_tensors(sources, g.dst.index_select(0, keep), g.ilabel.index_select(0, keep),
                              g.olabel.index_select(0, keep), weights, g.start_weights,
                              final_through_failures(g, failure_arc),
                              node_graph=g.node_graph if g.is_batch else None, num_graphs=g.num_graphs)


@overload
def compose(g1: Graph, g2: Graph, phi: int | None = None, return_arc_map: Literal[False] = False) -> Graph: ...
@overload
def compose(g1: Graph, g2: Graph, phi: int | None = None, *,
            return_arc_map: Literal[True]) -> Tuple[Graph, Tensor]: ...
def compose(g1: Graph, g2: Graph, phi: int | None = None,
            return_arc_map: bool = False) -> Graph | Tuple[Graph, Tensor]:
    """The composition ``g1 o g2``: pairs ``(x, z)`` such that ``g1`` maps ``x`` to some ``y``
    and ``g2`` maps ``y`` to ``z``, with score ``g1(x, y) + g2(y, z)`` summed over ``y`` (in
    any semiring: every pair of matching paths gives exactly one path of the result).

    ``phi``: the label of ``g2``'s *failure* arcs (OpenFst's phi matcher on ``g2``'s input, the
    backoff arcs of an n-gram language model, see :func:`gtn_py.io.read_arpa`). At a node of
    ``g2``, a label of ``g1`` that no arc reads follows the node's failure arc (adding its
    weight, reading nothing) and is matched at the next node, and so on; a label that an arc
    reads never takes the failure arc. A node that does not accept accepts through its failure
    chain. At most one failure arc per node, no cycle of them; ``g1`` may not write ``phi``.

    Batches compose pairwise (same number of graphs), or a batch with a single graph (that
    graph is used for every graph of the batch); all pairs go through one kernel call.
    Arc-sorted inputs (``g1`` by output label, ``g2`` by input label, see
    :func:`gtn_py.ops.structure.arcsort`)
    skip an internal sort. Differentiable in both inputs' arc, start and final weights.

    ``return_arc_map``: also return the arc map ``[E, 2]``: for each arc of the result, the arc
    of ``g1`` and the arc of ``g2`` it pairs (-1 where one side stays put on an epsilon), so
    that its weight is ``gather(g1.weights, map[:, 0]) + gather(g2.weights, map[:, 1])`` (plus,
    with ``phi``, the failure arcs taken before the match) and per-arc attributes of either
    input follow with :func:`~gtn_py.graph.gather`.
    """
    with_map = as_flag(return_arc_map, "return_arc_map")
    _check_batches(g1, g2)
    off1, match1, out1, dst1, id1 = _sorted_arcs(g1, g1.olabel, g1.ilabel)
    off2, match2, out2, dst2, id2 = _sorted_arcs(g2, g2.ilabel, g2.olabel)
    phi_out, final_weights2 = _failure_arcs(g1, g2, phi, id2)
    final1 = (g1.final_weights > NEG_INF).cpu().numpy()
    start1, start2 = _start_pairs(g1, g2)
    states, arcs, num_starts, chains = _compose_kernel(
        off1, match1, out1, dst1, id1, final1, off2, match2, out2, dst2, id2,
        np.int64(g2.num_nodes), start1, start2, phi_out)

    # Trim: keep the states that reach an accept state (all are reachable by construction).
    final2 = (final_weights2 > NEG_INF).cpu().numpy()
    accepts = final1[states[:, 0]] & final2[states[:, 1]]
    keep = reachable(np.ascontiguousarray(arcs[:, 1]), np.ascontiguousarray(arcs[:, 0]), accepts)
    graph_of_state = _graph_of(g1, g2, states[:, 0], states[:, 1])
    kept = np.flatnonzero(keep)
    arcs = arcs[keep[arcs[:, 0]] & keep[arcs[:, 1]]]  # in order of their source state
    if g1.is_batch or g2.is_batch:
        # Keep each graph's states together (as Graph.batch does), in discovery order within.
        kept = kept[np.argsort(graph_of_state[kept], kind="stable")]
    renumber = np.full(states.shape[0], -1, np.int64)
    renumber[kept] = np.arange(kept.shape[0])
    if g1.is_batch or g2.is_batch:
        arcs = arcs[np.argsort(renumber[arcs[:, 0]], kind="stable")]
    is_start = np.zeros(states.shape[0], bool)
    is_start[:num_starts] = True

    device = g1.device
    to_device = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    node1, node2 = to_device(states[kept, 0]), to_device(states[kept, 1])
    map1, map2 = to_device(arcs[:, 4]), to_device(arcs[:, 5])
    weights = gather(g1.weights, map1) + gather(g2.weights, map2)
    if chains.shape[0]:  # add the failure arcs each result arc took before its match
        lengths = arcs[:, 7]
        owner = np.repeat(np.arange(arcs.shape[0]), lengths)
        within = np.arange(owner.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        taken = to_device(chains[np.repeat(arcs[:, 6], lengths) + within])
        weights = weights.index_add(0, to_device(owner), g2.weights.index_select(0, taken))
    start = g1.start_weights.index_select(0, node1) + g2.start_weights.index_select(0, node2)
    start = torch.where(to_device(is_start[kept]), start, start.new_full((), NEG_INF))
    final = g1.final_weights.index_select(0, node1) + final_weights2.index_select(0, node2)
    batch = g1.is_batch or g2.is_batch
    out = Graph.from_tensors(
        to_device(renumber[arcs[:, 0]]), to_device(renumber[arcs[:, 1]]), to_device(arcs[:, 2]),
        to_device(arcs[:, 3]), weights, start, final,
        node_graph=to_device(graph_of_state[kept]) if batch else None,
        num_graphs=max(g1.num_graphs, g2.num_graphs))
    return (out, torch.stack([map1, map2], 1)) if with_map else out


def _graph_of(g1: Graph, g2: Graph, node1: np.ndarray, node2: np.ndarray) -> np.ndarray:
    """Graph of the batch that each state pair belongs to."""
    if g1.is_batch:
        return g1.node_graph.cpu().numpy()[node1]
    if g2.is_batch:
        return g2.node_graph.cpu().numpy()[node2]
    return np.zeros(node1.shape[0], np.int64)


@overload
def intersect(g1: Graph, g2: Graph, phi: int | None = None, return_arc_map: Literal[False] = False) -> Graph: ...
@overload
def intersect(g1: Graph, g2: Graph, phi: int | None = None, *,
              return_arc_map: Literal[True]) -> Tuple[Graph, Tensor]: ...
def intersect(g1: Graph, g2: Graph, phi: int | None = None,
              return_arc_map: bool = False) -> Graph | Tuple[Graph, Tensor]:
    """The intersection of two acceptors: the strings both accept, with summed scores (``phi``:
    the label of ``g2``'s failure arcs; ``return_arc_map``: also the arc map ``[E, 2]``; see
    :func:`compose`)."""
    for name, g in (("g1", as_graph(g1, "g1")), ("g2", as_graph(g2, "g2"))):
        if not g.is_acceptor:
            bad = int((g.ilabel != g.olabel).nonzero()[0, 0])
            raise InvalidGraphError(
                f"intersect needs acceptors, but {name}'s arc {bad} has ilabel {int(g.ilabel[bad])} "
                f"!= olabel {int(g.olabel[bad])}; use compose for transducers")
    if as_flag(return_arc_map, "return_arc_map"):
        return compose(g1, g2, phi, return_arc_map=True)
    return compose(g1, g2, phi)


# ---------------------------------------------------------------------- epsilon removal
@numba.njit(cache=True, nogil=True)
def _epsilon_closure(num_nodes: int, src: np.ndarray, dst: np.ndarray, is_eps: np.ndarray):  # pragma: no cover
    """The epsilon closure as a *pair graph*: a node ``(p, q)`` for every ``q`` reachable from
    ``p`` by epsilon arcs (``p`` included), and an arc ``(p, q) -> (p, r)`` for every epsilon
    arc ``q -> r`` (its index in ``lifted``). Distances from the ``(p, p)`` nodes in the
    pair graph are the closure distances ``d(p, q)``. Also returns the new arcs: for every
    pair ``(p, q)`` and non-epsilon arc ``a`` out of ``q``, ``(p, pair, a)``."""
    counts = np.zeros(num_nodes + 1, np.int64)
    for a in range(src.shape[0]):
        counts[src[a] + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    out_arcs = np.empty(src.shape[0], np.int64)
    for a in range(src.shape[0]):
        out_arcs[fill[src[a]]] = a
        fill[src[a]] += 1
    pairs = np.empty((max(16, num_nodes), 2), np.int64)
    lifted = np.empty((16, 3), np.int64)   # (pair, pair, epsilon arc)
    new_arcs = np.empty((16, 3), np.int64)  # (p, pair, non-epsilon arc)
    pair_of = np.full(num_nodes, -1, np.int64)
    owner = np.full(num_nodes, -1, np.int64)
    num_pairs = num_lifted = num_new = 0
    for p in range(num_nodes):
        first = num_pairs
        if num_pairs == pairs.shape[0]:
            pairs = _grow(pairs)
        pairs[num_pairs, 0] = p
        pairs[num_pairs, 1] = p
        owner[p] = p
        pair_of[p] = num_pairs
        num_pairs += 1
        head = first
        while head < num_pairs:  # the pairs of p double as the search queue
            q = pairs[head, 1]
            for k in range(offsets[q], offsets[q + 1]):
                a = out_arcs[k]
                if not is_eps[a]:
                    if num_new == new_arcs.shape[0]:
                        new_arcs = _grow(new_arcs)
                    new_arcs[num_new, 0] = p
                    new_arcs[num_new, 1] = head
                    new_arcs[num_new, 2] = a
                    num_new += 1
                    continue
                r = dst[a]
                if owner[r] != p:
                    if num_pairs == pairs.shape[0]:
                        pairs = _grow(pairs)
                    pairs[num_pairs, 0] = p
                    pairs[num_pairs, 1] = r
                    owner[r] = p
                    pair_of[r] = num_pairs
                    num_pairs += 1
                if num_lifted == lifted.shape[0]:
                    lifted = _grow(lifted)
                lifted[num_lifted, 0] = head
                lifted[num_lifted, 1] = pair_of[r]
                lifted[num_lifted, 2] = a
                num_lifted += 1
            head += 1
    return pairs[:num_pairs], lifted[:num_lifted], new_arcs[:num_new]


@overload
def remove_epsilon(g: Graph, semiring: str | Semiring = "log", return_arc_map: Literal[False] = False) -> Graph: ...
@overload
def remove_epsilon(g: Graph, semiring: str | Semiring = "log", *,
                   return_arc_map: Literal[True]) -> Tuple[Graph, Tensor]: ...
def remove_epsilon(g: Graph, semiring: str | Semiring = "log",
                   return_arc_map: bool = False) -> Graph | Tuple[Graph, Tensor]:
    """An equivalent graph without epsilon arcs (arcs whose input and output labels are both
    epsilon; on an acceptor, the label-0 arcs), preserving the weighted relation in
    ``semiring``.

    Each node ``p`` gets, for every node ``q`` of its epsilon closure and every non-epsilon
    arc ``q -> r``, an arc ``p -> r`` weighted ``d(p, q) + w``, and final weight
    ``(+)_q d(p, q) + final(q)``, where ``d`` is the closure distance (total over the
    epsilon paths from ``p`` to ``q``). Closure distances are computed over a graph of
    closure pairs, differentiably (a closed-form backward when the closure is acyclic), so
    the result is differentiable in ``g``'s weights. Epsilon cycles are allowed when their
    sum converges (tropical: no cycle with a positive score; log: the geometric series
    converges); otherwise :class:`DivergenceError`. Nodes left useless (entered only by
    epsilon arcs) are dropped.

    ``return_arc_map``: also return the arc map ``[E]``: for each arc of the result, the
    non-epsilon arc of ``g`` it continues with (whose labels it carries; its weight adds the
    closure distance before it), so that per-arc attributes follow: ``values[arc_map]``.
    """
    with_map = as_flag(return_arc_map, "return_arc_map")
    sr = get_semiring(semiring)
    g, useful_arcs = connect(g, return_arc_map=True)  # useless epsilon cycles must not raise (or cost anything)
    is_eps = (g.ilabel == EPSILON) & (g.olabel == EPSILON)
    pairs, lifted, new_arcs = _epsilon_closure(g.num_nodes, g.src.cpu().numpy(), g.dst.cpu().numpy(),
                                               is_eps.cpu().numpy())
    device = g.device
    to_device = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    lifted_d, new_d, pairs_d = to_device(lifted), to_device(new_arcs), to_device(pairs)
    diagonal = pairs_d[:, 0] == pairs_d[:, 1]
    init = torch.where(diagonal, g.weights.new_zeros(()), g.weights.new_full((), NEG_INF))
    closure = path_distances(pairs.shape[0], lifted_d[:, 0], lifted_d[:, 1],
                              gather(g.weights, lifted_d[:, 2]), init, sr)
    arc = new_d[:, 2]
    weights = closure[new_d[:, 1]] + gather(g.weights, arc)
    final = sr.segment_plus(closure + g.final_weights[pairs_d[:, 1]], pairs_d[:, 0], g.num_nodes)
    out = Graph.from_tensors(new_d[:, 0], g.dst[arc], g.ilabel[arc], g.olabel[arc], weights,
                              g.start_weights, final, node_graph=g.node_graph if g.is_batch else None,
                              num_graphs=g.num_graphs)
    out, kept = connect(out, return_arc_map=True)
    return (out, useful_arcs[arc[kept]]) if with_map else out


# ---------------------------------------------------------------------- determinization
RESIDUAL_QUANTUM = 1e-7  # residuals closer than this may share a subset state


@numba.njit(cache=True, nogil=True)
def _subset_hash(nodes: np.ndarray, levels: np.ndarray) -> np.int64:  # pragma: no cover - jitted
    h = np.int64(nodes.shape[0])
    for i in range(nodes.shape[0]):
        h = h * np.int64(1000003) ^ nodes[i]
        h = h * np.int64(1000003) ^ levels[i]
    return h & np.int64(0x3FFFFFFFFFFFFFFF)


@numba.njit(cache=True, nogil=True)
def _insert_chained(keys, values, same_hash, slot, h, item):  # pragma: no cover - jitted
    """Insert ``item`` (numbered from 0, so ``item + 1`` are in) under hash ``h``, whose lookup
    ended at ``slot``. A new hash takes the slot (the table doubles first at half load); a
    known one keeps its slot, which now points at ``item``, and ``same_hash[item]`` at the
    items inserted under it before. Returns the table (a new one after growing)."""
    if keys[slot] == -1:
        if 2 * (item + 1) > keys.shape[0]:
            keys, values = _rehash(keys, values)
            slot = _hash_slot(keys, h)
        keys[slot] = h
        same_hash[item] = -1
    else:
        same_hash[item] = values[slot]
    values[slot] = item
    return keys, values


@numba.njit(cache=True, nogil=True)
def _determinize_kernel(off: np.ndarray, label: np.ndarray, dst: np.ndarray, arc_id: np.ndarray,
                        weights: np.ndarray, start_nodes: np.ndarray, start_res: np.ndarray,
                        start_off: np.ndarray, kernel_id: int, beta: float,
                        max_states: np.int64):  # pragma: no cover - jitted
    """Weighted subset construction on detached (float64) weights.

    A state is a subset of ``(node, residual)`` entries, sorted by node; ``start_off`` cuts
    the initial entries into one start subset per graph. Returns the entries (node, residual,
    offsets per state), each state's BFS depth, the arcs ``(src, dst, label, creates dst)`` and
    their weights, and the bookkeeping to recompute weights differentiably: slots ``(arc, entry of dst)``
    and contributions ``(slot, parent entry, input arc)``; and whether it finished (False: it
    stopped on reaching ``max_states`` states, as it would never end on a cyclic graph that is
    not determinizable).
    """
    ent_node = np.empty(max(16, start_nodes.shape[0]), np.int64)
    ent_res = np.empty(max(16, start_nodes.shape[0]), np.float64)
    ent_level = np.empty(max(16, start_nodes.shape[0]), np.int64)
    state_off = np.zeros(16, np.int64)
    depth = np.zeros(16, np.int64)
    arcs = np.empty((16, 4), np.int64)
    arc_total = np.empty(16, np.float64)  # each arc's weight (the detached one)
    slots = np.empty((16, 2), np.int64)
    contrib = np.empty((16, 3), np.int64)
    keys = np.full(64, -1, np.int64)      # hash table: subset hash -> first state with it
    values = np.empty(64, np.int64)
    same_hash = np.full(16, -1, np.int64)  # next state with the same hash
    num_states = num_entries = num_arcs = num_slots = num_contrib = 0
    moves = np.empty((16, 4), np.int64)    # (label, dst node, parent entry, input arc)
    for s in range(start_off.shape[0] - 1):
        # One start subset per graph (subsets of different graphs never meet: their nodes
        # differ); in the table, so that a cycle can come back to it.
        first = num_entries
        for i in range(start_off[s], start_off[s + 1]):
            if num_entries == ent_node.shape[0]:
                ent_node = _grow(ent_node.reshape(-1, 1)).reshape(-1)
                ent_res = _grow(ent_res.reshape(-1, 1)).reshape(-1)
                ent_level = _grow(ent_level.reshape(-1, 1)).reshape(-1)
            ent_node[num_entries] = start_nodes[i]
            ent_res[num_entries] = start_res[i]
            ent_level[num_entries] = np.int64(np.round(start_res[i] / RESIDUAL_QUANTUM))
            num_entries += 1
        if num_states + 1 >= state_off.shape[0]:
            state_off = _grow(state_off.reshape(-1, 1)).reshape(-1)
            depth = _grow(depth.reshape(-1, 1)).reshape(-1)
            same_hash = _grow(same_hash.reshape(-1, 1)).reshape(-1)
        depth[num_states] = 0
        same_hash[num_states] = -1
        h = _subset_hash(ent_node[first:num_entries], ent_level[first:num_entries])
        keys, values = _insert_chained(keys, values, same_hash, _hash_slot(keys, h), h, num_states)
        num_states += 1
        state_off[num_states] = num_entries
    head = 0
    while head < num_states:
        if num_states > max_states:
            break
        num_moves = 0
        for e in range(state_off[head], state_off[head + 1]):
            q = ent_node[e]
            for k in range(off[q], off[q + 1]):
                if num_moves == moves.shape[0]:
                    moves = _grow(moves)
                moves[num_moves, 0] = label[k]
                moves[num_moves, 1] = dst[k]
                moves[num_moves, 2] = e
                moves[num_moves, 3] = arc_id[k]
                num_moves += 1
        order = np.argsort(moves[:num_moves, 0] * (off.shape[0] + 1) + moves[:num_moves, 1], kind="mergesort")
        i = 0
        while i < num_moves:
            x = moves[order[i], 0]
            group_end = i
            while group_end < num_moves and moves[order[group_end], 0] == x:
                group_end += 1
            # The candidate subset: one entry per destination node, residual = v - W.
            cand_nodes = np.empty(group_end - i, np.int64)
            cand_v = np.empty(group_end - i, np.float64)
            n = 0
            for j in range(i, group_end):
                m = order[j]
                value = ent_res[moves[m, 2]] + weights[moves[m, 3]]
                if n > 0 and cand_nodes[n - 1] == moves[m, 1]:
                    cand_v[n - 1] = kernel_plus(kernel_id, beta, cand_v[n - 1], value)
                else:
                    cand_nodes[n] = moves[m, 1]
                    cand_v[n] = value
                    n += 1
            total = cand_v[0]
            for j in range(1, n):
                total = kernel_plus(kernel_id, beta, total, cand_v[j])
            cand_nodes = cand_nodes[:n]
            cand_res = cand_v[:n] - total
            cand_level = np.empty(n, np.int64)
            for j in range(n):
                cand_level[j] = np.int64(np.round(cand_res[j] / RESIDUAL_QUANTUM))
            h = _subset_hash(cand_nodes, cand_level)
            slot = _hash_slot(keys, h)
            target = -1
            if keys[slot] != -1:
                t = values[slot]
                while t != -1 and target == -1:
                    b, e_ = state_off[t], state_off[t + 1]
                    if e_ - b == n and np.all(ent_node[b:e_] == cand_nodes) and np.all(ent_level[b:e_] == cand_level):
                        target = t
                    t = same_hash[t]
            creates = target == -1
            if creates:
                target = num_states
                if num_states + 1 >= state_off.shape[0]:
                    state_off = _grow(state_off.reshape(-1, 1)).reshape(-1)
                    depth = _grow(depth.reshape(-1, 1)).reshape(-1)
                    same_hash = _grow(same_hash.reshape(-1, 1)).reshape(-1)
                while num_entries + n > ent_node.shape[0]:
                    ent_node = _grow(ent_node.reshape(-1, 1)).reshape(-1)
                    ent_res = _grow(ent_res.reshape(-1, 1)).reshape(-1)
                    ent_level = _grow(ent_level.reshape(-1, 1)).reshape(-1)
                ent_node[num_entries:num_entries + n] = cand_nodes
                ent_res[num_entries:num_entries + n] = cand_res
                ent_level[num_entries:num_entries + n] = cand_level
                num_entries += n
                depth[num_states] = depth[head] + 1
                keys, values = _insert_chained(keys, values, same_hash, slot, h, num_states)
                num_states += 1
                state_off[num_states] = num_entries
            if num_arcs == arcs.shape[0]:
                arcs = _grow(arcs)
                arc_total = _grow(arc_total.reshape(-1, 1)).reshape(-1)
            arc_total[num_arcs] = total
            arcs[num_arcs, 0] = head
            arcs[num_arcs, 1] = target
            arcs[num_arcs, 2] = x
            arcs[num_arcs, 3] = 1 if creates else 0
            # Slots (arc, entry of the target) and the contributions into each.
            n = -1
            for j in range(i, group_end):
                m = order[j]
                if j == i or moves[m, 1] != moves[order[j - 1], 1]:
                    n += 1
                    if num_slots == slots.shape[0]:
                        slots = _grow(slots)
                    slots[num_slots, 0] = num_arcs
                    slots[num_slots, 1] = state_off[target] + n
                    num_slots += 1
                if num_contrib == contrib.shape[0]:
                    contrib = _grow(contrib)
                contrib[num_contrib, 0] = num_slots - 1
                contrib[num_contrib, 1] = moves[m, 2]
                contrib[num_contrib, 2] = moves[m, 3]
                num_contrib += 1
            num_arcs += 1
            i = group_end
        head += 1
    return (ent_node[:num_entries], ent_res[:num_entries], state_off[:num_states + 1], depth[:num_states],
            arcs[:num_arcs], arc_total[:num_arcs], slots[:num_slots], contrib[:num_contrib], head == num_states)


def _encode_pairs(g: Graph) -> Tuple[Graph, Tensor]:
    """A transducer as an acceptor over its (input, output) label pairs (OpenFst's encode):
    each pair a label, (epsilon, epsilon) staying epsilon; and the pairs ``[K, 2]`` by label."""
    pairs, code = unique_rows([g.ilabel, g.olabel])
    has_epsilon = bool(((pairs[:1, 0] == EPSILON) & (pairs[:1, 1] == EPSILON)).any())  # sorts first
    labels = code.reshape(-1) + (0 if has_epsilon else 1)
    table = torch.cat([pairs.new_zeros(0 if has_epsilon else 1, 2), pairs])
    return g.replace(ilabel=labels, olabel=labels), table


def _decode_pairs(g: Graph, pairs: Tensor) -> Graph:
    """The transducer of an acceptor over label pairs (OpenFst's decode)."""
    return g.replace(ilabel=pairs[g.ilabel, 0], olabel=pairs[g.ilabel, 1])


DETERMINIZE_MAX_STATES = 1_000_000  # default bound: past it, a graph is taken as not determinizable


def determinize(g: Graph, semiring: str | Semiring = "tropical", max_states: int = DETERMINIZE_MAX_STATES) -> Graph:
    """An equivalent deterministic graph: no two arcs out of a node share a label, and no
    epsilons; each string keeps its total score in ``semiring`` (tropical: its best path's
    score, log: the sum over its paths). Input with epsilons goes through
    :func:`remove_epsilon` first. A transducer is determinized over its (input, output) label
    pairs, as OpenFst's encode / determinize / decode does: no two arcs out of a node share a
    pair (an arc reading epsilon and writing ``x`` is a symbol of its own).

    Weighted subset construction: a state is a set of ``(node, residual)`` entries. The
    construction decides the structure on detached weights (subsets whose residuals agree
    to ``RESIDUAL_QUANTUM`` are one state); the weights are then recomputed with torch ops
    along the same construction (each state's residuals from the arc that created it), so
    the result is differentiable in ``g``'s arc and start weights (final weights too).

    Cyclic graphs are determinized when they can be (the twins property: two paths with the
    same labels into cycles with the same labels have cycles of equal weight); one that cannot
    has no finite deterministic equivalent, and the construction stops at ``max_states``
    states with an :class:`InvalidGraphError` saying so, instead of running without end.
    """
    g = as_graph(g)
    sr = get_semiring(semiring)
    limit = as_count(max_states, "max_states", least=1)
    if not g.is_acceptor:
        encoded, pairs = _encode_pairs(g)
        return _decode_pairs(determinize(encoded, sr, limit), pairs)
    g = remove_epsilon(g, sr) if bool((g.ilabel == EPSILON).any()) else connect(g)
    device = g.device
    to_device = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    # Start subsets, one per graph of the batch: residual = start weight - the graph's total.
    start_nodes = g.start_nodes
    start_graph = g.node_graph[start_nodes]
    order = torch.argsort(start_graph, stable=True)
    start_nodes, start_graph = start_nodes[order], start_graph[order]
    start_w = g.start_weights[start_nodes]
    start_total = sr.segment_plus(start_w, start_graph, g.num_graphs)
    graphs_with_start = torch.unique(start_graph)
    start_off = np.zeros(graphs_with_start.shape[0] + 1, np.int64)
    np.cumsum(torch.bincount(start_graph, minlength=g.num_graphs)[graphs_with_start].cpu().numpy(),
              out=start_off[1:])
    start_res = start_w - start_total[start_graph]

    off, label, _, dst, arc_id = _sorted_arcs(g, g.ilabel, g.olabel)
    entries, entry_residual, state_off, depth, arcs, arc_weight, slots, contrib, finished = _determinize_kernel(
        off, label, dst, arc_id, g.weights.detach().cpu().double().numpy(), start_nodes.cpu().numpy(),
        start_res.detach().cpu().double().numpy(), start_off, sr.kernel_id, sr.beta, np.int64(limit))
    if not finished:
        raise InvalidGraphError(
            f"determinize stopped at {limit} states: this cyclic graph is most likely not determinizable (two "
            "paths with the same labels reach cycles with the same labels but different weights, so no finite "
            "deterministic graph is equivalent); if it is, raise max_states")

    num_states = depth.shape[0]
    entry_state = np.repeat(np.arange(num_states), np.diff(state_off))
    arcs_d = to_device(arcs)
    if g.weights.requires_grad or g.start_weights.requires_grad or g.final_weights.requires_grad:
        weights, residual = _determinized_weights(g, sr, start_res, arcs_d, depth, arcs, to_device(slots), slots,
                                                  to_device(contrib), contrib, entries.shape[0])
    else:  # no gradient wanted: the kernel's own (float64) weights
        weights, residual = to_device(arc_weight).to(g.dtype), to_device(entry_residual).to(g.dtype)
        residual[: start_res.shape[0]] = start_res
    entries_d, entry_state_d = to_device(entries), to_device(entry_state)
    final = sr.segment_plus(residual + g.final_weights[entries_d], entry_state_d, num_states)
    state_graph = g.node_graph[entries_d[to_device(state_off[:-1])]] if num_states else entries_d
    start = torch.full((num_states,), NEG_INF, dtype=g.dtype, device=device)
    start[: graphs_with_start.shape[0]] = start_total[graphs_with_start]
    out = Graph.from_tensors(arcs_d[:, 0], arcs_d[:, 1], arcs_d[:, 2], arcs_d[:, 2], weights, start, final,
                              node_graph=state_graph if g.is_batch else None, num_graphs=g.num_graphs)
    if g.is_batch:  # keep each graph's states together, as Graph.batch lays them out
        out = subgraph(out, torch.argsort(state_graph, stable=True))
    return out


def _determinized_weights(g: Graph, sr: Semiring, start_res: Tensor, arcs_d: Tensor, depth: np.ndarray,
                          arcs: np.ndarray, slots_d: Tensor, slots: np.ndarray, contrib_d: Tensor,
                          contrib: np.ndarray, num_entries: int) -> Tuple[Tensor, Tensor]:
    """The determinized arcs' weights and the subsets' residuals recomputed differentiably,
    level by level (a state's residuals come from the arc that created it, whose source is one
    level up)."""
    residual = g.weights.new_zeros(num_entries)
    residual[: start_res.shape[0]] = start_res
    weights = g.weights.new_zeros(arcs.shape[0])
    arc_level = depth[arcs[:, 0]]
    slot_level = arc_level[slots[:, 0]]
    contrib_level = slot_level[contrib[:, 0]]
    for level in range(int(depth.max(initial=0)) + 1):
        a0, a1 = np.searchsorted(arc_level, [level, level + 1])
        s0, s1 = np.searchsorted(slot_level, [level, level + 1])
        c0, c1 = np.searchsorted(contrib_level, [level, level + 1])
        if a0 == a1:
            continue
        c = contrib_d[c0:c1]
        values = residual[c[:, 1]] + g.weights[c[:, 2]]
        slot_value = sr.segment_plus(values, c[:, 0] - s0, s1 - s0)
        slot_arc = slots_d[s0:s1, 0]
        arc_total = sr.segment_plus(slot_value, slot_arc - a0, a1 - a0)
        weights[a0:a1] = arc_total
        creating = arcs_d[slot_arc, 3] == 1
        residual[slots_d[s0:s1, 1][creating]] = (slot_value - arc_total[slot_arc - a0])[creating]
    return weights, residual


# ---------------------------------------------------------------------- minimization
MINIMIZE_DELTA = 1e-4  # pushed weights are compared after quantization to this step


@numba.njit(cache=True, nogil=True)
def _signature_hash(graph: np.int64, final_level: np.int64, labels: np.ndarray, levels: np.ndarray,
                    dst_classes: np.ndarray) -> np.int64:  # pragma: no cover - jitted
    h = np.int64(labels.shape[0]) * np.int64(1000003) ^ graph
    h = h * np.int64(1000003) ^ final_level
    for i in range(labels.shape[0]):
        h = h * np.int64(1000003) ^ labels[i]
        h = h * np.int64(1000003) ^ levels[i]
        h = h * np.int64(1000003) ^ dst_classes[i]
    return h & np.int64(0x3FFFFFFFFFFFFFFF)


@numba.njit(cache=True, nogil=True)
def _classes_kernel(order: np.ndarray, own: np.ndarray, final_level: np.ndarray, off: np.ndarray,
                    label: np.ndarray, level: np.ndarray, dst: np.ndarray, previous: np.ndarray,
                    bottom_up: bool):  # pragma: no cover - jitted
    """Classes of equivalent states of a deterministic acceptor, by hash-consing.

    Two states are one class iff they have the same ``own`` key, the same quantized final
    weight (``final_level``) and the same out-arcs: label, quantized weight (``level``) and
    class of the destination (arcs grouped by source in ``off``, sorted by label). The
    destination's class is its class in this pass when ``bottom_up`` (Revuz's algorithm for
    acyclic automata: states visited in ``order``, every state after its arcs' destinations,
    ``own`` the graph), else its class in ``previous`` (one round of Moore's partition
    refinement, ``own`` = ``previous``). Hashes only pick the candidates; signatures are
    compared in full, so no unequal states merge. Returns each state's class and each class's
    representative (its first state)."""
    num_states = own.shape[0]
    state_class = np.full(num_states, -1, np.int64)
    representative = np.empty(num_states, np.int64)
    same_hash = np.empty(num_states, np.int64)  # next class with the same hash
    keys = np.full(64, -1, np.int64)            # hash table: signature hash -> latest class
    values = np.empty(64, np.int64)
    num_classes = 0
    for q in order:
        b, e = off[q], off[q + 1]
        dst_classes = state_class[dst[b:e]] if bottom_up else previous[dst[b:e]]
        h = _signature_hash(own[q], final_level[q], label[b:e], level[b:e], dst_classes)
        slot = _hash_slot(keys, h)
        target = -1
        c = values[slot] if keys[slot] != -1 else -1
        while c != -1 and target == -1:
            r = representative[c]
            rb, re = off[r], off[r + 1]
            r_classes = state_class[dst[rb:re]] if bottom_up else previous[dst[rb:re]]
            if (own[r] == own[q] and final_level[r] == final_level[q] and re - rb == e - b
                    and np.all(label[rb:re] == label[b:e]) and np.all(level[rb:re] == level[b:e])
                    and np.all(r_classes == dst_classes)):
                target = c
            c = same_hash[c]
        if target == -1:
            target = num_classes
            representative[target] = q
            keys, values = _insert_chained(keys, values, same_hash, slot, h, target)
            num_classes += 1
        state_class[q] = target
    return state_class, representative[:num_classes]


def _moore_classes(graph: np.ndarray, final_level: np.ndarray, off: np.ndarray, label: np.ndarray,
                   level: np.ndarray, dst: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Classes of equivalent states of a deterministic (possibly cyclic) acceptor: refine the
    partition by (graph, final weight) until no round splits a class (at most one round per
    state)."""
    _, start = np.unique(np.stack([graph, final_level], 1), axis=0, return_inverse=True)
    state_class = start.reshape(-1).astype(np.int64)
    count = int(state_class.max(initial=-1)) + 1
    while True:
        state_class, representative = _classes_kernel(np.arange(graph.shape[0]), state_class, final_level, off,
                                                      label, level, dst, state_class, False)
        if representative.shape[0] == count:
            return state_class, representative
        count = representative.shape[0]


def _quantize(values: np.ndarray, delta: float) -> np.ndarray:
    """Quantization levels as OpenFst's ``Quantize`` (``floor(w / delta + 0.5)``), as the bit
    patterns of the float levels (exact, and -inf stays distinct); ``+ 0.0`` makes -0 be 0."""
    return (np.floor(values / delta + 0.5) + 0.0).view(np.int64)


def _check_deterministic(g: Graph, off: np.ndarray, label: np.ndarray, node_id: np.ndarray) -> None:
    """Raise :class:`InvalidGraphError` unless every graph has one start node and no node has
    two arcs with one label (``node_id``: the node ids of the caller's graph)."""
    src = np.repeat(np.arange(g.num_nodes), np.diff(off))
    twins = np.flatnonzero((src[1:] == src[:-1]) & (label[1:] == label[:-1]))
    if twins.shape[0]:
        node, bad = int(node_id[src[twins[0]]]), int(label[twins[0]])
        raise InvalidGraphError(f"minimize needs a deterministic acceptor, but node {node} has several arcs "
                                f"labelled {bad}; determinize first")
    starts = g.start_nodes.cpu().numpy()
    graph_of = g.node_graph.cpu().numpy()[starts]
    crowded = np.flatnonzero(np.bincount(graph_of, minlength=g.num_graphs) > 1)
    if crowded.shape[0]:
        nodes = node_id[starts[graph_of == crowded[0]]].tolist()
        raise InvalidGraphError(f"minimize needs a deterministic acceptor, but nodes {nodes} are all start "
                                "nodes of one graph; determinize first")


def minimize(g: Graph, semiring: str | Semiring = "tropical", delta: float = MINIMIZE_DELTA) -> Graph:
    """The minimal deterministic acceptor equivalent to ``g`` in ``semiring`` (each string
    keeps its score), as OpenFst's ``fstminimize`` of a weighted acceptor. A transducer is
    minimized over its (input, output) label pairs (OpenFst's encode / minimize / decode).

    ``g`` must be a deterministic acceptor (one start node per graph, no epsilons, no two
    arcs out of a node with one label: :func:`determinize` makes one), acyclic or cyclic.
    Nodes on no successful path, and arcs of weight -inf, are removed first.

    Weights are pushed towards the start in ``semiring``: with ``beta(q)`` the total over
    ``q``'s suffixes, an arc ``p -> q`` gets ``w + beta(q) - beta(p)``, an accept node
    ``q`` the final weight ``final(q) - beta(q)`` and the start node ``start + beta``.
    Then equivalent states are merged, bottom-up on an acyclic graph (Revuz's algorithm, with
    hash-consing), by Moore's partition refinement on a cyclic one: states are equivalent
    iff their pushed final weights and their out-arcs (label, pushed weight, class of the
    destination) agree, weights compared
    after quantization to ``delta`` (``floor(w / delta + 0.5)``, OpenFst's ``Quantize``;
    OpenFst's default delta is 1e-6, too fine for float32 weights). The merge is decided
    on a detached float64 copy of the weights (on the CPU, once per call); each class
    keeps the pushed weights of one representative state, gathered differentiably, so
    gradients reach ``g``'s arc, start and final weights (the potentials are
    differentiable too). In the log semiring ``forward_score(minimize(g, "log"))`` is
    the same function as ``forward_score(g)``.

    Batches are minimized graph by graph (states of different graphs never merge) and
    keep their layout. The result's states are in topological order when acyclic (by
    decreasing height, then by ``g``'s order; cyclic: in ``g``'s order) and its arcs sorted by
    source and label. Raises :class:`InvalidGraphError` on a non-deterministic graph.
    """
    g = as_graph(g)
    sr = get_semiring(semiring)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < math.inf:
        raise WeightError(f"minimize's quantization delta must be a finite number > 0, got {delta!r}")
    if not g.is_acceptor:
        encoded, pairs = _encode_pairs(g)
        return _decode_pairs(minimize(encoded, sr, delta), pairs)
    if bool((g.ilabel == EPSILON).any()):
        bad = int((g.ilabel == EPSILON).nonzero()[0, 0])
        raise InvalidGraphError(f"minimize needs a deterministic acceptor, but node {int(g.src[bad])} has an "
                                f"epsilon arc (arc {bad}); determinize first")
    possible = g.weights.detach() > NEG_INF
    if not bool(possible.all()):  # impossible arcs carry no path; their potentials would be -inf
        arcs = possible.nonzero().reshape(-1)
        g = g.replace(src=g.src[arcs], dst=g.dst[arcs], ilabel=g.ilabel[arcs], olabel=g.olabel[arcs],
                       weights=g.weights.index_select(0, arcs))
    node_id = np.flatnonzero(useful_nodes(g))  # ids in the caller's graph of the kept nodes
    g = subgraph(g, torch.from_numpy(node_id).to(g.device))
    src, dst = g.src.cpu().numpy(), g.dst.cpu().numpy()
    height = node_depths(g.num_nodes, dst, src)  # longest distance to a leaf (leaves accept); -1: cyclic
    off, label, _, sorted_dst, arc_id = _sorted_arcs(g, g.ilabel, g.olabel)
    _check_deterministic(g, off, label, node_id)

    # Structure on detached float64 copies; weights differentiably on g's device.
    host = push(g.detach().to("cpu", torch.float64), sr)
    node_graph = g.node_graph.cpu().numpy()
    final_level = _quantize(host.final_weights.numpy(), delta)
    arc_level = _quantize(host.weights.numpy()[arc_id], delta)
    cyclic = g.num_nodes > 0 and height[0] < 0
    if cyclic:
        state_class, representative = _moore_classes(node_graph, final_level, off, label, arc_level, sorted_dst)
        height = np.zeros(g.num_nodes, np.int64)  # classes in g's order of their first states
    else:
        state_class, representative = _classes_kernel(np.argsort(height, kind="stable"), node_graph, final_level,
                                                      off, label, arc_level, sorted_dst, node_graph, True)

    # Classes by graph, then (acyclic) in topological order: decreasing height; then g's node order.
    layout = np.lexsort((representative, -height[representative], node_graph[representative]))
    representative = representative[layout]
    renumber = np.empty(layout.shape[0], np.int64)
    renumber[layout] = np.arange(layout.shape[0])
    counts = off[representative + 1] - off[representative]
    first = np.repeat(off[representative] - (np.cumsum(counts) - counts), counts)
    kept_arcs = first + np.arange(first.shape[0])  # positions in the sorted arcs
    device = g.device
    to_device = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    arcs_d, states_d = to_device(arc_id[kept_arcs]), to_device(representative)

    pushed = push(g, sr)
    return Graph.from_tensors(
        to_device(np.repeat(np.arange(representative.shape[0]), counts)),
        to_device(renumber[state_class[sorted_dst[kept_arcs]]]),
        to_device(label[kept_arcs]), to_device(label[kept_arcs]), pushed.weights.index_select(0, arcs_d),
        pushed.start_weights.index_select(0, states_d), pushed.final_weights.index_select(0, states_d),
        node_graph=g.node_graph.index_select(0, states_d) if g.is_batch else None, num_graphs=g.num_graphs)
