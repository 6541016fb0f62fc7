"""The distance engine: per-node shortest distances in any semiring, forward or reverse, and
their gradients, for the operations built on it (:mod:`.shortest`, :mod:`.compose`).

How distances are computed:

* **Acyclic graphs, CPU**: one compiled (numba) sweep that fuses Kahn's topological sort
  with the relaxation of each node's out-arcs, so a chain of 100k nodes is one kernel call.
* **Acyclic graphs, CUDA**: level-synchronous torch: nodes are grouped by longest-path
  depth (computed from the integer structure on the CPU), and each level is one vectorized
  ``segment_plus`` of its incoming arcs. Cost: one small loop iteration per level.
* **Cyclic graphs, tropical** (both devices): vectorized Bellman-Ford (at most ``num_nodes``
  rounds; a cycle with positive score raises :class:`DivergenceError`, since scores are
  maximised).
* **Cyclic graphs, log** (both devices, on the host in float64): exact. The strongly connected
  components are solved in topological order, a lone node's loops in closed form
  (``-log(1 - p)``, with ``expm1``) and a larger component by Gaussian elimination in the log
  domain; time is proportional to the graph for chains of loops and rings (more for densely
  connected components: the arcs the elimination creates). A component whose cycles have a
  total probability of 1 or more raises :class:`DivergenceError`. Gradients solve the adjoint
  system the same way.
* **Any other semiring** (acyclic graphs, both devices): the level sweep through the semiring's
  interface (:func:`element_distances`: ``lift``, ``times``, ``segment_plus``, ``plus2``), on
  elements that may be vectors, with gradients by autograd.
* Totals, gradients, paths and samples only look at arcs on some successful path, so a
  divergent cycle that no successful path touches does not matter there.
* A NaN weight reached from a start node makes the distances after it, the totals of its
  graph and their gradients NaN, in both semirings, as torch's own sums would (no check, no
  host sync); :func:`n_best` and :func:`sample`, which need an order or probabilities, raise
  :class:`WeightError` instead. Graphs must be float32 or float64 (:class:`DtypeMismatchError`).

Gradients of totals are closed-form (forward-backward, or the best path). So are those of
per-node distances of acyclic graphs (as ``remove_epsilon`` and ``minimize`` use
them): one adjoint sweep in reverse topological order (a compiled kernel on the CPU, a
level loop on CUDA) instead of autograd through every level.
"""

from __future__ import annotations

import math
from typing import Tuple

import numba
import numpy as np
import torch
from torch import Tensor

from ..errors import CyclicGraphError, DivergenceError
from ..graph import NEG_INF, Graph
from ..semiring import KERNEL_LOG, LOG, Semiring, kernel_plus
from .traverse import csr_arcs, node_depths, useful_nodes


@numba.njit(cache=True, nogil=True)
def _acyclic_sweep(num_nodes, tail, head, weights, init, kernel_id, beta):  # pragma: no cover - jitted
    """Kahn's topological sort fused with relaxation: when a node leaves the queue its
    distance is final, and its out-arcs are pushed into their heads. Returns the distances
    (float64), the best incoming arc of each node (strict improvements only, so ties keep
    the first arc seen; -1 where the node's own ``init`` is best) and the nodes in the
    order the sort placed them (fewer than ``num_nodes``: the graph has a cycle)."""
    order, offsets = csr_arcs(num_nodes, tail)
    indegree = np.zeros(num_nodes, np.int64)
    for a in range(head.shape[0]):
        indegree[head[a]] += 1
    dist = init.astype(np.float64)
    pred = np.full(num_nodes, -1, np.int64)
    queue = np.empty(num_nodes, np.int64)
    size = 0
    for n in range(num_nodes):
        if indegree[n] == 0:
            queue[size] = n
            size += 1
    done = 0
    while done < size:
        n = queue[done]
        done += 1
        here = dist[n]
        for k in range(offsets[n], offsets[n + 1]):
            a = order[k]
            m = head[a]
            if here != NEG_INF:  # NaN goes on, as torch's sums carry it
                candidate = here + weights[a]
                if candidate > dist[m]:
                    pred[m] = a
                dist[m] = kernel_plus(kernel_id, beta, dist[m], candidate)
            indegree[m] -= 1
            if indegree[m] == 0:
                queue[size] = m
                size += 1
    return dist, pred, queue[:done]


