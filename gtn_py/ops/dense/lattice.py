"""The dense intersection as a graph (:func:`dense_lattice`, :func:`intersect_dense`) and the
best path of each sequence (:func:`viterbi_align`), exact by the sweeps or searched with
pruning by token passing (:mod:`gtn_py.ops.search`)."""

from __future__ import annotations

from typing import List, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ...errors import InvalidGraphError, WeightError
from ...graph import NEG_INF, Graph, as_integer, has_nan_or_plus_inf, subgraph
from ...semiring import get_semiring
from ..search import SearchResult, token_passing
from ..shortest import shortest_distance
from ..structure import failure_structure, final_through_failures
from ..traverse import reachable
from .dispatch import choose_kernels
from .layout import GraphsLike, Inputs, Layout, LengthsLike, chunk_frames, prepare_inputs
from .torch_sweeps import backward_sweep


class DenseLattice(NamedTuple):
    """The dense intersection as a graph, with its arc maps: lattice arc ``i`` is arc
    ``arc_map[i]`` of the graph given (or of ``Graph.batch`` of the list given) taken at frame
    ``frame[i]`` (its weight is that arc's weight plus the emission of its ilabel at that frame,
    a differentiable gather of both)."""

    graph: Graph
    arc_map: Tensor
    frame: Tensor


