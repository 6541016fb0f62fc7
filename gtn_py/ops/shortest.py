"""The shortest-distance family: per-node distances, total scores and their gradients, arc
posteriors, the best path, exact n-best lists and samples.

Every function takes a :class:`Graph`, a batch Graph or a list of Graphs and works on the
disjoint union in one pass; per-graph results are 0-dim for a single graph and ``[B]``
otherwise. All of them are written once against :mod:`gtn_py.semiring`.

Distances and their gradients come from :mod:`.distance` (the engine: acyclic sweeps, cyclic
graphs in both semirings, adjoint sweeps); this module builds the user-facing operations on it.
A NaN weight reached from a start node makes the totals of its graph and their gradients NaN
(no check, no host sync); :func:`n_best` and :func:`sample`, which need an order or
probabilities, raise :class:`WeightError` instead. Graphs must be float32 or float64
(:class:`DtypeMismatchError`).

A graph without a start node, or without a successful path, has total score -inf, zero
gradients, an empty best path (a graph with no nodes), no n-best entries and empty samples.
"""

from __future__ import annotations

import heapq
import math
from typing import List, Literal, Sequence, Tuple, Union, overload

import numba
import numpy as np
import torch
from torch import Tensor

from ..backends import get_backend
from ..errors import ArgumentTypeError, ArgumentValueError, DtypeMismatchError, WeightError
from ..graph import NEG_INF, Graph, as_flag, as_graph, as_graph_list, as_integer, gather, subgraph_with_arc_map
from ..semiring import LOG, Semiring, get_semiring, segment_max
from .distance import (
    element_distances,
    follow_backpointers,
    node_distances,
    path_distances,
    segment_argmax,
    useful_arcs,
)
from .structure import connect
from .traverse import csr_arcs

GraphLike = Union[Graph, Sequence[Graph]]
SemiringLike = Union[str, Semiring]


# ---------------------------------------------------------------------- arguments
def _as_graph(g: GraphLike, what: str = "g") -> Tuple[Graph, bool]:
    """A graph (batching a list) and whether per-graph results get a batch dimension; anything
    else, or weights of a dtype these sums do not support, raises a GraphError naming ``what``."""
    if isinstance(g, (list, tuple)):
        graphs = as_graph_list(g, what)
        if not graphs:
            raise ArgumentValueError(f"{what} is an empty list; give a Graph, a batch or a non-empty list of Graphs")
        graph, batched = Graph.batch(graphs), True
    else:
        graph = as_graph(g, what)
        batched = graph.is_batch
    if graph.dtype not in (torch.float32, torch.float64):
        raise DtypeMismatchError(f"{what} has {graph.dtype} weights; scores, paths and samples are computed for "
                                 "float32 and float64 graphs (convert with g.to(dtype=torch.float32))")
    return graph, batched


def _count(value: object, what: str, least: int) -> int:
    """An integer argument (a count) that must be at least ``least``."""
    number = as_integer(value, what, ArgumentValueError)
    if number < least:
        raise ArgumentValueError(f"{what} is {number}; it must be at least {least}")
    return number


