"""The recognisers: a shared acoustic encoder and the CTC model (HMM/NN hybrid and DTW templates
live in hybrid.py and templates.py).

Every model has the same interface, used by training, evaluation and decoding:

* ``forward(batch) -> (outputs [B, T', ...], lengths)``: the network's outputs, which the next
  two read (so that one encoding serves reading and scoring alike);
* ``decode_outputs(outputs, lengths) -> list of word tuples``, and ``decode(batch)`` from the batch;
* ``answer_losses(outputs, lengths, owner, words) -> [N]``: the losses of any answers (several per
  utterance if need be) through gtn_py graphs, and ``losses(batch) -> [B]`` those of the
  transcripts, for training;
* ``align(batch) -> list of [(word, first frame, last frame + 1)]`` in input frames (10 ms), for
  the drawings of the report.

Word ``i`` of :data:`~.data.DIGIT_WORDS` is label ``i + 1`` in every graph (label 0 is the CTC blank
in dense intersections, epsilon elsewhere).
"""

from __future__ import annotations

import abc
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, NamedTuple, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from gtn_py.criteria.ctc import ctc_decode, ctc_expand, ctc_loss, label_sequences
from gtn_py.graph import Graph
from gtn_py.ops.dense import dense_score, viterbi_align

from ..common import Committee, InputError
from .data import DIGIT_WORDS
from .frontend import frequency_warp

NUM_WORDS = len(DIGIT_WORDS)
WORD_ID = {w: i + 1 for i, w in enumerate(DIGIT_WORDS)}
NUM_CEPSTRA = 13
OptionsT = TypeVar("OptionsT")


class Batch(NamedTuple):
    features: Tensor                 # [B, T, 13] padded with zeros
    lengths: Tensor                  # [B] frames
    words: list[tuple[str, ...]]     # transcripts (empty tuples when unknown)
    utt_ids: list[str]

    def own_answers(self) -> tuple[Tensor, list[tuple[str, ...]]]:
        """(owner, words) naming each utterance's own transcript, for
        :meth:`Recognizer.answer_losses`."""
        return torch.arange(len(self.words), device=self.lengths.device), self.words


def make_batch(features: Sequence[np.ndarray], words: Sequence[Sequence[str]] | None = None,
               utt_ids: Sequence[str] | None = None, device: torch.device | str = "cpu") -> Batch:
    lengths = torch.tensor([len(f) for f in features], dtype=torch.long)
    padded = torch.zeros(len(features), int(lengths.max()) if len(features) else 0, NUM_CEPSTRA)
    for i, f in enumerate(features):
        padded[i, :len(f)] = torch.from_numpy(np.asarray(f, dtype=np.float32))
    return Batch(padded.to(device), lengths.to(device),
                 [tuple(w) for w in words] if words is not None else [()] * len(features),
                 list(utt_ids) if utt_ids is not None else [str(i) for i in range(len(features))])


def word_ids(words: Sequence[str]) -> list[int]:
    return [WORD_ID[w] for w in words]


