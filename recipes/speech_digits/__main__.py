"""python -m recipes.speech_digits {prepare,train,evaluate,decode,export,average,demo} ...

Connected spoken digits recognised four ways through gtn_py graphs: word-level CTC, an HMM/NN
hybrid, an RNN-T and DTW templates (see README_RECIPES.md, "Speech digits").
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from gtn_py.errors import FormatError

from .. import common
from ..common import InputError
from . import tidigits
from .data import Utterance, load_corpus, load_directory, load_labelled, utterance_table
from .evaluate import Result, decode_features, evaluate_model, format_summary, write_report
from .frontend import DEFAULT_CONFIG
from .hybrid import isolated_words
from .kinds import MODEL_KINDS, MODELS, READERS, options_help
from .models import EncoderConfig, ModelConfig, option_fields, parse_options
from .synth import (
    FESTIVAL_PACKAGES,
    FOREIGN_PACKAGES,
    SynthesisError,
    corpus_dir,
    festival_voices,
    prepare,
    split_voices,
)
from .train import COMBINE, NUM_FILTERS, TrainConfig, load_model, model_config_of, train

DEFAULT_ROOT = Path("data/speech_digits")
# The committed reading copies, and their list: file, kind, WER on the held-out test voices, and
# the command that trained each (shipped/README.md tells the same for people).
SHIPPED = Path(__file__).resolve().parent / "shipped"
SHIPPED_INDEX = SHIPPED / "models.json"
# Where evaluate writes its results for a shipped model (never into the committed folder).
DEFAULT_EVALUATION_DIR = Path("out") / "speech_digits"
def option_pairs(pairs: list[str], kind: str | None = None) -> dict[str, str]:
    """``--option KEY=VALUE`` strings as a dict (``kind``: the model kind, for the message)."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            hint = ""
            if kind is not None:
                hint = f" (--model {kind} settings: " + (
                    ", ".join(name for name, *_ in option_fields(MODELS[kind].Options)) or "none") + ")"
            raise InputError(f"--option {pair!r}: expected KEY=VALUE{hint}")
        values[key] = value
    return values


def model_options(kind: str, pairs: list[str]) -> dict[str, Any]:
    """The ``--option KEY=VALUE`` settings of a ``kind`` model, checked and typed by the kind's
    ``Options`` dataclass (an unknown key would otherwise be silently ignored)."""
    values = option_pairs(pairs, kind)
    options: Any = parse_options(MODELS[kind].Options, values, kind)
    return {key: getattr(options, key) for key in values}


def shipped_models(index: Path = SHIPPED_INDEX) -> list[dict]:
    """The shipped models of ``index`` (``{"models": [{"file", "kind", "test_wer", "real_wer",
    "diphone_wer", "command"}, ...]}``, files relative to it; ``real_wer``, the WER on the real
    speakers of :mod:`.tidigits`, and ``diphone_wer``, on the held-out festival voice's utterances
    of ``make speech-demo``, may be missing), best first: lowest WER on the held-out test voices."""
    return _shipped(index)[0]


def shipped_readings(index: Path = SHIPPED_INDEX) -> list[dict]:
    """The ways of reading that ``index`` ships, best first: each model that reads on its own (one
    of :data:`~.kinds.READERS`; DTW templates need a segmenter to cut words) as it is, and each
    entry of its ``"readings"`` (``{"name", "files", "warps", "combine", "test_wer", "real_wer",
    "diphone_wer"}``: shipped models reading as one, see ``--combine``). Each has ``name``,
    ``paths``, ``warps``, ``combine`` and the three figures (None where not measured)."""
    return _shipped(index)[1]


