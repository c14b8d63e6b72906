"""GAX in the report: CO against iteration (paper Fig. 4) and the slider viewer (paper Fig. 5A).

- :func:`gax_figure`: one curve per optimised image, CO against the optimisation step, with the
  target as a dashed line.
- :func:`build_gax_viewer`: ``<run>/report/gax.html``, one block per image with a slider over the
  stored steps. A canvas shows the image, the R, G, B channels of h and their change since the
  previous stored step, each on a symmetric blue-white-red scale fixed per image (one scale for h,
  another for the change), beside the step number, the CO at that step and a small CO curve.
  The page is static and loads nothing: the heatmaps are quantised to 8 bits per image
  (q = round(127·v/scale) + 128, so 0 stays exactly white), each step stored as its code
  difference to the previous one (mod 256, which deflates ~4× better than the codes themselves),
  deflated and base64-encoded in a JSON block; a short inline script inflates them
  (``DecompressionStream``), sums the differences back and draws them. The change Δh is drawn from
  the same codes (resolution scale/127), on the scale of the largest change of that image.
- Table data (N×F inputs) has no picture to slide over: :func:`build_gax_viewer` writes a results
  page instead, with a bar chart of the mean final h per feature and the final h of every sample.

The report section that links the viewer is :mod:`heatlab.report.sections.gax`.
"""

from __future__ import annotations

import base64
import math
import os
import zlib
from pathlib import Path

import numpy as np
from markupsafe import Markup
from matplotlib.lines import Line2D

from heatlab.errors import HeatlabError
from heatlab.files import write_text
from heatlab.report.figures import hold_flat_axes, literal, new_figure, save_figure
from heatlab.report.page import class_name_of, random_weights_note
from heatlab.report.templates import number, render
from heatlab.run.gax import GaxRunResult, load_gax_result
from heatlab.run.rundir import RunDir

#: At most this many steps per image in the viewer (evenly spread, first and last always kept).
MAX_FRAMES = 60
#: Panels are enlarged by a whole factor to at least this many pixels.
PANEL_PX = 128
REACHED_COLOR, MISSED_COLOR = "#0072B2", "#D55E00"


def _final_step(res: GaxRunResult, i: int) -> int:
    return int(res.table["final_step"].iloc[i])


