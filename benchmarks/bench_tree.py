"""ModuleTree: one leaf toggle vs a naive full recount, measured side by side.

Target (issue 2): a leaf toggle costs at most 1% of the naive recount at 5,000 modules, and grows
with depth, not model size.

Run: .venv/bin/python benchmarks/bench_tree.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import benchmark_models

from freeze_widgets import ModuleTree


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    rng = random.Random(0)
    header = f"{'model':<16}{'modules':>8}{'depth':>6}{'build ms':>10}{'toggle us':>11}{'recount us':>12}{'ratio':>9}"
    print(header)
    print("-" * len(header))
    verdicts = []
    for name, model in benchmark_models():
        t0 = time.perf_counter()
        tree = ModuleTree(model)
        build = time.perf_counter() - t0
        leaves = [n for n in tree if not n.children and n.total]
        picks = [rng.choice(leaves) for _ in range(200)]
        state = {"i": 0}

        def toggle() -> None:
            node = picks[state["i"] % len(picks)]
            state["i"] += 1
            tree.set_frozen(node.path, True)
            tree.set_frozen(node.path, False)

        toggle_s = median_seconds(toggle, 200) / 2  # two toggles per call

        def recount() -> int:
            return sum(p.numel() for p in model.parameters() if p.requires_grad)

        recount_s = median_seconds(recount, 30)
        ratio = toggle_s / recount_s
        depth = max(n.depth for n in tree)
        print(
            f"{name:<16}{len(tree):>8}{depth:>6}{build * 1e3:>10.1f}{toggle_s * 1e6:>11.1f}"
            f"{recount_s * 1e6:>12.1f}{ratio:>8.2%}"
        )
        if len(tree) >= 5000:
            verdicts.append((name, ratio))
    print()
    for name, ratio in verdicts:
        verdict = "PASS" if ratio <= 0.01 else "FAIL"
        print(
            f"target: leaf toggle <= 1% of naive recount at >= 5,000 modules ({name}): {ratio:.2%} {verdict}"
        )


if __name__ == "__main__":
    main()
