"""Training criteria on the interpretation graphs (one loss per string, ``[B]``).

* ``nll`` (the paper's *discriminative forward*): ``-log P(correct string | image)`` =
  forward score of all paths - forward score of the paths that read the correct string.
* ``perceptron`` (*discriminative Viterbi* without margin): best path overall - best
  correct path.
* ``hinge``: ``max(0, margin + best wrong answer - best correct path)``.

A string that cannot be read correctly at all (e.g. more digits than pieces) has an
infinite loss; :func:`sequence_loss` returns it and the trainer drops it from the average.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gtn_py import Graph
from gtn_py.ops.compose import compose
from gtn_py.ops.shortest import forward_score, n_best, viterbi_score

from .model import label_ids, target_graphs

CRITERIA = ("nll", "perceptron", "hinge")


def sequence_loss(criterion: str, graphs: Graph, labels: list[str], margin: float = 1.0) -> Tensor:
    """Per-string losses ``[B]`` of a batch of interpretation graphs against the correct strings."""
    correct = compose(graphs, target_graphs(labels, graphs.device))
    if criterion == "nll":
        return forward_score(graphs) - forward_score(correct)
    if criterion == "perceptron":
        return viterbi_score(graphs) - viterbi_score(correct)
    if criterion == "hinge":
        return (margin + best_wrong_score(graphs, labels) - viterbi_score(correct)).clamp(min=0)
    raise ValueError(f"unknown criterion {criterion!r}; use one of {CRITERIA}")


def best_wrong_score(graphs: Graph, labels: list[str]) -> Tensor:
    """Score of the best path whose reading is not the correct string, per graph ``[B]``."""
    paths = n_best(graphs, 2, distinct_outputs=True)
    scores = []
    for b, text in enumerate(labels):
        target = label_ids(text)
        candidates = [p for p in _as_list(paths[b]) if _output(p) != target]
        scores.append(viterbi_score(candidates[0]) if candidates else graphs.weights.new_full((), float("-inf")))
    return torch.stack(scores)


def _as_list(paths: Graph | list[Graph]) -> list[Graph]:
    if isinstance(paths, Graph):
        return paths.unbatch() if paths.is_batch else [paths]
    return list(paths)


def _output(path: Graph) -> list[int]:
    return [int(x) for x in path.olabel.tolist() if x > 0]
