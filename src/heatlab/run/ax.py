"""`heatlab ax`: Augmentative eXplanation on a trained run: CO scores and their correct/wrong gap.

For every branch model, method and sample of ``split`` (and of ``holdout_split``), the sample is
attributed to its *predicted* class, the heatmap is divided by its largest magnitude
(:func:`heatlab.score.co.prepare_heatmaps`), and :func:`heatlab.score.co.co_records` scores
``x + h`` and ``x * h`` on raw logits and on softmax probabilities.

A stage on :mod:`heatlab.run.runner`, resumable like ``heatlab evaluate``: one unit per (split,
branch, method, shard) writes ``<run>/tables/parts/ax-<split>/<branch>/<method>/shard-XXXXX.co.parquet``
then a ``.done.json`` marker. Inputs may be images or tables. Outputs:

``tables/co.parquet``, one row per (branch, method, split, sample): ``branch, method, split, shard,
index, label, prediction`` (before AX), ``correct_before`` and, for ``<ax>`` in ``sum``/``mult``,
``co_raw_<ax>, co_softmax_<ax>, pred_after_<ax>, correct_after_<ax>``.

``tables/co_gap.parquet``, one row per (branch, method, variant) with ``variant`` in ``raw_sum,
softmax_sum, raw_mult, softmax_mult``: the :class:`heatlab.score.gap.GapResult` fields of the CO
scores of ``split`` grouped by ``correct_before``. The flag threshold is **chosen on
``holdout_split``** (default ``val``) and its precision and recall are **measured on ``split``**
(default ``test``), so the reported flag numbers come from samples the threshold never saw; with
no holdout split the threshold is chosen on ``split`` itself (``threshold_source = "in-sample"``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.files import write_json, write_parquet
from heatlab.progress import Progress
from heatlab.run.evaluate import parse_methods
from heatlab.run.rundir import RunDir
from heatlab.run.runner import PARQUET, Stage, Unit, Work, run_stage
from heatlab.score.co import AX_VARIANTS, OUTPUTS, co_records, prepare_heatmaps
from heatlab.score.gap import gap_analysis

KIND = "co"
#: CO variants as ``<output>_<ax>``, in table order.
VARIANTS: tuple[str, ...] = tuple(f"{o}_{a}" for a in AX_VARIANTS for o in OUTPUTS)
ID_COLUMNS = ["branch", "method", "split", "shard", "index", "label", "prediction", "correct_before"]
RECORD_COLUMNS = [c for a in AX_VARIANTS for c in (f"co_raw_{a}", f"co_softmax_{a}", f"pred_after_{a}", f"correct_after_{a}")]
#: The main variant of the papers (raw logits, ``x + h``): the one summaries rank by.
MAIN_VARIANT = "raw_sum"


def ax_unit(model, images: torch.Tensor, labels: torch.Tensor, method: str, *, predictions: torch.Tensor,
            batch_size: int, seed: int, shard: int = 0) -> pd.DataFrame:
    """CO records of one shard (inputs ``N×...``) for one method -> DataFrame (no branch/method/split)."""
    h = attribute(model, images, method, target=predictions, seed=seed, batch_size=batch_size)
    rec = co_records(model, images, prepare_heatmaps(h), labels, batch_size=batch_size)
    frame = {"shard": shard, "index": np.arange(len(labels)), "label": labels.numpy(),
             "prediction": predictions.numpy(), "correct_before": (labels == predictions).numpy()}
    frame.update({c: rec[c].cpu().numpy() for c in RECORD_COLUMNS})
    return pd.DataFrame(frame)


class AX(Stage):
    """The AX stage: units (split, branch, method, shard) over the analysed and the holdout split."""

    name = "ax"
    kinds = {KIND: PARQUET}

    def __init__(self, run: RunDir, *, methods="all", split: str = "test", holdout_split: str | None = "val",
                 batch_size: int = 25, device: str = "cpu"):
        super().__init__(run, device=device, batch_size=batch_size)
        self.seed = run.seed()
        self.branches = run.require_branches()
        self.split = split
        self.holdout = holdout_split if holdout_split not in (None, "", "none", split) else None
        self.data = {split: run.open_data(split)}
        if self.holdout:
            try:
                self.data[self.holdout] = run.open_data(self.holdout)
            except HeatlabError as exc:
                raise HeatlabError(f"{str(exc).rstrip('.')}; or pass holdout_split='none' to choose the flag "
                                   "threshold on the analysed split.") from None
        self.methods = parse_methods(methods, self.data[split].input_kind)

    def units(self) -> list[Unit]:
        return [Unit(s, b, m, k) for s in self.data for b in self.branches for m in self.methods
                for k in range(self.data[s].num_shards)]

    def run_unit(self, work: Work, unit: Unit) -> dict[str, pd.DataFrame]:
        shard = work.shard(unit.split, unit.shard)
        df = ax_unit(work.model(unit.branch), shard["images"], shard["labels"], unit.method,
                     predictions=work.predictions(unit.split, unit.branch, unit.shard),
                     batch_size=self.batch_size, seed=self.seed, shard=unit.shard)
        return {KIND: df}

    def join(self, units: Sequence[Unit], parts: dict[str, list[pd.DataFrame]]) -> dict:
        co = _join(units, parts[KIND])
        gap = gap_table(co, split=self.split, holdout_split=self.holdout)
        paths = {"co": self.run.table("co"), "co_gap": self.run.table("co_gap")}
        write_parquet(paths["co"], co)
        write_parquet(paths["co_gap"], gap)
        summary = {"split": self.split, "holdout_split": self.holdout, "methods": self.methods,
                   "branches": self.branches, "samples": len(self.data[self.split]),
                   "largest_gap": largest_gap(gap), "complete": True}
        write_json(self.run.summary_path(self.name), summary)
        return {**summary, "tables": {k: str(v) for k, v in paths.items()}}


def ax_run(run_dir, *, methods="all", split: str = "test", holdout_split: str | None = "val", batch_size: int = 25,
           device: str = "cpu", progress: Progress | None = None) -> dict:
    """Run AX on every (branch, method, shard) of ``split`` and ``holdout_split``; write both tables.

    ``holdout_split`` ``None`` (or equal to ``split``) chooses the flag threshold in-sample.
    Returns a summary with the table paths and the method with the largest gap (mean AUROC over
    branches of the raw ``x + h`` score).
    """
    return run_stage(AX(RunDir(run_dir), methods=methods, split=split, holdout_split=holdout_split,
                        batch_size=batch_size, device=device), progress=progress)


def gap_table(co: pd.DataFrame, *, split: str, holdout_split: str | None) -> pd.DataFrame:
    """One row per (branch, method, variant): gap numbers of ``split``, threshold from ``holdout_split``."""
    rows = []
    for (branch, method), g in co.groupby(["branch", "method"], sort=False):
        main = g[g["split"] == split]
        hold = g[g["split"] == holdout_split] if holdout_split else None
        for variant in VARIANTS:
            output, ax = variant.split("_")
            column = f"co_{variant}"
            res = gap_analysis(
                main[column].to_numpy(), main["correct_before"].to_numpy(),
                holdout_co=None if hold is None else hold[column].to_numpy(),
                holdout_correct=None if hold is None else hold["correct_before"].to_numpy(),
            )
            rows.append({"branch": branch, "method": method, "variant": variant, "output": output, "ax": ax,
                         "split": split, "threshold_split": holdout_split or split, **res.as_row()})
    return pd.DataFrame(rows)


def largest_gap(gap: pd.DataFrame, variant: str = MAIN_VARIANT) -> dict | None:
    """``{"method", "auroc", "variant"}`` with the highest mean AUROC over branches (None if all NaN)."""
    rows = gap[gap["variant"] == variant]
    means = rows.groupby("method", sort=False)["auroc"].mean().dropna()
    if means.empty:
        return None
    best = means.idxmax()  # first of equal maxima, in method order
    return {"method": str(best), "auroc": float(means[best]), "variant": variant}


def _join(units: Sequence[Unit], frames: list[pd.DataFrame]) -> pd.DataFrame:
    """All unit parts in a fixed order (branch, method, split, shard, index)."""
    frames = [df.assign(branch=u.branch, method=u.method, split=u.split) for u, df in zip(units, frames)]
    df = pd.concat(frames, ignore_index=True)[ID_COLUMNS + RECORD_COLUMNS]
    # Branch, method and split keep the order the units were listed in (methods in registry order).
    order = {c: {v: i for i, v in enumerate(dict.fromkeys(df[c]))} for c in ("branch", "method", "split")}
    df = df.sort_values(["branch", "method", "split", "shard", "index"], kind="stable",
                        key=lambda c: c.map(order[c.name]) if c.name in order else c)
    return df.reset_index(drop=True)
