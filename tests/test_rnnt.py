"""rnnt_loss: equal to a brute-force sum over all alignments (float64), gradients by gradcheck,
torchaudio's argument conventions (fused log-softmax, clamp, reductions), clear errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gtn_py as gtn


def brute_force(log_probs: torch.Tensor, target: list[int], frames: int, blank: int) -> float:
    """-log of the sum over every alignment: the U labels placed among the frames (several per
    frame allowed, in order), each frame closed by a blank, the last one's included."""
    total = []
    labels = len(target)
    # An alignment: how many labels are emitted at each frame before its blank (sums to U).
    for counts in itertools.product(range(labels + 1), repeat=frames):
        if sum(counts) != labels:
            continue
        score, u = 0.0, 0
        for t, c in enumerate(counts):
            for _ in range(c):
                score += float(log_probs[t, u, target[u]])
                u += 1
            score += float(log_probs[t, u, blank])
        total.append(score)
    peak = max(total)
    return -(peak + math.log(sum(math.exp(s - peak) for s in total)))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(0, 3), st.integers(2, 4), st.integers(0, 2**31 - 1), st.booleans())
def test_equals_the_sum_over_alignments(frames, labels, classes, seed, blank_last):
    generator = torch.Generator().manual_seed(seed)
    blank = classes - 1 if blank_last else 0
    choices = [c for c in range(classes) if c != blank]
    target = [choices[int(i)] for i in torch.randint(len(choices), (labels,), generator=generator)]
    logits = torch.randn(1, frames + 1, labels + 2, classes, generator=generator, dtype=torch.float64)  # padded
    padded = torch.tensor([target + [choices[0]]], dtype=torch.long)
    got = gtn.rnnt_loss(logits, padded, [frames], [labels], blank=blank, reduction="none")
    assert float(got[0]) == pytest.approx(brute_force(logits[0].log_softmax(-1), target, frames, blank), abs=1e-9)


def test_gradcheck_and_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2], [3, 0]])
    assert torch.autograd.gradcheck(lambda x: gtn.rnnt_loss(x, targets, [3, 2], [2, 1], reduction="none"), (logits,))
    each = gtn.rnnt_loss(logits, targets, [3, 2], [2, 1], reduction="none").detach()
    assert float(gtn.rnnt_loss(logits, targets, [3, 2], [2, 1]).detach()) == pytest.approx(float(each.mean()))
    assert float(gtn.rnnt_loss(logits, targets, [3, 2], [2, 1], reduction="sum").detach()) == \
        pytest.approx(float(each.sum()))
    second = gtn.rnnt_loss(logits[1:, :2, :2], targets[1:, :1], [2], [1], reduction="none")
    assert float(second[0]) == pytest.approx(float(each[1]))  # padding changes nothing


def test_log_probs_given_and_clamped_gradients():
    logits = torch.randn(1, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2]])
    fused = gtn.rnnt_loss(logits, targets, [3], [2])
    given_log_probs = gtn.rnnt_loss(logits.log_softmax(-1), targets, [3], [2], fused_log_softmax=False)
    assert float(fused) == pytest.approx(float(given_log_probs))
    log_probs = (logits * 10).log_softmax(-1).detach().requires_grad_()
    gtn.rnnt_loss(log_probs, targets, [3], [2], fused_log_softmax=False, clamp=0.1).backward()
    assert float(log_probs.grad.abs().max()) <= 0.1 + 1e-12


def test_the_lattice_is_a_graph_whose_best_path_is_an_alignment():
    log_probs = torch.randn(1, 3, 3, 4, dtype=torch.float64).log_softmax(-1)
    lattice = gtn.rnnt_lattice(log_probs, torch.tensor([[1, 2]]), [3], [2])
    assert lattice.num_nodes == 9 and lattice.num_arcs == 6 + 6  # 3 x 3 grid: 6 blank and 6 label arcs
    best = gtn.viterbi_path(lattice)
    emitted = [int(x) for x in best.ilabel if int(x) != 0]
    assert emitted == [1, 2] and int((best.ilabel == 0).sum()) == 2  # and the final blank closes frame 3


