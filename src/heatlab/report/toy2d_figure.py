"""Fig. 1 of papers 000/001: the 2-D toy's sample ``x`` and its GAX heatmap ``h`` against the rotation θ.

One panel per ``a1`` (``a2 = 1 − a1``): solid red/blue lines are the pixels ``x1``/``x2`` of
``x = W(θ)(a1, a2)``, dotted red/blue lines the heatmap components ``h1``/``h2`` of eq. (4) with
``kη = 1.2``; dashed vertical lines mark multiples of π/4. As in the paper, each panel shows the
rotations where the sample is non-negative (the range images live in), rounded to multiples of
π/8: [0, π/2] for ``a1 = 0.95``, [−π/8, 3π/8] for 0.7 and [−π/4, π/4] for 0.55.
``full_range=True`` draws θ over [−π, π] instead (the appendix version, Fig. 6 of paper 001).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import torch
from matplotlib.axes import Axes

from heatlab.data.toy2d import PAPER_A1_VALUES, PAPER_K_ETA, gax_heatmap, nonnegative_theta_range, rotation, toy_sample
from heatlab.errors import HeatlabError
from heatlab.report.figures import new_figure, save_figure

#: Points per panel along θ.
SAMPLES = 181


def _pi_label(multiple: Fraction) -> str:
    """``k/n · π`` as mathtext, e.g. ``$-\\frac{3\\pi}{8}$``."""
    if multiple == 0:
        return "$0$"
    sign = "-" if multiple < 0 else ""
    num, den = abs(multiple.numerator), multiple.denominator
    top = r"\pi" if num == 1 else rf"{num}\pi"
    return f"${sign}{top}$" if den == 1 else rf"${sign}\frac{{{top}}}{{{den}}}$"


def _theta_range(a1: float, full_range: bool) -> tuple[Fraction, Fraction]:
    """Panel limits as multiples of π."""
    if full_range:
        return Fraction(-1), Fraction(1)
    lo, hi = nonnegative_theta_range(a1)
    return Fraction(round(lo / (math.pi / 8)), 8), Fraction(round(hi / (math.pi / 8)), 8)


def _panel(ax: Axes, a1: float, k_eta: float, full_range: bool) -> None:
    lo, hi = _theta_range(a1, full_range)
    theta = torch.linspace(float(lo) * math.pi, float(hi) * math.pi, SAMPLES, dtype=torch.float64)
    W = rotation(theta)
    x = toy_sample(a1, W)
    h = gax_heatmap(x, W, k_eta)
    t = theta.numpy()
    ax.axhline(0.0, color="0.6", linewidth=0.6)
    step = Fraction(1, 4) if full_range else Fraction(1, 8)
    ticks = [lo + i * step for i in range(int((hi - lo) / step) + 1)]
    for tick in ticks:
        if (tick / Fraction(1, 4)).denominator == 1:
            ax.axvline(float(tick) * math.pi, color="k", linestyle="--", linewidth=0.6)
    ax.plot(t, x[:, 0].numpy(), color="red", linewidth=1.4, label="$x_1$")
    ax.plot(t, h[:, 0].numpy(), color="red", linestyle=":", linewidth=2.2, label="$h_1$")
    ax.plot(t, x[:, 1].numpy(), color="blue", linewidth=1.4, label="$x_2$")
    ax.plot(t, h[:, 1].numpy(), color="blue", linestyle=":", linewidth=2.2, label="$h_2$")
    ax.set_xlim(float(lo) * math.pi, float(hi) * math.pi)
    ax.set_xticks([float(k) * math.pi for k in ticks], [_pi_label(k) for k in ticks])
    ax.set_xlabel(r"rotation $\theta$")
    ax.set_title(f"$a_1={a1:.3g},\\ a_2={1 - a1:.3g}$")


def toy2d_figure(
    out_png: str | os.PathLike,
    a1_values: Sequence[float] = PAPER_A1_VALUES,
    *,
    k_eta: float = PAPER_K_ETA,
    full_range: bool = False,
) -> Path:
    """Draw the paper's Fig. 1 (one panel per ``a1``) to ``out_png`` atomically; return its path.

    ``a1_values``: the class-1 components, each in [0, 1] (``a2 = 1 − a1``). ``k_eta``: the
    product ``kη`` of eq. (4). ``full_range``: θ over [−π, π] instead of the non-negative range.
    """
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise HeatlabError(f"The toy figure is a PNG, so '{out}' must end in .png; rename it.")
    try:
        values = [float(a) for a in a1_values]
    except (TypeError, ValueError):
        raise HeatlabError(
            f"a1_values must be a list of numbers, got {a1_values!r}; pass e.g. (0.95, 0.7, 0.55)."
        ) from None
    if not values or not all(0.0 <= a <= 1.0 for a in values):
        raise HeatlabError(
            f"a1_values must be one or more numbers in [0, 1], got {values}; pass e.g. (0.95, 0.7, 0.55)."
        )
    if isinstance(k_eta, bool) or not isinstance(k_eta, (int, float)) or not math.isfinite(k_eta):
        raise HeatlabError(f"k_eta must be a finite number, got {k_eta!r}; pass e.g. 1.2.")
    fig = new_figure(4.3 * len(values), 4.4)
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    for ax, a1 in zip(axes, values):
        _panel(ax, a1, float(k_eta), full_range)
    axes[0].set_ylabel("value")
    # One legend below the panels, so it never hides a curve.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, frameon=False)
    fig.suptitle(
        rf"2-D toy: sample $x=W(\theta)\,(a_1,a_2)$ (solid) and GAX heatmap $h$ of eq. (4), $k\eta={k_eta:g}$ (dotted)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, out)
