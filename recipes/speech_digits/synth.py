"""Synthesised connected-digit corpus: espeak-ng, flite and festival voices, perturbed with sox and added noise.

Every utterance is a :class:`UtteranceSpec` drawn from a random generator seeded by (seed, split, index)
alone, so the corpus is deterministic given the seed, a larger corpus extends a smaller one, and each
utterance is cached on disk on its own (WAV and its Sphinx ``.mfc`` features; the files appear atomically,
so an interrupted run resumes where it stopped).

Voices are split between train and test so the test measures generalisation to unseen voices: test
voices use espeak-ng accents and voice variants that never occur in training (both held out at once), and
a flite voice that training never hears. Training can hear more speakers than espeak-ng installs:
``generated`` random voice variants (:func:`generated_variant`), spoken in the training accents only,
and more accents: ``accents`` random accents (:func:`generated_accent`), each a training accent's
phoneme table with a random set of the sound changes that tell English accents apart. A share of
the utterances (``festival``) can be spoken by festival's voices instead: diphones cut from recordings of
real speakers and a statistical parametric (HTS) voice, kinds of voice that neither formant synthesis nor
flite's voices are; the test split holds one of them out. Another share (``foreign``) can be spoken by
festival's voices of other languages, each cut from a real speaker's recordings: they read the digit
words respelt in their own language's spelling, English as a speaker of that language says it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .data import DIGIT_WORDS, write_transcripts, write_utterance_table
from .frontend import DEFAULT_CONFIG, MfccConfig, mfcc, write_wav
from .mfc import write_mfc

# Bump when the synthesis recipe changes: it names the cache directory, so stale utterances are never mixed in.
CORPUS_VERSION = 1
SPLITS = ("train", "test")

ESPEAK_ACCENTS = ("en", "en-us", "en-us-nyc", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-gb-scotland", "en-029")
TEST_ESPEAK_ACCENTS = ("en-gb-scotland", "en-029")
# kal16 is kal at 16 kHz; awb_time is a limited-domain voice that only speaks times of day.
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
TEST_FLITE_VOICES = ("rms",)
FLITE_SHARE = 0.25  # fraction of utterances spoken by flite
# festival's English voices in Debian (packages festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts):
# two American men's diphone sets (kal: the speaker of flite's kal; ked: a speaker no other engine has)
# and an American woman's HTS voice. ked is held out: the test hears a real speaker's diphones that no
# engine of the training has.
FESTIVAL_VOICES = ("kal_diphone", "cmu_us_slt_arctic_hts", "ked_diphone")
TEST_FESTIVAL_VOICES = ("ked_diphone",)
FESTIVAL_PACKAGES = "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
# The festival voice, rate, pitch shift and pauses of an utterance come from a random stream of their
# own, [seed, FESTIVAL_STREAM, split, index]; every other draw is that of the corpus without festival,
# so the same words are spoken under the same perturbations, only by another voice.
FESTIVAL_STREAM = 3000
# festival's voices of other languages in Debian, each cut from a real speaker's recordings, and the
# language whose spelling each reads (the packages of FOREIGN_PACKAGES). Women's voices (lp, lj, dita,
# ona) are what festival's English voices lack. Machac is held out for the test split.
FOREIGN_VOICES = {"lp_diphone": "italian", "pc_diphone": "italian", "suo_fi_lj_diphone": "finnish",
                  "hy_fi_mv_diphone": "finnish", "czech_dita": "czech", "czech_machac": "czech",
                  "upc_ca_ona_hts": "catalan"}
TEST_FOREIGN_VOICES = ("czech_machac",)
FOREIGN_PACKAGES = ("festvox-italp16k festvox-itapc16k festvox-suopuhe-lj festvox-suopuhe-mv festvox-czech-dita "
                    "festvox-czech-machac festvox-ca-ona-hts")
# The digit words as each language spells their English sounds (its letter-to-sound rules are regular, so
# the voice says an accented English word; "three" loses its TH, as it often does in such speakers' English).
RESPELLINGS = {
    "italian": {"zero": "ziro", "oh": "ou", "one": "uan", "two": "tu", "three": "tri", "four": "for",
                "five": "faiv", "six": "sics", "seven": "seven", "eight": "eit", "nine": "nain"},
    "finnish": {"zero": "siirou", "oh": "ou", "one": "uan", "two": "tuu", "three": "trii", "four": "foor",
                "five": "faiv", "six": "siks", "seven": "seven", "eight": "eit", "nine": "nain"},
    "czech": {"zero": "zirou", "oh": "ou", "one": "uan", "two": "tu", "three": "tri", "four": "for",
              "five": "fajv", "six": "siks", "seven": "sevn", "eight": "ejt", "nine": "najn"},
    "catalan": {"zero": "ziro", "oh": "ou", "one": "uan", "two": "tu", "three": "tri", "four": "for",
                "five": "faiv", "six": "sics", "seven": "seven", "eight": "eit", "nine": "nain"},
}
FOREIGN_STREAM = 4000  # the foreign voices' draws: [seed, FOREIGN_STREAM, split, index], as festival's
GENERATED_PREFIX = "gen"  # generated espeak-ng variants are gen000, gen001, ...
GENERATED_STREAM = 1000  # their random stream: [seed, GENERATED_STREAM, index], apart from the utterances'
# Voice files espeak-ng lists without overflowing its voice list (N_VOICES_LIST = 350, a compile-time
# constant; measured: 347 language and variant files list cleanly, 348 overflow).
ESPEAK_MAX_VOICES = 347
GENERATED_ACCENT_PREFIX = "en-x-acc"  # generated accents are en-x-acc000, en-x-acc001, ...
GENERATED_ACCENT_STREAM = 2000  # their random stream: [seed, GENERATED_ACCENT_STREAM, index]
# What a generated accent starts from: the phoneme tables and dictionary rule sets of the training
# accents (lang/gmw/en* of espeak-ng 1.51; "en" is the table of the accent without a phonemes line).
TRAINING_PHONEME_TABLES = ("en", "en-us", "en-us-nyc", "en-rp", "en-n", "en-wm")
TRAINING_DICTRULES = ("", "6", "3 6")
# Sound changes that distinguish accents of English (in the lexical sets of Wells, Accents of English,
# 1982, and the consonant features of second-language Englishes), as espeak-ng phoneme replacements;
# every phoneme named exists in each training table (LOT is left out: espeak-ng 1.51 does not replace
# its phoneme, named 0). A generated accent draws each with probability
# ACCENT_FEATURE_SHARE, so most accents combine a few; of two that change one phoneme, the first drawn.
ACCENT_FEATURES: dict[str, tuple[tuple[str, str], ...]] = {
    "FACE monophthong": (("eI", "e:"),),
    "GOAT monophthong": (("oU", "o:"),),
    "GOAT open": (("oU", "O:"),),
    "PRICE monophthong": (("aI", "A:"),),
    "MOUTH monophthong": (("aU", "A:"),),
    "STRUT as FOOT": (("V", "U"),),
    "STRUT central": (("V", "@"),),
    "KIT tense": (("I", "i:"),),
    "FLEECE lax": (("i:", "I"),),
    "GOOSE lax": (("u:", "U"),),
    "DRESS raised": (("E", "e"),),
    "TRAP raised": (("a", "E"),),
    "TRAP broad": (("a", "A:"),),
    "NURSE front": (("3:", "E"),),
    "FORCE open": (("o@", "O@"),),
    "schwa as STRUT": (("@", "V"),),
    "TH stopping": (("T", "t"), ("D", "d")),
    "TH fronting": (("T", "f"), ("D", "v")),
    "H dropping": (("h", "NULL"),),
    "G dropping": (("N", "n"),),
    "W as V": (("w", "v"),),
    "Z devoiced": (("z", "s"),),
}
ACCENT_FEATURE_SHARE = 0.2
SNR_CHOICES_DB = (None, 40.0, 30.0, 20.0, 15.0, 10.0, 5.0)
NOISE_COLOURS = ("white", "pink", "brown")


class SynthesisError(RuntimeError):
    """A synthesis tool is missing or failed; the message names the command."""


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng", "flite" or "festival"
    name: str  # espeak-ng: accent[+variant], e.g. "en-us+m3" or "en-us+gen017"; flite, festival: voice name

    @property
    def is_generated(self) -> bool:
        """An espeak-ng voice whose variant is one of :func:`generated_variant`'s or whose accent is one of
        :func:`generated_accent`'s, not an installed one (spoken from :func:`write_generated_voices`' data)."""
        accent, _, variant = self.name.partition("+")
        return self.engine == "espeak-ng" and (is_generated_variant(variant) or is_generated_accent(accent))

    @property
    def accent(self) -> str:
        """The voice without its variant: ``espeak-ng:en-029`` for ``espeak-ng:en-029+Alex``; a flite
        or festival voice is an accent of its own."""
        return f"{self.engine}:{self.name.partition('+')[0]}"

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything that determines one utterance's audio."""

    utt_id: str
    words: tuple[str, ...]
    voice: Voice
    rate: float  # espeak-ng words per minute, or flite and festival duration stretch (higher = slower)
    pitch: float  # espeak-ng pitch 0..99, flite target f0 mean in Hz, festival pitch shift in semitones
    word_gap: int  # espeak-ng pause between words in 10 ms units; flite, festival: commas between words if > 0
    speed: float  # sox speed factor (pitch and tempo together)
    tempo: float  # sox tempo factor (tempo alone)
    reverb: float | None  # sox reverberance 0..100, None for dry
    level_db: float  # peak level of the speech in dB below full scale
    snr_db: float | None  # speech-to-noise ratio of the added noise, None for none
    noise: str  # noise colour: white, pink, brown
    lead_s: float  # silence before the speech
    trail_s: float  # silence after the speech

    @property
    def text(self) -> str:
        """What the voice is given to read: the words, respelt for a foreign voice (:data:`RESPELLINGS`)."""
        language = FOREIGN_VOICES.get(self.voice.name) if self.voice.engine == "festival" else None
        words = self.words if language is None else [RESPELLINGS[language][w] for w in self.words]
        return (", " if self.voice.engine != "espeak-ng" and self.word_gap > 0 else " ").join(words)


