"""Export cost and latency: the report's figures against this script's own, side by side.

Usage::

    python benchmarks/bench_export.py [--models resnet18 resnet50] [--runs 20] [--threads 2]

For each model (torchvision, weights=None, eval; traced at batch 2, dynamic batch):

1. Verification cost: a plain ``torch.onnx.export`` (dynamo) and ``export_onnx`` with every
   default (parity at batch 1 and 5, quick timing at batch 1), each timed once after one
   untimed warm-up export. Target: the ratio at most 1.3.
2. Latency: ``export_onnx(timing="thorough")`` reports onnxruntime/eager at batch 1 and 8;
   this script then times the same two engines itself, each in its own block after warm-up
   (eager first, then an onnxruntime session with the same thread count and spin-waiting off),
   and prints both ratios. Target: they agree within 20% (docs/design.md, trap 25: alternating
   the engines while onnxruntime spins made eager look 3-40x slower).
3. Parity: max |diff| / max |eager| at most 1e-4 (scale-relative, trap 17).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freeze_widgets.export import export_onnx

COST_TARGET = 1.3  # export_onnx with default verification / plain torch.onnx.export
AGREE_TARGET = 0.2  # |report ratio - measured ratio| / measured ratio
MAX_REL_TARGET = 1e-4
BATCHES = (1, 8)


def block_ms(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    """Median ms of ``fn`` in one block after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def plain_export(model: nn.Module, example: torch.Tensor, path: Path) -> float:
    start = time.perf_counter()
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["x"],
        dynamo=True,
        dynamic_shapes={"x": {0: "batch"}},
        verbose=False,
        report=False,
        verify=False,
        optimize=True,
    )
    return time.perf_counter() - start


def measured_ratio(model: nn.Module, path: Path, batch: int, runs: int) -> float:
    """onnxruntime / eager, each engine timed in its own block by this script."""
    import onnxruntime as ort

    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        eager = block_ms(lambda: model(x), runs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: x.numpy()}
    return block_ms(lambda: session.run(None, feed), runs) / eager


def bench(name: str, runs: int, folder: Path) -> int:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None).eval()
    example = torch.randn(2, 3, 224, 224)
    plain_export(model, example, folder / "warm.onnx")  # untimed: torch.export's caches warm
    plains, defaults, steps = [], [], []
    for _ in range(2):  # alternated, best of two each: a busy machine's load comes and goes
        plains.append(plain_export(model, example, folder / "plain.onnx"))
        start = time.perf_counter()
        quick = export_onnx(model, example, folder / "quick.onnx")  # every default
        defaults.append(time.perf_counter() - start)
        steps.append(quick.export_seconds)
    plain, default, step = min(plains), min(defaults), min(steps)
    cost = default / plain
    failures = int(cost > COST_TARGET)
    print(
        f"{name:<10} plain export {plain:6.1f} s  export_onnx default {default:6.1f} s  "
        f"ratio {cost:.2f} ({'PASS' if cost <= COST_TARGET else 'FAIL'} <= {COST_TARGET}); "
        f"its own export step {step:.1f} s, so checks and verification add "
        f"{(default - step) / step:.0%} of it"
    )
    path = folder / "thorough.onnx"
    report = export_onnx(
        model, example, path, verify_batches=BATCHES, timing="thorough", timing_runs=runs
    )
    q = quick.parity[0]  # the quick default times its first batch size (1) only
    print(
        f"{'':<10} quick report at batch {q.batch}: ort/eager {q.exported_ms / q.eager_ms:.2f} "
        f"({q.timed_runs} run(s))"
    )
    for p in report.parity:
        reported = p.exported_ms / p.eager_ms
        mine = measured_ratio(model, path, p.batch, runs)
        agree = abs(reported - mine) / mine
        parity_ok = p.ok and p.max_rel <= MAX_REL_TARGET
        failures += int(agree > AGREE_TARGET) + int(not parity_ok)
        print(
            f"{'':<10} batch {p.batch:>2}: ort/eager thorough report {reported:5.2f}, measured "
            f"here {mine:5.2f}; agreement {agree:5.1%} "
            f"({'PASS' if agree <= AGREE_TARGET else 'FAIL'})"
            f"; max rel {p.max_rel:.1e} ({'PASS' if parity_ok else 'FAIL'})"
        )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18"])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import onnxruntime

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}"
    )
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            failures += bench(name, args.runs, Path(tmp))
    print("all PASS" if failures == 0 else f"{failures} FAIL")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
