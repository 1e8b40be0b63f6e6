"""The export panel: arguments marked input or bound, export, report, Netron view."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from freeze_widgets import FreezeExplorer
from freeze_widgets.ui.export_panel import ExportPanel, parse_bound_value, parse_shape
from freeze_widgets.ui.graph_view import GraphView


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, scale: float = 2.0, relu: bool = False
    ) -> torch.Tensor:
        y = self.fc(x * mask) * scale
        return torch.relu(y) if relu else y


def test_parse_helpers() -> None:
    assert parse_shape("2, 3, 224, 224") == (2, 3, 224, 224)
    assert parse_shape("4x6") == (4, 6)
    with pytest.raises(ValueError, match="positive"):
        parse_shape("0, 3")
    assert parse_bound_value("flag", "True") is True
    m = torch.ones(3)
    assert parse_bound_value("mask", "m", {"m": m}) is m
    with pytest.raises(ValueError, match="neither a literal"):
        parse_bound_value("mask", "undefined_name", {})


def test_rows_follow_the_signature() -> None:
    panel = ExportPanel(Masked)
    modes = {row.param.name: row.mode.value for row in panel.args}
    assert modes == {"x": "input", "mask": "input", "scale": "bound", "relu": "bound"}
    assert panel.args[0].value.value == "2, 6"  # example shape from the first Linear


def test_export_with_bound_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Masked()
    with torch.no_grad():  # relu=True below: keep outputs positive whatever the global seed,
        model.fc.bias.fill_(1.0)  # or all-zero outputs are (rightly) too small to judge
    panel = ExportPanel(lambda: model, out_path=str(tmp_path / "masked.onnx"))
    mask = torch.tensor([1.0, 0, 1, 0, 1, 0])
    monkeypatch.setattr("freeze_widgets.ui.export_panel._user_namespace", lambda: {"my_mask": mask})
    rows = {row.param.name: row for row in panel.args}
    rows["mask"].mode.value = "bound"
    rows["mask"].value.value = "my_mask"
    rows["relu"].value.value = "True"
    panel.run_button.click()
    panel.wait()
    assert panel.messages.last_error is None, panel.messages.last_error
    report = panel.last_report
    assert report is not None
    assert report.ok
    assert report.graph_inputs == ["x"]
    assert 'data-parity="ok"' in panel.report_view.value
    graph = onnx.load(str(tmp_path / "masked.onnx")).graph
    assert "Relu" in {node.op_type for node in graph.node}  # the bound switch shaped the graph
    assert not panel.netron_button.disabled
    panel.netron_button.click()
    (view,) = panel.netron_view.children
    assert isinstance(view, GraphView)
    assert view.message == ""
    assert view.payload is not None and view.payload.name == "masked.onnx"
    panel.shutdown()
    assert panel.netron_view.children == ()
    assert view.comm is None  # closed with the panel


def test_bad_bound_value_is_one_readable_line(tmp_path: Path) -> None:
    panel = ExportPanel(Masked, out_path=str(tmp_path / "m.onnx"))
    rows = {row.param.name: row for row in panel.args}
    rows["scale"].value.value = "not a value("
    panel.run(block=True)
    assert panel.messages.last_error is not None
    assert "scale" in panel.messages.last_error
    assert "\n" not in panel.messages.last_error
    assert not (tmp_path / "m.onnx").exists()


def test_explorer_exports_its_model(tmp_path: Path, resnet18: nn.Module) -> None:
    ex = FreezeExplorer(resnet18)
    ex.tick("layer1")
    ex.export.path.value = str(tmp_path / "r18.onnx")
    ex.export.args[0].value.value = "2, 3, 64, 64"
    ex.export.run(block=True)
    assert ex.export.last_report is not None
    assert ex.export.last_report.ok
    assert ex.export.last_report.graph_inputs == ["x"]
    ex.close()


def test_bind_mirrors_the_model_mode_without_touching_submodules() -> None:
    from freeze_widgets import bind

    model = Masked().eval()
    assert not bind(model, mask=torch.ones(6)).training
    model.train()
    model.fc.eval()
    bound = bind(model, mask=torch.ones(6))
    assert bound.training
    assert not model.fc.training
