"""Export edge cases: keyword calls (trap 16), wrappers, ``*args``, unbatched inputs, argument
checks, failures after the file is written, scale-relative parity (trap 17), freeze metadata."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from torch import nn

from freeze_widgets.export import bind, export_onnx, export_torchscript
from freeze_widgets.export import onnx as onnx_module
from freeze_widgets.export.onnx_freeze import SPEC_KEY, mark_freeze
from freeze_widgets.export.parity import compare
from freeze_widgets.freezing.spec import FreezeSpec

from .test_export import MaskedLinear

torch.manual_seed(0)
FAST: dict[str, Any] = {"timing_runs": 1, "warmup": 0}


def inject_flag(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Like transformers' forward decorators: adds a keyword the caller did not pass."""

    @functools.wraps(fn)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("flag", True)
        return fn(self, *args, **kwargs)

    return wrapper


class Injected(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    @inject_flag
    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, flag: bool | None = None
    ) -> torch.Tensor:
        y = self.fc(x if mask is None else x * mask)
        return y if flag else -y


class AddMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x + mask)


class SumAll(nn.Module):
    """A ``forward(*args)`` model."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.stack(xs).sum(0))


class PartlyFrozen(nn.Module):
    """Frozen first layer, trainable head, BatchNorm buffers, and a mask to bind."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 6)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)
        self.body.requires_grad_(False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.body(x * mask))))


# ---------------------------------------------------------------- bind calls by keyword


def test_bound_call_passes_keywords_so_injected_keywords_do_not_collide() -> None:
    model = Injected()
    x, mask = torch.randn(3, 8), torch.rand(8)
    bound = bind(model, mask=mask)
    # Passing flag=None positionally (the old way) collided with the decorator's keyword.
    torch.testing.assert_close(bound(x), model(x, mask=mask))
    torch.testing.assert_close(bound(x), model.fc(x * mask))


def test_positional_only_parameters_still_go_in_order() -> None:
    class PosOnly(nn.Module):
        def forward(
            self, a: torch.Tensor, b: torch.Tensor | None = None, /, c: float = 1.0
        ) -> torch.Tensor:
            return (a if b is None else a + b) * c

    a = torch.randn(2, 3)
    torch.testing.assert_close(bind(PosOnly(), c=2.0)(a), a * 2)
    torch.testing.assert_close(bind(PosOnly(), a)(torch.ones(2, 3)), (a + 1))


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_bind_transformers_base_models(family: str) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    small = {"vocab_size": 50, "max_position_embeddings": 16}
    if family == "bert":
        cfg = transformers.BertConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            **small,
        )
        model = transformers.BertModel(cfg)
    elif family == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=50,
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=16,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = transformers.GPT2Model(cfg)
    else:
        cfg = transformers.LlamaConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=32,
            **small,
        )
        model = transformers.LlamaModel(cfg)
    model.eval()
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    got = bind(model, attention_mask=mask)(input_ids=ids).last_hidden_state
    want = model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"model": None}, "model"),
        ({"model": "resnet18"}, "model"),
        ({"example_inputs": None}, "example_inputs"),
        ({"path": None}, "path"),
        ({"tolerance": "1e-4"}, "tolerance"),
        ({"verify": "yes"}, "verify"),
        ({"batch_axes": ["mask"]}, "batch_axes"),
        ({"dynamic_batch": None}, "dynamic_batch"),
        ({"opset": "18"}, "opset"),
        ({"timing_runs": None}, "timing_runs"),
        ({"verify_batches": 3}, "verify_batches"),
        ({"verify_batches": [0]}, "verify_batches"),
    ],
)
def test_wrong_types_name_the_argument_before_writing(
    tmp_path: Path, kwargs: dict[str, Any], named: str
) -> None:
    out = tmp_path / "out"
    call: dict[str, Any] = {
        "model": MaskedLinear(),
        "example_inputs": (torch.randn(2, 8), torch.ones(2, 8)),
        "path": out / "m.onnx",
    }
    call.update(kwargs)
    with pytest.raises(TypeError, match=named):
        export_onnx(call.pop("model"), call.pop("example_inputs"), call.pop("path"), **call)
    assert not out.exists()


