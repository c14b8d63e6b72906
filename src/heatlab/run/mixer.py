"""`heatlab mixer RUN`: paper 003's IG soft mask on a trained run, for three attribution settings and a control.

Two stages on :mod:`heatlab.run.runner`, both resumable:

1. ``mixer-ig``: IntegratedGradients attributions A(x, C) of one branch's model C for every
   train and test sample, per attribution setting (:data:`heatlab.improve.mixer.SETTINGS`), one
   unit per (split, shard) for all settings. They are cached in the run as float16 safetensors: A divided
   by its per-sample max |A| (float16 keeps the shape of tiny IG values that way) and that max as
   float32, so Mixer training never recomputes them.
   ``mixer-ig-wrong`` (only with a label-informed setting, :data:`~heatlab.improve.mixer.LABEL_INFORMED`):
   the leak test's input, IG for a seeded random *wrong* label of every test sample (drawn per shard
   with seed ``config.seed + shard``), cached the same way with the labels drawn.
2. ``mixer``: one unit per (setting, seed ``config.seed + i``, i < ``seeds``) trains Fx, FA and the Mixer on the training split
   (``holdout`` of it held out for early stopping; the seed also draws the hold-out) and scores
   C(x) and C(x ⊙ M) on the test split; the unit (:class:`MixerUnit`) reads the samples and the
   cached attributions from the run folder, so any backend can run it. For a
   label-informed setting it also runs the leak test: the same Mixer fed the wrong-label
   attribution; how often C(x ⊙ M) still finds the true label and how often it predicts the label fed.

Outputs: ``tables/mixer.parquet`` (one row per setting and seed: accuracies, leak test, epochs, grid
choice), ``tables/mixer_predictions.parquet`` (one row per setting, seed and test sample),
``tables/mixer_history.parquet`` (per epoch), ``mixer/weights/<setting>-seed-<s>.safetensors``
(each trained Mixer), ``mixer/gallery.safetensors`` (x, A, M and the predictions of the first test
samples, with the first seed's Mixer) and ``mixer.json`` (per setting: the mean over seeds with a
95% bootstrap interval over seeds and test samples, the gain over C(x) with its paired interval,
whether the setting is label-informed, and the leak test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from heatlab.data.split import Split, iter_shards
from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, write_json
from heatlab.improve.mixer import (
    LABEL_INFORMED, SETTINGS, MaskedClassifier, MixerConfig, all_mixer_attributions, leak_scores, masked_predictions, masks,
    mixer_attributions, parse_settings, predict_probabilities, random_wrong_labels, resolve_architecture, train_mixer,
)
from heatlab.models.training import predict, resolve_device
from heatlab.progress import Progress
from heatlab.run.results import MixerResult
from heatlab.run.rundir import BASE, RunDir, branch_name, stage_info
from heatlab.run.runner import PARQUET, TENSORS, ShardUnit, Stage, Unit, Work, backend_session, read_piece, run_stage
from heatlab.score.intervals import BOOTSTRAP_RESAMPLES, bootstrap_over_seeds_and_samples
from heatlab.tables import TABLES

IG_STAGE, WRONG_STAGE, STAGE = "mixer-ig", "mixer-ig-wrong", "mixer"
GALLERY = 6
CONFIDENCE = 0.95


def _branch(run: RunDir, branch: int | str | None) -> str:
    names = run.require_branches()
    if branch is None:
        return names[0]
    name = branch_name(branch)
    if name == BASE and stage_info(run.path, BASE) is not None:
        return name
    if name not in names:
        raise HeatlabError(f"'{run.path}' has no completed {name}; its branches are {', '.join(names)} "
                           f"(pass e.g. branch={names[0].removeprefix('branch-').lstrip('0') or '0'}).")
    return name


class MixerIG(Stage):
    """Units (split, branch, "ig", shard): IG attributions of one shard for every setting, per-sample
    normalised, float16 (the settings share one unit so "predicted" can reuse the true-class IG)."""

    name = IG_STAGE
    kinds = {"ig": TENSORS}
    threads = 1  # the same bytes on every backend (Stage.threads): the Mixer trains on them

    def __init__(self, run: RunDir, branch: str, settings: Sequence[str], *, splits: dict[str, int],
                 n_steps: int, batch_size: int, device: str):
        super().__init__(run, device=device, batch_size=batch_size)
        self.branch, self.settings_, self.splits, self.n_steps = branch, list(settings), splits, n_steps

    def units(self) -> list[ShardUnit]:
        return [ShardUnit(split, self.branch, "ig", k) for split, shards in self.splits.items() for k in range(shards)]

    def settings(self, unit: ShardUnit) -> dict:
        return {"n_steps": self.n_steps, "settings": self.settings_}

    def run_unit(self, work: Work, unit: ShardUnit) -> dict[str, Any]:
        shard = work.shard(unit.split, unit.shard)
        found = all_mixer_attributions(work.model(unit.branch), shard["images"], shard["labels"], self.settings_,
                                       n_steps=self.n_steps, batch_size=self.batch_size)
        tensors = {}
        for setting, a in found.items():
            tensors[f"a/{setting}"], tensors[f"scale/{setting}"] = _pack(a)
        return {"ig": tensors}

    def join(self, units: Sequence[ShardUnit], parts: dict[str, list[Any]]) -> None:
        """Nothing: the Mixer's units read the pieces they need (:meth:`attributions`)."""

    def joined(self) -> list[str]:
        return []

    def attributions(self, split: str, setting: str, n: int) -> torch.Tensor:
        """A of ``setting`` for the first ``n`` samples of ``split``, float32 N×..., the max |A| put back."""
        pieces = [read_piece(self, u, "ig") for u in self.units() if u.split == split]
        return torch.cat([_unpack(p[f"a/{setting}"], p[f"scale/{setting}"]) for p in pieces])[:n]


