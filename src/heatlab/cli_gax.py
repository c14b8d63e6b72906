"""`heatlab gax RUN`: batched GAX on the first correctly predicted samples, its figure and viewer.

``heatlab.cli`` calls :func:`register` to add the command; the shared CLI pieces come from
:mod:`heatlab.cli_common`, so this module never imports ``heatlab.cli``.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from heatlab.cli_common import (
    backend_line, backend_flags, guarded, progress_bars, say, say_figures, trust_model_code_option, warn_random_weights,
)


def register(app: typer.Typer) -> None:
    """Add ``heatlab gax`` to ``app``."""
    @app.command("gax")
    @guarded
    @backend_flags
    def gax_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder written by `heatlab train`."),
        split: str = typer.Option("test", help="Data split whose samples are optimised."),
        first_n_correct: int = typer.Option(100, "--first-n-correct", help="Optimise the first N correctly predicted samples (shard order)."),
        target_co: float = typer.Option(48.0, "--target-co", help="Stop a sample once its CO score reaches this value (paper: 48)."),
        max_steps: int = typer.Option(500, "--max-steps", help="Stop a sample after this many Adam steps even below the target."),
        branch: str = typer.Option("0", "--branch", help="Branch model to explain: an index such as 0, or 'base'."),
        batch_size: int = typer.Option(32, "--batch-size", help="Samples optimised together."),
        snapshot_every: int = typer.Option(5, "--snapshot-every", help="Store the heatmap every this many steps (and the final one)."),
        device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
        runner=None,  # --backend and the Ray flags (cli_common.backend_flags)
        trust_model_code: bool = trust_model_code_option(),
    ) -> None:
        """Generative AX (papers 000/001): heatmaps h = tanh(w*x + b) that raise the CO score of x + h."""
        from heatlab.run.gax import gax_run
        from heatlab.run.rundir import RunDir

        t0 = time.perf_counter()
        with progress_bars() as progress:
            summary = gax_run(run_dir, split=split, first_n_correct=first_n_correct, target_co=target_co,
                              branch=branch, max_steps=max_steps,
                              batch_size=batch_size, snapshot_every=snapshot_every, device=device,
                              progress=progress, backend=runner, trust_model_code=trust_model_code)
        warn_random_weights(summary.random_weights, f"{summary.branch} of {run_dir}")
        n, k = summary.samples, summary.reached
        median = summary.median_steps_to_target
        say(f"GAX: {k} of {n} samples ({k / n:.0%}) reached CO >= {target_co:g} within {max_steps} steps"
            + (f", median {median:g} steps" if median is not None else "")
            + f" (pixel space, {time.perf_counter() - t0:.0f} s)")
        if (line := backend_line(runner)) is not None:
            say(line)
        if say_figures(run_dir, "gax"):  # drawn by the report's GAX section, which also writes the viewer page
            say(f"viewer: {RunDir(run_dir).gax_page}")
