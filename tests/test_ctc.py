"""CTC on the dense intersection: equal to torch's ctc_loss, target graphs, decoding, training."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import logsumexp, relation
from strategies import graphs as random_graphs

from gtn_py import DtypeMismatchError, Graph, LabelError, closure, compose, remove_epsilon, string_graph
from gtn_py.criteria import (
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
from gtn_py.ops import dense


def both(logits, targets, input_lengths, target_lengths, **kw):
    """(gtn_py, torch) losses and their gradients w.r.t. the logits before log_softmax (torch's
    gradient w.r.t. log_probs assumes a log_softmax; see gtn_py.criteria.ctc)."""
    out = []
    for fn in (ctc_loss, F.ctc_loss):
        x = logits.detach().clone().requires_grad_()
        loss = fn(x.log_softmax(-1), targets, input_lengths, target_lengths, **kw)
        grad, = torch.autograd.grad(loss.sum(), x)
        out.append((loss.detach(), grad))
    return out


SHAPES = [(1, 1, 2, 1), (5, 1, 3, 2), (12, 4, 5, 4), (30, 3, 8, 10), (50, 8, 20, 12), (7, 6, 4, 5)]


@pytest.mark.parametrize("use_kernels", [True, False], ids=["kernels", "tensors"])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_torch_float64(shape, reduction, use_kernels, choose_kernels):
    choose_kernels("auto" if use_kernels else "torch")
    T, B, V, S = shape
    gen = torch.Generator().manual_seed(hash(shape) % 1000)
    logits = torch.randn(T, B, V, dtype=torch.float64, generator=gen)
    targets = torch.randint(1, V, (B, S), generator=gen)
    targets[0, 1:] = targets[0, 0]                       # repeated labels
    input_lengths = torch.randint(1, T + 1, (B,), generator=gen)
    input_lengths[0] = T
    target_lengths = torch.randint(0, S + 1, (B,), generator=gen)
    target_lengths[-1] = 0                                # an empty target
    for zero_infinity in (False, True):
        (mine, g_mine), (ref, g_ref) = both(logits, targets, input_lengths, target_lengths,
                                            reduction=reduction, zero_infinity=zero_infinity)
        assert mine.shape == ref.shape
        assert torch.allclose(mine, ref, rtol=1e-5, atol=1e-5, equal_nan=True)
        if torch.isfinite(ref).all():
            assert torch.allclose(g_mine, g_ref, atol=1e-5)


def test_concatenated_targets_and_module():
    gen = torch.Generator().manual_seed(7)
    T, B, V = 15, 3, 6
    logits = torch.randn(T, B, V, dtype=torch.float64, generator=gen)
    target_lengths = torch.tensor([3, 0, 5])
    flat = torch.randint(1, V, (int(target_lengths.sum()),), generator=gen)
    lp = logits.log_softmax(-1)
    input_lengths = torch.tensor([15, 10, 12])
    want = F.ctc_loss(lp, flat, input_lengths, target_lengths)
    assert torch.allclose(ctc_loss(lp, flat, input_lengths, target_lengths), want)
    assert torch.allclose(CTCLoss()(lp, flat, (15, 10, 12), target_lengths), want)
    # unbatched input, as torch accepts it
    one = F.ctc_loss(lp[:, 0], flat[:3], torch.tensor(15), torch.tensor(3), reduction="none")
    assert torch.allclose(ctc_loss(lp[:, 0], flat[:3], torch.tensor(15), torch.tensor(3), reduction="none"), one)


def test_blank_elsewhere_matches_torch():
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(10, 2, 5, dtype=torch.float64, generator=gen)
    targets = torch.tensor([[0, 1, 1], [3, 2, 0]])
    (mine, gm), (ref, gr) = both(logits, targets, (10, 9), (3, 3), blank=4)
    assert torch.allclose(mine, ref) and torch.allclose(gm, gr, atol=1e-8)


def test_impossible_targets():
    logits = torch.randn(4, 2, 5, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 3, 4, 1], [1, 1, 1, 1, 1]])
    lengths = torch.tensor([5, 3])  # 5 labels in 4 frames; 1 1 1 needs 5 frames
    for zero_infinity in (False, True):
        x = logits.clone().requires_grad_()
        loss = ctc_loss(x.log_softmax(-1), targets, [4, 4], lengths, reduction="none", zero_infinity=zero_infinity)
        want = 0.0 if zero_infinity else float("inf")
        assert loss.tolist() == [want, want]
        loss = ctc_loss(x.log_softmax(-1), targets, [4, 4], lengths, reduction="sum", zero_infinity=zero_infinity)
        grad, = torch.autograd.grad(loss, x)
        assert torch.all(grad == 0)  # zero, not NaN


def test_float32_accurate_at_2000_frames():
    gen = torch.Generator().manual_seed(9)
    T, B, V, S = 2000, 2, 20, 200
    logits = torch.randn(T, B, V, generator=gen)
    targets = torch.randint(1, V, (B, S), generator=gen)
    lengths = ((T, 1700), (S, 150))
    (ref64, g64), _ = both(logits.double(), targets, *lengths, reduction="sum")
    (mine, g_mine), (torch32, g_torch32) = both(logits, targets, *lengths, reduction="sum")
    err_mine = float((mine.double() - ref64).abs() / ref64.abs())
    err_torch = float((torch32.double() - ref64).abs() / ref64.abs())
    assert err_mine < max(1e-5, 2 * err_torch)
    grad_err = float((g_mine.double() - g64).abs().max())
    grad_err_torch = float((g_torch32.double() - g64).abs().max())
    assert grad_err < max(1e-3, 2 * grad_err_torch)


def _arc_set(g, node_name):
    """A graph's arcs, start and final weights as sets keyed by ``node_name(node)``."""
    name = [node_name(n) for n in range(g.num_nodes)]
    arcs = {(name[int(s)], name[int(d)], int(i), int(o), float(w))
            for s, d, i, o, w in zip(g.src, g.dst, g.ilabel, g.olabel, g.weights)}
    ends = {(name[n], float(g.start_weights[n]), float(g.final_weights[n])) for n in range(g.num_nodes)}
    return arcs, ends, sorted(name)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 3), max_size=6), min_size=1, max_size=4), st.sampled_from([0, 4]))
