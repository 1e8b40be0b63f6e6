"""Counts and costs that were silently wrong (issue 19, items 2 and 8), with peers as oracles.

PEFT's ``get_nb_trainable_parameters`` is the oracle for 4-bit weights; a real optimizer's
state after one step is the oracle for the optimizer state estimate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from freeze_widgets import (
    FreezeExplorer,
    ModuleTree,
    count_parameters,
    estimate_cost,
    export_onnx,
    freeze,
    unfreeze,
)

from .conftest import model_fingerprint


class Params4bit(nn.Parameter):
    """A faithful stand-in for ``bitsandbytes.nn.Params4bit`` (bitsandbytes is not installed
    here): packed uint8 storage holding two 4-bit values a byte, frozen, with ``quant_storage``."""

    def __new__(
        cls,
        data: torch.Tensor,
        requires_grad: bool = False,
        quant_storage: torch.dtype = torch.uint8,
    ) -> Params4bit:
        param = super().__new__(cls, data, requires_grad)
        param.quant_storage = quant_storage  # type: ignore[attr-defined]
        return param


def qlora_like() -> tuple[nn.Module, int]:
    """Two 4-bit Linear layers with trainable LoRA adapters, and the unquantized size."""
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "q": nn.Linear(32, 32, bias=False),
            "v": nn.Linear(32, 16, bias=False),
            "q_lora_a": nn.Linear(32, 4, bias=False),
            "q_lora_b": nn.Linear(4, 32, bias=False),
            "norm": nn.LayerNorm(32),
        }
    )
    full = sum(p.numel() for p in model.parameters())
    for name in ("q", "v"):
        layer = model[name]
        packed = torch.zeros(layer.weight.numel() // 2, 1, dtype=torch.uint8)
        layer.weight = Params4bit(packed)
    return model, full


def test_4bit_weights_count_like_peft_and_their_unquantized_size() -> None:
    from peft import PeftModel

    model, full = qlora_like()
    peft_trainable, peft_total = PeftModel.get_nb_trainable_parameters(model)  # type: ignore[arg-type]
    counts = count_parameters(model)
    assert (
        (counts.total, counts.trainable) == (peft_total, peft_trainable) == (full, 32 * 4 * 2 + 64)
    )
    root = ModuleTree(model).nodes[0]
    assert (root.total, root.trainable) == (full, peft_trainable)


def test_4bit_weights_cost_their_packed_bytes() -> None:
    model, _ = qlora_like()
    est = estimate_cost(model, "sgd", example_inputs=False)
    packed = 32 * 32 // 2 + 16 * 32 // 2  # one byte per two 4-bit values
    floats = sum(p.numel() for p in model.parameters() if p.is_floating_point())
    assert est.weight_bytes == packed + floats * 4


def test_int8_and_bool_parameters_cost_their_own_element_size() -> None:
    model = nn.Linear(8, 4)
    model.register_parameter(
        "q", nn.Parameter(torch.zeros(100, dtype=torch.int8), requires_grad=False)
    )
    model.register_parameter(
        "mask", nn.Parameter(torch.ones(50, dtype=torch.bool), requires_grad=False)
    )
    for dtype, size in ((torch.float32, 4), (torch.float16, 2)):
        est = estimate_cost(model, "adamw", dtype=dtype, example_inputs=False)
        assert est.weight_bytes == 36 * size + 100 + 50
        assert est.grad_bytes == 36 * size


def _real_state_bytes(optimizer: torch.optim.Optimizer, model: nn.Module) -> int:
    """Bytes of the per-element state a real optimizer holds after one step (not the counters)."""
    model(torch.randn(3, 8)).sum().backward()
    optimizer.step()
    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.Adam(ps, amsgrad=True),
        lambda ps: torch.optim.AdamW(ps, amsgrad=True),
        torch.optim.Adam,
        lambda ps: torch.optim.RMSprop(ps, centered=True, momentum=0.9),
        lambda ps: torch.optim.RMSprop(ps, momentum=0.9),
        lambda ps: torch.optim.RMSprop(ps, centered=True),
        torch.optim.RMSprop,
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        torch.optim.Adagrad,
    ],
    ids=["adam-amsgrad", "adamw-amsgrad", "adam", "rmsprop-centered-momentum",
         "rmsprop-momentum", "rmsprop-centered", "rmsprop", "sgd-momentum", "adagrad"],
)  # fmt: skip
def test_optimizer_state_matches_what_the_optimizer_allocates(make: object) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    freeze(model, "0")
    optimizer = make([p for p in model.parameters() if p.requires_grad])  # type: ignore[operator]
    est = estimate_cost(model, optimizer, example_inputs=False)
    assert est.optimizer_state_bytes == _real_state_bytes(optimizer, model)


def test_nan_outputs_are_not_reported_as_a_verified_export(tmp_path: Path) -> None:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[1, 2] = float("nan")
    report = export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx")
    assert report.parity and not report.ok
    assert all(p.non_finite and not p.ok for p in report.parity)
    assert "NaN or inf" in str(report)


@pytest.mark.parametrize("layer", [nn.BatchNorm2d(4), nn.BatchNorm1d(4)], ids=["2d", "1d"])
def test_a_batchnorm_passed_as_the_model_is_refused_for_bn_frozen(layer: nn.Module) -> None:
    """timm's freeze test: a BatchNorm as the root module is refused clearly."""
    before = model_fingerprint(layer)
    with pytest.raises(ValueError, match=r'the model itself is a BatchNorm.d: bn="frozen"'):
        freeze(layer, bn="frozen")
    assert model_fingerprint(layer) == before
    assert "" not in dict(layer.named_children())
    freeze(layer)  # bn="eval" works in place: statistics stay fixed in train mode
    stats = layer.running_mean.clone()  # type: ignore[union-attr]
    shape = (6, 4, 3, 3) if isinstance(layer, nn.BatchNorm2d) else (6, 4)
    layer.train()(torch.randn(shape))
    assert torch.equal(layer.running_mean, stats)  # type: ignore[arg-type]
    unfreeze(layer)
    assert list(layer.modules()) == [layer]


def _lazy() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.LazyLinear(3))


@pytest.mark.parametrize(
    "call",
    [count_parameters, ModuleTree, FreezeExplorer],
    ids=["count_parameters", "ModuleTree", "FreezeExplorer"],
)
def test_lazy_parameters_get_a_clear_message(call: object) -> None:
    model = _lazy()
    before = model_fingerprint(model)
    with pytest.raises(ValueError, match=r"'1\.weight', '1\.bias'.*forward pass"):
        call(model)  # type: ignore[operator]
    assert model_fingerprint(model) == before
    model(torch.randn(2, 4))  # materialised: now it counts like any model
    assert count_parameters(model).total == 4 * 4 + 4 + 4 * 3 + 3
