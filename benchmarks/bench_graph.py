"""The graph view in JupyterLab + headless Chromium: bytes over the comm and time to draw.

For ResNet-18, ResNet-50, a 12-layer BERT (random weights, from a config) and a synthetic ONNX
graph of about 5,000 nodes: the bytes the widget sends (netron's page and modules once per page,
then the model graph-only) as a share of the weights file, and the time from the cell's
execution (a stamp printed by the cell, ``time.time()``) to the first netron node in the page
and to the last (the view's ``data-drawn``), both taken in the page with
``performance.timeOrigin + performance.now()``.

The loopback-server path this view replaced is gone (issue 18), so there is no old path to time
beside it. Targets: graph-only bytes <= 1% of the weights file; ResNet-50 drawn <= 3 s; the
5,000-node graph drawn without the page freezing (netron lays out the whole graph with dagre in
one task, in the page's main thread: that is the limit).

Run: .venv/bin/python benchmarks/bench_graph.py [--models DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_browser import wait_idle_after
from freeze_widgets.base.wording import format_bytes
from freeze_widgets.graph.model_payload import model_payload
from freeze_widgets.graph.netron_assets import CORE_ASSETS, CORE_MODULES, netron_install
from tests.browser_explorer_helpers import write_notebook
from tests.browser_harness import browser_missing_reason, lab_browser, open_notebook

BYTES_TARGET = 0.01
RESNET50_TARGET_S = 3.0
NOTEBOOK = "bench_graph.ipynb"

SHOW = """\
import time
print(f"START {{1000 * time.time():.1f}}")
show_netron({path!r})
"""

_WATCH_JS = """
(index) => {
  const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell');
  const cell = cells[index];
  const now = () => performance.timeOrigin + performance.now();
  const rec = { first: null, last: null, drawn: 0, error: null, longest: 0 };
  window.__fwGraph = rec;
  let before = performance.now();
  const tick = () => {
    // The longest gap between frames: how long the page was frozen while netron worked.
    const t = performance.now();
    rec.longest = Math.max(rec.longest, t - before);
    before = t;
    const view = cell.querySelector('.fw-graph');
    const frame = view && view.querySelector('iframe');
    const doc = frame && frame.contentDocument;
    if (rec.first === null && doc && doc.querySelector('#canvas g.node')) rec.first = now();
    if (view && view.dataset.drawn) { rec.last = now(); rec.drawn = Number(view.dataset.drawn); }
    if (view && view.dataset.error) rec.error = view.textContent;
    if (rec.last === null && rec.error === null) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}
"""


def export_models(folder: Path) -> dict[str, Path]:
    """Export the benchmark models once (kept in ``folder`` for later runs)."""
    import torch
    from torchvision.models import resnet18, resnet50

    from freeze_widgets import export_onnx, freeze

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, build in (("resnet18", resnet18), ("resnet50", resnet50)):
        path = out[name] = folder / f"{name}.onnx"
        if not path.exists():
            model = build(weights=None).eval()
            freeze(model, "layer1")
            export_onnx(model, torch.randn(2, 3, 64, 64), path, verify=False)
    path = out["bert-12"] = folder / "bert12.onnx"
    if not path.exists():
        from transformers import BertConfig, BertModel

        bert = BertModel(BertConfig(num_hidden_layers=12)).eval()
        freeze(bert, "embeddings", "encoder.layer.[0-5]")
        ids = torch.randint(0, 1000, (2, 64))
        export_onnx(bert, {"input_ids": ids}, path, verify=False)
    out["chain-5k"] = big_graph(folder / "chain5k.onnx")
    return out


def big_graph(path: Path, blocks: int = 1250) -> Path:
    """About 5,000 nodes: ``blocks`` of MatMul, Add, Relu, Add (residual), 16x16 weights."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for b in range(blocks):
        w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype("float32"), f"w{b}")
        inits.append(w)
        nodes += [
            helper.make_node("MatMul", [x, f"w{b}"], [f"m{b}"], name=f"mm{b}"),
            helper.make_node("Relu", [f"m{b}"], [f"r{b}"], name=f"relu{b}"),
            helper.make_node("Add", [f"r{b}", x], [f"a{b}"], name=f"add{b}"),
            helper.make_node("Neg", [f"a{b}"], [f"y{b}"], name=f"neg{b}"),
        ]
        x = f"y{b}"
    graph = helper.make_graph(
        nodes,
        "chain5k",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, ["batch", 16])],
        inits,
    )
    onnx.save_model(helper.make_model(graph), str(path))
    return path


