"""The model registry: build a model by name, save and load its weights.

A model family is one module that lists its builders in ``MODELS = (ModelEntry(name, fn), ...)``;
a builder is ``fn(*, num_classes, in_channels, **kw) -> nn.Module``. Add the module to
``_FAMILY_MODULES`` and its models appear in :func:`available` (families are imported on first use,
so they may import this module without a cycle). The built-in models form an immutable
:class:`heatlab.registry.Registry` (:func:`builtin_models`); :func:`model_registry` adds the
``heatlab.models`` entry points.

Names outside the registry are resolved by :mod:`heatlab.models.external`: ``torchvision:NAME``,
``path/to/file.py:fn``, ``package.module:fn`` and the ``heatlab.models`` entry-point group (those
builders get only the keyword arguments they accept).

Every model from :func:`create` carries ``model.heatlab_spec``, a JSON-serialisable dict
``{"name", "num_classes", "in_channels", **builder keyword arguments with defaults filled in}``;
``create(**spec)`` rebuilds the architecture. Weights are stored as safetensors.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import json
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import safetensors.torch
import torch
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.files import atomic_path
from heatlab.registry import Registry

from heatlab.models.config import DEFAULT_MODEL  # noqa: E402,F401  (re-exported)

_FAMILY_MODULES = ("heatlab.models.cellcnn", "heatlab.models.torchvision_models", "heatlab.models.attention", "heatlab.models.mnist_nets",
                  "heatlab.models.mlp")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``build(*, num_classes, in_channels, **kw) -> nn.Module`` under ``name``;
    ``lenient``: the builder gets only the keywords it accepts (models from outside heatlab)."""

    name: str
    build: Callable[..., nn.Module]
    lenient: bool = False

    def __post_init__(self) -> None:
        if not callable(self.build):
            raise HeatlabError(f"Model {self.name!r}: build must be a function fn(*, num_classes, in_channels) that "
                               "returns an nn.Module.")


@functools.cache
def builtin_models() -> Registry[ModelEntry]:
    """The zoo: every family module's ``MODELS`` (the families are imported on the first call)."""
    return Registry("models", ModelEntry, (e for m in _FAMILY_MODULES for e in importlib.import_module(m).MODELS),
                    adapt=_plugin_model)


def model_registry() -> Registry[ModelEntry]:
    """The zoo plus the models of the ``heatlab.models`` entry points (builders, called leniently)."""
    return builtin_models().with_entry_points()


def _plugin_model(name: str, obj: object) -> ModelEntry:
    if not callable(obj):
        raise HeatlabError(f"The heatlab.models entry point {name!r} is not callable; point it at a function "
                           "fn(*, num_classes, in_channels) that returns an nn.Module.")
    return ModelEntry(name, obj, lenient=True)


def _registry() -> Registry[ModelEntry]:
    return builtin_models()


def available() -> list[str]:
    """Sorted names of all registered models (not the forms of :mod:`heatlab.models.external`)."""
    return sorted(_registry())


def is_registered(name: str) -> bool:
    """True when ``name`` is a zoo model (in a family's ``MODELS``)."""
    return isinstance(name, str) and name in _registry()


