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
    assert float(second[0].detach()) == pytest.approx(float(each[1]))  # padding changes nothing


def test_log_probs_given_and_clamped_gradients():
    logits = torch.randn(1, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2]])
    fused = gtn.rnnt_loss(logits, targets, [3], [2])
    given_log_probs = gtn.rnnt_loss(logits.log_softmax(-1), targets, [3], [2], fused_log_softmax=False)
    assert float(fused.detach()) == pytest.approx(float(given_log_probs.detach()))
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


def _sequence_totals(model, frames, blank=0):
    """log P(sequence) under the one-label-per-frame topology, by enumerating every frame labelling
    (each frame blank or one label): an independent reference for beam search."""
    classes = model.out.out_features
    totals: dict[tuple[int, ...], list[float]] = {}
    with torch.no_grad():
        for labelling in itertools.product(range(classes), repeat=frames.shape[0]):
            score, emitted = 0.0, []
            output, state = model.predictor(torch.tensor([blank]), None)
            for t, choice in enumerate(labelling):
                score += float(model.joiner(frames[t:t + 1], output).log_softmax(-1)[0, choice])
                if choice != blank:
                    emitted.append(choice)
                    output, state = model.predictor(torch.tensor([choice]), state)
            totals.setdefault(tuple(emitted), []).append(score)
    return {seq: float(torch.logsumexp(torch.tensor(s, dtype=torch.float64), 0)) for seq, s in totals.items()}


def _grammar_score(grammar: gtn.Graph, sequence) -> float:
    """A deterministic acceptor's score of ``sequence`` (-inf if it is not accepted)."""
    state = int(torch.isfinite(grammar.start_weights).nonzero()[0, 0])
    score = float(grammar.start_weights[state])
    for label in sequence:
        arc = ((grammar.src == state) & (grammar.ilabel == label)).nonzero()
        if not arc.numel():
            return float("-inf")
        score += float(grammar.weights[int(arc[0, 0])])
        state = int(grammar.dst[int(arc[0, 0])])
    return score + float(grammar.final_weights[state])


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_beam_search_wide_enough_finds_the_most_probable_sequence(frames, seed):
    """With a beam as wide as the number of label sequences, beam search (hypotheses merged by
    sequence) returns the argmax of the enumerated sequence totals."""
    model = _ToyTransducer(classes=3, seed=seed % 1000)
    encoder_out = 2 * torch.randn(1, frames, 8, generator=torch.Generator().manual_seed(seed))
    totals = _sequence_totals(model, encoder_out[0])
    best = max(totals, key=totals.get)
    got = gtn.rnnt_beam_search(encoder_out, None, model.predictor, model.joiner, beam=2 ** (frames + 1))
    assert got == [list(best)]


def test_beam_search_through_a_grammar_adds_its_weights_and_respects_it():
    """Label 1 may not follow label 1, label 2 costs 0.7, and a sequence must end after a 2."""
    model = _ToyTransducer(classes=3, seed=3)
    grammar = gtn.Graph.from_arcs(3, [0, 0, 1, 2, 2], [1, 2, 2, 1, 2], [1, 2, 2, 1, 2], [1, 2, 2, 1, 2],
                                  weights=[0.0, -0.7, -0.7, 0.0, -0.7], start=[0], accept=[2])
    generator = torch.Generator().manual_seed(5)
    for scale in (1.0, 2.5):
        for _ in range(4):
            encoder_out = 2 * torch.randn(1, 4, 8, generator=generator)
            totals = _sequence_totals(model, encoder_out[0])
            scored = {s: v + scale * _grammar_score(grammar, s) for s, v in totals.items()}
            best = max(scored, key=scored.get)
            got = gtn.rnnt_beam_search(encoder_out, None, model.predictor, model.joiner, beam=32,
                                       grammar=grammar, grammar_scale=scale)
            assert got == [list(best)] and math.isfinite(scored[best])


