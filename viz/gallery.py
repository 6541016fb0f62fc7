"""The gallery: the canonical graphs of gtn_py drawn to SVG, with an index page.

    python -m viz.gallery [--out out/gallery]

Each entry of :data:`ENTRIES` is a name, a caption and a builder returning a Graph (and
optionally symbol tables); add an entry to add a picture. An entry whose builder needs a
module that is not there yet is listed on the index page as missing rather than failing
the gallery.
"""

from __future__ import annotations

import argparse
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Tuple, Union

import torch

from gtn_py import Graph
from gtn_py.io import draw
from recipes import common

Symbols = Union[Dict[int, str], None]
Built = Tuple[Graph, Symbols, Symbols]


@dataclass
class Entry:
    name: str
    caption: str
    build: Callable[[], Built]


DIGITS: Dict[int, str] = {c + 1: str(c) for c in range(10)}


def ctc_topology_entry() -> Built:
    from gtn_py.criteria.ctc import ctc_topology

    return ctc_topology(3), {1: "a", 2: "b"}, {1: "a", 2: "b"}


def ctc_alignment_entry() -> Built:
    from gtn_py.criteria.ctc import ctc_graph

    return ctc_graph([[1, 2, 2]])[0], {1: "a", 2: "b"}, None


def segmentation_entry() -> Built:
    from gtn_py.criteria.segmentation import segmentation_graph

    return segmentation_graph(5, 3), None, None


def _small_recognition(keep_spans: bool) -> Graph:
    from gtn_py.criteria.segmentation import recognition_graph, segmentation_graph

    seg = segmentation_graph(3, 2)
    scores = torch.log_softmax(torch.randn(seg.num_arcs, 2, generator=torch.Generator().manual_seed(0)), 1)
    return recognition_graph(seg, scores.round(decimals=2), keep_spans=keep_spans)


def recognition_entry() -> Built:
    return _small_recognition(keep_spans=True), None, {1: "0", 2: "1"}


def decoding_entry() -> Built:
    """Recognition transducer composed with a grammar: two-digit strings that do not start with 0."""
    from gtn_py.ops.compose import compose

    grammar = Graph.from_arcs(3, [0, 1, 1], [1, 2, 2], [2, 1, 2], start=[0], accept=[2])
    return compose(_small_recognition(keep_spans=True), grammar), None, {1: "0", 2: "1"}


def hmm_word_entry() -> Built:
    """Word 1 = units 0 then 1, each a 2-state left-to-right HMM with self-loops and skips."""
    from gtn_py.criteria.hmm import hmm_units, word_model

    return word_model([0, 1], hmm_units(2, 2, skips=True), 1), None, {1: "word"}


def dtw_alignment_entry() -> Built:
    """DTW alignment graph of a 3-frame template and a 4-frame input (symmetric steps)."""
    from gtn_py.criteria.dtw import dtw_graph

    distances = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    return dtw_graph(distances.round(decimals=2)), None, None


ENTRIES = [
    Entry("ctc_topology", "CTC topology over {a, b} (the blank, label 0, is drawn as ε): frame labels to "
          "their collapsed reading (criteria.ctc.ctc_topology).", ctc_topology_entry),
    Entry("ctc_alignment", "CTC alignment graph of the target 'abb', blanks drawn as ε (criteria.ctc.ctc_graph).",
          ctc_alignment_entry),
    Entry("segmentation_graph", "Segmentation graph of 5 pieces, spans of 1 to 3 pieces: every path is a "
          "segmentation (criteria.segmentation.segmentation_graph).", segmentation_entry),
    Entry("recognition_graph", "Recognition transformer: each span arc of a 3-piece segmentation graph becomes "
          "one arc per class (span label : digit / score) (criteria.segmentation.recognition_graph).",
          recognition_entry),
    Entry("decoding_graph", "The recognition graph composed with a grammar acceptor (two digits, no leading 0): "
          "a small decoding graph (ops.compose).", decoding_entry),
    Entry("hmm_word_model", "HMM word model: two units of two left-to-right states (self-loops, skips) in "
          "sequence; arcs read HMM states and the first writes the word (criteria.hmm.word_model).", hmm_word_entry),
    Entry("dtw_alignment", "DTW alignment graph of a 3-frame template and a 4-frame input: nodes are grid cells, "
          "arcs template frame : input frame / -distance (criteria.dtw.dtw_graph).", dtw_alignment_entry),
]


def build_gallery(out: str | Path, entries: list[Entry] | None = None) -> Path:
    """Render every entry to OUT/NAME.svg and write OUT/index.html; returns the index path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cards = []
    for entry in entries if entries is not None else ENTRIES:
        try:
            g, isymbols, osymbols = entry.build()
        except ImportError as missing:  # a builder whose module does not exist yet
            cards.append(f"<div class='card missing'><h2>{entry.name}</h2><p>{html.escape(entry.caption)}</p>"
                         f"<p><i>not drawn: {html.escape(str(missing))}</i></p></div>")
            continue
        draw(g, out / f"{entry.name}.svg", isymbols=isymbols, osymbols=osymbols)
        cards.append(f"<div class='card'><h2>{entry.name}</h2><img src='{entry.name}.svg' alt='{entry.name}'>"
                     f"<p>{html.escape(entry.caption)}</p>"
                     f"<p class='size'>{g.num_nodes} nodes, {g.num_arcs} arcs</p></div>")
    index = out / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>gtn_py gallery</title><style>"
        "body{font-family:sans-serif;margin:16px}.card{border:1px solid #ccc;margin:10px;padding:8px}"
        "img{max-width:100%}.missing{color:#888}h2{font-size:16px}.size{font-size:12px;color:#555}"
        "</style></head><body><h1>gtn_py graph gallery</h1>" + "".join(cards) + "</body></html>",
        encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m viz.gallery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/gallery", help="folder for the SVG files and index.html")
    args = common.show_defaults(parser).parse_args(argv)
    common.run_command(lambda a: print(build_gallery(a.out)), args)


if __name__ == "__main__":
    main()
