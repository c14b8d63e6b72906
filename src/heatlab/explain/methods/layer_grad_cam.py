"""LayerGradCam: Grad-CAM at one layer, upsampled to the input (Captum ``LayerGradCam``).

The ``N×1×h×w`` map is upsampled to ``H×W`` with Captum's ``LayerAttribution.interpolate`` and
repeated over the ``C`` input channels, so the result is ``N×C×H×W`` like the inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor, nn

from heatlab.explain.methods.common import LayerOptions, MethodSpec, Run, check_layer_output


@dataclass(frozen=True)
class LayerGradCamOptions(LayerOptions):
    """Captum's ``relu_attributions`` and ``attribute_to_layer_input``; ``interpolate_mode`` of the
    upsampling."""

    interpolate_mode: str = "nearest"
    relu_attributions: bool = False
    attribute_to_layer_input: bool = False


@contextmanager
def build(model: nn.Module, options: LayerGradCamOptions, inputs: Tensor) -> Iterator[Run]:
    cam = LayerGradCam(model, options.layer)

    def run(x: Tensor, target: Tensor, o: LayerGradCamOptions) -> Tensor:
        a = cam.attribute(
            x, target=target, relu_attributions=o.relu_attributions, attribute_to_layer_input=o.attribute_to_layer_input
        )
        check_layer_output(a, o.layer_name, 4)
        a = LayerAttribution.interpolate(a, tuple(x.shape[2:]), o.interpolate_mode)
        return a.expand_as(x).contiguous()

    yield run


SPEC = MethodSpec("LayerGradCam", build, LayerGradCamOptions, needs_layer=True, default=True)
