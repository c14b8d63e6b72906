"""The training protocol of paper 002 (§III-B, Table I), as pure logic with no file I/O.

* **Continuous mode** (:func:`train_continuous`): plain training for ``epochs`` epochs with Adam
  and cross-entropy; the result is the *base model*.
* **Regular-evaluation mode** (:func:`train_branch`): starting from a copy of the base model with a
  fresh optimizer, validate every ``eval_every`` iterations on ONE randomly chosen validation
  shard and let :class:`EarlyStopping` decide: stop at the target accuracy, keep the best state on
  improvement, stop after ``n_l`` validations without improvement (the counter shrinks to
  ``int(r_f · counter)`` on each improvement), or run out of ``branch_epochs``.

Data may be an ``(images N×C×H×W, labels N)`` tensor pair, a shard source (an object with
``num_shards`` and ``load_shard(k) -> {"images", "labels", ...}``, e.g. ``CellSplit``), a map-style
Dataset whose items are dicts with "image"/"label" or ``(image, label)`` pairs, or a DataLoader
(used as given). Every random choice (data order, validation shard, dropout, initialisation) comes
from ``config.seed`` and the stage, so the same config gives the same losses and weights, and a
branch does not depend on which other branches ran in the same process.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from heatlab.seeds import derive_seed
from heatlab.data.split import channel_stats, input_shape as split_input_shape
from heatlab.errors import HeatlabError
from heatlab.models import zoo
from heatlab.models.checkpoint import Checkpoint
from heatlab.models.config import (  # noqa: F401  (re-exported: training has always offered them)
    NORMALIZE_MODES,
    PAPER_SETTINGS,
    SCHEDULES,
    TABLE_DEFAULTS,
    TABULAR_MODELS,
    TrainConfig,
    config_for,
)
from heatlab.models.state import model_device  # re-exported: heatlab.models.training.model_device

STOP_TARGET = "target reached"
STOP_EARLY = "early stop"
STOP_EXHAUSTED = "epochs exhausted"

Batch = tuple[torch.Tensor, torch.Tensor]
OnStep = Callable[[int, int, float], None]  # (iteration from 1, epoch from 0, loss)


def chance_accuracy(labels: torch.Tensor) -> float:
    """Accuracy of always guessing the most frequent class of ``labels`` (N int64)."""
    return float(torch.bincount(labels.long()).max()) / len(labels) if len(labels) else 0.0


def available_devices() -> list[str]:
    """The devices this torch build can compute on, on this machine: ``cpu``, then ``cuda:k``,
    ``mps`` and ``xpu:k`` for each one present (e.g. ``["cpu", "cuda:0"]``)."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{k}" for k in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        names += [f"xpu:{k}" for k in range(xpu.device_count())]
    return names


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)`` when this torch build has it here (see :func:`available_devices`;
    ``cuda``/``xpu`` without an index mean device 0), else a HeatlabError naming what it has.
    ``meta`` (no data) and every other device type are refused."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise HeatlabError(f"Device '{name}' is not a torch device; pass e.g. device='cpu' or device='cuda'.") from None
    if device.type == "meta":
        raise HeatlabError("Device 'meta' holds no data, so nothing can be computed there; pass device='cpu' or device='cuda'.")
    have = available_devices()
    index = 0 if device.index is None else device.index
    if (f"{device.type}:{index}" in have) or (device.type in ("cpu", "mps") and index == 0 and device.type in have):
        return device
    same = [h for h in have if h.split(":")[0] == device.type]
    raise HeatlabError(f"Device '{name}' is not available in this torch build on this machine (it has: {', '.join(have)}); "
                       f"pass device='{(same or have)[0]}'.")


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (initialisation, dropout) inside the block and restore it after."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def takes_normalize(model_name: str) -> bool:
    """True when the zoo builder of ``model_name`` accepts ``normalize=``."""
    return "normalize" in inspect.signature(zoo.builder(model_name)).parameters