def word_loop(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", word_score: float = 0.0) -> Graph:
    """The digit-loop grammar: any sequence of digit words (one node, a loop per word), each word
    scored ``word_score`` (a word insertion bonus when positive, a penalty when negative)."""
    labels = torch.arange(1, NUM_WORDS + 1)
    zeros = torch.zeros_like(labels)
    return Graph.from_arcs(1, zeros, zeros, labels, labels, start=[0], accept=[0],
                           weights=torch.full((NUM_WORDS,), word_score), dtype=dtype, device=device)


# ---------------------------------------------------------------------- model options
def option(default: Any, help: str, least: float | None = None) -> Any:
    """A field of a model kind's ``Options`` dataclass: its default, what it sets (the command
    line's help is made of these) and, for a number, its least value."""
    return field(default=default, metadata={"help": help, "least": least})


def option_fields(options: type) -> list[tuple[str, Any, Any, str, float | None]]:
    """``(name, type, default, help, least)`` of each field of an ``Options`` dataclass; the type
    is ``int``, ``float`` or the tuple of strings a ``Literal`` field takes."""
    hints = typing.get_type_hints(options)
    out = []
    for f in fields(options):
        kind = hints[f.name]
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else kind
        out.append((f.name, choices, f.default, f.metadata.get("help", ""), f.metadata.get("least")))
    return out


def parse_options(options: type[OptionsT], values: Mapping[str, Any], kind: str) -> OptionsT:
    """An ``Options`` dataclass from ``KEY -> VALUE`` (strings from the command line, or the
    values a checkpoint saved), each converted to its field's type and checked: an unknown key
    or a bad value raises :class:`~recipes.common.InputError` naming it."""
    known = {name: (kind_of, least) for name, kind_of, _, _, least in option_fields(options)}
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise InputError(f"option {key}: not a setting of --model {kind} (its settings: "
                             f"{', '.join(known) or 'none'})")
        kind_of, least = known[key]
        if isinstance(kind_of, tuple):
            if str(value) not in kind_of:
                raise InputError(f"option {key}={value}: must be one of {', '.join(kind_of)}")
            parsed[key] = str(value)
            continue
        try:
            number = kind_of(value)
        except (TypeError, ValueError):
            raise InputError(f"option {key}={value}: must be a number ({kind_of.__name__})") from None
        if not math.isfinite(number) or (least is not None and number < least):
            raise InputError(f"option {key}={value}: must be finite" + ("" if least is None else
                                                                        f" and at least {least}"))
        parsed[key] = number
    return options(**parsed)


# ---------------------------------------------------------------------- the encoder
@dataclass
class EncoderConfig:
    channels: int = 128      # convolution channels
    context: int = 3         # dilated convolutions after subsampling (dilations 1, 2, 4, ...)
    hidden: int = 96         # GRU units per direction (0: convolutions only)
    layers: int = 1          # GRU layers
    stride: int = 3          # frame subsampling (output frames are stride x 10 ms)
    dropout: float = 0.1
    variance_norm: bool = False  # divide each utterance's features by their own standard deviation


class Encoder(nn.Module):
    """Normalised MFCCs ``[B, T, 13]`` -> frame vectors ``[B, T', D]``: two convolutions (the
    second subsamples by ``stride``), ``context`` residual dilated convolutions, then a
    bidirectional GRU over the true lengths (when ``hidden``)."""

    mean: Tensor
    std: Tensor

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c = config.channels
        # Global feature normalisation, set from the training data (saved with the weights).
        self.register_buffer("mean", torch.zeros(NUM_CEPSTRA))
        self.register_buffer("std", torch.ones(NUM_CEPSTRA))
        self.conv = nn.Sequential(nn.Conv1d(NUM_CEPSTRA, c, 5, padding=2), nn.ReLU())
        self.subsample = nn.Sequential(nn.Conv1d(c, c, 5, stride=config.stride, padding=2), nn.ReLU(),
                                       nn.Dropout(config.dropout))
        self.context = nn.ModuleList(
            nn.Sequential(nn.Conv1d(c, c, 5, padding=2 * 2 ** i, dilation=2 ** i), nn.ReLU(),
                          nn.Dropout(config.dropout))
            for i in range(config.context))
        self.rnn = nn.GRU(c, config.hidden, config.layers, batch_first=True, bidirectional=True,
                          dropout=config.dropout if config.layers > 1 else 0.0) if config.hidden else None
        self.dim = 2 * config.hidden if config.hidden else c

    def variance_normalised(self, features: Tensor, lengths: Tensor) -> Tensor:
        """``features`` [B, T, 13] (mean-normalised, zero-padded), each utterance divided by its own
        root mean square per coefficient when ``variance_norm`` is set (else unchanged): the spread
        of each cepstrum differs between voices, channels and noise levels more than its shape."""
        if not self.config.variance_norm:
            return features
        spread = features.square().sum(1, keepdim=True) / lengths.clamp(min=1)[:, None, None].to(features.dtype)
        return features / spread.sqrt().clamp(min=1e-3)

    def set_normalisation(self, features: Sequence[np.ndarray]) -> None:
        """The global mean and standard deviation of the (variance-normalised) training features."""
        frames = np.concatenate([
            self.variance_normalised(torch.from_numpy(np.asarray(f, np.float32))[None],
                                     torch.tensor([len(f)]))[0].numpy() for f in features])
        self.mean.copy_(torch.from_numpy(frames.mean(0)))
        self.std.copy_(torch.from_numpy(frames.std(0) + 1e-3))

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths - 1, self.config.stride, rounding_mode="floor") + 1

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # Padding is zeroed between layers, so a sequence's outputs do not depend on its batch.
        def mask_of(x: Tensor, lengths: Tensor) -> Tensor:
            return (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None])[:, None, :]

        x = ((self.variance_normalised(features, lengths) - self.mean) / self.std).transpose(1, 2)
        x = x * mask_of(x, lengths)
        x = self.conv(x)
        x = self.subsample(x * mask_of(x, lengths))
        out_lengths = self.output_lengths(lengths)
        mask = mask_of(x, out_lengths)
        x = x * mask
        for layer in self.context:
            x = x + layer(x) * mask
        x = x.transpose(1, 2)
        if self.rnn is not None:
            packed = nn.utils.rnn.pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
            x, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        return x, out_lengths


