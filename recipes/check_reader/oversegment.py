"""Over-segmentation: candidate cuts from the image, and the crops of the spans between them.

Cuts are the minima of the smoothed vertical ink projection (where touching digits are
thinnest, and the middle of every blank run) plus a regular grid through the ink, so that
wherever two digits touch or overlap a cut lies within ``grid // 2`` pixels of the true
boundary. Cuts closer than ``min_piece`` pixels are merged (projection minima win).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gtn_py.criteria.segmentation import span_table

CROP = 28


@dataclass
class CutConfig:
    grid: int = 5          # spacing of the regular cuts (pixels)
    min_piece: int = 2     # cuts closer than this are merged
    max_span: int = 8      # a span covers at most this many pieces ...
    max_width: int = 28    # ... and at most this many pixels

    def __post_init__(self) -> None:
        for name in ("grid", "min_piece", "max_span", "max_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"CutConfig.{name} must be at least 1, got {getattr(self, name)}")


def candidate_cuts(image: np.ndarray, config: CutConfig) -> np.ndarray:
    """Sorted x positions of the candidate cuts of a [28, W] image (first 0... last W region ends)."""
    profile = image.astype(np.float32).sum(axis=0)
    width = profile.shape[0]
    ink = np.flatnonzero(profile > 0)
    if ink.size == 0:
        return np.array([0, width], np.int64)
    left, right = int(ink[0]), int(ink[-1]) + 1
    smooth = np.convolve(profile, np.array([1.0, 2.0, 1.0]) / 4.0, mode="same")
    inner = smooth[left + 1:right - 1]
    prev, nxt = smooth[left:right - 2], smooth[left + 2:right]
    minima = np.flatnonzero((inner <= prev) & (inner <= nxt) & ((inner < prev) | (inner < nxt) | (inner == 0)))
    minima = minima + left + 1
    # A blank run gives a plateau of zero minima: keep its middle column only.
    blank = profile[minima] == 0
    runs = np.split(minima[blank], np.flatnonzero(np.diff(minima[blank]) > 1) + 1) if blank.any() else []
    strong = np.concatenate([minima[~blank]] + [r[len(r) // 2:len(r) // 2 + 1] for r in runs if len(r)])
    strong = np.unique(np.concatenate([strong, [left, right]])).astype(np.int64)
    grid = np.arange(left + config.grid, right, config.grid, dtype=np.int64)
    near = np.abs(grid[:, None] - strong[None, :]).min(axis=1) < config.min_piece + 1
    cuts = np.unique(np.concatenate([strong, grid[~near]]))
    # Merge any remaining cuts that are too close (keeping the first).
    kept = [int(cuts[0])]
    for c in cuts[1:]:
        if c - kept[-1] >= config.min_piece or c == right:
            kept.append(int(c))
    if kept[-1] != right:
        kept.append(right)
    if len(kept) >= 3 and kept[-1] - kept[-2] < config.min_piece:
        kept.pop(-2)
    return np.array(kept, np.int64)


@dataclass
class Spans:
    """All spans of a batch of images, flattened (one row per span), plus the cuts themselves."""

    cuts: list[np.ndarray]        # per image: cut x positions
    num_pieces: Tensor            # [B]
    keep: Tensor                  # [num spans of span_table] bool: spans narrow enough to recognise
    image: Tensor                 # [S] image of each kept span
    begin: Tensor                 # [S] first cut index
    end: Tensor                   # [S] last cut index
    x0: Tensor                    # [S] pixel columns
    x1: Tensor


def batch_spans(images: list[np.ndarray], config: CutConfig) -> Spans:
    cuts = [candidate_cuts(im, config) for im in images]
    num_pieces = torch.tensor([len(c) - 1 for c in cuts], dtype=torch.long)
    image, begin, end = span_table(num_pieces, config.max_span)
    cut_offsets = torch.cumsum(num_pieces + 1, 0) - (num_pieces + 1)
    all_cuts = torch.from_numpy(np.concatenate(cuts))
    x0 = all_cuts[cut_offsets[image] + begin]
    x1 = all_cuts[cut_offsets[image] + end]
    # A single piece is always kept so that every image has a path.
    keep = ((x1 - x0) <= config.max_width) | (end - begin == 1)
    return Spans(cuts, num_pieces, keep, image[keep], begin[keep], end[keep], x0[keep], x1[keep])


def span_crops(batch: Tensor, spans: Spans, context: bool = False) -> Tensor:
    """The crop of every span centred in a 28x28 window: ``[S, 1, 28, 28]`` float in [0, 1].

    ``batch`` is ``[B, 28, Wmax]`` (uint8 or float, any device). Spans wider than the window
    are squeezed to fit (nearest column). One gather for the whole batch. With ``context``, a
    second channel holds the same window with the ink outside the span left in (the
    neighbours' strokes, where the span's own ink is cut off or overlapped): ``[S, 2, 28, 28]``.
    """
    device = batch.device
    x0, x1, img = spans.x0.to(device), spans.x1.to(device), spans.image.to(device)
    width = (x1 - x0).clamp(min=1)
    col = torch.arange(CROP, device=device)
    fits = width <= CROP
    offset = (CROP - width).clamp(min=0) // 2
    # Columns inside a narrow span's window map one to one; wide spans are sampled evenly.
    source = torch.where(fits[:, None], x0[:, None] + col[None, :] - offset[:, None],
                         x0[:, None] + (col[None, :] * width[:, None]) // CROP)
    inside = (source >= x0[:, None]) & (source < x1[:, None])
    in_image = (source >= 0) & (source < batch.shape[2])
    source = source.clamp(0, batch.shape[2] - 1)
    columns = batch.transpose(1, 2).reshape(-1, batch.shape[1])      # [B * Wmax, 28]: one row per column
    flat = (img[:, None] * batch.shape[2] + source).reshape(-1)
    pixels = columns.index_select(0, flat).reshape(-1, CROP, batch.shape[1]).to(torch.float32) / 255.0
    masks = [inside, in_image] if context else [inside]
    channels = [pixels * mask[:, :, None] for mask in masks]
    return torch.stack(channels, 1).transpose(2, 3).contiguous()      # [S, 1 or 2, 28 rows, 28 cols]


def to_batch_tensor(images: list[np.ndarray], device: torch.device | str = "cpu") -> Tensor:
    width = max(im.shape[1] for im in images)
    out = np.zeros((len(images), images[0].shape[0], width), np.uint8)
    for i, im in enumerate(images):
        out[i, :, : im.shape[1]] = im
    return torch.from_numpy(out).to(device)
