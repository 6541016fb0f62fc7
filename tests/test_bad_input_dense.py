"""Bad or unusual input to dense intersection, CTC and their neighbours: the right answer, or a
typed GraphError whose message speaks of the arguments the caller gave."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import gtn_py
from gtn_py import GraphError, InvalidGraphError, LabelError, WeightError
from gtn_py.ops.dense import dense_score, intersect_dense, viterbi_align

F = torch.nn.functional
backends = pytest.mark.parametrize("use_kernels", [True, False], ids=["kernels", "tensors"])


# ---------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_ctc_is_summed_in_float32(dtype):
    """A float16 sum over 3000 frames stopped growing (8288 for 8795; bfloat16: 2048): the loss
    is now summed in float32 and returned in float32, and the gradient comes back in the input
    dtype. The reference is torch's float32 CTC of the same (rounded) log-probabilities."""
    torch.manual_seed(0)
    frames, classes = 3000, 6
    targets = torch.tensor([[1, 2, 3, 4, 5, 1, 2, 3], [5, 4, 3, 2, 1, 0, 0, 0]])
    target_lengths = [8, 5]
    log_probs = torch.randn(frames, 2, classes).log_softmax(-1).to(dtype).requires_grad_()
    loss = gtn_py.ctc_loss(log_probs, targets, [frames, frames - 500], target_lengths, reduction="sum")
    assert loss.dtype == torch.float32
    want = F.ctc_loss(log_probs.detach().float(), targets, [frames, frames - 500], target_lengths, reduction="sum")
    assert abs(loss.item() - want.item()) <= 1e-5 * abs(want.item())
    assert want.item() > 8000  # far beyond where a float16 running sum loses whole units
    loss.backward()
    assert log_probs.grad is not None and log_probs.grad.dtype == dtype
    assert torch.isfinite(log_probs.grad.float()).all()


@backends
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_dense_score_matches_float32(use_kernels, dtype, choose_kernels):
    choose_kernels("auto" if use_kernels else "torch")
    g = gtn_py.Graph.from_arcs(2, [0, 0, 1, 1], [0, 1, 1, 0], [1, 2, 0, 2], start=[0], accept=[1],
                               weights=torch.tensor([-0.5, -1.0, -0.25, -2.0]))
    emissions = torch.randn(2, 2000, 3).log_softmax(-1).to(dtype).requires_grad_()
    for semiring in ("log", "tropical"):
        got = dense_score(g, emissions, semiring=semiring)
        want = dense_score(g, emissions.detach().float(), semiring=semiring)
        assert got.dtype == torch.float32
        assert torch.allclose(got, want, rtol=1e-6, atol=0)
    dense_score(g, emissions).sum().backward()
    assert emissions.grad is not None and emissions.grad.dtype == dtype


# ---------------------------------------------------------------------- NaN weights
def _graph_with_weights(weights: torch.Tensor) -> gtn_py.Graph:
    """Paths 0 -> 1 -> 2 and a dead end 0 -> 3 (arc 4), weights a parameter changed later."""
    return gtn_py.Graph.from_arcs(4, [0, 0, 1, 1, 0], [1, 1, 2, 2, 3], [1, 2, 2, 1, 1], weights=weights,
                                  start=[0], accept=[2])


