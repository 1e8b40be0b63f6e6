"""Plain PyTorch code for learning-rate multipliers by path (no freeze_widgets import).

Shared by :meth:`FreezeSpec.to_code <freeze_widgets.freezing.spec.FreezeSpec.to_code>` and
the dial's ``lr_config(..., "torch")``: the longest path that holds a parameter sets its
multiplier, frozen parameters stay out of the optimizer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["lr_groups_code"]

_TORCH_CODE = '''import torch

lr = {lr!r}
lr_mult = {mults}


def mult_of(name):
    """The multiplier of the longest path in lr_mult that holds parameter `name`."""
    keys = [k for k in lr_mult if name == k or name.startswith(k + ".") or k == ""]
    return lr_mult[max(keys, key=len)] if keys else 1.0


by_mult = {{}}
for name, p in model.named_parameters():
    if p.requires_grad:  # frozen parameters stay out of the optimizer
        by_mult.setdefault(mult_of(name), []).append(p)
param_groups = [{{"params": ps, "lr": lr * m}} for m, ps in by_mult.items()]
optimizer = torch.optim.AdamW(param_groups)
'''


def lr_groups_code(mults: Mapping[str, float], lr: float = 1e-3) -> str:
    """Code that builds ``param_groups`` and an AdamW ``optimizer`` for ``model`` in scope."""
    return _TORCH_CODE.format(lr=lr, mults=json.dumps(dict(mults), indent=4))
