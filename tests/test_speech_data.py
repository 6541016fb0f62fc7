"""The speech recipe's data side: Sphinx .mfc files, transcripts, feature directories, synthesis."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gtn_py.errors import FormatError
from recipes.speech_digits.data import (
    DIGIT_WORDS,
    cmn,
    load_corpus,
    load_directory,
    load_labelled,
    read_transcripts,
    utterance_table,
    write_transcripts,
)
from recipes.speech_digits.frontend import DEFAULT_CONFIG, MfccConfig, mfcc, read_wav, resample, write_wav
from recipes.speech_digits.mfc import mfc_byteorder, read_mfc, write_mfc

SYNTH_TOOLS = ("espeak-ng", "flite", "sox")
needs_synth = pytest.mark.skipif(
    any(shutil.which(t) is None for t in SYNTH_TOOLS),
    reason="espeak-ng, flite or sox missing: apt-get install espeak-ng flite sox (make speech-deps)",
)

needs_festival = pytest.mark.skipif(
    any(shutil.which(t) is None for t in (*SYNTH_TOOLS, "text2wave")),
    reason="festival, espeak-ng, flite or sox missing: make speech-deps installs them and festival's voices",
)


def features(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(frames, 13)).astype(np.float32)


# --- .mfc files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_mfc_round_trip(tmp_path: Path, byteorder: str) -> None:
    feats = features(37)
    write_mfc(tmp_path / "a.mfc", feats, byteorder)
    data = (tmp_path / "a.mfc").read_bytes()
    assert len(data) == 4 + 37 * 13 * 4
    assert int.from_bytes(data[:4], byteorder) == 37 * 13
    assert mfc_byteorder(data) == byteorder
    back = read_mfc(tmp_path / "a.mfc")
    assert back.dtype == np.float32 and back.dtype.isnative
    np.testing.assert_array_equal(back, feats)


def test_mfc_big_endian_detected_from_header(tmp_path: Path) -> None:
    # Built by hand, as a big-endian machine writes it: count, then the floats, all big-endian.
    feats = features(3, seed=1)
    data = np.array([39], ">i4").tobytes() + feats.astype(">f4").tobytes()
    (tmp_path / "be.mfc").write_bytes(data)
    np.testing.assert_array_equal(read_mfc(tmp_path / "be.mfc"), feats)
    # Read as little-endian the same bytes would be garbage; the header says which order is right.
    assert int.from_bytes(data[:4], "little") != 39


def test_mfc_empty_file_of_zero_frames(tmp_path: Path) -> None:
    write_mfc(tmp_path / "empty.mfc", np.zeros((0, 13)))
    assert read_mfc(tmp_path / "empty.mfc").shape == (0, 13)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00", "too short"),
        (np.int32(40).tobytes() + np.zeros(39, "<f4").tobytes(), "holds 39"),  # count mismatch
        (np.int32(39).tobytes() + np.zeros(39, "<f4").tobytes() + b"\x00\x00", "whole number"),
        (np.int32(26).tobytes() + np.zeros(26, "<f4").tobytes(), None),  # valid: two frames
        (np.int32(20).tobytes() + np.zeros(20, "<f4").tobytes(), "whole frames"),
        (np.int32(13).tobytes() + np.full(13, np.nan, "<f4").tobytes(), "NaN"),
    ],
)
def test_mfc_malformed_raises_format_error(tmp_path: Path, data: bytes, message: str | None) -> None:
    path = tmp_path / "bad.mfc"
    path.write_bytes(data)
    if message is None:
        assert read_mfc(path).shape == (2, 13)
        return
    with pytest.raises(FormatError, match=message) as info:
        read_mfc(path)
    assert str(path) in str(info.value)


@pytest.mark.skipif(shutil.which("sphinx_fe") is None, reason="sphinx_fe missing: apt-get install sphinxbase-utils")
def test_reads_sphinx_fe_output_and_its_big_endian_twin(tmp_path: Path) -> None:
    x = np.rint(np.random.default_rng(2).normal(0, 2000, 8000))
    write_wav(tmp_path / "a.wav", x, 16000)
    out = tmp_path / "a.mfc"
    subprocess.run(["sphinx_fe", "-i", str(tmp_path / "a.wav"), "-o", str(out), "-mswav", "yes",
                    *DEFAULT_CONFIG.sphinx_fe_args()], check=True, capture_output=True)
    data = out.read_bytes()
    assert mfc_byteorder(data) == "little"  # sphinx_fe writes the machine's order
    # The same file as a big-endian machine writes it: every 4-byte word swapped.
    (tmp_path / "be.mfc").write_bytes(np.frombuffer(data, "<u4").astype(">u4").tobytes())
    assert mfc_byteorder((tmp_path / "be.mfc").read_bytes()) == "big"
    for path in (out, tmp_path / "be.mfc"):
        assert np.abs(read_mfc(path) - mfcc(x)).max() < 1e-4


# --- transcripts --------------------------------------------------------------------------------------


def test_transcripts_round_trip_and_parse(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("one two three (utt-1)\n\n  oh   zero (spk2_utt-2)  \nnine(u3)\n(empty-utt)\n")
    parsed = read_transcripts(path, DIGIT_WORDS)
    assert parsed == {"utt-1": ("one", "two", "three"), "spk2_utt-2": ("oh", "zero"), "u3": ("nine",),
                      "empty-utt": ()}
    write_transcripts(tmp_path / "u.txt", parsed.items())
    assert read_transcripts(tmp_path / "u.txt") == parsed
    assert (tmp_path / "u.txt").read_text().splitlines()[0] == "one two three (utt-1)"


@pytest.mark.parametrize(
    "text, message, line",
    [
        ("one two\n", "expected", 1),
        ("one (a)\ntwo (a b)\n", "expected", 2),
        ("one (a)\ntwo (a)\n", "twice", 2),
        ("one (a)\n\nten (b)\n", "unknown", 3),
        ("one (a) two\n", "expected", 1),
    ],
)
def test_transcripts_malformed(tmp_path: Path, text: str, message: str, line: int) -> None:
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(FormatError, match=message) as info:
        read_transcripts(path, DIGIT_WORDS)
    assert info.value.line == line


def test_write_transcripts_rejects_bad_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="utterance id"):
        write_transcripts(tmp_path / "t.txt", [("a b", ["one"])])


# --- feature directories ------------------------------------------------------------------------------


def test_cmn() -> None:
    feats = features(50) + 3.0
    normed = cmn(feats)
    np.testing.assert_allclose(normed.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(normed - feats, np.broadcast_to(-feats.mean(axis=0), feats.shape), atol=1e-5)
    assert cmn(np.zeros((0, 13))).shape == (0, 13)


def test_load_directory_mixes_wav_rates_and_mfc(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = np.rint(rng.normal(0, 2000, 16000))
    write_wav(tmp_path / "b.wav", x, 16000)
    write_wav(tmp_path / "c.WAV", np.rint(resample(x, 16000, 8000)), 8000)
    write_mfc(tmp_path / "a.mfc", features(20) + 5.0, "big")
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = load_directory(tmp_path)
    assert [utt for utt, _ in loaded] == ["a", "b", "c"]
    for _, feats in loaded:
        assert feats.dtype == np.float32 and feats.shape[1] == 13
        np.testing.assert_allclose(feats.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(loaded[0][1], cmn(features(20) + 5.0), atol=1e-5)
    np.testing.assert_allclose(loaded[1][1], cmn(mfcc(x)), atol=1e-5)
    assert loaded[2][1].shape == loaded[1][1].shape  # 8 kHz input resampled to 16 kHz


def test_load_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no .wav or .mfc"):
        load_directory(tmp_path)
    with pytest.raises(FormatError, match="not a directory"):
        load_directory(tmp_path / "missing")
    write_mfc(tmp_path / "a.mfc", features(2))
    write_wav(tmp_path / "a.wav", np.zeros(800), 16000)
    with pytest.raises(FormatError, match="two files"):
        load_directory(tmp_path)


def test_load_labelled_follows_transcripts(tmp_path: Path) -> None:
    for utt in ("u1", "u2", "u3"):
        write_mfc(tmp_path / f"{utt}.mfc", features(5, seed=len(utt)))
    write_transcripts(tmp_path / "t.txt", [("u2", ["one", "oh"]), ("u1", ["nine"])])
    labelled = load_labelled(tmp_path, tmp_path / "t.txt")
    assert [(u.utt_id, u.words) for u in labelled] == [("u2", ("one", "oh")), ("u1", ("nine",))]
    write_transcripts(tmp_path / "t.txt", [("u4", ["one"])])
    with pytest.raises(FormatError, match="no .wav/.mfc"):
        load_labelled(tmp_path, tmp_path / "t.txt")


def test_mfc_made_with_the_dct_transform_is_converted_on_loading(tmp_path: Path) -> None:
    """A folder of .mfc files made with ``-transform dct``, read with ``mfc_transform="dct"``, gives
    the recipe's own (legacy) features of the same sound to within the conversion's smoothing."""
    x = np.rint(np.random.default_rng(4).normal(0, 2000, 16000))
    write_mfc(tmp_path / "u1.mfc", mfcc(x, MfccConfig(transform="dct")))
    write_transcripts(tmp_path / "t.txt", [("u1", ["one"])])
    (converted,) = load_labelled(tmp_path, tmp_path / "t.txt", mfc_transform="dct")
    ((_, unconverted),) = load_directory(tmp_path)
    expected = cmn(mfcc(x))
    assert np.abs(converted.features - expected).max() < 0.02 < np.abs(unconverted - expected).max()
    ((_, again),) = load_directory(tmp_path, mfc_transform="dct")
    np.testing.assert_array_equal(again, converted.features)


# --- synthesis ----------------------------------------------------------------------------------------


@needs_synth
def test_voice_split_is_disjoint_and_stable() -> None:
    from recipes.speech_digits.synth import split_voices, utterance_spec

    train_espeak, train_flite = split_voices("train")
    test_espeak, test_flite = split_voices("test")
    assert train_espeak and test_espeak and train_flite and test_flite
    assert not set(train_espeak + train_flite) & set(test_espeak + test_flite)
    # Held-out test voices share neither accent nor variant with any training voice.
    train_accents = {v.name.split("+")[0] for v in train_espeak}
    train_variants = {v.name.split("+")[1] for v in train_espeak if "+" in v.name}
    for voice in test_espeak:
        accent, variant = voice.name.split("+")
        assert accent not in train_accents and variant not in train_variants
    # Deterministic given (seed, split, index); different seeds give different corpora.
    assert utterance_spec(0, "train", 5) == utterance_spec(0, "train", 5)
    assert [utterance_spec(0, "train", i) for i in range(5)] != [utterance_spec(1, "train", i) for i in range(5)]
    lengths = {len(utterance_spec(0, "train", i).words) for i in range(200)}
    assert lengths == set(range(1, 8))


@needs_synth
def test_generated_voices_join_training_only() -> None:
    from recipes.speech_digits.synth import TEST_ESPEAK_ACCENTS, generated_variant, split_voices, utterance_spec

    plain, _ = split_voices("train")
    more, _ = split_voices("train", generated=3)
    added = [v for v in more if v not in plain]
    assert all(v.is_generated for v in added) and not any(v.is_generated for v in plain)
    assert len(added) == 3 * len({v.name.split("+")[0] for v in plain})  # each generated variant in each accent
    assert not any(v.name.split("+")[0] in TEST_ESPEAK_ACCENTS for v in added)
    assert split_voices("test", generated=3) == split_voices("test")
    with pytest.raises(ValueError, match="generated voices"):
        split_voices("train", generated=-1)
    # The test split and the seed's corpus without generated voices are unchanged.
    test_specs = [utterance_spec(0, "test", i) for i in range(40)]
    assert [utterance_spec(0, "test", i, generated=3) for i in range(40)] == test_specs
    assert utterance_spec(0, "train", 9, generated=3) == utterance_spec(0, "train", 9, generated=3)
    # Each generated variant is a function of (seed, index); the vocal tract scales vary between voices.
    texts = [generated_variant(0, i) for i in range(30)]
    assert texts == [generated_variant(0, i) for i in range(30)] and len(set(texts)) == 30
    assert generated_variant(1, 0) != texts[0]
    f1 = [int(next(line for line in t.splitlines() if line.startswith("formant 1 ")).split()[2]) for t in texts]
    assert 70 <= min(f1) < 95 and 130 < max(f1) <= 165
    keywords = {"language", "name", "pitch", "formant", "flutter", "roughness", "voicing", "breath", "echo"}
    assert {line.split()[0] for t in texts for line in t.splitlines()} <= keywords


@needs_synth
def test_generated_voice_is_spoken_with_its_own_variant(tmp_path: Path) -> None:
    from dataclasses import replace

    from recipes.speech_digits.synth import SynthesisError, Voice, synthesize, utterance_spec, write_generated_voices

    spec = next(s for s in (utterance_spec(0, "train", i, generated=2) for i in range(100)) if s.voice.is_generated)
    home = write_generated_voices(tmp_path / "corpus", seed=0, count=2)
    variant = spec.voice.name.split("+")[1]
    assert (home / "espeak-ng-data" / "voices" / "!v" / variant).read_text().startswith("language variant")
    spoken = synthesize(spec, seed=0, espeak_home=home)
    accent_only = synthesize(replace(spec, voice=Voice("espeak-ng", spec.voice.name.split("+")[0])), seed=0)
    assert spoken.size > 8000 and np.abs(spoken).max() > 1000
    assert spoken.shape != accent_only.shape or not np.allclose(spoken, accent_only)
    with pytest.raises(SynthesisError, match="generated voice"):
        synthesize(spec, seed=0)


@needs_synth
def test_as_many_generated_voices_as_espeak_ng_can_list(tmp_path: Path) -> None:
    """espeak-ng lists at most ~349 voices: past that, a voice dropped from its list is not found or, worse,
    silently spoken with another. A generated voice must sound the same however many others are listed."""
    import re
    from dataclasses import replace

    from recipes.speech_digits.synth import (
        ESPEAK_ACCENTS,
        TEST_ESPEAK_ACCENTS,
        SynthesisError,
        Voice,
        synthesize,
        utterance_spec,
        write_generated_voices,
    )

    with pytest.raises(SynthesisError, match="at most") as too_many:
        write_generated_voices(tmp_path / "corpus", seed=0, count=1000)
    most = int(re.search(r"at most (\d+) generated", str(too_many.value)).group(1))
    assert most >= 100  # the shipped models' corpus has 100 (prepare --generated-voices 100)
    home = write_generated_voices(tmp_path / "corpus", seed=0, count=most)
    one = write_generated_voices(tmp_path / "one", seed=0, count=1)
    spec = replace(utterance_spec(0, "train", 0), rate=170.0, word_gap=0, reverb=None, snr_db=None)
    accents = [a for a in ESPEAK_ACCENTS if a not in TEST_ESPEAK_ACCENTS]

    def speak(voice: str, espeak_home: Path) -> np.ndarray:
        return synthesize(replace(spec, voice=Voice("espeak-ng", voice)), seed=0, espeak_home=espeak_home)

    last = [speak(f"{a}+gen{most - 1:03d}", home) for a in accents]
    assert len({audio.tobytes() for audio in last}) == len(accents)  # each accent its own, none a fallback
    for accent in accents:
        assert np.array_equal(speak(f"{accent}+gen000", home), speak(f"{accent}+gen000", one)), accent


@needs_synth
def test_generated_accents_join_training_only() -> None:
    """Generated accents are training accents changed: never a test accent's phoneme table or rules."""
    from recipes.speech_digits.synth import (
        ACCENT_FEATURES,
        TEST_ESPEAK_ACCENTS,
        TRAINING_DICTRULES,
        TRAINING_PHONEME_TABLES,
        corpus_dir,
        generated_accent,
        split_voices,
        utterance_spec,
    )

    plain, _ = split_voices("train", generated=2)
    more, _ = split_voices("train", generated=2, accents=3)
    added = [v for v in more if v not in plain]
    accents = {v.name.split("+")[0] for v in added}
    assert accents == {"en-x-acc000", "en-x-acc001", "en-x-acc002"} and all(v.is_generated for v in added)
    # Each generated accent is spoken by the default voice, every training variant and every generated one.
    assert len(added) == 3 * len([v for v in plain if v.name.split("+")[0] == "en-us"])
    assert split_voices("test", generated=2, accents=3) == split_voices("test")
    assert [utterance_spec(0, "test", i, 2, 3) for i in range(40)] == [utterance_spec(0, "test", i) for i in range(40)]
    with pytest.raises(ValueError, match="generated accents"):
        split_voices("train", accents=1001)
    assert corpus_dir("data", 0, 100, 30).name == "v1-seed0-gen100-acc30"
    assert corpus_dir("data", 0, 0, 30).name == "v1-seed0-acc30"
    texts = [generated_accent(0, i) for i in range(60)]
    assert texts == [generated_accent(0, i) for i in range(60)] and len(set(texts)) == 60
    assert generated_accent(1, 0) != texts[0]
    keywords = {"name", "language", "phonemes", "dictrules", "stressLength", "stressAmp", "replace"}
    replacements = {f"{old} {new}" for feature in ACCENT_FEATURES.values() for old, new in feature}
    test_tables = {"en-sc", "en-wi"}  # the phoneme tables of TEST_ESPEAK_ACCENTS (lang/gmw/en-GB-scotland, en-029)
    assert len(test_tables) == len(TEST_ESPEAK_ACCENTS)
    features_drawn = []
    for text in texts:
        lines = [line.split(maxsplit=1) for line in text.splitlines()]
        assert {key for key, _ in lines} <= keywords
        values = dict((key, value) for key, value in lines if key != "replace")
        assert values.get("phonemes", "en") in TRAINING_PHONEME_TABLES and values.get("phonemes") not in test_tables
        assert values.get("dictrules", "") in TRAINING_DICTRULES
        replaced = [value.split(maxsplit=1)[1] for key, value in lines if key == "replace"]
        assert set(replaced) <= replacements
        sources = [r.split()[0] for r in replaced]
        assert len(sources) == len(set(sources))  # one change per phoneme
        features_drawn.append(len(replaced))
    assert 2 <= np.mean(features_drawn) <= 7 and min(features_drawn) < max(features_drawn)