def require_tools(*tools: str) -> None:
    """Raise SynthesisError naming the Debian package for each missing tool (``make speech-deps`` installs them)."""
    packages = {"espeak-ng": "espeak-ng", "flite": "flite", "sox": "sox", "sphinx_fe": "sphinxbase-utils",
                "text2wave": FESTIVAL_PACKAGES}
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        names = " ".join(packages.get(t, t) for t in missing)
        raise SynthesisError(f"missing {', '.join(missing)}: apt-get install {names} (or make speech-deps)")


@lru_cache(maxsize=1)
def _espeak_data_dir() -> Path:
    require_tools("espeak-ng")
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    if "Data at:" not in version:
        raise SynthesisError(f"cannot find espeak-ng's data directory in {version!r}")
    return Path(version.split("Data at:")[1].strip())


@lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """Names of the installed espeak-ng voice variants (files under espeak-ng-data/voices/!v), sorted."""
    variants_dir = _espeak_data_dir() / "voices" / "!v"
    return tuple(sorted(p.name for p in variants_dir.iterdir() if p.is_file()))


def is_test_variant(variant: str) -> bool:
    """Held-out espeak-ng variants: a stable hash of the name, so the split survives new variants appearing."""
    return zlib.crc32(variant.encode()) % 4 == 0