def test_beam_search_of_one_is_greedy_with_one_label_per_frame_and_a_batch_is_each_sequence():
    model = _ToyTransducer()
    encoder_out = 2 * torch.randn(4, 9, 8, generator=torch.Generator().manual_seed(1))
    lengths = [9, 5, 1, 7]
    greedy = gtn.rnnt_greedy_decode(encoder_out, lengths, model.predictor, model.joiner, max_symbols_per_frame=1)
    assert gtn.rnnt_beam_search(encoder_out, lengths, model.predictor, model.joiner, beam=1) == greedy
    batch = gtn.rnnt_beam_search(encoder_out, lengths, model.predictor, model.joiner, beam=5)
    alone = [gtn.rnnt_beam_search(encoder_out[b:b + 1, :n], None, model.predictor, model.joiner, beam=5)[0]
             for b, n in enumerate(lengths)]
    assert batch == alone and any(batch)


def test_beam_search_errors_name_the_problem():
    model = _ToyTransducer(classes=3)
    frames = torch.zeros(1, 2, 8)
    with pytest.raises(gtn.ArgumentValueError, match="beam is 0"):
        gtn.rnnt_beam_search(frames, None, model.predictor, model.joiner, beam=0)
    twice = gtn.Graph.from_arcs(2, [0, 0], [0, 1], [1, 1], [1, 1], start=[0], accept=[1])
    with pytest.raises(gtn.InvalidGraphError, match="two arcs reading label 1"):
        gtn.rnnt_beam_search(frames, None, model.predictor, model.joiner, grammar=twice)
    epsilon = gtn.Graph.from_arcs(2, [0], [1], [0], [0], start=[0], accept=[1])
    with pytest.raises(gtn.LabelError, match="remove_epsilon first"):
        gtn.rnnt_beam_search(frames, None, model.predictor, model.joiner, grammar=epsilon)
    with pytest.raises(gtn.LabelError, match="blank = 4 is outside the 3 classes"):
        gtn.rnnt_beam_search(frames, None, lambda labels, state: (torch.zeros(labels.shape[0], 8), state),
                             model.joiner, blank=4)
    with pytest.raises(gtn.ArgumentTypeError, match="joiner must be callable"):
        gtn.rnnt_beam_search(frames, None, model.predictor, None)


# ---------------------------------------------------------------- pruned RNN-T
def _random_problem(seed: int, batch: int = 3, frames: int = 6, labels: int = 4, classes: int = 5):
    generator = torch.Generator().manual_seed(seed)
    am = torch.randn(batch, frames, classes, generator=generator, dtype=torch.float64)
    lm = torch.randn(batch, labels + 1, classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(1, classes, (batch, labels), generator=generator)
    frame_counts = torch.randint(1, frames + 1, (batch,), generator=generator)
    frame_counts[0] = frames
    label_counts = torch.randint(0, labels + 1, (batch,), generator=generator)
    label_counts[0] = labels
    return am, lm, targets, frame_counts, label_counts


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_simple_loss_is_the_loss_of_the_summed_logits(seed):
    am, lm, targets, frames, labels = _random_problem(seed)
    simple = gtn.rnnt_loss_simple(am, lm, targets, frames, labels, reduction="none")
    full = gtn.rnnt_loss(am[:, :, None] + lm[:, None], targets, frames, labels, reduction="none")
    torch.testing.assert_close(simple, full, rtol=1e-9, atol=1e-9)


def test_simple_and_pruned_losses_gradcheck():
    am, lm, targets, frames, labels = _random_problem(7, batch=2, frames=4, labels=3, classes=4)
    am.requires_grad_()
    lm.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: gtn.rnnt_loss_simple(a, b, targets, frames, labels, reduction="sum"),
                                    (am, lm))
    ranges = gtn.rnnt_prune_ranges(am, lm, targets, frames, labels, s_range=2)
    logits = torch.randn(2, 4, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: gtn.rnnt_loss_pruned(x, targets, ranges, frames, labels, reduction="sum"), (logits,))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 6))
