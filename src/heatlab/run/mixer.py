"""`heatlab mixer RUN`: paper 003's IG soft mask on a trained run, for three attribution settings and a control.

Two stages on :mod:`heatlab.run.runner`, both resumable:

1. ``mixer-ig``: IntegratedGradients attributions A(x, C) of one branch's model C for every
   train and test sample, per attribution setting (:data:`heatlab.improve.mixer.SETTINGS`), one
   unit per (split, shard) for all settings. They are cached in the run as float16 safetensors: A divided
   by its per-sample max |A| (float16 keeps the shape of tiny IG values that way) and that max as
   float32, so Mixer training never recomputes them.
2. ``mixer``: one unit per (setting, seed ``config.seed + i``, i < ``seeds``) trains Fx, FA and the Mixer on the training split
   (``holdout`` of it held out for early stopping; the seed also draws the hold-out) and scores
   C(x) and C(x ⊙ M) on the test split. The seed rides in the unit's shard slot.

Outputs: ``tables/mixer.parquet`` (one row per setting and seed: accuracies, epochs, grid
choice), ``tables/mixer_history.parquet`` (per epoch), ``mixer/weights/<setting>-seed-<s>.safetensors``
(each trained Mixer), ``mixer/gallery.safetensors`` (x, A, M and the predictions of the first test
samples, with the first seed's Mixer) and ``mixer.json`` (per setting: mean and 95% t-interval over
the seeds, and the gain over C(x)).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import pandas as pd
import torch
from safetensors.torch import save_file

from heatlab.data.split import iter_shards
from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, ensure_dir, write_json, write_parquet
from heatlab.improve.mixer import (
    SETTINGS, MaskedClassifier, MixerConfig, all_mixer_attributions, masked_predictions, masks, parse_settings,
    resolve_architecture, train_mixer,
)
from heatlab.models.training import predict, resolve_device
from heatlab.progress import Progress
from heatlab.run.rundir import BASE, RunDir, branch_name, stage_info
from heatlab.run.runner import PARQUET, TENSORS, Stage, Unit, Work, run_stage
from heatlab.score.intervals import t_interval

IG_STAGE, STAGE = "mixer-ig", "mixer"
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
            a = a.detach().cpu().float()
            scale = a.flatten(1).abs().amax(1)
            tensors[f"a/{setting}"] = (a / _per_sample(torch.where(scale > 0, scale, torch.ones_like(scale)), a)).half()
            tensors[f"scale/{setting}"] = scale
        return {"ig": tensors}

    def join(self, units: Sequence[Unit], parts: dict[str, list[Any]]) -> dict[tuple[str, str], torch.Tensor]:
        """{(split, setting): A float32 N×...} with the max |A| put back."""
        out: dict[tuple[str, str], list[torch.Tensor]] = {}
        for u, p in zip(units, parts["ig"]):
            for setting in self.settings_:
                a = p[f"a/{setting}"].float()
                out.setdefault((u.split, setting), []).append(a * _per_sample(p[f"scale/{setting}"], a))
        return {k: torch.cat(v) for k, v in out.items()}


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``N`` values shaped to broadcast over ``like`` (``N×...``)."""
    return v.view(-1, *[1] * (like.dim() - 1))


