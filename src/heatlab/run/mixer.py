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
   C(x) and C(x ⊙ M) on the test split. The seed rides in the unit's shard slot. For a
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
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from heatlab.data.split import iter_shards
from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, write_json, write_parquet
from heatlab.improve.mixer import (
    LABEL_INFORMED, SETTINGS, MaskedClassifier, MixerConfig, all_mixer_attributions, leak_scores, masked_predictions, masks,
    mixer_attributions, parse_settings, predict_probabilities, random_wrong_labels, resolve_architecture, train_mixer,
)
from heatlab.models.training import predict, resolve_device
from heatlab.progress import Progress
from heatlab.run.rundir import BASE, RunDir, branch_name, stage_info
from heatlab.run.runner import PARQUET, TENSORS, Stage, Unit, Work, run_stage
from heatlab.score.intervals import BOOTSTRAP_RESAMPLES, bootstrap_over_seeds_and_samples

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

    def __init__(self, run: RunDir, branch: str, settings: Sequence[str], *, splits: dict[str, int],
                 n_steps: int, batch_size: int, device: str):
        super().__init__(run, device=device, batch_size=batch_size)
        self.branch, self.settings_, self.splits, self.n_steps = branch, list(settings), splits, n_steps

    def units(self) -> list[Unit]:
        return [Unit(split, self.branch, "ig", k) for split, shards in self.splits.items() for k in range(shards)]

    def settings(self, unit: Unit) -> dict:
        return {"n_steps": self.n_steps, "settings": self.settings_}

    def run_unit(self, work: Work, unit: Unit) -> dict[str, Any]:
        shard = work.shard(unit.split, unit.shard)
        found = all_mixer_attributions(work.model(unit.branch), shard["images"], shard["labels"], self.settings_,
                                       n_steps=self.n_steps, batch_size=self.batch_size)
        tensors = {}
        for setting, a in found.items():
            tensors[f"a/{setting}"], tensors[f"scale/{setting}"] = _pack(a)
        return {"ig": tensors}

    def join(self, units: Sequence[Unit], parts: dict[str, list[Any]]) -> dict[tuple[str, str], torch.Tensor]:
        """{(split, setting): A float32 N×...} with the max |A| put back."""
        out: dict[tuple[str, str], list[torch.Tensor]] = {}
        for u, p in zip(units, parts["ig"]):
            for setting in self.settings_:
                out.setdefault((u.split, setting), []).append(_unpack(p[f"a/{setting}"], p[f"scale/{setting}"]))
        return {k: torch.cat(v) for k, v in out.items()}


