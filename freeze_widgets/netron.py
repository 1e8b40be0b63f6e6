"""Serve a model file with Netron on 127.0.0.1 and work out the URL a browser can reach.

The server always binds 127.0.0.1 (never 0.0.0.0). What differs by environment is the URL
(docs/design.md, trap 6):

* locally: ``http://localhost:{port}/``: the host name ``localhost``, because Netron's consent
  cookie is rejected on ``127.0.0.1``;
* behind jupyter-server-proxy (JupyterHub, or an explicit base URL):
  ``{prefix}proxy/{port}/``;
* on Colab: ``google.colab.output.serve_kernel_port_as_iframe(port)``.

Showing the server in a notebook (``show_netron``) needs IPython and lives in
:mod:`freeze_widgets.ui.netron_view`; ``freeze_widgets.netron.show_netron`` still resolves to it.

Telemetry: the ``netron`` Python package (checked: 9.x) has no option to turn off the page's
consent prompt or its analytics; both live in the served JavaScript.

The ``netron`` package is imported only when a server is started.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_URL_ENV",
    "NetronServer",
    "netron_url",
    "running_servers",
    "start_netron",
    "stop_netron",
]

BASE_URL_ENV = "FREEZE_WIDGETS_NETRON_BASE_URL"
_HUB_PREFIX_ENV = "JUPYTERHUB_SERVICE_PREFIX"
_HOST = "127.0.0.1"

_lock = threading.Lock()
_servers: dict[Path, NetronServer] = {}


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


def _alive(server: NetronServer) -> bool:
    import netron

    return bool(netron.status((_HOST, server.port)))


def start_netron(path: str | os.PathLike[str], *, base_url: str | None = None) -> NetronServer:
    """Serve ``path`` with Netron on 127.0.0.1, reusing the server already serving that file.

    Netron reads the file on each request, so a re-exported file shows on reload.

    Args:
        path: Model file (``.onnx``, ``.pt``, ...).
        base_url: Passed to :func:`netron_url`.

    Returns:
        The :class:`NetronServer`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    import netron

    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"no model file at {resolved}")
    with _lock:
        server = _servers.get(resolved)
        if server is not None and _alive(server):
            return NetronServer(server.port, netron_url(server.port, base_url=base_url), resolved)
        root = logging.getLogger()
        # netron.serve calls logging.basicConfig() when the root logger has no handler, which
        # would start printing every library's INFO logs; a NullHandler for the call avoids it.
        guard = logging.NullHandler()
        root.addHandler(guard)
        try:
            # Port 0: netron asks the OS for a free port and returns the address it bound.
            _, port = netron.serve(str(resolved), None, address=(_HOST, 0), browse=False)
        finally:
            root.removeHandler(guard)
        server = NetronServer(int(port), netron_url(int(port), base_url=base_url), resolved)
        _servers[resolved] = server
        return server


def stop_netron(path: str | os.PathLike[str] | None = None) -> int:
    """Stop the server for ``path``, or every server started here when ``path`` is None.

    Returns:
        How many servers were stopped.
    """
    if not _servers:
        return 0
    import netron

    with _lock:
        if path is None:
            targets = list(_servers)
        else:
            resolved = Path(path).resolve()
            targets = [resolved] if resolved in _servers else []
        addresses = [(_HOST, _servers.pop(key).port) for key in targets]
        for address in addresses:
            netron.stop(address)
        # netron's thread polls its socket every 0.25 s; the listening socket is only released
        # once that poll returns, so wait for the thread to end before reporting "stopped".
        deadline = time.monotonic() + 2.0
        while any(netron.status(a) for a in addresses) and time.monotonic() < deadline:
            time.sleep(0.02)
    return len(targets)


def running_servers() -> list[NetronServer]:
    """Servers started here that are still answering, oldest first."""
    with _lock:
        for key in [k for k, s in _servers.items() if not _alive(s)]:
            del _servers[key]
        return list(_servers.values())


def __getattr__(name: str) -> Any:
    # show_netron displays through IPython, so it lives in the UI layer; kept importable here.
    if name == "show_netron":
        from .ui.netron_view import show_netron

        return show_netron
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Daemon threads would die with the interpreter anyway; stopping closes the sockets cleanly.
atexit.register(stop_netron)
