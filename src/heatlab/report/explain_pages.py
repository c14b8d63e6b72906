"""What ``heatlab explain`` shows: an overlay PNG per image and method, and ``index.html``.

Drawn only from ``<out>/attributions.safetensors`` (:func:`heatlab.run.explain.load_explanations`):
``<out>/inputs/<id>.png`` (the image as the model saw it), ``<out>/overlays/<id>__<method>.png`` (the heatmap over the image, with its colour bar; a
diverging map centred at 0 for signed methods, a sequential one for ``|h|``) and ``<out>/index.html``,
a grid with a row per image (its source, target and predicted class) and a column per method.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from heatlab.files import atomic_path, ensure_dir, write_text
from heatlab.progress import Progress, report
from heatlab.report.figures import literal, new_figure, save_figure
from heatlab.report.overlay import overlay
from heatlab.report.page import class_name_of
from heatlab.report.templates import render
from heatlab.run.explain import load_explanations

OVERLAYS = "overlays"
INPUTS = "inputs"
PAGE = "index.html"


def overlay_name(sample_id: str, method: str) -> str:
    return f"{sample_id}__{method}.png"


def _class(names: list[str] | None, k: int) -> str:
    return class_name_of(names, k) if names else str(k)


def explanation_pages(out: str | os.PathLike, *, progress: Progress | None = None) -> Path:
    """Write the overlays and ``out/index.html`` for the stored explanations; returns the page's path."""
    out = Path(out)
    record, t = load_explanations(out)
    ids, methods, names = record["ids"], record["methods"], record.get("class_names")
    total = len(ids) * len(methods)
    ensure_dir(out / INPUTS)
    for r, sample_id in enumerate(ids):
        _save_input(t["inputs"][r], out / INPUTS / f"{sample_id}.png")
        for c, method in enumerate(methods):
            fig = new_figure(4.2, 3.4)
            ax = fig.add_subplot(1, 1, 1)
            overlay(t["inputs"][r], t[method][r], sign=record["signs"][method], ax=ax)
            ax.set_title(literal(f"{method}: target {_class(names, int(t['targets'][r]))}"), fontsize=9)
            fig.tight_layout()
            save_figure(fig, out / OVERLAYS / overlay_name(sample_id, method))
            report(progress, "explain/overlays", r * len(methods) + c + 1, total)
    write_text(out / PAGE, str(_page(record, t)))
    return out / PAGE


def _save_input(image, path: Path) -> None:
    """The image as the model saw it (C×H×W in [0, 1]) as an 8-bit PNG."""
    arr = np.rint(image.clamp(0, 1).numpy() * 255).astype(np.uint8).transpose(1, 2, 0)
    with atomic_path(path) as tmp:
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(tmp, format="PNG")


def _page(record: dict, t: dict):
    names = record.get("class_names")
    rows = []
    for r, (sample_id, source) in enumerate(zip(record["ids"], record["sources"])):
        rows.append({
            "id": sample_id, "source": source, "predicted": _class(names, int(t["predictions"][r])),
            "target": _class(names, int(t["targets"][r])),
            "label": _class(names, int(t["labels"][r])) if "labels" in t else None,
            "overlays": [(m, f"{OVERLAYS}/{overlay_name(sample_id, m)}") for m in record["methods"]],
        })
    model = record.get("model") or {}
    where = f"run {record['run']}, {record['branch']}" if record.get("run") else f"model {model.get('name', '?')}"
    return render("explain.html", record=record, rows=rows, where=where, inputs=INPUTS)