def is_generated_variant(variant: str) -> bool:
    """A variant name written by :func:`write_generated_voices` (``gen`` and digits)."""
    return _is_numbered(variant, GENERATED_PREFIX)


def _is_numbered(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and name[len(prefix):].isdigit()


def generated_variant(seed: int, index: int) -> str:
    """The espeak-ng variant file of generated voice ``index`` (a function of (seed, index) only).

    A random speaker: the vocal tract scaled as a whole (formant frequencies x0.8 to x1.5, log-uniform:
    from a long adult tract to a child's) with a little jitter per formant, random formant strengths and
    widths, pitch base and range, flutter and roughness; one voice in six breathy with weak voicing, one
    in five with an echo. Written in the syntax of espeak-ng's own variants (``voices/!v``)."""
    rng = np.random.default_rng([seed, GENERATED_STREAM, index])
    scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.5))))
    lines = ["language variant", f"name {GENERATED_PREFIX}{index:03d}"]
    base = float(np.exp(rng.uniform(np.log(60.0), np.log(260.0))))
    lines.append(f"pitch {base:.0f} {base * rng.uniform(1.1, 1.8):.0f}")
    for k in range(9):
        frequency = 100 * scale * (rng.uniform(0.93, 1.07) if 1 <= k <= 5 else 1.0)
        strength, width = (rng.uniform(60, 130), rng.uniform(80, 160)) if k <= 5 else (100, 100)
        lines.append(f"formant {k} {frequency:.0f} {strength:.0f} {width:.0f}")
    lines.append(f"flutter {rng.integers(0, 26)}")
    lines.append(f"roughness {rng.integers(0, 5)}")
    if rng.random() < 1 / 6:
        breath = np.sort(rng.uniform(0, 80, size=6))[::-1]
        lines += [f"voicing {rng.integers(10, 41)}", "breath " + " ".join(f"{b:.0f}" for b in breath)]
    else:
        lines.append(f"voicing {rng.integers(50, 101)}")
    if rng.random() < 0.2:
        lines.append(f"echo {rng.integers(50, 201)} {rng.integers(5, 31)}")
    return "\n".join(lines) + "\n"


