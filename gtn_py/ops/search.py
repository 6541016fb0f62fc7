"""Search-time pruning of dense intersection: frame-synchronous token passing (a Viterbi beam
search) whose memory and time follow the *active* (graph node, frame) pairs, not the graph.

At frame 0 the tokens are the graph's start nodes, scored by their start weights. From the
tokens of frame ``t``, every arc ``a`` out of a token's node proposes a token at frame
``t + 1`` on ``dst[a]`` scored ``score + weight[a] + emissions[b, t, ilabel[a]]``, unless it is
already more than ``search_beam`` below the best proposal of the frame so far; a node's token
keeps the best proposal (its back-pointer) and every proposing arc (the lattice). Then the
frame is pruned: tokens scoring below the frame's best minus ``search_beam`` go, and of the
rest at most ``max_active``, the best, stay (at a sequence's last frame, scores include the
nodes' final weights). After the last frame, each token adds its node's
final weight; the best is the answer, found by following back-pointers.

Without pruning (``search_beam`` infinite, no ``max_active``) this is exactly the Viterbi
search of :func:`~gtn_py.ops.dense.viterbi_align`, and the lattice is the full dense
intersection (before trimming). The kernel runs on the CPU (numba), one sequence after another.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

_NEG_INF = -np.inf


class SearchResult(NamedTuple):
    """Tokens (lattice nodes), lattice arcs and the best path of each sequence, as numpy arrays."""

    token_seq: np.ndarray    # [K] sequence of each token
    token_frame: np.ndarray  # [K] frame (0 .. length) of each token
    token_node: np.ndarray   # [K] graph node of each token
    arc_src: np.ndarray      # [L] token each lattice arc leaves
    arc_dst: np.ndarray      # [L] token it reaches (one frame later)
    arc_id: np.ndarray       # [L] the graph arc it follows (its frame: token_frame[arc_src])
    best_arcs: np.ndarray    # [B, T] graph arc of the best path at each frame (-1: beyond, or no path)
    first: np.ndarray        # [B] first node of the best path (-1: no path)
    last: np.ndarray         # [B] last node of the best path (-1: no path)
    most_active: int         # the most tokens any frame kept


@numba.njit(cache=True, nogil=True)
def _grown(values: np.ndarray, size: int) -> np.ndarray:  # pragma: no cover - jitted
    """``values`` with room for at least ``size`` entries (doubling)."""
    if size <= values.shape[0]:
        return values
    bigger = np.empty(max(size, 2 * values.shape[0]), values.dtype)
    bigger[:values.shape[0]] = values
    return bigger


@numba.njit(cache=True, nogil=True)
def _token_passing(out_offsets, out_arcs, dst, ilabel, weight, fail_dst, fail_weight, start, final, start_offsets,
                   start_nodes, emissions, lengths, search_beam, max_active, keep_lattice):  # pragma: no cover - jitted
    # out_arcs[k] is the k-th arc in source order; dst, ilabel and weight are given in that order
    # too, so that expanding a token reads its arcs' data sequentially. A frame has at most one
    # candidate per node, so the candidates' arrays have a node's room; the other arrays grow
    # (doubling) once per frame or per expanded node, never per entry.
    num_seqs, num_frames = emissions.shape[0], emissions.shape[1]
    num_nodes = start.shape[0]
    slot = np.full(num_nodes, -1, np.int64)           # node -> candidate of the frame being built
    matched = np.zeros(emissions.shape[2], np.int64)  # label -> the last expansion whose chain matched it
    expansion = 0
    tok_seq = np.empty(64, np.int64)
    tok_frame = np.empty(64, np.int64)
    tok_node = np.empty(64, np.int64)
    tok_score = np.empty(64, np.float64)
    tok_back = np.empty(64, np.int64)                 # best predecessor token (-1 at frame 0)
    tok_arc = np.empty(64, np.int64)                  # the arc from it
    lat_src = np.empty(64, np.int64)
    lat_dst = np.empty(64, np.int64)
    lat_arc = np.empty(64, np.int64)
    cand_node = np.empty(num_nodes, np.int64)
    cand_score = np.empty(num_nodes, np.float64)
    cand_back = np.empty(num_nodes, np.int64)
    cand_arc = np.empty(num_nodes, np.int64)
    rank = np.empty(num_nodes, np.float64)
    token_of = np.empty(num_nodes, np.int64)
    prop_src = np.empty(64, np.int64)                 # proposals: (token, candidate, arc)
    prop_cand = np.empty(64, np.int64)
    prop_arc = np.empty(64, np.int64)
    best_arcs = np.full((num_seqs, num_frames), -1, np.int64)
    first = np.full(num_seqs, -1, np.int64)
    last = np.full(num_seqs, -1, np.int64)
    num_tok = 0
    num_lat = 0
    most_active = 0
    for b in range(num_seqs):
        num_cand = 0
        num_prop = 0
        for k in range(start_offsets[b], start_offsets[b + 1]):
            n = start_nodes[k]
            if slot[n] >= 0:
                continue
            slot[n] = num_cand
            cand_node[num_cand] = n
            cand_score[num_cand] = start[n]
            cand_back[num_cand] = -1
            cand_arc[num_cand] = -1
            num_cand += 1
        frame_first = num_tok
        for t in range(lengths[b] + 1):
            # Prune the candidates of frame t, keep the survivors as tokens, and their arcs. At the
            # last frame a token is ranked with its final weight (one that cannot end is useless).
            best = _NEG_INF
            for c in range(num_cand):
                rank[c] = cand_score[c] + final[cand_node[c]] if t == lengths[b] else cand_score[c]
                if rank[c] > best:
                    best = rank[c]
            floor = best - search_beam
            kept = 0
            for c in range(num_cand):
                slot[cand_node[c]] = -1
                if rank[c] > _NEG_INF and rank[c] >= floor:
                    kept += 1
                else:
                    rank[c] = _NEG_INF  # pruned
            if max_active > 0 and kept > max_active:
                # keep the max_active best, ties in candidate order: a selection, not a sort
                threshold = -np.partition(-rank[:num_cand], max_active - 1)[max_active - 1]
                above = 0
                for c in range(num_cand):
                    if rank[c] > threshold:
                        above += 1
                ties = max_active - above
                for c in range(num_cand):
                    if rank[c] == threshold and rank[c] > _NEG_INF:
                        if ties > 0:
                            ties -= 1
                        else:
                            rank[c] = _NEG_INF
                    elif rank[c] < threshold:
                        rank[c] = _NEG_INF
                kept = max_active
            most_active = max(most_active, kept)
            tok_seq = _grown(tok_seq, num_tok + kept)
            tok_frame = _grown(tok_frame, num_tok + kept)
            tok_node = _grown(tok_node, num_tok + kept)
            tok_score = _grown(tok_score, num_tok + kept)
            tok_back = _grown(tok_back, num_tok + kept)
            tok_arc = _grown(tok_arc, num_tok + kept)
            frame_first = num_tok
            for c in range(num_cand):
                if rank[c] == _NEG_INF:
                    token_of[c] = -1
                    continue
                tok_seq[num_tok] = b
                tok_frame[num_tok] = t
                tok_node[num_tok] = cand_node[c]
                tok_score[num_tok] = cand_score[c]
                tok_back[num_tok] = cand_back[c]
                tok_arc[num_tok] = cand_arc[c]
                token_of[c] = num_tok
                num_tok += 1
            lat_src = _grown(lat_src, num_lat + num_prop)
            lat_dst = _grown(lat_dst, num_lat + num_prop)
            lat_arc = _grown(lat_arc, num_lat + num_prop)
            for p in range(num_prop):
                d = token_of[prop_cand[p]]
                if d >= 0:
                    lat_src[num_lat] = prop_src[p]
                    lat_dst[num_lat] = d
                    lat_arc[num_lat] = prop_arc[p]
                    num_lat += 1
            if t == lengths[b]:
                break
            # Expand the tokens of frame t into the candidates of frame t + 1. A proposal more
            # than the beam below the best one so far can never be kept: it is dropped at once.
            num_cand = 0
            num_prop = 0
            running_best = _NEG_INF
            cut = _NEG_INF
            emitted = emissions[b, t]
            last_step = t + 1 == lengths[b]
            for tok in range(frame_first, num_tok):
                n = tok_node[tok]
                # The token's node and its failure chain: a node further down the chain reads
                # only the labels that no node before it on the chain has an arc for.
                expansion += 1
                m = n
                base = tok_score[tok]
                while True:
                    if keep_lattice:
                        room = num_prop + out_offsets[m + 1] - out_offsets[m]
                        prop_src = _grown(prop_src, room)
                        prop_cand = _grown(prop_cand, room)
                        prop_arc = _grown(prop_arc, room)
                    for k in range(out_offsets[m], out_offsets[m + 1]):
                        if m != n and matched[ilabel[k]] == expansion:
                            continue
                        score = base + weight[k] + emitted[ilabel[k]]
                        d = dst[k]
                        ranked = score + final[d] if last_step else score  # as the pruning ranks
                        if not ranked > cut:
                            if not ranked > _NEG_INF or ranked < cut:
                                continue
                        if ranked > running_best:
                            running_best = ranked
                            cut = running_best - search_beam
                        c = slot[d]
                        if c < 0:
                            c = num_cand
                            slot[d] = c
                            cand_node[c] = d
                            cand_score[c] = score
                            cand_back[c] = tok
                            cand_arc[c] = out_arcs[k]
                            num_cand += 1
                        elif score > cand_score[c]:
                            cand_score[c] = score
                            cand_back[c] = tok
                            cand_arc[c] = out_arcs[k]
                        if keep_lattice:
                            prop_src[num_prop] = tok
                            prop_cand[num_prop] = c
                            prop_arc[num_prop] = out_arcs[k]
                            num_prop += 1
                    if fail_dst[m] < 0:
                        break
                    for k in range(out_offsets[m], out_offsets[m + 1]):
                        matched[ilabel[k]] = expansion
                    base += fail_weight[m]
                    m = fail_dst[m]
        # The best token of the last frame, with its final weight; back-pointers give the path.
        best = _NEG_INF
        end = -1
        for tok in range(frame_first, num_tok):
            if tok_frame[tok] == lengths[b]:
                score = tok_score[tok] + final[tok_node[tok]]
                if score > best:
                    best = score
                    end = tok
        if end >= 0:
            last[b] = tok_node[end]
            tok = end
            while tok_back[tok] >= 0:
                best_arcs[b, tok_frame[tok] - 1] = tok_arc[tok]
                tok = tok_back[tok]
            first[b] = tok_node[tok]
    return (tok_seq[:num_tok], tok_frame[:num_tok], tok_node[:num_tok], lat_src[:num_lat], lat_dst[:num_lat],
            lat_arc[:num_lat], best_arcs, first, last, most_active)


def token_passing(src: np.ndarray, dst: np.ndarray, ilabel: np.ndarray, weight: np.ndarray, start: np.ndarray,
                  final: np.ndarray, node_seq: np.ndarray, emissions: np.ndarray, lengths: np.ndarray,
                  search_beam: float, max_active: int, keep_lattice: bool = True,
                  failure_arc: np.ndarray | None = None) -> SearchResult:
    """Run the search (see the module documentation) over a batch graph given by numpy arrays
    (weights float64; ``node_seq``: each node's sequence, or all -1 for one graph that every
    sequence reads, its node and arc ids then the shared graph's) and emissions ``[B, T, V]``;
    ``max_active`` 0: no limit; without ``keep_lattice`` only the best paths are found (no
    lattice arcs are recorded). ``failure_arc``: each node's failure arc (or -1), which reads no
    frame: a token expands its node's arcs, then, for the labels none of them reads, the arcs of
    the node its failure arc leads to (adding its weight), and so on down the chain; ``final``
    must then be the final weights through the chains. A lattice arc records the arc that reads
    its frame; the failure arcs before it lead from its source token's node to that arc's source."""
    num_nodes = start.shape[0]
    fail_dst = np.full(num_nodes, -1, np.int64)
    fail_weight = np.zeros(num_nodes, np.float64)
    if failure_arc is None and bool((src[1:] >= src[:-1]).all()):
        # arcs already in source order (as graphs are built): read in place, no gathers
        out_arcs = np.arange(src.shape[0], dtype=np.int64)
        out_src, out_dst, out_ilabel, out_weight = src, dst, ilabel, weight
    else:
        is_failure = np.zeros(src.shape[0], bool)
        if failure_arc is not None:
            has = failure_arc >= 0
            is_failure[failure_arc[has]] = True
            fail_dst[has] = dst[failure_arc[has]]
            fail_weight[has] = weight[failure_arc[has]]
        ordinary = np.flatnonzero(~is_failure)
        out_arcs = ordinary[np.argsort(src[ordinary], kind="stable")].astype(np.int64)
        out_src, out_dst, out_ilabel, out_weight = src[out_arcs], dst[out_arcs], ilabel[out_arcs], weight[out_arcs]
    out_offsets = np.searchsorted(out_src, np.arange(num_nodes + 1)).astype(np.int64)
    starts = np.flatnonzero(start > _NEG_INF)
    num_seqs = emissions.shape[0]
    start_offsets = np.zeros(num_seqs + 1, np.int64)
    if num_nodes and node_seq[0] < 0:  # shared: every sequence starts at the graph's start nodes
        start_offsets[1:] = starts.shape[0] * np.arange(1, num_seqs + 1)
        starts = np.tile(starts, num_seqs).astype(np.int64)
    else:
        starts = starts[np.argsort(node_seq[starts], kind="stable")].astype(np.int64)
        np.cumsum(np.bincount(node_seq[starts], minlength=num_seqs), out=start_offsets[1:])
    as_int64 = lambda a: np.ascontiguousarray(a, np.int64)  # noqa: E731
    return SearchResult(*_token_passing(out_offsets, out_arcs, as_int64(out_dst), as_int64(out_ilabel),
                                        np.ascontiguousarray(out_weight, np.float64), fail_dst, fail_weight,
                                        start, final, start_offsets, starts, emissions,
                                        lengths.astype(np.int64), float(search_beam), int(max_active),
                                        bool(keep_lattice)))
