"""Segmentation graphs and the recognition transformer (LeCun et al. 1998, section VI).

A string image is over-segmented into ``num_pieces`` pieces by ``num_pieces + 1`` candidate
cuts. The *segmentation graph* has one node per cut and one arc per span of 1 to
``max_span`` consecutive pieces (from the cut where the span begins to the cut where it
ends), so every path from the first cut to the last is one way to segment the image into
characters. The *recognition transformer* replaces each span arc by one arc per class,
weighted by a recogniser's score of that span as that class: the result (the interpretation
graph) is an acceptor over class labels whose paths are (segmentation, reading) pairs.

Both builders are vectorized over arcs and over a batch of images, and
:func:`recognition_graph` is differentiable with respect to the span scores, so a loss on
the interpretation graph trains the recogniser end to end.

Labels: span arcs carry the span's index within its graph plus one (label 0 is epsilon);
class ``c`` becomes label ``c + label_offset`` (default 1, so class 0 is not epsilon).
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import ArgumentValueError, InvalidGraphError
from ..graph import NEG_INF, Graph, as_graph, as_integer, as_tensor

PieceCounts = Union[int, Sequence[int], Tensor]

__all__ = ["span_table", "segmentation_graph", "recognition_graph"]


def span_table(num_pieces: PieceCounts, max_span: int,
               device: torch.device | str | None = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Every span of 1..``max_span`` consecutive pieces, for one image or a batch.

    Returns ``(image, begin, end)`` (int64, one entry per span): the span covers pieces
    ``begin .. end-1`` of image ``image``, i.e. it runs from cut ``begin`` to cut ``end``.
    Spans are ordered by image, then ``begin``, then length; this is the arc order of
    :func:`segmentation_graph`.
    """
    counts = _piece_counts(num_pieces, device)
    max_span = as_integer(max_span, "max_span", ArgumentValueError)
    if max_span < 1:
        raise InvalidGraphError(f"max_span must be >= 1, got {max_span}")
    dev = counts.device
    total = int(counts.sum())
    image = torch.repeat_interleave(torch.arange(counts.shape[0], device=dev), counts)
    first_piece = torch.cumsum(counts, 0) - counts
    begin = torch.arange(total, device=dev) - first_piece[image]
    lengths = torch.arange(1, max_span + 1, device=dev)
    image = image.repeat_interleave(max_span)
    end = begin.repeat_interleave(max_span) + lengths.repeat(total)
    begin = begin.repeat_interleave(max_span)
    fits = end <= counts[image]
    return image[fits], begin[fits], end[fits]


def segmentation_graph(num_pieces: PieceCounts, max_span: int, keep: Tensor | None = None, *,
                       dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> Graph:
    """The segmentation graph of one image (``num_pieces`` an int) or a batch (a sequence).

    Node ``i`` of an image is its cut ``i`` (node 0 starts, node ``num_pieces`` accepts);
    arc ``k`` is span ``k`` of :func:`span_table`, labelled with its index in its image's
    graph plus one, weight 0. ``keep`` (bool, one entry per span of :func:`span_table`)
    drops spans, e.g. those too wide for the recogniser.
    """
    counts = _piece_counts(num_pieces, device)
    image, begin, end = span_table(counts, max_span)
    if keep is not None:
        keep = keep.to(device=counts.device, dtype=torch.bool)
        if keep.shape != begin.shape:
            raise InvalidGraphError(f"keep has shape {tuple(keep.shape)}, expected ({begin.shape[0]},): "
                                    "one entry per span of span_table(num_pieces, max_span)")
        image, begin, end = image[keep], begin[keep], end[keep]
    dev = counts.device
    num_images = counts.shape[0]
    nodes_per_image = counts + 1
    first_node = torch.cumsum(nodes_per_image, 0) - nodes_per_image
    arcs_per_image = torch.bincount(image, minlength=num_images)
    first_arc = torch.cumsum(arcs_per_image, 0) - arcs_per_image
    label = torch.arange(begin.shape[0], device=dev) - first_arc[image] + 1
    num_nodes = int(nodes_per_image.sum())
    start = torch.full((num_nodes,), NEG_INF, dtype=dtype, device=dev)
    final = torch.full((num_nodes,), NEG_INF, dtype=dtype, device=dev)
    start[first_node] = 0.0
    final[first_node + counts] = 0.0
    batched = not isinstance(num_pieces, int)
    node_graph = torch.repeat_interleave(torch.arange(num_images, device=dev), nodes_per_image)
    return Graph.from_tensors(
        first_node[image] + begin, first_node[image] + end, label, label.clone(),
        torch.zeros(begin.shape[0], dtype=dtype, device=dev), start, final,
        node_graph=node_graph if batched else None, num_graphs=num_images if batched else 1)


def recognition_graph(seg: Graph, span_scores: Tensor, label_offset: int = 1,
                      keep_spans: bool = False) -> Graph:
    """The recognition transformer: each span arc becomes one arc per class.

    ``span_scores`` is ``[seg.num_arcs, C]`` (a recogniser's scores, higher is better, e.g.
    logits or log-probabilities). Arc ``a`` of ``seg`` becomes arcs ``a*C .. a*C + C-1``
    with the same ends, labels ``c + label_offset`` and weights ``seg.weights[a] +
    span_scores[a, c]`` (differentiable). The result is an acceptor over class labels, or,
    with ``keep_spans``, a transducer from span labels to class labels. Batches stay batches.
    """
    seg = as_graph(seg, "seg")
    span_scores = as_tensor(span_scores, "span_scores")
    if span_scores.dim() != 2 or span_scores.shape[0] != seg.num_arcs:
        raise InvalidGraphError(f"span_scores has shape {tuple(span_scores.shape)}, expected "
                                f"[{seg.num_arcs}, num_classes] (one row per arc of the segmentation graph)")
    if span_scores.device != seg.device:
        span_scores = span_scores.to(seg.device)
    if label_offset < 1:
        raise InvalidGraphError(f"label_offset must be >= 1 (label 0 is epsilon), got {label_offset}")
    num_classes = span_scores.shape[1]
    classes = torch.arange(num_classes, device=seg.device).repeat(seg.num_arcs) + label_offset
    weights = (seg.weights.to(span_scores.dtype)[:, None] + span_scores).reshape(-1)
    ilabel = seg.ilabel.repeat_interleave(num_classes) if keep_spans else classes
    g = seg.to(dtype=span_scores.dtype)
    return g.replace(src=seg.src.repeat_interleave(num_classes), dst=seg.dst.repeat_interleave(num_classes),
                      ilabel=ilabel, olabel=classes, weights=weights).check_weights()


def _piece_counts(num_pieces: PieceCounts, device: torch.device | str | None) -> Tensor:
    if isinstance(num_pieces, (Tensor, list, tuple)):
        given = as_tensor(num_pieces, "num_pieces", integer=True, ndim=(0, 1))
        counts = given.to(dtype=torch.long, device=device or given.device).reshape(-1)
    else:
        counts = torch.tensor([as_integer(num_pieces, "num_pieces", ArgumentValueError)], device=device)
    if counts.numel() == 0:
        raise InvalidGraphError("segmentation_graph needs at least one image")
    bad = (counts < 1).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise InvalidGraphError(f"image {i}: num_pieces must be >= 1, got {int(counts[i])}")
    return counts
