"""Heatmap gallery of a few samples per class (paper 002, Fig. 5 and Fig. 6).

For one branch, each class gets at most two samples: the first correctly and the first wrongly
predicted sample of the evaluated split (in shard, index order). Their attributions are read from
the heatmaps ``heatlab evaluate`` stored (``<run>/heatmaps``; nothing is attributed here), and each
class is drawn as one PNG: per (sample, method) a row of image, ground
truth, the R, G, B attribution channels, the channel-adjusted map h and its five bands at the first
and the last standard soft threshold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, ensure_dir
from heatlab.progress import Progress, report
from heatlab.report.preview import TRUTH_COLORS

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


def branch_label(value: object) -> str:
    """A branch as the tables and folders name it: 0, "0" or "branch-00" -> "branch-00"; "base" stays."""
    from heatlab.run.rundir import branch_name

    text = str(value)
    if text.isdigit():
        return branch_name(int(text))
    return text


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

    images N×3×H×W in [0,1]; truth_bands N×H×W in {0,1,2}; attributions[m] N×3×H×W;
    adjusted[m] N×H×W in [-1,1]; bands_first[m], bands_last[m] N×H×W in {-2..2};
    thresholds 2×4 (the first and the last standard soft threshold); last_index = T-1.
    """

    images: torch.Tensor
    truth_bands: torch.Tensor
    attributions: dict[str, torch.Tensor]
    adjusted: dict[str, torch.Tensor]
    bands_first: dict[str, torch.Tensor]
    bands_last: dict[str, torch.Tensor]
    thresholds: torch.Tensor
    last_index: int


def pick_samples(five_band: pd.DataFrame, branch: str, *, per_class: int = 1) -> dict[int, list[GallerySample]]:
    """Per true class (ascending): the first ``per_class`` correct, then the first ``per_class`` wrong samples.

    Samples are taken from the ``branch`` rows of ``five_band`` in (shard, index) order; which
    method or variant a row belongs to does not matter (label and prediction are per sample).
    """
    rows = five_band[five_band["branch"] == branch]
    if rows.empty:
        raise HeatlabError(f"Branch '{branch}' has no rows in five_band.parquet; choose an evaluated branch.")
    rows = rows.drop_duplicates(["shard", "index"]).sort_values(["shard", "index"], kind="stable")
    picked: dict[int, list[GallerySample]] = {}
    for label, group in rows.groupby("label", sort=True):
        chosen = []
        for correct in (True, False):
            sel = group[group["label"].eq(group["prediction"]) == correct].head(per_class)
            chosen += [GallerySample(int(r.shard), int(r.index), int(r.label), int(r.prediction)) for r in sel.itertuples()]
        picked[int(label)] = chosen
    return picked


def maps_from_store(attributions: dict[str, torch.Tensor], images: torch.Tensor, truth: torch.Tensor) -> GalleryMaps:
    """Post-process stored attributions (``attributions[m]`` N×3×H×W) for drawing; no model is run.

    ``truth`` is N×H×W in {0, 0.4, 0.9}; the channel adjustment and the bands are the pure score
    functions ``heatlab evaluate`` used.
    """
    from heatlab.explain.postprocess import channel_adjust
    from heatlab.score.five_band import soft_thresholds, stratify, truth_bands

    thresholds = soft_thresholds("standard")
    first, last = thresholds[0], thresholds[-1]
    maps = GalleryMaps(images.float(), truth_bands(truth.float()), {}, {}, {}, {},
                       torch.stack([first, last]), len(thresholds) - 1)
    for method, attr in attributions.items():
        h = channel_adjust(attr.float())
        maps.attributions[method] = attr.float()
        maps.adjusted[method] = h
        maps.bands_first[method] = stratify(h, first)
        maps.bands_last[method] = stratify(h, last)
    return maps


def class_name_of(class_names: Sequence[str], label: int) -> str:
    """The name of class ``label``, or the number itself when the names do not cover it."""
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def _fmt_threshold(t: torch.Tensor) -> str:
    """``±a, ±b`` for a symmetric threshold row [-b, -a, a, b], else the four values."""
    v = [round(float(x), 3) for x in t]
    if v[0] == -v[3] and v[1] == -v[2]:
        return f"±{v[2]:g}, ±{v[3]:g}"
    return ", ".join(f"{x:g}" for x in v)


def _rgb(kind: str, data: np.ndarray) -> np.ndarray:
    """H×W(×3) panel data -> H×W×3 float colours in [0, 1]."""
    if kind == "rgb":
        return np.clip(data, 0, 1)
    if kind == "bands":
        return BAND_CMAP(BAND_NORM(data.astype(np.float64)))[..., :3]
    return SIGNED_CMAP((np.clip(data, -1, 1) + 1) / 2)[..., :3]


