"""`heatlab gax`: GAX on the first N correctly predicted samples of a split (papers 000/001, Fig. 4).

The samples are taken in shard order for one branch model and optimised in batches. A stage on
:mod:`heatlab.run.runner`: each batch is a unit, ``<run>/gax/parts/batch-XXXXX.{rows.parquet,
tensors.safetensors}`` and then a ``.done.json`` marker. ``parts/settings.json`` records the settings and the weights' sha256; parts
written with other settings are discarded. When every batch is done, the parts are joined into
the files below and removed (a run whose files and gax.json match the settings is skipped):

- ``gax/results.parquet``: one row per sample (branch, shard, index, label, steps_to_target,
  reached, initial_co, final_co, final_step);
- ``gax/trajectories.safetensors``: ``co`` (T+1)×N float32, CO after t steps, a finished sample's
  last value repeated (T = the longest batch);
- ``gax/snapshots.safetensors``: ``snapshots`` S×C×H×W float16, every sample's stored heatmaps one
  after the other, sample i in rows ``offsets[i]:offsets[i+1]`` at optimisation steps ``steps``
  (every ``snapshot_every`` steps up to its final step, plus the final step; frozen copies after a
  sample reached the target are not stored); ``images`` N×C×H×W uint8, the optimised images;
Images are optimised in the pixel space ([0, 1]) even when the model standardises its input and
``heatlab ax`` works after that: paper 001 says so ("the similarity loss is positive, since x used
here is [0, 1] normalized; by comparison, the standard ResNet34 normalization can result in
negative pixels"), and the loss divides by ``x + ε``. Table data are optimised in the [0, 1] min-max space of the training features (:class:`UnitRange`),
because GAX's similarity loss needs non-negative inputs; ``images`` then holds those rescaled features.

- ``gax/gax.json``: settings and counts, written last (``"complete": true``).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from safetensors.torch import load_file, save_file

from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, ensure_dir, read_json, write_json
from heatlab.improve.gax import BIAS, EPS, LR, SIMILARITY_FACTOR, GaxResult, check_options, gax
from heatlab.progress import Progress
from heatlab.models.training import model_device, predict
from heatlab.run.results import GaxStageResult
from heatlab.run.rundir import GAX_FILES, GAX_SUMMARY, RunDir, branch_name, read_summary
from heatlab.run.runner import PARQUET, TENSORS, ShardUnit, Stage, Work, run_stage
from heatlab.tables import TABLES

RESULTS, TRAJECTORIES, SNAPSHOTS = GAX_FILES


def select_correct(model, data, n: int, batch_size: int) -> pd.DataFrame:
    """The first ``n`` correctly predicted samples of ``data`` in shard order: shard, index, label."""
    rows = []
    for k in range(data.num_shards):
        shard = data.load_shard(k)
        pred = predict(model, (shard["images"], shard["labels"]), batch_size)[0]
        for j in (pred == shard["labels"]).nonzero().flatten().tolist():
            rows.append((k, j, int(shard["labels"][j])))
            if len(rows) == n:
                return pd.DataFrame(rows, columns=["shard", "index", "label"])
    return pd.DataFrame(rows, columns=["shard", "index", "label"], dtype="int64")


def pack_batch(result: GaxResult, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch's GaxResult -> the tensors of one part file (snapshots trimmed per sample)."""
    final = result.final_steps
    packed, steps, offsets = [], [], [0]
    for i in range(images.shape[0]):
        f = int(final[i])
        keep = [s for s, step in enumerate(result.snapshot_steps.tolist()) if step < f]
        packed += [result.snapshots[keep, i], result.heatmaps[i : i + 1].half()]
        steps += [result.snapshot_steps[keep], torch.tensor([f])]
        offsets.append(offsets[-1] + len(keep) + 1)
    return {
        "co": result.co.float().contiguous(),
        "snapshots": torch.cat(packed).contiguous(),
        "steps": torch.cat(steps).long(),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
        "images": (images * 255).round().clamp(0, 255).to(torch.uint8).contiguous(),
    }


def _pad_co(co: torch.Tensor, length: int) -> torch.Tensor:
    """(T+1)×n -> length×n, repeating the last row (finished samples keep their CO)."""
    return torch.cat([co, co[-1:].expand(length - co.shape[0], -1)]) if length > co.shape[0] else co


