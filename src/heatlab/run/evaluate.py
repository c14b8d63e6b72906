"""`heatlab evaluate`: explain every sample of a split with every method for every branch, score it.

A stage on :mod:`heatlab.run.runner`; one unit is one (branch, method, shard). What is scored
depends on the data's ground truth (``Split.truth_kind``):

- the three levels 0/0.4/0.9 (the cells, or level masks): the five-band score (paper 002) and
  the localisation metrics;
- a binary mask: the localisation metrics only;
- none (tables, folders without masks): no truth score; the heatmaps are still computed and stored.

Wherever there is truth or not, :func:`evaluate_run` then runs the no-truth metrics (the fast set by
default, ``metric_set=``) on the methods plus the control ``Random``: :mod:`heatlab.run.no_truth`.
When none of them re-explains (the fast set), evaluate's units score them on the attributions they
computed and write the no-truth stage's unit too (``feed``), so the methods are not explained twice.

Besides, every metric of the registry (``metrics=``, default
:func:`heatlab.score.metrics.metric_registry`: the built-ins and the ``heatlab.metrics`` entry points)
that applies is a column of ``tables/localisation.parquet`` (the per-sample scores table), a metric that
needs the model included (it gets the branch model, the shard, the attributions and an ``explain``
that reruns the unit's method); ``evaluate.json`` records each column's entry (direction, family,
citation) under ``metrics`` for the report.

Outputs (schemas in the README): ``tables/five_band.parquet``, ``tables/roc.parquet``,
``tables/localisation.parquet`` (each only when it applies), ``tables/metric_agreement.parquet``
(:func:`heatlab.run.agreement.write_metric_agreement`, when a no-truth table exists too), the stored heatmaps
``<run>/heatmaps/<split>/<branch>/<method>.safetensors`` (:data:`HEATMAP_FORMAT`), and
``evaluate.json`` with what was done and, in ``skipped``, one sentence per thing left out.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from heatlab.data.split import feature_names
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import METHODS, attribute, cam_layer, cam_layer_rule
from heatlab.explain.methods.selection import keep_methods, needs_image, parse_methods
from heatlab.explain.postprocess import channel_adjust, normalize_max_abs
from heatlab.explain.presets import Preset, get_preset
from heatlab.files import atomic_path, write_json
from heatlab.progress import Progress
from heatlab.run.agreement import write_metric_agreement
from heatlab.run.no_truth import CONTROL, NoTruth, check_finite
from heatlab.run.results import EvaluateResult
from heatlab.run.rundir import RunDir
from heatlab.run.runner import PARQUET, TENSORS, ShardUnit, Stage, Work, earlier_methods, run_stage
from heatlab.score.five_band import METRICS, five_band
from heatlab.registry import Registry
from heatlab.score.metrics import SCORES_TABLE, Metric, applies, metric_registry, per_sample_scores
from heatlab.tables import TABLES

#: Five-band variants: (clip bounds, clamp order, threshold schedule). ``clamp`` clips after
#: normalising (paper 002's text), ``clamp_original`` clips the raw attribution (its code).
VARIANTS = {
    "standard": (None, "paper", "standard"),
    "clamp": ((-0.1, 0.1), "paper", "clamp"),
    "clamp_original": ((-0.1, 0.1), "original", "clamp"),
}
KINDS = ("five_band", "roc", "localisation")
ID_COLUMNS = ["shard", "index", "label", "prediction", "correct"]
#: What a heatmap file holds (see the module docstring of heatlab.run.rundir for where).
HEATMAP_FORMAT = (
    "attributions float16 n×(input shape), each sample divided by its max |value| (scale float32 n); "
    "inputs float16 n×(input shape); labels, predictions, shard, index int64 n; truth float16 n×H×W if the "
    "data has ground truth. Images: per shard the first correct and first wrong sample of each class; tables: all."
)


def cam_layer_of(run: RunDir, branch: str, methods: Sequence[str], *, layer: str | None = None,
                 first: bool = True) -> str | None:
    """The layer the CAM methods among ``methods`` use on ``branch``'s model (None without one):
    ``layer`` (checked against the model even without a CAM method), else its first ``nn.Conv2d``
    (``first``, the paper presets) or its last."""
    if layer is None and not any(needs_image(m) for m in methods):
        return None
    name = cam_layer(run.load_model(branch), layer, first=first)
    return name if any(needs_image(m) for m in methods) else None


def cam_record(name: str | None, layer: str | None, first: bool) -> dict:
    """The summary keys naming the CAM layer and how it was chosen ({} without a CAM method)."""
    return {"cam_layer": name, "cam_layer_rule": cam_layer_rule(layer, first=first)} if name else {}


def _ids(labels: torch.Tensor, predictions: torch.Tensor, shard: int) -> dict[str, Any]:
    return {"shard": shard, "index": np.arange(len(labels)), "label": labels.numpy(),
            "prediction": predictions.numpy(), "correct": (labels == predictions).numpy()}


def score_attributions(attr, labels, truth, truth_kind: str | None, *, predictions, shard: int = 0,
                       metrics: Registry[Metric] | None = None, model=None, inputs=None, explain=None, seed: int = 0):
    """(five_band, roc, localisation) frames of one shard's attributions ``N×C×H×W``; None where not applicable.

    ``metrics``: the registry whose scores-table entries fill the localisation frame (default the
    built-ins); with ``model`` (and ``inputs``, ``explain``) its metrics that need the model too.
    """
    base = _ids(labels, predictions, shard)
    # The clamp variants feed only the five-band score; the localisation metrics use the standard one.
    wanted = VARIANTS if truth_kind == "levels" else {"standard": VARIANTS["standard"]}
    adjusted = {variant: channel_adjust(attr, clamp=clip, clamp_order=order) for variant, (clip, order, _) in wanted.items()}
    five = roc = None
    if truth_kind == "levels":
        rows, rocs = [], []
        for variant, h in adjusted.items():
            res = five_band(h, truth, variant=VARIANTS[variant][2])
            frame = {"variant": variant, **base}
            for m in METRICS:
                frame[f"{m}_avg"] = res.avg[m].double().numpy()
                frame[f"{m}_best"] = res.best[m].double().numpy()
            rows.append(pd.DataFrame(frame))
            t = res.thresholds.double().numpy()
            roc_frame = {"variant": variant, "threshold": np.arange(len(t)), "t1": t[:, 0], "t2": t[:, 1], "t3": t[:, 2], "t4": t[:, 3]}
            for m in METRICS:  # sums over samples; means are taken after all shards are joined
                roc_frame[f"{m}_sum"] = getattr(res, m).double().sum(0).numpy()
            roc_frame["n"] = len(labels)
            rocs.append(pd.DataFrame(roc_frame))
        five, roc = pd.concat(rows, ignore_index=True), pd.concat(rocs, ignore_index=True)
    scores = per_sample_scores(adjusted["standard"], truth, truth_kind, metrics=metrics, model=model, x=inputs,
                               y=predictions, a=attr, explain=explain, seed=seed)
    loc = {k: v.double().cpu().numpy() for k, v in scores.items()}
    return five, roc, (pd.DataFrame({**base, **loc}) if loc or truth_kind is not None else None)


def gallery_rows(labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """Indices (ascending) of the first correct and the first wrong sample of each class in a shard."""
    picked = set()
    correct = labels == predictions
    for c in labels.unique().tolist():
        for ok in (True, False):
            hits = ((labels == c) & (correct == ok)).nonzero().flatten()
            if len(hits):
                picked.add(int(hits[0]))
    return torch.tensor(sorted(picked), dtype=torch.int64)


def heatmap_piece(attr, shard_data: dict, predictions, shard: int, rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The stored-heatmap tensors of one shard (all samples when ``rows`` is None)."""
    idx = torch.arange(len(predictions)) if rows is None else rows
    a = attr[idx].float()
    scale = a.reshape(len(idx), -1).abs().amax(1) if len(idx) else torch.zeros(0)
    out = {
        "attributions": normalize_max_abs(a).half() if len(idx) else a.half(),
        "scale": scale.float(),
        "inputs": shard_data["images"][idx].half(),
        "labels": shard_data["labels"][idx].long(),
        "predictions": predictions[idx].long(),
        "shard": torch.full((len(idx),), shard, dtype=torch.int64),
        "index": idx.long(),
    }
    if "truth" in shard_data:
        out["truth"] = shard_data["truth"][idx].half()
    return out


