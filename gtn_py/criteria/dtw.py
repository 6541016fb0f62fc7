"""Dynamic time warping as a graph: hard (tropical) and soft (log, with a temperature) DTW,
and trainable elastic templates (Driancourt and Bottou's 1991 spoken word recogniser).

The alignment graph of a template of ``n`` frames and an input of ``m`` frames has an entry
node and one node per grid cell ``(i, j)`` (template frame ``i`` matched with input frame
``j``). The entry arc goes to ``(0, 0)``; for every step ``(di, dj)`` of the step pattern an
arc goes from ``(i - di, j - dj)`` to ``(i, j)``; ``(n - 1, m - 1)`` is the accept node. The
arc into ``(i, j)`` weighs ``-step_weight * d[i, j]`` (the entry arc ``-d[0, 0]``), gathered
differentiably from the local distance matrix ``d`` (``[T_template, T_input]``, e.g.
:func:`local_distances` of a template and a network's features), so a path's score is minus
its accumulated distance and

* the tropical total is ``-DTW(d)`` (the classic recursion ``D(i, j) = d(i, j) + min_steps
  D(i - di, j - dj)`` with ``D(0, 0) = d(0, 0)``),
* the log-semiring total at inverse temperature ``beta = 1 / gamma`` is ``-softDTW_gamma(d)``
  (Cuturi and Blondel's soft-min ``-gamma log sum exp(-cost / gamma)`` over alignments).

Labels: an arc reads the template frame of its cell (``ilabel = i + 1``) and writes the input
frame (``olabel = j + 1``), so a path's labels spell its alignment; or, with ``classes``, the
entry arc writes the class and the others epsilon, so the union of one graph per class is an
all-answers graph whose answers are classes (for :mod:`gtn_py.losses`).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..errors import InvalidGraphError, LabelError, WeightError
from ..graph import NEG_INF, Graph, as_number, as_tensor
from ..ops.shortest import total_score, viterbi_path
from ..semiring import LogSemiring

__all__ = ["SYMMETRIC_STEPS", "dtw_graph", "dtw_distance", "dtw_path", "local_distances", "ElasticTemplates"]

# The usual step pattern: advance the template, the input, or both.
SYMMETRIC_STEPS: Tuple[Tuple[int, int], ...] = ((1, 0), (0, 1), (1, 1))


def _lengths(given: Tensor | Sequence[int] | None, default: int, count: int, device: torch.device,
             what: str) -> Tensor:
    if given is None:
        return torch.full((count,), default, dtype=torch.long, device=device)
    lens = torch.as_tensor(given, device=device).to(torch.long).reshape(-1)
    if lens.shape[0] != count:
        raise InvalidGraphError(f"{lens.shape[0]} {what} lengths for {count} pairs")
    bad = ((lens < 0) | (lens > default)).nonzero()
    if bad.numel():
        b = int(bad[0, 0])
        raise InvalidGraphError(f"pair {b}: {what} length {int(lens[b])} outside [0, {default}]")
    return lens


def dtw_graph(distances: Tensor, template_lengths: Tensor | Sequence[int] | None = None,
              input_lengths: Tensor | Sequence[int] | None = None, *,
              steps: Sequence[Tuple[int, int]] = SYMMETRIC_STEPS, step_weights: Sequence[float] | None = None,
              classes: Tensor | Sequence[int] | None = None) -> Graph:
    """The DTW alignment graph of each pair (see the module documentation).

    ``distances``: ``[B, T_template, T_input]`` local distances (or ``[T_template, T_input]``
    for one pair: a single graph); the lengths (``[B]``) default to the full sizes. ``steps``:
    the moves ``(di, dj)`` (non-negative, not both 0) allowed into a cell, each with a
    multiplier of the destination's distance in ``step_weights`` (default 1). ``classes``:
    ``[B]`` labels (>= 1) written by each graph's entry arc. The graphs are acyclic and the
    weights are differentiable gathers of ``distances``.
    """
    distances = as_tensor(distances, "distances", ndim=(2, 3))
    single = distances.dim() == 2
    if single:
        distances = distances.unsqueeze(0)
    if distances.dim() != 3:
        raise InvalidGraphError(f"distances must be [B, T_template, T_input] or [T_template, T_input], "
                                f"got {list(distances.shape)}")
    num_pairs, max_template, max_input = distances.shape
    device = distances.device
    moves = torch.as_tensor(list(steps), dtype=torch.long, device=device).reshape(-1, 2)
    if moves.shape[0] == 0 or bool((moves < 0).any()) or bool((moves.sum(1) == 0).any()):
        raise InvalidGraphError(f"steps must be moves (di, dj) >= 0, not both 0; got {list(steps)}")
    multipliers = torch.as_tensor([1.0] * moves.shape[0] if step_weights is None else list(step_weights),
                                  dtype=distances.dtype, device=device)
    if multipliers.shape[0] != moves.shape[0]:
        raise InvalidGraphError(f"{multipliers.shape[0]} step weights for {moves.shape[0]} steps")
    n = _lengths(template_lengths, max_template, num_pairs, device, "template")
    m = _lengths(input_lengths, max_input, num_pairs, device, "input")
    labels = None
    if classes is not None:
        labels = torch.as_tensor(classes, device=device).to(torch.long).reshape(-1)
        if labels.shape[0] != num_pairs or bool((labels < 1).any()):
            raise LabelError(f"classes must be {num_pairs} labels >= 1 (0 is epsilon), got {labels.tolist()}")

    sizes = 1 + n * m
    offsets = torch.cumsum(sizes, 0) - sizes

    def cell(b: Tensor, i: Tensor, j: Tensor) -> Tensor:
        return offsets[b] + 1 + i * m[b] + j

    # Candidate arcs: every (pair, cell, step), plus an entry arc per pair (step -1).
    b, i, j, k = torch.meshgrid(torch.arange(num_pairs, device=device), torch.arange(max_template, device=device),
                                torch.arange(max_input, device=device), torch.arange(-1, moves.shape[0], device=device),
                                indexing="ij")
    b, i, j, k = b.reshape(-1), i.reshape(-1), j.reshape(-1), k.reshape(-1)
    entry = k < 0
    di, dj = moves[k.clamp(min=0), 0], moves[k.clamp(min=0), 1]
    keep = (i < n[b]) & (j < m[b]) & torch.where(entry, (i == 0) & (j == 0), (i >= di) & (j >= dj))
    b, i, j, k, entry, di, dj = b[keep], i[keep], j[keep], k[keep], entry[keep], di[keep], dj[keep]
    src = torch.where(entry, offsets[b], cell(b, i - di, j - dj))
    dst = cell(b, i, j)
    scale = torch.where(entry, multipliers.new_ones(()), multipliers[k.clamp(min=0)])
    weights = -scale * distances[b, i, j]
    olabel = j + 1 if labels is None else torch.where(entry, labels[b], torch.zeros_like(j))

    num_nodes = int(sizes.sum())
    node_pair = torch.repeat_interleave(torch.arange(num_pairs, device=device), sizes)
    local = torch.arange(num_nodes, device=device) - offsets[node_pair]
    zero, neg_inf = distances.new_zeros(()), distances.new_full((), NEG_INF)
    start = torch.where(local == 0, zero, neg_inf)
    last = (local == n[node_pair] * m[node_pair]) & (local > 0)
    final = torch.where(last, zero, neg_inf)
    g = Graph.from_tensors(src, dst, i + 1, olabel, weights, start, final,
                            node_graph=None if single else node_pair, num_graphs=1 if single else num_pairs)
    return g.check_weights()


def dtw_distance(distances: Tensor, template_lengths: Tensor | Sequence[int] | None = None,
        input_lengths: Tensor | Sequence[int] | None = None, gamma: float = 0.0, *,
        steps: Sequence[Tuple[int, int]] = SYMMETRIC_STEPS, step_weights: Sequence[float] | None = None) -> Tensor:
    """DTW cost of each pair ``[B]`` (0-dim for ``[T_template, T_input]``): the minimum over
    alignments of the accumulated distance (``gamma = 0``), or soft-DTW, ``-gamma log sum
    exp(-cost / gamma)`` over alignments (``gamma > 0``, smooth). ``+inf`` where no alignment
    fits (e.g. an empty sequence). Differentiable w.r.t. ``distances``."""
    gamma = as_number(gamma, "gamma (the soft-DTW temperature)")
    if gamma < 0:
        raise WeightError(f"gamma must be a finite temperature >= 0, got {gamma}")
    g = dtw_graph(distances, template_lengths, input_lengths, steps=steps, step_weights=step_weights)
    return -total_score(g, "tropical" if gamma == 0 else LogSemiring(1.0 / gamma))


def dtw_path(distances: Tensor, template_lengths: Tensor | Sequence[int] | None = None,
             input_lengths: Tensor | Sequence[int] | None = None, *,
             steps: Sequence[Tuple[int, int]] = SYMMETRIC_STEPS,
             step_weights: Sequence[float] | None = None) -> List[Tensor]:
    """The best alignment of each pair as ``[L, 2]`` (template frame, input frame) cells from
    ``(0, 0)`` to the last cell (empty where there is none)."""
    single = as_tensor(distances, "distances").dim() == 2
    g = dtw_graph(distances, template_lengths, input_lengths, steps=steps, step_weights=step_weights)
    paths = viterbi_path(g if not single else Graph.batch([g]))
    cells = torch.stack([paths.ilabel - 1, paths.olabel - 1], 1)
    counts = torch.bincount(paths.arc_graph, minlength=paths.num_graphs).tolist()
    return list(torch.split(cells, counts))


def local_distances(templates: Tensor, inputs: Tensor) -> Tensor:
    """Squared Euclidean distances ``[B, T_template, T_input]`` between the frames of
    ``templates`` ``[B, T_template, D]`` and ``inputs`` ``[B, T_input, D]`` (or unbatched)."""
    templates, inputs = as_tensor(templates, "templates"), as_tensor(inputs, "inputs")
    if templates.dim() != inputs.dim() or templates.dim() not in (2, 3) or templates.shape[-1] != inputs.shape[-1] \
            or templates.shape[:-2] != inputs.shape[:-2]:
        raise InvalidGraphError(f"templates {tuple(templates.shape)} and inputs {tuple(inputs.shape)} must be "
                                "[B, T_template, D] and [B, T_input, D] (or both unbatched)")
    return ((templates.unsqueeze(-2) - inputs.unsqueeze(-3)) ** 2).sum(-1)


class ElasticTemplates(nn.Module):
    """One trainable template of ``num_frames`` frames of ``dim`` features per class: an
    input's energy for a class is its (soft-)DTW distance to the class's template (with
    squared Euclidean local distances). The templates learn through the DTW graph."""

    def __init__(self, num_classes: int, num_frames: int, dim: int, gamma: float = 0.0):
        super().__init__()
        self.templates = nn.Parameter(torch.randn(num_classes, num_frames, dim) * 0.1)
        self.gamma = gamma

    def _pairs(self, inputs: Tensor, classes: Tensor) -> Tensor:
        """Local distances between each input and the template of its class."""
        return local_distances(self.templates[classes].to(inputs.dtype), inputs)

    def forward(self, inputs: Tensor, input_lengths: Tensor | None = None) -> Tensor:
        """Energies ``[B, num_classes]`` of ``inputs`` ``[B, T, dim]``."""
        num_seqs, num_classes = inputs.shape[0], self.templates.shape[0]
        classes = torch.arange(num_classes, device=inputs.device).repeat(num_seqs)
        repeated = inputs.repeat_interleave(num_classes, 0)
        lengths = None if input_lengths is None else torch.as_tensor(input_lengths).repeat_interleave(num_classes)
        return dtw_distance(self._pairs(repeated, classes), None, lengths, self.gamma).reshape(num_seqs, num_classes)

    def answer_graphs(self, inputs: Tensor, labels: Tensor, input_lengths: Tensor | None = None
                      ) -> Tuple[Graph, Graph]:
        """The correct-answer graphs (the DTW graph of each input's class template, writing the
        class ``label + 1``) and the all-answers graphs (per input, the union of its DTW graphs
        against every template), as batches for :mod:`gtn_py.losses`."""
        num_seqs, num_classes = inputs.shape[0], self.templates.shape[0]
        labels = torch.as_tensor(labels, device=inputs.device).to(torch.long)
        correct = dtw_graph(self._pairs(inputs, labels), None, input_lengths, classes=labels + 1)
        classes = torch.arange(num_classes, device=inputs.device).repeat(num_seqs)
        lengths = None if input_lengths is None else torch.as_tensor(input_lengths).repeat_interleave(num_classes)
        pairs = dtw_graph(self._pairs(inputs.repeat_interleave(num_classes, 0), classes), None, lengths,
                          classes=classes + 1)
        # The union of each input's graphs: a batch is a disjoint union, so regrouping the
        # graph ids merges them.
        everything = Graph.from_tensors(pairs.src, pairs.dst, pairs.ilabel, pairs.olabel, pairs.weights,
                                         pairs.start_weights, pairs.final_weights,
                                         node_graph=pairs.node_graph // num_classes, num_graphs=num_seqs)
        return correct, everything
