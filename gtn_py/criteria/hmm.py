"""HMM/NN hybrids as graphs: left-to-right HMM topologies, word models, lexicon and grammar,
forward-algorithm training of an emission network, Viterbi decoding and forced alignment.

Labels. An HMM graph reads *HMM-state ids*: state ``k`` of the model (0-based, the column
``k`` of the emission scores ``[B, T, num_states_total]`` a network gives) is label ``k + 1``,
so that graphs compose (label 0 is epsilon) and output labels can be words. Unit ``u`` of
:func:`hmm_units` with ``S`` states owns states ``u * S .. u * S + S - 1``.

Graphs. :func:`hmm_topology` is one unit's left-to-right HMM; :func:`word_model` chains
units into a word (a transducer writing the word on its first arc); :func:`lexicon` is any
sequence of words; :func:`decoding_graph` composes a lexicon with a grammar (an acceptor over
words) and :func:`transcript_graphs` with transcriptions; both remove the epsilons, so every
arc reads one frame. Scoring against the network is the dense intersection
(:mod:`gtn_py.ops.dense`): a path of ``T`` arcs reading states ``k_1..k_T`` scores its
transition scores plus ``sum_t emissions[t, k_t]``. :func:`hmm_nll` is the forward algorithm's
negative log-likelihood; :func:`hmm_decode` and :func:`forced_align` are Viterbi.
"""

from __future__ import annotations

from typing import List, Mapping, NamedTuple, Sequence, Union

import torch
from torch import Tensor

from ..errors import ArgumentTypeError, ArgumentValueError, InvalidGraphError, LabelError
from ..graph import NEG_INF, Graph, as_batch, as_count, as_graph, as_graph_list, as_integer, as_tensor, gather
from ..losses import reduce_losses
from ..ops.compose import compose, remove_epsilon
from ..ops.dense import GraphsLike, LengthsLike, dense_score, intersect_dense, viterbi_align
from ..ops.structure import closure, concat, union
from .ctc import label_sequences

__all__ = ["hmm_topology", "hmm_units", "word_model", "lexicon", "decoding_graph", "transcript_graphs",
           "hmm_score", "hmm_nll", "hmm_lattice", "HMMAlignment", "hmm_decode", "forced_align"]

# Columns of transition scores: out of each state, to itself, to the next state, over it.
STAY, NEXT, SKIP = 0, 1, 2


def hmm_topology(num_states: int, self_loops: bool = True, skips: bool = False,
                 transition_scores: Tensor | None = None, *, first_label: int = 1,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Graph:
    """A left-to-right HMM of ``num_states`` emitting states as an acceptor over state labels
    ``first_label .. first_label + num_states - 1``.

    Nodes: an entry node (the start) and node ``s + 1`` = "in state ``s``". Every arc reads one
    frame: entering state 0 from the entry node; with ``self_loops`` staying in a state; moving
    to the next state; with ``skips`` jumping over one state. The last state is accepting, and
    with ``skips`` the last but one too (skipping the last state).

    ``transition_scores`` ``[num_states, 3]``: log-scores of leaving state ``s`` by staying,
    moving on and skipping (:data:`STAY`, :data:`NEXT`, :data:`SKIP`); leaving the last state
    (or skipping from the last but one) is leaving the model, carried by final weights, so a
    row normalised over its allowed moves (e.g. a masked ``log_softmax``) makes a proper HMM.
    Entering state 0 scores 0. Default: all 0. The weights are differentiable gathers of the
    tensor (learned transitions).
    """
    num_states = as_integer(num_states, "num_states", ArgumentValueError)
    first_label = as_integer(first_label, "first_label")
    if num_states < 1:
        raise InvalidGraphError(f"an HMM needs at least one state, got {num_states}")
    if first_label < 1:
        raise LabelError(f"first_label must be >= 1 (label 0 is epsilon), got {first_label}")
    if transition_scores is None:
        transition_scores = torch.zeros(num_states, 3, dtype=dtype, device=device)
    if tuple(transition_scores.shape) != (num_states, 3):
        raise InvalidGraphError(f"transition_scores must be [num_states, 3] = [{num_states}, 3], "
                                f"got {list(transition_scores.shape)}")
    device = transition_scores.device
    states = torch.arange(num_states, device=device)
    # Arc weights and exit scores index transition_scores.reshape(-1): (state, move) -> 3 * state + move.
    kinds = [(torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device),
              torch.full((1,), -1, dtype=torch.long, device=device))]      # entry -> state 0
    if self_loops:
        kinds.append((states + 1, states, 3 * states + STAY))
    kinds.append((states[:-1] + 1, states[1:], 3 * states[:-1] + NEXT))
    if skips:
        kinds.append((states[:-2] + 1, states[2:], 3 * states[:-2] + SKIP))
    src = torch.cat([k[0] for k in kinds])
    target = torch.cat([k[1] for k in kinds])
    scores = transition_scores.reshape(-1)
    weights = gather(scores, torch.cat([k[2] for k in kinds]))
    labels = target + first_label
    nodes = num_states + 1
    start = torch.full((nodes,), NEG_INF, dtype=scores.dtype, device=device)
    start[0] = 0.0
    exit_index = torch.full((nodes,), -1, dtype=torch.long, device=device)
    exit_index[num_states] = 3 * (num_states - 1) + NEXT
    if skips and num_states >= 2:
        exit_index[num_states - 1] = 3 * (num_states - 2) + SKIP
    final = torch.where(exit_index >= 0, gather(scores, exit_index), scores.new_full((), NEG_INF))
    return Graph.from_tensors(src, target + 1, labels, labels, weights, start, final).check_weights()


