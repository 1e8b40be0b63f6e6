"""In a real browser: the explorer's "lr ×" control opens, follows the dropdown and a row edit."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from .browser_harness import cell_errors, lab_browser, open_notebook, require_browser, run_all_cells

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "lr_dial.ipynb"
CELLS = [
    "from collections import OrderedDict\n"
    "from torch import nn\n"
    "from freeze_widgets import FreezeExplorer\n"
    "body = nn.Sequential(OrderedDict(a=nn.Linear(4, 4), b=nn.Linear(4, 4)))\n"
    "model = nn.Sequential(OrderedDict(stem=nn.Linear(4, 4), body=body, head=nn.Linear(4, 2)))\n"
    "ex = FreezeExplorer(model)\n"
    "ex.tick('stem', True)\n"
    "ex",
]

_ROWS_JS = """() => Object.fromEntries([...document.querySelectorAll('.fw-lr-table tr')]
    .filter(r => r.querySelector('td'))
    .map(r => [r.cells[0].textContent, r.cells[1].textContent]))"""


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


def wait_rows(page: object, want: dict[str, str]) -> dict[str, str]:
    """Wait until the table shows ``want`` (each change is a kernel round trip)."""
    expr = f"() => JSON.stringify(({_ROWS_JS})()) === JSON.stringify({want!r})".replace("'", '"')
    with contextlib.suppress(Exception):  # on a timeout the assertion shows the table
        page.wait_for_function(expr, timeout=30_000)  # type: ignore[attr-defined]
    return page.evaluate(_ROWS_JS)  # type: ignore[attr-defined, no-any-return]


def test_lr_control_in_the_browser(tmp_path: Path) -> None:
    require_browser()
    notebook = write_notebook(tmp_path / NOTEBOOK)
    worktree = str(Path(__file__).resolve().parents[1])
    with lab_browser([notebook], name="lr_dial", env={"PYTHONPATH": worktree}) as lab:
        page = lab.page
        open_notebook(lab, NOTEBOOK)
        run_all_cells(lab)
        page.locator(".fw-open-lr").first.click(timeout=120_000)
        page.locator(".fw-lr-table").first.wait_for(state="visible", timeout=60_000)
        first = wait_rows(page, {"stem": "0 (frozen)", "body": "1", "head": "1"})
        page.locator(".fw-lr-mode select").first.select_option(label="layer decay")
        decayed = wait_rows(page, {"stem": "0 (frozen)", "body": "0.75", "head": "1"})
        page.locator(".fw-lr-row-path input").first.fill("body.b")
        mult = page.locator(".fw-lr-row-mult input").first
        mult.fill("2")
        mult.press("Enter")
        page.locator(".fw-lr-set").first.click()
        edited = wait_rows(
            page, {"stem": "0 (frozen)", "body": "mixed", "head": "1", "body.b": "2"}
        )
        lab.screenshot("lr-dial")
        errors = cell_errors(lab)
    assert first == {"stem": "0 (frozen)", "body": "1", "head": "1"}
    assert decayed == {"stem": "0 (frozen)", "body": "0.75", "head": "1"}
    assert edited == {"stem": "0 (frozen)", "body": "mixed", "head": "1", "body.b": "2"}
    assert errors == []
