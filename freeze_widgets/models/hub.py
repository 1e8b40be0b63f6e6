"""Loading models beyond torchvision: ``timm:<name>`` and ``hf:<repo id or local folder>``.

Both follow the torchvision path's offline rules (see ``models.load_model``): pretrained weights
come from the local cache (or folder) when present; otherwise a download is tried unless
``FREEZE_WIDGETS_OFFLINE=1``; when nothing works the model keeps random weights and a
``PretrainedWeightsUnavailable`` warning says so. ``device="meta"`` builds the structure only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freeze_widgets.base.wording import first_line, unknown_name_error
from freeze_widgets.models.weights import (
    WeightsUnavailable,
    offline,
    random_source,
    warn_random,
    with_hint,
)

# transformers task -> the Auto class that builds it.
HF_TASKS: dict[str, str] = {
    "base": "AutoModel",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "image-classification": "AutoModelForImageClassification",
}
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def _require(package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f'{package} is needed for this model; install it with pip install "freeze_widgets[zoo]"'
        ) from None


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """Make huggingface_hub use its local cache only (it reads HF_HUB_OFFLINE at import)."""
    if not enabled:
        yield
        return
    import huggingface_hub.constants as hub_constants

    old = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = old


# ------------------------------------------------------------------------------------- timm


def load_timm(name: str, *, pretrained: bool, device: torch.device) -> tuple[nn.Module, str]:
    """A timm model and where its weights came from."""
    timm = _require("timm")
    if name not in timm.list_models(pretrained=False):
        raise unknown_name_error(
            "timm model", name, timm.list_models(pretrained=False),
            way_out="See timm.list_models().", cutoff=0.6,
        )  # fmt: skip
    if device.type == "meta":
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False), "none (meta device: structure only)"
    if not pretrained:
        return timm.create_model(name, pretrained=False), "random (pretrained=False)"
    try:
        model, source = _timm_pretrained(timm, name)
    except WeightsUnavailable as why:
        how = f"run timm.create_model({name!r}, pretrained=True) once online (it fills the cache)"
        warn_random(f"timm:{name}", str(why), how)
        return with_hint(
            timm.create_model(name, pretrained=False), f"To use them: {how}."
        ), random_source(why)
    return model, source


def _timm_pretrained(timm: Any, name: str) -> tuple[nn.Module, str]:
    cfg = timm.models.get_pretrained_cfg(name) or timm.create_model(name).pretrained_cfg
    cfg = cfg if isinstance(cfg, dict) else cfg.to_dict()
    hub_id = cfg.get("hf_hub_id")
    cached = _hf_cached_file(hub_id, ("model.safetensors", "pytorch_model.bin")) if hub_id else None
    if cached is not None:
        overlay = {"file": cached}
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        return model, f"pretrained {hub_id} (local cache)"
    if offline():
        raise WeightsUnavailable(
            f"offline (FREEZE_WIDGETS_OFFLINE=1) and {hub_id or name} not in the Hugging Face cache"
        )
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as exc:  # network errors arrive as many types
        raise WeightsUnavailable(first_line(exc, limit=200)) from exc
    return model, f"pretrained {hub_id or name} (downloaded)"


def _hf_cached_file(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


# ------------------------------------------------------------------------------ transformers


def load_hf(
    ref: str, *, task: str | None, pretrained: bool, device: torch.device
) -> tuple[nn.Module, str]:
    """A transformers model (``AutoModel*`` chosen by ``task``) and where its weights came from."""
    transformers = _require("transformers")
    task = task or "base"
    if task not in HF_TASKS:
        raise unknown_name_error(
            "transformers task", task, list(HF_TASKS),
            way_out=f"Pass task= one of: {', '.join(HF_TASKS)}.",
        )  # fmt: skip
    auto = getattr(transformers, HF_TASKS[task])
    config = _hf_config(transformers, ref)
    if device.type == "meta":
        with torch.device("meta"):
            return auto.from_config(config), "none (meta device: structure only)"
    if not pretrained:
        return auto.from_config(config), "random (pretrained=False)"
    try:
        model = _hf_pretrained(auto, ref)
    except WeightsUnavailable as why:
        how = "save the model with model.save_pretrained(folder), then load hf:<folder>"
        warn_random(f"hf:{ref}", str(why), how)
        return with_hint(auto.from_config(config), f"To use them: {how}."), random_source(why)
    return model, f"pretrained {ref}"


def _hf_config(transformers: Any, ref: str) -> Any:
    local = Path(ref).expanduser()
    try:
        with _hub_offline(offline() or local.is_dir()):
            return transformers.AutoConfig.from_pretrained(str(local) if local.is_dir() else ref)
    except Exception as exc:  # OSError / ValueError / connection errors
        raise ValueError(
            f"No transformers config for {ref!r} ({first_line(exc, limit=200)}). Give a "
            "local folder "
            "with config.json (model.save_pretrained(folder) or config.save_pretrained(folder)), "
            "or fetch it once online with transformers.AutoConfig.from_pretrained(repo_id) so it "
            "is in the Hugging Face cache (FREEZE_WIDGETS_OFFLINE=1 forbids downloads)."
        ) from exc


def _hf_pretrained(auto: Any, ref: str) -> nn.Module:
    local = Path(ref).expanduser()
    if local.is_dir() and not any((local / f).exists() for f in _HF_WEIGHT_FILES):
        raise WeightsUnavailable(f"no weights file in {local} (only a config)")
    try:
        with _hub_offline(offline() or local.is_dir()):
            model: nn.Module = auto.from_pretrained(str(local) if local.is_dir() else ref)
    except Exception as exc:  # missing cache entries and network errors
        raise WeightsUnavailable(first_line(exc, limit=200)) from exc
    return model


# ------------------------------------------------------------------------- torchvision, meta


@contextlib.contextmanager
def regnet_widths_on_cpu() -> Iterator[None]:
    """RegNet computes its block widths with tensors and ``.tolist()``: keep those on the CPU.

    Under ``torch.device("meta")`` that arithmetic has no data ("Cannot copy out of meta tensor"),
    so only the width computation runs on the CPU while the layers are built on the meta device.
    """
    from torchvision.models import regnet

    original = regnet.BlockParams.__dict__["from_init_params"]
    inner = original.__func__

    def on_cpu(cls: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.device("cpu"):
            return inner(cls, *args, **kwargs)

    regnet.BlockParams.from_init_params = classmethod(on_cpu)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        regnet.BlockParams.from_init_params = original  # type: ignore[method-assign]
