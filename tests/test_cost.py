"""estimate_cost against numbers worked out by hand on small models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freeze_widgets.cost.estimate import CostModel, estimate_cost
from freeze_widgets.freezing.targets import freeze

from .conftest import Nested


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_param_grad_and_state_bytes_for_a_linear_stack() -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 5))
    total = sum(p.numel() for p in model.parameters())  # 220 + 105
    freeze(model, "0")
    trainable = 105
    adamw = estimate_cost(model, "adamw", example_inputs=False)
    assert adamw.weight_bytes == 4 * total
    assert adamw.grad_bytes == 4 * trainable
    assert adamw.optimizer_state_bytes == 2 * 4 * trainable
    assert adamw.activation_bytes == 0
    assert any("not estimated" in a for a in adamw.assumptions)
    assert estimate_cost(model, "sgd", example_inputs=False).optimizer_state_bytes == 0
    momentum = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert estimate_cost(model, momentum, example_inputs=False).optimizer_state_bytes == 420
    half = estimate_cost(model, "adam", dtype=torch.bfloat16, example_inputs=False)
    assert half.weight_bytes == 2 * total
    assert adamw.unfrozen is not None
    assert adamw.unfrozen.grad_bytes == 4 * total
    assert adamw.unfrozen.total_bytes == 4 * total * 4  # weights + grads + two states
    assert adamw.total_bytes == 4 * total + 3 * 4 * trainable


def test_tied_weights_and_buffers_counted_once() -> None:
    model = Nested()
    est = estimate_cost(model, "sgd", example_inputs=False)
    params = sum(p.numel() for p in model.parameters())
    float_buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    counters = sum(b.numel() * 8 for b in model.buffers() if not b.is_floating_point())
    assert est.weight_bytes == 4 * (params + float_buffers) + counters


def test_two_layer_mlp_activations_by_hand() -> None:
    model = _mlp()
    x = torch.randn(5, 4)
    # Unfrozen: Linear 1 saves its input x (5*4 floats, for its weight grad); ReLU saves its
    # output h (5*8), which Linear 2 also needs for its weight grad (counted once).
    assert estimate_cost(model, example_inputs=x).activation_bytes == 4 * (20 + 40)
    freeze(model, "0")  # x no longer needed; h still is
    est = estimate_cost(model, example_inputs=x)
    assert est.activation_bytes == 4 * 40
    # Backward MACs: L1 160, L2 120; unfrozen 2*280 - 160 (no input grad for L1) = 400.
    assert est.backward_share == pytest.approx(120 / 400)
    model = _mlp()
    freeze(model, "2")  # L1 trains: x saved, ReLU output saved for the flow through L2
    est = estimate_cost(model, example_inputs=x)
    assert est.activation_bytes == 4 * (20 + 40)
    assert est.backward_share == pytest.approx((160 + 120) / 400)
    freeze(model, "")
    assert estimate_cost(model, example_inputs=x).activation_bytes == 0


def test_image_default_input_and_frozen_prefix_saves_nothing_below() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 224 * 224, 2)
    )
    est = estimate_cost(model)
    # A batch of 2 (BatchNorm in train mode refuses 1): conv input 3*224*224 and ReLU output
    # 2*224*224 per image (Flatten's view of it is free).
    assert est.activation_bytes == 2 * 4 * (3 + 2) * 224 * 224
    assert any("(2, 3, 224, 224)" in a for a in est.assumptions), est.assumptions
    freeze(model, "0")
    assert estimate_cost(model).activation_bytes == 2 * 4 * 2 * 224 * 224
    assert "less than unfrozen" in estimate_cost(model).summary()


def test_estimate_does_not_change_the_model() -> None:
    model = Nested()
    freeze(model, "body.stem")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    est = estimate_cost(model, example_inputs=torch.randn(2, 3, 8, 8))
    assert est.activation_bytes > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == [p.requires_grad for p in model.parameters()]
    assert modes == [m.training for m in model.modules()]


def test_cost_model_caches_per_freeze_state() -> None:
    model = _mlp()
    cost = CostModel(model, torch.randn(5, 4))
    assert cost.estimate().activation_bytes == 240
    freeze(model, "0")
    assert cost.estimate().activation_bytes == 160
    assert len(cost._saved) == 2  # the unfrozen state and this one
    assert cost.estimate("sgd").activation_bytes == 160
    assert len(cost._saved) == 2


def test_bad_arguments() -> None:
    model = _mlp()
    with pytest.raises(TypeError, match="model"):
        estimate_cost(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        estimate_cost(model, "lamb", example_inputs=False)
    with pytest.raises(TypeError, match="optimizer"):
        estimate_cost(model, 3, example_inputs=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="example_inputs"):
        estimate_cost(model, example_inputs="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        estimate_cost(model, dtype=torch.int8, example_inputs=False)


class _NoMeta(nn.Module):
    """A layer whose forward cannot run on the meta device (it reads a value)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    real_forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_meta:
            _NoMeta.real_forwards += 1
        if float(x.sum()) > 1e9:  # .item() has no meta kernel
            return x
        return torch.relu(self.lin(x))