def is_generated_accent(accent: str) -> bool:
    """An accent name written by :func:`write_generated_voices` (``en-x-acc`` and digits)."""
    return _is_numbered(accent, GENERATED_ACCENT_PREFIX)


def generated_accent(seed: int, index: int) -> str:
    """The espeak-ng language file of generated accent ``index`` (a function of (seed, index) only).

    A random accent of English built from the training accents alone: one of their phoneme tables and
    dictionary rule sets, each of :data:`ACCENT_FEATURES` with probability :data:`ACCENT_FEATURE_SHARE`
    (as ``replace`` lines), and random syllable lengths and amplitudes by stress (its rhythm). Written in
    the syntax of espeak-ng's own language files (``lang/gmw/en*``)."""
    rng = np.random.default_rng([seed, GENERATED_ACCENT_STREAM, index])
    name = f"{GENERATED_ACCENT_PREFIX}{index:03d}"
    lines = [f"name {name}", f"language {name}"]
    table = TRAINING_PHONEME_TABLES[int(rng.integers(len(TRAINING_PHONEME_TABLES)))]
    if table != "en":
        lines.append(f"phonemes {table}")
    dictrules = TRAINING_DICTRULES[int(rng.integers(len(TRAINING_DICTRULES)))]
    if dictrules:
        lines.append(f"dictrules {dictrules}")
    # Unstressed, diminished, secondary, primary... (espeak-ng's 8 stress levels): lengths in ms-like units.
    lengths = np.sort(rng.uniform(120, 200, size=4)).round().astype(int)
    final = np.sort(rng.uniform(220, 310, size=2)).round().astype(int)
    lines.append("stressLength " + " ".join(map(str, [*lengths, 0, 0, *final])))
    amplitudes = rng.integers(15, 23, size=8)
    lines.append("stressAmp " + " ".join(map(str, amplitudes)))
    changed: set[str] = set()
    for feature in ACCENT_FEATURES.values():
        if rng.random() < ACCENT_FEATURE_SHARE and not changed & {old for old, _ in feature}:
            lines += [f"replace 00 {old} {new}" for old, new in feature]
            changed |= {old for old, _ in feature}
    return "\n".join(lines) + "\n"


def write_generated_voices(corpus: Path, seed: int, count: int, accents: int = 0) -> Path:
    """A private copy of espeak-ng's data with the ``count`` generated variants and the ``accents``
    generated accents added; returns the folder to pass as ``espeak-ng --path``.

    espeak-ng lists at most :data:`ESPEAK_MAX_VOICES` voice files (languages and variants); past that it
    drops voices from the list, and a language that is dropped is either "not found" or silently spoken
    with another voice. So the copy keeps only what the corpus speaks (the English languages and the
    installed variants; no other language, no mbrola voice), and too many generated variants raise
    SynthesisError."""
    home = corpus / "espeak-ng"
    data = home / "espeak-ng-data"
    if not data.exists():
        tmp = home / f".espeak-ng-data.{os.getpid()}.tmp"
        shutil.copytree(_espeak_data_dir(), tmp)
        os.replace(tmp, data)
    # Pruned on every call, not only on copying: copies made before the pruning existed are mended too.
    shutil.rmtree(data / "voices" / "mb", ignore_errors=True)
    for path in (data / "lang").rglob("*"):
        if path.is_file() and not path.name.lower().startswith("en"):
            path.unlink()
    variants = data / "voices" / "!v"
    languages = data / "lang" / "gen"
    languages.mkdir(exist_ok=True)
    listed = sum(1 for p in (data / "lang").rglob("*") if p.is_file() and not is_generated_accent(p.name))
    listed += sum(1 for p in variants.iterdir() if p.is_file() and not is_generated_variant(p.name))
    if listed + count + accents > ESPEAK_MAX_VOICES:
        raise SynthesisError(f"espeak-ng lists at most {ESPEAK_MAX_VOICES} voices and {listed} are installed "
                             f"English ones: at most {ESPEAK_MAX_VOICES - listed} generated voices and accents, "
                             f"not {count} + {accents}")
    files = [(variants / f"{GENERATED_PREFIX}{i:03d}", generated_variant(seed, i)) for i in range(count)]
    files += [(languages / f"{GENERATED_ACCENT_PREFIX}{i:03d}", generated_accent(seed, i)) for i in range(accents)]
    for path, text in files:
        if not path.exists() or path.read_text() != text:
            _atomic_write(path, functools.partial(Path.write_text, data=text))
    return home


