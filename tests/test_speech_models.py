"""The speech recipe's models, training, decoding and command line, on tiny synthetic features.

Features are built, not synthesised: each digit word is a fixed random 13-dim pattern held for a
few frames (with noise), between stretches of "silence", so a tiny model learns them in a few
steps and the tests never need the corpus or the speech tools.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

import gtn_py as gtn
from recipes import common
from recipes.common import InputError, align_words, confusions, edit_distance
from recipes.speech_digits.__main__ import main
from recipes.speech_digits.data import DIGIT_WORDS, Utterance, write_transcripts
from recipes.speech_digits.evaluate import Result, write_report
from recipes.speech_digits.frontend import frequency_mask, frequency_warp
from recipes.speech_digits.hybrid import SILENCE, isolated_words, state_segments
from recipes.speech_digits.kinds import MODEL_KINDS, build_model
from recipes.speech_digits.mfc import write_mfc
from recipes.speech_digits.models import (
    NUM_WORDS,
    WORD_ID,
    Batch,
    CommitteeReader,
    EncoderConfig,
    MixtureOfExperts,
    ModelConfig,
    ProductOfExperts,
    Recognizer,
    frame_label_prior,
    make_batch,
    segments,
    unit_lexicon,
    word_ids,
)
from recipes.speech_digits.train import TrainConfig, augment_features, load_model, split_valid, train

TINY = EncoderConfig(channels=16, context=1, hidden=0, stride=2, dropout=0.0)
PATTERNS = np.random.default_rng(123).normal(scale=2.0, size=(len(DIGIT_WORDS) + 1, 13)).astype(np.float32)


def utterance(words: tuple[str, ...], seed: int, utt_id: str = "") -> Utterance:
    """Silence, then each word's pattern for 8-12 frames with a short pause after, then silence."""
    rng = np.random.default_rng(seed)
    parts = [np.repeat(PATTERNS[:1], rng.integers(4, 8), 0)]
    for w in words:
        parts.append(np.repeat(PATTERNS[DIGIT_WORDS.index(w) + 1][None], rng.integers(8, 13), 0))
        parts.append(np.repeat(PATTERNS[:1], rng.integers(1, 4), 0))
    feats = np.concatenate(parts + [np.repeat(PATTERNS[:1], rng.integers(4, 8), 0)])
    feats = feats + rng.normal(scale=0.3, size=feats.shape).astype(np.float32)
    return Utterance(utt_id or f"utt{seed}", feats - feats.mean(0), words)


def corpus(count: int, seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    return [utterance(tuple(str(w) for w in rng.choice(DIGIT_WORDS, size=rng.integers(1, 4))), seed * 1000 + i)
            for i in range(count)]


# ---------------------------------------------------------------------- pieces
def test_edit_distance_against_brute_force() -> None:
    def brute(ref: tuple[str, ...], hyp: tuple[str, ...]) -> int:
        # Smallest number of edits: try every monotone matching of equal words (tiny inputs only).
        best = len(ref) + len(hyp)
        for k in range(min(len(ref), len(hyp)) + 1):
            for r in itertools.combinations(range(len(ref)), k):
                for h in itertools.combinations(range(len(hyp)), k):
                    subs = sum(ref[i] != hyp[j] for i, j in zip(r, h))
                    best = min(best, subs + len(ref) - k + len(hyp) - k)
        return best

    rng = np.random.default_rng(0)
    for _ in range(60):
        ref = tuple(rng.choice(["a", "b", "c"], size=rng.integers(0, 5)))
        hyp = tuple(rng.choice(["a", "b", "c"], size=rng.integers(0, 5)))
        s, d, i = edit_distance(ref, hyp)
        assert s + d + i == brute(ref, hyp)
        assert len(ref) - d + i == len(hyp)
        pairs = align_words(ref, hyp)  # the alignment reads both sides in order
        assert tuple(r for r, _ in pairs if r is not None) == ref and tuple(h for _, h in pairs if h is not None) == hyp
    assert edit_distance(("a", "b"), ("a", "c", "b")) == (0, 0, 1)
    assert align_words(("eight", "two", "oh"), ("six", "two")) == [("eight", "six"), ("two", "two"), ("oh", None)]
    result = Result(["u1", "u2", "u3"], [("one", "two"), ("three",), ("eight", "two")],
                    [("one", "two"), (), ("six", "two", "oh")])
    summary = result.summary(["u1", "u2"])
    assert summary["wer"] == pytest.approx(100 / 3, abs=1e-3) and summary["ser"] == 50.0 and summary["deletions"] == 1
    assert summary["utterances"] == 2 and result.summary()["utterances"] == 3 and result.summary()["words"] == 5
    assert result.confusions() == [{"reference": r, "hypothesis": h, "count": 1}
                                   for r, h in (("three", "-"), ("eight", "six"), ("-", "oh"))]
    assert "oracle_wer" not in result.summary()  # one candidate each: nothing to choose among
    # Chosen among candidates: the oracle is the candidate nearest each transcript.
    chosen = Result(result.utt_ids, result.references, result.hypotheses,
                    [[("one", "two")], [(), ("three",), ("two",)], [("six", "two", "oh"), ("eight", "oh")]])
    summary = chosen.summary()
    assert summary["wer"] == 60.0 and summary["candidates"] == 2.0 and summary["oracle_wer"] == 20.0
    assert "oracle_wer" not in chosen.summary(["u1"])
    assert chosen.summary(["u2", "u3"])["oracle_wer"] == pytest.approx(100 / 3, abs=1e-3)


def test_segments_merge_runs_and_scale_to_input_frames() -> None:
    assert segments([0, 3, 3, 0, 0, 5, 3], stride=2) == [(3, 2, 6), (5, 10, 12), (3, 12, 14)]


def test_batch_padding_does_not_change_outputs() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig("ctc", TINY))
    model.eval()
    a, b = utterance(("one",), 1), utterance(("two", "three", "four"), 2)
    alone, _ = model(make_batch([a.features]))
    together, lengths = model(make_batch([a.features, b.features]))
    torch.testing.assert_close(together[0, :int(lengths[0])], alone[0], atol=1e-5, rtol=1e-5)


