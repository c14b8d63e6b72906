"""Small helpers shared by the benchmark scripts (run them from the repo: `python benchmarks/bench_x.py`)."""

from __future__ import annotations

import time
from typing import Callable


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call of ``fn`` on ``clock`` (default wall-clock; ``time.process_time``: this
    process's CPU time, which other processes' load on a shared machine barely changes)."""
    start = clock()
    fn()
    return clock() - start
