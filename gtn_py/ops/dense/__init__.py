"""Dense intersection: a batch of graphs against emission tensors ``[B, T, V]`` from a network.

Every arc of graph ``b`` consumes exactly one frame of sequence ``b`` and reads the emission
column of its input label: along a path, the arc taken at frame ``t`` adds
``weight + emissions[b, t, ilabel]``, and a successful path takes exactly ``lengths[b]`` arcs.
So, unlike in composition, **label 0 is not epsilon here**: it reads column 0 (where a CTC
blank usually lives, as in torch). Graphs must have labels in ``[0, V)`` (failure arcs aside:
the lattices and alignments take them with ``phi=``, reading no frame).

Two forms:

* :func:`dense_lattice` / :func:`intersect_dense` build the intersection as a graph (nodes are
  the reachable and co-accessible ``(graph node, frame)`` pairs, optionally beam-pruned), whose
  arc weights are differentiable gathers of the graph's weights and of the emissions, for
  decoding, drawing, n-best and alignment.
* :func:`dense_score` gives the log-semiring (or tropical) totals ``[B]`` without building the
  lattice: a forward sweep over frames keeps ``O(states)`` per frame, and a closed-form
  backward (forward-backward) gives the gradients of the emissions and of the graph's arc,
  start and final weights.

The sweeps run over frames with a few tensor operations per frame on all graphs of the batch
at once (a disjoint union; each node reads the emission row of its own sequence); the log
(temperature 1) and tropical semirings use compiled kernels instead, numba on the CPU and Triton
on CUDA: forward scores and totals, the log semiring's gradients, Viterbi backtracking. Each node's
incoming (outgoing) arcs are padded to the largest in- (out-) degree, so a frame is a dense
gather and a reduction, with no scatter; the emission gathers are done a chunk of frames at a
time. Graphs whose degrees are very uneven (one node with thousands of arcs) pay for the
padding in memory.

The package, one layer a module: :mod:`.layout` (inputs and their integer structure),
:mod:`.protocol` (what every kind of kernels offers: forward, gradients, backtracking),
:mod:`.torch_sweeps`, :mod:`.numba_kernels` and :mod:`.triton_kernels` (the three kinds),
:mod:`.dispatch` (the one place that chooses among them, :func:`dense_kernels`), :mod:`.score`
(the fused total and its autograd function) and :mod:`.lattice` (lattices and alignments).
"""

from .dispatch import dense_kernels
from .lattice import Alignment, DenseLattice, dense_lattice, intersect_dense, viterbi_align
from .layout import GraphsLike, LengthsLike
from .protocol import SweepKernels
from .score import dense_score

__all__ = ["Alignment", "DenseLattice", "GraphsLike", "LengthsLike", "SweepKernels", "dense_kernels", "dense_lattice",
           "dense_score", "intersect_dense", "viterbi_align"]
