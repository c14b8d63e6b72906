"""Every value a run's stage JSON hands the report reaches the page as text, numbers included.

A run handed over by someone else may hold markup where a number belongs (issue 19). The pipeline
builds a tiny run with every stage the report reads; then markup is planted into each field the
pages print from ``lrp-filters.json``, ``lrp-study.json``, ``mixer.json``, ``gax/gax.json``,
``evaluate.json`` and ``model.json``, and the report and the GAX viewer are built from it. Each payload
names its field, so a failure says which one reached the page as markup.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from heatlab.report.gax_pages import build_gax_viewer
from heatlab.report.html import build_report

try:
    from test_report import add_lrp, make_run
    from browser import needs_chromium, open_page
except ImportError:  # tests/ imported as a package
    from tests.test_report import add_lrp, make_run
    from tests.browser import needs_chromium, open_page

#: (file under the run, path of keys to the field) for every number the pages print from stage JSON.
PLANTED = (
    ("lrp-filters.json", ("samples",)),
    ("lrp-study/lrp-study.json", ("iterations",)),
    ("lrp-study/lrp-study.json", ("settings", "every")),
    ("lrp-study/lrp-study.json", ("settings", "eval_samples")),
    ("mixer.json", ("train_samples",)),
    ("mixer.json", ("test_samples",)),
    ("mixer.json", ("n_steps",)),
    ("mixer.json", ("seeds",)),
    ("gax/gax.json", ("max_steps",)),
    ("gax/gax.json", ("lr",)),
    ("gax/gax.json", ("snapshot_every",)),
    ("evaluate.json", ("samples",)),
    ("model/branch-00/model.json", ("iterations",)),
)
#: The fields the GAX viewer prints (the others are on index.html).
ON_GAX_PAGE = {"gax/gax.json"}


def payload(file: str, keys: tuple[str, ...]) -> str:
    return f"<img src=x onerror=alert('{file}:{'.'.join(keys)}')>"


def plant(run: Path) -> None:
    """Write each field's payload into its JSON file (as a hostile sender would)."""
    for file, keys in PLANTED:
        path = run / file
        record = json.loads(path.read_text(encoding="utf-8"))
        target = record
        for key in keys[:-1]:
            target = target[key]
        assert keys[-1] in target, (file, keys)  # the field exists, so the test plants where the page reads
        target[keys[-1]] = payload(file, keys)
        path.write_text(json.dumps(record), encoding="utf-8")


@pytest.fixture(scope="module")
def hostile_pages(tmp_path_factory, tiny_run):
    run = add_lrp(make_run(tmp_path_factory.mktemp("hostile"), tiny_run, methods=("Saliency",)))
    plant(run)
    index = build_report(run)
    return index, build_gax_viewer(run)


def test_no_planted_markup_reaches_the_pages_raw(hostile_pages):
    index, gax = hostile_pages
    pages = {"index": index.read_text(encoding="utf-8"), "gax": gax.read_text(encoding="utf-8")}
    for file, keys in PLANTED:
        text = pages["gax" if file in ON_GAX_PAGE else "index"]
        raw = payload(file, keys)
        assert all(raw not in page for page in pages.values()), f"{file} {keys} reached a page as markup"
        assert html.escape(raw, quote=True).replace("&#x27;", "&#39;") in text, f"{file} {keys} is not on the page"


@needs_chromium
@pytest.mark.parametrize("which", ["index", "gax"])
def test_planted_markup_fires_nothing_in_chromium_and_shows_as_text(hostile_pages, which):
    index, gax = hostile_pages
    with open_page(index if which == "index" else gax) as (page, problems):
        if which == "gax":
            page.wait_for_function("document.body.dataset.ready === '1'")
        text = page.inner_text("body")
        planted_imgs = page.evaluate("Array.from(document.images).filter(i => i.getAttribute('src') === 'x').length")
    assert problems.dialogs == [] and problems.errors == [], problems
    assert planted_imgs == 0
    for file, keys in PLANTED:
        if (file in ON_GAX_PAGE) == (which == "gax"):
            assert payload(file, keys) in text, f"{file} {keys} is not shown as text"


def test_render_escapes_values_and_formats_numbers():
    from heatlab.report.templates import render

    out = render("{{ a }} {{ b|num }} {{ c|num }} {{ d|g }} {{ e|g('.3g') }} {{ f|pct }} {{ a|num }}",
                 a="<b>", b=1 / 3, c=float("nan"), d=48.0, e=0.123456, f=0.25)
    assert out == "&lt;b&gt; 0.333 – 48 0.123 25% &lt;b&gt;"
