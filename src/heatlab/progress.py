"""One progress protocol for every long stage, so library code never imports rich.

A stage accepts ``progress: Progress | None`` and calls ``progress(task, done, total)`` whenever
work advances; ``task`` is a short label ("train/base", "shards/test"). The CLI passes a rich
adapter (:func:`heatlab.cli` builds it); library users may pass any callable or ``None``.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, task: str, done: int, total: int) -> None: ...


def report(progress: Progress | None, task: str, done: int, total: int) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(task, done, total)