@numba.njit(cache=True, nogil=True)
def _adjoint_sweep(order, tail, head, coefficient, grad):  # pragma: no cover - jitted
    """Vector-Jacobian product of acyclic distances, in reverse topological ``order``:
    ``adjoint[v] = grad[v] + sum over arcs a = (v -> x) of coefficient[a] * adjoint[x]``,
    where ``coefficient[a]`` is the derivative of ``dist[x]`` w.r.t. ``dist[v]`` through ``a``."""
    out_arcs, offsets = csr_arcs(grad.shape[0], tail)
    adjoint = grad.copy()
    for i in range(order.shape[0] - 1, -1, -1):
        n = order[i]
        total = adjoint[n]
        for k in range(offsets[n], offsets[n + 1]):
            a = out_arcs[k]
            total += coefficient[a] * adjoint[head[a]]
        adjoint[n] = total
    return adjoint


@numba.njit(cache=True, nogil=True)
def follow_backpointers(pred, tail, ends, num_nodes):  # pragma: no cover - jitted
    """Follow best-arc pointers back from each end node; returns the arcs of every path
    (concatenated, in path order), their counts and each path's first node (-1: no path)."""
    counts = np.zeros(ends.shape[0], np.int64)
    firsts = np.full(ends.shape[0], -1, np.int64)
    for p in range(ends.shape[0]):
        n = ends[p]
        if n < 0:
            continue
        while pred[n] >= 0 and counts[p] <= num_nodes:
            counts[p] += 1
            n = tail[pred[n]]
        firsts[p] = n
    arcs = np.empty(counts.sum(), np.int64)
    offset = 0
    for p in range(ends.shape[0]):
        n = ends[p]
        for i in range(counts[p]):
            a = pred[n]
            arcs[offset + counts[p] - 1 - i] = a
            n = tail[a]
        offset += counts[p]
    return arcs, counts, firsts


@numba.njit(cache=True, nogil=True)
def _strong_components(num_nodes, tail, head):  # pragma: no cover - jitted
    """Tarjan's strongly connected components (iterative): the component of every node,
    numbered in a topological order of the components, and their number."""
    out_arcs, offsets = csr_arcs(num_nodes, tail)
    index = np.full(num_nodes, -1, np.int64)
    low = np.zeros(num_nodes, np.int64)
    on_stack = np.zeros(num_nodes, np.bool_)
    stack = np.empty(num_nodes, np.int64)
    call_node = np.empty(num_nodes, np.int64)
    call_arc = np.empty(num_nodes, np.int64)
    comp = np.full(num_nodes, -1, np.int64)
    size = 0
    counter = 0
    emitted = 0
    for root in range(num_nodes):
        if index[root] >= 0:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack[size] = root
        size += 1
        on_stack[root] = True
        call_node[0], call_arc[0] = root, offsets[root]
        depth = 1
        while depth > 0:
            v = call_node[depth - 1]
            k = call_arc[depth - 1]
            if k < offsets[v + 1]:
                call_arc[depth - 1] = k + 1
                m = head[out_arcs[k]]
                if index[m] < 0:
                    index[m] = low[m] = counter
                    counter += 1
                    stack[size] = m
                    size += 1
                    on_stack[m] = True
                    call_node[depth], call_arc[depth] = m, offsets[m]
                    depth += 1
                elif on_stack[m]:
                    low[v] = min(low[v], index[m])
                continue
            depth -= 1
            if depth > 0:
                parent = call_node[depth - 1]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                while True:
                    size -= 1
                    m = stack[size]
                    on_stack[m] = False
                    comp[m] = emitted
                    if m == v:
                        break
                emitted += 1
    # Tarjan emits a component after every component it reaches: reverse for a topological order
    return emitted - 1 - comp, emitted


@numba.njit(cache=True, nogil=True)
def _star(loop):  # pragma: no cover - jitted
    """``-log(1 - exp(loop))``: the log total of repeating a loop of log weight ``loop < 0`` any
    number of times (exact near 0: expm1)."""
    if loop == NEG_INF:
        return 0.0
    return -math.log(-math.expm1(loop))