@backends
@pytest.mark.parametrize("semiring", ["log", "tropical"])
def test_nan_weight_after_construction_gives_nan(use_kernels, semiring, choose_kernels):
    """A NaN written into the weights after construction (the from_arcs(weights=Parameter)
    pattern) gave -inf, or was skipped by the max: it now gives NaN for its own sequence, as a
    NaN does in torch (also on an arc into a dead end: -inf + NaN is NaN); the other sequences
    of the batch keep their totals."""
    choose_kernels("auto" if use_kernels else "torch")
    weights = torch.nn.Parameter(torch.zeros(5))
    g = _graph_with_weights(weights)
    emissions = torch.randn(2, 2, 3).log_softmax(-1)
    assert torch.isfinite(dense_score(g, emissions, semiring=semiring)).all()
    with torch.no_grad():
        weights[4] = math.nan  # the dead end
    assert torch.isnan(dense_score(g, emissions, semiring=semiring)).all()
    with torch.no_grad():
        weights[4], weights[0] = 0.0, math.nan
    batch = [g, gtn_py.string_graph([1, 2])]
    totals = dense_score(batch, emissions, semiring=semiring)
    assert math.isnan(totals[0].item())
    assert torch.equal(totals[1], dense_score(gtn_py.string_graph([1, 2]), emissions[1], semiring=semiring))
    if semiring == "log":
        totals[0].backward()
        assert torch.isnan(weights.grad[:4]).all()
    # A NaN on the start node's self-loop: every node of that graph is NaN from frame 1 on; the
    # other graph of the batch keeps its total (the tensor sweeps' padding slots read their own
    # node, not node 0 of the batch).
    ctc = gtn_py.ctc_graph([[1, 2], [2]])
    clean = dense_score(ctc, emissions, semiring=semiring)
    loop_weights = ctc.weights.detach().clone()
    loop_weights[0] = math.nan
    totals = dense_score(ctc.replace(weights=loop_weights), emissions, semiring=semiring)
    assert math.isnan(totals[0].item()) and totals[1].item() == pytest.approx(clean[1].item(), abs=1e-6)
    alignment = viterbi_align(g, emissions)
    assert torch.isnan(alignment.scores).all()
    lattice = intersect_dense(g, emissions[0])
    assert torch.isnan(lattice.weights).any()


@backends
def test_nan_start_or_final_weight_gives_nan(use_kernels, choose_kernels):
    choose_kernels("auto" if use_kernels else "torch")
    emissions = torch.randn(3, 3).log_softmax(-1)
    for field in ("start_weights", "final_weights"):
        g = gtn_py.Graph.from_arcs(2, [0, 0, 1], [1, 1, 1], [1, 2, 2], start=[0], accept=[1])
        with torch.no_grad():
            getattr(g, field)[0 if field == "start_weights" else 1] = math.nan
        for semiring in ("log", "tropical"):
            assert math.isnan(dense_score(g, emissions, semiring=semiring).item()), (field, semiring)


# ---------------------------------------------------------------------- lengths, beams, empty input
@pytest.mark.parametrize("lengths, match", [
    ([1.5, 2.7], r"lengths\[0\] = 1.5 is not a whole number"),
    ([2, math.nan], r"lengths\[1\] = nan is not a whole number"),
    ([-1, 2], r"lengths\[0\] = -1 is outside \[0, 3\]"),
    ([2, 4], r"lengths\[1\] = 4 is outside \[0, 3\]"),
    ([True, False], "whole numbers, got torch.bool"),
    ([2], "1 lengths for 2 sequences"),
])
def test_bad_lengths_raise(lengths, match):
    """Fractional lengths were truncated (2.7 frames read as 2)."""
    g = gtn_py.string_graph([1, 2])
    for operation in (dense_score, intersect_dense, viterbi_align):
        with pytest.raises(InvalidGraphError, match=match):
            operation(g, torch.randn(2, 3, 4), lengths)


def test_whole_float_lengths_are_accepted():
    g, emissions = gtn_py.string_graph([1, 2]), torch.randn(2, 3, 4)
    assert torch.equal(dense_score(g, emissions, [2.0, 3.0]), dense_score(g, emissions, [2, 3]))


@pytest.mark.parametrize("beam", [-1.0, math.nan, "wide"])
def test_bad_beam_raises(beam):
    """A negative or NaN beam returned an empty lattice."""
    with pytest.raises(WeightError, match="beam"):
        intersect_dense(gtn_py.string_graph([1, 2]), torch.randn(2, 4), beam=beam)
    assert intersect_dense(gtn_py.string_graph([1, 2]), torch.randn(2, 4), beam=0.0).num_arcs == 2


def test_graph_without_nodes_has_no_path():
    """viterbi_align(Graph(), ...) raised an IndexError; like dense_score it finds no path."""
    emissions = torch.randn(3, 4)
    alignment = viterbi_align(gtn_py.Graph(), emissions)
    assert alignment.scores.item() == -math.inf
    assert alignment.labels.tolist() == [-1, -1, -1] and alignment.path.num_nodes == 0
    assert dense_score(gtn_py.Graph(), emissions).item() == -math.inf


