"""Our own small HTTP server for Netron: one model per server, nothing else from its folder.

netron's own server keeps what it serves in a class attribute (two servers in one process both
serve the last model started) and serves every file next to the model under ``/data/<name>``
(docs/design.md, trap 15). This server serves, per instance:

* ``/`` (``/index.html``): Netron's page from the installed ``netron`` package, with the meta tags
  that tell it which file to fetch (``data/<model name>``, which the page resolves relative to
  its own URL, so it also works under a proxy prefix);
* ``/data/<model name>`` and ``/data/<file the model references>`` (ONNX external data), read on
  each request so a re-export shows on reload; any other ``/data/`` path is a 404;
* Netron's static files (``.js``, ``.css``, ``.json``, images) from the package folder.

Host check (against DNS rebinding: a web page whose name resolves to 127.0.0.1 would otherwise
read the model): a request is answered only if its ``Host`` is a loopback name with this
server's port (``127.0.0.1``, ``localhost``, ``[::1]``), or the host of an absolute proxy base
URL, or if it carries the ``X-Forwarded-Context`` header jupyter-server-proxy adds, equal to this
server's proxy path (``{prefix}proxy/{port}``; there the ``Host`` is the hub's and only the
proxy, which checks the Jupyter login, knows the path). ``X-Forwarded-Host`` alone is not
trusted: any page can send it. Everything else gets 403.
"""

from __future__ import annotations

import html
import http.server
import os
import posixpath
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ModelHTTPServer", "referenced_files"]

_MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".ttf": "font/ttf",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of an ONNX graph, subgraphs (If/Loop bodies) included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _onnx_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _onnx_tensors(subgraph)


def referenced_files(model_path: Path) -> dict[str, Path]:
    """Files an ONNX model references (external data), by the relative name the page requests.

    Only existing files inside the model's folder count; a ``location`` leading outside it
    (``../secret``) is ignored. Non-ONNX models reference nothing.
    """
    if model_path.suffix.lower() != ".onnx":
        return {}
    import onnx

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # not a readable ONNX file: Netron will say so; serve the file alone
        return {}
    folder = model_path.parent.resolve()
    found: dict[str, Path] = {}
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if not location:
            continue
        target = (folder / location).resolve()
        if target.is_file() and os.path.commonpath([folder, target]) == str(folder):
            found[posixpath.normpath(Path(location).as_posix())] = target
    return found


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ModelHTTPServer

    def do_GET(self) -> None:
        self._respond()

    def do_HEAD(self) -> None:
        self._respond()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a notebook's output is no place for an access log

    def _respond(self) -> None:
        if not self.server.host_allowed(self.headers.get("Host"), self.headers):
            self._send(403, "text/plain", b"403: host not allowed for this Netron server")
            return
        path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
        if path in ("/", "/index.html"):
            self._send(200, _MIME_TYPES[".html"], self.server.index_page())
        elif path.startswith("/data/"):
            content = self.server.read_data(path[len("/data/") :])
            if content is None:
                self._send(404, "text/plain", b"404: not served")
            else:
                self._send(200, "application/octet-stream", content)
        else:
            self._send_static(path)

    def _send_static(self, path: str) -> None:
        static = self.server.static_dir
        target = (static / path.lstrip("/")).resolve()
        mime = _MIME_TYPES.get(target.suffix)
        inside = os.path.commonpath([static, target]) == str(static)
        if mime is None or not inside or not target.is_file():
            self._send(404, "text/plain", b"404: not served")
            return
        self._send(200, mime, target.read_bytes())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ModelHTTPServer(http.server.ThreadingHTTPServer):
    """Serves one model file (and the files it references) with Netron's page, on 127.0.0.1.

    Args:
        model_path: The model file (resolved).
        static_dir: The installed ``netron`` package folder.
        version: netron's version, shown by its page.
    """

    daemon_threads = True

    def __init__(self, model_path: Path, static_dir: Path, version: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.model_path = model_path
        self.static_dir = static_dir.resolve()
        self.version = version
        self.allowed_hosts = {f"{name}:{self.port}" for name in _LOOPBACK_NAMES}
        self.proxy_contexts: set[str] = set()
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._cache: tuple[tuple[int, int], dict[str, Path]] | None = None
        self._cache_lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port (returns once the socket is closed)."""
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=2.0)

    def allow_proxy(self, url: str) -> None:
        """Accept requests reaching this server through the proxy ``url`` (see module doc)."""
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc:
            self.allowed_hosts.add(parsed.netloc.lower())
        self.proxy_contexts.add(parsed.path.rstrip("/"))

    def host_allowed(self, host: str | None, headers: Any) -> bool:
        if host is not None and host.lower() in self.allowed_hosts:
            return True
        context = headers.get("X-Forwarded-Context") or headers.get("X-ProxyContextPath")
        return context is not None and context.rstrip("/") in self.proxy_contexts

    def index_page(self) -> bytes:
        """Netron's page, told which file to fetch (a relative URL: works under a proxy)."""
        page = (self.static_dir / "index.html").read_text(encoding="utf-8")
        name = html.escape(self.model_path.name, quote=True)
        quoted = html.escape(urllib.parse.quote(self.model_path.name), quote=True)
        meta = "\n".join(
            [
                '<meta name="type" content="Python">',
                f'<meta name="version" content="{html.escape(self.version)}">',
                f'<meta name="file" content="data/{quoted}">',
                f'<meta name="name" content="{name}">',
                f'<meta name="identifier" content="{name}">',
            ]
        )
        page = re.sub(r'<meta name="version" content=".*">', lambda _m: meta, page, count=1)
        return page.encode("utf-8")

    def read_data(self, name: str) -> bytes | None:
        """The model's bytes, or a referenced file's; None for anything else."""
        if name == self.model_path.name:
            target: Path | None = self.model_path
        else:
            target = self._references().get(name)
        if target is None or not target.is_file():
            return None
        return target.read_bytes()

    def _references(self) -> dict[str, Path]:
        # Re-read only when the model file changed (a re-export may add or drop data files).
        try:
            stat = self.model_path.stat()
        except FileNotFoundError:
            return {}
        key = (stat.st_mtime_ns, stat.st_size)
        with self._cache_lock:
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, referenced_files(self.model_path))
            return self._cache[1]