def split_voices(split: str, generated: int = 0, accents: int = 0) -> tuple[list[Voice], list[Voice]]:
    """(espeak-ng voices, flite voices) of a split; ``generated`` generated variants join the training
    accents and ``accents`` generated accents the training accents (never the test's)."""
    espeak, flite = _split_voices(split, generated, accents)
    return list(espeak), list(flite)


@functools.cache
def _split_voices(split: str, generated: int, accents: int) -> tuple[tuple[Voice, ...], tuple[Voice, ...]]:
    """:func:`split_voices`, built once per (split, generated, accents): every utterance spec draws from it
    (building it took 2.5 ms with 200 generated voices, 80 % of a spec's cost)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= generated <= 1000:
        raise ValueError(f"generated voices: 0 to 1000 (gen000 ... gen999), got {generated}")
    if not 0 <= accents <= 1000:
        raise ValueError(f"generated accents: 0 to 1000 ({GENERATED_ACCENT_PREFIX}000 ...), got {accents}")
    test = split == "test"
    languages = [a for a in ESPEAK_ACCENTS if (a in TEST_ESPEAK_ACCENTS) == test]
    if not test:
        languages += [f"{GENERATED_ACCENT_PREFIX}{i:03d}" for i in range(accents)]
    variants = [v for v in espeak_variants() if is_test_variant(v) == test]
    names = [f"{a}+{v}" for a in languages for v in variants]
    if not test:
        names = list(languages) + names  # the accents' own default voices
        names += [f"{a}+{GENERATED_PREFIX}{i:03d}" for a in languages for i in range(generated)]
    flite = tuple(Voice("flite", v) for v in FLITE_VOICES if (v in TEST_FLITE_VOICES) == test)
    return tuple(Voice("espeak-ng", n) for n in names), flite


def festival_voices(split: str, foreign: bool = False) -> list[Voice]:
    """The festival voices of a split, English (:data:`FESTIVAL_VOICES`) or, with ``foreign``, of other
    languages (:data:`FOREIGN_VOICES`): the held-out ones in the test's, the others in training's."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    names, held_out = (tuple(FOREIGN_VOICES), TEST_FOREIGN_VOICES) if foreign else (FESTIVAL_VOICES,
                                                                                     TEST_FESTIVAL_VOICES)
    return [Voice("festival", v) for v in names if (v in held_out) == (split == "test")]


def _festival_draw(seed: int, split: str, index: int, share: float, foreign: bool
                   ) -> tuple[Voice, float, float, int] | None:
    """Whether a festival voice speaks an utterance (with probability ``share``), and if so which, with its
    duration stretch, pitch shift and pauses, from a random stream of their own (:data:`FESTIVAL_STREAM`,
    :data:`FOREIGN_STREAM`)."""
    rng = np.random.default_rng([seed, FOREIGN_STREAM if foreign else FESTIVAL_STREAM, SPLITS.index(split), index])
    if not rng.random() < share:
        return None
    voices = festival_voices(split, foreign)
    voice = voices[int(rng.integers(len(voices)))]
    # Semitones of sox's pitch shift (formants with the pitch): from a lower man's voice than kal's and
    # ked's to a higher woman's than slt's, as the espeak-ng variants span.
    rate, pitch = float(rng.uniform(0.75, 1.35)), float(rng.uniform(-4.0, 5.0))
    return voice, rate, pitch, int(rng.random() < 0.3)


