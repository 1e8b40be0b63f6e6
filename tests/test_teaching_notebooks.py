"""Workshop structure of the teaching notebooks: exercises with collapsed, self-checking solutions.

No execution here (tests/test_notebooks.py runs them); this checks what a student sees: every
notebook has exercises, every solution cell is collapsed in JupyterLab, and every "predict"
answer cell (``my_... = None``) is checked by a later solution cell.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
WORKSHOP = [
    "01_freezing_fundamentals.ipynb",
    "02_partial_bound_onnx_export.ipynb",
    "03_torchscript_freeze.ipynb",
    "05_transformers_and_lora.ipynb",
    "06_common_mistakes.ipynb",
]
ANSWER = re.compile(r"^(my_\w+) = None\b", re.MULTILINE)


def _is_solution(cell: nbformat.NotebookNode) -> bool:
    return "solution" in cell.metadata.get("tags", [])


@pytest.mark.parametrize("name", WORKSHOP)
def test_solutions_are_collapsed(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    solutions = [c for c in nb.cells if _is_solution(c)]
    assert solutions, f"{name}: no solution cells (tag 'solution')"
    visible = [
        i
        for i, c in enumerate(nb.cells)
        if _is_solution(c) and not c.metadata.get("jupyter", {}).get("source_hidden")
    ]
    assert not visible, f"{name}: solution cells {visible} are not collapsed (source_hidden)"
    assert all(c.cell_type == "code" and "assert" in c.source for c in solutions), (
        f"{name}: every solution must check itself with an assert"
    )


@pytest.mark.parametrize("name", WORKSHOP)
def test_every_prediction_is_checked(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    for i, cell in enumerate(nb.cells):
        for var in ANSWER.findall(cell.source if cell.cell_type == "code" else ""):
            later = [c for c in nb.cells[i + 1 :] if _is_solution(c)]
            assert later, f"{name}: {var} (cell {i}) has no solution after it"
            checker = later[0].source
            assert f"if {var} is not None:" in checker and f"assert {var} ==" in checker.replace(
                f"assert list({var}) ==", f"assert {var} =="
            ), f"{name}: the solution after cell {i} does not check {var}"
