"""Heatmap gallery of a few samples per class (paper 002, Fig. 5 and Fig. 6), and a grid of stored inputs.

For one branch, each class gets at most two samples: the first correctly and the first wrongly
predicted sample of the evaluated split (in shard, index order). Everything is read from the
heatmaps ``heatlab evaluate`` stored (:mod:`heatlab.report.heatmaps`); nothing is attributed here.
Each class is drawn as one PNG: per (sample, method) a row of panels

- image, then the ground truth when the data has one (levels 0/0.4/0.9 as bands, or a binary mask),
- the attribution's channels (divided by the sample's largest magnitude over all channels),
- h: the channel-adjusted map (sum over channels, divided by its largest magnitude; the paper's
  channel adjustment of the already normalised attribution),
- for level truth only: h's five bands at the first and the last standard soft threshold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from heatlab.explain.postprocess import channel_adjust
from heatlab.errors import HeatlabError
from heatlab.progress import Progress, report
from heatlab.report.figures import bare, literal, save_figure
from heatlab.report.heatmaps import StoredHeatmaps, load_heatmaps
from heatlab.report.page import class_name_of

# White = irrelevant (0), light red = localisation (0.4), dark red = discriminative (0.9).
TRUTH_COLORS = ("#ffffff", "#f4a582", "#b2182b")
# Bands -2..2: dark blue, light blue, then the truth colours (white, light red, dark red), so a
# band map reads like the ground truth it is compared with.
BAND_COLORS = ("#2166ac", "#92c5de", *TRUTH_COLORS)
BAND_CMAP = ListedColormap(BAND_COLORS)
BAND_NORM = BoundaryNorm([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], BAND_CMAP.N)
SIGNED_CMAP = colormaps["bwr"]  # blue-white-red over the symmetric range [-1, 1]
FRAME = (0.75, 0.75, 0.75)  # grey frame around each panel
GUTTER = 6  # pixels between panels
PANEL_PX = 96  # panels are enlarged by a whole factor to at least this many pixels
DPI = 100


@dataclass(frozen=True)
class GallerySample:
    """One sample of the evaluated split, identified as in the tables."""

    shard: int
    index: int
    label: int
    prediction: int

    @property
    def correct(self) -> bool:
        return self.label == self.prediction


@dataclass
class GalleryMaps:
    """Everything drawn for N samples and M methods (CPU tensors).

    images N×C×H×W; truth N×H×W (None without ground truth) of kind ``truth_kind`` ("levels" or
    "mask"); attributions[m] N×C×H×W in [-1, 1]; adjusted[m] N×H×W in [-1, 1]; for level truth
    bands_first[m], bands_last[m] N×H×W in {-2..2} and thresholds 2×4 (first and last standard
    soft threshold), last_index = T-1.
    """

    images: torch.Tensor
    truth: torch.Tensor | None
    truth_kind: str | None
    attributions: dict[str, torch.Tensor]
    adjusted: dict[str, torch.Tensor]
    bands_first: dict[str, torch.Tensor]
    bands_last: dict[str, torch.Tensor]
    thresholds: torch.Tensor | None = None
    last_index: int = 0

    @property
    def banded(self) -> bool:
        return self.truth_kind == "levels" and self.thresholds is not None


def maps_from_store(attributions: dict[str, torch.Tensor], images: torch.Tensor, truth: torch.Tensor | None,
                    truth_kind: str | None = "levels") -> GalleryMaps:
    """Post-process stored attributions (``attributions[m]`` N×C×H×W) for drawing; no model is run."""
    maps = GalleryMaps(images.float(), None if truth is None else truth.float(), truth_kind if truth is not None else None,
                       {}, {}, {}, {})
    if maps.truth_kind == "levels":
        from heatlab.score.five_band import soft_thresholds

        thresholds = soft_thresholds("standard")
        maps.thresholds, maps.last_index = torch.stack([thresholds[0], thresholds[-1]]), len(thresholds) - 1
    for method, attr in attributions.items():
        maps.attributions[method] = attr.float()
        maps.adjusted[method] = channel_adjust(attr.float())  # the pure post-processing evaluate used
        if maps.banded:
            from heatlab.score.five_band import stratify

            maps.bands_first[method] = stratify(maps.adjusted[method], maps.thresholds[0])
            maps.bands_last[method] = stratify(maps.adjusted[method], maps.thresholds[1])
    return maps


def _fmt_threshold(t: torch.Tensor) -> str:
    """``±a, ±b`` for a symmetric threshold row [-b, -a, a, b], else the four values."""
    v = [round(float(x), 3) for x in t]
    if v[0] == -v[3] and v[1] == -v[2]:
        return f"±{v[2]:g}, ±{v[3]:g}"
    return ", ".join(f"{x:g}" for x in v)


def _rgb(kind: str, data: np.ndarray) -> np.ndarray:
    """H×W(×C) panel data -> H×W×3 float colours in [0, 1]."""
    if kind == "rgb":
        data = np.clip(data, 0, 1)
        return np.repeat(data[..., :1], 3, axis=2) if data.shape[2] != 3 else data
    if kind == "bands":
        return BAND_CMAP(BAND_NORM(data.astype(np.float64)))[..., :3]
    if kind == "truth":  # levels 0 / 0.4 / 0.9, or a mask drawn as 0.9
        levels = np.digitize(data, [0.2, 0.65])
        return np.asarray([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in TRUTH_COLORS])[levels]
    return SIGNED_CMAP((np.clip(data, -1, 1) + 1) / 2)[..., :3]


def channel_names(channels: int) -> list[str]:
    return ["R", "G", "B"] if channels == 3 else ["attribution"] if channels == 1 else [f"c{k}" for k in range(channels)]


def columns_of(maps: GalleryMaps) -> list[str]:
    """The column titles of a gallery row."""
    cols = ["image"]
    if maps.truth is not None:
        cols.append("truth h₀" if maps.truth_kind == "levels" else "truth mask")
    cols += [*channel_names(maps.images.shape[1]), "h"]
    if maps.banded:
        t0, t1 = maps.thresholds
        cols += [f"bands t0\n{_fmt_threshold(t0)}", f"bands t{maps.last_index}\n{_fmt_threshold(t1)}"]
    return cols


def _panels(maps: GalleryMaps, method: str, r: int) -> list[np.ndarray]:
    """H×W×3 colour panels of one row, in the order of :func:`columns_of`."""
    from heatlab.score.five_band import truth_bands

    attr = maps.attributions[method][r].float()
    scale = attr.abs().max().clamp_min(1e-12)  # one scale for all channels, as in h/max|h|
    out = [_rgb("rgb", maps.images[r].permute(1, 2, 0).numpy())]
    if maps.truth is not None:
        if maps.truth_kind == "levels":
            out.append(_rgb("bands", truth_bands(maps.truth[r : r + 1])[0].numpy()))
        else:
            out.append(_rgb("truth", (maps.truth[r] > 0.5).float().numpy() * 0.9))
    out += [_rgb("signed", (attr[c] / scale).numpy()) for c in range(attr.shape[0])]
    out.append(_rgb("signed", maps.adjusted[method][r].float().numpy()))
    if maps.banded:
        out += [_rgb("bands", maps.bands_first[method][r].numpy()), _rgb("bands", maps.bands_last[method][r].numpy())]
    return out


def _mosaic(rows: list[list[np.ndarray]], zoom: int) -> np.ndarray:
    """One H×W×3 image of panels (each enlarged ``zoom``×, framed in grey, GUTTER px apart)."""
    h, w = rows[0][0].shape[:2]
    ph, pw = h * zoom, w * zoom
    out = np.ones((len(rows) * (ph + GUTTER) - GUTTER + 2, len(rows[0]) * (pw + GUTTER) - GUTTER + 2, 3))
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            y, x = i * (ph + GUTTER) + 1, j * (pw + GUTTER) + 1
            out[y - 1 : y + ph + 1, x - 1 : x + pw + 1] = FRAME
            out[y : y + ph, x : x + pw] = panel.repeat(zoom, 0).repeat(zoom, 1)
    return out


def gallery_figure(
    class_name: str,
    samples: Sequence[GallerySample],
    rows: Sequence[int],
    maps: GalleryMaps,
    class_names: Sequence[str],
    out_png: str | os.PathLike,
    *,
    branch: str = "",
) -> Path:
    """Draw one class: for each sample (``rows[i]`` is its row in ``maps``) one block of method rows.

    Each block is one image of all its panels drawn pixel for pixel (fast and sharp). Returns the PNG path.
    """
    methods = list(maps.adjusted)
    columns = columns_of(maps)
    size = max(maps.images.shape[-2:])
    zoom = max(1, -(-PANEL_PX // size))  # smallest whole enlargement reaching PANEL_PX
    blocks = [_mosaic([_panels(maps, m, r) for m in methods], zoom) for r in rows] if methods else []
    # Layout in pixels at DPI, so every mosaic is drawn 1:1.
    left, right, title, head, gap, legend = 150, 12, 44, 62, 18, 64
    width = left + max((b.shape[1] for b in blocks), default=400) + right
    height = title + sum(head + b.shape[0] + gap for b in blocks) + legend
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    step = (blocks[0].shape[1] - 2 + GUTTER) / len(columns) if blocks else 0

    def text(x: float, y: float, label: str, **kw) -> None:  # x, y in pixels from the top left
        fig.text(x / width, 1 - y / height, label, **kw)

    y = title
    for sample, block in zip(samples, blocks):
        y += head
        bh = block.shape[0]
        # figimage draws the pixels unresampled; its offsets count from the bottom left.
        fig.figimage((block * 255).round().astype(np.uint8), xo=left, yo=height - y - bh, origin="upper")
        for j, name in enumerate(columns):
            text(left + 1 + (j + 0.5) * step - GUTTER / 2, y - 4, name, ha="center", va="bottom", fontsize=8)
        for i, method in enumerate(methods):
            text(left - 8, y + 1 + (i + 0.5) * (bh - 2 + GUTTER) / len(methods) - GUTTER / 2, method,
                 ha="right", va="center", fontsize=9)
        verdict = "correct" if sample.correct else "wrong"
        text(left, y - 36, f"{verdict} prediction: true {literal(class_name_of(class_names, sample.label))}, predicted "
                           f"{literal(class_name_of(class_names, sample.prediction))} (shard {sample.shard}, index {sample.index})",
             ha="left", va="bottom", fontsize=10, fontweight="bold", color="#1a7f37" if sample.correct else "#b42318")
        y += bh + gap
    if maps.banded:
        handles = [Patch(facecolor=c, edgecolor="#999999", label=f"band {b}") for b, c in zip(range(-2, 3), BAND_COLORS)]
        legend_title = "bands (truth: 0 irrelevant, 1 localisation, 2 feature); attribution and h: blue −1 … white 0 … red +1"
    else:
        handles = [Patch(facecolor=SIGNED_CMAP(v), edgecolor="#999999", label=f"{v * 2 - 1:+g}") for v in (0.0, 0.5, 1.0)]
        legend_title = "attribution and h: blue −1 … white 0 … red +1" + ("; truth mask dark red" if maps.truth is not None else "")
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               title=legend_title, title_fontsize=8)
    where = f" — {branch}" if branch else ""
    fig.text(0.5, 1 - 10 / height, f"Class {class_name}{where}", ha="center", va="top", fontsize=12)
    return save_figure(fig, out_png)


def load_stored(stored: dict[str, StoredHeatmaps], samples: Sequence[GallerySample]
                ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor], str | None]:
    """Inputs N×C×H×W, truth N×H×W (or None), per-method attributions and the truth kind of ``samples``."""
    keys = [(s.shard, s.index) for s in samples]
    first = next(iter(stored.values()))
    rows = first.rows_of(keys)
    truth = None if first.truth is None else first.truth[rows]
    attributions = {method: files.attributions[files.rows_of(keys)] for method, files in stored.items()}
    return first.inputs[rows], truth, attributions, first.truth_kind


def pick_from_store(stored: StoredHeatmaps) -> dict[int, list[GallerySample]]:
    """Per true class (ascending) the first correct, then the first wrong sample of a stored file."""
    return {c: [GallerySample(int(stored.shard[j]), int(stored.index[j]), int(stored.labels[j]),
                              int(stored.predictions[j])) for j in rows]
            for c, rows in stored.first_per_class().items()}


def build_gallery(
    run_dir: str | os.PathLike,
    *,
    branch: str,
    methods: Sequence[str],
    split: str,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    progress: Progress | None = None,
) -> list[tuple[int, Path, list[GallerySample]]]:
    """Write one gallery PNG per class into ``out_dir`` from the stored heatmaps; returns (class, path, samples)."""
    if not methods:
        raise HeatlabError("No method has stored heatmaps; run `heatlab evaluate` first.")
    stored = {method: load_heatmaps(run_dir, split, branch, method) for method in methods}
    first = stored[methods[0]]
    if first.input_kind != "image" or first.inputs.dim() != 4:
        raise HeatlabError("The stored heatmaps are not images; the gallery draws image heatmaps only.")
    picked = pick_from_store(first)
    report(progress, "report/gallery", 0, len(picked))
    flat = [s for samples in picked.values() for s in samples]
    images, truth, attributions, kind = load_stored(stored, flat)
    maps = maps_from_store(attributions, images, truth, kind)
    written, start = [], 0
    for k, (label, samples) in enumerate(picked.items()):
        name = class_name_of(class_names, label)
        rows = list(range(start, start + len(samples)))
        start += len(samples)
        out_png = Path(out_dir) / f"gallery-class-{label:02d}.png"
        path = gallery_figure(f"{label} {literal(name)}", samples, rows, maps, class_names, out_png, branch=branch)
        written.append((label, path, samples))
        report(progress, "report/gallery", k + 1, len(picked))
    return written


def inputs_figure(stored: StoredHeatmaps, class_names: Sequence[str], out_png: str | os.PathLike) -> Path:
    """A grid of stored inputs: one column per class (its first sample of the split), the truth below."""
    picks = {c: rows[0] for c, rows in stored.first_per_class().items()}
    with_truth = stored.truth is not None
    n = max(1, len(picks))
    fig = Figure(figsize=(1.3 * n + 0.6, 1.5 * (2 if with_truth else 1) + 0.7), dpi=110)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if with_truth else 1, n, left=0.02, right=0.98, top=0.8, bottom=0.05 if not with_truth else 0.12,
                            wspace=0.08, hspace=0.1)
    for k, (label, j) in enumerate(picks.items()):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(_rgb("rgb", stored.inputs[j].permute(1, 2, 0).numpy()), interpolation="nearest")
        ax.set_title(f"{label} {literal(class_name_of(class_names, label))}", fontsize=8)
        axes = [ax]
        if with_truth:
            truth = stored.truth[j].numpy()
            if stored.truth_kind != "levels":
                truth = (truth > 0.5) * 0.9
            axt = fig.add_subplot(grid[1, k])
            axt.imshow(_rgb("truth", truth), interpolation="nearest")
            axes.append(axt)
        bare(axes, edge="#999999")
    if with_truth:
        labels = ("0 irrelevant", "0.4 localisation", "0.9 discriminative") if stored.truth_kind == "levels" else \
            ("outside the mask", "", "inside the mask")
        handles = [Patch(facecolor=c, edgecolor="#999999", label=t) for c, t in zip(TRUTH_COLORS, labels) if t]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle("First sample of each class in the evaluated split" + (", ground truth below" if with_truth else ""),
                 fontsize=9)
    return save_figure(fig, out_png)
