"""`heatlab lrp-filters`: do paper 004's relevance filters make LRP heatmaps better? (ground truth)

Paper 004 proposes filters between layers during LRP but has no ground truth to tell whether they
help. For data with ground truth this stage computes LRP heatmaps of every sample of a split for
each filter setting (``none`` plus the paper's eight by default), applied at ``filter_layers`` (default
the model's, :func:`heatlab.explain.methods.lrp.filter_layers`; stored as ``layers``), and scores them exactly as
``heatlab evaluate`` does: the five-band scores (levels truth) and the localisation metrics.

A stage on :mod:`heatlab.run.runner`; one unit per (branch, filter, shard), resumable. Outputs:
``tables/lrp_filters.parquet`` (five-band rows, with ``filter`` in the method column's place),
``tables/lrp_filters_localisation.parquet`` (with ``mae``: paper 004's eq. (5) against the truth,
the mean |adjusted heatmap − truth|), ``tables/lrp_filters_effects.parquet`` and ``lrp-filters.json``
with the per-(branch, filter) means and the effects.

**Effects** (:func:`effects`): every branch scores the same cells with and without each filter, so
per filter and metric (:data:`METRICS`) the effect is the *paired* difference filter − none, averaged
over cells × branches, with a 95% seeded bootstrap interval that resamples the cells jointly across
branches (and the branches too when there are >= 3; :func:`heatlab.score.intervals.paired_difference`).
The verdict per metric is better / worse / tied from that interval in the metric's direction (lower
FPR and MAE are better). n is cells × branches; the distinct cells are stated next to it.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.explain.filters import parse_filters
from heatlab.explain.methods.lrp import check_composite, check_maxpool, check_start, chosen_filter_layers, lrp_maxpool
from heatlab.explain.postprocess import channel_adjust
from heatlab.files import write_json
from heatlab.progress import Progress
from heatlab.run.evaluate import score_attributions
from heatlab.run.results import LrpFiltersResult
from heatlab.run.rundir import RunDir
from heatlab.run.runner import PARQUET, ShardUnit, Stage, Work, run_stage
from heatlab.score.intervals import LEVEL, difference_verdict, paired_difference
from heatlab.score.metrics import METRICS as REGISTERED
from heatlab.tables import TABLES

NONE = "none"
SCORES = ("precision_best", "recall_best", "fpr_avg", "accuracy_best")
#: (table, column, what it is, higher is better) of the effects, each where the run has the column;
#: the direction is the metric entry's (:data:`heatlab.score.metrics.METRICS`).
METRICS = tuple((table, column, what, REGISTERED[column].higher_is_better) for table, column, what in (
    ("five_band", "precision_best", "best precision"),
    ("five_band", "recall_best", "best recall"),
    ("five_band", "fpr_avg", "FPR (mean over thresholds)"),
    ("localisation", "mae", "MAE of eq. (5)"),
    ("localisation", "auc/feature", "AUC (feature mask)"),
    ("localisation", "auc/cell", "AUC (cell mask)"),
))
CELL_KEYS = ["shard", "index"]


class LRPFilters(Stage):
    """Units (split, branch, filter, shard); the filter name rides in the unit's method slot."""

    name = "lrp-filters"

    def __init__(self, run: RunDir, *, filters: Sequence[str] | str | None = None, split: str = "test",
                 composite: str = "epsilon_plus", start: str = "target", maxpool: str | None = None,
                 filter_layers: Sequence[str] | str | None = None, batch_size: int = 25, device: str = "cpu"):
        super().__init__(run, device=device, batch_size=batch_size)
        check_maxpool(maxpool)
        self.filters = [NONE, *parse_filters(filters)]
        self.split, self.composite, self.start = split, check_composite(composite), check_start(start)
        self.branches = run.require_branches()
        self.data = run.open_data(split)
        self.truth_kind = getattr(self.data, "truth_kind", None)
        if self.truth_kind is None or self.data.input_kind != "image":
            raise HeatlabError("The filter study scores heatmaps against ground truth, which this run's data does not "
                               "have; use image data with masks (cells, digits, folder:DIR with masks).")
        model = run.load_model(self.branches[0])
        self.layers, self.maxpool = chosen_filter_layers(model, filter_layers), lrp_maxpool(model, maxpool)
        self.kinds = {"localisation": PARQUET, **({"five_band": PARQUET} if self.truth_kind == "levels" else {})}

    def units(self) -> list[ShardUnit]:
        return [ShardUnit(self.split, b, f, k) for b in self.branches for f in self.filters
                for k in range(self.data.num_shards)]

    def settings(self, unit: ShardUnit) -> dict:
        return {"composite": self.composite, "start": self.start, "maxpool": self.maxpool, "layers": self.layers}

    def run_unit(self, work: Work, unit: ShardUnit) -> dict[str, Any]:
        model = work.model(unit.branch)
        shard = work.shard(unit.split, unit.shard)
        preds = work.predictions(unit.split, unit.branch, unit.shard)
        filters = None if unit.method == NONE else {layer: unit.method for layer in self.layers}
        attr = attribute(model, shard["images"], "LRP", target=preds, batch_size=self.batch_size,
                         composite=self.composite, start=self.start, maxpool=self.maxpool, filters=filters).detach().cpu()
        five, _, loc = score_attributions(attr, shard["labels"], shard["truth"], self.truth_kind,
                                          predictions=preds, shard=unit.shard)
        loc["mae"] = REGISTERED["mae"].fn(channel_adjust(attr), shard["truth"].float()).numpy()
        return {"localisation": loc, **({"five_band": five} if five is not None else {})}

    def join(self, units: Sequence[ShardUnit], parts: dict[str, list[Any]]) -> LrpFiltersResult:
        tables, paths = {}, {}
        for kind, name in (("five_band", "lrp_filters"), ("localisation", "lrp_filters_localisation")):
            if kind in parts:
                df = pd.concat([p.assign(branch=u.branch, filter=u.method) for u, p in zip(units, parts[kind])],
                               ignore_index=True)
                first = ["branch", "filter"] + (["variant"] if "variant" in df else [])
                tables[kind] = df[first + [c for c in df.columns if c not in first]]
                paths[name] = self.run.table(name)
                TABLES[name].write(paths[name], tables[kind])
        table = effects(tables, self.filters, self.branches, seed=self.run.seed())
        paths["lrp_filters_effects"] = self.run.table("lrp_filters_effects")
        TABLES["lrp_filters_effects"].write(paths["lrp_filters_effects"], table)
        summary = {"split": self.split, "composite": self.composite, "start": self.start, "maxpool": self.maxpool,
                   "layers": self.layers, "filters": self.filters, "branches": self.branches, "samples": len(self.data),
                   **verdict(tables), **effects_summary(table), "complete": True}
        write_json(self.run.summary_path(self.name), summary)
        return LrpFiltersResult.from_record(summary, paths={k: str(v) for k, v in paths.items()})