def utterance_spec(seed: int, split: str, index: int, generated: int = 0, accents: int = 0,
                   festival: float = 0.0, foreign: float = 0.0) -> UtteranceSpec:
    """The ``index``-th utterance of ``split``: a function of (seed, split, index, generated, accents,
    festival, foreign) only. ``festival``: the share of utterances an English festival voice speaks (0 to
    1), ``foreign``: the share a festival voice of another language speaks (drawn apart, and over the
    English one); the others are the corpus's without festival, unchanged."""
    for what, share in (("festival", festival), ("foreign", foreign)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{what} share: 0 to 1, got {share}")
    espeak, flite = _split_voices(split, generated, accents)
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    words = tuple(DIGIT_WORDS[i] for i in rng.integers(0, len(DIGIT_WORDS), size=int(rng.integers(1, 8))))
    if rng.random() < FLITE_SHARE:
        voice = flite[int(rng.integers(len(flite)))]
        rate, pitch = float(rng.uniform(0.75, 1.35)), float(rng.uniform(80.0, 200.0))
        word_gap = int(rng.random() < 0.3)
    else:
        voice = espeak[int(rng.integers(len(espeak)))]
        rate, pitch = float(rng.uniform(120.0, 220.0)), float(rng.uniform(20.0, 80.0))
        word_gap = int(rng.integers(0, 12)) if rng.random() < 0.5 else 0
    snr = SNR_CHOICES_DB[int(rng.integers(len(SNR_CHOICES_DB)))]
    for share, foreign_voice in ((festival, False), (foreign, True)):
        drawn = _festival_draw(seed, split, index, share, foreign_voice) if share > 0.0 else None
        if drawn is not None:
            voice, rate, pitch, word_gap = drawn
    return UtteranceSpec(
        utt_id=f"{split}-{index:06d}",
        words=words,
        voice=voice,
        rate=round(rate, 3),
        pitch=round(pitch, 1),
        word_gap=word_gap,
        speed=round(float(rng.uniform(0.9, 1.1)), 3),
        tempo=round(float(rng.uniform(0.9, 1.1)), 3),
        reverb=round(float(rng.uniform(10.0, 70.0)), 1) if rng.random() < 0.4 else None,
        level_db=round(float(rng.uniform(1.0, 25.0)), 1),
        snr_db=snr,
        noise=NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))],
        lead_s=round(float(rng.uniform(0.05, 0.5)), 3),
        trail_s=round(float(rng.uniform(0.05, 0.5)), 3),
    )


class ToolCrash(SynthesisError):
    """A synthesis tool died of a signal (festival does, reproducibly, on a few inputs)."""


def _festival_rate(voice: str, stretch: float) -> str:
    """festival's Scheme that sets a voice's speaking rate: diphone voices stretch their durations;
    festival's HTS engine ignores that parameter and takes a speech rate (its "-r", the inverse of a
    stretch) instead."""
    if voice.endswith("_hts"):
        return f"(set! hts_engine_params (append hts_engine_params (list '(\"-r\" {1.0 / stretch:.4f}))))"
    return f"(Parameter.set 'Duration_Stretch {stretch:.4g})"


def _run(command: list[str], stdin: bytes | None = None) -> bytes:
    result = subprocess.run(command, input=stdin, capture_output=True)
    if result.returncode < 0:
        raise ToolCrash(f"{' '.join(command)} died of signal {-result.returncode}")
    # espeak-ng's full voice list is only a warning, but it may have spoken another voice than asked for.
    if result.returncode != 0 or b"N_VOICES_LIST" in result.stderr:
        raise SynthesisError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.decode()[-500:]}")
    return result.stdout


def _tts_wav(spec: UtteranceSpec, workdir: str, espeak_home: Path | None) -> str:
    """Write the unperturbed TTS output of ``spec`` to a WAV file in ``workdir``; return its path.
    ``espeak_home``: the data made by :func:`write_generated_voices`, for generated voices."""
    path = os.path.join(workdir, "tts.wav")
    if spec.voice.engine == "espeak-ng":
        if spec.voice.is_generated and espeak_home is None:
            raise SynthesisError(f"{spec.voice} is a generated voice: pass the folder of write_generated_voices")
        data = ["--path", str(espeak_home)] if spec.voice.is_generated else []
        _run(["espeak-ng", *data, "-v", spec.voice.name, "-s", str(int(spec.rate)), "-p", str(int(spec.pitch)),
              "-g", str(spec.word_gap), "-w", path, spec.text])
    elif spec.voice.engine == "flite":
        _run(["flite", "-voice", spec.voice.name, "--setf", f"duration_stretch={spec.rate}",
              "--setf", f"int_f0_target_mean={spec.pitch}", "-t", spec.text, "-o", path])
    elif spec.voice.engine == "festival":
        if spec.voice.name not in (*FESTIVAL_VOICES, *FOREIGN_VOICES):
            raise ValueError(f"unknown festival voice {spec.voice.name!r}: one of {FESTIVAL_VOICES} or "
                             f"{tuple(FOREIGN_VOICES)}")
        # festival's diphone engine crashes (SIGSEGV) on a few (text, stretch) pairs, the same every time
        # (the Italian voices reading "tu" alone at some stretches, in bands up to 1 % wide); such an
        # utterance is spoken 2 % slower, up to 3 times.
        for nudge in range(4):
            try:
                _run(["text2wave", "-eval", f"(voice_{spec.voice.name})", "-eval",
                      _festival_rate(spec.voice.name, spec.rate * 1.02**nudge), "-o", path],
                     stdin=spec.text.encode())
                break
            except ToolCrash:
                if nudge == 3:
                    raise
        # text2wave exits with 0 when its Scheme fails (a voice not installed, say): its output tells.
        if not os.path.isfile(path) or os.path.getsize(path) <= 44:
            raise SynthesisError(f"festival's {spec.voice.name} wrote no audio: is its voice installed? "
                                 f"(apt-get install {FESTIVAL_PACKAGES} {FOREIGN_PACKAGES}, or make speech-deps)")
    else:
        raise ValueError(f"unknown TTS engine {spec.voice.engine!r}")
    return path