def normalize_spec(config: TrainConfig, train_split: Any) -> Any:
    """The ``normalize=`` model argument for ``config.normalize`` (None when the model has no such option).

    "data" computes the training split's per-channel mean/std (images only; a model whose builder
    has no ``normalize`` then trains on the data as stored); "imagenet" on such a model is an error.
    """
    if config.normalize == "none" or len(split_input_shape(train_split)) == 1:
        return None
    if not takes_normalize(config.model):
        if config.normalize == "imagenet":
            raise HeatlabError(f"Model '{config.model}' cannot standardise its input; pass normalize='none'.")
        return None
    return "imagenet" if config.normalize == "imagenet" else channel_stats(train_split)


def check_takes(model: nn.Module, name: str, sample: torch.Tensor, num_classes: int | None = None) -> None:
    """One sentence instead of a deep traceback when ``model`` cannot take inputs like ``sample`` (``1×...``),
    or (``num_classes`` given) does not return ``1×num_classes`` logits for it.

    Runs one forward pass in eval mode without gradients; the model's training flags are restored.
    """
    flags = [m.training for m in model.modules()]
    try:
        with torch.no_grad():
            out = model.eval()(sample.to(model_device(model)))
    except RuntimeError:
        raise HeatlabError(f"Model '{name}' cannot take inputs of shape {tuple(sample.shape[1:])}; choose a model "
                           "made for this input size, e.g. model='smallnet' for 28-px digits.") from None
    finally:
        for m, flag in zip(model.modules(), flags):
            m.training = flag
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if num_classes is not None and shape != (sample.shape[0], num_classes):
        raise HeatlabError(f"Model '{name}' returns {shape} for one sample but the data has {num_classes} classes; "
                           f"make it return N×{num_classes} logits (build it with num_classes).")


def create_model(config: TrainConfig, num_classes: int, input_shape: tuple[int, ...] = (3, 128, 128), *,
                 normalize: Any = None) -> nn.Module:
    """A freshly initialised zoo model (init seeded by ``config.seed``) on ``config.device``.

    ``input_shape`` is one sample's shape: C×H×W for images, (F,) for a table of F features,
    which builds a tabular model with ``num_features=F``; a builder that takes ``input_shape`` (mlp)
    gets the shape itself. ``normalize``: the model's ``normalize=``
    argument (see :func:`normalize_spec`), recorded in its spec.
    """
    device = resolve_device(config.device)
    seed = derive_seed(config.seed, "init")
    if not zoo.is_registered(config.model):  # your own builder gets the keywords it accepts of these
        extra = {"input_shape": list(input_shape)} | ({} if normalize is None else {"normalize": normalize})
        if len(input_shape) == 1:
            extra["num_features"] = input_shape[0]
        model = zoo.create(config.model, num_classes=num_classes, in_channels=input_shape[0] if len(input_shape) == 3 else 1,
                           seed=seed, **extra)
    elif "input_shape" in inspect.signature(zoo.builder(config.model)).parameters:  # e.g. mlp: any input shape
        extra = {} if normalize is None else {"normalize": normalize}
        in_channels = input_shape[0] if len(input_shape) == 3 else 1
        model = zoo.create(config.model, num_classes=num_classes, in_channels=in_channels,
                           input_shape=list(input_shape), seed=seed, **extra)
    elif len(input_shape) == 1:
        if config.model not in TABULAR_MODELS:
            raise HeatlabError(f"Model '{config.model}' takes images but the data are tables of {input_shape[0]} features; "
                               f"choose a tabular model ({', '.join(TABULAR_MODELS)}).")
        model = zoo.create(config.model, num_classes=num_classes, num_features=input_shape[0], seed=seed)
    else:
        extra = {} if normalize is None else {"normalize": normalize}
        model = zoo.create(config.model, num_classes=num_classes, in_channels=input_shape[0], seed=seed, **extra)
    return model.to(device)


# ---------------------------------------------------------------------------------------- data
def _is_shard_source(data: object) -> bool:
    return hasattr(data, "num_shards") and callable(getattr(data, "load_shard", None))