def test_never_runs_a_real_forward_when_meta_cannot_run() -> None:
    """The docs promise nothing is run or allocated: no real copy as a fallback (issue 19)."""
    model = _NoMeta()
    before = model.lin.weight.detach().clone()
    est = estimate_cost(model, example_inputs=torch.randn(5, 4))
    assert _NoMeta.real_forwards == 0
    assert est.activation_bytes == 0 and est.weight_bytes == 4 * 20
    assert any(a.startswith("Could not estimate activations: ") for a in est.assumptions)
    assert "activations not included" in est.summary()
    assert torch.equal(before, model.lin.weight)


def test_forward_peak_counts_transient_feature_maps_by_hand() -> None:
    x = torch.randn(5, 4)
    model = _mlp()  # Linear(4, 8) -> ReLU -> Linear(8, 3)
    freeze(model, "")  # everything frozen: nothing is saved for backward
    est = estimate_cost(model, "sgd", example_inputs=x)
    weights = 4 * sum(p.numel() for p in model.parameters())
    assert est.activation_bytes == 0
    # While ReLU runs, Linear 1's output (5*8) and ReLU's output (5*8) are alive together;
    # afterwards Linear 1's output is freed, and h (5*8) + the logits (5*3) are less.
    assert est.forward_peak_bytes == 4 * (40 + 40)
    assert est.transient_bytes == 4 * 80
    assert est.total_bytes == weights + 4 * 80
    # Unfrozen: x (saved, alive throughout) plus the same two feature maps at once; the
    # saved h is one of them, so the peak is 20 + 80 floats, above the 60 saved.
    full = estimate_cost(_mlp(), "sgd", example_inputs=x)
    assert (full.activation_bytes, full.forward_peak_bytes) == (4 * 60, 4 * 100)
    assert full.total_bytes == 2 * weights + 4 * 100  # weights + grads + peak


def test_in_place_ops_and_views_add_no_transient_bytes() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8, 3))
    freeze(model, "")
    est = estimate_cost(model, "sgd", example_inputs=torch.randn(5, 4))
    # ReLU writes into Linear 1's output and Flatten returns a view of it: one 5*8 map, then
    # the logits (5*3) beside it.
    assert est.forward_peak_bytes == 4 * (40 + 15)


def test_summary_says_a_factor_only_when_it_reads_well() -> None:
    """1.0x would read as "no saving": small savings are said in bytes instead."""
    from freeze_widgets.cost.estimate import CostEstimate

    def estimate(total: int, unfrozen: int) -> CostEstimate:
        def one(n: int) -> CostEstimate:
            return CostEstimate(n, 0, 0, 0, 1.0)

        return CostEstimate(total, 0, 0, 0, 1.0, unfrozen=one(unfrozen))

    assert estimate(1_000_000, 3_400_000).summary().endswith(", 3.4x less than unfrozen")
    assert estimate(177_050_000, 177_090_000).summary().endswith(", 39.1 KiB less than unfrozen")
    assert estimate(1_000_000, 1_000_000).summary().endswith(", the same as unfrozen")
