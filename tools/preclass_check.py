"""Pre-class check for a freeze_widgets workshop: run it on the machine (or hub image) students use.

    python tools/preclass_check.py            # every check
    python tools/preclass_check.py --skip notebooks

One line per check, ``OK``, ``WARN`` (works, with a caveat) or ``FIX`` followed by what to do;
the exit code is 1 if any check needs a fix, so it can gate an image build. Checks:

* ``packages``: the notebooks' imports (torch, torchvision, onnx, onnxruntime, ipywidgets,
  scikit-learn for the digits, matplotlib, transformers, peft, ...) can be found;
* ``notebooks``: the first code cell of every notebook (its imports and setup) runs in a fresh
  ``python3`` Jupyter kernel, the one students' notebooks start, not only in this Python;
* ``weights``: the ResNet-18 ImageNet weights are in the torch hub cache. Only a warning
  (``WARN``) when missing: the notebooks are built to run on random weights and say so;
* ``netron``: the installed netron is a version the graph view supports, and the view can read
  netron's page, modules and metadata and a model, which ``show_netron`` sends over the kernel
  connection (no server, no port, no proxy: docs/design.md, traps 6 and 18).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
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
    """The installed netron is supported and the graph view can read what it sends the page."""
    fix = "pip install 'netron>=9.3,<9.4' into the kernel's environment"
    try:
        from freeze_widgets.graph.model_payload import model_payload
        from freeze_widgets.graph.netron_assets import UnsupportedNetron, netron_install
    except ImportError as exc:
        return CheckResult("netron", False, f"cannot import the graph view ({exc})", fix)
    try:
        install = netron_install()
        bundle = install.bundle(frozenset(), page=True)
    except (UnsupportedNetron, OSError, ValueError) as exc:
        return CheckResult("netron", False, str(exc), fix)
    with tempfile.TemporaryDirectory(prefix="preclass_") as tmp:
        model = Path(tmp) / "check.onnx"
        try:
            _tiny_onnx(model)
            payload = model_payload(model)
        except Exception as exc:  # a model the view cannot read is what this check reports
            return CheckResult("netron", False, f"the view cannot read a model ({exc})", fix)
    size = len(bundle) // 1024
    return CheckResult(
        "netron",
        True,
        f"netron {install.version}: page, modules and metadata ({size} KiB gzip'd) and a model "
        f"({len(payload.data)} bytes) ready for the kernel connection; no server or port",
    )


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


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "packages": check_packages,
    "notebooks": check_notebook_imports,
    "weights": check_weights,
    "netron": check_netron,
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
