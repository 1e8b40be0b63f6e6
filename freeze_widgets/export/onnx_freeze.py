"""The freeze, written into an exported ONNX file so that Netron shows it.

The model's :class:`~freeze_widgets.freezing.spec.FreezeSpec` JSON goes into the model's
``metadata_props`` (key :data:`SPEC_KEY`), and every initializer that is a parameter, a buffer
or a bound argument gets a ``doc_string`` such as ``"frozen parameter layer1.0.conv1.weight"``.
Netron shows both in its properties pane.

The file is read without its external data and written back the same way, so models stored
with external data (over 2 GB) keep their weights file untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from freeze_widgets.export.binding import BoundModule, PositionalInputs

__all__ = ["SPEC_KEY", "initializer_roles", "mark_freeze"]

SPEC_KEY = "freeze_widgets.freezing.spec"
"""``metadata_props`` key holding the FreezeSpec JSON of the exported model."""

_WRAPPER_PREFIX = "model."  # BoundModule / PositionalInputs hold the user's model as ``model``


def _user_path(name: str, depth: int) -> str:
    """``name`` without the ``model.`` prefix each wrapper adds (``depth`` wrappers)."""
    for _ in range(depth):
        name = name.removeprefix(_WRAPPER_PREFIX)
    return name


def _spellings(name: str, placeholder: str) -> list[str]:
    """How exporters name the initializer of state ``name``.

    The TorchScript exporter and dynamo keep the dotted name (``fc.weight``); an exported
    program's placeholders are ``p_fc_weight`` (parameters), ``b_...`` (buffers), ``c_...``.
    """
    flat = name.replace(".", "_")
    return [name, flat, f"{placeholder}_{flat}"]


def initializer_roles(model: nn.Module) -> dict[str, str]:
    """Initializer name (every spelling) -> doc string, for the exported module ``model``."""
    depth = 0
    inner: nn.Module = model
    bound_prefix: list[str] = []
    while isinstance(inner, BoundModule | PositionalInputs):
        if isinstance(inner, BoundModule):
            bound_prefix.append(_WRAPPER_PREFIX * depth + "_bound_")
        inner = inner.model
        depth += 1
    roles: dict[str, str] = {}
    for name, _ in model.named_buffers(remove_duplicate=False):
        bound = next((p for p in bound_prefix if name.startswith(p)), None)
        if bound is not None:
            role = f"bound argument {name.removeprefix(bound)} (constant)"
        else:
            role = f"buffer {_user_path(name, depth)}"
        for spelling in _spellings(name, "b") + _spellings(name, "c"):
            roles.setdefault(spelling, role)
    for name, param in model.named_parameters(remove_duplicate=False):
        state = "trainable" if param.requires_grad else "frozen"
        for spelling in _spellings(name, "p"):
            roles[spelling] = f"{state} parameter {_user_path(name, depth)}"
    return roles


def mark_freeze(path: Path, model: nn.Module, source: nn.Module) -> tuple[int, int]:
    """Write ``source``'s FreezeSpec and per-initializer roles into the ONNX file at ``path``.

    Args:
        path: The exported ``.onnx`` file (rewritten in place; external data untouched).
        model: The module that was exported (names its initializers).
        source: The user's model inside it (whose freeze is recorded).

    Returns:
        (frozen, trainable) counts of initializers marked.
    """
    import onnx

    from freeze_widgets.freezing.spec import FreezeSpec

    proto: Any = onnx.load(str(path), load_external_data=False)
    for entry in list(proto.metadata_props):
        if entry.key == SPEC_KEY:
            proto.metadata_props.remove(entry)
    proto.metadata_props.add(key=SPEC_KEY, value=FreezeSpec.from_model(source).to_json())
    roles = initializer_roles(model)
    frozen = trainable = 0
    for init in proto.graph.initializer:
        role = roles.get(init.name)
        if role is None:
            continue  # folded constants (e.g. a BatchNorm fused into a conv) have no owner
        init.doc_string = role
        frozen += role.startswith("frozen ")
        trainable += role.startswith("trainable ")
    # External tensors hold only a reference (never loaded), so this rewrites the graph file
    # alone and leaves the data file as it is.
    onnx.save(proto, str(path))
    return frozen, trainable
