"""What only a GPU can check: bf16 autocast, the guard's cost, memory estimates, CUDA export, NCCL.

Run: ``python tools/gpu_check.py [--out DIR]``. Without CUDA it says so and exits 0. On a CUDA
machine each section prints its figures and PASS or FAIL; the exit status is 1 when any failed.

1. A short fine-tune step loop under ``torch.autocast("cuda", torch.bfloat16)`` with
   ``bn="frozen"`` (FrozenBatchNorm) and ``bn="eval"``, guarded: frozen tensors bit-identical.
2. FreezeGuard's overhead on ResNet-50 head-only (guarded / plain step, interleaved).
3. ``estimate_cost`` against ``torch.cuda`` memory for three models x three freezes: weights,
   gradients and optimizer state within 10%, the step's peak within 20%.
4. ``export_onnx`` from a model on the GPU (parity checked by the exporter).
5. With two or more GPUs, ``finetune(nproc=2)`` (NCCL) verifying every rank.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

Check = Callable[[torch.device, Path], bool]


def _head_only(model: nn.Module, head: str, bn: str = "eval") -> None:
    from freeze_widgets import freeze

    freeze(model, *[n for n, _ in model.named_children() if n != head], bn=bn)


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


def check_autocast(device: torch.device, out: Path) -> bool:
    from torchvision.models import resnet18

    from freeze_widgets import FreezeGuard

    ok = True
    for bn in ("frozen", "eval"):
        model = resnet18(num_classes=10).to(device)
        _head_only(model, "fc", bn=bn)
        before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc")}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        x, y = torch.randn(16, 3, 64, 64, device=device), torch.randint(0, 10, (16,), device=device)
        model.train()
        with FreezeGuard(model, opt) as guard:
            for _ in range(5):
                _step(model, opt, x, y)
        after = {k: v for k, v in model.state_dict().items() if not k.startswith("fc")}
        same = all(torch.equal(before[k], after[k]) for k in before)
        print(f"  bn={bn}: guard {'ok' if guard.report.ok else 'FAILED'}, frozen state "
              f"{'bit-identical' if same else 'CHANGED'}")  # fmt: skip
        ok = ok and same and guard.report.ok
    return ok


def check_guard_overhead(device: torch.device, out: Path) -> bool:
    from torchvision.models import resnet50

    from freeze_widgets import FreezeGuard

    model = resnet50(num_classes=10).to(device)
    _head_only(model, "fc")
    plain, guarded = (torch.optim.AdamW(model.fc.parameters(), lr=1e-5) for _ in range(2))
    x, y = torch.randn(8, 3, 64, 64, device=device), torch.randint(0, 10, (8,), device=device)
    model.train()
    times: dict[str, list[float]] = {"plain": [], "guarded": []}
    with FreezeGuard(model, guarded) as guard:
        for i in range(21):
            for side, opt in (("plain", plain), ("guarded", guarded)):
                torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                _step(model, opt, x, y)
                torch.cuda.synchronize(device)
                if i:
                    times[side].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    guard.check()
    torch.cuda.synchronize(device)
    full = time.perf_counter() - t0
    ratio = statistics.median(times["guarded"]) / statistics.median(times["plain"])
    print(f"  ResNet-50 head-only, batch 8 at 64 px: plain {statistics.median(times['plain']):.4f}"
          f" s, guarded / plain {ratio:.3f}, full check {full:.4f} s")  # fmt: skip
    return guard.report.ok and ratio <= 1.03


def _models() -> list[tuple[str, Callable[[], nn.Module], str]]:
    from torchvision.models import mobilenet_v3_small, resnet18, resnet50

    return [("resnet18", resnet18, "fc"), ("resnet50", resnet50, "fc"),
            ("mobilenet_v3_small", mobilenet_v3_small, "classifier")]  # fmt: skip


def _measured(model: nn.Module, x: torch.Tensor, device: torch.device) -> dict[str, int]:
    """Bytes of weights, gradients, optimizer state and the step's peak, from torch.cuda."""
    base = torch.cuda.memory_allocated(device)
    model.to(device)
    weights = torch.cuda.memory_allocated(device) - base
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    model(x).float().sum().backward()
    grads = torch.cuda.memory_allocated(device) - start
    opt.step()
    state = torch.cuda.memory_allocated(device) - start - grads
    peak = torch.cuda.max_memory_allocated(device) - base - x.numel() * x.element_size()
    return {"weights": weights, "grads": grads, "state": state, "total": peak}


