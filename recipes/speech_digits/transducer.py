"""The RNN-T model: the shared encoder, a prediction network over the words emitted so far and a
joiner, trained with gtn_py's RNN-T loss (the forward score of each utterance's alignment
lattice) and decoded by beam search over the digit loop.

Outputs: blank (0) and the 11 digit words (labels 1..11). The prediction network reads the
previous word (blank at the start) through an embedding and a GRU of ``predictor`` units; the
joiner adds the projections of an encoder frame and a predictor output, applies tanh and a
linear map to the 12 outputs (``joiner`` units; :class:`TransducerOptions`). With
``prune_range`` ``S > 0`` the model trains with the pruned loss (k2's recipe: linear "simple"
projections of both sides to the 12 outputs, whose additive joiner's loss, times
``simple_scale``, is added and whose alignments choose ``S`` values of u per frame where the full
joiner is evaluated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from gtn_py.criteria.rnnt import (
    rnnt_beam_search,
    rnnt_lattice,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_prune,
)
from gtn_py.ops.shortest import viterbi_score

from ..common import InputError
from .data import DIGIT_WORDS
from .models import (
    NUM_WORDS,
    Batch,
    Encoder,
    ModelConfig,
    Recognizer,
    frame_label_prior,
    option,
    parse_options,
    word_ids,
)

PredictorState = Tensor  # the GRU's hidden state, batch first: [B, layers, H]


@dataclass(frozen=True)
class TransducerOptions:
    predictor: int = option(128, "GRU units of the prediction network", least=1)
    joiner: int = option(128, "joiner units", least=1)
    beam: int = option(4, "hypotheses kept by beam search (1: greedy)", least=1)
    prune_range: int = option(0, "values of u per frame of the pruned loss (0: the full loss; else >= 2)", least=0)
    simple_scale: float = option(0.5, "weight of the simple joiner's loss beside the pruned one", least=0.0)


class TransducerModel(Recognizer):
    Options = TransducerOptions

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        options = parse_options(TransducerOptions, config.options, "rnnt")
        predictor, joiner, self.beam = options.predictor, options.joiner, options.beam
        self.prune_range, self.simple_scale = options.prune_range, options.simple_scale
        if self.prune_range == 1:
            raise InputError("option prune_range=1: a band of one u per frame has no path; 0 or at least 2")
        self.encoder = Encoder(config.encoder)
        self.embedding = nn.Embedding(NUM_WORDS + 1, predictor)
        self.predictor = nn.GRU(predictor, predictor, batch_first=True)
        self.encoder_projection = nn.Linear(self.encoder.dim, joiner)
        self.predictor_projection = nn.Linear(predictor, joiner, bias=False)
        self.output = nn.Linear(joiner, NUM_WORDS + 1)
        if self.prune_range:
            self.simple_am = nn.Linear(joiner, NUM_WORDS + 1)
            self.simple_lm = nn.Linear(predictor, NUM_WORDS + 1)

    def prepare(self, features: Sequence[np.ndarray], transcripts: Sequence[Sequence[str]] | None = None) -> None:
        """The feature statistics, and with the ``transcripts`` the output bias at the log prior
        of the lattice's labels: every path has one blank per frame and one arc per word."""
        super().prepare(features, transcripts)
        if transcripts is not None:
            frames = int(self.encoder.output_lengths(torch.tensor([len(f) for f in features])).sum())
            words = sum(len(w) for w in transcripts)
            prior = frame_label_prior(transcripts, frames + words).log()
            with torch.no_grad():
                # Both joiners start at the prior: from a uniform output, the first steps' "more
                # blank everywhere" gradients flatten the encoder's output for good.
                self.output.bias.copy_(prior)
                if self.prune_range:
                    self.simple_am.bias.copy_(prior)
                    self.simple_lm.bias.zero_()

    def predict(self, labels: Tensor, state: PredictorState | Sequence[Tensor] | None) -> tuple[Tensor, PredictorState]:
        """One step of the prediction network: ``labels [B]`` -> (output ``[B, H]``, state)."""
        hidden = None if state is None else cast(Tensor, state).transpose(0, 1).contiguous()
        output, hidden = self.predictor(self.embedding(labels)[:, None], hidden)
        return output[:, 0], hidden.transpose(0, 1)

    def join(self, frames: Tensor, predictions: Tensor) -> Tensor:
        """Logits from projected encoder frames and predictor outputs (broadcast together)."""
        return self.output(torch.tanh(frames + self.predictor_projection(predictions)))

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Projected encoder frames ``[B, T', J]`` and their lengths."""
        x, lengths = self.encoder(batch.features, batch.lengths)
        return self.encoder_projection(x), lengths

    def sides(self, frames: Tensor, lengths: Tensor, owner: Tensor, words: Sequence[tuple[str, ...]]
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The joiner's two sides over answer ``words[n]`` of utterance ``owner[n]`` (see
        :meth:`answer_losses`; ``frames`` and ``lengths`` from :meth:`forward`): projected encoder
        frames ``[N, T', J]``, predictor outputs ``[N, U + 1, H]`` (after blank, then each word);
        the padded targets ``[N, U]`` and the frame and target lengths."""
        frames, lengths = frames[owner], lengths[owner]
        targets = [word_ids(w) for w in words]
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long, device=frames.device)
        padded = torch.zeros(len(targets), max(map(len, targets), default=0), dtype=torch.long, device=frames.device)
        for b, t in enumerate(targets):
            padded[b, :len(t)] = torch.tensor(t, dtype=torch.long)
        # The predictor reads blank (the start), then each word (none in a batch of empty transcripts).
        history = torch.cat([padded.new_zeros(len(targets), 1), padded], 1)
        predictions, _ = self.predictor(self.embedding(history))
        return frames, predictions, padded, lengths, target_lengths

    def logits(self, frames: Tensor, lengths: Tensor, owner: Tensor, words: Sequence[tuple[str, ...]]
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Joiner logits ``[N, T', U + 1, 12]`` over each answer (as :meth:`sides`), the padded
        targets ``[N, U]`` and the frame and target lengths."""
        frames, predictions, targets, lengths, target_lengths = self.sides(frames, lengths, owner, words)
        return self.join(frames[:, :, None], predictions[:, None]), targets, lengths, target_lengths

    def answer_losses(self, frames: Tensor, lengths: Tensor, owner: Tensor,
                      words: Sequence[tuple[str, ...]]) -> Tensor:
        if not self.prune_range:
            logits, targets, lengths, target_lengths = self.logits(frames, lengths, owner, words)
            return rnnt_loss(logits, targets, lengths, target_lengths, blank=0, reduction="none")
        frames, predictions, targets, lengths, target_lengths = self.sides(frames, lengths, owner, words)
        am, lm = self.simple_am(frames), self.simple_lm(predictions)
        simple, ranges = rnnt_loss_simple(am, lm, targets, lengths, target_lengths, blank=0, reduction="none",
                                          s_range=self.prune_range)
        band_frames, band_predictions = rnnt_prune(frames, predictions, ranges, self.prune_range)
        pruned = rnnt_loss_pruned(self.join(band_frames, band_predictions), targets, ranges, lengths, target_lengths,
                                  blank=0, reduction="none")
        return pruned + self.simple_scale * simple

    def decode_outputs(self, frames: Tensor, lengths: Tensor) -> list[tuple[str, ...]]:
        hypotheses = rnnt_beam_search(frames, lengths, self.predict, self.join, beam=self.beam, blank=0)
        return [tuple(DIGIT_WORDS[i - 1] for i in h) for h in hypotheses]

    def align(self, batch: Batch) -> list[list[tuple[str, int, int]]]:
        """Each transcript's best alignment: a word sits at the frame its label arc leaves from
        (the best-path indicator is the gradient of the alignments' tropical total)."""
        with torch.enable_grad():
            frames, lengths = self(batch)
            logits, targets, lengths, target_lengths = self.logits(frames, lengths, *batch.own_answers())
            log_probs = logits.detach().log_softmax(-1).requires_grad_()
            best = viterbi_score(rnnt_lattice(log_probs, targets, lengths, target_lengths, blank=0))
            (on_path,) = torch.autograd.grad(best.sum(), log_probs)
        stride = self.config.encoder.stride
        spans: list[list[tuple[str, int, int]]] = []
        for b in range(len(batch.words)):
            emitted = (on_path[b, :, :, 1:] > 0.5).nonzero().tolist()  # (t, u, word - 1), in (t, u) order
            spans.append([(DIGIT_WORDS[w], t * stride, (t + 1) * stride) for t, _, w in emitted])
        return spans