@needs_synth
def test_every_accent_feature_is_spoken_in_every_training_table(tmp_path: Path) -> None:
    """espeak-ng silently drops a replacement it cannot read (a phoneme missing from the table, or one it
    does not replace, as LOT's 0): each feature's new phonemes must appear in what it speaks."""
    from recipes.speech_digits.synth import ACCENT_FEATURES, TRAINING_PHONEME_TABLES, write_generated_voices

    home = write_generated_voices(tmp_path / "corpus", seed=0, count=0)
    languages = home / "espeak-ng-data" / "lang" / "gen"
    words = "oh zero one two three four five six seven eight nine the thin how sing cut dress trap nurse away"
    def speak(name: str, table: str, changes: tuple[tuple[str, str], ...]) -> str:
        text = f"name {name}\nlanguage {name}\nphonemes {table}\n"
        (languages / name).write_text(text + "".join(f"replace 00 {old} {new}\n" for old, new in changes))
        return subprocess.run(["espeak-ng", "--path", str(home), "-q", "-x", "-v", name, words],
                              capture_output=True, text=True, check=True).stdout

    for table in TRAINING_PHONEME_TABLES:
        unchanged = speak("en-x-acc000", table, ())
        for feature, changes in ACCENT_FEATURES.items():
            spoken = speak("en-x-acc001", table, changes)
            assert spoken != unchanged, (table, feature, spoken)
            assert all(new == "NULL" or new in spoken for _, new in changes), (table, feature, spoken)


