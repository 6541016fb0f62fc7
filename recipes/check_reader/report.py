"""One self-contained HTML page about a reader: a training run's, or shipped readers'.

    python -m recipes.check_reader report RUN_DIR [--out RUN_DIR/report.html] [--examples 6]

Shows the training curves (a run's metrics.jsonl), the reject curve (evaluation.json, written
by ``python -m recipes.check_reader evaluate``), example strings of held-out digits with the
candidate cuts and the Viterbi segmentation drawn over the image, and the segmentation graph
of one example drawn by graphviz with its Viterbi path in red. Everything is inline (SVG
and base64 PNG), so the page can be mailed or archived alone.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
from pathlib import Path

import numpy as np
import torch

from gtn_py import Graph
from gtn_py.io import draw
from viz.svgplot import Series, line_chart

from .. import common
from .data import GeneratorConfig, make_strings, write_png
from .evaluate import read_batch, reject_curve
from .model import Reading, SegmentationReader
from .train import CHECKPOINT, METRICS, TrainConfig, digit_split, load_model

# Plot backgrounds double as markers: the rendering test finds each figure by its colour.
CURVES_BG = "#fdf6e3"
REJECT_BG = "#eef6ff"
GRAPH_BG = "#f0fff0"
EXAMPLES_BG = "#fff0f5"
CUT_COLOUR = "#ffd400"
SEGMENT_COLOURS = ("#ff4d4d", "#36c5f0", "#2eb67d", "#ecb22e", "#b07cff", "#ff8c42", "#00d1b2", "#f25f9a")
SCALE = 3


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    """A run's training and validation records (none when it has no metrics file)."""
    path = run / METRICS
    records = common.read_metrics(path) if path.exists() else []
    return ([r for r in records if r.get("split") != "valid"], [r for r in records if r.get("split") == "valid"])


def curves_figure(train: list[dict], valid: list[dict]) -> str:
    loss = line_chart([Series("train loss (nats / string)", [r["step"] for r in train], [r["loss"] for r in train])],
                      "Training loss", "step", "loss", background=CURVES_BG, ylog=True)
    acc = line_chart([Series("string accuracy %", [r["step"] for r in valid], [r["string_accuracy"] for r in valid],
                             markers=True),
                      Series("digit error rate %", [r["step"] for r in valid], [r["digit_error_rate"] for r in valid],
                             markers=True)],
                     "Validation (held-out digits)", "step", "percent", background=CURVES_BG, ylim=(0, 100))
    return loss + acc


def reject_figure(evaluation: dict) -> str:
    examples = evaluation.get("examples", [])
    if not examples:
        return "<p>No evaluation.json: run <code>evaluate</code> first.</p>"
    confidence = np.array([e["confidence"] for e in examples])
    correct = np.array([e["text"] == e["label"] for e in examples])
    curve = reject_curve(confidence, correct)
    chart = line_chart([Series("error %", [r["reject"] for r in curve], [r["error"] for r in curve]),
                        Series("correct %", [r["reject"] for r in curve], [r["correct"] for r in curve])],
                       "Reject curve", "reject %", "percent of strings", background=REJECT_BG, ylim=(0, 100))
    op = evaluation["operating_point_1pct"]
    rows = "".join(f"<tr><td>{r['threshold']:.4f}</td><td>{r['correct']:.2f}</td><td>{r['reject']:.2f}</td>"
                   f"<td>{r['error']:.2f}</td></tr>" for r in evaluation["reject_table"])
    table = (f"<table><tr><th>threshold</th><th>correct %</th><th>reject %</th><th>error %</th></tr>{rows}</table>"
             f"<p>{evaluation['strings']} strings ({html.escape(evaluation.get('data', ''))}): string accuracy "
             f"<b>{evaluation['string_accuracy']:.2f} %</b>, digit error rate {evaluation['digit_error_rate']:.2f} %; "
             f"at most 1 % error costs <b>{op['reject']:.1f} %</b> rejects (threshold {op['threshold']:.4f}).</p>")
    return chart + table


def png_data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(write_png(None, image)).decode()


def example_svg(image: np.ndarray, reading: Reading, truth: str) -> str:
    """The image, its candidate cuts (yellow) and the Viterbi segments (boxes with their digit)."""
    h, w = image.shape
    top, ticks = 18, 8
    bottom = top + h * SCALE
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * SCALE}" height="{bottom + ticks}" '
           f'font-family="sans-serif" font-size="14">',
           f'<image x="0" y="{top}" width="{w * SCALE}" height="{h * SCALE}" style="image-rendering:pixelated" '
           f'href="{png_data_uri(image)}"/>']
    for i, (x0, x1, digit) in enumerate(reading.segments):
        colour = SEGMENT_COLOURS[i % len(SEGMENT_COLOURS)]
        out.append(f'<rect x="{x0 * SCALE + 1}" y="{top + 1}" width="{(x1 - x0) * SCALE - 2}" height="{h * SCALE - 2}" '
                   f'fill="none" stroke="{colour}" stroke-width="2"/>'
                   f'<text x="{(x0 + x1) / 2 * SCALE}" y="13" text-anchor="middle" fill="{colour}">{digit}</text>')
    for x in reading.cuts:  # dashed through the image, and a solid tick under it
        out.append(f'<line x1="{x * SCALE + 0.5}" y1="{top}" x2="{x * SCALE + 0.5}" y2="{bottom}" '
                   f'stroke="{CUT_COLOUR}" stroke-width="1" stroke-dasharray="3,6"/>'
                   f'<rect x="{x * SCALE - 1}" y="{bottom + 1}" width="3" height="{ticks - 1}" fill="{CUT_COLOUR}"/>')
    out.append("</svg>")
    ok = "ok" if reading.text == truth else "WRONG"
    caption = (f"truth <b>{truth}</b>, read <b>{html.escape(reading.text) or '(nothing)'}</b> "
               f"({ok}), confidence {reading.confidence:.4f}")
    return f'<div class="example">{"".join(out)}<div>{caption}</div></div>'