@numba.njit(cache=True, nogil=True)
def _eliminate(nodes, local, comp, c, out_arcs, offsets, head, w, x):  # pragma: no cover - jitted
    """Solve one strongly connected component exactly: ``x[v] = x[v] (+) sum over arcs u -> v
    inside it of x[u] + w`` (log semiring, beta already applied), by Gaussian elimination of its
    nodes one at a time in the log domain (each elimination adds the paths through the node,
    its loops closed with :func:`_star`, as arcs between its neighbours), then back
    substitution. Only sums of positive terms and ``1 - loop`` occur, so there is no
    cancellation and nothing under- or overflows. Cost: the arcs the eliminations create
    (linear for rings and chains of loops). Returns -1, or the node whose loops sum to >= 1
    (the sum diverges) and that sum (log)."""
    size = nodes.shape[0]
    for i in range(size):
        local[nodes[i]] = i
    outs = numba.typed.List()
    ins = numba.typed.List()
    for _ in range(size):
        outs.append(numba.typed.Dict.empty(numba.types.int64, numba.types.float64))
        ins.append(numba.typed.Dict.empty(numba.types.int64, numba.types.float64))
    diag = np.full(size, NEG_INF)
    degree = np.zeros(size, np.int64)
    for i in range(size):
        for k in range(offsets[nodes[i]], offsets[nodes[i] + 1]):
            a = out_arcs[k]
            if comp[head[a]] != c:
                continue
            j = local[head[a]]
            if j == i:
                diag[i] = kernel_plus(KERNEL_LOG, 1.0, diag[i], w[a])
            else:
                value = kernel_plus(KERNEL_LOG, 1.0, outs[i].get(j, NEG_INF), w[a])
                outs[i][j] = value
                ins[j][i] = value
                degree[i] += 1
                degree[j] += 1
    # cheap first: fewer neighbours, fewer arcs created (a static minimum-degree order)
    order = np.argsort(degree, kind="mergesort")
    b = np.empty(size)
    for i in range(size):
        b[i] = x[nodes[i]]
    star = np.empty(size)
    record_offsets = np.zeros(size + 1, np.int64)
    record_node = np.empty(max(4 * size, 16), np.int64)
    record_value = np.empty(max(4 * size, 16))
    records = 0
    for step in range(size):
        k = order[step]
        if diag[k] >= 0:
            return nodes[k], diag[k]
        s = _star(diag[k])
        star[k] = s
        if records + len(ins[k]) > record_node.shape[0]:
            grown = 2 * record_node.shape[0] + len(ins[k])
            record_node = np.concatenate((record_node, np.empty(grown, np.int64)))
            record_value = np.concatenate((record_value, np.empty(grown)))
        for u, value in ins[k].items():
            record_node[records] = u
            record_value[records] = value
            records += 1
        record_offsets[step + 1] = records
        through = b[k] + s
        for v, out_value in outs[k].items():
            if through != NEG_INF:
                b[v] = kernel_plus(KERNEL_LOG, 1.0, b[v], through + out_value)
            for u, in_value in ins[k].items():
                value = in_value + s + out_value
                if u == v:
                    diag[u] = kernel_plus(KERNEL_LOG, 1.0, diag[u], value)
                else:
                    value = kernel_plus(KERNEL_LOG, 1.0, outs[u].get(v, NEG_INF), value)
                    outs[u][v] = value
                    ins[v][u] = value
        for u in ins[k].keys():
            del outs[u][k]
        for v in outs[k].keys():
            del ins[v][k]
    solved = np.empty(size)
    for step in range(size - 1, -1, -1):
        k = order[step]
        total = b[k]
        for r in range(record_offsets[step], record_offsets[step + 1]):
            total = kernel_plus(KERNEL_LOG, 1.0, total, solved[record_node[r]] + record_value[r])
        solved[k] = total + star[k]
    for i in range(size):
        x[nodes[i]] = solved[i]
    return -1, 0.0