def _shipped(index: Path) -> tuple[list[dict], list[dict]]:
    try:
        listing = json.loads(index.read_text())
        models = [{**e, "path": index.parent / e["file"], **_figures(e)} for e in listing["models"]]
        readings = [{"name": m["file"], "paths": [m["path"]], "warps": (), "combine": "auto", **_figures(m)}
                    for m in models if m["kind"] in READERS]
        kinds = {m["file"]: m["kind"] for m in models}
        for r in listing.get("readings", []):
            if not set(r["files"]) <= {f for f, kind in kinds.items() if kind in READERS}:
                raise ValueError(f"reading {r['name']!r}: its files must be listed models that read on their own")
            if r["combine"] not in COMBINE:
                raise ValueError(f"reading {r['name']!r}: combine must be one of {COMBINE}")
            readings.append({"name": str(r["name"]), "paths": [index.parent / f for f in r["files"]],
                             "warps": tuple(float(a) for a in r["warps"]), "combine": r["combine"],
                             **_figures(r)})
    except FileNotFoundError:
        raise InputError(f"{index}: no list of shipped models here: name a model with --checkpoint") from None
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"not a list of shipped models ({type(e).__name__}: {e})", path=str(index)) from None
    return sorted(models, key=lambda m: m["test_wer"]), sorted(readings, key=lambda r: r["test_wer"])


def _figures(entry: dict) -> dict[str, float | None]:
    """An entry's WER on the held-out test voices and, where measured, on the real speakers and on the
    held-out festival voice."""
    optional = {key: entry.get(key) for key in ("real_wer", "diphone_wer")}
    return {"test_wer": float(entry["test_wer"]), **{k: None if v is None else float(v) for k, v in optional.items()}}


def default_reading(index: Path = SHIPPED_INDEX) -> dict:
    """The best of :func:`shipped_readings`, announced on stderr: the answer to ``decode`` or
    ``evaluate`` without ``--checkpoint``."""
    readings = shipped_readings(index)
    if not readings:
        raise InputError(f"{index} lists no model that reads on its own ({', '.join(READERS)}): name a model "
                         "with --checkpoint")
    best = readings[0]
    how = "the shipped model" if len(best["paths"]) == 1 and not best["warps"] else "the shipped reading"
    print(f"using {how} {best['name']} ({' '.join(map(str, best['paths']))}"
          + (f", warps {','.join(f'{a:g}' for a in best['warps'])}" if best["warps"] else "")
          + f"; {best['test_wer']:g} % WER on the held-out test voices; --checkpoint chooses another)",
          file=sys.stderr)
    return best


def _reading(args: argparse.Namespace) -> tuple[list[str], tuple[float, ...], str]:
    """The checkpoints, warps and way of combining to read with: ``--checkpoint`` (repeated: a
    committee), ``--warps`` and ``--combine`` as given, else the best shipped reading (which the
    two others, when given, change)."""
    if args.checkpoint:
        return [str(c) for c in args.checkpoint], tuple(args.warps), args.combine
    best = default_reading()
    return ([str(p) for p in best["paths"]], tuple(args.warps) or best["warps"],
            best["combine"] if args.combine == "auto" else args.combine)


