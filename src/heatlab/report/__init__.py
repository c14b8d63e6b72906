"""Report: figures and HTML pages drawn from what the stages stored; :func:`overlay` for one heatmap."""

from heatlab.report.overlay import overlay

__all__ = ["overlay"]