def time_cell(lab: object, index: int) -> dict[str, float]:
    """Shift+Enter on code cell ``index``; seconds from the cell's stamp to first/last node."""
    page = lab.page  # type: ignore[attr-defined]
    page.locator(".jp-CodeCell .jp-InputArea-editor").nth(index).click()
    page.evaluate(_WATCH_JS, index)
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "() => window.__fwGraph && (window.__fwGraph.last !== null || window.__fwGraph.error)",
        timeout=600_000,
        polling=500,
    )
    rec = page.evaluate("() => window.__fwGraph")
    if rec["error"]:
        raise RuntimeError(f"cell {index}: {rec['error']}")
    wait_idle_after(page, index, timeout_s=300)
    out = page.locator(".jp-CodeCell").nth(index).locator(".jp-OutputArea-output")
    words = " ".join(out.all_text_contents()).split()
    start = float(words[words.index("START") + 1])
    return {
        "first": (rec["first"] - start) / 1000,
        "last": (rec["last"] - start) / 1000,
        "drawn": rec["drawn"],
        "frozen_ms": rec["longest"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="keep exported models here")
    args = parser.parse_args()
    reason = browser_missing_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    install = netron_install()
    viewer = sum(len(install.module(m)) for m in CORE_MODULES)
    viewer += len(install.page) + sum(len(install.asset(a)) for a in CORE_ASSETS)
    bundle = len(install.bundle(frozenset(), page=True))
    with tempfile.TemporaryDirectory() as tmp:
        models = export_models(args.models or Path(tmp) / "models")
        cells = ["from freeze_widgets import show_netron"]
        cells += [SHOW.format(path=str(p)) for p in models.values()]
        nb = write_notebook(Path(tmp), NOTEBOOK, cells)
        with lab_browser([nb], name="bench-graph") as lab:
            open_notebook(lab, NOTEBOOK)
            lab.page.locator(".jp-CodeCell .jp-InputArea-editor").first.click()
            lab.page.keyboard.press("Shift+Enter")
            wait_idle_after(lab.page, 0)
            times = {name: time_cell(lab, i + 1) for i, name in enumerate(models)}
            lab.screenshot("bench-graph-last", full_page=False)
    print(f"netron {install.version}: page + core modules + ONNX metadata, once per page: "
          f"{format_bytes(bundle)} gzip'd over the comm ({format_bytes(viewer)} as text)")  # fmt: skip
    for name, path in models.items():
        payload = model_payload(path)
        share = len(payload.data) / payload.file_bytes
        t = times[name]
        verdict = "OK" if share <= BYTES_TARGET else "OVER TARGET"
        print(
            f"{name:9} {t['drawn']:5d} nodes  sent {format_bytes(len(payload.data)):>10} of "
            f"{format_bytes(payload.file_bytes):>10} = {100 * share:6.3f}% (target <= 1%) {verdict}; "
            f"cell -> first node {t['first']:6.2f} s, -> last {t['last']:6.2f} s; "
            f"longest frame gap {t['frozen_ms'] / 1000:5.2f} s"
        )
    r50 = times["resnet50"]["last"]
    print(
        f"ResNet-50 drawn in {r50:.2f} s, target <= {RESNET50_TARGET_S:.0f} s "
        f"(ratio {r50 / RESNET50_TARGET_S:.2f}) {'OK' if r50 <= RESNET50_TARGET_S else 'OVER TARGET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
