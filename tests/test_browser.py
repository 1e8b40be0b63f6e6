"""End to end in a real browser: the quickstart notebook in JupyterLab, driven like a person would.

JupyterLab runs on 127.0.0.1 with a token on a temporary copy of the notebooks; Debian's headless
Chromium is driven by Playwright (see ``tests/browser_harness.py``). The test opens
``00_quickstart.ipynb``, runs all cells from the Run menu, ticks ``layer1`` in the explorer and
checks the header, runs the ONNX export from the explorer and checks its parity verdict, then opens
Netron and checks that the graph was drawn. Screenshots go to ``test-artifacts/quickstart/`` (or
``$FREEZE_WIDGETS_ARTIFACTS``); servers and browser are stopped whatever happens.

Needs /usr/bin/chromium (``bash tools/dev.sh test`` installs it); set
``FREEZE_WIDGETS_SKIP_BROWSER=1`` to skip instead of failing where it cannot be installed.
"""

from __future__ import annotations

import re
import time

import pytest

from .browser_harness import (
    NOTEBOOKS,
    click_and_time_header,
    header_value,
    lab_browser,
    netron_node_count,
    open_notebook,
    require_browser,
    run_all_cells,
    wait_all_cells_done,
)

QUICKSTART = "00_quickstart.ipynb"
# ResNet-18's layer1: 4 convs 64->64 3x3 (no bias) + 4 BatchNorm(64) weight and bias.
LAYER1_PARAMS = 4 * 64 * 64 * 9 + 4 * 2 * 64
EXPORT_TIMEOUT_S = 240
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)


def _layer1_params_from_torchvision() -> int:
    """Independent of freeze_widgets: count on torchvision's own model (meta device, no memory)."""
    import torch
    from torchvision.models import resnet18

    with torch.device("meta"):
        model = resnet18(weights=None)
    return sum(p.numel() for p in model.layer1.parameters())


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quickstart_in_jupyterlab() -> None:  # noqa: PLR0915 (one story a person follows, step by step)
    require_browser()
    assert _layer1_params_from_torchvision() == LAYER1_PARAMS == 147_968

    with lab_browser([NOTEBOOKS / QUICKSTART], name="quickstart") as lab:
        page = lab.page
        t_start = time.perf_counter()
        open_notebook(lab, QUICKSTART)
        lab.screenshot("notebook-loaded")
        t_open = time.perf_counter() - t_start

        # Run > Run All Cells, then wait for the explorer's tree and for every cell to finish.
        t_run = run_all_cells(lab)
        explorer = page.locator(".fw-explorer").first
        layer1 = explorer.locator('.fw-tree .fw-row[data-path="layer1"]')
        layer1.wait_for(state="attached", timeout=180_000)
        t_tree = time.perf_counter() - t_run
        wait_all_cells_done(lab, timeout_s=300)
        t_all = time.perf_counter() - t_run
        explorer.scroll_into_view_if_needed()
        lab.screenshot("ran-all-cells")

        # What the notebook's own cells did is on screen: the stem (conv1, bn1) is ticked.
        assert explorer.locator('.fw-row[data-path="conv1"] input.fw-check').is_checked()
        total = header_value(explorer, "fw-total")
        before = header_value(explorer)
        assert before + header_value(explorer, "fw-frozen") == total

        # Tick layer1: trainable falls by exactly layer1's parameter count.
        check = layer1.locator("input.fw-check")
        assert not check.is_checked(), "layer1 is already frozen before the click"
        change = click_and_time_header(lab, explorer, check)
        assert change.before == before
        assert change.before - change.after == LAYER1_PARAMS, (
            f"trainable went {change.before:,} -> {change.after:,}: a drop of "
            f"{change.before - change.after:,}, expected layer1's {LAYER1_PARAMS:,}"
        )
        assert check.is_checked()
        shown = explorer.locator(".fw-header .fw-trainable").first.inner_text().strip()
        assert shown == f"{change.after:,}", f"header text {shown!r} != {change.after:,}"
        assert header_value(explorer, "fw-frozen") == total - change.after
        lab.screenshot("ticked-layer1")
        explorer.screenshot(path=str(lab.artifacts_dir / "explorer.png"))  # the README's picture

        # Export from the explorer: the report shows a parity verdict.
        explorer.locator(".fw-open-export").first.click()  # panels are built on first open
        export_button = explorer.locator(".fw-export-run").first
        export_button.wait_for(state="visible", timeout=30_000)
        assert export_button.is_enabled(), "the explorer's export button is disabled"
        t_export = time.perf_counter()
        export_button.click()
        parity = explorer.locator(".fw-export-report [data-parity]").first
        parity.wait_for(state="attached", timeout=EXPORT_TIMEOUT_S * 1000)
        export_s = time.perf_counter() - t_export
        report = explorer.locator(".fw-export-report").first
        report.scroll_into_view_if_needed()
        lab.screenshot("exported")
        verdict = parity.get_attribute("data-parity")
        assert verdict == "ok", f"export parity {verdict!r}: {report.inner_text()[:1000]}"
        parity_text = parity.inner_text()
        numbers = [float(n) for n in _NUMBER.findall(parity_text)]
        # "max relative difference R of the output's scale (tolerance T), max abs A"
        assert "max relative difference" in parity_text and "max abs" in parity_text, parity_text
        assert len(numbers) >= 3, f"no differences shown: {parity_text!r}"
        assert numbers[0] <= numbers[1], f"shown diff above tolerance: {parity_text!r}"

        # Netron inside the explorer: the graph view's frame (srcdoc, no server) shows the graph.
        explorer.locator(".fw-netron").first.click()
        iframe = explorer.locator(".fw-netron-view iframe").first
        iframe.wait_for(state="attached", timeout=60_000)
        assert not iframe.get_attribute("src"), "the graph view loads nothing from a URL"
        nodes = netron_node_count(lab, iframe, timeout_s=90)
        iframe.scroll_into_view_if_needed()
        lab.screenshot("netron")
        assert nodes > 0
        errors = [line for line in lab.console if line.startswith("[pageerror]")]

    print(
        f"\nbrowser e2e: notebook open {t_open:.1f} s; Run All -> tree rendered {t_tree:.1f} s; "
        f"all cells done {t_all:.1f} s; click -> header updated {change.latency_ms:.0f} ms; "
        f"export {export_s:.1f} s; Netron graph nodes {nodes}; "
        f"total {time.perf_counter() - t_start:.1f} s"
    )
    if errors:
        print("page errors seen (not failing the test):\n" + "\n".join(errors[:10]))