def test_variance_normalisation_ignores_each_coefficients_scale_and_the_padding() -> None:
    torch.manual_seed(0)
    config = ModelConfig("ctc", EncoderConfig(channels=16, context=1, hidden=0, stride=2, dropout=0.0,
                                              variance_norm=True))
    model = build_model(config)
    a, b = utterance(("one",), 1), utterance(("two", "three", "four"), 2)
    model.prepare([a.features, b.features])
    model.eval()
    gains = np.random.default_rng(0).uniform(0.3, 3.0, 13).astype(np.float32)
    alone, _ = model(make_batch([a.features]))
    scaled, _ = model(make_batch([a.features * gains]))
    together, lengths = model(make_batch([a.features * gains, b.features]))
    torch.testing.assert_close(scaled, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(together[0, :int(lengths[0])], alone[0], atol=1e-4, rtol=1e-4)
    # The global statistics are those of the normalised training features: unit spread each.
    normalised = np.concatenate([f / np.sqrt((f ** 2).mean(0)) for f in (a.features, b.features)])
    np.testing.assert_allclose(model.encoder.std.numpy(), normalised.std(0) + 1e-3, rtol=1e-4)


# ---------------------------------------------------------------------- HMM and DTW graphs, brute force
def hmm_brute_force(emissions: np.ndarray, transitions: np.ndarray, words: tuple[str, ...], states: int
                    ) -> tuple[float, list[int]]:
    """Log-sum and best state sequence over every state sequence that spells ``words`` with an
    optional silence around each word: a regular expression over one letter per state, checked on
    all sequences of the states involved. A path scores its emissions, ``transitions[s, 0]`` for
    staying in ``s``, ``transitions[s, 1]`` for leaving ``s`` (also at the end)."""
    import re

    silence = NUM_WORDS * states
    used = sorted({silence} | {(WORD - 1) * states + k for WORD in word_ids(words) for k in range(states)})
    letter = {s: chr(ord("a") + i) for i, s in enumerate(used)}
    word_re = ["".join(letter[(w - 1) * states + k] + "+" for k in range(states)) for w in word_ids(words)]
    sil = letter[silence] + "*"
    pattern = re.compile(sil + sil.join(word_re) + sil)
    scores, best, best_score = [], [], -np.inf
    for seq in itertools.product(used, repeat=emissions.shape[0]):
        if not pattern.fullmatch("".join(letter[s] for s in seq)):
            continue
        score = sum(emissions[t, s] for t, s in enumerate(seq)) + transitions[seq[-1], 1]
        score += sum(transitions[a, 0] if a == b else transitions[a, 1] for a, b in zip(seq, seq[1:]))
        scores.append(score)
        if score > best_score:
            best, best_score = list(seq), score
    return float(np.logaddexp.reduce(scores)), best


@pytest.mark.parametrize("words", [("five",), ("five", "five"), ("one", "two")])
def test_hybrid_graphs_against_brute_force(words: tuple[str, ...]) -> None:
    from gtn_py.criteria import hmm

    torch.manual_seed(1)
    model = build_model(ModelConfig("hybrid", TINY, {"states": 2}))
    with torch.no_grad():
        model.word_transitions.normal_()
        model.silence_transitions.normal_()
    frames = 6
    emissions = torch.randn(1, frames, model.num_states).log_softmax(-1)
    stay_next = torch.cat([model.word_transitions.reshape(-1, 2), model.silence_transitions]).log_softmax(-1)
    expected, best = hmm_brute_force(emissions[0].numpy(), stay_next.detach().numpy(), words, 2)

    from recipes.speech_digits.hybrid import transcript_grammars

    correct = hmm.decoding_graph(model.lexicon(), transcript_grammars([word_ids(words)]))
    score = float(hmm.hmm_score(correct, emissions, [frames])[0].detach())
    torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-5)
    alignment = hmm.hmm_decode(correct, emissions, [frames])
    assert alignment.states[0].tolist() == best
    assert [w for w, _, _ in state_segments(best, 2, stride=1)] == list(words)
    assert [w for w in alignment.words[0] if w != SILENCE] == word_ids(words)


def test_hybrid_loss_is_the_transcripts_share_of_all_answers() -> None:
    # mmi loss = -log(total of the transcript's paths / total of all paths), so the
    # probabilities of all single-word answers (with silences) cannot exceed 1.
    torch.manual_seed(2)
    model = build_model(ModelConfig("hybrid", TINY, {"states": 2}))
    model.eval()
    u = utterance(("three",), 3)
    batch = make_batch([u.features] * NUM_WORDS, [(w,) for w in DIGIT_WORDS])
    with torch.no_grad():
        probabilities = torch.exp(-model.losses(batch))
    assert bool((probabilities > 0).all()) and float(probabilities.sum()) < 1.0


def dtw_brute_force(d: np.ndarray) -> list[float]:
    """Costs of every monotone path with steps (1,0), (0,1), (1,1) from (0,0) to the last cell."""
    n, m = d.shape
    costs: list[float] = []

    def walk(i: int, j: int, cost: float) -> None:
        if (i, j) == (n - 1, m - 1):
            costs.append(cost)
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                walk(i + di, j + dj, cost + d[i + di, j + dj])

    walk(0, 0, d[0, 0])
    return costs


def test_dtw_template_energies_and_loss_against_brute_force() -> None:
    torch.manual_seed(3)
    model = build_model(ModelConfig("dtw", TINY, {"dim": 3, "frames": 3, "loss": "nll"}))
    model.eval()
    u = utterance(("seven",), 4)
    batch = make_batch([u.features[:8]], [u.words])
    with torch.no_grad():
        x, lengths = model(batch)
        energies = model.energies(batch)[0].numpy()
        loss = float(model.losses(batch)[0])
    assert int(lengths[0]) == 4
    free = []
    for c in range(NUM_WORDS):
        template = model.templates.templates[c].detach().numpy()
        d = ((template[:, None, :] - x[0].numpy()[None, :, :]) ** 2).sum(-1)
        costs = np.array(dtw_brute_force(d))
        assert len(costs) == 25  # the Delannoy number D(2, 3)
        assert energies[c] == pytest.approx(costs.min(), rel=1e-5)
        free.append(-np.logaddexp.reduce(-costs))
    free = np.array(free)
    target = DIGIT_WORDS.index("seven")
    assert loss == pytest.approx(free[target] + np.logaddexp.reduce(-free), rel=1e-4, abs=1e-4)
    assert model.decode(batch) == [(DIGIT_WORDS[int(np.argmin(energies))],)]


