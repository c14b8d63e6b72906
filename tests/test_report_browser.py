"""The report as a reader meets it: Debian's Chromium, driven by Playwright, on a file:// URL.

Never runs `playwright install`; skips when Chromium or Playwright is missing.
"""

from __future__ import annotations

from heatlab.report.html import DEFAULT_SECTIONS, build_report

try:
    from test_report import add_lrp, make_run, make_wine_run
except ImportError:  # tests/ imported as a package
    from tests.test_report import add_lrp, make_run, make_wine_run

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


def test_report_page_loads_cleanly_in_chromium(tmp_path, tiny_run):
    page_path = build_report(add_lrp(make_run(tmp_path, tiny_run, no_truth=True)))
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


def test_table_report_and_its_gax_page_load_cleanly_in_chromium(tmp_path, tiny_wine_run):
    page_path = build_report(make_wine_run(tmp_path, tiny_wine_run))
    with open_page(page_path) as (page, problems):
        titles = page.locator("section > h2").all_inner_texts()
        assert titles == [s.title for s in DEFAULT_SECTIONS if s.id in ("headline", "overview", "training", "features", "ax", "gax")]
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
    assert problems.none(), problems
    assert len(shot) > 10_000
