"""Real speakers: the TIDIGITS utterances that pocketsphinx's source distribution ships.

The recipe trains and tests on synthetic voices. The one set of people reading digit strings
that a package registry serves is in pocketsphinx's source distribution on PyPI: for its own
regression test it holds the Sphinx features of 31 TIDIGITS utterances (Leonard, 1984; LDC93S10),
read by an adult man (``man.ah``, 16 utterances) and an adult woman (``woman.ak``, 15), 107
words, with their transcripts. They were made by ``sphinx_fe`` with the parameters of
pocketsphinx's TIDIGITS model (its ``feat.params``): the recipe's front end (20 mel filters from
1 to 4000 Hz, 25 ms windows every 10 ms, 13 cepstra) but the ``dct`` cepstral transform, dither
and unrounded filter edges.

:func:`fetch` downloads that archive with pip (one pinned version, checked against its SHA-256),
reads the named members out of it (nothing is extracted to disk by the archive's own paths),
converts the cepstra to the recipe's (:func:`~.frontend.transform_conversion`) and writes the
folder that ``evaluate`` reads: ``mfc/``, ``transcripts.txt`` and ``utterances.tsv`` (a
``speaker`` column, for ``evaluate --by speaker``). The recordings themselves stay where the
archive's licence keeps them: the project ships none of them, only the command that fetches them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gtn_py.errors import FormatError

from ..common import InputError
from .data import DIGIT_WORDS, parse_transcripts, write_transcripts, write_utterance_table
from .frontend import DEFAULT_CONFIG, transform_conversion
from .mfc import parse_mfc, write_mfc

PACKAGE = "pocketsphinx"
VERSION = "5.1.1"
ARCHIVE = f"{PACKAGE}-{VERSION}.tar.gz"
ARCHIVE_SHA256 = "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
MEMBERS = f"{PACKAGE}-{VERSION}/test/data/tidigits/"
TRANSCRIPTS = "tidigits.lsn"
SOURCE_TRANSFORM = "dct"  # feat.params of pocketsphinx's TIDIGITS model: -transform dct
# TIDIGITS names an utterance category.speaker.digits+take: man.ah.2934za
_UTTERANCE = re.compile(r"^(?P<speaker>(?:man|woman|boy|girl)\.[a-z]{2})\.[0-9oz]+[ab]$")
_LARGEST_MEMBER = 1 << 20  # bytes; the largest feature file there is 23 kB


def folder(root: str | Path) -> Path:
    """Where :func:`fetch` writes the set under a data root."""
    return Path(root) / "tidigits"


def download(cache: str | Path, log: Callable[[str], object] = print) -> Path:
    """The source archive in ``cache`` (downloaded by pip unless there already), its SHA-256
    checked. Raises InputError when pip cannot get it (no package index in reach) or the file is
    not the pinned one."""
    cache = Path(cache)
    archive = cache / ARCHIVE
    if not archive.exists():
        cache.mkdir(parents=True, exist_ok=True)
        log(f"downloading {PACKAGE}=={VERSION}'s source archive with pip ...")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   f"{PACKAGE}=={VERSION}", "--dest", str(cache)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not archive.exists():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise InputError(f"pip could not download {PACKAGE}=={VERSION}'s source archive: {last}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != ARCHIVE_SHA256:
        raise InputError(f"{archive} has SHA-256 {digest}, not {PACKAGE} {VERSION}'s {ARCHIVE_SHA256}: "
                         "delete it and fetch again")
    return archive


def _members(archive: Path) -> dict[str, bytes]:
    """Basename -> contents of the regular files directly in the TIDIGITS folder of the archive."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix(MEMBERS)
                if member.name == name or "/" in name or not member.isfile():
                    continue
                if member.size > _LARGEST_MEMBER:
                    raise FormatError(f"{member.name}: {member.size} bytes, more than a feature file holds",
                                      path=str(archive))
                data = tar.extractfile(member)
                if data is not None:
                    found[name] = data.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FormatError(f"not a readable .tar.gz archive: {e}", path=str(archive)) from None
    return found


def extract(archive: str | Path, out: str | Path) -> Path:
    """Write the set in ``out`` from the archive: the features of every transcribed utterance,
    converted to the recipe's cepstra, its transcripts and its speakers. The folder appears whole
    or not at all. Raises FormatError when the archive lacks the transcripts or a transcribed
    utterance's features, or holds a feature file that is not one."""
    archive, out = Path(archive), Path(out)
    members = _members(archive)
    if TRANSCRIPTS not in members:
        raise FormatError(f"no {MEMBERS}{TRANSCRIPTS} in the archive", path=str(archive))
    staging = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "mfc").mkdir(parents=True)
    try:
        transcripts = parse_transcripts(members[TRANSCRIPTS].decode("utf-8", errors="replace"), DIGIT_WORDS,
                                        f"{archive}:{TRANSCRIPTS}")
        conversion = transform_conversion(SOURCE_TRANSFORM, DEFAULT_CONFIG)
        speakers = []
        for utt in transcripts:
            match = _UTTERANCE.match(utt)
            if match is None:
                raise FormatError(f"{utt!r} is not a TIDIGITS utterance name", path=f"{archive}:{TRANSCRIPTS}")
            if f"{utt}.mfc" not in members:
                raise FormatError(f"no features {MEMBERS}{utt}.mfc for the transcribed {utt}", path=str(archive))
            features = parse_mfc(members[f"{utt}.mfc"], DEFAULT_CONFIG.num_cepstra, f"{archive}:{utt}.mfc")
            write_mfc(staging / "mfc" / f"{utt}.mfc", (features @ conversion).astype(np.float32))
            speakers.append((utt, match["speaker"]))
        write_transcripts(staging / "transcripts.txt", transcripts.items())
        write_utterance_table(staging / "utterances.tsv", ("utt_id", "speaker"), speakers)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def fetch(root: str | Path, log: Callable[[str], object] = print) -> Path:
    """The real speakers' folder under ``root`` (:func:`folder`), made by :func:`download` and
    :func:`extract` unless it is there already."""
    out = folder(root)
    if not (out / "transcripts.txt").exists():
        extract(download(Path(root) / "downloads", log), out)
    return out
