"""load_model: the real torchvision weights path through a hub cache the test writes."""

from __future__ import annotations

import hashlib
import io
import socket
import urllib.request
from pathlib import Path

import pytest
import torch

from freeze_widgets import (
    PretrainedWeightsUnavailable,
    count_parameters,
    load_model,
    weights_source,
)
from freeze_widgets.models.vision import download


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # torch.hub caches the dir it computed; make it re-read TORCH_HOME.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path


def test_pretrained_weights_come_from_the_hub_cache(torch_home: Path) -> None:
    from torchvision.models import ResNet18_Weights, resnet18

    torch.manual_seed(123)
    reference = resnet18(weights=None)
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    filename = ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    torch.save(reference.state_dict(), checkpoints / filename)

    model = load_model("resnet18")
    assert weights_source(model).startswith("pretrained ResNet18_Weights.IMAGENET1K_V1")
    pairs = zip(model.state_dict().items(), reference.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    assert not model.training


def test_unreachable_weights_fall_back_with_visible_warning(torch_home: Path) -> None:
    with pytest.warns(PretrainedWeightsUnavailable, match="RANDOM weights"):
        model = load_model("resnet34")
    assert weights_source(model).startswith("random: pretrained weights unavailable")
    assert count_parameters(model).total == 21_797_672


def test_download_failure_is_caught(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREEZE_WIDGETS_OFFLINE", "0")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    # The download is one request with its own timeout (no process-wide socket timeout).
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.warns(PretrainedWeightsUnavailable, match="network unreachable"):
        load_model("resnet18")


@pytest.mark.parametrize(
    ("name", "total"),
    [
        ("resnet18", 11_689_512),
        ("resnet50", 25_557_032),
        ("resnet152", 60_192_808),
        ("efficientnet_b7", 66_347_960),
    ],
)
def test_meta_device_builds_structure_only(name: str, total: int) -> None:
    model = load_model(name, device="meta")
    assert count_parameters(model).total == total
    assert all(p.is_meta for p in model.parameters())


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="resnet50"):
        load_model("resnet05")


class _Response(io.BytesIO):
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


def test_download_uses_a_per_request_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"weights" * 1000
    digest = hashlib.sha256(payload).hexdigest()
    seen: list[tuple[float | None, float | None]] = []

    def fake_urlopen(request: urllib.request.Request, timeout: float) -> _Response:
        seen.append((timeout, socket.getdefaulttimeout()))
        return _Response(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    before = socket.getdefaulttimeout()
    target = tmp_path / "checkpoints" / f"net-{digest[:8]}.pth"
    download("https://example.invalid/net.pth", str(target), timeout=7.5)
    assert target.read_bytes() == payload
    # The timeout travels with the request; the process-wide default is never touched.
    assert seen == [(7.5, before)]
    assert socket.getdefaulttimeout() == before


def test_download_with_a_wrong_hash_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: _Response(b"junk"))
    target = tmp_path / "net-00000000.pth"
    with pytest.raises(RuntimeError, match="invalid hash"):
        download("https://example.invalid/net.pth", str(target), timeout=1.0)
    assert list(tmp_path.iterdir()) == []  # no partial file, no corrupt cache entry