def hmm_units(num_units: int, num_states: int, self_loops: bool = True, skips: bool = False,
              transition_scores: Tensor | None = None, *, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> List[Graph]:
    """One :func:`hmm_topology` per unit (phone, letter...), unit ``u`` owning state labels
    ``1 + u * num_states ..``; ``transition_scores``: ``[num_units, num_states, 3]`` (or None)."""
    num_units = as_count(num_units, "num_units")
    num_states = as_integer(num_states, "num_states", ArgumentValueError)
    if transition_scores is not None and tuple(transition_scores.shape) != (num_units, num_states, 3):
        raise InvalidGraphError(f"transition_scores must be [num_units, num_states, 3] = "
                                f"[{num_units}, {num_states}, 3], got {list(transition_scores.shape)}")
    return [hmm_topology(num_states, self_loops, skips, None if transition_scores is None else transition_scores[u],
                         first_label=1 + u * num_states, dtype=dtype, device=device) for u in range(num_units)]


def word_model(units: Sequence[int], unit_hmms: Sequence[Graph], word: int) -> Graph:
    """The HMM of a word: its units' HMMs in sequence, as a transducer from state labels to
    the word, written by the arcs that leave the start nodes (so once per pass through the
    word; those start nodes must have no incoming arcs, as :func:`hmm_topology`'s do)."""
    word = as_integer(word, "word")
    units = as_tensor(units, f"the units of word {word}", integer=True, ndim=1).tolist()
    unit_hmms = as_graph_list(unit_hmms, "unit_hmms")
    if word < 1:
        raise LabelError(f"word labels must be >= 1 (label 0 is epsilon), got {word}")
    if len(units) == 0:
        raise InvalidGraphError(f"word {word} has no units")
    for u in units:
        if not 0 <= u < len(unit_hmms):
            raise InvalidGraphError(f"word {word}: unit {u} outside [0, {len(unit_hmms)})")
    g = concat([unit_hmms[u] for u in units])
    is_start = g.start_weights > NEG_INF
    entering = is_start[g.dst].nonzero()
    if entering.numel():
        a = int(entering[0, 0])
        raise InvalidGraphError(f"word {word}: arc {a} enters start node {int(g.dst[a])}; the word label "
                                "goes on the arcs leaving the start nodes, so they must have no incoming arcs")
    first = is_start[g.src]
    return g.replace(olabel=torch.where(first, torch.full_like(g.olabel, word), torch.zeros_like(g.olabel)))


PronunciationsLike = Union[Mapping[int, Sequence[int]], Sequence[Sequence[int]]]


def lexicon(pronunciations: PronunciationsLike, unit_hmms: Sequence[Graph]) -> Graph:
    """Any sequence of words: the closure of the union of the word models. ``pronunciations``
    maps word labels (>= 1) to unit sequences, or is a list whose entry ``i`` is word ``i + 1``."""
    if isinstance(pronunciations, Tensor):
        pronunciations = as_tensor(pronunciations, "pronunciations", integer=True, ndim=2).tolist()
    if not isinstance(pronunciations, (Mapping, list, tuple)):
        raise ArgumentTypeError(f"pronunciations must map word labels to unit lists (a dict, or a list whose "
                                f"entry i is word i + 1), not {type(pronunciations).__name__}")
    items = pronunciations.items() if isinstance(pronunciations, Mapping) else \
        ((i + 1, units) for i, units in enumerate(pronunciations))
    return closure(union([word_model(units, unit_hmms, word) for word, units in items]))


def decoding_graph(lexicon_graph: Graph, grammar: Graph | None = None) -> Graph:
    """The lexicon composed with a grammar (an acceptor over word labels; None: any word
    sequence), epsilons removed so that every arc reads one frame."""
    g = lexicon_graph if grammar is None else compose(lexicon_graph, grammar)
    return remove_epsilon(g)


def transcript_graphs(lexicon_graph: Graph, transcripts: Sequence[Sequence[int]] | Tensor,
                      transcript_lengths: LengthsLike = None) -> Graph:
    """The HMM graph of each transcription (a batch): the lexicon composed with each word
    sequence, epsilons removed. ``transcripts`` as :func:`~gtn_py.criteria.ctc.label_sequences`
    takes them (a list of word lists, or padded ``[B, S]`` with lengths)."""
    lexicon_graph = as_graph(lexicon_graph, "lexicon_graph")
    words = label_sequences(transcripts, transcript_lengths, dtype=lexicon_graph.dtype, device=lexicon_graph.device)
    return remove_epsilon(compose(lexicon_graph, words))


def _frame_graphs(graphs: GraphsLike, what: str = "graphs") -> GraphsLike:
    """The graphs with state labels turned into emission columns (label - 1)."""
    def shift(g: Graph) -> Graph:
        eps = (g.ilabel == 0).nonzero()
        if eps.numel():
            a = int(eps[0, 0])
            raise LabelError(f"arc {a} reads epsilon; every arc of an HMM graph must read a state "
                             "(use decoding_graph / transcript_graphs, which remove epsilons)")
        return g.replace(ilabel=g.ilabel - 1)
    return shift(graphs) if isinstance(graphs, Graph) else [shift(g) for g in as_graph_list(graphs, what)]


def hmm_score(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None, semiring: str = "log") -> Tensor:
    """Total score of each sequence's HMM graph with the emission scores ``[B, T, num_states]``
    (forward algorithm; ``"tropical"``: Viterbi). ``[B]``, differentiable w.r.t. the emissions
    and the graphs' transition scores; ``-inf`` where no path fits the length."""
    return dense_score(_frame_graphs(graphs), emissions, lengths, semiring)


def hmm_nll(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of each sequence under its HMM graph (e.g. from
    :func:`transcript_graphs`): ``-log sum_paths exp(score)``, the forward algorithm."""
    return reduce_losses(-hmm_score(graphs, emissions, lengths), reduction)


def hmm_lattice(graphs: GraphsLike, emissions: Tensor, lengths: LengthsLike = None,
                beam: float | None = None) -> Graph:
    """The dense intersection of each sequence's HMM graph with its emission scores, as a
    lattice (a batch; see :func:`~gtn_py.ops.dense.intersect_dense`) reading HMM-state labels
    and writing words: the correct-answer (transcription) or all-answers (decoding graph)
    lattice for the losses of :mod:`gtn_py.losses` (MMI, hinge, MCE... discriminative training)."""
    lattice = intersect_dense(_frame_graphs(graphs), emissions, lengths, beam)
    return lattice.replace(ilabel=lattice.ilabel + 1)


class HMMAlignment(NamedTuple):
    states: Tensor            # [B, T] HMM state (emission column) at each frame, -1 beyond the length / no path
    words: List[List[int]]    # output words along the best path
    scores: Tensor            # [B] best path scores (-inf where none), differentiable


def hmm_decode(decoding: GraphsLike, emissions: Tensor, lengths: LengthsLike = None) -> HMMAlignment:
    """Viterbi: the best path of each sequence through the decoding graph(s), as frame-level
    states and the words it writes. ``emissions``: ``[B, T, num_states]``."""
    alignment = viterbi_align(_frame_graphs(decoding, "decoding"), emissions, lengths)
    g = as_batch(decoding, "decoding")
    states, arcs = alignment.labels, alignment.arcs
    if states.dim() == 1:
        states, arcs = states[None], arcs[None]
    written = gather(g.olabel, arcs.reshape(-1), 0).reshape(arcs.shape).cpu()
    return HMMAlignment(states, [row[row != 0].tolist() for row in written], alignment.scores.reshape(-1))


def forced_align(lexicon_graph: Graph, transcripts: Sequence[Sequence[int]] | Tensor, emissions: Tensor,
                 lengths: LengthsLike = None, transcript_lengths: LengthsLike = None) -> HMMAlignment:
    """Viterbi alignment of each sequence with its transcription: the frame-level states of
    the best path through the transcription's HMM graph."""
    return hmm_decode(transcript_graphs(lexicon_graph, transcripts, transcript_lengths), emissions, lengths)
