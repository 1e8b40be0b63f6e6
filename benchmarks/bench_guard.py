"""FreezeGuard's cost, guarded step next to plain step on the same model, measured in one run.

Models (random weights; nothing is downloaded), 2 threads:

* ``resnet50``: torchvision ResNet-50, everything but ``fc`` frozen (bn="eval"), AdamW on the
  head, batch 8 at 64x64;
* ``bert``: BERT-base (transformers config), embeddings and encoder layers 0-7 frozen, AdamW on
  the rest, batch 4 x 64 tokens;
* ``llama``: a Llama-shaped causal LM with LoRA adapters (PEFT, r=8 on q/v), the optimizer
  holding the adapters only, batch 1 x 64 tokens. The issue's ~1B model takes seconds per step
  on 2 shared cores; the default here is scaled down (``--llama-hidden``/``--llama-layers``
  scale it up), and the ratio it measures does not depend on size: per step the guard hashes
  nothing of the frozen base (the optimizer does not hold it, it has no ``.grad``).

Per model: three AdamW optimizers over the same trainable tensors, one plain, one hooked by a
guard with the defaults, one hooked by a guard that checks every frozen tensor after every step
(``full_every=1``: what the guard did before, with today's faster fingerprint). Steps of the
three run interleaved (plain, guarded, everything, plain, ...) after a warm-up round, so each
ratio compares steps taken under the same load on the same model and batch. Printed per side:
the median CPU time of this process (all its threads; what other processes on a shared machine
disturb least), and the median and fastest wall time. The guards' BatchNorm forward hooks (a
set lookup per BatchNorm call) run on every side. Last, the hooks' own work per step, measured
on empty steps (see :func:`hook_work`): the figure load disturbs least.
Then the exit check (every frozen tensor fingerprinted) next to one forward+backward, and that
check amortised over the default ``full_every`` steps.

Run: ``python benchmarks/bench_guard.py [--models resnet50,bert,llama] [--steps 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from freeze_widgets.freezing.targets import freeze
from freeze_widgets.verify.guard import DEFAULT_FULL_EVERY, FreezeGuard

Loss = Callable[[], torch.Tensor]
Built = tuple[nn.Module, list[nn.Parameter], Loss]


def resnet50() -> Built:
    from torchvision.models import resnet50 as build

    model = build(num_classes=10)
    freeze(model, *[n for n, _ in model.named_children() if n != "fc"])
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    model.train()
    return model, list(model.fc.parameters()), lambda: nn.functional.cross_entropy(model(x), y)


def bert() -> Built:
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(num_labels=2))
    freeze(model, "bert.embeddings", *[f"bert.encoder.layer.{i}" for i in range(8)])
    ids, y = torch.randint(0, 30000, (4, 64)), torch.randint(0, 2, (4,))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, trainable, lambda: model(input_ids=ids, labels=y).loss


def llama(hidden: int, layers: int) -> Built:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        vocab_size=32000,
    )
    model = get_peft_model(
        LlamaForCausalLM(config), LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
    )
    ids = torch.randint(0, 32000, (1, 64))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, trainable, lambda: model(input_ids=ids, labels=ids).loss


def _timed(loss: Loss, opt: torch.optim.Optimizer | None) -> tuple[float, float]:
    """One step (forward, backward, and ``opt.step()`` unless None): wall and CPU seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    loss().backward()
    if opt is not None:
        opt.step()
    return time.perf_counter() - t0, time.process_time() - c0


def hook_work(model: nn.Module, trainable: list[nn.Parameter], calls: int = 50) -> float:
    """Seconds the guard's step hooks add to one ``step()``, measured on empty steps.

    With every ``.grad`` None an optimizer step updates nothing, so a hooked and a plain
    ``step()`` differ only by the guard's pre- and post-step work (full checks off here, as
    they come once per ``full_every`` steps). Little disturbed by load: the work is short.
    """
    plain, hooked = (torch.optim.AdamW(trainable, lr=1e-5) for _ in range(2))
    for p in trainable:
        p.grad = None
    spent = {"plain": [], "hooked": []}
    with FreezeGuard(model, hooked, full_every=0):
        for _ in range(calls):
            for side, opt in (("plain", plain), ("hooked", hooked)):
                t0 = time.perf_counter()
                opt.step()
                spent[side].append(time.perf_counter() - t0)
    return statistics.median(spent["hooked"]) - statistics.median(spent["plain"])


def measure(name: str, built: Built, steps: int) -> None:
    model, trainable, loss = built
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    # Three optimizers over the same trainable tensors: only the guards' ones are hooked, so
    # the three sides share model, batch and memory, and run interleaved under the same load.
    plain, guarded, old = (torch.optim.AdamW(trainable, lr=1e-5) for _ in range(3))
    guard = FreezeGuard(model, guarded, raise_on_violation=True).start()
    everything = FreezeGuard(model, old, raise_on_violation=True, full_every=1).start()
    times: dict[str, list[float]] = {"plain": [], "guarded": [], "old": []}
    cpu: dict[str, list[float]] = {"plain": [], "guarded": [], "old": []}
    for i in range(steps + 1):
        for side, opt in (("plain", plain), ("guarded", guarded), ("old", old)):
            wall, used = _timed(loss, opt)
            if i:  # the first round warms up
                times[side].append(wall)
                cpu[side].append(used)
    everything.stop()
    t0 = time.perf_counter()
    guard.stop()
    exit_check = time.perf_counter() - t0
    fwd_bwd = min(_timed(loss, None)[0] for _ in range(2))
    work = hook_work(model, trainable)
    report = guard.report
    assert report.ok, str(report)
    per_step = sum(1 for _, n in report.checked if n > report.full_checks)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"{name:9s} frozen {frozen / 1e6:7.1f}M | plain step {med['plain']:6.3f} s wall, "
        f"{mcpu['plain']:6.3f} s CPU | guarded / plain: CPU {mcpu['guarded'] / mcpu['plain']:5.3f},"
        f" wall median {med['guarded'] / med['plain']:5.3f}, fastest "
        f"{best['guarded'] / best['plain']:5.3f} | everything after every step: CPU "
        f"{mcpu['old'] / mcpu['plain']:5.3f}, wall median {med['old'] / med['plain']:5.3f} | exit "
        f"check {exit_check:6.3f} s = {exit_check / fwd_bwd:4.2f} x forward+backward | full "
        f"check every {DEFAULT_FULL_EVERY} steps adds {exit_check / DEFAULT_FULL_EVERY / med['plain']:.2%}"
        f" | per step: {per_step} tensors, {len(report.checked) - per_step} only in full checks"
        f" | hook work per step {work * 1e3:.3f} ms = {work / med['plain']:.3%} of a plain step"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet50,bert,llama")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--llama-hidden", type=int, default=1024)
    parser.add_argument("--llama-layers", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    builders: dict[str, Callable[[], Built]] = {
        "resnet50": resnet50,
        "bert": bert,
        "llama": lambda: llama(args.llama_hidden, args.llama_layers),
    }
    for name in args.models.split(","):
        measure(name, builders[name](), args.steps)


if __name__ == "__main__":
    main()
