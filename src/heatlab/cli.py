"""The ``heatlab`` command. Thin: it parses options, drives progress bars and calls the stages."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

import heatlab
from heatlab.cli_common import (
    METHODS_HELP, HeatlabGroup, _fail, backend_line, backend_flags, console, guarded, out, progress_bars,
    layer_option, say, say_cam_layer, trust_model_code_option, warn,
)
from heatlab.models.config import TABLE_DEFAULTS as TABLE, TrainConfig

if TYPE_CHECKING:
    from heatlab.run.results import NoTruthResult, TrainResult

__all__ = ["app", "main", "console", "out", "guarded", "progress_bars", "say"]

TRAIN = TrainConfig()  # the defaults shown by `heatlab train --help`

app = typer.Typer(
    name="heatlab",
    cls=HeatlabGroup,
    help="Compute, score, rectify and use heatmap explanations of PyTorch classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Generate, check and preview the built-in synthetic cell data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        say(f"heatlab {heatlab.__version__}")
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
    say(f"{total} cells in {out_dir} ({time.perf_counter() - t0:.1f} s); manifest: {Path(out_dir) / 'manifest.json'}")


@data_app.command("verify")
@guarded
def data_verify(data_dir: Path = typer.Argument(..., help="A folder written by `heatlab data cells`.")) -> None:
    """Check every shard against the sha256 in the manifest."""
    from heatlab.data import shards as shards_mod

    bad = shards_mod.verify(data_dir)
    if bad:
        _fail(f"{len(bad)} shard(s) are missing or corrupt ({', '.join(bad[:5])}); run `heatlab data cells` with the same settings and --repair.")
    say(f"all shards in {data_dir} match the manifest")


@data_app.command("preview")
@guarded
def data_preview(
    data_dir: Path = typer.Argument(..., help="A folder written by `heatlab data cells`."),
    out_png: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default DATA_DIR/preview.png)."),
) -> None:
    """Write a PNG grid: every class on every background, with its ground truth below."""
    from heatlab.report.preview import preview_figure

    target = preview_figure(data_dir, out_png or Path(data_dir) / "preview.png")
    say(f"preview: {target}")


# -------------------------------------------------------------------------------------- train
@app.command()
@guarded
@backend_flags
def train(
    data: str = typer.Option(..., "--data", help="A cell folder written by `heatlab data cells`, or a dataset spec: "
                             "wine, breast_cancer, drybean:FILE.xlsx, creditcard:FILE.csv, chest_xray:DIR, covid:DIR, folder:DIR."),
    run_dir: Path = typer.Option(..., "--out", help="Run folder to write models, tables and figures into."),
    model: Optional[str] = typer.Option(None, "--model", help="Zoo model name (cellcnn, resnet34, alexnet, vgg16, "
                                        "mlp, ...), torchvision:NAME (any torchvision classifier, random or --weights), "
                                        "path/to/file.py:fn or package.module:fn (your builder fn(*, num_classes, "
                                        "in_channels) -> nn.Module), or a name a package registers in the heatlab.models "
                                        f"entry-point group; default {TRAIN.model} for images, {TABLE['model']} for tables."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Start from these weights (.safetensors or a state dict)."),
    epochs: Optional[int] = typer.Option(None, help=f"Epochs of continuous training (the base model); default "
                                         f"{TRAIN.epochs} for images, {TABLE['epochs']} for tables."),
    branch_epochs: int = typer.Option(TRAIN.branch_epochs, help="Maximum epochs per branch in regular-evaluation mode."),
    branches: int = typer.Option(TRAIN.branches, help="Branch models trained from the base model (paper: 5)."),
    batch_size: Optional[int] = typer.Option(None, help=f"Training batch size; default {TRAIN.batch_size} for images, "
                                             f"{TABLE['batch_size']} for tables."),
    lr: Optional[float] = typer.Option(None, help=f"Adam learning rate of continuous mode; default {TRAIN.lr:g} for "
                                       f"images, {TABLE['lr']:g} for tables."),
    branch_lr: float = typer.Option(TRAIN.branch_lr, help="Adam learning rate of the branches (the paper uses --lr)."),
    schedule: str = typer.Option(TRAIN.schedule, help="Continuous-mode rate: cosine (decays to 1%) or constant (paper)."),
    weight_decay: float = typer.Option(TRAIN.weight_decay, help="Adam weight decay."),
    eval_every: int = typer.Option(TRAIN.eval_every, help="Validate on one random validation shard every this many iterations."),
    target_acc: float = typer.Option(TRAIN.target_acc, help="Stop a branch when a validation shard reaches this accuracy."),
    n_l: int = typer.Option(TRAIN.n_l, "--n-l", help="Early-stopping limit (validations without improvement)."),
    r_f: float = typer.Option(TRAIN.r_f, "--r-f", help="Refresh fraction: on improvement the counter becomes int(r_f*counter)."),
    seed: int = typer.Option(TRAIN.seed, help="Seed for initialisation, shuffling and validation-shard choice."),
    device: str = typer.Option(TRAIN.device, help="Torch device, e.g. cpu or cuda."),
    normalize: str = typer.Option(TRAIN.normalize, help="Input standardisation the model carries: data (the training "
                                  "split's per-channel mean/std), imagenet or none. AX adds heatmaps after it."),
    size: Optional[int] = typer.Option(None, "--size", help="Side in pixels image folders and digits are served at "
                                       "(default: the dataset's own, 256 for image folders); recorded for every stage."),
    runner=None,  # --backend and the Ray flags (cli_common.backend_flags): Ray trains the branches in parallel
) -> None:
    """Train a base model, then branch models in regular-evaluation mode (paper 002, §III-B)."""
    from heatlab.report import stage_figures
    from heatlab.run.training import train_run

    given = dict(model=model, epochs=epochs, batch_size=batch_size, lr=lr)  # unset: the data kind's default
    settings = {k: v for k, v in given.items() if v is not None}
    settings.update(branch_epochs=branch_epochs, branches=branches, branch_lr=branch_lr, schedule=schedule,
                    weight_decay=weight_decay, eval_every=eval_every, target_acc=target_acc, n_l=n_l, r_f=r_f, seed=seed,
                    device=device, normalize=normalize)
    t0 = time.perf_counter()
    with progress_bars() as progress:
        summary = train_run(data, run_dir, settings, weights=weights, progress=progress,
                            data_options=None if size is None else {"size": size}, backend=runner)
    figures = stage_figures(run_dir, "train")
    _print_training(summary)
    say(f"trained in {time.perf_counter() - t0:.0f} s; loss curves: {', '.join(map(str, figures)) or 'none'}")
    if (line := backend_line(runner)) is not None:
        say(line)
    if summary.warning:
        warn(summary.warning)


def _print_training(summary: TrainResult) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="branch models")
    for col in ("branch", "stop reason", "iterations", "val acc", "test acc"):
        table.add_column(col)
    for b in summary.branches:
        table.add_row(Text(str(b["branch"])), Text(str(b["stop_reason"])), str(b["iterations"]), f"{b['val_acc']:.3f}", f"{b['test_acc']:.3f}")
    out.print(table)


# ----------------------------------------------------------------------------------- evaluate
@app.command()
@guarded
@backend_flags
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `heatlab train`."),
    methods: str = typer.Option("all", help=METHODS_HELP),
    split: str = typer.Option("test", help="Data split to explain."),
    batch_size: int = typer.Option(25, help="Samples per attribution call."),
    preset: Optional[str] = typer.Option(None, help="Attribution settings: paper002 (default: Saliency |gradient|, "
                                         "SHAP baselines randn*0.001), paper000 or uniform."),
    replace: bool = typer.Option(False, "--replace", help="Write the tables with --methods alone (default: keep "
                                 "the methods of an earlier evaluation of the same split and preset)."),
    layer: Optional[str] = layer_option(),
    device: str = typer.Option("cpu", help="Torch device, e.g. cpu or cuda."),
    metrics: str = typer.Option("default", help="No-truth metrics, names or families (faithfulness, randomisation, "
                                "robustness, axiomatic; 'complexity' is the metric, not its family), e.g. "
                                "faithfulness,sparseness; 'all'; 'none'; "
                                "'fast' (deletion, insertion, sparseness, complexity: none re-explains); default: "
                                "'fast' on data without ground truth, sparseness and complexity next to the truth "
                                "scores where there is truth; add "
                                "re-explaining checks by name, e.g. default,emprt."),
    patch_size: Optional[int] = typer.Option(None, help="Patch side of the patch metrics (default: the image side / 16)."),
    perturb_baseline: Optional[str] = typer.Option(None, help="What removed features become: black, white, mean, "
                                                   "uniform or blur (default: each metric's own; completeness takes only "
                                                   "black, white or mean)."),
    runner=None,  # --backend and the Ray flags (cli_common.backend_flags)
    trust_model_code: bool = trust_model_code_option(),
) -> None:
    """Explain every sample with every method for every branch; score it against the ground truth where there
    is one, and with the no-truth metrics (tables/no_truth.parquet, the control Random among the methods)."""
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.rundir import RunDir

    t0 = time.perf_counter()
    with progress_bars() as progress:
        summary = evaluate_run(run_dir, methods=methods, split=split, batch_size=batch_size, preset=preset,
                               replace=replace, device=device, progress=progress, backend=runner,
                               trust_model_code=trust_model_code, layer=layer, metric_set=metrics,
                               patch_size=patch_size, perturb_baseline=perturb_baseline)
    no_truth = summary.no_truth
    for sentence in [*summary.skipped, *(no_truth.skipped if no_truth else [])]:
        say(f"skipped: {sentence}")
    say_cam_layer(summary)
    tables = ", ".join([*summary.tables, *(["no_truth"] if no_truth else [])]) or "none (heatmaps only)"
    say(f"evaluated {summary.samples} samples x {len(summary.methods)} methods x {len(summary.branches)} branches "
        f"in {time.perf_counter() - t0:.0f} s; tables: {tables}; heatmaps in {RunDir(run_dir).heatmaps_dir}")
    if no_truth:
        _print_no_truth(no_truth)
    if (line := backend_line(runner)) is not None:
        say(line)


def _print_no_truth(summary: NoTruthResult) -> None:
    """Per no-truth metric: the best method by mean and Random's mean (the floor a real method must beat)."""
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    say(f"no-truth scores in {summary.table} ({summary.control}, seeded noise, is the floor a method must beat):")
    for name, row in summary.best.items():
        direction = {True: "higher is better", False: "lower is better"}.get(row["higher_is_better"], "no direction")
        best, floor = row["best_mean"], row["random_mean"]
        beaten = (None not in (best, floor, row["higher_is_better"])
                  and (floor > best if row["higher_is_better"] else floor < best))
        say(f"  {name} ({direction}): best {row['best'] or '-'} {fmt(best)}, {summary.control} {fmt(floor)}"
            + (f" (no method beats {summary.control})" if beaten else ""))


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
    say(f"report: {page}")