class MixerStage(Stage):
    """Units ("test", branch, setting, seed): train a Mixer for the setting, score it on the test split."""

    name = STAGE
    kinds = {"rows": PARQUET, "history": PARQUET, "masks": TENSORS, "weights": TENSORS}

    def __init__(self, run: RunDir, branch: str, settings: Sequence[str], seeds: int, config: MixerConfig, *,
                 data: dict[str, dict[str, torch.Tensor]], attributions: dict[tuple[str, str], torch.Tensor],
                 n_steps: int, batch_size: int, device: str, progress: Progress | None):
        super().__init__(run, device=device, batch_size=batch_size)
        self.branch, self.settings_, self.seeds, self.config = branch, list(settings), seeds, config
        self.data, self.attributions, self.n_steps, self.progress = data, attributions, n_steps, progress

    def units(self) -> list[Unit]:
        return [Unit("test", self.branch, s, seed) for s in self.settings_ for seed in range(self.seeds)]

    def settings(self, unit: Unit) -> dict:
        return {"config": self.config.to_dict(), "n_steps": self.n_steps, "train_samples": len(self.data["train"]["y"]),
                "test_samples": len(self.data["test"]["y"])}

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
               "mask_mean": float(masks(net, test["x"], a_test, self.batch_size).mean())}
        history = pd.DataFrame(result.history).assign(setting=unit.method, seed=config.seed)
        weights = {k: v.detach().cpu().contiguous() for k, v in result.mixer.state_dict().items()}
        return {"rows": pd.DataFrame([row]), "history": history,
                "masks": {"m": m.half(), "predictions": masked[:GALLERY]}, "weights": weights}

    def join(self, units: Sequence[Unit], parts: dict[str, list[Any]]) -> dict:
        rows = pd.concat(parts["rows"], ignore_index=True)
        write_parquet(self.run.table("mixer"), rows)
        write_parquet(self.run.table("mixer_history"), pd.concat(parts["history"], ignore_index=True))
        folder = ensure_dir(self.run.path / "mixer" / "weights")
        for u, w in zip(units, parts["weights"]):
            with atomic_path(folder / f"{u.method}-seed-{self.config.seed + u.shard}.safetensors") as tmp:
                save_file(w, str(tmp), metadata={"config": repr(self.config.to_dict())})
        test = self.data["test"]
        gallery = {"x": test["x"][:GALLERY].half(), "labels": test["y"][:GALLERY], "plain": test["plain"][:GALLERY]}
        for u, p in zip(units, parts["masks"]):
            if u.shard == 0:
                gallery[f"a/{u.method}"] = _unit_max(self.attributions[("test", u.method)][:GALLERY]).half()
                gallery[f"m/{u.method}"] = p["m"]
                gallery[f"predictions/{u.method}"] = p["predictions"]
        with atomic_path(self.run.path / "mixer" / "gallery.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in gallery.items()}, str(tmp))
        return summarise(rows)


def _unit_max(a: torch.Tensor) -> torch.Tensor:
    return a / _per_sample(a.flatten(1).abs().amax(1).clamp_min(1e-30), a)


def summarise(rows: pd.DataFrame) -> dict:
    """Per setting: accuracy of C(x), mean C(x⊙M) over seeds with its 95% t-interval, and the gain."""
    out = {}
    for setting in [s for s in SETTINGS if s in set(rows["setting"])]:
        r = rows[rows["setting"] == setting]
        # One seed has no interval: low and high are NaN (the report says so).
        mean, low, high = t_interval(r["accuracy_masked"].to_numpy(), CONFIDENCE)
        if not math.isnan(low):
            low, high = max(low, 0.0), min(high, 1.0)  # an accuracy interval stays within [0, 1]
        plain = float(r["accuracy_plain"].iloc[0])
        out[setting] = {"accuracy_plain": plain, "accuracy_masked": mean, "ci_low": low, "ci_high": high,
                        "gain": mean - plain, "seeds": int(len(r)), "mask_mean": float(r["mask_mean"].mean())}
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
    prediction) call; the Mixer's own training batch is ``config.batch_size``. Everything before a
    finished unit is reused on a rerun.
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
        stage = MixerStage(run, name, chosen, seeds, config, data=data, attributions=attributions, n_steps=n_steps,
                           batch_size=batch_size, device=device, progress=progress)
        per_setting = run_stage(stage, progress=progress)
        summary = {"branch": name, "settings": per_setting, "seeds": seeds, "n_steps": n_steps,
                   "config": config.to_dict(), "architecture": resolve_architecture(shape, config.architecture),
                   "train_samples": len(data["train"]["y"]), "test_samples": len(data["test"]["y"]),
                   "input_shape": list(shape), "confidence": CONFIDENCE, "complete": True}
        write_json(run.summary_path(STAGE), summary)
        return {**summary, "table": str(run.table("mixer"))}
