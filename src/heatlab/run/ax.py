"""`heatlab ax`: Augmentative eXplanation on a trained run: CO scores and their correct/wrong gap.

For every branch model, method and sample of ``split`` (and of ``holdout_split``), the sample is
attributed to its *predicted* class, the heatmap is divided by its largest magnitude
(:func:`heatlab.score.co.prepare_heatmaps`), and :func:`heatlab.score.co.co_records` scores
``x + h`` and ``x * h`` on raw logits and on softmax probabilities.

A stage on :mod:`heatlab.run.runner`, resumable like ``heatlab evaluate``: one unit per (split,
branch, method, shard) writes ``<run>/tables/parts/ax-<split>/<branch>/<method>/shard-XXXXX.co.parquet``
then a ``.done.json`` marker. Inputs may be images or tables. Outputs:

**Space** (``space``, :mod:`heatlab.models.input_space`): by default h is attributed to, and added
to, the tensor the classifier's first learned layer receives, i.e. after the model's own
``Normalize`` (``heatlab train --normalize data`` gives every image model the training split's
mean/std), as in the papers; ``space="pixel"`` attributes and adds in the data's own space. For a
model with a ``Normalize``, the comparison method (Saliency, else the first method) is also run in
the other space, so Table 2 can show both.

**Attribution settings** (``preset``, :mod:`heatlab.explain.presets`; default ``"paper000"``: the
signed Saliency and the ``randn·0.001`` SHAP baselines of the papers' AX code).

``tables/co.parquet``, one row per (branch, method, split, space, sample): ``branch, method, split,
space, shard, index, label, prediction`` (before AX), ``correct_before`` and, for ``<ax>`` in
``sum``/``mult``, ``co_raw_<ax>, co_softmax_<ax>, pred_after_<ax>, correct_after_<ax>``.

``tables/co_gap.parquet``, one row per (branch, method, variant, grouping) with ``variant`` in
``raw_sum, softmax_sum, raw_mult, softmax_mult`` and ``grouping`` in :data:`GROUPINGS`: the
:class:`heatlab.score.gap.GapResult` fields of the CO scores of ``split`` (main space) grouped by
whether the prediction was correct *before* AX (the conference version, paper 000 v1: the error
test) or *after* AX with that variant's ``x + h`` / ``x · h`` (the journal version, v2: reproduced,
but circular as an error test, since the post-AX logits decide both the group and the score). The flag threshold is **chosen on
``holdout_split``** (default ``val``) and its precision and recall are **measured on ``split``**
(default ``test``), so the reported flag numbers come from samples the threshold never saw; with
no holdout split the threshold is chosen on ``split`` itself (``threshold_source = "in-sample"``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from heatlab.errors import HeatlabError
from heatlab.explain.attribution import attribute
from heatlab.explain.methods.selection import keep_methods, needs_image, parse_methods
from heatlab.explain.presets import Preset, get_preset
from heatlab.files import write_json
from heatlab.models.input_space import SPACES, check_space, input_space, model_normalize
from heatlab.models.state import model_device
from heatlab.models.training import takes_normalize
from heatlab.progress import Progress
from heatlab.run.evaluate import cam_layer_of, cam_record
from heatlab.run.results import AxResult
from heatlab.run.rundir import RunDir
from heatlab.run.runner import PARQUET, ShardUnit, Stage, Work, earlier_methods, run_stage
from heatlab.score.co import AX_VARIANTS, OUTPUTS, co_records, prepare_heatmaps
from heatlab.score.gap import gap_analysis
from heatlab.tables import TABLES

KIND = "co"
#: CO variants as ``<output>_<ax>``, in table order.
VARIANTS: tuple[str, ...] = tuple(f"{o}_{a}" for a in AX_VARIANTS for o in OUTPUTS)
ID_COLUMNS = ["branch", "method", "split", "space", "shard", "index", "label", "prediction", "correct_before"]
#: Correct/wrong groupings of the gap analysis: when "correct" is judged, which paper version does so,
#: and what it is good for. Only the before-AX grouping tests whether CO detects errors: after AX the
#: same post-AX logits decide both the group and the CO score, which inflates the AUROC (DESIGN §4.4).
GROUPINGS = {"correct_before": {"when": "before AX", "version": "conference version, paper 000 v1",
                                "role": "the error test"},
             "correct_after": {"when": "after AX", "version": "journal version, paper 000 v2",
                               "role": "the journal version's reproduction, not an error test"}}
#: The grouping of every error-detector number (headline, largest gap, flag threshold).
ERROR_GROUPING = "correct_before"
#: The method also run in the other space (Table 2's comparison line), when the run has it.
COMPARE_METHOD = "Saliency"
RECORD_COLUMNS = [c for a in AX_VARIANTS for c in (f"co_raw_{a}", f"co_softmax_{a}", f"pred_after_{a}", f"correct_after_{a}")]
#: The main variant of the papers (raw logits, ``x + h``): the one summaries rank by.
MAIN_VARIANT = "raw_sum"


def ax_unit(model, images: torch.Tensor, labels: torch.Tensor, method: str, *, predictions: torch.Tensor,
            batch_size: int, seed: int, shard: int = 0, options: dict | None = None) -> pd.DataFrame:
    """CO records of one shard (inputs ``N×...`` in the space ``model`` takes) for one method -> DataFrame
    (no branch/method/split/space). ``options``: extra ``attribute`` keyword arguments (the preset's)."""
    h = attribute(model, images, method, target=predictions, seed=seed, batch_size=batch_size, **(options or {}))
    rec = co_records(model, images, prepare_heatmaps(h), labels, batch_size=batch_size)
    frame = {"shard": shard, "index": np.arange(len(labels)), "label": labels.numpy(),
             "prediction": predictions.numpy(), "correct_before": (labels == predictions).numpy()}
    frame.update({c: rec[c].cpu().numpy() for c in RECORD_COLUMNS})
    return pd.DataFrame(frame)


class AX(Stage):
    """The AX stage: units (split, branch, method, shard) over the analysed and the holdout split."""

    name = "ax"
    kinds = {KIND: PARQUET}

    def __init__(self, run: RunDir, *, methods="all", split: str = "test", holdout_split: str | None = "val",
                 batch_size: int = 25, device: str = "cpu", space: str | None = None,
                 preset: str | Preset | None = None, replace: bool = False, layer: str | None = None):
        super().__init__(run, device=device, batch_size=batch_size)
        self.preset = get_preset(preset, self.name)
        self.layer = layer
        self.seed = run.seed()
        self.branches = run.require_branches()
        self.split = split
        self.holdout = holdout_split if holdout_split not in (None, "", "none", split) else None
        self.data = {split: run.open_data(split)}
        if self.holdout:
            try:
                self.data[self.holdout] = run.open_data(self.holdout)
            except HeatlabError as exc:
                raise HeatlabError(f"{str(exc).rstrip('.')}; or pass holdout_split='none' to choose the flag "
                                   "threshold on the analysed split.") from None
        self.methods = parse_methods(methods, self.data[split].input_kind)
        self.space = resolve_space(run, self.branches, space, self.data[split].input_kind)
        self.replace = replace
        self._resolve()

    def _resolve(self) -> None:
        self.cam_layer = cam_layer_of(self.run, self.branches[0], self.methods, layer=self.layer,
                                      first=self.preset.first_conv)
        compare = COMPARE_METHOD if COMPARE_METHOD in self.methods else self.methods[0]
        self.compare = compare if self.space["normalized"] else None

    def begin(self) -> None:
        """Keep the methods of the last complete AX run with the same splits, space and preset (under the lock)."""
        if not self.replace:
            same = {"split": self.split, "holdout_split": self.holdout, "space": self.space["space"],
                    "preset": self.preset.name}
            kind = self.data[self.split].input_kind
            merged = keep_methods(self.methods, earlier_methods(self.run, self.name, same), kind)
            if merged != self.methods:
                self.methods = merged
                self._resolve()

    def units(self) -> list[ShardUnit]:
        return [ShardUnit(s, b, m, k) for s in self.data for b in self.branches for m in self.methods
                for k in range(self.data[s].num_shards)]

    def spaces(self, unit: ShardUnit) -> list[str]:
        """The spaces ``unit`` is scored in: the main one, and the other for the comparison method."""
        main = self.space["space"]
        if unit.method != self.compare or unit.split != self.split:
            return [main]
        return [main, *(s for s in SPACES if s != main)]

    def settings(self, unit: ShardUnit) -> dict:
        layer = {"layer": self.cam_layer} if needs_image(unit.method) else {}
        return {"options": self.preset.kwargs(unit.method), "spaces": self.spaces(unit), **layer}

    def run_unit(self, work: Work, unit: ShardUnit) -> dict[str, pd.DataFrame]:
        shard = work.shard(unit.split, unit.shard)
        model = work.model(unit.branch)
        # Predicted before the Normalize is switched off: the work's prediction cache uses the whole model.
        predictions = work.predictions(unit.split, unit.branch, unit.shard)
        frames = []
        for space in self.spaces(unit):
            with input_space(model, space) as (net, to_input):
                x = to_input(shard["images"].to(model_device(model)))
                df = ax_unit(net, x, shard["labels"], unit.method, predictions=predictions,
                             batch_size=self.batch_size, seed=self.seed, shard=unit.shard,
                             options={**self.preset.kwargs(unit.method), "layer": self.cam_layer})
            frames.append(df.assign(space=space))
        return {KIND: pd.concat(frames, ignore_index=True)}

    def join(self, units: Sequence[ShardUnit], parts: dict[str, list[pd.DataFrame]]) -> AxResult:
        co = _join(units, parts[KIND], main_space=self.space["space"])
        gap = gap_table(co[co["space"] == self.space["space"]], split=self.split, holdout_split=self.holdout)
        paths = {"co": self.run.table("co"), "co_gap": self.run.table("co_gap")}
        TABLES["co"].write(paths["co"], co)
        TABLES["co_gap"].write(paths["co_gap"], gap)
        summary = {"split": self.split, "holdout_split": self.holdout, "methods": self.methods,
                   "branches": self.branches, "samples": len(self.data[self.split]),
                   "largest_gap": largest_gap(gap), **self.space, "compare_method": self.compare,
                   **cam_record(self.cam_layer, self.layer, self.preset.first_conv),
                   "attribution": self.preset.record(self.methods, self.cam_layer), "groupings": GROUPINGS, "complete": True}
        self.run.record_attribution(self.name, {**summary["attribution"], "space": self.space["space"]})
        write_json(self.run.summary_path(self.name), summary)
        return AxResult.from_record(summary, paths={k: str(v) for k, v in paths.items()})


def ax_run(run_dir, *, methods="all", split: str = "test", holdout_split: str | None = "val", batch_size: int = 25,
           device: str = "cpu", space: str | None = None, preset: str | Preset | None = None,
           replace: bool = False, progress: Progress | None = None, backend=None, trust_model_code: bool = False,
           layer: str | None = None) -> AxResult:
    """Run AX on every (branch, method, shard) of ``split`` and ``holdout_split``; write both tables.

    ``holdout_split`` ``None`` (or equal to ``split``) chooses the flag threshold in-sample.
    ``space``: ``"input"`` (default) or ``"pixel"`` (see :func:`resolve_space`); ``preset``: the
    attribution settings (default ``"paper000"``); ``layer``: the CAM methods' layer (default the
    preset's: the first convolution for the paper presets, else the last). Returns an
    :class:`~heatlab.run.results.AxResult`: the summary (ax.json) with the table paths and the
    method with the largest gap (mean AUROC over branches of the raw ``x + h`` score). The tables
    keep the methods of an earlier AX run with the same splits, space and preset (so
    ``methods="Saliency"`` adds Saliency); ``replace=True`` writes them with ``methods`` alone.
    ``backend``: where the units run (:func:`heatlab.run.runner.make_backend`; default this process).
    ``trust_model_code``: rebuild branch models whose model.json names code from outside heatlab
    (``file.py:fn``, ``module:fn``); without it such a run is refused in one sentence.
    """
    return run_stage(AX(RunDir(run_dir, trust_model_code=trust_model_code), methods=methods, split=split, holdout_split=holdout_split,
                        batch_size=batch_size, device=device, space=space, preset=preset, replace=replace,
                        layer=layer),
                     progress=progress, backend=backend)


def resolve_space(run: RunDir, branches: Sequence[str], space: str | None, input_kind: str) -> dict:
    """``{"space", "normalized", "space_note"}``: where AX adds h for these branches.

    ``space=None`` means ``"input"``. Asking for ``"input"`` explicitly on image models that do not
    standardise their input is an error (their input space is the pixel space; say how to add it).
    """
    chosen = check_space("input" if space is None else space)
    have = [model_normalize(run.load_model(b)) is not None for b in branches]
    normalized = bool(have) and all(have)
    if any(have) and not normalized:
        raise HeatlabError("Some branch models of this run standardise their input and others do not; "
                           "train the branches with the same --normalize.")
    if space == "input" and not normalized and input_kind == "image":
        model = run.config().get("training", {}).get("model", "")
        fix = ("train with `heatlab train --normalize data` to carry the data's mean/std"
               if model and takes_normalize(model) else f"model '{model}' cannot carry one")
        raise HeatlabError(f"The models of '{run.path}' do not standardise their input (no Normalize), so their input "
                           f"space is the pixel space; {fix}, or pass space='pixel'.")
    if chosen == "pixel":
        note = "h is added to the data as stored (pixel space)"
    elif normalized:
        note = "h is added to the tensor after the model's own Normalize (the classifier's input space, as in the papers)"
    elif input_kind == "image":
        note = ("the models do not standardise their input, so h is added to the data as stored "
                "(their input space is the pixel space)")
        chosen = "pixel"
    else:
        note = "h is added to the features as the model receives them"
    return {"space": chosen, "normalized": normalized, "space_note": note}


def grouping_column(grouping: str, ax: str) -> str:
    """The co.parquet column that says "correct" for ``grouping`` and AX variant ``ax`` (sum/mult)."""
    return "correct_before" if grouping == "correct_before" else f"correct_after_{ax}"


def gap_table(co: pd.DataFrame, *, split: str, holdout_split: str | None) -> pd.DataFrame:
    """One row per (branch, method, variant, grouping): gap numbers of ``split``, threshold from ``holdout_split``."""
    rows = []
    for (branch, method), g in co.groupby(["branch", "method"], sort=False):
        main = g[g["split"] == split]
        hold = g[g["split"] == holdout_split] if holdout_split else None
        for grouping in GROUPINGS:
            for variant in VARIANTS:
                output, ax = variant.split("_")
                column, ok = f"co_{variant}", grouping_column(grouping, ax)
                res = gap_analysis(
                    main[column].to_numpy(), main[ok].to_numpy(),
                    holdout_co=None if hold is None else hold[column].to_numpy(),
                    holdout_correct=None if hold is None else hold[ok].to_numpy(),
                )
                rows.append({"branch": branch, "method": method, "variant": variant, "grouping": grouping,
                             "output": output, "ax": ax, "split": split, "threshold_split": holdout_split or split,
                             **res.as_row()})
    return pd.DataFrame(rows)


def largest_gap(gap: pd.DataFrame, variant: str = MAIN_VARIANT, grouping: str = ERROR_GROUPING) -> dict | None:
    """``{"method", "auroc", "variant", "grouping"}`` with the highest mean AUROC over branches (None if all NaN)."""
    rows = gap[(gap["variant"] == variant) & (gap["grouping"] == grouping)]
    means = rows.groupby("method", sort=False)["auroc"].mean().dropna()
    if means.empty:
        return None
    best = means.idxmax()  # first of equal maxima, in method order
    return {"method": str(best), "auroc": float(means[best]), "variant": variant, "grouping": grouping}


def _join(units: Sequence[ShardUnit], frames: list[pd.DataFrame], main_space: str) -> pd.DataFrame:
    """All unit parts in a fixed order (branch, method, split, space (main first), shard, index)."""
    frames = [df.assign(branch=u.branch, method=u.method, split=u.split) for u, df in zip(units, frames)]
    df = pd.concat(frames, ignore_index=True)[ID_COLUMNS + RECORD_COLUMNS]
    # Branch, method and split keep the order the units were listed in (methods in registry order).
    order = {c: {v: i for i, v in enumerate(dict.fromkeys(df[c]))} for c in ("branch", "method", "split")}
    order["space"] = {main_space: 0, **{s: 1 for s in SPACES if s != main_space}}
    df = df.sort_values(["branch", "method", "split", "space", "shard", "index"], kind="stable",
                        key=lambda c: c.map(order[c.name]) if c.name in order else c)
    return df.reset_index(drop=True)
