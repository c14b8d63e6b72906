"""Section "Explanation-guided masking (paper 003)": C(x) against C(x ⊙ M) per attribution setting.

Needs ``mixer.json`` (written by ``heatlab mixer``): per setting the accuracy of C(x), the mean
accuracy of C(x ⊙ M) over the seeds with its 95% interval; the figures come from its gallery.
"""

from __future__ import annotations

from heatlab.report.mixer_figures import SETTING_LABELS, mixer_bars_figure, mixer_gallery_figure, ordered_settings
from heatlab.report.page import ReportContext, Section, esc, fmt, table_html
from heatlab.run.rundir import RunDir


def label_share(settings: dict) -> str:
    """One sentence: how much of the true-class gain a deployed system (no test label) keeps."""
    true = settings.get("true-class")
    usable = {k: v for k, v in settings.items() if k not in ("true-class", "none")}
    if true is None or not usable:
        return ""
    best_name, best = max(usable.items(), key=lambda kv: kv[1]["gain"])
    gain, kept = true["gain"], best["gain"]
    if gain <= 0:
        return (f"The true-class attribution did not raise accuracy here ({fmt(100 * gain)} points), so there is no "
                "label-driven gain to split.")
    share = max(0.0, min(1.0, 1 - kept / gain))
    return (f"With the true-class attribution (the paper's setting) C(x⊙M) gains <b>{fmt(100 * gain)} points</b>; "
            f"without the test label the best setting ({esc(best_name)}) gains {fmt(100 * kept)}. So "
            f"<b>{100 * share:.0f}% of the paper's gain needs the test-time label</b>: a true-class attribution "
            "carries the label into the mask."
            + (f" A Mixer given no attribution at all gains {fmt(100 * settings['none']['gain'])} points: that much "
               "comes from the extra network, not from the explanation." if "none" in settings else ""))


def mixer_section(ctx: ReportContext) -> str:
    s = RunDir(ctx.run_dir).stage_summary("mixer") or {}
    settings = s.get("settings", {})
    if not settings:
        return ""
    rows = []
    for name in ordered_settings(s):
        r = settings[name]
        rows.append([esc(name), esc(SETTING_LABELS.get(name, name).replace("\n", " ")), fmt(r["accuracy_plain"]),
                     fmt(r["accuracy_masked"]), f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
                     f"{100 * r['gain']:+.1f}", fmt(r["mask_mean"])])
    config = s.get("config", {})
    bars = mixer_bars_figure(ctx.run_dir, ctx.figure_path("mixer_accuracy.png"))
    gallery = mixer_gallery_figure(ctx.run_dir, ctx.figure_path("mixer_gallery.png"))
    return (
        f"<p>Paper 003 feeds a frozen classifier C with x⊙M, where a Mixer ({esc(s.get('architecture'))}) builds the "
        f"mask M from x and its Integrated-Gradients attribution A(x, C) ({esc(s.get('n_steps'))} steps, zero baseline). "
        f"C is {esc(s.get('branch'))}; the Mixer trained on {esc(s.get('train_samples'))} training samples "
        f"({fmt(100 * config.get('holdout', 0.3))}% held out for early stopping) and was scored on "
        f"{esc(s.get('test_samples'))} test samples, {esc(s.get('seeds'))} seed(s) per setting (mean and 95% t-interval).</p>"
        f"<p class=\"rank\">{label_share(settings)}</p>"
        + "<div class=\"scroll\">" + table_html(
            ["setting", "A(x, C) is IG for", "C(x)", "C(x⊙M)", "95% interval", "gain (points)", "mean M"], rows) + "</div>"
        + ctx.img(bars, "Accuracy of C(x) and C(x⊙M) per setting",
                  "Test accuracy of C alone and of C on the masked input per attribution setting; error bars: 95% "
                  "t-interval over the seeds. Paper 003, Table 2 (true class): Fashion-MNIST 87.3 → 99.9%, CIFAR-10 "
                  "85.7 → 87.6%, STL-10 66.3 → 68.6%.")
        + ctx.img(gallery, "Mixer gallery",
                  "Test samples: x, then per setting the attribution A (/ max|A|), the mask M and x⊙M, with C's "
                  "prediction on each (first seed's Mixer).")
    )


SECTION = Section("mixer", "Explanation-guided masking (paper 003)", mixer_section, needs=("mixer",))
