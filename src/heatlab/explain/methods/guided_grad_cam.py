"""GuidedGradCam: GuidedBackprop times the upsampled Grad-CAM map (Captum ``GuidedGradCam``), ``N×C×H×W``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import GuidedGradCam
from torch import Tensor, nn

from heatlab.explain.methods.common import LayerOptions, MethodSpec, Run, check_layer_output


@dataclass(frozen=True)
class GuidedGradCamOptions(LayerOptions):
    """Captum's ``interpolate_mode`` and ``attribute_to_layer_input``."""

    interpolate_mode: str = "nearest"
    attribute_to_layer_input: bool = False


@contextmanager
def build(model: nn.Module, options: GuidedGradCamOptions, inputs: Tensor) -> Iterator[Run]:
    ggc = GuidedGradCam(model, options.layer)

    def run(x: Tensor, target: Tensor, o: GuidedGradCamOptions) -> Tensor:
        a = ggc.attribute(
            x, target=target, interpolate_mode=o.interpolate_mode, attribute_to_layer_input=o.attribute_to_layer_input
        )
        check_layer_output(a, o.layer_name, x.ndim)
        return a

    yield run


SPEC = MethodSpec("GuidedGradCam", build, GuidedGradCamOptions,
                  hooks_activations=True, needs_layer=True, default=True)