class Evaluate(Stage):
    """The evaluate stage: units (branch, method, shard) of one split."""

    name = "evaluate"

    def __init__(self, run: RunDir, *, methods="all", split: str = "test", batch_size: int = 25, device: str = "cpu",
                 preset: str | Preset | None = None, replace: bool = False, metrics: Registry[Metric] | None = None,
                 layer: str | None = None):
        super().__init__(run, device=device, batch_size=batch_size)
        self.preset = get_preset(preset, self.name)
        self.layer = layer
        self.seed, self.spec = run.seed(), run.data_spec()
        self.branches = run.require_branches()
        self.split = split
        self.data = run.open_data(split)
        self.input_kind = self.data.input_kind
        self.truth_kind = getattr(self.data, "truth_kind", None)
        self.methods = parse_methods(methods, self.input_kind)
        if not self.methods:
            raise HeatlabError("No attribution method applies to this data; choose methods with methods=....")
        self.skipped = self._skipped(methods)
        self.replace = replace
        self.cam_layer = cam_layer_of(run, self.branches[0], self.methods, layer=layer, first=self.preset.first_conv)
        self.metrics = metric_registry() if metrics is None else metrics
        #: The entries of the per-sample scores table that apply to this data (with the model).
        self.scored = {m.name: m for m in self.metrics.values()
                       if m.table == SCORES_TABLE and applies(m, self.truth_kind, model=True)}
        kinds = {"heatmaps": TENSORS}
        if self.truth_kind == "levels":
            kinds.update(five_band=PARQUET, roc=PARQUET)
        if self.scored:
            kinds["localisation"] = PARQUET
        self.kinds = kinds
        #: The no-truth stage whose units this stage's units score and write (None: none).
        self.feed: NoTruth | None = None

    def _skipped(self, asked) -> list[str]:
        out = []
        if self.truth_kind is None:
            out.append(f"The five-band score and the localisation metrics need ground truth, which '{self.spec}' does "
                       "not have; the heatmaps were stored without a truth score (the no-truth metrics need none).")
        elif self.truth_kind == "mask":
            out.append(f"The five-band score needs ground truth with the levels 0, 0.4 and 0.9, but the masks of "
                       f"'{self.spec}' are binary; only the localisation metrics were computed.")
        if asked == "all" and self.input_kind != "image":
            left = [m for m in METHODS if needs_image(m)]
            if left:
                out.append(f"{', '.join(left)} need image inputs; they were left out for this table data.")
        return out

    def begin(self) -> None:
        """Keep the methods of the last complete evaluation of this split and preset (read under the lock)."""
        if not self.replace:
            kept = earlier_methods(self.run, self.name, {"split": self.split, "preset": self.preset.name})
            merged = keep_methods(self.methods, kept, self.input_kind)
            if merged != self.methods:
                self.methods = merged
                self.cam_layer = cam_layer_of(self.run, self.branches[0], merged, layer=self.layer,
                                              first=self.preset.first_conv)
        if self.feed is not None:
            self.feed.layer = self.cam_layer  # what the fed units were explained with

    def units(self) -> list[ShardUnit]:
        return [ShardUnit(self.split, b, m, k) for b in self.branches for m in self.methods for k in range(self.data.num_shards)]

    def settings(self, unit: ShardUnit) -> dict:
        layer = {"layer": self.cam_layer} if needs_image(unit.method) else {}
        return {"options": self.preset.kwargs(unit.method), "variants": list(VARIANTS), "metrics": list(self.scored),
                **layer}

    def run_unit(self, work: Work, unit: ShardUnit) -> dict[str, Any]:
        model = work.model(unit.branch)
        shard = work.shard(unit.split, unit.shard)
        preds = work.predictions(unit.split, unit.branch, unit.shard)
        attr = attribute(model, shard["images"], unit.method, target=preds, seed=self.seed, layer=self.cam_layer,
                         batch_size=self.batch_size, **self.preset.kwargs(unit.method)).detach().cpu()
        check_finite(attr, unit)
        rows = gallery_rows(shard["labels"], preds) if self.input_kind == "image" else None
        pieces: dict[str, Any] = {"heatmaps": heatmap_piece(attr, shard, preds, unit.shard, rows)}
        if self.scored:
            explain = partial(_explain, method=unit.method, seed=self.seed, batch_size=self.batch_size,
                              options=self.preset.kwargs(unit.method))
            five, roc, loc = score_attributions(attr, shard["labels"], shard.get("truth"), self.truth_kind,
                                                predictions=preds, shard=unit.shard, metrics=self.metrics, model=model,
                                                inputs=shard["images"], explain=explain, seed=self.seed)
            pieces.update({k: v for k, v in (("five_band", five), ("roc", roc), ("localisation", loc)) if v is not None})
        if self._feeds(unit):
            pieces["no_truth_feed"] = self.feed.score(model, shard["images"], preds, attr, unit)
        return pieces

    def _feeds(self, unit: ShardUnit) -> bool:
        f = self.feed
        return f is not None and f.samples is None and unit.branch in f.branches and not f.is_done(unit)

    def write(self, unit: ShardUnit, pieces: dict[str, Any]) -> None:
        """The unit's pieces; first the no-truth unit it scored (so a kill between leaves both to redo)."""
        pieces = dict(pieces)
        fed = pieces.pop("no_truth_feed", None)
        if fed is not None:
            self.feed.write(unit, fed)
        super().write(unit, pieces)

    def join(self, units: Sequence[ShardUnit], parts: dict[str, list[Any]]) -> EvaluateResult:
        tables = {}
        tagged = {k: [df.assign(branch=u.branch, method=u.method) for u, df in zip(units, parts[k])]
                  for k in KINDS if k in parts}
        if "five_band" in tagged:
            tables["five_band"] = _join_five_band(tagged["five_band"])
            tables["roc"] = _join_roc(tagged["roc"])
        if "localisation" in tagged:
            loc = pd.concat(tagged["localisation"], ignore_index=True)
            first = ["branch", "method", *ID_COLUMNS]
            tables["localisation"] = loc[first + [c for c in loc.columns if c not in first]]
        paths = {}
        for name, df in tables.items():
            paths[name] = self.run.table(name)
            TABLES[name].write(paths[name], df)
        self._write_heatmaps(units, parts["heatmaps"])
        write_metric_agreement(self.run)  # the no-truth metrics against this truth (when both tables exist)
        summary = {
            "split": self.split, "methods": self.methods, "branches": self.branches, "samples": len(self.data),
            "input_kind": self.input_kind, "truth_kind": self.truth_kind, "skipped": self.skipped,
            "tables": sorted(tables), "feature_names": feature_names(self.data),
            "attribution": self.preset.record(self.methods, self.cam_layer),
            **cam_record(self.cam_layer, self.layer, self.preset.first_conv), "complete": True,
            "metrics": {**_five_band_entries(self.metrics, "five_band" in tables),
                        **{name: m.record() for name, m in self.scored.items()}},
        }
        self.run.record_attribution(self.name, summary["attribution"])
        write_json(self.run.summary_path(self.name), summary)
        return EvaluateResult.from_record(summary, paths={k: str(v) for k, v in paths.items()})

    def _write_heatmaps(self, units: Sequence[ShardUnit], pieces: list[dict]) -> None:
        from safetensors.torch import save_file

        groups: dict[tuple[str, str], list[dict]] = {}
        for u, piece in zip(units, pieces):
            groups.setdefault((u.branch, u.method), []).append(piece)
        for (branch, method), group in groups.items():
            tensors = {k: torch.cat([p[k] for p in group]).contiguous() for k in group[0]}
            meta = {"split": self.split, "branch": branch, "method": method, "input_kind": self.input_kind,
                    "truth_kind": self.truth_kind, "selection": "gallery" if self.input_kind == "image" else "all"}
            with atomic_path(self.run.heatmaps(self.split, branch, method)) as tmp:
                save_file(tensors, str(tmp), metadata={"heatlab": json.dumps(meta, sort_keys=True)})