@numba.njit(cache=True, nogil=True)
def _log_closure(num_nodes, tail, head, weights, init, beta):  # pragma: no cover - jitted
    """Exact log-semiring distances of any graph from ``init`` (arcs of weight -inf left out by
    the caller): strongly connected components in topological order, each solved once its
    inflow is known (a lone node's loops in closed form, a larger component by
    :func:`_eliminate`), then pushed along the arcs that leave it. Unreachable components are
    skipped, so a divergent cycle that nothing reaches does not matter. Computes in float64;
    returns the distances, and -1 or a node whose loops sum to >= 1 with that sum (log)."""
    comp, num_comps = _strong_components(num_nodes, tail, head)
    members, member_offsets = csr_arcs(num_comps, comp)
    out_arcs, offsets = csr_arcs(num_nodes, tail)
    x = init.astype(np.float64) * beta
    w = weights.astype(np.float64) * beta
    local = np.empty(num_nodes, np.int64)
    for c in range(num_comps):
        lo, hi = member_offsets[c], member_offsets[c + 1]
        if hi - lo == 1:
            n = members[lo]
            if x[n] == NEG_INF:
                continue
            loop = NEG_INF
            for k in range(offsets[n], offsets[n + 1]):
                if head[out_arcs[k]] == n:
                    loop = kernel_plus(KERNEL_LOG, 1.0, loop, w[out_arcs[k]])
            if loop >= 0:
                return x / beta, n, loop / beta
            x[n] += _star(loop)
        else:
            reached = False
            for i in range(lo, hi):
                reached = reached or x[members[i]] != NEG_INF
            if not reached:
                continue
            bad, loop = _eliminate(members[lo:hi], local, comp, c, out_arcs, offsets, head, w, x)
            if bad >= 0:
                return x / beta, bad, loop / beta
        for i in range(lo, hi):
            n = members[i]
            for k in range(offsets[n], offsets[n + 1]):
                a = out_arcs[k]
                m = head[a]
                if comp[m] != c:
                    x[m] = kernel_plus(KERNEL_LOG, 1.0, x[m], x[n] + w[a])
    return x / beta, -1, 0.0


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def useful_arcs(g: Graph) -> Tensor:
    """Arcs on some successful path: their tail is reachable from a start node and their head
    reaches an accept node (computed on the CPU from the integer structure)."""
    useful = useful_nodes(g)
    keep = useful[_numpy(g.src)] & useful[_numpy(g.dst)]
    return torch.from_numpy(keep).to(g.device)


def node_distances(g: Graph, sr: Semiring, reverse: bool, useful_only: bool = False) -> Tuple[Tensor, Tensor]:
    """Distances of every node (forward: from the start nodes; reverse: to the accept nodes)
    and each node's best arc toward them (tropical; -1 where the node's own start/final
    weight is best). Neither is differentiable. ``useful_only`` ignores arcs on no
    successful path, which only matters (and only costs anything) for cyclic graphs."""
    tail, head = (g.dst, g.src) if reverse else (g.src, g.dst)
    init = (g.final_weights if reverse else g.start_weights).detach()
    weights = g.weights.detach()
    if g.device.type == "cpu":
        dist, pred, order = _acyclic_sweep(g.num_nodes, tail.numpy(), head.numpy(), weights.numpy(),
                                           init.numpy(), sr.kernel_id, sr.beta)
        if order.shape[0] == g.num_nodes:
            return torch.from_numpy(dist).to(weights.dtype), torch.from_numpy(pred)
    else:
        depth = node_depths(g.num_nodes, _numpy(tail), _numpy(head))
        if g.num_nodes == 0 or depth[0] >= 0:
            return _level_sweep(tail, head, weights, init, sr, depth)
    if useful_only:
        weights = torch.where(useful_arcs(g), weights, weights.new_full((), NEG_INF))
    if sr.idempotent:
        return _relax(tail, head, weights, init, sr)
    return _log_cyclic(tail, head, weights, init, sr), torch.full_like(init, -1, dtype=torch.long)


def segment_argmax(values: Tensor, segment: Tensor, maxima: Tensor) -> Tensor:
    """Per segment, the smallest index whose value equals the segment's maximum
    (``len(values)`` for segments without one)."""
    index = torch.arange(values.shape[0], device=values.device)
    hits = torch.where(values == maxima[segment], index, index.new_full((), values.shape[0]))
    out = index.new_full(maxima.shape, values.shape[0])
    return out.scatter_reduce(0, segment, hits, reduce="amin", include_self=True)


