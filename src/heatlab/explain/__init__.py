"""Explain: attribution methods behind one registry, and heatmap post-processing."""

from heatlab.explain.attribution import (
    METHODS, OPT_IN_METHODS, attribute, available_methods, cam_layer, cam_layer_rule, conv_layers,
)
from heatlab.explain.for_quantus import explain_func
from heatlab.explain.postprocess import channel_adjust, clamp, normalize_max_abs

__all__ = ["METHODS", "OPT_IN_METHODS", "attribute", "available_methods", "cam_layer", "cam_layer_rule", "channel_adjust",
           "clamp", "conv_layers", "explain_func", "normalize_max_abs"]
