"""Decoding (Viterbi) with a confidence per string, and the evaluation metrics.

The confidence of a reading is its posterior ``P(reading | image)`` = exp(forward score of
the paths that read it - forward score of all paths), so a user can reject readings below a
threshold and trade rejects for errors (the reject curve).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gtn_py import Graph
from gtn_py.criteria.ctc import ctc_greedy_decode
from gtn_py.ops.compose import compose
from gtn_py.ops.shortest import forward_score, n_best, viterbi_path

from .. import common
from .data import StringSet
from .model import WindowReader, label_ids, label_text, target_graphs
from .objectives import ctc_loss


@dataclass
class Reading:
    text: str
    confidence: float
    cuts: list[int] = field(default_factory=list)                      # candidate cut x positions
    segments: list[tuple[int, int, str]] = field(default_factory=list)  # Viterbi spans (x0, x1, digit)


@torch.no_grad()
def read_batch(model: nn.Module, images: list[np.ndarray], candidates: int = 1) -> list[Reading]:
    """Decode a batch of string images: the string of the Viterbi path, or, with ``candidates``
    K > 1, of the K best paths with distinct strings the one with the highest posterior (which
    sums over all its segmentations; the Viterbi path's string is not always the most probable)."""
    if isinstance(model, WindowReader):
        return _read_ctc(model, images)
    interp = model(images)
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
    posterior = _posteriors(graphs, owner, [text for opts in options for text, _ in opts])
    readings, first = [], 0
    for b, opts in enumerate(options):
        best = max(range(len(opts)), key=lambda j: posterior[first + j]) if opts else -1
        text, segments = opts[best] if opts else ("", [])
        readings.append(Reading(text, posterior[first + best] if opts else 0.0,
                                [int(x) for x in spans.cuts[b]], segments))
        first += len(opts)
    return readings


def _posteriors(graphs: Graph, owner: list[int], texts: list[str]) -> list[float]:
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


def _read_ctc(model: WindowReader, images: list[np.ndarray]) -> list[Reading]:
    """Best-path decoding; the confidence is the CTC posterior of the decoded string."""
    log_probs, lengths = model(images)
    texts = [label_text(labels) for labels in ctc_greedy_decode(log_probs.transpose(0, 1), lengths)]
    out = []
    for b, text in enumerate(texts):
        if not text:
            out.append(Reading(text, 0.0))
            continue
        target = torch.tensor(label_ids(text), device=log_probs.device)
        nll = ctc_loss(log_probs[:, b:b + 1], target, lengths[b:b + 1], torch.tensor([len(text)]))
        out.append(Reading(text, float(torch.exp(-nll[0]))))
    return out


# ---------------------------------------------------------------------- metrics
def reject_curve(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Percent correct / reject / error when accepting the most confident strings, at every
    distinct threshold (readings with equal confidence are accepted or rejected together)."""
    n = len(confidence)
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], correct[order].astype(np.int64)
    good = np.concatenate([[0], np.cumsum(ok)])
    cuts = [0] + [k for k in range(1, n + 1) if k == n or conf[k - 1] > conf[k]]
    rows = []
    for k in cuts:
        rows.append({"threshold": float(conf[k - 1]) if k else 1.0 + 1e-9,
                     "correct": 100.0 * good[k] / n, "error": 100.0 * (k - good[k]) / n,
                     "reject": 100.0 * (n - k) / n})
    return rows


@dataclass
class EvalResult:
    labels: list[str]
    readings: list[Reading]

    @property
    def correct(self) -> np.ndarray:
        return np.array([r.text == t for r, t in zip(self.readings, self.labels)])

    def summary(self) -> dict:
        correct = self.correct
        confidence = np.array([r.confidence for r in self.readings], np.float64)
        errors = sum(sum(common.edit_distance(t, r.text)) for r, t in zip(self.readings, self.labels))
        curve = reject_curve(confidence, correct)
        within = [row for row in curve if row["error"] <= 1.0]
        at_1pct = max(within, key=lambda row: row["correct"] - row["reject"] * 1e-9)
        table = []
        for target in (0.0, 5.0, 10.0, 20.0, 30.0, 50.0):
            row = min(curve, key=lambda r: (abs(r["reject"] - target), r["reject"]))
            table.append(row)
        return {"strings": len(self.labels), "string_accuracy": 100.0 * float(correct.mean()),
                "digit_error_rate": 100.0 * errors / max(1, sum(len(t) for t in self.labels)),
                "reject_at_1pct_error": at_1pct["reject"], "operating_point_1pct": at_1pct,
                "reject_table": table}


def evaluate_strings(model: nn.Module, strings: StringSet, batch_size: int = 32, candidates: int = 1,
                     show_progress: bool = False) -> EvalResult:
    """Read every string of ``strings`` (with a progress bar on stderr if ``show_progress``)."""
    was_training = model.training
    model.eval()
    readings: list[Reading] = []
    bar = common.Progress(len(strings), enabled=show_progress, unit="string")
    try:
        for start in range(0, len(strings), batch_size):
            idx = range(start, min(len(strings), start + batch_size))
            readings += read_batch(model, [strings.image(i) for i in idx], candidates)
            bar.update(len(readings))
    finally:
        bar.close()
    model.train(was_training)
    return EvalResult(list(strings.labels), readings)


def format_summary(s: dict) -> str:
    lines = [f"strings:              {s['strings']}",
             f"string accuracy:      {s['string_accuracy']:.2f} %",
             f"digit error rate:     {s['digit_error_rate']:.2f} %",
             f"reject for <=1% error: {s['reject_at_1pct_error']:.1f} %  "
             f"(threshold {s['operating_point_1pct']['threshold']:.3g}, "
             f"correct {s['operating_point_1pct']['correct']:.1f} %, error {s['operating_point_1pct']['error']:.2f} %)",
             "", "  threshold   correct %   reject %   error %"]
    for row in s["reject_table"]:
        lines.append(f"  {row['threshold']:9.3g}   {row['correct']:9.2f}   {row['reject']:8.2f}   {row['error']:7.2f}")
    return "\n".join(lines)
