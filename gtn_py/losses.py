"""Energy-based losses over graphs: NLL/MMI, perceptron, hinge and the contrastive family.

Every loss takes, for each example, the graph of its **correct answers** and the graph of
**all answers** (a Graph, a batch Graph or a list of Graphs; the two sides pair up example by
example). The *energy* of an answer is minus its score. An answer is an **output string**
(epsilons removed) and a graph may hold several paths for one answer (alignments, segmentations):

* ``F(y)``: the energy of the correct answer, ``-viterbi_score(correct)`` (the best path: the
  minimum over latent variables), except in NLL/MMI and MEE, which use the free energy
  ``-1/beta log sum_paths exp(beta score)`` of each side;
* ``F(ŷ)``: the energy of the **most offending incorrect answer**, the best path of the
  all-answers graph whose output string the correct graph does not accept: the best path of
  the all-answers graph composed with the complement of the correct output language
  (:func:`most_offending_incorrect`). Where every answer is correct, ``F(ŷ) = +inf``.

The losses (LeCun et al., "A tutorial on energy-based learning", table of the lecture notes),
with the margin each one enforces between ``F(ŷ)`` and ``F(y)``:

==============  ==================================================================  ========
loss            formula                                                             margin
==============  ==================================================================  ========
energy          ``F(y)``                                                            0
perceptron      ``F(y) - min_ŷ F(ŷ)`` (min over all answers, the correct included)  0
hinge           ``max(0, m + F(y) - F(ŷ))``                                         ``m``
log             ``log(1 + exp(F(y) - F(ŷ)))``                                       inf
LVQ2            ``min(M, max(0, F(y) - F(ŷ)))``                                     0
MCE             ``sigmoid(F(y) - F(ŷ)) = (1 + exp(-(F(y) - F(ŷ))))^-1``              inf
square-square   ``F(y)^2 + max(0, m - F(ŷ))^2``                                     ``m``
square-exp      ``F(y)^2 + beta exp(-F(ŷ))``                                        inf
NLL/MMI         ``F(y) + 1/beta log sum_ŷ exp(-beta F(ŷ))`` (sum over all answers)   inf
MEE             ``1 - exp(-beta F(y)) / sum_ŷ exp(-beta F(ŷ))``                      inf
==============  ==================================================================  ========

Square-square is written with ``+``: the lecture notes' table prints ``F(y)^2 - (...)^2``, a
typo (it would reward pushing ``F(ŷ)`` *below* the margin); the loss-function zoo table of the
same notes has the correct ``+``. Square-square and square-exp assume non-negative energies.

The hinge can also be taken with **loss-augmented decoding** (``cost=``): a cost graph (e.g.
:func:`hamming_cost`, which adds ``margin`` to every label differing from the reference) is
composed onto the all-answers graph's output side, and the loss is
``max(0, F(y) - min_ŷ (F(ŷ) - cost(y, ŷ)))``, the structured SVM loss.

Each loss returns one value per example, reduced by ``reduction`` (``"none"``: ``[B]``, or a
0-dim tensor for a single graph; ``"mean"``, ``"sum"``). All are differentiable w.r.t. the
weights of both graphs; an impossible correct answer gives ``+inf`` and zero gradients.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, NamedTuple, Sequence, Set, Tuple, Union

import torch
from torch import Tensor

from .errors import ArgumentTypeError, ArgumentValueError, InvalidGraphError, LabelError, WeightError
from .graph import EPSILON, NEG_INF, Graph, as_count, as_graph, as_tensor
from .ops.compose import compose, determinize
from .ops.shortest import total_score, viterbi_path
from .ops.structure import project_output
from .semiring import LogSemiring

GraphsLike = Union[Graph, Sequence[Graph]]

# The correct output strings are enumerated up to this many per graph (then determinized).
MAX_ENUMERATED_STRINGS = 8

__all__ = [
    "reduce_losses", "free_energy", "energy", "most_offending_incorrect", "MostOffending", "rejecting_acceptor",
    "hamming_cost",
    "energy_loss", "nll", "mmi", "perceptron", "hinge", "log_loss", "lvq2", "mce", "square_square",
    "square_exp", "mee",
]


# ---------------------------------------------------------------------- plumbing
def reduce_losses(losses: Tensor, reduction: str = "mean", divisors: Tensor | None = None) -> Tensor:
    """``"none"`` (as is), ``"sum"`` or ``"mean"`` of per-example losses; with ``divisors``
    (e.g. target lengths, as torch's ``ctc_loss`` does) ``"mean"`` averages ``losses / divisors``
    (divisors below 1 count as 1). ``"mean"`` of an empty batch raises InvalidGraphError (torch
    would give NaN)."""
    losses = as_tensor(losses, "losses")
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        if losses.numel() == 0:
            raise InvalidGraphError("reduction='mean' over an empty batch is undefined; use 'sum' (0) or 'none'")
        if divisors is not None:
            losses = losses / divisors.clamp(min=1).to(losses.dtype)
        return losses.mean()
    raise InvalidGraphError(f"reduction must be 'none', 'mean' or 'sum', not {reduction!r}")


def _as_batch(graphs: GraphsLike) -> Tuple[Graph, bool]:
    """One (batch) graph, and whether results keep a batch dimension."""
    if isinstance(graphs, Graph):
        return graphs, graphs.is_batch
    items = list(graphs) if isinstance(graphs, Iterable) else [graphs]
    if not all(isinstance(g, Graph) for g in items):
        raise InvalidGraphError(f"expected a Graph or a list of Graphs, got {type(graphs).__name__}")
    return Graph.batch(items), True


def _pair(correct: GraphsLike, all_answers: GraphsLike) -> Tuple[Graph, Graph, bool]:
    c, c_batched = _as_batch(correct)
    a, a_batched = _as_batch(all_answers)
    if c.num_graphs != a.num_graphs:
        raise InvalidGraphError(f"{c.num_graphs} correct-answer graphs for {a.num_graphs} all-answers graphs")
    return c, a, c_batched or a_batched


def _finish(losses: Tensor, batched: bool, reduction: str) -> Tensor:
    return reduce_losses(losses if batched else losses.reshape(()), reduction)


def free_energy(graphs: GraphsLike, beta: float = 1.0) -> Tensor:
    """``-1/beta log sum_paths exp(beta score)`` per graph (``+inf`` where there is no path)."""
    return -total_score(graphs, LogSemiring(_setting("beta", beta, positive=True)))


def energy(graphs: GraphsLike) -> Tensor:
    """``-(best path score)`` per graph: the energy of the best answer, latent variables minimised."""
    return -total_score(graphs, "tropical")


# ---------------------------------------------------------------------- most offending answer
class MostOffending(NamedTuple):
    """The most offending incorrect answer of each example."""

    energies: Tensor          # [B] F(ŷ) (+inf where every answer is correct), differentiable
    strings: List[List[int]]  # ŷ's output string per example (empty where there is none)
    paths: Graph              # ŷ's best path per example, a batch of B linear graphs (empty graph: none)


def _output_strings(paths: Graph) -> List[List[int]]:
    """Output string (epsilons removed) of each linear path graph of a batch (arcs in path order)."""
    strings: List[List[int]] = [[] for _ in range(paths.num_graphs)]
    for label, path in zip(paths.olabel.tolist(), paths.arc_graph.tolist()):
        if label != EPSILON:
            strings[path].append(label)
    return strings


def _trie(strings: List[Set[Tuple[int, ...]]], like: Tensor) -> Graph:
    """A batch of deterministic acceptors, graph ``b`` accepting exactly ``strings[b]`` (a
    prefix tree; nodes in discovery order, the root first)."""
    src: List[int] = []
    label: List[int] = []
    dst: List[int] = []
    final: List[bool] = []
    owner: List[int] = []
    for b, group in enumerate(strings):
        root = len(final)
        nodes: Dict[Tuple[int, ...], int] = {(): root}
        final.append(() in group)
        owner.append(b)
        for string in sorted(group):
            for n in range(1, len(string) + 1):
                if string[:n] not in nodes:
                    nodes[string[:n]] = len(final)
                    final.append(False)
                    owner.append(b)
                    src.append(nodes[string[:n - 1]])
                    label.append(string[n - 1])
                    dst.append(nodes[string[:n]])
            final[nodes[string]] = True
    device = like.device
    ints = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    node_owner = ints(owner)
    is_root = torch.ones_like(node_owner, dtype=torch.bool)
    is_root[1:] = node_owner[1:] != node_owner[:-1]
    zero, neg_inf = like.new_zeros(()), like.new_full((), NEG_INF)
    return Graph.from_tensors(ints(src), ints(dst), ints(label), ints(label), like.new_zeros(len(src)),
                               torch.where(is_root, zero, neg_inf),
                               torch.where(torch.tensor(final, device=device), zero, neg_inf),
                               node_graph=node_owner, num_graphs=len(strings))


def _complement(language: Graph, num_graphs: int, alphabet: Tensor) -> Graph:
    """The complement over ``alphabet`` of a batch of deterministic acceptors: a sink node per
    graph takes every label a state has no arc for, and finality is flipped (the sink accepts).
    A graph without a start node (the empty language) starts at its sink."""
    num_nodes, device = language.num_nodes, language.device
    node_graph = language.node_graph
    width = alphabet.shape[0]
    # Which (state, label) moves exist; the others go to the sink.
    column = torch.searchsorted(alphabet, language.ilabel.contiguous()).clamp(max=max(width - 1, 0))
    known = (alphabet[column] == language.ilabel) if width else torch.zeros_like(column, dtype=torch.bool)
    present = torch.zeros(num_nodes, width, dtype=torch.bool, device=device)
    present[language.src[known], column[known]] = True
    state, missing = (~present).nonzero(as_tuple=True)
    sink = num_nodes + torch.arange(num_graphs, device=device)
    loops_graph = torch.arange(num_graphs, device=device).repeat_interleave(width)
    src = torch.cat([language.src[known], state, sink[loops_graph]])
    dst = torch.cat([language.dst[known], sink[node_graph[state]], sink[loops_graph]])
    label = torch.cat([language.ilabel[known], alphabet[missing], alphabet.repeat(num_graphs)])
    zero, neg_inf = language.weights.new_zeros(()), language.weights.new_full((), NEG_INF)
    has_start = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    has_start[node_graph[language.start_weights > NEG_INF]] = True
    start = torch.cat([torch.where(language.start_weights > NEG_INF, zero, neg_inf),
                       torch.where(~has_start, zero, neg_inf)])
    final = torch.cat([torch.where(language.final_weights > NEG_INF, neg_inf, zero), zero.expand(num_graphs)])
    everything = torch.cat([node_graph, torch.arange(num_graphs, device=device)])
    layout = torch.argsort(everything, stable=True)  # keep each graph's nodes together
    renumber = torch.empty_like(layout)
    renumber[layout] = torch.arange(layout.shape[0], device=device)
    arc_order = torch.argsort(everything[src], stable=True)
    src, dst, label = renumber[src[arc_order]], renumber[dst[arc_order]], label[arc_order]
    return Graph.from_tensors(src, dst, label, label, language.weights.new_zeros(src.shape[0]), start[layout],
                               final[layout], node_graph=everything[layout], num_graphs=num_graphs)


def rejecting_acceptor(correct: Graph, alphabet: Tensor) -> Graph:
    """The complement of each correct graph's output language over ``alphabet`` (sorted
    labels >= 1): an unweighted acceptor (a batch) of every string over ``alphabet`` that
    ``correct`` does not output; strings with labels outside ``alphabet`` are not in it.

    The correct strings are found best first, by composing ``correct`` with the complement of
    the strings found so far until nothing is left (one round per string: a transcription's
    graph, however many alignments it has, takes two linear-time rounds). Past
    ``MAX_ENUMERATED_STRINGS`` strings the language is determinized instead (``correct`` must
    then be acyclic after trimming, else :class:`~gtn_py.errors.CyclicGraphError`).
    """
    correct = as_graph(correct, "correct")
    alphabet = as_tensor(alphabet, "alphabet", integer=True, ndim=1, least=1)
    if bool((alphabet[1:] <= alphabet[:-1]).any()):
        raise ArgumentValueError(f"alphabet must be sorted labels without repeats, got {alphabet.tolist()[:20]}")
    correct = (correct if correct.is_batch else Graph.batch([correct])).detach()
    num_graphs = correct.num_graphs
    strings: List[Set[Tuple[int, ...]]] = [set() for _ in range(num_graphs)]
    for _ in range(MAX_ENUMERATED_STRINGS + 1):
        rejecting = _complement(_trie(strings, correct.weights), num_graphs, alphabet)
        leftover = viterbi_path(compose(correct, rejecting))
        exists = torch.bincount(leftover.node_graph, minlength=num_graphs).cpu() > 0
        if not bool(exists.any()):
            return rejecting
        for b, string in enumerate(_output_strings(leftover)):
            if exists[b]:
                strings[b].add(tuple(string))
    return _complement(determinize(project_output(correct), "tropical"), num_graphs, alphabet)


def most_offending_incorrect(correct: GraphsLike, all_answers: GraphsLike) -> MostOffending:
    """For each example, the best path of the all-answers graph whose output string is not
    accepted by the correct graph, and its energy (differentiable w.r.t. the all-answers
    graph's weights).

    The incorrect answers are the all-answers graph composed with the complement of the
    correct output language (:func:`rejecting_acceptor`), so their best path is one Viterbi
    search, however many paths (alignments) each answer has. Both graphs may be cyclic (the
    correct one then must output at most ``MAX_ENUMERATED_STRINGS`` strings).
    """
    c, a, _ = _pair(correct, all_answers)
    olabels = a.olabel
    alphabet = torch.unique(olabels[olabels != EPSILON])
    a = a if a.is_batch else Graph.batch([a])  # compose pairs batches graph by graph
    paths = viterbi_path(compose(a, rejecting_acceptor(c, alphabet)))
    return MostOffending(energy(paths), _output_strings(paths), paths)


# ---------------------------------------------------------------------- cost graphs
def hamming_cost(references: Union[Sequence[int], Sequence[Sequence[int]], Tensor], num_labels: int,
                 margin: float = 1.0, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> Graph:
    """Hamming-cost acceptor(s): every string of the reference's length over labels
    ``1..num_labels``, scored ``margin`` times the number of positions where it differs from
    the reference. Composed onto an all-answers graph's output side (``compose(all, cost)``;
    on the input side, e.g. per-frame labels, ``compose(cost, all)``) it adds the margin to
    competing answers and restricts them to the reference's length.

    ``references``: one label sequence (a single graph) or a list of them (a batch).
    """
    if isinstance(references, Tensor):
        references = as_tensor(references, "references", integer=True, ndim=(1, 2))
        single = references.dim() == 1
    elif isinstance(references, (list, tuple)):
        single = all(isinstance(r, int) for r in references)
    else:
        raise ArgumentTypeError(f"references must be a label sequence or a list of them, not "
                                f"{type(references).__name__}")
    refs = [references] if single else list(references)
    num_labels = as_count(num_labels, "num_labels", 1)
    margin = _setting("margin", margin)
    device = torch.device(device)
    labels = torch.arange(1, num_labels + 1, device=device)
    graphs: List[Graph] = []
    for ref in refs:
        r = as_tensor(ref, "references" if single else f"references[{len(graphs)}]", integer=True,
                      ndim=1).to(device)
        bad = ((r < 1) | (r > num_labels)).nonzero()
        if bad.numel():
            raise LabelError(f"reference label {int(r[bad[0, 0]])} at position {int(bad[0, 0])} is outside "
                             f"1..{num_labels} (label 0 is epsilon)")
        n = r.shape[0]
        position = torch.arange(n, device=device).repeat_interleave(num_labels)
        label = labels.repeat(n)
        weights = torch.where(label != r[position], torch.tensor(float(margin), dtype=dtype, device=device),
                              torch.tensor(0.0, dtype=dtype, device=device))
        graphs.append(Graph.from_arcs(n + 1, position, position + 1, label, label, weights,
                                      start=[0], accept=[n], dtype=dtype, device=device))
    return graphs[0] if single else Graph.batch(graphs)


# ---------------------------------------------------------------------- the losses
def energy_loss(correct: GraphsLike, reduction: str = "mean") -> Tensor:
    """``F(y)``: pushes the correct answer's energy down and nothing up (margin 0; collapses)."""
    c, batched = _as_batch(correct)
    return _finish(energy(c), batched, reduction)


