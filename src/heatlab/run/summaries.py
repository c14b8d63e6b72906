"""What the JSON records of a run folder hold: one schema (:mod:`heatlab.records`) per file.

:class:`heatlab.run.rundir.RunDir` checks config.json and ``<run>/<stage>.json`` against these when
it reads them, so a stage or the report never meets a field of the wrong type (a text where a
count is printed, a list where settings are looked up). A key ending in ``?`` may be missing or
null; fields not named here are kept unchecked.
"""

from __future__ import annotations

from typing import Any

_BRANCHES = list[int | str]  # older summaries hold branch indices

CONFIG: dict[str, Any] = {
    "seed?": int,
    "data_root?": str,
    "data_options?": dict,
    "training?": {
        "model?": str, "epochs?": int, "branch_epochs?": int, "branches?": int, "batch_size?": int,
        "lr?": float, "branch_lr?": float, "schedule?": str, "weight_decay?": float, "eval_every?": int,
        "target_acc?": float, "n_l?": int, "r_f?": float, "seed?": int, "device?": str, "normalize?": str,
    },
    "attribution?": dict[str, dict],
    "versions?": dict[str, str],
    "weights?": str,
    "weights_sha256?": str,
}

_ATTRIBUTION = {"preset?": str, "description?": str, "options?": dict[str, dict], "cam_layer?": str}

SUMMARIES: dict[str, dict[str, Any]] = {
    "evaluate": {
        "complete?": bool, "split?": str, "samples?": int, "methods?": list[str], "branches?": _BRANCHES,
        "tables?": list[str], "input_kind?": str, "truth_kind?": str, "feature_names?": list[str],
        "skipped?": list[str], "cam_layer?": str, "cam_layer_rule?": str, "attribution?": _ATTRIBUTION,
    },
    "no_truth": {
        "complete?": bool, "split?": str, "samples?": int, "methods?": list[str], "control?": str,
        "branches?": _BRANCHES, "skipped?": list[str], "metrics?": dict[str, dict], "best?": dict[str, dict],
    },
    "ax": {
        "complete?": bool, "split?": str, "holdout_split?": str, "samples?": int, "methods?": list[str],
        "branches?": _BRANCHES, "space?": str, "space_note?": str, "compare_method?": str, "normalized?": bool,
        "cam_layer?": str, "cam_layer_rule?": str, "attribution?": _ATTRIBUTION, "groupings?": dict[str, {"when": str, "version": str}],
        "largest_gap?": {"auroc?": float, "grouping?": str, "method?": str, "variant?": str},
    },
    "lrp-filters": {
        "complete?": bool, "split?": str, "samples": int, "composite?": str, "start?": str, "layers?": list[str],
        "filters?": list[str], "branches?": _BRANCHES, "means": dict[str, dict[str, float | None]],
        "better_than_none?": dict[str, list[str]],
    },
    "mixer": {
        "complete?": bool, "branch?": str, "architecture?": str, "n_steps?": int, "seeds": int,
        "train_samples": int, "test_samples": int, "confidence?": float, "input_shape?": list[int],
        "config?": {"holdout?": float}, "settings": dict[str, {
            "accuracy_plain": float, "accuracy_masked": float, "ci_low": float, "ci_high": float,
            "gain": float, "mask_mean": float, "seeds?": int}], "random_weights?": bool,
    },
    "gax": {
        "complete?": bool, "split": str, "branch": str, "samples?": int, "first_n_correct?": int,
        "max_steps": int, "snapshot_every": int, "target_co": float, "lr": float, "batch_size?": int,
        "reached?": int, "median_steps_to_target?": float, "space?": str, "ax?": str,
        "similarity_factor?": float, "eps?": float, "bias?": float, "weights_sha256?": str, "random_weights?": bool,
    },
    "lrp-study": {
        "complete?": bool, "iterations": int, "final_accuracy": float, "mp_layers?": list[str],
        "filter_layers": list[str], "mp_trend": dict[str, {"start": float, "end": float}], "random_weights?": bool,
        "settings": {
            "data": str, "model": str, "epochs?": int, "batch_size?": int, "lr?": float, "every": int,
            "eval_samples": int, "heatmap_samples?": int, "composite": str, "start?": str,
            "filters?": list[str], "seed?": int, "size?": int,
        },
    },
}
