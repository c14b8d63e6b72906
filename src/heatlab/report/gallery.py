"""Heatmap gallery of a few samples per class (paper 002, Fig. 5 and Fig. 6).

For one branch, each class gets at most two samples: the first correctly and the first wrongly
predicted sample of the evaluated split (in shard, index order). Their attributions are recomputed
for every evaluated method (to the recorded predicted class, with the run's seed, as `heatlab
evaluate` did), and each class is drawn as one PNG: per (sample, method) a row of image, ground
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
SIGNED_CMAP = "bwr"  # blue-white-red, used with a symmetric range [-1, 1]


def branch_label(value: object) -> str:
    """A branch as the tables and folders name it: 0, "0" or "branch-00" -> "branch-00"; "base" stays."""
    from heatlab.run.training import stage_name

    text = str(value)
    if text.isdigit():
        return stage_name(int(text))
    return text


def branch_index(label: str) -> int | str:
    """What :func:`heatlab.run.training.load_branch` takes: "branch-00" -> 0, "base" -> "base"."""
    suffix = label.removeprefix("branch-")
    return int(suffix) if suffix.isdigit() else label


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


def compute_maps(
    model: torch.nn.Module,
    images: torch.Tensor,
    truth: torch.Tensor,
    predictions: torch.Tensor,
    methods: Sequence[str],
    *,
    seed: int = 0,
) -> GalleryMaps:
    """Attribute ``images`` (N×3×H×W) to ``predictions`` (N) with each method and post-process.

    ``truth`` is N×H×W in {0, 0.4, 0.9}. Runs on the model's device; returns CPU tensors.
    """
    from heatlab.explain.attribution import attribute
    from heatlab.explain.postprocess import channel_adjust
    from heatlab.score.five_band import soft_thresholds, stratify, truth_bands

    device = next(model.parameters()).device
    x, target = images.to(device), predictions.to(device)
    thresholds = soft_thresholds("standard")
    first, last = thresholds[0], thresholds[-1]
    maps = GalleryMaps(images.cpu(), truth_bands(truth).cpu(), {}, {}, {}, {},
                       torch.stack([first, last]).cpu(), len(thresholds) - 1)
    for method in methods:
        attr = attribute(model, x, method, target=target, seed=seed).detach()
        h = channel_adjust(attr)
        maps.attributions[method] = attr.cpu()
        maps.adjusted[method] = h.cpu()
        maps.bands_first[method] = stratify(h, first.to(h.device)).cpu()
        maps.bands_last[method] = stratify(h, last.to(h.device)).cpu()
    return maps


def class_name_of(class_names: Sequence[str], label: int) -> str:
    """The name of class ``label``, or the number itself when the names do not cover it."""
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def _fmt_threshold(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:g}" for v in np.round(t.double().numpy(), 3)) + "]"


def _plain(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("#bbbbbb")


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
    h (channel-adjusted), bands at the first and the last threshold. Returns the PNG path.
    """
    methods = list(maps.adjusted)
    t0, t1 = maps.thresholds
    columns = ["image", "truth h₀", "R", "G", "B", "h (adjusted)", f"bands t0\n{_fmt_threshold(t0)}",
               f"bands t{maps.last_index}\n{_fmt_threshold(t1)}"]
    n_rows = max(1, len(methods))
    cell = 1.15
    fig = Figure(figsize=(cell * len(columns) + 1.6, (cell * n_rows + 0.75) * len(samples) + 1.4), dpi=80)
    FigureCanvasAgg(fig)
    subs = fig.subfigures(len(samples), 1, squeeze=False)[:, 0] if samples else []
    for sub, sample, r in zip(subs, samples, rows):
        verdict = "correct" if sample.correct else "wrong"
        sub.suptitle(
            f"{verdict} prediction: true {class_name_of(class_names, sample.label)}, "
            f"predicted {class_name_of(class_names, sample.prediction)} "
            f"(shard {sample.shard}, index {sample.index})",
            fontsize=10, color="#1a7f37" if sample.correct else "#b42318", y=0.995,
        )
        grid = sub.add_gridspec(n_rows, len(columns), left=0.13, right=0.99, top=0.9, bottom=0.02,
                                wspace=0.06, hspace=0.08)
        image = maps.images[r].permute(1, 2, 0).clamp(0, 1).numpy()
        for i, method in enumerate(methods):
            attr = maps.attributions[method][r].float()
            scale = attr.abs().max().clamp_min(1e-12)
            panels = [
                ("rgb", image), ("bands", maps.truth_bands[r].numpy()),
                *[("signed", (attr[c] / scale).numpy()) for c in range(3)],
                ("signed", maps.adjusted[method][r].float().numpy()),
                ("bands", maps.bands_first[method][r].numpy()), ("bands", maps.bands_last[method][r].numpy()),
            ]
            for j, (kind, data) in enumerate(panels):
                ax = sub.add_subplot(grid[i, j])
                if kind == "rgb":
                    ax.imshow(data, interpolation="nearest")
                elif kind == "bands":
                    ax.imshow(data, cmap=BAND_CMAP, norm=BAND_NORM, interpolation="nearest")
                else:
                    ax.imshow(data, cmap=SIGNED_CMAP, vmin=-1, vmax=1, interpolation="nearest")
                _plain(ax)
                if i == 0:
                    ax.set_title(columns[j], fontsize=8, pad=3)
                if j == 0:
                    ax.set_ylabel(method, fontsize=8, rotation=0, ha="right", va="center", labelpad=4)
    handles = [Patch(facecolor=c, edgecolor="#999999", label=f"band {b}") for b, c in zip(range(-2, 3), BAND_COLORS)]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False,
               title="bands (truth: 0 irrelevant, 1 localisation, 2 feature); R, G, B and h: blue −1 … white 0 … red +1",
               title_fontsize=7)
    where = f" — {branch}" if branch else ""
    fig.suptitle(f"Class {class_name}{where}", fontsize=12, y=1.0, va="bottom")
    out = Path(out_png)
    ensure_dir(out.parent)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None}, bbox_inches="tight")
    return out


