"""Smoke tests in a real browser beyond JupyterLab: Notebook 7 and Voila render the quickstart's
explorer and respond to a tick (the header's trainable count falls by the ticked module's size).

Voila starts a kernel for every page request, so each test loads its page exactly once.
"""

from __future__ import annotations

import re
import time

import pytest

from .browser_harness import (
    NOTEBOOKS,
    LabSession,
    cell_errors,
    click_and_time_header,
    header_value,
    lab_browser,
    require_browser,
)

QUICKSTART = "00_quickstart.ipynb"


def _layer3_params() -> int:
    """Independent of freeze_widgets: torchvision's own resnet18 on the meta device."""
    import torch
    from torchvision.models import resnet18

    with torch.device("meta"):
        model = resnet18(weights=None)
    return sum(p.numel() for p in model.layer3.parameters())


def _tick_layer3(session: object, explorer: object) -> None:
    row = explorer.locator('.fw-tree .fw-row[data-path="layer3"]')  # type: ignore[attr-defined]
    row.wait_for(state="attached", timeout=240_000)
    check = row.locator("input.fw-check")
    was_checked = check.is_checked()
    change = click_and_time_header(session, explorer, check)  # type: ignore[arg-type]
    drop = change.before - change.after
    assert abs(drop) == _layer3_params(), f"header moved by {drop:,}"
    assert (drop > 0) != was_checked
    total = header_value(explorer, "fw-total")
    assert header_value(explorer, "fw-frozen") == total - change.after


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quickstart_explorer_in_notebook7() -> None:
    require_browser()
    with lab_browser([NOTEBOOKS / QUICKSTART], name="notebook7", app="notebook") as nb:
        page = nb.page
        page.goto(nb.url(f"/notebooks/{QUICKSTART}"), wait_until="domcontentloaded")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="attached", timeout=120_000)
        _run_all_from_menu(page)
        page.locator(".fw-explorer").first.wait_for(state="attached", timeout=240_000)
        _wait_cells_numbered(nb, timeout_s=300)  # a busy kernel answers the tick late
        _tick_layer3_in_explorer(nb, "notebook7-ticked")


def _tick_layer3_in_explorer(session: LabSession, screenshot: str) -> None:
    """Find the page's explorer, tick layer3 as a person would, check the header, screenshot."""
    explorer = session.page.locator(".fw-explorer").first
    explorer.wait_for(state="attached", timeout=300_000)
    explorer.scroll_into_view_if_needed()
    _tick_layer3(session, explorer)
    session.screenshot(screenshot)


def _wait_cells_numbered(session: LabSession, *, timeout_s: float) -> None:
    """Every code cell shows an execution count and no cell shows an error."""
    deadline = time.monotonic() + timeout_s
    prompts: list[str] = []
    while time.monotonic() < deadline:
        errors = cell_errors(session)
        assert not errors, "a cell failed in Notebook 7:\n" + errors[0][-3000:]
        prompts = session.page.locator(".jp-CodeCell .jp-InputArea-prompt").all_text_contents()
        if prompts and all(re.search(r"\[\d+\]", p) for p in prompts):
            return
        time.sleep(0.5)
    raise AssertionError(f"cells still running after {timeout_s:.0f} s: {prompts}")


def _run_all_from_menu(page: object) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the kernel must be connected before Run All
        text = page.locator("body").inner_text()  # type: ignore[attr-defined]
        if re.search(r"\bIdle\b", text):
            break
        time.sleep(0.25)
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).first.click()  # type: ignore[attr-defined]
    page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).first.click()  # type: ignore[attr-defined]


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quickstart_explorer_in_voila() -> None:
    require_browser()
    with lab_browser([NOTEBOOKS / QUICKSTART], name="voila", app="voila") as voila:
        page = voila.page
        # Voila runs every cell before it answers: one request, a long wait.
        page.goto(
            voila.url(f"/voila/render/{QUICKSTART}"), wait_until="domcontentloaded", timeout=300_000
        )
        _tick_layer3_in_explorer(voila, "voila-ticked")
