"""Interoperability with k2: convert graphs both ways and compute totals with k2's kernels.

k2 is optional. This module imports without it; every function imports k2 when called and
raises :class:`~gtn_py.errors.BackendUnavailableError` (with install advice) when it is
missing. k2 wheels are built against one exact torch (and CUDA) version, so k2 usually lives
in its own environment: ``bash tools/k2_env.sh`` builds one (Python 3.10, torch 1.13.1,
k2 1.23.4) in ``${XDG_CACHE_HOME:-~/.cache}/gtn_py/k2-py310``.

How the two representations differ, and how the conversions keep the weighted relation exact:

* k2 has one start state (state 0) and one final state (the last one), entered only by arcs
  labelled -1, and no start or final weights. :func:`to_k2` turns every accept node ``u``
  into an arc ``u -> final`` labelled -1 carrying ``final_weights[u]``. A graph whose only
  start node has no incoming arcs keeps that node as state 0 and adds its start weight to
  the node's leaving arcs; otherwise a new state 0 gets a copy of every start node's leaving
  arcs (and final arc) with the start weight added. No epsilon arc is introduced, so the
  result means the same under composition and under dense intersection, where every arc,
  label 0 included, consumes one frame (and the -1 arc the extra final frame k2 adds).
* :func:`from_k2` does the reverse: each state's single -1 arc becomes its final weight. A
  state with several -1 arcs (k2 allows it) keeps them as epsilon arcs into the final state,
  which then becomes an accept node, so that the relation stays exact in every semiring.
* k2 scores are float32: :func:`to_k2` assigns ``fsa.scores`` a float32 gather of the graph's
  arc, start and final weights, and :func:`from_k2` gathers the graph's weights from
  ``fsa.scores``, so gradients flow through both conversions. Only the labels, aux_labels
  (output labels; ragged ones are expanded with ``k2.expand_ragged_attributes``) and scores
  are converted; other k2 attributes are not.

:func:`k2_total_score` and :func:`k2_dense_totals` are the ``backend="k2"`` counterparts of
:func:`gtn_py.ops.shortest.total_score` and :func:`gtn_py.ops.dense.dense_score`, with the
same arguments, return conventions and gradients (up to float32 precision: k2 works in
float32 and accumulates in float64 here). :func:`k2_total_score` needs acyclic graphs (k2's
forward scores run over a topological order) and raises :class:`CyclicGraphError` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Tuple, Union

import torch
from torch import Tensor

from .backends import Backend, register_backend
from .errors import BackendUnavailableError, CyclicGraphError, LabelError
from .graph import NEG_INF, Graph, gather, subgraph
from .ops.traverse import topological_order
from .semiring import Semiring, get_semiring

GraphLike = Union[Graph, Sequence[Graph]]
SemiringLike = Union[str, Semiring]

INSTALL_ADVICE = (
    "k2 is not installed in this Python environment. k2 wheels are built against one exact torch "
    "version: `bash tools/k2_env.sh` (run from the gtn_py repository) builds a Python 3.10 environment "
    "with torch 1.13.1 and k2 1.23.4 in ${XDG_CACHE_HOME:-~/.cache}/gtn_py/k2-py310; elsewhere install "
    "the k2 build that matches your torch and CUDA versions (see k2's installation guide)."
)

# The largest label k2 can hold (labels are int32 there).
_MAX_LABEL = 2**31 - 1


def _import_k2() -> Any:
    try:
        import k2
    except ImportError as err:  # k2 also raises ImportError when its torch version does not match
        raise BackendUnavailableError(f"{INSTALL_ADVICE} (import k2 failed: {err})") from err
    return k2


def is_available() -> bool:
    """Whether k2 can be imported here."""
    try:
        _import_k2()
    except BackendUnavailableError:
        return False
    return True


def _as_graph(graphs: GraphLike) -> Tuple[Graph, bool]:
    """A graph (batching a list) and whether per-graph results get a batch dimension."""
    if isinstance(graphs, Graph):
        return graphs, graphs.is_batch
    return Graph.batch(list(graphs)), True


def _offsets(sizes: Tensor) -> Tensor:
    """Exclusive prefix sums: where each block of ``sizes`` starts."""
    return torch.cumsum(sizes, 0) - sizes


def _splits(sizes: Tensor) -> Tensor:
    """k2 row splits ``[0, cumsum(sizes)]`` (int32)."""
    return torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)]).to(torch.int32)


# ---------------------------------------------------------------------- Graph -> k2
@dataclass
class _K2Arcs:
    """The arcs of the k2 version of a (batch) graph, grouped by state, with their arc maps:
    k2 arc ``i`` carries ``weights[arc[i]] + start_weights[start[i]] + final_weights[final[i]]``
    (each term only where its index is >= 0)."""

    state_splits: Tensor  # [B + 1] int32: states of each FSA
    arc_splits: Tensor    # [S + 1] int32: arcs leaving each state (S states in all)
    src: Tensor           # [K] state of each arc within its FSA
    dst: Tensor
    label: Tensor
    aux_label: Tensor
    arc: Tensor           # [K] index into the graph's arcs, or -1
    start: Tensor         # [K] node whose start weight the arc carries, or -1
    final: Tensor         # [K] node whose final weight the arc carries, or -1

    def scores(self, g: Graph) -> Tensor:
        return (gather(g.weights, self.arc) + gather(g.start_weights, self.start)
                + gather(g.final_weights, self.final))


def _k2_arcs(g: Graph, topsort: bool) -> _K2Arcs:
    """Lay out the k2 states and arcs of ``g`` (all graphs of a batch at once, no loop).

    State numbers within each FSA: 0 is the start (a new state unless the graph has a single
    start node without incoming arcs), then the graph's nodes (in topological order if
    ``topsort``, else by node id), then the new final state.
    """
    device = g.device
    n, num_graphs = g.num_nodes, g.num_graphs
    node_graph, src, dst = g.node_graph, g.src, g.dst
    if g.num_arcs and int(torch.maximum(g.ilabel.max(), g.olabel.max())) > _MAX_LABEL:
        raise LabelError(f"labels above {_MAX_LABEL} do not fit k2's int32 labels")
    is_start = g.start_weights.detach() > NEG_INF
    is_accept = g.final_weights.detach() > NEG_INF
    in_degree = torch.bincount(dst, minlength=n)
    starts_per_graph = torch.bincount(node_graph[is_start], minlength=num_graphs)
    kept_start = is_start & (in_degree == 0) & (starts_per_graph[node_graph] == 1)
    new_start = torch.ones(num_graphs, dtype=torch.bool, device=device)
    new_start[node_graph[kept_start]] = False

    # Number the nodes: sort by (graph, position), a kept start node first.
    if topsort:
        position = torch.empty(n, dtype=torch.long, device=device)
        position[topological_order(g)] = torch.arange(n, device=device)
    else:
        position = torch.arange(n, device=device)
    position = torch.where(kept_start, torch.full_like(position, -1), position)
    node_order = torch.argsort(node_graph * (n + 1) + position + 1)
    rank = torch.empty(n, dtype=torch.long, device=device)
    rank[node_order] = torch.arange(n, device=device)
    nodes_per_graph = torch.bincount(node_graph, minlength=num_graphs)
    first_new = new_start.long()
    state = rank - _offsets(nodes_per_graph)[node_graph] + first_new[node_graph]
    num_states = nodes_per_graph + first_new + 1
    final_state = num_states - 1

    none = torch.full((0,), -1, dtype=torch.long, device=device)

    def minus_ones(like: Tensor) -> Tensor:
        return torch.full_like(like, -1)

    # Four kinds of k2 arcs: (graph, src, dst, label, aux label, arc, start node, final node).
    arcs = torch.arange(g.num_arcs, device=device)
    original = (node_graph[src], state[src], state[dst], g.ilabel, g.olabel, arcs,
                torch.where(kept_start[src], src, minus_ones(src)), minus_ones(src))
    copied = (is_start[src] & new_start[node_graph[src]]).nonzero().reshape(-1)
    start_copies = (node_graph[src[copied]], torch.zeros_like(copied), state[dst[copied]],
                    g.ilabel[copied], g.olabel[copied], copied, src[copied], minus_ones(copied))
    accept = is_accept.nonzero().reshape(-1)
    finals = (node_graph[accept], state[accept], final_state[node_graph[accept]], minus_ones(accept),
              minus_ones(accept), minus_ones(accept),
              torch.where(kept_start[accept], accept, minus_ones(accept)), accept)
    both = (is_start & is_accept & new_start[node_graph]).nonzero().reshape(-1)
    start_finals = (node_graph[both], torch.zeros_like(both), final_state[node_graph[both]],
                    minus_ones(both), minus_ones(both), minus_ones(both), both, both)
    graph_of, k_src, k_dst, label, aux, arc, start, final = (
        torch.cat(parts) if parts else none
        for parts in zip(original, start_copies, finals, start_finals))

    # k2 wants each FSA's arcs grouped by source state.
    state_offset = _offsets(num_states)
    global_src = state_offset[graph_of] + k_src
    order = torch.argsort(global_src, stable=True)
    arcs_per_state = torch.bincount(global_src, minlength=int(num_states.sum()))
    return _K2Arcs(_splits(num_states), _splits(arcs_per_state), k_src[order], k_dst[order],
                   label[order], aux[order], arc[order], start[order], final[order])


def _build_fsa(g: Graph, topsort: bool, vec: bool, scale: float = 1.0) -> Any:
    """The k2 Fsa (``vec``: FsaVec) of ``g`` with differentiable float32 scores (times ``scale``)."""
    k2 = _import_k2()
    from _k2 import RaggedArc  # k2's compiled module: the constructor from a ragged shape

    layout = _k2_arcs(g, topsort)
    values = torch.stack([layout.src, layout.dst, layout.label, torch.zeros_like(layout.src)], 1)
    arc_shape = k2.ragged.create_ragged_shape2(row_splits=layout.arc_splits)
    if vec:
        fsa_shape = k2.ragged.create_ragged_shape2(row_splits=layout.state_splits)
        arc_shape = fsa_shape.compose(arc_shape)
    fsa = k2.Fsa(RaggedArc(arc_shape, values.to(torch.int32)))
    scores = layout.scores(g)
    fsa.scores = (scores * scale if scale != 1.0 else scores).to(torch.float32)
    if not g.is_acceptor:
        fsa.aux_labels = layout.aux_label.to(torch.int32)
    return fsa


def to_k2(graphs: GraphLike, topsort: bool = False) -> Any:
    """Convert a graph to a ``k2.Fsa``, or a batch (or list) of graphs to an FsaVec.

    The k2 version accepts the same weighted relation (see the module docstring for how start
    and final weights become arcs). Transducers get ``aux_labels`` (their output labels).
    ``fsa.scores`` is a float32 differentiable gather of the graph's weights, so gradients of
    anything k2 computes from it reach the graph's arc, start and final weights.

    With ``topsort=True`` states are numbered in a topological order, as k2's forward and
    backward scores need (:class:`CyclicGraphError` for a cyclic graph); otherwise the graph's
    nodes keep their relative order. Raises :class:`BackendUnavailableError` without k2.
    """
    g, batched = _as_graph(graphs)
    return _build_fsa(g, topsort, vec=batched)


# ---------------------------------------------------------------------- k2 -> Graph
def from_k2(fsa: Any, dtype: torch.dtype | None = None) -> Graph:
    """Convert a ``k2.Fsa`` to a Graph (an FsaVec to a batch Graph, one graph per FSA).

    States keep their numbers; state 0 of each FSA is the start node (weight 0), and each
    state's -1 arc becomes its final weight (several -1 arcs from one state stay epsilon arcs
    into the final state, which is then an accept node). ``aux_labels`` become output labels.
    Weights are gathered from ``fsa.scores`` (float32 unless ``dtype`` says otherwise), so
    gradients flow back into k2.
    """
    k2 = _import_k2()
    aux_attr = getattr(fsa, "_tensor_attr", {}).get("aux_labels")
    if aux_attr is not None and not isinstance(aux_attr, Tensor):
        fsa = k2.expand_ragged_attributes(fsa)  # ragged output labels -> chains of arcs
        aux_attr = fsa.aux_labels
    arcs = fsa.arcs
    values = arcs.values()
    device = values.device
    if arcs.num_axes() == 3:
        state_splits = arcs.row_splits(1).long()
        state_graph = arcs.row_ids(1).long()
        arc_state = arcs.row_ids(2).long()
    else:
        num_states = arcs.dim0()
        state_splits = torch.tensor([0, num_states], dtype=torch.long, device=device)
        state_graph = torch.zeros(num_states, dtype=torch.long, device=device)
        arc_state = arcs.row_ids(1).long()
    num_graphs = state_splits.shape[0] - 1
    num_states = int(state_splits[-1])
    first_state = state_splits[:-1]
    nonempty = state_splits[1:] > first_state
    src = arc_state
    dst = values[:, 1].long() + first_state[state_graph[src]]
    label = values[:, 2].long()
    aux = aux_attr.long() if aux_attr is not None else label
    is_final_arc = label == -1
    for name, labels in (("label", label), ("aux_label", aux)):
        bad = ((labels < 0) & ~is_final_arc).nonzero()
        if bad.numel():
            a = int(bad[0, 0])
            raise LabelError(f"k2 arc {a}: {name} {int(labels[a])} is negative on an arc that is not final "
                             "(only final arcs may have -1)")
    scores = fsa.scores if dtype is None else fsa.scores.to(dtype)

    # A state's only -1 arc (with no output label) becomes its final weight.
    finals_per_state = torch.bincount(src[is_final_arc], minlength=num_states)
    to_final_weight = is_final_arc & (finals_per_state[src] == 1) & (aux <= 0)
    final_arc = torch.full((num_states,), -1, dtype=torch.long, device=device)
    final_arc[src[to_final_weight]] = to_final_weight.nonzero().reshape(-1)
    final_weights = gather(scores, final_arc, NEG_INF)
    # The others stay arcs into the final state, as epsilons (keeping a real output label).
    kept = (~to_final_weight).nonzero().reshape(-1)
    kept_final = is_final_arc[kept]
    zero = torch.zeros_like(label[kept])
    ilabel = torch.where(kept_final, zero, label[kept])
    olabel = torch.where(kept_final, aux[kept].clamp(min=0), aux[kept])
    last_state = (state_splits[1:] - 1)[nonempty]
    entered = torch.bincount(dst[kept], minlength=num_states) > 0
    is_last = torch.zeros(num_states, dtype=torch.bool, device=device)
    is_last[last_state] = True
    final_weights = torch.where(is_last & entered, torch.zeros_like(final_weights), final_weights)
    start_weights = torch.full((num_states,), NEG_INF, dtype=scores.dtype, device=device)
    start_weights[first_state[nonempty]] = 0.0

    batched = arcs.num_axes() == 3
    g = Graph.from_tensors(src[kept], dst[kept], ilabel, olabel, scores.index_select(0, kept),
                            start_weights, final_weights, node_graph=state_graph if batched else None,
                            num_graphs=num_graphs if batched else 1)
    # The final state is of no use once no arc enters it.
    useless = is_last & ~entered
    if bool(useless.any()):
        g = subgraph(g, (~useless).nonzero().reshape(-1))
    return g


# ---------------------------------------------------------------------- totals with k2
def _beta(sr: Semiring) -> float:
    """The scale of the scores given to k2: its max-plus sums need none, its log sums 1 / beta."""
    return 1.0 if sr.idempotent else float(sr.beta)


def k2_total_score(graphs: GraphLike, semiring: SemiringLike = "log") -> Tensor:
    """:func:`gtn_py.ops.shortest.total_score` computed by k2 (``Fsa.get_tot_scores``).

    Same arguments and result: per-graph totals (0-dim for a single graph, ``[B]`` for a batch
    or a list), -inf where a graph has no successful path, differentiable w.r.t. arc, start and
    final weights, in the graphs' dtype. The log semiring with inverse temperature ``beta``
    runs as k2's log semiring on scores scaled by ``beta``. Graphs must be acyclic.
    """
    sr = get_semiring(semiring)
    g, batched = _as_graph(graphs)
    beta = _beta(sr)
    try:
        fsa = _build_fsa(g, topsort=True, vec=True, scale=beta)
    except CyclicGraphError as err:
        raise CyclicGraphError(f"the k2 backend needs acyclic graphs: {err}") from None
    totals = fsa.get_tot_scores(log_semiring=not sr.idempotent, use_double_scores=True)
    totals = (totals / beta if beta != 1.0 else totals).to(g.dtype)
    return totals if batched else totals[0]


def k2_dense_totals(g: Graph, emissions: Tensor, lens: Tensor, semiring: SemiringLike = "log") -> Tensor:
    """The totals of :func:`gtn_py.ops.dense.dense_score` computed by k2 (``k2.intersect_dense``
    with no pruning), for ``dense_score(..., backend="k2")``, which checks the arguments first:
    ``g`` one graph per sequence (a batch), ``emissions`` ``[B, T, V]``, ``lens`` ``[B]`` frames.
    Per-sequence totals ``[B]``, -inf where no path fits, differentiable w.r.t. the emissions and
    the graphs' weights, in the emissions' dtype. Every arc consumes one frame (label 0 reads
    column 0).
    """
    k2 = _import_k2()
    sr = get_semiring(semiring)
    beta = _beta(sr)
    num_seqs = emissions.shape[0]
    # k2 needs every sequence to have at least one frame: a sequence of length 0 scores the
    # empty paths (start and accept node at once) directly, and its graph is left out of k2's.
    empty = lens == 0
    totals = sr.segment_plus(g.start_weights + g.final_weights, g.node_graph, num_seqs)
    if not bool(empty.all()):
        # k2.intersect_dense wants the sequences by decreasing length, and FSA i paired with
        # sequence i: FSA ``slot[b]`` of the k2 batch is graph b, the graphs of empty sequences left out.
        by_length = torch.argsort(-lens.cpu(), stable=True)[:int((~empty).sum())]
        segments = torch.stack([by_length, torch.zeros_like(by_length), lens.cpu()[by_length]], 1)
        dense = k2.DenseFsaVec((emissions * beta if beta != 1.0 else emissions).to(torch.float32),
                               segments.to(torch.int32))
        slot = torch.full((num_seqs,), -1, dtype=torch.long, device=lens.device)
        slot[by_length.to(lens.device)] = torch.arange(by_length.shape[0], device=lens.device)
        kept = subgraph(g, (~empty[g.node_graph]).nonzero().reshape(-1))
        kept = Graph.from_tensors(kept.src, kept.dst, kept.ilabel, kept.olabel, kept.weights, kept.start_weights,
                                   kept.final_weights, node_graph=slot[kept.node_graph],
                                   num_graphs=by_length.shape[0])
        fsa = k2.arc_sort(_build_fsa(kept, topsort=False, vec=True, scale=beta))
        lattice = k2.intersect_dense(fsa, dense, output_beam=float("inf"))
        k2_totals = lattice.get_tot_scores(log_semiring=not sr.idempotent,
                                           use_double_scores=True)
        k2_totals = k2_totals.index_select(0, slot.clamp(min=0))
        k2_totals = (k2_totals / beta if beta != 1.0 else k2_totals).to(totals.dtype)
        totals = torch.where(empty, totals, k2_totals)
    return totals.to(emissions.dtype)


register_backend("k2", Backend(total_score=k2_total_score, dense_totals=k2_dense_totals))
