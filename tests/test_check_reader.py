"""The check-reader recipe: generator, over-segmentation, training, checkpoints, data parallelism, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gtn_py.ops.compose import compose
from gtn_py.ops.shortest import forward_score, n_best
from recipes.check_reader.__main__ import DEFAULT_THRESHOLD
from recipes.check_reader.__main__ import main as cli
from recipes.check_reader.data import (
    GeneratorConfig,
    _bilinear,
    deformation,
    distort_digit,
    load_digits,
    load_strings,
    make_strings,
    page_to_string,
    read_png,
    sample_strings,
    save_strings,
    split_digits,
    write_png,
)
from recipes.check_reader.evaluate import read_batch, reject_curve
from recipes.check_reader.model import (
    GARBAGE,
    DeformedViews,
    ModelConfig,
    SegmentationReader,
    WindowReader,
    grammar_graph,
    sequence_loss,
    target_graphs,
)
from recipes.check_reader.oversegment import CutConfig, batch_spans, span_crops, to_batch_tensor
from recipes.check_reader.train import (
    CHECKPOINT,
    METRICS,
    TrainConfig,
    digit_split,
    load_model,
    pretrain_loss,
    train,
)
from recipes.common import Committee, confusions, edit_distance

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(channels=(4, 8), hidden=16)



@pytest.fixture(scope="module")
def digits():
    return split_digits(load_digits(), 0.125, seed=0)


def tiny_train_config(**changes) -> TrainConfig:
    config = TrainConfig(steps=4, batch_size=4, lr=3e-3, warmup=1, valid_strings=4, valid_every=100,
                         checkpoint_every=2, log_every=1,
                         generator=GeneratorConfig(min_digits=1, max_digits=3))
    return replace(config, **changes)


# ---------------------------------------------------------------------- data
def test_split_is_by_digit(digits):
    train, held = digits
    assert len(train) == 7000 and len(held) == 1000
    all_digits = load_digits()
    flat = {img.tobytes(): i for i, img in enumerate(all_digits.images)}
    train_ids = {flat[img.tobytes()] for img in train.images}
    held_ids = {flat[img.tobytes()] for img in held.images}
    assert not train_ids & held_ids


def test_readers_from_several_seeds_share_the_split():
    base_train, base_held = digit_split(TrainConfig(seed=0))
    other_train, other_held = digit_split(TrainConfig(seed=7))
    assert np.array_equal(base_held.images, other_held.images)
    assert np.array_equal(base_train.labels, other_train.labels)
    moved_train, _ = digit_split(TrainConfig(split_seed=1))
    assert not np.array_equal(base_train.labels, moved_train.labels)
    # a checkpoint written before split_seed existed split its digits by its seed
    assert TrainConfig.from_dict({"seed": 3}).split_seed == 3


def test_generator(digits):
    train, _ = digits
    config = GeneratorConfig(min_digits=2, max_digits=5)
    samples = sample_strings(train, 40, np.random.default_rng(1), config)
    touching = 0
    for s in samples:
        assert s.image.dtype == np.uint8 and s.image.shape[0] == 28
        assert 2 <= len(s.label) <= 5 and s.label.isdigit()
        assert len(s.boundaries) == len(s.label) + 1 and np.all(np.diff(s.boundaries) > 0)
        assert s.boundaries[0] >= config.margin and s.boundaries[-1] <= s.image.shape[1] - config.margin
        ink = s.image.sum(axis=0) > 0
        touching += int(not (~ink[s.boundaries[0]:s.boundaries[-1]]).any()) if len(s.label) > 1 else 0
    assert touching > 0  # some strings have no blank column between their digits
    again = sample_strings(train, 40, np.random.default_rng(1), config)
    assert all(a.label == b.label and np.array_equal(a.image, b.image) for a, b in zip(samples, again))


def test_distortion_is_a_small_smooth_reproducible_deformation(digits):
    train, _ = digits
    image = train.images[0]
    assert np.array_equal(distort_digit(image, np.random.default_rng(0), 0.0), image)
    warped = [distort_digit(image, np.random.default_rng(seed), 1.0) for seed in range(20)]
    assert np.array_equal(warped[0], distort_digit(image, np.random.default_rng(0), 1.0))
    for w in warped:
        assert w.dtype == np.uint8 and w.shape == image.shape
        assert abs(int(w.astype(np.int64).sum()) / int(image.astype(np.int64).sum()) - 1) < 0.5  # ink kept
        assert not np.array_equal(w, image)
    # In strings: strength 0 changes nothing; otherwise the same first string, deformed.
    config = GeneratorConfig(min_digits=2, max_digits=4)
    plain = sample_strings(train, 5, np.random.default_rng(3), config)
    again = sample_strings(train, 5, np.random.default_rng(3), replace(config, distort=0.0))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(plain, again))
    deformed = sample_strings(train, 5, np.random.default_rng(3), replace(config, distort=1.0))
    assert deformed[0].label == plain[0].label and not np.array_equal(deformed[0].image, plain[0].image)


def test_string_sets_round_trip(tmp_path, digits):
    strings = make_strings(digits[1], 5, seed=3)
    save_strings(strings, tmp_path / "s.npz")
    back = load_strings(tmp_path / "s.npz")
    assert back.labels == strings.labels and np.array_equal(back.images, strings.images)
    assert np.array_equal(back.image(0), strings.images[0, :, :strings.widths[0]])


def test_png_round_trip(tmp_path):
    img = (np.arange(28 * 40).reshape(28, 40) % 251).astype(np.uint8)
    write_png(tmp_path / "a.png", img)
    assert np.array_equal(read_png(tmp_path / "a.png"), img)


# ---------------------------------------------------------------------- over-segmentation
def test_true_boundaries_are_among_the_cuts(digits):
    samples = sample_strings(digits[0], 60, np.random.default_rng(2))
    config = CutConfig()
    spans = batch_spans([s.image for s in samples], config)
    distance = np.concatenate([np.abs(c[None, :] - s.boundaries[:, None]).min(axis=1)
                               for s, c in zip(samples, spans.cuts)])
    assert (distance <= config.grid // 2).mean() > 0.97
    single = (spans.end - spans.begin) == 1
    assert bool(((spans.x1 - spans.x0 <= config.max_width) | single).all())


def test_span_crops_by_hand():
    image = np.zeros((28, 40), np.uint8)
    image[:, 10:16] = 200
    image[:, 30] = 100
    spans = batch_spans([image], CutConfig())
    crops = span_crops(to_batch_tensor([image]), spans)
    for k in range(len(spans.x0)):
        x0, x1 = int(spans.x0[k]), int(spans.x1[k])
        want = image[:, x0:x1].astype(np.float32).sum() / 255.0
        assert crops[k].sum().item() == pytest.approx(want, rel=1e-5)
    # With context, channel 0 is the span alone and channel 1 its window with every column's ink.
    both = span_crops(to_batch_tensor([image]), spans, context=True)
    assert both.shape == (len(spans.x0), 2, 28, 28)
    torch.testing.assert_close(both[:, :1], crops)
    for k in range(len(spans.x0)):
        x0, x1 = int(spans.x0[k]), int(spans.x1[k])
        if x1 - x0 <= 28:
            left = x0 - (28 - (x1 - x0)) // 2
            window = image[:, max(0, left):max(0, left + 28)].astype(np.float32) / 255.0
            assert both[k, 1].sum().item() == pytest.approx(window.sum(), rel=1e-5)
            shown = [c for c in range(28) if 0 <= left + c < image.shape[1]]
            np.testing.assert_allclose(both[k, 1][:, shown].numpy(), image[:, [left + c for c in shown]] / 255.0,
                                       rtol=1e-6)


# ---------------------------------------------------------------------- training
def test_a_few_steps_lower_the_loss(digits):
    torch.manual_seed(0)
    samples = sample_strings(digits[0], 4, np.random.default_rng(5), GeneratorConfig(max_digits=3))
    model = SegmentationReader(ModelConfig(**TINY))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    config = tiny_train_config()
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        each = model.losses([s.image for s in samples], [s.label for s in samples], config.criterion)
        assert bool(torch.isfinite(each).all())
        loss = each.mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("kind", ["segmentation", "ctc"])
def test_pretraining_examples_and_loss(digits, kind):
    # Well-separated digits: every digit has a well-formed span (window), labelled with its digit.
    gen = GeneratorConfig(min_digits=2, max_digits=4, min_gap=3, max_gap=6, touch_prob=0.0)
    samples = sample_strings(digits[0], 4, np.random.default_rng(3), gen)
    torch.manual_seed(0)
    model = SegmentationReader(ModelConfig(**TINY)) if kind == "segmentation" else \
        WindowReader(ModelConfig(kind="ctc", **TINY))
    crops, targets = model.pretrain_examples(samples, [np.random.default_rng(i) for i in range(4)])
    assert crops.shape == (len(targets), 1, 28, 28)
    positives = targets[targets != GARBAGE].tolist()
    written = [int(ch) for s in samples for ch in s.label]
    garbage = int((targets == GARBAGE).sum())
    if kind == "segmentation":  # each digit once or (two cuts within 2 px) twice; garbage at most 1:1
        assert set(positives) == set(written) and len(written) <= len(positives) <= 2 * len(written)
        assert 0 < garbage <= len(positives)
    else:  # one to two windows per digit; blank elsewhere
        assert set(positives) == set(written) and garbage > len(positives)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = pretrain_loss(model, crops, targets)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_nll_is_the_discriminative_forward(digits):
    samples = sample_strings(digits[0], 3, np.random.default_rng(8), GeneratorConfig(max_digits=3))
    graphs = SegmentationReader(ModelConfig(**TINY))([s.image for s in samples]).graphs
    labels = [s.label for s in samples]
    want = forward_score(graphs) - forward_score(compose(graphs, target_graphs(labels, graphs.device)))
    assert torch.allclose(sequence_loss("nll", graphs, labels), want, rtol=1e-5)


@pytest.mark.parametrize("criterion", ["perceptron", "hinge"])
def test_viterbi_criteria(digits, criterion):
    samples = sample_strings(digits[0], 3, np.random.default_rng(6), GeneratorConfig(max_digits=3))
    model = SegmentationReader(ModelConfig(**TINY))
    losses = sequence_loss(criterion, model([s.image for s in samples]).graphs, [s.label for s in samples])
    assert losses.shape == (3,) and bool((losses >= 0).all())
    losses.sum().backward()
    assert model.recogniser.classify[-1].weight.grad is not None


def test_grammar_limits_the_length(digits):
    samples = sample_strings(digits[1], 4, np.random.default_rng(7), GeneratorConfig(min_digits=2, max_digits=4))
    model = SegmentationReader(ModelConfig(grammar="length:2-3", **TINY))
    for reading in read_batch(model, [s.image for s in samples]):
        assert 2 <= len(reading.text) <= 3 and 0.0 <= reading.confidence <= 1.0
        assert len(reading.segments) == len(reading.text)
        assert all(x0 < x1 for x0, x1, _ in reading.segments)
    assert grammar_graph("any") is None
    with pytest.raises(ValueError, match="grammar"):
        grammar_graph("length:3-2")


def test_candidates_read_the_most_probable_of_the_k_best_strings(digits):
    samples = sample_strings(digits[1], 4, np.random.default_rng(9), GeneratorConfig(min_digits=2, max_digits=4))
    images = [s.image for s in samples]
    torch.manual_seed(0)
    model = SegmentationReader(ModelConfig(**TINY))
    with torch.no_grad():   # untrained, with spread-out scores: many strings compete
        model.recogniser.classify[-1].weight.mul_(20)
    viterbi, best_of_5 = read_batch(model, images), read_batch(model, images, candidates=5)
    assert [r.text for r in viterbi] != [r.text for r in best_of_5]   # this case tells them apart
    with torch.no_grad():
        graphs = model(images).graphs
    for b, (one, five) in enumerate(zip(viterbi, best_of_5)):
        g = graphs[b]
        candidates = []
        for path in n_best(g, 5, distinct_outputs=True):
            candidates.append("".join(str(d - 1) for d in path.olabel[torch.argsort(path.src)].tolist()))
        assert one.text == candidates[0]
        posterior = {t: float(torch.exp(forward_score(compose(g, target_graphs([t], g.device))) - forward_score(g)))
                     for t in candidates}
        assert five.text == max(candidates, key=posterior.__getitem__)
        assert five.confidence == pytest.approx(posterior[five.text], rel=1e-4)
        assert one.confidence == pytest.approx(posterior[one.text], rel=1e-4) and five.confidence >= one.confidence
        assert "".join(d for _, _, d in five.segments) == five.text


def test_checkpoint_and_resume_give_the_same_state(tmp_path):
    model_config = ModelConfig(**TINY)
    pretraining = dict(pretrain_steps=2, pretrain_batch=2)
    straight = train(tmp_path / "a", model_config, tiny_train_config(steps=4, **pretraining), progress=False)
    interrupted = tiny_train_config(steps=2, **pretraining)
    train(tmp_path / "b", model_config, interrupted, progress=False)
    resumed = train(tmp_path / "b", model_config, tiny_train_config(steps=4, **pretraining), resume=True,
                    progress=False)
    a = torch.load(straight, weights_only=False)
    b = torch.load(resumed, weights_only=False)
    assert a["step"] == b["step"] == 4
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    records = [json.loads(line) for line in open(tmp_path / "b" / METRICS)]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["split"] == "pretrain"] == [1, 2]  # not repeated on resume
    assert any(r["split"] == "valid" for r in records)
    assert not list((tmp_path / "b").glob("*.tmp*"))


def test_ctc_baseline_trains_and_decodes(tmp_path, digits):
    model_config = ModelConfig(kind="ctc", **TINY)
    path = train(tmp_path, model_config, tiny_train_config(criterion="ctc", steps=2), progress=False)
    state = torch.load(path, weights_only=False)
    assert state["model_config"]["kind"] == "ctc"
    records = [json.loads(line) for line in open(tmp_path / METRICS)]
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")


def cli_error(capsys, argv: list[str]) -> str:
    """The one-line message of a command that refuses its input (exit status 2, no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        cli(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, **kw)


TRAIN_ARGS = ["--steps", "2", "--pretrain-steps", "2", "--pretrain-batch", "4",
              "--batch-size", "4", "--max-digits", "3", "--channels", "4", "8", "--hidden", "16",
              "--valid-strings", "2", "--quiet"]


def test_cli_evaluate_and_decode(tmp_path, capsys):
    cli(["train", "--out", str(tmp_path), *TRAIN_ARGS])
    cli(["prepare", "--out", str(tmp_path / "test.npz"), "--count", "6", "--min-digits", "2", "--max-digits", "3"])
    cli(["evaluate", "--checkpoint", str(tmp_path / CHECKPOINT), "--data", str(tmp_path / "test.npz")])
    printed = capsys.readouterr().out
    assert "string accuracy" in printed and "reject" in printed
    result = json.loads((tmp_path / "evaluation.json").read_text())
    assert result["strings"] == 6 and 0 <= result["string_accuracy"] <= 100
    assert len(result["examples"]) == 6
    # The digit confusions count every edit of the digit error rate.
    labels, texts = [e["label"] for e in result["examples"]], [e["text"] for e in result["examples"]]
    every = confusions(labels, texts, top=1000)
    edits = sum(sum(edit_distance(t, r)) for t, r in zip(labels, texts))
    assert result["confusions"] == every[:10] and sum(c["count"] for c in every) == edits
    assert "most frequent digit errors" in printed
    assert result["digit_error_rate"] == pytest.approx(100 * edits / sum(len(e["label"]) for e in result["examples"]))
    strings = load_strings(tmp_path / "test.npz")
    write_png(tmp_path / "x.png", 255 - strings.image(0))  # dark ink on white paper
    cli(["decode", "--checkpoint", str(tmp_path / CHECKPOINT), str(tmp_path / "x.png"), str(tmp_path / "test.npz")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 7 and lines[0].startswith(str(tmp_path / "x.png"))
    model, _ = load_model(tmp_path / CHECKPOINT)
    # The PNG reads as the image page_to_string makes of it (inverted back, cropped to the ink).
    with torch.no_grad():
        (png,) = read_batch(model, [page_to_string(strings.image(0))])
    flag = "  REJECT" if png.confidence < DEFAULT_THRESHOLD else ""
    assert lines[0].split("\t")[1:] == [png.text, f"{png.confidence:.4f}{flag}"]
    # --grid reads with other candidate cuts than the checkpoint's (and says so in evaluation.json).
    cli(["decode", "--checkpoint", str(tmp_path / CHECKPOINT), "--grid", "3", str(tmp_path / "test.npz")])
    fine = [(text, confidence.split()[0]) for _, text, confidence in
            (line.split("\t") for line in capsys.readouterr().out.strip().splitlines())]
    images = [strings.image(i) for i in range(6)]

    def reading() -> list[tuple[str, str]]:
        with torch.no_grad():
            return [(r.text, f"{r.confidence:.4f}") for r in read_batch(model, images)]

    as_trained = reading()
    model.config.cuts = CutConfig(grid=3)
    assert fine == reading() != as_trained
    cli(["evaluate", "--checkpoint", str(tmp_path / CHECKPOINT), "--data", str(tmp_path / "test.npz"), "--grid", "3"])
    assert json.loads((tmp_path / "evaluation.json").read_text())["cuts"] == asdict(CutConfig(grid=3))
    capsys.readouterr()
    cli(["decode", "--checkpoint", str(tmp_path / CHECKPOINT), "--grid", "3", "--min-piece", "1",
         str(tmp_path / "test.npz")])
    finer = [(text, confidence.split()[0]) for _, text, confidence in
             (line.split("\t") for line in capsys.readouterr().out.strip().splitlines())]
    model.config.cuts = CutConfig(grid=3, min_piece=1)
    assert finer == reading() != fine
    with pytest.raises(SystemExit):
        cli(["decode", "--checkpoint", str(tmp_path / CHECKPOINT), "--grid", "0", str(tmp_path / "x.png")])
    with pytest.raises(ValueError, match="grid"):
        CutConfig(grid=0)


def test_init_starts_a_reader_from_another_runs_weights(tmp_path, capsys):
    """--init with --pretrain-steps 0 fine-tunes a trained reader, here with other cuts: its weights
    start as the first run's (a tiny learning rate keeps them there), and the run records where from."""
    cli(["train", "--out", str(tmp_path / "a"), *TRAIN_ARGS])
    first = tmp_path / "a" / CHECKPOINT
    tuned = ["--pretrain-steps", "0", "--grid", "7", "--lr", "1e-9"]
    cli(["train", "--out", str(tmp_path / "b"), *TRAIN_ARGS, *tuned, "--init", str(first)])
    cli(["train", "--out", str(tmp_path / "c"), *TRAIN_ARGS, *tuned])
    a, b, c = (torch.load(tmp_path / run / CHECKPOINT, weights_only=False) for run in "abc")
    assert b["train_config"]["init"] == str(first) and b["model_config"]["cuts"]["grid"] == 7
    for name in a["model"]:
        torch.testing.assert_close(b["model"][name], a["model"][name], atol=1e-6, rtol=0)
        assert not torch.allclose(c["model"][name], a["model"][name], atol=1e-6, rtol=0), name
    cli(["train", "--out", str(tmp_path / "ctc"), *TRAIN_ARGS, "--criterion", "ctc"])
    assert "ctc reader cannot start a segmentation reader" in cli_error(
        capsys, ["train", "--out", str(tmp_path / "d"), *TRAIN_ARGS, "--init", str(tmp_path / "ctc" / CHECKPOINT)])
    assert "a CTC reader reads column windows" in cli_error(
        capsys, ["decode", "--checkpoint", str(tmp_path / "ctc" / CHECKPOINT), "--grid", "4", str(tmp_path / "x.png")])


def test_committee_reads_with_the_mean_of_its_members_scores(tmp_path, capsys, digits):
    for seed in ("1", "2"):
        cli(["train", "--out", str(tmp_path / seed), *TRAIN_ARGS, "--seed", seed])
    paths = [tmp_path / "1" / CHECKPOINT, tmp_path / "2" / CHECKPOINT]
    committee, _ = load_model(paths)
    members = [load_model(p)[0] for p in paths]
    images = [s.image for s in sample_strings(digits[1], 3, np.random.default_rng(4), GeneratorConfig(max_digits=3))]
    with torch.no_grad():
        want = (members[0](images).span_scores + members[1](images).span_scores) / 2
        torch.testing.assert_close(committee(images).span_scores, want)
    cli(["prepare", "--out", str(tmp_path / "test.npz"), "--count", "4", "--min-digits", "2", "--max-digits", "3"])
    cli(["evaluate", "--checkpoint", str(paths[0]), "--checkpoint", str(paths[1]), "--data", str(tmp_path / "test.npz"),
         "--out", str(tmp_path / "committee.json")])
    assert json.loads((tmp_path / "committee.json").read_text())["checkpoint"] == " ".join(map(str, paths))
    cli(["train", "--out", str(tmp_path / "grid"), *TRAIN_ARGS, "--grid", "7"])
    with pytest.raises(ValueError, match="same cuts"):
        load_model([paths[0], tmp_path / "grid" / CHECKPOINT])
    # Read with one grid, readers trained with other grids make a committee.
    mixed, _ = load_model([paths[0], tmp_path / "grid" / CHECKPOINT], cuts={"grid": 4, "min_piece": 1})
    assert mixed.config.cuts == CutConfig(grid=4, min_piece=1) and len(mixed.recogniser.members) == 2
    # A reader that sees the spans' surroundings reads beside one that does not, each its own channels.
    cli(["train", "--out", str(tmp_path / "context"), *TRAIN_ARGS, "--context"])
    seeing = tmp_path / "context" / CHECKPOINT
    both, _ = load_model([paths[0], seeing])
    assert both.config.context and not load_model(paths[0])[0].config.context
    with torch.no_grad():
        want = (members[0](images).span_scores + load_model(seeing)[0](images).span_scores) / 2
        torch.testing.assert_close(both(images).span_scores, want)
    assert "--context is for segmentation readers" in cli_error(
        capsys, ["train", "--out", str(tmp_path / "ctc"), *TRAIN_ARGS, "--criterion", "ctc", "--context"])


def test_views_read_each_crop_as_given_and_as_training_would_deform_it(tmp_path, capsys, digits):
    """Test-time augmentation: view 0 is the crop itself, the others sample it where the training
    deformation of the same random draws would, and the span scores are the views' mean."""
    crops = torch.from_numpy(digits[1].images[:6, None].astype(np.float32) / 255.0)
    scorer = torch.nn.Flatten()  # "scores" that are the pixels, to see what each view read
    views = DeformedViews(3, strength=1.0, seed=5)
    seen = torch.nn.functional.grid_sample(crops.repeat(3, 1, 1, 1), views.grids.repeat_interleave(6, 0),
                                           align_corners=True).reshape(3, 6, -1)
    torch.testing.assert_close(seen[0], crops.reshape(6, -1))
    rng = np.random.default_rng(5)
    for k in (1, 2):
        src_y, src_x = deformation(rng, 28, 28, 1.0)
        for i in range(6):
            want = _bilinear(crops[i, 0].numpy(), src_y, src_x)
            np.testing.assert_allclose(seen[k, i].reshape(28, 28).numpy(), want, atol=1e-5)
    torch.testing.assert_close(Committee([scorer], views)(crops), seen.mean(0))
    torch.testing.assert_close(Committee([scorer], DeformedViews(1))(crops), scorer(crops))
    with pytest.raises(ValueError, match="at least 1"):
        DeformedViews(0)
    # evaluate --views: the reading records them
    cli(["train", "--out", str(tmp_path), *TRAIN_ARGS])
    cli(["prepare", "--out", str(tmp_path / "test.npz"), "--count", "4", "--min-digits", "2", "--max-digits", "3"])
    cli(["evaluate", "--checkpoint", str(tmp_path / CHECKPOINT), "--data", str(tmp_path / "test.npz"), "--views", "3",
         "--out", str(tmp_path / "views.json")])
    assert json.loads((tmp_path / "views.json").read_text())["views"] == 3


def test_export_writes_a_float16_reading_copy(tmp_path, capsys):
    cli(["train", "--out", str(tmp_path / "run"), *TRAIN_ARGS])
    full = tmp_path / "run" / CHECKPOINT
    cli(["export", "--checkpoint", str(full), "--out", str(tmp_path / "copy.pt")])
    copy = torch.load(tmp_path / "copy.pt", weights_only=False)
    assert "optimizer" not in copy and all(v.dtype == torch.float16 for v in copy["model"].values())
    original, _ = load_model(full)
    reader, _ = load_model(tmp_path / "copy.pt")
    strings = sample_strings(load_digits(), 3, np.random.default_rng(2), GeneratorConfig(max_digits=3))
    images = [s.image for s in strings]
    with torch.no_grad():
        torch.testing.assert_close(reader(images).span_scores, original(images).span_scores, rtol=0, atol=0.05)
    cli(["train", "--out", str(tmp_path / "init"), *TRAIN_ARGS, "--init", str(tmp_path / "copy.pt")])
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / CHECKPOINT).write_bytes((tmp_path / "copy.pt").read_bytes())
    assert "holds weights only" in cli_error(capsys, ["train", "--out", str(tmp_path / "resume"), *TRAIN_ARGS,
                                                      "--resume"])


def test_metrics_by_hand():
    assert edit_distance("1234", "1234") == (0, 0, 0)
    assert edit_distance("1234", "124") == (0, 1, 0)
    assert edit_distance("", "12") == (0, 0, 2)
    assert edit_distance("9876", "1234") == (4, 0, 0)
    assert confusions(["9542", "2120", "144471"], ["0542", "8120", "1444791"]) == [
        {"reference": "9", "hypothesis": "0", "count": 1}, {"reference": "2", "hypothesis": "8", "count": 1},
        {"reference": "-", "hypothesis": "9", "count": 1}]
    confidence = np.array([0.9, 0.8, 0.8, 0.3])
    correct = np.array([True, False, True, False])
    curve = reject_curve(confidence, correct)
    # Thresholds: accept none, the top one, the top three (tie at 0.8), all.
    assert [(r["correct"], r["error"], r["reject"]) for r in curve] == [
        (0.0, 0.0, 100.0), (25.0, 0.0, 75.0), (50.0, 25.0, 25.0), (50.0, 50.0, 0.0)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_steps_on_cuda(tmp_path):
    path = train(tmp_path, ModelConfig(**TINY), tiny_train_config(steps=2), device="cuda", progress=False)
    state = torch.load(path, weights_only=False)
    assert state["step"] == 2
    samples = sample_strings(load_digits(), 2, np.random.default_rng(0), GeneratorConfig(max_digits=3))
    model = SegmentationReader(ModelConfig(**TINY)).cuda()
    interp = model([s.image for s in samples])
    assert interp.span_scores.device.type == "cuda" and interp.graphs.device.type == "cuda"
    assert len(read_batch(model, [s.image for s in samples])) == 2