def graph_figure(model: SegmentationReader, image: np.ndarray, reading: Reading) -> str:
    """The segmentation graph of one image: each span arc labelled with the recogniser's best
    digit and its score; the Viterbi path in red."""
    with torch.no_grad():
        interp = model([image])
    spans = interp.spans
    best_score, best_class = interp.span_scores.max(1)
    num_pieces = int(spans.num_pieces[0])
    g = Graph.from_arcs(num_pieces + 1, spans.begin, spans.end, best_class + 1, weights=best_score,
                        start=[0], accept=[num_pieces])
    dot = draw(g, isymbols={c + 1: str(c) for c in range(10)})
    dot.graph_attr.update(bgcolor="transparent", ranksep="0.3", nodesep="0.15")
    cut_of = {int(x): i for i, x in enumerate(reading.cuts)}
    on_path = {(cut_of.get(x0), cut_of.get(x1)) for x0, x1, _ in reading.segments}
    edges = [i for i, line in enumerate(dot.body) if "->" in line and "start" not in line]
    for arc, line_index in enumerate(edges):
        if (int(spans.begin[arc]), int(spans.end[arc])) in on_path:
            dot.body[line_index] = dot.body[line_index].replace("]", " color=red fontcolor=red penwidth=3]")
    svg = dot.pipe(format="svg").decode()
    svg = svg[svg.index("<svg"):]
    return f'<div class="graph" style="background:{GRAPH_BG}">{svg}</div>'


STYLE = """body{font-family:sans-serif;margin:16px;max-width:1500px}h1{font-size:20px}h2{font-size:16px;
margin-top:22px}.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.example{margin:6px 10px}
table{border-collapse:collapse;font-size:12px;margin:6px}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:right}.graph{overflow:auto;max-height:520px;padding:6px}.graph svg{max-width:1450px;height:auto}"""


def build_report(run: str | Path, out: str | Path | None = None, examples: int = 6, seed: int = 7) -> Path:
    """The report of a training run folder (checkpoint.pt, metrics.jsonl, evaluation.json)."""
    run = Path(run)
    if not run.is_dir():
        raise common.InputError(f"{run}: no such run folder (`python -m recipes.check_reader train --out RUN` "
                                "writes one)")
    train, valid = read_metrics(run)
    return _write_page(f"Check reader run: {run}", [run / CHECKPOINT], run / "evaluation.json",
                       Path(out) if out else run / "report.html", examples, seed,
                       ["<h2>Training</h2>", f'<div class="row">{curves_figure(train, valid)}</div>'])


def build_reading_report(checkpoints: list[Path], evaluation: str | Path, out: str | Path,
                         examples: int = 6, seed: int = 7) -> Path:
    """The report of trained readers (one, or a committee) and their evaluation.json: no
    training curves, the rest as a run's."""
    names = ", ".join(Path(c).name for c in checkpoints)
    return _write_page(f"Check reader: {names}", list(checkpoints), Path(evaluation), Path(out), examples, seed, [])


def _write_page(title: str, checkpoints: list[Path], evaluation_path: Path, out: Path, examples: int, seed: int,
                training: list[str]) -> Path:
    evaluation = common.json_object(evaluation_path.read_text(), str(evaluation_path)) \
        if evaluation_path.exists() else {}
    model, state = load_model(checkpoints if len(checkpoints) > 1 else checkpoints[0])
    config = TrainConfig.from_dict(state["train_config"])
    _, held = digit_split(config)
    strings = make_strings(held, examples, seed=seed, config=GeneratorConfig(min_digits=2, max_digits=6))
    images = [strings.image(i) for i in range(len(strings))]
    readings = read_batch(model, images)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>criterion <b>{html.escape(config.criterion)}</b>, {state['step']} steps of "
             f"{config.batch_size} strings; recogniser {html.escape(json.dumps(state['model_config']))}</p>",
             *training,
             "<h2>Evaluation</h2>", f'<div class="row">{reject_figure(evaluation)}</div>',
             "<h2>Examples (held-out digits): candidate cuts in yellow, Viterbi segmentation boxed</h2>",
             f'<div class="row" style="background:{EXAMPLES_BG}">' + "".join(example_svg(im, r, t) for im, r, t
                                            in zip(images, readings, strings.labels)) + "</div>"]
    if isinstance(model, SegmentationReader):
        shortest = int(np.argmin([im.shape[1] for im in images]))
        parts += [f"<h2>Segmentation graph of the example '{strings.labels[shortest]}' "
                  "(arcs: best digit / score; Viterbi path in red)</h2>",
                  graph_figure(model, images[shortest], readings[shortest])]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>check reader report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    common.write_text(out, page)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipes.check_reader.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder written by `python -m recipes.check_reader train --out`")
    parser.add_argument("--out", default="", help="HTML file (default RUN/report.html)")
    parser.add_argument("--examples", type=int, choices=range(1, 101), default=6, metavar="1..100",
                        help="strings of held-out digits drawn")
    args = common.show_defaults(parser).parse_args(argv)
    common.run_command(lambda a: print(build_report(a.run, a.out or None, a.examples)), args)


if __name__ == "__main__":
    main()
