"""Attribution safety: find and fix model patterns that break hook-based explanation methods.

Captum's DeepLift, GuidedBackprop, LRP and layer methods hook modules, so they go wrong when an
activation works in place (the hooked tensor changes under them), when one activation module is
called several times in a forward pass (its hook fires for every call), or when a residual sum is
written ``out += identity``. :func:`check_attribution_safe` finds these by running one forward
pass with hooks; :func:`make_attribution_safe` returns a repaired deep copy.

What :func:`make_attribution_safe` can fix: every ``inplace=True`` flag; torchvision's
``BasicBlock``/``Bottleneck`` (rewritten into :class:`SafeBasicBlock`/:class:`SafeBottleneck`,
same parameter names); parameter- and buffer-free leaf modules called more than once, when the
model can be traced by ``torch.fx`` (the result is then an ``fx.GraphModule`` with the same state
dict; fx records ``x += y`` as ``x + y``, which is exact unless the code reads another alias of
``x`` afterwards). What it cannot fix, and leaves for the check to report: in-place tensor
operations in a custom ``forward`` (``x += y`` when no fx rewrite is needed, ``x.relu_()``), and
reused modules in models ``torch.fx`` cannot trace.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any, Iterator, Sequence

import torch
from torch import fx, nn
from torchvision.models import resnet as tv_resnet

from heatlab.errors import HeatlabError


class SafeBasicBlock(tv_resnet.BasicBlock):
    """torchvision ``BasicBlock`` with one ReLU per use and an out-of-place residual sum.

    Parameter names are torchvision's (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``),
    so torchvision state dicts load unchanged. (N, C_in, H, W) -> (N, planes, H/stride, W/stride).
    """

    relu_uses = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.relu
        _add_relus(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class SafeBottleneck(tv_resnet.Bottleneck):
    """torchvision ``Bottleneck`` with one ReLU per use and an out-of-place residual sum."""

    relu_uses = 3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.relu
        _add_relus(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


def _add_relus(block: SafeBasicBlock | SafeBottleneck) -> None:
    """Give a safe block ``relu1..relu{relu_uses}`` (parameter-free, so no state-dict changes)."""
    for i in range(1, block.relu_uses + 1):
        block.add_module(f"relu{i}", nn.ReLU())


_SAFE_BLOCKS: dict[type, type] = {tv_resnet.BasicBlock: SafeBasicBlock, tv_resnet.Bottleneck: SafeBottleneck}


def _safe_block(block: nn.Module) -> nn.Module:
    """The safe form of a torchvision residual block, sharing its submodules."""
    cls = _SAFE_BLOCKS[type(block)]
    safe = cls.__new__(cls)
    nn.Module.__init__(safe)
    for name, child in block.named_children():
        if name != "relu":
            safe.add_module(name, child)
    safe.downsample = block.downsample
    safe.stride = block.stride
    _add_relus(safe)
    safe.train(block.training)
    return safe


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) module output."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _storage(t: torch.Tensor) -> int:
    """Identity of a tensor's memory, shared by views of the same tensor."""
    return t.untyped_storage().data_ptr()