def _level_sweep(tail: Tensor, head: Tensor, weights: Tensor, init: Tensor, sr: Semiring,
                 depth: np.ndarray) -> Tuple[Tensor, Tensor]:
    """Acyclic distances level by level (``depth``: longest-path depth of each node); each
    level's nodes pull from their incoming arcs in one vectorized ``segment_plus``. Written
    against the semiring's interface only (``weights`` and ``init`` are its elements)."""
    device = weights.device
    num_nodes = depth.shape[0]
    node_order, node_offsets = csr_arcs(int(depth.max(initial=0)) + 1, depth)
    arc_depth = depth[_numpy(head)]
    arc_order, arc_offsets = csr_arcs(num_nodes and int(depth.max()) + 1, arc_depth)
    rank = np.empty(num_nodes, np.int64)
    rank[node_order] = np.arange(num_nodes) - node_offsets[depth[node_order]]
    node_order_d = torch.from_numpy(node_order).to(device)
    arc_order_d = torch.from_numpy(arc_order).to(device)
    local_head = torch.from_numpy(rank).to(device)[head]
    dist = init.clone()
    pred = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
    tropical = sr.idempotent
    for level in range(1, node_offsets.shape[0] - 1):
        nodes = node_order_d[node_offsets[level]:node_offsets[level + 1]]
        arcs = arc_order_d[arc_offsets[level]:arc_offsets[level + 1]]
        values = sr.times(dist[tail[arcs]], weights[arcs])
        segment = local_head[arcs]
        pulled = sr.segment_plus(values, segment, nodes.shape[0])
        if tropical:
            best = segment_argmax(values, segment, pulled).clamp(max=max(arcs.shape[0] - 1, 0))
            pred[nodes] = torch.where(pulled > init[nodes], arcs[best], pred.new_full((), -1))
        dist[nodes] = sr.plus2(init[nodes], pulled)
    return dist, pred


def element_distances(num_nodes: int, tail: Tensor, head: Tensor, weights: Tensor, init: Tensor,
                      sr: Semiring) -> Tensor:
    """Forward distances (from ``init``, along arcs ``tail -> head``) as elements of ``sr``,
    ``[N, *sr.element_shape]``, for any semiring: the scores are lifted to elements and swept
    level by level through the semiring's interface; differentiable by autograd. Acyclic graphs
    only (:class:`CyclicGraphError`: a sum over cycles needs a closure the interface lacks)."""
    depth = node_depths(num_nodes, np.ascontiguousarray(_numpy(tail)), np.ascontiguousarray(_numpy(head)))
    if num_nodes and depth[0] < 0:
        raise CyclicGraphError(f"the {sr} semiring is evaluated on acyclic graphs only, and this graph has a cycle")
    return _level_sweep(tail, head, sr.lift(weights), sr.lift(init), sr, depth)[0]


def _relax(tail: Tensor, head: Tensor, weights: Tensor, init: Tensor, sr: Semiring) -> Tuple[Tensor, Tensor]:
    """Tropical distances of a cyclic graph by synchronous relaxation to a fixed point
    (Bellman-Ford: at most ``num_nodes + 1`` rounds). Best arcs change only on strict
    improvement, so they form a tree whenever no cycle has a positive score. A NaN reached
    from a start node is carried on, as torch's ``max`` carries it."""
    num_nodes = init.shape[0]
    dist = init.clone()
    pred = torch.full((num_nodes,), -1, dtype=torch.long, device=init.device)
    # a score improves in at most num_nodes + 1 rounds unless a cycle is positive; a NaN can
    # take as many more to spread
    for rounds in range(2 * num_nodes + 2):
        values = torch.where(dist[tail] == NEG_INF, dist[tail], dist[tail] + weights)
        pulled = sr.segment_plus(values, head, num_nodes)
        new = sr.plus2(init, pulled)
        better = new > dist
        improved = better | (torch.isnan(new) & ~torch.isnan(dist))
        best = segment_argmax(values, head, pulled).clamp(max=max(tail.shape[0] - 1, 0))
        pred = torch.where(better, best, pred)
        if not bool(improved.any()):
            return dist, pred
        if rounds > num_nodes and bool(better.any()):
            break
        dist = new
    raise DivergenceError("shortest distance of a cyclic graph diverges (tropical semiring): a cycle reached "
                          "from a start node has a positive score, so the best score is unbounded")


