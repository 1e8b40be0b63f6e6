"""spec -> config -> the tool's own code -> the same requires_grad map as the spec applied.

timm, Lightning and PEFT are installed; LLaMA-Factory, axolotl and ms-swift run from their
wheels' source when ``FW_TOOL_SOURCES`` is set (tests/config_tools.py), else skip.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
from torch import nn

from freeze_widgets import FreezeSpec
from freeze_widgets.configs import InexpressibleError, from_config, to_config
from freeze_widgets.configs._common import load_config

from .config_tools import (
    axolotl_freeze,
    gpt2,
    grads,
    llama,
    llamafactory_adapter,
    resnet50,
    swift_utils,
)

LLAMA_SPECS = [
    FreezeSpec(("model.embed_tokens", *(f"model.layers.{i}" for i in range(20)))),  # last 4 + head
    FreezeSpec(tuple(f"model.layers.{i}" for i in range(24) if i not in (10, 16, 17, 23))),
    FreezeSpec(("model.layers.1", "model.layers.1.mlp", "lm_head")[::2]),
    FreezeSpec(("",)),
]


def _spec_map(spec: FreezeSpec, model: nn.Module) -> dict[str, bool]:
    fresh = copy.deepcopy(model)
    spec.apply(fresh)
    return grads(fresh)


def _config(spec: FreezeSpec, target: str, model: nn.Module) -> dict[str, Any] | None:
    try:
        return load_config(to_config(spec, target, model), target)
    except InexpressibleError:
        return None


RESNET_SPEC = FreezeSpec(("conv1", "bn1", "layer1", "layer2.0.conv1", "layer3.5.bn3.bias"))
CASES = [("llama", i) for i in range(len(LLAMA_SPECS))] + [
    pytest.param(("resnet50", 0), marks=pytest.mark.slow)
]


def _case(case: Any) -> tuple[nn.Module, FreezeSpec]:
    kind, index = case
    return (llama(), LLAMA_SPECS[index]) if kind == "llama" else (resnet50(), RESNET_SPEC)


@pytest.mark.parametrize("case", CASES)
def test_axolotl_own_code_reproduces_the_spec(case: Any) -> None:
    model, spec = _case(case)
    config = _config(spec, "axolotl", model)
    assert config is not None  # axolotl can say any parameter set
    with axolotl_freeze() as tool:
        ran = copy.deepcopy(model)
        if config.get("unfrozen_parameters"):  # train.py calls it only for a non-empty list
            tool.freeze_layers_except(ran, config["unfrozen_parameters"])
        assert grads(ran) == _spec_map(spec, model)


@pytest.mark.parametrize("case", CASES)
def test_ms_swift_own_code_reproduces_the_spec(case: Any) -> None:
    model, spec = _case(case)
    config = _config(spec, "ms-swift", model)
    assert config is not None
    with swift_utils() as tool:
        ran = copy.deepcopy(model).requires_grad_(True)
        tool.freeze_parameters(
            ran, config.get("freeze_parameters_ratio", 0.0), config.get("freeze_parameters", [])
        )
        assert grads(ran) == _spec_map(spec, model)


@pytest.mark.slow
def test_llamafactory_refuses_a_model_without_a_layer_count() -> None:
    with pytest.raises(ValueError, match="does not support freeze tuning"):
        to_config(RESNET_SPEC, "llamafactory", resnet50())


def _run_llamafactory(tool: Any, model: nn.Module, config: dict[str, Any]) -> dict[str, bool]:
    def split(value: Any) -> Any:
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value

    args = SimpleNamespace(
        freeze_trainable_layers=config.get("freeze_trainable_layers", 2),
        freeze_trainable_modules=split(config.get("freeze_trainable_modules", "all")),
        freeze_extra_modules=split(config.get("freeze_extra_modules")),
        use_llama_pro=config.get("use_llama_pro", False),
        freeze_multi_modal_projector=True,
    )
    ran = copy.deepcopy(model)
    tool._setup_freeze_tuning(ran, args, True, False)
    return grads(ran)


@pytest.mark.parametrize("build", [llama, gpt2])
def test_llamafactory_own_code_on_what_it_can_say_and_what_it_cannot(build: Any) -> None:
    model = build()
    n = model.config.num_hidden_layers
    layers = "model.layers" if build is llama else "transformer.h"
    outside = ("model.embed_tokens", "model.norm") if build is llama else ("transformer.wte",)
    # Llama's final norm must stay frozen: "norm" as an extra module would also train every
    # input_layernorm (a substring match), so LLaMA-Factory cannot train it alone.
    can = FreezeSpec((*outside, *(f"{layers}.{i}" for i in range(n - 3))))
    config = _config(can, "llamafactory", model)
    assert config is not None and config["freeze_trainable_layers"] == 3
    if build is llama:
        assert config["freeze_extra_modules"] == "lm_head"
    with llamafactory_adapter() as tool:
        wanted = _spec_map(can, model)
        assert _run_llamafactory(tool, model, config) == wanted
        cannot = FreezeSpec(tuple(f"{layers}.{i}" for i in range(n) if i not in (1, 5)))
        with pytest.raises(InexpressibleError) as info:
            to_config(cannot, "llamafactory", model)
        nearest = _run_llamafactory(tool, model, info.value.nearest or {})
        wanted = _spec_map(cannot, model)
        sizes = {k: p.numel() for k, p in model.named_parameters()}
        assert nearest != wanted
        # The difference the error states is the one LLaMA-Factory's own code produces.
        stated = info.value.difference
        extra = sum(sizes[k] for k in wanted if nearest[k] and not wanted[k])
        missing = sum(sizes[k] for k in wanted if wanted[k] and not nearest[k])
        for figure in (extra, missing):
            if figure:
                assert f"{figure:,} parameters" in stated


def _timm_map(model: nn.Module, names: list[str]) -> dict[str, bool]:
    """timm turns frozen BatchNorm weights into buffers: a name no longer a parameter is frozen."""
    params = dict(model.named_parameters())
    return {n: params[n].requires_grad if n in params else False for n in names}


@pytest.mark.slow
@pytest.mark.parametrize("bn", ["frozen", "train"])
def test_timm_freeze_reproduces_the_spec_on_resnet50(bn: str) -> None:
    from timm.utils import freeze

    model = resnet50()
    spec = FreezeSpec(("conv1", "bn1", "layer1", "layer2", "layer3.0"), bn)
    config = load_config(to_config(spec, "timm", model), "timm")
    ran = copy.deepcopy(model)
    freeze(ran, **config)
    names = list(grads(model))
    assert _timm_map(ran, names) == _spec_map(spec, model)
    assert type(ran.bn1).__name__ == ("FrozenBatchNorm2d" if bn == "frozen" else "BatchNorm2d")
    # And back: the spec read from the config, applied to a fresh copy, is the same freeze.
    again = from_config("timm", config, model)
    assert again.bn == bn and _spec_map(again, model) == _spec_map(spec, model)


def test_timm_cannot_freeze_one_parameter() -> None:
    model = gpt2(2)
    with pytest.raises(InexpressibleError, match="whole modules"):
        to_config(FreezeSpec(("transformer.h.0.attn.c_attn.weight",)), "timm", model)


@pytest.mark.slow
@pytest.mark.parametrize("bn", ["eval", "train"])
def test_lightning_freeze_reproduces_the_spec_on_resnet50(bn: str) -> None:
    from lightning.pytorch.callbacks import BaseFinetuning

    model = resnet50()
    spec = FreezeSpec(("conv1", "bn1", "layer1", "layer2"), "eval")
    if bn == "train":  # Lightning's own default: BatchNorm weights keep training
        frozen = copy.deepcopy(model)
        BaseFinetuning.freeze([frozen.conv1, frozen.bn1, frozen.layer1, frozen.layer2])
        spec = FreezeSpec.from_model(frozen)
    config = load_config(to_config(spec, "lightning", model), "lightning")
    assert config["train_bn"] is (bn == "train")
    ran = copy.deepcopy(model)
    BaseFinetuning.freeze([ran.get_submodule(p) for p in config["freeze"]], config["train_bn"])
    assert grads(ran) == _spec_map(spec, model)


def test_peft_modules_to_save_train_exactly_the_spec_s_trainable_modules() -> None:
    from peft import LoraConfig, get_peft_model

    model = gpt2(4)
    spec = FreezeSpec(("transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.h.1"))
    spec = FreezeSpec((*spec.frozen, "transformer.h.2", "transformer.h.3.attn"))
    config = load_config(to_config(spec, "peft", model), "peft")
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(target_modules=["c_attn"], **config))
    trained = set()
    for name, p in wrapped.named_parameters():
        if p.requires_grad and "lora_" not in name:
            base = name.removeprefix("base_model.model.").replace(".modules_to_save.default", "")
            trained.add(base)
    wanted = _spec_map(spec, model)
    assert trained == {n for n, t in wanted.items() if t}


@pytest.mark.parametrize("case", CASES)
def test_finetuning_scheduler_own_code_reproduces_the_spec(case: Any) -> None:
    from lightning.pytorch.callbacks import BaseFinetuning

    from .config_tools import finetuning_scheduler

    model, spec = _case(case)
    config = load_config(to_config(spec, "fts", model), "fts")
    with finetuning_scheduler() as (parsing, adapter):
        parser = object.__new__(type("Parser", (parsing,), {}))
        parser.ft_schedule = copy.deepcopy(config)
        parser._parse_phase(0, dict(model.named_parameters()).keys(), ([], set()))
        ran = copy.deepcopy(model)
        BaseFinetuning.freeze(ran, train_bn=False)  # FinetuningScheduler.freeze_before_training
        adapter.base_ft_phase(ran, thaw_pl=parser.ft_schedule[0]["params"])
        assert grads(ran) == _spec_map(spec, model)
