"""estimate_cost runs nothing real and uses the model's own input size (issue 19, item 7)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freeze_widgets import estimate_cost, freeze

from .conftest import model_fingerprint


class _Counted(nn.Sequential):
    """Counts forwards on real (not meta) tensors."""

    real_forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not x.is_meta:
            _Counted.real_forwards += 1
        return super().forward(x)


def test_inputs_that_do_not_fit_give_a_note_not_a_real_forward() -> None:
    model = _Counted(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = model_fingerprint(model)
    est = estimate_cost(model, example_inputs=torch.randn(2, 5))
    assert _Counted.real_forwards == 0
    assert est.activation_bytes == 0 and est.weight_bytes == 4 * (20 + 10)
    [note] = [a for a in est.assumptions if a.startswith("Could not estimate activations")]
    assert "check example_inputs" in note
    assert model_fingerprint(model) == before


def test_a_model_the_default_batch_does_not_fit_says_pass_example_inputs() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    est = estimate_cost(model)  # the default 224 images do not fit a 32x32 model
    assert est.activation_bytes == 0
    assert any("pass example_inputs" in a for a in est.assumptions)
    fitted = estimate_cost(model, example_inputs=torch.randn(2, 3, 32, 32))
    assert fitted.activation_bytes == 4 * 2 * (3 * 32 * 32 + 4 * 30 * 30)  # conv in, linear in


def test_the_default_batch_has_two_images_so_batchnorm_on_1x1_maps_trains() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    est = estimate_cost(model)
    explicit = estimate_cost(model, example_inputs=torch.empty(2, 3, 224, 224, device="meta"))
    assert est.activation_bytes == explicit.activation_bytes > 0
    assert not any(a.startswith("Could not") for a in est.assumptions)


@pytest.mark.parametrize(
    ("kwargs", "side"), [({"img_size": 64}, 64), ({}, 384)], ids=["img_size=64", "384-cfg"]
)
def test_timm_models_are_measured_at_their_own_input_size(
    kwargs: dict[str, int], side: int
) -> None:
    import timm

    name = "vit_tiny_patch16_384" if side == 384 else "vit_tiny_patch16_224"
    model = timm.create_model(name, pretrained=False, depth=1, **kwargs)
    freeze(model, "patch_embed")
    est = estimate_cost(model)
    explicit = estimate_cost(model, example_inputs=torch.empty(2, 3, side, side, device="meta"))
    assert est.activation_bytes == explicit.activation_bytes > 0
    assert any(f"(2, 3, {side}, {side})" in a for a in est.assumptions)


def test_transformers_models_use_config_image_size() -> None:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, num_labels=3,
    )  # fmt: skip
    model = ViTForImageClassification(config)
    est = estimate_cost(model)
    explicit = estimate_cost(model, example_inputs=torch.empty(2, 3, 32, 32, device="meta"))
    assert est.activation_bytes == explicit.activation_bytes > 0
