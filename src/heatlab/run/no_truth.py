"""The no-truth scores of `heatlab evaluate`: metrics that need the model, not a ground truth, on any data.

A stage on :mod:`heatlab.run.runner`, like evaluate's: one unit is one (branch, method, shard); it
explains the shard with the method (the same attribution settings as evaluate) and scores the
attributions with the selected no-truth metrics (:mod:`heatlab.score.no_truth`: ``--metrics``,
default the fast set). Run by :func:`heatlab.run.evaluate.evaluate_run`, evaluate's own units score
the metrics that need no re-explanation on the attributions they computed and write this stage's
unit for them (:meth:`NoTruth.score`), so the default set explains nothing again. The control method ``Random`` (seeded uniform noise) is always among the
methods: the floor a real method must beat. A unit's marker holds the metric set and every
metric's options, so asking for other metrics redoes the units and nothing else.

Output: ``tables/no_truth.parquet`` (:meth:`RunDir.no_truth_table`), one row per (branch, method,
metric, sample) with the columns ``branch, method, metric, sample, value`` (``sample``: the index
in the split; float64 ``value``, the metric's direction in ``no_truth.json``), and
``<run>/no_truth.json``: methods, metrics with their entries (direction, family, citation) and
options, skipped metrics, and per metric the best method by mean with Random's mean.
``tables/no_truth_curves.parquet`` (:meth:`RunDir.no_truth_curves`) holds the curves of the
curve metrics that ran (deletion, insertion: :data:`heatlab.score.no_truth.CURVES`), one row per
(branch, method, metric, sample, step) with the columns ``branch, method, metric, sample, step,
fraction, value`` (``fraction`` of the pixels or features removed or inserted, ``value`` the target
score), from the same units and with the same sample index as ``no_truth.parquet``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from heatlab.data.split import input_shape
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.explain.methods import CONTROL_METHODS
from heatlab.explain.methods.selection import needs_image, parse_methods
from heatlab.explain.presets import Preset, get_preset
from heatlab.files import write_json
from heatlab.registry import Registry
from heatlab.run.results import NoTruthResult
from heatlab.run.rundir import RunDir
from heatlab.run.agreement import write_metric_agreement
from heatlab.run.runner import PARQUET, ShardUnit, Stage, Work
from heatlab.score.metrics import Metric, metric_registry
from heatlab.score.no_truth import Selection, no_truth_scores, select_metrics
from heatlab.tables import TABLES

CONTROL = CONTROL_METHODS[0]  # "Random"
COLUMNS = ["branch", "method", "metric", "sample", "value"]
CURVE_COLUMNS = ["branch", "method", "metric", "sample", "step", "fraction", "value"]


def explain_with(model, x, y, *, method: str, seed: int, batch_size: int, options: dict) -> torch.Tensor:
    """The attributions of ``x`` for classes ``y`` with a unit's method and settings (a metric's ``explain``)."""
    return attribute(model, x, method, target=y, seed=seed, batch_size=batch_size, **options).detach()


def check_finite(a: torch.Tensor, unit: ShardUnit) -> None:
    """One sentence for NaN or infinite attributions of ``unit`` (no metric can score them)."""
    if not bool(torch.isfinite(a).all()):
        raise HeatlabError(f"{unit.method} gave NaN or infinite heatmaps on {unit.branch}, shard {unit.shard}, so "
                           "no metric can score them; check the model's weights or leave the method out.")


class NoTruth(Stage):
    """The no-truth stage: units (branch, method, shard) of one split, methods plus Random."""

    name = "no_truth"
    kinds = {"no_truth": PARQUET, "no_truth_curves": PARQUET}

    def __init__(self, run: RunDir, *, methods="all", metrics: str | Sequence[str] = "default", split: str = "test",
                 batch_size: int = 25, device: str = "cpu", preset: str | Preset | None = None,
                 patch_size: int | None = None, perturb_baseline: str | None = None,
                 registry: Registry[Metric] | None = None, branches: Sequence[str] | None = None,
                 shards: int | None = None, samples: int | None = None, layer: str | None = None):
        super().__init__(run, device=device, batch_size=batch_size)
        #: The CAM methods' layer (None: the method's default); evaluate sets the one it explained with.
        self.layer = layer
        for name, v in (("shards", shards), ("samples", samples)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise HeatlabError(f"{name}={v!r} must be a whole number >= 1 (or None for all).")
        self.preset = get_preset(preset, "evaluate")
        self.seed = run.seed()
        self.branches = run.require_branches()
        if branches is not None:
            unknown = [b for b in branches if b not in self.branches]
            if unknown or not branches:
                raise HeatlabError(f"Unknown branch {', '.join(unknown) or '(none)'}; choose from "
                                   f"{', '.join(self.branches)}.")
            self.branches = list(branches)
        self.samples = samples
        self.split = split
        self.data = run.open_data(split)
        kind = self.data.input_kind
        self.selection: Selection = select_metrics(
            metrics, metric_registry() if registry is None else registry, input_kind=kind,
            truth_kind=getattr(self.data, "truth_kind", None), input_shape=input_shape(self.data),
            patch_size=patch_size, perturb_baseline=perturb_baseline,
            model=lambda: run.load_model(self.branches[0]).eval())
        asked = [m for m in parse_methods(methods, kind) if m != CONTROL]
        self.methods = [*asked, CONTROL]
        self.shards = self.data.num_shards if shards is None else min(shards, self.data.num_shards)

    def units(self) -> list[ShardUnit]:
        return [ShardUnit(self.split, b, m, k) for b in self.branches for m in self.methods for k in range(self.shards)]

    def settings(self, unit: ShardUnit) -> dict:
        layer = {"layer": self.layer} if needs_image(unit.method) else {}
        return {"options": self.preset.kwargs(unit.method), "metrics": self.selection.options(), "samples": self.samples,
                **layer}

    def explainer(self, method: str):
        """``explain(model, x, y)`` with ``method`` and this stage's settings (what a unit explains with)."""
        layer = {"layer": self.layer} if needs_image(method) and self.layer is not None else {}
        return partial(explain_with, method=method, seed=self.seed, batch_size=self.batch_size,
                       options={**self.preset.kwargs(method), **layer})

    def reexplains(self) -> bool:
        """Whether a selected metric re-explains (then evaluate cannot score for this stage)."""
        return any("explain" in m.needs for m in self.selection.metrics)

    def run_unit(self, work: Work, unit: ShardUnit) -> dict[str, Any]:
        model = work.model(unit.branch)
        shard = work.shard(unit.split, unit.shard)
        keep = slice(None, self.samples)  # the first ``samples`` of the shard (all when None)
        preds = work.predictions(unit.split, unit.branch, unit.shard)[keep]
        x = shard["images"][keep].to(self.device)
        a = self.explainer(unit.method)(model, x, preds.to(self.device))
        check_finite(a, unit)
        return self.score(model, x, preds, a, unit)

    def score(self, model, x: torch.Tensor, preds: torch.Tensor, a: torch.Tensor, unit: ShardUnit) -> dict[str, Any]:
        """A unit's pieces from its attributions ``a`` of ``x`` (N×...) for the classes ``preds`` (N)."""
        y = preds.to(self.device)
        curves: dict = {}
        scores = no_truth_scores(model, x.to(self.device), y, a.to(self.device), self.selection.metrics,
                                 explain=self.explainer(unit.method), seed=self.seed, curves=curves)
        sample = torch.arange(len(preds))  # within the shard; join makes it the index in the split
        frames = [pd.DataFrame({"metric": name, "sample": sample.numpy(), "value": v.numpy()})
                  for name, v in scores.items()]
        return {"no_truth": _concat(frames, {"metric": str, "sample": "int64", "value": "float64"}),
                "no_truth_curves": _concat([_curve_frame(name, c, f) for name, (c, f) in curves.items()],
                                           {"metric": str, "sample": "int64", "step": "int64", "fraction": "float64",
                                            "value": "float64"})}

    def join(self, units: Sequence[ShardUnit], parts: dict[str, list[Any]]) -> NoTruthResult:
        sizes: dict[int, int] = {}
        for u, df in zip(units, parts["no_truth"]):
            sizes[u.shard] = max(sizes.get(u.shard, 0), int(df["sample"].max()) + 1 if len(df) else 0)
        starts = dict(zip(sorted(sizes), [0, *np.cumsum([sizes[k] for k in sorted(sizes)]).tolist()]))
        table = self._joined(units, parts["no_truth"], starts, COLUMNS, ["sample"])
        curves = self._joined(units, parts["no_truth_curves"], starts, CURVE_COLUMNS, ["sample", "step"])
        path = self.run.no_truth_table
        TABLES["no_truth_curves"].write(self.run.no_truth_curves, curves)
        TABLES["no_truth"].write(path, table)
        write_metric_agreement(self.run)  # these metrics against the run's ground truth (when it has one)
        summary = {
            "split": self.split, "methods": self.methods, "control": CONTROL, "branches": self.branches,
            "samples": int(table["sample"].nunique()), "skipped": list(self.selection.skipped),
            "metrics": {m.name: {**m.record(), "options": dict(m.fn.options)} for m in self.selection.metrics},
            "best": best_methods(table, self.selection.metrics), "complete": True,
        }
        write_json(self.run.summary_path(self.name), summary)
        return NoTruthResult.from_record(summary, table=str(path))


    def _joined(self, units, frames, starts, columns, order) -> pd.DataFrame:
        """The units' pieces as one table: ``sample`` made the index in the split, sorted by branch,
        method and metric in the stage's order, then ``order``."""
        frames = [df.assign(branch=u.branch, method=u.method, sample=df["sample"] + starts[u.shard])
                  for u, df in zip(units, frames)]
        table = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
        rank = {"branch": self.branches, "method": self.methods, "metric": self.selection.names}
        rank = {col: {v: i for i, v in enumerate(values)} for col, values in rank.items()}
        return table.sort_values(["branch", "method", "metric", *order], kind="stable",
                                 key=lambda c: c.map(rank[c.name]) if c.name in rank else c).reset_index(drop=True)


