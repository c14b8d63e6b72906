"""A no-truth table for a test run: ``tables/no_truth.parquet`` computed by calling the metric
functions directly with tiny options the CLI does not expose (two sensitivity samples, four regions),
in the stage's long format (branch, method, metric, sample, value; ``sample`` the position in the
split). ``test_no_truth_default`` checks that the stage writes the same long formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from heatlab.explain.attribution import attribute
from heatlab.run.rundir import RunDir
from heatlab.score import axiomatic, complexity, faithfulness, randomisation, robustness

#: One fast metric per family, called as the family modules define them.
NO_TRUTH = {
    "sparseness": lambda model, x, y, a, explain: complexity.sparseness(model, x, y, a),
    "region_perturbation_morf": lambda model, x, y, a, explain: faithfulness.region_perturbation(
        model, x, y, a, patch_size=16, regions_evaluation=4),
    "mprt": lambda model, x, y, a, explain: randomisation.mprt(model, x, y, a, explain_func=explain),
    "avg_sensitivity": lambda model, x, y, a, explain: robustness.avg_sensitivity(
        model, x, y, a, explain_func=explain, nr_samples=2),
    "completeness": lambda model, x, y, a, explain: axiomatic.completeness(model, x, y, a),
}


def _explained(run: RunDir, methods):
    """(branch, model, x, y, method, explain, a, first sample's position) for every test shard, branch and
    method, with evaluate's targets (the predictions) and attribution seed."""
    data = run.open_data("test")
    for branch in run.branches():
        model = run.load_model(branch).eval()
        offset = 0
        for k in range(data.num_shards):
            x = data.load_shard(k)["images"]
            with torch.no_grad():
                y = model(x).argmax(1)
            for method in methods:
                def explain(m, xx, yy, method=method):
                    return attribute(m, xx, method, target=yy, seed=run.seed()).detach()

                yield branch, model, x, y, method, explain, explain(model, x, y), offset
            offset += len(x)


def write_no_truth(run_dir, methods, metrics=NO_TRUTH) -> pd.DataFrame:
    """tables/no_truth.parquet of ``metrics`` for every test sample, branch and method; returns the table."""
    run = RunDir(run_dir)
    frames = []
    for branch, model, x, y, method, explain, a, offset in _explained(run, methods):
        for name, fn in metrics.items():
            v = fn(model, x, y, a, explain).double().numpy()
            frames.append(pd.DataFrame({"branch": branch, "method": method, "metric": name,
                                        "sample": offset + np.arange(len(x)), "value": v}))
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(run.no_truth_table, index=False)
    return table


def write_no_truth_curves(run_dir, methods, n_steps: int = 4) -> pd.DataFrame:
    """tables/no_truth_curves.parquet by hand, 4 steps to match :func:`write_no_truth`'s tiny table: the deletion and
    insertion curves of every test sample, branch and method, as :func:`write_no_truth` scores them, in the stage's
    long format (branch, method, metric, sample, step, fraction, value); returns the table."""
    run = RunDir(run_dir)
    curves = {"deletion": faithfulness.deletion_curve, "insertion": faithfulness.insertion_curve}
    frames = []
    for branch, model, x, y, method, _, a, offset in _explained(run, methods):
        for name, curve in curves.items():
            c = curve(model, x, y, a, n_steps=n_steps).double().numpy()  # N × (n_steps + 1)
            n, s = c.shape
            frames.append(pd.DataFrame({
                "branch": branch, "method": method, "metric": name,
                "sample": np.repeat(offset + np.arange(n), s), "step": np.tile(np.arange(s), n),
                "fraction": np.tile(np.arange(s) / n_steps, n), "value": c.ravel()}))
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(run.no_truth_curves, index=False)
    return table