class MixerWrongIG(Stage):
    """Units ("test", branch, "ig-wrong", shard): IG of each test sample for a seeded random wrong label
    (seed ``seed + shard``), stored like :class:`MixerIG` together with the labels drawn."""

    name = WRONG_STAGE
    kinds = {"ig": TENSORS}
    threads = 1

    def __init__(self, run: RunDir, branch: str, *, shards: int, n_classes: int, seed: int, n_steps: int,
                 batch_size: int, device: str):
        super().__init__(run, device=device, batch_size=batch_size)
        self.branch, self.shards, self.n_classes, self.seed, self.n_steps = branch, shards, n_classes, seed, n_steps

    def units(self) -> list[ShardUnit]:
        return [ShardUnit("test", self.branch, "ig-wrong", k) for k in range(self.shards)]

    def settings(self, unit: ShardUnit) -> dict:
        return {"n_steps": self.n_steps, "n_classes": self.n_classes, "seed": self.seed}

    def run_unit(self, work: Work, unit: ShardUnit) -> dict[str, Any]:
        shard = work.shard(unit.split, unit.shard)
        wrong = random_wrong_labels(shard["labels"], self.n_classes, self.seed + unit.shard)
        a = mixer_attributions(work.model(unit.branch), shard["images"], wrong, "true-class", n_steps=self.n_steps,
                               batch_size=self.batch_size)
        packed, scale = _pack(a)
        return {"ig": {"a": packed, "scale": scale, "wrong": wrong}}

    def join(self, units: Sequence[ShardUnit], parts: dict[str, list[Any]]) -> None:
        """Nothing: the Mixer's units read the pieces they need (:meth:`leak`)."""

    def joined(self) -> list[str]:
        return []

    def leak(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A for the wrong labels, float32 N×..., the wrong labels N) of the first ``n`` test samples."""
        pieces = [read_piece(self, u, "ig") for u in self.units()]
        return (torch.cat([_unpack(p["a"], p["scale"]) for p in pieces])[:n], torch.cat([p["wrong"] for p in pieces])[:n])


def _pack(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (N×...) -> (A / max|A| per sample as float16, max|A| float32 N): float16 keeps tiny IG values' shape."""
    a = a.detach().cpu().float()
    scale = a.flatten(1).abs().amax(1)
    return (a / _per_sample(torch.where(scale > 0, scale, torch.ones_like(scale)), a)).half(), scale