# ---------------------------------------------------------------------- CTC
@dataclass
class ModelConfig:
    kind: str = "ctc"                                  # one of kinds.MODELS
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    options: dict[str, Any] = field(default_factory=dict)  # the model kind's Options, as a dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(kind=d["kind"], encoder=EncoderConfig(**d["encoder"]), options=dict(d.get("options", {})))


def segments(frame_labels: Sequence[int], stride: int, skip: Sequence[int] = (0,)) -> list[tuple[int, int, int]]:
    """Runs of equal frame labels ``(label, first, last + 1)`` in input frames, without the
    labels in ``skip``."""
    runs: list[tuple[int, int, int]] = []
    for t, label in enumerate(frame_labels):
        if runs and runs[-1][0] == label and runs[-1][2] == t:
            runs[-1] = (label, runs[-1][1], t + 1)
        else:
            runs.append((label, t, t + 1))
    return [(label, a * stride, b * stride) for label, a, b in runs if label not in skip]


class Recognizer(nn.Module, abc.ABC):
    """What training, evaluation and decoding use (see the module documentation). Each kind
    names its ``Options`` dataclass (the settings of ``ModelConfig.options``, see
    :func:`option`) and whether it reads connected speech on its own (``reads_alone``)."""

    config: ModelConfig
    encoder: Encoder
    Options: type
    reads_alone: bool = True

    @property
    def loss_is_posterior(self) -> bool:
        """Whether :meth:`losses` of a transcript is ``-log P(words | audio)`` (CTC, RNN-T, an MMI
        hybrid): then a :class:`ProductOfExperts` may add it to other members' losses."""
        return True

    def prepare(self, features: Sequence[np.ndarray], transcripts: Sequence[Sequence[str]] | None = None) -> None:
        """Set what comes from the training data before training: the feature statistics (and
        what a model reads from the ``transcripts``, where it has a use for them)."""
        self.encoder.set_normalisation(features)

    @abc.abstractmethod
    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The network's outputs per output frame ``[B, T', ...]`` and their lengths: what
        :meth:`decode_outputs` and :meth:`answer_losses` read."""

    @abc.abstractmethod
    def decode_outputs(self, outputs: Tensor, lengths: Tensor) -> list[tuple[str, ...]]:
        """The words recognised in each utterance, from its outputs (:meth:`forward`)."""

    @abc.abstractmethod
    def answer_losses(self, outputs: Tensor, lengths: Tensor, owner: Tensor,
                      words: Sequence[tuple[str, ...]]) -> Tensor:
        """``[N]``: the loss of answer ``words[n]`` on utterance ``owner[n]`` (``+inf`` where it
        cannot fit), from the utterances' outputs (:meth:`forward`): each utterance is encoded
        once, however many answers it has, and once for decoding and scoring alike (how
        :class:`ProductOfExperts` scores its candidates)."""

    def losses(self, batch: Batch) -> Tensor:
        """Per-utterance training losses ``[B]`` of the transcripts (``+inf`` where one cannot fit)."""
        outputs, lengths = self(batch)
        return self.answer_losses(outputs, lengths, *batch.own_answers())

    def decode(self, batch: Batch) -> list[tuple[str, ...]]:
        """The words recognised in each utterance."""
        return self.decode_outputs(*self(batch))

    def read(self, batch: Batch) -> tuple[list[tuple[str, ...]], list[list[tuple[str, ...]]]]:
        """:meth:`decode`'s words and, per utterance, the answers it chose them from: only its
        own here, all that its members read in a :class:`ProductOfExperts` (whose best, against a
        transcript, is the oracle that tells the choosing from the proposing)."""
        words = self.decode(batch)
        return words, [[w] for w in words]

    @abc.abstractmethod
    def align(self, batch: Batch) -> list[list[tuple[str, int, int]]]:
        """Each utterance's words as ``(word, first, last + 1)`` in input frames."""


