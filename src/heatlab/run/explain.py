"""``heatlab explain``: attributions of a few images with one model and several methods, stored.

Inputs (:func:`gather_images`): image files, folders of images (searched recursively, natural
order), or a dataset spec / cell folder as ``--data`` takes (one split). The model is a run's branch
(``run=``, ``branch=``) or any model name of :func:`heatlab.models.zoo.create` with optional
``weights`` (a heatlab safetensors file carries its spec, so ``model`` may then be left out).

Writes ``<out>/attributions.safetensors``: one float16 tensor N×C×H×W per method (raw values, as
``heatlab.explain.attribute`` returns them), ``inputs`` (float16, the images as the model saw
them), ``targets``, ``predictions`` and, for datasets, ``labels`` (int64); its metadata key
"heatlab" holds JSON with ``ids``, ``sources`` (file paths or ``split/shard/index``), ``methods``,
``signs`` (how to draw each), ``class_names`` and ``model`` (the spec). Inputs, model and targets
are checked before anything is written, and bad input found later (a HeatlabError of a unit) removes
what the run added, so bad input leaves ``out`` as it was. The attributions are computed on the Stage
runner (:class:`ExplainStage`, any backend): ``out/parts/`` holds the images the units read and each
unit's piece until they are joined; a killed run started again redoes only the unfinished units.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import safetensors.torch
import torch
from safetensors import safe_open

from heatlab.data import registry
from heatlab.data.images import IMAGE_SUFFIXES, _check_header, decode_image, natural_key
from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute, cam_layer, cam_layer_rule
from heatlab.explain.methods.selection import needs_image
from heatlab.explain.methods.selection import parse_methods as stage_methods
from heatlab.files import atomic_path, ensure_dir, remove_stale_tmp, sha256_file, undo_on_error
from heatlab.models import stored_spec, zoo
from heatlab.models.external import spec_name
from heatlab.models.state import eval_mode, model_device
from heatlab.models.training import resolve_device
from heatlab.progress import Progress, report

from heatlab.run.results import ExplainResult
from heatlab.run.rundir import ExplainDir, RunDir, branch_info, branch_name, load_branch
from heatlab.run.runner import FIXED_THREADS, TENSORS, Stage, Unit, Work, run_stage

ATTRIBUTIONS = "attributions.safetensors"
#: Images per unit (rounded down to whole batches, at least one batch).
SHARD = 64
DEFAULT_METHODS = ("Saliency", "IntegratedGradients")
#: Methods whose heatmap is |.| by heatlab's default (drawn with a sequential colormap).


def parse_methods(methods: str | Sequence[str] | None) -> list[str]:
    """Method names from ``"Saliency,IntegratedGradients"`` or a list (default :data:`DEFAULT_METHODS`),
    checked like every stage's ``--methods`` (opt-in names included); HeatlabError naming the choices."""
    names = DEFAULT_METHODS if methods is None else methods.split(",") if isinstance(methods, str) else methods
    return stage_methods([str(m).strip() for m in names if str(m).strip()])


# ------------------------------------------------------------------------------------- images
def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def _image_files(folder: Path, skip: Path | None = None) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts) and not _inside(p, skip)]
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(folder))))


