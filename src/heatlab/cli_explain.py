"""``heatlab explain IMAGES...``: attributions of a few images, overlays and an HTML index.

``heatlab.cli`` calls :func:`register`; shared CLI pieces come from :mod:`heatlab.cli_common`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from heatlab.cli_common import (
    backend_flags, backend_line, guarded, layer_option, progress_bars, say, say_cam_layer, trust_model_code_option,
    warn_random_weights,
)


def register(app: typer.Typer) -> None:
    """Add ``heatlab explain`` to ``app``."""
    @app.command("explain")
    @guarded
    @backend_flags
    def explain_cmd(
        sources: List[str] = typer.Argument(..., help="Image files, folders of images (searched recursively), or one "
                                            "dataset spec / cell folder as --data takes."),
        out: Path = typer.Option(..., "--out", help="Folder to write attributions.safetensors, overlays/ and index.html into."),
        run: Optional[Path] = typer.Option(None, "--run", help="A run folder written by `heatlab train` (use its --branch)."),
        branch: str = typer.Option("branch-00", help="The run's model: branch-00, 0, or base."),
        model: Optional[str] = typer.Option(None, "--model", help="Instead of --run: a zoo name, torchvision:NAME, "
                                            "path/to/file.py:fn or package.module:fn (see `heatlab train --help`)."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Weights for --model (.safetensors or a state "
                                               "dict); a heatlab .safetensors file carries its model, so --model may be left out."),
        num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Class count of --model when the weights do not record it."),
        in_channels: Optional[int] = typer.Option(None, "--in-channels", help="Input channels of --model (default 3)."),
        methods: str = typer.Option("Saliency,IntegratedGradients", help="Comma-separated Captum method names."),
        layer: Optional[str] = layer_option(),
        target: str = typer.Option("predicted", help="Class to explain: predicted, a class index or a class name."),
        limit: Optional[int] = typer.Option(None, help="Explain only the first N images."),
        size: Optional[int] = typer.Option(None, help="Resize image files to SIZE×SIZE (default: the run's data size, "
                                           "else the first image's height)."),
        split: str = typer.Option("test", help="Split of a dataset spec."),
        batch_size: int = typer.Option(8, help="Images per attribution call."),
        device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
        runner=None,  # --backend and the Ray flags (cli_common.backend_flags): a unit per method and image shard
        trust_model_code: bool = trust_model_code_option(),
    ) -> None:
        """Explain images with a model and one or more methods: float16 attributions, overlay PNGs, index.html."""
        from heatlab.report.explain_pages import explanation_pages
        from heatlab.run.explain import explain_run

        with progress_bars() as progress:
            s = explain_run(sources, out, methods=methods, run=run, branch=branch, model=model, weights=weights,
                            num_classes=num_classes, in_channels=in_channels, target=target, limit=limit, size=size,
                            split=split, batch_size=batch_size, device=device, progress=progress,
                            trust_model_code=trust_model_code, layer=layer, backend=runner)
            page = explanation_pages(out, progress=progress)
        warn_random_weights(s.random_weights, s.model_name)
        say(f"explained {len(s.ids)} images with {', '.join(s.methods)}; attributions: {s.path}")
        say_cam_layer(s)
        say(f"index: {page}")
        if (line := backend_line(runner)) is not None:
            say(line)