def _margin(value: float | None, name: str) -> float | None:
    """A pruning margin: None, or a number >= 0 (inf allowed)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise WeightError(f"{name} must be a number >= 0 (or None for no pruning), got {value!r}") from None
    if not number >= 0:  # also NaN
        raise WeightError(f"{name} must be a score margin >= 0 (or None for no pruning), got {number}")
    return number


class Failures(NamedTuple):
    """A graph's failure (phi) arcs for the pruned search: each node's failure arc (-1: none), as
    numpy for the search and as a tensor, and the final weights through the failure chains."""

    arc_np: np.ndarray
    arc: Tensor
    final: Tensor


def _failures(g: Graph, phi: int) -> Failures:
    """The failure arcs of ``g`` (label ``phi``, checked as :func:`~gtn_py.ops.compose.compose`
    checks them)."""
    _, failure_arc = failure_structure(g, phi, "graphs")
    return Failures(failure_arc, torch.from_numpy(failure_arc).to(g.device), final_through_failures(g, failure_arc))


def _chain_weights(g: Graph, failures: Failures, from_nodes: Tensor, to_nodes: Tensor) -> Tensor:
    """The weights of the failure arcs from each ``from_nodes[i]`` down its chain to
    ``to_nodes[i]`` (0 where they are equal), summed; differentiable."""
    total = g.weights.new_zeros(from_nodes.shape)
    node = from_nodes
    for _ in range(g.num_nodes + 1):
        moving = node != to_nodes
        if not bool(moving.any()):
            return total
        arc = failures.arc.index_select(0, node).clamp(min=0)
        total = total + torch.where(moving, g.weights.index_select(0, arc), total.new_zeros(()))
        node = torch.where(moving, g.dst.index_select(0, arc), node)
    raise AssertionError("a lattice arc's source is not on its token's failure chain")


def _search(inputs: Inputs, search_beam: float | None, max_active: int | None,
            keep_lattice: bool = True, failures: Failures | None = None) -> SearchResult:
    """Token passing with search-time pruning (:mod:`.search`) on CPU copies of the inputs."""
    g, emissions, lens, _, _ = inputs
    if max_active is not None:
        if isinstance(max_active, bool) or not isinstance(max_active, (int, np.integer)) or max_active < 1:
            raise InvalidGraphError(f"max_active must be a whole number >= 1 (or None for no limit), got "
                                    f"{max_active!r}")
    detached = emissions.detach()
    if not bool((lens == detached.shape[1]).all()):  # frames beyond a sequence's length are not read
        frames = torch.arange(detached.shape[1], device=detached.device)
        detached = detached.masked_fill((frames[None, :] >= lens[:, None])[:, :, None], NEG_INF)
    if has_nan_or_plus_inf(detached) or bool(torch.isnan(g.weights.detach()).any()):
        raise WeightError("emissions (within the lengths) and graph weights must be finite or -inf for a pruned "
                          "search: a NaN or +inf has no rank to prune by")
    host = lambda t: t.detach().cpu().numpy()  # noqa: E731
    # Each node's sequence; -1: one graph shared by every sequence (not copied).
    node_seq = host(g.node_graph) if g.is_batch else np.full(g.num_nodes, -1 if inputs.shared_arcs else 0)
    as_float64 = lambda t: host(t).astype(np.float64)  # noqa: E731
    final = g.final_weights if failures is None else failures.final
    return token_passing(host(g.src), host(g.dst), host(g.ilabel), as_float64(g.weights), as_float64(g.start_weights),
                         as_float64(final), node_seq, host(detached), host(lens),
                         float("inf") if search_beam is None else search_beam, max_active or 0, keep_lattice,
                         None if failures is None else failures.arc_np)


def _searched_lattice(inputs: Inputs, found: SearchResult, beam: float | None,
                      failures: Failures | None = None) -> DenseLattice:
    """The lattice a pruned search kept, trimmed to its successful paths (and, with ``beam``, to
    those within ``beam`` of the best), as :func:`dense_lattice` returns it; with ``failures``,
    each arc's weight adds the failure arcs taken before it, and finals are through the chains."""
    g, emissions, lens, single, _ = inputs
    final = g.final_weights if failures is None else failures.final
    num_seqs = emissions.shape[0]
    device = emissions.device
    lens_host = lens.cpu().numpy()
    level, nodes, seqs = found.token_frame, found.token_node, found.token_seq
    accepts = (level == lens_host[seqs]) & (final.detach().cpu().numpy()[nodes] > NEG_INF)
    useful = reachable(found.arc_dst, found.arc_src, accepts)  # every token is reached from a start
    keep_arc = useful[found.arc_src] & useful[found.arc_dst]
    renumber = np.cumsum(useful) - 1
    to_device = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    level_t, node_t, seq_t = to_device(level[useful]), to_device(nodes[useful]), to_device(seqs[useful])
    arc_map = to_device(found.arc_id[keep_arc])
    frame = to_device(level[found.arc_src[keep_arc]])
    weights, start = g.weights, g.start_weights
    seq = seq_t.index_select(0, to_device(renumber[found.arc_src[keep_arc]]))
    arc_weights = weights.index_select(0, arc_map) + emissions[seq, frame, g.ilabel[arc_map]]
    if failures is not None:
        arc_weights = arc_weights + _chain_weights(g, failures, to_device(nodes[found.arc_src[keep_arc]]),
                                                   g.src.index_select(0, arc_map))
    neg_inf = start.new_full((), NEG_INF)
    start_weights = torch.where(level_t == 0, start.index_select(0, node_t), neg_inf)
    final_weights = torch.where(level_t == lens[seq_t], final.index_select(0, node_t), neg_inf)
    lattice = Graph.from_tensors(to_device(renumber[found.arc_src[keep_arc]]),
                                 to_device(renumber[found.arc_dst[keep_arc]]), g.ilabel[arc_map], g.olabel[arc_map],
                                 arc_weights, start_weights, final_weights,
                                 node_graph=None if single else seq_t, num_graphs=1 if single else num_seqs)
    if beam is not None and lattice.num_nodes:
        # Output beam: the arcs on a path within ``beam`` of the best, by Viterbi scores both ways.
        with torch.no_grad():
            alpha = shortest_distance(lattice.detach(), "tropical")
            beta = shortest_distance(lattice.detach(), "tropical", reverse=True)
            best_of_seq = torch.full((num_seqs,), NEG_INF, dtype=alpha.dtype, device=device).scatter_reduce(
                0, seq_t, alpha + lattice.final_weights.detach(), "amax")
            floor = best_of_seq - beam
            kept = alpha[lattice.src] + lattice.weights.detach() + beta[lattice.dst] >= floor[seq]
            kept_nodes = (alpha + beta >= floor[seq_t]).nonzero().reshape(-1)
        lattice = subgraph(lattice, kept_nodes, arcs=kept)
        arc_map, frame = arc_map[kept], frame[kept]
    return DenseLattice(lattice, inputs.user_arcs(arc_map), frame)


