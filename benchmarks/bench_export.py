"""Export time, and PyTorch eager vs onnxruntime latency, measured side by side in one run.

Usage::

    python benchmarks/bench_export.py [--models resnet18 resnet50] [--runs 10]

Each model (torchvision, weights=None, eval) is exported once with ``export_onnx`` (dynamo,
dynamic batch, traced at batch 2) and verified at batch 1 and 8: the same inputs go to eager
PyTorch and to onnxruntime, both limited to the same thread count. Targets: onnxruntime at most
0.7x eager latency at batch 1; max |diff| / max |eager| (error relative to the output's scale,
docs/design.md trap 17) at most 1e-4. ``max abs`` is printed for reference; it is not judged,
since an absolute figure passes anything when outputs are tiny.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

from freeze_widgets.export import ExportReport, export_onnx

LATENCY_TARGET = 0.7  # ort / eager at batch 1
MAX_REL_TARGET = 1e-4  # max |diff| / max |eager|
BATCHES = (1, 8)


def bench(name: str, runs: int, folder: Path) -> ExportReport:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None).eval()
    example = torch.randn(2, 3, 224, 224)
    return export_onnx(
        model,
        example,
        folder / f"{name}.onnx",
        verify_batches=BATCHES,
        timing_runs=runs,
        warmup=3,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    # Same thread budget for both sides: export_onnx gives onnxruntime torch's thread count.
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import onnxruntime

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}"
    )
    header = (
        f"{'model':<10} {'export s':>8} {'MB':>6} {'batch':>5} {'eager ms':>9} "
        f"{'ort ms':>8} {'ort/eager':>9} {'max abs':>9} {'max rel':>9} {'latency':>7} "
        f"{'parity':>6}"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            report = bench(name, args.runs, Path(tmp))
            if report.fallback_reason:
                print(f"{name}: fell back to {report.exporter}: {report.fallback_reason}")
            for p in report.parity:
                ratio = p.exported_ms / p.eager_ms
                latency_ok = ratio <= LATENCY_TARGET if p.batch == 1 else None
                parity_ok = p.ok and p.max_rel <= MAX_REL_TARGET
                failures += (latency_ok is False) + (not parity_ok)
                latency = "-" if latency_ok is None else ("PASS" if latency_ok else "FAIL")
                print(
                    f"{name:<10} {report.export_seconds:>8.1f} "
                    f"{report.file_bytes / 2**20:>6.1f} {p.batch:>5} {p.eager_ms:>9.2f} "
                    f"{p.exported_ms:>8.2f} {ratio:>9.2f} {p.max_abs:>9.1e} {p.max_rel:>9.1e} "
                    f"{latency:>7} "
                    f"{'PASS' if parity_ok else 'FAIL':>6}"
                )
    print(
        f"targets: ort/eager <= {LATENCY_TARGET} at batch 1; max rel <= {MAX_REL_TARGET:g}. "
        f"{'all PASS' if failures == 0 else f'{failures} FAIL'}"
    )
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
