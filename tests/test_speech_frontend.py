"""The speech recipe's MFCC front end against sphinx_fe, WAV reading and resampling."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gtn_py.errors import FormatError
from recipes.speech_digits.frontend import (
    DEFAULT_CONFIG,
    MfccConfig,
    cepstral_transform,
    frames,
    frequency_mask,
    frequency_warp,
    mel_filterbank,
    mfcc,
    read_wav,
    resample,
    transform_conversion,
    wav_features,
    write_wav,
)
from recipes.speech_digits.mfc import read_mfc

# sphinx_fe writes float32; over whole utterances the largest difference seen is ~3e-6 (on c0 ~ 10).
SPHINX_TOLERANCE = 1e-4

needs_sphinx_fe = pytest.mark.skipif(
    shutil.which("sphinx_fe") is None, reason="sphinx_fe missing: apt-get install sphinxbase-utils (make speech-deps)"
)
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng or sox missing: apt-get install espeak-ng sox (make speech-deps)",
)


def speechlike(n: int, seed: int) -> np.ndarray:
    """A harmonic signal with a gliding pitch, bursts of noise and a stretch of digital silence (int16 scale)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    f0 = 110 + 60 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    x = 4000 * voiced * envelope + rng.normal(0, 300, n) * (np.sin(2 * np.pi * 0.7 * t) > 0.6)
    x[n // 3: n // 3 + 3000] = 0.0
    return np.clip(np.rint(x), -32768, 32767)


def sphinx_fe(wav: Path, config: MfccConfig, tmp_path: Path) -> np.ndarray:
    out = tmp_path / (wav.stem + f"-{config.transform}.mfc")
    subprocess.run(["sphinx_fe", "-i", str(wav), "-o", str(out), "-mswav", "yes", *config.sphinx_fe_args()],
                   check=True, capture_output=True)
    return read_mfc(out, config.num_cepstra)


def assert_matches_sphinx(samples: np.ndarray, config: MfccConfig, tmp_path: Path, name: str) -> None:
    wav = tmp_path / f"{name}.wav"
    write_wav(wav, samples, config.sample_rate)
    reference = sphinx_fe(wav, config, tmp_path)
    ours = mfcc(samples, config)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < SPHINX_TOLERANCE


@needs_sphinx_fe
@pytest.mark.parametrize("transform", ["legacy", "dct"])
# Lengths: a remainder after the last full frame, none (sphinx_fe still emits the padded tail frame), and
# both around its 2048-sample read blocks. (For files under one block sphinx_fe's count differs: it drops them.)
@pytest.mark.parametrize("n", [2048, 2160, 4097, 21278])
def test_mfcc_matches_sphinx_fe(tmp_path: Path, transform: str, n: int) -> None:
    assert_matches_sphinx(speechlike(n, n), MfccConfig(transform=transform), tmp_path, f"sig{n}")


@needs_sphinx_fe
@needs_espeak
def test_mfcc_matches_sphinx_fe_on_synthesised_speech(tmp_path: Path) -> None:
    raw = tmp_path / "raw.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), "one two three oh"], check=True)
    wav = tmp_path / "speech.wav"
    subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-b", "16", str(wav)], check=True)
    samples, rate = read_wav(wav)
    assert rate == 16000
    for transform in ("legacy", "dct"):
        config = MfccConfig(transform=transform)
        reference = sphinx_fe(wav, config, tmp_path)
        assert np.abs(wav_features(wav, config) - reference).max() < SPHINX_TOLERANCE


def test_framing_follows_sphinx() -> None:
    size, shift = DEFAULT_CONFIG.frame_size, DEFAULT_CONFIG.frame_shift
    assert (size, shift) == (400, 160)
    x = np.arange(1, 1001, dtype=np.float64)
    f = frames(x)
    full = 1 + (1000 - size) // shift
    assert f.shape == (full + 1, size)
    # Pre-emphasis runs across frame boundaries: frame 1's first sample uses the sample before it.
    assert f[1, 0] == pytest.approx(x[shift] - 0.97 * x[shift - 1])
    # The tail frame holds the samples after the last full frame's shift, then zeros.
    tail = 1000 - full * shift
    assert np.all(f[-1, tail:] == 0) and np.all(f[-1, :tail] != 0)
    assert frames(np.ones(10)).shape == (1, size)
    assert frames(np.zeros(0)).shape == (0, size)


def test_mel_filterbank_shape_and_band() -> None:
    fb = mel_filterbank()
    assert fb.shape == (20, 257)
    hz = np.arange(257) * 16000 / 512
    used = hz[fb.sum(axis=0) > 0]
    assert used.min() >= 1.0 and used.max() <= 4000.0
    # Unit area: each triangle's weights sum to 2 / (width in Hz) * (width in bins) / 2 * bin_hz = 1 / bin_hz.
    np.testing.assert_allclose(fb.sum(axis=1) * (16000 / 512), 1.0, rtol=0.02)


@pytest.mark.parametrize("alpha", [0.85, 0.92, 1.08, 1.18])
def test_frequency_warp_approximates_a_scaled_spectrum(alpha: float) -> None:
    """The cepstral warp of a formant-like spectrum lands near the cepstra of the spectrum with every
    frequency scaled by alpha: within a third of the distance the warp has to cover."""
    np.testing.assert_allclose(frequency_warp(1.0), np.eye(13), atol=1e-12)
    hz = np.arange(257) * 16000 / 512
    fb, transform = mel_filterbank(), cepstral_transform()

    def cepstra(scale: float) -> np.ndarray:
        f = hz / scale
        power = sum(a * np.exp(-(((f - c) / 150.0) ** 2)) for c, a in [(500, 1.0), (1500, 0.5), (2500, 0.3)])
        return np.log(fb @ (power + 1e-3) + 1e-4) @ transform

    plain, scaled = cepstra(1.0), cepstra(alpha)
    assert np.abs(plain @ frequency_warp(alpha) - scaled).max() < np.abs(plain - scaled).max() / 3


@pytest.mark.parametrize("source,target", [("dct", "legacy"), ("legacy", "dct")])
def test_transform_conversion_is_exact_for_spectra_the_cepstra_hold(source: str, target: str) -> None:
    """Log mel energies as smooth as 13 cepstra of the source transform can hold: their cepstra,
    converted, are the target transform's cepstra of the same energies."""
    made = cepstral_transform(MfccConfig(transform=source))
    wanted = cepstral_transform(MfccConfig(transform=target))
    mel = np.random.default_rng(0).normal(size=(50, 20)) @ made @ np.linalg.pinv(made)
    converted = (mel @ made) @ transform_conversion(source, MfccConfig(transform=target))
    np.testing.assert_allclose(converted, mel @ wanted, atol=1e-10)
    assert np.abs(mel @ made - mel @ wanted).max() > 1.0  # the transforms do differ
    np.testing.assert_allclose(transform_conversion(target, MfccConfig(transform=target)), np.eye(13))
    with pytest.raises(ValueError, match="legacy"):
        transform_conversion("fft")


def test_dct_cepstra_of_speech_like_sound_convert_to_the_recipes() -> None:
    """The front end run with ``-transform dct`` on a voiced, noisy sound, converted: within 0.02 of
    the legacy cepstra (after mean normalisation; the coefficients spread 0.1 to 1.2), which
    unconverted it misses by several units."""
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    f0 = 120 + 30 * np.sin(2 * np.pi * 2 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 30))
    samples = 3000 * voiced * (1 + np.sin(2 * np.pi * 3 * t)) + 300 * rng.normal(size=t.size)
    legacy = mfcc(samples)
    dct = mfcc(samples, MfccConfig(transform="dct"))
    centred = lambda c: c - c.mean(axis=0)  # noqa: E731
    assert np.abs(centred(dct @ transform_conversion("dct")) - centred(legacy)).max() < 0.02
    assert np.abs(centred(dct) - centred(legacy)).max() > 1.0


