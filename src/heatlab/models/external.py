"""Models from outside the zoo: torchvision architectures, your own builder, installed packages.

:func:`heatlab.models.zoo.builder` asks :func:`resolve` for every name that is not registered:

- ``torchvision:NAME``: any torchvision classification architecture
  (``torchvision.models.list_models(module=torchvision.models)``) with ``num_classes`` set and
  random weights (never downloaded; pass local weights with ``--weights``), made attribution-safe
  (:func:`heatlab.models.safety.make_attribution_safe`: out-of-place activations, one ReLU per use
  in residual blocks, reused parameter-free modules split, and in-place tensor operations of
  ``forward`` rewritten with ``torch.fx`` where it can trace the model, see :func:`out_of_place`). ``in_channels`` other than 3 replaces
  the first 3-channel convolution; ``normalize`` adds heatlab's :class:`Normalize` in front
  (outside the state dict, so it keeps torchvision's names).
- ``path/to/file.py:fn`` or ``package.module:fn``: a builder ``fn(*, num_classes, in_channels,
  **kw) -> nn.Module``; it gets only the keywords it accepts. A file is recorded by its absolute
  path and sha256 (``file_sha256`` in the spec), so a run rebuilt after the file changed or moved
  says so (before the file runs). Specs read back from a run or a weights file name such code only
  with the user's consent (:mod:`heatlab.models.stored_spec`).
- a name a distribution registers in the ``heatlab.models`` entry-point group
  (``[project.entry-points."heatlab.models"] mynet = "mypkg.models:build_mynet"``), loaded on
  first use.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import operator
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import fx, nn

from heatlab.errors import HeatlabError
from heatlab.models.safety import make_attribution_safe, trace_leaves

TORCHVISION = "torchvision:"
ENTRY_POINT_GROUP = "heatlab.models"
#: Extra torchvision constructor arguments: the auxiliary heads return tuples in train mode.
_TORCHVISION_EXTRA = {"googlenet": {"aux_logits": False, "init_weights": True},
                      "inception_v3": {"aux_logits": False, "init_weights": True}}


@dataclass(frozen=True)
class Resolved:
    """A builder found for ``name``: ``spec_name`` is what the spec records; ``extra`` goes into the spec too."""

    build: Callable[..., nn.Module]
    spec_name: str
    extra: dict[str, Any] = field(default_factory=dict)
    lenient: bool = True  # pass only the keywords the builder accepts


# ---------------------------------------------------------------------------------- torchvision
def torchvision_names() -> list[str]:
    """torchvision's classification architectures (``torchvision.models.list_models``)."""
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)


def _first_rgb_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3
                 and m.groups == 1), None)


def _head_prefix(model: nn.Module, num_classes: int) -> tuple[str, ...]:
    """The state-dict prefix of the last Linear/Conv2d that outputs ``num_classes`` (the classifier head)."""
    heads = [n for n, m in model.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    return (heads[-1] + ".",) if heads else ()


def _apply_normalize(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)``, or ``x`` while the model's Normalize is switched off (see :mod:`heatlab.models.input_space`)."""
    return x if norm is None else norm(x)


def _attach_normalize(model: nn.Module, norm: nn.Module) -> nn.Module:
    """``model`` applying ``norm`` (its ``normalize`` attribute, outside the state dict) to its input first.

    Part of ``forward`` itself, not a hook, so Captum's own model hooks (DeepLift) see the model as a
    whole: a node after the input of an fx graph, else a subclass of the model's class.
    """
    model.normalize = norm
    if isinstance(model, fx.GraphModule):
        graph = model.graph
        first = next(n for n in graph.nodes if n.op == "placeholder")
        with graph.inserting_after(first):
            attr = graph.get_attr("normalize")
        with graph.inserting_after(attr):
            normed = graph.call_function(_apply_normalize, (attr, first))
        first.replace_all_uses_with(normed, delete_user_cb=lambda user: user is not normed)
        model.recompile()
        return model
    cls = type(model)

    def forward(self, x, *args, **kwargs):
        return cls.forward(self, _apply_normalize(self.normalize, x), *args, **kwargs)

    model.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__})
    return model


_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}


def out_of_place(model: nn.Module) -> nn.Module:
    """``model`` traced by ``torch.fx`` with in-place tensor operations of its ``forward`` written out of
    place (fx itself records ``x += y`` as ``x + y``; ``F.relu(x, inplace=True)`` and ``x.relu_()`` are
    rewritten). ``model`` itself when fx cannot trace it or the trace would change the state dict's keys.
    Exact unless the code reads another alias of the changed tensor afterwards."""
    graph = trace_leaves(model)
    if graph is None:
        return model
    for node in graph.nodes:
        if node.op == "call_function" and node.target in _INPLACE_FUNCTIONS:
            node.target = _INPLACE_FUNCTIONS[node.target]
        elif node.op in ("call_function", "call_method") and node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
        elif (node.op == "call_method" and node.target.endswith("_") and not node.target.startswith("_")
              and hasattr(torch.Tensor, node.target[:-1])):
            node.target = node.target[:-1]
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    gm.train(model.training)
    return gm


