"""Real architectures export to ONNX with onnxruntime parity judged against the output's scale.

Tiny inputs and configs (2 CPU cores); random weights, nothing downloaded. Each case also checks
that the file carries the freeze (a frozen backbone part is marked "frozen").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from torch import nn

from freeze_widgets.export import ExportReport, bind, export_onnx
from freeze_widgets.export.onnx_freeze import SPEC_KEY

pytestmark = pytest.mark.slow

FAST: dict[str, Any] = {"timing_runs": 1, "warmup": 0, "verify_batches": (1, 3)}


def _torchvision(name: str) -> Callable[[], tuple[nn.Module, Any]]:
    def build() -> tuple[nn.Module, Any]:
        torchvision = pytest.importorskip("torchvision")
        model = getattr(torchvision.models, name)(weights=None)
        return model, torch.randn(2, 3, 64, 64)

    return build


def _vit() -> tuple[nn.Module, Any]:
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2
    )
    return model, torch.randn(2, 3, 32, 32)


def _bert() -> tuple[nn.Module, Any]:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    model = transformers.BertModel(cfg)
    ids = torch.randint(0, 64, (2, 8))
    return bind(model, token_type_ids=torch.zeros(1, 8, dtype=torch.long)), {"input_ids": ids}


def _gpt2() -> tuple[nn.Module, Any]:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        vocab_size=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 64, (2, 8))
    return bind(model, use_cache=False), {"input_ids": ids}


# model builder, and a part to freeze (the file must say so)
CASES: dict[str, tuple[Callable[[], tuple[nn.Module, Any]], str]] = {
    "resnet18": (_torchvision("resnet18"), "layer1"),
    "mobilenet_v3_small": (_torchvision("mobilenet_v3_small"), "features.0"),
    "efficientnet_b0": (_torchvision("efficientnet_b0"), "features.0"),
    "vit_tiny": (_vit, "patch_embed"),
    "bert": (_bert, "embeddings"),
    # Not the embeddings: GPT-2 ties them to lm_head.
    "gpt2": (_gpt2, "transformer.h.0"),
}


def _user_model(model: nn.Module) -> nn.Module:
    return model.model if hasattr(model, "bound") else model


def _frozen_marks(path: Path) -> dict[str, bool]:
    proto = onnx.load(str(path), load_external_data=False)
    marks: dict[str, bool] = {}
    for init in proto.graph.initializer:
        state, _, param = init.doc_string.partition(" parameter ")
        if param:
            marks[param] = state == "frozen"
    return marks


@pytest.mark.parametrize("name", list(CASES))
def test_zoo_model_exports_with_scale_relative_parity(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    build, frozen_path = CASES[name]
    model, example = build()
    model.eval()
    user = _user_model(model)
    user.get_submodule(frozen_path).requires_grad_(False)
    path = tmp_path / f"{name}.onnx"
    report: ExportReport = export_onnx(model, example, path, **FAST)
    assert report.exporter == "onnx-dynamo", report.fallback_reason
    assert report.ok, str(report)
    for p in report.parity:
        assert not p.too_small, str(report)
        assert p.max_rel <= 1e-4
    assert not report.bound_leaked
    # The freeze travels with the file.
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta[SPEC_KEY])["frozen"] == [frozen_path]
    marks = _frozen_marks(path)
    params = dict(user.named_parameters(remove_duplicate=False))  # tied names too
    assert marks, "no initializer was mapped back to a parameter"
    assert all(marks[n] == (not params[n].requires_grad) for n in marks)
    assert any(marks.values())