def test_frequency_mask_flattens_its_band_over_time() -> None:
    """Cepstra of changing log mel energies, masked at filters 6-9: those filters (as recovered from the
    masked cepstra) keep their mean and lose most of their change over time (64-79 % here); filters
    away from the band keep theirs. 13 cepstra of 20 filters hold a smooth spectrum only, so the mask
    is soft: the band keeps some of its change and its neighbours 5 and 10 lose some."""
    np.testing.assert_allclose(frequency_mask(4, 0), np.eye(13), atol=1e-12)
    transform = cepstral_transform()
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(400, 20)) @ transform @ np.linalg.pinv(transform)  # energies the cepstra can hold
    mel -= mel.mean(axis=0)
    masked = (mel @ transform) @ frequency_mask(6, 4) @ np.linalg.pinv(transform)
    change = masked.std(axis=0) / mel.std(axis=0)
    assert change[6:10].max() < 0.4 and np.delete(change, range(5, 11)).min() > 0.95
    np.testing.assert_allclose(masked.mean(axis=0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        frequency_mask(18, 4)

def test_mfcc_of_silence_is_finite() -> None:
    feats = mfcc(np.zeros(4000))
    assert np.isfinite(feats).all()
    # Sphinx's floor: every log mel energy is log(1e-4), and the legacy transform gives c0 = 19.5/20 of it.
    np.testing.assert_allclose(feats[:, 0], 19.5 / 20 * np.log(1e-4), rtol=1e-6)
    # The unitary DCT takes a flat log spectrum to c0 alone (the legacy one, whose first filter weighs
    # half, does not).
    assert np.allclose(mfcc(np.zeros(4000), MfccConfig(transform="dct"))[:, 1:], 0.0, atol=1e-5)


def test_config_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="transform"):
        MfccConfig(transform="htk")
    with pytest.raises(ValueError, match="FFT"):
        MfccConfig(window_s=0.05)


def tone(rate: int, seconds: float, hz: float) -> np.ndarray:
    return 8000 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_reproduces_band_limited_tone(rate: int) -> None:
    out = resample(tone(rate, 0.5, 440.0), rate, 16000)
    expected = tone(16000, 0.5, 440.0)
    assert out.size == expected.size
    inner = slice(400, -400)  # away from the edges
    assert np.abs(out[inner] - expected[inner]).max() < 0.01 * 8000


def test_resampled_features_match_native_rate(tmp_path: Path) -> None:
    x16 = speechlike(16000, 3)
    x48 = resample(x16, 16000, 48000)
    write_wav(tmp_path / "a48.wav", x48, 48000)
    write_wav(tmp_path / "a16.wav", x16, 16000)
    native, converted = wav_features(tmp_path / "a16.wav"), wav_features(tmp_path / "a48.wav")
    assert native.shape == converted.shape
    # Rounding to int16 twice perturbs the quietest frames; compare where there is signal.
    loud = native[:, 0] > native[:, 0].min() + 3
    assert np.abs(native[loud] - converted[loud]).max() < 0.05


def wav_bytes(payload: bytes, tag: int, channels: int, rate: int, bits: int, extensible: bool = False) -> bytes:
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + b"\x00" * 14
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # an odd-sized chunk to skip, with its pad byte
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_read_wav_encodings(tmp_path: Path) -> None:
    x = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    cases = {
        "pcm16": wav_bytes(x.astype("<i2").tobytes(), 1, 1, 16000, 16),
        "pcm32": wav_bytes((x.astype("<i4") << 16).tobytes(), 1, 1, 16000, 32),
        "pcm24": wav_bytes(b"".join((int(v) * 256).to_bytes(3, "little", signed=True) for v in x), 1, 1, 16000, 24),
        "float": wav_bytes((x / 32768.0).astype("<f4").tobytes(), 3, 1, 16000, 32),
        "ext16": wav_bytes(x.astype("<i2").tobytes(), 1, 1, 16000, 16, extensible=True),
        "stereo": wav_bytes(np.repeat(x, 2).astype("<i2").tobytes(), 1, 2, 16000, 16),
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.wav").write_bytes(data)
        samples, rate = read_wav(tmp_path / f"{name}.wav")
        assert rate == 16000
        np.testing.assert_allclose(samples, x, atol=1e-6, err_msg=name)
    eight = np.array([128, 255, 0], dtype=np.uint8)
    (tmp_path / "pcm8.wav").write_bytes(wav_bytes(eight.tobytes(), 1, 1, 8000, 8))
    np.testing.assert_allclose(read_wav(tmp_path / "pcm8.wav")[0], [0, 127 * 256, -128 * 256])


def test_read_wav_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(FormatError, match="RIFF"):
        read_wav(tmp_path / "junk.wav")
    (tmp_path / "alaw.wav").write_bytes(wav_bytes(b"\x00\x01", 6, 1, 8000, 8))
    with pytest.raises(FormatError, match="unsupported"):
        read_wav(tmp_path / "alaw.wav")
    (tmp_path / "nodata.wav").write_bytes(wav_bytes(b"", 1, 1, 8000, 16)[:-8])
    with pytest.raises(FormatError, match="missing"):
        read_wav(tmp_path / "nodata.wav")
