"""`heatlab ax`: Augmentative eXplanation on a trained run: CO scores and their correct/wrong gap.

For every branch model, method and sample of ``split`` (and of ``holdout_split``), the sample is
attributed to its *predicted* class, the heatmap is divided by its largest magnitude
(:func:`heatlab.score.co.prepare_heatmaps`), and :func:`heatlab.score.co.co_records` scores
``x + h`` and ``x * h`` on raw logits and on softmax probabilities.

Work is resumable exactly like ``heatlab evaluate``: one unit per (split, branch, method, shard)
writes ``<run>/tables/parts/ax-<split>/<branch>/<method>/shard-XXXXX.co.parquet`` then a
``.done.json`` marker; a restarted run redoes only unfinished units, then joins all parts in a
fixed order. Outputs:

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

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from heatlab.data.shards import open_split
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.files import read_json, write_json, write_parquet
from heatlab.progress import Progress, report
from heatlab.models.training import predict
from heatlab.run.evaluate import Unit, parse_methods
from heatlab.run.training import list_branches, load_branch, stage_name
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
    """CO records of one shard (images ``N×C×H×W``) for one method -> DataFrame (no branch/method/split)."""
    h = attribute(model, images, method, target=predictions, seed=seed, batch_size=batch_size)
    rec = co_records(model, images, prepare_heatmaps(h), labels, batch_size=batch_size)
    frame = {"shard": shard, "index": np.arange(len(labels)), "label": labels.numpy(),
             "prediction": predictions.numpy(), "correct_before": (labels == predictions).numpy()}
    frame.update({c: rec[c].cpu().numpy() for c in RECORD_COLUMNS})
    return pd.DataFrame(frame)


def ax_run(run_dir, *, methods="all", split: str = "test", holdout_split: str | None = "val", batch_size: int = 25,
           progress: Progress | None = None) -> dict:
    """Run AX on every (branch, method, shard) of ``split`` and ``holdout_split``; write both tables.

    ``holdout_split`` ``None`` (or equal to ``split``) chooses the flag threshold in-sample.
    Returns a summary with the table paths and the method with the largest gap (mean AUROC over
    branches of the raw ``x + h`` score).
    """
    run = Path(run_dir)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HeatlabError("Batch size must be at least 1; pass --batch-size 25.")
    methods = parse_methods(methods)
    if not (run / "config.json").exists():
        raise HeatlabError(f"'{run}' is not a trained run (no config.json); run `heatlab train --out {run}` first.")
    config = read_json(run / "config.json")
    branches = [stage_name(b) for b in list_branches(run)]
    if not branches:
        raise HeatlabError(f"'{run}' has no trained branch model; run `heatlab train --out {run}` first.")
    holdout = holdout_split if holdout_split not in (None, "", "none", split) else None
    data = {split: open_split(config["data_root"], split)}
    if holdout:
        try:
            data[holdout] = open_split(config["data_root"], holdout)
        except HeatlabError as exc:
            raise HeatlabError(f"{str(exc).rstrip('.')}; or pass --holdout-split none to choose the flag "
                               "threshold on the analysed split.") from None
    seed = int(config.get("seed", 0))
    units = [(s, Unit(b, m, k)) for s in data for b in branches for m in methods for k in range(data[s].num_shards)]
    todo = [(s, u) for s, u in units if not u.done(_parts(run, s), (KIND,))]
    done = len(units) - len(todo)
    report(progress, "ax", done, len(units))
    model, model_branch, preds = None, None, {}
    for s, unit in todo:
        if unit.branch != model_branch:
            model, model_branch, preds = load_branch(run, unit.branch), unit.branch, {}
        shard = data[s].load_shard(unit.shard)
        if (s, unit.shard) not in preds:
            preds[s, unit.shard] = predict(model, (shard["images"], shard["labels"]), batch_size)[0]
        df = ax_unit(model, shard["images"], shard["labels"], unit.method, predictions=preds[s, unit.shard],
                     batch_size=batch_size, seed=seed, shard=unit.shard)
        stem = unit.stem(_parts(run, s))
        write_parquet(Path(f"{stem}.{KIND}.parquet"), df)
        write_json(f"{stem}.done.json", {"split": s, "branch": unit.branch, "method": unit.method, "shard": unit.shard})
        done += 1
        report(progress, "ax", done, len(units))
    co = _join(run, units)
    gap = gap_table(co, split=split, holdout_split=holdout)
    paths = {"co": run / "tables" / "co.parquet", "co_gap": run / "tables" / "co_gap.parquet"}
    write_parquet(paths["co"], co)
    write_parquet(paths["co_gap"], gap)
    summary = {"split": split, "holdout_split": holdout, "methods": methods, "branches": branches,
               "samples": len(data[split]), "largest_gap": largest_gap(gap), "complete": True}
    write_json(run / "ax.json", summary)
    return {**summary, "tables": {k: str(v) for k, v in paths.items()}}


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


def _parts(run: Path, split: str) -> Path:
    return run / "tables" / "parts" / f"ax-{split}"


def _join(run: Path, units: list[tuple[str, Unit]]) -> pd.DataFrame:
    """All unit parts in a fixed order (branch, method, split, shard, index)."""
    frames = [pd.read_parquet(f"{u.stem(_parts(run, s))}.{KIND}.parquet").assign(branch=u.branch, method=u.method, split=s)
              for s, u in units]
    df = pd.concat(frames, ignore_index=True)[ID_COLUMNS + RECORD_COLUMNS]
    # Branch, method and split keep the order the units were listed in (methods in registry order).
    order = {c: {v: i for i, v in enumerate(dict.fromkeys(df[c]))} for c in ("branch", "method", "split")}
    df = df.sort_values(["branch", "method", "split", "shard", "index"], kind="stable",
                        key=lambda c: c.map(order[c.name]) if c.name in order else c)
    return df.reset_index(drop=True)
