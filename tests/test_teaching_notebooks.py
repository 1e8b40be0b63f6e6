"""Workshop exercises: every notebook has some, and every check catches a wrong answer.

The convention (docs/teaching.md, "How the exercises work"), read from cell tags:

* ``answer``: the learner's cell; its first line is ``NAME = None`` (a prediction, or a function
  or class the learner writes);
* ``solution``: the collapsed cell after it; it checks the reference answer, then the learner's
  ``NAME`` when it is not ``None``, and fails with an ``AssertionError`` whose message holds
  ``Hint:``;
* ``exercise``: other code cells of the exercise (the buggy code it starts from);
* ``setup``: the notebook's cells that the exercises need (imports, helpers).

The planted-answer test runs, in one kernel per notebook, the ``setup`` cells and then each
exercise with a wrong answer (``PLANTED`` below) in place of the learner's cell, and expects that
exercise's check, and only it, to fail with its hint. tests/test_notebooks.py runs every notebook
as shipped, where each check passes on the reference and on the ``None`` answer.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
# The numbered workshop notebooks (a demo notebook beside them is not a lesson).
NOTEBOOKS = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
ANSWER = re.compile(r"^(\w+) = None\b")

# A wrong answer for every exercise, as a learner might write it: the bug itself, or the
# plausible miscount. Keyed by notebook, then by the answer's variable.
PLANTED: dict[str, dict[str, str]] = {
    "00_quickstart": {
        "my_layer4_count": "my_layer4_count = 2_359_296  # one 3x3 conv of layer4, not all of it",
        "my_freeze_for_layer4": (
            "def my_freeze_for_layer4(model):\n"
            "    freeze_to(model, -1)  # trains only fc: layer4 stays frozen\n"
        ),
    },
    "01_freezing_fundamentals": {
        "my_trainable_count": "my_trainable_count = 32 + 32 * 2 + 2  # forgot the head bias is frozen",
        "my_freeze_backbone": (
            "def my_freeze_backbone(model):\n"
            "    for p in model[:2].parameters():\n"
            "        p.requires_grad_(False)\n"
            "    model[1].eval()\n"
        ),
        "my_freeze_callback": (
            "def my_freeze_callback(model, step):\n"
            "    if step == 3:\n"
            "        for p in model[0].parameters():\n"
            "            p.requires_grad_(False)\n"
        ),
        "my_unfreeze_backbone": (
            "def my_unfreeze_backbone(model, optimizer):\n    unfreeze(model, '0', '1')\n"
        ),
    },
    "02_partial_bound_onnx_export": {
        "my_graph_inputs": 'my_graph_inputs = ["x"]',
        "my_export": (
            "def my_export(module, example, path):\n"
            "    torch.onnx.export(module, (example,), path, dynamo=True)\n"
        ),
        "MySignGate": "MySignGate = SignGate  # the data-dependent branch itself",
    },
    "03_torchscript_freeze": {
        "my_constant_count": "my_constant_count = 8  # conv 2 + bn 4 + head 2: nothing folded",
        "my_deploy": (
            "def my_deploy(net):\n    return torch.jit.freeze(torch.jit.script(net.eval()))\n"
        ),
        "my_snapshot": (
            "def my_snapshot(net):\n    return torch.jit.freeze(torch.jit.script(net.eval()))\n"
        ),
    },
    "04_when_freezing_pays": {
        "my_last_block_count": "my_last_block_count = 18_496  # block3's convolution only",
        "my_head_then_unfreeze": (
            "def my_head_then_unfreeze(model, optimizer):\n"
            "    unfreeze(model)  # the optimizer never hears of the backbone\n"
        ),
    },
    "05_transformers_and_lora": {
        "my_lora_count": "my_lora_count = 4 * 4 * ((64 + 192) + (64 + 64))  # one c_proj per block",
        "my_untied_gpt": "def my_untied_gpt():\n    return make_gpt()\n",
        "my_attn_proj_config": (
            "my_attn_proj_config = LoraConfig(r=4, target_modules=['c_proj'], fan_in_fan_out=True)"
        ),
    },
    "06_common_mistakes": {
        "my_export_program": (
            "def my_export_program(net, example):\n"
            "    return torch.export.export(net, (example,))  # still in train mode\n"
        ),
        "my_resume_scheduler": (
            "def my_resume_scheduler(optimizer, old, schedule):\n    return old\n"
        ),
    },
}


@dataclass
class Exercise:
    """One exercise: the learner's answer cell, its check, and the cells it runs."""

    name: str
    answer: int
    check: int
    cells: list[int]  # code cells to run in order, answer and check included