def _panels(maps: GalleryMaps, method: str, r: int) -> list[np.ndarray]:
    """H×W×3 colour panels of one row: image, truth, R, G, B, h, bands at t0 and t_last."""
    attr = maps.attributions[method][r].float()
    scale = attr.abs().max().clamp_min(1e-12)  # one scale for the three channels, as in h/max|h|
    return [
        _rgb("rgb", maps.images[r].permute(1, 2, 0).numpy()),
        _rgb("bands", maps.truth_bands[r].numpy()),
        *[_rgb("signed", (attr[c] / scale).numpy()) for c in range(attr.shape[0])],
        _rgb("signed", maps.adjusted[method][r].float().numpy()),
        _rgb("bands", maps.bands_first[method][r].numpy()),
        _rgb("bands", maps.bands_last[method][r].numpy()),
    ]


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

    Columns: image, truth, R, G, B (each channel / max|attribution| over the three channels),
    h (channel-adjusted), bands at the first and the last threshold. Each block is one image of
    all its panels drawn pixel for pixel (fast and sharp). Returns the PNG path.
    """
    methods = list(maps.adjusted)
    t0, t1 = maps.thresholds
    columns = ["image", "truth h₀", "R", "G", "B", "h", f"bands t0\n{_fmt_threshold(t0)}",
               f"bands t{maps.last_index}\n{_fmt_threshold(t1)}"]
    size = maps.images.shape[-1]
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
        text(left, y - 36, f"{verdict} prediction: true {class_name_of(class_names, sample.label)}, predicted "
                           f"{class_name_of(class_names, sample.prediction)} (shard {sample.shard}, index {sample.index})",
             ha="left", va="bottom", fontsize=10, fontweight="bold", color="#1a7f37" if sample.correct else "#b42318")
        y += bh + gap
    handles = [Patch(facecolor=c, edgecolor="#999999", label=f"band {b}") for b, c in zip(range(-2, 3), BAND_COLORS)]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False,
               title="bands (truth: 0 irrelevant, 1 localisation, 2 feature); R, G, B and h: blue −1 … white 0 … red +1",
               title_fontsize=8)
    where = f" — {branch}" if branch else ""
    fig.text(0.5, 1 - 10 / height, f"Class {class_name}{where}", ha="center", va="top", fontsize=12)
    out = Path(out_png)
    ensure_dir(out.parent)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return out


def load_stored(run_dir: str | os.PathLike, split: str, branch: str, methods: Sequence[str],
                samples: Sequence[GallerySample]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Images N×C×H×W, truth N×H×W and per-method attributions of ``samples`` from ``<run>/heatmaps``."""
    from safetensors.torch import load_file

    from heatlab.run.rundir import RunDir

    run, fix = RunDir(run_dir), f"run `heatlab evaluate {run_dir}` again"
    images = truth = None
    attributions = {}
    for method in methods:
        path = run.heatmaps(split, branch, method)
        if not path.is_file():
            raise HeatlabError(f"No stored heatmaps for {method} of {branch} ('{path}' is missing); {fix}.")
        stored = load_file(str(path))
        where = {(int(k), int(i)): j for j, (k, i) in enumerate(zip(stored["shard"], stored["index"]))}
        missing = [s for s in samples if (s.shard, s.index) not in where]
        if missing or "truth" not in stored:
            raise HeatlabError(f"'{path}' lacks the gallery samples or their ground truth; {fix}.")
        rows = torch.tensor([where[s.shard, s.index] for s in samples], dtype=torch.int64)
        attributions[method] = stored["attributions"][rows].float()
        if images is None:
            images, truth = stored["inputs"][rows].float(), stored["truth"][rows].float()
    return images, truth, attributions


def build_gallery(
    run_dir: str | os.PathLike,
    five_band: pd.DataFrame,
    *,
    branch: str,
    methods: Sequence[str],
    split: str,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    progress: Progress | None = None,
) -> list[tuple[int, Path, list[GallerySample]]]:
    """Write one gallery PNG per class into ``out_dir`` from the stored heatmaps; returns (class, path, samples)."""
    picked = pick_samples(five_band, branch)
    report(progress, "report/gallery", 0, len(picked))
    flat = [s for samples in picked.values() for s in samples]
    images, truth, attributions = load_stored(run_dir, split, branch, methods, flat)
    maps = maps_from_store(attributions, images, truth)
    written, start = [], 0
    for k, (label, samples) in enumerate(picked.items()):
        name = class_name_of(class_names, label)
        rows = list(range(start, start + len(samples)))
        start += len(samples)
        out_png = Path(out_dir) / f"gallery-class-{label:02d}.png"
        path = gallery_figure(f"{label} {name}", samples, rows, maps, class_names, out_png, branch=branch)
        written.append((label, path, samples))
        report(progress, "report/gallery", k + 1, len(picked))
    return written