def load_samples(data_root: str | os.PathLike, split: str, samples: Sequence[GallerySample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N×3×H×W and truth N×H×W of ``samples`` (in their order), reading each shard once."""
    from heatlab.data.shards import open_split

    data = open_split(data_root, split)
    images: list[torch.Tensor | None] = [None] * len(samples)
    truth: list[torch.Tensor | None] = [None] * len(samples)
    fix = "run `heatlab evaluate RUN` again on this dataset"
    for shard in sorted({s.shard for s in samples}):
        if not 0 <= shard < data.num_shards:
            raise HeatlabError(f"The tables name shard {shard} of split '{split}', which '{data_root}' lacks; {fix}.")
        tensors = data.load_shard(shard)
        for i, s in enumerate(samples):
            if s.shard != shard:
                continue
            if not 0 <= s.index < len(tensors["labels"]) or int(tensors["labels"][s.index]) != s.label:
                raise HeatlabError(f"Sample {s.index} of shard {shard} in '{data_root}' does not match the tables; {fix}.")
            images[i], truth[i] = tensors["images"][s.index], tensors["truth"][s.index]
    return torch.stack(images), torch.stack(truth)


def build_gallery(
    run_dir: str | os.PathLike,
    five_band: pd.DataFrame,
    *,
    branch: str,
    methods: Sequence[str],
    data_root: str | os.PathLike,
    split: str,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[tuple[int, Path, list[GallerySample]]]:
    """Write one gallery PNG per class into ``out_dir``; returns (class, path, samples) per class."""
    from heatlab.run.training import load_branch

    picked = pick_samples(five_band, branch)
    flat = [s for samples in picked.values() for s in samples]
    images, truth = load_samples(data_root, split, flat)
    model = load_branch(run_dir, branch_index(branch))
    model.eval()
    preds = torch.tensor([s.prediction for s in flat], dtype=torch.int64)
    maps = compute_maps(model, images, truth, preds, methods, seed=seed)
    written, start = [], 0
    for k, (label, samples) in enumerate(picked.items()):
        name = class_name_of(class_names, label)
        rows = list(range(start, start + len(samples)))
        start += len(samples)
        path = gallery_figure(f"{label} {name}", samples, rows, maps, class_names, Path(out_dir) / f"gallery-class-{label:02d}.png",
                              branch=branch)
        written.append((label, path, samples))
        report(progress, "report/gallery", k + 1, len(picked))
    return written