def verdict(tables: dict[str, pd.DataFrame]) -> dict:
    """Per-(branch, filter) means (standard five-band variant, or the localisation AUC, and the MAE); descriptive only."""
    loc = tables["localisation"]
    keys = ["branch", "filter"]
    if "five_band" in tables:
        rows, cols = _standard(tables["five_band"]), list(SCORES)
    else:
        rows, cols = loc, [c for c in ("auc/feature", "auc/cell") if c in loc]
    means = rows.groupby(keys, sort=False)[cols].mean()
    means["mae (lower is better)"] = loc.groupby(keys, sort=False)["mae"].mean().reindex(means.index)
    table = {f"{b}/{f}": {k: round(float(v), 5) for k, v in r.items()} for (b, f), r in means.iterrows()}
    return {"means": table}


def _standard(five: pd.DataFrame) -> pd.DataFrame:
    return five[five["variant"] == "standard"]


def _matrix(rows: pd.DataFrame, column: str, branches: Sequence[str], cells: pd.Index | None) -> pd.DataFrame:
    """``B×N`` scores of ``column`` (branches × cells (shard, index), in the order of ``cells`` when given;
    NaN where missing)."""
    wide = rows.set_index(["branch", *CELL_KEYS])[column].unstack(CELL_KEYS)
    return wide.reindex(index=list(branches), columns=cells)