def _as_inputs(model: nn.Module, example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """Validate ``example_inputs`` (a tensor or a sequence of tensors); copies on the model's device
    (copies, so a model that writes into its input cannot change the caller's tensors)."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    if not isinstance(inputs, Sequence) or not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise HeatlabError(
            "example_inputs must be a tensor or a tuple of tensors; "
            "pass a small batch such as torch.rand(1, 3, 128, 128)."
        )
    first = next(iter(model.parameters()), None)
    return tuple(t.detach().to(first.device if first is not None else t.device, copy=True) for t in inputs)


def _label(name: str, module: nn.Module) -> str:
    return f"'{name or '<model>'}' ({type(module).__name__})"


def check_attribution_safe(model: nn.Module, example_inputs: Any) -> list[str]:
    """Problems that break hook-based attribution in ``model``; ``[]`` when it is safe.

    Runs one forward pass on ``example_inputs`` (a tensor of shape N×... or a tuple of tensors)
    in eval mode without gradients, with temporary forward hooks on every leaf module. The
    model's training flags are restored and every hook is removed, even on error.
    """
    if not isinstance(model, nn.Module):
        raise HeatlabError(f"Expected a torch.nn.Module, got {type(model).__name__}; pass the model object itself.")
    inputs = _as_inputs(model, example_inputs)
    problems = [
        f"Module {_label(name, m)} has inplace=True; set inplace=False (make_attribution_safe does this)."
        for name, m in model.named_modules()
        if getattr(m, "inplace", False) is True
    ]
    leaves = {name: m for name, m in model.named_modules() if next(m.children(), None) is None}
    calls: Counter[str] = Counter()
    outputs: list[tuple[str, torch.Tensor, int]] = []  # (module name, output, version when produced)
    # Version increases caused by modules already reported as inplace=True, so the tensors they
    # change are not reported a second time: (len(outputs) at that moment, storage, increase).
    inplace_bumps: list[tuple[int, int, int]] = []
    pending: dict[str, list[tuple[torch.Tensor, int]]] = {}

    def make_pre_hook(name: str):
        def pre_hook(module: nn.Module, args: Any) -> None:
            pending[name] = [(t, t._version) for t in _tensors(args)]

        return pre_hook

    def make_hook(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            calls[name] += 1
            for t, version in pending.pop(name, []):
                inplace_bumps.append((len(outputs), _storage(t), t._version - version))
            outputs.extend((name, t, t._version) for t in _tensors(output))

        return hook

    input_versions = [t._version for t in inputs]
    training = {m: m.training for m in model.modules()}
    handles = []
    try:
        for name, m in leaves.items():
            if getattr(m, "inplace", False) is True:
                handles.append(m.register_forward_pre_hook(make_pre_hook(name)))
            handles.append(m.register_forward_hook(make_hook(name)))
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in training.items():
            m.training = flag

    for name, n in calls.items():
        if n > 1 and next(leaves[name].parameters(), None) is None:
            problems.append(
                f"Module {_label(name, leaves[name])} is called {n} times in one forward pass; give each use its own "
                "module (make_attribution_safe does this for models torch.fx can trace)."
            )
    reported: set[str] = set()
    for i, (name, t, version) in enumerate(outputs):
        storage = _storage(t)
        excused = sum(bump for pos, ptr, bump in inplace_bumps if pos > i and ptr == storage)
        if t._version - version > excused and name not in reported:
            reported.add(name)
            problems.append(
                f"The output of {_label(name, leaves[name])} is modified in place later in the forward pass "
                "(e.g. `out += identity` or `x.relu_()`); "
                "write it out of place (`out = out + identity`)."
            )
    if any(t._version != v for t, v in zip(inputs, input_versions)):
        problems.append("The model modifies its input in place; write the first operations out of place.")
    return problems


def disable_inplace(module: nn.Module) -> nn.Module:
    """Set ``inplace=False`` on ``module`` and all its submodules (in place); return ``module``."""
    for m in module.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return module


class _LeafTracer(fx.Tracer):
    """Traces through every module that has children, so leaves match the check's notion of a module."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return next(m.children(), None) is None


def trace_leaves(model: nn.Module) -> fx.Graph | None:
    """The ``torch.fx`` graph of ``model`` with every childless module a leaf, or None when it cannot be
    traced, when the trace depends on the training flag (fx bakes ``self.training`` into the graph,
    e.g. torchvision's stochastic depth in a block's forward) or when it would change the state dict."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        graphs = []
        for mode in (True, False):
            model.train(mode)
            graphs.append(_LeafTracer().trace(model))
    except Exception:  # any tracing failure: leave the model as it is
        return None
    finally:
        for m, flag in flags:
            m.training = flag
    if graphs[0].python_code("self").src != graphs[1].python_code("self").src:
        return None
    if set(fx.GraphModule(model, graphs[0]).state_dict()) != set(model.state_dict()):  # e.g. buffers made constants
        return None
    return graphs[0]


def _split_reused_modules(model: nn.Module) -> nn.Module:
    """Give each extra call of a reused parameter- and buffer-free leaf module its own copy.

    Returns ``model`` unchanged when nothing is reused or :func:`trace_leaves` cannot trace it,
    otherwise an ``fx.GraphModule`` over the same submodules (same state dict).
    """
    graph = trace_leaves(model)
    if graph is None:
        return model
    nodes = [n for n in graph.nodes if n.op == "call_module"]
    counts = Counter(n.target for n in nodes)

    def stateless(target: str) -> bool:
        sub = model.get_submodule(target)
        return next(sub.parameters(), None) is None and next(sub.buffers(), None) is None

    reused = {t for t, c in counts.items() if c > 1 and stateless(t)}
    if not reused:
        return model
    seen: Counter[str] = Counter()
    for node in nodes:
        if node.target not in reused:
            continue
        seen[node.target] += 1
        if seen[node.target] == 1:
            continue
        parent_name, _, leaf = node.target.rpartition(".")
        parent = model.get_submodule(parent_name)
        k = seen[node.target]
        while hasattr(parent, f"{leaf}_{k}"):
            k += 1
        parent.add_module(f"{leaf}_{k}", copy.deepcopy(model.get_submodule(node.target)))
        node.target = f"{parent_name}.{leaf}_{k}" if parent_name else f"{leaf}_{k}"
    gm = fx.GraphModule(model, graph, class_name=f"Safe{type(model).__name__}")
    gm.training = model.training
    if hasattr(model, "heatlab_spec"):
        gm.heatlab_spec = copy.deepcopy(model.heatlab_spec)
    return gm


def make_attribution_safe(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with the fixable problems fixed; ``model`` itself is never changed.

    Fixes ``inplace=True`` flags, torchvision residual blocks and (for fx-traceable models) reused
    parameter-free modules; see the module docstring for what it cannot fix. Run
    :func:`check_attribution_safe` on the result to see anything left.
    """
    if not isinstance(model, nn.Module):
        raise HeatlabError(f"Expected a torch.nn.Module, got {type(model).__name__}; pass the model object itself.")
    safe = copy.deepcopy(model)
    if type(safe) in _SAFE_BLOCKS:
        safe = _safe_block(safe)
    blocks = [(name, m) for name, m in safe.named_modules() if type(m) in _SAFE_BLOCKS]
    for name, block in blocks:
        parent_name, _, leaf = name.rpartition(".")
        setattr(safe.get_submodule(parent_name), leaf, _safe_block(block))
    return _split_reused_modules(disable_inplace(safe))
