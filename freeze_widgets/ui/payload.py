"""What the tree widget sends to the browser: pure functions over a ModuleTree, no widgets.

Compact keys keep the payload small (EfficientNet-B7 has 1,105 nodes): see tree.js for the
record layout. A delta row is ``[index, trainable, total, type_name, state]``. The state is
decided once, in Python (``Node.state``); the browser only renders it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from freeze_widgets.tree import ModuleTree, Node
from freeze_widgets.ui.adapters import adapter_label, is_adapter

__all__ = [
    "delta_rows",
    "filter_visible",
    "glob_matches",
    "node_record",
    "trainable_visible",
    "tree_payload",
    "visible_rows",
]


def node_record(node: Node) -> dict[str, Any]:
    record: dict[str, Any] = {
        "i": node.index,
        "p": node.path,
        "n": node.name,
        "t": node.type_name,
        "k": "p" if node.kind == "parameter" else "m",
        "d": node.depth,
        "pa": node.parent,
        "c": node.children,
        "tot": node.total,
        "tr": node.trainable,
        "st": node.state,
    }
    if node.depth > 0 and node.total > 0:
        record["ft"] = 1  # "freeze up to here" is offered: the row has parameters to freeze
    if node.shared_with:
        record["sh"] = list(node.shared_with)
    if node.shape is not None:
        record["s"] = list(node.shape)
    return record


def tree_payload(
    tree: ModuleTree, shapes: Mapping[str, tuple[int, ...]] | None = None
) -> list[dict[str, Any]]:
    """The whole tree, one record per node, in pre-order.

    An adapter layer's record carries ``ad`` (its label: method, rank, alpha); its children
    without parameters (PEFT's empty bookkeeping) carry ``hd`` and are folded out of view.
    ``shapes`` (module path -> output shape, from :func:`~freeze_widgets.ui.shapes.output_shapes`)
    become ``os``.
    """
    records = [node_record(node) for node in tree.nodes]
    for node in tree.nodes:
        if shapes and node.kind == "module" and node.path in shapes:
            records[node.index]["os"] = list(shapes[node.path])
    modules: dict[str, nn.Module] = dict(tree.model.named_modules())
    for node in tree.nodes:
        module = modules.get(node.path) if node.kind == "module" else None
        if module is None or not is_adapter(module):
            continue
        label = adapter_label(module)
        if label is not None:
            records[node.index]["ad"] = label
        for child in node.children:
            if tree.nodes[child].total == 0:
                records[child]["hd"] = 1
    return records


def delta_rows(nodes: Iterable[Node]) -> list[list[Any]]:
    """Rows for the nodes a change touched (the type too: a BatchNorm swap changes it)."""
    return [[n.index, n.trainable, n.total, n.type_name, n.state] for n in nodes]


def _with_ancestors(tree: ModuleTree, matched: Iterable[int]) -> list[int]:
    keep: set[int] = {0}
    for index in matched:
        i: int | None = index
        while i is not None and i not in keep:
            keep.add(i)
            i = tree.nodes[i].parent
    return sorted(keep)


def trainable_visible(tree: ModuleTree) -> list[int]:
    """The "trainable only" view: leaves and parameters that train, with their ancestors.

    How users find what trains in a large model with adapters: the frozen bulk disappears.
    """
    return _with_ancestors(
        tree, (n.index for n in tree.nodes if n.trainable and not n.children and n.index)
    )


def filter_visible(tree: ModuleTree, text: str) -> list[int] | None:
    """Indices of nodes whose path matches ``text``, with their ancestors; None when no filter.

    Text matches as a case-insensitive substring of the path or type; text with ``*``, ``?`` or
    ``[`` also matches as a glob over the path or any dotted suffix of it, so a
    name that itself holds such characters (``ModuleDict`` key ``r[1]``) is still found.
    """
    text = text.strip()
    if not text:
        return None
    needle = text.lower()
    is_glob = any(ch in text for ch in "*?[")

    def match(node: Node) -> bool:
        if needle in node.path.lower() or needle in node.type_name.lower():
            return True
        return is_glob and glob_matches(node.path, text)

    return _with_ancestors(tree, (n.index for n in tree.nodes if n.index and match(n)))


def glob_matches(path: str, pattern: str) -> bool:
    """A glob matched against the path or any of its dotted suffixes, as users type it.

    ``layers.7*`` finds ``model.layers.7`` and ``model.layers.7.mlp`` without a leading
    ``*.``; the whole path is one of the suffixes, so ``model.layers.*`` still works.
    """
    parts = path.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def visible_rows(tree: ModuleTree, text: str, trainable_only: bool) -> tuple[list[int] | None, str]:
    """The rows to show for the filter ``text`` and the "trainable only" view, and a note
    under the tree when nothing but the root is left ("" otherwise)."""
    visible = filter_visible(tree, text)
    if trainable_only:
        trains = set(trainable_visible(tree))
        visible = sorted(trains if visible is None else trains.intersection(visible))
    if visible is None or len(visible) > 1:
        return visible, ""
    only = "trainable " if trainable_only else ""
    note = f"No {only}module matches {text.strip()!r}" if text.strip() else ""
    return visible, note or "Nothing trains: every parameter is frozen"
