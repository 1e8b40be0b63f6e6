"""Tests for freeze_widgets.export: bind, ONNX export with onnxruntime parity, TorchScript."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from freeze_widgets.export import BoundModule, ExportReport, bind, export_onnx, export_torchscript

torch.manual_seed(0)


# ---------------------------------------------------------------- tiny named models


class MaskedLinear(nn.Module):
    """Linear layer whose input is multiplied by a mask."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x * mask)


class ExternalWeights(nn.Module):
    """Takes its (frozen) weight and bias as arguments, plus an own trainable head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)

    def forward(
        self, x: torch.Tensor, frozen_weight: torch.Tensor, frozen_bias: torch.Tensor
    ) -> torch.Tensor:
        return self.head(torch.relu(nn.functional.linear(x, frozen_weight, frozen_bias)))


class Recurrent(nn.Module):
    """One GRU cell step with an optional hidden state; returns output and new state."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(5, 7)
        self.out = nn.Linear(7, 2)

    def forward(
        self, x: torch.Tensor, hidden_state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cell(x, hidden_state)
        return self.out(h), h


class Switch(nn.Module):
    """A bool argument picks the activation: binding it changes the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, use_relu: bool = True, scale: float = 1.0) -> torch.Tensor:
        y = self.fc(x) * scale
        return torch.relu(y) if use_relu else torch.sigmoid(y)


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x))


def graph_inputs(path: Path) -> list[str]:
    proto = onnx.load(str(path))
    inits = {i.name for i in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in inits]


def op_types(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def run_ort(path: Path, **feed: torch.Tensor) -> list[torch.Tensor]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {k: v.numpy() for k, v in feed.items()})
    return [torch.from_numpy(o) for o in outs]


def assert_parity(report: ExportReport, batches: tuple[int, ...] = (1, 3)) -> None:
    assert report.verified
    assert [p.batch for p in report.parity] == list(batches)
    for p in report.parity:
        assert p.ok, str(report)
        assert p.max_abs <= 1e-4
    timed = [p for p in report.parity if p.timed_runs]  # the quick default: the first size
    assert timed and all(p.eager_ms > 0 and p.exported_ms > 0 for p in timed)
    assert report.ok, str(report)


# ---------------------------------------------------------------- bind


def test_bind_mask_keeps_model_parameters_and_signature() -> None:
    model = MaskedLinear()
    mask = torch.tensor([1.0, 0.0] * 4)
    bound = bind(model, mask=mask)
    assert isinstance(bound, BoundModule)
    assert bound.model is model
    assert bound.input_names == ["x"]
    assert list(bound.bound) == ["mask"]
    assert torch.equal(bound.bound["mask"], mask)
    # Parameters are the model's own, the bound tensor is a non-persistent buffer.
    assert [id(p) for p in bound.parameters()] == [id(model.fc.weight), id(model.fc.bias)]
    assert set(bound.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    assert list(inspect.signature(bound).parameters) == ["x"]
    assert list(inspect.signature(bound.forward).parameters) == ["x"]
    x = torch.randn(3, 8)
    torch.testing.assert_close(bound(x), model(x, mask))
    torch.testing.assert_close(bound(x=x), model(x, mask))


def test_bind_positional_binds_first_parameters_in_order() -> None:
    model = ExternalWeights()
    w, b = torch.randn(6, 4), torch.randn(6)
    x = torch.randn(2, 4)
    # Positional values bind x first: what is left are the frozen tensors, in order.
    by_position = bind(model, x)
    assert by_position.input_names == ["frozen_weight", "frozen_bias"]
    torch.testing.assert_close(by_position(w, b), model(x, w, b))
    torch.testing.assert_close(by_position(frozen_bias=b, frozen_weight=w), model(x, w, b))


def test_bound_tensor_moves_with_to_and_is_detached() -> None:
    model = ExternalWeights()
    weight = nn.Parameter(torch.randn(6, 4))
    bound = bind(model, frozen_weight=weight, frozen_bias=torch.zeros(6))
    assert not bound.bound["frozen_weight"].requires_grad
    bound.to(torch.float64)
    assert bound.bound["frozen_weight"].dtype == torch.float64
    assert bound.bound["frozen_bias"].dtype == torch.float64
    assert model.head.weight.dtype == torch.float64


def test_bind_functools_partial_of_model_and_of_forward() -> None:
    model = MaskedLinear()
    mask = torch.ones(8)
    for target in (
        functools.partial(model, mask=mask),
        functools.partial(model.forward, mask=mask),
    ):
        bound = bind(target)
        assert bound.model is model
        assert bound.input_names == ["x"]
        assert list(bound.bound) == ["mask"]


def test_bind_of_bind_composes() -> None:
    model = Switch()
    inner = bind(model, use_relu=False)
    outer = bind(inner, scale=3.0)
    assert outer.input_names == ["x"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(outer(x), model(x, False, 3.0))


def test_bind_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown argument name.*'maks'.*valid names.*'mask'"):
        bind(MaskedLinear(), maks=torch.ones(8))


def test_bind_too_many_positional() -> None:
    with pytest.raises(ValueError, match="positional"):
        bind(MaskedLinear(), torch.ones(1), torch.ones(1), torch.ones(1))


def test_bind_same_argument_twice() -> None:
    with pytest.raises(ValueError, match=r"bound twice.*'x'"):
        bind(MaskedLinear(), torch.ones(1, 8), x=torch.ones(1, 8))
    partial = functools.partial(MaskedLinear(), mask=torch.ones(8))
    with pytest.raises(ValueError, match=r"bound twice.*'mask'"):
        bind(partial, mask=torch.zeros(8))


@pytest.mark.parametrize("value", [[1.0, 2.0], {"a": 1}, nn.Linear(2, 2), object(), (1, [2])])
def test_bind_rejects_non_constant_values(value: object) -> None:
    with pytest.raises(ValueError, match="cannot bind 'mask'"):
        bind(MaskedLinear(), mask=value)


def test_bind_accepts_scalar_constants() -> None:
    bound = bind(Switch(), use_relu=False, scale=0.5)
    assert bound.bound == {"use_relu": False, "scale": 0.5}


def test_bind_rejects_non_module() -> None:
    with pytest.raises(TypeError, match=r"nn\.Module"):
        bind(lambda x: x, x=1)


def test_missing_required_input_is_named_on_export(tmp_path: Path) -> None:
    bound = bind(ExternalWeights(), frozen_bias=torch.zeros(6))
    # frozen_weight is neither bound nor given: the error names it.
    with pytest.raises(ValueError, match=r"missing required input.*'frozen_weight'"):
        export_onnx(bound, torch.randn(2, 4), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- ONNX export


def test_export_masked_linear(tmp_path: Path) -> None:
    model = MaskedLinear()
    mask = (torch.arange(8) % 2).float()
    bound = bind(model, mask=mask)
    path = tmp_path / "nested" / "dir" / "masked.onnx"  # parent created
    report = export_onnx(bound, torch.randn(1, 8), path)
    assert report.exporter == "onnx-dynamo"
    assert report.fallback_reason is None
    assert report.path == path
    assert path.exists()
    assert report.file_bytes == path.stat().st_size
    assert report.graph_inputs == ["x"] == graph_inputs(path)
    assert report.bound_names == ["mask"]
    assert report.bound_leaked == []
    assert report.output_names == ["output"]
    assert report.opset is not None
    assert report.initializer_count >= 3  # weight, bias, mask
    assert_parity(report)
    # Independent check: the batch axis is dynamic and the mask is baked in.
    x = torch.randn(7, 8)
    (got,) = run_ort(path, x=x)
    torch.testing.assert_close(got, model(x, mask), atol=1e-5, rtol=1e-4)


def test_export_frozen_weight_and_bias(tmp_path: Path) -> None:
    model = ExternalWeights()
    bound = bind(model, frozen_weight=torch.randn(6, 4), frozen_bias=torch.randn(6))
    report = export_onnx(bound, (torch.randn(3, 4),), tmp_path / "ext.onnx")
    assert report.graph_inputs == ["x"]
    assert sorted(report.bound_names) == ["frozen_bias", "frozen_weight"]
    assert_parity(report, (1, 5))  # traced at 3: the next small sizes


def test_export_hidden_state_bound_and_default(tmp_path: Path) -> None:
    model = Recurrent()
    # Default path: hidden_state stays None, only x is an input.
    default = export_onnx(model, {"x": torch.randn(2, 5)}, tmp_path / "default.onnx")
    assert default.graph_inputs == ["x"]
    assert default.output_names == ["output_0", "output_1"]
    assert_parity(default)
    # Given as an input: both are graph inputs with a dynamic batch.
    both = export_onnx(
        model, {"x": torch.randn(2, 5), "hidden_state": torch.randn(2, 7)}, tmp_path / "both.onnx"
    )
    assert both.graph_inputs == ["x", "hidden_state"]
    assert_parity(both)
    # Bound to a fixed initial state (batch 1, so a static batch): x is the only input.
    h0 = torch.randn(1, 7)
    bound = bind(model, hidden_state=h0)
    report = export_onnx(bound, torch.randn(1, 5), tmp_path / "bound.onnx", dynamic_batch=False)
    assert report.graph_inputs == ["x"]
    assert report.bound_names == ["hidden_state"]
    assert_parity(report, batches=(1,))
    (out, h) = run_ort(tmp_path / "bound.onnx", x=torch.ones(1, 5))
    want_out, want_h = model(torch.ones(1, 5), h0)
    torch.testing.assert_close(out, want_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h, want_h, atol=1e-5, rtol=1e-4)


def test_bound_bool_switch_changes_graph(tmp_path: Path) -> None:
    model = Switch()
    relu = export_onnx(bind(model, use_relu=True), torch.randn(2, 4), tmp_path / "relu.onnx")
    sigm = export_onnx(bind(model, use_relu=False), torch.randn(2, 4), tmp_path / "sig.onnx")
    assert relu.ok
    assert sigm.ok
    assert "Relu" in op_types(relu.path)
    assert "Relu" not in op_types(sigm.path)
    assert "Sigmoid" in op_types(sigm.path)
    assert relu.graph_inputs == sigm.graph_inputs == ["x"]


def test_raw_partial_is_rejected_by_torch_but_bind_partial_exports(tmp_path: Path) -> None:
    model = MaskedLinear().eval()
    partial = functools.partial(model, mask=torch.ones(8))
    x = torch.randn(2, 8)
    # docs/design.md, trap 5: torch.onnx.export needs an nn.Module, for both exporters.
    with pytest.raises(Exception, match=r"(?i)nn\.Module|state_dict"):
        torch.onnx.export(partial, (x,), str(tmp_path / "raw.onnx"), dynamo=True, verbose=False)
    with (
        pytest.warns(DeprecationWarning, match="legacy TorchScript"),
        pytest.raises(AttributeError, match=r"partial.*(modules|state_dict)"),
    ):
        torch.onnx.export(partial, (x,), str(tmp_path / "raw_ts.onnx"), dynamo=False)
    with pytest.raises(TypeError, match="bind"):
        export_onnx(partial, x, tmp_path / "ours_raw.onnx")  # type: ignore[arg-type]
    report = export_onnx(bind(partial), x, tmp_path / "bound.onnx")
    assert report.graph_inputs == ["x"]
    assert_parity(report)


def test_forced_torchscript_exporter(tmp_path: Path) -> None:
    bound = bind(MaskedLinear(), mask=torch.ones(8))
    report = export_onnx(bound, torch.randn(1, 8), tmp_path / "ts.onnx", exporter="torchscript")
    assert report.exporter == "onnx-torchscript"
    assert report.fallback_reason is None
    assert report.graph_inputs == ["x"]
    assert_parity(report)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_dynamo_failure_falls_back_with_reason(tmp_path: Path) -> None:
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Python control flow on a tensor value: torch.export cannot trace it.
            if float(x.sum()) > 0:
                return x * 2
            return x

    report = export_onnx(DataDependent(), torch.ones(2, 3), tmp_path / "fb.onnx")
    assert report.exporter == "onnx-torchscript"
    reason = report.fallback_reason
    assert reason is not None
    # The real cause and where it happened, not torch.onnx's generic "step 1/3" header with
    # its ANSI colour codes; and what to try.
    assert reason.startswith("GuardOnDataDependentSymNode: Could not guard on data-dependent")
    assert "if float(x.sum()) > 0:" in reason
    assert "step 1/3" not in reason
    assert "\x1b" not in reason
    assert "exporter='torchscript'" in reason
    assert "fallback reason" in str(report)


@pytest.mark.parametrize("train", [True, False])
def test_mode_is_restored_per_module(tmp_path: Path, train: bool) -> None:
    model = WithBatchNorm()
    model.train(train)
    model.bn.eval()  # a frozen BatchNorm kept in eval inside a training model
    running_mean = model.bn.running_mean.clone()
    report = export_onnx(model, torch.randn(4, 4), tmp_path / "bn.onnx")
    assert report.ok
    assert model.training is train
    assert model.fc.training is train
    assert model.bn.training is False
    torch.testing.assert_close(model.bn.running_mean, running_mean)


def test_mode_is_restored_on_error(tmp_path: Path) -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(ValueError, match=r"forward failed .*RuntimeError: boom"):
        export_onnx(model, torch.ones(2, 2), tmp_path / "broken.onnx")
    assert model.training


def test_no_stray_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    export_onnx(bind(MaskedLinear(), mask=torch.ones(8)), torch.randn(2, 8), out / "m.onnx")
    assert list(cwd.iterdir()) == []
    assert [p.name for p in out.iterdir()] == ["m.onnx"]  # single file, no external data


def test_report_rendering(tmp_path: Path) -> None:
    report = export_onnx(
        bind(MaskedLinear(), mask=torch.ones(8)), torch.randn(2, 8), tmp_path / "r.onnx"
    )
    rows = dict(report.to_rows())
    assert rows["exporter"] == "onnx-dynamo"
    assert rows["graph inputs"] == "x"
    assert rows["bound"] == "mask"
    assert rows["status"] == "OK"
    assert rows["parity @ batch 3"].startswith("ok")
    text = str(report)
    assert "parity @ batch 1" in text
    assert "onnxruntime" in text
    html_table = report._repr_html_()
    assert html_table.startswith("<table")
    assert "<th style='text-align:left'>graph inputs</th>" in html_table


def test_report_not_ok_when_parity_fails(tmp_path: Path) -> None:
    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Random numbers differ between PyTorch and onnxruntime: parity must fail.
            return x + torch.rand_like(x)

    report = export_onnx(Noisy(), torch.randn(2, 64), tmp_path / "noisy.onnx")
    assert report.exporter == "onnx-dynamo"
    assert report.verified
    assert not any(p.ok for p in report.parity)
    assert all(p.max_abs > 1e-2 for p in report.parity)
    assert not report.ok
    rows = dict(report.to_rows())
    assert rows["status"] == "FAILED"
    assert rows["parity @ batch 1"].startswith("MISMATCH")


# ---------------------------------------------------------------- resnet18


@pytest.fixture(scope="module")
def resnet_report(tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("resnet") / "resnet18.onnx"
    return export_onnx(model, torch.randn(1, 3, 64, 64), path, timing_runs=3, warmup=1)


@pytest.mark.slow
def test_resnet18_exports_with_nothing_bound(resnet_report: ExportReport) -> None:
    assert resnet_report.exporter == "onnx-dynamo", resnet_report.fallback_reason
    assert resnet_report.graph_inputs == ["x"]
    assert resnet_report.bound_names == []
    assert resnet_report.initializer_count >= 21  # 20 convs (BN folded) + fc
    assert resnet_report.file_bytes > 40_000_000  # 11.7 M float32 parameters, inline
    assert_parity(resnet_report)
    proto = onnx.load(str(resnet_report.path), load_external_data=False)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"


# ---------------------------------------------------------------- TorchScript


quiet_jit = pytest.mark.filterwarnings("ignore:.*deprecated:FutureWarning")


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


@quiet_jit
def test_torchscript_script_freeze_preserved_attrs(tmp_path: Path) -> None:
    model = Scaled().train()
    path = tmp_path / "ts" / "scaled.pt"
    report = export_torchscript(model, torch.randn(1, 4), path, preserved_attrs=["scale"])
    assert report.exporter == "torchscript-script"
    assert report.fallback_reason is None
    assert report.graph_inputs == ["x"]
    assert report.file_bytes == path.stat().st_size
    assert_parity(report)
    assert model.training  # restored
    loaded = torch.jit.load(str(path))
    assert loaded.scale == 2.0  # preserved through freezing
    assert not hasattr(loaded, "fc")  # frozen: weights folded into the graph

    plain = export_torchscript(model, torch.randn(1, 4), tmp_path / "plain.pt")
    assert not hasattr(torch.jit.load(str(plain.path)), "scale")


@quiet_jit
def test_torchscript_unfrozen_keeps_submodules(tmp_path: Path) -> None:
    report = export_torchscript(Scaled(), torch.randn(2, 4), tmp_path / "nf.pt", freeze=False)
    assert report.ok
    assert hasattr(torch.jit.load(str(report.path)), "fc")


@quiet_jit
def test_torchscript_bound_module_is_traced(tmp_path: Path) -> None:
    model = Switch()
    bound = bind(model, use_relu=False, scale=0.5)
    report = export_torchscript(bound, torch.randn(1, 4), tmp_path / "bound.pt", optimize=True)
    assert report.exporter == "torchscript-trace"
    assert report.fallback_reason  # says why tracing was used
    assert report.graph_inputs == ["x"]
    assert report.bound_names == ["use_relu", "scale"]
    assert_parity(report)


@quiet_jit
def test_torchscript_script_failure_falls_back_to_trace(tmp_path: Path) -> None:
    class Lambda(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fn = lambda t: t * 3  # scripting cannot compile a lambda attribute

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fn(x)

    report = export_torchscript(Lambda(), torch.randn(2, 3), tmp_path / "l.pt")
    assert report.exporter == "torchscript-trace"
    assert report.fallback_reason
    assert_parity(report)