def dense_lattice(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None,
                  beam: float | None = None, search_beam: float | None = None,
                  max_active: int | None = None, phi: int | None = None) -> DenseLattice:
    """Build the dense intersection as a (batch) graph; see :func:`intersect_dense`."""
    beam = _margin(beam, "beam")
    search_beam = _margin(search_beam, "search_beam")
    searching = search_beam is not None or max_active is not None or phi is not None
    phi = None if phi is None else as_integer(phi, "phi")
    inputs = prepare_inputs(graphs, emissions, lengths, copy_shared=not searching, failure_label=phi)
    if searching:
        failures = None if phi is None else _failures(inputs.graph, phi)
        return _searched_lattice(inputs, _search(inputs, search_beam, max_active, failures=failures), beam, failures)
    g, emissions, lens, single, _ = inputs
    num_seqs, num_frames, _ = emissions.shape
    lay = Layout.of(g, num_seqs, emissions.shape[2])
    weights, start, final = g.weights, g.start_weights, g.final_weights
    tropical = get_semiring("tropical")
    with torch.no_grad():
        # Viterbi forward and backward scores: a node (arc) is kept when the best path through
        # it is possible and, with a beam, within ``beam`` of the sequence's best path.
        columns = lay.emission_columns(emissions.detach(), lens)
        kernels = choose_kernels(lay, columns, tropical)
        alpha, best, _ = kernels.forward(lay, weights.detach(), start.detach(), final.detach(), columns, lens,
                                         tropical)
        betas: List[Tensor] = []
        beta0 = backward_sweep(lay, weights.detach(), final.detach(), columns, lens, tropical,
                                lambda t0, t1, b: betas.insert(0, b))
        beta = torch.cat([beta0[None]] + betas)
        floor = best - beam if beam is not None else torch.full_like(best, NEG_INF)
        node_floor = floor[lay.node_seq]
        through = alpha + beta                                  # [T + 1, N]
        # (NaN, from a NaN weight, is kept: the lattice carries it as the totals do.)
        keep_node = (through != NEG_INF) & ~(through < node_floor)
        level, node = keep_node.nonzero(as_tuple=True)
        order = torch.argsort(lay.node_seq[node], stable=True)  # nodes of one graph together
        level, node = level[order], node[order]
        node_id = torch.full_like(keep_node, -1, dtype=torch.long)
        node_id[level, node] = torch.arange(level.shape[0], device=level.device)
        arc_floor = node_floor[lay.src]
        kept_frames, kept_arcs = [lens.new_zeros(0)], [lens.new_zeros(0)]
        step = chunk_frames(num_frames, max(g.num_arcs, 1))
        for t0 in range(0, num_frames, step):
            t1 = min(t0 + step, num_frames)
            via = (alpha[t0:t1].index_select(1, lay.src) + weights.detach()
                   + columns[t0:t1].index_select(1, lay.arc_column) + beta[t0 + 1:t1 + 1].index_select(1, lay.dst))
            t, a = ((via != NEG_INF) & ~(via < arc_floor)).nonzero(as_tuple=True)
            kept_frames.append(t + t0)
            kept_arcs.append(a)
        frame, arc_map = torch.cat(kept_frames), torch.cat(kept_arcs)
        order = torch.argsort(lay.arc_seq[arc_map], stable=True)
        frame, arc_map = frame[order], arc_map[order]
        src = node_id[frame, lay.src[arc_map]]
        dst = node_id[frame + 1, lay.dst[arc_map]]
    seq = lay.arc_seq[arc_map]
    arc_weights = weights.index_select(0, arc_map) + emissions[seq, frame, lay.ilabel[arc_map]]
    neg_inf = start.new_full((), NEG_INF)
    start_weights = torch.where(level == 0, start.index_select(0, node), neg_inf)
    final_weights = torch.where(level == lens[lay.node_seq[node]], final.index_select(0, node), neg_inf)
    lattice = Graph.from_tensors(src, dst, g.ilabel[arc_map], g.olabel[arc_map], arc_weights,
                                  start_weights, final_weights, node_graph=None if single else lay.node_seq[node],
                                  num_graphs=1 if single else num_seqs)
    return DenseLattice(lattice, inputs.user_arcs(arc_map), frame)