class MixerWrongIG(Stage):
    """Units ("test", branch, "ig-wrong", shard): IG of each test sample for a seeded random wrong label
    (seed ``seed + shard``), stored like :class:`MixerIG` together with the labels drawn."""

    name = WRONG_STAGE
    kinds = {"ig": TENSORS}

    def __init__(self, run: RunDir, branch: str, *, shards: int, n_classes: int, seed: int, n_steps: int,
                 batch_size: int, device: str):
        super().__init__(run, device=device, batch_size=batch_size)
        self.branch, self.shards, self.n_classes, self.seed, self.n_steps = branch, shards, n_classes, seed, n_steps

    def units(self) -> list[Unit]:
        return [Unit("test", self.branch, "ig-wrong", k) for k in range(self.shards)]

    def settings(self, unit: Unit) -> dict:
        return {"n_steps": self.n_steps, "n_classes": self.n_classes, "seed": self.seed}

    def run_unit(self, work: Work, unit: Unit) -> dict[str, Any]:
        shard = work.shard(unit.split, unit.shard)
        wrong = random_wrong_labels(shard["labels"], self.n_classes, self.seed + unit.shard)
        a = mixer_attributions(work.model(unit.branch), shard["images"], wrong, "true-class", n_steps=self.n_steps,
                               batch_size=self.batch_size)
        packed, scale = _pack(a)
        return {"ig": {"a": packed, "scale": scale, "wrong": wrong}}

    def join(self, units: Sequence[Unit], parts: dict[str, list[Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(A for the wrong labels, float32 N×..., the wrong labels N)."""
        return (torch.cat([_unpack(p["a"], p["scale"]) for p in parts["ig"]]),
                torch.cat([p["wrong"] for p in parts["ig"]]))


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


class MixerStage(Stage):
    """Units ("test", branch, setting, seed): train a Mixer for the setting, score it on the test split
    (and, for a label-informed setting given ``leak`` = (wrong-label A, wrong labels), run the leak test)."""

    name = STAGE
    kinds = {"rows": PARQUET, "history": PARQUET, "masks": TENSORS, "weights": TENSORS, "predictions": TENSORS}

    def __init__(self, run: RunDir, branch: str, settings: Sequence[str], seeds: int, config: MixerConfig, *,
                 data: dict[str, dict[str, torch.Tensor]], attributions: dict[tuple[str, str], torch.Tensor],
                 leak: tuple[torch.Tensor, torch.Tensor] | None, n_classes: int,
                 n_steps: int, batch_size: int, device: str, progress: Progress | None):
        super().__init__(run, device=device, batch_size=batch_size)
        self.branch, self.settings_, self.seeds, self.config = branch, list(settings), seeds, config
        self.data, self.attributions, self.n_steps, self.progress = data, attributions, n_steps, progress
        self.leak, self.n_classes = leak, n_classes

    def units(self) -> list[Unit]:
        return [Unit("test", self.branch, s, seed) for s in self.settings_ for seed in range(self.seeds)]

    def settings(self, unit: Unit) -> dict:
        return {"config": self.config.to_dict(), "n_steps": self.n_steps, "train_samples": len(self.data["train"]["y"]),
                "test_samples": len(self.data["test"]["y"]), "leak_test": self._leaks(unit.method)}

    def _leaks(self, setting: str) -> bool:
        return setting in LABEL_INFORMED and self.leak is not None

    def run_unit(self, work: Work, unit: Unit) -> dict[str, Any]:
        model = work.model(unit.branch)
        train, test = self.data["train"], self.data["test"]
        config = replace(self.config, seed=self.config.seed + unit.shard)
        result = train_mixer(model, train["x"], self.attributions[("train", unit.method)], train["y"], config,
                             progress=self.progress, task=f"mixer/{unit.method}/seed-{unit.shard}")
        net = MaskedClassifier(model, result.mixer)
        a_test = self.attributions[("test", unit.method)]
        masked = masked_predictions(net, test["x"], a_test, self.batch_size)
        plain = test["plain"]
        m = masks(net, test["x"][:GALLERY], a_test[:GALLERY])
        row = {"setting": unit.method, "seed": config.seed, "branch": unit.branch, "test_samples": len(test["y"]),
               "train_samples": len(train["y"]), "accuracy_plain": float((plain == test["y"]).double().mean()),
               "accuracy_masked": float((masked == test["y"]).double().mean()),
               "holdout_accuracy": result.holdout_accuracy, "holdout_loss": result.holdout_loss, "best_epoch": result.best_epoch,
               "epochs_run": max(h["epoch"] for h in result.history if (h["batch_size"], h["lr"]) == (result.batch_size, result.lr)),
               "batch_size": result.batch_size, "lr": result.lr,
               "mask_mean": float(masks(net, test["x"], a_test, self.batch_size).mean()),
               "label_informed": unit.method in LABEL_INFORMED,
               "leak_accuracy": math.nan, "leak_wrong_share": math.nan, "plain_wrong_share": math.nan}
        predictions = {"masked": masked}
        if self._leaks(unit.method):
            a_wrong, wrong = self.leak
            predictions["leak"] = masked_predictions(net, test["x"], a_wrong, self.batch_size)
            row.update(leak_scores(predictions["leak"], test["y"], wrong),
                       plain_wrong_share=float((plain == wrong).double().mean()))
        history = pd.DataFrame(result.history).assign(setting=unit.method, seed=config.seed)
        weights = {k: v.detach().cpu().contiguous() for k, v in result.mixer.state_dict().items()}
        return {"rows": pd.DataFrame([row]), "history": history,
                "masks": {"m": m.half(), "predictions": masked[:GALLERY]}, "weights": weights, "predictions": predictions}

    def join(self, units: Sequence[Unit], parts: dict[str, list[Any]]) -> dict:
        rows = pd.concat(parts["rows"], ignore_index=True)
        test = self.data["test"]
        wrong = self.leak[1] if self.leak is not None else torch.full_like(test["y"], -1)
        samples = pd.concat([
            pd.DataFrame({"setting": u.method, "seed": self.config.seed + u.shard, "sample": range(len(test["y"])),
                          "label": test["y"].numpy(), "plain": test["plain"].numpy(), "masked": p["masked"].numpy(),
                          "wrong": wrong.numpy() if "leak" in p else -1,
                          "leak": p["leak"].numpy() if "leak" in p else -1})
            for u, p in zip(units, parts["predictions"])], ignore_index=True)
        write_parquet(self.run.table("mixer"), rows)
        write_parquet(self.run.table("mixer_predictions"), samples)
        write_parquet(self.run.table("mixer_history"), pd.concat(parts["history"], ignore_index=True))
        for u, w in zip(units, parts["weights"]):
            with atomic_path(self.run.mixer_weights(u.method, self.config.seed + u.shard)) as tmp:
                save_file(w, str(tmp), metadata={"config": repr(self.config.to_dict())})
        gallery = {"x": test["x"][:GALLERY].half(), "labels": test["y"][:GALLERY], "plain": test["plain"][:GALLERY]}
        for u, p in zip(units, parts["masks"]):
            if u.shard == 0:
                gallery[f"a/{u.method}"] = _unit_max(self.attributions[("test", u.method)][:GALLERY]).half()
                gallery[f"m/{u.method}"] = p["m"]
                gallery[f"predictions/{u.method}"] = p["predictions"]
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


def _load(run: RunDir, split: str, limit: int | None) -> dict[str, torch.Tensor]:
    xs, ys = [], []
    n = 0
    data = run.open_data(split)
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
    trust_model_code: bool = False,
) -> dict:
    """Train and score the Mixer of ``branch`` (default: the first) for each setting and seed; returns
    ``{"branch", "settings": {setting: summary}, "table", "config", ...}`` (also written to ``mixer.json``).

    ``train_samples`` / ``test_samples`` cap how many samples of each split are used (the first
    ones in stored order; default all). ``ig_batch_size``: samples per Integrated-Gradients (and
    prediction) call; the Mixer's own training batch is ``config.batch_size``. The leak test of a
    label-informed setting uses every test sample used (its IG costs one more IG pass over them).
    Everything before a finished unit is reused on a rerun.
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
    with run.writing(STAGE):
        name = _branch(run, branch)
        data = {"train": _load(run, "train", train_samples), "test": _load(run, "test", test_samples)}
        shape = tuple(data["train"]["x"].shape[1:])
        resolve_architecture(shape, config.architecture)
        if config.architecture == "fc" and math.prod(shape) > 50_000:
            raise HeatlabError(f"The fully connected Mixer on {math.prod(shape)} inputs would hold over "
                               f"{math.prod(shape) * 512 * 3 // 10**6} M weights; pass architecture='conv' for images this large.")
        model = run.load_model(name, device=device)
        data["test"]["plain"] = predict(model, (data["test"]["x"], data["test"]["y"]), batch_size)[0]
        shards = {s: d.pop("shards") for s, d in data.items()}
        with_ig = [s for s in chosen if s != "none"]  # the control needs no IG (and must not redo the cache)
        attributions = {}
        if with_ig:
            ig = MixerIG(run, name, with_ig, splits=shards, n_steps=n_steps, batch_size=batch_size, device=device)
            attributions = {k: v[: len(data[k[0]]["y"])] for k, v in run_stage(ig, progress=progress).items()}
        if "none" in chosen:
            attributions.update({(split, "none"): torch.zeros_like(d["x"]) for split, d in data.items()})
        n_classes = int(predict_probabilities(model, data["test"]["x"][:1]).shape[1])
        leak = None
        if any(s in LABEL_INFORMED for s in chosen):
            wrong_ig = MixerWrongIG(run, name, shards=shards["test"], n_classes=n_classes, seed=config.seed, n_steps=n_steps,
                                    batch_size=batch_size, device=device)
            leak = tuple(v[: len(data["test"]["y"])] for v in run_stage(wrong_ig, progress=progress))
        stage = MixerStage(run, name, chosen, seeds, config, data=data, attributions=attributions, leak=leak,
                           n_classes=n_classes, n_steps=n_steps, batch_size=batch_size, device=device, progress=progress)
        per_setting = run_stage(stage, progress=progress)
        summary = {"branch": name, "settings": per_setting, "seeds": seeds, "n_steps": n_steps,
                   "config": config.to_dict(), "architecture": resolve_architecture(shape, config.architecture),
                   "train_samples": len(data["train"]["y"]), "test_samples": len(data["test"]["y"]),
                   "input_shape": list(shape), "n_classes": n_classes, "confidence": CONFIDENCE,
                   "interval": f"hierarchical bootstrap over seeds, then test samples ({BOOTSTRAP_RESAMPLES:,} resamples, percentile)",
                   "label_informed": [s for s in chosen if s in LABEL_INFORMED],
                   "leak_test": None if leak is None else {
                       "samples": len(data["test"]["y"]), "seed": config.seed,
                       "what": "the label-informed Mixer fed the IG attribution of a seeded random wrong label"},
                   "complete": True}
        write_json(run.summary_path(STAGE), summary)
        return {**summary, "table": str(run.table("mixer"))}
