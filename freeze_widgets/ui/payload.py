"""What the tree widget sends to the browser: pure functions over a ModuleTree, no widgets.

Compact keys keep the payload small (EfficientNet-B7 has 1,105 nodes): see tree.js for the
record layout. A delta row is ``[index, trainable, total, type_name, state]``. The state is
decided once, in Python (``Node.state``); the browser only renders it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

from freeze_widgets.tree import ModuleTree, Node

__all__ = ["delta_rows", "filter_visible", "node_record", "tree_payload"]


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


def tree_payload(tree: ModuleTree) -> list[dict[str, Any]]:
    """The whole tree, one record per node, in pre-order."""
    return [node_record(node) for node in tree.nodes]


def delta_rows(nodes: Iterable[Node]) -> list[list[Any]]:
    """Rows for the nodes a change touched (the type too: a BatchNorm swap changes it)."""
    return [[n.index, n.trainable, n.total, n.type_name, n.state] for n in nodes]


def filter_visible(tree: ModuleTree, text: str) -> list[int] | None:
    """Indices of nodes whose path matches ``text``, with their ancestors; None when no filter.

    Text matches as a case-insensitive substring of the path or type; text with ``*``, ``?`` or
    ``[`` also matches as a glob over the path (the same patterns :func:`freeze` takes), so a
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
        return is_glob and fnmatch.fnmatchcase(node.path, text)

    keep: set[int] = set()
    for node in tree.nodes:
        if node.index == 0 or not match(node):
            continue
        i: int | None = node.index
        while i is not None and i not in keep:
            keep.add(i)
            i = tree.nodes[i].parent
    keep.add(0)
    return sorted(keep)