# --------------------------------------------------------------------------------------- demo
@app.command()
@guarded
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder for the demo."),
    seed: int = typer.Option(0, help="Seed for data, training and attribution baselines."),
    full: bool = typer.Option(False, "--full", help="The paper's sizes (6,400/1,600/1,600 cells, 5 branches): hours on CPU."),
) -> None:
    """Data -> train -> evaluate -> AX -> GAX -> report on the built-in cells; prints the report's path."""
    from heatlab.report import build_report, stage_figures
    from heatlab.run.demo import run_demo
    from heatlab.run.rundir import RunDir

    with progress_bars() as progress:
        summary = run_demo(run_dir, full=full, seed=seed, progress=progress,
                           stage_figures=stage_figures, report=build_report)
    _print_training(summary.training)
    say_cam_layer(summary.evaluate)
    sec = summary.seconds
    _print_no_truth(summary.no_truth)
    say(f"data {sec['data']:.0f} s, training {sec['training']:.0f} s, evaluation {sec['evaluation']:.0f} s, "
        f"no-truth scores {sec['no_truth']:.0f} s, "
        f"AX {sec['ax']:.0f} s, GAX {sec['gax']:.0f} s, LRP {sec['lrp']:.0f} s, Mixer {sec['mixer']:.0f} s, "
        f"report {sec['report']:.0f} s; "
        f"total {sec['total']:.0f} s")
    ax, gax = summary.ax, summary.gax
    if ax.largest_gap:
        gap = ax.largest_gap
        say(f"largest correct/wrong CO gap: {gap['method']} (AUROC {gap['auroc']:.3f}, {gap['variant']}, "
            f"{ax.space} space, grouped by {gap['grouping'].replace('_', ' ')})")
    say(f"GAX: {gax.reached} of {gax.samples} correctly predicted images reached the target CO "
        f"(median {gax.median_steps_to_target} steps); viewer: {RunDir(run_dir).gax_page}")
    verdicts = summary.lrp_filters.verdicts
    say("LRP filters against none on the cells' truth (paired 95% intervals): "
        + "; ".join(f"{f}: better on {', '.join(v['better']) or 'nothing'}, worse on {', '.join(v['worse']) or 'nothing'}"
                    for f, v in verdicts.items()))
    say(f"LRP study (paper 004, digits): accuracy {summary.lrp_study.final_accuracy:.3f}; Mean Power "
        + ", ".join(f"{k} {v['start']:.3g}->{v['end']:.3g}" for k, v in summary.lrp_study.mp_trend.items()))
    from heatlab.improve.mixer import setting_label

    say("Mixer (paper 003), C(x) -> C(x*M): " + ", ".join(
        f"{setting_label(k)} {v['accuracy_plain']:.3f} -> {v['accuracy_masked']:.3f}"
        for k, v in summary.mixer.settings.items()))
    say(f"report: {summary.report}")