def nll(correct: GraphsLike, all_answers: GraphsLike, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood / MMI: ``F(y) + 1/beta log sum_ŷ exp(-beta F(ŷ))`` with free
    energies at inverse temperature ``beta`` (``= total_beta(all) - total_beta(correct)``)."""
    c, a, batched = _pair(correct, all_answers)
    return _finish(_difference(free_energy(c, beta), free_energy(a, beta)), batched, reduction)


mmi = nll


def _difference(f_correct: Tensor, f_all: Tensor) -> Tensor:
    """``f_correct - f_all`` with ``+inf`` (and zero gradients) where the correct answer is
    impossible, whatever ``f_all`` is."""
    impossible = torch.isinf(f_correct)
    safe_all = torch.where(impossible | torch.isinf(f_all), torch.zeros_like(f_all), f_all)
    return torch.where(impossible, f_correct, f_correct - safe_all)


def perceptron(correct: GraphsLike, all_answers: GraphsLike, reduction: str = "mean") -> Tensor:
    """``F(y) - min_ŷ F(ŷ)``: Viterbi score of all answers minus that of the correct ones (margin 0)."""
    c, a, batched = _pair(correct, all_answers)
    return _finish(_difference(energy(c), energy(a)), batched, reduction)


def _contrast(correct: GraphsLike, all_answers: GraphsLike) -> Tuple[Tensor, Tensor, bool]:
    """``(F(y), F(ŷ))`` with ŷ the most offending incorrect answer; ``F(ŷ)`` is taken as
    ``+inf`` (nothing pushed up) where the correct answer is impossible, so that such an
    example's loss is ``+inf`` with zero gradients."""
    c, a, batched = _pair(correct, all_answers)
    f_correct, f_wrong = energy(c), most_offending_incorrect(c, a).energies
    f_wrong = torch.where(torch.isinf(f_correct), torch.full_like(f_wrong, float("inf")), f_wrong)
    return f_correct, f_wrong, batched


def _setting(name: str, value: float, positive: bool = False) -> float:
    """A loss's margin, saturation or scale: finite (and > 0 where ``positive``), else WeightError
    (a NaN margin made every loss NaN; a saturation of 0 made every loss 0)."""
    try:
        value = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise WeightError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise WeightError(f"{name} must be finite{' and > 0' if positive else ''}, got {value}")
    return value


def _gap(f_correct: Tensor, f_wrong: Tensor) -> Tensor:
    """``F(y) - F(ŷ)``, which is -inf (zero gradient) where there is no incorrect answer and
    +inf (zero gradient) where the correct answer is impossible."""
    finite = torch.isfinite(f_correct) & torch.isfinite(f_wrong)
    zero = torch.zeros_like(f_correct)
    gap = torch.where(finite, f_correct, zero) - torch.where(finite, f_wrong, zero)
    infinite = torch.where(torch.isinf(f_correct), f_correct, -f_wrong)
    return torch.where(finite, gap, infinite)


def hinge(correct: GraphsLike, all_answers: GraphsLike, margin: float = 1.0, cost: GraphsLike | None = None,
          reduction: str = "mean") -> Tensor:
    """Hinge loss with a margin.

    Without ``cost``: ``max(0, margin + F(y) - F(ŷ))`` against the most offending incorrect
    answer. With ``cost`` (a cost graph per example, or one for all, e.g. :func:`hamming_cost`;
    ``margin`` is then ignored): loss-augmented decoding, ``max(0, F(y) - min_ŷ (F(ŷ) -
    cost(ŷ)))`` where the minimum runs over ``compose(all_answers, cost)``: competitors pay
    their cost as a margin (an answer the cost graph rejects is not a competitor).
    """
    if cost is None:
        margin = _setting("margin", margin)
        f_correct, f_wrong, batched = _contrast(correct, all_answers)
        return _finish(torch.relu(margin + _gap(f_correct, f_wrong)), batched, reduction)
    c, a, batched = _pair(correct, all_answers)
    cost_graph, _ = _as_batch(cost)
    augmented = energy(compose(a, cost_graph))
    return _finish(torch.relu(_gap(energy(c), augmented)), batched, reduction)


def log_loss(correct: GraphsLike, all_answers: GraphsLike, reduction: str = "mean") -> Tensor:
    """``log(1 + exp(F(y) - F(ŷ)))`` (infinite margin)."""
    f_correct, f_wrong, batched = _contrast(correct, all_answers)
    return _finish(torch.nn.functional.softplus(_gap(f_correct, f_wrong)), batched, reduction)


def lvq2(correct: GraphsLike, all_answers: GraphsLike, saturation: float = 1.0, reduction: str = "mean") -> Tensor:
    """``min(M, max(0, F(y) - F(ŷ)))`` with ``M = saturation`` (margin 0)."""
    saturation = _setting("saturation", saturation, positive=True)
    f_correct, f_wrong, batched = _contrast(correct, all_answers)
    return _finish(torch.clamp(_gap(f_correct, f_wrong), min=0.0, max=saturation), batched, reduction)


def mce(correct: GraphsLike, all_answers: GraphsLike, reduction: str = "mean") -> Tensor:
    """Minimum classification error: ``sigmoid(F(y) - F(ŷ))`` (infinite margin)."""
    f_correct, f_wrong, batched = _contrast(correct, all_answers)
    return _finish(torch.sigmoid(_gap(f_correct, f_wrong)), batched, reduction)


def _square(f: Tensor) -> Tensor:
    """``f ** 2``, ``+inf`` with a zero (not NaN) gradient where ``f`` is infinite."""
    finite = torch.isfinite(f)
    squared = torch.where(finite, f, torch.zeros_like(f)) ** 2
    return torch.where(finite, squared, torch.full_like(f, float("inf")))


def square_square(correct: GraphsLike, all_answers: GraphsLike, margin: float = 1.0,
                  reduction: str = "mean") -> Tensor:
    """``F(y)^2 + max(0, margin - F(ŷ))^2`` (margin ``margin``; for non-negative energies)."""
    margin = _setting("margin", margin)
    f_correct, f_wrong, batched = _contrast(correct, all_answers)
    push_up = torch.relu(margin - f_wrong)  # 0 where there is no incorrect answer (F(ŷ) = +inf)
    return _finish(_square(f_correct) + push_up ** 2, batched, reduction)


def square_exp(correct: GraphsLike, all_answers: GraphsLike, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """``F(y)^2 + beta exp(-F(ŷ))`` (infinite margin; for non-negative energies)."""
    beta = _setting("beta", beta, positive=True)
    f_correct, f_wrong, batched = _contrast(correct, all_answers)
    return _finish(_square(f_correct) + beta * torch.exp(-f_wrong), batched, reduction)


def mee(correct: GraphsLike, all_answers: GraphsLike, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Minimum empirical error: ``1 - exp(-beta F(y)) / sum_ŷ exp(-beta F(ŷ))``, one minus the
    probability of the correct answer (free energies at inverse temperature ``beta``)."""
    c, a, batched = _pair(correct, all_answers)
    log_ratio = -_difference(free_energy(c, beta), free_energy(a, beta))
    return _finish(1 - torch.exp(beta * log_ratio), batched, reduction)