def _tags(cell: Any) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _exercises(nb: Any) -> list[Exercise]:
    found: list[Exercise] = []
    start = 0
    for i, cell in enumerate(nb.cells):
        if "answer" not in _tags(cell):
            continue
        match = ANSWER.match(cell.source)
        assert match, f"answer cell {i} must start with `NAME = None`"
        check = next(
            (j for j in range(i + 1, len(nb.cells)) if "solution" in _tags(nb.cells[j])), None
        )
        assert check is not None, f"answer cell {i} ({match[1]}) has no solution cell after it"
        before = [j for j in range(start, i) if "exercise" in _tags(nb.cells[j])]
        between = [j for j in range(i + 1, check) if nb.cells[j].cell_type == "code"]
        found.append(Exercise(match[1], i, check, [*before, i, *between, check]))
        start = check + 1
    return found


def _read(stem: str) -> Any:
    return nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_every_notebook_has_checked_exercises(stem: str) -> None:
    nb = _read(stem)
    exercises = _exercises(nb)
    assert exercises, f"{stem}: no exercises (cells tagged 'answer')"
    names = [e.name for e in exercises]
    assert sorted(names) == sorted(PLANTED.get(stem, {})), (
        f"{stem}: exercises {names} and planted wrong answers {sorted(PLANTED.get(stem, {}))} "
        "must match one to one"
    )
    for e in exercises:
        check = nb.cells[e.check]
        assert check.cell_type == "code"
        assert check.metadata.get("jupyter", {}).get("source_hidden"), (
            f"{stem}: the solution of {e.name} is not collapsed (source_hidden)"
        )
        assert f"if {e.name} is not None:" in check.source or f"if {e.name} is None:" in (
            check.source
        ), f"{stem}: the solution of {e.name} does not look at the learner's {e.name}"
        assert "Hint:" in check.source, f"{stem}: the solution of {e.name} gives no hint"
    assert any("setup" in _tags(c) for c in nb.cells), f"{stem}: no cell tagged 'setup'"


def test_solutions_are_collapsed() -> None:
    for stem in NOTEBOOKS:
        nb = _read(stem)
        visible = [
            i
            for i, c in enumerate(nb.cells)
            if "solution" in _tags(c) and not c.metadata.get("jupyter", {}).get("source_hidden")
        ]
        assert not visible, f"{stem}: solution cells {visible} are not collapsed"


def _first_error(outputs: list[Any]) -> Any:
    return next((o for o in outputs if o.get("output_type") == "error"), None)


@pytest.mark.slow
@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_planted_wrong_answers_fail_their_check(
    stem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setup cells once, then each exercise with its wrong answer: its check fails with a hint."""
    from nbclient import NotebookClient

    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("FREEZE_WIDGETS_OFFLINE", "1")
    monkeypatch.setenv("FREEZE_WIDGETS_OUT", str(out))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    nb = nbformat.read(work / f"{stem}.ipynb", as_version=4)
    exercises = _exercises(nb)
    for e in exercises:
        nb.cells[e.answer].source = PLANTED[stem][e.name]
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        allow_errors=True,
        resources={"metadata": {"path": str(work)}},
    )
    problems: list[str] = []
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if "setup" in _tags(cell) and cell.cell_type == "code":
                client.execute_cell(cell, i)
                error = _first_error(cell.outputs)
                assert error is None, f"{stem}: setup cell {i} raised {error}"
        for e in exercises:
            for i in e.cells:
                client.execute_cell(nb.cells[i], i)
                error = _first_error(nb.cells[i].outputs)
                if i == e.check:
                    if error is None:
                        problems.append(f"{e.name}: the check passed a wrong answer")
                    elif error.ename != "AssertionError" or "Hint:" not in error.evalue:
                        problems.append(f"{e.name}: failed without a hint: {error.ename}")
                elif error is not None:
                    problems.append(f"{e.name}: cell {i} raised {error.ename}: {error.evalue}")
                    break
    assert not problems, f"{stem}: " + "; ".join(problems)