def intersect_dense(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None,
                    beam: float | None = None, search_beam: float | None = None,
                    max_active: int | None = None, phi: int | None = None) -> Graph:
    """The dense intersection as a graph (a batch of ``B`` lattices; one graph for ``[T, V]``).

    Nodes are the ``(graph node, frame)`` pairs on some successful path (reachable and
    co-accessible), ordered by frame; the arc for graph arc ``a`` at frame ``t`` has ``a``'s labels
    and weight ``weights[a] + emissions[b, t, ilabel[a]]``, differentiable w.r.t. both. Start
    weights sit on frame 0, final weights at each sequence's length. ``beam`` keeps only nodes and
    arcs on a path whose score is within ``beam`` of the sequence's best path (pruning the output).
    Label 0 is emission column 0 here, not epsilon.

    Search-time pruning, for decoding with large graphs (``search_beam`` and/or ``max_active``):
    the lattice is built frame by frame by token passing (:mod:`gtn_py.ops.search`), keeping at
    each frame only the (node, frame) pairs whose best score is within ``search_beam`` of the
    frame's best, at most ``max_active`` of them, so time and memory follow the active pairs,
    not the graph; ``beam`` then prunes the lattice kept. An approximation: the best path can be
    pruned away (exact with ``search_beam=inf`` and no ``max_active``). Runs on the CPU (CUDA
    inputs are copied there for the search; the lattice's weights stay on their device).

    Failure (back-off) arcs, ``phi``: the label of the graphs' failure arcs (an n-gram language
    model's back-off arcs, :func:`~gtn_py.io.read_arpa`), with :func:`~gtn_py.ops.compose.compose`'s
    semantics: at a node, an emission label that no arc of the node reads is read through the
    node's failure chain (adding the failure arcs' weights; no frame is consumed on a failure
    arc), and a node that does not accept accepts through its chain. The search takes the
    failure arcs as it goes (exact with no ``search_beam`` and no ``max_active``), so a back-off
    model is used as it is, without the nodes x labels arcs of
    :func:`~gtn_py.ops.compose.remove_failure_arcs` (which gives the same lattice, and is how
    :func:`dense_score` takes such a graph). A lattice arc's weight adds the failure arcs taken
    before it; its arc map names the arc that reads its frame.
    """
    return dense_lattice(graphs, emissions, lengths, beam, search_beam, max_active, phi).graph


class Alignment(NamedTuple):
    """Best path of each sequence through a dense intersection."""

    labels: Tensor   # [B, T] input label read at each frame (-1 beyond the length or with no path)
    arcs: Tensor     # [B, T] arc taken at each frame (ids in the graph given, or in Graph.batch of the list)
    scores: Tensor   # [B] best path scores (-inf with no path), differentiable
    path: Graph      # the best paths as a batch of linear graphs, differentiable weights


