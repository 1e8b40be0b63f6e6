"""Netron servers: one model each, nothing else from the folder, Host checked, views counted."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from freeze_widgets.graph.netron import open_view, running_servers, stop_netron, view_count


@pytest.fixture(autouse=True)
def _no_leftover_servers() -> Iterator[None]:
    yield
    stop_netron()


def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the raw path and headers (urllib would normalise both)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        sent = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.endheaders()
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_two_views_serve_two_models(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "model.onnx", b"first model" * 10)
    second = write(tmp_path / "b" / "model.onnx", b"second model" * 10)
    with open_view(first) as one, open_view(second) as two:
        assert one.port != two.port
        # Same file name, different models: each server answers with its own bytes.
        assert fetch(one.port, "/data/model.onnx") == (200, first.read_bytes())
        assert fetch(two.port, "/data/model.onnx") == (200, second.read_bytes())
        status, page = fetch(two.port, "/")
        assert status == 200 and b'<meta name="file" content="data/model.onnx">' in page
    assert running_servers() == []


def test_only_the_model_is_served_not_its_neighbours(tmp_path: Path) -> None:
    model = write(tmp_path / "model.onnx", b"model")
    write(tmp_path / "secret.txt", b"password")
    write(tmp_path / "sub" / "notes.md", b"notes")
    with open_view(model) as view:
        for path in (
            "/data/secret.txt",
            "/data/sub/notes.md",
            "/data/../model.onnx",
            "/data/%2e%2e/secret.txt",
            "/../secret.txt",
            "/server.py",  # netron's own Python files are not static assets
        ):
            status, body = fetch(view.port, path)
            assert status == 404, path
            assert b"password" not in body
        assert fetch(view.port, "/index.js")[0] == 200  # Netron's page assets are served


def test_onnx_external_data_is_served(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
        [weight],
    )
    path = tmp_path / "ext.onnx"
    write(tmp_path / "weights" / "other.bin", b"not referenced")
    onnx.save_model(
        helper.make_model(graph),
        str(path),
        save_as_external_data=True,
        location="weights/ext.bin",
        size_threshold=0,
    )
    with open_view(path) as view:
        status, data = fetch(view.port, "/data/weights/ext.bin")
        assert status == 200 and data == (tmp_path / "weights" / "ext.bin").read_bytes()
        assert fetch(view.port, "/data/weights/other.bin")[0] == 404


def test_foreign_host_is_refused(tmp_path: Path) -> None:
    model = write(tmp_path / "model.onnx", b"model")
    with open_view(model) as view:
        port = view.port
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            assert fetch(port, "/data/model.onnx", {"Host": host})[0] == 200, host
        for host in ("evil.example", f"evil.example:{port}", "localhost", f"localhost:{port + 1}"):
            status, body = fetch(port, "/data/model.onnx", {"Host": host})
            assert status == 403, host
            assert body != b"model"
        # A forwarded-host header alone proves nothing: any page can send it.
        forged = {"Host": "evil.example", "X-Forwarded-Host": f"localhost:{port}"}
        assert fetch(port, "/", forged)[0] == 403
        # Without a proxy configured, a proxy context header is not accepted either.
        proxied = {"Host": "hub.example", "X-Forwarded-Context": f"/user/ann/proxy/{port}"}
        assert fetch(port, "/", proxied)[0] == 403


def test_proxy_requests_accepted_when_a_proxy_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ann/")
    model = write(tmp_path / "model.onnx", b"model")
    with open_view(model) as view, open_view(model, base_url="https://hub.example/user/bo/") as b:
        port = view.port
        assert view.url == f"/user/ann/proxy/{port}/" and b.port == port
        # What jupyter-server-proxy sends: the hub's Host plus the context path of the route.
        proxied = {"Host": "hub.internal", "X-Forwarded-Context": f"/user/ann/proxy/{port}"}
        assert fetch(port, "/data/model.onnx", proxied) == (200, b"model")
        other = {"Host": "hub.internal", "X-Forwarded-Context": f"/user/eve/proxy/{port}"}
        assert fetch(port, "/data/model.onnx", other)[0] == 403
        # An absolute base URL names the host the browser uses.
        assert fetch(port, "/data/model.onnx", {"Host": "hub.example"})[0] == 200


def test_closing_one_view_keeps_the_other_working(tmp_path: Path) -> None:
    model = write(tmp_path / "shared.onnx", b"shared")
    first = open_view(model)
    second = open_view(model)
    assert first.port == second.port and view_count(model) == 2
    first.close()
    first.close()  # idempotent: must not release the other view's hold
    assert view_count(model) == 1
    assert fetch(second.port, "/data/shared.onnx") == (200, b"shared")
    second.close()
    assert view_count(model) == 0
    assert not port_open(second.port)
    assert running_servers() == []


def test_re_export_shows_new_bytes_and_bad_arguments(tmp_path: Path) -> None:
    model = write(tmp_path / "m.onnx", b"old")
    with open_view(model) as view:
        model.write_bytes(b"new")
        assert fetch(view.port, "/data/m.onnx") == (200, b"new")
    with pytest.raises(FileNotFoundError, match="export the model first"):
        open_view(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="path"):
        open_view(None)  # type: ignore[arg-type]


def test_external_data_outside_the_folder_is_not_served(tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    write(tmp_path / "secret.txt", b"password")
    tensor = helper.make_tensor("w", onnx.TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../secret.txt"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        [tensor],
    )
    path = tmp_path / "models" / "evil.onnx"
    path.parent.mkdir()
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with open_view(path) as view:
        for request in ("/data/../secret.txt", "/data/..%2Fsecret.txt", "/data/secret.txt"):
            status, body = fetch(view.port, request)
            assert status == 404 and b"password" not in body, request
