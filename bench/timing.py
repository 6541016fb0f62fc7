"""The one timing rule of the benchmarks: a warm-up call (numba compilation, caches), then
the median wall time of ``repeats`` calls (timings on shared machines are noisy; medians
and ratios are what BENCHMARKS.md reports)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)