class FrameScorer(Recognizer):
    """A recogniser whose outputs are log-scores per output frame (``forward(batch) -> (scores
    [B, T', C], lengths)``) and whose graph search reads only those: CTC and the hybrid. Split so
    that a :class:`CommitteeReader` can search with its members' combined scores."""

    @abc.abstractmethod
    def align_scores(self, batch: Batch, scores: Tensor, lengths: Tensor) -> list[list[tuple[str, int, int]]]:
        """:meth:`align` from given frame scores."""

    def align(self, batch: Batch) -> list[list[tuple[str, int, int]]]:
        return self.align_scores(batch, *self(batch))


class WarpViews(nn.Module):
    """The views of a batch that a committee reads (:class:`~recipes.common.Committee`): its
    features as other vocal tracts would give them, one per warp factor
    (:func:`~.frontend.frequency_warp`; 1.0 is the features as given). The warps are linear maps
    of the cepstra, so zero padding stays zero and they commute with the mean normalisation done
    at load time."""

    warp_matrices: Tensor

    def __init__(self, warps: Sequence[float] = (1.0,)):
        super().__init__()
        if not warps:
            raise ValueError("a committee needs at least one warp factor (1.0: the features as given)")
        matrices = np.stack([frequency_warp(float(a)) for a in warps]).astype(np.float32)
        self.register_buffer("warp_matrices", torch.from_numpy(matrices))

    def forward(self, batch: Batch) -> list[Batch]:
        return [batch._replace(features=batch.features @ warp) for warp in self.warp_matrices]


class CommitteeReader(FrameScorer):
    """Trained models of one kind (CTC or hybrid) with the same outputs and frame rate reading
    as one: their :class:`~recipes.common.Committee` over the :class:`WarpViews` of each batch
    gives the frame log-scores (the mean over every (model, warp), renormalised), and the first
    member's graphs are searched with them. For decoding only."""

    @staticmethod
    def can_read_with(members: Sequence[Recognizer]) -> bool:
        """Whether ``members`` share their frame scores' meaning: frame scorers of one kind with the
        same options and stride."""
        first = members[0]
        return all(isinstance(m, FrameScorer) and (m.config.kind, m.config.options, m.config.encoder.stride)
                   == (first.config.kind, first.config.options, first.config.encoder.stride) for m in members)

    def __init__(self, members: Sequence[FrameScorer], warps: Sequence[float] = (1.0,)):
        super().__init__()
        if not self.can_read_with(members):
            raise ValueError("a committee needs models of one kind with the same options and stride")
        first = members[0]
        self.config = first.config
        self.committee = Committee(members, WarpViews(warps).to(next(first.parameters()).device))

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        scores, lengths = self.committee(batch)
        return scores.log_softmax(-1), lengths

    def answer_losses(self, outputs: Tensor, lengths: Tensor, owner: Tensor,
                      words: Sequence[tuple[str, ...]]) -> Tensor:
        raise NotImplementedError("a committee decodes; train its members one by one")

    @property
    def first(self) -> FrameScorer:
        """The member whose graphs are searched (all members share their outputs and frame rate)."""
        return cast(FrameScorer, self.committee.members[0])

    def decode_outputs(self, outputs: Tensor, lengths: Tensor) -> list[tuple[str, ...]]:
        return self.first.decode_outputs(outputs, lengths)

    def align_scores(self, batch: Batch, scores: Tensor, lengths: Tensor) -> list[list[tuple[str, int, int]]]:
        return self.first.align_scores(batch, scores, lengths)


