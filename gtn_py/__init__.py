"""gtn_py: differentiable weighted finite-state transducers over PyTorch tensors.

Conventions: label 0 is epsilon (``EPSILON``); weights are scores (log-probabilities,
higher is better), an energy is a negative score; a batch of graphs is one Graph whose
nodes carry a graph id, and every algorithm takes a batch as readily as a single graph.
"""

# The data and the algebra.
from .errors import (
    ArgumentTypeError,
    ArgumentValueError,
    BackendUnavailableError,
    CyclicGraphError,
    DeviceMismatchError,
    DivergenceError,
    DtypeMismatchError,
    FormatError,
    GraphError,
    GraphIndexError,
    InvalidGraphError,
    LabelError,
    NoStartError,
    WeightError,
)
from .graph import EPSILON, Arc, Graph, check_compatible, gather, linear_graph, scalar_graph, string_graph
# The semirings (semiring.__all__): log (with a temperature) and tropical with closed forms; entropy and
# k-max through the Semiring interface; get_semiring.
from .semiring import *  # noqa: F403
from .ops.traverse import is_acyclic, topological_order

# Structural operations (ops/structure.py).
from .ops.structure import (
    arcsort,
    clone,
    closure,
    concat,
    connect,
    equal,
    equivalent,
    invert,
    project_input,
    project_output,
    reverse,
    topsort,
    union,
)

# Files and drawing (io.py).
from .io import (
    ArpaModel,
    SymbolTable,
    draw,
    load,
    read_arpa,
    read_openfst,
    read_symbols,
    save,
    write_openfst,
    write_symbols,
)

# Shortest distance family (ops/shortest.py).
from .ops.shortest import (
    arc_posteriors,
    forward_score,
    n_best,
    path_entropy,
    prune,
    push,
    sample,
    shortest_distance,
    total_score,
    viterbi_path,
    viterbi_score,
)

# Composition and friends (ops/compose.py).
from .ops.compose import compose, determinize, intersect, minimize, remove_epsilon, remove_failure_arcs

# Dense intersection with emission tensors (ops/dense/).
from .ops.dense import (
    Alignment,
    DenseLattice,
    dense_kernels,
    dense_lattice,
    dense_score,
    intersect_dense,
    viterbi_align,
)

# Criteria (criteria/): graph builders and losses for training; every name in
# gtn_py.criteria.__all__ (CTC, ASG, HMM, DTW, CRF, segmentation graphs) is exported here too.
from .criteria import *  # noqa: F403
from . import criteria, losses, semiring

__version__ = "0.1.0"

# The public API in one listing (what ``from gtn_py import *`` gives and the reference documents).
__all__ = [
    # graphs and their errors
    "EPSILON", "Arc", "Graph", "check_compatible", "gather", "linear_graph", "scalar_graph", "string_graph",
    "GraphError", "ArgumentTypeError", "ArgumentValueError", "BackendUnavailableError", "CyclicGraphError",
    "DeviceMismatchError", "DivergenceError", "DtypeMismatchError", "FormatError", "GraphIndexError",
    "InvalidGraphError", "LabelError", "NoStartError", "WeightError",
    # semirings (gtn_py.semiring.__all__)
    *semiring.__all__,
    # structure and traversal
    "arcsort", "clone", "closure", "concat", "connect", "equal", "equivalent", "invert", "project_input",
    "project_output", "reverse", "topsort", "union", "is_acyclic", "topological_order",
    # files and drawing
    "ArpaModel", "SymbolTable", "draw", "load", "read_arpa", "read_openfst", "read_symbols", "save", "write_openfst",
    "write_symbols",
    # shortest distance family
    "arc_posteriors", "forward_score", "n_best", "path_entropy", "prune", "push", "sample", "shortest_distance",
    "total_score", "viterbi_path", "viterbi_score",
    # composition
    "compose", "determinize", "intersect", "minimize", "remove_epsilon", "remove_failure_arcs",
    # dense intersection with emission tensors
    "Alignment", "DenseLattice", "dense_kernels", "dense_lattice", "dense_score", "intersect_dense", "viterbi_align",
    # the criteria (gtn_py.criteria.__all__) and the losses module
    *criteria.__all__, "criteria", "losses",
]
