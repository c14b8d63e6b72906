"""Where AX adds a heatmap: the classifier's input space or the pixel space (papers 000/001).

The papers add ``h`` to the tensor the network receives, which for their models is standardised;
heatlab does the same by default. A model that standardises its own input (a :class:`Normalize` in
its ``normalize`` attribute, or first in an ``nn.Sequential``) is split for the duration of a block
into ``to_input`` (pixels -> that tensor) and ``net`` (the model without its ``Normalize``, taking
that tensor). The model is the same object with its ``Normalize`` switched off, so parameters,
device and CAM layer names are unchanged; it is switched back on when the block ends, also after
an error.

Spaces: ``"input"`` (after the model's ``Normalize``; a model without one receives the data as
stored, so there the two spaces coincide) and ``"pixel"`` (the data as stored, [0, 1] images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from heatlab.errors import HeatlabError
from heatlab.models.normalize import Normalize

SPACES = ("input", "pixel")


def check_space(space: str) -> str:
    if space not in SPACES:
        raise HeatlabError(f"Unknown AX space {space!r}; choose 'input' (after the model's own Normalize, the "
                           "papers' convention) or 'pixel' (the data as stored).")
    return space


def model_normalize(model: nn.Module) -> Normalize | None:
    """The model's own :class:`Normalize` (its ``normalize`` attribute or first Sequential entry), or None."""
    norm = getattr(model, "normalize", None)
    if isinstance(norm, Normalize):
        return norm
    if isinstance(model, nn.Sequential) and len(model) and isinstance(model[0], Normalize):
        return model[0]
    return None


def _identity(x: Tensor) -> Tensor:
    return x


@contextmanager
def input_space(model: nn.Module, space: str = "input") -> Iterator[tuple[nn.Module, Callable[[Tensor], Tensor]]]:
    """Yield ``(net, to_input)`` with ``net(to_input(x)) == model(x)`` for pixel inputs ``x``.

    ``space="pixel"`` or a model without a ``Normalize``: ``(model, identity)``.
    """
    check_space(space)
    norm = model_normalize(model)
    if space == "pixel" or norm is None:
        yield model, _identity
        return
    sequential = isinstance(model, nn.Sequential) and len(model) and model[0] is norm
    if sequential:
        model[0] = nn.Identity()
    else:
        model.normalize = None
    try:
        yield model, norm
    finally:
        if sequential:
            model[0] = norm
        else:
            model.normalize = norm
