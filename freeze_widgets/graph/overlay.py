"""Which ONNX nodes hold frozen weights, and which module each node came from.

Two records an exported file carries: the dynamo exporter writes each node's module scopes
(``pkg.torch.onnx.name_scopes``, ``pkg.torch.onnx.class_hierarchy``) into its metadata, and
:func:`~freeze_widgets.export.onnx_freeze.mark_freeze` writes "frozen parameter
layer1.0.conv1.weight" into each weight's ``doc_string``. A node's state comes from the weights
it reads (all frozen, all trainable, or mixed); nodes that read no weights have none. The module
is the node's deepest scope; after the exporter fuses a BatchNorm into a Conv the fused node
carries the BatchNorm's scope but the Conv's weight, so such nodes are flagged ``approx``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeInfo", "Overlay", "overlay_of"]

_ROLE = re.compile(r"^(frozen|trainable) parameter (\S+)$")
_WRAPPERS = ("BoundModule", "PositionalInputs")  # export wrappers holding the model as `model`


@dataclass(frozen=True)
class NodeInfo:
    """One node's module and freeze state (``state`` is "" for nodes without weights)."""

    module: str
    type: str
    state: str
    params: tuple[str, ...] = ()
    approx: bool = False


@dataclass
class Overlay:
    """Per-node records and the totals the legend shows.

    Attributes:
        nodes: Node name -> record (only nodes with a module scope or weights).
        counts: Nodes per state (``frozen``, ``trainable``, ``partial``, ``none``).
        weights: Weight elements per state (``frozen``, ``trainable``), each tensor once.
        marked: Whether the file carries freeze marks at all.
    """

    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    marked: bool = False

    def to_json(self) -> dict[str, Any]:
        """The form the widget's JavaScript reads."""
        return {
            "nodes": {
                name: {"m": n.module, "t": n.type, "s": n.state, "p": list(n.params), "a": n.approx}
                for name, n in self.nodes.items()
            },
            "counts": self.counts,
            "weights": self.weights,
            "marked": self.marked,
        }


def _meta(node: Any) -> dict[str, str]:
    return {e.key: e.value for e in node.metadata_props}


def _literal_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _scope(meta: dict[str, str]) -> tuple[str, str]:
    """(module path in the user's model, its class name) from a node's metadata."""
    scopes = _literal_list(meta.get("pkg.torch.onnx.name_scopes"))[:-1]  # last: the op itself
    classes = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy"))[:-1]
    if not scopes:
        return "", ""
    path = scopes[-1]
    wrappers = sum(1 for c in classes if c.rsplit(".", 1)[-1] in _WRAPPERS)
    for _ in range(wrappers):
        path = path.removeprefix("model.").removeprefix("model")
    kind = classes[-1].rsplit(".", 1)[-1] if classes else ""
    return path, kind


def _numel(tensor: Any) -> int:
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count


def overlay_of(proto: Any) -> Overlay:
    """The overlay of a loaded ``onnx.ModelProto`` (read without its external data)."""
    roles: dict[str, tuple[str, str, int]] = {}
    for init in proto.graph.initializer:
        match = _ROLE.match(init.doc_string or "")
        if match:
            roles[init.name] = (match.group(1), match.group(2), _numel(init))
    out = Overlay(marked=bool(roles))
    out.counts = {"frozen": 0, "trainable": 0, "partial": 0, "none": 0}
    out.weights = {"frozen": 0, "trainable": 0}
    for name, (state, _param, numel) in roles.items():
        del name
        out.weights[state] += numel
    for index, node in enumerate(proto.graph.node):
        meta = _meta(node)
        module, kind = _scope(meta)
        held = [roles[i] for i in node.input if i in roles]
        states = {state for state, _, _ in held}
        state = "" if not states else states.pop() if len(states) == 1 else "partial"
        out.counts[state or "none"] += 1
        if not module and not held:
            continue
        fused = "FuseBatchNorm" in meta.get("pkg.onnxscript.rewriter.rule_name", "")
        key = node.name or f"#{index}"  # netron names unnamed nodes by position
        out.nodes[key] = NodeInfo(module, kind, state, tuple(p for _, p, _ in held), fused)
    return out
