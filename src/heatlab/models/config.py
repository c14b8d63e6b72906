"""Every knob of the training protocol (:class:`TrainConfig`) and its defaults; no torch at import.

The CLI shows these defaults in ``--help``, so this module imports nothing heavy (torch is
imported only to check a device name).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from heatlab.errors import HeatlabError

#: The zoo model trained when none is named (images).
DEFAULT_MODEL = "cellcnn"

#: Table I of paper 002 (plus the optimizer settings of §III-B); combine with a zoo model name,
#: e.g. ``TrainConfig(model=..., **PAPER_SETTINGS["resnet34"])``.
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "resnet34": dict(epochs=2, branch_epochs=4, branches=5, batch_size=4, lr=1e-3, n_l=24, r_f=0.4),
    "alexnet": dict(epochs=16, branch_epochs=16, branches=5, batch_size=16, lr=1e-4, n_l=48, r_f=0.3),
    "vgg16": dict(epochs=4, branch_epochs=4, branches=5, batch_size=16, lr=1e-4, n_l=48, r_f=0.3),
}
for _settings in PAPER_SETTINGS.values():  # the paper keeps one constant Adam rate throughout
    _settings.update(branch_lr=None, schedule="constant")

TABULAR_MODELS = ("ccffpa", "drybeanfpa")  # zoo models that read N×F feature tables
#: Where feature tables need other defaults than the cells: with these, test accuracy on wine is
#: 1.000 and on breast cancer 0.979 (the image defaults with drybeanfpa gave 0.397 and 0.810).
TABLE_DEFAULTS: dict[str, Any] = {"model": "mlp", "epochs": 30, "batch_size": 16, "lr": 1e-2}


def _whole(name: str, value: object, minimum: int, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HeatlabError(f"{name} must be a whole number >= {minimum}, got {value!r}; pass e.g. {flag}.")


def _real(name: str, value: object, low: float, high: float, flag: str, *, open_high: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (value >= high if open_high else value > high):
        span = f"[{low}, {high})" if open_high else f"[{low}, {high}]"
        raise HeatlabError(f"{name} must be a number in {span}, got {value!r}; pass e.g. {flag}.")


# "constant" is the paper's Adam at a fixed rate; "cosine" decays the continuous-mode rate to 1% of
# ``lr`` by its last iteration, which leaves BatchNorm statistics in step with the final weights.
SCHEDULES = ("cosine", "constant")
#: Input standardisation a trained image model carries (see :mod:`heatlab.models.normalize`):
#: "data" the training split's per-channel mean/std, "imagenet", or "none".
NORMALIZE_MODES = ("data", "imagenet", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the protocol. Defaults suit cellcnn at 128 px on 2 CPU cores;
    :data:`PAPER_SETTINGS` holds the paper's values. ``target_acc`` > 1 means "never reached"."""

    model: str = DEFAULT_MODEL
    epochs: int = 8
    branch_epochs: int = 1
    branches: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    branch_lr: float | None = 1e-4
    schedule: str = "cosine"
    weight_decay: float = 1e-5
    eval_every: int = 4
    target_acc: float = 0.96
    n_l: int = 24
    r_f: float = 0.4
    seed: int = 0
    device: str = "cpu"
    normalize: str = "data"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise HeatlabError(f"Model name must be a non-empty string, got {self.model!r}; pass e.g. model='cellcnn'.")
        _whole("Epochs", self.epochs, 0, "epochs=3")
        _whole("Branch epochs", self.branch_epochs, 1, "branch_epochs=2")
        _whole("Branches", self.branches, 0, "branches=3")
        _whole("Batch size", self.batch_size, 1, "batch_size=32")
        _whole("eval_every", self.eval_every, 1, "eval_every=4")
        _whole("n_l (early-stopping limit)", self.n_l, 1, "n_l=24")
        _whole("Seed", self.seed, 0, "seed=0")
        _real("Learning rate", self.lr, 0.0, 10.0, "lr=0.001")
        if self.branch_lr is not None:
            _real("Branch learning rate", self.branch_lr, 0.0, 10.0, "branch_lr=0.0001")
        if self.schedule not in SCHEDULES:
            raise HeatlabError(f"Unknown learning-rate schedule {self.schedule!r}; pass {' or '.join(f'schedule={s!r}' for s in SCHEDULES)}.")
        if self.normalize not in NORMALIZE_MODES:
            raise HeatlabError(f"Unknown normalize {self.normalize!r}; pass {' or '.join(f'normalize={m!r}' for m in NORMALIZE_MODES)}.")
        _real("Weight decay", self.weight_decay, 0.0, 1.0, "weight_decay=1e-5")
        _real("Target accuracy", self.target_acc, 0.0, 2.0, "target_acc=0.96")
        _real("r_f (refresh fraction)", self.r_f, 0.0, 1.0, "r_f=0.4", open_high=True)
        if not isinstance(self.device, str) or self.device != "cpu":  # the default needs no torch (`--help`)
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise HeatlabError(f"Device '{self.device}' is not a torch device; pass e.g. device='cpu' or device='cuda'.") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HeatlabError(f"Unknown training setting(s) {', '.join(unknown)}; use only {', '.join(sorted(known))}.")
        return cls(**d)


def config_for(input_kind: str, settings: Mapping[str, Any]) -> "TrainConfig":
    """A TrainConfig of ``settings``; what they leave out takes the defaults of ``input_kind``
    ("table": :data:`TABLE_DEFAULTS`, then TrainConfig's own)."""
    return TrainConfig.from_dict({**(TABLE_DEFAULTS if input_kind == "table" else {}), **settings})
