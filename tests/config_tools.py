"""Test helpers: tiny LLMs and ResNet-50, and the trainers' own freeze functions where available.

LLaMA-Factory, axolotl, ms-swift and Finetuning-Scheduler are not installed here (their
dependencies pin other versions), so their freeze functions are loaded from unpacked wheels in
the folder ``FW_TOOL_SOURCES`` names, with only their logging and distributed helpers stubbed::

    mkdir -p /tmp/tools && cd /tmp/tools
    pip download --no-deps llamafactory axolotl ms-swift finetuning-scheduler
    for w in llamafactory axolotl ms_swift; do mkdir $w && (cd $w && unzip -q ../$w-*.whl); done
    mkdir fts && (cd fts && unzip -q ../finetuning_scheduler-*.whl)
    FW_TOOL_SOURCES=/tmp/tools pytest tests/test_configs_tools.py

Without it, those tests skip; the re-implementations are still checked against each tool's own
examples in tests/test_configs.py.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn


def llama(layers: int = 24) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=100,
    )
    return LlamaForCausalLM(config)


def gpt2(layers: int = 12) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(n_layer=layers, n_embd=32, n_head=2, vocab_size=100, n_positions=32)
    )


def resnet50() -> nn.Module:
    from torchvision.models import resnet50 as build

    torch.manual_seed(0)
    return build()


def grads(model: nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


class _Quiet:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so relative imports resolve
    module.__dict__.update(attrs)
    return module


@contextmanager
def _loaded(
    folder: str, name: str, relpath: str, stubs: dict[str, dict[str, Any]]
) -> Iterator[Any]:
    root = os.environ.get("FW_TOOL_SOURCES")
    path = Path(root or "/nonexistent") / folder / relpath
    if not path.is_file():
        pytest.skip(f"set FW_TOOL_SOURCES to the unpacked {folder} wheel to test its own code")
    saved = {k: sys.modules.get(k) for k in [*stubs, name]}
    try:
        for key, attrs in stubs.items():
            sys.modules[key] = _stub(key, **attrs)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def _logger(*args: Any, **kwargs: Any) -> Any:
    return _Quiet()


@contextmanager
def axolotl_freeze() -> Iterator[Any]:
    """``axolotl.utils.freeze`` from the wheel."""
    stubs = {
        "axolotl": {},
        "axolotl.utils": {},
        "axolotl.utils.distributed": {"is_main_process": lambda: False},
        "axolotl.utils.logging": {"get_logger": logging.getLogger},
    }
    with _loaded("axolotl", "axolotl.utils.freeze", "axolotl/utils/freeze.py", stubs) as m:
        yield m


@contextmanager
def llamafactory_adapter() -> Iterator[Any]:
    """``llamafactory.model.adapter`` from the wheel (visual models stubbed as none)."""
    utils = "llamafactory.model.model_utils"
    stubs = {
        "llamafactory": {},
        "llamafactory.extras": {},
        "llamafactory.extras.logging": {"get_logger": _logger},
        "llamafactory.model": {},
        utils: {},
        f"{utils}.misc": {"find_all_linear_modules": None, "find_expanded_modules": None},
        f"{utils}.quantization": {"QuantizationMethod": None},
        f"{utils}.unsloth": {"get_unsloth_peft_model": None, "load_unsloth_peft_model": None},
        f"{utils}.visual": {
            "COMPOSITE_MODELS": {},
            "get_forbidden_modules": lambda config, args: set(),
            "patch_target_modules": None,
        },
    }
    with _loaded(
        "llamafactory", "llamafactory.model.adapter", "llamafactory/model/adapter.py", stubs
    ) as m:
        yield m


@contextmanager
def swift_utils() -> Iterator[Any]:
    """``swift.utils.transformers_utils`` (freeze_parameters, activate_parameters) from the wheel."""
    stubs = {
        "swift": {},
        "swift.utils": {},
        "swift.utils.logger": {"get_logger": _logger},
        "swift.utils.utils": {"deep_getattr": None},
    }
    with _loaded(
        "ms_swift", "swift.utils.transformers_utils", "swift/utils/transformers_utils.py", stubs
    ) as m:
        yield m


@contextmanager
def finetuning_scheduler() -> Iterator[Any]:
    """``finetuning_scheduler`` from the unpacked wheel (it imports with the installed lightning)."""
    root = Path(os.environ.get("FW_TOOL_SOURCES") or "/nonexistent") / "fts"
    if not (root / "finetuning_scheduler").is_dir():
        pytest.skip("set FW_TOOL_SOURCES with the unpacked finetuning-scheduler wheel in fts/")
    sys.path.insert(0, str(root))
    try:
        import finetuning_scheduler.fts_supporters as supporters
        from finetuning_scheduler.strategy_adapters.base import StrategyAdapter

        yield supporters.ScheduleParsingMixin, StrategyAdapter
    finally:
        sys.path.remove(str(root))
