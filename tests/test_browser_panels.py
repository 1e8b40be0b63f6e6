"""In a real browser: the panels render as a person sees them, in the dark theme too.

Checks what only a browser can: the "input"/"bound" toggles show their whole words (not "bou..."),
and the fine-tune plot is an inline SVG whose text takes the theme's colour (light on dark), not
a white raster block.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .browser_harness import lab_browser, open_notebook, require_browser, run_all_cells

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "panels.ipynb"
CELLS = [
    "import torch\n"
    "from torch import nn\n"
    "from freeze_widgets import freeze, unfreeze\n"
    "from freeze_widgets.ui.export_panel import ExportPanel\n"
    "from freeze_widgets.ui.finetune_panel import FineTunePanel",
    "class Masked(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.fc = nn.Linear(6, 3)\n"
    "    def forward(self, x, mask, scale: float = 2.0, relu: bool = False):\n"
    "        return self.fc(x * mask) * scale\n"
    "ExportPanel(Masked)",
    "model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(4))\n"
    "model(torch.zeros(1, 3, 16, 16))\n"
    "freeze(model); unfreeze(model, '2')\n"
    "ft = FineTunePanel(lambda: model, image_size=16)\n"
    "ft.steps.value = 6; ft.batch_size.value = 8\n"
    "ft.run(block=True)\n"
    "ft",
]

_TOGGLES_JS = """() => [...document.querySelectorAll('.fw-arg-mode button')].map(b => ({
    text: b.textContent.trim(), fits: b.scrollWidth <= b.clientWidth + 1}))"""
_PLOT_JS = """() => { const svg = document.querySelector('.fw-plot');
    if (!svg) return null;
    const text = [...svg.querySelectorAll('text')].find(t => t.textContent === 'step');
    return {width: svg.getBoundingClientRect().width, fill: getComputedStyle(text).fill,
            background: getComputedStyle(document.body).backgroundColor}; }"""


def write_notebook(path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nbformat.write(nb, path)
    return path


def brightness(css: str) -> float:
    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    return (r + g + b) / 3


def test_panels_render_whole_words_and_theme_coloured_plot(tmp_path: Path) -> None:
    require_browser()
    notebook = write_notebook(tmp_path / NOTEBOOK)
    worktree = str(Path(__file__).resolve().parents[1])
    with lab_browser([notebook], name="panels", env={"PYTHONPATH": worktree}) as lab:
        page = lab.page
        open_notebook(lab, NOTEBOOK)
        run_all_cells(lab)
        page.locator(".fw-plot").first.wait_for(state="attached", timeout=180_000)
        toggles = page.evaluate(_TOGGLES_JS)
        assert len(toggles) == 8, toggles  # 4 arguments x (input, bound)
        assert all(t["fits"] for t in toggles), f"a toggle's text is cut: {toggles}"
        assert {t["text"] for t in toggles} == {"input", "bound"}
        light = page.evaluate(_PLOT_JS)
        lab.screenshot("panels-light")

        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Settings$")).first.click()
        page.locator(".lm-Menu-item", has_text=re.compile(r"^Theme")).first.hover()
        page.locator(".lm-Menu-item", has_text="JupyterLab Dark").first.click()
        page.wait_for_function(
            "() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000
        )
        page.wait_for_timeout(500)
        dark = page.evaluate(_PLOT_JS)
        page.locator(".fw-plot").first.scroll_into_view_if_needed()
        lab.screenshot("panels-dark")
    assert light is not None and dark is not None and light["width"] > 300
    # Text follows the theme: dark on the light theme, light on the dark one.
    assert brightness(light["fill"]) < 128 < brightness(dark["fill"]), (light, dark)
    assert brightness(dark["background"]) < 128