def test_ctc_graph_is_the_expansion_of_the_label_sequence(targets, blank):
    """The closed-form CTC graphs against the general expansion of the linear acceptors, node for
    node (blank state of linear node q = node 2q, label state of arc i = node 2i + 1)."""
    got = ctc_graph(targets, blank=blank)
    want = ctc_expand(label_sequences(targets), blank)
    assert got.num_graphs == want.num_graphs == len(targets)
    assert torch.equal(torch.bincount(got.node_graph, minlength=len(targets)),
                       torch.bincount(want.node_graph, minlength=len(targets)))
    offsets = [0]
    for t in targets:
        offsets.append(offsets[-1] + 2 * len(t) + 1)

    def natural(n):
        b = int(want.node_graph[n])
        k = n - offsets[b]
        size = len(targets[b]) + 1
        return (b, 2 * k if k < size else 2 * (k - size) + 1)

    def own(n):
        b = int(got.node_graph[n])
        return (b, n - offsets[b])

    assert _arc_set(got, own) == _arc_set(want, natural)
    # grouped by source node, as documented
    assert bool((got.src[1:] >= got.src[:-1]).all())


def test_ctc_graph_shape():
    g = ctc_graph(torch.tensor([[1, 2, 2], [3, 0, 0]]), [3, 1])
    assert g.num_graphs == 2
    sizes = torch.bincount(g.node_graph).tolist()
    assert sizes == [7, 3]  # 2 S + 1 nodes
    with pytest.raises(LabelError):
        ctc_graph(torch.tensor([[1, 0]]), [2])  # the blank inside a target


