"""Pre-class check for a freeze_widgets workshop: run it on the machine (or hub image) students use.

    python tools/preclass_check.py            # every check
    python tools/preclass_check.py --skip netron

One line per check, ``OK`` or ``FIX`` followed by what to do; the exit code is 1 if any check
failed, so it can gate an image build. Checks:

* ``packages``: the notebooks' imports (torch, torchvision, onnx, onnxruntime, ipywidgets, ...);
* ``weights``: the ResNet-18 ImageNet weights are in the torch hub cache, so notebook 00 shows
  pretrained weights offline (without them it falls back to random weights, visibly);
* ``netron``: the netron package imports and a Netron server starts on 127.0.0.1 and answers
  both its page and the model file (docs/design.md, trap 6 and 15);
* ``proxy``: jupyter-server-proxy is installed, which a JupyterHub needs for the Netron frame's
  ``{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/`` URL (a local JupyterLab does not need it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import socket
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

NOTEBOOK_PACKAGES = (
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "netron",
    "ipywidgets",
    "anywidget",
    "transformers",
    "peft",
    "freeze_widgets",
)
WEIGHTS_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
_HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: what was seen, and the fix when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``OK   name: detail`` or ``FIX  name: detail -> fix``."""
        if self.ok:
            return f"OK   {self.name}: {self.detail}"
        return f"FIX  {self.name}: {self.detail} -> {self.fix}"


def check_packages(names: Sequence[str] = NOTEBOOK_PACKAGES) -> CheckResult:
    """Every package the notebooks import can be found (not imported: that is slow)."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        return CheckResult(
            "packages",
            False,
            f"missing {', '.join(missing)}",
            "pip install -e '.[dev]' in the kernel's environment (bash tools/dev.sh setup)",
        )
    return CheckResult("packages", True, f"{len(names)} packages found")


def check_weights(hub_dir: str | None = None, url: str = WEIGHTS_URL) -> CheckResult:
    """The pretrained weights file is in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)."""
    if hub_dir is None:
        import torch

        hub_dir = torch.hub.get_dir()
    filename = url.rsplit("/", 1)[-1]
    path = Path(hub_dir) / "checkpoints" / filename
    if path.is_file() and path.stat().st_size > 0:
        return CheckResult("weights", True, f"{filename} cached in {path.parent}")
    return CheckResult(
        "weights",
        False,
        f"{filename} not in {path.parent} (notebooks would use random weights)",
        "while online, run: python -c 'from torchvision.models import resnet18, "
        "ResNet18_Weights; resnet18(weights=ResNet18_Weights.DEFAULT)', or copy the file there",
    )


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
        body: bytes = response.read()
        return body


def _wake(address: tuple[str, int]) -> None:
    """Poke a stopped server so its thread leaves a blocking accept() and the port closes."""
    with contextlib.suppress(OSError):  # already closed: nothing to wake
        socket.create_connection(address, timeout=1).close()


def _quiet_serve(netron: ModuleType, path: Path) -> tuple[str, int]:
    """netron.serve on a free port, without its logging.basicConfig() turning on INFO logs."""
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        host, port = netron.serve(str(path), None, address=("127.0.0.1", 0), browse=False)
    finally:
        root.removeHandler(guard)
    return str(host), int(port)


def check_netron() -> CheckResult:
    """A Netron server starts on 127.0.0.1, serves its page and the model file, and stops."""
    fix = "pip install netron; make sure the kernel may listen on 127.0.0.1"
    try:
        netron = importlib.import_module("netron")
    except ImportError as exc:
        return CheckResult("netron", False, f"cannot import netron ({exc})", fix)
    with tempfile.TemporaryDirectory(prefix="preclass_") as tmp:
        model = Path(tmp) / "check.onnx"
        payload = b"freeze_widgets preclass check"
        model.write_bytes(payload)
        try:
            address = _quiet_serve(netron, model)
        except Exception as exc:  # any failure to start is what this check reports
            return CheckResult("netron", False, f"server did not start ({exc})", fix)
        try:
            host, port = address
            page = _get(f"http://{host}:{port}/")
            served = _get(f"http://{host}:{port}/data/{model.name}")
        except OSError as exc:
            return CheckResult("netron", False, f"server did not answer ({exc})", fix)
        finally:
            netron.stop(address)
            _wake(address)
    if b"<html" not in page.lower() or served != payload:
        return CheckResult("netron", False, "server answered, but not with Netron's page", fix)
    return CheckResult("netron", True, f"netron {netron.__version__} served on 127.0.0.1:{port}")


def check_server_proxy(env: dict[str, str] | None = None) -> CheckResult:
    """jupyter-server-proxy is installed (the Netron frame's route on a JupyterHub)."""
    env = dict(os.environ) if env is None else env
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX")
    where = f"hub prefix {prefix}" if prefix else "no JUPYTERHUB_SERVICE_PREFIX (local Lab)"
    if importlib.util.find_spec("jupyter_server_proxy") is None:
        return CheckResult(
            "proxy",
            False,
            f"jupyter-server-proxy not installed; {where}",
            "pip install jupyter-server-proxy in the Jupyter server's environment, then "
            "restart the server (needed on a hub; a local JupyterLab works without it)",
        )
    return CheckResult("proxy", True, f"jupyter-server-proxy installed; {where}")


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "packages": check_packages,
    "weights": check_weights,
    "netron": check_netron,
    "proxy": check_server_proxy,
}


def main(
    argv: Sequence[str] | None = None,
    checks: dict[str, Callable[[], CheckResult]] | None = None,
) -> int:
    """Run the checks, print one OK/FIX line each, return 0 if all passed else 1."""
    checks = CHECKS if checks is None else checks
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", action="append", default=[], choices=sorted(checks))
    args = parser.parse_args(argv)
    results = [run() for name, run in checks.items() if name not in args.skip]
    for result in results:
        print(result.line())
    failed = [r.name for r in results if not r.ok]
    print(
        f"{len(results) - len(failed)}/{len(results)} checks passed"
        + (f"; fix: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