def effects(tables: dict[str, pd.DataFrame], filters: Sequence[str], branches: Sequence[str], *,
            seed: int = 0) -> pd.DataFrame:
    """One row per (filter ≠ none, metric): the paired difference filter − none and its verdict.

    Columns: ``filter, metric, what, higher_is_better, mean_none, mean_filter, difference, low, high,
    level, interval, verdict, branches, cells, n`` (n = cells × branches paired differences; ``cells``
    the distinct cells). See :func:`heatlab.score.intervals.paired_difference`.
    """
    rows = []
    for name, column, what, higher in METRICS:
        if name not in tables or column not in tables[name]:
            continue
        table = _standard(tables[name]) if name == "five_band" else tables[name]
        by_filter = dict(tuple(table.groupby("filter", sort=False)))
        if NONE not in by_filter:
            continue
        base = _matrix(by_filter[NONE], column, branches, None)
        for f in filters:
            if f == NONE or f not in by_filter:
                continue
            treated = _matrix(by_filter[f], column, branches, base.columns)
            iv = paired_difference(treated.to_numpy(), base.to_numpy(), seed=seed)
            paired = ~(treated.isna() | base.isna()).any(axis=0)
            rows.append({"filter": f, "metric": column, "what": what, "higher_is_better": higher,
                         "mean_none": float(base.loc[:, paired].to_numpy().mean()) if paired.any() else float("nan"),
                         "mean_filter": float(treated.loc[:, paired].to_numpy().mean()) if paired.any() else float("nan"),
                         "difference": iv.estimate, "low": iv.low, "high": iv.high, "level": LEVEL,
                         "interval": iv.kind, "verdict": difference_verdict(iv, higher_is_better=higher),
                         "branches": iv.branches, "cells": iv.samples, "n": iv.branches * iv.samples})
    return pd.DataFrame(rows, columns=["filter", "metric", "what", "higher_is_better", "mean_none", "mean_filter",
                                       "difference", "low", "high", "level", "interval", "verdict", "branches",
                                       "cells", "n"])


def effects_summary(table: pd.DataFrame) -> dict:
    """``{"effects": {filter: {metric: {...}}}, "verdicts": {filter: {"better"|"worse"|"tied": [metrics]}}, "design"}``."""
    out, verdicts = {}, {}
    for f, g in table.groupby("filter", sort=False):
        out[str(f)] = {str(r.metric): {"difference": round(float(r.difference), 5), "low": round(float(r.low), 5),
                                       "high": round(float(r.high), 5), "verdict": r.verdict,
                                       "higher_is_better": bool(r.higher_is_better)} for r in g.itertuples()}
        verdicts[str(f)] = {v: [str(m) for m in g.loc[g["verdict"] == v, "metric"]] for v in ("better", "worse", "tied")}
    design = {}
    if len(table):
        first = table.iloc[0]
        design = {"cells": int(table["cells"].max()), "branches": int(first["branches"]),
                  "n": int(table["n"].max()), "interval": str(first["interval"]), "level": float(first["level"])}
    return {"effects": out, "verdicts": verdicts, "design": design}


def verdict_lines(summary: LrpFiltersResult) -> list[str]:
    """One line per filter for the CLI: the metrics it improves, worsens and ties, from the intervals."""
    lines = []
    for f, v in summary.verdicts.items():
        e = summary.effects[f]
        said = {kind: ", ".join(f"{m} {e[m]['difference']:+.3f} [{e[m]['low']:+.3f}, {e[m]['high']:+.3f}]"
                                for m in v[kind]) or "-" for kind in ("better", "worse")}
        lines.append(f"{f} vs none: better {said['better']}; worse {said['worse']}; tied {', '.join(v['tied']) or '-'}")
    return lines


def design_line(summary: LrpFiltersResult) -> str:
    """How many paired differences each effect rests on, and what the interval resamples."""
    d = summary.design
    if not d:
        return "no effects (no filter besides none)"
    return (f"effects: paired differences filter - none over {d['cells']} samples x {d['branches']} branches "
            f"(n = {d['n']}, {d['cells']} distinct samples); {100 * d['level']:.0f}% interval: {d['interval']}")


def lrp_filters_run(run_dir, *, filters=None, split: str = "test", composite: str = "epsilon_plus",
                    start: str = "target", maxpool: str | None = None, filter_layers: Sequence[str] | str | None = None,
                    batch_size: int = 25, device: str = "cpu", progress: Progress | None = None, backend=None,
                    trust_model_code: bool = False) -> LrpFiltersResult:
    """Score LRP heatmaps per filter setting against the ground truth of ``split``; returns the summary.

    ``maxpool``: LRP's max-pooling rule ("average" or "winner"; default the model's), recorded in the summary.
    ``filter_layers``: where the filters act (names or ``"block6,block5"``; default the model's
    ``heatlab_filter_layers``, paper 004's), recorded in the summary as ``layers``.
    ``backend``: where the units run (:func:`heatlab.run.runner.make_backend`; default this process).
    ``trust_model_code``: rebuild branch models whose model.json names code from outside heatlab
    (``file.py:fn``, ``module:fn``); without it such a run is refused in one sentence.
    """
    return run_stage(LRPFilters(RunDir(run_dir, trust_model_code=trust_model_code), filters=filters, split=split,
                                composite=composite, start=start, maxpool=maxpool, filter_layers=filter_layers,
                                batch_size=batch_size, device=device),
                     progress=progress, backend=backend)
