"""In a real browser: two Netron views side by side each draw their own model.

No JupyterLab: a blank page holds two iframes pointing at two servers, the way two explorers'
export panels do. Netron draws each operator as a ``g.node``, so two graphs with different
operator counts prove each frame loaded its own file (the bug: both drew the last one started).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from freeze_widgets.graph.netron import open_view, running_servers

from .browser_harness import launch_chromium, netron_node_count

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def chain_model(path: Path, ops: int) -> Path:
    """An ONNX file with ``ops`` Relu nodes in a chain (no weights: tiny and fast)."""
    import onnx
    from onnx import helper

    names = [f"t{i}" for i in range(ops + 1)]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]]) for i in range(ops)]
    graph = helper.make_graph(
        nodes,
        f"chain{ops}",
        [helper.make_tensor_value_info(names[0], onnx.TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(names[-1], onnx.TensorProto.FLOAT, [2, 4])],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(helper.make_model(graph), str(path))
    return path


def test_two_iframes_draw_two_models(tmp_path: Path) -> None:
    # Same file name in two folders: the situation of two explorers with their own exports.
    small = chain_model(tmp_path / "one" / "model.onnx", 2)
    large = chain_model(tmp_path / "two" / "model.onnx", 5)
    with open_view(small) as first, open_view(large) as second, launch_chromium() as browser:
        page = browser.new_page()
        page.set_content(
            f'<iframe id="a" src="{first.url}" style="width:600px;height:500px"></iframe>'
            f'<iframe id="b" src="{second.url}" style="width:600px;height:500px"></iframe>'
        )
        counts = [
            netron_node_count(None, page.locator(f"iframe#{frame}"), timeout_s=90)  # type: ignore[arg-type]
            for frame in ("a", "b")
        ]
        # Netron draws the graph input and output as nodes too: operators + 2.
        assert counts == [2 + 2, 5 + 2]
    assert running_servers() == []