def _unpack(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    a = packed.float()
    return a * _per_sample(scale, a)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``N`` values shaped to broadcast over ``like`` (``N×...``)."""
    return v.view(-1, *[1] * (like.dim() - 1))


@dataclass(frozen=True)
class MixerUnit(Unit):
    """One Mixer: attribution ``setting``, the ``index``-th seed (``config.seed + index``), ``branch``'s model as C."""

    branch: str
    setting: str
    index: int

    def stem(self, parts: Path) -> Path:
        # the folders the Mixer's units have always used, so a run stopped before this key resumes
        return parts / self.branch / self.setting / f"shard-{self.index:05d}"

    def describe(self) -> str:
        return f"{self.setting} seed {self.index} of {self.branch}"

    def depends_on(self) -> str:
        return self.branch

    def group(self) -> str:
        return self.branch


class MixerStage(Stage):
    """Units :class:`MixerUnit`: train a Mixer for the setting, score it on the test split (and, for a
    label-informed setting when ``wrong`` is given, run the leak test). A unit reads what it needs from
    the run folder: the data (:meth:`RunDir.open_data`, the first ``limits[split]`` samples) and the
    attributions cached by ``ig`` and ``wrong`` (kept by the worker while its units use them)."""

    name = STAGE
    kinds = {"rows": PARQUET, "history": PARQUET, "masks": TENSORS, "weights": TENSORS, "predictions": TENSORS}
    threads = 1  # the same rows on every backend (Stage.threads)

    def __init__(self, run: RunDir, branch: str, settings: Sequence[str], seeds: int, config: MixerConfig, *,
                 limits: dict[str, int | None], counts: dict[str, int], ig: MixerIG | None, wrong: MixerWrongIG | None,
                 n_classes: int, n_steps: int, batch_size: int, device: str, progress: Progress | None):
        super().__init__(run, device=device, batch_size=batch_size)
        self.branch, self.settings_, self.seeds, self.config = branch, list(settings), seeds, config
        self.limits, self.counts, self.ig, self.wrong = limits, counts, ig, wrong
        self.n_steps, self.progress, self.n_classes = n_steps, progress, n_classes

    def parts_dir(self, unit: MixerUnit) -> Path:
        return self.run.parts(self.name, "test")

    def units(self) -> list[MixerUnit]:
        return [MixerUnit(self.branch, s, i) for s in self.settings_ for i in range(self.seeds)]

    def settings(self, unit: MixerUnit) -> dict:
        return {"config": self.config.to_dict(), "n_steps": self.n_steps, "train_samples": self.counts["train"],
                "test_samples": self.counts["test"], "leak_test": self._leaks(unit.setting)}

    def _leaks(self, setting: str) -> bool:
        return setting in LABEL_INFORMED and self.wrong is not None

    # what a unit reads, kept by the worker's Work while the next unit needs the same
    def inputs(self, work: Work) -> dict[str, dict[str, torch.Tensor]]:
        """{"train": {"x", "y"}, "test": {"x", "y", "plain"}}: the samples used and C's test predictions."""
        def load() -> dict:
            data = {split: _load(work.data(split), limit) for split, limit in self.limits.items()}
            test = data["test"]
            test["plain"] = predict(work.model(self.branch), (test["x"], test["y"]), self.batch_size)[0]
            return data

        return work.memo("mixer-inputs", (self.branch, tuple(self.limits.items())), load)

    def attributions(self, work: Work, split: str, setting: str) -> torch.Tensor:
        x = self.inputs(work)[split]["x"]
        if setting == "none":  # the control: no attribution
            return torch.zeros_like(x)
        return work.memo(f"mixer-a-{split}", setting, lambda: self.ig.attributions(split, setting, len(x)))

    def leak(self, work: Work) -> tuple[torch.Tensor, torch.Tensor]:
        return work.memo("mixer-leak", self.counts["test"], lambda: self.wrong.leak(self.counts["test"]))

    def run_unit(self, work: Work, unit: MixerUnit) -> dict[str, Any]:
        model = work.model(unit.branch)
        data = self.inputs(work)
        train, test = data["train"], data["test"]
        config = replace(self.config, seed=self.config.seed + unit.index)
        result = train_mixer(model, train["x"], self.attributions(work, "train", unit.setting), train["y"], config,
                             progress=self.progress, task=f"mixer/{unit.setting}/seed-{unit.index}")
        net = MaskedClassifier(model, result.mixer)
        a_test = self.attributions(work, "test", unit.setting)
        masked = masked_predictions(net, test["x"], a_test, self.batch_size)
        plain = test["plain"]
        m = masks(net, test["x"][:GALLERY], a_test[:GALLERY])
        row = {"setting": unit.setting, "seed": config.seed, "branch": unit.branch, "test_samples": len(test["y"]),
               "train_samples": len(train["y"]), "accuracy_plain": float((plain == test["y"]).double().mean()),
               "accuracy_masked": float((masked == test["y"]).double().mean()),
               "holdout_accuracy": result.holdout_accuracy, "holdout_loss": result.holdout_loss, "best_epoch": result.best_epoch,
               "epochs_run": max(h["epoch"] for h in result.history if (h["batch_size"], h["lr"]) == (result.batch_size, result.lr)),
               "batch_size": result.batch_size, "lr": result.lr,
               "mask_mean": float(masks(net, test["x"], a_test, self.batch_size).mean()),
               "label_informed": unit.setting in LABEL_INFORMED,
               "leak_accuracy": math.nan, "leak_wrong_share": math.nan, "plain_wrong_share": math.nan}
        predictions = {"masked": masked}
        if self._leaks(unit.setting):
            a_wrong, wrong = self.leak(work)
            predictions["leak"] = masked_predictions(net, test["x"], a_wrong, self.batch_size)
            row.update(leak_scores(predictions["leak"], test["y"], wrong),
                       plain_wrong_share=float((plain == wrong).double().mean()))
        history = pd.DataFrame(result.history).assign(setting=unit.setting, seed=config.seed)
        weights = {k: v.detach().cpu().contiguous() for k, v in result.mixer.state_dict().items()}
        return {"rows": pd.DataFrame([row]), "history": history,
                "masks": {"m": m.half(), "predictions": masked[:GALLERY]}, "weights": weights, "predictions": predictions}

    def join(self, units: Sequence[MixerUnit], parts: dict[str, list[Any]]) -> dict:
        work = Work(self.run, device=self.device, batch_size=self.batch_size)
        rows = pd.concat(parts["rows"], ignore_index=True)
        test = self.inputs(work)["test"]
        wrong = self.leak(work)[1] if self.wrong is not None else torch.full_like(test["y"], -1)
        samples = pd.concat([
            pd.DataFrame({"setting": u.setting, "seed": self.config.seed + u.index, "sample": range(len(test["y"])),
                          "label": test["y"].numpy(), "plain": test["plain"].numpy(), "masked": p["masked"].numpy(),
                          "wrong": wrong.numpy() if "leak" in p else -1,
                          "leak": p["leak"].numpy() if "leak" in p else -1})
            for u, p in zip(units, parts["predictions"])], ignore_index=True)
        TABLES["mixer"].write(self.run.table("mixer"), rows)
        TABLES["mixer_predictions"].write(self.run.table("mixer_predictions"), samples)
        TABLES["mixer_history"].write(self.run.table("mixer_history"), pd.concat(parts["history"], ignore_index=True))
        for u, w in zip(units, parts["weights"]):
            with atomic_path(self.run.mixer_weights(u.setting, self.config.seed + u.index)) as tmp:
                save_file(w, str(tmp), metadata={"config": repr(self.config.to_dict())})
        gallery = {"x": test["x"][:GALLERY].half(), "labels": test["y"][:GALLERY], "plain": test["plain"][:GALLERY]}
        for u, p in zip(units, parts["masks"]):
            if u.index == 0:
                gallery[f"a/{u.setting}"] = _unit_max(self.attributions(work, "test", u.setting)[:GALLERY]).half()
                gallery[f"m/{u.setting}"] = p["m"]
                gallery[f"predictions/{u.setting}"] = p["predictions"]
        with atomic_path(self.run.mixer_gallery) as tmp:
            save_file({k: v.contiguous() for k, v in gallery.items()}, str(tmp))
        return summarise(rows, samples, self.n_classes)


def _unit_max(a: torch.Tensor) -> torch.Tensor:
    return a / _per_sample(a.flatten(1).abs().amax(1).clamp_min(1e-30), a)


def _per_seed(samples: pd.DataFrame, column: str) -> np.ndarray:
    """seeds × samples array of ``column`` (rows of one setting, in seed then sample order)."""
    wide = samples.pivot(index="seed", columns="sample", values=column).sort_index()
    return wide.to_numpy()


def _interval(values: np.ndarray) -> dict:
    """Mean and 95% interval (a resampled mean stays within the values' range, so no clipping is needed)."""
    iv = bootstrap_over_seeds_and_samples(values, level=CONFIDENCE)
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high}


