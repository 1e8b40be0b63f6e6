"""FreezeExplorer, Python side: tree payload build and one tick (message in, core change, delta
out) next to a naive full recount, measured side by side; payload bytes per tick.

Targets (issue 6): ResNet-152 payload built in <= 50 ms; a tick handled in <= 5 ms at 5,000
modules; delta size grows with depth and subtree, not model size. The browser-side figures come
from benchmarks/bench_browser.py.

Run: .venv/bin/python benchmarks/bench_explorer.py
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import benchmark_models

from freeze_widgets import FreezeExplorer
from freeze_widgets.ui.payload import tree_payload


def main() -> None:
    rng = random.Random(0)
    print(
        f"{'model':<16}{'nodes':>7}{'payload ms':>11}{'payload KB':>11}{'tick ms':>9}"
        f"{'recount ms':>11}{'tick/recount':>13}{'delta B':>9}{'full/delta':>11}"
    )
    results: dict[str, tuple[float, float]] = {}
    for name, model in benchmark_models():
        ex = FreezeExplorer(model)
        build = []
        for _ in range(5):
            t0 = time.perf_counter()
            payload = json.dumps(tree_payload(ex.tree))  # what crosses the wire
            build.append(time.perf_counter() - t0)
        sent: list[Any] = []
        ex.tree_view.send = lambda content, buffers=None: sent.append(json.dumps(content))  # type: ignore[method-assign]
        leaves = [n.path for n in ex.tree if not n.children and n.total]
        ticks = []
        for _ in range(100):
            path = rng.choice(leaves)
            for frozen in (True, False):
                t0 = time.perf_counter()
                ex.tick(path, frozen)
                ticks.append(time.perf_counter() - t0)
        recount = []
        for _ in range(10):
            t0 = time.perf_counter()
            sum(p.numel() for p in model.parameters() if p.requires_grad)
            recount.append(time.perf_counter() - t0)
        tick_s = statistics.median(ticks)
        recount_s = statistics.median(recount)
        delta_bytes = statistics.median(len(s) for s in sent)
        build_s = statistics.median(build)
        results[name] = (build_s, tick_s)
        print(
            f"{name:<16}{len(ex.tree):>7}{build_s * 1e3:>11.2f}{len(payload) / 1024:>11.1f}"
            f"{tick_s * 1e3:>9.3f}{recount_s * 1e3:>11.3f}{tick_s / recount_s:>13.3f}"
            f"{delta_bytes:>9.0f}{len(payload) / delta_bytes:>11.0f}"
        )
    print()
    build_152 = results["resnet152"][0]
    print(
        f"target: ResNet-152 payload <= 50 ms: {build_152 * 1e3:.1f} ms {'PASS' if build_152 <= 0.05 else 'FAIL'}"
    )
    tick_5k = results["synthetic-5k"][1]
    print(
        f"target: tick <= 5 ms at 5,000 modules: {tick_5k * 1e3:.2f} ms {'PASS' if tick_5k <= 0.005 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