def test_empty_batch():
    """B = 0 returned NaN (mean) or crashed: totals and 'none'/'sum' losses are empty or 0 and
    can backward; a mean over nothing is an error (torch refuses an empty batch altogether)."""
    emissions = torch.zeros(0, 5, 4, requires_grad=True)
    for graphs in (gtn_py.string_graph([1]), []):
        assert dense_score(graphs, emissions).shape == (0,)
        assert viterbi_align(graphs, emissions).scores.shape == (0,)
    log_probs = torch.zeros(5, 0, 4, requires_grad=True)
    targets, no_lengths = torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    assert gtn_py.ctc_loss(log_probs, targets, no_lengths, no_lengths, reduction="none").shape == (0,)
    total = gtn_py.ctc_loss(log_probs, targets, no_lengths, no_lengths, reduction="sum")
    assert total.item() == 0.0
    total.backward()
    with pytest.raises(InvalidGraphError, match="empty batch"):
        gtn_py.ctc_loss(log_probs, targets, no_lengths, no_lengths, reduction="mean")


# ---------------------------------------------------------------------- CTC in torch's terms
LOG_PROBS = torch.randn(6, 2, 5).log_softmax(-1)


@pytest.mark.parametrize("targets, target_lengths, blank, error, match", [
    (torch.tensor([[1, 2, 3, 4], [2, 3, 1, 7]]), [4, 4], 0, LabelError,
     r"^targets\[1, 3\] = 7 is outside the 5 classes of log_probs \(0..4\)$"),
    (torch.tensor([1, 2, 3, 4, 2, 9]), [4, 2], 0, LabelError, r"^targets\[5\] = 9 is outside the 5 classes"),
    ([[1, 2], [3, -1]], [2, 2], 0, LabelError, r"^targets\[1\]\[1\] = -1 is outside the 5 classes"),
    (torch.tensor([[1, 2], [3, 0]]), [2, 2], 0, LabelError, r"^targets\[1, 1\] = 0 is the blank"),
    (torch.tensor([[1, 2], [3, 4]]), [2, 2], 4, LabelError, r"^targets\[1, 1\] = 4 is the blank \(blank = 4\)"),
    (torch.tensor([[1, 2], [3, 4]]), [2, 2], -1, LabelError,
     r"^blank = -1 is outside the 5 classes of log_probs \(0..4\)$"),
    (torch.tensor([[1, 2], [3, 4]]), [2, 2], 5, LabelError, r"^blank = 5 is outside the 5 classes"),
    (torch.tensor([[1, 2], [3, 4]]), [2, 3], 0, InvalidGraphError,
     r"^target_lengths\[1\] = 3 exceeds the padded width S = 2 of targets$"),
    (torch.tensor([[1, 2], [3, 4]]), [2, -1], 0, InvalidGraphError, r"^target_lengths\[1\] = -1 is negative$"),
    (torch.tensor([[1, 2], [3, 4]]), [1.5, 2], 0, InvalidGraphError,
     r"^target_lengths\[0\] = 1.5 is not a whole number$"),
    (torch.tensor([[1, 2], [3, 4]]), [2, 2, 2], 0, InvalidGraphError,
     r"^3 target_lengths for a batch of 2 in log_probs$"),
    (torch.tensor([1, 2, 3]), [2, 2], 0, InvalidGraphError,
     r"^target_lengths sum to 4 but the concatenated targets hold 3 labels$"),
    (torch.tensor([[1.0, 2.0], [3.0, 4.0]]), [2, 2], 0, gtn_py.DtypeMismatchError, "targets must be integer"),
])
def test_ctc_target_and_blank_errors_name_the_arguments(targets, target_lengths, blank, error, match):
    """Out-of-range targets and blanks were reported as 'arc N: ilabel K has no emission column'
    of an internal graph, and blank=-1 as a raw indexing error."""
    with pytest.raises(error, match=match):
        gtn_py.ctc_loss(LOG_PROBS, targets, [6, 6], target_lengths, blank=blank)