@pytest.mark.parametrize("call, error, message", [
    (lambda lp: gtn.rnnt_loss(lp, torch.tensor([[0, 1]]), [3], [2]), gtn.LabelError, "not a label"),
    (lambda lp: gtn.rnnt_loss(lp, torch.tensor([[1, 2]]), [0], [2]), gtn.InvalidGraphError, "at least one frame"),
    (lambda lp: gtn.rnnt_loss(lp, torch.tensor([[1, 2]]), [4], [2]), gtn.InvalidGraphError, "outside"),
    (lambda lp: gtn.rnnt_loss(lp, torch.tensor([[1, 2]]), [3], [2], blank=7), gtn.LabelError, "blank = 7"),
    (lambda lp: gtn.rnnt_loss(lp[0], torch.tensor([[1, 2]]), [3], [2]), gtn.ArgumentValueError, "4 dimensions"),
])
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call(torch.randn(1, 3, 3, 4))


def test_a_target_graph_sums_its_transcriptions_each_with_its_weight():
    """A trie of "1 2" (weight -0.3) and "1 3" (weight -1.1): the loss is -log of the weighted sum
    of each transcription's probability, the joiner read at the trie state of each prefix."""
    generator = torch.Generator().manual_seed(3)
    frames, classes = 3, 4
    log_probs = torch.randn(1, frames, 4, classes, generator=generator, dtype=torch.float64).log_softmax(-1)
    trie = gtn.Graph.from_arcs(4, [0, 1, 1], [1, 2, 3], [1, 2, 3], [1, 2, 3], [0.0, -0.3, -1.1],
                               start=[0], accept=[2, 3], dtype=torch.float64)
    paths = {(1, 2): ([0, 1, 2], -0.3), (1, 3): ([0, 1, 3], -1.1)}
    want = -math.log(sum(math.exp(-brute_force(log_probs[0][:, states], list(labels), frames, 0) + weight)
                         for labels, (states, weight) in paths.items()))
    got = gtn.rnnt_graph_loss(log_probs, trie, [frames], fused_log_softmax=False, reduction="none")
    assert float(got[0]) == pytest.approx(want, abs=1e-9)


def test_graph_loss_gradcheck_in_the_joiner_and_the_graph_weights():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    arc_weights = torch.tensor([0.0, -0.3, -1.1], dtype=torch.float64, requires_grad=True)

    def loss(x, w):
        trie = gtn.Graph.from_arcs(4, [0, 1, 1], [1, 2, 3], [1, 2, 3], [1, 2, 3], w, start=[0], accept=[2, 3],
                                   dtype=torch.float64)
        return gtn.rnnt_graph_loss(x, [trie, gtn.string_graph([4]).to(dtype=torch.float64)], [3, 2],
                                   reduction="none")

    assert torch.autograd.gradcheck(loss, (logits, arc_weights))


def test_a_lexicon_transducers_words_come_out_of_the_best_alignment():
    """Letters in, words out: the lattice of a two-word lexicon keeps the words on its output side."""
    lexicon = gtn.Graph.from_arcs(4, [0, 1, 0, 3], [1, 2, 3, 2], [1, 2, 2, 1], [0, 7, 0, 8],
                                  start=[0], accept=[2], dtype=torch.float64)  # "1 2" -> 7, "2 1" -> 8
    log_probs = torch.full((1, 2, 4, 3), -10.0, dtype=torch.float64)
    log_probs[0, 0, 0, 2] = log_probs[0, 0, 3, 1] = log_probs[0, 0, 2, 0] = log_probs[0, 1, 2, 0] = 0.0  # "2 1"
    best = gtn.viterbi_path(gtn.rnnt_graph_lattice(log_probs, lexicon, [2]))
    assert [int(x) for x in best.olabel if int(x)] == [8]