def _log_cyclic(tail: Tensor, head: Tensor, weights: Tensor, init: Tensor, sr: Semiring) -> Tensor:
    """Exact log-semiring distances of a cyclic graph (:func:`_log_closure`, in float64 on the
    host), in the weights' dtype and device; a sum that diverges raises DivergenceError."""
    num_nodes = init.shape[0]
    w = _numpy(weights).astype(np.float64)
    keep = w != NEG_INF
    dist, bad, loop = _log_closure(num_nodes, np.ascontiguousarray(_numpy(tail)[keep]),
                                   np.ascontiguousarray(_numpy(head)[keep]), np.ascontiguousarray(w[keep]),
                                   _numpy(init).astype(np.float64), sr.beta)
    if bad >= 0:
        raise DivergenceError(
            f"the {sr} sum over the paths of a cyclic graph diverges: the cycles through node {bad} (reached "
            f"from a start node) have a total probability exp({loop:.6g}) >= 1, so that node is reached with "
            "unbounded total weight; cycles need a total probability below 1 (their weights' log-sum below 0)")
    return torch.from_numpy(dist).to(device=weights.device, dtype=weights.dtype)


def term_share(score: Tensor, dist: Tensor, beta: float) -> Tensor:
    """``exp(beta (score - dist))``: the share of a term ``score`` in a log-semiring distance
    ``dist`` (its derivative); 0 where ``dist`` is -inf (an unreachable node: -inf - -inf,
    and no change of a term makes it reachable)."""
    return torch.where(dist > NEG_INF, torch.exp(beta * (score - dist)), torch.zeros_like(dist))


def _level_adjoint(tail: Tensor, head: Tensor, coefficient: Tensor, grad: Tensor, depth: np.ndarray) -> Tensor:
    """:func:`_adjoint_sweep` on the tensors' device (for CUDA), one vectorized step per
    level of ``depth`` from the deepest: a node's out-arcs lead to deeper nodes, whose
    adjoints are final by then."""
    levels = int(depth.max(initial=0)) + 1
    arc_order, arc_offsets = csr_arcs(levels, depth[_numpy(tail)])
    arc_order_d = torch.from_numpy(arc_order).to(grad.device)
    adjoint = grad.clone()
    for level in range(levels - 2, -1, -1):
        arcs = arc_order_d[arc_offsets[level]:arc_offsets[level + 1]]
        adjoint.index_add_(0, tail[arcs], coefficient[arcs] * adjoint[head[arcs]])
    return adjoint


class _AcyclicDistances(torch.autograd.Function):
    """Distances of an acyclic graph from ``init`` along arcs ``tail -> head``, as the caller
    found them (``dist``, and ``pred``: each node's best arc, -1 where its ``init`` is best),
    with a closed-form backward: one adjoint sweep in reverse topological order, over
    ``schedule``: a topological order of the nodes (host, CPU tensors: a compiled kernel)
    or their longest-path depths (a level loop on the device).

    The derivative of ``dist[x]`` through an arc ``a = (v -> x)`` is
    ``exp(beta (dist[v] + w[a] - dist[x]))`` in the log semiring and ``[a is x's best arc]``
    in the tropical one, and through ``x``'s own ``init`` ``exp(beta (init[x] - dist[x]))`` or
    ``[init is best]`` (ties: the best arc takes all, where autograd through ``max`` would
    share). Unreachable nodes pass on no gradient.
    """

    @staticmethod
    def forward(ctx, weights: Tensor, init: Tensor, tail: Tensor, head: Tensor,  # type: ignore[override]
                sr: Semiring, dist: Tensor, pred: Tensor, schedule: np.ndarray) -> Tensor:
        ctx.save_for_backward(weights, init)
        ctx.tail, ctx.head, ctx.sr, ctx.dist, ctx.pred, ctx.schedule = tail, head, sr, dist, pred, schedule
        return dist.to(weights.dtype, copy=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_dist: Tensor):  # type: ignore[override]
        weights, init = ctx.saved_tensors
        tail, head, sr, dist, pred = ctx.tail, ctx.head, ctx.sr, ctx.dist, ctx.pred
        if sr.idempotent:
            through = (pred[head] == torch.arange(head.shape[0], device=head.device)).to(dist.dtype)
            own = ((pred < 0) & (dist > NEG_INF)).to(dist.dtype)
        else:
            through = term_share(dist[tail] + weights, dist[head], sr.beta)
            own = term_share(init, dist, sr.beta)
        grad = grad_dist.to(dist.dtype)
        if weights.device.type == "cpu":
            host = lambda t: np.ascontiguousarray(t.numpy())  # noqa: E731
            adjoint = torch.from_numpy(_adjoint_sweep(ctx.schedule, host(tail), host(head), host(through), host(grad)))
        else:
            adjoint = _level_adjoint(tail, head, through, grad, ctx.schedule)
        grad_weights = (adjoint[head] * through).to(weights.dtype) if ctx.needs_input_grad[0] else None
        grad_init = (adjoint * own).to(init.dtype) if ctx.needs_input_grad[1] else None
        return grad_weights, grad_init, None, None, None, None, None, None