def _torchvision_builder(arch: str) -> Callable[..., nn.Module]:
    names = torchvision_names()
    if arch not in names:
        raise HeatlabError(f"'{arch}' is not a torchvision classification architecture; choose one of torchvision's "
                           f"{len(names)}, e.g. torchvision:resnet18 or torchvision:mobilenet_v3_small.")

    def build(*, num_classes: int, in_channels: int = 3, normalize: str | dict | None = None) -> nn.Module:
        import torchvision.models as tvm

        from heatlab.models.normalize import make_normalize

        norm = make_normalize(normalize, in_channels)
        model = tvm.get_model(arch, weights=None, num_classes=num_classes, **_TORCHVISION_EXTRA.get(arch, {}))
        if in_channels != 3:
            first = _first_rgb_conv(model)
            if first is None:
                raise HeatlabError(f"torchvision:{arch} has no 3-channel first convolution to adapt to {in_channels} "
                                   "channels; use RGB images (in_channels=3).")
            name, conv = first
            new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, new)
        heads = _head_prefix(model, num_classes)
        model = out_of_place(make_attribution_safe(model))
        model.heatlab_head_prefixes = heads
        return model if norm is None else _attach_normalize(model, norm)

    build.__qualname__ = build.__name__ = f"torchvision_{arch}"
    return build


# ------------------------------------------------------------------------------ your own builder
def _builder_from(obj: object, where: str) -> Callable[..., nn.Module]:
    if not callable(obj):
        raise HeatlabError(f"{where} is not callable; point the model at a function fn(*, num_classes, in_channels) "
                           "that returns an nn.Module.")
    return obj


def file_path(target: str) -> Path:
    """The absolute path a ``path/to/file.py`` model target stands for (how a spec records it)."""
    return Path(target).expanduser().resolve()


def _file_builder(path_text: str, fn: str, expected_sha256: str | None = None) -> Resolved:
    """Run the model file once (cached by its sha256) and return its ``fn``.

    The file is read once: its sha256 is checked against ``expected_sha256`` (a run's record) on
    those bytes, and those very bytes are compiled and executed, so a file swapped between the
    check and the import cannot run.
    """
    path = file_path(path_text)
    if not path.is_file():
        raise HeatlabError(f"Model file '{path}' does not exist (a run records the file's absolute path, so a moved "
                           "file is not found); put the file there or pass the path of an existing .py file.")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise HeatlabError(f"Model file '{path}' changed since the model was built (sha256 {str(expected_sha256)[:12]}… "
                           f"then, {digest[:12]}… now); restore that version of the file to rebuild this model.")
    module_name = f"heatlab_user_model_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            exec(compile(data, str(path), "exec"), module.__dict__)  # noqa: S102  (the user's own, checked bytes)
        except Exception as exc:  # the user's code may raise anything
            del sys.modules[module_name]
            raise HeatlabError(f"Model file '{path}' failed to run ({type(exc).__name__}: {exc}); fix the file.") from None
    if not hasattr(module, fn):
        raise HeatlabError(f"Model file '{path}' defines no '{fn}'; name a function of that file after the colon.")
    build = _builder_from(getattr(module, fn), f"'{fn}' in '{path}'")
    return Resolved(build, f"{path}:{fn}", {"file_sha256": digest})


def _module_builder(module_name: str, fn: str) -> Resolved:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HeatlabError(f"Module '{module_name}' cannot be imported ({exc}); install it or put it on PYTHONPATH, "
                           "or pass a file as path/to/file.py:fn.") from None
    except Exception as exc:  # the user's code may raise anything
        raise HeatlabError(f"Module '{module_name}' failed to import ({type(exc).__name__}: {exc}); fix it.") from None
    if not hasattr(module, fn):
        raise HeatlabError(f"Module '{module_name}' has no '{fn}'; name a function of that module after the colon.")
    return Resolved(_builder_from(getattr(module, fn), f"'{module_name}:{fn}'"), f"{module_name}:{fn}")


# --------------------------------------------------------------------------------- entry points
def entry_point_names() -> list[str]:
    """Model names that installed distributions register in the ``heatlab.models`` group."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def _entry_point_builder(name: str) -> Resolved | None:
    found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        return None
    ep = found[0]
    dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plug-in may raise anything
        raise HeatlabError(f"Model '{name}' of distribution '{dist}' (entry point {ep.value}) failed to load "
                           f"({type(exc).__name__}: {exc}); fix or reinstall '{dist}'.") from None
    if not callable(obj):
        raise HeatlabError(f"Model '{name}' of distribution '{dist}' ({ep.value}) is not callable; fix or reinstall '{dist}'.")
    return Resolved(obj, name)


# ------------------------------------------------------------------------------------ resolving
def _split(name: str) -> tuple[str, str, bool] | None:
    """``(target, fn, is a file)`` of a ``file.py:fn`` / ``module:fn`` name, None for other names."""
    if name.startswith(TORCHVISION) or ":" not in name:
        return None
    target, _, fn = name.rpartition(":")
    if not target or not fn.isidentifier():
        raise HeatlabError(f"Model '{name}' must be written path/to/file.py:function or package.module:function.")
    return target, fn, target.endswith(".py") or "/" in target or "\\" in target


def spec_name(name: str) -> str:
    """The name a spec records for ``name`` (a file's absolute path), without importing anything."""
    parts = _split(name)
    if parts is None or not parts[2]:
        return name
    return f"{file_path(parts[0])}:{parts[1]}"


def resolve(name: str, *, file_sha256: str | None = None) -> Resolved | None:
    """The builder of a name outside the zoo, or None when ``name`` is none of the forms above.

    ``file_sha256``: the sha256 a ``file.py:fn`` model must have (checked before the file runs).
    """
    if name.startswith(TORCHVISION):
        return Resolved(_torchvision_builder(name[len(TORCHVISION):]), name)
    parts = _split(name)
    if parts is not None:
        target, fn, is_file = parts
        return _file_builder(target, fn, file_sha256) if is_file else _module_builder(target, fn)
    return _entry_point_builder(name)


def accepted(build: Callable[..., nn.Module], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``kwargs`` the builder's signature accepts (all of them when it takes ``**kw``)."""
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}
