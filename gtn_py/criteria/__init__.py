"""Training criteria built on the graph operations (CTC and ASG on the dense intersection)."""

from .asg import ASGLoss, asg_loss, asg_target_graphs, asg_transition_graph
from .ctc import (
    CTCLoss,
    ctc_decode,
    ctc_expand,
    ctc_graph,
    ctc_graph_loss,
    ctc_greedy_decode,
    ctc_loss,
    ctc_topology,
    label_sequences,
    viterbi_decode,
)
from .segmentation import recognition_graph, segmentation_graph, span_table

__all__ = [
    "ASGLoss", "asg_loss", "asg_target_graphs", "asg_transition_graph",
    "CTCLoss", "ctc_decode", "ctc_expand", "ctc_graph", "ctc_graph_loss", "ctc_greedy_decode", "ctc_loss",
    "ctc_topology", "label_sequences", "viterbi_decode",
    "recognition_graph", "segmentation_graph", "span_table",
]
