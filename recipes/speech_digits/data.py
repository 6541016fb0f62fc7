"""Loading: feature directories (WAV or Sphinx .mfc) with cepstral mean normalisation, and transcripts.

Transcript files use the Sphinx convention, one utterance a line: ``one two three (utterance-id)``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gtn_py.errors import FormatError

from .frontend import DEFAULT_CONFIG, MfccConfig, transform_conversion, wav_features
from .mfc import read_mfc

# "oh" and "zero" are different words, as in TIDIGITS.
DIGIT_WORDS = ("oh", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_TRANSCRIPT_LINE = re.compile(r"^(?P<words>.*?)\s*\((?P<utt>[^()\s]+)\)$")
_FEATURE_SUFFIXES = (".wav", ".mfc")


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    features: np.ndarray  # [T, 13] float32, mean-normalised
    words: tuple[str, ...]


def read_transcripts(path: str | Path, vocabulary: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Utterance id -> words, in file order, from lines ``word word ... (utt-id)``.

    Blank lines are skipped. Raises FormatError naming the line for a line without a trailing
    ``(utt-id)``, a repeated id, or (when ``vocabulary`` is given) a word outside it.
    """
    return parse_transcripts(Path(path).read_text(encoding="utf-8"), vocabulary, str(path))


def parse_transcripts(text: str, vocabulary: Sequence[str] | None = None,
                      path: str | None = None) -> dict[str, tuple[str, ...]]:
    """:func:`read_transcripts` of the file's text (``path`` names it in errors)."""
    known = None if vocabulary is None else set(vocabulary)
    transcripts: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        match = _TRANSCRIPT_LINE.match(line)
        if match is None:
            raise FormatError(f"expected 'word ... (utterance-id)', got {line!r}", line=number, path=path)
        utt, words = match["utt"], tuple(match["words"].split())
        if utt in transcripts:
            raise FormatError(f"utterance id {utt!r} appears twice", line=number, path=path)
        if known is not None:
            unknown = [w for w in words if w not in known]
            if unknown:
                raise FormatError(f"unknown words {unknown} in {utt!r}", line=number, path=path)
        transcripts[utt] = words
    return transcripts


def write_transcripts(path: str | Path, transcripts: Iterable[tuple[str, Sequence[str]]]) -> None:
    """Write ``(utt_id, words)`` pairs as Sphinx transcript lines."""
    lines = []
    for utt, words in transcripts:
        if not utt or any(c.isspace() or c in "()" for c in utt):
            raise ValueError(f"utterance id {utt!r} must be non-empty, without spaces or parentheses")
        lines.append(f"{' '.join(words)} ({utt})".lstrip())
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def cmn(features: np.ndarray) -> np.ndarray:
    """Per-utterance cepstral mean normalisation: subtract each coefficient's mean over the frames."""
    feats = np.asarray(features, dtype=np.float32)
    if feats.shape[0] == 0:
        return feats.copy()
    return feats - feats.mean(axis=0, keepdims=True)


def feature_files(directory: str | Path) -> dict[str, Path]:
    """Utterance id (file name without extension) -> .wav or .mfc file in ``directory`` (not recursive).

    Raises FormatError if the directory holds no such files or two files share an utterance id.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FormatError("not a directory", path=str(directory))
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in _FEATURE_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise FormatError(f"utterance id {path.stem!r} has two files: {files[path.stem].name}, {path.name}",
                              path=str(directory))
        files[path.stem] = path
    if not files:
        raise FormatError("no .wav or .mfc files", path=str(directory))
    return files


def load_features(path: str | Path, config: MfccConfig = DEFAULT_CONFIG, mfc_transform: str | None = None
                  ) -> np.ndarray:
    """CMN-normalised features ``[T, num_cepstra]`` of one .wav (any rate, resampled) or .mfc file;
    an .mfc file made by ``sphinx_fe -transform mfc_transform`` (default: ``config``'s) is converted
    to ``config``'s cepstra (:func:`~.frontend.transform_conversion`)."""
    path = Path(path)
    if path.suffix.lower() == ".mfc":
        feats = read_mfc(path, config.num_cepstra)
        if mfc_transform not in (None, config.transform):
            feats = (feats @ transform_conversion(mfc_transform, config)).astype(np.float32)
    elif path.suffix.lower() == ".wav":
        feats = wav_features(path, config)
    else:
        raise FormatError("expected a .wav or .mfc file", path=str(path))
    return cmn(feats)


def load_directory(directory: str | Path, config: MfccConfig = DEFAULT_CONFIG, mfc_transform: str | None = None
                   ) -> list[tuple[str, np.ndarray]]:
    """``(utt_id, features [T, 13])`` for every .wav/.mfc file of a directory, sorted by id, with CMN
    (``mfc_transform`` as in :func:`load_features`)."""
    return [(utt, load_features(path, config, mfc_transform)) for utt, path in feature_files(directory).items()]


def load_labelled(
    directory: str | Path, transcripts: str | Path, config: MfccConfig = DEFAULT_CONFIG,
    mfc_transform: str | None = None,
) -> list[Utterance]:
    """The utterances listed in a transcript file, in its order, with features from ``directory``
    (``mfc_transform`` as in :func:`load_features`).

    Raises FormatError if a listed utterance has no feature file or a word is not a digit word.
    """
    files = feature_files(directory)
    labelled = read_transcripts(transcripts, DIGIT_WORDS)
    missing = [utt for utt in labelled if utt not in files]
    if missing:
        raise FormatError(f"{len(missing)} transcribed utterances have no .wav/.mfc file, e.g. {missing[:3]}",
                          path=str(directory))
    return [Utterance(utt, load_features(files[utt], config, mfc_transform), words)
            for utt, words in labelled.items()]


def write_utterance_table(path: str | Path, fields: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write an ``utterances.tsv`` (read by :func:`utterance_table`): a header of ``fields``, the
    first ``utt_id``, then a tab-separated line per row, ``-`` for a value that is None."""
    if not fields or fields[0] != "utt_id":
        raise ValueError(f"the first column of an utterance table is utt_id, got {list(fields)}")
    lines = ["\t".join(fields)] + ["\t".join("-" if v is None else str(v) for v in row) for row in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def utterance_table(split_dir: str | Path) -> dict[str, dict[str, str]]:
    """Utterance id -> its row of the ``utterances.tsv`` that synth.prepare writes into each split
    (voice, rate, pitch, snr_db, noise, ...). Raises FormatError if the file is missing or has no
    ``utt_id`` column."""
    path = Path(split_dir) / "utterances.tsv"
    if not path.exists():
        raise FormatError("no utterances.tsv here (synth.prepare writes one per split)", path=str(path))
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and "utt_id" not in rows[0]:
        raise FormatError("no utt_id column", path=str(path))
    return {row["utt_id"]: row for row in rows}


def load_corpus(corpus: str | Path, split: str, config: MfccConfig = DEFAULT_CONFIG) -> list[Utterance]:
    """A split of a corpus made by synth.prepare: the utterances of its transcripts.txt, from its .mfc files."""
    split_dir = Path(corpus) / split
    return load_labelled(split_dir / "mfc", split_dir / "transcripts.txt", config)
