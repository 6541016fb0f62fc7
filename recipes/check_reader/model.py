"""The readers: the recogniser, the graphs built around it, their criteria and their readings.

:class:`Recogniser` is a small convolutional network scoring a 28x28 crop for every class.
:class:`SegmentationReader` runs it on every span of every image of a minibatch in one call
and turns the scores into interpretation graphs (segmentation graph -> recognition
transformer -> optional grammar). :class:`WindowReader` is the CTC baseline: the same
network slid over the image in columns. Both are :class:`Reader` s: the trainer, the evaluation
and the commands use them through that interface only.

Reading: the confidence of a reading is its posterior ``P(reading | image)`` = exp(forward score
of the paths that read it - forward score of all paths), so a user can reject readings below a
threshold and trade rejects for errors (the reject curve).
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gtn_py import Graph, losses, string_graph
from gtn_py.criteria.ctc import ctc_greedy_decode, ctc_loss
from gtn_py.criteria.segmentation import recognition_graph, segmentation_graph
from gtn_py.ops.compose import compose
from gtn_py.ops.shortest import forward_score, n_best, viterbi_path

from ..common import InputError
from .data import StringSample, deformation
from .oversegment import CROP, CutConfig, Spans, batch_spans, span_crops, to_batch_tensor

NUM_DIGITS = 10


@dataclass
class ModelConfig:
    kind: str = "segmentation"      # "segmentation" (graph criteria) or "ctc" (column windows)
    channels: tuple[int, int] = (8, 16)
    hidden: int = 64
    cuts: CutConfig = field(default_factory=CutConfig)
    ctc_stride: int = 4             # column step of the CTC baseline's windows
    grammar: str = "any"            # "any" or "length:MIN-MAX" (digits per string)
    context: bool = False           # the recogniser also sees the window around each span unmasked

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["cuts"] = CutConfig(**d.get("cuts", {}))
        d["channels"] = tuple(d.get("channels", (8, 16)))
        return cls(**d)


READ_CHUNK = 128  # span crops per recogniser call when reading on a CPU (measured best of 32..6000)


class Recogniser(nn.Module):
    """LeNet-style: two conv+pool stages and two dense layers; ``[S, K, 28, 28] -> [S, C]``.
    It reads the first ``inputs`` channels of the crops (1: the span alone; 2: and its
    surroundings, see :func:`~.oversegment.span_crops`), so readers of either kind can read
    the same crops in one committee."""

    def __init__(self, num_classes: int, channels: tuple[int, int] = (16, 32), hidden: int = 128,
                 inputs: int = 1):
        super().__init__()
        c1, c2 = channels
        self.inputs = inputs
        self.features = nn.Sequential(
            nn.Conv2d(inputs, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.classify = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(),
                                      nn.Linear(hidden, num_classes))

    def forward(self, crops: Tensor) -> Tensor:
        crops = crops[:, :self.inputs]
        if crops.device.type == "cpu" and not torch.is_grad_enabled() and crops.shape[0] > READ_CHUNK:
            # Reading on a CPU: a string batch has thousands of span crops, whose first-layer
            # activations (hundreds of MB) would stream through memory three times (conv, ReLU,
            # pool); chunks that stay in cache read 1.7x faster on one thread.
            return torch.cat([self.classify(self.features(chunk)) for chunk in crops.split(READ_CHUNK)])
        return self.classify(self.features(crops))


class DeformedViews(nn.Module):
    """The views of a batch of crops that a committee reads (:class:`~recipes.common.Committee`):
    the crops as given and under ``count - 1`` fixed random deformations (the law of the training
    augmentation, :func:`~.data.deformation`, at ``strength``): test-time augmentation. The
    deformations are drawn once from ``seed``, so a reading is reproducible."""

    grids: Tensor

    def __init__(self, count: int, strength: float = 1.0, seed: int = 0):
        super().__init__()
        if count < 1:
            raise ValueError(f"views: need at least 1 (the crop as given), got {count}")
        rng = np.random.default_rng(seed)
        ys, xs = np.mgrid[0:CROP, 0:CROP].astype(np.float32)
        positions = [(ys, xs)] + [deformation(rng, CROP, CROP, strength) for _ in range(count - 1)]
        # grid_sample's sampling positions [count, 28, 28, (x, y)], scaled to [-1, 1] (pixel centres at the ends).
        grids = np.stack([np.stack([x, y], axis=-1) for y, x in positions]).astype(np.float32)
        self.register_buffer("grids", torch.from_numpy(grids) * (2.0 / (CROP - 1)) - 1.0, persistent=False)

    def forward(self, crops: Tensor) -> list[Tensor]:
        num_crops = crops.shape[0]
        return [F.grid_sample(crops, grid.expand(num_crops, -1, -1, -1), align_corners=True)
                for grid in self.grids.to(crops)]  # the crops' dtype and device


def label_ids(text: str) -> list[int]:
    """Digit string -> graph labels (digit d is label d + 1; 0 is epsilon)."""
    return [int(ch) + 1 for ch in text]


def label_text(labels: list[int]) -> str:
    return "".join(str(label - 1) for label in labels if label > 0)


MAX_GRAMMAR_LENGTH = 1000  # digits per string a length grammar may ask for (its graph has 10 arcs per digit)


def grammar_lengths(spec: str) -> tuple[int, int] | None:
    """``(MIN, MAX)`` of a grammar ``"length:MIN-MAX"``, None for ``"any"``; :class:`InputError`
    for anything else."""
    if spec == "any":
        return None
    parts = spec[len("length:"):].split("-") if spec.startswith("length:") else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"unknown grammar {spec!r}: use 'any' or 'length:MIN-MAX' (e.g. length:4-6)")
    lo, hi = int(parts[0]), int(parts[1])
    if not 1 <= lo <= hi <= MAX_GRAMMAR_LENGTH:
        raise InputError(f"grammar {spec!r}: need 1 <= MIN <= MAX <= {MAX_GRAMMAR_LENGTH}")
    return lo, hi


def grammar_graph(spec: str, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Graph | None:
    """An acceptor over digit labels: ``"any"`` (no grammar, None) or ``"length:MIN-MAX"``."""
    lengths = grammar_lengths(spec)
    if lengths is None:
        return None
    lo, hi = lengths
    src = torch.arange(hi).repeat_interleave(NUM_DIGITS)
    labels = torch.arange(1, NUM_DIGITS + 1).repeat(hi)
    return Graph.from_arcs(hi + 1, src, src + 1, labels, start=[0], accept=list(range(lo, hi + 1)),
                           dtype=dtype, device=device)


def target_graphs(labels: list[str], device: torch.device) -> Graph:
    return Graph.batch([string_graph(label_ids(s), device=device) for s in labels])


@dataclass
class Interpretation:
    """What the segmentation reader builds for a minibatch."""

    spans: Spans
    span_scores: Tensor      # [S, C]
    graphs: Graph            # batch: span-label -> digit-label transducers (grammar composed in)


@dataclass
class Reading:
    """A string read: its text, its confidence (the posterior of the text given the image), and
    for a segmentation reader the candidate cuts and the segments of its best path."""

    text: str
    confidence: float
    cuts: list[int] = field(default_factory=list)                      # candidate cut x positions
    segments: list[tuple[int, int, str]] = field(default_factory=list)  # Viterbi spans (x0, x1, digit)


GARBAGE = -1  # pretraining target of a mis-segmented span (or of a window between digits)


def sequence_loss(criterion: str, graphs: Graph, labels: list[str], margin: float = 1.0) -> Tensor:
    """Per-string losses ``[B]`` of a batch of interpretation graphs against the correct strings
    (from :mod:`gtn_py.losses`; +inf for a string that cannot be read correctly at all, e.g. more
    digits than pieces):

    * ``nll`` (the paper's *discriminative forward*): ``-log P(correct string | image)`` =
      forward score of all paths - forward score of the paths that read the correct string;
    * ``perceptron`` (*discriminative Viterbi* without margin): best path overall - best correct path;
    * ``hinge``: ``max(0, margin + best correct path energy - energy of the most offending incorrect reading)``.
    """
    correct = compose(graphs, target_graphs(labels, graphs.device))
    if criterion == "nll":
        return losses.nll(correct, graphs, reduction="none")
    if criterion == "perceptron":
        return losses.perceptron(correct, graphs, reduction="none")
    if criterion == "hinge":
        return losses.hinge(correct, graphs, margin=margin, reduction="none")
    raise ValueError(f"unknown criterion {criterion!r}; use one of {SegmentationReader.CRITERIA}")


class Reader(nn.Module, abc.ABC):
    """What every check reader offers its trainer, its evaluation and the commands: per-string
    losses under a criterion, readings with confidences, and the examples and targets of the
    recogniser's isolated-digit pretraining. ``recogniser`` scores 28x28 crops (one network, or a
    :class:`~recipes.common.Committee` of them)."""

    CRITERIA: tuple[str, ...]
    config: ModelConfig
    recogniser: nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @abc.abstractmethod
    def losses(self, images: list[np.ndarray], labels: list[str], criterion: str, margin: float = 1.0) -> Tensor:
        """Per-string losses ``[B]`` under ``criterion`` (one of :attr:`CRITERIA`), +inf where a
        string cannot be read."""

    @abc.abstractmethod
    def read(self, images: list[np.ndarray], candidates: int = 1) -> list[Reading]:
        """The reading of each string image, with its confidence."""

    @abc.abstractmethod
    def pretrain_examples(self, samples: list[StringSample], rngs: list[np.random.Generator],
                          garbage_ratio: int = 1, tolerance: int = 2, ignore: int = 4) -> tuple[Tensor, Tensor]:
        """Crops ``[S, K, 28, 28]`` and targets ``[S]`` (digit 0-9 or :data:`GARBAGE`) for the
        recogniser's pretraining on training strings."""

    @abc.abstractmethod
    def pretrain_logits(self, crops: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy logits of the recogniser on pretraining crops and the class of each
        target (where garbage goes is the reader's choice)."""


def span_targets(x0: np.ndarray, x1: np.ndarray, sample: StringSample, tolerance: int, ignore: int) -> np.ndarray:
    """Digit (0-9) of each span whose two ends lie within ``tolerance`` pixels of a digit's true
    boundaries, GARBAGE when some end is further than ``ignore`` pixels from every digit's, and
    -2 (unused) in between, where a crop is almost, but not quite, a digit."""
    b = sample.boundaries
    miss = np.maximum(np.abs(x0[:, None] - b[None, :-1]), np.abs(x1[:, None] - b[None, 1:]))  # [S, digits]
    best = miss.argmin(axis=1)
    distance = miss[np.arange(len(x0)), best]
    digits = np.array([int(ch) for ch in sample.label], np.int64)[best]
    return np.where(distance <= tolerance, digits, np.where(distance > ignore, GARBAGE, -2))


class SegmentationReader(Reader):
    """The graph transformer network: the recogniser scores every candidate span of every image
    of a minibatch in one call, and the scores become interpretation graphs (segmentation graph ->
    recognition transformer -> optional grammar), trained by :func:`sequence_loss`."""

    CRITERIA = ("nll", "perceptron", "hinge")

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.recogniser: nn.Module = Recogniser(NUM_DIGITS, config.channels, config.hidden,
                                                inputs=2 if config.context else 1)  # or a Committee

    def forward(self, images: list[np.ndarray]) -> Interpretation:
        spans = batch_spans(images, self.config.cuts)
        crops = span_crops(to_batch_tensor(images, self.device), spans, self.config.context)
        scores = self.recogniser(crops)
        seg = segmentation_graph(spans.num_pieces.tolist(), self.config.cuts.max_span, spans.keep,
                                 device=self.device)
        graphs = recognition_graph(seg, scores, keep_spans=True)
        grammar = grammar_graph(self.config.grammar, scores.dtype, self.device)
        if grammar is not None:
            graphs = compose(graphs, grammar)
        return Interpretation(spans, scores, graphs)

    def losses(self, images: list[np.ndarray], labels: list[str], criterion: str, margin: float = 1.0) -> Tensor:
        return sequence_loss(criterion, self(images).graphs, labels, margin)

    def read(self, images: list[np.ndarray], candidates: int = 1) -> list[Reading]:
        """The string of the Viterbi path, or, with ``candidates`` K > 1, of the K best paths with
        distinct strings the one with the highest posterior (which sums over all its
        segmentations; the Viterbi path's string is not always the most probable)."""
        interp = self(images)
        graphs, spans = interp.graphs, interp.spans
        if candidates == 1:
            paths = [[p] for p in viterbi_path(graphs).unbatch()]
        else:
            paths = [batch.unbatch() for batch in n_best(graphs, candidates, distinct_outputs=True)]
        kept_per_image = torch.bincount(spans.image, minlength=len(images))
        first_span = (torch.cumsum(kept_per_image, 0) - kept_per_image).tolist()
        options: list[list[tuple[str, list[tuple[int, int, str]]]]] = []   # per image: (text, segments) per candidate
        for b, image_paths in enumerate(paths):
            options.append([])
            for path in image_paths:
                order = torch.argsort(path.src)
                span_ids = (path.ilabel[order] - 1 + first_span[b]).tolist()
                digits = path.olabel[order].tolist()
                options[-1].append((label_text(digits), [(int(spans.x0[s]), int(spans.x1[s]), str(d - 1))
                                                        for s, d in zip(span_ids, digits)]))
        owner = [b for b, opts in enumerate(options) for _ in opts]
        posterior = posteriors(graphs, owner, [text for opts in options for text, _ in opts])
        readings, first = [], 0
        for b, opts in enumerate(options):
            best = max(range(len(opts)), key=lambda j: posterior[first + j]) if opts else -1
            text, segments = opts[best] if opts else ("", [])
            readings.append(Reading(text, posterior[first + best] if opts else 0.0,
                                    [int(x) for x in spans.cuts[b]], segments))
            first += len(opts)
        return readings

    def pretrain_examples(self, samples: list[StringSample], rngs: list[np.random.Generator],
                          garbage_ratio: int = 1, tolerance: int = 2, ignore: int = 4) -> tuple[Tensor, Tensor]:
        """The candidate spans of the strings (as the reader cuts them): every well-formed digit
        (:func:`span_targets`) and at most ``garbage_ratio`` garbage spans per digit, drawn by
        each string's own generator (``rngs``, so that the choice does not depend on how a batch
        is shared out among processes)."""
        images = [s.image for s in samples]
        spans = batch_spans(images, self.config.cuts)
        image = spans.image.numpy()
        x0, x1 = spans.x0.numpy(), spans.x1.numpy()
        per_image, chosen_parts = [], []
        first = 0
        for b, (sample, rng) in enumerate(zip(samples, rngs)):  # spans are grouped by image, in order
            mine = span_targets(x0[image == b], x1[image == b], sample, tolerance, ignore)
            positive, garbage = np.flatnonzero(mine >= 0), np.flatnonzero(mine == GARBAGE)
            garbage = rng.choice(garbage, size=min(len(garbage), garbage_ratio * max(1, len(positive))),
                                 replace=False)
            chosen_parts.append(first + np.sort(np.concatenate([positive, garbage])))
            per_image.append(mine)
            first += len(mine)
        chosen = torch.from_numpy(np.concatenate(chosen_parts))
        targets = np.concatenate(per_image)
        subset = replace(spans, image=spans.image[chosen], x0=spans.x0[chosen], x1=spans.x1[chosen])
        return (span_crops(to_batch_tensor(images, self.device), subset, self.config.context),
                torch.from_numpy(targets[chosen.numpy()]).to(self.device))

    def pretrain_logits(self, crops: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Garbage is a fixed zero logit beside the ten digit scores, so that a well-formed digit
        gets positive span scores and a mis-segmented span negative ones (the graph uses the raw
        scores)."""
        scores = self.recogniser(crops)
        scores = torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=1)
        return scores, torch.where(targets == GARBAGE, torch.full_like(targets, NUM_DIGITS), targets)


def posteriors(graphs: Graph, owner: list[int], texts: list[str]) -> list[float]:
    """Posterior of reading ``texts[i]`` in graph ``owner[i]`` of the batch (0 for an empty reading)."""
    readable = [i for i, t in enumerate(texts) if t]
    out = [0.0] * len(texts)
    if not readable:
        return out
    total = forward_score(graphs).reshape(-1)
    chosen = [owner[i] for i in readable]
    if chosen != list(range(len(total))):   # several candidates per graph, or unreadable graphs
        parts = graphs.unbatch()
        graphs = Graph.batch([parts[b] for b in chosen])
    correct = forward_score(compose(graphs, target_graphs([texts[i] for i in readable], graphs.device)))
    post = torch.exp((correct.reshape(-1) - total[torch.tensor(chosen, device=total.device)]).clamp(max=0)).tolist()
    for i, p in zip(readable, post):
        out[i] = float(p)
    return out


class WindowReader(Reader):
    """The CTC baseline: the same recogniser (one more output, the blank) on 28-pixel windows
    every ``ctc_stride`` columns. ``forward`` returns log-probabilities ``[T, B, C+1]`` and lengths."""

    CRITERIA = ("ctc",)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.recogniser = Recogniser(NUM_DIGITS + 1, config.channels, config.hidden)

    def windows(self, batch: Tensor) -> tuple[Tensor, int]:
        """The windows of ``[B, 28, W]`` images (uint8): crops ``[B * T, 1, 28, 28]`` in [0, 1],
        image-major, window ``t`` centred on column ``t * ctc_stride``; and ``T``."""
        padded = F.pad(batch.to(torch.float32) / 255.0, (CROP // 2, CROP // 2))   # [B, 28, W + 28]
        windows = padded.unfold(2, CROP, self.config.ctc_stride)                   # [B, 28, T, 28]
        return windows.permute(0, 2, 1, 3).reshape(-1, 1, CROP, CROP), windows.shape[2]

    def forward(self, images: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        stride = self.config.ctc_stride
        crops, num_frames = self.windows(to_batch_tensor(images, self.device))
        scores = self.recogniser(crops).reshape(len(images), num_frames, -1)
        lengths = torch.tensor([im.shape[1] // stride + 1 for im in images], device=self.device)
        return scores.log_softmax(-1).transpose(0, 1), lengths.clamp(max=num_frames)

    def losses(self, images: list[np.ndarray], labels: list[str], criterion: str = "ctc",
               margin: float = 1.0) -> Tensor:
        """gtn_py's CTC (blank = 0) over the column windows."""
        if criterion not in self.CRITERIA:
            raise ValueError(f"a window reader trains with {self.CRITERIA}, not {criterion!r}")
        log_probs, lengths = self(images)
        targets = torch.tensor([x for s in labels for x in label_ids(s)], device=log_probs.device)
        target_lengths = torch.tensor([len(s) for s in labels], device=log_probs.device)
        return ctc_loss(log_probs, targets, lengths, target_lengths, blank=0, reduction="none")

    def read(self, images: list[np.ndarray], candidates: int = 1) -> list[Reading]:
        """Best-path decoding (``candidates`` is ignored); the confidence is the CTC posterior of
        the decoded string."""
        log_probs, lengths = self(images)
        texts = [label_text(labels) for labels in ctc_greedy_decode(log_probs.transpose(0, 1), lengths)]
        out = []
        for b, text in enumerate(texts):
            if not text:
                out.append(Reading(text, 0.0))
                continue
            target = torch.tensor(label_ids(text), device=log_probs.device)
            nll = ctc_loss(log_probs[:, b:b + 1], target, lengths[b:b + 1], torch.tensor([len(text)]),
                           blank=0, reduction="none")
            out.append(Reading(text, float(torch.exp(-nll[0]))))
        return out

    def pretrain_examples(self, samples: list[StringSample], rngs: list[np.random.Generator],
                          garbage_ratio: int = 1, tolerance: int = 2, ignore: int = 4) -> tuple[Tensor, Tensor]:
        """The column windows: a window whose centre is within ``ctc_stride / 2`` of a digit's
        centre is that digit, every other window garbage (= blank); the other arguments do not apply."""
        crops, frames = self.windows(to_batch_tensor([s.image for s in samples], self.device))
        stride = self.config.ctc_stride
        frame_targets = []
        for s in samples:
            centres = (s.boundaries[:-1] + s.boundaries[1:]) / 2
            t = np.arange(frames) * stride
            near = np.abs(t[:, None] - centres[None, :])
            best = near.argmin(axis=1)
            digits = np.array([int(ch) for ch in s.label], np.int64)[best]
            frame_targets.append(np.where(near[np.arange(frames), best] <= stride / 2, digits, GARBAGE))
        return crops, torch.from_numpy(np.concatenate(frame_targets)).to(self.device)

    def pretrain_logits(self, crops: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Garbage is the blank output (label 0, digits d + 1)."""
        return self.recogniser(crops), torch.where(targets == GARBAGE, torch.zeros_like(targets), targets + 1)


READERS: dict[str, type[Reader]] = {"segmentation": SegmentationReader, "ctc": WindowReader}


def reader_kind(criterion: str) -> str:
    """The kind of reader that trains with ``criterion``."""
    for kind, reader in READERS.items():
        if criterion in reader.CRITERIA:
            return kind
    raise ValueError(f"unknown criterion {criterion!r}; use one of {CRITERIA}")


CRITERIA = tuple(c for reader in READERS.values() for c in reader.CRITERIA)


def build_reader(config: ModelConfig) -> Reader:
    if config.kind not in READERS:
        raise ValueError(f"unknown reader kind {config.kind!r} ({', '.join(READERS)})")
    return READERS[config.kind](config)
