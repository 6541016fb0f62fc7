"""The recipes on bad input: a checkpoint never runs code, user errors are one line `error: ...`
with exit status 2, real-world images are read as the readers were trained (cropped to the ink,
transparency as paper, a blank page rejected), --help shows the defaults."""

from __future__ import annotations

import json
import pickle
import re
import struct
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from gtn_py.errors import GraphError
from recipes import common
from recipes.check_reader.__main__ import DEFAULT_THRESHOLD
from recipes.check_reader.__main__ import main as check_reader
from recipes.check_reader.data import (
    HEIGHT,
    INK_HEIGHT,
    GeneratorConfig,
    load_digits,
    load_strings,
    make_strings,
    page_to_string,
    read_png,
    save_strings,
    write_png,
)
from recipes.check_reader.model import ModelConfig, build_reader
from recipes.check_reader.train import TrainConfig
from recipes.speech_digits.__main__ import main as speech

ROOT = Path(__file__).resolve().parents[1]
READERS = ROOT / "recipes" / "check_reader" / "readers"


class CreatesAFile:
    """Unpickling this would create ``target`` (what a hostile checkpoint could do instead)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def error_of(command, argv: list[str], capsys) -> str:
    """The one line a command prints for input it refuses (exit status 2, no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        command(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def tiny_reader(tmp_path_factory) -> Path:
    """An untrained tiny reader saved as train saves one (outside any run folder)."""
    torch.manual_seed(0)
    config = ModelConfig(channels=(4, 8), hidden=16)
    path = tmp_path_factory.mktemp("reader") / "tiny.pt"
    common.save_checkpoint(path, {"model": build_reader(config).state_dict(), "step": 0,
                                  "model_config": config.to_dict(), "train_config": asdict(TrainConfig())})
    return path


@pytest.fixture(scope="module")
def strings(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "strings.npz"
    save_strings(make_strings(load_digits(), 3, seed=1, config=GeneratorConfig(min_digits=2, max_digits=3)), path)
    return path


# ---------------------------------------------------------------------- checkpoints never run code
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path, capsys, writer):
    target = tmp_path / "created_by_unpickling"
    evil = tmp_path / "evil.pt"
    state = {"model": {}, "step": CreatesAFile(target)}
    if writer == "torch.save":
        torch.save(state, evil)
    else:
        evil.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(common.InputError, match="refused: loading it would call .*open"):
        common.load_checkpoint(evil)
    assert "refused" in error_of(check_reader, ["decode", "--checkpoint", str(evil), str(tmp_path)], capsys)
    assert "refused" in error_of(speech, ["decode", "--checkpoint", str(evil), "--input", str(tmp_path)], capsys)
    assert not target.exists()


def test_checkpoints_hold_plain_values_only(tmp_path):
    with pytest.raises(TypeError, match=r"state\['model_config'\] is a ModelConfig"):
        common.save_checkpoint(tmp_path / "a.pt", {"model": {}, "model_config": ModelConfig()})
    assert not list(tmp_path.iterdir())
    for name in ("not_there.pt", "text.pt", "empty.pt", "list.pt"):
        path = tmp_path / name
        if name == "text.pt":
            path.write_text("hello\n")
        elif name == "empty.pt":
            path.write_bytes(b"")
        elif name == "list.pt":
            torch.save([1, 2], path)
        with pytest.raises(common.InputError, match=re.escape(str(path))) as refused:
            common.load_checkpoint(path)
        assert isinstance(refused.value, GraphError)


def test_the_committed_readers_load_as_weights_only():
    paths = sorted(READERS.glob("*.pt"))
    assert len(paths) >= 11
    for path in paths:
        state = common.load_checkpoint(path)
        assert {"model", "model_config", "train_config", "step"} <= set(state)


# ---------------------------------------------------------------------- images as they come
def _page(image: np.ndarray) -> np.ndarray:
    """A string image as written on white paper with wide margins."""
    page = np.full((200, 400), 255, np.uint8)
    page[60:60 + HEIGHT, 50:50 + image.shape[1]] = 255 - image
    return page


def test_pages_are_cropped_to_the_ink_with_transparency_as_paper(tmp_path, strings):
    image = load_strings(strings).image(0)
    plain = page_to_string(image)
    assert plain is not None and plain.shape[0] == HEIGHT
    write_png(tmp_path / "margins.png", _page(image))
    rgba = np.zeros((100, 300, 4), np.uint8)
    rgba[30:30 + HEIGHT, 20:20 + image.shape[1], 3] = image  # black ink, transparent paper
    write_png(tmp_path / "transparent.png", rgba)
    grey = np.full((90, 260), 200, np.uint8)  # grey paper, dark grey ink
    grey[10:10 + HEIGHT, 5:5 + image.shape[1]] -= (image * (150 / 255)).astype(np.uint8)
    write_png(tmp_path / "grey.png", grey)
    for name in ("margins", "transparent"):
        np.testing.assert_array_equal(page_to_string(read_png(tmp_path / f"{name}.png")), plain, err_msg=name)
    assert np.abs(page_to_string(read_png(tmp_path / "grey.png")).astype(int) - plain).max() <= 2
    # A scan at four times the size: ink scaled to the training strings' height, 2 blank columns each side.
    big = page_to_string(np.pad(np.kron(255 - image, np.ones((4, 4), np.uint8)), 40, constant_values=255))
    rows, cols = np.flatnonzero(big.max(axis=1) >= 64), np.flatnonzero(big.max(axis=0) >= 64)
    assert big.shape[0] == HEIGHT and rows[-1] - rows[0] + 1 == INK_HEIGHT and big.max() == 255
    assert cols[0] == 2 and cols[-1] == big.shape[1] - 3
    # Blank pages (white, grey, transparent, a faint smudge) have no ink.
    for blank in (np.full((50, 80), 255, np.uint8), np.full((50, 80), 128, np.uint8), np.zeros((5, 5), np.uint8)):
        assert page_to_string(blank) is None
    smudge = np.full((50, 80), 250, np.uint8)
    smudge[20:30, 20:40] = 225
    assert page_to_string(smudge) is None
    write_png(tmp_path / "clear.png", np.zeros((40, 40, 4), np.uint8))
    assert page_to_string(read_png(tmp_path / "clear.png")) is None


def _png(width: int, height: int, depth: int, colour: int, rows: np.ndarray, *chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG of unfiltered ``rows`` (bytes [height, row bytes]) with extra chunks before the pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + row.tobytes() for row in np.asarray(rows, np.uint8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + b"".join(chunk(k, b) for k, b in chunks) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_pngs_of_every_depth_and_palettes_are_read(tmp_path):
    """What scanners and image optimisers write: 1-bit grey, palettes (with transparency), 16 bits."""
    bits = np.array([[1, 0, 1, 1, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 1]], np.uint8)
    (tmp_path / "bw.png").write_bytes(_png(9, 2, 1, 0, np.packbits(bits, axis=1)))
    np.testing.assert_array_equal(read_png(tmp_path / "bw.png"), bits * 255)
    palette = np.array([[255, 255, 255], [0, 0, 0], [90, 90, 90]], np.uint8)
    index = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    packed = (index[:, 0::2] << 4) | np.pad(index[:, 1::2], ((0, 0), (0, 1)))  # two 4-bit entries a byte
    (tmp_path / "palette.png").write_bytes(_png(3, 2, 4, 3, packed, (b"PLTE", palette.tobytes()),
                                                (b"tRNS", bytes([255, 255, 0]))))
    np.testing.assert_array_equal(read_png(tmp_path / "palette.png"), [[255, 0, 255], [255, 0, 255]])
    sixteen = np.array([[0x1234, 0xFF00], [0x0080, 0x8000]], ">u2")
    (tmp_path / "sixteen.png").write_bytes(_png(2, 2, 16, 0, sixteen.view(np.uint8).reshape(2, 4)))
    np.testing.assert_array_equal(read_png(tmp_path / "sixteen.png"), [[0x12, 0xFF], [0x00, 0x80]])
    (tmp_path / "interlaced.png").write_bytes((tmp_path / "bw.png").read_bytes().replace(
        struct.pack(">IIBBBBB", 9, 2, 1, 0, 0, 0, 0), struct.pack(">IIBBBBB", 9, 2, 1, 0, 0, 0, 1)))
    with pytest.raises(common.InputError, match="interlaced is not supported"):
        read_png(tmp_path / "interlaced.png")


def test_decode_rejects_a_blank_page_and_reads_folders(tmp_path, capsys, tiny_reader, strings):
    image = load_strings(strings).image(0)
    pages = tmp_path / "pages"
    pages.mkdir()
    write_png(pages / "a_margins.png", _page(image))
    write_png(pages / "b_blank.png", np.full((60, 200), 255, np.uint8))
    write_png(pages / "c_plain.png", 255 - image)
    check_reader(["decode", "--checkpoint", str(tiny_reader), "--quiet", str(pages)])
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [Path(name).name for name, *_ in lines] == ["a_margins.png", "b_blank.png", "c_plain.png"]
    assert lines[1][1:] == ["", "0.0000  REJECT: no ink"]
    assert lines[0][1:] == lines[2][1:]
    # The default threshold rejects: an untrained reader is never that sure.
    assert 0 < DEFAULT_THRESHOLD < 1 and lines[0][2].endswith("  REJECT")


def test_the_default_threshold_is_the_measured_one_in_the_readme():
    readme = (ROOT / "README_RECIPES.md").read_text()
    assert f"--threshold {DEFAULT_THRESHOLD}" in readme or f"threshold {DEFAULT_THRESHOLD}" in readme


# ---------------------------------------------------------------------- user errors: one line, status 2
def test_check_reader_user_errors_are_one_line(tmp_path, capsys, tiny_reader, strings):
    ckpt = str(tiny_reader)
    err = error_of(check_reader, ["evaluate", "--checkpoint", ckpt, "--data", str(tmp_path / "valid.npz")], capsys)
    assert "no such file" in err and "prepare" in err
    assert "no such checkpoint file" in error_of(
        check_reader, ["decode", "--checkpoint", str(tmp_path / "none.pt"), str(strings)], capsys)
    (tmp_path / "photo.png").write_text("not an image")
    assert "not a PNG file" in error_of(check_reader, ["decode", "--checkpoint", ckpt, str(tmp_path / "photo.png")],
                                        capsys)
    write_png(tmp_path / "cut.png", np.full((30, 30), 255, np.uint8))
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:40])
    assert "cut.png" in error_of(check_reader, ["decode", "--checkpoint", ckpt, str(tmp_path / "cut.png")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no .png or .npz files" in error_of(check_reader, ["decode", "--checkpoint", ckpt,
                                                               str(tmp_path / "empty")], capsys)
    np.savez(tmp_path / "other.npz", pixels=np.zeros(3))
    assert "no 'images' array" in error_of(check_reader, ["decode", "--checkpoint", ckpt, str(tmp_path / "other.npz")],
                                           capsys)
    assert "not a check reader's checkpoint" in error_of(
        check_reader, ["decode", "--checkpoint", str(_speech_like(tmp_path)), str(strings)], capsys)
    assert "--min-digits 5 is more than --max-digits 3" in error_of(
        check_reader, ["prepare", "--out", str(tmp_path / "x.npz"), "--min-digits", "5", "--max-digits", "3"], capsys)
    with pytest.raises(SystemExit) as stopped:  # argparse's own refusals exit with status 2 too
        check_reader(["decode", "--checkpoint", ckpt, "--grammar", "length:6-4", str(strings)])
    assert stopped.value.code == 2 and "MIN <= MAX" in capsys.readouterr().err


def _speech_like(tmp_path: Path) -> Path:
    path = tmp_path / "speech.pt"
    common.save_checkpoint(path, {"model": {}, "model_config": {"kind": "ctc", "encoder": {}}, "step": 1,
                                  "train_config": {"steps": 1}})
    return path


def test_speech_user_errors_are_one_line(tmp_path, capsys):
    err = error_of(speech, ["train", "--out", str(tmp_path / "run"), "--corpus", str(tmp_path / "corpus")], capsys)
    assert "run `python -m recipes.speech_digits prepare`" in err
    err = error_of(speech, ["train", "--out", str(tmp_path / "run"), "--model", "hybrid", "--option", "templates=2"],
                   capsys)
    assert "not a setting of --model hybrid (its settings: states, criterion, transitions, word_score)" in err
    assert "expected KEY=VALUE" in error_of(speech, ["train", "--out", str(tmp_path), "--option", "states"], capsys)
    assert "option states=0: must be finite and at least 1" in error_of(
        speech, ["train", "--out", str(tmp_path), "--model", "hybrid", "--option", "states=0"], capsys)
    assert "not a setting of --model ctc (its settings: units, criterion, word_score)" in error_of(
        speech, ["train", "--out", str(tmp_path), "--option", "states=3"], capsys)


def test_speech_checkpoints_of_other_models_are_one_line_errors(tmp_path, capsys, tiny_reader):
    """A check reader, or a speech model whose weights do not fit its config, given to decode."""
    err = error_of(speech, ["decode", "--checkpoint", str(tiny_reader), "--input", str(tmp_path)], capsys)
    assert "not a speech-digits model" in err
    state = common.load_checkpoint(ROOT / "recipes" / "speech_digits" / "shipped" / "ctc.pt")
    state["model"] = {k: v[..., :1] if v.dim() else v for k, v in state["model"].items()}
    cut = tmp_path / "cut.pt"
    common.save_checkpoint(cut, state)
    err = error_of(speech, ["decode", "--checkpoint", str(cut), "--input", str(tmp_path)], capsys)
    assert "its weights do not fit the model its config describes (Error(s) in loading state_dict" in err


def test_help_shows_the_defaults(capsys):
    for command, argv, wanted in ((check_reader, ["decode", "--help"], r"strings read at once\s+\(default:\s+32\)"),
                                  (check_reader, ["train", "--help"], r"--steps STEPS\s+default: 600"),
                                  (speech, ["train", "--help"], r"--steps STEPS\s+(\(default|default):")):
        with pytest.raises(SystemExit):
            command(argv)
        assert re.search(wanted, capsys.readouterr().out), argv


# ---------------------------------------------------------------------- where evaluate writes, progress
def test_evaluate_writes_outside_the_readers_folder_with_progress(tmp_path, capsys, monkeypatch, tiny_reader,
                                                                   strings):
    monkeypatch.chdir(tmp_path)
    before = sorted(tiny_reader.parent.iterdir())
    check_reader(["evaluate", "--checkpoint", str(tiny_reader), "--data", str(strings)])
    assert sorted(tiny_reader.parent.iterdir()) == before
    written = tmp_path / "out" / "check_reader" / "evaluation.json"
    assert json.loads(written.read_text())["strings"] == 3
    captured = capsys.readouterr()
    assert f"written: {Path('out') / 'check_reader' / 'evaluation.json'}" in captured.out
    assert "3/3" in captured.err and "string/s" in captured.err  # the progress line, on stderr
    check_reader(["evaluate", "--checkpoint", str(tiny_reader), "--data", str(strings), "--quiet",
                  "--out", str(tmp_path / "e.json")])
    assert capsys.readouterr().err == "" and (tmp_path / "e.json").exists()