@needs_synth
def test_generated_accent_is_spoken_with_its_own_accent(tmp_path: Path) -> None:
    from dataclasses import replace

    from recipes.speech_digits.synth import Voice, synthesize, utterance_spec, write_generated_voices

    specs = (utterance_spec(0, "train", i, accents=2) for i in range(200))
    spec = next(s for s in specs if s.voice.name.split("+")[0] == "en-x-acc001")
    home = write_generated_voices(tmp_path / "corpus", seed=0, count=0, accents=2)
    assert (home / "espeak-ng-data" / "lang" / "gen" / "en-x-acc001").read_text().startswith("name en-x-acc001")
    spoken = synthesize(spec, seed=0, espeak_home=home)
    other = synthesize(replace(spec, voice=Voice("espeak-ng", spec.voice.name.replace("acc001", "acc000"))),
                       seed=0, espeak_home=home)
    assert spoken.size > 8000 and np.abs(spoken).max() > 1000
    assert spoken.shape != other.shape or not np.allclose(spoken, other)


@needs_synth
def test_festival_voices_speak_a_share_of_each_split() -> None:
    """A festival share changes the voice (and its rate, pitch and pauses) of that share of the
    utterances and nothing else; training hears kal and slt, the test ked alone."""
    from dataclasses import replace

    from recipes.speech_digits.synth import FESTIVAL_VOICES, corpus_dir, festival_voices, utterance_spec

    names = [v.name for split in ("train", "test") for v in festival_voices(split)]
    assert sorted(names) == sorted(FESTIVAL_VOICES)
    assert [v.name for v in festival_voices("test")] == ["ked_diphone"]
    for split in ("train", "test"):
        plain = [utterance_spec(2, split, i, 3, 2) for i in range(400)]
        assert [utterance_spec(2, split, i, 3, 2, festival=0.0) for i in range(400)] == plain
        shared = [utterance_spec(2, split, i, 3, 2, festival=0.25) for i in range(400)]
        spoken = [s for s in shared if s.voice.engine == "festival"]
        assert 70 <= len(spoken) <= 130
        assert {s.voice for s in spoken} == set(festival_voices(split))
        for before, after in zip(plain, shared):
            if after.voice.engine == "festival":
                assert replace(after, voice=before.voice, rate=before.rate, pitch=before.pitch,
                               word_gap=before.word_gap) == before
                assert 0.75 <= after.rate <= 1.35 and -4 <= after.pitch <= 5
            else:
                assert after == before
        everyone = [utterance_spec(2, split, i, festival=1.0) for i in range(50)]
        assert all(s.voice.engine == "festival" for s in everyone)
    with pytest.raises(ValueError, match="festival share"):
        utterance_spec(0, "train", 0, festival=1.5)
    assert corpus_dir("data", 2, 100, 60, 0.25).name == "v1-seed2-gen100-acc60-fest25"
    assert corpus_dir("data", 8, festival=1.0).name == "v1-seed8-fest100"
    assert corpus_dir("data", 8, festival=0.0).name == "v1-seed8"
    with pytest.raises(ValueError, match="whole percentage"):
        corpus_dir("data", 0, festival=0.125)


