"""viz/: the gallery renders, and a run report renders in headless Chromium with its pictures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from recipes.check_reader import report
from recipes.check_reader.__main__ import main as cli
from recipes.check_reader.data import read_png_rgb
from viz.gallery import ENTRIES, Entry, build_gallery

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAS_DOT = shutil.which("dot") is not None



def screenshot(page: Path, png: Path, tmp: Path, size: str = "1400,2000") -> np.ndarray:
    assert CHROMIUM is not None
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp / 'chromium-profile'}", f"--screenshot={png}", f"--window-size={size}",
                    "--hide-scrollbars", page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    return read_png_rgb(png)[..., :3].astype(np.int64)


def region_of(shot: np.ndarray, colour: str) -> tuple[slice, slice]:
    """Bounding box of the pixels painted exactly ``colour`` (a figure's background)."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    mask = (shot == rgb).all(axis=2)
    assert mask.sum() > 2000, f"no figure with background {colour} in the screenshot"
    ys, xs = np.nonzero(mask)
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def drawn_fraction(shot: np.ndarray, colour: str) -> float:
    """Fraction of a figure's box that is not its background (lines, text, graph)."""
    box = shot[region_of(shot, colour)]
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(box - rgb).sum(axis=2) > 30).mean())


@pytest.mark.skipif(not HAS_DOT, reason="needs graphviz's dot (make system-deps)")
def test_gallery_renders_every_entry(tmp_path):
    def missing():
        raise ImportError("No module named 'gtn_py.criteria.nothing'")

    index = build_gallery(tmp_path, ENTRIES + [Entry("later", "a builder whose module is not there yet", missing)])
    page = index.read_text()
    for entry in ENTRIES:
        svg = (tmp_path / f"{entry.name}.svg").read_text()
        assert "<svg" in svg and "class=\"node\"" in svg and "class=\"edge\"" in svg, entry.name
        assert f"{entry.name}.svg" in page
    assert "not drawn" in page and not (tmp_path / "later.svg").exists()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cli(["train", "--out", str(run), "--steps", "3", "--batch-size", "4", "--max-digits", "3", "--channels", "4", "8",
         "--hidden", "16", "--valid-every", "1", "--valid-strings", "4", "--quiet"])
    cli(["prepare", "--out", str(run / "test.npz"), "--count", "12", "--min-digits", "2", "--max-digits", "4"])
    cli(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--data", str(run / "test.npz")])
    return run


@pytest.mark.skipif(not HAS_DOT, reason="needs graphviz's dot (make system-deps)")
def test_report_is_self_contained(run_folder):
    page = report.build_report(run_folder, examples=3).read_text()
    for part in ("Training loss", "Reject curve", "data:image/png;base64,", "Segmentation graph", "<svg"):
        assert part in page, part
    assert "src='" not in page and 'src="' not in page  # nothing outside the page


@pytest.mark.skipif(CHROMIUM is None or not HAS_DOT, reason="needs chromium and graphviz (apt-get install -y "
                                                             "chromium graphviz; make test does it)")
def test_report_renders_in_chromium(run_folder, tmp_path):
    page = report.build_report(run_folder, tmp_path / "report.html", examples=3)
    shot = screenshot(page, tmp_path / "shot.png", tmp_path)
    # The curves, the reject curve and the graph are drawn on their backgrounds...
    assert drawn_fraction(shot, report.CURVES_BG) > 0.01
    assert drawn_fraction(shot, report.REJECT_BG) > 0.01
    assert drawn_fraction(shot, report.GRAPH_BG) > 0.02
    # ... and the example images show white ink on black with the cut and segment colours over them.
    images = shot[region_of(shot, report.EXAMPLES_BG)]
    assert ((images < 8).all(axis=2)).sum() > 3000             # paper (black)
    assert ((images > 200).all(axis=2)).sum() > 200            # ink
    cut = np.array([int(report.CUT_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(images - cut).sum(axis=2) < 60).sum() > 50    # candidate cuts


@pytest.mark.skipif(not HAS_DOT, reason="needs graphviz's dot (make system-deps)")
def test_demo_reads_with_the_shipped_committee_then_trains(tmp_path, capsys):
    """make demo's path at a tiny size: the committee's reading, its report, a training run."""
    cli(["demo", "--out", str(tmp_path), "--strings", "3", "--steps", "2", "--pretrain-steps", "2", "--quiet"])
    printed = capsys.readouterr().out
    assert "the shipped committee (8 readers) reads 3 fresh strings" in printed
    assert "95 % interval" in printed and "at the shipped threshold 0.9343" in printed
    page = (tmp_path / "committee_report.html").read_text()
    assert "Reject curve" in page and "ctx_d1s17.pt" in page and "Training loss" not in page
    assert "after training it reads" in printed and (tmp_path / "short_run" / "checkpoint.pt").is_file()
