"""Serve a model file with Netron on 127.0.0.1 and work out the URL a browser can reach.

The server always binds 127.0.0.1 (never 0.0.0.0). What differs by environment is the URL
(docs/design.md, trap 6):

* locally: ``http://localhost:{port}/``: the host name ``localhost``, because Netron's consent
  cookie is rejected on ``127.0.0.1``;
* behind jupyter-server-proxy (JupyterHub, or an explicit base URL):
  ``{prefix}proxy/{port}/``;
* on Colab: ``google.colab.output.serve_kernel_port_as_iframe(port)``.

Showing the server in a notebook (``show_netron``) needs IPython and lives in
:mod:`freeze_widgets.ui.netron_view`.

Isolation (docs/design.md, trap 15): netron's own server keeps its content in a class attribute and
serves the model's whole folder, so we run our own small server per model file
(:mod:`freeze_widgets.graph.netron_http`): Netron's static page from the installed package, the
model, the files it references (ONNX external data) and nothing else; requests with a foreign
``Host`` get 403. Widgets hold a server through a :class:`NetronView` (:func:`open_view`); the
server stops when its last view closes.

Telemetry: the ``netron`` package (checked: 9.x) has no option to turn off the page's consent
prompt or its analytics; both live in the served JavaScript.

The ``netron`` package is imported only when a server is started (for its static files).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from freeze_widgets.graph.netron_http import ModelHTTPServer

__all__ = [
    "BASE_URL_ENV",
    "NetronServer",
    "NetronView",
    "netron_url",
    "open_view",
    "running_servers",
    "start_netron",
    "stop_netron",
    "view_count",
]

BASE_URL_ENV = "FREEZE_WIDGETS_NETRON_BASE_URL"
_HUB_PREFIX_ENV = "JUPYTERHUB_SERVICE_PREFIX"

_lock = threading.Lock()
_servers: dict[Path, _Entry] = {}
# Views opened by start_netron (no owner to close them): released by stop_netron.
_script_views: dict[Path, list[NetronView]] = {}
_view_ids = itertools.count(1)


@dataclass(frozen=True)
class NetronServer:
    """A running Netron server for one model file.

    Attributes:
        port: Port on 127.0.0.1.
        url: URL for a browser (see :func:`netron_url`).
        path: The served model file (resolved).
    """

    port: int
    url: str
    path: Path


def netron_url(
    port: int, *, env: Mapping[str, str] = os.environ, base_url: str | None = None
) -> str:
    """URL at which a browser reaches a Netron server listening on ``127.0.0.1:port``.

    Order: ``base_url`` argument, then ``$FREEZE_WIDGETS_NETRON_BASE_URL``, then
    ``$JUPYTERHUB_SERVICE_PREFIX``; any of those gives ``{prefix}proxy/{port}/`` (the
    jupyter-server-proxy route, prefix ending in "/", "/" if empty). Otherwise
    ``http://localhost:{port}/``.

    Args:
        port: The server's port.
        env: Environment to read (injectable for tests).
        base_url: Explicit prefix, e.g. ``"/user/ann/"`` or ``"https://hub.example/user/ann/"``.

    Returns:
        The URL, always ending in "/".
    """
    prefix = base_url
    if prefix is None:
        prefix = env.get(BASE_URL_ENV) or env.get(_HUB_PREFIX_ENV)
    if prefix is None:
        # localhost, not 127.0.0.1: Netron's consent cookie is rejected on a bare IP.
        return f"http://localhost:{port}/"
    if not prefix.endswith("/"):
        prefix += "/"
    return f"{prefix}proxy/{port}/"


@dataclass
class _Entry:
    """One running server and the views that hold it."""

    httpd: ModelHTTPServer
    views: set[int] = field(default_factory=set)


class NetronView:
    """One view's hold on the Netron server of a model file; ``close()`` releases it.

    The server stops when its last view closes, so closing one explorer never breaks another
    explorer's view of the same file. Also a context manager.

    Attributes:
        server: The server (port, browser URL, served file).
    """

    def __init__(self, server: NetronServer, key: int) -> None:
        self.server = server
        self._key = key
        self.closed = False

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def path(self) -> Path:
        return self.server.path

    def close(self) -> None:
        """Release this view (idempotent); stops the server if no other view holds it."""
        if self.closed:
            return
        self.closed = True
        _release(self.server.path, self._key)

    def __enter__(self) -> NetronView:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.url
        return f"<NetronView {self.path.name} {state}>"


def _new_server(resolved: Path) -> ModelHTTPServer:
    import netron

    static_dir = Path(netron.__file__).parent
    httpd = ModelHTTPServer(resolved, static_dir, str(getattr(netron, "__version__", "")))
    httpd.start()
    return httpd


def open_view(path: str | os.PathLike[str], *, base_url: str | None = None) -> NetronView:
    """Hold a Netron server for ``path`` (starting one if needed) and return the view.

    Each model file gets its own server (its own port), serving only that file and the files it
    references (docs/design.md, trap 15). Views of one file share its server; it stops when the
    last view is closed.

    Args:
        path: Model file (``.onnx``, ``.pt``, ...); read on each request, so a re-export shows
            on reload.
        base_url: Passed to :func:`netron_url`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    if path is None or not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"no model file at {resolved}; export the model first")
    with _lock:
        entry = _servers.get(resolved)
        if entry is None:
            entry = _Entry(_new_server(resolved))
            _servers[resolved] = entry
        port = entry.httpd.port
        url = netron_url(port, base_url=base_url)
        if not url.startswith("http://localhost:"):
            entry.httpd.allow_proxy(url)
        key = next(_view_ids)
        entry.views.add(key)
    return NetronView(NetronServer(port, url, resolved), key)


def _release(resolved: Path, key: int) -> None:
    with _lock:
        entry = _servers.get(resolved)
        if entry is None or key not in entry.views:
            return  # already stopped by stop_netron
        entry.views.discard(key)
        if entry.views:
            return
        del _servers[resolved]
    entry.httpd.stop()


def start_netron(path: str | os.PathLike[str], *, base_url: str | None = None) -> NetronServer:
    """Serve ``path`` with Netron on 127.0.0.1 until :func:`stop_netron` (script use).

    A held view for code that has no close hook; widgets use :func:`open_view` instead, so their
    server stops with the last view.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    view = open_view(path, base_url=base_url)
    with _lock:
        _script_views.setdefault(view.path, []).append(view)
    return view.server


def stop_netron(path: str | os.PathLike[str] | None = None) -> int:
    """Stop the server for ``path`` (every view of it), or every server when ``path`` is None.

    Returns:
        How many servers were stopped.
    """
    with _lock:
        if path is None:
            targets = list(_servers)
        else:
            resolved = Path(path).resolve()
            targets = [resolved] if resolved in _servers else []
        entries = [_servers.pop(key) for key in targets]
        for key in targets:
            _script_views.pop(key, None)
    for entry in entries:
        entry.httpd.stop()
    return len(entries)


def running_servers() -> list[NetronServer]:
    """Servers started here that are still running, oldest first (local URLs)."""
    with _lock:
        return [
            NetronServer(e.httpd.port, netron_url(e.httpd.port, env={}), key)
            for key, e in _servers.items()
        ]


def view_count(path: str | os.PathLike[str]) -> int:
    """How many views currently hold the server of ``path`` (0 when none runs)."""
    with _lock:
        entry = _servers.get(Path(path).resolve())
        return 0 if entry is None else len(entry.views)
