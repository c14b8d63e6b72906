"""Report: figures and HTML pages drawn from what the stages stored; :func:`overlay` for one heatmap,
:func:`stage_figures` for the figures of one stage (the ones :func:`build_report` draws for it)."""

from heatlab.report.overlay import overlay

__all__ = ["build_report", "overlay", "stage_figures"]


def __getattr__(name: str):
    # Loaded on first use: the page and its sections import every figure module.
    if name in ("build_report", "stage_figures"):
        from heatlab.report import html
        return getattr(html, name)
    raise AttributeError(f"module 'heatlab.report' has no attribute {name!r}")