def _settings(run: RunDir, branch, split, first_n_correct, target_co, max_steps, batch_size, snapshot_every) -> dict:
    return {
        "branch": branch_name(branch), "split": split, "first_n_correct": first_n_correct, "target_co": float(target_co),
        "max_steps": max_steps, "batch_size": batch_size, "snapshot_every": snapshot_every, "space": "pixel",
        "weights_sha256": run.weights_sha256(branch),
        "lr": LR, "similarity_factor": SIMILARITY_FACTOR, "bias": BIAS, "eps": EPS, "ax": "sum",
    }


def _same_settings(summary: dict, settings: dict) -> bool:
    return all(summary.get(k) == v for k, v in settings.items())


def _check(first_n_correct: int, batch_size: int) -> None:
    for name, value, flag in (("first_n_correct", first_n_correct, "--first-n-correct 100"),
                              ("batch_size", batch_size, "--batch-size 32")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HeatlabError(f"{name} must be a whole number of at least 1, got {value!r}; pass e.g. {flag}.")


class GAX(Stage):
    """The GAX stage: a selection of correctly predicted samples, optimised in batches (one unit each)."""

    name = "gax"
    kinds = {"rows": PARQUET, "tensors": TENSORS}

    def __init__(self, run: RunDir, *, split: str = "test", first_n_correct: int = 100, target_co: float = 48.0,
                 branch: int | str = 0, max_steps: int = 500, batch_size: int = 32, snapshot_every: int = 5,
                 device: str = "cpu", progress: Progress | None = None):
        check_options(target_co=target_co, max_steps=max_steps, snapshot_every=snapshot_every)
        _check(first_n_correct, batch_size)
        super().__init__(run, device=device, batch_size=batch_size)
        run.config()  # a clear sentence when this is not a trained run
        self.branch = branch_name(branch)
        run.model_info(self.branch)  # ... or when the branch is missing
        self.split, self.progress = split, progress
        run.open_data(split)  # ... or when the split is unknown or empty
        self.options = _settings(run, branch, split, first_n_correct, target_co, max_steps, batch_size, snapshot_every)
        self.parts = run.gax_parts
        self.selection = pd.DataFrame(columns=["shard", "index", "label"])

    def complete(self) -> dict | None:
        """The stored summary when GAX already ran with these settings; stale results are dropped."""
        summary_path = self.run.gax(GAX_SUMMARY)
        if summary_path.is_file():
            try:
                summary = read_gax_summary(self.run.path)
            except HeatlabError:
                summary = None  # damaged: computed again
            if summary is not None and _same_settings(summary, self.options) and all(self.run.gax(f).is_file() for f in GAX_FILES):
                return summary
            summary_path.unlink()  # the old results no longer describe this run's GAX
        return None

    def select(self, work: Work) -> pd.DataFrame:
        """The selected samples (shard, index, label), chosen once and kept in the parts folder."""
        parts = self.parts
        if parts.is_dir() and not self._parts_fit():
            shutil.rmtree(parts)  # written with other settings or another model, or damaged: start again
        ensure_dir(parts)
        if not self.run.gax_selection.is_file():
            data = work.data(self.split)
            selection = select_correct(work.model(self.branch), data, self.options["first_n_correct"], self.batch_size)
            if selection.empty:
                raise HeatlabError(f"Branch {self.branch} predicts none of the {len(data)} samples of split '{self.split}' "
                                   "correctly; GAX needs correct predictions, so train the model further first.")
            TABLES["gax_selection"].write(self.run.gax_selection, selection)
            write_json(self.run.gax_settings, self.options)
        fix = f"delete the folder '{parts}' and run `heatlab gax {self.run.path}` again to select afresh"
        return TABLES["gax_selection"].read(self.run.gax_selection, fix=fix)

    def _parts_fit(self) -> bool:
        """Whether the parts folder was started with these settings (and its selection, if any, is readable;
        one that is readable but not a selection is refused by :meth:`select`)."""
        try:
            if read_json(self.run.gax_settings) != self.options:
                return False
            if self.run.gax_selection.is_file():
                pd.read_parquet(self.run.gax_selection, columns=["shard", "index", "label"])
        except Exception:  # missing or damaged settings.json, an unreadable selection (pyarrow raises several types)
            return False
        return True

    def stem(self, unit: ShardUnit) -> Path:
        return self.parts / f"batch-{unit.shard:05d}"

    def units(self) -> list[ShardUnit]:
        n = len(self.selection)
        return [ShardUnit(self.split, self.branch, "GAX", b) for b in range(math.ceil(n / self.batch_size))]

    def run_unit(self, work: Work, unit: ShardUnit) -> dict:
        start = unit.shard * self.batch_size
        rows = self.selection.iloc[start : start + self.batch_size].reset_index(drop=True)
        images, labels = _load_rows(work, self.split, rows)
        model = work.model(self.branch)
        s = self.options
        table_data = work.data(self.split).input_kind == "table"
        x = images
        if table_data:
            model = UnitRange.of_training_features(model, self.run)
            x = model.to_unit(images)
        result = gax(model, x, labels, target_co=s["target_co"], max_steps=s["max_steps"],
                     snapshot_every=s["snapshot_every"], progress=self.progress)
        table = rows.assign(
            branch=self.branch, steps_to_target=result.steps_to_target.numpy(), reached=result.reached.numpy(),
            initial_co=result.co[0].double().numpy(), final_co=result.final_co.double().numpy(),
            final_step=result.final_steps.numpy(),
        )
        return {"rows": table, "tensors": pack_batch(result, x)}

    def join(self, units, parts: dict[str, list]) -> dict:
        return _join(self.run, parts["rows"], parts["tensors"], self.options)


class UnitRange(nn.Module):
    """``model`` fed features rescaled to [0, 1]: ``forward(u) = model(lo + (hi − lo)·u)``, u ``N×F``.

    GAX's similarity loss divides by ``x + ε`` and needs non-negative inputs (papers 000/001 pass
    [0, 1] images only). Table features are standardised, so for tables GAX runs in this min-max
    space of the training split (a constant feature keeps a range of 1); ``to_unit`` maps features
    there, clipped to [0, 1]. The model's own weights are not touched.
    """

    def __init__(self, model: nn.Module, lo: torch.Tensor, hi: torch.Tensor):
        super().__init__()
        self.model = model
        span = hi - lo
        self.register_buffer("lo", lo.float())
        self.register_buffer("span", torch.where(span > 0, span, torch.ones_like(span)).float())

    @classmethod
    def of_training_features(cls, model: nn.Module, run: RunDir) -> "UnitRange":
        train = run.open_data("train")
        lo = hi = None
        for k in range(train.num_shards):
            x = train.load_shard(k)["images"]
            lo = x.amin(0) if lo is None else torch.minimum(lo, x.amin(0))
            hi = x.amax(0) if hi is None else torch.maximum(hi, x.amax(0))
        return cls(model, lo, hi).to(model_device(model))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.to(self.lo.device) - self.lo) / self.span).clamp(0, 1).cpu()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.lo + self.span * u)


