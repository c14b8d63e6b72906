"""A heatmap drawn over its image: :func:`overlay` (like grad-cam's ``show_cam_on_image`` or
Captum's ``visualize_image_attr`` blended mode, with heatlab's conventions).

The heatmap is scaled by ``m``, the ``100 - outlier_perc`` percentile of ``|h|`` (after the ``sign``
rule; the largest magnitude when ``outlier_perc=0`` or when that percentile is 0), and clipped, so
every value lies in [-1, 1] (``sign="all"``) or [0, 1]; like Captum's ``outlier_perc``, this keeps a
few extreme pixels from fading all others. Each pixel then blends the colormap's colour of
its value over the image with weight ``alpha · |h|/m``::

    out = (1 - alpha·|v|) · image + alpha·|v| · cmap(v),   v = h/m

so a pixel with ``h = 0`` keeps the image exactly and the strongest pixel is ``alpha`` colour.
Colormaps: diverging ``"bwr"`` centred at 0 for ``sign="all"`` (red positive, blue negative),
sequential ``"Reds"`` for ``"positive"`` (negative values are dropped) and ``"inferno"`` for
``"absolute"`` (``|h|``).
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Normalize as ColorNorm

from heatlab.errors import HeatlabError

SIGNS = ("all", "positive", "absolute")
CMAPS = {"all": "bwr", "positive": "Reds", "absolute": "inferno"}


def _array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor on any device
        x = x.detach().to("cpu").float().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise HeatlabError(f"{what} must be a NumPy array or a torch tensor, got {type(x).__name__}.") from None
    if not np.isfinite(arr).all():
        raise HeatlabError(f"{what} holds NaN or Inf values; pass finite values.")
    return arr


def _hwc(arr: np.ndarray, what: str) -> np.ndarray:
    """H×W, C×H×W or H×W×C (C of 1 or 3; channels first wins when both fit) -> H×W×C."""
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        return arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3):
        return arr
    raise HeatlabError(f"{what} has shape {arr.shape}; pass H×W, C×H×W or H×W×C with 1 or 3 channels.")


def scaled_heatmap(heatmap: Any, sign: str = "all", outlier_perc: float = 1.0) -> tuple[np.ndarray, float]:
    """(H×W values in [-1, 1] or [0, 1], the scale m they were divided by) for ``heatmap``
    (H×W, C×H×W or H×W×C, channels summed); an all-zero heatmap gives zeros and m = 0."""
    if sign not in SIGNS:
        raise HeatlabError(f"Unknown sign {sign!r}; pass sign='all', 'positive' or 'absolute'.")
    if isinstance(outlier_perc, bool) or not isinstance(outlier_perc, (int, float)) or not 0 <= outlier_perc < 100:
        raise HeatlabError(f"outlier_perc must be a number in [0, 100), got {outlier_perc!r}; pass e.g. outlier_perc=1.")
    h = _hwc(_array(heatmap, "heatmap"), "heatmap").sum(axis=2)
    h = np.abs(h) if sign == "absolute" else np.clip(h, 0, None) if sign == "positive" else h
    magnitude = np.abs(h)
    m = float(np.percentile(magnitude, 100 - outlier_perc, method="lower")) if outlier_perc > 0 and h.size else 0.0
    m = m if m > 0 else float(magnitude.max(initial=0.0))
    return (np.clip(h / m, -1.0, 1.0) if m > 0 else np.zeros_like(h)), m


def overlay(image: Any, heatmap: Any, *, sign: str = "all", alpha: float = 0.6, outlier_perc: float = 1.0,
            cmap: str | None = None, ax: Any = None, colorbar: bool = True) -> np.ndarray:
    """The heatmap blended over the image: float RGB array H×W×3 in [0, 1] (see the module docstring).

    Args:
        image: H×W, C×H×W or H×W×C (C = 1 or 3), NumPy or torch, values in [0, 1] (uint8 images are
            divided by 255; other values are clipped).
        heatmap: H×W, or C×H×W / H×W×C like the image (summed over channels), same H×W.
        sign: "all" (signed, diverging colormap centred at 0), "positive" or "absolute".
        alpha: colour weight of the strongest pixel, in [0, 1].
        outlier_perc: percent of the largest ``|h|`` drawn at full colour (the scale is the
            ``100 - outlier_perc`` percentile; 0 scales by max|h|).
        cmap: a matplotlib colormap name instead of the default for ``sign``.
        ax: a matplotlib Axes to draw the result on (with a colour bar of h/max|h| when
            ``colorbar``); nothing is drawn without it.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise HeatlabError(f"alpha must be a number in [0, 1], got {alpha!r}; pass e.g. alpha=0.6.")
    uint8 = str(getattr(image, "dtype", "")) in ("uint8", "torch.uint8")
    img = _hwc(_array(image, "image"), "image")
    img = np.clip(img / 255.0 if uint8 else img, 0.0, 1.0)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    v, m = scaled_heatmap(heatmap, sign, outlier_perc)
    if v.shape != img.shape[:2]:
        raise HeatlabError(f"The heatmap is {v.shape[0]}×{v.shape[1]} pixels but the image is {img.shape[0]}×"
                           f"{img.shape[1]}; pass a heatmap of the image's size.")
    try:
        colormap = matplotlib.colormaps[cmap or CMAPS[sign]]
    except KeyError:
        raise HeatlabError(f"Unknown colormap {cmap!r}; pass a matplotlib colormap name such as 'bwr'.") from None
    low = -1.0 if sign == "all" else 0.0
    norm = ColorNorm(vmin=low, vmax=1.0)
    colour = colormap(norm(v))[..., :3]
    weight = (alpha * np.abs(v))[..., None]
    out = (1.0 - weight) * img + weight * colour
    if ax is not None:
        ax.imshow(out, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if colorbar:
            mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=colormap)
            bar = ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
            top = f"{100 - outlier_perc:g}th percentile of |h|" if outlier_perc else "max|h|"
            bar.set_label(f"{'|h|' if sign == 'absolute' else 'h'} / s,  s = {top} = {m:.3g}")
    return out
