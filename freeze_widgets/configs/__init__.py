"""Freeze plans that travel: a FreezeSpec to and from trainers' configs, with a preview."""

from __future__ import annotations

from freeze_widgets.configs._common import ConfigPreview, InexpressibleError
from freeze_widgets.configs.preview import TARGETS, from_config, preview, to_config

__all__ = [
    "TARGETS",
    "ConfigPreview",
    "InexpressibleError",
    "from_config",
    "preview",
    "to_config",
]
