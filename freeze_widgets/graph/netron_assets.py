"""Netron's viewer files, read from the installed ``netron`` package for the graph widget.

Nothing is copied into this project: the page (netron's ``index.html`` without its scripts,
links and Content-Security-Policy, with ``grapher.css`` inlined), its ES modules and its operator
metadata are read from the user's own ``netron`` install and sent to the page over the widget's
comm (docs/design.md, trap 18). netron's ``browser.js`` host (age check, cookie consent,
analytics) is never sent: the widget's ES module brings its own host.

The widget drives netron's ``view.View`` directly, an interface netron does not promise to keep,
so the installed version must be in :data:`SUPPORTED` (major.minor).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CORE_ASSETS",
    "CORE_MODULES",
    "SUPPORTED",
    "NetronInstall",
    "UnsupportedNetron",
    "netron_install",
]

SUPPORTED = ("9.3",)
"""netron major.minor versions the widget's host is tested against."""

CORE_MODULES = (
    "view", "base", "grapher", "dagre", "zip", "tar", "text", "json", "xml", "protobuf",
    "flatbuffers", "python", "hdf5", "onnx", "onnx-proto", "onnx-schema", "worker",
)  # fmt: skip
"""Sent with the page (what an ONNX model needs); any other module is sent when asked for."""

CORE_ASSETS = ("onnx-metadata.json",)

_MODULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.json$")
# Tags of netron's page that load something or would block the widget's host: the stylesheet
# and icon links, index.js (netron's own loader), the CSP (it allows 'self' scripts only).
_DROP = re.compile(
    r'<link [^>]*>\s*|<script [^>]*src="[^"]*"[^>]*></script>\s*'
    r'|<meta http-equiv="Content-Security-Policy"[^>]*>\s*|<meta name="date"[^>]*>\s*'
)


class UnsupportedNetron(RuntimeError):
    """The installed netron is missing or not a version the widget is tested against."""


@dataclass(frozen=True)
class NetronInstall:
    """The installed netron package: its folder and version."""

    root: Path
    version: str

    def module(self, module_id: str) -> str:
        """Source text of netron's ES module ``module_id`` (``"view"``, ``"onnx-proto"``, ...).

        Raises:
            ValueError: If the id is not a plain module name or no such module is installed.
        """
        name = module_id.removeprefix("./")
        if not _MODULE_ID.match(name) or not (self.root / f"{name}.js").is_file():
            raise ValueError(f"netron {self.version} has no module {module_id!r}")
        return (self.root / f"{name}.js").read_text(encoding="utf-8")

    def asset(self, name: str) -> str:
        """Text of netron's metadata file ``name`` (``"onnx-metadata.json"``, ...).

        Raises:
            ValueError: If ``name`` is not a plain ``*.json`` name or no such file is installed.
        """
        if not _ASSET_NAME.match(name) or not (self.root / name).is_file():
            raise ValueError(f"netron {self.version} has no metadata file {name!r}")
        return (self.root / name).read_text(encoding="utf-8")

    def bundle(self, have: frozenset[str], page: bool) -> bytes:
        """Page, core modules not in ``have`` and core metadata as gzip'd JSON (one message).

        JSON over the comm is not compressed; gzip takes the 7.5 MiB of what ONNX needs to about
        1 MiB. Cached per (``have``, ``page``): the same page asks the same thing each time.
        """
        return _bundle(self, have, page)

    @functools.cached_property
    def page(self) -> str:
        """netron's page without scripts, links, CSP and date; ``grapher.css`` inlined."""
        html = _DROP.sub("", (self.root / "index.html").read_text(encoding="utf-8"))
        css = (self.root / "grapher.css").read_text(encoding="utf-8")
        # netron's page replaces window.eval; the one thing the widget needs in the frame is an
        # import() that runs in the frame's realm (modules then belong to this document).
        boot = "<script>window.__fwLoad = (url) => import(url);</script>"
        return html.replace("</head>", f"<style>{css}</style>{boot}</head>", 1)


@functools.lru_cache(maxsize=8)
def _bundle(install: NetronInstall, have: frozenset[str], page: bool) -> bytes:
    content = {
        "page": install.page if page else None,
        "modules": {m: install.module(m) for m in CORE_MODULES if m not in have},
        "assets": {a: install.asset(a) for a in CORE_ASSETS},
    }
    return gzip.compress(json.dumps(content).encode("utf-8"), compresslevel=6, mtime=0)


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@functools.cache
def netron_install() -> NetronInstall:
    """The installed netron, checked against :data:`SUPPORTED`.

    Raises:
        UnsupportedNetron: netron is not installed, or its major.minor is not supported.
    """
    try:
        import netron
    except ImportError as exc:
        raise UnsupportedNetron(
            f"the graph view needs the netron package ({exc}); pip install 'netron>=9.3,<9.4'"
        ) from exc
    version = str(getattr(netron, "__version__", "0"))
    root = Path(netron.__file__).parent
    if _major_minor(version) not in SUPPORTED or not (root / "view.js").is_file():
        tested = ", ".join(f"{v}.x" for v in SUPPORTED)
        raise UnsupportedNetron(
            f"netron {version} is installed; the graph view is tested with netron {tested}. "
            "Install a tested version: pip install 'netron>=9.3,<9.4'"
        )
    return NetronInstall(root, version)
