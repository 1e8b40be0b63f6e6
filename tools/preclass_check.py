"""Pre-class check for a freeze_widgets workshop: run it on the machine (or hub image) students use.

    python tools/preclass_check.py            # every check
    python tools/preclass_check.py --skip netron

One line per check, ``OK``, ``WARN`` (works, with a caveat) or ``FIX`` followed by what to do;
the exit code is 1 if any check needs a fix, so it can gate an image build. Checks:

* ``packages``: the notebooks' imports (torch, torchvision, onnx, onnxruntime, ipywidgets,
  scikit-learn for the digits, matplotlib, transformers, peft, ...) can be found;
* ``notebooks``: the first code cell of every notebook (its imports and setup) runs in a fresh
  ``python3`` Jupyter kernel, the one students' notebooks start, not only in this Python;
* ``weights``: the ResNet-18 ImageNet weights are in the torch hub cache. Only a warning
  (``WARN``) when missing: the notebooks are built to run on random weights and say so;
* ``netron``: the project's own Netron view (``freeze_widgets.graph.netron.open_view``, what
  ``show_netron`` uses) starts a server on 127.0.0.1 that answers its page and the model file,
  and stops when the view closes (docs/design.md, trap 6 and 15);
* ``proxy``: jupyter-server-proxy is installed, which a JupyterHub needs for the Netron frame's
  ``{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/`` URL (a local JupyterLab does not need it).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    "sklearn",
    "matplotlib",
    "numpy",
    "nbclient",
    "freeze_widgets",
)
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
_CELL_TIMEOUT_S = 300
WEIGHTS_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
_HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: what was seen, and the fix when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # ok, but with a caveat the instructor should know

    def line(self) -> str:
        """``OK   name: detail``, ``WARN name: detail -> fix`` or ``FIX  name: detail -> fix``."""
        if self.ok and self.warning:
            return f"WARN {self.name}: {self.detail} -> {self.fix}"
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
    # The notebooks run on random weights (and say so), so a missing file is a caveat only.
    return CheckResult(
        "weights",
        True,
        f"{filename} not in {path.parent} (notebooks 00 and 04 will use random weights)",
        "for ImageNet features, while online run: python -c 'from torchvision.models import "
        "resnet18, ResNet18_Weights; resnet18(weights=ResNet18_Weights.DEFAULT)', or copy the "
        "file there",
        warning=True,
    )


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
        body: bytes = response.read()
        return body


def _tiny_onnx(path: Path) -> bytes:
    """Write a one-node ONNX model (Identity) to ``path``; return its bytes."""
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "preclass",
        [value("x", TensorProto.FLOAT, [1])],
        [value("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path.read_bytes()


def check_netron() -> CheckResult:
    """The project's Netron view serves its page and the model on 127.0.0.1, and stops."""
    fix = "pip install netron; make sure the kernel may listen on 127.0.0.1"
    try:
        from freeze_widgets.graph.netron import open_view, running_servers
    except ImportError as exc:
        return CheckResult("netron", False, f"cannot import the Netron view ({exc})", fix)
    with tempfile.TemporaryDirectory(prefix="preclass_") as tmp:
        model = Path(tmp) / "check.onnx"
        try:
            payload = _tiny_onnx(model)
            view = open_view(model)
        except Exception as exc:  # any failure to start is what this check reports
            return CheckResult("netron", False, f"server did not start ({exc})", fix)
        port = view.port
        try:
            page = _get(f"http://localhost:{port}/")
            served = _get(f"http://localhost:{port}/data/{model.name}")
        except OSError as exc:
            return CheckResult("netron", False, f"server did not answer ({exc})", fix)
        finally:
            view.close()
    if b"<html" not in page.lower() or served != payload:
        return CheckResult("netron", False, "server answered, but not with Netron's page", fix)
    if any(server.port == port for server in running_servers()):
        return CheckResult("netron", False, "the server did not stop when its view closed", fix)
    return CheckResult("netron", True, f"the project's Netron view served on 127.0.0.1:{port}")


def _first_code_cell(path: Path) -> str:
    import json

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def check_notebook_imports(notebook_dir: Path = NOTEBOOK_DIR) -> CheckResult:
    """The first code cell of each notebook runs in a fresh python3 kernel, offline."""
    fix = "install what the error names into the kernel's environment (pip install -e '.[dev]')"
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:
        return CheckResult("notebooks", False, f"cannot run notebooks ({exc})", fix)
    paths = sorted(notebook_dir.glob("*.ipynb"))
    if not paths:
        return CheckResult("notebooks", False, f"no notebooks in {notebook_dir}", fix)
    failed = []
    with tempfile.TemporaryDirectory(prefix="preclass_") as tmp:
        env = {"FREEZE_WIDGETS_OFFLINE": "1", "FREEZE_WIDGETS_OUT": tmp}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the kernel inherits this process's environment
        try:
            for path in paths:
                nb = nbformat.v4.new_notebook(
                    cells=[nbformat.v4.new_code_cell(_first_code_cell(path))]
                )
                client = NotebookClient(
                    nb,
                    kernel_name="python3",
                    timeout=_CELL_TIMEOUT_S,
                    resources={"metadata": {"path": tmp}},
                )
                try:
                    client.execute()
                except Exception as exc:  # a failing cell, or a kernel that does not start
                    failed.append(f"{path.name} ({type(exc).__name__}: {_last_line(exc)})")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    if failed:
        return CheckResult("notebooks", False, "first cell failed in " + "; ".join(failed), fix)
    return CheckResult("notebooks", True, f"first cell of {len(paths)} notebooks ran in a kernel")


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


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
    "notebooks": check_notebook_imports,
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
