"""The trainers' rules as previewed here: their surprises caught, round trips, bad input."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from torch import nn

from freeze_widgets import FreezeSpec
from freeze_widgets.configs import InexpressibleError, from_config, preview, to_config
from freeze_widgets.configs._common import load_config
from freeze_widgets.configs.ms_swift import ratio_cut

from .config_tools import gpt2, grads, llama
from .conftest import model_fingerprint


def _numel(model: nn.Module, names: Any) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


def _layer_names(model: nn.Module, prefix: str) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(prefix)]


def test_axolotl_layers_1_trains_layers_10_to_19_and_the_preview_says_so() -> None:
    model = llama()
    result = preview("axolotl", "unfrozen_parameters:\n  - model.layers.1\n", model)
    expected = [n for i in [1, *range(10, 20)] for n in _layer_names(model, f"model.layers.{i}.")]
    assert sorted(result.trainable) == sorted(expected)
    assert _numel(model, result.trainable) == 11 * _numel(
        model, _layer_names(model, "model.layers.1.")
    )
    surprise = next(n for n in result.notes if "also trains" in n)
    assert "model.layers.10" in surprise and "'model.layers.1.'" in surprise
    # The fix it suggests trains layer 1 alone.
    fixed = preview("axolotl", {"unfrozen_parameters": ["model.layers.1."]}, model)
    assert sorted(fixed.trainable) == sorted(_layer_names(model, "model.layers.1."))
    assert not any("also trains" in n for n in fixed.notes)


@pytest.mark.parametrize(
    ("patterns", "features", "classifier"),
    [  # axolotl's own test cases (tests/test_freeze.py), as config keys
        (["features.layer"], True, False),
        (["classifier"], False, True),
        ([r"^features.[a-z]+.weight$", r"class[a-c]+"], True, False),
        (["features.layer", "classifier"], True, True),
        (["features.layer[1:5]"], True, False),
        (["features.layer[5]"], True, False),
        (["features.layer[:5]"], True, False),
        (["features.layer[4:]", "features.layer[5:6]"], True, False),
    ],
)
def test_axolotl_rule_on_axolotl_s_own_examples(
    patterns: list[str], features: bool, classifier: bool
) -> None:
    model = nn.Module()
    model.features = nn.Module()
    model.features.layer = nn.Linear(10, 10)
    model.classifier = nn.Linear(10, 2)
    result = preview("axolotl", {"unfrozen_parameters": patterns}, model)
    assert result.grad_map["features.layer.weight"] is features
    assert result.grad_map["classifier.weight"] is classifier
    if any(("[" in p and p.endswith("]") and ":" in p) or p.endswith("[5]") for p in patterns):
        assert any("weight decay moves the other rows" in n for n in result.notes)


def test_ms_swift_ratio_landing_mid_block_is_named_with_the_ratios_at_its_edges() -> None:
    model = llama()
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    # A budget that ends right after layer 5's q_proj: inside layer 5.
    upto = next(
        i for i, (n, _) in enumerate(named) if n == "model.layers.5.self_attn.q_proj.weight"
    )
    ratio = (sum(p.numel() for _, p in named[: upto + 1]) + 1) / total
    result = preview("ms-swift", {"freeze_parameters_ratio": ratio}, model)
    assert result.frozen == tuple(n for n, _ in named[: upto + 1])
    note = next(n for n in result.notes if "in the middle" in n)
    assert "model.layers.5" in note
    edges = re.search(r"freeze_parameters_ratio (\S+) stops before it, (\S+) after it", note)
    assert edges is not None
    lo, hi = float(edges[1]), float(edges[2])
    ends = [n for n, _ in named[: ratio_cut(model, lo)]]
    assert ends[-1].startswith("model.layers.4.")
    assert [n for n, _ in named[: ratio_cut(model, hi)]][-1].startswith("model.layers.5.")
    assert named[ratio_cut(model, hi)][0].startswith("model.layers.6.")


def test_ms_swift_order_freeze_then_trainable_and_prefix_overreach() -> None:
    model = llama()
    config = {
        "freeze_parameters": ["model.layers.1"],
        "freeze_parameters_regex": r"embed_tokens",
        "trainable_parameters_regex": r"layers\.1[0-9]\.mlp",
    }
    result = preview("ms-swift", config, model)
    frozen = set(result.frozen)
    assert "model.embed_tokens.weight" in frozen
    assert "model.layers.12.self_attn.q_proj.weight" in frozen  # the prefix reaches layer 12
    assert "model.layers.12.mlp.up_proj.weight" not in frozen  # re-enabled last
    assert any("also reaches" in n and "model.layers.10" in n for n in result.notes)


def test_llamafactory_cannot_say_layers_10_16_17_23_and_names_the_nearest() -> None:
    model = llama()
    trains = (10, 16, 17, 23)
    spec = FreezeSpec(
        (
            "model.embed_tokens",
            "model.norm",
            "lm_head",
            *(f"model.layers.{i}" for i in range(24) if i not in trains),
        )
    )
    with pytest.raises(InexpressibleError) as info:
        to_config(spec, "llamafactory", model)
    assert "10, 16, 17, 23" in str(info.value)
    nearest = info.value.nearest
    assert nearest is not None and nearest["finetuning_type"] == "freeze"
    near = preview("llamafactory", nearest, model, spec)
    wrong = near.spec_trains_but_frozen + near.spec_frozen_but_trains
    # The nearest config misses as few parameters as any run of last or first layers can.
    per_layer = _numel(model, _layer_names(model, "model.layers.0."))
    assert _numel(model, wrong) == 3 * per_layer
    assert f"{_numel(model, near.spec_trains_but_frozen):,} parameters" in info.value.difference


def test_llamafactory_extra_module_norm_also_trains_every_layernorm() -> None:
    model = llama(4)
    result = preview(
        "llamafactory",
        "finetuning_type: freeze\nfreeze_trainable_layers: 0\nfreeze_extra_modules: norm\n",
        model,
    )
    assert set(result.trainable) == {n for n, _ in model.named_parameters() if "norm" in n}
    assert any("substring" in n for n in result.notes)


@pytest.mark.parametrize(
    "config",
    [
        {
            "finetuning_type": "freeze",
            "freeze_trainable_layers": 2,
            "freeze_trainable_modules": "all",
        },
        {
            "finetuning_type": "freeze",
            "freeze_trainable_layers": -3,
            "freeze_trainable_modules": "mlp",
        },
        {
            "finetuning_type": "freeze",
            "freeze_trainable_layers": 4,
            "freeze_trainable_modules": "all",
            "use_llama_pro": True,
        },
        {
            "finetuning_type": "freeze",
            "freeze_trainable_layers": 1,
            "freeze_trainable_modules": "all",
            "freeze_extra_modules": "lm_head",
        },
    ],
)
def test_llamafactory_config_spec_config_round_trip(config: dict[str, Any]) -> None:
    model = llama(8)
    spec = from_config("llamafactory", config, model)
    again = load_config(to_config(spec, "llamafactory", model), "llamafactory")
    assert (
        preview("llamafactory", again, model).grad_map
        == preview("llamafactory", config, model).grad_map
    )
    assert again == config


@pytest.mark.parametrize("target", ["axolotl", "ms-swift"])
@pytest.mark.parametrize("build", [gpt2, llama])
def test_spec_config_spec_round_trip(target: str, build: Any) -> None:
    model = build()
    blocks = "model.layers" if build is llama else "transformer.h"
    spec = FreezeSpec((f"{blocks}.1", f"{blocks}.2.mlp", f"{blocks}.3.mlp"))
    text = to_config(spec, target, model)
    back = from_config(target, text, model)
    fresh_a, fresh_b = copy.deepcopy(model), copy.deepcopy(model)
    spec.apply(fresh_a)
    back.apply(fresh_b)
    assert grads(fresh_a) == grads(fresh_b)
    assert load_config(to_config(back, target, model), target) == load_config(text, target)


def test_config_for_another_model_is_refused_and_the_model_is_unchanged() -> None:
    model = llama(4)
    before = model_fingerprint(model)
    gpt2_config = to_config(FreezeSpec(("transformer.h.0",)), "ms-swift", gpt2(2))
    with pytest.raises(ValueError, match="another model"):
        from_config("ms-swift", gpt2_config, model)
    with pytest.raises(ValueError, match="not a module of this model"):
        from_config("timm", {"submodules": ["layer1"]}, model)
    assert model_fingerprint(model) == before


@pytest.mark.parametrize(
    ("target", "text", "message"),
    [
        ("axolotl", "unfrozen_parameters: [model.layers.1\n", "not valid YAML at line"),
        ("llamafactory", "freeze_trainable_layer: 2\n", "Did you mean 'freeze_trainable_layers'"),
        ("ms-swift", "freeze_parameters_regex: '('\n", "not a valid regex"),
        ("llamafactory", "freeze_trainable_modules: attn\n", "choose from"),
        ("llamafactory", "freeze_trainable_layers: two\n", "must be int"),
        ("axolotl", "- a\n- b\n", "must be a mapping"),
        ("peft", "modules_to_sav: [lm_head]\n", "Did you mean 'modules_to_save'"),
        ("nonsense", "{}", "Unknown target"),
    ],
)
def test_bad_input_is_a_clear_error_and_the_model_is_unchanged(
    target: str, text: str, message: str
) -> None:
    model = llama(2)
    before = model_fingerprint(model)
    with pytest.raises(ValueError, match=re.escape(message)):
        preview(target, text, model)
    assert model_fingerprint(model) == before


def test_to_config_never_writes_an_approximate_config() -> None:
    model = gpt2(2)
    spec = FreezeSpec(("transformer.h.0.attn.c_attn.bias",))
    for target in ("timm", "lightning", "peft", "llamafactory"):
        with pytest.raises(InexpressibleError):
            to_config(spec, target, model)
    for target in ("axolotl", "ms-swift"):
        result = preview(target, to_config(spec, target, model), model, spec)
        assert result.matches_spec


@pytest.mark.parametrize("build", ["nested", "tied", "gpt2"])
def test_covering_paths_agrees_with_frozen_paths(build: str) -> None:
    from freeze_widgets import freeze
    from freeze_widgets.freezing.spec import covering_paths, frozen_paths

    from .conftest import Nested, Tied

    model = {"nested": Nested, "tied": Tied, "gpt2": lambda: gpt2(3)}[build]()
    names = [n for n, _ in model.named_parameters()]
    for cut in (0, 1, len(names) // 2, len(names)):
        for name in names[:cut]:
            freeze(model, name)
        assert covering_paths(model, lambda p: not p.requires_grad) == frozen_paths(model)


def test_finetuning_scheduler_phase_0_regex_reaches_layers_10_to_19() -> None:
    model = llama()
    result = preview(
        "fts", "0:\n  params:\n  - model.layers.1\n1:\n  params: [lm_head.weight]\n", model
    )
    expected = [n for i in [1, *range(10, 20)] for n in _layer_names(model, f"model.layers.{i}.")]
    assert sorted(result.trainable) == sorted(expected)
    assert any("also thaws model.layers.10" in n for n in result.notes)
    assert any("phases 1 thaw more later" in n for n in result.notes)
    with pytest.raises(ValueError, match="matches no parameter"):
        preview("fts", {0: {"params": ["model.encoder.*"]}}, model)
    with pytest.raises(ValueError, match="unknown Finetuning-Scheduler key"):
        preview("fts", {0: {"param": ["lm_head.weight"]}}, model)


@pytest.mark.parametrize("build", [gpt2, llama])
def test_finetuning_scheduler_round_trip_and_bn_policy(build: Any) -> None:
    model = build()
    blocks = "model.layers" if build is llama else "transformer.h"
    spec = FreezeSpec((f"{blocks}.0", f"{blocks}.1.mlp", f"{blocks}.2"))
    text = to_config(spec, "fts", model)
    back = from_config("fts", text, model)
    assert back.bn == "train"  # FTS's default: frozen BatchNorm statistics keep updating
    fresh_a, fresh_b = copy.deepcopy(model), copy.deepcopy(model)
    spec.apply(fresh_a)
    back.apply(fresh_b)
    assert grads(fresh_a) == grads(fresh_b)


@pytest.mark.parametrize("target", ["timm", "lightning", "peft", "fts"])
def test_module_level_targets_round_trip(target: str) -> None:
    model = gpt2(4)
    spec = FreezeSpec(
        ("transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.h.1.mlp")
    )
    if target == "peft":  # PEFT saves whole modules: what trains must be whole modules
        spec = FreezeSpec((*spec.frozen, "transformer.h.1"))
    text = to_config(spec, target, model)
    back = from_config(target, text, model)
    fresh_a, fresh_b = copy.deepcopy(model), copy.deepcopy(model)
    spec.apply(fresh_a)
    back.apply(fresh_b)
    assert grads(fresh_a) == grads(fresh_b)
    assert load_config(to_config(back, target, model), target) == load_config(text, target)
