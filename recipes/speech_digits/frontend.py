"""CMU-Sphinx-compatible MFCC front end, vectorised over frames in numpy.

It reproduces ``sphinx_fe`` (sphinxbase 5prealpha, floating-point build) run with the options in
:meth:`MfccConfig.sphinx_fe_args`: 16 kHz int16 samples, pre-emphasis 0.97 applied across frame boundaries,
25 ms frames every 10 ms, per-frame DC removal, a symmetric Hamming window, a 512-point power spectrum,
20 triangular mel filters from 1 to 4000 Hz whose edges are rounded to DFT points and normalised to unit
area (built in float32 as Sphinx does), ``log(energy + 1e-4)``, and Sphinx's ``legacy`` cosine transform
(or the unitary DCT-II, ``-transform dct``) to 13 cepstra. Like ``sphinx_fe`` it emits one extra
zero-padded frame for the samples left over after the last full frame. No dithering (``-dither no``).

Measured against ``sphinx_fe`` on the same WAV the largest absolute difference over all frames and
coefficients is ~2e-6 (``sphinx_fe`` writes float32); tests/test_speech_frontend.py holds it below 1e-4.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gtn_py.errors import FormatError

# Sphinx adds this floor to the mel energies before the log, so digital silence gives finite cepstra.
_LOG_FLOOR = 1e-4

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class MfccConfig:
    """Front-end parameters; the defaults are the recipe's (and the ``sphinx_fe`` options they mirror)."""

    sample_rate: int = 16000
    window_s: float = 0.025
    frame_rate: int = 100
    nfft: int = 512
    num_filters: int = 20
    lower_hz: float = 1.0
    upper_hz: float = 4000.0
    num_cepstra: int = 13
    preemphasis: float = 0.97
    remove_dc: bool = True
    transform: str = "legacy"  # "legacy" (sphinx_fe's default) or "dct" (unitary DCT-II)

    def __post_init__(self) -> None:
        if self.transform not in ("legacy", "dct"):
            raise ValueError(f"transform must be 'legacy' or 'dct', got {self.transform!r}")
        if self.frame_size > self.nfft:
            raise ValueError(f"window of {self.frame_size} samples does not fit the {self.nfft}-point FFT")
        if not 0 <= self.lower_hz < self.upper_hz <= self.sample_rate / 2:
            raise ValueError(f"filter band {self.lower_hz}..{self.upper_hz} Hz is outside 0..Nyquist")

    @property
    def frame_size(self) -> int:
        # Same rounding as fe_init_auto_r: (int)(x + 0.5).
        return int(self.window_s * self.sample_rate + 0.5)

    @property
    def frame_shift(self) -> int:
        return int(self.sample_rate / self.frame_rate + 0.5)

    def sphinx_fe_args(self) -> list[str]:
        """The ``sphinx_fe`` options whose output this front end reproduces (add ``-i``/``-o``/``-mswav yes``)."""
        return [
            "-samprate", str(self.sample_rate), "-frate", str(self.frame_rate), "-wlen", str(self.window_s),
            "-nfft", str(self.nfft), "-nfilt", str(self.num_filters), "-lowerf", str(self.lower_hz),
            "-upperf", str(self.upper_hz), "-ncep", str(self.num_cepstra), "-alpha", str(self.preemphasis),
            "-remove_dc", "yes" if self.remove_dc else "no", "-transform", self.transform,
            "-dither", "no", "-remove_noise", "no", "-remove_silence", "no",
            "-round_filters", "yes", "-unit_area", "yes", "-lifter", "0",
        ]


DEFAULT_CONFIG = MfccConfig()


