"""python -m recipes.check_reader {train,evaluate,decode,export,average,prepare,demo,report} ...

Reads handwritten digit strings by segmentation with a graph transformer network (LeCun,
Bottou, Bengio, Haffner 1998), trained end to end through the segmentation graph.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import common
from ..common import InputError
from .data import GeneratorConfig, load_strings, make_strings, page_to_string, read_png, save_strings
from .evaluate import evaluate_strings, format_summary, read_batch
from .model import CRITERIA, DeformedViews, ModelConfig, Reader, Reading, grammar_lengths, reader_kind
from .oversegment import CutConfig
from .report import build_reading_report, build_report
from .train import CHECKPOINT, TrainConfig, digit_split, load_model, train

PRETRAIN_STEPS = 1000
# decode's default --threshold: the confidence at which the committed committee (the eight context
# readers, README_RECIPES.md) reads the validation strings with at most 1 % of them wrong.
DEFAULT_THRESHOLD = 0.9343
EVALUATION = "evaluation.json"
DEFAULT_EVALUATION = Path("out") / "check_reader" / EVALUATION
# The best shipped reading (RESULTS.md): the eight context readers as a committee, with these options.
SHIPPED_COMMITTEE = [Path(__file__).parent / "readers" / f"ctx_d1s{seed}.pt" for seed in range(10, 18)]
COMMITTEE_READING = {"candidates": 4, "grammar": "length:4-6", "grid": 4, "min_piece": 1}


def _add_train_options(p: argparse.ArgumentParser) -> None:
    d, g, c = TrainConfig(), GeneratorConfig(), CutConfig()
    p.add_argument("--criterion", choices=CRITERIA, default=d.criterion,
                   help="nll: discriminative forward; perceptron/hinge: discriminative Viterbi; "
                        "ctc: the column-window CTC baseline (default %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="global batch, strings per step")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS,
                   help="cross-entropy steps of the recogniser alone on the spans of training strings "
                        "(well-formed digits vs mis-segmented garbage) before the global training; 0: none "
                        "(default %(default)s)")
    p.add_argument("--pretrain-batch", type=_positive_int, default=d.pretrain_batch,
                   help="strings per pretraining step")
    p.add_argument("--margin", type=float, default=d.margin, help="hinge margin")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the initialisation and the strings drawn")
    p.add_argument("--split-seed", type=int, default=d.split_seed,
                   help="seed of the split into training and held-out digits (keep it to compare or "
                        "combine readers trained from several --seed)")
    p.add_argument("--digits", default="", help="digit-set .npz (images uint8 [N,28,28], labels); "
                                                 "default: the embedded MNIST sample")
    p.add_argument("--held-out", type=float, default=d.held_out, help="fraction of digits held out")
    p.add_argument("--init", default="", help="checkpoint whose weights start this reader (same --channels and "
                                               "--hidden; e.g. with --pretrain-steps 0 to fine-tune with other cuts)")
    p.add_argument("--min-digits", type=_positive_int, default=g.min_digits)
    p.add_argument("--max-digits", type=_positive_int, default=g.max_digits)
    p.add_argument("--distort", type=float, default=g.distort,
                   help="strength of the random deformation of training digits (0: none, 1: rotation up to "
                        "10 degrees, shear 0.25, scales +-10%%, elastic offsets of 1.2 px)")
    p.add_argument("--valid-every", type=_positive_int, default=d.valid_every)
    p.add_argument("--valid-strings", type=_positive_int, default=d.valid_strings)
    p.add_argument("--checkpoint-every", type=_positive_int, default=d.checkpoint_every)
    p.add_argument("--channels", type=_positive_int, nargs=2, default=[8, 16], help="conv channels of the recogniser")
    p.add_argument("--hidden", type=_positive_int, default=64, help="hidden units of the recogniser")
    p.add_argument("--context", action="store_true",
                   help="the recogniser also sees each span's window with the neighbouring ink left in "
                        "(a second input channel; segmentation readers)")
    p.add_argument("--grid", type=_positive_int, default=c.grid, help="spacing of the regular candidate cuts (px)")
    p.add_argument("--min-piece", type=_positive_int, default=c.min_piece,
                   help="narrowest piece between two cuts (px; a grid cut closer than this to a projection "
                        "minimum is dropped)")
    p.add_argument("--max-span", type=_positive_int, default=c.max_span, help="pieces per span at most")
    p.add_argument("--grammar", type=_grammar, default="any", help="'any' or 'length:MIN-MAX' composed into the graph")


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    if args.min_digits > args.max_digits:
        raise InputError(f"--min-digits {args.min_digits} is more than --max-digits {args.max_digits}")
    gen = GeneratorConfig(min_digits=args.min_digits, max_digits=args.max_digits, distort=args.distort)
    model = ModelConfig(kind=reader_kind(args.criterion),
                        channels=tuple(args.channels), hidden=args.hidden,
                        cuts=CutConfig(grid=args.grid, min_piece=args.min_piece, max_span=args.max_span),
                        grammar=args.grammar, context=args.context)
    if args.context and model.kind != "segmentation":
        raise InputError("--context is for segmentation readers: the CTC baseline's windows already hold the "
                         "neighbours")
    config = TrainConfig(criterion=args.criterion, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         pretrain_steps=args.pretrain_steps, pretrain_batch=args.pretrain_batch,
                         margin=args.margin, seed=args.seed, split_seed=args.split_seed, digits=args.digits,
                         init=args.init, held_out=args.held_out,
                         generator=gen, valid_strings=args.valid_strings, valid_every=args.valid_every,
                         checkpoint_every=args.checkpoint_every)
    return model, config


def cmd_train(args: argparse.Namespace) -> None:
    model_config, config = _configs(args)
    if args.resume and (Path(args.out) / CHECKPOINT).exists():
        state = common.load_checkpoint(Path(args.out) / CHECKPOINT)
        model_config = ModelConfig.from_dict(state["model_config"])
        saved = TrainConfig.from_dict(state["train_config"])
        saved.steps = config.steps  # a resumed run may be extended
        config = saved
    path = train(args.out, model_config, config, resume=args.resume, device=args.device,
                 progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {path}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a positive number, got {text}")
    return value


def _grammar(text: str) -> str:
    """A grammar spec, checked ('' stands for the checkpoint's own)."""
    try:
        if text:
            grammar_lengths(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _load_reader(args: argparse.Namespace) -> tuple[Reader, dict]:
    """The reader of ``--checkpoint`` (a committee if repeated), with the reading options'
    overrides of its grammar and of its cuts applied."""
    cuts = {name: value for name, value in (("grid", args.grid), ("min_piece", args.min_piece))
            if value is not None}
    model, state = load_model(args.checkpoint, args.device, cuts=cuts)
    if args.grammar:
        model.config.grammar = args.grammar
    if args.views > 1:
        model.recogniser = common.Committee([model.recogniser], DeformedViews(args.views, args.view_strength))
    return model, state


def cmd_evaluate(args: argparse.Namespace) -> dict:
    model, state = _load_reader(args)
    config: ModelConfig = model.config  # type: ignore[assignment]
    strings = load_strings(args.data)
    if any(not s for s in strings.labels):
        raise InputError(f"{args.data}: evaluate needs a label for every string (decode reads unlabelled ones)")
    out = Path(args.out) if args.out else _default_evaluation(Path(args.checkpoint[0]))
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result = evaluate_strings(model, strings, args.batch_size, args.candidates, show_progress=not args.quiet)
    summary = result.summary()
    checkpoints = [str(c) for c in args.checkpoint]
    summary.update(data=str(args.data), checkpoint=" ".join(checkpoints), seconds=round(time.time() - t0, 1),
                   criterion=state["train_config"]["criterion"], steps=state["step"], grammar=config.grammar,
                   views=args.views, view_strength=args.view_strength,
                   cuts=asdict(config.cuts) if config.kind == "segmentation" else None)
    print(format_summary(summary))
    summary["confusions"] = common.confusions(result.labels, [r.text for r in result.readings])
    print(f"most frequent digit errors (true -> read, '-' none): {common.format_confusions(summary['confusions'])}")
    summary["examples"] = [{"label": t, "text": r.text, "confidence": r.confidence}
                           for t, r in zip(result.labels, result.readings)]
    common.write_json(out, summary)
    print(f"written: {out}")
    return summary


def _default_evaluation(checkpoint: Path) -> Path:
    """Beside the checkpoint of a training run (its folder has the run's metrics, and the report verb
    reads both), else out/check_reader/evaluation.json: never into the committed readers' folder."""
    run = checkpoint.parent
    return run / EVALUATION if (run / common.METRICS).is_file() else DEFAULT_EVALUATION


def _input_files(paths: list[str]) -> list[Path]:
    """The files to read: each path, a folder standing for its .npz and .png files (sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in (".npz", ".png") and f.is_file())
            if not found:
                raise InputError(f"{p}: no .png or .npz files in this folder")
            files += found
        elif not p.exists():
            raise InputError(f"{p}: no such file or folder")
        else:
            files.append(p)
    return files


def _read_inputs(paths: list[str]) -> tuple[list[str], list[np.ndarray | None]]:
    """Names and images (28 rows, white ink on black) of the strings to read: every string of
    each .npz string set, and each PNG as :func:`~.data.page_to_string` makes it (None: no ink)."""
    names: list[str] = []
    images: list[np.ndarray | None] = []
    for p in _input_files(paths):
        if p.suffix.lower() == ".npz":
            strings = load_strings(p)
            names += [f"{p}[{i}]" for i in range(len(strings))]
            images += [strings.image(i) for i in range(len(strings))]
        elif p.suffix.lower() == ".png":
            names.append(str(p))
            images.append(page_to_string(read_png(p)))
        else:
            raise InputError(f"{p}: decode reads .npz string sets and .png images")
    return names, images


def cmd_decode(args: argparse.Namespace) -> None:
    model, _ = _load_reader(args)
    names, images = _read_inputs(args.inputs)
    bar = common.Progress(len(images), enabled=not args.quiet, unit="string")
    try:
        for start in range(0, len(images), args.batch_size):
            batch = images[start:start + args.batch_size]
            inked = [image for image in batch if image is not None]
            read = iter(read_batch(model, inked, args.candidates) if inked else [])
            for name, image in zip(names[start:start + len(batch)], batch):
                if image is None:
                    print(f"{name}\t\t{0.0:.4f}  REJECT: no ink")
                    continue
                r: Reading = next(read)
                flag = "" if r.confidence >= args.threshold else "  REJECT"
                print(f"{name}\t{r.text}\t{r.confidence:.4f}{flag}")
            bar.update(start + len(batch))
    finally:
        bar.close()


def cmd_prepare(args: argparse.Namespace) -> None:
    if args.min_digits > args.max_digits:
        raise InputError(f"--min-digits {args.min_digits} is more than --max-digits {args.max_digits}")
    config = TrainConfig(split_seed=args.split_seed, digits=args.digits, held_out=args.held_out)
    train_digits, held = digit_split(config)
    digits = held if args.split == "held-out" else train_digits
    gen = GeneratorConfig(min_digits=args.min_digits, max_digits=args.max_digits)
    strings = make_strings(digits, args.count, seed=args.data_seed, config=gen)
    save_strings(strings, args.out)
    print(f"written {len(strings)} strings of {args.min_digits}-{args.max_digits} {args.split} digits: {args.out}")


def cmd_demo(args: argparse.Namespace) -> None:
    """What ``make demo`` runs. (1) The shipped committee of eight context readers reads fresh
    strings of 4-6 held-out digits (a data seed no figure of RESULTS.md used) as RESULTS.md
    reads it: string accuracy with its 95 % interval, the reject curve, the shipped operating
    threshold, and an HTML report. (2) A short training run through the segmentation graph on
    the embedded digits, to show training works: its loss, then what it reads."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    print(f"== 1. the shipped committee ({len(SHIPPED_COMMITTEE)} readers) reads {args.strings} fresh strings of "
          "4-6 held-out digits")
    data = out / "fresh_4to6.npz"
    cmd_prepare(argparse.Namespace(split_seed=0, digits="", held_out=TrainConfig().held_out, split="held-out",
                                     min_digits=4, max_digits=6, count=args.strings, data_seed=args.data_seed,
                                     out=str(data)))
    evaluation = out / "committee_evaluation.json"
    summary = cmd_evaluate(argparse.Namespace(
        checkpoint=[str(p) for p in SHIPPED_COMMITTEE], data=str(data), out=str(evaluation), device="cpu",
        batch_size=32, views=1, view_strength=1.0, quiet=args.quiet, **COMMITTEE_READING))
    low, high = common.proportion_interval(summary["string_accuracy"] / 100, summary["strings"])
    confidence = np.array([e["confidence"] for e in summary["examples"]])
    right = np.array([e["text"] == e["label"] for e in summary["examples"]])
    accepted = confidence >= DEFAULT_THRESHOLD
    print(f"strings read: {summary['string_accuracy']:.1f} % (95 % interval {100 * low:.1f}-{100 * high:.1f} %; "
          "RESULTS.md: 95.1-95.3 % on its validation and test sets)")
    print(f"at the shipped threshold {DEFAULT_THRESHOLD} (decode's default): {100 * (1 - accepted.mean()):.1f} % "
          f"rejected, {100 * (accepted & ~right).mean():.1f} % of all strings accepted and wrong")
    report = build_reading_report(SHIPPED_COMMITTEE, evaluation, out / "committee_report.html")
    print(f"report (reject curve, examples, a segmentation graph): {report}")
    print(f"part 1: {time.time() - t0:.0f} s")

    t1 = time.time()
    run = out / "short_run"
    print(f"\n== 2. a short training run through the segmentation graph ({args.pretrain_steps} pretraining steps "
          f"on isolated digits, {args.steps} steps on strings)")
    cmd_train(build_parser().parse_args(
        ["train", "--out", str(run), "--steps", str(args.steps), "--pretrain-steps", str(args.pretrain_steps),
         "--valid-every", str(args.steps), "--context", "--valid-strings", "50", "--threads", str(args.threads),
         *(["--quiet"] if args.quiet else [])]))
    records = common.read_metrics(run / common.METRICS)
    for split, what in (("pretrain", "pretraining loss (cross-entropy per span crop)"),
                        ("train", "loss through the graph (nats per string)")):
        losses = [r["loss"] for r in records if r.get("split") == split]
        if losses:
            tenth = max(1, len(losses) // 10)
            print(f"{what}: {np.mean(losses[:tenth]):.2f} over the first tenth of its steps, "
                  f"{np.mean(losses[-tenth:]):.2f} over the last")
    last = [r for r in records if r.get("split") == "valid"][-1]
    print(f"after training it reads {last['string_accuracy']:.1f} % of {last['strings']} validation strings "
          f"(digit error rate {last['digit_error_rate']:.2f} %); the shipped readers train for an hour each")
    print(f"part 2: {time.time() - t1:.0f} s; its report: python -m recipes.check_reader report {run}")
    print(f"demo total: {time.time() - t0:.0f} s")


def cmd_report(args: argparse.Namespace) -> None:
    print(f"written: {build_report(args.run, args.out or None, args.examples)}")


def _add_reading_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that read strings with a trained checkpoint (evaluate, decode)."""
    p.add_argument("--grammar", type=_grammar, default="",
                   help="override the checkpoint's grammar ('any', 'length:4-6')")
    p.add_argument("--grid", type=_positive_int, default=None,
                   help="override the spacing of the regular candidate cuts (px) the readers were trained with "
                        "(a finer grid puts more true boundaries near a cut, at more spans to score)")
    p.add_argument("--min-piece", type=_positive_int, default=None,
                   help="override the narrowest piece between two cuts (px; a grid cut closer than this to a "
                        "projection minimum is dropped)")
    p.add_argument("--candidates", type=_positive_int, default=1,
                   help="read the most probable of the K best Viterbi strings (1: the Viterbi path's string)")
    p.add_argument("--views", type=_positive_int, default=1,
                   help="score every span crop as given and under VIEWS - 1 fixed random deformations (the "
                        "training augmentation's), averaged: test-time augmentation at VIEWS times the cost")
    p.add_argument("--view-strength", type=float, default=1.0, help="strength of those deformations (as --distort)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="strings read at once")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.check_reader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a reader (torchrun --nproc_per_node=N for data parallel)")
    common.add_run_options(p)
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="string accuracy, digit error rate and the reject curve")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint written by train; repeated: segmentation readers read as a committee")
    p.add_argument("--data", required=True, help=".npz: images uint8 [N,28,W], widths [N], labels")
    p.add_argument("--out", default="",
                   help="JSON results (default: evaluation.json in the run folder of a train checkpoint, where "
                        f"the report verb finds it, else {DEFAULT_EVALUATION})")
    _add_reading_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("decode", help="print the strings read from images with their confidences")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint written by train; repeated: segmentation readers read as a committee")
    p.add_argument("inputs", nargs="+",
                   help=".npz string sets, PNG images of one string each (any size and margins, dark ink on light "
                        "paper or light on dark, transparency as paper) or folders of them; prints 'NAME TEXT "
                        "CONFIDENCE', with REJECT after readings below --threshold and 'REJECT: no ink' for a "
                        "blank image")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="mark readings below this confidence REJECT (the default is where the committed "
                        "committee reads validation strings with 1 %% of them wrong; 0: reject none)")
    _add_reading_options(p)
    p.set_defaults(func=cmd_decode)

    common.add_checkpoint_commands(sub)

    p = sub.add_parser("prepare", help="write a string set .npz from the digit set")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=_positive_int, default=1000)
    p.add_argument("--split", choices=("held-out", "train"), default="held-out")
    p.add_argument("--min-digits", type=_positive_int, default=4)
    p.add_argument("--max-digits", type=_positive_int, default=6)
    p.add_argument("--data-seed", type=int, default=12345)
    p.add_argument("--split-seed", type=int, default=0, help="seed of the digit split (as in train)")
    p.add_argument("--digits", default="")
    p.add_argument("--held-out", type=float, default=TrainConfig().held_out)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("demo", help="the shipped committee on fresh strings, then a short training run "
                                     "(what `make demo` runs)")
    p.add_argument("--out", default="out/check_reader_demo")
    p.add_argument("--strings", type=_positive_int, default=400,
                   help="fresh strings of held-out digits the committee reads (about 0.4 s each on one thread)")
    p.add_argument("--data-seed", type=int, default=31337, help="their seed (RESULTS.md's sets use 777, 2024, "
                                                                  "4096 and 8192)")
    p.add_argument("--steps", type=_positive_int, default=300, help="steps of training through the graph")
    p.add_argument("--pretrain-steps", type=_positive_int, default=500, help="isolated-digit pretraining steps")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch threads (default 1: the small recogniser gains little from more, and a busy "
                        "machine loses much)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="one self-contained HTML page of a training run: curves, reject curve, "
                                      "examples, a segmentation graph")
    p.add_argument("run", help="a run folder written by train --out")
    p.add_argument("--out", default="", help="HTML file (default RUN/report.html)")
    p.add_argument("--examples", type=int, choices=range(1, 101), default=6, metavar="1..100",
                   help="strings of held-out digits drawn")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = common.show_defaults(build_parser()).parse_args(argv)
    common.set_threads(getattr(args, "threads", 0))
    common.run_command(args.func, args)


if __name__ == "__main__":
    main()
