"""Training criteria on the interpretation graphs (one loss per string, ``[B]``), from gtn_py.losses.

* ``nll`` (the paper's *discriminative forward*): ``-log P(correct string | image)`` =
  forward score of all paths - forward score of the paths that read the correct string.
* ``perceptron`` (*discriminative Viterbi* without margin): best path overall - best
  correct path.
* ``hinge``: ``max(0, margin + best correct path energy - energy of the most offending
  incorrect reading)``.

A string that cannot be read correctly at all (e.g. more digits than pieces) has an
infinite loss; the trainer drops it from the average. The CTC baseline's criterion is
:func:`ctc_loss` over its column windows.
"""

from __future__ import annotations

from torch import Tensor

from gtn_py import losses
from gtn_py.criteria.ctc import ctc_loss as gtn_ctc_loss
from gtn_py.graph import Graph
from gtn_py.ops.compose import compose

from .model import target_graphs

CRITERIA = ("nll", "perceptron", "hinge")


def sequence_loss(criterion: str, graphs: Graph, labels: list[str], margin: float = 1.0) -> Tensor:
    """Per-string losses ``[B]`` of a batch of interpretation graphs against the correct strings."""
    correct = compose(graphs, target_graphs(labels, graphs.device))
    if criterion == "nll":
        return losses.nll(correct, graphs, reduction="none")
    if criterion == "perceptron":
        return losses.perceptron(correct, graphs, reduction="none")
    if criterion == "hinge":
        return losses.hinge(correct, graphs, margin=margin, reduction="none")
    raise ValueError(f"unknown criterion {criterion!r}; use one of {CRITERIA}")


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor) -> Tensor:
    """Per-string CTC losses (blank = 0) ``[B]``, by gtn_py's dense intersection."""
    return gtn_ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="none")