@needs_synth
def test_foreign_voices_speak_a_share_of_each_split_in_their_spelling() -> None:
    """A foreign share changes the voice of that share of the utterances, drawn apart from the
    festival share and over it; a foreign voice reads the words respelt in its language, and only
    machac is held out for the test."""
    from dataclasses import replace

    from recipes.speech_digits.synth import (
        FOREIGN_VOICES,
        RESPELLINGS,
        Voice,
        corpus_dir,
        festival_voices,
        utterance_spec,
    )

    assert [v.name for v in festival_voices("test", foreign=True)] == ["czech_machac"]
    assert len(festival_voices("train", foreign=True)) == len(FOREIGN_VOICES) - 1
    assert all(set(spelling) == set(DIGIT_WORDS) for spelling in RESPELLINGS.values())
    for split in ("train", "test"):
        english = [utterance_spec(2, split, i, 3, 2, festival=0.25) for i in range(400)]
        both = [utterance_spec(2, split, i, 3, 2, festival=0.25, foreign=0.2) for i in range(400)]
        foreign_names = {v.name for v in festival_voices(split, foreign=True)}
        spoken = [s for s in both if s.voice.name in foreign_names]
        assert 50 <= len(spoken) <= 115 and {s.voice.name for s in spoken} == foreign_names
        for before, after in zip(english, both):
            if after.voice.name in foreign_names:
                assert replace(after, voice=before.voice, rate=before.rate, pitch=before.pitch,
                               word_gap=before.word_gap) == before
            else:
                assert after == before
    spec = replace(utterance_spec(0, "train", 0), words=("three", "oh", "zero"), word_gap=0)
    assert replace(spec, voice=Voice("festival", "lp_diphone")).text == "tri ou ziro"
    assert replace(spec, voice=Voice("festival", "czech_dita"), word_gap=1).text == "tri, ou, zirou"
    assert replace(spec, voice=Voice("festival", "kal_diphone")).text == "three oh zero"
    with pytest.raises(ValueError, match="foreign share"):
        utterance_spec(0, "train", 0, foreign=-0.1)
    assert corpus_dir("data", 2, 100, 60, 0.25, 0.2).name == "v1-seed2-gen100-acc60-fest25-for20"
    assert corpus_dir("data", 2, foreign=1.0).name == "v1-seed2-for100"
    with pytest.raises(ValueError, match="foreign share: a whole percentage"):
        corpus_dir("data", 0, foreign=0.333)


