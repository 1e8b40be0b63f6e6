"""Distributed fine-tune cost: 1 process vs 2 (DDP, FSDP2), and what the verification costs.

resnet18 (weights=None, 4-class head), ``conv1``..``layer3`` frozen (bn "eval"), 64x64 synthetic
images, batch 16 per process, SGD, ``STEPS`` steps, gloo on CPU, all through
``finetune_distributed`` (the elastic launcher), measured in one run:

* step time: median of rank 0's ``step_seconds`` (forward, loss, backward incl. gradient
  synchronisation, optimizer step), first step dropped as warm-up;
* throughput: global samples per second of the training loop;
* verification: the slowest rank's time for the start snapshot, the bitwise comparisons, the
  digests and the gather of every rank's verdict, as a share of that rank's training loop +
  verification (target: at most 5 %);
* state gather: collecting the full trained state (FSDP2: from the shards), needed anyway to
  hand the trained weights back, shown apart;
* wall: the whole call including starting the processes (Python + torch imports dominate).

Run: ``python benchmarks/bench_distributed.py`` (about 4 minutes on 2 busy cores).
"""

from __future__ import annotations

import statistics
import time

from freeze_widgets import freeze, load_model, unfreeze
from freeze_widgets.distributed import finetune_distributed

IMAGE = 64
BATCH = 16
STEPS = 20


def _model() -> object:
    model = load_model("resnet18", pretrained=False)
    freeze(model)
    unfreeze(model, "layer4", "fc")
    return model


def run(nproc: int, strategy: str) -> dict[str, float]:
    t0 = time.perf_counter()
    report = finetune_distributed(
        _model(),  # type: ignore[arg-type]
        nproc=nproc,
        strategy=strategy,
        steps=STEPS,
        batch_size=BATCH,
        image_size=IMAGE,
        synthetic_n=BATCH * nproc * STEPS,
        optimizer="sgd",
        timeout_s=900,
    )
    wall = time.perf_counter() - t0
    assert report.ok, report.summary()
    step = statistics.median(report.step_seconds[1:])
    slowest = max(report.ranks, key=lambda v: v.train_seconds + v.verify_seconds)
    share = slowest.verify_seconds / (slowest.train_seconds + slowest.verify_seconds)
    return {
        "step": step,
        "samples_s": BATCH * nproc / step,
        "verify": report.verify_seconds,
        "share": share,
        "wall": wall,
        "gather": max(v.gather_seconds for v in report.ranks),
    }


def main() -> None:
    cases = [(1, "ddp"), (2, "ddp"), (2, "fsdp")]
    results = {case: run(*case) for case in cases}
    base = results[(1, "ddp")]["step"]
    print(f"resnet18, {IMAGE}px, batch {BATCH}/process, {STEPS} SGD steps, conv1..layer3 frozen")
    print(
        f"{'case':<14}{'step s':>8}{'vs 1 proc':>10}{'samples/s':>11}"
        f"{'verify s':>10}{'verify %':>10}{'gather s':>10}{'wall s':>8}"
    )
    for (nproc, strategy), r in results.items():
        print(
            f"{f'{nproc} x {strategy}':<14}{r['step']:>8.3f}{r['step'] / base:>9.2f}x"
            f"{r['samples_s']:>11.1f}{r['verify']:>10.3f}{r['share']:>9.1%}{r['gather']:>10.3f}"
            f"{r['wall']:>8.1f}"
        )
    worst = max(r["share"] for r in results.values())
    print(f"verification overhead: at most {worst:.1%} of a run (target <= 5%)")


if __name__ == "__main__":
    main()