def _concat(frames: list[pd.DataFrame], dtypes: dict) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({k: pd.Series(dtype=v)
                                                                             for k, v in dtypes.items()})


def _curve_frame(metric: str, curve: torch.Tensor, fractions: torch.Tensor) -> pd.DataFrame:
    """Long rows (metric, sample, step, fraction, value) of N×K curves with K step fractions."""
    n, k = curve.shape
    return pd.DataFrame({"metric": metric, "sample": np.repeat(np.arange(n), k), "step": np.tile(np.arange(k), n),
                         "fraction": np.tile(fractions.numpy(), n), "value": curve.reshape(-1).numpy()})


def best_methods(table: pd.DataFrame, metrics: Sequence[Metric]) -> dict[str, dict]:
    """Per metric: the best method by mean over branches and samples (by the metric's direction; Random
    excluded), its mean, and Random's mean (the floor). Metrics without a direction name no best."""
    out = {}
    means = table.groupby(["metric", "method"])["value"].mean()
    for m in metrics:
        if m.name not in means.index.get_level_values(0):
            continue
        per = means[m.name]
        real = per.drop(CONTROL, errors="ignore").dropna()
        best = None
        if len(real) and m.higher_is_better is not None:
            best = str(real.idxmax() if m.higher_is_better else real.idxmin())
        out[m.name] = {"best": best, "best_mean": None if best is None else float(real[best]),
                       "random_mean": float(per[CONTROL]) if CONTROL in per.index else None,
                       "higher_is_better": m.higher_is_better}
    return out


