"""Section "Explanation-guided masking (paper 003)": C(x) against C(x ⊙ M) per attribution setting.

Needs ``mixer.json`` (written by ``heatlab mixer``): per setting the accuracy of C(x), the mean
accuracy of C(x ⊙ M) over seeds and test samples with its 95% bootstrap interval, the gain with
its interval, and for the label-informed true-class setting the leak test; the figures come from
its gallery.
"""

from __future__ import annotations

from markupsafe import Markup

from heatlab.improve.mixer import setting_label
from heatlab.report.mixer_figures import mixer_bars_figure, mixer_gallery_figure, ordered_settings
from heatlab.report.page import ReportContext, Section, random_weights_note
from heatlab.report.templates import number, render
from heatlab.run.rundir import RunDir

#: What A(x, C) is taken for, per setting (the table's second column).
IG_FOR = {"true-class": "the test label", "predicted": "C's predicted class",
          "expected": "every class, weighted by C's probabilities", "none": "nothing (zeros: the control)"}

LABEL_SHARE = """\
{% if gain <= 0 %}
The true-class (label-informed) attribution did not raise accuracy here ({{ points(gain) }} points), so there is no \
label-driven gain to split.
{%- else %}
With the true-class attribution (the paper's setting, label-informed) C(x⊙M) gains <b>{{ points(gain) }} points</b>; \
without the test label the best setting ({{ best }}) gains {{ points(kept) }}. So <b>{{ share }}% of the paper's gain \
needs the test-time label</b>: a true-class attribution carries the label into the mask.\
{% if control is not none %} A Mixer given no attribution at all gains {{ points(control) }} points: that much comes from the \
extra network, not from the explanation.{% endif %}
{%- endif %}"""
LEAK = """\
<b>Leak test.</b> Fed the attribution of a random wrong label, the true-class (label-informed) Mixer predicts that label \
<b>{{ pct(k["wrong_share"]) }}</b> of the time (95% interval [{{ pct(k["wrong_share_low"]) }}, \
{{ pct(k["wrong_share_high"]) }}]; per seed {% for p in k["per_seed"] %}{{ p["seed"] }}: {{ pct(p["wrong_share"]) }}\
{% if not loop.last %}, {% endif %}{% endfor %}; chance 1/(K−1) = {{ pct(k["chance"]) }}, C(x) alone \
{{ pct(k["plain_wrong_share"]) }}), and the true label {{ pct(k["accuracy"]) }} [{{ pct(k["accuracy_low"]) }}, \
{{ pct(k["accuracy_high"]) }}] of the time, against {{ pct(masked) }} with the true label's attribution \
({{ k["samples"] }} test samples). \
{% if leaks %}So the mask carries the label the attribution was taken for: the true-class gain is, at least in part, \
the test label passing through the attribution.\
{% else %}Its interval reaches down to what C(x) alone does, so no leak of the label is measured here.{% endif %}"""
TEMPLATE = """\
{% from "macros.html" import figure, table %}
{{ warning }}
<p>Paper 003 feeds a frozen classifier C with x⊙M, where a Mixer ({{ s.get("architecture") }}) builds the mask M from x \
and its Integrated-Gradients attribution A(x, C) ({{ s.get("n_steps") }} steps, zero baseline). C is \
{{ s.get("branch") }}; the Mixer trained on {{ s.get("train_samples") }} training samples ({{ holdout }}% held out for \
early stopping) and was scored on {{ s.get("test_samples") }} test samples, {{ s.get("seeds") }} seed(s) per setting \
(mean and 95% interval: {{ interval }}).</p>
{% for p in sentences if p %}
<p class="rank">{{ p }}</p>
{% endfor %}
{{ table(["setting", "A(x, C) is IG for", "C(x)", "C(x⊙M)", "95% interval", "gain (points) [95%]", "mean M"], rows) }}
{% call figure(bars, "Accuracy of C(x) and C(x⊙M) per setting") %}Test accuracy of C alone and of C on the masked input \
per attribution setting; error bars: 95% bootstrap interval over seeds and test samples. Paper 003, Table 2 (true class, \
label-informed): Fashion-MNIST 87.3 → 99.9%, CIFAR-10 85.7 → 87.6%, STL-10 66.3 → 68.6%.{% endcall %}
{% call figure(gallery, "Mixer gallery") %}Test samples: x, then per setting the attribution A (/ max|A|), the mask M \
and x⊙M, with C's prediction on each (first seed's Mixer).{% endcall %}
"""


def pct(value: float) -> str:
    """A share as a percentage with one decimal (0.125 -> "12.5%")."""
    return f"{100 * float(value):.1f}%"


def points(value: float, sign: str = "") -> str:
    """A share as percentage points with one decimal (``sign="+"`` always shows the sign)."""
    return format(100 * float(value), f"{sign}.1f")


def label_share(settings: dict) -> Markup | str:
    """One sentence: how much of the true-class gain a deployed system (no test label) keeps."""
    true = settings.get("true-class")
    usable = {k: v for k, v in settings.items() if k not in ("true-class", "none")}
    if true is None or not usable:
        return ""
    best_name, best = max(usable.items(), key=lambda kv: kv[1]["gain"])
    gain, kept = true["gain"], best["gain"]
    share = round(100 * max(0.0, min(1.0, 1 - kept / gain))) if gain > 0 else None
    return render(LABEL_SHARE, points=points, gain=gain, best=best_name, kept=kept, share=share,
                  control=settings["none"]["gain"] if "none" in settings else None)


def leak_sentence(settings: dict) -> Markup | str:
    """The measured leak test of the label-informed setting, or "" when it was not run."""
    r = settings.get("true-class", {})
    k = r.get("leak")
    if not k:
        return ""
    return render(LEAK, pct=pct, k=k, masked=r["accuracy_masked"], leaks=k["wrong_share_low"] > k["plain_wrong_share"])


def mixer_section(ctx: ReportContext) -> str:
    s = RunDir(ctx.run_dir).stage_summary("mixer") or {}
    settings = s.get("settings", {})
    if not settings:
        return ""
    rows = []
    for name in ordered_settings(s):
        r = settings[name]
        gain = points(r["gain"], "+")
        if "gain_low" in r:
            gain += f" [{points(r['gain_low'], '+')}, {points(r['gain_high'], '+')}]"
        rows.append([setting_label(name), IG_FOR.get(name, name), number(r["accuracy_plain"]),
                     number(r["accuracy_masked"]), f"[{number(r['ci_low'])}, {number(r['ci_high'])}]", gain,
                     number(r["mask_mean"])])
    bars = mixer_bars_figure(ctx.run_dir, ctx.figure_path("mixer_accuracy.png"))
    gallery = mixer_gallery_figure(ctx.run_dir, ctx.figure_path("mixer_gallery.png"))
    return render(TEMPLATE, s=s, warning=random_weights_note(s.get("random_weights", False), f"{s.get('branch')} of this run"), holdout=round(100 * s.get("config", {}).get("holdout", 0.3)),
                  interval=s.get("interval", "t-interval over the seeds"),
                  sentences=(label_share(settings), leak_sentence(settings)), rows=rows,
                  bars=ctx.src(bars), gallery=ctx.src(gallery))


SECTION = Section("mixer", "Explanation-guided masking (paper 003)", mixer_section, needs=("mixer",))
