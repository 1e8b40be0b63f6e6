"""tools/preclass_check.py: each check says OK or FIX truthfully, and the exit code follows."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "preclass_check.py"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("preclass_check", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["preclass_check"] = module
    spec.loader.exec_module(module)
    return module


pc = _load_tool()


def test_weights_url_is_torchvisions_default() -> None:
    from torchvision.models import ResNet18_Weights

    assert ResNet18_Weights.DEFAULT.url == pc.WEIGHTS_URL


def test_weights_missing_is_a_warning_then_cached(tmp_path: Path) -> None:
    # The notebooks run on random weights, so a missing file warns and does not fail the check.
    missing = pc.check_weights(hub_dir=str(tmp_path))
    assert missing.ok and missing.warning
    assert missing.line().startswith("WARN weights: resnet18-f37072fd.pth not in")
    assert "ResNet18_Weights.DEFAULT" in missing.fix

    (tmp_path / "checkpoints").mkdir()
    empty = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    empty.write_bytes(b"")
    assert pc.check_weights(hub_dir=str(tmp_path)).warning  # an interrupted download

    empty.write_bytes(b"weights")
    cached = pc.check_weights(hub_dir=str(tmp_path))
    assert cached.ok
    assert (
        cached.line() == f"OK   weights: resnet18-f37072fd.pth cached in {tmp_path / 'checkpoints'}"
    )


def test_packages_names_the_missing_one() -> None:
    assert pc.check_packages(["torch", "json"]).ok
    result = pc.check_packages(["torch", "no_such_package_preclass"])
    assert not result.ok
    assert result.detail == "missing no_such_package_preclass"


def test_packages_default_covers_digits_and_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-learn (the digits) and matplotlib (04's figure) hidden: the default check fails."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name in ("sklearn", "matplotlib") else real_find_spec(name)

    monkeypatch.setattr(pc.importlib.util, "find_spec", find_spec)
    result = pc.check_packages()
    assert not result.ok
    assert result.detail == "missing sklearn, matplotlib"


@pytest.fixture
def fresh_netron_lookup() -> Iterator[None]:
    """The installed netron is looked up once per process: forget it around a test."""
    from freeze_widgets.graph.netron_assets import netron_install

    netron_install.cache_clear()
    yield
    netron_install.cache_clear()


def test_netron_reads_the_installed_version(fresh_netron_lookup: None) -> None:
    import netron

    result = pc.check_netron()
    assert result.ok, result.line()
    assert f"netron {netron.__version__}:" in result.detail and "no server" in result.detail


def test_netron_checks_the_projects_view(
    monkeypatch: pytest.MonkeyPatch, fresh_netron_lookup: None
) -> None:
    """With the project's view broken (netron itself fine), the check says FIX."""
    import freeze_widgets.graph.model_payload as view_module

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("view broken")

    monkeypatch.setattr(view_module, "model_payload", broken)
    result = pc.check_netron()
    assert not result.ok
    assert "view broken" in result.detail


def test_netron_of_another_version_needs_a_fix(
    monkeypatch: pytest.MonkeyPatch, fresh_netron_lookup: None
) -> None:
    import netron

    monkeypatch.setattr(netron, "__version__", "8.0.1")
    result = pc.check_netron()
    assert not result.ok and "8.0" in result.detail and "9.3" in result.fix


def test_netron_missing(monkeypatch: pytest.MonkeyPatch, fresh_netron_lookup: None) -> None:
    monkeypatch.setitem(sys.modules, "netron", None)  # makes `import netron` raise ImportError
    result = pc.check_netron()
    assert not result.ok


def _notebook(path: Path, first_cell: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(first_cell)])
    nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('not the first cell')"))
    nbformat.write(nb, path)


@pytest.mark.slow
def test_notebook_first_cells_run_in_a_kernel(tmp_path: Path) -> None:
    _notebook(tmp_path / "a.ipynb", "import os\nassert os.environ['FREEZE_WIDGETS_OFFLINE'] == '1'")
    ok = pc.check_notebook_imports(tmp_path)
    assert ok.ok, ok.line()
    assert ok.detail == "first cell of 1 notebooks ran in a kernel"

    _notebook(tmp_path / "b.ipynb", "import no_such_module_preclass")
    bad = pc.check_notebook_imports(tmp_path)
    assert not bad.ok
    assert "b.ipynb" in bad.detail and "no_such_module_preclass" in bad.detail
    assert "a.ipynb" not in bad.detail


def test_main_exit_code_and_lines(capsys: pytest.CaptureFixture[str]) -> None:
    good = pc.CheckResult("a", True, "fine")
    bad = pc.CheckResult("b", False, "broken", "do this")
    warn = pc.CheckResult("c", True, "works", "could be better", warning=True)
    checks = {"a": lambda: good, "b": lambda: bad, "c": lambda: warn}

    assert pc.main([], checks) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "OK   a: fine",
        "FIX  b: broken -> do this",
        "WARN c: works -> could be better",
        "2/3 checks passed; fix: b",
    ]

    assert pc.main(["--skip", "b"], checks) == 0  # a warning alone does not fail
    assert capsys.readouterr().out.splitlines()[-1] == "2/2 checks passed"