def mel_filterbank(config: MfccConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Sphinx's triangular filters as a dense ``[num_filters, nfft // 2 + 1]`` float64 matrix.

    Follows fe_build_melfilters: float32 arithmetic (which decides how edges round to DFT bins), edges
    rounded to DFT points, unit area, the last (Nyquist) bin never used.
    """
    f32 = np.float32

    def mel(hz: float) -> np.float32:
        return f32(2595.0 * np.log10(1.0 + float(f32(hz)) / 700.0))

    mel_min, mel_max = mel(config.lower_hz), mel(config.upper_hz)
    mel_width = f32((mel_max - mel_min) / f32(config.num_filters + 1))
    bin_hz = f32(config.sample_rate / f32(config.nfft))
    # Left, centre and right edge of filter i sit at mel points i, i + 1, i + 2.
    points = (np.arange(config.num_filters)[:, None] + np.arange(3)[None, :]).astype(f32)
    mels = (points * mel_width + mel_min).astype(f32)
    edges = (700.0 * (10.0 ** (mels.astype(np.float64) / 2595.0) - 1.0)).astype(f32)
    edges = (np.floor(edges / bin_hz + f32(0.5)).astype(np.int64)).astype(f32) * bin_hz
    left, centre, right = edges[:, 0:1], edges[:, 1:2], edges[:, 2:3]
    hz = np.arange(config.nfft // 2 + 1).astype(f32) * bin_hz
    area = f32(2) / (right - left)
    rising = (hz - left) / (centre - left) * area
    falling = (right - hz) / (right - centre) * area
    inside = (hz >= left) & (hz <= right) & (np.arange(hz.size) < config.nfft // 2)
    return np.where(inside, np.minimum(rising, falling), f32(0)).astype(np.float64)


def cepstral_transform(config: MfccConfig = DEFAULT_CONFIG) -> np.ndarray:
    """``[num_filters, num_cepstra]`` matrix taking log mel energies to cepstra (Sphinx legacy or DCT-II)."""
    n = config.num_filters
    k = np.arange(config.num_cepstra)[None, :]
    j = np.arange(n)[:, None]
    cosine = np.cos(np.pi / n * k * (j + 0.5))
    if config.transform == "legacy":
        # fe_spec2cep: the first filter counts half, everything is divided by the number of filters.
        beta = np.ones((n, 1))
        beta[0] = 0.5
        return cosine * beta / n
    scale = np.full((1, config.num_cepstra), np.sqrt(2.0 / n))
    scale[0, 0] = np.sqrt(1.0 / n)
    return cosine * scale


def frequency_warp(alpha: float | np.ndarray, config: MfccConfig = DEFAULT_CONFIG) -> np.ndarray:
    """``[num_cepstra, num_cepstra]`` matrix ``A`` such that ``cepstra @ A`` are the cepstra of the same
    sound from another vocal tract, whose spectrum is the original one with every frequency ``f``
    scaled by ``alpha`` (one factor, as in vocal tract length perturbation, or one per mel filter,
    scaling each filter's centre frequency; formant-shifted voices scale formants unequally), for
    augmentation of cepstral features.

    The log mel energies are recovered from the cepstra by least squares (the cepstral transform
    has full column rank, so ``alpha = 1`` gives the identity), each filter then reads the energy
    the original spectrum had at its centre frequency divided by its factor (linear interpolation
    between filters, held constant past the band's ends; the positions are kept monotone), and the
    cepstral transform is applied again. Linear, so it commutes with cepstral mean normalisation."""
    n = config.num_filters
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)  # noqa: E731
    lo, hi = to_mel(config.lower_hz), to_mel(config.upper_hz)
    centres = 700.0 * (10.0 ** ((lo + (hi - lo) * np.arange(1, n + 1) / (n + 1)) / 2595.0) - 1.0)
    factors = np.broadcast_to(np.asarray(alpha, np.float64), (n,))
    position = np.maximum.accumulate((to_mel(centres / factors) - lo) / (hi - lo) * (n + 1) - 1)
    position = np.clip(position, 0, n - 1)
    below = np.minimum(np.floor(position).astype(np.int64), n - 2)
    frac = position - below
    resample = np.zeros((n, n))                       # [old filter, new filter]
    resample[below, np.arange(n)] = 1 - frac
    resample[below + 1, np.arange(n)] += frac
    transform = cepstral_transform(config)
    return np.linalg.pinv(transform) @ resample @ transform


def transform_conversion(source: str, config: MfccConfig = DEFAULT_CONFIG) -> np.ndarray:
    """``[num_cepstra, num_cepstra]`` matrix ``A`` such that ``cepstra @ A`` are the cepstra
    ``config`` makes of a sound whose ``cepstra`` were made by the ``source`` transform (``"legacy"``
    or ``"dct"``, ``sphinx_fe``'s ``-transform``; every other option as ``config``'s): the log mel
    energies are recovered by least squares (as in :func:`frequency_warp`) and transformed again.
    Exact for spectra as smooth as the cepstra kept; the identity when the transforms agree.

    Sphinx feature sets are made with either (pocketsphinx's own models use ``dct``). The two differ
    by more than a scale per coefficient, since ``legacy`` weighs the first filter by half in every
    cepstrum; read unconverted, ``dct`` features cost the recipe's hybrid 0.8 points of WER."""
    if source not in ("legacy", "dct"):
        raise ValueError(f"transform must be 'legacy' or 'dct', got {source!r}")
    if source == config.transform:
        return np.eye(config.num_cepstra)
    made = cepstral_transform(replace(config, transform=source))
    return np.linalg.pinv(made) @ cepstral_transform(config)


def frequency_mask(start: int, width: int, config: MfccConfig = DEFAULT_CONFIG) -> np.ndarray:
    """``[num_cepstra, num_cepstra]`` matrix ``A`` such that ``cepstra @ A`` hide mel filters
    ``start .. start + width - 1``: their log energies are recovered from the cepstra by least squares
    (as in :func:`frequency_warp`) and set to zero, which for mean-normalised features is each filter's
    utterance mean, so the band keeps its average level and loses its changes over time (SpecAugment's
    frequency mask, for cepstra). 13 cepstra hold a smooth spectrum only, so the mask is soft: a band
    of 4 filters keeps a fifth to a third of its changes. ``width = 0`` gives the identity."""
    n = config.num_filters
    if not (0 <= start and width >= 0 and start + width <= n):
        raise ValueError(f"mask of filters {start}..{start + width - 1} lies outside 0..{n - 1}")
    keep = np.ones(n)
    keep[start:start + width] = 0.0
    transform = cepstral_transform(config)
    return np.linalg.pinv(transform) @ (keep[:, None] * transform)


def frames(samples: np.ndarray, config: MfccConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Pre-emphasised analysis frames ``[T, frame_size]`` with sphinx_fe's framing.

    Full frames start every ``frame_shift`` samples. At the end of the utterance the samples from the start
    of the next frame on (always fewer than a frame, never none) make one last, zero-padded frame, as
    fe_end_utt does; a signal shorter than one frame gives that padded frame alone.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples [N], got shape {x.shape}")
    size, shift = config.frame_size, config.frame_shift
    if x.size == 0:
        return np.zeros((0, size))
    emphasised = x.copy()
    emphasised[1:] -= config.preemphasis * x[:-1]
    full = 0 if x.size < size else 1 + (x.size - size) // shift
    padded = np.zeros(full * shift + size)
    padded[: x.size] = emphasised
    index = np.arange(full + 1)[:, None] * shift + np.arange(size)[None, :]
    return padded[index]


def mfcc(samples: np.ndarray, config: MfccConfig = DEFAULT_CONFIG) -> np.ndarray:
    """MFCCs ``[T, num_cepstra]`` (float32) of mono samples at ``config.sample_rate`` in int16 scale.

    Samples are taken as int16 values (as Sphinx reads them); floats in that scale are accepted unrounded.
    No cepstral mean normalisation here: that happens at load time (see data.py).
    """
    x = frames(samples, config)
    if config.remove_dc:
        x = x - x.mean(axis=1, keepdims=True)
    n = config.frame_size
    # Sphinx builds the first half of a symmetric Hamming window and mirrors it; for odd sizes the
    # middle sample stays unwindowed (weight 1).
    half = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n // 2) / (n - 1.0))
    window = np.ones(n)
    window[: n // 2] = half
    window[n - n // 2:] = half[::-1]
    power = np.abs(np.fft.rfft(x * window, n=config.nfft, axis=1)) ** 2
    energies = power @ mel_filterbank(config).T
    return (np.log(energies + _LOG_FLOOR) @ cepstral_transform(config)).astype(np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono samples in int16 scale (float64) and the sample rate of a RIFF WAV file.

    Reads PCM of 8, 16, 24 or 32 bits and IEEE float (32/64 bit), plain or WAVE_FORMAT_EXTENSIBLE;
    channels are averaged. Raises gtn_py.errors.FormatError for anything else.
    """
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise FormatError("not a RIFF/WAVE file", path=str(path))
    fmt: tuple[int, int, int, int] | None = None
    payload: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, chunk_len = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + chunk_len]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise FormatError("fmt chunk shorter than 16 bytes", path=str(path))
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            payload = body
        pos += 8 + chunk_len + (chunk_len & 1)  # chunks are padded to even length
    if fmt is None or payload is None:
        raise FormatError("missing fmt or data chunk", path=str(path))
    tag, channels, rate, bits = fmt
    width = bits // 8
    usable = len(payload) - len(payload) % (width * max(channels, 1))
    raw = payload[:usable]
    if tag == _WAVE_FORMAT_PCM and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) * 256.0
    elif tag == _WAVE_FORMAT_PCM and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float64)
    elif tag == _WAVE_FORMAT_PCM and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8).astype(np.float64) / 256.0
    elif tag == _WAVE_FORMAT_PCM and bits == 32:
        x = np.frombuffer(raw, "<i4").astype(np.float64) / 65536.0
    elif tag == _WAVE_FORMAT_IEEE_FLOAT and bits in (32, 64):
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float64) * 32768.0
    else:
        raise FormatError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)", path=str(path))
    if channels < 1:
        raise FormatError("WAV declares no channels", path=str(path))
    return x.reshape(-1, channels).mean(axis=1), int(rate)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono int16 PCM (samples in int16 scale are rounded and clipped)."""
    pcm = np.clip(np.rint(np.asarray(samples, dtype=np.float64)), -32768, 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, _WAVE_FORMAT_PCM, 1, sample_rate, 2 * sample_rate, 2, 16)
    Path(path).write_bytes(header + b"data" + struct.pack("<I", len(pcm)) + pcm)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling by FFT (truncating or zero-padding the spectrum), for mono signals.

    The signal is mirrored before the transform so that the FFT's periodic extension does not join its two
    ends (which would ring at the edges of an utterance).
    """
    x = np.asarray(samples, dtype=np.float64)
    if from_rate == to_rate or x.size == 0:
        return x.copy()
    out_len = int(round(x.size * to_rate / from_rate))
    mirrored = np.concatenate([x, x[::-1]])
    n_in, n_out = mirrored.size, 2 * out_len
    spectrum = np.fft.rfft(mirrored)
    keep = min(spectrum.size, n_out // 2 + 1)
    resized = np.zeros(n_out // 2 + 1, dtype=complex)
    resized[:keep] = spectrum[:keep]
    if n_out < n_in and n_out % 2 == 0:
        # The new Nyquist bin must be real: fold the kept bin's conjugate half in, as scipy.signal.resample does.
        resized[-1] = resized[-1].real
    return np.fft.irfft(resized, n=n_out)[:out_len] * (n_out / n_in)


def wav_features(path: str | Path, config: MfccConfig = DEFAULT_CONFIG) -> np.ndarray:
    """MFCCs of a WAV file at any sample rate (resampled to ``config.sample_rate``), without CMN."""
    samples, rate = read_wav(path)
    return mfcc(resample(samples, rate, config.sample_rate), config)
