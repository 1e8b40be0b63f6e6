"""tools/preclass_check.py: each check says OK or FIX truthfully, and the exit code follows."""

from __future__ import annotations

import importlib.util
import sys
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


def test_weights_missing_then_cached(tmp_path: Path) -> None:
    missing = pc.check_weights(hub_dir=str(tmp_path))
    assert not missing.ok
    assert missing.line().startswith("FIX  weights: resnet18-f37072fd.pth not in")
    assert "ResNet18_Weights.DEFAULT" in missing.fix

    (tmp_path / "checkpoints").mkdir()
    empty = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    empty.write_bytes(b"")
    assert not pc.check_weights(hub_dir=str(tmp_path)).ok  # an interrupted download

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


def test_netron_serves_and_stops() -> None:
    result = pc.check_netron()
    assert result.ok, result.line()
    port = int(result.detail.rsplit(":", 1)[1])
    import netron

    assert not netron.status(port)  # stopped: netron no longer lists a server on that port


def test_netron_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "netron", None)  # makes `import netron` raise ImportError
    result = pc.check_netron()
    assert not result.ok
    assert "cannot import netron" in result.detail


def test_server_proxy_follows_find_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        if name == "jupyter_server_proxy":
            return None if missing else object()
        return real_find_spec(name)

    monkeypatch.setattr(pc.importlib.util, "find_spec", find_spec)
    missing = True
    result = pc.check_server_proxy(env={"JUPYTERHUB_SERVICE_PREFIX": "/user/ann/"})
    assert not result.ok and "hub prefix /user/ann/" in result.detail
    missing = False
    assert pc.check_server_proxy(env={}).ok


def test_main_exit_code_and_lines(capsys: pytest.CaptureFixture[str]) -> None:
    good = pc.CheckResult("a", True, "fine")
    bad = pc.CheckResult("b", False, "broken", "do this")
    checks = {"a": lambda: good, "b": lambda: bad}

    assert pc.main([], checks) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["OK   a: fine", "FIX  b: broken -> do this", "1/2 checks passed; fix: b"]

    assert pc.main(["--skip", "b"], checks) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1/1 checks passed"
