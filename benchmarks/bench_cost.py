"""estimate_cost against the measured memory of a real CPU training step, side by side.

Each (model, freeze) runs in its own subprocess so one run's allocator state cannot leak into
the next. The measurement is independent of the estimate's method (which counts tensors in a
meta-device forward): it is the process's resident memory (psutil RSS and /proc VmHWM), with glibc
told to serve every allocation above 64 kB by mmap (``MALLOC_MMAP_THRESHOLD_``), so freed
tensors leave RSS at once and RSS tracks live tensor memory.

- static (weights + grads + optimizer state): RSS after two AdamW steps, gradients still held,
  minus RSS before the model was built (activations are freed by then).
- total: peak RSS (VmHWM, reset after a throwaway warm-up step on a copy) over two steps minus
  the same baseline (the first step allocates the optimizer state; the second is the steady
  state the estimate describes).

Run: ``PYTHONPATH=. python benchmarks/bench_cost.py`` (about ten minutes on a shared two-core
machine, the BERT rows included; they need ``transformers``).

Targets: static within 15%, total within 25%. Last run (estimate / measured):

    model     frozen         static  total
    resnet18  nothing         0.98    1.03
    resnet18  stem+layer1-2   0.98    1.14
    resnet18  all but fc      0.94    0.99   (0.50 before the forward peak was counted)
    resnet50  nothing         0.99    1.05
    resnet50  stem+layer1-2   0.99    1.06
    resnet50  all but fc      0.97    1.03   (0.77 before)
    bert-4    nothing         0.98    1.15
    bert-4    emb+2 layers    0.95    1.00
    bert-4    all but head    0.93    0.94
"""

from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
from typing import Any

CASES: dict[str, list[tuple[str, list[str]]]] = {
    "resnet18": [
        ("nothing", []),
        ("stem+layer1-2", ["conv1", "bn1", "layer1", "layer2"]),
        ("all but fc", ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]),
    ],
    "resnet50": [
        ("nothing", []),
        ("stem+layer1-2", ["conv1", "bn1", "layer1", "layer2"]),
        ("all but fc", ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]),
    ],
    "bert-4": [
        ("nothing", []),
        ("emb+2 layers", ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"]),
        ("all but head", ["bert"]),
    ],
}
BATCH = {"resnet18": 8, "resnet50": 4, "bert-4": 8}


def _build(name: str) -> tuple[Any, Any]:
    import torch
    import torchvision

    torch.manual_seed(0)
    b = BATCH[name]
    if name.startswith("resnet"):
        model = getattr(torchvision.models, name)()
        x = torch.randn(b, 3, 224, 224)
        return model, (x, torch.randint(0, 1000, (b,)))
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        num_hidden_layers=4,
        hidden_size=256,
        num_attention_heads=4,
        intermediate_size=1024,
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(cfg)
    return model, {
        "input_ids": torch.randint(0, cfg.vocab_size, (b, 128)),
        "labels": torch.randint(0, 2, (b,)),
    }


def _loss(model: Any, batch: Any) -> Any:
    import torch

    if isinstance(batch, dict):
        return model(**batch).loss
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child(name: str, frozen: list[str]) -> dict[str, float]:
    """One measured run (in a fresh process)."""
    import psutil
    import torch

    from freeze_widgets.cost.estimate import estimate_cost
    from freeze_widgets.freezing.targets import freeze

    torch.set_num_threads(1)
    proc = psutil.Process()
    model, batch = _build(name)
    # One throwaway step on a copy first: kernels, thread pools and oneDNN scratch buffers that
    # stay allocated for the process's life go into the baseline, not into the step's memory.
    warm = copy.deepcopy(model)
    _loss(warm, batch).backward()
    del warm
    gc.collect()
    _reset_peak()  # the warm-up's peak must not count
    params_and_buffers = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    base = proc.memory_info().rss - params_and_buffers  # as if the model were not built yet
    if frozen:
        freeze(model, *frozen)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    inputs = (
        {k: v for k, v in batch.items() if k != "labels"} if isinstance(batch, dict) else (batch[0])
    )
    est = estimate_cost(model, "adamw", example_inputs=inputs)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        _loss(model, batch).backward()
        opt.step()
    static = proc.memory_info().rss - base
    peak = _peak_rss() - base
    return {
        "est_static": est.weight_bytes + est.grad_bytes + est.optimizer_state_bytes,
        "static": static,
        "est_total": est.total_bytes,
        "total": peak,
        "backward_share": est.backward_share,
    }


def main() -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    print(
        f"{'model':9} {'frozen':14} {'static est/meas':>17} {'ratio':>6} "
        f"{'total est/meas MB':>19} {'ratio':>6} {'bwd share':>9}"
    )
    for name, cases in CASES.items():
        for label, frozen in cases:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, json.dumps(frozen)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            mb = 1e6
            print(
                f"{name:9} {label:14} {r['est_static'] / mb:7.1f}/{r['static'] / mb:7.1f} MB "
                f"{r['est_static'] / r['static']:6.2f} "
                f"{r['est_total'] / mb:8.1f}/{r['total'] / mb:8.1f} MB "
                f"{r['est_total'] / r['total']:6.2f} {r['backward_share']:9.2f}"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        main()