# ---------------------------------------------------------------------- training
def steps_lower_loss(kind: str, options: dict | None = None, steps: int = 8, lr: float = 1e-2) -> None:
    torch.manual_seed(0)
    utterances = corpus(6)
    model = build_model(ModelConfig(kind, TINY, options or {}))
    model.prepare([u.features for u in utterances])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batch = make_batch([u.features for u in utterances], [u.words for u in utterances])
    first = float(model.losses(batch).detach().mean())
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.losses(batch).mean()
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    assert float(model.losses(batch).detach().mean()) < 0.8 * first


def test_ctc_steps_lower_the_loss() -> None:
    steps_lower_loss("ctc")


def test_ctc_with_two_units_per_word_steps_lower_the_loss() -> None:
    steps_lower_loss("ctc", {"units": 2})


def test_ctc_mmi_steps_lower_the_loss() -> None:
    steps_lower_loss("ctc", {"units": 2, "criterion": "mmi"})


def spells_words(labels: tuple[int, ...], units: int) -> bool:
    """Whether a frame labelling collapses (repeats merged, blanks dropped) to whole words of
    ``units`` labels each, each word's labels in order."""
    collapsed = [a for i, a in enumerate(labels) if a and (i == 0 or a != labels[i - 1])]
    if len(collapsed) % units:
        return False
    return all(collapsed[k] % units == 1 % units and collapsed[k:k + units] == list(
        range(collapsed[k], collapsed[k] + units)) for k in range(0, len(collapsed), units))


def test_ctc_mmi_renormalises_over_the_frame_labellings_that_spell_words() -> None:
    """``criterion=mmi``: the loss is CTC's minus the log of the probability of every frame
    labelling that the digit loop can read, enumerated here over 4 frames (2 units per word:
    each word's units in order, a unit held or separated by blanks, a word's first unit after
    the last unit of any word); with 1 unit every labelling spells words and the two agree."""
    utterances = corpus(2, seed=1)
    batch = make_batch([u.features[:8] for u in utterances], [("one",), ("two",)])
    for units in (1, 2):
        torch.manual_seed(0)
        ctc = build_model(ModelConfig("ctc", TINY, {"units": units}))
        mmi = build_model(ModelConfig("ctc", TINY, {"units": units, "criterion": "mmi"}))
        mmi.load_state_dict(ctc.state_dict())
        ctc.eval(), mmi.eval()
        with torch.no_grad():
            log_probs, lengths = ctc(batch)
            assert lengths.tolist() == [4, 4]

            labellings = [x for x in itertools.product(range(1 + units * NUM_WORDS), repeat=4)
                          if spells_words(x, units)]
            index = torch.tensor(labellings)
            total = log_probs[:, torch.arange(4), index].sum(-1).logsumexp(-1)
            torch.testing.assert_close(mmi.losses(batch), ctc.losses(batch) + total, rtol=1e-5, atol=1e-5)
            if units == 1:
                torch.testing.assert_close(total, torch.zeros(2), atol=1e-5, rtol=0)
            else:
                assert (total < -0.1).all()


