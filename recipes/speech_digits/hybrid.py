"""The HMM/NN hybrid: a left-to-right HMM per digit word and a silence model, whose states'
frame scores come from the encoder, trained through the composed graphs of gtn_py.criteria.hmm.

Graphs. Word ``i`` (label ``i + 1``) is an HMM of ``states`` states with self-loops; silence
(label :data:`SILENCE`) is a one-state HMM. The lexicon (any sequence of words and silences) is
composed with a grammar over words: for training, each transcript with optional silences
before, between and after its words (the *correct* graph); for decoding and as the
denominator of the loss, the free loop over words and silences (the *all answers* graph).
Neither grammar has two silences in a row, so a state sequence has a single path.

Loss (``criterion``): ``mmi`` (default) is the negative log-likelihood of the transcript among
all answers, ``-log sum_{paths of y} / sum_{all paths}`` (maximum mutual information; both
totals are dense intersections with the network's log-softmax state scores); ``ml`` is the
forward algorithm's ``-log sum_{paths of y}`` alone. Transition scores are learned
(``transitions=learned``, a log-softmax over staying and moving on, per state) or fixed at 1/2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from gtn_py.criteria import hmm
from gtn_py.graph import Graph

from .data import DIGIT_WORDS, Utterance
from .models import (
    NUM_WORDS,
    WORD_SCORE_HELP,
    Batch,
    Encoder,
    FrameScorer,
    ModelConfig,
    Recognizer,
    make_batch,
    option,
    parse_options,
    word_ids,
)

SILENCE = NUM_WORDS + 1  # word label of the silence model


def transcript_grammars(transcripts: Sequence[Sequence[int]], dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> Graph:
    """A batch of word acceptors: each transcript with an optional silence before, between and
    after its words. Node ``2 i`` is "``i`` words read", node ``2 i + 1`` "and a silence after
    them"; there is never a silence after a silence (the silence model's self-loop makes it
    long), so every state sequence has one path."""
    graphs = []
    for words in transcripts:
        n = len(words)
        i = torch.arange(n)
        silence = torch.full((n + 1,), SILENCE)
        word = torch.as_tensor(list(words), dtype=torch.long)
        src = torch.cat([2 * torch.arange(n + 1), 2 * i, 2 * i + 1])
        dst = torch.cat([2 * torch.arange(n + 1) + 1, 2 * i + 2, 2 * i + 2])
        labels = torch.cat([silence, word, word])
        graphs.append(Graph.from_arcs(2 * n + 2, src, dst, labels, labels, start=[0], accept=[2 * n, 2 * n + 1],
                                      dtype=dtype, device=device))
    return Graph.batch(graphs)


def word_loop_with_silence(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                           word_score: float = 0.0) -> Graph:
    """Any sequence of words with optional silences, never two silences in a row: node 0 after a
    word (or at the start), node 1 after a silence; each word scored ``word_score``."""
    words = torch.arange(1, NUM_WORDS + 1)
    src = torch.cat([torch.zeros_like(words), torch.ones_like(words), torch.zeros(1, dtype=torch.long)])
    dst = torch.cat([torch.zeros_like(words), torch.zeros_like(words), torch.ones(1, dtype=torch.long)])
    labels = torch.cat([words, words, torch.tensor([SILENCE])])
    weights = torch.cat([torch.full((2 * NUM_WORDS,), word_score), torch.zeros(1)])
    return Graph.from_arcs(2, src, dst, labels, labels, start=[0], accept=[0, 1], weights=weights, dtype=dtype,
                           device=device)


def state_segments(states: Sequence[int], states_per_word: int, stride: int) -> list[tuple[str, int, int]]:
    """Words of a frame-level state sequence ``(word, first, last + 1)`` in input frames: a word
    starts where its first state is entered from another state (so "five five" is two words)."""
    out: list[tuple[str, int, int]] = []
    previous = -1
    silence_state = NUM_WORDS * states_per_word
    for t, s in enumerate(states):
        if s < 0:
            break
        if s != silence_state:
            word = s // states_per_word
            entering = s % states_per_word == 0 and s != previous
            if entering or not out or previous == silence_state:
                out.append((DIGIT_WORDS[word], t * stride, (t + 1) * stride))
            else:
                out[-1] = (out[-1][0], out[-1][1], (t + 1) * stride)
        previous = s
    return out


@dataclass(frozen=True)
class HybridOptions:
    states: int = option(3, "HMM states per word", least=1)
    criterion: Literal["mmi", "ml"] = option("mmi", "the transcript among all answers, or its likelihood alone")
    transitions: Literal["learned", "fixed"] = option("learned", "transition scores learned or fixed at 1/2")
    word_score: float = option(0.0, WORD_SCORE_HELP)


class HybridModel(FrameScorer):
    Options = HybridOptions

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        options = parse_options(HybridOptions, config.options, "hybrid")
        self.states = options.states
        self.criterion = options.criterion
        learned = options.transitions
        self.word_score = options.word_score
        self.num_states = NUM_WORDS * self.states + 1
        self.encoder = Encoder(config.encoder)
        self.output = nn.Linear(self.encoder.dim, self.num_states)
        # Logits of (stay, move on) for each state of each word, and for silence.
        self.word_transitions = nn.Parameter(torch.zeros(NUM_WORDS, self.states, 2), requires_grad=learned == "learned")
        self.silence_transitions = nn.Parameter(torch.zeros(1, 2), requires_grad=learned == "learned")

    @property
    def loss_is_posterior(self) -> bool:
        """MMI's loss is ``-log P(words | audio)``; maximum likelihood's is ``-log P(audio | words)``."""
        return self.criterion == "mmi"

    def _scores(self, logits: Tensor) -> Tensor:
        """``[..., 3]`` transition scores (stay, next, skip) from ``[..., 2]`` logits; no skips."""
        return torch.cat([logits.log_softmax(-1), torch.zeros_like(logits[..., :1])], -1)

    def lexicon(self) -> Graph:
        """Any sequence of words and silences, with the current transition scores."""
        words = self._scores(self.word_transitions)
        units = [hmm.hmm_topology(self.states, transition_scores=words[i], first_label=1 + i * self.states)
                 for i in range(NUM_WORDS)]
        units.append(hmm.hmm_topology(1, transition_scores=self._scores(self.silence_transitions),
                                      first_label=1 + NUM_WORDS * self.states))
        return hmm.lexicon([[u] for u in range(NUM_WORDS + 1)], units)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """State log-scores ``[B, T', num_states]`` (log-softmax) and their lengths."""
        x, lengths = self.encoder(batch.features, batch.lengths)
        return self.output(x).log_softmax(-1), lengths

    def answer_losses(self, scores: Tensor, lengths: Tensor, owner: Tensor,
                      words: Sequence[tuple[str, ...]]) -> Tensor:
        lexicon = self.lexicon()
        correct = hmm.decoding_graph(lexicon, transcript_grammars([word_ids(w) for w in words],
                                                                  scores.dtype, scores.device))
        numerator = hmm.hmm_score(correct, scores[owner], lengths[owner])
        if self.criterion == "ml":
            return -numerator
        # The denominator is the utterance's alone: once per utterance, whatever its answers.
        everything = hmm.decoding_graph(lexicon, word_loop_with_silence(scores.dtype, scores.device))
        denominator = hmm.hmm_score(everything, scores, lengths)[owner]
        # An impossible transcript is +inf with zero gradients (the trainer drops it).
        return torch.where(torch.isinf(numerator), -numerator, denominator - numerator)

    def decode_outputs(self, scores: Tensor, lengths: Tensor) -> list[tuple[str, ...]]:
        grammar = word_loop_with_silence(scores.dtype, scores.device, self.word_score)
        best = hmm.hmm_decode(hmm.decoding_graph(self.lexicon(), grammar), scores, lengths)
        return [tuple(DIGIT_WORDS[w - 1] for w in words if w != SILENCE) for words in best.words]

    def align_scores(self, batch: Batch, scores: Tensor, lengths: Tensor) -> list[list[tuple[str, int, int]]]:
        """Forced alignment of each transcript: its words' spans in input frames."""
        correct = hmm.decoding_graph(self.lexicon(), transcript_grammars([word_ids(w) for w in batch.words],
                                                                         scores.dtype, scores.device))
        states = hmm.hmm_decode(correct, scores, lengths).states.cpu()
        stride = self.config.encoder.stride
        return [state_segments(row[:n].tolist(), self.states, stride) for row, n in zip(states, lengths.tolist())]


def isolated_words(model: Recognizer, utterances: Sequence[Utterance], batch_size: int = 32, margin: int = 3,
                   device: torch.device | str = "cpu") -> list[Utterance]:
    """Single words cut out of connected utterances at a model's forced alignment (``margin``
    frames of context on each side), as utterances ``<utt>-<k>`` of one word."""
    model.eval()
    words: list[Utterance] = []
    with torch.no_grad():
        for start in range(0, len(utterances), batch_size):
            chosen = utterances[start:start + batch_size]
            batch = make_batch([u.features for u in chosen], [u.words for u in chosen], [u.utt_id for u in chosen],
                               device)
            for u, spans in zip(chosen, model.align(batch)):
                if [w for w, _, _ in spans] != list(u.words):
                    continue  # no alignment (too short for the transcript)
                for k, (word, a, b) in enumerate(spans):
                    a, b = max(0, a - margin), min(len(u.features), b + margin)
                    words.append(Utterance(f"{u.utt_id}-{k}", u.features[a:b], (word,)))
    return words