def _disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cmd_prepare(args: argparse.Namespace) -> None:
    for split in ("train", "test"):
        espeak, flite = split_voices(split, args.generated_voices, args.generated_accents)
        festival = festival_voices(split) if args.festival_share else []
        foreign = festival_voices(split, foreign=True) if args.foreign_share else []
        print(f"{split} voices: {len(espeak)} espeak-ng, {len(flite)} flite ({', '.join(v.name for v in flite)})"
              + (f", {len(festival)} festival ({', '.join(v.name for v in festival)})" if festival else "")
              + (f", {len(foreign)} foreign ({', '.join(v.name for v in foreign)})" if foreign else ""))
    start = time.perf_counter()
    corpus = prepare(args.root, seed=args.seed, sizes={"train": args.train_size, "test": args.test_size},
                     jobs=args.jobs, log=print, generated=args.generated_voices, accents=args.generated_accents,
                     festival=args.festival_share, foreign=args.foreign_share)
    elapsed = time.perf_counter() - start
    print(f"corpus {corpus}: {_disk_usage(corpus) / 2**20:.1f} MiB, prepared in {elapsed:.1f} s")
    for split in ("train", "test"):
        table = utterance_table(corpus / split)
        voices = collections.Counter(row["voice"] for row in table.values())
        engines = collections.Counter(v.split(":")[0] for v in voices.elements())
        print(f"{split}: {len(table)} utterances, {len(voices)} distinct voices, by engine {dict(engines)}")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _training_data(args: argparse.Namespace, kind: str) -> tuple[list[Utterance], dict]:
    """The training utterances (isolated words cut by a hybrid's forced alignment for DTW)."""
    corpus = args.corpus or corpus_dir(DEFAULT_ROOT, 0)
    if not (Path(corpus) / "train" / "transcripts.txt").is_file():
        raise InputError(f"{corpus}: no prepared corpus here: run `python -m recipes.speech_digits prepare` first "
                         "(or name one with --corpus)")
    utterances = load_corpus(corpus, "train")
    source = {"corpus": str(corpus)}
    if kind == "dtw":

        if not args.segmenter:
            raise InputError("train --model dtw needs --segmenter CHECKPOINT (a trained hybrid) to cut isolated words")
        segmenter, _ = load_model(args.segmenter, args.device)
        utterances = isolated_words(segmenter, utterances, device=args.device)
        source["segmenter"] = str(args.segmenter)
    return utterances, source


def cmd_train(args: argparse.Namespace) -> None:
    encoder = EncoderConfig(channels=args.channels, context=args.context, hidden=args.hidden, layers=args.layers,
                            stride=args.stride, dropout=args.dropout, variance_norm=args.variance_norm)
    options = model_options(args.model, args.option)
    model_config = ModelConfig(kind=args.model, encoder=encoder, options=options)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                         seed=args.seed, valid_size=args.valid_size, valid_every=args.valid_every,
                         checkpoint_every=args.checkpoint_every, augment=args.augment,
                         freq_mask=args.freq_mask, valid_voices=args.valid_voices)
    ckpt = Path(args.out) / common.CHECKPOINT
    if args.resume and ckpt.exists():
        state = common.load_checkpoint(ckpt)
        model_config = model_config_of(ckpt, state)
        config = TrainConfig(**{**state["train_config"], "steps": args.steps})  # a resumed run may be extended
        # ... on the data it started with, unless told otherwise
        data = state.get("data", {})
        args.corpus = args.corpus or (Path(data["corpus"]) if "corpus" in data else None)
        args.segmenter = args.segmenter or data.get("segmenter", "")
    torch.manual_seed(config.seed)
    t0 = time.time()
    utterances, source = _training_data(args, model_config.kind)
    if _is_main_process():
        print(f"{len(utterances)} training utterances ({time.time() - t0:.0f} s to load)")
    if args.init:
        source["init"] = str(args.init)
    voices = None
    if config.valid_voices:
        if model_config.kind == "dtw":
            raise InputError("--valid-voices holds out whole utterances; dtw trains on isolated words")
        try:
            voices = {utt: row["voice"] for utt, row in utterance_table(Path(source["corpus"]) / "train").items()}
        except (FormatError, KeyError) as e:
            raise InputError(f"--valid-voices needs the voice of each training utterance: {e}") from None
    path = train(args.out, model_config, config, utterances, resume=args.resume, device=args.device,
                 show_progress=not args.quiet, extra={"data": source}, init=args.init or None, voices=voices)
    if _is_main_process():
        print(f"checkpoint: {path} ({time.time() - t0:.0f} s)")


def _inputs(args: argparse.Namespace) -> list[Utterance]:
    if getattr(args, "transcripts", None):
        return load_labelled(args.input, args.transcripts, mfc_transform=args.mfc_transform)
    return [Utterance(utt, feats, ()) for utt, feats in load_directory(args.input, mfc_transform=args.mfc_transform)]


