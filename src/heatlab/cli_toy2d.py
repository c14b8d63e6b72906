"""``heatlab toy2d``: draw the 2-D toy figure of papers 000/001 (Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import typer

from heatlab.cli_common import guarded, say


def register(app: typer.Typer) -> None:
    """Add the ``toy2d`` command to ``app``."""
    @app.command("toy2d")
    @guarded
    def toy2d(
        out_png: Path = typer.Option(Path("toy2d.png"), "--out", help="PNG file to write."),
        full_range: bool = typer.Option(
            False,
            "--full-range",
            help="Draw θ over [-π, π] (the appendix version) instead of the non-negative range.",
        ),
    ) -> None:
        """Draw the 2-D toy of paper 000 §2: x and its closed-form GAX heatmap (eq. 4) against the rotation θ."""
        from heatlab.report.toy2d_figure import toy2d_figure

        say(f"figure: {toy2d_figure(out_png, full_range=full_range)}")
