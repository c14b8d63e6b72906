"""The no-truth report sections, the headline's no-truth rows and the agreement table on the tiny run."""

from __future__ import annotations

import re
import shutil
from html import unescape

import numpy as np
import pandas as pd
import pytest

from heatlab.report.html import build_report
from heatlab.run.agreement import truth_long, write_metric_agreement
from heatlab.run.evaluate import evaluate_run
from heatlab.run.rundir import RunDir
from heatlab.score.agreement import metric_agreement
from heatlab.score.intervals import mean_interval, pick_best

try:
    from no_truth_tables import write_no_truth
except ImportError:  # run from the repository root as a package
    from tests.no_truth_tables import write_no_truth

METHODS = ("Saliency", "InputXGradient", "GuidedBackprop", "Random")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_run):
    run = tmp_path_factory.mktemp("nt") / "run"
    shutil.copytree(tiny_run, run)
    evaluate_run(run, methods=",".join(METHODS), split="test")
    table = write_no_truth(run, METHODS)
    write_metric_agreement(run, resamples=300)
    page = build_report(run)
    return run, table, page.read_text(encoding="utf-8")


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{re.escape(sid)}".*?</section>', html, re.S)
    return m.group(0) if m else ""


def _text(fragment: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", fragment))


def test_family_sections_show_each_methods_mean_and_interval_from_the_table(scored):
    run, table, html = scored
    for family, metric in (("faithfulness", "region_perturbation_morf"), ("complexity", "sparseness"),
                           ("randomisation", "mprt"), ("robustness", "avg_sensitivity"), ("axiomatic", "completeness")):
        text = _text(_section(html, f"no-truth-{family}"))
        assert metric in text
        for method in METHODS:
            rows = table[(table["metric"] == metric) & (table["method"] == method)]
            finite = rows[np.isfinite(rows["value"])]
            iv = mean_interval([g["value"].to_numpy() for _, g in finite.groupby("branch")])
            assert f"{iv.estimate:.3g} [{iv.low:.3g}, {iv.high:.3g}]" in text
        from heatlab.report.sections.headline import kind_text

        assert kind_text(iv) in text  # the interval kind is named
        n_inf = int(np.isinf(table.loc[table["metric"] == metric, "value"]).sum())
        assert (f"{n_inf} infinite value(s) of {metric}" in text) == (n_inf > 0)
    for family in ("faithfulness", "complexity", "randomisation", "robustness", "axiomatic"):
        assert (run / "report" / "figures" / f"no_truth_{family}.png").is_file()


def test_headline_names_the_best_method_per_no_truth_metric_in_its_direction(scored):
    _, table, html = scored
    lines = re.findall(r"<tr>(.*?)</tr>", _section(html, "headline"), re.S)
    for metric, up in (("sparseness", True), ("region_perturbation_morf", True), ("mprt", False)):
        ivs = {}
        for method in METHODS:
            rows = table[(table["metric"] == metric) & (table["method"] == method)]
            ivs[method] = mean_interval([g["value"].to_numpy() for _, g in rows.groupby("branch")])
        pick = pick_best(ivs, higher_is_better=up)
        line = _text(next(r for r in lines if f"{metric} (" in r))
        assert ("higher is better" if up else "lower is better") in line
        want = pick.best if pick.best is not None else "tied: " + ", ".join(pick.tied)
        assert want in line
        best = sorted(ivs.items(), key=lambda kv: -kv[1].estimate if up else kv[1].estimate)[0]
        assert f"{best[0]} {best[1].estimate:.3g} [{best[1].low:.3g}, {best[1].high:.3g}]" in line


def test_sanity_section_applies_its_threshold(scored):
    _, table, html = scored
    text = _text(_section(html, "sanity"))
    assert "0.5" in text
    rows = table[table["metric"] == "mprt"]
    for method in METHODS:
        v = rows[rows["method"] == method]
        iv = mean_interval([g["value"].to_numpy() for _, g in v.groupby("branch")])
        want = "pass" if iv.high < 0.5 else "fail" if iv.low >= 0.5 else "unclear"
        assert re.search(rf"{method}\s*{iv.estimate:.3f} \[[^\]]*\]\s*{want}", text), (method, want)
    # the Random control draws other maps for other weights (seeded by the parameters): unrelated maps pass
    random = rows[rows["method"] == "Random"]["value"]
    assert abs(random.mean()) < 0.05
    assert "Random" in text.split("Passing:")[1].split(".")[0]


def test_agreement_table_equals_the_pure_function_on_the_runs_tables(scored):
    run, table, html = scored
    stored = pd.read_parquet(RunDir(run).agreement_table)
    again = metric_agreement(table, truth_long(RunDir(run)), seed=RunDir(run).seed(), resamples=300)
    pd.testing.assert_frame_equal(stored, again)
    assert set(stored["reference"]) == {"recall_best", "precision_best", "auc/feature"}
    assert (stored["n_methods"] == len(METHODS)).all()
    text = _text(_section(html, "metric-agreement"))
    for r in stored.itertuples():
        assert f"{r.tau:.3f} [{r.tau_low:.3f}, {r.tau_high:.3f}]" in text
    assert (run / "report" / "figures" / "metric_agreement.png").is_file()


def test_truth_samples_are_numbered_by_position_in_the_split(scored):
    run, _, _ = scored
    five = pd.read_parquet(RunDir(run).table("five_band"))
    five = five[(five["variant"] == "standard")].sort_values(["branch", "method", "shard", "index"])
    long = truth_long(RunDir(run))
    got = long[long["reference"] == "recall_best"].sort_values(["branch", "method", "sample"])
    assert got["value"].tolist() == five["recall_best"].tolist()
    sizes = five.groupby("shard")["index"].max() + 1
    offsets = sizes.cumsum().shift(fill_value=0)
    want = (five["shard"].map(offsets) + five["index"]).tolist()
    assert got["sample"].tolist() == want


def test_sections_are_absent_without_the_tables(scored, tmp_path):
    run, _, _ = scored
    bare = tmp_path / "run"
    shutil.copytree(run, bare)
    only = pd.read_parquet(RunDir(bare).no_truth_table)
    only[only["metric"] == "sparseness"].to_parquet(RunDir(bare).no_truth_table, index=False)
    html = build_report(bare).read_text(encoding="utf-8")
    present = [sid for sid in re.findall(r'<section id="([^"]+)"', html) if sid.startswith("no-truth-")]
    assert present == ["no-truth-complexity"]  # a family without rows gets no section
    RunDir(bare).no_truth_table.unlink()
    assert write_metric_agreement(bare) is None and not RunDir(bare).agreement_table.exists()
    html = build_report(bare).read_text(encoding="utf-8")
    for sid in ("no-truth-faithfulness", "no-truth-complexity", "no-truth-randomisation", "no-truth-robustness",
                "no-truth-axiomatic", "sanity", "metric-agreement"):
        assert _section(html, sid) == ""
    assert "no ground truth" not in _text(_section(html, "headline"))


def test_verdicts_read_the_intervals():
    from heatlab.report.sections.agreement import agreement_verdict
    from heatlab.report.sections.sanity import THRESHOLD, verdict
    from heatlab.score.intervals import Interval

    iv = lambda est, lo, hi: Interval(est, lo, hi, "t over samples", 1, 10)  # noqa: E731
    assert THRESHOLD == 0.5
    assert [verdict(iv(0.2, 0.1, 0.49)), verdict(iv(0.7, 0.5, 0.8)), verdict(iv(0.5, 0.4, 0.6))] == ["pass", "fail", "unclear"]
    assert verdict(iv(0.2, float("nan"), float("nan"))) == "pass"  # one sample: the mean decides
    assert [agreement_verdict(0.1, 0.9), agreement_verdict(-0.9, -0.1), agreement_verdict(-0.1, 0.5),
            agreement_verdict(float("nan"), 1.0)] == ["agrees", "disagrees", "unclear", "unclear"]