def _nonnegative(value: object, what: str) -> float:
    """A number argument (a beam) that must be >= 0 (inf allowed)."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype.is_floating_point:
        value = float(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(f"{what} must be a number, not {type(value).__name__}")
    if not value >= 0:
        raise ArgumentValueError(f"{what} is {value}; it must be a number >= 0 (a score difference)")
    return float(value)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def shortest_distance(g: GraphLike, semiring: SemiringLike = "log", reverse: bool = False) -> Tensor:
    """Distance of every node ``[N]`` (of the whole batch): forward, the total over paths
    from the start nodes (with their start weights) to the node; ``reverse``, the total over
    paths from the node to the accept nodes (with their final weights).

    Unreachable nodes get -inf. Not differentiable (use :func:`total_score` for gradients).
    Raises :class:`DivergenceError` if some node's distance diverges (cyclic graphs, see the
    module documentation). A semiring without closed forms gives each node's distance as it
    reads out (e.g. ``KMaxSemiring(k)``: ``[N, k]``), on acyclic graphs.
    """
    graph, _ = _as_graph(g)
    reverse = bool(reverse)
    sr = get_semiring(semiring, any_semiring=True)
    if not sr.closed_form:
        tail, head = (graph.dst, graph.src) if reverse else (graph.src, graph.dst)
        init = graph.final_weights if reverse else graph.start_weights
        with torch.no_grad():
            return sr.readout(element_distances(graph.num_nodes, tail, head, graph.weights, init, sr))
    return node_distances(graph, sr, reverse)[0]


def push(g: GraphLike, semiring: SemiringLike = "log", toward: str = "start") -> Graph:
    """The same graph (or batch; a list gives a batch) with its weights pushed ``toward`` the start or the
    end: every path keeps its score, but each node's potential moves onto the arcs.

    ``"start"``: with ``beta(q)`` the total from node ``q`` to the accept nodes, an arc ``p -> q``
    weighs ``w + beta(q) - beta(p)``, a final weight ``rho(q) - beta(q)`` and a start weight
    ``lambda(q) + beta(q)``; in the log semiring the arcs and final weight out of each useful node
    then sum to probability 1 (a stochastic graph, the total left on the start weights), in the
    tropical one each node's best continuation scores 0. ``"end"``: the same with the forward
    totals ``alpha(q)`` from the start nodes (``w + alpha(p) - alpha(q)``, final weights
    ``rho(q) + alpha(q)``, start weights ``lambda(q) - alpha(q)``). Arcs and nodes on no
    successful path get -inf. Differentiable w.r.t. the weights; cyclic graphs are pushed when
    their totals converge (else :class:`DivergenceError`). Labels and structure are unchanged.
    """
    graph, _ = _as_graph(g)
    if toward not in ("start", "end"):
        raise ArgumentValueError(f"toward must be 'start' or 'end', not {toward!r}")
    sr = get_semiring(semiring)
    if toward == "start":
        potential = path_distances(graph.num_nodes, graph.dst, graph.src, graph.weights, graph.final_weights, sr)
        weights = graph.weights + potential[graph.dst] - potential[graph.src]
        start, final = graph.start_weights + potential, graph.final_weights - potential
    else:
        potential = path_distances(graph.num_nodes, graph.src, graph.dst, graph.weights, graph.start_weights, sr)
        weights = graph.weights + potential[graph.src] - potential[graph.dst]
        start, final = graph.start_weights - potential, graph.final_weights + potential
    useless = potential == NEG_INF  # -inf - -inf: a node (and its arcs) on no successful path
    neg_inf = weights.new_full((), NEG_INF)
    return graph.replace(weights=torch.where(useless[graph.src] | useless[graph.dst], neg_inf, weights),
                         start_weights=torch.where(useless, neg_inf, start),
                         final_weights=torch.where(useless, neg_inf, final))


# ---------------------------------------------------------------------- totals and gradients
def _totals(g: Graph, sr: Semiring, alpha: Tensor) -> Tensor:
    """Per-graph totals from forward distances (only accept nodes contribute)."""
    final = g.final_weights.detach()
    accept = (final > NEG_INF).nonzero().reshape(-1)
    return sr.segment_plus(alpha[accept] + final[accept], g.node_graph[accept], g.num_graphs)


def _best_ends(g: Graph, alpha: Tensor) -> Tensor:
    """Per graph, the accept node ending its best path (-1 where it has no successful path)."""
    scores = alpha + g.final_weights.detach()
    best = segment_max(scores, g.node_graph, g.num_graphs)
    ends = segment_argmax(scores, g.node_graph, best)
    return torch.where(best > NEG_INF, ends, ends.new_full((), -1))


def _best_paths(g: Graph, alpha: Tensor, pred: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The best path of each graph from tropical forward distances: ``(arcs, counts, firsts,
    lasts)`` with arcs concatenated in path order and -1 first/last nodes where none."""
    ends = _best_ends(g, alpha)
    arcs, counts, firsts = follow_backpointers(_numpy(pred), _numpy(g.src), _numpy(ends), g.num_nodes)
    device = g.device
    return (torch.from_numpy(arcs).to(device), torch.from_numpy(counts).to(device),
            torch.from_numpy(firsts).to(device), ends)