def check_estimates(device: torch.device, out: Path) -> bool:
    from freeze_widgets import estimate_cost, freeze

    ok = True
    for name, build, head in _models():
        for label in ("nothing", "head only", "first half"):
            model = build()
            children = [n for n, _ in model.named_children()]
            if label == "head only":
                freeze(model, *[n for n in children if n != head])
            elif label == "first half":
                freeze(model, *children[: len(children) // 2])
            x = torch.randn(8, 3, 224, 224)
            est = estimate_cost(model, "adamw", example_inputs=x)
            got = _measured(model.train(), x.to(device), device)
            want = {"weights": est.weight_bytes, "grads": est.grad_bytes,
                    "state": est.optimizer_state_bytes, "total": est.total_bytes}  # fmt: skip
            limits = {"weights": 0.10, "grads": 0.10, "state": 0.10, "total": 0.20}
            errs = {k: abs(want[k] - got[k]) / max(got[k], 1) for k in want}
            good = all(errs[k] <= limits[k] or got[k] == want[k] for k in errs)
            figures = " ".join(
                f"{k} {want[k] / 2**20:.1f}/{got[k] / 2**20:.1f} MiB ({errs[k]:.0%})" for k in want
            )
            print(f"  {name:18s} {label:10s} estimated/measured {figures}{'' if good else ' FAIL'}")
            ok = ok and good
            del model
            torch.cuda.empty_cache()
    return ok


def check_export(device: torch.device, out: Path) -> bool:
    from torchvision.models import resnet18

    from freeze_widgets import export_onnx

    model = resnet18(num_classes=10).to(device).eval()
    report = export_onnx(model, torch.randn(2, 3, 64, 64, device=device), out / "resnet18.onnx")
    print(f"  export from {device}: ok={report.ok}")
    return bool(report.ok)


def check_nccl(device: torch.device, out: Path) -> bool:
    if torch.cuda.device_count() < 2:
        print(f"  skipped: {torch.cuda.device_count()} GPU (NCCL needs two)")
        return True
    from torchvision.models import resnet18

    from freeze_widgets import finetune

    model = resnet18(num_classes=10)
    _head_only(model, "fc")
    report = finetune(model.to(device), steps=4, batch_size=8, nproc=2, image_size=64)
    print(f"  finetune(nproc=2): ok={report.ok}")
    return bool(report.ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the export (default: a temp dir)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check (run it on a machine with a GPU).")
        return 0
    device = torch.device("cuda", 0)
    print(f"gpu_check on {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="fw-gpu-check-") as tmp:  # removed afterwards
        return _run_all(device, args.out or Path(tmp))


def _run_all(device: torch.device, out: Path) -> int:
    checks: list[tuple[str, Check]] = [
        ("bf16 autocast fine-tune, FrozenBatchNorm and eval policy", check_autocast),
        ("FreezeGuard overhead", check_guard_overhead),
        ("estimate_cost vs torch.cuda memory", check_estimates),
        ("export_onnx from a CUDA model", check_export),
        ("2-process NCCL fine-tune", check_nccl),
    ]
    failed = []
    for title, check in checks:
        print(f"{title}:")
        try:
            passed = check(device, out)
        except Exception:
            traceback.print_exc()
            passed = False
        print(f"  {'PASS' if passed else 'FAIL'}")
        if not passed:
            failed.append(title)
    print("all passed" if not failed else f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
