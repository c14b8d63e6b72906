"""The run-level meta-evaluation: ``tables/metric_agreement.parquet`` from a run's stored tables.

:func:`write_metric_agreement` joins the per-sample no-truth scores (``tables/no_truth.parquet``)
with the ground-truth scores evaluate stored (:data:`REFERENCES`) and writes
:func:`heatlab.score.agreement.metric_agreement`'s table. It lives here rather than inside
evaluate's join because it reads only stored tables (no model, no data): it reruns in a second
after either table changes, and evaluate calls it once both exist.

**The sample join** (the one place it is defined): the truth tables name a sample by ``shard`` and
``index`` (its position in its shard). When the no-truth table has those columns too, they are the
join key; otherwise its ``sample`` is the sample's position in the split, and :func:`truth_long`
numbers the truth tables' (shard, index) pairs the same way (sorted, from 0: the position in the
split, since evaluate scores every sample of it).
"""

from __future__ import annotations

import os

import pandas as pd

from heatlab.run.results import AgreementResult
from heatlab.run.rundir import RunDir
from heatlab.score.agreement import metric_agreement
from heatlab.tables import TABLES

#: (table, column, filter) of the ground-truth references, each higher-is-better.
REFERENCES = (
    ("five_band", "recall_best", ("variant", "standard")),
    ("five_band", "precision_best", ("variant", "standard")),
    ("localisation", "auc/feature", None),
)
KEY = ("shard", "index")


def truth_long(run: RunDir, *, by_position: bool = True) -> pd.DataFrame:
    """The references of :data:`REFERENCES` the run has, long: branch, method, reference, sample, value
    (``sample`` the position in the split, or with ``by_position=False`` the columns shard and index)."""
    frames = []
    for table, column, where in REFERENCES:
        path = run.table(table)
        if not path.is_file():
            continue
        df = TABLES[table].read(path)
        if column not in df.columns:
            continue
        if where is not None:
            df = df[df[where[0]] == where[1]]
        frames.append(df[["branch", "method", *KEY, column]].rename(columns={column: "value"}).assign(reference=column))
    if not frames:
        return pd.DataFrame(columns=["branch", "method", "reference", "sample", "value"])
    out = pd.concat(frames, ignore_index=True)
    if by_position:
        pairs = out[list(KEY)].drop_duplicates().sort_values(list(KEY))
        position = pd.Series(range(len(pairs)), index=pd.MultiIndex.from_frame(pairs))
        out["sample"] = position.reindex(pd.MultiIndex.from_frame(out[list(KEY)])).to_numpy()
        out = out.drop(columns=list(KEY))
    return out


def write_metric_agreement(run_dir: str | os.PathLike, *, resamples: int | None = None) -> AgreementResult | None:
    """Write ``tables/metric_agreement.parquet`` when the run has both the no-truth table and a
    ground-truth reference (returns what it compared); otherwise remove a stale one and return None.
    Seeded by the run's seed."""
    run = RunDir(run_dir)
    target = run.agreement_table
    scores_path = run.no_truth_table
    if not scores_path.is_file():
        target.unlink(missing_ok=True)
        return None
    scores = TABLES["no_truth"].read(scores_path)
    by_key = all(c in scores.columns for c in KEY)
    truth = truth_long(run, by_position=not by_key)
    if truth.empty:
        target.unlink(missing_ok=True)
        return None
    if by_key:  # one sample id for both tables, from (shard, index)
        ids = {k: i for i, k in enumerate(sorted(set(map(tuple, pd.concat([scores, truth])[list(KEY)].to_numpy()))))}
        scores = scores.assign(sample=[ids[k] for k in map(tuple, scores[list(KEY)].to_numpy())])
        truth = truth.assign(sample=[ids[k] for k in map(tuple, truth[list(KEY)].to_numpy())])
    kw = {} if resamples is None else {"resamples": resamples}
    table = metric_agreement(scores, truth, seed=run.seed(), **kw)
    TABLES["metric_agreement"].write(target, table)
    return AgreementResult(str(target), list(dict.fromkeys(table["metric"])), list(dict.fromkeys(table["reference"])))