def test_wrong_dtypes_raise():
    """Float targets were truncated to labels (1.5 read as 1); integer log-probabilities failed
    deep inside with an untyped RuntimeError."""
    log_probs = torch.randn(6, 1, 4).log_softmax(-1)
    with pytest.raises(DtypeMismatchError, match="targets must be integer labels"):
        ctc_loss(log_probs, torch.tensor([[1.5, 2.0]]), [6], [2])
    with pytest.raises(DtypeMismatchError, match="log_probs must be floating point"):
        ctc_loss(log_probs.long(), torch.tensor([[1, 2]]), [6], [2])


def test_target_graph_with_alternatives():
    """CTC against a graph accepting two transcriptions is the log-sum of the two CTC totals."""
    gen = torch.Generator().manual_seed(10)
    logits = torch.randn(9, 1, 5, dtype=torch.float64, generator=gen)
    lp = logits.log_softmax(-1)
    # accepts "1 2" (weight -0.5) and "3" (weight -1.0)
    alternatives = Graph.from_arcs(3, [0, 1, 0], [1, 2, 2], [1, 2, 3], weights=[-0.5, 0.0, -1.0],
                                   start=[0], accept=[2], dtype=torch.float64)
    got = ctc_graph_loss(lp, [alternatives], [9], reduction="none")
    first = F.ctc_loss(lp, torch.tensor([[1, 2]]), [9], [2], reduction="none") + 0.5
    second = F.ctc_loss(lp, torch.tensor([[3]]), [9], [1], reduction="none") + 1.0
    want = -torch.logaddexp(-first, -second)
    assert torch.allclose(got, want)
    with pytest.raises(LabelError):
        ctc_expand(Graph.from_arcs(2, [0], [1], [0], start=[0], accept=[1]))  # epsilon / blank arc


