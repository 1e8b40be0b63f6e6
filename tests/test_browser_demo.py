"""The Voila demo page shows the explorer at once and answers a tick (real Chromium + Voila).

Voila starts a kernel for every page request, so the page is loaded exactly once.
"""

from __future__ import annotations

import time

import pytest

from .browser_harness import (
    NOTEBOOKS,
    click_and_time_header,
    header_value,
    lab_browser,
    require_browser,
)

DEMO = "demo.ipynb"


def _layer1_params() -> int:
    """Independent of freeze_widgets: torchvision's own resnet18 on the meta device."""
    import torch
    from torchvision.models import resnet18

    with torch.device("meta"):
        model = resnet18(num_classes=10)
    return sum(p.numel() for p in model.layer1.parameters())


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_page_shows_the_explorer_at_once() -> None:
    require_browser()
    with lab_browser([NOTEBOOKS / DEMO], name="voila-demo", app="voila") as voila:
        page = voila.page
        start = time.monotonic()
        page.goto(
            voila.url(f"/voila/render/{DEMO}"), wait_until="domcontentloaded", timeout=120_000
        )
        explorer = page.locator(".fw-explorer").first
        row = explorer.locator('.fw-tree .fw-row[data-path="layer1"]')
        row.wait_for(state="attached", timeout=120_000)
        seconds = time.monotonic() - start
        print(f"\nVoila demo: explorer shown {seconds:.1f} s after the request")
        assert seconds < 60  # no training or export before the page (86 s before)
        change = click_and_time_header(voila, explorer, row.locator("input.fw-check"))
        assert change.before - change.after == _layer1_params()
        assert header_value(explorer, "fw-frozen") == _layer1_params()
        assert explorer.locator(".fw-open-finetune").count() == 1  # slow work behind buttons
        voila.screenshot("voila-demo")
