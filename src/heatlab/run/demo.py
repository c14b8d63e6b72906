"""`heatlab demo`: its sizes (a quick preset for 2 CPU cores, the paper's full preset) and the
pipeline that runs them (:func:`run_demo`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from heatlab.models.training import TrainConfig
from heatlab.progress import Progress
from heatlab.run.results import (AxResult, EvaluateResult, GaxStageResult, LrpFiltersResult, LrpStudyResult,
                                 MixerResult, NoTruthResult, TrainResult)


@dataclass(frozen=True)
class DemoPlan:
    """Everything `heatlab demo` needs to know to run data -> train -> evaluate -> report."""

    size: int
    shards: dict[str, int]
    shard_size: int
    train: TrainConfig
    methods: str = "all"
    split: str = "test"
    # AX needs attributions of the held-out split too; the slow sampling methods are left out so the
    # quick demo stays within minutes (`heatlab ax RUN --methods all` runs every method).
    ax_methods: str = "Saliency,InputXGradient,DeepLift,GuidedBackprop,Deconvolution,GuidedGradCam,LayerGradCam,LRP"
    gax_images: int = 8
    #: The no-truth scores (issue 22): the fast set on two methods (Random, the floor, is added).
    no_truth_methods: str = "Saliency,LRP"
    no_truth_metrics: str = "fast,emprt"  # the fast set and a randomisation check (eMPRT re-explains: not in fast)
    #: (branches, shards, samples per shard) it scores; None: all. The quick plan: one branch, 50 cells.
    no_truth_size: tuple = (1, 1, 50)
    #: Filters of the LRP filter study on the cells (None: the paper's eight).
    lrp_filters: str | None = None
    #: Paper 004 on the offline digits: a short training with Mean Power tracking.
    lrp_study: dict = field(default_factory=lambda: {"epochs": 1, "every": 15, "eval_samples": 120, "heatmap_samples": 3})
    #: Paper 003's Mixer on the cell model, the three attribution settings and the control, sized for 2 cores.
    mixer: dict = field(default_factory=lambda: {"seeds": 2, "n_steps": 6, "train_samples": 200, "epochs": 5,
                                                 "patience": 3, "lr": 0.01})
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did: each stage's result, the figures and report it drew, and ``seconds``,
    the wall time of each step (``data``, ``training`` (with its figure), ``evaluation``, ``no_truth``,
    ``ax``, ``gax``, ``lrp``, ``mixer``, ``report``) and the ``total``."""

    run_dir: Path
    data_dir: Path
    plan: DemoPlan
    training: TrainResult
    evaluate: EvaluateResult
    no_truth: NoTruthResult
    ax: AxResult
    gax: GaxStageResult
    lrp_filters: LrpFiltersResult
    lrp_study: LrpStudyResult
    mixer: MixerResult
    training_figures: list[Path]
    report: Path | None
    seconds: dict[str, float]


def demo_plan(*, full: bool = False, seed: int = 0) -> DemoPlan:
    """The quick plan (a few minutes on 2 cores) or, with ``full``, the paper's split sizes and 5 branches."""
    if full:
        return DemoPlan(size=128, shards={"train": 32, "val": 8, "test": 8}, shard_size=200,
                        train=TrainConfig(seed=seed, branches=5), ax_methods="all", gax_images=100, no_truth_methods="all",
                        no_truth_size=(None, None, None),
                        lrp_study={"epochs": 3, "every": 50, "eval_samples": 240, "heatmap_samples": 4},
                        mixer={"seeds": 3, "n_steps": 32, "train_samples": None, "epochs": 30, "patience": 5})
    # One test and two validation shards of 100 cells: evaluate, AX, the LRP filter study and the Mixer's
    # test scale with them (the quick plan took 343 s with two and four; issue 23 asks for 240 s).
    return DemoPlan(size=128, shards={"train": 24, "val": 2, "test": 1}, shard_size=100,
                    train=TrainConfig(seed=seed, epochs=8, branches=2))


