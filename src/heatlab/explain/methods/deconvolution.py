"""Deconvolution: ReLUs applied to the backward signal instead of the input (Captum ``Deconvolution``)."""

from captum.attr import Deconvolution

from heatlab.explain.methods.common import MethodSpec, plain

SPEC = MethodSpec("Deconvolution", plain(Deconvolution), hooks_activations=True, default=True, gradient=True)
