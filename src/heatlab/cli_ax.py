"""``heatlab ax RUN``: Augmentative eXplanation (CO scores and their gap) on a trained run.

``heatlab.cli`` calls :func:`register` to add the command to its app; the shared CLI pieces come
from :mod:`heatlab.cli_common`, so this module never imports ``heatlab.cli``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from heatlab.cli_common import (
    METHODS_HELP, backend_line, backend_flags, guarded, layer_option, progress_bars, say, say_cam_layer, say_figures,
    trust_model_code_option,
)


def register(app: typer.Typer) -> None:
    """Add the ``ax`` command to ``app``."""
    @app.command("ax")
    @guarded
    @backend_flags
    def ax(
        run_dir: Path = typer.Argument(..., help="A run folder written by `heatlab train`."),
        methods: str = typer.Option("all", help=METHODS_HELP),
        split: str = typer.Option("test", help="Split whose CO scores are analysed (gap, AUROC, flag precision/recall)."),
        holdout_split: str = typer.Option("val", help="Split that chooses the error-flag threshold; 'none' to choose it on --split."),
        batch_size: int = typer.Option(25, help="Samples per attribution and forward call."),
        space: Optional[str] = typer.Option(None, "--ax-space", help="Where h is added: input (after the model's own "
                                            "Normalize, the papers' convention; default) or pixel."),
        preset: Optional[str] = typer.Option(None, help="Attribution settings: paper000 (default: signed Saliency, "
                                             "SHAP baselines randn*0.001), paper002 or uniform."),
        replace: bool = typer.Option(False, "--replace", help="Write the tables with --methods alone (default: keep "
                                     "the methods of an earlier AX run with the same splits, space and preset)."),
        layer: Optional[str] = layer_option(),
        device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
        runner=None,  # --backend and the Ray flags (cli_common.backend_flags)
        trust_model_code: bool = trust_model_code_option(),
    ) -> None:
        """Feed x + h and x * h to each branch model and write the CO scores, their correct/wrong gap and figures."""
        from heatlab.run.ax import ax_run

        t0 = time.perf_counter()
        with progress_bars() as progress:
            summary = ax_run(run_dir, methods=methods, split=split, holdout_split=holdout_split,
                             batch_size=batch_size, space=space, preset=preset, replace=replace, device=device,
                             progress=progress, backend=runner, trust_model_code=trust_model_code, layer=layer)
        best = summary.largest_gap
        say(f"AX on {summary.samples} {split} samples x {len(summary.methods)} methods x "
            f"{len(summary.branches)} branches in {time.perf_counter() - t0:.0f} s")
        say(f"{summary.space} space: {summary.space_note}; attribution preset {summary.attribution['preset']}")
        say_cam_layer(summary)
        if best:
            say(f"largest gap: {best['method']} (AUROC {best['auroc']:.3f}, raw logits, x + h)")
        else:
            say("largest gap: none (no split has both correct and wrong predictions)")
        say(f"tables: {summary.paths['co']}, {summary.paths['co_gap']}")
        if (line := backend_line(runner)) is not None:
            say(line)
        say_figures(run_dir, "ax")
