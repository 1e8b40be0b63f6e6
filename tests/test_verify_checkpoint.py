"""verify_checkpoint on checkpoints the tests write: every format, and each way one goes wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from freeze_widgets.cli import main
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.freezing.targets import freeze
from freeze_widgets.verify.checkpoint import verify_checkpoint

from .conftest import make_seq_bn


def _trained() -> tuple[nn.Module, FreezeSpec, dict[str, torch.Tensor]]:
    """A base with 0 and 1 frozen, and a 'trained' state: the head moved, the rest bitwise equal."""
    base = make_seq_bn()
    freeze(base, "0", "1")
    state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    state["3.weight"] += 0.01
    state["3.bias"] += 0.01
    return base, FreezeSpec.from_model(base), state


def _one_ulp(t: torch.Tensor) -> torch.Tensor:
    out = t.clone()
    out.view(-1)[5] = torch.nextafter(out.view(-1)[5], torch.tensor(float("inf")))
    return out


def _status(report: object) -> dict[str, str]:
    return {r.name: r.status for r in report.rows}  # type: ignore[attr-defined]


def test_torch_save_clean_and_one_ulp_on_a_frozen_weight(tmp_path: Path) -> None:
    base, spec, state = _trained()
    torch.save(state, tmp_path / "ok.pt")
    report = verify_checkpoint(base, tmp_path / "ok.pt", spec)
    assert report.ok, report.summary()
    assert len(report.rows) == len(base.state_dict())
    assert {r.name for r in report.rows if r.was_frozen} == {
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked",
    }  # fmt: skip
    state["0.weight"] = _one_ulp(state["0.weight"])
    torch.save(state, tmp_path / "ulp.pt")
    report = verify_checkpoint(base, tmp_path / "ulp.pt", spec)
    assert not report.ok
    (row,) = report.failed
    assert (row.name, row.status) == ("0.weight", "MOVED")
    expected = float((state["0.weight"] - base.state_dict()["0.weight"]).abs().max())
    assert 0 < row.max_abs_change == expected


def test_truncated_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    base, spec, state = _trained()
    for name, write in (("a.pt", torch.save), ("a.safetensors", save_file)):
        path = tmp_path / name
        write(state, path) if name.endswith(".pt") else write(state, str(path))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        report = verify_checkpoint(base, path, spec)
        assert not report.ok
        assert report.problems and name in report.problems[0]
        assert {r.status for r in report.rows} == {"MISSING"}


def test_missing_unexpected_and_require_moved(tmp_path: Path) -> None:
    base, spec, state = _trained()
    del state["1.running_var"]
    state["extra.weight"] = torch.ones(2)
    state["3.bias"] = base.state_dict()["3.bias"].clone()  # trainable, but not trained
    save_file(state, str(tmp_path / "m.safetensors"))
    lax = _status(verify_checkpoint(base, tmp_path / "m.safetensors", spec))
    assert (lax["1.running_var"], lax["extra.weight"], lax["3.bias"]) == (
        "MISSING", "UNEXPECTED", "ok",
    )  # fmt: skip
    strict = verify_checkpoint(base, tmp_path / "m.safetensors", spec, require_moved=True)
    assert _status(strict)["3.bias"] == "no gradient path"


def _shard(state: dict[str, torch.Tensor], folder: Path) -> None:
    names = sorted(state)
    parts = {
        "model-00001-of-00002.safetensors": names[:4],
        "model-00002-of-00002.safetensors": names[4:],
    }
    weight_map = {}
    for file, keys in parts.items():
        save_file({k: state[k] for k in keys}, str(folder / file))
        weight_map.update(dict.fromkeys(keys, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")


def test_sharded_safetensors_and_a_missing_shard(tmp_path: Path) -> None:
    base, spec, state = _trained()
    _shard(state, tmp_path)
    report = verify_checkpoint(base, tmp_path, spec)
    assert report.ok and report.format == "safetensors-sharded", report.summary()
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    report = verify_checkpoint(base, tmp_path, spec)
    assert not report.ok
    assert "shard model-00002-of-00002.safetensors" in report.problems[0]
    lost = sorted(state)[4:]
    assert {r.name for r in report.rows if r.status == "UNREADABLE"} == set(lost)


def test_distributed_checkpoint_folder(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    base, spec, state = _trained()
    dcp.save(state, checkpoint_id=str(tmp_path / "ok"), no_dist=True)
    report = verify_checkpoint(base, tmp_path / "ok", spec)
    assert report.ok and report.format == "dcp", report.summary()
    state["1.running_mean"] = _one_ulp(state["1.running_mean"])
    dcp.save(state, checkpoint_id=str(tmp_path / "ulp"), no_dist=True)
    assert [r.name for r in verify_checkpoint(base, tmp_path / "ulp", spec).failed] == [
        "1.running_mean"
    ]
    for data in (tmp_path / "ulp").glob("*.distcp"):
        data.unlink()
    report = verify_checkpoint(base, tmp_path / "ulp", spec)
    assert not report.ok and "is missing" in report.problems[0]


def test_cli_exit_status_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, spec, state = _trained()
    torch.save(base.state_dict(), tmp_path / "base.pt")
    torch.save(state, tmp_path / "ok.pt")
    state["1.weight"] = _one_ulp(state["1.weight"])
    torch.save(state, tmp_path / "bad.pt")
    (tmp_path / "spec.json").write_text(spec.to_json(), encoding="utf-8")
    args = ["verify-checkpoint", str(tmp_path / "base.pt")]
    spec_arg = ["--spec", str(tmp_path / "spec.json")]
    assert main([*args, str(tmp_path / "ok.pt"), *spec_arg]) == 0
    assert "OK: frozen tensors bit-identical" in capsys.readouterr().out
    report = tmp_path / "r.json"
    assert main([*args, str(tmp_path / "bad.pt"), *spec_arg, "--report", str(report)]) == 2
    assert "MOVED: 1.weight" in capsys.readouterr().out
    assert json.loads(report.read_text())["ok"] is False


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, vocab_size=100)  # fmt: skip
    return LlamaForCausalLM(config)


@pytest.mark.slow
def test_peft_adapter_folder_whole_and_from_one_rank(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open

    model = _llama()
    torch.save(model.state_dict(), tmp_path / "base.pt")  # before PEFT wraps the layers
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                            modules_to_save=["lm_head"]))  # fmt: skip
    with torch.no_grad():
        peft.base_model.model.lm_head.modules_to_save["default"].weight.add_(0.5)
    peft.save_pretrained(tmp_path / "adapter")
    spec = FreezeSpec(frozen=("model",))  # the base frozen, lm_head trained
    report = verify_checkpoint(tmp_path / "base.pt", tmp_path / "adapter", spec)
    assert report.ok and report.format == "peft", report.summary()
    assert sum(r.note == "LoRA factor" for r in report.rows) == 2 * 2 * 2  # layers x q,v x A,B
    everything = verify_checkpoint(tmp_path / "base.pt", tmp_path / "adapter", FreezeSpec(("",)))
    assert [(r.name, r.status) for r in everything.failed] == [("lm_head.weight", "MOVED")]

    # An FSDP2 rank-0-only save: each tensor is that rank's first half along dim 0.
    file = tmp_path / "adapter" / "adapter_model.safetensors"
    with safe_open(str(file), framework="pt") as f:
        full = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file({k: v[: v.shape[0] // 2].contiguous() for k, v in full.items()}, str(file))
    report = verify_checkpoint(tmp_path / "base.pt", tmp_path / "adapter", spec)
    assert not report.ok
    assert {r.status for r in report.failed} == {"BAD SHAPE"}
    assert any("one rank's shard?" in r.note for r in report.failed)

    # A targeted layer whose factors were not saved at all.
    save_file({k: v for k, v in full.items() if "layers.1.self_attn.v_proj" not in k}, str(file))
    report = verify_checkpoint(tmp_path / "base.pt", tmp_path / "adapter", spec)
    assert {(r.name, r.status) for r in report.failed} == {
        ("model.layers.1.self_attn.v_proj.lora_A.weight", "MISSING"),
        ("model.layers.1.self_attn.v_proj.lora_B.weight", "MISSING"),
    }