class _CyclicLogDistances(torch.autograd.Function):
    """Log-semiring distances of a cyclic graph (:func:`_log_cyclic`) with a closed-form
    backward. The adjoint of the distances solves ``adjoint[v] = grad[v] + sum over arcs
    a = (v -> x) of share[a] * adjoint[x]`` (``share[a] = exp(beta (dist[v] + w[a] - dist[x]))``),
    the same kind of sum over paths, on the reversed arcs: it is solved exactly by the same
    elimination, once for the positive and once for the negative part of ``grad``."""

    @staticmethod
    def forward(ctx, weights: Tensor, init: Tensor, tail: Tensor, head: Tensor,  # type: ignore[override]
                sr: Semiring) -> Tensor:
        dist = _log_cyclic(tail, head, weights.detach(), init.detach(), sr)
        ctx.save_for_backward(weights, init, dist)
        ctx.tail, ctx.head, ctx.sr = tail, head, sr
        return dist

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_dist: Tensor):  # type: ignore[override]
        weights, init, dist = ctx.saved_tensors
        tail, head, beta = ctx.tail, ctx.head, ctx.sr.beta
        dist64, grad = dist.double(), grad_dist.double()
        # log of each arc's share; -inf where the head is unreachable (no change makes it reachable)
        log_share = torch.where(dist64[head] > NEG_INF, beta * (dist64[tail] + weights.double() - dist64[head]),
                                dist64.new_full((), NEG_INF))

        def solve(part: Tensor) -> Tensor:
            log_part = torch.log(part)  # -inf where this part of the gradient is 0
            return torch.exp(_log_cyclic(head, tail, log_share, log_part, LOG))  # a plain (beta 1) sum

        adjoint = solve(grad.clamp(min=0)) - solve((-grad).clamp(min=0))
        grad_weights = (adjoint[head] * torch.exp(log_share)).to(weights.dtype) if ctx.needs_input_grad[0] else None
        grad_init = ((adjoint * term_share(init.double(), dist64, beta)).to(init.dtype)
                     if ctx.needs_input_grad[1] else None)
        return grad_weights, grad_init, None, None, None


def path_distances(num_nodes: int, tail: Tensor, head: Tensor, weights: Tensor, init: Tensor,
                    sr: Semiring) -> Tensor:
    """Forward distances (from ``init``) along arcs ``tail -> head`` that stay differentiable
    in ``weights`` and ``init``. Acyclic graphs: :class:`_AcyclicDistances` over the compiled
    sweep (CPU, distances in float64) or the level sweep (CUDA). Cyclic graphs: the
    exact elimination with its adjoint (log) or the relaxation to a fixed point recorded by
    autograd (tropical); both raise :class:`DivergenceError` when the sum diverges."""
    tail_host, head_host = np.ascontiguousarray(_numpy(tail)), np.ascontiguousarray(_numpy(head))
    if weights.device.type == "cpu":
        dist, pred, order = _acyclic_sweep(num_nodes, tail_host, head_host, _numpy(weights), _numpy(init),
                                           sr.kernel_id, sr.beta)
        if order.shape[0] == num_nodes:
            return _AcyclicDistances.apply(weights, init, tail, head, sr, torch.from_numpy(dist),
                                           torch.from_numpy(pred), order)
    else:
        depth = node_depths(num_nodes, tail_host, head_host)
        if num_nodes == 0 or depth[0] >= 0:
            with torch.no_grad():
                level_dist, level_pred = _level_sweep(tail, head, weights, init, sr, depth)
            return _AcyclicDistances.apply(weights, init, tail, head, sr, level_dist, level_pred, depth)
    if sr.idempotent:
        return _relax(tail, head, weights, init, sr)[0]
    return _CyclicLogDistances.apply(weights, init, tail, head, sr)
