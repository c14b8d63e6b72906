"""The GAX viewer as a reader meets it: Debian's Chromium, driven by Playwright, on a file:// URL.

Never runs `playwright install`; skips when Chromium or Playwright is missing.
"""

from __future__ import annotations

import shutil

from heatlab.report.gax_pages import build_gax_viewer
from heatlab.run.gax import gax_run

try:
    from browser import needs_chromium, open_page
except ImportError:
    from tests.browser import needs_chromium, open_page

pytestmark = needs_chromium

SNAPSHOT = """(k) => {
  const item = document.querySelectorAll('.gax-item')[k];
  const canvas = item.querySelector('canvas.gax-canvas');
  return {png: canvas.toDataURL(), w: canvas.width, h: canvas.height,
          step: item.querySelector('.gax-step').textContent, co: item.querySelector('.gax-co').textContent};
}"""

PIXEL = """([k, x, y]) => {
  const c = document.querySelectorAll('.gax-item')[k].querySelector('canvas.gax-canvas');
  return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data);
}"""


def test_viewer_slider_changes_picture_and_co(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    gax_run(run, first_n_correct=2, target_co=1e9, max_steps=6, snapshot_every=2)
    page_path = build_gax_viewer(run)
    with open_page(page_path) as (page, problems):
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        assert page.locator(".gax-item").count() >= 1
        slider = page.locator("input.gax-slider").first
        assert slider.get_attribute("max") == "3"  # steps 0, 2, 4, 6
        last = page.evaluate(SNAPSHOT, 0)
        assert last["step"].startswith("step 6") and last["co"].startswith("CO ")
        assert last["w"] > 7 * 128 and last["h"] > 128  # image + 3 h + 3 Δh panels, enlarged
        # Pixel (70, 80) lies in the second panel (h of R): a blue-white-red colour, opaque.
        assert page.evaluate(PIXEL, [0, 70, 80])[3] == 255
        slider.evaluate("(el) => { el.value = 0; el.dispatchEvent(new Event('input')); }")
        first = page.evaluate(SNAPSHOT, 0)
        assert first["step"].startswith("step 0") and "no change" in first["step"]
        assert first["png"] != last["png"] and first["co"] != last["co"]
        # At step 0 the Δh panels are blank (white); the keyboard moves the slider too.
        dx = 4 * (128 + 6) + 60
        assert page.evaluate(PIXEL, [0, dx, 80])[:3] == [255, 255, 255]
        slider.focus()
        page.keyboard.press("ArrowRight")
        second = page.evaluate(SNAPSHOT, 0)
        assert second["step"].startswith("step 2") and second["png"] != first["png"]
        assert page.evaluate(PIXEL, [0, dx, 80])[:3] != [255, 255, 255]
        shot = page.screenshot(path=str(tmp_path / "gax.png"), full_page=True)
    assert problems.none(), problems
    assert len(shot) > 10_000


def test_viewer_of_a_table_run_is_a_results_page_without_errors(tiny_wine_run, tmp_path):
    run = shutil.copytree(tiny_wine_run, tmp_path / "wine")
    gax_run(run, first_n_correct=3, max_steps=4, snapshot_every=2)
    page_path = build_gax_viewer(run)  # N×F results: no slider, a bar chart and the final h per sample
    with open_page(page_path) as (page, problems):
        assert page.locator("input.gax-slider").count() == 0
        assert page.locator("table tbody tr").count() == 3
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert page.evaluate("document.images.length") == 1
        shot = page.screenshot(path=str(tmp_path / "gax-table.png"), full_page=True)
    assert problems.none(), problems
    assert len(shot) > 5_000
