"""Output shapes beside each row: a meta-device forward, checked against a real one."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from freeze_widgets.ui.explorer import FreezeExplorer
from freeze_widgets.ui.shapes import output_shapes


def real_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Independently: hooks on the real model, a real forward in eval mode."""
    found: dict[str, tuple[int, ...]] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=n: found.__setitem__(n, tuple(out.shape)))
        for n, m in model.named_modules()
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return found


def test_meta_shapes_match_a_real_forward_and_leave_the_model_alone() -> None:
    model = resnet18(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shapes = output_shapes(model)
    assert shapes == real_shapes(model, torch.randn(2, 3, 224, 224))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics untouched
    assert not model._forward_hooks and not model.layer1._forward_hooks


def test_rows_carry_shapes_and_a_model_that_cannot_run_gets_none() -> None:
    ex = FreezeExplorer(resnet18(num_classes=10))
    records = {r["p"]: r for r in ex.tree_view.rows}
    assert records["layer1"]["os"] == [2, 64, 56, 56] and records["fc"]["os"] == [2, 10]
    ex.close()

    class NeedsTwo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + y

    assert output_shapes(NeedsTwo()) == {}
    ex = FreezeExplorer(NeedsTwo())
    assert all("os" not in r for r in ex.tree_view.rows)
    ex.close()