def test_ctc_units_are_read_back_as_words_and_aligned_as_words() -> None:
    """With 3 units per word, a frame sequence that spells "five five two" unit by unit (blanks
    between some units, a unit held over frames) decodes to those words through the unit lexicon,
    and the alignment of that transcript covers each word from its first unit to its last."""
    model = build_model(ModelConfig("ctc", TINY, {"units": 3}))
    second, first = WORD_ID["two"], WORD_ID["one"]
    assert model.labels(("two", "one")) == [3 * second - 2, 3 * second - 1, 3 * second,
                                            3 * first - 2, 3 * first - 1, 3 * first]
    assert unit_lexicon(3).num_arcs == 3 * NUM_WORDS and unit_lexicon(1).num_arcs == NUM_WORDS
    five, two = (3 * (WORD_ID["five"] - 1) + 1, 3 * (WORD_ID["two"] - 1) + 1)
    frames = [0, five, five + 1, 0, five + 2, five, five + 1, five + 1, five + 2, 0, two, two + 1, two + 2, 0]
    log_probs = torch.full((1, len(frames), 1 + 3 * NUM_WORDS), -20.0)
    log_probs[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    lengths = torch.tensor([len(frames)])
    assert model.decode_outputs(log_probs.log_softmax(-1), lengths) == [("five", "five", "two")]
    batch = make_batch([np.zeros((2 * len(frames), 13), np.float32)], [("five", "five", "two")])
    stride = TINY.stride
    assert model.align_scores(batch, log_probs.log_softmax(-1), lengths) == [
        [("five", 1 * stride, 5 * stride), ("five", 5 * stride, 9 * stride), ("two", 10 * stride, 13 * stride)]]


@pytest.mark.parametrize("kind", ["ctc", "hybrid"])
def test_word_score_trades_deletions_for_insertions(kind: str) -> None:
    """The ``word_score`` reading option scores each word of the decoding grammar: a large penalty
    reads nothing, a bonus reads more words than none, and a frame where blank narrowly beats a
    word is read as that word once the bonus outweighs the difference."""
    model = build_model(ModelConfig(kind, TINY))
    scores = torch.randn(2, 40, model.output.out_features, generator=torch.Generator().manual_seed(0))
    log_probs, lengths = scores.log_softmax(-1), torch.tensor([40, 31])

    def words_read(word_score: float) -> int:
        model.word_score = word_score
        return sum(len(words) for words in model.decode_outputs(log_probs, lengths))

    assert words_read(-1000.0) == 0
    assert 0 < words_read(0.0) < words_read(5.0)
    if kind == "ctc":
        five = WORD_ID["five"]
        frames = torch.full((1, 3, 1 + NUM_WORDS), -20.0)
        frames[0, :, 0] = 0.0
        frames[0, 1, five] = -0.5  # the middle frame: blank by 0.5
        model.word_score = 0.0
        assert model.decode_outputs(frames.log_softmax(-1), torch.tensor([3])) == [()]
        model.word_score = 1.0
        assert model.decode_outputs(frames.log_softmax(-1), torch.tensor([3])) == [("five",)]


def test_ctc_output_starts_at_the_prior_of_its_frame_labels() -> None:
    utterances = corpus(6)
    model = build_model(ModelConfig("ctc", TINY))
    model.prepare([u.features for u in utterances], [u.words for u in utterances])
    frames = sum((len(u.features) - 1) // TINY.stride + 1 for u in utterances)
    prior = frame_label_prior([u.words for u in utterances], frames)
    words = sum(len(u.words) for u in utterances)
    assert float(prior.sum()) == pytest.approx(1.0)
    assert float(prior[0]) == pytest.approx((frames - words - NUM_WORDS) / frames)
    assert float(prior[WORD_ID[utterances[0].words[0]]]) > 1 / frames
    torch.testing.assert_close(model.output.bias.softmax(-1), prior)
    with pytest.raises(InputError, match="cannot hold"):
        frame_label_prior([("one", "two")] * 10, 20)
    units = frame_label_prior([u.words for u in utterances], frames, units=2)
    assert units.shape == (1 + 2 * NUM_WORDS,) and float(units.sum()) == pytest.approx(1.0)
    assert float(units[0]) == pytest.approx((frames - 2 * (words + NUM_WORDS)) / frames)
    assert float(units[1]) == float(units[2]) == pytest.approx(float(prior[1]))


def test_ctc_trains_from_scratch_out_of_the_all_blank_output(tmp_path: Path) -> None:
    """``train --model ctc`` with its default encoder (a BiGRU) and learning rate. With a uniform
    output at the start, the first steps made the GRU's output constant and every frame blank for
    good (the loss stuck near 3 nats per word); started at the prior of the frame labels, a few
    steps read most of the utterances."""
    utterances = corpus(32)
    config = TrainConfig(steps=40, warmup=10, valid_size=0, checkpoint_every=40)
    path = train(tmp_path, ModelConfig("ctc"), config, utterances, show_progress=False)
    losses = [m["loss"] for m in common.read_metrics(tmp_path / common.METRICS)]
    assert losses[-1] < 0.2 * losses[0]
    model, _ = load_model(path)
    batch = make_batch([u.features for u in utterances], [u.words for u in utterances])
    with torch.no_grad():
        log_probs, lengths = model(batch)
    frames = torch.arange(log_probs.shape[1])[None, :] < lengths[:, None]
    assert float((log_probs.argmax(-1)[frames] == 0).float().mean()) < 0.95
    assert sum(h == u.words for h, u in zip(model.decode(batch), utterances)) >= len(utterances) // 2


def test_hybrid_steps_lower_the_loss() -> None:
    steps_lower_loss("hybrid", {"states": 2})


def test_rnnt_steps_lower_the_loss() -> None:
    steps_lower_loss("rnnt", {"predictor": 8, "joiner": 8})
    steps_lower_loss("rnnt", {"predictor": 8, "joiner": 8, "prune_range": 2})


def test_rnnt_pruned_loss_with_a_band_of_every_u_is_the_full_loss_plus_the_simple_one() -> None:
    utterances = corpus(4)
    torch.manual_seed(0)
    pruned = build_model(ModelConfig("rnnt", TINY, {"predictor": 8, "joiner": 8, "prune_range": 20}))
    full = build_model(ModelConfig("rnnt", TINY, {"predictor": 8, "joiner": 8}))
    full.load_state_dict({k: v for k, v in pruned.state_dict().items() if not k.startswith("simple_")})
    batch = make_batch([u.features for u in utterances], [u.words for u in utterances])
    pruned.eval()
    full.eval()
    frames, predictions, targets, lengths, target_lengths = pruned.sides(*pruned(batch), *batch.own_answers())
    simple = gtn.rnnt_loss_simple(pruned.simple_am(frames), pruned.simple_lm(predictions), targets, lengths,
                                  target_lengths, reduction="none")
    torch.testing.assert_close(pruned.losses(batch), full.losses(batch) + 0.5 * simple)


def test_rnnt_trains_from_scratch_and_aligns_each_word_on_its_frames(tmp_path: Path) -> None:
    """``train --model rnnt`` with the default encoder: the loss falls to a fifth in 40 steps and
    half the utterances are read; the alignment gives the transcript's words in order, each on
    an output frame of its utterance."""
    utterances = corpus(32)
    config = TrainConfig(steps=40, warmup=10, valid_size=0, checkpoint_every=40)
    path = train(tmp_path, ModelConfig("rnnt", options={"beam": 2}), config, utterances, show_progress=False)
    losses = [m["loss"] for m in common.read_metrics(tmp_path / common.METRICS)]
    assert losses[-1] < 0.2 * losses[0]
    model, _ = load_model(path)
    batch = make_batch([u.features for u in utterances], [u.words for u in utterances])
    with torch.no_grad():
        assert sum(h == u.words for h, u in zip(model.decode(batch), utterances)) >= len(utterances) // 2
    stride = model.config.encoder.stride
    for u, spans in zip(utterances, model.align(batch)):
        assert tuple(w for w, _, _ in spans) == u.words
        starts = [a for _, a, _ in spans]
        assert starts == sorted(starts) and all(b - a == stride and b <= len(u.features) + stride
                                                for _, a, b in spans)


def test_dtw_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    utterances = [utterance((DIGIT_WORDS[i % NUM_WORDS],), i) for i in range(6)]
    for loss in ("nll", "lvq2"):
        model = build_model(ModelConfig("dtw", TINY, {"dim": 8, "frames": 3, "loss": loss}))
        model.prepare([u.features for u in utterances])
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        batch = make_batch([u.features for u in utterances], [u.words for u in utterances])
        first = float(model.losses(batch).detach().mean())
        for _ in range(5):
            optimizer.zero_grad()
            model.losses(batch).mean().backward()
            optimizer.step()
        assert float(model.losses(batch).detach().mean()) < 0.8 * first


def test_isolated_words_cut_at_the_forced_alignment(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig("hybrid", TINY, {"states": 2}))
    utts = corpus(3, seed=5)
    model.prepare([u.features for u in utts])
    words = isolated_words(model, utts, margin=0)
    assert [w.words[0] for w in words] == [w for u in utts for w in u.words]
    for u in utts:
        pieces = [w for w in words if w.utt_id.startswith(u.utt_id + "-")]
        assert sum(len(p.features) for p in pieces) <= len(u.features)
    index = write_report(model, utts[:1], tmp_path / "viz")
    svg = (tmp_path / "viz" / f"{utts[0].utt_id}.svg").read_text()
    assert index.exists() and svg.startswith("<svg") and svg.count("fill-opacity") == len(utts[0].words)


def test_augmented_features_are_reproducible_perturbations() -> None:
    x = utterance(("one", "two"), 9).features
    a = augment_features(x, np.random.default_rng([0, 1, 2]))
    b = augment_features(x, np.random.default_rng([0, 1, 2]))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape[1] == 13
    assert len(x) / 1.15 - 1 <= len(a) <= len(x) / 0.85 + 1
    assert not np.allclose(augment_features(x, np.random.default_rng(5))[:len(x) // 2], x[:len(x) // 2])
    # A frequency mask is drawn after the other perturbations, so freq_mask = 0 perturbs as before and
    # freq_mask > 0 is the same perturbation with one band masked.
    masked = augment_features(x, np.random.default_rng([0, 1, 2]), freq_mask=5)
    assert masked.shape == a.shape and not np.allclose(masked, a)
    rng = np.random.default_rng([0, 1, 2])
    augment_features(x, rng)
    band = int(rng.integers(1, 6))
    np.testing.assert_allclose(masked, a @ frequency_mask(int(rng.integers(0, 20 - band + 1)), band), atol=1e-5)


def test_training_resumes_exactly(tmp_path: Path) -> None:
    utterances = corpus(12)
    model_config = ModelConfig("ctc", TINY)
    config = TrainConfig(steps=4, batch_size=4, lr=1e-2, warmup=1, valid_size=4, valid_every=2,
                         checkpoint_every=1, augment=True)
    straight = train(tmp_path / "a", model_config, config, utterances, show_progress=False)
    train(tmp_path / "b", model_config, TrainConfig(**{**config.__dict__, "steps": 2}), utterances,
          show_progress=False)
    resumed = train(tmp_path / "b", model_config, config, utterances, resume=True, show_progress=False)
    a, b = common.load_checkpoint(straight), common.load_checkpoint(resumed)
    assert a["step"] == b["step"] == 4
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value)
    records = common.read_metrics(tmp_path / "b" / common.METRICS)
    assert [r["step"] for r in records if r["split"] == "valid"] == [2, 4]
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")


def test_encoder_initialised_from_another_checkpoint(tmp_path: Path) -> None:
    utterances = corpus(8)
    config = TrainConfig(steps=1, batch_size=4, lr=1e-2, warmup=1, valid_size=0)
    hybrid = train(tmp_path / "hybrid", ModelConfig("hybrid", TINY, {"states": 2}), config, utterances,
                   show_progress=False)
    tiny_steps = TrainConfig(**{**config.__dict__, "lr": 1e-9})
    ctc = train(tmp_path / "ctc", ModelConfig("ctc", TINY), tiny_steps, utterances, show_progress=False, init=hybrid)
    a, b = common.load_checkpoint(hybrid)["model"], common.load_checkpoint(ctc)["model"]
    encoder = [k for k in a if k.startswith("encoder.")]
    assert encoder and all(torch.allclose(a[k], b[k], atol=1e-6) for k in encoder)


def test_committee_searches_with_the_mean_of_its_members_scores(tmp_path: Path) -> None:
    utterances = corpus(8)
    config = TrainConfig(steps=2, batch_size=4, lr=1e-2, warmup=1, valid_size=0)
    paths = [train(tmp_path / f"h{seed}", ModelConfig("hybrid", TINY, {"states": 2}),
                   TrainConfig(**{**config.__dict__, "seed": seed}), utterances, show_progress=False)
             for seed in (0, 1)]
    committee, _ = load_model(paths)
    members = [load_model(p)[0] for p in paths]
    assert isinstance(committee, CommitteeReader)
    batch = make_batch([u.features for u in utterances], [u.words for u in utterances])
    with torch.no_grad():
        scores, lengths = committee(batch)
        mean = (members[0](batch)[0] + members[1](batch)[0]) / 2
        torch.testing.assert_close(scores, mean.log_softmax(-1))
        assert committee.decode(batch) == members[0].decode_outputs(scores, lengths)
        assert len(committee.align(batch)) == len(utterances)
        # a committee of one model twice, or of one model and the identity warp, reads as the model
        assert load_model([paths[0], paths[0]])[0].decode(batch) == members[0].decode(batch)
        assert load_model(paths[0], warps=[1.0])[0].decode(batch) == members[0].decode(batch)
        # warps: the mean over the features as other vocal tracts would give them
        warped, _ = load_model(paths[0], warps=[0.9, 1.2])[0](batch)
        by_hand = [members[0](batch._replace(features=batch.features @ torch.from_numpy(frequency_warp(a)).float()))[0]
                   for a in (0.9, 1.2)]
        torch.testing.assert_close(warped, ((by_hand[0] + by_hand[1]) / 2).log_softmax(-1))
    ctc = train(tmp_path / "ctc", ModelConfig("ctc", TINY), config, utterances, show_progress=False)
    with pytest.raises(ValueError, match="one kind"):
        load_model([paths[0], ctc], combine="frames")


class ScriptedReader(Recognizer):
    """A stand-in member of a product of experts: fixed readings, fixed energies of answers."""

    def __init__(self, readings: list[tuple[str, ...]], energies: dict[tuple[str, ...], float]):
        super().__init__()
        self.config = ModelConfig("ctc", TINY)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.readings, self.energy = readings, energies

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.features, batch.lengths

    def decode_outputs(self, outputs: torch.Tensor, lengths: torch.Tensor) -> list[tuple[str, ...]]:
        return self.readings[:len(lengths)]

    def answer_losses(self, outputs: torch.Tensor, lengths: torch.Tensor, owner: torch.Tensor,
                      words: Sequence[tuple[str, ...]]) -> torch.Tensor:
        return torch.tensor([self.energy.get(w, 50.0) for w in words])

    def align(self, batch: Batch) -> list[list[tuple[str, int, int]]]:
        return [[] for _ in batch.words]


def test_product_of_experts_reads_the_answer_of_least_summed_energy(tmp_path: Path) -> None:
    one, two, three = ("one",), ("two",), ("three",)
    a = ScriptedReader([one, one, one], {one: 1.0, two: 5.0, three: torch.inf})
    b = ScriptedReader([two, three, two], {one: 3.0, two: 0.5, three: 0.1})
    batch = make_batch([np.zeros((20, 13), np.float32)] * 3)
    # utterance 0: one 4.0 < two 5.5; utterance 1: three ruled out by a's infinite energy, one 4.0;
    # the answers are those read, so "three" (b's reading of utterance 1 only) is no candidate elsewhere.
    assert ProductOfExperts([a, b]).decode(batch) == [one, one, one]
    b.energy[one] = 10.0
    assert ProductOfExperts([a, b]).decode(batch) == [two, one, two]
    a.energy = {words: torch.inf for words in (one, two, three)}  # none finite: the first member's reading
    assert ProductOfExperts([a, b]).decode(batch) == [one, one, one]

    # Trained members of three kinds, two warps: the answer of least loss summed over every
    # (member, warp), among the answers any of them read on any warp, each utterance on its own.
    utterances = corpus(6)
    config = TrainConfig(steps=12, batch_size=4, lr=1e-2, warmup=1, valid_size=0)  # enough to read differently
    paths = [train(tmp_path / kind, ModelConfig(kind, TINY, options), config, utterances, show_progress=False)
             for kind, options in (("hybrid", {"states": 2}), ("ctc", {}), ("rnnt", {"predictor": 8, "joiner": 8}))]
    warps = (1.0, 1.15)
    reader, _ = load_model(paths, warps=warps)
    assert isinstance(reader, ProductOfExperts)
    members = [load_model(p)[0] for p in paths]
    matrices = [torch.from_numpy(frequency_warp(w)).float() for w in warps]
    batch = make_batch([u.features for u in utterances])
    with torch.no_grad():
        read = reader.decode(batch)
        assert sum(len(found) for found in reader.candidates(batch)[0]) > len(utterances)
        for i, u in enumerate(utterances):
            views = [make_batch([u.features]) for _ in warps]
            views = [v._replace(features=v.features @ m) for v, m in zip(views, matrices)]
            answers = list(dict.fromkeys(m.decode(v)[0] for m in members for v in views))
            energy = [sum(float(m.losses(v._replace(words=[w]))[0]) for m in members for v in views) for w in answers]
            assert read[i] == answers[int(np.argmin(energy))]
        assert len(reader.align(make_batch([u.features for u in utterances], [u.words for u in utterances]))) == 6
    ml = train(tmp_path / "ml", ModelConfig("hybrid", TINY, {"states": 2, "criterion": "ml"}), config, utterances,
               show_progress=False)
    with pytest.raises(InputError, match="log P"):
        load_model([paths[0], ml])
    with pytest.raises(InputError, match="not a setting of any model"):
        load_model(paths, options={"bogus": "1"})
    beams = load_model(paths, options={"beam": "2", "states": "2"})[0]
    assert "beam" not in beams.members[0].config.options and "beam" not in beams.members[1].config.options
    assert beams.members[2].beam == 2 and beams.members[0].states == 2
    # An RNN-T scores the empty answer too (the predictor reads its start alone).
    assert torch.isfinite(members[2].losses(make_batch([u.features for u in utterances[:2]]))).all()


def test_mixture_of_experts_reads_the_answer_of_greatest_mean_posterior() -> None:
    one, two = ("one",), ("two",)
    # a is sure of "one"; b rules it out (an infinite loss) and is sure of "two". The product
    # follows b's veto; the mixture weighs a's e^-0.1 + 0 against e^-3 + e^-0.2 and reads "one".
    a = ScriptedReader([one], {one: 0.1, two: 3.0})
    b = ScriptedReader([two], {one: torch.inf, two: 0.2})
    batch = make_batch([np.zeros((20, 13), np.float32)])
    assert ProductOfExperts([a, b]).read(batch) == ([two], [[one, two]])
    mixture = MixtureOfExperts([a, b])
    assert mixture.read(batch) == ([one], [[one, two]])
    candidates, energies = mixture.candidates(batch)
    expected = [-np.log((np.exp(-0.1) + 0.0) / 2), -np.log((np.exp(-3.0) + np.exp(-0.2)) / 2)]
    np.testing.assert_allclose(energies.numpy(), expected, rtol=1e-6)
    # With one member, the mixture and the product are the member's own losses.
    only = MixtureOfExperts([a]).candidates(batch)[1]
    torch.testing.assert_close(only, ProductOfExperts([a]).candidates(batch)[1])
    a.energy = {one: torch.inf, two: torch.inf}
    b.energy = {one: torch.inf, two: torch.inf}  # none finite: the first member's reading
    assert mixture.decode(batch) == [one]


@pytest.mark.parametrize("kind, options", [("ctc", {"units": 2}), ("ctc", {"units": 2, "criterion": "mmi"}),
                                           ("hybrid", {"states": 2}),
                                           ("hybrid", {"states": 2, "criterion": "ml"}),
                                           ("rnnt", {"predictor": 8, "joiner": 8}),
                                           ("rnnt", {"predictor": 8, "joiner": 8, "prune_range": 2}),
                                           ("dtw", {"frames": 3})])
def test_answer_losses_are_the_losses_of_the_answers_as_utterances(kind: str, options: dict[str, object]) -> None:
    """Several answers per utterance, scored from one encoding of each (:meth:`forward`), equal
    each answer's loss with its utterance repeated as a batch of its own (including an answer
    that cannot fit)."""
    utterances = corpus(3, seed=4)
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind, TINY, options))
    model.prepare([u.features for u in utterances], [u.words for u in utterances])
    model.eval()
    batch = make_batch([u.features for u in utterances])
    if kind == "dtw":
        owner, words = [2, 0, 0, 1, 2], [("one",), ("two",), ("oh",), ("nine",), ("two",)]
    else:
        owner, words = [2, 0, 0, 1, 2, 1], [("one", "two"), (), ("oh",), ("nine",) * 3, ("two",), ("five",) * 40]
    expected = model.losses(Batch(batch.features[owner], batch.lengths[owner], words, [str(i) for i in owner]))
    with torch.no_grad():
        found = model.answer_losses(*model(batch), torch.tensor(owner), words)
    assert found.shape == (len(words),)
    torch.testing.assert_close(found, expected.detach(), rtol=1e-5, atol=1e-4)
    if kind in ("ctc", "hybrid"):  # 40 words cannot fit in these frames (an RNN-T emits several per frame)
        assert torch.isinf(found[-1]) and torch.isfinite(found[:-1]).all()


def test_average_makes_one_model_of_the_mean_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    utterances = corpus(8)
    config = TrainConfig(steps=2, batch_size=4, lr=1e-2, warmup=1, valid_size=0)
    hybrid = ModelConfig("hybrid", TINY, {"states": 2})
    parent = train(tmp_path / "parent", hybrid, config, utterances, show_progress=False)
    paths = [train(tmp_path / f"h{seed}", hybrid, TrainConfig(**{**config.__dict__, "seed": seed}), utterances,
                   show_progress=False, init=parent) for seed in (1, 2)]
    soup = tmp_path / "soup.pt"
    main(["average", "--checkpoint", str(paths[0]), "--checkpoint", str(paths[1]), "--out", str(soup)])
    assert "mean of 2" in capsys.readouterr().out
    a, b = (common.load_checkpoint(p)["model"] for p in paths)
    state = common.load_checkpoint(soup)
    assert state["averaged_from"] == [str(p) for p in paths] and "optimizer" not in state
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for name, value in state["model"].items():
        torch.testing.assert_close(value, (a[name] + b[name]) / 2)
    # the soup reads as a model of its own, and starts runs (--init) but cannot be resumed
    model, _ = load_model(soup)
    batch = make_batch([u.features for u in utterances], [u.words for u in utterances])
    assert len(model.decode(batch)) == len(utterances)
    train(tmp_path / "from_soup", hybrid, config, utterances, show_progress=False, init=soup)
    with pytest.raises(ValueError, match="--init, not --resume"):
        common.restore(soup, model, torch.optim.SGD(model.parameters(), lr=0.1))
    # only checkpoints of one model config average
    ctc = train(tmp_path / "ctc", ModelConfig("ctc", TINY), config, utterances, show_progress=False)
    with pytest.raises(SystemExit, match="model config differs"):
        main(["average", "--checkpoint", str(paths[0]), "--checkpoint", str(ctc), "--out", str(tmp_path / "x.pt")])
    with pytest.raises(SystemExit, match="at least two"):
        main(["average", "--checkpoint", str(paths[0]), "--out", str(tmp_path / "x.pt")])


# ---------------------------------------------------------------------- command line
def test_cli_resume_trains_on_the_runs_own_corpus(tmp_path: Path) -> None:
    corpus_folder = tmp_path / "corpus"
    (corpus_folder / "train" / "mfc").mkdir(parents=True)
    utts = corpus(8)
    for u in utts:
        write_mfc(corpus_folder / "train" / "mfc" / f"{u.utt_id}.mfc", u.features)
    write_transcripts(corpus_folder / "train" / "transcripts.txt", [(u.utt_id, u.words) for u in utts])
    tiny = ["--model", "ctc", "--channels", "16", "--context", "1", "--hidden", "0", "--stride", "2", "--dropout", "0",
            "--batch-size", "4", "--valid-size", "0", "--device", "cpu", "--quiet"]
    out = tmp_path / "run"
    main(["train", "--out", str(out), "--corpus", str(corpus_folder), "--steps", "1", *tiny])
    main(["train", "--out", str(out), "--resume", "--steps", "2", *tiny])  # no --corpus: the run's own
    state = common.load_checkpoint(out / common.CHECKPOINT)
    assert state["step"] == 2 and state["data"]["corpus"] == str(corpus_folder)


def test_valid_voices_validate_on_voices_held_out_of_training(tmp_path: Path) -> None:
    utts = corpus(40)
    voices = {u.utt_id: f"v{i % 8}" for i, u in enumerate(utts)}  # 8 voices of 5 utterances
    train_set, valid = split_valid(utts, 4, valid_voices=2, voices=voices)
    held_out = {voices[u.utt_id] for u in valid}
    assert len(valid) == 4 and 1 <= len(held_out) <= 2 and len(train_set) == 30
    assert not held_out & {voices[u.utt_id] for u in train_set}  # no validation voice is trained on
    assert [u.utt_id for u in split_valid(utts, 4, 2, voices)[1]] == [u.utt_id for u in valid]  # fixed draw
    default_train, default_valid = split_valid(utts, 4)  # without: validation voices are trained on
    trained = {voices[u.utt_id] for u in default_train}
    assert len(default_valid) == 4 and {voices[u.utt_id] for u in default_valid} <= trained
    with pytest.raises(ValueError, match="8 voices"):
        split_valid(utts, 4, valid_voices=8, voices=voices)
    with pytest.raises(ValueError, match="voice of every"):
        split_valid(utts, 4, valid_voices=2)

    # the command line reads the voices from the corpus's utterances.tsv
    folder = write_corpus(tmp_path / "corpus", corpus(8))
    tiny = ["--model", "ctc", "--channels", "16", "--context", "1", "--hidden", "0", "--stride", "2", "--dropout", "0",
            "--batch-size", "4", "--steps", "1", "--valid-size", "2", "--valid-every", "1", "--quiet"]
    with pytest.raises(SystemExit, match="utterances.tsv"):
        main(["train", "--out", str(tmp_path / "run"), "--corpus", str(folder), "--valid-voices", "1", *tiny])
    rows = [f"utt{i}\tv{i % 4}" for i in range(8)]
    (folder / "train" / "utterances.tsv").write_text("utt_id\tvoice\n" + "\n".join(rows) + "\n")
    main(["train", "--out", str(tmp_path / "run"), "--corpus", str(folder), "--valid-voices", "1", *tiny])
    state = common.load_checkpoint(tmp_path / "run" / common.CHECKPOINT)
    assert state["train_config"]["valid_voices"] == 1
    [valid_line] = [m for m in common.read_metrics(tmp_path / "run" / common.METRICS) if m.get("split") == "valid"]
    assert valid_line["utterances"] == 2


@pytest.fixture(scope="module")
def ctc_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ctc")
    config = TrainConfig(steps=10, batch_size=4, lr=1e-2, warmup=2, valid_size=0, checkpoint_every=10)
    return train(out, ModelConfig("ctc", TINY), config, corpus(40), show_progress=False)


def test_decode_and_evaluate_a_two_utterance_directory(ctc_checkpoint: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mfc"
    folder.mkdir()
    utts = [utterance(("five", "six"), 501, "first"), utterance(("nine",), 502, "second")]
    for u in utts:
        write_mfc(folder / f"{u.utt_id}.mfc", u.features)
    main(["decode", "--checkpoint", str(ctc_checkpoint), "--input", str(folder)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["(first)", "(second)"]
    assert all(set(line.rsplit(" ", 1)[0].split()) <= set(DIGIT_WORDS) for line in lines)
    main(["decode", "--checkpoint", str(ctc_checkpoint), "--input", str(folder), "--warps", "0.9,1,1.1"])
    assert [line.rsplit(" ", 1)[-1] for line in capsys.readouterr().out.splitlines()] == ["(first)", "(second)"]
    with pytest.raises(SystemExit):
        main(["decode", "--checkpoint", str(ctc_checkpoint), "--input", str(folder), "--warps", "0.9,3"])

    write_transcripts(tmp_path / "ref.txt", [(u.utt_id, u.words) for u in utts])
    out = tmp_path / "eval.json"
    main(["evaluate", "--checkpoint", str(ctc_checkpoint), "--input", str(folder), "--transcripts",
          str(tmp_path / "ref.txt"), "--out", str(out), "--viz", "--viz-count", "2"])
    printed = capsys.readouterr().out
    assert "WER" in printed and "SER" in printed
    summary = json.loads(out.read_text())
    assert summary["utterances"] == 2 and summary["words"] == 3 and set(summary["hypotheses"]) == {"first", "second"}
    assert (tmp_path / "viz" / "index.html").exists() and (tmp_path / "viz" / "first.svg").exists()
    every = confusions([u.words for u in utts], [tuple(summary["hypotheses"][u.utt_id].split()) for u in utts], 1000)
    assert summary["confusions"] == every[:10]
    assert sum(c["count"] for c in every) == summary["substitutions"] + summary["deletions"] + summary["insertions"]

    # --by: error rates per value of a column of the utterances.tsv beside the transcripts
    with pytest.raises(SystemExit, match="utterances.tsv"):
        main(["evaluate", "--checkpoint", str(ctc_checkpoint), "--input", str(folder), "--transcripts",
              str(tmp_path / "ref.txt"), "--out", str(out), "--by", "voice"])
    (tmp_path / "utterances.tsv").write_text("utt_id\tvoice\tsnr_db\nfirst\tkal\t5.0\nsecond\trms\t5.0\n")
    with pytest.raises(SystemExit, match="no such column"):
        main(["evaluate", "--checkpoint", str(ctc_checkpoint), "--input", str(folder), "--transcripts",
              str(tmp_path / "ref.txt"), "--out", str(out), "--by", "accent"])
    main(["evaluate", "--checkpoint", str(ctc_checkpoint), "--input", str(folder), "--transcripts",
          str(tmp_path / "ref.txt"), "--out", str(out), "--by", "voice"])
    by = json.loads(out.read_text())["by"]
    assert by["column"] == "voice" and list(by["groups"]) == ["kal", "rms"]
    assert by["groups"]["kal"]["words"] == 2 and by["groups"]["rms"]["words"] == 1
    assert sum(g["substitutions"] + g["deletions"] + g["insertions"] for g in by["groups"].values()) == (
        summary["substitutions"] + summary["deletions"] + summary["insertions"])
    assert "voice rms: WER" in capsys.readouterr().out


def write_corpus(root: Path, utterances: list[Utterance]) -> Path:
    """A corpus folder as prepare lays it out (train/mfc/*.mfc, train/transcripts.txt)."""
    (root / "train" / "mfc").mkdir(parents=True)
    for u in utterances:
        write_mfc(root / "train" / "mfc" / f"{u.utt_id}.mfc", u.features)
    write_transcripts(root / "train" / "transcripts.txt", [(u.utt_id, u.words) for u in utterances])
    return root


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_training_steps_and_decoding_on_cuda(kind: str) -> None:
    words = [(DIGIT_WORDS[i],) for i in range(4)] if kind == "dtw" else None
    utterances = [utterance(w, i) for i, w in enumerate(words)] if words else corpus(4)
    options = {"hybrid": {"states": 2}, "dtw": {"frames": 3, "dim": 4}, "rnnt": {"predictor": 8, "joiner": 8}}
    model = build_model(ModelConfig(kind, TINY, options.get(kind, {}))).cuda()
    model.prepare([u.features for u in utterances])
    batch = make_batch([u.features for u in utterances], [u.words for u in utterances], device="cuda")
    loss = model.losses(batch).mean()
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None or p.grad.is_cuda for p in model.parameters())
    assert len(model.decode(batch)) == 4 and len(model.align(batch)) == 4
