"""``heatlab lrp-filters RUN``: paper 004's relevance filters scored against ground truth.

``heatlab.cli`` calls :func:`register`; shared CLI pieces come from :mod:`heatlab.cli_common`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from heatlab.cli_common import guarded, progress_bars, say


def register(app: typer.Typer) -> None:
    """Add ``lrp-filters`` to ``app``."""
    @app.command("lrp-filters")
    @guarded
    def lrp_filters(
        run_dir: Path = typer.Argument(..., help="A trained run whose data has ground truth (cells, digits, masks)."),
        filters: Optional[str] = typer.Option(None, help="Comma-separated filters (default: the paper's c0.6,c0.2,"
                                              "c0.05,f0.6,f0.2,f0.05,p0.5,p0.7); 'none' is always included."),
        split: str = typer.Option("test", help="Split whose heatmaps are scored."),
        composite: str = typer.Option("epsilon_plus", help="LRP composite: epsilon, epsilon_plus, epsilon_plus_flat, "
                                      "epsilon_gamma_box or epsilon_alpha2_beta1."),
        batch_size: int = typer.Option(25, help="Samples per LRP call."),
        device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
    ) -> None:
        """Score LRP heatmaps with each relevance filter against the ground truth: do the filters help?"""
        from heatlab.run.lrp_filters import lrp_filters_run

        t0 = time.perf_counter()
        with progress_bars() as progress:
            s = lrp_filters_run(run_dir, filters=filters, split=split, composite=composite, batch_size=batch_size,
                                device=device, progress=progress)
        say(f"LRP ({composite}) with {len(s['filters'])} filter settings at {', '.join(s['layers'])} on "
            f"{s['samples']} {split} samples x {len(s['branches'])} branches in {time.perf_counter() - t0:.0f} s")
        for branch, better in s["better_than_none"].items():
            say(f"{branch}: better than no filter: {', '.join(better) if better else 'none'}")
        say(f"tables: {', '.join(s['tables'].values())}")