@pytest.mark.parametrize("input_lengths, match", [
    ([6, 7], r"^input_lengths\[1\] = 7 is outside \[0, 6\]"),
    ([6, 2.5], r"^input_lengths\[1\] = 2.5 is not a whole number$"),
    ([6], r"^1 input_lengths for 2 sequences$"),
])
def test_ctc_input_length_errors_name_the_argument(input_lengths, match):
    with pytest.raises(InvalidGraphError, match=match):
        gtn_py.ctc_loss(LOG_PROBS, torch.tensor([[1, 2], [3, 4]]), input_lengths, [2, 2])


def test_ctc_reduction_and_graph_loss_errors():
    with pytest.raises(InvalidGraphError, match="reduction must be 'none', 'mean' or 'sum', not 'avg'"):
        gtn_py.ctc_loss(LOG_PROBS, torch.tensor([[1, 2], [3, 4]]), [6, 6], [2, 2], reduction="avg")
    graphs = [gtn_py.string_graph([1, 2]), gtn_py.string_graph([3, 8])]
    with pytest.raises(LabelError, match=r"^target graph arc 3: label 8 is outside the 5 classes of log_probs"):
        gtn_py.ctc_graph_loss(LOG_PROBS, graphs, [6, 6])
    with pytest.raises(LabelError, match=r"^blank = 7 is outside the 5 classes of log_probs"):
        gtn_py.ctc_graph_loss(LOG_PROBS, graphs[:1] * 2, [6, 6], blank=7)


def test_ctc_valid_arguments_match_torch():
    """The checks reject nothing torch's contract allows: padded and concatenated targets,
    lengths as lists or tensors, the unbatched form, a blank other than 0."""
    padded = torch.tensor([[1, 2, 2], [3, 4, 0]])
    for targets, lengths in ((padded, torch.tensor([3, 2])), (torch.tensor([1, 2, 2, 3, 4]), torch.tensor([3, 2]))):
        for blank in (0, 4):
            if blank == 4:
                targets = torch.where(targets == 4, torch.ones_like(targets), targets)
            want = F.ctc_loss(LOG_PROBS, targets, torch.tensor([6, 5]), lengths, blank=blank, reduction="none")
            for given in ((torch.tensor([6, 5]), lengths), ([6, 5], lengths.tolist())):
                got = gtn_py.ctc_loss(LOG_PROBS, targets, *given, blank=blank, reduction="none")
                assert torch.allclose(got, want, atol=1e-5)
    want = F.ctc_loss(LOG_PROBS[:, 0], torch.tensor([1, 2]), torch.tensor(6), torch.tensor(2))
    assert torch.allclose(gtn_py.ctc_loss(LOG_PROBS[:, 0], torch.tensor([1, 2]), 6, 2), want, atol=1e-5)
    with pytest.raises(LabelError, match=r"^targets\[1\] = 9 is outside the 5 classes"):  # unbatched: [S]
        gtn_py.ctc_loss(LOG_PROBS[:, 0], torch.tensor([1, 9]), 6, 2)


def test_ctc_decode_blank_outside_classes_raises():
    """ctc_decode(..., blank=9) with 5 classes decoded as if there were no blank."""
    emissions = torch.randn(1, 4, 5)
    for grammar in (None, gtn_py.string_graph([1, 2])):
        with pytest.raises(LabelError, match=r"^blank = 9 is outside the 5 classes of emissions \(0..4\)$"):
            gtn_py.ctc_decode(emissions, grammar=grammar, blank=9)
    with pytest.raises(InvalidGraphError, match="emissions must be a floating-point tensor"):
        gtn_py.ctc_greedy_decode(emissions[0])


# ---------------------------------------------------------------------- CTC topology and grammar epsilons
def _ctc_brute_force(emissions: torch.Tensor, accepts) -> float:
    """log of the sum over frame label sequences whose CTC collapse (blank 0) ``accepts``."""
    num_frames, num_classes = emissions.shape
    scores = []
    for frames in itertools.product(range(num_classes), repeat=num_frames):
        collapsed = [c for i, c in enumerate(frames) if c != 0 and (i == 0 or c != frames[i - 1])]
        if accepts(collapsed):
            scores.append(sum(float(emissions[t, c]) for t, c in enumerate(frames)))
    return math.log(sum(math.exp(s) for s in scores))