def viterbi_align(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None,
                  search_beam: float | None = None, max_active: int | None = None,
                  phi: int | None = None) -> Alignment:
    """Viterbi alignment: the best path of each sequence, as frame-level labels and as a graph.

    The path graph of sequence ``b`` has ``lengths[b] + 1`` nodes (none if no path exists), the
    arcs taken with their labels and weights (arc weight + emission, differentiable), and the
    first node's start weight and the last node's final weight. ``search_beam`` and
    ``max_active`` search with pruning at each frame (see :func:`intersect_dense`): the best
    path the pruned search keeps, found in time and memory that follow the active states.
    ``phi``: the label of the graphs' failure arcs, taken by the search (see :func:`intersect_dense`);
    ``arcs`` then names the arc that reads each frame, whose path weight adds the failure arcs
    taken before it.
    """
    search_beam = _margin(search_beam, "search_beam")
    searching = search_beam is not None or max_active is not None or phi is not None
    phi = None if phi is None else as_integer(phi, "phi")
    inputs = prepare_inputs(graphs, emissions, lengths, copy_shared=not searching, failure_label=phi)
    g, emissions, lens, single, _ = inputs
    num_seqs, num_frames, _ = emissions.shape
    failures = None if phi is None else _failures(g, phi)
    weights, start = g.weights, g.start_weights
    final = g.final_weights if failures is None else failures.final
    if searching:
        searched = _search(inputs, search_beam, max_active, keep_lattice=False, failures=failures)
        device = emissions.device
        arcs = torch.from_numpy(searched.best_arcs).to(device)
        first, last = torch.from_numpy(searched.first).to(device), torch.from_numpy(searched.last).to(device)
        no_path = torch.full((num_seqs,), NEG_INF, dtype=weights.dtype, device=device)
    else:
        lay = Layout.of(g, num_seqs, emissions.shape[2])
        with torch.no_grad():
            columns = lay.emission_columns(emissions.detach(), lens)
            tropical = get_semiring("tropical")
            kernels = choose_kernels(lay, columns, tropical)
            alpha, best, slots = kernels.forward(lay, weights.detach(), start.detach(), final.detach(), columns, lens,
                                                 tropical, backpointers=True)
            assert slots is not None
            arcs, first, last = kernels.best_paths(lay, alpha, slots, final.detach(), lens)
            # The score of a sequence without a path: -inf, or NaN where a NaN weight made its best score NaN.
            no_path = best.masked_fill(best == best, NEG_INF)
    # (A graph without arcs has no labels to read: its arcs are all -1.)
    labels = torch.where(arcs >= 0, g.ilabel[arcs.clamp(min=0)], arcs) if g.ilabel.numel() else arcs
    found = last >= 0
    # Path graphs: sequence b contributes lengths[b] + 1 nodes when it has a path.
    sizes = torch.where(found, lens + 1, torch.zeros_like(lens))
    offsets = torch.cumsum(sizes, 0) - sizes
    on_path = arcs >= 0
    seq, frame = on_path.nonzero(as_tuple=True)
    path_arcs = arcs[seq, frame]
    arc_weights = weights.index_select(0, path_arcs) + emissions[seq, frame, g.ilabel[path_arcs]]
    if failures is not None:  # the chain from the node the path is at (its first, or the last arc's end)
        before = arcs[seq, (frame - 1).clamp(min=0)]
        at = torch.where(frame > 0, g.dst.index_select(0, before.clamp(min=0)), first.index_select(0, seq))
        arc_weights = arc_weights + _chain_weights(g, failures, at, g.src.index_select(0, path_arcs))
    num_nodes = int(sizes.sum())
    node_seq = torch.repeat_interleave(sizes)
    neg_inf = start.new_full((num_nodes,), NEG_INF)
    start_weights = neg_inf.index_put((offsets[found],), start.index_select(0, first[found]))
    final_weights = neg_inf.index_put((offsets[found] + lens[found],), final.index_select(0, last[found]))
    path = Graph.from_tensors(offsets[seq] + frame, offsets[seq] + frame + 1, g.ilabel[path_arcs],
                               g.olabel[path_arcs], arc_weights, start_weights, final_weights,
                               node_graph=None if single else node_seq, num_graphs=1 if single else num_seqs)
    ends = no_path.index_put(
        (found.nonzero().reshape(-1),), start.index_select(0, first[found]) + final.index_select(0, last[found]))
    scores = ends.index_add(0, seq, arc_weights)
    arcs = inputs.user_arcs(arcs)
    if single:
        return Alignment(labels[0], arcs[0], scores[0], path)
    return Alignment(labels, arcs, scores, path)
