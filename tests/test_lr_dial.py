"""The learning-rate dial: multipliers per group and row, the spec field, the configs."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeSpec, freeze, param_groups
from freeze_widgets.training.lr_dial import dial_multipliers, lr_config, row_multipliers
from freeze_widgets.training.param_groups import param_lr_table


def model3() -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(OrderedDict(a=nn.Linear(4, 4), b=nn.Linear(4, 4)))
    return nn.Sequential(
        OrderedDict(stem=nn.Linear(4, 4), act=nn.ReLU(), body=body, head=nn.Linear(4, 2))
    )


def test_modes_give_one_multiplier_per_top_level_group() -> None:
    m = model3()
    assert dial_multipliers(m) == {"stem": 1.0, "body": 1.0, "head": 1.0}
    assert dial_multipliers(m, "layer_decay", factor=0.5) == {
        "stem": 0.25,
        "body": 0.5,
        "head": 1.0,
    }
    disc = dial_multipliers(m, "discriminative", lo=0.01)
    assert [round(v, 12) for v in disc.values()] == [0.01, 0.1, 1.0]  # 0.01 * 10**i
    edited = dial_multipliers(m, "layer_decay", factor=0.5, edits={"body.b": 2.0})
    assert edited["body.b"] == 2.0 and edited["body"] == 0.5


def test_rows_show_frozen_at_zero_and_mixed_as_none() -> None:
    m = model3()
    freeze(m, "stem")
    mults = dial_multipliers(m, "layer_decay", factor=0.5, edits={"body.b": 2.0})
    rows = row_multipliers(m, mults)
    assert rows["stem"] == 0.0  # frozen
    assert rows["body.a"] == 0.5 and rows["body.b"] == 2.0 and rows["body"] is None
    assert rows["head"] == 1.0 and rows[""] is None and "act" not in rows
    # The same multipliers through param_groups: what the rows say is what trains.
    table = param_lr_table(param_groups(m, 1e-3, lr_mult=mults))
    for name, rate in table.items():
        row = name.rsplit(".", 1)[0]
        assert math.isclose(rate, 1e-3 * rows[row], rel_tol=1e-12)  # type: ignore[operator]


def test_spec_saves_the_dial_and_param_groups_reads_it() -> None:
    m = model3()
    mults = dial_multipliers(m, "discriminative", lo=0.1)
    spec = FreezeSpec.from_model(m)
    saved = FreezeSpec.from_json(FreezeSpec(spec.frozen, spec.bn, lr_mult=mults).to_json())
    assert param_lr_table(param_groups(m, 1.0, spec=saved)) == param_lr_table(
        param_groups(m, 1.0, lr_mult=mults)
    )


def test_torch_config_runs_without_freeze_widgets_and_matches_param_groups() -> None:
    m = model3()
    freeze(m, "body.a")
    mults = {"stem": 0.1, "body": 0.5, "body.b.bias": 3.0}
    code = lr_config(mults, "torch", lr=2e-3)
    assert "freeze_widgets" not in code
    scope: dict[str, object] = {"model": m}
    exec(code, scope)
    optimizer = scope["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    names = {id(p): n for n, p in m.named_parameters()}
    got = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert got == pytest.approx(param_lr_table(param_groups(m, 2e-3, lr_mult=mults)))
    assert "body.a.weight" not in got


def test_mmengine_config_and_targets_that_cannot_express_it() -> None:
    cfg = lr_config({"backbone": 0.1}, "mmengine", lr=1e-3)
    assert cfg == {
        "optimizer": {"lr": 1e-3},
        "paramwise_cfg": {"custom_keys": {"backbone": {"lr_mult": 0.1}}},
    }
    with pytest.raises(ValueError, match="timm's create_optimizer_v2 cannot express"):
        lr_config({"backbone": 0.1}, "timm")
    with pytest.raises(ValueError, match="substrings and cannot express the patterns"):
        lr_config({"*.bias": 0.1}, "mmengine")
    with pytest.raises(ValueError, match=r"Unknown config target 'torchh'.*'torch'"):
        lr_config({}, "torchh")


def test_bad_dial_settings_are_clear_errors() -> None:
    m = model3()
    with pytest.raises(ValueError, match=r"Unknown lr dial mode 'layer-decay'.*'layer_decay'"):
        dial_multipliers(m, "layer-decay")
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        dial_multipliers(m, "layer_decay", factor=1.2)
    with pytest.raises(ValueError, match="lo must be a positive"):
        dial_multipliers(m, "discriminative", lo=-0.1)
    with pytest.raises(ValueError, match=r"'body\.c'.*Did you mean.*body\.[ab]"):
        dial_multipliers(m, edits={"body.c": 2.0})
    with pytest.raises(ValueError, match="no parameters"):
        dial_multipliers(nn.Sequential())
