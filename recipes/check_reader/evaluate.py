"""Reading sets of strings, and the evaluation metrics: string accuracy, digit errors, and the
reject curve (readings whose confidence is below a threshold rejected, trading rejects for errors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import common
from .data import StringSet
from .model import Reader, Reading


@torch.no_grad()
def read_batch(model: Reader, images: list[np.ndarray], candidates: int = 1) -> list[Reading]:
    """Read a batch of string images (:meth:`~.model.Reader.read`, without gradients)."""
    return model.read(images, candidates)


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


def evaluate_strings(model: Reader, strings: StringSet, batch_size: int = 32, candidates: int = 1,
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