def _explain(model, x, y, *, method: str, seed: int, batch_size: int, options: dict) -> torch.Tensor:
    """The attributions of ``x`` for classes ``y`` with the unit's method and settings (a model metric's ``explain``)."""
    return attribute(model, x, method, target=y, seed=seed, batch_size=batch_size, **options).detach()


def _five_band_entries(metrics: Registry[Metric], written: bool) -> dict[str, dict]:
    """The registry entries of the five-band table's columns, when the table was written."""
    return {name: m.record() for name, m in metrics.items() if written and m.table == "five_band"}


def _join_five_band(frames: list[pd.DataFrame]) -> pd.DataFrame:
    five = pd.concat(frames, ignore_index=True)
    five = five[["branch", "method", "variant", *ID_COLUMNS] + [f"{m}_{s}" for m in METRICS for s in ("avg", "best")]]
    return five.sort_values(["branch", "method", "variant", "shard", "index"], kind="stable").reset_index(drop=True)


def _join_roc(frames: list[pd.DataFrame]) -> pd.DataFrame:
    roc = pd.concat(frames, ignore_index=True)
    keys = ["branch", "method", "variant", "threshold"]
    roc = roc.groupby(keys, sort=True).agg(
        **{c: (c, "first") for c in ("t1", "t2", "t3", "t4")},
        **{f"{m}_sum": (f"{m}_sum", "sum") for m in METRICS},
        n=("n", "sum"),
    ).reset_index()
    for m in METRICS:
        roc[m] = roc.pop(f"{m}_sum") / roc["n"]
    return roc


