"""``heatlab mixer RUN``: paper 003's Integrated-Gradients soft mask for a frozen classifier.

``heatlab.cli`` calls :func:`register`; shared CLI pieces come from :mod:`heatlab.cli_common`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from heatlab.cli_common import (
    backend_flags, backend_line, guarded, progress_bars, say, say_figures, trust_model_code_option, warn_random_weights,
)


def register(app: typer.Typer) -> None:
    """Add ``heatlab mixer`` to ``app``."""
    @app.command("mixer")
    @guarded
    @backend_flags
    def mixer_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder written by `heatlab train` (its model is C)."),
        settings: Optional[str] = typer.Option(None, help="Comma-separated attribution settings (default all): "
                                               "true-class (the paper's; label-informed: uses the test label, and "
                                               "a leak test feeds it a random wrong label's attribution), predicted, "
                                               "expected, none (control: no attribution)."),
        seeds: int = typer.Option(3, help="Mixers trained per setting (seeds 0..N-1); the table gives the mean and a 95% "
                                  "interval that bootstraps the seeds, then the test samples."),
        branch: str = typer.Option("0", help="Branch model used as C: an index such as 0, or 'base'."),
        architecture: str = typer.Option("auto", help="Mixer: fc (paper 003's Table 1, flattened input), conv "
                                         "(small convolutional) or auto: fc for tables and single-channel images "
                                         "of at most 28x28 px (the paper's Fashion-MNIST setting), conv for other "
                                         "images."),
        per_channel: bool = typer.Option(False, "--per-channel", help="One mask per input channel instead of one "
                                         "broadcast over the channels."),
        epochs: int = typer.Option(30, help="Most epochs of Mixer training."),
        patience: int = typer.Option(5, help="Stop after this many epochs without a lower hold-out loss."),
        batch_size: int = typer.Option(64, help="Mixer training batch size."),
        lr: float = typer.Option(1e-3, help="Adam learning rate."),
        holdout: float = typer.Option(0.3, help="Share of the training samples held out for early stopping "
                                "(paper: 0.3; at most 0.5)."),
        grid: bool = typer.Option(False, "--grid", help="Paper 003's grid: batch sizes 64,128,256 x learning rates "
                                  "0.001,0.0055,0.01, chosen on the hold-out (9x the training time)."),
        n_steps: int = typer.Option(32, help="Integrated-Gradients steps."),
        train_samples: Optional[int] = typer.Option(None, help="Use only the first N training samples (default all)."),
        test_samples: Optional[int] = typer.Option(None, help="Score only the first N test samples (default all)."),
        ig_batch_size: int = typer.Option(25, help="Samples per Integrated-Gradients call."),
        device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
        runner=None,  # --backend and the Ray flags (cli_common.backend_flags)
        trust_model_code: bool = trust_model_code_option(),
    ) -> None:
        """Paper 003: C(x) against C(x*M), M from x and its IG attribution, for each attribution setting."""
        from heatlab.improve.mixer import MixerConfig, setting_label
        from heatlab.run.mixer import mixer_run

        config = MixerConfig(architecture=architecture, per_channel=per_channel, epochs=epochs, patience=patience,
                             batch_size=batch_size, lr=lr, holdout=holdout, grid=grid)
        t0 = time.perf_counter()
        with progress_bars() as progress:
            s = mixer_run(run_dir, settings=settings, seeds=seeds, branch=branch, config=config, n_steps=n_steps,
                          train_samples=train_samples, test_samples=test_samples, ig_batch_size=ig_batch_size,
                          device=device, progress=progress, trust_model_code=trust_model_code, backend=runner)
        warn_random_weights(s.random_weights, f"{s.branch} of {run_dir}")
        say(f"Mixer ({s.architecture}) for {s.branch}: {s.train_samples} training and {s.test_samples} "
            f"test samples, {seeds} seed(s), {time.perf_counter() - t0:.0f} s")
        for setting, r in s.settings.items():
            say(f"  {setting_label(setting):>28}: C(x) {r['accuracy_plain']:.3f} -> C(x*M) {r['accuracy_masked']:.3f} "
                f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] (gain {r['gain']:+.3f} [{r['gain_low']:+.3f}, {r['gain_high']:+.3f}])")
            if "leak" in r:
                k = r["leak"]
                say(f"  {'leak test':>28}: fed a random wrong label's attribution, it predicts that label "
                    f"{k['wrong_share']:.3f} [{k['wrong_share_low']:.3f}, {k['wrong_share_high']:.3f}] of the time "
                    f"(C(x) alone {k['plain_wrong_share']:.3f}, chance 1/(K-1) = {k['chance']:.3f}) and the true "
                    f"label {k['accuracy']:.3f} ({k['samples']} test samples)")
        say("  intervals: 95%, " + s.interval)
        say(f"table: {s.table}")
        say_figures(run_dir, "mixer")
        if (line := backend_line(runner)) is not None:
            say(line)
