"""A stand-in for pocketsphinx's source archive: its TIDIGITS folder with made-up features, for
the tests of recipes/speech_digits/tidigits.py and of the demo, which must not download."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recipes.speech_digits.mfc import write_mfc
from recipes.speech_digits.tidigits import MEMBERS, TRANSCRIPTS

# Two utterances of each speaker, as the real folder names them.
UTTERANCES = {"man.ah.35oa": ("three", "five", "oh"), "man.ah.8b": ("eight",),
              "woman.ak.o69a": ("oh", "six", "nine"), "woman.ak.za": ("zero",)}


def dct_features(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(frames, 13)).astype(np.float32)


def mfc_bytes(features: np.ndarray, tmp: Path) -> bytes:
    write_mfc(tmp / "scratch.mfc", features, "big")  # the archive's files are big-endian
    return (tmp / "scratch.mfc").read_bytes()


def write_archive(path: Path, utterances: Mapping[str, Sequence[str]] = UTTERANCES,
                  features: Sequence[str] | None = None, extra: Mapping[str, bytes] | None = None) -> Path:
    """A .tar.gz with the transcripts of ``utterances`` and features for those of ``features``
    (default: all of them, ``dct_features(40 + i, i)`` for the i-th), plus ``extra`` members
    named in full."""
    members = {MEMBERS + TRANSCRIPTS: "".join(f"{' '.join(w)} ({u})\n" for u, w in utterances.items()).encode()}
    for i, utt in enumerate(utterances):
        if features is None or utt in features:
            members[f"{MEMBERS}{utt}.mfc"] = mfc_bytes(dct_features(40 + i, i), path.parent)
    members.update(extra or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
