"""The module tree: one anywidget model holding the whole tree as data (docs/design.md, §5)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from freeze_widgets.tree import ModuleTree, Node
from freeze_widgets.ui.payload import delta_rows, tree_payload

__all__ = ["TreeWidget"]

_HERE = Path(__file__).parent


class TreeWidget(anywidget.AnyWidget):
    """Rows with caret, tri-state checkbox, name (type) and ``trainable / total``.

    The browser sends ``{"type": "tick", "path", "frozen"}``, ``{"type": "freeze_to", "path"}``
    (button or key U on a row whose record has ``ft``)
    and ``{"type": "sync"}``; Python answers ticks with a ``delta`` of the changed nodes only.
    ``rows`` is the data as last sent, which is what ``FreezeExplorer.state`` reports.
    """

    _esm = _HERE / "tree.js"
    _css = _HERE / "tree.css"

    tree = traitlets.List(trait=traitlets.Dict()).tag(sync=True)
    visible = traitlets.List(trait=traitlets.Int(), allow_none=True, default_value=None).tag(
        sync=True
    )
    disabled = traitlets.Bool(False).tag(sync=True)
    # A line under the rows, e.g. "No module matches 'xyz'" (empty: nothing shown).
    note = traitlets.Unicode("").tag(sync=True)
    # Rows a previewed config would change, highlighted until applied or dismissed.
    highlight = traitlets.List(trait=traitlets.Int()).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("fw-tree")
        self.seq = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.on_msg(self._on_msg)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.tree

    def on(self, kind: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Register the handler for a browser message type ("tick", "freeze_to")."""
        self._handlers[kind] = handler

    def load(self, tree: ModuleTree, shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
        """Send the whole tree (on build and after a refresh), with output shapes if known."""
        self.tree = tree_payload(tree, shapes)

    def send_delta(self, nodes: list[Node]) -> None:
        """Send only the changed nodes and mirror them into ``rows``."""
        rows = delta_rows(nodes)
        for index, trainable, total, type_name, state in rows:
            record = self.tree[index]
            record["tr"], record["tot"], record["t"], record["st"] = (
                trainable,
                total,
                type_name,
                state,
            )
        self.seq += 1
        self.send({"type": "delta", "u": rows, "seq": self.seq})

    def show_only(self, indices: list[int] | None) -> None:
        """Show only these rows (a filter's matches and their ancestors); None shows all."""
        self.visible = indices  # type: ignore[assignment]

    def expand_all(self, expand: bool = True) -> None:
        self.send({"type": "expand", "all": expand})

    def clear_handlers(self) -> None:
        """Forget every handler (they are bound methods of the explorer; see close())."""
        self._handlers.clear()

    def receive(self, content: Any) -> None:
        """Handle ``content`` exactly as the same message from the browser (like ``click()``).

        Tests and the explorer's ``tick`` drive the tree through here, the path a click takes.
        """
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "sync":
            self.send({"type": "full", "nodes": self.tree})
            return
        handler = self._handlers.get(str(kind))
        if handler is not None:
            handler(content)

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        self.receive(content)
