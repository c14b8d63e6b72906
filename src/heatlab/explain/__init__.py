"""Explain: attribution methods behind one registry, and heatmap post-processing."""

from heatlab.explain.attribution import METHODS, attribute, available_methods
from heatlab.explain.postprocess import channel_adjust, clamp, normalize_max_abs

__all__ = ["METHODS", "attribute", "available_methods", "channel_adjust", "clamp", "normalize_max_abs"]
