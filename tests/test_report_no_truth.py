"""The no-truth page (its family sections, the deletion/insertion curves, the sanity check and the agreement table),
the index's summary of it and the headline's no-truth rows, on the tiny run."""

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
    from no_truth_tables import write_no_truth, write_no_truth_curves
except ImportError:  # run from the repository root as a package
    from tests.no_truth_tables import write_no_truth, write_no_truth_curves

METHODS = ("Saliency", "InputXGradient", "GuidedBackprop", "Random")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_run):
    run = tmp_path_factory.mktemp("nt") / "run"
    shutil.copytree(tiny_run, run)
    evaluate_run(run, methods=",".join(METHODS), split="test")
    table = write_no_truth(run, METHODS)
    write_no_truth_curves(run, METHODS)
    write_metric_agreement(run, resamples=300)
    page = build_report(run)
    return run, table, (page.parent / "no_truth.html").read_text(encoding="utf-8"), page.read_text(encoding="utf-8")


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{re.escape(sid)}".*?</section>', html, re.S)
    return m.group(0) if m else ""


def _text(fragment: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", fragment))


def test_family_sections_show_each_methods_mean_and_interval_from_the_table(scored):
    run, table, html, _ = scored
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
        values = table.loc[table["metric"] == metric, "value"]
        n_inf, n_nan = int(np.isinf(values).sum()), int(np.isnan(values).sum())
        said = f"{n_inf + n_nan} of the {len(values)} values of {metric} ({n_inf} infinite, {n_nan} NaN)"
        assert (said in text) == (n_inf + n_nan > 0), (said, text)
    for family in ("faithfulness", "complexity", "randomisation", "robustness", "axiomatic"):
        assert (run / "report" / "figures" / f"no_truth_{family}.png").is_file()


def test_headline_names_the_best_method_per_no_truth_metric_in_its_direction(scored):
    _, table, _, html = scored
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
    _, table, html, index = scored
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
    # the index's summary gives the same verdicts
    summary = _text(_section(index, "no-truth")).split("Sanity check")[1].split("(table)")[0]
    verdicts = {}
    for method in METHODS:
        v = rows[rows["method"] == method]
        iv = mean_interval([g["value"].to_numpy() for _, g in v.groupby("branch")])
        verdicts.setdefault("pass" if iv.high < 0.5 else "fail" if iv.low >= 0.5 else "unclear", []).append(method)
    for want in ("pass", "fail", "unclear"):
        assert f"{want}: {', '.join(verdicts.get(want, [])) or 'none'}" in summary, (want, summary)


def test_agreement_table_equals_the_pure_function_on_the_runs_tables(scored):
    run, table, html, _ = scored
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
    run, _, _, _ = scored
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
    run, _, _, _ = scored
    bare = tmp_path / "run"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("report"))
    only = pd.read_parquet(RunDir(bare).no_truth_table)
    only[only["metric"] == "sparseness"].to_parquet(RunDir(bare).no_truth_table, index=False)
    RunDir(bare).no_truth_curves.unlink()  # no curves table: no curves section, figure or error
    index = build_report(bare)
    html = (index.parent / "no_truth.html").read_text(encoding="utf-8")
    present = [sid for sid in re.findall(r'<section id="([^"]+)"', html) if sid.startswith("no-truth-")]
    assert present == ["no-truth-complexity"]  # a family without rows gets no section
    assert not (index.parent / "figures" / "no_truth_curves.png").exists()
    RunDir(bare).no_truth_table.unlink()
    assert write_metric_agreement(bare) is None and not RunDir(bare).agreement_table.exists()
    (index.parent / "no_truth.html").unlink()
    html = build_report(bare).read_text(encoding="utf-8")
    assert _section(html, "no-truth") == "" and "no_truth.html" not in html
    assert not (index.parent / "no_truth.html").exists()
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


# --- the no-truth page: curves, directions, citations, undefined values ---------------------------------------------

def test_curve_bands_are_the_mean_and_bootstrap_interval_at_every_step(scored):
    from heatlab.report.no_truth import curve_bands, load_no_truth_curves

    run, _, html, _ = scored
    table = load_no_truth_curves(run)
    for metric in ("deletion", "insertion"):
        bands = curve_bands(table, metric, list(METHODS))
        assert list(bands) == list(METHODS)
        for method, (fraction, band) in bands.items():
            rows = table[(table["metric"] == metric) & (table["method"] == method)]
            np.testing.assert_allclose(fraction, [0, 0.25, 0.5, 0.75, 1.0])
            for step, g in rows.groupby("step"):  # the slow reference: the report's interval of one step's values
                iv = mean_interval([b["value"].to_numpy() for _, b in g.sort_values("sample").groupby("branch")])
                np.testing.assert_allclose([band.estimate[step], band.low[step], band.high[step]],
                                           [iv.estimate, iv.low, iv.high], rtol=1e-12, atol=1e-12)
            assert band.kind == iv.kind and band.dropped == 0 and band.samples == 20
    text = _text(_section(html, "no-truth-curves"))
    assert "bootstrap over samples within branches" in text and "Random" in text and "dashed" in text
    assert (run / "report" / "figures" / "no_truth_curves.png").is_file()
    assert 'src="figures/no_truth_curves.png"' in _section(html, "no-truth-curves")


