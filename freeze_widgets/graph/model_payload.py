"""The bytes of a model file as the graph widget sends them: graph-only by default.

An ONNX file's initializer values are replaced by external-data stubs (their dims, type and
byte length stay, so netron still shows shapes), which takes ResNet-18 from 44.6 MiB to a few
hundred KiB. ``weights=True`` sends the file as it is so a user can inspect values. Other formats
netron reads (``.pt2``, ``.pt``, ...) are sent whole, up to :data:`MAX_SEND_BYTES`.

Every problem is a :class:`GraphInputError` whose message the widget shows as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freeze_widgets.base.wording import format_bytes
from freeze_widgets.graph.overlay import Overlay, overlay_of

__all__ = ["MAX_SEND_BYTES", "NOT_SENT", "GraphInputError", "ModelPayload", "model_payload"]

MAX_SEND_BYTES = 512 * 2**20
"""Largest payload sent over the comm (comm messages are held in memory on both sides)."""

NOT_SENT = "weights-not-sent"
"""External-data location written into stubbed initializers (nothing by that name exists)."""


class GraphInputError(ValueError):
    """A model file the graph view cannot show; the message says why and what to do."""


@dataclass
class ModelPayload:
    """What the widget sends for one model file.

    Attributes:
        name: File name (netron picks its reader by it).
        data: Bytes to send.
        file_bytes: Size of the file on disk (with external data for ONNX).
        stripped: How many initializers were replaced by stubs.
        overlay: The freeze per node (ONNX only).
    """

    name: str
    data: bytes
    file_bytes: int
    stripped: int = 0
    overlay: Overlay = field(default_factory=Overlay)


def _stub(tensor: Any) -> bool:
    """Replace ``tensor``'s values with an external-data stub; False if it holds none."""
    from onnx import TensorProto

    if tensor.data_location == TensorProto.EXTERNAL:
        return False  # already only a reference; its data file is never read
    nbytes = tensor.ByteSize()
    if nbytes < 64:
        return False  # scalars and shape constants: cheaper to keep than to stub
    for typed in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                  "uint64_data", "string_data"):  # fmt: skip
        tensor.ClearField(typed)
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=NOT_SENT)
    tensor.external_data.add(key="length", value=str(nbytes))
    return True


def _strip_graph(graph: Any) -> int:
    """Stub the initializers of ``graph`` and of every subgraph (If/Loop/Scan bodies)."""
    count = sum(_stub(t) for t in graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            count += sum(_strip_graph(g) for g in subgraphs)
    return count


def _onnx_payload(path: Path, weights: bool) -> ModelPayload:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise GraphInputError(
            f"{path.name} is not an ONNX model ({type(exc).__name__}); export the model again"
        ) from exc
    if not proto.graph.node and not proto.functions:
        raise GraphInputError(f"{path.name} holds no ONNX graph; export the model again")
    overlay = overlay_of(proto)
    external = sum(
        (path.parent / e.value).stat().st_size
        for e in {e.value: e for t in proto.graph.initializer for e in t.external_data}.values()
        if e.key == "location" and (path.parent / e.value).is_file()
    )
    size = path.stat().st_size + external
    if weights:
        return ModelPayload(path.name, path.read_bytes(), size, 0, overlay)
    stripped = _strip_graph(proto.graph)
    return ModelPayload(path.name, proto.SerializeToString(), size, stripped, overlay)


def model_payload(path: str | os.PathLike[str], *, weights: bool = False) -> ModelPayload:
    """Read ``path`` for the graph widget (see the module docstring).

    Args:
        path: A model file netron reads; ONNX gets its weights stripped unless ``weights``.
        weights: Send the weights too (ONNX models with external data: the graph file only).

    Raises:
        GraphInputError: No such file, a folder, not a model, or too large to send.
    """
    if path is None or not isinstance(path, str | os.PathLike):
        raise GraphInputError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise GraphInputError(f"no model file at {resolved}; export the model first")
    if not resolved.is_file():
        raise GraphInputError(f"{resolved} is a folder; pass the model file inside it")
    if resolved.suffix.lower() == ".onnx":
        payload = _onnx_payload(resolved, weights)
    else:
        size = resolved.stat().st_size
        if size > MAX_SEND_BYTES:
            raise GraphInputError(
                f"{resolved.name} is {format_bytes(size)}, more than the graph view sends "
                f"({format_bytes(MAX_SEND_BYTES)}); export to ONNX to see its graph without weights"
            )
        payload = ModelPayload(resolved.name, resolved.read_bytes(), size)
    if len(payload.data) > MAX_SEND_BYTES:
        raise GraphInputError(
            f"{resolved.name} with weights is {format_bytes(len(payload.data))}, more than the "
            f"graph view sends ({format_bytes(MAX_SEND_BYTES)}); show it with weights=False"
        )
    return payload
