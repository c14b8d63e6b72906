"""Every value a run's stage JSON hands the report reaches the page as text, or is refused.

A run handed over by someone else may hold markup where a number or a name belongs (issue 19). The
pipeline builds a tiny run with every stage the report reads. Markup planted where a stage's schema
wants a number (``lrp-filters.json``, ``lrp-study.json``, ``mixer.json``, ``gax/gax.json``,
``evaluate.json``) is refused when read: one sentence naming the file, and no page written. Markup
planted into the text fields and names the pages print (``lrp-filters.json``, ``lrp-study.json``,
``mixer.json`` and ``model.json`` fields, a filter's name, a method's name in the AX tables) must
reach the report as text; the GAX viewer is built from the same run. Each payload names its field, so
a failure says which one reached the page as markup. A last test keeps HTML out of Python strings:
every fragment is a template rendered by :mod:`heatlab.report.templates`.
"""

from __future__ import annotations

import ast
import html
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import heatlab.report
from heatlab.errors import HeatlabError
from heatlab.report.gax_pages import build_gax_viewer
from heatlab.report.html import build_report

try:
    from test_report import add_lrp, make_run
    from browser import needs_chromium, open_page
except ImportError:  # tests/ imported as a package
    from tests.test_report import add_lrp, make_run
    from tests.browser import needs_chromium, open_page

#: (file under the run, path of keys to the field) for every number the pages print from stage JSON
#: that the stage's schema checks: markup there is refused when the file is read.
REFUSED = (
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
)
#: (file under the run, path of keys to the field) for the fields the report prints as they are: the
#: names and settings (text) of the LRP-filters, LRP-study and Mixer sections, and model.json's count.
PLANTED = (
    ("model/branch-00/model.json", ("iterations",)),
    ("lrp-filters.json", ("composite",)),
    ("lrp-filters.json", ("split",)),
    ("lrp-study/lrp-study.json", ("settings", "model")),
    ("lrp-study/lrp-study.json", ("settings", "data")),
    ("lrp-study/lrp-study.json", ("settings", "composite")),
    ("lrp-study/lrp-study.json", ("settings", "start")),
    ("mixer.json", ("architecture",)),
    ("mixer.json", ("branch",)),
    ("mixer.json", ("interval",)),
)
#: (file under the run, what is renamed): names that are keys or table values, renamed by :func:`rename`.
RENAMED = (
    ("lrp-filters.json", ("filter",)),  # the filter c0.2 (its effects, verdicts and means)
    ("tables/co.parquet", ("method",)),  # the method Saliency in both AX tables (AX section and headline)
)


def payload(file: str, keys: tuple[str, ...]) -> str:
    return f"<img src=x onerror=alert('{file}:{'.'.join(keys)}')>"


def plant(run: Path, fields) -> None:
    """Write each field's payload into its JSON file (as a hostile sender would)."""
    for file, keys in fields:
        path = run / file
        record = json.loads(path.read_text(encoding="utf-8"))
        target = record
        for key in keys[:-1]:
            target = target[key]
        assert keys[-1] in target, (file, keys)  # the field exists, so the test plants where the page reads
        target[keys[-1]] = payload(file, keys)
        path.write_text(json.dumps(record), encoding="utf-8")


def rename(run: Path) -> None:
    """Rename the filter c0.2 of ``lrp-filters.json`` and the method Saliency of the AX tables to their payloads."""
    name = payload(*RENAMED[0])
    path = run / "lrp-filters.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert "c0.2" in record["filters"] and "c0.2" in record["effects"]
    record["filters"] = [name if f == "c0.2" else f for f in record["filters"]]
    for key in ("effects", "verdicts"):
        record[key][name] = record[key].pop("c0.2")
    record["means"] = {k.replace("/c0.2", f"/{name}"): v for k, v in record["means"].items()}
    path.write_text(json.dumps(record), encoding="utf-8")
    for table in ("co", "co_gap"):
        path = run / "tables" / f"{table}.parquet"
        df = pd.read_parquet(path)
        assert "Saliency" in set(df["method"])
        df["method"] = df["method"].replace("Saliency", payload(*RENAMED[1]))
        df.to_parquet(path, index=False)


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory, tiny_run):
    """A run through every stage the report reads, left untouched (tests copy it)."""
    return add_lrp(make_run(tmp_path_factory.mktemp("pristine"), tiny_run, methods=("Saliency",)))


