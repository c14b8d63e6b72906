"""Small helpers shared by the benchmark scripts (run them from the repo: `python benchmarks/bench_x.py`)."""

from __future__ import annotations

import time
from typing import Callable


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