def _metrics_of(section: str, table: pd.DataFrame, agreement: pd.DataFrame) -> list[str]:
    if section == "no-truth-curves":
        return ["deletion", "insertion"]
    if section == "sanity":
        return ["mprt"]
    if section == "metric-agreement":
        return list(dict.fromkeys(agreement["metric"]))
    from heatlab.score.agreement import metric_entry

    return [m for m in dict.fromkeys(table["metric"]) if metric_entry(m)["family"] == section.removeprefix("no-truth-")]


def test_every_no_truth_table_and_figure_states_each_metrics_direction_and_citation(scored):
    from heatlab.score.agreement import metric_entry

    run, table, html, _ = scored
    agreement = pd.read_parquet(RunDir(run).agreement_table)
    sections = re.findall(r'<section id="([^"]+)"', html)
    assert sections == ["no-truth-faithfulness", "no-truth-curves", "no-truth-randomisation", "no-truth-robustness",
                        "no-truth-complexity", "no-truth-axiomatic", "sanity", "metric-agreement"]
    for sid in sections:
        fragment = _section(html, sid)
        assert "<table" in fragment or "<figure" in fragment
        text = _text(fragment)
        for metric in _metrics_of(sid, table, agreement):
            entry = metric_entry(metric)
            direction = "higher is better" if entry["higher_is_better"] else "lower is better"
            assert f"{metric} ({direction}" in text, (sid, metric)
            assert entry["source"] and entry["source"] in text, (sid, metric, entry["source"])
        for caption in re.findall(r"<figcaption>(.*?)</figcaption>", fragment, re.S):
            assert "better" in _text(caption), (sid, caption)  # a figure's caption names the directions too


class _Lines:
    """The y data of every line, the limits and the title of every axes of the figures saved while active."""

    def titled(self, title: str) -> dict:
        """The one figure with an axes titled ``title``."""
        (figure,) = [f for f in self.saved if title in f["titles"]]
        return figure

    def __enter__(self):
        from matplotlib.figure import Figure

        self.saved, original = [], Figure.savefig

        def savefig(fig, path, *args, **kwargs):
            self.saved.append({"lines": [(ln.get_label(), ln.get_linestyle(), np.asarray(ln.get_ydata(), float))
                                          for a in fig.axes for ln in a.get_lines()],
                                "limits": [(*a.get_xlim(), *a.get_ylim()) for a in fig.axes],
                                "titles": [a.get_title() for a in fig.axes]})
            return original(fig, path, *args, **kwargs)

        self._patch = pytest.MonkeyPatch()
        self._patch.setattr(Figure, "savefig", savefig)
        return self

    def __exit__(self, *exc):
        self._patch.undo()


def test_undefined_values_are_counted_and_said_never_plotted(scored, tmp_path):
    run, _, _, _ = scored
    bad = tmp_path / "run"
    shutil.copytree(run, bad, ignore=shutil.ignore_patterns("report"))
    table = pd.read_parquet(RunDir(bad).no_truth_table)
    sens = table.index[(table["metric"] == "avg_sensitivity") & (table["method"] == "Saliency")]
    table.loc[sens[:3], "value"] = np.inf  # avg-sensitivity of an all-zero heatmap: a ratio over zero
    table.loc[sens[3:4], "value"] = np.nan
    table.to_parquet(RunDir(bad).no_truth_table, index=False)
    curves = pd.read_parquet(RunDir(bad).no_truth_curves)
    rows = curves.index[(curves["metric"] == "deletion") & (curves["method"] == "Saliency") & (curves["sample"] < 2)]
    curves.loc[rows[[0, 7]], "value"] = [np.inf, np.nan]  # samples 0 and 1 each get one undefined step
    curves.to_parquet(RunDir(bad).no_truth_curves, index=False)
    with _Lines() as figures:
        index = build_report(bad)
    html = (index.parent / "no_truth.html").read_text(encoding="utf-8")
    values = table.loc[table["metric"] == "avg_sensitivity", "value"]
    n_inf, n_nan = int(np.isinf(values).sum()), int(values.isna().sum())
    assert n_inf >= 3 and n_nan >= 1
    assert f"{n_inf + n_nan} of the {len(values)} values of avg_sensitivity ({n_inf} infinite, {n_nan} NaN)" in _text(
        _section(html, "no-truth-robustness"))
    assert "2 of 20 curves of deletion/Saliency" in _text(_section(html, "no-truth-curves"))
    robustness, drawn = figures.titled("avg_sensitivity (lower is better)"), figures.titled("deletion (lower is better)")
    for figure in (robustness, drawn):
        assert np.isfinite(np.array(figure["limits"])).all(), figure["titles"]
        assert all(np.isfinite(y).all() for _, _, y in figure["lines"]), figure["titles"]
    kept = curves[(curves["metric"] == "deletion") & (curves["method"] == "Saliency") & (curves["sample"] >= 2)]
    saliency = next(y for label, _, y in drawn["lines"] if label == "Saliency")  # the deletion panel's
    np.testing.assert_allclose(saliency, kept.groupby("step")["value"].mean().to_numpy())
    random = [style for label, style, _ in drawn["lines"] if label == "Random"]
    assert random == ["--", "--"]  # the floor, dashed, in both panels
    assert drawn["titles"][:2] == ["deletion (lower is better)", "insertion (higher is better)"]
