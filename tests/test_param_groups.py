"""param_groups: per-group rates checked against timm, fastai's formula and mmengine's rule."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeSpec, freeze
from freeze_widgets.training.param_groups import (
    DEFAULT_NO_DECAY,
    param_groups,
    param_lr_table,
)
from tests.conftest import Tied


def small_vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=4,
        num_classes=5,
    )


def four_linears() -> nn.Sequential:
    """Four parameter groups, with a parameter-free child (not a group) between them."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
    )


def overlapping() -> nn.Module:
    """Paths where one key is a prefix (and a substring) of another: mmengine's tricky case."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        OrderedDict(layer1=nn.Linear(4, 4), layer2=nn.Linear(4, 4), norm=nn.LayerNorm(4))
    )
    return nn.Sequential(OrderedDict(backbone=backbone, neck=nn.Linear(4, 4), head=nn.Linear(4, 2)))


def names_of(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- timm layer decay


@pytest.mark.slow
def test_layer_decay_matches_timm_after_timm_scheduler_applies_lr_scale() -> None:
    from timm.optim import param_groups_layer_decay
    from timm.scheduler import StepLRScheduler

    model = small_vit()
    lr, decay, wd = 1e-3, 0.75, 0.05
    timm_groups = param_groups_layer_decay(
        model, weight_decay=wd, no_weight_decay_list=model.no_weight_decay(), layer_decay=decay
    )
    timm_opt = torch.optim.AdamW(timm_groups, lr=lr)
    StepLRScheduler(timm_opt, decay_t=1000).step(0)  # timm's scheduler applies lr_scale
    names = names_of(model)
    want_lr = {names[id(p)]: g["lr"] for g in timm_opt.param_groups for p in g["params"]}
    want_wd = {names[id(p)]: g["weight_decay"] for g in timm_opt.param_groups for p in g["params"]}

    ours = param_groups(
        model,
        lr,
        layer_decay=decay,
        weight_decay=wd,
        no_decay=(*DEFAULT_NO_DECAY, *model.no_weight_decay()),
    )
    got_lr = param_lr_table(ours)
    got_wd = {n: g["weight_decay"] for g in ours for n in g["param_names"]}
    assert set(got_lr) == set(want_lr) == {n for n, _ in model.named_parameters()}
    assert len({round(v, 12) for v in want_lr.values()}) == 6  # 4 blocks, embed, head
    for name, rate in want_lr.items():
        assert math.isclose(got_lr[name], rate, rel_tol=1e-12), name
    assert got_wd == want_wd

    # With the rate already set, any scheduler works: torch's and timm's keep the ratios.
    opt = torch.optim.AdamW(ours, lr=lr)
    StepLRScheduler(opt, decay_t=1, decay_rate=0.5).step(1)
    for g in opt.param_groups:
        for n in g["param_names"]:
            assert math.isclose(g["lr"], want_lr[n] * 0.5, rel_tol=1e-12), n


def test_layer_decay_on_top_level_groups_without_group_matcher() -> None:
    model = four_linears()
    groups = param_groups(model, 1.0, layer_decay=0.5)
    table = param_lr_table(groups)
    # Depth groups "0", "2", "3", "4" (ReLU has no parameters): 0.5**3, 0.5**2, 0.5, 1.
    for prefix, want in (("0.", 0.125), ("2.", 0.25), ("3.", 0.5), ("4.", 1.0)):
        assert {v for n, v in table.items() if n.startswith(prefix)} == {want}
    assert [g["group"] for g in groups] == ["0", "2", "3", "4"]


# --------------------------------------------------------------------------- fastai slices


def test_slice_spreads_like_fastai_even_mults() -> None:
    model = four_linears()
    lo, hi, n = 1e-5, 1e-2, 4
    step = (hi / lo) ** (1 / (n - 1))  # fastai: even_mults(start, stop, n)
    want = [lo * step**i for i in range(n)]
    table = param_lr_table(param_groups(model, slice(lo, hi)))
    for i, prefix in enumerate(("0.", "2.", "3.", "4.")):
        rates = {v for k, v in table.items() if k.startswith(prefix)}
        assert len(rates) == 1 and math.isclose(rates.pop(), want[i], rel_tol=1e-12)


def test_slice_without_start_is_fastai_hi_over_ten() -> None:
    table = param_lr_table(param_groups(four_linears(), slice(1e-3)))
    assert {v for k, v in table.items() if not k.startswith("4.")} == {1e-4}
    assert {v for k, v in table.items() if k.startswith("4.")} == {1e-3}


# --------------------------------------------------------------------------- multipliers


def mmengine_lr_mult(name: str, custom_keys: dict[str, float]) -> float:
    """mmengine DefaultOptimWrapperConstructor: the longest key that is a substring wins."""
    for key in sorted(custom_keys, key=len, reverse=True):
        if key in name:
            return custom_keys[key]
    return 1.0


def test_lr_mult_longest_match_agrees_with_mmengine_on_overlapping_keys() -> None:
    model = overlapping()
    keys = {"backbone": 0.1, "backbone.layer1": 0.01, "backbone.layer1.bias": 0.5, "head": 10.0}
    table = param_lr_table(param_groups(model, 2e-3, lr_mult=keys))
    for name, _ in model.named_parameters():
        assert math.isclose(table[name], 2e-3 * mmengine_lr_mult(name, keys), rel_tol=1e-12), name
    assert len(set(table.values())) == 5  # 0.1, 0.01, 0.5, 10 and the untouched neck


def test_glob_multiplier_and_zero_multiplier_without_decay() -> None:
    model = overlapping()
    keys = {"*.weight": 0.5, "neck": 3.0, "neck.weight": 0.0}
    groups = param_groups(model, 1.0, lr_mult=keys, weight_decay=0.1)
    table = param_lr_table(groups)
    assert table["backbone.layer1.weight"] == 0.5 and table["backbone.layer1.bias"] == 1.0
    assert table["head.weight"] == 0.5  # "*.weight" (8 characters) beats "neck" (4) ...
    assert table["neck.bias"] == 3.0  # ... where both match; only "neck" matches here
    assert table["neck.weight"] == 0.0  # "neck.weight" is the longest
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert decay["neck.weight"] == 0.0  # rate 0: no decay, so a later raise starts clean
    assert decay["backbone.layer1.weight"] == 0.1
    assert decay["backbone.layer1.bias"] == decay["backbone.norm.weight"] == 0.0  # bias, norm


def test_frozen_parameters_left_out_and_tied_parameter_in_one_group() -> None:
    model = Tied()
    freeze(model, "shared")
    groups = param_groups(model, 1e-3, lr_mult={"decoder": 3.0})
    listed = [p for g in groups for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed})
    assert {id(p) for p in listed} == {id(p) for p in model.parameters() if p.requires_grad}
    # The tied weight is listed once, under its first name (embed), in the group "embed".
    tied = [g for g in groups if any(p is model.embed.weight for p in g["params"])]
    assert len(tied) == 1 and tied[0]["group"] == "embed"
    assert tied[0]["lr"] == 3e-3  # ... and the "decoder" key reaches it through its alias
    torch.optim.SGD(groups, lr=1e-3).step()  # a real optimizer takes them as they are


def test_spec_multipliers_and_freeze_are_used() -> None:
    model = overlapping()
    freeze(model, "neck")
    spec = FreezeSpec.from_model(model)
    spec = FreezeSpec(spec.frozen, spec.bn, lr_mult={"backbone": 0.1})
    table = param_lr_table(param_groups(model, 1.0, spec=spec, lr_mult={"head": 2.0}))
    assert not any(n.startswith("neck.") for n in table)
    assert table["backbone.layer2.weight"] == 0.1 and table["head.weight"] == 2.0
    unfrozen = overlapping()
    with pytest.raises(ValueError, match=r"not frozen as the spec says.*spec\.apply\(model\)"):
        param_groups(unfrozen, 1.0, spec=spec)


def test_spec_lr_field_round_trips_and_old_specs_load() -> None:
    spec = FreezeSpec(("backbone",), "eval", lr_mult={"head": 10, "neck": 0.5})
    assert FreezeSpec.from_json(spec.to_json()) == spec
    assert '"version": 2' in spec.to_json()
    old = '{"format": "freeze_widgets.FreezeSpec", "version": 1, "frozen": ["a"], "bn": "eval"}'
    loaded = FreezeSpec.from_json(old)
    assert loaded.lr_mult == () and loaded.frozen == ("a",)
    assert '"version": 1' in loaded.to_json() and "lr_mult" not in loaded.to_json()
    with pytest.raises(ValueError, match="written by a newer freeze_widgets"):
        FreezeSpec.from_json(old.replace('"version": 1', '"version": 3'))
    with pytest.raises(ValueError, match=r"not a FreezeSpec: lr_mult\['x'\] must be"):
        FreezeSpec.from_json(spec.to_json().replace('"head": 10.0', '"x": -1'))


# --------------------------------------------------------------------------- bad input


def test_unknown_multiplier_path_says_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"lr_mult key 'backbone.layr1'.*Did you mean.*layer1"):
        param_groups(overlapping(), 1e-3, lr_mult={"backbone.layr1": 0.1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1e-3}, "lr must be a positive"),
        ({"lr": 0}, "lr must be a positive"),
        ({"lr": slice(-1e-5, 1e-3)}, r"lr\.start must be a positive"),
        ({"lr": 1e-3, "lr_mult": {"head": -2}}, r"lr_mult\['head'\] must be a positive"),
        ({"lr": 1e-3, "weight_decay": -0.1}, "weight_decay must be a positive"),
        ({"lr": 1e-3, "layer_decay": 0}, r"layer_decay must be in \(0, 1\]"),
        ({"lr": 1e-3, "layer_decay": 1.5}, r"layer_decay must be in \(0, 1\]"),
        ({"lr": 1e-3, "layer_decay": float("nan")}, r"layer_decay must be in \(0, 1\]"),
        ({"lr": slice(1e-5, 1e-3), "layer_decay": 0.5}, "not both"),
    ],
)
def test_bad_rates_are_clear_errors(kwargs: dict[str, object], match: str) -> None:
    lr = kwargs.pop("lr")
    with pytest.raises(ValueError, match=match):
        param_groups(overlapping(), lr, **kwargs)  # type: ignore[arg-type]


def test_wrong_types_and_empty_or_frozen_models() -> None:
    with pytest.raises(TypeError, match="lr must be a number"):
        param_groups(overlapping(), "1e-3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lr_mult must map paths"):
        param_groups(overlapping(), 1e-3, lr_mult=["head"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        param_groups("model", 1e-3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no parameters"):
        param_groups(nn.Sequential(nn.ReLU()), 1e-3)
    frozen = overlapping()
    freeze(frozen)
    with pytest.raises(ValueError, match=f"all {len(list(frozen.parameters()))} parameters are"):
        param_groups(frozen, 1e-3)
    assert param_groups(overlapping(), 1e-3, layer_decay=1)  # 1 is inside (0, 1]
