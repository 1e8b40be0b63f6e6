"""Tests for freeze_widgets.graph.netron: URL rules and a real Netron server on 127.0.0.1."""

from __future__ import annotations

import socket
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from freeze_widgets.graph.netron import (
    BASE_URL_ENV,
    NetronServer,
    netron_url,
    running_servers,
    start_netron,
    stop_netron,
)
from freeze_widgets.ui.netron_view import show_netron

# ---------------------------------------------------------------- URL rules (pure)


def test_url_local_uses_localhost_not_ip() -> None:
    assert netron_url(8123, env={}) == "http://localhost:8123/"


def test_url_behind_jupyterhub() -> None:
    env = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ann/"}
    assert netron_url(8123, env=env) == "/user/ann/proxy/8123/"


def test_url_adds_missing_trailing_slash() -> None:
    assert netron_url(8123, env={"JUPYTERHUB_SERVICE_PREFIX": "/user/ann"}) == (
        "/user/ann/proxy/8123/"
    )
    assert netron_url(8123, env={}, base_url="") == "/proxy/8123/"


def test_url_explicit_base_url_wins() -> None:
    env = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ann/", BASE_URL_ENV: "/from-env/"}
    assert netron_url(9, env=env, base_url="https://hub.example/user/bo/") == (
        "https://hub.example/user/bo/proxy/9/"
    )
    # The package's own variable beats the hub's.
    assert netron_url(9, env=env) == "/from-env/proxy/9/"


# ---------------------------------------------------------------- live server


@pytest.fixture
def model_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07fake-onnx-bytes" * 64)
    yield path
    stop_netron()


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def test_server_serves_page_and_model_bytes(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    server = start_netron(model_file)
    assert isinstance(server, NetronServer)
    assert server.path == model_file.resolve()
    assert server.url == f"http://localhost:{server.port}/"
    status, page = get(f"http://127.0.0.1:{server.port}/")
    assert status == 200
    # Netron's page learns which file to fetch from this meta tag, then GETs data/<name>
    # relative to its own URL (so the same page works under a proxy prefix).
    assert b'<meta name="file" content="data/model.onnx">' in page
    status, data = get(f"http://127.0.0.1:{server.port}/data/model.onnx")
    assert status == 200
    assert data == model_file.read_bytes()
    # The browser-facing URL (localhost) reaches the same server.
    status, _ = get(server.url)
    assert status == 200


def test_server_binds_loopback_only(model_file: Path) -> None:
    server = start_netron(model_file)
    listening = [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port
    ]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"]


def test_server_reused_per_path_and_stopped(model_file: Path, tmp_path: Path) -> None:
    first = start_netron(model_file)
    again = start_netron(str(model_file))
    assert again.port == first.port
    other_file = tmp_path / "other.onnx"
    other_file.write_bytes(b"other")
    other = start_netron(other_file)
    assert other.port != first.port
    assert {s.port for s in running_servers()} >= {first.port, other.port}

    assert stop_netron(model_file) == 1
    assert not port_open(first.port)
    assert port_open(other.port)
    assert first.port not in {s.port for s in running_servers()}
    # A new start after stopping gets a fresh, working server.
    restarted = start_netron(model_file)
    assert get(f"http://127.0.0.1:{restarted.port}/data/model.onnx")[1] == model_file.read_bytes()

    assert stop_netron() == 2
    assert not port_open(other.port)
    assert not port_open(restarted.port)
    assert running_servers() == []
    assert stop_netron() == 0


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        start_netron(tmp_path / "nope.onnx")


def test_unknown_data_path_is_404(model_file: Path) -> None:
    server = start_netron(model_file)
    with pytest.raises(urllib.error.HTTPError) as info:
        get(f"http://127.0.0.1:{server.port}/data/missing.onnx")
    assert info.value.code == 404


def test_show_netron_local_iframe(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ann/")
    frame = show_netron(model_file, height=420)
    port = running_servers()[0].port
    assert type(frame).__name__ == "IFrame"
    assert frame.src == f"/user/ann/proxy/{port}/"
    assert frame.height == 420
    explicit = show_netron(model_file, base_url="/lab/")
    assert explicit.src == f"/lab/proxy/{port}/"  # same server reused


def test_show_netron_on_colab(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, str]] = []
    output = types.SimpleNamespace(
        serve_kernel_port_as_iframe=lambda port, height: calls.append((port, height))
    )
    colab = types.ModuleType("google.colab")
    colab.output = output  # type: ignore[attr-defined]
    google = types.ModuleType("google")
    google.colab = colab  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    result = show_netron(model_file, height=500)
    port = running_servers()[0].port
    assert calls == [(port, "500")]
    assert "Colab" in repr(result)


def test_core_netron_needs_no_ipython() -> None:
    import subprocess

    code = (
        "import sys, freeze_widgets.graph.netron, freeze_widgets; "
        "from freeze_widgets.ui.netron_view import show_netron; "
        "assert show_netron is freeze_widgets.show_netron; "
        "print(sorted(m for m in ('IPython', 'ipywidgets') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"  # IPython loads only when a frame is shown
