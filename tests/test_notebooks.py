"""The teaching notebooks run top to bottom (nbclient), offline, and are stored without outputs.

Each notebook executes in a temporary copy of ``notebooks/`` with ``FREEZE_WIDGETS_OFFLINE=1``
(pretrained weights unavailable: the visible random-weights fallback) and ``FREEZE_WIDGETS_OUT``
pointing at a temporary folder, so nothing is written into the repository. A cell that raises
fails the test with the cell's source and traceback. Wall times are printed (``pytest -s``) and
written to ``test-artifacts/notebook-times.txt``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [
    "00_quickstart.ipynb",
    "01_freezing_fundamentals.ipynb",
    "02_partial_bound_onnx_export.ipynb",
    "03_torchscript_freeze.ipynb",
    "04_when_freezing_pays.ipynb",
    "05_transformers_and_lora.ipynb",
    "06_common_mistakes.ipynb",
]
CELL_TIMEOUT_S = 300


def _artifacts() -> Path:
    return Path(os.environ.get("FREEZE_WIDGETS_ARTIFACTS") or REPO / "test-artifacts")


def test_expected_notebooks_exist() -> None:
    names = [p.name for p in NOTEBOOKS]
    missing = [n for n in EXPECTED if n not in names]
    assert not missing, f"missing notebooks in {NOTEBOOK_DIR}: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_clean(path: Path) -> None:
    """Stored without outputs or execution counts, with a kernelspec (else Lab asks)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    kernelspec = nb.metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", (
        f"{path.name}: metadata.kernelspec must name python3, or JupyterLab opens a blocking "
        "kernel-selection dialog"
    )
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs or execution counts; strip them before "
        "committing (e.g. `jupyter nbconvert --clear-output --inplace`)"
    )
    assert any(c.cell_type == "markdown" for c in nb.cells), f"{path.name}: no explanations"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Execute every cell in a fresh python3 kernel; any error fails with its traceback."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    out = tmp_path / "out"
    out.mkdir()
    # The kernel inherits this process's environment.
    monkeypatch.setenv("FREEZE_WIDGETS_OFFLINE", "1")
    monkeypatch.setenv("FREEZE_WIDGETS_OUT", str(out))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    nb = nbformat.read(work / path.name, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(work)}},
        allow_errors=False,
    )
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell raised:\n{exc}", pytrace=False)
    seconds = time.perf_counter() - start
    print(f"\n{path.name}: ran in {seconds:.1f} s")
    artifacts = _artifacts()
    artifacts.mkdir(parents=True, exist_ok=True)
    with open(artifacts / "notebook-times.txt", "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {path.name}  {seconds:.1f} s\n")

    errors = [
        (i, o)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error outputs in cells {[i for i, _ in errors]}"
    leftovers = sorted(
        p.relative_to(work) for p in work.rglob("*") if p.is_file() and p.suffix != ".ipynb"
    )
    assert not leftovers, (
        f"{path.name} wrote files next to the notebooks (use FREEZE_WIDGETS_OUT or a temp "
        f"dir): {leftovers}"
    )