def summarise(rows: pd.DataFrame, samples: pd.DataFrame, n_classes: int) -> dict:
    """Per setting: accuracy of C(x), C(x⊙M) over seeds and test samples with its 95% interval (hierarchical
    bootstrap: seeds, then samples), the gain with its paired interval, and for a label-informed setting
    the leak test (accuracy and share of the fed wrong label, each with its interval)."""
    out = {}
    for setting in [s for s in SETTINGS if s in set(rows["setting"])]:
        r, p = rows[rows["setting"] == setting], samples[samples["setting"] == setting]
        label, plain = _per_seed(p, "label"), _per_seed(p, "plain")
        correct = (_per_seed(p, "masked") == label).astype(float)
        acc, gain = _interval(correct), _interval(correct - (plain == label))
        entry = {"accuracy_plain": float((plain[0] == label[0]).mean()), "accuracy_masked": acc["estimate"],
                 "ci_low": acc["low"], "ci_high": acc["high"], "gain": gain["estimate"], "gain_low": gain["low"],
                 "gain_high": gain["high"], "seeds": int(len(r)), "mask_mean": float(r["mask_mean"].mean()),
                 "label_informed": setting in LABEL_INFORMED}
        if (p["leak"] >= 0).all():
            leak, wrong = _per_seed(p, "leak"), _per_seed(p, "wrong")
            hit, right = _interval((leak == wrong).astype(float)), _interval((leak == label).astype(float))
            entry["leak"] = {
                "wrong_share": hit["estimate"], "wrong_share_low": hit["low"], "wrong_share_high": hit["high"],
                "accuracy": right["estimate"], "accuracy_low": right["low"], "accuracy_high": right["high"],
                "plain_wrong_share": float((plain[0] == wrong[0]).mean()), "chance": 1.0 / (n_classes - 1),
                "samples": int(label.shape[1]),
                "per_seed": [{"seed": int(s), "accuracy": float(a), "wrong_share": float(w)} for s, a, w in
                             zip(r["seed"], r["leak_accuracy"], r["leak_wrong_share"])]}
        out[setting] = entry
    return out


