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
import json
import math
import os
import zlib
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from heatlab.errors import HeatlabError
from heatlab.files import ensure_dir, write_text
from heatlab.report.figures import hold_flat_axes, literal, new_figure, save_figure
from heatlab.report.page import CSS, class_name_of, esc, fmt, table_html
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
    ax.axhline(s["target_co"], color="black", ls="--", lw=1.0)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("CO score (raw logits, x + h)")
    ax.set_title(f"GAX, {s['branch']}, {len(reached)} correctly predicted {s['split']} images: "
                 f"{int(reached.sum())} reached the target", fontsize=10)
    ax.grid(alpha=0.3)
    hold_flat_axes(ax, integer="x")
    ax.legend(handles=[Line2D([], [], color=REACHED_COLOR, label="reached the target"),
                       Line2D([], [], color=MISSED_COLOR, label=f"not within {s['max_steps']} steps"),
                       Line2D([], [], color="black", ls="--", label=f"target CO = {s['target_co']:g}")],
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
        "target": float(res.summary["target_co"]), "sh": s_h, "sd": s_d,
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


VIEWER_CSS = """
.gax-item{border-top:1px solid #d0d7de;padding:10px 0 14px}.gax-item h3{margin:4px 0;font-size:1.02em}
.gax-controls{display:flex;align-items:center;gap:14px;flex-wrap:wrap;margin:6px 0}
.gax-controls input[type=range]{width:320px}.gax-readout{font-variant-numeric:tabular-nums;min-width:24em}
.gax-panels{display:flex;gap:16px;align-items:flex-end;flex-wrap:wrap}canvas{image-rendering:pixelated}
.bar{display:inline-block;width:90px;height:10px;vertical-align:middle;border:1px solid #999;
background:linear-gradient(to right,#0000ff,#ffffff,#ff0000)}
"""

VIEWER_JS = r"""
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("gax-data").textContent);
  const LUT = data.lut, GAP = 6, LABEL = 16;
  function num(v) {
    const a = Math.abs(v);
    return a >= 1e5 ? v.toExponential(2) : a >= 1 ? v.toFixed(2) : a === 0 ? "0" : v.toPrecision(3);
  }
  function bytes(b64) { return Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)); }
  async function inflate(b64) {
    const stream = new Blob([bytes(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function signed(src, offset, n) {
    const out = new Uint8ClampedArray(n * 4);
    for (let p = 0; p < n; p++) {
      const q = src[offset + p] * 3;
      out[4 * p] = LUT[q]; out[4 * p + 1] = LUT[q + 1]; out[4 * p + 2] = LUT[q + 2]; out[4 * p + 3] = 255;
    }
    return out;
  }
  function rgb(image, c, n) {
    const out = new Uint8ClampedArray(n * 4);
    for (let p = 0; p < n; p++) {
      for (let j = 0; j < 3; j++) out[4 * p + j] = image[p * c + (c === 3 ? j : 0)];
      out[4 * p + 3] = 255;
    }
    return out;
  }
  function curve(canvas, d, step) {
    const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, m = 6;
    const lo = Math.min(0, ...d.traj), hi = Math.max(d.target, ...d.traj);
    const last = Math.max(1, d.traj.length - 1);
    const X = (t) => m + (W - 2 * m) * t / last, Y = (v) => H - m - (H - 2 * m) * (v - lo) / (hi - lo || 1);
    ctx.clearRect(0, 0, W, H);
    ctx.strokeStyle = "#000"; ctx.setLineDash([4, 3]); ctx.beginPath();
    ctx.moveTo(m, Y(d.target)); ctx.lineTo(W - m, Y(d.target)); ctx.stroke(); ctx.setLineDash([]);
    ctx.strokeStyle = "#0072B2"; ctx.lineWidth = 1.5; ctx.beginPath();
    d.traj.forEach((v, t) => (t ? ctx.lineTo(X(t), Y(v)) : ctx.moveTo(X(t), Y(v)))); ctx.stroke();
    const v = d.traj[Math.min(step, d.traj.length - 1)];
    ctx.strokeStyle = "#D55E00"; ctx.beginPath(); ctx.moveTo(X(step), m); ctx.lineTo(X(step), H - m); ctx.stroke();
    ctx.fillStyle = "#D55E00"; ctx.beginPath(); ctx.arc(X(step), Y(v), 3, 0, 2 * Math.PI); ctx.fill();
  }
  async function setup(el, d) {
    const [frames, image] = await Promise.all([inflate(d.frames), inflate(d.image)]);
    const n = d.h * d.w, size = d.c * n, pw = d.w * d.zoom, ph = d.h * d.zoom;
    for (let p = size; p < frames.length; p++) frames[p] += frames[p - size];  // wraps mod 256
    const change = (k, offset) => {
      const out = new Uint8Array(n).fill(128);
      if (k === 0) return out;
      for (let p = 0; p < n; p++) {
        const a = k * size + offset + p;
        out[p] = Math.round((frames[a] - frames[a - size]) / d.dmax * 127) + 128;
      }
      return out;
    };
    const names = d.c === 3 ? ["R", "G", "B"] : d.c === 1 ? [""] : Array.from({ length: d.c }, (_, k) => "c" + k);
    const labels = ["image", ...names.map((s) => "h " + s), ...names.map((s) => "\u0394h " + s)];
    const canvas = el.querySelector("canvas.gax-canvas");
    canvas.width = labels.length * (pw + GAP) - GAP; canvas.height = ph + LABEL;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.font = "12px system-ui, sans-serif"; ctx.fillStyle = "#1f2328";
    labels.forEach((s, k) => ctx.fillText(s, k * (pw + GAP) + 2, 12));
    const scratch = document.createElement("canvas");
    scratch.width = d.w; scratch.height = d.h;
    const sctx = scratch.getContext("2d");
    const put = (pixels, k) => {
      sctx.putImageData(new ImageData(pixels, d.w, d.h), 0, 0);
      ctx.drawImage(scratch, k * (pw + GAP), LABEL, pw, ph);
    };
    const picture = rgb(image, d.c, n);
    const slider = el.querySelector("input.gax-slider"), readout = el.querySelector(".gax-readout");
    const spark = el.querySelector("canvas.gax-curve");
    const show = (k) => {
      put(picture, 0);
      for (let ch = 0; ch < d.c; ch++) {
        put(signed(frames, k * size + ch * n, n), 1 + ch);
        put(signed(change(k, ch * n), 0, n), 1 + d.c + ch);
      }
      const since = k ? " (\u0394h since step " + d.steps[k - 1] + ")" : " (first step: no change yet)";
      readout.querySelector(".gax-step").textContent = "step " + d.steps[k] + since;
      readout.querySelector(".gax-co").textContent = "CO " + num(d.co[k]) + " (target " + num(d.target) + ")";
      curve(spark, d, d.steps[k]);
    };
    slider.addEventListener("input", () => show(Number(slider.value)));
    show(Number(slider.value));
    el.dataset.ready = "1";
  }
  const items = document.querySelectorAll(".gax-item");
  if (typeof DecompressionStream === "undefined") {
    document.getElementById("gax-status").textContent = "This browser cannot inflate the embedded heatmaps " +
      "(no DecompressionStream); open the page in a current Chromium, Firefox or Safari.";
    return;
  }
  Promise.all(Array.from(items, (el, i) => setup(el, data.items[i]))).then(() => {
    document.body.dataset.ready = "1";
  });
})();
"""


def _item_html(k: int, facts: dict) -> str:
    outcome = (f"reached CO ≥ target at step {facts['steps_to_target']}" if facts["reached"]
               else f"did not reach the target within {facts['last_step']} steps")
    return (
        f'<div class="gax-item" id="gax-{k}"><h3>Image {k + 1}: shard {facts["shard"]}, index {facts["index"]}, '
        f'class {esc(facts["name"])} ({facts["label"]}); {esc(outcome)}, final CO {fmt(facts["final_co"])}</h3>'
        f'<div class="gax-controls"><input class="gax-slider" type="range" min="0" max="{facts["frames"] - 1}" '
        f'value="{facts["frames"] - 1}" step="1" aria-label="optimisation step of image {k + 1}">'
        f'<span class="gax-readout"><b class="gax-step"></b> · <span class="gax-co"></span></span></div>'
        f'<div class="gax-panels"><canvas class="gax-canvas"></canvas>'
        f'<canvas class="gax-curve" width="240" height="100" aria-label="CO against step"></canvas></div>'
        f'<p class="muted">h scale ±{facts["sh"]:.3g} <span class="bar"></span> · Δh scale ±{facts["sd"]:.3g} '
        f'<span class="bar"></span> (blue negative, white 0, red positive)</p></div>'
    )


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
    names = _class_names(run, s["branch"])
    if res.images.dim() != 4:
        return _table_page(run, res, names)
    payloads, blocks = [], []
    for i in range(len(res.table)):
        payload, facts = _item(res, i, names, max_frames)
        payloads.append(payload)
        blocks.append(_item_html(i, facts))
    blob = json.dumps({"lut": _lut(), "items": payloads}, separators=(",", ":")).replace("</", "<\\/")
    reached = int(res.table["reached"].sum())
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>GAX viewer: {esc(run.name)}</title><style>{CSS}{VIEWER_CSS}</style></head><body>"
        f"<header><h1>GAX viewer</h1><p>Run {esc(run.resolve())}</p></header>"
        "<nav><a href=\"index.html\">back to the report</a></nav><main>"
        f"<p>Generative AX (papers 000/001, Fig. 5A) on the first {len(res.table)} correctly predicted images of the "
        f"<b>{esc(s['split'])}</b> split, model {esc(s['branch'])}: h = tanh(w⊙x + b) optimised with Adam (lr "
        f"{s['lr']:g}) to raise the CO score of x + h until CO ≥ {s['target_co']:g} or {s['max_steps']} steps; "
        f"{reached} of {len(res.table)} reached the target. Move a slider (or focus it and use the arrow keys) to step "
        f"through the stored steps (one every {s['snapshot_every']} step(s), and the last one). Red pixels of h are "
        "increased and blue ones decreased by AX; Δh is the change since the previously stored step. Each image "
        "keeps one fixed scale for h and one for Δh across its steps (printed below it).</p>"
        f"<p id=\"gax-status\" class=\"muted\"></p>{''.join(blocks)}</main>"
        f"<script type=\"application/json\" id=\"gax-data\">{blob}</script><script>{VIEWER_JS}</script></body></html>\n"
    )
    out = ensure_dir(run / "report") / "gax.html"
    write_text(out, page)
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
    s, rows, finals = res.summary, [], []
    for i, r in enumerate(res.table.itertuples()):
        snaps, _ = res.sample(i)
        h = snaps[-1].float().flatten().numpy()
        finals.append(h)
        rows.append([esc(i), esc(class_name_of(names, int(r.label))), "yes" if r.reached else "no", esc(int(r.final_step)),
                     fmt(r.final_co), *(fmt(v) for v in h)])
    width = len(finals[0]) if finals else 0
    features = _feature_names(run, width)
    out_dir = ensure_dir(run / "report")
    figure = gax_feature_figure(np.stack(finals) if finals else np.zeros((0, 0)), features,
                                out_dir / "figures" / "gax_features.png")
    src = figure.relative_to(out_dir).as_posix()
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>GAX: {esc(run.name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>GAX results</h1><p>Run {esc(run.resolve())}</p></header>"
        "<nav><a href=\"index.html\">back to the report</a></nav><main>"
        f"<p>Generative AX on the first {len(res.table)} correctly predicted samples of the <b>{esc(s['split'])}</b> "
        f"split ({esc(s['branch'])}). The inputs are a table, optimised in the [0, 1] min-max space of the training "
        "features, so there is no picture to step through: the chart shows the mean final heatmap h per feature, "
        "and each row of the table is one sample's final h.</p>"
        f'<figure><img src="{esc(src)}" alt="mean final GAX heatmap per feature"><figcaption>Mean over the samples '
        "of the final h (filled: signed, red positive, blue negative; outlined: magnitude).</figcaption></figure>"
        + table_html(["sample", "class", "reached", "steps", "final CO", *(esc(f) for f in features)], rows)
        + "</main></body></html>\n"
    )
    out = out_dir / "gax.html"
    write_text(out, page)
    return out
