"""The run folder, in one place: its layout, its config, its branches and their models.

Layout (DESIGN §3)::

    <run>/config.json                         resolved config: training settings, data spec, seed, versions
    <run>/model/base/ and model/branch-00/    weights.safetensors + model.json (written last)
    <run>/tables/<name>.parquet               joined tables of every stage (e.g. lrp_filters_effects: the
                                              filter study's paired effects, :meth:`RunDir.table`); each
                                              has one schema in :data:`heatlab.tables.TABLES`
    <run>/tables/no_truth.parquet             no-truth scores (branch, method, metric, sample, value)
    <run>/tables/no_truth_curves.parquet      deletion/insertion curves (... sample, step, fraction, value)
    <run>/tables/parts/<stage>-<split>/...    per-unit pieces that make the stages resumable
    <run>/heatmaps/<split>/<branch>/<method>.safetensors   float16 heatmaps stored by evaluate
    <run>/data/                               the cells `heatlab demo` generates
    <run>/gax/ and gax/parts/                 GAX results (gax.json, results, trajectories, snapshots)
    <run>/mixer/weights/ + gallery.safetensors  the Mixer's trained masks and its gallery
    <run>/lrp-study/                          an LRP study shown by the report (:class:`StudyDir`)
    <run>/report/index.html + gallery.html + no_truth.html + gax.html + figures/   the report
    <run>/.heatlab.lock                       present while a stage writes (heatlab.run.lock)

Branches have one name everywhere: ``"base"`` or ``"branch-00"`` (:func:`branch_name`). Stages and
the report use :class:`RunDir` (and :class:`StudyDir` for an LRP study's folder) instead of literal
file names: no other module builds a path in a run folder from a literal.
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
from heatlab.files import read_json, sha256_file, write_json
from heatlab.models import stored_spec, zoo
from heatlab.models.training import resolve_device
from heatlab.records import read_record
from heatlab.run import lock
from heatlab.run.summaries import CONFIG as CONFIG_SCHEMA, SUMMARIES

CONFIG = "config.json"
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
LOCK = ".heatlab.lock"
BASE = "base"
STUDY = "lrp-study"
GAX_SUMMARY = "gax.json"
#: GAX's joined result files in ``<run>/gax`` (see :mod:`heatlab.run.gax`).
GAX_FILES = ("results.parquet", "trajectories.safetensors", "snapshots.safetensors")
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


def _model_json(run_dir: str | os.PathLike, branch: int | str) -> dict | None:
    """The stage's model.json when the stage is complete (model.json and weights present), None when
    it is not; a HeatlabError naming the file when model.json is no record with a spec object."""
    d = stage_dir(run_dir, branch)
    if not (d / MODEL_JSON).is_file() or not (d / WEIGHTS).is_file():
        return None
    info = read_json(d / MODEL_JSON)
    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict):
        what = "its spec is not an object" if isinstance(info, dict) else f"it holds a {type(info).__name__}, not an object"
        raise HeatlabError(f"'{d / MODEL_JSON}' is not a heatlab model record ({what}); train the model again "
                           "or restore the file.")
    return info


def stage_info(run_dir: str | os.PathLike, branch: int | str) -> dict | None:
    """The stage's model.json when the stage is complete (model.json and weights present), else None."""
    try:
        return _model_json(run_dir, branch)
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
    info = _model_json(run_dir, branch)
    if info is None:
        if stage_info(run_dir, BASE) is None and not list_branches(run_dir):
            raise HeatlabError(f"'{run_dir}' has no trained model; train one there first (heatlab train --out {run_dir}).")
        have = ", ".join([BASE] * (stage_info(run_dir, BASE) is not None) + [str(b) for b in list_branches(run_dir)])
        raise HeatlabError(f"'{run_dir}' has no completed {branch_name(branch)}; choose one of: {have}.")
    return info


def load_branch(run_dir: str | os.PathLike, branch: int | str = 0, *, device: str | torch.device = "cpu",
                trust_model_code: bool = False, model: str | None = None) -> nn.Module:
    """The trained model of ``branch`` (index, name or "base") in eval mode on ``device``.

    A model.json naming code from outside heatlab (``file.py:fn``, ``module:fn``, an entry point) is
    rebuilt only with ``trust_model_code=True`` or when ``model`` (the caller's own model name, e.g.
    train's) names the same code (:func:`heatlab.models.stored_spec.rebuild`).
    """
    info = branch_info(run_dir, branch)
    source = f"'{stage_dir(run_dir, branch) / MODEL_JSON}'"
    weights = stage_dir(run_dir, branch) / WEIGHTS
    net = stored_spec.rebuild(info["spec"], source=source, trust_model_code=trust_model_code, model=model,
                              weights=weights)
    zoo.load_weights(net, weights)
    return net.to(resolve_device(str(device))).eval()


