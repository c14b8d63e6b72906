"""Preview grid of a cell dataset, like Fig. 2 of paper 002: images on top, ground truth below.

This is the figure of ``heatlab data preview DATA_DIR`` (a data-stage tool that may draw a missing
(class, background) pair). The report page does not use it: its "Dataset preview" section draws the
inputs evaluate stored (:func:`heatlab.report.gallery.inputs_figure`) and generates nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from heatlab.data import cells
from heatlab.data.shards import CellSplit, split_names
from heatlab.seeds import derive_seed
from heatlab.report.figures import bare, literal
from heatlab.errors import HeatlabError
from heatlab.files import atomic_path, ensure_dir

# White = irrelevant (0), light red = localisation (0.4), dark red = discriminative (0.9).
TRUTH_COLORS = ("#ffffff", "#f4a582", "#b2182b")
TRUTH_LABELS = ("0 irrelevant", "0.4 localisation", "0.9 discriminative")


def _pick_examples(splits: list[CellSplit]) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """First (image 3×S×S, truth S×S) of each (class, background), scanning shard by shard."""
    n_cls, n_bg = len(splits[0].class_names), len(splits[0].background_names)
    found: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for ds in splits:
        for k in range(ds.num_shards):
            shard = ds.load_shard(k)
            for j, (c, b) in enumerate(zip(shard["labels"].tolist(), shard["backgrounds"].tolist())):
                if (c, b) not in found:
                    found[(c, b)] = (shard["images"][j].clone(), shard["truth"][j].clone())
            if len(found) == n_cls * n_bg:
                return found
    return found


def preview_figure(root: str | os.PathLike, out_png: str | os.PathLike, *, split: str | None = None) -> Path:
    """Write a PNG grid: 10 class columns × (3 background rows of images + 3 rows of their truth).

    Samples come from ``split`` (default: every split in the manifest, in order); a (class,
    background) pair the data lacks is generated with the manifest's settings and titled
    "(generated)". Returns the PNG path.
    """
    names = [split] if split is not None else split_names(root)
    if not names:
        raise HeatlabError(f"The dataset in '{root}' has no shards; write it with at least one shard.")
    splits = [CellSplit(root, s) for s in names]
    out = Path(out_png)
    if out.is_dir():
        raise HeatlabError(f"'{out}' is a folder; pass a file name, e.g. out_png='{out / 'preview.png'}'.")
    ensure_dir(out.parent)
    ds = splits[0]
    classes, backgrounds = ds.class_names, ds.background_names
    found = _pick_examples(splits)
    generated = set()
    for c in range(len(classes)):
        for b in range(len(backgrounds)):
            if (c, b) not in found:
                seed = derive_seed(ds.settings["seed"], "preview", c, b)
                batch = cells.generate(1, size=ds.size, seed=seed, classes=[c], backgrounds=[b])
                found[(c, b)] = (batch.images[0], batch.truth[0])
                generated.add((c, b))

    n_cls, n_bg = len(classes), len(backgrounds)
    fig = Figure(figsize=(1.25 * n_cls + 1.2, 1.3 * 2 * n_bg + 1.0), dpi=110)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 * n_bg + 1, n_cls, height_ratios=[1] * n_bg + [0.12] + [1] * n_bg,
                            left=0.09, right=0.995, top=0.90, bottom=0.07, wspace=0.06, hspace=0.22)
    cmap = ListedColormap(TRUTH_COLORS)
    norm = BoundaryNorm([-0.1, 0.2, 0.65, 1.0], cmap.N)
    for c in range(n_cls):
        for b in range(n_bg):
            image, truth = found[(c, b)]
            ax_img = fig.add_subplot(grid[b, c])
            ax_img.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax_gt = fig.add_subplot(grid[n_bg + 1 + b, c])
            ax_gt.imshow(truth.numpy(), cmap=cmap, norm=norm, interpolation="nearest")
            bare((ax_img, ax_gt), edge="#999999")
            if (c, b) in generated:
                ax_img.set_title("(generated)", fontsize=7, color="#555555", pad=2)
            if b == 0:  # column header sits above the room kept for a "(generated)" title
                ax_img.annotate(f"{c} {literal(classes[c])}", xy=(0.5, 1), xycoords="axes fraction", xytext=(0, 12),
                                textcoords="offset points", ha="center", va="bottom", fontsize=9)
            if c == 0:
                ax_img.set_ylabel(f"bg {b}\n{backgrounds[b]}", fontsize=8)
                ax_gt.set_ylabel(f"truth\nbg {b}", fontsize=8)
    handles = [Patch(facecolor=col, edgecolor="#999999", label=lab) for col, lab in zip(TRUTH_COLORS, TRUTH_LABELS)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    source = split if split is not None else "+".join(s.split for s in splits)
    fig.suptitle(f"Synthetic cells ({source}, {ds.size}px): images by background, ground truth below", fontsize=10)

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return out