def no_truth_run(run_dir, *, methods="all", metrics: str | Sequence[str] = "default", split: str = "test",
                 batch_size: int = 25, device: str = "cpu", preset: str | Preset | None = None,
                 patch_size: int | None = None, perturb_baseline: str | None = None, progress=None, backend: Any = None,
                 trust_model_code: bool = False, registry: Registry[Metric] | None = None,
                 branches: Sequence[str] | None = None, shards: int | None = None, samples: int | None = None) -> NoTruthResult:
    """Score ``methods`` plus Random with the no-truth ``metrics`` on every (branch, shard) of ``split``;
    write ``tables/no_truth.parquet`` and ``no_truth.json`` (see the module docstring). ``branches``,
    ``shards`` (the first n) and ``samples`` (the first n of each shard) make a smaller table (the demo's)."""
    from heatlab.run.runner import run_stage

    stage = NoTruth(RunDir(run_dir, trust_model_code=trust_model_code), methods=methods, metrics=metrics,
                    split=split, batch_size=batch_size, device=device, preset=preset, patch_size=patch_size,
                    perturb_baseline=perturb_baseline, registry=registry, branches=branches, shards=shards,
                    samples=samples)
    if not stage.selection.metrics:
        raise HeatlabError("No no-truth metric applies to this data; choose metrics such as deletion or sparseness.")
    return run_stage(stage, progress=progress, backend=backend)
