"""The scorer's web page in a real headless Chromium (Debian's package), driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("PROPENSITY_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (Debian package chromium) and missing")
        pytest.skip("no Chromium on this machine: apt-get install chromium")
    return found


@contextmanager
def ui_page(url: str, key: str, height: int) -> Iterator[tuple[Any, list[str]]]:
    """`/ui` opened with the key filled in, and the console errors the page raises."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/ui")
            page.fill("#key", key)
            yield page, errors
        finally:
            browser.close()


def keep_screenshot(page: Any, path: Path, name: str,
                    clip: dict[str, float] | None = None) -> None:
    """The full page (or its `clip`, in page coordinates) to `path`, and to
    PROPENSITY_SCREENSHOTS/name when set (for the docs)."""
    page.screenshot(path=str(path), full_page=True, clip=clip)
    target = os.environ.get("PROPENSITY_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
