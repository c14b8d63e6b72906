"""Named attribution settings: which method options a stage uses (papers 000/001/002).

A preset is data: per method, the keyword arguments :func:`heatlab.explain.attribute` gets. The
papers' two pipelines differ on purpose: paper 002's five-band evaluation uses ``|gradient|`` for
Saliency, the AX code of papers 000/001 the signed gradient. Both draw the SHAP baselines as
``randn · 0.001`` and use Grad-CAM at the first convolution (the papers' ``'conv1'``; without a
preset, e.g. ``heatlab explain``, the CAM methods use the last convolution, as Grad-CAM users
expect). ``"uniform"`` keeps heatlab 0.1's settings: SHAP baselines uniform in [0, 1], first convolution.

Stages record the preset in force (name and options) in ``config.json`` under ``attribution``
and the report shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from heatlab.errors import HeatlabError


@dataclass(frozen=True)
class Preset:
    """``options[method]``: keyword arguments for ``attribute`` (methods not named use defaults);
    ``first_conv``: the CAM methods use the model's first ``nn.Conv2d`` (else its last)."""

    name: str
    description: str
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    first_conv: bool = False

    def kwargs(self, method: str) -> dict[str, Any]:
        """The keyword arguments of ``method`` under this preset."""
        return dict(self.options.get(method, {}))

    def record(self, methods: list[str], cam_layer: str | None = None) -> dict:
        """What ``config.json`` stores: the name, the description, the options of ``methods`` and,
        when a CAM method ran, the layer it used."""
        out = {"preset": self.name, "description": self.description,
               "options": {m: self.kwargs(m) for m in methods if self.kwargs(m)}}
        return {**out, "cam_layer": cam_layer} if cam_layer else out


_SHAP = {"baseline_dist": "normal"}
_PRESETS = (
    Preset("paper002", "paper 002's five-band evaluation: Saliency |gradient|, SHAP baselines randn·0.001, "
           "Grad-CAM at the first convolution",
           {"Saliency": {"abs": True}, "DeepLiftShap": _SHAP, "GradientShap": _SHAP}, first_conv=True),
    Preset("paper000", "papers 000/001's AX code: signed Saliency (abs=False), SHAP baselines randn·0.001, "
           "Grad-CAM at the first convolution ('conv1')",
           {"Saliency": {"abs": False}, "DeepLiftShap": _SHAP, "GradientShap": _SHAP}, first_conv=True),
    Preset("uniform", "Saliency |gradient|, SHAP baselines uniform in [0, 1], Grad-CAM at the first convolution "
           "(heatlab 0.1's default)",
           {"Saliency": {"abs": True}, "DeepLiftShap": {"baseline_dist": "uniform"},
            "GradientShap": {"baseline_dist": "uniform"}}, first_conv=True),
)
#: Preset name -> preset (read-only).
PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _PRESETS})
#: The preset each stage uses unless told otherwise.
STAGE_DEFAULTS = MappingProxyType({"evaluate": "paper002", "ax": "paper000", "gax": "paper000"})


def get_preset(name: str | Preset | None, stage: str) -> Preset:
    """The preset ``name`` (``None``: the stage's default, :data:`STAGE_DEFAULTS`)."""
    if isinstance(name, Preset):
        return name
    name = STAGE_DEFAULTS[stage] if name is None else name
    if name not in PRESETS:
        raise HeatlabError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]
