"""Browser helpers for the graph view (``freeze_widgets.ui.graph_view``): models, waits, checks.

Shared by ``tests/test_browser_netron.py`` and ``benchmarks/bench_graph.py``; the JupyterLab
session comes from ``tests/browser_harness.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "chain_model",
    "expected_frozen_nodes",
    "export_frozen_resnet",
    "foreign_requests",
    "frame_of",
    "frozen_node_names",
    "graph_contrast",
    "onnx_node_count",
    "wait_graph",
]


def chain_model(path: Path, ops: int) -> Path:
    """An ONNX file with ``ops`` Relu nodes in a chain (no weights: tiny and fast)."""
    import onnx
    from onnx import helper

    names = [f"t{i}" for i in range(ops + 1)]
    nodes = [
        helper.make_node("Relu", [names[i]], [names[i + 1]], name=f"relu{i}") for i in range(ops)
    ]
    graph = helper.make_graph(
        nodes,
        f"chain{ops}",
        [helper.make_tensor_value_info(names[0], onnx.TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(names[-1], onnx.TensorProto.FLOAT, [2, 4])],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(helper.make_model(graph), str(path))
    return path


def export_frozen_resnet(path: Path, frozen: str = "layer1", size: int = 32) -> Any:
    """A random-weight ResNet-18 with ``frozen`` frozen, exported by the project (no parity run).

    Returns:
        The model (to compute what is frozen independently of the file).
    """
    import torch
    from torchvision.models import resnet18

    from freeze_widgets import export_onnx, freeze

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    freeze(model, frozen)
    report = export_onnx(model, torch.randn(2, 3, size, size), path, verify=False)
    assert path.is_file() and not report.error, report
    return model


def expected_frozen_nodes(model: Any, path: Path) -> set[str]:
    """Nodes of the file that read a parameter the model has frozen (from torch, not the overlay)."""
    import onnx

    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    graph = onnx.load(str(path), load_external_data=False).graph
    return {node.name for node in graph.node if frozen & set(node.input)}


def onnx_node_count(path: Path) -> int:
    """What netron draws for a plain ONNX graph: its nodes plus one per graph input and output."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    return len(graph.node) + len(inputs) + len(graph.output)


_STATE_JS = """
(root) => ({ drawn: root.dataset.drawn ? Number(root.dataset.drawn) : null,
             error: root.dataset.error || null,
             message: (root.querySelector('.fw-graph-message') || {}).textContent || '' })
"""


def wait_graph(view: Any, *, timeout_s: float = 120) -> dict[str, Any]:
    """Wait until the view (a ``.fw-graph`` locator) drew its graph or shows a message."""
    view.wait_for(state="attached", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = view.evaluate(_STATE_JS)
        if state["drawn"] is not None or state["message"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"the graph view neither drew nor said why within {timeout_s:.0f} s")


def frame_of(view: Any) -> Any:
    """The Playwright frame of the view's netron iframe."""
    handle = view.locator("iframe.fw-graph-frame").element_handle(timeout=10_000)
    frame = handle.content_frame() if handle is not None else None
    if frame is None:
        raise AssertionError("the graph view has no netron frame")
    return frame


def frozen_node_names(view: Any) -> set[str]:
    """Names of the nodes the view draws as frozen."""
    ids: list[str] = frame_of(view).evaluate(
        "() => [...document.querySelectorAll('g.node.fw-state-frozen')].map((n) => n.id)"
    )
    return {i.removeprefix("node-name-") for i in ids}


def foreign_requests(urls: list[str], base_url: str) -> list[str]:
    """Requests that did not go to the Jupyter server's origin (blob: URLs of that origin pass)."""
    origin = urlparse(base_url)
    out = []
    for url in urls:
        inner = url.removeprefix("blob:")
        parsed = urlparse(inner)
        if url.startswith("data:") or (parsed.scheme, parsed.netloc) == (
            origin.scheme,
            origin.netloc,
        ):
            continue
        out.append(url)
    return out


# WCAG 2 contrast. HTML text: colour against the first opaque background up the tree. SVG node
# labels: the text's fill against the fill of the header path drawn beneath it.
_CONTRAST_JS = """
(root) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const lum = (rgb) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2]);
  };
  const ratio = (a, b) => { const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
                            return (hi + 0.05) / (lo + 0.05); };
  const htmlBg = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] >= 1) return c;
    }
    return [255, 255, 255, 1];
  };
  const out = {};
  for (const el of root.querySelectorAll('.fw-graph-key, .fw-graph-note, .fw-graph-sent')) {
    out[el.className] = ratio(parse(getComputedStyle(el).color), htmlBg(el));
  }
  const doc = root.querySelector('iframe.fw-graph-frame').contentDocument;
  const win = doc.defaultView;
  const pick = (sel) => doc.querySelector(sel);
  for (const [name, sel] of [['frozen label', 'g.node.fw-state-frozen .node-item-type'],
                             ['trainable label', 'g.node:not(.fw-state-frozen) .node-item-type']]) {
    const item = pick(sel);
    if (!item) continue;
    const fill = parse(win.getComputedStyle(item.querySelector('path')).fill);
    const text = parse(win.getComputedStyle(item.querySelector('text')).fill);
    // A translucent header is seen over the page's background.
    const below = htmlBg(doc.body);
    const seen = fill.slice(0, 3).map((v, k) => v * fill[3] + below[k] * (1 - fill[3]));
    out[name] = ratio(text, seen);
  }
  return out;
}
"""


def graph_contrast(view: Any) -> dict[str, float]:
    """Contrast ratio of the legend's text and of netron's node labels, as drawn."""
    result: dict[str, float] = view.evaluate(_CONTRAST_JS)
    return result
