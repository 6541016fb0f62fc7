"""Read a speech-digits folder with pocketsphinx's US English model: a recogniser trained on people.

    python3 -m venv /tmp/ps && /tmp/ps/bin/pip install pocketsphinx==5.1.1
    /tmp/ps/bin/python tools/pocketsphinx_digits.py out/speech_demo/data/v1-seed7-fest100/test [--count N]

The folder is one that ``prepare`` or ``make speech-demo`` writes (``wav/*.wav`` at 16 kHz and
``transcripts.txt``). pocketsphinx's continuous model (``en-us``, trained on recordings of real
speakers) reads each WAV under a grammar of digit strings, and the word error rate is printed. It
measures how much a set of synthetic voices sounds like people to a model that has only heard
people, which the recipe's own models, trained on synthetic voices, cannot tell (RESULTS.md, "A
real speaker's diphones"). It runs in a venv of its own, without torch or the project: it parses
the transcripts and counts the errors itself.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import wave
from pathlib import Path

WORDS = ("oh", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions, deletions and insertions that turn ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        current = [i]
        for j, other in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a split folder: wav/ and transcripts.txt")
    parser.add_argument("--count", type=int, default=0, help="the first N utterances (0: all)")
    args = parser.parse_args()
    from pocketsphinx import Decoder, get_model_path  # imported here: --help works without it

    references = {}
    for line in (args.folder / "transcripts.txt").read_text().splitlines():
        match = re.fullmatch(r"\s*(.*?)\s*\((\S+)\)\s*", line)
        if match is None:
            raise SystemExit(f"{args.folder / 'transcripts.txt'}: not a transcript line: {line!r}")
        references[match.group(2)] = match.group(1).split()
    model = Path(get_model_path()) / "en-us"
    with tempfile.TemporaryDirectory() as scratch:
        grammar = Path(scratch) / "digits.gram"
        grammar.write_text("#JSGF V1.0;\ngrammar digits;\npublic <digits> = (" + " | ".join(WORDS) + ")+ ;\n")
        decoder = Decoder(hmm=str(model / "en-us"), dict=str(model / "cmudict-en-us.dict"), jsgf=str(grammar),
                          logfn="/dev/null")
    errors = words = 0
    ids = sorted(references)[: args.count or None]
    for utt_id in ids:
        with wave.open(str(args.folder / "wav" / f"{utt_id}.wav")) as audio:
            if audio.getframerate() != 16000 or audio.getnchannels() != 1 or audio.getsampwidth() != 2:
                raise SystemExit(f"{utt_id}.wav: pocketsphinx's model reads 16 kHz mono 16-bit audio")
            samples = audio.readframes(audio.getnframes())
        decoder.start_utt()
        decoder.process_raw(samples, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp().hypstr.split() if decoder.hyp() else []
        errors += edit_distance(references[utt_id], hypothesis)
        words += len(references[utt_id])
    print(f"{args.folder}: WER {100 * errors / max(words, 1):.1f} % ({errors} errors in {words} words, "
          f"{len(ids)} utterances), pocketsphinx's en-us model with a digit-string grammar")


if __name__ == "__main__":
    main()
