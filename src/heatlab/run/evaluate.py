"""`heatlab evaluate`: explain every sample of a split with every method for every branch, score it.

The unit of work is one (branch, method, shard). Each unit writes its rows to
``<run>/tables/parts/evaluate-<split>/<branch>/<method>/shard-XXXXX.*.parquet`` and then a small
``.done.json`` marker, so a killed run restarted redoes only unfinished units. When every unit is
done, the parts are joined in a fixed order into ``tables/five_band.parquet``, ``tables/roc.parquet``
and ``tables/localisation.parquet`` (schemas in the README); the same inputs give identical tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from heatlab.data.registry import is_cell_folder
from heatlab.data.shards import open_split
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import METHODS, attribute
from heatlab.explain.postprocess import channel_adjust
from heatlab.files import read_json, write_json, write_parquet
from heatlab.models.training import predict
from heatlab.progress import Progress, report
from heatlab.run.training import list_branches, load_branch, stage_name
from heatlab.score.five_band import METRICS, five_band
from heatlab.score.localisation import localisation_metrics

VARIANTS = {"standard": None, "clamp": (-0.1, 0.1)}
KINDS = ("five_band", "roc", "localisation")


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"all"`` or a comma-separated list of Captum class names -> validated list (registry order)."""
    names = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    if names == ["all"]:
        return list(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise HeatlabError(f"Unknown method {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)} or 'all'.")
    return [m for m in METHODS if m in names]


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: a method on one shard for one branch model."""

    branch: str
    method: str
    shard: int

    def stem(self, parts: Path) -> Path:
        return parts / self.branch / self.method / f"shard-{self.shard:05d}"

    def done(self, parts: Path, kinds: Sequence[str] = KINDS) -> bool:
        """True when the unit's marker and its ``<kind>.parquet`` parts (evaluate's by default) exist."""
        stem = self.stem(parts)
        return Path(f"{stem}.done.json").exists() and all(Path(f"{stem}.{k}.parquet").exists() for k in kinds)



def score_unit(model, images, labels, truth, method: str, *, batch_size: int, seed: int, predictions: torch.Tensor, shard: int = 0):
    """Attribute one shard and score it. images N×C×H×W, truth N×H×W -> three DataFrames (no branch/method cols)."""
    chunks = []
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        chunks.append(attribute(model, images[sl], method, target=predictions[sl], seed=seed).detach().cpu())
    attr = torch.cat(chunks)
    base = {"shard": shard, "index": np.arange(len(labels)), "label": labels.numpy(), "prediction": predictions.numpy(), "correct": (labels == predictions).numpy()}
    rows, roc = [], []
    adjusted = {}
    for variant, clamp in VARIANTS.items():
        h = channel_adjust(attr, clamp=clamp)
        adjusted[variant] = h
        res = five_band(h, truth, variant=variant)
        frame = {"variant": variant, **base}
        for m in METRICS:
            frame[f"{m}_avg"] = res.avg[m].double().numpy()
            frame[f"{m}_best"] = res.best[m].double().numpy()
        rows.append(pd.DataFrame(frame))
        t = res.thresholds.double().numpy()
        roc_frame = {"variant": variant, "threshold": np.arange(len(t)), "t1": t[:, 0], "t2": t[:, 1], "t3": t[:, 2], "t4": t[:, 3]}
        for m in METRICS:  # sums over samples; means are taken after all shards are joined
            roc_frame[f"{m}_sum"] = getattr(res, m).double().sum(0).numpy()
        roc_frame["n"] = len(images)
        roc.append(pd.DataFrame(roc_frame))
    loc = {k: v.double().numpy() for k, v in localisation_metrics(adjusted["standard"], truth).items()}
    return pd.concat(rows, ignore_index=True), pd.concat(roc, ignore_index=True), pd.DataFrame({**base, **loc})


def evaluate_run(run_dir, *, methods="all", split: str = "test", batch_size: int = 25, progress: Progress | None = None) -> dict:
    """Evaluate every (branch, method, shard) of ``split`` and write the three tables. Returns a summary."""
    run = Path(run_dir)
    if batch_size < 1:
        raise HeatlabError("Batch size must be at least 1; pass --batch-size 25.")
    methods = parse_methods(methods)
    config = read_json(run / "config.json") if (run / "config.json").exists() else None
    if config is None:
        raise HeatlabError(f"'{run}' is not a trained run (no config.json); run `heatlab train --out {run}` first.")
    if not is_cell_folder(config["data_root"]):
        raise HeatlabError(f"The five-band evaluation needs ground-truth heatmaps, which only the cell data have "
                           f"('{config['data_root']}' has none); use `heatlab ax {run}` for this run.")
    branches = [stage_name(b) for b in list_branches(run)]
    if not branches:
        raise HeatlabError(f"'{run}' has no trained branch model; run `heatlab train --out {run}` first.")
    data = open_split(config["data_root"], split)
    if len(data) == 0:
        raise HeatlabError(f"Split '{split}' of '{config['data_root']}' has no samples; generate it with `heatlab data cells`.")
    seed = int(config.get("seed", 0))
    parts = run / "tables" / "parts" / f"evaluate-{split}"
    units = [Unit(b, m, k) for b in branches for m in methods for k in range(data.num_shards)]
    todo = [u for u in units if not u.done(parts)]
    done = len(units) - len(todo)
    report(progress, "evaluate", done, len(units))
    model, model_branch, preds = None, None, {}
    for unit in todo:
        if unit.branch != model_branch:
            model, model_branch, preds = load_branch(run, unit.branch), unit.branch, {}
            model.eval()
        shard = data.load_shard(unit.shard)
        if unit.shard not in preds:
            preds[unit.shard] = predict(model, (shard["images"], shard["labels"]), batch_size)[0]
        five, roc, loc = score_unit(
            model, shard["images"], shard["labels"], shard["truth"], unit.method,
            batch_size=batch_size, seed=seed, predictions=preds[unit.shard], shard=unit.shard,
        )
        stem = unit.stem(parts)
        for kind, df in zip(KINDS, (five, roc, loc)):
            write_parquet(Path(f"{stem}.{kind}.parquet"), df)
        write_json(f"{stem}.done.json", {"branch": unit.branch, "method": unit.method, "shard": unit.shard})
        done += 1
        report(progress, "evaluate", done, len(units))
    tables = _join(run, parts, units)
    summary = {"split": split, "methods": methods, "branches": branches, "samples": len(data), "complete": True}
    write_json(run / "evaluate.json", summary)
    return {**summary, "tables": {k: str(v) for k, v in tables.items()}}



def _join(run: Path, parts: Path, units: list[Unit]) -> dict[str, Path]:
    """Concatenate unit parts in unit order into the final tables (atomic writes)."""
    frames = {k: [] for k in KINDS}
    for u in units:
        for kind in KINDS:
            df = pd.read_parquet(f"{u.stem(parts)}.{kind}.parquet")
            frames[kind].append(df.assign(branch=u.branch, method=u.method))
    five = pd.concat(frames["five_band"], ignore_index=True)
    five = five[["branch", "method", "variant", "shard", "index", "label", "prediction", "correct"]
                + [f"{m}_{s}" for m in METRICS for s in ("avg", "best")]]
    five = five.sort_values(["branch", "method", "variant", "shard", "index"], kind="stable").reset_index(drop=True)
    roc = pd.concat(frames["roc"], ignore_index=True)
    keys = ["branch", "method", "variant", "threshold"]
    roc = roc.groupby(keys, sort=True).agg(
        **{c: (c, "first") for c in ("t1", "t2", "t3", "t4")},
        **{f"{m}_sum": (f"{m}_sum", "sum") for m in METRICS},
        n=("n", "sum"),
    ).reset_index()
    for m in METRICS:
        roc[m] = roc.pop(f"{m}_sum") / roc["n"]
    loc = pd.concat(frames["localisation"], ignore_index=True)
    first = ["branch", "method", "shard", "index", "label", "prediction", "correct"]
    loc = loc[first + [c for c in loc.columns if c not in first]]
    out = {}
    for name, df in (("five_band", five), ("roc", roc), ("localisation", loc)):
        out[name] = run / "tables" / f"{name}.parquet"
        write_parquet(out[name], df)
    return out
