"""Sphinx ``.mfc`` feature files: a 4-byte integer count of the floats that follow, then float32 values.

Files come in either byte order (``sphinx_fe`` writes the machine's order, and many distributed
feature sets were made on big-endian machines), so the order is detected from the header: the count must
equal the number of floats actually in the file, read as little- or as big-endian.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from gtn_py.errors import FormatError

NUM_CEPSTRA = 13
_ORDERS = {"little": "<", "big": ">"}


def mfc_byteorder(data: bytes, path: str | None = None) -> Literal["little", "big"]:
    """``"little"`` or ``"big"``: the order in which the header counts the floats of ``data``.

    Raises FormatError when the file is too short for a header, its body is not whole float32 values,
    or the header matches the body in neither order.
    """
    if len(data) < 4:
        raise FormatError(f"{len(data)} bytes: too short for the 4-byte header", path=path)
    body = len(data) - 4
    if body % 4:
        raise FormatError(f"body of {body} bytes is not a whole number of float32 values", path=path)
    floats = body // 4
    little = int.from_bytes(data[:4], "little", signed=True)
    big = int.from_bytes(data[:4], "big", signed=True)
    if little == floats:
        return "little"
    if big == floats:
        return "big"
    raise FormatError(
        f"header counts {little} floats (little-endian) or {big} (big-endian) but the file holds {floats}",
        path=path,
    )


def read_mfc(path: str | Path, num_cepstra: int = NUM_CEPSTRA) -> np.ndarray:
    """Features ``[T, num_cepstra]`` (float32, native byte order) of a Sphinx ``.mfc`` file."""
    return parse_mfc(Path(path).read_bytes(), num_cepstra, str(path))


def parse_mfc(data: bytes, num_cepstra: int = NUM_CEPSTRA, path: str | None = None) -> np.ndarray:
    """:func:`read_mfc` of the file's contents (``path`` names it in errors)."""
    order = mfc_byteorder(data, path)
    values = np.frombuffer(data, dtype=_ORDERS[order] + "f4", offset=4)
    if values.size % num_cepstra:
        raise FormatError(f"{values.size} floats are not whole frames of {num_cepstra}", path=path)
    if not np.isfinite(values).all():
        raise FormatError("features contain NaN or infinity", path=path)
    return values.astype(np.float32).reshape(-1, num_cepstra)


def write_mfc(path: str | Path, features: np.ndarray, byteorder: Literal["little", "big"] = "little") -> None:
    """Write features ``[T, C]`` as a Sphinx ``.mfc`` file in the given byte order."""
    if byteorder not in _ORDERS:
        raise ValueError(f"byteorder must be 'little' or 'big', got {byteorder!r}")
    feats = np.asarray(features)
    if feats.ndim != 2:
        raise ValueError(f"features must be [frames, coefficients], got shape {feats.shape}")
    values = feats.astype(_ORDERS[byteorder] + "f4").reshape(-1)
    Path(path).write_bytes(int(values.size).to_bytes(4, byteorder, signed=True) + values.tobytes())
