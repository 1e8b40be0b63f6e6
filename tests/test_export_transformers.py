"""Export with the panel's defaults on transformers models built from configs (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from freeze_widgets.export.defaults import unexportable_output
from freeze_widgets.ui.export_panel import ExportPanel

transformers = pytest.importorskip("transformers")


def gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000)
    return transformers.GPT2LMHeadModel(config).eval()


def lora_gpt2() -> nn.Module:
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    model = peft.get_peft_model(gpt2(), config)
    for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapter matter
        if "lora_B" in name:
            nn.init.normal_(p, std=0.5)
    return model.eval()


def rows(panel: ExportPanel) -> dict[str, tuple[str, str]]:
    return {r.param.name: (r.mode.value, r.value.value) for r in panel.args}


def ort_logits(path: Path, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return np.asarray(session.run(None, feed)[0])


def export_with_defaults(model: nn.Module, path: Path) -> None:
    """Click Export without touching a row; check the file against the model at batch 3."""
    panel = ExportPanel(lambda: model, out_path=str(path))
    shown = rows(panel)
    assert shown["input_ids"][0] == "input" and shown["attention_mask"][0] == "input"
    assert shown["use_cache"] == ("bound", "False")
    panel.run(block=True)
    assert panel.messages.last_error is None, panel.messages.value
    report = panel.last_report
    assert report is not None and report.ok, report
    assert report.graph_inputs == ["input_ids", "attention_mask"]
    # Independent check: onnxruntime on a padded batch of 3 vs the model called directly.
    ids = torch.randint(0, 1000, (3, 8))  # the traced length: only the batch is dynamic
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.numpy()
    got = ort_logits(path, ids, mask)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    panel.close()


@pytest.mark.slow
def test_gpt2_exports_with_the_panel_defaults(tmp_path: Path) -> None:
    export_with_defaults(gpt2(), tmp_path / "gpt2.onnx")


@pytest.mark.slow
def test_lora_gpt2_rows_come_from_the_base_model_and_export(tmp_path: Path) -> None:
    model = lora_gpt2()
    panel = ExportPanel(lambda: model, out_path=str(tmp_path / "x.onnx"))
    assert "use_cache" in rows(panel)  # PeftModel.forward(*args, **kwargs) looked through
    panel.close()
    export_with_defaults(model, tmp_path / "lora.onnx")


@pytest.mark.slow
def test_llama_exports_with_the_panel_defaults(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=1000,
    )
    export_with_defaults(transformers.LlamaForCausalLM(config).eval(), tmp_path / "llama.onnx")


def test_a_cache_in_the_output_is_one_line_naming_use_cache(tmp_path: Path) -> None:
    model = gpt2()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    panel = ExportPanel(lambda: model, out_path=str(tmp_path / "g.onnx"))
    {r.param.name: r for r in panel.args}["use_cache"].value.value = "None"
    panel.run(block=True)
    line = str(panel.messages.last_error)
    assert "use_cache=False" in line and "DynamicCache" in line and "\n" not in line
    assert not (tmp_path / "g.onnx").exists()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    panel.close()


class _Holder:
    """Something no exporter can return."""


def test_unexportable_output_names_the_leaf() -> None:
    x = torch.zeros(2)
    assert unexportable_output((x, {"a": x, "b": (x, None)})) is None
    line = unexportable_output({"logits": x, "extra": _Holder()})
    assert line is not None and "'extra' is a _Holder" in line
    line = unexportable_output({"logits": x, "attentions": _Holder()})
    assert line is not None and "bind output_attentions=False" in line