def _groups(transcripts: str, column: str) -> dict[str, set[str]]:
    """Utterance ids by their value in ``column`` of the ``utterances.tsv`` beside the transcripts."""
    try:
        table = utterance_table(Path(transcripts).parent)
    except FormatError as e:
        raise InputError(f"--by {column}: {e}") from None
    if table and column not in next(iter(table.values())):
        raise InputError(f"--by {column}: the utterances.tsv beside {transcripts} has no such column "
                 f"(it has: {', '.join(next(iter(table.values())))})")
    groups: dict[str, set[str]] = collections.defaultdict(set)
    for utt, row in table.items():
        groups[row[column]].add(utt)
    return dict(sorted(groups.items()))


def cmd_evaluate(args: argparse.Namespace) -> dict:
    if args.by and args.segmenter:
        raise InputError("--by groups whole utterances; it does not apply to the isolated words of --segmenter")
    groups = _groups(args.transcripts, args.by) if args.by else {}
    checkpoints, warps, combine = _reading(args)
    model, state = load_model(checkpoints, args.device, warps, option_pairs(args.option), combine)
    utterances = _inputs(args)
    if args.segmenter:
        segmenter, _ = load_model(args.segmenter, args.device)
        utterances = isolated_words(segmenter, utterances, device=args.device)
        print(f"{len(utterances)} isolated words cut by {args.segmenter}'s forced alignment")
    t0 = time.time()
    result = evaluate_model(model, utterances, args.batch_size, args.device, show_progress=not args.quiet)
    summary = result.summary()
    summary.update(model=state["model_config"]["kind"], checkpoint=" ".join(checkpoints), input=str(args.input),
                   segmenter=args.segmenter, warps=list(warps), combine=combine, steps=state["step"],
                   seconds=round(time.time() - t0, 1))
    for utt, ref, hyp in zip(result.utt_ids, result.references, result.hypotheses):
        mark = "" if ref == hyp else "  *"
        print(f"{' '.join(hyp)} ({utt}){mark}")
    print(format_summary(summary))
    summary["confusions"] = result.confusions()
    print(f"most frequent errors (reference -> recognised, '-' none): "
          f"{common.format_confusions(summary['confusions'])}")
    if groups:
        summary["by"] = {"column": args.by, "groups": {value: result.summary(ids) for value, ids in groups.items()}}
        for value, part in summary["by"]["groups"].items():
            if part["utterances"]:
                print(f"  {args.by} {value}: {format_summary(part)}")
    default_name = "evaluation.json" if len(checkpoints) == 1 else "committee-evaluation.json"
    first = Path(checkpoints[0])
    if args.out:
        out = Path(args.out)
    elif first.resolve().parent == SHIPPED:  # never into the committed folder
        out = DEFAULT_EVALUATION_DIR / f"{first.stem}-{default_name}"
    else:  # beside a run's checkpoint
        out = first.parent / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    common.write_json(out, {**summary, "hypotheses": {u: " ".join(h) for u, h in zip(result.utt_ids,
                                                                                      result.hypotheses)}})
    print(f"written: {out}")
    if args.viz:
        index = write_report(model, utterances[:args.viz_count], out.parent / "viz", result, args.device)
        print(f"report: {index}")
    return summary


def cmd_decode(args: argparse.Namespace) -> None:
    checkpoints, warps, combine = _reading(args)
    model, _ = load_model(checkpoints, args.device, warps, option_pairs(args.option), combine)
    utterances = _inputs(args)
    hyps = decode_features(model, [u.features for u in utterances], args.batch_size, args.device,
                           show_progress=not args.quiet)
    for u, words in zip(utterances, hyps):
        print(f"{' '.join(words)} ({u.utt_id})")
    if args.viz:
        labelled = [Utterance(u.utt_id, u.features, h) for u, h in zip(utterances, hyps) if h]
        index = write_report(model, labelled[:args.viz_count], args.viz, Result(), args.device)
        print(f"report: {index}", file=sys.stderr)


