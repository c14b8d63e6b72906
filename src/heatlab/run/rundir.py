"""The run folder, in one place: its layout, its config, its branches and their models.

Layout (DESIGN §3)::

    <run>/config.json                         resolved config: training settings, data spec, seed, versions
    <run>/model/base/ and model/branch-00/    weights.safetensors + model.json (written last)
    <run>/tables/<name>.parquet               joined tables of every stage
    <run>/tables/parts/<stage>-<split>/...    per-unit pieces that make the stages resumable
    <run>/heatmaps/<split>/<branch>/<method>.safetensors   float16 heatmaps stored by evaluate
    <run>/gax/                                GAX results
    <run>/report/index.html + figures/        the report

Branches have one name everywhere: ``"base"`` or ``"branch-00"`` (:func:`branch_name`). Stages and
the report use :class:`RunDir` instead of literal file names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heatlab.data import registry
from heatlab.data.split import Split
from heatlab.errors import HeatlabError
from heatlab.files import read_json, write_json
from heatlab.models import zoo
from heatlab.models.training import resolve_device

CONFIG = "config.json"
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
BASE = "base"
# Settings that may change between runs in one folder (asking for more branches extends the run).
_MUTABLE = ("branches",)


def branch_name(branch: int | str) -> str:
    """The one name of a stage: "base", or "branch-00" for branch 0 (given as 0, "0" or "branch-00")."""
    if branch == BASE:
        return BASE
    text = str(branch).removeprefix("branch-")
    if isinstance(branch, bool) or not text.isdigit():
        raise HeatlabError(f"Branch {branch!r} is not a branch; pass an index such as 0, or 'base'.")
    return f"branch-{int(text):02d}"


stage_name = branch_name  # the name training has always used


def stage_dir(run_dir: str | os.PathLike, branch: int | str) -> Path:
    return Path(run_dir) / "model" / branch_name(branch)


def stage_info(run_dir: str | os.PathLike, branch: int | str) -> dict | None:
    """The stage's model.json when the stage is complete (model.json and weights present), else None."""
    d = stage_dir(run_dir, branch)
    if not (d / MODEL_JSON).is_file() or not (d / WEIGHTS).is_file():
        return None
    try:
        return read_json(d / MODEL_JSON)
    except HeatlabError:
        return None  # a broken model.json means the stage is redone


def list_branches(run_dir: str | os.PathLike) -> list[int]:
    """Indices of the completed branches of the run, ascending."""
    root = Path(run_dir) / "model"
    found = []
    if root.is_dir():
        for d in root.glob("branch-*"):
            suffix = d.name.removeprefix("branch-")
            if suffix.isdigit() and stage_info(run_dir, int(suffix)) is not None:
                found.append(int(suffix))
    return sorted(found)


def branch_info(run_dir: str | os.PathLike, branch: int | str) -> dict:
    """model.json of a completed stage (``branch`` an index, a name or "base"), or a HeatlabError."""
    info = stage_info(run_dir, branch)
    if info is None:
        if stage_info(run_dir, BASE) is None and not list_branches(run_dir):
            raise HeatlabError(f"'{run_dir}' has no trained model; train one there first (heatlab train --out {run_dir}).")
        have = ", ".join([BASE] * (stage_info(run_dir, BASE) is not None) + [str(b) for b in list_branches(run_dir)])
        raise HeatlabError(f"'{run_dir}' has no completed {branch_name(branch)}; choose one of: {have}.")
    return info