def _path_shares(g: Graph, sr: Semiring, alpha: Tensor, total: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """For every arc, start and final weight: the total of the successful paths through it
    (tropical: the best of them) minus its graph's total, ``<= 0``; -inf where the graph
    has no path (-inf - -inf, and no change of a term makes it reachable). Log semiring:
    ``exp(beta * share)`` is the posterior probability."""
    w, start, final = g.weights.detach(), g.start_weights.detach(), g.final_weights.detach()
    to_end, _ = node_distances(g, sr, reverse=True, useful_only=True)
    node_total = total[g.node_graph]

    def share(score: Tensor, dist: Tensor) -> Tensor:
        return torch.where(dist > NEG_INF, score - dist, dist)

    return (share(alpha[g.src] + w + to_end[g.dst], node_total[g.src]), share(start + to_end, node_total),
            share(alpha + final, node_total))


def _posteriors(g: Graph, sr: Semiring, alpha: Tensor, total: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of the per-graph totals w.r.t. arc, start and final weights (summed over
    graphs). Log semiring: the posterior probabilities ``exp(beta (alpha[src] + w +
    dist_to_end[dst] - total))``; tropical: the indicator of one best path."""
    w, start, final = g.weights.detach(), g.start_weights.detach(), g.final_weights.detach()
    if sr.idempotent:
        _, pred = node_distances(g, sr, reverse=False, useful_only=True)
        arcs, _, firsts, lasts = _best_paths(g, alpha, pred)

        def counts(like: Tensor, index: Tensor) -> Tensor:
            index = index[index >= 0]
            return torch.zeros_like(like).index_add_(0, index, like.new_ones(index.shape))

        return counts(w, arcs), counts(start, firsts), counts(final, lasts)
    arc_share, start_share, final_share = _path_shares(g, sr, alpha, total)
    return torch.exp(sr.beta * arc_share), torch.exp(sr.beta * start_share), torch.exp(sr.beta * final_share)


class _TotalScore(torch.autograd.Function):
    """Per-graph totals with a closed-form backward (forward-backward, or the best path)."""

    @staticmethod
    def forward(ctx, weights: Tensor, start: Tensor, final: Tensor,  # type: ignore[override]
                g: Graph, sr: Semiring) -> Tensor:
        alpha, _ = node_distances(g, sr, reverse=False, useful_only=True)
        total = _totals(g, sr, alpha)
        ctx.g, ctx.sr, ctx.alpha, ctx.total = g, sr, alpha, total
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total: Tensor):  # type: ignore[override]
        g = ctx.g
        arc_grad, start_grad, final_grad = _posteriors(g, ctx.sr, ctx.alpha, ctx.total)
        # a NaN total (a NaN weight on a successful path) gives NaN gradients to its graph, as
        # autograd through torch's sums would; elementwise, no host sync
        nan_total = torch.isnan(ctx.total)
        node_scale = torch.where(nan_total, ctx.total, grad_total)[g.node_graph]
        return arc_grad * node_scale[g.src], start_grad * node_scale, final_grad * node_scale, None, None


def total_score(g: GraphLike, semiring: SemiringLike = "log", backend: str = "native") -> Tensor:
    """Total score of each graph in ``semiring``: the semiring sum over successful paths of
    ``start weight + arc weights + final weight`` (-inf where there is none).

    Differentiable w.r.t. arc, start and final weights in closed form: in the log semiring
    (any ``beta``) the gradient is the arcs' posterior probability; in the tropical semiring
    it is the indicator of one best path (ties: the path :func:`viterbi_path` returns).

    Any other semiring (:attr:`~gtn_py.semiring.Semiring.closed_form` false) is evaluated on
    acyclic graphs through its interface, with gradients by autograd, and the totals are what
    its elements read out: ``EntropySemiring()`` (or ``"entropy"``) gives the entropy of each
    graph's path distribution, ``KMaxSemiring(k)`` the scores of its ``k`` best paths
    (``[..., k]``).

    ``backend="k2"`` computes the same totals and gradients with k2 (acyclic graphs, the log
    and tropical semirings; see :mod:`gtn_py.k2` and :mod:`gtn_py.backends`).
    """
    other = get_backend(backend)
    if other is not None:
        return other.total_score(g, get_semiring(semiring))
    graph, batched = _as_graph(g)
    sr = get_semiring(semiring, any_semiring=True)
    if sr.closed_form:
        total = _TotalScore.apply(graph.weights, graph.start_weights, graph.final_weights, graph, sr)
    else:
        alpha = element_distances(graph.num_nodes, graph.src, graph.dst, graph.weights, graph.start_weights, sr)
        ending = sr.times(alpha, sr.lift(graph.final_weights))
        total = sr.readout(sr.segment_plus(ending, graph.node_graph, graph.num_graphs))
    return total if batched else total[0]


def forward_score(g: GraphLike, backend: str = "native") -> Tensor:
    """Log-semiring total (log-partition function) of each graph; see :func:`total_score`."""
    return total_score(g, LOG, backend)


def viterbi_score(g: GraphLike, backend: str = "native") -> Tensor:
    """Best-path score of each graph; see :func:`total_score`."""
    return total_score(g, "tropical", backend)


def arc_posteriors(g: GraphLike) -> Tensor:
    """Posterior probability ``[A]`` of each arc under the log semiring (the expected number of
    times a path drawn with probability ``exp(score - forward_score)`` uses the arc), i.e. the
    gradient of :func:`forward_score` w.r.t. the arc weights; 0 where the graph has no path."""
    graph, _ = _as_graph(g)
    alpha, _ = node_distances(graph, LOG, reverse=False, useful_only=True)
    return _posteriors(graph, LOG, alpha, _totals(graph, LOG, alpha))[0]


def path_entropy(g: GraphLike) -> Tensor:
    """Entropy (nats) of the path distribution of each graph: a path ``pi`` has probability
    ``exp(score(pi) - forward_score(g))``, and ``H = forward_score - E[score]``, the expected
    score read off the arc, start and final posteriors of one forward and one backward pass.
    0-dim for a single graph, ``[B]`` for a batch or list; 0 for a graph with one successful
    path, NaN where a graph has none. Differentiable w.r.t. the weights (the posteriors are built
    from differentiable distances, so no second derivative of the forward algorithm is needed):
    e.g. an entropy bonus on a lattice from :func:`~gtn_py.ops.dense.intersect_dense`. Cyclic
    graphs whose sums converge are supported (else :class:`DivergenceError`). On acyclic graphs
    it equals ``total_score(g, EntropySemiring())``, the same quantity from the entropy
    semiring's algebra (a level sweep with autograd, where this is two compiled sweeps)."""
    graph, batched = _as_graph(g)
    # in float64: the entropy is a difference of two totals of the size of the path scores
    w, start, final = graph.weights.double(), graph.start_weights.double(), graph.final_weights.double()
    alpha = path_distances(graph.num_nodes, graph.src, graph.dst, w, start, LOG)
    beta = path_distances(graph.num_nodes, graph.dst, graph.src, w, final, LOG)
    total = LOG.segment_plus(alpha + final, graph.node_graph, graph.num_graphs)
    node_total = total[graph.node_graph]

    def expected(log_posterior: Tensor, score: Tensor, owner: Tensor) -> Tensor:
        """Per graph, the sum of posterior * score (0 where the posterior is 0, even at -inf)."""
        posterior = torch.exp(log_posterior)
        # Mask the score before the product: at a -inf score the product's gradient would be NaN.
        term = posterior * torch.where(posterior > 0, score, torch.zeros_like(score))
        return term.new_zeros(graph.num_graphs).index_add(0, owner, term)

    arc_graph = graph.node_graph[graph.src]
    mean_score = (expected(alpha[graph.src] + w + beta[graph.dst] - total[arc_graph], w, arc_graph)
                  + expected(start + beta - node_total, start, graph.node_graph)
                  + expected(alpha + final - node_total, final, graph.node_graph))
    entropy = torch.where(total > NEG_INF, total - mean_score, torch.full_like(total, math.nan)).to(graph.dtype)
    return entropy if batched else entropy[0]


def _best_path_share(g: Graph, alpha: Tensor, pred: Tensor, shares: Tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Per graph, the least tropical share (:func:`_path_shares`) of the arcs, start and final
    weight of its best path: 0 but for rounding (the shares of its weights are sums in other
    orders than the total), so measuring a beam from it keeps the best path at beam 0."""
    arc_share, start_share, final_share = shares
    arcs, _, firsts, lasts = _best_paths(g, alpha, pred)
    least = arc_share.new_zeros(g.num_graphs).scatter_reduce(0, g.node_graph[g.src[arcs]], arc_share[arcs],
                                                             reduce="amin", include_self=True)
    found = (lasts >= 0).nonzero().reshape(-1)
    ends = torch.minimum(start_share[firsts[found]], final_share[lasts[found]])
    return least.index_put((found,), torch.minimum(least[found], ends))


@overload
def prune(g: GraphLike, beam: float | None = None, *, min_posterior: float | None = None,
          return_arc_map: Literal[False] = False) -> Graph: ...
@overload
def prune(g: GraphLike, beam: float | None = None, *, min_posterior: float | None = None,
          return_arc_map: Literal[True]) -> Tuple[Graph, Tensor]: ...
def prune(g: GraphLike, beam: float | None = None, *, min_posterior: float | None = None,
          return_arc_map: bool = False) -> Graph | Tuple[Graph, Tensor]:
    """Keep only what lies on good paths, per graph (a list or batch gives a batch).

    ``beam``: the arcs and nodes on some successful path whose score is within ``beam`` of
    its graph's best path, and the start (final) weights that begin (end) such a path:
    OpenFst's ``Prune`` with weight threshold ``beam``. ``min_posterior``: the arcs, start and
    final weights whose posterior probability (log semiring, as :func:`arc_posteriors`) is at
    least that, then the nodes still on a successful path. Both: what passes both.
    The beam is measured from the best path's own scores, so that it always stays, even with
    ``beam=0`` (in float32 a total of a long path carries rounding). A graph without a path
    becomes empty.

    Node and arc order are kept and the weights are gathers of ``g``'s (differentiable), as in
    :func:`~gtn_py.ops.structure.connect`. As with OpenFst, the result can still hold a path
    worse than the beam, made of arcs that each lie on a good path.

    ``return_arc_map``: also return the arc map, the index in ``g`` (its batch, for a list) of
    each arc kept (``[E]``), so that per-arc attributes follow: ``values[arc_map]``.
    """
    graph, _ = _as_graph(g)
    with_map = as_flag(return_arc_map, "return_arc_map")
    if beam is None and min_posterior is None:
        raise ArgumentValueError("prune needs a beam, a min_posterior or both")
    if beam is not None:
        beam = _nonnegative(beam, "beam")
    if min_posterior is not None:
        min_posterior = _nonnegative(min_posterior, "min_posterior")
        if not 0 < min_posterior <= 1:
            raise ArgumentValueError(f"min_posterior is {min_posterior}; a posterior probability must be in (0, 1]")
    keep = [torch.ones_like(t, dtype=torch.bool) for t in (graph.weights, graph.start_weights, graph.final_weights)]
    for sr, bound in ((get_semiring("tropical"), beam), (LOG, min_posterior)):
        if bound is None:
            continue
        alpha, pred = node_distances(graph, sr, reverse=False, useful_only=True)
        total = _totals(graph, sr, alpha)
        shares = _path_shares(graph, sr, alpha, total)
        if sr.idempotent:
            floor = _best_path_share(graph, alpha, pred, shares) - bound
        else:
            floor = math.log(bound) - 8 * torch.finfo(graph.dtype).eps * (1 + total.abs())
        node_floor = floor[graph.node_graph]
        for kept, share, share_floor in zip(keep, shares, (node_floor[graph.src], node_floor, node_floor)):
            kept &= share >= share_floor
    arcs, start_kept, final_kept = keep
    neg_inf = graph.weights.new_full((), NEG_INF)
    masked = graph.with_weights(graph.weights, torch.where(final_kept, graph.final_weights, neg_inf),
                                torch.where(start_kept, graph.start_weights, neg_inf))
    pruned, pruned_arcs = subgraph_with_arc_map(masked, torch.arange(graph.num_nodes, device=graph.device),
                                                arcs=arcs)
    out, connected_arcs = connect(pruned, return_arc_map=True)
    return (out, pruned_arcs[connected_arcs]) if with_map else out


# ---------------------------------------------------------------------- paths as graphs
def _path_graphs(g: Graph, arcs: Tensor, counts: Tensor, firsts: Tensor, lasts: Tensor) -> Graph:
    """A batch of linear graphs, one per path (``counts`` arcs each, concatenated in
    ``arcs``; a path with first node -1 does not exist and gives a graph with no nodes).
    Labels are copied and weights gathered from ``g``, so gradients flow back to it."""
    device = g.device
    exists = firsts >= 0
    sizes = torch.where(exists, counts + 1, torch.zeros_like(counts))
    node_offsets = torch.cumsum(sizes, 0) - sizes
    arc_offsets = torch.cumsum(counts, 0) - counts
    path_of_arc = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts)
    src = node_offsets[path_of_arc] + torch.arange(arcs.shape[0], device=device) - arc_offsets[path_of_arc]
    num_nodes = int(sizes.sum())
    start_index = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
    final_index = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
    start_index[node_offsets[exists]] = firsts[exists]
    final_index[(node_offsets + counts)[exists]] = lasts[exists]
    return Graph.from_tensors(
        src, src + 1, g.ilabel[arcs], g.olabel[arcs], g.weights.index_select(0, arcs),
        gather(g.start_weights, start_index, NEG_INF), gather(g.final_weights, final_index, NEG_INF),
        node_graph=torch.repeat_interleave(torch.arange(counts.shape[0], device=device), sizes),
        num_graphs=int(counts.shape[0]))


def _single(path_batch: Graph) -> Graph:
    """A batch of one path as a plain graph."""
    return path_batch.replace(node_graph=None)  # type: ignore[arg-type]


def viterbi_path(g: GraphLike) -> Graph:
    """The best path of each graph as a linear graph (a batch in, a batch out). Its labels are
    the path's and its weights are gathered from the input's arcs, start and final weights,
    so ``total_score(viterbi_path(g), "tropical")`` is differentiable w.r.t. ``g``. A graph
    without a successful path gives a graph with no nodes. Ties are broken deterministically."""
    graph, batched = _as_graph(g)
    alpha, pred = node_distances(graph, get_semiring("tropical"), reverse=False, useful_only=True)
    paths = _path_graphs(graph, *_best_paths(graph, alpha, pred))
    return paths if batched else _single(paths)


# ---------------------------------------------------------------------- n-best
@numba.njit(cache=True, nogil=True)
def _tree_arcs(succ, head, node, target):  # pragma: no cover - jitted
    """Arcs from ``node`` along best-successor pointers until ``target`` (or, with target
    -1, to where the best path stops); also returns the node reached."""
    count = 0
    n = node
    while n != target and succ[n] >= 0:
        count += 1
        n = head[succ[n]]
    arcs = np.empty(count, np.int64)
    n = node
    for i in range(count):
        arcs[i] = succ[n]
        n = head[succ[n]]
    return arcs, n


class _Sidetracks:
    """The deviations from a graph's best-continuation tree, for exact k-best enumeration.

    Every path is its start node plus the ordered list of its *sidetracks*: arcs it takes
    that are not the best continuation of their tail, or stopping at an accept node whose
    best continuation goes on (coded ``-1 - node``). A sidetrack's ``delta <= 0`` is the score
    it loses, so a path scores ``start + to_end[start] + sum(deltas)``, and extending a
    path's sidetrack list never raises its score: best-first search over these lists, where
    a path's children add one sidetrack on the tree walk after its last one, yields every
    path exactly once in descending score (Eppstein's construction, with the candidate
    sidetracks of each walk sorted at once instead of kept in persistent heaps).
    """

    def __init__(self, g: Graph):
        to_end, succ = node_distances(g, get_semiring("tropical"), reverse=True, useful_only=True)
        self.src, self.dst = _numpy(g.src), _numpy(g.dst)
        self.final = _numpy(g.final_weights).astype(np.float64)
        self.to_end = _numpy(to_end).astype(np.float64)
        self.succ = _numpy(succ)
        self.out_order, self.out_offsets = csr_arcs(g.num_nodes, self.src)
        with np.errstate(invalid="ignore"):  # -inf - -inf: an arc on no successful path
            delta = _numpy(g.weights).astype(np.float64) + self.to_end[self.dst] - self.to_end[self.src]
        delta[np.isnan(delta)] = NEG_INF
        delta[self.succ[self.src] == np.arange(self.src.shape[0])] = NEG_INF  # tree arcs are no sidetrack
        self.delta = delta

    def along(self, node: int) -> Tuple[np.ndarray, np.ndarray]:
        """Sidetracks on the tree walk from ``node`` (codes and deltas, best first)."""
        walk = np.concatenate([[node], self.dst[_tree_arcs(self.succ, self.dst, node, -1)[0]]])
        lo, hi = self.out_offsets[walk], self.out_offsets[walk + 1]
        arcs = self.out_order[np.repeat(hi - np.cumsum(hi - lo), hi - lo) + np.arange((hi - lo).sum())]
        stops = walk[(self.final[walk] > NEG_INF) & (self.succ[walk] >= 0)]
        codes = np.concatenate([arcs, -1 - stops])
        deltas = np.concatenate([self.delta[arcs], self.final[stops] - self.to_end[stops]])
        keep = deltas > NEG_INF
        codes, deltas = codes[keep], deltas[keep]
        best_first = np.argsort(-deltas, kind="stable")
        return codes[best_first], deltas[best_first]

    def arcs_of(self, first: int, sidetracks: List[int]) -> Tuple[np.ndarray, int]:
        """The arcs of the path with these sidetracks, and its last node."""
        pieces, node = [], first
        for code in sidetracks:
            target = int(self.src[code]) if code >= 0 else -1 - code
            walk, node = _tree_arcs(self.succ, self.dst, node, target)
            pieces.append(walk)
            if code < 0:
                return np.concatenate(pieces), node
            pieces.append(np.array([code]))
            node = int(self.dst[code])
        walk, node = _tree_arcs(self.succ, self.dst, node, -1)
        pieces.append(walk)
        return np.concatenate(pieces).astype(np.int64), node


def _enumerate(g: Graph, tracks: _Sidetracks, nodes: np.ndarray, start: np.ndarray, k: int,
               max_paths: int) -> List[Tuple[np.ndarray, int, int]]:
    """The k best paths starting in ``nodes`` (one graph's), as (arcs, first node, last node)."""
    roots = start[nodes] + tracks.to_end[nodes]
    keep = roots > NEG_INF
    order = np.argsort(-roots[keep], kind="stable")
    # groups: (parent path, candidate codes, candidate score gains, parent score)
    groups = [(-1, nodes[keep][order], roots[keep][order], 0.0)]
    paths: List[Tuple[int, int]] = []  # (parent path, code); a root's code is its start node
    heap: List[Tuple[float, int, int]] = []
    if len(order):
        heap.append((-float(roots[keep][order][0]), 0, 0))
    found: List[Tuple[np.ndarray, int, int]] = []
    while heap and len(found) < k and len(paths) < max_paths:
        negative, group, i = heapq.heappop(heap)
        parent, codes, gains, base = groups[group]
        if i + 1 < len(codes):
            heapq.heappush(heap, (-(base + gains[i + 1]), group, i + 1))
        paths.append((parent, int(codes[i])))
        path_id = len(paths) - 1
        code = int(codes[i])
        resume = code if parent == -1 else (int(tracks.dst[code]) if code >= 0 else -1)
        if resume >= 0:
            child_codes, child_gains = tracks.along(resume)
            if len(child_codes):
                groups.append((path_id, child_codes, child_gains, -negative))
                heapq.heappush(heap, (negative - child_gains[0], len(groups) - 1, 0))
        sidetracks = []
        p = path_id
        while paths[p][0] != -1:
            sidetracks.append(paths[p][1])
            p = paths[p][0]
        first = paths[p][1]
        arcs, last = tracks.arcs_of(first, sidetracks[::-1])
        found.append((arcs, first, last))
    return found


def _distinct_outputs(tracks: _Sidetracks, nodes: np.ndarray, start: np.ndarray, weights: np.ndarray,
                      olabel: np.ndarray, k: int, max_states: int) -> List[Tuple[np.ndarray, int, int]]:
    """The best path of each of the k best distinct output strings starting in ``nodes`` (one
    graph's), as (arcs, first node, last node), best first.

    A* over partial paths keyed by (node, output so far, epsilons removed), with the exact best
    completion ``to_end`` as heuristic, so partial paths leave the queue best total first. The
    first partial path to leave it with a given key is the best one with that key; a later one
    with the same key is dropped: each completion of it has a better twin with the same output
    from the first. So every key is expanded at most once (a cycle that only repeats an output
    costs nothing, as in OpenFst's ``ShortestPath(unique=true)``), and a path that stops at an
    accept node is the best of its output the first time that output stops. At most
    ``max_states`` keys are expanded."""
    to_end, final = tracks.to_end, tracks.final
    out_order, out_offsets, dst = tracks.out_order, tracks.out_offsets, tracks.dst
    prefix_ids: dict = {}  # (prefix id, label) -> prefix id; 0 is the empty output
    expanded: set = set()
    emitted: set = set()
    # entries: (parent entry, arc) per partial path; a root's "arc" is its start node (parent -1)
    parents: List[int] = []
    moves: List[int] = []
    heap: List[Tuple[float, int, int, int, int, float, bool]] = []  # (-priority, tie, entry, node, prefix, score, stop)
    for n in nodes[start[nodes] + to_end[nodes] > NEG_INF]:
        parents.append(-1)
        moves.append(int(n))
        heap.append((-(start[n] + to_end[n]), len(heap), len(parents) - 1, int(n), 0, float(start[n]), False))
    heapq.heapify(heap)
    found: List[Tuple[np.ndarray, int, int]] = []
    tie = len(heap)
    while heap and len(found) < k:
        _, _, entry, node, prefix, score, stop = heapq.heappop(heap)
        if stop:
            if prefix in emitted:
                continue
            emitted.add(prefix)
            arcs = []
            while parents[entry] != -1:
                arcs.append(moves[entry])
                entry = parents[entry]
            found.append((np.array(arcs[::-1], dtype=np.int64), moves[entry], node))
            continue
        if (node, prefix) in expanded:
            continue
        if len(expanded) >= max_states:
            break
        expanded.add((node, prefix))
        if final[node] > NEG_INF:
            tie += 1
            heapq.heappush(heap, (-(score + final[node]), tie, entry, node, prefix, score + final[node], True))
        for arc in out_order[out_offsets[node]:out_offsets[node + 1]]:
            m = int(dst[arc])
            ahead = weights[arc] + to_end[m]
            if not ahead > NEG_INF:
                continue
            label = int(olabel[arc])
            following = prefix if label == 0 else prefix_ids.setdefault((prefix, label), len(prefix_ids) + 1)
            if (m, following) in expanded:
                continue
            parents.append(entry)
            moves.append(int(arc))
            tie += 1
            heapq.heappush(heap, (-(score + ahead), tie, len(parents) - 1, m, following,
                                  score + float(weights[arc]), False))
    return found


def _split(paths: Graph, sizes: Sequence[int], batched: bool) -> List[Graph]:
    """Cut a batch of paths (as :func:`_path_graphs` makes them: nodes and arcs in path
    order) into consecutive groups of ``sizes`` paths: one batch per group if ``batched``,
    else every path on its own (then ``sizes`` are all 1). Slices keep gradients."""
    node_counts = torch.bincount(paths.node_graph, minlength=paths.num_graphs).tolist()
    arc_counts = torch.bincount(paths.arc_graph, minlength=paths.num_graphs).tolist()
    out, path, node, arc = [], 0, 0, 0
    for size in sizes:
        nodes, arcs = sum(node_counts[path:path + size]), sum(arc_counts[path:path + size])
        part = Graph.from_tensors(
            paths.src[arc:arc + arcs] - node, paths.dst[arc:arc + arcs] - node, paths.ilabel[arc:arc + arcs],
            paths.olabel[arc:arc + arcs], paths.weights[arc:arc + arcs], paths.start_weights[node:node + nodes],
            paths.final_weights[node:node + nodes],
            node_graph=paths.node_graph[node:node + nodes] - path if batched else None,
            num_graphs=size if batched else 1)
        out.append(part)
        path, node, arc = path + size, node + nodes, arc + arcs
    return out


def _as_path_graphs(g: Graph, per_graph: List[List[Tuple[np.ndarray, int, int]]], batched: bool) -> List[Graph]:
    """Linear graphs of enumerated (arcs, first node, last node) paths: a list of paths for a
    single graph, else one batch of paths per graph."""
    flat = [p for paths in per_graph for p in paths]
    device = g.device

    def column(values: List[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    arcs = torch.from_numpy(np.concatenate([p[0] for p in flat] + [np.zeros(0, np.int64)])).to(device)
    paths = _path_graphs(g, arcs, column([len(p[0]) for p in flat]), column([p[1] for p in flat]),
                         column([p[2] for p in flat]))
    return _split(paths, [len(p) for p in per_graph] if batched else [1] * len(flat), batched)


def n_best(g: GraphLike, k: int, distinct_outputs: bool = False, max_paths: int = 100000) -> List[Graph]:
    """The ``k`` best paths of a graph in descending score, each a linear graph whose weights
    are gathered from ``g`` (differentiable like :func:`viterbi_path`); fewer if the graph has
    fewer paths. For a batch (or list) of graphs: one batch of paths per graph.

    Exact for acyclic and cyclic graphs (tropical scores; a cycle with positive score raises
    :class:`DivergenceError`; a NaN weight on a successful path raises :class:`WeightError`).
    Paths are distinct as arc sequences; with ``distinct_outputs=True`` they are the best paths
    of the ``k`` best distinct output strings (epsilons removed), found by A* search over
    (node, output so far) that expands each such pair once, so paths that only repeat an
    output (an epsilon-output cycle) cost nothing. At most ``max_paths`` paths (with
    ``distinct_outputs``: (node, output) pairs) are enumerated per graph, a bound on the time;
    what is returned is then still the correct best prefix of the list.

    Cost per path: a walk along the best-continuation tree and a sort of the sidetracks on
    it (numpy), on the CPU over detached copies of the weights.
    """
    k = _count(k, "k", 1)
    max_paths = _count(max_paths, "max_paths", 0)
    graph, batched = _as_graph(g)
    tracks = _Sidetracks(graph)
    start = _numpy(graph.start_weights).astype(np.float64)
    if np.isnan(tracks.to_end).any():
        raise WeightError("n_best: a NaN weight lies on a successful path, so the order of the paths is undefined")
    node_graph = _numpy(graph.node_graph)
    if distinct_outputs:
        weights, olabel = _numpy(graph.weights).astype(np.float64), _numpy(graph.olabel)
        per_graph = [_distinct_outputs(tracks, np.flatnonzero(node_graph == i), start, weights, olabel, k,
                                       max_paths) for i in range(graph.num_graphs)]
    else:
        per_graph = [_enumerate(graph, tracks, np.flatnonzero(node_graph == i), start, k, max_paths)
                     for i in range(graph.num_graphs)]
    return _as_path_graphs(graph, per_graph, batched)


# ---------------------------------------------------------------------- sampling
def _draw(segment: Tensor, probs: Tensor, targets: Tensor, u: Tensor, num_segments: int,
          may_skip: Tensor) -> Tensor:
    """For each target segment, an entry drawn with probability ``probs`` (entries sorted by
    ``segment``; each segment's probabilities sum to at most 1) by inverting the cumulative
    sum at ``u``; -1 for the remainder where ``may_skip``, else the segment's last entry with
    a positive probability (rounding), and -1 for segments without one."""
    counts = torch.bincount(segment, minlength=num_segments)
    offsets = torch.cumsum(counts, 0) - counts
    cumulative = torch.cumsum(probs, 0)
    before = (cumulative - probs)[offsets.clamp(max=max(probs.shape[0] - 1, 0))] if probs.numel() else offsets.double()
    # segment id + cumulative probability within it: sorted across all segments at once
    keys = segment.double() + (cumulative - before[segment]).clamp(max=1.0)
    drawn = torch.searchsorted(keys, targets.double() + u, right=True)
    inside = drawn < (offsets + counts)[targets]
    index = torch.arange(probs.shape[0], device=probs.device)
    positive = torch.where(probs > 0, index, index.new_full((), -1))
    last = index.new_full((num_segments,), -1).scatter_reduce(0, segment, positive, "amax", include_self=True)
    fallback = torch.where(may_skip, drawn.new_full((), -1), last[targets])
    return torch.where(inside, drawn, fallback)


def sample(g: GraphLike, n: int, generator: torch.Generator | None = None) -> List[Graph]:
    """``n`` paths per graph drawn with probability ``exp(score - forward_score)``: forward
    filtering, backward sampling, vectorized over all samples of all graphs (one loop
    iteration per arc of the longest sampled path). Each path is a linear graph with weights
    gathered from ``g``. A single graph gives a list of ``n`` paths; a batch or list gives
    one batch of ``n`` paths per graph. Graphs without a successful path give empty graphs
    (no nodes)."""
    n = _count(n, "n", 1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(f"generator must be a torch.Generator or None, not {type(generator).__name__}")
    graph, batched = _as_graph(g)
    device = graph.device
    alpha, _ = node_distances(graph, LOG, reverse=False, useful_only=True)
    w, start, final = graph.weights.detach(), graph.start_weights.detach(), graph.final_weights.detach()
    total = _totals(graph, LOG, alpha)
    if bool(torch.isnan(total).any()):
        bad = int(torch.isnan(total).nonzero()[0, 0])
        raise WeightError(f"sample: graph {bad} has a NaN weight on a successful path, so its path "
                          "probabilities are undefined")
    useful = useful_arcs(graph)
    num_samples = graph.num_graphs * n
    owner = torch.arange(graph.num_graphs, device=device).repeat_interleave(n)

    def uniform() -> Tensor:
        return torch.rand(num_samples, generator=generator, dtype=torch.float64, device=device)

    def probability(log_p: Tensor) -> Tensor:
        return torch.exp(torch.nan_to_num(log_p.double(), nan=NEG_INF))

    # the last node: an accept node, with probability exp(alpha + final - total)
    by_graph = torch.argsort(graph.node_graph, stable=True)
    end_probs = probability(alpha + final - total[graph.node_graph])[by_graph]
    ends = _draw(graph.node_graph[by_graph], end_probs, owner, uniform(), graph.num_graphs,
                 torch.zeros_like(owner, dtype=torch.bool))
    if graph.num_nodes:  # else no graph has a path: every end is -1
        ends = torch.where(ends >= 0, by_graph[ends.clamp(min=0)], ends)
    # then backwards: into node v by arc a with probability exp(alpha[src] + w - alpha[v]),
    # or start at v with the remaining probability exp(start[v] - alpha[v])
    by_dst = torch.argsort(graph.dst, stable=True)
    # only arcs on a successful path: an arc into a dead end (alpha -inf there, since its
    # distances ignore arcs off every successful path) would get probability exp(+inf)
    arc_probs = probability(torch.where(useful, alpha[graph.src] + w - alpha[graph.dst],
                                        w.new_full((), NEG_INF)))[by_dst]
    is_start = start > NEG_INF
    node, alive, steps = ends, ends >= 0, []
    while graph.num_arcs and bool(alive.any()):
        here = node.clamp(min=0)
        drawn = _draw(graph.dst[by_dst], arc_probs, here, uniform(), graph.num_nodes, is_start[here])
        alive = alive & (drawn >= 0)
        arc = torch.where(alive, by_dst[drawn.clamp(min=0)], drawn.new_full((), -1))
        steps.append(arc)
        node = torch.where(alive, graph.src[arc.clamp(min=0)], node)
    history = torch.stack(steps, 1) if steps else torch.zeros(num_samples, 0, dtype=torch.long, device=device)
    counts = (history >= 0).sum(1)
    # arcs were drawn last to first: reverse each sample's prefix of the history
    steps_index = torch.arange(history.shape[1], device=device)[None, :]
    in_order = history.gather(1, (counts[:, None] - 1 - steps_index).clamp(min=0))
    arcs = in_order[steps_index < counts[:, None]]
    paths = _path_graphs(graph, arcs, counts, torch.where(ends >= 0, node, ends), ends)
    return _split(paths, [n] * graph.num_graphs if batched else [1] * n, batched)
