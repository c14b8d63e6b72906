"""Training run directory: the protocol of :mod:`heatlab.models.training` with files and resume.

Layout::

    run/config.json                          {"training": config, "data_root", "weights", ...}
    run/model/base/weights.safetensors       + model.json (written last: the stage is complete)
    run/model/base/steps.parquet             phase, iteration, epoch, loss
    run/model/branch-00/...                  same files + validation.parquet
    run/tables/training.parquet              every stage's steps (one row per iteration)
    run/tables/validation.parquet            branch, iteration, epoch, shard, accuracy, decision, saved

A stage is complete when its model.json exists; a restarted run skips complete stages and redoes a
partial branch from the saved base model. Each stage draws its randomness from (seed, stage), so
an interrupted-and-resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

import heatlab
from heatlab.data import registry
from heatlab.data.split import Split
from heatlab.errors import HeatlabError
from heatlab.files import ensure_dir, read_json, remove_stale_tmp, sha256_file, undo_on_error, write_json
from heatlab.models import zoo
from heatlab.models.training import (
    TrainConfig,
    chance_accuracy,
    check_takes,
    config_for,
    create_model,
    normalize_spec,
    evaluate_accuracy,
    predict,
    num_batches,
    resolve_device,
    train_branch,
    train_continuous,
)
from heatlab.progress import Progress, report
from heatlab.run.runner import FIXED_THREADS, PARQUET, TENSORS, Stage, Unit, Work, run_stage
from heatlab.score.intervals import near_chance
from heatlab.tables import TABLES
from heatlab.run.results import TrainResult
from heatlab.run.rundir import (  # noqa: F401  (re-exported: the names training has always offered)
    BASE,
    CONFIG,
    MODEL_JSON,
    WEIGHTS,
    RunDir,
    branch_info,
    list_branches,
    load_branch,
    stage_dir,
    stage_info,
    stage_name,
)

STEPS = "steps.parquet"
VALIDATION = "validation.parquet"
# -------------------------------------------------------------------------------------- checks
def _versions() -> dict[str, str | None]:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"heatlab": heatlab.__version__, "torch": torch.__version__, "captum": version("captum")}


def _weights_class_count(path: Path, model: nn.Module) -> int | None:
    """Class count the weights file was trained for, when it can be told: the spec saved in its
    safetensors metadata or in a model.json beside it, else the first dim of a tensor that differs
    from the model's only in that (class) dim. None when unknown."""
    n = model.heatlab_spec["num_classes"]
    beside = path.parent / MODEL_JSON
    try:
        if beside.is_file():
            return int(read_json(beside)["spec"]["num_classes"])
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "heatlab_spec" in meta:
                return int(json.loads(meta["heatlab_spec"])["num_classes"])
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except (HeatlabError, SafetensorError, OSError, ValueError, KeyError, TypeError):
        return None
    for key, t in model.state_dict().items():
        theirs = shapes.get(key)
        if theirs and t.dim() and t.shape[0] == n and theirs[0] != n and theirs[1:] == list(t.shape[1:]):
            return theirs[0]
    return None