def _as_pair(item: object) -> Batch:
    if isinstance(item, Mapping):
        return item["image"], item["label"]
    x, y = item[0], item[1]
    return x, y


def _collate(items: list) -> Batch:
    """Stack only image and label (dict items also carry ground truth the training does not need)."""
    pairs = [_as_pair(it) for it in items]
    return torch.stack([p[0] for p in pairs]), torch.as_tensor([int(p[1]) for p in pairs], dtype=torch.int64)


def _shard_batches(src: Any, batch_size: int, generator: torch.Generator | None) -> Iterator[Batch]:
    """Batches gathered shard by shard (shuffled shard order and order within), spanning shard ends."""
    n = src.num_shards
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else range(n)
    pieces: list[Batch] = []
    filled = 0
    for k in order:
        shard = src.load_shard(k)
        x, y = shard["images"], shard["labels"]
        idx = torch.randperm(len(y), generator=generator) if generator is not None else None
        start = 0
        while start < len(y):
            take = min(batch_size - filled, len(y) - start)
            sel = idx[start : start + take] if idx is not None else slice(start, start + take)
            pieces.append((x[sel], y[sel]))
            filled += take
            start += take
            if filled == batch_size:
                yield _join(pieces)
                pieces, filled = [], 0
    if pieces:
        yield _join(pieces)


def _join(pieces: list[Batch]) -> Batch:
    if len(pieces) == 1:
        return pieces[0]
    return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])


def iter_batches(data: Any, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[Batch]:
    """Yield ``(images B×C×H×W, labels B int64)`` batches of ``data`` (on its own device).

    With a ``generator`` the order is shuffled from it; without, data order is kept. A DataLoader
    is iterated as given (its own batch size and order).
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise HeatlabError(f"Got {len(x)} inputs but {len(y)} labels; pass one label per input.")
        order = torch.randperm(len(y), generator=generator) if generator is not None else None
        for s in range(0, len(y), batch_size):
            sel = order[s : s + batch_size] if order is not None else slice(s, s + batch_size)
            yield x[sel], y[sel]
    elif _is_shard_source(data):
        yield from _shard_batches(data, batch_size, generator)
    elif isinstance(data, DataLoader) or (isinstance(data, Iterable) and not isinstance(data, Dataset)):
        for item in data:
            yield _as_pair(item)
    elif isinstance(data, Dataset):
        sampler = RandomSampler(data, generator=generator) if generator is not None else None
        yield from DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=_collate, num_workers=0)
    else:
        raise HeatlabError(
            f"Cannot read batches from a {type(data).__name__}; pass an (images, labels) pair, a Dataset or a DataLoader."
        )


def num_batches(data: Any, batch_size: int) -> int | None:
    """Batches per epoch of :func:`iter_batches`, or None when the source has no length."""
    if isinstance(data, DataLoader):
        return len(data)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        n = len(data[1])
    elif hasattr(data, "__len__"):
        n = len(data)
    else:
        return None
    return -(-n // batch_size)


# ----------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model: nn.Module, data: Any, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted classes N, labels N)`` as CPU int64 tensors, in data order, model in eval mode."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HeatlabError(f"Batch size must be a whole number >= 1, got {batch_size!r}; pass e.g. batch_size=32.")
    device = model_device(model)
    was_training = model.training
    model.eval()
    preds, labels = [], []
    try:
        for x, y in iter_batches(data, batch_size):
            preds.append(model(x.to(device, non_blocking=True)).argmax(1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not preds:
        raise HeatlabError("The evaluation data holds no samples; pass a split with at least one shard.")
    return torch.cat(preds), torch.cat(labels).to(torch.int64)


def evaluate_accuracy(model: nn.Module, data: Any, batch_size: int = 32) -> float:
    """Fraction of samples of ``data`` whose predicted class equals the label."""
    preds, labels = predict(model, data, batch_size)
    return float((preds == labels).double().mean())


def _check_labels(y: torch.Tensor, num_classes: int) -> None:
    """One sentence instead of cross-entropy's IndexError when a label has no class (``y`` B int64)."""
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.max()) if int(y.max()) >= num_classes else int(y.min())
        raise HeatlabError(f"Label {bad} has no class: the model has {num_classes} outputs, one per class name; "
                           "give the data one class name for every label 0, 1, ... it uses.")


