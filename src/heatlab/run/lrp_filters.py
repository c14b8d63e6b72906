"""`heatlab lrp-filters`: do paper 004's relevance filters make LRP heatmaps better? (ground truth)

Paper 004 proposes filters between layers during LRP but has no ground truth to tell whether they
help. For data with ground truth this stage computes LRP heatmaps of every sample of a split for
each filter setting (``none`` plus the paper's eight by default), applied at the model's default
filter layers (:func:`heatlab.explain.methods.lrp.filter_layers`), and scores them exactly as
``heatlab evaluate`` does: the five-band scores (levels truth) and the localisation metrics.

A stage on :mod:`heatlab.run.runner`; one unit per (branch, filter, shard), resumable. Outputs:
``tables/lrp_filters.parquet`` (five-band rows, with ``filter`` in the method column's place),
``tables/lrp_filters_localisation.parquet`` (with ``mae``: paper 004's eq. (5) against the truth,
the mean |adjusted heatmap − truth|) and ``lrp-filters.json`` with the per-filter means
and, per branch, which filters beat ``none`` on both mean best precision and mean best recall.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.explain.filters import parse_filters
from heatlab.explain.methods.lrp import check_composite, check_maxpool, check_start, filter_layers, lrp_maxpool
from heatlab.explain.postprocess import channel_adjust
from heatlab.files import write_json, write_parquet
from heatlab.progress import Progress
from heatlab.run.evaluate import score_attributions
from heatlab.run.rundir import RunDir
from heatlab.run.runner import PARQUET, Stage, Unit, Work, run_stage

NONE = "none"
SCORES = ("precision_best", "recall_best", "fpr_avg", "accuracy_best")


class LRPFilters(Stage):
    """Units (split, branch, filter, shard); the filter name rides in the unit's method slot."""

    name = "lrp-filters"

    def __init__(self, run: RunDir, *, filters: Sequence[str] | str | None = None, split: str = "test",
                 composite: str = "epsilon_plus", start: str = "target", maxpool: str | None = None,
                 batch_size: int = 25, device: str = "cpu"):
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
        self.layers, self.maxpool = filter_layers(model), lrp_maxpool(model, maxpool)
        self.kinds = {"localisation": PARQUET, **({"five_band": PARQUET} if self.truth_kind == "levels" else {})}

    def units(self) -> list[Unit]:
        return [Unit(self.split, b, f, k) for b in self.branches for f in self.filters
                for k in range(self.data.num_shards)]

    def settings(self, unit: Unit) -> dict:
        return {"composite": self.composite, "start": self.start, "maxpool": self.maxpool, "layers": self.layers}

    def run_unit(self, work: Work, unit: Unit) -> dict[str, Any]:
        model = work.model(unit.branch)
        shard = work.shard(unit.split, unit.shard)
        preds = work.predictions(unit.split, unit.branch, unit.shard)
        filters = None if unit.method == NONE else {layer: unit.method for layer in self.layers}
        attr = attribute(model, shard["images"], "LRP", target=preds, batch_size=self.batch_size,
                         composite=self.composite, start=self.start, maxpool=self.maxpool, filters=filters).detach().cpu()
        five, _, loc = score_attributions(attr, shard["labels"], shard["truth"], self.truth_kind,
                                          predictions=preds, shard=unit.shard)
        # Paper 004's eq. (5) with the truth as reference: mean |h − truth| of the adjusted heatmap.
        loc["mae"] = (channel_adjust(attr) - shard["truth"].float()).abs().mean((1, 2)).double().numpy()
        return {"localisation": loc, **({"five_band": five} if five is not None else {})}

    def join(self, units: Sequence[Unit], parts: dict[str, list[Any]]) -> dict:
        tables, paths = {}, {}
        for kind, name in (("five_band", "lrp_filters"), ("localisation", "lrp_filters_localisation")):
            if kind in parts:
                df = pd.concat([p.assign(branch=u.branch, filter=u.method) for u, p in zip(units, parts[kind])],
                               ignore_index=True)
                first = ["branch", "filter"] + (["variant"] if "variant" in df else [])
                tables[kind] = df[first + [c for c in df.columns if c not in first]]
                paths[name] = self.run.table(name)
                write_parquet(paths[name], tables[kind])
        summary = {"split": self.split, "composite": self.composite, "start": self.start, "maxpool": self.maxpool,
                   "layers": self.layers, "filters": self.filters,
                   "branches": self.branches, "samples": len(self.data), **verdict(tables), "complete": True}
        write_json(self.run.summary_path(self.name), summary)
        return {**summary, "tables": {k: str(v) for k, v in paths.items()}}


def verdict(tables: dict[str, pd.DataFrame]) -> dict:
    """Per-filter means (standard five-band variant, or the localisation AUC) and the filters that beat none."""
    loc = tables["localisation"]
    keys = ["branch", "filter"]
    mae = loc.groupby(keys, sort=False)["mae"].mean()
    if "five_band" in tables:
        rows = tables["five_band"][tables["five_band"]["variant"] == "standard"]
        cols = list(SCORES)
    else:
        rows, cols = loc, [c for c in ("auc/feature", "auc/cell") if c in loc]
    means = rows.groupby(keys, sort=False)[cols].mean()
    better = {}
    for branch in means.index.get_level_values(0).unique():
        m = means.loc[branch]
        base = m.loc[NONE]
        if "five_band" in tables:
            wins = m[(m["precision_best"] > base["precision_best"]) & (m["recall_best"] > base["recall_best"])]
        else:
            wins = m[(m[cols] > base[cols]).all(axis=1)]
        better[str(branch)] = [str(f) for f in wins.index if f != NONE]
    means["mae (lower is better)"] = mae.reindex(means.index)
    table = {f"{b}/{f}": {k: round(float(v), 5) for k, v in r.items()} for (b, f), r in means.iterrows()}
    return {"means": table, "better_than_none": better}


def lrp_filters_run(run_dir, *, filters=None, split: str = "test", composite: str = "epsilon_plus",
                    start: str = "target", maxpool: str | None = None, batch_size: int = 25, device: str = "cpu",
                    progress: Progress | None = None, backend=None) -> dict:
    """Score LRP heatmaps per filter setting against the ground truth of ``split``; returns the summary.

    ``maxpool``: LRP's max-pooling rule ("average" or "winner"; default the model's), recorded in the summary.
    ``backend``: where the units run (:func:`heatlab.run.runner.make_backend`; default this process).
    """
    return run_stage(LRPFilters(RunDir(run_dir), filters=filters, split=split, composite=composite, start=start,
                                maxpool=maxpool, batch_size=batch_size, device=device), progress=progress, backend=backend)