def _load_initial_weights(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model``; a file for another class count gets a sentence naming both counts."""
    try:
        zoo.load_weights(model, path)
    except HeatlabError:
        if not path.is_file():
            raise
        n, classes = model.heatlab_spec["num_classes"], _weights_class_count(path, model)
        if classes is not None and classes != n:
            raise HeatlabError(
                f"The weights in '{path}' are for a {classes}-class model but the data has {n} classes; "
                f"pass weights of a {n}-class model or data with {classes} classes."
            ) from None
        raise


# -------------------------------------------------------------------------------------- tables
def _frame(rows: list[dict], table: str) -> pd.DataFrame:
    """``rows`` as a frame of TABLES[table]'s columns (its writer casts them to their kinds)."""
    return pd.DataFrame(rows, columns=TABLES[table].names)


def _collect_tables(run_dir: Path) -> None:
    """Rebuild tables/training.parquet and tables/validation.parquet from the completed stages."""
    stages = ([BASE] if stage_info(run_dir, BASE) else []) + list_branches(run_dir)
    for name, table in ((STEPS, TABLES["training"]), (VALIDATION, TABLES["validation"])):
        parts = [table.read(p) for s in stages if (p := stage_dir(run_dir, s) / name).is_file()]
        frame = pd.concat(parts, ignore_index=True) if parts else _frame([], table.name)
        table.write(RunDir(run_dir).table(table.name), frame)


# ------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainUnit(Unit):
    """The base model (``branch`` None, wave 0) or branch ``branch`` (wave 1: it starts from the base
    model's weights on disk, so the branches are independent of each other)."""

    branch: int | None

    @property
    def name(self) -> str:
        return BASE if self.branch is None else stage_name(self.branch)

    def stem(self, parts: Path) -> Path:
        return parts / self.name

    def describe(self) -> str:
        return self.name

    @property
    def wave(self) -> int:
        return 0 if self.branch is None else 1

    def group(self) -> str:
        return self.name


class TrainStage(Stage):
    """Training on the Stage runner: units :class:`TrainUnit` (the base, then one per branch).

    A unit returns the model's state dict, spec, steps, validations and record; the driver writes
    them as the stage's model folder, model.json last (the stage's marker: a run trained before the
    runner resumes the same way), then rebuilds the run's training tables.
    """

    name = "train"
    kinds = {"weights": TENSORS, "steps": PARQUET, "validation": PARQUET}
    threads = FIXED_THREADS  # the same bytes on every backend (Stage.threads)

    def __init__(self, run: RunDir, config: TrainConfig, *, num_classes: int, input_shape: tuple[int, ...],
                 normalize: Any, weights: Path | None, progress: Progress | None = None):
        super().__init__(run, device=config.device, batch_size=config.batch_size)
        self.config, self.num_classes, self.input_shape = config, num_classes, input_shape
        self.normalize, self.weights, self.progress = normalize, weights, progress
        self.weights_file = weights.resolve() if weights is not None else None  # a worker may run elsewhere

    def units(self) -> list[TrainUnit]:
        return [TrainUnit(None), *(TrainUnit(b) for b in range(self.config.branches))]

    def is_done(self, unit: TrainUnit) -> bool:
        return stage_info(self.run.path, unit.name) is not None

    def write(self, unit: TrainUnit, pieces: Mapping[str, Any]) -> None:
        _save_stage(self.run.path, unit.name, pieces)
        _collect_tables(self.run.path)

    def read(self, unit: TrainUnit, kind: str) -> dict:
        return stage_info(self.run.path, unit.name)

    def joined(self) -> list[str]:
        return ["record"]

    def run_unit(self, work: Work, unit: TrainUnit) -> dict[str, Any]:
        splits = {s: work.data(s) for s in ("train", "val", "test")}
        return _train_base(self, splits) if unit.branch is None else _train_one_branch(self, splits, unit.branch)

    def join(self, units: Sequence[TrainUnit], parts: dict[str, list[Any]]) -> list[dict]:
        """model.json of each stage, in unit order."""
        return parts["record"]


def _save_stage(run_dir: Path, name: str, pieces: Mapping[str, Any]) -> dict:
    """Write a stage's weights and tables, then its model.json last (marks the stage complete)."""
    d = ensure_dir(stage_dir(run_dir, name))
    zoo.save_state(pieces["weights"], d / WEIGHTS, pieces["spec"])
    TABLES["training"].write(d / STEPS, _frame(pieces["steps"], "training"))
    if pieces.get("validation") is not None:
        TABLES["validation"].write(d / VALIDATION, _frame(pieces["validation"], "validation"))
    info = {**pieces["record"], "spec": pieces["spec"], "weights": WEIGHTS, "weights_sha256": sha256_file(d / WEIGHTS)}
    write_json(d / MODEL_JSON, info)
    return info


def _pieces(model: nn.Module, info: dict, steps: list[dict], vals: list[dict] | None) -> dict[str, Any]:
    return {"weights": zoo.state_tensors(model), "spec": dict(model.heatlab_spec), "steps": steps, "validation": vals,
            "record": info}


def _step_recorder(phase: str, rows: list[dict], progress: Progress | None, total: int):
    def on_step(it: int, epoch: int, loss: float) -> None:
        rows.append({"phase": phase, "iteration": it, "epoch": epoch, "loss": loss})
        report(progress, f"train/{phase}", it, total)

    return on_step


def _train_base(stage: TrainStage, splits: dict[str, Split]) -> dict[str, Any]:
    """Continuous mode on a freshly created model (holding ``stage.weights`` if given)."""
    config, progress, weights = stage.config, stage.progress, stage.weights
    train, val, test = splits["train"], splits["val"], splits["test"]
    model = create_model(config, num_classes=stage.num_classes, input_shape=stage.input_shape, normalize=stage.normalize)
    if weights is not None:
        _load_initial_weights(model, stage.weights_file)
    total = config.epochs * num_batches(train, config.batch_size)
    report(progress, "train/base", 0, total)
    steps: list[dict] = []
    train_continuous(model, train, config, on_step=_step_recorder(BASE, steps, progress, total))
    report(progress, "train/base", total, total)
    info = {
        "stage": BASE, "branch": None, "seed": config.seed, "stop_reason": None, "iterations": len(steps),
        "epochs": config.epochs, "best_shard_acc": None, "val_acc": evaluate_accuracy(model, val),
        **_test_scores(model, test), "class_names": list(train.class_names),
        "initial_weights": str(weights) if weights is not None else None,
    }  # fmt: skip
    return _pieces(model, info, steps, None)


def _train_one_branch(stage: TrainStage, splits: dict[str, Split], b: int) -> dict[str, Any]:
    config, progress = stage.config, stage.progress
    train, val, test = splits["train"], splits["val"], splits["test"]
    # from disk: same start when resumed; the base spec may name the code train was given (config.model)
    model = load_branch(stage.run.path, BASE, device=config.device, model=config.model).train()
    phase = stage_name(b)
    total = config.branch_epochs * num_batches(train, config.batch_size)
    report(progress, f"train/{phase}", 0, total)
    steps: list[dict] = []
    result = train_branch(model, train, val, config, branch=b, on_step=_step_recorder(phase, steps, progress, total))
    report(progress, f"train/{phase}", total, total)
    vals = [{"branch": b, **{k: getattr(v, k) for k in TABLES["validation"].names if k != "branch"}} for v in result.validations]
    info = {
        "stage": phase, "branch": b, "seed": config.seed, "stop_reason": result.stop_reason,
        "iterations": result.iterations, "best_iteration": result.best_iteration,
        "best_shard_acc": result.best_shard_acc, "validations": len(result.validations),
        "val_acc": evaluate_accuracy(model, val), **_test_scores(model, test),
        "class_names": list(train.class_names),
    }  # fmt: skip
    return _pieces(model, info, steps, vals)


def _summary(run_dir: Path, base: dict, branches: list[dict], skipped: list[str], chance: float, n_classes: int) -> dict:
    keys = ("branch", "stop_reason", "iterations", "best_shard_acc", "val_acc", "test_acc")
    rows = [{k: info.get(k) for k in keys} for info in branches]
    mean = lambda key: sum(r[key] for r in rows) / len(rows) if rows else None  # noqa: E731
    best = max([r["test_acc"] for r in rows] + [base.get("test_acc") or 0.0])
    warning = None
    if near_chance(best, n_classes, chance=chance):
        warning = (f"Every model is near chance (best test accuracy {best:.3f}; always guessing the most frequent "
                   f"class gives {chance:.3f}), so its heatmaps explain little; train longer (--epochs), with "
                   "another --lr or another --model.")
    return {
        "run_dir": str(run_dir),
        "base": {k: base.get(k) for k in ("iterations", "val_acc", "test_acc")},
        "branches": rows,
        "val_acc_mean": mean("val_acc"),
        "test_acc_mean": mean("test_acc"),
        "chance_acc": chance,
        "warning": warning,
        "skipped": skipped,
    }


def _test_scores(model: nn.Module, test: Split) -> dict:
    """``test_acc`` and ``chance_acc`` (always guessing the test split's most frequent class)."""
    preds, labels = predict(model, test)
    return {"test_acc": float((preds == labels).double().mean()), "chance_acc": chance_accuracy(labels)}


def train_run(
    data_root: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: TrainConfig | Mapping[str, Any],
    *,
    weights: str | os.PathLike | None = None,
    data_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    backend: Any = None,
) -> TrainResult:
    """Train the base model and ``config.branches`` branches into ``run_dir``, resuming if possible.

    ``config``: a TrainConfig, or a mapping of the settings to change, the rest taking the
    defaults of the data's kind (:func:`heatlab.models.training.config_for`: tables get
    :data:`~heatlab.models.training.TABLE_DEFAULTS`). ``data_options`` are passed to the dataset's
    loader (e.g. ``{"size": 64}`` for an image folder) and recorded, so every later stage opens
    the data the same way. ``weights`` (safetensors) initialise the base model before continuous
    training. ``progress`` is called as ``progress(task, done, total)`` with tasks "train/base",
    "train/branch-00", ... Returns a summary: base and per-branch stop reason, iterations, val and
    test accuracy, means, the accuracy of always guessing the most frequent test class with a
    ``warning`` sentence when every model is near it, and the stages skipped because they were
    already complete. ``backend`` (:func:`heatlab.run.runner.make_backend`, default local) runs the
    units: the base model, then the branches, which are independent (each starts from the base
    weights on disk), so Ray trains them in parallel; every unit runs on
    :data:`~heatlab.run.runner.FIXED_THREADS` CPU threads (:attr:`TrainStage.threads`) on either backend,
    so both write byte-identical weights for the same seed.
    """
    if not isinstance(config, (TrainConfig, Mapping)):
        raise HeatlabError(f"config must be a TrainConfig, got {type(config).__name__}; build one with TrainConfig(...).")
    if data_options is not None and not isinstance(data_options, Mapping):
        raise HeatlabError(f"data_options must be a mapping, got {type(data_options).__name__}; pass e.g. data_options={{'size': 64}}.")
    data_options = dict(data_options or {})
    splits = registry.open_all(data_root, **data_options)
    if not isinstance(config, TrainConfig):
        config = config_for(registry.input_kind(splits["train"]), config)
    resolve_device(config.device)
    names = splits["train"].class_names
    for name in ("val", "test"):
        if splits[name].class_names != names:
            raise HeatlabError(f"The {name} split of '{data_root}' has other classes than the train split; write the data again.")
    # Build the model (unknown names fail here) and check the weights before anything is written.
    input_shape, normalize = registry.input_shape(splits["train"]), normalize_spec(config, splits["train"])
    model = create_model(config, num_classes=len(names), input_shape=input_shape, normalize=normalize)
    check_takes(model, config.model, splits["train"].load_shard(0)["images"][:1], len(names))
    weights_path = Path(weights) if weights is not None else None
    if weights_path is not None:
        _load_initial_weights(model, weights_path)
    with undo_on_error(run_dir):  # bad input found while training leaves no half-made run behind
        run_dir = ensure_dir(run_dir)
        with RunDir(run_dir).writing("train"):  # one writer per run folder
            remove_stale_tmp(run_dir)
            record = {
                "training": config.to_dict(),
                "data_root": registry.describe_data(data_root),
                "weights": str(weights_path.resolve()) if weights_path is not None else None,
                "weights_sha256": sha256_file(weights_path) if weights_path is not None else None,
                "seed": config.seed,
                "versions": _versions(),
            }
            if data_options:
                record["data_options"] = data_options
            RunDir(run_dir).write_config(record)

            base = stage_info(run_dir, BASE)
            if base is not None and len(base.get("class_names", [])) != len(names):
                raise HeatlabError(
                    f"The base model in '{run_dir}' has {len(base.get('class_names', []))} classes but the data has "
                    f"{len(names)}; choose another --out."
                )
            stage = TrainStage(RunDir(Path(run_dir).resolve()), config, num_classes=len(names), input_shape=input_shape,
                               normalize=normalize, weights=weights_path, progress=progress)
            skipped = [u.name for u in stage.units() if stage.is_done(u)]
            for name in skipped:
                report(progress, f"train/{name}", 1, 1)
            base, *branches = run_stage(stage, progress=progress, backend=backend)
            if not RunDir(run_dir).table("training").is_file():
                _collect_tables(run_dir)
            chance = base.get("chance_acc")
            if chance is None:  # a base model trained before model.json recorded it
                test = splits["test"]
                chance = chance_accuracy(torch.cat([test.load_shard(k)["labels"] for k in range(test.num_shards)]))
            return TrainResult(**_summary(run_dir, base, branches, skipped, chance, len(names)))
