"""Export cases that gave unclear errors or left a folder behind (issue 19, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from freeze_widgets import export_onnx

from .conftest import model_fingerprint


class Variadic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.lin(args[0])


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom in forward")


class BatchLast(nn.Module):
    """Takes ``x`` as (features, batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.transpose(0, 1))


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.lin(x), "double": x * 2}


def test_dict_inputs_for_a_variadic_forward_say_pass_a_tuple(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"forward\(\*args\) takes its inputs by position"):
        export_onnx(Variadic(), {"x": torch.randn(2, 4)}, tmp_path / "v.onnx")
    report = export_onnx(Variadic(), (torch.randn(2, 4),), tmp_path / "v.onnx")
    assert report.ok, report.error


def test_a_forward_that_raises_is_named_and_leaves_no_folder(tmp_path: Path) -> None:
    model = Raises()
    before = model_fingerprint(model)
    target = tmp_path / "new" / "deeper" / "m.onnx"
    with pytest.raises(ValueError, match=r"forward failed on example_inputs .*boom in forward"):
        export_onnx(model, torch.randn(2, 4), target)
    assert not (tmp_path / "new").exists()
    assert model_fingerprint(model) == before


def test_a_negative_batch_axis_counts_from_the_end(tmp_path: Path) -> None:
    negative = export_onnx(
        BatchLast(), {"x": torch.randn(4, 3)}, tmp_path / "n.onnx", batch_axes={"x": -1},
        verify_batches=[1, 5],
    )  # fmt: skip
    assert negative.ok, negative.error
    assert [p.batch for p in negative.parity] == [1, 5]


def test_a_dict_output_under_the_torchscript_exporter_is_verified(tmp_path: Path) -> None:
    report = export_onnx(DictOut(), torch.randn(3, 4), tmp_path / "d.onnx", exporter="torchscript")
    assert report.ok, report.error
    assert report.parity and all(p.ok for p in report.parity)


@pytest.mark.slow
def test_a_broadcast_bound_bert_mask_says_pass_it_as_an_input(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    from freeze_widgets import bind

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertModel(config).eval()
    ids = torch.randint(0, 50, (4, 8))
    bound = bind(model, attention_mask=torch.ones(1, 8, dtype=torch.long))
    report = export_onnx(bound, {"input_ids": ids}, tmp_path / "bound.onnx")
    if not report.ok:  # the graph indexes the size-1 mask at rows it does not have
        assert "['attention_mask'] have size 1 on axis 0" in (report.error or "")
        assert "pass them in example_inputs" in (report.error or "")
    mask = torch.ones(4, 8, dtype=torch.long)
    fixed = export_onnx(model, {"input_ids": ids, "attention_mask": mask}, tmp_path / "in.onnx")
    assert fixed.ok, fixed.error  # the way out the message names works
