"""The package's shape: no import cycles, the core free of the UI, one set of checked options."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from freeze_widgets import finetune
from freeze_widgets.distributed import finetune_distributed

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 450


def _graph_tool() -> Any:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools/import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    tool = _graph_tool()
    graph = tool.build_graph(ROOT)
    assert len(graph) > 50  # the whole package was read
    assert tool.cycles(graph) == []


def test_the_graph_tool_finds_a_cycle_and_a_ui_import() -> None:
    tool = _graph_tool()
    graph = {"freeze_widgets.a": {"freeze_widgets.b"}, "freeze_widgets.b": {"freeze_widgets.a"}}
    graph["freeze_widgets.c"] = {"ipywidgets", "freeze_widgets.ui.x"}
    graph["freeze_widgets.ui.x"] = {"anywidget"}
    assert tool.cycles(graph) == [["freeze_widgets.a", "freeze_widgets.b"]]
    assert tool.ui_leaks(graph) == [
        ("freeze_widgets.c", "freeze_widgets.ui.x"),
        ("freeze_widgets.c", "ipywidgets"),
    ]


def test_only_the_ui_imports_widget_libraries() -> None:
    tool = _graph_tool()
    assert tool.ui_leaks(tool.build_graph(ROOT)) == []


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "freeze_widgets").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_every_folder_says_its_job_in_one_line() -> None:
    for init in (ROOT / "freeze_widgets").rglob("__init__.py"):
        text = init.read_text()
        assert text.startswith('"""'), init
        assert text.splitlines()[0].rstrip().endswith('"""') or len(text.splitlines()[0]) < 101


BAD_ARGUMENTS = [
    ({"epochs": "2"}, TypeError, "epochs must be an int"),
    ({"epochs": 1.5}, TypeError, "epochs must be an int"),
    ({"epochs": 0}, ValueError, "epochs must be at least 1"),
    ({"steps": 0}, ValueError, "steps must be at least 1"),
    ({"batch_size": True}, TypeError, "batch_size must be an int"),
    ({"lr": "0.1"}, TypeError, "lr must be a number"),
    ({"lr": float("nan")}, ValueError, "lr must be a positive finite number"),
    ({"optimizer": "lion"}, ValueError, "optimizer must be one of"),
    ({"bn": 3}, TypeError, "bn must be one of"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS)
def test_both_entry_points_reject_a_bad_argument_alike(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message) as single:
        finetune(model, **kwargs)
    with pytest.raises(error, match=message) as several:
        finetune_distributed(model, nproc=2, **kwargs)
    assert str(single.value) == str(several.value)
    assert all(before[k].equal(v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("nproc", [True, 0, 10_000, "2"])
def test_nproc_is_an_int_within_the_machine(nproc: object) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    with pytest.raises((TypeError, ValueError), match="nproc"):
        finetune(model, nproc=nproc)  # type: ignore[arg-type]


def test_byte_figures_read_the_same_in_every_panel() -> None:
    from dataclasses import MISSING, fields

    from freeze_widgets.cost.estimate import CostEstimate
    from freeze_widgets.export.report import ExportReport

    size = 46_800_000
    cost = CostEstimate(
        weight_bytes=size,
        grad_bytes=0,
        optimizer_state_bytes=0,
        activation_bytes=0,
        forward_peak_bytes=0,
        backward_share=0.0,
    )
    required = {
        f.name: None
        for f in fields(ExportReport)
        if f.default is MISSING and f.default_factory is MISSING
    }
    required.update(input_names=[], output_names=[], bound_names=[], graph_inputs=[])
    required.update(initializer_count=0, export_seconds=0.0, path=Path("m.onnx"))
    required.update(exporter="dynamo", file_bytes=size)
    report = ExportReport(**required)
    # 46,800,000 B = 44.6 MiB (binary units, labelled): one convention in both panels.
    assert "44.6 MiB" in cost.summary()
    assert "44.6 MiB" in str(report)