class ProductOfExperts(Recognizer):
    """Trained recognisers of any kinds reading as one, through the answers they give: every member
    reads every view of a batch (:class:`WarpViews`), and of the answers read, each utterance gets
    the one of least energy, the sum over every (member, view) of the member's loss of that answer
    on that view. The members' losses are ``-log P(words | audio)``, so this is their product over
    the answers any of them proposed (a product of experts, each one's posterior over the
    candidates), where :class:`CommitteeReader` multiplies frame scores and needs one kind. A
    member that cannot fit an answer (an infinite loss) rules it out; an utterance with no finite
    answer gets the first member's reading. For decoding; alignments are the first member's."""

    def __init__(self, members: Sequence[Recognizer], warps: Sequence[float] = (1.0,)):
        super().__init__()
        if not members:
            raise ValueError("a product of experts needs at least one member")
        for m in members:
            if not (m.reads_alone and m.loss_is_posterior):
                raise ValueError(f"a {m.config.kind} model with options {m.config.options} cannot join a product of "
                                 "experts: its loss is not -log P(words | audio) of connected speech")
        self.members = nn.ModuleList(members)
        self.views = WarpViews(warps).to(next(members[0].parameters()).device)
        self.config = members[0].config

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("a product of experts has no outputs of its own: decode reads its members'")

    def decode_outputs(self, outputs: Tensor, lengths: Tensor) -> list[tuple[str, ...]]:
        raise NotImplementedError("a product of experts has no outputs of its own: decode reads its members'")

    def answer_losses(self, outputs: Tensor, lengths: Tensor, owner: Tensor,
                      words: Sequence[tuple[str, ...]]) -> Tensor:
        raise NotImplementedError("a product of experts decodes; train its members one by one")

    def candidates(self, batch: Batch) -> tuple[list[list[tuple[str, ...]]], Tensor]:
        """Each utterance's distinct answers over every (member, view), in order of first reading,
        and their energies ``[N]`` (float64, in that order, utterance by utterance). Each member
        encodes each view once, for its reading and its losses alike."""
        encoded = [(cast(Recognizer, member), *member(view)) for member in self.members for view in self.views(batch)]
        answers: list[dict[tuple[str, ...], None]] = [{} for _ in batch.utt_ids]
        for member, outputs, lengths in encoded:
            for found, words in zip(answers, member.decode_outputs(outputs, lengths)):
                found.setdefault(words)
        candidates = [list(found) for found in answers]
        owner = torch.tensor([i for i, found in enumerate(candidates) for _ in found], device=batch.lengths.device)
        words = [w for found in candidates for w in found]
        losses = torch.stack([member.answer_losses(outputs, lengths, owner, words).double()
                              for member, outputs, lengths in encoded], dim=1)
        return candidates, self.pool(losses)

    def pool(self, losses: Tensor) -> Tensor:
        """The energies ``[N]`` of answers from their losses ``[N, members x views]``: their sum,
        the product of the posteriors."""
        return losses.sum(dim=1)

    def decode(self, batch: Batch) -> list[tuple[str, ...]]:
        return self.read(batch)[0]

    def read(self, batch: Batch) -> tuple[list[tuple[str, ...]], list[list[tuple[str, ...]]]]:
        candidates, energies = self.candidates(batch)
        energies = energies.nan_to_num(torch.inf)
        chosen, start = [], 0
        for found in candidates:
            mine = energies[start:start + len(found)]
            chosen.append(found[int(mine.argmin())] if bool(torch.isfinite(mine).any()) else found[0])
            start += len(found)
        return chosen, candidates

    def align(self, batch: Batch) -> list[list[tuple[str, int, int]]]:
        return cast(Recognizer, self.members[0]).align(batch)


