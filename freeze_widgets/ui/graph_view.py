"""The graph view: netron's viewer in an anywidget, fed over the kernel comm (no server, no port).

The browser side (``graph.js``) asks for what it lacks; this side answers from the installed
netron package (:mod:`freeze_widgets.graph.netron_assets`) and the model file
(:mod:`freeze_widgets.graph.model_payload`). Messages from the page:

* ``need-boot`` (``have``: module ids cached in the page, ``page``: page cached): netron's page,
  the core modules not cached and the ONNX metadata, as one gzip'd JSON buffer;
* ``need-module`` / ``need-asset`` (``key``): one more netron module / metadata file;
* ``need-model``: the model bytes (one binary buffer) and the frozen overlay;
* ``status`` (``drawn``, ``ms``, ``error``) and ``select`` (``node``, ``module``).

VS Code, Colab and other front ends need nothing but a working anywidget comm.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from freeze_widgets.base.wording import format_bytes
from freeze_widgets.graph.model_payload import GraphInputError, ModelPayload, model_payload
from freeze_widgets.graph.netron_assets import NetronInstall, UnsupportedNetron, netron_install

__all__ = ["GraphView"]

_HERE = Path(__file__).parent


def _summary(payload: ModelPayload, weights: bool) -> str:
    sent = format_bytes(len(payload.data))
    whole = format_bytes(payload.file_bytes)
    if weights or not payload.stripped:
        return f"{payload.name}: {sent} sent to the page"
    return (
        f"{payload.name}: graph only, {sent} sent of {whole} "
        f"({payload.stripped} weight tensors left out; weights=True sends them)"
    )


class GraphView(anywidget.AnyWidget):
    """Netron's graph of one model file, inside the notebook, with the freeze drawn on it.

    Attributes:
        path: The model file shown.
        payload: What was read from it (None when ``message`` says why not).
        status: The page's last report (``drawn`` nodes, ``ms``, ``error``), {} before one.
    """

    _esm = _HERE / "graph.js"
    _css = _HERE / "graph.css"

    name = traitlets.Unicode("").tag(sync=True)
    version = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(600).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)  # shown instead of the graph when set
    summary = traitlets.Unicode("").tag(sync=True)
    overlay = traitlets.Dict().tag(sync=True)

    def __init__(
        self, path: str | os.PathLike[str], *, height: int = 600, weights: bool = False
    ) -> None:
        """Read ``path`` now; problems become the widget's ``message``, never an exception.

        Args:
            path: A model file netron reads (ONNX, ``.pt2``, ...).
            height: Height of the graph in pixels.
            weights: Send the weights too (default: graph and shapes only).
        """
        if isinstance(height, bool) or not isinstance(height, int) or height < 100:
            raise ValueError(f"height must be an int of at least 100 pixels; got {height!r}")
        super().__init__(height=height)
        self.add_class("fw-graph-view")
        self.path = Path(os.fspath(path)) if isinstance(path, str | os.PathLike) else None
        self.payload: ModelPayload | None = None
        self.status: dict[str, Any] = {}
        self._install: NetronInstall | None = None
        self._on_select: list[Callable[[str, str], None]] = []
        try:
            self._install = netron_install()
            self.payload = model_payload(path, weights=weights)
        except (UnsupportedNetron, GraphInputError) as exc:
            self.message = str(exc)
            self.name = self.path.name if self.path is not None else ""
        else:
            self.version = self._install.version
            self.name = self.payload.name
            self.summary = _summary(self.payload, weights)
            self.overlay = self.payload.overlay.to_json()
        self.on_msg(self._on_msg)

    def on_select(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(node_name, module_path)`` when a node is clicked in the page."""
        self._on_select.append(callback)

    def _answer(self, kind: str, key: str) -> tuple[dict[str, Any], list[bytes]]:
        install, payload = self._install, self.payload
        if install is None or payload is None:
            return {"error": self.message or "nothing to show"}, []
        if kind == "module":
            return {"text": install.module(key)}, []
        if kind == "asset":
            return {"text": install.asset(key)}, []
        if kind == "model":
            return {"name": payload.name}, [payload.data]
        raise ValueError(f"unknown request {kind!r}")

    def _boot(self, content: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        install = self._install
        if install is None or self.payload is None:
            return {"error": self.message or "nothing to show"}, []
        have = frozenset(str(m) for m in content.get("have") or [])
        return {"bundle": "gzip"}, [install.bundle(have, page=not content.get("page"))]

    def _on_msg(self, _widget: Any, content: dict[str, Any], _buffers: list[bytes]) -> None:
        kind = str(content.get("type", ""))
        key = str(content.get("key") or "")
        if kind == "status":
            self.status = {k: content.get(k) for k in ("drawn", "ms", "error")}
        elif kind == "select":
            for callback in self._on_select:
                callback(str(content.get("node", "")), str(content.get("module", "")))
        elif kind.startswith("need-"):
            what = kind.removeprefix("need-")
            buffers: list[bytes] = []
            try:
                if what == "boot":
                    reply, buffers = self._boot(content)
                else:
                    reply, buffers = self._answer(what, key)
            except ValueError as exc:
                reply = {"error": str(exc)}
            self.send({"type": what, "key": key, **reply}, buffers=buffers)
