"""Rebuild a model from a spec read back from storage: a run's model.json or a weights file's metadata.

Someone else may have written such a spec, so it is checked before anything is built:

- it is an object with a string ``name`` and whole numbers ``num_classes`` and ``in_channels`` in range;
- a built-in name (a zoo model or ``torchvision:NAME``) takes only the keyword arguments its builder
  declares, each a JSON value of the kind of the builder's default, numbers in range;
- a name that runs code from outside heatlab and torchvision (``path/file.py:fn``,
  ``package.module:fn``, an entry point) is built only with consent: ``trust_model_code=True``, or
  ``model`` naming the same code (the user passed it again); a file's recorded sha256 is checked on
  the bytes that then run (:func:`heatlab.models.external.resolve`).
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from heatlab.errors import HeatlabError
from heatlab.models import zoo

# Limits a stored spec must keep (a builder given more would allocate without bound):
# the largest common label sets (ImageNet-21k: 21,841 classes) stay well under 100,000 classes;
# images have 1, 3 or 4 channels and multispectral stacks a few dozen, so 64 channels;
# any other whole number (widths, feature counts, image sizes) at most 65,536, lists at most 64 long.
NUM_CLASSES = (1, 100_000)
IN_CHANNELS = (1, 64)
OTHER_INT = (1, 65_536)
MAX_LIST = 64
MAX_TEXT = 256
_FIXED = ("name", "num_classes", "in_channels")


def _damaged(source: str, what: str) -> HeatlabError:
    return HeatlabError(f"{source} holds a damaged model spec ({what}); train the model again or restore the file.")


def _whole(source: str, key: str, value: object, limits: tuple[int, int]) -> int:
    lo, hi = limits
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _damaged(source, f"{key} is {value!r}, not a whole number in {lo}..{hi}")
    return value


def _number(source: str, key: str, value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        _whole(source, key, value, OTHER_INT)
    elif not isinstance(value, float) or not math.isfinite(value):
        raise _damaged(source, f"{key} holds {value!r}, not a finite number")


def _small_json(source: str, key: str, value: object, depth: int = 0) -> None:
    """A string, a number in range, a short list of numbers, or a small flat object of those (normalize)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _damaged(source, f"{key} is a text of {len(value)} characters")
    elif isinstance(value, (int, float)):
        _number(source, key, value)
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise _damaged(source, f"{key} is a list of {len(value)} entries (at most {MAX_LIST})")
        for v in value:
            _number(source, key, v)
    elif isinstance(value, dict) and depth == 0:
        if len(value) > 8:
            raise _damaged(source, f"{key} has {len(value)} entries")
        for k, v in value.items():
            _small_json(source, f"{key}.{k}", v, depth + 1)
    else:
        raise _damaged(source, f"{key} is {type(value).__name__}")


def _kind_fits(default: object, value: object) -> bool:
    """Whether ``value`` (JSON) is of the kind of a builder's ``default`` (None: any small JSON value)."""
    if default is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and (
            isinstance(default, float) or isinstance(value, int))
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, list)
    return isinstance(value, type(default))


def _declared(build: Any) -> dict[str, inspect.Parameter]:
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD and k not in _FIXED}


def names_code(name: str) -> bool:
    """True when ``name`` is neither a zoo model nor ``torchvision:NAME`` (building it runs outside code)."""
    from heatlab.models.external import TORCHVISION

    return not (zoo.is_registered(name) or name.startswith(TORCHVISION))


def check_spec(spec: object, source: str) -> dict:
    """``spec`` as a dict after the checks above (consent aside); ``source`` names where it was read,
    e.g. ``"'run/model/branch-00/model.json'"``, for the one-sentence HeatlabError."""
    if not isinstance(spec, dict):
        raise _damaged(source, f"the spec is {type(spec).__name__}, not an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 4096:
        raise _damaged(source, f"its name is {name!r}, not a model name")
    out = dict(spec)
    _whole(source, "num_classes", spec.get("num_classes"), NUM_CLASSES)
    _whole(source, "in_channels", spec.get("in_channels", 3), IN_CHANNELS)
    if names_code(name):
        sha = spec.get("file_sha256")
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
            raise _damaged(source, f"file_sha256 is {sha!r}, not a sha256")
        for key, value in spec.items():
            if key not in _FIXED and key != "file_sha256":
                _small_json(source, key, value)
        return out
    try:
        declared = _declared(zoo.builder(name))  # zoo or torchvision: no code from outside runs
    except HeatlabError:
        raise _damaged(source, f"'{name}' is no model of this heatlab and torchvision") from None
    unknown = sorted(set(spec) - set(declared) - set(_FIXED))
    if unknown:
        raise _damaged(source, f"'{name}' takes no {', '.join(unknown)}; it takes {', '.join(declared) or 'no options'}")
    for key, param in declared.items():
        if key in spec:
            value = spec[key]
            if not _kind_fits(param.default, value):
                raise _damaged(source, f"{key} is {value!r}, not like {param.default!r}")
            _small_json(source, key, value)
    return out


def _held(weights: Path) -> int | None:
    """Numbers a .safetensors file holds (read from its header), None when that cannot be told."""
    if weights.suffix != ".safetensors" or not weights.is_file():
        return None
    try:
        with safe_open(str(weights), framework="pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    except Exception:  # not a valid file: load_weights says so in its own sentence
        return None


def _check_size(name: str, spec: dict, weights: Path, source: str) -> None:
    """Refuse, before anything is allocated, a built-in spec describing more numbers than ``weights``
    holds (ranges alone cannot bound a product of widths); the probe is built on the meta device."""
    held = _held(weights)
    if held is None:
        return
    try:
        with torch.device("meta"):
            probe = zoo.create(name, **spec)
    except HeatlabError:
        raise
    except Exception:  # a builder the meta device cannot run: the real build will tell
        return
    wanted = sum(t.numel() for t in probe.state_dict().values())
    if wanted > held:
        raise _damaged(source, f"it describes a model of {wanted:,} numbers but '{weights}' holds {held:,}")


def rebuild(spec: object, *, source: str, trust_model_code: bool = False, model: str | None = None,
            weights: str | os.PathLike | None = None, **create_options: Any) -> nn.Module:
    """The model a stored ``spec`` describes (random weights), after :func:`check_spec`.

    A spec naming code is built only when ``trust_model_code`` is True or ``model`` (what the
    caller's user named themselves) is the same code; otherwise one sentence says what ``source``
    names and how to allow it. ``weights``: the .safetensors file the model is for; a built-in spec
    describing more numbers than it holds is refused before it is built. ``create_options`` go to
    :func:`heatlab.models.zoo.create` (e.g. seed).
    """
    if not isinstance(trust_model_code, bool):
        raise HeatlabError(f"trust_model_code must be True or False, got {trust_model_code!r}.")
    spec = check_spec(spec, source)
    name = spec.pop("name")
    if names_code(name) and trust_model_code is not True:
        from heatlab.models.external import spec_name

        if model is None or spec_name(model) != name:
            raise HeatlabError(f"{source} names model code '{name}'; rerun with trust_model_code=True "
                               "if you trust that code.")
    elif weights is not None and not names_code(name):
        _check_size(name, spec, Path(weights), source)
    return zoo.create(name, **spec, **create_options)