class MixtureOfExperts(ProductOfExperts):
    """:class:`ProductOfExperts` with the members' posteriors of each answer averaged instead of
    multiplied: its energy is ``-log mean exp(-loss)`` over every (member, view), so one member
    sure that an answer is wrong can no longer rule it out alone (the sum rule of combining
    classifiers, where the product is the product rule)."""

    def pool(self, losses: Tensor) -> Tensor:
        return math.log(losses.shape[1]) - torch.logsumexp(-losses, dim=1)


def frame_label_prior(transcripts: Sequence[Sequence[str]], frames: int, units: int = 1) -> Tensor:
    """The share of CTC's output frames that each label takes when every word's ``units`` labels
    take a frame each and the other ``frames`` are blank: ``[1 + 11 units]``, blank first, each
    word's labels by the word's count (plus one, so that no label starts at zero)."""
    counts = torch.ones(NUM_WORDS + 1)
    for words in transcripts:
        for w in words:
            counts[WORD_ID[w]] += 1
    counts = torch.cat([counts[:1], counts[1:].repeat_interleave(units)])
    spoken = float(counts[1:].sum())
    if frames <= spoken:
        raise InputError(f"the training utterances' {frames} output frames cannot hold their {spoken:.0f} labels "
                         "(CTC needs a frame per label): transcripts and features do not match")
    counts[0] = frames - spoken
    return counts / frames


WORD_SCORE_HELP = "log-score added to each word read (decoding only: > 0 reads more words, < 0 fewer)"


@dataclass(frozen=True)
class CTCOptions:
    units: int = option(1, "CTC labels per word, spoken in order (1: word-level CTC)", least=1)
    criterion: Literal["ctc", "mmi"] = option(
        "ctc", "-log P(transcript) among every label sequence, or (mmi) among those that spell words only")
    word_score: float = option(0.0, WORD_SCORE_HELP)


def unit_lexicon(units: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 word_score: float = 0.0) -> Graph:
    """The digit loop over CTC units: word ``w`` is the labels ``(w - 1) units + 1 ...  w units``
    in order, written out as the word id on its first label, which is scored ``word_score`` (a
    transducer; 1 unit: the word loop)."""
    if units == 1:
        return word_loop(dtype, device, word_score)
    nodes = 1 + NUM_WORDS * (units - 1)
    src, dst, ilabel, olabel = [], [], [], []
    for w in range(1, NUM_WORDS + 1):
        inner = [1 + (w - 1) * (units - 1) + j for j in range(units - 1)]
        path = [0, *inner, 0]
        for j in range(units):
            src.append(path[j])
            dst.append(path[j + 1])
            ilabel.append((w - 1) * units + 1 + j)
            olabel.append(w if j == 0 else 0)
    weights = [word_score if label else 0.0 for label in olabel]
    return Graph.from_arcs(nodes, src, dst, ilabel, olabel, start=[0], accept=[0], weights=weights, dtype=dtype,
                           device=device)


