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

Per model: a fresh guard each round (its start-up snapshot untimed), ``--steps`` guarded steps
timed in one block, then ``--steps`` plain steps in their own block, after a warm-up step each;
rounds alternate and the fastest step of each side counts (load from other processes only adds
time). Printed: plain and guarded step, their ratio, the ratio with every frozen tensor
checked after every step (``full_every=1``, what the guard did before), the exit check (every frozen tensor
fingerprinted) next to one forward+backward, and the exit check amortised over the default
``full_every`` steps.

Run: ``python benchmarks/bench_guard.py [--models resnet50,bert,llama] [--steps 3]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from freeze_widgets.freezing.targets import freeze
from freeze_widgets.verify.guard import DEFAULT_FULL_EVERY, FreezeGuard

Step = Callable[[], None]


def resnet50() -> tuple[nn.Module, torch.optim.Optimizer, Step]:
    from torchvision.models import resnet50 as build

    model = build(num_classes=10)
    freeze(model, *[n for n, _ in model.named_children() if n != "fc"])
    opt = torch.optim.AdamW(model.fc.parameters(), lr=1e-3)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return model, opt, step


def bert() -> tuple[nn.Module, torch.optim.Optimizer, Step]:
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(num_labels=2))
    freeze(model, "bert.embeddings", *[f"bert.encoder.layer.{i}" for i in range(8)])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids, y = torch.randint(0, 30000, (4, 64)), torch.randint(0, 2, (4,))
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=y).loss.backward()
        opt.step()

    return model, opt, step


def llama(hidden: int, layers: int) -> tuple[nn.Module, torch.optim.Optimizer, Step]:
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
    base = LlamaForCausalLM(config)
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 32000, (1, 64))
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()

    return model, opt, step


def _block(step: Step, n: int) -> float:
    """Fastest of ``n`` steps (one untimed warm-up first)."""
    step()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(name: str, built: tuple[nn.Module, torch.optim.Optimizer, Step], steps: int,
            rounds: int) -> None:  # fmt: skip
    model, opt, step = built
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    plain = guarded = everything = exit_check = fwd_bwd = float("inf")
    per_step = rest = 0
    for _ in range(rounds):
        guard = FreezeGuard(model, opt, raise_on_violation=True, full_every=1).start()
        everything = min(everything, _block(step, steps))
        guard.stop()
        guard = FreezeGuard(model, opt, raise_on_violation=True).start()
        guarded = min(guarded, _block(step, steps))
        t0 = time.perf_counter()
        guard.stop()
        exit_check = min(exit_check, time.perf_counter() - t0)
        report = guard.report
        per_step = sum(1 for _, n in report.checked if n > report.full_checks)
        rest = len(report.checked) - per_step
        assert report.ok, str(report)
        plain = min(plain, _block(step, steps))
        fwd_bwd = min(fwd_bwd, _block(step, 1))  # a whole step bounds forward + backward
    print(
        f"{name:9s} frozen {frozen / 1e6:7.1f}M | plain {plain:6.3f} s | guarded "
        f"{guarded:6.3f} s | ratio {guarded / plain:5.3f} | all every step (the old guard) "
        f"{everything / plain:5.3f} | exit check {exit_check:6.3f} s "
        f"= {exit_check / fwd_bwd:4.2f} x one step | amortised over {DEFAULT_FULL_EVERY} "
        f"steps +{exit_check / DEFAULT_FULL_EVERY / plain:.2%} | per step {per_step} tensors, "
        f"{rest} only in full checks"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet50,bert,llama")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--llama-hidden", type=int, default=1024)
    parser.add_argument("--llama-layers", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    builders: dict[str, Callable[[], tuple[nn.Module, torch.optim.Optimizer, Step]]] = {
        "resnet50": resnet50,
        "bert": bert,
        "llama": lambda: llama(args.llama_hidden, args.llama_layers),
    }
    for name in args.models.split(","):
        measure(name, builders[name](), args.steps, args.rounds)


if __name__ == "__main__":
    main()
