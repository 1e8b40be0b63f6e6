"""Loading models by name (torchvision, timm, transformers): weights, caches, offline fallback."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
from typing import Any

import torch
from torch import nn

from freeze_widgets.base.wording import first_line, unknown_name_error
from freeze_widgets.models import hub as zoo
from freeze_widgets.models.weights import (
    WEIGHTS_HINT_ATTR,
    PretrainedWeightsUnavailable,
    offline,
    record_source,
)

__all__ = ["load_model"]

# Pretrained downloads hang for minutes on a machine that cannot reach the host; cap the wait of
# each socket operation of this request only (panels run threads: no process-wide timeout).
_DOWNLOAD_TIMEOUT_S = 20.0
# torchvision checkpoint names end in the first hex digits of their SHA-256 ("resnet18-f37072fd").
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")


def load_model(
    name: str,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    *,
    task: str | None = None,
) -> nn.Module:
    """Build a model by name, in eval mode: torchvision, ``timm:<name>`` or ``hf:<repo or folder>``.

    Pretrained weights come from the local cache first: torchvision's hub cache
    (``$TORCH_HOME/hub/checkpoints``), the Hugging Face cache for timm and transformers, or the
    folder itself for ``hf:<folder>``; a download is tried otherwise. If neither works (offline, or
    ``FREEZE_WIDGETS_OFFLINE=1`` and nothing cached) the model keeps random weights and a
    :class:`PretrainedWeightsUnavailable` warning says so; :func:`weights_source` tells which
    happened. A transformers config that is neither cached nor fetchable is an error (a model
    without its config has no structure).

    Args:
        name: ``"resnet18"`` (any torchvision classification model), ``"timm:convnext_tiny"``
            or ``"hf:bert-base-uncased"`` / ``"hf:/path/to/saved_model"``.
        pretrained: Load the default pretrained weights.
        device: ``"meta"`` builds the structure only (no memory, no weights), for exploring
            architectures of any size.
        task: For ``hf:`` names, which ``AutoModel*`` class builds the model: ``"base"``
            (default), ``"causal-lm"``, ``"masked-lm"``, ``"seq2seq-lm"``,
            ``"sequence-classification"``, ``"token-classification"``, ``"question-answering"``
            or ``"image-classification"``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: an unknown model name (close names listed), an unknown task, or a
            transformers config that cannot be had.
        ImportError: ``timm:`` / ``hf:`` without timm / transformers installed.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name string; got {type(name).__name__}")
    if task is not None and not name.startswith("hf:"):
        raise ValueError(f"task= applies to hf: models only; got task={task!r} for {name!r}")
    where = torch.device(device)
    if name.startswith(("timm:", "hf:")):
        prefix, _, ref = name.partition(":")
        if prefix == "timm":
            model, source = zoo.load_timm(ref, pretrained=pretrained, device=where)
        else:
            model, source = zoo.load_hf(ref, task=task, pretrained=pretrained, device=where)
    else:
        model, source = _load_torchvision(name, pretrained=pretrained, device=where)
    record_source(model, source)
    loaded: nn.Module = model.to(where).eval() if where.type != "meta" else model.eval()
    return loaded


def _load_torchvision(
    name: str, *, pretrained: bool, device: torch.device
) -> tuple[nn.Module, str]:
    from torchvision import models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        raise unknown_name_error(
            "torchvision classification model",
            name,
            available,
            way_out="See torchvision.models.list_models(module=torchvision.models); "
            "timm and transformers models load as 'timm:<name>' and 'hf:<repo or folder>'.",
            cutoff=0.4,
        )
    if device.type == "meta":
        with torch.device("meta"), zoo.regnet_widths_on_cpu():
            return tvm.get_model(name, weights=None), "none (meta device: structure only)"
    model = tvm.get_model(name, weights=None)
    if not pretrained:
        return model, "random (pretrained=False)"
    weights = tvm.get_model_weights(name).DEFAULT
    state, why = _fetch_state_dict(weights)
    if state is not None:
        model.load_state_dict(state)
        return model, f"pretrained {weights}"
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    hint = (
        f"Put {weights.url.rsplit('/', 1)[-1]} in {folder.replace(os.path.expanduser('~'), '~', 1)}"
    )
    setattr(model, WEIGHTS_HINT_ATTR, f"{hint} and load again (see load_model).")
    warnings.warn(
        f"{name}: pretrained weights unavailable ({why}); using RANDOM weights. "
        f"Place {weights.url.rsplit('/', 1)[-1]} in {folder} to use them offline.",
        PretrainedWeightsUnavailable,
        stacklevel=3,
    )
    return model, f"random: pretrained weights unavailable ({why})"


def _fetch_state_dict(weights: Any) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The weights' state dict from the hub cache or a download, or (None, reason)."""
    filename = weights.url.rsplit("/", 1)[-1]
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.exists(cached):
        if offline():
            return None, f"offline (FREEZE_WIDGETS_OFFLINE=1) and {filename} not in the hub cache"
        try:
            download(weights.url, cached, timeout=_DOWNLOAD_TIMEOUT_S)
        except Exception as exc:  # network errors come as URLError, OSError, TimeoutError, ...
            return None, first_line(exc, limit=200)
    try:
        # From the cache now: torchvision's own loader, exactly as without a download.
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # a truncated or foreign file in the cache
        return None, f"reading {cached}: {first_line(exc, limit=160)}"
    return state, ""


def download(url: str, destination: str, *, timeout: float) -> None:
    """Download ``url`` to ``destination`` with a per-request timeout, verifying its hash.

    Like ``torch.hub.download_url_to_file`` (a temporary file moved into place only once complete
    and verified), but the timeout belongs to this request: ``socket.setdefaulttimeout`` would
    change every socket of the process, including those of threads running meanwhile.

    Raises:
        OSError: the host cannot be reached or the transfer stalls longer than ``timeout``.
        RuntimeError: the file's SHA-256 does not start with the digits in its name.
    """
    match = _HASH_IN_NAME.search(os.path.basename(destination))
    folder = os.path.dirname(destination)
    os.makedirs(folder, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "freeze_widgets"})
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".partial", delete=False) as part:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    part.write(chunk)
                    digest.update(chunk)
            if match and not digest.hexdigest().startswith(match.group(1)):
                raise RuntimeError(
                    f"invalid hash for {url}: expected {match.group(1)}..., "
                    f"got {digest.hexdigest()[:12]}...; delete {destination} and retry"
                )
        except BaseException:
            part.close()
            os.remove(part.name)
            raise
    shutil.move(part.name, destination)