def untrained(info: dict) -> bool:
    """True for the model.json of a model that never trained: 0 iterations from its random initial
    weights (the base model of ``heatlab train --epochs 0`` without ``--weights``)."""
    return info.get("iterations") == 0 and not info.get("initial_weights")


def random_weights_warning(name: str) -> str:
    """The one warning line (without ``warning:``) for a model ``name`` that has random weights; every
    stage that explains or scores such a model prints it, and its page shows it."""
    return f"{name} has random weights (no --weights given); its explanations say nothing about a trained model"


def identity(record: dict) -> dict:
    """What must match for a run folder to be resumed: settings, data and initial weights."""
    training = {k: v for k, v in record.get("training", {}).items() if k not in _MUTABLE}
    return {**training, "data_root": record.get("data_root"), "data_options": record.get("data_options") or {},
            "weights_sha256": record.get("weights_sha256")}


class RunDir:
    """A run folder: ``RunDir(path)``; nothing is read or written until a method asks.

    ``trust_model_code=True`` lets :meth:`load_model` rebuild models whose model.json names code from
    outside heatlab (see :func:`load_branch`); it travels with the RunDir (to Ray workers too).
    """

    def __init__(self, path: str | os.PathLike, *, trust_model_code: bool = False):
        if not isinstance(trust_model_code, bool):
            raise HeatlabError(f"trust_model_code must be True or False, got {trust_model_code!r}.")
        self.path = Path(path)
        self.trust_model_code = trust_model_code
        self._weights_seen: dict[str, tuple[tuple[int, int], str]] = {}  # branch -> ((size, mtime_ns), sha256)

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

    @property
    def no_truth_table(self) -> Path:
        """``<run>/tables/no_truth.parquet``: per-sample no-truth scores (long: branch, method, metric, sample, value)."""
        return self.table("no_truth")

    @property
    def no_truth_curves(self) -> Path:
        """``<run>/tables/no_truth_curves.parquet``: deletion/insertion curves (long: branch, method, metric, sample,
        step, fraction, value)."""
        return self.table("no_truth_curves")

    @property
    def agreement_table(self) -> Path:
        """``<run>/tables/metric_agreement.parquet``: how each no-truth metric's method ranking agrees with the truth's."""
        return self.table("metric_agreement")

    def parts(self, stage: str, split: str) -> Path:
        """Folder of the per-unit pieces of ``stage`` on ``split``."""
        return self.tables_dir / "parts" / f"{stage}-{registry.check_split(split)}"

    @property
    def heatmaps_dir(self) -> Path:
        return self.path / "heatmaps"

    def heatmaps(self, split: str, branch: int | str, method: str) -> Path:
        """``<run>/heatmaps/<split>/<branch>/<method>.safetensors`` (stored by evaluate)."""
        return self.heatmaps_dir / registry.check_split(split) / branch_name(branch) / f"{method}.safetensors"

    def model_dir(self, branch: int | str) -> Path:
        return stage_dir(self.path, branch)

    def weights(self, branch: int | str) -> Path:
        return self.model_dir(branch) / WEIGHTS

    @property
    def data_dir(self) -> Path:
        """``<run>/data``: the cells `heatlab demo` generates inside its run."""
        return self.path / "data"

    @property
    def gax_dir(self) -> Path:
        return self.path / "gax"

    def gax(self, name: str) -> Path:
        """``<run>/gax/<name>`` for one of :data:`GAX_FILES` or ``gax.json`` (:data:`GAX_SUMMARY`)."""
        if name not in (*GAX_FILES, GAX_SUMMARY):
            raise ValueError(f"{name!r} is no GAX file; expected one of {', '.join((*GAX_FILES, GAX_SUMMARY))}.")
        return self.gax_dir / name

    @property
    def gax_parts(self) -> Path:
        """``<run>/gax/parts``: GAX's batch parts, its ``selection.parquet`` and ``settings.json``."""
        return self.gax_dir / "parts"

    @property
    def gax_selection(self) -> Path:
        return self.gax_parts / "selection.parquet"

    @property
    def gax_settings(self) -> Path:
        return self.gax_parts / "settings.json"

    @property
    def mixer_dir(self) -> Path:
        """``<run>/mixer``: the Mixer's weights/ and gallery.safetensors (its IG caches are parts)."""
        return self.path / "mixer"

    def mixer_weights(self, setting: str, seed: int) -> Path:
        """``<run>/mixer/weights/<setting>-seed-<seed>.safetensors``: one trained Mixer."""
        return self.mixer_dir / "weights" / f"{setting}-seed-{seed}.safetensors"

    @property
    def mixer_gallery(self) -> Path:
        """``<run>/mixer/gallery.safetensors``: the first test samples with each setting's A, M and predictions."""
        return self.mixer_dir / "gallery.safetensors"

    @property
    def study(self) -> "StudyDir":
        """``<run>/lrp-study``: the LRP study the report shows (``heatlab lrp-study --out RUN/lrp-study``)."""
        return StudyDir(self.path / STUDY)

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def report_page(self) -> Path:
        """``<run>/report/index.html``: the report, written last."""
        return self.report_dir / "index.html"

    @property
    def gax_page(self) -> Path:
        """``<run>/report/gax.html``: the GAX viewer (images) or results page (tables)."""
        return self.report_dir / "gax.html"

    @property
    def figures_dir(self) -> Path:
        return self.report_dir / "figures"

    def figure(self, name: str) -> Path:
        """``<run>/report/figures/<name>``: a report figure (a fixed file name chosen by the code)."""
        return self.figures_dir / name

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK

    def writing(self, stage: str):
        """Context manager: hold the run's lock (one writer per run folder) while ``stage`` runs.

        Every stage that writes into the run, and ``report``, which reads it, runs inside it; a
        second process waits for the first (see :mod:`heatlab.run.lock`). Re-entrant.
        """
        return lock.holding(self.lock_path, f"heatlab {stage}")

    def summary_path(self, stage: str) -> Path:
        """``<run>/<stage>.json``: what a finished stage did (written last)."""
        return self.path / f"{stage}.json"

    # --- config ----------------------------------------------------------------------------
    def has_config(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> dict:
        """config.json of a trained run (checked: :data:`heatlab.run.summaries.CONFIG`), or one sentence saying how to make it."""
        if not self.has_config():
            raise HeatlabError(f"'{self.path}' is not a trained run (no config.json); run `heatlab train --out {self.path}` first.")
        return self._read_config()

    def _read_config(self) -> dict:
        return read_record(self.config_path, CONFIG_SCHEMA,
                           fix="restore it from a copy or train again into a new folder (heatlab train --out NEW)")

    def seed(self) -> int:
        return self.config().get("seed") or 0

    def data_spec(self) -> str:
        """The dataset the run was trained on, as recorded (a spec or a cell folder)."""
        spec = self.config().get("data_root")
        if not isinstance(spec, str) or not spec:
            raise HeatlabError(f"'{self.config_path}' names no dataset (data_root); train the run again with `heatlab train --data ...`.")
        return spec

    def open_data(self, split: str) -> Split:
        """Split ``split`` of the run's dataset, through the one data interface."""
        options = self.config().get("data_options") or {}
        if registry.names_plugin(self.data_spec()) and not self.trust_model_code:
            raise HeatlabError(f"'{self.config_path}' names dataset '{self.data_spec()}', which only an installed "
                               "package's heatlab.datasets entry point can open; rerun with --trust-model-code if "
                               "you trust that package.")
        data = registry.open_data(self.data_spec(), registry.check_split(split), **options)
        if len(data) == 0:
            raise HeatlabError(f"Split '{split}' of '{self.data_spec()}' has no samples; choose another split.")
        return data

    def write_config(self, record: dict) -> None:
        """Merge ``record`` into config.json; a different training identity is refused."""
        old: dict = {}
        if self.config_path.exists():
            old = self._read_config()
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
        old = self.config().get("attribution") or {}
        self.write_config({"attribution": {**old, stage: record}})

    # --- models ----------------------------------------------------------------------------
    def branch_indices(self) -> list[int]:
        return list_branches(self.path)

    def branches(self) -> list[str]:
        """Names of the completed branches ("branch-00", ...)."""
        return [branch_name(b) for b in list_branches(self.path)]

    def require_branches(self) -> list[str]:
        names = self.branches()
        for d in sorted((self.path / "model").glob("branch-*")):  # a damaged model.json is named, not skipped
            if d.name.removeprefix("branch-").isdigit():
                _model_json(self.path, d.name)
        if not names:
            raise HeatlabError(f"'{self.path}' has no trained branch model; run `heatlab train --out {self.path}` first.")
        return names

    def model_info(self, branch: int | str) -> dict:
        return branch_info(self.path, branch)

    def random_weights(self, branch: int | str) -> bool:
        """True when ``branch``'s model never trained (:func:`untrained`)."""
        return untrained(self.model_info(branch))

    def load_model(self, branch: int | str, *, device: str | torch.device = "cpu") -> nn.Module:
        return load_branch(self.path, branch, device=device, trust_model_code=self.trust_model_code)

    def weights_sha256(self, branch: int | str) -> str:
        """sha256 of ``branch``'s weights file, checked against the one its model.json recorded.

        Hashed once per file state (size, mtime) of this RunDir, like the data shards. Stage
        completion markers store it, so units of a replaced model are computed again; weights
        that no longer match their model.json are one sentence, never silently reused.
        """
        name = branch_name(branch)
        recorded = self.model_info(name).get("weights_sha256")
        path = self.weights(name)
        fix = (f"train {name} again (delete '{self.model_dir(name)}' and run `heatlab train --out {self.path}` with "
               "the run's settings) or restore the file")
        try:
            stat = path.stat()
            seen = (stat.st_size, stat.st_mtime_ns)
            if name in self._weights_seen and self._weights_seen[name][0] == seen:
                return self._weights_seen[name][1]
            sha = sha256_file(path)
        except OSError as exc:
            raise HeatlabError(f"Weights '{path}' are unreadable ({exc.strerror}); {fix}.") from None
        if isinstance(recorded, str) and sha != recorded:
            raise HeatlabError(f"Weights '{path}' do not match the sha256 recorded in its model.json (changed or "
                               f"damaged); {fix}.")
        self._weights_seen[name] = (seen, sha)
        return sha

    def class_names(self) -> list[str]:
        """Class names recorded with the first trained stage ([] when none are recorded)."""
        for b in [BASE, *self.branch_indices()]:
            info = stage_info(self.path, b)
            if info and isinstance(info.get("class_names"), list):
                return [str(c) for c in info["class_names"]]
        return []

    def stage_summary(self, stage: str) -> dict[str, Any] | None:
        """``<run>/<stage>.json`` when the stage finished (checked: :data:`heatlab.run.summaries.SUMMARIES`), else None."""
        path = self.summary_path(stage)
        if not path.is_file():
            return None
        return read_summary(path, stage, f"delete it and run `heatlab {stage} {self.path}` again")


def read_summary(path: str | os.PathLike, stage: str, fix: str) -> dict[str, Any]:
    """The summary ``stage`` wrote at ``path``, checked against its schema; HeatlabError ending in ``fix``."""
    return read_record(path, SUMMARIES[stage], fix=fix)


class StudyDir:
    """The folder of one LRP study (``heatlab lrp-study --out``), standalone or as ``<run>/lrp-study``.

    Layout::

        <study>/lrp-study.json                          the summary, written last
        <study>/tables/lrp_study.parquet                Mean Power rows
        <study>/lrp_study/heatmaps.safetensors          the filtered heatmaps (Fig. 3)
        <study>/lrp_study/checkpoint.safetensors + rows.parquet   resume state, removed when done
        <study>/model/weights.safetensors               the trained model
        <study>/report/figures/                         its figures when no run's report shows it
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"StudyDir('{self.path}')"

    def __fspath__(self) -> str:
        return str(self.path)

    summary = property(lambda self: self.path / "lrp-study.json")
    table = property(lambda self: self.path / "tables" / "lrp_study.parquet")
    heatmaps = property(lambda self: self.path / "lrp_study" / "heatmaps.safetensors")
    checkpoint = property(lambda self: self.path / "lrp_study" / "checkpoint.safetensors")
    rows = property(lambda self: self.path / "lrp_study" / "rows.parquet")
    weights = property(lambda self: self.path / "model" / WEIGHTS)
    report_dir = property(lambda self: self.path / "report")
    figures_dir = property(lambda self: self.report_dir / "figures")

    @property
    def host(self) -> RunDir:
        """Whose lock guards the study: the run folder it sits in, else the study folder itself."""
        parent = RunDir(self.path.parent)
        return parent if parent.has_config() else RunDir(self.path)

    @property
    def run(self) -> RunDir | None:
        """The run whose report shows this study (the study is that run's ``lrp-study``), else None."""
        parent = RunDir(self.path.parent)
        return parent if parent.has_config() and parent.study.path == self.path else None


class ExplainDir:
    """The output folder of ``heatlab explain --out``.

    Layout::

        <out>/attributions.safetensors           every method's attributions, the inputs and the record
        <out>/parts/inputs.safetensors           the images and targets the units explain (while it runs)
        <out>/parts/<method>/shard-NNNNN.*       one unit's attributions + marker, removed when joined
        <out>/overlays/ and index.html           the pages (heatlab.report.explain_pages)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ExplainDir('{self.path}')"

    attributions = property(lambda self: self.path / "attributions.safetensors")
    parts = property(lambda self: self.path / "parts")
    inputs = property(lambda self: self.parts / "inputs.safetensors")