def _check_count(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HeatlabError(f"{what} must be a whole number of at least 1, got {value!r}; pass e.g. {what}=3.")
    return value


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw initial weights from ``torch.manual_seed(seed)`` without touching the global CPU RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _resolve(name: str, file_sha256: str | None = None):
    """The :class:`heatlab.models.external.Resolved` builder of a registered name or of one of the forms
    of :mod:`heatlab.models.external` (imported on first use: it imports torchvision); ``file_sha256``
    is the sha256 a ``file.py:fn`` model must have, checked before the file runs."""
    from heatlab.models import external

    builders = _registry()
    if isinstance(name, str) and name in builders:
        return external.Resolved(builders[name].build, name, lenient=False)
    found = external.resolve(name, file_sha256=file_sha256) if isinstance(name, str) and name else None
    if found is None:
        plugins = external.entry_point_names()
        raise HeatlabError(
            f"Unknown model '{name}'; choose one of: {', '.join(sorted(builders) + plugins)}, or torchvision:NAME, "
            "path/to/file.py:function or package.module:function."
        )
    return found


def builder(name: str) -> Callable[..., nn.Module]:
    """The builder of model ``name``: registered, ``torchvision:NAME``, ``file.py:fn``, ``module:fn`` or an
    entry point of the ``heatlab.models`` group (a HeatlabError naming the choices otherwise)."""
    return _resolve(name).build


def create(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    seed: int | None = None,
    backbone_weights: str | os.PathLike | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build registered model ``name`` with random weights (train mode, on the default device).

    ``seed`` makes the initial weights reproducible (the global RNG is left as it was; without a
    seed the global RNG is used). ``backbone_weights`` is a local state-dict file (.safetensors,
    or a torch.save file read with ``weights_only=True``, e.g. a torchvision checkpoint you already
    have): every parameter outside the model's new head is loaded from it; nothing is downloaded.
    Neither is recorded in ``heatlab_spec``: they only set the starting weights.
    """
    recorded_sha = kwargs.pop("file_sha256", None)
    if recorded_sha is not None and not isinstance(recorded_sha, str):
        raise HeatlabError(f"file_sha256 must be a hex string, got {recorded_sha!r}; build the model again from its file.")
    found = _resolve(name, recorded_sha)
    build = found.build
    _check_count("num_classes", num_classes)
    _check_count("in_channels", in_channels)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise HeatlabError(f"seed must be an integer, got {seed!r}; pass e.g. seed=0.")
    arguments = {"num_classes": num_classes, "in_channels": in_channels, **kwargs}
    if found.lenient:
        from heatlab.models.external import accepted

        arguments = accepted(build, arguments)
    try:
        bound = inspect.signature(build).bind(**arguments)
    except TypeError:
        params = [p for p in inspect.signature(build).parameters if p not in ("num_classes", "in_channels")]
        raise HeatlabError(
            f"Model '{name}' does not accept the arguments {sorted(kwargs)}; it accepts: {', '.join(params) or 'none'}."
        ) from None
    bound.apply_defaults()
    params = inspect.signature(build).parameters
    call_args: dict = {}
    for key, value in bound.arguments.items():  # keyword arguments by name, **kw flattened
        call_args.update(value if params[key].kind is inspect.Parameter.VAR_KEYWORD else {key: value})
    try:
        spec = json.loads(json.dumps({"name": found.spec_name, **found.extra, **call_args}))
    except (TypeError, ValueError):
        raise HeatlabError(
            f"Arguments for model '{name}' must be JSON values (numbers, strings, lists), got {kwargs!r}."
        ) from None
    with _seeded(seed):
        if found.lenient:
            model = _call_external(name, build, call_args)
        else:
            model = build(**call_args)
    if not isinstance(model, nn.Module):
        raise HeatlabError(f"The builder of model '{name}' returned {type(model).__name__}, not a torch.nn.Module; "
                           "make it return the model.")
    if backbone_weights is not None:
        load_backbone(model, backbone_weights)
    model.heatlab_spec = spec
    return model


def _call_external(name: str, build: Callable[..., nn.Module], kwargs: dict) -> object:
    """Call a builder from outside heatlab; anything it raises becomes one sentence naming the model."""
    try:
        return build(**kwargs)
    except HeatlabError:
        raise
    except Exception as exc:  # the user's code may raise anything
        raise HeatlabError(f"The builder of model '{name}' raised {type(exc).__name__}: {exc}; fix the builder "
                           f"(it was called with {', '.join(sorted(kwargs)) or 'no arguments'}).") from None


def _check_module(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise HeatlabError(f"Expected a torch.nn.Module, got {type(model).__name__}; pass the model object itself.")


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch.save'd state dict (read with weights_only=True), on the CPU."""
    p = Path(path)
    if not p.is_file():
        raise HeatlabError(f"Weights file '{p}' does not exist; check the path.")
    if p.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(p), device="cpu")
        except Exception as exc:  # the safetensors parser raises its own error types
            raise HeatlabError(
                f"'{p}' is not a valid safetensors file ({exc}); save it again with save_weights."
            ) from None
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for files that are not checkpoints
        if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
            raise HeatlabError(
                f"'{p}' holds more than tensors and is refused for safety (torch.load weights_only=True); "
                "save model.state_dict() or use a .safetensors file."
            ) from None
        raise HeatlabError(
            f"'{p}' is not a PyTorch state-dict file ({type(exc).__name__}); "
            "use .safetensors or torch.save(model.state_dict())."
        ) from None
    flat = isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    if not flat:
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise HeatlabError(
            f"'{p}' is not a flat state dict of tensors (found {keys}); save model.state_dict() itself."
        )
    return dict(obj)


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


_SAME_MODEL = "they must come from the same architecture with the same num_classes and in_channels"
_SAME_BACKBONE = "the file must be a state dict of the same backbone (torchvision's names for torchvision models)"


def _mismatch(
    path: str | os.PathLike, missing: list[str], unexpected: list[str], shapes: list[str], hint: str = _SAME_MODEL
) -> HeatlabError:
    parts = []
    if shapes:
        parts.append(f"shapes differ for {_listing(shapes)}")
    if missing:
        parts.append(f"missing from the file: {_listing(missing)}")
    if unexpected:
        parts.append(f"not in the model: {_listing(unexpected)}")
    return HeatlabError(f"Weights in '{path}' do not fit the model ({'; '.join(parts)}); {hint}.")


def _shape_note(key: str, file_t: torch.Tensor, model_t: torch.Tensor) -> str:
    return f"{key} (file {tuple(file_t.shape)}, model {tuple(model_t.shape)})"


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a full state dict from ``path`` into ``model`` (strict) and return ``model``.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. Keys and shapes must match exactly.
    """
    _check_module(model)
    state = _read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [_shape_note(k, state[k], own[k]) for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise _mismatch(path, missing, unexpected, shapes)
    model.load_state_dict(state, strict=True)
    return model


def _grey_version_of(mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    """True when ``mine`` is a one-input-channel conv kernel and ``theirs`` the same kernel for more channels."""
    same_rest = theirs.dim() == 4 and (theirs.shape[0], *theirs.shape[2:]) == (mine.shape[0], *mine.shape[2:])
    return mine.dim() == 4 and mine.shape[1] == 1 and same_rest


def load_backbone(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load every state-dict entry outside ``model.heatlab_head_prefixes`` from ``path``.

    File entries of the head, or not in the model, are ignored; every backbone entry must be in
    the file with the right shape, except BatchNorm ``num_batches_tracked`` counters (older
    checkpoints lack them). A first convolution with one input channel takes the file's RGB
    kernel summed over channels (the usual grey-scale adaptation).
    """
    head = getattr(model, "heatlab_head_prefixes", None)
    if head is None:
        raise HeatlabError(
            f"{type(model).__name__} declares no head, so backbone_weights cannot be used; use load_weights."
        )
    state = _read_state_dict(path)
    chosen: dict[str, torch.Tensor] = {}
    missing, shapes = [], []
    for key, mine in model.state_dict().items():
        if key.startswith(tuple(head)):
            continue
        theirs = state.get(key)
        if theirs is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
        elif theirs.shape == mine.shape:
            chosen[key] = theirs
        elif _grey_version_of(mine, theirs):
            chosen[key] = theirs.sum(dim=1, keepdim=True)
        else:
            shapes.append(_shape_note(key, theirs, mine))
    if missing or shapes:
        raise _mismatch(path, missing, [], shapes, hint=_SAME_BACKBONE)
    model.load_state_dict(chosen, strict=False)
    return model


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Atomically write ``model.state_dict()`` to a ``.safetensors`` file (contiguous CPU tensors)."""
    _check_module(model)
    save_state(state_tensors(model), path, getattr(model, "heatlab_spec", None))


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as contiguous CPU tensors that share no storage (as safetensors wants)."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in storages and t.numel():  # tied weights: safetensors refuses shared storage
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        tensors[key] = t
    return tensors


def save_state(tensors: dict[str, torch.Tensor], path: str | os.PathLike, spec: dict | None = None) -> None:
    """Atomically write :func:`state_tensors` of a model (whose ``heatlab_spec`` is ``spec``) to ``path``."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise HeatlabError(f"Weights are saved as safetensors, so '{p}' must end in .safetensors; rename it.")
    # One metadata key only: safetensors writes several keys in a random order, and the same
    # weights must give the same bytes (runs record their sha256).
    metadata = {"heatlab_spec": json.dumps(spec, sort_keys=True)} if spec is not None else {"format": "pt"}
    with atomic_path(p) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