# ------------------------------------------------------------------------------ early stopping
class EarlyStopping:
    """The regular-evaluation stopping rule of paper 002 §III-B, one validation accuracy at a time.

    ``update(acc)`` returns "target" (acc ≥ target_acc: stop and keep this state), "improved"
    (acc > best: keep this state, ``counter = int(r_f · counter)``), "no_improvement"
    (``counter += 1``) or "stop" (the counter reached ``n_l``). ``best`` starts at 0, as in the
    original code, so an accuracy of 0 never counts as an improvement.
    """

    def __init__(self, target_acc: float, n_l: int, r_f: float):
        self.target_acc, self.n_l, self.r_f = target_acc, n_l, r_f
        self.counter = 0
        self.best = 0.0

    def update(self, acc: float) -> str:
        if acc >= self.target_acc:
            self.best = max(self.best, acc)
            return "target"
        if acc > self.best:
            self.best = acc
            self.counter = int(self.r_f * self.counter)
            return "improved"
        self.counter += 1
        return "stop" if self.counter >= self.n_l else "no_improvement"


# ------------------------------------------------------------------------------------ training
def _train_steps(
    model: nn.Module, data: Any, config: TrainConfig, epochs: int, generator: torch.Generator,
    *, lr: float, schedule: str = "constant", resume: Checkpoint | None = None,
    on_epoch: Callable[[Checkpoint], None] | None = None,
) -> Iterator[tuple[int, int, float]]:
    """Run the training steps, yielding ``(iteration, epoch, loss)`` after each; stop by closing.

    ``resume`` continues from a checkpoint (model, optimizer and both RNG states); ``on_epoch``
    receives one after every whole epoch."""
    device = model_device(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    per_epoch = num_batches(data, config.batch_size)
    sched = None
    if schedule == "cosine" and per_epoch:
        total = max(1, epochs * per_epoch - 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    first, it = 0, 0
    if resume is not None:
        model.load_state_dict(resume.model)
        opt.load_state_dict({"state": resume.optimizer, "param_groups": opt.state_dict()["param_groups"]})
        generator.set_state(resume.data_rng)
        _set_rng_state(resume.torch_rng, device)
        first, it = resume.epochs_done, resume.iteration
        if sched is not None:  # the schedule is a function of the step count only
            sched.last_epoch = it - 1
            with warnings.catch_warnings():  # "step() before optimizer.step()": intended here
                warnings.simplefilter("ignore", UserWarning)
                sched.step()
    model.train()
    for epoch in range(first, epochs):
        for x, y in iter_batches(data, config.batch_size, generator=generator):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            _check_labels(y, logits.shape[-1])
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            it += 1
            value = loss.item()
            if not math.isfinite(value):
                raise HeatlabError(f"The training loss became {value} at iteration {it}; lower the learning rate, e.g. lr=0.0001.")
            yield it, epoch, value
        if on_epoch is not None:
            on_epoch(Checkpoint(epoch + 1, it, model.state_dict(), opt.state_dict()["state"], generator.get_state(),
                                _rng_state(device)))


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(state: torch.Tensor, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def train_continuous(model: nn.Module, train_data: Any, config: TrainConfig, *, on_step: OnStep | None = None,
                     resume: Checkpoint | None = None, on_epoch: Callable[[Checkpoint], None] | None = None) -> list[float]:
    """Continuous mode: train ``model`` in place for ``config.epochs`` epochs; return the losses.

    ``on_epoch(checkpoint)`` is called after each epoch; passing the last one back as ``resume``
    continues to the same weights as an uninterrupted run (losses of the resumed epochs only)."""
    device = model_device(model)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "base", "data"))
    losses = []
    with _seeded(derive_seed(config.seed, "base", "torch"), device):
        steps = _train_steps(model, train_data, config, config.epochs, generator, lr=config.lr,
                             schedule=config.schedule, resume=resume, on_epoch=on_epoch)
        for it, epoch, loss in steps:
            losses.append(loss)
            if on_step is not None:
                on_step(it, epoch, loss)
    return losses


@dataclass(frozen=True)
class Validation:
    """One regular-evaluation check: accuracy of the model on validation shard ``shard``."""

    iteration: int
    epoch: int
    shard: int
    accuracy: float
    decision: str  # EarlyStopping.update's answer
    saved: bool  # this state became the branch model


@dataclass
class BranchResult:
    """Outcome of :func:`train_branch`; ``state_dict`` is the saved (best) state the model now holds."""

    branch: int
    stop_reason: str
    iterations: int
    best_shard_acc: float
    best_iteration: int
    losses: list[float]
    validations: list[Validation]
    state_dict: dict[str, torch.Tensor] = field(repr=False)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_branch(
    model: nn.Module,
    train_data: Any,
    val_shards: Any,
    config: TrainConfig,
    *,
    branch: int = 0,
    on_step: OnStep | None = None,
    on_validate: Callable[[Validation], None] | None = None,
    on_save: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> BranchResult:
    """Regular-evaluation mode for one branch; ``model`` (a copy of the base) is trained in place.

    ``val_shards`` is a shard source (``num_shards``, ``load_shard``); every ``config.eval_every``
    iterations one shard, drawn from a generator seeded by ``(config.seed, branch)``, is validated.
    The first validation always saves (so a branch always has a model), later ones save on
    "improved" or "target". If no validation fell inside ``branch_epochs``, one runs at the end.
    On return the model holds the saved state.
    """
    if not _is_shard_source(val_shards) or val_shards.num_shards < 1:
        raise HeatlabError("Validation data must be a split with at least one shard; write the val split first.")
    device = model_device(model)
    data_gen = torch.Generator().manual_seed(derive_seed(config.seed, "branch", branch, "data"))
    val_gen = torch.Generator().manual_seed(derive_seed(config.seed, "branch", branch, "val"))
    stopper = EarlyStopping(config.target_acc, config.n_l, config.r_f)
    losses: list[float] = []
    validations: list[Validation] = []
    best: dict[str, Any] = {"state": None, "iteration": 0}

    def validate(it: int, epoch: int) -> str:
        k = int(torch.randint(val_shards.num_shards, (1,), generator=val_gen))
        shard = val_shards.load_shard(k)
        acc = evaluate_accuracy(model, (shard["images"], shard["labels"]), config.batch_size)
        decision = stopper.update(acc)
        saved = decision in ("target", "improved") or best["state"] is None
        if saved:
            best["state"], best["iteration"] = _snapshot(model), it
            if on_save is not None:
                on_save(best["state"])
        record = Validation(it, epoch, k, acc, decision, saved)
        validations.append(record)
        if on_validate is not None:
            on_validate(record)
        return decision

    reason, it, epoch = STOP_EXHAUSTED, 0, 0
    with _seeded(derive_seed(config.seed, "branch", branch, "torch"), device):
        lr = config.lr if config.branch_lr is None else config.branch_lr
        steps = _train_steps(model, train_data, config, config.branch_epochs, data_gen, lr=lr)
        for it, epoch, loss in steps:
            losses.append(loss)
            if on_step is not None:
                on_step(it, epoch, loss)
            if it % config.eval_every == 0:
                decision = validate(it, epoch)
                if decision in ("target", "stop"):
                    reason = STOP_TARGET if decision == "target" else STOP_EARLY
                    break
        steps.close()
        if best["state"] is None:
            validate(it, epoch)
    model.load_state_dict(best["state"])
    return BranchResult(
        branch=branch,
        stop_reason=reason,
        iterations=it,
        best_shard_acc=stopper.best,
        best_iteration=best["iteration"],
        losses=losses,
        validations=validations,
        state_dict=best["state"],
    )
