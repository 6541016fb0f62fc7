"""Command line of the speech-digits recipe: ``python -m recipes.speech_digits prepare [options]``."""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

from .synth import prepare, split_voices

DEFAULT_ROOT = Path("data/speech_digits")


def _disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cmd_prepare(args: argparse.Namespace) -> None:
    for split in ("train", "test"):
        espeak, flite = split_voices(split)
        print(f"{split} voices: {len(espeak)} espeak-ng, {len(flite)} flite ({', '.join(v.name for v in flite)})")
    start = time.perf_counter()
    corpus = prepare(args.root, seed=args.seed, sizes={"train": args.train_size, "test": args.test_size},
                     jobs=args.jobs, log=print)
    elapsed = time.perf_counter() - start
    print(f"corpus {corpus}: {_disk_usage(corpus) / 2**20:.1f} MiB, prepared in {elapsed:.1f} s")
    for split in ("train", "test"):
        table = (corpus / split / "utterances.tsv").read_text().splitlines()[1:]
        voices = collections.Counter(line.split("\t")[1] for line in table)
        engines = collections.Counter(v.split(":")[0] for v in voices.elements())
        print(f"{split}: {len(table)} utterances, {len(voices)} distinct voices, by engine {dict(engines)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipes.speech_digits", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="synthesise (or complete from the cache) the digit corpus")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="cache directory (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed: same seed, same corpus")
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--jobs", type=int, default=None, help="parallel synthesis jobs (default: CPU count)")
    p.set_defaults(run=cmd_prepare)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
