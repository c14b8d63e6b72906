"""Open a local page in Debian's Chromium through Playwright (DESIGN §7), collecting every error.

Never runs `playwright install`: the tests that use this skip when Chromium or Playwright is missing.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = shutil.which("chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (apt-get install -y chromium)")


@dataclass
class Problems:
    """What went wrong while the page was open: must all stay empty."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def none(self) -> bool:
        return self.errors == [] and self.dialogs == [] and self.failed == []


@contextlib.contextmanager
def open_page(path: Path, *, width: int = 1280, height: int = 900) -> Iterator[tuple[object, Problems]]:
    """Yield ``(page, problems)`` for ``path`` loaded from its file:// URL; the browser closes after."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed (pip install playwright)")
    problems = Problems()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("pageerror", lambda exc: problems.errors.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
            page.on("requestfailed", lambda req: problems.failed.append(req.url))
            page.on("dialog", lambda d: (problems.dialogs.append(d.message), d.dismiss()))
            page.goto(Path(path).as_uri(), wait_until="load")
            yield page, problems
        finally:
            browser.close()
