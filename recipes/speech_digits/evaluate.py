"""Decoding, word and sentence error rates, and the viz/ report (alignments drawn over features)."""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import common
from .data import Utterance
from .models import Recognizer, make_batch


@dataclass
class Result:
    utt_ids: list[str] = field(default_factory=list)
    references: list[tuple[str, ...]] = field(default_factory=list)
    hypotheses: list[tuple[str, ...]] = field(default_factory=list)
    candidates: list[list[tuple[str, ...]]] = field(default_factory=list)  # the answers each was chosen from

    def summary(self, chosen: Collection[str] | None = None) -> dict[str, Any]:
        """Error rates over all utterances, or over those whose ids are in ``chosen``; where the
        hypotheses were chosen among several candidates (a product of experts), also the mean
        number of candidates and the oracle WER: that of the candidate nearest each transcript."""
        subs = dels = ins = words = wrong = utterances = oracle = proposed = 0
        candidates = self.candidates or [[hyp] for hyp in self.hypotheses]
        for utt, ref, hyp, found in zip(self.utt_ids, self.references, self.hypotheses, candidates):
            if chosen is not None and utt not in chosen:
                continue
            s, d, n = common.edit_distance(ref, hyp)
            subs, dels, ins, words = subs + s, dels + d, ins + n, words + len(ref)
            wrong += (s + d + n) > 0
            utterances += 1
            oracle += s + d + n if len(found) == 1 else min(sum(common.edit_distance(ref, a)) for a in found)
            proposed += len(found)
        errors = subs + dels + ins
        summary = {"utterances": utterances, "words": words,
                   "wer": round(100.0 * errors / max(1, words), 3),
                   "ser": round(100.0 * wrong / max(1, utterances), 3),
                   "substitutions": subs, "deletions": dels, "insertions": ins}
        if proposed > utterances:
            summary.update(candidates=round(proposed / utterances, 2), oracle_wer=round(100.0 * oracle / words, 3))
        return summary

    def confusions(self, top: int = 10) -> list[dict[str, Any]]:
        return common.confusions(self.references, self.hypotheses, top)


def read_features(model: Recognizer, features: Sequence[np.ndarray], batch_size: int = 32,
                  device: torch.device | str = "cpu", show_progress: bool = False
                  ) -> tuple[list[tuple[str, ...]], list[list[tuple[str, ...]]]]:
    """The words recognised in each feature matrix and the candidate answers they were chosen from
    (:meth:`~.models.Recognizer.read`), batched by similar lengths (a progress bar of batches on
    stderr with ``show_progress``)."""
    model.eval()
    order = np.argsort([len(f) for f in features], kind="stable")
    hypotheses: list[tuple[str, ...]] = [()] * len(features)
    candidates: list[list[tuple[str, ...]]] = [[] for _ in features]
    starts = range(0, len(order), batch_size)
    with torch.no_grad():
        for start in common.progress(starts, len(starts), show_progress, unit="batch"):
            chosen = order[start:start + batch_size]
            batch = make_batch([features[i] for i in chosen], device=device)
            for i, words, found in zip(chosen, *model.read(batch)):
                hypotheses[i], candidates[i] = words, found
    return hypotheses, candidates


def decode_features(model: Recognizer, features: Sequence[np.ndarray], batch_size: int = 32,
                    device: torch.device | str = "cpu", show_progress: bool = False) -> list[tuple[str, ...]]:
    """The words recognised in each feature matrix (:func:`read_features`)."""
    return read_features(model, features, batch_size, device, show_progress)[0]


def evaluate_model(model: Recognizer, utterances: Sequence[Utterance], batch_size: int = 32,
                   device: torch.device | str = "cpu", show_progress: bool = False) -> Result:
    was_training = model.training
    hyps, candidates = read_features(model, [u.features for u in utterances], batch_size, device, show_progress)
    model.train(was_training)
    return Result([u.utt_id for u in utterances], [u.words for u in utterances], hyps, candidates)