def run_demo(
    run_dir: str | os.PathLike,
    *,
    full: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
    stage_figures: Callable[[Path, str], list[Path]] | None = None,
    report: Callable[..., Path] | None = None,
) -> DemoResult:
    """Run the whole demo into ``run_dir``: data -> train -> training figure -> evaluate -> no-truth scores (the fast
    set on two methods and Random) -> AX -> GAX -> LRP filter
    study on the cells and a short LRP study on the digits (paper 004) -> the Mixer (paper 003) -> report.

    Every step resumes: a second call with the same arguments skips the finished work. ``run/``
    sits left of ``report/`` in the pipeline, so the drawing steps come in as callables: pass
    ``heatlab.report.stage_figures`` (called as ``stage_figures(run_dir, "train")``, the report's training
    figures) and ``heatlab.report.build_report`` (called as ``report(run_dir, progress=progress)``), as
    ``heatlab demo`` does; ``None`` skips that step.

    Returns a :class:`DemoResult`.
    """
    from heatlab.data.shards import write_cells
    from heatlab.run.ax import ax_run
    from heatlab.run.evaluate import evaluate_run
    from heatlab.run.gax import gax_run
    from heatlab.run.lrp_filters import lrp_filters_run
    from heatlab.run.lrp_study import lrp_study
    from heatlab.improve.mixer import MixerConfig
    from heatlab.run.mixer import mixer_run
    from heatlab.run.no_truth import no_truth_run
    from heatlab.run.rundir import RunDir
    from heatlab.run.training import train_run

    plan = demo_plan(full=full, seed=seed)
    run_dir = Path(run_dir)
    data_dir = RunDir(run_dir).data_dir
    seconds: dict[str, float] = {}
    t0 = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    write_cells(data_dir, size=plan.size, seed=seed, shards=plan.shards, shard_size=plan.shard_size, progress=progress)
    lap("data")
    training = train_run(data_dir, run_dir, plan.train, progress=progress)
    figures = stage_figures(run_dir, "train") if stage_figures else []
    lap("training")
    evaluation = evaluate_run(run_dir, methods=plan.methods, split=plan.split, progress=progress, metric_set="none")
    lap("evaluation")
    n_branches, n_shards, n_samples = plan.no_truth_size
    branches = None if n_branches is None else RunDir(run_dir).require_branches()[:n_branches]
    no_truth = no_truth_run(run_dir, methods=plan.no_truth_methods, metrics=plan.no_truth_metrics, split=plan.split,
                            progress=progress, branches=branches, shards=n_shards, samples=n_samples)
    lap("no_truth")
    ax = ax_run(run_dir, methods=plan.ax_methods, split=plan.split, progress=progress)
    lap("ax")
    gax = gax_run(run_dir, split=plan.split, first_n_correct=plan.gax_images, progress=progress)
    lap("gax")
    filters = lrp_filters_run(run_dir, filters=plan.lrp_filters, split=plan.split, progress=progress)
    study = lrp_study("digits", RunDir(run_dir).study.path, seed=seed, progress=progress, **plan.lrp_study)
    lap("lrp")
    m = dict(plan.mixer)
    mixer = mixer_run(run_dir, seeds=m.pop("seeds"), n_steps=m.pop("n_steps"), train_samples=m.pop("train_samples"),
                      config=MixerConfig(**m, seed=seed), progress=progress)
    lap("mixer")
    page = report(run_dir, progress=progress) if report else None
    lap("report")
    seconds["total"] = time.perf_counter() - t0
    return DemoResult(run_dir=run_dir, data_dir=data_dir, plan=plan, training=training, evaluate=evaluation,
                      no_truth=no_truth, ax=ax, gax=gax, lrp_filters=filters, lrp_study=study, mixer=mixer,
                      training_figures=figures, report=page, seconds=seconds)
