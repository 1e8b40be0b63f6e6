"""The code view's trainer configs in real JupyterLab + Chromium: preview in the tree, then apply.

The user means "train layer 1 only" and pastes axolotl's ``transformer.h.1``: the preview must
highlight layers 10 and 11 (axolotl's prefix match also trains them) and nothing else, before
anything changes; Apply then makes the model's freeze exactly that, all at once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from .browser_explorer_helpers import reveal, write_notebook
from .browser_harness import (
    header_value,
    lab_browser,
    open_notebook,
    require_browser,
    run_all_cells,
    wait_all_cells_done,
)

CELL = """\
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from freeze_widgets import explore, freeze, unfreeze
torch.manual_seed(0)
m = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=32, n_head=2, vocab_size=100, n_positions=32))
freeze(m)
unfreeze(m, "transformer.h.1")
ex = explore(m)
ex
"""
LAYER = 4 * 32 + 3 * 32 * 32 + 3 * 32 + 32 * 32 + 32 + 2 * 32 * 128 + 128 + 32  # one GPT-2 block


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_pasted_config_is_previewed_in_the_tree_then_applied() -> None:
    require_browser()
    with tempfile.TemporaryDirectory() as tmp:
        notebook = write_notebook(Path(tmp), "configs.ipynb", [CELL])
        with lab_browser([notebook], name="explorer-configs") as lab:
            page = lab.page
            open_notebook(lab, "configs.ipynb")
            run_all_cells(lab)
            explorer = page.locator(".fw-explorer").first
            explorer.locator('.fw-row[data-path="transformer"]').wait_for(timeout=180_000)
            wait_all_cells_done(lab)
            before = header_value(explorer)
            assert before == LAYER
            explorer.locator(".fw-code-toggle").first.click()
            explorer.locator(".fw-config-target select").first.select_option("axolotl")
            page.wait_for_function(
                "() => (document.querySelector('.fw-config-text pre') || {}).innerText"
                "?.includes('unfrozen_parameters')",
                timeout=30_000,
            )
            code = explorer.locator(".fw-config-text pre").first
            assert "- transformer.h.1." in (code.text_content() or "")
            explorer.locator(".fw-config-paste textarea").first.fill(
                "unfrozen_parameters:\n  - transformer.h.1\n"
            )
            explorer.locator(".fw-config-preview").first.click()
            page.wait_for_function(
                "() => document.querySelectorAll('.fw-row.fw-preview').length > 0",
                timeout=30_000,
            )
            reveal(explorer, "transformer.h.10")  # rows are virtualised: bring it on screen
            lit = explorer.locator('.fw-row.fw-preview[data-path="transformer.h.10"]')
            lit.wait_for(timeout=30_000)
            assert "also trains transformer.h.10" in (
                explorer.locator(".fw-config-result").first.text_content() or ""
            )
            for quiet in ("transformer.h.1", "transformer.h.2", "transformer.wte"):
                reveal(explorer, quiet)
                assert explorer.locator(f'.fw-row.fw-preview[data-path="{quiet}"]').count() == 0
            assert header_value(explorer) == before  # nothing applied yet
            lab.screenshot("config-preview")

            explorer.locator(".fw-config-apply").first.click()
            page.wait_for_function(
                "() => document.querySelectorAll('.fw-row.fw-preview').length === 0",
                timeout=30_000,
            )
            reveal(explorer, "transformer.h.10")
            row = explorer.locator('.fw-row[data-path="transformer.h.10"]').first
            page.wait_for_function(
                "(r) => r.dataset.state === 'trainable'", arg=row.element_handle(), timeout=30_000
            )
            assert header_value(explorer) == 3 * LAYER
            lab.screenshot("config-applied")
            assert lab.unexpected_page_errors() == []