def load_branch(run_dir: str | os.PathLike, branch: int | str = 0, *, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of ``branch`` (index, name or "base") in eval mode on ``device``."""
    info = branch_info(run_dir, branch)
    spec = dict(info["spec"])
    model = zoo.create(spec.pop("name"), **spec)
    zoo.load_weights(model, stage_dir(run_dir, branch) / WEIGHTS)
    return model.to(resolve_device(str(device))).eval()


def identity(record: dict) -> dict:
    """What must match for a run folder to be resumed: settings, data and initial weights."""
    training = {k: v for k, v in record.get("training", {}).items() if k not in _MUTABLE}
    return {**training, "data_root": record.get("data_root"), "data_options": record.get("data_options") or {},
            "weights_sha256": record.get("weights_sha256")}


class RunDir:
    """A run folder: ``RunDir(path)``; nothing is read or written until a method asks."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"

    def __fspath__(self) -> str:
        return str(self.path)

    # --- layout ----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def tables_dir(self) -> Path:
        return self.path / "tables"

    def table(self, name: str) -> Path:
        """``<run>/tables/<name>.parquet``."""
        return self.tables_dir / f"{name}.parquet"

    def parts(self, stage: str, split: str) -> Path:
        """Folder of the per-unit pieces of ``stage`` on ``split``."""
        return self.tables_dir / "parts" / f"{stage}-{registry.check_split(split)}"

    def heatmaps(self, split: str, branch: int | str, method: str) -> Path:
        """``<run>/heatmaps/<split>/<branch>/<method>.safetensors`` (stored by evaluate)."""
        return self.path / "heatmaps" / registry.check_split(split) / branch_name(branch) / f"{method}.safetensors"

    def model_dir(self, branch: int | str) -> Path:
        return stage_dir(self.path, branch)

    def weights(self, branch: int | str) -> Path:
        return self.model_dir(branch) / WEIGHTS

    @property
    def gax_dir(self) -> Path:
        return self.path / "gax"

    @property
    def mixer_dir(self) -> Path:
        """``<run>/mixer``: the Mixer's weights/ and gallery.safetensors (its IG caches are parts)."""
        return self.path / "mixer"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def figures_dir(self) -> Path:
        return self.report_dir / "figures"

    def summary_path(self, stage: str) -> Path:
        """``<run>/<stage>.json``: what a finished stage did (written last)."""
        return self.path / f"{stage}.json"

    # --- config ----------------------------------------------------------------------------
    def has_config(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> dict:
        """config.json of a trained run, or one sentence saying how to make it."""
        if not self.has_config():
            raise HeatlabError(f"'{self.path}' is not a trained run (no config.json); run `heatlab train --out {self.path}` first.")
        config = read_json(self.config_path)
        if not isinstance(config, dict):
            raise HeatlabError(f"'{self.config_path}' is not a heatlab run config; train into another folder.")
        return config

    def seed(self) -> int:
        return int(self.config().get("seed", 0))

    def data_spec(self) -> str:
        """The dataset the run was trained on, as recorded (a spec or a cell folder)."""
        spec = self.config().get("data_root")
        if not isinstance(spec, str) or not spec:
            raise HeatlabError(f"'{self.config_path}' names no dataset (data_root); train the run again with `heatlab train --data ...`.")
        return spec

    def open_data(self, split: str) -> Split:
        """Split ``split`` of the run's dataset, through the one data interface."""
        options = self.config().get("data_options") or {}
        if not isinstance(options, dict):
            raise HeatlabError(f"'{self.config_path}' has data_options that are not a mapping; train the run again.")
        data = registry.open_data(self.data_spec(), registry.check_split(split), **options)
        if len(data) == 0:
            raise HeatlabError(f"Split '{split}' of '{self.data_spec()}' has no samples; choose another split.")
        return data

    def write_config(self, record: dict) -> None:
        """Merge ``record`` into config.json; a different training identity is refused."""
        old: dict = {}
        if self.config_path.exists():
            old = read_json(self.config_path)
            if not isinstance(old, dict):
                raise HeatlabError(f"'{self.config_path}' is not a heatlab run config; choose another --out.")
            if "training" in old and "training" in record:
                a, b = identity(old), identity(record)
                diffs = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
                if diffs:
                    raise HeatlabError(
                        f"'{self.path}' already holds a training run with different settings ({', '.join(diffs)}); "
                        "choose another --out or run again with the same settings."
                    )
        merged = {**old, **record}  # keeps keys other stages may have written
        if merged != old:
            write_json(self.config_path, merged)

    def record_attribution(self, stage: str, record: dict) -> None:
        """Store the attribution settings ``stage`` used under ``config.json["attribution"][stage]``."""
        old = self.config().get("attribution", {})
        self.write_config({"attribution": {**old, stage: record}})

    # --- models ----------------------------------------------------------------------------
    def branch_indices(self) -> list[int]:
        return list_branches(self.path)

    def branches(self) -> list[str]:
        """Names of the completed branches ("branch-00", ...)."""
        return [branch_name(b) for b in list_branches(self.path)]

    def require_branches(self) -> list[str]:
        names = self.branches()
        if not names:
            raise HeatlabError(f"'{self.path}' has no trained branch model; run `heatlab train --out {self.path}` first.")
        return names

    def model_info(self, branch: int | str) -> dict:
        return branch_info(self.path, branch)

    def load_model(self, branch: int | str, *, device: str | torch.device = "cpu") -> nn.Module:
        return load_branch(self.path, branch, device=device)

    def class_names(self) -> list[str]:
        """Class names recorded with the first trained stage ([] when none are recorded)."""
        for b in [BASE, *self.branch_indices()]:
            info = stage_info(self.path, b)
            if info and isinstance(info.get("class_names"), list):
                return [str(c) for c in info["class_names"]]
        return []

    def stage_summary(self, stage: str) -> dict[str, Any] | None:
        """``<run>/<stage>.json`` when the stage finished, else None."""
        path = self.summary_path(stage)
        return read_json(path) if path.is_file() else None
