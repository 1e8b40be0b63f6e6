"""Launching Debian's Chromium through Playwright (never `playwright install`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("FREEZE_WIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def require_chromium() -> None:
    """Fail clearly (or skip when explicitly asked) if the browser is missing."""
    if os.path.exists(CHROMIUM) or shutil.which(CHROMIUM):
        return
    if os.environ.get("FREEZE_WIDGETS_SKIP_BROWSER") == "1":
        pytest.skip("FREEZE_WIDGETS_SKIP_BROWSER=1 and no Chromium")
    pytest.fail(
        f"Chromium not found at {CHROMIUM}: run `bash tools/dev.sh test`, which installs Debian's "
        "chromium, or set FREEZE_WIDGETS_SKIP_BROWSER=1 to skip browser tests"
    )


@contextmanager
def launch_chromium() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