def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-power noise whose power spectrum falls as 1/f^0 (white), 1/f (pink) or 1/f^2 (brown)."""
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0  # keep the DC bin finite; it is removed below
    spectrum *= freqs ** (-exponent / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=n)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def active_power(x: np.ndarray, sample_rate: int) -> float:
    """Mean power over the 10 ms blocks within 40 dB of the loudest (the speech, not the pauses)."""
    block = sample_rate // 100
    usable = x[: x.size - x.size % block].reshape(-1, block) if x.size >= block else x.reshape(1, -1)
    power = np.mean(usable**2, axis=1)
    return float(power[power >= power.max() * 1e-4].mean()) if power.max() > 0 else 0.0


def synthesize(spec: UtteranceSpec, seed: int, sample_rate: int = 16000,
               espeak_home: Path | None = None) -> np.ndarray:
    """Samples (int16 scale, float64) of one utterance at ``sample_rate`` (``espeak_home``: see
    :func:`write_generated_voices`, needed for generated voices)."""
    with tempfile.TemporaryDirectory(prefix="digits-") as workdir:
        tts = _tts_wav(spec, workdir, espeak_home)
        effects = ["pitch", f"{100 * spec.pitch:.0f}"] if spec.voice.engine == "festival" and spec.pitch else []
        effects += ["speed", str(spec.speed), "tempo", str(spec.tempo)]
        if spec.reverb is not None:
            effects += ["reverb", str(spec.reverb)]
        # -D: no dither, so sox's output is deterministic. Float output: no clipping before we set the level.
        raw = _run(["sox", "-D", "-V1", tts, "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1",
                    "-r", str(sample_rate), "-", *effects])
    speech = np.frombuffer(raw, dtype=np.float32).astype(np.float64)
    peak = float(np.abs(speech).max()) if speech.size else 0.0
    if peak == 0.0:
        raise SynthesisError(f"{spec.voice} produced silence for {spec.text!r}")
    speech *= 10.0 ** (-spec.level_db / 20.0) / peak
    x = np.concatenate([np.zeros(int(spec.lead_s * sample_rate)), speech, np.zeros(int(spec.trail_s * sample_rate))])
    if spec.snr_db is not None:
        rng = np.random.default_rng([seed, zlib.crc32(spec.utt_id.encode())])
        noise_power = active_power(speech, sample_rate) * 10.0 ** (-spec.snr_db / 10.0)
        x += coloured_noise(rng, x.size, spec.noise) * np.sqrt(noise_power)
    return np.clip(x * 32767.0, -32768.0, 32767.0)


def corpus_dir(root: str | Path, seed: int, generated: int = 0, accents: int = 0, festival: float = 0.0,
               foreign: float = 0.0) -> Path:
    """Where the corpus for ``seed`` (with ``generated`` generated voice variants, ``accents`` generated
    accents, a ``festival`` share of festival's English voices and a ``foreign`` share of its other
    languages' voices) lives under ``root``."""
    name = f"v{CORPUS_VERSION}-seed{seed}" + (f"-gen{generated}" if generated else "")
    name += f"-acc{accents}" if accents else ""
    name += f"-fest{share_percent(festival, 'festival')}" if festival else ""
    return Path(root) / (name + (f"-for{share_percent(foreign, 'foreign')}" if foreign else ""))


def share_percent(share: float, what: str) -> int:
    """A share of voices (``what``: festival, foreign) in whole percent, as a corpus is named; a share of
    other precision is refused, so that two shares never share a folder."""
    percent = round(share * 100)
    if not 0 <= percent <= 100 or abs(percent - share * 100) > 1e-9:
        raise ValueError(f"{what} share: a whole percentage from 0 to 1 (0.25, say), got {share}")
    return percent


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(path)}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _make_utterance(spec: UtteranceSpec, seed: int, split_dir: Path, config: MfccConfig,
                    espeak_home: Path | None) -> bool:
    """Synthesise one utterance and its features unless cached; True if it was made now."""
    wav = split_dir / "wav" / f"{spec.utt_id}.wav"
    mfc = split_dir / "mfc" / f"{spec.utt_id}.mfc"
    if wav.exists() and mfc.exists():
        return False
    samples = synthesize(spec, seed, config.sample_rate, espeak_home)
    _atomic_write(wav, lambda p: write_wav(p, samples, config.sample_rate))
    # Features from the int16 samples as stored, exactly what sphinx_fe would compute from the WAV.
    features = mfcc(np.rint(samples), config)
    _atomic_write(mfc, lambda p: write_mfc(p, features))
    return True


