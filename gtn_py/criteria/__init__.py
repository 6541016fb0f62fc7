"""Training criteria built on the graph operations (CTC and ASG on the dense intersection)."""

from .asg import ASGLoss, asg_loss, asg_target_graphs, asg_transition_graph
from .crf import LinearChainCRF, crf_graph, crf_log_partition, crf_marginals, crf_nll, crf_viterbi
from .ctc import (
    CTCLoss,
    ctc_decode,
    ctc_decoding_graph,
    ctc_expand,
    ctc_graph,
    ctc_graph_loss,
    ctc_greedy_decode,
    ctc_loss,
    ctc_topology,
    label_sequences,
    viterbi_decode,
)
from .dtw import ElasticTemplates, dtw_distance, dtw_graph, dtw_path, local_distances
from .hmm import (
    decoding_graph,
    forced_align,
    hmm_decode,
    hmm_lattice,
    hmm_nll,
    hmm_score,
    hmm_topology,
    hmm_units,
    lexicon,
    transcript_graphs,
    word_model,
)
from .rnnt import (
    rnnt_beam_search,
    rnnt_graph_lattice,
    rnnt_graph_loss,
    rnnt_greedy_decode,
    rnnt_lattice,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_prune,
    rnnt_prune_ranges,
)
from .segmentation import recognition_graph, segmentation_graph, span_table

__all__ = [
    "ASGLoss", "asg_loss", "asg_target_graphs", "asg_transition_graph",
    "CTCLoss", "ctc_decode", "ctc_decoding_graph", "ctc_expand", "ctc_graph", "ctc_graph_loss", "ctc_greedy_decode",
    "ctc_loss", "ctc_topology", "label_sequences", "viterbi_decode",
    "rnnt_beam_search", "rnnt_graph_lattice", "rnnt_graph_loss", "rnnt_greedy_decode", "rnnt_lattice", "rnnt_loss",
    "rnnt_loss_pruned", "rnnt_loss_simple", "rnnt_prune", "rnnt_prune_ranges",
    "recognition_graph", "segmentation_graph", "span_table",
    "LinearChainCRF", "crf_graph", "crf_log_partition", "crf_marginals", "crf_nll", "crf_viterbi",
    "ElasticTemplates", "dtw_distance", "dtw_graph", "dtw_path", "local_distances",
    "decoding_graph", "forced_align", "hmm_decode", "hmm_lattice", "hmm_nll", "hmm_score", "hmm_topology",
    "hmm_units", "lexicon", "transcript_graphs", "word_model",
]