def test_pruned_loss_sums_the_alignments_inside_the_bands(seed, width):
    """Against the brute-force sum over alignments of the full joiner's log-probabilities with
    every cell outside the bands at -inf; equal to the exact loss when a band holds every u, and
    never below it."""
    am, lm, targets, frames, labels = _random_problem(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    encoder_out = torch.randn(3, 6, 4, generator=generator, dtype=torch.float64)
    predictor_out = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    weights = torch.randn(4, 5, generator=generator, dtype=torch.float64)

    def joiner(e, p):
        return torch.tanh(e + p) @ weights

    ranges = gtn.rnnt_prune_ranges(am, lm, targets, frames, labels, width)
    simple, same = gtn.rnnt_loss_simple(am.clone().requires_grad_(), lm, targets, frames, labels, s_range=width)
    assert torch.equal(same, ranges)  # the loss's own lattice gives the same bands
    pruned = gtn.rnnt_loss_pruned(joiner(*gtn.rnnt_prune(encoder_out, predictor_out, ranges, width)), targets, ranges,
                                  frames, labels, reduction="none")
    full_log_probs = joiner(encoder_out[:, :, None], predictor_out[:, None]).log_softmax(-1)
    exact = gtn.rnnt_loss(full_log_probs, targets, frames, labels, reduction="none", fused_log_softmax=False)
    for b in range(3):
        t_b, u_b = int(frames[b]), int(labels[b])
        u = torch.arange(5)
        inside = (u[None, :] >= ranges[b, :, None]) & (u[None, :] < ranges[b, :, None] + width)
        masked = torch.where(inside[:, :, None], full_log_probs[b], torch.tensor(float("-inf"), dtype=torch.float64))
        want = brute_force(masked, targets[b, :u_b].tolist(), t_b, blank=0)
        want = math.inf if math.isnan(want) else want  # no alignment inside the bands
        assert float(pruned[b]) == pytest.approx(want, rel=1e-9, abs=1e-9)
        assert float(pruned[b]) >= float(exact[b]) - 1e-9
        if width > u_b:
            assert float(pruned[b]) == pytest.approx(float(exact[b]), rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 5), st.integers(1, 12), st.integers(0, 9))
def test_prune_ranges_leave_a_path_from_the_first_cell_to_the_last(seed, width, frames, labels):
    """Bands start at u = 0, end at U, never move back and never leave a gap, whenever the frames
    can hold the labels at width - 1 a frame; and the pruned loss is then finite."""
    generator = torch.Generator().manual_seed(seed)
    am = 3 * torch.randn(1, frames, 4, generator=generator)
    lm = 3 * torch.randn(1, labels + 1, 4, generator=generator)
    targets = torch.randint(1, 4, (1, labels), generator=generator)
    ranges = gtn.rnnt_prune_ranges(am, lm, targets, [frames], [labels], width)[0].tolist()
    last = max(0, labels + 1 - width)
    assert all(0 <= r <= last for r in ranges) and ranges == sorted(ranges)
    if (frames - 1) * (width - 1) >= last:
        assert ranges[0] == 0 and ranges[-1] == last
        assert all(b - a <= width - 1 for a, b in zip(ranges, ranges[1:]))
        logits = torch.randn(1, frames, width, 4, generator=generator)
        loss = gtn.rnnt_loss_pruned(logits, targets, torch.tensor([ranges]), [frames], [labels])
        assert math.isfinite(float(loss))


def test_pruned_loss_errors_name_the_problem():
    am, lm, targets, frames, labels = _random_problem(0)
    with pytest.raises(gtn.ArgumentValueError, match="s_range is 1"):
        gtn.rnnt_prune_ranges(am, lm, targets, frames, labels, s_range=1)
    with pytest.raises(gtn.InvalidGraphError, match="predictor steps"):
        gtn.rnnt_loss_simple(am, lm[:, :3], targets, frames, labels)
    bad = targets.clone()
    bad[0, 1] = 0
    with pytest.raises(gtn.LabelError, match=r"targets\[0, 1\] = 0 is not a label"):
        gtn.rnnt_loss_simple(am, lm, bad, frames, labels)
    with pytest.raises(gtn.InvalidGraphError, match="ranges has shape"):
        gtn.rnnt_loss_pruned(torch.zeros(3, 6, 2, 5), targets, torch.zeros(3, 5, dtype=torch.long), frames, labels)