def format_summary(summary: dict[str, Any]) -> str:
    return (f"WER {summary['wer']:.2f}% ({summary['substitutions']} sub, {summary['deletions']} del, "
            f"{summary['insertions']} ins of {summary['words']} words)  "
            f"SER {summary['ser']:.2f}% of {summary['utterances']} utterances"
            + (f"  (chosen among {summary['candidates']:g} candidates per utterance, the best of which: "
               f"WER {summary['oracle_wer']:.2f}%)" if "oracle_wer" in summary else ""))


# ---------------------------------------------------------------------- report
_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
            "#469990", "#808000", "#000075")


def alignment_svg(features: np.ndarray, alignment: Sequence[tuple[str, int, int]], title: str,
                  px: int = 3, row: int = 8) -> str:
    """The features as a heat map (time left to right, cepstra bottom to top) with the aligned
    words as coloured, labelled spans above it."""
    frames, dims = features.shape
    lo, hi = np.percentile(features, 2), np.percentile(features, 98)
    level = np.clip((features - lo) / max(1e-6, hi - lo), 0, 1)
    width, top = frames * px, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 20}" height="{top + dims * row + 30}">',
             f'<text x="10" y="14" font-family="sans-serif" font-size="12">{html.escape(title)}</text>']
    for t in range(frames):
        for d in range(dims):
            g = int(255 * (1 - level[t, d]))
            parts.append(f'<rect x="{10 + t * px}" y="{top + (dims - 1 - d) * row}" width="{px}" height="{row}" '
                         f'fill="rgb({g},{g},{g})"/>')
    for k, (word, a, b) in enumerate(alignment):
        colour = _COLOURS[k % len(_COLOURS)]
        x0, x1 = 10 + a * px, 10 + min(b, frames) * px
        parts.append(f'<rect x="{x0}" y="20" width="{max(1, x1 - x0)}" height="{dims * row + top - 20}" '
                     f'fill="{colour}" fill-opacity="0.18" stroke="{colour}"/>')
        parts.append(f'<text x="{x0 + 2}" y="32" font-family="sans-serif" font-size="11" fill="{colour}">'
                     f'{html.escape(word)}</text>')
    parts.append(f'<text x="10" y="{top + dims * row + 20}" font-family="sans-serif" font-size="10">'
                 f'{frames} frames of 10 ms; rows: cepstra c0 (bottom) .. c12</text></svg>')
    return "\n".join(parts)


def write_report(model: Recognizer, utterances: Sequence[Utterance], directory: str | Path,
                 result: Result | None = None, device: torch.device | str = "cpu") -> Path:
    """viz/index.html: each utterance's forced alignment (its transcript) drawn over its features,
    with the hypothesis when ``result`` is given; one SVG per utterance beside it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.no_grad():
        batch = make_batch([u.features for u in utterances], [u.words for u in utterances],
                           [u.utt_id for u in utterances], device)
        alignments = model.align(batch)
    hyps = dict(zip(result.utt_ids, result.hypotheses)) if result is not None else {}
    rows = []
    for u, alignment in zip(utterances, alignments):
        name = f"{u.utt_id}.svg"
        (directory / name).write_text(alignment_svg(u.features, alignment, f"{u.utt_id}: {' '.join(u.words)}"))
        hyp = f"<br>hypothesis: {html.escape(' '.join(hyps[u.utt_id]))}" if u.utt_id in hyps else ""
        rows.append(f"<h3>{html.escape(u.utt_id)}</h3><p>reference: {html.escape(' '.join(u.words))}{hyp}</p>"
                    f'<img src="{name}">')
    index = directory / "index.html"
    index.write_text("<html><body><h2>Forced alignments over the MFCC features</h2>\n" + "\n".join(rows)
                     + "\n</body></html>\n")
    return index