def gax_figure(run_dir: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """CO against iteration for every optimised image of the run, target dashed (paper Fig. 4)."""
    res = load_gax_result(run_dir)
    s = res.summary
    fig = new_figure(7.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    reached = res.table["reached"].to_numpy(bool)
    alpha = 0.9 if len(reached) <= 20 else 0.5
    for i in range(len(reached)):
        f = _final_step(res, i)
        ax.plot(np.arange(f + 1), res.co[: f + 1, i].numpy(), lw=1.0, alpha=alpha, marker="o" if f == 0 else None,
                color=REACHED_COLOR if reached[i] else MISSED_COLOR)
    ax.axhline(s.target_co, color="black", ls="--", lw=1.0)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("CO score (raw logits, x + h)")
    ax.set_title(f"GAX, {s.branch}, {len(reached)} correctly predicted {s.split} images: "
                 f"{int(reached.sum())} reached the target", fontsize=10)
    ax.grid(alpha=0.3)
    hold_flat_axes(ax, integer="x")
    ax.legend(handles=[Line2D([], [], color=REACHED_COLOR, label="reached the target"),
                       Line2D([], [], color=MISSED_COLOR, label=f"not within {s.max_steps} steps"),
                       Line2D([], [], color="black", ls="--", label=f"target CO = {s.target_co:g}")],
              loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_png)


# --- viewer --------------------------------------------------------------------------------------

def _pack(array: np.ndarray) -> str:
    """uint8 array -> base64 of its deflated bytes (zlib format, what DecompressionStream('deflate') reads)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array, dtype=np.uint8).tobytes(), 9)).decode("ascii")


def _quantise(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Signed values -> uint8 codes 1..255 with 128 = 0, and the scale max|v| the codes span."""
    scale = float(np.abs(values).max()) if values.size else 0.0
    scale = scale if scale > 0 else 1.0
    return (np.rint(values / scale * 127.0) + 128).astype(np.uint8), scale


def _frame_indices(count: int, limit: int = MAX_FRAMES) -> list[int]:
    if count <= limit:
        return list(range(count))
    return sorted({round(k * (count - 1) / (limit - 1)) for k in range(limit)})


def _item(res: GaxRunResult, i: int, class_names: list[str], max_frames: int) -> tuple[dict, dict]:
    """(JSON payload for the script, facts for the HTML) of sample i."""
    snaps, steps = res.sample(i)
    keep = _frame_indices(len(steps), max_frames)
    frames = snaps[keep].float().numpy()
    steps = steps[keep].tolist()
    q_h, s_h = _quantise(frames)
    delta = q_h.copy()
    delta[1:] = q_h[1:] - q_h[:-1]  # uint8 arithmetic: differences mod 256
    d_max = int(np.abs(np.diff(q_h.astype(np.int16), axis=0)).max()) if len(steps) > 1 else 0
    d_max = max(d_max, 1)
    s_d = d_max * s_h / 127.0
    image = res.images[i].permute(1, 2, 0).numpy()  # H×W×C for the canvas
    row = res.table.iloc[i]
    f = _final_step(res, i)
    c, h, w = frames.shape[1:]
    payload = {
        "c": c, "h": h, "w": w, "zoom": max(1, math.ceil(PANEL_PX / max(h, w))),
        "frames": _pack(delta), "dmax": d_max, "image": _pack(image),
        "steps": steps, "co": [round(float(res.co[s, i]), 4) for s in steps],
        "traj": [round(float(v), 4) for v in res.co[: f + 1, i]],
        "target": float(res.summary.target_co), "sh": s_h, "sd": s_d,
    }
    facts = {
        "shard": int(row["shard"]), "index": int(row["index"]), "label": int(row["label"]),
        "name": class_name_of(class_names, int(row["label"])), "reached": bool(row["reached"]),
        "steps_to_target": int(row["steps_to_target"]), "final_co": float(row["final_co"]),
        "frames": len(steps), "last_step": steps[-1], "sh": s_h, "sd": s_d,
    }
    return payload, facts


def _lut() -> list[int]:
    """Flat RGB bytes of codes 0..255: matplotlib's "bwr" (the gallery's scale) evaluated exactly,
    blue (0, 0, 1) → white at code 128 (value 0) → red (1, 0, 0)."""
    v = np.clip((np.arange(256) - 128) / 127.0, -1, 1)
    rgb = np.stack([np.minimum(1, 1 + v), 1 - np.abs(v), np.minimum(1, 1 - v)], axis=1)
    return np.rint(rgb * 255).astype(int).flatten().tolist()


def _class_names(run: Path, branch: str) -> list[str]:
    try:
        names = RunDir(run).model_info(branch).get("class_names")
    except HeatlabError:
        return RunDir(run).class_names()
    return [str(n) for n in names] if isinstance(names, list) else []


def _feature_names(run: Path, width: int) -> list[str]:
    """Feature names recorded by evaluate when they cover the ``width`` features, else f0, f1, ..."""
    names = (RunDir(run).stage_summary("evaluate") or {}).get("feature_names") or []
    return [str(n) for n in names] if len(names) == width else [f"f{j}" for j in range(width)]


def gax_warning(res: GaxRunResult) -> Markup:
    """The report section's random-weights note, repeated on the page of its own (nothing for a trained model)."""
    return random_weights_note(res.summary.random_weights, f"{res.summary.branch} of this run")


def build_gax_viewer(run_dir: str | os.PathLike, *, max_frames: int = MAX_FRAMES) -> Path:
    """Write ``<run>/report/gax.html`` (slider viewer of every optimised image); returns its path.

    Each image shows at most ``max_frames`` of its stored steps (evenly spread, first and last
    kept); the page grows by about 25-45 KB per shown step of a 3×128×128 image.
    """
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
        raise HeatlabError(f"max_frames must be a whole number of at least 2, got {max_frames!r}.")
    run = Path(run_dir)
    res = load_gax_result(run)
    s = res.summary
    names = _class_names(run, s.branch)
    if res.images.dim() != 4:
        return _table_page(run, res, names)
    payloads, items = [], []
    for i in range(len(res.table)):
        payload, facts = _item(res, i, names, max_frames)
        payloads.append(payload)
        items.append(facts)
    page = render("gax_viewer.html", run_name=run.name, run_path=run.resolve(), s=s, n=len(res.table),
                  warning=gax_warning(res),
                  reached=int(res.table["reached"].sum()), items=items, data={"lut": _lut(), "items": payloads})
    out = RunDir(run).gax_page
    write_text(out, str(page))
    return out


def gax_feature_figure(finals: np.ndarray, feature_names: list[str], out_png: str | os.PathLike) -> Path:
    """Table GAX: per feature the mean over samples of the final h (filled) and of |h| (outlined)."""
    width = finals.shape[1] if finals.ndim == 2 else 0
    fig = new_figure(max(6.0, 0.35 * width + 1.5), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(width)
    signed = finals.mean(0) if len(finals) else np.zeros(width)
    magnitude = np.abs(finals).mean(0) if len(finals) else np.zeros(width)
    ax.bar(x, magnitude, color="none", edgecolor="#57606a", linewidth=0.8, label="mean |h|")
    ax.bar(x, signed, color=["#b42318" if v >= 0 else "#2166ac" for v in signed], width=0.6, label="mean h")
    ax.axhline(0, color="#999999", linewidth=0.6)
    ax.set_xticks(list(x))
    ax.set_xticklabels([literal(n) for n in feature_names], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("final h")
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _table_page(run: Path, res: GaxRunResult, names: list[str]) -> Path:
    """gax.html for table inputs (N×F): a bar chart of the mean final h per feature and, per sample,
    the final heatmap h over the features (no slider: there is no picture to step through)."""
    rows, finals = [], []
    for i, r in enumerate(res.table.itertuples()):
        snaps, _ = res.sample(i)
        h = snaps[-1].float().flatten().numpy()
        finals.append(h)
        rows.append([i, class_name_of(names, int(r.label)), "yes" if r.reached else "no", int(r.final_step),
                     number(r.final_co), *(number(v) for v in h)])
    width = len(finals[0]) if finals else 0
    features = _feature_names(run, width)
    out = RunDir(run).gax_page
    figure = gax_feature_figure(np.stack(finals) if finals else np.zeros((0, 0)), features,
                                RunDir(run).figure("gax_features.png"))
    page = render("gax_table.html", run_name=run.name, run_path=run.resolve(), s=res.summary, n=len(res.table),
                  warning=gax_warning(res),
                  src=figure.relative_to(out.parent).as_posix(), rows=rows,
                  header=["sample", "class", "reached", "steps", "final CO", *features])
    write_text(out, str(page))
    return out