def prepare(
    root: str | Path,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    jobs: int | None = None,
    config: MfccConfig = DEFAULT_CONFIG,
    log: Callable[[str], None] | None = None,
    generated: int = 0,
    accents: int = 0,
    festival: float = 0.0,
    foreign: float = 0.0,
) -> Path:
    """Make (or complete from the cache) the corpus: for each split, ``sizes[split]`` utterances;
    ``generated`` generated voice variants and ``accents`` generated accents join the training voices,
    and festival's voices speak a ``festival`` share of each split, its other languages' voices a
    ``foreign`` share (each a corpus of its own).

    Writes ``<corpus>/<split>/wav/*.wav``, ``mfc/*.mfc`` (no CMN), ``transcripts.txt`` (Sphinx style,
    exactly the utterances asked for) and ``utterances.tsv`` (the parameters of each). Returns the corpus
    directory (see :func:`corpus_dir`).
    """
    require_tools("espeak-ng", "flite", "sox", *(["text2wave"] if festival or foreign else []))
    sizes = {"train": 3000, "test": 500} if sizes is None else sizes
    jobs = jobs or os.cpu_count() or 1
    out = corpus_dir(root, seed, generated, accents, festival, foreign)
    espeak_home = write_generated_voices(out, seed, generated, accents) if generated or accents else None
    for split, size in sizes.items():
        start = time.perf_counter()
        specs = [utterance_spec(seed, split, i, generated, accents, festival, foreign) for i in range(size)]
        made = _prepare_split(out / split, specs, seed, jobs, config, espeak_home)
        if log is not None:
            log(f"{split}: {size} utterances ({made} synthesised now, {size - made} cached) "
                f"in {time.perf_counter() - start:.1f} s with {jobs} jobs")
    return out


def _prepare_split(split_dir: Path, specs: list[UtteranceSpec], seed: int, jobs: int, config: MfccConfig,
                   espeak_home: Path | None) -> int:
    """Make the utterances of one split that are not cached, then its lists; return how many were made."""
    (split_dir / "wav").mkdir(parents=True, exist_ok=True)
    (split_dir / "mfc").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        made = sum(pool.map(functools.partial(_make_utterance, seed=seed, split_dir=split_dir, config=config,
                                           espeak_home=espeak_home), specs))
    _atomic_write(split_dir / "transcripts.txt",
                  functools.partial(_write_transcript_file, specs=specs))
    _atomic_write(split_dir / "utterances.tsv", functools.partial(_write_table, specs=specs))
    return made


def _write_transcript_file(path: Path, specs: Sequence[UtteranceSpec]) -> None:
    write_transcripts(path, ((s.utt_id, s.words) for s in specs))


def _write_table(path: Path, specs: Sequence[UtteranceSpec]) -> None:
    fields = ("utt_id", "voice", "accent", "rate", "pitch", "word_gap", "speed", "tempo", "reverb", "level_db",
              "snr_db", "noise", "lead_s", "trail_s", "text")
    write_utterance_table(path, fields, ([s.utt_id, str(s.voice), s.voice.accent, s.rate, s.pitch, s.word_gap, s.speed,
                                          s.tempo, s.reverb, s.level_db, s.snr_db, s.noise, s.lead_s, s.trail_s,
                                          " ".join(s.words)] for s in specs))
