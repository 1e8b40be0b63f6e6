"""Export panel: argument rows that fit the model, meta/busy guards, close(), Netron views."""

from __future__ import annotations

from pathlib import Path

import ipywidgets.widgets.widget as widget_module
import onnx
import pytest
import torch
from torch import nn

from freeze_widgets.ui.background import BusyState
from freeze_widgets.ui.export_panel import ExportPanel, parse_example, report_html

from .test_export_panel import Masked


class Summing(nn.Module):
    """A forward with only ``*args``: no names to build rows from."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fc(sum(xs))  # type: ignore[arg-type]


def rows(panel: ExportPanel) -> dict[str, tuple[str, str]]:
    return {r.param.name: (r.mode.value, r.value.value) for r in panel.args}


def tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=99,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return BertModel(config).eval()


def test_parse_example_forms() -> None:
    assert parse_example("x", "2, 3").shape == (2, 3)
    ids = parse_example("ids", "randint(0, 7, (2, 8))")
    assert ids.dtype == torch.int64 and ids.shape == (2, 8) and int(ids.max()) < 7
    mask = parse_example("m", "ones(2, 8, dtype=long)")
    assert mask.dtype == torch.int64 and bool((mask == 1).all())
    mine = torch.zeros(3)
    assert parse_example("x", "t", {"t": mine}) is mine
    with pytest.raises(ValueError, match="is not an example"):
        parse_example("x", "hello")
    with pytest.raises(ValueError, match="dtype"):
        parse_example("x", "ones(2, device=cuda)")
    with pytest.raises(ValueError, match="is a int"):
        parse_example("x", "n", {"n": 3})


def test_bert_rows_default_input_ids_and_export(tmp_path: Path) -> None:
    model = tiny_bert()
    panel = ExportPanel(lambda: model, out_path=str(tmp_path / "bert.onnx"))
    shown = rows(panel)
    assert shown["input_ids"] == ("input", "randint(0, 99, (2, 8))")  # vocab from the config
    bound = {name for name, (mode, _) in shown.items() if mode == "bound"}
    assert bound == set(shown) - {"input_ids", "attention_mask"}
    assert shown["use_cache"] == ("bound", "False")  # a deployment export keeps no cache
    assert shown["attention_mask"] == ("input", "ones(2, 8, dtype=long)")
    panel.run(block=True)
    assert panel.messages.last_error is None, panel.messages.last_error
    report = panel.last_report
    assert report is not None and report.ok
    assert report.graph_inputs == ["input_ids", "attention_mask"]
    graph = onnx.load(str(tmp_path / "bert.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    panel.close()


def test_gpt2_rows() -> None:
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(vocab_size=77, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    panel = ExportPanel(lambda: GPT2Model(config))
    modes = rows(panel)
    assert modes["input_ids"] == ("input", "randint(0, 77, (2, 8))")
    inputs = [n for n, (mode, _) in modes.items() if mode == "input"]
    assert inputs == ["input_ids", "attention_mask"]
    panel.close()


def test_each_mode_keeps_its_own_text() -> None:
    panel = ExportPanel(Masked)
    by_name = {r.param.name: r for r in panel.args}
    x, relu = by_name["x"], by_name["relu"]
    x.mode.value = "bound"
    assert x.value.value == ""  # no default: an empty value, not the shape
    x.mode.value = "input"
    assert x.value.value == "2, 6"
    relu.mode.value = "input"
    assert relu.value.value == "2, 6"
    relu.value.value = "4, 6"
    relu.mode.value = "bound"
    assert relu.value.value == "False"  # its default
    relu.mode.value = "input"
    assert relu.value.value == "4, 6"  # what was typed there
    x.mode.value = "bound"
    with pytest.raises(ValueError, match="x: bound to nothing"):
        panel.arguments()
    panel.close()


def test_star_args_model_gets_positional_rows(tmp_path: Path) -> None:
    model = Summing()
    panel = ExportPanel(lambda: model, out_path=str(tmp_path / "sum.onnx"))
    assert rows(panel) == {"input_0": ("input", "2, 4")}
    assert panel.add_input.layout.display == ""
    panel.add_input.click()
    assert list(rows(panel)) == ["input_0", "input_1"]
    panel.exporter.value = "ONNX (TorchScript exporter)"
    panel.run(block=True)
    assert panel.messages.last_error is None, panel.messages.last_error
    report = panel.last_report
    assert report is not None and report.ok
    assert report.graph_inputs == ["input_0", "input_1"]
    panel.close()


def test_wrappers_are_unwrapped_to_named_rows() -> None:
    for wrapped in (nn.DataParallel(Masked()), torch.compile(Masked())):
        panel = ExportPanel(lambda m=wrapped: m)  # type: ignore[misc]
        assert list(rows(panel)) == ["x", "mask", "scale", "relu"], type(wrapped)
        assert not panel.positional and panel.add_input.layout.display == "none"
        panel.close()


def test_meta_model_disables_export_with_the_reason() -> None:
    with torch.device("meta"):
        model = Masked()
    panel = ExportPanel(lambda: model)
    assert panel.run_button.disabled
    assert "meta device" in panel.run_button.tooltip and "load_model" in panel.run_button.tooltip
    panel.run(block=True)
    assert not panel.running and panel.last_report is None
    assert "meta device" in panel.messages.value
    model.to_empty(device="cpu")
    panel.refresh_state()
    assert not panel.run_button.disabled and "meta" not in panel.run_button.tooltip
    panel.close()


def test_busy_model_is_one_readable_line(tmp_path: Path) -> None:
    panel = ExportPanel(Masked, out_path=str(tmp_path / "m.onnx"))
    panel.busy = BusyState()
    assert panel.busy.acquire("a fine-tune is training the model")
    panel.run(block=True)
    assert "the model is busy: a fine-tune is training the model" in panel.messages.value
    assert not panel.run_button.disabled and panel.status.value == ""
    assert not (tmp_path / "m.onnx").exists()
    panel.close()


def test_ratio_is_labelled(tmp_path: Path) -> None:
    panel = ExportPanel(Masked, out_path=str(tmp_path / "m.onnx"))
    panel.run(block=True)
    assert panel.last_report is not None
    text = report_html(panel.last_report)
    assert "(ratio onnxruntime time / PyTorch time: " in text
    timed = [p for p in panel.last_report.parity if p.timed_runs]  # quick: the first size
    assert timed and text.count("time / PyTorch time") == len(timed)
    assert "each timed in its own block" in text
    panel.close()


def test_two_panels_one_path_close_keeps_the_other(tmp_path: Path) -> None:
    path = tmp_path / "shared.onnx"
    before = set(widget_module._instances)
    first = ExportPanel(Masked, out_path=str(path))
    second = ExportPanel(Masked, out_path=str(path))
    for panel in (first, second):
        panel.run(block=True)
        assert panel.last_report is not None and panel.last_report.ok
        panel.show_netron()
    views = [panel.netron_view.children[0] for panel in (first, second)]
    first.close()
    assert views[0].comm is None
    assert views[1].comm is not None  # the other panel's view is untouched
    assert views[1].payload is not None and views[1].payload.name == "shared.onnx"
    second.close()
    assert views[1].comm is None
    # close() closed every widget model the panels created (layouts and styles included).
    assert set(widget_module._instances) <= before
