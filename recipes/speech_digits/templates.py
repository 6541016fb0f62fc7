"""DTW elastic templates for isolated words, in the manner of the early integrated speech
recognisers (Driancourt and Bottou 1991): a trainable feature extractor (the convolutional
encoder and a projection to ``dim`` features) and one trainable template of ``frames`` frames
per word; a word's energy is the DTW distance between the input's features and its template
(gtn_py.criteria.dtw graphs), and both are trained with a contrastive loss over the template
energies from :mod:`gtn_py.losses` (``loss``: ``nll`` over the words, ``lvq2``, ``mce`` or
``hinge`` against the most offending incorrect word).

Training and test words are cut out of the connected corpus by an HMM/NN hybrid's forced
alignment (:func:`~.hybrid.isolated_words`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from gtn_py import losses
from gtn_py.criteria.dtw import ElasticTemplates

from .data import DIGIT_WORDS
from .models import NUM_WORDS, Batch, Encoder, ModelConfig, Recognizer, option, parse_options


@dataclass(frozen=True)
class TemplateOptions:
    loss: Literal["nll", "lvq2", "mce", "hinge"] = option("nll", "contrastive loss over the template energies")
    margin: float = option(1.0, "hinge margin, lvq2 saturation", least=0.0)
    dim: int = option(16, "features per frame of the templates", least=1)
    frames: int = option(10, "frames per word template", least=1)


class TemplateModel(Recognizer):
    Options = TemplateOptions
    reads_alone = False  # isolated words, cut by another model

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        options = parse_options(TemplateOptions, config.options, "dtw")
        self.loss, self.margin = options.loss, options.margin
        dim, frames = options.dim, options.frames
        self.encoder = Encoder(config.encoder)
        self.project = nn.Linear(self.encoder.dim, dim)
        self.templates = ElasticTemplates(NUM_WORDS, frames, dim)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Feature vectors ``[B, T', dim]`` and their lengths."""
        x, lengths = self.encoder(batch.features, batch.lengths)
        return self.project(x), lengths

    def energies(self, batch: Batch) -> Tensor:
        """DTW distance ``[B, 11]`` from each input to each word's template."""
        return self.templates(*self(batch))

    def answer_losses(self, x: Tensor, lengths: Tensor, owner: Tensor, words: Sequence[tuple[str, ...]]) -> Tensor:
        if any(len(w) != 1 for w in words):
            raise ValueError("DTW templates recognise isolated words: one word per utterance")
        labels = torch.tensor([DIGIT_WORDS.index(w[0]) for w in words], device=x.device)
        correct, everything = self.templates.answer_graphs(x[owner], labels, lengths[owner])
        if self.loss == "nll":
            return losses.nll(correct, everything, reduction="none")
        if self.loss == "lvq2":
            return losses.lvq2(correct, everything, saturation=self.margin, reduction="none")
        if self.loss == "mce":
            return losses.mce(correct, everything, reduction="none")
        return losses.hinge(correct, everything, margin=self.margin, reduction="none")

    def decode_outputs(self, x: Tensor, lengths: Tensor) -> list[tuple[str, ...]]:
        best = self.templates(x, lengths).argmin(1).tolist()
        return [(DIGIT_WORDS[i],) for i in best]

    def align(self, batch: Batch) -> list[list[tuple[str, int, int]]]:
        """The word recognised, over the whole input (the templates see isolated words)."""
        return [[(words[0], 0, int(n))] for words, n in zip(self.decode(batch), batch.lengths.tolist())]