def _load(data: Split, limit: int | None) -> dict[str, torch.Tensor]:
    """{"x", "y"} of the first ``limit`` samples (default all) and "shards": how many shards hold them."""
    xs, ys = [], []
    n = 0
    for _, shard in iter_shards(data):
        take = len(shard["labels"]) if limit is None else min(len(shard["labels"]), limit - n)
        xs.append(shard["images"][:take])
        ys.append(shard["labels"][:take])
        n += take
        if limit is not None and n >= limit:
            break
    return {"x": torch.cat(xs), "y": torch.cat(ys), "shards": len(xs)}


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise HeatlabError(f"{name} must be a whole number of at least {low}, got {value!r}; pass e.g. {name}={max(low, 3)}.")
    return value


def mixer_run(
    run_dir, *, settings: str | Sequence[str] | None = None, seeds: int = 3, branch: int | str | None = None,
    config: MixerConfig | None = None, n_steps: int = 32, train_samples: int | None = None,
    test_samples: int | None = None, ig_batch_size: int = 25, device: str = "cpu", progress: Progress | None = None,
    trust_model_code: bool = False, backend: Any = None,
) -> MixerResult:
    """Train and score the Mixer of ``branch`` (default: the first) for each setting and seed; returns
    a :class:`~heatlab.run.results.MixerResult` (``branch``, ``settings`` {setting: summary}, ``table``,
    ``config``, ...; also written to ``mixer.json``).

    ``train_samples`` / ``test_samples`` cap how many samples of each split are used (the first
    ones in stored order; default all). ``ig_batch_size``: samples per Integrated-Gradients (and
    prediction) call; the Mixer's own training batch is ``config.batch_size``. The leak test of a
    label-informed setting uses every test sample used (its IG costs one more IG pass over them).
    Everything before a finished unit is reused on a rerun. ``backend``
    (:func:`heatlab.run.runner.make_backend`, default local; a Ray backend without an address starts
    one local instance for all three stages) runs the IG cache units, then one unit per setting and
    seed, each reading its data and attributions from the run folder; every unit runs on one CPU
    thread, so each backend writes the same tables.
    ``trust_model_code``: rebuild branch models whose model.json names code from outside heatlab
    (``file.py:fn``, ``module:fn``); without it such a run is refused in one sentence.
    """
    run = RunDir(run_dir, trust_model_code=trust_model_code)
    resolve_device(device)
    config = config or MixerConfig()
    chosen = parse_settings(settings)
    _check_count("seeds", seeds, 1)
    _check_count("n_steps", n_steps, 1)
    batch_size = _check_count("ig_batch_size", ig_batch_size, 1)
    for name, value in (("train_samples", train_samples), ("test_samples", test_samples)):
        if value is not None:
            _check_count(name, value, 4 if name == "train_samples" else 1)
    with run.writing(STAGE), backend_session(backend):  # one local Ray, if any, for the three stages
        name = _branch(run, branch)
        limits = {"train": train_samples, "test": test_samples}
        data = {split: _load(run.open_data(split), limit) for split, limit in limits.items()}
        shape = tuple(data["train"]["x"].shape[1:])
        resolve_architecture(shape, config.architecture)
        if config.architecture == "fc" and math.prod(shape) > 50_000:
            raise HeatlabError(f"The fully connected Mixer on {math.prod(shape)} inputs would hold over "
                               f"{math.prod(shape) * 512 * 3 // 10**6} M weights; pass architecture='conv' for images this large.")
        model = run.load_model(name, device=device)
        n_classes = int(predict_probabilities(model, data["test"]["x"][:1]).shape[1])
        shards, counts = {s: d["shards"] for s, d in data.items()}, {s: len(d["y"]) for s, d in data.items()}
        del data  # the units read the samples from the run folder
        with_ig = [s for s in chosen if s != "none"]  # the control needs no IG (and must not redo the cache)
        ig = wrong = None
        if with_ig:
            ig = MixerIG(run, name, with_ig, splits=shards, n_steps=n_steps, batch_size=batch_size, device=device)
            run_stage(ig, progress=progress, backend=backend)
        if any(s in LABEL_INFORMED for s in chosen):
            wrong = MixerWrongIG(run, name, shards=shards["test"], n_classes=n_classes, seed=config.seed, n_steps=n_steps,
                                 batch_size=batch_size, device=device)
            run_stage(wrong, progress=progress, backend=backend)
        stage = MixerStage(run, name, chosen, seeds, config, limits=limits, counts=counts, ig=ig, wrong=wrong,
                           n_classes=n_classes, n_steps=n_steps, batch_size=batch_size, device=device, progress=progress)
        per_setting = run_stage(stage, progress=progress, backend=backend)
        summary = {"branch": name, "settings": per_setting, "seeds": seeds, "n_steps": n_steps,
                   "config": config.to_dict(), "architecture": resolve_architecture(shape, config.architecture),
                   "train_samples": counts["train"], "test_samples": counts["test"],
                   "input_shape": list(shape), "n_classes": n_classes, "confidence": CONFIDENCE,
                   "interval": f"hierarchical bootstrap over seeds, then test samples ({BOOTSTRAP_RESAMPLES:,} resamples, percentile)",
                   "label_informed": [s for s in chosen if s in LABEL_INFORMED],
                   "leak_test": None if wrong is None else {
                       "samples": counts["test"], "seed": config.seed,
                       "what": "the label-informed Mixer fed the IG attribution of a seeded random wrong label"},
                   "random_weights": run.random_weights(name), "complete": True}
        write_json(run.summary_path(STAGE), summary)
        return MixerResult.from_record(summary, table=str(run.table("mixer")))
