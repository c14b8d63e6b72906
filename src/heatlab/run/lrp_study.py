"""`heatlab lrp-study`: Mean Power per layer during training and filtered LRP heatmaps (paper 004, Fig. 2/3).

Trains a zoo model (default the paper's SmallNet on the offline 8×8 digits at 28 px) in continuous
mode and, every ``every`` iterations (and after the last), on a fixed evaluation subset (the first
``eval_samples`` test samples; the paper draws 240 at random): the accuracy, and one LRP pass
(``composite``, ``maxpool``, from the predicted logit, or every logit with ``start="all"``)
recording the relevance where paper 004's code records it (Fig. 2's "first four convolutional
layers"): its ``convb_k`` is the relevance *entering* block k, so ``convb_1`` is the input heatmap
and ``convb_k`` (k = 2, 3, 4) the relevance at the output of the block holding the (k−1)-th
convolution (:func:`mp_points`). The per-sample Mean Power
(:func:`heatlab.score.mean_power.mean_power`) of each is averaged. After training, the LRP heatmaps
of the first ``heatmap_samples`` test samples are computed with no filter and with each filter
(``filters``, the paper's eight by default) at ``filter_layers`` (default: the model's).

Outputs in ``out`` (:class:`heatlab.run.rundir.StudyDir` names them): ``tables/lrp_study.parquet`` (iteration, epoch, loss, accuracy, layer (the
original's name, e.g. ``convb_2``), recorded_at (``input`` or heatlab's module name), mp_mean,
mp_std, n), ``lrp_study/heatmaps.safetensors`` (``heatmaps`` F×S×C×H×W float16 in
filter order, each divided by its max |value|, whose value is in ``scale`` F×S float32; ``inputs``,
``labels``, ``predictions``), ``model/weights.safetensors`` and
``lrp-study.json`` written last; :mod:`heatlab.report.lrp_figures` draws Fig. 2 and Fig. 3 from them.

Resumable: after every epoch the rows so far (``lrp_study/rows.parquet``) and a checkpoint
(``lrp_study/checkpoint.safetensors``: model, Adam state, data-order and dropout RNG states, the
settings in its metadata) are written, the checkpoint last. A killed study started again with the
same settings goes on from the last whole epoch and ends with the same table, heatmaps and weights
as one that never stopped; other settings start afresh. A finished study with the same settings is
not run again; the checkpoint is removed once the summary is written. The epochs are units of the
Stage runner (:class:`StudyStage`), so any backend runs them, one after the other, on
:data:`~heatlab.run.runner.FIXED_THREADS` CPU threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from heatlab.data import registry
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.explain.filters import parse_filters
from heatlab.explain.methods.lrp import (
    RelevanceRecorder, check_composite, check_maxpool, check_start, chosen_filter_layers, lrp_maxpool,
)
from heatlab.explain.postprocess import normalize_max_abs
from heatlab.files import atomic_path, ensure_dir, write_json
from heatlab.models import zoo
from heatlab.models.checkpoint import Checkpoint
from heatlab.models.training import (
    TrainConfig, check_takes, create_model, normalize_spec, num_batches, predict, train_continuous,
)
from heatlab.progress import Progress, report
from heatlab.run.results import LrpStudyResult
from heatlab.run.rundir import StudyDir, read_summary
from heatlab.run.runner import FIXED_THREADS, PARQUET, TENSORS, Stage, Unit, Work, run_stage
from heatlab.score.mean_power import mean_power
from heatlab.tables import TABLES

INPUT = "input"


def mp_points(model: torch.nn.Module, n: int = 4) -> dict[str, str]:
    """Fig. 2's points as paper 004's code names them: ``{"convb_1": "input", "convb_2": layer, ...}``.

    ``convb_k`` is the relevance entering block k: ``convb_1`` the input heatmap, ``convb_k`` for
    k ≥ 2 the relevance at the output of the module holding the (k−1)-th convolution (its parent,
    e.g. ``block1``, when that parent holds no other convolution; else the convolution itself).
    """
    modules = dict(model.named_modules())
    convs = [name for name, m in modules.items() if isinstance(m, torch.nn.Conv2d)][: n - 1]
    points = {"convb_1": INPUT}
    for k, conv in enumerate(convs, start=2):
        parent = conv.rpartition(".")[0]
        alone = parent and sum(isinstance(m, torch.nn.Conv2d) for m in modules[parent].modules()) == 1
        points[f"convb_{k}"] = parent if alone else conv
    return points


@dataclass(frozen=True)
class StudyUnit(Unit):
    """Epoch ``epoch`` of the study's training (wave ``epoch``: it starts from the checkpoint the
    epoch before left on disk), or with ``heatmaps`` the filtered heatmaps of the trained model
    (the last wave)."""

    epoch: int
    heatmaps: bool = False

    def stem(self, parts: Path) -> Path:
        return parts / ("heatmaps" if self.heatmaps else f"epoch-{self.epoch:05d}")

    def describe(self) -> str:
        return "the heatmaps" if self.heatmaps else f"epoch {self.epoch}"

    @property
    def wave(self) -> int:
        return self.epoch


class StudyStage(Stage):
    """The study on the Stage runner: units :class:`StudyUnit`, one per epoch (each depends on the one
    before: a chain of waves), then the heatmaps.

    An epoch unit reads the last checkpoint from the study folder, trains one epoch recording the Mean
    Power rows, and returns the rows and the new checkpoint; the driver writes them in the layout the
    study has always had (``lrp_study/rows.parquet``, then ``checkpoint.safetensors`` last, which marks
    the epochs done), so a study killed under the old code resumes too. The heatmaps unit returns the
    heatmaps and the weights of the last checkpoint; :meth:`join` writes the table and the summary.
    """

    name = "lrp-study"
    kinds = {"rows": PARQUET, "checkpoint": TENSORS}
    threads = FIXED_THREADS  # the same bytes on every backend (Stage.threads)

    def __init__(self, out: StudyDir, *, data: str, options: dict, config: TrainConfig, settings: dict,
                 points: dict[str, str], f_layers: list[str], progress: Progress | None):
        super().__init__(out.host, device=config.device, batch_size=64)
        self.out, self.data, self.options, self.config = out, data, options, config
        self.settings_, self.points, self.f_layers, self.progress = settings, points, f_layers, progress
        self.lrp = {"composite": settings["composite"], "start": settings["start"], "maxpool": settings["maxpool"]}

    def shared_file(self) -> Path:
        return self.out.path

    def units(self) -> list[StudyUnit]:
        epochs = self.config.epochs
        return [*(StudyUnit(k) for k in range(max(epochs, 1))), StudyUnit(max(epochs, 1), heatmaps=True)]

    # --- the study's own layout -----------------------------------------------------------
    def is_done(self, unit: StudyUnit) -> bool:
        if unit.heatmaps:
            return False  # a few samples: redone with the summary
        found = _read_checkpoint(self.out, self.settings_)
        return found is not None and found[0].epochs_done >= min(unit.epoch + 1, self.config.epochs)

    def write(self, unit: StudyUnit, pieces: Mapping[str, Any]) -> None:
        if unit.heatmaps:
            with atomic_path(self.out.heatmaps) as tmp:
                save_file(pieces["heatmaps"], str(tmp), metadata={"filters": json.dumps(self.settings_["filters"])})
            ensure_dir(self.out.weights.parent)
            zoo.save_state(pieces["weights"], self.out.weights, pieces["spec"])
            return
        earlier = _read_checkpoint(self.out, self.settings_) if unit.epoch else None
        rows = [r for r in earlier[1] if r["epoch"] < unit.epoch] if earlier is not None else []
        TABLES["lrp_study"].write(self.out.rows, pd.DataFrame(rows + pieces["rows"].to_dict("records")))
        with atomic_path(self.out.checkpoint) as tmp:  # last: the epoch counts as done
            save_file(pieces["checkpoint"], str(tmp), metadata={"settings": json.dumps(self.settings_, sort_keys=True)})

    def read(self, unit: StudyUnit, kind: str) -> Any:  # pragma: no cover - join reads the files itself
        raise NotImplementedError

    def joined(self) -> list[str]:
        return []

    # --- what a unit runs (on any backend) --------------------------------------------------
    def _split(self, work: Work, split: str):
        return work.memo(f"study-{split}", self.data, lambda: registry.open_data(self.data, split, **self.options))

    def _net(self, work: Work, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        train = self._split(work, "train")
        net = create_model(self.config, num_classes=len(train.class_names), input_shape=registry.input_shape(train),
                           normalize=normalize_spec(self.config, train))
        if state is not None:
            net.load_state_dict(state)
        return net

    def run_unit(self, work: Work, unit: StudyUnit) -> dict[str, Any]:
        return self._heatmaps(work) if unit.heatmaps else self._epoch(work, unit.epoch)

    def _epoch(self, work: Work, epoch: int) -> dict[str, Any]:
        """Train epoch ``epoch`` from the checkpoint on disk (epoch 0: from the seeded initialisation,
        recording iteration 0 first); the Mean Power rows of its evaluations and the checkpoint after it."""
        train = self._split(work, "train")
        net = self._net(work)
        x_eval, y_eval = _first(self._split(work, "test"), self.settings_["eval_samples"])
        layers = [layer for layer in self.points.values() if layer != INPUT]
        total, every = self.config.epochs * num_batches(train, self.config.batch_size), self.settings_["every"]
        rows: list[dict] = []

        def evaluate(it: int, epoch: int, loss: float) -> None:
            pred = predict(net, (x_eval, y_eval), 64)[0]
            rec = RelevanceRecorder(layers)
            heat = attribute(net, x_eval, "LRP", target=pred, record=rec, batch_size=64, **self.lrp)
            recorded = {INPUT: heat, **rec.relevance}
            for label, at in self.points.items():
                mp = mean_power(recorded[at]).mp.double()
                rows.append({"iteration": it, "epoch": epoch, "loss": loss, "accuracy": float((pred == y_eval).double().mean()),
                             "layer": label, "recorded_at": at, "mp_mean": float(mp.mean()),
                             "mp_std": float(mp.std(unbiased=False)), "n": len(mp)})

        def on_step(it: int, epoch: int, loss: float) -> None:
            report(self.progress, "lrp-study", it, total)
            if it % every == 0 or it == total:
                evaluate(it, epoch, loss)

        resume = None
        if epoch == 0:
            evaluate(0, 0, float("nan"))
        else:
            found = _read_checkpoint(self.out, self.settings_)
            if found is None or found[0].epochs_done != epoch:
                raise HeatlabError(f"The checkpoint of epoch {epoch} in '{self.out.path}' is missing or from other "
                                   "settings; run the same command again to redo the study from its last whole epoch.")
            resume = found[0]
        after: list[Checkpoint] = []
        epochs = min(epoch + 1, self.config.epochs)
        train_continuous(net, train, replace(self.config, epochs=epochs), on_step=on_step, resume=resume,
                         on_epoch=after.append)
        if not after:  # a study of 0 epochs: the initial model is the trained one
            after.append(Checkpoint(0, 0, net.state_dict(), {}, torch.Generator().get_state(), torch.get_rng_state()))
        return {"rows": pd.DataFrame(rows, columns=ROW_COLUMNS), "checkpoint": after[-1].to_tensors()}

    def _heatmaps(self, work: Work) -> dict[str, Any]:
        """LRP heatmaps of the first test samples with no filter and each filter, by the model of the last
        checkpoint, and that model's weights."""
        found = _read_checkpoint(self.out, self.settings_)
        if found is None or found[0].epochs_done != self.config.epochs:
            raise HeatlabError(f"The study in '{self.out.path}' has no checkpoint of its last epoch; run the same "
                               "command again to finish it.")
        net = self._net(work, found[0].model)
        x_map, y_map = _first(self._split(work, "test"), self.settings_["heatmap_samples"])
        p_map = predict(net, (x_map, y_map), 64)[0]
        maps = [attribute(net, x_map, "LRP", target=p_map,
                          filters=None if f == "none" else {layer: f for layer in self.f_layers}, **self.lrp).cpu()
                for f in self.settings_["filters"]]
        stacked = torch.stack(maps).float()  # F×S×...; relevance of a weak model underflows float16
        scale = stacked.flatten(2).abs().amax(2)  # F×S
        heatmaps = {"heatmaps": normalize_max_abs(stacked.flatten(0, 1)).view_as(stacked).half().contiguous(),
                    "scale": scale.contiguous(), "inputs": x_map.half().contiguous(),
                    "labels": y_map.long(), "predictions": p_map.long()}
        return {"heatmaps": heatmaps, "weights": zoo.state_tensors(net), "spec": dict(net.heatlab_spec)}

    def join(self, units: Sequence[StudyUnit], parts: dict[str, list[Any]]) -> LrpStudyResult:
        """Write the table and the summary (last), then remove the resume state; returns the summary."""
        out, points = self.out, self.points
        table = pd.DataFrame(TABLES["lrp_study"].read(out.rows, fix=_restart(out)).to_dict("records"))
        TABLES["lrp_study"].write(out.table, table)
        last = table[table["iteration"] == table["iteration"].max()]
        first = table[table["iteration"] == 0]
        trend = {layer: {"start": float(first.loc[first["layer"] == layer, "mp_mean"].iloc[0]),
                         "end": float(last.loc[last["layer"] == layer, "mp_mean"].iloc[0])} for layer in points}
        train = registry.open_data(self.data, "train", **self.options)
        summary = {"settings": self.settings_, "mp_layers": list(points), "mp_points": points,
                   "filter_layers": self.f_layers, "maxpool": self.settings_["maxpool"],
                   "iterations": self.config.epochs * num_batches(train, self.config.batch_size),
                   "final_accuracy": float(last["accuracy"].iloc[0]), "mp_trend": trend,
                   "random_weights": self.config.epochs == 0, "complete": True}
        write_json(out.summary, summary)
        for path in (out.checkpoint, out.rows):
            path.unlink(missing_ok=True)
        return LrpStudyResult.from_record(summary)


