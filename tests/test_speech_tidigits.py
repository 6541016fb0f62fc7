"""The real speakers' test set (recipes/speech_digits/tidigits.py), from stand-ins for
pocketsphinx's source archive: what it takes out of the archive, how it converts it, and what it
refuses. Nothing here downloads (make speech-demo reads the real archive)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from tidigits_archive import UTTERANCES, dct_features, write_archive

from gtn_py.errors import FormatError
from recipes.common import InputError
from recipes.speech_digits.data import load_labelled, read_transcripts, utterance_table
from recipes.speech_digits.frontend import transform_conversion
from recipes.speech_digits.mfc import read_mfc
from recipes.speech_digits.tidigits import ARCHIVE, MEMBERS, download, extract, fetch, folder


def test_extract_writes_converted_features_transcripts_and_speakers(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a.tar.gz")
    out = extract(archive, tmp_path / "real")
    assert read_transcripts(out / "transcripts.txt") == UTTERANCES
    assert {u: r["speaker"] for u, r in utterance_table(out).items()} == {
        "man.ah.35oa": "man.ah", "man.ah.8b": "man.ah", "woman.ak.o69a": "woman.ak", "woman.ak.za": "woman.ak"}
    for i, utt in enumerate(UTTERANCES):
        np.testing.assert_allclose(read_mfc(out / "mfc" / f"{utt}.mfc"),
                                   dct_features(40 + i, i) @ transform_conversion("dct"), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["mfc", "transcripts.txt", "utterances.tsv"]
    assert [u.utt_id for u in load_labelled(out / "mfc", out / "transcripts.txt")] == list(UTTERANCES)


def test_extract_takes_only_regular_files_of_the_tidigits_folder(tmp_path: Path) -> None:
    """Members that climb out of the folder, lie below or beside it, or are links are passed over:
    nothing is written by the archive's own paths."""
    evil = {f"{MEMBERS}../../evil.mfc": b"x", f"{MEMBERS}hmm/means": b"x", "pocketsphinx-5.1.1/x.mfc": b"x"}
    archive = write_archive(tmp_path / "a.tar.gz", extra=evil)
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as tar:
        with tarfile.open(archive, "r:gz") as source:
            for member in source:
                tar.addfile(member, source.extractfile(member))
        link = tarfile.TarInfo(f"{MEMBERS}link.mfc")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link, io.BytesIO())
    out = extract(tmp_path / "b.tar.gz", tmp_path / "real")
    assert sorted(p.name for p in (out / "mfc").iterdir()) == sorted(f"{u}.mfc" for u in UTTERANCES)
    assert not (tmp_path / "evil.mfc").exists() and not list(tmp_path.glob("**/means"))


@pytest.mark.parametrize("case,message", [
    ("missing features", "no features"),
    ("bad name", "not a TIDIGITS utterance name"),
    ("no transcripts", "no pocketsphinx"),
    ("not an archive", "not a readable"),
])
def test_extract_refuses_what_is_not_the_set_and_keeps_the_old_folder(tmp_path: Path, case: str,
                                                                       message: str) -> None:
    out = extract(write_archive(tmp_path / "good.tar.gz"), tmp_path / "real")
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.tar.gz"
    if case == "missing features":
        write_archive(bad, features=["man.ah.35oa"])
    elif case == "bad name":
        write_archive(bad, {**UTTERANCES, "speaker7.1b": ("one",)})
    elif case == "no transcripts":
        with tarfile.open(bad, "w:gz"):
            pass
    else:
        bad.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(FormatError, match=message):
        extract(bad, out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_download_refuses_an_archive_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    """A cached archive with another hash (here the stand-in) is refused, by fetch too."""
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    write_archive(root / "downloads" / ARCHIVE)
    with pytest.raises(InputError, match="SHA-256"):
        download(root / "downloads")
    with pytest.raises(InputError, match="SHA-256"):
        fetch(root)
    assert not folder(root).exists()


def test_fetch_reuses_the_folder_it_made(tmp_path: Path) -> None:
    root = tmp_path / "root"
    extract(write_archive(tmp_path / "a.tar.gz"), folder(root))
    assert fetch(root, log=lambda _: pytest.fail("nothing to download")) == folder(root)
