"""Thin adapters that run the freeze checks inside other people's training loops.

``freeze_widgets.integrations.lightning`` (needs ``lightning``) and
``freeze_widgets.integrations.transformers`` (needs ``transformers``) each import their framework
at import time, so import the one you use; this package itself imports nothing optional.
"""

from __future__ import annotations
