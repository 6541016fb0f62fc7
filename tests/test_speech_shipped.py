"""The speech recipe's shipped models (recipes/speech_digits/shipped/): each loads as weights only
and reads a folder of two WAV files synthesised here (a training voice and a held-out one, clean),
and decode and evaluate without --checkpoint read with the best of them and say so."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from tidigits_archive import write_archive

from recipes import common
from recipes.common import InputError
from recipes.speech_digits.__main__ import (
    SHIPPED,
    SHIPPED_INDEX,
    default_reading,
    main,
    shipped_models,
    shipped_readings,
)
from recipes.speech_digits.data import load_corpus, write_transcripts
from recipes.speech_digits.frontend import write_wav
from recipes.speech_digits.kinds import READERS
from recipes.speech_digits.synth import Voice, synthesize, utterance_spec
from recipes.speech_digits.tidigits import extract, folder

SYNTH_TOOLS = ("espeak-ng", "flite", "sox")
needs_synth = pytest.mark.skipif(
    any(shutil.which(t) is None for t in SYNTH_TOOLS),
    reason="espeak-ng, flite or sox missing: apt-get install espeak-ng flite sox (make speech-deps)",
)
MODELS = shipped_models()
# Two utterances: a training accent of espeak-ng and the flite voice that training never hears.
UTTERANCES = {"first": (("three", "nine", "one"), Voice("espeak-ng", "en-us")),
              "second": (("eight", "oh", "two", "five"), Voice("flite", "rms"))}


@pytest.fixture(scope="module")
def two_wavs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wavs")
    for utt_id, (words, voice) in UTTERANCES.items():
        spec = dataclasses.replace(utterance_spec(0, "test", 0), utt_id=utt_id, words=words, voice=voice,
                                   rate=160.0 if voice.engine == "espeak-ng" else 1.0,
                                   pitch=50.0 if voice.engine == "espeak-ng" else 120.0, word_gap=0,
                                   speed=1.0, tempo=1.0, reverb=None, snr_db=None, level_db=6.0)
        write_wav(folder / f"{utt_id}.wav", synthesize(spec, seed=0), 16000)
    write_transcripts(folder / "transcripts.txt", [(u, w) for u, (w, _) in UTTERANCES.items()])
    return folder


def test_the_list_names_committed_reading_copies_with_their_figures() -> None:
    assert MODELS, f"{SHIPPED_INDEX} lists no model"
    readme = (SHIPPED.parent / "RESULTS.md").read_text()  # each file with its figures and command
    for m in MODELS:
        state = torch.load(m["path"], map_location="cpu", weights_only=True)  # weights only: no code runs
        assert "optimizer" not in state and state["model_config"]["kind"] == m["kind"]
        assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
        assert m["path"].stat().st_size < 8e6
        assert m["command"].startswith("python -m recipes.speech_digits train ") and m["file"] in readme
        assert 0 <= m["test_wer"] <= 100 and f"{m['test_wer']:g} %" in readme
    for r in shipped_readings():  # models reading as one: shipped files, the figure in RESULTS.md
        assert all(p in [m["path"] for m in MODELS] for p in r["paths"]) and f"{r['test_wer']:g} %" in readme
        assert r["name"] in readme


@needs_synth
@pytest.mark.parametrize("model", MODELS, ids=[m["file"] for m in MODELS])
def test_each_shipped_model_reads_two_wavs(model: dict, two_wavs: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "evaluation.json"
    # DTW templates read the isolated words that their entry's segmenter cuts out: 7 words, 7 "utterances".
    segmenter = ["--segmenter", str(SHIPPED / model["segmenter"])] if model["kind"] == "dtw" else []
    main(["evaluate", "--checkpoint", str(model["path"]), "--input", str(two_wavs),
          "--transcripts", str(two_wavs / "transcripts.txt"), "--out", str(out), *segmenter])
    summary = json.loads(out.read_text())
    assert summary["model"] == model["kind"] and summary["words"] == 7
    assert summary["utterances"] == (7 if segmenter else 2)
    # Clean speech, one training accent and one held-out voice: at most one word wrong.
    errors = summary["substitutions"] + summary["deletions"] + summary["insertions"]
    assert errors <= 1, summary["hypotheses"]
    assert "WER" in capsys.readouterr().out


@needs_synth
def test_decode_and_evaluate_read_with_the_best_shipped_model_by_default(
        two_wavs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    best = default_reading()
    assert best == min(shipped_readings(), key=lambda r: r["test_wer"])
    assert best["test_wer"] <= min(m["test_wer"] for m in MODELS if m["kind"] in READERS)
    capsys.readouterr()
    main(["decode", "--input", str(two_wavs)])
    captured = capsys.readouterr()
    assert f"{best['name']} ({' '.join(map(str, best['paths']))}" in captured.err
    assert [line.rsplit(" ", 1)[-1] for line in captured.out.splitlines()] == ["(first)", "(second)"]
    # evaluate's results go under out/speech_digits/, never into the committed folder
    monkeypatch.chdir(tmp_path)
    main(["evaluate", "--input", str(two_wavs), "--transcripts", str(two_wavs / "transcripts.txt")])
    assert f"{best['name']} (" in capsys.readouterr().err
    written = list((tmp_path / "out" / "speech_digits").glob(f"{best['paths'][0].stem}-*evaluation.json"))
    assert len(written) == 1
    summary = json.loads(written[0].read_text())
    assert summary["warps"] == list(best["warps"]) and summary["words"] == 7
    assert summary["substitutions"] + summary["deletions"] + summary["insertions"] <= 1, summary["hypotheses"]
    assert not list(SHIPPED.glob("*.json*")) or sorted(p.name for p in SHIPPED.glob("*.json*")) == ["models.json"]


def test_export_writes_a_reading_copy_that_reads_like_the_checkpoint(tmp_path: Path) -> None:
    state = common.load_checkpoint(MODELS[0]["path"])
    full = {**state, "model": {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()},
            "optimizer": {"state": {}, "param_groups": []}}
    common.save_checkpoint(tmp_path / "run.pt", full)
    main(["export", "--checkpoint", str(tmp_path / "run.pt"), "--out", str(tmp_path / "copy.pt")])
    copy = common.load_checkpoint(tmp_path / "copy.pt")
    assert "optimizer" not in copy and copy["model_config"] == state["model_config"]
    for name, value in copy["model"].items():
        assert torch.equal(value, state["model"][name])


def test_a_missing_or_malformed_list_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no list of shipped models here"):
        shipped_models(tmp_path / "models.json")
    (tmp_path / "models.json").write_text(json.dumps({"models": [{"file": "x.pt"}]}))
    with pytest.raises(common.GraphError, match="not a list of shipped models"):
        shipped_models(tmp_path / "models.json")
    (tmp_path / "models.json").write_text(json.dumps({"models": [{"file": "x.pt", "kind": "dtw", "test_wer": 9,
                                                                  "command": ""}]}))
    with pytest.raises(InputError, match="lists no model that reads on its own"):
        default_reading(tmp_path / "models.json")
    listing = {"models": [{"file": "x.pt", "kind": "ctc", "test_wer": 9, "command": ""}],
               "readings": [{"name": "both", "files": ["x.pt", "y.pt"], "warps": [], "combine": "answers",
                             "test_wer": 5}]}
    (tmp_path / "models.json").write_text(json.dumps(listing))
    with pytest.raises(common.GraphError, match="listed models"):
        shipped_readings(tmp_path / "models.json")


@needs_synth
def test_demo_reads_fresh_utterances_with_every_shipped_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``make speech-demo``'s command, on 6 utterances and a stand-in for the real speakers' set
    (already fetched, so nothing downloads): a row per shipped model and reading for the fresh
    utterances and the real speakers, per model and for the default reading for the same utterances
    spoken by the held-out festival voice, the JSON table and the alignment report written."""
    extract(write_archive(tmp_path / "archive.tar.gz"), folder(tmp_path / "data"))
    main(["demo", "--count", "6", "--root", str(tmp_path / "data"), "--out", str(tmp_path), "--jobs", "1",
          "--viz-count", "2", "--quiet"])
    table = json.loads((tmp_path / "speech_demo.json").read_text())
    readings = shipped_readings()
    joint = [r for r in readings if len(r["paths"]) > 1 or r["warps"]]
    assert joint[0] is readings[0]  # the default reading combines: the festival voice's set reads it alone
    for key, every in (("models", joint), ("diphone_voice", joint[:1]), ("real_speakers", joint)):
        rows = table[key] if key == "models" else table[key]["models"]
        assert [row["file"] for row in rows] == [m["file"] for m in MODELS] + [r["name"] for r in every]
        # Insertions can take a tiny set's WER past 100 %.
        assert all(row["words"] > 0 and row["wer"] == pytest.approx(
            100 * (row["sub"] + row["del"] + row["ins"]) / row["words"], abs=1e-3) for row in rows)
        if key != "models":
            figure = {"real_speakers": "real_wer", "diphone_voice": "diphone_wer"}[key]
            assert [row["results_wer"] for row in rows] == [m.get(figure) for m in MODELS] + [r[figure] for r in every]
    fresh, spoken = (load_corpus(Path(c), "test") for c in (table["corpus"], table["diphone_voice"]["corpus"]))
    assert [u.words for u in spoken] == [u.words for u in fresh]  # the same utterances, another voice
    assert table["diphone_voice"]["corpus"].endswith("-fest100")
    assert (tmp_path / "viz" / "index.html").is_file()
    out = capsys.readouterr().out
    assert "4 utterances of real speakers" in out
    assert "6 utterances of held-out voices" in out and all(m["file"] in out for m in MODELS)
