"""Line charts as plain SVG text (no plotting dependency)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: str = ""
    markers: bool = False


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


def line_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str, *, width: int = 460,
               height: int = 280, background: str = "#ffffff", ylog: bool = False,
               ylim: tuple[float, float] | None = None) -> str:
    """An SVG line chart; ``background`` fills the plot area (tests find figures by it)."""
    left, right, top, bottom = 56, 12, 28, 42
    pw, ph = width - left - right, height - top - bottom
    pts = [(x, y) for s in series for x, y in zip(s.xs, s.ys) if math.isfinite(y) and (y > 0 or not ylog)]
    tr = (lambda v: math.log10(v)) if ylog else (lambda v: v)
    if pts:
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y0, y1 = (min(tr(p[1]) for p in pts), max(tr(p[1]) for p in pts)) if ylim is None else ylim
    else:
        x0, x1, y0, y1 = 0.0, 1.0, 0.0, 1.0
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    sx = lambda v: left + (v - x0) / (x1 - x0) * pw
    sy = lambda v: top + ph - (tr(v) - y0) / (y1 - y0) * ph
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="{background}" stroke="#888"/>',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
           f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{html.escape(xlabel)}</text>',
           f'<text x="14" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {top + ph / 2})">'
           f'{html.escape(ylabel)}</text>']
    for t in _ticks(x0, x1):
        out.append(f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="#444"/>'
                   f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in _ticks(y0, y1):
        value = 10 ** t if ylog else t
        y = top + ph - (t - y0) / (y1 - y0) * ph
        out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value)}</text>')
    for i, s in enumerate(series):
        colour = s.colour or COLOURS[i % len(COLOURS)]
        xy = [(sx(x), sy(y)) for x, y in zip(s.xs, s.ys) if math.isfinite(y) and (y > 0 or not ylog)]
        if not xy:
            continue
        path = " ".join(f"{x:.1f},{min(max(y, top), top + ph):.1f}" for x, y in xy)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if s.markers or len(xy) == 1:
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in xy]
        out.append(f'<rect x="{left + 8}" y="{top + 8 + 15 * i}" width="10" height="3" fill="{colour}"/>'
                   f'<text x="{left + 22}" y="{top + 13 + 15 * i}">{html.escape(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