def _register_commands() -> None:
    """Commands of later pipeline stages live in their own modules (heatlab.cli_*)."""
    from heatlab import cli_ax, cli_explain, cli_gax, cli_lrp, cli_mixer, cli_toy2d

    for module in (cli_ax, cli_gax, cli_lrp, cli_mixer, cli_toy2d, cli_explain):
        module.register(app)


_register_commands()

# ------------------------------------------------------------------------------ fast allocator
# DESIGN §5: glibc returns every block over 32 MiB to the kernel on free, which costs a third or
# more of the time of batched torch work. `make` exports this setting; main() sets it for any other
# way of starting heatlab (.venv/bin/heatlab, python -m heatlab) by re-executing itself once.
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"
_REEXEC_MARKER = "HEATLAB_REEXECUTED"


def _reexec_with_fast_allocator() -> None:
    """Start this same command again with GLIBC_TUNABLES set, once; never when the user set it
    (their value wins), off Linux, or when the environment already says it was done."""
    env = os.environ
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in env or env.get(_REEXEC_MARKER):
        return
    argv = list(getattr(sys, "orig_argv", []) or [])  # the interpreter's own command line, -m/-c included
    if not sys.executable or len(argv) < 2:
        return
    env = {**env, "GLIBC_TUNABLES": GLIBC_TUNABLES, _REEXEC_MARKER: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return  # could not re-execute: run as we are, only slower


def main() -> None:
    """The ``heatlab`` console script: the app, with the fast allocator setting (DESIGN §5)."""
    _reexec_with_fast_allocator()
    app()


if __name__ == "__main__":
    main()
