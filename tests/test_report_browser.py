"""The report as a reader meets it: Debian's Chromium, driven by Playwright, on a file:// URL.

Never runs `playwright install`; skips when Chromium or Playwright is missing.
"""

from __future__ import annotations

from heatlab.report.html import DEFAULT_SECTIONS, build_report

try:
    from test_report import full_report, make_wine_run  # noqa: F401 (full_report is a fixture)
except ImportError:  # tests/ imported as a package
    from tests.test_report import full_report, make_wine_run  # noqa: F401

try:
    from browser import needs_chromium, open_page
except ImportError:
    from tests.browser import needs_chromium, open_page

pytestmark = needs_chromium

#: Every table wider than its box (or a box wider than its own width): [section, table width, box width].
TABLE_OVERFLOW = """Array.from(document.querySelectorAll('table')).flatMap(t => {
  const box = t.parentElement;
  return (t.scrollWidth > box.clientWidth || box.scrollWidth > box.clientWidth)
    ? [[t.closest('section') ? t.closest('section').id : '', t.scrollWidth, box.clientWidth]] : [];
})"""


def test_report_page_loads_cleanly_in_chromium(tmp_path, full_report):
    page_path = full_report[1]
    with open_page(page_path) as (page, problems):
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
        )
        assert len(images) >= 5
        broken = [src for src, complete, width in images if not complete or width == 0]
        assert broken == []
        # Nothing is wider than the window, and no table needs its scroll box at 1280 px.
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        assert page.evaluate(TABLE_OVERFLOW) == []
        # The headline is the first thing on the page, in the first screen, with its warning.
        top = page.locator("#headline").bounding_box()
        assert top is not None and top["y"] < 300
        assert page.locator("#headline .warn").is_visible()
        assert page.locator("#headline table tbody tr").count() >= 3
        titles = page.locator("section > h2").all_inner_texts()
        assert titles == [s.title for s in DEFAULT_SECTIONS if s.id != "features"]  # bar charts are for tables
        assert page.locator("script").count() == 0
        # The navigation reaches a section further down the page.
        page.click("nav a[href='#localisation']")
        assert page.evaluate("location.hash") == "#localisation"
        assert page.evaluate("window.scrollY") > 0
        shot = page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert problems.none(), problems
    assert len(shot) > 10_000


#: Text and images that stick out of their parent box, or text clipped inside its own box.
OVERFLOWING = """Array.from(document.querySelectorAll(
    'header h1, header p, nav a, main h2, main h3, main p, main figcaption, main figure img, main summary')).flatMap(e => {
  const r = e.getBoundingClientRect(), p = e.parentElement.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) return [];  // folded away (closed <details>)
  const out = r.left < p.left - 1 || r.right > p.right + 1 || e.scrollWidth > e.clientWidth + 1;
  return out ? [[e.tagName, (e.getAttribute('src') || e.textContent).slice(0, 60), Math.round(r.right), Math.round(p.right)]] : [];
})"""


def test_index_page_reads_in_a_minute_with_a_sticky_table_of_contents(full_report):
    """At 1400 px: the whole index, no-truth summary included, is at most 12,000 px tall, a table of contents that
    links every section (and the gallery and no-truth pages) stays in view after scrolling, and no heading, caption
    or figure sticks out of its box; the gallery and the no-truth page are one click away and pass the same checks."""
    with open_page(full_report[1], width=1400, height=900) as (page, problems):
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height <= 12_000, height
        ids = page.evaluate("Array.from(document.querySelectorAll('main > section')).map(s => s.id)")
        links = page.evaluate("Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'))")
        own = {"gallery": ["gallery.html"], "no-truth": ["no_truth.html"]}  # a page of its own follows its section's link
        assert len(ids) >= 12 and links == [href for sid in ids for href in (f"#{sid}", *own.get(sid, []))]
        assert page.evaluate(OVERFLOWING) == []
        for y in (height // 2, height):
            page.evaluate(f"window.scrollTo(0, {y})")
            box = page.locator("nav").bounding_box()
            assert box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 200) <= 900, (y, box)
        page.click(f"nav a[href='#{ids[1]}']")  # from the bottom of the page, back up through the contents
        assert page.evaluate(f"document.getElementById('{ids[1]}').getBoundingClientRect().top") < 100
        page.click("nav a[href='gallery.html']")  # from the sticky contents, near the top of the index
        page.wait_for_load_state("load")
        assert page.url.endswith("/report/gallery.html")
        images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert len(images) >= 5 and all(images)
        assert page.evaluate(OVERFLOWING) == []
        page.go_back()
        page.wait_for_load_state("load")
        page.evaluate(f"window.scrollTo(0, {height})")
        page.click("nav a[href='no_truth.html']")  # from the sticky contents, at the bottom of the index
        page.wait_for_load_state("load")
        assert page.url.endswith("/report/no_truth.html")
        assert _no_truth_page_is_clean(page) == ["no-truth-faithfulness", "no-truth-randomisation", "no-truth-robustness",
                                                 "no-truth-complexity", "no-truth-axiomatic", "sanity", "metric-agreement"]
    assert problems.none(), problems


def _no_truth_page_is_clean(page) -> list[str]:
    """Check the open no-truth page: every figure loaded, nothing wider than the window, no table or text sticking
    out of its box, contents that link each section and back to the index; returns its section ids."""
    images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert images and all(images)
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    assert page.evaluate(TABLE_OVERFLOW) == []
    assert page.evaluate(OVERFLOWING) == []
    ids = page.evaluate("Array.from(document.querySelectorAll('main > section')).map(s => s.id)")
    links = page.evaluate("Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'))")
    assert links == ["index.html", *(f"#{sid}" for sid in ids)]
    return ids


def test_table_report_and_its_gax_page_load_cleanly_in_chromium(tmp_path, tiny_wine_run):
    page_path = build_report(make_wine_run(tmp_path, tiny_wine_run))
    with open_page(page_path) as (page, problems):
        titles = page.locator("section > h2").all_inner_texts()
        shown = ("headline", "overview", "training", "features", "no-truth", "ax", "gax")
        assert titles == [s.title for s in DEFAULT_SECTIONS if s.id in shown]
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert images and all(complete and width > 0 for _, complete, width in images)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        assert page.evaluate(TABLE_OVERFLOW) == []
        page.click("#gax a[href='gax.html']")
        page.wait_for_load_state("load")
        assert page.url.endswith("/report/gax.html")
        assert page.locator("table tbody tr").count() >= 1
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        shot = page.screenshot(path=str(tmp_path / "wine.png"), full_page=True)
        page.go_back()
        page.wait_for_load_state("load")
        page.click("#no-truth a[href='no_truth.html']")
        page.wait_for_load_state("load")
        # a table gets the fast no-truth set by default: deletion and insertion (with their curves), sparseness and complexity
        assert _no_truth_page_is_clean(page) == ["no-truth-faithfulness", "no-truth-curves", "no-truth-complexity"]
    assert problems.none(), problems
    assert len(shot) > 10_000