def shown(path: str | os.PathLike) -> str:
    r"""``path`` as text that any page, JSON or terminal can hold: the bytes of a non-UTF-8 name
    (kept by Python as lone surrogates) become ``\xNN``; other names stay as they are."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def gather_images(sources: Sequence[str | os.PathLike], *, split: str = "test", limit: int | None = None,
                  skip: str | os.PathLike | None = None) -> tuple[list[str], list[Any], Any]:
    """``(source names, items, dataset split or None)``: items are image file paths, or for one
    dataset spec the ``(shard, index)`` of each sample of ``split``. HeatlabError when nothing is found.

    Nothing inside the folder ``skip`` (the stage's own output) is read: folders are searched
    without it, and a file or folder inside it is refused."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    skip = Path(skip).expanduser().resolve() if skip is not None else None
    files: list[Path] = []
    for src in sources:
        path = Path(src).expanduser()
        if path.exists() and _inside(path, skip):
            raise HeatlabError(f"'{shown(path)}' lies inside the output folder '{shown(skip)}', which explain never "
                               "reads; pass inputs outside it or choose another output folder.")
        if path.is_file():
            files.append(path)
        elif path.is_dir() and not registry.is_cell_folder(path):
            found = _image_files(path, skip)
            if not found:
                raise HeatlabError(f"Folder '{shown(path)}' holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a folder of "
                                   "images, image files or a dataset spec.")
            files.extend(found)
        elif len(sources) == 1:
            data = registry.open_data(str(src), registry.check_split(split))
            if data.input_kind != "image":
                raise HeatlabError(f"Dataset '{src}' holds tables, not images; pass images or an image dataset.")
            items = []
            for k in range(data.num_shards):
                if limit is not None and len(items) >= limit:
                    break
                items += [(k, i) for i in range(len(data.load_shard(k)["labels"]))]  # kept in the split's cache
            if not items:
                raise HeatlabError(f"Split '{split}' of '{src}' holds no samples; pass another split.")
            return [f"{split}/{k}/{i}" for k, i in items], items, data
        else:
            raise HeatlabError(f"'{shown(src)}' is no image file or folder; pass existing image files or folders "
                               "(or a single dataset spec).")
    files = files[:limit]
    for f in files:
        _check_header(f)
    return [shown(f) for f in files], files, None


def _load_items(items: list, data: Any, size: int | None, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images N×C×H×W float32 in [0, 1], and for a dataset its labels N int64 (each shard read once)."""
    if data is not None:
        shards: dict[int, dict[str, torch.Tensor]] = {}
        for k, _ in items:
            if k not in shards:
                shards[k] = data.load_shard(k)
        images = torch.stack([shards[k]["images"][i] for k, i in items])
        return images, torch.stack([shards[k]["labels"][i] for k, i in items]).to(torch.int64)
    arrays = [decode_image(Path(f), size, channels) for f in items]
    return torch.from_numpy(np.stack(arrays)).to(torch.float32).div_(255), None


def _ids(sources: list[str]) -> list[str]:
    """File-name-safe unique ids: ``0003-cat`` for ``.../cat.jpg`` (number first, so they sort)."""
    width = max(4, len(str(len(sources))))
    return [f"{n:0{width}d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(s).stem)[:40]}" for n, s in enumerate(sources)]


# -------------------------------------------------------------------------------------- model
def _weights_spec(path: Path) -> object | None:
    """The spec a heatlab safetensors file carries in its metadata (as stored: checked when built), else None."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta["heatlab_spec"]) if "heatlab_spec" in meta else None
    except Exception:  # not a valid file: load_weights says so in its own sentence
        return None


def build_model(*, run: str | os.PathLike | None, branch: str, model: str | None, weights: str | os.PathLike | None,
                num_classes: int | None, in_channels: int | None, device: str,
                trust_model_code: bool = False) -> tuple[torch.nn.Module, list[str] | None]:
    """(model in eval mode on ``device``, class names or None).

    A spec read from the run or from the weights' metadata that names code from outside heatlab is
    rebuilt only with ``trust_model_code=True`` or when ``model`` names the same code.
    """
    dev = resolve_device(device)
    if run is not None:
        if model is not None or weights is not None:
            raise HeatlabError("A run folder and a model were both given; pass either run=RUN or model=NAME, not both.")
        info = branch_info(run, branch)
        net = load_branch(run, branch, device=dev, trust_model_code=trust_model_code)
        return net, list(info.get("class_names") or []) or None
    spec = _weights_spec(Path(weights)) if weights is not None else None
    if model is None and weights is not None:
        if not Path(weights).is_file():
            raise HeatlabError(f"Weights file '{weights}' does not exist; check the path.")
        if spec is None:
            raise HeatlabError(f"'{weights}' does not record its model (only heatlab's .safetensors do); pass e.g. "
                               "model=torchvision:resnet18 and num_classes=1000 with it.")
    if model is None and spec is None:
        raise HeatlabError("No model given; pass e.g. run=runs/r1, model=torchvision:resnet18 (with num_classes), "
                           "or weights=model.safetensors written by heatlab.")
    stored_name = spec.get("name") if isinstance(spec, dict) else None
    if spec is not None and (model is None or model == stored_name
                             or (isinstance(stored_name, str) and spec_name(model) == stored_name)):
        net = stored_spec.rebuild(spec, source=f"The heatlab_spec metadata of '{weights}'",
                                  trust_model_code=trust_model_code, model=model, weights=weights)
    else:
        if num_classes is None:
            raise HeatlabError(f"Model '{model}' needs its class count; pass e.g. num_classes=1000 (ImageNet weights).")
        net = zoo.create(model, num_classes=num_classes, in_channels=3 if in_channels is None else in_channels, seed=0)
    if weights is not None:
        zoo.load_weights(net, weights)
    return net.to(dev).eval(), None


def _target_of(target: str | int | None, class_names: list[str] | None, k: int) -> int | None:
    if target is None or str(target).strip().lower() in ("", "predicted"):
        return None
    text = str(target).strip()
    if text.lstrip("-").isdigit():
        t = int(text)
    elif class_names and text in class_names:
        t = class_names.index(text)
    else:
        known = f" or one of {', '.join(class_names)}" if class_names else ""
        raise HeatlabError(f"Target {text!r} is no class; pass target=predicted, a class index 0..{k - 1}{known}.")
    if not 0 <= t < k:
        raise HeatlabError(f"Target {t} is out of range for a {k}-class model; pass e.g. target=0 (a class index 0..{k - 1}).")
    return t


# -------------------------------------------------------------------------------------- units
@dataclass(frozen=True)
class ExplainUnit(Unit):
    """``method`` on images ``shard * per_shard`` up to the next shard of the stored inputs."""

    method: str
    shard: int

    def stem(self, parts: Path) -> Path:
        return parts / self.method / f"shard-{self.shard:05d}"

    def describe(self) -> str:
        return f"{self.method} on image shard {self.shard}"

    def order(self) -> tuple:
        return (self.shard,)


class ExplainStage(Stage):
    """Explain on the Stage runner: one :class:`ExplainUnit` per (method, shard of ``per_shard`` images).

    A unit rebuilds the model from ``model_args`` (the arguments of :func:`build_model`, paths made
    absolute) and reads the images and targets the driver stored in ``parts/inputs.safetensors``, so any
    backend can run it; it attributes them in batches of ``batch_size`` (the batches a single pass
    makes) and returns float16 attributions. ``identity`` (the model's spec and weights, the layer, the
    inputs' sha256) goes in each unit's marker, so a killed explain resumes only for the same request.
    Units run on :data:`~heatlab.run.runner.FIXED_THREADS` CPU threads: a gradient summed over another
    thread count differs in a few float16 values, so the bytes would depend on OMP_NUM_THREADS and the backend.
    """

    name = "explain"
    kinds = {"attributions": TENSORS}
    threads = FIXED_THREADS  # the same bytes on every backend (Stage.threads)

    def __init__(self, out: ExplainDir, *, model_args: dict, methods: Sequence[str], layer: str | None, count: int,
                 batch_size: int, identity: dict, progress: Progress | None):
        super().__init__(RunDir(out.path), device=model_args["device"], batch_size=batch_size)
        self.out, self.model_args, self.methods, self.layer, self.count = out, model_args, list(methods), layer, count
        self.per_shard = batch_size * max(1, SHARD // batch_size)
        self.identity, self.progress = identity, progress

    def shared_file(self) -> Path:
        return self.out.inputs

    def parts_dir(self, unit: ExplainUnit) -> Path:
        return self.out.parts

    def settings(self, unit: ExplainUnit) -> dict:
        return {**self.identity, "per_shard": self.per_shard, "batch_size": self.batch_size}

    def units(self) -> list[ExplainUnit]:
        shards = -(-self.count // self.per_shard)
        return [ExplainUnit(m, k) for m in self.methods for k in range(shards)]

    def run_unit(self, work: Work, unit: ExplainUnit) -> dict[str, Any]:
        net = work.memo("explain-model", repr(self.model_args), lambda: build_model(**self.model_args)[0])
        inputs = work.memo("explain-inputs", str(self.out.inputs), lambda: safetensors.torch.load_file(str(self.out.inputs)))
        lo, hi = unit.shard * self.per_shard, min((unit.shard + 1) * self.per_shard, self.count)
        x, targets, dev = inputs["x"][lo:hi], inputs["targets"][lo:hi], model_device(net)
        parts = []
        for i in range(0, len(x), self.batch_size):
            report(self.progress, f"explain/{unit.method}", lo + i, self.count)
            parts.append(attribute(net, x[i:i + self.batch_size], unit.method,
                                   target=targets[i:i + self.batch_size].to(dev), layer=self.layer).cpu())
        report(self.progress, f"explain/{unit.method}", hi, self.count)
        return {"attributions": {"a": torch.cat(parts).to(torch.float16).contiguous()}}

    def join(self, units: Sequence[ExplainUnit], parts: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        """Each method's attributions N×... float16, shards in order."""
        return {m: torch.cat([p["a"] for u, p in zip(units, parts["attributions"]) if u.method == m]).contiguous()
                for m in self.methods}


def _model_identity(run: Any, branch: str, weights: Any, spec: dict) -> dict:
    """What the model's attributions depend on: its spec and the sha256 of its weights (none: seeded init)."""
    if run is not None:
        sha = RunDir(run).weights_sha256(branch)
    else:
        sha = sha256_file(weights) if weights is not None else None
    return {"model": json.loads(json.dumps(spec, default=str)), "weights_sha256": sha}


def _absolute(path: Any) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _code_absolute(model: str | None) -> str | None:
    """``model`` with the file of a ``path/file.py:fn`` made absolute (a worker may start elsewhere)."""
    if model is None or ".py:" not in model:
        return model
    file, _, fn = model.rpartition(":")
    return f"{_absolute(file)}:{fn}"


# -------------------------------------------------------------------------------------- stage
def explain_run(
    sources: Sequence[str | os.PathLike] | str,
    out: str | os.PathLike,
    *,
    methods: str | Sequence[str] | None = None,
    run: str | os.PathLike | None = None,
    branch: str = "branch-00",
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    target: str | int | None = None,
    limit: int | None = None,
    size: int | None = None,
    split: str = "test",
    batch_size: int = 8,
    device: str = "cpu",
    progress: Progress | None = None,
    trust_model_code: bool = False,
    layer: str | None = None,
    backend: Any = None,
) -> ExplainResult:
    """Attribute the images of ``sources`` with every method and write ``out/attributions.safetensors``.

    ``trust_model_code``: rebuild a model whose stored spec (the run's model.json, the weights'
    metadata) names code from outside heatlab; passing that code again as ``model`` does the same.
    ``layer``: the layer of LayerGradCam and GuidedGradCam (a module name; default the model's last
    ``nn.Conv2d``). A ``model`` built without ``weights``, or a run's model that never trained (the base
    of ``train --epochs 0``), has random weights: the record says so
    (``random_weights``) and the CLI and the index page warn.

    ``backend`` (:func:`heatlab.run.runner.make_backend`, default local) runs the units (one per
    method and shard of :data:`SHARD` images, :class:`ExplainStage`, each on
    :data:`~heatlab.run.runner.FIXED_THREADS` CPU threads, so every backend writes the same bytes); the
    driver alone writes, and a killed run started again with the same request redoes only the unfinished units.

    Returns an :class:`~heatlab.run.results.ExplainResult` (``path``, ``ids``, ``sources``, ``methods``,
    ``signs``, ``class_names``, ``targets``, ``predictions``, ``random_weights``, ``model_name`` and, with a
    CAM method, ``cam_layer`` and ``cam_layer_rule``).
    """
    names = parse_methods(methods)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise HeatlabError(f"limit must be a whole number >= 1, got {limit!r}; pass e.g. limit=16.")
    if size is not None:
        _check_size(size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HeatlabError(f"batch_size must be a whole number >= 1, got {batch_size!r}; pass e.g. batch_size=8.")
    if run is not None:
        branch = branch_name(branch)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HeatlabError(f"'{shown(out)}' is a file, not a folder; choose another output path.")
    remove_stale_tmp(out)  # overlays and files half-written by a killed run
    found, items, data = gather_images(sources, split=split, limit=limit, skip=out)
    found, items = found[:limit], items[:limit]
    net, class_names = build_model(run=run, branch=branch, model=model, weights=weights, num_classes=num_classes,
                                   in_channels=in_channels, device=device, trust_model_code=trust_model_code)
    cams = any(needs_image(m) for m in names)
    chosen = cam_layer(net, layer) if cams or layer is not None else None  # a bad name fails before any work
    spec = dict(getattr(net, "heatlab_spec", {}))
    channels = int(spec.get("in_channels", 3))
    if data is None and size is None:
        size = _check_size(_default_size(run, items[0]), first=found[0])
    x, labels = _load_items(items, data, size, channels)
    if data is not None and x.shape[1] != channels:
        raise HeatlabError(f"The images have {x.shape[1]} channels but the model takes {channels}; pass other data.")
    name = spec.get("name") or (f"{branch} of {shown(run)}" if run is not None else type(net).__name__)
    with torch.no_grad(), eval_mode(net):
        logits = torch.cat([_logits(net, name, x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    if logits.dim() != 2:
        raise HeatlabError(f"The model returns {tuple(logits.shape)} for {len(x)} images, not N×classes logits; "
                           "pass a classifier.")
    k = logits.shape[1]
    if class_names is not None and len(class_names) != k:
        class_names = None
    predictions = logits.argmax(1)
    fixed = _target_of(target, class_names, k)
    targets = predictions.clone() if fixed is None else torch.full_like(predictions, fixed)
    tensors = {"inputs": x.to(torch.float16).contiguous(), "targets": targets.contiguous(),
               "predictions": predictions.contiguous()}
    if data is not None:
        tensors["labels"] = labels
        class_names = class_names or list(getattr(data, "class_names", []) or []) or None
    record = {"ids": _ids(found), "sources": found, "methods": names, "signs": {}, "class_names": class_names,
              "model": spec, "run": shown(Path(run).resolve()) if run is not None else None,
              "branch": branch if run is not None else None, "target": "predicted" if fixed is None else fixed,
              "model_name": model if model is not None else name,
              "random_weights": weights is None if run is None else RunDir(run).random_weights(branch)}
    if cams:
        record.update(cam_layer=chosen, cam_layer_rule=cam_layer_rule(layer))
    model_args = {"run": _absolute(run), "branch": branch, "model": _code_absolute(model), "weights": _absolute(weights),
                  "num_classes": num_classes, "in_channels": in_channels, "device": device,
                  "trust_model_code": trust_model_code}
    with undo_on_error(out):
        ensure_dir(out)
        where = ExplainDir(out.resolve())
        stage = ExplainStage(where, model_args=model_args, methods=names, layer=chosen, count=len(x),
                             batch_size=batch_size, identity={**_model_identity(run, branch, weights, spec), "layer": chosen},
                             progress=progress)
        path = _explain_into(stage, x, targets, tensors, record, backend)
    return ExplainResult.from_record(record, path=str(path), targets=targets.tolist(), predictions=predictions.tolist())


def _explain_into(stage: ExplainStage, x: torch.Tensor, targets: torch.Tensor, tensors: dict[str, torch.Tensor],
                  record: dict, backend: Any) -> Path:
    """Store the inputs the units read, run the units, write ``attributions.safetensors`` (with each
    method's sign in ``record``) and remove the parts; returns the file's path."""
    where = stage.out
    with stage.run.writing("explain"):
        ensure_dir(where.parts)
        with atomic_path(where.inputs) as tmp:  # what every unit explains, written first
            safetensors.torch.save_file({"x": x.contiguous(), "targets": targets.contiguous()}, str(tmp))
        stage.identity["inputs_sha256"] = sha256_file(where.inputs)
        maps = run_stage(stage, progress=stage.progress, backend=backend)
        # A map without negative values (Saliency's |gradient|, SmoothGrad over it, VarGrad) is drawn on a
        # sequential scale; any other on a diverging one centred at 0.
        record["signs"] = {m: "absolute" if bool((a >= 0).all()) else "all" for m, a in maps.items()}
        with atomic_path(where.attributions) as tmp:
            safetensors.torch.save_file({**maps, **tensors}, str(tmp), metadata={"heatlab": json.dumps(record, sort_keys=True)})
        shutil.rmtree(where.parts, ignore_errors=True)  # joined: every piece is in the file
    return where.attributions


def _check_size(size: object, first: str | None = None) -> int:
    """``size`` if it is a whole number in [8, 4096]; ``first`` names the image it was read from."""
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 4096:
        if first is not None:
            raise HeatlabError(f"The first image '{first}' is {size} px high, outside [8, 4096], so explain cannot "
                               "serve the images at its size; pass e.g. size=224 to resize them.")
        raise HeatlabError(f"size must be a whole number in [8, 4096], got {size!r}; pass e.g. size=224.")
    return size


def _logits(net: torch.nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` on the model's device, back on the CPU; a failing model or an output other than one
    tensor is one sentence naming the model."""
    try:
        y = net(x.to(model_device(net)))
    except HeatlabError:
        raise
    except Exception as exc:  # the model's own code: any error it raises is its author's sentence
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        if isinstance(exc, RuntimeError):
            raise HeatlabError(f"Model '{name}' cannot take images of shape {tuple(x.shape[1:])} ({reason}); pass "
                               "e.g. size=224, the size it was trained at.") from None
        raise HeatlabError(f"Model '{name}' failed on images of shape {tuple(x.shape[1:])} ({reason}); fix its "
                           "forward or pass the images it was built for.") from None
    if not isinstance(y, torch.Tensor):
        raise HeatlabError(f"Model '{name}' returns a {type(y).__name__}, not one tensor of logits; make its forward "
                           "return the N×classes logits only (e.g. the first element of the tuple).")
    return y.cpu()


def _default_size(run: str | os.PathLike | None, first: Path) -> int:
    """The run's image size (from its data), else the first image's height."""
    if run is not None:
        try:
            shape = registry.input_shape(RunDir(run).open_data("test"))
            if len(shape) == 3:
                return int(shape[-1])
        except HeatlabError:
            pass
    return int(_check_header(first)[1])


def load_explanations(out: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(record, tensors as float32/int64 on the CPU) of ``out/attributions.safetensors``."""
    path = Path(out) / ATTRIBUTIONS
    if not path.is_file():
        raise HeatlabError(f"'{path}' does not exist; run `heatlab explain` with --out {out} first.")
    with safe_open(str(path), framework="pt") as f:
        record = json.loads((f.metadata() or {})["heatlab"])
    tensors = safetensors.torch.load_file(str(path))
    return record, {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
