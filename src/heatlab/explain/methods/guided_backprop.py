"""GuidedBackprop: gradients with negative values clipped at every ReLU (Captum ``GuidedBackprop``)."""

from captum.attr import GuidedBackprop

from heatlab.explain.methods.common import MethodSpec, plain

SPEC = MethodSpec("GuidedBackprop", plain(GuidedBackprop), hooks_activations=True, default=True, gradient=True)