@pytest.fixture(scope="module")
def hostile_pages(tmp_path_factory, pristine_run):
    run = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(pristine_run, run)
    plant(run, PLANTED)
    rename(run)
    index = build_report(run)
    return index, build_gax_viewer(run)


def test_markup_where_a_number_belongs_is_refused_before_a_page_is_written(tmp_path, pristine_run):
    run = tmp_path / "run"
    shutil.copytree(pristine_run, run, ignore=shutil.ignore_patterns("report"))
    for file, keys in REFUSED:
        original = (run / file).read_text(encoding="utf-8")
        plant(run, [(file, keys)])
        build = build_gax_viewer if file.startswith("gax/") else build_report
        with pytest.raises(HeatlabError) as err:
            build(run)
        assert str(run / file) in str(err.value) and ".".join(keys) in str(err.value), (file, keys, str(err.value))
        assert "\n" not in str(err.value)
        assert not any((run / "report" / page).exists() for page in ("index.html", "gax.html")), (file, keys)
        (run / file).write_text(original, encoding="utf-8")


def test_no_planted_markup_reaches_the_pages_raw(hostile_pages):
    index, gax = hostile_pages
    pages = {"index": index.read_text(encoding="utf-8"), "gax": gax.read_text(encoding="utf-8")}
    for file, keys in PLANTED + RENAMED:
        raw = payload(file, keys)
        assert all(raw not in page for page in pages.values()), f"{file} {keys} reached a page as markup"
        assert html.escape(raw, quote=True).replace("&#x27;", "&#39;") in pages["index"], f"{file} {keys} is not on the page"


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
    if which == "index":
        for file, keys in PLANTED + RENAMED:
            assert payload(file, keys) in text, f"{file} {keys} is not shown as text"


def test_render_escapes_values_and_formats_numbers():
    from heatlab.report.templates import render

    out = render("{{ a }} {{ b|num }} {{ c|num }} {{ d|g }} {{ e|g('.3g') }} {{ f|pct }} {{ a|num }}",
                 a="<b>", b=1 / 3, c=float("nan"), d=48.0, e=0.123456, f=0.25)
    assert out == "&lt;b&gt; 0.333 – 48 0.123 25% &lt;b&gt;"

#: A tag's start inside a Python string: "<p", "</b", "<!".
TAG = re.compile(r"<[a-zA-Z/!]")
#: "path relative to heatlab/report:first line of the expression" -> why it must stay built in Python. Empty:
#: every fragment is a template.
ALLOWED: dict[str, str] = {}


def _text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _builds_html(node: ast.AST) -> bool:
    """Whether ``node`` formats values into a string holding a tag: an f-string, ``"...".format(...)``,
    ``"..." % ...`` or ``"..." + value``."""
    if isinstance(node, ast.JoinedStr):
        return any(TAG.search(_text(v) or "") for v in node.values)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return bool(TAG.search(_text(node.func.value) or ""))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        sides = [_text(node.left), _text(node.right)]
        return None in sides and any(s is not None and TAG.search(s) for s in sides)
    return False


def test_no_report_module_builds_html_outside_templates():
    root = Path(heatlab.report.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if _builds_html(node):
                where = f"{path.relative_to(root).as_posix()}:{ast.get_source_segment(source, node).splitlines()[0]}"
                if where not in ALLOWED:
                    found.append(f"{where} (line {node.lineno})")
    assert found == [], "HTML built with Python string formatting (render a template instead):\n" + "\n".join(found)
