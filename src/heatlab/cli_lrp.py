"""``heatlab lrp-filters RUN``: paper 004's relevance filters scored against ground truth.

``heatlab.cli`` calls :func:`register`; shared CLI pieces come from :mod:`heatlab.cli_common`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from heatlab.cli_common import (
    backend_line, backend_flags, guarded, progress_bars, say, say_figures, trust_model_code_option, warn_random_weights,
)


MAXPOOL_HELP = ("LRP through max-pooling: average (each window's relevance split in proportion to its inputs, "
                "paper 004's code) or winner (all to the maximum); default: average for paper 004's nets, else winner.")
FILTER_LAYERS_HELP = ("Comma-separated layers the filters act at (default: the model's; SmallNet block6..block2, "
                      "AlexNet-like block5..block2).")


def register(app: typer.Typer) -> None:
    """Add ``lrp-filters`` to ``app``."""
    @app.command("lrp-filters")
    @guarded
    @backend_flags
    def lrp_filters(
        run_dir: Path = typer.Argument(..., help="A trained run whose data has ground truth (cells, digits, masks)."),
        filters: Optional[str] = typer.Option(None, help="Comma-separated filters (default: the paper's c0.6,c0.2,"
                                              "c0.05,f0.6,f0.2,f0.05,p0.5,p0.7); 'none' is always included."),
        split: str = typer.Option("test", help="Split whose heatmaps are scored."),
        composite: str = typer.Option("epsilon_plus", help="LRP composite: epsilon, epsilon_plus, epsilon_plus_flat, "
                                      "epsilon_gamma_box or epsilon_alpha2_beta1."),
        start: str = typer.Option("target", help="Relevance starts at the predicted logit (target) or at all logits "
                                  "(all, as paper 004's code; fraction-pass filters at the logits need it)."),
        maxpool: Optional[str] = typer.Option(None, help=MAXPOOL_HELP),
        filter_layers: Optional[str] = typer.Option(None, help=FILTER_LAYERS_HELP),
        batch_size: int = typer.Option(25, help="Samples per LRP call."),
        device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
        runner=None,  # --backend and the Ray flags (cli_common.backend_flags)
        trust_model_code: bool = trust_model_code_option(),
    ) -> None:
        """Score LRP heatmaps with each relevance filter against the ground truth: do the filters help?"""
        from heatlab.run.lrp_filters import design_line, lrp_filters_run, verdict_lines

        t0 = time.perf_counter()
        with progress_bars() as progress:
            s = lrp_filters_run(run_dir, filters=filters, split=split, composite=composite, start=start,
                                maxpool=maxpool, filter_layers=filter_layers, batch_size=batch_size, device=device,
                                progress=progress, backend=runner, trust_model_code=trust_model_code)
        say(f"LRP ({composite}, max-pooling: {s.maxpool}) with {len(s.filters)} filter settings at {', '.join(s.layers)} on "
            f"{s.samples} {split} samples x {len(s.branches)} branches in {time.perf_counter() - t0:.0f} s")
        say(design_line(s))
        for line in verdict_lines(s):
            say(line)
        say(f"tables: {', '.join(s.paths.values())}")
        if (line := backend_line(runner)) is not None:
            say(line)
        say_figures(run_dir, "lrp-filters")

    @app.command("lrp-study")
    @guarded
    @backend_flags
    def lrp_study_cmd(
        data: str = typer.Option("digits", "--data", help="Image data: digits (offline 8x8 digits at 28 px), "
                                 "mnist:DIR, fashion_mnist:DIR or a cell folder."),
        out: Path = typer.Option(..., "--out", help="Folder for the tables, heatmaps, model and figures."),
        model: str = typer.Option("smallnet", help="Zoo model (paper 004: smallnet, smallnet140, alexnetlike, alexnetlike140)."),
        epochs: int = typer.Option(2, help="Epochs of training."),
        batch_size: int = typer.Option(32, help="Training batch size."),
        lr: float = typer.Option(1e-3, help="Adam learning rate."),
        every: int = typer.Option(20, help="Record accuracy and Mean Power every this many iterations (paper: 1000)."),
        eval_samples: int = typer.Option(240, help="Test samples Mean Power is averaged over (paper: 240)."),
        heatmap_samples: int = typer.Option(4, help="Test samples shown with every filter (Fig. 3)."),
        composite: str = typer.Option("epsilon_plus", help="LRP composite."),
        start: str = typer.Option("target", help="Relevance starts at the predicted logit (target) or all logits (all)."),
        filters: Optional[str] = typer.Option(None, help="Comma-separated filters (default: the paper's eight)."),
        filter_layers: Optional[str] = typer.Option(None, help=FILTER_LAYERS_HELP),
        maxpool: Optional[str] = typer.Option(None, help=MAXPOOL_HELP),
        seed: int = typer.Option(0, help="Seed of initialisation and shuffling."),
        device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
        size: Optional[int] = typer.Option(None, help="Side the digits are served at (default 28; 140 for the *140 models)."),
        runner=None,  # --backend and the Ray flags (cli_common.backend_flags): one unit per epoch, in turn
    ) -> None:
        """Paper 004: Mean Power per layer during training (Fig. 2) and filtered LRP heatmaps (Fig. 3)."""
        from heatlab.run.lrp_study import lrp_study

        t0 = time.perf_counter()
        with progress_bars() as progress:
            s = lrp_study(data, out, model=model, epochs=epochs, batch_size=batch_size, lr=lr, every=every,
                          eval_samples=eval_samples, heatmap_samples=heatmap_samples, composite=composite,
                          start=start, filters=filters, seed=seed, device=device, size=size, maxpool=maxpool,
                          filter_layers=filter_layers, progress=progress, backend=runner)
        warn_random_weights(s.random_weights, f"{model} trained for 0 epochs")
        say(f"{model} (LRP max-pooling: {s.maxpool}): {s.iterations} iterations, accuracy {s.final_accuracy:.3f} on {eval_samples} test "
            f"samples ({time.perf_counter() - t0:.0f} s)")
        for layer, t in s.mp_trend.items():
            at = s.mp_points[layer]
            where = "the input heatmap" if at == "input" else f"entering block {layer.rpartition('_')[2]}, at {at}'s output"
            say(f"  Mean Power at {layer} ({where}): {t['start']:.3g} -> {t['end']:.3g}")
        if (line := backend_line(runner)) is not None:
            say(line)
        say_figures(out, "lrp-study")