def test_greedy_and_graph_decoding():
    V = 5
    frames = [0, 1, 1, 0, 1, 2, 2, 0, 3]            # -> 1 1 2 3
    emissions = torch.full((1, len(frames), V), -5.0)
    emissions[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    assert ctc_greedy_decode(emissions) == [[1, 1, 2, 3]]
    assert ctc_greedy_decode(emissions, [5]) == [[1, 1]]
    assert ctc_decode(emissions, grammar=None) == [[1, 1, 2, 3]]
    # with no grammar constraint, the CTC topology's best path is the greedy one
    assert viterbi_decode(ctc_topology(V), emissions) == [[1, 1, 2, 3]]
    # a grammar allowing only "1 2 3" or "2 2": decoding picks the better one allowed
    grammar = Graph.from_arcs(4, [0, 1, 2, 0, 3], [1, 2, 3, 3, 2], [1, 2, 3, 2, 2], start=[0], accept=[3, 2])
    assert ctc_decode(emissions, grammar=grammar) == [[1, 2, 3]]
    # a lexicon-like transducer: the output labels are returned
    words = Graph.from_arcs(3, [0, 1], [1, 2], [1, 2], [7, 0], start=[0], accept=[2])
    assert ctc_decode(emissions[:, :6], grammar=words) == [[7]]


def test_tiny_network_learns_synthetic_sequences():
    """A tiny convolutional network trained with gtn_py's CTC loss learns to transcribe synthetic
    sequences (each label is a noisy code vector held for 3 frames, then a gap) to >= 90 %
    sequence accuracy in 120 steps (a few seconds)."""
    torch.manual_seed(0)
    V, T, B, feature = 5, 12, 16, 8
    codebook = torch.randn(V, feature)

    def batch():
        lengths = torch.randint(1, 4, (B,))
        targets = torch.randint(1, V, (B, 3))
        x = torch.randn(B, T, feature) * 0.3
        for b in range(B):
            for k in range(int(lengths[b])):
                x[b, 4 * k: 4 * k + 3] += codebook[targets[b, k]]
        return x.transpose(1, 2), targets, lengths

    model = torch.nn.Sequential(torch.nn.Conv1d(feature, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv1d(32, V, 3, padding=1))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    start = time.perf_counter()
    for _ in range(120):
        x, targets, lengths = batch()
        log_probs = model(x).log_softmax(1).permute(2, 0, 1)   # [T, B, V]
        loss = ctc_loss(log_probs, targets, [T] * B, lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, targets, lengths = batch()
    with torch.no_grad():
        decoded = ctc_greedy_decode(model(x).transpose(1, 2))
    correct = sum(d == targets[b, : int(lengths[b])].tolist() for b, d in enumerate(decoded))
    assert correct / B >= 0.9, f"sequence accuracy {correct}/{B} after {time.perf_counter() - start:.1f}s"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_torch():
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(40, 4, 7, dtype=torch.float64, generator=gen).cuda().requires_grad_()
    targets = torch.randint(1, 7, (4, 6), generator=gen).cuda()
    il, tl = torch.tensor([40, 30, 20, 10]), torch.tensor([6, 5, 3, 0])
    mine = ctc_loss(logits.log_softmax(-1), targets, il, tl)
    ref = F.ctc_loss(logits.log_softmax(-1), targets, il, tl)
    assert torch.allclose(mine, ref)
    g1, = torch.autograd.grad(mine, logits)
    g2, = torch.autograd.grad(ref, logits)
    assert torch.allclose(g1, g2, atol=1e-6)


def _collapse(frames, blank=0):
    """The CTC transcription of a frame labelling: repeats merged, blanks dropped."""
    out, previous = [], None
    for c in frames:
        if c != previous and c != blank:
            out.append(c)
        previous = c
    return tuple(out)


@settings(max_examples=40, deadline=None)
@given(random_graphs(max_nodes=4, max_arcs=6, num_labels=2, acyclic=True, acceptor=True), st.integers(0, 2**31 - 1))
def test_ctc_decoding_graph_scores_every_alignment_of_a_grammar_with_epsilons(grammar, seed):
    """Against enumeration: the total over frame labellings whose collapse the grammar accepts,
    each weighted by the grammar (epsilon arcs read no frame)."""
    import itertools

    num_frames, num_labels = 4, 3
    emissions = torch.randn(num_frames, num_labels, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64).log_softmax(-1)
    weight_of_input = {}
    for (inputs, _), w in relation(grammar).items():
        weight_of_input[inputs] = logsumexp([weight_of_input.get(inputs, float("-inf")), w])
    want = logsumexp([sum(float(emissions[t, c]) for t, c in enumerate(frames)) + weight_of_input[_collapse(frames)]
                      for frames in itertools.product(range(num_labels), repeat=num_frames)
                      if _collapse(frames) in weight_of_input])
    got = float(dense.dense_score(ctc_decoding_graph(grammar, num_labels), emissions))
    if want == float("-inf"):
        assert got == want
    else:
        assert got == pytest.approx(want, abs=1e-9)


def test_ctc_decoding_graph_refuses_outputs_on_input_epsilons():
    word_on_epsilon = Graph.from_arcs(3, [0, 1], [1, 2], [0, 1], [7, 0], start=[0], accept=[2])
    with pytest.raises(LabelError, match="reads epsilon and writes 7"):
        ctc_decoding_graph(word_on_epsilon, 3)


def test_composing_the_topology_with_epsilon_arcs_reads_them_as_blank_frames():
    """Why ctc_decoding_graph exists: a plain composition keeps the grammar's epsilon arcs as
    input-label-0 arcs, which a dense intersection reads as blank frames."""
    grammar = closure(string_graph([1, 2], weights=[-0.3, -0.5])).to(dtype=torch.float64)
    emissions = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).log_softmax(-1)
    safe = dense.dense_score(ctc_decoding_graph(grammar, 3), emissions)
    assert float(safe) == pytest.approx(float(dense.dense_score(ctc_expand(remove_epsilon(grammar)), emissions)))
    naive = dense.dense_score(compose(ctc_topology(3, dtype=torch.float64), grammar), emissions)
    assert abs(float(naive) - float(safe)) > 0.05