class CTCModel(FrameScorer):
    """CTC over the digit words: ``1 + 11 units`` outputs per frame (blank and each word's
    ``units`` labels), trained with gtn_py's CTC (dense intersection of each transcript's CTC
    graph) and decoded through the CTC expansion of the digit loop over units."""

    Options = CTCOptions

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        options = parse_options(CTCOptions, config.options, "ctc")
        self.units = options.units
        self.criterion = options.criterion
        self.word_score = options.word_score
        self.encoder = Encoder(config.encoder)
        self.output = nn.Linear(self.encoder.dim, NUM_WORDS * self.units + 1)

    def labels(self, words: Sequence[str]) -> list[int]:
        """A transcript's CTC labels: each word's units in order."""
        return [(w - 1) * self.units + 1 + j for w in word_ids(words) for j in range(self.units)]

    def prepare(self, features: Sequence[np.ndarray], transcripts: Sequence[Sequence[str]] | None = None) -> None:
        """The feature statistics, and with the ``transcripts`` the output bias at the log prior
        of CTC's frame labels (:func:`frame_label_prior`). Started from a uniform output (blank at
        1/12), CTC's first gradients are mostly "more blank on every frame", tens of nats per word;
        the encoder meets them by making its output constant (the GRU's gates saturate), after
        which no gradient reaches it: the all-blank plateau. Started at the prior, the bias alone
        holds the blank frames and the gradients that reach the encoder are about which word."""
        super().prepare(features, transcripts)
        if transcripts is not None:
            frames = self.encoder.output_lengths(torch.tensor([len(f) for f in features]))
            with torch.no_grad():
                self.output.bias.copy_(frame_label_prior(transcripts, int(frames.sum()), self.units).log())

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Log-probabilities ``[B, T', 1 + 11 units]`` and their lengths."""
        x, lengths = self.encoder(batch.features, batch.lengths)
        return self.output(x).log_softmax(-1), lengths

    def answer_losses(self, log_probs: Tensor, lengths: Tensor, owner: Tensor,
                      words: Sequence[tuple[str, ...]]) -> Tensor:
        targets = [self.labels(w) for w in words]
        flat = torch.tensor([x for t in targets for x in t], dtype=torch.long, device=log_probs.device)
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        losses = ctc_loss(log_probs[owner].transpose(0, 1), flat, lengths[owner], target_lengths, blank=0,
                          reduction="none")
        if self.criterion == "ctc":
            return losses
        # MMI, as the hybrid's: the transcript among the answers the digit loop can read, so no
        # probability goes to unit sequences that spell no words (with 1 unit there are none and
        # the denominator is 0). Once per utterance, whatever its answers.
        everything = ctc_expand(unit_lexicon(self.units, log_probs.dtype, log_probs.device))
        return losses + dense_score(everything, log_probs, lengths)[owner]

    def decode_outputs(self, log_probs: Tensor, lengths: Tensor) -> list[tuple[str, ...]]:
        grammar = unit_lexicon(self.units, log_probs.dtype, log_probs.device, self.word_score)
        return [tuple(DIGIT_WORDS[i - 1] for i in seq) for seq in ctc_decode(log_probs, lengths, grammar)]

    def align_scores(self, batch: Batch, log_probs: Tensor, lengths: Tensor) -> list[list[tuple[str, int, int]]]:
        """Where each word's (non-blank) frames lie on the best path of its transcript's CTC graph:
        from the first frame of its first unit to the last of its last."""
        graphs = ctc_expand(label_sequences([self.labels(w) for w in batch.words], device=log_probs.device,
                                            dtype=log_probs.dtype))
        labels = viterbi_align(graphs, log_probs, lengths).labels.cpu()
        stride = self.config.encoder.stride
        out: list[list[tuple[str, int, int]]] = []
        for row, n in zip(labels, lengths.tolist()):
            words: list[tuple[str, int, int]] = []
            for label, a, b in segments(row[:n].tolist(), stride):
                if (label - 1) % self.units == 0:  # a word's first unit starts it
                    words.append((DIGIT_WORDS[(label - 1) // self.units], a, b))
                else:
                    words[-1] = (words[-1][0], words[-1][1], b)
            out.append(words)
        return out