def cmd_tidigits(args: argparse.Namespace) -> None:
    out = tidigits.fetch(args.root)
    print(f"{len(utterance_table(out))} utterances of real speakers in {out}; read them with:\n"
          f"python -m recipes.speech_digits evaluate --input {out / 'mfc'} --transcripts {out / 'transcripts.txt'} "
          "--by speaker")


def cmd_demo(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``make speech-demo``: fresh test utterances of the held-out voices (a corpus seed of their
    own), the same utterances spoken by the held-out festival voice (a real speaker's diphones, a
    kind of voice the shipped models never heard), then the real speakers of :mod:`.tidigits`, read
    by every shipped model and reading (the festival voice's by the default reading alone of the
    readings, which keeps the demo within 10 minutes on 2 cores); a table of word error rates beside
    the ones RESULTS.md gives for each set, and the HTML alignment report of the best model's
    readings of the fresh utterances."""
    start = time.perf_counter()
    corpus = prepare(args.root, seed=args.seed, sizes={"test": args.count}, jobs=args.jobs, log=print)
    utterances = load_corpus(corpus, "test")
    audio = _audio_seconds(utterances)
    print(f"{len(utterances)} utterances of held-out voices ({audio:.0f} s of audio) in {corpus}, "
          f"{time.perf_counter() - start:.0f} s")
    rows, report = _read_with_every_shipped(utterances, "test_wer", not args.quiet,
                                            Path(args.out) / "viz", args.viz_count)
    _print_table(rows, audio)
    results: dict[str, Any] = {"corpus": str(corpus), "audio_seconds": audio, "models": rows}
    try:
        diphones = prepare(args.root, seed=args.seed, sizes={"test": args.count}, jobs=args.jobs, log=print,
                           festival=1.0)
    except SynthesisError as e:
        print(f"\nthe held-out festival voice: not read ({e})")
    else:
        voices = ", ".join(v.name for v in festival_voices("test"))
        spoken = load_corpus(diphones, "test")
        results["diphone_voice"] = {"corpus": str(diphones), **_read_set(
            spoken, f"the same {len(spoken)} utterances spoken by the held-out festival voice {voices}",
            diphones, "diphone_wer", not args.quiet, every_reading=False)}
    try:
        real = tidigits.fetch(args.root)
    except (InputError, FormatError) as e:
        print(f"\nreal speakers: not read ({e})")
    else:
        speakers = load_labelled(real / "mfc", real / "transcripts.txt")
        results["real_speakers"] = {"folder": str(real), **_read_set(
            speakers, f"{len(speakers)} utterances of real speakers", real, "real_wer", not args.quiet)}
    common.write_json(Path(args.out) / "speech_demo.json", results)
    print(f"written: {Path(args.out) / 'speech_demo.json'}; report of {rows[0]['file'] if rows else '-'}'s "
          f"readings: {report}")
    return rows


def _audio_seconds(utterances: list[Utterance]) -> float:
    return sum(u.features.shape[0] for u in utterances) / DEFAULT_CONFIG.frame_rate


def _read_set(utterances: list[Utterance], title: str, where: Path, figure: str, show_progress: bool,
              every_reading: bool = True) -> dict:
    """A further set of the demo read by every shipped model and reading (or, without
    ``every_reading``, by the default reading alone of the readings), its table printed under
    ``title``; its audio seconds and rows."""
    seconds = _audio_seconds(utterances)
    print(f"\n{title} ({seconds:.0f} s of audio) in {where}")
    rows, _ = _read_with_every_shipped(utterances, figure, show_progress, every_reading=every_reading)
    _print_table(rows, seconds)
    return {"audio_seconds": seconds, "models": rows}


def _read_with_every_shipped(utterances: list[Utterance], figure: str, show_progress: bool,
                             report_dir: Path | None = None, viz_count: int = 0,
                             every_reading: bool = True) -> tuple[list[dict], Path | None]:
    """A row per shipped model, then per shipped reading of several models or warps (without
    ``every_reading``, only the default reading): its errors on ``utterances``, the time it took and the WER
    models.json gives it (``figure``: ``test_wer`` or ``real_wer`` or ``diphone_wer``); and, in
    ``report_dir``, the alignment report of the first model that reads."""
    rows = []
    report = None
    readings = shipped_readings()
    combined = [r for r in readings if len(r["paths"]) > 1 or r["warps"]]
    if not every_reading:
        combined = [r for r in combined if r is readings[0]]  # the default reading, where it combines
    for entry in shipped_models() + combined:
        began = time.perf_counter()
        if "paths" in entry:  # shipped models reading as one
            model, _ = load_model(entry["paths"], warps=entry["warps"], combine=entry["combine"])
            entry = {**entry, "file": entry["name"], "kind": "joint"}
        else:
            model, _ = load_model(entry["path"])
        reading = utterances
        if entry.get("segmenter"):  # DTW templates read the words their segmenter cuts (timed with them)
            segmenter, _ = load_model(SHIPPED / entry["segmenter"])
            reading = isolated_words(segmenter, utterances)
        result = evaluate_model(model, reading, show_progress=show_progress)
        seconds = time.perf_counter() - began
        summary = result.summary()
        rows.append({"file": entry["file"], "kind": entry["kind"], "units": "isolated words" if entry.get(
            "segmenter") else "utterances", "wer": summary["wer"], "results_wer": entry.get(figure),
                     "sub": summary["substitutions"], "del": summary["deletions"], "ins": summary["insertions"],
                     "words": summary["words"], "seconds": seconds})
        if report_dir is not None and report is None and viz_count > 0 and entry["kind"] in READERS:
            report = write_report(model, utterances[:viz_count], report_dir, result)
    return rows, report


def _print_table(rows: list[dict], audio: float) -> None:
    width = max([len("model"), *(len(row["file"]) for row in rows)])
    print(f"\n{'model':{width}} {'kind':7} {'WER here':>9} {'(sub/del/ins of words)':>24} {'RESULTS.md':>10} "
          f"{'read in':>8}  x real time")
    for row in rows:
        errors = f"{row['sub']}/{row['del']}/{row['ins']} of {row['words']}"
        given = "-" if row["results_wer"] is None else f"{row['results_wer']:.1f} %"
        print(f"{row['file']:{width}} {row['kind']:7} {row['wer']:8.1f} % {errors:>24} {given:>10} "
              f"{row['seconds']:7.1f} s  {audio / max(row['seconds'], 1e-9):6.0f}"
              + ("  (isolated words cut by its segmenter)" if row["units"] != "utterances" else ""))


def _add_model_options(p: argparse.ArgumentParser) -> None:
    e, t = EncoderConfig(), TrainConfig()
    p.add_argument("--model", choices=MODEL_KINDS, default="ctc")
    p.add_argument("--corpus", type=Path, default=None, help="corpus folder made by prepare (default: a resumed "
                                                            f"run's own, else {corpus_dir(DEFAULT_ROOT, 0)})")
    p.add_argument("--segmenter", default="", help="dtw: hybrid checkpoint whose forced alignments cut the words")
    p.add_argument("--init", default="", help="checkpoint whose encoder starts this model's (same encoder options)")
    p.add_argument("--channels", type=int, default=e.channels)
    p.add_argument("--context", type=int, default=e.context, help="dilated convolution layers")
    p.add_argument("--hidden", type=int, default=e.hidden, help="GRU units per direction (0: none)")
    p.add_argument("--layers", type=int, default=e.layers)
    p.add_argument("--stride", type=int, default=e.stride, help="frame subsampling")
    p.add_argument("--dropout", type=float, default=e.dropout)
    p.add_argument("--variance-norm", action="store_true",
                   help="divide each utterance's features by their own standard deviation (per coefficient)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help=f"a setting of the model kind, repeated for several; {options_help()}")
    p.add_argument("--steps", type=int, default=t.steps)
    p.add_argument("--batch-size", type=int, default=t.batch_size, help="global batch (utterances per step)")
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--warmup", type=int, default=t.warmup)
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--valid-size", type=int, default=t.valid_size)
    p.add_argument("--valid-voices", type=int, default=t.valid_voices,
                   help="hold every utterance of this many training voices out of training and validate "
                        "on them (unseen voices, as the test split's; the same voices for every run on "
                        "one corpus); 0: validate on utterances of the training voices")
    p.add_argument("--valid-every", type=int, default=t.valid_every)
    p.add_argument("--checkpoint-every", type=int, default=t.checkpoint_every)
    p.add_argument("--augment", action="store_true", help="perturb training features (tempo, vocal tract "
                                                           "warp, cepstral gains, time masks)")
    p.add_argument("--freq-mask", type=_mel_filters, default=t.freq_mask, metavar="FILTERS",
                   help=f"with --augment, also hold one band of up to FILTERS of the {NUM_FILTERS} mel filters "
                        "at its mean (SpecAugment's frequency mask; 0: none)")


def _mel_filters(text: str) -> int:
    filters = int(text)
    if not 0 <= filters <= NUM_FILTERS:
        raise argparse.ArgumentTypeError(f"a band of 0 to {NUM_FILTERS} mel filters, got {text}")
    return filters


def _utterance_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least 1 utterance, got {text}")
    return count


def _factors(text: str) -> tuple[float, ...]:
    factors = tuple(float(x) for x in text.split(","))
    if not all(0.5 <= a <= 2.0 for a in factors):
        raise argparse.ArgumentTypeError(f"warp factors must lie in [0.5, 2], got {text}")
    return factors


def _add_input_options(p: argparse.ArgumentParser, transcripts: bool) -> None:
    p.add_argument("--checkpoint", action="append", default=[],
                   help="a checkpoint written by train (or export); repeat it to recognise with a committee "
                        "(see --combine); default: the best CTC, hybrid or RNN-T model of "
                        "recipes/speech_digits/shipped/models.json")
    p.add_argument("--warps", type=_factors, default=(), metavar="A,B,...",
                   help="read the input also as vocal tracts scaled by each factor would give it (1: as given; "
                        "test-time augmentation; e.g. 0.85,0.92,1,1.08,1.17,1.27,1.38)")
    p.add_argument("--combine", choices=COMBINE, default="auto",
                   help="how several checkpoints or warps read as one: 'frames' averages frame scores (CTC or "
                        "hybrid models of one kind), 'answers' gives each utterance the answer, of those any "
                        "member read on any warp, of least summed loss over every member and warp (any kinds "
                        "but DTW: the product of their posteriors), 'mixture' the answer of greatest mean "
                        "posterior over them; auto: frames where it can (default)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a reading setting of the model's kind, e.g. beam=8 for an RNN-T (see train --help); with "
                        "kinds mixed, it applies to those that have it")
    p.add_argument("--input", required=True, type=Path, help="folder of .wav (any rate) or Sphinx .mfc files")
    p.add_argument("--mfc-transform", choices=("legacy", "dct"), default=DEFAULT_CONFIG.transform,
                   help="the sphinx_fe -transform the .mfc files were made with: 'dct' ones (as pocketsphinx's "
                        "models' feat.params make them) are converted to the recipe's 'legacy' cepstra")
    if transcripts:
        p.add_argument("--transcripts", required=True, help="lines 'one two three (utterance-id)'")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--viz-count", type=int, default=4, help="utterances drawn in the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipes.speech_digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="synthesise (or complete from the cache) the digit corpus")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="cache directory (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed: same seed, same corpus")
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--jobs", type=int, default=None, help="parallel synthesis jobs (default: CPU count)")
    p.add_argument("--generated-voices", type=int, default=0, metavar="N",
                   help="N random espeak-ng voice variants join the training voices, in each training accent "
                        "(a corpus of its own, ROOT/v1-seedS-genN; the test split is unchanged; at most 238 with "
                        "espeak-ng 1.51's 109 English voices, since espeak-ng lists at most 347)")
    p.add_argument("--generated-accents", type=int, default=0, metavar="N",
                   help="N random accents join the training accents: a training accent's phoneme table with a "
                        "random set of English accent features (a corpus of its own, ROOT/v1-seedS[-genN]-accN; "
                        "the test split is unchanged; voices and accents together at most 238)")
    p.add_argument("--festival-share", type=float, default=0.0, metavar="P",
                   help="festival's voices speak a share P (0 to 1, whole percent) of the utterances of each split, "
                        "in place of the voice drawn for them: real speakers' diphones (kal, ked) and an HTS voice "
                        "(slt); the test split's are ked's, a speaker training never hears (a corpus of its own, "
                        "ROOT/v1-seedS[-genN][-accN]-festP; needs " + FESTIVAL_PACKAGES + ", make speech-deps)")
    p.add_argument("--foreign-share", type=float, default=0.0, metavar="P",
                   help="festival's voices of other languages (Italian, Finnish, Czech, Catalan; real speakers, "
                        "women among them) speak a share P of the utterances of each split, the digit words respelt "
                        "in their language (drawn apart from --festival-share, and over it); the test split's "
                        "are czech_machac's (a corpus of its own, ROOT/...-forP; needs " + FOREIGN_PACKAGES
                        + ", make speech-deps)")
    p.set_defaults(func=cmd_prepare)

    p = commands.add_parser("train", help="train a model (torchrun --nproc_per_node=N for data parallelism)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt and metrics.jsonl go here")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_options(p)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("evaluate", help="word and sentence error rates of a folder with transcripts")
    _add_input_options(p, transcripts=True)
    p.add_argument("--out", default="", help="JSON results (default: evaluation.json beside the checkpoint)")
    p.add_argument("--viz", action="store_true", help="draw alignments into viz/ beside the JSON results")
    p.add_argument("--segmenter", default="", help="hybrid checkpoint: evaluate on the isolated words its "
                                                   "forced alignment cuts out of the input (for dtw models)")
    p.add_argument("--by", default="", metavar="COLUMN",
                   help="also error rates per value of this column of the utterances.tsv beside the "
                        "transcripts (e.g. accent, voice, snr_db)")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("decode", help="print the words recognised in each file of a folder")
    _add_input_options(p, transcripts=False)
    p.add_argument("--viz", default="", help="folder for a report of the decoded alignments")
    p.set_defaults(func=cmd_decode)

    p = commands.add_parser("tidigits", help="fetch the real speakers' test set: the 31 TIDIGITS utterances of "
                                             "pocketsphinx's source archive (pip download)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="data directory: the set goes into ROOT/tidigits")
    p.set_defaults(func=cmd_tidigits)

    p = commands.add_parser("demo", help="fresh utterances of held-out voices read by every shipped model "
                                         "(make speech-demo)")
    p.add_argument("--root", type=Path, default=Path("out") / "speech_demo" / "data",
                   help="where the utterances are synthesised (cached: a second run reuses them)")
    p.add_argument("--seed", type=int, default=7, help="corpus seed (0 is the test set of RESULTS.md)")
    p.add_argument("--count", type=_utterance_count, default=500, help="test utterances")
    p.add_argument("--jobs", type=int, default=None, help="parallel synthesis jobs (default: CPU count)")
    p.add_argument("--out", default=str(Path("out") / "speech_demo"), help="the table (JSON) and the report")
    p.add_argument("--viz-count", type=int, default=6, help="utterances drawn in the report")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    common.add_checkpoint_commands(commands)

    args = common.show_defaults(parser).parse_args(argv)
    common.set_threads(getattr(args, "threads", 0))
    common.run_command(args.func, args)


if __name__ == "__main__":
    main()