def test_ctc_decoding_graph_of_a_grammar_with_epsilons():
    """``closure(string_graph([1, 2]))`` has epsilon arcs; composed as is with the CTC topology,
    they become label-0 arcs that dense intersection reads as blank frames (-4.268 against
    -2.914 in the report). ``ctc_expand`` refuses such a grammar, telling to remove epsilons;
    with them removed, both decoding graphs give the total over every label sequence."""
    emissions = torch.randn(5, 3, dtype=torch.float64).log_softmax(-1)
    grammar = gtn_py.closure(gtn_py.string_graph([1, 2])).to(dtype=torch.float64)
    with pytest.raises(LabelError, match="epsilon-free"):
        gtn_py.ctc_expand(grammar)
    want = _ctc_brute_force(emissions, lambda s: len(s) % 2 == 0 and s == [1, 2] * (len(s) // 2))
    epsilon_free = gtn_py.remove_epsilon(grammar)
    topology = gtn_py.ctc_topology(3, dtype=torch.float64)
    for decoding in (gtn_py.compose(topology, epsilon_free), gtn_py.ctc_expand(epsilon_free)):
        assert dense_score(decoding, emissions).item() == pytest.approx(want, abs=1e-9)


# ---------------------------------------------------------------------- every bad argument is a GraphError
BAD_CALLS = {
    "graphs of ints": lambda: dense_score([1, 2], torch.randn(2, 3, 4)),
    "graphs None": lambda: dense_score(None, torch.randn(3, 4)),
    "emissions a string": lambda: dense_score(gtn_py.string_graph([1]), "x"),
    "lengths a string": lambda: dense_score(gtn_py.string_graph([1]), torch.randn(3, 4), "ab"),
    "compose with an int": lambda: gtn_py.compose(gtn_py.string_graph([1]), 3),
    "minimize delta a string": lambda: gtn_py.minimize(gtn_py.string_graph([1]), delta="x"),
    "targets None": lambda: gtn_py.ctc_loss(LOG_PROBS, None, [6, 6], [2, 2]),
    "target_lengths None": lambda: gtn_py.ctc_loss(LOG_PROBS, torch.tensor([[1, 2], [3, 4]]), [6, 6], None),
    "blank a float": lambda: gtn_py.ctc_loss(LOG_PROBS, torch.tensor([[1, 2], [3, 4]]), [6, 6], [2, 2], blank=0.5),
    "targets 3-D": lambda: gtn_py.ctc_loss(LOG_PROBS, torch.zeros(1, 2, 2, dtype=torch.long), [6, 6], [2, 2]),
    "ctc_expand blank -1": lambda: gtn_py.ctc_expand(gtn_py.string_graph([1]), blank=-1),
    "ctc_topology blank 5 of 3": lambda: gtn_py.ctc_topology(3, blank=5),
    "crf fractional lengths": lambda: gtn_py.criteria.crf_log_partition(torch.randn(2, 5, 3), torch.zeros(3, 3),
                                                                        torch.tensor([1.5, 2.0])),
    "dtw gamma NaN": lambda: gtn_py.criteria.dtw_distance(torch.rand(3, 4), gamma=math.nan),
    "local distances of other dims": lambda: gtn_py.criteria.local_distances(torch.rand(3, 4), torch.rand(3, 5)),
    "loss of a non-graph": lambda: gtn_py.losses.most_offending_incorrect(1, gtn_py.string_graph([1])),
    "nll beta NaN": lambda: gtn_py.losses.nll(gtn_py.string_graph([1]), gtn_py.string_graph([1]), beta=math.nan),
    "nll reduction": lambda: gtn_py.losses.nll(gtn_py.string_graph([1]), gtn_py.string_graph([1]), reduction="x"),
    "hinge margin a string": lambda: gtn_py.losses.hinge(gtn_py.string_graph([1]), gtn_py.string_graph([1]),
                                                         margin="x"),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_arguments_raise_graph_errors(call):
    with pytest.raises(GraphError):
        call()
