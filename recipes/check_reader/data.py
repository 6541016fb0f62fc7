"""Digit sets and the digit-string generator.

A *digit set* is an .npz with ``images`` (uint8 ``[N, 28, 28]``, white ink on black) and
``labels`` (``[N]``, 0-9), like the embedded default ``data/mnist_digits_8k.npz`` (MNIST,
CC BY-SA 3.0, see data/README.md). It is split into training and held-out digits *by
digit*, so no held-out string ever shows a digit seen in training.

A *string set* is an .npz with ``images`` (uint8 ``[N, 28, W]``, zero-padded on the right),
``widths`` (``[N]``) and ``labels`` (``[N]`` strings of digits): what ``evaluate`` and
``decode`` read and what :func:`make_strings` writes.
"""

from __future__ import annotations

import functools
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from ..common import InputError

HEIGHT = 28
DEFAULT_DIGITS = Path(__file__).parent / "data" / "mnist_digits_8k.npz"


@dataclass
class DigitSet:
    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_digits(path: str | Path | None = None) -> DigitSet:
    """Load a digit set (default: the embedded MNIST sample) and check its form."""
    path = Path(path) if path is not None else DEFAULT_DIGITS
    with _open_npz(path, "a digit set (images uint8 [N, 28, 28], labels)") as data:
        images, labels = _member(data, path, "images"), _member(data, path, "labels")
    if images.ndim != 3 or images.shape[1:] != (HEIGHT, HEIGHT) or images.dtype != np.uint8:
        raise InputError(f"{path}: images must be uint8 [N, 28, 28], got {images.dtype} {images.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.size != images.shape[0] or labels.size == 0:
        raise InputError(f"{path}: labels must be [N] integer digits 0-9 matching the images, got {labels.dtype} "
                         f"{labels.shape} for {images.shape[0]} images")
    labels = labels.astype(np.int64).reshape(-1)
    if labels.min() < 0 or labels.max() > 9:
        raise InputError(f"{path}: labels must be digits 0-9, got {labels.min()}..{labels.max()}")
    return DigitSet(images, labels)


def split_digits(digits: DigitSet, held_out: float = 0.125, seed: int = 0) -> tuple[DigitSet, DigitSet]:
    """Split by digit (never by string) into (training digits, held-out digits)."""
    order = np.random.default_rng(seed).permutation(len(digits))
    n_held = int(round(len(digits) * held_out))
    held, train = order[:n_held], order[n_held:]
    return (DigitSet(digits.images[train], digits.labels[train]),
            DigitSet(digits.images[held], digits.labels[held]))


@dataclass
class GeneratorConfig:
    min_digits: int = 1
    max_digits: int = 8
    min_gap: int = -4          # pixels between inks; negative: overlapping digits
    max_gap: int = 6
    touch_prob: float = 0.3    # probability that a gap is drawn from [min_gap, 0] (touching/overlap)
    min_scale: float = 0.8
    max_scale: float = 1.15
    jitter: int = 2            # vertical jitter (pixels)
    margin: int = 2            # blank columns left and right
    distort: float = 0.0       # strength of the random deformation of each digit (0: none; see distort_digit)


@dataclass
class StringSample:
    image: np.ndarray          # uint8 [28, W]
    label: str
    boundaries: np.ndarray     # [len(label) + 1] true cut x positions (first ink - ..., last ink end)


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float image (numpy only)."""
    h, w = img.shape
    ys = (np.arange(height) + 0.5) * h / height - 0.5
    xs = (np.arange(width) + 0.5) * w / width - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 1); y1 = np.clip(y0 + 1, 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 1); x1 = np.clip(x0 + 1, 0, w - 1)
    fy = np.clip(ys - y0, 0, 1)[:, None]; fx = np.clip(xs - x0, 0, 1)[None, :]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _ink_box(img: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(img.max(axis=1) > 0)
    cols = np.flatnonzero(img.max(axis=0) > 0)
    if rows.size == 0:
        return 0, 1, 0, 1
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``image`` sampled at real positions ``(y, x)`` (bilinear; zero outside)."""
    h, w = image.shape
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    out = np.zeros(y.shape, np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            out += wy * wx * np.where(inside, image[yy.clip(0, h - 1), xx.clip(0, w - 1)], 0.0)
    return out


@functools.lru_cache(maxsize=8)
def _upsampling(size: int) -> np.ndarray:
    """``[size, 4]``: ``_upsampling(h) @ grid @ _upsampling(w).T == _resize(grid, h, w)`` for a 4x4 grid."""
    return _resize(np.eye(4), size, 4)


def deformation(rng: np.random.Generator, height: int, width: int,
                strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A random smooth deformation (after Simard et al. 2003) as the positions ``(y, x)``
    ``[height, width]`` each output pixel samples: an affine map about the centre (rotation up
    to 10 degrees, shear up to 0.25, x and y scales within +-10%, each times ``strength``) plus
    an elastic displacement field (random offsets of 1.2 * ``strength`` pixels standard
    deviation on a 4x4 grid, bilinearly interpolated)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dy, dx = ys - (height - 1) / 2, xs - (width - 1) / 2
    angle = np.radians(10.0) * strength * rng.uniform(-1, 1)
    shear = 0.25 * strength * rng.uniform(-1, 1)
    scale_x, scale_y = np.exp(0.1 * strength * rng.uniform(-1, 1, 2))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale_x, scale_y])  # (x, y) -> (x, y)
    inverse = np.linalg.inv(forward)
    rows, cols = _upsampling(height), _upsampling(width)
    field = [rows @ rng.normal(0.0, 1.2 * strength, (4, 4)) @ cols.T for _ in range(2)]
    src_x = inverse[0, 0] * dx + inverse[0, 1] * dy + (width - 1) / 2 + field[0]
    src_y = inverse[1, 0] * dx + inverse[1, 1] * dy + (height - 1) / 2 + field[1]
    return src_y, src_x


def distort_digit(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A digit image under a random :func:`deformation` (training augmentation), sampled
    bilinearly and rounded (uint8, the shape of ``image``)."""
    height, width = image.shape
    src_y, src_x = deformation(rng, height, width, strength)
    return np.rint(_bilinear(image.astype(np.float32), src_y, src_x)).clip(0, 255).astype(np.uint8)


def render_string(digits: DigitSet, indices: np.ndarray, rng: np.random.Generator,
                  config: GeneratorConfig) -> StringSample:
    """Write the digits ``indices`` of ``digits`` side by side as one 28-pixel-high image."""
    glyphs, tops = [], []
    for i in indices:
        image = digits.images[i] if not config.distort else distort_digit(digits.images[i], rng, config.distort)
        r0, r1, c0, c1 = _ink_box(image)
        ink = image[r0:r1, c0:c1].astype(np.float32)
        scale = rng.uniform(config.min_scale, config.max_scale)
        h = int(np.clip(round(ink.shape[0] * scale), 4, HEIGHT))
        w = int(max(1, round(ink.shape[1] * scale)))
        glyph = _resize(ink, h, w)
        centre_top = (HEIGHT - h) // 2
        top = int(np.clip(centre_top + rng.integers(-config.jitter, config.jitter + 1), 0, HEIGHT - h))
        glyphs.append(glyph)
        tops.append(top)
    lefts: list[int] = []
    x = config.margin
    for k, glyph in enumerate(glyphs):
        if k:
            if rng.random() < config.touch_prob:
                gap = int(rng.integers(config.min_gap, 1))
            else:
                gap = int(rng.integers(0, config.max_gap + 1))
            # Never let a digit slide over more than a third of its neighbour.
            gap = max(gap, -min(glyph.shape[1], glyphs[k - 1].shape[1]) // 3)
            x = lefts[-1] + glyphs[k - 1].shape[1] + gap
        lefts.append(x)
    width = max(left + g.shape[1] for left, g in zip(lefts, glyphs)) + config.margin
    canvas = np.zeros((HEIGHT, width), np.float32)
    for left, top, glyph in zip(lefts, tops, glyphs):
        region = canvas[top:top + glyph.shape[0], left:left + glyph.shape[1]]
        np.maximum(region, glyph, out=region)
    rights = [left + g.shape[1] for left, g in zip(lefts, glyphs)]
    inner = [(rights[k] + lefts[k + 1]) // 2 for k in range(len(glyphs) - 1)]
    boundaries = np.array([lefts[0]] + inner + [rights[-1]], np.int64)
    label = "".join(str(int(digits.labels[i])) for i in indices)
    return StringSample(np.clip(canvas, 0, 255).astype(np.uint8), label, boundaries)


def sample_strings(digits: DigitSet, count: int, rng: np.random.Generator,
                   config: GeneratorConfig | None = None) -> list[StringSample]:
    """``count`` random strings of ``config.min_digits .. max_digits`` digits drawn from ``digits``."""
    config = config or GeneratorConfig()
    out = []
    for _ in range(count):
        n = int(rng.integers(config.min_digits, config.max_digits + 1))
        out.append(render_string(digits, rng.integers(0, len(digits), size=n), rng, config))
    return out


# ---------------------------------------------------------------------- string sets (.npz)
@dataclass
class StringSet:
    images: np.ndarray   # uint8 [N, 28, Wmax], zero-padded on the right
    widths: np.ndarray   # int64 [N]
    labels: list[str]    # digit strings ('' when unknown)

    def __len__(self) -> int:
        return int(self.widths.shape[0])

    def image(self, i: int) -> np.ndarray:
        return self.images[i, :, : int(self.widths[i])]


def pack(images: list[np.ndarray], labels: list[str]) -> StringSet:
    """Pad 28-high images of varying width into one array."""
    widths = np.array([im.shape[1] for im in images], np.int64)
    out = np.zeros((len(images), HEIGHT, int(widths.max()) if len(images) else 1), np.uint8)
    for i, im in enumerate(images):
        out[i, :, : im.shape[1]] = im
    return StringSet(out, widths, list(labels))


def make_strings(digits: DigitSet, count: int, seed: int, config: GeneratorConfig | None = None) -> StringSet:
    samples = sample_strings(digits, count, np.random.default_rng(seed), config)
    return pack([s.image for s in samples], [s.label for s in samples])


def save_strings(strings: StringSet, path: str | Path) -> None:
    np.savez_compressed(path, images=strings.images, widths=strings.widths,
                        labels=np.array(strings.labels, dtype=str))


def _open_npz(path: Path, what: str) -> np.lib.npyio.NpzFile:
    """``np.load`` of an .npz that must be ``what`` (pickled members refused), with an
    :class:`InputError` naming the file for a missing or unreadable one."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected {what})" if not path.exists() else f"{path}: not a file")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not an .npz file ({error})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single array, not an .npz archive of {what}")
    return data


def _member(data: np.lib.npyio.NpzFile, path: Path, name: str) -> np.ndarray:
    if name not in data.files:
        raise InputError(f"{path}: no '{name}' array (it has: {', '.join(data.files) or 'none'})")
    try:
        return data[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: its '{name}' array cannot be read ({error})") from None


def load_strings(path: str | Path) -> StringSet:
    """Read a string set; ``labels`` is optional (decode needs none). Raises :class:`InputError`
    for a missing file or one that is not a string set (``prepare`` writes them)."""
    path = Path(path)
    what = "a string set .npz: images uint8 [N, 28, W], widths, labels; `prepare` writes one"
    with _open_npz(path, what) as data:
        images = _member(data, path, "images")
        if images.ndim != 3 or images.shape[1] != HEIGHT or images.shape[0] == 0 or images.shape[2] == 0:
            raise InputError(f"{path}: images must be uint8 [N, 28, W] with N, W > 0, got {images.shape}")
        widths = (_member(data, path, "widths") if "widths" in data.files
                  else np.full(len(images), images.shape[2]))
        labels_array = _member(data, path, "labels") if "labels" in data.files else np.full(len(images), "")
    if images.dtype != np.uint8:
        raise InputError(f"{path}: images must be uint8, got {images.dtype}")
    if not np.issubdtype(widths.dtype, np.integer) or widths.shape != (len(images),):
        raise InputError(f"{path}: widths must be [N] integers, one per image, got {widths.dtype} {widths.shape}")
    widths = widths.astype(np.int64)
    labels = [str(s) for s in labels_array.reshape(-1)]
    if len(labels) != len(images):
        raise InputError(f"{path}: images, widths and labels must have one entry per string")
    if widths.min() < 1 or widths.max() > images.shape[2]:
        raise InputError(f"{path}: widths must be in 1..{images.shape[2]}")
    for i, s in enumerate(labels):
        if not all(ch in "0123456789" for ch in s):
            raise InputError(f"{path}: label {i} ({s[:40]!r}) is not a string of digits")
    return StringSet(images, widths, labels)


# ---------------------------------------------------------------------- PNG (no dependency)
def write_png(path_or_none: str | Path | None, image: np.ndarray) -> bytes:
    """Encode a uint8 image as PNG (and write it if a path is given): grey [H, W], or [H, W, C]
    with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[image.shape[2]] if image.ndim == 3 else 0
    h, w = image.shape[:2]
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    if path_or_none is not None:
        Path(path_or_none).write_bytes(data)
    return data


@numba.njit(cache=True)
def _unfilter(raw: np.ndarray, bpp: int) -> np.ndarray:  # pragma: no cover - jitted
    """Undo PNG's per-row filters (none, sub, up, average, Paeth) on ``[H, 1 + row bytes]``."""
    h, n = raw.shape[0], raw.shape[1] - 1
    out = np.zeros((h, n), np.int64)
    for y in range(h):
        kind = raw[y, 0]
        for x in range(n):
            a = out[y, x - bpp] if x >= bpp else 0
            b = out[y - 1, x] if y > 0 else 0
            c = out[y - 1, x - bpp] if (x >= bpp and y > 0) else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            out[y, x] = (raw[y, x + 1] + pred) % 256
    return out


MAX_PNG_PIXELS = 1 << 26  # 67 megapixels: a page scanned at 600 dpi is 35; more is refused before decompressing


_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # colour type: depths
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def read_png_rgb(path: str | Path) -> np.ndarray:
    """Decode a non-interlaced PNG to uint8 ``[H, W, C]``: C = 1 (grey), 2 (grey + alpha), 3 (RGB)
    or 4 (RGBA) as stored; a palette image becomes RGB, or RGBA when it has transparency; 16-bit
    samples keep their high byte, 1, 2 and 4-bit ones are scaled to 0-255. Raises
    :class:`InputError` for a missing file, a file that is not a PNG, an interlaced or corrupt one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file" if not path.exists() else f"{path}: not a file")
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise InputError(f"{path}: not a PNG file")
    try:
        pos, idat, header, palette, transparency = 8, b"", None, b"", b""
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos:pos + 4])
            kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                idat += body
            elif kind == b"PLTE":
                palette = body
            elif kind == b"tRNS":
                transparency = body
            pos += 12 + length
        if header is None:
            raise InputError(f"{path}: PNG has no IHDR")
        w, h, depth, colour, _, _, interlace = header
        if depth not in _PNG_DEPTHS.get(colour, ()) or interlace:
            raise InputError(f"{path}: a {depth}-bit PNG of colour type {colour}"
                             f"{', interlaced' if interlace else ''} is not supported (save it without interlacing)")
        if not 0 < w * h <= MAX_PNG_PIXELS:
            raise InputError(f"{path}: {w}x{h} pixels; at most {MAX_PNG_PIXELS} are read")
        channels = _PNG_CHANNELS[colour]
        row_bytes = (w * channels * depth + 7) // 8
        expected = h * (1 + row_bytes)
        raw = zlib.decompressobj().decompress(idat, expected)
        if len(raw) != expected:
            raise InputError(f"{path}: truncated PNG ({len(raw)} of {expected} bytes of pixels)")
        rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + row_bytes)
    except (struct.error, zlib.error) as error:
        raise InputError(f"{path}: corrupt PNG ({error})") from None
    unfiltered = _unfilter(rows.astype(np.int64), max(1, channels * depth // 8)).astype(np.uint8)
    if depth == 16:
        samples = unfiltered.reshape(h, w * channels, 2)[..., 0]
    elif depth < 8:
        shifts = np.arange(8 - depth, -1, -depth, dtype=np.uint8)
        samples = ((unfiltered[..., None] >> shifts) & (2**depth - 1)).reshape(h, -1)[:, :w]
        if colour == 0:
            samples = samples * (255 // (2**depth - 1))
    else:
        samples = unfiltered
    pixels = samples.reshape(h, w, channels).astype(np.uint8)
    if colour != 3:
        return pixels
    table = np.frombuffer(palette, np.uint8)
    if table.size == 0 or table.size % 3:
        raise InputError(f"{path}: palette PNG without a valid PLTE chunk")
    table = table.reshape(-1, 3)
    if transparency:
        alpha = np.full((len(table), 1), 255, np.uint8)
        given = np.frombuffer(transparency, np.uint8)[:len(table)]
        alpha[:len(given), 0] = given
        table = np.concatenate([table, alpha], axis=1)
    index = pixels[..., 0]
    if int(index.max()) >= len(table):
        raise InputError(f"{path}: a pixel names palette entry {int(index.max())} of {len(table)}")
    return table[index]


def read_png(path: str | Path) -> np.ndarray:
    """Decode a non-interlaced PNG to a grayscale uint8 [H, W] array (colour is averaged;
    transparent pixels are paper: alpha is composited onto white)."""
    pixels = read_png_rgb(path).astype(np.float64)
    if pixels.shape[2] in (2, 4):
        alpha = pixels[..., -1:] / 255.0
        pixels = pixels[..., :-1] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(pixels.mean(axis=2).round(), 0, 255).astype(np.uint8)


INK_CONTRAST = 48       # grey levels between paper and the strongest ink below which a page is blank
INK_HEIGHTS = (21, 26)  # rows of ink of 90 % of the generated strings (5th and 95th percentiles) ...
INK_HEIGHT = 23         # ... and of the median one


def page_to_string(page: np.ndarray) -> np.ndarray | None:
    """A grey image of one written string (uint8 ``[H, W]``, dark ink on light paper or light on
    dark, any size, with any margins) as the readers read strings: white ink on black, cropped to
    the ink, scaled so the ink is :data:`INK_HEIGHT` rows high (unless its height is already
    among :data:`INK_HEIGHTS`), centred in 28 rows with 2 blank columns each side, as
    :func:`make_strings` writes them. The paper's level (the median pixel)
    becomes 0 and the strongest ink 255. ``None`` for a page without ink (its strongest
    pixel within :data:`INK_CONTRAST` grey levels of the paper)."""
    img = page.astype(np.float32)
    paper = float(np.median(img))
    if paper > 127:  # dark ink on light paper
        img, paper = 255.0 - img, 255.0 - paper
    ink = np.clip(img - paper, 0.0, None)
    peak = float(ink.max()) if ink.size else 0.0
    if peak < INK_CONTRAST:
        return None
    ink *= 255.0 / peak
    # The ink's box: pixels of a quarter of the strongest ink or more (the paper's noise stays out).
    rows = np.flatnonzero(ink.max(axis=1) >= 64)
    cols = np.flatnonzero(ink.max(axis=0) >= 64)
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height = ink.shape[0]
    if not INK_HEIGHTS[0] <= height <= INK_HEIGHTS[1]:
        scale = INK_HEIGHT / height
        width = max(1, round(ink.shape[1] * scale))
        factor = int(1 / scale)
        if factor >= 2:
            # Average blocks of pixels before a large reduction, so that thin strokes are not skipped.
            h, w = height // factor * factor, ink.shape[1] // factor * factor
            ink = ink[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
        ink = _resize(ink, INK_HEIGHT, width)
        ink *= 255.0 / max(1.0, float(ink.max()))
        height = INK_HEIGHT
    top = (HEIGHT - height) // 2
    out = np.zeros((HEIGHT, ink.shape[1] + 4), np.float32)
    out[top:top + height, 2:2 + ink.shape[1]] = ink
    return np.clip(out.round(), 0, 255).astype(np.uint8)
