"""The graph view without a browser: no socket, graph-only bytes, the overlay, messages, the comm."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from torch import nn

from freeze_widgets import export_onnx, freeze, show_netron
from freeze_widgets.graph import netron_assets
from freeze_widgets.graph.model_payload import NOT_SENT, model_payload
from freeze_widgets.graph.netron_assets import CORE_MODULES, netron_install
from freeze_widgets.ui.graph_view import GraphView


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x).flatten(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = Small().eval()
    freeze(model, "stem")
    path = tmp_path_factory.mktemp("graph") / "small.onnx"
    export_onnx(model, torch.randn(2, 3, 8, 8), path, verify=False)
    return model, path


def _listening() -> set[tuple[str, int]]:
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


@pytest.mark.slow
def test_show_netron_returns_a_widget_and_opens_no_socket(exported: Any) -> None:
    _, path = exported
    before = _listening()
    view = show_netron(path)
    try:
        assert isinstance(view, GraphView)
        assert view.message == ""
        assert _listening() == before
    finally:
        view.close()


@pytest.mark.slow
def test_graph_only_bytes_keep_every_shape(exported: Any) -> None:
    import onnx

    _, path = exported
    original = onnx.load(str(path))
    payload = model_payload(path)
    sent = onnx.load_from_string(payload.data)
    assert len(sent.graph.node) == len(original.graph.node)
    dims = {t.name: list(t.dims) for t in original.graph.initializer}
    assert {t.name: list(t.dims) for t in sent.graph.initializer} == dims
    stubbed = [t for t in sent.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    big = [t for t in original.graph.initializer if t.ByteSize() >= 64]
    assert len(stubbed) == len(big) == payload.stripped > 0
    for tensor in stubbed:
        entries = {e.key: e.value for e in tensor.external_data}
        assert entries["location"] == NOT_SENT and not tensor.raw_data
    # Every stubbed tensor's values are gone; a stub costs a few dozen bytes.
    values = sum(len(t.raw_data) for t in big)
    assert len(payload.data) <= path.stat().st_size - values + 64 * len(big)
    assert model_payload(path, weights=True).data == path.read_bytes()


@pytest.mark.slow
def test_overlay_marks_exactly_the_nodes_reading_frozen_weights(exported: Any) -> None:
    import onnx

    model, path = exported
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    graph = onnx.load(str(path), load_external_data=False).graph
    expected = {node.name for node in graph.node if frozen & set(node.input)}
    assert expected  # the stem's conv (BatchNorm fused into it) reads stem.0.weight
    overlay = model_payload(path).overlay
    assert {n for n, info in overlay.nodes.items() if info.state == "frozen"} == expected
    inits = {t.name for t in graph.initializer}
    frozen_numel = sum(p.numel() for n, p in model.named_parameters() if n in frozen & inits)
    assert overlay.weights["frozen"] == frozen_numel
    assert overlay.counts["frozen"] == len(expected)
    head = [info for info in overlay.nodes.values() if "head.weight" in info.params]
    assert head and all(info.state == "trainable" and info.module == "head" for info in head)
    assert all(
        info.module.startswith("stem.") for n, info in overlay.nodes.items() if n in expected
    )


def test_problems_are_messages_never_exceptions(tmp_path: Path) -> None:
    (tmp_path / "fake.onnx").write_text("not a model\n" * 10)
    cases = {
        tmp_path / "missing.onnx": "no model file at",
        tmp_path: "is a folder",
        tmp_path / "fake.onnx": "fake.onnx is not an ONNX model",
    }
    for path, text in cases.items():
        view = show_netron(path)
        assert text in view.message, view.message
        assert view.payload is None
        view.close()


def test_unsupported_netron_version_names_the_tested_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import netron

    netron_install.cache_clear()
    monkeypatch.setattr(netron, "__version__", "10.0.1")
    try:
        view = show_netron(tmp_path / "any.onnx")
        assert "netron 10.0.1 is installed" in view.message
        assert "netron 9.3.x" in view.message and "pip install 'netron>=9.3,<9.4'" in view.message
        view.close()
    finally:
        netron_install.cache_clear()
    assert netron_assets.SUPPORTED == ("9.3",)


def _ask(view: GraphView, content: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    sent: list[tuple[dict[str, Any], list[Any]]] = []
    view.send = lambda msg, buffers=None: sent.append((msg, buffers or []))  # type: ignore[method-assign]
    view._on_msg(view, content, [])
    assert len(sent) == 1
    return sent[0]


@pytest.mark.slow
def test_comm_answers_from_the_installed_netron(exported: Any) -> None:
    import netron

    _, path = exported
    root = Path(netron.__file__).parent
    view = show_netron(path)
    try:
        answer, packed = _ask(
            view, {"type": "need-boot", "key": "", "have": ["view"], "page": False}
        )
        assert answer["bundle"] == "gzip"
        boot = json.loads(gzip.decompress(packed[0]))
        assert set(boot["modules"]) == set(CORE_MODULES) - {"view"}
        assert boot["assets"]["onnx-metadata.json"] == (root / "onnx-metadata.json").read_text()
        assert boot["modules"]["onnx"] == (root / "onnx.js").read_text(encoding="utf-8")
        page = boot["page"]
        assert "__fwLoad" in page and '<script type="text/javascript" src' not in page
        assert "Content-Security-Policy" not in page and 'name="date"' not in page
        module, _ = _ask(view, {"type": "need-module", "key": "pytorch"})
        assert module["type"] == "module" and module["key"] == "pytorch"
        assert module["text"] == (root / "pytorch.js").read_text(encoding="utf-8")
        for bad in ("../secret", "view.js", "/etc/passwd"):
            answer, _ = _ask(view, {"type": "need-module", "key": bad})
            assert "has no module" in answer["error"]
        asset, _ = _ask(view, {"type": "need-asset", "key": "../index.html"})
        assert "has no metadata file" in asset["error"]
        model, buffers = _ask(view, {"type": "need-model", "key": ""})
        assert model["name"] == "small.onnx" and buffers == [model_payload(path).data]
        view._on_msg(view, {"type": "status", "drawn": 7, "ms": 12.5}, [])
        assert view.status == {"drawn": 7, "ms": 12.5, "error": None}
        picked: list[tuple[str, str]] = []
        view.on_select(lambda node, module: picked.append((node, module)))
        view._on_msg(view, {"type": "select", "node": "n1", "module": "stem.1"}, [])
        assert picked == [("n1", "stem.1")]
    finally:
        view.close()