def test_torchscript_none_model_names_the_argument(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module; got NoneType"):
        export_torchscript(None, torch.randn(2, 8), tmp_path / "m.pt")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("batch_axes", "message"),
    [({"nope": 0}, "unknown input"), ({"x": 2}, "has 2 dim"), ({"x": True}, "int axis")],
)
def test_bad_batch_axes_are_rejected_before_writing(
    tmp_path: Path, batch_axes: dict[str, Any], message: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        export_onnx(
            MaskedLinear(),
            (torch.randn(2, 8), torch.ones(2, 8)),
            tmp_path / "m.onnx",
            batch_axes=batch_axes,
        )
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- no raise after writing


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_verification_crash_is_reported_not_raised(tmp_path: Path) -> None:
    # The bound mask keeps batch size 2 while the batch is dynamic: eager crashes at batch 3.
    report = export_onnx(
        bind(AddMask(), mask=torch.ones(2, 8)), torch.randn(2, 8), tmp_path / "m.onnx", **FAST
    )
    assert (tmp_path / "m.onnx").exists()
    assert not report.ok
    assert report.error is not None
    assert report.error.startswith("comparing with PyTorch eager failed: RuntimeError")
    assert "bound tensor(s) ['mask']" in report.error
    assert dict(report.to_rows())["status"] == "FAILED"


def test_model_returning_none_is_reported_not_raised(tmp_path: Path) -> None:
    class NoOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> None:
            self.fc(x)

    report = export_onnx(NoOutput(), torch.randn(2, 4), tmp_path / "none.onnx", **FAST)
    assert not report.ok
    assert report.error is not None and "returned no tensors" in report.error


# ---------------------------------------------------------------- inputs without a batch


def _dims(path: Path) -> dict[str, list[int | str]]:
    proto = onnx.load(str(path))
    return {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in proto.graph.input
    }


def test_unbatched_input_stays_static_by_default(tmp_path: Path) -> None:
    x, mask = torch.randn(4, 8), torch.rand(1, 8)
    path = tmp_path / "m.onnx"
    report = export_onnx(MaskedLinear(), (x, mask), path, **FAST)
    assert report.ok, str(report)
    assert report.exporter == "onnx-dynamo", report.fallback_reason
    dims = _dims(path)
    assert isinstance(dims["x"][0], str)  # dynamic
    assert dims["mask"] == [1, 8]


def test_batch_axis_other_than_zero(tmp_path: Path) -> None:
    class SeqFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [time, batch, features]
            return self.fc(x.mean(0))

    path = tmp_path / "seq.onnx"
    report = export_onnx(SeqFirst(), torch.randn(6, 3, 5), path, batch_axes={"x": 1}, **FAST)
    assert report.ok, str(report)
    dims = _dims(path)["x"]
    assert dims[0] == 6 and isinstance(dims[1], str) and dims[2] == 5
    assert [p.batch for p in report.parity] == [1, 5]


def test_explicit_none_keeps_a_batch_sized_input_static(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    report = export_onnx(
        MaskedLinear(),
        (torch.randn(2, 8), torch.rand(2, 8)),
        path,
        batch_axes={"mask": None},
        dynamic_batch=False,
        **FAST,
    )
    assert report.ok, str(report)
    assert _dims(path)["mask"] == [2, 8]


# ---------------------------------------------------------------- wrappers and *args


def test_varargs_forward_gets_named_inputs(tmp_path: Path) -> None:
    model = SumAll()
    report = export_onnx(model, (torch.randn(2, 4), torch.randn(2, 4)), tmp_path / "s.onnx")
    assert report.ok, str(report)
    assert report.input_names == ["xs_0", "xs_1"]
    assert report.graph_inputs == ["xs_0", "xs_1"]


@pytest.mark.parametrize("wrap", ["compile", "dataparallel"])
def test_wrappers_are_looked_through(tmp_path: Path, wrap: str) -> None:
    inner = MaskedLinear()
    wrapped: nn.Module = torch.compile(inner) if wrap == "compile" else nn.DataParallel(inner)
    before = {k: v.clone() for k, v in inner.state_dict().items()}
    report = export_onnx(wrapped, (torch.randn(2, 8), torch.rand(2, 8)), tmp_path / "w.onnx")
    assert report.ok, str(report)
    assert report.graph_inputs == ["x", "mask"]
    assert (
        report.notes
        and ("OptimizedModule" if wrap == "compile" else "DataParallel") in (report.notes[0])
    )
    assert all(torch.equal(before[k], v) for k, v in inner.state_dict().items())
    # bind() looks through the wrapper too.
    assert bind(wrapped, mask=torch.ones(8)).model is inner


# ---------------------------------------------------------------- scale-relative parity


def test_compare_judges_tiny_outputs_by_their_scale() -> None:
    want = torch.full((3, 4), 1e-20)
    got = want * 1.5  # 50 % off, but 5e-21 in absolute terms
    c = compare([got.numpy()], [want], tolerance=1e-4)
    assert c.max_abs == pytest.approx(5e-21, rel=1e-3)
    assert c.max_rel == pytest.approx(0.5, rel=1e-3)
    assert not c.ok and not c.too_small
    assert compare([want.numpy()], [want], 1e-4).ok


def test_compare_flags_outputs_too_small_to_judge() -> None:
    zeros = torch.zeros(2, 3)
    c = compare([zeros.numpy()], [zeros], tolerance=1e-4)
    assert c.too_small and not c.ok
    assert compare([torch.full((2,), 1e-38).numpy()], [torch.full((2,), 1e-38)], 1e-4).too_small


def test_tiny_noisy_outputs_fail_parity(tmp_path: Path) -> None:
    class TinyNoisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Differs between runtimes by ~10 % of its scale, yet far below any absolute 1e-4.
            return x * 1e-20 + torch.rand_like(x) * 1e-21

    report = export_onnx(TinyNoisy(), torch.randn(2, 64), tmp_path / "t.onnx", **FAST)
    assert all(p.max_abs < 1e-4 for p in report.parity)
    assert all(p.max_rel > 1e-3 for p in report.parity)
    assert not report.ok
    assert dict(report.to_rows())["parity @ batch 1"].startswith("MISMATCH: max rel")


def test_all_zero_outputs_are_too_small_to_judge(tmp_path: Path) -> None:
    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0.0

    report = export_onnx(Zero(), torch.randn(2, 4), tmp_path / "z.onnx", **FAST)
    assert not report.ok
    assert all(p.too_small for p in report.parity)
    assert "TOO SMALL TO JUDGE" in str(report)


# ---------------------------------------------------------------- freeze in the ONNX file


def _check_freeze_marks(path: Path, model: PartlyFrozen) -> None:
    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[SPEC_KEY]) == json.loads(FreezeSpec.from_model(model).to_json())
    assert json.loads(meta[SPEC_KEY])["frozen"] == ["body"]
    expected = {name: p.requires_grad for name, p in model.named_parameters()}
    marked: dict[str, bool] = {}
    for init in proto.graph.initializer:
        state, _, rest = init.doc_string.partition(" parameter ")
        if rest:
            marked[rest] = state == "trainable"
    # Every parameter that is still an initializer is marked with its own state.
    assert marked, [i.name for i in proto.graph.initializer]
    assert {k: expected[k] for k in marked} == marked
    assert {"body.weight", "head.weight"} <= set(marked)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_onnx_file_carries_the_freeze(tmp_path: Path, exporter: str) -> None:
    model = PartlyFrozen().eval()
    path = tmp_path / f"{exporter}.onnx"
    report = export_onnx(
        bind(model, mask=torch.rand(8)),
        torch.randn(2, 8),
        path,
        exporter=exporter,  # type: ignore[arg-type]
        **FAST,
    )
    assert report.ok, str(report)
    _check_freeze_marks(path, model)
    frozen = sum(p.numel() > 0 for p in model.body.parameters())
    assert report.freeze_marked is not None and report.freeze_marked[0] == frozen


def test_freeze_marks_keep_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_module, "_EXTERNAL_DATA_THRESHOLD", 0)
    model = PartlyFrozen().eval()
    path = tmp_path / "ext.onnx"
    report = export_onnx(bind(model, mask=torch.rand(8)), torch.randn(2, 8), path, **FAST)
    data_files = [p for p in tmp_path.iterdir() if p != path]
    assert data_files, "expected an external data file"
    digest = hashlib.sha256(data_files[0].read_bytes()).hexdigest()
    assert report.ok, str(report)  # onnxruntime read the weights after marking
    _check_freeze_marks(path, model)
    mark_freeze(path, bind(model, mask=torch.rand(8)), model)  # marking again: data untouched
    assert hashlib.sha256(data_files[0].read_bytes()).hexdigest() == digest
    _check_freeze_marks(path, model)


def test_distributed_data_parallel_is_looked_through(tmp_path: Path) -> None:
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        inner = MaskedLinear()
        wrapped = nn.parallel.DistributedDataParallel(inner)
        report = export_onnx(
            wrapped, (torch.randn(2, 8), torch.rand(2, 8)), tmp_path / "ddp.onnx", **FAST
        )
    finally:
        dist.destroy_process_group()
    assert report.ok, str(report)
    assert report.notes == ["DistributedDataParallel wrapper: exported its .module"]
    assert report.graph_inputs == ["x", "mask"]
