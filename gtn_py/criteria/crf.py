"""Linear-chain conditional random fields (CNN + CRF tagging) as graphs.

A sequence of ``L`` positions and ``K`` tags unrolls into a graph with a start node and one
node per (position, tag); a path is a tagging. The arc into ``(t, j)`` reads tag ``j`` (label
``j + 1``: label 0 is epsilon) and weighs

* ``unary[t, j] + start_scores[j]`` from the start node (``t = 0``),
* ``unary[t, j] + transitions[i, j]`` from ``(t - 1, i)``,

and the nodes of the last position have final weight ``end_scores[j]``. So a path's score
is the CRF's unnormalised log-score of its tagging, and the graph's log-semiring total is
the log-partition function. Node potentials (``unary``, ``[B, T, K]``) come from a network;
edge potentials are a ``[K, K]`` matrix shared by all positions or ``[B, T - 1, K, K]`` per
position (from a network too). Everything is a differentiable gather of the potentials, and
the partition function, the marginals, the best tagging and the likelihood are the generic
graph algorithms (:mod:`gtn_py.ops.shortest`) and losses (:mod:`gtn_py.losses`) on it.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
from torch import Tensor, nn

from ..errors import InvalidGraphError, LabelError
from ..graph import NEG_INF, Graph, as_tensor, as_whole_numbers
from ..losses import nll, reduce_losses
from ..ops.shortest import arc_posteriors, forward_score, viterbi_path, viterbi_score

__all__ = ["crf_graph", "crf_log_partition", "crf_marginals", "crf_viterbi", "crf_nll", "LinearChainCRF",
           "CRFMarginals", "CRFTagging"]


class _Unrolled(NamedTuple):
    """Arc coordinates of an unrolled CRF batch: arc ``a`` enters ``(seq[a], pos[a], tag[a])``
    from tag ``prev[a]`` (-1: from the start node)."""

    graph: Graph
    seq: Tensor
    pos: Tensor
    prev: Tensor
    tag: Tensor


def _lengths(unary: Tensor, lengths: Tensor | None) -> Tensor:
    num_seqs, num_positions, _ = unary.shape
    if lengths is None:
        return torch.full((num_seqs,), num_positions, dtype=torch.long, device=unary.device)
    lens = as_whole_numbers(lengths, "lengths", unary.device)
    if lens.shape[0] != num_seqs:
        raise InvalidGraphError(f"{lens.shape[0]} lengths for {num_seqs} sequences")
    bad = ((lens < 0) | (lens > num_positions)).nonzero()
    if bad.numel():
        b = int(bad[0, 0])
        raise InvalidGraphError(f"sequence {b}: length {int(lens[b])} outside [0, T = {num_positions}]")
    return lens


def _unroll(unary: Tensor, transitions: Tensor, lengths: Tensor | None, start_scores: Tensor | None,
            end_scores: Tensor | None, tags: Tensor | None) -> _Unrolled:
    num_seqs, num_positions, num_tags = unary.shape
    device = unary.device
    lens = _lengths(unary, lengths)
    per_position = transitions.dim() == 4
    want = (num_seqs, max(num_positions - 1, 0), num_tags, num_tags) if per_position else (num_tags, num_tags)
    if tuple(transitions.shape) != want:
        raise InvalidGraphError(f"transitions must be [K, K] or [B, T - 1, K, K] = {list(want)}, "
                                f"got {list(transitions.shape)}")
    for name, scores in (("start_scores", start_scores), ("end_scores", end_scores)):
        if scores is not None and tuple(as_tensor(scores, name).shape) != (num_tags,):
            raise InvalidGraphError(f"{name} must be [K] = [{num_tags}], got {list(scores.shape)}")
    if tags is None:
        # Every candidate arc (b, t, i, j), i = -1 for the start node, then those that exist.
        b, t, i, j = (x.reshape(-1) for x in torch.meshgrid(
            torch.arange(num_seqs, device=device), torch.arange(num_positions, device=device),
            torch.arange(-1, num_tags, device=device), torch.arange(num_tags, device=device), indexing="ij"))
        keep = (t < lens[b]) & ((t == 0) == (i < 0))
    else:
        # The tagging's path only: one arc per position.
        tags = as_tensor(tags, "tags", integer=True).to(device).reshape(num_seqs, -1)
        if tags.shape[1] < num_positions:
            raise InvalidGraphError(f"tags have {tags.shape[1]} positions, emissions {num_positions}")
        inside = torch.arange(tags.shape[1], device=device)[None, :] < lens[:, None]
        bad = (inside & ((tags < 0) | (tags >= num_tags))).nonzero()
        if bad.numel():
            s, p = int(bad[0, 0]), int(bad[0, 1])
            raise LabelError(f"sequence {s}, position {p}: tag {int(tags[s, p])} outside [0, {num_tags})")
        b, t = (x.reshape(-1) for x in torch.meshgrid(torch.arange(num_seqs, device=device),
                                                       torch.arange(num_positions, device=device), indexing="ij"))
        safe = tags.clamp(0, num_tags - 1)
        j = safe[b, t]
        i = torch.where(t == 0, torch.full_like(t, -1), safe[b, (t - 1).clamp(min=0)])
        keep = t < lens[b]
    b, t, i, j = b[keep], t[keep], i[keep], j[keep]

    sizes = 1 + lens * num_tags
    offsets = torch.cumsum(sizes, 0) - sizes
    src = torch.where(i < 0, offsets[b], offsets[b] + 1 + (t - 1) * num_tags + i)
    dst = offsets[b] + 1 + t * num_tags + j
    from_start = i < 0
    prev = i.clamp(min=0)
    if per_position:
        edge = transitions[b, (t - 1).clamp(min=0), prev, j]
    else:
        edge = transitions[prev, j]
    entry = start_scores[j] if start_scores is not None else torch.zeros_like(edge)
    weights = unary[b, t, j] + torch.where(from_start, entry, edge)

    num_nodes = int(sizes.sum())
    node_seq = torch.repeat_interleave(torch.arange(num_seqs, device=device), sizes)
    local = torch.arange(num_nodes, device=device) - offsets[node_seq]
    start = torch.where(local == 0, unary.new_zeros(()), unary.new_full((), NEG_INF)).expand(num_nodes).clone()
    last = (local >= 1 + (lens[node_seq] - 1) * num_tags) & (local > 0)
    final_tag = (local - 1) % num_tags
    end = end_scores[final_tag] if end_scores is not None else unary.new_zeros(num_nodes)
    empty = (lens[node_seq] == 0) & (local == 0)  # an empty sequence: the empty tagging, score 0
    final = torch.where(last, end, torch.where(empty, unary.new_zeros(()), unary.new_full((), NEG_INF)))
    g = Graph.from_tensors(src, dst, j + 1, j + 1, weights, start, final, node_graph=node_seq,
                            num_graphs=num_seqs).check_weights()
    return _Unrolled(g, b, t, i, j)


def _batched(unary: Tensor) -> Tuple[Tensor, bool]:
    unary = as_tensor(unary, "unary")
    if unary.dim() == 2:
        return unary.unsqueeze(0), True
    if unary.dim() != 3:
        raise InvalidGraphError(f"unary potentials must be [B, T, K] or [T, K], got {list(unary.shape)}")
    return unary, False


def _unbatch_transitions(transitions: Tensor, single: bool) -> Tensor:
    transitions = as_tensor(transitions, "transitions")
    return transitions.unsqueeze(0) if single and transitions.dim() == 3 else transitions


def crf_graph(unary: Tensor, transitions: Tensor, lengths: Tensor | None = None, *,
              start_scores: Tensor | None = None, end_scores: Tensor | None = None,
              tags: Tensor | None = None) -> Graph:
    """The unrolled CRF of each sequence (see the module documentation) as a batch graph (a
    single graph for ``[T, K]`` potentials). ``unary``: ``[B, T, K]``; ``transitions``:
    ``[K, K]`` (from tag ``i`` to tag ``j``) or ``[B, T - 1, K, K]``; ``lengths``: ``[B]``
    (default ``T``). With ``tags`` (``[B, T]``, 0-based, padding ignored) only the path of
    that tagging is kept: the correct-answer graph. Labels are ``tag + 1``."""
    unary, single = _batched(unary)
    g = _unroll(unary, _unbatch_transitions(transitions, single), lengths, start_scores, end_scores, tags).graph
    return g[0] if single else g


def crf_log_partition(unary: Tensor, transitions: Tensor, lengths: Tensor | None = None, *,
                      start_scores: Tensor | None = None, end_scores: Tensor | None = None) -> Tensor:
    """``log Z`` per sequence ``[B]`` (the forward algorithm), differentiable."""
    return forward_score(crf_graph(unary, transitions, lengths, start_scores=start_scores, end_scores=end_scores))


class CRFMarginals(NamedTuple):
    nodes: Tensor  # [B, T, K] P(tag_t = j); 0 beyond the length
    edges: Tensor  # [B, T - 1, K, K] P(tag_{t} = i, tag_{t+1} = j); 0 beyond the length


def crf_marginals(unary: Tensor, transitions: Tensor, lengths: Tensor | None = None, *,
                  start_scores: Tensor | None = None, end_scores: Tensor | None = None) -> CRFMarginals:
    """Posterior tag and tag-pair probabilities (forward-backward: the arcs' posteriors)."""
    unary, single = _batched(unary)
    u = _unroll(unary, _unbatch_transitions(transitions, single), lengths, start_scores, end_scores, None)
    posterior = arc_posteriors(u.graph)
    num_seqs, num_positions, num_tags = unary.shape
    nodes = posterior.new_zeros(num_seqs, num_positions, num_tags).index_put_(
        (u.seq, u.pos, u.tag), posterior, accumulate=True)
    inner = u.prev >= 0
    edges = posterior.new_zeros(num_seqs, max(num_positions - 1, 0), num_tags, num_tags).index_put_(
        (u.seq[inner], u.pos[inner] - 1, u.prev[inner], u.tag[inner]), posterior[inner], accumulate=True)
    return CRFMarginals(nodes[0], edges[0]) if single else CRFMarginals(nodes, edges)


class CRFTagging(NamedTuple):
    tags: Tensor    # [B, T] best tag at each position, -1 beyond the length
    scores: Tensor  # [B] its score, differentiable


def crf_viterbi(unary: Tensor, transitions: Tensor, lengths: Tensor | None = None, *,
                start_scores: Tensor | None = None, end_scores: Tensor | None = None) -> CRFTagging:
    """The best tagging of each sequence and its score (Viterbi)."""
    unary, single = _batched(unary)
    g = _unroll(unary, _unbatch_transitions(transitions, single), lengths, start_scores, end_scores, None).graph
    paths = viterbi_path(g)
    num_seqs, num_positions, _ = unary.shape
    owner = paths.arc_graph
    counts = torch.bincount(owner, minlength=num_seqs)
    position = torch.arange(owner.shape[0], device=owner.device) - (torch.cumsum(counts, 0) - counts)[owner]
    tags = torch.full((num_seqs, num_positions), -1, dtype=torch.long, device=unary.device)
    tags[owner, position] = paths.ilabel - 1
    scores = viterbi_score(g)
    return CRFTagging(tags[0], scores[0]) if single else CRFTagging(tags, scores)


def crf_nll(unary: Tensor, transitions: Tensor, tags: Tensor, lengths: Tensor | None = None, *,
            start_scores: Tensor | None = None, end_scores: Tensor | None = None,
            reduction: str = "mean") -> Tensor:
    """``log Z - score(tags)`` per sequence: :func:`gtn_py.losses.nll` between the tagging's
    graph and the whole CRF."""
    unary, single = _batched(unary)
    transitions = _unbatch_transitions(transitions, single)
    tags = as_tensor(tags, "tags", integer=True).to(unary.device).reshape(unary.shape[0], -1)
    scores = dict(start_scores=start_scores, end_scores=end_scores)
    correct = _unroll(unary, transitions, lengths, tags=tags, **scores).graph
    everything = _unroll(unary, transitions, lengths, tags=None, **scores).graph
    losses = nll(correct, everything, reduction="none")
    return reduce_losses(losses[0] if single else losses, reduction)


class LinearChainCRF(nn.Module):
    """A CRF layer over ``num_tags`` tags with learned transition, start and end scores; the
    unary potentials come from the network below it."""

    def __init__(self, num_tags: int):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start_scores = nn.Parameter(torch.zeros(num_tags))
        self.end_scores = nn.Parameter(torch.zeros(num_tags))

    def _scores(self, unary: Tensor) -> dict:
        dtype = unary.dtype
        return dict(start_scores=self.start_scores.to(dtype), end_scores=self.end_scores.to(dtype))

    def forward(self, unary: Tensor, tags: Tensor, lengths: Tensor | None = None,
                reduction: str = "mean") -> Tensor:
        """The negative log-likelihood of ``tags``."""
        return crf_nll(unary, self.transitions.to(unary.dtype), tags, lengths, reduction=reduction,
                       **self._scores(unary))

    def decode(self, unary: Tensor, lengths: Tensor | None = None) -> CRFTagging:
        return crf_viterbi(unary, self.transitions.to(unary.dtype), lengths, **self._scores(unary))

    def marginals(self, unary: Tensor, lengths: Tensor | None = None) -> CRFMarginals:
        return crf_marginals(unary, self.transitions.to(unary.dtype), lengths, **self._scores(unary))