def test_graph_lattice_errors_name_the_problem():
    log_probs = torch.randn(1, 3, 2, 4).log_softmax(-1)
    with pytest.raises(gtn.InvalidGraphError, match="has 3 nodes but log_probs has 2 state columns"):
        gtn.rnnt_graph_lattice(log_probs, gtn.string_graph([1, 2]), [3])
    with pytest.raises(gtn.LabelError, match="reads 0, which is not a label"):
        gtn.rnnt_graph_lattice(log_probs, gtn.string_graph([0]), [3])
    with pytest.raises(gtn.InvalidGraphError, match="2 target graphs for 1 sequences"):
        gtn.rnnt_graph_lattice(log_probs, [gtn.string_graph([1])] * 2, [3])


class _ToyTransducer:
    """A prediction network (an LSTM cell over label embeddings, state (h, c) with the batch first)
    and a joiner (tanh of the sum, then a linear map), random but fixed."""

    def __init__(self, classes: int = 5, width: int = 8, seed: int = 0):
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(classes, width)
        self.cell = torch.nn.LSTMCell(width, width)
        self.out = torch.nn.Linear(width, classes)

    def predictor(self, labels, state):
        h, c = self.cell(self.embed(labels), state)
        return h, (h, c)

    def joiner(self, frames, outputs):
        return self.out(torch.tanh(frames + outputs))


def _greedy_one_at_a_time(model, frames, max_symbols, blank=0):
    """The same decoding, one sequence and one step at a time: an independent reference."""
    labels = []
    output, state = model.predictor(torch.tensor([blank]), None)
    with torch.no_grad():
        for t in range(frames.shape[0]):
            for _ in range(max_symbols):
                best = int(model.joiner(frames[t:t + 1], output).argmax(-1))
                if best == blank:
                    break
                labels.append(best)
                output, state = model.predictor(torch.tensor([best]), state)
    return labels


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_greedy_decoding_a_batch_equals_decoding_each_sequence(max_symbols):
    model = _ToyTransducer()
    encoder_out = 2 * torch.randn(4, 9, 8, generator=torch.Generator().manual_seed(1))
    lengths = [9, 5, 1, 7]
    got = gtn.rnnt_greedy_decode(encoder_out, lengths, model.predictor, model.joiner,
                                 max_symbols_per_frame=max_symbols)
    want = [_greedy_one_at_a_time(model, encoder_out[b, :n], max_symbols) for b, n in enumerate(lengths)]
    assert got == want and any(got)


def test_greedy_decoding_stops_at_max_symbols_per_frame():
    """A joiner that ignores the predictor and always prefers label 2 emits it at most twice a frame."""
    def predictor(labels, state):
        return torch.zeros(labels.shape[0], 1), None

    def joiner(frames, outputs):
        return torch.tensor([[0.0, 0.0, 1.0]]).expand(frames.shape[0], 3)

    assert gtn.rnnt_greedy_decode(torch.zeros(2, 3, 1), [3, 1], predictor, joiner,
                                  max_symbols_per_frame=2) == [[2] * 6, [2] * 2]
    with pytest.raises(gtn.ArgumentValueError, match="max_symbols_per_frame is 0"):
        gtn.rnnt_greedy_decode(torch.zeros(1, 3, 1), None, predictor, joiner, max_symbols_per_frame=0)


def test_greedy_decoding_checks_the_blank_against_the_joiner():
    def predictor(labels, state):  # any label: the start symbol is the blank, whatever it is
        return torch.zeros(labels.shape[0], 5), state

    with pytest.raises(gtn.LabelError, match="blank = 7 is outside the 5 classes of the joiner"):
        gtn.rnnt_greedy_decode(torch.zeros(1, 2, 5), None, predictor, lambda f, o: f + o, blank=7)
