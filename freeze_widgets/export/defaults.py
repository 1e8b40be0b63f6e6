"""What a deployment export of a transformers model needs bound, and the output that breaks one.

transformers models default ``use_cache`` to None, which means "from the config" (True), so the
forward returns a ``DynamicCache`` that neither ONNX exporter can hold. A deployment graph takes
token ids and the attention mask (padding in a batch) and returns logits: these are the
defaults the export panel proposes, as notebook 02 teaches.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["DEPLOYMENT_BINDINGS", "KEPT_INPUTS", "unexportable_output"]

DEPLOYMENT_BINDINGS: dict[str, Any] = {
    "use_cache": False,  # else the output holds a DynamicCache (past key/values)
    "output_attentions": False,
    "output_hidden_states": False,
}
"""Arguments a deployment export binds, with the value to bind."""

KEPT_INPUTS = ("attention_mask",)
"""Arguments kept as graph inputs beside the main one: a batch of prompts needs its padding."""

_SCALARS = (bool, int, float, str, type(None))
# Output name -> the argument that produces it, for the one-line error.
_PRODUCED_BY = {
    "past_key_values": "use_cache=False",
    "cache": "use_cache=False",
    "attentions": "output_attentions=False",
    "hidden_states": "output_hidden_states=False",
}


def _first_bad(output: Any, where: str) -> tuple[str, Any] | None:
    """(path, value) of the first leaf that is not a tensor or a plain scalar."""
    if isinstance(output, (torch.Tensor, *_SCALARS)):
        return None
    if isinstance(output, Mapping):
        items = [(str(k), v) for k, v in output.items()]
    elif isinstance(output, tuple | list):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(output)]
    else:
        return where or "output", output
    for key, value in items:
        bad = _first_bad(value, key)
        if bad is not None:
            return bad
    return None


def unexportable_output(output: Any, signature: inspect.Signature | None = None) -> str | None:
    """One line naming the output an exporter cannot hold and the argument to set, or None.

    Args:
        output: What the model returned on the example inputs.
        signature: The forward's signature, to say whether the fix is a bound argument.
    """
    bad = _first_bad(output, "")
    if bad is None:
        return None
    name, value = bad
    head = name.split("[", 1)[0]
    kind = type(value).__name__
    fix = "use_cache=False" if kind.endswith("Cache") else _PRODUCED_BY.get(head)
    if fix is not None:
        arg = fix.split("=", 1)[0]
        takes = signature is None or arg in signature.parameters
        how = f"bind {fix}" if takes else f"pass {fix} to the model"
        shown = head or name
        return (
            f"the output {shown!r} is a {kind}, which an exported graph cannot return: {how} "
            "(a deployment export returns tensors only)"
        )
    return (
        f"the output {name!r} is a {kind}, which an exported graph cannot return: bind the "
        "argument that makes the model return it, or wrap the model to return tensors only"
    )
