"""The recogniser and the graphs built around it.

:class:`Recogniser` is a small convolutional network scoring a 28x28 crop for every class.
:class:`SegmentationReader` runs it on every span of every image of a minibatch in one call
and turns the scores into interpretation graphs (segmentation graph -> recognition
transformer -> optional grammar). :class:`WindowReader` is the CTC baseline: the same
network slid over the image in columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gtn_py import Graph, string_graph
from gtn_py.criteria.segmentation import recognition_graph, segmentation_graph
from gtn_py.ops.compose import compose

from ..common import InputError
from .data import deformation
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


class Committee(nn.Module):
    """Several recognisers scoring as one: the mean of their span scores (a product of experts
    in the log domain), e.g. readers trained from different seeds or with different augmentation."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, crops: Tensor) -> Tensor:
        return torch.stack([m(crops) for m in self.members]).mean(0)


class Views(nn.Module):
    """A recogniser that reads each crop as given and under ``count - 1`` fixed random
    deformations (the law of the training augmentation, :func:`~.data.deformation`, at
    ``strength``), its span scores averaged: test-time augmentation, a committee of views.
    The deformations are drawn once from ``seed``, so a reading is reproducible."""

    grids: Tensor

    def __init__(self, recogniser: nn.Module, count: int, strength: float = 1.0, seed: int = 0):
        super().__init__()
        if count < 1:
            raise ValueError(f"views: need at least 1 (the crop as given), got {count}")
        self.recogniser = recogniser
        rng = np.random.default_rng(seed)
        ys, xs = np.mgrid[0:CROP, 0:CROP].astype(np.float32)
        positions = [(ys, xs)] + [deformation(rng, CROP, CROP, strength) for _ in range(count - 1)]
        # grid_sample's sampling positions [count, 28, 28, (x, y)], scaled to [-1, 1] (pixel centres at the ends).
        grids = np.stack([np.stack([x, y], axis=-1) for y, x in positions]).astype(np.float32)
        self.register_buffer("grids", torch.from_numpy(grids) * (2.0 / (CROP - 1)) - 1.0, persistent=False)

    def forward(self, crops: Tensor) -> Tensor:
        num_crops = crops.shape[0]
        views = [F.grid_sample(crops, grid.expand(num_crops, -1, -1, -1), align_corners=True)
                 for grid in self.grids.to(crops)]  # the crops' dtype and device
        return self.recogniser(torch.cat(views)).reshape(len(views), num_crops, -1).mean(0)


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
    """What the reader builds for a minibatch."""

    spans: Spans
    span_scores: Tensor      # [S, C]
    graphs: Graph            # batch: span-label -> digit-label transducers (grammar composed in)


class SegmentationReader(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.recogniser: nn.Module = Recogniser(NUM_DIGITS, config.channels, config.hidden,
                                                inputs=2 if config.context else 1)  # or a Committee

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

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


class WindowReader(nn.Module):
    """The CTC baseline: the same recogniser (one more output, the blank) on 28-pixel windows
    every ``ctc_stride`` columns. Returns log-probabilities ``[T, B, C+1]`` and lengths."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.recogniser = Recogniser(NUM_DIGITS + 1, config.channels, config.hidden)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

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


def build_reader(config: ModelConfig) -> nn.Module:
    return WindowReader(config) if config.kind == "ctc" else SegmentationReader(config)
