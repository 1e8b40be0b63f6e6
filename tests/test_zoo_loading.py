"""Loading timm and transformers models offline: weights from a local cache the test writes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from freeze_widgets.models.hub import load_hf, load_timm, regnet_widths_on_cpu

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
CPU = torch.device("cpu")
META = torch.device("meta")


def _fake_hub_file(cache: Path, repo_id: str, filename: str) -> Path:
    """Lay out one file as huggingface_hub's cache does (refs/main -> snapshots/<rev>/file)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    return snapshot / filename


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_timm_pretrained_weights_come_from_the_local_cache(hub_cache: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(7)
    reference = timm.create_model("resnet18", pretrained=False)
    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    save_file(reference.state_dict(), _fake_hub_file(hub_cache, hub_id, "model.safetensors"))

    model, source = load_timm("resnet18", pretrained=True, device=CPU)

    assert source == f"pretrained {hub_id} (local cache)"
    for (name, a), b in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_timm_without_weights_warns_and_is_random(hub_cache: Path) -> None:
    from freeze_widgets import PretrainedWeightsUnavailable

    with pytest.warns(PretrainedWeightsUnavailable, match="RANDOM weights"):
        model, source = load_timm("resnet18", pretrained=True, device=CPU)
    assert source.startswith("random: pretrained weights unavailable (offline")
    assert "timm.create_model" in model._freeze_widgets_weights_hint
    reference = timm.create_model("resnet18", pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )


def test_unknown_timm_name_names_close_matches() -> None:
    with pytest.raises(ValueError, match="Did you mean: 'resnet18'"):
        load_timm("resnet_18x", pretrained=False, device=CPU)


def _tiny_bert_config() -> object:
    return transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
    )


def test_hf_local_folder_loads_its_weights_bit_for_bit(tmp_path: Path) -> None:
    torch.manual_seed(3)
    reference = transformers.BertModel(_tiny_bert_config())
    reference.save_pretrained(tmp_path)

    model, source = load_hf(str(tmp_path), task=None, pretrained=True, device=CPU)

    assert source == f"pretrained {tmp_path}"
    assert type(model) is transformers.BertModel
    for (name, a), b in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_hf_config_only_is_random_with_a_warning_and_task_picks_the_class(tmp_path: Path) -> None:
    from freeze_widgets import PretrainedWeightsUnavailable

    _tiny_bert_config().save_pretrained(tmp_path)  # type: ignore[attr-defined]
    with pytest.warns(PretrainedWeightsUnavailable, match="only a config"):
        model, source = load_hf(str(tmp_path), task="masked-lm", pretrained=True, device=CPU)
    assert type(model) is transformers.BertForMaskedLM
    assert source.startswith("random: pretrained weights unavailable (no weights file")
    assert "save_pretrained" in model._freeze_widgets_weights_hint


def test_hf_meta_device_builds_structure_only(tmp_path: Path) -> None:
    _tiny_bert_config().save_pretrained(tmp_path)  # type: ignore[attr-defined]
    model, _ = load_hf(str(tmp_path), task="sequence-classification", pretrained=True, device=META)
    assert all(p.device.type == "meta" for p in model.parameters())
    with torch.device("meta"):
        reference = transformers.BertForSequenceClassification(_tiny_bert_config())
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )


def test_hf_missing_config_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREEZE_WIDGETS_OFFLINE", "1")
    with pytest.raises(
        ValueError, match=r"No transformers config for 'nobody/none'.*save_pretrained"
    ):
        load_hf("nobody/none", task=None, pretrained=True, device=CPU)


def test_hf_unknown_task_lists_the_tasks(tmp_path: Path) -> None:
    _tiny_bert_config().save_pretrained(tmp_path)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="causal-lm"):
        load_hf(str(tmp_path), task="causal_lm", pretrained=False, device=CPU)


@pytest.mark.parametrize("name", ["regnet_y_400mf", "regnet_x_400mf"])
def test_regnet_builds_on_the_meta_device(name: str) -> None:
    from torchvision import models as tvm

    with torch.device("meta"), regnet_widths_on_cpu():
        model = tvm.get_model(name, weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = tvm.get_model(name, weights=None)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )


def test_load_model_dispatches_on_the_prefix(tmp_path: Path) -> None:
    from freeze_widgets import load_model, weights_source

    torch.manual_seed(5)
    reference = transformers.BertForMaskedLM(_tiny_bert_config())
    reference.save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}", task="masked-lm")
    assert type(model) is transformers.BertForMaskedLM and not model.training
    assert weights_source(model) == f"pretrained {tmp_path}"
    meta = load_model("timm:convnext_atto", device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert weights_source(meta).startswith("none (meta device")


def test_every_torchvision_classifier_builds_on_the_meta_device() -> None:
    from torchvision import models as tvm

    from freeze_widgets import load_model

    names = tvm.list_models(module=tvm)
    assert len(names) >= 80
    for name in names:
        model = load_model(name, device="meta")
        assert all(p.device.type == "meta" for p in model.parameters()), name


def test_task_is_refused_for_non_hf_names() -> None:
    from freeze_widgets import load_model

    with pytest.raises(ValueError, match="hf: models only"):
        load_model("resnet18", task="causal-lm")
    with pytest.raises(TypeError, match="name must be"):
        load_model(None)  # type: ignore[arg-type]
