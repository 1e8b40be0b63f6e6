"""The weights/offline leaf every loader shares: the warning, the hint, the offline switch."""

from __future__ import annotations

import os
import warnings

from torch import nn

# How to get the real weights, on a model that fell back to random ones (the explorer shows it).
WEIGHTS_HINT_ATTR = "_freeze_widgets_weights_hint"
# Where the weights came from, one line (read by weights_source).
WEIGHTS_SOURCE_ATTR = "_freeze_widgets_weights"


class PretrainedWeightsUnavailable(UserWarning):
    """Pretrained weights could not be loaded; the model has random weights."""


class WeightsUnavailable(Exception):
    """Internal: pretrained weights could not be had; the message says why."""


def offline() -> bool:
    """``FREEZE_WIDGETS_OFFLINE=1``: never try a download."""
    return os.environ.get("FREEZE_WIDGETS_OFFLINE", "").lower() in {"1", "true", "yes"}


def weights_source(model: nn.Module) -> str:
    """Where the weights of a model from :func:`load_model` came from (one line)."""
    return str(getattr(model, WEIGHTS_SOURCE_ATTR, "unknown (not loaded by load_model)"))


def record_source(model: nn.Module, source: str) -> None:
    setattr(model, WEIGHTS_SOURCE_ATTR, source)


def random_source(why: WeightsUnavailable) -> str:
    """The weights_source text of a model that fell back to random weights."""
    return f"random: pretrained weights unavailable ({why})"


def with_hint(model: nn.Module, how: str) -> nn.Module:
    """Record how to get the real weights, for the explorer's header."""
    setattr(model, WEIGHTS_HINT_ATTR, how)
    return model


def warn_random(what: str, why: str, how: str) -> None:
    warnings.warn(
        f"{what}: pretrained weights unavailable ({why}); using RANDOM weights. "
        f"To use them offline: {how}.",
        PretrainedWeightsUnavailable,
        stacklevel=4,
    )