def evaluate_run(run_dir, *, methods="all", split: str = "test", batch_size: int = 25, device: str = "cpu",
                 preset: str | Preset | None = None, replace: bool = False, progress: Progress | None = None,
                 backend: Any = None, trust_model_code: bool = False, metrics: Registry[Metric] | None = None,
                 layer: str | None = None, metric_set: str | Sequence[str] = "default", patch_size: int | None = None,
                 perturb_baseline: str | None = None) -> EvaluateResult:
    """Evaluate every (branch, method, shard) of ``split``; write the tables, heatmaps and evaluate.json,
    then the no-truth scores of the methods plus ``Random`` (:mod:`heatlab.run.no_truth`).

    ``preset``: the attribution settings (:mod:`heatlab.explain.presets`; default ``"paper002"``).
    ``layer``: the CAM methods' layer (a module name); default the preset's (the first convolution
    for the paper presets, else the last); evaluate.json names the one used.
    The tables keep the methods of an earlier evaluation of the same split and preset (so
    ``methods="Saliency"`` adds Saliency); ``replace=True`` writes them with ``methods`` alone.
    ``backend``: where the units run (:func:`heatlab.run.runner.make_backend`; default this process).
    ``trust_model_code``: rebuild branch models whose model.json names code from outside heatlab
    (``file.py:fn``, ``module:fn``); without it such a run is refused in one sentence.
    ``metrics``: the metric registry to score with (default the built-ins and the ``heatlab.metrics``
    entry points); ``METRICS.register(Metric(...))`` adds one for this call only.
    ``metric_set``: the no-truth metrics (:func:`heatlab.score.no_truth.select_metrics`: names, families,
    ``"all"``, ``"default"`` (the fast set, on every dataset) or ``"none"``); ``patch_size`` and ``perturb_baseline``
    override the metrics' own (checked against the data before anything runs). The summary holds the
    no-truth stage's result as ``no_truth`` (None when no no-truth metric ran).
    """
    run = RunDir(run_dir, trust_model_code=trust_model_code)
    stage = Evaluate(run, methods=methods, split=split, batch_size=batch_size, device=device, preset=preset,
                     replace=replace, metrics=metrics, layer=layer)
    # built (and its selection checked) before anything is written
    no_truth = NoTruth(run, methods=stage.methods, metrics=metric_set, split=split, batch_size=batch_size,
                       device=device, preset=preset, patch_size=patch_size, perturb_baseline=perturb_baseline,
                       registry=metrics, layer=stage.cam_layer)
    if no_truth.selection.metrics and not no_truth.reexplains():
        stage.feed = no_truth
    result = run_stage(stage, progress=progress, backend=backend)
    if no_truth.selection.metrics:
        no_truth.methods = [*(m for m in result.methods if m != CONTROL), CONTROL]
        no_truth.layer = stage.cam_layer
        result = dataclasses.replace(result, no_truth=run_stage(no_truth, progress=progress, backend=backend))
    return result