def _load_rows(work: Work, split: str, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs N×... float32 and labels N of the selected rows."""
    images, labels = [], []
    for k, group in rows.groupby("shard", sort=False):
        shard = work.shard(split, int(k))
        idx = torch.tensor(group["index"].tolist(), dtype=torch.int64)
        images.append(shard["images"][idx])
        labels.append(shard["labels"][idx])
    return torch.cat(images), torch.cat(labels)


def gax_run(
    run_dir,
    *,
    split: str = "test",
    first_n_correct: int = 100,
    target_co: float = 48.0,
    branch: int | str = 0,
    max_steps: int = 500,
    batch_size: int = 32,
    snapshot_every: int = 5,
    device: str = "cpu",
    progress: Progress | None = None,
    backend=None,
    trust_model_code: bool = False,
) -> GaxStageResult:
    """Run GAX for the first ``first_n_correct`` correct samples of ``split``; returns the summary.

    ``backend``: where the batches run (:func:`heatlab.run.runner.make_backend`; default this process).
    ``trust_model_code``: rebuild branch models whose model.json names code from outside heatlab
    (``file.py:fn``, ``module:fn``); without it such a run is refused in one sentence.
    """
    run = RunDir(run_dir, trust_model_code=trust_model_code)
    with run.writing("gax"):
        stage = GAX(run, split=split, first_n_correct=first_n_correct, target_co=target_co, branch=branch,
                    max_steps=max_steps, batch_size=batch_size, snapshot_every=snapshot_every, device=device,
                    progress=progress)
        done = stage.complete()
        if done is not None:
            return GaxStageResult.from_record(done)
        stage.selection = stage.select(Work(stage.run, device=device, batch_size=batch_size))
        return GaxStageResult.from_record(run_stage(stage, progress=_batches(progress), backend=backend))


def _batches(progress: Progress | None) -> Progress | None:
    """Report the stage's units as "gax batches" (the per-step bar of a batch is "gax")."""
    if progress is None:
        return None
    return lambda task, done, total: progress("gax batches" if task == "gax" else task, done, total)


def _join(run: RunDir, tables: list[pd.DataFrame], parts_t: list[dict], settings: dict) -> dict:
    """Concatenate the batch parts in order into the three result files and gax.json (atomic writes)."""
    table = pd.concat(tables, ignore_index=True)
    table = table[["branch", "shard", "index", "label", "steps_to_target", "reached", "initial_co", "final_co", "final_step"]]
    length = max(p["co"].shape[0] for p in parts_t)
    co = torch.cat([_pad_co(p["co"], length) for p in parts_t], dim=1).contiguous()
    offsets, base = [torch.zeros(1, dtype=torch.int64)], 0
    for p in parts_t:
        offsets.append(p["offsets"][1:] + base)
        base += int(p["offsets"][-1])
    snaps = {
        "snapshots": torch.cat([p["snapshots"] for p in parts_t]).contiguous(),
        "steps": torch.cat([p["steps"] for p in parts_t]),
        "offsets": torch.cat(offsets),
        "images": torch.cat([p["images"] for p in parts_t]).contiguous(),
    }
    TABLES["gax_results"].write(run.gax(RESULTS), table)
    with atomic_path(run.gax(TRAJECTORIES)) as tmp:
        save_file({"co": co}, str(tmp))
    with atomic_path(run.gax(SNAPSHOTS)) as tmp:
        save_file(snaps, str(tmp))
    reached = table["reached"].to_numpy(bool)
    summary = {
        **settings, "samples": len(table), "reached": int(reached.sum()),
        "median_steps_to_target": float(np.median(table.loc[reached, "steps_to_target"])) if reached.any() else None,
        "random_weights": run.random_weights(settings["branch"]), "complete": True,
    }
    write_json(run.gax(GAX_SUMMARY), summary)
    shutil.rmtree(run.gax_parts)  # everything is in the joined files now
    return summary


@dataclass
class GaxRunResult:
    """The stored GAX result of a run (see the module docstring for the meaning of each field)."""

    summary: GaxStageResult
    table: pd.DataFrame
    co: torch.Tensor
    snapshots: torch.Tensor
    steps: torch.Tensor
    offsets: torch.Tensor
    images: torch.Tensor

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample i's stored heatmaps S_i×C×H×W (float16) and their steps S_i."""
        sl = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return self.snapshots[sl], self.steps[sl]


def read_gax_summary(run_dir) -> dict:
    """``<run>/gax/gax.json``, checked against its schema (HeatlabError names the file and the fix)."""
    return read_summary(RunDir(run_dir).gax(GAX_SUMMARY), "gax", f"delete it and run `heatlab gax {run_dir}` again")


def load_gax_result(run_dir) -> GaxRunResult:
    """Read ``<run>/gax`` (raises HeatlabError naming the fix when it is missing or incomplete)."""
    run, out = RunDir(run_dir), RunDir(run_dir).gax_dir
    fix = f"run `heatlab gax {run_dir}` first"
    if not run.gax(GAX_SUMMARY).is_file():
        raise HeatlabError(f"'{run_dir}' has no GAX result; {fix}.")
    summary = GaxStageResult.from_record(read_gax_summary(run_dir))
    if not summary.complete:
        raise HeatlabError(f"The GAX result of '{run_dir}' is incomplete; {fix}.")
    table = TABLES["gax_results"].read(run.gax(RESULTS))  # a bad column is named
    try:
        co = load_file(run.gax(TRAJECTORIES))["co"]
        snaps = load_file(run.gax(SNAPSHOTS))
    except Exception:  # safetensors raises several types for a broken file
        raise HeatlabError(f"The GAX files in '{out}' are missing or unreadable; {fix} again.") from None
    n = len(table)
    if co.shape[1] != n or snaps["offsets"].shape[0] != n + 1 or snaps["images"].shape[0] != n:
        raise HeatlabError(f"The GAX files in '{out}' do not match each other; {fix} again.")
    return GaxRunResult(summary, table, co, snaps["snapshots"], snaps["steps"], snaps["offsets"], snaps["images"])