@needs_festival
def test_festival_voice_is_spoken_at_its_rate_and_pitch(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from recipes.speech_digits import synth
    from recipes.speech_digits.synth import (
        FESTIVAL_VOICES,
        FOREIGN_VOICES,
        SynthesisError,
        Voice,
        synthesize,
        utterance_spec,
    )

    base = replace(utterance_spec(0, "train", 0), words=("three", "oh", "seven"), speed=1.0, tempo=1.0,
                   reverb=None, snr_db=None, lead_s=0.0, trail_s=0.0, word_gap=0, pitch=0.0)
    for name in (*FESTIVAL_VOICES, *FOREIGN_VOICES):
        spec = replace(base, voice=Voice("festival", name))
        slow, fast = (synthesize(replace(spec, rate=r), seed=0) for r in (1.3, 0.8))
        assert np.abs(fast).max() > 1000 and 0.3 * 16000 < fast.size < slow.size * 0.8, name
        higher = synthesize(replace(spec, rate=0.8, pitch=4.0), seed=0)
        n = min(higher.size, fast.size)
        assert abs(higher.size - fast.size) < 0.05 * fast.size and not np.allclose(higher[:n], fast[:n])
    with pytest.raises(ValueError, match="unknown festival voice"):
        synthesize(replace(base, voice=Voice("festival", "rms")), seed=0)
    monkeypatch.setattr(synth, "FESTIVAL_VOICES", (*FESTIVAL_VOICES, "not_installed_diphone"))
    with pytest.raises(SynthesisError, match="wrote no audio"):
        synthesize(replace(base, voice=Voice("festival", "not_installed_diphone")), seed=0)
    # festival's lp dies of SIGSEGV reading "tu" at a stretch of 0.797, every time: spoken 2 % slower.
    crashing = replace(base, voice=Voice("festival", "lp_diphone"), words=("two",), rate=0.797)
    assert np.abs(synthesize(crashing, seed=0)).max() > 1000
    stretches = []

    def crash(command: list[str], stdin: bytes | None = None) -> bytes:
        stretches.append(command[command.index("-eval") + 3])
        raise synth.ToolCrash("text2wave died of signal 11")

    monkeypatch.setattr(synth, "_run", crash)
    with pytest.raises(synth.ToolCrash):
        synthesize(crashing, seed=0)
    assert stretches == [f"(Parameter.set 'Duration_Stretch {r})" for r in ("0.797", "0.8129", "0.8292", "0.8458")]


@needs_festival
def test_prepare_with_a_festival_share(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recipes.speech_digits.__main__ import main

    main(["prepare", "--root", str(tmp_path), "--seed", "3", "--train-size", "3", "--test-size", "2",
          "--festival-share", "1", "--jobs", "1"])
    out = capsys.readouterr().out
    assert "train voices:" in out and "2 festival (kal_diphone, cmu_us_slt_arctic_hts)" in out
    assert "1 festival (ked_diphone)" in out
    assert "test: 2 utterances, 1 distinct voices, by engine {'festival': 2}" in out
    corpus = tmp_path / "v1-seed3-fest100"
    table = utterance_table(corpus / "train")
    assert len(table) == 3 and all(row["voice"].startswith("festival:") for row in table.values())
    assert [u.words for u in load_corpus(corpus, "test")] == [
        tuple(row["text"].split()) for row in utterance_table(corpus / "test").values()]
    main(["prepare", "--root", str(tmp_path), "--seed", "3", "--train-size", "2", "--test-size", "1",
          "--foreign-share", "1", "--jobs", "1"])
    out = capsys.readouterr().out
    assert "6 foreign (lp_diphone, pc_diphone, " in out and "1 foreign (czech_machac)" in out
    table = utterance_table(tmp_path / "v1-seed3-for100" / "test")
    assert [row["voice"] for row in table.values()] == ["festival:czech_machac"]
    assert all(w in DIGIT_WORDS for row in table.values() for w in row["text"].split())  # the English words


@needs_synth
def test_prepare_tiny_corpus_is_deterministic_and_cached(tmp_path: Path) -> None:
    from recipes.speech_digits.synth import prepare, utterance_spec

    corpus = prepare(tmp_path / "a", seed=7, sizes={"train": 2, "test": 1}, jobs=2)
    again = prepare(tmp_path / "b", seed=7, sizes={"train": 2, "test": 1}, jobs=1)
    for split, n in (("train", 2), ("test", 1)):
        utts = load_corpus(corpus, split)
        assert [u.utt_id for u in utts] == [f"{split}-{i:06d}" for i in range(n)]
        for i, u in enumerate(utts):
            assert u.words == utterance_spec(7, split, i).words
            wav = corpus / split / "wav" / f"{u.utt_id}.wav"
            assert wav.read_bytes() == (again / split / "wav" / wav.name).read_bytes()
            samples, rate = read_wav(wav)
            assert rate == 16000 and 0.3 < samples.size / rate < 15 and np.abs(samples).max() > 1000
            # The cached features are the front end's on the stored WAV, mean-normalised on load.
            np.testing.assert_allclose(u.features, cmn(mfcc(samples)), atol=1e-4)
    # A cached utterance is not synthesised again; a larger corpus extends the smaller one.
    stamp = (corpus / "train" / "wav" / "train-000000.wav").stat().st_mtime_ns
    prepare(tmp_path / "a", seed=7, sizes={"train": 3}, jobs=1)
    assert (corpus / "train" / "wav" / "train-000000.wav").stat().st_mtime_ns == stamp
    assert len(load_corpus(corpus, "train")) == 3
    # The table of each utterance's parameters names its voice and, for `evaluate --by accent`, its accent.
    table = utterance_table(corpus / "train")
    for i in range(3):
        voice = utterance_spec(7, "train", i).voice
        assert table[f"train-{i:06d}"]["voice"] == str(voice)
        assert table[f"train-{i:06d}"]["accent"] == voice.accent == str(voice).split("+")[0]