ROW_COLUMNS = ["iteration", "epoch", "loss", "accuracy", "layer", "recorded_at", "mp_mean", "mp_std", "n"]


def lrp_study(data: str, out, *, model: str = "smallnet", epochs: int = 2, batch_size: int = 32, lr: float = 1e-3,
              every: int = 20, eval_samples: int = 240, heatmap_samples: int = 4, composite: str = "epsilon_plus",
              start: str = "target", filters: Sequence[str] | str | None = None, seed: int = 0, device: str = "cpu", size: int | None = None,
              maxpool: str | None = None, filter_layers: Sequence[str] | str | None = None,
              progress: Progress | None = None, backend: Any = None) -> LrpStudyResult:
    """Run the study (see the module docstring); returns the summary written to ``lrp-study.json``.

    ``size``: the side the digit datasets are served at (default 28, and 140 for the paper's
    ``smallnet140``/``alexnetlike140``, which take the 28-px digits enlarged inside the data pipeline).
    ``maxpool``: LRP's max-pooling rule ("average" or "winner"; default the model's, see
    :func:`heatlab.explain.methods.lrp.lrp_maxpool`). ``filter_layers``: where the filters act
    (names or ``"block6,block5"``; default the model's ``heatlab_filter_layers``). ``backend``
    (:func:`heatlab.run.runner.make_backend`, default local) runs the units (:class:`StudyStage`: one per
    epoch, each after the one before, then the heatmaps) on :data:`~heatlab.run.runner.FIXED_THREADS` CPU threads each, so every backend writes
    byte-identical weights, heatmaps and the same table. ``progress`` gets ``("lrp-study", iteration,
    iterations)`` from units run in this process and ``("lrp-study/units", done, units)``.
    """
    check_composite(composite)
    check_start(start)
    check_maxpool(maxpool)
    names = parse_filters(filters)
    if Path(out).exists() and not Path(out).is_dir():
        raise HeatlabError(f"'{out}' is a file, not a folder; choose another output path.")
    for what, value in (("every", every), ("eval_samples", eval_samples), ("heatmap_samples", heatmap_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HeatlabError(f"{what} must be a whole number >= 1, got {value!r}; pass e.g. {what}=20.")
    config = TrainConfig(model=model, epochs=epochs, branches=0, batch_size=batch_size, lr=lr, schedule="constant",
                         seed=seed, device=device)
    if size is None and model.endswith("140"):
        size = 140
    options = {} if size is None else {"size": size}
    train, test = registry.open_data(data, "train", **options), registry.open_data(data, "test", **options)
    if registry.input_kind(test) != "image":
        raise HeatlabError("The LRP study needs image data; pass e.g. --data digits or a cell folder.")

    net = create_model(config, num_classes=len(train.class_names), input_shape=registry.input_shape(train),
                       normalize=normalize_spec(config, train))
    check_takes(net, model, test.load_shard(0)["images"][:1])
    f_layers = chosen_filter_layers(net, filter_layers)
    points = mp_points(net)
    settings = {"data": registry.describe_data(data), "model": model, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "every": every, "eval_samples": eval_samples, "heatmap_samples": heatmap_samples,
                "composite": composite, "start": start, "maxpool": lrp_maxpool(net, maxpool),
                "filters": ["none", *names], "filter_layers": f_layers, "seed": seed, "size": size}
    out = StudyDir(Path(out).resolve())  # absolute: a worker may run elsewhere
    ensure_dir(out.path)
    # One writer: the run's lock when the study is written inside a run folder, else the study's own.
    with out.host.writing("lrp-study"):
        if (done := _read_summary(out)) is not None:
            if done["settings"] == json.loads(json.dumps(settings)) and done.get("complete"):
                return LrpStudyResult.from_record(done)
        stage = StudyStage(out, data=settings["data"], options=options, config=config,
                           settings=json.loads(json.dumps(settings)), points=points, f_layers=f_layers, progress=progress)
        units = None if progress is None else (lambda task, done, total: progress("lrp-study/units", done, total))
        return run_stage(stage, progress=units, backend=backend)


def read_study_summary(path: str | Path) -> dict:
    """A finished study's ``lrp-study.json`` at ``path``, checked (HeatlabError names the file and the fix)."""
    return read_summary(path, "lrp-study", "delete it and run `heatlab lrp-study` into that folder again")


def _read_summary(out: StudyDir) -> dict | None:
    """The study's summary in ``out``; None when there is none or it is damaged (the study is then run again)."""
    try:
        return read_study_summary(out.summary) if out.summary.is_file() else None
    except HeatlabError:
        return None


def _read_checkpoint(out: StudyDir, settings: dict) -> tuple[Checkpoint, list[dict]] | None:
    """The study's last epoch checkpoint and the rows up to it, when both were written with ``settings``.

    A checkpoint or rows file that cannot be read (truncated, overwritten) is resume state only: the
    study starts afresh and overwrites both. A readable rows file that is not the study's table (a
    column missing or of another kind) is one HeatlabError naming it and the fix.
    """
    path = out.checkpoint
    if not (path.is_file() and out.rows.is_file()):
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("settings") != json.dumps(settings, sort_keys=True):
                return None
            checkpoint = Checkpoint.from_tensors({k: f.get_tensor(k) for k in f.keys()})
        table = pd.read_parquet(out.rows)
    except Exception:  # safetensors, pyarrow and a missing key raise several types
        return None
    TABLES["lrp_study"].check(table, out.rows, fix=_restart(out))
    return checkpoint, table[table["iteration"] <= checkpoint.iteration].to_dict("records")


def _restart(out: StudyDir) -> str:
    """The fix for damaged resume state: start the study afresh."""
    return f"delete '{out.rows}' and run `heatlab lrp-study --out {out.path}` again to start afresh"


def _first(split, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, have = [], [], 0
    for k in range(split.num_shards):
        shard = split.load_shard(k)
        xs.append(shard["images"][: n - have])
        ys.append(shard["labels"][: n - have])
        have += len(ys[-1])
        if have >= n:
            break
    return torch.cat(xs), torch.cat(ys)
