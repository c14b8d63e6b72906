"""The ``heatlab`` command. Thin: it parses options, drives progress bars and calls the stages."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import heatlab
from heatlab.errors import HeatlabError
from heatlab.models.training import TrainConfig

TRAIN = TrainConfig()  # the defaults shown by `heatlab train --help`

app = typer.Typer(
    name="heatlab",
    help="Compute, score, rectify and use heatmap explanations of PyTorch classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Generate, check and preview the built-in synthetic cell data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True)
out = Console()


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn):
    """Turn HeatlabError (and Ctrl-C) into one sentence on stderr and a non-zero exit, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HeatlabError as exc:
            _fail(str(exc).replace("[", "\\["))
        except KeyboardInterrupt:
            _fail("interrupted; run the same command again to resume where it stopped.", code=130)

    return wrapper


@contextlib.contextmanager
def progress_bars() -> Iterator[callable]:
    """Yield a ``progress(task, done, total)`` callable backed by rich progress bars with an ETA."""
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and "pytest" in sys.modules,
    )
    ids: dict[str, int] = {}

    def update(task: str, done: int, total: int) -> None:
        if task not in ids:
            ids[task] = bars.add_task(task, total=total)
        bars.update(ids[task], completed=done, total=total)

    with bars:
        yield update


def _version(value: bool) -> None:
    if value:
        out.print(f"heatlab {heatlab.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """heatlab: ground-truth benchmarks, scores and uses of heatmap explanations."""


# --------------------------------------------------------------------------------------- data
@data_app.command("cells")
@guarded
def data_cells(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the shards and manifest.json into."),
    size: int = typer.Option(128, help="Image side in pixels (the paper's is 512)."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same bytes."),
    shards: str = typer.Option("train=32,val=8,test=8", help="Shards per split, as split=count pairs."),
    shard_size: int = typer.Option(200, help="Samples per shard (classes balanced within each shard)."),
    repair: bool = typer.Option(False, "--repair", help="Regenerate shards whose checksum does not match."),
) -> None:
    """Generate the synthetic 10-class cell dataset with ground-truth heatmaps (paper 002, Fig. 2)."""
    from heatlab.data import shards as shards_mod

    counts = shards_mod.parse_shards(shards)
    t0 = time.perf_counter()
    with progress_bars() as progress:
        manifest = shards_mod.write_cells(
            out_dir, size=size, seed=seed, shards=counts, shard_size=shard_size, repair=repair,
            progress=progress,
        )
    total = sum(len(s["shards"]) for s in manifest["splits"].values()) * shard_size
    out.print(f"{total} cells in {out_dir} ({time.perf_counter() - t0:.1f} s); manifest: {Path(out_dir) / 'manifest.json'}")


@data_app.command("verify")
@guarded
def data_verify(data_dir: Path = typer.Argument(..., help="A folder written by `heatlab data cells`.")) -> None:
    """Check every shard against the sha256 in the manifest."""
    from heatlab.data import shards as shards_mod

    bad = shards_mod.verify(data_dir)
    if bad:
        _fail(f"{len(bad)} shard(s) are missing or corrupt ({', '.join(bad[:5])}); run `heatlab data cells` with the same settings and --repair.")
    out.print(f"all shards in {data_dir} match the manifest")


@data_app.command("preview")
@guarded
def data_preview(
    data_dir: Path = typer.Argument(..., help="A folder written by `heatlab data cells`."),
    png: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default DATA_DIR/preview.png)."),
) -> None:
    """Write a PNG grid: every class on every background, with its ground truth below."""
    from heatlab.report.preview import preview_figure

    target = preview_figure(data_dir, png or Path(data_dir) / "preview.png")
    out.print(f"preview: {target}")


# -------------------------------------------------------------------------------------- train
@app.command()
@guarded
def train(
    data: str = typer.Option(..., "--data", help="A cell folder written by `heatlab data cells`, or a dataset spec: "
                             "wine, breast_cancer, drybean:FILE.xlsx, creditcard:FILE.csv, chest_xray:DIR, covid:DIR, folder:DIR."),
    run_dir: Path = typer.Option(..., "--out", help="Run folder to write models, tables and figures into."),
    model: str = typer.Option(TRAIN.model, "--model", help="Zoo model name (cellcnn, resnet34, alexnet, vgg16, ...)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Start from these weights (.safetensors or a state dict)."),
    epochs: int = typer.Option(TRAIN.epochs, help="Epochs of continuous training (the base model)."),
    branch_epochs: int = typer.Option(TRAIN.branch_epochs, help="Maximum epochs per branch in regular-evaluation mode."),
    branches: int = typer.Option(TRAIN.branches, help="Branch models trained from the base model (paper: 5)."),
    batch_size: int = typer.Option(TRAIN.batch_size, help="Training batch size."),
    lr: float = typer.Option(TRAIN.lr, help="Adam learning rate of continuous mode."),
    branch_lr: float = typer.Option(TRAIN.branch_lr, help="Adam learning rate of the branches (the paper uses --lr)."),
    schedule: str = typer.Option(TRAIN.schedule, help="Continuous-mode rate: cosine (decays to 1%) or constant (paper)."),
    weight_decay: float = typer.Option(TRAIN.weight_decay, help="Adam weight decay."),
    eval_every: int = typer.Option(TRAIN.eval_every, help="Validate on one random validation shard every this many iterations."),
    target_acc: float = typer.Option(TRAIN.target_acc, help="Stop a branch when a validation shard reaches this accuracy."),
    n_l: int = typer.Option(TRAIN.n_l, "--n-l", help="Early-stopping limit (validations without improvement)."),
    r_f: float = typer.Option(TRAIN.r_f, "--r-f", help="Refresh fraction: on improvement the counter becomes int(r_f*counter)."),
    seed: int = typer.Option(TRAIN.seed, help="Seed for initialisation, shuffling and validation-shard choice."),
    device: str = typer.Option(TRAIN.device, help="Torch device, e.g. cpu or cuda."),
) -> None:
    """Train a base model, then branch models in regular-evaluation mode (paper 002, §III-B)."""
    from heatlab.report.training_figures import training_figure
    from heatlab.run.training import train_run

    config = TrainConfig(model=model, epochs=epochs, branch_epochs=branch_epochs, branches=branches, batch_size=batch_size,
                         lr=lr, branch_lr=branch_lr, schedule=schedule, weight_decay=weight_decay, eval_every=eval_every,
                         target_acc=target_acc, n_l=n_l, r_f=r_f, seed=seed, device=device)
    t0 = time.perf_counter()
    with progress_bars() as progress:
        summary = train_run(data, run_dir, config, weights=weights, progress=progress)
    figure = training_figure(run_dir, Path(run_dir) / "report" / "figures" / "training.png")
    _print_training(summary)
    out.print(f"trained in {time.perf_counter() - t0:.0f} s; loss curves: {figure}")


def _print_training(summary: dict) -> None:
    from rich.table import Table

    table = Table(title="branch models")
    for col in ("branch", "stop reason", "iterations", "val acc", "test acc"):
        table.add_column(col)
    for b in summary["branches"]:
        table.add_row(str(b["branch"]), str(b["stop_reason"]), str(b["iterations"]), f"{b['val_acc']:.3f}", f"{b['test_acc']:.3f}")
    out.print(table)


# ----------------------------------------------------------------------------------- evaluate
@app.command()
@guarded
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `heatlab train`."),
    methods: str = typer.Option("all", help="'all' or comma-separated Captum method names."),
    split: str = typer.Option("test", help="Data split to explain."),
    batch_size: int = typer.Option(25, help="Samples per attribution call."),
) -> None:
    """Explain every sample with every method for every branch and score it against the ground truth."""
    from heatlab.run.evaluate import evaluate_run

    t0 = time.perf_counter()
    with progress_bars() as progress:
        summary = evaluate_run(run_dir, methods=methods, split=split, batch_size=batch_size, progress=progress)
    for sentence in summary["skipped"]:
        out.print(f"skipped: {sentence}", markup=False, highlight=False, soft_wrap=True)
    tables = ", ".join(summary["tables"]) or "none (heatmaps only)"
    out.print(f"evaluated {summary['samples']} samples x {len(summary['methods'])} methods x {len(summary['branches'])} branches "
              f"in {time.perf_counter() - t0:.0f} s; tables: {tables}; heatmaps in {Path(run_dir) / 'heatmaps'}",
              markup=False, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------- report
@app.command("report")
@guarded
def report_cmd(
    run_dir: Path = typer.Argument(..., help="An evaluated run folder."),
    gallery_branch: Optional[str] = typer.Option(None, help="Branch whose heatmaps the gallery shows (default: the first)."),
) -> None:
    """Write RUN/report/index.html with figures, galleries, tables and a plain-language summary."""
    from heatlab.report.html import build_report

    with progress_bars() as progress:
        page = build_report(run_dir, gallery_branch=gallery_branch, progress=progress)
    out.print(f"report: {page}")


# --------------------------------------------------------------------------------------- demo
@app.command()
@guarded
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder for the demo."),
    seed: int = typer.Option(0, help="Seed for data, training and attribution baselines."),
    full: bool = typer.Option(False, "--full", help="The paper's sizes (6,400/1,600/1,600 cells, 5 branches): hours on CPU."),
) -> None:
    """Data -> train -> evaluate -> report on the built-in cells; prints the report's path."""
    from heatlab.data.shards import write_cells
    from heatlab.report.html import build_report
    from heatlab.report.training_figures import training_figure
    from heatlab.run.ax import ax_run
    from heatlab.run.gax import gax_run
    from heatlab.run.demo import demo_plan
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.training import train_run

    plan = demo_plan(full=full, seed=seed)
    data_dir = Path(run_dir) / "data"
    t0 = time.perf_counter()
    with progress_bars() as progress:
        write_cells(data_dir, size=plan.size, seed=seed, shards=plan.shards, shard_size=plan.shard_size,
                    progress=progress)
        t_data = time.perf_counter()
        summary = train_run(data_dir, run_dir, plan.train, progress=progress)
        training_figure(run_dir, Path(run_dir) / "report" / "figures" / "training.png")
        t_train = time.perf_counter()
        evaluate_run(run_dir, methods=plan.methods, split=plan.split, progress=progress)
        t_eval = time.perf_counter()
        ax = ax_run(run_dir, methods=plan.ax_methods, split=plan.split, progress=progress)
        gax = gax_run(run_dir, split=plan.split, first_n_correct=plan.gax_images, progress=progress)
        t_ax = time.perf_counter()
        page = build_report(run_dir, progress=progress)
    _print_training(summary)
    out.print(f"data {t_data - t0:.0f} s, training {t_train - t_data:.0f} s, evaluation {t_eval - t_train:.0f} s, "
              f"AX and GAX {t_ax - t_eval:.0f} s, report {time.perf_counter() - t_ax:.0f} s; total {time.perf_counter() - t0:.0f} s")
    if ax.get("largest_gap"):
        gap = ax["largest_gap"]
        out.print(f"largest correct/wrong CO gap: {gap['method']} (AUROC {gap['auroc']:.3f}, {gap['variant']})")
    out.print(f"GAX: {gax['reached']} of {gax['samples']} correctly predicted images reached the target CO "
              f"(median {gax['median_steps_to_target']} steps); viewer: {Path(run_dir) / 'report' / 'gax.html'}")
    out.print(f"report: {page}")


def _register_commands() -> None:
    """Commands of later pipeline stages live in their own modules (heatlab.cli_*)."""
    from heatlab import cli_ax, cli_gax, cli_toy2d

    for module in (cli_ax, cli_gax, cli_toy2d):
        module.register(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
